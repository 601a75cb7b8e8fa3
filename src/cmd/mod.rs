//! Text-mode commands: one file per command, each with its grammar in a `# Format` block,
//! parsing its arguments, applying them and encoding the reply.
//!
//! [`dispatch`] routes by name (case-insensitive) and enforces AUTH and the user's ACL
//! (`crate::acl`): a command or key the connection's user may not use gets `-NOPERM`.
//! Errors are replies: the connection goes on after any of them.

pub(crate) mod acquire;
pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod client;
pub mod cluster;
mod compat;
pub(crate) mod convert;
pub(crate) mod explain;
mod getvalue;
mod hello;
pub(crate) mod info;
mod inspect;
mod locks;
pub(crate) mod multi;
mod ping;
pub(crate) mod release;
pub(crate) mod renew;
pub(crate) mod setvalue;
mod waitgraph;
pub(crate) mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::acl::{self, User};
use crate::engine::{AcquireRequest, Event, RequestId, SessionId};
use crate::protocol::{Proto, ReplyWriter};
use crate::server::Shared;

/// Per-connection state the commands read and change.
#[derive(Debug)]
pub struct ConnState {
    /// The connection's session.
    pub session: SessionId,
    /// The peer, for CLIENT and logs.
    pub peer: SocketAddr,
    /// Reply protocol (HELLO switches it).
    pub proto: Proto,
    /// Whether AUTH succeeded (or the default user needs no password).
    pub authed: bool,
    /// The user the connection is (`default` until an AUTH names another); its
    /// permissions are checked for every command.
    pub user: Arc<User>,
    /// CLIENT SETNAME.
    pub name: Option<Vec<u8>>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Vec<u8>>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Vec<u8>>,
    /// ACQUIREs answered at once in the current batch (their latency is recorded when
    /// the replies go out).
    pub answered: crate::server::stats::Answered,
    /// The mode of the parked ACQUIRE (its wait is recorded under it).
    pub parked: crate::server::stats::ModeLabel,
    /// WATCH: the connection's watches and the pushes waiting for it (made at the first
    /// WATCH).
    pub watcher: Option<Arc<crate::server::watches::Watcher>>,
}

impl ConnState {
    /// A new connection's state, as `user` (authenticated or not yet).
    pub fn new(session: SessionId, peer: SocketAddr, user: Arc<User>, authed: bool) -> Self {
        ConnState {
            session,
            peer,
            proto: Proto::Resp2,
            authed,
            user,
            name: None,
            lib_name: None,
            lib_ver: None,
            answered: Default::default(),
            parked: crate::server::stats::ModeLabel::Exclusive,
            watcher: None,
        }
    }
}

/// What the connection does after a command.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next command.
    Continue,
    /// Send what is buffered and close (QUIT).
    Close,
    /// The ACQUIRE queued: send what is buffered, then wait for its grant or timeout before
    /// running the commands behind it.
    Park {
        /// The queued request.
        request: RequestId,
        /// When it queued.
        since: Instant,
        /// A multi-lock's number of keys (its grant is one event per key, answered as
        /// one array); 0 for an ACQUIRE.
        keys: usize,
    },
    /// Cluster mode: the command needs the cluster (a proposal or a read index) before
    /// it can answer; the connection does that and replies (see
    /// `crate::server::connection`).
    Replicate(Op),
}

