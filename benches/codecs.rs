//! Criterion benches of the two wire codecs: the text-mode (RESP) request parser and the
//! binary protocol's frame check + request decode, on an ACQUIRE as clients send it.
//!
//! `cargo bench --bench codecs`.

use std::ops::Range;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use turnstile::protocol::resp::{parse_command, Parsed};
use turnstile::protocol::FrameLimits;
use turnstile_proto::bytes::BytesMut;
use turnstile_proto::{Acquire, Header, Mode, Request, MAX_PAYLOAD};

fn limits() -> FrameLimits {
    FrameLimits {
        max_bulk: 512 * 1024,
        max_args: 1024,
        max_inline: 64 * 1024,
        max_request: 1024 * 1024,
    }
}

fn resp(c: &mut Criterion) {
    let mut g = c.benchmark_group("resp");
    g.throughput(Throughput::Elements(1));
    let cmd = b"*6\r\n$7\r\nACQUIRE\r\n$9\r\norders/42\r\n$3\r\nTTL\r\n$5\r\n30000\r\n$4\r\nWAIT\r\n$1\r\n0\r\n";
    let limits = limits();
    let mut args: Vec<Range<usize>> = Vec::with_capacity(16);
    let mut scratch = Vec::new();
    g.bench_function("parse ACQUIRE key TTL ms WAIT 0", |b| {
        b.iter(|| {
            let parsed = parse_command(black_box(cmd), &mut args, &mut scratch, &limits);
            assert!(matches!(parsed, Ok(Parsed::Command { .. })));
            black_box(args.len())
        })
    });
    // 16 pipelined commands parsed out of one buffer.
    let pipeline: Vec<u8> = cmd.iter().copied().cycle().take(cmd.len() * 16).collect();
    g.throughput(Throughput::Elements(16));
    g.bench_function("parse a pipeline of 16", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Parsed::Command { len }) =
                parse_command(&pipeline[at..], &mut args, &mut scratch, &limits)
            {
                at += len;
            }
            black_box(at)
        })
    });
    g.finish();
}

fn binary(c: &mut Criterion) {
    let mut g = c.benchmark_group("binary");
    g.throughput(Throughput::Elements(1));
    let req = Request::Acquire(Acquire {
        key: b"orders/42",
        mode: Mode::Exclusive,
        reentrant: false,
        ttl_ms: 30_000,
        wait_ms: Some(0),
        priority: 0,
        lock_delay_ms: 0,
        value: None,
    });
    let mut frame = BytesMut::new();
    req.encode(7, &mut frame);
    g.bench_function("check + decode ACQUIRE", |b| {
        b.iter(|| {
            let header = Header::check(black_box(&frame), MAX_PAYLOAD).expect("whole frame");
            let payload = &frame[turnstile_proto::HEADER_LEN..header.frame_len()];
            black_box(Request::decode(&header, payload).expect("valid"))
        })
    });
    let mut out = BytesMut::with_capacity(64);
    g.bench_function("encode ACQUIRE", |b| {
        b.iter(|| {
            out.clear();
            black_box(&req).encode(7, &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, resp, binary);
criterion_main!(benches);
