//! The queue rules of the lock table, one scenario each, in the words of
//! `shared/contract/text-commands.md`: strict FIFO with no barging, adjacent SHARED requests
//! granted together, a semaphore head that does not fit blocking the rest, try-locks,
//! reentrancy, leases, wait timeouts, session ends, key lifetime, WRONGTYPE, DEADLOCK and
//! limits.

use std::collections::BTreeSet;

use turnstile::engine::{
    shard_of, AcquireOutcome, AcquireRequest, Cycle, Event, FencingToken, Key, Kind, LimitKind,
    Limits, LockTable, Mode, NotHeld, RequestId, SessionId,
};

// ---------------------------------------------------------------------------------------
// A small vocabulary for the scenarios
// ---------------------------------------------------------------------------------------

/// An ACQUIRE's options (TTL 10 s and no WAIT unless said otherwise).
#[derive(Clone, Copy, Debug)]
struct Req {
    mode: Mode,
    reentrant: bool,
    ttl: u64,
    wait: Option<u64>,
}

const X: Req = Req {
    mode: Mode::Exclusive,
    reentrant: false,
    ttl: 10_000,
    wait: None,
};

const S: Req = Req {
    mode: Mode::Shared,
    ..X
};

fn sem(limit: u32, permits: u32) -> Req {
    Req {
        mode: Mode::Semaphore { limit, permits },
        ..X
    }
}

impl Req {
    fn wait(self, ms: u64) -> Self {
        Req {
            wait: Some(ms),
            ..self
        }
    }

    fn ttl(self, ms: u64) -> Self {
        Req { ttl: ms, ..self }
    }

    fn reentrant(self) -> Self {
        Req {
            reentrant: true,
            ..self
        }
    }
}

/// A lock table and its clock.
struct Fx {
    table: LockTable,
    now: u64,
    next_request: u64,
}

impl Fx {
    fn new(shards: usize) -> Self {
        Self::with_limits(shards, Limits::default())
    }

    fn with_limits(shards: usize, limits: Limits) -> Self {
        Fx {
            table: LockTable::new(shards, limits, 0),
            now: 0,
            next_request: 1,
        }
    }

    fn session(&self) -> SessionId {
        self.table.open_session()
    }

    fn acquire(&mut self, s: SessionId, key: &str, r: Req) -> AcquireOutcome {
        let req = AcquireRequest {
            id: RequestId(self.next_request),
            mode: r.mode,
            reentrant: r.reentrant,
            ttl_ms: r.ttl,
            wait_ms: r.wait,
            policy: Default::default(),
        };
        self.next_request += 1;
        self.table.acquire(s, key.as_bytes(), &req, self.now)
    }

    /// An ACQUIRE that must be granted at once; its token.
    fn granted(&mut self, s: SessionId, key: &str, r: Req) -> u64 {
        match self.acquire(s, key, r) {
            AcquireOutcome::Granted(t) => t.0,
            other => panic!("{s} ACQUIRE {key} {r:?}: expected a grant, got {other:?}"),
        }
    }

    /// An ACQUIRE that must queue.
    fn queued(&mut self, s: SessionId, key: &str, r: Req) {
        let got = self.acquire(s, key, r);
        assert_eq!(got, AcquireOutcome::Queued, "{s} ACQUIRE {key} {r:?}");
    }

    fn release(&mut self, s: SessionId, key: &str) -> Vec<Event> {
        let mut events = Vec::new();
        let got = self.table.release(s, key.as_bytes(), self.now, &mut events);
        assert_eq!(got, Ok(()), "{s} RELEASE {key}");
        events
    }

    fn advance_to(&mut self, now: u64) -> Vec<Event> {
        self.now = now;
        let mut events = Vec::new();
        self.table.advance(now, &mut events);
        events
    }

    fn close(&mut self, s: SessionId) -> Vec<Event> {
        let mut events = Vec::new();
        self.table.close_session(s, self.now, &mut events);
        events
    }

    fn holders(&self, key: &str) -> Vec<(SessionId, Mode)> {
        self.table
            .inspect(key.as_bytes(), self.now)
            .map_or(Vec::new(), |i| {
                i.holders.iter().map(|h| (h.session, h.mode)).collect()
            })
    }

    fn waiters(&self, key: &str) -> Vec<SessionId> {
        self.table
            .inspect(key.as_bytes(), self.now)
            .map_or(Vec::new(), |i| {
                i.waiters.iter().map(|w| w.session).collect()
            })
    }
}

