//! `turnstile cli`: a redis-cli-like shell for Turnstile's text protocol.
//!
//! The root binary embeds [`CliArgs`] as the arguments of its `cli` subcommand and calls
//! [`run`]. Three ways in, as in redis-cli:
//! - interactive, when no command is given and stdin is a terminal: a prompt with line
//!   editing, history (`~/.turnstile_cli_history`), hints of the syntax left to type,
//!   Tab completion and `HELP`;
//! - one line at a time from stdin when it is not a terminal (`turnstile cli < cmds.txt`);
//! - one-shot: `turnstile cli ACQUIRE k TTL 5000` prints the reply and exits 1 if it was
//!   an error.
//!
//! Modules, from the wire up:
//! - `resp`: RESP2/RESP3 encoding and capped, two-pass decoding;
//! - `client`: a blocking connection that sends a command and reads its reply;
//! - `format`: replies printed byte for byte as redis-cli prints them;
//! - `split`: redis-cli's quoting rules for typed lines;
//! - `commands`: the command table, and the help, hints and completion made from it;
//! - `editor`: the rustyline helper;
//! - `nodes`: node addresses (`--nodes`) and cluster redirects (`-NOTLEADER host:port`);
//! - `shell`: the session, the three modes, reconnecting, following redirects;
//! - `stat` and `waitgraph`: `--stat` and `--waitgraph-dot FILE`.

mod client;
mod commands;
mod editor;
mod format;
mod nodes;
mod remote;
mod resp;
mod shell;
mod split;
mod stat;
mod waitgraph;

use std::io::{self, IsTerminal};

use format::Output;
use nodes::Node;
pub use remote::{ConnectArgs, Remote};
use shell::{Settings, Shell};

/// Connects to a Turnstile server and runs commands: a shell without COMMAND, that one
/// command with it, as redis-cli does.
///
/// The host flag is -H/--host, since -h is help. Replies print as redis-cli prints them:
/// formatted on a terminal, raw in pipes and files (see --raw, --no-raw). In the shell,
/// HELP lists the commands, and hints show the syntax as you type.
///
/// A cluster (docs/cluster.md): give its nodes with --nodes. The shell connects to the
/// first one that answers; a command a follower refuses with `-NOTLEADER host:port` is
/// sent again, once, to that leader (noted on stderr as `-> Redirected to host:port`);
/// `-NOTLEADER` alone (an election under way) is retried after short pauses for up to
/// 5 seconds.
#[derive(clap::Args, Debug, Clone)]
pub struct CliArgs {
    /// Server host name or address.
    #[arg(short = 'H', long, env = "TURNSTILE_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Server port.
    #[arg(short = 'p', long, env = "TURNSTILE_PORT", default_value_t = 7379)]
    pub port: u16,

