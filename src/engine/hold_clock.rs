//! How long holds are held, measured beside the table rather than in it.
//!
//! [`Hold`](super::shard) is kept small on purpose (most locks have exactly one, stored
//! inline), so its grant time is not a field of it. A shard whose table was asked to time
//! holds ([`super::LockTable::time_holds`]) keeps this side map instead: token -> the
//! engine time of the grant, filled by the one place that grants and emptied by the one
//! place that drops a hold (release, expiry, forced release, session end alike). A table
//! that does not time holds pays one `Option` test per grant and per drop.
//!
//! Times are the engine's `now` (milliseconds), so the figures are deterministic and a
//! replayed log measures what the live server measured. Holds restored from a snapshot
//! have no grant time here and are not counted when they end.

use std::collections::HashMap;

use hdrhistogram::Histogram;

/// Grant times of the live holds and the durations of the ended ones, in milliseconds.
pub(crate) struct HoldClock {
    since: HashMap<u64, u64, foldhash::fast::FixedState>,
    ended: Histogram<u64>,
}

impl HoldClock {
    pub(crate) fn new() -> Self {
        HoldClock {
            since: HashMap::default(),
            ended: empty(),
        }
    }

    /// The hold with `token` was granted at `now`.
    #[inline]
    pub(crate) fn granted(&mut self, token: u64, now: u64) {
        self.since.insert(token, now);
    }

    /// The hold with `token` ended at `now`.
    #[inline]
    pub(crate) fn ended(&mut self, token: u64, now: u64) {
        if let Some(since) = self.since.remove(&token) {
            self.ended
                .saturating_record(now.saturating_sub(since).max(1));
        }
    }

    /// Adds this shard's durations to `all`.
    pub(crate) fn add_to(&self, all: &mut Histogram<u64>) {
        let _ = all.add(&self.ended);
    }
}

/// An empty histogram of hold durations (1 ms to 30 days, 2 significant digits).
pub fn empty() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 30 * 86_400_000, 2).expect("static bounds are valid")
}
