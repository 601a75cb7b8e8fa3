//! Watches: a stream of the changes of a key's holders (protocol.md, "Watches").
//!
//! The server keeps a watch per connection, so the client keeps every live watch here and
//! starts it again on each new connection (after a reconnect, or on a new leader): the
//! server then sends the key's state again, which the stream passes on as a new
//! [`WatchEvent::State`]. Treat a state as "forget what you knew".

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use turnstile_proto::{Request, Response};

pub use turnstile_proto::{EndCause, WatchEvent, WatchedHold};

use crate::client::{check_key, Inner};
use crate::conn::Link;
use crate::error::{Error, Result};

/// One live watch, as the client keeps it.
pub(crate) struct WatchEntry {
    key: Bytes,
    tx: mpsc::UnboundedSender<WatchEvent>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a watch of `key`.
pub(crate) async fn start(inner: &Arc<Inner>, key: Bytes) -> Result<Watch> {
    check_key(&key)?;
    let id = inner.next_id();
    let (tx, rx) = mpsc::unbounded_channel();
    lock(&inner.watches).insert(
        id,
        WatchEntry {
            key: key.clone(),
            tx,
        },
    );
    let watch = Watch {
        inner: inner.clone(),
        id,
        key: key.clone(),
        rx,
    };
    match inner.call_id(id, &Request::Watch { key: &key }).await {
        Ok(Response::Ok) => Ok(watch),
        Ok(_) => Err(Error::Protocol(turnstile_proto::DecodeError::Malformed {
            opcode: 0,
            reason: "unexpected reply to WATCH",
        })),
        Err(e) => Err(e),
    }
}

/// Hands a PUSH_WATCH to every watch of its key (two watches of one key in one client
/// share the server's registration).
pub(crate) fn deliver(inner: &Inner, key: &[u8], event: WatchEvent) {
    let watches = lock(&inner.watches);
    for w in watches.values().filter(|w| w.key == key) {
        let _ = w.tx.send(event.clone());
    }
}

/// Starts every live watch again on a new connection.
pub(crate) fn rewatch(inner: &Inner, link: &Link) {
    let watches: Vec<(u32, Bytes)> = lock(&inner.watches)
        .iter()
        .map(|(id, w)| (*id, w.key.clone()))
        .collect();
    for (id, key) in watches {
        let _ = link.send(false, |out| Request::Watch { key: &key }.encode(id, out));
    }
}

/// A stream of the changes of one key's holders, from [`crate::Client::watch`]: first
/// the key's state ([`WatchEvent::State`]), then each grant, release, expiry and value
/// change, in the order the server applied them. After a reconnect a new state comes
/// (changes while disconnected are not replayed). Dropping it ends the watch.
///
/// Events wait in the client until read: read them, or drop the watch.
pub struct Watch {
    inner: Arc<Inner>,
    id: u32,
    key: Bytes,
    rx: mpsc::UnboundedReceiver<WatchEvent>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("key", &self.key).finish()
    }
}

impl Watch {
    /// The key watched.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The next event; None once the client is gone.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let last = {
            let mut watches = lock(&self.inner.watches);
            watches.remove(&self.id);
            !watches.values().any(|w| w.key == self.key)
        };
        if last {
            self.inner.fire(Request::Unwatch { key: &self.key });
        }
    }
}
