//! The lock table under several threads at once.
//!
//! Four workers, each with two sessions of its own, hammer one table of 16 shards with
//! random ACQUIREs (try-locks, short waits, some unbounded), RELEASEs, RENEWs, CANCELs and
//! session ends, while a driver thread moves a shared fake clock and calls `advance`. The
//! run is cut into rounds; between rounds every thread stops at a barrier and the table is
//! checked as a whole. What is checked:
//! - always (by the driver, while the workers run): on every key the holders are
//!   compatible and a semaphore's permits stay within its limit;
//! - for every grant as it is returned or reported: its token is larger than every token
//!   of the same key recorded before the call that granted it began, it comes from the
//!   key's shard, and it is never returned twice except by a reentrant re-acquire of the
//!   same session;
//! - between rounds: every holder and its token were reported to someone, the wait-for
//!   graph read off INSPECT has no cycle, and no queue has a grantable head;
//! - at the end: every expired token had been granted, and closing every session empties
//!   the table.
//!
//! A second test runs a request, with its deadlock check, on one shard in the middle of a
//! grant from a queue on another shard (holding the grant open from inside the engine's
//! waker call), which a cross-shard wait-for graph must not miss.
//!
//! Bounded by iterations, not by time: nothing asserts anything about timing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use turnstile::engine::{
    shard_of, AcquireOutcome, AcquireRequest, Event, FencingToken, Key, Kind, Limits, LockTable,
    Mode, RequestId, SessionId,
};

const SHARDS: usize = 16;
const WORKERS: usize = 4;
const SESSIONS_PER_WORKER: usize = 2;
const ROUNDS: usize = 50;
const OPS_PER_ROUND: usize = 400;
/// Lock keys first, then semaphores with 1, 2 and 3 permits.
const LOCK_KEYS: usize = 12;
const SEM_KEYS: usize = 6;
const KEYS: usize = LOCK_KEYS + SEM_KEYS;

fn key_name(i: usize) -> Vec<u8> {
    if i < LOCK_KEYS {
        format!("lock:{i}").into_bytes()
    } else {
        format!("pool:{i}").into_bytes()
    }
}

fn sem_limit(i: usize) -> u32 {
    1 + (i % 3) as u32
}

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A barrier that a panicking thread breaks, so that the other threads fail too instead of
/// waiting for it forever.
struct Gate {
    parties: usize,
    /// (generation, arrived in this generation).
    state: Mutex<(u64, usize)>,
    cv: Condvar,
    broken: AtomicBool,
}

impl Gate {
    fn new(parties: usize) -> Self {
        Gate {
            parties,
            state: Mutex::new((0, 0)),
            cv: Condvar::new(),
            broken: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = state.0;
        state.1 += 1;
        if state.1 == self.parties {
            *state = (generation + 1, 0);
            self.cv.notify_all();
            return;
        }
        while state.0 == generation {
            if self.is_broken() {
                drop(state);
                panic!("another thread failed");
            }
            state = self.cv.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Held by each thread: breaks the gate if the thread unwinds.
    fn guard(&self) -> GateGuard<'_> {
        GateGuard(self)
    }
}

struct GateGuard<'a>(&'a Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let _state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
            self.0.broken.store(true, Ordering::SeqCst);
            self.0.cv.notify_all();
        }
    }
}

/// What the threads share.
struct World {
    table: LockTable,
    clock: AtomicU64,
    keys: Vec<Vec<u8>>,
    /// Per key: every token granted, with the session it went to.
    grants: Vec<Mutex<BTreeMap<u64, SessionId>>>,
    /// (session, key index, token) of every expiry reported.
    expired: Mutex<Vec<(SessionId, usize, u64)>>,
    /// Grants returned to reentrant requests whose token was not recorded yet: a re-acquire
    /// of a hold granted by an event its reporter has not recorded yet, or a new grant.
    /// Resolved when every thread has stopped: (key index, session, token, last token before).
    unresolved: Mutex<Vec<(usize, SessionId, u64, u64)>>,
    next_request: AtomicU64,
    /// Counts for the summary (deadlocks: cycles through other sessions).
    event_grants: AtomicUsize,
    deadlocks: AtomicUsize,
}

