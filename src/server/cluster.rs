//! The server as a cluster node: the [`RaftNode`] behind the connections, the leader's
//! duties, and what connections ask of it.
//!
//! In cluster mode nothing changes the lock table but applying committed log entries
//! (the [`crate::raft::StateMachine`] does, on every node alike). A connection on the
//! leader turns a state change into a [`Command`] record, proposes it and replies with
//! what applying it did, once it is committed; on a follower it answers `NOTLEADER`.
//!
//! [`drive`] is the leader's side: it watches the node's role; when this node has become
//! leader and applied everything from earlier terms it takes over (clock above the last
//! applied time, every lease restarted with its TTL plus the election timeout, sessions
//! restored, see docs/cluster.md), then runs the timer driver: it asks the table what is
//! due ([`crate::engine::LockTable::due`]) and proposes that as a Tick entry. When the
//! node loses leadership it stops, and forgets the sessions it served.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::Shared;
use crate::cmd::cluster::Admin;
use crate::config::Config;
use crate::durable::command::{Applied, Command, Entry, Fired};
use crate::durable::SessionKind;
use crate::engine::{Due, SessionId};
use crate::raft::{ClusterError, ClusterMetrics, NodeAddr, RaftNode, RaftOptions, Role};

/// Why a cluster request got no outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This node does not lead (or has not taken over yet): the leader's client address
    /// when known. Nothing was proposed.
    NotLeader(Option<String>),
    /// Proposed, but leadership was lost before the outcome was known: the change may or
    /// may not have been made.
    Uncertain(String),
    /// Refused before anything was proposed (a bad record, a stopped node).
    Failed(String),
}

impl Refusal {
    /// The text-mode error (without the leading `-`).
    pub fn text(&self) -> String {
        match self {
            Refusal::NotLeader(Some(addr)) => format!("NOTLEADER {addr}"),
            Refusal::NotLeader(None) => "NOTLEADER".to_string(),
            Refusal::Uncertain(why) => format!(
                "ERR UNCERTAIN leadership was lost before the outcome was known ({why}); \
                 the request may or may not have taken effect"
            ),
            Refusal::Failed(why) => format!("ERR cluster: {why}"),
        }
    }
}

/// A command waiting for the proposer, and where its outcome goes.
struct Proposal {
    record: Vec<u8>,
    reply: oneshot::Sender<Result<Applied, Refusal>>,
}

/// Most commands packed into one log entry.
const MAX_BATCH: usize = 1024;

/// Scheduler rounds the proposer yields after answering an entry before it gathers the
/// next one (see [`run_proposer`]).
const LINGER_ROUNDS: usize = 4;

/// A cluster node as the server uses it.
pub struct Cluster {
    node: RaftNode,
    proposals: mpsc::UnboundedSender<Proposal>,
    /// Taken by the proposer task when [`drive`] starts it.
    proposals_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Proposal>>>,
    /// The term this node took over as leader in; 0 while it does not lead.
    leading: AtomicU64,
    /// `--follower-reads stale`.
    stale_reads: bool,
}

impl Cluster {
    /// Starts the node (recovering its data directory) and, on the first start of the
    /// lowest id named by `--cluster`, initialises the cluster.
    pub async fn start(config: &Config, client_addr: String) -> std::io::Result<Cluster> {
        let id = config.node_id.expect("cluster mode has a node id");
        let listen = match &config.raft_addr {
            Some(a) => a.clone(),
            None => format!("{}:{}", config.bind, config.port.saturating_add(10_000)),
        };
        let mut opts = RaftOptions::new(id, config.data_dir.clone());
        opts.listen = listen;
        opts.client_addr = client_addr;
        opts.password = config
            .cluster_password
            .clone()
            .or_else(|| config.requirepass.clone());
        opts.shards = config.shards;
        opts.tls = crate::tls::PeerTls::from_config(config)?;
        opts.limits = config.engine_limits();
        opts.heartbeat = Duration::from_millis(config.heartbeat_ms);
        opts.election_timeout_min = Duration::from_millis(config.election_timeout_ms);
        opts.election_timeout_max = Duration::from_millis(config.election_timeout_ms * 2);
        opts.fsync = config.fsync;
        opts.segment_size = config.wal_segment_bytes;
        opts.snapshot_every = config.snapshot_every.clamp(1_000, 1_000_000);
        let node = RaftNode::start(opts)
            .await
            .map_err(|e| std::io::Error::other(format!("starting cluster node {id}: {e}")))?;
        let (proposals, rx) = mpsc::unbounded_channel();
        let cluster = Cluster {
            node,
            proposals,
            proposals_rx: parking_lot::Mutex::new(Some(rx)),
            leading: AtomicU64::new(0),
            stale_reads: config.follower_reads == "stale",
        };
        if let Some(members) = &config.cluster {
            let lowest = members.0.keys().next().copied();
            let initialized = cluster.node.raft().is_initialized().await.unwrap_or(true);
            if lowest == Some(id) && !initialized {
                let map = members
                    .0
                    .iter()
                    .map(|(&i, (raft, client))| (i, NodeAddr::new(raft.clone(), client.clone())))
                    .collect();
                match cluster.node.initialize(map).await {
                    Ok(()) => info!(id, "initialised a new cluster"),
                    Err(e) => warn!(error = %e, "initialising the cluster"),
                }
            }
        }
        Ok(cluster)
    }

