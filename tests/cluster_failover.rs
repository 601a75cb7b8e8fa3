//! Failover of a real three-node cluster (`turnstile serve --node-id`, one process per
//! node, raft links through the proxies of `tests/cluster_common`) under concurrent lock
//! traffic, judged by a history checker.
//!
//! Client tasks ([`workload`]) lock, renew and release a few keys, following `NOTLEADER`
//! redirects and reconnecting after errors, and record every acknowledged grant in one
//! [`History`] on one monotonic clock. Meanwhile the test:
//!
//! 1. kills the leader with SIGKILL, again and again, restarting it each time on its data
//!    directory (`leader_kills_keep_every_acknowledged_grant`);
//! 2. isolates the leader from the other nodes, cutting or black-holing its raft links,
//!    then heals (`isolated_leader_stops_granting`);
//! 3. pauses the leader with SIGSTOP until another node serves, then resumes it
//!    (`paused_leader_grants_nothing_after_losing_leadership`);
//! 4. adds a fourth node as a learner, promotes it and removes the leader
//!    (`membership_change_under_load`);
//! 5. queues sessions on a key in a known order, kills the leader, and checks that the
//!    new leader has the same queue and grants it in that order
//!    (`waiter_queue_survives_failover_in_fifo_order`).
//!
//! What is checked (see `cluster_common/history.rs` for why each check is sound):
//!
//! - after every failure a new leader serves within [`FAILOVER_LIMIT`]; the time from the
//!   kill (isolation, pause) to the first grant on another node is the failover time;
//! - a lock acquired on the leader just before the failure (a "survivor", 60 s lease) is
//!   held, with its token, on the new leader;
//! - a linearizable INSPECT of every key on the new leader shows every acknowledged hold
//!   whose lease cannot have ended and whose client still uses it, at most one exclusive
//!   holder, and a fencing token at least every token acknowledged before;
//! - an isolated or paused leader acknowledges no grant for a request sent after it was
//!   cut off (once another node leads, it cannot commit anything);
//! - over the whole history: no two clients held a key at once (judged from send and
//!   acknowledgement times and the lease bound), tokens follow grant order and are never
//!   issued twice, no RELEASE or RENEW found a hold gone before its lease could end;
//! - at the end every node has applied the same log and INSPECT of every key agrees on
//!   every node (followers answer from their own state, `--follower-reads stale`).
//!
//! Tuning (environment): `TURNSTILE_CLUSTER_KILLS` (3), `TURNSTILE_CLUSTER_PARTITIONS`
//! (2), `TURNSTILE_CLUSTER_PAUSES` (1), `TURNSTILE_CLUSTER_CLIENTS` (8),
//! `TURNSTILE_CLUSTER_SEED` (random, printed), `TURNSTILE_CLUSTER_ELECTION_MS` (400),
//! `TURNSTILE_CLUSTER_HEARTBEAT_MS` (100), `TURNSTILE_CLUSTER_KEEP` (keep the work
//! directory), `TURNSTILE_CLUSTER_DUMP` (print every acknowledged hold at the end).
//!
//! A negative control: with `TURNSTILE_CLUSTER_OVERCLAIM=3` the clients believe their
//! leases are three times longer than they asked for and hold every lock past its real
//! lease. Wherever a leader lives long enough for a hold to outlast its lease, the checks
//! must fail (a hold missing from INSPECT, RELEASE answered NOTHELD early, two holders at
//! once), e.g. `TURNSTILE_CLUSTER_OVERCLAIM=3 TURNSTILE_CLUSTER_KILLS=3
//! TURNSTILE_CLUSTER_PARTITIONS=5 TURNSTILE_CLUSTER_PAUSES=1 cargo test --test
//! cluster_failover -- --ignored long_run` fails; the short CI tests change leaders too
//! often for it to show every time.
//!
//! The ignored `long_run` test mixes all three failures in one cluster
//! (defaults: 100 kills, 20 partitions, 10 pauses); `scripts/cluster-long.sh` runs it on
//! a release build and prints a summary. The tests run one at a time (a static mutex):
//! each runs three server processes and a dozen client tasks on a small machine.
//!
//! Only processes these tests started are signalled, by the PID of their `Child`.

mod cluster_common;
#[allow(unused_imports)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_common::history::{self, History, Inspect};
use cluster_common::proxy::Link;
use cluster_common::resp::{self, Conn, Reply};
use cluster_common::workload::{lock, Rng, Settings, Workload};
use cluster_common::{env_u64, Cluster, Options, ADMIN_TIMEOUT};

/// Longest a failover (failure to the first grant on another node) may take.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);
/// Longest any other wait of the driver may take.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// TTL of the clients' requests, unless the nodes' minimum (four election timeouts) is
/// longer.
const TTL: Duration = Duration::from_millis(2000);
/// WAIT of the clients' requests.
const WAIT: Duration = Duration::from_millis(300);
/// Keys the clients lock.
const KEYS: usize = 12;
/// The lease of a survivor lock.
const SURVIVOR_TTL_MS: u64 = 60_000;

/// One cluster test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn seed() -> u64 {
    match std::env::var("TURNSTILE_CLUSTER_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("TURNSTILE_CLUSTER_SEED is a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64) ^ u64::from(std::process::id())
        }
    }
}

