//! A hierarchical timer wheel: the pure structure behind lease expiry and wait deadlines.
//!
//! The wheel never reads a clock. Time is a `u64` count of milliseconds handed in by the
//! caller, so the same sequence of calls always fires the same timers in the same order: the
//! leader's expiry driver, a replayed log and a test all see identical behaviour, and tests
//! never sleep.
//!
//! # Layout
//!
//! Eleven levels (`LEVELS`) of 64 slots each. A timer pending at time `now` with deadline `d > now`
//! sits at the level of the highest 6-bit digit in which `d` and `now` differ
//! (`level = msb(d ^ now) / 6`), in the slot named by that digit of `d`. Level 0 therefore holds
//! exact milliseconds, level 1 spans of 64 ms, level 2 spans of 4096 ms, and so on. Eleven
//! levels cover 66 bits, i.e. every `u64` deadline, so there is no overflow list to re-examine:
//! a deadline of `u64::MAX` is placed like any other.
//!
//! Timers whose deadline is already at or before `now` when inserted go to a separate *due*
//! list, which the next [`TimerWheel::advance`] fires first.
//!
//! Entries live in a slab (`Vec` plus an intrusive free list) and each slot is an intrusive
//! doubly linked FIFO list of slab indices, so insert and cancel are O(1) and allocate nothing
//! beyond slab growth. One 64-bit occupancy bitmap per level lets `advance` and
//! [`TimerWheel::next_deadline`] find the next occupied slot with `trailing_zeros` instead of
//! walking empty milliseconds.
//!
//! # Invariant
//!
//! Between calls, every pending timer is either in the due list (deadline `<= now`) or in the
//! wheel at exactly `(msb(d ^ now) / 6, digit of d)` with `d > now`. Three facts follow:
//!
//! * every occupied slot of level `L` has an index above `now`'s own digit `L`, so the lowest
//!   set bit of the lowest non-empty level is the next moment anything happens;
//! * a level-0 slot holds timers of one exact deadline;
//! * all pending timers with the same deadline share one list, in insertion order, and
//!   cascading moves a whole list at once, so that order survives every cascade. This is why
//!   `advance` reports equal deadlines in insertion order without storing a sequence number.

use std::fmt;
use std::mem;

/// Bits of the deadline resolved by one level.
const LEVEL_BITS: u32 = 6;
/// Slots per level: one per value of a 6-bit digit.
const SLOTS_PER_LEVEL: usize = 1 << LEVEL_BITS;
/// Number of levels; `LEVELS * LEVEL_BITS >= 64`, so every `u64` deadline has a slot.
const LEVELS: usize = 11;
/// Number of wheel slots over all levels; also the index of the due list in `lists`.
const WHEEL_SLOTS: usize = LEVELS * SLOTS_PER_LEVEL;
/// List index of the due list (timers inserted with a deadline at or before `now`).
const DUE_LIST: u16 = WHEEL_SLOTS as u16;
/// "No entry" in a link, a list head or the free list.
const NIL: u32 = u32::MAX;

/// Handle to a scheduled timer.
///
/// Copy, 8 bytes: the slab index and that slot's generation when the timer was inserted. The
/// generation is bumped each time a slot is freed, so a stale handle (to a timer that fired or
/// was cancelled and whose slot was reused) is detected and ignored rather than cancelling a
/// stranger's timer. Generations wrap after 2^32 reuses of one slot, which is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// Head and tail of one intrusive list; the tail makes appends O(1) and keeps lists FIFO.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

/// One slab slot.
///
/// An enum rather than a struct with `Option<T>` so the discriminant shares the padding of the
/// link fields: for `T = u64` an entry is 32 bytes, i.e. 24 bytes of wheel overhead per timer
/// (deadline 8, prev 4, next 4, generation 4, list 2, tag and padding 2).
enum Entry<T> {
    /// A scheduled timer, linked into list `list`.
    Pending {
        deadline: u64,
        prev: u32,
        next: u32,
        generation: u32,
        list: u16,
        value: T,
    },
    /// A free slab slot, linked into the free list.
    Vacant { generation: u32, next_free: u32 },
}

