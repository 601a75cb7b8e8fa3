//! INSPECT: a key's kind, holders and waiters.
//!
//! # Format
//! `INSPECT key` -> field/value pairs in this order (a flat array in RESP2, a map in RESP3):
//! `kind` (`lock` or `semaphore`), `limit` (the semaphore's permits; 0 for a lock),
//! `fencing` (last token issued for the key),
//! `holders` (array of `[session, mode, token, permits, count, ttl_ms]`),
//! `waiters` (array of `[session, mode, permits, waited_ms]`, in queue order).
//! An empty array when the key has no holders and no waiters.
//!
//! `INSPECT key WITHVALUES` adds a sixth pair, `values`: the value of each holder
//! (a bulk string, or nil when it set none), in the order of `holders`.

use super::{key_ok, wrong_args, Ctx};
use crate::engine::Kind;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let (key, with_values) = match args {
        [key] => (key, false),
        [key, opt] if super::word_eq(opt, "WITHVALUES") => (key, true),
        [_, _] => return ctx.out.error("ERR syntax error"),
        _ => return wrong_args(ctx, "inspect"),
    };
    if !key_ok(ctx, key) {
        return;
    }
    ctx.ticket = ctx.shared.store.read_ticket();
    let (info, values) = if with_values {
        match ctx.shared.table().inspect_values(key, ctx.now) {
            Some((info, values)) => (info, Some(values)),
            None => return ctx.out.array(0),
        }
    } else {
        match ctx.shared.table().inspect(key, ctx.now) {
            Some(info) => (info, None),
            None => return ctx.out.array(0),
        }
    };
    let out = &mut ctx.out;
    out.map(if values.is_some() { 6 } else { 5 });
    out.bulk(b"kind");
    out.bulk(info.kind.name().as_bytes());
    out.bulk(b"limit");
    out.integer(match info.kind {
        Kind::Lock => 0,
        Kind::Semaphore { limit } => i64::from(limit),
    });
    out.bulk(b"fencing");
    out.integer(info.fencing.0 as i64);
    out.bulk(b"holders");
    out.array(info.holders.len());
    for h in &info.holders {
        out.array(6);
        out.integer(h.session.0 as i64);
        out.bulk(h.mode.name().as_bytes());
        out.integer(h.token.0 as i64);
        out.integer(i64::from(h.permits));
        out.integer(i64::from(h.count));
        out.integer(h.ttl_ms as i64);
    }
    out.bulk(b"waiters");
    out.array(info.waiters.len());
    for w in &info.waiters {
        out.array(4);
        out.integer(w.session.0 as i64);
        out.bulk(w.mode.name().as_bytes());
        out.integer(i64::from(w.permits));
        out.integer(w.waited_ms as i64);
    }
    if let Some(values) = values {
        out.bulk(b"values");
        out.array(values.len());
        for v in values {
            match v {
                Some(v) => out.bulk(&v),
                None => out.null(),
            }
        }
    }
}
