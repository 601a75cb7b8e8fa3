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
    /// How long queued ACQUIREs waited until granted, in microseconds, by [`ModeLabel`]
    /// (sharded by session so that recording never contends).
    waits: [Sharded; ModeLabel::COUNT],
    /// How long ACQUIREs answered at once (granted, BUSY/nil, refused) took from their
    /// arrival to their reply, in microseconds, by [`ModeLabel`].
    latency: [Sharded; ModeLabel::COUNT],
}

/// The `mode` label of the acquire latency and wait histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeLabel {
    /// EXCLUSIVE.
    Exclusive = 0,
    /// SHARED.
    Shared = 1,
    /// SEMAPHORE.
    Semaphore = 2,
    /// A multi-lock (MACQUIRE), whatever its modes.
    Multi = 3,
}

impl ModeLabel {
    /// How many labels there are.
    pub const COUNT: usize = 4;
    /// Every label, in index order.
    pub const ALL: [ModeLabel; 4] = [
        ModeLabel::Exclusive,
        ModeLabel::Shared,
        ModeLabel::Semaphore,
        ModeLabel::Multi,
    ];

    /// The label of a single-key request's mode.
    pub fn of(mode: &crate::engine::Mode) -> Self {
        match mode {
            crate::engine::Mode::Exclusive => ModeLabel::Exclusive,
            crate::engine::Mode::Shared => ModeLabel::Shared,
            crate::engine::Mode::Semaphore { .. } => ModeLabel::Semaphore,
        }
    }

    /// The label's value.
    pub fn name(self) -> &'static str {
        ["exclusive", "shared", "semaphore", "multi"][self as usize]
    }
}

/// ACQUIREs a connection answered at once in its current batch of commands, by mode: their
/// latency is recorded once the batch's replies are sent (one clock read per batch).
#[derive(Clone, Copy, Debug, Default)]
pub struct Answered([u32; ModeLabel::COUNT]);

impl Answered {
    /// One more ACQUIRE answered at once.
    #[inline]
    pub fn note(&mut self, mode: ModeLabel) {
        self.0[mode as usize] += 1;
    }

    /// Records every noted ACQUIRE as taking `micros`, then forgets them.
    #[inline]
    pub fn flush(&mut self, stats: &ServerStats, slot: u64, arrived: std::time::Instant) {
        if self.0 == [0; ModeLabel::COUNT] {
            return;
        }
        let micros = arrived.elapsed().as_micros() as u64;
        for (i, n) in self.0.iter_mut().enumerate() {
            if *n > 0 {
                stats.latency[i].record(slot, micros, u64::from(*n));
                *n = 0;
            }
        }
    }
}

/// A histogram in a few cache-padded shards.
struct Sharded(Box<[CachePadded<Mutex<Histogram<u64>>>]>);

impl Sharded {
    fn new() -> Self {
        Sharded(
            (0..8)
                .map(|_| CachePadded::new(Mutex::new(empty())))
                .collect(),
        )
    }

    fn record(&self, slot: u64, micros: u64, n: u64) {
        let shard = &self.0[(slot % self.0.len() as u64) as usize];
        let _ = shard.lock().record_n(micros.clamp(1, 3_600_000_000), n);
    }

    fn merged(&self, all: &mut Histogram<u64>) {
        for shard in self.0.iter() {
            let _ = all.add(&*shard.lock());
        }
    }
}

/// An empty histogram of microseconds (1 µs to 1 h, 2 significant digits).
fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static bounds are valid")
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
            waits: std::array::from_fn(|_| Sharded::new()),
            latency: std::array::from_fn(|_| Sharded::new()),
        }
    }

    /// Records one queued ACQUIRE's wait.
    pub fn record_wait(&self, slot: u64, mode: ModeLabel, micros: u64) {
        self.waits[mode as usize].record(slot, micros, 1);
    }

    /// Every recorded wait of `mode` (microseconds) in one histogram; None: all modes.
    pub fn wait_histogram(&self, mode: Option<ModeLabel>) -> Histogram<u64> {
        merged(&self.waits, mode)
    }

    /// Every recorded acquire latency of `mode` (microseconds); None: all modes.
    pub fn latency_histogram(&self, mode: Option<ModeLabel>) -> Histogram<u64> {
        merged(&self.latency, mode)
    }

    /// Count, p50, p99, p99.9 and max of the waits, in microseconds.
    pub fn wait_percentiles(&self) -> (u64, u64, u64, u64, u64) {
        percentiles(&self.wait_histogram(None))
    }

    /// Adds `n` processed commands.
    pub fn add_commands(&self, n: u64) {
        self.commands.fetch_add(n, Ordering::Relaxed);
    }
}

fn merged(h: &[Sharded; ModeLabel::COUNT], mode: Option<ModeLabel>) -> Histogram<u64> {
    let mut all = empty();
    match mode {
        Some(m) => h[m as usize].merged(&mut all),
        None => h.iter().for_each(|s| s.merged(&mut all)),
    }
    all
}

/// Count, p50, p99, p99.9 and max of `h`.
pub fn percentiles(h: &Histogram<u64>) -> (u64, u64, u64, u64, u64) {
    if h.is_empty() {
        return (0, 0, 0, 0, 0);
    }
    (
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    )
}

impl Default for ServerStats {
    fn default() -> Self {
        Self::new()
    }
}
