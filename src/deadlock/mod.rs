//! Deadlock detection: the wait-for graph over sessions.
//!
//! The graph is pure data ([`WaitForGraph`]); the lock table keeps it behind one mutex and
//! touches it only on the wait path (a request queues, a queued request leaves, a key with
//! waiters changes holders), so uncontended ACQUIRE and RELEASE never see it.

mod graph;

pub use graph::WaitForGraph;
