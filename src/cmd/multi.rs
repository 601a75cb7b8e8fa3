//! MACQUIRE and MRELEASE: atomic multi-locks.
//!
//! # Format
//! `MACQUIRE numkeys key mode [key mode ...] [TTL ms] [WAIT ms] [LOCKDELAY ms]`, where
//! each `mode` is
//! `EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]` (required after every key, so that
//! no key name can be mistaken for a mode word).
//!
//! Granted all at once or not at all: `*n` of `:<token>`, one per key in the order given;
//! nil when WAIT ran out (WAIT 0: a try-lock of all the keys); `-DEADLOCK` naming the
//! cycle (also when a key is listed twice or the session already holds or waits on one);
//! `-WRONGTYPE` naming the key; `-LIMIT` (also above `--max-multi-keys` keys); `-ERR` for
//! syntax. It queues as one request on every key (FIFO on each), so two multi-locks that
//! list the same keys in different orders never deadlock. The holds are ordinary holds
//! afterwards: each has its own token and lease and is released on its own or with
//! MRELEASE.
//!
//! `MRELEASE key [key ...]` -> `:<number of keys released>` (one level of each, in
//! order), or `-NOTHELD` when the session held none of them.

use std::time::Instant;

use super::{key_ok, parse_u64, wrong_args, Ctx, Flow, Op};
use crate::acl;
use crate::engine::{Mode, MultiOutcome, MultiRequest};

/// Parses one key's mode at `words[0..]`; returns it and how many words it took.
fn parse_mode(words: &[&[u8]], max_semaphore: u32) -> Result<(Mode, usize), String> {
    let syntax = || {
        "ERR syntax error (each key of MACQUIRE needs EXCLUSIVE, SHARED or SEMAPHORE limit [PERMITS n])".to_string()
    };
    let number = |what: &str| format!("ERR value is not an integer or out of range ({what})");
    let word = words.first().ok_or_else(syntax)?;
    if super::word_eq(word, "EXCLUSIVE") {
        return Ok((Mode::Exclusive, 1));
    }
    if super::word_eq(word, "SHARED") {
        return Ok((Mode::Shared, 1));
    }
    if !super::word_eq(word, "SEMAPHORE") {
        return Err(syntax());
    }
    let limit = words
        .get(1)
        .ok_or_else(syntax)
        .and_then(|w| parse_u64(w).ok_or_else(|| number("SEMAPHORE limit")))?;
    if limit == 0 {
        return Err("ERR SEMAPHORE limit must be at least 1".into());
    }
    if limit > u64::from(max_semaphore) {
        return Err(format!(
            "LIMIT SEMAPHORE limit {limit} is above the maximum of {max_semaphore}"
        ));
    }
    let (permits, used) = match words.get(2) {
        Some(w) if super::word_eq(w, "PERMITS") => {
            let n = words
                .get(3)
                .ok_or_else(syntax)
                .and_then(|w| parse_u64(w).ok_or_else(|| number("PERMITS")))?;
            if n == 0 || n > limit {
                return Err(format!(
                    "ERR PERMITS must be between 1 and the semaphore limit ({limit})"
                ));
            }
            (n, 4)
        }
        _ => (1, 2),
    };
    Ok((
        Mode::Semaphore {
            limit: limit as u32,
            permits: permits as u32,
        },
        used,
    ))
}

/// A parsed MACQUIRE.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spec<'a> {
    pub items: Vec<(&'a [u8], Mode)>,
    pub ttl_ms: u64,
    pub wait_ms: Option<u64>,
    pub lock_delay_ms: Option<u64>,
}

