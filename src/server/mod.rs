//! The network around the lock table: accept loop, one task per connection, the timer
//! driver, and event delivery.
//!
//! [`run`] is what `turnstile serve` calls and what integration tests call with a listener
//! bound to `127.0.0.1:0`.

pub mod admin;
mod binary;
mod clock;
pub mod cluster;
mod connection;
mod io;
pub mod metrics;
mod router;
pub mod sessions;
pub(crate) mod stats;
mod timers;
pub mod watches;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{info, warn};

pub use clock::Clock;
pub use router::{Delivery, Router, MAX_DETACHED_WAITING};
pub use sessions::Sessions;
pub use stats::ServerStats;

use crate::config::Config;
use crate::durable::{self, request_id, SessionKind, Store};
use crate::engine::{LockTable, RequestId, SessionId};

/// State every connection shares.
pub struct Shared {
    /// The lock table and the log in front of it.
    pub store: Store,
    /// The configuration in force.
    pub config: Config,
    /// The users and their permissions (`--users-file`).
    pub acl: crate::acl::Acl,
    /// The engine's clock.
    pub clock: Clock,
    /// Session -> connection event delivery.
    pub router: Router,
    /// Counters and latency histograms for INFO.
    pub stats: ServerStats,
    /// Wall-clock start, for INFO.
    pub started: SystemTime,
    /// The address the server listens on.
    pub addr: std::net::SocketAddr,
    /// Binary sessions (which outlive their connections).
    pub sessions: Sessions,
    /// Open connections per peer address (for `--max-connections-per-ip`).
    per_ip: parking_lot::Mutex<hashbrown::HashMap<std::net::IpAddr, usize>>,
    pub(crate) next_request: AtomicU64,
    /// The cluster node in cluster mode (`--node-id`); then the table is the replicated
    /// state machine's and `store` is unused.
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// The client port's TLS acceptor (`--tls-cert`): every connection handshakes first.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Every WATCH of every connection; the lock table tells it of changes.
    pub watches: Arc<watches::WatchHub>,
}

/// The lock table a reader sees: the store's, or the cluster state machine's (which a
/// snapshot install replaces, so it is fetched per use).
pub enum TableRef<'a> {
    /// Standalone.
    Local(&'a LockTable),
    /// Cluster mode.
    Replicated(Arc<LockTable>),
}

impl std::ops::Deref for TableRef<'_> {
    type Target = LockTable;
    fn deref(&self) -> &LockTable {
        match self {
            TableRef::Local(t) => t,
            TableRef::Replicated(t) => t,
        }
    }
}

impl Shared {
    /// A fresh request id carrying `client_id` in its low 32 bits (see
    /// [`durable::request_id`]).
    pub fn next_request(&self, client_id: u32) -> RequestId {
        request_id(self.next_request.fetch_add(1, Ordering::Relaxed), client_id)
    }

