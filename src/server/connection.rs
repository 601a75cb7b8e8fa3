//! One client connection: on a TLS port the handshake first, then tell text mode from
//! binary by the first byte (binary clients go to [`super::binary`]); in text mode read, decode every complete command, apply, write
//! all replies with one write; park on a blocking ACQUIRE until the lock table grants it or
//! its WAIT runs out; end the session when the connection ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use smallvec::SmallVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tracing::debug;

use super::cluster::{Cluster, Refusal};
use super::io::Stream;
use super::watches::{Overflow, Watcher};
use super::Shared;
use crate::cmd::{self, ConnState, Flow};
use crate::durable::command::{Applied, Command};
use crate::durable::{SessionKind, Ticket};
use crate::engine::{Event, NotHeld, SessionId};
use crate::protocol::binary::MAGIC;
use crate::protocol::resp::{arg, parse_command, Parsed};
use crate::protocol::{Proto, ReplyWriter};

/// Refuses a connection over a limit: one error line, then close. On a TLS port the
/// line goes out after the handshake (bounded by `--auth-timeout-ms`), or not at all.
pub(super) async fn refuse(shared: &Shared, mut stream: TcpStream, line: &[u8]) {
    shared
        .stats
        .rejected_connections
        .fetch_add(1, Ordering::Relaxed);
    match &shared.tls {
        None => {
            let _ = stream.write_all(line).await;
        }
        Some(acceptor) => {
            let timeout = std::time::Duration::from_millis(shared.config.auth_timeout_ms);
            if let Ok(Ok(mut tls)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                let _ = tls.send(line).await;
            }
        }
    }
}

