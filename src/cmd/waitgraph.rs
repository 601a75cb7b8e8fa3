//! WAITGRAPH: the whole wait-for graph, as edges or as a Graphviz DOT document.
//!
//! # Format
//! `WAITGRAPH [DOT] [COUNT n]`
//! - without DOT: a map (a flat field/value array in RESP2): `edges`, an array of edges
//!   (each the map EXPLAIN uses, without `depth`: `key`, `waiter`, `request`, `mode`,
//!   `permits`, `waited_ms`, `type`, `blocker`, `blocker_mode`, `blocker_permits`, then
//!   `token` and `ttl_ms` for a holder or `blocker_request` and `blocker_waited_ms` for a
//!   request queued ahead), and `truncated` (1 when edges were left out);
//! - with DOT: one bulk string, a DOT document (`dot -Tsvg`): nodes `"session N"`, one
//!   line per edge from the waiter to its blocker (solid: a holder, dashed: a request
//!   queued ahead), and a `// truncated` comment when edges were left out.
//!
//! At most COUNT edges (default 1000, at most 100000): a table can have millions of
//! waiters. Keys are read shard by shard, each shard locked briefly. Edges on keys the
//! user may not access are left out (WAITGRAPH needs the `locks` permission).

use super::explain::{edge, parse_count, wire_edge};
use super::{word_eq, Ctx};
use crate::engine::DEFAULT_EDGES;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let mut dot = false;
    let mut count = None;
    let mut i = 0;
    while i < args.len() {
        let w = args[i];
        if word_eq(w, "DOT") && !dot {
            dot = true;
            i += 1;
        } else if word_eq(w, "COUNT") && count.is_none() {
            let Some(value) = args.get(i + 1) else {
                return ctx.out.error("ERR syntax error");
            };
            match parse_count(ctx, value) {
                Some(n) => count = Some(n),
                None => return,
            }
            i += 2;
        } else {
            return ctx.out.error("ERR syntax error");
        }
    }
    ctx.ticket = ctx.shared.store.read_ticket();
    let user = &ctx.conn.user;
    let graph = ctx
        .shared
        .table()
        .wait_graph(ctx.now, count.unwrap_or(DEFAULT_EDGES), |k| {
            user.may_access(k)
        });
    if dot {
        let edges: Vec<_> = graph.edges.iter().map(|e| wire_edge(0, e)).collect();
        let text = turnstile_proto::explain::to_dot(&edges, graph.truncated);
        return ctx.out.bulk(text.as_bytes());
    }
    let out = &mut ctx.out;
    out.map(2);
    out.bulk(b"edges");
    out.array(graph.edges.len());
    for e in &graph.edges {
        edge(out, None, e);
    }
    out.bulk(b"truncated");
    out.integer(i64::from(graph.truncated));
}
