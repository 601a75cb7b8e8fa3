//! Raft traffic between nodes: TCP, one persistent connection per peer, binary frames.
//!
//! # Wire format
//!
//! Every frame is `len:u32be payload`, the payload postcard-encoded, at most
//! [`MAX_FRAME`] bytes (a longer length closes the connection). A connection starts with
//! one handshake each way:
//!
//! ```text
//! dialer   -> Hello { magic "TSRAFT\0\x01", version, from, to, password }
//! listener -> Welcome | Refused(reason)          (then closes on Refused)
//! dialer   -> (id:u64, RpcRequest)   ...   many, pipelined
//! listener -> (id:u64, RpcResponse)  ...   in completion order, matched by id
//! ```
//!
//! The password (the server's `--requirepass`) is compared in constant time; `to` must be
//! the listener's own id, so a misconfigured address is refused instead of feeding one
//! node another node's traffic. With `--tls-cert` every connection is TLS, started before
//! the Hello: both ends present their certificates and verify the other's against the
//! cluster's CA (the dialer also checks that the certificate names the host it dialed),
//! so the password and the log travel encrypted ([`crate::tls::PeerTls`]).
//!
//! # Connections
//!
//! openraft asks the factory for a client per replication stream and per election; all
//! clients of one peer share one `Peer`: a task owning the connection, dialing when a
//! request finds none, failing every in-flight request when it breaks (openraft retries
//! after its backoff), and stopping with the node. A caller waits for its response with
//! openraft's deadline and forgets its request when the deadline passes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, RaftNetwork, RaftNetworkFactory};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::WriteHalf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::types::typ::{Raft, RaftError};
use super::types::{NodeAddr, NodeId, TypeConfig};
use crate::cmd::auth::constant_time_eq;
use crate::tls::PeerTls;

/// A peer connection: plain TCP or TLS over TCP.
trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for S {}
type BoxStream = Box<dyn PeerStream>;

/// Largest frame accepted or sent (a snapshot chunk is 3 MiB by default).
pub const MAX_FRAME: usize = 64 << 20;
const MAGIC: [u8; 8] = *b"TSRAFT\0\x01";
const VERSION: u16 = 1;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed dial, requests fail at once for this long instead of dialing again.
const REDIAL_AFTER: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    version: u16,
    from: NodeId,
    to: NodeId,
    password: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
enum HelloReply {
    Welcome,
    Refused(String),
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
enum RpcRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

#[derive(Serialize, Deserialize)]
enum RpcResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError>),
    Vote(Result<VoteResponse<NodeId>, RaftError>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<InstallSnapshotError>>),
}

impl RpcRequest {
    fn kind(&self) -> RPCTypes {
        match self {
            RpcRequest::Append(_) => RPCTypes::AppendEntries,
            RpcRequest::Vote(_) => RPCTypes::Vote,
            RpcRequest::Snapshot(_) => RPCTypes::InstallSnapshot,
        }
    }
}

/// Why a request got no response.
enum Failure {
    /// The peer could not be reached (openraft backs off).
    Unreachable(String),
    /// The connection broke with the request in flight (openraft retries).
    Network(String),
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    // TLS may hold back bytes the socket did not take: push them out.
    w.flush().await
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds {MAX_FRAME}"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(v).map_err(|e| e.to_string())
}

fn net_error(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::other(msg.into())
}

/// The network factory openraft owns: one `Peer` per target node, shared by every
/// client openraft asks for.
#[derive(Clone)]
pub struct Network {
    inner: Arc<NetInner>,
}

struct NetInner {
    id: NodeId,
    password: Vec<u8>,
    tls: Option<PeerTls>,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    cancel: CancellationToken,
}

impl Network {
    /// The network of node `id`; `password` is sent to peers in the handshake, over TLS
    /// when `tls` is given. Every connection task stops when `cancel` is cancelled.
    pub fn new(
        id: NodeId,
        password: Option<&str>,
        tls: Option<PeerTls>,
        cancel: CancellationToken,
    ) -> Network {
        Network {
            inner: Arc::new(NetInner {
                id,
                password: password.unwrap_or_default().as_bytes().to_vec(),
                tls,
                peers: Mutex::new(HashMap::new()),
                cancel,
            }),
        }
    }

