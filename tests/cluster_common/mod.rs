//! Real `turnstile serve` processes as a cluster on 127.0.0.1, for the failover tests.
//!
//! [`Cluster::start`] runs N nodes of the binary Cargo built (`CARGO_BIN_EXE_turnstile`),
//! each with its own free client port, raft port and data directory under the system
//! temp dir. Every node's raft listener sits behind a [`proxy::Proxies`] listener of the
//! test process, and `--cluster` names those proxy addresses, so the membership every
//! node uses to reach its peers goes through the proxies and the test can cut, black-hole
//! or delay any directed link (see `proxy.rs` for why one proxy per node, filtered by the
//! handshake's source id, is enough). Client traffic goes straight to the nodes.
//!
//! The harness can kill a node with SIGKILL and restart it on the same data directory and
//! client port, pause and resume it (SIGSTOP/SIGCONT, by the PID of the `Child` it
//! started: nothing else is ever signalled), add a pristine node, find the leader (`INFO
//! replication` on every node, then a write that the leader must serve) and wait until
//! every node has applied what the leader committed. Every wait has a deadline. Dropping
//! the cluster kills and reaps every node; the work directory (data dirs and one log file
//! per node) is removed, or kept and its path printed when the test is panicking.
//!
//! - [`resp`]: a RESP client that reports lost connections instead of panicking.
//! - [`proxy`]: the raft-link proxies.
//! - [`history`]: the record of acknowledged grants and the checks on it.
//! - [`workload`]: client tasks that lock, renew and release under failures.

#![allow(dead_code)]

pub mod history;
pub mod proxy;
pub mod resp;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy::Proxies;
use resp::{Conn, Reply};

/// The server binary Cargo built for the test.
pub const BIN: &str = env!("CARGO_BIN_EXE_turnstile");
/// Longest a node may take to answer after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one administrative request (INFO, INSPECT, a probe).
pub const ADMIN_TIMEOUT: Duration = Duration::from_millis(1500);

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How to run the nodes.
#[derive(Clone, Debug)]
pub struct Options {
    /// A short name for the work directory.
    pub name: String,
    /// Voters of the initial cluster (ids 1..=nodes).
    pub nodes: u64,
    /// `--heartbeat-ms`.
    pub heartbeat_ms: u64,
    /// `--election-timeout-ms` (the upper bound is twice it).
    pub election_ms: u64,
    /// `--session-timeout-ms`: how long a session whose connection was lost lives on.
    pub session_timeout_ms: u64,
    /// More `serve` arguments.
    pub extra: Vec<String>,
}

impl Options {
    /// Three nodes with the given name; timings from `TURNSTILE_CLUSTER_HEARTBEAT_MS`
    /// (default 100) and `TURNSTILE_CLUSTER_ELECTION_MS` (default 400: twice the
    /// server's, because CI runs debug builds of three nodes and the tests on two cores;
    /// `scripts/cluster-long.sh` runs with the server's defaults).
    pub fn new(name: &str) -> Options {
        Options {
            name: name.to_string(),
            nodes: 3,
            heartbeat_ms: env_u64("TURNSTILE_CLUSTER_HEARTBEAT_MS", 100),
            election_ms: env_u64("TURNSTILE_CLUSTER_ELECTION_MS", 400),
            session_timeout_ms: 15_000,
            extra: Vec::new(),
        }
    }
}

