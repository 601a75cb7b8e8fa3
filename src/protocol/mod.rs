//! Wire codecs. Text mode: RESP2 arrays of bulk strings and inline commands in, RESP2 or
//! RESP3 replies out ([`resp`], [`reply`]). Binary mode: length-prefixed frames from the
//! `turnstile-proto` crate, glued to the engine's types in [`binary`].

pub mod binary;
pub mod reply;
pub mod resp;

pub use reply::{Proto, ReplyWriter};
pub use resp::{parse_command, FrameLimits, Parsed, ProtocolError};
