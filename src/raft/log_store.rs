//! openraft's log storage on the write-ahead log ([`crate::wal::Wal`]).
//!
//! Each raft entry is one WAL record at its raft index (the WAL is opened with
//! `first_index = 0`, openraft's first index). The record carries the entry's term and
//! leader next to the payload, since openraft identifies an entry by its full log id:
//!
//! ```text
//! kind:u8  term:varint  leader:varint  payload
//! kind 0 blank       (no payload)
//! kind 1 normal      an encoded durable::command::Entry record, as is
//! kind 2 membership  postcard of openraft's Membership<NodeId, NodeAddr>
//! ```
//!
//! The vote lives in the WAL's vote file (`kind:u8=1 term:u64le node:u64le committed:u8`).
//! The last purged log id lives in its own small file (`purged`, written and fsynced
//! before the WAL purge it describes), because after a purge the WAL no longer holds the
//! term of the entries it dropped, and openraft must know it at startup.
//!
//! Appends: openraft wants the entries readable as soon as `append` returns and the
//! callback once they are durable. The WAL publishes records only when they are durable,
//! so entries go into an in-memory `tail` map at `append`; the WAL completion, which runs
//! `LogFlushed` in log order after the fsync, marks them durable. The tail also keeps the
//! most recent durable entries (up to [`TAIL_MAX_ENTRIES`] / [`TAIL_MAX_BYTES`]): every
//! entry is read back soon after it is written (replication to each follower, and the
//! state machine applying it on every node), and serving those reads from memory saves a
//! `pread` and a decode each. Reads prefer `tail` (it holds what a truncate replaced
//! before the WAL has processed the truncate) and clamp to the log's logical end.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, CommittedLeaderId, EntryPayload, RaftLogReader, StorageIOError};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::error::ClusterError;
use super::types::typ::{Entry, LogId, Membership, StorageError, Vote};
use super::types::{Request, TypeConfig};
use crate::wal::{FsyncMode, RecoveryReport, Wal, WalError, WalOptions};

const KIND_BLANK: u8 = 0;
const KIND_NORMAL: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

const VOTE_VERSION: u8 = 1;

/// Most durable entries the in-memory tail keeps (entries not yet durable stay regardless).
pub(super) const TAIL_MAX_ENTRIES: usize = 4096;
/// Most payload bytes the in-memory tail keeps, durable entries counted.
const TAIL_MAX_BYTES: usize = 16 << 20;
const PURGED_MAGIC: &[u8; 4] = b"TSPG";
const PURGED_FILE: &str = "purged";
const PURGED_TMP: &str = "purged.tmp";

/// How to open the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The raft log directory: the WAL's segments and vote in `wal/`, the purge mark.
    pub dir: PathBuf,
    /// When appends count as durable. Raft's safety needs [`FsyncMode::Always`]: a vote or
    /// an acknowledged entry must survive a crash.
    pub fsync: FsyncMode,
    /// WAL segment size in bytes.
    pub segment_size: u64,
}

impl LogOptions {
    /// Defaults: fsync always, 64 MiB segments.
    pub fn new(dir: impl Into<PathBuf>) -> LogOptions {
        LogOptions {
            dir: dir.into(),
            fsync: FsyncMode::Always,
            segment_size: 64 << 20,
        }
    }
}

/// The raft log. Cheap to clone (openraft takes one as its log reader).
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    /// Kept apart from the WAL: WAL callbacks hold it, and must never hold the last
    /// reference to the WAL (dropping the WAL on its own writer thread would deadlock).
    mem: Arc<Mutex<LogMem>>,
    dir: PathBuf,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.dir).finish()
    }
}

/// The log as openraft sees it (the WAL may still be catching up).
#[derive(Default)]
struct LogMem {
    /// A suffix of the log in memory, by index: every entry not yet durable, and the
    /// most recent durable ones (see the module docs).
    tail: BTreeMap<u64, TailEntry>,
    /// Payload bytes in `tail`.
    tail_bytes: usize,
    /// Counts appends, so that a completion only marks its own entries in `tail` durable
    /// (a truncate and a new append may have replaced them since).
    generation: u64,
    /// The index the next entry gets.
    next: u64,
    /// The last entry's id (or the purge mark's, when the log holds none).
    last: Option<LogId>,
    /// The last purged entry's id.
    purged: Option<LogId>,
    /// The last committed log id openraft reported (not persisted).
    committed: Option<LogId>,
}

/// An entry of the in-memory tail.
struct TailEntry {
    /// The append that wrote it.
    generation: u64,
    /// Whether the WAL has made it durable (only durable entries may leave the tail).
    durable: bool,
    /// Its payload size, for [`TAIL_MAX_BYTES`].
    bytes: usize,
    entry: Entry,
}

