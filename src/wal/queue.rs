//! The writer's op queue: a deque under a mutex and a condition variable.
//!
//! Why not crossbeam's channel: its blocking receive spins and then calls `sched_yield`
//! a few times before it parks. On a core shared with a busy process each of those yields
//! can hand the core away for a whole time slice, and the writer is on every reply's
//! path: a cluster leader sharing its core with a CPU hog dropped to a quarter of its
//! throughput, with about 3,000 `sched_yield`s a second from this thread. Here the
//! writer parks at once (a futex wait) and a sender wakes it; a batch of ops still costs
//! one wake-up, since the writer drains everything queued when it wakes.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(super) use crossbeam::channel::{RecvTimeoutError, SendError, TryRecvError};

struct State<T> {
    items: VecDeque<T>,
    sender_alive: bool,
    receiver_alive: bool,
}

struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Queue<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves only a deque behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side (one: the WAL handle).
pub(super) struct Sender<T> {
    q: Arc<Queue<T>>,
}

/// The receiving side (the writer thread).
pub(super) struct Receiver<T> {
    q: Arc<Queue<T>>,
}

/// A queue with one sender and one receiver.
pub(super) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let q = Arc::new(Queue {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
        }),
        ready: Condvar::new(),
    });
    (Sender { q: q.clone() }, Receiver { q })
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sender")
    }
}

impl<T> Sender<T> {
    /// Queues `v`; gives it back if the receiver is gone.
    pub(super) fn send(&self, v: T) -> Result<(), SendError<T>> {
        let mut st = self.q.lock();
        if !st.receiver_alive {
            return Err(SendError(v));
        }
        st.items.push_back(v);
        let was_empty = st.items.len() == 1;
        drop(st);
        if was_empty {
            self.q.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.q.lock().sender_alive = false;
        self.q.ready.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; None once the queue is empty and the sender gone.
    pub(super) fn recv(&self) -> Option<T> {
        let mut st = self.q.lock();
        loop {
            if let Some(v) = st.items.pop_front() {
                return Some(v);
            }
            if !st.sender_alive {
                return None;
            }
            st = self.q.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The next item if one is queued.
    pub(super) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut st = self.q.lock();
        match st.items.pop_front() {
            Some(v) => Ok(v),
            None if st.sender_alive => Err(TryRecvError::Empty),
            None => Err(TryRecvError::Disconnected),
        }
    }

    /// The next item, waiting at most `timeout`.
    pub(super) fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.q.lock();
        loop {
            if let Some(v) = st.items.pop_front() {
                return Ok(v);
            }
            if !st.sender_alive {
                return Err(RecvTimeoutError::Disconnected);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            st = self
                .q
                .ready
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Items still queued are dropped with the queue (their replies complete with
        // the writer's reason, see `Reply`'s `Drop`).
        let items = {
            let mut st = self.q.lock();
            st.receiver_alive = false;
            std::mem::take(&mut st.items)
        };
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_wakeups_and_disconnects() {
        let (tx, rx) = unbounded::<u32>();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(v) = rx.recv() {
                got.push(v);
            }
            got
        });
        for i in 0..1000 {
            tx.send(i).expect("receiver alive");
        }
        drop(tx);
        assert_eq!(t.join().expect("joins"), (0..1000).collect::<Vec<_>>());

        let (tx, rx) = unbounded::<u32>();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.send(7).expect("alive");
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)), Ok(7));
        drop(rx);
        assert!(
            tx.send(8).is_err(),
            "a send after the receiver is gone comes back"
        );
    }
}
