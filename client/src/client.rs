//! The client: one connection multiplexing every request, a supervisor that reconnects
//! with backoff and resumes the session (in a cluster: on the leader, found through
//! NOTLEADER redirects), and the table of requests in flight, settled after a resume.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{debug, info, warn};
use turnstile_proto::{
    Acquire, ErrorCode, ErrorDetail, ErrorReply, HelloOk, HolderValue, KeyState, Mode, Push,
    Request, Response, ServerMessage, MAX_STR,
};
use turnstile_proto::{ExplainTarget, Explanation, WaitGraph};

use crate::conn::{self, Link};
use crate::error::{Error, Result};
use crate::events::{Events, SessionEvent};
use crate::lock::{Keeper, LockBuilder, Lost};
use crate::tls::{Connector, TlsConfig};

/// Addresses to connect to: one (`"127.0.0.1:7379"`) or several (the nodes of a
/// cluster, or fallbacks), tried in order.
pub trait ToAddrs {
    /// The addresses as `host:port` strings.
    fn to_addrs(self) -> Vec<String>;
}

impl ToAddrs for &str {
    fn to_addrs(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl ToAddrs for String {
    fn to_addrs(self) -> Vec<String> {
        vec![self]
    }
}

impl ToAddrs for &String {
    fn to_addrs(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl ToAddrs for SocketAddr {
    fn to_addrs(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl<T: ToString> ToAddrs for Vec<T> {
    fn to_addrs(self) -> Vec<String> {
        self.iter().map(ToString::to_string).collect()
    }
}

impl<T: ToString> ToAddrs for &[T] {
    fn to_addrs(self) -> Vec<String> {
        self.iter().map(ToString::to_string).collect()
    }
}

impl<T: ToString, const N: usize> ToAddrs for [T; N] {
    fn to_addrs(self) -> Vec<String> {
        self.iter().map(ToString::to_string).collect()
    }
}

/// How a [`Client`] connects and behaves. Made by [`Client::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    addrs: Vec<String>,
    name: String,
    auth: Option<(String, String)>,
    session_timeout: Option<Duration>,
    connect_timeout: Duration,
    reconnect_wait: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    max_redirects: usize,
    leader_wait: Duration,
    tls: Option<TlsConfig>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            addrs: Vec::new(),
            name: String::new(),
            auth: None,
            session_timeout: None,
            connect_timeout: Duration::from_secs(5),
            reconnect_wait: Duration::from_secs(10),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(5),
            max_redirects: 8,
            leader_wait: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl Builder {
    /// The server addresses, tried in order (at connect and at every reconnect). For a
    /// cluster, list its nodes (all of them, or a few: any node names the leader): the
    /// client follows `NOTLEADER` redirects to the leader, and after a failover resumes
    /// its session on the new one.
    pub fn addrs(mut self, addrs: impl ToAddrs) -> Self {
        self.addrs = addrs.to_addrs();
        self
    }

    /// The client's name (printable ASCII without spaces, at most 255 bytes), shown by the
    /// server's logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The password the server requires (user `default`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.auth = Some(("default".into(), password.into()));
        self
    }

    /// User name and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// The session timeout to ask for (the server clamps it to its range; its default
    /// when not set). The session survives a lost connection for this long; the client
    /// pings every quarter of it to keep it alive.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = Some(timeout);
        self
    }

    /// How long one connection attempt (TCP and handshake) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request made while disconnected waits for the connection to come back
    /// before it fails with [`Error::Disconnected`].
    pub fn reconnect_wait(mut self, wait: Duration) -> Self {
        self.reconnect_wait = wait;
        self
    }

    /// The first and the longest pause between reconnection attempts (the pause doubles
    /// after each failure, with jitter).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// Cluster mode: how many `NOTLEADER` redirects one round of connection attempts
    /// follows (default 8). A round tries every address once, plus the leaders they name.
    pub fn max_redirects(mut self, hops: usize) -> Self {
        self.max_redirects = hops;
        self
    }

    /// Cluster mode: how long connecting (and each reconnection) keeps trying, with short
    /// pauses, while the nodes it reaches answer `NOTLEADER` without a leader to name (an
    /// election is under way) or name one it cannot reach yet (default 10 s). After it,
    /// [`Builder::connect`] fails with [`Error::NotLeader`]; a reconnecting client goes
    /// on with its backoff.
    pub fn leader_wait(mut self, wait: Duration) -> Self {
        self.leader_wait = wait;
        self
    }

    /// Speaks TLS to every address (a server run with `--tls-cert`; docs/tls.md).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects and starts the background tasks. Each address is tried once, in order;
    /// a node that is not the leader names the leader, which is tried next; while no
    /// node knows a leader, rounds are repeated for up to [`Builder::leader_wait`]. Fails
    /// at once when no address can be reached at all.
    pub async fn connect(self) -> Result<Client> {
        if self.addrs.is_empty() {
            return Err(Error::InvalidArgument("no server address"));
        }
        if self.name.len() > 255 {
            return Err(Error::InvalidArgument(
                "the client name is longer than 255 bytes",
            ));
        }
        let (events, _) = broadcast::channel(1024);
        let (shutdown, _) = watch::channel(false);
        let tls = self.tls.as_ref().map(TlsConfig::connector).transpose()?;
        let inner = Arc::new(Inner {
            cfg: self,
            tls,
            next_id: AtomicU32::new(1),
            link: watch::Sender::new(None),
            pending: Mutex::new(HashMap::new()),
            session: Mutex::new(None),
            keeper: Arc::new(Keeper::new()),
            events,
            deferred: Mutex::new(Vec::new()),
            shutdown,
            gens: std::sync::atomic::AtomicU64::new(0),
            leader_hint: Mutex::new(None),
            last_addr: Mutex::new(None),
            watches: Mutex::new(HashMap::new()),
        });
        let opened = inner
            .open_any(Instant::now() + inner.cfg.leader_wait)
            .await?;
        let link = inner.install(opened);
        tokio::spawn(supervise(Arc::downgrade(&inner), link));
        tokio::spawn(crate::lock::keeper_loop(
            Arc::downgrade(&inner),
            inner.keeper.clone(),
            inner.shutdown.subscribe(),
        ));
        Ok(Client { inner })
    }
}

/// What the server told us about the session at the last handshake.
#[derive(Clone, Debug)]
pub(crate) struct SessionInfo {
    pub(crate) id: u64,
    pub(crate) secret: [u8; 16],
    pub(crate) timeout: Duration,
    pub(crate) default_ttl: Duration,
    pub(crate) max_key_len: usize,
}

/// The outcome of an ACQUIRE.
#[derive(Debug)]
pub(crate) enum Acquired {
    Granted(u64),
    Busy,
}

/// What an ACQUIRE asks for, kept to send it again when its outcome was lost before it
/// was answered at all.
#[derive(Clone, Debug)]
pub(crate) struct AcquireSpec {
    pub(crate) mode: Mode,
    pub(crate) reentrant: bool,
    pub(crate) ttl_ms: u32,
    pub(crate) wait_ms: Option<u32>,
    pub(crate) priority: u32,
    pub(crate) lock_delay_ms: u32,
    pub(crate) value: Option<Bytes>,
}

impl AcquireSpec {
    fn encode(&self, key: &[u8], id: u32, wait_ms: Option<u32>, out: &mut BytesMut) {
        Request::Acquire(Acquire {
            key,
            mode: self.mode,
            reentrant: self.reentrant,
            ttl_ms: self.ttl_ms,
            wait_ms,
            priority: self.priority,
            lock_delay_ms: self.lock_delay_ms,
            value: self.value.as_deref(),
        })
        .encode(id, out)
    }
}

/// A request waiting for its reply.
enum Pending {
    /// Any request but ACQUIRE: the next reply with its id completes it. A CONVERT
    /// (`push`) answered QUEUED is completed by its push instead (as GRANTED, or BUSY
    /// when its wait ran out).
    Call {
        tx: oneshot::Sender<Result<Response>>,
        gen: u64,
        push: bool,
    },
    /// An ACQUIRE: may be answered QUEUED first, then completed by a push.
    Acquire(AcquireWait),
    /// A RELEASE nobody waits for (a dropped guard): sent again after the resume if its
    /// connection was lost before the answer, or a follower refused it.
    Release { key: Bytes, gen: u64 },
    /// A MACQUIRE: answered MGRANTED, or QUEUED and then one PUSH_GRANTED per key.
    Multi(MultiWait),
}

/// A MACQUIRE waiting for its outcome.
pub(crate) struct MultiWait {
    /// Tokens in key order, or None for BUSY.
    tx: Option<oneshot::Sender<Result<Option<Vec<u64>>>>>,
    keys: usize,
    tokens: Vec<u64>,
    gen: u64,
}

pub(crate) struct AcquireWait {
    tx: Option<oneshot::Sender<Result<Acquired>>>,
    key: Bytes,
    spec: AcquireSpec,
    /// When it was first sent (a resend asks for what is left of its wait).
    sent: Instant,
    /// The connection it was sent on (or, after a resume, found queued on); 0 when a
    /// follower refused it or its outcome is uncertain (the resume settles it).
    gen: u64,
    queued: bool,
    /// Its future was dropped: cancel it, or release it if it was granted.
    abandoned: bool,
}

/// A connection attempt that got through: the stream, the server's HELLO_OK, the bytes
/// after it, and the address.
type Opened = (conn::Stream, HelloOk, BytesMut, String);

/// Whether an ERROR says the outcome of the request is unknown because the leader lost
/// its leadership (`ERR UNCERTAIN ...`; the server closes the connection after it).
fn is_uncertain(e: &ErrorReply) -> bool {
    e.code == ErrorCode::Err && e.message.starts_with(b"UNCERTAIN")
}

/// The leader a NOTLEADER names, if it is one that does.
fn named_leader(e: &ErrorReply) -> Option<String> {
    match &e.detail {
        ErrorDetail::NotLeader(addr) if e.code == ErrorCode::NotLeader && !addr.is_empty() => {
            Some(String::from_utf8_lossy(addr).into_owned())
        }
        _ => None,
    }
}

pub(crate) struct Inner {
    pub(crate) cfg: Builder,
    /// Made from `cfg.tls` once.
    tls: Option<Connector>,
    next_id: AtomicU32,
    /// The connection; None while reconnecting.
    link: watch::Sender<Option<Arc<Link>>>,
    pending: Mutex<HashMap<u32, Pending>>,
    session: Mutex<Option<SessionInfo>>,
    pub(crate) keeper: Arc<Keeper>,
    events: broadcast::Sender<SessionEvent>,
    /// RELEASEs of guards dropped while disconnected, sent after a resume.
    deferred: Mutex<Vec<Bytes>>,
    shutdown: watch::Sender<bool>,
    gens: std::sync::atomic::AtomicU64,
    /// The leader a NOTLEADER named last: tried first at the next reconnect.
    leader_hint: Mutex<Option<String>>,
    /// The address of the last connection: tried last at the next reconnect (it is the
    /// one that failed, if it is not just a connection that broke).
    last_addr: Mutex<Option<String>>,
    /// Live watches by the request id of their WATCH (sent again on every new connection).
    pub(crate) watches: Mutex<HashMap<u32, crate::watch::WatchEntry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent at each step, so a panic in
    // one does not make the data unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub(crate) fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub(crate) fn session(&self) -> Option<SessionInfo> {
        lock(&self.session).clone()
    }

    fn closed(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The addresses of one round of attempts: the leader a NOTLEADER named last, then
    /// the configured ones, starting after the node of the last connection (so that the
    /// node just lost, possibly dead, is tried last).
    fn candidates(&self) -> Vec<String> {
        let addrs = &self.cfg.addrs;
        let last = lock(&self.last_addr).clone();
        let start = last
            .and_then(|l| addrs.iter().position(|a| *a == l))
            .map_or(0, |i| i + 1);
        let mut order: Vec<String> = lock(&self.leader_hint).take().into_iter().collect();
        order.extend(addrs[start..].iter().cloned());
        order.extend(addrs[..start].iter().cloned());
        order
    }

    /// Finds the node that serves sessions and runs the handshake there: a new session,
    /// or a resume of the current one (protocol.md 4.8, "Cluster mode"). One round tries
    /// each address once and follows the NOTLEADER redirects met on the way (at most
    /// `max_redirects`); while nodes answer NOTLEADER (an election, or a leader that
    /// cannot be reached yet) rounds are repeated with short pauses until `deadline`.
    /// Errors that another node would repeat (NOSESSION, credentials, versions) end the
    /// search at once.
    async fn open_any(&self, deadline: Instant) -> Result<Opened> {
        let resume = self.session().map(|s| s.secret);
        let timeout_ms = self.cfg.session_timeout.map_or(0, |t| {
            u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1)
        });
        let auth = self
            .cfg
            .auth
            .as_ref()
            .map(|(u, p)| (u.as_bytes(), p.as_bytes()));
        let hello = conn::hello(timeout_ms, resume, self.cfg.name.as_bytes(), auth);
        let mut shutdown = self.shutdown.subscribe();
        let mut pause = self.cfg.backoff_min.max(Duration::from_millis(10));
        loop {
            let mut queue: VecDeque<String> = self.candidates().into();
            let mut tried: HashSet<String> = HashSet::new();
            let mut hops = 0;
            let mut last = Error::Disconnected;
            let mut refused: Option<Error> = None;
            while let Some(addr) = queue.pop_front() {
                if !tried.insert(addr.clone()) {
                    continue;
                }
                match conn::open(&addr, &hello, self.cfg.connect_timeout, self.tls.as_ref()).await {
                    Ok((stream, ok, rest)) => return Ok((stream, ok, rest, addr)),
                    Err(Error::NotLeader { message, leader }) => {
                        debug!(%addr, ?leader, "not the leader");
                        if let Some(l) = &leader {
                            if hops < self.cfg.max_redirects && !tried.contains(l) {
                                hops += 1;
                                queue.push_front(l.clone());
                            }
                        }
                        refused = Some(Error::NotLeader { message, leader });
                    }
                    // The leader lost its leadership while opening the session: as if
                    // no leader were known (a session it may have opened ends unused).
                    Err(e @ Error::Server { .. }) if e.is_uncertain() => {
                        debug!(%addr, error = %e, "uncertain handshake");
                        refused = Some(e);
                    }
                    Err(
                        e @ (Error::NoSession { .. }
                        | Error::NoAuth { .. }
                        | Error::WrongPass { .. }
                        | Error::NoProto { .. }),
                    ) => return Err(e),
                    Err(e) => {
                        debug!(%addr, error = %e, "connection attempt failed");
                        last = e;
                    }
                }
            }
            // Nobody answered as the leader. Only when some node is there (it said
            // NOTLEADER) is a leader worth waiting for.
            let Some(refused) = refused else {
                return Err(last);
            };
            if Instant::now() + pause > deadline {
                return Err(refused);
            }
            // Jitter: somewhere in [pause/2, pause].
            let ms = pause.as_millis().max(2) as u64;
            let nap = Duration::from_millis(rand::random_range(ms / 2..=ms));
            debug!(?nap, "no leader reached yet; trying again");
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = shutdown.wait_for(|s| *s) => return Err(Error::Closed),
            }
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Makes a handshaken stream the client's connection.
    fn install(self: &Arc<Self>, (stream, hello, leftover, addr): Opened) -> Arc<Link> {
        let gen = self.gens.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&self.session) = Some(SessionInfo {
            id: hello.session,
            secret: hello.secret,
            timeout: Duration::from_millis(u64::from(hello.session_timeout_ms)),
            default_ttl: Duration::from_millis(u64::from(hello.default_ttl_ms.max(1))),
            max_key_len: (hello.max_key_len as usize).min(MAX_STR),
        });
        *lock(&self.last_addr) = Some(addr.clone());
        let link = conn::start(Arc::downgrade(self), stream, leftover, gen, addr);
        tokio::spawn(keepalive(
            Arc::downgrade(self),
            link.clone(),
            Duration::from_millis(u64::from(hello.session_timeout_ms.max(100))),
        ));
        self.link.send_replace(Some(link.clone()));
        link
    }

    /// A follower answered (NOTLEADER) or the leader lost its leadership (UNCERTAIN) on
    /// `link`: remember the leader it names and drop the connection, so that the session
    /// is resumed where changes are served.
    fn leave_follower(&self, link: &Link, e: &ErrorReply) {
        if let Some(leader) = named_leader(e) {
            *lock(&self.leader_hint) = Some(leader);
        }
        if !link.is_closed() {
            debug!(addr = %link.addr, code = ?e.code, "leaving a node that does not lead");
            link.close();
        }
    }

    /// The connection, waiting (bounded) for one while reconnecting.
    async fn link(&self) -> Result<Arc<Link>> {
        if let Some(link) = self.link.borrow().as_ref() {
            if !link.is_closed() {
                return Ok(link.clone());
            }
        }
        if self.closed() {
            return Err(Error::Closed);
        }
        let mut rx = self.link.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        let wait = async {
            loop {
                if let Some(link) = rx.borrow_and_update().as_ref() {
                    if !link.is_closed() {
                        return Ok(link.clone());
                    }
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return Err(Error::Closed) },
                    _ = shutdown.wait_for(|s| *s) => return Err(Error::Closed),
                }
            }
        };
        tokio::time::timeout(self.cfg.reconnect_wait, wait)
            .await
            .map_err(|_| Error::Disconnected)?
    }

    /// Sends a request and waits for its reply; an ERROR reply is an `Err`. A NOTLEADER
    /// (nothing was done) sends it again once the client has moved to the leader, a few
    /// times at most.
    pub(crate) async fn call(&self, req: Request<'_>) -> Result<Response> {
        let mut redirects = 0;
        loop {
            match self.call_once(&req).await {
                Err(Error::NotLeader { .. }) if redirects < self.cfg.max_redirects.max(1) => {
                    redirects += 1;
                }
                other => return other,
            }
        }
    }

    async fn call_once(&self, req: &Request<'_>) -> Result<Response> {
        self.call_id(self.next_id(), req).await
    }

    /// Sends a request with id `id` and waits for its reply (see [`Self::call`]).
    pub(crate) async fn call_id(&self, id: u32, req: &Request<'_>) -> Result<Response> {
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        loop {
            let link = self.link().await?;
            let alone = {
                let mut pending = lock(&self.pending);
                pending.insert(
                    id,
                    Pending::Call {
                        tx: tx.take().expect("tx is put back before retrying"),
                        gen: link.gen,
                        push: matches!(req, Request::Convert(_)),
                    },
                );
                pending.len() == 1
            };
            if link.send(alone, |out| req.encode(id, out)).is_ok() {
                break;
            }
            // Closed under our feet: take the entry back unless the supervisor already
            // failed it (then the receiver holds that error).
            match lock(&self.pending).remove(&id) {
                Some(Pending::Call { tx: t, .. }) => tx = Some(t),
                _ => break,
            }
        }
        let mut guard = RemoveOnDrop {
            inner: self,
            id,
            armed: true,
        };
        let reply = rx.await;
        guard.armed = false;
        match reply {
            // The leader lost its leadership before the outcome was known, and closes
            // the connection: as if it had been lost with the request in flight.
            Ok(Ok(Response::Error(e))) if is_uncertain(&e) => Err(Error::Disconnected),
            Ok(Ok(Response::Error(e))) => Err(e.into()),
            Ok(r) => r,
            Err(_) => Err(Error::Disconnected),
        }
    }

    /// Sends an ACQUIRE; the returned call completes with its outcome.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        key: Bytes,
        spec: AcquireSpec,
    ) -> Result<AcquireCall> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        let sent = Instant::now();
        loop {
            let link = self.link().await?;
            let alone = {
                let mut pending = lock(&self.pending);
                pending.insert(
                    id,
                    Pending::Acquire(AcquireWait {
                        tx: tx.take(),
                        key: key.clone(),
                        spec: spec.clone(),
                        sent,
                        gen: link.gen,
                        queued: false,
                        abandoned: false,
                    }),
                );
                pending.len() == 1
            };
            if link
                .send(alone, |out| spec.encode(&key, id, spec.wait_ms, out))
                .is_ok()
            {
                break;
            }
            match lock(&self.pending).remove(&id) {
                Some(Pending::Acquire(w)) => tx = w.tx,
                _ => break,
            }
        }
        Ok(AcquireCall {
            inner: self.clone(),
            id,
            key,
            rx: Some(rx),
        })
    }

