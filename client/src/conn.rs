//! One connection: the handshake, a writer task that sends everything queued for it in
//! one write, and a reader task that hands every frame to the client.
//!
//! Sending never awaits, so a caller's future can be dropped at any point without leaving
//! half a frame behind: a request is encoded into the connection's output buffer under a
//! short lock. When nothing else is in flight the caller writes it to the socket at once
//! with a non-blocking write (no task hop on the latency path); otherwise, or when the
//! socket would block, the writer task is woken and every request issued while it writes
//! goes out together in its next write.
//!
//! Over TLS ([`crate::TlsConfig`]) every write goes through the writer task (rustls has
//! no non-blocking write of a whole record), which owns the stream's write half.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::client::TlsStream;
use tracing::debug;
use turnstile_proto::{
    DecodeError, ErrorCode, ErrorDetail, ErrorReply, Header, Hello, HelloOk, LimitKind, Request,
    Response, ServerMessage, HEADER_LEN, MAGIC, MAX_PAYLOAD, MAX_VERSION, MIN_VERSION,
};

use crate::client::Inner;
use crate::error::{Error, Result};
use crate::tls::Connector;

/// An opened connection: plain TCP, or TLS over TCP.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The write side of a connection.
enum WriteSide {
    /// Written by senders directly (non-blocking) or by the writer task.
    Tcp(OwnedWriteHalf),
    /// Written by the writer task only.
    Tls(tokio::sync::Mutex<WriteHalf<TlsStream<TcpStream>>>),
}

/// A live connection, shared by everyone who sends on it.
pub(crate) struct Link {
    /// Which connection of the client this is (1, 2, ... as it reconnects).
    pub(crate) gen: u64,
    /// The address it was opened to (`host:port`, as configured or as a redirect named
    /// it).
    pub(crate) addr: String,
    half: WriteSide,
    out: Mutex<Out>,
    wake: Notify,
    closed: watch::Sender<bool>,
    started: Instant,
    /// Microseconds since `started` when the last bytes arrived.
    last_rx: AtomicU64,
}

struct Out {
    buf: BytesMut,
    /// The writer task owns the socket's write side until `buf` is empty.
    writing: bool,
    /// No more sends; the writer stops.
    closed: bool,
    /// No more sends; the writer flushes what is queued, then stops.
    closing: bool,
}

impl Link {
    fn new(gen: u64, addr: String, half: WriteSide) -> Link {
        Link {
            gen,
            addr,
            half,
            out: Mutex::new(Out {
                buf: BytesMut::with_capacity(8 * 1024),
                writing: false,
                closed: false,
                closing: false,
            }),
            wake: Notify::new(),
            closed: watch::Sender::new(false),
            started: Instant::now(),
            last_rx: AtomicU64::new(0),
        }
    }

    fn out(&self) -> std::sync::MutexGuard<'_, Out> {
        // A panic while holding this lock cannot leave the buffer inconsistent (appends
        // and swaps only), so a poisoned lock is still usable.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the frame(s) written by `encode`: at once when `direct` and the socket is
    /// idle, else through the writer task. Err when the connection is closed (nothing
    /// was sent).
    pub(crate) fn send(&self, direct: bool, encode: impl FnOnce(&mut BytesMut)) -> Result<(), ()> {
        let mut out = self.out();
        if out.closed || out.closing {
            return Err(());
        }
        let idle = !out.writing;
        let start = out.buf.len();
        encode(&mut out.buf);
        if !idle {
            return Ok(()); // the writer task is on it
        }
        if let (true, 0, WriteSide::Tcp(half)) = (direct, start, &self.half) {
            match half.try_write(&out.buf) {
                Ok(n) if n == out.buf.len() => {
                    out.buf.clear();
                    return Ok(());
                }
                Ok(n) => out.buf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    out.buf.clear();
                    drop(out);
                    self.close();
                    return Err(());
                }
            }
        }
        out.writing = true;
        drop(out);
        self.wake.notify_one();
        Ok(())
    }

    /// Closes the connection now (what is queued is dropped).
    pub(crate) fn close(&self) {
        self.out().closed = true;
        self.closed.send_replace(true);
        self.wake.notify_one();
    }

    /// Sends what is queued, then closes.
    pub(crate) fn close_after_flush(&self) {
        self.out().closing = true;
        self.wake.notify_one();
    }

    /// Whether the connection is closed.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Completes when the connection is closed.
    pub(crate) async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// How long since bytes last arrived.
    pub(crate) fn silent_for(&self) -> Duration {
        let last = Duration::from_micros(self.last_rx.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_micros() as u64;
        self.last_rx.store(now, Ordering::Relaxed);
    }
}

