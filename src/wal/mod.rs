//! The write-ahead log: segment files of checksummed records, one writer thread doing
//! group commit, recovery that cuts a torn tail and refuses other corruption, a vote
//! file and a snapshot container.
//!
//! The shape follows openraft's `RaftLogStorage` so the raft layer can sit on top:
//! `append` completes after fsync, in log order, through a callback (openraft's
//! `LogFlushed`); `read` serves `try_get_log_entries`; `truncate` drops a suffix,
//! `purge` a prefix; `save_vote`/`read_vote` keep the vote. Records are opaque bytes;
//! the raft layer serializes entries, the engine serializes snapshots.
//!
//! Modules:
//! - [`format`]: every on-disk layout (segment header, record frame, vote, snapshot).
//! - `io`: the file-system trait, the real implementation and a fault-injecting one.
//! - `reader`: recovery. `writer`: the writer thread. `segment`: the in-memory index.
//! - `snapshot`: the snapshot store.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use turnstile::wal::{Wal, WalOptions};
//! let (wal, _report) = Wal::open(WalOptions::new("/var/lib/turnstile/wal"))?;
//! let indexes = wal.append(vec![b"cmd".to_vec()]).wait()?; // durable now
//! let records = wal.read(indexes)?;
//! # Ok(()) }
//! ```

mod error;
pub mod format;
mod io;
mod queue;
mod reader;
mod segment;
mod snapshot;
mod vote;
mod writer;

#[cfg(test)]
mod tests;

use std::ops::{Bound, Range, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel;
use parking_lot::{Mutex, RwLock};
use queue::Sender;

pub use error::{WalError, WalResult};
pub use io::{is_disk_full, FaultIo, FsIo, IoStats, WalFile, WalIo, ENOSPC};
pub use reader::{RecoveryMode, RecoveryReport, TailCut};
pub use segment::Record;
pub use snapshot::{Snapshot, SnapshotMeta, SnapshotStore};
pub use writer::{Callback, FsyncMode, WalStats};

use segment::LogIndex;
use writer::{Op, Reply, Shared, Writer, WriterConfig};

/// Smallest segment size accepted: room for a header and a few small records.
pub const MIN_SEGMENT_SIZE: u64 = 256;
/// Largest segment size accepted: offsets inside a segment are `u32`.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// How to open a WAL.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// The directory holding the segments and the vote file (created if missing).
    pub dir: PathBuf,
    /// A segment is sealed and a new one started once the next record would take it past
    /// this many bytes. Purge deletes whole segments, so this is also its granularity.
    pub segment_size: u64,
    /// When appends are fsynced and completed.
    pub fsync: FsyncMode,
    /// What recovery does with corruption.
    pub recovery: RecoveryMode,
    /// Index of the first record of a brand-new log (openraft starts at 0).
    pub first_index: u64,
    /// The writer stops draining its queue into one batch past this many bytes, bounding
    /// the latency one batch adds to the next.
    pub max_batch_bytes: usize,
}

impl WalOptions {
    /// Defaults: 64 MiB segments, fsync always, tolerate a torn tail, first index 1,
    /// batches of up to 4 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            segment_size: 64 << 20,
            fsync: FsyncMode::Always,
            recovery: RecoveryMode::TolerateTailCorruption,
            first_index: 1,
            max_batch_bytes: 4 << 20,
        }
    }

    fn validate(&self) -> WalResult<()> {
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size) {
            return Err(WalError::InvalidOption(format!(
                "segment_size {} is outside [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]",
                self.segment_size
            )));
        }
        if self.max_batch_bytes == 0 {
            return Err(WalError::InvalidOption(
                "max_batch_bytes must be > 0".into(),
            ));
        }
        if matches!(self.fsync, FsyncMode::Interval(d) if d.is_zero()) {
            return Err(WalError::InvalidOption(
                "fsync interval must be > 0 (use FsyncMode::Always)".into(),
            ));
        }
        Ok(())
    }
}

/// The indexes in the log: `[first_index, next_index)` can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    /// First readable index (raised by `purge`).
    pub first_index: u64,
    /// The index the next appended record gets.
    pub next_index: u64,
}

/// A pending result, for callers that can block (tests, tools, a blocking thread).
/// Async callers use the `*_with` methods and complete their own oneshot instead.
#[derive(Debug)]
#[must_use = "an append is not known durable until its completion is waited for"]
pub struct Completion<T> {
    rx: channel::Receiver<WalResult<T>>,
}

