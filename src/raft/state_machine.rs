//! openraft's state machine: the lock table, fed the committed entries in log order
//! through [`crate::durable::command::apply`], the same step standalone replay uses.
//!
//! # Determinism
//!
//! Every node applies the same entries in the same order with the same `now` (carried in
//! each entry), so every node computes the same grants, queues and fencing tokens. That is
//! what keeps tokens increasing across failovers: a new leader's table is exactly the old
//! leader's as of the last committed entry, and tokens only come from applying entries.
//! For this to hold, every node must run with the same shard count and the same
//! [`Limits`] (a limit refusal is an outcome of apply). Limits changed at runtime (ADMIN
//! LIMITS SET) are `SetLimit` entries, so they are replicated state: every node applies
//! them at the same point of the log, and snapshots carry them; they override the
//! configured limits from then on, also across restarts.
//!
//! # The new leader raises the token floor
//!
//! openraft makes every new leader append a blank entry at the start of its term, before
//! anything else of that term can commit. Applying the blank entry of term `T` raises the
//! table's token floor to `T << EPOCH_SHIFT` (as a standalone restart's `Start` record
//! does with its epoch), on every node alike. So tokens issued in term `T` are above
//! `T << 40`, above every token of earlier terms (which would need 2^40 grants in one
//! term to reach the next range). This is belt and braces on top of determinism: it makes
//! a token's term visible in the token, and it keeps tokens increasing even if a bug ever
//! made two terms' tables differ. Terms at or above 2^24 no longer raise the floor (the
//! shift would overflow); determinism alone then keeps tokens increasing.
//!
//! # Time: only the leader decides
//!
//! Followers never advance their table's clock or fire a timer: lease expiries and WAIT
//! timeouts reach them only as `Command::Tick` entries the leader's timer driver
//! proposed. Their timer wheels still hold every lease (the table arms them on apply),
//! which is what a follower needs once it becomes leader. See [`StateMachine::take_over`]
//! for what a new leader must do before its timer driver runs.
//!
//! # Snapshots
//!
//! A snapshot is the standalone snapshot payload ([`crate::durable::image_codec`]) behind
//! a header with the raft metadata, in a [`SnapshotStore`] file named by its last index:
//!
//! ```text
//! magic "TSRAFTSN"  meta_len:u32le  meta (postcard of openraft's SnapshotMeta)  payload
//! ```
//!
//! The same bytes are what openraft streams to a follower that is too far behind.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use parking_lot::{Mutex, RwLock};
use tracing::{error, info, warn};

use super::error::ClusterError;
use super::types::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use super::types::{Request, Response, TypeConfig};
use crate::durable::command::{
    apply, with_set, Command, Entry as CommandEntry, LimitsSet, EPOCH_SHIFT,
};
use crate::durable::image_codec::{self, State};
use crate::durable::SessionKind;
use crate::engine::{Limits, LockTable, SessionId};
use crate::wal::SnapshotStore;

const SNAPSHOT_MAGIC: &[u8; 8] = b"TSRAFTSN";

/// Terms from here on would shift past 64 bits.
const MAX_FLOOR_TERM: u64 = 1 << (64 - EPOCH_SHIFT);

/// The replicated lock table. Cheap to clone; every clone is the same machine.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

struct Shared {
    /// Replaced whole when a snapshot is installed (an engine table can only be imported
    /// into when empty).
    table: RwLock<Arc<LockTable>>,
    /// Held while a batch is applied and while a snapshot is drawn, so a snapshot is
    /// one consistent point of the log.
    state: Mutex<Applied>,
    snapshots: SnapshotStore,
    shards: usize,
    limits: Limits,
    snapshot_seq: AtomicU64,
    /// Where the events of applied entries go (the server's router), if anywhere;
    /// without a sink they are returned in each [`Response`].
    sink: std::sync::OnceLock<EventSink>,
    /// Where changes of watched keys go (the server's watch hub), installed in every
    /// table this machine has, including those a snapshot install brings.
    watch: std::sync::OnceLock<crate::engine::WatchHook>,
}

/// Receives the events applying an entry caused (grants to queued requests, expiries,
/// timeouts), on every node: a follower may still have a client parked on a grant.
pub type EventSink = Box<dyn Fn(&mut Vec<crate::engine::Event>) + Send + Sync>;

