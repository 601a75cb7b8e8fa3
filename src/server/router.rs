//! Delivers engine events to the connection that owns the session they are for.
//!
//! The lock table reports grants, timeouts and expiries as events returned to whoever applied
//! the command that caused them (a release on another connection, the timer driver). The
//! router maps each session to its connection's channel. Sharded by session id so that
//! delivery never funnels through one lock.

use crossbeam::utils::CachePadded;
use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::engine::{Event, SessionId};

/// What a connection wants to hear about.
struct Route {
    tx: mpsc::UnboundedSender<Event>,
    /// Text mode only cares about its own queued request; lease-lost events would pile up
    /// unread, so they are dropped here.
    wants_expired: bool,
}

/// Session -> connection channel.
pub struct Router {
    shards: Box<[CachePadded<Mutex<RouteMap>>]>,
}

type RouteMap = HashMap<SessionId, Route>;

impl Router {
    /// A router with `shards` shards.
    pub fn new(shards: usize) -> Self {
        Router {
            shards: (0..shards.max(1))
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
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
            .insert(session, Route { tx, wants_expired });
    }

    /// Stops routing `session`'s events.
    pub fn unregister(&self, session: SessionId) {
        self.shard(session).lock().remove(&session);
    }

    /// Delivers every event to its session's connection; events for sessions without one
    /// (ended, or between connections) are dropped: the lock table already applied them.
    pub fn route(&self, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            let session = event.session();
            let shard = self.shard(session).lock();
            if let Some(route) = shard.get(&session) {
                if matches!(event, Event::Expired { .. }) && !route.wants_expired {
                    continue;
                }
                let _ = route.tx.send(event);
            }
        }
    }
}
