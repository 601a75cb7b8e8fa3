//! `loadgen failover`: how long a Turnstile cluster stops granting locks when its leader
//! dies.
//!
//! A steady acquire+release load runs against the cluster: every connection finds the
//! leader as the turnstile-cluster target does, and takes a fresh key per pair
//! (`ACQUIRE key TTL ttl WAIT 0`, then RELEASE), so a hold orphaned by a failover never
//! blocks a later pair. Then, `--kills` times:
//!
//! 1. find the leader: the node whose `INFO replication` says `role:leader`;
//! 2. check that the PID its state file records runs that node's command line, and
//!    `kill -9` it;
//! 3. measure from the kill to the first grant through a new leader, and to the moment
//!    every connection has had a grant again (and, asking every 10 ms, until another node
//!    says `role:leader`: the election's share);
//! 4. restart the node with its recorded command line (its PID file is updated, so
//!    `scripts/cluster.sh stop` still stops it) and wait until it has rejoined: a follower
//!    that names the leader and has applied the leader's commit index as read just before;
//! 5. let the load run for `--settle`, then kill again.
//!
//! Errors the connections see (lost connections, `-ERR UNCERTAIN`, a RELEASE answered
//! NOTLEADER, ...) are counted by kind and per kill; NOTLEADER redirects an ACQUIRE
//! follows are counted apart. The nodes loadgen restarts keep running when it exits.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cli::FailoverArgs;
use crate::report::{si, us_unit};
use crate::run::{connect_all, run_id, spawn_live_line, Live};
use crate::stats::{self, Latency};
use crate::target::turnstile_cluster::{probe, ClusterConn, ReplicationInfo, TurnstileCluster};
use crate::target::{AcquireRequest, Acquired, Conn, Mode, Target};

/// One node of the cluster, as its state folder describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: u64,
    /// Its client address.
    pub addr: String,
    dir: PathBuf,
}

impl Node {
    fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("n{}.{ext}", self.id))
    }

    /// The PID its state file records.
    pub fn pid(&self) -> anyhow::Result<u32> {
        let path = self.file("pid");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: not a PID", path.display()))
    }

    /// Its command line, as recorded (NUL-separated).
    pub fn command(&self) -> anyhow::Result<Vec<String>> {
        let path = self.file("cmd");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let argv = split_nul(&bytes);
        anyhow::ensure!(!argv.is_empty(), "{}: empty command line", path.display());
        Ok(argv)
    }
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Reads `DIR/nodes`: one line per node, `ID CLIENT_ADDR [RAFT_ADDR]`.
pub fn read_nodes(dir: &Path) -> anyhow::Result<Vec<Node>> {
    let path = dir.join("nodes");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (start a cluster with scripts/cluster.sh start)",
            path.display()
        )
    })?;
    parse_nodes(&text, dir)
}

fn parse_nodes(text: &str, dir: &Path) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(id), Some(addr)) = (words.next(), words.next()) else {
            bail!("nodes: {line:?} is not `ID CLIENT_ADDR RAFT_ADDR`");
        };
        nodes.push(Node {
            id: id.parse().with_context(|| format!("nodes: {line:?}: ID"))?,
            addr: addr.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    Ok(nodes)
}

/// Checks that `pid` runs `argv` (from its `serve` on: a recorded `taskset` prefix execs
/// the server), so that a stale PID file never gets an unrelated process killed.
fn check_runs(pid: u32, argv: &[String]) -> anyhow::Result<()> {
    let running = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| split_nul(&b))
        .with_context(|| format!("process {pid} is not running"))?;
    let from_serve = |a: &[String]| -> Vec<String> {
        let at = a.iter().position(|w| w == "serve").unwrap_or(0);
        a[at..].to_vec()
    };
    anyhow::ensure!(
        from_serve(&running) == from_serve(argv),
        "process {pid} runs {:?}, not the recorded {:?}: refusing to kill it",
        running.join(" "),
        argv.join(" ")
    );
    Ok(())
}

