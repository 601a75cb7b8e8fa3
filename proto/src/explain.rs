//! EXPLAIN and WAITGRAPH: the wait-for edges on the wire, and their Graphviz DOT form.
//!
//! An edge says that a queued request (the waiter) waits for a blocker on the same key:
//! a holder whose hold conflicts with it, or a request queued ahead of it that conflicts
//! with it (the wait-for graph's rules, protocol.md "Explain waits").
//!
//! ```text
//! edge:  u8 type (0 holder, 1 queued ahead) | u32 depth (0 in GRAPH_RESULT)
//!        u8 kind | u32 limit (the key's kind, as INSPECT_RESULT)
//!        u64 waiter session | u64 waiter request | u8 mode | u32 permits | u64 waited_ms
//!        u64 blocker session | u8 mode | u32 permits
//!        u64 token (holder) or request (queued) | u64 ttl_ms (holder: lease left) or
//!        waited_ms (queued) | str16 key                                  (70 bytes + key)
//! ```
//!
//! [`to_dot`] renders edges as a DOT document: the server uses it for `WAITGRAPH DOT`
//! and a binary client for the same picture from a GRAPH_RESULT.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::MAX_PAYLOAD;
use crate::message::{Kind, ModeKind};
use crate::wire::{put_str16, Bad, Rd};

/// The fixed part of an edge on the wire (everything but the key's bytes).
pub const EDGE_LEN: usize = 70;

/// What a waiter waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// A holder of the key.
    Holder {
        /// The holding session.
        session: u64,
        /// Its mode.
        mode: ModeKind,
        /// Permits it holds.
        permits: u32,
        /// The hold's fencing token.
        token: u64,
        /// Lease left in ms.
        ttl_ms: u64,
    },
    /// A request queued ahead on the key.
    Queued {
        /// The requesting session.
        session: u64,
        /// The mode it wants.
        mode: ModeKind,
        /// Permits it wants.
        permits: u32,
        /// Its request id (the server's, as EXPLAIN REQUEST takes it).
        request: u64,
        /// How long it has waited, in ms.
        waited_ms: u64,
    },
}

impl Blocker {
    /// The blocking session.
    pub fn session(&self) -> u64 {
        match self {
            Blocker::Holder { session, .. } | Blocker::Queued { session, .. } => *session,
        }
    }

    /// The blocker's mode.
    pub fn mode(&self) -> ModeKind {
        match self {
            Blocker::Holder { mode, .. } | Blocker::Queued { mode, .. } => *mode,
        }
    }
}

/// One wait-for edge: the waiter's request on `key` waits for `blocker`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitEdge {
    /// Distance from what EXPLAIN explains (1: its own edges); 0 in a WAITGRAPH.
    pub depth: u32,
    /// The key.
    pub key: Bytes,
    /// The key's kind.
    pub kind: Kind,
    /// The waiting session.
    pub waiter: u64,
    /// The waiting request's id (the server's).
    pub request: u64,
    /// The mode it wants.
    pub mode: ModeKind,
    /// Permits it wants.
    pub permits: u32,
    /// How long it has waited, in ms.
    pub waited_ms: u64,
    /// What it waits for.
    pub blocker: Blocker,
}

impl WaitEdge {
    fn wire_len(&self) -> usize {
        EDGE_LEN + self.key.len().min(crate::MAX_STR)
    }

    fn encode(&self, out: &mut BytesMut) {
        let (kind, a, b) = match self.blocker {
            Blocker::Holder { token, ttl_ms, .. } => (0, token, ttl_ms),
            Blocker::Queued {
                request, waited_ms, ..
            } => (1, request, waited_ms),
        };
        out.put_u8(kind);
        out.put_u32(self.depth);
        self.kind.encode(out);
        out.put_u64(self.waiter);
        out.put_u64(self.request);
        out.put_u8(self.mode as u8);
        out.put_u32(self.permits);
        out.put_u64(self.waited_ms);
        out.put_u64(self.blocker.session());
        out.put_u8(self.blocker.mode() as u8);
        out.put_u32(match self.blocker {
            Blocker::Holder { permits, .. } | Blocker::Queued { permits, .. } => permits,
        });
        out.put_u64(a);
        out.put_u64(b);
        put_str16(out, &self.key);
    }