/// Connects to `addr` (over TLS with `tls`) and runs the handshake. Returns the stream,
/// the server's HELLO_OK and whatever bytes came after it.
pub(crate) async fn open(
    addr: &str,
    hello: &Hello<'_>,
    connect_timeout: Duration,
    tls: Option<&Connector>,
) -> Result<(Stream, HelloOk, BytesMut)> {
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Disconnected)??;
    tcp.set_nodelay(true)?;
    let mut out = BytesMut::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    Request::Hello(hello.clone()).encode(0, &mut out);
    match tls {
        None => {
            let mut tcp = tcp;
            tcp.write_all(&out).await?;
            let (ok, rest) = handshake(&mut tcp, deadline).await?;
            Ok((Stream::Tcp(tcp), ok, rest))
        }
        Some(c) => {
            let name = c.name_for(addr)?;
            let mut tls = tokio::time::timeout_at(deadline, c.connector.connect(name, tcp))
                .await
                .map_err(|_| Error::Disconnected)??;
            tls.write_all(&out).await?;
            tls.flush().await?;
            let (ok, rest) = handshake(&mut tls, deadline).await?;
            Ok((Stream::Tls(Box::new(tls)), ok, rest))
        }
    }
}

/// Reads the answer to the HELLO sent.
async fn handshake<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: tokio::time::Instant,
) -> Result<(HelloOk, BytesMut)> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        // A server over its connection limit refuses before it knows the mode, in text:
        // `-LIMIT max number of clients reached\r\n`.
        if buf.first() == Some(&b'-') {
            if let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&buf[1..nl]).into_owned();
                let (code, message) = ErrorCode::split_text(&line);
                let mut e = ErrorReply::new(code, message.to_string());
                if code == ErrorCode::Limit {
                    e.detail = ErrorDetail::Limit(LimitKind::Connections);
                }
                return Err(e.into());
            }
        }
        match Header::check(&buf, MAX_PAYLOAD) {
            Ok(h) => {
                let msg = ServerMessage::decode(&h, &buf[HEADER_LEN..h.frame_len()])?;
                buf.advance(h.frame_len());
                return match msg {
                    ServerMessage::Response(Response::HelloOk(ok)) => Ok((ok, buf)),
                    ServerMessage::Response(Response::Error(e)) => Err(e.into()),
                    _ => Err(Error::Protocol(DecodeError::Malformed {
                        opcode: h.opcode,
                        reason: "expected HELLO_OK or ERROR",
                    })),
                };
            }
            Err(DecodeError::Incomplete) => {}
            Err(e) => return Err(e.into()),
        }
        let n = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
            .await
            .map_err(|_| Error::Disconnected)??;
        if n == 0 {
            return Err(Error::Disconnected);
        }
    }
}

/// The HELLO this client sends.
pub(crate) fn hello<'a>(
    timeout_ms: u32,
    resume: Option<[u8; 16]>,
    name: &'a [u8],
    auth: Option<(&'a [u8], &'a [u8])>,
) -> Hello<'a> {
    Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        session_timeout_ms: timeout_ms,
        resume,
        name,
        auth,
    }
}

