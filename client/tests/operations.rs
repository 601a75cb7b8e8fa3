//! The client against the real server: every operation, typed errors, out-of-order
//! replies on one connection, cancellation by dropping a pending acquire, and the pushes
//! (someone waiting, lease lost).

mod common;

use std::time::Duration;

use common::*;
use turnstile::Config;
use turnstile_client::proto::{Kind, LimitKind, ModeKind};
use turnstile_client::{Client, Error, Lost, SessionEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_lock_and_release() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    within("ping", a.ping()).await.unwrap();
    let g = within(
        "acquire",
        a.lock("x").ttl(Duration::from_secs(10)).acquire(),
    )
    .await
    .unwrap();
    assert!(g.token() > 0);
    assert_eq!(g.key(), b"x");
    assert_eq!(holders(&b, "x").await, [a.session_id()]);
    assert!(within("try", b.lock("x").try_acquire())
        .await
        .unwrap()
        .is_none());
    within("release", g.release()).await.unwrap();
    assert!(holders(&b, "x").await.is_empty());
    let g2 = within("try", b.lock("x").try_acquire())
        .await
        .unwrap()
        .expect("free now");
    drop(g2);
    // Drop releases without blocking.
    eventually("drop released x", || async {
        holders(&b, "x").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_increase_over_grants() {
    let server = Server::start().await;
    let a = server.client().await;
    let mut last = 0;
    for _ in 0..5 {
        let g = within("acquire", a.lock("fence").acquire()).await.unwrap();
        assert!(g.token() > last);
        last = g.token();
        within("release", g.release()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_reentrant_and_semaphore_holds() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let ra = within("shared a", a.lock("rw").shared().acquire())
        .await
        .unwrap();
    let rb = within("shared b", b.lock("rw").shared().acquire())
        .await
        .unwrap();
    assert_eq!(holders(&a, "rw").await.len(), 2);
    assert!(within("writer try", a.lock("rw2").try_acquire())
        .await
        .unwrap()
        .is_some());
    // Reentrant: the same token, two levels.
    let again = within("reentrant", a.lock("rw").shared().reentrant().acquire())
        .await
        .unwrap();
    assert_eq!(again.token(), ra.token());
    let state = within("inspect", a.inspect("rw")).await.unwrap().unwrap();
    let mine = state
        .holders
        .iter()
        .find(|h| h.session == a.session_id())
        .unwrap();
    assert_eq!(mine.count, 2);
    assert_eq!(mine.mode, ModeKind::Shared);
    within("release level", again.release()).await.unwrap();
    within("release level", ra.release()).await.unwrap();
    within("release b", rb.release()).await.unwrap();

    // A semaphore of 3: 2 + 1 fit, one more does not.
    let s1 = within("sem", a.lock("pool").semaphore(3, 2).acquire())
        .await
        .unwrap();
    let s2 = within("sem", b.lock("pool").semaphore(3, 1).acquire())
        .await
        .unwrap();
    assert!(
        within("sem full", b.lock("pool").semaphore(3, 1).try_acquire())
            .await
            .is_err_and(|e| matches!(e, Error::Deadlock { .. })),
        "b already holds the key: waiting on itself"
    );
    let c = server.client().await;
    assert!(
        within("sem full", c.lock("pool").semaphore(3, 1).try_acquire())
            .await
            .unwrap()
            .is_none()
    );
    let state = within("inspect", c.inspect("pool")).await.unwrap().unwrap();
    assert_eq!(state.kind, Kind::Semaphore { limit: 3 });
    drop(s1);
    let s3 = within("sem after drop", c.lock("pool").semaphore(3, 2).acquire())
        .await
        .unwrap();
    drop((s2, s3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_limits_and_typed_errors() {
    let server = Server::start_with(Config {
        max_key_len: 16,
        ..Config::default()
    })
    .await;
    let a = server.client().await;
    let b = server.client().await;
    let _g = within("a", a.lock("busy").acquire()).await.unwrap();
    // WAIT runs out.
    let e = within(
        "wait",
        b.lock("busy").wait(Duration::from_millis(50)).acquire(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Timeout), "{e:?}");
    // WRONGTYPE with the key's kind.
    let e = within("wrongtype", b.lock("busy").semaphore(2, 1).acquire())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::WrongType {
                current: Kind::Lock,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.code().unwrap().name(), "WRONGTYPE");
    // LIMIT for a key over the server's maximum (checked by the client first).
    let e = within("limit", b.lock("x".repeat(17)).acquire())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    let e = within("limit", b.inspect("y".repeat(17)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Limit {
                which: LimitKind::Value,
                ..
            }
        ),
        "{e:?}"
    );
    // ERR for bad semaphore numbers.
    let e = within("err", b.lock("sem").semaphore(2, 3).acquire())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Server { .. }), "{e:?}");
    // DEADLOCK naming the cycle.
    let _h = within("b holds d", b.lock("d").acquire()).await.unwrap();
    let a2 = a.clone();
    let waiting = tokio::spawn(async move { a2.lock("d").acquire().await });
    eventually("a waits for d", || async {
        waiters(&b, "d").await == [a.session_id()]
    })
    .await;
    let e = within("deadlock", b.lock("busy").acquire())
        .await
        .unwrap_err();
    match e {
        Error::Deadlock { cycle, message } => {
            assert_eq!(cycle.len(), 2, "{message}");
            assert_eq!(cycle[0], (b.session_id(), "busy".into()));
            assert_eq!(cycle[1], (a.session_id(), "d".into()));
        }
        other => panic!("{other:?}"),
    }
    waiting.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_locks_and_info() {
    let server = Server::start().await;
    let a = server.client().await;
    let _g1 = within("g1", a.lock("list/1").acquire()).await.unwrap();
    let _g2 = within("g2", a.lock("list/2").acquire()).await.unwrap();
    let _g3 = within("g3", a.lock("other").acquire()).await.unwrap();
    let mut keys = within("locks", a.locks("list/*")).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["list/1", "list/2"]);
    assert_eq!(within("locks", a.locks("*")).await.unwrap().len(), 3);
    assert!(within("inspect", a.inspect("nothing"))
        .await
        .unwrap()
        .is_none());
    let info = within("info", a.info("locks")).await.unwrap();
    assert!(info.contains("holds:3"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_acquire_does_not_hold_up_other_requests() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let g = within("a", a.lock("slow").acquire()).await.unwrap();
    let b2 = b.clone();
    let pending = tokio::spawn(async move { b2.lock("slow").acquire().await });
    eventually("b queued", || async {
        waiters(&a, "slow").await == [b.session_id()]
    })
    .await;
    // Meanwhile the same connection answers everything else.
    for i in 0..20 {
        within("ping", b.ping()).await.unwrap();
        let other = within("other", b.lock(format!("free-{i}")).acquire())
            .await
            .unwrap();
        within("release", other.release()).await.unwrap();
    }
    assert!(!pending.is_finished());
    within("release", g.release()).await.unwrap();
    let got = within("granted", pending).await.unwrap().unwrap();
    assert_eq!(holders(&a, "slow").await, [b.session_id()]);
    drop(got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_on_one_connection() {
    let server = Server::start().await;
    let a = server.client().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{}", i % 20);
            let g = a.lock(&key).reentrant().acquire().await?;
            a.ping().await?;
            g.release().await
        }));
    }
    for t in tasks {
        within("task", t).await.unwrap().unwrap();
    }
    assert!(within("locks", a.locks("*")).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pending_acquire_cancels_it_on_the_server() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let g = within("a", a.lock("cancel-me").acquire()).await.unwrap();
    {
        let fut = b.lock("cancel-me").acquire();
        // Wait until it is queued, then drop it.
        let res = tokio::time::timeout(Duration::from_millis(300), fut).await;
        assert!(res.is_err(), "still queued");
    }
    eventually("the waiter is gone", || async {
        waiters(&a, "cancel-me").await.is_empty()
    })
    .await;
    drop(g);
    eventually("free", || async {
        holders(&a, "cancel-me").await.is_empty()
    })
    .await;
    // Many cancels racing grants: nothing is left held or queued afterwards.
    let g = within("a", a.lock("race").acquire()).await.unwrap();
    let mut futs = Vec::new();
    for _ in 0..20 {
        let b = b.clone();
        futs.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(20), b.lock("race").acquire()).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(g);
    for f in futs {
        within("f", f).await.unwrap();
    }
    eventually("nothing left on race", || async {
        within("inspect", a.inspect("race"))
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_hear_that_someone_waits() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let mut events = a.events();
    let g = within("a", a.lock("handover").acquire()).await.unwrap();
    assert!(!g.has_waiters());
    let b2 = b.clone();
    let pending = tokio::spawn(async move { b2.lock("handover").acquire().await });
    within("guard hears", g.waiting()).await;
    assert!(g.has_waiters());
    match within("event", events.recv()).await {
        Some(SessionEvent::Waiting {
            key,
            session,
            mode,
            permits,
        }) => {
            assert_eq!(&key[..], b"handover");
            assert_eq!(session, b.session_id());
            assert_eq!(mode, ModeKind::Exclusive);
            assert_eq!(permits, 1);
        }
        other => panic!("{other:?}"),
    }
    // Hand over early.
    within("release", g.release()).await.unwrap();
    let _granted = within("b granted", pending).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lost_is_pushed_and_reported_by_the_guard() {
    let server = Server::start().await;
    let a = server.client().await;
    let mut events = a.events();
    let g = within(
        "a",
        a.lock("short")
            .ttl(Duration::from_millis(100))
            .watchdog(false)
            .acquire(),
    )
    .await
    .unwrap();
    assert_eq!(within("lost", g.lost()).await, Lost::Expired);
    assert_eq!(g.is_lost(), Some(Lost::Expired));
    match within("event", events.recv()).await {
        Some(SessionEvent::LeaseLost { key, token, .. }) => {
            assert_eq!(&key[..], b"short");
            assert_eq!(token, g.token());
        }
        other => panic!("{other:?}"),
    }
    let e = within("release", g.release()).await.unwrap_err();
    assert!(matches!(e, Error::NotHeld { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_session() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let g = within("a", a.lock("closing").acquire()).await.unwrap();
    within("close", a.close()).await.unwrap();
    assert_eq!(g.is_lost(), Some(Lost::SessionEnded));
    assert!(holders(&b, "closing").await.is_empty());
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    let server = Server::start_with(Config {
        requirepass: Some("pw".into()),
        ..Config::default()
    })
    .await;
    let e = within("no password", Client::connect(server.addr))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoAuth { .. }), "{e:?}");
    let e = within(
        "wrong",
        Client::builder()
            .addrs(server.addr)
            .password("no")
            .connect(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::WrongPass { .. }), "{e:?}");
    let c = within(
        "right",
        Client::builder()
            .addrs(server.addr)
            .password("pw")
            .connect(),
    )
    .await
    .unwrap();
    within("ping", c.ping()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_outlive_the_client_handle() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let sid = a.session_id();
    let g = within(
        "a",
        a.lock("outlive").ttl(Duration::from_millis(600)).acquire(),
    )
    .await
    .unwrap();
    drop(a);
    // The guard keeps the connection (and its watchdog) alive past the TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(holders(&b, "outlive").await, [sid]);
    assert_eq!(g.is_lost(), None);
    drop(g);
    eventually("freed with the last handle", || async {
        holders(&b, "outlive").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_is_a_typed_error() {
    let server = Server::start_with(Config {
        max_connections: 1,
        ..Config::default()
    })
    .await;
    let _a = server.client().await;
    let e = within("second client", Client::connect(server.addr))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Limit {
                which: LimitKind::Connections,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_and_downgrade_a_guard() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let mut ga = within("a shared", a.lock("rw").shared().acquire())
        .await
        .unwrap();
    let gb = within("b shared", b.lock("rw").shared().acquire())
        .await
        .unwrap();
    let first = ga.token();
    // b still reads: a try-upgrade fails and leaves the shared hold.
    assert!(!within("try upgrade", ga.upgrade(Some(Duration::ZERO)))
        .await
        .unwrap());
    // A waiting upgrade completes once b is gone, with a new token.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gb.release().await
    });
    assert!(within("upgrade", ga.upgrade(None)).await.unwrap());
    within("b released", release).await.unwrap().unwrap();
    assert!(ga.token() > first);
    // Downgrade keeps the token and lets b read again.
    let upgraded = ga.token();
    within("downgrade", ga.downgrade()).await.unwrap();
    assert_eq!(ga.token(), upgraded);
    let gb = within("b again", b.lock("rw").shared().try_acquire())
        .await
        .unwrap()
        .expect("shared next to a downgraded hold");
    drop(gb);
    // Priority and lock-delay options go through.
    let g = within(
        "options",
        b.lock("p")
            .priority(5)
            .lock_delay(Duration::from_millis(10))
            .acquire(),
    )
    .await
    .unwrap();
    within("release", g.release()).await.unwrap();
    within("release a", ga.release()).await.unwrap();
}
