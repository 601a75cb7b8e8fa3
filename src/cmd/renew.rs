//! RENEW: extend the lease of the session's hold.
//!
//! # Format
//! `RENEW key [TTL ms]` -> `:<remaining lease in ms>` | `-NOTHELD ...`. Without TTL the
//! hold's last TTL is used again.

use super::acquire::validate_ttl;
use super::release::NOTHELD;
use super::{key_ok, parse_u64, Ctx};

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let (key, ttl) = match args {
        [key] => (*key, None),
        [key, word, ttl] if word.eq_ignore_ascii_case(b"TTL") => {
            let Some(ttl) = parse_u64(ttl) else {
                return super::not_an_integer(ctx, "TTL");
            };
            if let Err(msg) = validate_ttl(ttl, ctx.shared.config.max_ttl_ms) {
                return ctx.out.error(&msg);
            }
            (*key, Some(ttl))
        }
        [] => return super::wrong_args(ctx, "renew"),
        _ => return ctx.out.error("ERR syntax error"),
    };
    if !key_ok(ctx, key) {
        return;
    }
    let (result, ticket) = ctx.shared.store.renew(ctx.conn.session, key, ttl, ctx.now);
    ctx.ticket = ticket;
    match result {
        Ok(left) => ctx.out.integer(left as i64),
        Err(_) => {
            ctx.shared
                .stats
                .notheld
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.out.error(NOTHELD)
        }
    }
}
