//! `turnstile cli --stat`: a live view of a server, one line per interval, like
//! `redis-cli --stat`: keys, holds, waiters, connections, and per-second rates of
//! commands, grants, expiries and deadlocks, read from INFO.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::client::{os_message, Connection};
use crate::nodes::Node;
use crate::resp::{Frame, Limits};

/// What to watch and how often.
pub(crate) struct StatOptions {
    /// The servers to try, in order: the first that answers is watched (INFO is served
    /// by any node of a cluster, from its own state).
    pub nodes: Vec<Node>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub interval: Duration,
    /// Lines to print before exiting (None: until interrupted).
    pub count: Option<u64>,
    /// `--tls`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

const HEADER: &str =
    "------- locks -------- ------------- per second ------------- -- clients --\n\
keys       holds    waiters  commands   grants   expiries deadlocks connections";

/// Runs the view; returns the exit code.
pub(crate) fn run(opts: &StatOptions, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut failures = Vec::new();
    let mut conn = None;
    for node in &opts.nodes {
        match Connection::connect(&node.host, node.port, Limits::default(), opts.tls.as_ref()) {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(e) => failures.push(format!("{node}: {}", os_message(&e))),
        }
    }
    let Some(mut conn) = conn else {
        anyhow::bail!("Could not connect to {}", failures.join("; "));
    };
    if let Some(pass) = &opts.pass {
        conn.auth(opts.user.as_deref(), pass)?;
    }
    let mut last: Option<(Instant, HashMap<String, u64>)> = None;
    let mut lines = 0u64;
    loop {
        conn.send(&["INFO"])?;
        let text = match conn.read_frame()? {
            Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            Frame::Error(e) => anyhow::bail!("INFO failed: {e}"),
            other => anyhow::bail!("unexpected INFO reply: {other:?}"),
        };
        let now = Instant::now();
        let fields = parse_info(&text);
        if lines % 20 == 0 {
            writeln!(out, "{HEADER}")?;
        }
        let get = |k: &str| fields.get(k).copied().unwrap_or(0);
        let rate = |k: &str| match &last {
            Some((t, prev)) => {
                let secs = now.duration_since(*t).as_secs_f64().max(1e-3);
                let delta = get(k).saturating_sub(prev.get(k).copied().unwrap_or(0));
                format!("{:.0}", delta as f64 / secs)
            }
            None => "-".to_string(),
        };
        writeln!(
            out,
            "{:<10} {:<8} {:<8} {:<10} {:<8} {:<8} {:<9} {}",
            get("keys"),
            get("holds"),
            get("waiters"),
            rate("total_commands_processed"),
            rate("grants"),
            rate("expiries"),
            rate("deadlocks"),
            get("connected_clients"),
        )?;
        out.flush()?;
        lines += 1;
        if opts.count.is_some_and(|c| lines >= c) {
            return Ok(0);
        }
        last = Some((now, fields));
        std::thread::sleep(opts.interval);
    }
}

/// `field:value` lines with integer values.
fn parse_info(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_parse() {
        let f = parse_info("# Locks\r\nkeys:3\r\nholds:4\r\nmode:standalone\r\n");
        assert_eq!(f.get("keys"), Some(&3));
        assert_eq!(f.get("holds"), Some(&4));
        assert!(!f.contains_key("mode"));
    }
}