    /// The raft node.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// Whether this node leads and has taken over (state changes are served).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire) != 0
    }

    /// Whether INSPECT and LOCKS may answer from this follower's own state.
    pub fn stale_reads(&self) -> bool {
        self.stale_reads
    }

    /// The refusal for a request this node cannot serve: where the leader is, if known
    /// and not this node (a leader that has not taken over yet names nobody: retry).
    pub fn not_leader(&self) -> Refusal {
        let m = self.node.metrics();
        let addr = match m.leader {
            Some(l) if l != m.id => m.leader_addr.map(|a| a.client),
            _ => None,
        };
        Refusal::NotLeader(addr)
    }

    /// The node's metrics (INFO replication, /metrics).
    pub fn metrics(&self) -> ClusterMetrics {
        self.node.metrics()
    }

    /// Proposes `command`, stamped `now` on the leader's clock, and waits until it is
    /// committed and applied: what applying it did. The events it caused are routed by
    /// the state machine's sink.
    pub async fn propose(&self, now: u64, command: Command<'_>) -> Result<Applied, Refusal> {
        if !self.is_leading() {
            return Err(self.not_leader());
        }
        let record = Entry { now, command }.to_vec();
        let (reply, rx) = oneshot::channel();
        if self.proposals.send(Proposal { record, reply }).is_err() {
            return Err(Refusal::Failed("the node is stopping".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(Refusal::Uncertain("the proposer stopped".into())))
    }

    /// Read index: returns once this node has confirmed with a quorum that it still
    /// leads and has applied everything committed before the call. A read of the table
    /// after it is linearizable; so is a RENEW (a deposed leader cannot extend a lease).
    pub async fn read_barrier(&self) -> Result<(), Refusal> {
        if !self.is_leading() {
            return Err(self.not_leader());
        }
        match self.node.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(ClusterError::NotLeader { .. }) => Err(self.not_leader()),
            Err(e) => {
                // No quorum confirmed this node: as good as not leading, for now.
                warn!(error = %e, "read index failed");
                Err(Refusal::NotLeader(None))
            }
        }
    }

    /// Stops the node.
    pub async fn shutdown(self) {
        if let Err(e) = self.node.shutdown().await {
            warn!(error = %e, "stopping the cluster node");
        }
    }
}

