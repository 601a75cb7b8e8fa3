//! Issue 9, "Explain waits", over real sockets: EXPLAIN and WAITGRAPH (and its DOT form)
//! with the `redis` crate in RESP2 and RESP3, the DEADLOCK message naming its cycle, the
//! binary protocol through the client library, and `turnstile cli --waitgraph-dot FILE`.
//!
//! The scene most tests build: A holds k1, B holds k2 and waits on k1, C waits on k2
//! (SHARED). Whoever asks "why does C wait?" hears C -> B (holder of k2) -> A (holder of
//! k1).

mod common;

use std::time::Duration;

use common::*;
use redis::aio::MultiplexedConnection;
use redis::Value;

/// Sends an ACQUIRE that will queue, on its own task: the connection is parked until it
/// is granted (or the test ends and the server stops).
fn queue(con: &MultiplexedConnection, words: &[&str]) -> tokio::task::JoinHandle<()> {
    let mut con = con.clone();
    let cmd = c(words);
    tokio::spawn(async move {
        let _: redis::RedisResult<Value> = cmd.query_async(&mut con).await;
    })
}

struct Scene {
    server: Server,
    /// Holds k1.
    a: MultiplexedConnection,
    /// Holds k2, waits on k1.
    b: MultiplexedConnection,
    /// Waits on k2.
    c: MultiplexedConnection,
    /// Asks.
    obs: MultiplexedConnection,
    ids: [i64; 3],
    tokens: [i64; 2],
    _parked: Vec<tokio::task::JoinHandle<()>>,
}

async fn scene() -> Scene {
    let server = Server::start().await;
    let mut a = server.redis().await;
    let mut b = server.redis().await;
    let mut c = server.redis().await;
    let mut obs = server.redis().await;
    let ids = [
        client_id(&mut a).await,
        client_id(&mut b).await,
        client_id(&mut c).await,
    ];
    let t1 = acquire(&mut a, "k1", &["TTL", "60000"]).await;
    let t2 = acquire(&mut b, "k2", &["TTL", "60000"]).await;
    let p1 = queue(&b, &["ACQUIRE", "k1", "TTL", "60000"]);
    wait_for_waiters(&mut obs, "k1", 1).await;
    let p2 = queue(&c, &["ACQUIRE", "k2", "SHARED", "TTL", "60000"]);
    wait_for_waiters(&mut obs, "k2", 1).await;
    Scene {
        server,
        a,
        b,
        c,
        obs,
        ids,
        tokens: [t1, t2],
        _parked: vec![p1, p2],
    }
}

fn field<'a>(pairs: &'a [(String, Value)], name: &str) -> &'a Value {
    &pairs
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no field {name} in {pairs:?}"))
        .1
}

fn names(pairs: &[(String, Value)]) -> Vec<&str> {
    pairs.iter().map(|(k, _)| k.as_str()).collect()
}

