//! A connection-pool semaphore.
//!
//! A database allows 4 connections for this service, whatever the number of processes.
//! Twelve workers share the limit through a semaphore of 4 permits: each takes one
//! permit while it holds a database connection. A batch job that needs 2 connections at
//! once takes 2 permits. The example checks that no more than 4 are ever in use.
//!
//! Run a server (`turnstile serve`), then:
//! `cargo run -p turnstile-client --example pool_semaphore [127.0.0.1:7379]`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use turnstile_client::Client;

const LIMIT: u32 = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7379".into());
    let in_use = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for w in 0..12u32 {
        let (addr, in_use, peak) = (addr.clone(), in_use.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(addr).await?;
            let permits = if w == 0 { 2 } else { 1 };
            for _ in 0..3 {
                let held = client
                    .lock("db/orders/pool")
                    .semaphore(LIMIT, permits)
                    .ttl(Duration::from_secs(10))
                    .wait(Duration::from_secs(10))
                    .acquire()
                    .await?;
                let now = in_use.fetch_add(permits, Ordering::SeqCst) + permits;
                peak.fetch_max(now, Ordering::SeqCst);
                anyhow::ensure!(now <= LIMIT, "{now} connections in use");
                tokio::time::sleep(Duration::from_millis(15)).await; // the query
                in_use.fetch_sub(permits, Ordering::SeqCst);
                held.release().await?;
            }
            client.close().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "12 workers shared {LIMIT} connections; at most {} were in use at once",
        peak.load(Ordering::SeqCst)
    );
    Ok(())
}
