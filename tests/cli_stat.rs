//! `turnstile cli --stat` (the real binary) against a real server: a header, then one
//! line per interval with keys, holds and waiters as INFO has them.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_prints_a_live_line_per_interval() {
    let server = Server::start().await;
    let mut a = server.redis().await;
    acquire(&mut a, "s1", &["TTL", "60000"]).await;
    acquire(&mut a, "s2", &["TTL", "60000"]).await;
    let port = server.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(["cli", "-p", &port, "--stat", "-i", "0.2", "--count", "3"])
            .env_remove("TURNSTILE_PASS")
            .output()
            .expect("run turnstile cli --stat")
    });
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("--stat --count 3 ends by itself")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "two header lines and three samples:\n{text}"
    );
    assert!(lines[1].starts_with("keys"), "{text}");
    for line in &lines[2..] {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &cols[..3],
            ["2", "2", "0"],
            "keys holds waiters in {line:?}"
        );
    }
    // Rates need two samples: the first line has none.
    assert!(lines[2].contains(" - "), "{text}");
    drop(a);
}
