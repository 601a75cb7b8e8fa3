//! Issue 9, "Leader election and watches", in text mode over real sockets: hold values
//! (ACQUIRE ... VALUE, SETVALUE, GETVALUE, INSPECT ... WITHVALUES, the size limit), WATCH
//! as RESP3 push messages (through the `redis` crate's push sender and over a raw
//! socket), RESP2 refused, a watcher that stops reading disconnected, and a watch on a
//! follower of a real three-node cluster.

mod cluster_common;
mod common;

use std::time::Duration;

use common::{err, ok, Reply, Server, REPLY_TIMEOUT};
use redis::{PushKind, Value};
use turnstile::Config;

fn val(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::Nil => None,
        other => panic!("not a bulk string or nil: {other:?}"),
    }
}

#[tokio::test]
async fn values_at_acquire_setvalue_getvalue_and_inspect_withvalues() {
    let server = Server::start_with(Config {
        max_value_bytes: 16,
        ..Config::default()
    })
    .await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let sa = common::client_id(&mut a).await;
    let token: i64 = ok(&mut a, &["ACQUIRE", "leader", "VALUE", "10.0.0.1:7000"]).await;
    // GETVALUE: [session, token, value] per holder.
    let got: Value = ok(&mut b, &["GETVALUE", "leader"]).await;
    let rows = common::items(&got);
    assert_eq!(rows.len(), 1);
    let row = common::items(&rows[0]);
    assert_eq!(common::int(&row[0]), sa);
    assert_eq!(common::int(&row[1]), token);
    assert_eq!(val(&row[2]).as_deref(), Some(&b"10.0.0.1:7000"[..]));
    // Only the holder may change it.
    let (code, _) = err(&mut b, &["SETVALUE", "leader", "x"]).await;
    assert_eq!(code, "NOTHELD");
    let okay: String = ok(&mut a, &["SETVALUE", "leader", "10.0.0.9:7000"]).await;
    assert_eq!(okay, "OK");
    // INSPECT keeps its reply; WITHVALUES adds `values`, one per holder.
    let plain: Value = ok(&mut b, &["INSPECT", "leader"]).await;
    assert_eq!(common::items(&plain).len(), 10);
    let with: Value = ok(&mut b, &["INSPECT", "leader", "WITHVALUES"]).await;
    let pairs = common::pairs(&with);
    assert_eq!(pairs.len(), 6);
    assert_eq!(pairs[5].0, "values");
    let values = common::items(&pairs[5].1);
    assert_eq!(val(&values[0]).as_deref(), Some(&b"10.0.0.9:7000"[..]));
    // The limit, named in the error; nothing was taken.
    let (code, msg) = err(&mut b, &["ACQUIRE", "other", "VALUE", "0123456789abcdefXX"]).await;
    assert_eq!(code, "LIMIT");
    assert!(msg.contains("18 bytes") && msg.contains("16"), "{msg}");
    assert!(common::inspect(&mut b, "other").await.is_none());
    let (code, _) = err(&mut a, &["SETVALUE", "leader", "0123456789abcdefXX"]).await;
    assert_eq!(code, "LIMIT");
    // Released: the value goes with the hold.
    let _: i64 = ok(&mut a, &["RELEASE", "leader"]).await;
    let none: Value = ok(&mut b, &["GETVALUE", "leader"]).await;
    assert_eq!(none, Value::Nil);
    let (code, _) = err(&mut b, &["INSPECT", "leader", "BOGUS"]).await;
    assert_eq!(code, "ERR");
}

async fn next_push(rx: &mut tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>) -> Vec<Value> {
    let push = tokio::time::timeout(REPLY_TIMEOUT, rx.recv())
        .await
        .expect("a push in time")
        .expect("open");
    assert_eq!(push.kind, PushKind::Other("watch".into()), "{push:?}");
    push.data
}

#[tokio::test]
async fn watch_needs_resp3() {
    let server = Server::start().await;
    let mut c = server.redis().await;
    let (code, msg) = err(&mut c, &["WATCH", "k"]).await;
    assert_eq!(code, "NOPROTO");
    assert!(msg.contains("HELLO 3"), "{msg}");
}

