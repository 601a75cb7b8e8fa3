//! RELEASE: give up the session's hold on a key (one level of a reentrant hold).
//!
//! # Format
//! `RELEASE key` -> `:1` | `-NOTHELD ...` (the session holds nothing on the key, e.g. the
//! lease ran out). Releasing grants the next compatible waiters at once.

use super::{key_ok, wrong_args, Ctx, Flow, Op};
use crate::engine::NotHeld;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let [key] = args else {
        wrong_args(ctx, "release");
        return Flow::Continue;
    };
    if !key_ok(ctx, key) {
        return Flow::Continue;
    }
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(Op::Release { key: key.to_vec() });
    }
    let (result, ticket) = ctx
        .shared
        .store
        .release(ctx.conn.session, key, ctx.now, ctx.events);
    ctx.ticket = ticket;
    reply(ctx, result);
    Flow::Continue
}

/// The reply to a RELEASE that applied with `result`.
pub(crate) fn reply(ctx: &mut Ctx, result: Result<(), NotHeld>) {
    match result {
        Ok(()) => ctx.out.integer(1),
        Err(_) => notheld(ctx),
    }
}

/// Counts a NOTHELD (a lease that ran out before its holder was done, usually) and
/// replies it: RELEASE and RENEW.
pub(crate) fn notheld(ctx: &mut Ctx) {
    ctx.shared
        .stats
        .notheld
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ctx.out.error(NOTHELD)
}

/// The NOTHELD reply shared by RELEASE and RENEW.
pub(crate) const NOTHELD: &str = "NOTHELD the session holds nothing on this key (never acquired, released, or the lease ran out)";
