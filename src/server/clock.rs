//! The server's clock: monotonic milliseconds since start, the `now` the engine is given.

use std::time::{Duration, Instant};

/// Milliseconds since the server started, from a monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    base: u64,
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
            base,
        }
    }

    /// Milliseconds since start.
    pub fn now_ms(&self) -> u64 {
        self.base + self.start.elapsed().as_millis() as u64
    }

    /// The instant at `ms` milliseconds since start.
    pub fn instant(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms.saturating_sub(self.base))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
