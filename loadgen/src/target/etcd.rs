//! etcd's v3 Lock/Unlock API (the `v3lock` service), one lease per connection; on one
//! member or on a cluster (the address is then the members' list, `a,b,c`).
//!
//! Lock blocks in etcd until the lock is free and then returns the key that owns it
//! (`name/<lease in hex>`); Unlock deletes that key. A lock lives as long as the lease, so
//! the per-acquire TTL does not apply: each connection grants one lease and keeps it alive
//! while the run lasts, and revokes it at the end.
//!
//! Two habits of etcd 3.4 shape this: a contended lock is handed over only about every
//! 100 ms, and a Lock call a client abandons can leave later Locks on the same key hung
//! until etcd restarts. So a Lock is never cancelled: a wait is not bounded here (the
//! request's `wait` is ignored) and runs end by letting waiting Locks finish.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use etcd_client::{Client, LockOptions};
use tokio::task::JoinHandle;

use super::{AcquireRequest, Acquired, Conn, Grant, LockKind, Mode, Target};

pub struct Etcd {
    addr: String,
    lease_ttl: Duration,
}

impl Etcd {
    pub fn new(addr: String, lease_ttl: Duration) -> Self {
        Self { addr, lease_ttl }
    }
}

impl Target for Etcd {
    type Conn = EtcdConn;

    fn supports(&self, kind: LockKind) -> bool {
        kind == LockKind::Exclusive
    }

    fn waiting(&self) -> &'static str {
        "blocks in Lock (no timeout: a cancelled Lock can hang etcd 3.4)"
    }

    async fn connect(&self, _id: usize) -> anyhow::Result<EtcdConn> {
        // A cluster is its members' list, `a,b,c`: the client's endpoints, as etcd's own
        // clients are configured (requests go to any member; followers forward to the
        // leader).
        let endpoints: Vec<String> = self
            .addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.contains("://") {
                    a.to_string()
                } else {
                    format!("http://{a}")
                }
            })
            .collect();
        // One client per connection: its own HTTP/2 connection(s), as C sessions should be.
        let mut client = Client::connect(&endpoints, None)
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        let ttl_s = self.lease_ttl.as_secs().max(5);
        let lease = client
            .lease_grant(ttl_s as i64, None)
            .await
            .context("etcd LeaseGrant")?
            .id();
        let (mut keeper, mut stream) = client
            .lease_keep_alive(lease)
            .await
            .context("etcd LeaseKeepAlive")?;
        let every = Duration::from_secs(ttl_s) / 3;
        let keep_alive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match stream.message().await {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        });
        Ok(EtcdConn {
            client,
            lease,
            keep_alive,
            held: HashMap::new(),
        })
    }
}

pub struct EtcdConn {
    client: Client,
    lease: i64,
    keep_alive: JoinHandle<()>,
    /// Lock name -> the key etcd made for this hold (what Unlock takes).
    held: HashMap<Vec<u8>, Vec<u8>>,
}

impl Conn for EtcdConn {
    async fn acquire(&mut self, req: &AcquireRequest<'_>) -> anyhow::Result<Acquired> {
        if req.mode != Mode::Exclusive {
            bail!("etcd has no {:?} locks", req.mode.kind());
        }
        let resp = self
            .client
            .lock(req.key, Some(LockOptions::new().with_lease(self.lease)))
            .await
            .context("etcd Lock")?;
        let token = resp.header().map_or(0, |h| h.revision()) as u64;
        self.held.insert(req.key.to_vec(), resp.key().to_vec());
        Ok(Acquired::Granted(Grant { token }))
    }

    async fn release(&mut self, key: &[u8], _grant: Grant) -> anyhow::Result<()> {
        let Some(owner) = self.held.remove(key) else {
            bail!("etcd release of a key this connection does not hold");
        };
        self.client.unlock(owner).await.context("etcd Unlock")?;
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        self.keep_alive.abort();
        self.client
            .lease_revoke(self.lease)
            .await
            .context("etcd LeaseRevoke")?;
        Ok(())
    }
}