/// `t` as `HH:MM:SS.mmm` UTC, to find a moment in the nodes' logs.
fn utc(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// SIGKILL the leader `TURNSTILE_CLUSTER_KILLS` times (3) under load, restarting it each
/// time: a new leader serves within the limit, survivors and acknowledged holds are on
/// it, and the whole history is correct.
#[test]
fn leader_kills_keep_every_acknowledged_grant() {
    let _serial = serial();
    runtime().block_on(async {
        let mut run = Run::start("kills", Options::new("kills")).await;
        for _ in 0..env_u64("TURNSTILE_CLUSTER_KILLS", 3) {
            run.kill_cycle().await;
        }
        run.finish().await;
    });
}

/// Isolate the leader from both followers (`TURNSTILE_CLUSTER_PARTITIONS` times, 2: links
/// cut, then black-holed), under load: the majority elects a leader and serves, the old
/// leader grants nothing sent after the isolation, and after healing it follows and
/// every node agrees.
#[test]
fn isolated_leader_stops_granting() {
    let _serial = serial();
    runtime().block_on(async {
        let mut run = Run::start("partition", Options::new("partition")).await;
        let modes = [Partition::Cut, Partition::Blackhole];
        for i in 0..env_u64("TURNSTILE_CLUSTER_PARTITIONS", 2) as usize {
            run.partition_cycle(modes[i % modes.len()]).await;
        }
        run.finish().await;
    });
}

/// SIGSTOP the leader until another node serves, then SIGCONT (`TURNSTILE_CLUSTER_PAUSES`
/// times, 1): nothing sent to the paused leader is granted by it, and it follows.
#[test]
fn paused_leader_grants_nothing_after_losing_leadership() {
    let _serial = serial();
    runtime().block_on(async {
        let mut run = Run::start("pause", Options::new("pause")).await;
        for _ in 0..env_u64("TURNSTILE_CLUSTER_PAUSES", 1) {
            run.pause_cycle().await;
        }
        run.finish().await;
    });
}

/// Under load: start node 4, `CLUSTER ADD-LEARNER 4`, `CLUSTER PROMOTE 4`, `CLUSTER REMOVE`
/// the leader; a new leader among 2..4 serves, then it is killed too (three voters left,
/// one down): still served, and the history is correct.
#[test]
fn membership_change_under_load() {
    let _serial = serial();
    runtime().block_on(async {
        let mut run = Run::start("membership", Options::new("membership")).await;
        run.membership_change().await;
        run.finish().await;
    });
}

/// Five sessions on one key on the leader: a holder (5 s lease) and four queued in a known
/// order. Kill the leader: the new leader shows the same holder and the same queue; when
/// the holder's lease runs out the first waiter gets the lock and the rest keep their order.
#[test]
fn waiter_queue_survives_failover_in_fifo_order() {
    let _serial = serial();
    runtime().block_on(async {
        let mut opts = Options::new("fifo");
        opts.session_timeout_ms = 60_000;
        let mut cluster = Cluster::start(opts).await.unwrap_or_else(|e| panic!("{e}"));
        fifo_after_failover(&mut cluster)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    });
}

/// A binary client loses its leader right after an ACQUIRE was granted, resumes its
/// session on the new leader and sends the ACQUIRE again with the same request id: it
/// learns "granted with token F" (the same token), and nothing is applied twice (one
/// RELEASE frees the key); a queued one answers QUEUED. protocol.md 4.8.
#[test]
fn a_retried_acquire_learns_its_outcome_on_the_new_leader() {
    let _serial = serial();
    runtime().block_on(async {
        let mut opts = Options::new("retry");
        opts.session_timeout_ms = 60_000;
        let mut cluster = Cluster::start(opts).await.unwrap_or_else(|e| panic!("{e}"));
        retry_after_failover(&mut cluster)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(30)));
    });
}