    fn decode(rd: &mut Rd<'_>) -> Result<WaitEdge, Bad> {
        let kind = rd.u8()?;
        let depth = rd.u32()?;
        let key_kind = Kind::decode(rd)?;
        let waiter = rd.u64()?;
        let request = rd.u64()?;
        let mode = ModeKind::decode(rd.u8()?)?;
        let permits = rd.u32()?;
        let waited_ms = rd.u64()?;
        let session = rd.u64()?;
        let bmode = ModeKind::decode(rd.u8()?)?;
        let bpermits = rd.u32()?;
        let a = rd.u64()?;
        let b = rd.u64()?;
        let key = Bytes::copy_from_slice(rd.str16()?);
        let blocker = match kind {
            0 => Blocker::Holder {
                session,
                mode: bmode,
                permits: bpermits,
                token: a,
                ttl_ms: b,
            },
            1 => Blocker::Queued {
                session,
                mode: bmode,
                permits: bpermits,
                request: a,
                waited_ms: b,
            },
            _ => return Err("unknown edge type"),
        };
        Ok(WaitEdge {
            depth,
            key,
            kind: key_kind,
            waiter,
            request,
            mode,
            permits,
            waited_ms,
            blocker,
        })
    }
}

/// What EXPLAIN explains: `u8 target | u64 id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExplainTarget {
    /// 0: the connection's own session (id 0).
    OwnSession,
    /// 1: a session, by its number.
    Session(u64),
    /// 2: a queued request, by the server's request id (as edges show it).
    Request(u64),
    /// 3: one of this session's queued ACQUIREs, by the request id of its frame.
    OwnRequest(u32),
}

impl ExplainTarget {
    pub(crate) fn encode(self, out: &mut BytesMut) {
        let (t, id) = match self {
            ExplainTarget::OwnSession => (0, 0),
            ExplainTarget::Session(s) => (1, s),
            ExplainTarget::Request(r) => (2, r),
            ExplainTarget::OwnRequest(r) => (3, u64::from(r)),
        };
        out.put_u8(t);
        out.put_u64(id);
    }

    pub(crate) fn decode(rd: &mut Rd<'_>) -> Result<ExplainTarget, Bad> {
        let t = rd.u8()?;
        let id = rd.u64()?;
        Ok(match t {
            0 if id == 0 => ExplainTarget::OwnSession,
            0 => return Err("the own session takes id 0"),
            1 => ExplainTarget::Session(id),
            2 => ExplainTarget::Request(id),
            3 => ExplainTarget::OwnRequest(u32::try_from(id).map_err(|_| "a frame id is a u32")?),
            _ => return Err("unknown EXPLAIN target"),
        })
    }
}

/// EXPLAIN_RESULT: why a session or request waits.
///
/// ```text
/// u8 flags (bit0 TRUNCATED) | u64 session | u32 n | n x u64 request (the explained
/// requests: empty when it waits for nothing) | u32 m | m x edge (breadth first)
/// u32 c | c x u64 session (a cycle among the edges: empty, unless something is wrong)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    /// The session explained.
    pub session: u64,
    /// Its queued requests that were explained (server request ids).
    pub waiting: Vec<u64>,
    /// The edges, breadth first (depth 1 first).
    pub edges: Vec<WaitEdge>,
    /// Whether edges were left out (COUNT, the server's maximum, or the frame size).
    pub truncated: bool,
    /// A cycle among the edges, by session; empty when there is none (always, unless
    /// something is wrong: a request that would close a cycle is refused).
    pub cycle: Vec<u64>,
}

