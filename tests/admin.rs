//! ADMIN commands over real sockets: a forced release hands the key to the next waiter
//! (with a higher token) and the old holder's RELEASE finds nothing; an ended session
//! loses its holds, its parked ACQUIRE and its connection; limits are shown, changed,
//! enforced and kept across a restart; users without `@admin` get NOPERM; and
//! `turnstile audit` tells who did what.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use redis::Value;
use turnstile::Config;

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("turnstile-admin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn durable_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        in_memory: false,
        session_timeout_ms: 10_000,
        ..Config::default()
    }
}

/// `ADMIN LIMITS` as (name, value) pairs.
async fn limits(con: &mut redis::aio::MultiplexedConnection) -> Vec<(String, i64)> {
    let v: Value = ok(con, &["ADMIN", "LIMITS"]).await;
    pairs(&v).into_iter().map(|(k, v)| (k, int(&v))).collect()
}

fn limit(all: &[(String, i64)], name: &str) -> i64 {
    all.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} in {all:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_release_hands_the_key_to_the_next_waiter() {
    let server = Server::start().await;
    let mut holder = server.redis().await;
    let mut admin = server.redis().await;
    let t1 = acquire(&mut holder, "orders/42", &["TTL", "60000", "REENTRANT"]).await;
    // Two levels: a forced release drops both.
    acquire(&mut holder, "orders/42", &["TTL", "60000", "REENTRANT"]).await;
    let mut waiter = server.raw().await;
    waiter
        .send_words(&["ACQUIRE", "orders/42", "WAIT", "10000"])
        .await;
    wait_for_waiters(&mut admin, "orders/42", 1).await;

    let n: i64 = ok(&mut admin, &["ADMIN", "FORCE-RELEASE", "orders/42"]).await;
    assert_eq!(n, 1, "one hold dropped");
    let t2 = waiter.reply().await.int();
    assert!(t2 > t1, "the next holder's token {t2} is above {t1}");
    let (code, _) = err(&mut holder, &["RELEASE", "orders/42"]).await;
    assert_eq!(code, "NOTHELD");
    let info = inspect(&mut admin, "orders/42").await.expect("held");
    assert_eq!(info.holders.len(), 1);

    // A key nobody holds: nothing to release.
    let n: i64 = ok(&mut admin, &["ADMIN", "FORCE-RELEASE", "free"]).await;
    assert_eq!(n, 0);
    let (code, _) = err(&mut admin, &["ADMIN", "FORCE-RELEASE"]).await;
    assert_eq!(code, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_session_releases_its_holds_and_lets_its_connection_go() {
    let server = Server::start().await;
    let mut victim = server.raw().await;
    let id = victim.cmd(&["CLIENT", "ID"]).await.int();
    victim.cmd(&["ACQUIRE", "x", "TTL", "60000"]).await.int();
    victim.cmd(&["ACQUIRE", "y", "TTL", "60000"]).await.int();
    let mut admin = server.redis().await;
    let mut other = server.redis().await;
    let t_other = acquire(&mut other, "z", &["TTL", "60000"]).await;
    // The victim parks behind `other` on z.
    victim.send_words(&["ACQUIRE", "z", "WAIT", "60000"]).await;
    wait_for_waiters(&mut admin, "z", 1).await;

    let n: i64 = ok(&mut admin, &["ADMIN", "END-SESSION", &id.to_string()]).await;
    assert_eq!(n, 1);
    assert!(inspect(&mut admin, "x").await.is_none(), "x released");
    assert!(inspect(&mut admin, "y").await.is_none(), "y released");
    let z = inspect(&mut admin, "z").await.expect("z still held");
    assert!(z.waiters.is_empty(), "its queued request is gone");
    assert_eq!(z.holders[0].token, t_other);
    // The parked ACQUIRE is answered as timed out, the next command ends the connection.
    assert!(
        matches!(victim.reply().await, Reply::Nil),
        "parked ACQUIRE answered nil"
    );
    let r = victim.cmd(&["PING"]).await;
    assert!(
        r.error_text().contains("ended by an administrator"),
        "{r:?}"
    );
    victim.closed().await;
    // Others are unaffected; an unknown session is 0.
    let _: String = ok(&mut other, &["PING"]).await;
    let n: i64 = ok(&mut admin, &["ADMIN", "END-SESSION", "987654"]).await;
    assert_eq!(n, 0);
    let (code, _) = err(&mut admin, &["ADMIN", "END-SESSION", "zero"]).await;
    assert_eq!(code, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shown_changed_enforced_and_survive_a_restart() {
    let dir = data_dir("limits");
    let config = Config {
        max_holds_per_session: 1000,
        ..durable_config(&dir)
    };
    let server = Server::start_with(config.clone()).await;
    let addr = server.addr;
    let mut admin = server.redis().await;
    let before = limits(&mut admin).await;
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["max-waiters-per-key", "max-keys", "max-holds-per-session"]
    );
    assert_eq!(limit(&before, "max-holds-per-session"), 1000);

    let _: String = ok(
        &mut admin,
        &["ADMIN", "LIMITS", "SET", "max-holds-per-session", "2"],
    )
    .await;
    assert_eq!(limit(&limits(&mut admin).await, "max-holds-per-session"), 2);
    let mut a = server.redis().await;
    acquire(&mut a, "l/1", &["TTL", "60000"]).await;
    acquire(&mut a, "l/2", &["TTL", "60000"]).await;
    let (code, _) = err(&mut a, &["ACQUIRE", "l/3", "TTL", "60000"]).await;
    assert_eq!(code, "LIMIT");
    let (code, _) = err(&mut admin, &["ADMIN", "LIMITS", "SET", "max-nothing", "2"]).await;
    assert_eq!(code, "ERR");
    let (code, _) = err(&mut admin, &["ADMIN", "LIMITS", "SET", "max-keys", "0"]).await;
    assert_eq!(code, "ERR");
    drop(a);
    server.stop().await;

    // After a restart (with the same flags) the limit set at runtime is still in force.
    let server = Server::start_at(config, addr).await;
    let mut admin = server.redis().await;
    assert_eq!(limit(&limits(&mut admin).await, "max-holds-per-session"), 2);
    let mut b = server.redis().await;
    acquire(&mut b, "m/1", &["TTL", "60000"]).await;
    acquire(&mut b, "m/2", &["TTL", "60000"]).await;
    let (code, _) = err(&mut b, &["ACQUIRE", "m/3", "TTL", "60000"]).await;
    assert_eq!(code, "LIMIT");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_may_run_admin() {
    let file = std::env::temp_dir().join(format!("turnstile-admin-{}.acl", std::process::id()));
    std::fs::write(
        &file,
        "user alice on >a ~* +@lock +@read\nuser ops on >o allkeys +@admin +@read\n",
    )
    .expect("write the users file");
    let server = Server::start_with(Config {
        users_file: Some(file.clone()),
        requirepass: Some("defpw".into()),
        ..Config::default()
    })
    .await;
    let mut alice = connect_url(&format!("redis://alice:a@{}", server.addr)).await;
    for words in [
        &["ADMIN", "LIMITS"][..],
        &["ADMIN", "FORCE-RELEASE", "k"],
        &["ADMIN", "END-SESSION", "1"],
        &["ADMIN", "LIMITS", "SET", "max-keys", "5"],
    ] {
        let (code, _) = err(&mut alice, words).await;
        assert_eq!(code, "NOPERM", "{words:?}");
    }
    let mut ops = connect_url(&format!("redis://ops:o@{}", server.addr)).await;
    assert_eq!(limit(&limits(&mut ops).await, "max-keys"), 10_000_000);
    // The default user without a `user default` line keeps every command, ADMIN too.
    let mut default = connect_url(&format!("redis://default:defpw@{}", server.addr)).await;
    let _: String = ok(&mut default, &["ADMIN", "LIMITS", "SET", "max-keys", "5"]).await;
    assert_eq!(limit(&limits(&mut ops).await, "max-keys"), 5);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_shows_who_forced_what() {
    let dir = data_dir("audit");
    let users =
        std::env::temp_dir().join(format!("turnstile-admin-audit-{}.acl", std::process::id()));
    std::fs::write(&users, "user ops on >o allkeys +@all\n").expect("write the users file");
    let server = Server::start_with(Config {
        users_file: Some(users.clone()),
        ..durable_config(&dir)
    })
    .await;
    let mut ops = connect_url(&format!("redis://ops:o@{}", server.addr)).await;
    let mut holder = server.redis().await;
    let id = client_id(&mut holder).await;
    let t = acquire(&mut holder, "orders/42", &["TTL", "60000"]).await;
    let n: i64 = ok(&mut ops, &["ADMIN", "FORCE-RELEASE", "orders/42"]).await;
    assert_eq!(n, 1);
    acquire(&mut holder, "orders/43", &["TTL", "60000"]).await;
    let n: i64 = ok(&mut ops, &["ADMIN", "END-SESSION", &id.to_string()]).await;
    assert_eq!(n, 1);
    let _: String = ok(&mut ops, &["ADMIN", "LIMITS", "SET", "max-keys", "77"]).await;
    server.stop().await;

    let mut out = Vec::new();
    let report =
        turnstile::durable::audit::report(&dir, &Default::default(), &mut out).expect("audit");
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!(
            "forced release of orders/42 (tokens {t}, sessions {id}) by ops"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "key=orders/42  session={id}  token={t}  forced release by ops"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("ended session {id} by ops")),
        "{text}"
    );
    assert!(text.contains("session ended by ops"), "{text}");
    assert!(text.contains("set max-keys to 77 by ops"), "{text}");
    assert_eq!(report.actions.len(), 3, "{:?}", report.actions);

    // The binary prints the same.
    let bin = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["audit", "--data-dir"])
        .arg(&dir)
        .args(["--key", "orders/42"])
        .output()
        .expect("run turnstile audit");
    let printed = String::from_utf8_lossy(&bin.stdout);
    assert!(bin.status.success(), "{bin:?}");
    assert!(printed.contains("forced release of orders/42"), "{printed}");
    assert!(
        !printed.contains("max-keys"),
        "a key filter leaves out limits: {printed}"
    );
    let _ = std::fs::remove_file(&users);
    let _ = std::fs::remove_dir_all(&dir);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
