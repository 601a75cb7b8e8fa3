//! The WAL's error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::format::Corruption;
use super::io::is_disk_full;

/// Everything the WAL can fail with.
///
/// Corruption always names the file and the byte offset, so an operator can inspect the
/// spot (`xxd -s OFFSET FILE`) before deciding on a repair.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed.
    #[error("wal i/o error: {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "fsync", "create", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The disk is full (ENOSPC). Fatal for the writer like any other write error: the
    /// file may hold part of a batch, and only recovery may cut it.
    #[error("wal disk full: {op} {}: {source}", path.display())]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk that are not what this code wrote.
    #[error("wal corrupt: {} at byte offset {offset}: {kind}", file.display())]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// Offset of the header or frame that failed to decode.
        offset: u64,
        /// What is wrong there.
        kind: Corruption,
    },
    /// The writer stopped after a failed write or fsync. There is no safe retry (after
    /// a failed fsync the kernel may have dropped the dirty pages and cleared the
    /// error), so every later operation fails with the original cause until the process
    /// restarts and recovery decides what is on disk.
    #[error("wal writer stopped after a fatal error (restart to recover): {0}")]
    Fatal(Arc<WalError>),
    /// The WAL was closed.
    #[error("wal is closed")]
    Closed,
    /// An index below the first one still in the log (purged) was asked for.
    #[error("index {index} is outside the log [{first}, {next})")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// First index in the log.
        first: u64,
        /// Next index to be appended.
        next: u64,
    },
    /// `append_at` named a first index other than the log's next one.
    #[error("append at index {expected}, but the log's next index is {next}")]
    IndexMismatch {
        /// The index the caller expected its first record to get.
        expected: u64,
        /// The log's next index.
        next: u64,
    },
    /// A record larger than [`super::format::MAX_ENTRY_DATA`].
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A setting out of range.
    #[error("invalid wal option: {0}")]
    InvalidOption(String),
}

impl WalError {
    /// Wraps an I/O error, telling a full disk apart so it can be reported as such.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        let path = path.into();
        if is_disk_full(&source) {
            WalError::DiskFull { op, path, source }
        } else {
            WalError::Io { op, path, source }
        }
    }

    /// The error behind a [`WalError::Fatal`], or `self`.
    pub fn root(&self) -> &WalError {
        match self {
            WalError::Fatal(cause) => cause.root(),
            other => other,
        }
    }

    /// Whether the WAL can take no more writes after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalError::Fatal(_))
    }
}

/// Result with [`WalError`].
pub type WalResult<T> = Result<T, WalError>;