/// Parses MACQUIRE's arguments. `Err` is the complete error reply.
pub(crate) fn parse<'a>(
    args: &[&'a [u8]],
    default_ttl: u64,
    max_ttl: u64,
    max_semaphore: u32,
    max_keys: usize,
) -> Result<Spec<'a>, String> {
    let Some((numkeys, mut rest)) = args.split_first() else {
        return Err("ERR wrong number of arguments for 'macquire' command".into());
    };
    let n = parse_u64(numkeys)
        .ok_or_else(|| "ERR value is not an integer or out of range (numkeys)".to_string())?;
    if n == 0 {
        return Err("ERR numkeys must be at least 1".into());
    }
    if n > max_keys as u64 {
        return Err(format!(
            "LIMIT {n} keys in one MACQUIRE is above the maximum of {max_keys}"
        ));
    }
    let mut items = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let Some((key, after)) = rest.split_first() else {
            return Err("ERR wrong number of arguments for 'macquire' command".into());
        };
        let (mode, used) = parse_mode(after, max_semaphore)?;
        items.push((*key, mode));
        rest = &after[used..];
    }
    let (mut ttl, mut wait, mut delay) = (None, None, None);
    let mut i = 0;
    while i < rest.len() {
        let slot = if super::word_eq(rest[i], "TTL") {
            &mut ttl
        } else if super::word_eq(rest[i], "WAIT") {
            &mut wait
        } else if super::word_eq(rest[i], "LOCKDELAY") {
            &mut delay
        } else {
            return Err("ERR syntax error".into());
        };
        if slot.is_some() {
            return Err("ERR syntax error".into());
        }
        let value = rest.get(i + 1).ok_or("ERR syntax error")?;
        *slot = Some(parse_u64(value).ok_or_else(|| {
            "ERR value is not an integer or out of range (TTL/WAIT/LOCKDELAY)".to_string()
        })?);
        i += 2;
    }
    let ttl_ms = ttl.unwrap_or(default_ttl);
    super::acquire::validate_ttl(ttl_ms, max_ttl)?;
    if delay.is_some_and(|d| d > max_ttl) {
        return Err(format!(
            "LIMIT LOCKDELAY is above the maximum of {max_ttl} ms"
        ));
    }
    Ok(Spec {
        items,
        ttl_ms,
        wait_ms: wait,
        lock_delay_ms: delay,
    })
}

/// The user may take locks and every key listed (the dispatcher checks one key only).
fn permitted(ctx: &mut Ctx, cmd: acl::Command, keys: &[&[u8]]) -> bool {
    let user = ctx.conn.user.clone();
    if !user.may_run(cmd) {
        ctx.out
            .error(&format!("NOPERM {}", acl::noperm_command(cmd)));
        return false;
    }
    for key in keys {
        if !key_ok(ctx, key) {
            return false;
        }
        if !user.may_access(key) {
            ctx.out.error(&format!("NOPERM {}", acl::noperm_key(key)));
            return false;
        }
    }
    true
}

pub(super) fn run_acquire(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let cfg = &ctx.shared.config;
    let spec = match parse(
        args,
        cfg.default_ttl_ms,
        cfg.max_ttl_ms,
        cfg.max_semaphore,
        cfg.max_multi_keys,
    ) {
        Ok(spec) => spec,
        Err(msg) => {
            ctx.out.error(&msg);
            return Flow::Continue;
        }
    };
    if let Err(msg) = super::acquire::validate_min_ttl(spec.ttl_ms, cfg.min_ttl()) {
        ctx.out.error(&msg);
        return Flow::Continue;
    }
    let keys: Vec<&[u8]> = spec.items.iter().map(|(k, _)| *k).collect();
    if !permitted(ctx, acl::Command::Acquire, &keys) {
        return Flow::Continue;
    }
    let lock_delay = spec
        .lock_delay_ms
        .unwrap_or(0)
        .max(u64::from(cfg.lock_delay_ms));
    let req = MultiRequest {
        id: ctx.shared.next_request(0),
        ttl_ms: spec.ttl_ms,
        wait_ms: spec.wait_ms,
        lock_delay_ms: u32::try_from(lock_delay).unwrap_or(u32::MAX),
    };
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(Op::MultiAcquire {
            items: spec.items.iter().map(|(k, m)| (k.to_vec(), *m)).collect(),
            req,
        });
    }
    let n = spec.items.len();
    let (outcome, ticket) =
        ctx.shared
            .store
            .acquire_multi(ctx.conn.session, spec.items, &req, ctx.now);
    ctx.ticket = ticket;
    reply_acquire(ctx, &req, n, &keys, outcome)
}

