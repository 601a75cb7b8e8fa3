//! Input a client should not send. Input that cannot be framed gets
//! `-ERR Protocol error: ...` and a closed connection (its session ends, its holds are
//! released); everything else (unknown commands, wrong arity, bad options) is an error
//! reply on a connection that lives on. In every case a second, healthy connection is
//! checked to be unaffected. Also: binary-safe keys, and inline commands typed by hand.

mod common;

use common::*;
use redis::aio::MultiplexedConnection;
use turnstile::Config;

/// Small framing limits, so that passing them takes a few bytes.
fn small_frames() -> Config {
    Config {
        max_bulk: 1024,
        max_args: 16,
        max_inline: 256,
        max_request: 4096,
        ..Config::default()
    }
}

/// A server, a healthy connection holding a lock, and a victim connection holding another.
struct Setup {
    server: Server,
    healthy: MultiplexedConnection,
    healthy_token: i64,
    bad: Raw,
}

async fn setup() -> Setup {
    let server = Server::start_with(small_frames()).await;
    let mut healthy = server.redis().await;
    let healthy_token = acquire(&mut healthy, "healthy-key", &[]).await;
    let mut bad = server.raw().await;
    assert!(bad.cmd(&["ACQUIRE", "bad-key"]).await.int() > 0);
    Setup {
        server,
        healthy,
        healthy_token,
        bad,
    }
}

impl Setup {
    /// Sends `input` on the bad connection and expects exactly one protocol error reply
    /// (after `before` other replies), then the end of the connection; checks that the
    /// healthy connection is unaffected and that the bad one's session ended.
    async fn protocol_error(mut self, input: &[u8], before: &[Reply], fragment: &str) {
        self.bad.send(input).await;
        for want in before {
            assert_eq!(&self.bad.reply().await, want);
        }
        let rest = self.bad.closed().await;
        let text = String::from_utf8_lossy(&rest).to_string();
        assert!(
            text.starts_with("-ERR Protocol error: ") && text.ends_with("\r\n"),
            "{input:?}: got {text:?}"
        );
        assert_eq!(text.matches("\r\n").count(), 1, "one error line: {text:?}");
        assert!(
            text.to_lowercase().contains(fragment),
            "{input:?}: {text:?} should mention {fragment:?}"
        );
        self.check_healthy().await;
        // The closed connection's session ended: its lock is free.
        wait_for_free(&mut self.healthy, "bad-key").await;
    }

