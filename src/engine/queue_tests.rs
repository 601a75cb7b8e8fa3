//! The queue policy of issue 9, rule by rule: conversion, lock-delay, priorities.

use super::*;

fn req(id: u64, mode: Mode, wait_ms: Option<u64>, policy: QueuePolicy) -> AcquireRequest {
    AcquireRequest {
        id: RequestId(id),
        mode,
        reentrant: false,
        ttl_ms: 1_000,
        wait_ms,
        policy,
    }
}

fn plain(id: u64, mode: Mode) -> AcquireRequest {
    req(id, mode, None, QueuePolicy::default())
}

fn token(o: AcquireOutcome) -> FencingToken {
    match o {
        AcquireOutcome::Granted(t) => t,
        other => panic!("not granted: {other:?}"),
    }
}

#[test]
fn upgrade_waits_only_for_the_other_holders_and_gets_a_new_token() {
    let t = LockTable::new(1, Limits::default(), 0);
    let (a, b, c) = (t.open_session(), t.open_session(), t.open_session());
    let ta = token(t.acquire(a, b"k", &plain(1, Mode::Shared), 0));
    token(t.acquire(b, b"k", &plain(2, Mode::Shared), 0));
    // c queues EXCLUSIVE; a's upgrade goes ahead of it.
    assert_eq!(
        t.acquire(c, b"k", &plain(3, Mode::Exclusive), 0),
        AcquireOutcome::Queued
    );
    let mut ev = Vec::new();
    let up = t.convert(a, b"k", Mode::Exclusive, RequestId(4), None, 0, &mut ev);
    assert_eq!(up, Ok(AcquireOutcome::Queued));
    let info = t.inspect(b"k", 0).unwrap();
    assert_eq!(info.waiters[0].session, a, "the upgrade is at the head");
    // Try-upgrade by b: it would wait for a, which waits for b.
    assert!(matches!(
        t.convert(b, b"k", Mode::Exclusive, RequestId(5), None, 0, &mut ev),
        Ok(AcquireOutcome::Deadlock(cycle)) if cycle.sessions == vec![b, a]
    ));
    t.release(b, b"k", 1, &mut ev).unwrap();
    let Some(Event::Granted {
        session,
        request,
        token: up,
        ..
    }) = ev.first().cloned()
    else {
        panic!("no grant: {ev:?}")
    };
    assert_eq!((session, request), (a, RequestId(4)));
    assert!(up > ta, "a new token on upgrade");
    let info = t.inspect(b"k", 1).unwrap();
    assert_eq!(info.holders[0].mode, Mode::Exclusive);
    assert_eq!(info.waiters.len(), 1, "c still waits");
    // A downgrade keeps the token; c still conflicts with a shared hold.
    ev.clear();
    assert_eq!(
        t.convert(a, b"k", Mode::Shared, RequestId(6), None, 2, &mut ev),
        Ok(AcquireOutcome::Granted(up))
    );
    assert!(ev.is_empty());
    assert_eq!(
        t.convert(c, b"k", Mode::Shared, RequestId(7), None, 2, &mut ev),
        Err(NotHeld)
    );
}

#[test]
fn downgrade_lets_shared_waiters_in() {
    let t = LockTable::new(2, Limits::default(), 0);
    let (a, b, c) = (t.open_session(), t.open_session(), t.open_session());
    let ta = token(t.acquire(a, b"k", &plain(1, Mode::Exclusive), 0));
    assert_eq!(
        t.acquire(b, b"k", &plain(2, Mode::Shared), 0),
        AcquireOutcome::Queued
    );
    assert_eq!(
        t.acquire(c, b"k", &plain(3, Mode::Shared), 0),
        AcquireOutcome::Queued
    );
    let mut ev = Vec::new();
    assert_eq!(
        t.convert(a, b"k", Mode::Shared, RequestId(4), None, 1, &mut ev),
        Ok(AcquireOutcome::Granted(ta))
    );
    let granted: Vec<SessionId> = ev.iter().map(Event::session).collect();
    assert_eq!(granted, vec![b, c]);
    // An upgrade that runs out leaves the shared hold.
    ev.clear();
    assert_eq!(
        t.convert(a, b"k", Mode::Exclusive, RequestId(5), Some(10), 1, &mut ev),
        Ok(AcquireOutcome::Queued)
    );
    t.advance(11, &mut ev);
    assert!(matches!(&ev[..], [Event::TimedOut { session, .. }] if *session == a));
    let info = t.inspect(b"k", 11).unwrap();
    assert_eq!(info.holders.len(), 3);
    assert!(info.waiters.is_empty());
    assert_eq!(t.session_holds(a), 1);
}

