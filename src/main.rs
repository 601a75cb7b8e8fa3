//! The `turnstile` binary: `turnstile serve` runs the server, `turnstile cli` the shell.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use turnstile::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "turnstile",
    version,
    about = "A fast lock manager with fencing tokens, leases and deadlock detection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at startup; clap cannot flatten a boxed Config"
)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        config: Config,
        /// Log filter (error, warn, info, debug, trace, or a tracing directive).
        #[arg(long, env = "TURNSTILE_LOG", default_value = "info")]
        log_level: String,
        /// Log as JSON lines (for log shippers) instead of human-readable text.
        #[arg(long, env = "TURNSTILE_LOG_JSON")]
        log_json: bool,
    },
    /// An interactive shell (or one-shot command) against a server, like redis-cli.
    Cli(turnstile_cli::CliArgs),
    /// Cluster membership: `status`, `init ID=RAFT/CLIENT...`, `add-learner ID RAFT
    /// CLIENT`, `promote ID`, `remove ID` (sent as CLUSTER commands to --addr; see
    /// docs/cluster.md).
    Cluster {
        /// A node's client address (changes must go to the leader; a follower's
        /// NOTLEADER redirect is followed).
        #[arg(long, default_value = "127.0.0.1:7379")]
        addr: String,
        /// TLS and credentials, as `turnstile cli` has them.
        #[command(flatten)]
        connect: turnstile_cli::ConnectArgs,
        /// The subcommand and its arguments.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Who held what, and when: the grants and ends of holds recorded in a data directory
    /// (read only; safe while a server runs on it).
    Audit {
        /// The server's data directory.
        #[arg(long, env = "TURNSTILE_DATA_DIR", default_value = "turnstile-data")]
        data_dir: std::path::PathBuf,
        /// Keys matching this glob pattern (as LOCKS MATCH).
        #[arg(long)]
        key: Option<String>,
        /// Only this session's holds.
        #[arg(long)]
        session: Option<u64>,
        /// From this time on: `YYYY-MM-DDTHH:MM[:SS]` (UTC) or Unix milliseconds.
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Before this time (same forms).
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
    },
}

fn parse_time(s: &str) -> Result<u64, String> {
    turnstile::durable::audit::parse_time(s)
        .ok_or_else(|| format!("'{s}' is not YYYY-MM-DDTHH:MM[:SS] (UTC) or Unix milliseconds"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            log_level,
            log_json,
        } => serve(config, &log_level, log_json),
        Command::Audit {
            data_dir,
            key,
            session,
            since,
            until,
        } => {
            let filter = turnstile::durable::audit::Filter {
                key: key.map(String::into_bytes),
                session,
                since_ms: since,
                until_ms: until,
            };
            let stdout = std::io::stdout();
            let report = turnstile::durable::audit::report(&data_dir, &filter, &mut stdout.lock())
                .with_context(|| format!("auditing {}", data_dir.display()))?;
            eprintln!(
                "{} changes, {} admin commands, {} deadlock refusals",
                report.changes.len(),
                report.actions.len(),
                report.refusals.len()
            );
            Ok(())
        }
        Command::Cluster {
            addr,
            mut connect,
            args,
        } => {
            if connect.pass.is_none() {
                connect.pass = std::env::var("TURNSTILE_PASSWORD").ok();
            }
            cluster_command(&addr, &connect, &args)
        }
        Command::Cli(args) => {
            let code = turnstile_cli::run(args)?;
            std::process::exit(code);
        }
    }
}

fn serve(config: Config, log_level: &str, log_json: bool) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(log_level).context("invalid --log-level")?;
    if log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    config.validate().map_err(anyhow::Error::msg)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        rt.worker_threads(config.threads);
    }
    let rt = rt.enable_all().build().context("starting the runtime")?;
    let result = rt.block_on(async move {
        let addr = format!("{}:{}", config.bind, config.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        turnstile::server::run(listener, config, shutdown_signal())
            .await
            .context("serving")?;
        Ok(())
    });
    // Connections and sessions are already ended; do not wait for idle runtime threads.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `turnstile cluster`: sends `CLUSTER args...` to `addr`, following one NOTLEADER
/// redirect, and prints the reply.
fn cluster_command(
    addr: &str,
    connect: &turnstile_cli::ConnectArgs,
    args: &[String],
) -> anyhow::Result<()> {
    let mut words = vec!["CLUSTER".to_string()];
    words.extend(args.iter().cloned());
    let mut target = addr.to_string();
    for _ in 0..3 {
        let mut remote = turnstile_cli::Remote::connect(&target, connect)?;
        let reply = remote.call(&words)?;
        if let Some(rest) = reply.strip_prefix("-NOTLEADER ") {
            if let Some(leader) = rest.split_whitespace().next() {
                eprintln!("redirected to the leader at {leader}");
                target = leader.to_string();
                continue;
            }
        }
        if let Some(e) = reply.strip_prefix('-') {
            anyhow::bail!("{e}");
        }
        println!("{}", reply.trim_start_matches(['+', ':']));
        return Ok(());
    }
    anyhow::bail!("too many redirects")
}