/// Serves one accepted connection to its end.
pub(super) async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(_permit) = permit else {
        refuse(&shared, stream, b"-LIMIT max number of clients reached\r\n").await;
        return;
    };
    // --auth-timeout-ms counts from here: the TLS handshake, the first bytes, the binary
    // handshake and AUTH all fall within it.
    let auth_deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(shared.config.auth_timeout_ms);
    let _ = stream.set_nodelay(true);
    if shared.config.tcp_keepalive_secs > 0 {
        let idle = std::time::Duration::from_secs(shared.config.tcp_keepalive_secs);
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(std::time::Duration::from_secs(10))
            .with_retries(3);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka);
    }
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .total_connections
        .fetch_add(1, Ordering::Relaxed);
    match shared.tls.clone() {
        None => detect(shared, stream, peer, stop, auth_deadline).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                r = tokio::time::timeout_at(auth_deadline, acceptor.accept(stream)) => r,
                _ = stop.changed() => {
                    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            };
            match handshake {
                Ok(Ok(tls)) => detect(shared, tls, peer, stop, auth_deadline).await,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Tells the mode by the first byte (after TLS, on the decrypted stream) and serves it.
async fn detect<S: Stream>(
    shared: Arc<Shared>,
    mut stream: S,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    auth_deadline: tokio::time::Instant,
) {
    // Protocol detection: the first byte of a binary client is MAGIC[0] (0xF5), which no
    // RESP array ('*') and no inline command typed as UTF-8 text can start with.
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let first = tokio::select! {
        read = stream.read_buf(&mut inbuf) => read,
        // A connection that never says anything holds a slot for nothing.
        _ = tokio::time::sleep_until(auth_deadline) => Ok(0),
        _ = stop.changed() => Ok(0),
    };
    if matches!(first, Ok(0) | Err(_)) {
        shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    if inbuf[0] == MAGIC[0] {
        super::binary::serve(shared.clone(), stream, peer, stop, inbuf, auth_deadline).await;
        shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    serve_text(shared, stream, peer, stop, inbuf, auth_deadline).await;
}

/// Serves a text-mode connection whose first bytes are in `inbuf`.
async fn serve_text<S: Stream>(
    shared: Arc<Shared>,
    mut stream: S,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    mut inbuf: BytesMut,
    auth_deadline: tokio::time::Instant,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    // In cluster mode the session is opened (proposed) with the first state change:
    // until then the connection has none (id 0), and a follower never opens one.
    let session = if shared.cluster.is_some() {
        SessionId(0)
    } else {
        let (session, _) = shared
            .store
            .open_session(SessionKind::Text, shared.clock.now_ms());
        shared.router.register(session, tx.clone(), false);
        session
    };
    debug!(%peer, %session, "connection opened");

    // The user a client certificate names (--tls-cert-users), else the default user,
    // authenticated already if it needs no password.
    let (user, authed) = match super::io::certificate_user(&shared, &stream) {
        Some(user) => (user, true),
        None => {
            let user = shared.acl.default_user().clone();
            let authed = user.needs_no_auth();
            (user, authed)
        }
    };
    let mut conn = ConnState::new(session, peer, user, authed);
    let limits = shared.config.frame_limits();
    let mut outbuf = BytesMut::with_capacity(16 * 1024);
    let mut args = Vec::with_capacity(16);
    let mut scratch = Vec::new();
    let mut events = Vec::new();
    // While parked, input is buffered up to this much so a disconnect is still noticed.
    let park_cap = limits.max_request.saturating_add(64 * 1024);

    // The log index the replies in `outbuf` wait for.
    let mut ticket: Ticket = 0;
    // Set when the server stops: with a log the session then outlives this process (it
    // comes back after the restart and ends after the session timeout).
    let mut stopping = false;
    // When the bytes of the current batch arrived (acquire latency counts from here).
    let mut arrived = std::time::Instant::now();
    'conn: loop {
        let now = shared.clock.now_ms();
        let mut processed = 0u64;
        loop {
            let parsed = parse_command(&inbuf, &mut args, &mut scratch, &limits);
            let len = match parsed {
                Ok(Parsed::Command { len }) => len,
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, error = %e, "protocol error");
                    let mut w = ReplyWriter {
                        out: &mut outbuf,
                        proto: conn.proto,
                    };
                    w.error(&format!("ERR Protocol error: {e}"));
                    let _ = stream.send(&outbuf).await;
                    break 'conn;
                }
            };
            let flow = if args.is_empty() {
                Flow::Continue
            } else {
                processed += 1;
                let mut argv: SmallVec<[&[u8]; 8]> = SmallVec::new();
                for r in &args {
                    argv.push(arg(&inbuf, &scratch, r));
                }
                let mut ctx = cmd::Ctx {
                    shared: &shared,
                    conn: &mut conn,
                    now,
                    out: ReplyWriter {
                        out: &mut outbuf,
                        proto: Proto::Resp2,
                    },
                    events: &mut events,
                    ticket: 0,
                    read_ok: false,
                };
                ctx.out.proto = ctx.conn.proto;
                let flow = cmd::dispatch(&mut ctx, &argv);
                ticket = ticket.max(ctx.ticket);
                match flow {
                    Flow::Replicate(op) => {
                        let mut io = Io {
                            conn: &mut conn,
                            out: &mut outbuf,
                            events: &mut events,
                            tx: &tx,
                        };
                        replicate(&shared, &mut io, op, &argv, now).await
                    }
                    flow => flow,
                }
            };
            inbuf.advance(len);
            if !events.is_empty() {
                shared.router.route(&mut events);
            }
            match flow {
                Flow::Continue | Flow::Replicate(_) => {}
                Flow::Close => {
                    if durable(&shared, ticket, &mut outbuf, conn.proto).await {
                        let _ = stream.send(&outbuf).await;
                    }
                    break 'conn;
                }
                Flow::Park {
                    request,
                    since,
                    keys,
                } => {
                    // Replies to the commands before the ACQUIRE go out now.
                    if !outbuf.is_empty() {
                        let ok = durable(&shared, ticket, &mut outbuf, conn.proto).await;
                        if stream.send(&outbuf).await.is_err() || !ok {
                            break 'conn;
                        }
                        outbuf.clear();
                        conn.answered.flush(&shared.stats, conn.session.0, arrived);
                    }
                    // A multi-lock's grant is one event per key, all sent together.
                    let mut tokens = Vec::with_capacity(keys.max(1));
                    let parked_watcher = conn.watcher.clone();
                    let granted = loop {
                        tokens.clear();
                        tokio::select! {
                            ev = rx.recv() => match ev {
                                Some(Event::Granted { request: r, token, .. }) if r == request => {
                                    tokens.push(token);
                                    while tokens.len() < keys {
                                        match rx.recv().await {
                                            Some(Event::Granted { request: r, token, .. }) if r == request => tokens.push(token),
                                            Some(_) => {}
                                            None => break 'conn,
                                        }
                                    }
                                    break true;
                                }
                                Some(Event::TimedOut { request: r, .. }) if r == request => break false,
                                Some(_) => {}
                                None => break 'conn,
                            },
                            read = stream.read_some(&mut inbuf), if inbuf.len() < park_cap => match read {
                                Ok(0) | Err(_) => break 'conn,
                                Ok(_) => {}
                            },
                            // Watch pushes go out while the ACQUIRE waits.
                            _ = async { parked_watcher.as_ref().expect("guarded").ready().await }, if parked_watcher.is_some() => {
                                let mut t = 0;
                                if drain_watches(&shared, &mut conn, &mut outbuf, &mut t).is_err() {
                                    break 'conn;
                                }
                                if !outbuf.is_empty() {
                                    let ok = durable(&shared, t, &mut outbuf, conn.proto).await;
                                    if send_watched(&mut stream, &outbuf, parked_watcher.as_deref()).await.is_err() || !ok {
                                        break 'conn;
                                    }
                                    outbuf.clear();
                                }
                            },
                            _ = stop.changed() => { stopping = true; break 'conn }
                        }
                    };
                    let mut w = ReplyWriter {
                        out: &mut outbuf,
                        proto: conn.proto,
                    };
                    // The grant (or timeout) was logged before the event was sent.
                    ticket = shared.store.read_ticket();
                    if granted {
                        if keys == 0 {
                            w.integer(tokens[0].0 as i64);
                        } else {
                            w.array(tokens.len());
                            for t in &tokens {
                                w.integer(t.0 as i64);
                            }
                        }
                        let label = if keys == 0 {
                            conn.parked
                        } else {
                            crate::server::stats::ModeLabel::Multi
                        };
                        shared.stats.record_wait(
                            conn.session.0,
                            label,
                            since.elapsed().as_micros() as u64,
                        );
                    } else {
                        w.null();
                    }
                    // Commands pipelined behind the ACQUIRE run at the time they now run.
                    arrived = std::time::Instant::now();
                    continue 'conn;
                }
            }
        }
        shared.stats.add_commands(processed);
        if drain_watches(&shared, &mut conn, &mut outbuf, &mut ticket).is_err() {
            break;
        }
        if !outbuf.is_empty() {
            let ok = durable(&shared, ticket, &mut outbuf, conn.proto).await;
            if send_watched(&mut stream, &outbuf, conn.watcher.as_deref())
                .await
                .is_err()
                || !ok
            {
                if conn.watcher.as_ref().is_some_and(|w| w.overflowed()) {
                    // Counted once, when the connection ends (below).
                    debug!(%peer, "watcher fell too far behind: closing");
                }
                break;
            }
            outbuf.clear();
            conn.answered.flush(&shared.stats, conn.session.0, arrived);
            ticket = 0;
            if outbuf.capacity() > 1024 * 1024 {
                outbuf = BytesMut::with_capacity(16 * 1024);
            }
        }
        if inbuf.is_empty() && inbuf.capacity() > 1024 * 1024 {
            inbuf = BytesMut::with_capacity(16 * 1024);
        }
        if conn.watcher.as_ref().is_some_and(|w| w.pending()) {
            continue;
        }
        let watcher = conn.watcher.clone();
        tokio::select! {
            read = stream.read_some(&mut inbuf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => arrived = std::time::Instant::now(),
            },
            _ = async { watcher.as_ref().expect("guarded").ready().await }, if watcher.is_some() => {}
            // Until it authenticates, a connection gets --auth-timeout-ms in all.
            _ = tokio::time::sleep_until(auth_deadline), if !conn.authed => {
                let _ = stream.send(b"-ERR authentication timeout\r\n").await;
                break;
            }
            _ = stop.changed() => { stopping = true; break }
        }
    }

    let session = conn.session;
    if let Some(w) = &conn.watcher {
        if w.overflowed() {
            shared.watches.overflowed();
        }
        shared.watches.unwatch_all(w);
    }
    shared.router.unregister(session);
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
    debug!(%peer, %session, "connection closed");
    if !(stopping && shared.sessions_persist()) && session.0 != 0 {
        end_session(shared, session).await;
    }
}

/// What [`replicate`] writes to and may open a session in.
struct Io<'a> {
    conn: &'a mut ConnState,
    out: &'a mut BytesMut,
    events: &'a mut Vec<Event>,
    tx: &'a mpsc::UnboundedSender<Event>,
}

impl Io<'_> {
    /// Runs `f` with a command context over this connection.
    fn with_ctx<T>(&mut self, shared: &Shared, now: u64, f: impl FnOnce(&mut cmd::Ctx) -> T) -> T {
        let proto = self.conn.proto;
        let mut ctx = cmd::Ctx {
            shared,
            conn: self.conn,
            now,
            out: ReplyWriter {
                out: self.out,
                proto,
            },
            events: self.events,
            ticket: 0,
            read_ok: true,
        };
        f(&mut ctx)
    }
}

