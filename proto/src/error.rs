//! The one table of error codes, shared by text mode and the binary protocol.
//!
//! In text mode an error reply is `-<NAME> <message>`; in the binary protocol it is an
//! ERROR frame carrying the code's number, the same message, and fields that depend on the
//! code (a DEADLOCK names its cycle, a WRONGTYPE the key's kind, ...).

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::Kind;
use crate::wire::{put_str16, Bad, Rd};

/// An error code. The number is the binary protocol's; the name is text mode's first word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// A generic error: syntax, a number out of range, a malformed frame, an unknown
    /// command or opcode.
    Err = 1,
    /// The key exists with another kind (or a semaphore with another limit).
    WrongType = 2,
    /// Waiting would close a cycle in the wait-for graph; nothing changed.
    Deadlock = 3,
    /// RELEASE or RENEW of a key the session does not hold.
    NotHeld = 4,
    /// A password is configured and was not given.
    NoAuth = 5,
    /// Wrong user name or password.
    WrongPass = 6,
    /// A protocol version the server does not speak.
    NoProto = 7,
    /// This node is a follower; the fields name the leader when it is known.
    NotLeader = 8,
    /// A configured limit would be passed.
    Limit = 9,
    /// Binary only: the session to resume does not exist (never did, or it ended).
    NoSession = 10,
    /// The authenticated user may not run this command or access this key (ACL).
    NoPerm = 11,
}

impl ErrorCode {
    /// Every code, in number order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::Err,
        ErrorCode::WrongType,
        ErrorCode::Deadlock,
        ErrorCode::NotHeld,
        ErrorCode::NoAuth,
        ErrorCode::WrongPass,
        ErrorCode::NoProto,
        ErrorCode::NotLeader,
        ErrorCode::Limit,
        ErrorCode::NoSession,
        ErrorCode::NoPerm,
    ];

    /// The text-mode name: the first word of a `-` reply.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Err => "ERR",
            ErrorCode::WrongType => "WRONGTYPE",
            ErrorCode::Deadlock => "DEADLOCK",
            ErrorCode::NotHeld => "NOTHELD",
            ErrorCode::NoAuth => "NOAUTH",
            ErrorCode::WrongPass => "WRONGPASS",
            ErrorCode::NoProto => "NOPROTO",
            ErrorCode::NotLeader => "NOTLEADER",
            ErrorCode::Limit => "LIMIT",
            ErrorCode::NoSession => "NOSESSION",
            ErrorCode::NoPerm => "NOPERM",
        }
    }

    /// The code with this text-mode name.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The code with this number.
    pub fn from_u8(n: u8) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as u8 == n)
    }

    /// Splits a text-mode error line (`"LIMIT TTL 5 ms is above ..."`) into its code and
    /// message. A line whose first word is no known code is an `ERR` with the whole line.
    pub fn split_text(line: &str) -> (ErrorCode, &str) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match ErrorCode::from_name(word) {
            Some(code) => (code, rest),
            None => (ErrorCode::Err, line),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which limit a LIMIT error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LimitKind {
    /// A configured maximum of a value in the request: key length, TTL, semaphore limit.
    Value = 0,
    /// Requests queued on one key.
    WaitersPerKey = 1,
    /// Holds plus queued requests of one session.
    HoldsPerSession = 2,
    /// Keys in the lock table.
    Keys = 3,
    /// Queued ACQUIREs of one binary session (`max_in_flight` in HELLO_OK).
    InFlight = 4,
    /// Binary sessions on the server.
    Sessions = 5,
    /// Connections on the server.
    Connections = 6,
}

impl LimitKind {
    /// Every kind, in number order.
    pub const ALL: [LimitKind; 7] = [
        LimitKind::Value,
        LimitKind::WaitersPerKey,
        LimitKind::HoldsPerSession,
        LimitKind::Keys,
        LimitKind::InFlight,
        LimitKind::Sessions,
        LimitKind::Connections,
    ];

    fn from_u8(n: u8) -> Option<LimitKind> {
        LimitKind::ALL.into_iter().find(|k| *k as u8 == n)
    }
}

/// The fields an error carries besides its message, by code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorDetail {
    /// No fields (ERR, NOTHELD, NOAUTH, WRONGPASS, NOSESSION, NOPERM).
    None,
    /// DEADLOCK: the cycle, starting with the requester: `(session, key)` means that
    /// session waits for that key, held or requested ahead by the next session in the
    /// list (the last by the first).
    Deadlock(Vec<(u64, Bytes)>),
    /// WRONGTYPE: the key's current kind.
    WrongType(Kind),
    /// LIMIT: which limit.
    Limit(LimitKind),
    /// NOTLEADER: the leader's `host:port`, empty when no leader is known.
    NotLeader(Bytes),
    /// NOPROTO: the versions the server speaks (inclusive).
    NoProto {
        /// Lowest.
        min: u16,
        /// Highest.
        max: u16,
    },
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// The code.
    pub code: ErrorCode,
    /// The human message: what text mode sends after the code word.
    pub message: Bytes,
    /// The code's fields. Encoding writes the fields of `code`; a detail of another code
    /// is replaced by empty fields of the right shape.
    pub detail: ErrorDetail,
}