impl<T> Completion<T> {
    fn new() -> (Completion<T>, Callback<T>)
    where
        T: Send + 'static,
    {
        let (tx, rx) = channel::bounded(1);
        let callback: Callback<T> = Box::new(move |result| {
            // The receiver may be gone (the caller stopped caring); nothing to do then.
            let _ = tx.send(result);
        });
        (Completion { rx }, callback)
    }

    /// Blocks until the op completes.
    pub fn wait(self) -> WalResult<T> {
        // Every callback runs exactly once (see `Reply`), so the channel only closes
        // empty if the writer thread itself panicked.
        self.rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// The result, if the op has completed.
    pub fn try_take(&self) -> Option<WalResult<T>> {
        self.rx.try_recv().ok()
    }
}

/// The write-ahead log. Share it behind an `Arc`; every method takes `&self`.
///
/// Dropping it flushes and fsyncs what was written, then stops the writer thread; use
/// [`Wal::close`] to see whether that final fsync worked.
#[derive(Debug)]
pub struct Wal {
    tx: Sender<Op>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    io: Arc<dyn WalIo>,
    dir: PathBuf,
    /// Serializes vote saves (they share the temp file name).
    vote_lock: Mutex<()>,
}

impl Wal {
    /// Opens (recovering) or creates the WAL in `options.dir` on the real file system.
    pub fn open(options: WalOptions) -> WalResult<(Wal, RecoveryReport)> {
        Wal::open_with_io(options, Arc::new(FsIo::new()))
    }

    /// Opens the WAL through `io` (a [`FaultIo`] in tests).
    pub fn open_with_io(
        options: WalOptions,
        io: Arc<dyn WalIo>,
    ) -> WalResult<(Wal, RecoveryReport)> {
        options.validate()?;
        let dir = options.dir.clone();
        let (segments, report) =
            reader::recover(io.as_ref(), &dir, options.recovery, options.first_index)?;
        vote::remove_if_exists(io.as_ref(), &dir.join(format::VOTE_TMP_FILE))?;
        let shared = Arc::new(Shared {
            index: RwLock::new(LogIndex {
                segments,
                first_index: report.first_index,
                next_index: report.next_index,
            }),
            fatal: Mutex::new(None),
            stats: Mutex::new(WalStats::default()),
        });
        let (tx, rx) = queue::unbounded();
        let config = WriterConfig {
            dir: dir.clone(),
            segment_size: options.segment_size,
            fsync: options.fsync,
            max_batch_bytes: options.max_batch_bytes,
        };
        let writer = Writer::new(io.clone(), config, shared.clone(), rx);
        let handle = std::thread::Builder::new()
            .name("turnstile-wal".into())
            .spawn(move || writer.run())
            .map_err(|e| WalError::io("spawn writer thread", &dir, e))?;
        Ok((
            Wal {
                tx,
                shared,
                writer: Some(handle),
                io,
                dir,
                vote_lock: Mutex::new(()),
            },
            report,
        ))
    }

    /// fsync latency and batch size so far.
    pub fn stats(&self) -> WalStats {
        self.shared.stats.lock().clone()
    }

    fn submit(&self, op: Op) {
        // If the writer is gone the op comes back; dropping it completes its reply
        // with the reason (see `Reply`'s `Drop`).
        if let Err(queue::SendError(op)) = self.tx.send(op) {
            drop(op);
        }
    }

    fn reply<T>(&self, callback: Callback<T>) -> Reply<T> {
        Reply::new(callback, self.shared.clone())
    }

    /// Appends records; they get consecutive indexes. The completion gives the indexes
    /// (`first..end`) once the records are durable (per [`FsyncMode`]).
    pub fn append(&self, records: Vec<Vec<u8>>) -> Completion<Range<u64>> {
        let (completion, callback) = Completion::new();
        self.append_with(records, callback);
        completion
    }

    /// Appends records and calls `callback` on the writer thread when they are durable.
    /// Callbacks run in log order, each exactly once, also on failure.
    pub fn append_with(
        &self,
        records: Vec<Vec<u8>>,
        callback: impl FnOnce(WalResult<Range<u64>>) + Send + 'static,
    ) {
        let reply = self.reply(Box::new(callback));
        self.submit(Op::Append {
            expected: None,
            records,
            reply,
        });
    }