/// (session, key) of each grant among `events`, in order.
fn grants(events: &[Event]) -> Vec<(SessionId, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Granted { session, key, .. } => Some((*session, key.to_string())),
            _ => None,
        })
        .collect()
}

fn token_of(events: &[Event], s: SessionId) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            Event::Granted { session, token, .. } if *session == s => Some(token.0),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no grant for {s} in {events:?}"))
}

fn g(s: SessionId, key: &str) -> (SessionId, String) {
    (s, key.to_string())
}

/// `n` keys that land in `n` different shards of `shards`.
fn keys_in_distinct_shards(n: usize, shards: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("key:{i}"))
        .filter(|k| seen.insert(shard_of(k.as_bytes(), shards)))
        .take(n)
        .collect();
    assert_eq!(keys.len(), n);
    keys
}

// ---------------------------------------------------------------------------------------
// FIFO, no barging
// ---------------------------------------------------------------------------------------

#[test]
fn shared_behind_a_queued_exclusive_waits() {
    let mut fx = Fx::new(1);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, "k", S);
    fx.queued(b, "k", X);
    // Compatible with the SHARED holder, but B is ahead: no barging.
    fx.queued(c, "k", S);
    assert_eq!(fx.waiters("k"), vec![b, c]);

    let ev = fx.release(a, "k");
    assert_eq!(grants(&ev), vec![g(b, "k")]);
    assert_eq!(fx.waiters("k"), vec![c]);
    let ev = fx.release(b, "k");
    assert_eq!(grants(&ev), vec![g(c, "k")]);
    assert_eq!(fx.holders("k"), vec![(c, Mode::Shared)]);
}

#[test]
fn exclusive_waits_for_every_shared_holder() {
    let mut fx = Fx::new(1);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, "k", S);
    fx.granted(b, "k", S);
    fx.queued(c, "k", X);
    assert!(fx.release(a, "k").is_empty());
    assert_eq!(grants(&fx.release(b, "k")), vec![g(c, "k")]);
}

#[test]
fn adjacent_shared_requests_are_granted_together() {
    let mut fx = Fx::new(1);
    let s: Vec<SessionId> = (0..5).map(|_| fx.session()).collect();
    let t0 = fx.granted(s[0], "k", X);
    fx.queued(s[1], "k", S);
    fx.queued(s[2], "k", S);
    fx.queued(s[3], "k", X);
    fx.queued(s[4], "k", S);

    let ev = fx.release(s[0], "k");
    assert_eq!(grants(&ev), vec![g(s[1], "k"), g(s[2], "k")]);
    let (t1, t2) = (token_of(&ev, s[1]), token_of(&ev, s[2]));
    assert!(t0 < t1 && t1 < t2, "tokens {t0} {t1} {t2}");
    // The SHARED request behind the queued EXCLUSIVE stays behind it.
    assert_eq!(fx.waiters("k"), vec![s[3], s[4]]);

    assert!(fx.release(s[1], "k").is_empty());
    assert_eq!(grants(&fx.release(s[2], "k")), vec![g(s[3], "k")]);
    assert_eq!(grants(&fx.release(s[3], "k")), vec![g(s[4], "k")]);
}

#[test]
fn a_semaphore_head_that_does_not_fit_blocks_the_rest() {
    let mut fx = Fx::new(1);
    let s: Vec<SessionId> = (0..4).map(|_| fx.session()).collect();
    fx.granted(s[0], "pool", sem(3, 1));
    fx.granted(s[1], "pool", sem(3, 2));
    fx.queued(s[2], "pool", sem(3, 2));
    // All three permits are taken; this one waits behind the head.
    fx.queued(s[3], "pool", sem(3, 1));

    // One permit comes back: the head needs two, so nothing moves, not even the request
    // behind it that would fit.
    assert!(fx.release(s[0], "pool").is_empty());
    assert_eq!(fx.waiters("pool"), vec![s[2], s[3]]);

    // Two more come back: the head and then the one behind it fit.
    let ev = fx.release(s[1], "pool");
    assert_eq!(grants(&ev), vec![g(s[2], "pool"), g(s[3], "pool")]);
    let info = fx.table.inspect(b"pool", fx.now).expect("held");
    assert_eq!(info.holders.iter().map(|h| h.permits).sum::<u32>(), 3);
}

#[test]
fn a_semaphore_admits_up_to_its_limit() {
    let mut fx = Fx::new(1);
    let s: Vec<SessionId> = (0..4).map(|_| fx.session()).collect();
    for &x in &s[..3] {
        fx.granted(x, "pool", sem(3, 1));
    }
    assert_eq!(
        fx.acquire(s[3], "pool", sem(3, 1).wait(0)),
        AcquireOutcome::WouldBlock
    );
    fx.queued(s[3], "pool", sem(3, 1));
    assert_eq!(grants(&fx.release(s[1], "pool")), vec![g(s[3], "pool")]);
}

