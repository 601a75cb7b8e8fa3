//! Leases: the timer wheel that holds every lease and wait deadline.
//!
//! The wheel is pure data driven by the caller's `now`; the lock table keeps one per shard
//! and the server's timer task advances them (see `server::timers`).

mod wheel;

pub use wheel::{TimerId, TimerWheel};
