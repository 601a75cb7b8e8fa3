//! Criterion benches of the durable path below the network: encoding a command record,
//! and appending through the store (sequencer + WAL writer + group commit) with
//! `--fsync never` (the write path without the disk's flush latency, which the
//! `restart_time` example and `loadgen compare` with `--fsync always` cover).
//!
//! `cargo bench --bench wal`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use turnstile::durable::{self, Command, Entry, SessionKind};
use turnstile::engine::{AcquireRequest, Limits, Mode, RequestId, SessionId};
use turnstile::wal::FsyncMode;

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal");
    g.throughput(Throughput::Elements(1));
    let entry = Entry {
        now: 1_000_000,
        command: Command::Acquire {
            session: SessionId(1234),
            key: b"orders/42",
            req: AcquireRequest {
                id: RequestId(77 << 32),
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 30_000,
                wait_ms: None,
                policy: Default::default(),
            },
            value: None,
        },
    };
    let mut out = Vec::with_capacity(64);
    g.bench_function("encode an ACQUIRE record", |b| {
        b.iter(|| {
            out.clear();
            black_box(&entry).encode(&mut out);
            black_box(out.len())
        })
    });
    let bytes = entry.to_vec();
    g.bench_function("decode an ACQUIRE record", |b| {
        b.iter(|| black_box(Entry::decode(black_box(&bytes)).expect("valid")))
    });

    let dir = std::env::temp_dir().join(format!("turnstile-bench-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (store, _) = durable::open(&durable::Options {
        dir: dir.clone(),
        fsync: FsyncMode::Never,
        repair: false,
        shards: 64,
        limits: Limits::default(),
        snapshot_every: u64::MAX,
        segment_size: 64 << 20,
    })
    .expect("open the store");
    let (s, _) = store.open_session(SessionKind::Text, 1);
    let keys: Vec<Vec<u8>> = (0..4096)
        .map(|i| format!("key:{i:08}").into_bytes())
        .collect();
    let mut i = 0u64;
    let mut events = Vec::new();
    g.bench_function("store: logged acquire+release pair (fsync never)", |b| {
        b.iter(|| {
            let k = &keys[(i & 4095) as usize];
            i += 1;
            let req = AcquireRequest {
                id: RequestId(i << 32),
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 30_000,
                wait_ms: Some(0),
                policy: Default::default(),
            };
            black_box(store.acquire(s, k, &req, 2));
            let (released, _) = store.release(s, k, 2, &mut events);
            released.expect("held");
        })
    });
    store.sync().expect("sync");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = encode
}
criterion_main!(benches);
