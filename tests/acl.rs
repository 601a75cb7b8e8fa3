//! Named users and their permissions (`--users-file`, docs/acl.md) over real sockets, in
//! both protocols: the same matrix of allowed command, denied command, denied key, wrong
//! password, no credentials, disabled user and hashed password; LOCKS filtered to the
//! user's keys; a `user default` line; binary sessions that only their user can resume,
//! also after a restart; and users files that stop the start.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use turnstile::protocol::binary::{self as bin, ErrorCode, Mode, Request, Response};
use turnstile::Config;

/// The password of `ops`, which the file gives only as its SHA-256 digest.
const OPS_PASSWORD: &str = "ops-password";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The users of most tests (the brief's example, plus `lister` for LOCKS filtering).
fn users() -> String {
    format!(
        "# users of the ACL tests\n\
         user alice on >s3cret ~orders/* ~jobs/* +@lock +inspect\n\
         user ops on #{} allkeys +@all\n\
         \n\
         user viewer on >v ~* +@read\n\
         user lister on >l ~orders/* +locks\n\
         user old off >x\n",
        hex(&turnstile::acl::hash_password(OPS_PASSWORD.as_bytes()))
    )
}

/// Writes `text` to a fresh users file.
fn users_file(text: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "turnstile-acl-{}-{}.acl",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("write the users file");
    path
}

/// A server with [`users`]; `default` needs the password `defpw` (`--requirepass`).
async fn start() -> Server {
    Server::start_with(config(&users_file(&users()))).await
}

fn config(file: &Path) -> Config {
    Config {
        users_file: Some(file.to_path_buf()),
        requirepass: Some("defpw".into()),
        ..Config::default()
    }
}

/// A `redis` crate connection authenticated as `user` (RESP2: `AUTH user pass`).
async fn as_user(server: &Server, user: &str, pass: &str) -> redis::aio::MultiplexedConnection {
    connect_url(&format!("redis://{user}:{pass}@{}", server.addr)).await
}

/// The same with RESP3 (`HELLO 3 AUTH user pass`).
async fn as_user3(server: &Server, user: &str, pass: &str) -> redis::aio::MultiplexedConnection {
    connect_url(&format!(
        "redis://{user}:{pass}@{}/?protocol=resp3",
        server.addr
    ))
    .await
}

fn strings(v: &redis::Value) -> Vec<String> {
    let mut out: Vec<String> = items(v).iter().map(text).collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------
// Text mode
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_allowed_commands_and_keys_run() {
    let server = start().await;
    for resp3 in [false, true] {
        let mut alice = if resp3 {
            as_user3(&server, "alice", "s3cret").await
        } else {
            as_user(&server, "alice", "s3cret").await
        };
        let key = if resp3 { "jobs/nightly" } else { "orders/1" };
        let t = acquire(&mut alice, key, &["TTL", "60000"]).await;
        assert!(t > 0);
        let left: i64 = ok(&mut alice, &["RENEW", key]).await;
        assert!(left > 0);
        let info = inspect(&mut alice, key).await.expect("held");
        assert_eq!(info.holders[0].token, t);
        let one: i64 = ok(&mut alice, &["RELEASE", key]).await;
        assert_eq!(one, 1);
        // Always allowed once authenticated.
        let pong: String = ok(&mut alice, &["PING"]).await;
        assert_eq!(pong, "PONG");
        let _: redis::Value = ok(&mut alice, &["CLIENT", "ID"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_denied_commands_get_noperm() {
    let server = start().await;
    let mut alice = as_user(&server, "alice", "s3cret").await;
    for words in [&["LOCKS"][..], &["INFO"], &["CLUSTER", "STATUS"]] {
        let (code, text) = err(&mut alice, words).await;
        assert_eq!(code, "NOPERM", "{words:?}");
        assert_eq!(
            text,
            format!(
                "NOPERM this user has no permissions to run the '{}' command",
                words[0].to_lowercase()
            )
        );
    }
    let mut viewer = as_user(&server, "viewer", "v").await;
    for words in [
        &["ACQUIRE", "orders/1"][..],
        &["RELEASE", "orders/1"],
        &["RENEW", "orders/1"],
    ] {
        let (code, _) = err(&mut viewer, words).await;
        assert_eq!(code, "NOPERM", "{words:?}");
    }
    // viewer reads everything.
    assert!(inspect(&mut viewer, "payroll/1").await.is_none());
    let _: String = ok(&mut viewer, &["INFO", "server"]).await;
    let _: redis::Value = ok(&mut viewer, &["LOCKS"]).await;
    // An unknown command is still unknown, not NOPERM.
    let (code, _) = err(&mut viewer, &["SET", "a", "b"]).await;
    assert_eq!(code, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_outside_the_patterns_get_noperm() {
    let server = start().await;
    let mut alice = as_user(&server, "alice", "s3cret").await;
    for words in [
        &["ACQUIRE", "payroll/7", "TTL", "1000"][..],
        &["RELEASE", "payroll/7"],
        &["RENEW", "payroll/7"],
        &["INSPECT", "payroll/7"],
        &["ACQUIRE", "orders"],
    ] {
        let (code, text) = err(&mut alice, words).await;
        assert_eq!(code, "NOPERM", "{words:?}");
        assert_eq!(
            text,
            format!(
                "NOPERM this user has no permissions to access the '{}' key",
                words[1]
            )
        );
    }
    // Nothing was taken.
    let mut ops = as_user(&server, "ops", OPS_PASSWORD).await;
    assert!(inspect(&mut ops, "payroll/7").await.is_none());
    // A key over --max-key-len is LIMIT, as for every user.
    let long = "orders/".to_string() + &"x".repeat(2000);
    let (code, _) = err(&mut alice, &["ACQUIRE", &long]).await;
    assert_eq!(code, "LIMIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_wrong_disabled_and_missing_credentials() {
    let server = start().await;
    let mut raw = server.raw().await;
    // No credentials: default needs its password.
    let r = raw.cmd(&["ACQUIRE", "orders/1"]).await;
    assert!(r.error_text().starts_with("NOAUTH"), "{r:?}");
    let wrongpass = "WRONGPASS invalid username-password pair or user is disabled.";
    // The digest is not the password.
    let ops_digest = hex(&turnstile::acl::hash_password(OPS_PASSWORD.as_bytes()));
    for creds in [
        &["alice", "wrong"][..],
        &["alice", "v"],
        &["nobody", "s3cret"],
        &["old", "x"],
        &["ops", ops_digest.as_str()],
        &["wrong"],
    ] {
        let mut words = vec!["AUTH"];
        words.extend_from_slice(creds);
        assert_eq!(
            raw.cmd(&words).await,
            Reply::Error(wrongpass.into()),
            "{creds:?}"
        );
        let mut hello = vec!["HELLO", "3", "AUTH"];
        if creds.len() == 2 {
            hello.extend_from_slice(creds);
            assert_eq!(raw.cmd(&hello).await, Reply::Error(wrongpass.into()));
        }
        // Still not authenticated.
        let r = raw.cmd(&["INSPECT", "orders/1"]).await;
        assert!(r.error_text().starts_with("NOAUTH"), "{r:?}");
    }
    // The default user with its password, then a failed AUTH keeps it.
    assert_eq!(
        raw.cmd(&["AUTH", "defpw"]).await,
        Reply::Simple("OK".into())
    );
    assert!(raw
        .cmd(&["AUTH", "alice", "nope"])
        .await
        .error_text()
        .starts_with("WRONGPASS"));
    assert_eq!(raw.cmd(&["LOCKS"]).await, Reply::Array(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_hashed_password_and_switching_users() {
    let server = start().await;
    let mut raw = server.raw().await;
    assert_eq!(
        raw.cmd(&["AUTH", "ops", OPS_PASSWORD]).await,
        Reply::Simple("OK".into())
    );
    // ops has @all: CLUSTER is permitted (and answers that this server is standalone).
    let r = raw.cmd(&["CLUSTER", "STATUS"]).await;
    assert!(
        r.error_text()
            .starts_with("ERR this server runs standalone"),
        "{r:?}"
    );
    assert!(raw.cmd(&["ACQUIRE", "payroll/1"]).await.int() > 0);
    // HELLO 3 AUTH switches the connection to viewer, who may not release.
    let r = raw.cmd(&["HELLO", "3", "AUTH", "viewer", "v"]).await;
    assert!(matches!(r, Reply::Map(_)), "{r:?}");
    let r = raw.cmd(&["RELEASE", "payroll/1"]).await;
    assert_eq!(
        r.error_text(),
        "NOPERM this user has no permissions to run the 'release' command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_locks_lists_only_the_users_keys() {
    let server = start().await;
    let mut ops = as_user(&server, "ops", OPS_PASSWORD).await;
    for key in ["orders/1", "orders/2", "payroll/1", "jobs/1"] {
        acquire(&mut ops, key, &["TTL", "60000"]).await;
    }
    let mut lister = as_user(&server, "lister", "l").await;
    let v: redis::Value = ok(&mut lister, &["LOCKS"]).await;
    assert_eq!(strings(&v), ["orders/1", "orders/2"]);
    let v: redis::Value = ok(&mut lister, &["LOCKS", "MATCH", "*1"]).await;
    assert_eq!(strings(&v), ["orders/1"]);
    let v: redis::Value = ok(&mut lister, &["LOCKS", "COUNT", "1"]).await;
    assert_eq!(items(&v).len(), 1);
    let v: redis::Value = ok(&mut lister, &["LOCKS", "MATCH", "payroll/*"]).await;
    assert_eq!(strings(&v), Vec::<String>::new());
    // lister may list but not inspect.
    let (code, _) = err(&mut lister, &["INSPECT", "orders/1"]).await;
    assert_eq!(code, "NOPERM");
    let mut viewer = as_user(&server, "viewer", "v").await;
    let v: redis::Value = ok(&mut viewer, &["LOCKS"]).await;
    assert_eq!(items(&v).len(), 4, "~* is every key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_line_decides_what_unauthenticated_connections_may_do() {
    let file = users_file(
        "user default on nopass ~public/* +@read\n\
         user writer on >w allkeys +@all\n",
    );
    let server = Server::start_with(Config {
        users_file: Some(file),
        ..Config::default()
    })
    .await;
    let mut anon = server.redis().await;
    assert!(inspect(&mut anon, "public/x").await.is_none());
    let (code, text) = err(&mut anon, &["INSPECT", "secret/x"]).await;
    assert_eq!(code, "NOPERM");
    assert!(text.contains("'secret/x' key"), "{text}");
    let (code, text) = err(&mut anon, &["ACQUIRE", "public/x"]).await;
    assert_eq!(code, "NOPERM");
    assert!(text.contains("'acquire' command"), "{text}");
    let mut writer = as_user(&server, "writer", "w").await;
    acquire(&mut writer, "public/x", &[]).await;

    // default off: every connection must authenticate as a named user.
    let file = users_file("user default off\nuser writer on >w allkeys +@all\n");
    let server = Server::start_with(Config {
        users_file: Some(file),
        ..Config::default()
    })
    .await;
    let mut raw = server.raw().await;
    assert!(raw.cmd(&["LOCKS"]).await.error_text().starts_with("NOAUTH"));
    assert!(raw
        .cmd(&["AUTH", "default", "anything"])
        .await
        .error_text()
        .starts_with("WRONGPASS"));
    assert_eq!(
        raw.cmd(&["AUTH", "writer", "w"]).await,
        Reply::Simple("OK".into())
    );
    assert_eq!(raw.cmd(&["LOCKS"]).await, Reply::Array(vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_users_files_stop_the_start_naming_the_line() {
    async fn start_err(config: Config) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = Config {
            in_memory: true,
            ..config
        };
        let res = tokio::time::timeout(
            REPLY_TIMEOUT,
            turnstile::server::run(listener, config, std::future::pending::<()>()),
        )
        .await
        .expect("run returns at once");
        res.expect_err("the start is refused").to_string()
    }
    let file = users_file("user alice on >pw\nuser bob on +@write\n");
    let e = start_err(Config {
        users_file: Some(file.clone()),
        ..Config::default()
    })
    .await;
    assert_eq!(
        e,
        format!(
            "{}:2: unknown category '@write' in '+@write' (known: @all, @lock, @read, @admin)",
            file.display()
        )
    );
    let file = users_file("user default on >a\n");
    let e = start_err(Config {
        users_file: Some(file.clone()),
        requirepass: Some("b".into()),
        ..Config::default()
    })
    .await;
    assert!(e.starts_with(&format!("{}:1: ", file.display())), "{e}");
    assert!(e.contains("--requirepass"), "{e}");
    let missing = std::env::temp_dir().join("turnstile-acl-no-such-file.acl");
    let e = start_err(Config {
        users_file: Some(missing),
        ..Config::default()
    })
    .await;
    assert!(e.contains("cannot read the users file"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Binary protocol
// ---------------------------------------------------------------------------------------

fn creds<'a>(user: &'a str, pass: &'a str) -> bin::Hello<'a> {
    bin::Hello {
        auth: Some((user.as_bytes(), pass.as_bytes())),
        ..hello()
    }
}

fn noperm(r: Response) -> String {
    match r {
        Response::Error(e) if e.code == ErrorCode::NoPerm => {
            String::from_utf8(e.message.to_vec()).unwrap()
        }
        other => panic!("expected NOPERM, got {other:?}"),
    }
}

fn granted(r: Response) -> u64 {
    match r {
        Response::Granted { token } => token,
        other => panic!("expected GRANTED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_allowed_requests_run() {
    let server = start().await;
    let mut alice = Bin::connect_with(server.addr, &creds("alice", "s3cret")).await;
    let t = granted(
        alice
            .call(1, acq(b"orders/1", Mode::Exclusive, 0, None))
            .await,
    );
    assert!(matches!(
        alice
            .call(
                2,
                Request::Renew {
                    key: b"orders/1",
                    ttl_ms: 0
                }
            )
            .await,
        Response::Renewed { .. }
    ));
    match alice.call(3, Request::Inspect { key: b"orders/1" }).await {
        Response::Inspect(Some(s)) => assert_eq!(s.holders[0].token, t),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        alice.call(4, Request::Cancel { target: 99 }).await,
        Response::CancelResult { cancelled: false }
    );
    assert_eq!(
        alice.call(5, Request::Release { key: b"orders/1" }).await,
        Response::Ok
    );
    assert!(matches!(
        alice.call(6, Request::Ping(b"x")).await,
        Response::Pong(_)
    ));
    // The hashed password opens ops, who may do anything.
    let mut ops = Bin::connect_with(server.addr, &creds("ops", OPS_PASSWORD)).await;
    granted(
        ops.call(1, acq(b"payroll/1", Mode::Exclusive, 0, None))
            .await,
    );
    assert!(matches!(
        ops.call(2, Request::Info { section: b"server" }).await,
        Response::Info(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_denied_requests_and_keys_get_noperm() {
    let server = start().await;
    let mut alice = Bin::connect_with(server.addr, &creds("alice", "s3cret")).await;
    let r = alice
        .call(
            1,
            Request::Locks {
                pattern: None,
                count: 0,
            },
        )
        .await;
    assert_eq!(
        noperm(r),
        "this user has no permissions to run the 'locks' command"
    );
    let r = alice.call(2, Request::Info { section: b"" }).await;
    assert!(noperm(r).contains("'info' command"));
    for (id, req) in [
        (3, acq(b"payroll/7", Mode::Exclusive, 0, None)),
        (4, Request::Release { key: b"payroll/7" }),
        (
            5,
            Request::Renew {
                key: b"payroll/7",
                ttl_ms: 0,
            },
        ),
        (6, Request::Inspect { key: b"payroll/7" }),
    ] {
        let r = alice.call(id, req).await;
        assert_eq!(
            noperm(r),
            "this user has no permissions to access the 'payroll/7' key"
        );
    }
    // The connection goes on.
    granted(
        alice
            .call(7, acq(b"jobs/1", Mode::Exclusive, 0, None))
            .await,
    );

    let mut viewer = Bin::connect_with(server.addr, &creds("viewer", "v")).await;
    let r = viewer
        .call(1, acq(b"orders/1", Mode::Shared, 0, None))
        .await;
    assert!(noperm(r).contains("'acquire' command"));
    let r = viewer.call(2, Request::Cancel { target: 1 }).await;
    assert!(noperm(r).contains("'cancel' command"));
    assert!(matches!(
        viewer.call(3, Request::Inspect { key: b"jobs/1" }).await,
        Response::Inspect(Some(_))
    ));
    assert_eq!(
        viewer.call(4, Request::Bye { end_session: true }).await,
        Response::Ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_locks_lists_only_the_users_keys() {
    let server = start().await;
    let mut ops = Bin::connect_with(server.addr, &creds("ops", OPS_PASSWORD)).await;
    for (i, key) in [&b"orders/1"[..], b"orders/2", b"payroll/1"]
        .iter()
        .enumerate()
    {
        granted(
            ops.call(i as u32 + 1, acq(key, Mode::Exclusive, 0, None))
                .await,
        );
    }
    let mut lister = Bin::connect_with(server.addr, &creds("lister", "l")).await;
    match lister
        .call(
            1,
            Request::Locks {
                pattern: None,
                count: 0,
            },
        )
        .await
    {
        Response::Locks { mut keys, .. } => {
            keys.sort();
            assert_eq!(keys, [&b"orders/1"[..], b"orders/2"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_wrong_disabled_and_missing_credentials_are_refused() {
    let server = start().await;
    let (mut b, res) = Bin::handshake(server.addr, &hello()).await;
    assert_eq!(res.unwrap_err().code, ErrorCode::NoAuth);
    b.closed().await;
    for (user, pass) in [
        ("alice", "wrong"),
        ("alice", "v"),
        ("nobody", "s3cret"),
        ("old", "x"),
        ("default", "nope"),
    ] {
        let (mut b, res) = Bin::handshake(server.addr, &creds(user, pass)).await;
        let e = res.unwrap_err();
        assert_eq!(e.code, ErrorCode::WrongPass, "{user}");
        assert_eq!(
            e.message,
            &b"invalid username-password pair or user is disabled."[..]
        );
        b.closed().await;
    }
    // The default user with --requirepass.
    let mut d = Bin::connect_with(server.addr, &creds("default", "defpw")).await;
    granted(d.call(1, acq(b"anything", Mode::Exclusive, 0, None)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_sessions_resume_only_for_their_user() {
    let server = start().await;
    let mut alice = Bin::connect_with(server.addr, &creds("alice", "s3cret")).await;
    let secret = alice.secret();
    granted(
        alice
            .call(1, acq(b"orders/9", Mode::Exclusive, 0, None))
            .await,
    );

    // Another user with the secret: NOSESSION, and alice's connection is not taken over.
    for (user, pass) in [("ops", OPS_PASSWORD), ("viewer", "v"), ("default", "defpw")] {
        let (_, res) = Bin::handshake(
            server.addr,
            &bin::Hello {
                resume: Some(secret),
                ..creds(user, pass)
            },
        )
        .await;
        let e = res.unwrap_err();
        assert_eq!(e.code, ErrorCode::NoSession, "{user}");
        assert_eq!(
            e.message,
            &b"no such session (it never existed or it has ended)"[..],
            "the same words as for a session that does not exist"
        );
    }
    assert!(matches!(
        alice.call(2, Request::Ping(b"")).await,
        Response::Pong(_)
    ));

    // alice herself resumes it (taking it over), holds intact.
    let mut again = Bin::connect_with(
        server.addr,
        &bin::Hello {
            resume: Some(secret),
            ..creds("alice", "s3cret")
        },
    )
    .await;
    assert!(again.ok.as_ref().unwrap().resumed);
    alice.closed().await;
    assert_eq!(
        again.call(3, Request::Release { key: b"orders/9" }).await,
        Response::Ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_user_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("turnstile-acl-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = users_file(&users());
    let durable = || Config {
        data_dir: dir.clone(),
        in_memory: false,
        session_timeout_ms: 30_000,
        ..config(&file)
    };
    let server = Server::start_with(durable()).await;
    let addr = server.addr;
    let mut alice = Bin::connect_with(addr, &creds("alice", "s3cret")).await;
    let secret = alice.secret();
    let t = granted(
        alice
            .call(1, acq(b"orders/5", Mode::Exclusive, 60_000, None))
            .await,
    );
    // A default-user session too (logged in the older layout).
    let mut d = Bin::connect_with(addr, &creds("default", "defpw")).await;
    let d_secret = d.secret();
    granted(
        d.call(1, acq(b"plain", Mode::Exclusive, 60_000, None))
            .await,
    );
    server.stop().await;
    drop((alice, d));

    let server = Server::start_at(durable(), addr).await;
    let (_, res) = Bin::handshake(
        addr,
        &bin::Hello {
            resume: Some(secret),
            ..creds("ops", OPS_PASSWORD)
        },
    )
    .await;
    assert_eq!(res.unwrap_err().code, ErrorCode::NoSession);
    let (_, res) = Bin::handshake(
        addr,
        &bin::Hello {
            resume: Some(d_secret),
            ..creds("alice", "s3cret")
        },
    )
    .await;
    assert_eq!(res.unwrap_err().code, ErrorCode::NoSession);

    let mut alice = Bin::connect_with(
        addr,
        &bin::Hello {
            resume: Some(secret),
            ..creds("alice", "s3cret")
        },
    )
    .await;
    assert!(alice.ok.as_ref().unwrap().resumed);
    match alice.call(2, Request::Inspect { key: b"orders/5" }).await {
        Response::Inspect(Some(s)) => assert_eq!(s.holders[0].token, t),
        other => panic!("{other:?}"),
    }
    let d = Bin::connect_with(
        addr,
        &bin::Hello {
            resume: Some(d_secret),
            ..creds("default", "defpw")
        },
    )
    .await;
    assert!(d.ok.as_ref().unwrap().resumed);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
