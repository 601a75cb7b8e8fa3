//! Crash recovery of the real `turnstile serve` process, stopped with `kill -9` (or SIGTERM)
//! while clients are busy, then restarted on the same `--data-dir`.
//!
//! Each cycle runs client tasks (the `redis` crate, one connection and so one session
//! each) that acquire and release keys at random and write every reply they get into a
//! shared [`Ledger`]; after 50-400 ms the server is stopped, the clients' in-flight
//! requests fail (their outcome is uncertain), the server is restarted and these are
//! checked with `INSPECT` and `LOCKS`:
//!
//! 1. every hold whose ACQUIRE reply (a token) was received and for which no RELEASE was
//!    sent is held after the restart: a holder with that token, by that session;
//! 2. no hold whose RELEASE was acknowledged (`:1`) is held after the restart;
//! 3. a request whose reply never came may have happened or not, but every holder after
//!    the restart is explained: by an acknowledged grant, or by one in-flight ACQUIRE of
//!    the key (no phantom holds, no holds of earlier cycles coming back);
//! 4. fencing tokens per key only go up over the whole run: every token received for a
//!    key (ACQUIRE replies, INSPECT holders and `fencing`) is compared with the largest
//!    token known for the key when the request was sent, and no token is issued twice.
//!
//! Restored text sessions end `--session-timeout-ms` after recovery. Rules 1-3 are
//! checked well before that (a check that ran late says so); then the test waits (bounded)
//! until `LOCKS` is empty, and acquires and releases every key of the pool once, which
//! checks rule 4 on every key, before the next cycle reuses the same keys. Every third
//! cycle the server is stopped a second time before that, while the restored sessions are
//! pending (right after the check: every restored hold must come back again; or around
//! the moment their timeout fires: each may have ended), and checked again.
//! A `kill -9` test with frequent snapshots and small log segments covers recovery from a
//! snapshot plus the log after it.
//!
//! With `--fsync never` and `--fsync interval:MS` acknowledged state may be lost, so
//! those tests check only rule 4, rule 3's "no phantom holds" and that the server
//! restarts and serves; lost holds are counted, not failed.
//!
//! Tuning (environment): `TURNSTILE_CRASH_CYCLES` (default 3), `TURNSTILE_CRASH_CLIENTS`
//! (6), `TURNSTILE_CRASH_SESSION_TIMEOUT_MS` (3000), `TURNSTILE_CRASH_SEED` (random,
//! printed). `scripts/crash-long.sh` runs the `kill -9` test for many cycles on a release
//! build. A failure names the key, the expected token and what INSPECT showed, and keeps
//! the data dir and the server logs (their path is printed); a passing test removes them.
//!
//! The server inherits the environment, so its own `TURNSTILE_*` variables (for instance
//! `TURNSTILE_SNAPSHOT_EVERY`) apply to every test; `TURNSTILE_IN_MEMORY=true` makes the
//! tests fail (a negative control). Only processes this test started are signalled, by the
//! PID of their `Child`.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::Value;

/// The server binary Cargo built for this test.
const BIN: &str = env!("CARGO_BIN_EXE_turnstile");
/// Keys most requests go to (try-locks: `WAIT 0`), so that clients rarely contend.
const POOL_KEYS: usize = 300;
/// Keys every client also uses, with a short WAIT, for queues and handoffs.
const HOT_KEYS: usize = 4;
/// Out of 100 acquires, how many go to a hot key.
const HOT_PERCENT: u64 = 10;
/// Out of 100 steps of a client holding something, how many release.
const RELEASE_PERCENT: u64 = 35;
/// A client releases before acquiring more once it holds this many keys.
const MAX_HOLDS_PER_CLIENT: usize = 25;
/// Lease of every hold: nothing expires during a test.
const TTL_MS: &str = "600000";
/// How long an ACQUIRE of a hot key may queue.
const HOT_WAIT_MS: &str = "100";
/// Longest any single request may take before it counts as lost.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a (re)started server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a server may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How much longer than `--session-timeout-ms` restored holds may take to go away.
const END_SLACK: Duration = Duration::from_secs(15);
/// The server is stopped this many milliseconds (inclusive range) after the clients start.
const STOP_DELAY_MS: (u64, u64) = (50, 400);

/// Every this many cycles the server is stopped a second time while the sessions restored
/// by the first restart are still pending (right after the check, or around the moment
/// their timeout fires), and checked again after a second restart.
const DOUBLE_CRASH_EVERY: usize = 3;

/// The tests of this file run one at a time: each runs a server and several clients on a
/// small machine, and the session-timeout checks need the server to keep up.
static SERIAL: Mutex<()> = Mutex::new(());
/// Makes work directories unique within this process.
static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// `kill -9` with the default `--fsync always`: everything acknowledged survives.
#[test]
fn kill9_fsync_always_keeps_acknowledged_state() {
    run(Scenario {
        name: "kill9-always",
        fsync: "always",
        stop: Stop::Kill9,
        checks: Checks::All,
        extra: &[],
        tear: false,
    });
}

/// `kill -9` with `--fsync never`: acknowledged holds may be lost, tokens never go back.
#[test]
fn kill9_fsync_never_never_reuses_tokens() {
    run(Scenario {
        name: "kill9-never",
        fsync: "never",
        stop: Stop::Kill9,
        checks: Checks::TokensOnly,
        extra: &[],
        tear: false,
    });
}

/// `kill -9` with `--fsync interval:20`: as for `never`, only tokens are checked.
#[test]
fn kill9_fsync_interval_never_reuses_tokens() {
    run(Scenario {
        name: "kill9-interval",
        fsync: "interval:20",
        stop: Stop::Kill9,
        checks: Checks::TokensOnly,
        extra: &[],
        tear: false,
    });
}

/// `kill -9` with snapshots taken (and the log before them purged) every few dozen
/// records, in small segments: recovery starts from a snapshot and replays the rest.
#[test]
fn kill9_with_snapshots_keeps_acknowledged_state() {
    run(Scenario {
        name: "kill9-snapshots",
        fsync: "always",
        stop: Stop::Kill9,
        checks: Checks::All,
        extra: &["--snapshot-every", "50", "--wal-segment-bytes", "4096"],
        tear: false,
    });
}

/// `kill -9`, then 1-200 random bytes appended to the newest log segment (small segments,
/// so there are several), as a write torn by the crash would leave: recovery cuts them off
/// and keeps everything acknowledged.
#[test]
fn kill9_torn_tail_keeps_acknowledged_state() {
    run(Scenario {
        name: "kill9-torn",
        fsync: "always",
        stop: Stop::Kill9,
        checks: Checks::All,
        extra: &["--wal-segment-bytes", "8192"],
        tear: true,
    });
}

/// One hold of every kind (reentrant with count 2, two SHARED holders, two SEMAPHORE
/// holders with 2 and 3 permits, a plain EXCLUSIVE), a blocked ACQUIRE in flight, `kill
/// -9`, restart: every hold comes back as it was (session, mode, token, count, permits,
/// semaphore limit), the in-flight ACQUIRE is not a holder, and later grants of every key
/// get larger tokens.
#[test]
fn kill9_keeps_every_lock_mode() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(every_lock_mode());
}

