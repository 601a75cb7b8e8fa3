//! CONVERT: change the mode of the session's hold in place (the DLM's lock conversion).
//!
//! # Format
//! `CONVERT key SHARED|EXCLUSIVE [WAIT ms]`
//!
//! - `SHARED` on an EXCLUSIVE hold (a downgrade): at once; the hold keeps its token
//!   (`:<token>`), and the queued requests now compatible are granted.
//! - `EXCLUSIVE` on a SHARED hold (an upgrade): `:<new token>` once the session is the
//!   only holder. It waits only for the other holders, ahead of every queued request;
//!   WAIT as for ACQUIRE (0: only if it can be done now). Nil when WAIT runs out (or the
//!   hold ends meanwhile): the shared hold stays as it was. Two holders upgrading wait for
//!   each other: the second gets `-DEADLOCK` naming the cycle.
//! - A hold in the mode asked already: its token, nothing changes.
//! - `-NOTHELD` when the session holds nothing on the key; `-WRONGTYPE` on a semaphore.
//!
//! Every reentrant level converts together. Like a queued ACQUIRE, a waiting upgrade
//! holds up the connection's later commands.

use super::{key_ok, parse_u64, wrong_args, Ctx, Flow, Op};
use crate::engine::{AcquireOutcome, Mode, NotHeld, RequestId};

/// Parses `SHARED|EXCLUSIVE [WAIT ms]`. `Err` is the complete error reply.
pub(crate) fn parse(opts: &[&[u8]]) -> Result<(Mode, Option<u64>), String> {
    let syntax = || "ERR syntax error".to_string();
    let (mode, rest) = opts.split_first().ok_or_else(syntax)?;
    let to = if super::word_eq(mode, "SHARED") {
        Mode::Shared
    } else if super::word_eq(mode, "EXCLUSIVE") {
        Mode::Exclusive
    } else {
        return Err(syntax());
    };
    match rest {
        [] => Ok((to, None)),
        [w, ms] if super::word_eq(w, "WAIT") => {
            let ms = parse_u64(ms)
                .ok_or_else(|| "ERR value is not an integer or out of range (WAIT)".to_string())?;
            Ok((to, Some(ms)))
        }
        _ => Err(syntax()),
    }
}

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let Some((key, opts)) = args.split_first() else {
        wrong_args(ctx, "convert");
        return Flow::Continue;
    };
    if opts.is_empty() {
        wrong_args(ctx, "convert");
        return Flow::Continue;
    }
    if !key_ok(ctx, key) {
        return Flow::Continue;
    }
    let (to, wait_ms) = match parse(opts) {
        Ok(p) => p,
        Err(msg) => {
            ctx.out.error(&msg);
            return Flow::Continue;
        }
    };
    let request = ctx.shared.next_request(0);
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(Op::Convert {
            key: key.to_vec(),
            to,
            wait_ms,
            request,
        });
    }
    let (outcome, ticket) = ctx.shared.store.convert(
        ctx.conn.session,
        key,
        to,
        request,
        wait_ms,
        ctx.now,
        ctx.events,
    );
    ctx.ticket = ticket;
    reply(ctx, request, outcome)
}

/// The reply to a CONVERT that applied with `outcome` (standalone or replicated).
pub(crate) fn reply(
    ctx: &mut Ctx,
    request: RequestId,
    outcome: Result<AcquireOutcome, NotHeld>,
) -> Flow {
    match outcome {
        Ok(outcome) => {
            // Counted (latency or wait) as an EXCLUSIVE request: only an upgrade waits.
            let req = crate::engine::AcquireRequest {
                id: request,
                mode: crate::engine::Mode::Exclusive,
                reentrant: false,
                ttl_ms: 1,
                wait_ms: None,
                policy: Default::default(),
            };
            super::acquire::reply(ctx, &req, outcome)
        }
        Err(NotHeld) => {
            super::release::notheld(ctx);
            Flow::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<(Mode, Option<u64>), String> {
        let words: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse(&words)
    }

    #[test]
    fn grammar() {
        assert_eq!(p("shared").unwrap(), (Mode::Shared, None));
        assert_eq!(p("EXCLUSIVE WAIT 5").unwrap(), (Mode::Exclusive, Some(5)));
        assert!(p("").unwrap_err().starts_with("ERR syntax"));
        assert!(p("SEMAPHORE").unwrap_err().starts_with("ERR syntax"));
        assert!(p("SHARED WAIT").unwrap_err().starts_with("ERR syntax"));
        assert!(p("SHARED WAIT x").unwrap_err().starts_with("ERR value"));
        assert!(p("SHARED TTL 5").unwrap_err().starts_with("ERR syntax"));
    }
}
