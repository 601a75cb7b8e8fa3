//! The client through failures: the watchdog keeping a lock past its TTL, a renewal that
//! cannot get through reported to the owner, a forced disconnect after which the session
//! is resumed with its holds and queued requests, and a session that ends because the
//! client stayed away past its timeout.

mod common;

use std::time::Duration;

use common::*;
use turnstile_client::{Client, Error, Lost, SessionEvent};

async fn via(proxy: &Proxy, timeout: Duration) -> Client {
    within(
        "connect",
        Client::builder()
            .addrs(proxy.addr)
            .session_timeout(timeout)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect(),
    )
    .await
    .expect("connect through the proxy")
}

/// Waits for a specific event, skipping others.
async fn expect_event(
    events: &mut turnstile_client::Events,
    what: &str,
    pred: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    within(what, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("events ended while waiting for {what}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_keeps_a_lock_past_its_ttl() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let g = within("a", a.lock("wd").ttl(Duration::from_millis(600)).acquire())
        .await
        .unwrap();
    // Four TTLs later the same hold is still there.
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = within("inspect", b.inspect("wd"))
            .await
            .unwrap()
            .expect("held");
        assert_eq!(state.holders.len(), 1);
        assert_eq!(state.holders[0].token, g.token());
        assert!(state.holders[0].ttl_ms <= 600);
    }
    assert_eq!(g.is_lost(), None);
    within("release", g.release()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_watchdog_the_lease_runs_out() {
    let server = Server::start().await;
    let a = server.client().await;
    let b = server.client().await;
    let g = within(
        "a",
        a.lock("nowd")
            .ttl(Duration::from_millis(200))
            .watchdog(false)
            .acquire(),
    )
    .await
    .unwrap();
    eventually("expired", || async { holders(&b, "nowd").await.is_empty() }).await;
    assert_eq!(within("lost", g.lost()).await, Lost::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_cannot_get_through_is_reported() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let a = via(&proxy, Duration::from_secs(30)).await;
    let b = server.client().await;
    let g = within(
        "a",
        a.lock("stall").ttl(Duration::from_millis(300)).acquire(),
    )
    .await
    .unwrap();
    // Traffic stalls (nothing closes): renewals cannot reach the server.
    proxy.pause(true);
    let lost = within("lost", g.lost()).await;
    assert_eq!(lost, Lost::Unreachable);
    // And indeed the server let the lease go: another client gets the lock.
    let other = within("b", b.lock("stall").wait(Duration::from_secs(2)).acquire())
        .await
        .unwrap();
    assert!(other.token() > g.token());
    proxy.pause(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_is_reported() {
    let server = Server::start().await;
    let a = server.client().await;
    let g = within(
        "a",
        a.lock("refused")
            .ttl(Duration::from_millis(100))
            .watchdog(false)
            .acquire(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = within("renew", g.renew(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotHeld { .. }), "{e:?}");
    assert!(g.is_lost().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_disconnect_resumes_the_session_with_its_holds() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let a = via(&proxy, Duration::from_secs(10)).await;
    let observer = server.client().await;
    let sid = a.session_id();
    let mut events = a.events();
    let g = within("a", a.lock("resume").ttl(Duration::from_secs(2)).acquire())
        .await
        .unwrap();

    proxy.cut();
    expect_event(&mut events, "disconnected", |e| {
        matches!(e, SessionEvent::Disconnected)
    })
    .await;
    // The hold stays with the detached session.
    assert_eq!(holders(&observer, "resume").await, [sid]);
    let ev = expect_event(&mut events, "reconnected", |e| {
        matches!(e, SessionEvent::Reconnected { .. })
    })
    .await;
    assert_eq!(
        ev,
        SessionEvent::Reconnected {
            resumed: true,
            session: sid
        }
    );
    assert_eq!(a.session_id(), sid);
    within("ping", a.ping()).await.unwrap();
    // The watchdog goes on renewing over the new connection.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(g.is_lost(), None);
    assert_eq!(holders(&observer, "resume").await, [sid]);
    within("release", g.release()).await.unwrap();
    assert!(holders(&observer, "resume").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_acquire_survives_a_disconnect() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let a = via(&proxy, Duration::from_secs(10)).await;
    let holder = server.client().await;
    let g = within("holder", holder.lock("q").acquire()).await.unwrap();
    let a2 = a.clone();
    let pending = tokio::spawn(async move { a2.lock("q").acquire().await });
    eventually("a queued", || async {
        waiters(&holder, "q").await == [a.session_id()]
    })
    .await;
    proxy.cut();
    // Granted while (or right after) the client is away.
    within("release", g.release()).await.unwrap();
    let got = within("granted after resume", pending)
        .await
        .unwrap()
        .expect("the queued request completes");
    assert_eq!(holders(&holder, "q").await, [a.session_id()]);
    within("release", got.release()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_dropped_while_disconnected_are_released_after_the_resume() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let a = via(&proxy, Duration::from_secs(10)).await;
    let observer = server.client().await;
    let g = within("a", a.lock("later").acquire()).await.unwrap();
    proxy.block(true);
    proxy.cut();
    eventually("a notices", || async { !a.is_connected() }).await;
    drop(g);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(holders(&observer, "later").await, [a.session_id()]);
    proxy.block(false);
    eventually("released after the resume", || async {
        holders(&observer, "later").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_ends_when_the_client_stays_away_past_its_timeout() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let a = via(&proxy, Duration::from_millis(400)).await;
    let observer = server.client().await;
    let old = a.session_id();
    let mut events = a.events();
    let g = within(
        "a",
        a.lock("timeout").ttl(Duration::from_secs(60)).acquire(),
    )
    .await
    .unwrap();
    proxy.block(true);
    proxy.cut();
    // The server ends the session: the hold is released.
    eventually("released by the session's end", || async {
        holders(&observer, "timeout").await.is_empty()
    })
    .await;
    proxy.block(false);
    let ev = expect_event(&mut events, "session lost", |e| {
        matches!(e, SessionEvent::SessionLost { .. })
    })
    .await;
    assert_eq!(ev, SessionEvent::SessionLost { session: old });
    assert_eq!(within("guard", g.lost()).await, Lost::SessionEnded);
    let ev = expect_event(&mut events, "reconnected", |e| {
        matches!(e, SessionEvent::Reconnected { .. })
    })
    .await;
    assert!(matches!(ev, SessionEvent::Reconnected { resumed: false, session } if session != old));
    // The client goes on with its new session.
    let g2 = within("again", a.lock("timeout").acquire()).await.unwrap();
    assert_eq!(holders(&observer, "timeout").await, [a.session_id()]);
    drop((g, g2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_while_disconnected_wait_for_the_reconnect() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let a = via(&proxy, Duration::from_secs(10)).await;
    proxy.block(true);
    proxy.cut();
    eventually("a notices", || async { !a.is_connected() }).await;
    let a2 = a.clone();
    let ping = tokio::spawn(async move { a2.ping().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!ping.is_finished());
    proxy.block(false);
    within("ping after reconnect", ping).await.unwrap().unwrap();
}
