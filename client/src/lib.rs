//! The Rust client of Turnstile, the lock manager, over its binary protocol.
//!
//! - One connection multiplexes every request of a [`Client`] (clones share it); replies
//!   come back in any order, so a queued lock request never holds up the others.
//! - [`Client::lock`] builds a request; [`LockBuilder::acquire`] returns a [`LockGuard`]
//!   with the fencing token. The guard renews its lease in the background (a watchdog,
//!   which tells the owner when renewal fails: [`LockGuard::lost`]), and releases on
//!   drop without blocking. Shared, reentrant and semaphore holds, try-locks and waits
//!   with a limit are options of the same builder.
//! - Dropping a pending `acquire()` future cancels the queued request on the server.
//! - When the connection is lost the client reconnects with exponential backoff and
//!   resumes its session: holds and queued requests survive for the session timeout.
//!   Requests whose outcome was lost with the connection are settled after the resume
//!   (protocol.md 4.8): a queued ACQUIRE goes on waiting, a granted one completes with
//!   its token, one the server never answered is sent again.
//! - Clusters: give the nodes' addresses (`Client::connect(["10.0.0.1:7379",
//!   "10.0.0.2:7379", "10.0.0.3:7379"])`, or [`Builder::addrs`]). The client follows
//!   `NOTLEADER` redirects to the leader (waiting out an election, see
//!   [`Builder::leader_wait`]); when the leader fails or steps down (`NOTLEADER`, or
//!   `ERR UNCERTAIN` for a request whose outcome became unknown) it resumes its session
//!   on the new leader, where the session's holds (same tokens) and queued requests
//!   are: guards stay valid and their watchdog renews there.
//! - Values and watches: a hold may carry a value ([`LockBuilder::value`],
//!   [`LockGuard::set_value`]) that anyone reads ([`Client::get_value`]);
//!   [`Client::watch`] streams a key's grants, releases, expiries and value changes; and
//!   [`Election`] builds leader election on both (campaign, observe, resign).
//! - [`Client::events`] streams the session's events: lease lost, someone waiting for a
//!   key you hold, reconnects.
//! - TLS: [`Builder::tls`] with a [`TlsConfig`] (the CA, optionally a client certificate)
//!   for servers run with `--tls-cert`.
//! - Errors are typed after the protocol's codes ([`Error`]).
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use turnstile_client::{Client, Error};
//!
//! # async fn demo() -> turnstile_client::Result<()> {
//! let client = Client::connect("127.0.0.1:7379").await?;
//! match client
//!     .lock("orders/42")
//!     .ttl(Duration::from_secs(10))
//!     .wait(Duration::from_secs(2))
//!     .acquire()
//!     .await
//! {
//!     Ok(guard) => {
//!         // ... work, passing guard.token() to what you write ...
//!         guard.release().await?;
//!     }
//!     Err(Error::Timeout) => println!("busy, try later"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! The wire format is described in `protocol.md` at the root of the repository; the
//! message types are in the `turnstile-proto` crate, re-exported as [`proto`].

mod client;
mod conn;
mod election;
mod error;
mod events;
mod lock;
mod multi;
mod tls;
mod watch;

pub use client::{Builder, Client, ToAddrs};
pub use election::{Election, Leader, Leadership, Observer};
pub use error::{Error, Result};
pub use events::{Events, SessionEvent};
pub use lock::{GuardStatus, LockBuilder, LockGuard, Lost};
pub use multi::MultiLockBuilder;
pub use tls::TlsConfig;
/// The rustls types [`TlsConfig`] takes (root stores, certificates, keys).
pub use tokio_rustls::rustls;
pub use turnstile_proto as proto;
pub use turnstile_proto::{Blocker, ExplainTarget, Explanation, WaitEdge, WaitGraph};
pub use turnstile_proto::{HolderValue, KeyState, LostReason, ModeKind};
pub use watch::{EndCause, Watch, WatchEvent, WatchedHold};