    /// Cluster nodes, `HOST:PORT,HOST:PORT,...` (a HOST alone takes --port), instead of
    /// --host and --port: the first that answers is used. A command refused with
    /// `-NOTLEADER host:port` is sent again to that leader (`-> Redirected to host:port`
    /// on stderr); `-NOTLEADER` alone (an election) is retried for up to 5 s.
    #[arg(
        long,
        env = "TURNSTILE_NODES",
        value_delimiter = ',',
        value_name = "NODES"
    )]
    pub nodes: Vec<String>,

    /// Password, sent with AUTH on connect (and on every reconnect). Prefer
    /// TURNSTILE_PASS: a command line can be read by other users of the machine.
    #[arg(short = 'a', long, env = "TURNSTILE_PASS", hide_env_values = true)]
    pub pass: Option<String>,

    /// User name for AUTH (with --pass).
    #[arg(long, requires = "pass")]
    pub user: Option<String>,

    /// Connect over TLS (a server run with --tls-cert), verifying its certificate against
    /// --cacert; the certificate must name the host connected to.
    #[arg(long, requires = "cacert")]
    pub tls: bool,

    /// With --tls: the CA certificate (PEM) the server's certificate is checked against.
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub cacert: Option<std::path::PathBuf>,

    /// With --tls: a client certificate (PEM) to present, for a server run with
    /// --tls-client-ca.
    #[arg(long, value_name = "PATH", requires_all = ["tls", "key"])]
    pub cert: Option<std::path::PathBuf>,

    /// With --cert: its private key (PEM).
    #[arg(long, value_name = "PATH", requires = "cert")]
    pub key: Option<std::path::PathBuf>,

    /// Speak RESP3: send HELLO 3 on connect (maps, nulls and booleans as RESP3 types).
    #[arg(short = '3', long)]
    pub resp3: bool,

    /// Print replies raw: no quotes or type annotations, one value per line. The default
    /// when stdout is not a terminal.
    #[arg(long, conflicts_with = "no_raw")]
    pub raw: bool,

    /// Print replies formatted, as on a terminal, even when stdout is not one.
    #[arg(long)]
    pub no_raw: bool,

    /// A live view instead of a shell: keys, holds, waiters, connections and rates of
    /// commands, grants, expiries and deadlocks, one line per --interval.
    #[arg(long)]
    pub stat: bool,

    /// Seconds between --stat lines.
    #[arg(short = 'i', long, default_value_t = 1.0, requires = "stat")]
    pub interval: f64,

    /// With --stat: print this many lines, then exit.
    #[arg(long, requires = "stat")]
    pub count: Option<u64>,

    /// Write the server's wait-for graph (who waits for whom) as a Graphviz DOT document
    /// to FILE (`-` for stdout), then exit; draw it with `dot -Tsvg FILE > waits.svg`.
    /// Runs `WAITGRAPH DOT COUNT 100000` (the server's maximum); a `// truncated` comment
    /// in the document says when there were more edges. EXPLAIN in the shell says why one
    /// session waits.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stat", "command"])]
    pub waitgraph_dot: Option<std::path::PathBuf>,

    /// A command to run once, then exit (`ACQUIRE k TTL 5000`). Without one, a shell.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// Runs the shell: interactive when `command` is empty and stdin is a terminal; reads
/// commands line by line from stdin when it is not a terminal; one-shot otherwise.
/// Returns the process exit code: 0 ok, 1 when a one-shot command (or any line read from
/// stdin) got an error reply, or the server could not be reached.
pub fn run(args: CliArgs) -> anyhow::Result<i32> {
    let nodes = nodes_of(&args).map_err(anyhow::Error::msg)?;
    let tls = match (&args.cacert, args.tls) {
        (Some(ca), true) => {
            let identity = args.cert.as_deref().zip(args.key.as_deref());
            Some(client::tls_config(ca, identity)?)
        }
        _ => None,
    };
    if args.stat {
        let interval = std::time::Duration::try_from_secs_f64(args.interval)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| anyhow::anyhow!("--interval must be a positive number of seconds"))?;
        let opts = stat::StatOptions {
            nodes,
            user: args.user,
            pass: args.pass,
            interval,
            count: args.count,
            tls,
        };
        return stat::run(&opts, &mut io::stdout());
    }
    if let Some(file) = args.waitgraph_dot {
        let opts = waitgraph::DotOptions {
            nodes,
            user: args.user,
            pass: args.pass,
            tls,
            file,
        };
        return waitgraph::run(&opts, &mut io::stdout());
    }
    let stdout_is_tty = io::stdout().is_terminal();
    // redis-cli's rule: formatted for people on a terminal, raw for pipes and files.
    let output = if args.raw {
        Output::Raw
    } else if args.no_raw || stdout_is_tty {
        Output::Standard
    } else {
        Output::Raw
    };
    let settings = Settings {
        nodes,
        user: args.user,
        pass: args.pass,
        resp3: args.resp3,
        output,
        color: stdout_is_tty,
        limits: resp::Limits::default(),
        tls,
    };
    let mut shell = Shell::new(settings, io::stdout(), io::stderr());
    if !args.command.is_empty() {
        return Ok(shell.one_shot(&args.command)?);
    }
    if io::stdin().is_terminal() {
        shell.interactive()
    } else {
        Ok(shell.script(io::stdin().lock())?)
    }
}

