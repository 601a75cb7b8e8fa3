//! Durability: the log of state changes in front of the lock table, snapshots of the
//! table, and recovery from both.
//!
//! - [`command`]: the logged commands, their record layout, and `apply`, the one path
//!   through which both the live server and replay change the table.
//! - [`store`]: the sequencer that applies a command and appends its record in one step,
//!   and hands out tickets (log indexes) to wait on before replying.
//! - [`watermark`]: the durability watermark those waits use.
//! - [`image_codec`]: the snapshot payload (the table's image, binary and versioned).
//! - [`recovery`]: snapshot + log replay at startup, lease restart, the epoch that keeps
//!   tokens from going back.
//! - `codec`: varints and the checked reader both encodings use.
//!
//! The storage underneath (segments, group commit, fsync modes, torn-tail handling,
//! the snapshot container) is [`crate::wal`].

pub mod audit;
pub(crate) mod codec;
pub mod command;
pub mod image_codec;
pub mod recovery;
pub mod store;
pub mod watermark;

pub use codec::DecodeError;
pub use command::{Command, Entry, SessionKind, EPOCH_SHIFT};
pub use recovery::{open, open_with_io, Options, Recovered, RecoveryError};
pub use store::{request_id, PersistenceInfo, RecoverySummary, Store, Ticket};
pub use watermark::LogFailed;

#[cfg(test)]
mod tests;
