//! `turnstile cli --waitgraph-dot FILE`: the server's wait-for graph as a Graphviz DOT
//! document (`WAITGRAPH DOT`), written to a file (or stdout for `-`), to be drawn with
//! `dot -Tsvg FILE > waits.svg`.

use std::io::Write;
use std::path::PathBuf;

use crate::client::{os_message, Connection};
use crate::nodes::Node;
use crate::resp::{Frame, Limits};

/// The most edges asked for: the server's own maximum (WAITGRAPH COUNT is capped there).
pub(crate) const MAX_EDGES: u32 = 100_000;

/// Where to read the graph and where to write it.
pub(crate) struct DotOptions {
    /// The servers to try, in order; a follower's `-NOTLEADER host:port` is followed once.
    pub nodes: Vec<Node>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The file, or `-` for stdout.
    pub file: PathBuf,
}

/// Fetches the graph and writes it; returns the exit code (0, or an error).
pub(crate) fn run(opts: &DotOptions, stdout: &mut dyn Write) -> anyhow::Result<i32> {
    let mut failures = Vec::new();
    let mut todo: Vec<Node> = opts.nodes.iter().rev().cloned().collect();
    let mut redirected = false;
    while let Some(node) = todo.pop() {
        let mut conn = match Connection::connect(
            &node.host,
            node.port,
            Limits::default(),
            opts.tls.as_ref(),
        ) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{node}: {}", os_message(&e)));
                continue;
            }
        };
        if let Some(pass) = &opts.pass {
            conn.auth(opts.user.as_deref(), pass)?;
        }
        conn.send(&["WAITGRAPH", "DOT", "COUNT", &MAX_EDGES.to_string()])?;
        let dot = match conn.read_frame()? {
            Frame::Bulk(b) => b,
            Frame::Error(e) if e.starts_with("NOTLEADER") => {
                match e
                    .split_whitespace()
                    .nth(1)
                    .map(|a| Node::parse(a, node.port))
                {
                    Some(Ok(leader)) if !redirected => {
                        redirected = true;
                        todo.push(leader);
                    }
                    _ => failures.push(format!("{node}: {e}")),
                }
                continue;
            }
            Frame::Error(e) => anyhow::bail!("WAITGRAPH failed: {e}"),
            other => anyhow::bail!("unexpected WAITGRAPH reply: {other:?}"),
        };
        if opts.file.as_os_str() == "-" {
            stdout.write_all(&dot)?;
            stdout.flush()?;
        } else {
            std::fs::write(&opts.file, &dot)
                .map_err(|e| anyhow::anyhow!("{}: {}", opts.file.display(), os_message(&e)))?;
        }
        return Ok(0);
    }
    anyhow::bail!("Could not read the wait-for graph: {}", failures.join("; "))
}
