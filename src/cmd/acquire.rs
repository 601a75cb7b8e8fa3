//! ACQUIRE: take a lock, a read-write lock's shared side, or semaphore permits.
//!
//! # Format
//! `ACQUIRE key [EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]] [REENTRANT] [TTL ms] [WAIT ms]
//! [PRIORITY n] [LOCKDELAY ms] [VALUE v]`
//!
//! PRIORITY (0 to 1000, default 0): a queued request of higher effective priority
//! (`priority + waited_ms / --priority-aging-ms`) is granted first; see
//! `engine::QueuePolicy`. LOCKDELAY: if the hold ends by lease expiry, session loss or a
//! forced release, the key is granted to nobody for this long (at least the server's
//! `--lock-delay-ms`; at most the maximum TTL).
//!
//! VALUE attaches `v` to the hold (at most `--max-value-bytes`; empty: none), readable
//! by anyone with GETVALUE, INSPECT ... WITHVALUES and WATCH.
//!
//! Options may come in any order, each at most once. Replies: `:<fencing token>` on grant;
//! nil when WAIT ran out (WAIT 0 is a try-lock); `-DEADLOCK` naming the cycle; `-WRONGTYPE`;
//! `-ERR` for syntax and numbers; `-LIMIT` when a configured limit would be passed.
//! Without WAIT the request queues until granted or until the session ends; the
//! connection's later commands wait behind it.

use std::time::Instant;

use super::{key_ok, parse_u64, wrong_args, Ctx, Flow};
use crate::engine::{AcquireOutcome, AcquireRequest, Cycle, Kind, Mode, QueuePolicy, MAX_PRIORITY};
use crate::server::stats::ModeLabel;

/// A parsed ACQUIRE, before a request id is given to it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub mode: Mode,
    pub reentrant: bool,
    pub ttl_ms: u64,
    pub wait_ms: Option<u64>,
    pub priority: u32,
    pub lock_delay_ms: Option<u64>,
    pub value: Option<Vec<u8>>,
}

impl Spec {
    /// The request's queue policy under the server's settings: the larger of the two
    /// lock-delays, the server's aging period.
    pub(crate) fn policy(&self, cfg: &crate::config::Config) -> QueuePolicy {
        policy(self.priority, self.lock_delay_ms, cfg)
    }
}

/// A queue policy from a request's priority and lock-delay and the server's settings.
pub(crate) fn policy(
    priority: u32,
    lock_delay_ms: Option<u64>,
    cfg: &crate::config::Config,
) -> QueuePolicy {
    let asked = u32::try_from(lock_delay_ms.unwrap_or(0)).unwrap_or(u32::MAX);
    QueuePolicy {
        priority,
        aging_ms: if priority == 0 {
            0
        } else {
            cfg.priority_aging_ms.max(1)
        },
        lock_delay_ms: asked.max(cfg.lock_delay_ms),
    }
}