/// The reply to a MACQUIRE that applied with `outcome` (standalone or replicated).
pub(crate) fn reply_acquire(
    ctx: &mut Ctx,
    req: &MultiRequest,
    n: usize,
    keys: &[&[u8]],
    outcome: MultiOutcome,
) -> Flow {
    match outcome {
        MultiOutcome::Granted(tokens) => {
            ctx.out.array(tokens.len());
            for t in tokens {
                ctx.out.integer(t.0 as i64);
            }
        }
        MultiOutcome::Queued => {
            return Flow::Park {
                request: req.id,
                since: Instant::now(),
                keys: n,
            }
        }
        MultiOutcome::WouldBlock => ctx.out.null(),
        MultiOutcome::Deadlock(cycle) => {
            super::acquire::log_deadlock(&cycle);
            ctx.out.error(&super::acquire::deadlock_message(&cycle))
        }
        MultiOutcome::WrongType { index, current } => {
            let msg = super::acquire::wrongtype_message(current);
            let key = keys
                .get(index)
                .map_or(String::new(), |k| super::printable(k));
            ctx.out.error(&format!("{msg} ('{key}')"))
        }
        MultiOutcome::Limit(limit) => ctx.out.error(&format!("LIMIT {}", limit.describe())),
    }
    ctx.conn
        .answered
        .note(crate::server::stats::ModeLabel::Multi);
    Flow::Continue
}

pub(super) fn run_release(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    if args.is_empty() {
        wrong_args(ctx, "mrelease");
        return Flow::Continue;
    }
    let max = ctx.shared.config.max_multi_keys;
    if args.len() > max {
        ctx.out.error(&format!(
            "LIMIT {} keys in one MRELEASE is above the maximum of {max}",
            args.len()
        ));
        return Flow::Continue;
    }
    if !permitted(ctx, acl::Command::Release, args) {
        return Flow::Continue;
    }
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(Op::MultiRelease {
            keys: args.iter().map(|k| k.to_vec()).collect(),
        });
    }
    let (released, ticket) =
        ctx.shared
            .store
            .release_many(ctx.conn.session, args.to_vec(), ctx.now, ctx.events);
    ctx.ticket = ticket;
    reply_release(ctx, released);
    Flow::Continue
}

/// The reply to an MRELEASE that released `released` keys.
pub(crate) fn reply_release(ctx: &mut Ctx, released: usize) {
    if released == 0 {
        super::release::notheld(ctx);
    } else {
        ctx.out.integer(released as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Spec<'_>, String> {
        let words: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse(&words, 30_000, 86_400_000, 1000, 4)
    }

    #[test]
    fn keys_modes_and_options() {
        let spec = p("3 a exclusive b SHARED c SEMAPHORE 3 PERMITS 2 TTL 500 WAIT 0").unwrap();
        assert_eq!(
            spec.items,
            vec![
                (&b"a"[..], Mode::Exclusive),
                (&b"b"[..], Mode::Shared),
                (
                    &b"c"[..],
                    Mode::Semaphore {
                        limit: 3,
                        permits: 2
                    }
                ),
            ]
        );
        assert_eq!((spec.ttl_ms, spec.wait_ms), (500, Some(0)));
        let spec = p("2 shared SHARED exclusive SEMAPHORE 2").unwrap();
        assert_eq!(spec.items[0], (&b"shared"[..], Mode::Shared));
        assert_eq!(spec.ttl_ms, 30_000);
    }

    #[test]
    fn errors() {
        assert!(p("").is_err());
        assert!(p("x a EXCLUSIVE").unwrap_err().starts_with("ERR value"));
        assert!(p("0").unwrap_err().starts_with("ERR numkeys"));
        assert!(p("5 a EXCLUSIVE").unwrap_err().starts_with("LIMIT"));
        assert!(p("2 a EXCLUSIVE")
            .unwrap_err()
            .starts_with("ERR wrong number"));
        assert!(p("1 a").unwrap_err().starts_with("ERR syntax"));
        assert!(p("1 a BOGUS").unwrap_err().starts_with("ERR syntax"));
        assert!(p("1 a EXCLUSIVE TTL")
            .unwrap_err()
            .starts_with("ERR syntax"));
        assert!(p("1 a EXCLUSIVE TTL 0").unwrap_err().starts_with("ERR TTL"));
        assert!(p("1 a EXCLUSIVE WAIT 1 WAIT 2")
            .unwrap_err()
            .starts_with("ERR syntax"));
        assert!(p("1 a SEMAPHORE 2 PERMITS 3")
            .unwrap_err()
            .starts_with("ERR PERMITS"));
        assert!(p("1 a SEMAPHORE 0")
            .unwrap_err()
            .starts_with("ERR SEMAPHORE"));
    }
}
