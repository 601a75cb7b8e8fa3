//! The commands the log carries: every change of the durable state, as it is applied.
//!
//! Replaying the log in order through [`apply`] rebuilds the lock table exactly (queues,
//! tokens and session hold lists included), because the table is deterministic and every
//! entry carries the `now` it was applied with. Time-driven changes are not replayed from
//! a clock: the timer driver's decisions are logged as [`Command::Tick`] with the holds
//! that expired and the waits that ran out, and replay applies exactly those.
//!
//! Not logged: refused requests (they change nothing; DEADLOCK aside, see
//! [`Command::DeadlockRefused`]), reads, and lease renewals. A
//! renewal changes only a deadline, and deadlines never reach a replayed outcome (replay
//! fires no timer); recovery gives every hold its full TTL again instead. Logging them
//! would make every RENEW wait for a disk write; see the README's durability section.
//!
//! Layout of one record (all integers LEB128 varints, keys length-prefixed):
//!
//! ```text
//! tag:u8  now  fields...
//! 1 Start         epoch shards
//! 2 OpenSession   session kind:u8 [secret:16 timeout_ms [user]]
//!                 (kind 0 text; 1 binary of the default user; 2 binary of a named user)
//! 3 CloseSession  session
//! 4 Acquire       session key request mode flags:u8 ttl_ms [wait_ms] [priority aging_ms]
//!                 [lock_delay_ms] [value]
//!                 (flags: 1 reentrant, 2 has wait, 4 has priority, 8 has lock-delay,
//!                 16 has value; the extra fields in flag-bit order)
//! 5 Release       session key
//! 6 Cancel        session key
//! 7 Tick          count { kind:u8 (0 expired, 1 timed out) session key
//!                         | kind:u8 (2 lock-delay ended) key }*
//! 8 Clock         unix_ms
//! 9 ForceRelease  key user count { session token }*
//! 10 EndSession   session user
//! 11 SetLimit     limit:u8 value user   (limit: 0 max-waiters-per-key, 1 max-keys,
//!                                        2 max-holds-per-session)
//! 12 MultiAcquire session request flags:u8 ttl_ms [wait_ms] [lock_delay_ms]
//!                 count { key mode }*   (flags: 2 has wait, 8 has lock-delay)
//! 13 MultiRelease session count { key }*
//! 14 Convert      session key request to:u8 (0 exclusive, 1 shared) flags:u8 (1 has wait)
//!                 [wait_ms]
//! 18 DeadlockRefused session key count { session key }*   (the cycle; changes nothing)
//! 16 SetValue     session key value      (SETVALUE; an empty value clears it)
//! ```
//!
//! Records 9 to 11 are the ADMIN commands'; `user` is the name of the user that ran it
//! (`turnstile audit` prints it).

use super::codec::{put_bytes, put_mode, put_session_kind, put_u64, DecodeError, Reader};
use std::collections::BTreeMap;

use crate::engine::{
    AcquireOutcome, AcquireRequest, Event, FencingToken, Key, LimitKind, Limits, LockTable, Mode,
    MultiOutcome, MultiRequest, NotHeld, QueuePolicy, RequestId, SessionId,
};

/// The limits set at runtime (ADMIN LIMITS SET), by the log: they override the
/// configured ones, also after a restart, until set again. Snapshots carry them.
pub type LimitsSet = BTreeMap<LimitKind, u64>;

/// `base` with the limits set at runtime in place of the configured ones.
pub fn with_set(base: &Limits, set: &LimitsSet) -> Limits {
    let mut limits = base.clone();
    for (&kind, &value) in set {
        limits.set(kind, value);
    }
    limits
}

/// Length of a binary session's secret.
pub const SECRET_LEN: usize = 16;

/// What the log keeps of a session besides its holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// A text-mode connection's session (cannot be resumed).
    Text,
    /// A binary-protocol session, resumable with its secret within its timeout, by the
    /// user that created it.
    Binary {
        /// The capability a client resumes it with.
        secret: [u8; SECRET_LEN],
        /// Its timeout in ms.
        timeout_ms: u64,
        /// The user that created it (`--users-file`); None for `default` (and for every
        /// session logged before users existed, when `default` was the only user).
        user: Option<String>,
    },
}

