//! Running a workload against a target: connections, workers, the live line, the result.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::report::{ByKind, Params, RunResult};
use crate::schedule::{Pacer, Schedule};
use crate::stats::{self, Fairness, Latency};
use crate::target::{AcquireRequest, Acquired, Conn, Mode, Target, TargetSpec, WithTarget};
use crate::workload::Workload;

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// Measure for this long (after the warmup).
    After(Duration),
    /// Measure this many pairs in total (after the warmup).
    Requests(u64),
}

/// Everything about a run but the target.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub workload: Workload,
    pub connections: usize,
    pub stop: Stop,
    pub warmup: Duration,
    /// Open loop at this many pairs per second in total; None: closed loop.
    pub rate: Option<f64>,
    pub ttl: Duration,
    pub threads: usize,
    /// Print the live line every second (to stderr).
    pub live: bool,
    pub seed: u64,
}

impl RunConfig {
    /// The row name: the workload and its shape.
    pub fn label(&self) -> String {
        let c = self.connections;
        let mut s = match self.workload {
            Workload::Uncontended => format!("uncontended c={c}"),
            Workload::Contended { keys, hold, .. } => {
                format!("contended k={keys} c={c} hold={}", short(hold))
            }
            Workload::Mixed {
                keys,
                read_ratio,
                semaphore_ratio,
                ..
            } => format!("mixed k={keys} c={c} r={read_ratio} s={semaphore_ratio}"),
        };
        if let Some(rate) = self.rate {
            s.push_str(&format!(" @{}/s", crate::report::si(rate)));
        }
        s
    }

    pub fn params(&self) -> Params {
        let (read_ratio, semaphore_ratio, limit, max_permits) = match self.workload {
            Workload::Mixed {
                read_ratio,
                semaphore_ratio,
                limit,
                max_permits,
                ..
            } => (
                Some(read_ratio),
                Some(semaphore_ratio),
                Some(limit),
                Some(max_permits),
            ),
            _ => (None, None, None, None),
        };
        let contended = !matches!(self.workload, Workload::Uncontended);
        Params {
            connections: self.connections,
            threads: self.threads,
            loop_kind: if self.rate.is_some() {
                "open"
            } else {
                "closed"
            }
            .into(),
            rate: self.rate,
            duration_s: match self.stop {
                Stop::After(d) => Some(d.as_secs_f64()),
                Stop::Requests(_) => None,
            },
            requests: match self.stop {
                Stop::Requests(n) => Some(n),
                Stop::After(_) => None,
            },
            warmup_s: self.warmup.as_secs_f64(),
            ttl_ms: self.ttl.as_secs_f64() * 1e3,
            keys: self.workload.keys(),
            hold_ms: contended.then(|| self.workload.hold().as_secs_f64() * 1e3),
            wait_ms: self.workload.wait().map(|w| w.as_secs_f64() * 1e3),
            read_ratio,
            semaphore_ratio,
            limit,
            max_permits,
            locks: None,
        }
    }
}

/// "0ms", "1.5ms", "2s".
pub fn short(d: Duration) -> String {
    if d.as_millis() >= 1000 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if Duration::from_millis(d.as_millis() as u64) == d {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// A short random name for this run's keys, so runs never meet each other's leftovers.
pub fn run_id() -> String {
    format!("{:05x}", fastrand::u32(..) & 0xf_ffff)
}

/// A result for a target that cannot do this workload.
pub fn skipped(spec: &TargetSpec, cfg: &RunConfig, why: String) -> RunResult {
    RunResult {
        target: spec.label().into(),
        addr: spec.addr.clone(),
        workload: cfg.workload.name().into(),
        label: cfg.label(),
        params: cfg.params(),
        skipped: Some(why),
        ..Default::default()
    }
}

/// Runs `cfg` against `spec` (generic over the target through [`WithTarget`]).
pub struct RunOn<'a> {
    pub spec: &'a TargetSpec,
    pub cfg: &'a RunConfig,
}

impl WithTarget for RunOn<'_> {
    type Output = anyhow::Result<RunResult>;

    async fn call<T: Target>(self, target: T) -> anyhow::Result<RunResult> {
        run(Arc::new(target), self.spec, self.cfg).await
    }
}

