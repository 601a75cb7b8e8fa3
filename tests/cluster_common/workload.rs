//! Client tasks that lock, renew and release a few keys on a cluster while nodes fail,
//! recording what they saw in a shared [`History`].
//!
//! Each task has one connection at a time (one session) to the node it believes leads.
//! It loops: `ACQUIRE key EXCLUSIVE TTL t WAIT w` on a random key; on a grant it holds the
//! lock for a while (mostly briefly, sometimes for longer than the TTL, renewing with
//! `RENEW key TTL t` while at least half a TTL of its lease is left), then `RELEASE`s it.
//! `-NOTLEADER host:port` sends it to that node, a bare `-NOTLEADER`, a refused connection,
//! `-ERR UNCERTAIN`, a lost connection or a reply that does not come in time send it to
//! the next node of the list after closing the connection. Half of the tasks wait long
//! for replies (so their requests outlive a paused leader), half give up early.
//!
//! A task holds at most one lock, and it records that it stops using the lock
//! ([`History::give_up`]) before it sends RELEASE or closes the connection the lock is held
//! on, which is what makes the history's end times sound (see `history.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::history::History;
use super::resp::{CallError, Conn, Reply};

/// A client may use a lock until `S + TTL` by its own clock; the server counts the lease
/// from the grant on its millisecond table clock. This much is taken off the client's
/// end so that rounding a grant time down to the millisecond can never look like an
/// early expiry.
pub const CLOCK_SLACK: Duration = Duration::from_millis(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Client tasks.
    pub clients: usize,
    /// The keys they lock.
    pub keys: Vec<String>,
    /// TTL of every ACQUIRE and RENEW.
    pub ttl: Duration,
    /// WAIT of every ACQUIRE.
    pub wait: Duration,
    /// Seed of the tasks' random choices.
    pub seed: u64,
    /// A negative control: the clients claim leases this many times longer than they
    /// asked for (1: honest). With more, the history checker must find overlaps.
    pub overclaim: u32,
}

/// A splitmix64 generator: deterministic per seed, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// A duration of `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }
}

/// The running client tasks.
pub struct Workload {
    /// What they record.
    pub history: Arc<Mutex<History>>,
    nodes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Locks the history (a panicking task does not poison the others' records).
pub fn lock(h: &Mutex<History>) -> MutexGuard<'_, History> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workload {
    /// Starts `settings.clients` tasks against the client addresses `nodes`.
    pub fn start(
        settings: &Settings,
        nodes: Vec<String>,
        history: Arc<Mutex<History>>,
    ) -> Workload {
        let nodes = Arc::new(Mutex::new(nodes));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..settings.clients)
            .map(|i| {
                let client = Client {
                    id: i,
                    settings: settings.clone(),
                    rng: Rng::new(settings.seed ^ (i as u64 + 1).wrapping_mul(0x51_7CC1_B727_220A)),
                    nodes: nodes.clone(),
                    target: None,
                    conn: None,
                    history: history.clone(),
                    stop: stop.clone(),
                    op_timeout: if i % 2 == 0 {
                        settings.wait + Duration::from_secs(2)
                    } else {
                        settings.wait + Duration::from_secs(8)
                    },
                };
                tokio::spawn(client.run())
            })
            .collect();
        Workload {
            history,
            nodes,
            stop,
            tasks,
        }
    }

    /// Replaces the client addresses the tasks try.
    pub fn set_nodes(&self, nodes: Vec<String>) {
        *self.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
    }

