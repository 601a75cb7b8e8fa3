//! Named users and what each may do: the `--users-file` (docs/acl.md), in a syntax close to
//! Redis's ACL files.
//!
//! ```text
//! # one user per line; lines starting with '#' are comments
//! user alice on >s3cret ~orders/* ~jobs/* +@lock +inspect
//! user ops on #<sha256 hex of the password> allkeys +@all
//! user viewer on >v ~* +@read
//! user old off >x
//! ```
//!
//! The file is parsed once at startup into an [`Acl`]; each [`User`] carries its
//! permissions precomputed: a bitset of the commands it may run and its key patterns (or
//! "all keys"). A connection keeps an `Arc<User>`, so the check per command is one AND and,
//! for a user with every key, one compare: no allocation, no hashing, no lookup. Passwords
//! are kept only as SHA-256 digests and compared in constant time.
//!
//! Without a `user default` line, `default` keeps the behaviour of a server without a
//! users file: it has `--requirepass` as its password (or takes any password, `nopass`,
//! when none is set), every key and every command.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hashbrown::HashMap;
use sha2::{Digest, Sha256};

use crate::glob::glob_match;

/// A SHA-256 digest.
pub type PasswordHash = [u8; 32];

/// The SHA-256 digest of a password.
pub fn hash_password(password: &[u8]) -> PasswordHash {
    Sha256::digest(password).into()
}

/// A command an ACL can allow or deny. PING, AUTH, HELLO, QUIT and CLIENT (and the
/// compatibility commands stock Redis tools send: COMMAND, CONFIG GET, SELECT, ECHO) are
/// not among them: every authenticated connection may run those.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// ACQUIRE (`@lock`).
    Acquire = 0,
    /// RELEASE (`@lock`).
    Release = 1,
    /// RENEW (`@lock`).
    Renew = 2,
    /// The binary protocol's CANCEL (`@lock`).
    Cancel = 3,
    /// INSPECT (`@read`).
    Inspect = 4,
    /// LOCKS (`@read`).
    Locks = 5,
    /// INFO (`@read`).
    Info = 6,
    /// CLUSTER (`@admin`).
    Cluster = 7,
    /// ADMIN: force-release, end a session, show and change limits (`@admin`).
    Admin = 8,
}

impl Command {
    /// Every command, in bit order.
    pub const ALL: [Command; 9] = [
        Command::Acquire,
        Command::Release,
        Command::Renew,
        Command::Cancel,
        Command::Inspect,
        Command::Locks,
        Command::Info,
        Command::Cluster,
        Command::Admin,
    ];

    /// The command's bit in a permission set.
    #[inline]
    pub const fn bit(self) -> u64 {
        1 << self as u8
    }

    /// The lower-case name, as ACL rules and NOPERM messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Acquire => "acquire",
            Command::Release => "release",
            Command::Renew => "renew",
            Command::Cancel => "cancel",
            Command::Inspect => "inspect",
            Command::Locks => "locks",
            Command::Info => "info",
            Command::Cluster => "cluster",
            Command::Admin => "admin",
        }
    }

    /// Whether the command's first argument is a key (checked against the user's
    /// patterns).
    #[inline]
    pub fn takes_key(self) -> bool {
        matches!(
            self,
            Command::Acquire | Command::Release | Command::Renew | Command::Inspect
        )
    }

    fn from_name(name: &str) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// `@lock`: taking and giving up locks.
const LOCK: u64 =
    Command::Acquire.bit() | Command::Release.bit() | Command::Renew.bit() | Command::Cancel.bit();
/// `@read`: reading the table and the server's state.
const READ: u64 = Command::Inspect.bit() | Command::Locks.bit() | Command::Info.bit();
/// `@admin`: cluster membership and the ADMIN command.
const ADMIN: u64 = Command::Cluster.bit() | Command::Admin.bit();
/// `@all`: every command, also those added later (as in Redis).
const ALL: u64 = u64::MAX;
/// The bits of every command there is.
const EVERY: u64 = {
    let mut bits = 0;
    let mut i = 0;
    while i < Command::ALL.len() {
        bits |= Command::ALL[i].bit();
        i += 1;
    }
    bits
};

/// The categories, by name (without the `@`).
const CATEGORIES: [(&str, u64); 4] = [
    ("all", ALL),
    ("lock", LOCK),
    ("read", READ),
    ("admin", ADMIN),
];

/// Commands every authenticated connection may run, which rules cannot deny.
const ALWAYS: [&str; 9] = [
    "ping", "auth", "hello", "quit", "client", "command", "config", "select", "echo",
];

