//! One shard of the lock table: the keys that hash to it, their holders and queues, the
//! lease and wait timers of those keys, and which of them each session holds.
//!
//! A shard is a plain single-threaded state machine; [`super::LockTable`] puts each behind
//! its own mutex. Everything a shard decides depends only on the commands it is given and
//! the `now` they carry, so the same sequence always yields the same grants and tokens.
//!
//! Fencing tokens are allocated per shard as `seq * shards + index + 1`: strictly increasing
//! within a shard (hence per key, even when a key is removed and created again) and never
//! equal across shards, without a global counter on the hot path.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashTable};
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::explain::{Blocker, WaitEdge};
use super::image::{HoldImage, LockImage, SessionImage, ShardImage, ValueImage, WaiterImage};
use super::types::{
    AcquireOutcome, AcquireRequest, Cycle, Due, Event, FencingToken, HolderInfo, KeyInfo, Kind,
    LimitKind, Mode, NotHeld, RequestId, SessionId, WaiterInfo,
};
use super::watch::{Cause, Change, WatchHook};
use super::{Key, Limits, Stats};
use crate::deadlock::WaitForGraph;
use crate::lease::{TimerId, TimerWheel};

/// "No lock" in the session hold lists.
const NIL: u32 = u32::MAX;

/// What a timer in the wheel stands for, packed into 8 bytes because every held lock has
/// one: the lock's index with the top bit set for a wait deadline, the next bit for the
/// end of a lock-delay (both clear for a lease), and the low 32 bits of the session (0
/// for a lock-delay). A session holds or queues on a key at most once, and the
/// timer that fired is the one no longer pending in the wheel, so this names the hold or
/// waiter exactly.
#[derive(Clone, Copy, Debug)]
struct TimerRef {
    lock: u32,
    session: u32,
}

const WAIT_BIT: u32 = 1 << 31;
const DELAY_BIT: u32 = 1 << 30;

impl TimerRef {
    fn lease(lock: u32, session: SessionId) -> Self {
        TimerRef {
            lock,
            session: session.0 as u32,
        }
    }

    fn wait(lock: u32, session: SessionId) -> Self {
        TimerRef {
            lock: lock | WAIT_BIT,
            session: session.0 as u32,
        }
    }

    fn delay(lock: u32) -> Self {
        TimerRef {
            lock: lock | DELAY_BIT,
            session: 0,
        }
    }

    fn is_wait(self) -> bool {
        self.lock & WAIT_BIT != 0
    }

    fn is_delay(self) -> bool {
        self.lock & DELAY_BIT != 0
    }

    /// Order among timers due at the same time on the same key: leases, waits, delays.
    fn order(self) -> u8 {
        u8::from(self.is_wait()) + 2 * u8::from(self.is_delay())
    }

    fn index(self) -> u32 {
        self.lock & !(WAIT_BIT | DELAY_BIT)
    }

    fn names(self, session: SessionId) -> bool {
        self.session == session.0 as u32
    }
}

/// The mode of a hold, without the semaphore's limit (the lock's kind has it): small, and
/// its tag leaves a niche so that [`Holders`] costs nothing over one hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeldMode {
    Exclusive,
    Shared,
    Semaphore { permits: u32 },
}

impl HeldMode {
    fn of(mode: Mode) -> Self {
        match mode {
            Mode::Exclusive => HeldMode::Exclusive,
            Mode::Shared => HeldMode::Shared,
            Mode::Semaphore { permits, .. } => HeldMode::Semaphore { permits },
        }
    }

    fn mode(self, kind: Kind) -> Mode {
        match self {
            HeldMode::Exclusive => Mode::Exclusive,
            HeldMode::Shared => Mode::Shared,
            HeldMode::Semaphore { permits } => Mode::Semaphore {
                limit: kind.limit(),
                permits,
            },
        }
    }

    fn permits(self) -> u32 {
        match self {
            HeldMode::Semaphore { permits } => permits,
            _ => 1,
        }
    }
}

/// The holders of a lock: most locks have exactly one, stored inline without a
/// capacity word.
#[derive(Debug, Default)]
enum Holders {
    #[default]
    Empty,
    One(Hold),
    Many(Vec<Hold>),
}

impl Holders {
    fn as_slice(&self) -> &[Hold] {
        match self {
            Holders::Empty => &[],
            Holders::One(h) => std::slice::from_ref(h),
            Holders::Many(v) => v,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Hold] {
        match self {
            Holders::Empty => &mut [],
            Holders::One(h) => std::slice::from_mut(h),
            Holders::Many(v) => v,
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, Hold> {
        self.as_slice().iter()
    }

    fn is_empty(&self) -> bool {
        matches!(self, Holders::Empty)
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn push(&mut self, hold: Hold) {
        *self = match std::mem::take(self) {
            Holders::Empty => Holders::One(hold),
            Holders::One(first) => Holders::Many(vec![first, hold]),
            Holders::Many(mut v) => {
                v.push(hold);
                Holders::Many(v)
            }
        };
    }

    fn remove(&mut self, pos: usize) -> Hold {
        match std::mem::take(self) {
            Holders::Empty => unreachable!("remove from no holders: positions come from a search"),
            Holders::One(h) => h,
            Holders::Many(mut v) => {
                let h = v.remove(pos);
                *self = match v.len() {
                    0 => Holders::Empty,
                    1 => Holders::One(v.pop().expect("one left")),
                    _ => Holders::Many(v),
                };
                h
            }
        }
    }
}

impl std::ops::Index<usize> for Holders {
    type Output = Hold;
    fn index(&self, i: usize) -> &Hold {
        &self.as_slice()[i]
    }
}

impl std::ops::IndexMut<usize> for Holders {
    fn index_mut(&mut self, i: usize) -> &mut Hold {
        &mut self.as_mut_slice()[i]
    }
}

/// A granted hold. Kept small: most locks have exactly one, stored inline in the lock.
#[derive(Debug)]
struct Hold {
    session: SessionId,
    token: u64,
    timer: TimerId,
    ttl_ms: u32,
    /// Reentrant depth (at most `u16::MAX`: a deeper re-acquire is refused with LIMIT).
    count: u16,
    /// The mode, kept as a one-byte kind and the permits (see [`Hold::mode`]): with the
    /// enum's spare values as a niche, [`Holders`] costs nothing over one hold.
    kind: HeldKind,
    /// A semaphore hold's permits (1 for the other kinds).
    permits: u32,
    /// The client's part of the id of the request that made this hold, or last entered it
    /// again (the low 32 bits: a binary client's own request id; 0 in text mode and for
    /// multi-locks). An ACQUIRE the session sends again with that id, after a lost
    /// connection or a failover, is answered with this hold instead of being applied
    /// twice. Fits in the padding: `Hold` stays 48 bytes.
    request: u32,
    /// The session's previous and next held lock in this shard (an intrusive list, so a
    /// session end finds its holds without a scan and a release unlinks in O(1)).
    prev: u32,
    next: u32,
}

// A hold is inline in its lock: keep it, and `Holders`, at six words.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Hold>() == 48 && std::mem::size_of::<Holders>() == 48);

/// The kind of a hold's mode (see [`Hold::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeldKind {
    Exclusive,
    Shared,
    Semaphore,
}

impl Hold {
    fn mode(&self) -> HeldMode {
        match self.kind {
            HeldKind::Exclusive => HeldMode::Exclusive,
            HeldKind::Shared => HeldMode::Shared,
            HeldKind::Semaphore => HeldMode::Semaphore {
                permits: self.permits,
            },
        }
    }

    fn set_mode(&mut self, mode: HeldMode) {
        (self.kind, self.permits) = split(mode);
    }

    /// A hold's lease and holder information for INSPECT and the wait-for graph.
    fn info(&self, kind: Kind, wheel: &TimerWheel<TimerRef>, now: u64) -> HolderInfo {
        let mode = self.mode();
        HolderInfo {
            session: self.session,
            mode: mode.mode(kind),
            token: FencingToken(self.token),
            permits: mode.permits(),
            count: u32::from(self.count),
            ttl_ms: wheel
                .deadline(self.timer)
                .map_or(0, |d| d.saturating_sub(now)),
        }
    }
}

/// A mode as [`Hold`] keeps it: its kind and its permits.
fn split(mode: HeldMode) -> (HeldKind, u32) {
    match mode {
        HeldMode::Exclusive => (HeldKind::Exclusive, 1),
        HeldMode::Shared => (HeldKind::Shared, 1),
        HeldMode::Semaphore { permits } => (HeldKind::Semaphore, permits),
    }
}

/// The client's part of a request id (see `Hold::request`).
fn client_part(request: RequestId) -> u32 {
    request.0 as u32
}

/// A queued request.
#[derive(Debug)]
struct Waiter {
    session: SessionId,
    request: RequestId,
    mode: Mode,
    ttl_ms: u32,
    since: u64,
    timer: Option<TimerId>,
    /// A member of an atomic multi-lock (see [`super::multi`]): at the head of the queue
    /// and compatible it is *ready*, not granted; the table grants all members together.
    multi: bool,
    /// Its place: the queue is sorted by rank, ties in arrival order (see `QueuePolicy`).
    rank: i64,
    /// The lock-delay of the hold it will get.
    lock_delay_ms: u32,
    /// A holder's pending upgrade to EXCLUSIVE (rank `i64::MIN`: ahead of every request).
    upgrade: bool,
}

/// One key's state.
#[derive(Debug)]
struct Lock {
    key: Key,
    kind: Kind,
    last_token: u64,
    holders: Holders,
    /// Boxed so that an uncontended lock pays one pointer for it. Present iff non-empty;
    /// the wait-for graph mirrors a key exactly while this is present.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes instead of 32 on every held lock"
    )]
    queue: Option<Box<VecDeque<Waiter>>>,
}

impl Lock {
    fn holder(&self, session: SessionId) -> Option<usize> {
        self.holders.iter().position(|h| h.session == session)
    }