/// Mutable view of the link fields of a pending entry.
struct Links<'a> {
    deadline: u64,
    prev: &'a mut u32,
    next: &'a mut u32,
    list: &'a mut u16,
}

impl<T> Entry<T> {
    fn links(&mut self) -> Option<Links<'_>> {
        match self {
            Entry::Pending {
                deadline,
                prev,
                next,
                list,
                ..
            } => Some(Links {
                deadline: *deadline,
                prev,
                next,
                list,
            }),
            Entry::Vacant { .. } => None,
        }
    }
}

/// A deterministic hierarchical timer wheel with 1 ms resolution.
///
/// Memory: a fixed ~5.7 KiB of list heads plus one slab entry per timer (24 bytes of overhead
/// besides `T` when `T` is 8-byte aligned; see the `Entry` layout). The slab never shrinks, so
/// a burst of timers leaves its capacity behind for reuse.
pub struct TimerWheel<T> {
    /// Current time in ms; only moves forward.
    now: u64,
    /// The slab.
    entries: Vec<Entry<T>>,
    /// First vacant slab slot, or `NIL`.
    free_head: u32,
    /// `WHEEL_SLOTS` wheel slots (level-major) followed by the due list.
    lists: Box<[List]>,
    /// Bit `s` of `occupied[L]` is set iff slot `s` of level `L` is non-empty.
    occupied: [u64; LEVELS],
    /// A lower bound of the deadlines in the due list (exact unless one was cancelled).
    due_min: u64,
    /// Number of pending timers.
    len: usize,
}