impl World {
    fn key_index(&self, key: &Key) -> usize {
        self.keys
            .iter()
            .position(|k| k.as_slice() == key.as_bytes())
            .expect("a key of the run")
    }

    /// The largest token recorded for key `i` so far.
    fn last_token(&self, i: usize) -> u64 {
        let map = self.grants[i].lock().expect("not poisoned");
        map.keys().next_back().copied().unwrap_or(0)
    }

    /// With every thread stopped: reentrant grants whose token is still unrecorded were new.
    fn resolve(&self) {
        let unresolved = std::mem::take(&mut *self.unresolved.lock().expect("not poisoned"));
        for (i, s, token, before) in unresolved {
            let known = self.grants[i]
                .lock()
                .expect("not poisoned")
                .get(&token)
                .copied();
            match known {
                Some(owner) => assert_eq!(owner, s, "token {token} of key {i}"),
                None => self.record_new(i, s, token, before),
            }
        }
    }

    fn last_tokens(&self) -> Vec<u64> {
        (0..KEYS).map(|i| self.last_token(i)).collect()
    }

    /// Records a new grant of key `i` whose call began when the key's last token was
    /// `before`.
    fn record_new(&self, i: usize, s: SessionId, token: u64, before: u64) {
        assert_eq!(
            (token - 1) % SHARDS as u64,
            shard_of(&self.keys[i], SHARDS) as u64,
            "token {token} of key {i} is not from the key's shard"
        );
        assert!(
            token > before,
            "token {token} of key {i} granted after token {before} was already returned"
        );
        let mut map = self.grants[i].lock().expect("not poisoned");
        if let Some(other) = map.insert(token, s) {
            panic!("token {token} of key {i} granted to {s} and earlier to {other}");
        }
    }

    /// Records the events of one call; `before` is [`Self::last_tokens`] from before it.
    fn record_events(&self, events: &[Event], before: &[u64]) {
        for e in events {
            match e {
                Event::Granted {
                    session,
                    key,
                    token,
                    ..
                } => {
                    let i = self.key_index(key);
                    self.record_new(i, *session, token.0, before[i]);
                    self.event_grants.fetch_add(1, Ordering::Relaxed);
                }
                Event::Expired {
                    session,
                    key,
                    token,
                } => {
                    let i = self.key_index(key);
                    let mut expired = self.expired.lock().expect("not poisoned");
                    expired.push((*session, i, token.0));
                }
                Event::TimedOut { .. } | Event::DelayEnded { .. } => {}
            }
        }
    }
}

fn permits(mode: Mode) -> u32 {
    match mode {
        Mode::Semaphore { permits, .. } => permits,
        Mode::Exclusive | Mode::Shared => 1,
    }
}

/// Holders compatible on every key, permits within every semaphore's limit.
fn check_holds(table: &LockTable) {
    let mut holds: BTreeMap<Key, Vec<(Kind, SessionId, Mode, FencingToken)>> = BTreeMap::new();
    table.for_each_hold(|key, kind, s, mode, token, count| {
        assert!(count >= 1, "{key:?}: count 0");
        holds
            .entry(key.clone())
            .or_default()
            .push((kind, s, mode, token));
    });
    for (key, hs) in holds {
        let sessions: BTreeSet<SessionId> = hs.iter().map(|h| h.1).collect();
        assert_eq!(
            sessions.len(),
            hs.len(),
            "{key:?}: a session holds twice: {hs:?}"
        );
        match hs[0].0 {
            Kind::Lock => {
                let exclusive = hs.iter().filter(|h| h.2 == Mode::Exclusive).count();
                assert!(
                    exclusive == 0 || hs.len() == 1,
                    "{key:?}: an exclusive hold next to others: {hs:?}"
                );
                assert!(hs
                    .iter()
                    .all(|h| h.0 == Kind::Lock && matches!(h.2, Mode::Exclusive | Mode::Shared)));
            }
            Kind::Semaphore { limit } => {
                let used: u32 = hs.iter().map(|h| permits(h.2)).sum();
                assert!(used <= limit, "{key:?}: {used} permits of {limit}: {hs:?}");
                assert!(hs
                    .iter()
                    .all(|h| matches!(h.2, Mode::Semaphore { limit: l, .. } if l == limit)));
            }
        }
    }
}

