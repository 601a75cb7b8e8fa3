//! Every setting of `turnstile serve`, with its flag, environment variable and default.
//!
//! Limits are explicit here so that operators can see and change each one; the server
//! answers a request that would pass one with `-LIMIT` (or, for framing limits, with
//! `-ERR Protocol error` and a closed connection).

use std::time::Duration;

use crate::engine::Limits;
use crate::protocol::FrameLimits;

/// Configuration of a server.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "TURNSTILE_BIND", default_value = "127.0.0.1")]
    pub bind: String,
    /// TCP port to listen on.
    #[arg(long, short = 'p', env = "TURNSTILE_PORT", default_value_t = 7379)]
    pub port: u16,
    /// Password that clients must give with AUTH before any lock command.
    #[arg(long, env = "TURNSTILE_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Named users with passwords and permissions, one `user NAME rules...` line each
    /// (docs/acl.md). Without a `user default` line the default user keeps
    /// --requirepass (or needs no password).
    #[arg(long, env = "TURNSTILE_USERS_FILE")]
    pub users_file: Option<std::path::PathBuf>,
    /// TLS: the server's certificate chain (PEM). With --tls-key, the client port speaks
    /// TLS only (both protocols), and in cluster mode so does the raft port (docs/tls.md).
    #[arg(long, env = "TURNSTILE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS: the private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TURNSTILE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// TLS: require a client certificate signed by this CA (PEM) on the client port.
    /// In cluster mode also the CA peers are verified against, unless --tls-ca is given.
    #[arg(long, env = "TURNSTILE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// TLS: a verified client certificate whose subject CN names a user of
    /// --users-file makes the connection that user without AUTH (both protocols; AUTH or
    /// HELLO credentials can still switch users). A CN that names no user (or a user
    /// that is off) leaves the connection the default user, as without this flag
    /// (docs/tls.md).
    #[arg(long, env = "TURNSTILE_TLS_CERT_USERS", requires = "tls_client_ca")]
    pub tls_cert_users: bool,
    /// TLS, cluster mode: the CA (PEM) that signed the nodes' certificates; each node
    /// verifies its peers against it, both ways (default: --tls-client-ca).
    #[arg(long, env = "TURNSTILE_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Lease when ACQUIRE names no TTL, in milliseconds.
    #[arg(long, env = "TURNSTILE_DEFAULT_TTL_MS", default_value_t = 30_000)]
    pub default_ttl_ms: u64,
    /// Longest lease a client may ask for, in milliseconds.
    #[arg(long, env = "TURNSTILE_MAX_TTL_MS", default_value_t = 86_400_000)]
    pub max_ttl_ms: u64,
    /// How long a text-mode session outlives its connection before its holds are released,
    /// in milliseconds.
    #[arg(long, env = "TURNSTILE_SESSION_GRACE_MS", default_value_t = 0)]
    pub session_grace_ms: u64,
    /// Shards of the lock table (each has its own mutex).
    #[arg(long, env = "TURNSTILE_SHARDS", default_value_t = 64)]
    pub shards: usize,
    /// Worker threads of the runtime (0: one per core).
    #[arg(long, env = "TURNSTILE_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Connections served at once; more are refused with `-LIMIT`.
    #[arg(long, env = "TURNSTILE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Longest key in bytes.
    #[arg(long, env = "TURNSTILE_MAX_KEY_LEN", default_value_t = 1024)]
    pub max_key_len: usize,
    /// Most arguments in one command.
    #[arg(long, env = "TURNSTILE_MAX_ARGS", default_value_t = 1024)]
    pub max_args: usize,
    /// Largest argument (bulk string) in bytes.
    #[arg(long, env = "TURNSTILE_MAX_BULK", default_value_t = 512 * 1024)]
    pub max_bulk: usize,
    /// Longest inline command line in bytes.
    #[arg(long, env = "TURNSTILE_MAX_INLINE", default_value_t = 64 * 1024)]
    pub max_inline: usize,
    /// Largest single request in bytes.
    #[arg(long, env = "TURNSTILE_MAX_REQUEST", default_value_t = 1024 * 1024)]
    pub max_request: usize,
    /// Requests queued on one key at most.
    #[arg(long, env = "TURNSTILE_MAX_WAITERS_PER_KEY", default_value_t = 100_000)]
    pub max_waiters_per_key: usize,
    /// Holds plus queued requests of one session at most.
    #[arg(
        long,
        env = "TURNSTILE_MAX_HOLDS_PER_SESSION",
        default_value_t = 1_000_000
    )]
    pub max_holds_per_session: u32,
    /// Keys in the lock table at most.
    #[arg(long, env = "TURNSTILE_MAX_KEYS", default_value_t = 10_000_000)]
    pub max_keys: usize,
    /// Largest semaphore limit.
    #[arg(long, env = "TURNSTILE_MAX_SEMAPHORE", default_value_t = 1_000_000)]
    pub max_semaphore: u32,
    /// Most keys in one multi-lock (MACQUIRE) or multi-release (MRELEASE).
    #[arg(long, env = "TURNSTILE_MAX_MULTI_KEYS", default_value_t = 64)]
    pub max_multi_keys: usize,
    /// Lock-delay of every hold, in milliseconds (0: off): when a hold ends by lease
    /// expiry, session loss or ADMIN FORCE-RELEASE (not by RELEASE), its key is granted
    /// to nobody for this long. ACQUIRE ... LOCKDELAY ms asks for a longer one.
    #[arg(long, env = "TURNSTILE_LOCK_DELAY_MS", default_value_t = 0)]
    pub lock_delay_ms: u32,
    /// Priorities: milliseconds of waiting worth one priority level (ACQUIRE ... PRIORITY
    /// n), so that a waiter is passed by later higher-priority ones for a bounded time.
    #[arg(long, env = "TURNSTILE_PRIORITY_AGING_MS", default_value_t = 1000)]
    pub priority_aging_ms: u32,
    /// Largest value a holder may attach to its hold (ACQUIRE ... VALUE, SETVALUE), in
    /// bytes (at most 65535). Values are logged, kept in snapshots and pushed to every
    /// watcher of the key: meant for an address or a short id, not for data.
    #[arg(long, env = "TURNSTILE_MAX_VALUE_BYTES", default_value_t = 1024)]
    pub max_value_bytes: usize,
    /// Keys one connection may WATCH at once; more get `-LIMIT`.
    #[arg(long, env = "TURNSTILE_MAX_WATCHES", default_value_t = 1024)]
    pub max_watches: usize,
    /// Watch messages queued for one connection and not yet written at most; a watcher
    /// that falls this far behind (it stopped reading) is disconnected.
    #[arg(long, env = "TURNSTILE_WATCH_BACKLOG", default_value_t = 10_000)]
    pub watch_backlog: usize,
    /// TCP keepalive idle time in seconds (0: off). A peer that vanished without closing
    /// is found dead after this plus a few probes, and its session ends.
    #[arg(long, env = "TURNSTILE_TCP_KEEPALIVE", default_value_t = 60)]
    pub tcp_keepalive_secs: u64,
    /// Binary protocol: the session timeout a client gets when its HELLO asks for none, in
    /// milliseconds. A session ends when this long passes without a frame from its client.
    #[arg(long, env = "TURNSTILE_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Binary protocol: the longest session timeout a client may ask for, in milliseconds
    /// (longer requests are cut to this; shorter than 100 ms are raised to 100 ms).
    #[arg(
        long,
        env = "TURNSTILE_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub max_session_timeout_ms: u64,
    /// Binary protocol: the largest request payload in bytes (1024 up to 16 MiB). A larger
    /// frame gets an ERR and the connection is closed.
    #[arg(long, env = "TURNSTILE_MAX_FRAME", default_value_t = 64 * 1024)]
    pub max_frame: usize,
    /// Binary protocol: queued ACQUIREs one session may have at once; one more that would
    /// queue gets `LIMIT`.
    #[arg(long, env = "TURNSTILE_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Binary protocol: sessions on the server at most (attached to a connection or waiting
    /// for a resume); a HELLO that would create one more gets `LIMIT`.
    #[arg(long, env = "TURNSTILE_MAX_SESSIONS", default_value_t = 100_000)]
    pub max_sessions: usize,
    /// Connections from one IP address at most (more are refused with `-LIMIT`).
    #[arg(
        long,
        env = "TURNSTILE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 10_000
    )]
    pub max_connections_per_ip: usize,
    /// How long a connection may stay without sending its first bytes, without
    /// completing the binary handshake, or (with --requirepass) without authenticating,
    /// in milliseconds; then it is closed.
    #[arg(long, env = "TURNSTILE_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub auth_timeout_ms: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this address (none by default).
    #[arg(long, env = "TURNSTILE_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the write-ahead log (`wal/`) and snapshots (`snapshots/`) live.
    #[arg(long, env = "TURNSTILE_DATA_DIR", default_value = "turnstile-data")]
    pub data_dir: std::path::PathBuf,
    /// Keep no log: state is lost when the process ends (like Redis without
    /// persistence). For caches of locks and for benchmarks.
    #[arg(long, env = "TURNSTILE_IN_MEMORY")]
    pub in_memory: bool,
    /// When a change counts as durable, and so when its reply goes out: `always` (after
    /// the fsync that covers it), `interval:MS` (after its write; fsync every MS ms) or
    /// `never` (after its write; the OS flushes). Every mode survives `kill -9`; only
    /// `always` survives power loss.
    #[arg(long, env = "TURNSTILE_FSYNC", default_value = "always", value_parser = parse_fsync)]
    pub fsync: crate::wal::FsyncMode,
    /// Start even if the log is corrupt before its tail, cutting it at the first bad
    /// record (and losing what follows, which may have been acknowledged).
    #[arg(long, env = "TURNSTILE_WAL_REPAIR")]
    pub wal_repair: bool,
    /// Take a snapshot of the lock table after this many log records (the log before it
    /// is then deleted, which bounds restart time).
    #[arg(long, env = "TURNSTILE_SNAPSHOT_EVERY", default_value_t = 1_000_000)]
    pub snapshot_every: u64,
    /// Size of one log segment file in bytes.
    #[arg(long, env = "TURNSTILE_WAL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub wal_segment_bytes: u64,
    /// Run as node N of a replicated cluster (see docs/cluster.md). Needs a data
    /// directory.
    #[arg(long, env = "TURNSTILE_NODE_ID")]
    pub node_id: Option<u64>,
    /// Cluster mode: where this node listens for its peers (default: the client port +
    /// 10000 on --bind).
    #[arg(long, env = "TURNSTILE_RAFT_ADDR")]
    pub raft_addr: Option<String>,
    /// Cluster mode: the client address other nodes name in NOTLEADER redirects
    /// (default: --bind:--port).
    #[arg(long, env = "TURNSTILE_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Cluster mode: the voters of a new cluster, `ID=RAFT_ADDR/CLIENT_ADDR,...`. On its
    /// first start the node with the lowest id listed initialises the cluster with them;
    /// ignored once the data directory has a log.
    #[arg(long, env = "TURNSTILE_CLUSTER", value_parser = parse_members)]
    pub cluster: Option<Members>,
    /// Cluster mode: the password nodes authenticate each other with (default:
    /// --requirepass).
    #[arg(long, env = "TURNSTILE_CLUSTER_PASSWORD", hide_env_values = true)]
    pub cluster_password: Option<String>,
    /// Cluster mode: the leader's heartbeat interval in milliseconds; also how long the
    /// leader waits for a follower's answer to a replication request (openraft's rule).
    #[arg(long, env = "TURNSTILE_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Cluster mode: the lower bound of the randomised election timeout in milliseconds
    /// (the upper bound is twice it). A new leader adds the upper bound to every lease.
    #[arg(long, env = "TURNSTILE_ELECTION_TIMEOUT_MS", default_value_t = 200)]
    pub election_timeout_ms: u64,
    /// Cluster mode: INSPECT and LOCKS on a follower: `redirect` (NOTLEADER) or `stale`
    /// (answered from the follower's own, possibly older, state).
    #[arg(long, env = "TURNSTILE_FOLLOWER_READS", default_value = "redirect", value_parser = ["redirect", "stale"])]
    pub follower_reads: String,
    /// The shortest lease an ACQUIRE or RENEW may ask for, in milliseconds (shorter gets
    /// `-LIMIT`). Default: 1 standalone; in cluster mode four election timeouts (800 ms
    /// by default), because a failover may lengthen a lease by up to the election timeout.
    #[arg(long, env = "TURNSTILE_MIN_TTL_MS")]
    pub min_ttl_ms: Option<u64>,
}

