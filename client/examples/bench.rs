//! Binary protocol against text mode on the same workload, in one run, with a bare TCP
//! echo round trip as the floor.
//!
//! ```text
//! cargo build --release --bin turnstile
//! cargo build --release -p turnstile-client --example bench
//! # the server on CPU 0, the echo floor on CPU 0 too, the load on CPU 1:
//! taskset -c 0 target/release/turnstile serve --threads 1 --port 7379 &
//! taskset -c 0 target/release/examples/bench echo-server 127.0.0.1:7400 &
//! taskset -c 1 target/release/examples/bench run --server 127.0.0.1:7379 --echo 127.0.0.1:7400
//! ```
//!
//! Measures, all from one single-threaded load process:
//! - latency at one connection: an uncontended acquire + release pair (p50/p99/p99.9),
//!   for the echo floor (two round trips of the same byte counts as the binary frames),
//!   text mode (a plain RESP client) and the binary client library (`turnstile-client`,
//!   watchdog on, as users would run it), taking turns in rounds.
//!   A fourth variant, "binary, raw frames", is a minimal single-task binary client like
//!   the text one: the protocols side by side without the library's work.
//!   `BENCH_WATCHDOG=0` turns the library's lease watchdog off for comparison.
//! - throughput at `--conns` connections (default 50), closed loop, each lock user on its
//!   own key: with one lock user per connection (text, raw binary frames, the library),
//!   and with `--users` lock users per connection (default 8; in text mode they take
//!   turns on their connection, since a text connection runs one command at a time and a
//!   queued ACQUIRE holds up the ones behind it; in binary mode they share it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnstile_client::proto::{
    Acquire, DecodeError, Header, Mode, Request, Response, ServerMessage, HEADER_LEN, MAX_PAYLOAD,
};
use turnstile_client::Client;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("echo-server") => {
            let addr = args.get(1).context("echo-server ADDR")?.clone();
            rt.block_on(echo_server(addr))
        }
        Some("run") => {
            let opts = Opts::parse(&args[1..])?;
            rt.block_on(run(opts))
        }
        _ => bail!("usage: bench echo-server ADDR | bench run [--server A] [--echo A] [--pairs N] [--secs S] [--conns N] [--users N]"),
    }
}

