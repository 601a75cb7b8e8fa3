//! EXPLAIN: why a session or a queued request waits, transitively.
//!
//! # Format
//! `EXPLAIN [SESSION id | REQUEST id] [COUNT n]` -> a map (RESP3; a flat field/value array
//! in RESP2), in this order:
//! - `session`: the session explained (the connection's own without SESSION or REQUEST;
//!   the request's with REQUEST);
//! - `waiting`: array of its queued requests' ids that were explained (empty: it waits
//!   for nothing);
//! - `edges`: array of edges, breadth first, each a map: `depth` (1: the explained
//!   requests' own), `key`, `waiter` (session), `request`, `mode`, `permits`,
//!   `waited_ms`, `type` (`holder` or `queued`: a request queued ahead), `blocker`
//!   (session), `blocker_mode`, `blocker_permits`, then for a holder `token` and `ttl_ms`
//!   (lease left), for a queued request `blocker_request` and `blocker_waited_ms`;
//! - `truncated`: 1 when edges were left out (COUNT, default 1000, at most 100000);
//! - `cycle`: array of sessions around a cycle among the edges (empty: there should never
//!   be one, since a request that would close a cycle is refused).
//!
//! Request ids are the server's: WAITGRAPH and EXPLAIN show them (a text connection's
//! ACQUIRE is parked while it waits, so it is explained from another connection, e.g.
//! `EXPLAIN SESSION <its CLIENT ID>`). `-ERR` when REQUEST names no queued request.
//! A session is expanded once however many edges reach it. Edges on keys the user may
//! not access are left out (EXPLAIN needs the `locks` permission).

use super::{not_an_integer, parse_u64, word_eq, Ctx};
use crate::engine::{
    Blocker, ExplainTarget, RequestId, SessionId, WaitEdge, DEFAULT_EDGES, MAX_EDGES,
};
use crate::protocol::ReplyWriter;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let mut target = ExplainTarget::Session(ctx.conn.session);
    let mut named = false;
    let mut count = None;
    let mut i = 0;
    while i < args.len() {
        let (w, value) = (args[i], args.get(i + 1));
        let Some(value) = value else {
            return ctx.out.error("ERR syntax error");
        };
        if (word_eq(w, "SESSION") || word_eq(w, "REQUEST")) && !named {
            let Some(id) = parse_u64(value) else {
                return not_an_integer(
                    ctx,
                    if word_eq(w, "SESSION") {
                        "SESSION"
                    } else {
                        "REQUEST"
                    },
                );
            };
            target = if word_eq(w, "SESSION") {
                ExplainTarget::Session(SessionId(id))
            } else {
                ExplainTarget::Request(RequestId(id))
            };
            named = true;
        } else if word_eq(w, "COUNT") && count.is_none() {
            match parse_count(ctx, value) {
                Some(n) => count = Some(n),
                None => return,
            }
        } else {
            return ctx.out.error("ERR syntax error");
        }
        i += 2;
    }
    ctx.ticket = ctx.shared.store.read_ticket();
    let user = &ctx.conn.user;
    let limit = count.unwrap_or(DEFAULT_EDGES);
    let Some(ex) = ctx
        .shared
        .table()
        .explain(&target, ctx.now, limit, |k| user.may_access(k))
    else {
        // Only a request can be missing.
        let id = match target {
            ExplainTarget::Request(r) => r.0,
            _ => 0,
        };
        return ctx.out.error(&format!(
            "ERR request {id} is not queued (granted, timed out, cancelled, or unknown)"
        ));
    };
    let out = &mut ctx.out;
    out.map(5);
    out.bulk(b"session");
    out.integer(ex.session.0 as i64);
    out.bulk(b"waiting");
    out.array(ex.waiting.len());
    for r in &ex.waiting {
        out.integer(r.0 as i64);
    }
    out.bulk(b"edges");
    out.array(ex.steps.len());
    for s in &ex.steps {
        edge(out, Some(s.depth), &s.edge);
    }
    out.bulk(b"truncated");
    out.integer(i64::from(ex.truncated));
    out.bulk(b"cycle");
    out.array(ex.cycle.len());
    for s in &ex.cycle {
        out.integer(s.0 as i64);
    }
}

