//! The shell: one connection to the server (which is one Turnstile session), the three
//! ways of feeding it commands, and what it does between them (help, quitting,
//! reconnecting, following a cluster's NOTLEADER redirects).

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Editor, EventHandler, KeyEvent};

use crate::client::{os_message, ClientError, Connection};
use crate::commands;
use crate::editor::{CtrlC, ShellHelper};
use crate::format::{format_reply, Output};
use crate::nodes::{self, Node, NotLeader};
use crate::resp::{Frame, Limits};
use crate::split::split_args;

/// How many `NOTLEADER host:port` redirects one command follows.
const MAX_REDIRECTS: usize = 3;
/// How long one command is retried while the node answers `NOTLEADER` alone.
const NO_LEADER_WAIT: Duration = Duration::from_secs(5);

/// Where and how to connect, and how to print.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The servers, tried in order (never empty): --nodes, or --host and --port.
    pub nodes: Vec<Node>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub resp3: bool,
    pub output: Output,
    /// Whether `HELP` may use colours (stdout is a terminal).
    pub color: bool,
    pub limits: Limits,
    /// `--tls`: the TLS settings every connection uses.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// What became of one line of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A reply that is not an error, or help.
    Ok,
    /// The server replied with an error, or the line was not a valid command.
    Error,
    /// No reply: the server could not be reached (already reported).
    Failed,
    /// QUIT or EXIT in a shell.
    Quit,
    /// CLEAR in the interactive shell.
    Clear,
}

pub(crate) struct Shell<O: Write, E: Write> {
    settings: Settings,
    /// Credentials sent on every (re)connect: from the flags, then from the last
    /// successful AUTH typed in the shell.
    auth: Option<(Option<Vec<u8>>, Vec<u8>)>,
    /// The protocol asked for on every (re)connect: 3 with --resp3 or after `HELLO 3`.
    proto: u8,
    /// The server connected to, or tried first at the next connect: the first node, then
    /// the one that answered, or the leader a redirect named.
    target: Node,
    conn: Option<Connection>,
    out: O,
    err: E,
}

fn is(word: &[u8], name: &str) -> bool {
    word.eq_ignore_ascii_case(name.as_bytes())
}

impl<O: Write, E: Write> Shell<O, E> {
    pub(crate) fn new(settings: Settings, out: O, err: E) -> Self {
        let auth = settings.pass.clone().map(|pass| {
            (
                settings.user.clone().map(String::into_bytes),
                pass.into_bytes(),
            )
        });
        let proto = if settings.resp3 { 3 } else { 2 };
        let target = settings.nodes[0].clone();
        Shell {
            settings,
            auth,
            proto,
            target,
            conn: None,
            out,
            err,
        }
    }

    /// `host:port`, with brackets around an IPv6 address.
    fn address(&self) -> String {
        self.target.to_string()
    }

    fn prompt(&self) -> String {
        match self.conn {
            Some(_) => format!("{}> ", self.address()),
            None => "not connected> ".to_string(),
        }
    }

    /// A message for the user on stderr. Failing to write it leaves nothing else to do.
    fn warn(&mut self, message: &str) {
        let _ = writeln!(self.err, "{message}");
        let _ = self.err.flush();
    }

    /// Connects (to the target, else to the first other node that answers), then
    /// authenticates and switches protocol as configured. On failure the shell is left
    /// without a connection and the message says why, worded as redis-cli's.
    fn connect(&mut self) -> Result<(), String> {
        let mut candidates = vec![self.target.clone()];
        candidates.extend(
            self.settings
                .nodes
                .iter()
                .filter(|n| **n != self.target)
                .cloned(),
        );
        self.connect_to(candidates)
    }