/// What the log has done to the machine besides the table.
#[derive(Clone, Debug, Default)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Highest token floor epoch applied (a blank entry's term or a Start's epoch).
    epoch: u64,
    /// Latest `now` applied: the table clock. A new leader's clock must not go below it.
    now: u64,
    sessions: BTreeMap<SessionId, SessionKind>,
    max_request: u64,
    /// Limits set at runtime (SetLimit entries).
    limits: LimitsSet,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("StateMachine")
            .field("last_applied", &st.last_applied)
            .field("now", &st.now)
            .finish()
    }
}

fn io(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl StateMachine {
    /// Opens the machine from the newest snapshot in `dir` (an empty table with `shards`
    /// shards when there is none). openraft then applies the committed log after it.
    pub fn open(dir: &Path, shards: usize, limits: Limits) -> Result<StateMachine, ClusterError> {
        let snapshots = SnapshotStore::open(dir)?;
        let (table, applied) = match snapshots.load_latest()? {
            Some(s) => {
                let (meta, state) =
                    decode_snapshot(&s.data).map_err(|reason| ClusterError::Corrupt {
                        what: format!("snapshot {} in {}", s.last_index, dir.display()),
                        reason,
                    })?;
                info!(snapshot = %meta, "state machine restored from snapshot");
                restore(&meta, state, &limits)
            }
            None => (
                LockTable::new(shards, limits.clone(), 0),
                Applied::default(),
            ),
        };
        table.time_holds();
        if table.shard_count() != shards {
            warn!(
                configured = shards,
                snapshot = table.shard_count(),
                "keeping the shard count of the snapshot (tokens depend on it)"
            );
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                table: RwLock::new(Arc::new(table)),
                state: Mutex::new(applied),
                snapshots,
                shards,
                limits,
                snapshot_seq: AtomicU64::new(0),
                sink: std::sync::OnceLock::new(),
                watch: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The lock table now. Reads (INSPECT, LOCKS) and the leader's timer driver use it.
    /// Installing a snapshot replaces the table: fetch it again rather than keeping it
    /// across awaits.
    pub fn table(&self) -> Arc<LockTable> {
        self.shared.table.read().clone()
    }

    /// Sends the events of every entry applied from now on to `sink` instead of the
    /// responses. Set once.
    pub fn set_event_sink(&self, sink: EventSink) {
        let _ = self.shared.sink.set(sink);
    }

    /// Sends the changes of watched keys to `hook`'s sink, in this table and in every
    /// table a snapshot install brings later. Set once.
    pub fn set_watch(&self, hook: crate::engine::WatchHook) {
        // Under the state lock: no table swap can fall between the two steps.
        let _st = self.shared.state.lock();
        if self.shared.watch.set(hook.clone()).is_ok() {
            self.table().set_watch(hook);
        }
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.shared.state.lock().last_applied
    }

    /// The latest `now` any applied entry carried. A leader's clock must start above it
    /// (wait deadlines are on this clock, and the table's time must never go back).
    pub fn last_now(&self) -> u64 {
        self.shared.state.lock().now
    }

    /// Sessions open in the replicated state and their kinds (a new leader restores
    /// them, as standalone recovery does).
    pub fn sessions(&self) -> BTreeMap<SessionId, SessionKind> {
        self.shared.state.lock().sessions.clone()
    }

    /// The highest request id applied (new ids must be above it).
    pub fn max_request(&self) -> u64 {
        self.shared.state.lock().max_request
    }

    /// The highest token floor epoch applied.
    pub fn epoch(&self) -> u64 {
        self.shared.state.lock().epoch
    }

    /// Prepares a new leader's table for its timer driver. Call it once per term, after
    /// this node became leader and before the driver's first `advance`, with the leader's
    /// clock (`now` above [`Self::last_now`]) and the cluster's maximum election timeout.
    ///
    /// # Why every lease gets its full TTL plus the election timeout
    ///
    /// A client's lease must never end on the new leader before the client could have
    /// known it ended. The new leader cannot know how much of a lease the old leader had
    /// left: renewals are not logged, and the old leader's clock is gone. It can bound
    /// it. A renewal the old leader acknowledged after a read index (see below) was
    /// received before a quorum acknowledged the old leader; that quorum shares a voter
    /// with the quorum that elected this node, and openraft's voters refuse to vote until
    /// `election_timeout_max` after they last heard from a leader. So every acknowledged
    /// renewal happened before this node won, and the lease it promised ends at most TTL
    /// after now. Restarting every lease at `now + election_timeout` with its full TTL
    /// gives each at least its remaining time, plus the election timeout as a margin for
    /// clock rate differences between nodes (etcd's lessor `Promote` extends leases the
    /// same way). The minimum TTL should be well above the election timeout, or leases
    /// outlive themselves by more than they last.
    ///
    /// # Preconditions
    ///
    /// - Everything from earlier terms is applied: wait until the applied log id's term
    ///   equals the current term (the leader's blank entry is applied);
    ///   [`crate::raft::RaftNode::leader_ready`] says when.
    /// - RENEW on a leader must either be logged or answered only after a read index
    ///   ([`crate::raft::RaftNode::ensure_linearizable`]) confirms leadership; otherwise a
    ///   deposed leader could extend a lease the new leader then expires early.
    ///
    /// Deadlines of leases are local (they are not in the replicated state), so this
    /// changes nothing other nodes see; expiries reach them only as Tick entries.
    pub fn take_over(&self, now: u64, election_timeout: Duration) {
        let margin = u64::try_from(election_timeout.as_millis()).unwrap_or(u64::MAX);
        // Under the state lock: no entry applies while the leases move.
        let _st = self.shared.state.lock();
        self.table().restart_leases(now.saturating_add(margin));
    }

    #[allow(clippy::result_large_err)] // openraft's error type
    fn apply_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<Vec<Response>, StorageError> {
        let table = self.table();
        let mut st = self.shared.state.lock();
        let mut out = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let response = match entry.payload {
                EntryPayload::Blank => {
                    let term = log_id.leader_id.term;
                    if term < MAX_FLOOR_TERM {
                        table.raise_token_floor(term << EPOCH_SHIFT);
                    }
                    st.epoch = st.epoch.max(term);
                    Response::default()
                }
                EntryPayload::Normal(Request(bytes)) => {
                    let mut r = if super::batch::is_batch(&bytes) {
                        apply_batch(&table, &mut st, log_id, &bytes)?
                    } else {
                        apply_command(&table, &mut st, log_id, &bytes)?
                    };
                    if let Some(sink) = self.shared.sink.get() {
                        if !r.events.is_empty() {
                            sink(&mut r.events);
                            r.events.clear();
                        }
                    }
                    r
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(log_id), m);
                    Response::default()
                }
            };
            st.last_applied = Some(log_id);
            out.push(response);
        }
        Ok(out)
    }

    /// Draws a snapshot of the machine now (under the state lock) and encodes it.
    fn draw(&self) -> (SnapshotMeta, Vec<u8>) {
        let (meta, state) = {
            let st = self.shared.state.lock();
            let image = self.table().export();
            let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let snapshot_id = match st.last_applied {
                Some(l) => format!(
                    "{}-{}-{}-{seq}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                ),
                None => format!("none-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: st.last_applied,
                last_membership: st.membership.clone(),
                snapshot_id,
            };
            let state = State {
                epoch: st.epoch,
                now: st.now,
                next_request: st.max_request.saturating_add(1),
                sessions: st.sessions.clone(),
                limits: st.limits.clone(),
                table: image,
            };
            (meta, state)
        };
        let bytes = encode_snapshot(&meta, &image_codec::encode(&state));
        (meta, bytes)
    }

    async fn save(&self, meta: &SnapshotMeta, bytes: Vec<u8>) -> Result<(), StorageError> {
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let shared = self.shared.clone();
        let signature = meta.signature();
        tokio::task::spawn_blocking(move || shared.snapshots.save(index, &bytes).map(|_| ()))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), io(e)))?
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), io(e)))?;
        Ok(())
    }
}