    /// Sends a request whose reply nobody waits for. A RELEASE is tracked: made while
    /// disconnected, refused by a follower or lost with its connection, it is sent again
    /// after the session is resumed.
    pub(crate) fn fire(&self, req: Request<'_>) {
        let id = self.next_id();
        let release = match req {
            Request::Release { key } => Some(Bytes::copy_from_slice(key)),
            _ => None,
        };
        let link = self.link.borrow().clone();
        if let Some(link) = link.filter(|l| !l.is_closed()) {
            if let Some(key) = &release {
                lock(&self.pending).insert(
                    id,
                    Pending::Release {
                        key: key.clone(),
                        gen: link.gen,
                    },
                );
            }
            if link.send(false, |out| req.encode(id, out)).is_ok() {
                return;
            }
            if lock(&self.pending).remove(&id).is_none() {
                return; // the supervisor already moved it to the deferred ones
            }
        }
        if let Some(key) = release {
            lock(&self.deferred).push(key);
        }
    }

    /// Handles one frame from the server.
    pub(crate) fn dispatch(&self, link: &Link, id: u32, msg: ServerMessage) {
        match msg {
            ServerMessage::Response(r) => {
                // Not the leader (any more): nothing was done, or (UNCERTAIN) the outcome
                // is unknown. Either way the session is resumed on the leader.
                let refusal = match &r {
                    Response::Error(e) if e.code == ErrorCode::NotLeader || is_uncertain(e) => {
                        Some(e.clone())
                    }
                    _ => None,
                };
                self.complete(link, id, r, refusal.as_ref());
                if let Some(e) = refusal {
                    self.leave_follower(link, &e);
                }
            }
            ServerMessage::Push(push) => match push {
                Push::Granted { token } => {
                    if !self.multi_push(id, Ok(token)) {
                        self.push_outcome(id, Ok(Acquired::Granted(token)))
                    }
                }
                Push::TimedOut => {
                    if !self.multi_push(id, Err(Error::Timeout)) {
                        self.push_outcome(id, Err(Error::Timeout))
                    }
                }
                Push::Cancelled => {
                    if !self.multi_push(id, Err(Error::Cancelled)) {
                        self.push_outcome(id, Err(Error::Cancelled))
                    }
                }
                Push::LeaseLost { reason, token, key } => {
                    self.keeper.lease_lost(&key, token);
                    let _ = self
                        .events
                        .send(SessionEvent::LeaseLost { key, token, reason });
                }
                Push::Watch { key, event } => crate::watch::deliver(self, &key, event),
                Push::Waiting {
                    session,
                    mode,
                    permits,
                    key,
                } => {
                    self.keeper.waiting(&key);
                    let _ = self.events.send(SessionEvent::Waiting {
                        key,
                        session,
                        mode,
                        permits,
                    });
                }
            },
        }
    }

