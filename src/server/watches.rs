//! WATCH: who watches which key, and the per-connection queues their messages wait in.
//!
//! The hub is the lock table's [`WatchSink`]: the table calls it with a key's shard
//! locked whenever the key's holders change (see [`crate::engine::watch`]), on every node
//! (a follower's table changes only by applying the log, so its watchers see the same
//! changes). A new watch registers itself and queues the key's current state under that
//! same lock ([`LockTable::observe`]): the state and the changes after it reach the
//! watcher in order, with nothing lost or doubled between them.
//!
//! Each watching connection has one [`Watcher`]: a queue bounded by `--watch-backlog`.
//! A connection that does not read its socket stops draining it; the queue that then
//! overflows is dropped (its memory comes back at once) and the connection is closed.
//! While no key is watched the table pays one relaxed load per change.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::sync::Notify;

use crate::engine::{Cause, Change, Key, KeyValues, LockTable, Mode, WatchHook, WatchSink};

/// What happened, as a watcher is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key's state when the watch started (or after a snapshot replaced the table).
    State {
        /// The last token issued for the key (0: the key does not exist).
        fencing: u64,
        /// Its holders in grant order.
        holders: Vec<HolderState>,
    },
    /// A hold was granted.
    Granted(HolderState),
    /// A hold was released.
    Released(HolderState),
    /// A hold ended without a release.
    Expired(HolderState, Cause),
    /// A holder set or cleared its value.
    Value(HolderState),
}

/// One holder in a watch message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderState {
    /// The holder's session.
    pub session: u64,
    /// Its mode.
    pub mode: Mode,
    /// Its token.
    pub token: u64,
    /// Its value (None: none; always None for released and expired).
    pub value: Option<Box<[u8]>>,
}

/// One message for a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchMsg {
    /// What the watch was started with: the binary WATCH's request id (0 in text mode).
    pub tag: u32,
    /// The key.
    pub key: Key,
    /// What happened.
    pub event: WatchEvent,
}

/// The state message for `key` from what [`LockTable::observe`] saw.
fn state_msg(tag: u32, key: &Key, state: Option<KeyValues>) -> WatchMsg {
    let event = match state {
        None => WatchEvent::State {
            fencing: 0,
            holders: Vec::new(),
        },
        Some((info, values)) => WatchEvent::State {
            fencing: info.fencing.0,
            holders: info
                .holders
                .iter()
                .zip(values.into_iter().chain(std::iter::repeat(None)))
                .map(|(h, value)| HolderState {
                    session: h.session.0,
                    mode: h.mode,
                    token: h.token.0,
                    value,
                })
                .collect(),
        },
    };
    WatchMsg {
        tag,
        key: key.clone(),
        event,
    }
}

#[derive(Debug, Default)]
struct Queue {
    msgs: VecDeque<WatchMsg>,
    overflowed: bool,
}

/// One connection's watches and the messages waiting to be written to it.
#[derive(Debug)]
pub struct Watcher {
    backlog: usize,
    queue: Mutex<Queue>,
    notify: Notify,
    /// The keys it watches, with their tags.
    keys: Mutex<HashMap<Key, u32>>,
}

impl Watcher {
    /// A watcher whose queue holds at most `backlog` messages.
    pub fn new(backlog: usize) -> Arc<Watcher> {
        Arc::new(Watcher {
            backlog: backlog.max(1),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            keys: Mutex::new(HashMap::new()),
        })
    }

    fn push(&self, msg: WatchMsg) {
        let mut q = self.queue.lock();
        if q.overflowed {
            return;
        }
        if q.msgs.len() >= self.backlog {
            q.overflowed = true;
            q.msgs = VecDeque::new();
        } else {
            q.msgs.push_back(msg);
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Takes every queued message. Err: the queue overflowed (the connection must close).
    pub fn drain(&self, out: &mut Vec<WatchMsg>) -> Result<(), Overflow> {
        let mut q = self.queue.lock();
        if q.overflowed {
            return Err(Overflow);
        }
        out.extend(q.msgs.drain(..));
        Ok(())
    }

    /// Whether messages wait (or the queue overflowed).
    pub fn pending(&self) -> bool {
        let q = self.queue.lock();
        q.overflowed || !q.msgs.is_empty()
    }

    /// Whether the queue overflowed.
    pub fn overflowed(&self) -> bool {
        self.queue.lock().overflowed
    }

    /// Completes when messages may be waiting (or the queue overflowed).
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Keys watched now.
    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    /// Whether no key is watched.
    pub fn is_empty(&self) -> bool {
        self.keys.lock().is_empty()
    }

    /// Whether `key` is watched.
    pub fn watches(&self, key: &[u8]) -> bool {
        self.keys.lock().contains_key(key)
    }
}

/// A watcher's queue overflowed: it fell `--watch-backlog` messages behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

type Entries = SmallVec<[(Arc<Watcher>, u32); 2]>;

/// Every watch of the server. See the module docs.
pub struct WatchHub {
    active: Arc<AtomicUsize>,
    keys: Mutex<HashMap<Key, Entries>>,
    /// Watchers disconnected because their queue overflowed.
    pub overflows: AtomicU64,
    /// Messages queued for watchers since start.
    pub messages: AtomicU64,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            active: Arc::new(AtomicUsize::new(0)),
            keys: Mutex::new(HashMap::new()),
            overflows: AtomicU64::new(0),
            messages: AtomicU64::new(0),
        }
    }
}