fn conflicts(kind: Kind, a: Mode, b: Mode) -> bool {
    match kind {
        Kind::Lock => !(a == Mode::Shared && b == Mode::Shared),
        Kind::Semaphore { .. } => true,
    }
}

/// With every thread stopped: each holder was reported, no queue has a grantable head, and
/// the wait-for graph read off INSPECT has no cycle.
fn check_quiescent(world: &World) {
    let now = world.clock.load(Ordering::SeqCst);
    let mut edges: BTreeMap<SessionId, BTreeSet<SessionId>> = BTreeMap::new();
    for (i, key) in world.keys.iter().enumerate() {
        let Some(info) = world.table.inspect(key, now) else {
            continue;
        };
        let granted = world.grants[i].lock().expect("not poisoned");
        for h in &info.holders {
            assert!(h.token <= info.fencing);
            assert_eq!(
                granted.get(&h.token.0),
                Some(&h.session),
                "key {i}: holder {h:?} was never reported granted"
            );
        }
        if let Some(head) = info.waiters.first() {
            let fits = match head.mode {
                Mode::Exclusive => info.holders.is_empty(),
                Mode::Shared => info.holders.iter().all(|h| h.mode == Mode::Shared),
                Mode::Semaphore { limit, permits } => {
                    info.holders.iter().map(|h| h.permits).sum::<u32>() + permits <= limit
                }
            };
            assert!(!fits, "key {i}: grantable head left waiting: {info:?}");
        }
        for (pos, w) in info.waiters.iter().enumerate() {
            let out = edges.entry(w.session).or_default();
            for h in &info.holders {
                if conflicts(info.kind, w.mode, h.mode) {
                    out.insert(h.session);
                }
            }
            for ahead in &info.waiters[..pos] {
                if conflicts(info.kind, w.mode, ahead.mode) {
                    out.insert(ahead.session);
                }
            }
        }
    }
    // A cycle shows up as a session reaching itself.
    for &start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<SessionId> = edges[&start].iter().copied().collect();
        while let Some(s) = todo.pop() {
            assert_ne!(s, start, "wait-for cycle through {start}: {edges:?}");
            if seen.insert(s) {
                todo.extend(edges.get(&s).into_iter().flatten().copied());
            }
        }
    }
}

