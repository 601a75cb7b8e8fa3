//! loadgen end to end, over real sockets on 127.0.0.1: its own echo server, a stand-in
//! for Turnstile's text mode (a few lines of RESP, here), and a real redis-server when one
//! is on PATH. Every run is bounded (about a second) and every process is killed by PID.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// A child process killed (by its PID) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `loadgen echo-server --port 0` and returns it with the address it printed.
fn echo_server() -> (Killed, String) {
    let mut child = Command::new(LOADGEN)
        .args(["echo-server", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start loadgen echo-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let child = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the echo server's address");
    let addr = line
        .trim()
        .strip_prefix("echo server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}

/// Runs loadgen with `args`, at most `limit`; returns (exit ok, stdout, stderr).
fn loadgen(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(LOADGEN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen");
    // Drain both pipes while waiting: the JSON is larger than a pipe's buffer.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().expect("stderr reader");
            panic!(
                "loadgen {args:?} ran past {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    (
        status.success(),
        String::from_utf8(out).expect("utf-8 stdout"),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs loadgen with `--json` and returns the runs, checking that each did work without
/// errors.
fn runs(args: &[&str]) -> Vec<Value> {
    let (ok, stdout, stderr) = loadgen(args, Duration::from_secs(60));
    assert!(ok, "loadgen {args:?} failed:\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--json output does not parse ({e}):\n{stdout}"));
    let runs = doc["runs"].as_array().expect("runs").clone();
    assert!(!runs.is_empty());
    for r in &runs {
        if r.get("skipped").is_some() {
            continue;
        }
        assert!(r["ops"].as_u64().unwrap() > 0, "no ops: {r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "errors: {r}\n{stderr}");
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0);
        let pair = &r["pair_us"];
        assert!(pair["p50"].as_u64().unwrap() <= pair["p99"].as_u64().unwrap());
        assert!(pair["curve"].as_array().unwrap().len() > 1);
    }
    runs
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loadgen-test-{}-{name}", std::process::id()))
}

#[test]
fn uncontended_against_the_echo_server() {
    let (_server, addr) = echo_server();
    let target = format!("echo={addr}");
    let svg = tmp("echo.svg");
    let svg_arg = svg.to_str().unwrap();
    let runs = runs(&[
        "uncontended",
        "-t",
        &target,
        "-c",
        "4",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--json",
        "-q",
        "--plot",
        svg_arg,
    ]);
    assert_eq!(runs[0]["target"], "echo");
    assert_eq!(runs[0]["workload"], "uncontended");
    let plot = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(100)]);
    let _ = std::fs::remove_file(&svg);
}

#[test]
fn fixed_count_and_open_loop_against_the_echo_server() {
    let (_server, addr) = echo_server();
    let target = format!("echo={addr}");
    let runs_n = runs(&[
        "uncontended",
        "-t",
        &target,
        "-c",
        "2",
        "-n",
        "500",
        "--warmup",
        "0s",
        "--json",
        "-q",
    ]);
    assert_eq!(runs_n[0]["ops"], 500);
    let open = runs(&[
        "uncontended",
        "-t",
        &target,
        "-c",
        "2",
        "--rate",
        "400",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--json",
        "-q",
    ]);
    // 400/s for 1 s: the schedule has exactly 400 slots in the window.
    assert_eq!(open[0]["ops"], 400);
    assert_eq!(open[0]["params"]["loop_kind"], "open");
    assert!(open[0]["send_lag_us"]["count"].as_u64().unwrap() == 400);
}

/// A stand-in for Turnstile's text mode: PING, ACQUIRE (always granted, with increasing
/// tokens) and RELEASE, over RESP, enough to drive the turnstile target end to end.
async fn fake_turnstile(listener: tokio::net::TcpListener) {
    fake_node(listener, None).await
}

/// The same as a cluster node: the leader (`follows: None`) or a follower of the node at
/// `follows`, which answers INFO replication with it and ACQUIRE/RELEASE with
/// `-NOTLEADER follows`.
async fn fake_node(listener: tokio::net::TcpListener, follows: Option<String>) {
    let token = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let token = token.clone();
        let follows = follows.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut out = Vec::new();
                while let Some((args, used)) = parse_command(&buf) {
                    buf.drain(..used);
                    let reply: Vec<u8> = match args[0].to_ascii_uppercase().as_slice() {
                        b"PING" => b"+PONG\r\n".to_vec(),
                        b"INFO" => {
                            let text = match &follows {
                                None => "# Replication\r\nrole:leader\r\n".to_string(),
                                Some(l) => {
                                    format!("# Replication\r\nrole:follower\r\nleader_addr:{l}\r\n")
                                }
                            };
                            format!("${}\r\n{text}\r\n", text.len()).into_bytes()
                        }
                        b"ACQUIRE" | b"RELEASE" if follows.is_some() => {
                            format!("-NOTLEADER {}\r\n", follows.as_deref().unwrap_or(""))
                                .into_bytes()
                        }
                        b"ACQUIRE" => {
                            let t = token.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            format!(":{t}\r\n").into_bytes()
                        }
                        b"RELEASE" => b":1\r\n".to_vec(),
                        _ => b"-ERR unknown command\r\n".to_vec(),
                    };
                    out.extend_from_slice(&reply);
                }
                if socket.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Parses one RESP array of bulk strings: (arguments, bytes used), or None if incomplete.
fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    assert_eq!(head[0], b'*', "loadgen sends arrays");
    let n: usize = std::str::from_utf8(&head[1..]).ok()?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(&len[1..]).ok()?.parse().ok()?;
        if buf.len() < next + len + 2 {
            return None;
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Some((args, at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_against_a_turnstile_stand_in_and_compare() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(fake_turnstile(listener));
    let (_echo, echo_addr) = tokio::task::spawn_blocking(echo_server).await.unwrap();

    let target = format!("turnstile={addr}");
    let t = target.clone();
    let (contended, mixed) = tokio::task::spawn_blocking(move || {
        let contended = runs(&[
            "contended",
            "-t",
            &t,
            "-c",
            "8",
            "-k",
            "2",
            "--wait",
            "100ms",
            "-d",
            "1s",
            "--warmup",
            "0s",
            "--json",
            "-q",
        ]);
        let mixed = runs(&[
            "mixed", "-t", &t, "-c", "8", "-d", "1s", "--warmup", "0s", "--json", "-q",
        ]);
        (contended, mixed)
    })
    .await
    .unwrap();
    let f = &contended[0]["fairness"];
    assert_eq!(f["clients"], 8);
    assert!(f["jain"].as_f64().unwrap() > 0.0 && f["jain"].as_f64().unwrap() <= 1.0);
    let k = &mixed[0]["by_kind"];
    assert!(k["shared"].as_u64().unwrap() > 0);
    assert!(k["semaphore"].as_u64().unwrap() > 0);

    // compare: the stand-in and the echo floor, an unreachable Redis skipped with a notice.
    let free = free_port();
    let (t, e) = (addr.clone(), echo_addr.clone());
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        loadgen(
            &[
                "compare",
                "--turnstile",
                &t,
                "--echo",
                &e,
                "--redis",
                &format!("127.0.0.1:{free}"),
                "--connections",
                "1,4",
                "--contended",
                "4",
                "-d",
                "500ms",
                "--warmup",
                "0s",
                "--json",
                "-q",
            ],
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert!(ok, "compare failed:\n{stderr}");
    assert!(stderr.contains("redis @ 127.0.0.1:"), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("compare --json parses");
    assert_eq!(doc["runs"].as_array().unwrap().len(), 3 * 2);
    let ratios = doc["ratios"].as_array().unwrap();
    assert!(ratios
        .iter()
        .all(|r| r["vs_floor"].as_f64().is_some_and(|x| x > 0.0)));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_stand_in_connections_find_the_leader() {
    // A dead node, a follower that names the leader, and the leader: every connection
    // must end up on the leader with no errors (a redirect is not one).
    let leader = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let leader_addr = leader.local_addr().unwrap().to_string();
    let follower = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let follower_addr = follower.local_addr().unwrap().to_string();
    let l = tokio::spawn(fake_node(leader, None));
    let f = tokio::spawn(fake_node(follower, Some(leader_addr.clone())));
    let dead = format!("127.0.0.1:{}", free_port());
    let nodes = format!("{dead},{follower_addr},{leader_addr}");
    let target = format!("turnstile-cluster={nodes}");
    let r = tokio::task::spawn_blocking(move || {
        runs(&[
            "uncontended",
            "-t",
            &target,
            "-c",
            "4",
            "-d",
            "500ms",
            "--warmup",
            "0s",
            "--json",
            "-q",
        ])
    })
    .await
    .unwrap();
    assert_eq!(r[0]["target"], "turnstile-cluster");
    assert_eq!(r[0]["addr"], nodes.as_str());

    // compare: the cluster row, with an etcd cluster that is not there skipped.
    let free = free_port();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        loadgen(
            &[
                "compare",
                "--turnstile-cluster",
                &nodes,
                "--etcd-cluster",
                &format!("127.0.0.1:{free}"),
                "--connections",
                "2",
                "--contended",
                "0",
                "-d",
                "300ms",
                "--warmup",
                "0s",
                "--json",
                "-q",
            ],
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert!(ok, "compare failed:\n{stderr}");
    assert!(stderr.contains("etcd-cluster @ 127.0.0.1:"), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("compare --json parses");
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["errors"], 0);
    assert!(runs[0]["ops"].as_u64().unwrap() > 0);
    l.abort();
    f.abort();
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

#[test]
fn against_a_real_redis_server_if_installed() {
    if !on_path("redis-server") {
        eprintln!("redis-server is not on PATH: skipping (loadgen/peers.sh install redis)");
        return;
    }
    let port = free_port();
    let dir = tmp("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let redis = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = format!("redis={addr}");
    let u = runs(&[
        "uncontended",
        "-t",
        &target,
        "-c",
        "4",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--json",
        "-q",
    ]);
    assert_eq!(u[0]["target"], "redis");
    let c = runs(&[
        "contended",
        "-t",
        &target,
        "-c",
        "8",
        "-k",
        "1",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--json",
        "-q",
    ]);
    assert!(c[0]["fairness"]["jain"].as_f64().unwrap() > 0.0);
    // Redis has no shared locks or semaphores: the mixed workload says so and skips.
    let (ok, stdout, _) = loadgen(
        &[
            "mixed", "-t", &target, "-d", "1s", "--warmup", "0s", "--json", "-q",
        ],
        Duration::from_secs(30),
    );
    assert!(ok);
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert!(doc["runs"][0]["skipped"]
        .as_str()
        .unwrap()
        .contains("no shared"));
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