impl LogMem {
    fn insert(&mut self, generation: u64, entry: Entry) {
        let bytes = match &entry.payload {
            EntryPayload::Blank => 0,
            EntryPayload::Normal(r) => r.0.len(),
            EntryPayload::Membership(_) => 256,
        };
        self.tail_bytes += bytes;
        let old = self.tail.insert(
            entry.log_id.index,
            TailEntry {
                generation,
                durable: false,
                bytes,
                entry,
            },
        );
        if let Some(old) = old {
            self.tail_bytes -= old.bytes;
        }
    }

    /// The WAL made `range` durable for the append `generation` (entries a truncate and
    /// a later append replaced are not its own), then trims the tail's durable front.
    fn made_durable(&mut self, range: std::ops::RangeInclusive<u64>, generation: u64) {
        for (_, t) in self.tail.range_mut(range) {
            if t.generation == generation {
                t.durable = true;
            }
        }
        while self.tail.len() > TAIL_MAX_ENTRIES || self.tail_bytes > TAIL_MAX_BYTES {
            match self.tail.first_entry() {
                Some(first) if first.get().durable => {
                    self.tail_bytes -= first.remove().bytes;
                }
                _ => break,
            }
        }
    }
}

/// The log's positions, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPositions {
    /// Index of the last entry, if any.
    pub last_index: Option<u64>,
    /// Index of the last entry known committed.
    pub committed_index: Option<u64>,
    /// Index of the last purged entry.
    pub purged_index: Option<u64>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    /// Opens (recovering) or creates the log in `opts.dir`.
    pub fn open(opts: &LogOptions) -> Result<(LogStore, RecoveryReport), ClusterError> {
        std::fs::create_dir_all(&opts.dir).map_err(|source| ClusterError::Io {
            what: format!("creating {}", opts.dir.display()),
            source,
        })?;
        let mut wal_opts = WalOptions::new(opts.dir.join("wal"));
        wal_opts.first_index = 0;
        wal_opts.fsync = opts.fsync;
        wal_opts.segment_size = opts.segment_size;
        let (wal, report) = Wal::open(wal_opts)?;
        let purged = read_purged(&opts.dir)?;
        if let Some(p) = purged {
            // A crash between writing the mark and the WAL purge leaves the records:
            // finish the purge.
            if wal.state().first_index <= p.index {
                wal.purge(p.index).wait()?;
            }
        }
        let state = wal.state();
        let last = match wal.last_index() {
            Some(i) => {
                let record = wal
                    .read(i..=i)?
                    .pop()
                    .ok_or_else(|| ClusterError::Corrupt {
                        what: format!("raft log in {}", opts.dir.display()),
                        reason: format!("its last record {i} cannot be read"),
                    })?;
                Some(
                    decode_entry(record.index, &record.data)
                        .map_err(|reason| ClusterError::Corrupt {
                            what: format!("raft log record {i} in {}", opts.dir.display()),
                            reason,
                        })?
                        .log_id,
                )
            }
            None => purged,
        };
        let mem = LogMem {
            next: state.next_index,
            last,
            purged,
            ..LogMem::default()
        };
        Ok((
            LogStore {
                wal: Arc::new(wal),
                mem: Arc::new(Mutex::new(mem)),
                dir: opts.dir.clone(),
            },
            report,
        ))
    }

    /// The log's positions now.
    pub fn positions(&self) -> LogPositions {
        let mem = self.mem.lock();
        LogPositions {
            last_index: mem.last.map(|l| l.index),
            committed_index: mem.committed.map(|l| l.index),
            purged_index: mem.purged.map(|l| l.index),
        }
    }

    /// Entries in the in-memory tail.
    #[cfg(test)]
    pub(super) fn tail_len(&self) -> usize {
        self.mem.lock().tail.len()
    }

    /// The WAL underneath.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Closes the WAL (final fsync) if this is the last handle on it; gives the handle
    /// back otherwise.
    pub fn try_close(self) -> Result<Result<(), ClusterError>, LogStore> {
        match Arc::try_unwrap(self.wal) {
            Ok(wal) => Ok(wal.close().map_err(ClusterError::from)),
            Err(wal) => Err(LogStore {
                wal,
                mem: self.mem,
                dir: self.dir,
            }),
        }
    }

    /// fsync latency and batch size of the log.
    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.wal.stats()
    }

    /// Entries in `[start, end)` that the log holds.
    #[allow(clippy::result_large_err)] // openraft's error type
    fn read_range(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let mem = self.mem.lock();
        let start = start.max(mem.purged.map_or(0, |p| p.index + 1));
        let end = end.min(mem.next);
        if start >= end {
            return Ok(Vec::new());
        }
        // `tail` is a suffix of the log: everything below its first key is in the WAL.
        let wal_end = mem.tail.range(start..end).next().map_or(end, |(&i, _)| i);
        let mut out = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
        if start < wal_end {
            let records = self
                .wal
                .read(start..wal_end)
                .map_err(|e| StorageIOError::read_logs(any(e)))?;
            for r in records {
                out.push(
                    decode_entry(r.index, &r.data)
                        .map_err(|e| StorageIOError::read_log_at_index(r.index, any(e)))?,
                );
            }
        }
        out.extend(mem.tail.range(wal_end..end).map(|(_, t)| t.entry.clone()));
        Ok(out)
    }

    /// Submits a WAL op while `mem` is locked (so WAL order is `mem` order) and waits for
    /// its completion.
    async fn wait_wal(
        &self,
        submit: impl FnOnce(&Wal, Box<dyn FnOnce(Result<(), WalError>) + Send>),
    ) -> Result<(), WalError> {
        let (tx, rx) = oneshot::channel();
        submit(
            &self.wal,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.unwrap_or(Err(WalError::Closed))
    }
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
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
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_bounds(&range);
        // Reads hit the page cache almost always; a short block is cheaper than a hop to
        // a blocking thread per replication batch.
        self.read_range(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem.lock();
        Ok(LogState {
            last_purged_log_id: mem.purged,
            last_log_id: mem.last.or(mem.purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode_vote(vote);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || wal.save_vote(&bytes))
            .await
            .map_err(|e| StorageIOError::write_vote(any(e)))?
            .map_err(|e| StorageIOError::write_vote(any(e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let bytes = self
            .wal
            .read_vote()
            .map_err(|e| StorageIOError::read_vote(any(e)))?;
        match bytes {
            None => Ok(None),
            Some(b) => decode_vote(&b)
                .map(Some)
                .map_err(|e| StorageIOError::read_vote(any(e)).into()),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.mem.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.mem.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let first_index = first.log_id.index;
        let last_id = last.log_id;
        let records: Vec<Vec<u8>> = entries.iter().map(encode_entry).collect();
        let mut mem = self.mem.lock();
        if first_index != mem.next {
            let e = format!(
                "append at index {first_index} but the log's next index is {}",
                mem.next
            );
            return Err(StorageIOError::write_logs(AnyError::error(e)).into());
        }
        mem.generation += 1;
        let generation = mem.generation;
        for e in entries {
            mem.insert(generation, e);
        }
        mem.next = last_id.index + 1;
        mem.last = Some(last_id);
        let pending = self.mem.clone();
        self.wal.append_at(first_index, records, move |result| {
            if result.is_ok() {
                pending
                    .lock()
                    .made_durable(first_index..=last_id.index, generation);
            }
            callback.log_io_completed(result.map(|_| ()).map_err(io_err));
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        let prev = if from == 0 {
            None
        } else {
            self.read_range(from - 1, from)?.pop().map(|e| e.log_id)
        };
        let result = self
            .wait_wal(|wal, done| {
                let mut mem = self.mem.lock();
                let dropped = mem.tail.split_off(&from);
                mem.tail_bytes -= dropped.values().map(|t| t.bytes).sum::<usize>();
                if mem.next > from {
                    mem.next = from;
                    mem.last = prev.or(mem.purged);
                }
                wal.truncate_with(from, done);
            })
            .await;
        result.map_err(|e| StorageIOError::write_logs(any(e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_purged(&dir, &log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(any(e)))?
            .map_err(|e| StorageIOError::write_logs(any(e)))?;
        let upto = log_id.index;
        let result = self
            .wait_wal(|wal, done| {
                let mut mem = self.mem.lock();
                let kept = mem.tail.split_off(&(upto + 1));
                mem.tail = kept;
                mem.tail_bytes = mem.tail.values().map(|t| t.bytes).sum();
                if mem.purged < Some(log_id) {
                    mem.purged = Some(log_id);
                }
                if mem.next <= upto {
                    mem.next = upto + 1;
                }
                if mem.last < Some(log_id) {
                    mem.last = Some(log_id);
                }
                wal.purge_with(upto, done);
            })
            .await;
        result.map_err(|e| StorageIOError::write_logs(any(e)).into())
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// Encodes one entry as its WAL record (see the module docs).
fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    let kind = match &entry.payload {
        EntryPayload::Blank => KIND_BLANK,
        EntryPayload::Normal(_) => KIND_NORMAL,
        EntryPayload::Membership(_) => KIND_MEMBERSHIP,
    };
    out.push(kind);
    put_varint(&mut out, entry.log_id.leader_id.term);
    put_varint(&mut out, entry.log_id.leader_id.node_id);
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(Request(bytes)) => out.extend_from_slice(bytes),
        EntryPayload::Membership(m) => {
            // Serializing plain sets and maps into a Vec cannot fail.
            let bytes = postcard::to_allocvec(m).expect("membership serializes");
            out.extend_from_slice(&bytes);
        }
    }
    out
}

/// Decodes the WAL record at `index`.
fn decode_entry(index: u64, data: &[u8]) -> Result<Entry, String> {
    let kind = *data.first().ok_or("empty record")?;
    let mut at = 1;
    let term = get_varint(data, &mut at)?;
    let node = get_varint(data, &mut at)?;
    let rest = &data[at..];
    let payload = match kind {
        KIND_BLANK if rest.is_empty() => EntryPayload::Blank,
        KIND_BLANK => return Err("bytes after a blank entry".into()),
        KIND_NORMAL => EntryPayload::Normal(Request(rest.to_vec())),
        KIND_MEMBERSHIP => {
            let m: Membership = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            EntryPayload::Membership(m)
        }
        other => return Err(format!("unknown entry kind {other}")),
    };
    Ok(Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node), index),
        payload,
    })
}

fn encode_vote(vote: &Vote) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    out.push(VOTE_VERSION);
    out.extend_from_slice(&vote.leader_id.term.to_le_bytes());
    out.extend_from_slice(&vote.leader_id.node_id.to_le_bytes());
    out.push(u8::from(vote.committed));
    out
}

fn decode_vote(b: &[u8]) -> Result<Vote, String> {
    if b.len() != 18 || b[0] != VOTE_VERSION {
        return Err(format!(
            "vote of {} bytes, version {:?}",
            b.len(),
            b.first()
        ));
    }
    let term = u64::from_le_bytes(b[1..9].try_into().expect("8 bytes"));
    let node = u64::from_le_bytes(b[9..17].try_into().expect("8 bytes"));
    Ok(match b[17] {
        0 => Vote::new(term, node),
        1 => Vote::new_committed(term, node),
        other => return Err(format!("vote committed flag {other}")),
    })
}

/// `magic:4 term:u64le node:u64le index:u64le crc32c:u32le` (crc over what precedes it).
fn encode_purged(id: &LogId) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(PURGED_MAGIC);
    out.extend_from_slice(&id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&id.leader_id.node_id.to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_purged(b: &[u8]) -> Option<LogId> {
    if b.len() != 32 || &b[..4] != PURGED_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
    if crc32c::crc32c(&b[..28]) != crc {
        return None;
    }
    let term = u64::from_le_bytes(b[4..12].try_into().ok()?);
    let node = u64::from_le_bytes(b[12..20].try_into().ok()?);
    let index = u64::from_le_bytes(b[20..28].try_into().ok()?);
    Some(LogId::new(CommittedLeaderId::new(term, node), index))
}

/// Writes the purge mark durably: temp file, fsync, rename, fsync the directory.
fn write_purged(dir: &Path, id: &LogId) -> Result<(), WalError> {
    use std::io::Write;
    let tmp = dir.join(PURGED_TMP);
    let path = dir.join(PURGED_FILE);
    let mut file = std::fs::File::create(&tmp).map_err(|e| WalError::io("create", &tmp, e))?;
    file.write_all(&encode_purged(id))
        .map_err(|e| WalError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| WalError::io("fsync", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| WalError::io("rename", &tmp, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

fn read_purged(dir: &Path) -> Result<Option<LogId>, ClusterError> {
    let path = dir.join(PURGED_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode_purged(&bytes)
            .map(Some)
            .ok_or_else(|| ClusterError::Corrupt {
                what: path.display().to_string(),
                reason: "bad magic, length or checksum".into(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io("read", &path, e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use crate::raft::types::NodeAddr;

    fn id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    #[test]
    fn entries_round_trip() {
        let nodes: BTreeMap<u64, NodeAddr> = [(1, NodeAddr::new("127.0.0.1:1", "127.0.0.1:2"))]
            .into_iter()
            .collect();
        let m = Membership::new(vec![BTreeSet::from([1])], nodes);
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(Request(vec![4, 1, 2, 3])),
            EntryPayload::Membership(m),
        ] {
            let e = Entry {
                log_id: id(300, 7, 42),
                payload,
            };
            let back = decode_entry(42, &encode_entry(&e)).expect("decodes");
            assert_eq!(back.log_id, e.log_id);
            assert_eq!(format!("{:?}", back.payload), format!("{:?}", e.payload));
        }
    }

    #[test]
    fn vote_and_purge_mark_round_trip() {
        for v in [Vote::new(3, 2), Vote::new_committed(u64::MAX, 9)] {
            assert_eq!(decode_vote(&encode_vote(&v)).expect("decodes"), v);
        }
        let p = id(5, 1, 1000);
        assert_eq!(decode_purged(&encode_purged(&p)), Some(p));
        let mut bad = encode_purged(&p);
        bad[10] ^= 1;
        assert_eq!(decode_purged(&bad), None);
    }
}
