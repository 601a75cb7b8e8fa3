//! Socket reads with one `recv` per readable event.
//!
//! `AsyncReadExt::read_buf` learns that a socket is drained only from a `recv` that fails with
//! `EWOULDBLOCK`, so a request-response connection pays three syscalls per request (read,
//! write, the failing read). A TCP read that returns less than the buffer's free space has
//! drained the socket at that instant, so [`read_some`] tells tokio so itself: it performs
//! the read inside [`TcpStream::try_io`] and reports `WouldBlock` after a short read, which
//! clears the readiness tokio recorded *before* the read (a readiness event that arrives
//! during the read has a newer tick and survives: no wakeup is lost). Two syscalls per
//! request, as Redis does.

use std::io;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;

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