async fn retry_after_failover(cluster: &mut Cluster) -> Result<(), String> {
    use turnstile::protocol::binary::{self as bin, Mode, Request, Response};
    let granted = |r: Response| match r {
        Response::Granted { token } => Ok(token),
        other => Err(format!("expected GRANTED, got {other:?}")),
    };
    let leader = cluster.wait_leader(&[], Duration::from_secs(20)).await?;
    let addr = |c: &Cluster, id: u64| -> std::net::SocketAddr {
        c.node(id).client_addr().parse().expect("a socket address")
    };
    let ttl = u32::try_from(cluster.opts.min_ttl_ms().max(60_000)).expect("fits");
    // Connect where a leader took over (HELLO on a node that has not yet is NOTLEADER).
    async fn hello_on(a: std::net::SocketAddr, h: &bin::Hello<'_>) -> Result<common::Bin, String> {
        let mut last = String::new();
        for _ in 0..200 {
            match common::Bin::handshake(a, h).await {
                (b, Ok(_)) => return Ok(b),
                (_, Err(e)) => last = format!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("HELLO on {a} refused: {last}"))
    }
    let mut holder = hello_on(addr(cluster, leader), &common::hello()).await?;
    let mut b = hello_on(addr(cluster, leader), &common::hello()).await?;
    let secret = b.secret();
    let t = granted(
        b.call(5, common::acq(b"retry/mine", Mode::Exclusive, ttl, None))
            .await,
    )?;
    granted(
        holder
            .call(1, common::acq(b"retry/busy", Mode::Exclusive, ttl, None))
            .await,
    )?;
    let q = b
        .call(6, common::acq(b"retry/busy", Mode::Exclusive, ttl, None))
        .await;
    if q != Response::Queued {
        return Err(format!("expected QUEUED, got {q:?}"));
    }
    drop(b);
    drop(holder);
    cluster.kill9(leader);
    let new = cluster
        .wait_leader(&[leader], Duration::from_secs(20))
        .await?;
    let resume = bin::Hello {
        resume: Some(secret),
        ..common::hello()
    };
    let mut b = hello_on(addr(cluster, new), &resume).await?;
    let again = granted(
        b.call(5, common::acq(b"retry/mine", Mode::Exclusive, ttl, None))
            .await,
    )?;
    if again != t {
        return Err(format!("the retry got token {again}, the grant was {t}"));
    }
    let q = b
        .call(6, common::acq(b"retry/busy", Mode::Exclusive, ttl, None))
        .await;
    if q != Response::Queued {
        return Err(format!(
            "the queued request's retry: expected QUEUED, got {q:?}"
        ));
    }
    let r = b.call(7, Request::Release { key: b"retry/mine" }).await;
    if r != Response::Ok {
        return Err(format!("RELEASE: {r:?}"));
    }
    match b.call(8, Request::Inspect { key: b"retry/mine" }).await {
        Response::Inspect(None) => Ok(()),
        Response::Inspect(Some(s)) if s.holders.is_empty() => Ok(()),
        other => Err(format!(
            "one RELEASE must free the key (no second level): {other:?}"
        )),
    }
}

/// The long run (`scripts/cluster-long.sh`): one cluster, one history, kills, partitions
/// (cut, black-holed, one-way, slow) and pauses in a random order.
#[test]
#[ignore = "long: run with scripts/cluster-long.sh"]
fn long_run() {
    let _serial = serial();
    runtime().block_on(async {
        let mut run = Run::start("long", Options::new("long")).await;
        let kills = env_u64("TURNSTILE_CLUSTER_KILLS", 100);
        let partitions = env_u64("TURNSTILE_CLUSTER_PARTITIONS", 20);
        let pauses = env_u64("TURNSTILE_CLUSTER_PAUSES", 10);
        let mut plan: Vec<u8> = std::iter::repeat_n(0, kills as usize)
            .chain(std::iter::repeat_n(1, partitions as usize))
            .chain(std::iter::repeat_n(2, pauses as usize))
            .collect();
        for i in (1..plan.len()).rev() {
            let j = (run.rng.next() % (i as u64 + 1)) as usize;
            plan.swap(i, j);
        }
        let modes = [
            Partition::Cut,
            Partition::Blackhole,
            Partition::OneWay,
            Partition::Cut,
            Partition::Slow,
        ];
        let mut p = 0;
        for (i, step) in plan.iter().enumerate() {
            match step {
                0 => run.kill_cycle().await,
                1 => {
                    run.partition_cycle(modes[p % modes.len()]).await;
                    p += 1;
                }
                _ => run.pause_cycle().await,
            }
            if (i + 1) % 10 == 0 {
                run.progress(i + 1, plan.len());
            }
        }
        run.finish().await;
    });
}

/// The checker on made-up histories: a clean handoff passes, overlaps, reordered and
/// duplicated tokens and early losses are caught, unknown outcomes are not needed.
#[test]
fn history_checker_catches_what_it_should() {
    let ms = |m: u64| m * 1000;
    let hold =
        |key: &str, token: i64, sent: u64, acked: u64, given_up: Option<u64>| history::Hold {
            key: key.into(),
            token,
            client: 0,
            node: "n".into(),
            sent: ms(sent),
            acked: ms(acked),
            lease_end: ms(sent + 1000),
            given_up: given_up.map(ms),
            release_reply: None,
            renewals: 0,
        };
    // A released, then an expired hold, handed on in token order.
    let ok = vec![
        hold("a", 10, 0, 5, Some(50)),
        hold("a", 20, 10, 60, None),
        hold("a", 30, 70, 1065, Some(1100)),
        hold("b", 11, 0, 3, Some(4)),
    ];
    let r = history::check_holds(&ok, &[]);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!((r.holds, r.keys, r.pairs), (4, 2, 3));

    // Granted before the previous holder gave up.
    let overlap = vec![hold("a", 10, 0, 5, Some(50)), hold("a", 20, 10, 40, None)];
    assert_eq!(history::check_holds(&overlap, &[]).violations.len(), 1);
    // Granted while the previous lease could still run (no release sent).
    let lease = vec![hold("a", 10, 0, 5, None), hold("a", 20, 10, 900, None)];
    assert_eq!(history::check_holds(&lease, &[]).violations.len(), 1);
    // A larger token acknowledged before the smaller one was even sent.
    let order = vec![
        hold("a", 20, 0, 5, Some(6)),
        hold("a", 10, 100, 105, Some(106)),
    ];
    let v = history::check_holds(&order, &[]).violations;
    assert!(v.iter().any(|m| m.contains("grant order")), "{v:?}");
    // One token twice, on two keys.
    let dup = vec![hold("a", 10, 0, 5, Some(6)), hold("b", 10, 0, 5, Some(6))];
    assert!(history::check_holds(&dup, &[]).violations[0].contains("twice"));

    // NOTHELD before the lease could end is a loss; after it, not.
    let mut h = History::new();
    let i = h.granted("a", 10, 0, "n", ms(0), ms(5), ms(1000));
    h.not_held(i, "RELEASE", ms(999));
    assert_eq!(h.check().violations.len(), 1);
    let mut h = History::new();
    let i = h.granted("a", 10, 0, "n", ms(0), ms(5), ms(1000));
    h.not_held(i, "RELEASE", ms(1000));
    assert!(h.check().violations.is_empty());

    // INSPECT must show a hold still in use, fencing at least its token.
    let mut h = History::new();
    h.granted("a", 10, 0, "n", ms(0), ms(5), ms(1000));
    let shown = Inspect {
        kind: "lock".into(),
        fencing: 10,
        holders: vec![(1, "exclusive".into(), 10, 1, 1)],
        waiters: vec![],
    };
    assert_eq!(h.check_inspect("a", &shown, ms(10), ms(12)), (vec![], 1));
    let (bad, _) = h.check_inspect("a", &Inspect::default(), ms(10), ms(12));
    assert_eq!(bad.len(), 1, "{bad:?}"); // missing
    let other = Inspect {
        kind: "lock".into(),
        fencing: 5,
        holders: vec![(2, "exclusive".into(), 5, 1, 1)],
        waiters: vec![],
    };
    let (bad, _) = h.check_inspect("a", &other, ms(10), ms(12));
    assert_eq!(bad.len(), 2, "{bad:?}"); // missing, and fencing 5 < 10
                                         // After the lease could have ended, an empty key is fine.
    let empty_but_fenced = Inspect {
        fencing: 10,
        ..Inspect::default()
    };
    assert_eq!(
        h.check_inspect("a", &empty_but_fenced, ms(1001), ms(1002)),
        (vec![], 0)
    );
}

/// The proxy on a stand-in raft listener: tags links by the handshake, forwards, cuts,
/// black-holes and delays.
#[test]
fn proxy_tags_cuts_and_delays_links() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    runtime().block_on(async {
        // The stand-in node answers every byte with the same byte.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxies = cluster_common::proxy::Proxies::new();
        let addr = proxies
            .add(2, Arc::new(Mutex::new(target)))
            .await
            .expect("proxy");
        // Hello { magic, version: 1, from: 300 (a two-byte varint), to: 2, password: "pw" }
        let mut payload = b"TSRAFT\0\x01".to_vec();
        payload.extend_from_slice(&[1, 0xac, 0x02, 2, 2, b'p', b'w']);
        assert_eq!(cluster_common::proxy::parse_hello(&payload), Some((300, 2)));
        let mut hello = (payload.len() as u32).to_be_bytes().to_vec();
        hello.extend_from_slice(&payload);

        let limit = Duration::from_secs(5);
        let dial = || async {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(&hello).await.expect("hello");
            let mut echoed = vec![0u8; hello.len()];
            tokio::time::timeout(limit, s.read_exact(&mut echoed))
                .await
                .expect("hello echoed in time")
                .expect("hello echoed");
            assert_eq!(echoed, hello);
            s
        };
        let echo = |mut s: tokio::net::TcpStream| async move {
            s.write_all(b"x").await.ok()?;
            let mut b = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
                Ok(Ok(1)) => Some(s),
                _ => None,
            }
        };

        let s = echo(dial().await).await.expect("forwarded while up");
        assert_eq!(proxies.connections().get(&(300, 2)), Some(&1));
        assert_eq!(proxies.unparsed(), 0);

        // Cut: the open connection is closed, a new one is closed after its handshake.
        proxies.set(300, 2, Link::Cut);
        let mut s = s;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(limit, s.read(&mut b))
            .await
            .expect("closed in time");
        assert!(matches!(r, Ok(0) | Err(_)), "a cut link closes: {r:?}");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(&hello).await.expect("hello");
        let r = tokio::time::timeout(limit, s.read(&mut b))
            .await
            .expect("closed in time");
        assert!(matches!(r, Ok(0) | Err(_)), "a cut link refuses: {r:?}");
        // Another link is not affected.
        proxies.set(300, 2, Link::Up);
        let s = echo(dial().await).await.expect("forwarded again");

        // Blackhole: bytes vanish, the connection stays; leaving it closes the connection.
        proxies.set(300, 2, Link::Blackhole);
        let mut s = s;
        s.write_all(b"y").await.expect("write");
        let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await;
        assert!(r.is_err(), "nothing comes back through a black hole: {r:?}");
        proxies.heal();
        let r = tokio::time::timeout(limit, s.read(&mut b))
            .await
            .expect("closed in time");
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "leaving the black hole closes: {r:?}"
        );

        // Delay: both directions are late by at least the delay.
        proxies.set(300, 2, Link::Delay(Duration::from_millis(150)));
        let mut s = dial().await;
        let t = Instant::now();
        s.write_all(b"z").await.expect("write");
        tokio::time::timeout(limit, s.read_exact(&mut b))
            .await
            .expect("delayed echo in time")
            .expect("echo");
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert!(proxies.bytes() > 0);
    });
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// How the leader is cut off in a partition cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Partition {
    /// Every link to and from it closed and refused.
    Cut,
    /// Every link to and from it swallowing bytes.
    Blackhole,
    /// Only its own connections to the others cut (it still hears them).
    OneWay,
    /// Every link to and from it slowed down by 300 ms; no failover required.
    Slow,
}

