//! Storage tests: openraft's own conformance suite against the WAL log store and the
//! lock-table state machine, and a reopen test of the log store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

use super::log_store::{LogOptions, LogStore};
use super::state_machine::StateMachine;
use super::types::typ::{Entry, LogId, StorageError, Vote};
use super::types::{Request, TypeConfig};
use crate::engine::Limits;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "turnstile-raft-unit-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_log(dir: &TempDir) -> LogStore {
    let mut opts = LogOptions::new(dir.0.join("raft"));
    opts.segment_size = 512;
    LogStore::open(&opts).expect("log opens").0
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new("suite");
        let log = open_log(&dir);
        let sm = StateMachine::open(&dir.0.join("snapshots"), 4, Limits::default())
            .expect("state machine opens");
        Ok((dir, log, sm))
    }
}

type S = Suite<TypeConfig, LogStore, StateMachine, Builder, TempDir>;

/// openraft's storage conformance suite (`Suite::test_all`), case by case, minus nine
/// cases that append with a hole before the first entry (an append at index 1 or 2 to an
/// empty log) or over existing entries without truncating first. openraft itself never
/// does either ("there must not be a hole in logs"; conflicting entries are truncated
/// before they are replaced), and the WAL refuses both by design (`append_at` checks the
/// index), so those cases test a looser store than openraft needs:
/// `last_membership_in_log`, `last_membership_in_log_multi_step`,
/// `get_membership_from_log_and_empty_sm`, `get_membership_from_log_le_sm_last_applied`,
/// `get_membership_from_log_gt_sm_last_applied_{1,2}`,
/// `get_initial_state_membership_from_log_and_sm`, `get_initial_state_last_log_lt_sm`,
/// `get_initial_state_re_apply_committed`.
///
/// Paused time: some cases sleep a second to let a background purge finish.
#[tokio::test(start_paused = true)]
async fn openraft_storage_suite() {
    type Fut = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StorageError>>>>;
    macro_rules! cases {
        ($($name:ident),* $(,)?) => {
            vec![$((
                stringify!($name),
                Box::pin(async {
                    let (_dir, log, sm) = Builder.build().await?;
                    S::$name(log, sm).await
                }) as Fut,
            )),*]
        };
    }
    let tests: Vec<(&str, Fut)> = cases![
        last_membership_in_log_initial,
        get_membership_initial,
        get_membership_from_empty_log_and_sm,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_log_ids,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    ];
    let mut failed = Vec::new();
    for (name, t) in tests {
        if let Err(e) = t.await {
            failed.push(format!("{name}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    S::transfer_snapshot(&Builder)
        .await
        .expect("transfer_snapshot");
}

fn id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn normal(term: u64, index: u64) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Normal(Request(vec![index as u8; 40])),
    }
}

#[tokio::test]
async fn log_survives_reopen_after_truncate_and_purge() {
    let dir = TempDir::new("reopen");
    {
        let mut log = open_log(&dir);
        log.blocking_append((0..30).map(|i| normal(1, i)))
            .await
            .expect("appends");
        // A new leader's entries replace the tail from 20 on.
        log.truncate(id(1, 20)).await.expect("truncates");
        log.blocking_append((20..25).map(|i| normal(2, i)))
            .await
            .expect("appends");
        log.purge(id(1, 9)).await.expect("purges");
        log.save_vote(&Vote::new_committed(2, 1))
            .await
            .expect("vote saved");
        let _ = log.try_close();
    }
    let mut log = open_log(&dir);
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(id(1, 9)));
    assert_eq!(state.last_log_id, Some(id(2, 24)));
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(2, 1))
    );
    let entries = log.try_get_log_entries(0..100).await.expect("reads");
    let ids: Vec<LogId> = entries.iter().map(|e| e.log_id).collect();
    let expected: Vec<LogId> = (10..20)
        .map(|i| id(1, i))
        .chain((20..25).map(|i| id(2, i)))
        .collect();
    assert_eq!(ids, expected);
    assert!(
        matches!(&entries[0].payload, EntryPayload::Normal(Request(b)) if b == &vec![10u8; 40])
    );

    // Purging past the end (a snapshot install) leaves an empty log that continues there.
    log.purge(id(3, 40)).await.expect("purges");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(id(3, 40)));
    log.blocking_append([normal(3, 41)])
        .await
        .expect("appends after the purge");
    drop(log);
    let mut log = open_log(&dir);
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(id(3, 40)));
    assert_eq!(state.last_log_id, Some(id(3, 41)));
}

/// The in-memory tail keeps recent entries for reads (replication, apply) but stays
/// bounded; entries that left it are read from the WAL, and a truncate or purge across
/// both parts leaves the same log as before.
#[tokio::test]
async fn the_log_tail_stays_bounded_and_reads_match_the_wal() {
    use super::log_store::TAIL_MAX_ENTRIES;
    let dir = TempDir::new("tail");
    let mut log = open_log(&dir);
    let total = TAIL_MAX_ENTRIES as u64 + 1_500;
    let mut next = 0;
    while next < total {
        let end = (next + 97).min(total);
        log.blocking_append((next..end).map(|i| normal(1, i)))
            .await
            .expect("appends");
        next = end;
    }
    assert!(
        log.tail_len() <= TAIL_MAX_ENTRIES,
        "tail {}",
        log.tail_len()
    );
    let check = |entries: Vec<Entry>, from: u64, to: u64| {
        let ids: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(ids, (from..to).collect::<Vec<_>>());
        for e in &entries {
            assert!(
                matches!(&e.payload, EntryPayload::Normal(Request(b)) if b == &vec![e.log_id.index as u8; 40]),
                "entry {} payload",
                e.log_id.index
            );
        }
    };
    // Across the boundary between the WAL and the tail.
    check(
        log.try_get_log_entries(0..total).await.expect("reads"),
        0,
        total,
    );
    // Truncate inside the evicted part: the tail empties, the WAL serves what is left.
    log.truncate(id(1, 1_000)).await.expect("truncates");
    log.blocking_append((1_000..1_010).map(|i| normal(2, i)))
        .await
        .expect("appends");
    let entries = log.try_get_log_entries(990..2_000).await.expect("reads");
    assert_eq!(entries.len(), 20);
    assert_eq!(entries[9].log_id, id(1, 999));
    assert_eq!(entries[10].log_id, id(2, 1_000));
    log.purge(id(1, 500)).await.expect("purges");
    let entries = log.try_get_log_entries(0..2_000).await.expect("reads");
    assert_eq!(entries.first().map(|e| e.log_id), Some(id(1, 501)));
    assert_eq!(entries.last().map(|e| e.log_id), Some(id(2, 1_009)));
    drop(log);
    let mut log = open_log(&dir);
    let reopened = log.try_get_log_entries(0..2_000).await.expect("reads");
    assert_eq!(reopened.len(), entries.len());
    assert!(reopened
        .iter()
        .zip(&entries)
        .all(|(a, b)| a.log_id == b.log_id));
}
