//! Binary sessions over real sockets: resume after a disconnect with holds and queued
//! requests intact, events kept while detached, takeover by a second connection, and the
//! end of a session after its timeout (detached or silent), which releases its holds.

mod common;

use std::time::Duration;

use common::*;
use turnstile::protocol::binary::{self as bin, ErrorCode, Mode, Push, Request, Response};
use turnstile::Config;

fn granted(r: Response) -> u64 {
    match r {
        Response::Granted { token } => token,
        other => panic!("expected GRANTED, got {other:?}"),
    }
}

fn resume(secret: [u8; 16]) -> bin::Hello<'static> {
    bin::Hello {
        resume: Some(secret),
        ..hello()
    }
}

fn with_timeout(ms: u32) -> bin::Hello<'static> {
    bin::Hello {
        session_timeout_ms: ms,
        ..hello()
    }
}

/// Who holds `key`, as INSPECT (over a fresh binary connection) says.
async fn holders(addr: std::net::SocketAddr, key: &[u8]) -> Vec<u64> {
    let mut b = Bin::connect(addr).await;
    let r = b.call(1, Request::Inspect { key }).await;
    b.call(2, Request::Bye { end_session: true }).await;
    match r {
        Response::Inspect(None) => Vec::new(),
        Response::Inspect(Some(s)) => s.holders.iter().map(|h| h.session).collect(),
        other => panic!("{other:?}"),
    }
}

