//! Real cluster nodes for the client's failover tests: separate processes, so that a
//! test can kill the leader with SIGKILL (or stop it with SIGSTOP) by the PID of a
//! process it started itself.
//!
//! Cargo only tells the integration tests of the package that owns a binary where that
//! binary is (`CARGO_BIN_EXE_turnstile` exists for the root package's tests, not for
//! this crate's), and a binary found lying in a target directory may be stale. So a node
//! is this test binary itself, run again with [`NODE_TEST`] as its only test and the
//! node's settings in the environment: that test ([`node_main_if_child`]) runs
//! `turnstile::server::run`, the server code this test was built with, exactly as
//! `turnstile serve --node-id ...` does. In a normal run the same test returns at once.
//!
//! Each node gets free loopback ports (client and raft), a data directory and a log file
//! (the node's stdout and stderr) under the system temp dir. A node exits when its stdin
//! closes, so no node outlives the test process, even one that is itself killed. Every
//! wait is bounded. Dropping the [`Cluster`] kills and reaps every node it started, and
//! removes the work directory (kept, with its path printed, when the test panicked).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use turnstile::Config;

/// The name of the test function that runs a node in a child process. Every test file
/// that uses [`Cluster`] must define it as `#[test] fn cluster_node_process() {
/// common::cluster::node_main_if_child() }`.
pub const NODE_TEST: &str = "cluster_node_process";

