//! The vocabulary of the lock table: ids, modes, requests, outcomes and events.
//!
//! Everything here is plain data so that a command can be logged, replayed and compared
//! against a reference model. Time is always milliseconds on the caller's clock (`u64`).

use std::fmt;

use super::key::Key;

/// A session: the owner of holds and queued requests. In text mode one connection is one
/// session. Ids are assigned by the lock table in increasing order and never reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A fencing token: strictly increasing over the grants of one key and never issued twice
/// by one lock table (tokens are unique across keys too, see [`crate::engine::shard`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one queued request. Chosen by the caller (unique per lock table) so that it
/// can be registered before the request is applied, logged with the command, and named by
/// CANCEL or by a client retrying after a failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// How a request wants to hold a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The writer of a read-write lock, or a plain mutex.
    Exclusive,
    /// A reader of a read-write lock.
    Shared,
    /// `permits` of a counting semaphore with `limit` permits in all.
    Semaphore {
        /// Total permits of the semaphore; fixed while the key exists.
        limit: u32,
        /// Permits this hold takes (1..=limit).
        permits: u32,
    },
}

impl Mode {
    /// The kind of key this mode belongs to.
    pub fn kind(self) -> Kind {
        match self {
            Mode::Exclusive | Mode::Shared => Kind::Lock,
            Mode::Semaphore { limit, .. } => Kind::Semaphore { limit },
        }
    }

    /// Permits the hold takes: 1 for the lock modes.
    pub fn permits(self) -> u32 {
        match self {
            Mode::Semaphore { permits, .. } => permits,
            _ => 1,
        }
    }

    /// The wire name of the mode, as INSPECT shows it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
            Mode::Semaphore { .. } => "semaphore",
        }
    }
}

/// The kind of a key, fixed while the key has holders or waiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-write lock (EXCLUSIVE and SHARED requests).
    Lock,
    /// A counting semaphore with this many permits.
    Semaphore {
        /// Total permits.
        limit: u32,
    },
}

impl Kind {
    /// The wire name of the kind, as INSPECT shows it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Semaphore { .. } => "semaphore",
        }
    }

    /// The permit limit: 1 for a lock, whose exclusive holds take the only permit.
    pub fn limit(self) -> u32 {
        match self {
            Kind::Lock => 1,
            Kind::Semaphore { limit } => limit,
        }
    }
}

/// One ACQUIRE, as the lock table sees it (already validated by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquireRequest {
    /// Names the request if it queues.
    pub id: RequestId,
    /// The mode wanted.
    pub mode: Mode,
    /// Re-acquiring a key already held in the same mode bumps a count instead of deadlocking.
    pub reentrant: bool,
    /// The lease, counted from the grant. Must be at least 1.
    pub ttl_ms: u64,
    /// How long the request may queue: `Some(0)` is a try-lock, `None` waits until granted
    /// or until the session ends.
    pub wait_ms: Option<u64>,
    /// Priority and lock-delay (all zero by default: strict FIFO, no delay).
    pub policy: QueuePolicy,
}

/// The highest priority a request may ask for.
pub const MAX_PRIORITY: u32 = 1000;

/// The queue-policy options of an ACQUIRE, already combined with the server's settings
/// by the caller (so that the log and every replica see the values that decided).
///
/// # Which waiter is granted next
/// A queued request's effective priority is `priority + waited_ms / aging_ms`: a waiter
/// gains one level per `aging_ms` waited. The queue is kept in order of effective
/// priority, highest first, ties in arrival order, and is granted strictly in that
/// order (the head while it is compatible, as without priorities). Since every waiter
/// ages at the same rate, two waiters' order never changes while they wait: a request
/// of priority `p` that queues at `t` ranks as `t - p * aging_ms`, and the queue is
/// sorted by that rank. A request of priority 0 ranks behind everything queued, so with
/// no priorities the queue is exactly the strict FIFO it always was; a later request of
/// priority `p` passes an earlier one only if it came less than `(p - q) * aging_ms`
/// after it (`q` the earlier one's priority), so nothing waits forever behind a stream of
/// higher priorities. A pending upgrade (see `LockTable::convert`) is ahead of all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    /// 0 (the default) to [`MAX_PRIORITY`].
    pub priority: u32,
    /// The aging period: milliseconds of waiting worth one priority level (only read
    /// when `priority` is above 0; at least 1).
    pub aging_ms: u32,
    /// When the hold this request gets ends by lease expiry, session loss or a forced
    /// release (not by RELEASE), the key is granted to nobody for this long (0: no
    /// delay). Already the larger of the server's and the request's.
    pub lock_delay_ms: u32,
}

impl QueuePolicy {
    /// The queue rank of a request that queues at `now` behind a queue whose last rank
    /// is `back` (lower ranks are granted first).
    pub(crate) fn rank(self, now: u64, back: Option<i64>) -> i64 {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        if self.priority == 0 {
            return back.map_or(now, |b| b.max(now));
        }
        now.saturating_sub(i64::from(self.priority) * i64::from(self.aging_ms.max(1)))
    }
}

/// What an ACQUIRE did at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// Granted now with this token (a reentrant re-acquire returns the hold's token).
    Granted(FencingToken),
    /// Queued; it ends later with exactly one of [`Event::Granted`], [`Event::TimedOut`], or
    /// silently with its session, or by [`crate::engine::LockTable::cancel`].
    Queued,
    /// A try-lock (`wait_ms == Some(0)`) that could not be granted at once.
    WouldBlock,
    /// Waiting would close a cycle in the wait-for graph; the request was refused and nothing
    /// else changed. The cycle lists the sessions and keys it passes through, starting with
    /// the requester.
    Deadlock(Cycle),
    /// The key exists with another kind (or a semaphore with another limit).
    WrongType {
        /// The kind the key has now.
        current: Kind,
    },
    /// A configured limit would be passed.
    Limit(LimitKind),
}

