//! The configured limits, each passed over a real socket: `-LIMIT` for a key too long,
//! too many waiters on a key, too many holds in a session, a TTL over the maximum, a
//! semaphore over the maximum, too many keys, and too many connections. After each, the
//! connection (and a second one) goes on working.

mod common;

use std::time::Duration;

use common::*;
use turnstile::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_longer_than_max_key_len() {
    let server = Server::start_with(Config {
        max_key_len: 8,
        ..Config::default()
    })
    .await;
    let mut con = server.redis().await;
    let mut other = server.redis().await;
    assert!(acquire(&mut con, "12345678", &[]).await > 0);
    for words in [
        &["ACQUIRE", "123456789"][..],
        &["ACQUIRE", "123456789", "WAIT", "0"],
        &["RELEASE", "123456789"],
        &["RENEW", "123456789"],
        &["INSPECT", "123456789"],
    ] {
        let (code, text) = err(&mut con, words).await;
        assert_eq!(code, "LIMIT", "{words:?}: {text}");
    }
    assert!(inspect(&mut other, "12345678").await.is_some());
    let pong: String = ok(&mut con, &["PING"]).await;
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_per_key() {
    let server = Server::start_with(Config {
        max_waiters_per_key: 2,
        ..Config::default()
    })
    .await;
    let mut holder = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut holder, "wk", &[]).await;
    let mut w1 = server.raw().await;
    w1.send_words(&["ACQUIRE", "wk"]).await;
    wait_for_waiters(&mut obs, "wk", 1).await;
    let mut w2 = server.raw().await;
    w2.send_words(&["ACQUIRE", "wk", "WAIT", "10000"]).await;
    wait_for_waiters(&mut obs, "wk", 2).await;

    let mut w3 = server.redis().await;
    let (code, text) = err(&mut w3, &["ACQUIRE", "wk"]).await;
    assert_eq!(code, "LIMIT", "{text}");
    let (code, _) = err(&mut w3, &["ACQUIRE", "wk", "WAIT", "100"]).await;
    assert_eq!(code, "LIMIT");
    // A try-lock does not queue: it is simply busy.
    let v: Option<i64> = ok(&mut w3, &["ACQUIRE", "wk", "WAIT", "0"]).await;
    assert_eq!(v, None);
    assert_eq!(inspect(&mut obs, "wk").await.unwrap().waiters.len(), 2);

    // Other keys are not affected, and once the queue moves there is room again.
    assert!(acquire(&mut w3, "other", &[]).await > 0);
    let _: i64 = ok(&mut holder, &["RELEASE", "wk"]).await;
    assert!(w1.reply().await.int() > 0);
    wait_for_waiters(&mut obs, "wk", 1).await;
    let mut w4 = server.raw().await;
    w4.send_words(&["ACQUIRE", "wk", "WAIT", "50"]).await;
    assert_eq!(w4.reply().await, Reply::Nil, "queued, then timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_per_session() {
    let server = Server::start_with(Config {
        max_holds_per_session: 3,
        ..Config::default()
    })
    .await;
    let mut con = server.redis().await;
    let mut other = server.redis().await;
    for k in ["h1", "h2", "h3"] {
        assert!(acquire(&mut con, k, &["REENTRANT"]).await > 0);
    }
    let (code, text) = err(&mut con, &["ACQUIRE", "h4"]).await;
    assert_eq!(code, "LIMIT", "{text}");
    // The limit counts holds and queued requests, on any key.
    acquire(&mut other, "taken", &[]).await;
    let (code, _) = err(&mut con, &["ACQUIRE", "taken", "WAIT", "100"]).await;
    assert_eq!(code, "LIMIT");
    // A reentrant level is not a new hold.
    assert!(acquire(&mut con, "h1", &["REENTRANT"]).await > 0);
    // Another session has its own budget.
    assert!(acquire(&mut other, "h4", &[]).await > 0);
    let _: i64 = ok(&mut con, &["RELEASE", "h2"]).await;
    assert!(acquire(&mut con, "h5", &[]).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_over_the_maximum_and_the_configured_default() {
    let server = Server::start_with(Config {
        default_ttl_ms: 2000,
        max_ttl_ms: 5000,
        ..Config::default()
    })
    .await;
    let mut con = server.redis().await;
    let (code, text) = err(&mut con, &["ACQUIRE", "t", "TTL", "5001"]).await;
    assert_eq!(code, "LIMIT", "{text}");
    assert!(inspect(&mut con, "t").await.is_none());
    assert!(acquire(&mut con, "t", &["TTL", "5000"]).await > 0);
    let (code, _) = err(&mut con, &["RENEW", "t", "TTL", "5001"]).await;
    assert_eq!(code, "LIMIT");
    let left: i64 = ok(&mut con, &["RENEW", "t", "TTL", "5000"]).await;
    assert!((1..=5000).contains(&left));

    assert!(acquire(&mut con, "d", &[]).await > 0);
    let ttl = inspect(&mut con, "d").await.unwrap().holders[0].ttl_ms;
    assert!(
        (1..=2000).contains(&ttl),
        "the configured default TTL: {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_over_the_maximum() {
    let server = Server::start_with(Config {
        max_semaphore: 10,
        ..Config::default()
    })
    .await;
    let mut con = server.redis().await;
    let (code, text) = err(&mut con, &["ACQUIRE", "s", "SEMAPHORE", "11"]).await;
    assert_eq!(code, "LIMIT", "{text}");
    assert!(acquire(&mut con, "s", &["SEMAPHORE", "10", "PERMITS", "10"]).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_the_table() {
    let server = Server::start_with(Config {
        max_keys: 3,
        ..Config::default()
    })
    .await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    for k in ["k1", "k2", "k3"] {
        acquire(&mut a, k, &[]).await;
    }
    let (code, text) = err(&mut b, &["ACQUIRE", "k4"]).await;
    assert_eq!(code, "LIMIT", "{text}");
    // An existing key is still usable.
    let v: Option<i64> = ok(&mut b, &["ACQUIRE", "k1", "WAIT", "0"]).await;
    assert_eq!(v, None);
    let _: i64 = ok(&mut a, &["RELEASE", "k3"]).await;
    assert!(acquire(&mut b, "k4", &[]).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_extra_connection_with_limit() {
    let server = Server::start_with(Config {
        max_connections: 2,
        ..Config::default()
    })
    .await;
    let mut first = server.raw().await;
    assert_eq!(first.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    let mut second = server.redis().await;
    assert!(acquire(&mut second, "mine", &[]).await > 0);

    // The third is told why, then closed.
    let mut third = server.raw().await;
    let got = String::from_utf8_lossy(&third.closed().await).to_string();
    assert!(got.starts_with("-LIMIT"), "{got:?}");
    assert!(got.ends_with("\r\n"), "{got:?}");

    // The redis crate sees the refusal as an error when it connects.
    let client = redis::Client::open(server.url()).unwrap();
    let res = tokio::time::timeout(REPLY_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("bounded");
    match res {
        Ok(mut con) => {
            let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
            assert!(r.is_err(), "the refused connection must not work: {r:?}");
        }
        Err(e) => assert!(
            e.code() == Some("LIMIT") || e.is_connection_dropped() || e.is_io_error(),
            "{e:?}"
        ),
    }

    // The served connections are unaffected.
    assert_eq!(first.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    let info: String = ok(&mut second, &["INFO", "clients"]).await;
    assert!(info.contains("rejected_connections:"), "{info}");
    let rejected = info
        .lines()
        .find_map(|l| l.strip_prefix("rejected_connections:"))
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(rejected >= 1, "{info}");

    // When one leaves, a new one is served (polled: the slot frees when the server has
    // seen the close).
    drop(first);
    let mut served = false;
    for _ in 0..100 {
        let mut r = server.raw().await;
        // A refused connection is told at once; a served one says nothing until asked.
        match r.reply_within(Duration::from_millis(200)).await {
            Some(Reply::Error(e)) if e.starts_with("LIMIT") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {
                assert_eq!(r.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
                served = true;
                break;
            }
        }
    }
    assert!(served, "a slot frees when a connection closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_that_already_sent_a_command_still_reads_limit() {
    let server = Server::start_with(Config {
        max_connections: 1,
        ..Config::default()
    })
    .await;
    let mut first = server.raw().await;
    assert_eq!(first.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    for i in 0..20 {
        // What every client library does: connect and write its first command at once.
        let mut extra = server.raw().await;
        extra.send(b"*1\r\n$4\r\nPING\r\n").await;
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            use tokio::io::AsyncReadExt;
            let mut chunk = [0u8; 256];
            match tokio::time::timeout_at(deadline, extra.stream.read(&mut chunk)).await {
                Err(_) => panic!("attempt {i}: neither a reply nor a close"),
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                // The server closes without reading the command, so the kernel may reset
                // the connection; the reply must have come first.
                Ok(Err(_)) => break,
            }
        }
        let got = String::from_utf8_lossy(&got).to_string();
        assert!(got.starts_with("-LIMIT"), "attempt {i}: {got:?}");
    }
    assert_eq!(first.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited() {
    let server = Server::start_with(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    })
    .await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    assert_eq!(a.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    assert_eq!(b.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    let mut c = server.raw().await;
    let refused = c.closed().await;
    assert_eq!(
        refused,
        b"-LIMIT max number of clients from this address reached\r\n"
    );
    // A slot comes back when a connection goes.
    drop(a);
    let mut ok = None;
    for _ in 0..100 {
        let mut d = server.raw().await;
        d.send_words(&["PING"]).await;
        if let Some(r) = d.reply_within(std::time::Duration::from_millis(200)).await {
            if r == Reply::Simple("PONG".into()) {
                ok = Some(r);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(ok, Some(Reply::Simple("PONG".into())));
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_unauthenticated_connections_are_closed_after_the_auth_timeout() {
    let server = Server::start_with(Config {
        auth_timeout_ms: 300,
        requirepass: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    // Says nothing at all.
    let mut silent = server.raw().await;
    let started = std::time::Instant::now();
    assert_eq!(silent.closed().await, b"");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    // Talks but never authenticates.
    let mut chatty = server.raw().await;
    assert!(matches!(chatty.cmd(&["LOCKS"]).await, Reply::Error(_)));
    assert_eq!(chatty.closed().await, b"-ERR authentication timeout\r\n");
    // Authenticated connections are not affected.
    let mut authed = server.raw().await;
    assert_eq!(
        authed.cmd(&["AUTH", "s3cret"]).await,
        Reply::Simple("OK".into())
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(authed.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
}
