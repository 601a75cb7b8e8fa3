//! The server's clock: monotonic milliseconds since start, the `now` the engine is given.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds since the server started, from a monotonic clock.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    /// What the clock read at `start`; only ever raised (see [`Clock::advance_to`]).
    base: AtomicU64,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock::starting_at(0)
    }

    /// A clock that reads `base` now: after recovery the table's time continues from
    /// the last logged time instead of starting over.
    pub fn starting_at(base: u64) -> Self {
        Clock {
            start: Instant::now(),
            base: AtomicU64::new(base),
        }
    }

    /// Milliseconds since start.
    pub fn now_ms(&self) -> u64 {
        self.base.load(Ordering::Acquire) + self.start.elapsed().as_millis() as u64
    }

    /// Moves the clock forward so that it reads at least `ms` now (a new cluster leader
    /// continues the replicated table's time). Never moves it back.
    pub fn advance_to(&self, ms: u64) {
        let elapsed = self.start.elapsed().as_millis() as u64;
        self.base
            .fetch_max(ms.saturating_sub(elapsed), Ordering::AcqRel);
    }

    /// The instant at `ms` milliseconds since start.
    pub fn instant(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms.saturating_sub(self.base.load(Ordering::Acquire)))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
