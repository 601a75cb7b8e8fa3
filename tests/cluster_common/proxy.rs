//! A TCP proxy in front of every node's raft listener, to cut, black-hole or delay the
//! traffic between chosen pairs of nodes.
//!
//! # Why one proxy per destination, filtered per (source, destination)
//!
//! openraft stores one raft address per node in the replicated membership, and every
//! node uses that address to reach it. So traffic cannot be steered through a separate
//! proxy per link: node `j`'s membership address is one proxy, `P_j`, that everyone
//! dials, and `P_j` forwards to `j`'s real `--raft-addr`. To tell the links apart, `P_j`
//! reads the first frame of every connection: the dialer's handshake (`src/raft/network.rs`:
//! `len:u32be` then the postcard-encoded `Hello { magic: [u8; 8], version: u16, from:
//! u64, to: u64, password }`, the integers as varints). `from` names the dialing node, so
//! each connection belongs to exactly one directed link `(from, to)`. Every raft
//! connection carries one node's requests and the responses to them, so:
//!
//! - cutting `(a, b)` stops `a`'s RPCs to `b` (appends, votes, snapshots from `a`);
//! - isolating `n` cuts `(n, x)` and `(x, n)` for every other `x`: `n` neither reaches
//!   nor is reached by anyone. Client traffic does not go through the proxies.
//!
//! # Link states
//!
//! - [`Link::Up`]: bytes are forwarded as they come.
//! - [`Link::Delay`]: every chunk is forwarded that long after it was read (both
//!   directions; throughput is not limited, latency is added).
//! - [`Link::Cut`]: open connections of the link are closed; new ones are closed right
//!   after their handshake frame (the dialer sees the connection fail at once).
//! - [`Link::Blackhole`]: nothing is forwarded and nothing is closed: bytes are read and
//!   dropped, so requests time out. Leaving this state closes the link's connections
//!   (their byte streams lost frames).
//!
//! A connection whose handshake does not parse (a changed wire format) counts as coming
//! from node 0: [`Proxies::unparsed`] reports such connections and the tests fail on
//! them, since a link filter that cannot see sources would make a partition test
//! meaningless.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The handshake's magic (`src/raft/network.rs`).
const MAGIC: &[u8; 8] = b"TSRAFT\0\x01";
/// A handshake frame longer than this is not one.
const MAX_HELLO: usize = 64 * 1024;
/// How long a new connection may take to send its handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dialing the real listener may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What happens to the traffic of one directed link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Forwarded.
    Up,
    /// Forwarded this much later.
    Delay(Duration),
    /// Closed and refused.
    Cut,
    /// Accepted, read and dropped.
    Blackhole,
}

impl Link {
    fn forwards(self) -> bool {
        matches!(self, Link::Up | Link::Delay(_))
    }

    fn delay(self) -> Duration {
        match self {
            Link::Delay(d) => d,
            _ => Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct State {
    links: HashMap<(u64, u64), Link>,
    /// Connections seen per link (source 0: handshake not understood).
    connections: BTreeMap<(u64, u64), u64>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change of a link, so connections re-check theirs.
    changed: watch::Sender<u64>,
    bytes: AtomicU64,
}

impl Shared {
    fn link(&self, from: u64, to: u64) -> Link {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.links.get(&(from, to)).copied().unwrap_or(Link::Up)
    }
}

/// The proxies of one test cluster (one listener per node), with their link table.
pub struct Proxies {
    shared: Arc<Shared>,
    listeners: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for Proxies {
    fn default() -> Self {
        Proxies::new()
    }
}

impl Proxies {
    /// No proxies yet; every link up.
    pub fn new() -> Proxies {
        let (changed, _) = watch::channel(0);
        Proxies {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed,
                bytes: AtomicU64::new(0),
            }),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Starts the proxy of node `to` on a free loopback port, forwarding to `target`
    /// (the node's real raft listener, read on every new connection so a restarted node
    /// may move). Returns the proxy's address: the one the membership names.
    pub async fn add(
        &self,
        to: u64,
        target: Arc<Mutex<SocketAddr>>,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let target = *target.lock().unwrap_or_else(|e| e.into_inner());
                tokio::spawn(serve(shared.clone(), stream, to, target));
            }
        });
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(addr)
    }

    /// Sets the state of the directed link `from -> to` (connections `from` dials to `to`).
    pub fn set(&self, from: u64, to: u64, link: Link) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if link == Link::Up {
                st.links.remove(&(from, to));
            } else {
                st.links.insert((from, to), link);
            }
        }
        self.shared.changed.send_modify(|g| *g += 1);
    }

    /// Sets both directions between `node` and each of `others`.
    pub fn isolate(&self, node: u64, others: &[u64], link: Link) {
        for &o in others.iter().filter(|&&o| o != node) {
            self.set(node, o, link);
            self.set(o, node, link);
        }
    }

    /// Every link up again.
    pub fn heal(&self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .links
            .clear();
        self.shared.changed.send_modify(|g| *g += 1);
    }

    /// Connections seen per directed link.
    pub fn connections(&self) -> BTreeMap<(u64, u64), u64> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .clone()
    }

    /// Connections whose handshake could not be read as a raft `Hello`.
    pub fn unparsed(&self) -> u64 {
        self.connections()
            .iter()
            .filter(|((from, _), _)| *from == 0)
            .map(|(_, n)| n)
            .sum()
    }

    /// Bytes forwarded so far.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for t in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Reads a LEB128 varint (postcard's integer encoding).
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `(from, to)` of a raft handshake payload, if it is one.
pub fn parse_hello(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.get(..8)? != MAGIC {
        return None;
    }
    let mut pos = 8;
    let _version = varint(payload, &mut pos)?;
    let from = varint(payload, &mut pos)?;
    let to = varint(payload, &mut pos)?;
    Some((from, to))
}

