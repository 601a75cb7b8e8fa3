//! The shared harness of the text-mode integration tests (`tests/text_*.rs`).
//!
//! [`Server::start`] runs the real server in-process on `127.0.0.1:0` with
//! [`turnstile::server::run`] and stops it when dropped. Tests talk to it with the Rust
//! `redis` crate ([`Server::redis`], [`Server::redis3`]) as a real client, or with [`Raw`],
//! a small RESP client over a plain `TcpStream` for byte-level checks (exact reply bytes,
//! pipelines written in one piece, malformed input, abrupt disconnects).
//!
//! Every wait is bounded: a reply that does not come within [`REPLY_TIMEOUT`] fails the
//! test instead of hanging it, and [`eventually`] polls a condition a bounded number of
//! times.

// Each `tests/text_*.rs` is its own crate and uses a different part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use turnstile::Config;

/// Longest any single reply may take before the test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A server running in this process. Dropping it shuts the server down.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// A server with the default configuration.
    pub async fn start() -> Server {
        Server::start_with(Config::default()).await
    }

    /// A server with `config` (its bind address and port are ignored: the listener is
    /// bound to `127.0.0.1:0`).
    pub async fn start_with(config: Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Server::serve(listener, config)
    }

    /// A server listening on `addr` again (after a restart), bound with bounded retries.
    pub async fn start_at(config: Config, addr: SocketAddr) -> Server {
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(addr).await {
                return Server::serve(listener, config);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not bind {addr} again");
    }

    fn serve(listener: TcpListener, mut config: Config) -> Server {
        // Tests run in memory unless they name a data directory of their own.
        if config.data_dir == std::path::Path::new("turnstile-data") {
            config.in_memory = true;
        }
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(turnstile::server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// A `redis` crate connection with the client's default settings (RESP2).
    pub async fn redis(&self) -> MultiplexedConnection {
        connect_url(&self.url()).await
    }

    /// A `redis` crate connection that speaks RESP3 (the client sends `HELLO 3`).
    pub async fn redis3(&self) -> MultiplexedConnection {
        connect_url(&format!("{}/?protocol=resp3", self.url())).await
    }

    /// A raw RESP connection.
    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr).await
    }

    /// Shuts the server down and waits (bounded) for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let res = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops within 10 s")
                .expect("server task does not panic");
            res.expect("server::run returns Ok");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens a multiplexed `redis` crate connection to `url` (bounded).
pub async fn connect_url(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("valid redis URL");
    tokio::time::timeout(REPLY_TIMEOUT, client.get_multiplexed_async_connection())
        .await
        .expect("connect within the timeout")
        .expect("connect")
}

/// Runs a command built with `redis::cmd` on `con`, bounded by [`REPLY_TIMEOUT`].
pub async fn q<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    tokio::time::timeout(REPLY_TIMEOUT, cmd.query_async(con))
        .await
        .unwrap_or_else(|_| {
            let words: Vec<String> = cmd
                .args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                    redis::Arg::Cursor => "<cursor>".into(),
                })
                .collect();
            panic!("no reply within {REPLY_TIMEOUT:?} to {words:?}")
        })
}

/// Builds a command from words: `c(&["ACQUIRE", "k", "TTL", "500"])`.
pub fn c(words: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    cmd
}

/// Runs `words` and expects success, converted to `T`.
pub async fn ok<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, words: &[&str]) -> T {
    q(con, &c(words))
        .await
        .unwrap_or_else(|e| panic!("{words:?} failed: {e}"))
}

/// Runs `words` and expects an error reply; returns its code (`ERR`, `DEADLOCK`, ...) and
/// its full text.
pub async fn err(con: &mut MultiplexedConnection, words: &[&str]) -> (String, String) {
    match q::<Value>(con, &c(words)).await {
        Ok(v) => panic!("{words:?}: expected an error, got {v:?}"),
        Err(e) => error_parts(&e),
    }
}

