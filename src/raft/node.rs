//! [`RaftNode`]: one member of a Turnstile cluster, what the server drives.
//!
//! ```text
//! RaftNode::start(opts)        open the log (WAL) and the state machine, bind the raft
//!                              listener, start openraft
//! initialize(members)          once, on one node of a new cluster
//! add_learner / change_membership
//! client_write(entry bytes)    leader: propose, wait for commit and apply -> Written;
//!                              follower: ClusterError::NotLeader { leader }
//! ensure_linearizable()        read index: leadership confirmed by a quorum and the
//!                              state machine caught up; then read the table
//! leader_ready() / state_machine().take_over(..)   the timer driver's start (see there)
//! metrics()                    role, term, leader, commit/apply index, lag per follower
//! shutdown()
//! ```
//!
//! # Data directory
//!
//! ```text
//! <dir>/raft/wal/        WAL segments and the vote
//! <dir>/raft/purged      the last purged log id
//! <dir>/snapshots/       state machine snapshots (raft meta + table image)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError};
use openraft::{ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::error::ClusterError;
use super::log_store::{LogOptions, LogStore};
use super::network::{serve, Network};
use super::state_machine::StateMachine;
use super::types::typ::{Raft, RaftError, RaftMetrics};
use super::types::{NodeAddr, NodeId, Request};
use crate::durable::command::{Applied, Entry as CommandEntry};
use crate::engine::{Event, Limits, LockTable};
use crate::wal::FsyncMode;

/// How to run a node. Every node of a cluster must use the same `shards` and `limits`
/// (apply computes tokens and refusals from them).
#[derive(Debug, Clone)]
pub struct RaftOptions {
    /// This node's id (unique in the cluster, never reused for another data directory).
    pub id: NodeId,
    /// The data directory.
    pub dir: PathBuf,
    /// Where the raft listener binds (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Where clients reach this node; only reported back by [`RaftNode::node_addr`].
    pub client_addr: String,
    /// The shared password peers authenticate with (`None`: no check).
    pub password: Option<String>,
    /// Lock-table shards of a new table (a snapshot keeps its own count).
    pub shards: usize,
    /// The table's limits.
    pub limits: Limits,
    /// The leader's heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeouts are drawn from `[election_timeout_min, election_timeout_max)`.
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`; also the margin [`StateMachine::take_over`] adds.
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the newest snapshot (a follower that far behind
    /// still catches up from the log instead of a snapshot).
    pub keep_logs: u64,
    /// When log appends count as durable: [`FsyncMode::Always`] unless the operator
    /// accepts that a crash of a majority can lose acknowledged writes.
    pub fsync: FsyncMode,
    /// WAL segment size in bytes.
    pub segment_size: u64,
    /// TLS between nodes (`None`: plain TCP): see [`crate::tls::PeerTls`].
    pub tls: Option<crate::tls::PeerTls>,
}

/// Most entries one AppendEntries carries (openraft's default is 300).
const MAX_PAYLOAD_ENTRIES: u64 = 64;

impl RaftOptions {
    /// Defaults: listen on 127.0.0.1:0, 64 shards, heartbeat 100 ms, election timeouts
    /// of 200–400 ms, a snapshot every 10,000 entries keeping 1,000, fsync always, 64 MiB
    /// segments.
    ///
    /// Failover time with these timeouts: openraft's followers first honour the deposed
    /// leader's lease (`election_timeout_max` since its last heartbeat: they refuse to
    /// vote before it ends), then wait their own election timeout, checked on a tick of
    /// 1.5 heartbeats: 400 + 200..400 + up to 150 ms, so about 0.6–0.95 s from the last
    /// heartbeat to a new leader. Two openraft delays come on top in bad cases: a split
    /// vote costs another election timeout, and a node that once saw a longer log in a
    /// vote reply waits `2 × election_timeout_max` more before its next election (the
    /// flag stays until that election, however much later it comes). With the earlier
    /// defaults (100 ms, 400–800 ms) those cases took failovers to 3–4.3 s in the long
    /// run; with these the worst case stays under 2 s (the issue's goal at p99). The
    /// heartbeat stays at 100 ms because it is also openraft's AppendEntries timeout
    /// (see [`MAX_PAYLOAD_ENTRIES`]).
    pub fn new(id: NodeId, dir: impl Into<PathBuf>) -> RaftOptions {
        RaftOptions {
            id,
            dir: dir.into(),
            listen: "127.0.0.1:0".into(),
            client_addr: String::new(),
            password: None,
            shards: 64,
            limits: Limits::default(),
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(200),
            election_timeout_max: Duration::from_millis(400),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            fsync: FsyncMode::Always,
            segment_size: 64 << 20,
            tls: None,
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, ClusterError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "turnstile".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout_min),
            election_timeout_max: ms(self.election_timeout_max),
            // A snapshot chunk over a busy link may take longer than a heartbeat.
            install_snapshot_timeout: ms(self.election_timeout_max).max(1000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            purge_batch_size: 64,
            // openraft times an AppendEntries out after one heartbeat interval and then
            // backs off for 500 ms, sending nothing, not even heartbeats, so a follower
            // catching up (a restarted node) would start an election and depose a healthy
            // leader. Smaller batches (each entry packs up to MAX_BATCH commands) keep a
            // catch-up request well inside the interval.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..openraft::Config::default()
        };
        Ok(config.validate()?)
    }
}

/// The outcome of a committed write, on the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The entry's log index.
    pub index: u64,
    /// The term it was committed in.
    pub term: u64,
    /// What applying it did.
    pub applied: Applied,
    /// What it caused for other sessions (route them as the standalone server does).
    pub events: Vec<Event>,
}

/// An entry handed to openraft by [`RaftNode::submit`].
pub struct Submitted {
    rx: <openraft::impls::OneshotResponder<super::types::TypeConfig> as openraft::raft::responder::Responder<
        super::types::TypeConfig,
    >>::Receiver,
}

impl Submitted {
    /// Waits until the entry is committed and applied: what applying it did. An error
    /// leaves the outcome open unless it is `NotLeader` raised before appending, which
    /// this API cannot tell apart: callers treat every error as "unknown".
    pub async fn outcome(self) -> Result<super::Response, ClusterError> {
        match self.rx.await {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
            Err(_) => Err(ClusterError::Stopped(
                "the raft core dropped the request".into(),
            )),
        }
    }
}

/// A node's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serves writes and linearizable reads.
    Leader,
    /// Replicates; answers writes with a redirect.
    Follower,
    /// Campaigning.
    Candidate,
    /// Replicates without a vote (or not yet part of a cluster).
    Learner,
    /// Stopping.
    Shutdown,
}

impl Role {
    /// The name INFO shows.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl From<ServerState> for Role {
    fn from(s: ServerState) -> Role {
        match s {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// How far one follower is behind (leader only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLag {
    /// The follower or learner.
    pub id: NodeId,
    /// The last log index known replicated to it.
    pub matched: Option<u64>,
    /// Entries the leader has that it is not known to have.
    pub lag: u64,
}

/// What INFO's replication section shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The leader's addresses, from the membership config.
    pub leader_addr: Option<NodeAddr>,
    /// The last log index on this node.
    pub last_log_index: Option<u64>,
    /// The last index this node knows committed.
    pub commit_index: Option<u64>,
    /// The last index applied to the table.
    pub applied_index: Option<u64>,
    /// The newest snapshot's last index.
    pub snapshot_index: Option<u64>,
    /// The voters.
    pub voters: Vec<NodeId>,
    /// The learners.
    pub learners: Vec<NodeId>,
    /// Per follower, on the leader (empty elsewhere).
    pub replication: Vec<PeerLag>,
    /// On the leader: ms since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
}

/// One running node.
pub struct RaftNode {
    id: NodeId,
    raft: Raft,
    sm: StateMachine,
    log: LogStore,
    addr: SocketAddr,
    client_addr: String,
    election_timeout_max: Duration,
    cancel: CancellationToken,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish()
    }
}

fn write_error(e: RaftError<ClientWriteError<NodeId, NodeAddr>>) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ClusterError::NotLeader {
            leader_id: f.leader_id,
            leader: f.leader_node,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ClusterError::Refused(e.to_string())
        }
        RaftError::Fatal(f) => ClusterError::Stopped(f.to_string()),
    }
}

impl RaftNode {
    /// Opens the data directory (recovering the log and the newest snapshot), binds the
    /// raft listener and starts openraft. A node that was part of a cluster rejoins it
    /// by itself; a new one waits for [`Self::initialize`] or to be added as a learner.
    pub async fn start(opts: RaftOptions) -> Result<RaftNode, ClusterError> {
        let config = Arc::new(opts.raft_config()?);
        std::fs::create_dir_all(&opts.dir).map_err(|source| ClusterError::Io {
            what: format!("creating {}", opts.dir.display()),
            source,
        })?;
        let mut log_opts = LogOptions::new(opts.dir.join("raft"));
        log_opts.fsync = opts.fsync;
        log_opts.segment_size = opts.segment_size;
        let (log, report) = LogStore::open(&log_opts)?;
        if let Some(cut) = &report.cut {
            tracing::warn!(?cut, "the raft log's torn tail was cut off");
        }
        let sm = StateMachine::open(
            &opts.dir.join("snapshots"),
            opts.shards,
            opts.limits.clone(),
        )?;
        // The log behind the machine must still be there: a damaged newest snapshot makes
        // the store fall back to an older one, which the purged log may no longer continue.
        let purged = log.positions().purged_index;
        let applied = sm.last_applied().map(|l| l.index);
        if purged.is_some() && applied < purged {
            return Err(ClusterError::Corrupt {
                what: format!("data directory {}", opts.dir.display()),
                reason: format!(
                    "the newest readable snapshot ends at {applied:?} but the log is purged \
                     up to {purged:?}: entries in between are gone (restore the node from a \
                     peer: wipe its directory and add it again)"
                ),
            });
        }
        let listener =
            TcpListener::bind(&opts.listen)
                .await
                .map_err(|source| ClusterError::Io {
                    what: format!("binding the raft listener on {}", opts.listen),
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ClusterError::Io {
            what: "reading the raft listener's address".into(),
            source,
        })?;
        let cancel = CancellationToken::new();
        let network = Network::new(
            opts.id,
            opts.password.as_deref(),
            opts.tls.clone(),
            cancel.clone(),
        );
        let raft = Raft::new(opts.id, config, network, log.clone(), sm.clone())
            .await
            .map_err(|e| ClusterError::Stopped(e.to_string()))?;
        let listener = tokio::spawn(serve(
            listener,
            raft.clone(),
            opts.id,
            opts.password.clone(),
            opts.tls.as_ref().map(|t| t.acceptor.clone()),
            cancel.clone(),
        ));
        info!(id = opts.id, raft = %addr, dir = %opts.dir.display(), "raft node started");
        Ok(RaftNode {
            id: opts.id,
            raft,
            sm,
            log,
            addr,
            client_addr: opts.client_addr,
            election_timeout_max: opts.election_timeout_max,
            cancel,
            listener,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The raft listener's bound address.
    pub fn raft_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This node's addresses as membership configs name them.
    pub fn node_addr(&self) -> NodeAddr {
        NodeAddr::new(self.addr.to_string(), self.client_addr.clone())
    }

    /// The state machine (the table, sessions, `take_over`).
    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }

    /// The lock table now (see [`StateMachine::table`]).
    pub fn table(&self) -> Arc<LockTable> {
        self.sm.table()
    }

    /// The election timeout's upper bound: the margin a new leader adds to leases.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout_max
    }

    /// The openraft handle, for what this API does not cover.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// openraft's metrics as a watch (changes of role, leader, term, indexes).
    pub fn subscribe(&self) -> watch::Receiver<RaftMetrics> {
        self.raft.metrics()
    }

    /// Makes this node the first of a new cluster with `members` (voters, each with its
    /// addresses; this node among them). Call once, on one node.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, NodeAddr>,
    ) -> Result<(), ClusterError> {
        self.raft.initialize(members).await.map_err(|e| match e {
            RaftError::APIError(InitializeError::NotAllowed(e)) => {
                ClusterError::Refused(e.to_string())
            }
            RaftError::APIError(InitializeError::NotInMembers(e)) => {
                ClusterError::Refused(e.to_string())
            }
            RaftError::Fatal(f) => ClusterError::Stopped(f.to_string()),
        })
    }

    /// Adds `id` at `addr` as a learner (it replicates, without a vote). With
    /// `blocking`, returns once it has caught up. Returns the membership entry's index.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: NodeAddr,
        blocking: bool,
    ) -> Result<u64, ClusterError> {
        let r = self
            .raft
            .add_learner(id, addr, blocking)
            .await
            .map_err(write_error)?;
        Ok(r.log_id.index)
    }

    /// Makes `voters` the voting members (through joint consensus). With `retain`,
    /// removed voters stay as learners. Returns the final membership entry's index.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain: bool,
    ) -> Result<u64, ClusterError> {
        let r = self
            .raft
            .change_membership(voters, retain)
            .await
            .map_err(write_error)?;
        Ok(r.log_id.index)
    }

    /// Removes learner `id` from the cluster. Returns the membership entry's index.
    pub async fn remove_learner(&self, id: NodeId) -> Result<u64, ClusterError> {
        let r = self
            .raft
            .change_membership(
                openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                false,
            )
            .await
            .map_err(write_error)?;
        Ok(r.log_id.index)
    }

    /// Proposes one encoded [`crate::durable::command::Entry`] record and waits until it is
    /// committed and applied. On a follower: [`ClusterError::NotLeader`], naming the
    /// leader when known. The record is checked before it is proposed
    /// ([`ClusterError::Invalid`]).
    ///
    /// An error other than `Invalid` after proposing (`NotLeader` when leadership was
    /// lost meanwhile, `Stopped`) leaves the outcome open: the entry may still commit
    /// under the next leader. Retries must be idempotent (request ids).
    pub async fn client_write(&self, entry: Vec<u8>) -> Result<Written, ClusterError> {
        CommandEntry::decode(&entry)?;
        let r = self
            .raft
            .client_write(Request(entry))
            .await
            .map_err(write_error)?;
        let applied = r.data.applied.ok_or_else(|| ClusterError::Corrupt {
            what: format!("log entry {}", r.log_id.index),
            reason: "a checked record did not apply".into(),
        })?;
        Ok(Written {
            index: r.log_id.index,
            term: r.log_id.leader_id.term,
            applied,
            events: r.data.events,
        })
    }

    /// Submits one entry (a command record or a [`super::batch`]) without waiting for
    /// it: entries submitted one after another are appended in that order. Await the
    /// returned [`Submitted`] for what applying it did.
    pub async fn submit(&self, entry: Vec<u8>) -> Result<Submitted, ClusterError> {
        let rx = self
            .raft
            .client_write_ff(Request(entry))
            .await
            .map_err(|f| ClusterError::Stopped(f.to_string()))?;
        Ok(Submitted { rx })
    }

    /// Read index: confirms with a quorum that this node is still the leader and waits
    /// until the table has applied everything committed before the call. A read of the
    /// table after it returns is linearizable. Returns the read index.
    pub async fn ensure_linearizable(&self) -> Result<Option<u64>, ClusterError> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ClusterError::NotLeader {
                    leader_id: f.leader_id,
                    leader: f.leader_node,
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(ClusterError::Refused(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(ClusterError::Stopped(f.to_string())),
        }
    }

    /// `Some(term)` when this node is the leader and has applied everything from earlier
    /// terms (its own blank entry of `term` is applied): the moment to call
    /// [`StateMachine::take_over`] and start the timer driver.
    pub fn leader_ready(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        let applied_term = m.last_applied.map(|l| l.leader_id.term);
        (m.state == ServerState::Leader && applied_term == Some(m.current_term))
            .then_some(m.current_term)
    }

    /// fsync latency and batch size of the raft log.
    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.log.wal_stats()
    }

    /// The node's metrics now.
    pub fn metrics(&self) -> ClusterMetrics {
        let m = self.raft.metrics().borrow().clone();
        let positions = self.log.positions();
        let membership = m.membership_config.membership();
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l).cloned());
        let last = m.last_log_index.unwrap_or(0);
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != self.id)
                    .map(|(&id, matched)| {
                        let matched = matched.map(|l| l.index);
                        PeerLag {
                            id,
                            matched,
                            lag: matched.map_or(last + 1, |i| last.saturating_sub(i)),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClusterMetrics {
            id: self.id,
            role: m.state.into(),
            term: m.current_term,
            leader: m.current_leader,
            leader_addr,
            last_log_index: m.last_log_index,
            commit_index: positions.committed_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            replication,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
        }
    }

    /// Stops the node: openraft, the listener and the peer connections; then waits (at
    /// most 5 s) for openraft's tasks to let go of the log and closes the WAL with a final
    /// fsync, so the data directory can be reopened at once.
    pub async fn shutdown(self) -> Result<(), ClusterError> {
        let stopped = self.raft.shutdown().await;
        self.cancel.cancel();
        let _ = self.listener.await;
        drop(self.raft);
        drop(self.sm);
        if let Err(e) = stopped {
            return Err(ClusterError::Stopped(e.to_string()));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut log = self.log;
        loop {
            match log.try_close() {
                Ok(result) => break result,
                Err(back) if Instant::now() < deadline => {
                    log = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    tracing::warn!("raft log still in use 5 s after shutdown; closing on drop");
                    break Ok(());
                }
            }
        }?;
        info!(id = self.id, "raft node stopped");
        Ok(())
    }
}
