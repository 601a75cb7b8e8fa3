//! Fuzzes the lock table with arbitrary operation sequences (sessions opening and
//! closing, acquires of every mode with random TTL, WAIT and REENTRANT, releases,
//! renewals, cancels, time passing), on 1 to 4 shards, with default or tiny limits, and
//! checks the table's invariants after every step:
//!
//! - no two exclusive holders of a key, shared never beside exclusive, a key's holds all
//!   of its kind, semaphore permits within the limit, one hold per session and key;
//! - fencing tokens: every new grant's token is above every earlier token of its key
//!   (also after the key was removed and recreated) and never issued twice; a reentrant
//!   re-acquire returns the held token;
//! - a waiter's session does not also hold that key, nor queue twice on it;
//! - no stuck queue: the head of a queue conflicts with the current holders;
//! - `stats()` holds, waiters and keys match `for_each_hold` / `for_each_waiter`, and
//!   `session_holds` matches both;
//! - outcomes agree with the state before the step: RELEASE and RENEW succeed exactly
//!   when the session held the key, CANCEL exactly when it was queued on it; every queued
//!   request ends at most once, and only a queued one is granted or timed out; a closed
//!   session holds and waits for nothing;
//! - ADMIN FORCE-RELEASE (`force_release`) drops exactly the listed holds that still
//!   hold the key (a stale pair is skipped), each dropped session hears Expired, and the
//!   waiters behind them are granted (the no-stuck-queue check);
//! - ADMIN LIMITS SET (`set_limit`): every LIMIT refusal after it is one the limit in
//!   force explains (the key count, the key's queue or the session's footprint is at it).
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use turnstile::engine::{
    AcquireOutcome, AcquireRequest, Event, FencingToken, Kind, LimitKind, Limits, LockTable,
    Mode, RequestId, SessionId,
};

