//! CLIENT: the connection-level subcommands Redis clients send when they connect.
//!
//! # Format
//! `CLIENT SETNAME name` -> `+OK`; `CLIENT GETNAME` -> bulk or nil; `CLIENT ID` -> integer
//! (the session id); `CLIENT SETINFO LIB-NAME|LIB-VER value` -> `+OK` (stored);
//! `CLIENT INFO` -> a bulk string describing the connection.

use super::{printable, wrong_args, Ctx};

/// Redis's rule: names are printable ASCII without spaces.
pub(crate) fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let Some((sub, rest)) = args.split_first() else {
        return wrong_args(ctx, "client");
    };
    let is = |n: &str| sub.eq_ignore_ascii_case(n.as_bytes());
    if is("SETNAME") {
        let [name] = rest else {
            return wrong_args(ctx, "client|setname");
        };
        if !valid_name(name) {
            return ctx
                .out
                .error("ERR Client names cannot contain spaces, newlines or special characters.");
        }
        ctx.conn.name = if name.is_empty() {
            None
        } else {
            Some(name.to_vec())
        };
        ctx.out.simple("OK");
    } else if is("GETNAME") {
        if !rest.is_empty() {
            return wrong_args(ctx, "client|getname");
        }
        match &ctx.conn.name {
            Some(name) => ctx.out.bulk(name),
            None => ctx.out.null(),
        }
    } else if is("ID") {
        if !rest.is_empty() {
            return wrong_args(ctx, "client|id");
        }
        ctx.out.integer(ctx.conn.session.0 as i64);
    } else if is("SETINFO") {
        let [attr, value] = rest else {
            return wrong_args(ctx, "client|setinfo");
        };
        if !value.iter().all(|&c| (b'!'..=b'~').contains(&c)) {
            return ctx.out.error(&format!(
                "ERR {} cannot contain spaces, newlines or special characters.",
                printable(attr)
            ));
        }
        if attr.eq_ignore_ascii_case(b"LIB-NAME") {
            ctx.conn.lib_name = Some(value.to_vec());
        } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
            ctx.conn.lib_ver = Some(value.to_vec());
        } else {
            return ctx
                .out
                .error(&format!("ERR Unrecognized option '{}'", printable(attr)));
        }
        ctx.out.simple("OK");
    } else if is("INFO") {
        let info = format!(
            "id={} addr={} name={} lib-name={} lib-ver={} resp={}\n",
            ctx.conn.session,
            ctx.conn.peer,
            ctx.conn.name.as_deref().map(printable).unwrap_or_default(),
            ctx.conn
                .lib_name
                .as_deref()
                .map(printable)
                .unwrap_or_default(),
            ctx.conn
                .lib_ver
                .as_deref()
                .map(printable)
                .unwrap_or_default(),
            if ctx.conn.proto == crate::protocol::Proto::Resp3 {
                3
            } else {
                2
            },
        );
        ctx.out.bulk(info.as_bytes());
    } else {
        ctx.out.error(&format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            printable(sub)
        ));
    }
}