/// Cluster mode: does what `op` asks of the cluster and writes the command's reply.
/// A refusal is the reply; an uncertain outcome closes the connection (the client must
/// not go on as if it knew what its session holds).
async fn replicate(
    shared: &Arc<Shared>,
    io: &mut Io<'_>,
    op: cmd::Op,
    argv: &[&[u8]],
    now: u64,
) -> Flow {
    let Some(cluster) = shared.cluster.as_ref() else {
        return Flow::Continue;
    };
    let result: Result<Flow, Refusal> = async {
        match op {
            cmd::Op::Cluster(admin) => {
                let reply = super::cluster::admin(cluster, admin).await?;
                let mut w = ReplyWriter {
                    out: io.out,
                    proto: io.conn.proto,
                };
                match reply {
                    Some(index) => w.integer(index as i64),
                    None => w.simple("OK"),
                }
                Ok(Flow::Continue)
            }
            cmd::Op::Admin(op) => {
                let user = io.conn.user.name().to_string();
                let r = super::admin::run_replicated(shared, cluster, op, &user).await?;
                io.with_ctx(shared, now, |ctx| cmd::admin::reply(ctx, r));
                Ok(Flow::Continue)
            }
            cmd::Op::Read => {
                cluster.read_barrier().await?;
                let now = shared.clock.now_ms();
                Ok(io.with_ctx(shared, now, |ctx| cmd::dispatch(ctx, argv)))
            }
            cmd::Op::Acquire { key, req, value } => {
                let session = open_session(shared, cluster, io).await?;
                let command = Command::Acquire {
                    session,
                    key: &key,
                    req,
                    value: value.as_deref(),
                };
                match cluster.propose(shared.clock.now_ms(), command).await? {
                    Applied::Acquire(outcome) => {
                        Ok(io.with_ctx(shared, now, |ctx| cmd::acquire::reply(ctx, &req, outcome)))
                    }
                    other => Err(Refusal::Failed(format!("unexpected outcome {other:?}"))),
                }
            }
            cmd::Op::MultiAcquire { items, req } => {
                let session = open_session(shared, cluster, io).await?;
                let command = Command::MultiAcquire {
                    session,
                    items: items.iter().map(|(k, m)| (k.as_slice(), *m)).collect(),
                    req,
                };
                match cluster.propose(shared.clock.now_ms(), command).await? {
                    Applied::MultiAcquire(outcome) => {
                        let keys: Vec<&[u8]> = items.iter().map(|(k, _)| k.as_slice()).collect();
                        Ok(io.with_ctx(shared, now, |ctx| {
                            cmd::multi::reply_acquire(ctx, &req, keys.len(), &keys, outcome)
                        }))
                    }
                    other => Err(Refusal::Failed(format!("unexpected outcome {other:?}"))),
                }
            }
            cmd::Op::MultiRelease { keys } => {
                let released = if io.conn.session.0 == 0 {
                    if !cluster.is_leading() {
                        return Err(cluster.not_leader());
                    }
                    0
                } else {
                    let command = Command::MultiRelease {
                        session: io.conn.session,
                        keys: keys.iter().map(|k| k.as_slice()).collect(),
                    };
                    match cluster.propose(shared.clock.now_ms(), command).await? {
                        Applied::MultiRelease(n) => n,
                        other => {
                            return Err(Refusal::Failed(format!("unexpected outcome {other:?}")))
                        }
                    }
                };
                io.with_ctx(shared, now, |ctx| cmd::multi::reply_release(ctx, released));
                Ok(Flow::Continue)
            }
            cmd::Op::Convert {
                key,
                to,
                wait_ms,
                request,
            } => {
                let outcome = if io.conn.session.0 == 0 {
                    if !cluster.is_leading() {
                        return Err(cluster.not_leader());
                    }
                    Err(NotHeld)
                } else {
                    let command = Command::Convert {
                        session: io.conn.session,
                        key: &key,
                        request,
                        to,
                        wait_ms,
                    };
                    match cluster.propose(shared.clock.now_ms(), command).await? {
                        Applied::Convert(r) => r,
                        other => {
                            return Err(Refusal::Failed(format!("unexpected outcome {other:?}")))
                        }
                    }
                };
                Ok(io.with_ctx(shared, now, |ctx| {
                    cmd::convert::reply(ctx, request, outcome)
                }))
            }
            cmd::Op::Release { key } => {
                let result = if io.conn.session.0 == 0 {
                    if !cluster.is_leading() {
                        return Err(cluster.not_leader());
                    }
                    Err(NotHeld)
                } else {
                    let command = Command::Release {
                        session: io.conn.session,
                        key: &key,
                    };
                    match cluster.propose(shared.clock.now_ms(), command).await? {
                        Applied::Release(r) => r,
                        other => {
                            return Err(Refusal::Failed(format!("unexpected outcome {other:?}")))
                        }
                    }
                };
                io.with_ctx(shared, now, |ctx| cmd::release::reply(ctx, result));
                Ok(Flow::Continue)
            }
            cmd::Op::SetValue { key, value } => {
                let result = if io.conn.session.0 == 0 {
                    if !cluster.is_leading() {
                        return Err(cluster.not_leader());
                    }
                    Err(NotHeld)
                } else {
                    let command = Command::SetValue {
                        session: io.conn.session,
                        key: &key,
                        value: &value,
                    };
                    match cluster.propose(shared.clock.now_ms(), command).await? {
                        Applied::SetValue(r) => r,
                        other => {
                            return Err(Refusal::Failed(format!("unexpected outcome {other:?}")))
                        }
                    }
                };
                io.with_ctx(shared, now, |ctx| cmd::setvalue::reply(ctx, result));
                Ok(Flow::Continue)
            }
            cmd::Op::Renew { key, ttl } => {
                cluster.read_barrier().await?;
                let now = shared.clock.now_ms();
                let result = if io.conn.session.0 == 0 {
                    Err(NotHeld)
                } else {
                    cluster
                        .node()
                        .table()
                        .renew(io.conn.session, &key, ttl, now)
                };
                io.with_ctx(shared, now, |ctx| cmd::renew::reply(ctx, result));
                Ok(Flow::Continue)
            }
        }
    }
    .await;
    match result {
        Ok(flow) => flow,
        Err(refusal) => {
            ReplyWriter {
                out: io.out,
                proto: io.conn.proto,
            }
            .error(&refusal.text());
            if matches!(refusal, Refusal::Uncertain(_)) {
                Flow::Close
            } else {
                Flow::Continue
            }
        }
    }
}