    /// Hands a response to the request waiting for it. `refusal`: it is a NOTLEADER or
    /// an UNCERTAIN, and the client leaves the node.
    fn complete(&self, link: &Link, id: u32, r: Response, refusal: Option<&ErrorReply>) {
        let moved = refusal.is_some();
        let mut pending = lock(&self.pending);
        match pending.get_mut(&id) {
            None => {}
            Some(Pending::Call { push: true, .. })
                if refusal.is_none() && matches!(r, Response::Queued) => {}
            Some(Pending::Call { .. }) => {
                if let Some(Pending::Call { tx, .. }) = pending.remove(&id) {
                    drop(pending);
                    // Closed before the caller hears of it, so that a retry waits for the
                    // next connection; taken out of `pending` before, so that the
                    // supervisor does not fail it as merely disconnected.
                    if let Some(e) = refusal {
                        self.leave_follower(link, e);
                    }
                    let _ = tx.send(Ok(r));
                }
            }
            Some(Pending::Multi(w)) => {
                let outcome = match r {
                    _ if moved => Err(Error::Disconnected),
                    Response::Queued => {
                        w.gen = link.gen;
                        return;
                    }
                    Response::MultiGranted { tokens } => Ok(Some(tokens)),
                    Response::Busy => Ok(None),
                    Response::Error(e) => Err(e.into()),
                    other => {
                        warn!(?other, "unexpected reply to MACQUIRE");
                        Err(Error::Disconnected)
                    }
                };
                if let Some(Pending::Multi(w)) = pending.remove(&id) {
                    drop(pending);
                    if let Some(tx) = w.tx {
                        let _ = tx.send(outcome);
                    }
                }
            }
            Some(Pending::Release { .. }) => {
                if let Some(Pending::Release { key, .. }) = pending.remove(&id) {
                    drop(pending);
                    if moved {
                        lock(&self.deferred).push(key);
                    }
                }
            }
            Some(Pending::Acquire(w)) => {
                if moved {
                    // Settled after the resume: looked up, or sent again.
                    w.gen = 0;
                    return;
                }
                let outcome = match r {
                    Response::Queued => {
                        w.queued = true;
                        w.gen = link.gen;
                        return;
                    }
                    Response::Granted { token } => Ok(Acquired::Granted(token)),
                    Response::Busy => Ok(Acquired::Busy),
                    Response::Error(e) => Err(e.into()),
                    other => {
                        warn!(?other, "unexpected reply to ACQUIRE");
                        Err(Error::Disconnected)
                    }
                };
                if let Some(Pending::Acquire(w)) = pending.remove(&id) {
                    drop(pending);
                    self.finish_acquire(w, outcome);
                }
            }
        }
    }