/// What a command asks of the cluster (cluster mode only).
#[derive(Debug)]
pub enum Op {
    /// Propose this ACQUIRE.
    Acquire {
        /// The key.
        key: Vec<u8>,
        /// The request, with its id.
        req: AcquireRequest,
        /// ACQUIRE ... VALUE.
        value: Option<Vec<u8>>,
    },
    /// Propose this SETVALUE.
    SetValue {
        /// The key.
        key: Vec<u8>,
        /// The value (empty: clear).
        value: Vec<u8>,
    },
    /// Propose this MACQUIRE.
    MultiAcquire {
        /// The keys and modes.
        items: Vec<(Vec<u8>, crate::engine::Mode)>,
        /// The request, with its id.
        req: crate::engine::MultiRequest,
    },
    /// Propose this MRELEASE.
    MultiRelease {
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// Propose this RELEASE.
    Release {
        /// The key.
        key: Vec<u8>,
    },
    /// Propose this CONVERT of a hold (see `convert`).
    Convert {
        /// The key.
        key: Vec<u8>,
        /// SHARED or EXCLUSIVE.
        to: crate::engine::Mode,
        /// As ACQUIRE's WAIT.
        wait_ms: Option<u64>,
        /// Names a pending upgrade.
        request: RequestId,
    },
    /// Renew after a read index (a deposed leader must not extend a lease).
    Renew {
        /// The key.
        key: Vec<u8>,
        /// The new TTL, if given.
        ttl: Option<u64>,
    },
    /// A CLUSTER membership change.
    Cluster(cluster::Admin),
    /// A changing ADMIN command (force-release, end-session, limits set).
    Admin(crate::server::admin::AdminOp),
    /// INSPECT, LOCKS, EXPLAIN or WAITGRAPH on the leader: run the command again once a
    /// read index confirmed the leadership (with [`Ctx::read_ok`] set).
    Read,
}

/// What a command runs with.
pub struct Ctx<'a> {
    /// Server state.
    pub shared: &'a Shared,
    /// Connection state.
    pub conn: &'a mut ConnState,
    /// The engine time of this batch of commands.
    pub now: u64,
    /// Where the reply goes.
    pub out: ReplyWriter<'a>,
    /// Events for other sessions caused by the command (routed by the connection).
    pub events: &'a mut Vec<Event>,
    /// The log index the reply must wait for (set by commands that touch the table; see
    /// [`crate::durable::Store`]).
    pub ticket: crate::durable::Ticket,
    /// Cluster mode: a read index has just confirmed this node leads (INSPECT and LOCKS
    /// may read).
    pub read_ok: bool,
}

/// Whether `word` is `keyword` in any letter case. `keyword` must be upper-case ASCII
/// letters: clearing bit 0x20 of a byte maps exactly its two cases onto such a letter, so one
/// AND and one compare per byte suffice (this runs for every word of every command).
#[inline]
pub(crate) fn word_eq(word: &[u8], keyword: &str) -> bool {
    let k = keyword.as_bytes();
    debug_assert!(k.iter().all(u8::is_ascii_uppercase));
    word.len() == k.len() && word.iter().zip(k).all(|(&c, &k)| c & !0x20 == k)
}

/// Runs one command. `args[0]` is the command name.
pub fn dispatch(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let name = args[0];
    let is = |n: &str| word_eq(name, n);
    let exempt = is("AUTH") || is("PING") || is("HELLO") || is("QUIT");
    if !ctx.conn.authed && !exempt {
        ctx.out.error("NOAUTH Authentication required.");
        return Flow::Continue;
    }
    if ctx.conn.session.0 != 0 && ctx.shared.router.was_ended(ctx.conn.session) {
        ctx.out
            .error("ERR this connection's session was ended by an administrator");
        return Flow::Close;
    }
    let a = &args[1..];
    // The default user without a users file may do anything: no second look at the
    // name on the hot path.
    if !ctx.conn.user.unrestricted() {
        if let Some(c) = acl_command(name) {
            if !permitted(ctx, c, a) {
                return Flow::Continue;
            }
        }
    }
    if let Some(c) = &ctx.shared.cluster {
        let explains = is("EXPLAIN") || is("WAITGRAPH");
        if (is("INSPECT") || is("LOCKS") || is("GETVALUE") || explains) && !ctx.read_ok {
            if c.is_leading() {
                return Flow::Replicate(Op::Read);
            }
            if !c.stale_reads() {
                ctx.out.error(&c.not_leader().text());
                return Flow::Continue;
            }
        }
    }
    match name.len() {
        7 if is("ACQUIRE") => return acquire::run(ctx, a),
        7 if is("RELEASE") => return release::run(ctx, a),
        7 if is("CONVERT") => return convert::run(ctx, a),
        5 if is("RENEW") => return renew::run(ctx, a),
        8 if is("MACQUIRE") => return multi::run_acquire(ctx, a),
        8 if is("MRELEASE") => return multi::run_release(ctx, a),
        4 if is("PING") => ping::run(ctx, a),
        7 if is("INSPECT") => inspect::run(ctx, a),
        5 if is("LOCKS") => locks::run(ctx, a),
        4 if is("INFO") => info::run(ctx, a),
        4 if is("AUTH") => auth::run(ctx, a),
        5 if is("HELLO") => hello::run(ctx, a),
        6 if is("CLIENT") => client::run(ctx, a),
        7 if is("CLUSTER") => return cluster::run(ctx, a),
        5 if is("ADMIN") => return admin::run(ctx, a),
        7 if is("EXPLAIN") => explain::run(ctx, a),
        9 if is("WAITGRAPH") => waitgraph::run(ctx, a),
        8 if is("SETVALUE") => return setvalue::run(ctx, a),
        8 if is("GETVALUE") => getvalue::run(ctx, a),
        5 if is("WATCH") => watch::watch(ctx, a),
        7 if is("UNWATCH") => watch::unwatch(ctx, a),
        4 if is("QUIT") => {
            ctx.out.simple("OK");
            return Flow::Close;
        }
        _ => {
            if !compat::run(ctx, name, a) {
                unknown_command(ctx, name, a);
            }
        }
    }
    Flow::Continue
}

