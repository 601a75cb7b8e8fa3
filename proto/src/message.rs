//! Every message of the binary protocol, with its payload layout.
//!
//! Integers are big-endian. `str16` is a u16 length followed by that many bytes (at most
//! [`MAX_STR`]). `[16]` is 16 raw bytes. Flags bits not named here must be 0. A payload
//! must be consumed exactly: missing or trailing bytes make the frame malformed.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ErrorReply;
use crate::explain::{ExplainTarget, Explanation, WaitGraph};
use crate::frame::{begin, finish, DecodeError, Header, MAX_PAYLOAD};
use crate::wire::{put_str16, Bad, Rd};
use crate::SECRET_LEN;

/// The longest `str16`: keys, names, patterns, messages.
pub const MAX_STR: usize = u16::MAX as usize;

/// Opcodes: requests 0x01..=0x13; responses 0x80..=0x8F and 0x91; pushes 0xA0..=0xA4
/// and 0xA6 (protocol.md §4 and §8 onwards).
pub mod op {
    /// Request: the handshake; the first frame of a connection.
    pub const HELLO: u8 = 0x01;
    /// Request: liveness (and session keepalive); echoes its payload.
    pub const PING: u8 = 0x02;
    /// Request: take a lock, a shared hold or semaphore permits.
    pub const ACQUIRE: u8 = 0x03;
    /// Request: give up a hold (one reentrant level).
    pub const RELEASE: u8 = 0x04;
    /// Request: extend a lease.
    pub const RENEW: u8 = 0x05;
    /// Request: cancel a queued ACQUIRE by its request id.
    pub const CANCEL: u8 = 0x06;
    /// Request: a key's holders and waiters.
    pub const INSPECT: u8 = 0x07;
    /// Request: keys with holders or waiters.
    pub const LOCKS: u8 = 0x08;
    /// Request: server information (text mode's INFO text).
    pub const INFO: u8 = 0x09;
    /// Request: end the connection (and optionally the session).
    pub const BYE: u8 = 0x0A;
    /// Request: an atomic multi-lock of several keys.
    pub const MACQUIRE: u8 = 0x0B;
    /// Request: release several keys (one reentrant level each).
    pub const MRELEASE: u8 = 0x0C;
    /// Request: why a session or a queued request waits (the chain of blockers).
    pub const EXPLAIN: u8 = 0x12;
    /// Request: the whole wait-for graph, bounded.
    pub const WAITGRAPH: u8 = 0x13;
    /// Request: convert a hold in place (SHARED <-> EXCLUSIVE).
    pub const CONVERT: u8 = 0x0D;
    /// Request: replace the value of the session's hold on a key.
    pub const SETVALUE: u8 = 0x0E;
    /// Request: the values of a key's holders.
    pub const GETVALUE: u8 = 0x0F;
    /// Request: stream the changes of a key's holders (PUSH_WATCH).
    pub const WATCH: u8 = 0x10;
    /// Request: stop a WATCH.
    pub const UNWATCH: u8 = 0x11;

    /// Response: an error.
    pub const ERROR: u8 = 0x80;
    /// Response to HELLO: accepted.
    pub const HELLO_OK: u8 = 0x81;
    /// Response: done, nothing to report (RELEASE, BYE).
    pub const OK: u8 = 0x82;
    /// Response to PING.
    pub const PONG: u8 = 0x83;
    /// Response to ACQUIRE: granted at once.
    pub const GRANTED: u8 = 0x84;
    /// Response to ACQUIRE: queued; exactly one of the pushes GRANTED, TIMED_OUT or
    /// CANCELLED with the same request id follows (unless the session ends).
    pub const QUEUED: u8 = 0x85;
    /// Response to ACQUIRE with WAIT 0 (a try-lock): the key is busy.
    pub const BUSY: u8 = 0x86;
    /// Response to RENEW.
    pub const RENEWED: u8 = 0x87;
    /// Response to CANCEL.
    pub const CANCEL_RESULT: u8 = 0x88;
    /// Response to INSPECT.
    pub const INSPECT_RESULT: u8 = 0x89;
    /// Response to LOCKS.
    pub const LOCKS_RESULT: u8 = 0x8A;
    /// Response to INFO.
    pub const INFO_RESULT: u8 = 0x8B;
    /// Response to MACQUIRE: granted at once, one token per key.
    pub const MGRANTED: u8 = 0x8C;
    /// Response to MRELEASE: how many keys were released.
    pub const RELEASED: u8 = 0x91;
    /// Response to EXPLAIN.
    pub const EXPLAIN_RESULT: u8 = 0x8E;
    /// Response to WAITGRAPH.
    pub const GRAPH_RESULT: u8 = 0x8F;
    /// Response to GETVALUE.
    pub const VALUE_RESULT: u8 = 0x8D;

    /// Push: a queued ACQUIRE was granted (id: the ACQUIRE's).
    pub const PUSH_GRANTED: u8 = 0xA0;
    /// Push: a queued ACQUIRE's WAIT ran out (id: the ACQUIRE's).
    pub const PUSH_TIMED_OUT: u8 = 0xA1;
    /// Push: a queued ACQUIRE was cancelled by CANCEL (id: the ACQUIRE's).
    pub const PUSH_CANCELLED: u8 = 0xA2;
    /// Push: a hold was lost (id 0).
    pub const PUSH_LEASE_LOST: u8 = 0xA3;
    /// Push: someone queued behind a hold of this session (id 0).
    pub const PUSH_WAITING: u8 = 0xA4;
    /// Push: a watched key changed, or its state when the watch started (id: the WATCH's).
    pub const PUSH_WATCH: u8 = 0xA6;

    /// The name of an opcode, for messages.
    pub fn name(op: u8) -> &'static str {
        match op {
            HELLO => "HELLO",
            PING => "PING",
            ACQUIRE => "ACQUIRE",
            RELEASE => "RELEASE",
            RENEW => "RENEW",
            CANCEL => "CANCEL",
            INSPECT => "INSPECT",
            LOCKS => "LOCKS",
            INFO => "INFO",
            BYE => "BYE",
            MACQUIRE => "MACQUIRE",
            MRELEASE => "MRELEASE",
            MGRANTED => "MGRANTED",
            RELEASED => "RELEASED",
            EXPLAIN => "EXPLAIN",
            WAITGRAPH => "WAITGRAPH",
            EXPLAIN_RESULT => "EXPLAIN_RESULT",
            GRAPH_RESULT => "GRAPH_RESULT",
            CONVERT => "CONVERT",
            SETVALUE => "SETVALUE",
            GETVALUE => "GETVALUE",
            WATCH => "WATCH",
            UNWATCH => "UNWATCH",
            VALUE_RESULT => "VALUE_RESULT",
            PUSH_WATCH => "PUSH_WATCH",
            ERROR => "ERROR",
            HELLO_OK => "HELLO_OK",
            OK => "OK",
            PONG => "PONG",
            GRANTED => "GRANTED",
            QUEUED => "QUEUED",
            BUSY => "BUSY",
            RENEWED => "RENEWED",
            CANCEL_RESULT => "CANCEL_RESULT",
            INSPECT_RESULT => "INSPECT_RESULT",
            LOCKS_RESULT => "LOCKS_RESULT",
            INFO_RESULT => "INFO_RESULT",
            PUSH_GRANTED => "PUSH_GRANTED",
            PUSH_TIMED_OUT => "PUSH_TIMED_OUT",
            PUSH_CANCELLED => "PUSH_CANCELLED",
            PUSH_LEASE_LOST => "PUSH_LEASE_LOST",
            PUSH_WAITING => "PUSH_WAITING",
            _ => "unknown",
        }
    }
}

fn malformed(opcode: u8) -> impl Fn(Bad) -> DecodeError {
    move |reason| DecodeError::Malformed { opcode, reason }
}

// ---------------------------------------------------------------------------------------
// Modes and kinds
// ---------------------------------------------------------------------------------------

