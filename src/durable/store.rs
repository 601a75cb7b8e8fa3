//! The store: the lock table and, unless the server runs in memory, the log in front of
//! it. Every state change goes through here.
//!
//! With a log, changes are sequenced: under one mutex a command is applied to the table
//! and its record handed to the WAL writer, so the log order is the apply order, which is
//! what makes replay exact. The caller gets a [`Ticket`], the record's log index, and
//! must not reply (or push anything that depends on the change) before
//! [`Store::durable`] says the log has it. Commands that change nothing are not logged;
//! their ticket is the last index assigned, since their reply may depend on changes that
//! are not durable yet. Group commit comes from the WAL writer: it drains every record
//! handed to it meanwhile, writes them, fsyncs once and completes them all.
//!
//! This is the small interface the replication issue will put openraft behind: propose
//! (here: apply and append), learn the index and when it is durable, apply in log order.
//!
//! Without a log (`--in-memory`) the table is called directly and tickets are 0.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{error, info, warn};

use super::command::{apply, fired_from, Applied, Command, Entry, LimitsSet, SessionKind};
use super::image_codec::{self, State};
use super::watermark::{LogFailed, Watermark};
use crate::engine::{
    AcquireOutcome, AcquireRequest, Event, FencingToken, LimitKind, LockTable, Mode, MultiOutcome,
    MultiRequest, NotHeld, RequestId, SessionId,
};
use crate::wal::{SnapshotStore, Wal};

/// A log index to wait for before replying (0: nothing to wait for).
pub type Ticket = u64;

/// What the sequencer mutex protects.
struct Seq {
    /// Index the next record gets.
    next: u64,
    /// Largest `now` applied: logged times never go backwards.
    last_now: u64,
    /// Open sessions and their kinds (for snapshots and recovery).
    sessions: BTreeMap<SessionId, SessionKind>,
    /// Limits set at runtime (for snapshots).
    limits: LimitsSet,
    /// Largest request id logged.
    max_request: u64,
    /// Records since the last snapshot was started.
    since_snapshot: u64,
    /// Records assigned but not yet handed to the WAL writer (see [`Store::flush`]).
    pending: Vec<Vec<u8>>,
    /// Index of the first pending record.
    pending_first: u64,
}

/// Pending records are handed to the writer at the latest when this many accumulate.
const MAX_PENDING: usize = 256;

/// The log side of a store.
pub(super) struct Journal {
    seq: Mutex<Seq>,
    /// Last index assigned, readable without the mutex.
    assigned: AtomicU64,
    /// Last index handed to the WAL writer.
    flushed: AtomicU64,
    wal: Arc<Wal>,
    snapshots: Arc<SnapshotStore>,
    watermark: Arc<Watermark>,
    epoch: u64,
    snapshot_every: u64,
    snapshotting: Arc<AtomicBool>,
    /// Last index of the newest snapshot saved (0: none), and how many were saved.
    snapshot_index: Arc<AtomicU64>,
    snapshots_saved: Arc<AtomicU64>,
    /// How long the newest snapshot took, drawing to saved, in ms.
    snapshot_last_ms: Arc<AtomicU64>,
    fsync: crate::wal::FsyncMode,
    /// What recovery did at startup, for INFO.
    recovery: std::sync::OnceLock<RecoverySummary>,
}

/// What recovery did at startup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Last index of the snapshot loaded (0: none).
    pub snapshot_index: u64,
    /// Log records replayed after it.
    pub replayed_records: u64,
    /// Holds restored.
    pub restored_holds: u64,
    /// Sessions restored.
    pub restored_sessions: u64,
    /// How long recovery took.
    pub elapsed_ms: u64,
}

/// What INFO's persistence section shows.
#[derive(Clone, Debug)]
pub struct PersistenceInfo {
    /// The data directory.
    pub dir: std::path::PathBuf,
    /// The fsync mode.
    pub fsync: crate::wal::FsyncMode,
    /// This start's epoch.
    pub epoch: u64,
    /// Last log index assigned.
    pub last_index: u64,
    /// Last log index durable.
    pub durable_index: u64,
    /// First index still in the log files.
    pub first_index: u64,
    /// Last index of the newest snapshot (0: none).
    pub snapshot_index: u64,
    /// Snapshots saved since start.
    pub snapshots_saved: u64,
    /// Whether a snapshot is being written.
    pub snapshot_in_progress: bool,
    /// How long the newest snapshot took, drawing to saved, in ms.
    pub snapshot_last_ms: u64,
    /// fsync latency and batch size of the log.
    pub wal: crate::wal::WalStats,
    /// What recovery did.
    pub recovery: RecoverySummary,
}

