//! The wait-for graph, kept as a mirror of every key that has waiters.
//!
//! Edges are not stored. A queued request of session `s` on key `k` waits for:
//! - every holder of `k` it conflicts with, and
//! - every request queued ahead of it on `k` that it conflicts with (with strict FIFO and
//!   no barging these edges are real: it cannot be granted before them).
//!
//! "Ahead" is the engine's grant order, not arrival: requests with a priority, and a
//! holder's pending upgrade, are placed by a rank (`QueuePolicy` in the engine; an
//! upgrade ranks ahead of everything). The rank of two queued requests never changes
//! their order while both wait (every waiter ages at the same rate), so the queue here is
//! kept sorted by `(rank, arrival)` exactly as the engine's, and a request passed by a
//! later one of higher priority gets the edge to it when that one is inserted ahead of
//! it: the edges stay exactly the engine's "granted before", never fewer.
//!
//! A session never waits for itself: a pending upgrade waits for the *other* holders
//! (its own shared hold is in the key's holders too).
//!
//! Conflict: on a lock-kind key two modes conflict unless both are SHARED; on a semaphore
//! every pair conflicts (a conservative rule: a semaphore request waits for all holders and
//! all requests ahead, so a wait that any one release could end may be refused as a
//! deadlock, but no real deadlock is ever missed).
//!
//! Storing the queues instead of edges keeps every update O(1) or O(holders) and makes a
//! detection cost proportional to what is reachable from the new request: each key's queue
//! is scanned at most once per conflict class per detection, however many waiters reach it.
//!
//! The request that would close a cycle never enters the graph: it is refused.

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::engine::{Cycle, Key, Mode, SessionId};

/// One queued request, as the graph sees it.
#[derive(Clone, Copy, Debug)]
struct Queued {
    place: Place,
    session: SessionId,
    mode: Mode,
}

/// A queued request's place in its key's queue: by rank, then arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    rank: i64,
    seq: u64,
}

/// A key that has waiters: its holders and its queue, in order, plus the marks of the
/// detection in progress (valid when `epoch` equals the graph's).
#[derive(Debug)]
struct KeyMirror {
    key: Key,
    semaphore: bool,
    holders: Vec<(SessionId, Mode)>,
    /// Sorted by `place`, so a waiter's position is a binary search.
    queue: VecDeque<Queued>,
    next_seq: u64,
    epoch: u64,
    /// Queue prefix already scanned in this detection, per conflict class.
    scanned: [usize; 2],
    /// Whether the holders were scanned in this detection, per conflict class.
    holders_seen: [bool; 2],
}

impl KeyMirror {
    fn position(&self, place: Place) -> Option<usize> {
        self.queue.binary_search_by_key(&place, |q| q.place).ok()
    }

    /// Where a request of `rank` arriving now goes: behind every request of a rank at
    /// most its own.
    fn insertion(&self, rank: i64) -> usize {
        self.queue.partition_point(|q| q.place.rank <= rank)
    }
}

/// Where a session appears in the graph.
#[derive(Debug, Default)]
struct SessionNode {
    /// The mirrored keys the session has queued requests on (a session queues once per
    /// key), with the request's place in that key's queue.
    waits: Vec<(u32, Place)>,
    /// How many mirrored keys the session holds; with `waits` empty and this zero nobody
    /// can be waiting for the session, so a detection for it can stop at once.
    holds: u32,
    /// The detection that reached this session, and from whom through which key.
    epoch: u64,
    parent: (SessionId, u32),
}

/// One detection's walk over sessions.
struct Walk<'a> {
    requester: SessionId,
    epoch: u64,
    sessions: &'a mut HashMap<SessionId, SessionNode>,
    stack: &'a mut Vec<SessionId>,
    /// Who was found waiting for the requester, and through which mirror.
    found: Option<(SessionId, u32)>,
    /// The waiters the new request would pass (queued behind it, conflicting): each
    /// would wait for the requester through mirror `passed_via`, so reaching one closes
    /// a cycle too.
    passed: smallvec::SmallVec<[SessionId; 4]>,
    passed_via: u32,
}

