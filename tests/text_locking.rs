//! The locking semantics of text mode over real sockets: strict FIFO under contention,
//! shared readers granted together, a semaphore head blocking the rest, try-locks and WAIT
//! timeouts, lease expiry and renewal, deadlocks across two and three connections, holds
//! released and requests cancelled on disconnect, pipelining (also behind a blocking
//! ACQUIRE), and many concurrent connections never holding one key at once.
//!
//! Timing assertions are one-sided and generous: a lease of 200 ms must not end a hold
//! before ~150 ms and must end it within seconds; nothing asserts a tight upper bound.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use redis::Value;

/// Joins a task, failing the test if it does not end within 10 s.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("task ends within 10 s")
        .expect("task does not panic")
}

/// No reply comes within `ms` (the connection is parked).
async fn silent(raw: &mut Raw, ms: u64) {
    if let Some(r) = raw.reply_within(Duration::from_millis(ms)).await {
        panic!("expected no reply yet, got {r:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Queue order
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_order_under_contention() {
    const N: usize = 8;
    let server = Server::start().await;
    let mut holder = server.redis().await;
    let mut obs = server.redis().await;
    let first = acquire(&mut holder, "fifo", &[]).await;

    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
    for i in 0..N {
        let mut con = server.redis().await;
        ids.push(client_id(&mut con).await);
        let grants = grants.clone();
        tasks.push(tokio::spawn(async move {
            let token = acquire(&mut con, "fifo", &[]).await;
            grants.lock().unwrap().push((i, token));
            let one: i64 = ok(&mut con, &["RELEASE", "fifo"]).await;
            assert_eq!(one, 1);
        }));
        // Queue them one at a time, so the queue order is known.
        wait_for_waiters(&mut obs, "fifo", i + 1).await;
    }
    let info = inspect(&mut obs, "fifo").await.unwrap();
    assert_eq!(info.waiter_sessions(), ids, "INSPECT shows the queue order");

    let one: i64 = ok(&mut holder, &["RELEASE", "fifo"]).await;
    assert_eq!(one, 1);
    for t in tasks {
        join(t).await;
    }
    let grants = grants.lock().unwrap().clone();
    let order: Vec<usize> = grants.iter().map(|g| g.0).collect();
    assert_eq!(order, (0..N).collect::<Vec<_>>(), "granted in queue order");
    let mut last = first;
    for (i, token) in grants {
        assert!(token > last, "waiter {i}: token {token} after {last}");
        last = token;
    }
    wait_for_free(&mut obs, "fifo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_readers_are_granted_together_and_a_shared_behind_an_exclusive_waits() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut a, "rw", &[]).await;

    let mut queued = Vec::new();
    for (i, mode) in ["SHARED", "SHARED", "EXCLUSIVE", "SHARED"]
        .iter()
        .enumerate()
    {
        let mut r = server.raw().await;
        let id = r.cmd(&["CLIENT", "ID"]).await.int();
        r.send_words(&["ACQUIRE", "rw", mode]).await;
        wait_for_waiters(&mut obs, "rw", i + 1).await;
        queued.push((r, id));
    }
    let [(mut b, id_b), (mut c, id_c), (mut d, id_d), (mut e, id_e)]: [(Raw, i64); 4] =
        queued.try_into().ok().unwrap();

    let _: i64 = ok(&mut a, &["RELEASE", "rw"]).await;
    let tb = b.reply().await.int();
    let tc = c.reply().await.int();
    assert!(tc > tb, "both readers granted, in queue order");
    silent(&mut d, 100).await;
    silent(&mut e, 10).await;
    let info = inspect(&mut obs, "rw").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![id_b, id_c]);
    assert!(info.holders.iter().all(|h| h.mode == "shared"));
    assert_eq!(info.waiter_sessions(), vec![id_d, id_e]);

    // No barging: a new reader behind the queued writer does not get in.
    let v: Option<i64> = ok(&mut obs, &["ACQUIRE", "rw", "SHARED", "WAIT", "0"]).await;
    assert_eq!(v, None);

    assert_eq!(b.cmd(&["RELEASE", "rw"]).await.int(), 1);
    silent(&mut d, 50).await;
    assert_eq!(c.cmd(&["RELEASE", "rw"]).await.int(), 1);
    let td = d.reply().await.int();
    assert!(td > tc);
    silent(&mut e, 100).await;
    assert_eq!(d.cmd(&["RELEASE", "rw"]).await.int(), 1);
    let te = e.reply().await.int();
    assert!(te > td);
    let info = inspect(&mut obs, "rw").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![id_e]);
    assert!(info.waiters.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_head_that_does_not_fit_blocks_the_rest() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut a, "sem", &["SEMAPHORE", "3", "PERMITS", "2"]).await;

    let mut b = server.raw().await;
    b.send_words(&["ACQUIRE", "sem", "SEMAPHORE", "3", "PERMITS", "2"])
        .await;
    wait_for_waiters(&mut obs, "sem", 1).await;
    // One permit is free, but the head needs two: the one-permit request waits behind it.
    let mut c = server.raw().await;
    c.send_words(&["ACQUIRE", "sem", "SEMAPHORE", "3"]).await;
    wait_for_waiters(&mut obs, "sem", 2).await;
    silent(&mut c, 150).await;
    let v: Option<i64> = ok(&mut obs, &["ACQUIRE", "sem", "SEMAPHORE", "3", "WAIT", "0"]).await;
    assert_eq!(v, None, "no barging past the queue");

    let _: i64 = ok(&mut a, &["RELEASE", "sem"]).await;
    let tb = b.reply().await.int();
    let tc = c.reply().await.int();
    assert!(tc > tb);
    let info = inspect(&mut obs, "sem").await.unwrap();
    let permits: Vec<i64> = info.holders.iter().map(|h| h.permits).collect();
    assert_eq!(permits, vec![2, 1]);
    assert!(info.waiters.is_empty());
}

// ---------------------------------------------------------------------------------------
// Try-lock, WAIT
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_and_wait_timeout_return_nil() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    acquire(&mut a, "k", &[]).await;

    let v: Value = ok(&mut b, &["ACQUIRE", "k", "WAIT", "0"]).await;
    assert_eq!(v, Value::Nil);
    assert!(inspect(&mut b, "k").await.unwrap().waiters.is_empty());

    let start = Instant::now();
    let v: Value = ok(&mut b, &["ACQUIRE", "k", "WAIT", "300"]).await;
    let took = start.elapsed();
    assert_eq!(v, Value::Nil);
    assert!(
        took >= Duration::from_millis(250),
        "WAIT 300 gave up after {took:?}"
    );
    assert!(took < Duration::from_secs(4), "WAIT 300 took {took:?}");
    assert!(
        inspect(&mut b, "k").await.unwrap().waiters.is_empty(),
        "a timed-out request leaves the queue"
    );
    // The connection goes on normally after a timeout.
    let pong: String = ok(&mut b, &["PING"]).await;
    assert_eq!(pong, "PONG");

    // A WAIT that is long enough is granted when the holder lets go.
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let t: Option<i64> = ok(&mut b, &["ACQUIRE", "k", "WAIT", "5000"]).await;
        (t, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: i64 = ok(&mut a, &["RELEASE", "k"]).await;
    let (t, took) = join(task).await;
    assert!(t.is_some(), "granted within its WAIT");
    assert!(took < Duration::from_secs(4));
}

// ---------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_frees_the_lock_to_a_waiter() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let ta = acquire(&mut a, "lease", &["TTL", "200"]).await;
    let start = Instant::now();
    let task = tokio::spawn(async move {
        let t = acquire(&mut b, "lease", &[]).await;
        (t, start.elapsed(), b)
    });
    let (tb, took, mut b) = join(task).await;
    assert!(tb > ta, "a new token for the new holder");
    assert!(
        took >= Duration::from_millis(150),
        "granted {took:?} into a 200 ms lease"
    );
    assert!(took < Duration::from_secs(4), "expiry took {took:?}");
    let id_b = client_id(&mut b).await;
    let info = inspect(&mut a, "lease").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![id_b]);

    // The old holder lost it.
    let (code, _) = err(&mut a, &["RELEASE", "lease"]).await;
    assert_eq!(code, "NOTHELD");
    let (code, _) = err(&mut a, &["RENEW", "lease"]).await;
    assert_eq!(code, "NOTHELD");

    // Without a waiter the key simply disappears.
    acquire(&mut a, "short", &["TTL", "100"]).await;
    wait_for_free(&mut b, "short").await;
    let (code, _) = err(&mut a, &["RELEASE", "short"]).await;
    assert_eq!(code, "NOTHELD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_keeps_a_lease_alive_past_its_ttl() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let id_a = client_id(&mut a).await;
    let token = acquire(&mut a, "r", &["TTL", "300"]).await;
    let start = Instant::now();
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left: i64 = ok(&mut a, &["RENEW", "r"]).await;
        assert!((1..=300).contains(&left), "{left}");
    }
    assert!(start.elapsed() >= Duration::from_millis(600));
    let info = inspect(&mut b, "r").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![id_a]);
    assert_eq!(info.holders[0].token, token, "renewal keeps the token");
    let v: Option<i64> = ok(&mut b, &["ACQUIRE", "r", "WAIT", "0"]).await;
    assert_eq!(v, None);

    // Renewed with a longer TTL, then left alone: it ends.
    let left: i64 = ok(&mut a, &["RENEW", "r", "TTL", "400"]).await;
    assert!((1..=400).contains(&left));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        inspect(&mut b, "r").await.is_some(),
        "still inside the lease"
    );
    wait_for_free(&mut b, "r").await;
    let (code, _) = err(&mut a, &["RENEW", "r"]).await;
    assert_eq!(code, "NOTHELD", "renewing after expiry");
}

