//! Redis as its users lock with it: acquire is `SET key value NX PX ttl` with a value only
//! this acquire knows, release is the standard compare-and-delete Lua script through
//! EVALSHA (SCRIPT LOAD once per connection). A contended acquire polls: SET NX again
//! after a delay plus a random jitter, as Redlock clients and redis-py's Lock do, until it
//! wins or its wait runs out. Redis has no shared locks and no semaphores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;

use super::{AcquireRequest, Acquired, Conn, Grant, LockKind, Mode, RetryPolicy, Target};
use crate::resp::{self, Reply, RespConn};

/// The release script of the Redis documentation's locking pattern.
pub const RELEASE_SCRIPT: &str = "if redis.call(\"get\",KEYS[1]) == ARGV[1] then \
     return redis.call(\"del\",KEYS[1]) else return 0 end";

pub struct Redis {
    addr: String,
    retry: RetryPolicy,
}

impl Redis {
    pub fn new(addr: String, retry: RetryPolicy) -> Self {
        Self { addr, retry }
    }
}

impl Target for Redis {
    type Conn = RedisConn;

    fn supports(&self, kind: LockKind) -> bool {
        kind == LockKind::Exclusive
    }

    fn waiting(&self) -> &'static str {
        "client polls SET NX with a delay and jitter"
    }

    async fn connect(&self, id: usize) -> anyhow::Result<RedisConn> {
        let mut conn = RespConn::connect(&self.addr).await?;
        resp::command(conn.request(), 3)
            .arg(b"SCRIPT")
            .arg(b"LOAD")
            .arg(RELEASE_SCRIPT.as_bytes());
        let sha = match conn.round_trip().await.context("SCRIPT LOAD")? {
            Reply::Bulk(sha) => sha.to_vec(),
            other => bail!("{}: SCRIPT LOAD answered {}", self.addr, other.describe()),
        };
        Ok(RedisConn {
            conn,
            sha,
            retry: self.retry,
            rng: fastrand::Rng::with_seed(0x5eed ^ id as u64),
        })
    }
}

pub struct RedisConn {
    conn: RespConn,
    /// The SHA1 of [`RELEASE_SCRIPT`].
    sha: Vec<u8>,
    retry: RetryPolicy,
    rng: fastrand::Rng,
}

impl RedisConn {
    fn next_token(&mut self) -> u64 {
        static SALT: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let salt = *SALT.get_or_init(|| fastrand::u64(..));
        token(salt.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    fn retry_delay(&mut self) -> Duration {
        let jitter = self.retry.jitter.as_nanos() as u64;
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.u64(0..jitter)
        };
        self.retry.delay + Duration::from_nanos(extra)
    }
}

/// The value of an acquire: a process-wide counter (from a random start, so that no two
/// acquires of the process, on any connection or after a reconnect, share one) mixed by
/// splitmix64, a bijection, so that it looks like the random values clients use.
fn token(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 16 lowercase hex digits: the value SET stores.
fn hex16(n: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

impl Conn for RedisConn {
    async fn acquire(&mut self, req: &AcquireRequest<'_>) -> anyhow::Result<Acquired> {
        if req.mode != Mode::Exclusive {
            bail!("redis has no {:?} locks", req.mode.kind());
        }
        let token = self.next_token();
        let value = hex16(token);
        let ttl_ms = u64::try_from(req.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let deadline = req.wait.map(|w| Instant::now() + w);
        loop {
            resp::command(self.conn.request(), 6)
                .arg(b"SET")
                .arg(req.key)
                .arg(&value)
                .arg(b"NX")
                .arg(b"PX")
                .arg_u64(ttl_ms);
            match self.conn.round_trip().await? {
                Reply::Simple(b"OK") => return Ok(Acquired::Granted(Grant { token })),
                Reply::Nil => {}
                other => bail!("SET NX answered {}", other.describe()),
            }
            let delay = self.retry_delay();
            match deadline {
                Some(d) if Instant::now() + delay > d => {
                    // One last try at the deadline, as a polling client would.
                    if Instant::now() >= d {
                        return Ok(Acquired::TimedOut);
                    }
                    tokio::time::sleep_until(d).await;
                }
                _ => tokio::time::sleep(delay).await,
            }
        }
    }

    async fn release(&mut self, key: &[u8], grant: Grant) -> anyhow::Result<()> {
        let value = hex16(grant.token);
        resp::command(self.conn.request(), 5)
            .arg(b"EVALSHA")
            .arg(&self.sha)
            .arg(b"1")
            .arg(key)
            .arg(&value);
        match self.conn.round_trip().await? {
            Reply::Integer(1) => Ok(()),
            Reply::Integer(0) => bail!("release found the lock not held (its lease ran out?)"),
            other => bail!("EVALSHA answered {}", other.describe()),
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_hex() {
        assert_eq!(&hex16(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        let mut seen = std::collections::HashSet::new();
        for n in 0..10_000 {
            assert!(seen.insert(hex16(token((u64::MAX - 5_000).wrapping_add(n)))));
        }
    }
}
