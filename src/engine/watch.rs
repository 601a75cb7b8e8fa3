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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::{AcquireRequest, Limits, LockTable, NotHeld, RequestId};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl WatchSink for Recorder {
        fn change(&self, key: &Key, change: &Change<'_>) {
            let key = String::from_utf8_lossy(key.as_bytes()).into_owned();
            let v = |v: Option<&[u8]>| v.map(|v| String::from_utf8_lossy(v).into_owned());
            let line = match *change {
                Change::Granted {
                    session,
                    token,
                    value,
                    ..
                } => format!("{key} granted {session} {token} {:?}", v(value)),
                Change::Released { session, token, .. } => {
                    format!("{key} released {session} {token}")
                }
                Change::Expired {
                    session,
                    token,
                    cause,
                    ..
                } => format!("{key} expired {session} {token} {}", cause.name()),
                Change::Value {
                    session,
                    token,
                    value,
                    ..
                } => format!("{key} value {session} {token} {:?}", v(value)),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    fn req(id: u64, ttl: u64, wait: Option<u64>) -> AcquireRequest {
        AcquireRequest {
            id: RequestId(id),
            mode: Mode::Exclusive,
            reentrant: true,
            ttl_ms: ttl,
            wait_ms: wait,
            policy: Default::default(),
        }
    }

    fn table(active: usize) -> (LockTable, Arc<Recorder>, Arc<AtomicUsize>) {
        let t = LockTable::new(1, Limits::default(), 0);
        let rec = Arc::new(Recorder::default());
        let active = Arc::new(AtomicUsize::new(active));
        t.set_watch(WatchHook {
            active: active.clone(),
            sink: rec.clone(),
        });
        (t, rec, active)
    }

    fn values(t: &LockTable, key: &[u8]) -> Vec<Option<Vec<u8>>> {
        t.inspect_values(key, 0)
            .map(|(_, v)| v.into_iter().map(|v| v.map(|v| v.to_vec())).collect())
            .unwrap_or_default()
    }

    #[test]
    fn values_follow_their_holds() {
        let (t, _, _) = table(0);
        let (a, b) = (t.open_session(), t.open_session());
        let mut ev = Vec::new();
        t.acquire_with_value(a, b"k", &req(1, 100, None), Some(b"10.0.0.1"), 0);
        // Queued with a value: not visible until granted.
        t.acquire_with_value(b, b"k", &req(2, 100, None), Some(b"10.0.0.2"), 0);
        assert_eq!(values(&t, b"k"), vec![Some(b"10.0.0.1".to_vec())]);
        assert_eq!(t.set_value(b, b"k", b"x"), Err(NotHeld));
        t.release(a, b"k", 0, &mut ev).unwrap();
        assert_eq!(values(&t, b"k"), vec![Some(b"10.0.0.2".to_vec())]);
        t.set_value(b, b"k", b"10.0.0.3").unwrap();
        assert_eq!(values(&t, b"k"), vec![Some(b"10.0.0.3".to_vec())]);
        // A reentrant re-acquire with a value replaces it; without one it stays.
        t.acquire_with_value(b, b"k", &req(3, 100, None), None, 0);
        assert_eq!(values(&t, b"k"), vec![Some(b"10.0.0.3".to_vec())]);
        t.acquire_with_value(b, b"k", &req(4, 100, None), Some(b"y"), 0);
        assert_eq!(values(&t, b"k"), vec![Some(b"y".to_vec())]);
        // An empty value clears it.
        t.set_value(b, b"k", b"").unwrap();
        assert_eq!(values(&t, b"k"), vec![None]);
        t.set_value(b, b"k", b"z").unwrap();
        // The lease runs out: the hold and its value go; a new hold starts without one.
        t.advance(1_000, &mut ev);
        assert!(t.inspect_values(b"k", 1_000).is_none());
        t.acquire(b, b"k", &req(5, 100, None), 1_000);
        assert_eq!(values(&t, b"k"), vec![None]);
    }

    #[test]
    fn cancelled_and_timed_out_requests_drop_their_values() {
        let (t, _, _) = table(0);
        let (a, b, c) = (t.open_session(), t.open_session(), t.open_session());
        let mut ev = Vec::new();
        t.acquire(a, b"k", &req(1, 1_000, None), 0);
        t.acquire_with_value(b, b"k", &req(2, 100, Some(10)), Some(b"b"), 0);
        t.acquire_with_value(c, b"k", &req(3, 100, None), Some(b"c"), 0);
        t.advance(20, &mut ev); // b's wait runs out
        assert!(t.cancel(c, b"k", 20, &mut ev));
        t.release(a, b"k", 20, &mut ev).unwrap();
        // b and c come back without values: nothing was left behind.
        t.acquire(b, b"k", &req(4, 100, None), 20);
        assert_eq!(values(&t, b"k"), vec![None]);
        let image = t.export();
        assert!(image.shards.iter().all(|s| s.values.is_empty()));
    }

    #[test]
    fn watchers_hear_every_change_in_order() {
        let (t, rec, active) = table(1);
        let (a, b) = (t.open_session(), t.open_session());
        let mut ev = Vec::new();
        let ta = t.acquire_with_value(a, b"k", &req(1, 100, None), Some(b"A"), 0);
        t.acquire_with_value(b, b"k", &req(2, 100, None), Some(b"B"), 0);
        t.set_value(a, b"k", b"A2").unwrap();
        t.release(a, b"k", 0, &mut ev).unwrap();
        t.advance(500, &mut ev); // b's lease runs out
        let c = t.open_session();
        t.acquire(c, b"k", &req(3, 100, None), 500);
        t.force_release(b"k", &t.holders(b"k"), 500, &mut ev);
        t.acquire(c, b"k", &req(4, 100, None), 500);
        t.close_session(c, 500, &mut ev);
        let crate::engine::AcquireOutcome::Granted(ta) = ta else {
            panic!("granted")
        };
        let lines = rec.0.lock().unwrap().clone();
        assert_eq!(lines[0], format!("k granted {a} {ta} Some(\"A\")"));
        assert_eq!(lines[1], format!("k value {a} {ta} Some(\"A2\")"));
        assert_eq!(lines[2], format!("k released {a} {ta}"));
        assert!(
            lines[3].starts_with(&format!("k granted {b} ")) && lines[3].ends_with("Some(\"B\")")
        );
        assert!(lines[4].starts_with(&format!("k expired {b} ")) && lines[4].ends_with("lease"));
        assert!(lines[6].ends_with("forced"), "{lines:?}");
        assert!(lines[8].ends_with("session"), "{lines:?}");
        assert_eq!(lines.len(), 9, "{lines:?}");
        // Nobody watching: the sink is not called at all.
        active.store(0, Ordering::Relaxed);
        t.acquire(a, b"k", &req(5, 100, None), 500);
        assert_eq!(rec.0.lock().unwrap().len(), 9);
    }
}