    /// A push for a queued MACQUIRE: one token per key, then the outcome. False when
    /// `id` is not one.
    fn multi_push(&self, id: u32, push: Result<u64>) -> bool {
        let mut pending = lock(&self.pending);
        let Some(Pending::Multi(w)) = pending.get_mut(&id) else {
            return false;
        };
        let outcome = match push {
            Ok(token) => {
                w.tokens.push(token);
                if w.tokens.len() < w.keys {
                    return true;
                }
                Ok(Some(std::mem::take(&mut w.tokens)))
            }
            Err(e) => Err(e),
        };
        if let Some(Pending::Multi(w)) = pending.remove(&id) {
            drop(pending);
            if let Some(tx) = w.tx {
                let _ = tx.send(outcome);
            }
        }
        true
    }

    /// Sends a MACQUIRE and waits for its outcome: the tokens in key order, or None when
    /// a try-lock found a key busy. Not carried over a lost connection: it fails with
    /// [`Error::Disconnected`] (what was granted meanwhile is released when the session
    /// ends, or with [`Client::release_many`]).
    pub(crate) async fn acquire_multi(
        self: &Arc<Self>,
        req: turnstile_proto::MultiAcquire<'_>,
    ) -> Result<Option<Vec<u64>>> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        let link = self.link().await?;
        let alone = {
            let mut pending = lock(&self.pending);
            pending.insert(
                id,
                Pending::Multi(MultiWait {
                    tx: Some(tx),
                    keys: req.items.len(),
                    tokens: Vec::new(),
                    gen: link.gen,
                }),
            );
            pending.len() == 1
        };
        if link
            .send(alone, |out| Request::MultiAcquire(req).encode(id, out))
            .is_err()
        {
            lock(&self.pending).remove(&id);
            return Err(Error::Disconnected);
        }
        match rx.await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Disconnected),
        }
    }

    fn push_outcome(&self, id: u32, outcome: Result<Acquired>) {
        let w = {
            let mut pending = lock(&self.pending);
            match pending.get(&id) {
                Some(Pending::Call { push: true, .. }) => {
                    if let Some(Pending::Call { tx, .. }) = pending.remove(&id) {
                        drop(pending);
                        let _ = tx.send(outcome.map(|a| match a {
                            Acquired::Granted(token) => Response::Granted { token },
                            Acquired::Busy => Response::Busy,
                        }));
                    }
                    return;
                }
                Some(Pending::Acquire(_)) => match pending.remove(&id) {
                    Some(Pending::Acquire(w)) => w,
                    _ => return,
                },
                _ => return,
            }
        };
        self.finish_acquire(w, outcome);
    }

    /// Completes an ACQUIRE: hands the outcome to its future, or, when the future is
    /// gone, gives back what was granted.
    fn finish_acquire(&self, w: AcquireWait, outcome: Result<Acquired>) {
        let granted = matches!(outcome, Ok(Acquired::Granted(_)));
        let delivered = match w.tx {
            Some(tx) if !w.abandoned => tx.send(outcome).is_ok(),
            _ => false,
        };
        if granted && !delivered {
            self.fire(Request::Release { key: &w.key });
        }
    }

    /// Fails every plain request sent on connection `gen` (their replies are lost); the
    /// RELEASEs of dropped guards among them are sent again after the resume.
    fn fail_calls(&self, gen: u64) {
        let mut failed = Vec::new();
        {
            let mut pending = lock(&self.pending);
            let ids: Vec<u32> = pending
                .iter()
                .filter(|(_, p)| match p {
                    Pending::Call { gen: g, .. } | Pending::Release { gen: g, .. } => *g <= gen,
                    Pending::Multi(w) => w.gen <= gen,
                    Pending::Acquire(_) => false,
                })
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                match pending.remove(&id) {
                    Some(Pending::Call { tx, .. }) => failed.push(tx),
                    Some(Pending::Release { key, .. }) => lock(&self.deferred).push(key),
                    Some(Pending::Multi(w)) => {
                        if let Some(tx) = w.tx {
                            let _ = tx.send(Err(Error::Disconnected));
                        }
                    }
                    _ => {}
                }
            }
        }
        for tx in failed {
            let _ = tx.send(Err(Error::Disconnected));
        }
    }

    /// The session ended on the server: everything it held or queued is gone.
    fn session_lost(&self) {
        let old = lock(&self.session).take();
        let waits: Vec<AcquireWait> = {
            let mut pending = lock(&self.pending);
            let ids: Vec<u32> = pending
                .iter()
                .filter(|(_, p)| matches!(p, Pending::Acquire(_)))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| match pending.remove(&id) {
                    Some(Pending::Acquire(w)) => Some(w),
                    _ => None,
                })
                .collect()
        };
        for w in waits {
            if let Some(tx) = w.tx {
                let _ = tx.send(Err(Error::SessionLost));
            }
        }
        lock(&self.deferred).clear();
        self.keeper.lose_all(Lost::SessionEnded);
        if let Some(old) = old {
            warn!(
                session = old.id,
                "the session ended before it could be resumed"
            );
            let _ = self
                .events
                .send(SessionEvent::SessionLost { session: old.id });
        }
    }

    /// After a resume: settles the ACQUIREs whose outcome may have been lost with an
    /// earlier connection (protocol.md 4.8, "Resuming: outcomes lost with a connection"),
    /// by looking at their keys: still queued, it goes on waiting for its push; held by
    /// this session, it was granted (with the holder's token); neither, it is over if it
    /// had been queued, and sent again (same request id, what is left of its wait) if it
    /// was never answered.
    async fn resync(self: Arc<Self>, gen: u64) {
        let stale: Vec<(u32, Bytes)> = lock(&self.pending)
            .iter()
            .filter_map(|(id, p)| match p {
                Pending::Acquire(w) if w.gen < gen => Some((*id, w.key.clone())),
                _ => None,
            })
            .collect();
        let Some(me) = self.session().map(|s| s.id) else {
            return;
        };
        for (id, key) in stale {
            let state = match self.call(Request::Inspect { key: &key }).await {
                Ok(Response::Inspect(state)) => state,
                // Lost again: the next resume looks again.
                _ => return,
            };
            let waiting = state
                .as_ref()
                .is_some_and(|s| s.waiters.iter().any(|w| w.session == me));
            let held = state
                .as_ref()
                .and_then(|s| s.holders.iter().find(|h| h.session == me).map(|h| h.token));
            let mut pending = lock(&self.pending);
            let Some(Pending::Acquire(w)) = pending.get_mut(&id) else {
                continue; // settled by a push meanwhile
            };
            if w.gen >= gen {
                continue; // answered on this connection meanwhile
            }
            if waiting {
                w.queued = true;
                w.gen = gen;
                let abandoned = w.abandoned;
                drop(pending);
                if abandoned {
                    self.fire(Request::Cancel { target: id });
                }
                continue;
            }
            let resend = held.is_none() && !w.queued && !w.abandoned;
            if resend {
                let link = self.link.borrow().clone();
                let Some(link) = link.filter(|l| l.gen == gen && !l.is_closed()) else {
                    return; // lost again: the next resume looks again
                };
                let waited = u32::try_from(w.sent.elapsed().as_millis()).unwrap_or(u32::MAX);
                let wait_ms = w.spec.wait_ms.map(|ms| ms.saturating_sub(waited));
                let (spec, key) = (w.spec.clone(), w.key.clone());
                w.gen = gen;
                drop(pending);
                debug!(id, ?key, "sending an unanswered ACQUIRE again");
                let _ = link.send(false, |out| spec.encode(&key, id, wait_ms, out));
                continue;
            }
            let ours = w.queued || !self.keeper.holds_key(&key);
            let Some(Pending::Acquire(w)) = pending.remove(&id) else {
                continue;
            };
            drop(pending);
            let outcome = match held {
                Some(token) if ours => Ok(Acquired::Granted(token)),
                // Held, but so was the key before (a reentrant hold): whether this
                // request added a level cannot be told.
                Some(_) => Err(Error::Disconnected),
                None if w
                    .spec
                    .wait_ms
                    .is_some_and(|ms| w.sent.elapsed() >= Duration::from_millis(u64::from(ms))) =>
                {
                    Err(Error::Timeout)
                }
                None => Err(Error::Disconnected),
            };
            self.finish_acquire(w, outcome);
        }
    }

    /// Sends the RELEASEs kept while disconnected, except for keys a live guard holds
    /// again by now (a release would take that hold, or a level of it).
    fn flush_deferred(&self) {
        let keys = std::mem::take(&mut *lock(&self.deferred));
        for key in keys {
            if !self.keeper.holds_key(&key) {
                self.fire(Request::Release { key: &key });
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone (client and guards): end the session now rather than
        // let it wait out its timeout.
        self.shutdown.send_replace(true);
        if let Some(link) = self.link.borrow().as_ref() {
            let id = self.next_id();
            let _ = link.send(false, |out| {
                Request::Bye { end_session: true }.encode(id, out)
            });
            link.close_after_flush();
        }
    }
}

/// Removes a pending request whose future was dropped.
struct RemoveOnDrop<'a> {
    inner: &'a Inner,
    id: u32,
    armed: bool,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.inner.pending).remove(&self.id);
        }
    }
}

