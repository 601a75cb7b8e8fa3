//! The services loadgen measures, behind one pair of traits.
//!
//! A [`Target`] knows where a service is and opens connections; a [`Conn`] acquires and
//! releases locks over one connection (one session). Workloads are generic over the
//! target, so a call costs no boxing; [`TargetSpec::with_target`] picks the impl once.
//!
//! Adding a service is one module with one impl of each trait, one [`TargetKind`] variant
//! and one arm in [`TargetSpec::with_target`]. The binary protocol's slot is
//! [`turnstile_bin`]. Clusters are targets too: [`turnstile_cluster`] finds the leader of a
//! Turnstile cluster; etcd's client takes the members' list as its endpoints.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod echo;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod redis;
pub mod turnstile_bin;
pub mod turnstile_cluster;
pub mod turnstile_text;

/// How a lock is held, as in Turnstile's ACQUIRE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exclusive,
    Shared,
    /// One hold of `permits` out of a semaphore of `limit`.
    Semaphore {
        limit: u32,
        permits: u32,
    },
}

impl Mode {
    pub fn kind(self) -> LockKind {
        match self {
            Mode::Exclusive => LockKind::Exclusive,
            Mode::Shared => LockKind::Shared,
            Mode::Semaphore { .. } => LockKind::Semaphore,
        }
    }
}

/// The kinds of lock a service may or may not offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Exclusive,
    Shared,
    Semaphore,
}

/// One lock request.
#[derive(Debug, Clone, Copy)]
pub struct AcquireRequest<'a> {
    pub key: &'a [u8],
    pub mode: Mode,
    /// The lease. Targets that lease per connection (etcd) ignore it.
    pub ttl: Duration,
    /// How long the request may wait for the lock: `None` until granted, zero is a try-lock.
    pub wait: Option<Duration>,
}

/// A granted hold, handed back to [`Conn::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The fencing token (Turnstile), the value that proves ownership (Redis), the
    /// revision of the grant (etcd), or 0 (echo).
    pub token: u64,
}

/// What an acquire came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    Granted(Grant),
    /// The wait ran out first.
    TimedOut,
}

/// A service to measure: where it is and how to open a session on it.
pub trait Target: Send + Sync + 'static {
    type Conn: Conn;

    /// Whether the service has this kind of lock at all; workloads that need one it lacks
    /// are skipped with a notice.
    fn supports(&self, kind: LockKind) -> bool;

    /// How this target waits for a contended lock, for the report.
    fn waiting(&self) -> &'static str;

    /// Opens connection number `id` (ids are 0..connections, distinct within a run).
    fn connect(&self, id: usize) -> impl Future<Output = anyhow::Result<Self::Conn>> + Send;
}

/// One connection (one session) to a [`Target`]. One request in flight at a time.
pub trait Conn: Send + 'static {
    fn acquire(
        &mut self,
        req: &AcquireRequest<'_>,
    ) -> impl Future<Output = anyhow::Result<Acquired>> + Send;

    fn release(
        &mut self,
        key: &[u8],
        grant: Grant,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Ends the session cleanly (etcd revokes its lease). Dropping a Conn also works.
    fn close(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The services loadgen knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// Turnstile text mode: RESP on port 7379.
    Turnstile,
    /// Turnstile's binary protocol, through the client library (same port as text mode).
    TurnstileBin,
    /// Redis in memory: SET NX PX and a compare-and-delete script.
    Redis,
    /// The same, on a Redis with `appendfsync always` (its own label and default port).
    RedisFsync,
    /// etcd v3 Lock/Unlock (built with `--features etcd`).
    Etcd,
    /// A TCP echo server: the floor of a round trip on this machine.
    Echo,
    /// A Turnstile cluster, text mode: the address is the nodes' list `a,b,c`; every
    /// connection finds the leader and follows `NOTLEADER` redirects.
    TurnstileCluster,
    /// An etcd cluster: the address is the members' list `a,b,c`, given to one etcd client
    /// per connection as its endpoints (built with `--features etcd`).
    EtcdCluster,
}

impl TargetKind {
    pub const ALL: [TargetKind; 8] = [
        TargetKind::Echo,
        TargetKind::Turnstile,
        TargetKind::TurnstileBin,
        TargetKind::Redis,
        TargetKind::RedisFsync,
        TargetKind::Etcd,
        TargetKind::TurnstileCluster,
        TargetKind::EtcdCluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Turnstile => "turnstile",
            TargetKind::TurnstileBin => "turnstile-bin",
            TargetKind::Redis => "redis",
            TargetKind::RedisFsync => "redis-fsync",
            TargetKind::Etcd => "etcd",
            TargetKind::Echo => "echo",
            TargetKind::TurnstileCluster => "turnstile-cluster",
            TargetKind::EtcdCluster => "etcd-cluster",
        }
    }

    /// Whether the target replicates (a cluster): its ratios are taken against the etcd
    /// cluster rather than a single etcd.
    pub fn replicated(self) -> bool {
        matches!(self, TargetKind::TurnstileCluster | TargetKind::EtcdCluster)
    }

    pub fn default_addr(self) -> &'static str {
        match self {
            TargetKind::Turnstile => "127.0.0.1:7379",
            TargetKind::TurnstileBin => "127.0.0.1:7379",
            TargetKind::Redis => "127.0.0.1:6379",
            TargetKind::RedisFsync => "127.0.0.1:6380",
            TargetKind::Etcd => "127.0.0.1:2379",
            TargetKind::Echo => "127.0.0.1:7390",
            // scripts/cluster.sh start; loadgen/peers.sh start (etcd-cluster).
            TargetKind::TurnstileCluster => "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403",
            TargetKind::EtcdCluster => "127.0.0.1:2381,127.0.0.1:2383,127.0.0.1:2385",
        }
    }
}