/// Set in a node's environment: the node's settings, `;`-separated.
const NODE_ENV: &str = "TURNSTILE_CLIENT_TEST_NODE";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A free loopback port: bind port 0, read it, let it go.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports (all bound at once, then let go: the kernel could
/// otherwise hand the same port out twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<StdListener> = (0..n)
        .map(|_| StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// In a node process: runs the node until its stdin closes, then exits the process.
/// Anywhere else: returns at once.
pub fn node_main_if_child() {
    let Ok(spec) = std::env::var(NODE_ENV) else {
        return;
    };
    let f: Vec<&str> = spec.split(';').collect();
    let [id, port, raft, members, dir, heartbeat, election, session] = f[..] else {
        panic!("bad {NODE_ENV}: {spec}");
    };
    let num = |s: &str| s.parse::<u64>().expect("a number");
    let config = Config {
        bind: "127.0.0.1".into(),
        port: num(port) as u16,
        data_dir: PathBuf::from(dir),
        in_memory: false,
        node_id: Some(num(id)),
        raft_addr: Some(raft.to_string()),
        advertise_addr: Some(format!("127.0.0.1:{port}")),
        cluster: Some(turnstile::config::parse_members(members).expect("members")),
        heartbeat_ms: num(heartbeat),
        election_timeout_ms: num(election),
        session_timeout_ms: num(session),
        threads: 2,
        ..Config::default()
    };
    config.validate().expect("a valid config");
    // The test process holds our stdin: when it goes, so do we.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        eprintln!("node {id} serving on 127.0.0.1:{port}");
        turnstile::server::run(listener, config, std::future::pending::<()>()).await
    });
    eprintln!("node {id} stopped: {result:?}");
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// One node.
pub struct Node {
    pub id: u64,
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    /// `127.0.0.1:<client port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running cluster of nodes 1..=n.
pub struct Cluster {
    pub root: PathBuf,
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` voters (heartbeat 100 ms, election timeout 400..800 ms, session timeout
    /// `session_timeout_ms`) and waits until each answers PING. A port taken by someone
    /// else between choosing it and binding it makes a node exit: then the whole cluster
    /// starts again on other ports (three tries).
    pub fn start(name: &str, n: u64, session_timeout_ms: u64) -> Cluster {
        let mut tries = 0;
        loop {
            tries += 1;
            match Cluster::try_start(name, n, session_timeout_ms) {
                Ok(cluster) => return cluster,
                Err(e) if tries < 3 && e.contains("in use") => {
                    eprintln!("cluster start: a port was taken, trying others: {e}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn try_start(name: &str, n: u64, session_timeout_ms: u64) -> Result<Cluster, String> {
        let root = std::env::temp_dir().join(format!(
            "turnstile-client-cluster-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("work dir");
        let free = free_ports(2 * n as usize);
        let ports: Vec<(u64, u16, u16)> = (1..=n)
            .map(|id| {
                let i = 2 * (id - 1) as usize;
                (id, free[i], free[i + 1])
            })
            .collect();
        let members = ports
            .iter()
            .map(|(id, port, raft)| format!("{id}=127.0.0.1:{raft}/127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let exe = std::env::current_exe().expect("the test binary");
        let mut cluster = Cluster {
            root,
            nodes: Vec::new(),
        };
        for &(id, port, raft) in &ports {
            let log = std::fs::File::create(cluster.log_path(id)).expect("log file");
            let spec = format!(
                "{id};{port};127.0.0.1:{raft};{members};{};100;400;{session_timeout_ms}",
                cluster.root.join(format!("node-{id}")).display()
            );
            let child = Command::new(&exe)
                .args([NODE_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(NODE_ENV, spec)
                .stdin(Stdio::piped())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start a node");
            cluster.nodes.push(Node {
                id,
                port,
                child: Some(child),
            });
        }
        for id in 1..=n {
            cluster.wait_up(id)?;
        }
        Ok(cluster)
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Every node's client address, in id order.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// The id of the node at `addr`.
    pub fn id_of(&self, addr: &str) -> Option<u64> {
        self.nodes.iter().find(|n| n.addr() == addr).map(|n| n.id)
    }

    fn wait_up(&mut self, id: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = self.node(id).addr();
        loop {
            if let Some(child) = self.nodes[(id - 1) as usize].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.nodes[(id - 1) as usize].child = None;
                    return Err(format!("node {id} exited with {status}:\n{}", self.log(id)));
                }
            }
            if let Ok(reply) = text_command(&addr, "PING") {
                if reply.contains("PONG") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("node {id} does not answer PING:\n{}", self.log(id)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What node `id` logged.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// `INFO replication` of node `id` as `field -> value`, if it answers.
    pub fn replication(&self, id: u64) -> Option<Vec<(String, String)>> {
        let text = text_command(&self.node(id).addr(), "INFO replication").ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.trim().split_once(':'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The running node that says it leads (and has taken over), among `among`.
    pub fn leader_among(&self, among: &[u64]) -> Option<u64> {
        among.iter().copied().find(|&id| {
            self.nodes[(id - 1) as usize].child.is_some()
                && self
                    .replication(id)
                    .is_some_and(|r| r.iter().any(|(k, v)| k == "role" && v == "leader"))
        })
    }

    /// Waits (at most 15 s) until one of `among` leads.
    pub fn wait_leader_among(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(id) = self.leader_among(among) {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until some node leads.
    pub fn wait_leader(&self) -> u64 {
        let all: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        self.wait_leader_among(&all)
    }

    /// SIGKILL node `id` (a process this harness started) and reap it.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[(id - 1) as usize].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (or SIGCONT) node `id`, by the PID of the process this harness started.
    pub fn signal(&self, id: u64, signal: &str) {
        let pid = self.node(id).pid().expect("the node runs");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("cluster work directory kept: {}", self.root.display());
            for node in &self.nodes {
                let log = std::fs::read_to_string(self.log_path(node.id)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("----- node {} log (last lines) -----", node.id);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Sends one inline text command and returns its reply as text (a simple string, an
/// error or a bulk string; enough for PING and INFO), with a 1 s timeout.
pub fn text_command(addr: &str, command: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(1);
    let stream = StdStream::connect_timeout(&addr.parse().expect("an address"), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    (&stream).write_all(format!("{command}\r\n").as_bytes())?;
    let mut r = BufReader::new(&stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end().to_string();
    match line.as_bytes().first() {
        Some(b'$') => {
            let len: usize = line[1..].parse().map_err(std::io::Error::other)?;
            let mut body = vec![0u8; len + 2];
            r.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        Some(_) => Ok(line[1..].to_string()),
        None => Err(std::io::Error::other("no reply")),
    }
}
