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
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        config: Config,
        /// Log filter (error, warn, info, debug, trace, or a tracing directive).
        #[arg(long, env = "TURNSTILE_LOG", default_value = "info")]
        log_level: String,
    },
    /// An interactive shell (or one-shot command) against a server, like redis-cli.
    Cli(turnstile_cli::CliArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_level } => serve(config, &log_level),
        Command::Cli(args) => {
            let code = turnstile_cli::run(args)?;
            std::process::exit(code);
        }
    }
}

fn serve(config: Config, log_level: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(log_level).context("invalid --log-level")?)
        .init();
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
