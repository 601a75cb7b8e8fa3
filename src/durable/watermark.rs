//! The durability watermark: the highest log index known to be on disk (per the fsync
//! mode), and a way for connection tasks to wait until it passes theirs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tokio::sync::Notify;

/// The log can no longer make anything durable (a failed write or fsync, a full disk).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the write-ahead log failed: {0}")]
pub struct LogFailed(pub String);

/// See the module docs.
#[derive(Debug, Default)]
pub struct Watermark {
    index: AtomicU64,
    notify: Notify,
    failed: OnceLock<String>,
    /// Woken only on failure, so the task watching for one is not woken by every batch.
    on_failure: Notify,
}

impl Watermark {
    /// A watermark at `index` (everything recovered counts as durable).
    pub fn new(index: u64) -> Self {
        Watermark {
            index: AtomicU64::new(index),
            ..Default::default()
        }
    }

    /// The highest durable index.
    pub fn get(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    /// Records `upto` durable and wakes the waiters.
    pub fn complete(&self, upto: u64) {
        self.index.fetch_max(upto, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Records that the log failed; every waiter (now and later) gets the error.
    pub fn fail(&self, why: String) {
        let _ = self.failed.set(why);
        self.notify.notify_waiters();
        self.on_failure.notify_waiters();
    }

    /// The failure, if the log failed.
    pub fn failure(&self) -> Option<LogFailed> {
        self.failed.get().map(|s| LogFailed(s.clone()))
    }

    /// Waits until `index` is durable.
    pub async fn wait(&self, index: u64) -> Result<(), LogFailed> {
        loop {
            // Registered before the check, so a completion in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.get() >= index {
                return Ok(());
            }
            if let Some(e) = self.failure() {
                return Err(e);
            }
            notified.await;
        }
    }

    /// Waits until the log fails (for the task that stops the server then).
    pub async fn failed(&self) -> LogFailed {
        loop {
            let notified = self.on_failure.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.failure() {
                return e;
            }
            notified.await;
        }
    }
}
