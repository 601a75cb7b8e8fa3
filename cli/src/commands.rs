//! The command table, and what the shell derives from it: `HELP`, the hints shown as you
//! type, and Tab completion.
//!
//! [`COMMANDS`] is the only place that knows the commands: adding one to the server means
//! adding one entry here, and help, hints and completion follow. Each entry's `args` is
//! the exact syntax of text-commands.md after the command name; it is parsed into a small
//! grammar ([`Node`]) so that hints can show only what is left to type.

use crate::split::split_args;

/// What a command is for, to group the list printed by `HELP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Locks,
    Connection,
    Server,
    /// Handled by the shell itself, never sent to the server.
    Shell,
}

impl Group {
    const ALL: [Group; 4] = [Group::Locks, Group::Connection, Group::Server, Group::Shell];

    fn name(self) -> &'static str {
        &self.tag()[1..]
    }

    /// How `HELP` and Tab completion name the group.
    fn tag(self) -> &'static str {
        match self {
            Group::Locks => "@locks",
            Group::Connection => "@connection",
            Group::Server => "@server",
            Group::Shell => "@shell",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Group::Locks => "Locks",
            Group::Connection => "Connection",
            Group::Server => "Server",
            Group::Shell => "Shell",
        }
    }
}

/// One command: its name (two words for subcommands such as `CLIENT SETNAME`), the
/// syntax of its arguments, and a paragraph on what it does and replies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandDoc {
    pub name: &'static str,
    pub args: &'static str,
    pub group: Group,
    pub summary: &'static str,
}

const fn cmd(
    name: &'static str,
    args: &'static str,
    group: Group,
    summary: &'static str,
) -> CommandDoc {
    CommandDoc {
        name,
        args,
        group,
        summary,
    }
}

