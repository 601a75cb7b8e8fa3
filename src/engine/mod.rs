//! The lock table: a sharded, deterministic state machine of named locks.
//!
//! Keys hash to shards, each behind its own mutex, so unrelated keys never contend. Only the
//! wait path (a request queues, a queued request leaves, a key with waiters changes holders)
//! touches the global [`WaitForGraph`], which is how deadlocks that span shards are seen.
//!
//! The table never reads the clock, never touches a socket and spawns nothing: every
//! operation takes `now` (milliseconds on the caller's monotonic clock) and reports what it
//! caused for other sessions as [`Event`]s pushed onto a caller-provided vector. Applied
//! in the same order with the same times, the same commands give the same grants, tokens and
//! events; that is what the write-ahead log and replication rely on.

mod explain;
pub mod hold_clock;
mod image;
mod key;
mod multi;
#[cfg(test)]
mod queue_tests;
mod shard;
mod types;
mod watch;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;

pub use explain::{
    Blocker, ExplainTarget, Explanation, Step, WaitEdge, WaitGraphDump, DEFAULT_EDGES, MAX_EDGES,
};
pub use image::{
    HoldImage, LockImage, MultiImage, SessionImage, ShardImage, TableImage, ValueImage, WaiterImage,
};
pub use key::Key;
pub use multi::{MultiOutcome, MultiRequest};
pub use types::{
    AcquireOutcome, AcquireRequest, Cycle, Due, Event, FencingToken, HolderInfo, KeyInfo, Kind,
    LimitKind, Mode, NotHeld, QueuePolicy, RequestId, SessionId, WaiterInfo, MAX_PRIORITY,
};
pub use watch::{Cause, Change, WatchHook, WatchSink};

use crate::deadlock::WaitForGraph;
use shard::{Ctx, Shard};

/// Limits the lock table enforces itself (per-connection limits live in the server).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests queued on one key at most.
    pub max_waiters_per_key: usize,
    /// Keys (with holders or waiters) in the whole table at most.
    pub max_keys: usize,
    /// Holds plus queued requests of one session at most.
    pub max_holds_per_session: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_waiters_per_key: 100_000,
            max_keys: 10_000_000,
            max_holds_per_session: 1_000_000,
        }
    }
}

impl Limits {
    /// The value of one limit.
    pub fn get(&self, kind: LimitKind) -> u64 {
        match kind {
            LimitKind::WaitersPerKey => self.max_waiters_per_key as u64,
            LimitKind::Keys => self.max_keys as u64,
            LimitKind::HoldsPerSession => u64::from(self.max_holds_per_session),
        }
    }

    /// Changes one limit (a value over the field's range means no limit).
    pub fn set(&mut self, kind: LimitKind, value: u64) {
        match kind {
            LimitKind::WaitersPerKey => {
                self.max_waiters_per_key = usize::try_from(value).unwrap_or(usize::MAX)
            }
            LimitKind::Keys => self.max_keys = usize::try_from(value).unwrap_or(usize::MAX),
            LimitKind::HoldsPerSession => {
                self.max_holds_per_session = u32::try_from(value).unwrap_or(u32::MAX)
            }
        }
    }

    /// No limits: for replay, which must apply what was applied whatever the limits
    /// configured now.
    pub fn unlimited() -> Self {
        Limits {
            max_waiters_per_key: usize::MAX,
            max_keys: usize::MAX,
            max_holds_per_session: u32::MAX,
        }
    }
}

