//! A blocking RESP connection: one command out, one reply in. A shell does one thing at a
//! time, so a plain `TcpStream` (or rustls over one, with `--tls`) is all it needs (no
//! runtime, no pipelining).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::resp::{self, DecodeError, Frame, Limits};

/// Why a command got no reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("{}", os_message(.0))]
    Io(#[from] io::Error),
    #[error("Server closed the connection")]
    Closed,
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl ClientError {
    /// Whether the connection broke (so a new one may work), rather than the server
    /// sending something that is not RESP (which a new connection would not fix).
    pub(crate) fn is_disconnect(&self) -> bool {
        matches!(self, ClientError::Io(_) | ClientError::Closed)
    }
}

/// An I/O error as the C library words it ("Connection refused"), which is what
/// redis-cli prints, without Rust's " (os error 111)" suffix.
pub(crate) fn os_message(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// The TLS settings of `--tls --cacert PATH [--cert PATH --key PATH]`.
pub(crate) fn tls_config(
    cacert: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<ClientConfig>> {
    use anyhow::Context;
    let read_certs = |path: &Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading certificates from {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
        Ok(certs)
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(cacert)? {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate in {}", cacert.display()))?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading a private key from {}", key.display()))?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key)
                .context("--cert/--key")?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A plain or TLS stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub(crate) struct Connection {
    stream: Stream,
    /// Bytes received and not yet decoded.
    buf: Vec<u8>,
    limits: Limits,
}

impl Connection {
    /// Connects to `host:port`, over TLS with `tls` (the certificate must name `host`).
    pub(crate) fn connect(
        host: &str,
        port: u16,
        limits: Limits,
        tls: Option<&Arc<ClientConfig>>,
    ) -> io::Result<Connection> {
        let tcp = TcpStream::connect((host, port))?;
        // Commands are small and each waits for its reply: send them at once.
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let conn = ClientConnection::new(config.clone(), name)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let mut tls = StreamOwned::new(conn, tcp);
                // Handshake now, so that a refused certificate is an error of connecting.
                while tls.conn.is_handshaking() {
                    tls.conn.complete_io(&mut tls.sock)?;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Connection {
            stream,
            buf: Vec::new(),
            limits,
        })
    }

    /// Sends one command as a RESP array of bulk strings.
    pub(crate) fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), ClientError> {
        self.stream.write_all(&resp::encode_command(args))?;
        self.stream.flush()?;
        Ok(())
    }

    /// `AUTH [user] pass`, for the modes that run one job and have no shell to report a
    /// refusal in: an error reply fails.
    pub(crate) fn auth(&mut self, user: Option<&str>, pass: &str) -> anyhow::Result<()> {
        let mut args = vec!["AUTH"];
        args.extend(user);
        args.push(pass);
        self.send(&args)?;
        if let Frame::Error(e) = self.read_frame()? {
            anyhow::bail!("AUTH failed: {e}");
        }
        Ok(())
    }

    /// Reads the next frame, waiting as long as the server takes (an ACQUIRE without WAIT
    /// may queue indefinitely, and that is what the user asked for).
    pub(crate) fn read_frame(&mut self) -> Result<Frame, ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((frame, len)) = resp::decode(&self.buf, &self.limits)? {
                self.buf.drain(..len);
                return Ok(frame);
            }
            if self.buf.len() > self.limits.max_frame {
                return Err(DecodeError::TooLarge {
                    what: "reply",
                    len: self.buf.len() as u64,
                    max: self.limits.max_frame,
                }
                .into());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Whether the server has closed the connection while it sat idle, found without
    /// blocking. Checked before sending, so that a connection which died between two
    /// commands is replaced before the command goes out rather than after: the command
    /// is then sent exactly once. Bytes that arrived meanwhile are kept for `read_frame`.
    pub(crate) fn is_closed(&mut self) -> bool {
        if self.stream.tcp().set_nonblocking(true).is_err() {
            return true;
        }
        let mut chunk = [0u8; 4096];
        let closed = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
            if self.buf.len() > self.limits.max_frame {
                break true;
            }
        };
        closed || self.stream.tcp().set_nonblocking(false).is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn os_messages_read_like_strerror() {
        let refused = io::Error::from_raw_os_error(111);
        assert!(!os_message(&refused).contains("os error"));
        let custom = io::Error::other("plain (words)");
        assert_eq!(os_message(&custom), "plain (words)");
    }

    #[test]
    fn reads_a_reply_split_across_writes_then_sees_the_close() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            let mut request = [0u8; 64];
            let n = socket.read(&mut request).expect("read");
            assert_eq!(&request[..n], b"*1\r\n$4\r\nPING\r\n");
            for piece in [&b"*2\r\n$3"[..], b"\r\nabc", b"\r\n:", b"7\r\n"] {
                socket.write_all(piece).expect("write");
                socket.flush().expect("flush");
                thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let mut conn =
            Connection::connect("127.0.0.1", port, Limits::default(), None).expect("connect");
        conn.send(&["PING"]).expect("send");
        assert_eq!(
            conn.read_frame().expect("reply"),
            Frame::Array(vec![Frame::Bulk(b"abc".to_vec()), Frame::Integer(7)])
        );
        server.join().expect("server thread");
        assert!(matches!(conn.read_frame(), Err(ClientError::Closed)));
        assert!(conn.is_closed());
    }

    #[test]
    fn an_idle_open_connection_is_not_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut conn =
            Connection::connect("127.0.0.1", port, Limits::default(), None).expect("connect");
        let (_socket, _) = listener.accept().expect("accept");
        assert!(!conn.is_closed());
        assert!(!conn.is_closed(), "and the socket is blocking again");
    }

    #[test]
    fn a_reply_larger_than_the_cap_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let limits = Limits {
            max_frame: 100,
            ..Limits::default()
        };
        let server = thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            // A bulk string within max_bulk, but a reply beyond max_frame.
            let _ = socket.write_all(format!("${}\r\n", 10_000).as_bytes());
            let _ = socket.write_all(&[b'x'; 5000]);
            thread::sleep(std::time::Duration::from_millis(200));
        });
        let mut conn = Connection::connect("127.0.0.1", port, limits, None).expect("connect");
        assert!(matches!(
            conn.read_frame(),
            Err(ClientError::Decode(DecodeError::TooLarge {
                what: "reply",
                ..
            }))
        ));
        server.join().expect("server thread");
    }
}