/// An ACQUIRE in flight. Dropping it before it completes cancels the request on the
/// server (or releases the hold, if the grant crossed the cancel).
pub(crate) struct AcquireCall {
    inner: Arc<Inner>,
    pub(crate) id: u32,
    key: Bytes,
    rx: Option<oneshot::Receiver<Result<Acquired>>>,
}

impl AcquireCall {
    pub(crate) async fn outcome(mut self) -> Result<Acquired> {
        let rx = self.rx.as_mut().expect("present until completed");
        let out = rx.await.unwrap_or(Err(Error::Disconnected));
        self.rx = None;
        out
    }
}

impl Drop for AcquireCall {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut pending = lock(&self.inner.pending);
        match pending.get_mut(&self.id) {
            Some(Pending::Acquire(w)) => {
                w.abandoned = true;
                w.tx = None;
                drop(pending);
                // Whether or not the server has queued it yet (frames are applied in
                // order, so the CANCEL finds it queued if it ever was); a grant that
                // crosses the cancel is released when it arrives.
                self.inner.fire(Request::Cancel { target: self.id });
            }
            _ => {
                drop(pending);
                // Completed but never looked at: give back a grant.
                if let Ok(Ok(Acquired::Granted(_))) = rx.try_recv() {
                    self.inner.fire(Request::Release { key: &self.key });
                }
            }
        }
    }
}

