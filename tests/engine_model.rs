//! The lock table against a deliberately naive reference model.
//!
//! The model is written from the queue rules of `shared/contract/text-commands.md` and the
//! documented API of [`turnstile::engine`], not from the engine's code: vectors and B-tree
//! maps, linear scans, and a brute-force search for wait-for cycles. A proptest drives the
//! engine and the model with the same random command sequences and compares every reply,
//! every event, every fencing token and, after each step, every key's whole INSPECT view,
//! the holds, the key list and the gauges. Invariants that need no model (compatible
//! holders, permits within the limit, tokens strictly increasing per key and never reused)
//! are checked on the engine directly.
//!
//! The queue policy of issue 9 is in the model too, from its documented rules: CONVERT
//! (a downgrade at once with its token; an upgrade ahead of the queue, waiting only for
//! the other holders, with a new token), lock-delays (a hold that ends other than by
//! RELEASE keeps its key from everyone for its delay; the key exists meanwhile), and
//! priorities (waiters ordered by `priority + waited / aging`, ties by arrival, computed
//! here from scratch at every step rather than kept as a rank).
//!
//! Two points where the rules leave the engine free are compared loosely: the order in
//! which one `close_session` visits keys of one shard (so the events of such a call are
//! compared per key and as a multiset, and the tokens it issues as a set per shard), and
//! the cycle a DEADLOCK reply names (checked to be a real cycle of the wait-for graph that
//! starts at the requester, rather than compared with one cycle chosen by the model).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use turnstile::engine::{
    shard_of, AcquireOutcome, AcquireRequest, Cycle, Event, FencingToken, HolderInfo, Key, KeyInfo,
    Kind, LimitKind, Limits, LockTable, Mode, MultiOutcome, MultiRequest, NotHeld, QueuePolicy,
    RequestId, SessionId, WaiterInfo,
};

/// The aging period of every prioritised request of the runs: short, so that aging
/// changes who goes first within a run's few hundred milliseconds.
const AGING: u64 = 10;

// ---------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MHold {
    session: u64,
    mode: Mode,
    token: u64,
    count: u32,
    /// The TTL a RENEW without TTL uses (the last one given).
    ttl: u64,
    deadline: u64,
    /// Lock-delay when the hold ends other than by RELEASE.
    delay: u64,
    /// The value attached (ACQUIRE ... VALUE, SETVALUE); never empty.
    value: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
struct MWaiter {
    session: u64,
    request: u64,
    mode: Mode,
    ttl: u64,
    since: u64,
    deadline: Option<u64>,
    priority: u64,
    delay: u64,
    /// A holder's pending upgrade (always ahead of every other request).
    upgrade: bool,
    /// Arrival order.
    seq: u64,
    /// A member of a multi-lock (granted only with all its keys).
    multi: bool,
    /// The value the hold gets when granted.
    value: Option<Vec<u8>>,
}

/// What a model operation found about multi-locks, acted on at its end (as the engine
/// does once it has let go of its shards).
#[derive(Clone, Copy, Debug)]
enum MNote {
    Ready(u64, u64),
    TimedOut(u64, u64),
    Cancel(u64, u64),
}

/// What a MACQUIRE replies in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MMulti {
    Granted(Vec<u64>),
    Queued,
    WouldBlock,
    SelfDeadlock,
    Deadlock,
    WrongType(usize, Kind),
    Limit(LimitKind),
}

#[derive(Clone, Debug)]
struct MKey {
    kind: Kind,
    last_token: u64,
    /// In grant order.
    holders: Vec<MHold>,
    /// In arrival order (see [`MKey::ordered`] for the grant order).
    queue: Vec<MWaiter>,
    /// The end of the key's lock-delay: nothing is granted before it has fired.
    delayed_until: Option<u64>,
}

impl MKey {
    /// The queue in grant order at `now`: pending upgrades first, then by effective
    /// priority `priority + waited / AGING` (highest first; in integers, times AGING),
    /// ties in arrival order.
    fn ordered(&self, now: u64) -> Vec<&MWaiter> {
        let mut q: Vec<&MWaiter> = self.queue.iter().collect();
        q.sort_by_key(|w| {
            let effective = w.priority * AGING + (now - w.since);
            (!w.upgrade, std::cmp::Reverse(effective), w.seq)
        });
        q
    }

    fn idle(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty() && self.delayed_until.is_none()
    }
}

/// What an ACQUIRE replies in the model. A deadlock is told apart as "the session already
/// holds or waits on the key" (whose cycle is fully determined) and a cycle through others.
#[derive(Clone, Debug, PartialEq, Eq)]
enum MAcq {
    Granted(u64),
    Queued,
    WouldBlock,
    SelfDeadlock,
    Deadlock,
    WrongType(Kind),
    Limit(LimitKind),
}

fn permits_of(mode: Mode) -> u32 {
    match mode {
        Mode::Semaphore { permits, .. } => permits,
        Mode::Exclusive | Mode::Shared => 1,
    }
}

fn kind_of(mode: Mode) -> Kind {
    match mode {
        Mode::Exclusive | Mode::Shared => Kind::Lock,
        Mode::Semaphore { limit, .. } => Kind::Semaphore { limit },
    }
}

/// Whether a request in `a` must wait for a holder or an earlier request in `b`.
/// Whether waiter `w` stays ahead of a new request with `priority` (an upgrade when
/// `upgrade`): the queue policy of the engine's `QueuePolicy::rank`.
fn stays_ahead(w: &MWaiter, priority: u64, upgrade: bool, now: u64) -> bool {
    if upgrade {
        w.upgrade
    } else {
        w.upgrade || w.priority * AGING + (now - w.since) >= priority * AGING
    }
}

fn conflicts(kind: Kind, a: Mode, b: Mode) -> bool {
    match kind {
        Kind::Lock => !(a == Mode::Shared && b == Mode::Shared),
        Kind::Semaphore { .. } => true,
    }
}

/// Whether a request in `mode` can be granted next to `holders`.
fn fits(holders: &[MHold], mode: Mode) -> bool {
    match mode {
        Mode::Exclusive => holders.is_empty(),
        Mode::Shared => holders.iter().all(|h| h.mode == Mode::Shared),
        Mode::Semaphore { limit, permits } => {
            let used: u32 = holders.iter().map(|h| permits_of(h.mode)).sum();
            used + permits <= limit
        }
    }
}

struct Model {
    shards: usize,
    max_waiters: usize,
    max_keys: usize,
    max_per_session: usize,
    keys: BTreeMap<Vec<u8>, MKey>,
    /// Grants issued so far by each shard.
    issued: Vec<u64>,
    next_session: u64,
    /// Queued multi-locks: (session, request) -> keys in request order.
    groups: BTreeMap<(u64, u64), Vec<Vec<u8>>>,
    notes: Vec<MNote>,
    next_seq: u64,
}

impl Model {
    fn new(shards: usize, limits: &Limits) -> Self {
        Model {
            shards,
            max_waiters: limits.max_waiters_per_key,
            max_keys: limits.max_keys,
            max_per_session: limits.max_holds_per_session as usize,
            keys: BTreeMap::new(),
            issued: vec![0; shards],
            next_session: 1,
            groups: BTreeMap::new(),
            notes: Vec::new(),
            next_seq: 0,
        }
    }

    fn open_session(&mut self) -> u64 {
        let s = self.next_session;
        self.next_session += 1;
        s
    }

    /// Holds plus queued requests of session `s` (a reentrant hold counts once).
    fn footprint(&self, s: u64) -> usize {
        let holds = self
            .keys
            .values()
            .flat_map(|k| &k.holders)
            .filter(|h| h.session == s);
        let waits = self
            .keys
            .values()
            .flat_map(|k| &k.queue)
            .filter(|w| w.session == s && !w.upgrade);
        holds.count() + waits.count()
    }

    fn shard(&self, key: &[u8]) -> usize {
        shard_of(key, self.shards)
    }

    /// The next token of `key`'s shard: shard i of n issues i+1, i+1+n, i+1+2n, ...
    fn next_token(&mut self, key: &[u8]) -> u64 {
        let i = self.shard(key);
        let token = self.issued[i] * self.shards as u64 + i as u64 + 1;
        self.issued[i] += 1;
        token
    }

    #[allow(clippy::too_many_arguments)]
    fn grant(
        &mut self,
        key: &[u8],
        session: u64,
        mode: Mode,
        ttl: u64,
        delay: u64,
        now: u64,
        value: Option<Vec<u8>>,
    ) -> u64 {
        let token = self.next_token(key);
        let k = self.keys.get_mut(key).expect("granting on a live key");
        k.last_token = token;
        k.holders.push(MHold {
            session,
            mode,
            token,
            count: 1,
            ttl,
            deadline: now + ttl,
            delay,
            value,
        });
        token
    }

    /// SETVALUE: the holder's value replaced (empty: cleared).
    fn set_value(&mut self, s: u64, key: &[u8], value: &[u8]) -> Result<(), NotHeld> {
        let k = self.keys.get_mut(key).ok_or(NotHeld)?;
        let h = k
            .holders
            .iter_mut()
            .find(|h| h.session == s)
            .ok_or(NotHeld)?;
        h.value = (!value.is_empty()).then(|| value.to_vec());
        Ok(())
    }

    /// The holders' values, in holder order, as the table's `inspect_values` shows them.
    fn values(&self, key: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
        self.keys
            .get(key)
            .map(|k| k.holders.iter().map(|h| h.value.clone()).collect())
    }