// ---------------------------------------------------------------------------------------
// Try-locks
// ---------------------------------------------------------------------------------------

#[test]
fn a_try_lock_fails_while_anyone_is_queued() {
    let mut fx = Fx::new(1);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, "k", S);
    // Nobody queued and compatible: granted at once.
    fx.granted(c, "k", S.wait(0));
    fx.release(c, "k");
    fx.queued(b, "k", X);
    // Compatible with the holder, but someone is queued.
    assert_eq!(fx.acquire(c, "k", S.wait(0)), AcquireOutcome::WouldBlock);
    assert_eq!(fx.acquire(c, "k", X.wait(0)), AcquireOutcome::WouldBlock);
    // Nothing changed.
    assert_eq!(fx.holders("k"), vec![(a, Mode::Shared)]);
    assert_eq!(fx.waiters("k"), vec![b]);
}

#[test]
fn a_try_lock_on_a_held_key_fails_and_leaves_no_trace() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, "k", X);
    assert_eq!(fx.acquire(b, "k", X.wait(0)), AcquireOutcome::WouldBlock);
    assert_eq!(fx.acquire(b, "k", S.wait(0)), AcquireOutcome::WouldBlock);
    assert!(fx.release(a, "k").is_empty());
    assert_eq!(fx.table.inspect(b"k", fx.now), None);
}

// ---------------------------------------------------------------------------------------
// Reentrancy
// ---------------------------------------------------------------------------------------

#[test]
fn reentrant_acquires_count_and_release_one_level_at_a_time() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    let t = fx.granted(a, "k", X.reentrant());
    assert_eq!(fx.granted(a, "k", X.reentrant()), t);
    assert_eq!(fx.granted(a, "k", X.reentrant()), t);
    let info = fx.table.inspect(b"k", fx.now).expect("held");
    assert_eq!((info.holders[0].count, info.fencing), (3, FencingToken(t)));
    fx.queued(b, "k", X);

    assert!(fx.release(a, "k").is_empty());
    assert!(fx.release(a, "k").is_empty());
    assert_eq!(
        fx.table.inspect(b"k", fx.now).expect("held").holders[0].count,
        1
    );
    let ev = fx.release(a, "k");
    assert_eq!(grants(&ev), vec![g(b, "k")]);
    assert!(token_of(&ev, b) > t);
    let mut events = Vec::new();
    assert_eq!(fx.table.release(a, b"k", fx.now, &mut events), Err(NotHeld));
}

#[test]
fn reentrant_shared_counts_too() {
    let mut fx = Fx::new(1);
    let a = fx.session();
    let t = fx.granted(a, "k", S.reentrant());
    assert_eq!(fx.granted(a, "k", S.reentrant()), t);
    fx.release(a, "k");
    assert_eq!(fx.holders("k"), vec![(a, Mode::Shared)]);
    fx.release(a, "k");
    assert_eq!(fx.table.inspect(b"k", fx.now), None);
}

#[test]
fn any_other_acquire_of_a_held_key_is_a_self_deadlock() {
    let mut fx = Fx::new(1);
    let a = fx.session();
    let own = Cycle {
        sessions: vec![a],
        keys: vec![Key::from("k")],
    };
    fx.granted(a, "k", X);
    // Not reentrant.
    assert_eq!(fx.acquire(a, "k", X), AcquireOutcome::Deadlock(own.clone()));
    // Reentrant but another mode.
    assert_eq!(
        fx.acquire(a, "k", S.reentrant()),
        AcquireOutcome::Deadlock(own.clone())
    );
    // A try-lock too.
    assert_eq!(
        fx.acquire(a, "k", X.wait(0)),
        AcquireOutcome::Deadlock(own.clone())
    );
    fx.release(a, "k");

    // Semaphores are not reentrant.
    let own = Cycle {
        sessions: vec![a],
        keys: vec![Key::from("pool")],
    };
    fx.granted(a, "pool", sem(3, 1));
    assert_eq!(
        fx.acquire(a, "pool", sem(3, 1).reentrant()),
        AcquireOutcome::Deadlock(own)
    );
}

