//! What a run found, for people (tables) and machines (JSON).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::{Fairness, Latency};
use crate::target::TargetKind;

/// One workload against one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunResult {
    /// The target's name: turnstile, redis, redis-fsync, etcd, echo.
    pub target: String,
    pub addr: String,
    /// uncontended, contended, mixed or hold-many.
    pub workload: String,
    /// The workload with its shape, e.g. "contended k=1 c=64": a row of a comparison.
    pub label: String,
    pub params: Params,
    /// Why this run did not happen (the target lacks the kind of lock, or is unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// How the target waits for a contended lock.
    pub waiting: String,
    /// Acquire+release pairs completed in the measured part of the run.
    pub ops: u64,
    pub errors: u64,
    /// Acquires whose wait ran out.
    pub timeouts: u64,
    pub elapsed_s: f64,
    /// Pairs per second; in the contended workloads, handoffs per second.
    pub ops_per_sec: f64,
    /// Latency of a pair (acquire, hold, release), from the time it was due in open loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pair_us: Option<Latency>,
    /// Latency of the acquire alone: the wait time, when there is contention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acquire_us: Option<Latency>,
    /// Open loop: how late loadgen sent each pair after it was due (already counted in the
    /// latencies). Large values mean the load generator itself was short of CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Latency>,
    /// Grants per client (contended and mixed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fairness: Option<Fairness>,
    /// Grants by kind of lock (mixed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_kind: Option<ByKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_many: Option<HoldMany>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// The parameters of a run, the same for every target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    pub connections: usize,
    /// Load generator threads.
    pub threads: usize,
    /// "closed" (as fast as possible) or "open" (at `rate`).
    pub loop_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub ttl_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semaphore_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_permits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locks: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ByKind {
    pub exclusive: u64,
    pub shared: u64,
    pub semaphore: u64,
}

/// The hold-many workload: many locks held at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HoldMany {
    pub locks: u64,
    pub acquire_per_sec: f64,
    pub release_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_held_kib: Option<u64>,
    /// (RSS while held - RSS before) / locks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_lock: Option<f64>,
}

/// The JSON document `--json` prints: every run, and for `compare` the ratios.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Document {
    pub loadgen: String,
    pub runs: Vec<RunResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<Ratio>,
}

/// One row of `compare`: a run's throughput against Redis, etcd and the TCP floor in the
/// same row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Ratio {
    pub label: String,
    pub target: String,
    pub ops_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_redis: Option<f64>,
    /// Against etcd: a cluster's against the etcd cluster (`etcd-cluster`), a single
    /// server's against the single etcd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_etcd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_floor: Option<f64>,
}

impl Document {
    pub fn new(runs: Vec<RunResult>, ratios: Vec<Ratio>) -> Self {
        Document {
            loadgen: env!("CARGO_PKG_VERSION").to_string(),
            runs,
            ratios,
        }
    }
}

/// 1234567.0 -> "1.23M", 27012.0 -> "27.0K", 950.0 -> "950".
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}K", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.2}K", x / 1e3)
    } else if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// Microseconds, shortened past 10 ms: "87", "12.3ms", "1.26s".
pub fn us(x: u64) -> String {
    if x >= 1_000_000 {
        format!("{:.2}s", x as f64 / 1e6)
    } else if x >= 10_000 {
        format!("{:.1}ms", x as f64 / 1e3)
    } else {
        x.to_string()
    }
}

/// Microseconds with their unit: "87us", "12.3ms", "1.26s".
pub fn us_unit(x: u64) -> String {
    if x >= 10_000 {
        us(x)
    } else {
        format!("{x}us")
    }
}

