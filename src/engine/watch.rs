//! Watches: what changed about a key's holders, told to an observer as it happens.
//!
//! The table reports every change of a key's holders (a grant, a release, a hold lost to
//! its lease, to its session's end or to an administrator, a holder's value set) to one
//! [`WatchSink`], from inside the shard that made the change, with the shard's mutex
//! held. Two things follow: changes of one key reach the sink in the order they were
//! applied, and an observer that reads a key's state under the same mutex
//! ([`super::LockTable::observe`]) sees exactly the changes after that state. On every
//! node of a cluster the table is changed only by applying the log, so every node's
//! watchers hear the same changes in the same order.
//!
//! While nothing is watched the cost is one relaxed atomic load per change: the sink is
//! called only while [`WatchHook::active`] is not zero.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::key::Key;
use super::types::{FencingToken, Mode, SessionId};

/// Why a hold ended other than by RELEASE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Its lease ran out.
    Lease,
    /// Its session ended (closed, timed out, or ended by an administrator).
    Session,
    /// An administrator dropped it (ADMIN FORCE-RELEASE).
    Forced,
}

impl Cause {
    /// The word text mode uses.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Lease => "lease",
            Cause::Session => "session",
            Cause::Forced => "forced",
        }
    }
}

/// One change of a key's holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// A hold was granted (at once or from the queue), with the value it carries.
    Granted {
        /// The new holder.
        session: SessionId,
        /// Its token.
        token: FencingToken,
        /// Its mode.
        mode: Mode,
        /// Its value, if any.
        value: Option<&'a [u8]>,
    },
    /// A hold was released (its last reentrant level).
    Released {
        /// The holder.
        session: SessionId,
        /// Its token.
        token: FencingToken,
        /// Its mode.
        mode: Mode,
    },
    /// A hold ended without a release.
    Expired {
        /// The holder.
        session: SessionId,
        /// Its token.
        token: FencingToken,
        /// Its mode.
        mode: Mode,
        /// Why.
        cause: Cause,
    },
    /// A holder set (or cleared) its value.
    Value {
        /// The holder.
        session: SessionId,
        /// Its token.
        token: FencingToken,
        /// Its mode.
        mode: Mode,
        /// The new value; None cleared it.
        value: Option<&'a [u8]>,
    },
}

/// Who hears of changes.
pub trait WatchSink: Send + Sync {
    /// `key` changed. Called with the key's shard locked: be quick, never block, never
    /// call back into the table.
    fn change(&self, key: &Key, change: &Change<'_>);

    /// A new table replaced the one the sink watched (a cluster node installed a
    /// snapshot): every watched key's state may have changed at once. Called with the
    /// hook installed in `table` already and before anything else applies to it.
    fn table_replaced(&self, _table: &super::LockTable, _now: u64) {}
}

/// The table's link to its watchers: the sink, and how many watches there are (the sink
/// is not called while there are none).
#[derive(Clone)]
pub struct WatchHook {
    /// Watches registered now; the owner of the sink keeps it up to date.
    pub active: Arc<AtomicUsize>,
    /// Where changes go.
    pub sink: Arc<dyn WatchSink>,
}

impl WatchHook {
    /// Whether anyone watches anything (one relaxed load).
    #[inline]
    pub fn live(&self) -> bool {
        self.active.load(Ordering::Relaxed) != 0
    }
}

impl std::fmt::Debug for WatchHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHook")
            .field("active", &self.active.load(Ordering::Relaxed))
            .finish()
    }
}