/// Parses the options after the key. `Err` is the complete error reply.
pub(crate) fn parse(
    opts: &[&[u8]],
    default_ttl: u64,
    max_ttl: u64,
    max_semaphore: u32,
) -> Result<Spec, String> {
    let mut mode: Option<Mode> = None;
    let mut permits: Option<u64> = None;
    let mut reentrant = false;
    let mut ttl: Option<u64> = None;
    let mut wait: Option<u64> = None;
    let mut priority: Option<u64> = None;
    let mut lock_delay: Option<u64> = None;
    let mut attached: Option<Vec<u8>> = None;
    let syntax = || "ERR syntax error".to_string();
    let number = |what: &str| format!("ERR value is not an integer or out of range ({what})");
    let mut i = 0;
    while i < opts.len() {
        let w = opts[i];
        let value = |i: usize, what: &str| -> Result<u64, String> {
            let v = opts.get(i + 1).ok_or_else(syntax)?;
            parse_u64(v).ok_or_else(|| number(what))
        };
        // Dispatch on length and first letter, then confirm the whole word once.
        let word = match (w.len(), w.first().map(u8::to_ascii_uppercase)) {
            (3, Some(b'T')) => "TTL",
            (4, Some(b'W')) => "WAIT",
            (5, Some(b'V')) => "VALUE",
            (6, Some(b'S')) => "SHARED",
            (7, Some(b'P')) => "PERMITS",
            (8, Some(b'P')) => "PRIORITY",
            (9, Some(b'L')) => "LOCKDELAY",
            (9, Some(b'E')) => "EXCLUSIVE",
            (9, Some(b'S')) => "SEMAPHORE",
            (9, Some(b'R')) => "REENTRANT",
            _ => return Err(syntax()),
        };
        if !super::word_eq(w, word) {
            return Err(syntax());
        }
        match word {
            "EXCLUSIVE" | "SHARED" => {
                if mode.is_some() {
                    return Err(syntax());
                }
                mode = Some(if word == "SHARED" {
                    Mode::Shared
                } else {
                    Mode::Exclusive
                });
                i += 1;
            }
            "SEMAPHORE" => {
                if mode.is_some() {
                    return Err(syntax());
                }
                let limit = value(i, "SEMAPHORE limit")?;
                if limit == 0 {
                    return Err("ERR SEMAPHORE limit must be at least 1".into());
                }
                if limit > u64::from(max_semaphore) {
                    return Err(format!(
                        "LIMIT SEMAPHORE limit {limit} is above the maximum of {max_semaphore}"
                    ));
                }
                mode = Some(Mode::Semaphore {
                    limit: limit as u32,
                    permits: 1,
                });
                i += 2;
            }
            "PERMITS" => {
                if permits.is_some() {
                    return Err(syntax());
                }
                permits = Some(value(i, "PERMITS")?);
                i += 2;
            }
            "REENTRANT" => {
                if reentrant {
                    return Err(syntax());
                }
                reentrant = true;
                i += 1;
            }
            "PRIORITY" => {
                if priority.is_some() {
                    return Err(syntax());
                }
                let p = value(i, "PRIORITY")?;
                if p > u64::from(MAX_PRIORITY) {
                    return Err(format!("ERR PRIORITY must be between 0 and {MAX_PRIORITY}"));
                }
                priority = Some(p);
                i += 2;
            }
            "LOCKDELAY" => {
                if lock_delay.is_some() {
                    return Err(syntax());
                }
                let d = value(i, "LOCKDELAY")?;
                if d > max_ttl {
                    return Err(format!(
                        "LIMIT LOCKDELAY {d} ms is above the maximum of {max_ttl} ms"
                    ));
                }
                lock_delay = Some(d);
                i += 2;
            }
            "TTL" => {
                if ttl.is_some() {
                    return Err(syntax());
                }
                ttl = Some(value(i, "TTL")?);
                i += 2;
            }
            "VALUE" => {
                if attached.is_some() {
                    return Err(syntax());
                }
                attached = Some(opts.get(i + 1).ok_or_else(syntax)?.to_vec());
                i += 2;
            }
            _ => {
                if wait.is_some() {
                    return Err(syntax());
                }
                wait = Some(value(i, "WAIT")?);
                i += 2;
            }
        }
    }
    let mut mode = mode.unwrap_or(Mode::Exclusive);
    match (&mut mode, permits) {
        (Mode::Semaphore { limit, permits: p }, Some(n)) => {
            if n == 0 || n > u64::from(*limit) {
                return Err(format!(
                    "ERR PERMITS must be between 1 and the semaphore limit ({limit})"
                ));
            }
            *p = n as u32;
        }
        (_, Some(_)) => return Err("ERR PERMITS needs SEMAPHORE".into()),
        _ => {}
    }
    if reentrant && matches!(mode, Mode::Semaphore { .. }) {
        return Err("ERR REENTRANT applies to EXCLUSIVE and SHARED only".into());
    }
    let ttl_ms = ttl.unwrap_or(default_ttl);
    validate_ttl(ttl_ms, max_ttl)?;
    Ok(Spec {
        mode,
        reentrant,
        ttl_ms,
        wait_ms: wait,
        priority: priority.unwrap_or(0) as u32,
        lock_delay_ms: lock_delay,
        value: attached,
    })
}