    fn waiter(&self, session: SessionId) -> Option<usize> {
        self.queue
            .as_ref()?
            .iter()
            .position(|w| w.session == session)
    }

    /// Whether a request in `mode` is compatible with the holders (ignoring the queue).
    fn compatible(&self, mode: Mode) -> bool {
        match mode {
            Mode::Exclusive => self.holders.is_empty(),
            Mode::Shared => self.holders.iter().all(|h| h.mode() == HeldMode::Shared),
            Mode::Semaphore { limit, permits } => {
                let used: u64 = self
                    .holders
                    .iter()
                    .map(|h| u64::from(h.mode().permits()))
                    .sum();
                used + u64::from(permits) <= u64::from(limit)
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.queue.is_none()
    }

    /// The rank of the last queued request.
    fn back_rank(&self) -> Option<i64> {
        self.queue.as_ref().and_then(|q| q.back()).map(|w| w.rank)
    }

    fn holder_pairs(&self) -> SmallVec<[(SessionId, Mode); 4]> {
        self.holders
            .iter()
            .map(|h| (h.session, h.mode().mode(self.kind)))
            .collect()
    }
}

/// A session's footprint in one shard.
#[derive(Debug)]
struct SessionShard {
    /// First lock of the session's hold list (NIL when it holds nothing here).
    head: u32,
    /// Locks the session has a queued request on.
    queued: SmallVec<[u32; 1]>,
}

/// What every shard operation needs from the table around it.
pub(crate) struct Ctx<'a> {
    pub graph: &'a Mutex<WaitForGraph>,
    pub sessions: &'a super::SessionCounts,
    pub limits: Limits,
    pub keys: &'a std::sync::atomic::AtomicUsize,
    pub wake_at: &'a std::sync::atomic::AtomicU64,
    pub waker: Option<&'a (dyn Fn() + Send + Sync)>,
    /// What shards found about multi-locks during this operation, for the table to act
    /// on once no shard is locked (see [`super::multi`]).
    pub notes: std::cell::RefCell<Vec<super::multi::Note>>,
    pub watch: Option<&'a WatchHook>,
}

impl Ctx<'_> {
    fn note(&self, note: super::multi::Note) {
        self.notes.borrow_mut().push(note);
    }

    /// Tells the watchers of `key` about `change`, if anyone watches anything (one
    /// relaxed load otherwise). Called with the shard locked, so changes of a key reach
    /// the sink in apply order.
    #[inline]
    fn changed(&self, key: &Key, change: impl FnOnce() -> ChangeOwned) {
        if let Some(w) = self.watch.filter(|w| w.live()) {
            let c = change();
            w.sink.change(key, &c.as_change());
        }
    }

    /// Tell the timer driver when a timer is due before it planned to wake up.
    fn armed(&self, deadline: u64) {
        if deadline < self.wake_at.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(wake) = self.waker {
                wake();
            }
        }
    }
}

/// A change as the shard builds it (the value borrowed from the shard's map is copied
/// only when someone watches).
struct ChangeOwned {
    kind: u8,
    session: SessionId,
    token: u64,
    mode: Mode,
    cause: Cause,
    value: Option<Box<[u8]>>,
}

impl ChangeOwned {
    fn as_change(&self) -> Change<'_> {
        let (session, token, mode) = (self.session, FencingToken(self.token), self.mode);
        match self.kind {
            0 => Change::Granted {
                session,
                token,
                mode,
                value: self.value.as_deref(),
            },
            1 => Change::Released {
                session,
                token,
                mode,
            },
            2 => Change::Expired {
                session,
                token,
                mode,
                cause: self.cause,
            },
            _ => Change::Value {
                session,
                token,
                mode,
                value: self.value.as_deref(),
            },
        }
    }
}

const GRANTED: u8 = 0;
const RELEASED: u8 = 1;
const EXPIRED: u8 = 2;
const VALUE: u8 = 3;

/// One shard. See the module docs.
pub(crate) struct Shard {
    index: u64,
    shards: u64,
    hasher: foldhash::fast::FixedState,
    table: HashTable<u32>,
    locks: Vec<Option<Lock>>,
    free: Vec<u32>,
    wheel: TimerWheel<TimerRef>,
    sessions: HashMap<SessionId, SessionShard>,
    next_seq: u64,
    fired: Vec<(u64, TimerRef)>,
    /// Timers taken off the wheel by [`Self::advance`] and not fired yet.
    firing: VecDeque<(u64, TimerRef)>,
    /// The lock-delay of each hold that has one, by (lock, session): kept out of `Hold`,
    /// which every uncontended lock carries.
    hold_delays: HashMap<(u32, SessionId), u32>,
    /// Locks in a lock-delay: when it ends and its timer. Granted to nobody meanwhile,
    /// and kept even with no holders and no waiters.
    delayed: HashMap<u32, (u64, TimerId)>,
    /// Values of holds and queued requests, by (lock, session): a session holds or
    /// queues on a key at most once, so the pair names one. Kept beside the locks so
    /// that [`Hold`] stays small and a table without values pays nothing; an entry goes
    /// with its hold or request.
    values: HashMap<(u32, SessionId), Box<[u8]>>,
    pub(crate) stats: Stats,
    /// Grant times, when the table times holds (see [`super::hold_clock`]).
    pub(crate) hold_clock: Option<Box<super::hold_clock::HoldClock>>,
}

