//! RENEW: extend the lease of the session's hold.
//!
//! # Format
//! `RENEW key [TTL ms]` -> `:<remaining lease in ms>` | `-NOTHELD ...`. Without TTL the
//! hold's last TTL is used again.

use super::acquire::validate_ttl;
use super::{key_ok, parse_u64, Ctx, Flow, Op};
use crate::engine::NotHeld;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let (key, ttl) = match args {
        [key] => (*key, None),
        [key, word, ttl] if word.eq_ignore_ascii_case(b"TTL") => {
            let Some(ttl) = parse_u64(ttl) else {
                super::not_an_integer(ctx, "TTL");
                return Flow::Continue;
            };
            let cfg = &ctx.shared.config;
            if let Err(msg) = validate_ttl(ttl, cfg.max_ttl_ms)
                .and_then(|()| super::acquire::validate_min_ttl(ttl, cfg.min_ttl()))
            {
                ctx.out.error(&msg);
                return Flow::Continue;
            }
            (*key, Some(ttl))
        }
        [] => {
            super::wrong_args(ctx, "renew");
            return Flow::Continue;
        }
        _ => {
            ctx.out.error("ERR syntax error");
            return Flow::Continue;
        }
    };
    if !key_ok(ctx, key) {
        return Flow::Continue;
    }
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(Op::Renew {
            key: key.to_vec(),
            ttl,
        });
    }
    let (result, ticket) = ctx.shared.store.renew(ctx.conn.session, key, ttl, ctx.now);
    ctx.ticket = ticket;
    reply(ctx, result);
    Flow::Continue
}

/// The reply to a RENEW that ran with `result`.
pub(crate) fn reply(ctx: &mut Ctx, result: Result<u64, NotHeld>) {
    match result {
        Ok(left) => ctx.out.integer(left as i64),
        Err(_) => super::release::notheld(ctx),
    }
}