/// What a worker sees of the interval the live line reports.
#[derive(Default)]
struct Interval {
    hist: Option<Histogram<u64>>,
    ops: u64,
    errors: u64,
    timeouts: u64,
}

/// The live counters, one slot per worker (uncontended: each worker locks only its own).
pub struct Live {
    slots: Vec<Mutex<Interval>>,
}

impl Live {
    pub fn new(n: usize) -> Arc<Live> {
        Arc::new(Live {
            slots: (0..n)
                .map(|_| {
                    Mutex::new(Interval {
                        hist: Some(stats::histogram()),
                        ..Default::default()
                    })
                })
                .collect(),
        })
    }

    pub fn op(&self, worker: usize, latency: Duration) {
        let mut s = self.slots[worker].lock();
        s.ops += 1;
        if let Some(h) = s.hist.as_mut() {
            stats::record(h, latency);
        }
    }

    pub fn error(&self, worker: usize) {
        self.slots[worker].lock().errors += 1;
    }

    pub fn timeout(&self, worker: usize) {
        self.slots[worker].lock().timeouts += 1;
    }

    /// Takes and resets the interval: (ops, errors, timeouts, histogram of the interval).
    fn take(&self, into: &mut Histogram<u64>) -> (u64, u64, u64) {
        into.reset();
        let mut totals = (0, 0, 0);
        for slot in &self.slots {
            let mut s = slot.lock();
            totals.0 += s.ops;
            totals.1 += s.errors;
            totals.2 += s.timeouts;
            s.ops = 0;
            s.errors = 0;
            s.timeouts = 0;
            if let Some(h) = s.hist.as_mut() {
                let _ = into.add(&*h);
                h.reset();
            }
        }
        totals
    }
}

/// Prints a line every second: ops/s, p50, p99, errors; with a bar for fixed counts.
pub fn spawn_live_line(
    live: Arc<Live>,
    what: String,
    measure_start: Instant,
    total: Option<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick =
            tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        let mut hist = stats::histogram();
        let mut done = 0u64;
        let mut last = start;
        loop {
            let now = tick.tick().await;
            let (ops, errors, timeouts) = live.take(&mut hist);
            let secs = (now - last).as_secs_f64().max(1e-9);
            last = now;
            let warm = now <= measure_start;
            if !warm {
                done += ops + errors + timeouts;
            }
            let mut line = format!("[{:>5.1}s] {what}", (now - start).as_secs_f64());
            if warm {
                line.push_str(" (warmup)");
            } else if let Some(total) = total {
                line.push_str(&format!(" {}", bar(done, total)));
            }
            line.push_str(&format!(
                "  {:>8} ops/s  p50 {:>8}  p99 {:>8}  errors {}",
                crate::report::si(ops as f64 / secs),
                crate::report::us_unit(if ops > 0 {
                    hist.value_at_quantile(0.5)
                } else {
                    0
                }),
                crate::report::us_unit(if ops > 0 {
                    hist.value_at_quantile(0.99)
                } else {
                    0
                }),
                errors
            ));
            if timeouts > 0 {
                line.push_str(&format!("  timeouts {timeouts}"));
            }
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    })
}

/// `[#########...........]  45% 45000/100000`
pub fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 20;
    let done = done.min(total);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    format!(
        "[{}{}] {:>3}% {}/{}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        pct,
        done,
        total
    )
}

/// What one worker measured.
struct WorkerResult {
    pair: Histogram<u64>,
    /// Open loop: how late each pair was sent after it was due.
    lag: Histogram<u64>,
    acquire: Histogram<u64>,
    grants: u64,
    by_kind: ByKind,
    timeouts: u64,
    errors: u64,
    first_error: Option<String>,
    /// When its last measured op completed (or it stopped).
    finished: Instant,
}

/// What all workers share.
struct Shared {
    cfg: RunConfig,
    run_id: String,
    start: Instant,
    measure_start: Instant,
    /// Duration runs: no op is started at or after this.
    end: Option<Instant>,
    /// Fixed-count runs: measured ops claimed so far.
    claimed: AtomicU64,
    live: Arc<Live>,
}

/// Opens `n` connections concurrently (not timed).
pub async fn connect_all<T: Target>(target: &Arc<T>, n: usize) -> anyhow::Result<Vec<T::Conn>> {
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        let t = Arc::clone(target);
        tasks.push(tokio::spawn(async move { t.connect(id).await }));
    }
    let mut conns = Vec::with_capacity(n);
    for (id, task) in tasks.into_iter().enumerate() {
        conns.push(
            task.await
                .context("connect task")?
                .with_context(|| format!("opening connection {id}"))?,
        );
    }
    Ok(conns)
}