/// The voters named by `--cluster`: id -> (raft address, client address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members(pub std::collections::BTreeMap<u64, (String, String)>);

/// Parses `--cluster`: `ID=RAFT_ADDR/CLIENT_ADDR` entries separated by commas.
pub fn parse_members(s: &str) -> Result<Members, String> {
    let mut out = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("'{part}' is not ID=RAFT_ADDR/CLIENT_ADDR");
        let (id, addrs) = part.split_once('=').ok_or_else(bad)?;
        let (raft, client) = addrs.split_once('/').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        if id == 0 || raft.is_empty() || client.is_empty() {
            return Err(bad());
        }
        if out
            .insert(id, (raft.to_string(), client.to_string()))
            .is_some()
        {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if out.is_empty() {
        return Err("--cluster names no node".into());
    }
    Ok(Members(out))
}

/// Parses `--fsync`: `always`, `never` or `interval:MS`.
pub fn parse_fsync(s: &str) -> Result<crate::wal::FsyncMode, String> {
    use crate::wal::FsyncMode;
    match s {
        "always" => Ok(FsyncMode::Always),
        "never" => Ok(FsyncMode::Never),
        _ => {
            let ms = s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .ok_or_else(|| format!("'{s}' is not always, never or interval:MS (MS > 0)"))?;
            Ok(FsyncMode::Interval(Duration::from_millis(ms)))
        }
    }
}

/// The shortest session timeout a binary client gets, in milliseconds.
pub const MIN_SESSION_TIMEOUT_MS: u64 = 100;

impl Default for Config {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        Wrapper::parse_from(["turnstile"]).config
    }
}