impl Explanation {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let fixed = 1 + 8 + 4 + 8 * self.waiting.len() + 4 + 4 + 8 * self.cycle.len();
        let n = fitting(&self.edges, MAX_PAYLOAD.saturating_sub(fixed));
        out.put_u8(u8::from(self.truncated || n < self.edges.len()));
        out.put_u64(self.session);
        out.put_u32(self.waiting.len() as u32);
        for r in &self.waiting {
            out.put_u64(*r);
        }
        out.put_u32(n as u32);
        for e in &self.edges[..n] {
            e.encode(out);
        }
        out.put_u32(self.cycle.len() as u32);
        for s in &self.cycle {
            out.put_u64(*s);
        }
    }

    pub(crate) fn decode(rd: &mut Rd<'_>) -> Result<Explanation, Bad> {
        let truncated = flags(rd.u8()?)?;
        let session = rd.u64()?;
        let n = rd.count(8)?;
        let mut waiting = Vec::with_capacity(n);
        for _ in 0..n {
            waiting.push(rd.u64()?);
        }
        let edges = edges(rd)?;
        let c = rd.count(8)?;
        let mut cycle = Vec::with_capacity(c);
        for _ in 0..c {
            cycle.push(rd.u64()?);
        }
        Ok(Explanation {
            session,
            waiting,
            edges,
            truncated,
            cycle,
        })
    }
}

/// GRAPH_RESULT: the wait-for graph. `u8 flags (bit0 TRUNCATED) | u32 n | n x edge`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitGraph {
    /// The edges.
    pub edges: Vec<WaitEdge>,
    /// Whether edges were left out (COUNT, the server's maximum, or the frame size).
    pub truncated: bool,
}

impl WaitGraph {
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let n = fitting(&self.edges, MAX_PAYLOAD - 5);
        out.put_u8(u8::from(self.truncated || n < self.edges.len()));
        out.put_u32(n as u32);
        for e in &self.edges[..n] {
            e.encode(out);
        }
    }

    pub(crate) fn decode(rd: &mut Rd<'_>) -> Result<WaitGraph, Bad> {
        let truncated = flags(rd.u8()?)?;
        Ok(WaitGraph {
            edges: edges(rd)?,
            truncated,
        })
    }

    /// The graph as a Graphviz DOT document (see [`to_dot`]).
    pub fn to_dot(&self) -> String {
        to_dot(&self.edges, self.truncated)
    }
}

fn flags(b: u8) -> Result<bool, Bad> {
    if b & !1 != 0 {
        return Err("unknown flags");
    }
    Ok(b & 1 != 0)
}

fn edges(rd: &mut Rd<'_>) -> Result<Vec<WaitEdge>, Bad> {
    let n = rd.count(EDGE_LEN)?;
    let mut edges = Vec::with_capacity(n);
    for _ in 0..n {
        edges.push(WaitEdge::decode(rd)?);
    }
    Ok(edges)
}

/// How many of `edges` fit in `room` bytes.
fn fitting(edges: &[WaitEdge], room: usize) -> usize {
    let mut left = room;
    edges
        .iter()
        .take_while(|e| {
            let need = e.wire_len();
            let fits = need <= left;
            left = left.saturating_sub(need);
            fits
        })
        .count()
}

/// A DOT quoted string's contents: quotes and backslashes escaped, control characters
/// (and bytes that are not UTF-8) shown as `?`, at most 128 characters of a key.
fn dot_text(bytes: &[u8]) -> String {
    let mut s = String::new();
    for c in String::from_utf8_lossy(&bytes[..bytes.len().min(128)]).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() || c == '\u{fffd}' => s.push('?'),
            c => s.push(c),
        }
    }
    s
}