impl Walk<'_> {
    /// `from` waits (through mirror `via`) for `s`.
    fn reach(&mut self, s: SessionId, from: SessionId, via: u32) {
        if s == self.requester {
            self.found.get_or_insert((from, via));
            return;
        }
        if self.found.is_none() && self.passed.contains(&s) {
            if let Some(node) = self.sessions.get_mut(&s) {
                node.epoch = self.epoch;
                node.parent = (from, via);
            }
            self.found = Some((s, self.passed_via));
            return;
        }
        // A session without a node waits for nothing: it cannot lead back.
        if let Some(node) = self.sessions.get_mut(&s) {
            if node.epoch != self.epoch {
                node.epoch = self.epoch;
                node.parent = (from, via);
                self.stack.push(s);
            }
        }
    }
}

/// Which requests ahead of (or holders of) a key a waiter conflicts with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Conflicts with every other mode (EXCLUSIVE, or any semaphore request).
    All = 0,
    /// Conflicts only with EXCLUSIVE (a SHARED request on a lock).
    ExclusiveOnly = 1,
}

fn class(semaphore: bool, mode: Mode) -> Class {
    if !semaphore && mode == Mode::Shared {
        Class::ExclusiveOnly
    } else {
        Class::All
    }
}

fn conflicts(class: Class, other: Mode) -> bool {
    match class {
        Class::All => true,
        Class::ExclusiveOnly => other != Mode::Shared,
    }
}

/// The request's own key in a parent link, before that key is mirrored.
const REQUESTED: u32 = u32::MAX;

/// The wait-for graph of the whole lock table. See the module docs for its rules.
#[derive(Debug, Default)]
pub struct WaitForGraph {
    index: HashMap<Key, u32>,
    mirrors: Vec<Option<KeyMirror>>,
    free: Vec<u32>,
    sessions: HashMap<SessionId, SessionNode>,
    /// Numbers detections, so marks left by an earlier one are recognised as stale and no
    /// per-detection map is allocated or cleared.
    epoch: u64,
    stack: Vec<SessionId>,
}

