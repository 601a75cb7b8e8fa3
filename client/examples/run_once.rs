//! A job that must run once across many workers.
//!
//! Ten workers (each its own client and session, as ten processes would be) wake up for
//! the nightly report at about the same time. Each tries the lock without waiting; the one
//! that gets it checks that the report is not written yet, runs the job, stamping what it
//! writes with the fencing token, and the others skip (a late worker that gets the lock
//! after the job is done sees the report and skips too). The store refuses a write whose token is older than the newest it has seen, so
//! even a worker that lost its lock mid-job (a long GC pause, a network split) cannot
//! overwrite the work of the one that took over.
//!
//! Run a server (`turnstile serve`), then:
//! `cargo run -p turnstile-client --example run_once [127.0.0.1:7379]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use turnstile_client::Client;

/// A store that accepts a write only with a token at least as new as any it has seen.
#[derive(Default)]
struct FencedStore {
    newest: AtomicU64,
    written: std::sync::atomic::AtomicBool,
}

impl FencedStore {
    fn has_report(&self) -> bool {
        self.written.load(Ordering::SeqCst)
    }

    fn write(&self, token: u64, what: &str) -> bool {
        let prev = self.newest.fetch_max(token, Ordering::SeqCst);
        if token < prev {
            println!("  store: refused '{what}' with stale token {token} (newest {prev})");
            return false;
        }
        println!("  store: wrote '{what}' with token {token}");
        self.written.store(true, Ordering::SeqCst);
        true
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7379".into());
    let store = Arc::new(FencedStore::default());
    let mut workers = Vec::new();
    for id in 0..10 {
        let addr = addr.clone();
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let client = Client::builder()
                .addrs(addr)
                .name(format!("worker-{id}"))
                .connect()
                .await?;
            let job = client
                .lock("jobs/nightly-report")
                .ttl(Duration::from_secs(5))
                .try_acquire()
                .await?;
            let ran = match job {
                None => false,
                Some(guard) if store.has_report() => {
                    guard.release().await?;
                    false
                }
                Some(guard) => {
                    println!("worker {id} runs the job (token {})", guard.token());
                    // The work, abandoned if the lock is lost meanwhile.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            store.write(guard.token(), "nightly report");
                        }
                        lost = guard.lost() => println!("worker {id} lost the lock: {lost:?}"),
                    }
                    guard.release().await?;
                    true
                }
            };
            client.close().await?;
            anyhow::Ok(ran)
        }));
    }
    let mut runs = 0;
    for w in workers {
        runs += usize::from(w.await??);
    }
    println!("the job ran {runs} time(s) across 10 workers");
    anyhow::ensure!(runs == 1, "expected exactly one run");
    Ok(())
}
