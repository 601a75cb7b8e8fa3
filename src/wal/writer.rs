//! The single writer thread and its group commit (STYLE habit 12).
//!
//! Callers send [`Op`]s through a channel. The writer takes the first op, drains
//! whatever else is queued (up to `max_batch_bytes`), encodes every record into one
//! buffer, writes it with one call, fsyncs once, publishes the new records to readers
//! and completes every waiter, in log order. With N appenders waiting on a disk whose
//! fsync takes a few milliseconds, that is one fsync for up to N appends.
//!
//! A failed write or fsync is fatal. After `fsync` fails, Linux may have dropped the
//! dirty pages and cleared the error, so a retry could "succeed" over lost data (the
//! PostgreSQL fsyncgate lesson). The writer records the cause, logs it at error level,
//! fails every pending and queued op and exits; every later op fails with the same
//! cause. Only a restart, whose recovery reads what is really on disk, goes further.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::{Receiver, RecvTimeoutError, TryRecvError};
use parking_lot::{Mutex, RwLock};
use tracing::{debug, error, info};

use super::error::{WalError, WalResult};
use super::format::{encode_entry, entry_frame_len, FLAG_BASE, MAX_ENTRY_DATA};
use super::io::{write_all, WalFile, WalIo};
use super::segment::{create_segment, remove_segment, LogIndex};

/// When the writer fsyncs, which decides when an append is reported complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Complete an append only after the fsync that covers it: a completed append
    /// survives power loss. The only mode in which raft may count a vote or an entry.
    #[default]
    Always,
    /// Complete an append after its write (in the page cache, surviving a process crash
    /// but not power loss); fsync at most once per interval, and when idle.
    Interval(Duration),
    /// Complete after the write; fsync only when a segment is sealed, on `sync()` and on
    /// close. For tests and throwaway nodes.
    Never,
}

/// What the writer needs from the options.
#[derive(Debug, Clone)]
pub(super) struct WriterConfig {
    pub(super) dir: PathBuf,
    pub(super) segment_size: u64,
    pub(super) fsync: FsyncMode,
    pub(super) max_batch_bytes: usize,
}

/// State shared by the handle, the readers and the writer.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) index: RwLock<LogIndex>,
    /// Set once, by the writer, when it stops on a fatal error.
    pub(super) fatal: Mutex<Option<Arc<WalError>>>,
    /// What the writer's fsyncs cost and cover (for metrics).
    pub(super) stats: Mutex<WalStats>,
}

/// What the log's fsyncs cost and how much each covered: the figures operators of a
/// durable lock service watch (a slow disk shows here before it shows in latency).
#[derive(Debug, Clone)]
pub struct WalStats {
    /// fsyncs so far.
    pub fsyncs: u64,
    /// Each fsync's duration in microseconds.
    pub fsync_micros: hdrhistogram::Histogram<u64>,
    /// Records each fsync made durable (group commit's batch size).
    pub batch_records: hdrhistogram::Histogram<u64>,
}

impl Default for WalStats {
    fn default() -> Self {
        let h = || {
            hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2)
                .expect("static bounds are valid")
        };
        WalStats {
            fsyncs: 0,
            fsync_micros: h(),
            batch_records: h(),
        }
    }
}

impl Shared {
    /// The error for an op that the writer will never run.
    pub(super) fn stopped_error(&self) -> WalError {
        match &*self.fatal.lock() {
            Some(cause) => WalError::Fatal(cause.clone()),
            None => WalError::Closed,
        }
    }
}

/// A completion callback. Runs on the writer thread, so it must be quick: hand the
/// result to a channel or a oneshot, do no I/O.
pub type Callback<T> = Box<dyn FnOnce(WalResult<T>) + Send + 'static>;

/// A waiter that completes exactly once (STYLE habit 8): by `complete`, or, if it is
/// dropped unanswered (the writer died, the op sat in the channel when it closed), by
/// `Drop` with the reason the writer stopped.
pub(super) struct Reply<T> {
    callback: Option<Callback<T>>,
    shared: Arc<Shared>,
}