impl WaitForGraph {
    /// Whether `session` has a queued request on any key.
    pub fn is_waiting(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|n| !n.waits.is_empty())
    }

    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys with waiters.
    pub fn keys(&self) -> usize {
        self.index.len()
    }

    /// The queue length of every key with waiters (read-only, for metrics).
    pub fn queue_lengths(&self) -> Vec<usize> {
        self.mirrors
            .iter()
            .flatten()
            .map(|m| m.queue.len())
            .collect()
    }

    /// Whether `key` is mirrored (has waiters).
    pub fn is_tracked(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    fn mirror(&self, id: u32) -> &KeyMirror {
        self.mirrors[id as usize]
            .as_ref()
            .expect("mirror ids in the index and in session waits are live")
    }

    /// The cycle that `session` queueing on `key` in `mode` (behind everything already
    /// queued) would close, or None. `holders` are the key's holders now; they are only read
    /// when the key has no waiters yet. Nothing observable changes.
    pub fn detect(
        &mut self,
        session: SessionId,
        key: &Key,
        semaphore: bool,
        mode: Mode,
        holders: &[(SessionId, Mode)],
    ) -> Option<Cycle> {
        self.detect_ranked(session, key, semaphore, mode, holders, i64::MAX)
    }

    /// [`Self::detect`] for a request that would queue at its `rank` (behind every
    /// queued request of a rank at most `rank`, ahead of the others).
    pub fn detect_ranked(
        &mut self,
        session: SessionId,
        key: &Key,
        semaphore: bool,
        mode: Mode,
        holders: &[(SessionId, Mode)],
        rank: i64,
    ) -> Option<Cycle> {
        // Waiters a request inserted ahead of them would pass: they will wait for it.
        let mut passed = smallvec::SmallVec::new();
        let mut passed_via = REQUESTED;
        if let Some(&id) = self.index.get(key.as_bytes()) {
            let m = self.mirrors[id as usize]
                .as_ref()
                .expect("indexed mirror is live");
            passed_via = id;
            passed.extend(
                m.queue
                    .range(m.insertion(rank)..)
                    .filter(|q| q.session != session && conflicts(class(m.semaphore, q.mode), mode))
                    .map(|q| q.session),
            );
        }
        if passed.is_empty() {
            let node = self.sessions.get(&session)?;
            if node.waits.is_empty() && node.holds == 0 {
                return None;
            }
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let Self {
            index,
            mirrors,
            sessions,
            stack,
            ..
        } = self;
        stack.clear();
        let mut walk = Walk {
            requester: session,
            epoch,
            sessions,
            stack,
            found: None,
            passed,
            passed_via,
        };
        let cls = class(semaphore, mode);
        match index.get(key.as_bytes()) {
            Some(&id) => {
                let m = mirrors[id as usize]
                    .as_mut()
                    .expect("indexed mirror is live");
                let pos = m.insertion(rank);
                expand(m, id, session, cls, pos, &mut walk);
            }
            None => {
                for &(holder, held) in holders {
                    if holder != session && conflicts(cls, held) {
                        walk.reach(holder, session, REQUESTED);
                    }
                }
            }
        }
        while walk.found.is_none() {
            let Some(s) = walk.stack.pop() else {
                break;
            };
            let Some(node) = walk.sessions.get(&s) else {
                continue;
            };
            // Copy the (few) waits out: reaching needs the session map mutably.
            let waits: smallvec::SmallVec<[(u32, Place); 4]> = node.waits.iter().copied().collect();
            for (id, place) in waits {
                let m = mirrors[id as usize]
                    .as_mut()
                    .expect("a session waits only on mirrored keys");
                let pos = m
                    .position(place)
                    .expect("a waiting session is in the key's queue");
                let cls = class(m.semaphore, m.queue[pos].mode);
                expand(m, id, s, cls, pos, &mut walk);
            }
        }
        let (last, via) = walk.found?;
        Some(self.cycle(session, key, last, via))
    }

    /// The cycle closed by `last` waiting (through `via`) for the requester.
    fn cycle(&self, requester: SessionId, requested: &Key, last: SessionId, via: u32) -> Cycle {
        let key_of = |id: u32| {
            if id == REQUESTED {
                requested.clone()
            } else {
                self.mirror(id).key.clone()
            }
        };
        let mut sessions = vec![last];
        let mut keys = vec![key_of(via)];
        let mut at = last;
        while at != requester && sessions.len() <= self.sessions.len() + 1 {
            let (from, via) = self
                .sessions
                .get(&at)
                .expect("reached sessions have nodes")
                .parent;
            sessions.push(from);
            keys.push(key_of(via));
            at = from;
        }
        // Built backwards from the requester's last waiter; the requester comes last.
        sessions.pop();
        sessions.reverse();
        keys.reverse();
        sessions.insert(0, requester);
        Cycle { sessions, keys }
    }

    /// Adds a queued request at the tail of `key`'s queue, mirroring the key (with
    /// `holders`) if it had no waiters.
    pub fn enqueue(
        &mut self,
        key: &Key,
        semaphore: bool,
        holders: &[(SessionId, Mode)],
        session: SessionId,
        mode: Mode,
    ) {
        self.enqueue_ranked(key, semaphore, holders, session, mode, i64::MAX);
    }

    /// [`Self::enqueue`] at the request's `rank` (see [`Self::detect_ranked`]).
    pub fn enqueue_ranked(
        &mut self,
        key: &Key,
        semaphore: bool,
        holders: &[(SessionId, Mode)],
        session: SessionId,
        mode: Mode,
        rank: i64,
    ) {
        let id = match self.index.get(key.as_bytes()) {
            Some(&id) => id,
            None => {
                for &(holder, _) in holders {
                    self.sessions.entry(holder).or_default().holds += 1;
                }
                let mirror = KeyMirror {
                    key: key.clone(),
                    semaphore,
                    holders: holders.to_vec(),
                    queue: VecDeque::new(),
                    next_seq: 0,
                    epoch: 0,
                    scanned: [0, 0],
                    holders_seen: [false, false],
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.mirrors[id as usize] = Some(mirror);
                        id
                    }
                    None => {
                        self.mirrors.push(Some(mirror));
                        u32::try_from(self.mirrors.len() - 1)
                            .expect("fewer than 2^32 contended keys")
                    }
                };
                self.index.insert(key.clone(), id);
                id
            }
        };
        let m = self.mirrors[id as usize].as_mut().expect("live mirror");
        let place = Place {
            rank,
            seq: m.next_seq,
        };
        m.next_seq += 1;
        let at = m.insertion(rank);
        m.queue.insert(
            at,
            Queued {
                place,
                session,
                mode,
            },
        );
        self.sessions
            .entry(session)
            .or_default()
            .waits
            .push((id, place));
    }

    /// Removes `session`'s queued request on `key` (granted, timed out, cancelled or its
    /// session ended). When it was the key's last waiter the key stops being mirrored.
    pub fn dequeue(&mut self, key: &[u8], session: SessionId) {
        let Some(&id) = self.index.get(key) else {
            return;
        };
        let Some(node) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(i) = node.waits.iter().position(|&(k, _)| k == id) else {
            return;
        };
        let (_, place) = node.waits.swap_remove(i);
        Self::forget_if_idle(&mut self.sessions, session);
        let m = self.mirrors[id as usize].as_mut().expect("live mirror");
        if let Some(pos) = m.position(place) {
            m.queue.remove(pos);
        }
        if m.queue.is_empty() {
            let m = self.mirrors[id as usize].take().expect("live mirror");
            self.free.push(id);
            self.index.remove(key);
            for (holder, _) in m.holders {
                if let Some(node) = self.sessions.get_mut(&holder) {
                    node.holds -= 1;
                }
                Self::forget_if_idle(&mut self.sessions, holder);
            }
        }
    }

    /// A mirrored key gained a holder (a waiter was granted: call [`Self::dequeue`] first).
    pub fn add_holder(&mut self, key: &[u8], session: SessionId, mode: Mode) {
        if let Some(&id) = self.index.get(key) {
            let m = self.mirrors[id as usize].as_mut().expect("live mirror");
            m.holders.push((session, mode));
            self.sessions.entry(session).or_default().holds += 1;
        }
    }

    /// A holder of a mirrored key converted its hold to `mode` (a downgrade, or an
    /// upgrade granted: call [`Self::dequeue`] for its request first).
    pub fn set_holder_mode(&mut self, key: &[u8], session: SessionId, mode: Mode) {
        if let Some(&id) = self.index.get(key) {
            let m = self.mirrors[id as usize].as_mut().expect("live mirror");
            if let Some(h) = m.holders.iter_mut().find(|(s, _)| *s == session) {
                h.1 = mode;
            }
        }
    }

    /// A mirrored key lost a holder (release, expiry, session end).
    pub fn remove_holder(&mut self, key: &[u8], session: SessionId) {
        if let Some(&id) = self.index.get(key) {
            let m = self.mirrors[id as usize].as_mut().expect("live mirror");
            if let Some(i) = m.holders.iter().position(|&(s, _)| s == session) {
                m.holders.remove(i);
                if let Some(node) = self.sessions.get_mut(&session) {
                    node.holds -= 1;
                }
                Self::forget_if_idle(&mut self.sessions, session);
            }
        }
    }

    fn forget_if_idle(sessions: &mut HashMap<SessionId, SessionNode>, session: SessionId) {
        if let Some(node) = sessions.get(&session) {
            if node.waits.is_empty() && node.holds == 0 {
                sessions.remove(&session);
            }
        }
    }
}