impl WatchHub {
    /// The hook to install in a lock table (`hub` is this hub).
    pub fn hook(hub: &Arc<WatchHub>) -> WatchHook {
        WatchHook {
            active: hub.active.clone(),
            sink: hub.clone(),
        }
    }

    /// Watches registered (connection, key pairs).
    pub fn watches(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Keys with at least one watcher.
    pub fn watched_keys(&self) -> usize {
        self.keys.lock().len()
    }

    /// Starts (or restarts) `watcher`'s watch of `key` with `tag`: the key's state is
    /// queued first, then every change. A key watched already keeps one registration
    /// (with the new tag) and gets its state again.
    pub fn watch(&self, table: &LockTable, watcher: &Arc<Watcher>, key: &[u8], tag: u32, now: u64) {
        let key = Key::new(key);
        table.observe(key.as_bytes(), now, |state| {
            let mut keys = self.keys.lock();
            let entries = keys.entry(key.clone()).or_default();
            match entries.iter_mut().find(|(w, _)| Arc::ptr_eq(w, watcher)) {
                Some(e) => e.1 = tag,
                None => {
                    entries.push((watcher.clone(), tag));
                    self.active.fetch_add(1, Ordering::Relaxed);
                }
            }
            watcher.keys.lock().insert(key.clone(), tag);
            self.messages.fetch_add(1, Ordering::Relaxed);
            watcher.push(state_msg(tag, &key, state));
        });
    }

    /// Ends `watcher`'s watch of `key`; false if it had none. Messages of the key still
    /// queued are dropped.
    pub fn unwatch(&self, watcher: &Arc<Watcher>, key: &[u8]) -> bool {
        if watcher.keys.lock().remove(key).is_none() {
            return false;
        }
        let mut keys = self.keys.lock();
        if let Some(entries) = keys.get_mut(key) {
            if let Some(i) = entries.iter().position(|(w, _)| Arc::ptr_eq(w, watcher)) {
                entries.swap_remove(i);
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
            if entries.is_empty() {
                keys.remove(key);
            }
        }
        drop(keys);
        watcher
            .queue
            .lock()
            .msgs
            .retain(|m| m.key.as_bytes() != key);
        true
    }

    /// Ends every watch of `watcher` (its connection ends or UNWATCH names no key).
    pub fn unwatch_all(&self, watcher: &Arc<Watcher>) {
        let keys: Vec<Key> = watcher.keys.lock().keys().cloned().collect();
        for k in keys {
            self.unwatch(watcher, k.as_bytes());
        }
    }

    /// A watcher whose queue overflowed is being disconnected.
    pub fn overflowed(&self) {
        self.overflows.fetch_add(1, Ordering::Relaxed);
    }
}

impl WatchSink for WatchHub {
    fn change(&self, key: &Key, change: &Change<'_>) {
        let keys = self.keys.lock();
        let Some(entries) = keys.get(key) else {
            return;
        };
        let holder = |session: crate::engine::SessionId,
                      mode: Mode,
                      token: crate::engine::FencingToken,
                      value: Option<&[u8]>| HolderState {
            session: session.0,
            mode,
            token: token.0,
            value: value.map(Into::into),
        };
        let event = match *change {
            Change::Granted {
                session,
                token,
                mode,
                value,
            } => WatchEvent::Granted(holder(session, mode, token, value)),
            Change::Released {
                session,
                token,
                mode,
            } => WatchEvent::Released(holder(session, mode, token, None)),
            Change::Expired {
                session,
                token,
                mode,
                cause,
            } => WatchEvent::Expired(holder(session, mode, token, None), cause),
            Change::Value {
                session,
                token,
                mode,
                value,
            } => WatchEvent::Value(holder(session, mode, token, value)),
        };
        self.messages
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        for (watcher, tag) in entries {
            watcher.push(WatchMsg {
                tag: *tag,
                key: key.clone(),
                event: event.clone(),
            });
        }
    }

    fn table_replaced(&self, table: &LockTable, now: u64) {
        let keys: Vec<Key> = self.keys.lock().keys().cloned().collect();
        for key in keys {
            table.observe(key.as_bytes(), now, |state| {
                let keys = self.keys.lock();
                if let Some(entries) = keys.get(&key) {
                    for (watcher, tag) in entries {
                        watcher.push(state_msg(*tag, &key, state.clone()));
                    }
                }
            });
        }
    }
}