    async fn check_healthy(&mut self) {
        let pong: String = ok(&mut self.healthy, &["PING"]).await;
        assert_eq!(pong, "PONG");
        let info = inspect(&mut self.healthy, "healthy-key").await.unwrap();
        assert_eq!(info.holders[0].token, self.healthy_token);
        let mut fresh = self.server.raw().await;
        assert_eq!(fresh.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_type_byte_inside_an_array() {
    setup()
        .await
        .protocol_error(b"*1\r\n:5\r\n", &[], "'$'")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_bulk_length() {
    setup()
        .await
        .protocol_error(b"*1\r\n$-5\r\n", &[], "bulk")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_numeric_bulk_length() {
    setup()
        .await
        .protocol_error(b"*1\r\n$four\r\nPING\r\n", &[], "bulk")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bulk_length_is_refused_before_the_body() {
    // max_bulk is 1024: the header alone is refused, no body is awaited.
    setup()
        .await
        .protocol_error(b"*2\r\n$4\r\nPING\r\n$1025\r\n", &[], "bulk")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_at_the_limit_is_fine() {
    let mut s = setup().await;
    let msg = "x".repeat(1024);
    assert_eq!(s.bad.cmd(&["PING", &msg]).await, Reply::bulk(&msg));
    s.check_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_arguments() {
    // max_args is 16.
    setup()
        .await
        .protocol_error(b"*17\r\n", &[], "multibulk")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_at_the_limit_are_an_ordinary_error() {
    let mut s = setup().await;
    let mut words = vec!["PING"];
    words.extend(vec!["a"; 15]);
    let r = s.bad.cmd(&words).await;
    assert!(r.error_text().starts_with("ERR wrong number"), "{r:?}");
    assert_eq!(s.bad.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    s.check_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_larger_than_max_request() {
    // Five bulks of 1000 bytes each pass max_bulk, together not max_request (4096).
    let mut input = b"*6\r\n$4\r\nPING\r\n".to_vec();
    for _ in 0..5 {
        input.extend(b"$1000\r\n");
        input.extend(vec![b'y'; 1000]);
        input.extend(b"\r\n");
    }
    setup().await.protocol_error(&input, &[], "request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_line_beyond_max_inline() {
    // max_inline is 256; no newline at all.
    let input = vec![b'a'; 400];
    setup().await.protocol_error(&input, &[], "inline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_line_beyond_max_inline_with_a_newline() {
    let mut input = b"PING ".to_vec();
    input.extend(vec![b'b'; 300]);
    input.extend(b"\r\n");
    setup().await.protocol_error(&input, &[], "inline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_numeric_multibulk_length() {
    setup()
        .await
        .protocol_error(b"*abc\r\n", &[], "multibulk")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_without_its_crlf() {
    setup()
        .await
        .protocol_error(b"*1\r\n$4\r\nPINGxx", &[], "crlf")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_unbalanced_quotes() {
    setup()
        .await
        .protocol_error(b"ACQUIRE \"abc\r\n", &[], "quote")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_before_the_bad_frame_are_delivered() {
    let mut input = encode_words(&["PING", "first"]);
    input.extend(b"PING\r\n");
    input.extend(b"*1\r\n:5\r\n");
    input.extend(encode_words(&["PING", "never"]));
    setup()
        .await
        .protocol_error(
            &input,
            &[Reply::bulk("first"), Reply::Simple("PONG".into())],
            "'$'",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_while_parked_ends_the_session() {
    // The bad frame arrives while an ACQUIRE is queued: once it is granted the frame is
    // read, the connection closes and the grant is given back.
    let mut s = setup().await;
    let mut holder = s.server.redis().await;
    acquire(&mut holder, "parked", &[]).await;
    s.bad.send_words(&["ACQUIRE", "parked"]).await;
    wait_for_waiters(&mut s.healthy, "parked", 1).await;
    s.bad.send(b"*1\r\n:5\r\n").await;
    let _: i64 = ok(&mut holder, &["RELEASE", "parked"]).await;
    assert!(s.bad.reply().await.int() > 0);
    let rest = String::from_utf8_lossy(&s.bad.closed().await).to_string();
    assert!(rest.starts_with("-ERR Protocol error"), "{rest:?}");
    wait_for_free(&mut s.healthy, "parked").await;
    wait_for_free(&mut s.healthy, "bad-key").await;
    s.check_healthy().await;
}

// ---------------------------------------------------------------------------------------
// Errors that keep the connection
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_and_wrong_arity_keep_the_connection() {
    let mut s = setup().await;
    for words in [
        &["NOSUCH"][..],
        &["SET", "a", "b"],
        &["ACQUIRE"],
        &["RELEASE"],
        &["RELEASE", "a", "b"],
        &["RENEW"],
        &["INSPECT"],
        &["INSPECT", "a", "b"],
        &["PING", "a", "b"],
        &["AUTH"],
        &["CLIENT"],
        &["ACQUIRE", "k", "TTL", "nope"],
        &["ACQUIRE", "k", "FOREVER"],
    ] {
        let r = s.bad.cmd(words).await;
        assert!(r.error_text().starts_with("ERR "), "{words:?}: {r:?}");
    }
    let r = s.bad.cmd(&["acquire", "bad-key"]).await;
    assert!(
        r.error_text().starts_with("DEADLOCK"),
        "still the same session: {r:?}"
    );
    assert_eq!(s.bad.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
    s.check_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_commands_are_skipped() {
    let mut s = setup().await;
    s.bad.send(b"\r\n\r\n*0\r\n   \r\nPING\r\n").await;
    assert_eq!(s.bad.reply().await, Reply::Simple("PONG".into()));
    s.check_healthy().await;
}

// ---------------------------------------------------------------------------------------
// Binary-safe keys
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_with_nul_and_crlf_work() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let key: &[u8] = b"a\0b\r\nc";

    let token: i64 = q(&mut a, redis::cmd("ACQUIRE").arg(key)).await.unwrap();
    assert!(token > 0);
    // Its prefixes are other keys.
    for other in [&b"a"[..], b"a\0b", b"a\0b\r\n"] {
        let t: Option<i64> = q(&mut b, redis::cmd("ACQUIRE").arg(other).arg("WAIT").arg(0))
            .await
            .unwrap();
        assert!(t.is_some(), "{other:?} is a different key");
    }
    let busy: Option<i64> = q(&mut b, redis::cmd("ACQUIRE").arg(key).arg("WAIT").arg(0))
        .await
        .unwrap();
    assert_eq!(busy, None);

    let v: redis::Value = q(&mut b, redis::cmd("INSPECT").arg(key)).await.unwrap();
    let info = Inspect::from_value(&v).unwrap();
    assert_eq!(info.holders[0].token, token);

    let keys: Vec<Vec<u8>> = q(&mut b, redis::cmd("LOCKS").arg("MATCH").arg("a?b*"))
        .await
        .unwrap();
    assert!(keys.contains(&key.to_vec()), "{keys:?}");

    // A DEADLOCK message naming the key stays one line.
    let e = q::<i64>(&mut a, redis::cmd("ACQUIRE").arg(key))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("DEADLOCK"));
    let pong: String = ok(&mut a, &["PING"]).await;
    assert_eq!(pong, "PONG");

    let one: i64 = q(&mut a, redis::cmd("RELEASE").arg(key)).await.unwrap();
    assert_eq!(one, 1);
    let v: redis::Value = q(&mut b, redis::cmd("INSPECT").arg(key)).await.unwrap();
    assert!(Inspect::from_value(&v).is_none());

    // Non-UTF-8 bytes on a raw connection.
    let mut raw = server.raw().await;
    let odd: &[u8] = b"\xff\xfe\x00key";
    assert!(raw.cmd_bytes(&[b"ACQUIRE", odd]).await.int() > 0);
    let r = raw.cmd_bytes(&[b"ACQUIRE", odd]).await;
    assert!(r.error_text().starts_with("DEADLOCK"), "{r:?}");
    match raw.cmd_bytes(&[b"LOCKS", b"MATCH", b"\xff*"]).await {
        Reply::Array(a) => assert_eq!(a, vec![Reply::Bulk(odd.to_vec())]),
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.cmd_bytes(&[b"RELEASE", odd]).await, Reply::Int(1));
}

// ---------------------------------------------------------------------------------------
// Inline commands
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_typed_by_hand() {
    let server = Server::start().await;
    let mut obs = server.redis().await;
    let mut raw = server.raw().await;
    raw.send(b"ACQUIRE typed TTL 5000\r\n").await;
    let token = raw.reply().await.int();
    let info = inspect(&mut obs, "typed").await.unwrap();
    assert_eq!(info.holders[0].token, token);
    assert!(info.holders[0].ttl_ms <= 5000);

    raw.send(b"acquire \"with space\" shared\n").await;
    assert!(raw.reply().await.int() > 0);
    let info = inspect(&mut obs, "with space").await.unwrap();
    assert_eq!(info.holders[0].mode, "shared");

    raw.send(b"ACQUIRE 'single quoted' WAIT 0\r\n").await;
    assert!(raw.reply().await.int() > 0);
    assert!(inspect(&mut obs, "single quoted").await.is_some());

    raw.send(b"ACQUIRE \"esc\\x41\\n\"\r\n").await;
    assert!(raw.reply().await.int() > 0);
    assert!(inspect(&mut obs, "escA\n").await.is_some());

    raw.send(b"RELEASE typed\r\nINSPECT typed\r\n").await;
    assert_eq!(raw.reply().await, Reply::Int(1));
    assert_eq!(raw.reply().await, Reply::Array(vec![]));

    raw.send(b"FOO bar\r\n").await;
    assert!(raw
        .reply()
        .await
        .error_text()
        .starts_with("ERR unknown command"));
    raw.send(b"PING\r\n").await;
    assert_eq!(raw.reply().await, Reply::Simple("PONG".into()));
}