/// Cluster mode: the connection's session, opened (proposed) now if it has none yet.
async fn open_session(
    shared: &Shared,
    cluster: &Cluster,
    io: &mut Io<'_>,
) -> Result<SessionId, Refusal> {
    if io.conn.session.0 != 0 {
        return Ok(io.conn.session);
    }
    if !cluster.is_leading() {
        return Err(cluster.not_leader());
    }
    let session = cluster.node().table().open_session();
    let command = Command::OpenSession {
        session,
        kind: SessionKind::Text,
    };
    cluster.propose(shared.clock.now_ms(), command).await?;
    shared.router.register(session, io.tx.clone(), false);
    io.conn.session = session;
    Ok(session)
}

/// Appends the connection's queued watch messages to `out` as RESP3 pushes, raising
/// `ticket` to cover the changes they tell of. Err: the watcher fell `--watch-backlog`
/// messages behind; the connection closes. A connection back in RESP2 loses its watches.
fn drain_watches(
    shared: &Shared,
    conn: &mut ConnState,
    out: &mut BytesMut,
    ticket: &mut Ticket,
) -> Result<(), Overflow> {
    let Some(watcher) = conn.watcher.as_ref() else {
        return Ok(());
    };
    let mut msgs = Vec::new();
    watcher.drain(&mut msgs)?;
    if msgs.is_empty() {
        return Ok(());
    }
    if conn.proto != Proto::Resp3 {
        shared.watches.unwatch_all(watcher);
        return Ok(());
    }
    // The changes were told under the sequencer, before their records got an index:
    // the index read under it now covers them.
    *ticket = (*ticket).max(shared.store.settled_ticket());
    let mut w = ReplyWriter {
        out,
        proto: Proto::Resp3,
    };
    for m in &msgs {
        cmd::watch::encode(&mut w, m);
    }
    Ok(())
}

