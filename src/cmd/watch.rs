//! WATCH and UNWATCH: stream the changes of keys' holders as RESP3 push messages.
//!
//! # Format
//! `WATCH key [key ...]` -> `:<keys this connection watches now>`, then for each key a
//! push with its current state, then a push for every change of its holders:
//!
//! ```text
//! >5 watch <key> state <fencing> <holders: array of [session, mode, token, value|nil]>
//! >7 watch <key> granted <session> <mode> <token> <value|nil>
//! >7 watch <key> released <session> <mode> <token> nil
//! >7 watch <key> expired <session> <mode> <token> <cause: lease | session | forced>
//! >7 watch <key> value <session> <mode> <token> <value|nil>
//! ```
//!
//! `UNWATCH [key ...]` -> `:<keys still watched>` (no key: every watch ends).
//!
//! WATCH needs RESP3 (`HELLO 3`): a RESP2 connection gets `-NOPROTO`. Redis client
//! libraries match replies to requests in order and in RESP2 have no way to tell an
//! unsolicited message from a reply, except for SUBSCRIBE, which they recognise by name;
//! in RESP3 they route `>` pushes to a push handler whatever command caused them. So a
//! RESP2 watch would desynchronise an unmodified client, and a RESP3 one does not. A
//! connection that goes back to RESP2 (`HELLO 2`) loses its watches.
//!
//! Watches belong to the connection, need no session (they work on followers in cluster
//! mode, where they show the node's applied state) and end with the connection. At most
//! `--max-watches` keys per connection; a connection that falls `--watch-backlog`
//! messages behind is closed.

use super::{key_ok, wrong_args, Ctx};
use crate::protocol::{Proto, ReplyWriter};
use crate::server::watches::{HolderState, WatchEvent, WatchMsg, Watcher};

pub(super) fn watch(ctx: &mut Ctx, args: &[&[u8]]) {
    if args.is_empty() {
        return wrong_args(ctx, "watch");
    }
    if ctx.conn.proto != Proto::Resp3 {
        return ctx
            .out
            .error("NOPROTO WATCH sends RESP3 push messages: send HELLO 3 first");
    }
    for key in args {
        if !key_ok(ctx, key) {
            return;
        }
        if !ctx.conn.user.unrestricted() && !ctx.conn.user.may_access(key) {
            return ctx
                .out
                .error(&format!("NOPERM {}", crate::acl::noperm_key(key)));
        }
    }
    let cfg = &ctx.shared.config;
    let watcher = ctx
        .conn
        .watcher
        .get_or_insert_with(|| Watcher::new(cfg.watch_backlog))
        .clone();
    let mut new: Vec<&[u8]> = args
        .iter()
        .copied()
        .filter(|k| !watcher.watches(k))
        .collect();
    new.sort_unstable();
    new.dedup();
    if watcher.len() + new.len() > cfg.max_watches {
        return ctx.out.error(&format!(
            "LIMIT too many watched keys on this connection (the maximum is {})",
            cfg.max_watches
        ));
    }
    let table = ctx.shared.table();
    for key in args {
        ctx.shared.watches.watch(&table, &watcher, key, 0, ctx.now);
    }
    ctx.ticket = ctx.ticket.max(ctx.shared.store.read_ticket());
    ctx.out.integer(watcher.len() as i64);
}

pub(super) fn unwatch(ctx: &mut Ctx, args: &[&[u8]]) {
    let Some(watcher) = ctx.conn.watcher.clone() else {
        return ctx.out.integer(0);
    };
    if args.is_empty() {
        ctx.shared.watches.unwatch_all(&watcher);
    } else {
        for key in args {
            ctx.shared.watches.unwatch(&watcher, key);
        }
    }
    ctx.out.integer(watcher.len() as i64);
}

/// Appends one watch message as a RESP3 push.
pub(crate) fn encode(out: &mut ReplyWriter<'_>, msg: &WatchMsg) {
    let head = |out: &mut ReplyWriter<'_>, n: usize, event: &str| {
        out.push(n);
        out.bulk(b"watch");
        out.bulk(msg.key.as_bytes());
        out.bulk(event.as_bytes());
    };
    let holder = |out: &mut ReplyWriter<'_>, h: &HolderState| {
        out.integer(h.session as i64);
        out.bulk(h.mode.name().as_bytes());
        out.integer(h.token as i64);
    };
    let value = |out: &mut ReplyWriter<'_>, v: &Option<Box<[u8]>>| match v {
        Some(v) => out.bulk(v),
        None => out.null(),
    };
    match &msg.event {
        WatchEvent::State { fencing, holders } => {
            head(out, 5, "state");
            out.integer(*fencing as i64);
            out.array(holders.len());
            for h in holders {
                out.array(4);
                holder(out, h);
                value(out, &h.value);
            }
        }
        WatchEvent::Granted(h) => {
            head(out, 7, "granted");
            holder(out, h);
            value(out, &h.value);
        }
        WatchEvent::Released(h) => {
            head(out, 7, "released");
            holder(out, h);
            out.null();
        }
        WatchEvent::Expired(h, cause) => {
            head(out, 7, "expired");
            holder(out, h);
            out.bulk(cause.name().as_bytes());
        }
        WatchEvent::Value(h) => {
            head(out, 7, "value");
            holder(out, h);
            value(out, &h.value);
        }
    }
}