/// Which keys a user may name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Keys {
    /// Every key (`allkeys`, or a `~*` pattern).
    All,
    /// Keys matching one of these globs (none: no key).
    Patterns(Vec<Vec<u8>>),
}

/// One user, with its permissions precomputed.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    name: String,
    enabled: bool,
    nopass: bool,
    passwords: Vec<PasswordHash>,
    commands: u64,
    keys: Keys,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password digests.
        f.debug_struct("User")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("nopass", &self.nopass)
            .field("passwords", &self.passwords.len())
            .field("commands", &format_args!("{:#x}", self.commands))
            .field("keys", &self.keys)
            .finish()
    }
}

impl User {
    /// A user as a new `user NAME` line starts it (Redis's defaults): off, no password,
    /// no key, no command.
    fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: 0,
            keys: Keys::Patterns(Vec::new()),
        }
    }

    /// The `default` user of a server without a `user default` line: every key and
    /// command, with `requirepass` as its password or, without one, any password.
    fn implicit_default(requirepass: Option<&str>) -> User {
        User {
            name: DEFAULT.to_string(),
            enabled: true,
            nopass: requirepass.is_none(),
            passwords: requirepass
                .map(|p| vec![hash_password(p.as_bytes())])
                .unwrap_or_default(),
            commands: ALL,
            keys: Keys::All,
        }
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is the `default` user.
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT
    }

    /// Whether a connection is this user without authenticating: the user is on and
    /// `nopass` (as Redis's default user is out of the box).
    pub fn needs_no_auth(&self) -> bool {
        self.enabled && self.nopass
    }

    /// Whether the user may run `cmd`.
    #[inline]
    pub fn may_run(&self, cmd: Command) -> bool {
        self.commands & cmd.bit() != 0
    }

    /// Whether the user may name `key`.
    #[inline]
    pub fn may_access(&self, key: &[u8]) -> bool {
        match &self.keys {
            Keys::All => true,
            Keys::Patterns(p) => p.iter().any(|p| glob_match(p, key)),
        }
    }

    /// Whether the user may run every command on every key (the default user without a
    /// users file): dispatch then skips the ACL check altogether.
    #[inline]
    pub fn unrestricted(&self) -> bool {
        self.commands & EVERY == EVERY && self.keys == Keys::All
    }

    /// Whether the user may name every key (so listing needs no filter).
    #[inline]
    pub fn all_keys(&self) -> bool {
        self.keys == Keys::All
    }

    /// Whether `hash` (of the password given) opens this user: it is on, and `nopass` or
    /// one of its digests equals `hash`. Every digest is compared, each in constant time,
    /// so the time taken says nothing about which one (or which byte) differed.
    fn opens_with(&self, hash: &PasswordHash) -> bool {
        let matched = self
            .passwords
            .iter()
            .fold(false, |acc, p| acc | constant_time_eq(p, hash));
        self.enabled && (self.nopass || matched)
    }

    /// Applies one rule of a `user` line.
    fn apply(&mut self, rule: &str) -> Result<(), String> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.keys = Keys::All,
            "resetkeys" => self.keys = Keys::Patterns(Vec::new()),
            "allcommands" => self.commands = ALL,
            "nocommands" => self.commands = 0,
            _ => return self.apply_prefixed(rule),
        }
        Ok(())
    }

    fn apply_prefixed(&mut self, rule: &str) -> Result<(), String> {
        let (sign, rest) = rule.split_at(rule.chars().next().map_or(0, char::len_utf8));
        match sign {
            ">" => {
                if rest.is_empty() {
                    return Err("'>' needs a password after it".into());
                }
                self.add_password(hash_password(rest.as_bytes()));
            }
            "#" => {
                let hash = parse_hex_hash(rest).ok_or_else(|| {
                    format!("'{rule}' is not '#' followed by 64 hex digits (a SHA-256 digest)")
                })?;
                self.add_password(hash);
            }
            "~" => {
                if rest.is_empty() {
                    return Err("'~' needs a key pattern after it".into());
                }
                if rest.bytes().all(|b| b == b'*') {
                    self.keys = Keys::All;
                } else if let Keys::Patterns(p) = &mut self.keys {
                    p.push(rest.as_bytes().to_vec());
                }
            }
            "+" | "-" => {
                let allow = sign == "+";
                let bits = if let Some(cat) = rest.strip_prefix('@') {
                    CATEGORIES
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(cat))
                        .map(|(_, bits)| *bits)
                        .ok_or_else(|| {
                            format!(
                                "unknown category '@{cat}' in '{rule}' (known: @all, @lock, @read, @admin)"
                            )
                        })?
                } else if let Some(c) = Command::from_name(rest) {
                    c.bit()
                } else if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(rest)) {
                    if allow {
                        // Already allowed: accepted, as a copied Redis rule may say it.
                        return Ok(());
                    }
                    return Err(format!(
                        "'{}' is always allowed once authenticated; it cannot be denied",
                        rest.to_ascii_lowercase()
                    ));
                } else {
                    return Err(format!(
                        "unknown command '{rest}' in '{rule}' (commands: {})",
                        Command::ALL.map(Command::name).join(", ")
                    ));
                };
                if allow {
                    self.commands |= bits;
                } else {
                    self.commands &= !bits;
                }
            }
            _ => return Err(format!("unknown rule '{rule}'")),
        }
        Ok(())
    }

    fn add_password(&mut self, hash: PasswordHash) {
        self.nopass = false;
        if !self.passwords.contains(&hash) {
            self.passwords.push(hash);
        }
    }
}