/// The full report of one run.
pub fn run_text(r: &RunResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== {} @ {}: {}", r.target, r.addr, r.label);
    if let Some(why) = &r.skipped {
        let _ = writeln!(s, "   skipped: {why}");
        return s;
    }
    let p = &r.params;
    let _ = writeln!(
        s,
        "   {} loop{}, {} connections, {} thread(s), {:.2} s measured{}",
        p.loop_kind,
        p.rate
            .map(|r| format!(" at {} ops/s", si(r)))
            .unwrap_or_default(),
        p.connections,
        p.threads,
        r.elapsed_s,
        if p.warmup_s > 0.0 {
            format!(" after {:.1} s warmup", p.warmup_s)
        } else {
            String::new()
        }
    );
    if let Some(h) = &r.hold_many {
        let _ = writeln!(
            s,
            "   held {} locks: acquire {}/s, release {}/s",
            h.locks,
            si(h.acquire_per_sec),
            si(h.release_per_sec)
        );
        match (h.rss_before_kib, h.rss_held_kib, h.bytes_per_lock) {
            (Some(b), Some(a), Some(per)) => {
                let _ = writeln!(
                    s,
                    "   server RSS (pid {}): {} KiB before, {} KiB held: {:.0} bytes per held lock",
                    h.server_pid.unwrap_or(0),
                    b,
                    a,
                    per
                );
            }
            _ => {
                let _ = writeln!(s, "   server memory: not measured (give --server-pid PID)");
            }
        }
    } else {
        let what = if r.workload == "uncontended" {
            "pairs/s"
        } else {
            "handoffs/s"
        };
        let _ = writeln!(
            s,
            "   {} {what} ({} pairs), errors {}, timeouts {}",
            si(r.ops_per_sec),
            r.ops,
            r.errors,
            r.timeouts
        );
    }
    let _ = writeln!(
        s,
        "   {:<22}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
        "latency (us)", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    let wait_name = if r.workload == "uncontended" || r.workload == "hold-many" {
        "acquire"
    } else {
        "wait (acquire)"
    };
    for (name, l) in [("pair", &r.pair_us), (wait_name, &r.acquire_us)] {
        if let Some(l) = l {
            let _ = writeln!(
                s,
                "   {:<22}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9.1}",
                name,
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max),
                l.mean
            );
        }
    }
    if let Some(l) = &r.send_lag_us {
        let _ = writeln!(
            s,
            "   {:<22}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9.1}",
            "loadgen send lag",
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max),
            l.mean
        );
    }
    if let Some(f) = &r.fairness {
        let _ = writeln!(
            s,
            "   fairness over {} clients: Jain {}, grants per client max {} / min {} = {}",
            f.clients,
            f.jain.map_or("-".into(), |j| format!("{j:.3}")),
            f.max_grants,
            f.min_grants,
            f.max_min_ratio.map_or("inf".into(), |x| format!("{x:.2}")),
        );
        let _ = writeln!(s, "   waiting: {}", r.waiting);
    }
    if let Some(k) = &r.by_kind {
        let _ = writeln!(
            s,
            "   grants: exclusive {}, shared {}, semaphore {}",
            k.exclusive, k.shared, k.semaphore
        );
    }
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "   first error: {e}");
    }
    s
}

/// A one-line-per-run summary of several runs.
pub fn summary_table(runs: &[RunResult], ratios: &[Ratio]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<34} {:<17} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "workload",
        "target",
        "ops/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "errors",
        "vs redis",
        "vs etcd",
        "vs floor"
    );
    let mut last_label = "";
    for r in runs {
        let label = if r.label == last_label { "" } else { &r.label };
        last_label = &r.label;
        if let Some(why) = &r.skipped {
            let _ = writeln!(s, "{:<34} {:<17} skipped: {}", label, r.target, why);
            continue;
        }
        let ratio = ratios
            .iter()
            .find(|x| x.label == r.label && x.target == r.target);
        let fmt_ratio = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}x"));
        let (p50, p99, p999) = match (&r.workload[..], &r.pair_us, &r.acquire_us) {
            // Contention: the wait is what a user feels.
            ("contended" | "mixed", _, Some(w)) => (w.p50, w.p99, w.p999),
            (_, Some(p), _) => (p.p50, p.p99, p.p999),
            _ => (0, 0, 0),
        };
        let _ = writeln!(
            s,
            "{:<34} {:<17} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9}",
            label,
            r.target,
            si(r.ops_per_sec),
            us(p50),
            us(p99),
            us(p999),
            r.errors,
            fmt_ratio(ratio.and_then(|x| x.vs_redis)),
            fmt_ratio(ratio.and_then(|x| x.vs_etcd)),
            fmt_ratio(ratio.and_then(|x| x.vs_floor)),
        );
    }
    if ratios.iter().any(|x| x.vs_etcd.is_some()) {
        let _ = writeln!(
            s,
            "(vs etcd: a cluster against etcd-cluster, a single server against etcd)"
        );
    }
    s.push_str(&cluster_headline(runs, ratios));
    s
}