/// Reaches everything a request of `from` in class `cls` at queue position `pos` of mirror
/// `m` waits for, scanning only what this detection has not scanned on `m` yet.
fn expand(m: &mut KeyMirror, id: u32, from: SessionId, cls: Class, pos: usize, walk: &mut Walk) {
    if m.epoch != walk.epoch {
        m.epoch = walk.epoch;
        m.scanned = [0, 0];
        m.holders_seen = [false, false];
    }
    let ci = cls as usize;
    if !m.holders_seen[ci] {
        // The requester's own expansion skips the requester as a holder (a pending
        // upgrade): not marked as scanned, so a later waiter on this key still reaches it.
        // Any other expander skipping itself is already reached.
        if from != walk.requester {
            m.holders_seen[ci] = true;
        }
        for &(holder, held) in &m.holders {
            if holder != from && conflicts(cls, held) {
                walk.reach(holder, from, id);
            }
        }
    }
    let start = m.scanned[ci];
    if pos > start {
        m.scanned[ci] = pos;
        for q in m.queue.range(start..pos) {
            if conflicts(cls, q.mode) {
                walk.reach(q.session, from, id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> SessionId {
        SessionId(n)
    }
    fn k(name: &str) -> Key {
        Key::from(name)
    }

    #[test]
    fn no_cycle_for_a_session_nobody_waits_for() {
        let mut g = WaitForGraph::new();
        g.enqueue(
            &k("a"),
            false,
            &[(s(1), Mode::Exclusive)],
            s(2),
            Mode::Exclusive,
        );
        // Session 3 is unknown to the graph: nothing can wait for it.
        assert!(g
            .detect(s(3), &k("a"), false, Mode::Exclusive, &[])
            .is_none());
    }

    #[test]
    fn two_session_cycle() {
        let mut g = WaitForGraph::new();
        // 1 holds a, 2 holds b; 2 waits for a.
        g.enqueue(
            &k("a"),
            false,
            &[(s(1), Mode::Exclusive)],
            s(2),
            Mode::Exclusive,
        );
        // 1 asks for b (held by 2): 1 -> 2 -> 1.
        let cycle = g
            .detect(
                s(1),
                &k("b"),
                false,
                Mode::Exclusive,
                &[(s(2), Mode::Exclusive)],
            )
            .expect("cycle");
        assert_eq!(cycle.sessions, vec![s(1), s(2)]);
        assert_eq!(cycle.keys, vec![k("b"), k("a")]);
    }

    #[test]
    fn shared_behind_queued_exclusive_is_a_real_edge() {
        // The example: A holds a shared; B queued exclusive on a; A waits for C on c;
        // C asks shared on a behind B: C -> B -> A -> C.
        let (a, b, c) = (s(1), s(2), s(3));
        let mut g = WaitForGraph::new();
        g.enqueue(&k("a"), false, &[(a, Mode::Shared)], b, Mode::Exclusive);
        g.enqueue(&k("c"), false, &[(c, Mode::Exclusive)], a, Mode::Exclusive);
        let cycle = g
            .detect(c, &k("a"), false, Mode::Shared, &[(a, Mode::Shared)])
            .expect("cycle");
        assert_eq!(cycle.sessions, vec![c, b, a]);
    }

    #[test]
    fn shared_behind_shared_waits_only_for_exclusive() {
        let (a, b, c) = (s(1), s(2), s(3));
        let mut g = WaitForGraph::new();
        // X holder a on k; b queued shared; a waits for c elsewhere.
        g.enqueue(&k("k"), false, &[(a, Mode::Exclusive)], b, Mode::Shared);
        g.enqueue(&k("z"), false, &[(c, Mode::Exclusive)], a, Mode::Exclusive);
        // c asks shared on k: waits for a (holder, X) -> a waits for c: cycle.
        assert!(g.detect(c, &k("k"), false, Mode::Shared, &[]).is_some());
        // b (shared, queued) does not block a later shared request by itself.
        let mut g = WaitForGraph::new();
        g.enqueue(&k("k"), false, &[(a, Mode::Exclusive)], b, Mode::Shared);
        g.enqueue(&k("z"), false, &[(c, Mode::Exclusive)], b, Mode::Exclusive);
        g.dequeue(b"k", b);
        assert!(!g.is_tracked(b"k"));
    }

    /// A brute-force wait-for relation over explicit edges: build every edge from the
    /// rules in the module docs, then search for a path from the new request's blockers
    /// back to the requester by plain reachability.
    mod brute_force {
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::super::*;

        #[derive(Clone, Debug)]
        struct KeyState {
            semaphore: bool,
            holders: Vec<(u64, Mode)>,
            queue: Vec<(u64, Mode)>,
        }

        fn conflicts(semaphore: bool, a: Mode, b: Mode) -> bool {
            semaphore || !(a == Mode::Shared && b == Mode::Shared)
        }

        fn blockers(k: &KeyState, pos: usize, mode: Mode) -> Vec<u64> {
            let mut out: Vec<u64> = k
                .holders
                .iter()
                .filter(|(_, m)| conflicts(k.semaphore, mode, *m))
                .map(|(s, _)| *s)
                .collect();
            out.extend(
                k.queue[..pos]
                    .iter()
                    .filter(|(_, m)| conflicts(k.semaphore, mode, *m))
                    .map(|(s, _)| *s),
            );
            out
        }

        fn has_cycle(keys: &BTreeMap<u8, KeyState>, requester: u64, key: u8, mode: Mode) -> bool {
            let mut edges: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
            for k in keys.values() {
                for (pos, &(s, m)) in k.queue.iter().enumerate() {
                    edges.entry(s).or_default().extend(blockers(k, pos, m));
                }
            }
            let k = &keys[&key];
            let mut todo: Vec<u64> = blockers(k, k.queue.len(), mode);
            let mut seen = BTreeSet::new();
            while let Some(s) = todo.pop() {
                if s == requester {
                    return true;
                }
                if seen.insert(s) {
                    todo.extend(edges.get(&s).into_iter().flatten().copied());
                }
            }
            false
        }

        fn mode() -> impl Strategy<Value = Mode> {
            prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            /// Random contended keys (holders and queues of up to 6 sessions, each session
            /// queued at most once per key and never holding a key it queues on), then a
            /// detection for a random request: the graph agrees with brute force, and a
            /// reported cycle is made of real edges.
            #[test]
            fn detect_agrees_with_brute_force(
                spec in proptest::collection::vec(
                    (any::<bool>(),
                     proptest::collection::vec((1u64..7, mode()), 1..3),
                     proptest::collection::vec((1u64..7, mode()), 0..4)),
                    1..5),
                requester in 1u64..7,
                target in 0u8..5,
                want in mode(),
            ) {
                let mut keys: BTreeMap<u8, KeyState> = BTreeMap::new();
                let mut g = WaitForGraph::new();
                for (i, (semaphore, holders, queue)) in spec.into_iter().enumerate() {
                    let mut hs: Vec<(u64, Mode)> = Vec::new();
                    for (s, m) in holders {
                        if !hs.iter().any(|(x, _)| *x == s) {
                            hs.push((s, m));
                        }
                    }
                    let mut qs: Vec<(u64, Mode)> = Vec::new();
                    for (s, m) in queue {
                        if !hs.iter().any(|(x, _)| *x == s) && !qs.iter().any(|(x, _)| *x == s) {
                            qs.push((s, m));
                        }
                    }
                    let key = Key::from(format!("k{i}").as_str());
                    let holders: Vec<(SessionId, Mode)> =
                        hs.iter().map(|&(s, m)| (SessionId(s), m)).collect();
                    for &(s, m) in &qs {
                        g.enqueue(&key, semaphore, &holders, SessionId(s), m);
                    }
                    keys.insert(i as u8, KeyState { semaphore, holders: hs, queue: qs });
                }
                let target = target % keys.len() as u8;
                let k = keys[&target].clone();
                // The engine never asks the graph about a session that holds or waits on the
                // requested key (that is a cycle of one, refused before).
                prop_assume!(!k.holders.iter().chain(&k.queue).any(|(s, _)| *s == requester));
                let key = Key::from(format!("k{target}").as_str());
                let holders: Vec<(SessionId, Mode)> =
                    k.holders.iter().map(|&(s, m)| (SessionId(s), m)).collect();
                let got = g.detect(SessionId(requester), &key, k.semaphore, want, &holders);
                let expected = has_cycle(&keys, requester, target, want);
                prop_assert_eq!(got.is_some(), expected, "graph said {:?}", got);
                if let Some(cycle) = got {
                    prop_assert_eq!(cycle.sessions[0], SessionId(requester));
                    prop_assert_eq!(cycle.sessions.len(), cycle.keys.len());
                    // Each session waits on its key for the next session (the last for the
                    // requester), by the rules.
                    for i in 0..cycle.sessions.len() {
                        let waiter = cycle.sessions[i].0;
                        let next = cycle.sessions[(i + 1) % cycle.sessions.len()].0;
                        let name = String::from_utf8_lossy(cycle.keys[i].as_bytes()).to_string();
                        let idx: u8 = name[1..].parse().expect("test key names are k<n>");
                        let ks = &keys[&idx];
                        let b = if waiter == requester && idx == target {
                            blockers(ks, ks.queue.len(), want)
                        } else {
                            let pos = ks.queue.iter().position(|(s, _)| *s == waiter).expect("waiter queued");
                            blockers(ks, pos, ks.queue[pos].1)
                        };
                        prop_assert!(b.contains(&next), "{} does not wait for {} on {}", waiter, next, name);
                    }
                }
            }
        }
    }
}
