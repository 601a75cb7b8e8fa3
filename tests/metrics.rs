//! `--metrics-addr`: the Prometheus endpoint, scraped over a real socket and read with a
//! real Prometheus text-format parser (the `prometheus-parse` crate).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnstile::Config;

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .expect("answer within 5 s")
        .unwrap();
    let (head, body) = body.split_once("\r\n\r\n").expect("a head");
    (head.to_string(), body.to_string())
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let maddr = free_port();
    let server = Server::start_with(Config {
        metrics_addr: Some(maddr),
        ..Config::default()
    })
    .await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    acquire(&mut a, "m1", &["TTL", "60000"]).await;
    acquire(&mut a, "m2", &["TTL", "60000"]).await;
    let _: i64 = ok(&mut a, &["RELEASE", "m2"]).await;
    // A queued wait, so the wait histogram has one observation.
    let mut w = server.raw().await;
    w.send_words(&["ACQUIRE", "m1", "WAIT", "5000"]).await;
    wait_for_waiters(&mut b, "m1", 1).await;
    let _: i64 = ok(&mut a, &["RELEASE", "m1"]).await;
    let _ = w.reply().await;

    let (head, body) = eventually_get(maddr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format");
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} missing in\n{body}"))
    };
    assert_eq!(value("turnstile_grants_total"), 3.0);
    assert_eq!(value("turnstile_releases_total"), 2.0);
    assert_eq!(value("turnstile_queued_total"), 1.0);
    assert_eq!(value("turnstile_holds"), 1.0);
    assert_eq!(value("turnstile_keys"), 1.0);
    assert!(value("turnstile_connections") >= 3.0);
    for name in [
        "turnstile_notheld_total",
        "turnstile_expiries_total",
        "turnstile_deadlocks_total",
        "turnstile_wait_timeouts_total",
        "turnstile_cancels_total",
        "turnstile_waiters",
    ] {
        assert_eq!(value(name), 0.0, "{name}");
    }
    // The queued ACQUIRE was an exclusive one.
    let wait = "turnstile_wait_seconds";
    assert_eq!(observations(&scrape, wait, Some("exclusive")), 1.0);
    assert_eq!(observations(&scrape, wait, Some("shared")), 0.0);
    let docs = &scrape.docs;
    assert!(docs.contains_key("turnstile_grants_total"));
    // Every metric the example alerting rules use is served (durability ones need a
    // data directory, checked by name only against the renderer's text).
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/prometheus-alerts.yml"
    ))
    .unwrap();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_prefix("turnstile_") {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            let durable = base.starts_with("log_")
                || base.starts_with("snapshot")
                || base.starts_with("wal_");
            assert!(
                durable || docs.contains_key(&format!("turnstile_{base}")),
                "alert rule uses turnstile_{base}, which /metrics does not serve"
            );
        }
    }

    let (head, _) = get(maddr, "/").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.stop().await;
}

/// With a data directory: the log's fsync latency and batch size histograms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_server_reports_fsync_latency_and_batch_size() {
    let maddr = free_port();
    let dir = std::env::temp_dir().join(format!("turnstile-metrics-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::start_with(Config {
        metrics_addr: Some(maddr),
        data_dir: dir.clone(),
        ..Config::default()
    })
    .await;
    let mut a = server.redis().await;
    for i in 0..5 {
        acquire(&mut a, &format!("w{i}"), &["TTL", "60000"]).await;
    }
    let (_, body) = eventually_get(maddr).await;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format");
    for name in [
        "turnstile_wal_fsync_seconds",
        "turnstile_wal_fsync_batch_records",
    ] {
        let h = scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} missing in\n{body}"));
        match &h.value {
            prometheus_parse::Value::Histogram(buckets) => {
                let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
                // Each acknowledged ACQUIRE waited for an fsync (the start's own too).
                assert!(inf.count >= 1.0, "{name}: {inf:?}");
                assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
            }
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }
    assert!(scrape
        .docs
        .contains_key("turnstile_snapshot_duration_seconds"));
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The endpoint starts with the server; the first scrape may race it.
async fn eventually_get(addr: std::net::SocketAddr) -> (String, String) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return get(addr, "/metrics").await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no metrics endpoint on {addr}");
}

