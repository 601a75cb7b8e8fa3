//! Turnstile's binary protocol: what a client and the server say to each other, byte for
//! byte. `protocol.md` at the root of the repository is the normative description; this
//! crate is its implementation, shared by the server, the client library and tools, so
//! that the arrows run one way (server -> proto <- client).
//!
//! - [`frame`]: the 9-byte frame header, the size cap and the two-pass decoder
//!   ([`Header::check`] says Incomplete or TooLarge before anything is allocated).
//! - [`message`]: every message: [`Request`] (client to server, borrowing from the input
//!   buffer), [`Response`] (the reply to one request, echoing its id) and [`Push`] (what
//!   the server says on its own: grants of queued requests, lost leases, waiters).
//! - [`error`]: the one table of error codes shared with text mode ([`ErrorCode`]) and the
//!   error reply with its code-specific fields ([`ErrorReply`]).
//!
//! A connection starts with [`MAGIC`], whose first byte (0xF5) no text-mode request can
//! start with, then a [`Request::Hello`] frame.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use turnstile_proto::{Acquire, Header, Mode, Request};
//!
//! let mut out = BytesMut::new();
//! let req = Request::Acquire(Acquire {
//!     key: b"orders/42",
//!     mode: Mode::Exclusive,
//!     reentrant: false,
//!     ttl_ms: 5000,
//!     wait_ms: None,
//!     priority: 0,
//!     lock_delay_ms: 0,
//!     value: None,
//! });
//! req.encode(7, &mut out);
//! let header = Header::check(&out, 65536).unwrap();
//! assert_eq!(header.request_id, 7);
//! let payload = &out[turnstile_proto::HEADER_LEN..header.frame_len()];
//! assert_eq!(Request::decode(&header, payload).unwrap(), req);
//! ```

pub use bytes;

pub mod error;
pub mod explain;
pub mod frame;
pub mod message;
mod wire;

pub use error::{ErrorCode, ErrorDetail, ErrorReply, LimitKind};
pub use explain::{Blocker, ExplainTarget, Explanation, WaitEdge, WaitGraph};
pub use frame::{DecodeError, Header, HEADER_LEN, HELLO_MAX_PAYLOAD, MAX_PAYLOAD};
pub use message::{
    op, Acquire, Convert, EndCause, Hello, HelloOk, Holder, HolderValue, KeyState, Kind,
    LostReason, Mode, ModeKind, MultiAcquire, Push, Request, Response, ServerMessage, Waiter,
    WatchEvent, WatchedHold, MAX_STR,
};

/// The first bytes a binary client sends. 0xF5 never occurs in UTF-8 text and is not `*`,
/// so no RESP array and no inline command typed as text can start with it: the server
/// tells the two modes apart by the first byte alone. The other three are `TSB`.
pub const MAGIC: [u8; 4] = [0xF5, b'T', b'S', b'B'];

/// The protocol versions this crate speaks (inclusive).
pub const MIN_VERSION: u16 = 1;
/// See [`MIN_VERSION`].
pub const MAX_VERSION: u16 = 1;

/// Length of a session secret: 128 random bits.
pub const SECRET_LEN: usize = 16;
