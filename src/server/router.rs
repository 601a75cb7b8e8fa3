//! Delivers engine events to the connection that owns the session they are for.
//!
//! The lock table reports grants, timeouts and expiries as events returned to whoever applied
//! the command that caused them (a release on another connection, the timer driver). The
//! router maps each session to its connection's channel. Sharded by session id so that
//! delivery never funnels through one lock.
//!
//! A binary session's route outlives its connections: it is registered when the session
//! is created and removed when the session ends, so events that arrive while no connection
//! is attached wait in the session's channel for the next one (see
//! [`super::sessions`]). Binary sessions also hear that someone queued behind one of their
//! holds ([`Delivery::Waiting`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam::utils::CachePadded;
use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::engine::{Event, Key, Mode, SessionId};

/// WAITING notices kept for a detached binary session at most; later ones are dropped
/// until a connection resumes it (grants, timeouts and lost leases are always kept: there
/// are at most as many as the session has holds and queued requests).
pub const MAX_DETACHED_WAITING: u32 = 1024;

/// What a binary session's connection is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// An engine event for the session.
    Event(Event),
    /// `waiter` queued for `key`, which the session holds.
    Waiting {
        /// The key.
        key: Key,
        /// The session that queued.
        waiter: SessionId,
        /// The mode it wants.
        mode: Mode,
    },
}

/// Whether a binary session has a connection, and how many WAITING notices wait for one.
#[derive(Debug, Default)]
pub struct Link {
    attached: AtomicBool,
    detached_waiting: AtomicU32,
}

impl Link {
    /// A connection took the session over: deliver everything.
    pub fn attach(&self) {
        self.detached_waiting.store(0, Ordering::Relaxed);
        self.attached.store(true, Ordering::Release);
    }

    /// The connection is gone: keep WAITING notices up to the cap.
    pub fn detach(&self) {
        self.attached.store(false, Ordering::Release);
    }

    fn admit_waiting(&self) -> bool {
        if self.attached.load(Ordering::Acquire) {
            return true;
        }
        self.detached_waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_DETACHED_WAITING).then_some(n + 1)
            })
            .is_ok()
    }
}

/// What a connection wants to hear about.
enum Route {
    Text {
        tx: mpsc::UnboundedSender<Event>,
        /// Text mode only cares about its own queued request; lease-lost events would pile
        /// up unread, so they are dropped here.
        wants_expired: bool,
    },
    Binary {
        tx: mpsc::UnboundedSender<Delivery>,
        link: Arc<Link>,
    },
}

/// Session -> connection channel.
pub struct Router {
    shards: Box<[CachePadded<Mutex<RouteMap>>]>,
    /// Text sessions an administrator ended (ADMIN END-SESSION) so far: while 0, no
    /// connection needs to look up whether its session was.
    ended: std::sync::atomic::AtomicU64,
}

type RouteMap = HashMap<SessionId, Route>;

impl Router {
    /// A router with `shards` shards.
    pub fn new(shards: usize) -> Self {
        Router {
            shards: (0..shards.max(1))
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            ended: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn shard(&self, session: SessionId) -> &Mutex<RouteMap> {
        &self.shards[(session.0 % self.shards.len() as u64) as usize]
    }

    /// Routes `session`'s events to `tx`.
    pub fn register(
        &self,
        session: SessionId,
        tx: mpsc::UnboundedSender<Event>,
        wants_expired: bool,
    ) {
        self.shard(session)
            .lock()
            .insert(session, Route::Text { tx, wants_expired });
    }

    /// Routes a binary session's events (all of them, and WAITING notices) to `tx`.
    pub fn register_binary(
        &self,
        session: SessionId,
        tx: mpsc::UnboundedSender<Delivery>,
        link: Arc<Link>,
    ) {
        self.shard(session)
            .lock()
            .insert(session, Route::Binary { tx, link });
    }

    /// Whether a text connection of this process serves `session`.
    pub fn has(&self, session: SessionId) -> bool {
        matches!(
            self.shard(session).lock().get(&session),
            Some(Route::Text { .. })
        )
    }

    /// Whether any connection (text or binary) serves `session` or waits for it.
    pub fn knows(&self, session: SessionId) -> bool {
        self.shard(session).lock().contains_key(&session)
    }

    /// An administrator ended text session `session`: its events are no longer routed,
    /// and its connection is told at its next command ([`Self::was_ended`]). False if
    /// no text connection serves it.
    pub fn end_text(&self, session: SessionId) -> bool {
        let mut shard = self.shard(session).lock();
        if !matches!(shard.get(&session), Some(Route::Text { .. })) {
            return false;
        }
        shard.remove(&session);
        self.ended.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether the text connection serving `session` lost it to [`Self::end_text`]
    /// (its route is gone while it runs). One relaxed load while nobody was ended.
    #[inline]
    pub fn was_ended(&self, session: SessionId) -> bool {
        self.ended.load(Ordering::Relaxed) != 0 && !self.has(session)
    }

    /// Stops routing `session`'s events.
    pub fn unregister(&self, session: SessionId) {
        self.shard(session).lock().remove(&session);
    }

    /// Delivers every event to its session's connection; events for sessions without one
    /// (ended, or between connections) are dropped: the lock table already applied them.
    pub fn route(&self, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            if matches!(event, Event::DelayEnded { .. }) {
                continue;
            }
            let session = event.session();
            let shard = self.shard(session).lock();
            match shard.get(&session) {
                Some(Route::Text { tx, wants_expired }) => {
                    if matches!(event, Event::Expired { .. }) && !wants_expired {
                        continue;
                    }
                    let _ = tx.send(event);
                }
                Some(Route::Binary { tx, .. }) => {
                    let _ = tx.send(Delivery::Event(event));
                }
                None => {}
            }
        }
    }

    /// Tells `holder`, if it is a binary session, that `waiter` queued for `key`.
    pub fn waiting(&self, holder: SessionId, key: &Key, waiter: SessionId, mode: Mode) {
        let shard = self.shard(holder).lock();
        if let Some(Route::Binary { tx, link }) = shard.get(&holder) {
            if link.admit_waiting() {
                let _ = tx.send(Delivery::Waiting {
                    key: key.clone(),
                    waiter,
                    mode,
                });
            }
        }
    }
}