/// See the module docs.
pub struct Store {
    table: LockTable,
    journal: Option<Journal>,
}

/// How a journal starts (from recovery).
pub(super) struct JournalStart {
    pub wal: Wal,
    pub snapshots: SnapshotStore,
    pub next_index: u64,
    pub last_now: u64,
    pub sessions: BTreeMap<SessionId, SessionKind>,
    pub limits: LimitsSet,
    pub max_request: u64,
    pub epoch: u64,
    pub snapshot_every: u64,
    pub snapshot_index: u64,
    pub fsync: crate::wal::FsyncMode,
}

/// Scheduler rounds a task waiting for durability yields before it flushes (see
/// [`Store::durable`]). One round was the first choice; four let more connections join a
/// batch: `loadgen uncontended -t turnstile` (server on CPU 0, load on CPU 1, fsync
/// always), two runs each: 16 connections 23.6K / 22.1K pairs/s against 18.6K / 18.7K
/// (22 instead of 15 records per fsync); 1, 4 and 64 connections and one hot key with 64
/// unchanged within the noise (64 is bound by the server's core).
const FLUSH_YIELDS: usize = 4;

impl Store {
    /// A store without a log.
    pub fn in_memory(table: LockTable) -> Store {
        Store {
            table,
            journal: None,
        }
    }