/// Pings every quarter of the session timeout (the server ends a session that sends
/// nothing for the timeout), and drops a connection that stayed silent for half of it.
async fn keepalive(inner: Weak<Inner>, link: Arc<Link>, timeout: Duration) {
    let every = timeout / 4;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = link.closed() => return,
        }
        if link.silent_for() > timeout / 2 {
            debug!("no reply from the server: reconnecting");
            link.close();
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let id = inner.next_id();
        let _ = link.send(false, |out| Request::Ping(b"").encode(id, out));
    }
}

/// Watches the connection; when it is lost, reconnects with backoff and resumes the
/// session (or starts a new one if it ended).
async fn supervise(weak: Weak<Inner>, mut link: Arc<Link>) {
    let mut shutdown = match weak.upgrade() {
        Some(inner) => inner.shutdown.subscribe(),
        None => return,
    };
    loop {
        tokio::select! {
            _ = link.closed() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        {
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed() {
                return;
            }
            inner.link.send_replace(None);
            inner.fail_calls(link.gen);
            let _ = inner.events.send(SessionEvent::Disconnected);
            info!("connection lost; reconnecting");
        }
        let mut delay = match weak.upgrade() {
            Some(inner) => inner.cfg.backoff_min,
            None => return,
        };
        link = loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed() {
                return;
            }
            match inner.open_any(Instant::now() + inner.cfg.leader_wait).await {
                Ok(opened) => {
                    let resumed = opened.1.resumed;
                    if !resumed && inner.session().is_some() {
                        // We asked to resume and got a new session: the old one ended.
                        inner.session_lost();
                    }
                    let session = opened.1.session;
                    let addr = opened.3.clone();
                    let link = inner.install(opened);
                    let _ = inner
                        .events
                        .send(SessionEvent::Reconnected { resumed, session });
                    if resumed {
                        inner.flush_deferred();
                        tokio::spawn(inner.clone().resync(link.gen));
                    }
                    // Watches belong to a connection: start them again on this one (each
                    // sends the key's state first).
                    crate::watch::rewatch(&inner, &link);
                    info!(resumed, session, %addr, "reconnected");
                    break link;
                }
                Err(Error::NoSession { .. }) => {
                    inner.session_lost();
                    continue;
                }
                Err(e) => {
                    debug!(error = %e, ?delay, "reconnect failed");
                    let max = inner.cfg.backoff_max;
                    drop(inner);
                    // Full jitter: somewhere in [delay/2, delay].
                    let ms = delay.as_millis().max(2) as u64;
                    let pause = Duration::from_millis(rand::random_range(ms / 2..=ms));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                    delay = (delay * 2).min(max);
                }
            }
        };
    }
}