/// The `redis` crate, RESP3, its push sender: WATCH sees the state, a grant with its
/// value, the lease running out, and the grant to the next holder (larger token, its
/// value).
#[tokio::test]
async fn watch_streams_grant_expiry_and_the_next_grant_through_the_redis_crate() {
    let server = Server::start().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = redis::Client::open(format!("{}/?protocol=resp3", server.url())).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut watcher = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let sa = common::client_id(&mut a).await;
    let sb = common::client_id(&mut b).await;

    let n: i64 = ok(&mut watcher, &["WATCH", "leader"]).await;
    assert_eq!(n, 1);
    let state = next_push(&mut rx).await;
    assert_eq!(common::text(&state[0]), "leader");
    assert_eq!(common::text(&state[1]), "state");
    assert_eq!(common::int(&state[2]), 0);
    assert!(common::items(&state[3]).is_empty());

    let ta: i64 = ok(
        &mut a,
        &["ACQUIRE", "leader", "TTL", "300", "VALUE", "node-a"],
    )
    .await;
    let granted = next_push(&mut rx).await;
    assert_eq!(common::text(&granted[1]), "granted");
    assert_eq!(common::int(&granted[2]), sa);
    assert_eq!(common::text(&granted[3]), "exclusive");
    assert_eq!(common::int(&granted[4]), ta);
    assert_eq!(val(&granted[5]).as_deref(), Some(&b"node-a"[..]));

    // b queues behind a; a's lease runs out; b is granted.
    let queued = tokio::spawn(async move {
        let t: i64 = ok(&mut b, &["ACQUIRE", "leader", "VALUE", "node-b"]).await;
        (t, b)
    });
    let expired = next_push(&mut rx).await;
    assert_eq!(common::text(&expired[1]), "expired");
    assert_eq!(common::int(&expired[2]), sa);
    assert_eq!(common::int(&expired[4]), ta);
    assert_eq!(common::text(&expired[5]), "lease");
    let granted = next_push(&mut rx).await;
    assert_eq!(common::text(&granted[1]), "granted");
    assert_eq!(common::int(&granted[2]), sb);
    let tb = common::int(&granted[4]);
    assert!(tb > ta, "{tb} > {ta}");
    assert_eq!(val(&granted[5]).as_deref(), Some(&b"node-b"[..]));
    let (t, _b) = queued.await.unwrap();
    assert_eq!(t, tb);

    // UNWATCH: no more pushes.
    let n: i64 = ok(&mut watcher, &["UNWATCH"]).await;
    assert_eq!(n, 0);
    let pong: String = ok(&mut watcher, &["PING"]).await;
    assert_eq!(pong, "PONG");
    if let Ok(p) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("no push after UNWATCH: {p:?}");
    }
}

/// Raw RESP3: the exact push layout, SETVALUE and RELEASE pushes, a session end.
#[tokio::test]
async fn watch_pushes_have_the_documented_layout() {
    let server = Server::start().await;
    let mut w = server.raw().await;
    let _ = w.cmd(&["HELLO", "3"]).await;
    let mut a = server.raw().await;
    let t = a.cmd(&["ACQUIRE", "k", "VALUE", "v1"]).await.int();
    let sa = a.cmd(&["CLIENT", "ID"]).await.int();
    assert_eq!(w.cmd(&["WATCH", "k", "k2"]).await, Reply::Int(2));
    let state = w.reply().await;
    assert_eq!(
        state,
        Reply::Push(vec![
            Reply::bulk("watch"),
            Reply::bulk("k"),
            Reply::bulk("state"),
            Reply::Int(t),
            Reply::Array(vec![Reply::Array(vec![
                Reply::Int(sa),
                Reply::bulk("exclusive"),
                Reply::Int(t),
                Reply::bulk("v1"),
            ])]),
        ])
    );
    assert_eq!(
        w.reply().await,
        Reply::Push(vec![
            Reply::bulk("watch"),
            Reply::bulk("k2"),
            Reply::bulk("state"),
            Reply::Int(0),
            Reply::Array(vec![]),
        ])
    );
    assert_eq!(
        a.cmd(&["SETVALUE", "k", ""]).await,
        Reply::Simple("OK".into())
    );
    let head = |event: &str| {
        vec![
            Reply::bulk("watch"),
            Reply::bulk("k"),
            Reply::bulk(event),
            Reply::Int(sa),
            Reply::bulk("exclusive"),
            Reply::Int(t),
        ]
    };
    let mut value = head("value");
    value.push(Reply::Null);
    assert_eq!(w.reply().await, Reply::Push(value));
    assert_eq!(a.cmd(&["RELEASE", "k"]).await, Reply::Int(1));
    let mut released = head("released");
    released.push(Reply::Null);
    assert_eq!(w.reply().await, Reply::Push(released));
    let t2 = a.cmd(&["ACQUIRE", "k"]).await.int();
    let w2 = w.reply().await;
    assert!(
        matches!(&w2, Reply::Push(v) if v[2] == Reply::bulk("granted") && v[5] == Reply::Int(t2))
    );
    drop(a); // the session ends
    let ended = w.reply().await;
    assert!(
        matches!(&ended, Reply::Push(v) if v[2] == Reply::bulk("expired") && v[6] == Reply::bulk("session")),
        "{ended:?}"
    );
    // Commands go on between pushes.
    assert_eq!(w.cmd(&["UNWATCH", "k"]).await, Reply::Int(1));
    assert_eq!(w.cmd(&["PING"]).await, Reply::Simple("PONG".into()));
}

