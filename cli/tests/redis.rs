//! `turnstile cli` end to end against a real redis-server on loopback: Turnstile's text
//! mode speaks the same protocol, and redis-server is there before Turnstile's own server
//! is. Where redis-cli is installed too, our output is compared with its output byte for
//! byte, since printing exactly as redis-cli does is the point.
//!
//! Each test starts its own redis-server on a free port, so tests can run in parallel and
//! kill connections without disturbing each other. Without redis-server on the PATH the
//! tests print a notice and pass (CI installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A redis-server of this test's own; killed (that process only) when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Starts redis-server with `extra` arguments, or returns None (after a notice) when it is
/// not installed.
fn start_redis(test: &str, extra: &[&str]) -> Option<Redis> {
    let Some(binary) = find_on_path("redis-server") else {
        eprintln!("{test}: skipped, redis-server is not installed (apt-get install redis-server)");
        return None;
    };
    let password = extra
        .iter()
        .position(|arg| *arg == "--requirepass")
        .and_then(|at| extra.get(at + 1).copied());
    // A port that was free a moment ago can be taken by then: try a few.
    for _ in 0..5 {
        let port = free_port();
        let port_text = port.to_string();
        let mut args = vec![
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ];
        args.extend_from_slice(extra);
        let child = Command::new(&binary)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = redis.child.try_wait() {
                break; // exited: the port was taken, try another
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                // Another test's redis-server may own this port (two tests can be handed
                // the same free port; ours then fails to bind and exits). Only a server
                // that reports our child's process id is ours.
                if server_pid(stream, password) == Some(redis.child.id()) {
                    return Some(redis);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        drop(redis);
    }
    panic!("redis-server did not start");
}

/// The `process_id` that the redis-server behind `stream` reports in `INFO server`
/// (after AUTH with `password` when the server requires one).
fn server_pid(mut stream: TcpStream, password: Option<&str>) -> Option<u32> {
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    if let Some(password) = password {
        // Pipelined: the +OK comes before the INFO reply and is skipped below.
        stream
            .write_all(format!("AUTH {password}\r\n").as_bytes())
            .ok()?;
    }
    stream.write_all(b"INFO server\r\n").ok()?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line.ok()?;
        if let Some(pid) = line.strip_prefix("process_id:") {
            return pid.trim().parse().ok();
        }
        if line.starts_with('-') {
            return None; // an error reply, e.g. still loading
        }
    }
    None
}

/// The example binary that stands in for `turnstile cli`; `cargo test` builds examples.
fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir
        .join("examples")
        .join(format!("turnstile-cli{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo test -p turnstile-cli` (which builds the examples) \
         or `cargo build -p turnstile-cli --examples` first",
        binary.display()
    );
    binary
}

/// Runs `turnstile-cli -p PORT args...` with stdin closed and a clean environment for
/// the variables it reads.
fn cli(port: u16, args: &[&str]) -> Output {
    cli_with_input(port, args, "")
}

fn cli_with_input(port: u16, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(cli_binary())
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .env_remove("TURNSTILE_HOST")
        .env_remove("TURNSTILE_PORT")
        .env_remove("TURNSTILE_PASS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turnstile-cli");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    wait_bounded(child)
}

/// Waits for a child, killing it if it runs for more than 30 s, so a hang fails the test
/// instead of stalling the run.
fn wait_bounded(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("turnstile-cli did not exit within 30 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("collect output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

#[test]
fn one_shot_ping_prints_pong() {
    let Some(redis) = start_redis("one_shot_ping_prints_pong", &[]) else {
        return;
    };
    let out = cli(redis.port, &["PING"]);
    assert_eq!(
        (stdout(&out).as_str(), code(&out)),
        ("PONG\n", 0),
        "{}",
        stderr(&out)
    );
    let out = cli(redis.port, &["--no-raw", "PING", "hello world"]);
    assert_eq!(stdout(&out), "\"hello world\"\n");
}

#[test]
fn nested_arrays_print_numbered_and_indented() {
    let Some(redis) = start_redis("nested_arrays_print_numbered_and_indented", &[]) else {
        return;
    };
    let script = "return {1,{2,'x',{3,{},'z'}},'y',false}";
    let out = cli(redis.port, &["--no-raw", "EVAL", script, "0"]);
    assert_eq!(
        stdout(&out),
        "1) (integer) 1\n\
         2) 1) (integer) 2\n   \
            2) \"x\"\n   \
            3) 1) (integer) 3\n      \
               2) (empty array)\n      \
               3) \"z\"\n\
         3) \"y\"\n\
         4) (nil)\n"
    );
    assert_eq!(code(&out), 0);
    let out = cli(redis.port, &["EVAL", script, "0"]);
    assert_eq!(
        stdout(&out),
        "1\n2\nx\n3\n\nz\ny\n\n",
        "raw when stdout is a pipe"
    );
}

#[test]
fn an_error_reply_prints_and_exits_1() {
    let Some(redis) = start_redis("an_error_reply_prints_and_exits_1", &[]) else {
        return;
    };
    let out = cli(redis.port, &["--no-raw", "NOSUCH", "x"]);
    assert_eq!(
        stdout(&out),
        "(error) ERR unknown command 'NOSUCH', with args beginning with: 'x' \n"
    );
    assert_eq!(code(&out), 1);
    let out = cli(redis.port, &["INCR", "not a number", "extra"]);
    assert!(
        stdout(&out).starts_with("ERR wrong number of arguments"),
        "{}",
        stdout(&out)
    );
    assert_eq!(code(&out), 1);
}

#[test]
fn resp3_maps_after_hello_3() {
    let Some(redis) = start_redis("resp3_maps_after_hello_3", &[]) else {
        return;
    };
    let out = cli(redis.port, &["-3", "--no-raw", "HELLO", "3"]);
    let text = stdout(&out);
    assert!(
        text.starts_with("1# \"server\" => \"redis\"\n2# \"version\" => \""),
        "{text}"
    );
    assert!(text.contains("3# \"proto\" => (integer) 3\n"), "{text}");
    assert_eq!(
        cli(redis.port, &["HSET", "h", "a", "1"]).status.code(),
        Some(0)
    );
    let out = cli(redis.port, &["-3", "--no-raw", "HGETALL", "h"]);
    assert_eq!(stdout(&out), "1# \"a\" => \"1\"\n");
    let out = cli(redis.port, &["-3", "HGETALL", "h"]);
    assert_eq!(stdout(&out), "a 1\n");
    let out = cli(redis.port, &["-3", "--no-raw", "HGETALL", "nokey"]);
    assert_eq!(stdout(&out), "(empty hash)\n");
    let out = cli(
        redis.port,
        &[
            "-3",
            "--no-raw",
            "EVAL",
            "redis.setresp(3); return {double=1.5}",
            "0",
        ],
    );
    assert_eq!(stdout(&out), "(double) 1.5\n");
    let out = cli(
        redis.port,
        &[
            "-3",
            "--no-raw",
            "EVAL",
            "redis.setresp(3); return true",
            "0",
        ],
    );
    assert_eq!(stdout(&out), "(true)\n");
}

#[test]
fn connection_refused_exits_1() {
    let port = free_port(); // nothing listens there once the probe listener is gone
    let out = cli(port, &["PING"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        format!("Could not connect to Turnstile at 127.0.0.1:{port}: Connection refused\n")
    );
    // The library entry point says the same through its exit code.
    let args = turnstile_cli::CliArgs {
        host: "127.0.0.1".into(),
        port,
        nodes: Vec::new(),
        pass: None,
        user: None,
        tls: false,
        cacert: None,
        cert: None,
        key: None,
        resp3: false,
        raw: false,
        no_raw: false,
        stat: false,
        interval: 1.0,
        count: None,
        waitgraph_dot: None,
        command: vec!["PING".into()],
    };
    assert_eq!(turnstile_cli::run(args).expect("no I/O failure"), 1);
}

#[test]
fn lines_from_stdin_use_redis_cli_quoting() {
    let Some(redis) = start_redis("lines_from_stdin_use_redis_cli_quoting", &[]) else {
        return;
    };
    let input = "SET \"a key\" \"x\\ny\\x00\\xff\"\n\
                 GET 'a key'\n\
                 \n\
                 SET 'it''s' broken\n\
                 GET nokey\n\
                 quit\n\
                 PING\n";
    let out = cli_with_input(redis.port, &["--no-raw"], input);
    assert_eq!(stdout(&out), "OK\n\"x\\ny\\x00\\xff\"\n(nil)\n");
    assert_eq!(stderr(&out), "Invalid argument(s)\n");
    assert_eq!(code(&out), 1, "a line failed");
    let out = cli_with_input(redis.port, &[], "GET 'a key'\n");
    assert_eq!(out.stdout, b"x\ny\x00\xff\n", "raw output is binary-safe");
    assert_eq!(code(&out), 0);
}

#[test]
fn auth_on_connect() {
    let Some(redis) = start_redis("auth_on_connect", &["--requirepass", "s3cret"]) else {
        return;
    };
    let out = cli(redis.port, &["PING"]);
    assert!(stdout(&out).starts_with("NOAUTH"), "{}", stdout(&out));
    let out = cli(redis.port, &["-a", "s3cret", "PING"]);
    assert_eq!((stdout(&out).as_str(), code(&out)), ("PONG\n", 0));
    let out = cli(
        redis.port,
        &["--user", "default", "--pass", "s3cret", "-3", "PING"],
    );
    assert_eq!((stdout(&out).as_str(), code(&out)), ("PONG\n", 0));
    let out = cli(redis.port, &["-a", "wrong", "PING"]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).starts_with("AUTH failed: WRONGPASS"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(cli_binary())
        .args(["-p", &redis.port.to_string(), "PING"])
        .env("TURNSTILE_PASS", "s3cret")
        .output()
        .expect("run");
    assert_eq!(stdout(&out), "PONG\n");
}

/// Lines of a child's stdout, read on a thread so that waiting for one can time out.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(lines: &mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a line within 10 s")
}

/// The server drops the shell's connection between two commands: the shell reconnects
/// once, with the protocol the user switched to, says so, and runs the command.
#[test]
fn reconnects_after_the_server_drops_the_connection() {
    let Some(redis) = start_redis("reconnects_after_the_server_drops_the_connection", &[]) else {
        return;
    };
    let mut child = Command::new(cli_binary())
        .args(["-p", &redis.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turnstile-cli");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let lines = lines_of(&mut child);
    writeln!(stdin, "HSET h a 1\nHELLO 3\nCLIENT ID").expect("write");
    assert_eq!(next_line(&lines), "1");
    while next_line(&lines) != "modules " {} // the HELLO map, raw
    let id = next_line(&lines);
    let killed = cli(redis.port, &["CLIENT", "KILL", "ID", &id]);
    assert_eq!(stdout(&killed), "1\n");
    writeln!(stdin, "HGETALL h").expect("write");
    // A RESP3 map prints as "a 1"; under RESP2 it would be two lines, "a" and "1".
    assert_eq!(next_line(&lines), "a 1");
    drop(stdin);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let out = wait_bounded(child);
    assert_eq!(code(&out), 0);
    assert_eq!(
        err,
        format!(
            "Connection lost; reconnected to 127.0.0.1:{} as a new session \
             (the holds of the old one are released).\n",
            redis.port
        )
    );
}

/// Our output against redis-cli's for the same commands, formatted and raw, RESP2 and
/// RESP3. Exit codes differ on purpose (redis-cli 7.0 exits 0 after an error reply).
#[test]
fn prints_exactly_as_redis_cli_does() {
    let Some(redis_cli) = find_on_path("redis-cli") else {
        eprintln!("prints_exactly_as_redis_cli_does: skipped, redis-cli is not installed");
        return;
    };
    let Some(redis) = start_redis("prints_exactly_as_redis_cli_does", &[]) else {
        return;
    };
    let setup: &[&[&str]] = &[
        &["SET", "k", "v"],
        &["HSET", "h", "f", "1"],
        &["SADD", "s", "1", "2", "3"],
        &["RPUSH", "l", "a", "b\nc", "d\"e"],
    ];
    for command in setup {
        assert_eq!(code(&cli(redis.port, command)), 0);
    }
    let commands: &[&[&str]] = &[
        &["PING"],
        &["PING", "hello world"],
        &["SET", "k2", "v"],
        &["GET", "k"],
        &["GET", "nokey"],
        &["EXISTS", "k", "nokey"],
        &["LRANGE", "l", "0", "-1"],
        &["LRANGE", "nokey", "0", "-1"],
        &["HGETALL", "h"],
        &["SMEMBERS", "s"],
        &["CONFIG", "GET", "maxmemory*"],
        &["EVAL", "return {1,{2,'x',{3,{},'z'}},'y',false}", "0"],
        &["EVAL", "return {1,2,3,4,5,6,7,8,9,10,{1,{2,3}}}", "0"],
        &["EVAL", "return 'a\\0b\\255\\n\"q\\\\'", "0"],
        &["EVAL", "redis.setresp(3); return {double=2.5}", "0"],
        &["EVAL", "redis.setresp(3); return {map={m={1,{}}}}", "0"],
        &["EVAL", "redis.setresp(3); return false", "0"],
        &["NOSUCH", "arg"],
        &["GET"],
    ];
    for flags in [&[][..], &["--no-raw"], &["-3"], &["-3", "--no-raw"]] {
        for command in commands {
            let ours = cli(redis.port, &[flags, *command].concat());
            let theirs = Command::new(&redis_cli)
                .args(["-p", &redis.port.to_string()])
                .args(flags)
                .args(*command)
                .stdin(Stdio::null())
                .output()
                .expect("run redis-cli");
            assert_eq!(
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&theirs.stdout),
                "flags {flags:?}, command {command:?}"
            );
            assert_eq!(ours.stdout, theirs.stdout, "byte for byte");
        }
    }
}

#[test]
fn help_lists_every_command_without_a_server() {
    let out = cli(free_port(), &["HELP"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for syntax in [
        "ACQUIRE key [EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]] [REENTRANT] [TTL ms] [WAIT ms]",
        "RELEASE key",
        "CONVERT key SHARED | EXCLUSIVE [WAIT ms]",
        "HELLO [protover [AUTH username password] [SETNAME name]]",
        "CLIENT SETINFO attr value",
    ] {
        assert!(text.contains(syntax), "{syntax} in {text}");
    }
    let out = cli(free_port(), &["help", "renew"]);
    assert!(
        stdout(&out).starts_with("\n  RENEW key [TTL ms]\n  summary: "),
        "{}",
        stdout(&out)
    );
}