#[test]
fn a_second_request_on_a_key_the_session_waits_for_is_a_self_deadlock() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, "k", X);
    fx.queued(b, "k", X);
    let own = Cycle {
        sessions: vec![b],
        keys: vec![Key::from("k")],
    };
    assert_eq!(
        fx.acquire(b, "k", X.reentrant()),
        AcquireOutcome::Deadlock(own)
    );
    assert_eq!(fx.waiters("k"), vec![b]);
}

#[test]
fn a_reentrant_acquire_extends_the_lease_but_never_shortens_it() {
    let mut fx = Fx::new(1);
    let a = fx.session();
    fx.granted(a, "k", X.reentrant().ttl(100));
    fx.now = 50;
    // now + 20 = 70 < 100: the lease stays at 100.
    fx.granted(a, "k", X.reentrant().ttl(20));
    assert_eq!(
        fx.table.inspect(b"k", 50).expect("held").holders[0].ttl_ms,
        50
    );
    // now + 80 = 130 > 100: extended.
    fx.granted(a, "k", X.reentrant().ttl(80));
    assert_eq!(
        fx.table.inspect(b"k", 50).expect("held").holders[0].ttl_ms,
        80
    );
    assert!(fx.advance_to(129).is_empty());
    // A RENEW without TTL uses the last TTL given (80).
    assert_eq!(fx.table.renew(a, b"k", None, fx.now), Ok(80));
    assert!(fx.advance_to(208).is_empty());
    let ev = fx.advance_to(209);
    assert!(
        matches!(&ev[..], [Event::Expired { session, .. }] if *session == a),
        "{ev:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Leases and wait deadlines
// ---------------------------------------------------------------------------------------

#[test]
fn an_expired_lease_grants_the_next_waiter() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    let t1 = fx.granted(a, "k", X.ttl(100));
    fx.now = 10;
    fx.queued(b, "k", X.ttl(50));
    assert!(fx.advance_to(99).is_empty());

    let ev = fx.advance_to(100);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        ev[0],
        Event::Expired {
            session: a,
            key: Key::from("k"),
            token: FencingToken(t1),
        }
    );
    assert_eq!(grants(&ev), vec![g(b, "k")]);
    assert!(token_of(&ev, b) > t1);
    // The holder whose lease ran out holds nothing.
    let mut events = Vec::new();
    assert_eq!(fx.table.release(a, b"k", fx.now, &mut events), Err(NotHeld));
    assert_eq!(fx.table.renew(a, b"k", None, fx.now), Err(NotHeld));

    // The new holder's lease counts from its grant (100), not from its request (10).
    assert!(fx.advance_to(149).is_empty());
    let ev = fx.advance_to(150);
    assert!(
        matches!(&ev[..], [Event::Expired { session, .. }] if *session == b),
        "{ev:?}"
    );
    assert_eq!(fx.table.inspect(b"k", fx.now), None);
}

#[test]
fn a_renewed_lease_runs_from_the_renewal() {
    let mut fx = Fx::new(1);
    let a = fx.session();
    fx.granted(a, "k", X.ttl(100));
    fx.now = 90;
    assert_eq!(fx.table.renew(a, b"k", None, fx.now), Ok(100));
    assert!(fx.advance_to(189).is_empty());
    assert_eq!(fx.table.renew(a, b"k", Some(5), fx.now), Ok(5));
    assert!(fx.advance_to(193).is_empty());
    assert_eq!(fx.advance_to(194).len(), 1);
}

#[test]
fn a_late_driver_fires_overdue_timers_in_deadline_order() {
    let mut fx = Fx::new(1);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, "k", X.ttl(30));
    fx.queued(b, "k", X.wait(20));
    fx.queued(c, "k", X.ttl(5));
    // At 100, all are overdue: B's wait (20) first, then A's lease (30), which grants C at
    // 100, so C's 5 ms lease has not run out yet.
    let ev = fx.advance_to(100);
    assert!(
        matches!(ev[0], Event::TimedOut { session, .. } if session == b),
        "{ev:?}"
    );
    assert!(
        matches!(ev[1], Event::Expired { session, .. } if session == a),
        "{ev:?}"
    );
    assert_eq!(grants(&ev), vec![g(c, "k")]);
    assert_eq!(ev.len(), 3);
    assert_eq!(fx.advance_to(105).len(), 1);
}

#[test]
fn a_wait_runs_out() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, "k", X);
    fx.queued(b, "k", X.wait(30));
    assert!(fx.advance_to(29).is_empty());
    assert_eq!(
        fx.table.inspect(b"k", 29).expect("held").waiters[0].waited_ms,
        29
    );
    let ev = fx.advance_to(30);
    assert!(
        matches!(&ev[..], [Event::TimedOut { session, request: RequestId(2), .. }] if *session == b),
        "{ev:?}"
    );
    assert!(fx.waiters("k").is_empty());
    // Cancelling it now finds nothing.
    let mut events = Vec::new();
    assert!(!fx.table.cancel(b, b"k", fx.now, &mut events));
}

