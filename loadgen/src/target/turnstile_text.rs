//! Turnstile text mode: `ACQUIRE key [SHARED|SEMAPHORE limit PERMITS n] TTL ms [WAIT ms]`
//! and `RELEASE key` over RESP. The server queues a contended request and replies on
//! grant, so waiting costs no round trips.

use anyhow::bail;

use super::{AcquireRequest, Acquired, Conn, Grant, LockKind, Mode, Target};
use crate::resp::{self, Reply, RespConn};

pub struct TurnstileText {
    addr: String,
}

impl TurnstileText {
    pub fn new(addr: String) -> Self {
        Self { addr }
    }
}

impl Target for TurnstileText {
    type Conn = TurnstileConn;

    fn supports(&self, _kind: LockKind) -> bool {
        true
    }

    fn waiting(&self) -> &'static str {
        "queued on the server (ACQUIRE ... WAIT)"
    }

    async fn connect(&self, _id: usize) -> anyhow::Result<TurnstileConn> {
        let mut conn = RespConn::connect(&self.addr).await?;
        resp::command(conn.request(), 1).arg(b"PING");
        match conn.round_trip().await? {
            Reply::Simple(b"PONG") => {}
            other => bail!("{}: PING answered {}", self.addr, other.describe()),
        }
        Ok(TurnstileConn { conn })
    }
}

pub struct TurnstileConn {
    conn: RespConn,
}

/// Appends the ACQUIRE command for `req` to `out`. The echo target sends the same bytes.
pub fn encode_acquire(out: &mut Vec<u8>, req: &AcquireRequest<'_>) {
    let mode_args = match req.mode {
        Mode::Exclusive => 0,
        Mode::Shared => 1,
        Mode::Semaphore { .. } => 4,
    };
    let argc = 2 + mode_args + 2 + if req.wait.is_some() { 2 } else { 0 };
    let mut c = resp::command(out, argc);
    c.arg(b"ACQUIRE").arg(req.key);
    match req.mode {
        Mode::Exclusive => {}
        Mode::Shared => {
            c.arg(b"SHARED");
        }
        Mode::Semaphore { limit, permits } => {
            c.arg(b"SEMAPHORE")
                .arg_u64(u64::from(limit))
                .arg(b"PERMITS")
                .arg_u64(u64::from(permits));
        }
    }
    c.arg(b"TTL").arg_u64(millis(req.ttl).max(1));
    if let Some(wait) = req.wait {
        c.arg(b"WAIT").arg_u64(millis(wait));
    }
}

/// Appends `RELEASE key` to `out`.
pub fn encode_release(out: &mut Vec<u8>, key: &[u8]) {
    resp::command(out, 2).arg(b"RELEASE").arg(key);
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Conn for TurnstileConn {
    async fn acquire(&mut self, req: &AcquireRequest<'_>) -> anyhow::Result<Acquired> {
        encode_acquire(self.conn.request(), req);
        match self.conn.round_trip().await? {
            Reply::Integer(token) if token > 0 => Ok(Acquired::Granted(Grant {
                token: token as u64,
            })),
            Reply::Nil => Ok(Acquired::TimedOut),
            other => bail!("ACQUIRE answered {}", other.describe()),
        }
    }

    async fn release(&mut self, key: &[u8], _grant: Grant) -> anyhow::Result<()> {
        encode_release(self.conn.request(), key);
        match self.conn.round_trip().await? {
            Reply::Integer(1) => Ok(()),
            other => bail!("RELEASE answered {}", other.describe()),
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn encodes_acquire_options() {
        let mut out = Vec::new();
        encode_acquire(
            &mut out,
            &AcquireRequest {
                key: b"k",
                mode: Mode::Exclusive,
                ttl: Duration::from_secs(10),
                wait: None,
            },
        );
        assert_eq!(
            out,
            b"*4\r\n$7\r\nACQUIRE\r\n$1\r\nk\r\n$3\r\nTTL\r\n$5\r\n10000\r\n"
        );
        out.clear();
        encode_acquire(
            &mut out,
            &AcquireRequest {
                key: b"s",
                mode: Mode::Semaphore {
                    limit: 4,
                    permits: 2,
                },
                ttl: Duration::from_millis(500),
                wait: Some(Duration::ZERO),
            },
        );
        let (reply, n) = resp::parse(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        let words: Vec<_> = match reply {
            Reply::Array(items) => items
                .into_iter()
                .map(|r| match r {
                    Reply::Bulk(b) => String::from_utf8(b.to_vec()).unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            words.join(" "),
            "ACQUIRE s SEMAPHORE 4 PERMITS 2 TTL 500 WAIT 0"
        );
    }
}