/// The sessions and keys of a refused wait, in order: `sessions[i]` waits on `keys[i]`,
/// which is held or requested ahead by `sessions[i + 1]` (and the last by `sessions[0]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cycle {
    /// The sessions in the cycle, starting with the requester.
    pub sessions: Vec<SessionId>,
    /// The key each session waits on.
    pub keys: Vec<Key>,
}

/// Which configured limit a request would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitKind {
    /// Waiters queued on one key.
    WaitersPerKey,
    /// Holds and queued requests of one session.
    HoldsPerSession,
    /// Keys in the table.
    Keys,
}

impl LimitKind {
    /// Every limit, in the order ADMIN LIMITS lists them.
    pub const ALL: [LimitKind; 3] = [
        LimitKind::WaitersPerKey,
        LimitKind::Keys,
        LimitKind::HoldsPerSession,
    ];

    /// The name ADMIN LIMITS and the command-line flag use (`--max-keys`...).
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::WaitersPerKey => "max-waiters-per-key",
            LimitKind::HoldsPerSession => "max-holds-per-session",
            LimitKind::Keys => "max-keys",
        }
    }

    /// The limit named `name` (any letter case).
    pub fn from_name(name: &[u8]) -> Option<LimitKind> {
        LimitKind::ALL
            .into_iter()
            .find(|k| k.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// Its tag in log records and snapshots.
    pub fn tag(self) -> u8 {
        match self {
            LimitKind::WaitersPerKey => 0,
            LimitKind::Keys => 1,
            LimitKind::HoldsPerSession => 2,
        }
    }

    /// The limit with tag `tag`.
    pub fn from_tag(tag: u8) -> Option<LimitKind> {
        LimitKind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// A human explanation for the `-LIMIT` reply.
    pub fn describe(self) -> &'static str {
        match self {
            LimitKind::WaitersPerKey => "too many waiters queued on this key",
            LimitKind::HoldsPerSession => "too many holds and queued requests in this session",
            LimitKind::Keys => "too many keys in the lock table",
        }
    }
}

/// Something that happened later than the command that caused it, for the session that
/// must hear of it. Produced by releases, expiries, timeouts, cancels and session ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A queued request was granted.
    Granted {
        /// The session that queued it.
        session: SessionId,
        /// The request.
        request: RequestId,
        /// The key.
        key: Key,
        /// Its token.
        token: FencingToken,
    },
    /// A queued request's WAIT ran out; it left the queue.
    TimedOut {
        /// The session that queued it.
        session: SessionId,
        /// The request.
        request: RequestId,
        /// The key.
        key: Key,
    },
    /// A lock-delay ended: the key may be granted again (its waiters, if any, were
    /// granted after this event). For the log only: it concerns no session.
    DelayEnded {
        /// The key.
        key: Key,
    },
    /// A hold's lease ran out; the hold is gone.
    Expired {
        /// The session that held it.
        session: SessionId,
        /// The key.
        key: Key,
        /// The token of the lost hold.
        token: FencingToken,
    },
}

impl Event {
    /// The session the event is for.
    pub fn session(&self) -> SessionId {
        match self {
            Event::Granted { session, .. }
            | Event::TimedOut { session, .. }
            | Event::Expired { session, .. } => *session,
            // Session ids start at 1: nobody is routed this one.
            Event::DelayEnded { .. } => SessionId(0),
        }
    }
}

/// Why a RELEASE or RENEW found nothing to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the session holds nothing on this key")]
pub struct NotHeld;

/// One holder, as INSPECT shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderInfo {
    /// The owner.
    pub session: SessionId,
    /// The mode held.
    pub mode: Mode,
    /// The hold's token.
    pub token: FencingToken,
    /// Permits taken (1 for lock modes).
    pub permits: u32,
    /// Reentrant count (1 unless re-acquired).
    pub count: u32,
    /// Lease left in milliseconds.
    pub ttl_ms: u64,
}

/// One queued request, as INSPECT shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterInfo {
    /// The requester.
    pub session: SessionId,
    /// The request.
    pub request: RequestId,
    /// The mode wanted.
    pub mode: Mode,
    /// Permits wanted.
    pub permits: u32,
    /// How long it has waited, in milliseconds.
    pub waited_ms: u64,
}

/// A key's state, as INSPECT shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's kind.
    pub kind: Kind,
    /// The last token issued for the key.
    pub fencing: FencingToken,
    /// Holders in grant order.
    pub holders: Vec<HolderInfo>,
    /// Waiters in queue order.
    pub waiters: Vec<WaiterInfo>,
}

/// A timer that is due: what [`crate::engine::LockTable::due`] reports for a cluster
/// leader to propose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// `session`'s lease on `key` ran out.
    Lease {
        /// Whose.
        session: SessionId,
        /// On which key.
        key: Key,
    },
    /// `session`'s WAIT on `key` ran out.
    Wait {
        /// Whose.
        session: SessionId,
        /// On which key.
        key: Key,
    },
    /// The lock-delay of `key` ran out.
    Delay {
        /// Which key.
        key: Key,
    },
}