/// The name of the user a connection is before it authenticates.
pub const DEFAULT: &str = "default";

/// The users of a server.
#[derive(Clone, Debug)]
pub struct Acl {
    users: HashMap<Vec<u8>, Arc<User>>,
    default: Arc<User>,
}

/// A users file that cannot be used: where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct AclError {
    /// The file as it was named.
    pub file: String,
    /// The line (from 1; 0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Acl {
    /// The users of a server without a users file: only `default` (see
    /// [`Acl::parse`] for what it may do).
    pub fn without_file(requirepass: Option<&str>) -> Acl {
        let default = Arc::new(User::implicit_default(requirepass));
        let mut users = HashMap::new();
        users.insert(DEFAULT.as_bytes().to_vec(), default.clone());
        Acl { users, default }
    }

    /// The users the configuration names: `--users-file` read and parsed, or
    /// [`Acl::without_file`].
    pub fn load(users_file: Option<&Path>, requirepass: Option<&str>) -> Result<Acl, AclError> {
        let Some(path) = users_file else {
            return Ok(Acl::without_file(requirepass));
        };
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| AclError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the users file: {e}"),
        })?;
        Acl::parse(&text, &file, requirepass)
    }

    /// Parses a users file's text (`file` names it in errors). Without a `user default`
    /// line, `default` has every key and command and `requirepass` as its password (any
    /// password without one); a `user default` line together with `requirepass` is an
    /// error (which one would hold?).
    pub fn parse(text: &str, file: &str, requirepass: Option<&str>) -> Result<Acl, AclError> {
        let mut users: HashMap<Vec<u8>, Arc<User>> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let fail = |message: String| AclError {
                file: file.to_string(),
                line,
                message,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut words = trimmed.split_whitespace();
            if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("user")) {
                return Err(fail(
                    "expected 'user <name> <rules...>' (or a '#' comment)".into(),
                ));
            }
            let Some(name) = words.next() else {
                return Err(fail("'user' needs a name".into()));
            };
            if !name.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
                return Err(fail(format!(
                    "user name '{name}' must be printable ASCII without spaces"
                )));
            }
            if let Some(first) = first_line.get(name) {
                return Err(fail(format!(
                    "user '{name}' is already defined on line {first}"
                )));
            }
            if name == DEFAULT && requirepass.is_some() {
                return Err(fail(
                    "a 'user default' line and --requirepass both set the default user's password: keep one (give default its password here with '>password')".into(),
                ));
            }
            let mut user = User::new(name);
            for rule in words {
                user.apply(rule).map_err(fail)?;
            }
            first_line.insert(name.to_string(), line);
            users.insert(name.as_bytes().to_vec(), Arc::new(user));
        }
        let default = match users.get(DEFAULT.as_bytes()) {
            Some(d) => d.clone(),
            None => {
                let d = Arc::new(User::implicit_default(requirepass));
                users.insert(DEFAULT.as_bytes().to_vec(), d.clone());
                d
            }
        };
        Ok(Acl { users, default })
    }

    /// The user a connection is before it authenticates.
    pub fn default_user(&self) -> &Arc<User> {
        &self.default
    }

    /// Number of users, `default` included.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users (never: `default` always exists).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user a verified client certificate names (`--tls-cert-users`): it exists and
    /// is on. No password: the certificate, signed by `--tls-client-ca`, is the credential.
    pub fn by_certificate(&self, name: &str) -> Option<Arc<User>> {
        self.users
            .get(name.as_bytes())
            .filter(|u| u.enabled)
            .cloned()
    }

    /// The user that `name` and `password` open, if any: it exists, is on, and the
    /// password is one of its own (or it is `nopass`). The password is hashed first, so
    /// the work done does not depend on whether the user exists.
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let hash = hash_password(password);
        let user = self.users.get(name)?;
        user.opens_with(&hash).then(|| user.clone())
    }
}