impl Config {
    /// The shortest lease accepted (see `--min-ttl-ms`).
    pub fn min_ttl(&self) -> u64 {
        match (self.min_ttl_ms, self.node_id) {
            (Some(ms), _) => ms.max(1),
            (None, Some(_)) => self.election_timeout_ms.saturating_mul(4),
            (None, None) => 1,
        }
    }

    /// The limits the lock table enforces.
    pub fn engine_limits(&self) -> Limits {
        Limits {
            max_waiters_per_key: self.max_waiters_per_key,
            max_keys: self.max_keys,
            max_holds_per_session: self.max_holds_per_session,
        }
    }

    /// The limits of the request decoder.
    pub fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_bulk: self.max_bulk,
            max_args: self.max_args,
            max_inline: self.max_inline,
            max_request: self.max_request,
        }
    }

    /// The timeout of a binary session whose HELLO asked for `requested_ms` (0: the
    /// default), within [`MIN_SESSION_TIMEOUT_MS`] and the configured maximum.
    pub fn session_timeout(&self, requested_ms: u32) -> Duration {
        let ms = if requested_ms == 0 {
            self.session_timeout_ms
        } else {
            u64::from(requested_ms)
        };
        let max = self.max_session_timeout_ms.max(MIN_SESSION_TIMEOUT_MS);
        Duration::from_millis(ms.clamp(MIN_SESSION_TIMEOUT_MS, max))
    }

    /// The session grace as a duration.
    pub fn session_grace(&self) -> Duration {
        Duration::from_millis(self.session_grace_ms)
    }

    /// Checks settings that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_ttl_ms == 0 || self.default_ttl_ms > self.max_ttl_ms {
            return Err("--default-ttl-ms must be between 1 and --max-ttl-ms".into());
        }
        if self.max_ttl_ms > u64::from(u32::MAX) {
            return Err(format!("--max-ttl-ms must be at most {}", u32::MAX));
        }
        if self.priority_aging_ms == 0 {
            return Err("--priority-aging-ms must be at least 1".into());
        }
        if u64::from(self.lock_delay_ms) > self.max_ttl_ms {
            return Err("--lock-delay-ms must be at most --max-ttl-ms".into());
        }
        if self.max_value_bytes > 65_535 {
            return Err("--max-value-bytes must be at most 65535".into());
        }
        if self.watch_backlog == 0 {
            return Err("--watch-backlog must be at least 1".into());
        }
        if self.shards == 0 || self.shards > 65_536 {
            return Err("--shards must be between 1 and 65536".into());
        }
        if self.min_ttl() > self.max_ttl_ms || self.min_ttl() > self.default_ttl_ms {
            return Err(format!(
                "the minimum TTL ({} ms) is above --default-ttl-ms or --max-ttl-ms",
                self.min_ttl()
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".into());
        }
        if (self.tls_client_ca.is_some() || self.tls_ca.is_some()) && self.tls_cert.is_none() {
            return Err("--tls-client-ca and --tls-ca need --tls-cert and --tls-key".into());
        }
        if self.tls_cert_users && self.tls_client_ca.is_none() {
            return Err("--tls-cert-users needs --tls-client-ca (verified certificates)".into());
        }
        if self.node_id.is_some()
            && self.tls_cert.is_some()
            && self.tls_ca.is_none()
            && self.tls_client_ca.is_none()
        {
            return Err(
                "cluster mode with TLS needs --tls-ca (or --tls-client-ca): the CA that nodes \
                 verify each other against"
                    .into(),
            );
        }
        if let Some(id) = self.node_id {
            if id == 0 {
                return Err("--node-id must be at least 1".into());
            }
            if self.in_memory {
                return Err("--node-id needs a data directory; drop --in-memory".into());
            }
            if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms {
                return Err("--election-timeout-ms must be above --heartbeat-ms (> 0)".into());
            }
            if let Some(m) = &self.cluster {
                if !m.0.contains_key(&id) {
                    return Err(format!("--cluster does not name this node ({id})"));
                }
            }
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.max_session_timeout_ms < MIN_SESSION_TIMEOUT_MS
            || self.max_session_timeout_ms > u64::from(u32::MAX)
        {
            return Err(format!(
                "--max-session-timeout-ms must be between {MIN_SESSION_TIMEOUT_MS} and {}",
                u32::MAX
            ));
        }
        if self.session_timeout_ms < MIN_SESSION_TIMEOUT_MS
            || self.session_timeout_ms > self.max_session_timeout_ms
        {
            return Err(format!(
                "--session-timeout-ms must be between {MIN_SESSION_TIMEOUT_MS} and --max-session-timeout-ms"
            ));
        }
        if self.max_frame < 1024 || self.max_frame > turnstile_proto::MAX_PAYLOAD {
            return Err(format!(
                "--max-frame must be between 1024 and {}",
                turnstile_proto::MAX_PAYLOAD
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > u32::MAX as usize {
            return Err(format!(
                "--max-in-flight must be between 1 and {}",
                u32::MAX
            ));
        }
        if self.max_connections_per_ip == 0 {
            return Err("--max-connections-per-ip must be at least 1".into());
        }
        if self.auth_timeout_ms == 0 {
            return Err("--auth-timeout-ms must be at least 1".into());
        }
        if self.snapshot_every == 0 {
            return Err("--snapshot-every must be at least 1".into());
        }
        if !(crate::wal::MIN_SEGMENT_SIZE..=crate::wal::MAX_SEGMENT_SIZE)
            .contains(&self.wal_segment_bytes)
        {
            return Err(format!(
                "--wal-segment-bytes must be between {} and {}",
                crate::wal::MIN_SEGMENT_SIZE,
                crate::wal::MAX_SEGMENT_SIZE
            ));
        }
        if self.max_sessions == 0 {
            return Err("--max-sessions must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn binary_limits_are_checked() {
        let bad = [
            Config {
                max_frame: 1023,
                ..Config::default()
            },
            Config {
                max_frame: turnstile_proto::MAX_PAYLOAD + 1,
                ..Config::default()
            },
            Config {
                max_in_flight: 0,
                ..Config::default()
            },
            Config {
                max_sessions: 0,
                ..Config::default()
            },
            Config {
                session_timeout_ms: 99,
                ..Config::default()
            },
            Config {
                session_timeout_ms: 400_000,
                ..Config::default()
            },
            Config {
                max_session_timeout_ms: u64::from(u32::MAX) + 1,
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn fsync_modes_parse() {
        use crate::wal::FsyncMode;
        assert_eq!(parse_fsync("always"), Ok(FsyncMode::Always));
        assert_eq!(parse_fsync("never"), Ok(FsyncMode::Never));
        assert_eq!(
            parse_fsync("interval:250"),
            Ok(FsyncMode::Interval(Duration::from_millis(250)))
        );
        for bad in ["", "sometimes", "interval:", "interval:0", "interval:x"] {
            assert!(parse_fsync(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn session_timeouts_are_clamped() {
        let c = Config {
            session_timeout_ms: 5_000,
            max_session_timeout_ms: 60_000,
            ..Config::default()
        };
        assert_eq!(c.session_timeout(0), Duration::from_millis(5_000));
        assert_eq!(c.session_timeout(1), Duration::from_millis(100));
        assert_eq!(c.session_timeout(2_000), Duration::from_millis(2_000));
        assert_eq!(c.session_timeout(u32::MAX), Duration::from_millis(60_000));
    }
}