/// How an ACQUIRE wants to hold a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A mutex, or the writer of a read-write lock.
    Exclusive,
    /// A reader of a read-write lock.
    Shared,
    /// `permits` of a counting semaphore of `limit` permits.
    Semaphore {
        /// Total permits of the semaphore.
        limit: u32,
        /// Permits this hold takes.
        permits: u32,
    },
}

impl Mode {
    /// The mode without its numbers.
    pub fn kind(self) -> ModeKind {
        match self {
            Mode::Exclusive => ModeKind::Exclusive,
            Mode::Shared => ModeKind::Shared,
            Mode::Semaphore { .. } => ModeKind::Semaphore,
        }
    }
}

/// A mode on the wire: u8 0 exclusive, 1 shared, 2 semaphore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ModeKind {
    /// Exclusive.
    Exclusive = 0,
    /// Shared.
    Shared = 1,
    /// Semaphore.
    Semaphore = 2,
}

impl ModeKind {
    pub(crate) fn decode(b: u8) -> Result<ModeKind, Bad> {
        match b {
            0 => Ok(ModeKind::Exclusive),
            1 => Ok(ModeKind::Shared),
            2 => Ok(ModeKind::Semaphore),
            _ => Err("unknown mode"),
        }
    }

    /// The name INSPECT uses in text mode.
    pub fn name(self) -> &'static str {
        match self {
            ModeKind::Exclusive => "exclusive",
            ModeKind::Shared => "shared",
            ModeKind::Semaphore => "semaphore",
        }
    }
}

/// The kind of a key: u8 0 lock / 1 semaphore, then u32 limit (0 for a lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-write lock.
    Lock,
    /// A counting semaphore.
    Semaphore {
        /// Its permits.
        limit: u32,
    },
}

impl Kind {
    pub(crate) fn encode(self, out: &mut BytesMut) {
        match self {
            Kind::Lock => {
                out.put_u8(0);
                out.put_u32(0);
            }
            Kind::Semaphore { limit } => {
                out.put_u8(1);
                out.put_u32(limit);
            }
        }
    }

