//! Atomic multi-locks: several keys, any mix of modes, granted all at once or not at all.
//!
//! A multi-lock checks and queues with every shard of its keys locked (in shard order, so
//! two of them never lock shards in opposite orders). Either every key is grantable now
//! (nothing queued, compatible with the holders) and it is granted at once, with one token
//! per key; or it queues one member on every key, each an ordinary waiter of the session
//! in the wait-for graph, or it is refused as a whole. Because a multi-lock enters all its
//! queues in one step, two multi-locks that share keys are in the same order on every
//! one of them, whatever order they list their keys in, so they never wait for each other
//! in a circle; any other cycle goes through the wait-for graph like a single request's.
//!
//! A member at the head of its queue and compatible with the holders is *ready*: it is
//! not granted on its own, and it keeps its place (strict FIFO: nothing behind it
//! passes). The shard that finds a member ready leaves a [`Note`]; once no shard is
//! locked, the table locks the shards of that multi-lock and, if every member is ready,
//! turns all of them into holds together. Cancels, WAIT timeouts and refusals take every
//! member off every queue. After the grant the holds are ordinary holds: each has its own
//! lease and token and is released (or expires) on its own.

use hashbrown::HashMap;
use parking_lot::MutexGuard;
use smallvec::SmallVec;

use super::image::MultiImage;
use super::shard::{Ctx, Probe, Shard};
use super::types::{AcquireOutcome, Cycle, Event, FencingToken, Kind, LimitKind, Mode};
use super::{key_hash, shard_of_hash, Key, LockTable, RequestId, SessionId};

/// What a shard found for the table to do once no shard is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Note {
    /// A member of this multi-lock is ready: grant it if all are.
    Ready(SessionId, RequestId),
    /// A member's WAIT ran out: the multi-lock times out as a whole.
    TimedOut(SessionId, RequestId),
    /// A member was cancelled: the multi-lock is cancelled as a whole.
    Cancel(SessionId, RequestId),
}

/// A multi-lock request, as the lock table sees it (validated by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiRequest {
    /// Names the request: every member's waiter carries it, and so does the grant.
    pub id: RequestId,
    /// The lease of every hold, counted from the grant.
    pub ttl_ms: u64,
    /// How long it may queue: `Some(0)` is a try-lock, `None` waits until granted.
    pub wait_ms: Option<u64>,
    /// The lock-delay of every hold it gets (see `QueuePolicy::lock_delay_ms`; 0: none).
    pub lock_delay_ms: u32,
}

/// What a multi-lock did at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultiOutcome {
    /// Every key granted now: one token per key, in request order.
    Granted(Vec<FencingToken>),
    /// Queued on every key; it ends with one [`Event::Granted`] per key (in request
    /// order, all pushed together), or one [`Event::TimedOut`] naming its first key.
    Queued,
    /// A try-lock that could not take every key at once.
    WouldBlock,
    /// Waiting would close a cycle (or the session already holds or waits on one of the
    /// keys, or lists a key twice); nothing changed.
    Deadlock(Cycle),
    /// Key number `index` exists with another kind.
    WrongType {
        /// Which key of the request.
        index: usize,
        /// Its kind.
        current: Kind,
    },
    /// A configured limit would be passed.
    Limit(LimitKind),
}

/// The queued multi-locks: their keys in request order.
#[derive(Default)]
pub(crate) struct Registry {
    groups: HashMap<(SessionId, RequestId), Box<[Key]>>,
}

