//! Binary sessions: sessions that outlive their connections.
//!
//! A binary session is named by a 128-bit random secret (given to its client in HELLO_OK,
//! never shown to anyone else) and by its public [`SessionId`] (what INSPECT shows). It is
//! *attached* while one connection serves it and *detached* in between. Its state that
//! must survive a reconnect lives in [`Core`]: the channel its events arrive on (registered
//! in the router for the session's whole life, so events that come while it is detached
//! wait there) and the map of its queued ACQUIREs by request id. The attached connection
//! owns the core through an owned mutex guard, so serving it takes no lock per request; a
//! connection that resumes the session waits for that guard.
//!
//! Lifecycle: [`Sessions::create`] or [`Sessions::resume`] attach; [`Sessions::detach`]
//! when the connection goes (the session then ends when its timeout passes after the last
//! frame its client sent, unless a connection resumes it first); [`Sessions::end`] ends it
//! at once (BYE with END_SESSION, timeout while attached, server shutdown). Ending a
//! session is text mode's: its queued requests are cancelled and its holds released.
//!
//! A session belongs to the user that created it (`--users-file`): a resume by another
//! user finds nothing ([`ResumeError::Unknown`], so it learns nothing about the session)
//! and takes nothing over. The user's name is logged with the session (kind 2 of
//! `OpenSession`), so this holds after a restart too.

use std::sync::{Arc, Weak};
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, OwnedMutexGuard};
use tokio::time::Instant;
use tracing::debug;

use super::router::{Delivery, Link};
use super::Shared;
use crate::engine::{Key, RequestId, SessionId};
use crate::protocol::binary::SECRET_LEN;

/// How long a resuming connection waits for the connection it takes over to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// A session secret.
pub type Secret = [u8; SECRET_LEN];

/// The registry of binary sessions.
pub struct Sessions {
    by_secret: Mutex<HashMap<Secret, Arc<Session>>>,
    next_conn: std::sync::atomic::AtomicU64,
}

/// One binary session.
pub struct Session {
    /// The public id.
    pub id: SessionId,
    /// The resume secret.
    pub secret: Secret,
    /// Ends this long after the last frame from its client.
    pub timeout: Duration,
    /// The user that created it: only that user may resume it.
    pub user: String,
    link: Arc<Link>,
    core: Arc<tokio::sync::Mutex<Core>>,
    state: Mutex<State>,
}

struct State {
    /// The attached connection (0: detached).
    owner: u64,
    /// Bumped at every attach, so that an expiry armed at a detach can tell whether the
    /// session was resumed since.
    epoch: u64,
    ended: bool,
    /// Tells the attached connection that another one took the session over.
    kick: Option<oneshot::Sender<()>>,
}

/// What survives a reconnect, owned by the attached connection.
pub struct Core {
    /// The session's events.
    pub rx: mpsc::UnboundedReceiver<Delivery>,
    /// Queued ACQUIREs by engine request id.
    pub queued: hashbrown::HashMap<RequestId, Queued>,
    /// Engine request id by the client's request id.
    pub by_client: hashbrown::HashMap<u32, RequestId>,
    /// The client's name (HELLO).
    pub name: Vec<u8>,
}

/// A queued ACQUIRE.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The client's request id.
    pub client_id: u32,
    /// The key.
    pub key: Key,
    /// When it queued.
    pub since: std::time::Instant,
    /// Its mode, for the wait histogram.
    pub mode: super::stats::ModeLabel,
    /// Grants still to come: 1 for an ACQUIRE, the number of keys for a MACQUIRE (one
    /// PUSH_GRANTED per key).
    pub remaining: u32,
}

/// A connection's hold on a session.
pub struct Attachment {
    /// The session.
    pub session: Arc<Session>,
    /// Its core, owned while attached.
    pub core: OwnedMutexGuard<Core>,
    /// Completes when another connection takes the session over (or it is ended).
    pub kicked: oneshot::Receiver<()>,
    /// Whether this attachment resumed an existing session.
    pub resumed: bool,
    conn: u64,
}

/// What names a session and decides who may resume it.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The public id.
    pub id: SessionId,
    /// The resume secret.
    pub secret: Secret,
    /// The timeout.
    pub timeout: Duration,
    /// The user that created it.
    pub user: String,
}

/// The user name a session's log record carries: none for `default` (the layout logs
/// had before users existed; see `crate::durable::command::SessionKind`).
pub fn logged_user(user: &str) -> Option<String> {
    (user != crate::acl::DEFAULT).then(|| user.to_string())
}

/// Why a resume failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ResumeError {
    /// No session has this secret (never had, or it ended).
    Unknown,
    /// The connection serving it did not let go in time.
    Busy,
}