/// A client of a Turnstile server speaking the binary protocol.
///
/// One connection carries every request of the client (and of all its clones and lock
/// guards) at once; replies may come in any order. When the connection is lost the
/// client reconnects with exponential backoff and resumes its session, whose holds and
/// queued requests survive for the session timeout.
///
/// # Example
/// ```no_run
/// # async fn demo() -> turnstile_client::Result<()> {
/// use std::time::Duration;
/// use turnstile_client::Client;
///
/// let client = Client::connect("127.0.0.1:7379").await?;
/// let guard = client
///     .lock("orders/42")
///     .ttl(Duration::from_secs(10))
///     .wait(Duration::from_secs(5))
///     .acquire()
///     .await?;
/// println!("holding orders/42 with fencing token {}", guard.token());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.cfg.addrs)
            .field("session", &self.session_id())
            .finish()
    }
}

impl Client {
    /// Connects with the default settings.
    pub async fn connect(addrs: impl ToAddrs) -> Result<Client> {
        Builder::default().addrs(addrs).connect().await
    }

    /// A builder for other settings.
    ///
    /// ```no_run
    /// # async fn demo() -> turnstile_client::Result<()> {
    /// use std::time::Duration;
    /// let client = turnstile_client::Client::builder()
    ///     .addrs(["10.0.0.1:7379", "10.0.0.2:7379"])
    ///     .name("billing-worker")
    ///     .password("s3cret")
    ///     .session_timeout(Duration::from_secs(15))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts a lock request for `key` (see [`LockBuilder`]).
    pub fn lock(&self, key: impl AsRef<[u8]>) -> LockBuilder {
        LockBuilder::new(self.clone(), Bytes::copy_from_slice(key.as_ref()))
    }

    /// The session's events (lease lost, someone waiting, reconnects). Each call gives a
    /// new receiver that sees the events from then on.
    pub fn events(&self) -> Events {
        Events {
            rx: self.inner.events.subscribe(),
        }
    }