/// The edges as a Graphviz DOT document (`dot -Tsvg`): one node per session, quoted as
/// `"session N"`, and one line per edge from the waiting session to the one it waits
/// for, labelled with the key, the modes and the numbers; solid edges wait for a holder,
/// dashed ones for a request queued ahead. A truncated graph says so in a comment.
pub fn to_dot(edges: &[WaitEdge], truncated: bool) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        "digraph turnstile_waits {\n  \
         // Turnstile wait-for graph: an edge runs from a waiting session to a session it\n  \
         // waits for; solid: a holder, dashed: a request queued ahead.\n  \
         rankdir=LR;\n  node [shape=box];\n",
    );
    for e in edges {
        let key = dot_text(&e.key);
        let waiter = format!(
            "{} {}",
            e.mode.name(),
            if e.permits > 1 {
                format!("x{} ", e.permits)
            } else {
                String::new()
            }
        );
        let (what, style) = match &e.blocker {
            Blocker::Holder {
                mode,
                token,
                ttl_ms,
                ..
            } => (
                format!("{} holder, token {token}, lease {ttl_ms} ms", mode.name()),
                "solid",
            ),
            Blocker::Queued {
                mode,
                request,
                waited_ms,
                ..
            } => (
                format!(
                    "{} request {request} queued ahead ({waited_ms} ms)",
                    mode.name()
                ),
                "dashed",
            ),
        };
        let _ = writeln!(
            s,
            "  \"session {}\" -> \"session {}\" [label=\"{key}: {waiter}request {} waits {} ms for {what}\", style={style}];",
            e.waiter,
            e.blocker.session(),
            e.request,
            e.waited_ms,
        );
    }
    if truncated {
        s.push_str("  // truncated: more edges than were listed (raise COUNT)\n");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(w: u64, b: u64, key: &[u8], holder: bool) -> WaitEdge {
        WaitEdge {
            depth: 1,
            key: Bytes::copy_from_slice(key),
            kind: Kind::Lock,
            waiter: w,
            request: w << 32,
            mode: ModeKind::Exclusive,
            permits: 1,
            waited_ms: 5,
            blocker: if holder {
                Blocker::Holder {
                    session: b,
                    mode: ModeKind::Shared,
                    permits: 1,
                    token: 9,
                    ttl_ms: 1000,
                }
            } else {
                Blocker::Queued {
                    session: b,
                    mode: ModeKind::Exclusive,
                    permits: 1,
                    request: b << 32,
                    waited_ms: 7,
                }
            },
        }
    }

    #[test]
    fn round_trips() {
        let ex = Explanation {
            session: 3,
            waiting: vec![3 << 32],
            edges: vec![edge(3, 2, b"k2", true), edge(2, 1, b"k1", false)],
            truncated: false,
            cycle: vec![],
        };
        let mut out = BytesMut::new();
        ex.encode(&mut out);
        let mut rd = Rd::new(&out);
        assert_eq!(Explanation::decode(&mut rd).unwrap(), ex);
        rd.end().unwrap();
        let g = WaitGraph {
            edges: ex.edges.clone(),
            truncated: true,
        };
        let mut out = BytesMut::new();
        g.encode(&mut out);
        assert_eq!(out.len(), 5 + 2 * (EDGE_LEN + 2));
        assert_eq!(WaitGraph::decode(&mut Rd::new(&out)).unwrap(), g);
        for t in [
            ExplainTarget::OwnSession,
            ExplainTarget::Session(7),
            ExplainTarget::Request(1 << 40),
            ExplainTarget::OwnRequest(9),
        ] {
            let mut out = BytesMut::new();
            t.encode(&mut out);
            assert_eq!(ExplainTarget::decode(&mut Rd::new(&out)).unwrap(), t);
        }
        assert!(ExplainTarget::decode(&mut Rd::new(&[3, 0, 0, 0, 1, 0, 0, 0, 0])).is_err());
        assert!(ExplainTarget::decode(&mut Rd::new(&[4, 0, 0, 0, 0, 0, 0, 0, 0])).is_err());
    }

    #[test]
    fn dot_quotes_and_counts() {
        let dot = to_dot(
            &[edge(3, 2, b"k\"2\\", true), edge(2, 1, b"k1\n", false)],
            true,
        );
        assert!(dot.starts_with("digraph turnstile_waits {\n"));
        assert!(dot.ends_with("}\n"));
        assert_eq!(dot.matches(" -> ").count(), 2);
        assert!(
            dot.contains(r#""session 3" -> "session 2" [label="k\"2\\: "#),
            "{dot}"
        );
        assert!(dot.contains("k1?: "), "{dot}");
        assert!(dot.contains("style=dashed"));
        assert!(dot.contains("// truncated"));
    }
}