/// Starts the reader and writer tasks of a handshaken stream.
pub(crate) fn start(
    inner: Weak<Inner>,
    stream: Stream,
    leftover: BytesMut,
    gen: u64,
    addr: String,
) -> std::sync::Arc<Link> {
    match stream {
        Stream::Tcp(tcp) => {
            let (rd, wr) = tcp.into_split();
            let link = std::sync::Arc::new(Link::new(gen, addr, WriteSide::Tcp(wr)));
            link.touch();
            tokio::spawn(write_loop(link.clone()));
            tokio::spawn(read_loop(link.clone(), rd, leftover, inner));
            link
        }
        Stream::Tls(tls) => {
            let (rd, wr) = tokio::io::split(*tls);
            let half = WriteSide::Tls(tokio::sync::Mutex::new(wr));
            let link = std::sync::Arc::new(Link::new(gen, addr, half));
            link.touch();
            tokio::spawn(write_loop(link.clone()));
            tokio::spawn(read_loop(link.clone(), rd, leftover, inner));
            link
        }
    }
}

/// Writes all of `buf` to the socket from the writer task.
async fn write_out(half: &WriteSide, buf: &mut BytesMut) -> std::io::Result<()> {
    match half {
        WriteSide::Tcp(half) => {
            while !buf.is_empty() {
                half.writable().await?;
                match half.try_write(buf) {
                    Ok(n) => buf.advance(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        WriteSide::Tls(half) => {
            let mut half = half.lock().await;
            half.write_all(buf).await?;
            buf.clear();
            half.flush().await
        }
    }
}

/// Writes what senders queued while the socket was busy. The socket's write side is shut
/// down when the last reference to the link goes.
async fn write_loop(link: std::sync::Arc<Link>) {
    let mut spare = BytesMut::with_capacity(8 * 1024);
    loop {
        link.wake.notified().await;
        loop {
            {
                let mut out = link.out();
                if out.closed {
                    return;
                }
                if out.buf.is_empty() {
                    out.writing = false;
                    if out.closing {
                        drop(out);
                        link.close();
                        return;
                    }
                    break;
                }
                // Write outside the lock; senders append to the other buffer meanwhile
                // (and never write themselves while `writing` is set).
                std::mem::swap(&mut out.buf, &mut spare);
            }
            if write_out(&link.half, &mut spare).await.is_err() {
                link.close();
                return;
            }
            spare.clear();
            if spare.capacity() > 1024 * 1024 {
                spare = BytesMut::with_capacity(8 * 1024);
            }
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    link: std::sync::Arc<Link>,
    mut half: R,
    mut buf: BytesMut,
    inner: Weak<Inner>,
) {
    let mut closed = link.closed.subscribe();
    loop {
        loop {
            match Header::check(&buf, MAX_PAYLOAD) {
                Ok(h) => {
                    let msg = ServerMessage::decode(&h, &buf[HEADER_LEN..h.frame_len()]);
                    buf.advance(h.frame_len());
                    let Some(inner) = inner.upgrade() else {
                        link.close();
                        return;
                    };
                    match msg {
                        Ok(msg) => inner.dispatch(&link, h.request_id, msg),
                        Err(e) => {
                            debug!(error = %e, "undecodable frame from the server");
                            link.close();
                            return;
                        }
                    }
                }
                Err(DecodeError::Incomplete) => {
                    if let Some(h) = Header::peek(&buf) {
                        buf.reserve(h.frame_len().saturating_sub(buf.len()));
                    }
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "bad frame from the server");
                    link.close();
                    return;
                }
            }
        }
        if buf.is_empty() && buf.capacity() > 1024 * 1024 {
            buf = BytesMut::with_capacity(16 * 1024);
        }
        tokio::select! {
            read = half.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    link.close();
                    return;
                }
                Ok(_) => link.touch(),
            },
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}