impl<T> Reply<T> {
    pub(super) fn new(callback: Callback<T>, shared: Arc<Shared>) -> Reply<T> {
        Reply {
            callback: Some(callback),
            shared,
        }
    }

    pub(super) fn complete(mut self, result: WalResult<T>) {
        if let Some(callback) = self.callback.take() {
            run_callback(callback, result);
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            run_callback(callback, Err(self.shared.stopped_error()));
        }
    }
}

/// Runs a caller's callback; a panic in it is logged and contained, so one bad
/// callback cannot take the writer (and everyone's durability) down.
fn run_callback<T>(callback: Callback<T>, result: WalResult<T>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || callback(result)));
    if outcome.is_err() {
        error!("wal: a completion callback panicked; the writer carries on");
    }
}

/// A request to the writer.
pub(super) enum Op {
    Append {
        /// Index the caller expects the first record to get (`append_at`).
        expected: Option<u64>,
        records: Vec<Vec<u8>>,
        reply: Reply<Range<u64>>,
    },
    Truncate {
        from: u64,
        reply: Reply<()>,
    },
    Purge {
        upto: u64,
        reply: Reply<()>,
    },
    Sync {
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Append { records, .. } => records.iter().map(|r| entry_frame_len(r.len())).sum(),
            _ => 0,
        }
    }
}

/// An append written (or refused) but not yet completed.
enum Pending {
    Done(Reply<Range<u64>>, Range<u64>),
    Refused(Reply<Range<u64>>, WalError),
}

/// Whether the loop goes on.
enum Flow {
    Continue,
    Stop,
}

/// The writer thread's state.
pub(super) struct Writer {
    io: Arc<dyn WalIo>,
    config: WriterConfig,
    shared: Arc<Shared>,
    rx: Receiver<Op>,
    /// Frames encoded and not yet written.
    buf: Vec<u8>,
    /// Offsets of the frames in `buf`, for the index.
    buf_offsets: Vec<u32>,
    /// The segment appends go to (the index's last segment).
    active: Arc<dyn WalFile>,
    active_path: PathBuf,
    /// Bytes in the active file (not counting `buf`).
    active_len: u64,
    /// Records in the active segment, counting those in `buf`.
    active_records: u64,
    /// Index the next record gets.
    next_index: u64,
    /// Bytes written to the active file since its last fsync.
    unsynced: bool,
    /// Records written since the last fsync (its batch size).
    records_since_sync: u64,
    last_sync: Instant,
}

impl Writer {
    pub(super) fn new(
        io: Arc<dyn WalIo>,
        config: WriterConfig,
        shared: Arc<Shared>,
        rx: Receiver<Op>,
    ) -> Writer {
        let (active, active_path, active_len, active_records, next_index) = {
            let index = shared.index.read();
            let last = index
                .segments
                .back()
                .expect("recovery leaves at least one segment");
            (
                last.file.clone(),
                last.path.clone(),
                last.len,
                last.offsets.len() as u64,
                last.end_index(),
            )
        };
        Writer {
            io,
            config,
            shared,
            rx,
            buf: Vec::new(),
            buf_offsets: Vec::new(),
            active,
            active_path,
            active_len,
            active_records,
            next_index,
            unsynced: false,
            records_since_sync: 0,
            last_sync: Instant::now(),
        }
    }

