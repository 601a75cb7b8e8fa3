//! The snapshot payload: the lock table's image plus what the log keeps beside it,
//! encoded compactly (varints, no JSON). The snapshot container (`wal::SnapshotStore`)
//! adds the magic, the last included log index and the CRC-32C around it.
//!
//! ```text
//! version:u8 = 4
//! epoch now next_request shards next_session
//! sessions: count { session kind:u8 [secret:16 timeout_ms [user]] }*   (as in OpenSession)
//! limits set: count { limit:u8 value }*                               (as in SetLimit; not in version 1)
//! per shard: next_seq
//!            locks: count { key kind:u8 [limit] last_token
//!                           holders: count { session token ttl_ms count mode lock_delay_ms
//!                                            request }*    (request: not before version 4)
//!                           waiters: count { session request mode ttl_ms since has:u8 [deadline]
//!                                            rank:zigzag lock_delay_ms upgrade:u8 }*
//!                           (has: bit 0 a deadline follows, bit 1 a multi-lock member)
//!                           has:u8 [delayed_until] }*
//!            (version 2 and 1 have no lock_delay_ms, rank, upgrade or delay: FIFO, none)
//!            sessions: count { session holds: count { key }* queued: count { key }* }*
//!            values: count { key session value }*                      (not before version 3)
//! multi-locks: count { session request keys: count { key }* }*          (not before version 3)
//! ```

use std::collections::BTreeMap;

use super::codec::{put_bytes, put_mode, put_session_kind, put_u64, DecodeError, Reader};
use super::command::{LimitsSet, SessionKind};
use crate::engine::{
    HoldImage, Key, Kind, LimitKind, LockImage, MultiImage, RequestId, SessionId, SessionImage,
    ShardImage, TableImage, ValueImage, WaiterImage,
};

/// The payload version this build writes (it reads this one; version 3, which had no
/// request id of holds; version 2, which also had no queue policy (priorities,
/// lock-delays, pending upgrades), no multi-locks and no values of holds; and version 1,
/// which also had no limits set at runtime).
pub const VERSION: u8 = 4;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Everything a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Starts so far (see [`super::command::EPOCH_SHIFT`]).
    pub epoch: u64,
    /// The table clock at the snapshot.
    pub now: u64,
    /// Request ids below this were handed out.
    pub next_request: u64,
    /// Open sessions and their kinds.
    pub sessions: BTreeMap<SessionId, SessionKind>,
    /// Limits set at runtime (ADMIN LIMITS SET), which override the configured ones.
    pub limits: LimitsSet,
    /// The lock table.
    pub table: TableImage,
}

/// Encodes a snapshot payload.
pub fn encode(state: &State) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + state.table.shards.len() * 64);
    out.push(VERSION);
    put_u64(&mut out, state.epoch);
    put_u64(&mut out, state.now);
    put_u64(&mut out, state.next_request);
    put_u64(&mut out, state.table.shards.len() as u64);
    put_u64(&mut out, state.table.next_session);
    put_u64(&mut out, state.sessions.len() as u64);
    for (id, kind) in &state.sessions {
        put_u64(&mut out, id.0);
        put_session_kind(&mut out, kind);
    }
    put_u64(&mut out, state.limits.len() as u64);
    for (kind, value) in &state.limits {
        out.push(kind.tag());
        put_u64(&mut out, *value);
    }
    for shard in &state.table.shards {
        put_u64(&mut out, shard.next_seq);
        put_u64(&mut out, shard.locks.len() as u64);
        for l in &shard.locks {
            put_bytes(&mut out, l.key.as_bytes());
            match l.kind {
                Kind::Lock => out.push(0),
                Kind::Semaphore { limit } => {
                    out.push(1);
                    put_u64(&mut out, u64::from(limit));
                }
            }
            put_u64(&mut out, l.last_token);
            put_u64(&mut out, l.holders.len() as u64);
            for h in &l.holders {
                put_u64(&mut out, h.session.0);
                put_u64(&mut out, h.token);
                put_u64(&mut out, u64::from(h.ttl_ms));
                put_u64(&mut out, u64::from(h.count));
                put_mode(&mut out, h.mode);
                put_u64(&mut out, u64::from(h.lock_delay_ms));
                put_u64(&mut out, u64::from(h.request));
            }
            put_u64(&mut out, l.waiters.len() as u64);
            for w in &l.waiters {
                put_u64(&mut out, w.session.0);
                put_u64(&mut out, w.request.0);
                put_mode(&mut out, w.mode);
                put_u64(&mut out, u64::from(w.ttl_ms));
                put_u64(&mut out, w.since);
                let multi = if w.multi { 2 } else { 0 };
                match w.deadline {
                    None => out.push(multi),
                    Some(d) => {
                        out.push(1 | multi);
                        put_u64(&mut out, d);
                    }
                }
                put_u64(&mut out, zigzag(w.rank));
                put_u64(&mut out, u64::from(w.lock_delay_ms));
                out.push(u8::from(w.upgrade));
            }
            match l.delayed_until {
                None => out.push(0),
                Some(d) => {
                    out.push(1);
                    put_u64(&mut out, d);
                }
            }
        }
        put_u64(&mut out, shard.sessions.len() as u64);
        for s in &shard.sessions {
            put_u64(&mut out, s.session.0);
            put_u64(&mut out, s.holds.len() as u64);
            for k in &s.holds {
                put_bytes(&mut out, k.as_bytes());
            }
            put_u64(&mut out, s.queued.len() as u64);
            for k in &s.queued {
                put_bytes(&mut out, k.as_bytes());
            }
        }
        put_u64(&mut out, shard.values.len() as u64);
        for v in &shard.values {
            put_bytes(&mut out, v.key.as_bytes());
            put_u64(&mut out, v.session.0);
            put_bytes(&mut out, &v.value);
        }
    }
    put_u64(&mut out, state.table.multi.len() as u64);
    for m in &state.table.multi {
        put_u64(&mut out, m.session.0);
        put_u64(&mut out, m.request.0);
        put_u64(&mut out, m.keys.len() as u64);
        for k in &m.keys {
            put_bytes(&mut out, k.as_bytes());
        }
    }
    out
}