/// Applies one command record; a record that does not decode changes nothing anywhere
/// (the leader checks records before proposing them, so only a version mismatch gets
/// here).
#[allow(clippy::result_large_err)] // openraft's error type
fn apply_command(
    table: &LockTable,
    st: &mut Applied,
    log_id: LogId,
    bytes: &[u8],
) -> Result<Response, StorageError> {
    let entry = match CommandEntry::decode(bytes) {
        Ok(e) => e,
        Err(e) => {
            error!(%log_id, error = %e, "a committed entry does not decode; skipped on every node");
            return Ok(Response::default());
        }
    };
    match &entry.command {
        Command::Start { epoch, shards } => {
            if *shards as usize != table.shard_count() {
                // Tokens depend on the shard count: applying on would diverge silently.
                let e = format!(
                    "a Start entry names {shards} shards but this node's table has {}",
                    table.shard_count()
                );
                return Err(StorageIOError::apply(log_id, AnyError::error(e)).into());
            }
            st.epoch = st.epoch.max(*epoch);
        }
        Command::OpenSession { session, kind } => {
            st.sessions.insert(*session, kind.clone());
        }
        Command::CloseSession { session } | Command::EndSession { session, .. } => {
            st.sessions.remove(session);
        }
        Command::Acquire { req, .. } => st.max_request = st.max_request.max(req.id.0),
        Command::MultiAcquire { req, .. } => st.max_request = st.max_request.max(req.id.0),
        Command::Convert { request, .. } => st.max_request = st.max_request.max(request.0),
        Command::SetLimit { limit, value, .. } => {
            st.limits.insert(*limit, *value);
        }
        _ => {}
    }
    // The table's time never goes back: entries proposed concurrently by a leader's
    // connections may carry times slightly out of log order. Deterministic: `st.now` is
    // replicated state.
    st.now = st.now.max(entry.now);
    let entry = CommandEntry {
        now: st.now,
        command: entry.command,
    };
    let mut events = Vec::new();
    let applied = apply(table, &entry, &mut events);
    Ok(Response {
        applied: Some(applied),
        events,
        batch: Vec::new(),
    })
}