    fn peer(&self, target: NodeId, node: &NodeAddr) -> Arc<Peer> {
        let mut peers = self.inner.peers.lock();
        if let Some(p) = peers.get(&target) {
            let mut addr = p.addr.lock();
            if *addr != node.raft {
                info!(target, from = %addr, to = %node.raft, "peer address changed");
                addr.clone_from(&node.raft);
            }
            return p.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let peer = Arc::new(Peer {
            target,
            addr: Mutex::new(node.raft.clone()),
            tx,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let dialer = Dialer {
            me: self.inner.id,
            password: self.inner.password.clone(),
            tls: self.inner.tls.clone(),
        };
        tokio::spawn(run_peer(
            peer.clone(),
            rx,
            dialer,
            self.inner.cancel.clone(),
        ));
        peers.insert(target, peer.clone());
        peer
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            me: self.inner.id,
            peer: self.peer(target, node),
        }
    }
}

type Reply = oneshot::Sender<Result<RpcResponse, Failure>>;

/// One peer: its address, the requests in flight, and the channel to its task.
struct Peer {
    target: NodeId,
    addr: Mutex<String>,
    tx: mpsc::UnboundedSender<Outgoing>,
    pending: Mutex<HashMap<u64, Reply>>,
    next_id: AtomicU64,
}

impl Peer {
    fn fail_all(&self, why: &str) {
        let failed: Vec<Reply> = self.pending.lock().drain().map(|(_, r)| r).collect();
        for reply in failed {
            let _ = reply.send(Err(Failure::Network(why.to_string())));
        }
    }

    fn fail(&self, id: u64, failure: Failure) {
        if let Some(reply) = self.pending.lock().remove(&id) {
            let _ = reply.send(Err(failure));
        }
    }
}

/// An encoded request on its way to the peer task.
struct Outgoing {
    id: u64,
    frame: Vec<u8>,
}

struct Dialer {
    me: NodeId,
    password: Vec<u8>,
    tls: Option<PeerTls>,
}

impl Dialer {
    async fn dial(&self, addr: &str, target: NodeId) -> Result<BoxStream, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut stream: BoxStream = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = crate::tls::server_name(addr).map_err(|e| e.to_string())?;
                let tls = tokio::time::timeout(HELLO_TIMEOUT, tls.connector.connect(name, tcp))
                    .await
                    .map_err(|_| format!("TLS handshake with {addr} timed out"))?
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                Box::new(tls)
            }
        };
        let hello = Hello {
            magic: MAGIC,
            version: VERSION,
            from: self.me,
            to: target,
            password: self.password.clone(),
        };
        let handshake = async {
            write_frame(&mut stream, &encode(&hello).map_err(net_error)?).await?;
            let reply = read_frame(&mut stream).await?;
            postcard::from_bytes::<HelloReply>(&reply).map_err(|e| net_error(e.to_string()))
        };
        match tokio::time::timeout(HELLO_TIMEOUT, handshake).await {
            Err(_) => Err(format!("handshake with {addr} timed out")),
            Ok(Err(e)) => Err(format!("handshake with {addr}: {e}")),
            Ok(Ok(HelloReply::Refused(why))) => {
                Err(format!("{addr} refused the connection: {why}"))
            }
            Ok(Ok(HelloReply::Welcome)) => Ok(stream),
        }
    }
}