#[test]
fn lock_delay_after_expiry_but_not_after_release() {
    let t = LockTable::new(1, Limits::default(), 0);
    let (a, b) = (t.open_session(), t.open_session());
    let delayed = QueuePolicy {
        lock_delay_ms: 500,
        ..QueuePolicy::default()
    };
    let mut r = req(1, Mode::Exclusive, None, delayed);
    r.ttl_ms = 100;
    token(t.acquire(a, b"k", &r, 0));
    assert_eq!(
        t.acquire(b, b"k", &plain(2, Mode::Exclusive), 10),
        AcquireOutcome::Queued
    );
    let mut ev = Vec::new();
    t.advance(100, &mut ev);
    assert!(matches!(&ev[..], [Event::Expired { .. }]), "{ev:?}");
    // During the delay: nobody is granted, a try-lock would block, the key exists.
    assert_eq!(
        t.acquire(
            a,
            b"k",
            &req(3, Mode::Exclusive, Some(0), QueuePolicy::default()),
            200
        ),
        AcquireOutcome::WouldBlock
    );
    assert!(t.due(599).is_empty());
    assert_eq!(
        t.due(600),
        vec![Due::Delay {
            key: Key::from("k")
        }]
    );
    // As a cluster follower replays it: the end comes as a logged decision.
    ev.clear();
    assert!(t.end_lock_delay(b"k", 600, &mut ev));
    assert!(
        matches!(&ev[..], [Event::DelayEnded { .. }, Event::Granted { session, .. }] if *session == b)
    );
    // A clean release is never delayed, also with a lock-delay on the hold.
    ev.clear();
    t.release(b, b"k", 700, &mut ev).unwrap();
    assert!(t.inspect(b"k", 700).is_none());
    token(t.acquire(a, b"k", &r, 700));
    t.release(a, b"k", 701, &mut ev).unwrap();
    assert!(t.inspect(b"k", 701).is_none());
    // Session loss delays; with no waiter the key still exists, empty, until it ends.
    token(t.acquire(a, b"k", &r, 800));
    t.close_session(a, 801, &mut ev);
    let info = t
        .inspect(b"k", 801)
        .expect("the key exists during the delay");
    assert!(info.holders.is_empty() && info.waiters.is_empty());
    ev.clear();
    t.advance(1_301, &mut ev);
    assert!(t.inspect(b"k", 1_301).is_none());
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn priorities_pass_only_for_a_bounded_time() {
    let t = LockTable::new(1, Limits::default(), 0);
    let s: Vec<SessionId> = (0..4).map(|_| t.open_session()).collect();
    let high = QueuePolicy {
        priority: 2,
        aging_ms: 10,
        ..QueuePolicy::default()
    };
    token(t.acquire(s[0], b"k", &plain(1, Mode::Exclusive), 0));
    assert_eq!(
        t.acquire(s[1], b"k", &plain(2, Mode::Exclusive), 0),
        AcquireOutcome::Queued
    );
    // 15 ms later, priority 2 (worth 20 ms) passes the plain waiter...
    assert_eq!(
        t.acquire(s[2], b"k", &req(3, Mode::Exclusive, None, high), 15),
        AcquireOutcome::Queued
    );
    // ...25 ms later it does not.
    assert_eq!(
        t.acquire(s[3], b"k", &req(4, Mode::Exclusive, None, high), 25),
        AcquireOutcome::Queued
    );
    let order: Vec<SessionId> = t
        .inspect(b"k", 25)
        .unwrap()
        .waiters
        .iter()
        .map(|w| w.session)
        .collect();
    assert_eq!(order, vec![s[2], s[1], s[3]]);
}

#[test]
fn cancel_and_session_end_remove_a_pending_upgrade() {
    let t = LockTable::new(1, Limits::default(), 0);
    let (a, b) = (t.open_session(), t.open_session());
    token(t.acquire(a, b"k", &plain(1, Mode::Shared), 0));
    token(t.acquire(b, b"k", &plain(2, Mode::Shared), 0));
    let mut ev = Vec::new();
    assert_eq!(
        t.convert(a, b"k", Mode::Exclusive, RequestId(3), None, 0, &mut ev),
        Ok(AcquireOutcome::Queued)
    );
    assert!(t.cancel(a, b"k", 1, &mut ev));
    assert!(ev.is_empty());
    let info = t.inspect(b"k", 1).unwrap();
    assert!(info.waiters.is_empty());
    assert_eq!(info.holders.len(), 2, "the shared hold stays");
    assert_eq!(t.session_holds(a), 1);
    // Again, then the session ends: the upgrade and the hold go, nothing is granted to a.
    assert_eq!(
        t.convert(a, b"k", Mode::Exclusive, RequestId(4), None, 1, &mut ev),
        Ok(AcquireOutcome::Queued)
    );
    t.close_session(a, 2, &mut ev);
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(t.holders(b"k").len(), 1);
    assert_eq!(t.session_holds(a), 0);
    // b's own upgrade is now immediate.
    assert!(matches!(
        t.convert(b, b"k", Mode::Exclusive, RequestId(5), Some(0), 3, &mut ev),
        Ok(AcquireOutcome::Granted(_))
    ));
}
