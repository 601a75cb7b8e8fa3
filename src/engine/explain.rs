//! Why a request waits: the wait-for edges of the lock table, read for EXPLAIN and
//! WAITGRAPH.
//!
//! An edge runs from a queued request to what it waits for, by the rules of the wait-for
//! graph (`crate::deadlock` module docs): every holder of the key it conflicts with, and
//! every request queued ahead of it on the key it conflicts with (strict FIFO: it cannot be
//! granted before them). Two modes conflict unless both are SHARED; on a semaphore every
//! pair conflicts. These are the very edges deadlock detection walks, so what EXPLAIN shows
//! is what a DEADLOCK refusal was computed from.
//!
//! Everything here only reads: each shard is locked in turn, briefly, and nothing in the
//! table changes, so the hot path (uncontended ACQUIRE and RELEASE) pays nothing. The
//! answer is not an atomic snapshot across shards (a grant between two shard reads may
//! show); it is a diagnostic view. Time comes in as `now`, and every list is built in a
//! deterministic order (shards in order, keys sorted per session, queues in order), so the
//! same table at the same `now` gives the same answer.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use super::{HolderInfo, Key, Kind, LockTable, Mode, RequestId, SessionId, WaiterInfo};

/// Edges an EXPLAIN or WAITGRAPH lists when the caller does not say (COUNT).
pub const DEFAULT_EDGES: usize = 1000;

/// The most edges one EXPLAIN or WAITGRAPH lists, whatever COUNT asks: a table can have
/// millions of waiters, and semaphore queues have edges quadratic in their length, so the
/// answer (and the time a shard is locked while it is read) must be bounded.
pub const MAX_EDGES: usize = 100_000;

/// What a waiting request waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// A holder of the key whose hold conflicts with the request.
    Holder(HolderInfo),
    /// A request queued ahead on the same key that conflicts with it.
    Queued(WaiterInfo),
}

impl Blocker {
    /// The blocking session.
    pub fn session(&self) -> SessionId {
        match self {
            Blocker::Holder(h) => h.session,
            Blocker::Queued(w) => w.session,
        }
    }

    /// The blocker's mode (held or wanted).
    pub fn mode(&self) -> Mode {
        match self {
            Blocker::Holder(h) => h.mode,
            Blocker::Queued(w) => w.mode,
        }
    }
}

/// One edge of the wait-for graph: `waiter` (queued on `key`) waits for `blocker`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitEdge {
    /// The key both are on.
    pub key: Key,
    /// The key's kind.
    pub kind: Kind,
    /// The waiting request.
    pub waiter: WaiterInfo,
    /// What it waits for.
    pub blocker: Blocker,
}

/// What EXPLAIN explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExplainTarget {
    /// Every queued request of a session.
    Session(SessionId),
    /// One queued request, by its id (found by a scan of the queues).
    Request(RequestId),
    /// One queued request whose session and key the caller knows already (a binary
    /// session names its own request): no scan.
    RequestOn {
        /// The request.
        request: RequestId,
        /// Its session.
        session: SessionId,
        /// The key it queued on.
        key: Key,
    },
}

/// An edge of an explanation, with its distance from what was explained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// 1 for the explained requests' own edges, 2 for what their blockers wait for, ...
    pub depth: u32,
    /// The edge.
    pub edge: WaitEdge,
}

/// Why a session or request waits: everything it waits for, transitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explanation {
    /// The session explained (the request's, for a request).
    pub session: SessionId,
    /// Its queued requests that were explained (empty: it waits for nothing).
    pub waiting: Vec<RequestId>,
    /// The edges, breadth first: all of depth 1, then depth 2, ... A session is expanded
    /// once however many edges reach it, so a DAG is listed without repeats.
    pub steps: Vec<Step>,
    /// Whether edges were left out to stay within the limit.
    pub truncated: bool,
    /// A cycle among the listed edges, as the sessions around it (the first waits for the
    /// second, ..., the last for the first); empty when there is none. There should never
    /// be one (a request that would close a cycle is refused), so a non-empty cycle is a
    /// bug worth reporting.
    pub cycle: Vec<SessionId>,
}