/// Every command of the text protocol (text-commands.md), then the shell's own.
/// In `args`, UPPERCASE words are typed as they are, lowercase words are values,
/// `[...]` is optional and `a | b` is one of.
pub(crate) static COMMANDS: &[CommandDoc] = &[
    cmd(
        "ACQUIRE",
        "key [EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]] [REENTRANT] [TTL ms] [WAIT ms] \
         [PRIORITY n] [LOCKDELAY ms] [VALUE v]",
        Group::Locks,
        "Takes a hold on key for this session. EXCLUSIVE (the default) is a mutex; SHARED \
         holds are the readers of a read-write lock whose writer is EXCLUSIVE; SEMAPHORE \
         has limit permits in all, of which this hold takes PERMITS n (default 1). TTL is \
         the lease in ms counted from the grant (the server default, 30000 unless \
         configured, when omitted). WAIT is how long the request may queue: 0 tries once, \
         omitted waits until granted or the session ends. Queues are strict FIFO. \
         REENTRANT lets a session that holds key in the same mode take it again (same \
         token, one more level to release). Replies with the fencing token, an integer \
         that increases with every grant of key; nil when WAIT ran out; DEADLOCK when \
         waiting would close a cycle, or when the session already holds key otherwise; \
         WRONGTYPE when key is now another kind, or a semaphore with another limit; LIMIT \
         when a configured limit would be passed. PRIORITY n (0 to 1000, default 0) puts \
         the request ahead of waiters of lower effective priority, which is n plus one \
         level per --priority-aging-ms waited (default 1000), so nothing waits forever. \
         LOCKDELAY ms: if this hold ends by lease expiry, session loss or a forced \
         release (not by RELEASE), key is granted to nobody for ms (at least the \
         server's --lock-delay-ms). VALUE attaches v to the hold (e.g. the holder's \
         address; at most --max-value-bytes): anyone reads it with GETVALUE, INSPECT key \
         WITHVALUES and WATCH.",
    ),
    cmd(
        "CONVERT",
        "key SHARED | EXCLUSIVE [WAIT ms]",
        Group::Locks,
        "Converts this session's hold on key in place. SHARED downgrades an EXCLUSIVE \
         hold at once, keeping its token, and grants the readers now compatible. \
         EXCLUSIVE upgrades a SHARED hold: it waits only for the other holders, ahead of \
         every queued request, and replies with a new token; nil when WAIT ran out (the \
         hold stays SHARED); DEADLOCK when another holder is upgrading too. NOTHELD when \
         the session holds nothing on key; WRONGTYPE on a semaphore.",
    ),
    cmd(
        "RELEASE",
        "key",
        Group::Locks,
        "Releases this session's hold on key, or one level of a reentrant hold, and grants \
         the requests queued behind it that now fit. Replies 1, or NOTHELD when the session \
         holds nothing on key (for example because its lease ran out).",
    ),
    cmd(
        "MACQUIRE",
        "numkeys key mode [key mode ...] [TTL ms] [WAIT ms]",
        Group::Locks,
        "Takes several keys at once, all or none (an atomic multi-lock). Each key is \
         followed by its mode: EXCLUSIVE, SHARED, or SEMAPHORE limit [PERMITS n]. It \
         queues as one request on every key and is granted when it can take them all, so \
         it never holds some keys while waiting for others, and two MACQUIREs that list \
         the same keys in different orders never deadlock. TTL and WAIT as for ACQUIRE \
         (for every key). Replies with an array of fencing tokens, one per key in the \
         order given; nil when WAIT ran out; DEADLOCK, WRONGTYPE (naming the key) or \
         LIMIT as ACQUIRE does, and DEADLOCK when a key is listed twice. At most 64 keys \
         unless the server is configured otherwise (--max-multi-keys).",
    ),
    cmd(
        "MRELEASE",
        "key [key ...]",
        Group::Locks,
        "Releases this session's hold on each key (one level of a reentrant hold), in \
         order, in one command. Replies with the number of keys released, or NOTHELD when \
         the session held none of them.",
    ),
    cmd(
        "RENEW",
        "key [TTL ms]",
        Group::Locks,
        "Renews the lease of this session's hold on key, to TTL ms (the server default \
         when omitted). Replies with the remaining lease in ms, or NOTHELD when the session \
         holds nothing on key.",
    ),
    cmd(
        "SETVALUE",
        "key value",
        Group::Locks,
        "Replaces the value attached to this session's hold on key (an empty value clears \
         it); watchers of key see the change. Replies OK, NOTHELD when the session holds \
         nothing on key, or LIMIT when value is longer than --max-value-bytes.",
    ),
    cmd(
        "GETVALUE",
        "key",
        Group::Locks,
        "The values the holders of key attached to their holds: one [session, token, \
         value] per holder in grant order (value nil when none), or nil when nothing \
         holds key. For an election, the leader and its address.",
    ),
    cmd(
        "WATCH",
        "key [key ...]",
        Group::Locks,
        "Streams every change of the holders of each key as RESP3 push messages: first \
         the state ([watch, key, state, fencing, holders]), then granted, released, \
         expired (with the cause: lease, session or forced) and value messages, each \
         [watch, key, event, session, mode, token, value-or-cause]. Replies with the \
         number of keys watched. Needs RESP3: the shell switches to it (HELLO 3), then \
         prints the messages as they come until Ctrl-C, as redis-cli does for SUBSCRIBE.",
    ),
    cmd(
        "UNWATCH",
        "[key ...]",
        Group::Locks,
        "Stops watching the keys (all of them without key). Replies with the number of \
         keys still watched.",
    ),
    cmd(
        "INSPECT",
        "key [WITHVALUES]",
        Group::Locks,
        "Shows the state of key as field/value pairs, in this order: kind, limit, fencing \
         (the last token issued for key), holders (each [session, mode, token, permits, \
         count, ttl_ms]) and waiters in queue order (each [session, mode, permits, \
         waited_ms]). An empty array when key has no holders and no waiters; a map after \
         HELLO 3. WITHVALUES adds a sixth pair, values: each holder's value (nil when \
         none), in the order of holders.",
    ),
    cmd(
        "LOCKS",
        "[MATCH pattern] [COUNT n]",
        Group::Locks,
        "Lists the keys that have holders or waiters: only those matching the glob \
         pattern (as in Redis: * ? [abc]) with MATCH, and at most n of them with COUNT.",
    ),
    cmd(
        "EXPLAIN",
        "[SESSION id | REQUEST id] [COUNT n]",
        Group::Locks,
        "Explains why a session (this connection's by default) or a queued request (by the \
         server's request id, as EXPLAIN and WAITGRAPH show it) waits: the holders and \
         queued requests it waits for, then what those wait for, breadth first. Replies \
         with session, waiting (the request ids explained), edges (each with depth, key, \
         waiter, request, mode, permits, waited_ms, type holder or queued, blocker, \
         blocker_mode, blocker_permits, then token and ttl_ms for a holder, or \
         blocker_request and blocker_waited_ms for a request queued ahead), truncated (1 \
         when more than COUNT edges, default 1000) and cycle (empty: deadlocks are \
         refused). A parked ACQUIRE's connection cannot ask: use EXPLAIN SESSION id from \
         another one.",
    ),
    cmd(
        "WAITGRAPH",
        "[DOT] [COUNT n]",
        Group::Locks,
        "Shows the whole wait-for graph: every edge from a queued request to a holder or \
         to a request queued ahead of it that it waits for (fields as EXPLAIN's, without \
         depth), and truncated (1 when more than COUNT edges, default 1000, at most \
         100000). With DOT, one Graphviz document instead (dot -Tsvg); `turnstile cli \
         --waitgraph-dot FILE` writes it to a file.",
    ),
    cmd(
        "PING",
        "[message]",
        Group::Connection,
        "Checks that the server answers: replies PONG, or message as a bulk string. \
         Allowed before AUTH.",
    ),
    cmd(
        "AUTH",
        "[username] password",
        Group::Connection,
        "Authenticates the connection. Replies OK, or WRONGPASS. When the server has a \
         password, every command other than AUTH, PING, HELLO and QUIT gets NOAUTH until \
         AUTH succeeds. The shell sends it on connect with -a/--pass and --user.",
    ),
    cmd(
        "HELLO",
        "[protover [AUTH username password] [SETNAME name]]",
        Group::Connection,
        "Switches the connection to protocol protover (2 or 3; anything else gets \
         NOPROTO), optionally authenticating and naming it in the same step, and replies \
         with server info: server (\"turnstile\"), version, proto, id (the session), mode \
         (standalone or cluster) and role (leader or follower). The reply is a map under \
         RESP3 and a flat array under RESP2. After HELLO 3, nil replies are RESP3 nulls and \
         INSPECT replies are maps. The shell sends HELLO 3 on connect with -3/--resp3.",
    ),
    cmd(
        "CLIENT SETNAME",
        "name",
        Group::Connection,
        "Names this connection, as in Redis. Replies OK.",
    ),
    cmd(
        "CLIENT GETNAME",
        "",
        Group::Connection,
        "Replies with this connection's name, or nil when it has none.",
    ),
    cmd(
        "CLIENT ID",
        "",
        Group::Connection,
        "Replies with the id of this connection, which is also its session: the owner of \
         the holds it takes.",
    ),
    cmd(
        "CLIENT SETINFO",
        "attr value",
        Group::Connection,
        "Stores information about the client library (LIB-NAME, LIB-VER), as Redis client \
         libraries send it when they connect. Replies OK.",
    ),
    cmd(
        "QUIT",
        "",
        Group::Connection,
        "Asks the server to close the connection: it replies OK and closes. The session \
         ends with it: its holds are released and its queued requests cancelled. In the \
         interactive shell QUIT (or EXIT) leaves the shell, which closes the connection.",
    ),
    cmd(
        "INFO",
        "[section]",
        Group::Server,
        "Server information, as \"field:value\" lines under \"# Section\" headers. The \
         sections are server, clients, locks, stats (with latency percentiles), \
         persistence and replication; with section, only that one.",
    ),
    cmd(
        "ADMIN FORCE-RELEASE",
        "key",
        Group::Server,
        "Drops every hold of key (needs @admin) and grants the requests queued behind \
         them, with new tokens. Replies with the number of holds released. Logged with \
         the user's name (turnstile audit).",
    ),
    cmd(
        "ADMIN END-SESSION",
        "id",
        Group::Server,
        "Ends session id (needs @admin): its holds are released, its queued requests \
         cancelled and its connection closed. Replies 1, or 0 when there is no such session.",
    ),
    cmd(
        "ADMIN LIMITS SET",
        "name value",
        Group::Server,
        "Changes a limit (needs @admin): max-waiters-per-key, max-keys or \
         max-holds-per-session. Later requests over it get LIMIT; it stays in force after \
         a restart. Replies OK.",
    ),
    cmd(
        "ADMIN LIMITS",
        "",
        Group::Server,
        "Shows the lock table's limits (needs @admin) as name/value pairs.",
    ),
    cmd(
        "HELP",
        "[command | @group]",
        Group::Shell,
        "Without arguments, lists every command with its syntax. With a command, shows its \
         syntax and what it does; with @group (@locks, @connection, @server, @shell), the \
         commands of that group.",
    ),
    cmd(
        "EXIT",
        "",
        Group::Shell,
        "Leaves the shell, like QUIT. Closing the connection ends the session: its holds \
         are released.",
    ),
    cmd("CLEAR", "", Group::Shell, "Clears the screen."),
];

