//! Replication: a Turnstile cluster on openraft (issue 7).
//!
//! - [`types`]: the raft type configuration, declared once.
//! - [`log_store`]: openraft's log storage on the WAL ([`crate::wal`]).
//! - [`state_machine`]: openraft's state machine: the lock table, applied through
//!   [`crate::durable::command::apply`]; snapshots in the WAL's snapshot store.
//! - [`network`]: raft traffic between nodes over TCP, one persistent authenticated
//!   connection per peer, length-prefixed binary frames.
//! - [`node`]: [`RaftNode`], what the server uses: start, membership, writes, read index,
//!   metrics, shutdown.
//!
//! # Why openraft 0.9.25, pinned exactly
//!
//! 0.9.25 is the newest release of openraft's stable line; the 0.10 releases are alphas
//! whose API still changes between alphas. 0.9 already has all this layer needs: the
//! v2 storage API whose `append` completes through a callback after the fsync (which is
//! exactly how the WAL's group commit completes appends, in log order), read index
//! (`ensure_linearizable`), joint-consensus membership changes with learners, and
//! chunked snapshot transfer. What 0.10 adds (leader lease reads, leader-change hooks)
//! is done here without it: reads confirm leadership with a heartbeat quorum, and a new
//! leader is seen in the metrics watch ([`RaftNode::leader_ready`]). The pin is exact
//! (`=0.9.25`) because openraft's serde layout of its messages travels between nodes:
//! every node of a cluster must run the same version.
//!
//! # Data flow
//!
//! ```text
//! server (leader) --encoded durable::command::Entry--> RaftNode::client_write
//!   -> openraft: append to the WAL (fsync) and replicate to a quorum -> commit
//!   -> StateMachine::apply on every node (same order, same `now`, same tokens)
//!   -> the leader's caller gets the Applied outcome, the events and the log index
//! ```

pub mod batch;
pub mod error;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod types;

pub use error::ClusterError;
pub use log_store::{LogOptions, LogPositions, LogStore};
pub use node::{ClusterMetrics, PeerLag, RaftNode, RaftOptions, Role, Submitted, Written};
pub use state_machine::StateMachine;
pub use types::{NodeAddr, NodeId, Request, Response, TypeConfig};

#[cfg(test)]
mod tests;