    pub(super) fn with_journal(table: LockTable, start: JournalStart) -> Store {
        let durable = start.next_index.saturating_sub(1);
        Store {
            table,
            journal: Some(Journal {
                seq: Mutex::new(Seq {
                    next: start.next_index,
                    last_now: start.last_now,
                    sessions: start.sessions,
                    limits: start.limits,
                    max_request: start.max_request,
                    since_snapshot: 0,
                    pending: Vec::with_capacity(MAX_PENDING),
                    pending_first: start.next_index,
                }),
                assigned: AtomicU64::new(durable),
                flushed: AtomicU64::new(durable),
                wal: Arc::new(start.wal),
                snapshots: Arc::new(start.snapshots),
                watermark: Arc::new(Watermark::new(durable)),
                epoch: start.epoch,
                snapshot_every: start.snapshot_every.max(1),
                snapshotting: Arc::new(AtomicBool::new(false)),
                snapshot_index: Arc::new(AtomicU64::new(start.snapshot_index)),
                snapshots_saved: Arc::new(AtomicU64::new(0)),
                snapshot_last_ms: Arc::new(AtomicU64::new(0)),
                fsync: start.fsync,
                recovery: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The lock table, for reads (INSPECT, LOCKS, INFO). Changes go through the store.
    pub fn table(&self) -> &LockTable {
        &self.table
    }

    /// Whether a log backs the table.
    pub fn is_durable(&self) -> bool {
        self.journal.is_some()
    }

    /// The ticket of a read: the last index assigned (a read may show changes that are
    /// not durable yet, so its reply waits for them).
    pub fn read_ticket(&self) -> Ticket {
        self.journal
            .as_ref()
            .map_or(0, |j| j.assigned.load(Ordering::Acquire))
    }

    /// Waits until everything up to `ticket` is durable.
    ///
    /// Group commit starts here: records wait in the sequencer until someone needs one
    /// of them durable. That task first yields [`FLUSH_YIELDS`] scheduler rounds, so every
    /// other task ready on its worker (other connections' commands, arrived in the same
    /// turn, and the connections just answered, whose clients send their next command at
    /// once) can add records, and then hands them all to the WAL writer as one batch: one
    /// write, one fsync. Redis gets the same batching from its event loop's `beforeSleep`.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), LogFailed> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        if ticket == 0 || j.watermark.get() >= ticket {
            return Ok(());
        }
        if j.flushed.load(Ordering::Acquire) < ticket {
            for _ in 0..FLUSH_YIELDS {
                tokio::task::yield_now().await;
            }
            if j.flushed.load(Ordering::Acquire) < ticket {
                self.flush();
            }
        }
        j.watermark.wait(ticket).await
    }

    /// Hands every pending record to the WAL writer.
    pub fn flush(&self) {
        if let Some(j) = &self.journal {
            let mut seq = j.seq.lock();
            Self::flush_locked(j, &mut seq);
        }
    }

    fn flush_locked(j: &Journal, seq: &mut Seq) {
        if seq.pending.is_empty() {
            return;
        }
        let records = std::mem::replace(&mut seq.pending, Vec::with_capacity(MAX_PENDING));
        let first = seq.pending_first;
        seq.pending_first = seq.next;
        j.flushed.store(seq.next - 1, Ordering::Release);
        let watermark = j.watermark.clone();
        j.wal.append_with(records, move |result| match result {
            Ok(range) => {
                debug_assert_eq!(range.start, first, "the sequencer predicts WAL indexes");
                watermark.complete(range.end - 1);
            }
            Err(e) => {
                error!(error = %e, "write-ahead log failed: no reply will be acknowledged from now on");
                watermark.fail(e.to_string());
            }
        });
    }

    /// The log's state for INFO (None in memory).
    pub fn persistence(&self) -> Option<PersistenceInfo> {
        let j = self.journal.as_ref()?;
        let log = j.wal.state();
        Some(PersistenceInfo {
            dir: j.wal.dir().parent().unwrap_or(j.wal.dir()).to_path_buf(),
            fsync: j.fsync,
            epoch: j.epoch,
            last_index: j.assigned.load(Ordering::Acquire),
            durable_index: j.watermark.get(),
            first_index: log.first_index,
            snapshot_index: j.snapshot_index.load(Ordering::Relaxed),
            snapshots_saved: j.snapshots_saved.load(Ordering::Relaxed),
            snapshot_in_progress: j.snapshotting.load(Ordering::Relaxed),
            snapshot_last_ms: j.snapshot_last_ms.load(Ordering::Relaxed),
            wal: j.wal.stats(),
            recovery: j.recovery.get().copied().unwrap_or_default(),
        })
    }

    pub(super) fn set_recovery(&self, summary: RecoverySummary) {
        if let Some(j) = &self.journal {
            let _ = j.recovery.set(summary);
        }
    }

    /// The watermark, for waiting on a failure.
    pub fn watermark(&self) -> Option<Arc<Watermark>> {
        self.journal.as_ref().map(|j| j.watermark.clone())
    }

    /// Opens a session.
    pub fn open_session(&self, kind: SessionKind, now: u64) -> (SessionId, Ticket) {
        let Some(j) = &self.journal else {
            return (self.table.open_session(), 0);
        };
        let mut seq = j.seq.lock();
        let now = seq.now(now);
        let session = self.table.open_session();
        seq.sessions.insert(session, kind.clone());
        let t = self.commit(
            j,
            &mut seq,
            &Entry {
                now,
                command: Command::OpenSession { session, kind },
            },
        );
        (session, t)
    }

    /// Ends a session: queued requests cancelled, holds released (grants in `events`).
    pub fn close_session(&self, session: SessionId, now: u64, events: &mut Vec<Event>) -> Ticket {
        let Some(j) = &self.journal else {
            self.table.close_session(session, now, events);
            return 0;
        };
        let mut seq = j.seq.lock();
        if seq.sessions.remove(&session).is_none() {
            return seq.next - 1;
        }
        let entry = Entry {
            now: seq.now(now),
            command: Command::CloseSession { session },
        };
        apply(&self.table, &entry, events);
        self.commit(j, &mut seq, &entry)
    }

    /// ADMIN END-SESSION: ends a session as [`Self::close_session`] does, logged with
    /// the user that asked. False if the log has no such session open (without a log:
    /// always true, the caller knows which sessions exist).
    pub fn end_session(
        &self,
        session: SessionId,
        user: &str,
        now: u64,
        events: &mut Vec<Event>,
    ) -> (bool, Ticket) {
        let Some(j) = &self.journal else {
            self.table.close_session(session, now, events);
            return (true, 0);
        };
        let mut seq = j.seq.lock();
        if seq.sessions.remove(&session).is_none() {
            return (false, seq.next - 1);
        }
        let entry = Entry {
            now: seq.now(now),
            command: Command::EndSession { session, user },
        };
        apply(&self.table, &entry, events);
        (true, self.commit(j, &mut seq, &entry))
    }

    /// ADMIN FORCE-RELEASE: drops every hold `key` has now (grants in `events`) and
    /// returns them. Nothing is logged when the key has no holder.
    pub fn force_release(
        &self,
        key: &[u8],
        user: &str,
        now: u64,
        events: &mut Vec<Event>,
    ) -> (Vec<(SessionId, FencingToken)>, Ticket) {
        let Some(j) = &self.journal else {
            let holds = self.table.holders(key);
            return (self.table.force_release(key, &holds, now, events), 0);
        };
        // The holders are read under the sequencer, so the record lists exactly the
        // holds it drops.
        let mut seq = j.seq.lock();
        let holds = self.table.holders(key);
        if holds.is_empty() {
            return (Vec::new(), seq.next - 1);
        }
        let entry = Entry {
            now: seq.now(now),
            command: Command::ForceRelease { key, user, holds },
        };
        let dropped = match apply(&self.table, &entry, events) {
            Applied::ForceRelease(dropped) => dropped,
            _ => unreachable!("a forced release applies as one"),
        };
        (dropped, self.commit(j, &mut seq, &entry))
    }

    /// ADMIN LIMITS SET: changes one of the table's limits, logged (it outlives a
    /// restart: see [`LimitsSet`]).
    pub fn set_limit(&self, limit: LimitKind, value: u64, user: &str, now: u64) -> Ticket {
        self.run(
            now,
            Command::SetLimit { limit, value, user },
            &mut Vec::new(),
        )
        .1
    }

    /// ACQUIRE.
    pub fn acquire(
        &self,
        session: SessionId,
        key: &[u8],
        req: &AcquireRequest,
        now: u64,
    ) -> (AcquireOutcome, Ticket) {
        self.acquire_with_value(session, key, req, None, now)
    }

    /// ACQUIRE ... VALUE: the hold carries `value`.
    pub fn acquire_with_value(
        &self,
        session: SessionId,
        key: &[u8],
        req: &AcquireRequest,
        value: Option<&[u8]>,
        now: u64,
    ) -> (AcquireOutcome, Ticket) {
        let command = Command::Acquire {
            session,
            key,
            req: *req,
            value,
        };
        match self.run(now, command, &mut Vec::new()) {
            (Applied::Acquire(outcome), t) => (outcome, t),
            _ => unreachable!("an acquire applies as one"),
        }
    }

    /// RELEASE.
    pub fn release(
        &self,
        session: SessionId,
        key: &[u8],
        now: u64,
        events: &mut Vec<Event>,
    ) -> (Result<(), NotHeld>, Ticket) {
        match self.run(now, Command::Release { session, key }, events) {
            (Applied::Release(result), t) => (result, t),
            _ => unreachable!("a release applies as one"),
        }
    }

    /// MACQUIRE: a multi-lock.
    pub fn acquire_multi(
        &self,
        session: SessionId,
        items: Vec<(&[u8], Mode)>,
        req: &MultiRequest,
        now: u64,
    ) -> (MultiOutcome, Ticket) {
        let command = Command::MultiAcquire {
            session,
            items,
            req: *req,
        };
        match self.run(now, command, &mut Vec::new()) {
            (Applied::MultiAcquire(outcome), t) => (outcome, t),
            _ => unreachable!("a multi-acquire applies as one"),
        }
    }

    /// MRELEASE: releases each key in turn; returns how many were released.
    pub fn release_many(
        &self,
        session: SessionId,
        keys: Vec<&[u8]>,
        now: u64,
        events: &mut Vec<Event>,
    ) -> (usize, Ticket) {
        match self.run(now, Command::MultiRelease { session, keys }, events) {
            (Applied::MultiRelease(n), t) => (n, t),
            _ => unreachable!("a multi-release applies as one"),
        }
    }

    /// CONVERT (see `LockTable::convert`).
    #[allow(clippy::too_many_arguments, reason = "one per part of the command")]
    pub fn convert(
        &self,
        session: SessionId,
        key: &[u8],
        to: Mode,
        request: RequestId,
        wait_ms: Option<u64>,
        now: u64,
        events: &mut Vec<Event>,
    ) -> (Result<AcquireOutcome, NotHeld>, Ticket) {
        let command = Command::Convert {
            session,
            key,
            request,
            to,
            wait_ms,
        };
        match self.run(now, command, events) {
            (Applied::Convert(outcome), t) => (outcome, t),
            _ => unreachable!("a convert applies as one"),
        }
    }

    /// SETVALUE: replaces the value of `session`'s hold on `key` (empty: clears it).
    pub fn set_value(
        &self,
        session: SessionId,
        key: &[u8],
        value: &[u8],
        now: u64,
    ) -> (Result<(), NotHeld>, Ticket) {
        let command = Command::SetValue {
            session,
            key,
            value,
        };
        match self.run(now, command, &mut Vec::new()) {
            (Applied::SetValue(result), t) => (result, t),
            _ => unreachable!("a setvalue applies as one"),
        }
    }

    /// The last index assigned, read under the sequencer: every change applied before
    /// the call (a watched change told to a watcher included) is at or below it.
    pub fn settled_ticket(&self) -> Ticket {
        self.journal
            .as_ref()
            .map_or(0, |j| j.seq.lock().next.saturating_sub(1))
    }

    /// Cancels a queued request.
    pub fn cancel(
        &self,
        session: SessionId,
        key: &[u8],
        now: u64,
        events: &mut Vec<Event>,
    ) -> (bool, Ticket) {
        let (applied, t) = self.run(now, Command::Cancel { session, key }, events);
        (matches!(applied, Applied::Cancel(true)), t)
    }

    /// Applies `command` (the one path for the commands whose outcome is the table's)
    /// and, with a log, appends its record if it changed anything. Without a log the
    /// table is called directly through the same `apply`.
    fn run(&self, now: u64, command: Command<'_>, events: &mut Vec<Event>) -> (Applied, Ticket) {
        let Some(j) = &self.journal else {
            return (apply(&self.table, &Entry { now, command }, events), 0);
        };
        let mut seq = j.seq.lock();
        let entry = Entry {
            now: seq.now(now),
            command,
        };
        let applied = apply(&self.table, &entry, events);
        let t = if applied.changed() {
            match &entry.command {
                Command::Acquire { req, .. } => seq.max_request = seq.max_request.max(req.id.0),
                Command::MultiAcquire { req, .. } => {
                    seq.max_request = seq.max_request.max(req.id.0)
                }
                Command::Convert { request, .. } => {
                    seq.max_request = seq.max_request.max(request.0)
                }
                Command::SetLimit { limit, value, .. } => {
                    seq.limits.insert(*limit, *value);
                }
                _ => {}
            }
            self.commit(j, &mut seq, &entry)
        } else if let Some(command) = super::command::refusal(&entry, &applied) {
            // A DEADLOCK refusal changes nothing but is logged for the audit.
            let now = entry.now;
            self.commit(j, &mut seq, &Entry { now, command })
        } else {
            seq.next - 1
        };
        (applied, t)
    }

    /// RENEW. Not logged (see [`super::command`]); its ticket covers the state it saw.
    pub fn renew(
        &self,
        session: SessionId,
        key: &[u8],
        ttl_ms: Option<u64>,
        now: u64,
    ) -> (Result<u64, NotHeld>, Ticket) {
        (
            self.table.renew(session, key, ttl_ms, now),
            self.read_ticket(),
        )
    }

    /// Fires the timers due at `now` and logs what fired.
    pub fn advance(&self, now: u64, events: &mut Vec<Event>) -> Ticket {
        let Some(j) = &self.journal else {
            self.table.advance(now, events);
            return 0;
        };
        let mut seq = j.seq.lock();
        let now = seq.now(now);
        let start = events.len();
        self.table.advance(now, events);
        let fired = fired_from(&events[start..]);
        if fired.is_empty() {
            return seq.next - 1;
        }
        self.commit(
            j,
            &mut seq,
            &Entry {
                now,
                command: Command::Tick { fired },
            },
        )
    }

    /// Logs a server start (see [`Command::Start`]) and applies it; recovery syncs it.
    pub(super) fn start(&self, shards: u32, now: u64) -> Ticket {
        let Some(j) = &self.journal else { return 0 };
        let mut seq = j.seq.lock();
        let entry = Entry {
            now: seq.now(now),
            command: Command::Start {
                epoch: j.epoch,
                shards,
            },
        };
        apply(&self.table, &entry, &mut Vec::new());
        self.commit(j, &mut seq, &entry)
    }

    /// Logs the wall clock against the table clock (see [`Command::Clock`]).
    pub(super) fn log_clock(&self, unix_ms: u64, now: u64) {
        self.run(now, Command::Clock { unix_ms }, &mut Vec::new());
    }

    /// The WAL, for recovery's final sync and for shutdown.
    pub(super) fn wal(&self) -> Option<&Arc<Wal>> {
        self.journal.as_ref().map(|j| &j.wal)
    }

    /// Flushes and fsyncs the log (a clean shutdown).
    pub fn sync(&self) -> Result<(), LogFailed> {
        match &self.journal {
            Some(j) => {
                self.flush();
                j.wal.sync().wait().map_err(|e| LogFailed(e.to_string()))
            }
            None => Ok(()),
        }
    }

    /// Takes a snapshot now (in the background) unless one is being taken.
    pub fn snapshot(&self) -> bool {
        let Some(j) = &self.journal else { return false };
        let mut seq = j.seq.lock();
        self.start_snapshot(j, &mut seq)
    }

    /// Waits (bounded) for a background snapshot to finish: tests and shutdown.
    pub fn wait_snapshot(&self, timeout: std::time::Duration) -> bool {
        let Some(j) = &self.journal else { return true };
        let end = std::time::Instant::now() + timeout;
        while j.snapshotting.load(Ordering::Acquire) {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        true
    }

    /// Appends the record of an applied command; called with the sequencer held, so the
    /// log order is the apply order.
    fn commit(&self, j: &Journal, seq: &mut Seq, entry: &Entry<'_>) -> Ticket {
        let mut record = Vec::with_capacity(32);
        entry.encode(&mut record);
        let index = seq.next;
        seq.next += 1;
        j.assigned.store(index, Ordering::Release);
        seq.pending.push(record);
        if seq.pending.len() >= MAX_PENDING {
            Self::flush_locked(j, seq);
        }
        seq.since_snapshot += 1;
        if seq.since_snapshot >= j.snapshot_every {
            self.start_snapshot(j, seq);
        }
        index
    }

    /// Draws the table's image under the sequencer (so it is the state at exactly the
    /// last assigned index) and writes it, then purges the log, on a background thread.
    fn start_snapshot(&self, j: &Journal, seq: &mut Seq) -> bool {
        if j.snapshotting.swap(true, Ordering::AcqRel) {
            return false;
        }
        // The purge after the snapshot must find every record it covers in the WAL.
        Self::flush_locked(j, seq);
        seq.since_snapshot = 0;
        let last_index = seq.next - 1;
        let began = std::time::Instant::now();
        let state = State {
            epoch: j.epoch,
            now: seq.last_now,
            next_request: seq.max_request.saturating_add(1),
            sessions: seq.sessions.clone(),
            limits: seq.limits.clone(),
            table: self.table.export(),
        };
        let paused = began.elapsed();
        let (wal, snapshots, flag) = (j.wal.clone(), j.snapshots.clone(), j.snapshotting.clone());
        let (saved_index, saved) = (j.snapshot_index.clone(), j.snapshots_saved.clone());
        let took = j.snapshot_last_ms.clone();
        let spawned = std::thread::Builder::new()
            .name("turnstile-snapshot".into())
            .spawn(move || {
                let bytes = image_codec::encode(&state);
                drop(state);
                match snapshots.save(last_index, &bytes) {
                    Ok(meta) => {
                        info!(last_index, bytes = meta.len, ?paused, "snapshot saved");
                        saved_index.store(last_index, Ordering::Relaxed);
                        took.store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                        saved.fetch_add(1, Ordering::Relaxed);
                        // Records up to the snapshot are no longer needed to recover.
                        if let Err(e) = wal.purge(last_index).wait() {
                            warn!(error = %e, "purging the log after a snapshot failed");
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "saving a snapshot failed; the log keeps everything")
                    }
                }
                flag.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            j.snapshotting.store(false, Ordering::Release);
            return false;
        }
        true
    }
}

impl Seq {
    /// The time to apply at: never before the last applied one.
    fn now(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        self.last_now
    }
}

/// Request ids: the high 32 bits count, the low 32 carry the binary client's request id
/// (0 in text mode), so that a binary session restored after a restart can tell its
/// client which queued request a grant answers.
pub fn request_id(counter: u64, client_id: u32) -> RequestId {
    RequestId((counter << 32) | u64::from(client_id))
}