    /// Stops the tasks: each finishes its request, releases what it holds and closes its
    /// connection. Waits at most `limit`, then aborts the rest.
    pub async fn stop(mut self, limit: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + limit;
        for t in self.tasks.drain(..) {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Client {
    id: usize,
    settings: Settings,
    rng: Rng,
    nodes: Arc<Mutex<Vec<String>>>,
    /// The node to talk to next (None: the next one of the list).
    target: Option<String>,
    conn: Option<Conn>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    op_timeout: Duration,
}

/// What became of one request.
enum Outcome {
    Reply(Reply),
    /// No usable reply; the connection was dropped.
    Lost(CallError),
}

impl Client {
    fn now(&self) -> u64 {
        lock(&self.history).now()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn ttl_us(&self) -> u64 {
        let claimed = (self.settings.ttl - CLOCK_SLACK) * self.settings.overclaim.max(1);
        u64::try_from(claimed.as_micros()).unwrap_or(u64::MAX)
    }

    /// The next node of the list after `after` (or a random one).
    fn next_node(&mut self, after: Option<&str>) -> Option<String> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if nodes.is_empty() {
            return None;
        }
        let i = match after.and_then(|a| nodes.iter().position(|n| n == a)) {
            Some(i) => (i + 1) % nodes.len(),
            None => (self.rng.next() % nodes.len() as u64) as usize,
        };
        Some(nodes[i].clone())
    }

    /// Drops the connection (closing it) and moves on to the next node.
    fn abandon(&mut self) {
        let was = self.conn.take().map(|c| c.addr).or(self.target.take());
        self.target = self.next_node(was.as_deref());
    }

    /// Closes the connection after a failed RENEW or RELEASE: to the node a redirect
    /// named, or else to the next one.
    fn leave(&mut self, redirect: Option<Option<String>>) {
        match redirect {
            Some(Some(addr)) => {
                self.conn = None;
                self.target = Some(addr);
            }
            _ => self.abandon(),
        }
    }

    /// A connection to the target node, if one can be made now.
    async fn connection(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        let target = match self.target.clone() {
            Some(t) => t,
            None => match self.next_node(None) {
                Some(t) => t,
                None => return false,
            },
        };
        match Conn::connect(&target, CONNECT_TIMEOUT).await {
            Ok(c) => {
                self.target = Some(target);
                self.conn = Some(c);
                true
            }
            Err(_) => {
                lock(&self.history).counts.connect_failures += 1;
                self.target = self.next_node(Some(&target));
                tokio::time::sleep(Duration::from_millis(30)).await;
                false
            }
        }
    }

    async fn call(&mut self, words: &[&str]) -> Outcome {
        let Some(conn) = self.conn.as_mut() else {
            return Outcome::Lost(CallError::Closed("not connected".into()));
        };
        match conn.call(words, self.op_timeout).await {
            Ok(r) => Outcome::Reply(r),
            // The caller records what it must, then abandons the connection.
            Err(e) => Outcome::Lost(e),
        }
    }

    /// Follows a redirect: `Some(addr)` is tried next, a bare one means "retry shortly".
    async fn redirect(&mut self, to: Option<String>) {
        lock(&self.history).counts.redirects += 1;
        self.conn = None;
        match to {
            Some(addr) => self.target = Some(addr),
            None => {
                self.abandon();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn run(mut self) {
        let ttl_ms = self.settings.ttl.as_millis().to_string();
        let wait_ms = self.settings.wait.as_millis().to_string();
        while !self.stopping() {
            if !self.connection().await {
                continue;
            }
            let key = self.settings.keys
                [(self.rng.next() % self.settings.keys.len() as u64) as usize]
                .clone();
            let node = self
                .conn
                .as_ref()
                .map(|c| c.addr.clone())
                .unwrap_or_default();
            let sent = {
                let mut h = lock(&self.history);
                h.counts.acquires += 1;
                h.now()
            };
            let words = [
                "ACQUIRE",
                key.as_str(),
                "EXCLUSIVE",
                "TTL",
                &ttl_ms,
                "WAIT",
                &wait_ms,
            ];
            match self.call(&words).await {
                Outcome::Reply(Reply::Int(token)) => {
                    let ttl = self.ttl_us();
                    let hold = {
                        let mut h = lock(&self.history);
                        let acked = h.now();
                        h.granted(&key, token, self.id, &node, sent, acked, ttl)
                    };
                    self.hold(hold, &key, &ttl_ms).await;
                }
                Outcome::Reply(Reply::Nil) => lock(&self.history).counts.timed_out += 1,
                Outcome::Reply(r) => {
                    if let Some(to) = r.not_leader() {
                        self.redirect(to).await;
                    } else {
                        {
                            let mut h = lock(&self.history);
                            h.counts.unknown_acquires += 1;
                            if r.is_uncertain() {
                                h.counts.uncertain += 1;
                            } else {
                                h.error(format!(
                                    "client {} ACQUIRE {key} via {node}: {r:?}",
                                    self.id
                                ));
                            }
                        }
                        self.abandon();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Outcome::Lost(_) => {
                    lock(&self.history).counts.unknown_acquires += 1;
                    self.abandon();
                }
            }
        }
    }

    /// Holds the lock (index `hold` in the history), renewing it if the plan is long, then
    /// releases it.
    async fn hold(&mut self, hold: usize, key: &str, ttl_ms: &str) {
        let ttl = self.settings.ttl;
        let lease_ms = ttl.as_millis() as u64;
        let plan = if self.settings.overclaim > 1 {
            // The negative control: every hold outlasts the real lease.
            self.rng.millis(lease_ms + 200, 3 * lease_ms / 2)
        } else if self.rng.between(0, 99) < 90 {
            self.rng.millis(1, 100)
        } else {
            self.rng.millis(200, 3 * lease_ms / 2)
        };
        let plan_us = plan.as_micros() as u64;
        let renew_margin = ttl.as_micros() as u64 / 2;
        loop {
            let (now, acked, lease_end) = {
                let h = lock(&self.history);
                let x = &h.holds[hold];
                (h.now(), x.acked, x.lease_end)
            };
            let release_at = acked + plan_us;
            if now >= release_at || self.stopping() {
                break;
            }
            let renew_at = lease_end.saturating_sub(renew_margin);
            if now >= renew_at {
                // At least half a TTL is left: renew.
                let sent = now;
                match self.call(&["RENEW", key, "TTL", ttl_ms]).await {
                    Outcome::Reply(Reply::Int(_)) => {
                        let ttl_us = self.ttl_us();
                        lock(&self.history).renewed(hold, sent, ttl_us);
                        continue;
                    }
                    Outcome::Reply(r) => {
                        let redirect = {
                            let mut h = lock(&self.history);
                            let at = h.now();
                            h.give_up(hold, at);
                            if r.error_code() == Some("NOTHELD") {
                                h.not_held(hold, "RENEW", at);
                                return;
                            }
                            let redirect = r.not_leader();
                            if redirect.is_some() {
                                h.counts.redirects += 1;
                            } else if !r.is_uncertain() {
                                h.error(format!("client {} RENEW {key}: {r:?}", self.id));
                            }
                            redirect
                        };
                        self.leave(redirect);
                        return;
                    }
                    Outcome::Lost(_) => {
                        {
                            let mut h = lock(&self.history);
                            let at = h.now();
                            h.give_up(hold, at);
                        }
                        self.abandon();
                        return;
                    }
                }
            }
            let until = release_at.min(renew_at).saturating_sub(now);
            tokio::time::sleep(Duration::from_micros(until).min(Duration::from_millis(100))).await;
        }
        {
            let mut h = lock(&self.history);
            let at = h.now();
            h.give_up(hold, at);
        }
        match self.call(&["RELEASE", key]).await {
            Outcome::Reply(r) => {
                let redirect = {
                    let mut h = lock(&self.history);
                    let at = h.now();
                    let text = match &r {
                        Reply::Int(i) => format!(":{i}"),
                        Reply::Error(e) => e.clone(),
                        other => format!("{other:?}"),
                    };
                    h.release_reply(hold, &text);
                    if r.error_code() == Some("NOTHELD") {
                        h.not_held(hold, "RELEASE", at);
                        return;
                    }
                    if matches!(r, Reply::Int(1)) {
                        return;
                    }
                    let redirect = r.not_leader();
                    if redirect.is_some() {
                        h.counts.redirects += 1;
                    } else if !r.is_uncertain() {
                        h.error(format!("client {} RELEASE {key}: {r:?}", self.id));
                    }
                    redirect
                };
                self.leave(redirect);
            }
            Outcome::Lost(e) => {
                lock(&self.history).release_reply(hold, &format!("lost: {e}"));
                self.abandon();
            }
        }
    }
}
