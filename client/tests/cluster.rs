//! The client against a real 3-node cluster (separate processes, see
//! `common/cluster.rs`): it finds the leader through NOTLEADER redirects, and when the
//! leader is killed it resumes its session on the new leader with its holds (same
//! session, same token, renewed by the watchdog) and its queued and unanswered ACQUIREs
//! (protocol.md 4.8, "Cluster mode").

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use tokio::task::block_in_place;
use turnstile_client::{Client, Events, KeyState, SessionEvent};

/// Runs a cluster node when this test binary is started as one (see
/// `common::cluster`); a no-op otherwise.
#[test]
fn cluster_node_process() {
    common::cluster::node_main_if_child();
}

/// Longest a failover may take, from the kill to the client's resume.
const FAILOVER: Duration = Duration::from_secs(15);

async fn connect(addrs: Vec<String>) -> Client {
    within(
        "connect",
        Client::builder()
            .addrs(addrs)
            .session_timeout(Duration::from_secs(15))
            .backoff(Duration::from_millis(10), Duration::from_millis(200))
            .connect(),
    )
    .await
    .expect("connect to the cluster")
}

/// INSPECT, retried while the client is between leaders.
async fn inspect(client: &Client, key: &str) -> Option<KeyState> {
    let deadline = tokio::time::Instant::now() + FAILOVER;
    loop {
        match within("inspect", client.inspect(key)).await {
            Ok(state) => return state,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("inspect {key}: {e}"),
        }
    }
}

/// `(session, token)` of every holder of `key`, and the waiting sessions.
async fn holders_and_waiters(client: &Client, key: &str) -> (Vec<(u64, u64)>, Vec<u64>) {
    match inspect(client, key).await {
        Some(s) => (
            s.holders.iter().map(|h| (h.session, h.token)).collect(),
            s.waiters.iter().map(|w| w.session).collect(),
        ),
        None => (Vec::new(), Vec::new()),
    }
}