    pub(crate) fn decode(rd: &mut Rd<'_>) -> Result<Kind, Bad> {
        let kind = rd.u8()?;
        let limit = rd.u32()?;
        match (kind, limit) {
            (0, 0) => Ok(Kind::Lock),
            (0, _) => Err("a lock has limit 0"),
            (1, limit) => Ok(Kind::Semaphore { limit }),
            _ => Err("unknown kind"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// HELLO: the first frame of a connection.
///
/// ```text
/// u16 min_version | u16 max_version | u32 session_timeout_ms (0: server default)
/// u8 flags (bit0 RESUME, bit1 AUTH) | [16] secret (if RESUME) | str16 client_name
/// str16 username | str16 password (if AUTH)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Lowest protocol version the client speaks.
    pub min_version: u16,
    /// Highest protocol version the client speaks.
    pub max_version: u16,
    /// Wanted session timeout in ms (0: the server's default). Only a new session takes
    /// it; a resumed one keeps its own.
    pub session_timeout_ms: u32,
    /// The secret of a session to resume; None creates a new session.
    pub resume: Option<[u8; SECRET_LEN]>,
    /// The client's name (printable ASCII without spaces, at most 255 bytes; may be empty).
    pub name: &'a [u8],
    /// `(username, password)`.
    pub auth: Option<(&'a [u8], &'a [u8])>,
}

/// ACQUIRE.
///
/// ```text
/// u8 mode (0 exclusive, 1 shared, 2 semaphore)
/// u8 flags (bit0 REENTRANT, bit1 WAIT, bit2 PRIORITY, bit3 LOCKDELAY)
/// u32 limit | u32 permits (both 0 unless semaphore) | u32 ttl_ms (0: server default)
/// u32 wait_ms (0 unless WAIT) | str16 key
/// [u32 priority (if PRIORITY)] [u32 lock_delay_ms (if LOCKDELAY)] [str16 value (if VALUE)]
/// ```
///
/// The trailing fields come in flag-bit order. Encoding sets PRIORITY and LOCKDELAY
/// exactly when the value is not 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquire<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The mode.
    pub mode: Mode,
    /// Re-acquiring a key held in the same mode bumps a count.
    pub reentrant: bool,
    /// The lease in ms, counted from the grant; 0 asks for the server's default.
    pub ttl_ms: u32,
    /// How long it may queue: None until granted or the session ends, Some(0) try-lock.
    pub wait_ms: Option<u32>,
    /// Priority among waiters (0 to 1000; 0: none, strict FIFO).
    pub priority: u32,
    /// Lock-delay in ms if the hold ends other than by RELEASE (0: the server's).
    pub lock_delay_ms: u32,
    /// A value to attach to the hold (flag 0x10; None or empty: none).
    pub value: Option<&'a [u8]>,
}

/// CONVERT.
///
/// ```text
/// u8 mode (0 exclusive, 1 shared) | u8 flags (bit0 WAIT) | u32 wait_ms (0 unless WAIT)
/// str16 key
/// ```
///
/// Replies: GRANTED (the hold's token after a downgrade or no-op, a new one after an
/// upgrade), QUEUED (an upgrade waits: PUSH_GRANTED or PUSH_TIMED_OUT with this request
/// id follows, and CANCEL names it), BUSY (WAIT 0 and the upgrade cannot be done now),
/// or ERROR NOTHELD / DEADLOCK / WRONGTYPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Convert<'a> {
    /// The key.
    pub key: &'a [u8],
    /// EXCLUSIVE (upgrade) or SHARED (downgrade).
    pub to: ModeKind,
    /// How long an upgrade may wait: None until granted, Some(0) only at once.
    pub wait_ms: Option<u32>,
}

/// MACQUIRE: `u8 flags (bit1 WAIT) | u32 ttl_ms | u32 wait_ms | u16 n |
/// n x (u8 mode | u32 limit | u32 permits | str16 key)`.
///
/// Answered GRANTED-like with MGRANTED (`u16 n | n x u64 token`, in key order), QUEUED
/// (then one PUSH_GRANTED per key, in key order, all together; or one PUSH_TIMED_OUT /
/// PUSH_CANCELLED), BUSY (WAIT 0), or an ERROR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiAcquire<'a> {
    /// The keys and their modes, in order.
    pub items: Vec<(&'a [u8], Mode)>,
    /// The lease of every hold in ms; 0 asks for the server's default.
    pub ttl_ms: u32,
    /// How long it may queue: None until granted, Some(0) try-lock.
    pub wait_ms: Option<u32>,
}

fn put_mode(out: &mut BytesMut, mode: Mode) {
    let (m, limit, permits) = match mode {
        Mode::Exclusive => (0, 0, 0),
        Mode::Shared => (1, 0, 0),
        Mode::Semaphore { limit, permits } => (2, limit, permits),
    };
    out.put_u8(m);
    out.put_u32(limit);
    out.put_u32(permits);
}

fn read_mode(rd: &mut Rd<'_>) -> Result<Mode, Bad> {
    let kind = ModeKind::decode(rd.u8()?)?;
    let limit = rd.u32()?;
    let permits = rd.u32()?;
    Ok(match (kind, limit, permits) {
        (ModeKind::Exclusive, 0, 0) => Mode::Exclusive,
        (ModeKind::Shared, 0, 0) => Mode::Shared,
        (ModeKind::Semaphore, limit, permits) => Mode::Semaphore { limit, permits },
        _ => return Err("limit and permits must be 0 unless semaphore"),
    })
}

/// A request, borrowing its strings from the input buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// HELLO (see [`Hello`]).
    Hello(Hello<'a>),
    /// PING: payload is any bytes, echoed by PONG.
    Ping(&'a [u8]),
    /// ACQUIRE (see [`Acquire`]).
    Acquire(Acquire<'a>),
    /// RELEASE: `str16 key`.
    Release {
        /// The key.
        key: &'a [u8],
    },
    /// RENEW: `u32 ttl_ms (0: the hold's last TTL) | str16 key`.
    Renew {
        /// The key.
        key: &'a [u8],
        /// New lease in ms; 0 keeps the hold's last TTL.
        ttl_ms: u32,
    },
    /// CANCEL: `u32 target` (the request id of a queued ACQUIRE).
    Cancel {
        /// The queued ACQUIRE's request id.
        target: u32,
    },
    /// INSPECT: `str16 key`.
    Inspect {
        /// The key.
        key: &'a [u8],
    },
    /// INSPECT with values: `str16 key | u8 flags (bit0 WITHVALUES)`; the result carries
    /// each holder's value (KeyState::values). A plain INSPECT has no flags byte.
    InspectValues {
        /// The key.
        key: &'a [u8],
    },
    /// SETVALUE: `str16 key | str16 value` (empty: clear). OK, or ERROR NOTHELD / LIMIT.
    SetValue {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// GETVALUE: `str16 key`. VALUE_RESULT.
    GetValue {
        /// The key.
        key: &'a [u8],
    },
    /// WATCH: `str16 key`. OK, then PUSH_WATCH frames with this request's id: the
    /// key's state first, then every change of its holders, until UNWATCH or the end of
    /// the connection.
    Watch {
        /// The key.
        key: &'a [u8],
    },
    /// UNWATCH: `str16 key`. OK (also when the key was not watched).
    Unwatch {
        /// The key.
        key: &'a [u8],
    },
    /// LOCKS: `u32 count (0: no limit) | u8 flags (bit0 MATCH) | str16 pattern`
    /// (the pattern is empty without MATCH).
    Locks {
        /// A Redis glob; None lists every key.
        pattern: Option<&'a [u8]>,
        /// At most this many keys; 0 for no limit.
        count: u32,
    },
    /// INFO: `str16 section` (empty: every section).
    Info {
        /// The section.
        section: &'a [u8],
    },
    /// MACQUIRE (see [`MultiAcquire`]).
    MultiAcquire(MultiAcquire<'a>),
    /// MRELEASE: `u16 n | n x str16 key`. Answered RELEASED (`u32 released`), or
    /// ERROR NOTHELD when none was held.
    MultiRelease {
        /// The keys.
        keys: Vec<&'a [u8]>,
    },
    /// BYE: `u8 flags (bit0 END_SESSION)`. OK, then the server closes the connection;
    /// with END_SESSION the session ends at once instead of waiting for a resume.
    Bye {
        /// End the session now.
        end_session: bool,
    },
    /// EXPLAIN: `u8 target | u64 id | u32 count (0: the server's default)` (see
    /// [`ExplainTarget`]).
    Explain {
        /// What to explain.
        target: ExplainTarget,
        /// At most this many edges; 0 for the server's default.
        count: u32,
    },
    /// WAITGRAPH: `u32 count (0: the server's default)`.
    WaitGraph {
        /// At most this many edges; 0 for the server's default.
        count: u32,
    },
    /// CONVERT (see [`Convert`]).
    Convert(Convert<'a>),
}

impl<'a> Request<'a> {
    /// The request's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Hello(_) => op::HELLO,
            Request::Ping(_) => op::PING,
            Request::Acquire(_) => op::ACQUIRE,
            Request::Release { .. } => op::RELEASE,
            Request::Renew { .. } => op::RENEW,
            Request::Cancel { .. } => op::CANCEL,
            Request::Inspect { .. } => op::INSPECT,
            Request::Locks { .. } => op::LOCKS,
            Request::Info { .. } => op::INFO,
            Request::Bye { .. } => op::BYE,
            Request::MultiAcquire(_) => op::MACQUIRE,
            Request::MultiRelease { .. } => op::MRELEASE,
            Request::Explain { .. } => op::EXPLAIN,
            Request::WaitGraph { .. } => op::WAITGRAPH,
            Request::Convert(_) => op::CONVERT,
            Request::InspectValues { .. } => op::INSPECT,
            Request::SetValue { .. } => op::SETVALUE,
            Request::GetValue { .. } => op::GETVALUE,
            Request::Watch { .. } => op::WATCH,
            Request::Unwatch { .. } => op::UNWATCH,
        }
    }

    /// Appends the request as one frame with `request_id`. Strings longer than
    /// [`MAX_STR`] are cut (check them first).
    pub fn encode(&self, request_id: u32, out: &mut BytesMut) {
        let start = begin(out, self.opcode(), request_id);
        match self {
            Request::Hello(h) => {
                out.put_u16(h.min_version);
                out.put_u16(h.max_version);
                out.put_u32(h.session_timeout_ms);
                let flags = u8::from(h.resume.is_some()) | (u8::from(h.auth.is_some()) << 1);
                out.put_u8(flags);
                if let Some(secret) = &h.resume {
                    out.put_slice(secret);
                }
                put_str16(out, h.name);
                if let Some((user, pass)) = h.auth {
                    put_str16(out, user);
                    put_str16(out, pass);
                }
            }
            Request::Ping(payload) => out.put_slice(payload),
            Request::Acquire(a) => {
                let (mode, limit, permits) = match a.mode {
                    Mode::Exclusive => (0, 0, 0),
                    Mode::Shared => (1, 0, 0),
                    Mode::Semaphore { limit, permits } => (2, limit, permits),
                };
                let value = a.value.filter(|v| !v.is_empty());
                out.put_u8(mode);
                out.put_u8(
                    u8::from(a.reentrant)
                        | (u8::from(a.wait_ms.is_some()) << 1)
                        | (u8::from(a.priority != 0) << 2)
                        | (u8::from(a.lock_delay_ms != 0) << 3)
                        | (u8::from(value.is_some()) << 4),
                );
                out.put_u32(limit);
                out.put_u32(permits);
                out.put_u32(a.ttl_ms);
                out.put_u32(a.wait_ms.unwrap_or(0));
                put_str16(out, a.key);
                if a.priority != 0 {
                    out.put_u32(a.priority);
                }
                if a.lock_delay_ms != 0 {
                    out.put_u32(a.lock_delay_ms);
                }
                if let Some(v) = value {
                    put_str16(out, v);
                }
            }
            Request::InspectValues { key } => {
                put_str16(out, key);
                out.put_u8(1);
            }
            Request::SetValue { key, value } => {
                put_str16(out, key);
                put_str16(out, value);
            }
            Request::GetValue { key } | Request::Watch { key } | Request::Unwatch { key } => {
                put_str16(out, key)
            }
            Request::Convert(c) => {
                out.put_u8(match c.to {
                    ModeKind::Shared => 1,
                    _ => 0,
                });
                out.put_u8(u8::from(c.wait_ms.is_some()));
                out.put_u32(c.wait_ms.unwrap_or(0));
                put_str16(out, c.key);
            }
            Request::Release { key } | Request::Inspect { key } => put_str16(out, key),
            Request::Renew { key, ttl_ms } => {
                out.put_u32(*ttl_ms);
                put_str16(out, key);
            }
            Request::Cancel { target } => out.put_u32(*target),
            Request::Locks { pattern, count } => {
                out.put_u32(*count);
                out.put_u8(u8::from(pattern.is_some()));
                put_str16(out, pattern.unwrap_or(b""));
            }
            Request::Info { section } => put_str16(out, section),
            Request::Bye { end_session } => out.put_u8(u8::from(*end_session)),
            Request::MultiAcquire(m) => {
                out.put_u8(u8::from(m.wait_ms.is_some()) << 1);
                out.put_u32(m.ttl_ms);
                out.put_u32(m.wait_ms.unwrap_or(0));
                out.put_u16(m.items.len().min(usize::from(u16::MAX)) as u16);
                for (key, mode) in m.items.iter().take(usize::from(u16::MAX)) {
                    put_mode(out, *mode);
                    put_str16(out, key);
                }
            }
            Request::MultiRelease { keys } => {
                out.put_u16(keys.len().min(usize::from(u16::MAX)) as u16);
                for key in keys.iter().take(usize::from(u16::MAX)) {
                    put_str16(out, key);
                }
            }
            Request::Explain { target, count } => {
                target.encode(out);
                out.put_u32(*count);
            }
            Request::WaitGraph { count } => out.put_u32(*count),
        }
        finish(out, start);
    }

    /// Decodes the payload of a request frame (the second pass, after
    /// [`Header::check`]).
    pub fn decode(header: &Header, payload: &'a [u8]) -> Result<Request<'a>, DecodeError> {
        Self::decode_payload(header.opcode, payload).map_err(malformed(header.opcode))
    }

    fn decode_payload(opcode: u8, payload: &'a [u8]) -> Result<Request<'a>, Bad> {
        let mut rd = Rd::new(payload);
        let req = match opcode {
            op::HELLO => {
                let min_version = rd.u16()?;
                let max_version = rd.u16()?;
                let session_timeout_ms = rd.u32()?;
                let flags = rd.u8()?;
                if flags & !0b11 != 0 {
                    return Err("unknown HELLO flags");
                }
                let resume = if flags & 1 != 0 {
                    Some(rd.array::<SECRET_LEN>()?)
                } else {
                    None
                };
                let name = rd.str16()?;
                let auth = if flags & 2 != 0 {
                    Some((rd.str16()?, rd.str16()?))
                } else {
                    None
                };
                Request::Hello(Hello {
                    min_version,
                    max_version,
                    session_timeout_ms,
                    resume,
                    name,
                    auth,
                })
            }
            op::PING => Request::Ping(rd.rest()),
            op::ACQUIRE => {
                let mode = rd.u8()?;
                let flags = rd.u8()?;
                if flags & !0b1_1111 != 0 {
                    return Err("unknown ACQUIRE flags");
                }
                let limit = rd.u32()?;
                let permits = rd.u32()?;
                let ttl_ms = rd.u32()?;
                let wait = rd.u32()?;
                let key = rd.str16()?;
                let priority = if flags & 4 != 0 { rd.u32()? } else { 0 };
                let lock_delay_ms = if flags & 8 != 0 { rd.u32()? } else { 0 };
                // One encoding per message: a flag means a value that is not 0.
                if (flags & 4 != 0 && priority == 0) || (flags & 8 != 0 && lock_delay_ms == 0) {
                    return Err("PRIORITY and LOCKDELAY flags need a value above 0");
                }
                let mode = match (ModeKind::decode(mode)?, limit, permits) {
                    (ModeKind::Exclusive, 0, 0) => Mode::Exclusive,
                    (ModeKind::Shared, 0, 0) => Mode::Shared,
                    (ModeKind::Semaphore, limit, permits) => Mode::Semaphore { limit, permits },
                    _ => return Err("limit and permits must be 0 unless semaphore"),
                };
                let value = if flags & 0x10 != 0 {
                    Some(rd.str16()?)
                } else {
                    None
                };
                let wait_ms = if flags & 2 != 0 {
                    Some(wait)
                } else if wait != 0 {
                    return Err("wait_ms must be 0 without the WAIT flag");
                } else {
                    None
                };
                Request::Acquire(Acquire {
                    key,
                    mode,
                    reentrant: flags & 1 != 0,
                    ttl_ms,
                    wait_ms,
                    priority,
                    lock_delay_ms,
                    value,
                })
            }
            op::CONVERT => {
                let to = match rd.u8()? {
                    0 => ModeKind::Exclusive,
                    1 => ModeKind::Shared,
                    _ => return Err("CONVERT mode must be 0 (exclusive) or 1 (shared)"),
                };
                let flags = rd.u8()?;
                if flags & !1 != 0 {
                    return Err("unknown CONVERT flags");
                }
                let wait = rd.u32()?;
                let wait_ms = if flags & 1 != 0 {
                    Some(wait)
                } else if wait != 0 {
                    return Err("wait_ms must be 0 without the WAIT flag");
                } else {
                    None
                };
                Request::Convert(Convert {
                    key: rd.str16()?,
                    to,
                    wait_ms,
                })
            }
            op::RELEASE => Request::Release { key: rd.str16()? },
            op::RENEW => {
                let ttl_ms = rd.u32()?;
                Request::Renew {
                    key: rd.str16()?,
                    ttl_ms,
                }
            }
            op::CANCEL => Request::Cancel { target: rd.u32()? },
            op::INSPECT => {
                let key = rd.str16()?;
                if rd.remaining() == 0 {
                    Request::Inspect { key }
                } else {
                    match rd.u8()? {
                        0 => Request::Inspect { key },
                        1 => Request::InspectValues { key },
                        _ => return Err("unknown INSPECT flags"),
                    }
                }
            }
            op::SETVALUE => Request::SetValue {
                key: rd.str16()?,
                value: rd.str16()?,
            },
            op::GETVALUE => Request::GetValue { key: rd.str16()? },
            op::WATCH => Request::Watch { key: rd.str16()? },
            op::UNWATCH => Request::Unwatch { key: rd.str16()? },
            op::LOCKS => {
                let count = rd.u32()?;
                let flags = rd.u8()?;
                if flags & !1 != 0 {
                    return Err("unknown LOCKS flags");
                }
                let pattern = rd.str16()?;
                let pattern = if flags & 1 != 0 {
                    Some(pattern)
                } else if !pattern.is_empty() {
                    return Err("a pattern needs the MATCH flag");
                } else {
                    None
                };
                Request::Locks { pattern, count }
            }
            op::INFO => Request::Info {
                section: rd.str16()?,
            },
            op::MACQUIRE => {
                let flags = rd.u8()?;
                if flags & !2 != 0 {
                    return Err("unknown MACQUIRE flags");
                }
                let ttl_ms = rd.u32()?;
                let wait = rd.u32()?;
                let wait_ms = if flags & 2 != 0 {
                    Some(wait)
                } else if wait != 0 {
                    return Err("wait_ms must be 0 without the WAIT flag");
                } else {
                    None
                };
                let n = rd.u16()?;
                let mut items = Vec::with_capacity(usize::from(n).min(1024));
                for _ in 0..n {
                    let mode = read_mode(&mut rd)?;
                    items.push((rd.str16()?, mode));
                }
                Request::MultiAcquire(MultiAcquire {
                    items,
                    ttl_ms,
                    wait_ms,
                })
            }
            op::MRELEASE => {
                let n = rd.u16()?;
                let mut keys = Vec::with_capacity(usize::from(n).min(1024));
                for _ in 0..n {
                    keys.push(rd.str16()?);
                }
                Request::MultiRelease { keys }
            }
            op::BYE => {
                let flags = rd.u8()?;
                if flags & !1 != 0 {
                    return Err("unknown BYE flags");
                }
                Request::Bye {
                    end_session: flags & 1 != 0,
                }
            }
            op::EXPLAIN => Request::Explain {
                target: ExplainTarget::decode(&mut rd)?,
                count: rd.u32()?,
            },
            op::WAITGRAPH => Request::WaitGraph { count: rd.u32()? },
            _ => return Err("unknown request opcode"),
        };
        rd.end()?;
        Ok(req)
    }
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// HELLO_OK: the handshake succeeded.
///
/// ```text
/// u16 version | u8 flags (bit0 RESUMED) | u64 session | [16] secret
/// u32 session_timeout_ms | u32 max_frame | u32 max_in_flight | u32 default_ttl_ms
/// u32 max_ttl_ms | u32 max_key_len | str16 server_version
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloOk {
    /// The version both sides now speak.
    pub version: u16,
    /// Whether an existing session was resumed (else a new one was created).
    pub resumed: bool,
    /// The session's public number (what INSPECT and DEADLOCK show).
    pub session: u64,
    /// The secret that resumes the session: 128 random bits. Keep it private.
    pub secret: [u8; SECRET_LEN],
    /// The session's timeout in ms (the one asked for, clamped to the server's range).
    pub session_timeout_ms: u32,
    /// Largest request payload the server accepts.
    pub max_frame: u32,
    /// Queued ACQUIREs the session may have at once.
    pub max_in_flight: u32,
    /// The lease an ACQUIRE with ttl_ms 0 gets.
    pub default_ttl_ms: u32,
    /// The longest lease.
    pub max_ttl_ms: u32,
    /// The longest key.
    pub max_key_len: u32,
    /// The server's version string.
    pub server_version: Bytes,
}

/// One holder in an INSPECT result: `u64 session | u8 mode | u64 token | u32 permits |
/// u32 count | u64 ttl_ms` (33 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The owner session.
    pub session: u64,
    /// The mode held.
    pub mode: ModeKind,
    /// The hold's fencing token.
    pub token: u64,
    /// Permits taken (1 for lock modes).
    pub permits: u32,
    /// Reentrant count.
    pub count: u32,
    /// Lease left in ms.
    pub ttl_ms: u64,
}

/// One waiter in an INSPECT result: `u64 session | u8 mode | u32 permits | u64 waited_ms`
/// (21 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The requester session.
    pub session: u64,
    /// The mode wanted.
    pub mode: ModeKind,
    /// Permits wanted.
    pub permits: u32,
    /// How long it has waited, in ms.
    pub waited_ms: u64,
}

const HOLDER_LEN: usize = 33;
const WAITER_LEN: usize = 21;

/// A key's state (INSPECT_RESULT).
///
/// ```text
/// u8 flags (bit0 PRESENT, bit1 HOLDERS_TRUNCATED, bit2 WAITERS_TRUNCATED)
/// if PRESENT: u8 kind | u32 limit | u64 fencing | u32 n | n x holder | u32 m | m x waiter
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    /// The key's kind.
    pub kind: Kind,
    /// The last fencing token issued for the key.
    pub fencing: u64,
    /// Holders in grant order.
    pub holders: Vec<Holder>,
    /// Whether holders were left out to keep the frame under [`MAX_PAYLOAD`].
    pub holders_truncated: bool,
    /// Waiters in queue order.
    pub waiters: Vec<Waiter>,
    /// Whether waiters were left out to keep the frame under [`MAX_PAYLOAD`].
    pub waiters_truncated: bool,
    /// INSPECT with WITHVALUES: each listed holder's value, in holder order (empty:
    /// none). Encoded after the waiters with flag bit3 VALUES: `n x str16 value`, one
    /// per holder listed. None for a plain INSPECT.
    pub values: Option<Vec<Bytes>>,
}

impl KeyState {
    /// Holders plus waiters that fit in one frame; the server cuts lists at these
    /// (and sets the truncated flags).
    pub fn max_entries() -> (usize, usize) {
        let room = MAX_PAYLOAD - 32;
        (room / 2 / HOLDER_LEN, room / 2 / WAITER_LEN)
    }
}

/// The reply to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// ERROR: `u8 code | str16 message | fields by code` (see [`ErrorReply`]).
    Error(ErrorReply),
    /// HELLO_OK (see [`HelloOk`]).
    HelloOk(HelloOk),
    /// OK: empty payload.
    Ok,
    /// PONG: the PING's payload.
    Pong(Bytes),
    /// GRANTED: `u64 token`.
    Granted {
        /// The fencing token.
        token: u64,
    },
    /// QUEUED: empty payload.
    Queued,
    /// BUSY: empty payload.
    Busy,
    /// RENEWED: `u32 ttl_ms` (the lease now left).
    Renewed {
        /// Lease left in ms.
        ttl_ms: u32,
    },
    /// CANCEL_RESULT: `u8 cancelled` (1: it was queued and is now cancelled, and a
    /// CANCELLED push for it came first; 0: it was not queued any more, or never was).
    CancelResult {
        /// Whether a queued request was cancelled.
        cancelled: bool,
    },
    /// INSPECT_RESULT (see [`KeyState`]); None when the key has no holders or waiters.
    Inspect(Option<KeyState>),
    /// LOCKS_RESULT: `u8 flags (bit0 TRUNCATED) | u32 n | n x str16 key`.
    Locks {
        /// The keys.
        keys: Vec<Bytes>,
        /// Whether keys were left out to keep the frame under [`MAX_PAYLOAD`].
        truncated: bool,
    },
    /// INFO_RESULT: the text, the whole payload.
    Info(Bytes),
    /// MGRANTED: `u16 n | n x u64 token` (a MACQUIRE granted at once, tokens in key
    /// order).
    MultiGranted {
        /// One token per key.
        tokens: Vec<u64>,
    },
    /// RELEASED: `u32 released` (MRELEASE).
    Released {
        /// Keys released.
        count: u32,
    },
    /// EXPLAIN_RESULT (see [`Explanation`]).
    Explain(Explanation),
    /// GRAPH_RESULT (see [`WaitGraph`]).
    WaitGraph(WaitGraph),
    /// VALUE_RESULT (to GETVALUE): `u32 n | n x (u64 session | u64 token | str16 value)`,
    /// one per holder in grant order (empty value: none); n = 0 when nothing holds the key.
    Value(Vec<HolderValue>),
}

/// One holder's value (VALUE_RESULT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderValue {
    /// The holder's session.
    pub session: u64,
    /// Its token.
    pub token: u64,
    /// Its value (empty: none).
    pub value: Bytes,
}

/// How many of `holders` fit in an INSPECT_RESULT together with their values.
fn values_fit(holders: &[Holder], values: &[Bytes]) -> usize {
    let mut room = (MAX_PAYLOAD - 32) / 2;
    for (i, v) in values.iter().enumerate().take(holders.len()) {
        let need = HOLDER_LEN + 2 + v.len().min(MAX_STR);
        if need > room {
            return i;
        }
        room -= need;
    }
    holders.len()
}

impl Response {
    /// The response's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Response::Error(_) => op::ERROR,
            Response::HelloOk(_) => op::HELLO_OK,
            Response::Ok => op::OK,
            Response::Pong(_) => op::PONG,
            Response::Granted { .. } => op::GRANTED,
            Response::Queued => op::QUEUED,
            Response::Busy => op::BUSY,
            Response::Renewed { .. } => op::RENEWED,
            Response::CancelResult { .. } => op::CANCEL_RESULT,
            Response::Inspect(_) => op::INSPECT_RESULT,
            Response::Locks { .. } => op::LOCKS_RESULT,
            Response::Info(_) => op::INFO_RESULT,
            Response::MultiGranted { .. } => op::MGRANTED,
            Response::Released { .. } => op::RELEASED,
            Response::Explain(_) => op::EXPLAIN_RESULT,
            Response::WaitGraph(_) => op::GRAPH_RESULT,
            Response::Value(_) => op::VALUE_RESULT,
        }
    }

