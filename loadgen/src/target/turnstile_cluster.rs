//! A Turnstile cluster in text mode (docs/cluster.md): every connection finds the leader
//! and runs the workload there, as a cluster-aware client would.
//!
//! Finding the leader: the nodes are asked `INFO replication` in turn, starting with the
//! leader some connection found last. A node that says `role:leader` (or shows no role: a
//! standalone server) is used; a node that names its leader (`leader_addr:host:port`) sends
//! the search there next; when no node knows a leader (an election is on), the round is
//! tried again after a backoff (5 ms doubling up to 50 ms, plus up to half again of
//! jitter) until the patience (`--leader-timeout`) runs out.
//!
//! During a run: an ACQUIRE answered `-NOTLEADER host:port` took no effect, so it is sent
//! again to host:port (a redirect, not an error); `-NOTLEADER` alone means no leader is
//! known yet: back off, find the leader again, send again. A lost connection, `-ERR
//! UNCERTAIN` and a RELEASE answered NOTLEADER are errors: the workload counts them and
//! opens a new connection. They are not retried here because the hold belongs to this
//! connection's session, which a new connection cannot release, and an ACQUIRE whose
//! connection broke may or may not have been granted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::turnstile_text::{encode_acquire, encode_release};
use super::{AcquireRequest, Acquired, Conn, Grant, LockKind, Target};
use crate::resp::{self, Reply, RespConn};

/// How long one node may take to accept a connection and answer INFO.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The first and the largest pause between two rounds of looking for the leader.
const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(50);

/// Splits `a,b,c` into addresses.
pub fn split_addrs(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// What the nodes share: where they are and who leads, as last seen.
struct Nodes {
    addrs: Vec<String>,
    leader: Mutex<Option<String>>,
    patience: Duration,
}

pub struct TurnstileCluster {
    nodes: Arc<Nodes>,
}

impl TurnstileCluster {
    /// `addrs` is the comma-separated list of the nodes' client addresses; `patience`
    /// bounds how long a connection looks for the leader before it reports an error.
    pub fn new(addrs: &str, patience: Duration) -> Self {
        Self {
            nodes: Arc::new(Nodes {
                addrs: split_addrs(addrs),
                leader: Mutex::new(None),
                patience,
            }),
        }
    }
}

impl Target for TurnstileCluster {
    type Conn = ClusterConn;

    fn supports(&self, _kind: LockKind) -> bool {
        true
    }

    fn waiting(&self) -> &'static str {
        "queued on the leader (ACQUIRE ... WAIT)"
    }

    async fn connect(&self, id: usize) -> anyhow::Result<ClusterConn> {
        let (conn, addr) = self.nodes.find_leader(id).await?;
        Ok(ClusterConn {
            conn,
            addr,
            since: Instant::now(),
            id,
            nodes: Arc::clone(&self.nodes),
            redirects: 0,
        })
    }
}

/// A node's `INFO replication`, as `name:value` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationInfo {
    pub fields: Vec<(String, String)>,
}

impl ReplicationInfo {
    pub fn parse(text: &str) -> Self {
        ReplicationInfo {
            fields: text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    /// `leader`, `follower`, `candidate`, ...; None on a server without the field.
    pub fn role(&self) -> Option<&str> {
        self.get("role")
    }

    /// Whether this node serves state changes: the leader, or a standalone server.
    pub fn leads(&self) -> bool {
        matches!(self.role(), None | Some("leader"))
    }

    /// The leader's client address, when the node knows one (`host:port`).
    pub fn leader_addr(&self) -> Option<&str> {
        self.get("leader_addr")
            .filter(|a| a.contains(':') && !a.eq_ignore_ascii_case("none"))
    }
}

/// Asks `INFO replication` over an open connection.
pub async fn info_replication(conn: &mut RespConn) -> anyhow::Result<ReplicationInfo> {
    resp::command(conn.request(), 2)
        .arg(b"INFO")
        .arg(b"replication");
    match conn.round_trip().await? {
        Reply::Bulk(text) => Ok(ReplicationInfo::parse(&String::from_utf8_lossy(text))),
        other => bail!("INFO replication answered {}", other.describe()),
    }
}

/// Connects to `addr` and asks its `INFO replication`, within [`PROBE_TIMEOUT`].
pub async fn probe(addr: &str) -> anyhow::Result<(RespConn, ReplicationInfo)> {
    tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut conn = RespConn::connect(addr).await?;
        let info = info_replication(&mut conn)
            .await
            .with_context(|| format!("asking {addr}"))?;
        Ok((conn, info))
    })
    .await
    .map_err(|_| anyhow!("{addr}: no answer to INFO within {PROBE_TIMEOUT:?}"))?
}

/// A growing pause with jitter, for retries while a cluster has no leader.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn sleep(&mut self) {
        let jitter = fastrand::u64(0..=self.next.as_micros() as u64 / 2);
        tokio::time::sleep(self.next + Duration::from_micros(jitter)).await;
        self.next = (self.next * 2).min(BACKOFF_MAX);
    }
}

