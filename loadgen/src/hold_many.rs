//! hold-many: acquire N distinct locks with long leases and keep them, to measure the rate
//! of acquires into a growing table and the server's memory per held lock (its RSS from
//! /proc before and while holding, divided by N). Then release them all.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;

use crate::report::{HoldMany, Params, RunResult};
use crate::run::{connect_all, run_id, spawn_live_line, Live};
use crate::stats::{self, Latency};
use crate::target::{AcquireRequest, Acquired, Conn, Grant, Mode, Target, TargetSpec, WithTarget};

#[derive(Debug, Clone)]
pub struct HoldManyConfig {
    pub locks: u64,
    pub connections: usize,
    pub ttl: Duration,
    /// The server's process, for its RSS; None: memory is not measured.
    pub server_pid: Option<u32>,
    /// How long to let the server settle before reading its RSS while holding.
    pub settle: Duration,
    pub threads: usize,
    pub live: bool,
}

impl HoldManyConfig {
    pub fn label(&self) -> String {
        format!("hold-many n={} c={}", self.locks, self.connections)
    }
}

/// Runs hold-many against a spec's target.
pub struct HoldManyOn<'a> {
    pub spec: &'a TargetSpec,
    pub cfg: &'a HoldManyConfig,
}

impl WithTarget for HoldManyOn<'_> {
    type Output = anyhow::Result<RunResult>;

    async fn call<T: Target>(self, target: T) -> anyhow::Result<RunResult> {
        run(Arc::new(target), self.spec, self.cfg).await
    }
}

/// The resident set of a process in KiB, from /proc/PID/status (VmRSS).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --server-pid right?)"))?;
    parse_vmrss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let n = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(n)
}

/// One connection's share of the locks: [first, first + count).
fn share(locks: u64, connections: usize, id: usize) -> (u64, u64) {
    let c = connections as u64;
    let id = id as u64;
    let base = locks / c;
    let extra = locks % c;
    let count = base + u64::from(id < extra);
    let first = id * base + id.min(extra);
    (first, count)
}

fn hold_key(run: &str, i: u64, key: &mut Vec<u8>) {
    key.clear();
    key.extend_from_slice(b"lg:");
    key.extend_from_slice(run.as_bytes());
    key.extend_from_slice(b":h:");
    key.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
}