impl Sessions {
    /// An empty registry.
    pub fn new() -> Self {
        Sessions {
            by_secret: Mutex::new(HashMap::new()),
            next_conn: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Sessions now (attached or detached).
    pub fn len(&self) -> usize {
        self.by_secret.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn conn_id(&self) -> u64 {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates a session of `user` attached to the calling connection. None when the
    /// configured maximum of sessions is reached.
    pub fn create(
        &self,
        shared: &Shared,
        timeout: Duration,
        name: Vec<u8>,
        user: &str,
    ) -> Option<Attachment> {
        let secret = new_secret();
        let map = self.by_secret.lock();
        if map.len() >= shared.config.max_sessions {
            return None;
        }
        let (id, _) = shared.store.open_session(
            crate::durable::SessionKind::Binary {
                secret,
                timeout_ms: timeout.as_millis() as u64,
                user: logged_user(user),
            },
            shared.clock.now_ms(),
        );
        let identity = Identity {
            id,
            secret,
            timeout,
            user: user.to_string(),
        };
        Some(self.attach_new(shared, map, identity, name))
    }

    /// Whether one more session would pass `--max-sessions`.
    pub fn full(&self, shared: &Shared) -> bool {
        self.by_secret.lock().len() >= shared.config.max_sessions
    }

    /// Attaches the calling connection to a session the cluster has just opened with
    /// `id` and `secret` (cluster mode: the open was proposed and committed first).
    pub fn create_replicated(
        &self,
        shared: &Shared,
        id: SessionId,
        secret: Secret,
        timeout: Duration,
        name: Vec<u8>,
        user: &str,
    ) -> Attachment {
        let map = self.by_secret.lock();
        let identity = Identity {
            id,
            secret,
            timeout,
            user: user.to_string(),
        };
        self.attach_new(shared, map, identity, name)
    }

    fn attach_new(
        &self,
        shared: &Shared,
        mut map: parking_lot::MutexGuard<'_, HashMap<Secret, Arc<Session>>>,
        identity: Identity,
        name: Vec<u8>,
    ) -> Attachment {
        let (id, secret) = (identity.id, identity.secret);
        let conn = self.conn_id();
        let (kick_tx, kick_rx) = oneshot::channel();
        let session = Session::register(
            shared,
            identity,
            name,
            Vec::new(),
            State {
                owner: conn,
                epoch: 1,
                ended: false,
                kick: Some(kick_tx),
            },
        );
        session.link.attach();
        let guard = session
            .core
            .clone()
            .try_lock_owned()
            .expect("a new session's core is free");
        map.insert(secret, session.clone());
        drop(map);
        debug!(session = %id, "binary session created");
        Attachment {
            session,
            core: guard,
            kicked: kick_rx,
            resumed: false,
            conn,
        }
    }

    /// Attaches the calling connection, authenticated as `user`, to the session named by
    /// `secret`, taking it over from the connection that has it, if any. A session of
    /// another user is [`ResumeError::Unknown`], and the connection serving it is left
    /// alone.
    pub async fn resume(
        &self,
        shared: &Arc<Shared>,
        secret: &Secret,
        user: &str,
    ) -> Result<Attachment, ResumeError> {
        let session = self
            .by_secret
            .lock()
            .get(secret)
            .filter(|s| s.user == user)
            .cloned()
            .ok_or(ResumeError::Unknown)?;
        let conn = self.conn_id();
        let (kick_tx, kick_rx) = oneshot::channel();
        {
            let mut st = session.state.lock();
            if st.ended {
                return Err(ResumeError::Unknown);
            }
            if let Some(old) = st.kick.take() {
                let _ = old.send(());
            }
            st.owner = conn;
            st.epoch += 1;
            st.kick = Some(kick_tx);
        }
        let core =
            match tokio::time::timeout(TAKEOVER_WAIT, session.core.clone().lock_owned()).await {
                Ok(core) => core,
                Err(_) => {
                    // Give the session back to the timeout, as if we had attached and left.
                    self.detach_conn(shared, &session, conn, Instant::now());
                    return Err(ResumeError::Busy);
                }
            };
        if session.state.lock().ended {
            return Err(ResumeError::Unknown);
        }
        session.link.attach();
        debug!(session = %session.id, "binary session resumed");
        Ok(Attachment {
            session,
            core,
            kicked: kick_rx,
            resumed: true,
            conn,
        })
    }

    /// The connection is gone: the session waits for a resume until `timeout` after
    /// `last_frame`, then ends. Nothing happens if another connection took it over.
    pub fn detach(&self, shared: &Arc<Shared>, att: Attachment, last_frame: Instant) {
        let Attachment {
            session,
            core,
            conn,
            ..
        } = att;
        self.detach_conn(shared, &session, conn, last_frame);
        // Let a resuming connection have the core only once the state says detached.
        drop(core);
    }

    fn detach_conn(&self, shared: &Arc<Shared>, session: &Arc<Session>, conn: u64, last: Instant) {
        let epoch = {
            let mut st = session.state.lock();
            if st.owner != conn || st.ended {
                return;
            }
            st.owner = 0;
            st.kick = None;
            st.epoch
        };
        session.link.detach();
        debug!(session = %session.id, "binary session detached");
        end_after(shared, session, epoch, last + session.timeout);
    }

    /// Brings back a binary session the log had open when the server stopped: detached,
    /// resumable with its secret, ending after its timeout unless a client resumes it.
    /// `queued` are its queued requests as the table has them (the low 32 bits of each
    /// request id are the client's request id).
    pub fn restore(&self, shared: &Arc<Shared>, identity: Identity, queued: Vec<(RequestId, Key)>) {
        let (secret, timeout) = (identity.secret, identity.timeout);
        let session = Session::register(
            shared,
            identity,
            Vec::new(),
            queued,
            State {
                owner: 0,
                epoch: 1,
                ended: false,
                kick: None,
            },
        );
        self.by_secret.lock().insert(secret, session.clone());
        end_after(shared, &session, 1, Instant::now() + timeout);
    }

    /// Ends the session now: removed from the registry and the router, its queued
    /// requests cancelled and its holds released (which may grant other sessions).
    pub fn end(&self, shared: &Shared, session: &Session) {
        self.end_if(shared, session, |_| true);
    }

    fn end_if(
        &self,
        shared: &Shared,
        session: &Session,
        cond: impl FnOnce(&State) -> bool,
    ) -> bool {
        {
            let mut st = session.state.lock();
            if st.ended || !cond(&st) {
                return false;
            }
            st.ended = true;
            st.kick = None;
        }
        self.by_secret.lock().remove(&session.secret);
        shared.router.unregister(session.id);
        super::connection::close_session(shared, session.id);
        true
    }

    /// An administrator ended binary session `id` (its end is applied and logged
    /// already): it leaves the registry and the router, and the connection serving it,
    /// if any, is let go. False if no binary session has this id.
    pub fn forget(&self, shared: &Shared, id: SessionId) -> bool {
        let session = {
            let mut map = self.by_secret.lock();
            let Some(secret) = map.iter().find(|(_, s)| s.id == id).map(|(k, _)| *k) else {
                return false;
            };
            map.remove(&secret).expect("found just now")
        };
        {
            let mut st = session.state.lock();
            st.ended = true;
            if let Some(kick) = st.kick.take() {
                let _ = kick.send(());
            }
        }
        shared.router.unregister(id);
        true
    }

    /// Forgets every session without ending it (a cluster node that stops leading: the
    /// sessions live on in the replicated state, and their clients resume them on the
    /// new leader). Attached connections are closed.
    pub fn forget_all(&self, shared: &Shared) {
        let all: Vec<Arc<Session>> = self.by_secret.lock().drain().map(|(_, s)| s).collect();
        for session in all {
            {
                let mut st = session.state.lock();
                st.ended = true;
                if let Some(kick) = st.kick.take() {
                    let _ = kick.send(());
                }
            }
            shared.router.unregister(session.id);
        }
    }

    /// Ends every session (server shutdown).
    pub fn end_all(&self, shared: &Shared) {
        let all: Vec<Arc<Session>> = self.by_secret.lock().values().cloned().collect();
        for s in all {
            self.end(shared, &s);
        }
    }
}

impl Session {
    /// A session's state, registered in the router for its whole life (events that come
    /// while no connection serves it wait in its channel). `queued` are queued requests
    /// it already has (a session restored after a restart): the low 32 bits of each
    /// request id are the client's request id.
    fn register(
        shared: &Shared,
        identity: Identity,
        name: Vec<u8>,
        queued: Vec<(RequestId, Key)>,
        state: State,
    ) -> Arc<Session> {
        let Identity {
            id,
            secret,
            timeout,
            user,
        } = identity;
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link::default());
        shared.router.register_binary(id, tx, link.clone());
        let mut core = Core {
            rx,
            queued: Default::default(),
            by_client: Default::default(),
            name,
        };
        for (request, key) in queued {
            let client_id = request.0 as u32;
            // A multi-lock has a waiter per key, all with its request id.
            if let Some(q) = core.queued.get_mut(&request) {
                q.remaining += 1;
                q.mode = super::stats::ModeLabel::Multi;
                continue;
            }
            core.queued.insert(
                request,
                Queued {
                    client_id,
                    key,
                    since: std::time::Instant::now(),
                    // Not known after a restart; counted as exclusive.
                    mode: super::stats::ModeLabel::Exclusive,
                    remaining: 1,
                },
            );
            core.by_client.insert(client_id, request);
        }
        Arc::new(Session {
            id,
            secret,
            timeout,
            user,
            link,
            core: Arc::new(tokio::sync::Mutex::new(core)),
            state: Mutex::new(state),
        })
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

/// Ends `session` at `deadline` unless it was attached (or ended) since `epoch`.
fn end_after(shared: &Arc<Shared>, session: &Arc<Session>, epoch: u64, deadline: Instant) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let session = session.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        if let Some(shared) = weak.upgrade() {
            let ended = shared
                .sessions
                .end_if(&shared, &session, |st| st.owner == 0 && st.epoch == epoch);
            if ended {
                debug!(session = %session.id, "binary session timed out");
            }
        }
    });
}

/// 128 bits from the operating system's random source.
pub fn new_secret() -> Secret {
    let mut secret = [0u8; SECRET_LEN];
    // Without a working random source, a guessable secret would let anyone take over
    // sessions: refuse to run rather than fall back to something weaker.
    getrandom::fill(&mut secret).expect("the OS random source is available");
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_differ() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; SECRET_LEN]);
    }
}