async fn reconnected(events: &mut Events) -> SessionEvent {
    let wait = async {
        loop {
            match events.recv().await {
                Some(e @ SessionEvent::Reconnected { .. }) => return e,
                Some(_) => {}
                None => panic!("the client is gone"),
            }
        }
    };
    tokio::time::timeout(FAILOVER, wait)
        .await
        .expect("the client reconnects after the failover")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_finds_the_leader_through_a_follower() {
    let cluster = block_in_place(|| Cluster::start("redirect", 3, 15_000));
    // At once, probably before an election has finished: the client waits for a leader.
    let early = connect(cluster.addrs()).await;
    let leader = block_in_place(|| cluster.wait_leader());
    let leader_addr = cluster.node(leader).addr();
    let g = within("acquire", early.lock("early").acquire())
        .await
        .expect("served by the leader");
    assert_eq!(early.server_addr(), Some(leader_addr.clone()));

    // Given only a follower, the client follows its NOTLEADER to the leader.
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let c = connect(vec![cluster.node(follower).addr()]).await;
    assert_eq!(c.server_addr(), Some(leader_addr.clone()));
    let h = within("acquire", c.lock("redirected").acquire())
        .await
        .expect("granted");
    let (holders, _) = holders_and_waiters(&c, "redirected").await;
    assert_eq!(holders, [(c.session_id(), h.token())]);

    // Every node, the leader last.
    let mut addrs = cluster.addrs();
    addrs.sort_by_key(|a| *a == leader_addr);
    let d = connect(addrs).await;
    assert_eq!(d.server_addr(), Some(leader_addr));
    let (holders, _) = holders_and_waiters(&d, "early").await;
    assert_eq!(holders, [(early.session_id(), g.token())]);
    drop((g, h));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_and_a_queued_acquire_survive_the_leaders_death() {
    let mut cluster = block_in_place(|| Cluster::start("failover", 3, 15_000));
    let leader = block_in_place(|| cluster.wait_leader());
    let a = connect(cluster.addrs()).await;
    let b = connect(cluster.addrs()).await;
    let (sa, sb) = (a.session_id(), b.session_id());
    let mut events = a.events();
    // The TTL must outlast the failover plus a renewal period, or the watchdog gives the
    // guard up (Lost::Unreachable) before it can reach the new leader.
    let g = within(
        "a acquires",
        a.lock("k").ttl(Duration::from_secs(5)).acquire(),
    )
    .await
    .expect("granted");
    let token = g.token();
    let queued = {
        let b = b.clone();
        tokio::spawn(async move {
            b.lock("k")
                .ttl(Duration::from_secs(10))
                .wait(Duration::from_secs(25))
                .acquire()
                .await
        })
    };
    eventually("b queues", || async {
        holders_and_waiters(&a, "k").await.1 == [sb]
    })
    .await;

    block_in_place(|| cluster.kill9(leader));
    let ev = reconnected(&mut events).await;
    assert_eq!(
        ev,
        SessionEvent::Reconnected {
            resumed: true,
            session: sa
        }
    );
    let now_at = a.server_addr().expect("connected");
    assert_ne!(
        cluster.id_of(&now_at),
        Some(leader),
        "resumed on the new leader"
    );

    // Past the lease's TTL and the election timeout the new leader added to it: the
    // watchdog renews it on the new leader.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(g.is_lost(), None);
    let (holders, waiters) = holders_and_waiters(&a, "k").await;
    assert_eq!(holders, [(sa, token)], "same session, same token");
    assert_eq!(waiters, [sb], "the queued ACQUIRE is still queued");

    // The holder releases on the new leader: the ACQUIRE queued before the kill is
    // granted.
    within("release", g.release()).await.expect("released");
    let got = tokio::time::timeout(FAILOVER, queued)
        .await
        .expect("the queued ACQUIRE completes")
        .expect("task")
        .expect("granted");
    assert!(got.token() > token, "{} > {token}", got.token());
    assert_eq!(b.session_id(), sb, "b resumed its session too");
    let (holders, waiters) = holders_and_waiters(&a, "k").await;
    assert_eq!(holders, [(sb, got.token())]);
    assert!(waiters.is_empty());
    within("release", got.release()).await.expect("released");
}

/// An ACQUIRE the leader never answered (it was stopped, then killed) is sent again to
/// the new leader after the resume, and granted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_acquire_is_sent_again_to_the_new_leader() {
    let mut cluster = block_in_place(|| Cluster::start("unanswered", 3, 15_000));
    let leader = block_in_place(|| cluster.wait_leader());
    let a = connect(cluster.addrs()).await;
    let sa = a.session_id();
    let mut events = a.events();
    within("ping", a.ping()).await.expect("pong");

    block_in_place(|| cluster.signal(leader, "-STOP"));
    let pending = {
        let a = a.clone();
        tokio::spawn(async move {
            a.lock("u")
                .ttl(Duration::from_secs(10))
                .wait(Duration::from_secs(25))
                .acquire()
                .await
        })
    };
    let others: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    let new_leader = block_in_place(|| cluster.wait_leader_among(&others));
    assert!(!pending.is_finished(), "a stopped leader answers nothing");
    block_in_place(|| cluster.kill9(leader));

    let ev = reconnected(&mut events).await;
    assert_eq!(
        ev,
        SessionEvent::Reconnected {
            resumed: true,
            session: sa
        }
    );
    let g = tokio::time::timeout(FAILOVER, pending)
        .await
        .expect("the ACQUIRE completes")
        .expect("task")
        .expect("granted by the new leader");
    assert_eq!(
        a.server_addr(),
        Some(cluster.node(new_leader).addr()),
        "on the new leader"
    );
    let (holders, waiters) = holders_and_waiters(&a, "u").await;
    assert_eq!(holders, [(sa, g.token())]);
    assert!(waiters.is_empty());
    within("release", g.release()).await.expect("released");
}

/// A multi-lock goes through the log like any change: granted at once on the leader with
/// one token per key, queued on every key and granted all together when the holder lets
/// go, and refused by a follower with NOTLEADER (text mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_lock_is_replicated() {
    let cluster = block_in_place(|| Cluster::start("multi", 3, 15_000));
    let leader = block_in_place(|| cluster.wait_leader());
    let a = connect(cluster.addrs()).await;
    let b = connect(cluster.addrs()).await;
    let guards = within(
        "multi",
        a.lock_many().exclusive("m1").shared("m2").acquire(),
    )
    .await
    .expect("granted");
    assert_eq!(guards.len(), 2);
    let (holders, _) = holders_and_waiters(&b, "m1").await;
    assert_eq!(holders, [(a.session_id(), guards[0].token())]);
    let queued = tokio::spawn({
        let b = b.clone();
        async move {
            b.lock_many()
                .exclusive("m2")
                .exclusive("m1")
                .exclusive("m3")
                .wait(Duration::from_secs(10))
                .acquire()
                .await
        }
    });
    let deadline = tokio::time::Instant::now() + FAILOVER;
    while holders_and_waiters(&a, "m3").await.1 != [b.session_id()] {
        assert!(tokio::time::Instant::now() < deadline, "never queued on m3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = guards[0].token();
    for g in guards {
        g.release().await.expect("released");
    }
    let got = within("queued multi", queued)
        .await
        .expect("joined")
        .expect("granted");
    assert_eq!(got.len(), 3);
    assert!(got[1].token() > first, "m1's token went up");
    for (g, key) in got.iter().zip(["m2", "m1", "m3"]) {
        let (holders, waiters) = holders_and_waiters(&a, key).await;
        assert_eq!(holders, [(b.session_id(), g.token())]);
        assert!(waiters.is_empty());
    }
    // Text mode on a follower: NOTLEADER naming the leader.
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let reply = block_in_place(|| {
        common::cluster::text_command(&cluster.node(follower).addr(), "MACQUIRE 1 t1 EXCLUSIVE")
    })
    .expect("a reply");
    assert!(reply.starts_with("NOTLEADER"), "{reply}");
    drop(got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_goes_through_the_cluster() {
    let cluster = block_in_place(|| Cluster::start("convert", 3, 15_000));
    block_in_place(|| cluster.wait_leader());
    let a = connect(cluster.addrs()).await;
    let b = connect(cluster.addrs()).await;
    let mut ga = within("a shared", a.lock("rw").shared().acquire())
        .await
        .expect("granted");
    let gb = within("b shared", b.lock("rw").shared().acquire())
        .await
        .expect("granted");
    let first = ga.token();
    assert!(!within("try upgrade", ga.upgrade(Some(Duration::ZERO)))
        .await
        .expect("answered"));
    // The upgrade queues (proposed), then is granted by b's release (another entry).
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gb.release().await
    });
    assert!(within("upgrade", ga.upgrade(None)).await.expect("upgraded"));
    within("b released", release)
        .await
        .expect("joined")
        .expect("released");
    assert!(ga.token() > first);
    within("downgrade", ga.downgrade())
        .await
        .expect("downgraded");
    let gb = within("b reads again", b.lock("rw").shared().try_acquire())
        .await
        .expect("answered")
        .expect("shared next to a downgraded hold");
    drop(gb);
    within("release", ga.release()).await.expect("released");

    // Text mode on the leader: CONVERT is proposed like ACQUIRE.
    let leader = block_in_place(|| cluster.wait_leader());
    let addr = cluster.node(leader).addr();
    let replies = block_in_place(|| {
        text_session(
            &addr,
            &[
                "ACQUIRE t SHARED",
                "CONVERT t EXCLUSIVE",
                "CONVERT t SHARED",
                "CONVERT u SHARED",
            ],
        )
    });
    let token = |r: &str| -> u64 { r.strip_prefix(':').expect("an integer").parse().unwrap() };
    let (shared, upgraded, downgraded) =
        (token(&replies[0]), token(&replies[1]), token(&replies[2]));
    assert!(upgraded > shared);
    assert_eq!(downgraded, upgraded);
    assert!(replies[3].starts_with("-NOTHELD"), "{replies:?}");
}

/// Sends inline commands on one connection, one at a time, and returns each reply's
/// first line.
fn text_session(addr: &str, commands: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(stream.try_clone().expect("clone"));
    let mut w = stream;
    commands
        .iter()
        .map(|c| {
            w.write_all(format!("{c}\r\n").as_bytes()).expect("write");
            let mut line = String::new();
            r.read_line(&mut line).expect("reply");
            line.trim_end().to_string()
        })
        .collect()
}
