//! Turnstile's binary protocol, through the Rust client library (`turnstile-client`).
//!
//! One [`turnstile_client::Client`] per loadgen connection, so C connections are C sessions
//! as for the other targets. The lease watchdog is off: loadgen holds locks for far less
//! than their TTL, and the other targets renew nothing either.

use std::collections::HashMap;

use anyhow::{bail, Context as _};
use turnstile_client::{Client, Error, LockGuard};

use super::{AcquireRequest, Acquired, Conn, Grant, LockKind, Mode, Target};

pub struct TurnstileBin {
    addr: String,
}

impl TurnstileBin {
    pub fn new(addr: String) -> Self {
        Self { addr }
    }
}

impl Target for TurnstileBin {
    type Conn = TurnstileBinConn;

    fn supports(&self, _kind: LockKind) -> bool {
        true
    }

    fn waiting(&self) -> &'static str {
        "queued on the server (binary ACQUIRE with a wait), granted by a push"
    }

    async fn connect(&self, id: usize) -> anyhow::Result<TurnstileBinConn> {
        let client = Client::builder()
            .addrs(self.addr.as_str())
            .name(format!("loadgen-{id}"))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        Ok(TurnstileBinConn {
            client,
            held: HashMap::new(),
        })
    }
}

pub struct TurnstileBinConn {
    client: Client,
    /// The guards of the holds this connection has (the hold-many workload keeps many).
    held: HashMap<Vec<u8>, LockGuard>,
}

impl Conn for TurnstileBinConn {
    async fn acquire(&mut self, req: &AcquireRequest<'_>) -> anyhow::Result<Acquired> {
        let mut lock = self.client.lock(req.key).ttl(req.ttl).watchdog(false);
        lock = match req.mode {
            Mode::Exclusive => lock,
            Mode::Shared => lock.shared(),
            Mode::Semaphore { limit, permits } => lock.semaphore(limit, permits),
        };
        let guard = match req.wait {
            Some(wait) if wait.is_zero() => match lock.try_acquire().await? {
                Some(guard) => guard,
                None => return Ok(Acquired::TimedOut),
            },
            Some(wait) => match lock.wait(wait).acquire().await {
                Ok(guard) => guard,
                Err(Error::Timeout) => return Ok(Acquired::TimedOut),
                Err(e) => return Err(e.into()),
            },
            None => lock.acquire().await?,
        };
        let token = guard.token();
        if self.held.insert(req.key.to_vec(), guard).is_some() {
            bail!("the server granted a key this connection already held");
        }
        Ok(Acquired::Granted(Grant { token }))
    }

    async fn release(&mut self, key: &[u8], _grant: Grant) -> anyhow::Result<()> {
        let Some(guard) = self.held.remove(key) else {
            bail!("release of a key this connection does not hold");
        };
        guard.release().await?;
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        for (_, guard) in self.held {
            guard.release().await?;
        }
        self.client.close().await?;
        Ok(())
    }
}