/// Looks up a command by the first words of a typed line: the longest name that matches
/// (`CLIENT SETNAME` before `CLIENT`), with how many words it took.
pub(crate) fn lookup<W: AsRef<[u8]>>(words: &[W]) -> Option<(&'static CommandDoc, usize)> {
    COMMANDS
        .iter()
        .filter_map(|doc| {
            let name: Vec<&str> = doc.name.split(' ').collect();
            let matches = name.len() <= words.len()
                && name
                    .iter()
                    .zip(words)
                    .all(|(n, w)| n.as_bytes().eq_ignore_ascii_case(w.as_ref()));
            matches.then_some((doc, name.len()))
        })
        .max_by_key(|&(_, len)| len)
}

/// A piece of a command's syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A keyword, typed as it is: `TTL`.
    Word(&'static str),
    /// A value: `key`, `ms`.
    Arg(&'static str),
    /// `[...]`
    Optional(Vec<Node>),
    /// `a | b | c`: one of the alternatives.
    OneOf(Vec<Vec<Node>>),
}

/// Parses a syntax string such as `key [TTL ms]` into its grammar.
fn parse_syntax(syntax: &'static str) -> Vec<Node> {
    let mut tokens = Vec::new();
    let mut rest = syntax;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let end = match rest.chars().next() {
            Some('[' | ']' | '|') => 1,
            Some(_) => rest.find([' ', '[', ']', '|']).unwrap_or(rest.len()),
            None => break,
        };
        tokens.push(&rest[..end]);
        rest = &rest[end..];
    }
    let mut pos = 0;
    parse_group(&tokens, &mut pos)
}