struct Opts {
    server: String,
    echo: Option<String>,
    pairs: u64,
    secs: u64,
    conns: usize,
    users: usize,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Opts> {
        let mut o = Opts {
            server: "127.0.0.1:7379".into(),
            echo: None,
            pairs: 20_000,
            secs: 5,
            conns: 50,
            users: 8,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--server" => o.server = v.clone(),
                "--echo" => o.echo = Some(v.clone()),
                "--pairs" => o.pairs = v.parse()?,
                "--secs" => o.secs = v.parse()?,
                "--conns" => o.conns = v.parse()?,
                "--users" => o.users = v.parse()?,
                other => bail!("unknown flag {other}"),
            }
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// The echo floor
// ---------------------------------------------------------------------------------------

async fn echo_server(addr: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo server on {addr}");
    loop {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The binary frames of an acquire + release pair, for the floor's byte counts.
fn binary_frames() -> (Vec<u8>, Vec<u8>) {
    let mut acq = BytesMut::new();
    Request::Acquire(Acquire {
        key: b"lat",
        mode: Mode::Exclusive,
        reentrant: false,
        ttl_ms: 30_000,
        wait_ms: None,
        priority: 0,
        lock_delay_ms: 0,
        value: None,
    })
    .encode(1, &mut acq);
    let mut rel = BytesMut::new();
    Request::Release { key: b"lat" }.encode(2, &mut rel);
    (acq.to_vec(), rel.to_vec())
}

async fn echo_pair(s: &mut TcpStream, a: &[u8], b: &[u8], buf: &mut [u8]) -> anyhow::Result<()> {
    for frame in [a, b] {
        s.write_all(frame).await?;
        s.read_exact(&mut buf[..frame.len()]).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// A plain text-mode client
// ---------------------------------------------------------------------------------------

struct Text {
    s: TcpStream,
    buf: Vec<u8>,
}

/// A command as a RESP array of bulk strings.
fn resp(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

/// The ACQUIRE and RELEASE commands of one key.
fn text_pair(key: &str) -> (Vec<u8>, Vec<u8>) {
    (
        resp(&["ACQUIRE", key, "TTL", "30000"]),
        resp(&["RELEASE", key]),
    )
}

impl Text {
    async fn connect(addr: &str) -> anyhow::Result<Text> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Text {
            s,
            buf: Vec::with_capacity(256),
        })
    }

    /// Sends a command and reads a one-line integer reply.
    async fn call(&mut self, cmd: &[u8]) -> anyhow::Result<i64> {
        self.s.write_all(cmd).await?;
        loop {
            if let Some(nl) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = std::str::from_utf8(&self.buf[..nl])?.to_string();
                self.buf.drain(..nl + 2);
                return match line.strip_prefix(':') {
                    Some(n) => Ok(n.parse()?),
                    None => bail!("unexpected reply {line}"),
                };
            }
            let mut chunk = [0u8; 512];
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                bail!("server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn pair(&mut self, (acquire, release): &(Vec<u8>, Vec<u8>)) -> anyhow::Result<()> {
        let token = self.call(acquire).await?;
        anyhow::ensure!(token > 0, "not granted");
        self.call(release).await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// A minimal binary client: one task, frames written and read in place
// ---------------------------------------------------------------------------------------

struct RawBinary {
    s: TcpStream,
    buf: BytesMut,
    id: u32,
    key: Vec<u8>,
}

impl RawBinary {
    async fn connect(addr: &str) -> anyhow::Result<RawBinary> {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut out = BytesMut::new();
        out.extend_from_slice(&turnstile_client::proto::MAGIC);
        Request::Hello(turnstile_client::proto::Hello {
            min_version: 1,
            max_version: 1,
            session_timeout_ms: 0,
            resume: None,
            name: b"bench",
            auth: None,
        })
        .encode(0, &mut out);
        s.write_all(&out).await?;
        let mut raw = RawBinary {
            s,
            buf: BytesMut::with_capacity(4096),
            id: 0,
            key: b"lat/raw".to_vec(),
        };
        match raw.read().await? {
            ServerMessage::Response(Response::HelloOk(_)) => Ok(raw),
            other => bail!("HELLO answered {other:?}"),
        }
    }

    async fn read(&mut self) -> anyhow::Result<ServerMessage> {
        loop {
            match Header::check(&self.buf, MAX_PAYLOAD) {
                Ok(h) => {
                    let msg = ServerMessage::decode(&h, &self.buf[HEADER_LEN..h.frame_len()])?;
                    let _ = self.buf.split_to(h.frame_len());
                    return Ok(msg);
                }
                Err(DecodeError::Incomplete) => {}
                Err(e) => return Err(e.into()),
            }
            if self.s.read_buf(&mut self.buf).await? == 0 {
                bail!("closed");
            }
        }
    }

    async fn call(&mut self, req: Request<'_>) -> anyhow::Result<Response> {
        self.id = self.id.wrapping_add(1);
        let mut out = BytesMut::with_capacity(64);
        req.encode(self.id, &mut out);
        self.s.write_all(&out).await?;
        match self.read().await? {
            ServerMessage::Response(r) => Ok(r),
            other => bail!("unexpected {other:?}"),
        }
    }

    async fn pair(&mut self) -> anyhow::Result<()> {
        let key = std::mem::take(&mut self.key);
        let r = self
            .call(Request::Acquire(Acquire {
                key: &key,
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 30_000,
                wait_ms: None,
                priority: 0,
                lock_delay_ms: 0,
                value: None,
            }))
            .await?;
        anyhow::ensure!(matches!(r, Response::Granted { .. }), "{r:?}");
        let r = self.call(Request::Release { key: &key }).await?;
        anyhow::ensure!(matches!(r, Response::Ok), "{r:?}");
        self.key = key;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------

/// Latency rounds: each variant runs `pairs / ROUNDS` pairs per round, in turn.
const ROUNDS: u64 = 20;

struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
}

fn lat(h: &Histogram<u64>) -> Lat {
    let us = |q| h.value_at_quantile(q) as f64 / 1000.0;
    Lat {
        p50: us(0.5),
        p99: us(0.99),
        p999: us(0.999),
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds")
}

/// Times `n` runs of `$pair` into a histogram of nanoseconds.
macro_rules! measure {
    ($n:expr, $pair:expr) => {{
        let mut h = hist();
        for _ in 0..$n {
            let t = Instant::now();
            $pair;
            h.saturating_record(t.elapsed().as_nanos() as u64);
        }
        h
    }};
}

// ---------------------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------------------

async fn text_throughput(o: &Opts, users: usize) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..o.conns {
        // One connection; its lock users take turns on it, each on its own key (a text
        // connection runs one command at a time: a queued ACQUIRE holds up the ones
        // behind it, so users cannot overlap on it safely).
        let mut conn = Text::connect(&o.server).await?;
        let keys: Vec<_> = (0..users)
            .map(|u| text_pair(&format!("tp/{c}/{u}")))
            .collect();
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                conn.pair(&keys[i % keys.len()]).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / secs)
}

/// One lock user per connection with the minimal binary client (one request in flight,
/// like the text client): the protocols side by side, without the library's work.
async fn raw_binary_throughput(o: &Opts) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..o.conns {
        let mut conn = RawBinary::connect(&o.server).await?;
        conn.key = format!("tp/{c}/raw").into_bytes();
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                conn.pair().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / secs)
}

async fn binary_throughput(o: &Opts, users: usize) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for c in 0..o.conns {
        let client = Client::connect(o.server.as_str()).await?;
        for u in 0..users {
            let (client, stop, done) = (client.clone(), stop.clone(), done.clone());
            let key = format!("tp/{c}/{u}");
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let g = client
                        .lock(&key)
                        .ttl(Duration::from_secs(30))
                        .acquire()
                        .await?;
                    g.release().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
        clients.push(client);
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    for t in tasks {
        t.await??;
    }
    for c in clients {
        c.close().await?;
    }
    Ok(n as f64 / secs)
}

// ---------------------------------------------------------------------------------------

async fn run(o: Opts) -> anyhow::Result<()> {
    println!(
        "bench: server {} | echo {} | {} latency pairs | {} s per throughput run | {} connections",
        o.server,
        o.echo.as_deref().unwrap_or("(none)"),
        o.pairs,
        o.secs,
        o.conns
    );
    println!("\n== latency of one uncontended acquire + release pair, one connection (µs)");
    println!(
        "   (the variants take turns in {ROUNDS} rounds, so that they share the machine's moods)"
    );
    println!("{:<30} {:>9} {:>9} {:>9}", "", "p50", "p99", "p99.9");
    let mut echo = match &o.echo {
        Some(addr) => {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Some(s)
        }
        None => None,
    };
    let (fa, fb) = binary_frames();
    let mut buf = vec![0u8; 256];
    let mut text = Text::connect(&o.server).await?;
    let cmds = text_pair("lat/text");
    let mut raw = RawBinary::connect(&o.server).await?;
    let client = Client::connect(o.server.as_str()).await?;
    let watchdog = std::env::var("BENCH_WATCHDOG").map_or(true, |v| v != "0");
    let mut hs: Vec<Histogram<u64>> = (0..4).map(|_| hist()).collect();
    let per_round = (o.pairs / ROUNDS).max(1);
    for round in 0..=ROUNDS {
        // Round 0 warms up and is not recorded.
        let n = if round == 0 {
            per_round / 2 + 100
        } else {
            per_round
        };
        for (variant, total) in hs.iter_mut().enumerate() {
            let mut h = hist();
            match variant {
                0 => {
                    if let Some(s) = echo.as_mut() {
                        h = measure!(n, echo_pair(s, &fa, &fb, &mut buf).await?);
                    }
                }
                1 => h = measure!(n, text.pair(&cmds).await?),
                2 => h = measure!(n, raw.pair().await?),
                _ => {
                    h = measure!(n, {
                        let g = client
                            .lock("lat/binary")
                            .ttl(Duration::from_secs(30))
                            .watchdog(watchdog)
                            .acquire()
                            .await?;
                        g.release().await?;
                    })
                }
            }
            if round > 0 {
                total.add(&h)?;
            }
        }
    }
    client.close().await?;
    let names = [
        "TCP echo (2 round trips)",
        "text mode (RESP)",
        "binary, raw frames",
        "binary, turnstile-client",
    ];
    let lats: Vec<Lat> = hs.iter().map(lat).collect();
    for (i, l) in lats.iter().enumerate() {
        if i == 0 && echo.is_none() {
            continue;
        }
        println!(
            "{:<30} {:>9.1} {:>9.1} {:>9.1}",
            names[i], l.p50, l.p99, l.p999
        );
    }
    if echo.is_some() {
        let f = lats[0].p99;
        println!(
            "p99 / echo p99: text {:.2}, binary raw {:.2}, binary client {:.2} (goal <= 1.3)",
            lats[1].p99 / f,
            lats[2].p99 / f,
            lats[3].p99 / f
        );
    }

    println!(
        "\n== throughput, {} connections, closed loop (pairs/s)",
        o.conns
    );
    let text1 = text_throughput(&o, 1).await?;
    let raw1 = raw_binary_throughput(&o).await?;
    let bin1 = binary_throughput(&o, 1).await?;
    println!(
        "1 lock user per connection:   text {text1:>9.0}  binary raw frames {raw1:>9.0} ({:.2}x)  binary client {bin1:>9.0} ({:.2}x)",
        raw1 / text1,
        bin1 / text1
    );
    let textn = text_throughput(&o, o.users).await?;
    let binn = binary_throughput(&o, o.users).await?;
    println!(
        "{} lock users per connection:  text {textn:>9.0}  binary client {binn:>9.0} ({:.2}x)",
        o.users,
        binn / textn
    );
    Ok(())
}
