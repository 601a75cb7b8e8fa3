//! Replication end to end, in process: three raft nodes on 127.0.0.1 over real TCP, each
//! with its own data directory. Writes go through the leader and every state machine
//! converges to the same table; the leader is shut down, a new one is elected and writes
//! go on with larger tokens; the old node restarts from its directory (on its old address)
//! and catches up through a snapshot, since the log it missed was purged meanwhile.
//!
//! Every wait is bounded; nothing sleeps to "let things settle".

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use turnstile::durable::command::{Applied, Command, Entry};
use turnstile::durable::{SessionKind, EPOCH_SHIFT};
use turnstile::engine::{
    AcquireOutcome, AcquireRequest, Event, FencingToken, Mode, RequestId, SessionId,
};
use turnstile::raft::{ClusterError, NodeAddr, NodeId, RaftNode, RaftOptions, Role, Written};

const WAIT: Duration = Duration::from_secs(15);
const PASSWORD: &str = "raft-test-secret";

/// `RUST_LOG=turnstile=debug,openraft=info cargo test --test raft_cluster -- --nocapture`
/// shows what the nodes did.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("turnstile-raft-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(id: NodeId, dir: &Path, listen: &str) -> RaftOptions {
    let mut o = RaftOptions::new(id, dir.join(format!("node-{id}")));
    o.listen = listen.to_string();
    o.client_addr = format!("127.0.0.1:{}", 7000 + id);
    o.password = Some(PASSWORD.into());
    o.shards = 8;
    // Small enough that the test's writes take snapshots and purge the log behind them.
    o.snapshot_every = 40;
    o.keep_logs = 0;
    o.segment_size = 4096;
    o
}

/// Polls `check` every 10 ms until it gives `Some`, for at most `limit`.
async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, f)
        .await
        .map_err(|_| anyhow!("{what} took longer than {WAIT:?}"))
}

/// The node that is leader and has applied its own term's blank entry.
async fn ready_leader(nodes: &BTreeMap<NodeId, RaftNode>) -> Result<NodeId> {
    wait_for("a ready leader", WAIT, || {
        nodes
            .values()
            .find(|n| n.leader_ready().is_some())
            .map(|n| n.id())
    })
    .await
}

async fn converge(nodes: &BTreeMap<NodeId, RaftNode>, index: u64) -> Result<()> {
    wait_for(&format!("every node to apply index {index}"), WAIT, || {
        nodes
            .values()
            .all(|n| {
                let m = n.metrics();
                m.applied_index >= Some(index) && m.commit_index >= Some(index)
            })
            .then_some(())
    })
    .await?;
    let mut images = nodes.values().map(|n| {
        (
            n.id(),
            n.table().export().canonical(),
            n.state_machine().sessions(),
        )
    });
    let (first_id, first, sessions) = images.next().context("no nodes")?;
    for (id, image, s) in images {
        ensure!(
            image == first,
            "node {id}'s table differs from node {first_id}'s"
        );
        ensure!(
            s == sessions,
            "node {id}'s sessions differ from node {first_id}'s"
        );
    }
    Ok(())
}

/// Builds entries with increasing `now` and request ids, like a leader's sequencer.
struct Proposer {
    now: u64,
    request: u64,
}

impl Proposer {
    fn tick(&mut self) -> u64 {
        self.now += 5;
        self.now
    }

    fn open(&mut self, session: u64) -> Vec<u8> {
        Entry {
            now: self.tick(),
            command: Command::OpenSession {
                session: SessionId(session),
                kind: SessionKind::Text,
            },
        }
        .to_vec()
    }

    fn acquire(&mut self, session: u64, key: &str) -> Vec<u8> {
        self.request += 1;
        Entry {
            now: self.tick(),
            command: Command::Acquire {
                session: SessionId(session),
                key: key.as_bytes(),
                req: AcquireRequest {
                    id: RequestId(self.request),
                    mode: Mode::Exclusive,
                    reentrant: false,
                    ttl_ms: 30_000,
                    wait_ms: None,
                    policy: Default::default(),
                },
                value: None,
            },
        }
        .to_vec()
    }