impl Nodes {
    /// Finds the leader, trying the last one seen first and then the nodes from number
    /// `start` on; returns a connection to it and its address.
    async fn find_leader(&self, start: usize) -> anyhow::Result<(RespConn, String)> {
        anyhow::ensure!(!self.addrs.is_empty(), "no cluster nodes given");
        let deadline = Instant::now() + self.patience;
        let mut backoff = Backoff::new();
        let mut why = Vec::new();
        loop {
            let mut queue: VecDeque<String> = VecDeque::with_capacity(self.addrs.len() + 1);
            if let Some(l) = self.leader.lock().clone() {
                queue.push_back(l);
            }
            let n = self.addrs.len();
            queue.extend((0..n).map(|i| self.addrs[(start + i) % n].clone()));
            let mut tried: Vec<String> = Vec::with_capacity(queue.len());
            why.clear();
            while let Some(addr) = queue.pop_front() {
                if tried.contains(&addr) {
                    continue;
                }
                tried.push(addr.clone());
                match probe(&addr).await {
                    Ok((conn, info)) if info.leads() => {
                        *self.leader.lock() = Some(addr.clone());
                        return Ok((conn, addr));
                    }
                    Ok((_, info)) => {
                        let role = info.role().unwrap_or("?");
                        match info.leader_addr() {
                            Some(l) => {
                                why.push(format!("{addr} is a {role}, names leader {l}"));
                                if !tried.iter().any(|t| t == l) {
                                    queue.push_front(l.to_string());
                                }
                            }
                            None => why.push(format!("{addr} is a {role}, knows no leader")),
                        }
                    }
                    Err(e) => why.push(format!("{e:#}")),
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no leader found within {:?} ({})",
                    self.patience,
                    why.join("; ")
                );
            }
            backoff.sleep().await;
        }
    }
}

/// One connection to the leader (one session).
pub struct ClusterConn {
    conn: RespConn,
    addr: String,
    /// When the connection to `addr` was opened.
    since: Instant,
    id: usize,
    nodes: Arc<Nodes>,
    redirects: u64,
}

impl ClusterConn {
    /// The node this connection is on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// When the connection to the node it is on was opened (it changes node on a
    /// redirect).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// NOTLEADER answers this connection followed so far.
    pub fn redirects(&self) -> u64 {
        self.redirects
    }

    async fn rediscover(&mut self) -> anyhow::Result<()> {
        let (conn, addr) = self.nodes.find_leader(self.id).await?;
        self.conn = conn;
        self.addr = addr;
        self.since = Instant::now();
        Ok(())
    }
}

/// The address in `NOTLEADER host:port`: Some(Some(addr)), Some(None) for `NOTLEADER`
/// alone, None for any other error.
pub fn not_leader(error: &[u8]) -> Option<Option<String>> {
    let rest = error.strip_prefix(b"NOTLEADER")?;
    if !(rest.is_empty() || rest[0] == b' ') {
        return None;
    }
    let addr = String::from_utf8_lossy(rest).trim().to_string();
    Some((!addr.is_empty()).then_some(addr))
}

impl Conn for ClusterConn {
    async fn acquire(&mut self, req: &AcquireRequest<'_>) -> anyhow::Result<Acquired> {
        let deadline = Instant::now() + self.nodes.patience;
        let mut backoff = Backoff::new();
        let mut hops = 0u32;
        loop {
            encode_acquire(self.conn.request(), req);
            let redirect = match self.conn.round_trip().await? {
                Reply::Integer(token) if token > 0 => {
                    return Ok(Acquired::Granted(Grant {
                        token: token as u64,
                    }))
                }
                Reply::Nil => return Ok(Acquired::TimedOut),
                Reply::Error(e) => match not_leader(e) {
                    Some(redirect) => redirect,
                    None => bail!(
                        "ACQUIRE answered -{} (on {})",
                        String::from_utf8_lossy(e),
                        self.addr
                    ),
                },
                other => bail!("ACQUIRE answered {} (on {})", other.describe(), self.addr),
            };
            if Instant::now() >= deadline {
                bail!(
                    "ACQUIRE still answered NOTLEADER after {:?} (last on {})",
                    self.nodes.patience,
                    self.addr
                );
            }
            self.redirects += 1;
            if hops > 0 {
                backoff.sleep().await;
            }
            hops += 1;
            match redirect {
                Some(addr) => match RespConn::connect(&addr).await {
                    Ok(conn) => {
                        *self.nodes.leader.lock() = Some(addr.clone());
                        self.conn = conn;
                        self.addr = addr;
                        self.since = Instant::now();
                    }
                    Err(_) => self.rediscover().await?,
                },
                None => {
                    backoff.sleep().await;
                    self.rediscover().await?;
                }
            }
        }
    }

    async fn release(&mut self, key: &[u8], _grant: Grant) -> anyhow::Result<()> {
        encode_release(self.conn.request(), key);
        match self.conn.round_trip().await? {
            Reply::Integer(1) => Ok(()),
            other => bail!("RELEASE answered {} (on {})", other.describe(), self.addr),
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_replication() {
        let info = ReplicationInfo::parse(
            "# Replication\r\nrole:follower\r\nterm:3\r\nleader_addr:127.0.0.1:7402\r\n",
        );
        assert_eq!(info.role(), Some("follower"));
        assert!(!info.leads());
        assert_eq!(info.leader_addr(), Some("127.0.0.1:7402"));
        assert_eq!(info.get_u64("term"), Some(3));
        let none = ReplicationInfo::parse("role:candidate\r\nleader_addr:\r\n");
        assert_eq!(none.leader_addr(), None);
        let standalone = ReplicationInfo::parse("# Replication\r\nmode:standalone\r\n");
        assert!(standalone.leads());
    }

    #[test]
    fn parses_redirects() {
        assert_eq!(
            not_leader(b"NOTLEADER 127.0.0.1:7403"),
            Some(Some("127.0.0.1:7403".into()))
        );
        assert_eq!(not_leader(b"NOTLEADER"), Some(None));
        assert_eq!(not_leader(b"NOTLEADERS x"), None);
        assert_eq!(not_leader(b"ERR UNCERTAIN"), None);
    }

    #[test]
    fn splits_address_lists() {
        assert_eq!(split_addrs("a:1, b:2,,c:3"), ["a:1", "b:2", "c:3"]);
    }
}
