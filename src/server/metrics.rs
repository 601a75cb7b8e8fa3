//! Prometheus metrics over HTTP (`--metrics-addr`): `GET /metrics` in the text
//! exposition format, names after Prometheus's conventions (`turnstile_` prefix, `_total`
//! for counters, base units: seconds).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection, a bounded
//! request head, a read timeout, `Connection: close`. It shares nothing with the lock
//! service's port, so a scraper cannot disturb lock traffic beyond reading counters.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

use super::stats::ModeLabel;
use super::Shared;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Buckets of the wait-time histogram, in seconds.
const WAIT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// Serves `GET /metrics` on `listener` until `stop` changes.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &shared).await {
                debug!(%peer, error = %e, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(complete, Ok(Ok(()))) {
        return Ok(());
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let (status, kind, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics\r" {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(shared),
        )
    } else {
        (
            "404 Not Found",
            "text/plain",
            "try GET /metrics\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The exposition text.
pub fn render(shared: &Shared) -> String {
    let e = shared.table().stats();
    let net = &shared.stats;
    let mut s = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            s,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    for (name, help, v) in [
        (
            "turnstile_acquires_total",
            "ACQUIRE commands applied.",
            e.acquires,
        ),
        (
            "turnstile_grants_total",
            "Holds granted, at once or from the queue.",
            e.grants,
        ),
        (
            "turnstile_reentrant_acquires_total",
            "Reentrant re-acquires.",
            e.reentrant,
        ),
        ("turnstile_queued_total", "Requests that queued.", e.queued),
        (
            "turnstile_would_block_total",
            "Try-locks that found the key busy.",
            e.would_block,
        ),
        (
            "turnstile_releases_total",
            "RELEASE commands that released something.",
            e.releases,
        ),
        ("turnstile_renewals_total", "Lease renewals.", e.renews),
        (
            "turnstile_expiries_total",
            "Holds lost to lease expiry.",
            e.expiries,
        ),
        (
            "turnstile_wait_timeouts_total",
            "Queued requests whose WAIT ran out.",
            e.timeouts,
        ),
        (
            "turnstile_cancels_total",
            "Queued requests cancelled.",
            e.cancels,
        ),
        (
            "turnstile_session_releases_total",
            "Holds released because their session ended.",
            e.session_releases,
        ),
        (
            "turnstile_forced_releases_total",
            "Holds dropped by an administrator (ADMIN FORCE-RELEASE).",
            e.forced_releases,
        ),
        (
            "turnstile_deadlocks_total",
            "Requests refused with DEADLOCK.",
            e.deadlocks,
        ),
        (
            "turnstile_wrongtype_total",
            "Requests refused with WRONGTYPE.",
            e.wrongtype,
        ),
        (
            "turnstile_limit_refusals_total",
            "Requests refused with LIMIT.",
            e.limits,
        ),
        (
            "turnstile_commands_total",
            "Commands processed.",
            net.commands.load(Ordering::Relaxed),
        ),
        (
            "turnstile_notheld_total",
            "RELEASE and RENEW answered NOTHELD (the lease had run out).",
            net.notheld.load(Ordering::Relaxed),
        ),
        (
            "turnstile_protocol_errors_total",
            "Connections closed for unframeable input.",
            net.protocol_errors.load(Ordering::Relaxed),
        ),
        (
            "turnstile_connections_accepted_total",
            "Connections accepted.",
            net.total_connections.load(Ordering::Relaxed),
        ),
        (
            "turnstile_connections_rejected_total",
            "Connections refused by the connection limit.",
            net.rejected_connections.load(Ordering::Relaxed),
        ),
    ] {
        metric(name, "counter", help, v as f64);
    }
    for (name, help, v) in [
        ("turnstile_holds", "Holds now.", e.holds),
        ("turnstile_waiters", "Queued requests now.", e.waiters),
        (
            "turnstile_keys",
            "Keys with holders or waiters now.",
            e.keys,
        ),
        (
            "turnstile_connections",
            "Open connections.",
            net.connections.load(Ordering::Relaxed),
        ),
        (
            "turnstile_binary_sessions",
            "Binary-protocol sessions (attached or detached).",
            shared.sessions.len() as u64,
        ),
    ] {
        metric(name, "gauge", help, v as f64);
    }
    if let Some(p) = shared.store.persistence() {
        for (name, help, v) in [
            (
                "turnstile_log_last_index",
                "Last log index assigned.",
                p.last_index,
            ),
            (
                "turnstile_log_durable_index",
                "Last log index durable.",
                p.durable_index,
            ),
            (
                "turnstile_log_first_index",
                "First log index still in the segment files.",
                p.first_index,
            ),
            (
                "turnstile_snapshot_last_index",
                "Last log index of the newest snapshot.",
                p.snapshot_index,
            ),
            (
                "turnstile_epoch",
                "Starts of this data directory (tokens are above epoch << 40).",
                p.epoch,
            ),
        ] {
            metric(name, "gauge", help, v as f64);
        }
        metric(
            "turnstile_snapshots_total",
            "counter",
            "Snapshots saved since start.",
            p.snapshots_saved as f64,
        );
    }
    if let Some(c) = &shared.cluster {
        let m = c.metrics();
        for (name, help, v) in [
            (
                "turnstile_raft_is_leader",
                "1 if this node leads the cluster and serves changes.",
                u64::from(c.is_leading()),
            ),
            ("turnstile_raft_term", "The current Raft term.", m.term),
            (
                "turnstile_raft_leader_id",
                "The leader this node knows of (0: none).",
                m.leader.unwrap_or(0),
            ),
            (
                "turnstile_raft_last_log_index",
                "Last index in this node's log.",
                m.last_log_index.unwrap_or(0),
            ),
            (
                "turnstile_raft_commit_index",
                "Last index this node knows committed.",
                m.commit_index.unwrap_or(0),
            ),
            (
                "turnstile_raft_applied_index",
                "Last index applied to the lock table.",
                m.applied_index.unwrap_or(0),
            ),
            (
                "turnstile_raft_voters",
                "Voting members.",
                m.voters.len() as u64,
            ),
        ] {
            metric(name, "gauge", help, v as f64);
        }
        let name = "turnstile_raft_follower_lag";
        let _ = write!(
            s,
            "# HELP {name} Entries the leader has that a follower is not known to have.\n# TYPE {name} gauge\n"
        );
        for p in &m.replication {
            let _ = writeln!(s, "{name}{{follower=\"{}\"}} {}", p.id, p.lag);
        }
    }
    // Acquire latency (answered at once) and wait (queued until granted), by mode.
    let modes = ModeLabel::ALL.map(|m| (m.name(), shared.stats.latency_histogram(Some(m))));
    histogram_by_mode(
        &mut s,
        "turnstile_acquire_latency_seconds",
        "ACQUIREs answered at once (granted, busy, refused): from the arrival of the request to its reply, durable.",
        &modes,
        &WAIT_BUCKETS,
    );
    let modes = ModeLabel::ALL.map(|m| (m.name(), shared.stats.wait_histogram(Some(m))));
    histogram_by_mode(
        &mut s,
        "turnstile_wait_seconds",
        "How long queued ACQUIREs waited until granted.",
        &modes,
        &WAIT_BUCKETS,
    );
    if let Some(h) = shared.table().hold_durations() {
        histogram(
            &mut s,
            "turnstile_hold_duration_seconds",
            "How long holds were held, from grant to release, expiry, forced release or session end.",
            &h,
            &HOLD_BUCKETS,
            1e3,
        );
    }
    queue_lengths(&mut s, &shared.table().queue_lengths());
    let wal = match (&shared.cluster, shared.store.persistence()) {
        (Some(c), _) => Some((c.node().wal_stats(), None)),
        (None, Some(p)) => Some((p.wal, Some(p.snapshot_last_ms))),
        (None, None) => None,
    };
    if let Some((w, snapshot_ms)) = wal {
        histogram(
            &mut s,
            "turnstile_wal_fsync_seconds",
            "How long each fsync of the write-ahead log took.",
            &w.fsync_micros,
            &FSYNC_BUCKETS,
            1e6,
        );
        histogram(
            &mut s,
            "turnstile_wal_fsync_batch_records",
            "Log records each fsync made durable (group commit).",
            &w.batch_records,
            &BATCH_BUCKETS,
            1.0,
        );
        if let Some(ms) = snapshot_ms {
            let _ = write!(
                s,
                "# HELP turnstile_snapshot_duration_seconds How long the newest snapshot took, drawing to saved.\n# TYPE turnstile_snapshot_duration_seconds gauge\nturnstile_snapshot_duration_seconds {}\n",
                ms as f64 / 1e3
            );
        }
    }
    s
}

/// Hold durations worth telling apart, in seconds.
const HOLD_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
];

/// Queue lengths worth telling apart.
const QUEUE_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// The queue length of each key with waiters, as a histogram taken at scrape time (a
/// count of keys per bucket, not a count of events: it can go down).
fn queue_lengths(s: &mut String, lengths: &[usize]) {
    let name = "turnstile_queue_length";
    let _ = write!(
        s,
        "# HELP {name} Queued requests per key with waiters, at scrape time (one observation per key).\n# TYPE {name} histogram\n"
    );
    for le in QUEUE_BUCKETS {
        let n = lengths.iter().filter(|&&l| l as u64 <= le).count();
        let _ = writeln!(s, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {}", lengths.len());
    let _ = writeln!(s, "{name}_sum {}", lengths.iter().sum::<usize>());
    let _ = writeln!(s, "{name}_count {}", lengths.len());
}

/// A histogram of microseconds per `mode` label, in seconds.
fn histogram_by_mode(
    s: &mut String,
    name: &str,
    help: &str,
    series: &[(&str, hdrhistogram::Histogram<u64>)],
    buckets: &[f64],
) {
    let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    for (mode, h) in series {
        let label = format!("mode=\"{mode}\",");
        series_lines(s, name, &label, h, buckets, 1e6);
    }
}

/// fsync durations worth telling apart, in seconds.
const FSYNC_BUCKETS: [f64; 10] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
];

/// Records per fsync.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Writes an HDR histogram as a Prometheus histogram; `scale` turns recorded units into
/// the metric's (1e6: microseconds to seconds).
fn histogram(
    s: &mut String,
    name: &str,
    help: &str,
    h: &hdrhistogram::Histogram<u64>,
    buckets: &[f64],
    scale: f64,
) {
    let _ = write!(s, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    series_lines(s, name, "", h, buckets, scale);
}

/// The bucket, sum and count lines of one series; `label` is empty or ends with a comma.
fn series_lines(
    s: &mut String,
    name: &str,
    label: &str,
    h: &hdrhistogram::Histogram<u64>,
    buckets: &[f64],
    scale: f64,
) {
    for le in buckets {
        let upto = (le * scale) as u64;
        let count = if h.is_empty() {
            0
        } else {
            h.count_between(0, upto)
        };
        let _ = writeln!(s, "{name}_bucket{{{label}le=\"{le}\"}} {count}");
    }
    let _ = writeln!(s, "{name}_bucket{{{label}le=\"+Inf\"}} {}", h.len());
    let label = label.trim_end_matches(',');
    let braces = if label.is_empty() {
        String::new()
    } else {
        format!("{{{label}}}")
    };
    let _ = writeln!(
        s,
        "{name}_sum{braces} {}",
        h.mean() * h.len() as f64 / scale
    );
    let _ = writeln!(s, "{name}_count{braces} {}", h.len());
}