fn worker(world: &World, me: usize, barrier: &Gate, done: &AtomicUsize) {
    let _guard = barrier.guard();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((me as u64 + 1) << 32));
    let mut sessions: Vec<SessionId> = (0..SESSIONS_PER_WORKER)
        .map(|_| world.table.open_session())
        .collect();
    for _ in 0..ROUNDS {
        for _ in 0..OPS_PER_ROUND {
            let slot = rng.below(SESSIONS_PER_WORKER as u64) as usize;
            let s = sessions[slot];
            let i = rng.below(KEYS as u64) as usize;
            let key = &world.keys[i];
            let now = world.clock.load(Ordering::SeqCst);
            let mut events = Vec::new();
            match rng.below(100) {
                0..=49 => {
                    let mode = if i < LOCK_KEYS {
                        if rng.below(2) == 0 {
                            Mode::Shared
                        } else {
                            Mode::Exclusive
                        }
                    } else {
                        let limit = sem_limit(i);
                        Mode::Semaphore {
                            limit,
                            permits: 1 + rng.below(u64::from(limit)) as u32,
                        }
                    };
                    let wait = match rng.below(10) {
                        0..=4 => Some(0),
                        5..=8 => Some(1 + rng.below(20)),
                        _ => None,
                    };
                    let req = AcquireRequest {
                        id: RequestId(world.next_request.fetch_add(1, Ordering::Relaxed)),
                        mode,
                        reentrant: rng.below(4) == 0,
                        ttl_ms: 1 + rng.below(40),
                        wait_ms: wait,
                        policy: Default::default(),
                    };
                    let before = world.last_token(i);
                    match world.table.acquire(s, key, &req, now) {
                        AcquireOutcome::Granted(t) => {
                            let known = world.grants[i]
                                .lock()
                                .expect("not poisoned")
                                .get(&t.0)
                                .copied();
                            match known {
                                Some(owner) => {
                                    assert!(req.reentrant, "token {t} returned twice");
                                    assert_eq!(owner, s, "token {t} of another session");
                                }
                                None if req.reentrant => {
                                    let mut u = world.unresolved.lock().expect("not poisoned");
                                    u.push((i, s, t.0, before));
                                }
                                None => world.record_new(i, s, t.0, before),
                            }
                        }
                        AcquireOutcome::Deadlock(cycle) => {
                            assert_eq!(cycle.sessions.first(), Some(&s));
                            assert_eq!(cycle.sessions.len(), cycle.keys.len());
                            assert_eq!(cycle.keys[0].as_bytes(), key.as_slice());
                            if cycle.sessions.len() > 1 {
                                world.deadlocks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        AcquireOutcome::Queued | AcquireOutcome::WouldBlock => {}
                        other => panic!("unexpected {other:?} for {req:?}"),
                    }
                }
                50..=69 => {
                    let before = world.last_tokens();
                    let _ = world.table.release(s, key, now, &mut events);
                    world.record_events(&events, &before);
                }
                70..=79 => {
                    let ttl = (rng.below(2) == 0).then(|| 1 + rng.below(40));
                    let _ = world.table.renew(s, key, ttl, now);
                }
                80..=97 => {
                    let before = world.last_tokens();
                    world.table.cancel(s, key, now, &mut events);
                    world.record_events(&events, &before);
                }
                _ => {
                    let before = world.last_tokens();
                    world.table.close_session(s, now, &mut events);
                    world.record_events(&events, &before);
                    sessions[slot] = world.table.open_session();
                }
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
        barrier.wait(); // stop for the check
        barrier.wait(); // go on
    }
    for s in sessions {
        let before = world.last_tokens();
        let mut events = Vec::new();
        world
            .table
            .close_session(s, world.clock.load(Ordering::SeqCst), &mut events);
        world.record_events(&events, &before);
    }
}

fn driver(world: &World, barrier: &Gate, done: &AtomicUsize, stop: &AtomicBool) {
    let _guard = barrier.guard();
    let mut ticks = 0u64;
    loop {
        // Run the clock until every worker has finished its round.
        while done.load(Ordering::SeqCst) < WORKERS
            && !stop.load(Ordering::SeqCst)
            && !barrier.is_broken()
        {
            let now = world.clock.fetch_add(1, Ordering::SeqCst) + 1;
            let before = world.last_tokens();
            let mut events = Vec::new();
            world.table.advance(now, &mut events);
            world.record_events(&events, &before);
            ticks += 1;
            if ticks & 15 == 0 {
                check_holds(&world.table);
            }
            thread::yield_now();
        }
        if stop.load(Ordering::SeqCst) || barrier.is_broken() {
            return;
        }
        barrier.wait();
        barrier.wait();
    }
}

#[test]
fn many_threads_keep_the_invariants() {
    let world = Arc::new(World {
        table: LockTable::new(SHARDS, Limits::default(), 0),
        clock: AtomicU64::new(0),
        keys: (0..KEYS).map(key_name).collect(),
        grants: (0..KEYS).map(|_| Mutex::new(BTreeMap::new())).collect(),
        expired: Mutex::new(Vec::new()),
        unresolved: Mutex::new(Vec::new()),
        next_request: AtomicU64::new(1),
        event_grants: AtomicUsize::new(0),
        deadlocks: AtomicUsize::new(0),
    });
    let shards: BTreeSet<usize> = world.keys.iter().map(|k| shard_of(k, SHARDS)).collect();
    assert!(shards.len() >= 8, "keys spread over shards {shards:?}");

    // Workers, driver and this thread meet at the barrier between rounds.
    let barrier = Arc::new(Gate::new(WORKERS + 2));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for me in 0..WORKERS {
        let (world, barrier, done) = (world.clone(), barrier.clone(), done.clone());
        threads.push(thread::spawn(move || worker(&world, me, &barrier, &done)));
    }
    let drv = {
        let (world, barrier, done, stop) =
            (world.clone(), barrier.clone(), done.clone(), stop.clone());
        thread::spawn(move || driver(&world, &barrier, &done, &stop))
    };

    let guard = barrier.guard();
    for _ in 0..ROUNDS {
        barrier.wait();
        world.resolve();
        check_holds(&world.table);
        check_quiescent(&world);
        // However the threads were scheduled, time moves on between rounds.
        let now = world.clock.fetch_add(5, Ordering::SeqCst) + 5;
        let before = world.last_tokens();
        let mut events = Vec::new();
        world.table.advance(now, &mut events);
        world.record_events(&events, &before);
        check_holds(&world.table);
        done.store(0, Ordering::SeqCst);
        barrier.wait();
    }
    for t in threads {
        t.join().expect("worker");
    }
    stop.store(true, Ordering::SeqCst);
    drv.join().expect("driver");
    drop(guard);

    world.resolve();
    // Every session is closed: nothing is held or queued, and no timer is left.
    let now = world.clock.load(Ordering::SeqCst) + 1_000;
    let mut events = Vec::new();
    world.table.advance(now, &mut events);
    assert!(events.is_empty(), "{events:?}");
    assert!(world.table.keys(|_| true, usize::MAX).is_empty());
    assert_eq!(world.table.next_deadline(), None);

    // Every expiry names a grant that was reported, to the same session.
    let expired = world.expired.lock().expect("not poisoned");
    for &(s, i, token) in expired.iter() {
        let granted = world.grants[i].lock().expect("not poisoned");
        assert_eq!(
            granted.get(&token),
            Some(&s),
            "expired token {token} of key {i}"
        );
    }
    // Tokens are unique across keys too.
    let mut all = BTreeSet::new();
    for map in &world.grants {
        for &t in map.lock().expect("not poisoned").keys() {
            assert!(all.insert(t), "token {t} granted on two keys");
        }
    }

    let stats = world.table.stats();
    eprintln!(
        "{} grants ({} from the queue), {} expiries, {} timeouts, {} would-block, {} deadlocks, \
         {} cancels, clock at {}",
        stats.grants,
        world.event_grants.load(Ordering::Relaxed),
        stats.expiries,
        stats.timeouts,
        stats.would_block,
        world.deadlocks.load(Ordering::Relaxed),
        stats.cancels,
        world.clock.load(Ordering::SeqCst),
    );
    assert_eq!(stats.holds, 0);
    assert_eq!(stats.waiters, 0);
    assert!(stats.grants as usize >= all.len());
    assert!(
        world.event_grants.load(Ordering::Relaxed) > 0,
        "nothing was ever granted from a queue"
    );
}

/// A deadlock check that runs while a grant from a queue is under way on another shard.
///
/// S waits for R on key B and is at the head of key A's queue, T queued behind it; H holds
/// A; T holds D. R asking for D closes R -> T -> S -> R: T waits for S, as a request ahead
/// of it on A and, once H's release grants A to S, as A's holder. So R must be refused
/// before, during and after that grant. The engine calls the waker while the grant arms
/// S's lease; there, this test starts R's request on another thread and holds the grant
/// open until the request has been answered (or for half a second, if the engine makes it
/// wait). Any answer but DEADLOCK leaves R waiting in a cycle nobody will ever break.
#[test]
fn a_request_during_a_grant_on_another_shard_sees_the_grant() {
    let table = Arc::new(LockTable::new(SHARDS, Limits::default(), 0));
    let (a, b) = (b"a".to_vec(), b"b".to_vec());
    let d = (0..)
        .map(|i| format!("d{i}").into_bytes())
        .find(|d| shard_of(d, SHARDS) != shard_of(&a, SHARDS))
        .expect("a key in another shard");
    let req = |id: u64| AcquireRequest {
        id: RequestId(id),
        mode: Mode::Exclusive,
        reentrant: false,
        ttl_ms: 1_000_000,
        wait_ms: None,
        policy: Default::default(),
    };

    // The request to start from inside the grant, and the thread that made it.
    type Probe = (SessionId, Vec<u8>);
    let armed: Arc<Mutex<Option<Probe>>> = Arc::new(Mutex::new(None));
    let started: Arc<Mutex<Option<thread::JoinHandle<AcquireOutcome>>>> =
        Arc::new(Mutex::new(None));
    {
        let (weak, armed, started) = (Arc::downgrade(&table), armed.clone(), started.clone());
        table.set_waker(Box::new(move || {
            let Some((r, d)) = armed.lock().expect("not poisoned").take() else {
                return;
            };
            let Some(table) = weak.upgrade() else {
                return;
            };
            let probe = thread::spawn(move || table.acquire(r, &d, &req(7), 0));
            let since = std::time::Instant::now();
            while !probe.is_finished() && since.elapsed() < std::time::Duration::from_millis(500) {
                thread::sleep(std::time::Duration::from_micros(50));
            }
            *started.lock().expect("not poisoned") = Some(probe);
        }));
    }

    let [h, s, t, r] = [(); 4].map(|_| table.open_session());
    assert!(matches!(
        table.acquire(h, &a, &req(1), 0),
        AcquireOutcome::Granted(_)
    ));
    assert!(matches!(
        table.acquire(r, &b, &req(2), 0),
        AcquireOutcome::Granted(_)
    ));
    assert!(matches!(
        table.acquire(t, &d, &req(3), 0),
        AcquireOutcome::Granted(_)
    ));
    assert_eq!(table.acquire(s, &b, &req(4), 0), AcquireOutcome::Queued);
    assert_eq!(table.acquire(s, &a, &req(5), 0), AcquireOutcome::Queued);
    assert_eq!(table.acquire(t, &a, &req(6), 0), AcquireOutcome::Queued);
    // Before the grant: refused.
    assert!(matches!(
        table.acquire(r, &d, &req(7), 0),
        AcquireOutcome::Deadlock(_)
    ));

    *armed.lock().expect("not poisoned") = Some((r, d.clone()));
    let mut events = Vec::new();
    table.release(h, &a, 0, &mut events).expect("H holds A");
    assert!(matches!(&events[..], [Event::Granted { session, .. }] if *session == s));
    let probe = started
        .lock()
        .expect("not poisoned")
        .take()
        .expect("the grant armed a lease and called the waker");
    let during = probe.join().expect("the probe");
    assert!(
        matches!(during, AcquireOutcome::Deadlock(_)),
        "R asking for D while A was being granted to S: {during:?}; now R waits for T (D), \
         T for S (A), S for R (B), forever"
    );
    // After the grant: refused.
    let after = table.acquire(r, &d, &req(8), 0);
    assert!(matches!(after, AcquireOutcome::Deadlock(_)), "{after:?}");
}
