//! Lock requests and guards, and the watchdog that renews the leases of live guards.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tracing::debug;
use turnstile_proto::{Convert, Mode, ModeKind, Request, Response};

use crate::client::{check_key, AcquireSpec, Acquired, Client, Inner};
use crate::error::{Error, Result};

/// Why a guard's hold is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The server said the lease ran out (it was not renewed in time).
    Expired,
    /// A renewal was refused: the server holds nothing for the session on the key.
    NotHeld,
    /// Renewals could not reach the server before the lease ran out.
    Unreachable,
    /// The session ended (its timeout passed while disconnected, or the client closed).
    SessionEnded,
}

/// What a guard knows about its hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardStatus {
    /// Set once the hold is lost; it never comes back.
    pub lost: Option<Lost>,
    /// Set once another session has queued for the key.
    pub waiting: bool,
}

/// A request for a lock, made by [`Client::lock`]. Exclusive, with the server's default
/// TTL, waiting until granted, with the watchdog on, unless told otherwise.
///
/// ```no_run
/// # async fn demo(client: turnstile_client::Client) -> turnstile_client::Result<()> {
/// use std::time::Duration;
/// // A reader of a read-write lock, giving up after 2 s:
/// let read = client.lock("config").shared().wait(Duration::from_secs(2)).acquire().await?;
/// // 3 of a semaphore of 10 permits, only if free now:
/// if let Some(permits) = client.lock("pool").semaphore(10, 3).try_acquire().await? {
///     println!("got 3 permits, token {}", permits.token());
/// }
/// // Ahead of plain waiters for a while, and nobody gets it for 5 s if we die holding it:
/// let urgent = client
///     .lock("deploy")
///     .priority(10)
///     .lock_delay(Duration::from_secs(5))
///     .acquire()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a lock request does nothing until acquired"]
pub struct LockBuilder {
    client: Client,
    key: Bytes,
    mode: Mode,
    reentrant: bool,
    ttl: Option<Duration>,
    wait: Option<Duration>,
    watchdog: bool,
    priority: u32,
    lock_delay: Option<Duration>,
    value: Option<Bytes>,
}

fn ms_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl LockBuilder {
    pub(crate) fn new(client: Client, key: Bytes) -> Self {
        LockBuilder {
            client,
            key,
            mode: Mode::Exclusive,
            reentrant: false,
            ttl: None,
            wait: None,
            watchdog: true,
            priority: 0,
            lock_delay: None,
            value: None,
        }
    }

    /// A priority among waiters, 0 (the default: plain FIFO) to 1000. A waiting request
    /// gains one level per `--priority-aging-ms` of the server (default 1 s) it waits,
    /// so a higher priority passes earlier requests only for a bounded time.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// A lock-delay: if the hold ends by lease expiry, session loss or a forced release
    /// (not by release), the server grants the key to nobody for this long (at least
    /// the server's `--lock-delay-ms`).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = Some(delay);
        self
    }

    /// A value to attach to the hold (e.g. the holder's address): anyone can read it
    /// ([`Client::get_value`], [`Client::watch`]); at most the server's
    /// `--max-value-bytes` (1024 by default).
    pub fn value(mut self, value: impl AsRef<[u8]>) -> Self {
        self.value = Some(Bytes::copy_from_slice(value.as_ref()));
        self
    }

    /// Exclusive (the default): a mutex, or the writer of a read-write lock.
    pub fn exclusive(mut self) -> Self {
        self.mode = Mode::Exclusive;
        self
    }

    /// Shared: a reader of a read-write lock (readers hold together; a writer waits).
    pub fn shared(mut self) -> Self {
        self.mode = Mode::Shared;
        self
    }

    /// `permits` of a counting semaphore of `limit` permits.
    pub fn semaphore(mut self, limit: u32, permits: u32) -> Self {
        self.mode = Mode::Semaphore { limit, permits };
        self
    }

    /// Reentrant (exclusive and shared): if this session already holds the key in the
    /// same mode, the hold's count goes up and the same token comes back; each guard
    /// releases one level.
    pub fn reentrant(mut self) -> Self {
        self.reentrant = true;
        self
    }

    /// The lease. Without the watchdog the hold ends this long after the grant unless
    /// renewed; with it (the default), it is renewed every third of it while the guard
    /// lives. The server's default when not set.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.max(Duration::from_millis(1)));
        self
    }

    /// How long the request may wait in the queue (the default: until granted).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Whether the guard renews its lease in the background (default: yes).
    pub fn watchdog(mut self, on: bool) -> Self {
        self.watchdog = on;
        self
    }

    /// Waits for the lock (up to the wait set with [`Self::wait`]).
    /// [`Error::Timeout`] when the wait ran out. Dropping the future before it completes
    /// cancels the queued request on the server.
    pub async fn acquire(self) -> Result<LockGuard> {
        let wait = self.wait.map(ms_u32);
        match self.send(wait).await? {
            Acquired::Granted(token) => Ok(self.guard(token)),
            Acquired::Busy => Err(Error::Timeout),
        }
    }

    /// Takes the lock only if it is free now: `Ok(None)` when it is not.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>> {
        match self.send(Some(0)).await? {
            Acquired::Granted(token) => Ok(Some(self.guard(token))),
            Acquired::Busy => Ok(None),
        }
    }

    async fn send(&self, wait_ms: Option<u32>) -> Result<Acquired> {
        let max = self
            .client
            .inner
            .session()
            .map_or(turnstile_proto::MAX_STR, |s| s.max_key_len);
        check_key(&self.key)?;
        if self.key.len() > max {
            return Err(Error::InvalidArgument(
                "the key is longer than the server allows",
            ));
        }
        let spec = AcquireSpec {
            mode: self.mode,
            reentrant: self.reentrant,
            ttl_ms: self.ttl.map_or(0, |t| ms_u32(t).max(1)),
            wait_ms,
            priority: self.priority,
            lock_delay_ms: self.lock_delay.map_or(0, ms_u32),
            value: self.value.clone(),
        };
        if let Some(v) = &self.value {
            check_key(v)?;
        }
        let call = self.client.inner.acquire(self.key.clone(), spec).await?;
        call.outcome().await
    }

    fn guard(&self, token: u64) -> LockGuard {
        LockGuard::new(
            self.client.inner.clone(),
            self.key.clone(),
            token,
            self.ttl,
            self.watchdog,
        )
    }
}