/// Decodes a snapshot payload.
pub fn decode(buf: &[u8]) -> Result<State, DecodeError> {
    let mut r = Reader::new(buf);
    let version = r.u8()?;
    if !(1..=VERSION).contains(&version) {
        return Err(DecodeError::Version(version, VERSION));
    }
    let epoch = r.u64()?;
    let now = r.u64()?;
    let next_request = r.u64()?;
    let shards = r.count()?;
    if shards == 0 {
        return Err(DecodeError::Value("zero shards"));
    }
    let next_session = r.u64()?;
    let mut sessions = BTreeMap::new();
    for _ in 0..r.count()? {
        let id = SessionId(r.u64()?);
        let kind = r.session_kind()?;
        sessions.insert(id, kind);
    }
    let mut limits = LimitsSet::new();
    if version >= 2 {
        for _ in 0..r.count()? {
            let at = r.position();
            let tag = r.u8()?;
            let kind = LimitKind::from_tag(tag).ok_or(DecodeError::Tag {
                what: "limit",
                tag,
                at,
            })?;
            limits.insert(kind, r.u64()?);
        }
    }
    let mut images = Vec::with_capacity(shards);
    for _ in 0..shards {
        let next_seq = r.u64()?;
        let n = r.count()?;
        let mut locks = Vec::with_capacity(n);
        for _ in 0..n {
            let key = Key::new(r.bytes()?);
            let kind = match r.u8()? {
                0 => Kind::Lock,
                1 => Kind::Semaphore { limit: r.u32()? },
                tag => {
                    return Err(DecodeError::Tag {
                        what: "lock kind",
                        tag,
                        at: 0,
                    })
                }
            };
            let last_token = r.u64()?;
            let nh = r.count()?;
            let mut holders = Vec::with_capacity(nh);
            for _ in 0..nh {
                holders.push(HoldImage {
                    session: SessionId(r.u64()?),
                    token: r.u64()?,
                    ttl_ms: r.u32()?,
                    count: r.u32()?,
                    mode: r.mode()?,
                    lock_delay_ms: if version >= 3 { r.u32()? } else { 0 },
                    request: if version >= 4 { r.u32()? } else { 0 },
                });
            }
            let nw = r.count()?;
            let mut waiters = Vec::with_capacity(nw);
            for _ in 0..nw {
                let session = SessionId(r.u64()?);
                let request = RequestId(r.u64()?);
                let mode = r.mode()?;
                let ttl_ms = r.u32()?;
                let since = r.u64()?;
                let has = r.u8()?;
                let deadline = match has & 1 {
                    0 => None,
                    _ => Some(r.u64()?),
                };
                let multi = has & 2 != 0;
                let (rank, lock_delay_ms, upgrade) = if version >= 3 {
                    (unzigzag(r.u64()?), r.u32()?, r.u8()? != 0)
                } else {
                    // Strict FIFO: ranks in queue order.
                    let since = i64::try_from(since).unwrap_or(i64::MAX);
                    let back = waiters.last().map_or(i64::MIN, |w: &WaiterImage| w.rank);
                    (since.max(back), 0, false)
                };
                waiters.push(WaiterImage {
                    session,
                    request,
                    mode,
                    ttl_ms,
                    since,
                    deadline,
                    rank,
                    lock_delay_ms,
                    upgrade,
                    multi,
                });
            }
            let delayed_until = match version {
                1 | 2 => None,
                _ => match r.u8()? {
                    0 => None,
                    _ => Some(r.u64()?),
                },
            };
            locks.push(LockImage {
                key,
                kind,
                last_token,
                holders,
                waiters,
                delayed_until,
            });
        }
        let ns = r.count()?;
        let mut sess = Vec::with_capacity(ns);
        for _ in 0..ns {
            let session = SessionId(r.u64()?);
            let mut holds = Vec::new();
            for _ in 0..r.count()? {
                holds.push(Key::new(r.bytes()?));
            }
            let mut queued = Vec::new();
            for _ in 0..r.count()? {
                queued.push(Key::new(r.bytes()?));
            }
            sess.push(SessionImage {
                session,
                holds,
                queued,
            });
        }
        let mut values = Vec::new();
        if version >= 3 {
            for _ in 0..r.count()? {
                values.push(ValueImage {
                    key: Key::new(r.bytes()?),
                    session: SessionId(r.u64()?),
                    value: r.bytes()?.to_vec(),
                });
            }
        }
        images.push(ShardImage {
            next_seq,
            locks,
            sessions: sess,
            values,
        });
    }
    let mut multi = Vec::new();
    if version >= 3 {
        for _ in 0..r.count()? {
            let session = SessionId(r.u64()?);
            let request = RequestId(r.u64()?);
            let mut keys = Vec::new();
            for _ in 0..r.count()? {
                keys.push(Key::new(r.bytes()?));
            }
            multi.push(MultiImage {
                session,
                request,
                keys,
            });
        }
    }
    r.finish()?;
    Ok(State {
        epoch,
        now,
        next_request,
        sessions,
        limits,
        table: TableImage {
            next_session,
            shards: images,
            multi,
        },
    })
}
