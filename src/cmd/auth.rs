//! AUTH: become a user by proving its password.
//!
//! # Format
//! `AUTH [username] password` -> `+OK` | `-WRONGPASS ...`
//!
//! Without a username the user is `default`. The users are `default` and those of
//! `--users-file` (docs/acl.md); passwords are compared as SHA-256 digests, in constant
//! time. A failed AUTH leaves the connection as it was (still the user it was, or still
//! unauthenticated), as in Redis.

use super::{wrong_args, Ctx};

/// Kept here for the cluster transport, which compares its password with it.
pub(crate) use crate::acl::constant_time_eq;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let (user, pass) = match args {
        [pass] => {
            if ctx.shared.acl.default_user().needs_no_auth() {
                return ctx.out.error(NO_PASSWORD);
            }
            (crate::acl::DEFAULT.as_bytes(), *pass)
        }
        [user, pass] => (*user, *pass),
        _ => return wrong_args(ctx, "auth"),
    };
    match check(ctx, user, pass) {
        Ok(()) => ctx.out.simple("OK"),
        Err(msg) => ctx.out.error(msg),
    }
}

const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// The reply to credentials that open no user (Redis's words).
pub(crate) const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks credentials and, when they open a user, makes the connection that user;
/// shared with HELLO's AUTH. A `nopass` user (the `default` user of a server without a
/// password, as in Redis) takes any password, so clients configured with credentials
/// still connect.
pub(super) fn check(ctx: &mut Ctx, user: &[u8], pass: &[u8]) -> Result<(), &'static str> {
    match ctx.shared.acl.authenticate(user, pass) {
        Some(u) => {
            ctx.conn.user = u;
            ctx.conn.authed = true;
            Ok(())
        }
        None => Err(WRONGPASS),
    }
}
