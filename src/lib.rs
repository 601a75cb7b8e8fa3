//! Turnstile: a single-binary, high-performance lock manager.
//!
//! Module map (data flows top to bottom):
//! - [`protocol`]: the text codec (RESP2/RESP3 and inline commands) turning bytes into
//!   commands and replies into bytes.
//! - [`cmd`]: one command per file: parse arguments, apply to the engine, encode the reply.
//! - [`server`]: the accept loop, one task per connection, the timer driver.
//! - [`engine`]: the lock table, a deterministic sharded state machine (no sockets, no clock).
//! - [`lease`]: the hierarchical timer wheel behind leases and wait deadlines.
//! - [`deadlock`]: the wait-for graph that refuses a wait which would close a cycle.
//! - [`config`]: every setting and limit, with its default.
//! - [`acl`]: named users, their passwords and permissions (`--users-file`).
//! - [`durable`]: the log in front of the table: commands, the sequencer, snapshots of the
//!   table, recovery.
//! - [`raft`]: replication on openraft: log storage on the WAL, the lock table as the
//!   state machine, peer transport, [`raft::RaftNode`] (not yet wired into the server).
//! - [`tls`]: TLS (rustls) for the client port and the raft port.
//! - [`wal`]: the write-ahead log's storage (segments, group commit, recovery, snapshots).

pub mod acl;
pub mod cmd;
pub mod config;
pub mod deadlock;
pub mod durable;
pub mod engine;
pub mod glob;
pub mod lease;
pub mod protocol;
pub mod raft;
pub mod server;
pub mod tls;
pub mod wal;

pub use config::Config;