/// Writes `buf`; with watches, gives up as soon as the watcher's queue overflows (a
/// client that stopped reading blocks the write, and must not hold its queue forever).
pub(super) async fn send_watched<S: Stream>(
    stream: &mut S,
    buf: &[u8],
    watcher: Option<&Watcher>,
) -> std::io::Result<()> {
    let Some(w) = watcher else {
        return stream.send(buf).await;
    };
    let overflow = async {
        while !w.overflowed() {
            w.ready().await;
        }
    };
    tokio::select! {
        r = stream.send(buf) => r,
        _ = overflow => Err(std::io::Error::other("watch backlog overflowed")),
    }
}

/// Waits until the log holds everything the replies in `out` depend on. If the log
/// failed, the replies are replaced by an error (they must not be acknowledged) and the
/// caller closes the connection.
async fn durable(shared: &Shared, ticket: Ticket, out: &mut BytesMut, proto: Proto) -> bool {
    match shared.store.durable(ticket).await {
        Ok(()) => true,
        Err(e) => {
            out.clear();
            ReplyWriter { out, proto }.error(&format!("ERR {e}; not acknowledged"));
            false
        }
    }
}

/// Ends `session` now: queued requests cancelled, holds released, grants delivered.
/// In cluster mode the end is proposed (by the leader only: elsewhere the new leader
/// ends the session after its timeout).
pub(super) fn close_session(shared: &Shared, session: SessionId) {
    if let Some(cluster) = shared.cluster.clone() {
        if !cluster.is_leading() {
            return;
        }
        let now = shared.clock.now_ms();
        tokio::spawn(async move {
            if let Err(e) = cluster
                .propose(now, Command::CloseSession { session })
                .await
            {
                debug!(%session, error = %e.text(), "ending a session");
            }
        });
        return;
    }
    let mut events = Vec::new();
    shared
        .store
        .close_session(session, shared.clock.now_ms(), &mut events);
    shared.store.flush();
    shared.router.route(&mut events);
}

/// Ends the session after the configured grace: its holds are released and its queued
/// request cancelled.
async fn end_session(shared: Arc<Shared>, session: crate::engine::SessionId) {
    let grace = shared.config.session_grace();
    if grace.is_zero() {
        close_session(&shared, session);
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            close_session(&shared, session);
        });
    }
}