/// Hands the commands connections propose to openraft, one entry at a time: every
/// command waiting when the previous entry has been applied goes into the next entry
/// (see [`crate::raft::batch`]), so the log order is the order the commands reached the
/// proposer.
///
/// Why one entry in flight and not a pipeline: the leader's core is the bottleneck
/// under load, and most of what an entry costs is per entry, on three nodes (a log
/// append and fdatasync each, the replication messages, openraft's bookkeeping). While
/// one entry commits, the commands that arrive form the next one: group commit, as
/// the standalone store does it. Measured with `loadgen uncontended -t
/// turnstile-cluster` on a 3-node loopback cluster (nodes on one core, loadgen on the
/// other): 64 connections 15.2K/16.1K pairs/s with one entry in flight against
/// 14.0K/14.3K pipelined (32 instead of 14 commands per entry), 16 connections +13%,
/// one connection unchanged (it never has a second command waiting).
///
/// And why it lingers a few scheduler rounds after answering an entry: otherwise the
/// next entry holds only what arrived while the previous one committed, about half the
/// clients, and the other half, whose replies just went out, send their next command a
/// moment later and wait a whole commit for it. A `yield_now` lets the connection tasks
/// write their replies and the runtime poll its sockets, so commands that come back at
/// once join the next entry; with nothing else to run, a round costs microseconds. Same
/// measurement, 4 rounds against none: 64 connections 22.8K vs 16.0K pairs/s (62 instead
/// of 32 commands per entry), 16 connections 9.67K vs 5.67K, one hot key with 64
/// connections 1.45K vs 1.06K handoffs/s, one connection 783 vs 786.
async fn run_proposer(cluster: Arc<Cluster>, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let mut batch: Vec<Proposal> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        // Connections ready on this worker add theirs first.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (mut records, replies): (Vec<Vec<u8>>, Vec<_>) =
            batch.drain(..).map(|p| (p.record, p.reply)).unzip();
        let entry = if records.len() == 1 {
            records.pop().expect("one record")
        } else {
            crate::raft::batch::encode(&records)
        };
        let single = replies.len() == 1;
        let submitted = match cluster.node.submit(entry).await {
            Ok(submitted) => submitted,
            Err(e) => {
                refuse_all(replies, &Refusal::Failed(e.to_string()));
                continue;
            }
        };
        match submitted.outcome().await {
            Ok(mut r) => {
                let mut outcomes = if single {
                    vec![r.applied.take()]
                } else {
                    std::mem::take(&mut r.batch)
                };
                outcomes.resize(replies.len(), None);
                for (reply, applied) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(
                        applied.ok_or_else(|| Refusal::Failed("the record did not apply".into())),
                    );
                }
                // Let the connections just answered send their replies and read what their
                // clients send next, so that it joins the next entry (see above).
                for _ in 0..LINGER_ROUNDS {
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => {
                // Proposed, then leadership changed (or the node stopped): the entry may
                // still commit under the next leader.
                refuse_all(replies, &Refusal::Uncertain(e.to_string()));
            }
        }
    }
}

/// Answers every command of an entry with `refusal`.
fn refuse_all(replies: Vec<oneshot::Sender<Result<Applied, Refusal>>>, refusal: &Refusal) {
    for reply in replies {
        let _ = reply.send(Err(refusal.clone()));
    }
}

/// The leader's side (see the module docs). Runs until `stop` changes.
pub async fn drive(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    if let Some(rx) = cluster.proposals_rx.lock().take() {
        tokio::spawn(run_proposer(cluster.clone(), rx));
    }
    // Role changes are noticed within a tick; waking on every metrics change (each
    // commit) would cost more than it saves.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ready = cluster.node.leader_ready();
        let leading = cluster.leading.load(Ordering::Acquire);
        match ready {
            Some(term) if term != leading => take_over(&shared, &cluster, term),
            None if leading != 0 => step_down(&shared, &cluster),
            _ => {}
        }
        if cluster.is_leading() {
            fire_due(&shared, &cluster).await;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
    }
}

/// This node leads term `term` and has applied everything before it: make the table
/// its own (see [`crate::raft::StateMachine::take_over`] for why leases restart with
/// their TTL plus the election timeout), then serve.
fn take_over(shared: &Arc<Shared>, cluster: &Cluster, term: u64) {
    let sm = cluster.node.state_machine();
    shared.clock.advance_to(sm.last_now().saturating_add(1));
    let now = shared.clock.now_ms();
    sm.take_over(now, cluster.node.election_timeout());
    shared
        .next_request
        .fetch_max((sm.max_request() >> 32) + 1, Ordering::AcqRel);
    // Sessions served here in an earlier term are forgotten; the replicated ones come
    // back as after a restart, except text sessions whose connection is still here.
    shared.sessions.forget_all(shared);
    let restored: Vec<(SessionId, SessionKind)> = sm
        .sessions()
        .into_iter()
        .filter(|(id, kind)| !(matches!(kind, SessionKind::Text) && shared.router.has(*id)))
        .collect();
    let count = restored.len();
    // Sessions first: a RESUME served the moment this node counts as leading must find
    // its session.
    super::restore_sessions(shared, restored);
    cluster.leading.store(term, Ordering::Release);
    info!(
        term,
        now,
        sessions = count,
        "leading: took over the lock table"
    );
}