/// The code and text of an error reply as the `redis` crate reports it.
pub fn error_parts(e: &redis::RedisError) -> (String, String) {
    let code = e
        .code()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"))
        .to_string();
    let text = format!("{code} {}", e.detail().unwrap_or(""));
    (code, text)
}

/// ACQUIRE with options, expecting a token.
pub async fn acquire(con: &mut MultiplexedConnection, key: &str, opts: &[&str]) -> i64 {
    let mut words = vec!["ACQUIRE", key];
    words.extend_from_slice(opts);
    ok(con, &words).await
}

/// The session id of a connection (`CLIENT ID`).
pub async fn client_id(con: &mut MultiplexedConnection) -> i64 {
    ok(con, &["CLIENT", "ID"]).await
}

/// `INSPECT key`, decoded.
pub async fn inspect(con: &mut MultiplexedConnection, key: &str) -> Option<Inspect> {
    let v: Value = ok(con, &["INSPECT", key]).await;
    Inspect::from_value(&v)
}

/// Polls `cond` every 10 ms, at most 500 times (5 s); panics with `what` if it never holds.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Waits until INSPECT of `key` shows exactly `n` waiters (bounded).
pub async fn wait_for_waiters(con: &mut MultiplexedConnection, key: &str, n: usize) {
    for _ in 0..500 {
        let waiters = inspect(con, key).await.map_or(0, |i| i.waiters.len());
        if waiters == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("INSPECT {key} never showed {n} waiters");
}

/// Waits until `key` has no holders and no waiters (bounded).
pub async fn wait_for_free(con: &mut MultiplexedConnection, key: &str) {
    for _ in 0..500 {
        if inspect(con, key).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never became free");
}

// ---------------------------------------------------------------------------------------
// INSPECT, decoded
// ---------------------------------------------------------------------------------------

/// One holder: `[session, mode, token, permits, count, ttl_ms]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub session: i64,
    pub mode: String,
    pub token: i64,
    pub permits: i64,
    pub count: i64,
    pub ttl_ms: i64,
}

/// One waiter: `[session, mode, permits, waited_ms]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub session: i64,
    pub mode: String,
    pub permits: i64,
    pub waited_ms: i64,
}

/// An INSPECT reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspect {
    pub kind: String,
    pub limit: i64,
    pub fencing: i64,
    pub holders: Vec<Holder>,
    pub waiters: Vec<Waiter>,
}

/// The integer in a reply value.
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// The text of a bulk, simple or verbatim string reply value.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8"),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// The elements of an array reply value.
pub fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The field/value pairs of a map (RESP3) or of a flat array of pairs (RESP2), in order.
pub fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(a) => {
            assert!(a.len() % 2 == 0, "odd number of elements in {a:?}");
            a.chunks(2).map(|p| (text(&p[0]), p[1].clone())).collect()
        }
        other => panic!("expected a map or a flat array, got {other:?}"),
    }
}