/// Checks the explanation of C in the scene (either protocol version).
fn check_chain(s: &Scene, v: &Value) -> i64 {
    let [sa, sb, sc] = s.ids;
    let top = pairs(v);
    assert_eq!(
        names(&top),
        ["session", "waiting", "edges", "truncated", "cycle"]
    );
    assert_eq!(int(field(&top, "session")), sc);
    assert_eq!(items(field(&top, "waiting")).len(), 1);
    assert_eq!(int(field(&top, "truncated")), 0);
    assert!(items(field(&top, "cycle")).is_empty());
    let edges: Vec<Vec<(String, Value)>> = items(field(&top, "edges")).iter().map(pairs).collect();
    assert_eq!(edges.len(), 2, "{edges:?}");
    let e = &edges[0];
    assert_eq!(
        names(e),
        [
            "depth",
            "key",
            "waiter",
            "request",
            "mode",
            "permits",
            "waited_ms",
            "type",
            "blocker",
            "blocker_mode",
            "blocker_permits",
            "token",
            "ttl_ms"
        ]
    );
    assert_eq!(int(field(e, "depth")), 1);
    assert_eq!(text(field(e, "key")), "k2");
    assert_eq!(int(field(e, "waiter")), sc);
    assert_eq!(
        int(field(e, "request")),
        int(&items(field(&top, "waiting"))[0])
    );
    assert_eq!(text(field(e, "mode")), "shared");
    assert_eq!(text(field(e, "type")), "holder");
    assert_eq!(int(field(e, "blocker")), sb);
    assert_eq!(text(field(e, "blocker_mode")), "exclusive");
    assert_eq!(int(field(e, "token")), s.tokens[1]);
    let ttl = int(field(e, "ttl_ms"));
    assert!(ttl > 0 && ttl <= 60_000, "lease left {ttl}");
    assert!(int(field(e, "waited_ms")) >= 0);
    let e = &edges[1];
    assert_eq!(int(field(e, "depth")), 2);
    assert_eq!(text(field(e, "key")), "k1");
    assert_eq!(int(field(e, "waiter")), sb);
    assert_eq!(text(field(e, "mode")), "exclusive");
    assert_eq!(text(field(e, "type")), "holder");
    assert_eq!(int(field(e, "blocker")), sa);
    assert_eq!(int(field(e, "token")), s.tokens[0]);
    int(field(e, "request"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_follows_the_chain_of_blockers() {
    let mut s = scene().await;
    let [sa, sb, sc] = s.ids;
    // Time passes for the waiters: waited_ms counts it.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let sc_word = sc.to_string();
    let v: Value = ok(&mut s.obs, &["EXPLAIN", "SESSION", &sc_word]).await;
    let b_request = check_chain(&s, &v);
    let top = pairs(&v);
    let first = pairs(&items(field(&top, "edges"))[0]);
    assert!(int(field(&first, "waited_ms")) >= 50, "{first:?}");

    // B's queued request, by its id: one step to A.
    let v: Value = ok(&mut s.obs, &["EXPLAIN", "REQUEST", &b_request.to_string()]).await;
    let top = pairs(&v);
    assert_eq!(int(field(&top, "session")), sb);
    let edges = items(field(&top, "edges"));
    assert_eq!(edges.len(), 1);
    assert_eq!(int(field(&pairs(&edges[0]), "blocker")), sa);

    // COUNT cuts and says so.
    let v: Value = ok(&mut s.obs, &["EXPLAIN", "SESSION", &sc_word, "COUNT", "1"]).await;
    let top = pairs(&v);
    assert_eq!(items(field(&top, "edges")).len(), 1);
    assert_eq!(int(field(&top, "truncated")), 1);

    // A waits for nothing; so does the asking connection (its own session by default).
    let v: Value = ok(&mut s.obs, &["EXPLAIN", "SESSION", &sa.to_string()]).await;
    assert!(items(field(&pairs(&v), "edges")).is_empty());
    assert!(items(field(&pairs(&v), "waiting")).is_empty());
    let v: Value = ok(&mut s.a, &["explain"]).await;
    assert_eq!(int(field(&pairs(&v), "session")), sa);

    // Errors.
    let (code, msg) = err(&mut s.obs, &["EXPLAIN", "REQUEST", "12345"]).await;
    assert_eq!(code, "ERR");
    assert!(msg.contains("not queued"), "{msg}");
    for bad in [
        &["EXPLAIN", "SESSION"][..],
        &["EXPLAIN", "BOGUS", "1"],
        &["EXPLAIN", "SESSION", "1", "REQUEST", "2"],
    ] {
        assert_eq!(err(&mut s.obs, bad).await.0, "ERR", "{bad:?}");
    }
    assert!(err(&mut s.obs, &["EXPLAIN", "SESSION", "x"])
        .await
        .1
        .contains("not an integer"));
    assert!(err(&mut s.obs, &["EXPLAIN", "COUNT", "0"])
        .await
        .1
        .contains("at least 1"));
    drop((s.b, s.c));
    s.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_is_a_map_in_resp3() {
    let s = scene().await;
    let mut obs3 = s.server.redis3().await;
    let v: Value = ok(&mut obs3, &["EXPLAIN", "SESSION", &s.ids[2].to_string()]).await;
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    let top = pairs(&v);
    for e in items(field(&top, "edges")) {
        assert!(matches!(e, Value::Map(_)), "{e:?}");
    }
    check_chain(&s, &v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waitgraph_lists_every_edge_and_draws_them() {
    let mut s = scene().await;
    let [sa, sb, sc] = s.ids;
    let v: Value = ok(&mut s.obs, &["WAITGRAPH"]).await;
    let top = pairs(&v);
    assert_eq!(names(&top), ["edges", "truncated"]);
    assert_eq!(int(field(&top, "truncated")), 0);
    let mut edges: Vec<(i64, i64, String, String)> = items(field(&top, "edges"))
        .iter()
        .map(|e| {
            let e = pairs(e);
            assert!(!names(&e).contains(&"depth"));
            (
                int(field(&e, "waiter")),
                int(field(&e, "blocker")),
                text(field(&e, "key")),
                text(field(&e, "type")),
            )
        })
        .collect();
    edges.sort();
    let mut want = vec![
        (sb, sa, "k1".to_string(), "holder".to_string()),
        (sc, sb, "k2".to_string(), "holder".to_string()),
    ];
    want.sort();
    assert_eq!(edges, want);

    // A queued-ahead edge: D waits exclusively on k2 behind C.
    let d = s.server.redis().await;
    let _parked = queue(&d, &["ACQUIRE", "k2", "TTL", "60000"]);
    wait_for_waiters(&mut s.obs, "k2", 2).await;
    let v: Value = ok(&mut s.obs, &["WAITGRAPH"]).await;
    let edges = items(field(&pairs(&v), "edges")).to_vec();
    assert_eq!(
        edges.len(),
        4,
        "D waits for B (holder) and C (queued ahead)"
    );
    let queued: Vec<Vec<(String, Value)>> = edges
        .iter()
        .map(pairs)
        .filter(|e| text(field(e, "type")) == "queued")
        .collect();
    assert_eq!(queued.len(), 1);
    let q = &queued[0];
    assert_eq!(int(field(q, "blocker")), sc);
    assert_eq!(text(field(q, "blocker_mode")), "shared");
    assert_eq!(
        names(q)[10..],
        ["blocker_request", "blocker_waited_ms"],
        "{q:?}"
    );

    let v: Value = ok(&mut s.obs, &["WAITGRAPH", "COUNT", "1"]).await;
    let top = pairs(&v);
    assert_eq!(items(field(&top, "edges")).len(), 1);
    assert_eq!(int(field(&top, "truncated")), 1);

    let dot: String = ok(&mut s.obs, &["waitgraph", "dot"]).await;
    check_dot(&dot, 4);
    assert!(dot.contains(&format!("\"session {sc}\" -> \"session {sb}\"")));
    assert!(dot.contains("style=dashed"));
    let dot: String = ok(&mut s.obs, &["WAITGRAPH", "DOT", "COUNT", "2"]).await;
    check_dot(&dot, 2);
    assert!(dot.contains("// truncated"));
    assert_eq!(err(&mut s.obs, &["WAITGRAPH", "DOT", "DOT"]).await.0, "ERR");
    assert_eq!(err(&mut s.obs, &["WAITGRAPH", "COUNT"]).await.0, "ERR");
}

/// A DOT document as Graphviz would parse it: `digraph` with balanced braces, one edge
/// line per edge, every node id quoted.
fn check_dot(dot: &str, edges: usize) {
    assert!(dot.starts_with("digraph "), "{dot}");
    let mut depth = 0i32;
    let mut in_quotes = false;
    let mut escaped = false;
    for ch in dot.chars() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '{' if !in_quotes => depth += 1,
            '}' if !in_quotes => {
                depth -= 1;
                assert!(depth >= 0, "unbalanced braces in {dot}");
            }
            _ => {}
        }
    }
    assert_eq!((depth, in_quotes), (0, false), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    let lines: Vec<&str> = dot.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(lines.len(), edges, "{dot}");
    for l in lines {
        let l = l.trim();
        assert!(l.starts_with("\"session "), "{l}");
        let (from, rest) = l.split_once(" -> ").expect("an edge");
        assert!(from.ends_with('"'), "{l}");
        assert!(rest.starts_with("\"session "), "{l}");
        assert!(l.ends_with("];"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_names_every_session_and_key_of_the_cycle() {
    let server = Server::start().await;
    let mut x = server.redis().await;
    let mut y = server.redis().await;
    let mut z = server.redis().await;
    let mut obs = server.redis().await;
    let (sx, sy, sz) = (
        client_id(&mut x).await,
        client_id(&mut y).await,
        client_id(&mut z).await,
    );
    acquire(&mut x, "a", &[]).await;
    acquire(&mut y, "b", &[]).await;
    acquire(&mut z, "c", &[]).await;
    let _p1 = queue(&x, &["ACQUIRE", "b"]);
    wait_for_waiters(&mut obs, "b", 1).await;
    let _p2 = queue(&y, &["ACQUIRE", "c"]);
    wait_for_waiters(&mut obs, "c", 1).await;
    // z asks for a: z -> x (holds a) -> y (holds b) -> z (holds c).
    let (code, msg) = err(&mut z, &["ACQUIRE", "a"]).await;
    assert_eq!(code, "DEADLOCK");
    assert_eq!(
        msg,
        format!(
            "DEADLOCK waiting would close a cycle: session {sz} waits for 'a' -> \
             session {sx} waits for 'b' -> session {sy} waits for 'c' -> session {sz}"
        )
    );
    // The refused request never entered the graph: z waits for nothing.
    let v: Value = ok(&mut obs, &["EXPLAIN", "SESSION", &sz.to_string()]).await;
    assert!(items(field(&pairs(&v), "edges")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_explains_over_the_binary_protocol() {
    use turnstile_client::{Blocker, Client, ExplainTarget, ModeKind};
    let server = Server::start().await;
    let connect = || async {
        tokio::time::timeout(REPLY_TIMEOUT, Client::connect(server.addr))
            .await
            .expect("connect in time")
            .expect("connect")
    };
    let (a, b, c) = (connect().await, connect().await, connect().await);
    let ga = a
        .lock("k1")
        .ttl(Duration::from_secs(60))
        .acquire()
        .await
        .unwrap();
    let gb = b
        .lock("k2")
        .ttl(Duration::from_secs(60))
        .acquire()
        .await
        .unwrap();
    let b2 = b.clone();
    let _pb = tokio::spawn(async move { b2.lock("k1").acquire().await.map(|_| ()) });
    let c2 = c.clone();
    let _pc = tokio::spawn(async move { c2.lock("k2").shared().acquire().await.map(|_| ()) });
    let mut obs = server.redis().await;
    wait_for_waiters(&mut obs, "k1", 1).await;
    wait_for_waiters(&mut obs, "k2", 1).await;

    let ex = c.explain(ExplainTarget::OwnSession).await.unwrap();
    assert_eq!(ex.session, c.session_id());
    assert_eq!(ex.waiting.len(), 1);
    assert!(!ex.truncated && ex.cycle.is_empty());
    let chain: Vec<(u32, u64, u64, &[u8])> = ex
        .edges
        .iter()
        .map(|e| (e.depth, e.waiter, e.blocker.session(), &e.key[..]))
        .collect();
    assert_eq!(
        chain,
        [
            (1, c.session_id(), b.session_id(), &b"k2"[..]),
            (2, b.session_id(), a.session_id(), &b"k1"[..])
        ]
    );
    assert_eq!(ex.edges[0].mode, ModeKind::Shared);
    match &ex.edges[0].blocker {
        Blocker::Holder {
            token,
            ttl_ms,
            mode,
            ..
        } => {
            assert_eq!(*token, gb.token());
            assert_eq!(*mode, ModeKind::Exclusive);
            assert!(*ttl_ms > 0 && *ttl_ms <= 60_000);
        }
        other => panic!("a holder, not {other:?}"),
    }
    match &ex.edges[1].blocker {
        Blocker::Holder { token, .. } => assert_eq!(*token, ga.token()),
        other => panic!("a holder, not {other:?}"),
    }
    // The same from another session, by session and by request id.
    let by_session = a
        .explain(ExplainTarget::Session(c.session_id()))
        .await
        .unwrap();
    let shape = |edges: &[turnstile_client::WaitEdge]| -> Vec<(u32, u64, u64, u64)> {
        edges
            .iter()
            .map(|e| (e.depth, e.waiter, e.request, e.blocker.session()))
            .collect()
    };
    assert_eq!(shape(&by_session.edges), shape(&ex.edges));
    let by_request = a
        .explain(ExplainTarget::Request(ex.edges[1].request))
        .await
        .unwrap();
    assert_eq!(by_request.session, b.session_id());
    assert_eq!(by_request.edges.len(), 1);
    assert!(a.explain(ExplainTarget::Request(7)).await.is_err());

    let graph = a.wait_graph(0).await.unwrap();
    assert_eq!(graph.edges.len(), 2);
    assert!(!graph.truncated);
    check_dot(&graph.to_dot(), 2);
    let graph = a.wait_graph(1).await.unwrap();
    assert_eq!((graph.edges.len(), graph.truncated), (1, true));
    drop((ga, gb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_request_is_named_by_its_frame_id() {
    use turnstile::protocol::binary as bin;
    let server = Server::start().await;
    let mut holder = Bin::connect(server.addr).await;
    let mut waiter = Bin::connect(server.addr).await;
    let r = holder
        .call(1, acq(b"k", bin::Mode::Exclusive, 60_000, None))
        .await;
    assert!(matches!(r, bin::Response::Granted { .. }), "{r:?}");
    let r = waiter
        .call(41, acq(b"k", bin::Mode::Exclusive, 60_000, None))
        .await;
    assert!(matches!(r, bin::Response::Queued), "{r:?}");
    let r = waiter
        .call(
            42,
            bin::Request::Explain {
                target: turnstile_proto::ExplainTarget::OwnRequest(41),
                count: 0,
            },
        )
        .await;
    let bin::Response::Explain(ex) = r else {
        panic!("EXPLAIN_RESULT, not {r:?}")
    };
    assert_eq!(ex.session, waiter.session());
    assert_eq!(ex.edges.len(), 1);
    assert_eq!(ex.edges[0].blocker.session(), holder.session());
    let r = waiter
        .call(
            43,
            bin::Request::Explain {
                target: turnstile_proto::ExplainTarget::OwnRequest(40),
                count: 0,
            },
        )
        .await;
    assert!(matches!(r, bin::Response::Error(_)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_writes_the_dot_file() {
    let s = scene().await;
    let file = std::env::temp_dir().join(format!(
        "turnstile-issue9-waits-{}-{}.dot",
        std::process::id(),
        s.server.addr.port()
    ));
    let port = s.server.addr.port().to_string();
    let path = file.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(["cli", "-p", &port, "--waitgraph-dot"])
            .arg(&path)
            .env_remove("TURNSTILE_PASS")
            .output()
            .expect("run turnstile cli --waitgraph-dot")
    });
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("the cli ends by itself")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dot = std::fs::read_to_string(&file).expect("the DOT file was written");
    let _ = std::fs::remove_file(&file);
    check_dot(&dot, 2);
    let [sa, sb, sc] = s.ids;
    assert!(dot.contains(&format!("\"session {sb}\" -> \"session {sa}\"")));
    assert!(dot.contains(&format!("\"session {sc}\" -> \"session {sb}\"")));
    // Its help names the option.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["cli", "--help"])
        .output()
        .expect("run turnstile cli --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--waitgraph-dot <FILE>"));
}

/// Three in-process cluster nodes (node 3 with `--follower-reads stale`): EXPLAIN and
/// WAITGRAPH are reads, served as INSPECT is: by the leader behind a read index, refused
/// by a follower with NOTLEADER naming the leader, or answered by a stale follower from its
/// own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_serves_explain_as_a_read() {
    // Six free loopback ports, all bound at once so none is handed out twice.
    let held: Vec<std::net::TcpListener> = (0..6)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<std::net::SocketAddr> = held.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(held);
    let (clients, rafts) = (&ports[..3], &ports[3..]);
    let members: String = (0..3)
        .map(|i| format!("{}={}/{}", i + 1, rafts[i], clients[i]))
        .collect::<Vec<_>>()
        .join(",");
    let base = std::env::temp_dir().join(format!(
        "turnstile-issue9-cluster-{}-{}",
        std::process::id(),
        clients[0].port()
    ));
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut config = turnstile::Config::default();
        config.data_dir = base.join(format!("node-{}", i + 1));
        config.node_id = Some(i as u64 + 1);
        config.raft_addr = Some(rafts[i].to_string());
        config.advertise_addr = Some(clients[i].to_string());
        config.cluster = Some(turnstile::config::parse_members(&members).expect("members"));
        config.heartbeat_ms = 50;
        config.election_timeout_ms = 200;
        if i == 2 {
            config.follower_reads = "stale".into();
        }
        nodes.push(Server::start_at(config, clients[i]).await);
    }
    // The leader: the node that grants an ACQUIRE (one whose HELLO says leader may not
    // have committed its term's first entry yet: it refuses until then).
    let mut leader = None;
    'find: for _ in 0..500 {
        for (i, n) in nodes.iter().enumerate() {
            let Ok(Ok(mut con)) = tokio::time::timeout(
                Duration::from_secs(1),
                redis::Client::open(n.url())
                    .unwrap()
                    .get_multiplexed_async_connection(),
            )
            .await
            else {
                continue;
            };
            if q::<i64>(&mut con, &c(&["ACQUIRE", "k1", "TTL", "60000"]))
                .await
                .is_ok()
            {
                leader = Some((i, con));
                break 'find;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (leader, a) = leader.expect("a leader within 10 s");
    let b = nodes[leader].redis().await;
    let _parked = queue(&b, &["ACQUIRE", "k1", "TTL", "60000"]);
    let mut obs = nodes[leader].redis().await;
    wait_for_waiters(&mut obs, "k1", 1).await;
    let v: Value = ok(&mut obs, &["WAITGRAPH"]).await;
    assert_eq!(items(field(&pairs(&v), "edges")).len(), 1);
    let b_session = int(field(
        &pairs(&items(field(&pairs(&v), "edges"))[0]),
        "waiter",
    ));
    let v: Value = ok(&mut obs, &["EXPLAIN", "SESSION", &b_session.to_string()]).await;
    assert_eq!(items(field(&pairs(&v), "edges")).len(), 1);
    for (i, n) in nodes.iter().enumerate() {
        if i == leader {
            continue;
        }
        let mut con = n.redis().await;
        if i == 2 {
            // Stale: the follower's own state, which catches up.
            eventually("the stale follower shows the edge", || {
                let mut con = con.clone();
                async move {
                    let v: Value = ok(&mut con, &["WAITGRAPH"]).await;
                    items(field(&pairs(&v), "edges")).len() == 1
                }
            })
            .await;
            let dot: String = ok(&mut con, &["WAITGRAPH", "DOT"]).await;
            check_dot(&dot, 1);
        } else {
            let leader_addr = clients[leader].to_string();
            for words in [&["EXPLAIN"][..], &["WAITGRAPH"], &["WAITGRAPH", "DOT"]] {
                // A follower that has not heard from the new leader yet says NOTLEADER
                // alone; it names the leader soon.
                eventually("NOTLEADER naming the leader", || {
                    let mut con = con.clone();
                    let leader_addr = leader_addr.clone();
                    async move {
                        let (code, msg) = err(&mut con, words).await;
                        assert_eq!(code, "NOTLEADER", "{words:?}: {msg}");
                        msg.contains(&leader_addr)
                    }
                })
                .await;
            }
        }
    }
    drop((a, b, obs));
    for n in nodes {
        n.stop().await;
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// EXPLAIN and WAITGRAPH need the `locks` permission, and leave out (and do not follow)
/// edges on keys the user may not access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_hides_keys_and_needs_locks() {
    let file =
        std::env::temp_dir().join(format!("turnstile-issue9-acl-{}.acl", std::process::id()));
    std::fs::write(
        &file,
        "user lister on >l ~k1 +locks\nuser locker on >x ~* +@lock\n",
    )
    .expect("write the users file");
    let server = Server::start_with(turnstile::Config {
        users_file: Some(file.clone()),
        ..turnstile::Config::default()
    })
    .await;
    let (mut a, mut b, mut obs) = (
        server.redis().await,
        server.redis().await,
        server.redis().await,
    );
    let c = server.redis().await;
    acquire(&mut a, "k1", &["TTL", "60000"]).await;
    acquire(&mut b, "k2", &["TTL", "60000"]).await;
    let _p1 = queue(&b, &["ACQUIRE", "k1"]);
    wait_for_waiters(&mut obs, "k1", 1).await;
    let mut c_id = c.clone();
    let sc = client_id(&mut c_id).await;
    let _p2 = queue(&c, &["ACQUIRE", "k2"]);
    wait_for_waiters(&mut obs, "k2", 1).await;

    let mut lister = connect_url(&format!("redis://lister:l@{}", server.addr)).await;
    let v: Value = ok(&mut lister, &["WAITGRAPH"]).await;
    let edges = items(field(&pairs(&v), "edges")).to_vec();
    assert_eq!(edges.len(), 1);
    assert_eq!(text(field(&pairs(&edges[0]), "key")), "k1");
    // C waits on k2, which lister may not see: nothing is shown or followed.
    let v: Value = ok(&mut lister, &["EXPLAIN", "SESSION", &sc.to_string()]).await;
    assert!(items(field(&pairs(&v), "edges")).is_empty());
    let mut locker = connect_url(&format!("redis://locker:x@{}", server.addr)).await;
    for words in [&["EXPLAIN"][..], &["WAITGRAPH", "DOT"]] {
        assert_eq!(err(&mut locker, words).await.0, "NOPERM", "{words:?}");
    }
    let _ = std::fs::remove_file(&file);
}
