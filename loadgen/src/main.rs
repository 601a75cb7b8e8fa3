//! loadgen: Turnstile's load generator. It measures Turnstile and the services people would
//! pick instead (Redis, etcd) on exactly the same workloads, next to the TCP floor (an echo
//! server), so that a lock service can be chosen by numbers from one's own hardware.
//!
//! Module map:
//! - `cli`          the command line (clap)
//! - `target`       the `Target`/`Conn` traits and one module per service: turnstile_text,
//!   redis, etcd (behind the `etcd` feature), echo, and turnstile_bin (the binary
//!   protocol through the client library)
//! - `resp`         the client-side RESP codec (Turnstile text mode and Redis)
//! - `workload`     keys and modes per op: uncontended, contended, mixed
//! - `run`          connections, workers, closed and open loop, the live line
//! - `schedule`     the open-loop schedule (no coordinated omission)
//! - `hold_many`    many held locks: acquire rate and server memory per lock
//! - `compare`      the workload matrix against every reachable target
//! - `failover`     kill a Turnstile cluster's leader under load: failover times
//! - `stats`        HDR histograms, percentiles, Jain's fairness index
//! - `report`       tables and JSON
//! - `plot`         percentile curves as SVG
//! - `echo_server`  `loadgen echo-server`

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

mod cli;
mod compare;
mod echo_server;
mod failover;
mod hold_many;
mod plot;
mod report;
mod resp;
mod run;
mod schedule;
mod stats;
mod target;
mod workload;

use cli::{Cli, Command, LoadArgs, OutputArgs, TargetArgs};
use report::{Document, RunResult};
use run::{RunConfig, RunOn, Stop};
use workload::Workload;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let threads = cli.threads.max(1);
    match cli.command {
        Command::Uncontended(a) => {
            let cfg = run_config(Workload::Uncontended, a.connections, &a.load, threads)?;
            run_targets(&a.target, &cfg, &a.load.output).await
        }
        Command::Contended(a) => {
            let workload = Workload::Contended {
                keys: a.keys.max(1),
                hold: a.contention.hold,
                wait: a.contention.wait,
            };
            let cfg = run_config(workload, a.connections, &a.load, threads)?;
            run_targets(&a.target, &cfg, &a.load.output).await
        }
        Command::Mixed(a) => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&a.read_ratio) && (0.0..=1.0).contains(&a.semaphore_ratio),
                "--read-ratio and --semaphore-ratio are fractions in [0, 1]"
            );
            anyhow::ensure!(a.limit >= 1, "--limit must be at least 1");
            let workload = Workload::Mixed {
                keys: a.keys.max(1),
                read_ratio: a.read_ratio,
                semaphore_ratio: a.semaphore_ratio,
                limit: a.limit,
                max_permits: a.max_permits.max(1),
                hold: a.contention.hold,
                wait: a.contention.wait,
            };
            let cfg = run_config(workload, a.connections, &a.load, threads)?;
            run_targets(&a.target, &cfg, &a.load.output).await
        }
        Command::HoldMany(a) => {
            anyhow::ensure!(a.connections >= 1, "--connections must be at least 1");
            let cfg = hold_many::HoldManyConfig {
                locks: a.locks,
                connections: a.connections,
                ttl: a.ttl,
                server_pid: a.server_pid,
                settle: a.settle,
                threads,
                live: !a.output.quiet,
            };
            let opts = a.target.peer.options();
            let mut runs = Vec::new();
            let mut failed = false;
            for spec in &a.target.targets {
                let on = hold_many::HoldManyOn { spec, cfg: &cfg };
                match spec.with_target(&opts, on).await.and_then(|r| r) {
                    Ok(r) => runs.push(r),
                    Err(e) => {
                        eprintln!("loadgen: {} @ {}: {e:#}", spec.label(), spec.addr);
                        failed = true;
                    }
                }
            }
            finish(runs, &a.output, false, failed)
        }
        Command::Compare(a) => {
            let runs = compare::compare(&a, threads).await?;
            finish(runs, &a.output, true, false)
        }
        Command::Failover(a) => {
            let r = failover::failover(&a).await?;
            let text = failover::text(&r);
            if a.json {
                eprint!("{text}");
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{text}");
            }
            Ok(if r.aborted.is_some() || r.incomplete > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::EchoServer(a) => {
            let listener = tokio::net::TcpListener::bind((a.bind.as_str(), a.port))
                .await
                .with_context(|| format!("binding {}:{}", a.bind, a.port))?;
            println!("echo server listening on {}", listener.local_addr()?);
            tokio::select! {
                r = echo_server::serve(listener) => r.context("echo server")?,
                _ = shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot(a) => {
            let mut runs = Vec::new();
            let mut names = Vec::new();
            for (i, path) in a.inputs.iter().enumerate() {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let doc: Document = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not loadgen --json output", path.display()))?;
                let file = path
                    .file_stem()
                    .map_or(i.to_string(), |s| s.to_string_lossy().into());
                for r in doc.runs {
                    names.push(if a.inputs.len() > 1 {
                        format!("{} [{file}]", r.target)
                    } else {
                        r.target.clone()
                    });
                    runs.push(r);
                }
            }
            plot::plot(&a.out, &runs, Some(&names))?;
            eprintln!("wrote {}", a.out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn run_config(
    workload: Workload,
    connections: usize,
    load: &LoadArgs,
    threads: usize,
) -> anyhow::Result<RunConfig> {
    anyhow::ensure!(connections >= 1, "--connections must be at least 1");
    if let Some(rate) = load.rate {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
    }
    Ok(RunConfig {
        workload,
        connections,
        stop: match load.requests {
            Some(n) => Stop::Requests(n),
            None => Stop::After(load.duration),
        },
        warmup: load.warmup,
        rate: load.rate,
        ttl: load.ttl,
        threads,
        live: !load.output.quiet,
        seed: load.seed,
    })
}

/// Runs one workload against each target in turn.
async fn run_targets(
    targets: &TargetArgs,
    cfg: &RunConfig,
    output: &OutputArgs,
) -> anyhow::Result<ExitCode> {
    let opts = targets.peer.options();
    let mut runs = Vec::new();
    let mut failed = false;
    for spec in &targets.targets {
        match spec
            .with_target(&opts, RunOn { spec, cfg })
            .await
            .and_then(|r| r)
        {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("loadgen: {} @ {}: {e:#}", spec.label(), spec.addr);
                failed = true;
            }
        }
    }
    finish(runs, output, false, failed)
}

/// Prints the report (stdout, or stderr with --json), the JSON and the plot.
fn finish(
    runs: Vec<RunResult>,
    output: &OutputArgs,
    compared: bool,
    failed: bool,
) -> anyhow::Result<ExitCode> {
    let ratios = report::ratios(&runs);
    let mut text = String::new();
    if !compared {
        for r in &runs {
            text.push_str(&report::run_text(r));
        }
    }
    if runs.len() > 1 || compared {
        text.push('\n');
        text.push_str(&report::summary_table(&runs, &ratios));
    }
    if output.json {
        eprint!("{text}");
        let doc = Document::new(runs.clone(), ratios);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{text}");
    }
    if let Some(path) = &output.plot {
        match plot::plot(path, &runs, None) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => eprintln!("loadgen: no plot: {e:#}"),
        }
    }
    Ok(if failed || runs.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