#[tokio::test]
async fn watches_per_connection_are_limited() {
    let server = Server::start_with(Config {
        max_watches: 2,
        ..Config::default()
    })
    .await;
    let mut w = server.raw().await;
    let _ = w.cmd(&["HELLO", "3"]).await;
    assert_eq!(w.cmd(&["WATCH", "a", "b"]).await, Reply::Int(2));
    let _ = (w.reply().await, w.reply().await);
    // Watching one again is no new watch.
    assert_eq!(w.cmd(&["WATCH", "a"]).await, Reply::Int(2));
    let _ = w.reply().await;
    let e = w.cmd(&["WATCH", "c"]).await;
    assert!(e.error_text().starts_with("LIMIT"), "{e:?}");
}

/// A watcher that never reads: its queue is bounded by --watch-backlog, and once it
/// overflows the server closes the connection instead of buffering without end.
#[tokio::test]
async fn a_watcher_that_stops_reading_is_disconnected() {
    let server = Server::start_with(Config {
        watch_backlog: 64,
        ..Config::default()
    })
    .await;
    let mut w = server.raw().await;
    let _ = w.cmd(&["HELLO", "3"]).await;
    assert_eq!(w.cmd(&["WATCH", "hot"]).await, Reply::Int(1));
    // From here on the watcher reads nothing while another client churns the key with
    // large values: socket buffers fill, then the queue.
    let mut churn = server.raw().await;
    let value = "x".repeat(1000);
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend(common::encode_words(&["ACQUIRE", "hot", "VALUE", &value]));
        pipeline.extend(common::encode_words(&["RELEASE", "hot"]));
    }
    let mut closed = false;
    for _round in 0..200 {
        churn.send(&pipeline).await;
        for _ in 0..400 {
            let _ = churn.reply().await;
        }
        let mut info = server.raw().await;
        let text = match info.cmd(&["INFO", "clients"]).await {
            Reply::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("{other:?}"),
        };
        if text.contains("watch_overflows:1") {
            closed = true;
            break;
        }
    }
    assert!(closed, "the watcher was never disconnected");
    // The watcher's socket ends after what was written before the close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout_at(deadline, w.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the watcher's connection is still open"),
        }
    }
}

/// A watch on a follower of a real three-node cluster learns the new holder (and its
/// value) when the lock changes hands on the leader: followers tell their watchers what
/// they apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_follower_sees_the_next_leader() {
    use cluster_common::{Cluster, Options};
    let opts = Options::new("watch-follower");
    let ttl = opts.min_ttl_ms().to_string();
    let mut cluster = Cluster::start(opts).await.unwrap_or_else(|e| panic!("{e}"));
    let leader = cluster
        .wait_leader(&[], Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let addr = |id: u64| -> std::net::SocketAddr {
        cluster.node(id).client_addr().parse().expect("an address")
    };
    let mut w = common::Raw::connect(addr(follower)).await;
    let _ = w.cmd(&["HELLO", "3"]).await;
    assert_eq!(w.cmd(&["WATCH", "election"]).await, Reply::Int(1));
    let state = w.reply().await;
    assert!(
        matches!(&state, Reply::Push(v) if v[2] == Reply::bulk("state")),
        "{state:?}"
    );

    let mut a = common::Raw::connect(addr(leader)).await;
    let mut b = common::Raw::connect(addr(leader)).await;
    let ta = a
        .cmd(&["ACQUIRE", "election", "TTL", &ttl, "VALUE", "node-a"])
        .await
        .int();
    let granted = w.reply().await;
    assert!(
        matches!(&granted, Reply::Push(v) if v[2] == Reply::bulk("granted") && v[5] == Reply::Int(ta) && v[6] == Reply::bulk("node-a")),
        "{granted:?}"
    );
    b.send_words(&["ACQUIRE", "election", "TTL", &ttl, "VALUE", "node-b"])
        .await;
    // The candidate's connection drops: its session ends, the lock changes hands.
    drop(a);
    let mut seen = Vec::new();
    let tb = loop {
        let r = w.reply().await;
        if let Reply::Push(v) = &r {
            if v[2] == Reply::bulk("granted") {
                assert_eq!(v[6], Reply::bulk("node-b"), "{r:?}");
                break v[5].int();
            }
        }
        seen.push(r);
    };
    assert!(tb > ta, "{tb} > {ta}");
    assert!(
        seen.iter().any(|r| matches!(r, Reply::Push(v) if v[2] == Reply::bulk("expired") && v[5] == Reply::Int(ta))),
        "{seen:?}"
    );
    assert_eq!(b.reply().await, Reply::Int(tb));
    let _ = REPLY_TIMEOUT;
}
