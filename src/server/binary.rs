//! One binary-protocol connection (protocol.md, "Binary protocol").
//!
//! After the handshake (magic, HELLO: version, credentials, session to create or resume)
//! the connection serves its session: it reads, applies every complete frame in the
//! buffer, appends each reply to one output buffer together with the pushes that arrived
//! meanwhile, and writes that buffer with one write. A queued ACQUIRE does not hold up the
//! frames behind it: it is answered QUEUED at once and remembered by request id in the
//! session's core; its grant, timeout or cancellation comes later as a push with the same
//! id. When the connection ends the session is detached, not ended: a client that comes
//! back within the session timeout resumes it with its holds and queued requests.
//!
//! HELLO's credentials make the connection a user (`crate::acl`); every request is
//! checked against that user's permissions (`NOPERM`), and a session can be resumed only
//! by the user that created it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::cluster::Refusal;
use super::io::Stream;
use super::router::Delivery;
use super::sessions::{logged_user, Attachment, Core, Queued, ResumeError, Session};
use super::stats::{Answered, ModeLabel};
use super::Shared;
use crate::acl::{self, User};
use crate::cmd::{self, ConnState};
use crate::durable::command::{Applied, Command};
use crate::durable::{SessionKind, Ticket};
use crate::engine::{
    AcquireOutcome, AcquireRequest, Event, Key, Mode as EngineMode, MultiOutcome, MultiRequest,
    SessionId,
};
use crate::protocol::binary::{
    convert_mode, deadlock_error, engine_limit_error, err, error_from_text, key_state, limit_error,
    mode_from_wire, mode_kind, wrongtype_error, Acquire, DecodeError, ErrorCode, ErrorDetail,
    ErrorReply, Header, Hello, HelloOk, HolderValue, LimitKind, LostReason, Mode, MultiAcquire,
    Push, Request, Response, HEADER_LEN, HELLO_MAX_PAYLOAD, MAGIC, MAX_STR, MAX_VERSION,
    MIN_VERSION,
};
use crate::protocol::{Proto, ReplyWriter};

/// The longest client name.
pub const MAX_NAME_LEN: usize = 255;

/// Serves a binary connection whose first bytes are in `inbuf`.
/// The magic and HELLO must arrive before `deadline` (`--auth-timeout-ms` from the
/// connection, TLS handshake included).
pub(super) async fn serve<S: Stream>(
    shared: Arc<Shared>,
    mut stream: S,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    mut inbuf: BytesMut,
    deadline: Instant,
) {
    let mut outbuf = BytesMut::with_capacity(16 * 1024);
    let hs = handshake(
        &shared,
        &mut stream,
        &mut stop,
        &mut inbuf,
        &mut outbuf,
        deadline,
    );
    let (att, user) = match hs.await {
        Ok(attached) => attached,
        Err(()) => {
            if !outbuf.is_empty() {
                let _ = stream.send(&outbuf).await;
            }
            return;
        }
    };
    debug!(%peer, session = %att.session.id, "binary connection attached");
    let mut conn = Served {
        shared: shared.clone(),
        session: att.session.id,
        sess: att.session.clone(),
        user,
        peer,
        out: outbuf,
        events: Vec::new(),
        ticket: 0,
        answered: Answered::default(),
        arrived: std::time::Instant::now(),
        watcher: None,
    };
    let (exit, att, last_frame) = conn.run(att, &mut stream, &mut stop, inbuf).await;
    if let Some(w) = &conn.watcher {
        if w.overflowed() {
            shared.watches.overflowed();
        }
        shared.watches.unwatch_all(w);
    }
    debug!(%peer, session = %att.session.id, ?exit, "binary connection closed");
    match exit {
        Exit::Closed | Exit::Kicked | Exit::Protocol | Exit::Bye { end: false } => {
            shared.sessions.detach(&shared, att, last_frame)
        }
        // A server stopping with a log keeps its sessions: they come back after the
        // restart, resumable.
        Exit::Stop if shared.store.is_durable() => {}
        Exit::Stop | Exit::TimedOut | Exit::Ended | Exit::Bye { end: true } => {
            shared.sessions.end(&shared, &att.session);
        }
    }
}

/// Reads the magic and the HELLO frame and answers it; Ok: the session attached and the
/// user the connection is. Err: the connection must close (after `out`, which may hold
/// an error frame, is written).
async fn handshake<S: Stream>(
    shared: &Arc<Shared>,
    stream: &mut S,
    stop: &mut watch::Receiver<bool>,
    inbuf: &mut BytesMut,
    out: &mut BytesMut,
    deadline: Instant,
) -> Result<(Attachment, Arc<User>), ()> {
    let header = loop {
        let n = inbuf.len().min(MAGIC.len());
        if inbuf[..n] != MAGIC[..n] {
            refuse(
                out,
                0,
                ErrorReply::new(ErrorCode::NoProto, "not the Turnstile binary magic"),
            );
            return Err(());
        }
        if n == MAGIC.len() {
            match Header::check(&inbuf[MAGIC.len()..], HELLO_MAX_PAYLOAD) {
                Ok(h) => break h,
                Err(DecodeError::Incomplete) => {}
                Err(e) => {
                    shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    refuse(out, 0, err(format!("Protocol error: {e}")));
                    return Err(());
                }
            }
        }
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read_buf(inbuf)) => read,
            _ = stop.changed() => return Err(()),
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(()),
        }
    };
    let id = header.request_id;
    let payload = &inbuf[MAGIC.len() + HEADER_LEN..MAGIC.len() + header.frame_len()];
    let hello = match Request::decode(&header, payload) {
        Ok(Request::Hello(h)) => h,
        Ok(_) => {
            refuse(out, id, err("the first frame must be HELLO"));
            return Err(());
        }
        Err(e) => {
            shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            refuse(out, id, err(format!("Protocol error: {e}")));
            return Err(());
        }
    };
    let hello_len = MAGIC.len() + header.frame_len();
    let cert_user = super::io::certificate_user(shared, &*stream);
    let result = accept(shared, &hello, cert_user).await;
    inbuf.advance(hello_len);
    match result {
        Ok((att, version, user)) => {
            let cfg = &shared.config;
            Response::HelloOk(HelloOk {
                version,
                resumed: att.resumed,
                session: att.session.id.0,
                secret: att.session.secret,
                session_timeout_ms: att.session.timeout.as_millis() as u32,
                max_frame: cfg.max_frame as u32,
                max_in_flight: cfg.max_in_flight as u32,
                default_ttl_ms: cfg.default_ttl_ms as u32,
                max_ttl_ms: cfg.max_ttl_ms as u32,
                max_key_len: cfg.max_key_len.min(MAX_STR) as u32,
                server_version: Bytes::from_static(env!("CARGO_PKG_VERSION").as_bytes()),
            })
            .encode(id, out);
            Ok((att, user))
        }
        Err(e) => {
            refuse(out, id, e);
            Err(())
        }
    }
}

fn refuse(out: &mut BytesMut, id: u32, e: ErrorReply) {
    Response::Error(e).encode(id, out);
}

