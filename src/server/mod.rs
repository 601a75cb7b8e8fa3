//! The network around the lock table: accept loop, one task per connection, the timer
//! driver, and event delivery.
//!
//! [`run`] is what `turnstile serve` calls and what integration tests call with a listener
//! bound to `127.0.0.1:0`.

mod binary;
mod clock;
mod connection;
mod io;
mod router;
pub mod sessions;
mod stats;
mod timers;

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
use crate::engine::{LockTable, RequestId};

/// State every connection shares.
pub struct Shared {
    /// The lock table.
    pub table: LockTable,
    /// The configuration in force.
    pub config: Config,
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
    next_request: AtomicU64,
}

impl Shared {
    /// A fresh, server-unique request id.
    pub fn next_request(&self) -> RequestId {
        RequestId(self.next_request.fetch_add(1, Ordering::Relaxed))
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting, ends every
/// connection (and with it its session) and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let clock = Clock::new();
    let table = LockTable::new(config.shards, config.engine_limits(), clock.now_ms());
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        table,
        clock,
        router: Router::new(64),
        stats: ServerStats::new(),
        started: SystemTime::now(),
        addr,
        sessions: Sessions::new(),
        next_request: AtomicU64::new(1),
        config,
    });
    let notify = Arc::new(Notify::new());
    {
        let notify = notify.clone();
        shared
            .table
            .set_waker(Box::new(move || notify.notify_one()));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let timer = tokio::spawn(timers::run(shared.clone(), notify, stop_rx.clone()));
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    info!(%addr, shards = shared.config.shards, "turnstile listening");

    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
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
            connection::serve(shared, stream, peer, permit, stop).await;
        });
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    // Every connection holds a permit while it runs: wait for all of them (bounded).
    let all = u32::try_from(shared.config.max_connections).unwrap_or(u32::MAX);
    let _ =
        tokio::time::timeout(std::time::Duration::from_secs(5), permits.acquire_many(all)).await;
    // Binary sessions waiting for a resume end with the server.
    shared.sessions.end_all(&shared);
    let _ = timer.await;
    Ok(())
}
