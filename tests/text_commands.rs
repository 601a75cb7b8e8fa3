//! Every command of the text-mode contract (`shared/contract/text-commands.md`) over a real
//! socket, with the Rust `redis` crate as the client (and raw bytes where the exact wire
//! form matters): PING, AUTH, HELLO, CLIENT, QUIT, ACQUIRE with every mode and option,
//! RELEASE, RENEW, INSPECT, LOCKS, INFO, the RESP3 forms, and the error codes of each.

mod common;

use std::collections::BTreeSet;

use common::*;
use redis::Value;
use turnstile::Config;

// ---------------------------------------------------------------------------------------
// PING, unknown commands
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_without_and_with_message() {
    let server = Server::start().await;
    let mut con = server.redis().await;
    let pong: String = ok(&mut con, &["PING"]).await;
    assert_eq!(pong, "PONG");
    let msg: String = ok(&mut con, &["PING", "hello world"]).await;
    assert_eq!(msg, "hello world");
    let lower: String = ok(&mut con, &["ping"]).await;
    assert_eq!(lower, "PONG");

    // The exact wire forms: a status reply, and the message as a bulk string.
    let mut raw = server.raw().await;
    raw.send(b"PING\r\n").await;
    assert_eq!(raw.read_exact_bytes(7).await, b"+PONG\r\n");
    raw.send_words(&["PING", "hi"]).await;
    assert_eq!(raw.read_exact_bytes(8).await, b"$2\r\nhi\r\n");

    let (code, _) = err(&mut con, &["PING", "a", "b"]).await;
    assert_eq!(code, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_is_an_error_and_the_connection_lives_on() {
    let server = Server::start().await;
    let mut con = server.redis().await;
    let (code, text) = err(&mut con, &["FLUSHEVERYTHING", "now"]).await;
    assert_eq!(code, "ERR");
    assert!(text.contains("unknown command"), "{text}");
    let pong: String = ok(&mut con, &["PING"]).await;
    assert_eq!(pong, "PONG");

    let mut raw = server.raw().await;
    let r = raw.cmd(&["NOSUCHCOMMAND"]).await;
    assert!(r.error_text().starts_with("ERR unknown command"), "{r:?}");
    assert_eq!(raw.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
}

// ---------------------------------------------------------------------------------------
// AUTH
// ---------------------------------------------------------------------------------------

fn with_password() -> Config {
    Config {
        requirepass: Some("s3cret".into()),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_gates_every_command_but_auth_ping_hello_quit() {
    let server = Server::start_with(with_password()).await;
    let mut con = server.redis().await;

    for words in [
        &["ACQUIRE", "k"][..],
        &["RELEASE", "k"],
        &["RENEW", "k"],
        &["INSPECT", "k"],
        &["LOCKS"],
        &["INFO"],
        &["CLIENT", "ID"],
    ] {
        let (code, _) = err(&mut con, words).await;
        assert_eq!(code, "NOAUTH", "{words:?} before AUTH");
    }
    let pong: String = ok(&mut con, &["PING"]).await;
    assert_eq!(pong, "PONG");

    let (code, _) = err(&mut con, &["AUTH", "wrong"]).await;
    assert_eq!(code, "WRONGPASS");
    let (code, _) = err(&mut con, &["AUTH", "someone", "s3cret"]).await;
    assert_eq!(code, "WRONGPASS", "only the default user exists");
    let (code, _) = err(&mut con, &["ACQUIRE", "k"]).await;
    assert_eq!(code, "NOAUTH", "a failed AUTH does not authenticate");

    let okay: String = ok(&mut con, &["AUTH", "s3cret"]).await;
    assert_eq!(okay, "OK");
    assert!(acquire(&mut con, "k", &[]).await > 0);

    let mut other = server.redis().await;
    let okay: String = ok(&mut other, &["AUTH", "default", "s3cret"]).await;
    assert_eq!(okay, "OK");
    let info = inspect(&mut other, "k").await.expect("k is held");
    assert_eq!(info.holders.len(), 1);

    // QUIT is allowed before AUTH.
    let mut raw = server.raw().await;
    assert_eq!(raw.cmd(&["QUIT"]).await, Reply::Simple("OK".into()));
    raw.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_through_the_client_url() {
    let server = Server::start_with(with_password()).await;
    let mut con = connect_url(&format!("redis://:s3cret@{}", server.addr)).await;
    assert!(acquire(&mut con, "k", &[]).await > 0);
    let mut con = connect_url(&format!("redis://default:s3cret@{}", server.addr)).await;
    let busy: Option<i64> = ok(&mut con, &["ACQUIRE", "k", "WAIT", "0"]).await;
    assert_eq!(busy, None, "authenticated, and k is held");

    let client = redis::Client::open(format!("redis://:nope@{}", server.addr)).unwrap();
    let res = tokio::time::timeout(REPLY_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("bounded");
    assert!(
        res.is_err(),
        "a wrong password in the URL must fail to connect"
    );
}

/// Redis's default user has `nopass` when no password is configured: `AUTH default <any>`
/// and `HELLO 3 AUTH default <any>` succeed. Clients configured with a password and RESP3
/// (redis-py `protocol=3`, the `redis` crate with `?protocol=resp3`) send the latter when
/// they connect, so against a server without a password they fail to connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_a_username_without_a_configured_password_succeeds_as_in_redis() {
    let server = Server::start().await;
    let mut raw = server.raw().await;
    let r = raw
        .cmd(&["HELLO", "3", "AUTH", "default", "anything"])
        .await;
    assert!(
        matches!(r, Reply::Map(_)),
        "HELLO 3 AUTH default <pw>: {r:?}"
    );
    let r = raw.cmd(&["AUTH", "default", "anything"]).await;
    assert_eq!(r, Reply::Simple("OK".into()), "AUTH default <pw>");
    let mut con = connect_url(&format!("redis://:pw@{}/?protocol=resp3", server.addr)).await;
    assert!(acquire(&mut con, "k", &[]).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_a_configured_password_is_an_error() {
    let server = Server::start().await;
    let mut con = server.redis().await;
    let (code, _) = err(&mut con, &["AUTH", "x"]).await;
    assert_eq!(code, "ERR");
    // Commands work without AUTH when no password is configured.
    assert!(acquire(&mut con, "k", &[]).await > 0);
}

// ---------------------------------------------------------------------------------------
// HELLO
// ---------------------------------------------------------------------------------------

fn hello_fields(r: &Reply) -> Vec<(String, Reply)> {
    let as_text = |k: &Reply| match k {
        Reply::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
        Reply::Simple(s) => s.clone(),
        other => panic!("field name {other:?}"),
    };
    match r {
        Reply::Map(m) => m.iter().map(|(k, v)| (as_text(k), v.clone())).collect(),
        Reply::Array(a) => a
            .chunks(2)
            .map(|p| (as_text(&p[0]), p[1].clone()))
            .collect(),
        other => panic!("HELLO reply {other:?}"),
    }
}

fn field<'a>(fields: &'a [(String, Reply)], name: &str) -> &'a Reply {
    &fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("HELLO has no {name}: {fields:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_2_and_3_describe_the_server() {
    let server = Server::start().await;
    let mut raw = server.raw().await;
    let id = raw.cmd(&["CLIENT", "ID"]).await.int();

    for (args, resp3) in [
        (&["HELLO"][..], false),
        (&["HELLO", "2"], false),
        (&["hello", "3"], true),
        (&["HELLO", "2"], false),
    ] {
        let r = raw.cmd(args).await;
        match (&r, resp3) {
            (Reply::Map(_), true) | (Reply::Array(_), false) => {}
            _ => panic!("{args:?}: wrong reply shape {r:?}"),
        }
        let f = hello_fields(&r);
        assert_eq!(field(&f, "server"), &Reply::bulk("turnstile"));
        assert!(matches!(field(&f, "version"), Reply::Bulk(v) if !v.is_empty()));
        assert_eq!(
            field(&f, "proto"),
            &Reply::Int(if resp3 { 3 } else { 2 }),
            "{args:?}"
        );
        assert_eq!(field(&f, "id"), &Reply::Int(id));
        assert_eq!(field(&f, "mode"), &Reply::bulk("standalone"));
        assert_eq!(field(&f, "role"), &Reply::bulk("leader"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_unsupported_version_is_noproto_and_changes_nothing() {
    let server = Server::start().await;
    let mut raw = server.raw().await;
    let r = raw.cmd(&["HELLO", "4"]).await;
    assert!(r.error_text().starts_with("NOPROTO"), "{r:?}");
    let r = raw.cmd(&["HELLO", "1"]).await;
    assert!(r.error_text().starts_with("NOPROTO"), "{r:?}");
    // Still RESP2: a nil is `$-1`.
    raw.send_words(&["CLIENT", "GETNAME"]).await;
    assert_eq!(raw.read_exact_bytes(5).await, b"$-1\r\n");

    let r = raw.cmd(&["HELLO", "three"]).await;
    assert!(r.error_text().starts_with("ERR"), "{r:?}");
    assert_eq!(raw.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_with_auth_and_setname() {
    let server = Server::start_with(with_password()).await;
    let mut raw = server.raw().await;
    // The contract exempts HELLO from NOAUTH: it answers, but does not authenticate.
    let r = raw.cmd(&["HELLO", "3"]).await;
    assert!(matches!(r, Reply::Map(_)), "{r:?}");
    let r = raw.cmd(&["ACQUIRE", "k"]).await;
    assert!(r.error_text().starts_with("NOAUTH"), "{r:?}");
    let r = raw.cmd(&["HELLO", "3", "AUTH", "default", "bad"]).await;
    assert!(r.error_text().starts_with("WRONGPASS"), "{r:?}");
    let r = raw
        .cmd(&[
            "HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "worker-7",
        ])
        .await;
    let f = hello_fields(&r);
    assert!(matches!(r, Reply::Map(_)), "{r:?}");
    assert_eq!(field(&f, "proto"), &Reply::Int(3));
    assert_eq!(
        raw.cmd(&["CLIENT", "GETNAME"]).await,
        Reply::bulk("worker-7")
    );
    assert!(raw.cmd(&["ACQUIRE", "k"]).await.int() > 0);

    // The redis crate's own RESP3 handshake (HELLO 3 AUTH ...) works too.
    let mut con = connect_url(&format!("redis://:s3cret@{}/?protocol=resp3", server.addr)).await;
    let v: Value = ok(&mut con, &["HELLO"]).await;
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    let f = pairs(&v);
    assert_eq!(int(&f.iter().find(|(k, _)| k == "proto").unwrap().1), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_nil_is_underscore_and_resp2_nil_is_dollar_minus_one() {
    let server = Server::start().await;
    let mut holder = server.redis().await;
    acquire(&mut holder, "k", &[]).await;

    let mut raw = server.raw().await;
    raw.send_words(&["ACQUIRE", "k", "WAIT", "0"]).await;
    assert_eq!(raw.read_exact_bytes(5).await, b"$-1\r\n");
    raw.send_words(&["CLIENT", "GETNAME"]).await;
    assert_eq!(raw.read_exact_bytes(5).await, b"$-1\r\n");

    assert!(matches!(raw.cmd(&["HELLO", "3"]).await, Reply::Map(_)));
    raw.send_words(&["ACQUIRE", "k", "WAIT", "0"]).await;
    assert_eq!(raw.read_exact_bytes(3).await, b"_\r\n");
    raw.send_words(&["CLIENT", "GETNAME"]).await;
    assert_eq!(raw.read_exact_bytes(3).await, b"_\r\n");
    raw.send_words(&["ACQUIRE", "k", "WAIT", "50"]).await;
    assert_eq!(raw.read_exact_bytes(3).await, b"_\r\n");

    // And the redis crate in RESP3 mode sees a nil.
    let mut con3 = server.redis3().await;
    let v: Value = ok(&mut con3, &["ACQUIRE", "k", "WAIT", "0"]).await;
    assert_eq!(v, Value::Nil);
}

// ---------------------------------------------------------------------------------------
// CLIENT, QUIT
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_setname_getname_id_setinfo() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;

    let name: Option<String> = ok(&mut a, &["CLIENT", "GETNAME"]).await;
    assert_eq!(name, None);
    let okay: String = ok(&mut a, &["CLIENT", "SETNAME", "alpha"]).await;
    assert_eq!(okay, "OK");
    let name: Option<String> = ok(&mut a, &["client", "getname"]).await;
    assert_eq!(name.as_deref(), Some("alpha"));
    let (code, _) = err(&mut a, &["CLIENT", "SETNAME", "has space"]).await;
    assert_eq!(code, "ERR");
    let okay: String = ok(&mut b, &["CLIENT", "SETNAME", "temp"]).await;
    assert_eq!(okay, "OK");
    let okay: String = ok(&mut b, &["CLIENT", "SETNAME", ""]).await;
    assert_eq!(okay, "OK");
    let name: Option<String> = ok(&mut b, &["CLIENT", "GETNAME"]).await;
    assert_eq!(name, None, "an empty name clears it, as in Redis");

    // CLIENT ID is the session: it names the holder in INSPECT.
    let id_a = client_id(&mut a).await;
    let id_b = client_id(&mut b).await;
    assert!(id_a > 0 && id_b > 0 && id_a != id_b);
    acquire(&mut a, "k", &[]).await;
    let info = inspect(&mut b, "k").await.unwrap();
    assert_eq!(info.holder_sessions(), vec![id_a]);

    let okay: String = ok(&mut a, &["CLIENT", "SETINFO", "LIB-NAME", "mylib"]).await;
    assert_eq!(okay, "OK");
    let okay: String = ok(&mut a, &["CLIENT", "SETINFO", "lib-ver", "1.2.3"]).await;
    assert_eq!(okay, "OK");
    let info: String = ok(&mut a, &["CLIENT", "INFO"]).await;
    assert!(info.contains("lib-name=mylib"), "{info}");
    assert!(info.contains("lib-ver=1.2.3"), "{info}");
    assert!(info.contains("name=alpha"), "{info}");
    // The redis crate stores its own name when it connects.
    let info: String = ok(&mut b, &["CLIENT", "INFO"]).await;
    assert!(info.contains("lib-name=redis-rs"), "{info}");

    let (code, _) = err(&mut a, &["CLIENT", "NOSUCH"]).await;
    assert_eq!(code, "ERR");
    let (code, _) = err(&mut a, &["CLIENT"]).await;
    assert_eq!(code, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_replies_ok_then_closes_and_releases() {
    let server = Server::start().await;
    let mut observer = server.redis().await;
    let mut raw = server.raw().await;
    assert!(raw.cmd(&["ACQUIRE", "k"]).await.int() > 0);
    raw.send_words(&["QUIT"]).await;
    assert_eq!(raw.read_exact_bytes(5).await, b"+OK\r\n");
    assert!(raw.closed().await.is_empty());
    wait_for_free(&mut observer, "k").await;

    // Commands pipelined after QUIT are not run.
    let mut raw = server.raw().await;
    let mut batch = encode_words(&["PING", "one"]);
    batch.extend(encode_words(&["QUIT"]));
    batch.extend(encode_words(&["ACQUIRE", "after-quit"]));
    raw.send(&batch).await;
    assert_eq!(raw.reply().await, Reply::bulk("one"));
    assert_eq!(raw.reply().await, Reply::Simple("OK".into()));
    raw.closed().await;
    assert!(inspect(&mut observer, "after-quit").await.is_none());
}

// ---------------------------------------------------------------------------------------
// ACQUIRE
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_default_is_exclusive_with_the_default_ttl() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let id_a = client_id(&mut a).await;
    let token = acquire(&mut a, "k", &[]).await;
    assert!(token > 0);

    let info = inspect(&mut b, "k").await.unwrap();
    assert_eq!(info.kind, "lock");
    assert_eq!(info.limit, 0);
    assert_eq!(info.fencing, token);
    assert_eq!(info.holders.len(), 1);
    let h = &info.holders[0];
    assert_eq!(
        (h.session, h.mode.as_str(), h.token),
        (id_a, "exclusive", token)
    );
    assert_eq!((h.permits, h.count), (1, 1));
    assert!(
        (20_000..=30_000).contains(&h.ttl_ms),
        "default TTL 30000: {}",
        h.ttl_ms
    );
    assert!(info.waiters.is_empty());

    // Exclusive: nobody else, in any mode.
    for opts in [
        &["WAIT", "0"][..],
        &["EXCLUSIVE", "WAIT", "0"],
        &["SHARED", "WAIT", "0"],
    ] {
        let mut words = vec!["ACQUIRE", "k"];
        words.extend_from_slice(opts);
        let v: Option<i64> = ok(&mut b, &words).await;
        assert_eq!(v, None, "{words:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_options_are_case_insensitive_and_in_any_order() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let t1 = acquire(&mut a, "k1", &["exclusive", "ttl", "5000", "wait", "100"]).await;
    let t2 = acquire(&mut a, "k2", &["Wait", "100", "Ttl", "5000", "Shared"]).await;
    let t3 = acquire(
        &mut a,
        "k3",
        &["semaphore", "4", "permits", "3", "TTL", "5000"],
    )
    .await;
    let t4 = acquire(&mut a, "k4", &["TTL", "5000", "reentrant", "SHARED"]).await;
    let t5: i64 = ok(&mut a, &["acquire", "k5", "TTL", "5000"]).await;
    assert!([t1, t2, t3, t4, t5].iter().all(|&t| t > 0));

    let i2 = inspect(&mut b, "k2").await.unwrap();
    assert_eq!(i2.holders[0].mode, "shared");
    let i3 = inspect(&mut b, "k3").await.unwrap();
    assert_eq!((i3.kind.as_str(), i3.limit), ("semaphore", 4));
    assert_eq!(
        (i3.holders[0].mode.as_str(), i3.holders[0].permits),
        ("semaphore", 3)
    );
    for k in ["k1", "k2", "k3", "k4", "k5"] {
        let ttl = inspect(&mut b, k).await.unwrap().holders[0].ttl_ms;
        assert!((1..=5000).contains(&ttl), "{k}: TTL 5000 gave {ttl}");
    }
    let t4b = acquire(&mut a, "k4", &["shared", "REENTRANT"]).await;
    assert_eq!(t4b, t4);

    // The shortest lease is 1 ms.
    assert!(acquire(&mut a, "k6", &["TTL", "1"]).await > 0);
    wait_for_free(&mut b, "k6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_shared_holders_share() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let mut c = server.redis().await;
    let ta = acquire(&mut a, "rw", &["SHARED"]).await;
    let tb = acquire(&mut b, "rw", &["SHARED"]).await;
    assert!(tb > ta, "each grant gets a new, larger token");
    let info = inspect(&mut c, "rw").await.unwrap();
    assert_eq!(info.holders.len(), 2);
    assert!(info.holders.iter().all(|h| h.mode == "shared"));
    assert_eq!(info.fencing, tb);
    let v: Option<i64> = ok(&mut c, &["ACQUIRE", "rw", "EXCLUSIVE", "WAIT", "0"]).await;
    assert_eq!(v, None, "the writer waits for the readers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_semaphore_permits() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let mut c = server.redis().await;
    acquire(&mut a, "sem", &["SEMAPHORE", "3", "PERMITS", "2"]).await;
    acquire(&mut b, "sem", &["SEMAPHORE", "3"]).await;
    let v: Option<i64> = ok(&mut c, &["ACQUIRE", "sem", "SEMAPHORE", "3", "WAIT", "0"]).await;
    assert_eq!(v, None, "all 3 permits are taken");
    let info = inspect(&mut c, "sem").await.unwrap();
    assert_eq!((info.kind.as_str(), info.limit), ("semaphore", 3));
    let permits: Vec<i64> = info.holders.iter().map(|h| h.permits).collect();
    assert_eq!(permits, vec![2, 1]);
    let _: i64 = ok(&mut b, &["RELEASE", "sem"]).await;
    acquire(&mut c, "sem", &["SEMAPHORE", "3", "WAIT", "0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_reentrant_counts_levels_and_returns_the_same_token() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let t = acquire(&mut a, "re", &["REENTRANT"]).await;
    assert_eq!(acquire(&mut a, "re", &["REENTRANT"]).await, t);
    assert_eq!(acquire(&mut a, "re", &["EXCLUSIVE", "REENTRANT"]).await, t);
    let info = inspect(&mut b, "re").await.unwrap();
    assert_eq!(info.holders[0].count, 3);
    assert_eq!(info.fencing, t, "a reentrant acquire issues no token");

    // Another mode, or no REENTRANT, waits on itself.
    let (code, _) = err(&mut a, &["ACQUIRE", "re", "SHARED", "REENTRANT"]).await;
    assert_eq!(code, "DEADLOCK");
    let (code, _) = err(&mut a, &["ACQUIRE", "re"]).await;
    assert_eq!(code, "DEADLOCK");

    for left in [2, 1] {
        let one: i64 = ok(&mut a, &["RELEASE", "re"]).await;
        assert_eq!(one, 1);
        assert_eq!(inspect(&mut b, "re").await.unwrap().holders[0].count, left);
    }
    let _: i64 = ok(&mut a, &["RELEASE", "re"]).await;
    assert!(inspect(&mut b, "re").await.is_none());
    let (code, _) = err(&mut a, &["RELEASE", "re"]).await;
    assert_eq!(code, "NOTHELD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_syntax_and_number_errors() {
    let server = Server::start().await;
    let mut con = server.redis().await;
    for words in [
        &["ACQUIRE"][..],
        &["ACQUIRE", "k", "BOGUS"],
        &["ACQUIRE", "k", "TTL"],
        &["ACQUIRE", "k", "TTL", "abc"],
        &["ACQUIRE", "k", "TTL", "-5"],
        &["ACQUIRE", "k", "TTL", "1.5"],
        &["ACQUIRE", "k", "TTL", "0"],
        &["ACQUIRE", "k", "TTL", "99999999999999999999999"],
        &["ACQUIRE", "k", "WAIT", "x"],
        &["ACQUIRE", "k", "WAIT", "-1"],
        &["ACQUIRE", "k", "WAIT"],
        &["ACQUIRE", "k", "EXCLUSIVE", "SHARED"],
        &["ACQUIRE", "k", "SHARED", "SHARED"],
        &["ACQUIRE", "k", "TTL", "5", "TTL", "6"],
        &["ACQUIRE", "k", "WAIT", "1", "WAIT", "2"],
        &["ACQUIRE", "k", "REENTRANT", "REENTRANT"],
        &["ACQUIRE", "k", "SEMAPHORE"],
        &["ACQUIRE", "k", "SEMAPHORE", "0"],
        &["ACQUIRE", "k", "SEMAPHORE", "two"],
        &["ACQUIRE", "k", "SEMAPHORE", "2", "PERMITS", "3"],
        &["ACQUIRE", "k", "SEMAPHORE", "2", "PERMITS", "0"],
        &["ACQUIRE", "k", "PERMITS", "1"],
        &["ACQUIRE", "k", "SHARED", "PERMITS", "1"],
        &["ACQUIRE", "k", "SEMAPHORE", "2", "REENTRANT"],
        &["ACQUIRE", "k", "SEMAPHORE", "2", "SHARED"],
    ] {
        let (code, text) = err(&mut con, words).await;
        assert_eq!(code, "ERR", "{words:?}: {text}");
    }
    // None of them created the key, and the connection is fine.
    assert!(inspect(&mut con, "k").await.is_none());
    assert!(acquire(&mut con, "k", &[]).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongtype_lock_versus_semaphore() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    acquire(&mut a, "lock", &[]).await;
    acquire(&mut a, "sem", &["SEMAPHORE", "2"]).await;

    let (code, _) = err(&mut b, &["ACQUIRE", "lock", "SEMAPHORE", "2"]).await;
    assert_eq!(code, "WRONGTYPE");
    let (code, _) = err(&mut b, &["ACQUIRE", "lock", "SEMAPHORE", "2", "WAIT", "0"]).await;
    assert_eq!(code, "WRONGTYPE");
    for opts in [&[][..], &["SHARED"], &["EXCLUSIVE", "WAIT", "0"]] {
        let mut words = vec!["ACQUIRE", "sem"];
        words.extend_from_slice(opts);
        let (code, _) = err(&mut b, &words).await;
        assert_eq!(code, "WRONGTYPE", "{words:?}");
    }
    let (code, text) = err(&mut b, &["ACQUIRE", "sem", "SEMAPHORE", "3"]).await;
    assert_eq!(code, "WRONGTYPE", "a semaphore with another limit: {text}");
    // The holder itself gets WRONGTYPE too, not DEADLOCK.
    let (code, _) = err(&mut a, &["ACQUIRE", "lock", "SEMAPHORE", "5"]).await;
    assert_eq!(code, "WRONGTYPE");

    // Once the key is gone its kind is free again.
    let _: i64 = ok(&mut a, &["RELEASE", "lock"]).await;
    acquire(&mut b, "lock", &["SEMAPHORE", "2"]).await;
    let info = inspect(&mut b, "lock").await.unwrap();
    assert_eq!((info.kind.as_str(), info.limit), ("semaphore", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_strictly_increase_per_key_and_inspect_shows_the_last() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let mut last = 0;
    for i in 0..20 {
        let con = if i % 2 == 0 { &mut a } else { &mut b };
        let t = acquire(con, "tok", &[]).await;
        assert!(t > last, "token {t} after {last}");
        last = t;
        let info = inspect(con, "tok").await.unwrap();
        assert_eq!(info.fencing, t);
        let _: i64 = ok(con, &["RELEASE", "tok"]).await;
    }
    let mut seen = BTreeSet::new();
    for k in ["x1", "x2", "x3", "x4", "x5", "x6"] {
        let t = acquire(&mut a, k, &[]).await;
        assert!(seen.insert(t), "token {t} issued twice");
    }
}

// ---------------------------------------------------------------------------------------
// RELEASE, RENEW
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_frees_and_notheld_otherwise() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    acquire(&mut a, "k", &[]).await;
    let (code, _) = err(&mut b, &["RELEASE", "k"]).await;
    assert_eq!(code, "NOTHELD", "another session's hold");
    let (code, _) = err(&mut b, &["RELEASE", "never"]).await;
    assert_eq!(code, "NOTHELD", "an unknown key");
    let one: i64 = ok(&mut a, &["RELEASE", "k"]).await;
    assert_eq!(one, 1);
    let (code, _) = err(&mut a, &["RELEASE", "k"]).await;
    assert_eq!(code, "NOTHELD", "released twice");
    assert!(inspect(&mut b, "k").await.is_none());
    acquire(&mut b, "k", &["WAIT", "0"]).await;

    let (code, _) = err(&mut a, &["RELEASE"]).await;
    assert_eq!(code, "ERR");
    let (code, _) = err(&mut a, &["RELEASE", "k", "extra"]).await;
    assert_eq!(code, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_returns_the_remaining_lease() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    acquire(&mut a, "k", &["TTL", "20000"]).await;
    let left: i64 = ok(&mut a, &["RENEW", "k"]).await;
    assert!(
        (15_000..=20_000).contains(&left),
        "RENEW keeps the TTL: {left}"
    );
    let left: i64 = ok(&mut a, &["RENEW", "k", "TTL", "60000"]).await;
    assert!((55_000..=60_000).contains(&left), "{left}");
    let ttl = inspect(&mut b, "k").await.unwrap().holders[0].ttl_ms;
    assert!(
        (50_000..=60_000).contains(&ttl),
        "INSPECT after RENEW: {ttl}"
    );
    let left: i64 = ok(&mut a, &["renew", "k", "ttl", "1000"]).await;
    assert!(
        (1..=1000).contains(&left),
        "a shorter lease is allowed: {left}"
    );
    // Without TTL, the last TTL is used again.
    let left: i64 = ok(&mut a, &["RENEW", "k"]).await;
    assert!((1..=1000).contains(&left), "{left}");

    let (code, _) = err(&mut b, &["RENEW", "k"]).await;
    assert_eq!(code, "NOTHELD");
    let (code, _) = err(&mut b, &["RENEW", "nothing"]).await;
    assert_eq!(code, "NOTHELD");
    for words in [
        &["RENEW"][..],
        &["RENEW", "k", "TTL"],
        &["RENEW", "k", "TTL", "x"],
        &["RENEW", "k", "TTL", "-1"],
        &["RENEW", "k", "TTL", "0"],
        &["RENEW", "k", "FOR", "10"],
    ] {
        let (code, text) = err(&mut a, words).await;
        assert_eq!(code, "ERR", "{words:?}: {text}");
    }
    let one: i64 = ok(&mut a, &["RELEASE", "k"]).await;
    assert_eq!(one, 1);
    let (code, _) = err(&mut a, &["RENEW", "k"]).await;
    assert_eq!(code, "NOTHELD");
}

// ---------------------------------------------------------------------------------------
// INSPECT
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_holders_and_waiters_in_queue_order() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    let id_a = client_id(&mut a).await;
    let token = acquire(&mut a, "q", &["TTL", "10000"]).await;

    // Three waiters, queued one at a time, on raw connections (they block).
    let mut waiters = Vec::new();
    let mut ids = Vec::new();
    for (i, mode) in ["SHARED", "EXCLUSIVE", "SHARED"].iter().enumerate() {
        let mut w = server.raw().await;
        ids.push(w.cmd(&["CLIENT", "ID"]).await.int());
        w.send_words(&["ACQUIRE", "q", mode]).await;
        wait_for_waiters(&mut obs, "q", i + 1).await;
        waiters.push(w);
    }
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;

    let info = inspect(&mut obs, "q").await.unwrap();
    assert_eq!(info.kind, "lock");
    assert_eq!(info.limit, 0);
    assert_eq!(info.fencing, token);
    assert_eq!(info.holders.len(), 1);
    let h = &info.holders[0];
    assert_eq!(
        (h.session, h.mode.as_str(), h.token, h.permits, h.count),
        (id_a, "exclusive", token, 1, 1)
    );
    assert!((1..=10_000).contains(&h.ttl_ms));
    assert_eq!(info.waiter_sessions(), ids);
    let modes: Vec<&str> = info.waiters.iter().map(|w| w.mode.as_str()).collect();
    assert_eq!(modes, ["shared", "exclusive", "shared"]);
    assert!(info.waiters.iter().all(|w| w.permits == 1));
    assert!(
        info.waiters[0].waited_ms >= info.waiters[2].waited_ms,
        "the first in line has waited longest: {:?}",
        info.waiters
    );
    assert!(info.waiters[0].waited_ms >= 20, "{:?}", info.waiters);

    // Unknown key: an empty array.
    let v: Value = ok(&mut obs, &["INSPECT", "nope"]).await;
    assert_eq!(v, Value::Array(vec![]));
    let (code, _) = err(&mut obs, &["INSPECT"]).await;
    assert_eq!(code, "ERR");
    let (code, _) = err(&mut obs, &["INSPECT", "a", "b"]).await;
    assert_eq!(code, "ERR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_semaphore_waiter_permits() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut obs = server.redis().await;
    acquire(&mut a, "s", &["SEMAPHORE", "5", "PERMITS", "4"]).await;
    let mut w = server.raw().await;
    w.send_words(&["ACQUIRE", "s", "SEMAPHORE", "5", "PERMITS", "3"])
        .await;
    wait_for_waiters(&mut obs, "s", 1).await;
    let info = inspect(&mut obs, "s").await.unwrap();
    assert_eq!((info.kind.as_str(), info.limit), ("semaphore", 5));
    assert_eq!(info.holders[0].permits, 4);
    assert_eq!(
        (info.waiters[0].mode.as_str(), info.waiters[0].permits),
        ("semaphore", 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_is_a_map_in_resp3() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let token = acquire(&mut a, "m", &["SHARED"]).await;

    let mut con3 = server.redis3().await;
    let v: Value = ok(&mut con3, &["INSPECT", "m"]).await;
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    let info = Inspect::from_value(&v).unwrap();
    assert_eq!(info.holders[0].token, token);
    let v: Value = ok(&mut con3, &["INSPECT", "none"]).await;
    assert_eq!(v, Value::Array(vec![]), "an unknown key is an empty array");

    // On the wire: `%5` with the fields in contract order.
    let mut raw = server.raw().await;
    raw.cmd(&["HELLO", "3"]).await;
    match raw.cmd(&["INSPECT", "m"]).await {
        Reply::Map(m) => {
            let names: Vec<Reply> = m.iter().map(|(k, _)| k.clone()).collect();
            let want: Vec<Reply> = ["kind", "limit", "fencing", "holders", "waiters"]
                .iter()
                .map(|s| Reply::bulk(s))
                .collect();
            assert_eq!(names, want);
        }
        other => panic!("INSPECT in RESP3: {other:?}"),
    }
    raw.send_words(&["INSPECT", "none"]).await;
    assert_eq!(raw.read_exact_bytes(4).await, b"*0\r\n");
}

// ---------------------------------------------------------------------------------------
// LOCKS
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_lists_keys_with_match_and_count() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let keys = ["user:1", "user:2", "user:10", "order:1", "a*b"];
    for k in keys {
        acquire(&mut a, k, &[]).await;
    }
    let list = |v: Vec<String>| v.into_iter().collect::<BTreeSet<String>>();
    let set = |s: &[&str]| {
        s.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };

    let all: Vec<String> = ok(&mut a, &["LOCKS"]).await;
    assert_eq!(list(all), set(&keys));
    let m: Vec<String> = ok(&mut a, &["LOCKS", "MATCH", "user:*"]).await;
    assert_eq!(list(m), set(&["user:1", "user:2", "user:10"]));
    let m: Vec<String> = ok(&mut a, &["locks", "match", "user:?"]).await;
    assert_eq!(list(m), set(&["user:1", "user:2"]));
    let m: Vec<String> = ok(&mut a, &["LOCKS", "MATCH", "user:[02]*"]).await;
    assert_eq!(list(m), set(&["user:2"]));
    let m: Vec<String> = ok(&mut a, &["LOCKS", "MATCH", "a\\*b"]).await;
    assert_eq!(list(m), set(&["a*b"]));
    let m: Vec<String> = ok(&mut a, &["LOCKS", "MATCH", "nothing*"]).await;
    assert!(m.is_empty());
    let m: Vec<String> = ok(&mut a, &["LOCKS", "COUNT", "2"]).await;
    assert_eq!(m.len(), 2);
    assert!(m.iter().all(|k| keys.contains(&k.as_str())));
    let m: Vec<String> = ok(&mut a, &["LOCKS", "MATCH", "user:*", "COUNT", "1"]).await;
    assert_eq!(m.len(), 1);
    assert!(m[0].starts_with("user:"));
    let m: Vec<String> = ok(&mut a, &["LOCKS", "COUNT", "100", "MATCH", "order:*"]).await;
    assert_eq!(m, vec!["order:1".to_string()]);

    // Released keys disappear.
    let _: i64 = ok(&mut a, &["RELEASE", "user:10"]).await;
    let m: Vec<String> = ok(&mut a, &["LOCKS", "MATCH", "user:*"]).await;
    assert_eq!(list(m), set(&["user:1", "user:2"]));

    for words in [
        &["LOCKS", "MATCH"][..],
        &["LOCKS", "COUNT", "x"],
        &["LOCKS", "COUNT", "0"],
        &["LOCKS", "BOGUS", "1"],
    ] {
        let (code, _) = err(&mut a, words).await;
        assert_eq!(code, "ERR", "{words:?}");
    }
}

// ---------------------------------------------------------------------------------------
// INFO
// ---------------------------------------------------------------------------------------

fn info_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn info_get(text: &str, name: &str) -> String {
    info_fields(text)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("INFO has no {name}:\n{text}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_has_every_section() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    acquire(&mut a, "i1", &[]).await;
    acquire(&mut a, "i2", &["SHARED"]).await;
    acquire(&mut b, "i2", &["SHARED"]).await;

    let all: String = ok(&mut a, &["INFO"]).await;
    let headers: Vec<&str> = all.lines().filter(|l| l.starts_with("# ")).collect();
    for h in [
        "# Server",
        "# Clients",
        "# Locks",
        "# Stats",
        "# Persistence",
        "# Replication",
    ] {
        assert!(headers.contains(&h), "INFO lacks {h}:\n{all}");
    }
    assert_eq!(info_get(&all, "server"), "turnstile");
    assert!(info_get(&all, "connected_clients").parse::<u64>().unwrap() >= 2);
    assert_eq!(info_get(&all, "keys"), "2");
    assert_eq!(info_get(&all, "holds"), "3");
    assert_eq!(info_get(&all, "waiters"), "0");
    for f in ["wait_p50_us", "wait_p99_us", "total_commands_processed"] {
        info_get(&all, f).parse::<u64>().expect(f);
    }
    assert!(info_get(&all, "acquires").parse::<u64>().unwrap() >= 3);
    assert_eq!(info_get(&all, "role"), "leader");

    for (section, header) in [
        ("server", "# Server"),
        ("CLIENTS", "# Clients"),
        ("locks", "# Locks"),
        ("stats", "# Stats"),
        ("persistence", "# Persistence"),
        ("replication", "# Replication"),
    ] {
        let one: String = ok(&mut a, &["INFO", section]).await;
        let headers: Vec<&str> = one.lines().filter(|l| l.starts_with("# ")).collect();
        assert_eq!(headers, vec![header], "INFO {section}:\n{one}");
        assert!(!info_fields(&one).is_empty(), "INFO {section} has fields");
    }
    let locks: String = ok(&mut a, &["INFO", "locks"]).await;
    assert_eq!(info_get(&locks, "holds"), "3");
}