/// A cluster refusal as an ERROR frame: NOTLEADER with the leader's address (empty when
/// unknown), or ERR.
fn refusal_error(r: &Refusal) -> ErrorReply {
    match r {
        Refusal::NotLeader(addr) => {
            let mut e = ErrorReply::new(
                ErrorCode::NotLeader,
                match addr {
                    Some(a) => a.clone(),
                    None => "no leader known yet; retry".to_string(),
                },
            );
            e.detail = ErrorDetail::NotLeader(Bytes::from(addr.clone().unwrap_or_default()));
            e
        }
        other => err(other.text().trim_start_matches("ERR ").to_string()),
    }
}

/// Checks the HELLO and attaches a session: a new one, or the one it resumes. Returns it
/// with the version spoken and the user the credentials opened (`default` without any).
async fn accept(
    shared: &Arc<Shared>,
    hello: &Hello<'_>,
    cert_user: Option<Arc<User>>,
) -> Result<(Attachment, u16, Arc<User>), ErrorReply> {
    let cfg = &shared.config;
    let low = hello.min_version.max(MIN_VERSION);
    let high = hello.max_version.min(MAX_VERSION);
    if low > high {
        let mut e = ErrorReply::new(
            ErrorCode::NoProto,
            format!(
                "unsupported protocol version: this server speaks {MIN_VERSION} to {MAX_VERSION}"
            ),
        );
        e.detail = ErrorDetail::NoProto {
            min: MIN_VERSION,
            max: MAX_VERSION,
        };
        return Err(e);
    }
    let user = match hello.auth {
        Some((name, pass)) => shared
            .acl
            .authenticate(name, pass)
            .ok_or_else(|| error_from_text(cmd::auth::WRONGPASS))?,
        None if cert_user.is_some() => cert_user.expect("just tested"),
        None => {
            let default = shared.acl.default_user();
            if !default.needs_no_auth() {
                return Err(error_from_text("NOAUTH Authentication required."));
            }
            default.clone()
        }
    };
    if hello.name.len() > MAX_NAME_LEN || !cmd::client::valid_name(hello.name) {
        return Err(err(format!(
            "Client names cannot contain spaces, newlines or special characters, and have at most {MAX_NAME_LEN} bytes."
        )));
    }
    if let Some(c) = &shared.cluster {
        // Sessions live where changes are served: on the leader.
        if !c.is_leading() {
            return Err(refusal_error(&c.not_leader()));
        }
        if hello.resume.is_none() {
            let timeout = cfg.session_timeout(hello.session_timeout_ms);
            if shared.sessions.full(shared) {
                return Err(limit_error(
                    LimitKind::Sessions,
                    format!("too many sessions (the maximum is {})", cfg.max_sessions),
                ));
            }
            let id = c.node().table().open_session();
            let secret = super::sessions::new_secret();
            let command = Command::OpenSession {
                session: id,
                kind: SessionKind::Binary {
                    secret,
                    timeout_ms: timeout.as_millis() as u64,
                    user: logged_user(user.name()),
                },
            };
            // HELLO_OK hands out the secret only once the session is committed.
            c.propose(shared.clock.now_ms(), command)
                .await
                .map_err(|r| refusal_error(&r))?;
            let att = shared.sessions.create_replicated(
                shared,
                id,
                secret,
                timeout,
                hello.name.to_vec(),
                user.name(),
            );
            return Ok((att, high, user));
        }
    }
    let att = match &hello.resume {
        Some(secret) => match shared.sessions.resume(shared, secret, user.name()).await {
            Ok(att) => att,
            // Also a session of another user: it must not learn that the session exists.
            Err(ResumeError::Unknown) => {
                return Err(ErrorReply::new(
                    ErrorCode::NoSession,
                    "no such session (it never existed or it has ended)",
                ))
            }
            Err(ResumeError::Busy) => {
                return Err(err("the session is still busy on another connection"))
            }
        },
        None => {
            let timeout = cfg.session_timeout(hello.session_timeout_ms);
            match shared
                .sessions
                .create(shared, timeout, hello.name.to_vec(), user.name())
            {
                Some(att) => {
                    // HELLO_OK hands out the secret: the session must survive a crash
                    // from then on, so its record is durable first.
                    if let Err(e) = shared.store.durable(shared.store.read_ticket()).await {
                        shared.sessions.end(shared, &att.session);
                        return Err(err(format!("{e}; not acknowledged")));
                    }
                    att
                }
                None => {
                    return Err(limit_error(
                        LimitKind::Sessions,
                        format!("too many sessions (the maximum is {})", cfg.max_sessions),
                    ))
                }
            }
        }
    };
    Ok((att, high, user))
}

/// Why the connection loop ended.
#[derive(Debug)]
enum Exit {
    /// The client closed the connection (or it broke).
    Closed,
    /// Another connection resumed the session.
    Kicked,
    /// Input that cannot be framed.
    Protocol,
    /// BYE.
    Bye { end: bool },
    /// The server is shutting down.
    Stop,
    /// No frame for the session timeout.
    TimedOut,
    /// The session was ended elsewhere.
    Ended,
}

/// What a request does to the connection.
enum Flow {
    Continue,
    Bye {
        end: bool,
    },
    /// Cluster mode: the request needs the cluster ([`Served::replicated`]).
    Replicate,
    /// Cluster mode: an outcome is unknown; the connection closes (the session stays, to
    /// be resumed on the leader).
    Close,
}

/// The connection's state besides the session core.
struct Served {
    shared: Arc<Shared>,
    session: SessionId,
    sess: Arc<Session>,
    /// The user the connection is: every request is checked against its permissions.
    user: Arc<User>,
    peer: SocketAddr,
    out: BytesMut,
    events: Vec<Event>,
    /// The log index the replies in `out` wait for.
    ticket: Ticket,
    /// ACQUIREs answered at once in this batch, and when the batch arrived.
    answered: Answered,
    arrived: std::time::Instant,
    /// WATCH: the connection's watches (made at the first WATCH).
    watcher: Option<Arc<super::watches::Watcher>>,
}

