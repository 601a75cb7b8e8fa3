//! Hostile and broken clients against a real server, and what a healthy client sees
//! meanwhile: PING round trips (p50/p99/max) while each abuse runs, against a baseline.
//!
//! ```text
//! cargo run --release --example abuse            # prints a markdown table
//! ```
//!
//! The server runs in this process on its own runtime (2 threads) on 127.0.0.1:0 with
//! default limits except the auth timeout (2 s here, so half-open sockets get reaped within
//! the run); the abusers and the healthy client run on another runtime.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RUN: Duration = Duration::from_secs(3);

fn main() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let config = turnstile::Config {
        in_memory: true,
        auth_timeout_ms: 2_000,
        ..turnstile::Config::default()
    };
    server_rt.spawn(turnstile::server::run(
        listener,
        config,
        std::future::pending::<()>(),
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| abuse while a healthy client PINGs every ms | PINGs | p50 us | p99 us | max us | healthy errors |");
    println!("|---|---|---|---|---|---|");
    for (name, abuse) in [
        ("none (baseline)", Abuse::None),
        (
            "slowloris: 500 connections sending one byte each 50 ms",
            Abuse::Slowloris,
        ),
        (
            "connection flood: 4 tasks connecting and closing",
            Abuse::Flood,
        ),
        (
            "half-open: 2000 connections that never send",
            Abuse::HalfOpen,
        ),
        (
            "1M pipelined PINGs from a client that never reads",
            Abuse::Pipeline,
        ),
        (
            "garbage: 64 KiB of random bytes per connection, repeated",
            Abuse::Garbage,
        ),
    ] {
        let (h, errors) = rt.block_on(measure(addr, abuse));
        println!(
            "| {name} | {} | {} | {} | {} | {errors} |",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
}

#[derive(Clone, Copy)]
enum Abuse {
    None,
    Slowloris,
    Flood,
    HalfOpen,
    Pipeline,
    Garbage,
}

async fn measure(addr: SocketAddr, abuse: Abuse) -> (Histogram<u64>, u64) {
    let stop = Instant::now() + RUN;
    let abuser = tokio::spawn(run_abuse(addr, abuse, stop));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut errors = 0;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    while Instant::now() < stop {
        let t = Instant::now();
        let ok = async {
            conn.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
            let n = conn.read(&mut buf).await?;
            Ok::<bool, std::io::Error>(&buf[..n] == b"+PONG\r\n")
        };
        match tokio::time::timeout(Duration::from_secs(2), ok).await {
            Ok(Ok(true)) => {
                let _ = h.record(t.elapsed().as_micros() as u64);
            }
            _ => {
                errors += 1;
                conn = TcpStream::connect(addr).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = abuser.await;
    (h, errors)
}

async fn run_abuse(addr: SocketAddr, abuse: Abuse, stop: Instant) {
    match abuse {
        Abuse::None => {}
        Abuse::Slowloris => {
            let mut conns = Vec::new();
            for _ in 0..500 {
                if let Ok(c) = TcpStream::connect(addr).await {
                    conns.push(c);
                }
            }
            let msg = b"*2\r\n$4\r\nECHO\r\n$100000\r\n";
            let mut i = 0;
            while Instant::now() < stop {
                for c in &mut conns {
                    let _ = c.write_all(&msg[i % msg.len()..i % msg.len() + 1]).await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Abuse::Flood => {
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    tokio::spawn(async move {
                        while Instant::now() < stop {
                            if let Ok(mut c) = TcpStream::connect(addr).await {
                                let _ = c.write_all(b"PING\r\n").await;
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        }
        Abuse::HalfOpen => {
            let mut conns = Vec::new();
            for _ in 0..2000 {
                match TcpStream::connect(addr).await {
                    Ok(c) => conns.push(c),
                    Err(_) => break,
                }
            }
            tokio::time::sleep_until(stop.into()).await;
        }
        Abuse::Pipeline => {
            if let Ok(mut c) = TcpStream::connect(addr).await {
                let chunk = b"*1\r\n$4\r\nPING\r\n".repeat(10_000);
                for _ in 0..100 {
                    if Instant::now() >= stop {
                        break;
                    }
                    // Blocks once the server stops reading (its replies are not read).
                    if tokio::time::timeout(Duration::from_millis(500), c.write_all(&chunk))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                tokio::time::sleep_until(stop.into()).await;
            }
        }
        Abuse::Garbage => {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            while Instant::now() < stop {
                if let Ok(mut c) = TcpStream::connect(addr).await {
                    let bytes: Vec<u8> = (0..65_536)
                        .map(|_| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            seed as u8
                        })
                        .collect();
                    let _ = c.write_all(&bytes).await;
                }
            }
        }
    }
}