/// COUNT's value: 1 or more, capped at [`MAX_EDGES`]; None: the error is written.
pub(super) fn parse_count(ctx: &mut Ctx, value: &[u8]) -> Option<usize> {
    match parse_u64(value) {
        Some(0) => {
            ctx.out.error("ERR COUNT must be at least 1");
            None
        }
        Some(n) => Some(n.min(MAX_EDGES as u64) as usize),
        None => {
            not_an_integer(ctx, "COUNT");
            None
        }
    }
}

/// One edge as a map (see the module docs); `depth` only in EXPLAIN.
pub(super) fn edge(out: &mut ReplyWriter, depth: Option<u32>, e: &WaitEdge) {
    out.map(12 + usize::from(depth.is_some()));
    if let Some(d) = depth {
        out.bulk(b"depth");
        out.integer(i64::from(d));
    }
    out.bulk(b"key");
    out.bulk(e.key.as_bytes());
    out.bulk(b"waiter");
    out.integer(e.waiter.session.0 as i64);
    out.bulk(b"request");
    out.integer(e.waiter.request.0 as i64);
    out.bulk(b"mode");
    out.bulk(e.waiter.mode.name().as_bytes());
    out.bulk(b"permits");
    out.integer(i64::from(e.waiter.permits));
    out.bulk(b"waited_ms");
    out.integer(e.waiter.waited_ms as i64);
    out.bulk(b"type");
    out.bulk(match e.blocker {
        Blocker::Holder(_) => b"holder",
        Blocker::Queued(_) => b"queued",
    });
    out.bulk(b"blocker");
    out.integer(e.blocker.session().0 as i64);
    out.bulk(b"blocker_mode");
    out.bulk(e.blocker.mode().name().as_bytes());
    out.bulk(b"blocker_permits");
    out.integer(i64::from(e.blocker.mode().permits()));
    match &e.blocker {
        Blocker::Holder(h) => {
            out.bulk(b"token");
            out.integer(h.token.0 as i64);
            out.bulk(b"ttl_ms");
            out.integer(h.ttl_ms as i64);
        }
        Blocker::Queued(w) => {
            out.bulk(b"blocker_request");
            out.integer(w.request.0 as i64);
            out.bulk(b"blocker_waited_ms");
            out.integer(w.waited_ms as i64);
        }
    }
}

/// An engine edge on the binary wire (and for the DOT renderer).
pub(crate) fn wire_edge(depth: u32, e: &WaitEdge) -> turnstile_proto::WaitEdge {
    use crate::protocol::binary::{kind_to_wire, mode_kind};
    turnstile_proto::WaitEdge {
        depth,
        key: bytes::Bytes::copy_from_slice(e.key.as_bytes()),
        kind: kind_to_wire(e.kind),
        waiter: e.waiter.session.0,
        request: e.waiter.request.0,
        mode: mode_kind(e.waiter.mode),
        permits: e.waiter.permits,
        waited_ms: e.waiter.waited_ms,
        blocker: match &e.blocker {
            Blocker::Holder(h) => turnstile_proto::Blocker::Holder {
                session: h.session.0,
                mode: mode_kind(h.mode),
                permits: h.permits,
                token: h.token.0,
                ttl_ms: h.ttl_ms,
            },
            Blocker::Queued(w) => turnstile_proto::Blocker::Queued {
                session: w.session.0,
                mode: mode_kind(w.mode),
                permits: w.permits,
                request: w.request.0,
                waited_ms: w.waited_ms,
            },
        },
    }
}

/// An engine explanation on the binary wire.
pub(crate) fn wire_explanation(ex: &crate::engine::Explanation) -> turnstile_proto::Explanation {
    turnstile_proto::Explanation {
        session: ex.session.0,
        waiting: ex.waiting.iter().map(|r| r.0).collect(),
        edges: ex
            .steps
            .iter()
            .map(|s| wire_edge(s.depth, &s.edge))
            .collect(),
        truncated: ex.truncated,
        cycle: ex.cycle.iter().map(|s| s.0).collect(),
    }
}
