//! A read-write cache refresh.
//!
//! Readers take the shared side of `cache/prices` to read the cached value; a refresher
//! takes the exclusive side to rebuild it. Readers never see a half-built cache, many
//! readers read at once, and because the queue is fair a refresher waiting behind readers
//! is not starved by new ones. The refresher also listens for "someone is waiting" and
//! keeps its exclusive hold as short as it can.
//!
//! Run a server (`turnstile serve`), then:
//! `cargo run -p turnstile-client --example cache_refresh [127.0.0.1:7379]`

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;
use turnstile_client::Client;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7379".into());
    // The "cache" lives in this process for the example; in real life it is shared
    // storage that several processes read and one rebuilds.
    let cache = Arc::new(RwLock::new(vec![100u64, 200, 300]));

    let mut tasks = Vec::new();
    for r in 0..4 {
        let (addr, cache) = (addr.clone(), cache.clone());
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(addr).await?;
            for round in 0..5 {
                let read = client
                    .lock("cache/prices")
                    .shared()
                    .wait(Duration::from_secs(5))
                    .acquire()
                    .await?;
                let prices = cache.read().await.clone();
                let consistent = prices.windows(2).all(|w| w[1] == w[0] + 100);
                println!("reader {r} round {round}: {prices:?} (consistent: {consistent})");
                anyhow::ensure!(consistent, "a reader saw a half-built cache");
                tokio::time::sleep(Duration::from_millis(20)).await;
                read.release().await?;
            }
            client.close().await?;
            anyhow::Ok(())
        }));
    }
    let refresher = {
        let (addr, cache) = (addr.clone(), cache.clone());
        tokio::spawn(async move {
            let client = Client::connect(addr).await?;
            for gen in 1..=3u64 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let write = client
                    .lock("cache/prices")
                    .ttl(Duration::from_secs(5))
                    .wait(Duration::from_secs(5))
                    .acquire()
                    .await?;
                // Rebuild step by step: readers are kept out meanwhile.
                let mut c = cache.write().await;
                for (i, v) in c.iter_mut().enumerate() {
                    *v = gen * 1000 + 100 * (i as u64 + 1);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                drop(c);
                println!(
                    "refresher: generation {gen} written (token {}, readers waiting: {})",
                    write.token(),
                    write.has_waiters()
                );
                write.release().await?;
            }
            client.close().await?;
            anyhow::Ok(())
        })
    };
    for t in tasks {
        t.await??;
    }
    refresher.await??;
    println!("done: every read saw a whole cache");
    Ok(())
}