/// The `+Inf` bucket (the observation count) of `name` with `mode` (or no) label.
fn observations(scrape: &prometheus_parse::Scrape, name: &str, mode: Option<&str>) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("mode") == mode)
        .unwrap_or_else(|| panic!("{name} {mode:?} missing"));
    match &s.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
            buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .expect("+Inf")
                .count
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn bucket(scrape: &prometheus_parse::Scrape, name: &str, le: f64) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    match &s.value {
        prometheus_parse::Value::Histogram(buckets) => {
            buckets
                .iter()
                .find(|b| b.less_than == le)
                .expect("bucket")
                .count
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (_, body) = eventually_get(addr).await;
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text format")
}

/// Acquire latency and waits by mode, hold durations and queue lengths, in /metrics and
/// INFO; and every name docs/metrics.md lists as always served is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_waits_by_mode_hold_durations_and_queue_lengths() {
    let maddr = free_port();
    let server = Server::start_with(Config {
        metrics_addr: Some(maddr),
        ..Config::default()
    })
    .await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    // Answered at once: two exclusive (a grant and a busy try-lock), a shared, a semaphore.
    acquire(&mut a, "x1", &["TTL", "60000"]).await;
    acquire(&mut a, "s1", &["SHARED", "TTL", "60000"]).await;
    acquire(&mut a, "sem1", &["SEMAPHORE", "2", "TTL", "60000"]).await;
    let busy: Option<i64> = ok(&mut b, &["ACQUIRE", "x1", "WAIT", "0"]).await;
    assert_eq!(busy, None);
    // Two waiters queue on x1: an exclusive, then a shared.
    let mut w1 = server.raw().await;
    let mut w2 = server.raw().await;
    w1.send_words(&["ACQUIRE", "x1", "TTL", "60000", "WAIT", "5000"])
        .await;
    wait_for_waiters(&mut b, "x1", 1).await;
    w2.send_words(&["ACQUIRE", "x1", "SHARED", "TTL", "60000", "WAIT", "5000"])
        .await;
    wait_for_waiters(&mut b, "x1", 2).await;

    let m = scrape(maddr).await;
    let latency = "turnstile_acquire_latency_seconds";
    assert_eq!(observations(&m, latency, Some("exclusive")), 2.0);
    assert_eq!(observations(&m, latency, Some("shared")), 1.0);
    assert_eq!(observations(&m, latency, Some("semaphore")), 1.0);
    assert_eq!(observations(&m, latency, Some("multi")), 0.0);
    // One key with waiters, two of them.
    assert_eq!(observations(&m, "turnstile_queue_length", None), 1.0);
    assert_eq!(bucket(&m, "turnstile_queue_length", 1.0), 0.0);
    assert_eq!(bucket(&m, "turnstile_queue_length", 2.0), 1.0);

    // The waiters get x1 in turn: an exclusive wait, then a shared one; two holds ended.
    let _: i64 = ok(&mut a, &["RELEASE", "x1"]).await;
    assert!(matches!(w1.reply().await, Reply::Int(_)));
    assert!(matches!(w1.cmd(&["RELEASE", "x1"]).await, Reply::Int(1)));
    assert!(matches!(w2.reply().await, Reply::Int(_)));
    let m = scrape(maddr).await;
    let wait = "turnstile_wait_seconds";
    assert_eq!(observations(&m, wait, Some("exclusive")), 1.0);
    assert_eq!(observations(&m, wait, Some("shared")), 1.0);
    assert_eq!(observations(&m, wait, Some("semaphore")), 0.0);
    assert_eq!(
        observations(&m, "turnstile_hold_duration_seconds", None),
        2.0
    );
    assert_eq!(observations(&m, "turnstile_queue_length", None), 0.0);
    // Every sample of a queued ACQUIRE counted once: not also as latency.
    assert_eq!(observations(&m, latency, Some("exclusive")), 2.0);

    // INFO shows the same figures.
    let info: String = ok(&mut b, &["INFO", "stats"]).await;
    for want in [
        "acquire_latency_exclusive:count=2,",
        "acquire_latency_shared:count=1,",
        "acquire_latency_semaphore:count=1,",
        "wait_exclusive:count=1,",
        "wait_shared:count=1,",
        "hold_duration:count=2,",
        "queue_length:keys=0,",
    ] {
        assert!(info.contains(want), "{want} not in\n{info}");
    }

    // docs/metrics.md: every name marked `always` is served, and every served name is
    // documented.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let mut documented = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, name, when, ..] = cells[..] {
            if let Some(name) = name.strip_prefix("`turnstile_") {
                let name = format!("turnstile_{}", name.trim_end_matches('`'));
                if when == "always" {
                    assert!(m.docs.contains_key(&name), "{name} documented, not served");
                }
                documented.push(name);
            }
        }
    }
    for name in m.docs.keys() {
        assert!(
            documented.contains(name),
            "{name} served, not in docs/metrics.md"
        );
    }
    server.stop().await;
}