impl Inspect {
    /// Decodes an INSPECT reply (map or flat array); None for the empty array of a key
    /// without holders and waiters. Checks the field order of the contract.
    pub fn from_value(v: &Value) -> Option<Inspect> {
        if matches!(v, Value::Array(a) if a.is_empty()) {
            return None;
        }
        let fields = pairs(v);
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["kind", "limit", "fencing", "holders", "waiters"],
            "INSPECT fields and their order"
        );
        let holders = items(&fields[3].1)
            .iter()
            .map(|h| {
                let h = items(h);
                assert_eq!(h.len(), 6, "holder tuple {h:?}");
                Holder {
                    session: int(&h[0]),
                    mode: text(&h[1]),
                    token: int(&h[2]),
                    permits: int(&h[3]),
                    count: int(&h[4]),
                    ttl_ms: int(&h[5]),
                }
            })
            .collect();
        let waiters = items(&fields[4].1)
            .iter()
            .map(|w| {
                let w = items(w);
                assert_eq!(w.len(), 4, "waiter tuple {w:?}");
                Waiter {
                    session: int(&w[0]),
                    mode: text(&w[1]),
                    permits: int(&w[2]),
                    waited_ms: int(&w[3]),
                }
            })
            .collect();
        Some(Inspect {
            kind: text(&fields[0].1),
            limit: int(&fields[1].1),
            fencing: int(&fields[2].1),
            holders,
            waiters,
        })
    }

    /// The sessions of the holders, in order.
    pub fn holder_sessions(&self) -> Vec<i64> {
        self.holders.iter().map(|h| h.session).collect()
    }

    /// The sessions of the waiters, in queue order.
    pub fn waiter_sessions(&self) -> Vec<i64> {
        self.waiters.iter().map(|w| w.session).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Raw RESP
// ---------------------------------------------------------------------------------------

/// A decoded reply, keeping the RESP2 and RESP3 nulls apart.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...` (the whole line after the dash)
    Error(String),
    /// `:...`
    Int(i64),
    /// `$n ...`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1` (RESP2 nil)
    Nil,
    /// `_` (RESP3 null)
    Null,
    /// `*n ...`
    Array(Vec<Reply>),
    /// `%n ...`
    Map(Vec<(Reply, Reply)>),
    /// `#t` / `#f`
    Bool(bool),
    /// `,...`
    Double(String),
    /// `>n ...` (a RESP3 push message)
    Push(Vec<Reply>),
}

impl Reply {
    /// A bulk reply of `s`.
    pub fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    /// The error text, panicking if this is not an error.
    pub fn error_text(&self) -> &str {
        match self {
            Reply::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    /// The integer, panicking if this is not one.
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }
}

/// Decodes one reply from the front of `buf`: Some((reply, bytes used)), or None when
/// more bytes are needed.
pub fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let nl = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..nl]).expect("reply header is UTF-8");
    let after = nl + 2;
    let number = |s: &str| -> i64 { s.parse().unwrap_or_else(|_| panic!("bad length {s:?}")) };
    match buf[0] {
        b'+' => Some((Reply::Simple(line.to_string()), after)),
        b'-' => Some((Reply::Error(line.to_string()), after)),
        b':' => Some((Reply::Int(number(line)), after)),
        b'_' => Some((Reply::Null, after)),
        b'#' => Some((Reply::Bool(line == "t"), after)),
        b',' => Some((Reply::Double(line.to_string()), after)),
        b'$' => {
            let n = number(line);
            if n < 0 {
                return Some((Reply::Nil, after));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return None;
            }
            assert_eq!(&buf[after + n..after + n + 2], b"\r\n", "bulk terminator");
            Some((Reply::Bulk(buf[after..after + n].to_vec()), after + n + 2))
        }
        b'*' | b'%' | b'>' => {
            let n = number(line);
            if n < 0 {
                return Some((Reply::Nil, after));
            }
            let count = if buf[0] == b'%' { 2 * n } else { n } as usize;
            let mut pos = after;
            let mut elems = Vec::with_capacity(count);
            for _ in 0..count {
                let (e, used) = parse_reply(&buf[pos..])?;
                elems.push(e);
                pos += used;
            }
            if buf[0] == b'>' {
                Some((Reply::Push(elems), pos))
            } else if buf[0] == b'%' {
                let mut it = elems.into_iter();
                let mut map = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    map.push((k, v));
                }
                Some((Reply::Map(map), pos))
            } else {
                Some((Reply::Array(elems), pos))
            }
        }
        other => panic!("unexpected reply type byte {:?}", other as char),
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Encodes a command given as words.
pub fn encode_words(words: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    encode(&args)
}