fn parse_group(tokens: &[&'static str], pos: &mut usize) -> Vec<Node> {
    let mut alternatives = vec![Vec::new()];
    while let Some(&token) = tokens.get(*pos) {
        *pos += 1;
        let current = alternatives
            .last_mut()
            .expect("starts with one and only grows");
        match token {
            "[" => current.push(Node::Optional(parse_group(tokens, pos))),
            "]" => break,
            "|" => alternatives.push(Vec::new()),
            _ if is_keyword(token) => current.push(Node::Word(token)),
            _ => current.push(Node::Arg(token)),
        }
    }
    if alternatives.len() == 1 {
        alternatives.pop().expect("has one")
    } else {
        vec![Node::OneOf(alternatives)]
    }
}

fn is_keyword(token: &str) -> bool {
    token.bytes().any(|b| b.is_ascii_uppercase())
        && token
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn render(nodes: &[Node]) -> String {
    let parts: Vec<String> = nodes.iter().map(render_node).collect();
    parts.join(" ")
}

fn render_node(node: &Node) -> String {
    match node {
        Node::Word(word) | Node::Arg(word) => (*word).to_string(),
        Node::Optional(inner) => format!("[{}]", render(inner)),
        Node::OneOf(alternatives) => {
            let parts: Vec<String> = alternatives.iter().map(|alt| render(alt)).collect();
            parts.join(" | ")
        }
    }
}

fn same_word(keyword: &str, typed: &[u8]) -> bool {
    keyword.as_bytes().eq_ignore_ascii_case(typed)
}

/// Consumes one typed argument from what is still expected, scanning in order: a keyword
/// or value that is required takes it (or refuses it); an optional group takes it when it
/// can start with it, else the next group is tried, since options come in any order.
/// The rest of the group that took it goes first: its values must be typed next.
/// Returns false when the argument fits nowhere.
fn feed(pending: &mut Vec<Node>, typed: &[u8]) -> bool {
    for i in 0..pending.len() {
        let rest = match &pending[i] {
            Node::Word(word) if same_word(word, typed) => Some(Vec::new()),
            Node::Word(_) => return false,
            Node::Arg(_) => Some(Vec::new()),
            Node::Optional(inner) => accept(inner, typed),
            Node::OneOf(alternatives) => match accept_one_of(alternatives, typed) {
                Some(rest) => Some(rest),
                None => return false,
            },
        };
        if let Some(rest) = rest {
            pending.remove(i);
            pending.splice(0..0, rest);
            return true;
        }
    }
    false
}

/// What remains of `seq` once `typed` is taken as its first element, when it can be.
fn accept(seq: &[Node], typed: &[u8]) -> Option<Vec<Node>> {
    let mut rest = match seq.first()? {
        Node::Word(word) if same_word(word, typed) => Vec::new(),
        Node::Word(_) => return None,
        Node::Arg(_) => Vec::new(),
        Node::OneOf(alternatives) => accept_one_of(alternatives, typed)?,
        Node::Optional(inner) => match accept(inner, typed) {
            Some(rest) => rest,
            None => return accept(&seq[1..], typed),
        },
    };
    rest.extend_from_slice(&seq[1..]);
    Some(rest)
}

/// A keyword alternative that matches wins over one that starts with a value.
fn accept_one_of(alternatives: &[Vec<Node>], typed: &[u8]) -> Option<Vec<Node>> {
    let keyword_first = alternatives
        .iter()
        .filter(|alt| matches!(alt.first(), Some(Node::Word(_))));
    let value_first = alternatives
        .iter()
        .filter(|alt| !matches!(alt.first(), Some(Node::Word(_))));
    keyword_first
        .chain(value_first)
        .find_map(|alt| accept(alt, typed))
}

/// The keywords that could come next, in the order of the syntax.
fn next_keywords(pending: &[Node], out: &mut Vec<&'static str>) {
    for node in pending {
        match node {
            Node::Optional(inner) => first_keywords(inner, out),
            // Anything required ends the search: nothing after it can come first.
            Node::Word(word) => {
                out.push(word);
                break;
            }
            Node::OneOf(alternatives) => {
                alternatives.iter().for_each(|alt| first_keywords(alt, out));
                break;
            }
            Node::Arg(_) => break,
        }
    }
}

fn first_keywords(seq: &[Node], out: &mut Vec<&'static str>) {
    match seq.first() {
        Some(Node::Word(word)) => out.push(word),
        Some(Node::OneOf(alternatives)) => {
            alternatives.iter().for_each(|alt| first_keywords(alt, out))
        }
        Some(Node::Optional(inner)) => {
            first_keywords(inner, out);
            first_keywords(&seq[1..], out);
        }
        Some(Node::Arg(_)) | None => {}
    }
}

/// Every keyword of a grammar, for Tab completion.
fn all_keywords(nodes: &[Node], out: &mut Vec<&'static str>) {
    for node in nodes {
        match node {
            Node::Word(word) => out.push(word),
            Node::Arg(_) => {}
            Node::Optional(inner) => all_keywords(inner, out),
            Node::OneOf(alternatives) => alternatives.iter().for_each(|alt| all_keywords(alt, out)),
        }
    }
}

/// Completes `word` in the case the user is typing it in: lowercase stays lowercase.
fn in_case_of(typed: &str, word: &str) -> String {
    let lowercase = typed.bytes().any(|b| b.is_ascii_lowercase())
        && !typed.bytes().any(|b| b.is_ascii_uppercase());
    if lowercase {
        word.to_ascii_lowercase()
    } else {
        word.to_string()
    }
}

fn starts_with_ignore_case(word: &str, prefix: &str) -> bool {
    word.len() >= prefix.len()
        && word.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The hint shown after the cursor: the rest of the syntax (greyed by the editor), and
/// what Right-arrow inserts when the hint finishes a word the user started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hint {
    pub display: String,
    pub completion: Option<String>,
}

/// The hint for a line being typed (the cursor at its end), or `None` when there is
/// nothing useful to show: an unknown command, arguments that do not fit the syntax, or
/// nothing left to type.
pub(crate) fn hint(line: &str) -> Option<Hint> {
    let words = split_args(line).ok()?;
    let last = words.last()?;
    let at_word_end = !line.ends_with(|c: char| c.is_ascii_whitespace());
    let Some((doc, taken)) = lookup(&words) else {
        return command_name_hint(&words, at_word_end);
    };
    let mut pending = parse_syntax(doc.args);
    let args = &words[taken..];
    let mut completion = None;
    for (i, arg) in args.iter().enumerate() {
        if feed(&mut pending, arg) {
            continue;
        }
        // The word under the cursor may be the start of a keyword: finish it.
        let partial = std::str::from_utf8(last).ok()?;
        if i + 1 < args.len() || !at_word_end {
            return None;
        }
        let mut keywords = Vec::new();
        next_keywords(&pending, &mut keywords);
        keywords.retain(|k| starts_with_ignore_case(k, partial));
        keywords.sort_unstable();
        keywords.dedup();
        let [keyword] = keywords[..] else {
            return None;
        };
        feed(&mut pending, keyword.as_bytes());
        completion = Some(in_case_of(partial, &keyword[partial.len()..]));
    }
    if pending.is_empty() {
        return completion.map(|rest| Hint {
            display: rest.clone(),
            completion: Some(rest),
        });
    }
    let syntax = render(&pending);
    Some(match completion {
        Some(rest) => Hint {
            display: format!("{rest} {syntax}"),
            completion: Some(format!("{rest} ")),
        },
        None if at_word_end => Hint {
            display: format!(" {syntax}"),
            completion: None,
        },
        None => Hint {
            display: syntax,
            completion: None,
        },
    })
}

/// Hints for a line that is not (yet) a whole command name: the rest of the name when
/// only one command starts that way, or the subcommands after `CLIENT `.
fn command_name_hint(words: &[Vec<u8>], at_word_end: bool) -> Option<Hint> {
    let (complete, partial) = match (at_word_end, words.split_last()) {
        (true, Some((last, complete))) => (complete, Some(std::str::from_utf8(last).ok()?)),
        _ => (words, None),
    };
    let candidates: Vec<(&CommandDoc, Vec<&str>)> = COMMANDS
        .iter()
        .map(|doc| (doc, doc.name.split(' ').collect::<Vec<_>>()))
        .filter(|(_, name)| {
            name.len() > complete.len()
                && name.iter().zip(complete).all(|(n, w)| same_word(n, w))
                && partial.map_or(true, |p| starts_with_ignore_case(name[complete.len()], p))
        })
        .collect();
    let rest_of = |doc: &CommandDoc, name: &[&str], skip: usize| {
        let mut text = name[skip..].join(" ");
        if !doc.args.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(doc.args);
        }
        text
    };
    let alternatives = |skip: usize| {
        let parts: Vec<String> = candidates
            .iter()
            .map(|(doc, name)| rest_of(doc, name, skip))
            .collect();
        parts.join(" | ")
    };
    match partial {
        None if !candidates.is_empty() => Some(Hint {
            display: alternatives(complete.len()),
            completion: None,
        }),
        None => None,
        Some(partial) => {
            let next = candidates.first()?.1[complete.len()];
            if candidates
                .iter()
                .any(|(_, name)| name[complete.len()] != next)
            {
                return None;
            }
            let rest = in_case_of(partial, &next[partial.len()..]);
            let after = alternatives(complete.len() + 1);
            let display = if after.is_empty() {
                rest.clone()
            } else {
                format!("{rest} {after}")
            };
            Some(Hint {
                display,
                completion: Some(format!("{rest} ")),
            })
        }
    }
}

/// Tab completion for the word before the cursor: where it starts and what it may become.
pub(crate) fn complete(line: &str) -> (usize, Vec<String>) {
    let start = line
        .rfind(|c: char| c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let typed = &line[start..];
    let Ok(before) = split_args(&line[..start]) else {
        return (start, Vec::new());
    };
    let mut words: Vec<&str> = Vec::new();
    let first_words = |out: &mut Vec<&str>, skip: &[Vec<u8>]| {
        for doc in COMMANDS {
            let name: Vec<&str> = doc.name.split(' ').collect();
            if name.len() > skip.len() && name.iter().zip(skip).all(|(n, w)| same_word(n, w)) {
                out.push(name[skip.len()]);
            }
        }
    };
    let is_help = before.first().is_some_and(|w| same_word("HELP", w));
    if is_help && before.len() == 1 {
        first_words(&mut words, &[]);
        words.extend(Group::ALL.iter().map(|g| g.tag()));
    } else if is_help {
        first_words(&mut words, &before[1..]);
    } else {
        first_words(&mut words, &before);
        if words.is_empty() {
            if let Some((doc, _)) = lookup(&before) {
                all_keywords(&parse_syntax(doc.args), &mut words);
            }
        }
    }
    let mut candidates: Vec<String> = words
        .into_iter()
        .filter(|word| starts_with_ignore_case(word, typed))
        .map(|word| in_case_of(typed, word))
        .collect();
    candidates.sort();
    candidates.dedup();
    (start, candidates)
}

/// `HELP` with no topic: every command with its syntax, by group.
pub(crate) fn help_overview(color: bool) -> String {
    let mut out = format!(
        "turnstile cli {}, the shell of the Turnstile lock manager.\n\
         Type \"HELP <command>\" for its syntax and what it does, \"HELP @<group>\" for a group,\n\
         Tab to complete a command or keyword, \"QUIT\" to exit.\n",
        env!("CARGO_PKG_VERSION")
    );
    for group in Group::ALL {
        let note = match group {
            Group::Shell => ", run by turnstile cli itself",
            _ => "",
        };
        out.push_str(&format!("\n{} ({}){note}:\n", group.title(), group.tag()));
        for doc in COMMANDS.iter().filter(|doc| doc.group == group) {
            out.push_str("  ");
            out.push_str(&usage(doc, color));
            out.push('\n');
        }
    }
    out
}

/// `HELP <topic>`: one command (all of `CLIENT`'s for `HELP CLIENT`) or one `@group`.
/// `None` when nothing matches.
pub(crate) fn help_topic<W: AsRef<[u8]>>(topic: &[W], color: bool) -> Option<String> {
    let first = topic.first()?.as_ref();
    let docs: Vec<&CommandDoc> = if let Some(group) = first.strip_prefix(b"@") {
        let group = Group::ALL
            .into_iter()
            .find(|g| same_word(&g.tag()[1..], group))?;
        COMMANDS.iter().filter(|doc| doc.group == group).collect()
    } else if let Some((doc, taken)) = lookup(topic) {
        (taken == topic.len()).then_some(vec![doc])?
    } else {
        COMMANDS
            .iter()
            .filter(|doc| {
                let name: Vec<&str> = doc.name.split(' ').collect();
                name.len() > topic.len()
                    && name
                        .iter()
                        .zip(topic)
                        .all(|(n, w)| same_word(n, w.as_ref()))
            })
            .collect()
    };
    if docs.is_empty() {
        return None;
    }
    let mut out = String::new();
    for doc in docs {
        out.push_str(&describe(doc, color));
    }
    // One blank line between commands and after the last, as redis-cli's help.
    out.push('\n');
    Some(out)
}

/// A command's name and syntax on one line, the name bold and the syntax grey as in
/// redis-cli's help when the output is a terminal.
fn usage(doc: &CommandDoc, color: bool) -> String {
    match (color, doc.args.is_empty()) {
        (true, true) => format!("\x1b[1m{}\x1b[0m", doc.name),
        (true, false) => format!("\x1b[1m{}\x1b[0m \x1b[90m{}\x1b[0m", doc.name, doc.args),
        (false, true) => doc.name.to_string(),
        (false, false) => format!("{} {}", doc.name, doc.args),
    }
}

/// One command's help, laid out as redis-cli's `help <command>`: a blank line, then
/// its syntax, summary and group.
fn describe(doc: &CommandDoc, color: bool) -> String {
    let label = |text: &str| {
        if color {
            format!("\x1b[33m{text}:\x1b[0m")
        } else {
            format!("{text}:")
        }
    };
    let summary = wrap(doc.summary, 78, "  summary: ".len());
    format!(
        "\n  {}\n  {} {}\n  {} {}\n",
        usage(doc, color),
        label("summary"),
        summary,
        label("group"),
        doc.group.name()
    )
}

/// Wraps a paragraph at `width` columns; lines after the first are indented by `indent`.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut column = indent;
    for word in text.split_whitespace() {
        if column > indent && column + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            column = indent;
        } else if column > indent {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(line: &str) -> Option<String> {
        hint(line).map(|h| h.display)
    }

    #[test]
    fn every_syntax_parses_and_renders_back_unchanged() {
        for doc in COMMANDS {
            assert_eq!(render(&parse_syntax(doc.args)), doc.args, "{}", doc.name);
        }
    }

    /// The command contract, line by line: help must show exactly this syntax.
    #[test]
    fn the_table_covers_the_contract() {
        let contract = [
            "PING [message]",
            "AUTH [username] password",
            "HELLO [protover [AUTH username password] [SETNAME name]]",
            "CLIENT SETNAME name",
            "CLIENT GETNAME",
            "CLIENT ID",
            "CLIENT SETINFO attr value",
            "QUIT",
            "ACQUIRE key [EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]] [REENTRANT] [TTL ms] [WAIT ms]",
            "RELEASE key",
            "RENEW key [TTL ms]",
            "INSPECT key",
            "LOCKS [MATCH pattern] [COUNT n]",
            "INFO [section]",
        ];
        let overview = help_overview(false);
        for syntax in contract {
            // Additions after the contract's syntax (new optional words) are allowed.
            let line = overview
                .lines()
                .find(|l| l.starts_with(&format!("  {syntax}")))
                .unwrap_or_else(|| panic!("{syntax}"));
            let syntax = line.trim_start();
            let words: Vec<&str> = syntax.split(' ').collect();
            let name_len = if words[0] == "CLIENT" { 2 } else { 1 };
            let help = help_topic(&words[..name_len], false).expect("documented");
            assert!(help.contains(&format!("\n  {syntax}")), "{help}");
        }
    }

    #[test]
    fn lookup_prefers_the_longest_name() {
        let (doc, taken) = lookup(&["client", "setname", "x"]).expect("known");
        assert_eq!((doc.name, taken), ("CLIENT SETNAME", 2));
        assert!(lookup(&["CLIENT"]).is_none());
        assert!(lookup(&["SET", "k"]).is_none());
    }

    #[test]
    fn hints_show_the_syntax_left_to_type() {
        let options = "[EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]] [REENTRANT] [TTL ms] \
             [WAIT ms] [PRIORITY n] [LOCKDELAY ms] [VALUE v]";
        assert_eq!(
            shown("ACQUIRE").as_deref(),
            Some(&*format!(" key {options}"))
        );
        assert_eq!(
            shown("acquire ").as_deref(),
            Some(&*format!("key {options}"))
        );
        assert_eq!(shown("ACQUIRE k").as_deref(), Some(&*format!(" {options}")));
        assert_eq!(
            shown("ACQUIRE k TTL ").as_deref(),
            Some(
                "ms [EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]] [REENTRANT] [WAIT ms] \
                 [PRIORITY n] [LOCKDELAY ms] [VALUE v]"
            )
        );
        assert_eq!(
            shown("ACQUIRE k ttl 500 semaphore ").as_deref(),
            Some("limit [PERMITS n] [REENTRANT] [WAIT ms] [PRIORITY n] [LOCKDELAY ms] [VALUE v]")
        );
        assert_eq!(
            shown("ACQUIRE k SEMAPHORE 3 PERMITS 2 REENTRANT ").as_deref(),
            Some("[TTL ms] [WAIT ms] [PRIORITY n] [LOCKDELAY ms] [VALUE v]")
        );
        assert_eq!(
            shown("ACQUIRE k SHARED REENTRANT TTL 1 WAIT 0 PRIORITY 1 LOCKDELAY 5 VALUE v"),
            None
        );
        assert_eq!(shown("AUTH ").as_deref(), Some("[username] password"));
        assert_eq!(shown("AUTH bob ").as_deref(), Some("password"));
        assert_eq!(
            shown("HELLO 3 ").as_deref(),
            Some("[AUTH username password] [SETNAME name]")
        );
        assert_eq!(
            shown("HELLO 3 AUTH u p ").as_deref(),
            Some("[SETNAME name]")
        );
        assert_eq!(shown("CLIENT SETNAME").as_deref(), Some(" name"));
        assert_eq!(shown("RELEASE k "), None);
        assert_eq!(shown("PING hello there"), None, "one argument too many");
        assert_eq!(shown("NOSUCH "), None);
        assert_eq!(shown(""), None);
        assert_eq!(shown("ACQUIRE \"unterminated"), None);
    }

    #[test]
    fn hints_finish_a_keyword_or_command_being_typed() {
        let ttl = hint("ACQUIRE k TT").expect("hint");
        assert_eq!(
            ttl.display,
            "L ms [EXCLUSIVE | SHARED | SEMAPHORE limit [PERMITS n]] [REENTRANT] [WAIT ms] \
             [PRIORITY n] [LOCKDELAY ms] [VALUE v]"
        );
        assert_eq!(ttl.completion.as_deref(), Some("L "));
        assert_eq!(
            hint("acquire k reen").expect("hint").completion.as_deref(),
            Some("trant ")
        );
        // SHARED and SEMAPHORE both start with S: nothing to finish.
        assert_eq!(hint("ACQUIRE k S"), None);
        let acq = hint("acq").expect("hint");
        assert!(
            acq.display.starts_with("uire key [EXCLUSIVE"),
            "{}",
            acq.display
        );
        assert_eq!(acq.completion.as_deref(), Some("uire "));
        assert_eq!(hint("IN"), None, "INFO or INSPECT");
        assert_eq!(
            shown("CLIENT ").as_deref(),
            Some("SETNAME name | GETNAME | ID | SETINFO attr value")
        );
        assert_eq!(
            shown("CLI").as_deref(),
            Some("ENT SETNAME name | GETNAME | ID | SETINFO attr value")
        );
        assert_eq!(shown("CLIENT SETN").as_deref(), Some("AME name"));
        assert_eq!(shown("CLIENT GETN").as_deref(), Some("AME"));
    }

    #[test]
    fn completes_commands_subcommands_and_keywords() {
        assert_eq!(complete("AC"), (0, vec!["ACQUIRE".to_string()]));
        assert_eq!(complete("re").1, ["release", "renew"]);
        assert_eq!(
            complete("CLIENT S"),
            (7, vec!["SETINFO".into(), "SETNAME".into()])
        );
        assert_eq!(complete("ACQUIRE k s").1, ["semaphore", "shared"]);
        assert_eq!(complete("LOCKS ").1, ["COUNT", "MATCH"]);
        assert!(complete("HELP ").1.contains(&"@locks".to_string()));
        assert_eq!(complete("help cl").1, ["clear", "client"]);
        assert_eq!(complete("HELP CLIENT G").1, ["GETNAME"]);
    }

    #[test]
    fn help_describes_commands_and_groups() {
        let acquire = help_topic(&["acquire"], false).expect("known");
        assert!(acquire.contains("  group: locks\n"));
        assert!(acquire.contains("fencing token"));
        for line in acquire.lines().skip(2) {
            assert!(line.len() <= 78, "wrapped: {line:?}");
        }
        let client = help_topic(&["CLIENT"], false).expect("known");
        assert_eq!(client.matches("\n  CLIENT ").count(), 4);
        let locks = help_topic(&["@locks"], false).expect("known");
        let in_group = COMMANDS.iter().filter(|c| c.group == Group::Locks).count();
        assert!(in_group >= 7, "ACQUIRE .. LOCKS, EXPLAIN, WAITGRAPH");
        assert_eq!(locks.matches("group: locks").count(), in_group);
        assert!(help_topic(&["NOSUCH"], false).is_none());
        assert!(help_topic(&["@nosuch"], false).is_none());
        assert!(help_topic(&["RELEASE", "extra"], false).is_none());
        assert!(help_topic(&["ACQUIRE"], true)
            .expect("known")
            .contains("\x1b[1mACQUIRE\x1b[0m"));
    }
}