impl FromStr for TargetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TargetKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = TargetKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown target {s:?} (one of {})", names.join(", "))
            })
    }
}

/// How Redis clients wait for a lock someone else holds: poll with a delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The least delay between two tries.
    pub delay: Duration,
    /// A random extra delay, uniform in [0, jitter): Redlock clients add one so that
    /// waiters do not retry in step.
    pub jitter: Duration,
}

/// Settings of the targets that have any.
#[derive(Debug, Clone, Copy)]
pub struct TargetOptions {
    pub redis_retry: RetryPolicy,
    /// The lease each etcd connection takes (kept alive while the run lasts).
    pub etcd_lease_ttl: Duration,
    /// Turnstile cluster: how long a connection looks for the leader before it errs.
    pub leader_timeout: Duration,
}

/// A target on the command line: `KIND[=ADDR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub kind: TargetKind,
    pub addr: String,
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, addr) = match s.split_once('=') {
            Some((k, a)) => (k.parse::<TargetKind>()?, a.to_string()),
            None => {
                let k = s.parse::<TargetKind>()?;
                (k, k.default_addr().to_string())
            }
        };
        if addr.is_empty() {
            return Err(format!("empty address in {s:?}"));
        }
        Ok(TargetSpec { kind, addr })
    }
}

/// Calls the generic code in `f` with the concrete target of a spec.
///
/// Rust has no generic closures, so the generic code is a trait with one generic method.
pub trait WithTarget {
    type Output;
    fn call<T: Target>(self, target: T) -> impl Future<Output = Self::Output>;
}

/// Why a target cannot be measured by this build or yet.
pub fn unavailable(kind: TargetKind) -> Option<&'static str> {
    match kind {
        #[cfg(not(feature = "etcd"))]
        TargetKind::Etcd | TargetKind::EtcdCluster => Some(
            "the etcd target is not in this build: install protoc with `loadgen/peers.sh install \
             etcd-build`, then build with `cargo build --release -p loadgen --features etcd`",
        ),
        _ => None,
    }
}

impl TargetSpec {
    pub fn label(&self) -> &'static str {
        self.kind.name()
    }

    /// Runs `f` on this spec's target. Errors when the target is not in this build.
    pub async fn with_target<F: WithTarget>(
        &self,
        opts: &TargetOptions,
        f: F,
    ) -> anyhow::Result<F::Output> {
        if let Some(why) = unavailable(self.kind) {
            anyhow::bail!("{}: {why}", self.kind.name());
        }
        let addr = self.addr.clone();
        Ok(match self.kind {
            TargetKind::Turnstile => f.call(turnstile_text::TurnstileText::new(addr)).await,
            TargetKind::Redis | TargetKind::RedisFsync => {
                f.call(redis::Redis::new(addr, opts.redis_retry)).await
            }
            TargetKind::Echo => f.call(echo::Echo::new(addr)).await,
            #[cfg(feature = "etcd")]
            TargetKind::Etcd | TargetKind::EtcdCluster => {
                f.call(etcd::Etcd::new(addr, opts.etcd_lease_ttl)).await
            }
            TargetKind::TurnstileBin => f.call(turnstile_bin::TurnstileBin::new(addr)).await,
            TargetKind::TurnstileCluster => {
                f.call(turnstile_cluster::TurnstileCluster::new(
                    &addr,
                    opts.leader_timeout,
                ))
                .await
            }
            #[cfg(not(feature = "etcd"))]
            TargetKind::Etcd | TargetKind::EtcdCluster => {
                let _ = opts.etcd_lease_ttl;
                anyhow::bail!("etcd: not in this build")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_specs() {
        let s: TargetSpec = "redis".parse().unwrap();
        assert_eq!(s.kind, TargetKind::Redis);
        assert_eq!(s.addr, "127.0.0.1:6379");
        let s: TargetSpec = "echo=127.0.0.1:9000".parse().unwrap();
        assert_eq!(s.kind, TargetKind::Echo);
        assert_eq!(s.addr, "127.0.0.1:9000");
        let s: TargetSpec = "Redis-Fsync".parse().unwrap();
        assert_eq!(s.addr, "127.0.0.1:6380");
        assert!("memcached".parse::<TargetSpec>().is_err());
        assert!("redis=".parse::<TargetSpec>().is_err());
        let s: TargetSpec = "turnstile-cluster".parse().unwrap();
        assert_eq!(s.addr, "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403");
        let s: TargetSpec = "etcd-cluster=127.0.0.1:1,127.0.0.1:2".parse().unwrap();
        assert_eq!(s.kind, TargetKind::EtcdCluster);
        assert_eq!(s.addr, "127.0.0.1:1,127.0.0.1:2");
    }
}