/// The servers to try, in order: --nodes, or --host and --port.
fn nodes_of(args: &CliArgs) -> Result<Vec<Node>, String> {
    let listed: Vec<&String> = args.nodes.iter().filter(|n| !n.trim().is_empty()).collect();
    if listed.is_empty() {
        return Ok(vec![Node::new(args.host.clone(), args.port)]);
    }
    listed
        .into_iter()
        .map(|n| Node::parse(n, args.port).map_err(|e| format!("--nodes: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CliArgs,
    }

    fn parse(argv: &[&str]) -> Result<CliArgs, clap::Error> {
        Cli::try_parse_from([&["turnstile-cli"], argv].concat()).map(|cli| cli.args)
    }

    #[test]
    fn options_come_first_and_the_rest_is_the_command() {
        let args = parse(&[
            "-H", "db1", "-p", "7000", "-3", "--raw", "ACQUIRE", "k", "TTL", "-5", "--raw",
        ])
        .expect("valid");
        assert_eq!((args.host.as_str(), args.port), ("db1", 7000));
        assert!(args.resp3 && args.raw && !args.no_raw);
        // As in redis-cli, everything after the command name belongs to the command.
        assert_eq!(args.command, ["ACQUIRE", "k", "TTL", "-5", "--raw"]);
    }

    #[test]
    fn flags_have_defaults_and_checks() {
        let args = parse(&[]).expect("valid");
        assert!(args.command.is_empty());
        assert_eq!(args.port, 7379);
        assert!(parse(&["--raw", "--no-raw"]).is_err());
        assert!(
            parse(&["--user", "bob"]).is_err(),
            "--user needs a password"
        );
        let args = parse(&["--user", "bob", "-a", "pw", "PING"]).expect("valid");
        assert_eq!(
            (args.user.as_deref(), args.pass.as_deref()),
            (Some("bob"), Some("pw"))
        );
        assert!(parse(&["-p", "70000"]).is_err());
        assert!(parse(&["--tls"]).is_err(), "--tls needs --cacert");
        let args = parse(&["-p", "7811", "--waitgraph-dot", "w.dot"]).expect("valid");
        assert!(args.command.is_empty(), "{:?}", args.command);
        let args = parse(&["--waitgraph-dot", "w.dot"]).expect("valid");
        assert_eq!(
            args.waitgraph_dot.as_deref(),
            Some(std::path::Path::new("w.dot"))
        );
        assert!(parse(&["--waitgraph-dot", "w.dot", "--stat"]).is_err());
        assert!(parse(&["--waitgraph-dot", "w.dot", "PING"]).is_err());
        assert!(parse(&["--tls", "--cacert", "ca.pem", "--cert", "c.pem"]).is_err());
        let args = parse(&[
            "--tls", "--cacert", "ca.pem", "--cert", "c.pem", "--key", "k.pem",
        ])
        .expect("valid");
        assert!(args.tls && args.key.is_some());
    }

    #[test]
    fn nodes_replace_host_and_port() {
        let args = parse(&["-H", "db1", "-p", "7000"]).expect("valid");
        assert_eq!(nodes_of(&args), Ok(vec![Node::new("db1", 7000)]));
        let args = parse(&[
            "--nodes",
            "10.0.0.1:7501,10.0.0.2:7502",
            "--nodes",
            "db3",
            "-p",
            "7503",
            "PING",
        ])
        .expect("valid");
        assert_eq!(
            nodes_of(&args),
            Ok(vec![
                Node::new("10.0.0.1", 7501),
                Node::new("10.0.0.2", 7502),
                Node::new("db3", 7503),
            ])
        );
        assert_eq!(args.command, ["PING"]);
        let args = parse(&["--nodes", "a:1,:2"]).expect("parsed by clap");
        assert!(nodes_of(&args).is_err());
    }
}
