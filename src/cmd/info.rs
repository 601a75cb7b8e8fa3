//! INFO: server state as `field:value` lines under `# Section` headers.
//!
//! # Format
//! `INFO [section]` -> bulk string. Sections: server, clients, locks, stats (with the
//! wait-time percentiles of queued ACQUIREs), persistence, replication; `all`/`default`
//! or no argument for every section; an unknown section gives an empty string.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::Ctx;

const SECTIONS: [&str; 6] = [
    "server",
    "clients",
    "locks",
    "stats",
    "persistence",
    "replication",
];

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let wanted: Vec<&str> = match args {
        [] => SECTIONS.to_vec(),
        [s] if s.eq_ignore_ascii_case(b"all")
            || s.eq_ignore_ascii_case(b"default")
            || s.eq_ignore_ascii_case(b"everything") =>
        {
            SECTIONS.to_vec()
        }
        words => SECTIONS
            .iter()
            .copied()
            .filter(|name| {
                words
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(name.as_bytes()))
            })
            .collect(),
    };
    let text = render(ctx, &wanted);
    ctx.out.bulk(text.as_bytes());
}

fn render(ctx: &Ctx, wanted: &[&str]) -> String {
    let shared = ctx.shared;
    let cfg = &shared.config;
    let table = shared.table();
    let engine = table.stats();
    let mode = if shared.cluster.is_some() {
        "cluster"
    } else {
        "standalone"
    };
    let net = &shared.stats;
    let mut s = String::new();
    for (i, section) in wanted.iter().enumerate() {
        if i > 0 {
            s.push_str("\r\n");
        }
        match *section {
            "server" => {
                let uptime = shared.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                let _ = write!(
                    s,
                    "# Server\r\nserver:turnstile\r\nturnstile_version:{}\r\nmode:{mode}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nshards:{}\r\ndefault_ttl_ms:{}\r\nmax_ttl_ms:{}\r\n",
                    env!("CARGO_PKG_VERSION"),
                    std::process::id(),
                    shared.addr.port(),
                    uptime,
                    uptime / 86_400,
                    table.shard_count(),
                    cfg.default_ttl_ms,
                    cfg.max_ttl_ms,
                );
            }
            "clients" => {
                let _ = write!(
                    s,
                    "# Clients\r\nconnected_clients:{}\r\ntotal_connections_received:{}\r\nrejected_connections:{}\r\nmaxclients:{}\r\n",
                    net.connections.load(Ordering::Relaxed),
                    net.total_connections.load(Ordering::Relaxed),
                    net.rejected_connections.load(Ordering::Relaxed),
                    cfg.max_connections,
                );
                let w = &ctx.shared.watches;
                let _ = write!(
                    s,
                    "watched_keys:{}\r\nwatches:{}\r\nwatch_messages:{}\r\nwatch_overflows:{}\r\n",
                    w.watched_keys(),
                    w.watches(),
                    w.messages.load(Ordering::Relaxed),
                    w.overflows.load(Ordering::Relaxed),
                );
            }
            "locks" => {
                let _ = write!(
                    s,
                    "# Locks\r\nkeys:{}\r\nholds:{}\r\nwaiters:{}\r\nmax_keys:{}\r\nmax_waiters_per_key:{}\r\nmax_holds_per_session:{}\r\n",
                    engine.keys, engine.holds, engine.waiters, cfg.max_keys, cfg.max_waiters_per_key, cfg.max_holds_per_session,
                );
            }
            "stats" => {
                let (waits, p50, p99, p999, max) = net.wait_percentiles();
                let _ = write!(
                    s,
                    "# Stats\r\ntotal_commands_processed:{}\r\nacquires:{}\r\ngrants:{}\r\nreentrant_acquires:{}\r\nqueued:{}\r\nwould_block:{}\r\nreleases:{}\r\nrenews:{}\r\nexpiries:{}\r\ntimeouts:{}\r\ncancels:{}\r\nsession_releases:{}\r\ndeadlocks:{}\r\nwrongtype:{}\r\nlimit_refusals:{}\r\nprotocol_errors:{}\r\nwaits:{}\r\nwait_p50_us:{}\r\nwait_p99_us:{}\r\nwait_p999_us:{}\r\nwait_max_us:{}\r\n",
                    net.commands.load(Ordering::Relaxed),
                    engine.acquires,
                    engine.grants,
                    engine.reentrant,
                    engine.queued,
                    engine.would_block,
                    engine.releases,
                    engine.renews,
                    engine.expiries,
                    engine.timeouts,
                    engine.cancels,
                    engine.session_releases,
                    engine.deadlocks,
                    engine.wrongtype,
                    engine.limits,
                    net.protocol_errors.load(Ordering::Relaxed),
                    waits,
                    p50,
                    p99,
                    p999,
                    max,
                );
                timing_lines(&mut s, shared, &table);
            }
            "persistence" => match shared.store.persistence() {
                None => match &shared.cluster {
                    None => s.push_str("# Persistence\r\npersistence:none\r\nfsync:none\r\n"),
                    Some(c) => {
                        let _ = write!(
                            s,
                            "# Persistence\r\npersistence:raft\r\ndata_dir:{}\r\nfsync:{}\r\n",
                            cfg.data_dir.display(),
                            fsync_name(cfg.fsync)
                        );
                        wal_lines(&mut s, &c.node().wal_stats());
                    }
                },
                Some(p) => {
                    let fsync = fsync_name(p.fsync);
                    let _ = write!(
                            s,
                            "# Persistence\r\npersistence:wal\r\ndata_dir:{}\r\nfsync:{}\r\nepoch:{}\r\nlog_last_index:{}\r\nlog_durable_index:{}\r\nlog_first_index:{}\r\nsnapshot_last_index:{}\r\nsnapshots_saved:{}\r\nsnapshot_in_progress:{}\r\n",
                            p.dir.display(),
                            fsync,
                            p.epoch,
                            p.last_index,
                            p.durable_index,
                            p.first_index,
                            p.snapshot_index,
                            p.snapshots_saved,
                            u8::from(p.snapshot_in_progress),
                        );
                    wal_lines(&mut s, &p.wal);
                    let _ = write!(s, "snapshot_last_duration_ms:{}\r\n", p.snapshot_last_ms);
                    let r = p.recovery;
                    let _ = write!(
                        s,
                        "recovery_snapshot_index:{}\r\nrecovery_replayed_records:{}\r\nrecovery_restored_holds:{}\r\nrecovery_restored_sessions:{}\r\nrecovery_elapsed_ms:{}\r\n",
                        r.snapshot_index,
                        r.replayed_records,
                        r.restored_holds,
                        r.restored_sessions,
                        r.elapsed_ms,
                    );
                }
            },
            "replication" => match &shared.cluster {
                None => s.push_str(
                    "# Replication\r\nrole:leader\r\nmode:standalone\r\nconnected_followers:0\r\n",
                ),
                Some(c) => replication(&mut s, c),
            },
            _ => {}
        }
    }
    s
}