/// A hold or wait the timer driver ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fired {
    /// A lease ran out.
    Expired {
        /// Whose.
        session: SessionId,
        /// On which key.
        key: Key,
    },
    /// A WAIT ran out.
    TimedOut {
        /// Whose.
        session: SessionId,
        /// On which key.
        key: Key,
    },
    /// A key's lock-delay ran out.
    DelayEnded {
        /// Which key.
        key: Key,
    },
}

/// One logged change. Keys borrow from the caller (live) or the record (replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A server start: tokens from now on are above `epoch << EPOCH_SHIFT`; the table
    /// has `shards` shards.
    Start {
        /// Starts so far, this one included.
        epoch: u64,
        /// The table's shard count (token allocation depends on it).
        shards: u32,
    },
    /// A session opened.
    OpenSession {
        /// Its id.
        session: SessionId,
        /// Text or binary.
        kind: SessionKind,
    },
    /// A session ended: queued requests cancelled, holds released.
    CloseSession {
        /// Which.
        session: SessionId,
    },
    /// An ACQUIRE that was granted or queued.
    Acquire {
        /// Who.
        session: SessionId,
        /// On what.
        key: &'a [u8],
        /// The request as the table got it.
        req: AcquireRequest,
        /// The value attached to the hold (ACQUIRE ... VALUE); None or empty: none.
        value: Option<&'a [u8]>,
    },
    /// A RELEASE that released something.
    Release {
        /// Who.
        session: SessionId,
        /// What.
        key: &'a [u8],
    },
    /// A queued request cancelled.
    Cancel {
        /// Whose.
        session: SessionId,
        /// On what.
        key: &'a [u8],
    },
    /// What the timer driver ended at `now`, in the order it ended them.
    Tick {
        /// Expired holds and timed-out waits.
        fired: Vec<Fired>,
    },
    /// The wall clock (Unix ms) when the table clock read `now`: logged at every start so
    /// that `turnstile audit` can put dates on records. Changes nothing in the table.
    Clock {
        /// Milliseconds since the Unix epoch.
        unix_ms: u64,
    },
    /// ADMIN FORCE-RELEASE: an administrator dropped the holds of a key (each with every
    /// reentrant level); the waiters they blocked are granted.
    ForceRelease {
        /// The key.
        key: &'a [u8],
        /// Who ran it.
        user: &'a str,
        /// The holds to drop, as the server saw them when it took the command: applying
        /// drops each that still holds the key with that token (in cluster mode one may
        /// have ended, or the key changed hands, between proposal and apply).
        holds: Vec<(SessionId, FencingToken)>,
    },
    /// ADMIN END-SESSION: an administrator ended a session (as CloseSession does).
    EndSession {
        /// Which.
        session: SessionId,
        /// Who ran it.
        user: &'a str,
    },
    /// A multi-lock (MACQUIRE) that was granted or queued.
    MultiAcquire {
        /// Who.
        session: SessionId,
        /// Its keys and modes, in request order.
        items: Vec<(&'a [u8], Mode)>,
        /// Id, TTL and WAIT.
        req: MultiRequest,
    },
    /// MRELEASE: releases of several keys, in order, that released at least one.
    MultiRelease {
        /// Who.
        session: SessionId,
        /// The keys, in order.
        keys: Vec<&'a [u8]>,
    },
    /// A CONVERT that converted, queued an upgrade, or found the hold converted already.
    Convert {
        /// Whose hold.
        session: SessionId,
        /// On what.
        key: &'a [u8],
        /// Names a pending upgrade.
        request: RequestId,
        /// SHARED or EXCLUSIVE.
        to: Mode,
        /// How long an upgrade may wait (as ACQUIRE's WAIT).
        wait_ms: Option<u64>,
    },
    /// A request refused with DEADLOCK. Applying it changes nothing: it is in the log
    /// only so that `turnstile audit` can show refusals (rare, so off the hot path).
    /// Standalone only: in cluster mode the refused request is itself a log entry (it is
    /// proposed before its outcome is known), so no record is proposed for it.
    DeadlockRefused {
        /// The requester.
        session: SessionId,
        /// The key it would have waited on (for a multi-lock, the member in the cycle).
        key: &'a [u8],
        /// The cycle, starting with the requester: each session and the key it waits on.
        cycle: Vec<(SessionId, Key)>,
    },
    /// SETVALUE: a holder replaced the value of its hold (empty: cleared it).
    SetValue {
        /// The holder.
        session: SessionId,
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// ADMIN LIMITS SET: an administrator changed one of the table's limits. Later
    /// requests are refused (`-LIMIT`) by the new value; what is held or queued stays.
    SetLimit {
        /// Which limit.
        limit: LimitKind,
        /// Its new value.
        value: u64,
        /// Who ran it.
        user: &'a str,
    },
}

/// Tokens issued after start number `e` are above `e << EPOCH_SHIFT`: each start gets
/// 2^40 tokens (a million grants a second for twelve days) before its range could meet
/// the next start's, and 2^24 starts fit.
pub const EPOCH_SHIFT: u32 = 40;

/// A command with the time it was applied at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The table's clock when it was applied.
    pub now: u64,
    /// The change.
    pub command: Command<'a>,
}