/// The shards of one multi-lock, locked in shard order.
struct Locked<'a> {
    guards: SmallVec<[(usize, MutexGuard<'a, Shard>); 4]>,
}

impl<'a> Locked<'a> {
    /// Locks the shards of `placed` (hash and shard of each key).
    fn new(table: &'a LockTable, placed: &[(u64, usize)]) -> Self {
        let mut order: SmallVec<[usize; 4]> = placed.iter().map(|p| p.1).collect();
        order.sort_unstable();
        order.dedup();
        Locked {
            guards: order
                .into_iter()
                .map(|i| (i, table.shards[i].lock()))
                .collect(),
        }
    }

    fn get(&mut self, shard: usize) -> &mut Shard {
        let pos = self
            .guards
            .iter()
            .position(|(i, _)| *i == shard)
            .expect("every shard of the request is locked");
        &mut self.guards[pos].1
    }
}

impl LockTable {
    /// Applies a multi-lock of `items` (key and mode each) by `session`: granted at once
    /// on every key, queued on every key, or refused with nothing changed. See the
    /// module docs.
    pub fn acquire_multi(
        &self,
        session: SessionId,
        items: &[(&[u8], Mode)],
        req: &MultiRequest,
        now: u64,
    ) -> MultiOutcome {
        let ctx = self.ctx();
        let n = items.len();
        let placed: SmallVec<[(u64, usize); 4]> = items
            .iter()
            .map(|(key, _)| {
                let hash = key_hash(key);
                (hash, shard_of_hash(hash, self.shards.len()))
            })
            .collect();
        for (i, (key, _)) in items.iter().enumerate() {
            if items[..i].iter().any(|(k, _)| k == key) {
                return MultiOutcome::Deadlock(Cycle {
                    sessions: vec![session],
                    keys: vec![Key::new(key)],
                });
            }
        }
        let mut locked = Locked::new(self, &placed);
        let mut probes: SmallVec<[Probe; 4]> = SmallVec::new();
        for (i, ((key, mode), &(hash, shard))) in items.iter().zip(&placed).enumerate() {
            match locked.get(shard).multi_probe(session, key, hash, *mode) {
                Ok(p) => probes.push(p),
                Err(AcquireOutcome::WrongType { current }) => {
                    locked.get(shard).stats.wrongtype += 1;
                    return MultiOutcome::WrongType { index: i, current };
                }
                Err(AcquireOutcome::Deadlock(cycle)) => {
                    locked.get(shard).stats.deadlocks += 1;
                    return MultiOutcome::Deadlock(cycle);
                }
                Err(other) => unreachable!("a probe refuses only as above: {other:?}"),
            }
        }
        let first_shard = placed.first().map_or(0, |p| p.1);
        let all_free = probes.iter().all(|p| *p != Probe::Busy);
        if !all_free && req.wait_ms == Some(0) {
            locked.get(first_shard).stats.would_block += 1;
            return MultiOutcome::WouldBlock;
        }
        let limit = |locked: &mut Locked, kind| {
            locked.get(first_shard).stats.limits += 1;
            MultiOutcome::Limit(kind)
        };
        if !all_free {
            for ((key, _), &(hash, shard)) in items.iter().zip(&placed) {
                if locked
                    .get(shard)
                    .multi_queue_full(key, hash, ctx.limits.max_waiters_per_key)
                {
                    return limit(&mut locked, LimitKind::WaitersPerKey);
                }
            }
        }
        let new_keys = probes.iter().filter(|p| **p == Probe::Absent).count();
        if new_keys > 0 {
            let before = ctx
                .keys
                .fetch_add(new_keys, std::sync::atomic::Ordering::Relaxed);
            if before.saturating_add(new_keys) > ctx.limits.max_keys {
                ctx.keys
                    .fetch_sub(new_keys, std::sync::atomic::Ordering::Relaxed);
                return limit(&mut locked, LimitKind::Keys);
            }
        }
        for reserved in 0..n {
            if !ctx
                .sessions
                .reserve(session, ctx.limits.max_holds_per_session)
            {
                for _ in 0..reserved {
                    ctx.sessions.release(session);
                }
                ctx.keys
                    .fetch_sub(new_keys, std::sync::atomic::Ordering::Relaxed);
                return limit(&mut locked, LimitKind::HoldsPerSession);
            }
        }
        let ttl_ms = u32::try_from(req.ttl_ms).unwrap_or(u32::MAX).max(1);
        if all_free {
            let tokens = items
                .iter()
                .zip(&placed)
                .map(|((key, mode), &(hash, shard))| {
                    locked.get(shard).multi_grant_now(
                        session,
                        key,
                        hash,
                        *mode,
                        ttl_ms,
                        req.lock_delay_ms,
                        now,
                        &ctx,
                    )
                })
                .collect();
            return MultiOutcome::Granted(tokens);
        }
        for (i, ((key, mode), &(hash, shard))) in items.iter().zip(&placed).enumerate() {
            let queued = locked
                .get(shard)
                .multi_enqueue(session, key, hash, *mode, req, ttl_ms, now, &ctx);
            if let Err(cycle) = queued {
                // Undo the members queued so far: each was last in its queue (or alone
                // at its head), so taking it out grants nothing.
                let mut none = Vec::new();
                for ((k, _), &(h, s)) in items[..i].iter().zip(&placed) {
                    locked
                        .get(s)
                        .multi_unqueue(session, k, h, now, &ctx, &mut none);
                }
                debug_assert!(
                    none.is_empty(),
                    "undoing a refused multi-lock granted {none:?}"
                );
                for _ in i..n {
                    ctx.sessions.release(session);
                }
                // Keys created and removed again gave their count back themselves.
                let never_created = probes[i + 1..]
                    .iter()
                    .filter(|p| **p == Probe::Absent)
                    .count();
                ctx.keys
                    .fetch_sub(never_created, std::sync::atomic::Ordering::Relaxed);
                ctx.notes.borrow_mut().clear();
                return MultiOutcome::Deadlock(cycle);
            }
        }
        let keys: Box<[Key]> = items.iter().map(|(k, _)| Key::new(k)).collect();
        self.multi.lock().groups.insert((session, req.id), keys);
        // A member may have queued ready (alone at the head of a free key); the others
        // were not, or it would have been granted at once.
        ctx.notes.borrow_mut().clear();
        MultiOutcome::Queued
    }

    /// Releases `session`'s hold on each of `keys` in turn (one reentrant level each).
    /// Returns how many were released; the waiters they unblock are pushed as events.
    pub fn release_many(
        &self,
        session: SessionId,
        keys: &[&[u8]],
        now: u64,
        events: &mut Vec<Event>,
    ) -> usize {
        keys.iter()
            .filter(|key| self.release(session, key, now, events).is_ok())
            .count()
    }

    /// Acts on what shards noted during an operation (see [`Note`]); called by every
    /// operation that may end a hold or a wait, once it has unlocked its shard.
    #[inline]
    pub(super) fn settle(&self, ctx: &Ctx, now: u64, events: &mut Vec<Event>) {
        if !ctx.notes.borrow().is_empty() {
            self.settle_notes(ctx, now, events);
        }
    }

    fn settle_notes(&self, ctx: &Ctx, now: u64, events: &mut Vec<Event>) {
        loop {
            let note = {
                let mut notes = ctx.notes.borrow_mut();
                if notes.is_empty() {
                    return;
                }
                notes.remove(0)
            };
            match note {
                Note::Ready(session, request) => {
                    self.grant_multi(session, request, ctx, now, events)
                }
                Note::TimedOut(session, request) => {
                    self.end_multi(session, request, true, ctx, now, events)
                }
                Note::Cancel(session, request) => {
                    self.end_multi(session, request, false, ctx, now, events)
                }
            }
        }
    }

    /// A queued multi-lock's keys, the hash and shard of each, and those shards locked
    /// (in shard order); None when it is not queued (any more).
    #[allow(clippy::type_complexity, reason = "a private step of two callers")]
    fn lock_multi(
        &self,
        session: SessionId,
        request: RequestId,
    ) -> Option<(Box<[Key]>, SmallVec<[(u64, usize); 4]>, Locked<'_>)> {
        let keys = self.multi.lock().groups.get(&(session, request)).cloned()?;
        let placed: SmallVec<[(u64, usize); 4]> = keys
            .iter()
            .map(|k| {
                let hash = key_hash(k.as_bytes());
                (hash, shard_of_hash(hash, self.shards.len()))
            })
            .collect();
        let locked = Locked::new(self, &placed);
        Some((keys, placed, locked))
    }

    /// Grants every member of the multi-lock if every one is ready.
    fn grant_multi(
        &self,
        session: SessionId,
        request: RequestId,
        ctx: &Ctx,
        now: u64,
        events: &mut Vec<Event>,
    ) {
        let Some((keys, placed, mut locked)) = self.lock_multi(session, request) else {
            return;
        };
        let ready = keys.iter().zip(&placed).all(|(k, &(hash, shard))| {
            locked
                .get(shard)
                .multi_ready(session, request, k.as_bytes(), hash)
        });
        // Checked again under the shard locks: a concurrent operation may have ended it.
        if !ready
            || self
                .multi
                .lock()
                .groups
                .remove(&(session, request))
                .is_none()
        {
            return;
        }
        for (k, &(hash, shard)) in keys.iter().zip(&placed) {
            let token = locked.get(shard).multi_take(k.as_bytes(), hash, now, ctx);
            events.push(Event::Granted {
                session,
                request,
                key: k.clone(),
                token,
            });
        }
        for (k, &(hash, shard)) in keys.iter().zip(&placed) {
            locked
                .get(shard)
                .multi_regrant(k.as_bytes(), hash, now, ctx, events);
        }
    }

    /// Takes every member of the multi-lock off its queue (a timeout also tells its
    /// session, naming the first key).
    fn end_multi(
        &self,
        session: SessionId,
        request: RequestId,
        timed_out: bool,
        ctx: &Ctx,
        now: u64,
        events: &mut Vec<Event>,
    ) {
        let Some((keys, placed, mut locked)) = self.lock_multi(session, request) else {
            return;
        };
        if self
            .multi
            .lock()
            .groups
            .remove(&(session, request))
            .is_none()
        {
            return;
        }
        locked.get(placed[0].1).multi_count(timed_out);
        if timed_out {
            events.push(Event::TimedOut {
                session,
                request,
                key: keys[0].clone(),
            });
        }
        for (k, &(hash, shard)) in keys.iter().zip(&placed) {
            locked
                .get(shard)
                .multi_unqueue(session, k.as_bytes(), hash, now, ctx, events);
        }
    }

    /// Forgets the session's queued multi-locks (its members are about to leave with the
    /// session).
    pub(super) fn forget_multi(&self, session: SessionId) {
        let mut registry = self.multi.lock();
        if !registry.groups.is_empty() {
            registry.groups.retain(|(s, _), _| *s != session);
        }
    }

    /// The queued multi-locks, for a snapshot.
    pub(super) fn export_multi(&self) -> Vec<MultiImage> {
        self.multi
            .lock()
            .groups
            .iter()
            .map(|(&(session, request), keys)| MultiImage {
                session,
                request,
                keys: keys.to_vec(),
            })
            .collect()
    }

    /// Restores the queued multi-locks of a snapshot.
    pub(super) fn import_multi(&self, multi: &[MultiImage]) {
        let mut registry = self.multi.lock();
        for m in multi {
            registry
                .groups
                .insert((m.session, m.request), m.keys.clone().into_boxed_slice());
        }
    }

    /// Whether `session` has a queued multi-lock `request`.
    pub fn multi_queued(&self, session: SessionId, request: RequestId) -> bool {
        self.multi.lock().groups.contains_key(&(session, request))
    }
}
