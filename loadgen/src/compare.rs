//! `loadgen compare`: one workload matrix against every reachable target, in one run, with
//! each row's throughput as a ratio to Redis, to etcd (clusters: to the etcd cluster) and
//! to the TCP floor (echo).

use std::time::Duration;

use anyhow::Context;

use crate::cli::CompareArgs;
use crate::hold_many::{HoldManyConfig, HoldManyOn};
use crate::report::RunResult;
use crate::run::{RunConfig, RunOn, Stop};
use crate::target::{unavailable, Conn, Target, TargetKind, TargetOptions, TargetSpec, WithTarget};
use crate::workload::Workload;

/// The targets to compare: the ones given, or all at their default addresses.
pub fn targets(a: &CompareArgs) -> Vec<TargetSpec> {
    let given = [
        (TargetKind::Echo, &a.echo),
        (TargetKind::Turnstile, &a.turnstile),
        (TargetKind::TurnstileBin, &a.turnstile_bin),
        (TargetKind::Redis, &a.redis),
        (TargetKind::RedisFsync, &a.redis_fsync),
        (TargetKind::Etcd, &a.etcd),
        (TargetKind::TurnstileCluster, &a.turnstile_cluster),
        (TargetKind::EtcdCluster, &a.etcd_cluster),
    ];
    let any = given.iter().any(|(_, addr)| addr.is_some());
    given
        .into_iter()
        .filter_map(|(kind, addr)| match addr {
            Some(addr) => Some(TargetSpec {
                kind,
                addr: addr.clone(),
            }),
            None if !any => Some(TargetSpec {
                kind,
                addr: kind.default_addr().to_string(),
            }),
            None => None,
        })
        .collect()
}

/// The rows of the matrix.
pub fn matrix(a: &CompareArgs, threads: usize) -> Vec<RunConfig> {
    let base = |workload, connections| RunConfig {
        workload,
        connections,
        stop: Stop::After(a.duration),
        warmup: a.warmup,
        rate: a.rate,
        ttl: a.ttl,
        threads,
        live: !a.output.quiet,
        seed: 1,
    };
    let mut rows: Vec<RunConfig> = a
        .connections
        .iter()
        .map(|&c| base(Workload::Uncontended, c))
        .collect();
    rows.extend(a.contended.iter().filter(|&&c| c > 0).map(|&c| {
        base(
            Workload::Contended {
                keys: a.contended_keys,
                hold: a.contention.hold,
                wait: a.contention.wait,
            },
            c,
        )
    }));
    rows
}

/// Opens one connection (a PING, a SCRIPT LOAD, a lease) to see that the target is there.
struct Probe;

impl WithTarget for Probe {
    type Output = anyhow::Result<()>;

    async fn call<T: Target>(self, target: T) -> anyhow::Result<()> {
        let conn = tokio::time::timeout(Duration::from_secs(3), target.connect(0))
            .await
            .context("no answer in 3 s")??;
        conn.close().await
    }
}

/// Whether a target can be measured; the reason it cannot otherwise.
pub async fn reachable(spec: &TargetSpec, opts: &TargetOptions) -> Result<(), String> {
    if let Some(why) = unavailable(spec.kind) {
        return Err(why.to_string());
    }
    match spec.with_target(opts, Probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) | Err(e) => Err(format!("not reachable ({e:#})")),
    }
}

/// Runs the matrix; returns every run, skipped ones included.
pub async fn compare(a: &CompareArgs, threads: usize) -> anyhow::Result<Vec<RunResult>> {
    let opts = a.peer.options();
    let mut live = Vec::new();
    for spec in targets(a) {
        match reachable(&spec, &opts).await {
            Ok(()) => live.push(spec),
            Err(why) => eprintln!("{} @ {}: {why}: skipped", spec.label(), spec.addr),
        }
    }
    if live.is_empty() {
        anyhow::bail!("no target is reachable (start the peers with loadgen/peers.sh start)");
    }
    let names: Vec<_> = live
        .iter()
        .map(|s| format!("{}@{}", s.label(), s.addr))
        .collect();
    eprintln!("comparing {}", names.join(", "));
    let mut runs = Vec::new();
    for row in matrix(a, threads) {
        for spec in &live {
            let result = match spec.with_target(&opts, RunOn { spec, cfg: &row }).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) | Err(e) => {
                    eprintln!(
                        "{} @ {}: {}: failed: {e:#}",
                        spec.label(),
                        spec.addr,
                        row.label()
                    );
                    crate::run::skipped(spec, &row, format!("failed: {e:#}"))
                }
            };
            if !a.output.quiet {
                eprint!("{}", crate::report::run_text(&result));
            }
            runs.push(result);
        }
    }
    if let Some(locks) = a.hold_many {
        let pids = parse_pids(&a.server_pid)?;
        for spec in &live {
            let cfg = HoldManyConfig {
                locks,
                connections: 16,
                ttl: Duration::from_secs(600),
                server_pid: pids
                    .iter()
                    .find(|(name, _)| name == spec.label())
                    .map(|(_, pid)| *pid),
                settle: Duration::from_secs(1),
                threads,
                live: !a.output.quiet,
            };
            let result = match spec
                .with_target(&opts, HoldManyOn { spec, cfg: &cfg })
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) | Err(e) => RunResult {
                    target: spec.label().into(),
                    addr: spec.addr.clone(),
                    workload: "hold-many".into(),
                    label: cfg.label(),
                    skipped: Some(format!("failed: {e:#}")),
                    ..Default::default()
                },
            };
            if !a.output.quiet {
                eprint!("{}", crate::report::run_text(&result));
            }
            runs.push(result);
        }
    }
    Ok(runs)
}

fn parse_pids(given: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    given
        .iter()
        .map(|s| {
            let (name, pid) = s
                .split_once('=')
                .with_context(|| format!("--server-pid {s:?}: expected TARGET=PID"))?;
            let kind: TargetKind = name.parse().map_err(anyhow::Error::msg)?;
            Ok((
                kind.name().to_string(),
                pid.parse().context("--server-pid: PID")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> CompareArgs {
        let mut argv = vec!["loadgen", "compare"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Compare(a) => a,
            _ => unreachable!("parsed compare"),
        }
    }

    #[test]
    fn all_targets_by_default_or_only_the_given_ones() {
        assert_eq!(targets(&args(&[])).len(), TargetKind::ALL.len());
        let t = targets(&args(&[
            "--redis",
            "127.0.0.1:7000",
            "--echo",
            "127.0.0.1:7001",
        ]));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].kind, TargetKind::Echo);
        assert_eq!(t[1].addr, "127.0.0.1:7000");
    }

    #[test]
    fn the_default_matrix() {
        let rows = matrix(&args(&[]), 1);
        let labels: Vec<_> = rows.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "uncontended c=1",
                "uncontended c=16",
                "uncontended c=64",
                "contended k=1 c=64 hold=0ms"
            ]
        );
        assert_eq!(matrix(&args(&["--contended", "0"]), 1).len(), 3);
    }

    #[test]
    fn server_pids() {
        assert_eq!(
            parse_pids(&["redis=42".into()]).unwrap(),
            vec![("redis".to_string(), 42)]
        );
        assert!(parse_pids(&["redis".into()]).is_err());
    }
}
