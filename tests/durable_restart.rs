//! Durability end to end, in process: a server with a data directory is stopped and a new
//! one started on the same directory and address. Holds come back with their tokens,
//! queues with their order, snapshots are taken and the log behind them purged, restored
//! text sessions end after the session timeout, and tokens keep increasing.
//! (Real `kill -9` crashes are `tests/crash_recovery.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use turnstile::Config;

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("turnstile-durable-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn durable_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        in_memory: false,
        session_timeout_ms: 700,
        snapshot_every: 25,
        wal_segment_bytes: 4096,
        ..Config::default()
    }
}

fn files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == ext))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_queues_and_tokens_survive_a_restart() {
    let dir = data_dir("text");
    let server = Server::start_with(durable_config(&dir)).await;
    let addr = server.addr;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    let id_a = client_id(&mut a).await;
    let held = acquire(&mut a, "held", &["TTL", "60000"]).await;
    let shared1 = acquire(&mut a, "rw", &["SHARED", "TTL", "60000"]).await;

    // Enough traffic for several snapshots and segment purges.
    for i in 0..60 {
        let key = format!("churn/{i}");
        acquire(&mut obs, &key, &["TTL", "60000"]).await;
        let _: i64 = ok(&mut obs, &["RELEASE", &key]).await;
    }
    // A queued EXCLUSIVE behind the SHARED hold.
    let mut waiter = server.raw().await;
    let id_w = waiter.cmd(&["CLIENT", "ID"]).await.int();
    waiter
        .send_words(&["ACQUIRE", "rw", "EXCLUSIVE", "WAIT", "60000"])
        .await;
    wait_for_waiters(&mut obs, "rw", 1).await;
    let last_churn = acquire(&mut obs, "churn/0", &["TTL", "60000"]).await;

    // Stop the server with the connections still open: a connection that closes ends
    // its session (and releases its holds) before the stop would.
    server.stop().await;
    drop((a, obs, waiter));
    assert!(
        files(&dir.join("snapshots"), "snap") >= 1,
        "a snapshot was taken"
    );

    let server = Server::start_at(durable_config(&dir), addr).await;
    let mut c = server.redis().await;
    let info: String = ok(&mut c, &["INFO", "persistence"]).await;
    for field in [
        "persistence:wal",
        "fsync:always",
        "epoch:2",
        "recovery_restored_holds:3",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
    let info = inspect(&mut c, "held").await.expect("held is still held");
    assert_eq!(info.holders.len(), 1);
    assert_eq!(
        (info.holders[0].session, info.holders[0].token),
        (id_a, held)
    );
    assert!(info.holders[0].ttl_ms > 50_000, "full TTL again: {info:?}");
    let rw = inspect(&mut c, "rw").await.expect("rw is still held");
    assert_eq!(rw.holders[0].token, shared1);
    assert_eq!(rw.waiter_sessions(), vec![id_w], "the queue came back");
    // Held by a session of the previous run: a try-lock is refused...
    let v: redis::Value = ok(&mut c, &["ACQUIRE", "held", "WAIT", "0"]).await;
    assert_eq!(v, redis::Value::Nil);

    // ...until the restored sessions end (session timeout after recovery). Then the
    // queued EXCLUSIVE of the (also ended) waiter is gone too, and new tokens are above
    // every token of the previous run.
    wait_for_free(&mut c, "held").await;
    wait_for_free(&mut c, "rw").await;
    let again = acquire(&mut c, "held", &["TTL", "60000"]).await;
    assert!(
        again > held && again > last_churn,
        "{again} > {held}, {last_churn}"
    );
    let churn = acquire(&mut c, "churn/1", &["TTL", "60000"]).await;
    assert!(churn > last_churn);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_modes_all_serve_and_recover() {
    for mode in ["always", "interval:5", "never"] {
        let dir = data_dir(&mode.replace(':', "-"));
        let config = Config {
            fsync: turnstile::config::parse_fsync(mode).unwrap(),
            ..durable_config(&dir)
        };
        let server = Server::start_with(config.clone()).await;
        let addr = server.addr;
        let mut a = server.redis().await;
        let t = acquire(&mut a, "k", &["TTL", "60000"]).await;
        server.stop().await;
        drop(a);
        let server = Server::start_at(config, addr).await;
        let mut b = server.redis().await;
        let info = inspect(&mut b, "k").await.expect("k held after restart");
        assert_eq!(info.holders[0].token, t, "--fsync {mode}");
        server.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_log_stops_startup_unless_repaired() {
    let dir = data_dir("corrupt");
    let config = Config {
        snapshot_every: 1_000_000,
        wal_segment_bytes: 512,
        ..durable_config(&dir)
    };
    let server = Server::start_with(config.clone()).await;
    let addr = server.addr;
    let mut a = server.redis().await;
    for i in 0..40 {
        acquire(&mut a, &format!("k{i}"), &["TTL", "60000"]).await;
    }
    drop(a);
    server.stop().await;
    // Flip a byte in the middle of the first segment (not its tail).
    let wal = dir.join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 2, "several segments: {segs:?}");
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        turnstile::server::run(listener, config.clone(), std::future::pending::<()>()),
    )
    .await
    .expect("startup fails fast");
    let msg = refused.expect_err("corruption refuses startup").to_string();
    assert!(
        msg.contains(&segs[0].file_name().unwrap().to_string_lossy().to_string()),
        "the error names the file: {msg}"
    );
    assert!(msg.contains("offset"), "the error names the offset: {msg}");

    let repaired = Config {
        wal_repair: true,
        ..config
    };
    let server = Server::start_at(repaired, addr).await;
    let mut b = server.redis().await;
    let _: String = ok(&mut b, &["PING"]).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tells_who_held_a_key_and_how_each_hold_ended() {
    let dir = data_dir("audit");
    let config = Config {
        session_timeout_ms: 10_000,
        ..durable_config(&dir)
    };
    let server = Server::start_with(config).await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let id_a = client_id(&mut a).await;
    let id_b = client_id(&mut b).await;
    let t1 = acquire(&mut a, "orders/42", &["TTL", "60000"]).await;
    let _: i64 = ok(&mut a, &["RELEASE", "orders/42"]).await;
    let t2 = acquire(&mut b, "orders/42", &["TTL", "200"]).await;
    // b's lease runs out; then a holds it again and disconnects (its session ends).
    wait_for_free(&mut a, "orders/42").await;
    let t3 = acquire(&mut a, "orders/42", &["TTL", "60000"]).await;
    acquire(&mut b, "other", &["TTL", "60000"]).await;
    drop(a);
    wait_for_free(&mut b, "orders/42").await;
    server.stop().await;

    let mut out = Vec::new();
    let filter = turnstile::durable::audit::Filter {
        key: Some(b"orders/*".to_vec()),
        ..Default::default()
    };
    let changes = turnstile::durable::audit::run(&dir, &filter, &mut out).expect("audit");
    let got: Vec<(i64, u64, &str)> = changes
        .iter()
        .map(|c| (c.session.0 as i64, c.token, c.what))
        .collect();
    assert_eq!(
        got,
        vec![
            (id_a, t1 as u64, "granted"),
            (id_a, t1 as u64, "released"),
            (id_b, t2 as u64, "granted"),
            (id_b, t2 as u64, "expired"),
            (id_a, t3 as u64, "granted"),
            (id_a, t3 as u64, "session ended"),
        ]
    );
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("key=orders/42"), "{text}");
    assert!(!text.contains("key=other"), "{text}");
    assert!(
        text.starts_with("20"),
        "dated from the Clock record: {text}"
    );
    // A time window after everything: nothing.
    let later = turnstile::durable::audit::Filter {
        since_ms: Some(u64::MAX / 2),
        ..Default::default()
    };
    assert!(
        turnstile::durable::audit::run(&dir, &later, &mut Vec::new())
            .unwrap()
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
