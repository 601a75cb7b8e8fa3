//! Commands outside the contract that stock Redis tools send, answered so that they work
//! unmodified: `COMMAND` (redis-cli asks for docs at start), `CONFIG GET` (redis-benchmark
//! reads `save` and `appendonly`), `SELECT 0` and `ECHO`.

use super::Ctx;

/// Answers a compatibility command; false if `name` is not one.
pub(super) fn run(ctx: &mut Ctx, name: &[u8], args: &[&[u8]]) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("COMMAND") {
        // No command table is published; clients fall back to their own.
        ctx.out.array(0);
    } else if is("CONFIG") && args.len() == 2 && args[0].eq_ignore_ascii_case(b"GET") {
        let param = args[1];
        let value: Option<&[u8]> = if param.eq_ignore_ascii_case(b"save") {
            Some(b"")
        } else if param.eq_ignore_ascii_case(b"appendonly") {
            Some(b"no")
        } else {
            None
        };
        match value {
            Some(v) => {
                ctx.out.map(1);
                ctx.out.bulk(param);
                ctx.out.bulk(v);
            }
            None => ctx.out.map(0),
        }
    } else if is("SELECT") && args.len() == 1 {
        if args[0] == b"0" {
            ctx.out.simple("OK");
        } else {
            ctx.out.error("ERR DB index is out of range");
        }
    } else if is("ECHO") && args.len() == 1 {
        ctx.out.bulk(args[0]);
    } else {
        return false;
    }
    true
}