impl ErrorReply {
    /// An error with no fields beyond the message.
    pub fn new(code: ErrorCode, message: impl Into<Bytes>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
            detail: ErrorDetail::None,
        }
    }

    /// The text-mode rendering: `CODE message`.
    pub fn text(&self) -> String {
        format!(
            "{} {}",
            self.code.name(),
            String::from_utf8_lossy(&self.message)
        )
    }

    pub(crate) fn encode_payload(&self, out: &mut BytesMut) {
        out.put_u8(self.code as u8);
        put_str16(out, &self.message);
        match self.code {
            ErrorCode::Deadlock => {
                let cycle: &[(u64, Bytes)] = match &self.detail {
                    ErrorDetail::Deadlock(c) => c,
                    _ => &[],
                };
                let n = cycle.len().min(usize::from(u16::MAX));
                out.put_u16(n as u16);
                for (session, key) in &cycle[..n] {
                    out.put_u64(*session);
                    put_str16(out, key);
                }
            }
            ErrorCode::WrongType => {
                let kind = match self.detail {
                    ErrorDetail::WrongType(k) => k,
                    _ => Kind::Lock,
                };
                kind.encode(out);
            }
            ErrorCode::Limit => {
                let which = match self.detail {
                    ErrorDetail::Limit(k) => k,
                    _ => LimitKind::Value,
                };
                out.put_u8(which as u8);
            }
            ErrorCode::NotLeader => {
                let addr: &[u8] = match &self.detail {
                    ErrorDetail::NotLeader(a) => a,
                    _ => b"",
                };
                put_str16(out, addr);
            }
            ErrorCode::NoProto => {
                let (min, max) = match self.detail {
                    ErrorDetail::NoProto { min, max } => (min, max),
                    _ => (crate::MIN_VERSION, crate::MAX_VERSION),
                };
                out.put_u16(min);
                out.put_u16(max);
            }
            ErrorCode::Err
            | ErrorCode::NotHeld
            | ErrorCode::NoAuth
            | ErrorCode::WrongPass
            | ErrorCode::NoSession
            | ErrorCode::NoPerm => {}
        }
    }

    pub(crate) fn decode_payload(rd: &mut Rd<'_>) -> Result<Self, Bad> {
        let code = ErrorCode::from_u8(rd.u8()?).ok_or("unknown error code")?;
        let message = Bytes::copy_from_slice(rd.str16()?);
        let detail = match code {
            ErrorCode::Deadlock => {
                let n = rd.u16()? as usize;
                if n.saturating_mul(10) > rd.remaining() {
                    return Err("count larger than the payload can hold");
                }
                let mut cycle = Vec::with_capacity(n);
                for _ in 0..n {
                    let session = rd.u64()?;
                    cycle.push((session, Bytes::copy_from_slice(rd.str16()?)));
                }
                ErrorDetail::Deadlock(cycle)
            }
            ErrorCode::WrongType => ErrorDetail::WrongType(Kind::decode(rd)?),
            ErrorCode::Limit => {
                ErrorDetail::Limit(LimitKind::from_u8(rd.u8()?).ok_or("unknown limit kind")?)
            }
            ErrorCode::NotLeader => ErrorDetail::NotLeader(Bytes::copy_from_slice(rd.str16()?)),
            ErrorCode::NoProto => ErrorDetail::NoProto {
                min: rd.u16()?,
                max: rd.u16()?,
            },
            ErrorCode::Err
            | ErrorCode::NotHeld
            | ErrorCode::NoAuth
            | ErrorCode::WrongPass
            | ErrorCode::NoSession
            | ErrorCode::NoPerm => ErrorDetail::None,
        };
        Ok(ErrorReply {
            code,
            message,
            detail,
        })
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_one_table() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as u8 as usize, i + 1);
            assert_eq!(ErrorCode::from_u8(code as u8), Some(code));
            assert_eq!(ErrorCode::from_name(code.name()), Some(code));
        }
        assert_eq!(ErrorCode::from_u8(0), None);
        assert_eq!(ErrorCode::from_u8(12), None);
    }

    #[test]
    fn split_text_lines() {
        assert_eq!(
            ErrorCode::split_text("LIMIT TTL 5 ms is above the maximum"),
            (ErrorCode::Limit, "TTL 5 ms is above the maximum")
        );
        assert_eq!(ErrorCode::split_text("NOTHELD"), (ErrorCode::NotHeld, ""));
        assert_eq!(
            ErrorCode::split_text("whatever went wrong"),
            (ErrorCode::Err, "whatever went wrong")
        );
    }
}
