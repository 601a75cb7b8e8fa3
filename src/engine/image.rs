//! A plain-data picture of the whole lock table, for snapshots.
//!
//! [`super::LockTable::export`] draws it and [`super::LockTable::import`] rebuilds a table
//! from it. Everything that decides later outcomes is in it, in the order that decides
//! them: each lock's holders and queue in order, each session's hold list (a session end
//! releases its holds in that order, and every release may grant, so the order picks
//! which waiter gets which token) and its queued requests, and each shard's token
//! counter. Lease deadlines are not: a restored hold gets its full TTL again from the
//! moment of recovery (clocks do not survive a restart). Wait deadlines are, since a WAIT
//! is counted on the table's own clock, which recovery continues.

use super::key::Key;
use super::types::{Kind, Mode, RequestId, SessionId};

/// The whole table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableImage {
    /// The id the next opened session gets.
    pub next_session: u64,
    /// One per shard, in shard order (the shard count is part of the picture: tokens and
    /// shard choice depend on it).
    pub shards: Vec<ShardImage>,
    /// The queued multi-locks, each with its keys in request order (the order in which
    /// its grant takes tokens).
    pub multi: Vec<MultiImage>,
}

/// A queued multi-lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiImage {
    /// Whose.
    pub session: SessionId,
    /// Its request id (every member's waiter carries it).
    pub request: RequestId,
    /// Its keys in request order.
    pub keys: Vec<Key>,
}

/// One shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardImage {
    /// The shard's token counter: its next token is `next_seq * shards + index + 1`.
    pub next_seq: u64,
    /// Every key with holders or waiters.
    pub locks: Vec<LockImage>,
    /// Every session with a hold or a queued request in this shard.
    pub sessions: Vec<SessionImage>,
    /// The values of holds and queued requests (ACQUIRE VALUE, SETVALUE).
    pub values: Vec<ValueImage>,
}

/// The value of one hold or queued request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueImage {
    /// The key.
    pub key: Key,
    /// The session that holds it or queued for it.
    pub session: SessionId,
    /// The value (never empty).
    pub value: Vec<u8>,
}

/// One key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockImage {
    /// The key.
    pub key: Key,
    /// Lock or semaphore (with its limit).
    pub kind: Kind,
    /// The last token granted on it.
    pub last_token: u64,
    /// Holders in order.
    pub holders: Vec<HoldImage>,
    /// Queued requests, head first.
    pub waiters: Vec<WaiterImage>,
    /// When the key's lock-delay ends (table clock); None when it has none.
    pub delayed_until: Option<u64>,
}

/// A granted hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldImage {
    /// Who holds it.
    pub session: SessionId,
    /// Its fencing token.
    pub token: u64,
    /// Its lease TTL in ms (the one renewals without a TTL reuse).
    pub ttl_ms: u32,
    /// Reentrant depth (1 for a plain hold).
    pub count: u32,
    /// Its mode.
    pub mode: Mode,
    /// Its lock-delay in ms (0: none).
    pub lock_delay_ms: u32,
    /// The client's part of the id of the request that made it (see
    /// `LockTable::acquire`: the same request again is answered with this hold).
    pub request: u32,
}

/// A queued request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterImage {
    /// Who waits.
    pub session: SessionId,
    /// The request's id (named in the grant or timeout event).
    pub request: RequestId,
    /// The mode asked for.
    pub mode: Mode,
    /// The lease TTL the grant will get.
    pub ttl_ms: u32,
    /// When it queued (table clock).
    pub since: u64,
    /// When its WAIT runs out (table clock); None waits without a limit.
    pub deadline: Option<u64>,
    /// Its place in the queue (see `QueuePolicy`): lower ranks are granted first.
    pub rank: i64,
    /// The lock-delay its hold will have.
    pub lock_delay_ms: u32,
    /// A pending upgrade of the session's shared hold (not a new hold).
    pub upgrade: bool,
    /// A member of a queued multi-lock (its keys, in order, are in
    /// [`TableImage::multi`]).
    pub multi: bool,
}

/// A session's footprint in one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionImage {
    /// The session.
    pub session: SessionId,
    /// Keys it holds, in its hold-list order (most recent grant first).
    pub holds: Vec<Key>,
    /// Keys it has a queued request on, in order.
    pub queued: Vec<Key>,
}

impl TableImage {
    /// Puts every list in a canonical order, so two images of the same state compare
    /// equal however their tables laid out memory (tests; snapshots need no sorting).
    pub fn canonical(mut self) -> TableImage {
        for shard in &mut self.shards {
            shard.locks.sort_by(|a, b| a.key.cmp(&b.key));
            shard.sessions.sort_by_key(|s| s.session);
            shard
                .values
                .sort_by(|a, b| (&a.key, a.session).cmp(&(&b.key, b.session)));
        }
        self.multi.sort_by_key(|m| (m.session, m.request));
        self
    }
}