    /// The session's public id (what INSPECT shows), 0 while reconnecting after the
    /// session was lost.
    pub fn session_id(&self) -> u64 {
        self.inner.session().map_or(0, |s| s.id)
    }

    /// The session timeout the server granted.
    pub fn session_timeout(&self) -> Duration {
        self.inner.session().map_or(Duration::ZERO, |s| s.timeout)
    }

    /// The address (`host:port`) of the server the client is connected to now: in a
    /// cluster, the leader (one of the configured addresses, or the one a redirect named).
    /// None while reconnecting.
    pub fn server_addr(&self) -> Option<String> {
        self.inner
            .link
            .borrow()
            .as_ref()
            .filter(|l| !l.is_closed())
            .map(|l| l.addr.clone())
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner
            .link
            .borrow()
            .as_ref()
            .is_some_and(|l| !l.is_closed())
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<()> {
        match self.inner.call(Request::Ping(b"")).await? {
            Response::Pong(_) => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// A key's kind, holders and waiters; None when it has none.
    pub async fn inspect(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyState>> {
        let key = key.as_ref();
        check_key(key)?;
        match self.inner.call(Request::Inspect { key }).await? {
            Response::Inspect(state) => Ok(state),
            _ => Err(unexpected()),
        }
    }

    /// A key's state with the value of each holder ([`KeyState::values`]); None when the
    /// key has no holders or waiters.
    pub async fn inspect_values(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyState>> {
        let key = key.as_ref();
        check_key(key)?;
        match self.inner.call(Request::InspectValues { key }).await? {
            Response::Inspect(state) => Ok(state),
            _ => Err(unexpected()),
        }
    }

    /// The values the holders of `key` attached to their holds, one per holder in grant
    /// order (an empty value: none); empty when nothing holds the key.
    pub async fn get_value(&self, key: impl AsRef<[u8]>) -> Result<Vec<HolderValue>> {
        let key = key.as_ref();
        check_key(key)?;
        match self.inner.call(Request::GetValue { key }).await? {
            Response::Value(holders) => Ok(holders),
            _ => Err(unexpected()),
        }
    }

    /// Replaces the value attached to this session's hold on `key` (empty: clears it).
    /// [`Error::NotHeld`] if the session holds nothing there.
    pub async fn set_value(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        check_key(key)?;
        check_key(value)?;
        match self.inner.call(Request::SetValue { key, value }).await? {
            Response::Ok => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// Streams the changes of `key`'s holders (see [`crate::Watch`]): its state first,
    /// then every grant, release, expiry and value change. The watch follows the client
    /// across reconnects (it sends the state again after each); dropping it ends it.
    pub async fn watch(&self, key: impl AsRef<[u8]>) -> Result<crate::Watch> {
        crate::watch::start(&self.inner, Bytes::copy_from_slice(key.as_ref())).await
    }

    /// Keys with holders or waiters matching a Redis glob pattern (`*` for all).
    pub async fn locks(&self, pattern: impl AsRef<[u8]>) -> Result<Vec<Bytes>> {
        let pattern = pattern.as_ref();
        check_key(pattern)?;
        match self
            .inner
            .call(Request::Locks {
                pattern: Some(pattern),
                count: 0,
            })
            .await?
        {
            Response::Locks { keys, .. } => Ok(keys),
            _ => Err(unexpected()),
        }
    }

    /// Why a session or queued request waits: the holders and queued requests it waits
    /// for, transitively, breadth first (at most the server's default of 1000 edges;
    /// `truncated` says when more were left out). `ExplainTarget::OwnSession` explains
    /// this client's session, `Session(n)` another one, `Request(id)` a queued request by
    /// the server's id (as edges show it). An error when a named request is not queued.
    pub async fn explain(&self, target: ExplainTarget) -> Result<Explanation> {
        match self
            .inner
            .call(Request::Explain { target, count: 0 })
            .await?
        {
            Response::Explain(ex) => Ok(ex),
            _ => Err(unexpected()),
        }
    }

    /// The server's wait-for graph: every waiter -> blocker edge, at most `count` of them
    /// (0: the server's default of 1000; the server caps it at 100000). Render it for
    /// Graphviz with [`WaitGraph::to_dot`].
    pub async fn wait_graph(&self, count: u32) -> Result<WaitGraph> {
        match self.inner.call(Request::WaitGraph { count }).await? {
            Response::WaitGraph(g) => Ok(g),
            _ => Err(unexpected()),
        }
    }

    /// The server's INFO text (a section name, or "" for all).
    pub async fn info(&self, section: &str) -> Result<String> {
        match self
            .inner
            .call(Request::Info {
                section: section.as_bytes(),
            })
            .await?
        {
            Response::Info(text) => Ok(String::from_utf8_lossy(&text).into_owned()),
            _ => Err(unexpected()),
        }
    }

    /// Ends the session now (its holds are released, its queued requests cancelled) and
    /// stops the client. Guards still alive report [`Lost::SessionEnded`].
    pub async fn close(self) -> Result<()> {
        let link = self.inner.link().await;
        let res = match link {
            Ok(_) => self
                .inner
                .call(Request::Bye { end_session: true })
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        self.inner.keeper.lose_all(Lost::SessionEnded);
        self.inner.shutdown.send_replace(true);
        if let Some(link) = self.inner.link.borrow().as_ref() {
            link.close_after_flush();
        }
        res
    }

    /// Test hook: drops the connection as a network failure would (the client then
    /// reconnects and resumes the session).
    #[doc(hidden)]
    pub fn break_connection(&self) {
        if let Some(link) = self.inner.link.borrow().as_ref() {
            link.close();
        }
    }
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_STR {
        return Err(Error::InvalidArgument("keys are at most 65535 bytes"));
    }
    Ok(())
}

fn unexpected() -> Error {
    Error::Protocol(turnstile_proto::DecodeError::Malformed {
        opcode: 0,
        reason: "unexpected reply type",
    })
}