/// Runs one workload against one target.
pub async fn run<T: Target>(
    target: Arc<T>,
    spec: &TargetSpec,
    cfg: &RunConfig,
) -> anyhow::Result<RunResult> {
    let missing: Vec<_> = cfg
        .workload
        .kinds()
        .into_iter()
        .filter(|k| !target.supports(*k))
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "{} has no {} locks, which the {} workload takes",
            spec.label(),
            missing
                .iter()
                .map(|k| format!("{k:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join("/"),
            cfg.workload.name()
        );
        if cfg.live {
            eprintln!(
                "{} @ {}: {}: skipped: {why}",
                spec.label(),
                spec.addr,
                cfg.label()
            );
        }
        return Ok(skipped(spec, cfg, why));
    }
    let conns = connect_all(&target, cfg.connections).await?;

    let start = Instant::now();
    let measure_start = start + cfg.warmup;
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        run_id: run_id(),
        start,
        measure_start,
        end: match cfg.stop {
            Stop::After(d) => Some(measure_start + d),
            Stop::Requests(_) => None,
        },
        claimed: AtomicU64::new(0),
        live: Live::new(cfg.connections),
    });
    let live_line = cfg.live.then(|| {
        spawn_live_line(
            Arc::clone(&shared.live),
            format!("{} {}", spec.label(), cfg.label()),
            measure_start,
            match cfg.stop {
                Stop::Requests(n) => Some(n),
                Stop::After(_) => None,
            },
        )
    });
    let mut workers = Vec::with_capacity(conns.len());
    for (id, conn) in conns.into_iter().enumerate() {
        workers.push(tokio::spawn(worker(
            Arc::clone(&target),
            conn,
            id,
            Arc::clone(&shared),
        )));
    }
    let mut results = Vec::with_capacity(workers.len());
    for w in workers {
        results.push(w.await.context("worker task")?);
    }
    if let Some(l) = live_line {
        l.abort();
    }

    let mut pair = stats::histogram();
    let mut acquire = stats::histogram();
    let mut lag = stats::histogram();
    let mut grants = Vec::with_capacity(results.len());
    let mut by_kind = ByKind::default();
    let (mut timeouts, mut errors) = (0, 0);
    let mut first_error = None;
    let mut finished = measure_start;
    for r in &results {
        pair.add(&r.pair).expect("same bounds");
        acquire.add(&r.acquire).expect("same bounds");
        lag.add(&r.lag).expect("same bounds");
        grants.push(r.grants);
        by_kind.exclusive += r.by_kind.exclusive;
        by_kind.shared += r.by_kind.shared;
        by_kind.semaphore += r.by_kind.semaphore;
        timeouts += r.timeouts;
        errors += r.errors;
        if first_error.is_none() {
            first_error.clone_from(&r.first_error);
        }
        finished = finished.max(r.finished);
    }
    let ops: u64 = grants.iter().sum();
    let elapsed = (finished - measure_start).as_secs_f64();
    let contended = !matches!(cfg.workload, Workload::Uncontended);
    Ok(RunResult {
        target: spec.label().into(),
        addr: spec.addr.clone(),
        workload: cfg.workload.name().into(),
        label: cfg.label(),
        params: cfg.params(),
        skipped: None,
        waiting: target.waiting().into(),
        ops,
        errors,
        timeouts,
        elapsed_s: elapsed,
        ops_per_sec: if elapsed > 0.0 {
            ops as f64 / elapsed
        } else {
            0.0
        },
        pair_us: Latency::from_histogram(&pair),
        acquire_us: Latency::from_histogram(&acquire),
        send_lag_us: Latency::from_histogram(&lag),
        fairness: contended.then(|| Fairness::of(&grants)),
        by_kind: matches!(cfg.workload, Workload::Mixed { .. }).then_some(by_kind),
        hold_many: None,
        first_error,
    })
}

