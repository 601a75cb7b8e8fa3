//! The wait-for graph, kept as a mirror of every key that has waiters.
//!
//! Edges are not stored. A queued request of session `s` on key `k` waits for:
//! - every holder of `k` it conflicts with, and
//! - every request queued ahead of it on `k` that it conflicts with (with strict FIFO and
//!   no barging these edges are real: it cannot be granted before them).
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

use hashbrown::{HashMap, HashSet};

use crate::engine::{Cycle, Key, Mode, SessionId};

/// One queued request, as the graph sees it.
#[derive(Clone, Copy, Debug)]
struct Queued {
    seq: u64,
    session: SessionId,
    mode: Mode,
}

/// A key that has waiters: its holders and its queue, in order.
#[derive(Debug, Default)]
struct KeyMirror {
    semaphore: bool,
    holders: Vec<(SessionId, Mode)>,
    /// Sorted by `seq`, so a waiter's position is a binary search.
    queue: VecDeque<Queued>,
    next_seq: u64,
}

impl KeyMirror {
    fn position(&self, seq: u64) -> Option<usize> {
        self.queue.binary_search_by_key(&seq, |q| q.seq).ok()
    }
}

/// Where a session appears in the graph.
#[derive(Debug, Default)]
struct SessionNode {
    /// The keys the session has queued requests on (a session queues once per key), with
    /// the request's place in that key's queue.
    waits: Vec<(Key, u64)>,
    /// How many mirrored keys the session holds; with `waits` empty and this zero nobody
    /// can be waiting for the session, so a detection for it can stop at once.
    holds: u32,
}

/// Which requests ahead of (or holders of) a key a waiter conflicts with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Conflicts with every other mode (EXCLUSIVE, or any semaphore request).
    All,
    /// Conflicts only with EXCLUSIVE (a SHARED request on a lock).
    ExclusiveOnly,
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

/// The wait-for graph of the whole lock table. See the module docs for its rules.
#[derive(Debug, Default)]
pub struct WaitForGraph {
    keys: HashMap<Key, KeyMirror>,
    sessions: HashMap<SessionId, SessionNode>,
}