/// A live connection: the write half and the signal that the reader stopped.
struct Conn {
    writer: WriteHalf<BoxStream>,
    closed: oneshot::Receiver<String>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn run_peer(
    peer: Arc<Peer>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    dialer: Dialer,
    cancel: CancellationToken,
) {
    let mut conn: Option<Conn> = None;
    let mut failed_dial: Option<(Instant, String)> = None;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            why = conn_closed(&mut conn) => {
                debug!(target = peer.target, %why, "raft connection lost");
                conn = None;
                peer.fail_all(&why);
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                if !peer.pending.lock().contains_key(&out.id) {
                    continue; // the caller gave up already
                }
                if conn.is_none() {
                    if let Some((at, why)) = &failed_dial {
                        if at.elapsed() < REDIAL_AFTER {
                            peer.fail(out.id, Failure::Unreachable(why.clone()));
                            continue;
                        }
                    }
                    let addr = peer.addr.lock().clone();
                    match dialer.dial(&addr, peer.target).await {
                        Ok(stream) => {
                            debug!(target = peer.target, %addr, "raft connection up");
                            failed_dial = None;
                            conn = Some(start_reader(peer.clone(), stream));
                        }
                        Err(why) => {
                            debug!(target = peer.target, %why, "raft dial failed");
                            peer.fail(out.id, Failure::Unreachable(why.clone()));
                            failed_dial = Some((Instant::now(), why));
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected above");
                if let Err(e) = write_frame(&mut c.writer, &out.frame).await {
                    conn = None;
                    peer.fail_all(&format!("write: {e}"));
                }
            }
        }
    }
    drop(conn);
    peer.fail_all("the node is shutting down");
}

/// Resolves when the connection's reader stops (never while there is no connection).
async fn conn_closed(conn: &mut Option<Conn>) -> String {
    match conn.as_mut() {
        Some(c) => (&mut c.closed)
            .await
            .unwrap_or_else(|_| "reader ended".into()),
        None => std::future::pending().await,
    }
}

fn start_reader(peer: Arc<Peer>, stream: BoxStream) -> Conn {
    let (mut rd, writer) = tokio::io::split(stream);
    let (closed_tx, closed) = oneshot::channel();
    let reader = tokio::spawn(async move {
        let why = loop {
            let frame = match read_frame(&mut rd).await {
                Ok(f) => f,
                Err(e) => break format!("read: {e}"),
            };
            let (id, resp) = match postcard::from_bytes::<(u64, RpcResponse)>(&frame) {
                Ok(v) => v,
                Err(e) => break format!("undecodable response: {e}"),
            };
            if let Some(reply) = peer.pending.lock().remove(&id) {
                let _ = reply.send(Ok(resp));
            }
        };
        let _ = closed_tx.send(why);
    });
    Conn {
        writer,
        closed,
        reader,
    }
}

/// What openraft calls to reach one peer.
pub struct PeerClient {
    target: NodeId,
    me: NodeId,
    peer: Arc<Peer>,
}

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        req: RpcRequest,
        option: &RPCOption,
    ) -> Result<RpcResponse, RPCError<NodeId, NodeAddr, E>> {
        let kind = req.kind();
        let id = self.peer.next_id.fetch_add(1, Ordering::Relaxed);
        let frame =
            encode(&(id, &req)).map_err(|e| RPCError::Network(NetworkError::new(&net_error(e))))?;
        if frame.len() > MAX_FRAME {
            let hint = match &req {
                RpcRequest::Append(a) => (a.entries.len() as u64 / 2).max(1),
                _ => 1,
            };
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let (tx, rx) = oneshot::channel();
        self.peer.pending.lock().insert(id, tx);
        if self.peer.tx.send(Outgoing { id, frame }).is_err() {
            self.peer.pending.lock().remove(&id);
            return Err(RPCError::Unreachable(Unreachable::new(&net_error(
                "the node is shutting down",
            ))));
        }
        let ttl = option.hard_ttl();
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(Failure::Unreachable(why)))) => {
                Err(RPCError::Unreachable(Unreachable::new(&net_error(why))))
            }
            Ok(Ok(Err(Failure::Network(why)))) => {
                Err(RPCError::Network(NetworkError::new(&net_error(why))))
            }
            Ok(Err(_)) => Err(RPCError::Network(NetworkError::new(&net_error(
                "request dropped",
            )))),
            Err(_) => {
                self.peer.pending.lock().remove(&id);
                Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.me,
                    target: self.target,
                    timeout: ttl,
                }))
            }
        }
    }

    fn mismatch<E: std::error::Error>() -> RPCError<NodeId, NodeAddr, E> {
        RPCError::Network(NetworkError::new(&net_error("response of another kind")))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError>> {
        match self.call(RpcRequest::Append(rpc), &option).await? {
            RpcResponse::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::mismatch()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<InstallSnapshotError>>,
    > {
        match self.call(RpcRequest::Snapshot(rpc), &option).await? {
            RpcResponse::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::mismatch()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError>> {
        match self.call(RpcRequest::Vote(rpc), &option).await? {
            RpcResponse::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::mismatch()),
        }
    }
}

/// Accepts peers' connections on `listener` (over TLS with `tls`) and hands their
/// requests to `raft`, until `cancel` is cancelled.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    id: NodeId,
    password: Option<String>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) {
    let password: Arc<[u8]> = password.unwrap_or_default().into_bytes().into();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let raft = raft.clone();
                    let password = password.clone();
                    let cancel = cancel.clone();
                    let tls = tls.clone();
                    conns.spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            r = accept_conn(stream, tls, raft, id, &password) => if let Err(e) = r {
                                debug!(%from, error = %e, "raft peer connection ended");
                            }
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "raft listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

/// The TLS handshake (when configured), then the connection.
async fn accept_conn(
    tcp: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    raft: Raft,
    id: NodeId,
    password: &[u8],
) -> std::io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let stream: BoxStream = match tls {
        None => Box::new(tcp),
        Some(acceptor) => Box::new(
            tokio::time::timeout(HELLO_TIMEOUT, acceptor.accept(tcp))
                .await
                .map_err(|_| net_error("no TLS handshake in time"))??,
        ),
    };
    serve_conn(stream, raft, id, password).await
}

async fn serve_conn(
    mut stream: BoxStream,
    raft: Raft,
    id: NodeId,
    password: &[u8],
) -> std::io::Result<()> {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| net_error("no handshake in time"))??;
    let refusal = match postcard::from_bytes::<Hello>(&hello) {
        Err(e) => Some(format!("bad handshake: {e}")),
        Ok(h) if h.magic != MAGIC || h.version != VERSION => Some(format!(
            "protocol version {} (this node speaks {VERSION})",
            h.version
        )),
        Ok(h) if h.to != id => Some(format!("this is node {id}, not node {}", h.to)),
        Ok(h) if !password.is_empty() && !constant_time_eq(password, &h.password) => {
            warn!(peer = h.from, "raft peer sent a wrong password");
            Some("wrong password".to_string())
        }
        Ok(h) => {
            debug!(peer = h.from, "raft peer connected");
            None
        }
    };
    let reply = match &refusal {
        Some(why) => HelloReply::Refused(why.clone()),
        None => HelloReply::Welcome,
    };
    write_frame(&mut stream, &encode(&reply).map_err(net_error)?).await?;
    if let Some(why) = refusal {
        return Err(net_error(why));
    }

    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if write_frame(&mut wr, &frame).await.is_err() {
                break;
            }
        }
    });
    let result = loop {
        let frame = match read_frame(&mut rd).await {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        let (req_id, req) = match postcard::from_bytes::<(u64, RpcRequest)>(&frame) {
            Ok(v) => v,
            Err(e) => break Err(net_error(format!("undecodable request: {e}"))),
        };
        // Each request on its own task: a vote is not held up behind a snapshot chunk.
        let raft = raft.clone();
        let out_tx = out_tx.clone();
        tokio::spawn(async move {
            let resp = match req {
                RpcRequest::Append(r) => RpcResponse::Append(raft.append_entries(r).await),
                RpcRequest::Vote(r) => RpcResponse::Vote(raft.vote(r).await),
                RpcRequest::Snapshot(r) => RpcResponse::Snapshot(raft.install_snapshot(r).await),
            };
            match encode(&(req_id, &resp)) {
                Ok(frame) => {
                    let _ = out_tx.send(frame);
                }
                Err(e) => warn!(error = %e, "raft response does not encode"),
            }
        });
    };
    drop(out_tx);
    writer.abort();
    result
}