/// Counters of what the table did (totals since start) and what it holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// ACQUIRE commands applied.
    pub acquires: u64,
    /// Holds granted (at once or from the queue; reentrant re-acquires not included).
    pub grants: u64,
    /// Reentrant re-acquires.
    pub reentrant: u64,
    /// Requests that queued.
    pub queued: u64,
    /// Try-locks that found the key busy.
    pub would_block: u64,
    /// RELEASE commands that released something (a level or a whole hold).
    pub releases: u64,
    /// Lease renewals.
    pub renews: u64,
    /// Holds lost to lease expiry.
    pub expiries: u64,
    /// Queued requests whose WAIT ran out.
    pub timeouts: u64,
    /// Queued requests cancelled (explicitly or by session end).
    pub cancels: u64,
    /// Holds released because their session ended.
    pub session_releases: u64,
    /// Holds dropped by an administrator (ADMIN FORCE-RELEASE).
    pub forced_releases: u64,
    /// Requests refused with DEADLOCK.
    pub deadlocks: u64,
    /// Requests refused with WRONGTYPE.
    pub wrongtype: u64,
    /// Requests refused with LIMIT.
    pub limits: u64,
    /// CONVERT commands applied (downgrades, upgrades and no-ops).
    pub conversions: u64,
    /// Lock-delays started (a hold with one ended other than by RELEASE).
    pub lock_delays: u64,
    /// Holds now.
    pub holds: u64,
    /// Queued requests now.
    pub waiters: u64,
    /// Keys now.
    pub keys: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.acquires += o.acquires;
        self.grants += o.grants;
        self.reentrant += o.reentrant;
        self.queued += o.queued;
        self.would_block += o.would_block;
        self.releases += o.releases;
        self.renews += o.renews;
        self.expiries += o.expiries;
        self.timeouts += o.timeouts;
        self.cancels += o.cancels;
        self.session_releases += o.session_releases;
        self.forced_releases += o.forced_releases;
        self.deadlocks += o.deadlocks;
        self.wrongtype += o.wrongtype;
        self.limits += o.limits;
        self.conversions += o.conversions;
        self.lock_delays += o.lock_delays;
        self.holds += o.holds;
        self.waiters += o.waiters;
        self.keys += o.keys;
    }
}

/// The seed of the key hash. Fixed, so that shard assignment (and with it token
/// allocation) is the same in every process that replays the same commands.
const HASH_SEED: u64 = 0x7475_726e_7374_696c;

/// Which shard `key` belongs to among `shards`. Public so that tests and tools can predict
/// token allocation.
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    shard_of_hash(key_hash(key), shards)
}

/// The hash of a key: computed once per command, it picks the shard and then the slot in
/// the shard's table.
fn key_hash(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(HASH_SEED).hash_one(key)
}

/// Bits 25..57 of the hash, mapped onto 0..shards by a multiply-shift (no division). The
/// shard's table takes its bucket from the low bits and its tag from the top 7, so neither
/// is correlated with the shard choice.
fn shard_of_hash(hash: u64, shards: usize) -> usize {
    ((((hash >> 25) as u32) as u64 * shards as u64) >> 32) as usize
}

/// How many holds and queued requests each session has, for the per-session limit.
/// Sharded by session id (sessions are spread over connections, and a connection drives its
/// session from one task, so these mutexes are practically never contended).
pub(crate) struct SessionCounts {
    shards: Box<[CachePadded<Mutex<CountMap>>]>,
}

type CountMap = hashbrown::HashMap<SessionId, u32>;

impl SessionCounts {
    fn new(shards: usize) -> Self {
        SessionCounts {
            shards: (0..shards)
                .map(|_| CachePadded::new(Mutex::new(Default::default())))
                .collect(),
        }
    }

    fn shard(&self, session: SessionId) -> &Mutex<CountMap> {
        &self.shards[(session.0 % self.shards.len() as u64) as usize]
    }

    pub(crate) fn get(&self, session: SessionId) -> u32 {
        self.shard(session)
            .lock()
            .get(&session)
            .copied()
            .unwrap_or(0)
    }