    /// The lock table, for reads.
    pub fn table(&self) -> TableRef<'_> {
        match &self.cluster {
            Some(c) => TableRef::Replicated(c.node().table()),
            None => TableRef::Local(self.store.table()),
        }
    }

    /// Whether sessions outlive this process (a log or a cluster keeps them).
    pub fn sessions_persist(&self) -> bool {
        self.store.is_durable() || self.cluster.is_some()
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting, ends every
/// connection (and with it its session) and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    // A users file that does not parse stops the start, naming the line.
    let acl = crate::acl::Acl::load(config.users_file.as_deref(), config.requirepass.as_deref())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // Certificates that do not load stop the start, naming the file.
    let tls = crate::tls::client_acceptor(&config)?;
    let (store, clock, restored, next_counter, cluster) = if config.node_id.is_some() {
        let advertise = config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| addr.to_string());
        let cluster = cluster::Cluster::start(&config, advertise).await?;
        let sm = cluster.node().state_machine();
        let clock = Clock::starting_at(sm.last_now());
        // Unused in cluster mode (the state machine's table serves).
        let store = Store::in_memory(LockTable::new(1, config.engine_limits(), 0));
        let next = (sm.max_request() >> 32) + 1;
        (store, clock, Vec::new(), next, Some(Arc::new(cluster)))
    } else {
        let (store, clock, restored, next) = open_store(&config)?;
        (store, clock, restored, next, None)
    };
    let shared = Arc::new(Shared {
        store,
        clock,
        router: Router::new(64),
        stats: ServerStats::new(),
        started: SystemTime::now(),
        addr,
        sessions: Sessions::new(),
        per_ip: parking_lot::Mutex::new(hashbrown::HashMap::new()),
        next_request: AtomicU64::new(next_counter),
        cluster,
        config,
        acl,
        tls,
        watches: Arc::new(watches::WatchHub::default()),
    });
    // Changes of watched keys: from the store's table, or, in cluster mode, from every
    // table the state machine applies the log to (on followers too).
    let hook = watches::WatchHub::hook(&shared.watches);
    match &shared.cluster {
        Some(c) => c.node().state_machine().set_watch(hook),
        None => shared.store.table().set_watch(hook),
    }
    restore_sessions(&shared, restored);
    // A log that can no longer make anything durable stops the server: nothing more may
    // be acknowledged.
    let failed = {
        let watermark = shared.store.watermark();
        async move {
            match watermark {
                Some(w) => w.failed().await,
                None => std::future::pending().await,
            }
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let timer = match &shared.cluster {
        Some(c) => {
            // Events of applied entries (grants, expiries, timeouts) reach the parked
            // connections of this node, whatever its role.
            let weak = Arc::downgrade(&shared);
            c.node()
                .state_machine()
                .set_event_sink(Box::new(move |events| {
                    if let Some(shared) = weak.upgrade() {
                        shared.router.route(events);
                    }
                }));
            tokio::spawn(cluster::drive(shared.clone(), stop_rx.clone()))
        }
        None => {
            let notify = Arc::new(Notify::new());
            {
                let notify = notify.clone();
                shared
                    .store
                    .table()
                    .set_waker(Box::new(move || notify.notify_one()));
            }
            tokio::spawn(timers::run(shared.clone(), notify, stop_rx.clone()))
        }
    };
    if let Some(addr) = shared.config.metrics_addr {
        let metrics = TcpListener::bind(addr).await?;
        info!(addr = %metrics.local_addr()?, "metrics on GET /metrics");
        tokio::spawn(metrics::serve(metrics, shared.clone(), stop_rx.clone()));
    }
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    info!(%addr, shards = shared.config.shards, tls = shared.tls.is_some(), "turnstile listening");

    tokio::pin!(shutdown);
    tokio::pin!(failed);
    let mut failure = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
            e = &mut failed => {
                tracing::error!(error = %e, "stopping: the log failed");
                failure = Some(e);
                break;
            }
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = permits.clone().try_acquire_owned().ok();
        let shared = shared.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let Some(_slot) = IpSlot::take(&shared, peer.ip()) else {
                connection::refuse(
                    &shared,
                    stream,
                    b"-LIMIT max number of clients from this address reached\r\n",
                )
                .await;
                return;
            };
            connection::serve(shared.clone(), stream, peer, permit, stop).await;
        });
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    // Every connection holds a permit while it runs: wait for all of them (bounded).
    let all = u32::try_from(shared.config.max_connections).unwrap_or(u32::MAX);
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), permits.acquire_many(all)).await;
    // Binary sessions waiting for a resume end with the server.
    if shared.cluster.is_some() {
        // Sessions are replicated: the cluster keeps them.
    } else if shared.store.is_durable() {
        // Sessions outlive a restart: they come back from the log. Only make sure
        // everything written is on disk.
        if let Err(e) = shared.store.sync() {
            warn!(error = %e, "final fsync failed");
        }
    } else {
        shared.sessions.end_all(&shared);
    }
    let _ = timer.await;
    if let Some(c) = &shared.cluster {
        // Connections and tasks may still hold the Arc; stop the node through it.
        if let Err(e) = c.node().raft().shutdown().await {
            warn!(error = %e, "stopping the cluster node");
        }
    }
    match failure {
        Some(e) => Err(std::io::Error::other(e)),
        None => Ok(()),
    }
}

