//! LOCKS: list the keys that have holders or waiters.
//!
//! # Format
//! `LOCKS [MATCH pattern] [COUNT n]` -> array of keys. The pattern is a Redis glob
//! (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes); COUNT caps the number of keys returned.
//! Only keys the connection's user may access are listed (docs/acl.md).

use super::{parse_u64, Ctx};
use crate::glob::glob_match;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let mut pattern: Option<&[u8]> = None;
    let mut count: Option<usize> = None;
    let mut i = 0;
    while i < args.len() {
        let w = args[i];
        let Some(value) = args.get(i + 1) else {
            return ctx.out.error("ERR syntax error");
        };
        if w.eq_ignore_ascii_case(b"MATCH") && pattern.is_none() {
            pattern = Some(value);
        } else if w.eq_ignore_ascii_case(b"COUNT") && count.is_none() {
            match parse_u64(value) {
                Some(n) if n > 0 => count = Some(n.min(usize::MAX as u64) as usize),
                Some(_) => return ctx.out.error("ERR COUNT must be at least 1"),
                None => return super::not_an_integer(ctx, "COUNT"),
            }
        } else {
            return ctx.out.error("ERR syntax error");
        }
        i += 2;
    }
    ctx.ticket = ctx.shared.store.read_ticket();
    let user = &ctx.conn.user;
    let keys = ctx.shared.table().keys(
        |k| pattern.is_none_or(|p| glob_match(p, k)) && user.may_access(k),
        count.unwrap_or(usize::MAX),
    );
    ctx.out.array(keys.len());
    for k in &keys {
        ctx.out.bulk(k.as_bytes());
    }
}
