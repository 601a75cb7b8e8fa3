//! The stream of session events, for users who need them.

use bytes::Bytes;
use tokio::sync::broadcast;
use turnstile_proto::{LostReason, ModeKind};

/// Something that happened to the client's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The server says a hold is gone (its lease ran out). The guard of that hold reports
    /// it too ([`crate::LockGuard::lost`]).
    LeaseLost {
        /// The key.
        key: Bytes,
        /// The lost hold's fencing token.
        token: u64,
        /// Why.
        reason: LostReason,
    },
    /// Another session queued for a key this session holds: hand it over early if you can.
    Waiting {
        /// The key.
        key: Bytes,
        /// The waiting session.
        session: u64,
        /// The mode it wants.
        mode: ModeKind,
        /// The permits it wants (1 for lock modes).
        permits: u32,
    },
    /// The connection was lost; the client is reconnecting.
    Disconnected,
    /// The client is connected again. `resumed`: the same session goes on with its holds
    /// and queued requests.
    Reconnected {
        /// Whether the session was resumed.
        resumed: bool,
        /// The session now.
        session: u64,
    },
    /// The session ended before the client could resume it: every hold was released and
    /// every queued request cancelled; guards report it as lost. A new session follows.
    SessionLost {
        /// The session that ended.
        session: u64,
    },
    /// This receiver fell behind and missed this many events.
    Lagged(u64),
}

/// Receives session events (see [`crate::Client::events`]).
pub struct Events {
    pub(crate) rx: broadcast::Receiver<SessionEvent>,
}

impl Events {
    /// The next event; None once the client is gone.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(SessionEvent::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// An event if one is ready.
    pub fn try_recv(&mut self) -> Option<SessionEvent> {
        match self.rx.try_recv() {
            Ok(e) => Some(e),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(SessionEvent::Lagged(n)),
            Err(_) => None,
        }
    }
}