/// Opens the store (recovering the data directory unless in memory). Returns it with
/// the clock continuing the table's time, the sessions to restore and where request
/// ids continue.
#[allow(clippy::type_complexity)]
fn open_store(
    config: &Config,
) -> std::io::Result<(Store, Clock, Vec<(SessionId, SessionKind)>, u64)> {
    if config.in_memory {
        let clock = Clock::new();
        let table = LockTable::new(config.shards, config.engine_limits(), clock.now_ms());
        table.time_holds();
        return Ok((Store::in_memory(table), clock, Vec::new(), 1));
    }
    let opts = durable::Options {
        dir: config.data_dir.clone(),
        fsync: config.fsync,
        repair: config.wal_repair,
        shards: config.shards,
        limits: config.engine_limits(),
        snapshot_every: config.snapshot_every,
        segment_size: config.wal_segment_bytes,
    };
    let (store, recovered) = durable::open(&opts).map_err(|e| {
        std::io::Error::other(format!("recovering {}: {e}", config.data_dir.display()))
    })?;
    // Holds restored by the recovery are not timed: their grant time is not kept.
    store.table().time_holds();
    let clock = Clock::starting_at(recovered.now);
    let next = (recovered.max_request >> 32) + 1;
    Ok((store, clock, recovered.sessions.into_iter().collect(), next))
}

/// Brings back the sessions the log had open: binary ones become resumable by the user
/// that created them (detached, ending after their timeout unless a client resumes
/// them), text ones end after the
/// session timeout. Until then their holds stay, so locks do not vanish the moment the
/// server restarts.
pub(crate) fn restore_sessions(shared: &Arc<Shared>, restored: Vec<(SessionId, SessionKind)>) {
    if restored.is_empty() {
        return;
    }
    let mut waiters: hashbrown::HashMap<SessionId, Vec<(RequestId, crate::engine::Key)>> =
        hashbrown::HashMap::new();
    shared.table().for_each_waiter(|key, session, request| {
        waiters
            .entry(session)
            .or_default()
            .push((request, key.clone()));
    });
    let text_timeout = std::time::Duration::from_millis(shared.config.session_timeout_ms);
    let mut text = Vec::new();
    for (id, kind) in restored {
        match kind {
            SessionKind::Text => text.push(id),
            SessionKind::Binary {
                secret,
                timeout_ms,
                user,
            } => {
                let queued = waiters.remove(&id).unwrap_or_default();
                let identity = sessions::Identity {
                    id,
                    secret,
                    timeout: std::time::Duration::from_millis(timeout_ms),
                    // Not logged: the default user's (see SessionKind::Binary).
                    user: user.unwrap_or_else(|| crate::acl::DEFAULT.to_string()),
                };
                shared.sessions.restore(shared, identity, queued);
            }
        }
    }
    info!(
        text = text.len(),
        binary = shared.sessions.len(),
        "restored sessions; those not resumed end after their timeout"
    );
    if !text.is_empty() {
        let weak = Arc::downgrade(shared);
        tokio::spawn(async move {
            tokio::time::sleep(text_timeout).await;
            if let Some(shared) = weak.upgrade() {
                for id in text {
                    connection::close_session(&shared, id);
                }
            }
        });
    }
}

/// One connection's place in the per-address count; given back when dropped.
struct IpSlot {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl IpSlot {
    fn take(shared: &Arc<Shared>, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut map = shared.per_ip.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= shared.config.max_connections_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.shared.per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
