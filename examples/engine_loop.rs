//! A fixed loop of uncontended acquire+release pairs, for instruction counts:
//! `valgrind --tool=callgrind target/release/examples/engine_loop`.

use turnstile::engine::{AcquireRequest, Limits, LockTable, Mode, RequestId};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let table = LockTable::new(64, Limits::default(), 0);
    let s = table.open_session();
    let keys: Vec<Vec<u8>> = (0..4096)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    let mut events = Vec::new();
    for i in 0..n {
        let k = &keys[i & 4095];
        let r = AcquireRequest {
            id: RequestId(i as u64),
            mode: Mode::Exclusive,
            reentrant: false,
            ttl_ms: 30_000,
            wait_ms: Some(0),
            policy: Default::default(),
        };
        std::hint::black_box(table.acquire(s, k, &r, 1));
        table.release(s, k, 1, &mut events).expect("held");
    }
}