/// The /metrics histograms as percentiles, Redis `cmdstat` style: acquire latency and
/// wait by mode (microseconds), hold duration (milliseconds), queue lengths now.
fn timing_lines(s: &mut String, shared: &crate::server::Shared, table: &crate::server::TableRef) {
    use crate::server::stats::{percentiles, ModeLabel};
    let line = |s: &mut String, name: &str, unit: &str, h: &hdrhistogram::Histogram<u64>| {
        let (n, p50, p99, p999, max) = percentiles(h);
        let _ = write!(
            s,
            "{name}:count={n},p50_{unit}={p50},p99_{unit}={p99},p999_{unit}={p999},max_{unit}={max}\r\n"
        );
    };
    for m in ModeLabel::ALL {
        let h = shared.stats.latency_histogram(Some(m));
        line(s, &format!("acquire_latency_{}", m.name()), "us", &h);
    }
    for m in ModeLabel::ALL {
        let h = shared.stats.wait_histogram(Some(m));
        line(s, &format!("wait_{}", m.name()), "us", &h);
    }
    if let Some(h) = table.hold_durations() {
        line(s, "hold_duration", "ms", &h);
    }
    let mut q = table.queue_lengths();
    q.sort_unstable();
    let at = |p: f64| q.get(((q.len() as f64 * p) as usize).min(q.len().saturating_sub(1)));
    let _ = write!(
        s,
        "queue_length:keys={},p50={},p99={},max={}\r\n",
        q.len(),
        at(0.5).copied().unwrap_or(0),
        at(0.99).copied().unwrap_or(0),
        q.last().copied().unwrap_or(0),
    );
}

fn fsync_name(mode: crate::wal::FsyncMode) -> String {
    match mode {
        crate::wal::FsyncMode::Always => "always".to_string(),
        crate::wal::FsyncMode::Never => "never".to_string(),
        crate::wal::FsyncMode::Interval(d) => format!("interval:{}", d.as_millis()),
    }
}

/// The log's fsync latency and batch size, as /metrics has them.
fn wal_lines(s: &mut String, w: &crate::wal::WalStats) {
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let _ = write!(
        s,
        "wal_fsyncs:{}\r\nwal_fsync_p50_us:{}\r\nwal_fsync_p99_us:{}\r\nwal_fsync_max_us:{}\r\nwal_batch_mean_records:{:.1}\r\nwal_batch_max_records:{}\r\n",
        w.fsyncs,
        q(&w.fsync_micros, 0.5),
        q(&w.fsync_micros, 0.99),
        w.fsync_micros.max(),
        w.batch_records.mean(),
        w.batch_records.max(),
    );
}

/// INFO replication in cluster mode: this node's part, the leader, the log positions and,
/// on the leader, how far each follower is behind.
pub(crate) fn replication(s: &mut String, c: &crate::server::cluster::Cluster) {
    let m = c.metrics();
    let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let _ = write!(
        s,
        "# Replication\r\nrole:{}\r\nmode:cluster\r\nnode_id:{}\r\nraft_role:{}\r\nterm:{}\r\nleader_id:{}\r\nleader_addr:{}\r\nlast_log_index:{}\r\ncommit_index:{}\r\napplied_index:{}\r\nsnapshot_index:{}\r\nvoters:{}\r\nlearners:{}\r\nconnected_followers:{}\r\nmillis_since_quorum_ack:{}\r\n",
        crate::server::cluster::role_name(Some(c)),
        m.id,
        m.role.name(),
        m.term,
        opt(m.leader),
        m.leader_addr.as_ref().map_or("", |a| a.client.as_str()),
        opt(m.last_log_index),
        opt(m.commit_index),
        opt(m.applied_index),
        opt(m.snapshot_index),
        ids(&m.voters),
        ids(&m.learners),
        m.replication.len(),
        opt(m.millis_since_quorum_ack),
    );
    for p in &m.replication {
        let _ = write!(
            s,
            "follower_{}_matched:{}\r\nfollower_{}_lag:{}\r\n",
            p.id,
            opt(p.matched),
            p.id,
            p.lag
        );
    }
}