#[test]
fn a_timed_out_head_lets_the_requests_behind_it_in() {
    let mut fx = Fx::new(1);
    let (a, b, c, d) = (fx.session(), fx.session(), fx.session(), fx.session());
    fx.granted(a, "k", S);
    fx.queued(b, "k", X.wait(10));
    fx.queued(c, "k", S);
    fx.queued(d, "k", S.wait(50));
    let ev = fx.advance_to(10);
    assert!(
        matches!(ev[0], Event::TimedOut { session, .. } if session == b),
        "{ev:?}"
    );
    assert_eq!(grants(&ev), vec![g(c, "k"), g(d, "k")]);
    // D was granted: its wait deadline no longer fires.
    assert!(fx.advance_to(50).is_empty());
}

#[test]
fn a_cancelled_head_lets_the_requests_behind_it_in() {
    let mut fx = Fx::new(1);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, "pool", sem(2, 1));
    fx.queued(b, "pool", sem(2, 2));
    fx.queued(c, "pool", sem(2, 1));
    let mut events = Vec::new();
    assert!(fx.table.cancel(b, b"pool", fx.now, &mut events));
    assert_eq!(grants(&events), vec![g(c, "pool")]);
}

#[test]
fn a_lease_ending_at_the_same_moment_as_a_wait_is_processed_first() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, "k", X.ttl(50));
    fx.queued(b, "k", X.wait(50));
    // Both are due at 50: the lease first, which grants B, whose wait then has nothing to do.
    let ev = fx.advance_to(50);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(matches!(ev[0], Event::Expired { session, .. } if session == a));
    assert_eq!(grants(&ev), vec![g(b, "k")]);
}

// ---------------------------------------------------------------------------------------
// Sessions and key lifetime
// ---------------------------------------------------------------------------------------

#[test]
fn closing_a_session_cancels_its_requests_and_releases_its_holds() {
    let mut fx = Fx::new(4);
    let (a, b, c, d) = (fx.session(), fx.session(), fx.session(), fx.session());
    fx.granted(a, "x", X.reentrant());
    fx.granted(a, "x", X.reentrant());
    fx.granted(a, "y", S);
    fx.granted(b, "z", X);
    fx.queued(a, "z", X);
    fx.queued(c, "x", X);
    fx.queued(d, "y", X);
    fx.queued(c, "z", X);

    let ev = fx.close(a);
    // Every reentrant level of x goes at once; y's exclusive waiter gets in; A leaves z's
    // queue.
    let mut got = grants(&ev);
    got.sort();
    assert_eq!(got, vec![g(c, "x"), g(d, "y")]);
    assert_eq!(ev.len(), 2);
    assert_eq!(fx.holders("z"), vec![(b, Mode::Exclusive)]);
    assert_eq!(fx.waiters("z"), vec![c]);
    for key in ["x", "y", "z"] {
        let info = fx.table.inspect(key.as_bytes(), fx.now).expect("in use");
        assert!(info.holders.iter().all(|h| h.session != a));
        assert!(info.waiters.iter().all(|w| w.session != a));
    }
    // Closing it again does nothing.
    assert!(fx.close(a).is_empty());
}

#[test]
fn an_idle_key_disappears() {
    let mut fx = Fx::new(2);
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, "k", X);
    assert!(fx.table.inspect(b"k", fx.now).is_some());
    fx.release(a, "k");
    assert_eq!(fx.table.inspect(b"k", fx.now), None);
    assert!(fx.table.keys(|_| true, 10).is_empty());

    // After a cancel, a timeout and an expiry too.
    fx.granted(a, "k", X.ttl(100));
    fx.queued(b, "k", X.wait(10));
    let mut events = Vec::new();
    assert!(fx.table.cancel(b, b"k", fx.now, &mut events));
    fx.queued(b, "k", X.wait(10));
    assert_eq!(fx.advance_to(10).len(), 1);
    assert_eq!(fx.waiters("k"), Vec::<SessionId>::new());
    assert_eq!(fx.advance_to(100).len(), 1);
    assert_eq!(fx.table.inspect(b"k", fx.now), None);
    assert_eq!(fx.table.stats().keys, 0);
    assert_eq!(fx.table.next_deadline(), None);
}

