//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::target::{RetryPolicy, TargetOptions, TargetSpec};

const AFTER_HELP: &str = "\
Targets are KIND[=ADDR]: turnstile (127.0.0.1:7379), redis (127.0.0.1:6379),
redis-fsync (127.0.0.1:6380), etcd (127.0.0.1:2379, build with --features etcd),
echo (127.0.0.1:7390, see `loadgen echo-server`), turnstile-bin (127.0.0.1:7379,
the binary protocol on the same port as text mode), turnstile-cluster
(127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403: each connection finds the leader),
etcd-cluster (127.0.0.1:2381,127.0.0.1:2383,127.0.0.1:2385).
Start the peers with `loadgen/peers.sh start`, a Turnstile cluster with
`scripts/cluster.sh start`. Pin loadgen and the server to
different cores, e.g. `taskset -c 1 loadgen ...` with the server on CPU 0.

Examples:
  loadgen uncontended -t turnstile -t redis -c 16 -d 10s
  loadgen contended -t turnstile -t redis -c 64 --keys 1 --hold 0ms
  loadgen uncontended -t redis -c 16 --rate 50000 -d 10s      (open loop)
  loadgen hold-many -t redis --locks 1000000 --server-pid $(pidof redis-server)
  loadgen compare --json > runs.json --plot runs.svg
  loadgen failover --kills 10 -c 8                  (scripts/cluster.sh start first)
  loadgen plot --out both.svg before.json after.json";

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Lock-service load generator: Turnstile against Redis, etcd and the TCP floor",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Worker threads of the load generator's runtime (pin the process with taskset).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Each connection acquires and releases its own keys: no contention.
    Uncontended(UncontendedArgs),
    /// All connections on a few hot keys: handoffs/s, wait percentiles, fairness.
    Contended(ContendedArgs),
    /// Shared/exclusive locks with a read ratio, and semaphores (Turnstile only).
    Mixed(MixedArgs),
    /// Acquire N locks with long leases: acquire rate and server memory per held lock.
    HoldMany(HoldManyArgs),
    /// Run a workload matrix against every reachable target, with ratios to Redis and echo.
    Compare(CompareArgs),
    /// Kill a Turnstile cluster's leader under load, again and again: failover times.
    Failover(FailoverArgs),
    /// A TCP echo server: the physical floor of a round trip on this machine.
    EchoServer(EchoServerArgs),
    /// Draw the latency curves of runs saved with --json on one chart.
    Plot(PlotArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// The service to measure, KIND[=ADDR]; repeat to run the workload against several
    /// in turn.
    #[arg(
        short = 't',
        long = "target",
        value_name = "KIND[=ADDR]",
        default_value = "turnstile"
    )]
    pub targets: Vec<TargetSpec>,

    #[command(flatten)]
    pub peer: PeerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct PeerArgs {
    /// Redis: the least delay before a contended SET NX is tried again.
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub retry_delay: Duration,

    /// Redis: a random extra delay on each retry, uniform in [0, jitter), as Redlock
    /// clients add (node-redlock: 200ms delay + 200ms jitter; redis-py Lock: 100ms).
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_duration)]
    pub retry_jitter: Duration,

    /// etcd: the TTL of each connection's lease (kept alive during the run).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub etcd_lease_ttl: Duration,

    /// Turnstile cluster: how long a connection keeps looking for the leader (an
    /// election, redirects) before it reports an error.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub leader_timeout: Duration,
}

impl PeerArgs {
    pub fn options(&self) -> TargetOptions {
        TargetOptions {
            redis_retry: RetryPolicy {
                delay: self.retry_delay,
                jitter: self.retry_jitter,
            },
            etcd_lease_ttl: self.etcd_lease_ttl,
            leader_timeout: self.leader_timeout,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Measure for this long (after the warmup).
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Measure this many acquire+release pairs in total instead of a duration.
    #[arg(short = 'n', long, value_name = "N", conflicts_with = "duration")]
    pub requests: Option<u64>,

    /// Run unmeasured for this long first.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Open loop: this many pairs per second in total, spread over the connections;
    /// latency counts from when each pair was due. Without it: closed loop, as fast as
    /// possible.
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,

    /// The lease of each acquire.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,

    /// Seed of the key and mode choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Print the results as JSON on stdout (the human report goes to stderr).
    #[arg(long)]
    pub json: bool,

    /// Draw the latency percentile curves into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,

    /// No live line every second.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UncontendedArgs {
    /// Connections (one session each).
    #[arg(short = 'c', long, default_value_t = 16)]
    pub connections: usize,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ContentionArgs {
    /// How long each grant is held before the release (tokio's timer: 1 ms steps).
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    pub hold: Duration,

    /// How long an acquire may wait (Turnstile: WAIT; Redis: how long it polls; etcd:
    /// ignored, Lock is never cancelled). Default: until granted.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct ContendedArgs {
    /// Connections (one session each).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Hot keys; each acquire picks one at random.
    #[arg(short = 'k', long, default_value_t = 1)]
    pub keys: u32,
    #[command(flatten)]
    pub contention: ContentionArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args, Debug, Clone)]
pub struct MixedArgs {
    /// Connections (one session each).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Read-write keys, and as many semaphore keys; each op picks one at random.
    #[arg(short = 'k', long, default_value_t = 16)]
    pub keys: u32,
    /// Of the read-write ops, the fraction that are SHARED (the rest EXCLUSIVE).
    #[arg(long, default_value_t = 0.8)]
    pub read_ratio: f64,
    /// The fraction of ops on semaphores.
    #[arg(long, default_value_t = 0.2)]
    pub semaphore_ratio: f64,
    /// Each semaphore's limit.
    #[arg(long, default_value_t = 4)]
    pub limit: u32,
    /// A semaphore hold takes 1..=max-permits permits, at random.
    #[arg(long, default_value_t = 2)]
    pub max_permits: u32,
    #[command(flatten)]
    pub contention: ContentionArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Args, Debug, Clone)]
pub struct HoldManyArgs {
    /// Locks to acquire and hold.
    #[arg(long, default_value_t = 100_000)]
    pub locks: u64,
    /// Connections sharing the acquires.
    #[arg(short = 'c', long, default_value_t = 16)]
    pub connections: usize,
    /// The lease of each lock: longer than the run.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The server's process id, to read its RSS (/proc/PID/status VmRSS) before and while
    /// holding.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Wait this long after the last acquire before reading the RSS.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Turnstile text mode. Without any target option, every target is tried at its
    /// default address.
    #[arg(long, value_name = "ADDR")]
    pub turnstile: Option<String>,
    /// Turnstile's binary protocol (through the client library).
    #[arg(long, value_name = "ADDR")]
    pub turnstile_bin: Option<String>,
    /// Redis in memory.
    #[arg(long, value_name = "ADDR")]
    pub redis: Option<String>,
    /// Redis with appendfsync always.
    #[arg(long, value_name = "ADDR")]
    pub redis_fsync: Option<String>,
    /// etcd (client port).
    #[arg(long, value_name = "ADDR")]
    pub etcd: Option<String>,
    /// A `loadgen echo-server`.
    #[arg(long, value_name = "ADDR")]
    pub echo: Option<String>,
    /// A Turnstile cluster: its nodes' client addresses (`scripts/cluster.sh start`).
    #[arg(long, value_name = "ADDR,ADDR,...")]
    pub turnstile_cluster: Option<String>,
    /// An etcd cluster: its members' client addresses (`loadgen/peers.sh start`).
    #[arg(long, value_name = "ADDR,ADDR,...")]
    pub etcd_cluster: Option<String>,

