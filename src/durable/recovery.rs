//! Startup: load the newest snapshot, replay the log after it, and hand back a store
//! whose table is exactly the state the log describes.
//!
//! After replay every hold's lease starts again with its full TTL (the old process's
//! clock is gone, and a lease must never come back shorter), the table clock continues
//! just after the last logged time, and a [`Command::Start`] record with the next epoch
//! is logged and fsynced before anything is served: every token issued from then on is
//! above `epoch << EPOCH_SHIFT`, so tokens never go back even if the previous run's
//! unsynced tail (with grants that were answered, under `--fsync never`) is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::codec::DecodeError;
use super::command::{apply, with_set, Command, Entry, LimitsSet, SessionKind};
use super::image_codec;
use super::store::{JournalStart, RecoverySummary, Store};
use crate::engine::{Limits, LockTable, SessionId};
use std::sync::Arc;

use crate::wal::{FsIo, FsyncMode, RecoveryMode, SnapshotStore, Wal, WalError, WalIo, WalOptions};

/// How to open the store.
#[derive(Clone, Debug)]
pub struct Options {
    /// The data directory (`wal/` and `snapshots/` inside).
    pub dir: PathBuf,
    /// When appends count as durable.
    pub fsync: FsyncMode,
    /// Cut the log at the first corruption anywhere (losing what follows) instead of
    /// refusing to start.
    pub repair: bool,
    /// Shards of a new table (a recovered one keeps its own count).
    pub shards: usize,
    /// The limits to enforce once recovered (replay enforces none), unless the log set
    /// others at runtime (ADMIN LIMITS SET): those stay in force.
    pub limits: Limits,
    /// Take a snapshot after this many records.
    pub snapshot_every: u64,
    /// WAL segment size in bytes.
    pub segment_size: u64,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The WAL or snapshot store refused (corruption outside the tail, I/O).
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A record or snapshot passed its checksum but does not decode.
    #[error("{what} does not decode: {source} (written by another version?)")]
    Decode {
        /// Which record or snapshot.
        what: String,
        /// Why.
        source: DecodeError,
    },
    /// The log does not continue the snapshot.
    #[error("the log in {dir} begins at index {first} but the newest snapshot ends at {last}: records are missing")]
    Gap {
        /// The WAL directory.
        dir: PathBuf,
        /// The log's first index.
        first: u64,
        /// The snapshot's last index.
        last: u64,
    },
    /// Creating the data directory failed.
    #[error("creating {0}: {1}")]
    Dir(PathBuf, std::io::Error),
}

/// What recovery found, besides the store.
#[derive(Debug)]
pub struct Recovered {
    /// The table clock to continue from (the server's clock starts here).
    pub now: u64,
    /// Sessions open in the log: the server restores them and ends each one nobody
    /// resumes within its timeout.
    pub sessions: BTreeMap<SessionId, SessionKind>,
    /// Request ids up to this were used.
    pub max_request: u64,
    /// Records replayed after the snapshot.
    pub replayed: u64,
    /// The snapshot's last index, if one was loaded.
    pub snapshot_index: Option<u64>,
    /// Holds restored.
    pub holds: u64,
    /// How long recovery took.
    pub elapsed: Duration,
    /// This start's epoch.
    pub epoch: u64,
}

/// Opens (recovering, or creating) the store in `opts.dir`.
pub fn open(opts: &Options) -> Result<(Store, Recovered), RecoveryError> {
    open_with_io(opts, Arc::new(FsIo::new()))
}