impl Served {
    async fn run<S: Stream>(
        &mut self,
        mut att: Attachment,
        stream: &mut S,
        stop: &mut watch::Receiver<bool>,
        mut inbuf: BytesMut,
    ) -> (Exit, Attachment, Instant) {
        let timeout = att.session.timeout;
        let max_frame = self.shared.config.max_frame;
        let mut last_frame = Instant::now();
        let idle = tokio::time::sleep_until(last_frame + timeout);
        tokio::pin!(idle);
        let exit = 'conn: loop {
            let now = self.shared.clock.now_ms();
            // Pushes that arrived meanwhile (or while detached) go out first.
            while let Ok(d) = att.core.rx.try_recv() {
                self.deliver(&mut att.core, d, now);
            }
            let mut processed = 0u64;
            let mut flow = Flow::Continue;
            loop {
                let header = match Header::check(&inbuf, max_frame) {
                    Ok(h) => h,
                    Err(DecodeError::Incomplete) => {
                        if let Some(h) = Header::peek(&inbuf) {
                            inbuf.reserve(h.frame_len().saturating_sub(inbuf.len()));
                        }
                        break;
                    }
                    Err(e) => {
                        self.shared
                            .stats
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        let id = match e {
                            DecodeError::TooLarge { request_id, .. } => request_id,
                            _ => 0,
                        };
                        refuse(&mut self.out, id, err(format!("Protocol error: {e}")));
                        let _ = stream.send(&self.out).await;
                        break 'conn Exit::Protocol;
                    }
                };
                processed += 1;
                let payload = &inbuf[HEADER_LEN..header.frame_len()];
                flow = self.handle(&mut att.core, &header, payload, now);
                if let Flow::Replicate = flow {
                    flow = self.replicated(&mut att.core, &header, payload).await;
                }
                inbuf.advance(header.frame_len());
                if !self.events.is_empty() {
                    self.shared.router.route(&mut self.events);
                }
                if !matches!(flow, Flow::Continue) {
                    break;
                }
            }
            if processed > 0 {
                last_frame = Instant::now();
                self.shared.stats.add_commands(processed);
            }
            if self.drain_watches().is_err() {
                break Exit::Closed;
            }
            if !self.out.is_empty() {
                if let Err(e) = self.shared.store.durable(self.ticket).await {
                    // Nothing computed on state the log does not have may go out.
                    self.out.clear();
                    refuse(&mut self.out, 0, err(format!("{e}; not acknowledged")));
                    let _ = stream.send(&self.out).await;
                    break Exit::Closed;
                }
                self.ticket = 0;
                if super::connection::send_watched(stream, &self.out, self.watcher.as_deref())
                    .await
                    .is_err()
                {
                    break Exit::Closed;
                }
                self.out.clear();
                self.answered
                    .flush(&self.shared.stats, self.session.0, self.arrived);
                if self.out.capacity() > 1024 * 1024 {
                    self.out = BytesMut::with_capacity(16 * 1024);
                }
            }
            if let Flow::Bye { end } = flow {
                break Exit::Bye { end };
            }
            if let Flow::Close = flow {
                break Exit::Closed;
            }
            if inbuf.is_empty() && inbuf.capacity() > 1024 * 1024 {
                inbuf = BytesMut::with_capacity(16 * 1024);
            }
            if self.watcher.as_ref().is_some_and(|w| w.pending()) {
                continue;
            }
            let watcher = self.watcher.clone();
            tokio::select! {
                read = stream.read_buf(&mut inbuf) => match read {
                    Ok(0) | Err(_) => break Exit::Closed,
                    Ok(_) => self.arrived = std::time::Instant::now(),
                },
                _ = async { watcher.as_ref().expect("guarded").ready().await }, if watcher.is_some() => {}
                d = att.core.rx.recv() => match d {
                    Some(d) => {
                        let now = self.shared.clock.now_ms();
                        self.deliver(&mut att.core, d, now);
                    }
                    None => break Exit::Ended,
                },
                _ = &mut idle => {
                    let due = last_frame + timeout;
                    if Instant::now() >= due {
                        break Exit::TimedOut;
                    }
                    idle.as_mut().reset(due);
                }
                _ = &mut att.kicked => break Exit::Kicked,
                _ = stop.changed() => break Exit::Stop,
            }
        };
        (exit, att, last_frame)
    }

    fn reply(&mut self, id: u32, r: Response) {
        r.encode(id, &mut self.out);
    }

    fn error(&mut self, id: u32, e: ErrorReply) {
        Response::Error(e).encode(id, &mut self.out);
    }

    /// A key longer than the configured maximum gets LIMIT, in text mode's words.
    fn key_ok(&mut self, id: u32, key: &[u8]) -> bool {
        let max = self.shared.config.max_key_len;
        if key.len() > max {
            self.error(
                id,
                limit_error(
                    LimitKind::Value,
                    format!("key is {} bytes, more than the maximum of {max}", key.len()),
                ),
            );
            return false;
        }
        true
    }

    /// Whether the user may make `req`; writes NOPERM when not. A key over the maximum
    /// length is left to [`Self::key_ok`] (LIMIT), which every key-bearing request runs
    /// next.
    #[inline]
    fn permitted(&mut self, id: u32, req: &Request<'_>) -> bool {
        let (cmd, key) = match req {
            Request::Acquire(a) => (acl::Command::Acquire, Some(a.key)),
            // Converting is acquiring a mode: the same permission.
            Request::Convert(c) => (acl::Command::Acquire, Some(c.key)),
            Request::Release { key } => (acl::Command::Release, Some(*key)),
            Request::Renew { key, .. } => (acl::Command::Renew, Some(*key)),
            Request::Cancel { .. } => (acl::Command::Cancel, None),
            Request::Inspect { key }
            | Request::InspectValues { key }
            | Request::GetValue { key }
            | Request::Watch { key } => (acl::Command::Inspect, Some(*key)),
            Request::SetValue { key, .. } => (acl::Command::Acquire, Some(*key)),
            Request::Unwatch { .. } => return true,
            Request::Locks { .. } => (acl::Command::Locks, None),
            Request::Info { .. } => (acl::Command::Info, None),
            Request::MultiAcquire(m) => {
                return self.permitted_keys(id, acl::Command::Acquire, m.items.iter().map(|i| i.0))
            }
            Request::MultiRelease { keys } => {
                return self.permitted_keys(id, acl::Command::Release, keys.iter().copied())
            }
            // They list keys across the table, as LOCKS does.
            Request::Explain { .. } | Request::WaitGraph { .. } => (acl::Command::Locks, None),
            Request::Hello(_) | Request::Ping(_) | Request::Bye { .. } => return true,
        };
        if !self.user.may_run(cmd) {
            self.error(
                id,
                ErrorReply::new(ErrorCode::NoPerm, acl::noperm_command(cmd)),
            );
            return false;
        }
        if let Some(key) = key {
            if key.len() <= self.shared.config.max_key_len && !self.user.may_access(key) {
                self.error(id, ErrorReply::new(ErrorCode::NoPerm, acl::noperm_key(key)));
                return false;
            }
        }
        true
    }

    /// [`Self::permitted`] for a request with several keys.
    fn permitted_keys<'k>(
        &mut self,
        id: u32,
        cmd: acl::Command,
        mut keys: impl Iterator<Item = &'k [u8]>,
    ) -> bool {
        if !self.user.may_run(cmd) {
            self.error(
                id,
                ErrorReply::new(ErrorCode::NoPerm, acl::noperm_command(cmd)),
            );
            return false;
        }
        let max = self.shared.config.max_key_len;
        if let Some(key) = keys.find(|k| k.len() <= max && !self.user.may_access(k)) {
            self.error(id, ErrorReply::new(ErrorCode::NoPerm, acl::noperm_key(key)));
            return false;
        }
        true
    }

    /// Checks a MACQUIRE and gives it a request id; None: the error reply is written.
    fn prepare_multi(
        &mut self,
        core: &mut Core,
        id: u32,
        m: &MultiAcquire<'_>,
    ) -> Option<MultiRequest> {
        let cfg = &self.shared.config;
        if m.items.is_empty() {
            self.error(id, err("MACQUIRE needs at least one key"));
            return None;
        }
        if m.items.len() > cfg.max_multi_keys {
            let e = limit_error(
                LimitKind::Value,
                format!(
                    "{} keys in one MACQUIRE is above the maximum of {}",
                    m.items.len(),
                    cfg.max_multi_keys
                ),
            );
            self.error(id, e);
            return None;
        }
        for (key, mode) in &m.items {
            // The same checks as one ACQUIRE of each key.
            let single = Acquire {
                key,
                mode: *mode,
                reentrant: false,
                ttl_ms: m.ttl_ms,
                wait_ms: Some(0),
                priority: 0,
                lock_delay_ms: 0,
                value: None,
            };
            self.prepare_acquire(core, id, &single)?;
        }
        let single = Acquire {
            key: m.items[0].0,
            mode: m.items[0].1,
            reentrant: false,
            ttl_ms: m.ttl_ms,
            wait_ms: m.wait_ms,
            priority: 0,
            lock_delay_ms: 0,
            value: None,
        };
        let req = self.prepare_acquire(core, id, &single)?;
        Some(MultiRequest {
            id: req.id,
            ttl_ms: req.ttl_ms,
            wait_ms: req.wait_ms,
            // The server's lock-delay (--lock-delay-ms); MACQUIRE has no field for more.
            lock_delay_ms: req.policy.lock_delay_ms,
        })
    }

    /// Replies to a MACQUIRE that applied with `outcome`.
    fn multi_acquired(
        &mut self,
        core: &mut Core,
        id: u32,
        m: &MultiAcquire<'_>,
        req: &MultiRequest,
        outcome: MultiOutcome,
    ) {
        let queued = matches!(outcome, MultiOutcome::Queued);
        match outcome {
            MultiOutcome::Granted(tokens) => self.reply(
                id,
                Response::MultiGranted {
                    tokens: tokens.iter().map(|t| t.0).collect(),
                },
            ),
            MultiOutcome::Queued => {
                core.queued.insert(
                    req.id,
                    Queued {
                        client_id: id,
                        key: Key::new(m.items[0].0),
                        since: std::time::Instant::now(),
                        mode: ModeLabel::Multi,
                        remaining: m.items.len() as u32,
                    },
                );
                core.by_client.insert(id, req.id);
                self.reply(id, Response::Queued);
            }
            MultiOutcome::WouldBlock => self.reply(id, Response::Busy),
            MultiOutcome::Deadlock(cycle) => {
                cmd::acquire::log_deadlock(&cycle);
                self.error(id, deadlock_error(&cycle))
            }
            MultiOutcome::WrongType { current, .. } => self.error(id, wrongtype_error(current)),
            MultiOutcome::Limit(limit) => self.error(id, engine_limit_error(limit)),
        }
        if !queued {
            self.answered.note(ModeLabel::Multi);
        }
    }

    /// Checks an MRELEASE; false: the error reply is written.
    fn prepare_multi_release(&mut self, id: u32, keys: &[&[u8]]) -> bool {
        let max = self.shared.config.max_multi_keys;
        if keys.is_empty() || keys.len() > max {
            let e = limit_error(
                LimitKind::Value,
                format!("MRELEASE takes 1 to {max} keys, not {}", keys.len()),
            );
            self.error(id, e);
            return false;
        }
        keys.iter().all(|k| self.key_ok(id, k))
    }

    /// Replies to an MRELEASE that released `count` keys.
    fn multi_released(&mut self, id: u32, count: usize) {
        if count == 0 {
            self.notheld(id);
        } else {
            self.reply(
                id,
                Response::Released {
                    count: count as u32,
                },
            );
        }
    }

    fn handle(&mut self, core: &mut Core, h: &Header, payload: &[u8], now: u64) -> Flow {
        let id = h.request_id;
        let req = match Request::decode(h, payload) {
            Ok(r) => r,
            Err(e) => {
                self.error(id, err(format!("Protocol error: {e}")));
                return Flow::Continue;
            }
        };
        if !self.permitted(id, &req) {
            return Flow::Continue;
        }
        if self.shared.cluster.is_some()
            && matches!(
                req,
                Request::Acquire(_)
                    | Request::MultiAcquire(_)
                    | Request::MultiRelease { .. }
                    | Request::Convert(_)
                    | Request::Release { .. }
                    | Request::Renew { .. }
                    | Request::Cancel { .. }
                    | Request::Inspect { .. }
                    | Request::InspectValues { .. }
                    | Request::SetValue { .. }
                    | Request::GetValue { .. }
                    | Request::Locks { .. }
                    | Request::Explain { .. }
                    | Request::WaitGraph { .. }
            )
        {
            return Flow::Replicate;
        }
        match req {
            Request::Hello(_) => self.error(id, err("HELLO is only valid as the first frame")),
            Request::Ping(p) => self.reply(id, Response::Pong(Bytes::copy_from_slice(p))),
            Request::Acquire(a) => self.acquire(core, id, &a, now),
            Request::MultiAcquire(m) => {
                if let Some(req) = self.prepare_multi(core, id, &m) {
                    let (outcome, ticket) = self.shared.store.acquire_multi(
                        self.session,
                        m.items
                            .iter()
                            .map(|(k, mode)| (*k, mode_from_wire(*mode)))
                            .collect(),
                        &req,
                        now,
                    );
                    self.ticket = self.ticket.max(ticket);
                    self.multi_acquired(core, id, &m, &req, outcome);
                }
            }
            Request::MultiRelease { keys } => {
                if self.prepare_multi_release(id, &keys) {
                    let (count, ticket) =
                        self.shared
                            .store
                            .release_many(self.session, keys, now, &mut self.events);
                    self.ticket = self.ticket.max(ticket);
                    self.multi_released(id, count);
                }
            }
            Request::Convert(c) => {
                if let Some(request) = self.prepare_convert(core, id, &c) {
                    let (outcome, ticket) = self.shared.store.convert(
                        self.session,
                        c.key,
                        convert_mode(c.to),
                        request,
                        c.wait_ms.map(u64::from),
                        now,
                        &mut self.events,
                    );
                    self.ticket = self.ticket.max(ticket);
                    self.converted(core, id, c.key, request, outcome, now);
                }
            }
            Request::Release { key } => {
                if self.key_ok(id, key) {
                    let shared = &self.shared;
                    let (result, ticket) =
                        shared
                            .store
                            .release(self.session, key, now, &mut self.events);
                    self.ticket = self.ticket.max(ticket);
                    self.released(id, result);
                }
            }
            Request::Renew { key, ttl_ms } => {
                let Some(ttl) = self.renew_ttl(id, key, ttl_ms) else {
                    return Flow::Continue;
                };
                let (result, ticket) = self.shared.store.renew(self.session, key, ttl, now);
                self.ticket = self.ticket.max(ticket);
                self.renewed(id, result);
            }
            Request::Cancel { target } => self.cancel(core, id, target, now),
            Request::Inspect { key } => {
                if self.key_ok(id, key) {
                    self.ticket = self.ticket.max(self.shared.store.read_ticket());
                    self.inspect(id, key, now);
                }
            }
            Request::Locks { pattern, count } => {
                self.ticket = self.ticket.max(self.shared.store.read_ticket());
                self.locks(id, pattern, count);
            }
            Request::Explain { target, count } => {
                self.ticket = self.ticket.max(self.shared.store.read_ticket());
                self.explain(core, id, target, count, now);
            }
            Request::WaitGraph { count } => {
                self.ticket = self.ticket.max(self.shared.store.read_ticket());
                self.wait_graph(id, count, now);
            }
            Request::InspectValues { key } => {
                if self.key_ok(id, key) {
                    self.ticket = self.ticket.max(self.shared.store.read_ticket());
                    self.inspect_values(id, key, now);
                }
            }
            Request::GetValue { key } => {
                if self.key_ok(id, key) {
                    self.ticket = self.ticket.max(self.shared.store.read_ticket());
                    self.get_value(id, key, now);
                }
            }
            Request::SetValue { key, value } => {
                if self.key_ok(id, key) && self.value_ok(id, value) {
                    let (result, ticket) =
                        self.shared.store.set_value(self.session, key, value, now);
                    self.ticket = self.ticket.max(ticket);
                    self.released(id, result);
                }
            }
            Request::Watch { key } => self.watch(id, key, now),
            Request::Unwatch { key } => {
                if let Some(w) = &self.watcher {
                    self.shared.watches.unwatch(w, key);
                }
                self.reply(id, Response::Ok);
            }
            Request::Info { section } => {
                let text = self.info(section, now);
                self.reply(id, Response::Info(text));
            }
            Request::Bye { end_session } => {
                if end_session {
                    // Ended before the OK goes out: a client that reads OK knows its
                    // holds are released.
                    self.shared.sessions.end(&self.shared, &self.sess);
                }
                self.reply(id, Response::Ok);
                return Flow::Bye { end: end_session };
            }
        }
        Flow::Continue
    }

    fn acquire(&mut self, core: &mut Core, id: u32, a: &Acquire<'_>, now: u64) {
        let Some(req) = self.prepare_acquire(core, id, a) else {
            return;
        };
        let (outcome, ticket) =
            self.shared
                .store
                .acquire_with_value(self.session, a.key, &req, a.value, now);
        self.ticket = self.ticket.max(ticket);
        self.acquired(core, id, a.key, req.id, req.mode, outcome, now);
    }

    /// Checks a CONVERT and gives it a request id; None: the error reply is written.
    fn prepare_convert(
        &mut self,
        core: &mut Core,
        id: u32,
        c: &crate::protocol::binary::Convert<'_>,
    ) -> Option<crate::engine::RequestId> {
        if !self.key_ok(id, c.key) {
            return None;
        }
        if c.wait_ms != Some(0) && !self.may_queue(core, id, c.key) {
            return None;
        }
        Some(self.shared.next_request(id))
    }

    /// Replies to a CONVERT that applied with `outcome`: as an ACQUIRE (a waiting upgrade
    /// is QUEUED, then PUSH_GRANTED or PUSH_TIMED_OUT), or NOTHELD.
    fn converted(
        &mut self,
        core: &mut Core,
        id: u32,
        key: &[u8],
        request: crate::engine::RequestId,
        outcome: Result<AcquireOutcome, crate::engine::NotHeld>,
        now: u64,
    ) {
        match outcome {
            Ok(o) => self.acquired(core, id, key, request, EngineMode::Exclusive, o, now),
            Err(_) => self.notheld(id),
        }
    }

    /// Whether a request that may queue fits: the in-flight limit, and a request id that
    /// does not name another queued request (a retry of the same one is answered
    /// QUEUED). False: the reply is written.
    fn may_queue(&mut self, core: &mut Core, id: u32, key: &[u8]) -> bool {
        let cfg = &self.shared.config;
        if core.queued.len() >= cfg.max_in_flight {
            let max = cfg.max_in_flight;
            self.error(
                id,
                limit_error(
                    LimitKind::InFlight,
                    format!("too many queued ACQUIREs in this session (the maximum is {max})"),
                ),
            );
            return false;
        }
        if let Some(q) = core.by_client.get(&id).and_then(|r| core.queued.get(r)) {
            if q.key.as_bytes() == key {
                self.reply(id, Response::Queued);
                return false;
            }
            self.error(
                id,
                err(format!(
                    "request id {id} already names a queued ACQUIRE of this session"
                )),
            );
            return false;
        }
        true
    }

    /// Checks an ACQUIRE and gives it a request id; None: the error reply is written.
    fn prepare_acquire(
        &mut self,
        core: &mut Core,
        id: u32,
        a: &Acquire<'_>,
    ) -> Option<AcquireRequest> {
        if !self.key_ok(id, a.key) || !self.value_ok(id, a.value.unwrap_or_default()) {
            return None;
        }
        let cfg = &self.shared.config;
        if let Mode::Semaphore { limit, permits } = a.mode {
            let problem = if limit == 0 {
                Some(err("SEMAPHORE limit must be at least 1"))
            } else if limit > cfg.max_semaphore {
                Some(limit_error(
                    LimitKind::Value,
                    format!(
                        "SEMAPHORE limit {limit} is above the maximum of {}",
                        cfg.max_semaphore
                    ),
                ))
            } else if permits == 0 || permits > limit {
                Some(err(format!(
                    "PERMITS must be between 1 and the semaphore limit ({limit})"
                )))
            } else if a.reentrant {
                Some(err("REENTRANT applies to EXCLUSIVE and SHARED only"))
            } else {
                None
            };
            if let Some(e) = problem {
                self.error(id, e);
                return None;
            }
        }
        let ttl_ms = if a.ttl_ms == 0 {
            cfg.default_ttl_ms
        } else {
            u64::from(a.ttl_ms)
        };
        if let Err(msg) = cmd::acquire::validate_ttl(ttl_ms, cfg.max_ttl_ms)
            .and_then(|()| cmd::acquire::validate_min_ttl(ttl_ms, cfg.min_ttl()))
        {
            self.error(id, error_from_text(&msg));
            return None;
        }
        if a.priority > crate::engine::MAX_PRIORITY {
            self.error(
                id,
                err(format!(
                    "PRIORITY must be between 0 and {}",
                    crate::engine::MAX_PRIORITY
                )),
            );
            return None;
        }
        if u64::from(a.lock_delay_ms) > cfg.max_ttl_ms {
            let max = cfg.max_ttl_ms;
            self.error(
                id,
                limit_error(
                    LimitKind::Value,
                    format!(
                        "LOCKDELAY {} ms is above the maximum of {max} ms",
                        a.lock_delay_ms
                    ),
                ),
            );
            return None;
        }
        let policy = cmd::acquire::policy(a.priority, Some(u64::from(a.lock_delay_ms)), cfg);
        // A client retrying after a reconnect or a failover: the request is still queued
        // (its push will come), it must not queue twice.
        if a.wait_ms != Some(0) && !self.may_queue(core, id, a.key) {
            return None;
        }
        let mode = mode_from_wire(a.mode);
        let request = self.shared.next_request(id);
        let req = AcquireRequest {
            id: request,
            mode,
            reentrant: a.reentrant,
            ttl_ms,
            wait_ms: a.wait_ms.map(u64::from),
            policy,
        };
        Some(req)
    }

    /// Replies to an ACQUIRE that applied with `outcome` (standalone or replicated).
    #[allow(clippy::too_many_arguments, reason = "ACQUIRE's and CONVERT's parts")]
    fn acquired(
        &mut self,
        core: &mut Core,
        id: u32,
        key: &[u8],
        request: crate::engine::RequestId,
        mode: EngineMode,
        outcome: AcquireOutcome,
        now: u64,
    ) {
        let queued = matches!(outcome, AcquireOutcome::Queued);
        match outcome {
            AcquireOutcome::Granted(token) => self.reply(id, Response::Granted { token: token.0 }),
            AcquireOutcome::Queued => {
                let key_bytes = key;
                let key = Key::new(key_bytes);
                core.queued.insert(
                    request,
                    Queued {
                        client_id: id,
                        key: key.clone(),
                        since: std::time::Instant::now(),
                        mode: ModeLabel::of(&mode),
                        remaining: 1,
                    },
                );
                core.by_client.insert(id, request);
                self.reply(id, Response::Queued);
                // Tell the holders that someone waits (they may hand over early).
                if let Some(info) = self.shared.table().inspect(key_bytes, now) {
                    for h in &info.holders {
                        if h.session != self.session {
                            self.shared
                                .router
                                .waiting(h.session, &key, self.session, mode);
                        }
                    }
                }
            }
            AcquireOutcome::WouldBlock => self.reply(id, Response::Busy),
            AcquireOutcome::Deadlock(cycle) => {
                cmd::acquire::log_deadlock(&cycle);
                self.error(id, deadlock_error(&cycle))
            }
            AcquireOutcome::WrongType { current } => self.error(id, wrongtype_error(current)),
            AcquireOutcome::Limit(limit) => self.error(id, engine_limit_error(limit)),
        }
        if !queued {
            self.answered.note(ModeLabel::of(&mode));
        }
    }

    /// RENEW's TTL (None: the hold's last one); the outer None: the error is written.
    fn renew_ttl(&mut self, id: u32, key: &[u8], ttl_ms: u32) -> Option<Option<u64>> {
        if !self.key_ok(id, key) {
            return None;
        }
        if ttl_ms == 0 {
            return Some(None);
        }
        let max = self.shared.config.max_ttl_ms;
        if let Err(msg) = cmd::acquire::validate_ttl(u64::from(ttl_ms), max).and_then(|()| {
            cmd::acquire::validate_min_ttl(u64::from(ttl_ms), self.shared.config.min_ttl())
        }) {
            self.error(id, error_from_text(&msg));
            return None;
        }
        Some(Some(u64::from(ttl_ms)))
    }

    fn renewed(&mut self, id: u32, result: Result<u64, crate::engine::NotHeld>) {
        match result {
            Ok(left) => self.reply(
                id,
                Response::Renewed {
                    ttl_ms: u32::try_from(left).unwrap_or(u32::MAX),
                },
            ),
            Err(_) => self.notheld(id),
        }
    }

    fn released(&mut self, id: u32, result: Result<(), crate::engine::NotHeld>) {
        match result {
            Ok(()) => self.reply(id, Response::Ok),
            Err(_) => self.notheld(id),
        }
    }

    /// Counts a NOTHELD and replies it (RELEASE and RENEW).
    fn notheld(&mut self, id: u32) {
        self.shared.stats.notheld.fetch_add(1, Ordering::Relaxed);
        self.error(id, error_from_text(cmd::release::NOTHELD))
    }

    fn inspect(&mut self, id: u32, key: &[u8], now: u64) {
        let info = self.shared.table().inspect(key, now);
        self.reply(id, Response::Inspect(info.as_ref().map(key_state)));
    }

    fn inspect_values(&mut self, id: u32, key: &[u8], now: u64) {
        let state = self
            .shared
            .table()
            .inspect_values(key, now)
            .map(|(info, values)| {
                let mut state = key_state(&info);
                state.values = Some(
                    values
                        .into_iter()
                        .take(state.holders.len())
                        .map(|v| v.map(|v| Bytes::copy_from_slice(&v)).unwrap_or_default())
                        .collect(),
                );
                state
            });
        self.reply(id, Response::Inspect(state));
    }

    fn get_value(&mut self, id: u32, key: &[u8], now: u64) {
        let holders = self
            .shared
            .table()
            .inspect_values(key, now)
            .map(|(info, values)| {
                info.holders
                    .iter()
                    .zip(values)
                    .map(|(h, v)| HolderValue {
                        session: h.session.0,
                        token: h.token.0,
                        value: v.map(|v| Bytes::copy_from_slice(&v)).unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.reply(id, Response::Value(holders));
    }

    /// A value longer than `--max-value-bytes` gets LIMIT, in text mode's words.
    fn value_ok(&mut self, id: u32, value: &[u8]) -> bool {
        let max = self.shared.config.max_value_bytes;
        match cmd::setvalue::value_error(value.len(), max) {
            Some(msg) => {
                let mut e = error_from_text(&msg);
                e.detail = ErrorDetail::Limit(LimitKind::Value);
                self.error(id, e);
                false
            }
            None => true,
        }
    }

    /// WATCH: registers the key (its state is queued first) and replies OK; the pushes
    /// carry this request's id.
    fn watch(&mut self, id: u32, key: &[u8], now: u64) {
        if !self.key_ok(id, key) {
            return;
        }
        let cfg = &self.shared.config;
        let watcher = self
            .watcher
            .get_or_insert_with(|| super::watches::Watcher::new(cfg.watch_backlog))
            .clone();
        if !watcher.watches(key) && watcher.len() >= cfg.max_watches {
            let max = cfg.max_watches;
            return self.error(
                id,
                limit_error(
                    LimitKind::Value,
                    format!("too many watched keys on this connection (the maximum is {max})"),
                ),
            );
        }
        let table = self.shared.table();
        self.shared.watches.watch(&table, &watcher, key, id, now);
        self.reply(id, Response::Ok);
    }

    /// Appends the queued watch messages as PUSH_WATCH frames. Err: the watcher fell
    /// `--watch-backlog` messages behind (the connection closes).
    fn drain_watches(&mut self) -> Result<(), super::watches::Overflow> {
        let Some(w) = self.watcher.clone() else {
            return Ok(());
        };
        let mut msgs = Vec::new();
        w.drain(&mut msgs)?;
        if !msgs.is_empty() {
            self.ticket = self.ticket.max(self.shared.store.settled_ticket());
            for m in &msgs {
                crate::protocol::binary::watch_push(m).encode(m.tag, &mut self.out);
            }
        }
        Ok(())
    }

    fn locks(&mut self, id: u32, pattern: Option<&[u8]>, count: u32) {
        let limit = if count == 0 {
            usize::MAX
        } else {
            count as usize
        };
        let user = &self.user;
        let keys = self.shared.table().keys(
            |k| pattern.is_none_or(|p| crate::glob::glob_match(p, k)) && user.may_access(k),
            limit,
        );
        let keys = keys
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect();
        self.reply(
            id,
            Response::Locks {
                keys,
                truncated: false,
            },
        );
    }

    /// EXPLAIN (protocol.md "Explain waits"): an own request is found by its frame id in
    /// the session's core, so the table is not scanned for it.
    fn explain(
        &mut self,
        core: &Core,
        id: u32,
        target: turnstile_proto::ExplainTarget,
        count: u32,
        now: u64,
    ) {
        use crate::engine::{ExplainTarget, RequestId};
        use turnstile_proto::ExplainTarget as Wire;
        let target = match target {
            Wire::OwnSession => ExplainTarget::Session(self.session),
            Wire::Session(s) => ExplainTarget::Session(SessionId(s)),
            Wire::Request(r) => ExplainTarget::Request(RequestId(r)),
            Wire::OwnRequest(frame) => match queued_request(core, frame) {
                Some((request, key)) => ExplainTarget::RequestOn {
                    request,
                    session: self.session,
                    key,
                },
                None => {
                    return self.error(
                        id,
                        err(format!("request {frame} of this session is not queued")),
                    )
                }
            },
        };
        let user = self.user.clone();
        let limit = edge_limit(count);
        match self
            .shared
            .table()
            .explain(&target, now, limit, |k| user.may_access(k))
        {
            Some(ex) => self.reply(id, Response::Explain(cmd::explain::wire_explanation(&ex))),
            None => self.error(
                id,
                err("the request is not queued (granted, timed out, cancelled, or unknown)"),
            ),
        }
    }

    /// WAITGRAPH: the wait-for graph's edges (a client renders DOT from them).
    fn wait_graph(&mut self, id: u32, count: u32, now: u64) {
        let user = self.user.clone();
        let graph = self
            .shared
            .table()
            .wait_graph(now, edge_limit(count), |k| user.may_access(k));
        let edges = graph
            .edges
            .iter()
            .map(|e| cmd::explain::wire_edge(0, e))
            .collect();
        self.reply(
            id,
            Response::WaitGraph(turnstile_proto::WaitGraph {
                edges,
                truncated: graph.truncated,
            }),
        );
    }

    /// Cluster mode: a request that needs the cluster (a proposal, or a read index
    /// before reading). Runs to its reply before the next frame, so a connection's
    /// changes apply in the order it sent them.
    async fn replicated(&mut self, core: &mut Core, h: &Header, payload: &[u8]) -> Flow {
        let id = h.request_id;
        let Some(cluster) = self.shared.cluster.clone() else {
            return Flow::Continue;
        };
        let Ok(req) = Request::decode(h, payload) else {
            return Flow::Continue;
        };
        let shared = self.shared.clone();
        let clock = || shared.clock.now_ms();
        let reads = || async {
            if cluster.is_leading() {
                cluster.read_barrier().await
            } else if cluster.stale_reads() {
                Ok(())
            } else {
                Err(cluster.not_leader())
            }
        };
        let result: Result<(), Refusal> = match req {
            Request::Acquire(a) => match self.prepare_acquire(core, id, &a) {
                None => Ok(()),
                Some(r) => {
                    let command = Command::Acquire {
                        session: self.session,
                        key: a.key,
                        req: r,
                        value: a.value,
                    };
                    match cluster.propose(clock(), command).await {
                        Ok(Applied::Acquire(outcome)) => {
                            let now = self.shared.clock.now_ms();
                            self.acquired(core, id, a.key, r.id, r.mode, outcome, now);
                            Ok(())
                        }
                        Ok(other) => Err(Refusal::Failed(format!("unexpected {other:?}"))),
                        Err(e) => Err(e),
                    }
                }
            },
            Request::Convert(c) => match self.prepare_convert(core, id, &c) {
                None => Ok(()),
                Some(request) => {
                    let command = Command::Convert {
                        session: self.session,
                        key: c.key,
                        request,
                        to: convert_mode(c.to),
                        wait_ms: c.wait_ms.map(u64::from),
                    };
                    match cluster.propose(clock(), command).await {
                        Ok(Applied::Convert(outcome)) => {
                            let now = self.shared.clock.now_ms();
                            self.converted(core, id, c.key, request, outcome, now);
                            Ok(())
                        }
                        Ok(other) => Err(Refusal::Failed(format!("unexpected {other:?}"))),
                        Err(e) => Err(e),
                    }
                }
            },
            Request::MultiAcquire(m) => match self.prepare_multi(core, id, &m) {
                None => Ok(()),
                Some(r) => {
                    let command = Command::MultiAcquire {
                        session: self.session,
                        items: m
                            .items
                            .iter()
                            .map(|(k, mode)| (*k, mode_from_wire(*mode)))
                            .collect(),
                        req: r,
                    };
                    match cluster.propose(clock(), command).await {
                        Ok(Applied::MultiAcquire(outcome)) => {
                            self.multi_acquired(core, id, &m, &r, outcome);
                            Ok(())
                        }
                        Ok(other) => Err(Refusal::Failed(format!("unexpected {other:?}"))),
                        Err(e) => Err(e),
                    }
                }
            },
            Request::MultiRelease { keys } => {
                if !self.prepare_multi_release(id, &keys) {
                    return Flow::Continue;
                }
                let command = Command::MultiRelease {
                    session: self.session,
                    keys,
                };
                match cluster.propose(clock(), command).await {
                    Ok(Applied::MultiRelease(count)) => {
                        self.multi_released(id, count);
                        Ok(())
                    }
                    Ok(other) => Err(Refusal::Failed(format!("unexpected {other:?}"))),
                    Err(e) => Err(e),
                }
            }
            Request::Release { key } => {
                if !self.key_ok(id, key) {
                    return Flow::Continue;
                }
                let command = Command::Release {
                    session: self.session,
                    key,
                };
                match cluster.propose(clock(), command).await {
                    Ok(Applied::Release(result)) => {
                        self.released(id, result);
                        Ok(())
                    }
                    Ok(other) => Err(Refusal::Failed(format!("unexpected {other:?}"))),
                    Err(e) => Err(e),
                }
            }
            Request::Renew { key, ttl_ms } => match self.renew_ttl(id, key, ttl_ms) {
                None => Ok(()),
                Some(ttl) => match cluster.read_barrier().await {
                    Ok(()) => {
                        let now = self.shared.clock.now_ms();
                        let result = cluster.node().table().renew(self.session, key, ttl, now);
                        self.renewed(id, result);
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            },
            Request::Cancel { target } => self.cancel_replicated(core, id, target).await,
            Request::Inspect { key } => {
                if !self.key_ok(id, key) {
                    return Flow::Continue;
                }
                match reads().await {
                    Ok(()) => {
                        self.inspect(id, key, self.shared.clock.now_ms());
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::InspectValues { key } | Request::GetValue { key } => {
                if !self.key_ok(id, key) {
                    return Flow::Continue;
                }
                match reads().await {
                    Ok(()) => {
                        let now = self.shared.clock.now_ms();
                        if matches!(req, Request::GetValue { .. }) {
                            self.get_value(id, key, now);
                        } else {
                            self.inspect_values(id, key, now);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Request::SetValue { key, value } => {
                if !self.key_ok(id, key) || !self.value_ok(id, value) {
                    return Flow::Continue;
                }
                let command = Command::SetValue {
                    session: self.session,
                    key,
                    value,
                };
                match cluster.propose(clock(), command).await {
                    Ok(Applied::SetValue(result)) => {
                        self.released(id, result);
                        Ok(())
                    }
                    Ok(other) => Err(Refusal::Failed(format!("unexpected {other:?}"))),
                    Err(e) => Err(e),
                }
            }
            Request::Locks { pattern, count } => match reads().await {
                Ok(()) => {
                    self.locks(id, pattern, count);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Request::Explain { target, count } => reads().await.map(|()| {
                let now = self.shared.clock.now_ms();
                self.explain(core, id, target, count, now)
            }),
            Request::WaitGraph { count } => reads()
                .await
                .map(|()| self.wait_graph(id, count, self.shared.clock.now_ms())),
            _ => Ok(()),
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(r) => {
                self.error(id, refusal_error(&r));
                if matches!(r, Refusal::Uncertain(_)) {
                    Flow::Close
                } else {
                    Flow::Continue
                }
            }
        }
    }

    /// The session forgets a cancelled request; its PUSH_CANCELLED goes out before the
    /// CANCEL_RESULT.
    fn cancelled(&mut self, core: &mut Core, request: crate::engine::RequestId, target: u32) {
        core.queued.remove(&request);
        core.by_client.remove(&target);
        Push::Cancelled.encode(target, &mut self.out);
    }

    /// Whether `request` of this session still waits on `key` (its grant or timeout may
    /// have happened already, with the push on its way).
    fn still_queued(&self, key: &[u8], request: crate::engine::RequestId, now: u64) -> bool {
        self.shared.table().inspect(key, now).is_some_and(|i| {
            i.waiters
                .iter()
                .any(|w| w.session == self.session && w.request == request)
        })
    }

    /// CANCEL in cluster mode: as [`Self::cancel`], with the cancel proposed.
    async fn cancel_replicated(
        &mut self,
        core: &mut Core,
        id: u32,
        target: u32,
    ) -> Result<(), Refusal> {
        let Some(cluster) = self.shared.cluster.clone() else {
            return Ok(());
        };
        let now = self.shared.clock.now_ms();
        let mut cancelled = false;
        let queued = queued_request(core, target);
        if let Some((request, key)) = queued {
            if self.still_queued(key.as_bytes(), request, now) {
                let command = Command::Cancel {
                    session: self.session,
                    key: key.as_bytes(),
                };
                if let Applied::Cancel(true) = cluster.propose(now, command).await? {
                    self.cancelled(core, request, target);
                    cancelled = true;
                }
            }
        }
        self.reply(id, Response::CancelResult { cancelled });
        Ok(())
    }

    fn cancel(&mut self, core: &mut Core, id: u32, target: u32, now: u64) {
        let mut cancelled = false;
        let queued = queued_request(core, target);
        if let Some((request, key)) = queued {
            // Only this very request: its grant or timeout may have happened already
            // (the push is on its way) and another request of the session may since
            // have queued for the same key.
            let done = self.still_queued(key.as_bytes(), request, now) && {
                let (done, ticket) =
                    self.shared
                        .store
                        .cancel(self.session, key.as_bytes(), now, &mut self.events);
                self.ticket = self.ticket.max(ticket);
                done
            };
            if done {
                self.cancelled(core, request, target);
                cancelled = true;
            }
        }
        self.reply(id, Response::CancelResult { cancelled });
    }

    /// INFO: text mode's INFO text, by running the text command.
    fn info(&mut self, section: &[u8], now: u64) -> Bytes {
        let mut conn = ConnState::new(self.session, self.peer, self.user.clone(), true);
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        let mut ctx = cmd::Ctx {
            shared: &self.shared,
            conn: &mut conn,
            now,
            out: ReplyWriter {
                out: &mut buf,
                proto: Proto::Resp2,
            },
            events: &mut events,
            ticket: 0,
            read_ok: true,
        };
        let name: &[u8] = b"INFO";
        let args: Vec<&[u8]> = if section.is_empty() {
            vec![name]
        } else {
            vec![name, section]
        };
        cmd::dispatch(&mut ctx, &args);
        // The reply is one bulk string: `$<n>\r\n<text>\r\n`.
        let text = buf
            .iter()
            .position(|&b| b == b'\n')
            .and_then(|nl| buf.get(nl + 1..buf.len().saturating_sub(2)))
            .unwrap_or(b"");
        Bytes::copy_from_slice(text)
    }

    /// Turns an event or notice for the session into a push.
    fn deliver(&mut self, core: &mut Core, d: Delivery, now: u64) {
        // The change behind the event was logged before the event was sent.
        self.ticket = self.ticket.max(self.shared.store.read_ticket());
        match d {
            Delivery::Event(Event::Granted {
                request,
                key,
                token,
                ..
            }) => {
                let Some(q) = core.queued.get_mut(&request) else {
                    return;
                };
                if q.remaining > 1 {
                    // A multi-lock: one push per key, the last one ends the request.
                    q.remaining -= 1;
                    Push::Granted { token: token.0 }.encode(q.client_id, &mut self.out);
                    return;
                }
                let q = core.queued.remove(&request).expect("just found");
                core.by_client.remove(&q.client_id);
                Push::Granted { token: token.0 }.encode(q.client_id, &mut self.out);
                self.shared.stats.record_wait(
                    self.session.0,
                    q.mode,
                    q.since.elapsed().as_micros() as u64,
                );
                // Someone queued behind this grant was announced to the previous holder:
                // tell the new one.
                if let Some(info) = self.shared.table().inspect(key.as_bytes(), now) {
                    if let Some(w) = info.waiters.first() {
                        Push::Waiting {
                            session: w.session.0,
                            mode: mode_kind(w.mode),
                            permits: w.permits,
                            key: Bytes::copy_from_slice(key.as_bytes()),
                        }
                        .encode(0, &mut self.out);
                    }
                }
            }
            Delivery::Event(Event::TimedOut { request, .. }) => {
                if let Some(q) = core.queued.remove(&request) {
                    core.by_client.remove(&q.client_id);
                    Push::TimedOut.encode(q.client_id, &mut self.out);
                }
            }
            Delivery::Event(Event::Expired { key, token, .. }) => Push::LeaseLost {
                reason: LostReason::Expired,
                token: token.0,
                key: Bytes::copy_from_slice(key.as_bytes()),
            }
            .encode(0, &mut self.out),
            // Concerns no session (never routed).
            Delivery::Event(Event::DelayEnded { .. }) => {}
            Delivery::Waiting { key, waiter, mode } => Push::Waiting {
                session: waiter.0,
                mode: mode_kind(mode),
                permits: mode.permits(),
                key: Bytes::copy_from_slice(key.as_bytes()),
            }
            .encode(0, &mut self.out),
        }
    }
}

/// EXPLAIN's and WAITGRAPH's count: 0 is the default, anything is capped at the maximum.
fn edge_limit(count: u32) -> usize {
    match count {
        0 => crate::engine::DEFAULT_EDGES,
        n => (n as usize).min(crate::engine::MAX_EDGES),
    }
}

/// The queued ACQUIRE a CANCEL names by its client request id, with its key.
fn queued_request(core: &Core, target: u32) -> Option<(crate::engine::RequestId, Key)> {
    core.by_client
        .get(&target)
        .and_then(|r| core.queued.get(r).map(|q| (*r, q.key.clone())))
}
