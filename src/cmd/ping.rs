//! PING: a liveness check.
//!
//! # Format
//! `PING [message]` -> `+PONG`, or the message as a bulk string.

use super::{wrong_args, Ctx};

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    match args {
        [] => ctx.out.simple("PONG"),
        [msg] => ctx.out.bulk(msg),
        _ => wrong_args(ctx, "ping"),
    }
}