/// A lease must not be shorter than the configured minimum (`--min-ttl-ms`; in cluster
/// mode a failover may lengthen a lease by up to the election timeout, so short leases
/// would mean little).
pub(crate) fn validate_min_ttl(ttl_ms: u64, min_ttl: u64) -> Result<(), String> {
    if ttl_ms < min_ttl {
        return Err(format!(
            "LIMIT TTL {ttl_ms} ms is below the minimum of {min_ttl} ms"
        ));
    }
    Ok(())
}

/// A lease must be at least 1 ms and at most the configured maximum.
pub(crate) fn validate_ttl(ttl_ms: u64, max_ttl: u64) -> Result<(), String> {
    if ttl_ms == 0 {
        return Err("ERR TTL must be at least 1 millisecond".into());
    }
    if ttl_ms > max_ttl {
        return Err(format!(
            "LIMIT TTL {ttl_ms} ms is above the maximum of {max_ttl} ms"
        ));
    }
    Ok(())
}

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let Some((key, opts)) = args.split_first() else {
        wrong_args(ctx, "acquire");
        return Flow::Continue;
    };
    if !key_ok(ctx, key) {
        return Flow::Continue;
    }
    let cfg = &ctx.shared.config;
    let spec = match parse(opts, cfg.default_ttl_ms, cfg.max_ttl_ms, cfg.max_semaphore) {
        Ok(spec) => spec,
        Err(msg) => {
            ctx.out.error(&msg);
            return Flow::Continue;
        }
    };
    if let Err(msg) = validate_min_ttl(spec.ttl_ms, cfg.min_ttl()) {
        ctx.out.error(&msg);
        return Flow::Continue;
    }
    if let Some(v) = &spec.value {
        if !super::setvalue::value_ok(ctx, v) {
            return Flow::Continue;
        }
    }
    let request = ctx.shared.next_request(0);
    let req = AcquireRequest {
        id: request,
        mode: spec.mode,
        reentrant: spec.reentrant,
        ttl_ms: spec.ttl_ms,
        wait_ms: spec.wait_ms,
        policy: spec.policy(cfg),
    };
    if ctx.shared.cluster.is_some() {
        return Flow::Replicate(super::Op::Acquire {
            key: key.to_vec(),
            req,
            value: spec.value,
        });
    }
    let (outcome, ticket) = ctx.shared.store.acquire_with_value(
        ctx.conn.session,
        key,
        &req,
        spec.value.as_deref(),
        ctx.now,
    );
    ctx.ticket = ticket;
    reply(ctx, &req, outcome)
}

/// The reply to an ACQUIRE that applied with `outcome` (standalone or replicated).
/// An answer at once counts toward the acquire latency of the request's mode, a queued
/// request toward its wait (see [`crate::server::stats`]).
pub(crate) fn reply(ctx: &mut Ctx, req: &AcquireRequest, outcome: AcquireOutcome) -> Flow {
    let mode = ModeLabel::of(&req.mode);
    match outcome {
        AcquireOutcome::Granted(token) => ctx.out.integer(token.0 as i64),
        AcquireOutcome::Queued => {
            ctx.conn.parked = mode;
            return Flow::Park {
                request: req.id,
                since: Instant::now(),
                keys: 0,
            };
        }
        AcquireOutcome::WouldBlock => ctx.out.null(),
        AcquireOutcome::Deadlock(cycle) => {
            log_deadlock(&cycle);
            ctx.out.error(&deadlock_message(&cycle))
        }
        AcquireOutcome::WrongType { current } => ctx.out.error(&wrongtype_message(current)),
        AcquireOutcome::Limit(limit) => ctx.out.error(&format!("LIMIT {}", limit.describe())),
    }
    ctx.conn.answered.note(mode);
    Flow::Continue
}

