//! Bytes of heap per held lock: a counting allocator around the system allocator measures
//! what the lock table allocates for N held exclusive locks with 16-byte keys.
//!
//! `cargo bench --bench memory`. Target from the engine issue: at most 150 bytes per held
//! exclusive lock (lease timer and per-session bookkeeping included).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use turnstile::engine::{AcquireOutcome, AcquireRequest, Limits, LockTable, Mode, RequestId};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    for &(n, sessions) in &[
        (1_000_000usize, 1usize),
        (1_000_000, 1000),
        (100_000, 100_000),
    ] {
        let keys: Vec<[u8; 16]> = (0..n)
            .map(|i| {
                let mut k = [0u8; 16];
                k.copy_from_slice(format!("key:{i:012}").as_bytes());
                k
            })
            .collect();
        let table = LockTable::new(64, Limits::default(), 0);
        let ids: Vec<_> = (0..sessions).map(|_| table.open_session()).collect();
        let before = LIVE.load(Ordering::Relaxed);
        for (i, k) in keys.iter().enumerate() {
            let r = AcquireRequest {
                id: RequestId(i as u64),
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 600_000,
                wait_ms: Some(0),
                policy: Default::default(),
            };
            let out = table.acquire(ids[i % sessions], k, &r, 0);
            assert!(matches!(out, AcquireOutcome::Granted(_)));
        }
        let after = LIVE.load(Ordering::Relaxed);
        println!(
            "{n} held exclusive locks, 16-byte keys, {sessions} sessions: {:.1} bytes per held lock (heap allocated by the lock table)",
            (after - before) as f64 / n as f64
        );
        drop(table);
    }
}