    /// Connection counts of the uncontended rows.
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "1,16,64"
    )]
    pub connections: Vec<usize>,
    /// Connection counts of the contended rows (0 to skip them).
    #[arg(
        long,
        value_name = "N,N,...",
        value_delimiter = ',',
        default_value = "64"
    )]
    pub contended: Vec<usize>,
    /// Hot keys of the contended rows.
    #[arg(long, default_value_t = 1)]
    pub contended_keys: u32,
    /// Add a hold-many row of this many locks (memory per lock needs the PIDs:
    /// --server-pid TARGET=PID).
    #[arg(long, value_name = "N")]
    pub hold_many: Option<u64>,
    /// The server process of a target, for hold-many's memory per lock: TARGET=PID.
    #[arg(long, value_name = "TARGET=PID")]
    pub server_pid: Vec<String>,
    /// Measure each run for this long.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured warmup before each run.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open loop at this total rate in every row (default: closed loop).
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,
    /// The lease of each acquire.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub contention: ContentionArgs,
    #[command(flatten)]
    pub peer: PeerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// The cluster's state folder, as `scripts/cluster.sh start` leaves it: `nodes` (one
    /// line per node: ID CLIENT_ADDR RAFT_ADDR), and per node n<ID>.pid (its PID),
    /// n<ID>.cmd (its command line, NUL-separated) and n<ID>.log (appended to on restart).
    #[arg(long, value_name = "DIR", default_value = "/tmp/turnstile-cluster")]
    pub cluster_dir: PathBuf,
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Connections of the steady acquire+release load (one session each).
    #[arg(short = 'c', long, default_value_t = 8)]
    pub connections: usize,
    /// Steady load before the first kill, and after each rejoin before the next kill.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Give up on a failover (no grant through a new leader), a rejoin, or a request after
    /// this long; also how long a connection looks for the leader.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The lease of each acquire.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Print the result as JSON on stdout (the human report goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No live line every second.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct EchoServerArgs {
    /// The port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 7390)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// The SVG file to write.
    #[arg(short = 'o', long, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// JSON files written by --json.
    #[arg(required = true, value_name = "RUNS.json")]
    pub inputs: Vec<PathBuf>,
}

/// Parses "10s", "1.5s", "500ms", "250us", "2m", "1h" or "0".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?} needs a unit: us, ms, s, m or h"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_contended_run() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "contended",
            "-t",
            "turnstile",
            "-t",
            "redis=127.0.0.1:7000",
            "-c",
            "8",
            "--hold",
            "1ms",
            "--wait",
            "2s",
            "-n",
            "1000",
            "--threads",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.threads, 2);
        let Command::Contended(a) = cli.command else {
            panic!("not contended")
        };
        assert_eq!(a.connections, 8);
        assert_eq!(a.target.targets.len(), 2);
        assert_eq!(a.target.targets[1].addr, "127.0.0.1:7000");
        assert_eq!(a.contention.wait, Some(Duration::from_secs(2)));
        assert_eq!(a.load.requests, Some(1000));
        assert!(Cli::try_parse_from(["loadgen", "uncontended", "-n", "5", "-d", "1s"]).is_err());
    }

    #[test]
    fn parses_a_failover_run() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "failover",
            "--cluster-dir",
            "/tmp/c",
            "--kills",
            "3",
            "-c",
            "4",
            "--settle",
            "500ms",
        ])
        .unwrap();
        let Command::Failover(a) = cli.command else {
            panic!("not failover")
        };
        assert_eq!(a.kills, 3);
        assert_eq!(a.connections, 4);
        assert_eq!(a.settle, Duration::from_millis(500));
        assert_eq!(a.cluster_dir, PathBuf::from("/tmp/c"));
    }
}