impl Options {
    /// The shortest lease the nodes accept: the server's default `--min-ttl-ms` in cluster
    /// mode, four election timeouts.
    pub fn min_ttl_ms(&self) -> u64 {
        4 * self.election_ms
    }
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A free loopback port: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One node of the cluster.
pub struct Node {
    /// Its id.
    pub id: u64,
    /// Its client port (fixed for its life: the membership names it in redirects).
    pub client_port: u16,
    /// Its real raft listener; the proxy reads it for every new connection.
    raft: Arc<Mutex<SocketAddr>>,
    /// Its proxy: the raft address the membership names.
    pub proxy: SocketAddr,
    /// Whether it is started with `--cluster` (a voter of the initial cluster).
    initial: bool,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl Node {
    /// `127.0.0.1:<client port>`.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Whether its process runs (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is stopped with SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// What `INFO replication` says.
#[derive(Clone, Debug, Default)]
pub struct Replication {
    /// Every `field:value` line.
    pub fields: BTreeMap<String, String>,
}

impl Replication {
    /// Parses the INFO text.
    pub fn parse(text: &str) -> Replication {
        let fields = text
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Replication { fields }
    }

    /// A field as text ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// A numeric field (None when absent or empty).
    pub fn num(&self, name: &str) -> Option<u64> {
        self.get(name).parse().ok()
    }

    /// `role:`.
    pub fn role(&self) -> &str {
        self.get("role")
    }

    /// `term:`.
    pub fn term(&self) -> u64 {
        self.num("term").unwrap_or(0)
    }

    /// `voters:` as ids.
    pub fn voters(&self) -> Vec<u64> {
        self.get("voters")
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    }
}

/// A running test cluster. Dropping it kills every node.
pub struct Cluster {
    /// How the nodes run.
    pub opts: Options,
    /// The work directory.
    pub root: PathBuf,
    /// The nodes by id.
    pub nodes: BTreeMap<u64, Node>,
    /// The raft-link proxies.
    pub proxies: Proxies,
    /// The `--cluster` value of the initial voters.
    members: String,
    probes: u64,
    /// Every port handed to a node (client and raft), so none is handed out twice.
    ports: BTreeSet<u16>,
}

impl Cluster {
    /// Starts `opts.nodes` nodes and waits until each answers (not until a leader is
    /// elected: see [`Cluster::wait_leader`]).
    pub async fn start(opts: Options) -> Result<Cluster, String> {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!(
            "turnstile-cluster-{}-{n}-{}",
            std::process::id(),
            opts.name
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let mut cluster = Cluster {
            opts,
            root,
            nodes: BTreeMap::new(),
            proxies: Proxies::new(),
            members: String::new(),
            probes: 0,
            ports: BTreeSet::new(),
        };
        for id in 1..=cluster.opts.nodes {
            cluster.add_proxied(id, true).await?;
        }
        cluster.members = cluster
            .nodes
            .values()
            .map(|n| format!("{}={}/{}", n.id, n.proxy, n.client_addr()))
            .collect::<Vec<_>>()
            .join(",");
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for &id in &ids {
            cluster.spawn(id)?;
        }
        for &id in &ids {
            cluster.wait_up(id).await?;
        }
        Ok(cluster)
    }

    /// A free port this cluster does not use yet (the OS may hand out a port it just
    /// handed out, since nothing holds it until the node binds it).
    fn new_port(&mut self) -> u16 {
        loop {
            let p = free_port();
            if self.ports.insert(p) {
                return p;
            }
        }
    }

    async fn add_proxied(&mut self, id: u64, initial: bool) -> Result<(), String> {
        let raft: SocketAddr = format!("127.0.0.1:{}", self.new_port())
            .parse()
            .expect("a socket address");
        let client_port = self.new_port();
        let raft = Arc::new(Mutex::new(raft));
        let proxy = self
            .proxies
            .add(id, raft.clone())
            .await
            .map_err(|e| format!("starting the proxy of node {id}: {e}"))?;
        self.nodes.insert(
            id,
            Node {
                id,
                client_port,
                raft,
                proxy,
                initial,
                child: None,
                paused: false,
                starts: 0,
            },
        );
        Ok(())
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    /// The log file of node `id` (every start appends to it).
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    /// The node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// Every node's client address.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.values().map(Node::client_addr).collect()
    }

    /// The id of the node whose client address is `addr`.
    pub fn id_of(&self, addr: &str) -> Option<u64> {
        self.nodes
            .values()
            .find(|n| n.client_addr() == addr)
            .map(|n| n.id)
    }

    /// Nodes whose process runs and is not paused.
    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running() && !n.paused)
            .map(|n| n.id)
            .collect()
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    fn spawn(&mut self, id: u64) -> Result<(), String> {
        let log = self.log_path(id);
        let data = self.data_dir(id);
        let members = self.members.clone();
        let opts = self.opts.clone();
        let node = self.nodes.get_mut(&id).ok_or(format!("no node {id}"))?;
        node.starts += 1;
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        let _ = writeln!(
            out,
            "===== test harness: start {} of node {id} =====",
            node.starts
        );
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let raft = *node.raft.lock().unwrap_or_else(|e| e.into_inner());
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &node.client_port.to_string(),
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(["--node-id", &id.to_string()])
            .args(["--raft-addr", &raft.to_string()])
            .args(["--advertise-addr", &node.client_addr()])
            .args(["--heartbeat-ms", &opts.heartbeat_ms.to_string()])
            .args(["--election-timeout-ms", &opts.election_ms.to_string()])
            .args(["--session-timeout-ms", &opts.session_timeout_ms.to_string()])
            .args(["--follower-reads", "stale"])
            .args(["--log-level", "info,openraft=warn"]);
        if node.initial {
            cmd.args(["--cluster", &members]);
        }
        cmd.args(&opts.extra);
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {BIN}: {e}"))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Waits (bounded) until node `id` answers on its client port as node `id`; Err if it
    /// exits first.
    async fn wait_up(&mut self, id: u64) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.node(id).client_addr();
        let mut last = String::from("nothing tried yet");
        loop {
            let node = self.nodes.get_mut(&id).ok_or(format!("no node {id}"))?;
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    return Err(format!(
                        "node {id} exited with {status} while starting ({last})\n{}",
                        self.log_tail(id, 30)
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {id} did not answer as node {id} within {START_TIMEOUT:?} ({last})\n{}",
                    self.log_tail(id, 30)
                ));
            }
            // INFO, not PING: the node on that port must be this one.
            let info = ["INFO", "replication"];
            match resp::call_once(&addr, &info, Duration::from_millis(500)).await {
                Ok(r) => {
                    let repl = Replication::parse(&r.text().unwrap_or_default());
                    if repl.num("node_id") == Some(id) {
                        return Ok(());
                    }
                    last = format!("{addr} answered INFO with {r:?}");
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill9(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.paused = false;
        }
    }

    /// Starts node `id` again on its data directory and client port (retrying while the
    /// port is still taken), and waits until it answers.
    pub async fn restart(&mut self, id: u64) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..20 {
            self.spawn(id)?;
            match self.wait_up(id).await {
                Ok(()) => return Ok(()),
                Err(e) if e.contains("in use") || e.contains("binding") => {
                    last = e;
                    // The raft port may be taken by now: the proxy follows a new one.
                    let fresh: SocketAddr = format!("127.0.0.1:{}", self.new_port())
                        .parse()
                        .expect("a socket address");
                    *self.nodes[&id]
                        .raft
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = fresh;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(format!("node {id} could not bind its ports again: {last}"))
    }

    /// Starts a pristine node `id` (no `--cluster`: it waits to be added), behind its own
    /// proxy, and waits until it answers.
    pub async fn add_node(&mut self, id: u64) -> Result<(), String> {
        self.add_proxied(id, false).await?;
        self.spawn(id)?;
        self.wait_up(id).await
    }

    fn signal(&mut self, id: u64, sig: &str) -> Result<(), String> {
        let pid = self
            .node(id)
            .pid()
            .ok_or(format!("node {id} is not running"))?;
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map_err(|e| format!("kill {sig} {pid}: {e}"))?;
        if !status.success() {
            return Err(format!("kill {sig} {pid} failed: {status}"));
        }
        Ok(())
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), String> {
        self.signal(id, "-STOP")?;
        self.nodes.get_mut(&id).expect("signalled above").paused = true;
        Ok(())
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), String> {
        self.signal(id, "-CONT")?;
        self.nodes.get_mut(&id).expect("signalled above").paused = false;
        Ok(())
    }

    /// `INFO replication` of node `id`.
    pub async fn replication(&self, id: u64) -> Result<Replication, String> {
        let addr = self.node(id).client_addr();
        match resp::call_once(&addr, &["INFO", "replication"], ADMIN_TIMEOUT).await? {
            r @ (Reply::Bulk(_) | Reply::Simple(_)) => {
                Ok(Replication::parse(&r.text().unwrap_or_default()))
            }
            other => Err(format!("INFO replication on node {id} answered {other:?}")),
        }
    }

    /// Waits (bounded by `limit`) for a leader among the live nodes not in `exclude`
    /// that serves a write (a try-lock of a probe key, then its release). Returns its id.
    /// Among nodes calling themselves leader the one with the highest term is tried.
    pub async fn wait_leader(&mut self, exclude: &[u64], limit: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no node answered");
        loop {
            let mut best: Option<(u64, u64)> = None;
            for id in self.live_ids() {
                if exclude.contains(&id) {
                    continue;
                }
                match self.replication(id).await {
                    Ok(r) if r.role() == "leader" => {
                        if best.is_none_or(|(_, t)| r.term() > t) {
                            best = Some((id, r.term()));
                        }
                    }
                    Ok(r) => last = format!("node {id} is {} (term {})", r.role(), r.term()),
                    Err(e) => last = e,
                }
            }
            if let Some((id, term)) = best {
                match self.probe_write(id).await {
                    Ok(()) => return Ok(id),
                    Err(e) => last = format!("node {id} (term {term}) did not serve: {e}"),
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no leader served within {limit:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A try-lock of a fresh probe key on node `id`, released at once.
    pub async fn probe_write(&mut self, id: u64) -> Result<(), String> {
        self.probes += 1;
        let key = format!("probe/{}", self.probes);
        let ttl = self.opts.min_ttl_ms().max(2000).to_string();
        let mut conn = Conn::connect(&self.node(id).client_addr(), ADMIN_TIMEOUT).await?;
        let r = conn
            .call(&["ACQUIRE", &key, "TTL", &ttl, "WAIT", "0"], ADMIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if !matches!(r, Reply::Int(_)) {
            return Err(format!("ACQUIRE {key} answered {r:?}"));
        }
        let _ = conn.call(&["RELEASE", &key], ADMIN_TIMEOUT).await;
        Ok(())
    }

    /// Sends `words` to the leader, following `NOTLEADER` redirects, until `limit`.
    /// Returns the reply and the id of the node that gave it.
    pub async fn call_leader(
        &mut self,
        words: &[&str],
        limit: Duration,
    ) -> Result<(Reply, u64), String> {
        let deadline = Instant::now() + limit;
        let mut target = self.wait_leader(&[], limit).await?;
        let mut last = String::new();
        while Instant::now() < deadline {
            let addr = self.node(target).client_addr();
            match resp::call_once(&addr, words, limit.min(Duration::from_secs(10))).await {
                Ok(r) => match r.not_leader() {
                    Some(Some(a)) => {
                        last = format!("redirected to {a}");
                        target = self.id_of(&a).ok_or(format!("redirect to unknown {a}"))?;
                    }
                    Some(None) => {
                        last = "NOTLEADER".into();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        target = self.wait_leader(&[], limit).await?;
                    }
                    None => return Ok((r, target)),
                },
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    target = self.wait_leader(&[], limit).await?;
                }
            }
        }
        Err(format!(
            "{words:?} found no leader within {limit:?}: {last}"
        ))
    }

    /// Waits (bounded) until each node in `ids` has applied everything the leader `leader`
    /// had committed when this was called.
    pub async fn wait_applied(
        &self,
        leader: u64,
        ids: &[u64],
        limit: Duration,
    ) -> Result<u64, String> {
        let target = self
            .replication(leader)
            .await?
            .num("commit_index")
            .ok_or(format!("node {leader} reports no commit index"))?;
        let deadline = Instant::now() + limit;
        for &id in ids {
            loop {
                let applied = self
                    .replication(id)
                    .await
                    .ok()
                    .and_then(|r| r.num("applied_index"));
                if applied >= Some(target) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "node {id} applied {applied:?}, not yet index {target} (leader {leader}), after {limit:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(target)
    }

    /// The last `n` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, n: usize) -> String {
        log_tail(&self.log_path(id), n)
    }

    /// The last `n` lines of every node's log.
    pub fn log_tails(&self, n: usize) -> String {
        self.nodes
            .keys()
            .map(|&id| self.log_tail(id, n))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() || std::env::var_os("TURNSTILE_CLUSTER_KEEP").is_some() {
            eprintln!(
                "cluster test: data dirs and node logs kept in {}",
                self.root.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// The last `n` lines of the file at `path`.
pub fn log_tail(path: &Path, n: usize) -> String {
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