fn kill9(pid: u32) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let p = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .with_context(|| format!("bad PID {pid}"))?;
        rustix::process::kill_process(p, rustix::process::Signal::KILL)
            .with_context(|| format!("kill -9 {pid}"))?;
    }
    #[cfg(not(target_os = "linux"))]
    {
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -9 {pid} failed");
    }
    Ok(())
}

/// Starts `node` again with its recorded command line, output appended to its log, in its
/// own process group (a Ctrl-C to loadgen does not reach it); records its PID.
fn restart(node: &Node) -> anyhow::Result<Child> {
    let argv = node.command()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.file("log"))
        .with_context(|| format!("opening {}", node.file("log").display()))?;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting node {}: {}", node.id, argv.join(" ")))?;
    std::fs::write(node.file("pid"), format!("{}\n", child.id()))
        .with_context(|| format!("writing {}", node.file("pid").display()))?;
    Ok(child)
}

/// The first of the fields that the node shows, as a number.
fn index_of(info: &ReplicationInfo, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| info.get_u64(n))
}

const COMMIT_FIELDS: &[&str] = &["commit_index", "committed_index", "commit"];
const APPLIED_FIELDS: &[&str] = &["applied_index", "last_applied_index", "last_applied"];

/// Asks every node; returns the leader's index in `nodes` and its INFO. With two nodes
/// claiming to lead (a deposed leader that has not heard yet), the higher term wins.
async fn leader_of(nodes: &[Node]) -> Option<(usize, ReplicationInfo)> {
    let mut best: Option<(usize, ReplicationInfo)> = None;
    for (i, n) in nodes.iter().enumerate() {
        let Ok((_, info)) = probe(&n.addr).await else {
            continue;
        };
        if info.role() != Some("leader") {
            continue;
        }
        let term = info.get_u64("term").unwrap_or(0);
        let better = match &best {
            None => true,
            Some((_, b)) => term > b.get_u64("term").unwrap_or(0),
        };
        if better {
            best = Some((i, info));
        }
    }
    best
}