impl WaitForGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys with waiters.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Whether `key` is mirrored (has waiters).
    pub fn is_tracked(&self, key: &[u8]) -> bool {
        self.keys.contains_key(key)
    }

    /// The cycle that `session` queueing on `key` in `mode` (behind everything already
    /// queued) would close, or None. `holders` are the key's holders now; they are only read
    /// when the key has no waiters yet. Nothing is changed.
    pub fn detect(
        &self,
        session: SessionId,
        key: &Key,
        semaphore: bool,
        mode: Mode,
        holders: &[(SessionId, Mode)],
    ) -> Option<Cycle> {
        let node = self.sessions.get(&session)?;
        if node.waits.is_empty() && node.holds == 0 {
            return None;
        }
        let mut search = Search::default();
        let cls = class(semaphore, mode);
        match self.keys.get(key.as_bytes()) {
            Some(mirror) => search.expand(session, key, mirror, cls, mirror.queue.len()),
            None => {
                for &(holder, held) in holders {
                    if conflicts(cls, held) {
                        search.reach(holder, session, key);
                    }
                }
            }
        }
        while let Some(s) = search.stack.pop() {
            if s == session {
                return Some(search.cycle(session));
            }
            let Some(node) = self.sessions.get(&s) else {
                continue;
            };
            for (k, seq) in &node.waits {
                let mirror = self
                    .keys
                    .get(k.as_bytes())
                    .expect("a session waits only on mirrored keys");
                let pos = mirror
                    .position(*seq)
                    .expect("a waiting session is in the key's queue");
                let cls = class(mirror.semaphore, mirror.queue[pos].mode);
                search.expand(s, k, mirror, cls, pos);
            }
        }
        None
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
        let mirror = match self.keys.get_mut(key.as_bytes()) {
            Some(mirror) => mirror,
            None => {
                for &(holder, _) in holders {
                    self.sessions.entry(holder).or_default().holds += 1;
                }
                self.keys.entry(key.clone()).or_insert(KeyMirror {
                    semaphore,
                    holders: holders.to_vec(),
                    queue: VecDeque::new(),
                    next_seq: 0,
                })
            }
        };
        let seq = mirror.next_seq;
        mirror.next_seq += 1;
        mirror.queue.push_back(Queued { seq, session, mode });
        self.sessions
            .entry(session)
            .or_default()
            .waits
            .push((key.clone(), seq));
    }

    /// Removes `session`'s queued request on `key` (granted, timed out, cancelled or its
    /// session ended). When
    /// it was the key's last waiter the key stops being mirrored.
    pub fn dequeue(&mut self, key: &[u8], session: SessionId) {
        let Some(mirror) = self.keys.get_mut(key) else {
            return;
        };
        let Some(node) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(i) = node.waits.iter().position(|(k, _)| k.as_bytes() == key) else {
            return;
        };
        let (_, seq) = node.waits.swap_remove(i);
        if let Some(pos) = mirror.position(seq) {
            mirror.queue.remove(pos);
        }
        Self::forget_if_idle(&mut self.sessions, session);
        if mirror.queue.is_empty() {
            let mirror = self.keys.remove(key).expect("present above");
            for (holder, _) in mirror.holders {
                if let Some(node) = self.sessions.get_mut(&holder) {
                    node.holds -= 1;
                }
                Self::forget_if_idle(&mut self.sessions, holder);
            }
        }
    }

    /// A mirrored key gained a holder (a waiter was granted: call [`Self::dequeue`] first).
    pub fn add_holder(&mut self, key: &[u8], session: SessionId, mode: Mode) {
        if let Some(mirror) = self.keys.get_mut(key) {
            mirror.holders.push((session, mode));
            self.sessions.entry(session).or_default().holds += 1;
        }
    }

    /// A mirrored key lost a holder (release, expiry, session end).
    pub fn remove_holder(&mut self, key: &[u8], session: SessionId) {
        if let Some(mirror) = self.keys.get_mut(key) {
            if let Some(i) = mirror.holders.iter().position(|&(s, _)| s == session) {
                mirror.holders.remove(i);
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

/// The state of one detection: a depth-first search over sessions with per-key progress,
/// so that each queue is scanned at most once per conflict class.
#[derive(Default)]
struct Search {
    stack: Vec<SessionId>,
    /// For each reached session: the session that waits for it and the key it waits on.
    parent: HashMap<SessionId, (SessionId, Key)>,
    /// Per key: how much of the queue prefix was scanned for each class, and whether its
    /// holders were.
    progress: HashMap<Key, [usize; 2]>,
    holders_seen: HashSet<(Key, u8)>,
}

impl Search {
    fn reach(&mut self, s: SessionId, from: SessionId, key: &Key) {
        if let hashbrown::hash_map::Entry::Vacant(e) = self.parent.entry(s) {
            e.insert((from, key.clone()));
            self.stack.push(s);
        }
    }

    /// Reaches everything a request of `from` in class `cls` at queue position `pos` of
    /// `key` waits for.
    fn expand(&mut self, from: SessionId, key: &Key, mirror: &KeyMirror, cls: Class, pos: usize) {
        let ci = if cls == Class::All { 0 } else { 1 };
        if self.holders_seen.insert((key.clone(), ci as u8)) {
            for &(holder, held) in &mirror.holders {
                if conflicts(cls, held) {
                    self.reach(holder, from, key);
                }
            }
        }
        let done = self.progress.entry(key.clone()).or_insert([0, 0]);
        let start = done[ci];
        if pos > start {
            done[ci] = pos;
            for q in mirror.queue.range(start..pos) {
                if conflicts(cls, q.mode) {
                    self.reach(q.session, from, key);
                }
            }
        }
    }

    /// The cycle ending back at `requester`, listed from the requester forward.
    fn cycle(&self, requester: SessionId) -> Cycle {
        // Walk parents from the requester (reached last) back to the requester (the root).
        let mut sessions = Vec::new();
        let mut keys = Vec::new();
        let mut at = requester;
        loop {
            let (from, key) = self
                .parent
                .get(&at)
                .expect("every reached session has a parent");
            sessions.push(*from);
            keys.push(key.clone());
            at = *from;
            if at == requester || sessions.len() > self.parent.len() {
                break;
            }
        }
        sessions.reverse();
        keys.reverse();
        Cycle { sessions, keys }
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
}