#[test]
fn a_key_keeps_its_kind_while_it_exists() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, "k", S);
    assert_eq!(
        fx.acquire(b, "k", sem(2, 1)),
        AcquireOutcome::WrongType {
            current: Kind::Lock
        }
    );
    fx.granted(a, "pool", sem(2, 1));
    let current = Kind::Semaphore { limit: 2 };
    assert_eq!(
        fx.acquire(b, "pool", X),
        AcquireOutcome::WrongType { current }
    );
    assert_eq!(
        fx.acquire(b, "pool", S.wait(0)),
        AcquireOutcome::WrongType { current }
    );
    assert_eq!(
        fx.acquire(b, "pool", sem(3, 1)),
        AcquireOutcome::WrongType { current }
    );
    // Even the holder asking in another kind: WRONGTYPE comes before DEADLOCK.
    assert_eq!(
        fx.acquire(a, "pool", sem(3, 1)),
        AcquireOutcome::WrongType { current }
    );
    // Once gone, the key can come back as anything.
    fx.release(a, "pool");
    fx.granted(b, "pool", X);
    assert_eq!(
        fx.table.inspect(b"pool", fx.now).expect("held").kind,
        Kind::Lock
    );
}

// ---------------------------------------------------------------------------------------
// Fencing tokens
// ---------------------------------------------------------------------------------------

#[test]
fn tokens_increase_per_key_and_are_never_reused_across_shards() {
    let shards = 8;
    let mut fx = Fx::new(shards);
    let a = fx.session();
    let keys = keys_in_distinct_shards(3, shards);
    let mut all = BTreeSet::new();
    for key in &keys {
        let mut last = 0;
        for _ in 0..3 {
            let t = fx.granted(a, key, X);
            fx.release(a, key);
            // Shard i of n issues i+1, i+1+n, ...: a key that is gone and back still
            // gets a larger token.
            assert_eq!(
                (t - 1) % shards as u64,
                shard_of(key.as_bytes(), shards) as u64
            );
            assert!(t > last);
            assert!(all.insert(t));
            last = t;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deadlocks
// ---------------------------------------------------------------------------------------

#[test]
fn two_sessions_across_shards_deadlock() {
    let mut fx = Fx::new(8);
    let k = keys_in_distinct_shards(2, 8);
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, &k[0], X);
    fx.granted(b, &k[1], X);
    fx.queued(a, &k[1], X);
    let got = fx.acquire(b, &k[0], X);
    assert_eq!(
        got,
        AcquireOutcome::Deadlock(Cycle {
            sessions: vec![b, a],
            keys: vec![Key::from(k[0].as_str()), Key::from(k[1].as_str())],
        })
    );
    // The refused request left nothing behind.
    assert!(fx.waiters(&k[0]).is_empty());
    // Once A's wait is over, B may wait.
    let mut events = Vec::new();
    assert!(fx.table.cancel(a, k[1].as_bytes(), fx.now, &mut events));
    fx.queued(b, &k[0], X);
}

#[test]
fn three_sessions_across_shards_deadlock() {
    let mut fx = Fx::new(8);
    let k = keys_in_distinct_shards(3, 8);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, &k[0], X);
    fx.granted(b, &k[1], X);
    fx.granted(c, &k[2], S);
    fx.queued(a, &k[1], X);
    fx.queued(b, &k[2], X);
    // C asking SHARED on k0 held EXCLUSIVE by A: C -> A -> B -> C.
    let got = fx.acquire(c, &k[0], S);
    let AcquireOutcome::Deadlock(cycle) = got else {
        panic!("expected a deadlock, got {got:?}");
    };
    assert_eq!(cycle.sessions, vec![c, a, b]);
    let keys: Vec<String> = cycle.keys.iter().map(|k| k.to_string()).collect();
    assert_eq!(keys, vec![k[0].clone(), k[1].clone(), k[2].clone()]);

    // A fourth session is not part of it and may wait.
    let d = fx.session();
    fx.queued(d, &k[0], S);
}

#[test]
fn waiting_on_a_shared_holder_with_shared_is_no_deadlock() {
    let mut fx = Fx::new(8);
    let k = keys_in_distinct_shards(2, 8);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    // B holds k0 SHARED, A holds k1 and waits for k0 exclusively.
    fx.granted(b, &k[0], S);
    fx.granted(a, &k[1], X);
    fx.queued(a, &k[0], X);
    // B asking for k1 closes B -> A -> B.
    assert!(matches!(
        fx.acquire(b, &k[1], X),
        AcquireOutcome::Deadlock(_)
    ));
    // C holding nothing anybody waits for may wait on k1.
    fx.queued(c, &k[1], S);
}

#[test]
fn the_issue_example_shared_behind_a_queued_exclusive_closes_a_cycle() {
    // A holds SHARED on "a"; B queued EXCLUSIVE on "a"; A waits on "c" held by C; C asks
    // SHARED on "a": it would queue behind B, which waits for A, which waits for C.
    let mut fx = Fx::new(8);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, "a", S);
    fx.queued(b, "a", X);
    fx.granted(c, "c", X);
    fx.queued(a, "c", X);
    let got = fx.acquire(c, "a", S);
    let AcquireOutcome::Deadlock(cycle) = got else {
        panic!("expected a deadlock, got {got:?}");
    };
    assert_eq!(cycle.sessions, vec![c, b, a]);
    assert_eq!(
        cycle.keys,
        vec![Key::from("a"), Key::from("a"), Key::from("c")]
    );
    // With B gone, C's SHARED request is compatible and nothing is queued: granted.
    let mut events = Vec::new();
    assert!(fx.table.cancel(b, b"a", fx.now, &mut events));
    fx.granted(c, "a", S);
}