    /// Whether the head of `k`'s queue (in grant order at `now`) could be granted now.
    fn head_grantable(k: &MKey, now: u64) -> bool {
        if k.delayed_until.is_some() {
            return false;
        }
        match k.ordered(now).first() {
            Some(w) if w.upgrade => k.holders.len() == 1 && k.holders[0].session == w.session,
            Some(w) => fits(&k.holders, w.mode),
            None => false,
        }
    }

    /// Grants the head of the queue while it fits next to the holders (an upgrade: while
    /// its session is the only holder), nothing during a lock-delay.
    fn grant_waiters(&mut self, key: &[u8], now: u64, events: &mut Vec<Event>) {
        loop {
            let Some(k) = self.keys.get_mut(key) else {
                return;
            };
            if !Self::head_grantable(k, now) {
                return;
            }
            let head = k.ordered(now)[0];
            if head.multi {
                // Ready here; granted only with its other keys, and it keeps its place.
                self.notes.push(MNote::Ready(head.session, head.request));
                return;
            }
            let seq = k.ordered(now)[0].seq;
            let i = k.queue.iter().position(|w| w.seq == seq).expect("head");
            let w = k.queue.remove(i);
            let token = if w.upgrade {
                let token = self.next_token(key);
                let k = self.keys.get_mut(key).expect("live");
                k.last_token = token;
                k.holders[0].mode = Mode::Exclusive;
                k.holders[0].token = token;
                token
            } else {
                self.grant(key, w.session, w.mode, w.ttl, w.delay, now, w.value)
            };
            events.push(Event::Granted {
                session: SessionId(w.session),
                request: RequestId(w.request),
                key: Key::new(key),
                token: FencingToken(token),
            });
        }
    }

    fn remove_if_idle(&mut self, key: &[u8]) {
        if self.keys.get(key).is_some_and(MKey::idle) {
            self.keys.remove(key);
        }
    }

    /// Starts (or lengthens) `key`'s lock-delay.
    fn start_delay(&mut self, key: &[u8], delay: u64, now: u64) {
        if delay > 0 {
            let k = self.keys.get_mut(key).expect("live");
            k.delayed_until = Some(k.delayed_until.unwrap_or(0).max(now + delay));
        }
    }

    /// The sessions that `session`, requesting `mode` with the requests `ahead` of it in
    /// grant order, waits for on `key`: conflicting holders other than itself, and
    /// conflicting requests ahead.
    fn waits_for(&self, key: &[u8], session: u64, mode: Mode, ahead: &[&MWaiter]) -> Vec<u64> {
        let Some(k) = self.keys.get(key) else {
            return Vec::new();
        };
        let holders = k
            .holders
            .iter()
            .filter(|h| h.session != session && conflicts(k.kind, mode, h.mode))
            .map(|h| h.session);
        let ahead = ahead
            .iter()
            .filter(|w| conflicts(k.kind, mode, w.mode))
            .map(|w| w.session);
        holders.chain(ahead).collect()
    }

    /// Every edge of the wait-for graph at `now`: (waiter, key it waits on, session it
    /// waits for).
    fn edges(&self, now: u64) -> Vec<(u64, Vec<u8>, u64)> {
        let mut edges = Vec::new();
        for (key, k) in &self.keys {
            let order = k.ordered(now);
            for (pos, w) in order.iter().enumerate() {
                for to in self.waits_for(key, w.session, w.mode, &order[..pos]) {
                    edges.push((w.session, key.clone(), to));
                }
            }
        }
        edges
    }

    /// What a new request of `session` in `mode` with `priority` (or an upgrade) would
    /// wait for on `key` at `now`.
    fn new_waits_for(
        &self,
        key: &[u8],
        session: u64,
        mode: Mode,
        priority: u64,
        upgrade: bool,
        now: u64,
    ) -> Vec<u64> {
        let Some(k) = self.keys.get(key) else {
            return Vec::new();
        };
        let order = k.ordered(now);
        let ahead: Vec<&MWaiter> = order
            .into_iter()
            .filter(|w| stays_ahead(w, priority, upgrade, now))
            .collect();
        self.waits_for(key, session, mode, &ahead)
    }

    /// The waiters on `key` that a request by `session` in `mode` would pass and that
    /// would then wait for it: the edges a queued request adds *into* its session.
    fn passed_waiters(
        &self,
        key: &[u8],
        session: u64,
        mode: Mode,
        priority: u64,
        upgrade: bool,
        now: u64,
    ) -> Vec<u64> {
        let Some(k) = self.keys.get(key) else {
            return Vec::new();
        };
        k.queue
            .iter()
            .filter(|w| {
                !stays_ahead(w, priority, upgrade, now)
                    && w.session != session
                    && conflicts(k.kind, w.mode, mode)
            })
            .map(|w| w.session)
            .collect()
    }

    /// Whether a new request of `session` on `key` (with its out-edges `start`) would
    /// close a cycle: it reaches itself, or a waiter it passes (which would then wait
    /// for it).
    #[allow(clippy::too_many_arguments)]
    fn closes_cycle(
        &self,
        key: &[u8],
        session: u64,
        mode: Mode,
        priority: u64,
        upgrade: bool,
        now: u64,
        start: &[u64],
    ) -> bool {
        self.reaches(start, session, now)
            || self
                .passed_waiters(key, session, mode, priority, upgrade, now)
                .into_iter()
                .any(|w| self.reaches(start, w, now))
    }

    /// Whether `target` is reachable from any of `start` along the wait-for edges.
    fn reaches(&self, start: &[u64], target: u64, now: u64) -> bool {
        let edges = self.edges(now);
        let mut seen: BTreeSet<u64> = start.iter().copied().collect();
        let mut todo: VecDeque<u64> = start.iter().copied().collect();
        while let Some(s) = todo.pop_front() {
            if s == target {
                return true;
            }
            for (from, _, to) in &edges {
                if *from == s && seen.insert(*to) {
                    todo.push_back(*to);
                }
            }
        }
        false
    }

    fn acquire(&mut self, s: u64, key: &[u8], req: &AcquireRequest, now: u64) -> MAcq {
        self.acquire_with_value(s, key, req, None, now)
    }

