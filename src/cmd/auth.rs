//! AUTH: prove the configured password.
//!
//! # Format
//! `AUTH [username] password` -> `+OK` | `-WRONGPASS ...`
//!
//! The only user is `default` until ACLs exist. Passwords are compared in constant time.

use super::{wrong_args, Ctx};

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let (user, pass) = match args {
        [pass] => {
            if ctx.shared.config.requirepass.is_none() {
                return ctx.out.error(NO_PASSWORD);
            }
            (&b"default"[..], *pass)
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

/// Checks credentials and marks the connection authenticated; shared with HELLO's AUTH.
/// Without a configured password the `default` user takes any password, as in Redis (whose
/// default user is `nopass`), so clients configured with credentials still connect.
pub(super) fn check(ctx: &mut Ctx, user: &[u8], pass: &[u8]) -> Result<(), &'static str> {
    let Some(expected) = ctx.shared.config.requirepass.as_deref() else {
        if user == b"default" {
            ctx.conn.authed = true;
            return Ok(());
        }
        return Err("WRONGPASS invalid username-password pair or user is disabled.");
    };
    let ok = user == b"default" && constant_time_eq(expected.as_bytes(), pass);
    if ok {
        ctx.conn.authed = true;
        Ok(())
    } else {
        Err("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

/// Compares without an early exit, so the time taken says nothing about where two
/// secrets first differ (the length may show; it is not the secret).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