// ---------------------------------------------------------------------------------------
// Deadlocks
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_between_two_connections() {
    let server = Server::start().await;
    let mut obs = server.redis().await;
    let mut a = server.raw().await;
    let mut b = server.redis().await;
    let id_a = a.cmd(&["CLIENT", "ID"]).await.int();
    let id_b = client_id(&mut b).await;
    a.cmd(&["ACQUIRE", "dl-a"]).await.int();
    acquire(&mut b, "dl-b", &[]).await;

    a.send_words(&["ACQUIRE", "dl-b"]).await;
    wait_for_waiters(&mut obs, "dl-b", 1).await;
    let (code, text) = err(&mut b, &["ACQUIRE", "dl-a"]).await;
    assert_eq!(code, "DEADLOCK", "{text}");
    for needle in ["dl-a", "dl-b", &id_a.to_string(), &id_b.to_string()] {
        assert!(text.contains(needle), "the message names {needle}: {text}");
    }
    // Refused with nothing changed: A still waits, B still holds, and B's try-lock or
    // timed wait is refused the same way.
    let info = inspect(&mut obs, "dl-b").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![id_b]);
    assert_eq!(info.waiter_sessions(), vec![id_a]);
    let (code, _) = err(&mut b, &["ACQUIRE", "dl-a", "WAIT", "1000"]).await;
    assert_eq!(code, "DEADLOCK");
    assert!(inspect(&mut obs, "dl-a").await.unwrap().waiters.is_empty());

    // B gives up its key: A is granted.
    let _: i64 = ok(&mut b, &["RELEASE", "dl-b"]).await;
    assert!(a.reply().await.int() > 0);
    // Now B can wait for A without a cycle.
    let v: Option<i64> = ok(&mut b, &["ACQUIRE", "dl-a", "WAIT", "50"]).await;
    assert_eq!(v, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_across_three_connections() {
    let server = Server::start().await;
    let mut obs = server.redis().await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    let mut c = server.redis().await;
    let ids = [
        a.cmd(&["CLIENT", "ID"]).await.int(),
        b.cmd(&["CLIENT", "ID"]).await.int(),
        client_id(&mut c).await,
    ];
    a.cmd(&["ACQUIRE", "three-a"]).await.int();
    b.cmd(&["ACQUIRE", "three-b"]).await.int();
    acquire(&mut c, "three-c", &[]).await;

    a.send_words(&["ACQUIRE", "three-b"]).await;
    wait_for_waiters(&mut obs, "three-b", 1).await;
    b.send_words(&["ACQUIRE", "three-c"]).await;
    wait_for_waiters(&mut obs, "three-c", 1).await;

    let (code, text) = err(&mut c, &["ACQUIRE", "three-a"]).await;
    assert_eq!(code, "DEADLOCK", "{text}");
    for k in ["three-a", "three-b", "three-c"] {
        assert!(text.contains(k), "the cycle names {k}: {text}");
    }
    for id in ids {
        assert!(
            text.contains(&format!("session {id}")),
            "the cycle names session {id}: {text}"
        );
    }
    // Shared mode closes the cycle as well (C's reader would wait for A's writer).
    let (code, _) = err(&mut c, &["ACQUIRE", "three-a", "SHARED"]).await;
    assert_eq!(code, "DEADLOCK");

    // Breaking the cycle anywhere lets the chain unwind.
    let _: i64 = ok(&mut c, &["RELEASE", "three-c"]).await;
    assert!(b.reply().await.int() > 0);
    assert_eq!(b.cmd(&["RELEASE", "three-b"]).await.int(), 1);
    assert!(a.reply().await.int() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_deadlock_without_reentrant() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let id = client_id(&mut a).await;
    acquire(&mut a, "self", &[]).await;
    let (code, text) = err(&mut a, &["ACQUIRE", "self"]).await;
    assert_eq!(code, "DEADLOCK");
    assert!(
        text.contains("self") && text.contains(&id.to_string()),
        "{text}"
    );
    let (code, _) = err(&mut a, &["ACQUIRE", "self", "WAIT", "0"]).await;
    assert_eq!(code, "DEADLOCK", "even a try-lock of one's own key");
    acquire(&mut a, "sem", &["SEMAPHORE", "5"]).await;
    let (code, _) = err(&mut a, &["ACQUIRE", "sem", "SEMAPHORE", "5"]).await;
    assert_eq!(code, "DEADLOCK", "a session holds a key at most once");
    let info = inspect(&mut a, "self").await.unwrap();
    assert_eq!(info.holders[0].count, 1, "nothing changed");
}

// ---------------------------------------------------------------------------------------
// Disconnect
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_releases_holds_and_cancels_the_queued_request() {
    let server = Server::start().await;
    let mut obs = server.redis().await;
    let mut other = server.redis().await;
    let id_other = client_id(&mut other).await;

    let mut a = server.raw().await;
    let id_a = a.cmd(&["CLIENT", "ID"]).await.int();
    a.cmd(&["ACQUIRE", "held-1"]).await.int();
    a.cmd(&["ACQUIRE", "held-2", "SEMAPHORE", "4", "PERMITS", "2"])
        .await
        .int();
    a.cmd(&["ACQUIRE", "held-3", "SHARED", "REENTRANT"])
        .await
        .int();
    a.cmd(&["ACQUIRE", "held-3", "SHARED", "REENTRANT"])
        .await
        .int();
    acquire(&mut other, "busy", &[]).await;
    a.send_words(&["ACQUIRE", "busy"]).await;
    wait_for_waiters(&mut obs, "busy", 1).await;
    assert_eq!(
        inspect(&mut obs, "busy").await.unwrap().waiter_sessions(),
        vec![id_a]
    );

    // Someone waits for A's key.
    let mut w = server.redis().await;
    let waiter = tokio::spawn(async move { acquire(&mut w, "held-1", &[]).await });
    wait_for_waiters(&mut obs, "held-1", 1).await;

    drop(a);
    let t = join(waiter).await;
    assert!(t > 0, "the waiter got A's key");
    wait_for_free(&mut obs, "held-2").await;
    wait_for_free(&mut obs, "held-3").await;
    wait_for_waiters(&mut obs, "busy", 0).await;
    let info = inspect(&mut obs, "busy").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![id_other]);
    // When the holder of "busy" lets go, nobody is granted: A's request is gone.
    let _: i64 = ok(&mut other, &["RELEASE", "busy"]).await;
    assert!(inspect(&mut obs, "busy").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_redis_crate_connection_releases_its_holds() {
    let server = Server::start().await;
    let mut obs = server.redis().await;
    let mut a = server.redis().await;
    acquire(&mut a, "dropped", &[]).await;
    drop(a);
    wait_for_free(&mut obs, "dropped").await;
}

// ---------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pipelined_commands_get_a_hundred_replies_in_order() {
    let server = Server::start().await;
    let mut raw = server.raw().await;
    let mut batch = Vec::new();
    type Check = Box<dyn Fn(&Reply) -> bool>;
    let mut expect: Vec<Check> = Vec::new();
    for i in 0..100 {
        let key = format!("p{}", i / 4);
        match i % 4 {
            0 => {
                let msg = format!("msg-{i}");
                batch.extend(encode_words(&["PING", &msg]));
                expect.push(Box::new(move |r| *r == Reply::bulk(&msg)));
            }
            1 => {
                batch.extend(encode_words(&["ACQUIRE", &key, "WAIT", "0"]));
                expect.push(Box::new(|r| matches!(r, Reply::Int(t) if *t > 0)));
            }
            2 => {
                batch.extend(encode_words(&["INSPECT", &key]));
                expect.push(Box::new(|r| matches!(r, Reply::Array(a) if a.len() == 10)));
            }
            _ => {
                batch.extend(encode_words(&["RELEASE", &key]));
                expect.push(Box::new(|r| *r == Reply::Int(1)));
            }
        }
    }
    raw.send(&batch).await;
    for (i, check) in expect.iter().enumerate() {
        let r = raw.reply().await;
        assert!(check(&r), "reply {i}: {r:?}");
    }
    silent(&mut raw, 50).await;

    // Inline commands pipelined in one write work the same way.
    let inline: Vec<u8> = (0..100).flat_map(|_| b"PING\r\n".to_vec()).collect();
    raw.send(&inline).await;
    for _ in 0..100 {
        assert_eq!(raw.reply().await, Reply::Simple("PONG".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_behind_a_blocking_acquire_run_after_the_grant() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut a, "pk", &[]).await;

    let mut b = server.raw().await;
    let id_b = b.cmd(&["CLIENT", "ID"]).await.int();
    let mut batch = encode_words(&["PING", "before"]);
    batch.extend(encode_words(&["ACQUIRE", "pk"]));
    batch.extend(encode_words(&["INSPECT", "pk"]));
    batch.extend(encode_words(&["PING", "after"]));
    batch.extend(encode_words(&["RELEASE", "pk"]));
    b.send(&batch).await;
    assert_eq!(
        b.reply().await,
        Reply::bulk("before"),
        "replies before the park go out"
    );
    wait_for_waiters(&mut obs, "pk", 1).await;
    silent(&mut b, 200).await;
    assert_eq!(
        inspect(&mut obs, "pk").await.unwrap().waiter_sessions(),
        vec![id_b]
    );

    let _: i64 = ok(&mut a, &["RELEASE", "pk"]).await;
    let token = b.reply().await.int();
    match b.reply().await {
        Reply::Array(fields) => {
            // holders: [[session, mode, token, ...]]
            let holders = &fields[7];
            let Reply::Array(hs) = holders else {
                panic!("{holders:?}")
            };
            let Reply::Array(h) = &hs[0] else {
                panic!("{hs:?}")
            };
            assert_eq!(h[0], Reply::Int(id_b), "INSPECT ran after the grant");
            assert_eq!(h[2], Reply::Int(token));
        }
        other => panic!("INSPECT: {other:?}"),
    }
    assert_eq!(b.reply().await, Reply::bulk("after"));
    assert_eq!(b.reply().await, Reply::Int(1));
    wait_for_free(&mut obs, "pk").await;

    // Behind a WAIT that runs out, the rest runs after the nil.
    acquire(&mut a, "pk", &[]).await;
    let mut batch = encode_words(&["ACQUIRE", "pk", "WAIT", "150"]);
    batch.extend(encode_words(&["PING", "later"]));
    b.send(&batch).await;
    silent(&mut b, 50).await;
    assert_eq!(b.reply().await, Reply::Nil);
    assert_eq!(b.reply().await, Reply::bulk("later"));
}

// ---------------------------------------------------------------------------------------
// Many connections
// ---------------------------------------------------------------------------------------

/// One critical section as a client saw it.
#[derive(Clone, Copy, Debug)]
struct Section {
    key: usize,
    token: i64,
    start: Instant,
    end: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_two_holders_ever_across_many_connections() {
    const TASKS: usize = 32;
    const ITERS: usize = 50;
    const KEYS: usize = 4;
    let server = Server::start().await;
    let inside: Arc<[AtomicBool; KEYS]> = Arc::new(Default::default());
    let violations = Arc::new(AtomicUsize::new(0));
    let sections = Arc::new(Mutex::new(Vec::with_capacity(TASKS * ITERS)));

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut con = server.redis().await;
        let (inside, violations, sections) = (inside.clone(), violations.clone(), sections.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..ITERS {
                let key = (t * 7 + i) % KEYS;
                let name = format!("many-{key}");
                let token = acquire(&mut con, &name, &["TTL", "10000"]).await;
                let start = Instant::now();
                if inside[key].swap(true, Ordering::SeqCst) {
                    violations.fetch_add(1, Ordering::SeqCst);
                }
                if i % 3 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                let end = Instant::now();
                inside[key].store(false, Ordering::SeqCst);
                sections.lock().unwrap().push(Section {
                    key,
                    token,
                    start,
                    end,
                });
                let one: i64 = ok(&mut con, &["RELEASE", &name]).await;
                assert_eq!(one, 1);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the workers finish within 30 s")
            .expect("no worker panics");
    }
    assert_eq!(violations.load(Ordering::SeqCst), 0, "two holders at once");

    let sections = sections.lock().unwrap().clone();
    assert_eq!(sections.len(), TASKS * ITERS);
    let mut per_key: HashMap<usize, Vec<Section>> = HashMap::new();
    for s in &sections {
        per_key.entry(s.key).or_default().push(*s);
    }
    let mut all_tokens = BTreeSet::new();
    for (key, mut list) in per_key {
        list.sort_by_key(|s| s.start);
        for pair in list.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "key {key}: sections overlap: {pair:?}"
            );
            assert!(
                pair[0].token < pair[1].token,
                "key {key}: tokens not increasing in grant order: {pair:?}"
            );
        }
        for s in list {
            assert!(all_tokens.insert(s.token), "token {} issued twice", s.token);
        }
    }
    let mut obs = server.redis().await;
    for key in 0..KEYS {
        assert!(inspect(&mut obs, &format!("many-{key}")).await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_semaphore_never_has_more_permits_out_than_its_limit() {
    const TASKS: usize = 12;
    const ITERS: usize = 25;
    const LIMIT: usize = 3;
    let server = Server::start().await;
    let out = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut con = server.redis().await;
        let (out, peak) = (out.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let permits = 1 + t % 2;
            let p = permits.to_string();
            for _ in 0..ITERS {
                acquire(&mut con, "pool", &["SEMAPHORE", "3", "PERMITS", &p]).await;
                let now = out.fetch_add(permits, Ordering::SeqCst) + permits;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_micros(300)).await;
                out.fetch_sub(permits, Ordering::SeqCst);
                let one: i64 = ok(&mut con, &["RELEASE", "pool"]).await;
                assert_eq!(one, 1);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the workers finish within 30 s")
            .expect("no worker panics");
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= LIMIT, "{peak} permits out of {LIMIT}");
    assert!(peak >= 2, "the semaphore let holders share ({peak})");
}

// ---------------------------------------------------------------------------------------
// Lease and wait edge cases, session grace, shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_counted_from_the_grant_not_from_the_request() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut a, "from-grant", &[]).await;
    let mut b = server.raw().await;
    b.send_words(&["ACQUIRE", "from-grant", "TTL", "1000"])
        .await;
    wait_for_waiters(&mut obs, "from-grant", 1).await;
    // Queue for longer than most of the lease.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _: i64 = ok(&mut a, &["RELEASE", "from-grant"]).await;
    assert!(b.reply().await.int() > 0);
    let info = inspect(&mut obs, "from-grant").await.unwrap();
    assert!(
        info.holders[0].ttl_ms > 500,
        "a fresh 1000 ms lease at the grant: {:?}",
        info.holders[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_wait_queues_until_granted_and_timers_keep_working() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut a, "huge", &[]).await;
    let mut b = server.raw().await;
    b.send_words(&["ACQUIRE", "huge", "WAIT", &u64::MAX.to_string()])
        .await;
    wait_for_waiters(&mut obs, "huge", 1).await;
    silent(&mut b, 100).await;
    let _: i64 = ok(&mut a, &["RELEASE", "huge"]).await;
    assert!(b.reply().await.int() > 0);
    // The timer driver still runs: a short lease still ends, a short WAIT still runs out.
    acquire(&mut a, "after-huge", &["TTL", "100"]).await;
    wait_for_free(&mut obs, "after-huge").await;
    let v: Option<i64> = ok(&mut a, &["ACQUIRE", "huge", "WAIT", "100"]).await;
    assert_eq!(v, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_session_grace_holds_outlive_the_connection_for_the_grace() {
    let server = Server::start_with(turnstile::Config {
        session_grace_ms: 1000,
        ..turnstile::Config::default()
    })
    .await;
    let mut obs = server.redis().await;
    let mut a = server.raw().await;
    let id_a = a.cmd(&["CLIENT", "ID"]).await.int();
    a.cmd(&["ACQUIRE", "graced"]).await.int();
    let closed = Instant::now();
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = inspect(&mut obs, "graced").await.unwrap();
    assert_eq!(
        info.holder_sessions(),
        vec![id_a],
        "still held inside the grace"
    );
    wait_for_free(&mut obs, "graced").await;
    assert!(
        closed.elapsed() >= Duration::from_millis(800),
        "released after {:?}, before the 1000 ms grace",
        closed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_connection() {
    let server = Server::start().await;
    let mut holder = server.raw().await;
    holder.cmd(&["ACQUIRE", "s"]).await.int();
    let mut parked = server.raw().await;
    parked.send_words(&["ACQUIRE", "s"]).await;
    silent(&mut parked, 50).await;
    server.stop().await;
    holder.closed().await;
    parked.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_deadlocks_after_timeouts_grants_expiries_and_disconnects() {
    let server = Server::start().await;
    let mut obs = server.redis().await;

    // A wait that timed out is no longer an edge.
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    acquire(&mut a, "t-a", &[]).await;
    acquire(&mut b, "t-b", &[]).await;
    let v: Option<i64> = ok(&mut a, &["ACQUIRE", "t-b", "WAIT", "100"]).await;
    assert_eq!(v, None);
    let v: Option<i64> = ok(&mut b, &["ACQUIRE", "t-a", "WAIT", "100"]).await;
    assert_eq!(v, None, "A's wait ended: B may wait for A");

    // A wait that was granted is no longer an edge; the grant is a hold.
    let mut c = server.raw().await;
    let mut d = server.redis().await;
    c.cmd(&["ACQUIRE", "g-c"]).await.int();
    acquire(&mut d, "g-d", &[]).await;
    c.send_words(&["ACQUIRE", "g-d"]).await;
    wait_for_waiters(&mut obs, "g-d", 1).await;
    let _: i64 = ok(&mut d, &["RELEASE", "g-d"]).await;
    assert!(c.reply().await.int() > 0);
    let v: Option<i64> = ok(&mut d, &["ACQUIRE", "g-c", "WAIT", "100"]).await;
    assert_eq!(v, None, "C waits for nobody now");
    // ... and C now holds g-d, so D waiting on g-d while C waits on D's key is a cycle.
    acquire(&mut d, "g-d2", &[]).await;
    c.send_words(&["ACQUIRE", "g-d2"]).await;
    wait_for_waiters(&mut obs, "g-d2", 1).await;
    let (code, _) = err(&mut d, &["ACQUIRE", "g-d"]).await;
    assert_eq!(code, "DEADLOCK");
    let _: i64 = ok(&mut d, &["RELEASE", "g-d2"]).await;
    assert!(c.reply().await.int() > 0);

    // A hold lost to its lease is no longer an edge.
    let mut e = server.redis().await;
    let mut f = server.raw().await;
    acquire(&mut e, "x-e", &["TTL", "200"]).await;
    f.cmd(&["ACQUIRE", "x-f"]).await.int();
    f.send_words(&["ACQUIRE", "x-e"]).await;
    assert!(f.reply().await.int() > 0, "granted when E's lease ran out");
    let v: Option<i64> = ok(&mut e, &["ACQUIRE", "x-f", "WAIT", "100"]).await;
    assert_eq!(v, None, "F waits for nobody");

    // A disconnected session is no longer an edge.
    let mut g = server.raw().await;
    let mut h = server.redis().await;
    g.cmd(&["ACQUIRE", "d-g"]).await.int();
    acquire(&mut h, "d-h", &[]).await;
    g.send_words(&["ACQUIRE", "d-h"]).await;
    wait_for_waiters(&mut obs, "d-h", 1).await;
    drop(g);
    wait_for_free(&mut obs, "d-g").await;
    assert!(acquire(&mut h, "d-g", &["WAIT", "1000"]).await > 0);

    // Readers: a compatible SHARED request does not wait, so it cannot deadlock; an
    // EXCLUSIVE one that would wait for a waiting reader does.
    let mut r = server.raw().await;
    let mut w = server.redis().await;
    r.cmd(&["ACQUIRE", "s-x", "SHARED"]).await.int();
    acquire(&mut w, "s-y", &[]).await;
    r.send_words(&["ACQUIRE", "s-y"]).await;
    wait_for_waiters(&mut obs, "s-y", 1).await;
    assert!(acquire(&mut w, "s-x", &["SHARED"]).await > 0);
    let _: i64 = ok(&mut w, &["RELEASE", "s-x"]).await;
    let (code, _) = err(&mut w, &["ACQUIRE", "s-x", "EXCLUSIVE"]).await;
    assert_eq!(code, "DEADLOCK");
}
