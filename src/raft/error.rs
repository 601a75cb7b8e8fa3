//! The raft layer's error type.

use std::io;

use super::types::{NodeAddr, NodeId};
use crate::durable::DecodeError;
use crate::wal::WalError;

/// What a cluster operation failed with.
///
/// [`ClusterError::NotLeader`] is an expected outcome rather than a failure: the server
/// answers it with a redirect (`NOTLEADER host:port`).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node is not the leader; the leader is named when known (`None` during an
    /// election).
    #[error("not the leader{}", leader_hint(.leader_id, .leader))]
    NotLeader {
        /// The leader's id, if known.
        leader_id: Option<NodeId>,
        /// The leader's addresses, if known.
        leader: Option<NodeAddr>,
    },
    /// A write's bytes are not a command record; nothing was proposed.
    #[error("the entry is not a command record: {0}")]
    Invalid(#[from] DecodeError),
    /// The log (WAL) failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Bytes on disk that this code did not write (or another version did).
    #[error("{what} does not decode: {reason}")]
    Corrupt {
        /// Which file or record.
        what: String,
        /// Why.
        reason: String,
    },
    /// An I/O call outside the WAL failed (binding the listener, the data directory).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The raft settings are inconsistent.
    #[error("invalid raft config: {0}")]
    Config(Box<openraft::ConfigError>),
    /// openraft refused the request (a membership change that is not allowed now, an
    /// initialize of an initialized node, a quorum that could not be reached).
    #[error("raft refused: {0}")]
    Refused(String),
    /// The raft node stopped (shut down, or a storage error made it stop).
    #[error("raft stopped: {0}")]
    Stopped(String),
}

impl From<openraft::ConfigError> for ClusterError {
    fn from(e: openraft::ConfigError) -> ClusterError {
        ClusterError::Config(Box::new(e))
    }
}

fn leader_hint(id: &Option<NodeId>, addr: &Option<NodeAddr>) -> String {
    match (id, addr) {
        (Some(id), Some(a)) => format!(": node {id} at {}", a.client),
        (Some(id), None) => format!(": node {id}"),
        _ => " (no leader known)".to_string(),
    }
}
