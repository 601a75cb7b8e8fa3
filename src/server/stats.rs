//! Server-level counters and latency histograms for INFO.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::utils::CachePadded;
use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Counters of the network layer; the lock table keeps its own ([`crate::engine::Stats`]).
pub struct ServerStats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connections refused by the connection limit.
    pub rejected_connections: AtomicU64,
    /// Commands processed since start.
    pub commands: AtomicU64,
    /// Connections closed for input that could not be framed.
    pub protocol_errors: AtomicU64,
    /// RELEASE and RENEW answered NOTHELD: usually a lease that ran out before its
    /// holder was done (a TTL too short, a paused holder).
    pub notheld: AtomicU64,
    /// How long queued ACQUIREs waited until granted, in microseconds (sharded so that
    /// recording never contends).
    waits: Box<[CachePadded<Mutex<Histogram<u64>>>]>,
}

impl ServerStats {
    /// Zeroed counters.
    pub fn new() -> Self {
        ServerStats {
            connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            notheld: AtomicU64::new(0),
            waits: (0..8)
                .map(|_| {
                    CachePadded::new(Mutex::new(
                        Histogram::new_with_bounds(1, 3_600_000_000, 2)
                            .expect("static bounds are valid"),
                    ))
                })
                .collect(),
        }
    }

    /// Records one queued ACQUIRE's wait.
    pub fn record_wait(&self, slot: u64, micros: u64) {
        let shard = &self.waits[(slot % self.waits.len() as u64) as usize];
        shard.lock().saturating_record(micros.max(1));
    }

    /// Count, p50, p99, p99.9 and max of the waits, in microseconds.
    /// Every recorded wait (microseconds) in one histogram.
    pub fn wait_histogram(&self) -> Histogram<u64> {
        let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2)
            .expect("static bounds are valid");
        for shard in self.waits.iter() {
            let _ = all.add(&*shard.lock());
        }
        all
    }

    pub fn wait_percentiles(&self) -> (u64, u64, u64, u64, u64) {
        let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2)
            .expect("static bounds are valid");
        for shard in self.waits.iter() {
            let _ = all.add(&*shard.lock());
        }
        (
            all.len(),
            all.value_at_quantile(0.5),
            all.value_at_quantile(0.99),
            all.value_at_quantile(0.999),
            all.max(),
        )
    }

    /// Adds `n` processed commands.
    pub fn add_commands(&self, n: u64) {
        self.commands.fetch_add(n, Ordering::Relaxed);
    }
}

impl Default for ServerStats {
    fn default() -> Self {
        Self::new()
    }
}
