//! Issue 9's queue policy over real sockets: lock conversion with a real Redis client
//! (upgrade ahead of the queue with a new token, downgrade keeping its token, two
//! upgraders refused as a deadlock, an upgrade whose WAIT runs out keeping the shared
//! hold), lock-delay after a holder's connection is dropped (and none after a clean
//! release), aging that lets a low-priority waiter through a stream of high-priority
//! ones, and the binary protocol's CONVERT and ACQUIRE options.
//!
//! Timing assertions are one-sided: a lock-delay of 400 ms must keep the key at least
//! ~400 ms; nothing asserts a tight upper bound.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use redis::Value;
use turnstile::protocol::binary as bin;
use turnstile::Config;

/// Joins a task, failing the test if it does not end within 10 s.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("task ends within 10 s")
        .expect("task does not panic")
}

/// Runs `words` on a connection of its own in a task (it may block).
fn spawn_cmd(
    server: &Server,
    words: &[&str],
) -> tokio::task::JoinHandle<(redis::aio::MultiplexedConnection, redis::RedisResult<Value>)> {
    let url = server.url();
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    tokio::spawn(async move {
        let mut con = connect_url(&url).await;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let r = q::<Value>(&mut con, &c(&words)).await;
        (con, r)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_goes_ahead_of_the_queue_and_downgrade_keeps_the_token() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let mut look = server.redis().await;
    let shared = acquire(&mut a, "k", &["SHARED"]).await;
    acquire(&mut b, "k", &["SHARED"]).await;
    let a_id = client_id(&mut a).await;
    // c queues EXCLUSIVE behind the two readers.
    let c = spawn_cmd(&server, &["ACQUIRE", "k", "EXCLUSIVE"]);
    wait_for_waiters(&mut look, "k", 1).await;
    // a upgrades: it waits for b only, ahead of c.
    let url = server.url();
    let upgrade = tokio::spawn(async move {
        let r: i64 = ok(&mut a, &["CONVERT", "k", "EXCLUSIVE"]).await;
        (a, r)
    });
    wait_for_waiters(&mut look, "k", 2).await;
    let info = inspect(&mut look, "k").await.unwrap();
    assert_eq!(info.waiters[0].session, a_id, "the upgrade is at the head");
    assert_eq!(info.waiters[0].mode, "exclusive");
    let _: i64 = ok(&mut b, &["RELEASE", "k"]).await;
    let (mut a, upgraded) = join(upgrade).await;
    assert!(upgraded > shared, "a new token: {upgraded} after {shared}");
    let info = inspect(&mut look, "k").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![a_id]);
    assert_eq!(info.holders[0].mode, "exclusive");
    assert_eq!(info.waiters.len(), 1, "c still waits");
    // Downgrade: at once, same token; c (EXCLUSIVE) still waits for the reader.
    let down: i64 = ok(&mut a, &["CONVERT", "k", "SHARED"]).await;
    assert_eq!(down, upgraded);
    assert_eq!(inspect(&mut look, "k").await.unwrap().waiters.len(), 1);
    // a leaves: c gets it.
    let _: i64 = ok(&mut a, &["RELEASE", "k"]).await;
    let (_, got) = join(c).await;
    assert!(int(&got.unwrap()) > upgraded);
    // Errors: not held, a semaphore, bad syntax.
    let mut d = connect_url(&url).await;
    assert_eq!(err(&mut d, &["CONVERT", "k", "SHARED"]).await.0, "NOTHELD");
    acquire(&mut d, "sem", &["SEMAPHORE", "2"]).await;
    assert_eq!(
        err(&mut d, &["CONVERT", "sem", "EXCLUSIVE"]).await.0,
        "WRONGTYPE"
    );
    assert_eq!(err(&mut d, &["CONVERT", "k", "BOTH"]).await.0, "ERR");
    assert_eq!(err(&mut d, &["CONVERT", "k"]).await.0, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downgrade_lets_waiting_readers_in() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut look = server.redis().await;
    let t = acquire(&mut a, "k", &[]).await;
    let r1 = spawn_cmd(&server, &["ACQUIRE", "k", "SHARED"]);
    let r2 = spawn_cmd(&server, &["ACQUIRE", "k", "SHARED"]);
    wait_for_waiters(&mut look, "k", 2).await;
    let down: i64 = ok(&mut a, &["CONVERT", "k", "SHARED"]).await;
    assert_eq!(down, t, "a downgrade keeps the token");
    let mut readers = Vec::new();
    for r in [r1, r2] {
        let (con, got) = join(r).await;
        assert!(int(&got.unwrap()) > t);
        readers.push(con);
    }
    assert_eq!(inspect(&mut look, "k").await.unwrap().holders.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_upgraders_are_a_deadlock() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let mut look = server.redis().await;
    acquire(&mut a, "k", &["SHARED"]).await;
    acquire(&mut b, "k", &["SHARED"]).await;
    let (a_id, b_id) = (client_id(&mut a).await, client_id(&mut b).await);
    let first = tokio::spawn(async move {
        let r: i64 = ok(&mut a, &["CONVERT", "k", "EXCLUSIVE"]).await;
        r
    });
    wait_for_waiters(&mut look, "k", 1).await;
    let (code, text) = err(&mut b, &["CONVERT", "k", "EXCLUSIVE"]).await;
    assert_eq!(code, "DEADLOCK");
    assert!(
        text.contains(&format!("session {b_id} waits for 'k'"))
            && text.contains(&format!("session {a_id} waits for 'k'")),
        "the cycle is named: {text}"
    );
    // b gives way: a's upgrade goes through.
    let _: i64 = ok(&mut b, &["RELEASE", "k"]).await;
    assert!(join(first).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_that_runs_out_keeps_the_shared_hold() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let t = acquire(&mut a, "k", &["SHARED"]).await;
    acquire(&mut b, "k", &["SHARED"]).await;
    let v: Value = ok(&mut a, &["CONVERT", "k", "EXCLUSIVE", "WAIT", "0"]).await;
    assert_eq!(v, Value::Nil);
    let v: Value = ok(&mut a, &["CONVERT", "k", "EXCLUSIVE", "WAIT", "100"]).await;
    assert_eq!(v, Value::Nil);
    let info = inspect(&mut b, "k").await.unwrap();
    assert_eq!(info.holders.len(), 2);
    assert!(info.holders.iter().all(|h| h.mode == "shared"));
    assert!(info.waiters.is_empty());
    // Still a's hold, same token: a reentrant shared acquire returns it.
    assert_eq!(acquire(&mut a, "k", &["SHARED", "REENTRANT"]).await, t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_delay_after_a_dropped_holder() {
    let server = Server::start_with(Config {
        lock_delay_ms: 400,
        ..Config::default()
    })
    .await;
    let mut look = server.redis().await;
    // The holder's connection is dropped (as a killed process's would be).
    let mut holder = server.raw().await;
    let token = holder.cmd(&["ACQUIRE", "k"]).await.int();
    let waiter = spawn_cmd(&server, &["ACQUIRE", "k"]);
    wait_for_waiters(&mut look, "k", 1).await;
    let dropped = Instant::now();
    drop(holder);
    let (_, got) = join(waiter).await;
    let waited = dropped.elapsed();
    assert!(int(&got.unwrap()) > token);
    assert!(
        waited >= Duration::from_millis(380),
        "granted {waited:?} after the holder was gone"
    );
    // A clean release is never delayed.
    let mut a = server.redis().await;
    acquire(&mut a, "clean", &["LOCKDELAY", "5000"]).await;
    let _: i64 = ok(&mut a, &["RELEASE", "clean"]).await;
    let v: Value = ok(&mut look, &["ACQUIRE", "clean", "WAIT", "0"]).await;
    assert!(matches!(v, Value::Int(_)), "granted at once: {v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_request_lock_delay_keeps_an_idle_key() {
    let server = Server::start().await;
    let mut look = server.redis().await;
    let mut holder = server.raw().await;
    let r = holder.cmd(&["ACQUIRE", "k", "LOCKDELAY", "1500"]).await;
    assert!(r.int() > 0);
    drop(holder);
    // The key exists during the delay, with no holders and no waiters; a try-lock fails.
    eventually("the hold ended", || {
        let mut look = look.clone();
        async move {
            inspect(&mut look, "k")
                .await
                .is_some_and(|i| i.holders.is_empty())
        }
    })
    .await;
    let since = Instant::now();
    let info = inspect(&mut look, "k").await.expect("the key exists");
    assert!(info.holders.is_empty() && info.waiters.is_empty());
    let keys: Vec<String> = ok(&mut look, &["LOCKS"]).await;
    assert_eq!(keys, vec!["k".to_string()]);
    let v: Value = ok(&mut look, &["ACQUIRE", "k", "WAIT", "0"]).await;
    assert_eq!(v, Value::Nil);
    // A plain ACQUIRE queues and is granted when the delay ends.
    let got = acquire(&mut look, "k", &[]).await;
    assert!(got > 0);
    assert!(since.elapsed() < Duration::from_secs(5));
    // Option errors.
    assert_eq!(
        err(&mut look, &["ACQUIRE", "x", "LOCKDELAY", "99999999999"])
            .await
            .0,
        "LIMIT"
    );
    assert_eq!(
        err(&mut look, &["ACQUIRE", "x", "PRIORITY", "1001"])
            .await
            .0,
        "ERR"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_higher_priority_goes_first() {
    let server = Server::start().await;
    let mut holder = server.redis().await;
    let mut look = server.redis().await;
    acquire(&mut holder, "k", &[]).await;
    let low = spawn_cmd(&server, &["ACQUIRE", "k", "EXCLUSIVE"]);
    wait_for_waiters(&mut look, "k", 1).await;
    // Within the default aging (1 s a level) priority 5 passes the plain waiter.
    let high = spawn_cmd(&server, &["ACQUIRE", "k", "SHARED", "PRIORITY", "5"]);
    wait_for_waiters(&mut look, "k", 2).await;
    let info = inspect(&mut look, "k").await.unwrap();
    let modes: Vec<&str> = info.waiters.iter().map(|w| w.mode.as_str()).collect();
    assert_eq!(
        modes,
        ["shared", "exclusive"],
        "the later, higher-priority one is first"
    );
    let _: i64 = ok(&mut holder, &["RELEASE", "k"]).await;
    let (mut h, got) = join(high).await;
    assert!(int(&got.unwrap()) > 0);
    let _: i64 = ok(&mut h, &["RELEASE", "k"]).await;
    assert!(int(&join(low).await.1.unwrap()) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aging_lets_a_low_priority_waiter_through_a_stream_of_high_ones() {
    let server = Server::start_with(Config {
        priority_aging_ms: 20,
        ..Config::default()
    })
    .await;
    let mut holder = server.redis().await;
    let mut look = server.redis().await;
    acquire(&mut holder, "k", &[]).await;
    let low = spawn_cmd(&server, &["ACQUIRE", "k"]);
    wait_for_waiters(&mut look, "k", 1).await;
    // Four workers take the key with priority 10 (worth 200 ms of waiting) over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let url = server.url();
        let stop = stop.clone();
        let granted = granted.clone();
        workers.push(tokio::spawn(async move {
            let mut con = connect_url(&url).await;
            let mut grants = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let _: i64 = ok(&mut con, &["ACQUIRE", "k", "PRIORITY", "10"]).await;
                granted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
                let _: i64 = ok(&mut con, &["RELEASE", "k"]).await;
                grants += 1;
            }
            grants
        }));
    }
    eventually("the stream queued", || {
        let mut look = look.clone();
        async move {
            inspect(&mut look, "k")
                .await
                .is_some_and(|i| i.waiters.len() >= 3)
        }
    })
    .await;
    let _: i64 = ok(&mut holder, &["RELEASE", "k"]).await;
    // The low-priority waiter is granted while the stream goes on.
    let (mut l, got) = join(low).await;
    assert!(int(&got.unwrap()) > 0);
    assert!(
        granted.load(Ordering::Relaxed) > 0,
        "later high-priority requests went first"
    );
    let _: i64 = ok(&mut l, &["RELEASE", "k"]).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += join(w).await;
    }
    assert!(total > 0, "the high-priority stream ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_convert_priority_and_lock_delay() {
    let server = Server::start().await;
    let mut a = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    let shared = |key: &'static [u8]| acq(key, bin::Mode::Shared, 10_000, None);
    let bin::Response::Granted { token: t1 } = a.call(1, shared(b"k")).await else {
        panic!("a not granted")
    };
    assert!(matches!(
        b.call_holder(1, shared(b"k")).await,
        bin::Response::Granted { .. }
    ));
    let convert = |to, wait_ms| {
        bin::Request::Convert(bin::Convert {
            key: b"k",
            to,
            wait_ms,
        })
    };
    // WAIT 0: BUSY; then a waiting upgrade: QUEUED, PUSH_GRANTED once b is gone.
    assert_eq!(
        a.call_holder(2, convert(bin::ModeKind::Exclusive, Some(0)))
            .await,
        bin::Response::Busy
    );
    assert_eq!(
        a.call_holder(3, convert(bin::ModeKind::Exclusive, None))
            .await,
        bin::Response::Queued
    );
    assert!(matches!(
        b.call_holder(2, bin::Request::Release { key: b"k" }).await,
        bin::Response::Ok
    ));
    let t2 = loop {
        match a.push().await {
            (3, bin::Push::Granted { token }) => break token,
            (_, bin::Push::Waiting { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(t2 > t1);
    assert_eq!(
        a.call_holder(4, convert(bin::ModeKind::Shared, None)).await,
        bin::Response::Granted { token: t2 }
    );
    assert!(matches!(
        b.call(3, convert(bin::ModeKind::Shared, None)).await,
        bin::Response::Error(e) if e.code == bin::ErrorCode::NotHeld
    ));
    // ACQUIRE with a lock-delay and a priority: the session ends, the key waits.
    let mut c = Bin::connect(server.addr).await;
    let mut req = acq(b"d", bin::Mode::Exclusive, 10_000, None);
    if let bin::Request::Acquire(x) = &mut req {
        x.lock_delay_ms = 1_000;
        x.priority = 3;
    }
    assert!(matches!(
        c.call(1, req).await,
        bin::Response::Granted { .. }
    ));
    assert_eq!(
        c.call(2, bin::Request::Bye { end_session: true }).await,
        bin::Response::Ok
    );
    assert_eq!(
        b.call(4, acq(b"d", bin::Mode::Exclusive, 10_000, Some(0)))
            .await,
        bin::Response::Busy
    );
    assert!(matches!(
        b.call(5, acq(b"d", bin::Mode::Exclusive, 10_000, Some(5_000)))
            .await,
        bin::Response::Queued
    ));
    assert!(matches!(b.push().await, (5, bin::Push::Granted { .. })));
    // Out of range: PRIORITY above 1000.
    let mut bad = acq(b"e", bin::Mode::Exclusive, 10_000, None);
    if let bin::Request::Acquire(x) = &mut bad {
        x.priority = 1001;
    }
    assert!(matches!(
        b.call(6, bad).await,
        bin::Response::Error(e) if e.code == bin::ErrorCode::Err
    ));
}