impl Entry<'_> {
    /// Appends the record bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let tag = match &self.command {
            Command::Start { .. } => 1,
            Command::OpenSession { .. } => 2,
            Command::CloseSession { .. } => 3,
            Command::Acquire { .. } => 4,
            Command::Release { .. } => 5,
            Command::Cancel { .. } => 6,
            Command::Tick { .. } => 7,
            Command::Clock { .. } => 8,
            Command::ForceRelease { .. } => 9,
            Command::EndSession { .. } => 10,
            Command::SetLimit { .. } => 11,
            Command::MultiAcquire { .. } => 12,
            Command::MultiRelease { .. } => 13,
            Command::Convert { .. } => 14,
            Command::DeadlockRefused { .. } => 18,
            Command::SetValue { .. } => 16,
        };
        out.push(tag);
        put_u64(out, self.now);
        match &self.command {
            Command::Start { epoch, shards } => {
                put_u64(out, *epoch);
                put_u64(out, u64::from(*shards));
            }
            Command::OpenSession { session, kind } => {
                put_u64(out, session.0);
                put_session_kind(out, kind);
            }
            Command::CloseSession { session } => put_u64(out, session.0),
            Command::Acquire {
                session,
                key,
                req,
                value,
            } => {
                put_u64(out, session.0);
                put_bytes(out, key);
                put_u64(out, req.id.0);
                put_mode(out, req.mode);
                let p = req.policy;
                let value = value.filter(|v| !v.is_empty());
                out.push(
                    u8::from(req.reentrant)
                        | (u8::from(req.wait_ms.is_some()) << 1)
                        | (u8::from(p.priority != 0) << 2)
                        | (u8::from(p.lock_delay_ms != 0) << 3)
                        | (u8::from(value.is_some()) << 4),
                );
                put_u64(out, req.ttl_ms);
                if let Some(w) = req.wait_ms {
                    put_u64(out, w);
                }
                if p.priority != 0 {
                    put_u64(out, u64::from(p.priority));
                    put_u64(out, u64::from(p.aging_ms));
                }
                if p.lock_delay_ms != 0 {
                    put_u64(out, u64::from(p.lock_delay_ms));
                }
                if let Some(v) = value {
                    put_bytes(out, v);
                }
            }
            Command::SetValue {
                session,
                key,
                value,
            } => {
                put_u64(out, session.0);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Command::Release { session, key } | Command::Cancel { session, key } => {
                put_u64(out, session.0);
                put_bytes(out, key);
            }
            Command::Tick { fired } => {
                put_u64(out, fired.len() as u64);
                for f in fired {
                    let (kind, session, key) = match f {
                        Fired::Expired { session, key } => (0, Some(session), key),
                        Fired::TimedOut { session, key } => (1, Some(session), key),
                        Fired::DelayEnded { key } => (2, None, key),
                    };
                    out.push(kind);
                    if let Some(session) = session {
                        put_u64(out, session.0);
                    }
                    put_bytes(out, key.as_bytes());
                }
            }
            Command::Clock { unix_ms } => put_u64(out, *unix_ms),
            Command::ForceRelease { key, user, holds } => {
                put_bytes(out, key);
                put_bytes(out, user.as_bytes());
                put_u64(out, holds.len() as u64);
                for (session, token) in holds {
                    put_u64(out, session.0);
                    put_u64(out, token.0);
                }
            }
            Command::EndSession { session, user } => {
                put_u64(out, session.0);
                put_bytes(out, user.as_bytes());
            }
            Command::SetLimit { limit, value, user } => {
                out.push(limit.tag());
                put_u64(out, *value);
                put_bytes(out, user.as_bytes());
            }
            Command::MultiAcquire {
                session,
                items,
                req,
            } => {
                put_u64(out, session.0);
                put_u64(out, req.id.0);
                out.push(
                    (u8::from(req.wait_ms.is_some()) << 1) | (u8::from(req.lock_delay_ms > 0) << 3),
                );
                put_u64(out, req.ttl_ms);
                if let Some(w) = req.wait_ms {
                    put_u64(out, w);
                }
                if req.lock_delay_ms > 0 {
                    put_u64(out, u64::from(req.lock_delay_ms));
                }
                put_u64(out, items.len() as u64);
                for (key, mode) in items {
                    put_bytes(out, key);
                    put_mode(out, *mode);
                }
            }
            Command::MultiRelease { session, keys } => {
                put_u64(out, session.0);
                put_u64(out, keys.len() as u64);
                for key in keys {
                    put_bytes(out, key);
                }
            }
            Command::Convert {
                session,
                key,
                request,
                to,
                wait_ms,
            } => {
                put_u64(out, session.0);
                put_bytes(out, key);
                put_u64(out, request.0);
                out.push(u8::from(*to == Mode::Shared));
                out.push(u8::from(wait_ms.is_some()));
                if let Some(w) = wait_ms {
                    put_u64(out, *w);
                }
            }
            Command::DeadlockRefused {
                session,
                key,
                cycle,
            } => {
                put_u64(out, session.0);
                put_bytes(out, key);
                put_u64(out, cycle.len() as u64);
                for (s, k) in cycle {
                    put_u64(out, s.0);
                    put_bytes(out, k.as_bytes());
                }
            }
        }
    }

    /// The record as a fresh vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        self.encode(&mut out);
        out
    }
}