    /// Counts one more hold or queued request for `session` unless it has `max` already.
    pub(crate) fn reserve(&self, session: SessionId, max: u32) -> bool {
        let mut map = self.shard(session).lock();
        let count = map.entry(session).or_insert(0);
        if *count >= max {
            if *count == 0 {
                map.remove(&session);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back one hold or queued request of `session`.
    pub(crate) fn release(&self, session: SessionId) {
        let mut map = self.shard(session).lock();
        if let Some(count) = map.get_mut(&session) {
            *count -= 1;
            if *count == 0 {
                map.remove(&session);
            }
        }
    }
}

/// The limits, readable without a lock (one relaxed load each per command).
struct LimitCells {
    max_waiters_per_key: AtomicUsize,
    max_keys: AtomicUsize,
    max_holds_per_session: std::sync::atomic::AtomicU32,
}

impl LimitCells {
    fn new(l: &Limits) -> Self {
        LimitCells {
            max_waiters_per_key: AtomicUsize::new(l.max_waiters_per_key),
            max_keys: AtomicUsize::new(l.max_keys),
            max_holds_per_session: std::sync::atomic::AtomicU32::new(l.max_holds_per_session),
        }
    }

    fn load(&self) -> Limits {
        Limits {
            max_waiters_per_key: self.max_waiters_per_key.load(Ordering::Relaxed),
            max_keys: self.max_keys.load(Ordering::Relaxed),
            max_holds_per_session: self.max_holds_per_session.load(Ordering::Relaxed),
        }
    }

    fn store(&self, l: &Limits) {
        self.max_waiters_per_key
            .store(l.max_waiters_per_key, Ordering::Relaxed);
        self.max_keys.store(l.max_keys, Ordering::Relaxed);
        self.max_holds_per_session
            .store(l.max_holds_per_session, Ordering::Relaxed);
    }
}

/// The lock table. See the module docs.
pub struct LockTable {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    sessions: SessionCounts,
    graph: Mutex<WaitForGraph>,
    /// Changed at runtime only through a logged command (ADMIN LIMITS SET), so every
    /// replica and every replay sees the same limits at the same point of the log.
    limits: LimitCells,
    keys: AtomicUsize,
    next_session: AtomicU64,
    /// When the timer driver plans to wake up next; a timer armed earlier calls `waker`.
    wake_at: AtomicU64,
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The queued multi-locks (see [`multi`]).
    multi: Mutex<multi::Registry>,
    /// Where changes of keys go while someone watches (see [`watch`]).
    watch: OnceLock<WatchHook>,
}

/// A key's holders and waiters with the value of each holder (None: no value), in
/// holder order: what INSPECT WITHVALUES, GETVALUE and a new watch show.
pub type KeyValues = (KeyInfo, Vec<Option<Box<[u8]>>>);

impl LockTable {
    /// A table with `shards` shards (at least 1) whose clock starts at `now`.
    pub fn new(shards: usize, limits: Limits, now: u64) -> Self {
        let shards = shards.max(1);
        LockTable {
            shards: (0..shards)
                .map(|i| CachePadded::new(Mutex::new(Shard::new(i, shards, now, HASH_SEED))))
                .collect(),
            graph: Mutex::new(WaitForGraph::new()),
            sessions: SessionCounts::new(shards),
            limits: LimitCells::new(&limits),
            keys: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            wake_at: AtomicU64::new(u64::MAX),
            waker: OnceLock::new(),
            multi: Mutex::new(multi::Registry::default()),
            watch: OnceLock::new(),
        }
    }

    /// Installs where changes of keys go (see [`watch`]). Only the first call takes
    /// effect.
    pub fn set_watch(&self, hook: WatchHook) {
        let _ = self.watch.set(hook);
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits.load()
    }

    /// Changes one limit. Requests already granted or queued stay; the new value refuses
    /// later ones.
    pub fn set_limit(&self, kind: LimitKind, value: u64) {
        let mut limits = self.limits.load();
        limits.set(kind, value);
        self.limits.store(&limits);
    }

    /// Installs the function called when a timer is armed earlier than the time the driver
    /// announced with [`Self::set_wake_at`]. Only the first call takes effect.
    pub fn set_waker(&self, waker: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(waker);
    }

    /// The timer driver announces when it will next call [`Self::advance`] (`u64::MAX`: not
    /// until woken).
    pub fn set_wake_at(&self, at: u64) {
        self.wake_at.store(at, Ordering::Relaxed);
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            graph: &self.graph,
            sessions: &self.sessions,
            limits: self.limits.load(),
            keys: &self.keys,
            wake_at: &self.wake_at,
            waker: self.waker.get().map(|w| &**w),
            notes: Default::default(),
            watch: self.watch.get(),
        }
    }

    fn shard(&self, key: &[u8]) -> (u64, &Mutex<Shard>) {
        let hash = key_hash(key);
        (hash, &self.shards[shard_of_hash(hash, self.shards.len())])
    }

    /// Opens a session. Ids increase from 1 and are never reused.
    pub fn open_session(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// Ends a session: its queued requests are cancelled and its holds released, which may
    /// grant other sessions' requests (pushed onto `events`).
    pub fn close_session(&self, session: SessionId, now: u64, events: &mut Vec<Event>) {
        let ctx = self.ctx();
        self.forget_multi(session);
        for shard in self.shards.iter() {
            shard.lock().close_session(session, now, &ctx, events);
        }
        self.settle(&ctx, now, events);
    }

    /// Applies an ACQUIRE of `key` by `session`.
    pub fn acquire(
        &self,
        session: SessionId,
        key: &[u8],
        req: &AcquireRequest,
        now: u64,
    ) -> AcquireOutcome {
        self.acquire_with_value(session, key, req, None, now)
    }

    /// Applies an ACQUIRE that attaches `value` to the hold (empty: none). A reentrant
    /// re-acquire with a value replaces the hold's value; a queued request keeps its value
    /// until it is granted.
    pub fn acquire_with_value(
        &self,
        session: SessionId,
        key: &[u8],
        req: &AcquireRequest,
        value: Option<&[u8]>,
        now: u64,
    ) -> AcquireOutcome {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        if req.policy.priority > 0 && self.graph.lock().is_waiting(session) {
            // A session that waits elsewhere takes no priority: passing the waiters of
            // this key would make them wait for it, and through its own waits that could
            // close a cycle no detection sees (the new edges point *at* the requester).
            let mut fifo = *req;
            fifo.policy.priority = 0;
            return shard
                .lock()
                .acquire(session, key, hash, &fifo, value, now, &ctx);
        }
        shard
            .lock()
            .acquire(session, key, hash, req, value, now, &ctx)
    }

    /// SETVALUE: `session` replaces the value of its hold on `key` (empty: clears it).
    pub fn set_value(&self, session: SessionId, key: &[u8], value: &[u8]) -> Result<(), NotHeld> {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        shard.lock().set_value(session, key, hash, value, &ctx)
    }

    /// [`Self::inspect`] with the value of each holder.
    pub fn inspect_values(&self, key: &[u8], now: u64) -> Option<KeyValues> {
        let (hash, shard) = self.shard(key);
        let shard = shard.lock();
        let info = shard.inspect(key, hash, now)?;
        let values = shard.holder_values(key, hash).unwrap_or_default();
        Some((info, values))
    }

    /// Runs `f` on `key`'s state with its shard locked: no change of the key can fall
    /// between what `f` sees and what the watch sink hears next. A new watch reads its
    /// initial state and registers itself here.
    pub fn observe<R>(&self, key: &[u8], now: u64, f: impl FnOnce(Option<KeyValues>) -> R) -> R {
        let (hash, shard) = self.shard(key);
        let shard = shard.lock();
        let state = shard.inspect(key, hash, now).map(|info| {
            let values = shard.holder_values(key, hash).unwrap_or_default();
            (info, values)
        });
        f(state)
    }

    /// Releases `session`'s hold on `key` (one reentrant level). Waiters it unblocks are
    /// granted and pushed onto `events`.
    pub fn release(
        &self,
        session: SessionId,
        key: &[u8],
        now: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), NotHeld> {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        let released = shard.lock().release(session, key, hash, now, &ctx, events);
        self.settle(&ctx, now, events);
        released
    }

    /// Renews `session`'s lease on `key` to `ttl_ms` from now (the hold's last TTL when
    /// None). Returns the lease now left in milliseconds.
    pub fn renew(
        &self,
        session: SessionId,
        key: &[u8],
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<u64, NotHeld> {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        shard.lock().renew(session, key, hash, ttl_ms, now, &ctx)
    }

    /// Converts `session`'s hold on `key` to `to` (SHARED or EXCLUSIVE) in place: see
    /// `Shard::convert` for the rules. A pending upgrade is named `id` in its later
    /// [`Event::Granted`] or [`Event::TimedOut`]; `wait_ms` as for ACQUIRE.
    #[allow(clippy::too_many_arguments, reason = "one per part of the command")]
    pub fn convert(
        &self,
        session: SessionId,
        key: &[u8],
        to: Mode,
        id: RequestId,
        wait_ms: Option<u64>,
        now: u64,
        events: &mut Vec<Event>,
    ) -> Result<AcquireOutcome, NotHeld> {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        let converted = shard
            .lock()
            .convert(session, key, hash, to, id, wait_ms, now, &ctx, events);
        self.settle(&ctx, now, events);
        converted
    }

    /// Replays the end of `key`'s lock-delay the timer driver decided. False if the key
    /// had none.
    pub fn end_lock_delay(&self, key: &[u8], now: u64, events: &mut Vec<Event>) -> bool {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        let ended = shard.lock().end_lock_delay(key, hash, now, &ctx, events);
        self.settle(&ctx, now, events);
        ended
    }

    /// Cancels `session`'s queued request on `key`; false if it had none (it may have been
    /// granted or timed out already: look for the event).
    pub fn cancel(
        &self,
        session: SessionId,
        key: &[u8],
        now: u64,
        events: &mut Vec<Event>,
    ) -> bool {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        let cancelled = shard.lock().cancel(session, key, hash, now, &ctx, events);
        self.settle(&ctx, now, events);
        cancelled
    }

    /// Fires every lease expiry and wait timeout due at `now`, shard by shard.
    pub fn advance(&self, now: u64, events: &mut Vec<Event>) {
        let ctx = self.ctx();
        for shard in self.shards.iter() {
            // A timer that leaves a multi-lock note is acted on before the next one.
            while shard.lock().advance(now, &ctx, events) {
                self.settle(&ctx, now, events);
            }
            self.settle(&ctx, now, events);
        }
    }

    /// What [`Self::advance`] would end at `now`, shard by shard, without ending it (see
    /// `Shard::due`): a cluster leader proposes these as a Tick entry.
    pub fn due(&self, now: u64) -> Vec<Due> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            shard.lock().due(now, &mut out);
        }
        out
    }

    /// Replays a lease expiry the timer driver decided: as [`Self::advance`] did when it
    /// fired it. False if `session` held nothing on `key`.
    pub fn expire(
        &self,
        session: SessionId,
        key: &[u8],
        now: u64,
        events: &mut Vec<Event>,
    ) -> bool {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        let expired = shard.lock().expire(session, key, hash, now, &ctx, events);
        self.settle(&ctx, now, events);
        expired
    }

    /// Replays a WAIT timeout the timer driver decided. False if `session` had no queued
    /// request on `key`.
    pub fn time_out(
        &self,
        session: SessionId,
        key: &[u8],
        now: u64,
        events: &mut Vec<Event>,
    ) -> bool {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        let timed_out = shard.lock().time_out(session, key, hash, now, &ctx, events);
        self.settle(&ctx, now, events);
        timed_out
    }

    /// Makes every later token larger than `floor`, in every shard.
    pub fn raise_token_floor(&self, floor: u64) {
        for shard in self.shards.iter() {
            shard.lock().raise_token_floor(floor);
        }
    }

    /// Makes sure later sessions get ids above `session` (replay of a logged open).
    pub fn note_session(&self, session: SessionId) {
        self.next_session
            .fetch_max(session.0.saturating_add(1), Ordering::Relaxed);
    }

    /// After recovery: every hold's lease runs its full TTL again from `now`.
    pub fn restart_leases(&self, now: u64) {
        for shard in self.shards.iter() {
            shard.lock().restart_leases(now);
        }
    }

    /// Replaces the limits (recovery replays with none, then installs the configured ones).
    pub fn set_limits(&self, limits: Limits) {
        self.limits.store(&limits);
    }

    /// Drops the listed holds of `key`, each `(session, token)` that still holds it, with
    /// every reentrant level, and grants the waiters they blocked (ADMIN FORCE-RELEASE).
    /// Each dropped hold's session hears [`Event::Expired`], as if its lease ran out.
    /// Returns the holds dropped, in the order listed.
    pub fn force_release(
        &self,
        key: &[u8],
        holds: &[(SessionId, FencingToken)],
        now: u64,
        events: &mut Vec<Event>,
    ) -> Vec<(SessionId, FencingToken)> {
        let ctx = self.ctx();
        let (hash, shard) = self.shard(key);
        let dropped = shard
            .lock()
            .force_release(key, hash, holds, now, &ctx, events);
        self.settle(&ctx, now, events);
        dropped
    }

    /// The holders of `key` now: session and token of each.
    pub fn holders(&self, key: &[u8]) -> Vec<(SessionId, FencingToken)> {
        self.inspect(key, 0)
            .map(|i| i.holders.iter().map(|h| (h.session, h.token)).collect())
            .unwrap_or_default()
    }

    /// The table as plain data (a snapshot). Consistent only if nothing changes the table
    /// meanwhile: the caller holds off writers.
    pub fn export(&self) -> TableImage {
        TableImage {
            next_session: self.next_session.load(Ordering::Relaxed),
            shards: self.shards.iter().map(|s| s.lock().export()).collect(),
            multi: self.export_multi(),
        }
    }

    /// Rebuilds an empty table from `image`; holds get their full TTL from `now`.
    ///
    /// # Panics
    /// If the image has another shard count than the table (the caller builds the table
    /// from the image's count).
    pub fn import(&self, image: &TableImage, now: u64) {
        assert_eq!(
            image.shards.len(),
            self.shards.len(),
            "shard count of the image"
        );
        self.note_session(SessionId(image.next_session.saturating_sub(1)));
        let ctx = self.ctx();
        for (shard, img) in self.shards.iter().zip(&image.shards) {
            shard.lock().import(img, now, &ctx);
        }
        self.import_multi(&image.multi);
    }

    /// A time no later than the earliest pending timer, or None when there is none.
    pub fn next_deadline(&self) -> Option<u64> {
        self.shards
            .iter()
            .filter_map(|s| s.lock().next_deadline())
            .min()
    }

    /// A key's holders and waiters, or None when the key does not exist.
    pub fn inspect(&self, key: &[u8], now: u64) -> Option<KeyInfo> {
        let (hash, shard) = self.shard(key);
        shard.lock().inspect(key, hash, now)
    }

    /// Keys with holders or waiters for which `filter` holds, at most `limit` of them,
    /// shard by shard.
    pub fn keys(&self, mut filter: impl FnMut(&[u8]) -> bool, limit: usize) -> Vec<Key> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            if out.len() >= limit {
                break;
            }
            shard.lock().for_each_key(|k| {
                if filter(k.as_bytes()) {
                    out.push(k.clone());
                }
                out.len() < limit
            });
        }
        out
    }