/// One connection's loop: acquire, hold, release, as fast as it can (closed loop) or when
/// each pair is due (open loop). On an error the connection is dropped and opened again.
async fn worker<T: Target>(
    target: Arc<T>,
    conn: T::Conn,
    id: usize,
    shared: Arc<Shared>,
) -> WorkerResult {
    let cfg = &shared.cfg;
    let schedule = cfg.rate.map(|r| Schedule::new(r, cfg.connections, id));
    let hold = cfg.workload.hold();
    let wait = cfg.workload.wait();
    let requests = match cfg.stop {
        Stop::Requests(n) => Some(n),
        Stop::After(_) => None,
    };
    let mut rng = fastrand::Rng::with_seed(cfg.seed.wrapping_mul(0x9e37_79b9) ^ id as u64);
    let mut key = Vec::with_capacity(64);
    let mut conn = Some(conn);
    let mut pacer = Pacer::new();
    let mut out = WorkerResult {
        pair: stats::histogram(),
        lag: stats::histogram(),
        acquire: stats::histogram(),
        grants: 0,
        by_kind: ByKind::default(),
        timeouts: 0,
        errors: 0,
        first_error: None,
        finished: shared.measure_start,
    };
    let mut i: u64 = 0;
    loop {
        let due = match schedule {
            Some(s) => shared.start + s.due(i),
            None => Instant::now(),
        };
        if shared.end.is_some_and(|end| due >= end) {
            break;
        }
        let measured = due >= shared.measure_start;
        if schedule.is_some() {
            pacer.until(due).await;
            if measured {
                stats::record(&mut out.lag, Instant::now() - due);
            }
        }
        if measured {
            if let Some(n) = requests {
                if shared.claimed.fetch_add(1, Ordering::Relaxed) >= n {
                    break;
                }
            }
        }
        let mode = cfg
            .workload
            .next_op(&shared.run_id, id, i, &mut rng, &mut key);
        i += 1;

        let c = match conn.as_mut() {
            Some(c) => c,
            None => match target.connect(id).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    note_error(&mut out, &shared, id, measured, e.context("reconnecting"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let req = AcquireRequest {
            key: &key,
            mode,
            ttl: cfg.ttl,
            wait,
        };
        let from = if schedule.is_some() {
            due
        } else {
            Instant::now()
        };
        match c.acquire(&req).await {
            Ok(Acquired::Granted(grant)) => {
                let granted = Instant::now();
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
                match c.release(&key, grant).await {
                    Ok(()) => {
                        let done = Instant::now();
                        shared.live.op(id, done - from);
                        if measured {
                            stats::record(&mut out.pair, done - from);
                            stats::record(&mut out.acquire, granted - from);
                            out.grants += 1;
                            match mode {
                                Mode::Exclusive => out.by_kind.exclusive += 1,
                                Mode::Shared => out.by_kind.shared += 1,
                                Mode::Semaphore { .. } => out.by_kind.semaphore += 1,
                            }
                            out.finished = done;
                        }
                    }
                    Err(e) => {
                        conn = None;
                        note_error(&mut out, &shared, id, measured, e);
                    }
                }
            }
            Ok(Acquired::TimedOut) => {
                shared.live.timeout(id);
                if measured {
                    out.timeouts += 1;
                    out.finished = Instant::now();
                }
            }
            Err(e) => {
                conn = None;
                note_error(&mut out, &shared, id, measured, e);
            }
        }
    }
    if let Some(c) = conn {
        if let Err(e) = c.close().await {
            note_error(&mut out, &shared, id, true, e.context("closing"));
        }
    }
    out
}

fn note_error(
    out: &mut WorkerResult,
    shared: &Shared,
    id: usize,
    measured: bool,
    e: anyhow::Error,
) {
    shared.live.error(id);
    if measured {
        out.errors += 1;
        out.finished = out.finished.max(Instant::now());
    }
    if out.first_error.is_none() {
        out.first_error = Some(format!("{e:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar() {
        assert_eq!(bar(0, 10), "[....................]   0% 0/10");
        assert_eq!(bar(5, 10), "[##########..........]  50% 5/10");
        assert_eq!(bar(12, 10), "[####################] 100% 10/10");
    }

    #[test]
    fn short_durations() {
        assert_eq!(short(Duration::ZERO), "0ms");
        assert_eq!(short(Duration::from_millis(5)), "5ms");
        assert_eq!(short(Duration::from_secs(2)), "2s");
        assert_eq!(short(Duration::from_micros(1500)), "1500us");
    }
}