/// The ACL command `name` is, if it is one (the others are always allowed).
#[inline]
fn acl_command(name: &[u8]) -> Option<acl::Command> {
    let is = |n: &str| word_eq(name, n);
    Some(match name.len() {
        7 if is("ACQUIRE") => acl::Command::Acquire,
        7 if is("RELEASE") => acl::Command::Release,
        // Converting is acquiring a mode: the same permission.
        7 if is("CONVERT") => acl::Command::Acquire,
        5 if is("RENEW") => acl::Command::Renew,
        7 if is("INSPECT") => acl::Command::Inspect,
        // A holder's value is part of its hold; reading values is reading state.
        8 if is("SETVALUE") => acl::Command::Acquire,
        8 if is("GETVALUE") => acl::Command::Inspect,
        5 if is("WATCH") => acl::Command::Inspect,
        // They list keys across the table, as LOCKS does.
        5 if is("LOCKS") => acl::Command::Locks,
        7 if is("EXPLAIN") => acl::Command::Locks,
        9 if is("WAITGRAPH") => acl::Command::Locks,
        4 if is("INFO") => acl::Command::Info,
        7 if is("CLUSTER") => acl::Command::Cluster,
        5 if is("ADMIN") => acl::Command::Admin,
        _ => return None,
    })
}

/// Whether the connection's user may run `cmd` with `args`; replies `-NOPERM` when not.
/// For a user with every command and key (the default user without a users file) this
/// is one AND and one compare.
#[inline]
fn permitted(ctx: &mut Ctx, cmd: acl::Command, args: &[&[u8]]) -> bool {
    let user = &ctx.conn.user;
    if !user.may_run(cmd) {
        ctx.out
            .error(&format!("NOPERM {}", acl::noperm_command(cmd)));
        return false;
    }
    if cmd.takes_key() {
        if let Some(key) = args.first() {
            // A key over the maximum length gets the command's LIMIT instead.
            if key.len() <= ctx.shared.config.max_key_len && !user.may_access(key) {
                ctx.out.error(&format!("NOPERM {}", acl::noperm_key(key)));
                return false;
            }
        }
    }
    true
}

/// `-ERR unknown command`, worded as Redis words it.
fn unknown_command(ctx: &mut Ctx, name: &[u8], args: &[&[u8]]) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        printable(name)
    );
    for a in args.iter().take(8) {
        msg.push_str(&format!("'{}' ", printable(a)));
    }
    ctx.out.error(msg.trim_end());
}

/// A short, single-line rendering of client bytes for error messages.
pub(crate) fn printable(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&bytes[..bytes.len().min(128)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    s
}

/// `-ERR wrong number of arguments for '<cmd>' command`.
pub(crate) fn wrong_args(ctx: &mut Ctx, cmd: &str) {
    ctx.out.error(&format!(
        "ERR wrong number of arguments for '{cmd}' command"
    ));
}

/// Parses a non-negative decimal integer argument.
pub(crate) fn parse_u64(arg: &[u8]) -> Option<u64> {
    if arg.is_empty() || arg.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in arg {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// `-ERR value is not an integer or out of range`, naming the option.
pub(crate) fn not_an_integer(ctx: &mut Ctx, what: &str) {
    ctx.out.error(&format!(
        "ERR value is not an integer or out of range ({what})"
    ));
}

/// Checks a key against the configured maximum length; replies `-LIMIT` when over.
pub(crate) fn key_ok(ctx: &mut Ctx, key: &[u8]) -> bool {
    if key.len() > ctx.shared.config.max_key_len {
        ctx.out.error(&format!(
            "LIMIT key is {} bytes, more than the maximum of {}",
            key.len(),
            ctx.shared.config.max_key_len
        ));
        return false;
    }
    true
}