impl<'a> Entry<'a> {
    /// Decodes one record.
    pub fn decode(buf: &'a [u8]) -> Result<Entry<'a>, DecodeError> {
        let mut r = Reader::new(buf);
        let tag = r.u8()?;
        let now = r.u64()?;
        let session = |r: &mut Reader<'a>| r.u64().map(SessionId);
        let user = |r: &mut Reader<'a>| {
            std::str::from_utf8(r.bytes()?)
                .map_err(|_| DecodeError::Value("user name is not UTF-8"))
        };
        let command = match tag {
            1 => Command::Start {
                epoch: r.u64()?,
                shards: r.u32()?,
            },
            2 => Command::OpenSession {
                session: session(&mut r)?,
                kind: r.session_kind()?,
            },
            3 => Command::CloseSession {
                session: session(&mut r)?,
            },
            4 => {
                let s = session(&mut r)?;
                let key = r.bytes()?;
                let id = RequestId(r.u64()?);
                let mode = r.mode()?;
                let flags = r.u8()?;
                if flags & !31 != 0 {
                    return Err(DecodeError::Value("unknown acquire flags"));
                }
                let ttl_ms = r.u64()?;
                let wait_ms = if flags & 2 != 0 { Some(r.u64()?) } else { None };
                let mut policy = QueuePolicy::default();
                if flags & 4 != 0 {
                    policy.priority = r.u32()?;
                    policy.aging_ms = r.u32()?;
                }
                if flags & 8 != 0 {
                    policy.lock_delay_ms = r.u32()?;
                }
                let value = if flags & 16 != 0 {
                    Some(r.bytes()?)
                } else {
                    None
                };
                Command::Acquire {
                    session: s,
                    key,
                    req: AcquireRequest {
                        id,
                        mode,
                        reentrant: flags & 1 != 0,
                        ttl_ms,
                        wait_ms,
                        policy,
                    },
                    value,
                }
            }
            16 => Command::SetValue {
                session: session(&mut r)?,
                key: r.bytes()?,
                value: r.bytes()?,
            },
            5 => Command::Release {
                session: session(&mut r)?,
                key: r.bytes()?,
            },
            6 => Command::Cancel {
                session: session(&mut r)?,
                key: r.bytes()?,
            },
            7 => {
                let n = r.count()?;
                let mut fired = Vec::with_capacity(n);
                for _ in 0..n {
                    let kind = r.u8()?;
                    if kind == 2 {
                        fired.push(Fired::DelayEnded {
                            key: Key::new(r.bytes()?),
                        });
                        continue;
                    }
                    let s = session(&mut r)?;
                    let key = Key::new(r.bytes()?);
                    fired.push(match kind {
                        0 => Fired::Expired { session: s, key },
                        1 => Fired::TimedOut { session: s, key },
                        tag => {
                            return Err(DecodeError::Tag {
                                what: "fired",
                                tag,
                                at: 0,
                            })
                        }
                    });
                }
                Command::Tick { fired }
            }
            8 => Command::Clock { unix_ms: r.u64()? },
            9 => {
                let key = r.bytes()?;
                let user = user(&mut r)?;
                let n = r.count()?;
                let mut holds = Vec::with_capacity(n);
                for _ in 0..n {
                    holds.push((session(&mut r)?, FencingToken(r.u64()?)));
                }
                Command::ForceRelease { key, user, holds }
            }
            10 => Command::EndSession {
                session: session(&mut r)?,
                user: user(&mut r)?,
            },
            11 => {
                let at = r.position();
                let tag = r.u8()?;
                let limit = LimitKind::from_tag(tag).ok_or(DecodeError::Tag {
                    what: "limit",
                    tag,
                    at,
                })?;
                Command::SetLimit {
                    limit,
                    value: r.u64()?,
                    user: user(&mut r)?,
                }
            }
            12 => {
                let s = session(&mut r)?;
                let id = RequestId(r.u64()?);
                let flags = r.u8()?;
                if flags & !10 != 0 {
                    return Err(DecodeError::Value("unknown multi-acquire flags"));
                }
                let ttl_ms = r.u64()?;
                let wait_ms = if flags & 2 != 0 { Some(r.u64()?) } else { None };
                let lock_delay_ms = if flags & 8 != 0 { r.u32()? } else { 0 };
                let n = r.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = r.bytes()?;
                    items.push((key, r.mode()?));
                }
                Command::MultiAcquire {
                    session: s,
                    items,
                    req: MultiRequest {
                        id,
                        ttl_ms,
                        wait_ms,
                        lock_delay_ms,
                    },
                }
            }
            13 => {
                let s = session(&mut r)?;
                let n = r.count()?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    keys.push(r.bytes()?);
                }
                Command::MultiRelease { session: s, keys }
            }
            14 => {
                let s = session(&mut r)?;
                let key = r.bytes()?;
                let request = RequestId(r.u64()?);
                let to = match r.u8()? {
                    0 => Mode::Exclusive,
                    1 => Mode::Shared,
                    _ => return Err(DecodeError::Value("unknown convert mode")),
                };
                let flags = r.u8()?;
                if flags & !1 != 0 {
                    return Err(DecodeError::Value("unknown convert flags"));
                }
                let wait_ms = if flags & 1 != 0 { Some(r.u64()?) } else { None };
                Command::Convert {
                    session: s,
                    key,
                    request,
                    to,
                    wait_ms,
                }
            }
            18 => {
                let s = session(&mut r)?;
                let key = r.bytes()?;
                let n = r.count()?;
                let mut cycle = Vec::with_capacity(n);
                for _ in 0..n {
                    cycle.push((session(&mut r)?, Key::new(r.bytes()?)));
                }
                Command::DeadlockRefused {
                    session: s,
                    key,
                    cycle,
                }
            }
            tag => {
                return Err(DecodeError::Tag {
                    what: "command",
                    tag,
                    at: 0,
                })
            }
        };
        r.finish()?;
        Ok(Entry { now, command })
    }
}

