//! Criterion benches of the lock table alone (no network): what one core can do.
//!
//! `cargo bench --bench engine`. Targets from the engine issue: >= 3 M uncontended
//! acquire+release pairs/s on one core, a deadlock check < 10 us with 10,000 queued requests.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use turnstile::engine::{AcquireOutcome, AcquireRequest, Limits, LockTable, Mode, RequestId};

fn req(id: u64, mode: Mode, ttl_ms: u64, wait_ms: Option<u64>) -> AcquireRequest {
    AcquireRequest {
        id: RequestId(id),
        mode,
        reentrant: false,
        ttl_ms,
        wait_ms,
        policy: Default::default(),
    }
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect()
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");
    g.throughput(Throughput::Elements(1));
    let table = LockTable::new(64, Limits::default(), 0);
    let s = table.open_session();
    let keys = keys(4096);
    let mut events = Vec::new();
    let mut i = 0usize;
    g.bench_function("acquire+release distinct keys", |b| {
        b.iter(|| {
            let k = &keys[i & 4095];
            i += 1;
            let r = req(i as u64, Mode::Exclusive, 30_000, Some(0));
            let out = table.acquire(s, k, &r, 1);
            debug_assert!(matches!(out, AcquireOutcome::Granted(_)));
            black_box(out);
            table.release(s, k, 1, &mut events).expect("held");
        })
    });
    // The same with hold durations timed, as the server runs it.
    let table = LockTable::new(64, Limits::default(), 0);
    table.time_holds();
    let s = table.open_session();
    g.bench_function("acquire+release distinct keys, holds timed", |b| {
        b.iter(|| {
            let k = &keys[i & 4095];
            i += 1;
            let r = req(i as u64, Mode::Exclusive, 30_000, Some(0));
            let out = table.acquire(s, k, &r, 1);
            black_box(out);
            table.release(s, k, 2, &mut events).expect("held");
        })
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended");
    g.throughput(Throughput::Elements(1));
    // Two sessions hand one key back and forth: each release grants the queued other.
    let table = LockTable::new(64, Limits::default(), 0);
    let a = table.open_session();
    let b = table.open_session();
    let mut events = Vec::new();
    let key = b"hot";
    assert!(matches!(
        table.acquire(a, key, &req(1, Mode::Exclusive, 30_000, None), 0),
        AcquireOutcome::Granted(_)
    ));
    assert!(matches!(
        table.acquire(b, key, &req(2, Mode::Exclusive, 30_000, None), 0),
        AcquireOutcome::Queued
    ));
    let mut holder = a;
    let mut waiter = b;
    let mut id = 3;
    g.bench_function("handoff on one key", |bch| {
        bch.iter(|| {
            table.release(holder, key, 1, &mut events).expect("held");
            events.clear();
            std::mem::swap(&mut holder, &mut waiter);
            id += 1;
            let out = table.acquire(waiter, key, &req(id, Mode::Exclusive, 30_000, None), 1);
            debug_assert!(matches!(out, AcquireOutcome::Queued));
            black_box(out);
        })
    });
    g.finish();
}

fn expiry_churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("expiry");
    g.throughput(Throughput::Elements(1000));
    let keys = keys(1000);
    g.bench_function("1000 leases granted then expired", |b| {
        b.iter_batched(
            || LockTable::new(64, Limits::default(), 0),
            |table| {
                let s = table.open_session();
                for (i, k) in keys.iter().enumerate() {
                    table.acquire(
                        s,
                        k,
                        &req(i as u64, Mode::Exclusive, 1 + (i as u64 % 50), Some(0)),
                        0,
                    );
                }
                let mut events = Vec::with_capacity(1000);
                table.advance(100, &mut events);
                assert_eq!(events.len(), 1000);
                table
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn deadlock_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("deadlock");
    // 10,000 queued requests: 100 keys each held by one session with 100 waiters; the
    // waiters also hold keys of their own that others queue on, so the graph is deep.
    let table = LockTable::new(64, Limits::default(), 0);
    let holders: Vec<_> = (0..100).map(|_| table.open_session()).collect();
    let mut id = 0;
    for (i, h) in holders.iter().enumerate() {
        id += 1;
        table.acquire(
            *h,
            format!("hot{i}").as_bytes(),
            &req(id, Mode::Exclusive, 600_000, None),
            0,
        );
    }
    let mut queued = 0;
    for i in 0..100 {
        for _ in 0..100 {
            let w = table.open_session();
            id += 1;
            // Each waiter holds a private key too.
            table.acquire(
                w,
                format!("own{id}").as_bytes(),
                &req(id, Mode::Exclusive, 600_000, None),
                0,
            );
            id += 1;
            let out = table.acquire(
                w,
                format!("hot{i}").as_bytes(),
                &req(id, Mode::Exclusive, 600_000, None),
                0,
            );
            assert!(matches!(out, AcquireOutcome::Queued));
            queued += 1;
        }
    }
    assert_eq!(queued, 10_000);
    // The checked request: holder 0 (which 100 sessions wait for) asks for a key held by
    // holder 1 behind 100 waiters. No cycle: the search must still explore what it reaches.
    let asker = holders[0];
    let mut events = Vec::new();
    g.bench_function("check with 10000 queued (no cycle)", |b| {
        b.iter(|| {
            id += 1;
            let out = table.acquire(asker, b"hot1", &req(id, Mode::Exclusive, 600_000, None), 0);
            assert!(matches!(out, AcquireOutcome::Queued));
            assert!(table.cancel(asker, b"hot1", 0, &mut events));
        })
    });
    // And a request that closes a cycle: holder 1 asks for hot0 while holder 0 waits on hot1.
    id += 1;
    table.acquire(asker, b"hot1", &req(id, Mode::Exclusive, 600_000, None), 0);
    g.bench_function("check with 10000 queued (cycle found)", |b| {
        b.iter(|| {
            id += 1;
            let out = table.acquire(
                holders[1],
                b"hot0",
                &req(id, Mode::Exclusive, 600_000, None),
                0,
            );
            assert!(matches!(out, AcquireOutcome::Deadlock(_)));
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    uncontended,
    contended,
    expiry_churn,
    deadlock_check
);
criterion_main!(benches);
