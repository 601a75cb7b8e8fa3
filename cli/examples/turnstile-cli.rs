//! `turnstile cli` on its own, as the root binary embeds it: the integration tests run
//! this, and it is handy while the server binary is being built.

use clap::Parser;

#[derive(Parser)]
#[command(name = "turnstile-cli", about = "A redis-cli-like shell for Turnstile")]
struct Cli {
    #[command(flatten)]
    args: turnstile_cli::CliArgs,
}

fn main() -> anyhow::Result<()> {
    let code = turnstile_cli::run(Cli::parse().args)?;
    std::process::exit(code);
}