    /// Appends records that must start at `first_index` (raft entries carry their
    /// index). If the log's next index differs, this append fails with
    /// [`WalError::IndexMismatch`] and writes nothing; the log carries on.
    pub fn append_at(
        &self,
        first_index: u64,
        records: Vec<Vec<u8>>,
        callback: impl FnOnce(WalResult<Range<u64>>) + Send + 'static,
    ) {
        let reply = self.reply(Box::new(callback));
        self.submit(Op::Append {
            expected: Some(first_index),
            records,
            reply,
        });
    }

    /// Reads the records in `range` that are in the log (indexes outside it are
    /// skipped). Only completed appends are visible.
    pub fn read(&self, range: impl RangeBounds<u64>) -> WalResult<Vec<Record>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        self.shared.index.read().read(start, end)
    }

    /// Drops every record with index `>= from` (raft: a conflicting suffix). Ordered
    /// after every append submitted before it.
    pub fn truncate(&self, from: u64) -> Completion<()> {
        let (completion, callback) = Completion::new();
        self.truncate_with(from, callback);
        completion
    }

    /// [`Wal::truncate`] with a callback.
    pub fn truncate_with(&self, from: u64, callback: impl FnOnce(WalResult<()>) + Send + 'static) {
        let reply = self.reply(Box::new(callback));
        self.submit(Op::Truncate { from, reply });
    }

    /// Drops every record with index `<= upto` (after a snapshot that includes them).
    /// Readers stop seeing them at once; the files go when a whole segment is covered.
    /// Purging past the end of the log moves the next index to `upto + 1`.
    pub fn purge(&self, upto: u64) -> Completion<()> {
        let (completion, callback) = Completion::new();
        self.purge_with(upto, callback);
        completion
    }

    /// [`Wal::purge`] with a callback.
    pub fn purge_with(&self, upto: u64, callback: impl FnOnce(WalResult<()>) + Send + 'static) {
        let reply = self.reply(Box::new(callback));
        self.submit(Op::Purge { upto, reply });
    }

    /// Writes and fsyncs everything appended so far, whatever the [`FsyncMode`].
    pub fn sync(&self) -> Completion<()> {
        let (completion, callback) = Completion::new();
        let reply = self.reply(callback);
        self.submit(Op::Sync { reply });
        completion
    }

    /// Saves the raft vote durably (its own file, not behind the append queue). Blocks
    /// for two fsyncs; async callers run it on a blocking thread. An error here means
    /// the vote may not be durable: the caller must not act on the vote.
    pub fn save_vote(&self, vote: &[u8]) -> WalResult<()> {
        let _guard = self.vote_lock.lock();
        vote::save_vote(self.io.as_ref(), &self.dir, vote)
    }

    /// The last saved vote, if any.
    pub fn read_vote(&self) -> WalResult<Option<Vec<u8>>> {
        let _guard = self.vote_lock.lock();
        vote::read_vote(self.io.as_ref(), &self.dir)
    }

    /// The readable range and the next index.
    pub fn state(&self) -> LogState {
        let index = self.shared.index.read();
        LogState {
            first_index: index.first_index,
            next_index: index.next_index,
        }
    }

    /// Index of the last readable record, `None` when the log holds none (new, or
    /// purged to its end; then the snapshot's index is the last one).
    pub fn last_index(&self) -> Option<u64> {
        let state = self.state();
        (state.next_index > state.first_index).then(|| state.next_index - 1)
    }

    /// The error that stopped the writer, if it stopped on one.
    pub fn fatal_error(&self) -> Option<Arc<WalError>> {
        self.shared.fatal.lock().clone()
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes, fsyncs and stops the writer; the error says if the final fsync failed
    /// (or the writer had already stopped on one).
    pub fn close(mut self) -> WalResult<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> WalResult<()> {
        let Some(handle) = self.writer.take() else {
            return Ok(());
        };
        let (completion, callback) = Completion::new();
        let reply = self.reply(callback);
        self.submit(Op::Shutdown { reply });
        let result = completion.wait();
        if handle.join().is_err() {
            tracing::error!("wal writer thread panicked");
        }
        match result {
            Err(WalError::Closed) => Ok(()),
            other => other,
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "wal: final flush on drop failed");
        }
    }
}