#[test]
fn a_semaphore_waiter_waits_for_every_holder() {
    // The conservative rule: on a semaphore every pair conflicts. A and B hold one permit
    // each of three; C holds "k", which B waits for. C asking two permits must wait, and
    // is taken to wait for both holders, B among them: C -> B -> C, although A's release
    // alone would let C in.
    let mut fx = Fx::new(8);
    let k = keys_in_distinct_shards(2, 8);
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(a, &k[0], sem(3, 1));
    fx.granted(b, &k[0], sem(3, 1));
    fx.granted(c, &k[1], X);
    fx.queued(b, &k[1], X);
    let got = fx.acquire(c, &k[0], sem(3, 2));
    assert_eq!(
        got,
        AcquireOutcome::Deadlock(Cycle {
            sessions: vec![c, b],
            keys: vec![Key::from(k[0].as_str()), Key::from(k[1].as_str())],
        })
    );
    // One permit still fits at once: no wait, no deadlock.
    fx.granted(c, &k[0], sem(3, 1));
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

#[test]
fn waiters_per_key_are_limited() {
    let mut fx = Fx::with_limits(
        1,
        Limits {
            max_waiters_per_key: 2,
            ..Limits::default()
        },
    );
    let s: Vec<SessionId> = (0..4).map(|_| fx.session()).collect();
    fx.granted(s[0], "k", X);
    fx.queued(s[1], "k", X);
    fx.queued(s[2], "k", X);
    assert_eq!(
        fx.acquire(s[3], "k", X),
        AcquireOutcome::Limit(LimitKind::WaitersPerKey)
    );
    // A try-lock is refused as a try-lock first.
    assert_eq!(fx.acquire(s[3], "k", X.wait(0)), AcquireOutcome::WouldBlock);
    assert_eq!(fx.waiters("k"), vec![s[1], s[2]]);
    fx.release(s[0], "k");
    fx.queued(s[3], "k", X);
}

#[test]
fn keys_are_limited() {
    let mut fx = Fx::with_limits(
        4,
        Limits {
            max_keys: 2,
            ..Limits::default()
        },
    );
    let (a, b) = (fx.session(), fx.session());
    fx.granted(a, "one", X);
    fx.granted(a, "two", S);
    assert_eq!(
        fx.acquire(a, "three", X),
        AcquireOutcome::Limit(LimitKind::Keys)
    );
    // Existing keys still work.
    fx.granted(b, "two", S);
    fx.queued(b, "one", X);
    fx.release(a, "two");
    fx.release(b, "two");
    fx.granted(a, "three", X);
    assert_eq!(
        fx.acquire(a, "four", X.wait(0)),
        AcquireOutcome::Limit(LimitKind::Keys)
    );
}

#[test]
fn holds_and_queued_requests_per_session_are_limited() {
    let mut fx = Fx::with_limits(
        4,
        Limits {
            max_holds_per_session: 2,
            ..Limits::default()
        },
    );
    let (a, b, c) = (fx.session(), fx.session(), fx.session());
    fx.granted(b, "busy", X);
    fx.granted(a, "one", X.reentrant());
    fx.queued(a, "busy", X);
    assert_eq!(fx.table.session_holds(a), 2);
    let limit = AcquireOutcome::Limit(LimitKind::HoldsPerSession);
    // A new key, an existing free key, a try-lock that would succeed, a wait: all refused.
    assert_eq!(fx.acquire(a, "two", X), limit);
    fx.granted(c, "three", S);
    assert_eq!(fx.acquire(a, "three", S), limit);
    assert_eq!(fx.acquire(a, "three", S.wait(0)), limit);
    assert_eq!(fx.acquire(a, "three", X), limit);
    // A reentrant re-acquire adds no hold; the key's kind and the session's own requests
    // are still told first.
    fx.granted(a, "one", X.reentrant());
    assert_eq!(fx.table.session_holds(a), 2);
    assert_eq!(
        fx.acquire(a, "three", sem(2, 1)),
        AcquireOutcome::WrongType {
            current: Kind::Lock
        }
    );
    assert!(matches!(
        fx.acquire(a, "busy", X),
        AcquireOutcome::Deadlock(_)
    ));
    // Other sessions are not affected, and a grant from the queue does not change the count.
    fx.granted(c, "two", X);
    let ev = fx.release(b, "busy");
    assert_eq!(grants(&ev), vec![g(a, "busy")]);
    assert_eq!(fx.table.session_holds(a), 2);
    fx.release(a, "busy");
    assert_eq!(fx.table.session_holds(a), 1);
    fx.granted(a, "four", X);
    fx.close(a);
    assert_eq!(fx.table.session_holds(a), 0);
}

/// An ACQUIRE sent again with the id of the request that made the session's hold (a
/// client retrying after a lost connection or a failover) is answered with that hold and
/// changes nothing: no self-DEADLOCK, no second reentrant level. A request with another
/// id is a new request, and text mode's id 0 (no client part) never matches.
#[test]
fn the_same_request_again_is_answered_with_its_hold() {
    let mut fx = Fx::new(1);
    let (a, b) = (fx.session(), fx.session());
    let ask = |fx: &mut Fx, s, key: &str, id: u64, r: Req| {
        let req = AcquireRequest {
            id: RequestId(id),
            mode: r.mode,
            reentrant: r.reentrant,
            ttl_ms: r.ttl,
            wait_ms: r.wait,
            policy: Default::default(),
        };
        fx.table.acquire(s, key.as_bytes(), &req, fx.now)
    };
    // Granted at once: the retry (same client part, another server counter) gets the token.
    let t = match ask(&mut fx, a, "k", (1 << 32) | 7, X) {
        AcquireOutcome::Granted(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ask(&mut fx, a, "k", (2 << 32) | 7, X),
        AcquireOutcome::Granted(t)
    );
    // Another request of the same session on the key it holds: the contract's DEADLOCK.
    assert!(matches!(
        ask(&mut fx, a, "k", (3 << 32) | 8, X),
        AcquireOutcome::Deadlock(_)
    ));

    // Granted from the queue: the retry finds the hold the queued request became.
    assert_eq!(
        ask(&mut fx, b, "k", (4 << 32) | 9, X),
        AcquireOutcome::Queued
    );
    let ev = fx.release(a, "k");
    let tb = token_of(&ev, b);
    assert_eq!(
        ask(&mut fx, b, "k", (5 << 32) | 9, X),
        AcquireOutcome::Granted(FencingToken(tb))
    );
    assert_eq!(fx.holders("k"), vec![(b, Mode::Exclusive)]);
    fx.release(b, "k");
    assert!(
        fx.holders("k").is_empty(),
        "one RELEASE ends the hold: no second level"
    );

    // Reentrant: a retry adds no level; a new request does, and becomes the one retried.
    let r = X.reentrant();
    let t = match ask(&mut fx, a, "r", (6 << 32) | 10, r) {
        AcquireOutcome::Granted(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ask(&mut fx, a, "r", (7 << 32) | 10, r),
        AcquireOutcome::Granted(t)
    );
    assert_eq!(
        ask(&mut fx, a, "r", (8 << 32) | 11, r),
        AcquireOutcome::Granted(t)
    );
    assert_eq!(
        ask(&mut fx, a, "r", (9 << 32) | 11, r),
        AcquireOutcome::Granted(t)
    );
    fx.release(a, "r");
    assert_eq!(
        fx.holders("r"),
        vec![(a, Mode::Exclusive)],
        "two levels, not four"
    );
    fx.release(a, "r");
    assert!(fx.holders("r").is_empty());

    // Text mode (client part 0) keeps the contract: a second ACQUIRE is a DEADLOCK.
    fx.granted(a, "t", X);
    assert!(matches!(
        ask(&mut fx, a, "t", 10 << 32, X),
        AcquireOutcome::Deadlock(_)
    ));
}