impl Shard {
    pub(crate) fn new(index: usize, shards: usize, now: u64, seed: u64) -> Self {
        Shard {
            index: index as u64,
            shards: shards as u64,
            hasher: foldhash::fast::FixedState::with_seed(seed),
            table: HashTable::new(),
            locks: Vec::new(),
            free: Vec::new(),
            wheel: TimerWheel::new(now),
            sessions: HashMap::new(),
            next_seq: 0,
            fired: Vec::new(),
            firing: VecDeque::new(),
            hold_delays: HashMap::new(),
            delayed: HashMap::new(),
            values: HashMap::new(),
            stats: Stats::default(),
            hold_clock: None,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn lock(&self, idx: u32) -> &Lock {
        self.locks[idx as usize]
            .as_ref()
            .expect("indexes in the table and in hold lists point at live locks")
    }

    fn lock_mut(&mut self, idx: u32) -> &mut Lock {
        self.locks[idx as usize]
            .as_mut()
            .expect("indexes in the table and in hold lists point at live locks")
    }

    /// The lock of `key`, whose hash the caller computed once (it also chose the shard).
    fn find(&self, key: &[u8], hash: u64) -> Option<u32> {
        self.table
            .find(hash, |&idx| self.lock(idx).key.as_bytes() == key)
            .copied()
    }

    fn create(&mut self, key: &[u8], hash: u64, kind: Kind) -> u32 {
        let lock = Lock {
            key: Key::new(key),
            kind,
            last_token: 0,
            holders: Holders::Empty,
            queue: None,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.locks[idx as usize] = Some(lock);
                idx
            }
            None => {
                self.locks.push(Some(lock));
                let idx =
                    u32::try_from(self.locks.len() - 1).expect("fewer than 2^30 keys per shard");
                assert!(idx < DELAY_BIT, "fewer than 2^30 keys per shard");
                idx
            }
        };

        let (locks, hasher) = (&self.locks, &self.hasher);
        self.table.insert_unique(hash, idx, |&i| {
            use std::hash::BuildHasher;
            let lock = locks[i as usize].as_ref().expect("live lock");
            hasher.hash_one(lock.key.as_bytes())
        });
        self.stats.keys += 1;
        idx
    }

    /// Removes the key if nothing holds or waits on it any more: memory comes back.
    fn remove_if_idle(&mut self, idx: u32, hash: Option<u64>, ctx: &Ctx) {
        if !self.lock(idx).is_idle() || self.is_delayed(idx) {
            return;
        }
        let hash = hash.unwrap_or_else(|| self.hash(self.lock(idx).key.as_bytes()));
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.locks[idx as usize] = None;
        self.free.push(idx);
        self.stats.keys -= 1;
        ctx.keys.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether lock `idx` is in a lock-delay (one length check when no lock is).
    #[inline]
    fn is_delayed(&self, idx: u32) -> bool {
        !self.delayed.is_empty() && self.delayed.contains_key(&idx)
    }

    /// Starts (or lengthens) a lock-delay of `delay_ms` on lock `idx` from `now`.
    fn start_delay(&mut self, idx: u32, delay_ms: u32, now: u64, ctx: &Ctx) {
        if delay_ms == 0 {
            return;
        }
        let until = now.saturating_add(u64::from(delay_ms));
        if let Some(&(old, timer)) = self.delayed.get(&idx) {
            if old >= until {
                return;
            }
            self.wheel.cancel(timer);
        }
        let timer = self.wheel.insert(until, TimerRef::delay(idx));
        ctx.armed(until);
        self.delayed.insert(idx, (until, timer));
        self.stats.lock_delays += 1;
    }

    /// Ends the lock-delay of lock `idx`: its waiters may be granted again.
    fn end_delay(
        &mut self,
        idx: u32,
        hash: Option<u64>,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) {
        let Some((_, timer)) = self.delayed.remove(&idx) else {
            return;
        };
        self.wheel.cancel(timer);
        events.push(Event::DelayEnded {
            key: self.lock(idx).key.clone(),
        });
        self.grant_waiters(idx, now, ctx, events);
        self.remove_if_idle(idx, hash, ctx);
    }

    /// Replays the end of `key`'s lock-delay that the timer driver decided (and logged).
    /// False if the key had none.
    pub(crate) fn end_lock_delay(
        &mut self,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> bool {
        let Some(idx) = self.find(key, hash) else {
            return false;
        };
        if !self.is_delayed(idx) {
            return false;
        }
        self.end_delay(idx, Some(hash), now, ctx, events);
        true
    }

    /// Ends hold `pos` of lock `idx` (every level): a pending upgrade of it ends first
    /// (its request hears TimedOut). Returns the hold's lock-delay, for the callers whose
    /// end is not a RELEASE.
    fn end_hold(
        &mut self,
        idx: u32,
        pos: usize,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> (Hold, u32) {
        let lock = self.lock(idx);
        let session = lock.holders[pos].session;
        let upgrading = lock
            .queue
            .as_ref()
            .and_then(|q| q.front())
            .is_some_and(|w| w.upgrade && w.session == session);
        if upgrading {
            let waiter = self.drop_waiter(idx, 0, false, ctx);
            events.push(Event::TimedOut {
                session,
                request: waiter.request,
                key: self.lock(idx).key.clone(),
            });
        }
        let delay = if self.hold_delays.is_empty() {
            0
        } else {
            self.hold_delays.remove(&(idx, session)).unwrap_or(0)
        };
        // Dropping a waiter moved no holder: `pos` still names the hold.
        (self.drop_hold(idx, pos, now, ctx), delay)
    }

    fn next_token(&mut self) -> u64 {
        let token = self.next_seq * self.shards + self.index + 1;
        self.next_seq += 1;
        token
    }

    /// Makes later tokens of this shard larger than `floor` (used after recovery).
    pub(crate) fn raise_token_floor(&mut self, floor: u64) {
        let seq = floor / self.shards + 1;
        self.next_seq = self.next_seq.max(seq);
    }

    fn session_entry(&mut self, session: SessionId) -> &mut SessionShard {
        self.sessions.entry(session).or_insert(SessionShard {
            head: NIL,
            queued: SmallVec::new(),
        })
    }

    /// Creates a hold for `session` on lock `idx` and arms its lease.
    #[allow(
        clippy::too_many_arguments,
        reason = "private; every caller names each"
    )]
    fn grant(
        &mut self,
        idx: u32,
        session: SessionId,
        mode: Mode,
        ttl_ms: u32,
        lock_delay_ms: u32,
        request: u32,
        now: u64,
        ctx: &Ctx,
    ) -> u64 {
        if lock_delay_ms > 0 {
            self.hold_delays.insert((idx, session), lock_delay_ms);
        }
        let token = self.next_token();
        let deadline = now.saturating_add(u64::from(ttl_ms));
        let timer = self.wheel.insert(deadline, TimerRef::lease(idx, session));
        ctx.armed(deadline);
        let head = {
            let s = self.session_entry(session);
            std::mem::replace(&mut s.head, idx)
        };
        if head != NIL {
            let next = self.lock_mut(head);
            let pos = next.holder(session).expect("listed hold exists");
            next.holders[pos].prev = idx;
        }
        let lock = self.lock_mut(idx);
        lock.last_token = token;
        let (kind, permits) = split(HeldMode::of(mode));
        lock.holders.push(Hold {
            session,
            token,
            timer,
            ttl_ms,
            count: 1,
            kind,
            permits,
            request,
            prev: NIL,
            next: head,
        });
        self.stats.grants += 1;
        self.stats.holds += 1;
        if let Some(c) = &mut self.hold_clock {
            c.granted(token, now);
        }
        let lock = self.lock(idx);
        ctx.changed(&lock.key, || ChangeOwned {
            kind: GRANTED,
            session,
            token,
            mode: HeldMode::of(mode).mode(lock.kind),
            cause: Cause::Lease,
            value: self.values.get(&(idx, session)).cloned(),
        });
        token
    }

    /// Tells watchers that `hold` of lock `idx` ended (`cause` None: released).
    fn ended(&self, idx: u32, hold: &Hold, cause: Option<Cause>, ctx: &Ctx) {
        let lock = self.lock(idx);
        ctx.changed(&lock.key, || ChangeOwned {
            kind: if cause.is_some() { EXPIRED } else { RELEASED },
            session: hold.session,
            token: hold.token,
            mode: hold.mode().mode(lock.kind),
            cause: cause.unwrap_or(Cause::Lease),
            value: None,
        });
    }

    /// Removes hold `pos` of lock `idx` entirely (every reentrant level).
    fn drop_hold(&mut self, idx: u32, pos: usize, now: u64, ctx: &Ctx) -> Hold {
        let lock = self.lock_mut(idx);
        let hold = lock.holders.remove(pos);
        if lock.queue.is_some() {
            ctx.graph
                .lock()
                .remove_holder(lock.key.as_bytes(), hold.session);
        }
        self.wheel.cancel(hold.timer);
        // Unlink from the session's list.
        if hold.prev == NIL {
            if let Some(s) = self.sessions.get_mut(&hold.session) {
                s.head = hold.next;
            }
        } else {
            let prev = self.lock_mut(hold.prev);
            let p = prev.holder(hold.session).expect("listed hold exists");
            prev.holders[p].next = hold.next;
        }
        if hold.next != NIL {
            let next = self.lock_mut(hold.next);
            let p = next.holder(hold.session).expect("listed hold exists");
            next.holders[p].prev = hold.prev;
        }
        self.stats.holds -= 1;
        if let Some(c) = &mut self.hold_clock {
            c.ended(hold.token, now);
        }
        ctx.sessions.release(hold.session);
        if !self.values.is_empty() {
            self.values.remove(&(idx, hold.session));
        }
        hold
    }

    /// Removes waiter `pos` of lock `idx` from the queue, its timer and the graph. Unless
    /// it is being `granted`, its place in the session's count is given back.
    fn drop_waiter(&mut self, idx: u32, pos: usize, granted: bool, ctx: &Ctx) -> Waiter {
        let lock = self.lock_mut(idx);
        let queue = lock
            .queue
            .as_mut()
            .expect("a waiter position implies a queue");
        let waiter = queue.remove(pos).expect("position is in range");
        if queue.is_empty() {
            lock.queue = None;
        }
        {
            // One graph step: a granted waiter becomes a holder without a moment in which
            // the graph shows it neither waiting nor holding (a detection on another shard
            // could otherwise miss the edges of the requests behind it).
            let mut graph = ctx.graph.lock();
            graph.dequeue(lock.key.as_bytes(), waiter.session);
            if granted && lock.queue.is_some() {
                if waiter.upgrade {
                    graph.set_holder_mode(lock.key.as_bytes(), waiter.session, waiter.mode);
                } else {
                    graph.add_holder(lock.key.as_bytes(), waiter.session, waiter.mode);
                }
            }
        }
        if let Some(timer) = waiter.timer {
            self.wheel.cancel(timer);
        }
        if let Some(s) = self.sessions.get_mut(&waiter.session) {
            if let Some(i) = s.queued.iter().position(|&q| q == idx) {
                s.queued.swap_remove(i);
            }
        }
        self.stats.waiters -= 1;
        // A pending upgrade counted nothing: the hold it converts is counted.
        if !granted && !waiter.upgrade {
            ctx.sessions.release(waiter.session);
            if !self.values.is_empty() {
                self.values.remove(&(idx, waiter.session));
            }
        }
        waiter
    }

    /// Grants the head of the queue while it is compatible with the holders: strict order
    /// (FIFO, or by rank with priorities), adjacent SHARED requests together, a semaphore
    /// head that does not fit blocks the rest; a pending upgrade at the head is granted
    /// when its session is the only holder. Nothing during a lock-delay.
    fn grant_waiters(&mut self, idx: u32, now: u64, ctx: &Ctx, events: &mut Vec<Event>) {
        if self.is_delayed(idx) {
            return;
        }
        loop {
            let lock = self.lock(idx);
            let Some(front) = lock.queue.as_ref().and_then(|q| q.front()) else {
                return;
            };
            if front.upgrade {
                let alone = lock.holders.len() == 1 && lock.holders[0].session == front.session;
                if !alone {
                    return;
                }
                let waiter = self.drop_waiter(idx, 0, true, ctx);
                let token = self.upgrade_now(idx, 0, ctx);
                events.push(Event::Granted {
                    session: waiter.session,
                    request: waiter.request,
                    key: self.lock(idx).key.clone(),
                    token: FencingToken(token),
                });
                continue;
            }
            if !lock.compatible(front.mode) {
                return;
            }
            if front.multi {
                // Ready here; granted only with its other keys. It keeps its place, so
                // nothing behind it passes.
                ctx.note(super::multi::Note::Ready(front.session, front.request));
                return;
            }
            let waiter = self.drop_waiter(idx, 0, true, ctx);
            let token = self.grant(
                idx,
                waiter.session,
                waiter.mode,
                waiter.ttl_ms,
                waiter.lock_delay_ms,
                client_part(waiter.request),
                now,
                ctx,
            );
            let lock = self.lock(idx);
            events.push(Event::Granted {
                session: waiter.session,
                request: waiter.request,
                key: lock.key.clone(),
                token: FencingToken(token),
            });
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the table's acquire, plus the value that most calls leave None"
    )]
    pub(crate) fn acquire(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        req: &AcquireRequest,
        value: Option<&[u8]>,
        now: u64,
        ctx: &Ctx,
    ) -> AcquireOutcome {
        self.stats.acquires += 1;
        let value = value.filter(|v| !v.is_empty());
        let kind = req.mode.kind();
        let ttl_ms = u32::try_from(req.ttl_ms).unwrap_or(u32::MAX).max(1);
        let Some(idx) = self.find(key, hash) else {
            if ctx.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= ctx.limits.max_keys {
                ctx.keys.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.stats.limits += 1;
                return AcquireOutcome::Limit(LimitKind::Keys);
            }
            if !ctx
                .sessions
                .reserve(session, ctx.limits.max_holds_per_session)
            {
                ctx.keys.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.stats.limits += 1;
                return AcquireOutcome::Limit(LimitKind::HoldsPerSession);
            }
            let idx = self.create(key, hash, kind);
            self.keep_value(idx, session, value);
            let token = self.grant(
                idx,
                session,
                req.mode,
                ttl_ms,
                req.policy.lock_delay_ms,
                client_part(req.id),
                now,
                ctx,
            );
            return AcquireOutcome::Granted(FencingToken(token));
        };
        let lock = self.locks[idx as usize]
            .as_ref()
            .expect("indexed locks are live");
        if lock.kind != kind {
            self.stats.wrongtype += 1;
            return AcquireOutcome::WrongType { current: lock.kind };
        }
        if let Some(pos) = lock.holder(session) {
            let hold = &lock.holders[pos];
            let request = client_part(req.id);
            if request != 0 && hold.request == request {
                // The same request again (a client retrying after a lost connection or a
                // failover): it was granted, with this token; nothing changes.
                return AcquireOutcome::Granted(FencingToken(hold.token));
            }
            let reentrant =
                req.reentrant && hold.mode() == HeldMode::of(req.mode) && kind == Kind::Lock;
            if !reentrant {
                self.stats.deadlocks += 1;
                return AcquireOutcome::Deadlock(self_cycle(session, key));
            }
            let Some(count) = hold.count.checked_add(1) else {
                self.stats.limits += 1;
                return AcquireOutcome::Limit(LimitKind::HoldsPerSession);
            };
            // A re-acquire is also a renewal: the lease runs to the later of its current
            // deadline and now + TTL, never shorter.
            let old = hold.timer;
            let token = hold.token;
            let deadline = now.saturating_add(u64::from(ttl_ms));
            let old_deadline = self.wheel.deadline(old).unwrap_or(0);
            let lock = self.lock_mut(idx);
            let hold = &mut lock.holders[pos];
            hold.count = count;
            hold.ttl_ms = ttl_ms;
            hold.request = request;
            if deadline > old_deadline {
                self.wheel.cancel(old);
                let timer = self.wheel.insert(deadline, TimerRef::lease(idx, session));
                self.lock_mut(idx).holders[pos].timer = timer;
            }
            self.stats.reentrant += 1;
            if value.is_some() {
                self.put_value(idx, pos, value, ctx);
            }
            return AcquireOutcome::Granted(FencingToken(token));
        }
        if lock.waiter(session).is_some() {
            self.stats.deadlocks += 1;
            return AcquireOutcome::Deadlock(self_cycle(session, key));
        }
        // Granted at once only with nothing queued ahead of it: an empty queue, or (with a
        // priority) every queued request ranked behind it.
        let first = match &lock.queue {
            None => true,
            Some(q) => {
                req.policy.priority > 0
                    && q.front()
                        .is_some_and(|f| f.rank > req.policy.rank(now, None))
            }
        };
        if first && lock.compatible(req.mode) && !self.is_delayed(idx) {
            if !ctx
                .sessions
                .reserve(session, ctx.limits.max_holds_per_session)
            {
                self.stats.limits += 1;
                return AcquireOutcome::Limit(LimitKind::HoldsPerSession);
            }
            if lock.queue.is_some() {
                // Passed the queue by priority: the waiters now wait for it too.
                ctx.graph
                    .lock()
                    .add_holder(lock.key.as_bytes(), session, req.mode);
            }
            self.keep_value(idx, session, value);
            let token = self.grant(
                idx,
                session,
                req.mode,
                ttl_ms,
                req.policy.lock_delay_ms,
                client_part(req.id),
                now,
                ctx,
            );
            return AcquireOutcome::Granted(FencingToken(token));
        }
        if req.wait_ms == Some(0) {
            self.stats.would_block += 1;
            return AcquireOutcome::WouldBlock;
        }
        if lock.queue.as_ref().map_or(0, |q| q.len()) >= ctx.limits.max_waiters_per_key {
            self.stats.limits += 1;
            return AcquireOutcome::Limit(LimitKind::WaitersPerKey);
        }
        if !ctx
            .sessions
            .reserve(session, ctx.limits.max_holds_per_session)
        {
            self.stats.limits += 1;
            return AcquireOutcome::Limit(LimitKind::HoldsPerSession);
        }
        let holders = lock.holder_pairs();
        let semaphore = matches!(kind, Kind::Semaphore { .. });
        let rank = req.policy.rank(now, lock.back_rank());
        {
            let mut graph = ctx.graph.lock();
            if let Some(cycle) =
                graph.detect_ranked(session, &lock.key, semaphore, req.mode, &holders, rank)
            {
                drop(graph);
                ctx.sessions.release(session);
                self.stats.deadlocks += 1;
                return AcquireOutcome::Deadlock(cycle);
            }
            graph.enqueue_ranked(&lock.key, semaphore, &holders, session, req.mode, rank);
        }
        self.enqueue(
            idx,
            Waiter {
                session,
                request: req.id,
                mode: req.mode,
                ttl_ms,
                since: now,
                timer: None,
                rank,
                lock_delay_ms: req.policy.lock_delay_ms,
                upgrade: false,
                multi: false,
            },
            req.wait_ms,
            now,
            ctx,
        );
        self.keep_value(idx, session, value);
        self.stats.queued += 1;
        AcquireOutcome::Queued
    }

    /// Puts `waiter` (already in the graph) in lock `idx`'s queue at its rank, with its
    /// WAIT timer.
    fn enqueue(&mut self, idx: u32, mut waiter: Waiter, wait_ms: Option<u64>, now: u64, ctx: &Ctx) {
        let session = waiter.session;
        waiter.timer = wait_ms.map(|wait| {
            let deadline = now.saturating_add(wait);
            ctx.armed(deadline);
            self.wheel.insert(deadline, TimerRef::wait(idx, session))
        });
        let queue = self
            .lock_mut(idx)
            .queue
            .get_or_insert_with(Default::default);
        let at = queue.partition_point(|w| w.rank <= waiter.rank);
        queue.insert(at, waiter);
        self.session_entry(session).queued.push(idx);
        self.stats.waiters += 1;
    }

    /// Converts `session`'s hold on `key` in place (the DLM's lock conversion), for lock
    /// kind keys only; every reentrant level converts together.
    ///
    /// - To SHARED (a downgrade, or a SHARED hold already): at once, the hold keeps its
    ///   token, and the waiters now compatible are granted (in `events`).
    /// - To EXCLUSIVE from SHARED (an upgrade): granted at once, with a new token, when
    ///   the session is the only holder and the key is not in a lock-delay. Otherwise it
    ///   waits only for the other holders: it goes ahead of every queued request (which
    ///   all wait for it) and is granted with a new token when the others are gone (an
    ///   [`Event::Granted`] naming `id`). Meanwhile the hold stays SHARED. A wait that
    ///   would close a cycle (two holders upgrading) is refused as `Deadlock`; WAIT 0
    ///   that cannot be granted is `WouldBlock`; a WAIT that runs out, a CANCEL or the
    ///   session's end leave the shared hold; the hold's end (release, expiry) ends the
    ///   upgrade with [`Event::TimedOut`]. An EXCLUSIVE hold already: its token back.
    ///
    /// A second CONVERT while an upgrade is pending waits on itself: `Deadlock`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the table's convert spreads them out"
    )]
    pub(crate) fn convert(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        to: Mode,
        id: RequestId,
        wait_ms: Option<u64>,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> Result<AcquireOutcome, NotHeld> {
        let idx = self.find(key, hash).ok_or(NotHeld)?;
        let lock = self.lock(idx);
        let pos = lock.holder(session).ok_or(NotHeld)?;
        if lock.kind != Kind::Lock || matches!(to, Mode::Semaphore { .. }) {
            let current = lock.kind;
            self.stats.wrongtype += 1;
            return Ok(AcquireOutcome::WrongType { current });
        }
        if lock.waiter(session).is_some() {
            self.stats.deadlocks += 1;
            return Ok(AcquireOutcome::Deadlock(self_cycle(session, key)));
        }
        self.stats.conversions += 1;
        let lock = self.lock(idx);
        let hold = &lock.holders[pos];
        let held = hold.mode();
        let token = hold.token;
        let ttl_ms = hold.ttl_ms;
        match (held, to) {
            (HeldMode::Exclusive, Mode::Exclusive) | (HeldMode::Shared, Mode::Shared) => {
                Ok(AcquireOutcome::Granted(FencingToken(token)))
            }
            (HeldMode::Exclusive, _) => {
                self.lock_mut(idx).holders[pos].set_mode(HeldMode::Shared);
                self.hold_changed(idx, pos, ctx);
                let lock = self.lock(idx);
                if lock.queue.is_some() {
                    ctx.graph
                        .lock()
                        .set_holder_mode(lock.key.as_bytes(), session, Mode::Shared);
                }
                self.grant_waiters(idx, now, ctx, events);
                Ok(AcquireOutcome::Granted(FencingToken(token)))
            }
            _ => {
                if lock.queue.is_some() && ctx.graph.lock().is_waiting(session) {
                    // Upgrading makes this key's shared waiters wait for the session,
                    // which waits elsewhere: a cycle through those new edges would go
                    // unseen by detection (it walks the requester's own edges), so the
                    // upgrade is refused as waiting on itself.
                    self.stats.deadlocks += 1;
                    return Ok(AcquireOutcome::Deadlock(self_cycle(session, key)));
                }
                if lock.holders.len() == 1 && !self.is_delayed(idx) {
                    if lock.queue.is_some() {
                        ctx.graph.lock().set_holder_mode(
                            lock.key.as_bytes(),
                            session,
                            Mode::Exclusive,
                        );
                    }
                    return Ok(AcquireOutcome::Granted(FencingToken(
                        self.upgrade_now(idx, pos, ctx),
                    )));
                }
                if wait_ms == Some(0) {
                    self.stats.would_block += 1;
                    return Ok(AcquireOutcome::WouldBlock);
                }
                let holders = lock.holder_pairs();
                {
                    let mut graph = ctx.graph.lock();
                    if let Some(cycle) = graph.detect_ranked(
                        session,
                        &lock.key,
                        false,
                        Mode::Exclusive,
                        &holders,
                        i64::MIN,
                    ) {
                        drop(graph);
                        self.stats.deadlocks += 1;
                        return Ok(AcquireOutcome::Deadlock(cycle));
                    }
                    graph.enqueue_ranked(
                        &lock.key,
                        false,
                        &holders,
                        session,
                        Mode::Exclusive,
                        i64::MIN,
                    );
                }
                self.enqueue(
                    idx,
                    Waiter {
                        session,
                        request: id,
                        mode: Mode::Exclusive,
                        ttl_ms,
                        since: now,
                        timer: None,
                        rank: i64::MIN,
                        lock_delay_ms: 0,
                        upgrade: true,
                        multi: false,
                    },
                    wait_ms,
                    now,
                    ctx,
                );
                self.stats.queued += 1;
                Ok(AcquireOutcome::Queued)
            }
        }
    }

    /// Makes hold `pos` of lock `idx` EXCLUSIVE with a new token (the graph is the
    /// caller's). Returns the token.
    fn upgrade_now(&mut self, idx: u32, pos: usize, ctx: &Ctx) -> u64 {
        let token = self.next_token();
        let lock = self.lock_mut(idx);
        lock.last_token = token;
        let hold = &mut lock.holders[pos];
        hold.set_mode(HeldMode::Exclusive);
        hold.token = token;
        self.stats.grants += 1;
        self.hold_changed(idx, pos, ctx);
        token
    }

    /// Tells watchers that hold `pos` of lock `idx` changed in place (a conversion): as
    /// a grant with its new mode and token.
    fn hold_changed(&self, idx: u32, pos: usize, ctx: &Ctx) {
        let lock = self.lock(idx);
        let hold = &lock.holders[pos];
        ctx.changed(&lock.key, || ChangeOwned {
            kind: GRANTED,
            session: hold.session,
            token: hold.token,
            mode: hold.mode().mode(lock.kind),
            cause: Cause::Lease,
            value: self.values.get(&(idx, hold.session)).cloned(),
        });
    }

    /// Stores the value of a hold about to be granted or a request just queued.
    fn keep_value(&mut self, idx: u32, session: SessionId, value: Option<&[u8]>) {
        if let Some(v) = value {
            self.values.insert((idx, session), v.into());
        }
    }

    /// Replaces (None: clears) the value of hold `pos` of lock `idx` and tells watchers.
    fn put_value(&mut self, idx: u32, pos: usize, value: Option<&[u8]>, ctx: &Ctx) {
        let session = self.lock(idx).holders[pos].session;
        match value {
            Some(v) => {
                self.values.insert((idx, session), v.into());
            }
            None => {
                self.values.remove(&(idx, session));
            }
        }
        let lock = self.lock(idx);
        let hold = &lock.holders[pos];
        ctx.changed(&lock.key, || ChangeOwned {
            kind: VALUE,
            session,
            token: hold.token,
            mode: hold.mode().mode(lock.kind),
            cause: Cause::Lease,
            value: value.map(Into::into),
        });
    }

    /// SETVALUE: `session` replaces the value of its hold on `key` (an empty value clears
    /// it). NotHeld if it holds nothing there.
    pub(crate) fn set_value(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        value: &[u8],
        ctx: &Ctx,
    ) -> Result<(), NotHeld> {
        let idx = self.find(key, hash).ok_or(NotHeld)?;
        let pos = self.lock(idx).holder(session).ok_or(NotHeld)?;
        self.put_value(idx, pos, (!value.is_empty()).then_some(value), ctx);
        Ok(())
    }

    /// The values of `key`'s holders, in holder order (None: no value), or None when the
    /// key does not exist.
    pub(crate) fn holder_values(&self, key: &[u8], hash: u64) -> Option<Vec<Option<Box<[u8]>>>> {
        let idx = self.find(key, hash)?;
        Some(
            self.lock(idx)
                .holders
                .iter()
                .map(|h| self.values.get(&(idx, h.session)).cloned())
                .collect(),
        )
    }

    pub(crate) fn release(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> Result<(), NotHeld> {
        let idx = self.find(key, hash).ok_or(NotHeld)?;
        let lock = self.locks[idx as usize]
            .as_mut()
            .expect("indexed locks are live");
        let pos = lock.holder(session).ok_or(NotHeld)?;
        self.stats.releases += 1;
        if lock.holders[pos].count > 1 {
            lock.holders[pos].count -= 1;
            return Ok(());
        }
        // A clean release: never a lock-delay.
        let (hold, _) = self.end_hold(idx, pos, now, ctx, events);
        self.ended(idx, &hold, None, ctx);
        self.grant_waiters(idx, now, ctx, events);
        self.remove_if_idle(idx, Some(hash), ctx);
        Ok(())
    }

    pub(crate) fn renew(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        ttl_ms: Option<u64>,
        now: u64,
        ctx: &Ctx,
    ) -> Result<u64, NotHeld> {
        let idx = self.find(key, hash).ok_or(NotHeld)?;
        let lock = self.lock(idx);
        let pos = lock.holder(session).ok_or(NotHeld)?;
        let old = lock.holders[pos].timer;
        // A lease whose timer fired is over, even if its end is not applied yet (a
        // cluster leader's expiry on its way through the log).
        if self.wheel.deadline(old).is_none() {
            return Err(NotHeld);
        }
        let ttl = ttl_ms.map_or(lock.holders[pos].ttl_ms, |t| {
            u32::try_from(t).unwrap_or(u32::MAX).max(1)
        });
        self.wheel.cancel(old);
        let deadline = now.saturating_add(u64::from(ttl));
        let timer = self.wheel.insert(deadline, TimerRef::lease(idx, session));
        ctx.armed(deadline);
        let hold = &mut self.lock_mut(idx).holders[pos];
        hold.timer = timer;
        hold.ttl_ms = ttl;
        self.stats.renews += 1;
        Ok(u64::from(ttl))
    }

    /// Takes `session`'s queued request on `key` out of the queue. Returns whether there
    /// was one.
    pub(crate) fn cancel(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> bool {
        let Some(idx) = self.find(key, hash) else {
            return false;
        };
        let Some(pos) = self.lock(idx).waiter(session) else {
            return false;
        };
        if let Some(request) = self.multi_member(idx, pos) {
            ctx.note(super::multi::Note::Cancel(session, request));
            return true;
        }
        self.drop_waiter(idx, pos, false, ctx);
        self.stats.cancels += 1;
        self.grant_waiters(idx, now, ctx, events);
        self.remove_if_idle(idx, Some(hash), ctx);
        true
    }

    /// Ends `session` in this shard: its queued requests are cancelled first (so releasing
    /// its holds cannot grant them), then its holds are released.
    pub(crate) fn close_session(
        &mut self,
        session: SessionId,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let queued: SmallVec<[u32; 4]> = s.queued.iter().copied().collect();
        for idx in queued {
            if let Some(pos) = self.lock(idx).waiter(session) {
                self.drop_waiter(idx, pos, false, ctx);
                self.stats.cancels += 1;
                self.grant_waiters(idx, now, ctx, events);
                self.remove_if_idle(idx, None, ctx);
            }
        }
        while let Some(idx) = self
            .sessions
            .get(&session)
            .map(|s| s.head)
            .filter(|&h| h != NIL)
        {
            let pos = self.lock(idx).holder(session).expect("listed hold exists");
            let (hold, delay) = self.end_hold(idx, pos, now, ctx, events);
            self.ended(idx, &hold, Some(Cause::Session), ctx);
            self.stats.session_releases += 1;
            self.start_delay(idx, delay, now, ctx);
            self.grant_waiters(idx, now, ctx, events);
            self.remove_if_idle(idx, None, ctx);
        }
        self.sessions.remove(&session);
    }

    /// Takes the timers due at `now` off the wheel, in the order (deadline, key, leases
    /// before waits, session), so outcomes never depend on the wheel's internals. Give
    /// the vector back to `self.fired` when done (it is reused).
    fn take_due(&mut self, now: u64) -> Vec<(u64, TimerRef)> {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel.advance(now, &mut fired);
        if fired.len() > 1 {
            let locks = &self.locks;
            fired.sort_by_cached_key(|&(deadline, t)| {
                let key = locks[t.index() as usize].as_ref().map(|l| l.key.clone());
                (deadline, key, t.order(), t.session)
            });
        }
        fired
    }

    /// Fires the lease and wait timers due at `now`, in the order (deadline, key, leases
    /// before waits, session), so the outcome never depends on the wheel's internals.
    ///
    /// Stops after a timer whose end left a note for the table (a multi-lock became
    /// ready or timed out) and returns true if timers are left: the table acts on the
    /// note first and calls again, so that every timer's consequences come before the
    /// next timer's, exactly as when a replay applies them one by one.
    pub(crate) fn advance(&mut self, now: u64, ctx: &Ctx, events: &mut Vec<Event>) -> bool {
        if self.firing.is_empty() {
            let fired = self.take_due(now);
            self.firing.extend(fired.iter().copied());
            self.fired = fired;
        }
        while let Some((_, timer)) = self.firing.pop_front() {
            self.fire(timer, now, ctx, events);
            if !ctx.notes.borrow().is_empty() {
                return !self.firing.is_empty();
            }
        }
        false
    }

    /// Ends the hold or wait whose timer fired, if it is still there.
    fn fire(&mut self, timer: TimerRef, now: u64, ctx: &Ctx, events: &mut Vec<Event>) {
        let idx = timer.index();
        let Some(lock) = self.locks[idx as usize].as_ref() else {
            return;
        };
        let wheel = &self.wheel;
        if timer.is_delay() {
            if self
                .delayed
                .get(&idx)
                .is_some_and(|&(_, t)| wheel.deadline(t).is_none())
            {
                self.end_delay(idx, None, now, ctx, events);
            }
        } else if timer.is_wait() {
            // The waiter whose deadline fired: its timer is no longer pending.
            let Some(pos) = lock.queue.as_ref().and_then(|q| {
                q.iter().position(|w| {
                    timer.names(w.session) && w.timer.is_some_and(|t| wheel.deadline(t).is_none())
                })
            }) else {
                return;
            };
            if let Some(request) = self.multi_member(idx, pos) {
                let session = self.lock(idx).queue.as_ref().expect("queued")[pos].session;
                ctx.note(super::multi::Note::TimedOut(session, request));
                return;
            }
            self.end_wait(idx, pos, None, now, ctx, events);
        } else {
            let Some(pos) = lock
                .holders
                .iter()
                .position(|h| timer.names(h.session) && wheel.deadline(h.timer).is_none())
            else {
                return;
            };
            self.end_lease(idx, pos, None, now, ctx, events);
        }
    }

    /// What [`Self::advance`] would end at `now`, without ending it: the due timers are
    /// taken off the wheel (so they are not reported twice, and RENEW no longer extends
    /// those holds) but holds and waiters stay until the decision comes back as a
    /// replicated Tick and [`Self::expire`] / [`Self::time_out`] apply it. A cluster
    /// leader's timer driver uses this: only applied log entries may change the table.
    /// Same order as `advance`.
    pub(crate) fn due(&mut self, now: u64, out: &mut Vec<Due>) {
        let fired = self.take_due(now);
        for &(_, timer) in &fired {
            let Some(lock) = self.locks[timer.index() as usize].as_ref() else {
                continue;
            };
            let wheel = &self.wheel;
            if timer.is_delay() {
                if self
                    .delayed
                    .get(&timer.index())
                    .is_some_and(|&(_, t)| wheel.deadline(t).is_none())
                {
                    out.push(Due::Delay {
                        key: lock.key.clone(),
                    });
                }
            } else if timer.is_wait() {
                let waiter = lock.queue.as_ref().and_then(|q| {
                    q.iter().find(|w| {
                        timer.names(w.session)
                            && w.timer.is_some_and(|t| wheel.deadline(t).is_none())
                    })
                });
                if let Some(w) = waiter {
                    out.push(Due::Wait {
                        session: w.session,
                        key: lock.key.clone(),
                    });
                }
            } else if let Some(h) = lock
                .holders
                .iter()
                .find(|h| timer.names(h.session) && wheel.deadline(h.timer).is_none())
            {
                out.push(Due::Lease {
                    session: h.session,
                    key: lock.key.clone(),
                });
            }
        }
        self.fired = fired;
    }

    /// Replays a lease expiry that the timer driver decided (and logged): drops
    /// `session`'s hold on `key` as [`Self::advance`] did. False if there was none.
    pub(crate) fn expire(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> bool {
        let Some(idx) = self.find(key, hash) else {
            return false;
        };
        let Some(pos) = self.lock(idx).holder(session) else {
            return false;
        };
        self.end_lease(idx, pos, Some(hash), now, ctx, events);
        true
    }

    /// See [`super::LockTable::force_release`].
    pub(crate) fn force_release(
        &mut self,
        key: &[u8],
        hash: u64,
        holds: &[(SessionId, FencingToken)],
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> Vec<(SessionId, FencingToken)> {
        let mut dropped = Vec::new();
        let Some(idx) = self.find(key, hash) else {
            return dropped;
        };
        for &(session, token) in holds {
            let lock = self.lock(idx);
            let Some(pos) = lock
                .holders
                .iter()
                .position(|h| h.session == session && h.token == token.0)
            else {
                continue;
            };
            let (hold, delay) = self.end_hold(idx, pos, now, ctx, events);
            self.ended(idx, &hold, Some(Cause::Forced), ctx);
            self.stats.forced_releases += 1;
            events.push(Event::Expired {
                session: hold.session,
                key: self.lock(idx).key.clone(),
                token: FencingToken(hold.token),
            });
            self.start_delay(idx, delay, now, ctx);
            dropped.push((session, token));
        }
        if !dropped.is_empty() {
            self.grant_waiters(idx, now, ctx, events);
            self.remove_if_idle(idx, Some(hash), ctx);
        }
        dropped
    }

    /// A lease ran out: the hold goes, the waiters it blocked are granted.
    fn end_lease(
        &mut self,
        idx: u32,
        pos: usize,
        hash: Option<u64>,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) {
        let (hold, delay) = self.end_hold(idx, pos, now, ctx, events);
        self.ended(idx, &hold, Some(Cause::Lease), ctx);
        self.stats.expiries += 1;
        events.push(Event::Expired {
            session: hold.session,
            key: self.lock(idx).key.clone(),
            token: FencingToken(hold.token),
        });
        self.start_delay(idx, delay, now, ctx);
        self.grant_waiters(idx, now, ctx, events);
        self.remove_if_idle(idx, hash, ctx);
    }

    /// A WAIT ran out: the request leaves the queue, which may let the ones behind it in.
    fn end_wait(
        &mut self,
        idx: u32,
        pos: usize,
        hash: Option<u64>,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) {
        let waiter = self.drop_waiter(idx, pos, false, ctx);
        self.stats.timeouts += 1;
        events.push(Event::TimedOut {
            session: waiter.session,
            request: waiter.request,
            key: self.lock(idx).key.clone(),
        });
        self.grant_waiters(idx, now, ctx, events);
        self.remove_if_idle(idx, hash, ctx);
    }

    /// Replays a WAIT timeout that the timer driver decided (and logged). False if
    /// `session` had no queued request on `key`.
    pub(crate) fn time_out(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) -> bool {
        let Some(idx) = self.find(key, hash) else {
            return false;
        };
        let Some(pos) = self.lock(idx).waiter(session) else {
            return false;
        };
        if let Some(request) = self.multi_member(idx, pos) {
            ctx.note(super::multi::Note::TimedOut(session, request));
            return true;
        }
        self.end_wait(idx, pos, Some(hash), now, ctx, events);
        true
    }

    /// After recovery: every hold's lease starts again, full TTL from `now` (the clock of
    /// the process that granted it is gone, and a lease must never come back shorter).
    /// Wait deadlines stay: they are on the table's clock, which recovery continues. So do
    /// lock-delays, whose timers are armed again if a leader's timer driver had taken them
    /// off the wheel without its decision being applied (a new term decides again).
    pub(crate) fn restart_leases(&mut self, now: u64) {
        for (&idx, (until, timer)) in self.delayed.iter_mut() {
            if self.wheel.deadline(*timer).is_none() {
                *timer = self.wheel.insert(*until, TimerRef::delay(idx));
            }
        }
        let (locks, wheel) = (&mut self.locks, &mut self.wheel);
        for (idx, lock) in locks.iter_mut().enumerate() {
            let Some(lock) = lock else { continue };
            for hold in lock.holders.as_mut_slice() {
                wheel.cancel(hold.timer);
                let deadline = now.saturating_add(u64::from(hold.ttl_ms));
                hold.timer = wheel.insert(deadline, TimerRef::lease(idx as u32, hold.session));
            }
        }
    }

    /// The shard as plain data (see [`super::image`]).
    pub(crate) fn export(&self) -> ShardImage {
        let locks = self
            .locks
            .iter()
            .enumerate()
            .filter_map(|(idx, lock)| Some((idx as u32, lock.as_ref()?)))
            .map(|(idx, lock)| LockImage {
                key: lock.key.clone(),
                kind: lock.kind,
                last_token: lock.last_token,
                holders: lock
                    .holders
                    .iter()
                    .map(|h| HoldImage {
                        session: h.session,
                        token: h.token,
                        ttl_ms: h.ttl_ms,
                        count: u32::from(h.count),
                        mode: h.mode().mode(lock.kind),
                        lock_delay_ms: self
                            .hold_delays
                            .get(&(idx, h.session))
                            .copied()
                            .unwrap_or(0),
                        request: h.request,
                    })
                    .collect(),
                waiters: lock
                    .queue
                    .iter()
                    .flat_map(|q| q.iter())
                    .map(|w| WaiterImage {
                        session: w.session,
                        request: w.request,
                        mode: w.mode,
                        ttl_ms: w.ttl_ms,
                        since: w.since,
                        deadline: w.timer.and_then(|t| self.wheel.deadline(t)),
                        multi: w.multi,
                        rank: w.rank,
                        lock_delay_ms: w.lock_delay_ms,
                        upgrade: w.upgrade,
                    })
                    .collect(),
                delayed_until: self.delayed.get(&idx).map(|&(until, _)| until),
            })
            .collect();
        let sessions = self
            .sessions
            .iter()
            .filter_map(|(&session, s)| {
                let mut holds = Vec::new();
                let mut idx = s.head;
                while idx != NIL {
                    let lock = self.lock(idx);
                    holds.push(lock.key.clone());
                    let pos = lock.holder(session).expect("listed hold exists");
                    idx = lock.holders[pos].next;
                }
                let queued: Vec<Key> = s.queued.iter().map(|&i| self.lock(i).key.clone()).collect();
                (!holds.is_empty() || !queued.is_empty()).then_some(SessionImage {
                    session,
                    holds,
                    queued,
                })
            })
            .collect();
        let values = self
            .values
            .iter()
            .map(|(&(idx, session), value)| ValueImage {
                key: self.lock(idx).key.clone(),
                session,
                value: value.to_vec(),
            })
            .collect();
        ShardImage {
            next_seq: self.next_seq,
            locks,
            sessions,
            values,
        }
    }

    /// Rebuilds the shard from an image into an empty shard: holds get leases of their
    /// full TTL from `now`, waiters their recorded deadlines, the wait-for graph its
    /// edges. Limits are not checked (the state was valid when it was taken).
    pub(crate) fn import(&mut self, image: &ShardImage, now: u64, ctx: &Ctx) {
        self.next_seq = self.next_seq.max(image.next_seq);
        let mut index: HashMap<&[u8], u32> = HashMap::with_capacity(image.locks.len());
        for l in &image.locks {
            let hash = self.hash(l.key.as_bytes());
            let idx = self.create(l.key.as_bytes(), hash, l.kind);
            ctx.keys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            index.insert(l.key.as_bytes(), idx);
            for h in &l.holders {
                let deadline = now.saturating_add(u64::from(h.ttl_ms));
                let timer = self.wheel.insert(deadline, TimerRef::lease(idx, h.session));
                ctx.sessions.reserve(h.session, u32::MAX);
                if h.lock_delay_ms > 0 {
                    self.hold_delays.insert((idx, h.session), h.lock_delay_ms);
                }
                let (kind, permits) = split(HeldMode::of(h.mode));
                self.lock_mut(idx).holders.push(Hold {
                    session: h.session,
                    token: h.token,
                    timer,
                    ttl_ms: h.ttl_ms,
                    count: u16::try_from(h.count).unwrap_or(u16::MAX),
                    kind,
                    permits,
                    request: h.request,
                    prev: NIL,
                    next: NIL,
                });
                self.stats.holds += 1;
            }
            let lock = self.lock_mut(idx);
            lock.last_token = l.last_token;
            let holders = lock.holder_pairs();
            let semaphore = matches!(l.kind, Kind::Semaphore { .. });
            for w in &l.waiters {
                ctx.graph
                    .lock()
                    .enqueue_ranked(&l.key, semaphore, &holders, w.session, w.mode, w.rank);
                if !w.upgrade {
                    ctx.sessions.reserve(w.session, u32::MAX);
                }
                let timer = w
                    .deadline
                    .map(|d| self.wheel.insert(d, TimerRef::wait(idx, w.session)));
                self.lock_mut(idx)
                    .queue
                    .get_or_insert_with(Default::default)
                    .push_back(Waiter {
                        session: w.session,
                        request: w.request,
                        mode: w.mode,
                        ttl_ms: w.ttl_ms,
                        since: w.since,
                        timer,
                        multi: w.multi,
                        rank: w.rank,
                        lock_delay_ms: w.lock_delay_ms,
                        upgrade: w.upgrade,
                    });
                self.stats.waiters += 1;
            }
            if let Some(until) = l.delayed_until {
                let timer = self.wheel.insert(until, TimerRef::delay(idx));
                self.delayed.insert(idx, (until, timer));
            }
        }
        for s in &image.sessions {
            let idxs: Vec<u32> = s.holds.iter().map(|k| index[k.as_bytes()]).collect();
            for (i, &idx) in idxs.iter().enumerate() {
                let prev = if i == 0 { NIL } else { idxs[i - 1] };
                let next = idxs.get(i + 1).copied().unwrap_or(NIL);
                let lock = self.lock_mut(idx);
                let pos = lock.holder(s.session).expect("image lists a hold it has");
                lock.holders[pos].prev = prev;
                lock.holders[pos].next = next;
            }
            let queued = s.queued.iter().map(|k| index[k.as_bytes()]).collect();
            self.sessions.insert(
                s.session,
                SessionShard {
                    head: idxs.first().copied().unwrap_or(NIL),
                    queued,
                },
            );
        }
        for v in &image.values {
            // A value whose hold or request is not in the image has nothing to go with.
            if let Some(&idx) = index.get(v.key.as_bytes()) {
                let lock = self.lock(idx);
                if lock.holder(v.session).is_some() || lock.waiter(v.session).is_some() {
                    self.keep_value(idx, v.session, Some(&v.value));
                }
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    pub(crate) fn inspect(&self, key: &[u8], hash: u64, now: u64) -> Option<KeyInfo> {
        let lock = self.lock(self.find(key, hash)?);
        Some(KeyInfo {
            kind: lock.kind,
            fencing: FencingToken(lock.last_token),
            holders: lock
                .holders
                .iter()
                .map(|h| h.info(lock.kind, &self.wheel, now))
                .collect(),
            waiters: lock
                .queue
                .iter()
                .flat_map(|q| q.iter())
                .map(|w| WaiterInfo {
                    session: w.session,
                    request: w.request,
                    mode: w.mode,
                    permits: w.mode.permits(),
                    waited_ms: now.saturating_sub(w.since),
                })
                .collect(),
        })
    }

    /// Calls `f` with every key of the shard until it returns false.
    pub(crate) fn for_each_key(&self, mut f: impl FnMut(&Key) -> bool) {
        for lock in self.locks.iter().flatten() {
            if !f(&lock.key) {
                return;
            }
        }
    }

    /// Calls `f` for every queued request.
    pub(crate) fn for_each_waiter(&self, mut f: impl FnMut(&Key, SessionId, RequestId)) {
        for lock in self.locks.iter().flatten() {
            for w in lock.queue.iter().flat_map(|q| q.iter()) {
                f(&lock.key, w.session, w.request);
            }
        }
    }

    /// Calls `f` for every hold (for invariant checks and snapshots).
    pub(crate) fn for_each_hold(
        &self,
        mut f: impl FnMut(&Key, Kind, SessionId, Mode, FencingToken, u32),
    ) {
        for lock in self.locks.iter().flatten() {
            for h in lock.holders.iter() {
                f(
                    &lock.key,
                    lock.kind,
                    h.session,
                    h.mode().mode(lock.kind),
                    FencingToken(h.token),
                    u32::from(h.count),
                );
            }
        }
    }
}

/// How one key of a multi-lock stands, seen with every shard of the request locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No such key: it would be created.
    Absent,
    /// Grantable now: nothing queued, compatible with the holders.
    Free,
    /// It would have to queue.
    Busy,
}

/// The multi-lock side of a shard (see [`super::multi`]): the table calls these with
/// every shard of the request locked, in shard order.
impl Shard {
    /// The request id of waiter `pos` of lock `idx` if it is a multi-lock member.
    fn multi_member(&self, idx: u32, pos: usize) -> Option<RequestId> {
        let w = &self.lock(idx).queue.as_ref()?[pos];
        w.multi.then_some(w.request)
    }

    /// How `key` stands for a member in `mode` of `session`'s multi-lock; `Err` is the
    /// refusal (another kind; already held or queued on by the session).
    pub(crate) fn multi_probe(
        &self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        mode: Mode,
    ) -> Result<Probe, AcquireOutcome> {
        let Some(idx) = self.find(key, hash) else {
            return Ok(Probe::Absent);
        };
        let lock = self.lock(idx);
        if lock.kind != mode.kind() {
            return Err(AcquireOutcome::WrongType { current: lock.kind });
        }
        if lock.holder(session).is_some() || lock.waiter(session).is_some() {
            return Err(AcquireOutcome::Deadlock(self_cycle(session, key)));
        }
        Ok(
            if lock.queue.is_none() && lock.compatible(mode) && !self.is_delayed(idx) {
                Probe::Free
            } else {
                Probe::Busy
            },
        )
    }

    /// Whether `key`'s queue is already at the per-key limit.
    pub(crate) fn multi_queue_full(&self, key: &[u8], hash: u64, max: usize) -> bool {
        self.find(key, hash)
            .and_then(|idx| self.lock(idx).queue.as_ref().map(|q| q.len()))
            .unwrap_or(0)
            >= max
    }

    /// Grants a member at once (the caller found every key free and counted new keys and
    /// the session's holds). Returns the token.
    #[allow(clippy::too_many_arguments, reason = "one member's whole grant")]
    pub(crate) fn multi_grant_now(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        mode: Mode,
        ttl_ms: u32,
        lock_delay_ms: u32,
        now: u64,
        ctx: &Ctx,
    ) -> FencingToken {
        self.stats.acquires += 1;
        let idx = match self.find(key, hash) {
            Some(idx) => idx,
            None => self.create(key, hash, mode.kind()),
        };
        FencingToken(self.grant(idx, session, mode, ttl_ms, lock_delay_ms, 0, now, ctx))
    }

    /// Queues a member (creating the key if need be) unless waiting would close a cycle.
    #[allow(clippy::too_many_arguments, reason = "one member's whole request")]
    pub(crate) fn multi_enqueue(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        mode: Mode,
        req: &super::multi::MultiRequest,
        ttl_ms: u32,
        now: u64,
        ctx: &Ctx,
    ) -> Result<(), Cycle> {
        let idx = match self.find(key, hash) {
            Some(idx) => idx,
            None => self.create(key, hash, mode.kind()),
        };
        let lock = self.lock(idx);
        let holders = lock.holder_pairs();
        let semaphore = matches!(lock.kind, Kind::Semaphore { .. });
        // Members take no priority: each goes to the back of its queue.
        let rank = super::types::QueuePolicy::default().rank(now, lock.back_rank());
        {
            let mut graph = ctx.graph.lock();
            if let Some(cycle) =
                graph.detect_ranked(session, &lock.key, semaphore, mode, &holders, rank)
            {
                drop(graph);
                self.stats.deadlocks += 1;
                self.remove_if_idle(idx, Some(hash), ctx);
                return Err(cycle);
            }
            graph.enqueue_ranked(&lock.key, semaphore, &holders, session, mode, rank);
        }
        self.enqueue(
            idx,
            Waiter {
                session,
                request: req.id,
                mode,
                ttl_ms,
                since: now,
                timer: None,
                rank,
                lock_delay_ms: req.lock_delay_ms,
                upgrade: false,
                multi: true,
            },
            req.wait_ms,
            now,
            ctx,
        );
        self.stats.acquires += 1;
        self.stats.queued += 1;
        Ok(())
    }

    /// Whether `session`'s member `request` is at the head of `key`'s queue and
    /// compatible with the holders.
    pub(crate) fn multi_ready(
        &self,
        session: SessionId,
        request: RequestId,
        key: &[u8],
        hash: u64,
    ) -> bool {
        let Some(idx) = self.find(key, hash) else {
            return false;
        };
        if self.is_delayed(idx) {
            return false;
        }
        let lock = self.lock(idx);
        lock.queue
            .as_ref()
            .and_then(|q| q.front())
            .is_some_and(|w| {
                w.session == session && w.request == request && lock.compatible(w.mode)
            })
    }

    /// Turns the ready member at the head of `key`'s queue into a hold. Returns its token.
    pub(crate) fn multi_take(
        &mut self,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
    ) -> FencingToken {
        let idx = self.find(key, hash).expect("a ready member's key exists");
        let waiter = self.drop_waiter(idx, 0, true, ctx);
        FencingToken(self.grant(
            idx,
            waiter.session,
            waiter.mode,
            waiter.ttl_ms,
            waiter.lock_delay_ms,
            0,
            now,
            ctx,
        ))
    }

    /// Grants what the queue of `key` now lets in (after a multi-lock took or left it).
    pub(crate) fn multi_regrant(
        &mut self,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) {
        if let Some(idx) = self.find(key, hash) {
            self.grant_waiters(idx, now, ctx, events);
            self.remove_if_idle(idx, Some(hash), ctx);
        }
    }

    /// Takes `session`'s member off `key`'s queue (the multi-lock was cancelled, timed
    /// out or refused) and grants what that lets in.
    pub(crate) fn multi_unqueue(
        &mut self,
        session: SessionId,
        key: &[u8],
        hash: u64,
        now: u64,
        ctx: &Ctx,
        events: &mut Vec<Event>,
    ) {
        let Some(idx) = self.find(key, hash) else {
            return;
        };
        if let Some(pos) = self.lock(idx).waiter(session) {
            self.drop_waiter(idx, pos, false, ctx);
            self.grant_waiters(idx, now, ctx, events);
            self.remove_if_idle(idx, Some(hash), ctx);
        }
    }

    /// Counts one timeout or cancel of a whole multi-lock.
    pub(crate) fn multi_count(&mut self, timed_out: bool) {
        if timed_out {
            self.stats.timeouts += 1;
        } else {
            self.stats.cancels += 1;
        }
    }
}

fn self_cycle(session: SessionId, key: &[u8]) -> Cycle {
    Cycle {
        sessions: vec![session],
        keys: vec![Key::new(key)],
    }
}

/// Read-only views for EXPLAIN and WAITGRAPH (see [`super::explain`]). They take the shard
/// as it is and change nothing, so the hot path never pays for them.
impl Shard {
    /// The wait-for edges out of `lock`'s queued requests (only `only`'s request when
    /// given), in queue order and, per waiter, holders first then the requests ahead:
    /// the rules of the wait-for graph (`crate::deadlock` module docs). Stops once `out`
    /// has `limit` edges; returns false if it stopped early.
    fn lock_edges(
        &self,
        lock: &Lock,
        only: Option<SessionId>,
        now: u64,
        limit: usize,
        out: &mut Vec<WaitEdge>,
    ) -> bool {
        let Some(queue) = lock.queue.as_ref() else {
            return true;
        };
        let semaphore = matches!(lock.kind, Kind::Semaphore { .. });
        let conflicts = |a: Mode, b: Mode| semaphore || !(a == Mode::Shared && b == Mode::Shared);
        let info = |w: &Waiter| WaiterInfo {
            session: w.session,
            request: w.request,
            mode: w.mode,
            permits: w.mode.permits(),
            waited_ms: now.saturating_sub(w.since),
        };
        for (pos, w) in queue.iter().enumerate() {
            if only.is_some_and(|s| s != w.session) {
                continue;
            }
            let waiter = info(w);
            for h in lock.holders.iter() {
                let held = h.mode().mode(lock.kind);
                // A pending upgrade waits for the other holders, not for its own hold.
                if h.session == w.session || !conflicts(w.mode, held) {
                    continue;
                }
                if out.len() >= limit {
                    return false;
                }
                out.push(WaitEdge {
                    key: lock.key.clone(),
                    kind: lock.kind,
                    waiter: waiter.clone(),
                    blocker: Blocker::Holder(h.info(lock.kind, &self.wheel, now)),
                });
            }
            for ahead in queue.range(..pos) {
                if !conflicts(w.mode, ahead.mode) {
                    continue;
                }
                if out.len() >= limit {
                    return false;
                }
                out.push(WaitEdge {
                    key: lock.key.clone(),
                    kind: lock.kind,
                    waiter: waiter.clone(),
                    blocker: Blocker::Queued(info(ahead)),
                });
            }
        }
        true
    }

    /// The edges out of `session`'s queued request on `key`, if it has one.
    pub(crate) fn waiter_edges(
        &self,
        key: &[u8],
        hash: u64,
        session: SessionId,
        now: u64,
        limit: usize,
        out: &mut Vec<WaitEdge>,
    ) -> bool {
        match self.find(key, hash) {
            Some(idx) => self.lock_edges(self.lock(idx), Some(session), now, limit, out),
            None => true,
        }
    }

    /// The keys `session` has a queued request on in this shard.
    pub(crate) fn queued_keys(&self, session: SessionId) -> Vec<Key> {
        self.sessions.get(&session).map_or_else(Vec::new, |s| {
            s.queued.iter().map(|&i| self.lock(i).key.clone()).collect()
        })
    }

    /// The session and key of the queued request `request`, by a scan of the keys that
    /// have queues.
    pub(crate) fn find_request(&self, request: RequestId) -> Option<(SessionId, Key)> {
        self.locks.iter().flatten().find_map(|lock| {
            lock.queue
                .as_ref()?
                .iter()
                .find(|w| w.request == request)
                .map(|w| (w.session, lock.key.clone()))
        })
    }

    /// Every edge of the shard's queues whose key passes `filter`, in slot order, until
    /// `out` has `limit` edges; false if it stopped early.
    pub(crate) fn all_edges(
        &self,
        filter: &mut dyn FnMut(&[u8]) -> bool,
        now: u64,
        limit: usize,
        out: &mut Vec<WaitEdge>,
    ) -> bool {
        for lock in self.locks.iter().flatten() {
            if lock.queue.is_none() || !filter(lock.key.as_bytes()) {
                continue;
            }
            if !self.lock_edges(lock, None, now, limit, out) {
                return false;
            }
        }
        true
    }
}
