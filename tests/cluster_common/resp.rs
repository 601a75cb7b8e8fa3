//! A small RESP2 client over a plain `TcpStream` that never panics: every failure is a
//! value the caller classifies (a reply, a timeout, a closed connection), because under
//! failover and partitions a lost connection is an expected outcome, not a test failure.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...` (the whole line after the dash)
    Error(String),
    /// `:...`
    Int(i64),
    /// `$n ...`
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3 `_`
    Nil,
    /// `*n ...` (a RESP3 map is flattened into key, value, ...)
    Array(Vec<Reply>),
}

impl Reply {
    /// The error's first word (`NOTLEADER`, `ERR`, ...), if this is an error.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e.split_whitespace().next().unwrap_or("")),
            _ => None,
        }
    }

    /// Whether this is `-ERR UNCERTAIN ...`: the request may or may not have taken effect.
    pub fn is_uncertain(&self) -> bool {
        matches!(self, Reply::Error(e) if e.starts_with("ERR UNCERTAIN"))
    }

    /// For `-NOTLEADER host:port`: `Some(Some(addr))`; for a bare `-NOTLEADER`:
    /// `Some(None)`; otherwise `None`.
    pub fn not_leader(&self) -> Option<Option<String>> {
        match self {
            Reply::Error(e) if e == "NOTLEADER" || e.starts_with("NOTLEADER ") => {
                Some(e.split_whitespace().nth(1).map(str::to_string))
            }
            _ => None,
        }
    }

    /// The text of a simple or bulk string.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// An integer (also one sent as a string).
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            other => other.text()?.trim().parse().ok(),
        }
    }

    /// The elements of an array.
    pub fn items(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Why a call got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No (complete) reply within the time allowed; the connection is unusable after.
    Timeout,
    /// The peer closed the connection or it broke.
    Closed(String),
    /// Bytes that are not RESP.
    Protocol(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => write!(f, "no reply in time"),
            CallError::Closed(why) => write!(f, "connection lost: {why}"),
            CallError::Protocol(why) => write!(f, "bad reply: {why}"),
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`,
/// `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    if nl == 0 {
        return Err("empty reply line".into());
    }
    let line = std::str::from_utf8(&buf[1..nl]).map_err(|_| "reply line is not UTF-8")?;
    let after = nl + 2;
    let number = |s: &str| -> Result<i64, String> {
        s.parse::<i64>().map_err(|_| format!("bad number {s:?}"))
    };
    let reply = match buf[0] {
        b'+' => (Reply::Simple(line.to_string()), after),
        b'-' => (Reply::Error(line.to_string()), after),
        b':' => (Reply::Int(number(line)?), after),
        b'_' => (Reply::Nil, after),
        b'#' => (Reply::Int(i64::from(line == "t")), after),
        b',' => (Reply::Simple(line.to_string()), after),
        b'$' | b'=' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let n = usize::try_from(n).map_err(|_| "bulk length")?;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err("bulk string without its CRLF".into());
            }
            (Reply::Bulk(buf[after..after + n].to_vec()), after + n + 2)
        }
        b'*' | b'%' | b'~' | b'>' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let count = usize::try_from(n).map_err(|_| "array length")?;
            let count = if buf[0] == b'%' { 2 * count } else { count };
            let mut pos = after;
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                match parse(&buf[pos..])? {
                    Some((r, used)) => {
                        items.push(r);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(items), pos)
        }
        other => return Err(format!("unexpected reply type byte {:?}", other as char)),
    };
    Ok(Some(reply))
}

/// One text-mode connection (one session on the server).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The `host:port` it is connected to.
    pub addr: String,
}

impl Conn {
    /// Connects to `addr` within `limit`.
    pub async fn connect(addr: &str, limit: Duration) -> Result<Conn, String> {
        let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("connecting to {addr}: {e}")),
            Err(_) => return Err(format!("connecting to {addr}: no connection in {limit:?}")),
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::new(),
            addr: addr.to_string(),
        })
    }

    /// Sends `words` as one command and reads its reply, all within `limit`.
    pub async fn call(&mut self, words: &[&str], limit: Duration) -> Result<Reply, CallError> {
        let deadline = tokio::time::Instant::now() + limit;
        match tokio::time::timeout_at(deadline, self.stream.write_all(&encode(words))).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(Err(e)) => return Err(CallError::Closed(format!("write: {e}"))),
            Ok(Ok(())) => {}
        }
        self.reply_by(deadline).await
    }

    /// Reads one reply, waiting until `deadline` at most.
    pub async fn reply_by(&mut self, deadline: tokio::time::Instant) -> Result<Reply, CallError> {
        loop {
            if let Some((r, used)) = parse(&self.buf).map_err(CallError::Protocol)? {
                self.buf.drain(..used);
                return Ok(r);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(CallError::Timeout),
                Ok(Err(e)) => return Err(CallError::Closed(format!("read: {e}"))),
                Ok(Ok(0)) => return Err(CallError::Closed("closed by the server".into())),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends `words` without reading the reply (a blocking ACQUIRE queued on purpose).
    pub async fn send(&mut self, words: &[&str], limit: Duration) -> Result<(), CallError> {
        match tokio::time::timeout(limit, self.stream.write_all(&encode(words))).await {
            Err(_) => Err(CallError::Timeout),
            Ok(Err(e)) => Err(CallError::Closed(format!("write: {e}"))),
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// One command on a fresh connection to `addr`.
pub async fn call_once(addr: &str, words: &[&str], limit: Duration) -> Result<Reply, String> {
    let mut conn = Conn::connect(addr, limit).await?;
    conn.call(words, limit).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        assert_eq!(parse(b":42\r\n").unwrap(), Some((Reply::Int(42), 5)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Nil, 5)));
        assert_eq!(parse(b"$3\r\nab").unwrap(), None);
        let (r, _) = parse(b"-NOTLEADER 127.0.0.1:7\r\n").unwrap().unwrap();
        assert_eq!(r.not_leader(), Some(Some("127.0.0.1:7".into())));
        let (r, _) = parse(b"-NOTLEADER\r\n").unwrap().unwrap();
        assert_eq!(r.not_leader(), Some(None));
        let (r, _) = parse(b"-ERR UNCERTAIN lost\r\n").unwrap().unwrap();
        assert!(r.is_uncertain() && r.not_leader().is_none());
        let (r, used) = parse(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n").unwrap().unwrap();
        assert_eq!(used, 19);
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Int(1),
                Reply::Array(vec![Reply::Bulk(b"x".to_vec())])
            ])
        );
    }
}