/// [`open`] through `io` (a [`crate::wal::FaultIo`] in tests: failed writes and fsyncs,
/// a full disk).
pub fn open_with_io(
    opts: &Options,
    io: Arc<dyn WalIo>,
) -> Result<(Store, Recovered), RecoveryError> {
    let began = Instant::now();
    io.create_dir_all(&opts.dir)
        .map_err(|e| RecoveryError::Dir(opts.dir.clone(), e))?;
    restrict(&opts.dir);
    let snapshots = SnapshotStore::open_with_io(opts.dir.join("snapshots"), io.clone())?;
    let latest = snapshots.load_latest()?;
    let (snapshot_index, state) = match latest {
        Some(s) => {
            let state = image_codec::decode(&s.data).map_err(|source| RecoveryError::Decode {
                what: format!("snapshot at index {}", s.last_index),
                source,
            })?;
            (Some(s.last_index), Some(state))
        }
        None => (None, None),
    };
    let start = snapshot_index.map_or(1, |i| i + 1);
    let mut wal_opts = WalOptions::new(opts.dir.join("wal"));
    wal_opts.fsync = opts.fsync;
    wal_opts.segment_size = opts.segment_size;
    wal_opts.first_index = start;
    wal_opts.recovery = if opts.repair {
        RecoveryMode::TruncateAtFirstCorruption
    } else {
        RecoveryMode::TolerateTailCorruption
    };
    let (wal, report) = Wal::open_with_io(wal_opts, io)?;
    if let Some(cut) = &report.cut {
        warn!(
            ?cut,
            "the log's torn or corrupt tail was cut off (records never acknowledged)"
        );
    }
    let log = wal.state();
    if log.first_index > start && log.next_index > log.first_index {
        return Err(RecoveryError::Gap {
            dir: wal.dir().to_path_buf(),
            first: log.first_index,
            last: start - 1,
        });
    }

    // The shard count is part of the state: token allocation depends on it.
    let logged_shards = match &state {
        Some(s) => Some(s.table.shards.len()),
        None => first_start(&wal, start)?,
    };
    let shards = logged_shards.unwrap_or(opts.shards);
    if shards != opts.shards {
        warn!(
            configured = opts.shards,
            logged = shards,
            "keeping the shard count of the data directory (tokens depend on it)"
        );
    }

    let base_now = state.as_ref().map_or(0, |s| s.now);
    let table = LockTable::new(shards, Limits::unlimited(), base_now);
    let mut sessions = BTreeMap::new();
    let mut limits_set = LimitsSet::new();
    let mut epoch = 0;
    let mut max_request = 0;
    let mut last_now = base_now;
    if let Some(s) = &state {
        table.import(&s.table, base_now);
        sessions = s.sessions.clone();
        limits_set = s.limits.clone();
        epoch = s.epoch;
        max_request = s.next_request.saturating_sub(1);
    }

    let mut replayed = 0u64;
    let mut events = Vec::new();
    let mut at = start.max(log.first_index);
    while at < log.next_index {
        let end = (at + 4096).min(log.next_index);
        for record in wal.read(at..end)? {
            let entry = Entry::decode(&record.data).map_err(|source| RecoveryError::Decode {
                what: format!("log record {} in {}", record.index, wal.dir().display()),
                source,
            })?;
            match &entry.command {
                Command::Start { epoch: e, .. } => epoch = epoch.max(*e),
                Command::OpenSession { session, kind } => {
                    sessions.insert(*session, kind.clone());
                }
                Command::CloseSession { session } | Command::EndSession { session, .. } => {
                    sessions.remove(session);
                }
                Command::Acquire { req, .. } => max_request = max_request.max(req.id.0),
                Command::MultiAcquire { req, .. } => max_request = max_request.max(req.id.0),
                Command::Convert { request, .. } => max_request = max_request.max(request.0),
                Command::SetLimit { limit, value, .. } => {
                    limits_set.insert(*limit, *value);
                }
                _ => {}
            }
            last_now = last_now.max(entry.now);
            apply(&table, &entry, &mut events);
            events.clear();
            replayed += 1;
        }
        at = end;
    }

    let now = last_now + 1;
    table.restart_leases(now);
    // Replay ran with no limits but those the log set (a record was applied under limits
    // at least as loose, so it applies the same); from now on the configured ones hold,
    // with those set at runtime in their place.
    for (kind, value) in &limits_set {
        if opts.limits.get(*kind) != *value {
            info!(
                limit = kind.name(),
                configured = opts.limits.get(*kind),
                set = value,
                "keeping a limit set at runtime (ADMIN LIMITS SET) over the configured one"
            );
        }
    }
    table.set_limits(with_set(&opts.limits, &limits_set));
    let holds = table.stats().holds;
    let epoch = epoch + 1;
    let store = Store::with_journal(
        table,
        JournalStart {
            wal,
            snapshots,
            next_index: log.next_index,
            last_now: now,
            sessions: sessions.clone(),
            limits: limits_set,
            max_request,
            epoch,
            snapshot_every: opts.snapshot_every,
            snapshot_index: snapshot_index.unwrap_or(0),
            fsync: opts.fsync,
        },
    );
    store.start(shards as u32, now);
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    store.log_clock(unix_ms, now);
    // The start record must be on disk before any token of this epoch goes out, in
    // every fsync mode.
    store
        .wal()
        .expect("a journal")
        .sync()
        .wait()
        .map_err(RecoveryError::Wal)?;
    let recovered = Recovered {
        now,
        sessions,
        max_request,
        replayed,
        snapshot_index,
        holds,
        elapsed: began.elapsed(),
        epoch,
    };
    store.set_recovery(RecoverySummary {
        snapshot_index: snapshot_index.unwrap_or(0),
        replayed_records: replayed,
        restored_holds: holds,
        restored_sessions: recovered.sessions.len() as u64,
        elapsed_ms: recovered.elapsed.as_millis() as u64,
    });
    info!(
        dir = %opts.dir.display(),
        snapshot = ?recovered.snapshot_index,
        replayed = recovered.replayed,
        holds = recovered.holds,
        sessions = recovered.sessions.len(),
        epoch,
        elapsed = ?recovered.elapsed,
        "recovered"
    );
    Ok((store, recovered))
}

/// The shard count logged by the first Start record, if the log begins with one.
fn first_start(wal: &Wal, start: u64) -> Result<Option<usize>, RecoveryError> {
    let first = wal.state().first_index.max(start);
    let Some(record) = wal.read(first..first + 1)?.into_iter().next() else {
        return Ok(None);
    };
    let entry = Entry::decode(&record.data).map_err(|source| RecoveryError::Decode {
        what: format!("log record {}", record.index),
        source,
    })?;
    Ok(match entry.command {
        Command::Start { shards, .. } => Some(shards as usize),
        _ => None,
    })
}

/// The data directory holds session secrets: owner only.
fn restrict(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
}