/// A hold on a key. Its lease is renewed in the background while it lives (unless the
/// watchdog was turned off); dropping it releases the hold without blocking;
/// [`LockGuard::release`] does it and waits for the answer.
///
/// A hold can be lost (the lease ran out while renewals could not get through, or the
/// session ended): check [`LockGuard::is_lost`], or wait on [`LockGuard::lost`] next to
/// the work the lock protects, and pass [`LockGuard::token`] to the resources you write
/// to so that they can refuse a stale holder.
///
/// ```no_run
/// # async fn demo(client: turnstile_client::Client) -> turnstile_client::Result<()> {
/// let guard = client.lock("reports/daily").acquire().await?;
/// tokio::select! {
///     _ = do_the_work(guard.token()) => {}
///     lost = guard.lost() => eprintln!("lost the lock ({lost:?}): stopping"),
/// }
/// guard.release().await?;
/// # Ok(()) }
/// # async fn do_the_work(_token: u64) {}
/// ```
#[must_use = "dropping a guard releases the lock at once"]
pub struct LockGuard {
    inner: Arc<Inner>,
    key: Bytes,
    token: u64,
    id: u64,
    status: watch::Receiver<GuardStatus>,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("token", &self.token)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl LockGuard {
    /// A guard of a hold just granted (its lease renewed in the background when
    /// `watchdog`; `ttl` None: the server's default).
    pub(crate) fn new(
        inner: Arc<Inner>,
        key: Bytes,
        token: u64,
        ttl: Option<Duration>,
        watchdog: bool,
    ) -> LockGuard {
        let ttl = ttl.unwrap_or_else(|| {
            inner
                .session()
                .map_or(Duration::from_secs(30), |s| s.default_ttl)
        });
        let (id, status) = inner.keeper.add(key.clone(), token, ttl, watchdog);
        LockGuard {
            inner,
            key,
            token,
            id,
            status,
            released: false,
        }
    }

    /// The fencing token: strictly increasing over the grants of the key.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Why the hold is gone, if it is.
    pub fn is_lost(&self) -> Option<Lost> {
        self.status.borrow().lost
    }

    /// Completes when the hold is lost (never, while it is kept).
    pub async fn lost(&self) -> Lost {
        let mut rx = self.status.clone();
        let lost = match rx.wait_for(|s| s.lost.is_some()).await {
            Ok(s) => s.lost,
            Err(_) => None,
        };
        match lost {
            Some(lost) => lost,
            None => std::future::pending().await,
        }
    }

    /// Whether another session has queued for the key while this guard held it.
    pub fn has_waiters(&self) -> bool {
        self.status.borrow().waiting
    }

    /// Completes once another session queues for the key (a hint to hand over early).
    pub async fn waiting(&self) {
        let mut rx = self.status.clone();
        if rx.wait_for(|s| s.waiting).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The guard's status as a watch channel (lost, waiting).
    pub fn status(&self) -> watch::Receiver<GuardStatus> {
        self.status.clone()
    }

    /// Renews the lease now to `ttl` from now; returns the lease the server set.
    pub async fn renew(&self, ttl: Duration) -> Result<Duration> {
        let ttl_ms = ms_u32(ttl).max(1);
        match self
            .inner
            .call(Request::Renew {
                key: &self.key,
                ttl_ms,
            })
            .await
        {
            Ok(Response::Renewed { ttl_ms }) => Ok(Duration::from_millis(u64::from(ttl_ms))),
            Ok(_) => Err(Error::Disconnected),
            Err(e) => {
                if matches!(e, Error::NotHeld { .. }) {
                    self.inner.keeper.lost(self.id, Lost::NotHeld);
                }
                Err(e)
            }
        }
    }

    /// Upgrades a SHARED hold to EXCLUSIVE in place (CONVERT): waits only for the other
    /// holders, ahead of every queued request, up to `wait` (None: until done; zero:
    /// only if it can be done now). `Ok(true)`: upgraded, and [`Self::token`] is the new
    /// token. `Ok(false)`: the wait ran out and the hold is still SHARED.
    /// [`Error::Deadlock`] when another holder is upgrading too (one of the two must
    /// release). [`Error::Disconnected`]: the outcome is unknown (release the guard).
    pub async fn upgrade(&mut self, wait: Option<Duration>) -> Result<bool> {
        let wait_ms = wait.map(ms_u32);
        match self.convert(ModeKind::Exclusive, wait_ms).await {
            Ok(Response::Granted { token }) => {
                self.token = token;
                self.inner.keeper.set_token(self.id, token);
                Ok(true)
            }
            Ok(Response::Busy) | Err(Error::Timeout) => Ok(false),
            Ok(_) => Err(Error::Disconnected),
            Err(e) => Err(e),
        }
    }

    /// Downgrades an EXCLUSIVE hold to SHARED at once (CONVERT): the token stays, and
    /// the server grants the waiting readers now compatible.
    pub async fn downgrade(&mut self) -> Result<()> {
        match self.convert(ModeKind::Shared, None).await? {
            Response::Granted { .. } => Ok(()),
            _ => Err(Error::Disconnected),
        }
    }

    async fn convert(&self, to: ModeKind, wait_ms: Option<u32>) -> Result<Response> {
        let res = self
            .inner
            .call(Request::Convert(Convert {
                key: &self.key,
                to,
                wait_ms,
            }))
            .await;
        if matches!(res, Err(Error::NotHeld { .. })) {
            self.inner.keeper.lost(self.id, Lost::NotHeld);
        }
        res
    }

    /// Replaces the value attached to this hold (empty: clears it); watchers of the key
    /// see the change.
    pub async fn set_value(&self, value: impl AsRef<[u8]>) -> Result<()> {
        Client {
            inner: self.inner.clone(),
        }
        .set_value(&self.key, value)
        .await
    }

    /// Releases the hold (one level of a reentrant one) and waits for the server's
    /// answer: [`Error::NotHeld`] if it was already lost. [`Error::Disconnected`] when
    /// the connection was lost before the answer (or the leader lost its leadership): the
    /// release is then sent again after the session is resumed, unless another live
    /// guard of this client holds the key (a reentrant level it would take).
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.inner.keeper.remove(self.id);
        let res = self
            .inner
            .call(Request::Release { key: &self.key })
            .await
            .map(|_| ());
        if matches!(res, Err(Error::Disconnected)) && !self.inner.keeper.holds_key(&self.key) {
            self.inner.fire(Request::Release { key: &self.key });
        }
        res
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.inner.keeper.remove(self.id);
        self.inner.fire(Request::Release { key: &self.key });
    }
}

// ---------------------------------------------------------------------------------------
// The watchdog
// ---------------------------------------------------------------------------------------

/// The live guards and when each is next renewed.
pub(crate) struct Keeper {
    st: Mutex<KeeperState>,
    wake: Notify,
    next: AtomicU64,
}

#[derive(Default)]
struct KeeperState {
    guards: HashMap<u64, Entry>,
    due: BTreeSet<(Instant, u64)>,
    /// When the keeper task will look next (None: not until woken). A new renewal due
    /// later than this needs no wake-up: the keeper sees it when it looks.
    wakes_at: Option<Instant>,
}

struct Entry {
    key: Bytes,
    token: u64,
    ttl: Duration,
    /// When the lease ends, as far as this side knows (counted from when the grant or the
    /// last renewal was sent, so never later than the server's).
    lease_end: Instant,
    due: Option<Instant>,
    status: watch::Sender<GuardStatus>,
}

/// A renewal to make.
struct Due {
    id: u64,
    key: Bytes,
    ttl: Duration,
    lease_end: Instant,
}

impl Keeper {
    pub(crate) fn new() -> Self {
        Keeper {
            st: Mutex::new(KeeperState::default()),
            wake: Notify::new(),
            next: AtomicU64::new(1),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, KeeperState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new guard; with `watchdog`, its first renewal is due after a third of
    /// its TTL.
    pub(crate) fn add(
        &self,
        key: Bytes,
        token: u64,
        ttl: Duration,
        watchdog: bool,
    ) -> (u64, watch::Receiver<GuardStatus>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let due = watchdog.then(|| now + ttl / 3);
        let (status, rx) = watch::channel(GuardStatus::default());
        let mut st = self.st();
        let mut wake = false;
        if let Some(at) = due {
            st.due.insert((at, id));
            if st.wakes_at.is_none_or(|w| at < w) {
                st.wakes_at = Some(at);
                wake = true;
            }
        }
        st.guards.insert(
            id,
            Entry {
                key,
                token,
                ttl,
                lease_end: now + ttl,
                due,
                status,
            },
        );
        drop(st);
        if wake {
            self.wake.notify_one();
        }
        (id, rx)
    }

    pub(crate) fn remove(&self, id: u64) {
        let mut st = self.st();
        if let Some(e) = st.guards.remove(&id) {
            if let Some(at) = e.due {
                st.due.remove(&(at, id));
            }
        }
    }

    /// Marks a guard lost; it is renewed no more.
    pub(crate) fn lost(&self, id: u64, why: Lost) {
        let mut st = self.st();
        if let Some(e) = st.guards.remove(&id) {
            if let Some(at) = e.due {
                st.due.remove(&(at, id));
            }
            e.status.send_modify(|s| s.lost = Some(why));
        }
    }

    /// The server pushed LEASE_LOST for `(key, token)`.
    /// A guard's hold has a new token (an upgrade).
    pub(crate) fn set_token(&self, id: u64, token: u64) {
        if let Some(e) = self.st().guards.get_mut(&id) {
            e.token = token;
        }
    }

    pub(crate) fn lease_lost(&self, key: &[u8], token: u64) {
        let ids: Vec<u64> = self
            .st()
            .guards
            .iter()
            .filter(|(_, e)| e.token == token && e.key == key)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.lost(id, Lost::Expired);
        }
    }

    /// Someone queued for `key`.
    pub(crate) fn waiting(&self, key: &[u8]) {
        for e in self.st().guards.values().filter(|e| e.key == key) {
            e.status.send_modify(|s| s.waiting = true);
        }
    }

    /// Every guard is lost.
    pub(crate) fn lose_all(&self, why: Lost) {
        let mut st = self.st();
        st.due.clear();
        for (_, e) in st.guards.drain() {
            e.status.send_modify(|s| s.lost = Some(why));
        }
    }

    /// Whether a live guard holds `key`.
    pub(crate) fn holds_key(&self, key: &[u8]) -> bool {
        self.st().guards.values().any(|e| e.key == key)
    }

    /// When the keeper should look next; it says so, so that earlier work wakes it.
    fn plan_wake(&self) -> Option<Instant> {
        let mut st = self.st();
        let next = st.due.first().map(|(at, _)| *at);
        st.wakes_at = next;
        next
    }

    fn take_due(&self, now: Instant) -> Vec<Due> {
        let mut st = self.st();
        let mut out = Vec::new();
        while let Some(&(at, id)) = st.due.first() {
            if at > now {
                break;
            }
            st.due.pop_first();
            if let Some(e) = st.guards.get_mut(&id) {
                e.due = None;
                out.push(Due {
                    id,
                    key: e.key.clone(),
                    ttl: e.ttl,
                    lease_end: e.lease_end,
                });
            }
        }
        out
    }

    /// Schedules the guard's next renewal at `at` (if it still lives), noting a new lease
    /// end when one was granted.
    fn schedule(&self, id: u64, at: Instant, lease_end: Option<Instant>) {
        let mut st = self.st();
        let Some(e) = st.guards.get_mut(&id) else {
            return;
        };
        if let Some(end) = lease_end {
            e.lease_end = end;
        }
        if let Some(old) = e.due.replace(at) {
            st.due.remove(&(old, id));
        }
        st.due.insert((at, id));
        let wake = st.wakes_at.is_none_or(|w| at < w);
        if wake {
            st.wakes_at = Some(at);
        }
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }
}

/// Renews due guards until the client is gone.
pub(crate) async fn keeper_loop(
    weak: Weak<Inner>,
    keeper: Arc<Keeper>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let next = keeper.plan_wake();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = keeper.wake.notified() => continue,
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let due = keeper.take_due(Instant::now());
        if due.is_empty() {
            continue;
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        for d in due {
            tokio::spawn(renew(inner.clone(), d));
        }
    }
}

async fn renew(inner: Arc<Inner>, d: Due) {
    let sent = Instant::now();
    let ttl_ms = ms_u32(d.ttl).max(1);
    let budget = d
        .lease_end
        .saturating_duration_since(sent)
        .max(Duration::from_millis(10));
    let res = tokio::time::timeout(
        budget,
        inner.call(Request::Renew {
            key: &d.key,
            ttl_ms,
        }),
    )
    .await;
    let keeper = &inner.keeper;
    match res {
        Ok(Ok(_)) => keeper.schedule(d.id, Instant::now() + d.ttl / 3, Some(sent + d.ttl)),
        Ok(Err(Error::NotHeld { .. })) => {
            debug!(key = ?d.key, "renewal refused: the hold is gone");
            keeper.lost(d.id, Lost::NotHeld);
        }
        Ok(Err(e)) => {
            let now = Instant::now();
            if now >= d.lease_end {
                debug!(key = ?d.key, error = %e, "could not renew before the lease ran out");
                keeper.lost(d.id, Lost::Unreachable);
            } else {
                let retry =
                    (d.ttl / 10).clamp(Duration::from_millis(5), Duration::from_millis(250));
                keeper.schedule(d.id, (now + retry).min(d.lease_end), None);
            }
        }
        Err(_) => keeper.lost(d.id, Lost::Unreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keeper_schedules_renewals_at_a_third_of_the_ttl() {
        let k = Keeper::new();
        let (a, _ra) = k.add(
            Bytes::from_static(b"a"),
            1,
            Duration::from_millis(300),
            true,
        );
        let (_b, _rb) = k.add(Bytes::from_static(b"b"), 2, Duration::from_secs(30), true);
        let (_c, _rc) = k.add(Bytes::from_static(b"c"), 3, Duration::from_millis(3), false);
        let first = k.plan_wake().expect("two guards renew");
        let now = Instant::now();
        assert!(first <= now + Duration::from_secs(1));
        assert!(
            k.take_due(now).is_empty(),
            "nothing is due before a third of the TTL"
        );
        let due = k.take_due(now + Duration::from_millis(1500));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, a);
        // Taken renewals are not due again until rescheduled.
        assert!(k.take_due(now + Duration::from_millis(1500)).is_empty());
        k.schedule(a, now + Duration::from_secs(1), None);
        assert_eq!(k.take_due(now + Duration::from_secs(2)).len(), 1);
        assert!(
            k.holds_key(b"c"),
            "a guard without watchdog is still a live guard"
        );
    }

    #[test]
    fn lost_guards_are_told_and_forgotten() {
        let k = Keeper::new();
        let (a, ra) = k.add(Bytes::from_static(b"k"), 7, Duration::from_secs(3), true);
        let (_b, rb) = k.add(Bytes::from_static(b"k"), 8, Duration::from_secs(3), true);
        let (_c, rc) = k.add(
            Bytes::from_static(b"other"),
            9,
            Duration::from_secs(3),
            true,
        );
        k.waiting(b"k");
        assert!(ra.borrow().waiting && rb.borrow().waiting);
        assert!(!rc.borrow().waiting);
        // A LEASE_LOST names the key and the token: only that guard.
        k.lease_lost(b"k", 7);
        assert_eq!(ra.borrow().lost, Some(Lost::Expired));
        assert_eq!(rb.borrow().lost, None);
        k.schedule(a, Instant::now(), None); // gone: nothing happens
        k.lose_all(Lost::SessionEnded);
        assert_eq!(rb.borrow().lost, Some(Lost::SessionEnded));
        assert_eq!(rc.borrow().lost, Some(Lost::SessionEnded));
        assert!(!k.holds_key(b"k"));
        assert_eq!(k.plan_wake(), None);
    }
}