    /// Appends the response as one frame answering `request_id`.
    pub fn encode(&self, request_id: u32, out: &mut BytesMut) {
        let start = begin(out, self.opcode(), request_id);
        match self {
            Response::Error(e) => e.encode_payload(out),
            Response::HelloOk(h) => {
                out.put_u16(h.version);
                out.put_u8(u8::from(h.resumed));
                out.put_u64(h.session);
                out.put_slice(&h.secret);
                out.put_u32(h.session_timeout_ms);
                out.put_u32(h.max_frame);
                out.put_u32(h.max_in_flight);
                out.put_u32(h.default_ttl_ms);
                out.put_u32(h.max_ttl_ms);
                out.put_u32(h.max_key_len);
                put_str16(out, &h.server_version);
            }
            Response::Ok | Response::Queued | Response::Busy => {}
            Response::Pong(p) => out.put_slice(p),
            Response::Granted { token } => out.put_u64(*token),
            Response::Renewed { ttl_ms } => out.put_u32(*ttl_ms),
            Response::CancelResult { cancelled } => out.put_u8(u8::from(*cancelled)),
            Response::Inspect(None) => out.put_u8(0),
            Response::Inspect(Some(s)) => {
                let (max_h, max_w) = KeyState::max_entries();
                let nh = s.holders.len().min(max_h);
                let nw = s.waiters.len().min(max_w);
                // With values, holders and values share the holders' half of the room.
                let nh = match &s.values {
                    Some(v) => nh.min(v.len()).min(values_fit(&s.holders[..nh], v)),
                    None => nh,
                };
                let flags = 1
                    | (u8::from(s.holders_truncated || nh < s.holders.len()) << 1)
                    | (u8::from(s.waiters_truncated || nw < s.waiters.len()) << 2)
                    | (u8::from(s.values.is_some()) << 3);
                out.put_u8(flags);
                s.kind.encode(out);
                out.put_u64(s.fencing);
                out.reserve(8 + nh * HOLDER_LEN + nw * WAITER_LEN);
                out.put_u32(nh as u32);
                for h in &s.holders[..nh] {
                    out.put_u64(h.session);
                    out.put_u8(h.mode as u8);
                    out.put_u64(h.token);
                    out.put_u32(h.permits);
                    out.put_u32(h.count);
                    out.put_u64(h.ttl_ms);
                }
                out.put_u32(nw as u32);
                for w in &s.waiters[..nw] {
                    out.put_u64(w.session);
                    out.put_u8(w.mode as u8);
                    out.put_u32(w.permits);
                    out.put_u64(w.waited_ms);
                }
                if let Some(values) = &s.values {
                    for v in &values[..nh] {
                        put_str16(out, v);
                    }
                }
            }
            Response::Value(holders) => {
                let mut room = MAX_PAYLOAD - 4;
                let mut n = 0;
                for h in holders {
                    let need = 18 + h.value.len().min(MAX_STR);
                    if need > room {
                        break;
                    }
                    room -= need;
                    n += 1;
                }
                out.put_u32(n as u32);
                for h in &holders[..n] {
                    out.put_u64(h.session);
                    out.put_u64(h.token);
                    put_str16(out, &h.value);
                }
            }
            Response::Locks { keys, truncated } => {
                // Keep the frame under the cap: list keys while they fit.
                let mut room = MAX_PAYLOAD - 5;
                let mut n = 0;
                for k in keys {
                    let need = 2 + k.len().min(MAX_STR);
                    if need > room {
                        break;
                    }
                    room -= need;
                    n += 1;
                }
                out.put_u8(u8::from(*truncated || n < keys.len()));
                out.put_u32(n as u32);
                for k in &keys[..n] {
                    put_str16(out, k);
                }
            }
            Response::Info(text) => {
                out.put_slice(&text[..text.len().min(MAX_PAYLOAD)]);
            }
            Response::MultiGranted { tokens } => {
                out.put_u16(tokens.len().min(usize::from(u16::MAX)) as u16);
                for t in tokens.iter().take(usize::from(u16::MAX)) {
                    out.put_u64(*t);
                }
            }
            Response::Released { count } => out.put_u32(*count),
            Response::Explain(e) => e.encode(out),
            Response::WaitGraph(g) => g.encode(out),
        }
        finish(out, start);
    }