/// A bounded dump of the wait-for graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaitGraphDump {
    /// The edges, shard by shard, queue order within a key.
    pub edges: Vec<WaitEdge>,
    /// Whether edges were left out to stay within the limit.
    pub truncated: bool,
}

impl LockTable {
    /// The keys `session` has queued requests on, sorted (for a deterministic order).
    fn queued_keys(&self, session: SessionId) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().queued_keys(session))
            .collect();
        keys.sort();
        keys
    }

    /// The session and key of the queued request `request`, or None when it is not queued
    /// (granted, timed out, cancelled, or never was). Scans the queues of every shard:
    /// meant for EXPLAIN REQUEST, not for a hot path.
    pub fn find_request(&self, request: RequestId) -> Option<(SessionId, Key)> {
        self.shards
            .iter()
            .find_map(|s| s.lock().find_request(request))
    }

    /// The direct wait-for edges of `session`'s queued request on `key`: its waiter info
    /// (None when it has no request queued there) and whether `out` stayed within `limit`.
    fn waiter_edges(
        &self,
        session: SessionId,
        key: &[u8],
        now: u64,
        limit: usize,
        out: &mut Vec<WaitEdge>,
    ) -> bool {
        let (hash, shard) = self.shard(key);
        shard
            .lock()
            .waiter_edges(key, hash, session, now, limit, out)
    }

    /// The direct wait-for edges of every queued request of `session` (keys in sorted
    /// order), at most `limit` of them; the flag says whether some were left out. This is
    /// "what does this session wait for right now", one step deep.
    pub fn waits_of(&self, session: SessionId, now: u64, limit: usize) -> (Vec<WaitEdge>, bool) {
        let mut out = Vec::new();
        for key in self.queued_keys(session) {
            if !self.waiter_edges(session, key.as_bytes(), now, limit, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    /// Explains why `target` waits: its own edges, then what each blocker waits for, and
    /// so on, breadth first, at most `limit` edges. Edges on keys for which `visible` is
    /// false are left out and not followed (a user's key permissions). None when the
    /// target is a request that is not queued.
    pub fn explain(
        &self,
        target: &ExplainTarget,
        now: u64,
        limit: usize,
        mut visible: impl FnMut(&[u8]) -> bool,
    ) -> Option<Explanation> {
        let (session, root_key) = match target {
            ExplainTarget::Session(s) => (*s, None),
            ExplainTarget::Request(r) => {
                let (s, k) = self.find_request(*r)?;
                (s, Some(k))
            }
            ExplainTarget::RequestOn { session, key, .. } => (*session, Some(key.clone())),
        };
        let mut ex = Explanation {
            session,
            ..Explanation::default()
        };
        let mut expanded: HashSet<SessionId> = HashSet::from([session]);
        let mut todo: VecDeque<(SessionId, u32, Option<Key>)> = VecDeque::new();
        todo.push_back((session, 1, root_key));
        let mut edges = Vec::new();
        while let Some((s, depth, only)) = todo.pop_front() {
            let keys = match only {
                Some(k) => vec![k],
                None => self.queued_keys(s),
            };
            for key in keys {
                edges.clear();
                let room = limit - ex.steps.len();
                let complete = self.waiter_edges(s, key.as_bytes(), now, room, &mut edges);
                if depth == 1 {
                    let request = self.queued_request(s, &key, target);
                    match request {
                        Some(r) => ex.waiting.push(r),
                        // The request was granted or left meanwhile.
                        None if !matches!(target, ExplainTarget::Session(_)) => return None,
                        None => {}
                    }
                }
                if !visible(key.as_bytes()) {
                    continue;
                }
                for edge in edges.drain(..) {
                    let b = edge.blocker.session();
                    if expanded.insert(b) {
                        todo.push_back((b, depth + 1, None));
                    }
                    ex.steps.push(Step { depth, edge });
                }
                // At the limit `room` is 0, so the next request with any edge says so.
                if !complete {
                    ex.truncated = true;
                    ex.cycle = find_cycle(&ex.steps);
                    return Some(ex);
                }
            }
        }
        ex.cycle = find_cycle(&ex.steps);
        Some(ex)
    }

    /// The id of `session`'s request queued on `key` (None when it has none), checked
    /// against the request `target` names.
    fn queued_request(
        &self,
        session: SessionId,
        key: &Key,
        target: &ExplainTarget,
    ) -> Option<RequestId> {
        let info = self.inspect(key.as_bytes(), 0)?;
        let w = info.waiters.iter().find(|w| w.session == session)?;
        match target {
            ExplainTarget::Session(_) => Some(w.request),
            ExplainTarget::Request(r) | ExplainTarget::RequestOn { request: r, .. } => {
                (w.request == *r).then_some(w.request)
            }
        }
    }

    /// Every edge of the wait-for graph on keys for which `visible` holds, shard by shard,
    /// at most `limit` of them.
    pub fn wait_graph(
        &self,
        now: u64,
        limit: usize,
        mut visible: impl FnMut(&[u8]) -> bool,
    ) -> WaitGraphDump {
        let mut dump = WaitGraphDump::default();
        for shard in self.shards.iter() {
            if !shard
                .lock()
                .all_edges(&mut visible, now, limit, &mut dump.edges)
            {
                dump.truncated = true;
                break;
            }
        }
        dump
    }
}

/// A cycle among the sessions of `steps` (waiter -> blocker), found by a depth-first
/// search in session order; empty when there is none.
fn find_cycle(steps: &[Step]) -> Vec<SessionId> {
    let mut next: BTreeMap<SessionId, BTreeSet<SessionId>> = BTreeMap::new();
    for s in steps {
        next.entry(s.edge.waiter.session)
            .or_default()
            .insert(s.edge.blocker.session());
    }
    // 1: on the current path, 2: done.
    let mut state: BTreeMap<SessionId, u8> = BTreeMap::new();
    for &start in next.keys() {
        if state.contains_key(&start) {
            continue;
        }
        let mut path: Vec<SessionId> = vec![start];
        let mut iters: Vec<std::collections::btree_set::Iter<'_, SessionId>> =
            vec![next[&start].iter()];
        state.insert(start, 1);
        while let Some(it) = iters.last_mut() {
            match it.next() {
                Some(&n) => match state.get(&n) {
                    Some(1) => {
                        let from = path.iter().position(|&p| p == n).expect("on the path");
                        return path[from..].to_vec();
                    }
                    Some(_) => {}
                    None => {
                        state.insert(n, 1);
                        path.push(n);
                        iters.push(next.get(&n).map_or_else(Default::default, |s| s.iter()));
                    }
                },
                None => {
                    iters.pop();
                    if let Some(done) = path.pop() {
                        state.insert(done, 2);
                    }
                }
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{shard_of, AcquireOutcome, AcquireRequest, Limits};

    fn req(id: u64, mode: Mode) -> AcquireRequest {
        AcquireRequest {
            id: RequestId(id),
            mode,
            reentrant: false,
            ttl_ms: 10_000,
            wait_ms: None,
            policy: Default::default(),
        }
    }

    /// Session `s` acquires `key` at `now`: the outcome.
    fn acq(t: &LockTable, s: u64, key: &str, id: u64, mode: Mode, now: u64) -> AcquireOutcome {
        t.acquire(SessionId(s), key.as_bytes(), &req(id, mode), now)
    }

    /// The edges as (waiter, blocker, holder?) triples.
    fn shape(edges: &[WaitEdge]) -> Vec<(u64, u64, bool)> {
        edges
            .iter()
            .map(|e| {
                (
                    e.waiter.session.0,
                    e.blocker.session().0,
                    matches!(e.blocker, Blocker::Holder(_)),
                )
            })
            .collect()
    }

    const SEM: Mode = Mode::Semaphore {
        limit: 2,
        permits: 1,
    };

    #[test]
    fn exclusive_waits_for_the_holder_and_everyone_ahead() {
        let t = LockTable::new(4, Limits::default(), 0);
        assert!(matches!(
            acq(&t, 1, "k", 1, Mode::Exclusive, 0),
            AcquireOutcome::Granted(_)
        ));
        assert_eq!(acq(&t, 2, "k", 2, Mode::Shared, 10), AcquireOutcome::Queued);
        assert_eq!(
            acq(&t, 3, "k", 3, Mode::Exclusive, 20),
            AcquireOutcome::Queued
        );
        let (edges, truncated) = t.waits_of(SessionId(3), 100, usize::MAX);
        assert!(!truncated);
        assert_eq!(shape(&edges), [(3, 1, true), (3, 2, false)]);
        let Blocker::Holder(h) = &edges[0].blocker else {
            panic!("holder first")
        };
        assert_eq!((h.mode, h.ttl_ms), (Mode::Exclusive, 9_900));
        assert_eq!(edges[0].waiter.waited_ms, 80);
        assert_eq!(edges[0].waiter.request, RequestId(3));
        let Blocker::Queued(w) = &edges[1].blocker else {
            panic!("then the request ahead")
        };
        assert_eq!(
            (w.request, w.mode, w.waited_ms),
            (RequestId(2), Mode::Shared, 90)
        );
    }

    #[test]
    fn shared_waits_only_for_exclusive() {
        let t = LockTable::new(4, Limits::default(), 0);
        acq(&t, 1, "k", 1, Mode::Shared, 0);
        // A queued writer, then readers behind it: they wait for the writer only.
        assert_eq!(
            acq(&t, 2, "k", 2, Mode::Exclusive, 0),
            AcquireOutcome::Queued
        );
        assert_eq!(acq(&t, 3, "k", 3, Mode::Shared, 0), AcquireOutcome::Queued);
        assert_eq!(acq(&t, 4, "k", 4, Mode::Shared, 0), AcquireOutcome::Queued);
        let dump = t.wait_graph(0, usize::MAX, |_| true);
        assert_eq!(
            shape(&dump.edges),
            [(2, 1, true), (3, 2, false), (4, 2, false)]
        );
        assert!(!dump.truncated);
    }

    #[test]
    fn semaphore_waiters_wait_for_every_holder_and_request_ahead() {
        let t = LockTable::new(4, Limits::default(), 0);
        acq(&t, 1, "s", 1, SEM, 0);
        acq(&t, 2, "s", 2, SEM, 0);
        assert_eq!(acq(&t, 3, "s", 3, SEM, 0), AcquireOutcome::Queued);
        assert_eq!(acq(&t, 4, "s", 4, SEM, 0), AcquireOutcome::Queued);
        let (edges, _) = t.waits_of(SessionId(4), 0, usize::MAX);
        assert_eq!(shape(&edges), [(4, 1, true), (4, 2, true), (4, 3, false)]);
        assert_eq!(edges[0].kind, Kind::Semaphore { limit: 2 });
        // The limit cuts, and says so.
        let dump = t.wait_graph(0, 3, |_| true);
        assert_eq!(dump.edges.len(), 3);
        assert!(dump.truncated);
        let dump = t.wait_graph(0, 5, |_| true);
        assert!(!dump.truncated, "exactly 5 edges fit in 5");
    }

    /// Two keys in different shards.
    fn two_shard_keys(shards: usize) -> (String, String) {
        let k1 = "k1".to_string();
        let k2 = (2..)
            .map(|i| format!("k{i}"))
            .find(|k| shard_of(k.as_bytes(), shards) != shard_of(k1.as_bytes(), shards))
            .expect("some key lands in another shard");
        (k1, k2)
    }

    #[test]
    fn a_chain_of_three_sessions_across_two_shards() {
        let t = LockTable::new(8, Limits::default(), 0);
        let (k1, k2) = two_shard_keys(8);
        // A holds k1; B waits on k1 and holds k2; C waits on k2.
        acq(&t, 1, &k1, 1, Mode::Exclusive, 0);
        acq(&t, 2, &k2, 2, Mode::Exclusive, 0);
        assert_eq!(
            acq(&t, 2, &k1, 3, Mode::Exclusive, 5),
            AcquireOutcome::Queued
        );
        assert_eq!(acq(&t, 3, &k2, 4, Mode::Shared, 7), AcquireOutcome::Queued);
        let ex = t
            .explain(
                &ExplainTarget::Session(SessionId(3)),
                50,
                usize::MAX,
                |_| true,
            )
            .expect("a session is always explained");
        assert_eq!(ex.session, SessionId(3));
        assert_eq!(ex.waiting, [RequestId(4)]);
        let steps: Vec<(u32, u64, u64, &[u8])> = ex
            .steps
            .iter()
            .map(|s| {
                (
                    s.depth,
                    s.edge.waiter.session.0,
                    s.edge.blocker.session().0,
                    s.edge.key.as_bytes(),
                )
            })
            .collect();
        assert_eq!(steps, [(1, 3, 2, k2.as_bytes()), (2, 2, 1, k1.as_bytes())]);
        assert!(!ex.truncated && ex.cycle.is_empty());
        // By request id: the same chain from B's request.
        let ex = t
            .explain(
                &ExplainTarget::Request(RequestId(3)),
                50,
                usize::MAX,
                |_| true,
            )
            .expect("queued");
        assert_eq!(
            (ex.session, ex.waiting.clone()),
            (SessionId(2), vec![RequestId(3)])
        );
        assert_eq!(
            shape(&ex.steps.iter().map(|s| s.edge.clone()).collect::<Vec<_>>()),
            [(2, 1, true)]
        );
        // A request that is not queued has no explanation; a session that waits for
        // nothing has an empty one.
        assert!(t
            .explain(&ExplainTarget::Request(RequestId(1)), 50, 10, |_| true)
            .is_none());
        let ex = t
            .explain(&ExplainTarget::Session(SessionId(1)), 50, 10, |_| true)
            .expect("explained");
        assert!(ex.waiting.is_empty() && ex.steps.is_empty());
        // A limit of one edge: truncated.
        let ex = t
            .explain(&ExplainTarget::Session(SessionId(3)), 50, 1, |_| true)
            .expect("explained");
        assert_eq!((ex.steps.len(), ex.truncated), (1, true));
        // Keys the caller may not see are neither listed nor followed.
        let ex = t
            .explain(&ExplainTarget::Session(SessionId(3)), 50, 10, |k| {
                k != k2.as_bytes()
            })
            .expect("explained");
        assert!(ex.steps.is_empty());
        assert_eq!(ex.waiting, [RequestId(4)]);
    }

    #[test]
    fn a_dag_lists_each_blocker_once() {
        let t = LockTable::new(4, Limits::default(), 0);
        // 1 holds a exclusively; 2 and 3 queue shared (each waits for 1 only); 4 queues
        // exclusive behind them (it waits for 1, 2 and 3).
        acq(&t, 1, "a", 1, Mode::Exclusive, 0);
        acq(&t, 2, "a", 2, Mode::Shared, 0);
        acq(&t, 3, "a", 3, Mode::Shared, 0);
        acq(&t, 4, "a", 4, Mode::Exclusive, 0);
        let ex = t
            .explain(&ExplainTarget::Session(SessionId(4)), 0, 100, |_| true)
            .expect("explained");
        let shape: Vec<(u32, u64, u64)> = ex
            .steps
            .iter()
            .map(|s| (s.depth, s.edge.waiter.session.0, s.edge.blocker.session().0))
            .collect();
        // 4 -> 1, 2, 3; then 2 -> 1 and 3 -> 1 (1 was reached already: not expanded again,
        // but the edges are listed).
        assert_eq!(
            shape,
            [(1, 4, 1), (1, 4, 2), (1, 4, 3), (2, 2, 1), (2, 3, 1)]
        );
        assert!(ex.cycle.is_empty());
    }

    #[test]
    fn cycles_are_found_among_listed_edges() {
        let edge = |w: u64, b: u64| Step {
            depth: 1,
            edge: WaitEdge {
                key: Key::from("k"),
                kind: Kind::Lock,
                waiter: WaiterInfo {
                    session: SessionId(w),
                    request: RequestId(w),
                    mode: Mode::Exclusive,
                    permits: 1,
                    waited_ms: 0,
                },
                blocker: Blocker::Queued(WaiterInfo {
                    session: SessionId(b),
                    request: RequestId(b),
                    mode: Mode::Exclusive,
                    permits: 1,
                    waited_ms: 0,
                }),
            },
        };
        assert!(find_cycle(&[edge(1, 2), edge(2, 3), edge(1, 3)]).is_empty());
        assert_eq!(
            find_cycle(&[edge(1, 2), edge(2, 3), edge(3, 2)]),
            [SessionId(2), SessionId(3)]
        );
        assert_eq!(
            find_cycle(&[edge(5, 6), edge(6, 7), edge(7, 5)]),
            [SessionId(5), SessionId(6), SessionId(7)]
        );
    }
}