/// Applies a batch entry's records in order: each record's outcome, all their events.
#[allow(clippy::result_large_err)] // openraft's error type
fn apply_batch(
    table: &LockTable,
    st: &mut Applied,
    log_id: LogId,
    bytes: &[u8],
) -> Result<Response, StorageError> {
    let records = match super::batch::records(bytes) {
        Ok(r) => r,
        Err(e) => {
            error!(%log_id, error = %e, "a committed batch does not decode; skipped on every node");
            return Ok(Response::default());
        }
    };
    let mut out = Response {
        batch: Vec::with_capacity(records.len()),
        ..Response::default()
    };
    for record in records {
        let mut r = apply_command(table, st, log_id, record)?;
        out.batch.push(r.applied);
        out.events.append(&mut r.events);
    }
    Ok(out)
}

/// Builds a table from a snapshot's state.
fn restore(meta: &SnapshotMeta, state: State, limits: &Limits) -> (LockTable, Applied) {
    let table = LockTable::new(
        state.table.shards.len(),
        with_set(limits, &state.limits),
        state.now,
    );
    table.import(&state.table, state.now);
    table.time_holds();
    let applied = Applied {
        last_applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        epoch: state.epoch,
        now: state.now,
        sessions: state.sessions,
        max_request: state.next_request.saturating_sub(1),
        limits: state.limits,
    };
    (table, applied)
}