/// The replicated comparison, row by row: Turnstile's cluster against etcd's.
pub fn cluster_headline(runs: &[RunResult], ratios: &[Ratio]) -> String {
    let mut s = String::new();
    let run = |label: &str, target: &str| {
        runs.iter()
            .find(|r| r.label == label && r.target == target && r.skipped.is_none())
    };
    let nodes = |r: &RunResult| r.addr.split(',').filter(|a| !a.is_empty()).count();
    for x in ratios.iter().filter(|x| x.target == "turnstile-cluster") {
        let (Some(vs), Some(ours), Some(etcd)) = (
            x.vs_etcd,
            run(&x.label, "turnstile-cluster"),
            run(&x.label, "etcd-cluster"),
        ) else {
            continue;
        };
        if s.is_empty() {
            let _ = writeln!(
                s,
                "\nturnstile-cluster ({} nodes) vs etcd-cluster ({} members):",
                nodes(ours),
                nodes(etcd)
            );
        }
        let etcd = etcd.ops_per_sec;
        let _ = writeln!(
            s,
            "  {:<32} {:>10} vs {:>10}  = {:.1}x",
            x.label,
            si(x.ops_per_sec),
            si(etcd),
            vs
        );
    }
    s
}

/// Each run's throughput against redis (in-memory), etcd (a cluster's against etcd-cluster)
/// and echo in the same row (label).
pub fn ratios(runs: &[RunResult]) -> Vec<Ratio> {
    let rate_of = |label: &str, target: &str| {
        runs.iter()
            .find(|r| r.label == label && r.target == target && r.skipped.is_none() && r.ops > 0)
            .map(|r| r.ops_per_sec)
    };
    runs.iter()
        .filter(|r| r.skipped.is_none())
        .map(|r| Ratio {
            label: r.label.clone(),
            target: r.target.clone(),
            ops_per_sec: r.ops_per_sec,
            vs_redis: rate_of(&r.label, "redis").map(|x| r.ops_per_sec / x),
            vs_etcd: rate_of(&r.label, etcd_reference(&r.target)).map(|x| r.ops_per_sec / x),
            vs_floor: rate_of(&r.label, "echo").map(|x| r.ops_per_sec / x),
        })
        .collect()
}

/// The etcd a target is compared with: the etcd cluster for clusters, else the single etcd.
fn etcd_reference(target: &str) -> &'static str {
    match target.parse::<TargetKind>() {
        Ok(kind) if kind.replicated() => "etcd-cluster",
        _ => "etcd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(si(27_012.0), "27.0K");
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(2_900.0), "2.90K");
        assert_eq!(si(628.0), "628");
        assert_eq!(us(87), "87");
        assert_eq!(us(12_345), "12.3ms");
        assert_eq!(us(1_260_000), "1.26s");
    }

    #[test]
    fn ratios_against_redis_and_the_floor() {
        let run = |label: &str, target: &str, rate: f64| RunResult {
            label: label.into(),
            target: target.into(),
            ops: 1,
            ops_per_sec: rate,
            ..Default::default()
        };
        let runs = vec![
            run("u c=1", "echo", 30.0),
            run("u c=1", "redis", 20.0),
            run("u c=1", "turnstile", 25.0),
            run("u c=16", "turnstile", 50.0),
        ];
        let r = ratios(&runs);
        assert_eq!(r[2].vs_redis, Some(1.25));
        assert_eq!(r[2].vs_floor, Some(25.0 / 30.0));
        assert_eq!(r[3].vs_redis, None);
        let doc = Document::new(runs, r);
        let back: Document = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(back.runs.len(), 4);
        assert_eq!(back.ratios[0].vs_redis, Some(1.5));
    }

    #[test]
    fn clusters_are_compared_with_the_etcd_cluster() {
        let run = |label: &str, target: &str, rate: f64| RunResult {
            label: label.into(),
            target: target.into(),
            ops: 1,
            ops_per_sec: rate,
            ..Default::default()
        };
        let runs = vec![
            run("u c=64", "turnstile", 30_000.0),
            run("u c=64", "etcd", 3_000.0),
            RunResult {
                addr: "a:1,a:2,a:3".into(),
                ..run("u c=64", "turnstile-cluster", 20_000.0)
            },
            run("u c=64", "etcd-cluster", 1_000.0),
        ];
        let r = ratios(&runs);
        assert_eq!(r[0].vs_etcd, Some(10.0));
        assert_eq!(r[2].vs_etcd, Some(20.0));
        assert_eq!(r[3].vs_etcd, Some(1.0));
        let table = summary_table(&runs, &r);
        assert!(
            table.contains("turnstile-cluster (3 nodes) vs etcd-cluster (0 members)"),
            "{table}"
        );
        assert!(table.contains("= 20.0x"), "{table}");
    }
}