/// SIGTERM while clients are busy: the server exits cleanly, restarts, and every
/// acknowledged hold is still there.
#[test]
fn sigterm_restart_keeps_acknowledged_state() {
    run(Scenario {
        name: "sigterm-always",
        fsync: "always",
        stop: Stop::Term,
        checks: Checks::All,
        extra: &[],
        tear: false,
    });
}

// ---------------------------------------------------------------------------------------
// Scenario and settings
// ---------------------------------------------------------------------------------------

/// How the server is stopped in each cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// `Child::kill` (SIGKILL).
    Kill9,
    /// `kill -TERM <pid>`, then a bounded wait for a successful exit.
    Term,
}

/// What a restart must preserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checks {
    /// Rules 1-4.
    All,
    /// Rule 4 and phantom holds only: acknowledged state may be lost.
    TokensOnly,
}

struct Scenario {
    name: &'static str,
    fsync: &'static str,
    stop: Stop,
    checks: Checks,
    /// More server flags.
    extra: &'static [&'static str],
    /// After each kill, append random bytes to the newest log segment (a torn write).
    tear: bool,
}

struct Settings {
    cycles: usize,
    clients: usize,
    session_timeout_ms: u64,
    seed: u64,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn settings() -> Settings {
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let default_seed = clock ^ (u64::from(std::process::id()) << 32);
    Settings {
        cycles: env_number("TURNSTILE_CRASH_CYCLES", 3).max(1) as usize,
        clients: env_number("TURNSTILE_CRASH_CLIENTS", 6).max(1) as usize,
        session_timeout_ms: env_number("TURNSTILE_CRASH_SESSION_TIMEOUT_MS", 3000).max(500),
        seed: env_number("TURNSTILE_CRASH_SEED", default_seed),
    }
}

/// splitmix64: small, seedable, good enough to pick keys and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

fn pool_key(i: usize) -> String {
    format!("crash/k{i:03}")
}

fn hot_key(i: usize) -> String {
    format!("crash/hot{i}")
}

/// Every key the clients and the sweep use.
fn all_keys() -> Vec<String> {
    (0..POOL_KEYS)
        .map(pool_key)
        .chain((0..HOT_KEYS).map(hot_key))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Work directory and server process
// ---------------------------------------------------------------------------------------

/// A fresh directory for one test: `data/` (the server's `--data-dir`) and one log file
/// per server start. Removed on success, kept (and its path printed) on failure.
struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    fn new(name: &str) -> WorkDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("turnstile-crash-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        WorkDir { root }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log(&self, start: usize) -> PathBuf {
        self.root.join(format!("server-{start}.log"))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crash test failed: data dir and server logs kept in {}",
                self.root.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// A free loopback port: bind port 0, read it, let it go.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A `turnstile serve` process this test started. Dropping it kills it (SIGKILL) if it
/// still runs, and reaps it.
struct ServerProc {
    child: Child,
    port: u16,
    log: PathBuf,
    started: Instant,
}

impl ServerProc {
    fn spawn(work: &WorkDir, start: usize, sc: &Scenario, set: &Settings) -> ServerProc {
        let port = free_port();
        let log = work.log(start);
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(work.data())
            .args(["--fsync", sc.fsync])
            .args(["--session-timeout-ms", &set.session_timeout_ms.to_string()])
            .args(["--log-level", "info"])
            .args(sc.extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {BIN}: {e}"));
        ServerProc {
            child,
            port,
            log,
            started: Instant::now(),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `n` lines of this server's output.
    fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// Waits (bounded) until the server answers PING; Err if it exits or never answers.
    async fn wait_ready(&mut self) -> Result<Duration, String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("nothing tried yet");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "server (pid {}) exited with {status} while starting; last error: {last}",
                    self.pid()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "server (pid {}) did not answer PING within {READY_TIMEOUT:?}; last error: {last}",
                    self.pid()
                ));
            }
            match ping(&self.url()).await {
                Ok(()) => return Ok(self.started.elapsed()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, then reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit; on timeout SIGKILL and Err.
    async fn terminate(&mut self) -> Result<ExitStatus, String> {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("running kill -TERM {pid}: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed: {sent}"));
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() > deadline => {
                    self.kill9();
                    return Err(format!(
                        "server (pid {pid}) still running {EXIT_TIMEOUT:?} after SIGTERM (killed)"
                    ));
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(format!("waiting for pid {pid}: {e}")),
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            format!(
                "--- last {} lines of {} ---\n{}",
                lines.len() - from,
                path.display(),
                lines[from..].join("\n")
            )
        }
        Err(e) => format!("--- {}: {e} ---", path.display()),
    }
}

/// Starts a server and waits until it serves; retries (new port) if it could not bind.
async fn start_server(
    work: &WorkDir,
    starts: &mut usize,
    sc: &Scenario,
    set: &Settings,
) -> (ServerProc, Duration) {
    for attempt in 1..=3 {
        *starts += 1;
        let mut server = ServerProc::spawn(work, *starts, sc, set);
        match server.wait_ready().await {
            Ok(ready) => return (server, ready),
            Err(e) => {
                let tail = server.log_tail(40);
                let bind_failed = tail.contains("binding") || tail.contains("in use");
                if attempt < 3 && bind_failed {
                    eprintln!("crash test: port {} taken, retrying: {e}", server.port);
                    continue;
                }
                panic!(
                    "[{}] the server did not start on data dir {}: {e}\n{tail}",
                    sc.name,
                    work.data().display()
                );
            }
        }
    }
    unreachable!("the loop returns or panics")
}

// ---------------------------------------------------------------------------------------
// Talking to the server
// ---------------------------------------------------------------------------------------

/// Why a request got no usable reply.
#[derive(Debug)]
enum OpError {
    /// An error reply: its code (`DEADLOCK`, `NOTHELD`, ...) and full text.
    Server(String, String),
    /// No reply: connection closed or reset, or [`OP_TIMEOUT`] passed.
    Lost(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Server(_, text) => write!(f, "error reply: {text}"),
            OpError::Lost(why) => write!(f, "no reply: {why}"),
        }
    }
}

async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    match tokio::time::timeout(OP_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(con)) => Ok(con),
        Ok(Err(e)) => Err(format!("connecting to {url}: {e}")),
        Err(_) => Err(format!(
            "connecting to {url}: no connection within {OP_TIMEOUT:?}"
        )),
    }
}

/// Runs one command, bounded by `limit`.
async fn op_within(
    con: &mut MultiplexedConnection,
    words: &[&str],
    limit: Duration,
) -> Result<Value, OpError> {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    match tokio::time::timeout(limit, cmd.query_async::<Value>(con)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => match e.code() {
            Some(code) => Err(OpError::Server(
                code.to_string(),
                format!("{code} {}", e.detail().unwrap_or("")),
            )),
            None => Err(OpError::Lost(e.to_string())),
        },
        Err(_) => Err(OpError::Lost(format!("no reply within {limit:?}"))),
    }
}

async fn op(con: &mut MultiplexedConnection, words: &[&str]) -> Result<Value, OpError> {
    op_within(con, words, OP_TIMEOUT).await
}

/// A command whose reply the test needs (verification, sweep): failing to get one fails
/// the test.
async fn must(server: &ServerProc, con: &mut MultiplexedConnection, words: &[&str]) -> Value {
    match op(con, words).await {
        Ok(v) => v,
        Err(e) => panic!(
            "{words:?} against the restarted server (pid {}) failed: {e}\n{}",
            server.pid(),
            server.log_tail(40)
        ),
    }
}

async fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let short = Duration::from_millis(1000);
    let mut con = match tokio::time::timeout(short, client.get_multiplexed_async_connection()).await
    {
        Ok(Ok(con)) => con,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect: timed out".into()),
    };
    match op_within(&mut con, &["PING"], short).await {
        Ok(Value::SimpleString(s)) if s == "PONG" => Ok(()),
        Ok(other) => Err(format!("PING answered {other:?}")),
        Err(e) => Err(format!("PING: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Reply decoding (RESP2 flat arrays; RESP3 maps accepted too)
// ---------------------------------------------------------------------------------------

fn as_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("expected an integer, got {v:?}")),
        Value::SimpleString(s) => s
            .parse()
            .map_err(|_| format!("expected an integer, got {v:?}")),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

fn as_text(v: &Value) -> Result<String, String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn as_items(v: &Value) -> Result<&[Value], String> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

#[derive(Clone, Debug)]
struct Holder {
    session: i64,
    mode: String,
    token: i64,
    permits: i64,
    count: i64,
    ttl_ms: i64,
}

#[derive(Clone, Debug)]
struct Inspect {
    kind: String,
    limit: i64,
    fencing: i64,
    holders: Vec<Holder>,
    waiters: usize,
}

/// Decodes an INSPECT reply: None for the empty array of a key without holders and
/// waiters. Fields are looked up by name.
fn parse_inspect(v: &Value) -> Result<Option<Inspect>, String> {
    let pairs: Vec<(String, &Value)> = match v {
        Value::Array(a) if a.is_empty() => return Ok(None),
        Value::Map(m) if m.is_empty() => return Ok(None),
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| Ok((as_text(k)?, v)))
            .collect::<Result<_, String>>()?,
        Value::Array(a) => {
            if a.len() % 2 != 0 {
                return Err(format!("odd number of elements: {a:?}"));
            }
            a.chunks(2)
                .map(|p| Ok((as_text(&p[0])?, &p[1])))
                .collect::<Result<_, String>>()?
        }
        other => return Err(format!("expected an array or a map, got {other:?}")),
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("no field {name:?} in {v:?}"))
    };
    let mut holders = Vec::new();
    for h in as_items(field("holders")?)? {
        let h = as_items(h)?;
        if h.len() < 5 {
            return Err(format!("holder tuple too short: {h:?}"));
        }
        holders.push(Holder {
            session: as_int(&h[0])?,
            mode: as_text(&h[1])?,
            token: as_int(&h[2])?,
            permits: as_int(&h[3])?,
            count: as_int(&h[4])?,
            ttl_ms: h.get(5).map_or(Ok(-1), as_int)?,
        });
    }
    Ok(Some(Inspect {
        kind: as_text(field("kind")?)?,
        limit: as_int(field("limit")?)?,
        fencing: as_int(field("fencing")?)?,
        holders,
        waiters: as_items(field("waiters")?)?.len(),
    }))
}

fn describe(i: Option<&Inspect>) -> String {
    match i {
        None => "nothing (empty INSPECT: no holders, no waiters)".into(),
        Some(i) => {
            let hs: Vec<String> = i
                .holders
                .iter()
                .map(|h| {
                    format!(
                        "session {} {} token {} permits {} count {} ttl {} ms",
                        h.session, h.mode, h.token, h.permits, h.count, h.ttl_ms
                    )
                })
                .collect();
            format!(
                "kind {} limit {}, fencing {}, holders [{}], {} waiters",
                i.kind,
                i.limit,
                i.fencing,
                hs.join("; "),
                i.waiters
            )
        }
    }
}

fn parse_locks(v: &Value) -> Result<Vec<String>, String> {
    as_items(v)?.iter().map(as_text).collect()
}

// ---------------------------------------------------------------------------------------
// The ledger: everything the clients were told
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Granted (reply received), no RELEASE sent.
    Held,
    /// RELEASE sent, no reply (yet): uncertain after a crash.
    ReleaseSent,
    /// RELEASE acknowledged.
    Released,
    /// Seen held after a restart, waiting for its restored session to end.
    Restored,
    /// Its session ended after a restart (observed: the key became free).
    Ended,
}