struct Phase<C> {
    conn: C,
    grants: Vec<(u64, Grant)>,
    hist: hdrhistogram::Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

pub async fn run<T: Target>(
    target: Arc<T>,
    spec: &TargetSpec,
    cfg: &HoldManyConfig,
) -> anyhow::Result<RunResult> {
    if cfg.connections == 0 || cfg.locks == 0 {
        bail!("hold-many needs at least one connection and one lock");
    }
    let conns = connect_all(&target, cfg.connections).await?;
    let run = Arc::new(run_id());
    let rss_before = cfg.server_pid.map(rss_kib).transpose()?;

    // Acquire.
    let live = Live::new(cfg.connections);
    let start = Instant::now();
    let line = cfg.live.then(|| {
        spawn_live_line(
            Arc::clone(&live),
            format!("{} {} acquire", spec.label(), cfg.label()),
            start,
            Some(cfg.locks),
        )
    });
    let mut tasks = Vec::new();
    for (id, conn) in conns.into_iter().enumerate() {
        let (first, count) = share(cfg.locks, cfg.connections, id);
        let (live, run, ttl) = (Arc::clone(&live), Arc::clone(&run), cfg.ttl);
        tasks.push(tokio::spawn(async move {
            let mut p = Phase {
                conn,
                grants: Vec::with_capacity(count as usize),
                hist: stats::histogram(),
                errors: 0,
                first_error: None,
            };
            let mut key = Vec::with_capacity(32);
            for i in first..first + count {
                hold_key(&run, i, &mut key);
                let req = AcquireRequest {
                    key: &key,
                    mode: Mode::Exclusive,
                    ttl,
                    wait: None,
                };
                let t0 = Instant::now();
                match p.conn.acquire(&req).await {
                    Ok(Acquired::Granted(g)) => {
                        let d = t0.elapsed();
                        live.op(id, d);
                        stats::record(&mut p.hist, d);
                        p.grants.push((i, g));
                    }
                    Ok(Acquired::TimedOut) => {
                        live.error(id);
                        p.errors += 1;
                        p.first_error
                            .get_or_insert_with(|| "an acquire of a free key timed out".into());
                    }
                    Err(e) => {
                        live.error(id);
                        p.errors += 1;
                        p.first_error = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            p
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    for t in tasks {
        held.push(t.await.context("acquire task")?);
    }
    let acquire_elapsed = start.elapsed();
    if let Some(l) = line {
        l.abort();
    }
    let acquired: u64 = held.iter().map(|p| p.grants.len() as u64).sum();

    tokio::time::sleep(cfg.settle).await;
    let rss_held = cfg.server_pid.map(rss_kib).transpose()?;

    // Release.
    let live = Live::new(cfg.connections);
    let start = Instant::now();
    let line = cfg.live.then(|| {
        spawn_live_line(
            Arc::clone(&live),
            format!("{} {} release", spec.label(), cfg.label()),
            start,
            Some(acquired),
        )
    });
    let mut acquire_hist = stats::histogram();
    let mut errors = 0;
    let mut first_error = None;
    let mut tasks = Vec::new();
    for (id, p) in held.into_iter().enumerate() {
        acquire_hist.add(&p.hist).expect("same bounds");
        errors += p.errors;
        if first_error.is_none() {
            first_error = p.first_error;
        }
        let (live, run) = (Arc::clone(&live), Arc::clone(&run));
        let Phase {
            mut conn, grants, ..
        } = p;
        tasks.push(tokio::spawn(async move {
            let mut key = Vec::with_capacity(32);
            let (mut errors, mut first_error) = (0u64, None);
            for (i, g) in grants {
                hold_key(&run, i, &mut key);
                let t0 = Instant::now();
                match conn.release(&key, g).await {
                    Ok(()) => live.op(id, t0.elapsed()),
                    Err(e) => {
                        live.error(id);
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            if let Err(e) = conn.close().await {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            (errors, first_error)
        }));
    }
    for t in tasks {
        let (e, first) = t.await.context("release task")?;
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let release_elapsed = start.elapsed();
    if let Some(l) = line {
        l.abort();
    }

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let bytes_per_lock = match (rss_before, rss_held) {
        (Some(b), Some(a)) if acquired > 0 => {
            Some((a as f64 - b as f64) * 1024.0 / acquired as f64)
        }
        _ => None,
    };
    Ok(RunResult {
        target: spec.label().into(),
        addr: spec.addr.clone(),
        workload: "hold-many".into(),
        label: cfg.label(),
        params: Params {
            connections: cfg.connections,
            threads: cfg.threads,
            loop_kind: "closed".into(),
            requests: Some(cfg.locks),
            ttl_ms: cfg.ttl.as_secs_f64() * 1e3,
            locks: Some(cfg.locks),
            ..Default::default()
        },
        skipped: None,
        waiting: target.waiting().into(),
        ops: acquired,
        errors,
        timeouts: 0,
        elapsed_s: acquire_elapsed.as_secs_f64(),
        ops_per_sec: rate(acquired, acquire_elapsed),
        pair_us: None,
        acquire_us: Latency::from_histogram(&acquire_hist),
        send_lag_us: None,
        fairness: None,
        by_kind: None,
        hold_many: Some(HoldMany {
            locks: acquired,
            acquire_per_sec: rate(acquired, acquire_elapsed),
            release_per_sec: rate(acquired, release_elapsed),
            server_pid: cfg.server_pid,
            rss_before_kib: rss_before,
            rss_held_kib: rss_held,
            bytes_per_lock,
        }),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_lock_once() {
        for (locks, conns) in [(10, 3), (3, 10), (1000, 64), (64, 64)] {
            let mut next = 0;
            for id in 0..conns {
                let (first, count) = share(locks, conns, id);
                assert_eq!(first, next);
                next += count;
            }
            assert_eq!(next, locks);
        }
    }

    #[test]
    fn reads_vmrss() {
        let status = "Name:\tredis-server\nVmHWM:\t  9000 kB\nVmRSS:\t    8123 kB\nThreads:\t5\n";
        assert_eq!(parse_vmrss(status), Some(8123));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        // Our own process has one.
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