    fn decode_payload(opcode: u8, payload: &[u8]) -> Result<Response, Bad> {
        let mut rd = Rd::new(payload);
        let resp = match opcode {
            op::ERROR => Response::Error(ErrorReply::decode_payload(&mut rd)?),
            op::HELLO_OK => {
                let version = rd.u16()?;
                let flags = rd.u8()?;
                if flags & !1 != 0 {
                    return Err("unknown HELLO_OK flags");
                }
                Response::HelloOk(HelloOk {
                    version,
                    resumed: flags & 1 != 0,
                    session: rd.u64()?,
                    secret: rd.array::<SECRET_LEN>()?,
                    session_timeout_ms: rd.u32()?,
                    max_frame: rd.u32()?,
                    max_in_flight: rd.u32()?,
                    default_ttl_ms: rd.u32()?,
                    max_ttl_ms: rd.u32()?,
                    max_key_len: rd.u32()?,
                    server_version: Bytes::copy_from_slice(rd.str16()?),
                })
            }
            op::OK => Response::Ok,
            op::PONG => Response::Pong(Bytes::copy_from_slice(rd.rest())),
            op::GRANTED => Response::Granted { token: rd.u64()? },
            op::QUEUED => Response::Queued,
            op::BUSY => Response::Busy,
            op::RENEWED => Response::Renewed { ttl_ms: rd.u32()? },
            op::CANCEL_RESULT => Response::CancelResult {
                cancelled: match rd.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err("cancelled must be 0 or 1"),
                },
            },
            op::INSPECT_RESULT => {
                let flags = rd.u8()?;
                if flags & !0b1111 != 0 {
                    return Err("unknown INSPECT_RESULT flags");
                }
                if flags & 1 == 0 {
                    if flags != 0 {
                        return Err("truncation flags on an absent key");
                    }
                    Response::Inspect(None)
                } else {
                    let kind = Kind::decode(&mut rd)?;
                    let fencing = rd.u64()?;
                    let nh = rd.count(HOLDER_LEN)?;
                    let mut holders = Vec::with_capacity(nh);
                    for _ in 0..nh {
                        holders.push(Holder {
                            session: rd.u64()?,
                            mode: ModeKind::decode(rd.u8()?)?,
                            token: rd.u64()?,
                            permits: rd.u32()?,
                            count: rd.u32()?,
                            ttl_ms: rd.u64()?,
                        });
                    }
                    let nw = rd.count(WAITER_LEN)?;
                    let mut waiters = Vec::with_capacity(nw);
                    for _ in 0..nw {
                        waiters.push(Waiter {
                            session: rd.u64()?,
                            mode: ModeKind::decode(rd.u8()?)?,
                            permits: rd.u32()?,
                            waited_ms: rd.u64()?,
                        });
                    }
                    let values = if flags & 8 != 0 {
                        let mut v = Vec::with_capacity(holders.len());
                        for _ in 0..holders.len() {
                            v.push(Bytes::copy_from_slice(rd.str16()?));
                        }
                        Some(v)
                    } else {
                        None
                    };
                    Response::Inspect(Some(KeyState {
                        kind,
                        fencing,
                        holders,
                        holders_truncated: flags & 2 != 0,
                        waiters,
                        waiters_truncated: flags & 4 != 0,
                        values,
                    }))
                }
            }
            op::LOCKS_RESULT => {
                let flags = rd.u8()?;
                if flags & !1 != 0 {
                    return Err("unknown LOCKS_RESULT flags");
                }
                let n = rd.count(2)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(Bytes::copy_from_slice(rd.str16()?));
                }
                Response::Locks {
                    keys,
                    truncated: flags & 1 != 0,
                }
            }
            op::INFO_RESULT => Response::Info(Bytes::copy_from_slice(rd.rest())),
            op::MGRANTED => {
                let n = rd.u16()?;
                let mut tokens = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    tokens.push(rd.u64()?);
                }
                Response::MultiGranted { tokens }
            }
            op::RELEASED => Response::Released { count: rd.u32()? },
            op::EXPLAIN_RESULT => Response::Explain(Explanation::decode(&mut rd)?),
            op::GRAPH_RESULT => Response::WaitGraph(WaitGraph::decode(&mut rd)?),
            op::VALUE_RESULT => {
                let n = rd.count(18)?;
                let mut holders = Vec::with_capacity(n);
                for _ in 0..n {
                    holders.push(HolderValue {
                        session: rd.u64()?,
                        token: rd.u64()?,
                        value: Bytes::copy_from_slice(rd.str16()?),
                    });
                }
                Response::Value(holders)
            }
            _ => return Err("unknown response opcode"),
        };
        rd.end()?;
        Ok(resp)
    }
}

