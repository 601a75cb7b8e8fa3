//! Atomic multi-locks (MACQUIRE / MRELEASE) over real sockets: all keys or none, queued
//! as one request on every key, never a deadlock between multi-locks that list keys in
//! opposite orders, never a partial hold, cancelled everywhere by WAIT and by the end of
//! the session; the same through the binary protocol and the client library; replayed
//! from the log after a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use redis::Value;
use turnstile::Config;

/// Joins a task, failing the test if it does not end within 30 s.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("task ends within 30 s")
        .expect("task does not panic")
}

fn tokens(v: &Value) -> Vec<i64> {
    items(v).iter().map(int).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_every_key_at_once_with_one_token_each() {
    let server = Server::start().await;
    let mut con = server.redis().await;
    let me = client_id(&mut con).await;
    let v: Value = ok(
        &mut con,
        &[
            "MACQUIRE",
            "3",
            "a",
            "EXCLUSIVE",
            "b",
            "SHARED",
            "s",
            "SEMAPHORE",
            "3",
            "PERMITS",
            "2",
            "TTL",
            "5000",
        ],
    )
    .await;
    let t = tokens(&v);
    assert_eq!(t.len(), 3);
    for (key, token) in ["a", "b", "s"].iter().zip(&t) {
        let info = inspect(&mut con, key).await.expect("held");
        assert_eq!(info.holders.len(), 1, "{key}");
        assert_eq!(info.holders[0].session, me);
        assert_eq!(info.holders[0].token, *token);
    }
    let s = inspect(&mut con, "s").await.unwrap();
    assert_eq!(s.holders[0].permits, 2);
    assert_eq!(s.holders[0].mode, "semaphore");
    // Each hold is an ordinary hold: released one by one or together.
    let one: i64 = ok(&mut con, &["RELEASE", "b"]).await;
    assert_eq!(one, 1);
    let two: i64 = ok(&mut con, &["MRELEASE", "a", "b", "s"]).await;
    assert_eq!(two, 2);
    let (code, _) = err(&mut con, &["MRELEASE", "a", "b"]).await;
    assert_eq!(code, "NOTHELD");
    for key in ["a", "b", "s"] {
        assert!(inspect(&mut con, key).await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_change_nothing() {
    let server = Server::start_with(Config {
        max_multi_keys: 3,
        ..Config::default()
    })
    .await;
    let mut con = server.redis().await;
    let mut other = server.redis().await;
    acquire(&mut other, "held", &[]).await;
    acquire(&mut other, "sem", &["SEMAPHORE", "2"]).await;
    // A try-lock that cannot take every key takes none.
    let v: Value = ok(
        &mut con,
        &[
            "MACQUIRE",
            "2",
            "free",
            "EXCLUSIVE",
            "held",
            "EXCLUSIVE",
            "WAIT",
            "0",
        ],
    )
    .await;
    assert_eq!(v, Value::Nil);
    assert!(inspect(&mut con, "free").await.is_none());
    // Another kind: WRONGTYPE naming the key; nothing taken.
    let (code, text) = err(
        &mut con,
        &["MACQUIRE", "2", "free", "EXCLUSIVE", "sem", "EXCLUSIVE"],
    )
    .await;
    assert_eq!(code, "WRONGTYPE");
    assert!(text.contains("'sem'"), "{text}");
    assert!(inspect(&mut con, "free").await.is_none());
    // A key twice: waiting on itself.
    let (code, _) = err(&mut con, &["MACQUIRE", "2", "x", "SHARED", "x", "SHARED"]).await;
    assert_eq!(code, "DEADLOCK");
    // Limits and syntax.
    let (code, _) = err(
        &mut con,
        &[
            "MACQUIRE", "4", "a", "SHARED", "b", "SHARED", "c", "SHARED", "d", "SHARED",
        ],
    )
    .await;
    assert_eq!(code, "LIMIT");
    let (code, _) = err(&mut con, &["MRELEASE", "a", "b", "c", "d"]).await;
    assert_eq!(code, "LIMIT");
    for bad in [
        &["MACQUIRE"][..],
        &["MACQUIRE", "1", "a"],
        &["MACQUIRE", "1", "a", "BOGUS"],
        &["MACQUIRE", "two", "a", "SHARED"],
        &["MACQUIRE", "1", "a", "SHARED", "TTL", "0"],
        &["MRELEASE"],
    ] {
        let (code, text) = err(&mut con, bad).await;
        assert_eq!(code, "ERR", "{bad:?}: {text}");
    }
    assert!(inspect(&mut con, "x").await.is_none());
    assert!(inspect(&mut con, "a").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_on_every_key_and_is_granted_all_together() {
    let server = Server::start().await;
    let mut a_holder = server.redis().await;
    let mut b_holder = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut a_holder, "qa", &[]).await;
    acquire(&mut b_holder, "qb", &[]).await;
    let mut multi = server.redis().await;
    let me = client_id(&mut multi).await;
    let task = tokio::spawn(async move {
        let v: Value = ok(
            &mut multi,
            &[
                "MACQUIRE",
                "3",
                "qa",
                "EXCLUSIVE",
                "qb",
                "EXCLUSIVE",
                "qc",
                "EXCLUSIVE",
            ],
        )
        .await;
        (tokens(&v), multi)
    });
    // Queued on all three keys, qc included although nobody holds it: it keeps its place
    // there, so a later request for qc waits behind it (no barging).
    for key in ["qa", "qb", "qc"] {
        wait_for_waiters(&mut obs, key, 1).await;
    }
    let mut late = server.redis().await;
    let v: Value = ok(&mut late, &["ACQUIRE", "qc", "WAIT", "0"]).await;
    assert_eq!(
        v,
        Value::Nil,
        "qc is taken by the queued multi-lock's place"
    );
    // One key freed: still nothing held by the multi-lock.
    let _: i64 = ok(&mut a_holder, &["RELEASE", "qa"]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for key in ["qa", "qb", "qc"] {
        let info = inspect(&mut obs, key).await.expect("queued");
        assert!(
            info.holders.iter().all(|h| h.session != me),
            "partial hold on {key}: {info:?}"
        );
        assert_eq!(info.waiter_sessions(), vec![me], "{key}");
    }
    // The last key freed: all three granted at once.
    let _: i64 = ok(&mut b_holder, &["RELEASE", "qb"]).await;
    let (t, mut multi) = join(task).await;
    assert_eq!(t.len(), 3);
    for (key, token) in ["qa", "qb", "qc"].iter().zip(&t) {
        let info = inspect(&mut obs, key).await.expect("held");
        assert_eq!(info.holder_sessions(), vec![me]);
        assert_eq!(info.holders[0].token, *token);
        assert!(info.waiters.is_empty());
    }
    let n: i64 = ok(&mut multi, &["MRELEASE", "qa", "qb", "qc"]).await;
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_and_disconnect_leave_every_queue() {
    let server = Server::start().await;
    let mut holder = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut holder, "w1", &[]).await;
    // WAIT runs out: nil, and the places on w2 and w3 are gone with it.
    let mut con = server.redis().await;
    let started = Instant::now();
    let v: Value = ok(
        &mut con,
        &[
            "MACQUIRE",
            "3",
            "w1",
            "SHARED",
            "w2",
            "EXCLUSIVE",
            "w3",
            "EXCLUSIVE",
            "WAIT",
            "200",
        ],
    )
    .await;
    assert_eq!(v, Value::Nil);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(inspect(&mut obs, "w2").await.is_none());
    assert!(inspect(&mut obs, "w3").await.is_none());
    assert!(inspect(&mut obs, "w1").await.unwrap().waiters.is_empty());
    // The session ends while queued: gone from every queue.
    let url = server.url();
    let task = tokio::spawn(async move {
        let mut con = connect_url(&url).await;
        let _: redis::RedisResult<Value> =
            c(&["MACQUIRE", "2", "w1", "EXCLUSIVE", "w4", "EXCLUSIVE"])
                .query_async(&mut con)
                .await;
    });
    wait_for_waiters(&mut obs, "w4", 1).await;
    task.abort();
    let _ = task.await;
    eventually("the dropped session's multi-lock leaves w4", || {
        let url = server.url();
        async move {
            let mut o = connect_url(&url).await;
            inspect(&mut o, "w4").await.is_none()
        }
    })
    .await;
    assert!(inspect(&mut obs, "w1").await.unwrap().waiters.is_empty());
    // And w4 is free for anyone again.
    assert!(acquire(&mut obs, "w4", &["WAIT", "0"]).await > 0);
}

/// (key, token, start, end) of one hold, as its holder saw it.
type Seen = (String, i64, Instant, Instant);

/// Two kinds of multi-lock listing the same keys in opposite orders, plus single
/// ACQUIREs, all contending: every request completes (never a deadlock, no DEADLOCK
/// refusal between them), every holder holds all its keys (never a partial hold), and
/// no two clients ever hold one key at once (checked with the fencing tokens and the
/// intervals the clients saw).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_orders_under_contention_never_deadlock_or_hold_partly() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 40;
    let server = Server::start().await;
    let history: Arc<Mutex<Vec<Seen>>> = Default::default();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut con = server.redis().await;
        let mut obs = server.redis().await;
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            let me = client_id(&mut con).await;
            for round in 0..ROUNDS {
                let keys: Vec<&str> = match (c + round) % 3 {
                    0 => vec!["k1", "k2", "k3"],
                    1 => vec!["k3", "k2", "k1"],
                    _ => vec![["k1", "k2", "k3"][round % 3]],
                };
                let start;
                let got: Vec<i64> = if keys.len() == 1 {
                    let t = acquire(&mut con, keys[0], &["TTL", "10000"]).await;
                    start = Instant::now();
                    vec![t]
                } else {
                    let mut words = vec!["MACQUIRE", "3"];
                    for k in &keys {
                        words.push(k);
                        words.push("EXCLUSIVE");
                    }
                    words.extend(["TTL", "10000"]);
                    let v: Value = ok(&mut con, &words).await;
                    start = Instant::now();
                    tokens(&v)
                };
                assert_eq!(got.len(), keys.len());
                // Every key of the request is held by this session, with its token.
                for (k, t) in keys.iter().zip(&got) {
                    let info = inspect(&mut obs, k).await.expect("held");
                    assert_eq!(info.holder_sessions(), vec![me], "{k} round {round}");
                    assert_eq!(info.holders[0].token, *t);
                }
                tokio::task::yield_now().await;
                let end = Instant::now();
                if keys.len() == 1 {
                    let _: i64 = ok(&mut con, &["RELEASE", keys[0]]).await;
                } else {
                    let n: i64 = ok(&mut con, &["MRELEASE", "k1", "k2", "k3"]).await;
                    assert_eq!(n, 3);
                }
                let mut h = history.lock().unwrap();
                for (k, t) in keys.iter().zip(&got) {
                    h.push((k.to_string(), *t, start, end));
                }
            }
        }));
    }
    for t in tasks {
        join(t).await;
    }
    let history = history.lock().unwrap();
    let mut per_key: BTreeMap<&str, Vec<(i64, Instant, Instant)>> = BTreeMap::new();
    for (k, t, s, e) in history.iter() {
        per_key.entry(k).or_default().push((*t, *s, *e));
    }
    for (key, mut holds) in per_key {
        holds.sort_by_key(|h| h.0);
        for w in holds.windows(2) {
            assert!(w[0].0 < w[1].0, "{key}: token issued twice");
            // A larger token's hold began after the smaller one's holder had seen its
            // hold end (it released before the next grant could happen).
            assert!(
                w[1].1 >= w[0].1,
                "{key}: token {} held before token {}",
                w[1].0,
                w[0].0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_protocol_through_the_client_library() {
    let server = Server::start().await;
    let client = turnstile_client::Client::connect(server.addr.to_string())
        .await
        .expect("connect");
    let guards = client
        .lock_many()
        .exclusive("b1")
        .shared("b2")
        .semaphore("b3", 4, 2)
        .ttl(Duration::from_secs(5))
        .acquire()
        .await
        .expect("granted");
    assert_eq!(guards.len(), 3);
    assert_eq!(guards[0].key(), b"b1");
    assert!(guards.windows(2).all(|w| w[0].token() != w[1].token()));
    // A try-lock of a held key takes nothing.
    let other = turnstile_client::Client::connect(server.addr.to_string())
        .await
        .expect("connect");
    let busy = other
        .lock_many()
        .exclusive("free-one")
        .exclusive("b1")
        .try_acquire()
        .await
        .expect("answered");
    assert!(busy.is_none());
    assert!(other.inspect("free-one").await.unwrap().is_none());
    // Queued, then granted with one token per key when the holder lets go.
    let waiting = tokio::spawn({
        let other = other.clone();
        async move {
            other
                .lock_many()
                .exclusive("b2")
                .exclusive("b1")
                .wait(Duration::from_secs(10))
                .acquire()
                .await
        }
    });
    let mut redis = server.redis().await;
    wait_for_waiters(&mut redis, "b1", 1).await;
    wait_for_waiters(&mut redis, "b2", 1).await;
    for g in guards {
        g.release().await.expect("released");
    }
    let got = join(waiting).await.expect("granted after the release");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].key(), b"b2");
    let info = inspect(&mut redis, "b1").await.unwrap();
    assert_eq!(info.holders[0].token, got[1].token() as i64);
    let keys: Vec<&[u8]> = got.iter().map(|g| g.key()).collect();
    let n = other.release_many(&keys).await.expect("released");
    assert_eq!(n, 2);
    for g in got {
        std::mem::forget(g);
    }
    assert!(inspect(&mut redis, "b1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_multi_lock_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("turnstile-multi-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || Config {
        data_dir: dir.clone(),
        in_memory: false,
        // The binary session outlives the restart; text sessions do not.
        ..Config::default()
    };
    let server = Server::start_with(config()).await;
    let addr = server.addr;
    let holder = turnstile_client::Client::builder()
        .addrs(addr.to_string())
        .session_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    let held = holder
        .lock("r1")
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .expect("granted");
    let waiter = turnstile_client::Client::builder()
        .addrs(addr.to_string())
        .session_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    let queued = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            waiter
                .lock_many()
                .exclusive("r1")
                .exclusive("r2")
                .acquire()
                .await
        }
    });
    let mut redis = server.redis().await;
    wait_for_waiters(&mut redis, "r2", 1).await;
    drop(redis);
    server.stop().await;
    // The multi-lock's places were logged: after the restart both keys still show it.
    let server = Server::start_at(config(), addr).await;
    let mut redis = server.redis().await;
    let r1 = inspect(&mut redis, "r1").await.expect("r1 restored");
    let r2 = inspect(&mut redis, "r2").await.expect("r2 restored");
    assert_eq!(r1.holders.len(), 1);
    assert_eq!(r1.waiters.len(), 1);
    assert_eq!(r2.waiters.len(), 1);
    assert_eq!(r1.waiters[0].session, r2.waiters[0].session);
    drop(queued);
    drop(held);
    waiter.close().await.ok();
    holder.close().await.ok();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
