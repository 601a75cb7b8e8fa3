//! Restart time and log size: fills a data directory with N held locks through the real
//! store (WAL records, group commit), then times recovery twice: replaying the whole
//! log, and from a snapshot. Also prints log bytes per acquire+release pair.
//!
//! ```text
//! cargo run --release --example restart_time -- [N=1000000] [DIR=/tmp/turnstile-restart]
//! ```

use std::time::Instant;

use turnstile::durable::{self, SessionKind};
use turnstile::engine::{AcquireRequest, Limits, Mode, RequestId};
use turnstile::wal::FsyncMode;

fn options(dir: &std::path::Path, snapshot_every: u64) -> durable::Options {
    durable::Options {
        dir: dir.to_path_buf(),
        fsync: FsyncMode::Never,
        repair: false,
        shards: 64,
        limits: Limits::default(),
        snapshot_every,
        segment_size: 64 << 20,
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(1_000_000, |a| a.parse().expect("N"));
    let dir = std::path::PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/turnstile-restart".into()),
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Log bytes per acquire+release pair.
    {
        let pairs = 100_000u64;
        let pdir = dir.join("pairs");
        let (store, _) = durable::open(&options(&pdir, u64::MAX)).unwrap();
        let (s, _) = store.open_session(SessionKind::Text, 1);
        let before = dir_bytes(&pdir.join("wal"));
        for i in 0..pairs {
            let key = format!("orders/{i}");
            let req = AcquireRequest {
                id: RequestId(i << 32),
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 30_000,
                wait_ms: None,
                policy: Default::default(),
            };
            store.acquire(s, key.as_bytes(), &req, 2 + i);
            let (released, _) = store.release(s, key.as_bytes(), 2 + i, &mut Vec::new());
            released.expect("held");
        }
        store.sync().unwrap();
        let after = dir_bytes(&pdir.join("wal"));
        println!(
            "log bytes per acquire+release pair (key 'orders/N', 1 session): {:.1}",
            (after - before) as f64 / pairs as f64
        );
    }

    let fill = Instant::now();
    {
        let (store, _) = durable::open(&options(&dir, u64::MAX)).unwrap();
        let (s, _) = store.open_session(SessionKind::Text, 1);
        for i in 0..n {
            let key = format!("lock/{i:08}");
            let req = AcquireRequest {
                id: RequestId(i << 32),
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 600_000,
                wait_ms: None,
                policy: Default::default(),
            };
            store.acquire(s, key.as_bytes(), &req, 2);
        }
        store.sync().unwrap();
    }
    println!(
        "filled {n} held locks in {:.2?} ({} bytes of log)",
        fill.elapsed(),
        dir_bytes(&dir.join("wal"))
    );

    let t = Instant::now();
    let (store, rec) = durable::open(&options(&dir, u64::MAX)).unwrap();
    println!(
        "restart from the log alone: {:.2?} ({} records replayed, {} holds)",
        t.elapsed(),
        rec.replayed,
        rec.holds
    );
    let t = Instant::now();
    assert!(store.snapshot());
    // `snapshot` returns once the image is drawn: that long, writers waited.
    let paused = t.elapsed();
    assert!(store.wait_snapshot(std::time::Duration::from_secs(120)));
    println!(
        "snapshot of {} holds: {:.2?} in all, writers paused {:.2?} while it was drawn ({} bytes)",
        rec.holds,
        t.elapsed(),
        paused,
        dir_bytes(&dir.join("snapshots"))
    );
    drop(store);

    let t = Instant::now();
    let (_store, rec) = durable::open(&options(&dir, u64::MAX)).unwrap();
    println!(
        "restart from the snapshot: {:.2?} (snapshot index {:?}, {} records replayed, {} holds)",
        t.elapsed(),
        rec.snapshot_index,
        rec.replayed,
        rec.holds
    );
    let _ = std::fs::remove_dir_all(&dir);
}