/// What applying a command did, for the live caller's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Start, OpenSession, CloseSession, Tick.
    Done,
    /// The acquire's outcome.
    Acquire(AcquireOutcome),
    /// The release's outcome.
    Release(Result<(), NotHeld>),
    /// Whether the cancel found a queued request.
    Cancel(bool),
    /// The holds a forced release dropped.
    ForceRelease(Vec<(SessionId, FencingToken)>),
    /// The multi-lock's outcome.
    MultiAcquire(MultiOutcome),
    /// How many keys a multi-release released.
    MultiRelease(usize),
    /// The conversion's outcome.
    Convert(Result<AcquireOutcome, NotHeld>),
    /// SETVALUE's outcome.
    SetValue(Result<(), NotHeld>),
}

impl Applied {
    /// Whether the command changed the state (and so must be logged).
    pub fn changed(&self) -> bool {
        match self {
            Applied::Done => true,
            Applied::Acquire(o) => matches!(o, AcquireOutcome::Granted(_) | AcquireOutcome::Queued),
            Applied::Release(r) => r.is_ok(),
            Applied::Cancel(c) => *c,
            Applied::ForceRelease(dropped) => !dropped.is_empty(),
            Applied::MultiAcquire(o) => {
                matches!(o, MultiOutcome::Granted(_) | MultiOutcome::Queued)
            }
            Applied::MultiRelease(n) => *n > 0,
            Applied::Convert(r) => {
                matches!(r, Ok(AcquireOutcome::Granted(_) | AcquireOutcome::Queued))
            }
            Applied::SetValue(r) => r.is_ok(),
        }
    }
}