/// A lock taken on the leader just before a failure, to be found on the next leader.
struct Survivor {
    key: String,
    token: i64,
    sent: u64,
    /// Kept open until checked: closing it would end its session.
    conn: Option<Conn>,
}

#[derive(Default)]
struct Stats {
    kills: u64,
    partitions: u64,
    pauses: u64,
    kill_failovers: Vec<Duration>,
    partition_failovers: Vec<Duration>,
    pause_failovers: Vec<Duration>,
    traffic_failovers: Vec<Duration>,
    survivors_confirmed: u64,
    survivors_skipped: u64,
    inspect_rounds: u64,
    inspect_rounds_skipped: u64,
    holds_confirmed: u64,
    cutoff_checks: u64,
    convergence_checks: u64,
}

struct Run {
    name: String,
    cluster: Cluster,
    workload: Option<Workload>,
    history: Arc<Mutex<History>>,
    keys: Vec<String>,
    rng: Rng,
    stats: Stats,
    violations: Vec<String>,
    probes: u64,
    started: Instant,
}

fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    millis(sorted[i.min(sorted.len() - 1)])
}

fn describe_times(times: &[Duration]) -> String {
    let mut t = times.to_vec();
    t.sort();
    format!(
        "n={} p50={}ms p99={}ms max={}ms",
        t.len(),
        percentile(&t, 0.5),
        percentile(&t, 0.99),
        t.last().map_or(0, |d| millis(*d))
    )
}