    /// Calls `f` for every hold in the table (invariant checks, tests).
    pub fn for_each_hold(&self, mut f: impl FnMut(&Key, Kind, SessionId, Mode, FencingToken, u32)) {
        for shard in self.shards.iter() {
            shard.lock().for_each_hold(&mut f);
        }
    }

    /// Calls `f` for every queued request: its key, session and request id.
    pub fn for_each_waiter(&self, mut f: impl FnMut(&Key, SessionId, RequestId)) {
        for shard in self.shards.iter() {
            shard.lock().for_each_waiter(&mut f);
        }
    }

    /// Holds plus queued requests of `session` now.
    pub fn session_holds(&self, session: SessionId) -> u32 {
        self.sessions.get(session)
    }

    /// Counters summed over the shards.
    /// Starts timing holds from grant to end (see [`hold_clock`]); holds granted before
    /// are not timed.
    pub fn time_holds(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            if shard.hold_clock.is_none() {
                shard.hold_clock = Some(Box::new(hold_clock::HoldClock::new()));
            }
        }
    }

    /// How long the ended holds were held, in milliseconds (None: not timing holds).
    pub fn hold_durations(&self) -> Option<hdrhistogram::Histogram<u64>> {
        let mut all = None;
        for shard in self.shards.iter() {
            if let Some(c) = &shard.lock().hold_clock {
                c.add_to(all.get_or_insert_with(hold_clock::empty));
            }
        }
        all
    }

    /// The length of every queue (keys with waiters), in no particular order.
    pub fn queue_lengths(&self) -> Vec<usize> {
        self.graph.lock().queue_lengths()
    }

    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for shard in self.shards.iter() {
            total.add(&shard.lock().stats);
        }
        total
    }
}