/// `DEADLOCK` naming the cycle: who waits for which key, back to the requester.
pub(crate) fn deadlock_message(cycle: &Cycle) -> String {
    let mut msg = String::from("DEADLOCK waiting would close a cycle:");
    for (session, key) in cycle.sessions.iter().zip(&cycle.keys) {
        msg.push_str(&format!(
            " session {session} waits for '{}' ->",
            super::printable(key.as_bytes())
        ));
    }
    if let Some(first) = cycle.sessions.first() {
        msg.push_str(&format!(" session {first}"));
    }
    msg
}

pub(crate) fn wrongtype_message(current: Kind) -> String {
    match current {
        Kind::Lock => "WRONGTYPE key is held as a lock (EXCLUSIVE/SHARED)".into(),
        Kind::Semaphore { limit } => {
            format!("WRONGTYPE key is held as a semaphore with limit {limit}")
        }
    }
}

/// A refused deadlock at info, with the cycle: operators want to know who waits for whom.
pub(crate) fn log_deadlock(cycle: &crate::engine::Cycle) {
    let keys: Vec<String> = cycle
        .keys
        .iter()
        .map(|k| super::printable(k.as_bytes()))
        .collect();
    tracing::info!(sessions = ?cycle.sessions.iter().map(|s| s.0).collect::<Vec<_>>(), ?keys, "deadlock refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Spec, String> {
        let words: Vec<&[u8]> = s.split_whitespace().map(str::as_bytes).collect();
        parse(&words, 30_000, 86_400_000, 1000)
    }

    #[test]
    fn defaults_and_options() {
        assert_eq!(
            p("").unwrap(),
            Spec {
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 30_000,
                wait_ms: None,
                priority: 0,
                lock_delay_ms: None,
                value: None,
            }
        );
        assert_eq!(
            p("wait 0 ttl 5 shared reentrant").unwrap(),
            Spec {
                mode: Mode::Shared,
                reentrant: true,
                ttl_ms: 5,
                wait_ms: Some(0),
                priority: 0,
                lock_delay_ms: None,
                value: None,
            }
        );
        assert_eq!(
            p("SEMAPHORE 3 PERMITS 2").unwrap().mode,
            Mode::Semaphore {
                limit: 3,
                permits: 2
            }
        );
    }

    #[test]
    fn errors() {
        assert!(p("EXCLUSIVE SHARED").unwrap_err().starts_with("ERR syntax"));
        assert!(p("TTL").unwrap_err().starts_with("ERR syntax"));
        assert!(p("TTL x")
            .unwrap_err()
            .starts_with("ERR value is not an integer"));
        assert!(p("TTL -5")
            .unwrap_err()
            .starts_with("ERR value is not an integer"));
        assert!(p("TTL 0").unwrap_err().starts_with("ERR TTL"));
        assert!(p("TTL 86400001").unwrap_err().starts_with("LIMIT"));
        assert!(p("PERMITS 2").unwrap_err().starts_with("ERR PERMITS"));
        assert!(p("SEMAPHORE 2 PERMITS 3")
            .unwrap_err()
            .starts_with("ERR PERMITS"));
        assert!(p("SEMAPHORE 0").unwrap_err().starts_with("ERR SEMAPHORE"));
        assert!(p("SEMAPHORE 1001").unwrap_err().starts_with("LIMIT"));
        assert!(p("SEMAPHORE 2 REENTRANT")
            .unwrap_err()
            .starts_with("ERR REENTRANT"));
        assert!(p("BOGUS").unwrap_err().starts_with("ERR syntax"));
        assert!(p("WAIT 1 WAIT 2").unwrap_err().starts_with("ERR syntax"));
        assert!(p("PRIORITY 1001").unwrap_err().starts_with("ERR PRIORITY"));
        assert!(p("PRIORITY 1 PRIORITY 2")
            .unwrap_err()
            .starts_with("ERR syntax"));
        assert!(p("LOCKDELAY 86400001").unwrap_err().starts_with("LIMIT"));
        let s = p("priority 7 lockdelay 250").unwrap();
        assert_eq!((s.priority, s.lock_delay_ms), (7, Some(250)));
    }
}