/// Compares without an early exit, so the time taken says nothing about where two
/// secrets first differ (the length may show; it is not the secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_hex_hash(s: &str) -> Option<PasswordHash> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// The NOPERM message for a command the user may not run (Redis's words), without the
/// code.
pub fn noperm_command(cmd: Command) -> String {
    format!(
        "this user has no permissions to run the '{}' command",
        cmd.name()
    )
}

/// The NOPERM message for a key outside the user's patterns, without the code.
pub fn noperm_key(key: &[u8]) -> String {
    format!(
        "this user has no permissions to access the '{}' key",
        crate::cmd::printable(key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH_OF_PW: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

    fn parse(text: &str) -> Result<Acl, AclError> {
        Acl::parse(text, "users.acl", None)
    }

    fn err(text: &str) -> AclError {
        parse(text).expect_err("should not parse")
    }

    #[test]
    fn the_documented_example_parses() {
        let acl = parse(&format!(
            "# users\n\
             user alice on >s3cret ~orders/* ~jobs/* +@lock +inspect\n\
             \n\
             user ops on #{HASH_OF_PW} allkeys +@all\n\
             user viewer on >v ~* +@read\n\
             user old off >x\n"
        ))
        .unwrap();
        assert_eq!(acl.len(), 5, "four users and the implicit default");
        let alice = acl.authenticate(b"alice", b"s3cret").expect("alice opens");
        assert!(alice.may_run(Command::Acquire));
        assert!(alice.may_run(Command::Cancel));
        assert!(alice.may_run(Command::Inspect));
        assert!(!alice.may_run(Command::Locks));
        assert!(!alice.may_run(Command::Cluster));
        assert!(alice.may_access(b"orders/42"));
        assert!(alice.may_access(b"jobs/x"));
        assert!(!alice.may_access(b"payroll/1"));
        assert!(!alice.all_keys());
        assert!(acl.authenticate(b"alice", b"wrong").is_none());

        let ops = acl.authenticate(b"ops", b"pw").expect("hashed password");
        assert!(ops.may_run(Command::Cluster) && ops.all_keys());

        let viewer = acl.authenticate(b"viewer", b"v").unwrap();
        assert!(viewer.all_keys(), "~* is every key");
        assert!(viewer.may_run(Command::Info) && !viewer.may_run(Command::Acquire));

        assert!(acl.authenticate(b"old", b"x").is_none(), "off");
        assert!(acl.authenticate(b"nobody", b"x").is_none());

        let d = acl.default_user();
        assert!(d.needs_no_auth() && d.all_keys() && d.may_run(Command::Cluster));
    }

    #[test]
    fn hash_password_is_sha256() {
        assert_eq!(Some(hash_password(b"pw")), parse_hex_hash(HASH_OF_PW));
        assert_eq!(
            parse_hex_hash(&HASH_OF_PW.to_ascii_uppercase()),
            parse_hex_hash(HASH_OF_PW)
        );
    }

    #[test]
    fn default_without_a_line_follows_requirepass() {
        let acl = Acl::parse("user a on nopass +@all allkeys", "f", Some("pw")).unwrap();
        let d = acl.default_user();
        assert!(!d.needs_no_auth());
        assert!(acl.authenticate(b"default", b"pw").is_some());
        assert!(acl.authenticate(b"default", b"other").is_none());
        assert!(acl.authenticate(b"a", b"anything").is_some(), "nopass");

        let open = Acl::without_file(None);
        assert!(open.default_user().needs_no_auth());
        assert!(open.authenticate(b"default", b"whatever").is_some());
        assert!(open.authenticate(b"alice", b"whatever").is_none());
    }

    #[test]
    fn a_default_line_replaces_the_implicit_default() {
        let acl = parse("user default on >pw ~public/* +@read").unwrap();
        let d = acl.default_user();
        assert!(!d.needs_no_auth());
        assert!(!d.may_run(Command::Acquire));
        assert!(acl.authenticate(b"default", b"pw").is_some());
        let acl = parse("user default off").unwrap();
        assert!(!acl.default_user().needs_no_auth());
    }

    #[test]
    fn rules_apply_left_to_right() {
        let acl = parse("user u on nopass allkeys +@all -cluster -@read +info").unwrap();
        let u = acl.authenticate(b"u", b"").unwrap();
        assert!(u.may_run(Command::Acquire) && u.may_run(Command::Info));
        assert!(!u.may_run(Command::Cluster) && !u.may_run(Command::Locks));

        // A password after nopass turns nopass off; nopass after a password drops it.
        let acl = parse("user a on nopass >pw\nuser b on >pw nopass").unwrap();
        assert!(acl.authenticate(b"a", b"other").is_none());
        assert!(acl.authenticate(b"a", b"pw").is_some());
        assert!(acl.authenticate(b"b", b"other").is_some());

        // Several passwords; resetpass forgets them; resetkeys too.
        let acl = parse("user a on >one >two ~k allkeys resetkeys ~x*").unwrap();
        let a = acl.authenticate(b"a", b"two").unwrap();
        assert!(acl.authenticate(b"a", b"one").is_some());
        assert!(a.may_access(b"xy") && !a.may_access(b"k"));
        assert!(parse("user a on >one resetpass")
            .unwrap()
            .authenticate(b"a", b"one")
            .is_none());

        // Keywords and commands are case-insensitive; always-allowed ones may be granted.
        let acl = parse("USER u ON >p +ACQUIRE +@LOCK +ping").unwrap();
        assert!(acl
            .authenticate(b"u", b"p")
            .unwrap()
            .may_run(Command::Renew));
    }

    #[test]
    fn a_new_user_has_nothing() {
        let acl = parse("user u on >p").unwrap();
        let u = acl.authenticate(b"u", b"p").unwrap();
        assert!(Command::ALL.iter().all(|&c| !u.may_run(c)));
        assert!(!u.may_access(b"anything"));
        assert!(
            parse("user u >p")
                .unwrap()
                .authenticate(b"u", b"p")
                .is_none(),
            "off"
        );
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = err("# fine\nuser a on >p\nuser b on bogus\n");
        assert_eq!(e.line, 3);
        assert_eq!(e.message, "unknown rule 'bogus'");
        assert_eq!(e.to_string(), "users.acl:3: unknown rule 'bogus'");

        let cases: &[(&str, usize, &str)] = &[
            ("alice on", 1, "expected 'user <name> <rules...>'"),
            ("\n\nuser", 3, "'user' needs a name"),
            ("user a\nuser a on", 2, "already defined on line 1"),
            ("user a on #abc", 1, "64 hex digits"),
            (
                &format!("user a on #{}", "zz".repeat(32)),
                1,
                "64 hex digits",
            ),
            (
                &format!("user a on #{}", "+f".repeat(32)),
                1,
                "64 hex digits",
            ),
            ("user a on >", 1, "needs a password"),
            ("user a on ~", 1, "needs a key pattern"),
            ("user a on +@write", 1, "unknown category '@write'"),
            ("user a on +set", 1, "unknown command 'set'"),
            ("user a on -ping", 1, "'ping' is always allowed"),
            ("user a on -@", 1, "unknown category '@'"),
            ("user caf\u{e9} on", 1, "printable ASCII"),
            ("user a on %R~x", 1, "unknown rule '%R~x'"),
        ];
        for (text, line, what) in cases {
            let e = err(text);
            assert_eq!(e.line, *line, "{text}: {e}");
            assert!(e.message.contains(what), "{text}: {e}");
        }
    }

    #[test]
    fn default_line_and_requirepass_conflict() {
        let e = Acl::parse("\nuser default on >x", "f", Some("pw")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("--requirepass"), "{e}");
    }

    #[test]
    fn load_reports_an_unreadable_file() {
        let e = Acl::load(Some(Path::new("/nonexistent/users.acl")), None).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e
            .to_string()
            .starts_with("/nonexistent/users.acl:0: cannot read"));
        assert!(Acl::load(None, None)
            .unwrap()
            .default_user()
            .needs_no_auth());
    }

    #[test]
    fn debug_output_hides_password_digests() {
        let acl = parse("user a on >secret").unwrap();
        let shown = format!("{acl:?}");
        let hex: String = hash_password(b"secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&hex));
        assert!(!shown.contains(&format!("{:?}", hash_password(b"secret"))));
    }
}
