//! ADMIN: an administrator's commands (users with `@admin`; docs/acl.md).
//!
//! # Format
//! ```text
//! ADMIN FORCE-RELEASE key         -> :<holds released> (every hold of the key, each with all
//!                                    its reentrant levels; the waiters they blocked are granted)
//! ADMIN END-SESSION id            -> :1 ended | :0 no such session (its holds are released and
//!                                    its queued requests cancelled, as when its client leaves;
//!                                    its connection is closed)
//! ADMIN LIMITS                    -> field/value pairs (a flat array in RESP2, a map in RESP3):
//!                                    max-waiters-per-key, max-keys, max-holds-per-session
//! ADMIN LIMITS SET name value     -> +OK (later requests are refused by the new value; what is
//!                                    held or queued stays)
//! ```
//! Each changing one is logged (a log record with the user's name: `turnstile audit` prints
//! it) and, in cluster mode, proposed by the leader (`-NOTLEADER` elsewhere). A limit set
//! here stays in force after a restart, over the command-line flag, until set again.

use super::{parse_u64, wrong_args, Ctx, Flow, Op};
use crate::engine::{LimitKind, SessionId};
use crate::server::admin::{AdminOp, AdminReply};

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let Some((sub, rest)) = args.split_first() else {
        wrong_args(ctx, "admin");
        return Flow::Continue;
    };
    let op = match (sub.to_ascii_uppercase().as_slice(), rest) {
        (b"FORCE-RELEASE", [key]) => {
            if !super::key_ok(ctx, key) {
                return Flow::Continue;
            }
            AdminOp::ForceRelease { key: key.to_vec() }
        }
        (b"END-SESSION", [id]) => match parse_u64(id).filter(|&i| i > 0) {
            Some(id) => AdminOp::EndSession(SessionId(id)),
            None => {
                super::not_an_integer(ctx, "session id");
                return Flow::Continue;
            }
        },
        (b"LIMITS", []) => {
            ctx.ticket = ctx.shared.store.read_ticket();
            let limits = ctx.shared.table().limits();
            ctx.out.map(LimitKind::ALL.len());
            for kind in LimitKind::ALL {
                ctx.out.bulk(kind.name().as_bytes());
                ctx.out
                    .integer(i64::try_from(limits.get(kind)).unwrap_or(i64::MAX));
            }
            return Flow::Continue;
        }
        (b"LIMITS", [set, name, value]) if set.eq_ignore_ascii_case(b"SET") => {
            let Some(limit) = LimitKind::from_name(name) else {
                ctx.out.error(&format!(
                    "ERR unknown limit '{}'; try max-waiters-per-key, max-keys, max-holds-per-session",
                    super::printable(name)
                ));
                return Flow::Continue;
            };
            // Limits are counts of things that exist: 0 would refuse everything.
            match parse_u64(value).filter(|&v| v > 0) {
                Some(value) => AdminOp::SetLimit { limit, value },
                None => {
                    super::not_an_integer(ctx, limit.name());
                    return Flow::Continue;
                }
            }
        }
        _ => {
            ctx.out.error(
                "ERR unknown ADMIN subcommand or wrong arguments; try FORCE-RELEASE key, END-SESSION id, LIMITS, LIMITS SET name value",
            );
            return Flow::Continue;
        }
    };
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(Op::Admin(op));
    }
    let user = ctx.conn.user.name().to_string();
    let (r, ticket) = crate::server::admin::run_local(ctx.shared, &op, &user, ctx.now, ctx.events);
    ctx.ticket = ticket;
    reply(ctx, r);
    Flow::Continue
}

/// The reply to an ADMIN command that ran with outcome `r`.
pub(crate) fn reply(ctx: &mut Ctx, r: AdminReply) {
    match r {
        AdminReply::Count(n) => ctx.out.integer(n as i64),
        AdminReply::Ok => ctx.out.simple("OK"),
    }
}