/// Lost leadership: stop serving changes; binary sessions go to the new leader.
fn step_down(shared: &Arc<Shared>, cluster: &Cluster) {
    cluster.leading.store(0, Ordering::Release);
    shared.sessions.forget_all(shared);
    let m = cluster.node.metrics();
    info!(role = m.role.name(), leader = ?m.leader, term = m.term, "no longer leading");
}

/// Proposes what is due now as one Tick entry.
async fn fire_due(shared: &Shared, cluster: &Cluster) {
    let now = shared.clock.now_ms();
    let due = cluster.node.table().due(now);
    if due.is_empty() {
        return;
    }
    let fired: Vec<Fired> = due
        .into_iter()
        .map(|d| match d {
            Due::Lease { session, key } => Fired::Expired { session, key },
            Due::Wait { session, key } => Fired::TimedOut { session, key },
            Due::Delay { key } => Fired::DelayEnded { key },
        })
        .collect();
    let n = fired.len();
    // The Tick applies at its own `now` (at least this one): holds renewed meanwhile
    // cannot be, their timers are off the wheel (RENEW answers NOTHELD).
    if let Err(e) = cluster.propose(now, Command::Tick { fired }).await {
        // Not leading any more, or the outcome is unknown: a new leader restarts every
        // lease and decides again.
        warn!(expiries = n, error = %e.text(), "proposing expiries failed");
    }
}

/// Runs a CLUSTER membership command: the log index of the membership change, or None
/// for INIT.
pub async fn admin(cluster: &Cluster, admin: Admin) -> Result<Option<u64>, Refusal> {
    let node = &cluster.node;
    let refused = |e: ClusterError| match e {
        ClusterError::NotLeader { leader, .. } => Refusal::NotLeader(leader.map(|a| a.client)),
        other => Refusal::Failed(other.to_string()),
    };
    match admin {
        Admin::Init(members) => {
            let map = members
                .into_iter()
                .map(|(i, (raft, client))| (i, NodeAddr::new(raft, client)))
                .collect();
            node.initialize(map).await.map_err(refused)?;
            Ok(None)
        }
        Admin::AddLearner { id, raft, client } => {
            info!(id, %raft, %client, "adding a learner");
            let index = node
                .add_learner(id, NodeAddr::new(raft, client), true)
                .await
                .map_err(refused)?;
            Ok(Some(index))
        }
        Admin::Promote(id) => {
            let m = node.metrics();
            if !m.learners.contains(&id) && !m.voters.contains(&id) {
                return Err(Refusal::Failed(format!(
                    "node {id} is not a member; add it as a learner first"
                )));
            }
            let mut voters: BTreeSet<u64> = m.voters.into_iter().collect();
            voters.insert(id);
            info!(id, ?voters, "promoting a learner");
            Ok(Some(
                node.change_membership(voters, true)
                    .await
                    .map_err(refused)?,
            ))
        }
        Admin::Remove(id) => {
            let m = node.metrics();
            info!(id, "removing a node");
            if m.voters.contains(&id) {
                let voters: BTreeSet<u64> = m.voters.into_iter().filter(|&v| v != id).collect();
                if voters.is_empty() {
                    return Err(Refusal::Failed("cannot remove the last voter".into()));
                }
                Ok(Some(
                    node.change_membership(voters, false)
                        .await
                        .map_err(refused)?,
                ))
            } else if m.learners.contains(&id) {
                Ok(Some(node.remove_learner(id).await.map_err(refused)?))
            } else {
                Err(Refusal::Failed(format!("node {id} is not a member")))
            }
        }
    }
}

/// The role for INFO and HELLO.
pub fn role_name(cluster: Option<&Cluster>) -> &'static str {
    match cluster {
        None => "leader",
        Some(c) if c.is_leading() => "leader",
        Some(c) => match c.metrics().role {
            Role::Leader => "leader",
            other => other.name(),
        },
    }
}