// ---------------------------------------------------------------------------------------
// Pushes
// ---------------------------------------------------------------------------------------

/// Why a hold was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LostReason {
    /// The lease ran out before it was renewed.
    Expired = 1,
    /// The server took the hold away (reserved: no operation of version 1 revokes).
    Revoked = 2,
}

/// Something the server says on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Push {
    /// PUSH_GRANTED (id: the queued ACQUIRE's): `u64 token`.
    Granted {
        /// The fencing token.
        token: u64,
    },
    /// PUSH_TIMED_OUT (id: the queued ACQUIRE's): empty payload.
    TimedOut,
    /// PUSH_CANCELLED (id: the queued ACQUIRE's): empty payload.
    Cancelled,
    /// PUSH_LEASE_LOST (id 0): `u8 reason | u64 token | str16 key`.
    LeaseLost {
        /// Why.
        reason: LostReason,
        /// The lost hold's token.
        token: u64,
        /// The key.
        key: Bytes,
    },
    /// PUSH_WATCH (id: the WATCH's): a watched key's state or a change of its holders
    /// (see [`WatchEvent`]).
    Watch {
        /// The key.
        key: Bytes,
        /// What happened.
        event: WatchEvent,
    },
    /// PUSH_WAITING (id 0): `u64 session | u8 mode | u32 permits | str16 key`: that
    /// session queued for a key this session holds.
    Waiting {
        /// The waiting session.
        session: u64,
        /// The mode it wants.
        mode: ModeKind,
        /// Permits it wants (1 for lock modes).
        permits: u32,
        /// The key.
        key: Bytes,
    },
}

