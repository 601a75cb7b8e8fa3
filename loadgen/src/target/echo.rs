//! The floor: a TCP echo server (`loadgen echo-server`). "Acquire" sends the bytes
//! Turnstile's ACQUIRE would be and reads them back; "release" does the same with RELEASE.
//! No lock state exists, so every kind is "supported" and nothing ever waits: what a pair
//! costs here is what two round trips cost on this machine, with no server work at all.

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::turnstile_text::{encode_acquire, encode_release};
use super::{AcquireRequest, Acquired, Conn, Grant, LockKind, Target};

pub struct Echo {
    addr: String,
}

impl Echo {
    pub fn new(addr: String) -> Self {
        Self { addr }
    }
}

impl Target for Echo {
    type Conn = EchoConn;

    fn supports(&self, _kind: LockKind) -> bool {
        true
    }

    fn waiting(&self) -> &'static str {
        "nothing waits (no lock state)"
    }

    async fn connect(&self, _id: usize) -> anyhow::Result<EchoConn> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = EchoConn {
            stream,
            wbuf: Vec::with_capacity(256),
            rbuf: vec![0; 256],
        };
        conn.wbuf.extend_from_slice(b"hello\r\n");
        conn.echo().await?;
        Ok(conn)
    }
}

pub struct EchoConn {
    stream: TcpStream,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
}

impl EchoConn {
    /// Writes `wbuf` and reads the same bytes back.
    async fn echo(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.wbuf).await?;
        let n = self.wbuf.len();
        if self.rbuf.len() < n {
            self.rbuf.resize(n, 0);
        }
        self.stream.read_exact(&mut self.rbuf[..n]).await?;
        if self.rbuf[..n] != self.wbuf[..] {
            bail!("the echo server sent back other bytes");
        }
        Ok(())
    }
}

impl Conn for EchoConn {
    async fn acquire(&mut self, req: &AcquireRequest<'_>) -> anyhow::Result<Acquired> {
        self.wbuf.clear();
        encode_acquire(&mut self.wbuf, req);
        self.echo().await?;
        Ok(Acquired::Granted(Grant { token: 0 }))
    }

    async fn release(&mut self, key: &[u8], _grant: Grant) -> anyhow::Result<()> {
        self.wbuf.clear();
        encode_release(&mut self.wbuf, key);
        self.echo().await
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(())
    }
}