async fn wait_for_leader(nodes: &[Node], timeout: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((i, _)) = leader_of(nodes).await {
            return Ok(i);
        }
        if Instant::now() >= deadline {
            bail!("no node said role:leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until node `i` follows the leader and has applied what the leader had committed.
async fn wait_rejoined(nodes: &[Node], i: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        if let Some((l, leader)) = leader_of(nodes).await.filter(|(l, _)| *l != i) {
            match probe(&nodes[i].addr).await {
                Ok((_, info)) => {
                    let follows = info.role() == Some("follower")
                        && info.leader_addr() == Some(nodes[l].addr.as_str());
                    let commit = index_of(&leader, COMMIT_FIELDS);
                    let applied = index_of(&info, APPLIED_FIELDS);
                    let caught_up = match (commit, applied) {
                        (Some(c), Some(a)) => a >= c,
                        _ => true,
                    };
                    if follows && caught_up {
                        return Ok(());
                    }
                    last = format!(
                        "role {}, leader {}, applied {:?} of the leader's commit {:?}",
                        info.role().unwrap_or("?"),
                        info.leader_addr().unwrap_or("-"),
                        applied,
                        commit
                    );
                }
                Err(e) => last = format!("{e:#}"),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "node {} did not rejoin within {timeout:?} ({last})",
                nodes[i].id
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the connections report to the controller about the failover under way.
struct Watch {
    /// The kill under way (1, 2, ...); 0 before the first.
    epoch: AtomicU64,
    state: Mutex<WatchState>,
}

struct WatchState {
    epoch: u64,
    kill_at: Instant,
    killed: String,
    /// The first grant through another node after the kill: when, and where.
    first: Option<(Instant, String)>,
    recovered: Vec<bool>,
    recovered_count: usize,
    /// When the last connection had its first grant after the kill.
    all: Option<Instant>,
}

impl Watch {
    fn new(connections: usize) -> Self {
        Watch {
            epoch: AtomicU64::new(0),
            state: Mutex::new(WatchState {
                epoch: 0,
                kill_at: Instant::now(),
                killed: String::new(),
                first: None,
                recovered: vec![false; connections],
                recovered_count: 0,
                all: None,
            }),
        }
    }

    /// Starts watching for kill `epoch` of the node at `killed`; returns the kill time.
    fn arm(&self, epoch: u64, killed: &str) -> Instant {
        let mut s = self.state.lock();
        s.epoch = epoch;
        s.killed = killed.to_string();
        s.first = None;
        s.recovered.iter_mut().for_each(|r| *r = false);
        s.recovered_count = 0;
        s.all = None;
        s.kill_at = Instant::now();
        self.epoch.store(epoch, Ordering::Release);
        s.kill_at
    }

    /// Connection `id`, on `addr` since `since`, was granted a lock at `at`. Returns the
    /// epoch the connection has now recovered from (it stops reporting until the next
    /// kill). Only a connection opened after the kill counts: a grant over one opened
    /// before would mean the killed node was not the one serving.
    fn granted(&self, id: usize, addr: &str, since: Instant, at: Instant, seen: u64) -> u64 {
        let epoch = self.epoch.load(Ordering::Acquire);
        if epoch == seen {
            return seen;
        }
        let mut s = self.state.lock();
        if addr == s.killed || since <= s.kill_at {
            return seen;
        }
        if s.first.is_none() {
            s.first = Some((at, addr.to_string()));
        }
        if !s.recovered[id] {
            s.recovered[id] = true;
            s.recovered_count += 1;
            if s.recovered_count == s.recovered.len() {
                s.all = Some(at);
            }
        }
        s.epoch
    }
}

/// What all connections share.
struct Shared {
    run_id: String,
    ttl: Duration,
    timeout: Duration,
    stop: AtomicBool,
    watch: Watch,
    live: Arc<Live>,
    grants: AtomicU64,
    errors: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, ErrorCount>>,
}

impl Shared {
    fn error(&self, id: usize, kind: &'static str, e: &anyhow::Error) {
        self.live.error(id);
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut m = self.by_kind.lock();
        let entry = m.entry(kind).or_insert_with(|| ErrorCount {
            kind: kind.to_string(),
            count: 0,
            first: format!("{e:#}"),
        });
        entry.count += 1;
    }
}

/// The kind of an error, for the counts.
fn classify(e: &anyhow::Error) -> &'static str {
    let text = format!("{e:#}");
    if text.contains("UNCERTAIN") {
        "uncertain (-ERR UNCERTAIN)"
    } else if text.contains("NOTLEADER") {
        "NOTLEADER (on RELEASE, or past --timeout)"
    } else if text.contains("no leader found") {
        "no leader found"
    } else if e.chain().any(|c| c.is::<std::io::Error>()) || text.contains("closed the connection")
    {
        "connection lost"
    } else {
        "other"
    }
}

struct WorkerOut {
    pair: Histogram<u64>,
    redirects: u64,
}

/// One connection's loop: a fresh key per pair, until told to stop.
async fn worker(
    target: Arc<TurnstileCluster>,
    conn: ClusterConn,
    id: usize,
    sh: Arc<Shared>,
) -> WorkerOut {
    let mut out = WorkerOut {
        pair: stats::histogram(),
        redirects: 0,
    };
    let mut conn = Some(conn);
    let mut seen = 0u64;
    let mut key: Vec<u8> = Vec::with_capacity(48);
    let mut i = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match tokio::time::timeout(sh.timeout, target.connect(id)).await {
                Ok(Ok(c)) => conn.insert(c),
                Ok(Err(e)) => {
                    sh.error(id, classify(&e), &e);
                    continue;
                }
                Err(_) => {
                    let e = anyhow::anyhow!("no leader found within {:?}", sh.timeout);
                    sh.error(id, "timeout", &e);
                    continue;
                }
            },
        };
        key.clear();
        let _ = write!(key, "lg:{}:f:{id}:{i}", sh.run_id);
        i += 1;
        let req = AcquireRequest {
            key: &key,
            mode: Mode::Exclusive,
            ttl: sh.ttl,
            wait: Some(Duration::ZERO),
        };
        let from = Instant::now();
        let result = match tokio::time::timeout(sh.timeout, c.acquire(&req)).await {
            Ok(Ok(Acquired::Granted(grant))) => {
                let addr = c.addr().to_string();
                seen = sh.watch.granted(id, &addr, c.since(), Instant::now(), seen);
                match tokio::time::timeout(sh.timeout, c.release(&key, grant)).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!(
                        "RELEASE: no answer within {:?}",
                        sh.timeout
                    )),
                }
            }
            Ok(Ok(Acquired::TimedOut)) => Err(anyhow::anyhow!(
                "ACQUIRE of a fresh key with WAIT 0 was not granted"
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow::anyhow!(
                "ACQUIRE: no answer within {:?}",
                sh.timeout
            )),
        };
        match result {
            Ok(()) => {
                let done = Instant::now();
                stats::record(&mut out.pair, done - from);
                sh.live.op(id, done - from);
                sh.grants.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let kind = if format!("{e}").contains("no answer within") {
                    "timeout"
                } else if format!("{e}").contains("not granted") {
                    "fresh key not granted"
                } else {
                    classify(&e)
                };
                sh.error(id, kind, &e);
                if let Some(c) = conn.take() {
                    out.redirects += c.redirects();
                }
            }
        }
    }
    if let Some(c) = conn {
        out.redirects += c.redirects();
    }
    out
}

/// One kill of the leader.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KillResult {
    pub kill: usize,
    /// The node killed and its PID.
    pub node: u64,
    pub pid: u32,
    /// The node the first grant after the kill came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_leader: Option<u64>,
    /// From the kill until another node said `role:leader` (asked every 10 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elected_ms: Option<f64>,
    /// From the kill to the first grant through the new leader; None: not within --timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<f64>,
    /// From the kill until every connection had had a grant again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_connections_ms: Option<f64>,
    /// From the restart of the killed node until it had rejoined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejoin_ms: Option<f64>,
    /// Errors the connections saw from this kill to the next.
    pub errors: u64,
}

/// Errors of one kind: how many, and the first one's text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorCount {
    pub kind: String,
    pub count: u64,
    pub first: String,
}