    /// Connects to the first of `candidates` that answers (it becomes the target), then
    /// authenticates and switches protocol.
    fn connect_to(&mut self, candidates: Vec<Node>) -> Result<(), String> {
        self.conn = None;
        let mut failures = Vec::new();
        for node in candidates {
            match Connection::connect(
                &node.host,
                node.port,
                self.settings.limits,
                self.settings.tls.as_ref(),
            ) {
                Ok(conn) => {
                    self.target = node;
                    self.conn = Some(conn);
                    break;
                }
                Err(err) => failures.push(format!("{node}: {}", os_message(&err))),
            }
        }
        if self.conn.is_none() {
            return Err(format!(
                "Could not connect to Turnstile at {}",
                failures.join("; ")
            ));
        }
        if let Some((user, pass)) = self.auth.clone() {
            let mut args = vec![b"AUTH".to_vec()];
            args.extend(user);
            args.push(pass);
            self.handshake(&args, "AUTH failed")?;
        }
        if self.proto == 3 {
            self.handshake(&[b"HELLO".to_vec(), b"3".to_vec()], "HELLO 3 failed")?;
        }
        Ok(())
    }

    fn handshake(&mut self, args: &[Vec<u8>], failed: &str) -> Result<(), String> {
        let result = match self.roundtrip(args) {
            Ok(Frame::Error(message)) => Err(format!("{failed}: {message}")),
            Ok(_) => Ok(()),
            Err(err) => Err(format!("{failed}: {err}")),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Sends one command and reads its reply. Push frames that arrive first are not the
    /// reply: they are printed as they come, as redis-cli does.
    fn roundtrip(&mut self, args: &[Vec<u8>]) -> Result<Frame, ClientError> {
        let conn = self.conn.as_mut().ok_or(ClientError::Closed)?;
        conn.send(args)?;
        loop {
            let conn = self.conn.as_mut().ok_or(ClientError::Closed)?;
            match conn.read_frame()? {
                Frame::Push(items) => {
                    let text = format_reply(&Frame::Push(items), self.settings.output);
                    let _ = self.out.write_all(&text);
                }
                reply => return Ok(reply),
            }
        }
    }

    /// Runs one command on the server (see [`Self::call_once`]), following a cluster's
    /// redirects: `-NOTLEADER host:port` (the node is a follower; nothing was done)
    /// sends the command again to that leader, at most [`MAX_REDIRECTS`] times;
    /// `-NOTLEADER` alone (no leader known yet), or naming a leader that cannot be
    /// reached, sends it again after a short pause, for up to [`NO_LEADER_WAIT`]. Then
    /// the last reply is the answer.
    fn call(&mut self, args: &[Vec<u8>], reconnect: bool) -> Result<Frame, String> {
        let mut redirects = 0;
        let mut waited = Duration::ZERO;
        let mut pause = Duration::from_millis(100);
        loop {
            let reply = self.call_once(args, reconnect)?;
            let Frame::Error(text) = &reply else {
                return Ok(reply);
            };
            let no_leader = match nodes::not_leader(text) {
                Some(NotLeader::At(leader)) if redirects < MAX_REDIRECTS => {
                    let follower = self.target.clone();
                    if self.connect_to(vec![leader.clone()]).is_ok() {
                        redirects += 1;
                        self.warn(&format!("-> Redirected to {leader}"));
                        continue;
                    }
                    // The leader it names is gone (a follower names a dead leader until
                    // it notices): as good as no leader yet. Back to the follower.
                    self.target = follower;
                    self.connect()?;
                    true
                }
                Some(NotLeader::Unknown) => true,
                _ => false,
            };
            if !no_leader || waited >= NO_LEADER_WAIT {
                return Ok(reply);
            }
            std::thread::sleep(pause);
            waited += pause;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Runs one command on the server. With `reconnect`, a connection that dropped is
    /// replaced once: before sending when it is found closed, or after a failed attempt.
    /// Either way the new connection is a new session, and the user is told, since the
    /// old session's holds went with it.
    fn call_once(&mut self, args: &[Vec<u8>], reconnect: bool) -> Result<Frame, String> {
        let was_connected = self.conn.is_some();
        // Only a shell probes: a one-shot connection is brand new, and whatever the
        // server sent on it (an error before closing, say) is best shown as the reply.
        if let Some(conn) = self.conn.as_mut().filter(|_| reconnect) {
            if conn.is_closed() {
                self.conn = None;
            }
        }
        let mut reconnected = false;
        if self.conn.is_none() {
            self.connect()?;
            if was_connected {
                self.session_lost();
                reconnected = true;
            }
        }
        match self.roundtrip(args) {
            Ok(reply) => Ok(reply),
            Err(err) if err.is_disconnect() && reconnect && !reconnected => {
                self.connect()?;
                self.session_lost();
                self.roundtrip(args).map_err(|err| {
                    self.conn = None;
                    format!("Error: {err}")
                })
            }
            Err(err) => {
                self.conn = None;
                Err(format!("Error: {err}"))
            }
        }
    }

    fn session_lost(&mut self) {
        let message = format!(
            "Connection lost; reconnected to {} as a new session \
             (the holds of the old one are released).",
            self.address()
        );
        self.warn(&message);
    }

    /// Keeps what later reconnects must repeat: the protocol of a successful HELLO and
    /// the credentials of a successful AUTH (or HELLO ... AUTH).
    fn remember(&mut self, args: &[Vec<u8>], reply: &Frame) {
        if matches!(reply, Frame::Error(_)) {
            return;
        }
        if is(&args[0], "AUTH") {
            match args {
                [_, pass] => self.auth = Some((None, pass.clone())),
                [_, user, pass] => self.auth = Some((Some(user.clone()), pass.clone())),
                _ => {}
            }
        } else if is(&args[0], "HELLO") && args.len() > 1 {
            match args[1].as_slice() {
                b"2" => self.proto = 2,
                b"3" => self.proto = 3,
                _ => {}
            }
            if let Some(at) = args.iter().position(|arg| is(arg, "AUTH")) {
                if let (Some(user), Some(pass)) = (args.get(at + 1), args.get(at + 2)) {
                    self.auth = Some((Some(user.clone()), pass.clone()));
                }
            }
        }
    }

    /// Runs one parsed command line. `repl` is true in the shell (interactive or reading
    /// stdin), where QUIT, EXIT and CLEAR are the shell's own and a dropped connection is
    /// replaced; a one-shot command sends everything but HELP to the server.
    pub(crate) fn execute(&mut self, args: &[Vec<u8>], repl: bool) -> io::Result<Outcome> {
        let Some(first) = args.first() else {
            return Ok(Outcome::Ok);
        };
        if is(first, "HELP") {
            return self.help(&args[1..]);
        }
        if repl && args.len() == 1 && (is(first, "QUIT") || is(first, "EXIT")) {
            return Ok(Outcome::Quit);
        }
        if repl && args.len() == 1 && is(first, "CLEAR") {
            return Ok(Outcome::Clear);
        }
        let watch = is(first, "WATCH");
        if watch && self.proto != 3 {
            // Watch messages are RESP3 pushes: switch first, as redis-cli -3 would be.
            let hello = [b"HELLO".to_vec(), b"3".to_vec()];
            match self.call(&hello, repl) {
                Ok(reply @ Frame::Error(_)) => {
                    self.out
                        .write_all(&format_reply(&reply, self.settings.output))?;
                    return Ok(Outcome::Error);
                }
                Ok(reply) => self.remember(&hello, &reply),
                Err(message) => {
                    self.warn(&message);
                    return Ok(Outcome::Failed);
                }
            }
        }
        match self.call(args, repl) {
            Ok(reply) => {
                self.remember(args, &reply);
                self.out
                    .write_all(&format_reply(&reply, self.settings.output))?;
                self.out.flush()?;
                if watch && !matches!(reply, Frame::Error(_)) {
                    return self.print_pushes();
                }
                Ok(match reply {
                    Frame::Error(_) => Outcome::Error,
                    _ => Outcome::Ok,
                })
            }
            Err(message) => {
                self.warn(&message);
                Ok(Outcome::Failed)
            }
        }
    }

    /// After WATCH: prints every message as it comes, until the connection ends (or the
    /// user presses Ctrl-C), as redis-cli does after SUBSCRIBE.
    fn print_pushes(&mut self) -> io::Result<Outcome> {
        self.warn("Reading watch messages... (press Ctrl-C to quit)");
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(Outcome::Quit);
            };
            match conn.read_frame() {
                Ok(frame) => {
                    self.out
                        .write_all(&format_reply(&frame, self.settings.output))?;
                    self.out.flush()?;
                }
                Err(err) => {
                    self.conn = None;
                    self.warn(&format!("Error: {err}"));
                    return Ok(Outcome::Quit);
                }
            }
        }
    }

    fn help(&mut self, topic: &[Vec<u8>]) -> io::Result<Outcome> {
        let text = if topic.is_empty() {
            commands::help_overview(self.settings.color)
        } else {
            match commands::help_topic(topic, self.settings.color) {
                Some(text) => text,
                None => {
                    let words: Vec<String> = topic
                        .iter()
                        .map(|w| String::from_utf8_lossy(w).into_owned())
                        .collect();
                    let message = format!(
                        "No help for '{}'. Type HELP for the list of commands.",
                        words.join(" ")
                    );
                    self.warn(&message);
                    return Ok(Outcome::Error);
                }
            }
        };
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(Outcome::Ok)
    }

    /// `turnstile cli ACQUIRE k TTL 5000`: one command, its reply, and an exit code that
    /// says whether it was an error.
    pub(crate) fn one_shot(&mut self, command: &[String]) -> io::Result<i32> {
        let args: Vec<Vec<u8>> = command.iter().map(|arg| arg.clone().into_bytes()).collect();
        let needs_server = !is(&args[0], "HELP");
        if needs_server {
            if let Err(message) = self.connect() {
                self.warn(&message);
                return Ok(1);
            }
        }
        Ok(match self.execute(&args, false)? {
            Outcome::Ok | Outcome::Quit | Outcome::Clear => 0,
            Outcome::Error | Outcome::Failed => 1,
        })
    }

    /// Commands read line by line from a pipe or file, with the shell's quoting and no
    /// prompt. Stops at QUIT or EXIT, or when the server cannot be reached; the exit code
    /// is 1 when any line failed, so scripts can check it.
    pub(crate) fn script<R: BufRead>(&mut self, mut input: R) -> io::Result<i32> {
        let mut code = 0;
        let mut line = Vec::new();
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                return Ok(code);
            }
            let text = String::from_utf8_lossy(&line);
            let args = match split_args(&text) {
                Ok(args) => args,
                Err(err) => {
                    self.warn(&err.to_string());
                    code = 1;
                    continue;
                }
            };
            match self.execute(&args, true)? {
                Outcome::Ok | Outcome::Clear => {}
                Outcome::Error => code = 1,
                Outcome::Failed => return Ok(1),
                Outcome::Quit => return Ok(code),
            }
        }
    }