#[derive(Debug)]
struct Grant {
    token: i64,
    cycle: usize,
    who: String,
    session: i64,
    state: State,
}

impl Grant {
    fn describe(&self) -> String {
        format!(
            "token {} granted to {} (session {}) in cycle {}",
            self.token, self.who, self.session, self.cycle
        )
    }
}

/// An ACQUIRE sent and not (yet) answered.
#[derive(Debug)]
struct Pending {
    key: String,
    /// The largest token known for the key when it was sent, and where it came from.
    floor: (i64, String),
    who: String,
    session: i64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    grants_acked: u64,
    releases_acked: u64,
    refused: u64,
    deadlocks: u64,
    uncertain_acquires: u64,
    uncertain_releases: u64,
    holds_verified: u64,
    releases_verified: u64,
    restored_unacked: u64,
    restored_ended: u64,
    sweep_grants: u64,
    lost_acked_holds: u64,
    lost_releases: u64,
    resurrected: u64,
    fencing_below_acked: u64,
    double_restarts: u64,
}

#[derive(Default)]
struct Ledger {
    cycle: usize,
    grants: Vec<Grant>,
    index: HashMap<(String, i64), usize>,
    by_key: HashMap<String, Vec<usize>>,
    /// Per key: the largest token acknowledged in a grant.
    acked_max: HashMap<String, i64>,
    /// Per key: the largest token known (grants, INSPECT) and where it was seen.
    floor: HashMap<String, (i64, String)>,
    pending: HashMap<u64, Pending>,
    next_pending: u64,
    violations: Vec<String>,
    notes: Vec<String>,
    stats: Stats,
}