    fn release(&mut self, session: u64, key: &str) -> Vec<u8> {
        Entry {
            now: self.tick(),
            command: Command::Release {
                session: SessionId(session),
                key: key.as_bytes(),
            },
        }
        .to_vec()
    }
}

async fn write(node: &RaftNode, entry: Vec<u8>) -> Result<Written> {
    Ok(bounded("a write", node.client_write(entry)).await??)
}

fn granted(w: &Written) -> Result<FencingToken> {
    match &w.applied {
        Applied::Acquire(AcquireOutcome::Granted(t)) => Ok(*t),
        other => bail!("expected a grant at index {}, got {other:?}", w.index),
    }
}

fn granted_event(w: &Written, session: u64) -> Result<FencingToken> {
    w.events
        .iter()
        .find_map(|e| match e {
            Event::Granted {
                session: s, token, ..
            } if s.0 == session => Some(*token),
            _ => None,
        })
        .with_context(|| format!("no grant for session {session} in {:?}", w.events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up() -> Result<()> {
    init_tracing();
    let began = Instant::now();
    let dir = data_dir("three");
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, RaftNode::start(options(id, &dir, "127.0.0.1:0")).await?);
    }
    let members: BTreeMap<NodeId, NodeAddr> =
        nodes.iter().map(|(&id, n)| (id, n.node_addr())).collect();
    bounded("initialize", nodes[&1].initialize(members.clone())).await??;

    // --- writes through the leader ---
    let leader = ready_leader(&nodes).await?;
    let term1 = nodes[&leader].metrics().term;
    let mut p = Proposer {
        now: 1_000,
        request: 0,
    };
    for s in 1..=3 {
        write(&nodes[&leader], p.open(s)).await?;
    }
    let t1 = granted(&write(&nodes[&leader], p.acquire(1, "orders/1")).await?)?;
    ensure!(
        t1.0 > term1 << EPOCH_SHIFT,
        "token {t1} is above term {term1}'s floor"
    );
    let queued = write(&nodes[&leader], p.acquire(2, "orders/1")).await?;
    ensure!(
        queued.applied == Applied::Acquire(AcquireOutcome::Queued),
        "{queued:?}"
    );
    let released = write(&nodes[&leader], p.release(1, "orders/1")).await?;
    ensure!(released.applied == Applied::Release(Ok(())), "{released:?}");
    let t2 = granted_event(&released, 2)?;
    ensure!(t2 > t1, "the handed-over token {t2} is above {t1}");
    let mut last = released.index;
    for k in 0..5 {
        last = write(&nodes[&leader], p.acquire(3, &format!("jobs/{k}")))
            .await?
            .index;
    }

    // A follower redirects to the leader, by id and client address.
    let follower = *nodes
        .keys()
        .find(|&&id| id != leader)
        .context("a follower")?;
    match nodes[&follower].client_write(p.acquire(1, "x")).await {
        Err(ClusterError::NotLeader {
            leader_id: Some(l),
            leader: Some(addr),
        }) => {
            ensure!(l == leader, "redirected to {l}, the leader is {leader}");
            ensure!(addr == members[&leader], "redirect names {addr:?}");
        }
        other => bail!("a follower accepted or failed a write: {other:?}"),
    }
    match nodes[&follower].ensure_linearizable().await {
        Err(ClusterError::NotLeader { .. }) => {}
        other => bail!("a follower gave a read index: {other:?}"),
    }
    let read_index = bounded("read index", nodes[&leader].ensure_linearizable()).await??;
    ensure!(
        read_index >= Some(last),
        "read index {read_index:?} below {last}"
    );

    converge(&nodes, last).await?;
    let m = nodes[&leader].metrics();
    ensure!(
        m.role == Role::Leader && m.commit_index >= Some(last),
        "{m:?}"
    );
    ensure!(m.replication.len() == 2, "lag of both followers: {m:?}");
    eprintln!(
        "3 nodes replicated {last} entries, converged ({:?})",
        began.elapsed()
    );

    // --- fail over ---
    let old = leader;
    let old_addr = nodes[&old].raft_addr().to_string();
    let killed = Instant::now();
    nodes
        .remove(&old)
        .context("the old leader")?
        .shutdown()
        .await?;
    eprintln!("node {old} shut down in {:?}", killed.elapsed());
    let leader = ready_leader(&nodes).await?;
    let failover = killed.elapsed();
    eprintln!("node {leader} leads {failover:?} after node {old} stopped");
    ensure!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    let term2 = nodes[&leader].metrics().term;
    ensure!(term2 > term1, "term {term2} after {term1}");

    // The queue survived: session 3 queues behind session 2, then gets the next token.
    let queued = write(&nodes[&leader], p.acquire(3, "orders/1")).await?;
    ensure!(
        queued.applied == Applied::Acquire(AcquireOutcome::Queued),
        "{queued:?}"
    );
    let released = write(&nodes[&leader], p.release(2, "orders/1")).await?;
    let t3 = granted_event(&released, 3)?;
    ensure!(t3 > t2, "token {t3} after failover is above {t2}");
    ensure!(
        t3.0 > term2 << EPOCH_SHIFT,
        "token {t3} above term {term2}'s floor"
    );

    // Enough writes for snapshots, with the log behind them purged.
    let mut prev = FencingToken(term2 << EPOCH_SHIFT);
    for _ in 0..45 {
        let t = granted(&write(&nodes[&leader], p.acquire(1, "bulk")).await?)?;
        ensure!(
            t > prev,
            "tokens on one key only increase: {t} after {prev}"
        );
        prev = t;
        last = write(&nodes[&leader], p.release(1, "bulk")).await?.index;
    }
    converge(&nodes, last).await?;
    let snapshot = wait_for("a snapshot on the leader", WAIT, || {
        nodes[&leader].metrics().snapshot_index
    })
    .await?;
    ensure!(snapshot > released.index, "snapshot at {snapshot}");

    // --- the old leader comes back and catches up (through a snapshot: its log is gone) ---
    let restarted = Instant::now();
    nodes.insert(old, RaftNode::start(options(old, &dir, &old_addr)).await?);
    converge(&nodes, last).await?;
    let m = nodes[&old].metrics();
    ensure!(m.role == Role::Follower, "the old leader follows: {m:?}");
    ensure!(
        m.snapshot_index.is_some(),
        "caught up through a snapshot: {m:?}"
    );
    eprintln!(
        "node {old} caught up {:?} after restarting",
        restarted.elapsed()
    );

    // And it keeps following.
    let t4 = granted(&write(&nodes[&leader], p.acquire(2, "bulk")).await?)?;
    ensure!(t4 > prev, "token {t4} above {prev}");
    let w = write(&nodes[&leader], p.release(2, "bulk")).await?;
    converge(&nodes, w.index).await?;

    for (_, n) in std::mem::take(&mut nodes) {
        bounded("shutdown", n.shutdown()).await??;
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("whole test: {:?}", began.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_password_gets_no_vote_and_no_entries() -> Result<()> {
    init_tracing();
    let dir = data_dir("password");
    let a = RaftNode::start(options(1, &dir, "127.0.0.1:0")).await?;
    let mut wrong = options(2, &dir, "127.0.0.1:0");
    wrong.password = Some("not-the-secret".into());
    let b = RaftNode::start(wrong).await?;
    let members: BTreeMap<NodeId, NodeAddr> = [(1, a.node_addr()), (2, b.node_addr())].into();
    bounded("initialize", a.initialize(members)).await??;
    // Node 1 cannot reach node 2 (refused handshake): with two voters, nobody can win.
    // Node 2 learns nothing either. Give elections a few rounds.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        ensure!(
            a.leader_ready().is_none() && b.leader_ready().is_none(),
            "a leader without a quorum"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        b.metrics().last_log_index.is_none(),
        "node 2 got entries: {:?}",
        b.metrics()
    );
    bounded("shutdown", a.shutdown()).await??;
    bounded("shutdown", b.shutdown()).await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
