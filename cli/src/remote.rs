//! One command to a server over plain TCP or TLS, as a user: what `turnstile cluster`
//! (in the server binary) speaks, with the same connection flags as `turnstile cli`.

use std::sync::Arc;

use crate::client::{self, Connection};
use crate::resp::{Frame, Limits};

/// How to reach and log in to a server: `--tls --cacert [--cert --key] --user --pass`,
/// as `turnstile cli` has them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Connect over TLS, verifying the server's certificate against --cacert (it must
    /// name the host connected to).
    #[arg(long, requires = "cacert")]
    pub tls: bool,
    /// With --tls: the CA certificate (PEM) the server's certificate is checked against.
    #[arg(long, value_name = "PATH", requires = "tls")]
    pub cacert: Option<std::path::PathBuf>,
    /// With --tls: a client certificate (PEM) to present (a server run with
    /// --tls-client-ca; with --tls-cert-users its CN can name the user).
    #[arg(long, value_name = "PATH", requires_all = ["tls", "key"])]
    pub cert: Option<std::path::PathBuf>,
    /// With --cert: its private key (PEM).
    #[arg(long, value_name = "PATH", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// User name for AUTH (with --pass).
    #[arg(long, requires = "pass")]
    pub user: Option<String>,
    /// Password, sent with AUTH on connect. Prefer TURNSTILE_PASS (or the older
    /// TURNSTILE_PASSWORD): a command line can be read by other users of the machine.
    #[arg(
        long,
        visible_alias = "password",
        env = "TURNSTILE_PASS",
        hide_env_values = true
    )]
    pub pass: Option<String>,
}

/// A connection opened with [`ConnectArgs`], logged in.
pub struct Remote {
    conn: Connection,
}

impl Remote {
    /// Connects to `addr` (`host:port`), over TLS if asked, and sends AUTH if a password
    /// is given.
    pub fn connect(addr: &str, args: &ConnectArgs) -> anyhow::Result<Remote> {
        use anyhow::Context;
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .with_context(|| format!("{addr}: expected HOST:PORT"))?;
        let tls: Option<Arc<rustls::ClientConfig>> = match (&args.cacert, args.tls) {
            (Some(ca), true) => Some(client::tls_config(
                ca,
                args.cert.as_deref().zip(args.key.as_deref()),
            )?),
            _ => None,
        };
        let mut conn = Connection::connect(host, port, Limits::default(), tls.as_ref())
            .with_context(|| format!("connecting to {addr}"))?;
        if let Some(pass) = &args.pass {
            conn.auth(args.user.as_deref(), pass)?;
        }
        Ok(Remote { conn })
    }

    /// Sends one command and returns its reply as text: `+simple`, `-error`, `:int`, a
    /// bulk string as it is, nil as an empty string, an array one element a line.
    pub fn call(&mut self, words: &[String]) -> anyhow::Result<String> {
        self.conn.send(words)?;
        let frame = self.conn.read_frame()?;
        Ok(text(&frame))
    }
}

fn text(frame: &Frame) -> String {
    match frame {
        Frame::Simple(s) => format!("+{s}"),
        Frame::Error(e) => format!("-{e}"),
        Frame::Integer(i) => format!(":{i}"),
        Frame::Bulk(b) => String::from_utf8_lossy(b).replace("\r\n", "\n"),
        Frame::Null => String::new(),
        Frame::Array(items) | Frame::Set(items) => {
            items.iter().map(text).collect::<Vec<_>>().join("\n")
        }
        other => format!("{other:?}"),
    }
}
