//! `turnstile audit` shows DEADLOCK refusals: a real server on a real data directory
//! refuses a request that would close a cycle, and the audit (library and binary) prints
//! the refusal with its time, session, key and cycle, by key and by session.

mod common;

use common::*;
use turnstile::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_prints_deadlock_refusals_with_the_cycle() {
    let dir = std::env::temp_dir().join(format!("turnstile-audit-dl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::start_with(Config {
        data_dir: dir.clone(),
        in_memory: false,
        ..Config::default()
    })
    .await;
    let mut a = server.raw().await;
    let mut b = server.raw().await;
    let mut look = server.redis().await;
    let Reply::Int(ida) = a.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID")
    };
    let Reply::Int(idb) = b.cmd(&["CLIENT", "ID"]).await else {
        panic!("CLIENT ID")
    };
    assert!(matches!(
        a.cmd(&["ACQUIRE", "dl/1", "TTL", "60000"]).await,
        Reply::Int(_)
    ));
    assert!(matches!(
        b.cmd(&["ACQUIRE", "dl/2", "TTL", "60000"]).await,
        Reply::Int(_)
    ));
    a.send_words(&["ACQUIRE", "dl/2", "WAIT", "30000"]).await;
    wait_for_waiters(&mut look, "dl/2", 1).await;
    match b.cmd(&["ACQUIRE", "dl/1", "WAIT", "30000"]).await {
        Reply::Error(e) => assert!(e.starts_with("DEADLOCK"), "{e}"),
        other => panic!("expected DEADLOCK, got {other:?}"),
    }
    server.stop().await;

    let filter = turnstile::durable::audit::Filter {
        key: Some(b"dl/1".to_vec()),
        ..Default::default()
    };
    let mut out = Vec::new();
    let report = turnstile::durable::audit::report(&dir, &filter, &mut out).expect("audit");
    let text = String::from_utf8(out).unwrap();
    assert_eq!(report.refusals.len(), 1, "{text}");
    let r = &report.refusals[0];
    assert_eq!(r.session.0 as i64, idb);
    assert_eq!(r.key.as_bytes(), b"dl/1");
    let expected = format!(
        "key=dl/1  session={idb}  deadlock refused: session {idb} waits for 'dl/1' -> session {ida} waits for 'dl/2' -> session {idb}"
    );
    assert!(text.contains(&expected), "{text}");
    // Dated from the start's Clock record.
    let line = text
        .lines()
        .find(|l| l.contains("deadlock refused"))
        .unwrap();
    assert!(line.starts_with("20"), "{line}");

    // The binary, by session: the other member of the cycle finds it too.
    let bin = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["audit", "--data-dir"])
        .arg(&dir)
        .args(["--session", &ida.to_string()])
        .output()
        .expect("run turnstile audit");
    let printed = String::from_utf8_lossy(&bin.stdout);
    assert!(bin.status.success(), "{bin:?}");
    assert!(printed.contains(&expected), "{printed}");
    assert!(
        String::from_utf8_lossy(&bin.stderr).contains("1 deadlock refusals"),
        "{bin:?}"
    );
    // A key outside the cycle leaves it out.
    let bin = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["audit", "--data-dir"])
        .arg(&dir)
        .args(["--key", "other"])
        .output()
        .expect("run turnstile audit");
    assert!(!String::from_utf8_lossy(&bin.stdout).contains("deadlock"));
    let _ = std::fs::remove_dir_all(&dir);
}
