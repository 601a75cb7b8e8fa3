//! HELLO: choose the protocol version, optionally authenticate and name the connection,
//! and learn about the server.
//!
//! # Format
//! `HELLO [protover [AUTH username password] [SETNAME name]]` -> a map (RESP3) or flat
//! array (RESP2) with server, version, proto, id, mode, role and modules.
//! A protover other than 2 or 3 -> `-NOPROTO`. HELLO works before AUTH (the contract
//! exempts it); it authenticates only with its AUTH option.

use super::{auth, client, parse_u64, Ctx};
use crate::protocol::Proto;

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) {
    let mut proto = ctx.conn.proto;
    let mut rest = args;
    if let Some((ver, tail)) = rest.split_first() {
        proto = match parse_u64(ver) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return ctx.out.error("NOPROTO unsupported protocol version"),
            None => {
                return ctx
                    .out
                    .error("ERR Protocol version is not an integer or out of range")
            }
        };
        rest = tail;
    }
    let mut auth: Option<(&[u8], &[u8])> = None;
    let mut name: Option<&[u8]> = None;
    while let Some((opt, tail)) = rest.split_first() {
        if opt.eq_ignore_ascii_case(b"AUTH") && tail.len() >= 2 {
            auth = Some((tail[0], tail[1]));
            rest = &tail[2..];
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && !tail.is_empty() {
            name = Some(tail[0]);
            rest = &tail[1..];
        } else {
            return ctx.out.error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                super::printable(opt)
            ));
        }
    }
    if let Some((user, pass)) = auth {
        if let Err(msg) = auth::check(ctx, user, pass) {
            return ctx.out.error(msg);
        }
    }
    if let Some(name) = name {
        if !client::valid_name(name) {
            return ctx
                .out
                .error("ERR Client names cannot contain spaces, newlines or special characters.");
        }
        ctx.conn.name = Some(name.to_vec());
    }
    ctx.conn.proto = proto;
    ctx.out.proto = proto;
    let out = &mut ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"turnstile");
    out.bulk(b"version");
    out.bulk(env!("CARGO_PKG_VERSION").as_bytes());
    out.bulk(b"proto");
    out.integer(if proto == Proto::Resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.integer(ctx.conn.session.0 as i64);
    let cluster = ctx.shared.cluster.as_deref();
    out.bulk(b"mode");
    out.bulk(if cluster.is_some() {
        b"cluster"
    } else {
        b"standalone"
    });
    out.bulk(b"role");
    out.bulk(crate::server::cluster::role_name(cluster).as_bytes());
    out.bulk(b"modules");
    out.array(0);
}
