//! Leader election with [`turnstile_client::Election`]: several candidates campaign for
//! one key with their address as the value; the elected one leads for a while, then
//! resigns (or, for one of them, ends its session without resigning, as a process that
//! exits does; one that crashes loses the office when its session times out), and the
//! next candidate in line takes over. An observer follows who leads without polling.
//!
//! ```text
//! cargo run --example election -- 127.0.0.1:7379 [candidates]
//! ```

use std::time::Duration;

use turnstile_client::{Client, Election, Leader};

/// Runs one candidate: campaign with its address, lead for `term`, resign. With `quit`
/// it ends its session instead of resigning: its leadership ends with it.
async fn candidate(addr: String, name: String, term: Duration, quit: bool) -> anyhow::Result<()> {
    let client = Client::builder()
        .addrs(addr)
        .name(name.clone())
        .session_timeout(Duration::from_millis(500))
        .connect()
        .await?;
    let election = Election::new(&client, "election/demo").ttl(Duration::from_secs(2));
    let leadership = election.campaign(format!("{name}.example:7000")).await?;
    println!("{name}: elected (token {})", leadership.token());
    tokio::select! {
        _ = tokio::time::sleep(term) => {}
        lost = leadership.lost() => {
            println!("{name}: lost the leadership ({lost:?})");
            return Ok(());
        }
    }
    if quit {
        println!("{name}: ending its session without resigning");
        client.close().await?;
        drop(leadership);
        return Ok(());
    }
    leadership.resign().await?;
    println!("{name}: resigned");
    Ok(())
}

/// Prints every change of leader until `terms` leaders were seen, then returns them.
async fn observe(addr: String, terms: usize) -> anyhow::Result<Vec<Leader>> {
    let client = Client::connect(addr).await?;
    let election = Election::new(&client, "election/demo");
    let mut observer = election.observe().await?;
    let mut leaders: Vec<Leader> = Vec::new();
    while leaders.len() < terms {
        match observer.next().await {
            Some(Some(leader)) => {
                println!(
                    "observer: leader is session {} at {} (token {})",
                    leader.session,
                    String::from_utf8_lossy(&leader.value),
                    leader.token
                );
                if leaders.last().is_none_or(|l| l.token != leader.token) {
                    leaders.push(leader);
                }
            }
            Some(None) => println!("observer: no leader"),
            None => break,
        }
    }
    Ok(leaders)
}

/// Runs `n` candidates and an observer against the server at `addr`; returns the leaders
/// the observer saw, in order.
pub async fn run(addr: &str, n: usize) -> anyhow::Result<Vec<Leader>> {
    let watcher = tokio::spawn(observe(addr.to_string(), n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let name = format!("node-{i}");
        // The second one elected quits instead of resigning.
        tasks.push(tokio::spawn(candidate(
            addr.to_string(),
            name,
            Duration::from_millis(300),
            i == 1,
        )));
        // Campaign in order, so that the queue order is the name order.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.await??;
    }
    watcher.await?
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7379".to_string());
    let n = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    let leaders = run(&addr, n).await?;
    println!(
        "{} terms, tokens {:?}",
        leaders.len(),
        leaders.iter().map(|l| l.token).collect::<Vec<_>>()
    );
    Ok(())
}
