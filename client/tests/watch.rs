//! Issue 9 through the client library (binary protocol): values at ACQUIRE and with
//! SETVALUE, GETVALUE and INSPECT with values, the size limit, WATCH streams (also
//! across a reconnect), and the election API: campaign, failover when the leader's
//! connection is gone, observe, resign.

mod common;

use std::time::Duration;

use common::{within, Proxy, Server};
use turnstile::Config;
use turnstile_client::{Client, Election, EndCause, Error, WatchEvent};

#[tokio::test]
async fn values_getvalue_inspect_and_the_limit() {
    let server = Server::start_with(Config {
        max_value_bytes: 32,
        ..Config::default()
    })
    .await;
    let a = server.client().await;
    let b = server.client().await;
    let guard = within("acquire", a.lock("svc").value("10.0.0.1:7000").acquire())
        .await
        .unwrap();
    let values = b.get_value("svc").await.unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].session, a.session_id());
    assert_eq!(values[0].token, guard.token());
    assert_eq!(&values[0].value[..], b"10.0.0.1:7000");
    guard.set_value("10.0.0.2:7000").await.unwrap();
    let state = b.inspect_values("svc").await.unwrap().expect("present");
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.values.as_deref().unwrap()[0], &b"10.0.0.2:7000"[..]);
    // A plain INSPECT carries no values (and old clients read it as before).
    assert!(b.inspect("svc").await.unwrap().unwrap().values.is_none());
    assert!(matches!(
        b.set_value("svc", "x").await,
        Err(Error::NotHeld { .. })
    ));
    let long = "x".repeat(33);
    match b.lock("other").value(&long).acquire().await {
        Err(Error::Limit { message, .. }) => {
            let m = message;
            assert!(m.contains("33 bytes") && m.contains("32"), "{m}");
        }
        other => panic!("expected LIMIT, got {other:?}"),
    }
    assert!(matches!(
        guard.set_value(&long).await,
        Err(Error::Limit { .. })
    ));
    guard.release().await.unwrap();
    assert!(b.get_value("svc").await.unwrap().is_empty());
}

async fn next(w: &mut turnstile_client::Watch) -> WatchEvent {
    within("a watch event", w.next()).await.expect("open")
}

#[tokio::test]
async fn watch_streams_changes_and_starts_again_after_a_reconnect() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let watcher = within("connect", Client::connect(proxy.addr.to_string()))
        .await
        .unwrap();
    let a = server.client().await;
    let mut w = watcher.watch("k").await.unwrap();
    assert!(
        matches!(next(&mut w).await, WatchEvent::State { fencing: 0, ref holders } if holders.is_empty())
    );
    let g = a
        .lock("k")
        .value("A")
        .ttl(Duration::from_millis(200))
        .watchdog(false)
        .acquire()
        .await
        .unwrap();
    match next(&mut w).await {
        WatchEvent::Granted(h) => {
            assert_eq!(
                (h.session, h.token, &h.value[..]),
                (a.session_id(), g.token(), &b"A"[..])
            )
        }
        other => panic!("{other:?}"),
    }
    match next(&mut w).await {
        WatchEvent::Expired(h, EndCause::Lease) => assert_eq!(h.token, g.token()),
        other => panic!("{other:?}"),
    }
    drop(g);
    // The watcher's connection breaks: the client reconnects and watches again; the
    // server sends the state again.
    let g2 = a.lock("k").value("B").acquire().await.unwrap();
    let _ = next(&mut w).await; // granted B (or the state after the reconnect)
    proxy.cut();
    loop {
        if let WatchEvent::State { holders, .. } = next(&mut w).await {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].token, g2.token());
            assert_eq!(&holders[0].value[..], b"B");
            break;
        }
    }
    g2.set_value("B2").await.unwrap();
    match next(&mut w).await {
        WatchEvent::Value(h) => assert_eq!(&h.value[..], b"B2"),
        other => panic!("{other:?}"),
    }
    g2.release().await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Released(_)));
}

/// The election: the first candidate leads; the second waits; the leader's process
/// vanishes (its connection is cut and never comes back): its session times out and the
/// second leads with a larger token, which an observer sees without polling. Then a
/// resignation hands over at once.
#[tokio::test]
async fn election_campaign_failover_observe_resign() {
    let server = Server::start().await;
    let proxy = Proxy::start(server.addr).await;
    let c1 = within(
        "connect",
        Client::builder()
            .addrs(proxy.addr.to_string())
            .session_timeout(Duration::from_millis(300))
            .reconnect_wait(Duration::from_millis(100))
            .backoff(Duration::from_millis(50), Duration::from_millis(100))
            .connect(),
    )
    .await
    .unwrap();
    let c2 = server.client().await;
    let c3 = server.client().await;
    let c4 = server.client().await;
    let e1 = Election::new(&c1, "leader").ttl(Duration::from_secs(5));
    let observer_election = Election::new(&c4, "leader");
    let mut observer = observer_election.observe().await.unwrap();
    assert_eq!(within("first", observer.next()).await, Some(None));

    let l1 = within("c1 elected", e1.campaign("node-1:7000"))
        .await
        .unwrap();
    let seen = within("observe c1", observer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (seen.token, &seen.value[..]),
        (l1.token(), &b"node-1:7000"[..])
    );
    assert_eq!(
        observer_election.leader().await.unwrap().unwrap().token,
        l1.token()
    );

    let e2 = Election::new(&c2, "leader");
    let e3 = Election::new(&c3, "leader");
    let t2 = tokio::spawn(async move { e2.campaign("node-2:7000").await });
    // Queue c2 before c3.
    common::eventually("c2 queued", || async {
        c3.inspect("leader")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.waiters.len() == 1)
    })
    .await;
    let t3 = tokio::spawn(async move { e3.campaign("node-3:7000").await });

    // c1 vanishes: no resign, no reconnect.
    proxy.block(true);
    proxy.cut();
    let l2 = within("c2 elected", t2).await.unwrap().unwrap();
    assert!(l2.token() > l1.token());
    let seen = loop {
        match within("observe c2", observer.next()).await.unwrap() {
            Some(l) => break l,
            None => continue, // the office was empty for a moment
        }
    };
    assert_eq!(
        (seen.token, &seen.value[..]),
        (l2.token(), &b"node-2:7000"[..])
    );
    l2.proclaim("node-2:7001").await.unwrap();
    let seen = within("proclaim", observer.next()).await.unwrap().unwrap();
    assert_eq!(&seen.value[..], b"node-2:7001");

    // Resigning hands over at once.
    let t2 = l2.token();
    l2.resign().await.unwrap();
    let l3 = within("c3 elected", t3).await.unwrap().unwrap();
    assert!(l3.token() > t2);
    let seen = loop {
        match within("observe c3", observer.next()).await.unwrap() {
            Some(l) => break l,
            None => continue,
        }
    };
    assert_eq!(seen.token, l3.token());
    drop(l1);
}
