//! The open-loop schedule: requests at a fixed total rate, latency measured from when each
//! request was due, not from when it was sent, so that a slow server cannot hide its
//! stalls by slowing the load down (no coordinated omission).

use std::time::Duration;

use tokio::time::Instant;

/// When the ops of one connection are due.
///
/// `rate` ops/s in total are spread over `connections` connections by numbering the slots
/// of the whole run: slot `s` is due at `s / rate` seconds after the start, and
/// connection `c` takes slots `c, c + C, c + 2C, ...`. Every connection so runs at
/// `rate / C`, the connections are staggered evenly, and there is no drift from rounding.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    rate: f64,
    connections: u64,
    conn: u64,
}

impl Schedule {
    pub fn new(rate: f64, connections: usize, conn: usize) -> Schedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        assert!(
            conn < connections,
            "connection index within the connections"
        );
        Schedule {
            rate,
            connections: connections as u64,
            conn: conn as u64,
        }
    }

    /// How long after the start this connection's `i`-th op (from 0) is due.
    pub fn due(&self, i: u64) -> Duration {
        let slot = i * self.connections + self.conn;
        Duration::from_nanos((slot as f64 * 1e9 / self.rate).round() as u64)
    }
}

/// Waits until each op is due, precisely and without spinning.
///
/// tokio's timer ticks in milliseconds, which would add up to a millisecond to every
/// latency of an open-loop run. On Linux a pacer arms its own timerfd (a high-resolution
/// timer, no timer slack) and awaits it through the reactor, so the worker sleeps in
/// epoll until the very microsecond; elsewhere, or if no timerfd can be had, it sleeps to
/// a millisecond before and yields until the moment comes (spinning on loadgen's core).
pub struct Pacer {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            #[cfg(target_os = "linux")]
            timer: timerfd::create().ok(),
        }
    }

    /// Returns at `due`, or at once if `due` has passed (the op is late, and its latency,
    /// counted from `due`, will show it).
    pub async fn until(&mut self, due: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(timer) = &self.timer {
            if timerfd::wait(timer, due).await.is_ok() {
                return;
            }
        }
        spin_until(due).await;
    }
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    use tokio::io::unix::AsyncFd;
    use tokio::time::Instant;

    pub fn create() -> io::Result<AsyncFd<OwnedFd>> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the AsyncFd owns the OwnedFd: the descriptor is open, and stays open and
        // the same until the AsyncFd is dropped, which is all `register` asks.
        unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
    }

    pub async fn wait(timer: &AsyncFd<OwnedFd>, due: Instant) -> io::Result<()> {
        let now = Instant::now();
        if due <= now {
            return Ok(());
        }
        // Relative to now: tokio's Instant is CLOCK_MONOTONIC, as the timer's clock is.
        let value = Timespec::try_from(due - now).map_err(|_| io::ErrorKind::InvalidInput)?;
        timerfd_settime(
            timer.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: Timespec::default(),
                it_value: value,
            },
        )?;
        loop {
            let mut ready = timer.readable().await?;
            let mut expirations = [0u8; 8];
            match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut expirations)?)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Sleeps until a millisecond before `due`, then yields until it has come.
pub async fn spin_until(due: Instant) {
    const COARSE: Duration = Duration::from_micros(1500);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > COARSE {
            tokio::time::sleep_until(due - Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_holds_exactly_rate_slots() {
        let (rate, conns) = (1000.0, 7);
        let mut in_first_second = 0;
        for c in 0..conns {
            let s = Schedule::new(rate, conns, c);
            in_first_second += (0..)
                .take_while(|&i| s.due(i) < Duration::from_secs(1))
                .count();
        }
        assert_eq!(in_first_second, 1000);
    }

    #[test]
    fn connections_are_staggered_and_run_at_rate_over_c() {
        let s0 = Schedule::new(100.0, 4, 0);
        let s1 = Schedule::new(100.0, 4, 1);
        let s3 = Schedule::new(100.0, 4, 3);
        assert_eq!(s0.due(0), Duration::ZERO);
        assert_eq!(s1.due(0), Duration::from_millis(10));
        assert_eq!(s3.due(0), Duration::from_millis(30));
        assert_eq!(s0.due(1), Duration::from_millis(40));
        for i in 0..100 {
            assert_eq!(s1.due(i + 1) - s1.due(i), Duration::from_millis(40));
        }
    }

    #[test]
    fn no_drift_at_rates_that_do_not_divide_a_second() {
        let s = Schedule::new(3.0, 1, 0);
        assert_eq!(s.due(3), Duration::from_secs(1));
        assert_eq!(s.due(3_000_000), Duration::from_secs(1_000_000));
        assert_eq!(s.due(1), Duration::from_nanos(333_333_333));
    }

    #[tokio::test]
    async fn pacing_never_returns_early() {
        // Real time (a paused clock never advances while the spin yields): only the lower
        // bound is asserted, which holds however loaded the machine is.
        let start = Instant::now();
        let mut pacer = Pacer::new();
        #[cfg(target_os = "linux")]
        assert!(pacer.timer.is_some(), "a timerfd can be had");
        for us in [0, 200, 1_300, 3_700] {
            let due = start + Duration::from_micros(us);
            pacer.until(due).await;
            assert!(Instant::now() >= due);
            let due = Instant::now() + Duration::from_micros(us);
            spin_until(due).await;
            assert!(Instant::now() >= due);
        }
        pacer.until(start).await;
    }
}
