//! Leader election on a lock, as etcd's and Curator's recipes do it: candidates
//! [`Election::campaign`] for an exclusive lease-lock on the election's key with their
//! value (an address, an id); the holder is the leader, its lease renewed in the
//! background; anyone can [`Election::leader`] or [`Election::observe`] who leads, with
//! the leader's fencing token, which grows with every new term. A leader that crashes
//! or is cut off loses its lease (or its session) and the next candidate in the queue
//! takes over.

use std::time::Duration;

use bytes::Bytes;

use crate::error::Result;
use crate::lock::{LockGuard, Lost};
use crate::watch::{Watch, WatchEvent, WatchedHold};
use crate::Client;

/// An election on one key. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Election {
    client: Client,
    key: Bytes,
    ttl: Option<Duration>,
}

/// Who leads: the holder of the election's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's session.
    pub session: u64,
    /// Its fencing token: larger for every later leader. Pass it to what the leader
    /// writes so that a deposed leader's late writes can be refused.
    pub token: u64,
    /// Its value (what it campaigned with or proclaimed since).
    pub value: Bytes,
}

impl Election {
    /// An election on `key`, through `client`.
    pub fn new(client: &Client, key: impl AsRef<[u8]>) -> Election {
        Election {
            client: client.clone(),
            key: Bytes::copy_from_slice(key.as_ref()),
            ttl: None,
        }
    }

    /// The leader's lease (the server's default when not set): how long after a leader
    /// stops renewing (it crashed, or is cut off) the next one can take over.
    pub fn ttl(mut self, ttl: Duration) -> Election {
        self.ttl = Some(ttl);
        self
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Waits until this candidate leads, then returns its leadership. Candidates are
    /// elected in the order they campaigned. Dropping the future withdraws.
    pub async fn campaign(&self, value: impl AsRef<[u8]>) -> Result<Leadership> {
        let mut b = self.client.lock(&self.key).exclusive().value(value);
        if let Some(ttl) = self.ttl {
            b = b.ttl(ttl);
        }
        let guard = b.acquire().await?;
        Ok(Leadership { guard })
    }

    /// The leader now, if there is one.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        let holders = self.client.get_value(&self.key).await?;
        Ok(holders.into_iter().next().map(|h| Leader {
            session: h.session,
            token: h.token,
            value: h.value,
        }))
    }

    /// Follows the leader: yields the leader whenever it changes (a new leader, a new
    /// value) and None while there is none.
    pub async fn observe(&self) -> Result<Observer> {
        Ok(Observer {
            watch: self.client.watch(&self.key).await?,
            current: None,
            started: false,
        })
    }
}

/// This candidate's term as leader. It lasts while the lease is renewed; resign with
/// [`Leadership::resign`], or drop it.
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    /// The term's fencing token.
    pub fn token(&self) -> u64 {
        self.guard.token()
    }

    /// Publishes a new value (observers see it at once).
    pub async fn proclaim(&self, value: impl AsRef<[u8]>) -> Result<()> {
        self.guard.set_value(value).await
    }

    /// Completes when the leadership is lost (the lease ran out while renewals could not
    /// get through, or the session ended): stop acting as the leader.
    pub async fn lost(&self) -> Lost {
        self.guard.lost().await
    }

    /// Steps down: the next candidate takes over at once.
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }
}

/// A stream of leaders (see [`Election::observe`]).
#[derive(Debug)]
pub struct Observer {
    watch: Watch,
    current: Option<Leader>,
    started: bool,
}

fn leader_of(h: &WatchedHold) -> Leader {
    Leader {
        session: h.session,
        token: h.token,
        value: h.value.clone(),
    }
}

impl Observer {
    /// The next change of leader: the new leader, or None when the office is empty. The
    /// first call returns the leader at the time of the watch. None (the outer Option)
    /// once the client is gone.
    pub async fn next(&mut self) -> Option<Option<Leader>> {
        loop {
            let event = self.watch.next().await?;
            let next = match &event {
                WatchEvent::State { holders, .. } => holders.first().map(leader_of),
                WatchEvent::Granted(h) => Some(leader_of(h)),
                WatchEvent::Released(h) | WatchEvent::Expired(h, _) => match &self.current {
                    Some(c) if c.token == h.token => None,
                    other => other.clone(),
                },
                WatchEvent::Value(h) => match &self.current {
                    Some(c) if c.token == h.token => Some(leader_of(h)),
                    other => other.clone(),
                },
            };
            if !self.started || next != self.current {
                self.started = true;
                self.current = next.clone();
                return Some(next);
            }
        }
    }

    /// The leader as last seen.
    pub fn current(&self) -> Option<&Leader> {
        self.current.as_ref()
    }
}
