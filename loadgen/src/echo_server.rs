//! `loadgen echo-server`: a tiny tokio TCP echo server, the floor a lock server is measured
//! against. It does what any server must (one read, one write per request) and nothing
//! else.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves until the listener fails; each connection echoes until its peer closes.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A connection that fails just ends: the client sees it.
            let _ = echo(socket).await;
        });
    }
}

async fn echo(mut socket: TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        socket.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let mut back = [0u8; 14];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"*1\r\n$4\r\nPING\r\n");
        server.abort();
    }
}
