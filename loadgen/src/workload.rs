//! What the connections do: which key, which mode, how long to hold. The same for every
//! target.

use std::time::Duration;

use crate::target::{LockKind, Mode};

/// Keys each connection cycles through in the uncontended workload.
pub const OWN_KEYS_PER_CONNECTION: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// Every connection acquires and releases its own keys: nobody ever waits.
    Uncontended,
    /// All connections on `keys` hot keys (picked at random per op), exclusive.
    Contended {
        keys: u32,
        hold: Duration,
        wait: Option<Duration>,
    },
    /// Read-write locks (SHARED with probability `read_ratio`, else EXCLUSIVE) on `keys`
    /// keys, and with probability `semaphore_ratio` a semaphore of `limit` on one of
    /// `keys` semaphore keys, taking 1..=`max_permits` permits at random.
    Mixed {
        keys: u32,
        read_ratio: f64,
        semaphore_ratio: f64,
        limit: u32,
        max_permits: u32,
        hold: Duration,
        wait: Option<Duration>,
    },
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Uncontended => "uncontended",
            Workload::Contended { .. } => "contended",
            Workload::Mixed { .. } => "mixed",
        }
    }

    /// The kinds of lock the workload takes.
    pub fn kinds(&self) -> Vec<LockKind> {
        match *self {
            Workload::Uncontended | Workload::Contended { .. } => vec![LockKind::Exclusive],
            Workload::Mixed {
                read_ratio,
                semaphore_ratio,
                ..
            } => {
                let mut kinds = Vec::new();
                if semaphore_ratio < 1.0 {
                    if read_ratio < 1.0 {
                        kinds.push(LockKind::Exclusive);
                    }
                    if read_ratio > 0.0 {
                        kinds.push(LockKind::Shared);
                    }
                }
                if semaphore_ratio > 0.0 {
                    kinds.push(LockKind::Semaphore);
                }
                kinds
            }
        }
    }

    pub fn hold(&self) -> Duration {
        match *self {
            Workload::Uncontended => Duration::ZERO,
            Workload::Contended { hold, .. } | Workload::Mixed { hold, .. } => hold,
        }
    }

    pub fn wait(&self) -> Option<Duration> {
        match *self {
            Workload::Uncontended => None,
            Workload::Contended { wait, .. } | Workload::Mixed { wait, .. } => wait,
        }
    }

    pub fn keys(&self) -> Option<u32> {
        match *self {
            Workload::Uncontended => None,
            Workload::Contended { keys, .. } | Workload::Mixed { keys, .. } => Some(keys),
        }
    }

    /// Writes the key of op number `i` of connection `conn` into `key` and returns the mode.
    pub fn next_op(
        &self,
        run: &str,
        conn: usize,
        i: u64,
        rng: &mut fastrand::Rng,
        key: &mut Vec<u8>,
    ) -> Mode {
        key.clear();
        key.extend_from_slice(b"lg:");
        key.extend_from_slice(run.as_bytes());
        let mut num = itoa::Buffer::new();
        match *self {
            Workload::Uncontended => {
                key.extend_from_slice(b":u:");
                key.extend_from_slice(num.format(conn).as_bytes());
                key.push(b':');
                key.extend_from_slice(num.format(i % OWN_KEYS_PER_CONNECTION).as_bytes());
                Mode::Exclusive
            }
            Workload::Contended { keys, .. } => {
                key.extend_from_slice(b":c:");
                key.extend_from_slice(num.format(rng.u32(0..keys.max(1))).as_bytes());
                Mode::Exclusive
            }
            Workload::Mixed {
                keys,
                read_ratio,
                semaphore_ratio,
                limit,
                max_permits,
                ..
            } => {
                let k = rng.u32(0..keys.max(1));
                if semaphore_ratio > 0.0 && rng.f64() < semaphore_ratio {
                    key.extend_from_slice(b":s:");
                    key.extend_from_slice(num.format(k).as_bytes());
                    let limit = limit.max(1);
                    Mode::Semaphore {
                        limit,
                        permits: rng.u32(1..=max_permits.clamp(1, limit)),
                    }
                } else {
                    key.extend_from_slice(b":rw:");
                    key.extend_from_slice(num.format(k).as_bytes());
                    if rng.f64() < read_ratio {
                        Mode::Shared
                    } else {
                        Mode::Exclusive
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_modes() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut key = Vec::new();
        let m = Workload::Uncontended.next_op("r1", 3, 1030, &mut rng, &mut key);
        assert_eq!((m, key.as_slice()), (Mode::Exclusive, &b"lg:r1:u:3:6"[..]));

        let contended = Workload::Contended {
            keys: 1,
            hold: Duration::ZERO,
            wait: None,
        };
        contended.next_op("r1", 9, 0, &mut rng, &mut key);
        assert_eq!(key, b"lg:r1:c:0");

        let mixed = Workload::Mixed {
            keys: 4,
            read_ratio: 0.75,
            semaphore_ratio: 0.5,
            limit: 3,
            max_permits: 5,
            hold: Duration::ZERO,
            wait: None,
        };
        let (mut sem, mut shared, mut excl) = (0, 0, 0);
        for i in 0..10_000 {
            match mixed.next_op("r", 0, i, &mut rng, &mut key) {
                Mode::Semaphore { limit, permits } => {
                    assert_eq!(limit, 3);
                    assert!((1..=3).contains(&permits));
                    assert!(key.starts_with(b"lg:r:s:"));
                    sem += 1;
                }
                Mode::Shared => {
                    assert!(key.starts_with(b"lg:r:rw:"));
                    shared += 1
                }
                Mode::Exclusive => excl += 1,
            }
        }
        assert!((4_500..5_500).contains(&sem), "{sem}");
        assert!(shared > 2 * excl, "{shared} {excl}");
        assert_eq!(
            mixed.kinds(),
            vec![LockKind::Exclusive, LockKind::Shared, LockKind::Semaphore]
        );
    }
}