impl Push {
    /// The push's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Push::Granted { .. } => op::PUSH_GRANTED,
            Push::TimedOut => op::PUSH_TIMED_OUT,
            Push::Cancelled => op::PUSH_CANCELLED,
            Push::LeaseLost { .. } => op::PUSH_LEASE_LOST,
            Push::Waiting { .. } => op::PUSH_WAITING,
            Push::Watch { .. } => op::PUSH_WATCH,
        }
    }

    /// Appends the push as one frame with `request_id` (the queued ACQUIRE's for
    /// Granted, TimedOut and Cancelled; 0 for the others).
    pub fn encode(&self, request_id: u32, out: &mut BytesMut) {
        let start = begin(out, self.opcode(), request_id);
        match self {
            Push::Granted { token } => out.put_u64(*token),
            Push::TimedOut | Push::Cancelled => {}
            Push::LeaseLost { reason, token, key } => {
                out.put_u8(*reason as u8);
                out.put_u64(*token);
                put_str16(out, key);
            }
            Push::Waiting {
                session,
                mode,
                permits,
                key,
            } => {
                out.put_u64(*session);
                out.put_u8(*mode as u8);
                out.put_u32(*permits);
                put_str16(out, key);
            }
            Push::Watch { key, event } => event.encode(key, out),
        }
        finish(out, start);
    }

    fn decode_payload(opcode: u8, payload: &[u8]) -> Result<Push, Bad> {
        let mut rd = Rd::new(payload);
        let push = match opcode {
            op::PUSH_GRANTED => Push::Granted { token: rd.u64()? },
            op::PUSH_TIMED_OUT => Push::TimedOut,
            op::PUSH_CANCELLED => Push::Cancelled,
            op::PUSH_LEASE_LOST => Push::LeaseLost {
                reason: match rd.u8()? {
                    1 => LostReason::Expired,
                    2 => LostReason::Revoked,
                    _ => return Err("unknown lease-lost reason"),
                },
                token: rd.u64()?,
                key: Bytes::copy_from_slice(rd.str16()?),
            },
            op::PUSH_WAITING => Push::Waiting {
                session: rd.u64()?,
                mode: ModeKind::decode(rd.u8()?)?,
                permits: rd.u32()?,
                key: Bytes::copy_from_slice(rd.str16()?),
            },
            op::PUSH_WATCH => {
                let (key, event) = WatchEvent::decode(&mut rd)?;
                Push::Watch { key, event }
            }
            _ => return Err("unknown push opcode"),
        };
        rd.end()?;
        Ok(push)
    }
}

/// One holder in a PUSH_WATCH: `u64 session | u8 mode | u64 token | str16 value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedHold {
    /// The holder's session.
    pub session: u64,
    /// Its mode.
    pub mode: ModeKind,
    /// Its token.
    pub token: u64,
    /// Its value (empty: none; always empty for RELEASED and EXPIRED).
    pub value: Bytes,
}

/// Why a watched hold ended other than by a release (PUSH_WATCH EXPIRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EndCause {
    /// The lease ran out.
    Lease = 1,
    /// The holder's session ended.
    Session = 2,
    /// An administrator dropped it.
    Forced = 3,
}

/// What a PUSH_WATCH says. Layout: `u8 event | str16 key | body`:
///
/// ```text
/// 0 STATE     u64 fencing | u32 n | n x holder     (the key's holders when the watch started)
/// 1 GRANTED   holder
/// 2 RELEASED  holder
/// 3 EXPIRED   holder | u8 cause (1 lease, 2 session ended, 3 forced release)
/// 4 VALUE     holder                               (the holder set or cleared its value)
/// holder:     u64 session | u8 mode | u64 token | str16 value
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key's state: the last token issued (0: the key does not exist) and its holders.
    State {
        /// The last fencing token issued for the key.
        fencing: u64,
        /// Holders in grant order.
        holders: Vec<WatchedHold>,
    },
    /// A hold was granted.
    Granted(WatchedHold),
    /// A hold was released.
    Released(WatchedHold),
    /// A hold ended without a release.
    Expired(WatchedHold, EndCause),
    /// A holder set or cleared its value.
    Value(WatchedHold),
}

impl WatchedHold {
    fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.session);
        out.put_u8(self.mode as u8);
        out.put_u64(self.token);
        put_str16(out, &self.value);
    }

    fn decode(rd: &mut Rd<'_>) -> Result<WatchedHold, Bad> {
        Ok(WatchedHold {
            session: rd.u64()?,
            mode: ModeKind::decode(rd.u8()?)?,
            token: rd.u64()?,
            value: Bytes::copy_from_slice(rd.str16()?),
        })
    }
}

impl WatchEvent {
    fn encode(&self, key: &[u8], out: &mut BytesMut) {
        let tag = match self {
            WatchEvent::State { .. } => 0,
            WatchEvent::Granted(_) => 1,
            WatchEvent::Released(_) => 2,
            WatchEvent::Expired(..) => 3,
            WatchEvent::Value(_) => 4,
        };
        out.put_u8(tag);
        put_str16(out, key);
        match self {
            WatchEvent::State { fencing, holders } => {
                out.put_u64(*fencing);
                // Keep the frame under the cap: list holders while they fit.
                let mut room = MAX_PAYLOAD - 16 - key.len().min(MAX_STR);
                let mut n = 0;
                for h in holders {
                    let need = 19 + h.value.len().min(MAX_STR);
                    if need > room {
                        break;
                    }
                    room -= need;
                    n += 1;
                }
                out.put_u32(n as u32);
                for h in &holders[..n] {
                    h.encode(out);
                }
            }
            WatchEvent::Granted(h) | WatchEvent::Released(h) | WatchEvent::Value(h) => {
                h.encode(out)
            }
            WatchEvent::Expired(h, cause) => {
                h.encode(out);
                out.put_u8(*cause as u8);
            }
        }
    }

    fn decode(rd: &mut Rd<'_>) -> Result<(Bytes, WatchEvent), Bad> {
        let tag = rd.u8()?;
        let key = Bytes::copy_from_slice(rd.str16()?);
        let event = match tag {
            0 => {
                let fencing = rd.u64()?;
                let n = rd.count(19)?;
                let mut holders = Vec::with_capacity(n);
                for _ in 0..n {
                    holders.push(WatchedHold::decode(rd)?);
                }
                WatchEvent::State { fencing, holders }
            }
            1 => WatchEvent::Granted(WatchedHold::decode(rd)?),
            2 => WatchEvent::Released(WatchedHold::decode(rd)?),
            3 => {
                let h = WatchedHold::decode(rd)?;
                let cause = match rd.u8()? {
                    1 => EndCause::Lease,
                    2 => EndCause::Session,
                    3 => EndCause::Forced,
                    _ => return Err("unknown watch end cause"),
                };
                WatchEvent::Expired(h, cause)
            }
            4 => WatchEvent::Value(WatchedHold::decode(rd)?),
            _ => return Err("unknown watch event"),
        };
        Ok((key, event))
    }
}

