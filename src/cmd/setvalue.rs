//! SETVALUE: a holder replaces the value attached to its hold.
//!
//! # Format
//! `SETVALUE key value` -> `+OK` | `-NOTHELD ...` (the session holds nothing on the key)
//! | `-LIMIT ...` (the value is longer than `--max-value-bytes`). An empty value clears
//! it. Watchers of the key get a `value` push.

use super::{key_ok, wrong_args, Ctx, Flow, Op};
use crate::engine::NotHeld;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let [key, value] = args else {
        wrong_args(ctx, "setvalue");
        return Flow::Continue;
    };
    if !key_ok(ctx, key) || !value_ok(ctx, value) {
        return Flow::Continue;
    }
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(Op::SetValue {
            key: key.to_vec(),
            value: value.to_vec(),
        });
    }
    let (result, ticket) = ctx
        .shared
        .store
        .set_value(ctx.conn.session, key, value, ctx.now);
    ctx.ticket = ticket;
    reply(ctx, result);
    Flow::Continue
}

/// The reply to a SETVALUE that applied with `result`.
pub(crate) fn reply(ctx: &mut Ctx, result: Result<(), NotHeld>) {
    match result {
        Ok(()) => ctx.out.simple("OK"),
        Err(_) => super::release::notheld(ctx),
    }
}

/// The `-LIMIT` message for a value over `max` bytes, if it is.
pub(crate) fn value_error(len: usize, max: usize) -> Option<String> {
    (len > max).then(|| {
        format!("LIMIT value is {len} bytes, more than the maximum of {max} (--max-value-bytes)")
    })
}

/// Checks a value against `--max-value-bytes`; replies `-LIMIT` when over.
pub(crate) fn value_ok(ctx: &mut Ctx, value: &[u8]) -> bool {
    match value_error(value.len(), ctx.shared.config.max_value_bytes) {
        Some(msg) => {
            ctx.out.error(&msg);
            false
        }
        None => true,
    }
}
