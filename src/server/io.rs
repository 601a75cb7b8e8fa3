//! Socket reads with one `recv` per readable event, and [`Stream`]: plain TCP or TLS.
//!
//! `AsyncReadExt::read_buf` learns that a socket is drained only from a `recv` that fails with
//! `EWOULDBLOCK`, so a request-response connection pays three syscalls per request (read,
//! write, the failing read). A TCP read that returns less than the buffer's free space has
//! drained the socket at that instant, so [`read_some`] tells tokio so itself: it performs
//! the read inside [`TcpStream::try_io`] and reports `WouldBlock` after a short read, which
//! clears the readiness tokio recorded *before* the read (a readiness event that arrives
//! during the read has a newer tick and survives: no wakeup is lost). Two syscalls per
//! request, as Redis does.

use std::future::Future;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Reads at least one byte into `buf` (growing it by at least 4 KiB of free space), or
/// returns 0 at end of stream.
pub(super) async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        buf.reserve(4096);
        let space = buf.capacity() - buf.len();
        let mut got = None;
        let res = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = Some(n);
            if n > 0 && n < space {
                // Drained: let tokio forget this readiness without another recv.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match (got, res) {
            (Some(n), _) => return Ok(n),
            (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => stream.readable().await?,
            (None, Err(e)) => return Err(e),
            (None, Ok(n)) => return Ok(n),
        }
    }
}

/// A client connection's byte stream: plain TCP or TLS over TCP. The connection code is
/// generic over it, so the plain path compiles to exactly the calls it made before.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// Reads at least one byte into `buf` (growing it by at least 4 KiB of free space), or
    /// returns 0 at end of stream.
    fn read_some<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;

    /// Writes all of `buf` out to the socket.
    fn send<'a>(&'a mut self, buf: &'a [u8]) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// The client's verified certificate (TLS with `--tls-client-ca`), if any.
    fn peer_certificate(&self) -> Option<&[u8]> {
        None
    }
}

/// The user a connection is by its client certificate (`--tls-cert-users`): the subject
/// CN of a verified certificate, when it names a user that is on.
pub(super) fn certificate_user<S: Stream>(
    shared: &super::Shared,
    stream: &S,
) -> Option<std::sync::Arc<crate::acl::User>> {
    if !shared.config.tls_cert_users {
        return None;
    }
    let name = crate::tls::subject_common_name(stream.peer_certificate()?)?;
    let user = shared.acl.by_certificate(&name);
    tracing::debug!(cn = %name, known = user.is_some(), "client certificate");
    user
}

impl Stream for TcpStream {
    fn read_some<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        read_some(self, buf)
    }

    fn send<'a>(&'a mut self, buf: &'a [u8]) -> impl Future<Output = io::Result<()>> + Send + 'a {
        self.write_all(buf)
    }
}

impl Stream for TlsStream<TcpStream> {
    fn peer_certificate(&self) -> Option<&[u8]> {
        Some(self.get_ref().1.peer_certificates()?.first()?.as_ref())
    }

    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        buf.reserve(4096);
        self.read_buf(buf).await
    }

    async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        // rustls may keep encrypted bytes the socket did not take yet: flush pushes them.
        self.write_all(buf).await?;
        self.flush().await
    }
}