    /// The thread body.
    pub(super) fn run(mut self) {
        loop {
            let first = match self.next_op() {
                Ok(Some(op)) => op,
                Ok(None) => {
                    // Every handle is gone without a shutdown: leave the log durable.
                    if let Err(e) = self.sync_if_unsynced() {
                        self.poison(e);
                    }
                    return;
                }
                Err(e) => {
                    self.poison(e);
                    return;
                }
            };
            let mut batch = vec![first];
            let mut bytes = batch[0].bytes();
            while bytes < self.config.max_batch_bytes {
                match self.rx.try_recv() {
                    Ok(op) => {
                        bytes += op.bytes();
                        batch.push(op);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if let Flow::Stop = self.process(batch) {
                return;
            }
        }
    }

    /// Waits for the next op. In `Interval` mode with unsynced bytes it waits only until
    /// the interval is up, then fsyncs, so an idle log does not stay unsynced.
    fn next_op(&mut self) -> WalResult<Option<Op>> {
        loop {
            let interval = match self.config.fsync {
                FsyncMode::Interval(d) if self.unsynced => d,
                _ => return Ok(self.rx.recv()),
            };
            let wait = interval.saturating_sub(self.last_sync.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(op) => return Ok(Some(op)),
                Err(RecvTimeoutError::Timeout) => self.sync_active()?,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// Runs one batch in order. Appends accumulate into a group; any other op first
    /// flushes the group so it sees every append before it.
    fn process(&mut self, batch: Vec<Op>) -> Flow {
        let mut group: Vec<Pending> = Vec::new();
        for op in batch {
            // Replies stay in this frame until the step's result is known, so that on a
            // fatal error they are dropped only after `poison` has set the cause.
            let step = match op {
                Op::Append {
                    expected,
                    records,
                    reply,
                } => self
                    .stage(expected, records, reply, &mut group)
                    .map_err(|e| (e, None)),
                Op::Sync { reply } => match self.flush(&mut group, true) {
                    Ok(()) => {
                        reply.complete(Ok(()));
                        Ok(Flow::Continue)
                    }
                    Err(e) => Err((e, Some(reply))),
                },
                Op::Truncate { from, reply } => {
                    match self
                        .flush(&mut group, false)
                        .and_then(|()| self.truncate(from))
                    {
                        Ok(result) => {
                            reply.complete(result);
                            Ok(Flow::Continue)
                        }
                        Err(e) => Err((e, Some(reply))),
                    }
                }
                Op::Purge { upto, reply } => {
                    match self
                        .flush(&mut group, false)
                        .and_then(|()| self.purge(upto))
                    {
                        Ok(result) => {
                            reply.complete(result);
                            Ok(Flow::Continue)
                        }
                        Err(e) => Err((e, Some(reply))),
                    }
                }
                Op::Shutdown { reply } => match self.flush(&mut group, true) {
                    Ok(()) => {
                        info!(
                            dir = %self.config.dir.display(),
                            next_index = self.next_index,
                            "wal closed",
                        );
                        reply.complete(Ok(()));
                        Ok(Flow::Stop)
                    }
                    Err(e) => Err((e, Some(reply))),
                },
            };
            match step {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop) => return Flow::Stop,
                Err((e, reply)) => {
                    // Set the cause before this reply, `group` and the rest of the batch
                    // drop, so their waiters get it.
                    self.poison(e);
                    drop(reply);
                    return Flow::Stop;
                }
            }
        }
        match self.flush(&mut group, false) {
            Ok(()) => Flow::Continue,
            Err(e) => {
                self.poison(e);
                Flow::Stop
            }
        }
    }

    /// Encodes an append's records into the buffer, rolling to a new segment when the
    /// active one is full. Refusals (wrong index, oversized record) are not fatal and
    /// are completed in order with the group.
    fn stage(
        &mut self,
        expected: Option<u64>,
        records: Vec<Vec<u8>>,
        reply: Reply<Range<u64>>,
        group: &mut Vec<Pending>,
    ) -> WalResult<Flow> {
        if let Some(expected) = expected {
            if expected != self.next_index {
                let next = self.next_index;
                group.push(Pending::Refused(
                    reply,
                    WalError::IndexMismatch { expected, next },
                ));
                return Ok(Flow::Continue);
            }
        }
        if let Some(big) = records.iter().find(|r| r.len() > MAX_ENTRY_DATA) {
            let err = WalError::RecordTooLarge {
                len: big.len(),
                max: MAX_ENTRY_DATA,
            };
            group.push(Pending::Refused(reply, err));
            return Ok(Flow::Continue);
        }
        // The reply joins the group before any I/O, so that if a rollover fails it is
        // still owned by `process` and fails with the fatal cause.
        let start = self.next_index;
        let Some(end) = start.checked_add(records.len() as u64) else {
            // Only a purge to the very end of the index space gets here: refuse rather
            // than wrap (the next index must stay above every index in the log).
            let err = WalError::OutOfRange {
                index: start,
                first: self.shared.index.read().first_index,
                next: start,
            };
            group.push(Pending::Refused(reply, err));
            return Ok(Flow::Continue);
        };
        group.push(Pending::Done(reply, start..end));
        for data in &records {
            let frame_len = entry_frame_len(data.len()) as u64;
            let end = self.active_len + self.buf.len() as u64 + frame_len;
            if self.active_records > 0 && end > self.config.segment_size {
                self.roll(self.next_index, 0)?;
            }
            let offset = self.active_len + self.buf.len() as u64;
            self.buf_offsets
                .push(u32::try_from(offset).expect("segment size is capped below 4 GiB"));
            encode_entry(&mut self.buf, self.next_index, data);
            self.next_index += 1;
            self.active_records += 1;
            self.records_since_sync += 1;
        }
        Ok(Flow::Continue)
    }

    /// Writes the buffer to the active segment and records the offsets in the index
    /// (still invisible: `next_index` in the index moves only on completion).
    fn write_buf(&mut self) -> WalResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        write_all(self.active.as_ref(), &self.buf)
            .map_err(|e| WalError::io("write", &self.active_path, e))?;
        self.active_len += self.buf.len() as u64;
        self.unsynced = true;
        self.buf.clear();
        let mut index = self.shared.index.write();
        let last = index
            .segments
            .back_mut()
            .expect("the log always has a segment");
        last.offsets.append(&mut self.buf_offsets);
        last.len = self.active_len;
        Ok(())
    }

    fn sync_active(&mut self) -> WalResult<()> {
        let began = Instant::now();
        self.active
            .sync()
            .map_err(|e| WalError::io("fsync", &self.active_path, e))?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        let micros = (self.last_sync - began).as_micros() as u64;
        let records = std::mem::take(&mut self.records_since_sync);
        let mut stats = self.shared.stats.lock();
        stats.fsyncs += 1;
        stats.fsync_micros.saturating_record(micros.max(1));
        stats.batch_records.saturating_record(records.max(1));
        Ok(())
    }

    fn sync_if_unsynced(&mut self) -> WalResult<()> {
        self.write_buf()?;
        if self.unsynced {
            self.sync_active()?;
        }
        Ok(())
    }

    /// Writes the group, fsyncs as the mode says, publishes and completes it in order.
    fn flush(&mut self, group: &mut Vec<Pending>, force_sync: bool) -> WalResult<()> {
        self.write_buf()?;
        let sync_first = force_sync || matches!(self.config.fsync, FsyncMode::Always);
        if sync_first && self.unsynced {
            self.sync_active()?;
        }
        self.shared.index.write().next_index = self.next_index;
        if !group.is_empty() {
            debug!(
                appends = group.len(),
                next_index = self.next_index,
                "wal group committed"
            );
        }
        for pending in group.drain(..) {
            match pending {
                Pending::Done(reply, range) => reply.complete(Ok(range)),
                Pending::Refused(reply, err) => reply.complete(Err(err)),
            }
        }
        if let FsyncMode::Interval(interval) = self.config.fsync {
            if self.unsynced && self.last_sync.elapsed() >= interval {
                self.sync_active()?;
            }
        }
        Ok(())
    }

    /// Seals the active segment (fsynced in every mode, so only the last segment can
    /// ever have a torn tail) and starts a new one at `first_index`.
    fn roll(&mut self, first_index: u64, flags: u32) -> WalResult<()> {
        self.write_buf()?;
        self.sync_active()?;
        let segment = create_segment(self.io.as_ref(), &self.config.dir, first_index, flags)?;
        debug!(file = %segment.path.display(), first_index, "wal segment created");
        self.active = segment.file.clone();
        self.active_path = segment.path.clone();
        self.active_len = segment.len;
        self.active_records = 0;
        self.shared.index.write().segments.push_back(segment);
        Ok(())
    }

    /// Drops every record at or after `from`. The outer result is fatal (I/O); the
    /// inner one is the caller's (out of range).
    fn truncate(&mut self, from: u64) -> WalResult<WalResult<()>> {
        let io = self.io.clone();
        let dir = self.config.dir.clone();
        let mut index = self.shared.index.write();
        if from >= self.next_index {
            return Ok(Ok(()));
        }
        if from < index.first_index {
            return Ok(Err(WalError::OutOfRange {
                index: from,
                first: index.first_index,
                next: self.next_index,
            }));
        }
        // Newest first, so a crash midway leaves a shorter but contiguous log.
        while index.segments.len() > 1
            && index.segments.back().is_some_and(|s| s.first_index >= from)
        {
            let seg = index.segments.pop_back().expect("checked non-empty");
            remove_segment(io.as_ref(), &dir, &seg.path)?;
        }
        let last = index
            .segments
            .back_mut()
            .expect("the log always has a segment");
        let pos = usize::try_from(from - last.first_index).expect("position fits in memory");
        let cut = last
            .offsets
            .get(pos)
            .map_or(last.len, |&off| u64::from(off));
        last.file
            .truncate(cut)
            .map_err(|e| WalError::io("truncate", &last.path, e))?;
        last.file
            .sync()
            .map_err(|e| WalError::io("fsync", &last.path, e))?;
        last.offsets.truncate(pos);
        last.len = cut;
        self.active = last.file.clone();
        self.active_path = last.path.clone();
        self.active_len = cut;
        self.active_records = last.offsets.len() as u64;
        index.next_index = from;
        self.next_index = from;
        self.unsynced = false;
        info!(from, "wal truncated");
        Ok(Ok(()))
    }

    /// Drops every record up to and including `upto`, deleting whole segments.
    fn purge(&mut self, upto: u64) -> WalResult<WalResult<()>> {
        let first = self.shared.index.read().first_index;
        if upto < first {
            return Ok(Ok(()));
        }
        let Some(new_first) = upto.checked_add(1) else {
            return Ok(Err(WalError::OutOfRange {
                index: upto,
                first,
                next: self.next_index,
            }));
        };
        if new_first >= self.next_index {
            // Everything goes, possibly past the end (a snapshot from the leader). Start
            // a base segment at `new_first` first, durably; then delete the rest.
            let reuse = self.active_records == 0
                && self
                    .shared
                    .index
                    .read()
                    .segments
                    .back()
                    .map(|s| s.first_index)
                    == Some(new_first);
            if !reuse {
                self.roll(new_first, FLAG_BASE)?;
            }
            self.next_index = new_first;
        }
        let io = self.io.clone();
        let dir = self.config.dir.clone();
        let mut index = self.shared.index.write();
        // Oldest first: a crash midway leaves a contiguous log with a later start.
        while index.segments.len() > 1 && index.segments[1].first_index <= new_first {
            let seg = index.segments.pop_front().expect("checked non-empty");
            remove_segment(io.as_ref(), &dir, &seg.path)?;
        }
        index.first_index = new_first;
        index.next_index = self.next_index;
        info!(upto, segments = index.segments.len(), "wal purged");
        Ok(Ok(()))
    }

    /// Stops the writer for good: records the cause, says so loudly, and from here on
    /// every waiter, queued or future, gets `WalError::Fatal` with this cause.
    fn poison(&mut self, err: WalError) {
        error!(
            error = %err,
            dir = %self.config.dir.display(),
            "wal writer FAILED and stopped: no further writes will be accepted; records \
             not yet acknowledged may be lost; restart the node to recover from disk",
        );
        let cause = Arc::new(err);
        *self.shared.fatal.lock() = Some(cause);
        // Fail whatever is queued now; later sends fail on the closed channel.
        while let Ok(op) = self.rx.try_recv() {
            drop(op);
        }
    }
}