/// Applies one command to the table: the one function both the live server and replay
/// go through (Tick aside: live, the timer driver's `advance` decides what fires; replay
/// applies what it decided). Session bookkeeping beyond the table (kinds, secrets) is
/// the caller's.
pub fn apply(table: &LockTable, entry: &Entry<'_>, events: &mut Vec<Event>) -> Applied {
    let now = entry.now;
    match &entry.command {
        Command::Start { epoch, .. } => {
            table.raise_token_floor(epoch << EPOCH_SHIFT);
            Applied::Done
        }
        Command::OpenSession { session, .. } => {
            table.note_session(*session);
            Applied::Done
        }
        Command::CloseSession { session } | Command::EndSession { session, .. } => {
            table.close_session(*session, now, events);
            Applied::Done
        }
        Command::Acquire {
            session,
            key,
            req,
            value,
        } => Applied::Acquire(table.acquire_with_value(*session, key, req, *value, now)),
        Command::SetValue {
            session,
            key,
            value,
        } => Applied::SetValue(table.set_value(*session, key, value)),
        Command::Release { session, key } => {
            Applied::Release(table.release(*session, key, now, events))
        }
        Command::Cancel { session, key } => {
            Applied::Cancel(table.cancel(*session, key, now, events))
        }
        Command::Tick { fired } => {
            for f in fired {
                match f {
                    Fired::Expired { session, key } => {
                        table.expire(*session, key.as_bytes(), now, events);
                    }
                    Fired::TimedOut { session, key } => {
                        table.time_out(*session, key.as_bytes(), now, events);
                    }
                    Fired::DelayEnded { key } => {
                        table.end_lock_delay(key.as_bytes(), now, events);
                    }
                }
            }
            Applied::Done
        }
        Command::Clock { .. } | Command::DeadlockRefused { .. } => Applied::Done,
        Command::ForceRelease { key, holds, .. } => {
            Applied::ForceRelease(table.force_release(key, holds, now, events))
        }
        Command::SetLimit { limit, value, .. } => {
            table.set_limit(*limit, *value);
            Applied::Done
        }
        Command::MultiAcquire {
            session,
            items,
            req,
        } => Applied::MultiAcquire(table.acquire_multi(*session, items, req, now)),
        Command::MultiRelease { session, keys } => {
            Applied::MultiRelease(table.release_many(*session, keys, now, events))
        }
        Command::Convert {
            session,
            key,
            request,
            to,
            wait_ms,
        } => Applied::Convert(table.convert(*session, key, *to, *request, *wait_ms, now, events)),
    }
}

/// The record of a DEADLOCK refusal of `entry` (an ACQUIRE or MACQUIRE that applied as
/// `applied`), if it was one.
pub fn refusal<'a>(entry: &Entry<'a>, applied: &Applied) -> Option<Command<'a>> {
    let cycle = match applied {
        Applied::Acquire(AcquireOutcome::Deadlock(c))
        | Applied::MultiAcquire(MultiOutcome::Deadlock(c)) => c,
        _ => return None,
    };
    let (session, key) = match &entry.command {
        Command::Acquire { session, key, .. } => (*session, *key),
        Command::MultiAcquire { session, items, .. } => {
            let first = cycle.keys.first().map(|k| k.as_bytes());
            let mut keys = items.iter().map(|(k, _)| *k);
            let key = keys
                .clone()
                .find(|k| Some(*k) == first)
                .or_else(|| keys.next())?;
            (*session, key)
        }
        _ => return None,
    };
    Some(Command::DeadlockRefused {
        session,
        key,
        cycle: cycle
            .sessions
            .iter()
            .copied()
            .zip(cycle.keys.iter().cloned())
            .collect(),
    })
}

/// The timer driver's decisions, read off the events `advance` produced.
pub fn fired_from(events: &[Event]) -> Vec<Fired> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Expired { session, key, .. } => Some(Fired::Expired {
                session: *session,
                key: key.clone(),
            }),
            Event::TimedOut { session, key, .. } => Some(Fired::TimedOut {
                session: *session,
                key: key.clone(),
            }),
            Event::DelayEnded { key } => Some(Fired::DelayEnded { key: key.clone() }),
            Event::Granted { .. } => None,
        })
        .collect()
}