/// Anything a server sends: a response or a push, told apart by the opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// The reply to the request with the frame's id.
    Response(Response),
    /// A push (see [`Push`] for what the frame's id means).
    Push(Push),
}

impl ServerMessage {
    /// Decodes the payload of a frame from the server (after [`Header::check`]).
    pub fn decode(header: &Header, payload: &[u8]) -> Result<ServerMessage, DecodeError> {
        let opcode = header.opcode;
        let msg = if (0xA0..=0xBF).contains(&opcode) {
            Push::decode_payload(opcode, payload).map(ServerMessage::Push)
        } else {
            Response::decode_payload(opcode, payload).map(ServerMessage::Response)
        };
        msg.map_err(malformed(opcode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::HEADER_LEN;

    fn frame_bytes(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    /// The worked examples of protocol.md, byte for byte.
    #[test]
    fn worked_examples() {
        let acquire = frame_bytes(|o| {
            Request::Acquire(Acquire {
                key: b"orders/42",
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 5000,
                wait_ms: None,
                priority: 0,
                lock_delay_ms: 0,
                value: None,
            })
            .encode(1, o)
        });
        assert_eq!(
            acquire,
            [
                0, 0, 0, 29, 0x03, 0, 0, 0, 1, // header
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x13, 0x88, 0, 0, 0, 0, // fields
                0, 9, b'o', b'r', b'd', b'e', b'r', b's', b'/', b'4', b'2'
            ]
        );
        let granted = frame_bytes(|o| Response::Granted { token: 7 }.encode(1, o));
        assert_eq!(
            granted,
            [0, 0, 0, 8, 0x84, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7]
        );
        let release = frame_bytes(|o| Request::Release { key: b"orders/42" }.encode(2, o));
        assert_eq!(
            release,
            [
                0, 0, 0, 11, 0x04, 0, 0, 0, 2, 0, 9, b'o', b'r', b'd', b'e', b'r', b's', b'/',
                b'4', b'2'
            ]
        );
        let ok = frame_bytes(|o| Response::Ok.encode(2, o));
        assert_eq!(ok, [0, 0, 0, 0, 0x82, 0, 0, 0, 2]);
        let ping = frame_bytes(|o| Request::Ping(b"").encode(3, o));
        assert_eq!(ping, [0, 0, 0, 0, 0x02, 0, 0, 0, 3]);
    }

    #[test]
    fn acquire_layout_rules() {
        let mut out = BytesMut::new();
        Request::Acquire(Acquire {
            key: b"k",
            mode: Mode::Shared,
            reentrant: true,
            ttl_ms: 0,
            wait_ms: Some(0),
            priority: 0,
            lock_delay_ms: 0,
            value: None,
        })
        .encode(9, &mut out);
        let h = Header::check(&out, 1024).unwrap();
        let payload = out[HEADER_LEN..].to_vec();
        assert!(Request::decode(&h, &payload).is_ok());
        // Exclusive with a limit: malformed.
        let mut bad = payload.clone();
        bad[0] = 0;
        bad[5] = 1;
        assert!(matches!(
            Request::decode(&h, &bad),
            Err(DecodeError::Malformed {
                opcode: op::ACQUIRE,
                ..
            })
        ));
        // An unknown flag bit.
        let mut bad = payload.clone();
        bad[1] |= 0x80;
        assert!(Request::decode(&h, &bad).is_err());
        // A key length beyond the payload.
        let mut bad = payload.clone();
        bad[19] = 5;
        assert!(Request::decode(&h, &bad).is_err());
        // Trailing bytes.
        let mut bad = payload;
        bad.push(0);
        assert!(Request::decode(&h, &bad).is_err());
    }

    fn round_trip_request(req: Request<'_>) {
        let mut out = BytesMut::new();
        req.encode(5, &mut out);
        let h = Header::check(&out, 1 << 20).unwrap();
        assert_eq!(Request::decode(&h, &out[HEADER_LEN..]).unwrap(), req);
    }

    fn round_trip_server(msg: ServerMessage) {
        let mut out = BytesMut::new();
        match &msg {
            ServerMessage::Response(r) => r.encode(5, &mut out),
            ServerMessage::Push(p) => p.encode(5, &mut out),
        }
        let h = Header::check(&out, 1 << 24).unwrap();
        assert_eq!(ServerMessage::decode(&h, &out[HEADER_LEN..]).unwrap(), msg);
    }

    #[test]
    fn values_and_watches_round_trip() {
        let acquire = |value| {
            Request::Acquire(Acquire {
                key: b"k",
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 10,
                wait_ms: Some(3),
                priority: 7,
                lock_delay_ms: 50,
                value,
            })
        };
        round_trip_request(acquire(Some(b"10.0.0.1:7000")));
        round_trip_request(acquire(None));
        // An empty value is no value: the flag stays clear, nothing is appended.
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        acquire(Some(b"")).encode(1, &mut a);
        acquire(None).encode(1, &mut b);
        assert_eq!(a, b);
        round_trip_request(Request::SetValue {
            key: b"k",
            value: b"v",
        });
        round_trip_request(Request::GetValue { key: b"k" });
        round_trip_request(Request::Watch { key: b"k" });
        round_trip_request(Request::Unwatch { key: b"k" });
        round_trip_request(Request::InspectValues { key: b"k" });
        round_trip_request(Request::Inspect { key: b"k" });
        // A plain INSPECT has no flags byte (what version-1 clients send).
        let mut out = BytesMut::new();
        Request::Inspect { key: b"k" }.encode(1, &mut out);
        assert_eq!(out.len(), HEADER_LEN + 3);
        round_trip_server(ServerMessage::Response(Response::Value(vec![
            HolderValue {
                session: 3,
                token: 9,
                value: Bytes::from_static(b"v"),
            },
        ])));
        round_trip_server(ServerMessage::Response(Response::Value(vec![])));
        let holder = Holder {
            session: 1,
            mode: ModeKind::Shared,
            token: 2,
            permits: 1,
            count: 1,
            ttl_ms: 5,
        };
        round_trip_server(ServerMessage::Response(Response::Inspect(Some(KeyState {
            kind: Kind::Lock,
            fencing: 2,
            holders: vec![holder.clone(), holder],
            holders_truncated: false,
            waiters: vec![],
            waiters_truncated: false,
            values: Some(vec![Bytes::from_static(b"a"), Bytes::new()]),
        }))));
        let hold = WatchedHold {
            session: 4,
            mode: ModeKind::Exclusive,
            token: 44,
            value: Bytes::from_static(b"addr"),
        };
        for event in [
            WatchEvent::State {
                fencing: 44,
                holders: vec![hold.clone()],
            },
            WatchEvent::Granted(hold.clone()),
            WatchEvent::Released(hold.clone()),
            WatchEvent::Expired(hold.clone(), EndCause::Session),
            WatchEvent::Value(hold),
        ] {
            round_trip_server(ServerMessage::Push(Push::Watch {
                key: Bytes::from_static(b"leader"),
                event,
            }));
        }
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        // INSPECT_RESULT claiming 2^32-1 holders in a 30-byte payload.
        let mut payload = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&u32::MAX.to_be_bytes());
        let h = Header {
            len: payload.len() as u32,
            opcode: op::INSPECT_RESULT,
            request_id: 1,
        };
        assert!(ServerMessage::decode(&h, &payload).is_err());
    }
}
