//! A server restart on the same data directory, seen from the client library: the
//! client reconnects to the new process and resumes its session from the log, with its
//! hold (same token, kept alive by the watchdog) and its queued acquire (granted when
//! the holder releases after the restart).

mod common;

use std::time::Duration;

use common::*;
use turnstile::Config;
use turnstile_client::{Client, SessionEvent};

async fn client(addr: std::net::SocketAddr) -> Client {
    within(
        "connect",
        Client::builder()
            .addrs(addr)
            .session_timeout(Duration::from_secs(20))
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .connect(),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_holds_and_queued_acquires_resume_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("turnstile-client-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        data_dir: dir.clone(),
        in_memory: false,
        ..Config::default()
    };
    let server = Server::start_with(config.clone()).await;
    let addr = server.addr;

    let a = client(addr).await;
    let b = client(addr).await;
    let (sid_a, sid_b) = (a.session_id(), b.session_id());
    let mut events = a.events();
    let held = within(
        "a acquires",
        a.lock("held").ttl(Duration::from_secs(2)).acquire(),
    )
    .await
    .unwrap();
    let b_guard = within(
        "b acquires",
        b.lock("contended").ttl(Duration::from_secs(60)).acquire(),
    )
    .await
    .unwrap();
    let pending = {
        let a = a.clone();
        tokio::spawn(async move {
            a.lock("contended")
                .ttl(Duration::from_secs(60))
                .wait(Duration::from_secs(30))
                .acquire()
                .await
        })
    };
    within("a queues", async {
        loop {
            if let Some(s) = b.inspect("contended").await.unwrap() {
                if s.waiters.len() == 1 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    server.stop().await;
    let server = Server::start_at(config, addr).await;

    let ev = within("a reconnects", async {
        loop {
            match events.recv().await {
                Some(e @ SessionEvent::Reconnected { .. }) => return e,
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await;
    assert_eq!(
        ev,
        SessionEvent::Reconnected {
            resumed: true,
            session: sid_a
        }
    );
    within("b reconnects", async {
        while !b.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(b.session_id(), sid_b, "b resumed its session too");

    // The hold came back with its token and the watchdog keeps it past its 2 s TTL.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(held.is_lost(), None);
    let state = a.inspect("held").await.unwrap().expect("held is held");
    assert_eq!(
        (state.holders[0].session, state.holders[0].token),
        (sid_a, held.token())
    );

    // The queued acquire is granted when b releases, with a larger token.
    let b_token = b_guard.token();
    within("b releases", b_guard.release()).await.unwrap();
    let granted = within("a's queued acquire", pending)
        .await
        .unwrap()
        .expect("granted after the restart");
    assert!(granted.token() > b_token, "{} > {b_token}", granted.token());
    within("release", granted.release()).await.unwrap();
    within("release", held.release()).await.unwrap();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