    fn acquire_with_value(
        &mut self,
        s: u64,
        key: &[u8],
        req: &AcquireRequest,
        value: Option<&[u8]>,
        now: u64,
    ) -> MAcq {
        let value = value.filter(|v| !v.is_empty()).map(<[u8]>::to_vec);
        let kind = kind_of(req.mode);
        let ttl = req.ttl_ms;
        let Some(k) = self.keys.get(key) else {
            if self.keys.len() >= self.max_keys {
                return MAcq::Limit(LimitKind::Keys);
            }
            if self.footprint(s) >= self.max_per_session {
                return MAcq::Limit(LimitKind::HoldsPerSession);
            }
            self.keys.insert(
                key.to_vec(),
                MKey {
                    kind,
                    last_token: 0,
                    holders: Vec::new(),
                    queue: Vec::new(),
                    delayed_until: None,
                },
            );
            let delay = u64::from(req.policy.lock_delay_ms);
            return MAcq::Granted(self.grant(key, s, req.mode, ttl, delay, now, value));
        };
        if k.kind != kind {
            return MAcq::WrongType(k.kind);
        }
        if let Some(i) = k.holders.iter().position(|h| h.session == s) {
            if req.reentrant && k.holders[i].mode == req.mode && kind == Kind::Lock {
                let h = &mut self.keys.get_mut(key).expect("present").holders[i];
                h.count += 1;
                h.deadline = h.deadline.max(now + ttl);
                h.ttl = ttl;
                if value.is_some() {
                    h.value = value;
                }
                return MAcq::Granted(h.token);
            }
            return MAcq::SelfDeadlock;
        }
        if k.queue.iter().any(|w| w.session == s) {
            return MAcq::SelfDeadlock;
        }
        // The per-session limit is checked where the request would add a hold or a waiter.
        let full = self.footprint(s) >= self.max_per_session;
        let delay = u64::from(req.policy.lock_delay_ms);
        // Nothing queued ahead of it (by the same order as the queue's). A session that
        // waits elsewhere takes no priority (passing waiters could close a cycle).
        let waiting = self
            .keys
            .values()
            .any(|k| k.queue.iter().any(|w| w.session == s));
        let priority = if waiting {
            0
        } else {
            u64::from(req.policy.priority)
        };
        let first = k
            .queue
            .iter()
            .all(|w| !w.upgrade && w.priority * AGING + (now - w.since) < priority * AGING);
        if first && fits(&k.holders, req.mode) && k.delayed_until.is_none() {
            if full {
                return MAcq::Limit(LimitKind::HoldsPerSession);
            }
            return MAcq::Granted(self.grant(key, s, req.mode, ttl, delay, now, value));
        }
        if req.wait_ms == Some(0) {
            return MAcq::WouldBlock;
        }
        if k.queue.len() >= self.max_waiters {
            return MAcq::Limit(LimitKind::WaitersPerKey);
        }
        if full {
            return MAcq::Limit(LimitKind::HoldsPerSession);
        }
        let start = self.new_waits_for(key, s, req.mode, priority, false, now);
        if self.closes_cycle(key, s, req.mode, priority, false, now, &start) {
            return MAcq::Deadlock;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.keys
            .get_mut(key)
            .expect("present")
            .queue
            .push(MWaiter {
                session: s,
                request: req.id.0,
                mode: req.mode,
                ttl,
                since: now,
                deadline: req.wait_ms.map(|w| now + w),
                priority,
                delay,
                upgrade: false,
                seq,
                multi: false,
                value,
            });
        MAcq::Queued
    }

    /// A multi-lock: all keys at once, queued on all, or refused with nothing changed.
    fn acquire_multi(
        &mut self,
        s: u64,
        items: &[(&[u8], Mode)],
        req: &MultiRequest,
        now: u64,
    ) -> MMulti {
        for (i, (key, _)) in items.iter().enumerate() {
            if items[..i].iter().any(|(k, _)| k == key) {
                return MMulti::SelfDeadlock;
            }
        }
        for (i, (key, mode)) in items.iter().enumerate() {
            if let Some(k) = self.keys.get(*key) {
                if k.kind != kind_of(*mode) {
                    return MMulti::WrongType(i, k.kind);
                }
                if k.holders.iter().any(|h| h.session == s)
                    || k.queue.iter().any(|w| w.session == s)
                {
                    return MMulti::SelfDeadlock;
                }
            }
        }
        let free = |k: Option<&MKey>, mode: Mode| {
            k.is_none_or(|k| {
                k.queue.is_empty() && fits(&k.holders, mode) && k.delayed_until.is_none()
            })
        };
        let all_free = items
            .iter()
            .all(|(key, mode)| free(self.keys.get(*key), *mode));
        if !all_free && req.wait_ms == Some(0) {
            return MMulti::WouldBlock;
        }
        if !all_free
            && items.iter().any(|(key, _)| {
                self.keys
                    .get(*key)
                    .is_some_and(|k| k.queue.len() >= self.max_waiters)
            })
        {
            return MMulti::Limit(LimitKind::WaitersPerKey);
        }
        let new_keys = items
            .iter()
            .filter(|(key, _)| !self.keys.contains_key(*key))
            .count();
        if new_keys > 0 && self.keys.len() + new_keys > self.max_keys {
            return MMulti::Limit(LimitKind::Keys);
        }
        if self.footprint(s) + items.len() > self.max_per_session {
            return MMulti::Limit(LimitKind::HoldsPerSession);
        }
        let ttl = req.ttl_ms;
        let create = |model: &mut Model, key: &[u8], mode: Mode| {
            model.keys.entry(key.to_vec()).or_insert(MKey {
                kind: kind_of(mode),
                last_token: 0,
                holders: Vec::new(),
                queue: Vec::new(),
                delayed_until: None,
            });
        };
        if all_free {
            let mut tokens = Vec::new();
            for (key, mode) in items {
                create(self, key, *mode);
                tokens.push(self.grant(
                    key,
                    s,
                    *mode,
                    ttl,
                    u64::from(req.lock_delay_ms),
                    now,
                    None,
                ));
            }
            return MMulti::Granted(tokens);
        }
        for (i, (key, mode)) in items.iter().enumerate() {
            let start = self.new_waits_for(key, s, *mode, 0, false, now);
            if self.closes_cycle(key, s, *mode, 0, false, now, &start) {
                for (k, _) in &items[..i] {
                    let mk = self.keys.get_mut(*k).expect("queued on");
                    mk.queue.retain(|w| w.session != s);
                    self.remove_if_idle(k);
                }
                return MMulti::Deadlock;
            }
            create(self, key, *mode);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.keys
                .get_mut(*key)
                .expect("created")
                .queue
                .push(MWaiter {
                    session: s,
                    request: req.id.0,
                    mode: *mode,
                    ttl,
                    since: now,
                    deadline: req.wait_ms.map(|w| now + w),
                    priority: 0,
                    delay: u64::from(req.lock_delay_ms),
                    upgrade: false,
                    seq,
                    multi: true,
                    value: None,
                });
        }
        self.groups.insert(
            (s, req.id.0),
            items.iter().map(|(k, _)| k.to_vec()).collect(),
        );
        MMulti::Queued
    }

    /// CONVERT, from its documented rules.
    #[allow(clippy::too_many_arguments)]
    fn convert(
        &mut self,
        s: u64,
        key: &[u8],
        to: Mode,
        request: u64,
        wait: Option<u64>,
        now: u64,
        events: &mut Vec<Event>,
    ) -> Result<MAcq, NotHeld> {
        let k = self.keys.get(key).ok_or(NotHeld)?;
        let i = k
            .holders
            .iter()
            .position(|h| h.session == s)
            .ok_or(NotHeld)?;
        if k.kind != Kind::Lock {
            return Ok(MAcq::WrongType(k.kind));
        }
        if k.queue.iter().any(|w| w.session == s) {
            return Ok(MAcq::SelfDeadlock);
        }
        let h = &k.holders[i];
        if h.mode == to {
            return Ok(MAcq::Granted(h.token));
        }
        if to == Mode::Shared {
            let token = h.token;
            self.keys.get_mut(key).expect("live").holders[i].mode = Mode::Shared;
            self.grant_waiters(key, now, events);
            return Ok(MAcq::Granted(token));
        }
        let waits_elsewhere = self
            .keys
            .values()
            .any(|m| m.queue.iter().any(|w| w.session == s));
        if !k.queue.is_empty() && waits_elsewhere {
            return Ok(MAcq::SelfDeadlock);
        }
        if k.holders.len() == 1 && k.delayed_until.is_none() {
            let token = self.next_token(key);
            let k = self.keys.get_mut(key).expect("live");
            k.last_token = token;
            k.holders[i].mode = Mode::Exclusive;
            k.holders[i].token = token;
            return Ok(MAcq::Granted(token));
        }
        if wait == Some(0) {
            return Ok(MAcq::WouldBlock);
        }
        let start = self.new_waits_for(key, s, Mode::Exclusive, 0, true, now);
        if self.closes_cycle(key, s, Mode::Exclusive, 0, true, now, &start) {
            return Ok(MAcq::Deadlock);
        }
        let (ttl, seq) = (h.ttl, self.next_seq);
        self.next_seq += 1;
        self.keys.get_mut(key).expect("live").queue.push(MWaiter {
            session: s,
            request,
            mode: Mode::Exclusive,
            ttl,
            since: now,
            deadline: wait.map(|w| now + w),
            priority: 0,
            delay: 0,
            upgrade: true,
            seq,
            multi: false,
            value: None,
        });
        Ok(MAcq::Queued)
    }

    /// Drops `s`'s hold on `key` (its pending upgrade first, which hears TimedOut).
    /// Returns the hold.
    fn drop_hold(&mut self, s: u64, key: &[u8], events: &mut Vec<Event>) -> MHold {
        let k = self.keys.get_mut(key).expect("live");
        if let Some(j) = k.queue.iter().position(|w| w.session == s && w.upgrade) {
            let w = k.queue.remove(j);
            events.push(Event::TimedOut {
                session: SessionId(s),
                request: RequestId(w.request),
                key: Key::new(key),
            });
        }
        let i = k.holders.iter().position(|h| h.session == s).expect("held");
        k.holders.remove(i)
    }

    /// Whether `cycle` is a cycle of the wait-for graph closed by `s` queueing on `key` in
    /// `mode` (the model's state is the one before the request: a refusal changes nothing).
    #[allow(clippy::too_many_arguments)]
    fn check_cycle(
        &self,
        s: u64,
        key: &[u8],
        mode: Mode,
        priority: u64,
        upgrade: bool,
        now: u64,
        cycle: &Cycle,
    ) -> Result<(), String> {
        let n = cycle.sessions.len();
        if n == 0 || n != cycle.keys.len() {
            return Err(format!("malformed cycle {cycle:?}"));
        }
        if cycle.sessions[0] != SessionId(s) || cycle.keys[0].as_bytes() != key {
            return Err(format!("cycle {cycle:?} does not start with the request"));
        }
        let distinct: BTreeSet<_> = cycle.sessions.iter().collect();
        if distinct.len() != n {
            return Err(format!("cycle {cycle:?} repeats a session"));
        }
        let first = self.new_waits_for(key, s, mode, priority, upgrade, now);
        let passed = self.passed_waiters(key, s, mode, priority, upgrade, now);
        let edges = self.edges(now);
        for i in 0..n {
            let next = cycle.sessions[(i + 1) % n].0;
            let ok = if i == 0 {
                first.contains(&next)
            } else if next == s
                && cycle.keys[i].as_bytes() == key
                && passed.contains(&cycle.sessions[i].0)
            {
                // The closing edge of a cycle through a waiter the request would pass:
                // it exists only if the request queued (see `closes_cycle`).
                true
            } else {
                edges.iter().any(|(from, k, to)| {
                    *from == cycle.sessions[i].0
                        && k.as_slice() == cycle.keys[i].as_bytes()
                        && *to == next
                })
            };
            if !ok {
                return Err(format!(
                    "edge {i} of {cycle:?} is not in the wait-for graph"
                ));
            }
        }
        Ok(())
    }

    fn release(
        &mut self,
        s: u64,
        key: &[u8],
        now: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), NotHeld> {
        let k = self.keys.get_mut(key).ok_or(NotHeld)?;
        let i = k
            .holders
            .iter()
            .position(|h| h.session == s)
            .ok_or(NotHeld)?;
        if k.holders[i].count > 1 {
            k.holders[i].count -= 1;
            return Ok(());
        }
        self.drop_hold(s, key, events);
        self.grant_waiters(key, now, events);
        self.remove_if_idle(key);
        self.settle(now, events);
        Ok(())
    }

    /// ADMIN FORCE-RELEASE: drops each listed (session, token) that holds `key`; its
    /// session hears Expired; then the waiters are granted.
    fn force_release(
        &mut self,
        key: &[u8],
        holds: &[(u64, u64)],
        now: u64,
        events: &mut Vec<Event>,
    ) -> Vec<(u64, u64)> {
        let mut dropped = Vec::new();
        for &(s, t) in holds {
            let Some(k) = self.keys.get_mut(key) else {
                break;
            };
            if k.holders.iter().any(|h| h.session == s && h.token == t) {
                // As a lease expiry: a pending upgrade ends first, and the hold's
                // lock-delay starts.
                let h = self.drop_hold(s, key, events);
                events.push(Event::Expired {
                    session: SessionId(s),
                    key: Key::new(key),
                    token: FencingToken(t),
                });
                self.start_delay(key, h.delay, now);
                dropped.push((s, t));
            }
        }
        if !dropped.is_empty() {
            self.grant_waiters(key, now, events);
            self.remove_if_idle(key);
            self.settle(now, events);
        }
        dropped
    }

    fn set_limit(&mut self, kind: LimitKind, value: u64) {
        match kind {
            LimitKind::WaitersPerKey => self.max_waiters = value as usize,
            LimitKind::Keys => self.max_keys = value as usize,
            LimitKind::HoldsPerSession => self.max_per_session = value as usize,
        }
    }

    fn renew(&mut self, s: u64, key: &[u8], ttl: Option<u64>, now: u64) -> Result<u64, NotHeld> {
        let k = self.keys.get_mut(key).ok_or(NotHeld)?;
        let h = k
            .holders
            .iter_mut()
            .find(|h| h.session == s)
            .ok_or(NotHeld)?;
        let ttl = ttl.unwrap_or(h.ttl);
        h.ttl = ttl;
        h.deadline = now + ttl;
        Ok(ttl)
    }

    fn cancel(&mut self, s: u64, key: &[u8], now: u64, events: &mut Vec<Event>) -> bool {
        let Some(k) = self.keys.get_mut(key) else {
            return false;
        };
        let Some(i) = k.queue.iter().position(|w| w.session == s) else {
            return false;
        };
        if k.queue[i].multi {
            self.notes.push(MNote::Cancel(s, k.queue[i].request));
            self.settle(now, events);
            return true;
        }
        k.queue.remove(i);
        self.grant_waiters(key, now, events);
        self.remove_if_idle(key);
        self.settle(now, events);
        true
    }

    /// The session's queued requests (pending upgrades included) are cancelled first,
    /// then its holds end (each with its lock-delay).
    fn close_session(&mut self, s: u64, now: u64, events: &mut Vec<Event>) {
        self.groups.retain(|(gs, _), _| *gs != s);
        let keys: Vec<Vec<u8>> = self.keys.keys().cloned().collect();
        for key in &keys {
            let k = self.keys.get_mut(key).expect("listed");
            let before = k.queue.len();
            k.queue.retain(|w| w.session != s);
            if k.queue.len() != before {
                self.grant_waiters(key, now, events);
                self.remove_if_idle(key);
            }
        }
        for key in &keys {
            let Some(k) = self.keys.get(key) else {
                continue;
            };
            if k.holders.iter().any(|h| h.session == s) {
                let h = self.drop_hold(s, key, events);
                self.start_delay(key, h.delay, now);
                self.grant_waiters(key, now, events);
                self.remove_if_idle(key);
            }
        }
        self.settle(now, events);
    }

    /// The first timer due at `now` in `shard`, in the order (deadline, key, lease before
    /// wait, session).
    fn next_due(&self, shard: usize, now: u64) -> Option<(u64, Vec<u8>, u8, u64)> {
        let mut due = Vec::new();
        for (key, k) in &self.keys {
            if self.shard(key) != shard {
                continue;
            }
            for h in &k.holders {
                if h.deadline <= now {
                    due.push((h.deadline, key.clone(), 0, h.session));
                }
            }
            for w in &k.queue {
                if let Some(d) = w.deadline.filter(|&d| d <= now) {
                    due.push((d, key.clone(), 1, w.session));
                }
            }
            if let Some(d) = k.delayed_until.filter(|&d| d <= now) {
                due.push((d, key.clone(), 2, 0));
            }
        }
        due.into_iter().min()
    }

    fn advance(&mut self, now: u64, events: &mut Vec<Event>) {
        for shard in 0..self.shards {
            while let Some((_, key, rank, s)) = self.next_due(shard, now) {
                let k = self.keys.get_mut(&key).expect("due on a live key");
                if rank == 0 {
                    let h = self.drop_hold(s, &key, events);
                    events.push(Event::Expired {
                        session: SessionId(s),
                        key: Key::new(&key),
                        token: FencingToken(h.token),
                    });
                    self.start_delay(&key, h.delay, now);
                } else if rank == 2 {
                    k.delayed_until = None;
                    events.push(Event::DelayEnded {
                        key: Key::new(&key),
                    });
                } else {
                    let i = k
                        .queue
                        .iter()
                        .position(|w| w.session == s)
                        .expect("due waiter");
                    if k.queue[i].multi {
                        // Its timer is spent; the whole multi-lock times out, before the
                        // next timer fires.
                        k.queue[i].deadline = None;
                        self.notes.push(MNote::TimedOut(s, k.queue[i].request));
                        self.settle(now, events);
                        continue;
                    }
                    let w = k.queue.remove(i);
                    events.push(Event::TimedOut {
                        session: SessionId(s),
                        request: RequestId(w.request),
                        key: Key::new(&key),
                    });
                }
                self.grant_waiters(&key, now, events);
                self.remove_if_idle(&key);
                // What the timer made ready is granted before the next timer fires.
                self.settle(now, events);
            }
        }
    }

    /// Acts on the notes of an operation, first noted first.
    fn settle(&mut self, now: u64, events: &mut Vec<Event>) {
        while !self.notes.is_empty() {
            match self.notes.remove(0) {
                MNote::Ready(s, r) => {
                    let Some(keys) = self.groups.get(&(s, r)).cloned() else {
                        continue;
                    };
                    let ready = keys.iter().all(|key| {
                        let k = &self.keys[key];
                        Self::head_grantable(k, now)
                            && k.ordered(now)
                                .first()
                                .is_some_and(|w| w.session == s && w.request == r)
                    });
                    if !ready {
                        continue;
                    }
                    self.groups.remove(&(s, r));
                    for key in &keys {
                        let k = self.keys.get_mut(key).expect("member key");
                        let i = k.queue.iter().position(|w| w.session == s).expect("member");
                        let w = k.queue.remove(i);
                        let token = self.grant(key, s, w.mode, w.ttl, w.delay, now, w.value);
                        events.push(Event::Granted {
                            session: SessionId(s),
                            request: RequestId(r),
                            key: Key::new(key),
                            token: FencingToken(token),
                        });
                    }
                    for key in &keys {
                        self.grant_waiters(key, now, events);
                    }
                }
                note @ (MNote::TimedOut(s, r) | MNote::Cancel(s, r)) => {
                    let Some(keys) = self.groups.remove(&(s, r)) else {
                        continue;
                    };
                    if let MNote::TimedOut(..) = note {
                        events.push(Event::TimedOut {
                            session: SessionId(s),
                            request: RequestId(r),
                            key: Key::new(&keys[0]),
                        });
                    }
                    for key in &keys {
                        let k = self.keys.get_mut(key).expect("member key");
                        k.queue.retain(|w| w.session != s);
                        self.grant_waiters(key, now, events);
                        self.remove_if_idle(key);
                    }
                }
            }
        }
    }

    fn inspect(&self, key: &[u8], now: u64) -> Option<KeyInfo> {
        let k = self.keys.get(key)?;
        Some(KeyInfo {
            kind: k.kind,
            fencing: FencingToken(k.last_token),
            holders: k
                .holders
                .iter()
                .map(|h| HolderInfo {
                    session: SessionId(h.session),
                    mode: h.mode,
                    token: FencingToken(h.token),
                    permits: permits_of(h.mode),
                    count: h.count,
                    ttl_ms: h.deadline.saturating_sub(now),
                })
                .collect(),
            waiters: k
                .ordered(now)
                .into_iter()
                .map(|w| WaiterInfo {
                    session: SessionId(w.session),
                    request: RequestId(w.request),
                    mode: w.mode,
                    permits: permits_of(w.mode),
                    waited_ms: now - w.since,
                })
                .collect(),
        })
    }

    fn earliest_deadline(&self) -> Option<u64> {
        self.keys
            .values()
            .flat_map(|k| {
                let leases = k.holders.iter().map(|h| h.deadline);
                let waits = k.queue.iter().filter_map(|w| w.deadline);
                leases.chain(waits).chain(k.delayed_until)
            })
            .min()
    }

    /// Replaces tokens the model chose in one call by the ones the engine chose
    /// (`map[key]`: model token -> engine token).
    fn adopt_tokens(&mut self, map: &BTreeMap<Vec<u8>, BTreeMap<u64, u64>>) {
        for (key, m) in map {
            if let Some(k) = self.keys.get_mut(key) {
                for h in &mut k.holders {
                    if let Some(&t) = m.get(&h.token) {
                        h.token = t;
                    }
                }
                if let Some(&t) = m.get(&k.last_token) {
                    k.last_token = t;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// Keys of the runs: the first four are mostly locks, the last three mostly semaphores
/// with 2, 3 and 1 permits.
const KEYS: [&[u8]; 7] = [
    b"a",
    b"b",
    b"orders/42",
    b"\x00bin\xff",
    b"sem2",
    b"sem3",
    b"sem1",
];
const SEM_LIMITS: [u32; 3] = [2, 3, 1];
const SLOTS: usize = 4;

#[derive(Clone, Copy, Debug)]
enum ModeSel {
    /// The key's usual kind: EXCLUSIVE or SHARED on a lock key, the key's semaphore.
    Usual {
        shared: bool,
        permits: u32,
    },
    Exclusive,
    Shared,
    Semaphore {
        limit: u32,
        permits: u32,
    },
}

impl ModeSel {
    fn mode(self, key: usize) -> Mode {
        match self {
            ModeSel::Usual { shared, permits } => match key.checked_sub(4) {
                Some(i) => {
                    let limit = SEM_LIMITS[i];
                    Mode::Semaphore {
                        limit,
                        permits: 1 + (permits - 1) % limit,
                    }
                }
                None if shared => Mode::Shared,
                None => Mode::Exclusive,
            },
            ModeSel::Exclusive => Mode::Exclusive,
            ModeSel::Shared => Mode::Shared,
            ModeSel::Semaphore { limit, permits } => Mode::Semaphore {
                limit,
                permits: 1 + (permits - 1) % limit,
            },
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        slot: usize,
        key: usize,
        mode: ModeSel,
        reentrant: bool,
        ttl: u64,
        wait: Option<u64>,
        priority: u32,
        delay: u32,
        /// ACQUIRE ... VALUE (an empty one is no value).
        value: Option<Vec<u8>>,
    },
    /// CONVERT to SHARED (`shared`) or EXCLUSIVE.
    Convert {
        slot: usize,
        key: usize,
        shared: bool,
        wait: Option<u64>,
    },
    /// SETVALUE (an empty value clears it).
    SetValue {
        slot: usize,
        key: usize,
        value: Vec<u8>,
    },
    Release {
        slot: usize,
        key: usize,
    },
    Renew {
        slot: usize,
        key: usize,
        ttl: Option<u64>,
    },
    Cancel {
        slot: usize,
        key: usize,
    },
    /// A multi-lock of up to three keys (a key may repeat: refused).
    Multi {
        slot: usize,
        keys: Vec<(usize, ModeSel)>,
        ttl: u64,
        wait: Option<u64>,
    },
    /// Releases of several keys in one command.
    ReleaseMany {
        slot: usize,
        keys: Vec<usize>,
    },
    /// Closes the slot's session and opens a new one in its place.
    Reopen {
        slot: usize,
    },
    /// ADMIN FORCE-RELEASE of the key's holders picked by the mask, plus a stale pair.
    ForceRelease {
        key: usize,
        pick: u8,
        stale: bool,
    },
    /// ADMIN LIMITS SET (limit index into LimitKind::ALL).
    SetLimit {
        limit: usize,
        value: u64,
    },
    /// Moves the clock and fires what is due.
    Advance {
        ms: u64,
    },
    /// Moves the clock without firing anything (the driver is late): later commands run at
    /// the new time with overdue timers still pending.
    Tick {
        ms: u64,
    },
}

fn mode_sel() -> impl Strategy<Value = ModeSel> {
    prop_oneof![
        8 => (any::<bool>(), 1..=3u32).prop_map(|(shared, permits)| ModeSel::Usual { shared, permits }),
        1 => Just(ModeSel::Exclusive),
        1 => Just(ModeSel::Shared),
        1 => (1..=3u32, 1..=3u32).prop_map(|(limit, permits)| ModeSel::Semaphore { limit, permits }),
    ]
}

fn wait() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(0)),
        3 => (1..50u64).prop_map(Some),
    ]
}

fn priority() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 1 => 1..4u32]
}

fn delay() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(0u32), 1 => 1..40u32]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let key = 0..KEYS.len();
    prop_oneof![
        12 => (slot.clone(), key.clone(), mode_sel(), any::<bool>(), 1..50u64, wait(), priority(), delay(), value()).prop_map(
            |(slot, key, mode, reentrant, ttl, wait, priority, delay, value)| Op::Acquire { slot, key, mode, reentrant, ttl, wait, priority, delay, value }
        ),
        3 => (slot.clone(), key.clone(), any::<bool>(), wait()).prop_map(
            |(slot, key, shared, wait)| Op::Convert { slot, key, shared, wait }
        ),
        2 => (slot.clone(), key.clone(), proptest::collection::vec(b'a'..b'd', 0..3))
            .prop_map(|(slot, key, value)| Op::SetValue { slot, key, value }),
        4 => (slot.clone(), key.clone()).prop_map(|(slot, key)| Op::Release { slot, key }),
        2 => (slot.clone(), key.clone(), proptest::option::of(1..50u64))
            .prop_map(|(slot, key, ttl)| Op::Renew { slot, key, ttl }),
        2 => (slot.clone(), key.clone()).prop_map(|(slot, key)| Op::Cancel { slot, key }),
        4 => (
            slot.clone(),
            proptest::collection::vec((key.clone(), mode_sel()), 1..=3),
            1..50u64,
            wait()
        )
            .prop_map(|(slot, keys, ttl, wait)| Op::Multi { slot, keys, ttl, wait }),
        1 => (slot.clone(), proptest::collection::vec(key.clone(), 1..=3))
            .prop_map(|(slot, keys)| Op::ReleaseMany { slot, keys }),
        1 => slot.prop_map(|slot| Op::Reopen { slot }),
        1 => (key, any::<u8>(), any::<bool>()).prop_map(|(key, pick, stale)| Op::ForceRelease { key, pick, stale }),
        1 => (0..3usize, 0..6u64).prop_map(|(limit, value)| Op::SetLimit { limit, value }),
        3 => (0..10u64).prop_map(|ms| Op::Advance { ms }),
        1 => (10..60u64).prop_map(|ms| Op::Advance { ms }),
        1 => (1..30u64).prop_map(|ms| Op::Tick { ms }),
    ]
}

fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(None),
        2 => proptest::collection::vec(b'a'..b'd', 0..3).prop_map(Some),
    ]
}

fn any_limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        4 => Just(Limits::default()),
        1 => (1..4usize, 2..6usize, 1..5u32).prop_map(
            |(max_waiters_per_key, max_keys, max_holds_per_session)| Limits {
                max_waiters_per_key,
                max_keys,
                max_holds_per_session,
            }
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// The harness: one engine, one model, the same commands
// ---------------------------------------------------------------------------------------

struct Harness {
    table: LockTable,
    model: Model,
    shards: usize,
    now: u64,
    sessions: [u64; SLOTS],
    next_request: u64,
    /// Every token seen granted, with its key.
    tokens: BTreeMap<u64, Vec<u8>>,
    /// The largest token seen granted per key, over the whole run.
    last_grant: BTreeMap<Vec<u8>, u64>,
    /// Request ids of multi-locks.
    multi_requests: BTreeSet<u64>,
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

impl Harness {
    fn new(shards: usize, limits: Limits) -> Self {
        let now = 1_000;
        let table = LockTable::new(shards, limits.clone(), now);
        let mut model = Model::new(shards, &limits);
        let mut sessions = [0; SLOTS];
        for s in &mut sessions {
            let id = table.open_session();
            *s = model.open_session();
            assert_eq!(id, SessionId(*s));
        }
        Harness {
            table,
            model,
            shards,
            now,
            sessions,
            next_request: 1,
            tokens: BTreeMap::new(),
            last_grant: BTreeMap::new(),
            multi_requests: BTreeSet::new(),
        }
    }

    /// A newly issued token of `key`: larger than every earlier grant of the key, issued
    /// once, and from the key's shard.
    fn new_token(&mut self, key: &[u8], token: u64) -> Result<(), TestCaseError> {
        let shard = shard_of(key, self.shards) as u64;
        prop_assert_eq!(
            (token - 1) % self.shards as u64,
            shard,
            "token {} of {:?}",
            token,
            key
        );
        if let Some(other) = self.tokens.insert(token, key.to_vec()) {
            return Err(fail(format!(
                "token {token} issued twice ({other:?}, {key:?})"
            )));
        }
        let last = self.last_grant.entry(key.to_vec()).or_insert(0);
        prop_assert!(
            token > *last,
            "token {} of {:?} not above {}",
            token,
            key,
            *last
        );
        *last = token;
        Ok(())
    }

    fn note_grant_events(&mut self, events: &[Event]) -> Result<(), TestCaseError> {
        for e in events {
            if let Event::Granted { key, token, .. } = e {
                self.new_token(key.as_bytes(), token.0)?;
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Acquire {
                slot,
                key,
                mode,
                reentrant,
                ttl,
                wait,
                priority,
                delay,
                ref value,
            } => {
                let k = KEYS[key];
                let s = self.sessions[slot];
                let req = AcquireRequest {
                    id: RequestId(self.next_request),
                    mode: mode.mode(key),
                    reentrant,
                    ttl_ms: ttl,
                    wait_ms: wait,
                    policy: QueuePolicy {
                        priority,
                        aging_ms: if priority > 0 { AGING as u32 } else { 0 },
                        lock_delay_ms: delay,
                    },
                };
                self.next_request += 1;
                let held_before = self
                    .model
                    .keys
                    .get(k)
                    .and_then(|m| m.holders.iter().find(|h| h.session == s))
                    .map(|h| h.token);
                let got = self.table.acquire_with_value(
                    SessionId(s),
                    k,
                    &req,
                    value.as_deref(),
                    self.now,
                );
                let want = self
                    .model
                    .acquire_with_value(s, k, &req, value.as_deref(), self.now);
                match (&got, &want) {
                    (AcquireOutcome::Granted(t), MAcq::Granted(w)) => {
                        prop_assert_eq!(t.0, *w, "token of {:?}", req);
                        if held_before == Some(*w) {
                            // Reentrant: the hold's own token again.
                        } else {
                            self.new_token(k, *w)?;
                        }
                    }
                    (AcquireOutcome::Queued, MAcq::Queued)
                    | (AcquireOutcome::WouldBlock, MAcq::WouldBlock) => {}
                    (AcquireOutcome::WrongType { current }, MAcq::WrongType(w)) => {
                        prop_assert_eq!(current, w);
                    }
                    (AcquireOutcome::Limit(l), MAcq::Limit(w)) => prop_assert_eq!(l, w),
                    (AcquireOutcome::Deadlock(c), MAcq::SelfDeadlock) => {
                        prop_assert_eq!(&c.sessions, &vec![SessionId(s)]);
                        prop_assert_eq!(&c.keys, &vec![Key::new(k)]);
                    }
                    (AcquireOutcome::Deadlock(c), MAcq::Deadlock) => {
                        let waiting = self
                            .model
                            .keys
                            .values()
                            .any(|k| k.queue.iter().any(|w| w.session == s));
                        let p = if waiting { 0 } else { u64::from(priority) };
                        self.model
                            .check_cycle(s, k, req.mode, p, false, self.now, c)
                            .map_err(fail)?;
                    }
                    _ => {
                        return Err(fail(format!(
                            "ACQUIRE {req:?} of {k:?} by {s} at {}: engine {got:?}, model {want:?}",
                            self.now
                        )))
                    }
                }
            }
            Op::Convert {
                slot,
                key,
                shared,
                wait,
            } => {
                let (s, k) = (self.sessions[slot], KEYS[key]);
                let to = if shared {
                    Mode::Shared
                } else {
                    Mode::Exclusive
                };
                let request = self.next_request;
                self.next_request += 1;
                let held_before = self
                    .model
                    .keys
                    .get(k)
                    .and_then(|m| m.holders.iter().find(|h| h.session == s))
                    .map(|h| h.token);
                let (mut got_ev, mut want_ev) = (Vec::new(), Vec::new());
                let got = self.table.convert(
                    SessionId(s),
                    k,
                    to,
                    RequestId(request),
                    wait,
                    self.now,
                    &mut got_ev,
                );
                let want = self
                    .model
                    .convert(s, k, to, request, wait, self.now, &mut want_ev);
                // What a downgrade made ready is granted as the table does, at the end.
                self.model.settle(self.now, &mut want_ev);
                match (&got, &want) {
                    (Err(NotHeld), Err(NotHeld)) => {}
                    (Ok(AcquireOutcome::Granted(t)), Ok(MAcq::Granted(w))) => {
                        prop_assert_eq!(t.0, *w, "token of CONVERT {:?} of {:?}", to, k);
                        if held_before != Some(*w) {
                            self.new_token(k, *w)?;
                        }
                    }
                    (Ok(AcquireOutcome::Queued), Ok(MAcq::Queued))
                    | (Ok(AcquireOutcome::WouldBlock), Ok(MAcq::WouldBlock)) => {}
                    (Ok(AcquireOutcome::WrongType { current }), Ok(MAcq::WrongType(w))) => {
                        prop_assert_eq!(current, w);
                    }
                    (Ok(AcquireOutcome::Deadlock(c)), Ok(MAcq::SelfDeadlock)) => {
                        prop_assert_eq!(&c.sessions, &vec![SessionId(s)]);
                    }
                    (Ok(AcquireOutcome::Deadlock(c)), Ok(MAcq::Deadlock)) => {
                        self.model
                            .check_cycle(s, k, Mode::Exclusive, 0, true, self.now, c)
                            .map_err(fail)?;
                    }
                    _ => {
                        return Err(fail(format!(
                            "CONVERT {to:?} of {k:?} by {s} at {}: engine {got:?}, model {want:?}",
                            self.now
                        )))
                    }
                }
                prop_assert_eq!(&got_ev, &want_ev, "events of CONVERT {:?} by {}", k, s);
                self.note_grant_events(&got_ev)?;
            }
            Op::SetValue {
                slot,
                key,
                ref value,
            } => {
                let (s, k) = (self.sessions[slot], KEYS[key]);
                let got = self.table.set_value(SessionId(s), k, value);
                let want = self.model.set_value(s, k, value);
                prop_assert_eq!(got, want, "SETVALUE {:?} by {}", k, s);
            }
            Op::Release { slot, key } => {
                let (s, k) = (self.sessions[slot], KEYS[key]);
                let (mut got_ev, mut want_ev) = (Vec::new(), Vec::new());
                let got = self.table.release(SessionId(s), k, self.now, &mut got_ev);
                let want = self.model.release(s, k, self.now, &mut want_ev);
                prop_assert_eq!(got, want, "RELEASE {:?} by {}", k, s);
                prop_assert_eq!(&got_ev, &want_ev, "events of RELEASE {:?} by {}", k, s);
                self.note_grant_events(&got_ev)?;
            }
            Op::Renew { slot, key, ttl } => {
                let (s, k) = (self.sessions[slot], KEYS[key]);
                let got = self.table.renew(SessionId(s), k, ttl, self.now);
                let want = self.model.renew(s, k, ttl, self.now);
                prop_assert_eq!(got, want, "RENEW {:?} by {} TTL {:?}", k, s, ttl);
            }
            Op::Cancel { slot, key } => {
                let (s, k) = (self.sessions[slot], KEYS[key]);
                let (mut got_ev, mut want_ev) = (Vec::new(), Vec::new());
                let got = self.table.cancel(SessionId(s), k, self.now, &mut got_ev);
                let want = self.model.cancel(s, k, self.now, &mut want_ev);
                prop_assert_eq!(got, want, "CANCEL {:?} by {}", k, s);
                prop_assert_eq!(&got_ev, &want_ev, "events of CANCEL {:?} by {}", k, s);
                self.note_grant_events(&got_ev)?;
            }
            Op::Multi {
                slot,
                ref keys,
                ttl,
                wait,
            } => {
                let s = self.sessions[slot];
                let items: Vec<(&[u8], Mode)> =
                    keys.iter().map(|&(k, m)| (KEYS[k], m.mode(k))).collect();
                let req = MultiRequest {
                    id: RequestId(self.next_request),
                    ttl_ms: ttl,
                    wait_ms: wait,
                    lock_delay_ms: 0,
                };
                self.multi_requests.insert(req.id.0);
                self.next_request += 1;
                let got = self
                    .table
                    .acquire_multi(SessionId(s), &items, &req, self.now);
                let want = self.model.acquire_multi(s, &items, &req, self.now);
                match (&got, &want) {
                    (MultiOutcome::Granted(t), MMulti::Granted(w)) => {
                        let t: Vec<u64> = t.iter().map(|t| t.0).collect();
                        prop_assert_eq!(&t, w, "tokens of MACQUIRE {:?}", items);
                        for ((k, _), token) in items.iter().zip(&t) {
                            self.new_token(k, *token)?;
                        }
                    }
                    (MultiOutcome::Queued, MMulti::Queued)
                    | (MultiOutcome::WouldBlock, MMulti::WouldBlock)
                    | (MultiOutcome::Deadlock(_), MMulti::Deadlock) => {}
                    (MultiOutcome::Deadlock(c), MMulti::SelfDeadlock) => {
                        prop_assert_eq!(&c.sessions, &vec![SessionId(s)]);
                    }
                    (MultiOutcome::WrongType { index, current }, MMulti::WrongType(i, k)) => {
                        prop_assert_eq!((index, current), (i, k));
                    }
                    (MultiOutcome::Limit(l), MMulti::Limit(w)) => prop_assert_eq!(l, w),
                    _ => {
                        return Err(fail(format!(
                            "MACQUIRE {items:?} by {s} at {}: engine {got:?}, model {want:?}",
                            self.now
                        )))
                    }
                }
            }
            Op::ReleaseMany { slot, ref keys } => {
                let s = self.sessions[slot];
                let ks: Vec<&[u8]> = keys.iter().map(|&k| KEYS[k]).collect();
                let (mut got_ev, mut want_ev) = (Vec::new(), Vec::new());
                let got = self
                    .table
                    .release_many(SessionId(s), &ks, self.now, &mut got_ev);
                let want = ks
                    .iter()
                    .filter(|k| self.model.release(s, k, self.now, &mut want_ev).is_ok())
                    .count();
                prop_assert_eq!(got, want, "MRELEASE {:?} by {}", ks, s);
                prop_assert_eq!(&got_ev, &want_ev, "events of MRELEASE {:?} by {}", ks, s);
                self.note_grant_events(&got_ev)?;
            }
            Op::Reopen { slot } => {
                let s = self.sessions[slot];
                let (mut got_ev, mut want_ev) = (Vec::new(), Vec::new());
                self.table
                    .close_session(SessionId(s), self.now, &mut got_ev);
                self.model.close_session(s, self.now, &mut want_ev);
                self.compare_close(s, &got_ev, &want_ev)?;
                self.note_grant_events(&got_ev)?;
                let id = self.table.open_session();
                self.sessions[slot] = self.model.open_session();
                prop_assert_eq!(id, SessionId(self.sessions[slot]));
            }
            Op::Advance { ms } => {
                self.now += ms;
                let (mut got_ev, mut want_ev) = (Vec::new(), Vec::new());
                self.table.advance(self.now, &mut got_ev);
                self.model.advance(self.now, &mut want_ev);
                prop_assert_eq!(&got_ev, &want_ev, "events of ADVANCE to {}", self.now);
                self.note_grant_events(&got_ev)?;
            }
            Op::ForceRelease { key, pick, stale } => {
                let k = KEYS[key];
                let mut holds: Vec<(u64, u64)> = self.model.keys.get(k).map_or(Vec::new(), |m| {
                    m.holders
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| pick >> (i % 8) & 1 == 1)
                        .map(|(_, h)| (h.session, h.token))
                        .collect()
                });
                if stale {
                    // A hold that ended between the command and its apply: skipped.
                    holds.push((self.sessions[0], 1 << 50));
                }
                let listed: Vec<(SessionId, FencingToken)> = holds
                    .iter()
                    .map(|&(s, t)| (SessionId(s), FencingToken(t)))
                    .collect();
                let (mut got_ev, mut want_ev) = (Vec::new(), Vec::new());
                let got = self.table.force_release(k, &listed, self.now, &mut got_ev);
                let want = self.model.force_release(k, &holds, self.now, &mut want_ev);
                let got: Vec<(u64, u64)> = got.iter().map(|(s, t)| (s.0, t.0)).collect();
                prop_assert_eq!(got, want, "FORCE-RELEASE {:?} of {:?}", holds, k);
                prop_assert_eq!(&got_ev, &want_ev, "events of FORCE-RELEASE {:?}", k);
                self.note_grant_events(&got_ev)?;
            }
            Op::SetLimit { limit, value } => {
                self.table.set_limit(LimitKind::ALL[limit], value);
                self.model.set_limit(LimitKind::ALL[limit], value);
            }
            Op::Tick { ms } => self.now += ms,
        }
        self.check_state()
    }

    /// The events of one `close_session`: per key in the same order, as a whole the same
    /// multiset, shard by shard, with each shard's tokens the ones the model issued (in an
    /// order of keys the engine may choose, which the model then adopts).
    fn compare_close(
        &mut self,
        s: u64,
        got: &[Event],
        want: &[Event],
    ) -> Result<(), TestCaseError> {
        let key_of = |e: &Event| match e {
            Event::Granted { key, .. }
            | Event::TimedOut { key, .. }
            | Event::Expired { key, .. }
            | Event::DelayEnded { key } => key.as_bytes().to_vec(),
        };
        // Multi-lock grants (and what their holds let in after them) come after the
        // shard-by-shard walk, as the table settles them.
        let multi = |e: &Event| matches!(e, Event::Granted { request, .. } if self.multi_requests.contains(&request.0));
        let walk = got.iter().position(multi).unwrap_or(got.len());
        let shards: Vec<usize> = got[..walk]
            .iter()
            .map(|e| shard_of(&key_of(e), self.shards))
            .collect();
        prop_assert!(
            shards.windows(2).all(|w| w[0] <= w[1]),
            "close of {}: events not shard by shard: {:?}",
            s,
            got
        );
        prop_assert_eq!(
            got.len(),
            want.len(),
            "close of {}: engine {:?}, model {:?}",
            s,
            got,
            want
        );
        let keys: BTreeSet<Vec<u8>> = got.iter().chain(want).map(key_of).collect();
        let mut map: BTreeMap<Vec<u8>, BTreeMap<u64, u64>> = BTreeMap::new();
        let mut issued: BTreeMap<usize, (BTreeSet<u64>, BTreeSet<u64>)> = BTreeMap::new();
        for key in keys {
            let g: Vec<&Event> = got.iter().filter(|e| key_of(e) == key).collect();
            let w: Vec<&Event> = want.iter().filter(|e| key_of(e) == key).collect();
            prop_assert_eq!(
                g.len(),
                w.len(),
                "close of {}: on {:?} engine {:?}, model {:?}",
                s,
                key,
                got,
                want
            );
            for (g, w) in g.iter().zip(&w) {
                match (g, w) {
                    (
                        Event::Granted {
                            session,
                            request,
                            key: k,
                            token,
                        },
                        Event::Granted {
                            session: ws,
                            request: wr,
                            key: wk,
                            token: wt,
                        },
                    ) if (session, request, k) == (ws, wr, wk) => {
                        map.entry(key.clone()).or_default().insert(wt.0, token.0);
                        let entry = issued.entry(shard_of(&key, self.shards)).or_default();
                        entry.0.insert(token.0);
                        entry.1.insert(wt.0);
                    }
                    _ => {
                        prop_assert_eq!(g, w, "close of {}: engine {:?}, model {:?}", s, got, want)
                    }
                }
            }
        }
        for (shard, (g, w)) in &issued {
            prop_assert_eq!(g, w, "close of {}: tokens issued by shard {}", s, shard);
        }
        self.model.adopt_tokens(&map);
        Ok(())
    }

    fn check_state(&mut self) -> Result<(), TestCaseError> {
        let now = self.now;
        // Every key, as INSPECT shows it: kind, last token, holders in grant order with
        // count and lease left, waiters in FIFO order.
        for &k in &KEYS {
            let got = self.table.inspect(k, now);
            let want = self.model.inspect(k, now);
            prop_assert_eq!(&got, &want, "INSPECT {:?} at {}", k, now);
            // Values: one per holder, as set at the grant or later, gone with the hold.
            let got_values = self
                .table
                .inspect_values(k, now)
                .map(|(_, v)| v.into_iter().map(|v| v.map(|v| v.to_vec())).collect());
            prop_assert_eq!(&got_values, &self.model.values(k), "values of {:?}", k);
            if let Some(info) = &got {
                prop_assert!(info.holders.iter().all(|h| h.token.0 <= info.fencing.0));
                prop_assert!(info.holders.windows(2).all(|w| w[0].token < w[1].token));
            }
        }
        // The queued multi-locks are the same, and each is queued on every one of its keys
        // (never a partial hold: members leave their queues all together).
        let mut got: Vec<(u64, u64, Vec<Vec<u8>>)> = self
            .table
            .export()
            .multi
            .into_iter()
            .map(|m| {
                let keys = m.keys.iter().map(|k| k.as_bytes().to_vec()).collect();
                (m.session.0, m.request.0, keys)
            })
            .collect();
        got.sort();
        let want: Vec<(u64, u64, Vec<Vec<u8>>)> = self
            .model
            .groups
            .iter()
            .map(|(&(s, r), keys)| (s, r, keys.clone()))
            .collect();
        prop_assert_eq!(&got, &want, "queued multi-locks");
        for (s, r, keys) in &want {
            for key in keys {
                let queued = self.model.keys.get(key).is_some_and(|k| {
                    k.queue
                        .iter()
                        .any(|w| w.session == *s && w.request == *r && w.multi)
                });
                prop_assert!(queued, "multi-lock {} of {} not queued on {:?}", r, s, key);
            }
        }
        // The model itself never leaves a grantable head in a queue.
        for (key, k) in &self.model.keys {
            let multi_head = k.ordered(now).first().is_some_and(|w| w.multi);
            prop_assert!(
                multi_head || !Model::head_grantable(k, now),
                "model left {:?} grantable",
                key
            );
        }
        // The holds, directly: compatible holders, permits within the limit, one hold per
        // session and key, and the same holds as the model.
        let mut holds: BTreeMap<Vec<u8>, Vec<Hold>> = BTreeMap::new();
        self.table
            .for_each_hold(|key, kind, s, mode, token, count| {
                holds
                    .entry(key.as_bytes().to_vec())
                    .or_default()
                    .push((kind, s, mode, token, count));
            });
        for (key, hs) in &holds {
            check_holds(key, hs).map_err(fail)?;
            let mut got: Vec<(u64, u64, u32)> = hs.iter().map(|h| (h.1 .0, h.3 .0, h.4)).collect();
            got.sort();
            let mut want: Vec<(u64, u64, u32)> = self.model.keys.get(key).map_or(Vec::new(), |k| {
                k.holders
                    .iter()
                    .map(|h| (h.session, h.token, h.count))
                    .collect()
            });
            want.sort();
            prop_assert_eq!(got, want, "holds of {:?}", key);
        }
        let model_held = self
            .model
            .keys
            .values()
            .filter(|k| !k.holders.is_empty())
            .count();
        prop_assert_eq!(holds.len(), model_held, "keys with holds");
        // Keys and gauges.
        let mut keys: Vec<Vec<u8>> = self
            .table
            .keys(|_| true, usize::MAX)
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        keys.sort();
        let want: Vec<Vec<u8>> = self.model.keys.keys().cloned().collect();
        prop_assert_eq!(&keys, &want, "LOCKS");
        self.check_wait_edges()?;
        let stats = self.table.stats();
        let holders: usize = self.model.keys.values().map(|k| k.holders.len()).sum();
        let waiters: usize = self.model.keys.values().map(|k| k.queue.len()).sum();
        prop_assert_eq!(stats.holds, holders as u64, "holds gauge");
        prop_assert_eq!(stats.waiters, waiters as u64, "waiters gauge");
        prop_assert_eq!(stats.keys, want.len() as u64, "keys gauge");
        // Each session's holds and queued requests, for the per-session limit (sessions
        // closed earlier have none).
        for s in 1..self.model.next_session {
            let got = self.table.session_holds(SessionId(s)) as usize;
            prop_assert_eq!(got, self.model.footprint(s), "holds and requests of {}", s);
        }
        // The next timer: a lower bound of the earliest deadline, and none when idle.
        match (self.table.next_deadline(), self.model.earliest_deadline()) {
            (None, None) => {}
            (Some(t), Some(d)) => prop_assert!(t <= d, "next_deadline {} after {}", t, d),
            (got, want) => return Err(fail(format!("next_deadline {got:?}, earliest {want:?}"))),
        }
        Ok(())
    }
}

impl Harness {
    /// EXPLAIN and WAITGRAPH against the model's wait-for edges: the whole graph edge for
    /// edge, each session's direct waits, and everything an explanation reaches.
    fn check_wait_edges(&self) -> Result<(), TestCaseError> {
        use turnstile::engine::ExplainTarget;
        let now = self.now;
        let triple = |e: &turnstile::engine::WaitEdge| {
            (
                e.waiter.session.0,
                e.key.as_bytes().to_vec(),
                e.blocker.session().0,
            )
        };
        let mut want = self.model.edges(self.now);
        want.sort();
        let dump = self.table.wait_graph(now, usize::MAX, |_| true);
        prop_assert!(!dump.truncated);
        let mut got: Vec<_> = dump.edges.iter().map(triple).collect();
        got.sort();
        prop_assert_eq!(&got, &want, "WAITGRAPH");
        // Sessions that wait (the others wait for nothing, as WAITGRAPH showed).
        let waiting: BTreeSet<u64> = want.iter().map(|e| e.0).collect();
        for s in waiting {
            let (direct, _) = self.table.waits_of(SessionId(s), now, usize::MAX);
            let mut got: Vec<_> = direct.iter().map(triple).collect();
            got.sort();
            let mine: Vec<_> = want.iter().filter(|e| e.0 == s).cloned().collect();
            prop_assert_eq!(&got, &mine, "direct waits of {}", s);
            let ex = self
                .table
                .explain(
                    &ExplainTarget::Session(SessionId(s)),
                    now,
                    usize::MAX,
                    |_| true,
                )
                .expect("a session is always explained");
            prop_assert!(ex.cycle.is_empty() && !ex.truncated, "{:?}", ex);
            let reached: BTreeSet<u64> = ex
                .steps
                .iter()
                .map(|st| st.edge.blocker.session().0)
                .collect();
            // Reachable from s along the model's edges (one breadth-first search).
            let mut expected: BTreeSet<u64> = BTreeSet::new();
            let mut todo: VecDeque<u64> = VecDeque::from([s]);
            while let Some(from) = todo.pop_front() {
                for e in want.iter().filter(|e| e.0 == from) {
                    if expected.insert(e.2) {
                        todo.push_back(e.2);
                    }
                }
            }
            prop_assert_eq!(reached, expected, "sessions session {} waits for", s);
        }
        Ok(())
    }
}

/// One hold as `for_each_hold` reports it: kind, session, mode, token, reentrant count.
type Hold = (Kind, SessionId, Mode, FencingToken, u32);

/// The holds of one key are compatible: one EXCLUSIVE alone, or only SHARED, or semaphore
/// holds of the key's limit within it; one hold per session; counts of at least 1.
fn check_holds(key: &[u8], hs: &[Hold]) -> Result<(), String> {
    let sessions: BTreeSet<SessionId> = hs.iter().map(|h| h.1).collect();
    if sessions.len() != hs.len() {
        return Err(format!("{key:?}: a session holds twice: {hs:?}"));
    }
    if hs.iter().any(|h| h.4 == 0) {
        return Err(format!("{key:?}: a hold with count 0: {hs:?}"));
    }
    let kind = hs[0].0;
    if hs.iter().any(|h| h.0 != kind || kind_of(h.2) != kind) {
        return Err(format!("{key:?}: holds of mixed kinds: {hs:?}"));
    }
    match kind {
        Kind::Lock => {
            let exclusive = hs.iter().filter(|h| h.2 == Mode::Exclusive).count();
            if exclusive > 0 && hs.len() > 1 {
                return Err(format!("{key:?}: an exclusive hold next to others: {hs:?}"));
            }
        }
        Kind::Semaphore { limit } => {
            let used: u32 = hs.iter().map(|h| permits_of(h.2)).sum();
            if used > limit || hs.iter().any(|h| permits_of(h.2) == 0) {
                return Err(format!("{key:?}: {used} permits of {limit} held: {hs:?}"));
            }
        }
    }
    Ok(())
}

fn run(shards: usize, limits: Limits, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new(shards, limits);
    for (i, op) in ops.iter().enumerate() {
        h.step(op)
            .map_err(|e| fail(format!("step {i} {op:?}: {e}")))?;
    }
    // Everything ends: closing every session and running out the clock leaves nothing.
    for slot in 0..SLOTS {
        h.step(&Op::Reopen { slot })?;
    }
    h.step(&Op::Advance { ms: 1_000 })?;
    prop_assert!(h.table.keys(|_| true, usize::MAX).is_empty());
    prop_assert_eq!(h.table.next_deadline(), None);
    Ok(())
}

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn one_shard_matches_the_model(
        limits in any_limits(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(1, limits, &ops)?;
    }

    #[test]
    fn four_shards_match_the_model(
        limits in any_limits(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(4, limits, &ops)?;
    }
}

// ---------------------------------------------------------------------------------------
// The model's own sanity (the model is only useful if it is right)
// ---------------------------------------------------------------------------------------

#[test]
fn keys_of_the_runs_spread_over_four_shards() {
    let shards: BTreeSet<usize> = KEYS.iter().map(|k| shard_of(k, 4)).collect();
    assert!(shards.len() >= 3, "keys land in shards {shards:?}");
}

#[test]
fn model_finds_the_issue_cycle() {
    // A holds SHARED on "a", B queued EXCLUSIVE on "a", A waits for C on "c"; C asking
    // SHARED on "a" queues behind B: C -> B -> A -> C.
    let mut m = Model::new(1, &Limits::default());
    let (a, b, c) = (m.open_session(), m.open_session(), m.open_session());
    let req = |mode| AcquireRequest {
        id: RequestId(0),
        mode,
        reentrant: false,
        ttl_ms: 100,
        wait_ms: None,
        policy: Default::default(),
    };
    assert!(matches!(
        m.acquire(a, b"a", &req(Mode::Shared), 0),
        MAcq::Granted(_)
    ));
    assert_eq!(m.acquire(b, b"a", &req(Mode::Exclusive), 0), MAcq::Queued);
    assert!(matches!(
        m.acquire(c, b"c", &req(Mode::Exclusive), 0),
        MAcq::Granted(_)
    ));
    assert_eq!(m.acquire(a, b"c", &req(Mode::Exclusive), 0), MAcq::Queued);
    assert_eq!(m.acquire(c, b"a", &req(Mode::Shared), 0), MAcq::Deadlock);
    let cycle = Cycle {
        sessions: vec![SessionId(c), SessionId(b), SessionId(a)],
        keys: vec![Key::from("a"), Key::from("a"), Key::from("c")],
    };
    assert_eq!(
        m.check_cycle(c, b"a", Mode::Shared, 0, false, 0, &cycle),
        Ok(())
    );
    let wrong = Cycle {
        sessions: vec![SessionId(c), SessionId(a)],
        keys: vec![Key::from("a"), Key::from("c")],
    };
    assert!(m
        .check_cycle(c, b"a", Mode::Shared, 0, false, 0, &wrong)
        .is_err());
}

/// A case proptest found: a priority request that would pass a queued SHARED request
/// closes a cycle through it, and the DEADLOCK names the edge from that waiter to the
/// requester, which exists only had the request queued. The checker accepts that closing
/// edge as `closes_cycle` does.
#[test]
fn a_cycle_through_a_passed_waiter_names_its_closing_edge() {
    let limits = Limits {
        max_waiters_per_key: 100000,
        max_keys: 10000000,
        max_holds_per_session: 1000000,
    };
    let ops = vec![
        Op::Acquire {
            slot: 0,
            key: 1,
            mode: ModeSel::Semaphore {
                limit: 3,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 7,
            value: None,
        },
        Op::Advance { ms: 0 },
        Op::Acquire {
            slot: 0,
            key: 0,
            mode: ModeSel::Usual {
                shared: false,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 0,
            value: None,
        },
        Op::Acquire {
            slot: 0,
            key: 0,
            mode: ModeSel::Usual {
                shared: false,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 0,
            value: None,
        },
        Op::Advance { ms: 1 },
        Op::Acquire {
            slot: 0,
            key: 5,
            mode: ModeSel::Usual {
                shared: false,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 0,
            value: None,
        },
        Op::Acquire {
            slot: 2,
            key: 3,
            mode: ModeSel::Usual {
                shared: false,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 0,
            value: None,
        },
        Op::Acquire {
            slot: 0,
            key: 1,
            mode: ModeSel::Semaphore {
                limit: 3,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 0,
            value: None,
        },
        Op::Acquire {
            slot: 1,
            key: 3,
            mode: ModeSel::Usual {
                shared: true,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 1,
            value: None,
        },
        Op::Acquire {
            slot: 2,
            key: 5,
            mode: ModeSel::Usual {
                shared: false,
                permits: 3,
            },
            reentrant: false,
            ttl: 1,
            wait: Some(1),
            priority: 0,
            delay: 0,
            value: None,
        },
        Op::Convert {
            slot: 2,
            key: 3,
            shared: true,
            wait: None,
        },
        Op::Reopen { slot: 1 },
        Op::Acquire {
            slot: 0,
            key: 3,
            mode: ModeSel::Shared,
            reentrant: false,
            ttl: 1,
            wait: None,
            priority: 0,
            delay: 0,
            value: None,
        },
        Op::Acquire {
            slot: 1,
            key: 3,
            mode: ModeSel::Usual {
                shared: false,
                permits: 1,
            },
            reentrant: false,
            ttl: 1,
            wait: Some(1),
            priority: 1,
            delay: 0,
            value: None,
        },
    ];
    run(1, limits, &ops).unwrap();
}
