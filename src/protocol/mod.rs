//! Wire codecs. Text mode: RESP2 arrays of bulk strings and inline commands in, RESP2 or
//! RESP3 replies out ([`resp`], [`reply`]).

pub mod reply;
pub mod resp;

pub use reply::{Proto, ReplyWriter};
pub use resp::{parse_command, FrameLimits, Parsed, ProtocolError};