fn lock(l: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ledger {
    fn violation(&mut self, msg: String) {
        self.violations.push(msg);
    }

    fn floor_of(&self, key: &str) -> (i64, String) {
        self.floor
            .get(key)
            .cloned()
            .unwrap_or((0, "nothing seen yet".into()))
    }

    fn raise_floor(&mut self, key: &str, token: i64, source: String) {
        let e = self
            .floor
            .entry(key.to_string())
            .or_insert((0, String::new()));
        if token > e.0 {
            *e = (token, source);
        }
    }

    /// Records an ACQUIRE about to be sent.
    fn begin_acquire(&mut self, key: &str, who: &str, session: i64) -> u64 {
        let id = self.next_pending;
        self.next_pending += 1;
        let floor = self.floor_of(key);
        self.pending.insert(
            id,
            Pending {
                key: key.to_string(),
                floor,
                who: who.to_string(),
                session,
            },
        );
        id
    }

    /// The ACQUIRE was refused (nil, DEADLOCK, or another error reply).
    fn refused(&mut self, id: u64) {
        self.pending.remove(&id);
    }

    /// The ACQUIRE was granted with `token`: checks rule 4 and mutual exclusion, records
    /// the grant, returns its index.
    fn granted(&mut self, id: u64, token: i64, state: State) -> usize {
        let p = self.pending.remove(&id).expect("a pending ACQUIRE");
        let cycle = self.cycle;
        if token <= p.floor.0 {
            self.violation(format!(
                "rule 4: key {}: ACQUIRE by {} (session {}) in cycle {cycle} was granted token \
                 {token}, but token {} was already known for the key ({}); tokens must increase",
                p.key, p.who, p.session, p.floor.0, p.floor.1
            ));
        }
        if let Some(&gi) = self.index.get(&(p.key.clone(), token)) {
            let first = self.grants[gi].describe();
            self.violation(format!(
                "rule 4: key {}: token {token} issued twice: {first}, and again to {} (session {}) \
                 in cycle {cycle}",
                p.key, p.who, p.session
            ));
        }
        let others: Vec<String> = self
            .by_key
            .get(&p.key)
            .into_iter()
            .flatten()
            .map(|&gi| &self.grants[gi])
            .filter(|g| g.state == State::Held && g.session != p.session)
            .map(Grant::describe)
            .collect();
        if !others.is_empty() {
            self.violation(format!(
                "mutual exclusion: key {}: exclusive ACQUIRE by {} (session {}) granted token {token} \
                 in cycle {cycle} while still held (no RELEASE sent) as {}",
                p.key,
                p.who,
                p.session,
                others.join(", ")
            ));
        }
        let gi = self.grants.len();
        self.grants.push(Grant {
            token,
            cycle,
            who: p.who.clone(),
            session: p.session,
            state,
        });
        self.index.insert((p.key.clone(), token), gi);
        self.by_key.entry(p.key.clone()).or_default().push(gi);
        let m = self.acked_max.entry(p.key.clone()).or_insert(0);
        *m = (*m).max(token);
        self.raise_floor(
            &p.key,
            token,
            format!("granted to {} in cycle {cycle}", p.who),
        );
        gi
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

struct Client {
    id: usize,
    session: i64,
    con: MultiplexedConnection,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

/// Acquires and releases at random until told to stop or until a request gets no reply
/// (the server is gone): that request stays uncertain in the ledger.
async fn run_client(mut c: Client) {
    let who = format!("client {}", c.id);
    let mut held: Vec<(String, usize)> = Vec::new();
    while !c.stop.load(Ordering::Relaxed) {
        let release = !held.is_empty()
            && (held.len() >= MAX_HOLDS_PER_CLIENT || c.rng.below(100) < RELEASE_PERCENT);
        if release {
            let (key, gi) = held.swap_remove(c.rng.below(held.len() as u64) as usize);
            lock(&c.ledger).grants[gi].state = State::ReleaseSent;
            match op(&mut c.con, &["RELEASE", &key]).await {
                Ok(Value::Int(1)) => {
                    let mut l = lock(&c.ledger);
                    l.grants[gi].state = State::Released;
                    l.stats.releases_acked += 1;
                }
                Ok(other) => {
                    lock(&c.ledger).violation(format!(
                        "RELEASE {key} by {who} (session {}): unexpected reply {other:?}",
                        c.session
                    ));
                    return;
                }
                Err(OpError::Server(_, text)) => {
                    let mut l = lock(&c.ledger);
                    let g = l.grants[gi].describe();
                    l.violation(format!(
                        "RELEASE {key} by {who} (session {}), which holds it ({g}, 10-minute \
                         lease), got {text}",
                        c.session
                    ));
                    return;
                }
                Err(OpError::Lost(_)) => return,
            }
        } else {
            let hot = c.rng.below(100) < HOT_PERCENT;
            let key = if hot {
                hot_key(c.rng.below(HOT_KEYS as u64) as usize)
            } else {
                pool_key(c.rng.below(POOL_KEYS as u64) as usize)
            };
            if held.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let wait = if hot { HOT_WAIT_MS } else { "0" };
            let id = lock(&c.ledger).begin_acquire(&key, &who, c.session);
            match op(&mut c.con, &["ACQUIRE", &key, "TTL", TTL_MS, "WAIT", wait]).await {
                Ok(Value::Int(token)) => {
                    let mut l = lock(&c.ledger);
                    let gi = l.granted(id, token, State::Held);
                    l.stats.grants_acked += 1;
                    drop(l);
                    held.push((key, gi));
                }
                Ok(Value::Nil) => {
                    let mut l = lock(&c.ledger);
                    l.refused(id);
                    l.stats.refused += 1;
                }
                Err(OpError::Server(code, _)) if hot && code == "DEADLOCK" => {
                    let mut l = lock(&c.ledger);
                    l.refused(id);
                    l.stats.deadlocks += 1;
                }
                Ok(other) => {
                    let mut l = lock(&c.ledger);
                    l.refused(id);
                    l.violation(format!(
                        "ACQUIRE {key} by {who} (session {}): unexpected reply {other:?}",
                        c.session
                    ));
                    return;
                }
                Err(OpError::Server(_, text)) => {
                    let mut l = lock(&c.ledger);
                    l.refused(id);
                    l.violation(format!(
                        "ACQUIRE {key} WAIT {wait} by {who} (session {}): unexpected error {text}",
                        c.session
                    ));
                    return;
                }
                Err(OpError::Lost(_)) => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verification after a restart
// ---------------------------------------------------------------------------------------

struct VerifyCtx {
    checks: Checks,
    /// The verifying connection's session id.
    me: i64,
    /// How long after the restart began the last INSPECT was answered, and whether that
    /// was before restored sessions could have ended.
    elapsed: Duration,
    in_time: bool,
    session_timeout_ms: u64,
}

impl Ledger {
    /// Checks one key's INSPECT after a restart against the ledger.
    fn check_key(&mut self, key: &str, insp: Option<&Inspect>, ctx: &VerifyCtx) {
        let cycle = self.cycle;
        let all = ctx.checks == Checks::All;
        let shown = describe(insp);
        let late = if ctx.in_time {
            String::new()
        } else {
            format!(
                " (NOTE: this check ended {} ms after the restart began, past \
                 --session-timeout-ms {}: restored holds may have ended legitimately; raise \
                 TURNSTILE_CRASH_SESSION_TIMEOUT_MS)",
                ctx.elapsed.as_millis(),
                ctx.session_timeout_ms
            )
        };
        let holders: Vec<Holder> = insp.map(|i| i.holders.clone()).unwrap_or_default();

        // Rules 1 and 2: this cycle's acknowledged grants and releases.
        let gis = self.by_key.get(key).cloned().unwrap_or_default();
        for gi in gis {
            if self.grants[gi].cycle != cycle {
                continue;
            }
            let g = &self.grants[gi];
            let h = holders.iter().find(|h| h.token == g.token).cloned();
            let before = match g.state {
                State::Restored => " (and it was held after the previous restart)",
                _ => "",
            };
            match (g.state, h) {
                (State::Held | State::Restored, Some(h)) => {
                    if h.session != g.session && all {
                        let msg = format!(
                            "rule 1: key {key}: {} (never released{before}) is held after the \
                             restart with that token, but by session {} instead of {}; INSPECT \
                             shows {shown}",
                            g.describe(),
                            h.session,
                            g.session
                        );
                        self.violation(msg);
                    } else if !h.mode.eq_ignore_ascii_case("exclusive") && all {
                        let msg = format!(
                            "rule 1: key {key}: {} (EXCLUSIVE) is held after the restart in mode \
                             {:?}; INSPECT shows {shown}",
                            g.describe(),
                            h.mode
                        );
                        self.violation(msg);
                    } else {
                        self.stats.holds_verified += 1;
                    }
                    self.grants[gi].state = State::Restored;
                }
                (State::Held | State::Restored, None) => {
                    if all {
                        let msg = format!(
                            "rule 1: key {key}: expected a holder with token {} after the restart \
                             ({}, acknowledged and never released{before}), but INSPECT shows \
                             {shown}{late}",
                            g.token,
                            g.describe()
                        );
                        self.violation(msg);
                    } else {
                        self.stats.lost_acked_holds += 1;
                        self.grants[gi].state = State::Ended;
                    }
                }
                (State::Released, Some(_)) => {
                    if all {
                        let msg = format!(
                            "rule 2: key {key}: {} was released (RELEASE answered :1) but after \
                             the restart INSPECT still shows it: {shown}",
                            g.describe()
                        );
                        self.violation(msg);
                    } else {
                        self.stats.lost_releases += 1;
                        self.grants[gi].state = State::Restored;
                    }
                }
                (State::Ended, Some(_)) => {
                    if all {
                        let msg = format!(
                            "rule 2/3: key {key}: {} was not held after the previous restart, but \
                             after this one INSPECT shows it again: {shown}",
                            g.describe()
                        );
                        self.violation(msg);
                    } else {
                        self.stats.resurrected += 1;
                        self.grants[gi].state = State::Restored;
                    }
                }
                (State::Released, None) => self.stats.releases_verified += 1,
                (State::ReleaseSent, Some(_)) => self.grants[gi].state = State::Restored,
                (State::ReleaseSent, None) => self.grants[gi].state = State::Ended,
                (State::Ended, None) => {}
            }
        }

        // Rule 3: every holder is explained. Rule 4: its token is not below what was known.
        for h in &holders {
            match self.index.get(&(key.to_string(), h.token)).copied() {
                Some(gi) if self.grants[gi].cycle == cycle => {}
                Some(gi) => {
                    let g = self.grants[gi].describe();
                    let state = self.grants[gi].state;
                    if all {
                        self.violation(format!(
                            "rule 2/3: key {key}: {g} is held again after the restart in cycle \
                             {cycle}, though before this cycle began it was {state:?} (released, \
                             or its restored session ended and the key was free); INSPECT shows {shown}"
                        ));
                    } else {
                        self.stats.resurrected += 1;
                        self.notes.push(format!(
                            "cycle {cycle}: key {key}: {g} ({state:?} earlier) is held again \
                             (allowed with --fsync not always)"
                        ));
                        self.grants[gi].state = State::Restored;
                    }
                }
                None => {
                    let candidate = self
                        .pending
                        .iter()
                        .filter(|(_, p)| p.key == key && p.floor.0 < h.token)
                        .map(|(id, _)| *id)
                        .min();
                    match candidate {
                        Some(id) => {
                            let p_session = self.pending[&id].session;
                            let p_who = self.pending[&id].who.clone();
                            if p_session != h.session && all {
                                self.violation(format!(
                                    "rule 3: key {key}: the in-flight ACQUIRE by {p_who} (session \
                                     {p_session}) took effect with token {}, but the holder is \
                                     session {}; INSPECT shows {shown}",
                                    h.token, h.session
                                ));
                            }
                            let gi = self.granted(id, h.token, State::Restored);
                            self.grants[gi].who = format!("{p_who} (reply lost)");
                            self.stats.restored_unacked += 1;
                        }
                        None => {
                            let in_flight: Vec<String> = self
                                .pending
                                .values()
                                .filter(|p| p.key == key)
                                .map(|p| {
                                    format!(
                                        "{} (session {}) sent when token {} was known",
                                        p.who, p.session, p.floor.0
                                    )
                                })
                                .collect();
                            let (floor, source) = self.floor_of(key);
                            self.violation(format!(
                                "rule 3/4: key {key}: after the restart session {} holds token {}, \
                                 which no acknowledged grant explains and no in-flight ACQUIRE \
                                 can (in flight on this key: [{}]; largest token known before: \
                                 {floor}, {source}); INSPECT shows {shown}",
                                h.session,
                                h.token,
                                in_flight.join(", ")
                            ));
                        }
                    }
                }
            }
            if h.session == ctx.me {
                self.violation(format!(
                    "sessions: the connection opened after the restart got session id {}, which \
                     is also the session of a restored holder of {key}; INSPECT shows {shown}",
                    ctx.me
                ));
            }
            self.raise_floor(
                key,
                h.token,
                format!("INSPECT holder after the restart in cycle {cycle}"),
            );
        }

        if let Some(i) = insp {
            if i.kind != "lock" {
                self.violation(format!(
                    "key {key}: only EXCLUSIVE locks were taken, but INSPECT shows kind {:?}: {shown}",
                    i.kind
                ));
            }
            if i.holders.len() > 1 {
                self.violation(format!(
                    "mutual exclusion: key {key}: only EXCLUSIVE locks were taken, but after the \
                     restart INSPECT shows {} holders: {shown}",
                    i.holders.len()
                ));
            }
            if let Some(top) = i.holders.iter().map(|h| h.token).max() {
                if top > i.fencing {
                    self.violation(format!(
                        "rule 4: key {key}: INSPECT's fencing (last token issued) {} is below a \
                         holder's token {top}: {shown}",
                        i.fencing
                    ));
                }
            }
            let acked = self.acked_max.get(key).copied().unwrap_or(0);
            if i.fencing < acked {
                if all {
                    self.violation(format!(
                        "rule 4: key {key}: after the restart INSPECT's fencing (last token issued) \
                         is {}, below token {acked} acknowledged earlier: {shown}",
                        i.fencing
                    ));
                } else {
                    self.stats.fencing_below_acked += 1;
                }
            }
            self.raise_floor(
                key,
                i.fencing,
                format!("INSPECT fencing after the restart in cycle {cycle}"),
            );
        }
    }
}

/// INSPECTs every key and LOCKS right after a restart and checks rules 1-4.
async fn verify(
    server: &ServerProc,
    ledger: &Mutex<Ledger>,
    keys: &[String],
    sc: &Scenario,
    set: &Settings,
) -> (MultiplexedConnection, usize) {
    let mut con = connect(&server.url())
        .await
        .unwrap_or_else(|e| panic!("[{}] after the restart: {e}", sc.name));
    let me = as_int(&must(server, &mut con, &["CLIENT", "ID"]).await).expect("CLIENT ID");
    let mut seen = Vec::with_capacity(keys.len());
    for key in keys {
        let v = must(server, &mut con, &["INSPECT", key]).await;
        seen.push((key.clone(), v));
    }
    let locks_v = must(
        server,
        &mut con,
        &["LOCKS", "MATCH", "*", "COUNT", "1000000"],
    )
    .await;
    let elapsed = server.started.elapsed();
    let ctx = VerifyCtx {
        checks: sc.checks,
        me,
        elapsed,
        in_time: elapsed < Duration::from_millis(set.session_timeout_ms),
        session_timeout_ms: set.session_timeout_ms,
    };
    let mut l = lock(ledger);
    let mut held_keys = 0;
    for (key, v) in &seen {
        match parse_inspect(v) {
            Ok(insp) => {
                if insp.as_ref().is_some_and(|i| !i.holders.is_empty()) {
                    held_keys += 1;
                }
                l.check_key(key, insp.as_ref(), &ctx);
            }
            Err(e) => l.violation(format!("INSPECT {key}: unexpected reply shape ({e})")),
        }
    }
    match parse_locks(&locks_v) {
        Ok(locked) => {
            let known: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
            for k in locked {
                if !known.contains(k.as_str()) {
                    l.violation(format!(
                        "rule 3: after the restart LOCKS lists key {k:?}, which no client ever used"
                    ));
                }
            }
        }
        Err(e) => l.violation(format!("LOCKS: unexpected reply shape ({e}): {locks_v:?}")),
    }
    // Requests that never got a reply and did not show up after the restart did not happen.
    l.pending.clear();
    (con, held_keys)
}

/// Waits (bounded) until restored sessions have ended: LOCKS is empty. Returns how long
/// after the restart began that was.
async fn wait_restored_end(
    server: &ServerProc,
    con: &mut MultiplexedConnection,
    ledger: &Mutex<Ledger>,
    set: &Settings,
    held_keys: usize,
) -> Duration {
    let timeout = Duration::from_millis(set.session_timeout_ms);
    let deadline = server.started + timeout + END_SLACK;
    loop {
        let v = must(server, con, &["LOCKS", "MATCH", "*", "COUNT", "1000000"]).await;
        let locked = parse_locks(&v).unwrap_or_else(|e| panic!("LOCKS: {e}: {v:?}"));
        if locked.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let first = &locked[0];
            let insp = must(server, con, &["INSPECT", first]).await;
            let shown = parse_inspect(&insp).map_or_else(|e| e, |i| describe(i.as_ref()));
            lock(ledger).violation(format!(
                "restored sessions did not end: {} ms after the restart (--session-timeout-ms {}) \
                 LOCKS still lists {} keys, e.g. {first}: {shown}",
                server.started.elapsed().as_millis(),
                set.session_timeout_ms,
                locked.len()
            ));
            return server.started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ended = server.started.elapsed();
    let mut l = lock(ledger);
    let cycle = l.cycle;
    for g in l.grants.iter_mut().filter(|g| g.cycle == cycle) {
        if matches!(g.state, State::Held | State::ReleaseSent | State::Restored) {
            g.state = State::Ended;
        }
    }
    l.stats.restored_ended += held_keys as u64;
    if held_keys > 0 && ended < timeout {
        l.violation(format!(
            "restored holds on {held_keys} keys were gone {} ms after the restart began, before \
             --session-timeout-ms {}",
            ended.as_millis(),
            set.session_timeout_ms
        ));
    }
    ended
}

/// Acquires and releases every key once (all are free now): rule 4 on every key, and
/// "the restarted server serves".
async fn sweep(
    server: &ServerProc,
    con: &mut MultiplexedConnection,
    ledger: &Mutex<Ledger>,
    keys: &[String],
) {
    let me = as_int(&must(server, con, &["CLIENT", "ID"]).await).expect("CLIENT ID");
    for key in keys {
        let id = lock(ledger).begin_acquire(key, "the sweep", me);
        let v = must(server, con, &["ACQUIRE", key, "TTL", TTL_MS, "WAIT", "0"]).await;
        let token = match v {
            Value::Int(t) => t,
            other => {
                let mut l = lock(ledger);
                l.refused(id);
                l.violation(format!(
                    "sweep: ACQUIRE {key} WAIT 0 on a free key (LOCKS was empty) answered {other:?}"
                ));
                continue;
            }
        };
        let gi = {
            let mut l = lock(ledger);
            l.stats.sweep_grants += 1;
            l.granted(id, token, State::ReleaseSent)
        };
        match must(server, con, &["RELEASE", key]).await {
            Value::Int(1) => lock(ledger).grants[gi].state = State::Released,
            other => lock(ledger).violation(format!(
                "sweep: RELEASE {key} (token {token}) answered {other:?}"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cycle loop
// ---------------------------------------------------------------------------------------

fn fail_if_violations(ledger: &Mutex<Ledger>, sc: &Scenario, work: &WorkDir, logs: &[PathBuf]) {
    let l = lock(ledger);
    if l.violations.is_empty() {
        return;
    }
    let mut msg = format!(
        "[{}] cycle {}: {} violation(s) (--fsync {}, stop {:?}, data dir {}):\n",
        sc.name,
        l.cycle,
        l.violations.len(),
        sc.fsync,
        sc.stop,
        work.data().display()
    );
    for v in l.violations.iter().take(30) {
        msg.push_str("  - ");
        msg.push_str(v);
        msg.push('\n');
    }
    if l.violations.len() > 30 {
        msg.push_str(&format!("  ... and {} more\n", l.violations.len() - 30));
    }
    for log in logs.iter().rev().take(2).rev() {
        msg.push_str(&log_tail(log, 30));
        msg.push('\n');
    }
    panic!("{msg}");
}

/// Appends `n` pseudo-random bytes to the newest segment in `data/wal/`.
fn tear_tail(work: &WorkDir, rng: &mut Rng, n: usize) -> String {
    let dir = work.data().join("wal");
    let newest = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()
        .unwrap_or_else(|| panic!("no *.wal segment in {}", dir.display()));
    let garbage: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap_or_else(|e| panic!("opening {}: {e}", newest.display()));
    std::io::Write::write_all(&mut f, &garbage).expect("append garbage");
    format!(
        "{n} random bytes appended to {}",
        newest
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    )
}

/// Stops the server the scenario's way (a failed SIGTERM is a violation).
async fn stop_server(server: &mut ServerProc, sc: &Scenario, ledger: &Mutex<Ledger>) {
    match sc.stop {
        Stop::Kill9 => server.kill9(),
        Stop::Term => match server.terminate().await {
            Ok(status) if status.success() => {}
            Ok(status) => lock(ledger).violation(format!(
                "SIGTERM: the server (pid {}) exited with {status}, not success",
                server.pid()
            )),
            Err(e) => lock(ledger).violation(format!("SIGTERM: {e}")),
        },
    }
}

fn run(sc: Scenario) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(run_cycles(&sc));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn run_cycles(sc: &Scenario) {
    let set = settings();
    eprintln!(
        "[{}] {} cycles, {} clients, --fsync {}, --session-timeout-ms {}, seed {} \
         (TURNSTILE_CRASH_SEED)",
        sc.name, set.cycles, set.clients, sc.fsync, set.session_timeout_ms, set.seed
    );
    let work = WorkDir::new(sc.name);
    let keys = all_keys();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = Rng(set.seed);
    let mut starts = 0;
    let mut logs = Vec::new();
    let (mut server, _) = start_server(&work, &mut starts, sc, &set).await;
    logs.push(server.log.clone());

    for cycle in 1..=set.cycles {
        let before = {
            let mut l = lock(&ledger);
            l.cycle = cycle;
            l.stats
        };

        // Clients, each on its own connection (session).
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::with_capacity(set.clients);
        for id in 0..set.clients {
            let mut con = connect(&server.url())
                .await
                .unwrap_or_else(|e| panic!("[{}] cycle {cycle}: client {id}: {e}", sc.name));
            let session = match op(&mut con, &["CLIENT", "ID"]).await {
                Ok(v) => as_int(&v).expect("CLIENT ID is an integer"),
                Err(e) => panic!("[{}] cycle {cycle}: CLIENT ID: {e}", sc.name),
            };
            clients.push(Client {
                id,
                session,
                con,
                ledger: ledger.clone(),
                stop: stop.clone(),
                rng: Rng(rng.next()),
            });
        }
        let handles: Vec<_> = clients
            .into_iter()
            .map(|c| tokio::spawn(run_client(c)))
            .collect();

        // Stop the server at a random moment.
        let delay = rng.between(STOP_DELAY_MS.0, STOP_DELAY_MS.1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        stop_server(&mut server, sc, &ledger).await;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            tokio::time::timeout(OP_TIMEOUT * 4, h)
                .await
                .expect("a client ends once the server is gone")
                .expect("a client task does not panic");
        }
        {
            let mut l = lock(&ledger);
            let uncertain_acquires = l.pending.len() as u64;
            let uncertain_releases = l
                .grants
                .iter()
                .filter(|g| g.cycle == cycle && g.state == State::ReleaseSent)
                .count() as u64;
            l.stats.uncertain_acquires += uncertain_acquires;
            l.stats.uncertain_releases += uncertain_releases;
        }
        fail_if_violations(&ledger, sc, &work, &logs);

        // Restart on the same data dir and check.
        drop(server);
        let torn = if sc.tear {
            let n = rng.between(1, 200) as usize;
            format!("; {}", tear_tail(&work, &mut rng, n))
        } else {
            String::new()
        };
        let (restarted, ready) = start_server(&work, &mut starts, sc, &set).await;
        server = restarted;
        logs.push(server.log.clone());
        let (mut con, mut held_keys) = verify(&server, &ledger, &keys, sc, &set).await;
        let mut verified_ms = server.started.elapsed().as_millis();
        fail_if_violations(&ledger, sc, &work, &logs);

        // Sometimes: stop it again before the restored sessions have ended.
        let mut double = String::new();
        if cycle % DOUBLE_CRASH_EVERY == 0 {
            drop(con);
            let late = rng.below(2) == 0;
            if late {
                // Around the moment the restored sessions end: each restored hold may or
                // may not have ended, so all of them become uncertain.
                let at = set.session_timeout_ms - 100 + rng.below(200);
                let now = server.started.elapsed().as_millis() as u64;
                tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await;
                let mut l = lock(&ledger);
                for g in l.grants.iter_mut().filter(|g| g.cycle == cycle) {
                    if g.state == State::Restored {
                        g.state = State::ReleaseSent;
                    }
                }
            }
            let at_ms = server.started.elapsed().as_millis();
            stop_server(&mut server, sc, &ledger).await;
            fail_if_violations(&ledger, sc, &work, &logs);
            drop(server);
            let (restarted, _) = start_server(&work, &mut starts, sc, &set).await;
            server = restarted;
            logs.push(server.log.clone());
            (con, held_keys) = verify(&server, &ledger, &keys, sc, &set).await;
            verified_ms = server.started.elapsed().as_millis();
            fail_if_violations(&ledger, sc, &work, &logs);
            lock(&ledger).stats.double_restarts += 1;
            double = format!(
                "; stopped again {at_ms} ms after that restart ({}), restarted and checked",
                if late {
                    "around the session timeout"
                } else {
                    "before the session timeout"
                }
            );
        }
        let ended = wait_restored_end(&server, &mut con, &ledger, &set, held_keys).await;
        fail_if_violations(&ledger, sc, &work, &logs);
        sweep(&server, &mut con, &ledger, &keys).await;
        fail_if_violations(&ledger, sc, &work, &logs);

        let s = lock(&ledger).stats;
        eprintln!(
            "crash-cycle {cycle}/{} [{}]: {:?} after {delay} ms{torn}; {} grants and {} releases \
             acknowledged, {} acquires and {} releases uncertain; restart answered PING after \
             {} ms, checked by {} ms: {} holds kept, {} releases kept, {} unacknowledged grants \
             restored{}{double}; restored holds on {held_keys} keys ended {} ms after the restart",
            set.cycles,
            sc.name,
            sc.stop,
            s.grants_acked - before.grants_acked,
            s.releases_acked - before.releases_acked,
            s.uncertain_acquires - before.uncertain_acquires,
            s.uncertain_releases - before.uncertain_releases,
            ready.as_millis(),
            verified_ms,
            s.holds_verified - before.holds_verified,
            s.releases_verified - before.releases_verified,
            s.restored_unacked - before.restored_unacked,
            if sc.checks == Checks::TokensOnly {
                format!(
                    "; lost: {} acknowledged holds, {} acknowledged releases",
                    s.lost_acked_holds - before.lost_acked_holds,
                    s.lost_releases - before.lost_releases
                )
            } else {
                String::new()
            },
            ended.as_millis(),
        );
    }

    // A clean stop of the last server.
    match server.terminate().await {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "[{}] the last server exited with {status} after SIGTERM\n{}",
            sc.name,
            server.log_tail(30)
        ),
        Err(e) => panic!("[{}] {e}\n{}", sc.name, server.log_tail(30)),
    }
    if sc.extra.contains(&"--snapshot-every") {
        let snapshots = fs::read_dir(work.data().join("snapshots")).map_or(0, |d| d.count());
        assert!(
            snapshots > 0,
            "[{}] no snapshot was taken in {}: the test did not exercise recovery from one",
            sc.name,
            work.data().join("snapshots").display()
        );
        eprintln!("[{}] {snapshots} snapshot file(s) at the end", sc.name);
    }
    let l = lock(&ledger);
    for n in l.notes.iter().take(10) {
        eprintln!("note: {n}");
    }
    let s = l.stats;
    println!(
        "SUMMARY test={} fsync={} extra={:?} stop={:?} cycles={} grants_acknowledged={} \
         releases_acknowledged={} holds_verified={} releases_verified={} refused={} \
         deadlocks={} uncertain_acquires={} uncertain_releases={} restored_unacknowledged={} \
         restored_holds_ended={} sweep_grants={} lost_acknowledged_holds={} \
         lost_acknowledged_releases={} resurrected={} fencing_below_acknowledged={} \
         double_restarts={}",
        sc.name,
        sc.fsync,
        sc.extra.join(" "),
        sc.stop,
        set.cycles,
        s.grants_acked,
        s.releases_acked,
        s.holds_verified,
        s.releases_verified,
        s.refused,
        s.deadlocks,
        s.uncertain_acquires,
        s.uncertain_releases,
        s.restored_unacked,
        s.restored_ended,
        s.sweep_grants,
        s.lost_acked_holds,
        s.lost_releases,
        s.resurrected,
        s.fencing_below_acked,
        s.double_restarts,
    );
}

// ---------------------------------------------------------------------------------------
// Every lock mode across one kill -9
// ---------------------------------------------------------------------------------------

/// A reply that must be an integer.
async fn int_reply(server: &ServerProc, con: &mut MultiplexedConnection, words: &[&str]) -> i64 {
    let v = must(server, con, words).await;
    as_int(&v).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

async fn inspect_key(
    server: &ServerProc,
    con: &mut MultiplexedConnection,
    key: &str,
) -> Option<Inspect> {
    let v = must(server, con, &["INSPECT", key]).await;
    parse_inspect(&v).unwrap_or_else(|e| panic!("INSPECT {key}: {e}"))
}

async fn every_lock_mode() {
    let set = Settings {
        cycles: 1,
        clients: 2,
        ..settings()
    };
    let sc = Scenario {
        name: "kill9-modes",
        fsync: "always",
        stop: Stop::Kill9,
        checks: Checks::All,
        extra: &[],
        tear: false,
    };
    let work = WorkDir::new(sc.name);
    let mut starts = 0;
    let (mut server, _) = start_server(&work, &mut starts, &sc, &set).await;
    let url = server.url();
    let mut a = connect(&url).await.expect("client A");
    let mut b = connect(&url).await.expect("client B");
    let sa = int_reply(&server, &mut a, &["CLIENT", "ID"]).await;
    let sb = int_reply(&server, &mut b, &["CLIENT", "ID"]).await;

    let re_words = ["ACQUIRE", "modes/re", "REENTRANT", "TTL", TTL_MS];
    let re = int_reply(&server, &mut a, &re_words).await;
    for _ in 0..2 {
        let again = int_reply(&server, &mut a, &re_words).await;
        assert_eq!(again, re, "a reentrant ACQUIRE returns the same token");
    }
    assert_eq!(
        int_reply(&server, &mut a, &["RELEASE", "modes/re"]).await,
        1
    );
    let shared = ["ACQUIRE", "modes/sh", "SHARED", "TTL", TTL_MS];
    let sh_a = int_reply(&server, &mut a, &shared).await;
    let sh_b = int_reply(&server, &mut b, &shared).await;
    let sem = |n: &'static str| {
        [
            "ACQUIRE",
            "modes/sem",
            "SEMAPHORE",
            "5",
            "PERMITS",
            n,
            "TTL",
            TTL_MS,
        ]
    };
    let sem_a = int_reply(&server, &mut a, &sem("2")).await;
    let sem_b = int_reply(&server, &mut b, &sem("3")).await;
    let ex_b = int_reply(&server, &mut b, &["ACQUIRE", "modes/ex", "TTL", TTL_MS]).await;

    // B queues on modes/re behind A (no WAIT): in flight when the server dies.
    let mut b_waiting = b.clone();
    let waiter =
        tokio::spawn(
            async move { op(&mut b_waiting, &["ACQUIRE", "modes/re", "TTL", TTL_MS]).await },
        );
    let mut queued = false;
    for _ in 0..250 {
        if inspect_key(&server, &mut a, "modes/re")
            .await
            .is_some_and(|i| i.waiters == 1)
        {
            queued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(queued, "B's ACQUIRE of modes/re never showed as a waiter");

    server.kill9();
    let mut violations = Vec::new();
    match tokio::time::timeout(OP_TIMEOUT * 2, waiter).await {
        Ok(Ok(Err(OpError::Lost(_)))) => {}
        other => violations.push(format!(
            "B's ACQUIRE of modes/re (queued behind A's hold, token {re}) should have got no \
             reply when the server was killed, got {other:?}"
        )),
    }
    drop(server);
    let (restarted, _) = start_server(&work, &mut starts, &sc, &set).await;
    server = restarted;
    let mut c = connect(&server.url())
        .await
        .expect("client after the restart");

    // (key, kind, limit, expected holders: session, mode, token, permits, count)
    type Expected = (i64, &'static str, i64, i64, i64);
    let expected: [(&str, &str, i64, Vec<Expected>); 4] = [
        ("modes/re", "lock", 0, vec![(sa, "exclusive", re, 1, 2)]),
        (
            "modes/sh",
            "lock",
            0,
            vec![(sa, "shared", sh_a, 1, 1), (sb, "shared", sh_b, 1, 1)],
        ),
        (
            "modes/sem",
            "semaphore",
            5,
            vec![
                (sa, "semaphore", sem_a, 2, 1),
                (sb, "semaphore", sem_b, 3, 1),
            ],
        ),
        ("modes/ex", "lock", 0, vec![(sb, "exclusive", ex_b, 1, 1)]),
    ];
    for (key, kind, limit, holders) in &expected {
        let insp = inspect_key(&server, &mut c, key).await;
        let shown = describe(insp.as_ref());
        let Some(i) = insp else {
            violations.push(format!(
                "{key}: expected holders {holders:?} (session, mode, token, permits, count) after \
                 the restart, INSPECT shows {shown}"
            ));
            continue;
        };
        if i.kind != *kind || i.limit != *limit {
            violations.push(format!(
                "{key}: expected kind {kind} limit {limit} after the restart, INSPECT shows {shown}"
            ));
        }
        if i.holders.len() != holders.len() {
            violations.push(format!(
                "{key}: expected {} holders {holders:?} (session, mode, token, permits, count) \
                 after the restart, INSPECT shows {shown}",
                holders.len()
            ));
        }
        for &(session, mode, token, permits, count) in holders {
            let found = i.holders.iter().find(|h| h.token == token);
            let ok = found.is_some_and(|h| {
                h.session == session
                    && (h.mode.eq_ignore_ascii_case(mode) || *kind == "semaphore")
                    && h.permits == permits
                    && h.count == count
                    && h.ttl_ms > 0
                    && h.ttl_ms <= 600_000
            });
            if !ok {
                violations.push(format!(
                    "{key}: expected a holder (session {session}, {mode}, token {token}, permits \
                     {permits}, count {count}, 0 < ttl <= 600000) after the restart, INSPECT \
                     shows {shown}"
                ));
            }
        }
    }

    // Once the restored sessions have ended, every key grants a larger token.
    let deadline = server.started + Duration::from_millis(set.session_timeout_ms) + END_SLACK;
    loop {
        let v = must(&server, &mut c, &["LOCKS", "MATCH", "*", "COUNT", "1000"]).await;
        if parse_locks(&v).is_ok_and(|l| l.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            violations.push(format!(
                "restored sessions did not end within --session-timeout-ms {} + {END_SLACK:?}: \
                 LOCKS shows {v:?}",
                set.session_timeout_ms
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: [(&str, Vec<&str>, i64); 4] = [
        ("modes/re", vec!["TTL", TTL_MS, "WAIT", "0"], re),
        (
            "modes/sh",
            vec!["SHARED", "TTL", TTL_MS, "WAIT", "0"],
            sh_a.max(sh_b),
        ),
        (
            "modes/sem",
            vec!["SEMAPHORE", "5", "TTL", TTL_MS, "WAIT", "0"],
            sem_a.max(sem_b),
        ),
        ("modes/ex", vec!["TTL", TTL_MS, "WAIT", "0"], ex_b),
    ];
    for (key, opts, before) in after {
        let mut words = vec!["ACQUIRE", key];
        words.extend(opts);
        match must(&server, &mut c, &words).await {
            Value::Int(t) if t > before => {}
            other => violations.push(format!(
                "rule 4: {words:?} after the restart answered {other:?}, expected a token above \
                 {before} (acknowledged before the kill)"
            )),
        }
    }
    match server.terminate().await {
        Ok(status) if status.success() => {}
        other => violations.push(format!("SIGTERM at the end: {other:?}")),
    }
    assert!(
        violations.is_empty(),
        "[{}] {} violation(s):\n  - {}\n{}",
        sc.name,
        violations.len(),
        violations.join("\n  - "),
        server.log_tail(30)
    );
}