    /// The interactive shell: line editing, history, hints and completion.
    pub(crate) fn interactive(&mut self) -> anyhow::Result<i32> {
        let config = Config::builder()
            .max_history_size(1000)?
            .history_ignore_dups(true)?
            .auto_add_history(false)
            .completion_type(CompletionType::List)
            .build();
        let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(ShellHelper));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(CtrlC)),
        );
        let history = history_path();
        if let Some(path) = &history {
            // There is no history file before the first session: start with none.
            let _ = editor.load_history(path);
        }
        if let Err(message) = self.connect() {
            self.warn(&message);
        }
        loop {
            let line = match editor.readline(&self.prompt()) {
                Ok(line) => line,
                // Ctrl-C on an empty line (see CtrlC) only asks for a fresh prompt;
                // Ctrl-D leaves.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => return Ok(0),
                Err(err) => return Err(err.into()),
            };
            let parsed = split_args(&line);
            if matches!(&parsed, Ok(args) if args.is_empty()) {
                continue;
            }
            // A line with a quoting mistake goes into the history too, to be fixed with Up.
            if let Some(path) = history.as_ref().filter(|_| !is_secret(&line)) {
                editor.add_history_entry(line.as_str())?;
                // History is a convenience: a read-only home must not stop the shell.
                let _ = editor.save_history(path);
            }
            let args = match parsed {
                Ok(args) => args,
                Err(err) => {
                    self.warn(&err.to_string());
                    continue;
                }
            };
            match self.execute(&args, true)? {
                Outcome::Quit => return Ok(0),
                Outcome::Clear => editor.clear_screen()?,
                Outcome::Ok | Outcome::Error | Outcome::Failed => {}
            }
        }
    }
}

