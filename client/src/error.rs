//! Typed errors: one variant per error code of the protocol, plus what can go wrong on the
//! client's side of the wire.

use std::sync::Arc;

use bytes::Bytes;
use turnstile_proto::{DecodeError, ErrorCode, ErrorDetail, ErrorReply, Kind, LimitKind};

/// What a client operation can fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// `ERR`: a request the server refused (an out-of-range number, a malformed frame).
    #[error("ERR {message}")]
    Server {
        /// The server's message.
        message: String,
    },
    /// `DEADLOCK`: waiting would have closed a cycle; nothing changed.
    #[error("DEADLOCK {message}")]
    Deadlock {
        /// The server's message.
        message: String,
        /// The cycle, starting with this session: `(session, key)` waits for that key,
        /// held or requested by the next session in the list (the last by the first).
        cycle: Vec<(u64, Bytes)>,
    },
    /// `WRONGTYPE`: the key exists with another kind.
    #[error("WRONGTYPE {message}")]
    WrongType {
        /// The server's message.
        message: String,
        /// The key's kind now.
        current: Kind,
    },
    /// `NOTHELD`: the session holds nothing on the key (never acquired, released, or the
    /// lease ran out).
    #[error("NOTHELD {message}")]
    NotHeld {
        /// The server's message.
        message: String,
    },
    /// `LIMIT`: a configured limit would be passed.
    #[error("LIMIT {message}")]
    Limit {
        /// The server's message.
        message: String,
        /// Which limit.
        which: LimitKind,
    },
    /// `NOAUTH`: the server wants a password.
    #[error("NOAUTH {message}")]
    NoAuth {
        /// The server's message.
        message: String,
    },
    /// `WRONGPASS`: wrong user name or password.
    #[error("WRONGPASS {message}")]
    WrongPass {
        /// The server's message.
        message: String,
    },
    /// `NOPROTO`: no protocol version in common.
    #[error("NOPROTO {message} (server speaks {min} to {max})")]
    NoProto {
        /// The server's message.
        message: String,
        /// Lowest version the server speaks.
        min: u16,
        /// Highest version the server speaks.
        max: u16,
    },
    /// `NOTLEADER`: the node is a follower. The client follows these redirects by itself;
    /// this error reaches the caller only when no leader could be found: at connect,
    /// after [`crate::Builder::leader_wait`], or for a request refused more than
    /// [`crate::Builder::max_redirects`] times in a row.
    #[error("NOTLEADER {message}")]
    NotLeader {
        /// The server's message.
        message: String,
        /// The leader's `host:port`, when known.
        leader: Option<String>,
    },
    /// `NOSESSION`: the session to resume has ended.
    #[error("NOSESSION {message}")]
    NoSession {
        /// The server's message.
        message: String,
    },
    /// The ACQUIRE's wait ran out before it was granted.
    #[error("the wait ran out before the lock was granted")]
    Timeout,
    /// The queued ACQUIRE was cancelled.
    #[error("the queued request was cancelled")]
    Cancelled,
    /// The connection was lost while the request was in flight (or, in a cluster, the
    /// leader answered `ERR UNCERTAIN`: it lost its leadership before the outcome was
    /// known), or no connection came back in time. An ACQUIRE failing with it holds
    /// nothing and may be retried; another request may or may not have taken effect.
    #[error("disconnected from the server")]
    Disconnected,
    /// The session ended (its timeout passed with no connection): its holds were released
    /// and its queued requests cancelled. The client goes on with a new session.
    #[error("the session ended; its holds were released")]
    SessionLost,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// A request the client refuses to send (a key longer than the protocol allows, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The server sent bytes that do not decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] DecodeError),
    /// A socket error (connecting, reading or writing).
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl Error {
    /// The protocol's code of a server error (None for the client-side variants).
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::Server { .. } => ErrorCode::Err,
            Error::Deadlock { .. } => ErrorCode::Deadlock,
            Error::WrongType { .. } => ErrorCode::WrongType,
            Error::NotHeld { .. } => ErrorCode::NotHeld,
            Error::Limit { .. } => ErrorCode::Limit,
            Error::NoAuth { .. } => ErrorCode::NoAuth,
            Error::WrongPass { .. } => ErrorCode::WrongPass,
            Error::NoProto { .. } => ErrorCode::NoProto,
            Error::NotLeader { .. } => ErrorCode::NotLeader,
            Error::NoSession { .. } => ErrorCode::NoSession,
            _ => return None,
        })
    }

    /// Whether this is a cluster leader's `ERR UNCERTAIN ...`: it lost its leadership
    /// before the outcome of the request was known (it may or may not have taken effect).
    /// The client handles it as a lost connection; requests report it as
    /// [`Error::Disconnected`], except a handshake that found no other leader.
    pub fn is_uncertain(&self) -> bool {
        matches!(self, Error::Server { message } if message.starts_with("UNCERTAIN"))
    }

    /// Whether trying again later may succeed (the connection or session went away, a
    /// lock was busy, a follower answered).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout
                | Error::Disconnected
                | Error::SessionLost
                | Error::NotLeader { .. }
                | Error::Deadlock { .. }
                | Error::Io(_)
        ) || self.is_uncertain()
    }
}

impl From<ErrorReply> for Error {
    fn from(e: ErrorReply) -> Self {
        let message = String::from_utf8_lossy(&e.message).into_owned();
        match (e.code, e.detail) {
            (ErrorCode::Deadlock, ErrorDetail::Deadlock(cycle)) => {
                Error::Deadlock { message, cycle }
            }
            (ErrorCode::Deadlock, _) => Error::Deadlock {
                message,
                cycle: Vec::new(),
            },
            (ErrorCode::WrongType, ErrorDetail::WrongType(current)) => {
                Error::WrongType { message, current }
            }
            (ErrorCode::WrongType, _) => Error::WrongType {
                message,
                current: Kind::Lock,
            },
            (ErrorCode::Limit, ErrorDetail::Limit(which)) => Error::Limit { message, which },
            (ErrorCode::Limit, _) => Error::Limit {
                message,
                which: LimitKind::Value,
            },
            (ErrorCode::NotLeader, ErrorDetail::NotLeader(addr)) => Error::NotLeader {
                message,
                leader: (!addr.is_empty()).then(|| String::from_utf8_lossy(&addr).into_owned()),
            },
            (ErrorCode::NotLeader, _) => Error::NotLeader {
                message,
                leader: None,
            },
            (ErrorCode::NoProto, ErrorDetail::NoProto { min, max }) => {
                Error::NoProto { message, min, max }
            }
            (ErrorCode::NoProto, _) => Error::NoProto {
                message,
                min: 0,
                max: 0,
            },
            (ErrorCode::NotHeld, _) => Error::NotHeld { message },
            (ErrorCode::NoAuth, _) => Error::NoAuth { message },
            (ErrorCode::WrongPass, _) => Error::WrongPass { message },
            (ErrorCode::NoSession, _) => Error::NoSession { message },
            (ErrorCode::Err, _) => Error::Server { message },
            // ACL refusals (server `--users-file`): an ERR carrying the code's name.
            (ErrorCode::NoPerm, _) => Error::Server {
                message: format!("NOPERM {message}"),
            },
        }
    }
}

/// The result of a client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