/// A raw RESP connection over a `TcpStream`.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to `addr` (bounded).
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect within the timeout")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a command given as words, without reading the reply.
    pub async fn send_words(&mut self, words: &[&str]) {
        self.send(&encode_words(words)).await;
    }

    /// Sends a command given as words and reads its reply.
    pub async fn cmd(&mut self, words: &[&str]) -> Reply {
        self.send_words(words).await;
        self.reply().await
    }

    /// Sends a binary command and reads its reply.
    pub async fn cmd_bytes(&mut self, args: &[&[u8]]) -> Reply {
        self.send(&encode(args)).await;
        self.reply().await
    }

    /// Reads one reply; fails the test if none comes within [`REPLY_TIMEOUT`].
    pub async fn reply(&mut self) -> Reply {
        match self.reply_within(REPLY_TIMEOUT).await {
            Some(r) => r,
            None => panic!("no reply within {REPLY_TIMEOUT:?}"),
        }
    }

    /// Reads one reply if it comes within `dur`, None otherwise. A reply that began to
    /// arrive stays buffered for the next read.
    pub async fn reply_within(&mut self, dur: Duration) -> Option<Reply> {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            if let Some((r, used)) = parse_reply(&self.buf) {
                self.buf.drain(..used);
                return Some(r);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("read failed: {e}"),
            };
            if n == 0 {
                panic!(
                    "connection closed while waiting for a reply (buffered: {:?})",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads exactly `n` bytes (bounded) and returns them without decoding.
    pub async fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        while self.buf.len() < n {
            let mut chunk = [0u8; 16 * 1024];
            let got = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("bytes within the timeout")
                .expect("read");
            assert!(
                got > 0,
                "closed after {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..got]);
        }
        self.buf.drain(..n).collect()
    }

    /// Expects the server to close the connection (bounded); returns whatever bytes came
    /// before the end.
    pub async fn closed(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "connection still open after {REPLY_TIMEOUT:?} (got {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => return std::mem::take(&mut self.buf),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw binary protocol
// ---------------------------------------------------------------------------------------

use turnstile::protocol::binary as bin;

/// A HELLO with the usual fields, to be adjusted by tests.
pub fn hello() -> bin::Hello<'static> {
    bin::Hello {
        min_version: bin::MIN_VERSION,
        max_version: bin::MAX_VERSION,
        session_timeout_ms: 0,
        resume: None,
        name: b"test",
        auth: None,
    }
}

/// A raw binary-protocol connection: frames in and out, every read bounded.
pub struct Bin {
    pub stream: TcpStream,
    buf: bytes::BytesMut,
    /// From HELLO_OK.
    pub ok: Option<bin::HelloOk>,
}

impl Bin {
    /// Connects and completes a handshake with [`hello`]; panics if refused.
    pub async fn connect(addr: SocketAddr) -> Bin {
        Bin::connect_with(addr, &hello()).await
    }

    /// Connects and completes a handshake with `h`; panics if refused.
    pub async fn connect_with(addr: SocketAddr, h: &bin::Hello<'_>) -> Bin {
        let (b, res) = Bin::handshake(addr, h).await;
        if let Err(e) = res {
            panic!("HELLO refused: {e}");
        }
        b
    }

    /// Connects, sends the magic and `h`, and returns the answer.
    pub async fn handshake(
        addr: SocketAddr,
        h: &bin::Hello<'_>,
    ) -> (Bin, Result<bin::HelloOk, bin::ErrorReply>) {
        let mut b = Bin::open(addr).await;
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(&bin::MAGIC);
        bin::Request::Hello(h.clone()).encode(0, &mut out);
        b.send_raw(&out).await;
        let (header, msg) = b.recv().await;
        assert_eq!(header.request_id, 0, "HELLO's answer echoes its id");
        let res = match msg {
            bin::ServerMessage::Response(bin::Response::HelloOk(ok)) => {
                b.ok = Some(ok.clone());
                Ok(ok)
            }
            bin::ServerMessage::Response(bin::Response::Error(e)) => Err(e),
            other => panic!("unexpected answer to HELLO: {other:?}"),
        };
        (b, res)
    }

    /// A TCP connection with nothing sent yet.
    pub async fn open(addr: SocketAddr) -> Bin {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect within the timeout")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Bin {
            stream,
            buf: bytes::BytesMut::new(),
            ok: None,
        }
    }

    /// The session's secret (after a handshake).
    pub fn secret(&self) -> [u8; 16] {
        self.ok.as_ref().expect("handshaken").secret
    }

    /// The session's id (after a handshake).
    pub fn session(&self) -> u64 {
        self.ok.as_ref().expect("handshaken").session
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends one request with `id`.
    pub async fn send(&mut self, id: u32, req: bin::Request<'_>) {
        let mut out = bytes::BytesMut::new();
        req.encode(id, &mut out);
        self.send_raw(&out).await;
    }

    /// Reads one frame; fails the test if none comes within [`REPLY_TIMEOUT`].
    pub async fn recv(&mut self) -> (bin::Header, bin::ServerMessage) {
        match self.recv_within(REPLY_TIMEOUT).await {
            Some(f) => f,
            None => panic!("no frame within {REPLY_TIMEOUT:?}"),
        }
    }

    /// Reads one frame if it comes within `dur`.
    pub async fn recv_within(
        &mut self,
        dur: Duration,
    ) -> Option<(bin::Header, bin::ServerMessage)> {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            match bin::Header::check(&self.buf, bin::MAX_PAYLOAD) {
                Ok(h) => {
                    let msg =
                        bin::ServerMessage::decode(&h, &self.buf[bin::HEADER_LEN..h.frame_len()])
                            .expect("the server's frames decode");
                    let _ = self.buf.split_to(h.frame_len());
                    return Some((h, msg));
                }
                Err(bin::DecodeError::Incomplete) => {}
                Err(e) => panic!("bad frame from the server: {e}"),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("read failed: {e}"),
            };
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one frame and expects a response to `id`.
    pub async fn response(&mut self, id: u32) -> bin::Response {
        match self.recv().await {
            (h, bin::ServerMessage::Response(r)) if h.request_id == id => r,
            other => panic!("expected the response to {id}, got {other:?}"),
        }
    }

    /// Reads frames until the response to `id`, skipping WAITING pushes (which a holder
    /// gets whenever someone queues behind it).
    pub async fn response_skipping_waiting(&mut self, id: u32) -> bin::Response {
        loop {
            match self.recv().await {
                (h, bin::ServerMessage::Response(r)) if h.request_id == id => return r,
                (_, bin::ServerMessage::Push(bin::Push::Waiting { .. })) => {}
                other => panic!("expected the response to {id}, got {other:?}"),
            }
        }
    }

    /// Sends a request and reads its response, skipping WAITING pushes.
    pub async fn call_holder(&mut self, id: u32, req: bin::Request<'_>) -> bin::Response {
        self.send(id, req).await;
        self.response_skipping_waiting(id).await
    }

    /// Sends a request and reads its response (nothing else may come first).
    pub async fn call(&mut self, id: u32, req: bin::Request<'_>) -> bin::Response {
        self.send(id, req).await;
        self.response(id).await
    }

    /// Reads one frame and expects a push.
    pub async fn push(&mut self) -> (u32, bin::Push) {
        match self.recv().await {
            (h, bin::ServerMessage::Push(p)) => (h.request_id, p),
            other => panic!("expected a push, got {other:?}"),
        }
    }

    /// Expects the server to close the connection (bounded); returns the frames that
    /// came before.
    pub async fn closed(&mut self) -> Vec<bin::ServerMessage> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("connection still open after {REPLY_TIMEOUT:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut out = Vec::new();
        while let Ok(h) = bin::Header::check(&self.buf, bin::MAX_PAYLOAD) {
            out.push(
                bin::ServerMessage::decode(&h, &self.buf[bin::HEADER_LEN..h.frame_len()])
                    .expect("decodes"),
            );
            let _ = self.buf.split_to(h.frame_len());
        }
        out
    }
}

/// An ACQUIRE request.
pub fn acq(key: &[u8], mode: bin::Mode, ttl_ms: u32, wait_ms: Option<u32>) -> bin::Request<'_> {
    bin::Request::Acquire(bin::Acquire {
        key,
        mode,
        reentrant: false,
        ttl_ms,
        wait_ms,
        priority: 0,
        lock_delay_ms: 0,
        value: None,
    })
}