const KEYS: [&[u8]; 6] = [b"a", b"b", b"c", b"d", b"e", b"f"];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ModeSpec {
    Exclusive,
    Shared,
    Semaphore { limit: u8, permits: u8 },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open,
    Close(u8),
    Acquire {
        s: u8,
        k: u8,
        mode: ModeSpec,
        reentrant: bool,
        ttl: u16,
        wait: Option<u16>,
    },
    Release(u8, u8),
    Renew(u8, u8, Option<u16>),
    Cancel(u8, u8),
    Advance(u16),
    /// Force-release the key's holders picked by the mask, plus a stale pair if asked.
    ForceRelease {
        k: u8,
        pick: u8,
        stale: bool,
    },
    /// Set one limit (index into `LimitKind::ALL`) to a small value.
    SetLimit(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    shards: u8,
    /// Tiny limits (waiters per key, keys, holds per session) instead of the defaults.
    limits: Option<(u8, u8, u8)>,
    start: u32,
    ops: Vec<Op>,
}

fn mode(spec: ModeSpec) -> Mode {
    match spec {
        ModeSpec::Exclusive => Mode::Exclusive,
        ModeSpec::Shared => Mode::Shared,
        ModeSpec::Semaphore { limit, permits } => {
            let limit = u32::from(limit % 4) + 1;
            Mode::Semaphore {
                limit,
                permits: u32::from(permits) % limit + 1,
            }
        }
    }
}

/// Whether a request in `mode` could be granted beside `holders`.
fn compatible(mode: Mode, holders: &[Holder]) -> bool {
    match mode {
        Mode::Exclusive => holders.is_empty(),
        Mode::Shared => holders.iter().all(|h| h.1 == Mode::Shared),
        Mode::Semaphore { limit, permits } => {
            let used: u64 = holders.iter().map(|h| u64::from(h.1.permits())).sum();
            used + u64::from(permits) <= u64::from(limit)
        }
    }
}

/// One hold as `for_each_hold` reports it: session, mode, token.
type Holder = (SessionId, Mode, u64);

/// The table as plain data, taken after every step.
#[derive(Default)]
struct View {
    /// Per key: holders (session, mode, token) and the kind they report.
    holds: BTreeMap<Vec<u8>, (Kind, Vec<Holder>)>,
    /// Per key: queued (session, request) in queue order.
    waiters: BTreeMap<Vec<u8>, Vec<(SessionId, RequestId)>>,
}

impl View {
    fn take(table: &LockTable) -> View {
        let mut v = View::default();
        table.for_each_hold(|key, kind, session, mode, token, count| {
            assert!(count >= 1, "hold with count 0");
            let e = v
                .holds
                .entry(key.as_bytes().to_vec())
                .or_insert((kind, Vec::new()));
            assert_eq!(e.0, kind, "one key, one kind");
            e.1.push((session, mode, token.0));
        });
        table.for_each_waiter(|key, session, request| {
            v.waiters
                .entry(key.as_bytes().to_vec())
                .or_default()
                .push((session, request));
        });
        v
    }

    fn held(&self, key: &[u8], s: SessionId) -> Option<(Mode, u64)> {
        self.holds
            .get(key)?
            .1
            .iter()
            .find(|h| h.0 == s)
            .map(|h| (h.1, h.2))
    }

    fn queued(&self, key: &[u8], s: SessionId) -> bool {
        self.waiters
            .get(key)
            .is_some_and(|w| w.iter().any(|w| w.0 == s))
    }
}

struct Checker {
    /// The last token issued per key.
    last_token: HashMap<Vec<u8>, u64>,
    /// Every token issued by a new grant.
    issued: HashSet<u64>,
    /// The mode each request asked for.
    modes: HashMap<RequestId, Mode>,
    /// Requests that were granted or timed out.
    ended: HashSet<RequestId>,
}

impl Checker {
    fn new_grant(&mut self, key: &[u8], token: u64) {
        let last = self.last_token.entry(key.to_vec()).or_insert(0);
        assert!(
            token > *last,
            "token {token} on {key:?} not above the previous {last}"
        );
        *last = token;
        assert!(self.issued.insert(token), "token {token} issued twice");
    }

    fn events(&mut self, before: &View, events: &[Event]) {
        // Holds granted earlier in this step's events (a grant may expire in the same
        // advance when time jumped past its lease too).
        let mut granted: HashMap<(Vec<u8>, SessionId), u64> = HashMap::new();
        for ev in events {
            match ev {
                Event::Granted {
                    session,
                    request,
                    key,
                    token,
                } => {
                    let k = key.as_bytes();
                    assert!(
                        before
                            .waiters
                            .get(k)
                            .is_some_and(|w| w.contains(&(*session, *request))),
                        "granted request {request:?} was not queued on {key:?}"
                    );
                    assert!(self.ended.insert(*request), "{request:?} ended twice");
                    self.new_grant(k, token.0);
                    granted.insert((k.to_vec(), *session), token.0);
                }
                Event::TimedOut {
                    session,
                    request,
                    key,
                } => {
                    assert!(
                        before
                            .waiters
                            .get(key.as_bytes())
                            .is_some_and(|w| w.contains(&(*session, *request))),
                        "timed-out request {request:?} was not queued on {key:?}"
                    );
                    assert!(self.ended.insert(*request), "{request:?} ended twice");
                }
                Event::Expired {
                    session,
                    key,
                    token,
                } => {
                    let held = granted
                        .remove(&(key.as_bytes().to_vec(), *session))
                        .or(before.held(key.as_bytes(), *session).map(|h| h.1));
                    assert_eq!(
                        held,
                        Some(token.0),
                        "expired hold of {session:?} on {key:?} was not held"
                    );
                }
                // No lock-delays in these runs (every policy is the default).
                Event::DelayEnded { .. } => {}
            }
        }
    }

    fn invariants(&self, table: &LockTable, v: &View) {
        let mut per_session: HashMap<SessionId, u32> = HashMap::new();
        let mut n_holds = 0u64;
        for (key, (kind, holders)) in &v.holds {
            n_holds += holders.len() as u64;
            let mut sessions = HashSet::new();
            let mut permits = 0u64;
            for &(s, mode, token) in holders {
                *per_session.entry(s).or_default() += 1;
                assert!(sessions.insert(s), "{s:?} holds {key:?} twice");
                assert_eq!(mode.kind(), *kind, "hold of another kind on {key:?}");
                permits += u64::from(mode.permits());
                assert!(
                    token <= self.last_token.get(key).copied().unwrap_or(0),
                    "hold token {token} on {key:?} was never granted"
                );
            }
            let exclusive = holders.iter().filter(|h| h.1 == Mode::Exclusive).count();
            assert!(exclusive <= 1, "{exclusive} exclusive holders of {key:?}");
            if exclusive == 1 {
                assert_eq!(holders.len(), 1, "exclusive beside others on {key:?}");
            }
            if let Kind::Semaphore { limit } = kind {
                assert!(
                    permits <= u64::from(*limit),
                    "{permits} permits of {limit} on {key:?}"
                );
            }
        }
        let mut n_waiters = 0u64;
        for (key, waiters) in &v.waiters {
            n_waiters += waiters.len() as u64;
            let holders: &[Holder] = v.holds.get(key).map_or(&[], |h| &h.1[..]);
            let mut sessions = HashSet::new();
            for &(s, r) in waiters {
                *per_session.entry(s).or_default() += 1;
                assert!(sessions.insert(s), "{s:?} queued twice on {key:?}");
                assert!(
                    holders.iter().all(|h| h.0 != s),
                    "{s:?} waits on {key:?}, which it holds"
                );
                assert!(!self.ended.contains(&r), "{r:?} ended but still queued");
            }
            let head = waiters[0].1;
            let mode = self.modes[&head];
            assert!(
                !compatible(mode, holders),
                "stuck queue on {key:?}: head {head:?} ({mode:?}) fits beside {holders:?}"
            );
        }
        let keys = v
            .holds
            .keys()
            .chain(v.waiters.keys())
            .collect::<HashSet<_>>()
            .len() as u64;
        let stats = table.stats();
        assert_eq!(stats.holds, n_holds, "stats().holds");
        assert_eq!(stats.waiters, n_waiters, "stats().waiters");
        assert_eq!(stats.keys, keys, "stats().keys");
        for (s, n) in per_session {
            assert_eq!(table.session_holds(s), n, "session_holds({s:?})");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let limits = match input.limits {
        None => Limits::default(),
        Some((w, k, h)) => Limits {
            max_waiters_per_key: usize::from(w % 4) + 1,
            max_keys: usize::from(k % 6) + 1,
            max_holds_per_session: u32::from(h % 4) + 1,
        },
    };
    let mut now = u64::from(input.start);
    let mut in_force = limits.clone();
    let table = LockTable::new(usize::from(input.shards % 4) + 1, limits, now);
    let mut sessions: Vec<SessionId> = Vec::new();
    let mut next_request = 1u64;
    let mut check = Checker {
        last_token: HashMap::new(),
        issued: HashSet::new(),
        modes: HashMap::new(),
        ended: HashSet::new(),
    };
    let mut events = Vec::new();
    let mut view = View::default();
    let pick = |sessions: &[SessionId], s: u8| -> Option<SessionId> {
        (!sessions.is_empty()).then(|| sessions[usize::from(s) % sessions.len()])
    };
    for op in input.ops.iter().take(512) {
        events.clear();
        match *op {
            Op::Open => {
                let s = table.open_session();
                assert!(sessions.iter().all(|&o| o < s), "session ids increase");
                sessions.push(s);
            }
            Op::Close(s) => {
                let Some(s) = pick(&sessions, s) else {
                    continue;
                };
                sessions.retain(|&o| o != s);
                table.close_session(s, now, &mut events);
                assert_eq!(table.session_holds(s), 0, "closed session still counted");
            }
            Op::Acquire {
                s,
                k,
                mode: spec,
                reentrant,
                ttl,
                wait,
            } => {
                let Some(s) = pick(&sessions, s) else {
                    continue;
                };
                let key = KEYS[usize::from(k) % KEYS.len()];
                let req = AcquireRequest {
                    id: RequestId(next_request),
                    mode: mode(spec),
                    reentrant,
                    ttl_ms: u64::from(ttl) + 1,
                    wait_ms: wait.map(u64::from), policy: Default::default(),
                };
                next_request += 1;
                check.modes.insert(req.id, req.mode);
                let before = view.held(key, s);
                match table.acquire(s, key, &req, now) {
                    AcquireOutcome::Granted(t) => match before {
                        Some((m, held)) => {
                            assert!(reentrant && m == req.mode, "re-acquire without REENTRANT");
                            assert_eq!(t.0, held, "reentrant re-acquire changed the token");
                        }
                        None => check.new_grant(key, t.0),
                    },
                    AcquireOutcome::Queued => {
                        assert_ne!(req.wait_ms, Some(0), "a try-lock queued");
                        assert!(before.is_none(), "queued on a key it holds");
                    }
                    AcquireOutcome::WouldBlock => assert_eq!(req.wait_ms, Some(0)),
                    AcquireOutcome::Deadlock(cycle) => {
                        assert_eq!(
                            cycle.sessions.first(),
                            Some(&s),
                            "cycle starts at requester"
                        );
                        assert_eq!(cycle.sessions.len(), cycle.keys.len());
                    }
                    AcquireOutcome::WrongType { current } => {
                        assert_ne!(current, req.mode.kind(), "WRONGTYPE of the same kind");
                    }
                    AcquireOutcome::Limit(kind) => {
                        let at = match kind {
                            LimitKind::Keys => {
                                let keys: HashSet<&Vec<u8>> =
                                    view.holds.keys().chain(view.waiters.keys()).collect();
                                keys.len() >= in_force.max_keys
                            }
                            LimitKind::WaitersPerKey => {
                                view.waiters.get(key).map_or(0, Vec::len)
                                    >= in_force.max_waiters_per_key
                            }
                            LimitKind::HoldsPerSession => {
                                table.session_holds(s) >= in_force.max_holds_per_session
                            }
                        };
                        assert!(at, "LIMIT {kind:?} below the limit in force {in_force:?}");
                    }
                }
            }
            Op::Release(s, k) => {
                let Some(s) = pick(&sessions, s) else {
                    continue;
                };
                let key = KEYS[usize::from(k) % KEYS.len()];
                let r = table.release(s, key, now, &mut events);
                assert_eq!(r.is_ok(), view.held(key, s).is_some(), "release of {key:?}");
            }
            Op::Renew(s, k, ttl) => {
                let Some(s) = pick(&sessions, s) else {
                    continue;
                };
                let key = KEYS[usize::from(k) % KEYS.len()];
                let ttl = ttl.map(|t| u64::from(t) + 1);
                let r = table.renew(s, key, ttl, now);
                assert_eq!(r.is_ok(), view.held(key, s).is_some(), "renew of {key:?}");
                if let (Ok(left), Some(ttl)) = (r, ttl) {
                    assert_eq!(left, ttl, "lease left after RENEW TTL");
                }
            }
            Op::Cancel(s, k) => {
                let Some(s) = pick(&sessions, s) else {
                    continue;
                };
                let key = KEYS[usize::from(k) % KEYS.len()];
                let r = table.cancel(s, key, now, &mut events);
                assert_eq!(r, view.queued(key, s), "cancel on {key:?}");
            }
            Op::Advance(d) => {
                now += u64::from(d);
                table.advance(now, &mut events);
            }
            Op::ForceRelease { k, pick, stale } => {
                let key = KEYS[usize::from(k) % KEYS.len()];
                let mut listed: Vec<(SessionId, FencingToken)> = view
                    .holds
                    .get(key)
                    .map_or(&[][..], |h| &h.1[..])
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| pick >> (i % 8) & 1 == 1)
                    .map(|(_, h)| (h.0, FencingToken(h.2)))
                    .collect();
                let held = listed.clone();
                if stale {
                    listed.push((SessionId(u64::MAX), FencingToken(1)));
                }
                let dropped = table.force_release(key, &listed, now, &mut events);
                assert_eq!(dropped, held, "force-release drops exactly the listed holds");
                for (s, t) in &dropped {
                    assert!(
                        events.iter().any(|e| matches!(e,
                            Event::Expired { session, token, .. } if session == s && token == t)),
                        "{s:?} did not hear its forced release"
                    );
                }
            }
            Op::SetLimit(which, value) => {
                let kind = LimitKind::ALL[usize::from(which) % LimitKind::ALL.len()];
                let value = u64::from(value % 6);
                table.set_limit(kind, value);
                in_force.set(kind, value);
            }
        }
        check.events(&view, &events);
        view = View::take(&table);
        check.invariants(&table, &view);
        if let Op::Close(_) = op {
            // The session that just closed holds and waits for nothing.
            let live: HashSet<SessionId> = sessions.iter().copied().collect();
            for (key, (_, holders)) in &view.holds {
                for h in holders {
                    assert!(live.contains(&h.0), "closed {:?} holds {key:?}", h.0);
                }
            }
            for (key, waiters) in &view.waiters {
                for w in waiters {
                    assert!(live.contains(&w.0), "closed {:?} waits on {key:?}", w.0);
                }
            }
        }
    }
});