/// Waits (bounded) until the server counts `n` connections, asking over `b` (which
/// counts itself); WAITING pushes on the way are skipped.
async fn wait_clients(b: &mut Bin, n: usize) {
    let want = format!("connected_clients:{n}\r\n");
    for i in 0..500u32 {
        if let Response::Info(text) = b
            .call_holder(
                100_000 + i,
                Request::Info {
                    section: b"clients",
                },
            )
            .await
        {
            if String::from_utf8_lossy(&text).contains(&want) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never counted {n} connections");
}

async fn eventually_free(addr: std::net::SocketAddr, key: &[u8]) {
    for _ in 0..500 {
        if holders(addr, key).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never became free", String::from_utf8_lossy(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_disconnect_keeps_holds() {
    let server = Server::start().await;
    let mut a = Bin::connect(server.addr).await;
    let (me, secret) = (a.session(), a.secret());
    let t = granted(a.call(1, acq(b"keep", Mode::Exclusive, 60_000, None)).await);
    drop(a); // the connection breaks
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        holders(server.addr, b"keep").await,
        [me],
        "still held while detached"
    );

    let mut a = Bin::connect_with(server.addr, &resume(secret)).await;
    let ok = a.ok.clone().unwrap();
    assert!(ok.resumed);
    assert_eq!(ok.session, me);
    assert_eq!(ok.secret, secret);
    // Same session: it can renew and release the hold.
    assert!(matches!(
        a.call(
            2,
            Request::Renew {
                key: b"keep",
                ttl_ms: 0
            }
        )
        .await,
        Response::Renewed { .. }
    ));
    match a.call(3, Request::Inspect { key: b"keep" }).await {
        Response::Inspect(Some(s)) => assert_eq!(s.holders[0].token, t),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        a.call(4, Request::Release { key: b"keep" }).await,
        Response::Ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_survive_and_their_grant_waits_for_the_resume() {
    let server = Server::start().await;
    let mut holder = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    let secret = b.secret();
    granted(holder.call(1, acq(b"q", Mode::Exclusive, 0, None)).await);
    assert_eq!(
        b.call(77, acq(b"q", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    drop(b);
    wait_clients(&mut holder, 1).await;
    // Granted while detached.
    assert_eq!(
        holder.call_holder(2, Request::Release { key: b"q" }).await,
        Response::Ok
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b = Bin::connect_with(server.addr, &resume(secret)).await;
    let (id, push) = b.push().await;
    assert_eq!(
        id, 77,
        "the grant names the request sent on the old connection"
    );
    assert!(matches!(push, Push::Granted { .. }));
    assert_eq!(holders(server.addr, b"q").await, [b.session()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_can_be_cancelled_after_a_resume() {
    let server = Server::start().await;
    let mut holder = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    let secret = b.secret();
    granted(holder.call(1, acq(b"qc", Mode::Exclusive, 0, None)).await);
    assert_eq!(
        b.call(9, acq(b"qc", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    drop(b);
    let mut b = Bin::connect_with(server.addr, &resume(secret)).await;
    b.send(10, Request::Cancel { target: 9 }).await;
    assert_eq!(b.push().await, (9, Push::Cancelled));
    assert_eq!(
        b.response(10).await,
        Response::CancelResult { cancelled: true }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lost_while_detached_is_delivered_on_resume() {
    let server = Server::start().await;
    let mut a = Bin::connect(server.addr).await;
    let secret = a.secret();
    let t = granted(a.call(1, acq(b"exp", Mode::Exclusive, 500, None)).await);
    let mut observer = Bin::connect(server.addr).await;
    drop(a);
    wait_clients(&mut observer, 1).await;
    eventually_free(server.addr, b"exp").await;
    let mut a = Bin::connect_with(server.addr, &resume(secret)).await;
    match a.push().await {
        (0, Push::LeaseLost { token, key, .. }) => {
            assert_eq!(token, t);
            assert_eq!(&key[..], b"exp");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_session_ends_after_its_timeout_and_releases_its_holds() {
    let server = Server::start().await;
    let mut a = Bin::connect_with(server.addr, &with_timeout(300)).await;
    let (me, secret) = (a.session(), a.secret());
    granted(a.call(1, acq(b"gone", Mode::Exclusive, 60_000, None)).await);
    let mut holder = Bin::connect(server.addr).await;
    granted(
        holder
            .call(1, acq(b"gone-q", Mode::Exclusive, 0, None))
            .await,
    );
    assert_eq!(
        a.call(2, acq(b"gone-q", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    drop(a);
    assert_eq!(holders(server.addr, b"gone").await, [me]);
    eventually_free(server.addr, b"gone").await;
    // Its queued request went with it.
    match holder
        .call_holder(2, Request::Inspect { key: b"gone-q" })
        .await
    {
        Response::Inspect(Some(s)) => assert!(s.waiters.is_empty()),
        other => panic!("{other:?}"),
    }
    let (_, res) = Bin::handshake(server.addr, &resume(secret)).await;
    assert_eq!(res.unwrap_err().code, ErrorCode::NoSession);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_attached_session_times_out() {
    let server = Server::start().await;
    let mut a = Bin::connect_with(server.addr, &with_timeout(300)).await;
    granted(
        a.call(1, acq(b"silent", Mode::Exclusive, 60_000, None))
            .await,
    );
    // Sending nothing for the timeout: the server closes and ends the session.
    a.closed().await;
    eventually_free(server.addr, b"silent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_a_session_alive() {
    let server = Server::start().await;
    let mut a = Bin::connect_with(server.addr, &with_timeout(600)).await;
    granted(
        a.call(1, acq(b"alive", Mode::Exclusive, 60_000, None))
            .await,
    );
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            a.call(10 + i, Request::Ping(b"")).await,
            Response::Pong(_)
        ));
    }
    assert_eq!(holders(server.addr, b"alive").await, [a.session()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_the_session_over_from_a_live_connection() {
    let server = Server::start().await;
    let mut old = Bin::connect(server.addr).await;
    granted(old.call(1, acq(b"take", Mode::Exclusive, 0, None)).await);
    let mut new = Bin::connect_with(server.addr, &resume(old.secret())).await;
    assert!(new.ok.as_ref().unwrap().resumed);
    old.closed().await;
    assert_eq!(
        new.call(2, Request::Release { key: b"take" }).await,
        Response::Ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_with_end_session_releases_at_once() {
    let server = Server::start_with(Config {
        session_timeout_ms: 60_000,
        ..Config::default()
    })
    .await;
    let mut a = Bin::connect(server.addr).await;
    let secret = a.secret();
    granted(a.call(1, acq(b"bye", Mode::Exclusive, 0, None)).await);
    assert_eq!(
        a.call(2, Request::Bye { end_session: true }).await,
        Response::Ok
    );
    a.closed().await;
    assert!(holders(server.addr, b"bye").await.is_empty());
    let (_, res) = Bin::handshake(server.addr, &resume(secret)).await;
    assert_eq!(res.unwrap_err().code, ErrorCode::NoSession);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guessed_secret_resumes_nothing() {
    let server = Server::start().await;
    let a = Bin::connect(server.addr).await;
    let mut guess = a.secret();
    guess[15] ^= 1;
    let (_, res) = Bin::handshake(server.addr, &resume(guess)).await;
    assert_eq!(res.unwrap_err().code, ErrorCode::NoSession);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_notices_are_bounded_while_detached() {
    let server = Server::start().await;
    let mut a = Bin::connect(server.addr).await;
    let secret = a.secret();
    granted(a.call(1, acq(b"many", Mode::Shared, 0, None)).await);
    let mut w = Bin::connect(server.addr).await;
    drop(a);
    // The session is detached once the server has seen the disconnect.
    wait_clients(&mut w, 1).await;
    // More WAITING notices than are kept for a detached session: exclusive requests,
    // each cancelled again.
    let n = turnstile::server::MAX_DETACHED_WAITING + 10;
    for i in 0..n {
        let id = 2 * i;
        assert_eq!(
            w.call(id, acq(b"many", Mode::Exclusive, 0, None)).await,
            Response::Queued
        );
        w.send(id + 1, Request::Cancel { target: id }).await;
        assert_eq!(w.push().await, (id, Push::Cancelled));
        assert_eq!(
            w.response(id + 1).await,
            Response::CancelResult { cancelled: true }
        );
    }
    let mut a = Bin::connect_with(server.addr, &resume(secret)).await;
    let mut seen = 0;
    while let Some((_, msg)) = a.recv_within(Duration::from_millis(300)).await {
        assert!(matches!(
            msg,
            bin::ServerMessage::Push(Push::Waiting { .. })
        ));
        seen += 1;
    }
    assert_eq!(seen, turnstile::server::MAX_DETACHED_WAITING);
}

/// A client that lost the answer to an ACQUIRE (its connection broke, or its leader
/// failed) sends it again with the same request id after resuming: still queued, it is
/// answered QUEUED; granted, GRANTED with the hold's token; either way it is not applied
/// twice (no second reentrant level, no self-DEADLOCK). protocol.md 4.8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_sent_again_after_a_resume_is_answered_not_applied_twice() {
    let server = Server::start().await;
    let mut holder = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    let secret = b.secret();
    let t = granted(b.call(5, acq(b"mine", Mode::Exclusive, 60_000, None)).await);
    let mut reentrant = acq(b"re", Mode::Exclusive, 60_000, None);
    if let Request::Acquire(a) = &mut reentrant {
        a.reentrant = true;
    }
    let tr = granted(b.call(6, reentrant.clone()).await);
    granted(holder.call(1, acq(b"busy", Mode::Exclusive, 0, None)).await);
    assert_eq!(
        b.call(7, acq(b"busy", Mode::Exclusive, 60_000, None)).await,
        Response::Queued
    );
    drop(b);
    wait_clients(&mut holder, 1).await;

    let mut b = Bin::connect_with(server.addr, &resume(secret)).await;
    assert_eq!(
        granted(b.call(5, acq(b"mine", Mode::Exclusive, 60_000, None)).await),
        t,
        "granted before: the same token, no DEADLOCK"
    );
    assert_eq!(granted(b.call(6, reentrant.clone()).await), tr);
    assert_eq!(
        b.call(7, acq(b"busy", Mode::Exclusive, 60_000, None)).await,
        Response::Queued,
        "still queued: not queued twice"
    );
    // Granted from the queue while nobody listened: the retry learns the token.
    assert_eq!(
        holder
            .call_holder(2, Request::Release { key: b"busy" })
            .await,
        Response::Ok
    );
    let (id, push) = b.push().await;
    assert_eq!(id, 7);
    let tb = match push {
        Push::Granted { token, .. } => token,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        granted(b.call(7, acq(b"busy", Mode::Exclusive, 60_000, None)).await),
        tb
    );
    // One RELEASE each ends the holds: nothing was applied twice.
    for (n, key) in [(8u32, &b"mine"[..]), (9, b"re"), (10, b"busy")] {
        assert_eq!(b.call(n, Request::Release { key }).await, Response::Ok);
        assert!(holders(server.addr, key).await.is_empty(), "{key:?}");
    }
    // A new request id on a key the session holds is a new request: DEADLOCK.
    granted(
        b.call(11, acq(b"mine", Mode::Exclusive, 60_000, None))
            .await,
    );
    match b
        .call(12, acq(b"mine", Mode::Exclusive, 60_000, None))
        .await
    {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::Deadlock),
        other => panic!("expected DEADLOCK, got {other:?}"),
    }
}
