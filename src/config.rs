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
    /// TCP keepalive idle time in seconds (0: off). A peer that vanished without closing
    /// is found dead after this plus a few probes, and its session ends.
    #[arg(long, env = "TURNSTILE_TCP_KEEPALIVE", default_value_t = 60)]
    pub tcp_keepalive_secs: u64,
}

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
        if self.shards == 0 || self.shards > 65_536 {
            return Err("--shards must be between 1 and 65536".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        Ok(())
    }
}