impl<T> fmt::Debug for TimerWheel<T> {
    /// Summarises the wheel without requiring `T: Debug`, so drivers can derive `Debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("now", &self.now)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

/// Level at which a deadline differing from `now` by the bits `diff` (non-zero) belongs.
fn level_of(diff: u64) -> usize {
    debug_assert!(diff != 0);
    ((63 - diff.leading_zeros()) / LEVEL_BITS) as usize
}

/// The digit of `deadline` that names its slot at `level`.
fn digit(deadline: u64, level: usize) -> usize {
    ((deadline >> (level as u32 * LEVEL_BITS)) as usize) & (SLOTS_PER_LEVEL - 1)
}

/// The first millisecond covered by `slot` of `level`, given that `now` lies in the same
/// level-`level + 1` span (which the invariant guarantees for occupied slots).
fn slot_start(now: u64, level: usize, slot: usize) -> u64 {
    let span_bits = (level as u32 + 1) * LEVEL_BITS;
    let base = if span_bits >= 64 {
        0
    } else {
        (now >> span_bits) << span_bits
    };
    base | ((slot as u64) << (level as u32 * LEVEL_BITS))
}

impl<T> TimerWheel<T> {
    /// A wheel whose current time is `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        TimerWheel {
            now: now_ms,
            entries: Vec::new(),
            free_head: NIL,
            lists: vec![List::EMPTY; WHEEL_SLOTS + 1].into_boxed_slice(),
            occupied: [0; LEVELS],
            due_min: u64::MAX,
            len: 0,
        }
    }

    /// Schedule `value` to fire at `deadline_ms`. A deadline at or before the wheel's current
    /// time fires on the next `advance`. O(1).
    ///
    /// # Panics
    ///
    /// If `2^32 - 1` timers are pending at once, since slab indices are `u32` to keep entries
    /// small.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerId {
        let (index, generation) = if self.free_head != NIL {
            let index = self.free_head;
            let slot = &mut self.entries[index as usize];
            let (generation, next_free) = match *slot {
                Entry::Vacant {
                    generation,
                    next_free,
                } => Some((generation, next_free)),
                Entry::Pending { .. } => None,
            }
            .expect("the free list links only vacant entries");
            self.free_head = next_free;
            *slot = Entry::Pending {
                deadline: deadline_ms,
                prev: NIL,
                next: NIL,
                generation,
                list: 0,
                value,
            };
            (index, generation)
        } else {
            let index = u32::try_from(self.entries.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("a timer wheel holds at most 2^32 - 1 timers (u32 slab indices)");
            self.entries.push(Entry::Pending {
                deadline: deadline_ms,
                prev: NIL,
                next: NIL,
                generation: 0,
                list: 0,
                value,
            });
            (index, 0)
        };
        self.len += 1;
        self.place(index, deadline_ms);
        TimerId { index, generation }
    }

    /// Remove a pending timer and return its value; `None` if it already fired or was
    /// cancelled (generation mismatch). O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.pending_deadline(id)?;
        self.unlink(id.index);
        Some(self.release(id.index).1)
    }

    /// The deadline a pending timer was scheduled for, or `None` if it is not pending.
    pub fn deadline(&self, id: TimerId) -> Option<u64> {
        self.pending_deadline(id)
    }

    /// Move the wheel's time to `now_ms` (never backwards: a smaller value is treated as the
    /// current time) and append every timer whose deadline `<= now_ms` to `fired` as
    /// `(deadline_ms, value)`.
    ///
    /// Order of the appended items: ascending deadline; equal deadlines in insertion order.
    /// Cost: O(levels) plus amortised O(levels) per timer (each cascade moves a timer at least
    /// one level down); empty stretches of time are skipped through the occupancy bitmaps, so
    /// a jump of years costs no more than a jump of a millisecond.
    pub fn advance(&mut self, now_ms: u64, fired: &mut Vec<(u64, T)>) {
        let target = now_ms.max(self.now);

        // Due-list deadlines are all <= the current time < every wheel deadline, so they
        // come first. The list is in insertion order and the sort is stable, which gives
        // equal deadlines in insertion order.
        let start = fired.len();
        let mut index = self.take_list(DUE_LIST);
        while index != NIL {
            let next = *self.links(index).next;
            fired.push(self.release(index));
            index = next;
        }
        fired[start..].sort_by_key(|&(deadline, _)| deadline);
        self.due_min = u64::MAX;

        // Visit occupied slots in time order. Each visit handles at least one timer, firing
        // it or moving it to a lower level.
        while let Some((level, slot)) = self.next_slot() {
            let at = slot_start(self.now, level, slot);
            if at > target {
                break;
            }
            // Moving `now` to the start of the lowest occupied slot keeps every other timer
            // at its correct level: nothing lies between the old `now` and `at`.
            self.now = at;
            let mut index = self.take_list((level * SLOTS_PER_LEVEL + slot) as u16);
            while index != NIL {
                let links = self.links(index);
                let (next, deadline) = (*links.next, links.deadline);
                if deadline <= at {
                    fired.push(self.release(index));
                } else {
                    self.place(index, deadline);
                }
                index = next;
            }
        }
        self.now = target;
    }

    /// A time `t <= ` the earliest pending deadline, or `None` when empty.
    ///
    /// Exact when the earliest timer is in the due list or at level 0; otherwise the start of
    /// the earliest occupied slot, which is a lower bound (finding the exact minimum would
    /// mean scanning the slot). Either way it makes progress: after `advance(t)` something
    /// fired or the next call returns a strictly larger `t`, and a driver sleeping until `t`
    /// wakes at most once per level before the exact deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.lists[DUE_LIST as usize].head != NIL {
            return Some(self.due_min);
        }
        let (level, slot) = self.next_slot()?;
        Some(slot_start(self.now, level, slot))
    }

    /// The wheel's current time in ms: the largest time passed to `new` or `advance`.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The deadline of `id` if it names a pending timer of the right generation.
    fn pending_deadline(&self, id: TimerId) -> Option<u64> {
        match self.entries.get(id.index as usize)? {
            Entry::Pending {
                deadline,
                generation,
                ..
            } if *generation == id.generation => Some(*deadline),
            _ => None,
        }
    }

    /// The lowest occupied slot of the lowest non-empty level: the next event in time.
    fn next_slot(&self) -> Option<(usize, usize)> {
        self.occupied
            .iter()
            .position(|&bits| bits != 0)
            .map(|level| (level, self.occupied[level].trailing_zeros() as usize))
    }

    /// Link fields of an entry known to be pending.
    fn links(&mut self, index: u32) -> Links<'_> {
        self.entries[index as usize]
            .links()
            .expect("only pending entries are linked into lists")
    }

    /// Append a pending (unlinked) entry to the list its deadline belongs in at `self.now`.
    fn place(&mut self, index: u32, deadline: u64) {
        let list = if deadline <= self.now {
            self.due_min = self.due_min.min(deadline);
            DUE_LIST
        } else {
            let level = level_of(deadline ^ self.now);
            let slot = digit(deadline, level);
            self.occupied[level] |= 1 << slot;
            (level * SLOTS_PER_LEVEL + slot) as u16
        };
        let tail = self.lists[list as usize].tail;
        let links = self.links(index);
        *links.prev = tail;
        *links.next = NIL;
        *links.list = list;
        if tail == NIL {
            self.lists[list as usize].head = index;
        } else {
            *self.links(tail).next = index;
        }
        self.lists[list as usize].tail = index;
    }

    /// Remove a pending entry from its list, clearing the occupancy bit if the list empties.
    fn unlink(&mut self, index: u32) {
        let links = self.links(index);
        let (prev, next, list) = (*links.prev, *links.next, *links.list as usize);
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            *self.links(prev).next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            *self.links(next).prev = prev;
        }
        if self.lists[list].head == NIL && list < WHEEL_SLOTS {
            self.occupied[list / SLOTS_PER_LEVEL] &= !(1 << (list % SLOTS_PER_LEVEL));
        }
    }

    /// Detach a whole list and return its first entry; the entries keep their `next` links.
    fn take_list(&mut self, list: u16) -> u32 {
        let list = list as usize;
        let head = mem::replace(&mut self.lists[list], List::EMPTY).head;
        if list < WHEEL_SLOTS {
            self.occupied[list / SLOTS_PER_LEVEL] &= !(1 << (list % SLOTS_PER_LEVEL));
        }
        head
    }

    /// Free an (unlinked or detached) pending entry and return its deadline and value. The
    /// generation bump is what turns outstanding handles to it stale.
    fn release(&mut self, index: u32) -> (u64, T) {
        let vacant = Entry::Vacant {
            generation: 0,
            next_free: self.free_head,
        };
        let slot = &mut self.entries[index as usize];
        let (deadline, generation, value) = match mem::replace(slot, vacant) {
            Entry::Pending {
                deadline,
                generation,
                value,
                ..
            } => Some((deadline, generation, value)),
            Entry::Vacant { .. } => None,
        }
        .expect("release is only called on pending entries");
        *slot = Entry::Vacant {
            generation: generation.wrapping_add(1),
            next_free: self.free_head,
        };
        self.free_head = index;
        self.len -= 1;
        (deadline, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn advance<T>(wheel: &mut TimerWheel<T>, now: u64) -> Vec<(u64, T)> {
        let mut fired = Vec::new();
        wheel.advance(now, &mut fired);
        fired
    }

    #[test]
    fn entry_overhead_is_small() {
        assert_eq!(mem::size_of::<Entry<u64>>(), 32);
        assert_eq!(mem::size_of::<TimerId>(), 8);
    }

    #[test]
    fn fires_at_exact_deadline_not_before() {
        let mut w = TimerWheel::new(1000);
        w.insert(1100, "a");
        assert!(advance(&mut w, 1099).is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(advance(&mut w, 1100), vec![(1100, "a")]);
        assert!(w.is_empty());
        assert_eq!(w.now(), 1100);
    }

    #[test]
    fn every_ms_for_a_while() {
        // Deadlines around level boundaries, advanced one ms at a time.
        let mut w = TimerWheel::new(0);
        for d in 1..10_000u64 {
            w.insert(d, d);
        }
        for t in 1..10_000u64 {
            assert_eq!(advance(&mut w, t), vec![(t, t)]);
        }
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_advance_in_order() {
        let mut w = TimerWheel::new(500);
        w.insert(400, 1);
        w.insert(500, 2);
        w.insert(10, 3);
        w.insert(400, 4);
        w.insert(501, 5);
        assert_eq!(w.next_deadline(), Some(10));
        // Even an advance to an earlier time fires them, at the current time.
        assert_eq!(
            advance(&mut w, 0),
            vec![(10, 3), (400, 1), (400, 4), (500, 2)]
        );
        assert_eq!(w.now(), 500);
        assert_eq!(advance(&mut w, 501), vec![(501, 5)]);
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order_across_cascades() {
        let mut w = TimerWheel::new(0);
        w.insert(100_000, 'a');
        w.insert(5_000, 'x');
        assert_eq!(advance(&mut w, 70_000), vec![(5_000, 'x')]);
        w.insert(100_000, 'b');
        assert!(advance(&mut w, 99_999).is_empty());
        w.insert(100_000, 'c');
        let fired = advance(&mut w, 100_000);
        assert_eq!(fired, vec![(100_000, 'a'), (100_000, 'b'), (100_000, 'c')]);
    }

    #[test]
    fn cancel_before_fire() {
        let mut w = TimerWheel::new(0);
        let a = w.insert(50, "a");
        let b = w.insert(50, "b");
        assert_eq!(w.deadline(a), Some(50));
        assert_eq!(w.cancel(a), Some("a"));
        assert_eq!(w.deadline(a), None);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.len(), 1);
        assert_eq!(advance(&mut w, 1_000), vec![(50, "b")]);
        assert_eq!(w.cancel(b), None);
    }

    #[test]
    fn cancel_after_fire_returns_none() {
        let mut w = TimerWheel::new(0);
        let a = w.insert(5, 1);
        assert_eq!(advance(&mut w, 5).len(), 1);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.deadline(a), None);
    }

    #[test]
    fn stale_id_after_slot_reuse_is_ignored() {
        let mut w = TimerWheel::new(0);
        let old = w.insert(10, "old");
        assert_eq!(w.cancel(old), Some("old"));
        let new = w.insert(20, "new");
        assert_eq!(old.index, new.index, "the slot is reused");
        assert_ne!(old, new);
        assert_eq!(w.cancel(old), None);
        assert_eq!(w.deadline(old), None);
        assert_eq!(w.deadline(new), Some(20));
        assert_eq!(advance(&mut w, 20), vec![(20, "new")]);
        // Reused again after firing.
        let newer = w.insert(30, "newer");
        assert_eq!(w.cancel(new), None);
        assert_eq!(w.cancel(newer), Some("newer"));
    }

    #[test]
    fn unknown_index_is_ignored() {
        let mut w: TimerWheel<()> = TimerWheel::new(0);
        let id = TimerId {
            index: 7,
            generation: 0,
        };
        assert_eq!(w.cancel(id), None);
        assert_eq!(w.deadline(id), None);
    }

    #[test]
    fn far_future_deadlines_survive_cascades() {
        let start = 123_456_789;
        let mut w = TimerWheel::new(start);
        let far = [
            start + (1 << 36) + 17,
            start + (1 << 40) + 3,
            u64::MAX / 2,
            u64::MAX / 2 + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        for (i, &d) in far.iter().enumerate() {
            w.insert(d, i);
        }
        // Walk through them with steps that land just before and on each deadline.
        for (i, &d) in far.iter().enumerate() {
            assert!(advance(&mut w, d - 1).is_empty(), "early fire before {d}");
            assert_eq!(advance(&mut w, d), vec![(d, i)]);
        }
        assert!(w.is_empty());
        // A deadline of u64::MAX at now == u64::MAX is due.
        w.insert(u64::MAX, 99);
        assert_eq!(advance(&mut w, u64::MAX), vec![(u64::MAX, 99)]);
    }

    #[test]
    fn large_jump_fires_everything_in_order() {
        let mut w = TimerWheel::new(0);
        let deadlines = [u64::MAX / 2, 1 << 37, 3, 64, 4096, 63, 1 << 36, 262_144, 3];
        for (i, &d) in deadlines.iter().enumerate() {
            w.insert(d, i);
        }
        let mut expected: Vec<(u64, usize)> =
            deadlines.iter().enumerate().map(|(i, &d)| (d, i)).collect();
        expected.sort();
        assert_eq!(advance(&mut w, u64::MAX), expected);
        assert_eq!(w.now(), u64::MAX);
    }

    #[test]
    fn next_deadline_is_a_bound_and_makes_progress() {
        let mut w = TimerWheel::new(10);
        assert_eq!(w.next_deadline(), None);
        let deadlines = [10_000, 10_001, 70, 1 << 36, 5_000_000, 11];
        for &d in &deadlines {
            w.insert(d, d);
        }
        assert_eq!(w.next_deadline(), Some(11), "exact at level 0");
        let mut all = Vec::new();
        let mut last = None;
        while let Some(t) = w.next_deadline() {
            let before = w.len();
            assert!(
                t <= *deadlines
                    .iter()
                    .filter(|&&d| d > w.now())
                    .min()
                    .unwrap_or(&u64::MAX)
            );
            let fired = advance(&mut w, t);
            assert!(!fired.is_empty() || w.next_deadline() > Some(t));
            assert!(last < Some(t) || !fired.is_empty());
            last = Some(t);
            assert_eq!(w.len(), before - fired.len());
            all.extend(fired);
        }
        let mut expected: Vec<(u64, u64)> = deadlines.iter().map(|&d| (d, d)).collect();
        expected.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn len_and_is_empty() {
        let mut w = TimerWheel::new(0);
        assert!(w.is_empty());
        assert_eq!(w.len(), 0);
        let a = w.insert(5, ());
        w.insert(1 << 40, ());
        w.insert(0, ());
        assert_eq!(w.len(), 3);
        assert!(!w.is_empty());
        w.cancel(a);
        assert_eq!(w.len(), 2);
        assert_eq!(advance(&mut w, 10).len(), 1);
        assert_eq!(w.len(), 1);
        assert_eq!(advance(&mut w, u64::MAX).len(), 1);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn debug_does_not_need_debug_values() {
        struct Opaque;
        let mut w = TimerWheel::new(3);
        w.insert(9, Opaque);
        let text = format!("{w:?}");
        assert!(text.contains("now: 3") && text.contains("len: 1"), "{text}");
    }

    /// How a test picks a deadline relative to the wheel's time.
    #[derive(Clone, Debug)]
    enum When {
        After(u64),
        Before(u64),
        At(u64),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(When),
        Cancel(usize),
        Advance(u64),
        AdvanceBack(u64),
    }

    fn offset() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..130,
            3 => 0u64..300_000,
            2 => 0u64..(1 << 30),
            1 => (1u64 << 35)..(1 << 42),
            1 => Just(u64::MAX / 2),
            1 => any::<u64>(),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => offset().prop_map(|o| Op::Insert(When::After(o))),
            1 => (0u64..200).prop_map(|o| Op::Insert(When::Before(o))),
            1 => prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
                .prop_map(|d| Op::Insert(When::At(d))),
            3 => any::<usize>().prop_map(Op::Cancel),
            4 => prop_oneof![
                3 => 0u64..70,
                2 => 0u64..5_000,
                2 => 0u64..400_000,
                1 => 0u64..(1 << 32),
                1 => (1u64 << 35)..(1 << 43),
                1 => Just(u64::MAX / 4),
            ]
            .prop_map(Op::Advance),
            1 => (0u64..100).prop_map(Op::AdvanceBack),
        ]
    }

    /// The trivially correct reference: pending timers ordered by (deadline, insertion seq).
    struct Model {
        now: u64,
        pending: BTreeMap<(u64, u64), u64>,
    }

    impl Model {
        fn fire(&mut self, now: u64) -> Vec<(u64, u64)> {
            self.now = self.now.max(now);
            let later = self.pending.split_off(&(self.now.saturating_add(1), 0));
            let due = mem::replace(&mut self.pending, later);
            if self.now == u64::MAX {
                // split_off at (MAX, 0) would have kept deadline-MAX timers; all are due.
                let all = mem::take(&mut self.pending);
                return due
                    .into_iter()
                    .chain(all)
                    .map(|((d, _), v)| (d, v))
                    .collect();
            }
            due.into_iter().map(|((d, _), v)| (d, v)).collect()
        }
    }

    fn check(wheel: &TimerWheel<u64>, model: &Model) -> Result<(), TestCaseError> {
        prop_assert_eq!(wheel.len(), model.pending.len());
        prop_assert_eq!(wheel.is_empty(), model.pending.is_empty());
        prop_assert_eq!(wheel.now(), model.now);
        match model.pending.keys().next() {
            None => prop_assert_eq!(wheel.next_deadline(), None),
            Some(&(earliest, _)) => {
                let t = wheel.next_deadline();
                prop_assert!(t.is_some_and(|t| t <= earliest), "{t:?} > {earliest}");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_reference_model(
            start in prop_oneof![0u64..1_000_000, any::<u64>()],
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut wheel = TimerWheel::new(start);
            let mut model = Model { now: start, pending: BTreeMap::new() };
            let mut ids: Vec<(TimerId, u64, u64)> = Vec::new();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Insert(when) => {
                        let deadline = match when {
                            When::After(o) => model.now.saturating_add(o),
                            When::Before(o) => model.now.saturating_sub(o),
                            When::At(d) => d,
                        };
                        let id = wheel.insert(deadline, seq);
                        model.pending.insert((deadline, seq), seq);
                        ids.push((id, deadline, seq));
                        seq += 1;
                    }
                    Op::Cancel(pick) => {
                        if ids.is_empty() {
                            continue;
                        }
                        let (id, deadline, s) = ids[pick % ids.len()];
                        let expected = model.pending.remove(&(deadline, s));
                        prop_assert_eq!(wheel.deadline(id), expected.map(|_| deadline));
                        prop_assert_eq!(wheel.cancel(id), expected);
                        prop_assert_eq!(wheel.deadline(id), None);
                    }
                    Op::Advance(by) | Op::AdvanceBack(by) => {
                        let to = if matches!(op, Op::Advance(_)) {
                            model.now.saturating_add(by)
                        } else {
                            model.now.saturating_sub(by)
                        };
                        let mut fired = vec![(7, 7)];
                        wheel.advance(to, &mut fired);
                        let mut expected = vec![(7, 7)];
                        expected.extend(model.fire(to));
                        prop_assert_eq!(fired, expected);
                    }
                }
                check(&wheel, &model)?;
            }

            // Drain by following next_deadline, checking progress at every step.
            let mut last: Option<u64> = None;
            while let Some(t) = wheel.next_deadline() {
                let mut fired = Vec::new();
                wheel.advance(t, &mut fired);
                let expected = model.fire(t);
                prop_assert!(!fired.is_empty() || last < Some(t));
                prop_assert!(!fired.is_empty() || !matches!(wheel.next_deadline(), Some(n) if n <= t));
                prop_assert_eq!(fired, expected);
                check(&wheel, &model)?;
                last = Some(t);
            }
            prop_assert!(model.pending.is_empty());
        }
    }
}