fn encode_snapshot(meta: &SnapshotMeta, payload: &[u8]) -> Vec<u8> {
    // Plain structs, sets and maps into a Vec: cannot fail.
    let meta_bytes = postcard::to_allocvec(meta).expect("snapshot meta serializes");
    let mut out = Vec::with_capacity(12 + meta_bytes.len() + payload.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    let len = u32::try_from(meta_bytes.len()).expect("snapshot meta under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&meta_bytes);
    out.extend_from_slice(payload);
    out
}

/// Splits a snapshot into its meta and the payload bytes.
fn split_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), String> {
    if bytes.len() < 12 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("not a raft snapshot (bad magic)".into());
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let rest = &bytes[12..];
    if rest.len() < len {
        return Err(format!("meta of {len} bytes in {} bytes", rest.len()));
    }
    let meta: SnapshotMeta = postcard::from_bytes(&rest[..len]).map_err(|e| e.to_string())?;
    Ok((meta, &rest[len..]))
}

fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, State), String> {
    let (meta, payload) = split_snapshot(bytes)?;
    let state = image_codec::decode(payload).map_err(|e| e.to_string())?;
    Ok((meta, state))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, bytes) = self.draw();
        self.save(&meta, bytes.clone()).await?;
        info!(snapshot = %meta, bytes = bytes.len(), "raft snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let st = self.shared.state.lock();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.apply_entries(entries)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let (_, payload) = split_snapshot(&bytes).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e))
        })?;
        let state = image_codec::decode(payload)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), io(e)))?;
        // Stored with the meta openraft installs (the sender's header may name another
        // snapshot id); durable before the machine moves.
        let stored = encode_snapshot(meta, payload);
        self.save(meta, stored).await?;
        let (table, applied) = restore(meta, state, &self.shared.limits);
        if table.shard_count() != self.shared.shards {
            warn!(
                configured = self.shared.shards,
                snapshot = table.shard_count(),
                "installed a snapshot with another shard count; it wins (tokens depend on it)"
            );
        }
        let mut st = self.shared.state.lock();
        let now = applied.now;
        if let Some(hook) = self.shared.watch.get() {
            table.set_watch(hook.clone());
        }
        let table = Arc::new(table);
        *self.shared.table.write() = table.clone();
        *st = applied;
        if let Some(hook) = self.shared.watch.get() {
            // Watchers get the state of their keys in the new table.
            hook.sink.table_replaced(&table, now);
        }
        info!(snapshot = %meta, "raft snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let shared = self.shared.clone();
        let latest = tokio::task::spawn_blocking(move || {
            // A snapshot saved meanwhile may prune the file between listing and reading
            // it; the next listing finds the newer one.
            let mut result = shared.snapshots.load_latest();
            for _ in 0..2 {
                if result.is_ok() {
                    break;
                }
                result = shared.snapshots.load_latest();
            }
            result
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, io(e)))?
        .map_err(|e| StorageIOError::read_snapshot(None, io(e)))?;
        let Some(s) = latest else {
            return Ok(None);
        };
        let (meta, _) = split_snapshot(&s.data)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AcquireRequest, Mode, RequestId};
    use openraft::CommittedLeaderId;

    fn entry(term: u64, index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload,
        }
    }

    fn acquire(now: u64, session: u64, key: &[u8], id: u64) -> EntryPayload<TypeConfig> {
        let e = CommandEntry {
            now,
            command: Command::Acquire {
                session: SessionId(session),
                key,
                req: AcquireRequest {
                    id: RequestId(id),
                    mode: Mode::Exclusive,
                    reentrant: false,
                    ttl_ms: 10_000,
                    wait_ms: None,
                    policy: Default::default(),
                },
                value: None,
            },
        };
        EntryPayload::Normal(Request(e.to_vec()))
    }

    #[test]
    fn a_batch_applies_like_its_records_one_by_one() {
        let dir = temp("batch");
        let one = StateMachine::open(&dir.join("one"), 4, Limits::default()).expect("opens");
        let many = StateMachine::open(&dir.join("many"), 4, Limits::default()).expect("opens");
        let records: Vec<Vec<u8>> = [(1, b"a", 1), (2, b"a", 2), (1, b"b", 3)]
            .iter()
            .map(|&(s, k, id)| match acquire(5, s, k, id) {
                EntryPayload::Normal(Request(r)) => r,
                _ => unreachable!(),
            })
            .collect();
        let singles: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, r)| entry(1, i as u64 + 1, EntryPayload::Normal(Request(r.clone()))))
            .collect();
        let out_one = one.apply_entries(singles).expect("applies");
        let batch = super::super::batch::encode(&records);
        let out_many = many
            .apply_entries(vec![entry(1, 1, EntryPayload::Normal(Request(batch)))])
            .expect("applies");
        let expected: Vec<_> = out_one.iter().map(|r| r.applied.clone()).collect();
        assert_eq!(out_many[0].batch, expected);
        assert_eq!(
            one.table().export().canonical(),
            many.table().export().canonical()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("turnstile-raft-sm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn blank_entry_raises_the_floor_and_snapshots_round_trip() {
        let dir = temp("floor");
        let sm = StateMachine::open(&dir, 4, Limits::default()).expect("opens");
        let out = sm
            .apply_entries(vec![
                entry(3, 1, EntryPayload::Blank),
                entry(3, 2, acquire(10, 1, b"k", 1)),
                entry(3, 3, EntryPayload::Normal(Request(vec![0xff]))),
            ])
            .expect("applies");
        let Some(crate::durable::command::Applied::Acquire(
            crate::engine::AcquireOutcome::Granted(t),
        )) = &out[1].applied
        else {
            panic!("not granted: {out:?}");
        };
        assert!(t.0 > 3 << EPOCH_SHIFT, "token {t} above term 3's floor");
        assert_eq!(
            out[2].applied, None,
            "an undecodable record changes nothing"
        );
        assert_eq!(sm.last_applied().map(|l| l.index), Some(3));

        let (meta, bytes) = sm.draw();
        let (meta2, state) = decode_snapshot(&bytes).expect("decodes");
        assert_eq!(meta, meta2);
        let (table, applied) = restore(&meta2, state, &Limits::default());
        assert_eq!(table.export().canonical(), sm.table().export().canonical());
        assert_eq!(applied.now, 10);
        assert_eq!(applied.max_request, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