impl Run {
    async fn start(name: &str, opts: Options) -> Run {
        let seed = seed();
        eprintln!("cluster test {name}: seed {seed} (TURNSTILE_CLUSTER_SEED to repeat)");
        let ttl = TTL.max(Duration::from_millis(opts.min_ttl_ms()));
        assert!(
            opts.session_timeout_ms > millis(ttl) + 2 * opts.election_ms,
            "the checks assume sessions outlive leases"
        );
        let mut cluster = Cluster::start(opts).await.unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = cluster.wait_leader(&[], WAIT_LIMIT).await {
            panic!("{e}\n{}", cluster.log_tails(30));
        }
        let keys: Vec<String> = (0..KEYS).map(|i| format!("{name}/key-{i}")).collect();
        let history = Arc::new(Mutex::new(History::new()));
        let settings = Settings {
            clients: env_u64("TURNSTILE_CLUSTER_CLIENTS", 8) as usize,
            keys: keys.clone(),
            ttl,
            wait: WAIT,
            seed,
            overclaim: env_u64("TURNSTILE_CLUSTER_OVERCLAIM", 1) as u32,
        };
        let workload = Workload::start(&settings, cluster.client_addrs(), history.clone());
        Run {
            name: name.to_string(),
            cluster,
            workload: Some(workload),
            history,
            keys,
            rng: Rng::new(seed.rotate_left(17)),
            stats: Stats::default(),
            violations: Vec::new(),
            probes: 0,
            started: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        lock(&self.history).now()
    }

    /// Fails the test with `what`, the state of the run and the nodes' logs.
    fn fail(&self, what: &str) -> ! {
        let counts = lock(&self.history).counts.clone();
        panic!(
            "[{}] {what}\ncounts: {counts:?}\nviolations so far: {:#?}\n{}",
            self.name,
            self.violations,
            self.cluster.log_tails(40)
        );
    }

    fn violation(&mut self, msg: String) {
        eprintln!("[{}] VIOLATION: {msg}", self.name);
        self.violations.push(msg);
    }

    async fn leader(&mut self, exclude: &[u64]) -> u64 {
        match self.cluster.wait_leader(exclude, WAIT_LIMIT).await {
            Ok(id) => id,
            Err(e) => self.fail(&e),
        }
    }

    /// Lets the clients work for `lo..=hi` ms.
    async fn traffic(&mut self, lo: u64, hi: u64) {
        let d = self.rng.millis(lo, hi);
        tokio::time::sleep(d).await;
    }

    /// Takes a survivor lock on `leader`.
    async fn survivor(&mut self, leader: u64) -> Option<Survivor> {
        self.probes += 1;
        let key = format!("{}/survivor-{}", self.name, self.probes);
        let addr = self.cluster.node(leader).client_addr();
        let mut conn = Conn::connect(&addr, ADMIN_TIMEOUT).await.ok()?;
        let sent = self.now();
        let ttl = SURVIVOR_TTL_MS.to_string();
        match conn
            .call(&["ACQUIRE", &key, "TTL", &ttl, "WAIT", "0"], ADMIN_TIMEOUT)
            .await
        {
            Ok(Reply::Int(token)) => Some(Survivor {
                key,
                token,
                sent,
                conn: Some(conn),
            }),
            other => {
                eprintln!(
                    "[{}] survivor lock on node {leader} not taken: {other:?}",
                    self.name
                );
                None
            }
        }
    }

    /// INSPECT `key` on `node`: (reply parsed, sent, answered).
    async fn inspect(&self, conn: &mut Conn, key: &str) -> Result<(Inspect, u64, u64), String> {
        let vs = self.now();
        let r = conn
            .call(&["INSPECT", key], ADMIN_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let ve = self.now();
        if let Reply::Error(e) = &r {
            return Err(e.clone());
        }
        Ok((history::parse_inspect(&r)?, vs, ve))
    }

    /// Whether `node` led, in the same term, before and after a batch of reads: then
    /// every read in between went through its read index (not a stale follower read).
    async fn leading_term(&self, node: u64) -> Option<u64> {
        let r = self.cluster.replication(node).await.ok()?;
        (r.role() == "leader").then(|| r.term())
    }

    /// Checks the survivor on `leader`.
    async fn check_survivor(&mut self, s: Option<Survivor>, leader: u64) {
        let Some(mut s) = s else { return };
        let session_ms = self.cluster.opts.session_timeout_ms;
        let addr = self.cluster.node(leader).client_addr();
        let Some(term) = self.leading_term(leader).await else {
            self.stats.survivors_skipped += 1;
            return;
        };
        let result = match Conn::connect(&addr, ADMIN_TIMEOUT).await {
            Ok(mut c) => self.inspect(&mut c, &s.key).await,
            Err(e) => Err(e),
        };
        if self.leading_term(leader).await != Some(term) {
            self.stats.survivors_skipped += 1;
            return;
        }
        match result {
            Ok((insp, _, ve)) => {
                if insp.holders.iter().any(|h| h.2 == s.token) {
                    self.stats.survivors_confirmed += 1;
                } else if ve < s.sent + (session_ms.min(SURVIVOR_TTL_MS) - 1000) * 1000 {
                    self.violation(format!(
                        "survivor lock {} (token {}, acquired on the old leader before the failure) \
                         is not held on the new leader {leader}: INSPECT shows {insp:?}",
                        s.key, s.token
                    ));
                } else {
                    self.stats.survivors_skipped += 1;
                }
            }
            Err(e) => {
                eprintln!(
                    "[{}] survivor check on node {leader} skipped: {e}",
                    self.name
                );
                self.stats.survivors_skipped += 1;
            }
        }
        s.conn.take();
    }

    /// A linearizable INSPECT of every key on `leader`, compared with the history.
    async fn inspect_all(&mut self, leader: u64) {
        let addr = self.cluster.node(leader).client_addr();
        let Some(term) = self.leading_term(leader).await else {
            self.stats.inspect_rounds_skipped += 1;
            return;
        };
        let Ok(mut conn) = Conn::connect(&addr, ADMIN_TIMEOUT).await else {
            self.stats.inspect_rounds_skipped += 1;
            return;
        };
        let mut seen = Vec::new();
        for key in self.keys.clone() {
            match self.inspect(&mut conn, &key).await {
                Ok(r) => seen.push((key, r)),
                Err(_) => {
                    self.stats.inspect_rounds_skipped += 1;
                    return;
                }
            }
        }
        if self.leading_term(leader).await != Some(term) {
            self.stats.inspect_rounds_skipped += 1;
            return;
        }
        let mut bad = Vec::new();
        {
            let h = lock(&self.history);
            for (key, (insp, vs, ve)) in &seen {
                let (b, confirmed) = h.check_inspect(key, insp, *vs, *ve);
                bad.extend(b);
                self.stats.holds_confirmed += confirmed;
            }
        }
        for b in bad {
            self.violation(b);
        }
        self.stats.inspect_rounds += 1;
    }

    /// Tries a fresh probe key on the live nodes not in `exclude` (following redirects
    /// among them) until one grants it. Returns the time from `since` and the node.
    async fn probe_failover(&mut self, exclude: &[u64], since: Instant) -> (Duration, u64) {
        self.probes += 1;
        let key = format!("{}/failover-{}", self.name, self.probes);
        let deadline = since + FAILOVER_LIMIT;
        let mut candidates: Vec<u64> = Vec::new();
        let mut next: Option<u64> = None;
        let mut last = String::from("nothing tried");
        while Instant::now() < deadline {
            if candidates.is_empty() {
                candidates = self
                    .cluster
                    .live_ids()
                    .into_iter()
                    .filter(|i| !exclude.contains(i))
                    .collect();
                if candidates.is_empty() {
                    self.fail("no live node to fail over to");
                }
            }
            let id = next.take().unwrap_or_else(|| candidates.remove(0));
            let addr = self.cluster.node(id).client_addr();
            let limit = Duration::from_millis(1000);
            let ttl = self.cluster.opts.min_ttl_ms().max(2000).to_string();
            let r = match Conn::connect(&addr, limit).await {
                Ok(mut c) => c
                    .call(&["ACQUIRE", &key, "TTL", &ttl, "WAIT", "0"], limit)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match r {
                Ok(Reply::Int(_)) => return (since.elapsed(), id),
                Ok(r) => {
                    if let Some(Some(to)) = r.not_leader() {
                        next = self.cluster.id_of(&to).filter(|i| !exclude.contains(i));
                    }
                    last = format!("node {id}: {r:?}");
                }
                Err(e) => last = format!("node {id}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.fail(&format!(
            "no node outside {exclude:?} granted a lock within {FAILOVER_LIMIT:?} of the failure: {last}"
        ));
    }

    /// The time from `since` to the first grant the clients got from a node other than
    /// `old` (bounded; None if they got none yet).
    async fn traffic_failover(&self, since: Instant, old: u64) -> Option<Duration> {
        let old_addr = self.cluster.node(old).client_addr();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let first = {
                let h = lock(&self.history);
                let at = h.at(since);
                h.first_ack_after(at, &old_addr).map(|a| a - at)
            };
            if let Some(us) = first {
                return Some(Duration::from_micros(us));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the node `id`, back in the cluster, has applied what the leader had.
    async fn catch_up(&mut self, id: u64) {
        let leader = self.leader(&[]).await;
        if let Err(e) = self.cluster.wait_applied(leader, &[id], WAIT_LIMIT).await {
            self.fail(&e);
        }
    }

    /// SIGKILL the leader, check the failover, restart it.
    async fn kill_cycle(&mut self) {
        let leader = self.leader(&[]).await;
        self.traffic(200, 1000).await;
        let survivor = self.survivor(leader).await;
        self.traffic(0, 200).await;
        let killed_at = Instant::now();
        let killed_wall = std::time::SystemTime::now();
        self.cluster.kill9(leader);
        self.stats.kills += 1;
        let (took, new) = self.probe_failover(&[leader], killed_at).await;
        self.stats.kill_failovers.push(took);
        if let Some(t) = self.traffic_failover(killed_at, leader).await {
            self.stats.traffic_failovers.push(t);
        }
        self.check_survivor(survivor, new).await;
        self.inspect_all(new).await;
        self.traffic(200, 600).await;
        if let Err(e) = self.cluster.restart(leader).await {
            self.fail(&e);
        }
        self.catch_up(leader).await;
        eprintln!(
            "[{}] kill {} at {}: node {leader} killed, node {new} served after {} ms",
            self.name,
            self.stats.kills,
            utc(killed_wall),
            millis(took)
        );
    }

    /// Isolates the leader in `mode`, checks the majority's failover, heals.
    async fn partition_cycle(&mut self, mode: Partition) {
        let leader = self.leader(&[]).await;
        let ids = self.cluster.ids();
        self.traffic(200, 1000).await;
        let survivor = self.survivor(leader).await;
        match mode {
            Partition::Cut => self.cluster.proxies.isolate(leader, &ids, Link::Cut),
            Partition::Blackhole => self.cluster.proxies.isolate(leader, &ids, Link::Blackhole),
            Partition::Slow => {
                let link = Link::Delay(Duration::from_millis(300));
                self.cluster.proxies.isolate(leader, &ids, link);
            }
            Partition::OneWay => {
                for &o in ids.iter().filter(|&&o| o != leader) {
                    self.cluster.proxies.set(leader, o, Link::Cut);
                }
            }
        }
        let cut_at = Instant::now();
        let cut_wall = std::time::SystemTime::now();
        let cut_us = self.now();
        self.stats.partitions += 1;
        let old_addr = self.cluster.node(leader).client_addr();
        if mode == Partition::Slow {
            self.traffic(1500, 3000).await;
            self.cluster.proxies.heal();
            let now_leader = self.leader(&[]).await;
            self.check_survivor(survivor, now_leader).await;
            self.inspect_all(now_leader).await;
            eprintln!(
                "[{}] partition {} ({mode:?}) of node {leader}: healed, node {now_leader} leads",
                self.name, self.stats.partitions
            );
            return;
        }
        let (took, new) = self.probe_failover(&[leader], cut_at).await;
        self.stats.partition_failovers.push(took);
        self.check_survivor(survivor, new).await;
        self.inspect_all(new).await;
        self.traffic(500, 1500).await;
        self.inspect_all(new).await;
        // Requests sent to the old leader while it was cut off and another node led.
        let healed_us = self.now();
        self.cluster.proxies.heal();
        self.check_cut_off(&old_addr, cut_us, healed_us, "isolated");
        self.catch_up(leader).await;
        let r = self.cluster.replication(leader).await;
        if let Ok(r) = &r {
            if r.role() == "leader" {
                eprintln!(
                    "[{}] note: node {leader} leads again after healing",
                    self.name
                );
            }
        }
        eprintln!(
            "[{}] partition {} ({mode:?}) of node {leader} at {}: node {new} served after {} ms",
            self.name,
            self.stats.partitions,
            utc(cut_wall),
            millis(took)
        );
    }

    /// No grant by `old` (client address) for a request sent between `from` and `until`:
    /// once another node led it could not commit anything of its term.
    fn check_cut_off(&mut self, old: &str, from: u64, until: u64, how: &str) {
        self.stats.cutoff_checks += 1;
        let late: Vec<String> = lock(&self.history)
            .holds
            .iter()
            .filter(|x| x.node == old && x.sent >= from && x.sent < until)
            .map(|x| {
                format!(
                    "the {how} old leader {old} granted a request sent after it was cut off \
                     ({:.3}s..{:.3}s): token {} of '{}' sent {:.3}s, acknowledged {:.3}s",
                    from as f64 / 1e6,
                    until as f64 / 1e6,
                    x.token,
                    x.key,
                    x.sent as f64 / 1e6,
                    x.acked as f64 / 1e6
                )
            })
            .collect();
        for m in late {
            self.violation(m);
        }
    }

    /// SIGSTOP the leader until another node serves, then SIGCONT.
    async fn pause_cycle(&mut self) {
        let leader = self.leader(&[]).await;
        self.traffic(200, 1000).await;
        let survivor = self.survivor(leader).await;
        let old_addr = self.cluster.node(leader).client_addr();
        if let Err(e) = self.cluster.pause(leader) {
            self.fail(&e);
        }
        let paused_at = Instant::now();
        let paused_wall = std::time::SystemTime::now();
        let paused_us = self.now();
        self.stats.pauses += 1;
        let (took, new) = self.probe_failover(&[leader], paused_at).await;
        self.stats.pause_failovers.push(took);
        self.check_survivor(survivor, new).await;
        self.traffic(300, 1000).await;
        let resumed_us = self.now();
        if let Err(e) = self.cluster.resume(leader) {
            self.fail(&e);
        }
        self.traffic(500, 1000).await;
        self.check_cut_off(&old_addr, paused_us, resumed_us, "paused");
        self.catch_up(leader).await;
        let now_leader = self.leader(&[]).await;
        self.inspect_all(now_leader).await;
        eprintln!(
            "[{}] pause {} at {}: node {leader} stopped, node {new} served after {} ms",
            self.name,
            self.stats.pauses,
            utc(paused_wall),
            millis(took)
        );
    }

    /// A `CLUSTER ...` command on the leader, which must succeed.
    async fn admin(&mut self, words: &[&str]) -> Reply {
        match self.cluster.call_leader(words, WAIT_LIMIT).await {
            Ok((r @ Reply::Error(_), _)) => self.fail(&format!("{words:?} answered {r:?}")),
            Ok((r, _)) => r,
            Err(e) => self.fail(&e),
        }
    }

    async fn membership_change(&mut self) {
        let leader = self.leader(&[]).await;
        self.traffic(300, 800).await;
        if let Err(e) = self.cluster.add_node(4).await {
            self.fail(&e);
        }
        let raft = self.cluster.node(4).proxy.to_string();
        let client = self.cluster.node(4).client_addr();
        self.admin(&["CLUSTER", "ADD-LEARNER", "4", &raft, &client])
            .await;
        self.catch_up(4).await;
        let r = self.cluster.replication(4).await;
        eprintln!(
            "[{}] node 4 after ADD-LEARNER: {:?}",
            self.name,
            r.map(|r| r.role().to_string())
        );
        if let Some(w) = &self.workload {
            w.set_nodes(self.cluster.client_addrs());
        }
        self.traffic(300, 800).await;
        self.admin(&["CLUSTER", "PROMOTE", "4"]).await;
        let voters = match self
            .cluster
            .call_leader(&["CLUSTER", "STATUS"], WAIT_LIMIT)
            .await
        {
            Ok((r, _)) => {
                cluster_common::Replication::parse(&r.text().unwrap_or_default()).voters()
            }
            Err(e) => self.fail(&e),
        };
        if voters != [1, 2, 3, 4] {
            self.fail(&format!("after PROMOTE 4 the voters are {voters:?}"));
        }
        self.traffic(300, 800).await;
        let current = self.leader(&[]).await;
        let survivor = self.survivor(current).await;
        let removed_at = Instant::now();
        let id = current.to_string();
        // The leader removing itself may answer before or after it steps down.
        match self
            .cluster
            .call_leader(&["CLUSTER", "REMOVE", &id], WAIT_LIMIT)
            .await
        {
            Ok((r, by)) => eprintln!("[{}] CLUSTER REMOVE {id} on node {by}: {r:?}", self.name),
            Err(e) => self.fail(&e),
        }
        let remaining: Vec<String> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|&i| i != current)
            .map(|i| self.cluster.node(i).client_addr())
            .collect();
        if let Some(w) = &self.workload {
            w.set_nodes(remaining);
        }
        let (took, new) = self.probe_failover(&[current], removed_at).await;
        eprintln!(
            "[{}] node {current} (leader {leader} at the start) removed; node {new} served after {} ms",
            self.name,
            millis(took)
        );
        self.check_survivor(survivor, new).await;
        let voters = match self.cluster.replication(new).await {
            Ok(r) => r.voters(),
            Err(e) => self.fail(&e),
        };
        let expect: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != current).collect();
        if voters != expect {
            self.fail(&format!("after REMOVE {current} the voters are {voters:?}"));
        }
        self.traffic(500, 1000).await;
        self.inspect_all(new).await;
        // The removed node leaves; then the new configuration survives losing its leader.
        self.cluster.kill9(current);
        let killed_at = Instant::now();
        let leader2 = self.leader(&[]).await;
        self.cluster.kill9(leader2);
        self.stats.kills += 1;
        let (took, new2) = self.probe_failover(&[current, leader2], killed_at).await;
        self.stats.kill_failovers.push(took);
        self.inspect_all(new2).await;
        if let Err(e) = self.cluster.restart(leader2).await {
            self.fail(&e);
        }
        self.catch_up(leader2).await;
        self.traffic(300, 800).await;
    }

    fn progress(&self, done: usize, of: usize) {
        let h = lock(&self.history);
        eprintln!(
            "[{}] progress {done}/{of} after {:?}: {} grants, kills {}, partitions {}, pauses {}, \
             kill failovers {}",
            self.name,
            self.started.elapsed(),
            h.holds.len(),
            self.stats.kills,
            self.stats.partitions,
            self.stats.pauses,
            describe_times(&self.stats.kill_failovers)
        );
    }

    /// Every live node has applied the same log, and INSPECT of every key agrees.
    async fn converge(&mut self) {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut last = String::new();
        // Found once: finding a leader writes a probe, which would move the log on.
        let mut leader = self.leader(&[]).await;
        while Instant::now() < deadline {
            if self.leading_term(leader).await.is_none() {
                leader = self.leader(&[]).await;
            }
            let live = self.cluster.live_ids();
            let index = match self.cluster.wait_applied(leader, &live, WAIT_LIMIT).await {
                Ok(i) => i,
                Err(e) => self.fail(&e),
            };
            let mut keys = self.keys.clone();
            if let Ok(r) = resp::call_once(
                &self.cluster.node(leader).client_addr(),
                &["LOCKS", "COUNT", "100000"],
                ADMIN_TIMEOUT,
            )
            .await
            {
                for k in r.items().unwrap_or_default() {
                    if let Some(k) = k.text() {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
            }
            let mut views = Vec::new();
            for &id in &live {
                let mut view = Vec::new();
                if let Ok(mut c) =
                    Conn::connect(&self.cluster.node(id).client_addr(), ADMIN_TIMEOUT).await
                {
                    for k in &keys {
                        match self.inspect(&mut c, k).await {
                            Ok((i, _, _)) => view.push(i),
                            Err(e) => {
                                last = format!("INSPECT {k} on node {id}: {e}");
                                break;
                            }
                        }
                    }
                }
                views.push((id, view));
            }
            // Nothing may have been applied anywhere meanwhile.
            let mut still = true;
            for &id in &live {
                let applied = self
                    .cluster
                    .replication(id)
                    .await
                    .ok()
                    .and_then(|r| r.num("applied_index"));
                if applied != Some(index) {
                    still = false;
                    last = format!("node {id} moved on to {applied:?} from {index}");
                }
            }
            if still && views.iter().all(|(_, v)| v.len() == keys.len()) {
                let (first_id, first) = &views[0];
                for (id, view) in &views[1..] {
                    for (k, (a, b)) in keys.iter().zip(first.iter().zip(view)) {
                        if a != b {
                            self.violation(format!(
                                "nodes disagree at index {index}: INSPECT {k} on node {first_id} \
                                 shows {a:?}, on node {id} {b:?}"
                            ));
                        }
                    }
                }
                self.stats.convergence_checks += 1;
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.fail(&format!(
            "the nodes never held still long enough to compare: {last}"
        ));
    }

    /// Stops the clients, checks convergence and the whole history, prints the summary
    /// and fails on any violation.
    async fn finish(mut self) {
        if let Some(w) = self.workload.take() {
            w.stop(Duration::from_secs(30)).await;
        }
        self.converge().await;
        let unparsed = self.cluster.proxies.unparsed();
        if unparsed > 0 {
            self.fail(&format!(
                "{unparsed} raft connections had a handshake the proxy could not read: \
                 partitions cannot be aimed (has src/raft/network.rs's Hello changed?)"
            ));
        }
        let (report, counts, errors, grants) = {
            let h = lock(&self.history);
            if std::env::var_os("TURNSTILE_CLUSTER_DUMP").is_some() {
                for x in &h.holds {
                    eprintln!("[{}] hold {x:?}", self.name);
                }
            }
            (h.check(), h.counts.clone(), h.errors.clone(), h.holds.len())
        };
        let mut all = self.stats.kill_failovers.clone();
        all.extend(&self.stats.partition_failovers);
        all.extend(&self.stats.pause_failovers);
        let s = &self.stats;
        let mut sorted = s.kill_failovers.clone();
        sorted.sort();
        eprintln!(
            "[{}] failover after kill: {}; after partition: {}; after pause: {}; \
             first client grant after kill: {}",
            self.name,
            describe_times(&s.kill_failovers),
            describe_times(&s.partition_failovers),
            describe_times(&s.pause_failovers),
            describe_times(&s.traffic_failovers),
        );
        if !errors.is_empty() {
            eprintln!(
                "[{}] unexpected error replies (first {}): {errors:#?}",
                self.name,
                errors.len()
            );
        }
        let mut all_sorted = all.clone();
        all_sorted.sort();
        println!(
            "SUMMARY test={} kills={} partitions={} pauses={} grants_acknowledged={grants} \
             releases_acknowledged={} renewals_acknowledged={} acquires_sent={} wait_timeouts={} \
             unknown_acquires={} uncertain={} redirects={} other_errors={} holds_checked={} \
             pairs_checked={} keys_checked={} inspect_rounds={} inspect_rounds_skipped={} \
             holds_confirmed={} survivors_confirmed={} survivors_skipped={} cutoff_checks={} \
             convergence_checks={} failover_kill_p50_ms={} failover_kill_p99_ms={} \
             failover_kill_max_ms={} failover_all_p50_ms={} failover_all_p99_ms={} \
             failover_all_max_ms={} violations={} elapsed_s={}",
            self.name,
            s.kills,
            s.partitions,
            s.pauses,
            counts.releases_acked,
            counts.renewals_acked,
            counts.acquires,
            counts.timed_out,
            counts.unknown_acquires,
            counts.uncertain,
            counts.redirects,
            counts.other_errors,
            report.holds,
            report.pairs,
            report.keys,
            s.inspect_rounds,
            s.inspect_rounds_skipped,
            s.holds_confirmed,
            s.survivors_confirmed,
            s.survivors_skipped,
            s.cutoff_checks,
            s.convergence_checks,
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            sorted.last().map_or(0, |d| millis(*d)),
            percentile(&all_sorted, 0.5),
            percentile(&all_sorted, 0.99),
            all_sorted.last().map_or(0, |d| millis(*d)),
            self.violations.len() + report.violations.len(),
            self.started.elapsed().as_secs(),
        );
        let mut violations = std::mem::take(&mut self.violations);
        violations.extend(report.violations);
        if !violations.is_empty() {
            self.violations = violations;
            self.fail("the history has violations (listed above)");
        }
        if grants == 0 {
            self.fail("the clients were never granted anything");
        }
    }
}

/// The FIFO test's body (see `waiter_queue_survives_failover_in_fifo_order`).
async fn fifo_after_failover(cluster: &mut Cluster) -> Result<(), String> {
    let key = "fifo/queue";
    let leader = cluster.wait_leader(&[], WAIT_LIMIT).await?;
    let addr = cluster.node(leader).client_addr();
    let limit = Duration::from_secs(5);
    let mut holder = Conn::connect(&addr, limit).await?;
    let holder_ttl = cluster.opts.min_ttl_ms().max(5000);
    let t0 = match holder
        .call(
            &["ACQUIRE", key, "TTL", &holder_ttl.to_string(), "WAIT", "0"],
            limit,
        )
        .await
    {
        Ok(Reply::Int(t)) => t,
        other => return Err(format!("the first ACQUIRE answered {other:?}")),
    };
    let mut inspector = Conn::connect(&addr, limit).await?;
    let mut waiters = Vec::new();
    for i in 1..=4 {
        let mut c = Conn::connect(&addr, limit).await?;
        c.send(&["ACQUIRE", key, "TTL", "30000", "WAIT", "60000"], limit)
            .await
            .map_err(|e| e.to_string())?;
        waiters.push(c);
        // Each is queued before the next is sent: the queue order is the send order.
        let deadline = Instant::now() + limit;
        loop {
            let r = inspector
                .call(&["INSPECT", key], limit)
                .await
                .map_err(|e| e.to_string())?;
            let insp = history::parse_inspect(&r)?;
            if insp.waiters.len() == i {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("waiter {i} not queued within {limit:?}: {insp:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let r = inspector
        .call(&["INSPECT", key], limit)
        .await
        .map_err(|e| e.to_string())?;
    let before = history::parse_inspect(&r)?;
    let order: Vec<i64> = before.waiters.iter().map(|w| w.0).collect();
    if before.holders.len() != 1 || before.holders[0].2 != t0 {
        return Err(format!(
            "before the kill: {before:?}, expected holder token {t0}"
        ));
    }
    let killed_at = Instant::now();
    cluster.kill9(leader);
    drop((holder, inspector, waiters));
    let new = cluster.wait_leader(&[leader], FAILOVER_LIMIT).await?;
    eprintln!(
        "[fifo] node {leader} killed, node {new} leads after {:?}",
        killed_at.elapsed()
    );
    let new_addr = cluster.node(new).client_addr();
    let mut c = Conn::connect(&new_addr, limit).await?;
    let r = c
        .call(&["INSPECT", key], limit)
        .await
        .map_err(|e| e.to_string())?;
    let after = history::parse_inspect(&r)?;
    let after_order: Vec<i64> = after.waiters.iter().map(|w| w.0).collect();
    if after_order != order {
        return Err(format!(
            "the queue changed over the failover: before {before:?}, after {after:?}"
        ));
    }
    // The lease (restarted with TTL + election timeout at the takeover) cannot have run
    // out within its TTL of the kill.
    if killed_at.elapsed() < Duration::from_millis(holder_ttl - 500)
        && (after.holders.len() != 1 || after.holders[0].2 != t0)
    {
        return Err(format!(
            "the holder changed over the failover: before {before:?}, after {after:?}"
        ));
    }
    // When the lease runs out, the head of the queue gets the lock; the rest keep order.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .call(&["INSPECT", key], limit)
            .await
            .map_err(|e| e.to_string())?;
        let now = history::parse_inspect(&r)?;
        if now.holders.first().map(|h| h.0) == Some(order[0]) {
            let rest: Vec<i64> = now.waiters.iter().map(|w| w.0).collect();
            if rest != order[1..] || now.holders[0].2 <= t0 || now.holders.len() != 1 {
                return Err(format!(
                    "after the lease ran out: {now:?}, queue was {order:?}"
                ));
            }
            eprintln!(
                "[fifo] queue {order:?} kept; session {} now holds it",
                order[0]
            );
            return Ok(());
        }
        if now.holders.iter().any(|h| h.2 != t0) || now.waiters.len() != 4 {
            return Err(format!(
                "the queue did not advance in order: {now:?}, queue was {order:?}"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("the holder's lease never ran out: {now:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