/// The whole failover run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FailoverResult {
    pub loadgen: String,
    pub nodes: Vec<String>,
    pub connections: usize,
    pub kills: Vec<KillResult>,
    /// Kill until another node said it leads, over the kills (microseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elected_us: Option<Latency>,
    /// Kill to the first grant through the new leader, over the kills (microseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_us: Option<Latency>,
    /// Kill until every connection had had a grant again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_connections_us: Option<Latency>,
    /// Restart until rejoined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejoin_us: Option<Latency>,
    /// Failovers with no grant through a new leader within --timeout.
    pub incomplete: usize,
    pub pairs: u64,
    pub elapsed_s: f64,
    pub pairs_per_sec: f64,
    /// Latency of every acquire+release pair, failovers included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair_us: Option<Latency>,
    pub errors: u64,
    pub errors_by_kind: Vec<ErrorCount>,
    /// NOTLEADER answers to ACQUIRE that were followed (not errors).
    pub redirects: u64,
    /// Set when the run stopped early; the kills before it are reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the kills; see the module documentation.
pub async fn failover(a: &FailoverArgs) -> anyhow::Result<FailoverResult> {
    anyhow::ensure!(a.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(a.kills >= 1, "--kills must be at least 1");
    let nodes = read_nodes(&a.cluster_dir)?;
    anyhow::ensure!(
        nodes.len() >= 3,
        "{} has {} node(s): a failover needs at least 3 (a majority must survive a kill)",
        a.cluster_dir.display(),
        nodes.len()
    );
    for n in &nodes {
        check_runs(n.pid()?, &n.command()?).with_context(|| format!("node {}", n.id))?;
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let target = Arc::new(TurnstileCluster::new(&addrs.join(","), a.timeout));
    let conns = connect_all(&target, a.connections).await?;

    let sh = Arc::new(Shared {
        run_id: run_id(),
        ttl: a.ttl,
        timeout: a.timeout,
        stop: AtomicBool::new(false),
        watch: Watch::new(a.connections),
        live: Live::new(a.connections),
        grants: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        by_kind: Mutex::new(BTreeMap::new()),
    });
    let start = Instant::now();
    let live_line = (!a.quiet).then(|| {
        spawn_live_line(
            Arc::clone(&sh.live),
            "turnstile-cluster failover".into(),
            start,
            None,
        )
    });
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, c)| tokio::spawn(worker(Arc::clone(&target), c, id, Arc::clone(&sh))))
        .collect();

    let mut kills = Vec::new();
    let aborted = kill_loop(a, &nodes, &sh, &mut kills)
        .await
        .err()
        .map(|e| format!("{e:#}"));
    if let Some(why) = &aborted {
        eprintln!("loadgen: failover stopped early: {why}");
    }

    sh.stop.store(true, Ordering::Relaxed);
    let mut pair = stats::histogram();
    let mut redirects = 0;
    for w in workers {
        let out = w.await.context("worker task")?;
        pair.add(&out.pair).expect("same bounds");
        redirects += out.redirects;
    }
    if let Some(l) = live_line {
        l.abort();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let hist_of = |f: &dyn Fn(&KillResult) -> Option<f64>| {
        let mut h = stats::histogram();
        for k in &kills {
            if let Some(x) = f(k) {
                stats::record(&mut h, Duration::from_secs_f64(x / 1e3));
            }
        }
        Latency::from_histogram(&h)
    };
    let pairs = sh.grants.load(Ordering::Relaxed);
    let errors_by_kind: Vec<ErrorCount> = sh.by_kind.lock().values().cloned().collect();
    Ok(FailoverResult {
        loadgen: env!("CARGO_PKG_VERSION").to_string(),
        nodes: addrs,
        connections: a.connections,
        elected_us: hist_of(&|k| k.elected_ms),
        failover_us: hist_of(&|k| k.failover_ms),
        all_connections_us: hist_of(&|k| k.all_connections_ms),
        rejoin_us: hist_of(&|k| k.rejoin_ms),
        incomplete: kills.iter().filter(|k| k.failover_ms.is_none()).count(),
        kills,
        pairs,
        elapsed_s: elapsed,
        pairs_per_sec: pairs as f64 / elapsed.max(1e-9),
        pair_us: Latency::from_histogram(&pair),
        errors: sh.errors.load(Ordering::Relaxed),
        errors_by_kind,
        redirects,
        aborted,
    })
}

async fn kill_loop(
    a: &FailoverArgs,
    nodes: &[Node],
    sh: &Shared,
    kills: &mut Vec<KillResult>,
) -> anyhow::Result<()> {
    // The nodes this run restarted: reaped when killed again, left running at the end.
    let mut children: HashMap<u64, Child> = HashMap::new();
    tokio::time::sleep(a.settle).await;
    anyhow::ensure!(
        sh.grants.load(Ordering::Relaxed) > 0,
        "no lock was granted in the first {:?}: is the cluster serving?",
        a.settle
    );
    for k in 1..=a.kills {
        let l = wait_for_leader(nodes, a.timeout).await?;
        let node = &nodes[l];
        let pid = node.pid()?;
        check_runs(pid, &node.command()?).with_context(|| format!("node {}", node.id))?;
        let errors_before = sh.errors.load(Ordering::Relaxed);

        let kill_at = sh.watch.arm(k as u64, &node.addr);
        kill9(pid)?;
        if let Some(mut child) = children.remove(&node.id) {
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .context("reaping")?
                .context("reaping a killed node")?;
        }

        // A node that says it leads (asked every 10 ms), the first grant through it, then
        // every connection's.
        let others: Vec<Node> = nodes.iter().filter(|n| n.id != node.id).cloned().collect();
        let deadline = kill_at + a.timeout;
        let (mut first, mut all, mut elected) = (None, None, None);
        let mut next_ask = Instant::now();
        while Instant::now() < deadline {
            {
                let s = sh.watch.state.lock();
                first.clone_from(&s.first);
                all = s.all;
            }
            if elected.is_none() && Instant::now() >= next_ask {
                next_ask = Instant::now() + Duration::from_millis(10);
                if leader_of(&others).await.is_some() {
                    elected = Some(Instant::now());
                }
            }
            if all.is_some() && elected.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }

        let restarted = Instant::now();
        children.insert(node.id, restart(node)?);
        let rejoin = wait_rejoined(nodes, l, a.timeout).await;
        let rejoin_ms = match &rejoin {
            Ok(()) => Some(ms(restarted.elapsed())),
            Err(e) => {
                eprintln!("loadgen: kill {k}: {e:#}");
                None
            }
        };
        tokio::time::sleep(a.settle).await;

        let result = KillResult {
            kill: k,
            node: node.id,
            pid,
            new_leader: first
                .as_ref()
                .and_then(|(_, addr)| nodes.iter().find(|n| &n.addr == addr))
                .map(|n| n.id),
            elected_ms: elected.map(|at| ms(at - kill_at)),
            failover_ms: first.as_ref().map(|(at, _)| ms(*at - kill_at)),
            all_connections_ms: all.map(|at| ms(at - kill_at)),
            rejoin_ms,
            errors: sh.errors.load(Ordering::Relaxed) - errors_before,
        };
        if !a.quiet {
            eprintln!("{}", kill_line(&result, a.connections));
        }
        kills.push(result);
        rejoin?;
    }
    Ok(())
}

fn kill_line(k: &KillResult, connections: usize) -> String {
    let mut s = format!("   kill {}: node {} (pid {}) -9", k.kill, k.node, k.pid);
    if let Some(e) = k.elected_ms {
        let _ = write!(s, "; a leader after {e:.0} ms");
    }
    match (k.new_leader, k.failover_ms) {
        (Some(n), Some(f)) => {
            let _ = write!(s, "; node {n} granted after {f:.0} ms");
        }
        _ => s.push_str("; no grant through a new leader within --timeout"),
    }
    match k.all_connections_ms {
        Some(x) => {
            let _ = write!(s, ", all {connections} connections after {x:.0} ms");
        }
        None => s.push_str(", not every connection recovered"),
    }
    match k.rejoin_ms {
        Some(x) => {
            let _ = write!(s, "; node {} rejoined {x:.0} ms after its restart", k.node);
        }
        None => {
            let _ = write!(s, "; node {} did not rejoin", k.node);
        }
    }
    let _ = write!(s, "; errors {}", k.errors);
    s
}

/// The report for people.
pub fn text(r: &FailoverResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== failover: turnstile-cluster @ {}: {} kill(s) of the leader under {} connections",
        r.nodes.join(","),
        r.kills.len(),
        r.connections
    );
    for k in &r.kills {
        let _ = writeln!(s, "{}", kill_line(k, r.connections));
    }
    let _ = writeln!(
        s,
        "   {:<38}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "time (ms)", "p50", "p99", "max", "min", "mean"
    );
    for (name, l) in [
        ("kill -9 to a node saying role:leader", &r.elected_us),
        ("kill -9 to first grant (new leader)", &r.failover_us),
        ("kill -9 to every connection granted", &r.all_connections_us),
        ("restart to rejoined", &r.rejoin_us),
    ] {
        if let Some(l) = l {
            let _ = writeln!(
                s,
                "   {:<38}{:>9.0}{:>9.0}{:>9.0}{:>9.0}{:>9.0}",
                name,
                l.p50 as f64 / 1e3,
                l.p99 as f64 / 1e3,
                l.max as f64 / 1e3,
                l.min as f64 / 1e3,
                l.mean / 1e3
            );
        }
    }
    if r.incomplete > 0 {
        let _ = writeln!(
            s,
            "   {} failover(s) gave no grant within --timeout",
            r.incomplete
        );
    }
    if let Some(l) = &r.pair_us {
        let _ = writeln!(
            s,
            "   {} pairs in {:.1} s ({}/s, failovers included); pair p50 {}, p99 {}, max {}",
            r.pairs,
            r.elapsed_s,
            si(r.pairs_per_sec),
            us_unit(l.p50),
            us_unit(l.p99),
            us_unit(l.max)
        );
    }
    let during: u64 = r.kills.iter().map(|k| k.errors).sum();
    let _ = writeln!(
        s,
        "   errors {} ({} from a kill to the next, {} otherwise); NOTLEADER redirects followed {}",
        r.errors,
        during,
        r.errors - during.min(r.errors),
        r.redirects
    );
    for e in &r.errors_by_kind {
        let _ = writeln!(s, "     {:>6}  {}  (first: {})", e.count, e.kind, e.first);
    }
    if let Some(why) = &r.aborted {
        let _ = writeln!(s, "   stopped early: {why}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_state_folder_format() {
        let dir = Path::new("/tmp/c");
        let nodes = parse_nodes(
            "1 127.0.0.1:7401 127.0.0.1:17401\n2 127.0.0.1:7402 127.0.0.1:17402\n\n",
            dir,
        )
        .unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].id, 2);
        assert_eq!(nodes[1].addr, "127.0.0.1:7402");
        assert_eq!(nodes[1].file("pid"), PathBuf::from("/tmp/c/n2.pid"));
        assert!(parse_nodes("x 127.0.0.1:1\n", dir).is_err());
        assert!(parse_nodes("1\n", dir).is_err());
        assert_eq!(
            split_nul(b"taskset\0-c\x000\0turnstile\0"),
            ["taskset", "-c", "0", "turnstile"]
        );
    }

    #[test]
    fn refuses_to_kill_a_process_that_is_not_the_node() {
        // This test process is not `turnstile serve ...`.
        let me = std::process::id();
        let argv: Vec<String> = ["turnstile", "serve", "--node-id", "1"]
            .map(String::from)
            .to_vec();
        assert!(check_runs(me, &argv).is_err());
        let own = split_nul(&std::fs::read(format!("/proc/{me}/cmdline")).unwrap());
        assert!(check_runs(me, &own).is_ok());
    }

    #[test]
    fn the_watch_times_the_first_grant_through_another_node() {
        let w = Watch::new(2);
        let before = Instant::now();
        // Before any kill, grants are not reported.
        assert_eq!(w.granted(0, "b", before, Instant::now(), 0), 0);
        let at = w.arm(1, "a");
        let ms = Duration::from_millis;
        // Through the killed node (an answer already on its way): ignored.
        assert_eq!(w.granted(0, "a", before, at + ms(1), 0), 0);
        // Over a connection to another node opened before the kill: it was not the leader.
        assert_eq!(w.granted(0, "b", before, at + ms(2), 0), 0);
        let t1 = at + ms(500);
        assert_eq!(w.granted(1, "b", at + ms(400), t1, 0), 1);
        assert_eq!(w.granted(1, "b", at + ms(400), t1 + ms(1), 1), 1);
        assert!(w.state.lock().all.is_none());
        let t2 = at + ms(700);
        assert_eq!(w.granted(0, "b", at + ms(650), t2, 0), 1);
        let s = w.state.lock();
        assert_eq!(s.first, Some((t1, "b".to_string())));
        assert_eq!(s.all, Some(t2));
    }

    #[test]
    fn errors_by_kind() {
        let io: anyhow::Error = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert_eq!(classify(&io), "connection lost");
        assert_eq!(
            classify(&anyhow::anyhow!("ACQUIRE answered -ERR UNCERTAIN x")),
            "uncertain (-ERR UNCERTAIN)"
        );
        assert_eq!(
            classify(&anyhow::anyhow!("RELEASE answered -NOTLEADER 1:2")),
            "NOTLEADER (on RELEASE, or past --timeout)"
        );
        assert_eq!(
            classify(&anyhow::anyhow!("the server closed the connection")),
            "connection lost"
        );
    }
}
