//! Atomic multi-locks: several keys, granted all at once or not at all (MACQUIRE).

use std::time::Duration;

use bytes::Bytes;
use turnstile_proto::{Mode, MultiAcquire, Request, Response};

use crate::client::{check_key, Client};
use crate::error::{Error, Result};
use crate::lock::LockGuard;

/// A multi-lock request: build it with [`Client::lock_many`], add keys, then
/// [`MultiLockBuilder::acquire`] or [`MultiLockBuilder::try_acquire`].
///
/// The server queues it as one request on every key and grants every key together, so
/// it never holds some of the keys while waiting for others, and two multi-locks that
/// list the same keys in different orders never deadlock. Each key gets its own guard
/// and token; release them one by one, or all with [`Client::release_many`].
///
/// ```no_run
/// # async fn demo(client: turnstile_client::Client) -> turnstile_client::Result<()> {
/// use std::time::Duration;
/// let guards = client
///     .lock_many()
///     .exclusive("accounts/alice")
///     .exclusive("accounts/bob")
///     .shared("rates/eur")
///     .wait(Duration::from_secs(2))
///     .acquire()
///     .await?;
/// for g in &guards {
///     println!("{:?} token {}", g.key(), g.token());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a lock request does nothing until acquired"]
pub struct MultiLockBuilder {
    client: Client,
    items: Vec<(Bytes, Mode)>,
    ttl: Option<Duration>,
    wait: Option<Duration>,
    watchdog: bool,
}

fn ms_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl MultiLockBuilder {
    pub(crate) fn new(client: Client) -> Self {
        MultiLockBuilder {
            client,
            items: Vec::new(),
            ttl: None,
            wait: None,
            watchdog: true,
        }
    }

    /// Adds `key` in `mode`.
    pub fn key(mut self, key: impl AsRef<[u8]>, mode: Mode) -> Self {
        self.items
            .push((Bytes::copy_from_slice(key.as_ref()), mode));
        self
    }

    /// Adds `key` as a mutex (the writer of a read-write lock).
    pub fn exclusive(self, key: impl AsRef<[u8]>) -> Self {
        self.key(key, Mode::Exclusive)
    }

    /// Adds `key` as a reader of a read-write lock.
    pub fn shared(self, key: impl AsRef<[u8]>) -> Self {
        self.key(key, Mode::Shared)
    }

    /// Adds `permits` of the semaphore `key` of `limit` permits.
    pub fn semaphore(self, key: impl AsRef<[u8]>, limit: u32, permits: u32) -> Self {
        self.key(key, Mode::Semaphore { limit, permits })
    }

    /// The lease of every hold (the server's default if not set).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Give up after queueing this long ([`Error::Timeout`]); waits without limit if not
    /// set.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Renew the leases in the background while the guards live (on by default).
    pub fn watchdog(mut self, on: bool) -> Self {
        self.watchdog = on;
        self
    }

    /// Takes every key, queueing as long as [`Self::wait`] allows: one guard per key,
    /// in the order the keys were added.
    pub async fn acquire(self) -> Result<Vec<LockGuard>> {
        let wait = self.wait.map(ms_u32);
        self.send(wait).await?.ok_or(Error::Timeout)
    }

    /// Takes every key only if all are free now: `Ok(None)` when one is not.
    pub async fn try_acquire(self) -> Result<Option<Vec<LockGuard>>> {
        self.send(Some(0)).await
    }

    async fn send(&self, wait_ms: Option<u32>) -> Result<Option<Vec<LockGuard>>> {
        if self.items.is_empty() {
            return Err(Error::InvalidArgument(
                "a multi-lock needs at least one key",
            ));
        }
        for (key, _) in &self.items {
            check_key(key)?;
        }
        let req = MultiAcquire {
            items: self.items.iter().map(|(k, m)| (&k[..], *m)).collect(),
            ttl_ms: self.ttl.map_or(0, |t| ms_u32(t).max(1)),
            wait_ms,
        };
        let inner = &self.client.inner;
        let Some(tokens) = inner.acquire_multi(req).await? else {
            return Ok(None);
        };
        Ok(Some(
            self.items
                .iter()
                .zip(tokens)
                .map(|((key, _), token)| {
                    LockGuard::new(inner.clone(), key.clone(), token, self.ttl, self.watchdog)
                })
                .collect(),
        ))
    }
}

impl Client {
    /// A multi-lock of several keys; see [`MultiLockBuilder`].
    pub fn lock_many(&self) -> MultiLockBuilder {
        MultiLockBuilder::new(self.clone())
    }

    /// Releases the session's hold on each of `keys` (one reentrant level each), in one
    /// request. Returns how many were released (an error, NOTHELD, when none was). The
    /// guards of these keys are spent: let them go with `std::mem::forget`, or their
    /// drop releases a second time.
    pub async fn release_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u32> {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        for k in &keys {
            check_key(k)?;
        }
        match self.inner.call(Request::MultiRelease { keys }).await? {
            Response::Released { count } => Ok(count),
            _ => Err(Error::Disconnected),
        }
    }
}