/// Reads the handshake frame (length prefix included) from a new connection.
async fn read_hello(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let len = stream.read_u32().await.ok()? as usize;
        if len > MAX_HELLO {
            return None;
        }
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
        stream.read_exact(&mut frame[4..]).await.ok()?;
        Some(frame)
    };
    tokio::time::timeout(HELLO_TIMEOUT, read).await.ok()?
}

/// One proxied connection to node `to`.
async fn serve(shared: Arc<Shared>, mut inbound: TcpStream, to: u64, target: SocketAddr) {
    let _ = inbound.set_nodelay(true);
    let Some(hello) = read_hello(&mut inbound).await else {
        return;
    };
    let from = parse_hello(&hello[4..]).map_or(0, |(from, _)| from);
    *shared
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .connections
        .entry((from, to))
        .or_default() += 1;
    let mut changed = shared.changed.subscribe();
    let mut link = shared.link(from, to);
    if link == Link::Cut {
        return;
    }
    if link == Link::Blackhole {
        // Swallow everything until the link changes, then close.
        let mut sink = [0u8; 16 * 1024];
        loop {
            tokio::select! {
                r = inbound.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { return },
                c = changed.changed() => {
                    if c.is_err() || shared.link(from, to) != Link::Blackhole {
                        return;
                    }
                }
            }
        }
    }
    let outbound = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        _ => return, // the node is down: the dialer sees the connection close
    };
    let _ = outbound.set_nodelay(true);
    let (in_rd, in_wr) = inbound.into_split();
    let (out_rd, mut out_wr) = outbound.into_split();
    if out_wr.write_all(&hello).await.is_err() {
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    tasks.spawn(pump(shared.clone(), from, to, in_rd, up_tx));
    tasks.spawn(deliver(shared.clone(), from, to, up_rx, out_wr));
    tasks.spawn(pump(shared.clone(), from, to, out_rd, down_tx));
    tasks.spawn(deliver(shared.clone(), from, to, down_rx, in_wr));
    loop {
        tokio::select! {
            _ = tasks.join_next() => break, // either side ended: close both
            c = changed.changed() => {
                if c.is_err() {
                    break;
                }
                let now = shared.link(from, to);
                let was_blackhole = link == Link::Blackhole;
                link = now;
                if now == Link::Cut || (was_blackhole && now != Link::Blackhole) {
                    break;
                }
            }
        }
    }
    tasks.shutdown().await;
}

/// Reads one direction and queues each chunk with the time it is due, dropping it
/// while the link does not forward.
async fn pump(
    shared: Arc<Shared>,
    from: u64,
    to: u64,
    mut rd: OwnedReadHalf,
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let link = shared.link(from, to);
        if !link.forwards() {
            continue;
        }
        if tx
            .send((Instant::now() + link.delay(), chunk[..n].to_vec()))
            .is_err()
        {
            return;
        }
    }
}

/// Writes queued chunks when they are due, unless the link stopped forwarding meanwhile.
async fn deliver(
    shared: Arc<Shared>,
    from: u64,
    to: u64,
    mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    mut wr: OwnedWriteHalf,
) {
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if !shared.link(from, to).forwards() {
            continue;
        }
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
        shared
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
}