/// `~/.turnstile_cli_history`, or `$TURNSTILE_CLI_HISTFILE` (empty: no history file),
/// as redis-cli does with `~/.rediscli_history` and `REDISCLI_HISTFILE`.
fn history_path() -> Option<PathBuf> {
    match std::env::var_os("TURNSTILE_CLI_HISTFILE") {
        Some(path) if path.is_empty() => None,
        Some(path) => Some(PathBuf::from(path)),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".turnstile_cli_history"))
        }
    }
}

/// Lines that carry a password stay out of the history file, as in redis-cli. Judged on
/// plain words, so that a line with a quoting mistake is judged too.
fn is_secret(line: &str) -> bool {
    let words: Vec<&[u8]> = line
        .split_ascii_whitespace()
        .map(|word| word.trim_matches(['"', '\'']).as_bytes())
        .collect();
    match words.first() {
        Some(first) if is(first, "AUTH") => true,
        Some(first) if is(first, "HELLO") => words.iter().any(|word| is(word, "AUTH")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    /// A fake server: each accepted connection gets the scripted replies, one per request
    /// read, then is closed. Returns the port and what every connection received.
    fn fake_server(
        connections: Vec<Vec<&'static [u8]>>,
    ) -> (u16, thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = thread::spawn(move || {
            let mut received = Vec::new();
            for replies in connections {
                let (mut socket, _) = listener.accept().expect("accept");
                let mut got = Vec::new();
                for reply in replies {
                    got.extend(read_request(&mut socket));
                    socket.write_all(reply).expect("reply");
                }
                received.push(got);
            }
            received
        });
        (port, handle)
    }

    /// Reads one whole RESP request (the shell sends one write per command).
    fn read_request(socket: &mut TcpStream) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = socket.read(&mut buf).expect("read");
        buf.truncate(n);
        buf
    }

    fn settings(port: u16) -> Settings {
        Settings {
            nodes: vec![Node::new("127.0.0.1", port)],
            user: None,
            pass: None,
            resp3: false,
            output: Output::Standard,
            color: false,
            limits: Limits::default(),
            tls: None,
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn one_shot_prints_the_reply_and_exits_1_on_an_error_reply() {
        let (port, server) = fake_server(vec![vec![b":7\r\n"], vec![b"-DEADLOCK cycle\r\n"]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        let code = shell.one_shot(&["ACQUIRE".into(), "k".into()]).expect("io");
        assert_eq!(code, 0);
        drop(shell);
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        let code = shell.one_shot(&["ACQUIRE".into(), "k".into()]).expect("io");
        assert_eq!(code, 1);
        drop(shell);
        assert_eq!(text(&out), "(integer) 7\n(error) DEADLOCK cycle\n");
        assert_eq!(text(&err), "");
        let received = server.join().expect("server");
        assert_eq!(text(&received[0]), "*2\r\n$7\r\nACQUIRE\r\n$1\r\nk\r\n");
    }

    #[test]
    fn watch_switches_to_resp3_and_prints_pushes_until_the_end() {
        let (port, server) = fake_server(vec![vec![
            b"%1\r\n+proto\r\n:3\r\n",
            b":1\r\n>5\r\n$5\r\nwatch\r\n$1\r\nk\r\n$5\r\nstate\r\n:0\r\n*0\r\n",
        ]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        let code = shell.one_shot(&["WATCH".into(), "k".into()]).expect("io");
        assert_eq!(code, 0);
        drop(shell);
        let printed = text(&out);
        assert!(printed.starts_with("(integer) 1\n"), "{printed}");
        assert!(printed.contains("\"state\""), "{printed}");
        assert!(
            text(&err).contains("Reading watch messages"),
            "{}",
            text(&err)
        );
        let received = server.join().expect("server");
        assert!(text(&received[0]).starts_with("*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"));
    }

    #[test]
    fn connection_refused_is_reported_like_redis_cli() {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port(); // closed again when the listener drops
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        assert_eq!(shell.one_shot(&["PING".into()]).expect("io"), 1);
        drop(shell);
        assert_eq!(
            text(&err),
            format!("Could not connect to Turnstile at 127.0.0.1:{port}: Connection refused\n")
        );
        assert!(out.is_empty());
    }

    #[test]
    fn connects_with_auth_then_hello_3() {
        let (port, server) =
            fake_server(vec![vec![b"+OK\r\n", b"%1\r\n+proto\r\n:3\r\n", b"_\r\n"]]);
        let mut settings = settings(port);
        settings.user = Some("bob".into());
        settings.pass = Some("secret".into());
        settings.resp3 = true;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings, &mut out, &mut err);
        assert_eq!(shell.one_shot(&["GET".into(), "k".into()]).expect("io"), 0);
        drop(shell);
        assert_eq!(text(&out), "(nil)\n");
        let received = server.join().expect("server");
        assert_eq!(
            text(&received[0]),
            "*3\r\n$4\r\nAUTH\r\n$3\r\nbob\r\n$6\r\nsecret\r\n\
             *2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n\
             *2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn a_failed_auth_fails_the_connection() {
        let (port, server) = fake_server(vec![vec![b"-WRONGPASS invalid password\r\n"]]);
        let mut settings = settings(port);
        settings.pass = Some("nope".into());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings, &mut out, &mut err);
        assert_eq!(shell.one_shot(&["PING".into()]).expect("io"), 1);
        drop(shell);
        assert_eq!(text(&err), "AUTH failed: WRONGPASS invalid password\n");
        server.join().expect("server");
    }

    /// The first connection answers one command and closes; the shell notices before the
    /// next command, reconnects (sending HELLO 3 again, as the user switched to it) and
    /// sends that command once, on the new connection.
    #[test]
    fn reconnects_once_when_the_connection_dropped() {
        let (port, server) = fake_server(vec![
            vec![b"%1\r\n+proto\r\n:3\r\n"],
            vec![b"%1\r\n+proto\r\n:3\r\n", b"+PONG\r\n"],
        ]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        let hello = split_args("HELLO 3").expect("valid");
        assert_eq!(shell.execute(&hello, true).expect("io"), Outcome::Ok);
        // The server closes the first connection once it has replied.
        let first = server_closed_first(&mut shell);
        assert!(first, "the fake server closes its first connection");
        let ping = split_args("PING").expect("valid");
        assert_eq!(shell.execute(&ping, true).expect("io"), Outcome::Ok);
        drop(shell);
        assert_eq!(text(&out), "1# proto => (integer) 3\nPONG\n");
        assert_eq!(
            text(&err),
            format!(
                "Connection lost; reconnected to 127.0.0.1:{port} as a new session \
                 (the holds of the old one are released).\n"
            )
        );
        let received = server.join().expect("server");
        assert_eq!(
            text(&received[1]),
            "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$4\r\nPING\r\n"
        );
    }

    /// Waits (boundedly) until the shell's connection has seen the server's close.
    fn server_closed_first<O: Write, E: Write>(shell: &mut Shell<O, E>) -> bool {
        for _ in 0..200 {
            let conn = shell.conn.as_mut().expect("connected");
            if conn.is_closed() {
                return true;
            }
            thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    /// The server reads the command and drops the connection without replying: the
    /// shell reconnects, authenticating again with the password typed earlier, and sends
    /// the command once more.
    #[test]
    fn resends_once_when_the_connection_drops_mid_command() {
        let (port, server) =
            fake_server(vec![vec![b"+OK\r\n", b""], vec![b"+OK\r\n", b"+PONG\r\n"]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        let auth = split_args("AUTH pw").expect("valid");
        assert_eq!(shell.execute(&auth, true).expect("io"), Outcome::Ok);
        let ping = split_args("PING").expect("valid");
        assert_eq!(shell.execute(&ping, true).expect("io"), Outcome::Ok);
        drop(shell);
        assert_eq!(text(&out), "OK\nPONG\n");
        assert!(
            text(&err).starts_with("Connection lost; reconnected"),
            "{}",
            text(&err)
        );
        let received = server.join().expect("server");
        assert_eq!(
            text(&received[1]),
            "*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*1\r\n$4\r\nPING\r\n"
        );
    }

    /// In one-shot mode nothing is retried: the error is the answer.
    #[test]
    fn one_shot_does_not_retry() {
        let (port, server) = fake_server(vec![vec![b""]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        assert_eq!(shell.one_shot(&["PING".into()]).expect("io"), 1);
        drop(shell);
        assert_eq!(text(&err), "Error: Server closed the connection\n");
        assert!(out.is_empty());
        server.join().expect("server");
    }

    #[test]
    fn script_mode_runs_lines_and_stops_at_quit() {
        let (port, server) = fake_server(vec![vec![b"+PONG\r\n", b"-ERR unknown command\r\n"]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        let input = "PING\n\n  \nFOO \"a b\"\nHELP RELEASE\n\"bad\nQUIT\nPING\n";
        assert_eq!(shell.script(input.as_bytes()).expect("io"), 1);
        drop(shell);
        let out = text(&out);
        assert!(
            out.starts_with("PONG\n(error) ERR unknown command\n\n  RELEASE key\n"),
            "{out}"
        );
        assert_eq!(text(&err), "Invalid argument(s)\n");
        let received = server.join().expect("server");
        assert_eq!(
            text(&received[0]),
            "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nFOO\r\n$3\r\na b\r\n"
        );
    }

    #[test]
    fn help_needs_no_server() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(1), &mut out, &mut err);
        assert_eq!(
            shell
                .one_shot(&["help".into(), "acquire".into()])
                .expect("io"),
            0
        );
        assert_eq!(
            shell.one_shot(&["HELP".into(), "NOPE".into()]).expect("io"),
            1
        );
        drop(shell);
        assert!(text(&out).contains("ACQUIRE key [EXCLUSIVE"));
        assert_eq!(
            text(&err),
            "No help for 'NOPE'. Type HELP for the list of commands.\n"
        );
    }

    /// A reply naming a port only known at run time, for the fake servers.
    fn leak(text: String) -> &'static [u8] {
        Box::leak(text.into_bytes().into_boxed_slice())
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port() // closed again when the listener drops
    }

    /// A follower answers NOTLEADER with the leader's address: the command goes to the
    /// leader, once, and the user is told on stderr (stdout has only the reply).
    #[test]
    fn follows_a_notleader_redirect_to_the_leader() {
        let (leader, leader_server) = fake_server(vec![vec![b":7\r\n"]]);
        let redirect = leak(format!("-NOTLEADER 127.0.0.1:{leader}\r\n"));
        let (follower, follower_server) = fake_server(vec![vec![redirect]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(follower), &mut out, &mut err);
        let code = shell.one_shot(&["ACQUIRE".into(), "k".into()]).expect("io");
        assert_eq!(code, 0);
        assert_eq!(shell.address(), format!("127.0.0.1:{leader}"));
        drop(shell);
        assert_eq!(text(&out), "(integer) 7\n");
        assert_eq!(text(&err), format!("-> Redirected to 127.0.0.1:{leader}\n"));
        let acquire = "*2\r\n$7\r\nACQUIRE\r\n$1\r\nk\r\n";
        assert_eq!(text(&follower_server.join().expect("follower")[0]), acquire);
        assert_eq!(text(&leader_server.join().expect("leader")[0]), acquire);
    }

    /// NOTLEADER without an address (an election under way): the same command is sent
    /// again after a pause, on the same connection.
    #[test]
    fn retries_while_no_leader_is_known() {
        let (port, server) = fake_server(vec![vec![b"-NOTLEADER\r\n", b":9\r\n"]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        let release = split_args("RELEASE k").expect("valid");
        assert_eq!(shell.execute(&release, true).expect("io"), Outcome::Ok);
        drop(shell);
        assert_eq!(text(&out), "(integer) 9\n");
        assert_eq!(text(&err), "");
        let sent = "*2\r\n$7\r\nRELEASE\r\n$1\r\nk\r\n";
        assert_eq!(
            text(&server.join().expect("server")[0]),
            format!("{sent}{sent}")
        );
    }

    /// Right after the leader died its followers still name it: a leader that cannot be
    /// reached counts as no leader yet. The shell goes back to the follower and asks
    /// again after a pause (here the follower has learnt of a new leader by then and
    /// serves the command).
    #[test]
    fn a_redirect_to_an_unreachable_leader_waits() {
        let dead = free_port();
        let redirect = leak(format!("-NOTLEADER 127.0.0.1:{dead}\r\n"));
        let (port, server) = fake_server(vec![vec![redirect], vec![b":5\r\n"]]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(port), &mut out, &mut err);
        assert_eq!(
            shell.one_shot(&["RENEW".into(), "k".into()]).expect("io"),
            0
        );
        assert_eq!(shell.address(), format!("127.0.0.1:{port}"));
        drop(shell);
        assert_eq!(text(&out), "(integer) 5\n");
        assert_eq!(text(&err), "");
        let received = server.join().expect("server");
        assert_eq!(received[0], received[1], "the same command, twice");
    }

    /// Two nodes that keep naming each other: the redirects stop after MAX_REDIRECTS and
    /// the last NOTLEADER is the answer.
    #[test]
    fn redirects_are_bounded() {
        let a_port = free_port();
        let to_a = leak(format!("-NOTLEADER 127.0.0.1:{a_port}\r\n"));
        let (b_port, b) = fake_server(vec![vec![to_a], vec![to_a]]);
        let to_b = leak(format!("-NOTLEADER 127.0.0.1:{b_port}\r\n"));
        let listener = TcpListener::bind(("127.0.0.1", a_port)).expect("bind a");
        let a = thread::spawn(move || {
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().expect("accept");
                read_request(&mut socket);
                socket.write_all(to_b).expect("reply");
            }
        });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings(a_port), &mut out, &mut err);
        assert_eq!(
            shell.one_shot(&["ACQUIRE".into(), "k".into()]).expect("io"),
            1
        );
        drop(shell);
        assert_eq!(
            text(&out),
            format!("(error) NOTLEADER 127.0.0.1:{a_port}\n"),
            "a, b, a, b: the fourth answer is shown"
        );
        assert_eq!(text(&err).lines().count(), MAX_REDIRECTS);
        a.join().expect("a");
        b.join().expect("b");
    }

    /// With several nodes, the first that accepts the connection is used.
    #[test]
    fn connects_to_the_first_node_that_answers() {
        let down = free_port();
        let (up, server) = fake_server(vec![vec![b"+PONG\r\n"]]);
        let mut settings = settings(down);
        settings.nodes.push(Node::new("127.0.0.1", up));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut shell = Shell::new(settings.clone(), &mut out, &mut err);
        assert_eq!(shell.one_shot(&["PING".into()]).expect("io"), 0);
        assert_eq!(shell.address(), format!("127.0.0.1:{up}"));
        drop(shell);
        assert_eq!(text(&out), "PONG\n");
        server.join().expect("server");
        // None answers: every node's failure is named.
        settings.nodes[1] = Node::new("127.0.0.1", free_port());
        let mut err = Vec::new();
        let mut shell = Shell::new(settings.clone(), Vec::new(), &mut err);
        assert_eq!(shell.one_shot(&["PING".into()]).expect("io"), 1);
        drop(shell);
        assert_eq!(
            text(&err),
            format!(
                "Could not connect to Turnstile at 127.0.0.1:{down}: Connection refused; \
                 127.0.0.1:{}: Connection refused\n",
                settings.nodes[1].port
            )
        );
    }

    #[test]
    fn secrets_stay_out_of_history() {
        assert!(is_secret("auth pw"));
        assert!(is_secret("  \"AUTH\" \"unterminated"));
        assert!(is_secret("HELLO 3 AUTH u p"));
        assert!(!is_secret("HELLO 3"));
        assert!(!is_secret("ACQUIRE auth"));
        assert!(!is_secret(""));
    }
}
