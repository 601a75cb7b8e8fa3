//! GETVALUE: the values the holders of a key attached to their holds.
//!
//! # Format
//! `GETVALUE key` -> nil when the key has no holder; else an array with one
//! `[session, token, value]` per holder in grant order (value nil when the holder set
//! none). For an election (an EXCLUSIVE key) that is the leader and its value.

use super::{key_ok, wrong_args, Ctx};

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let [key] = args else {
        return wrong_args(ctx, "getvalue");
    };
    if !key_ok(ctx, key) {
        return;
    }
    ctx.ticket = ctx.shared.store.read_ticket();
    let state = ctx.shared.table().inspect_values(key, ctx.now);
    let Some((info, values)) = state.filter(|(i, _)| !i.holders.is_empty()) else {
        return ctx.out.null();
    };
    let out = &mut ctx.out;
    out.array(info.holders.len());
    for (h, v) in info.holders.iter().zip(values) {
        out.array(3);
        out.integer(h.session.0 as i64);
        out.integer(h.token.0 as i64);
        match v {
            Some(v) => out.bulk(&v),
            None => out.null(),
        }
    }
}
