//! A lean RESP codec for the client side: commands out, replies in.
//!
//! Commands are arrays of bulk strings appended to a reused `Vec<u8>` (one write per
//! request); replies are parsed in place from the read buffer and borrow from it, so a
//! reply to ACQUIRE or SET costs no allocation. RESP2 is what Turnstile and Redis send
//! unless asked for RESP3 with HELLO 3; the RESP3 types are accepted all the same.

use std::fmt;

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The largest bulk string or aggregate we accept in a reply (a loadgen never asks for more).
const MAX_LEN: usize = 64 * 1024 * 1024;
/// How deep aggregates may nest in a reply.
const MAX_DEPTH: usize = 16;

/// Appends `*argc\r\n` and returns a builder for exactly `argc` arguments.
pub fn command(out: &mut Vec<u8>, argc: usize) -> Command<'_> {
    out.push(b'*');
    push_u64(out, argc as u64);
    out.extend_from_slice(b"\r\n");
    Command { out }
}

/// Builds one command; see [`command`].
pub struct Command<'a> {
    out: &'a mut Vec<u8>,
}

impl Command<'_> {
    /// Appends one bulk-string argument.
    pub fn arg(&mut self, arg: &[u8]) -> &mut Self {
        self.out.push(b'$');
        push_u64(self.out, arg.len() as u64);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(arg);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends one integer argument, in decimal.
    pub fn arg_u64(&mut self, n: u64) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.arg(b.format(n).as_bytes())
    }
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(n).as_bytes());
}

/// One reply, borrowing its strings from the read buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<'a> {
    /// `+OK`; RESP3 doubles and big numbers come here too, as text.
    Simple(&'a [u8]),
    /// `-ERR ...` (and RESP3 blob errors).
    Error(&'a [u8]),
    /// `:42` (and RESP3 booleans as 0/1).
    Integer(i64),
    /// `$3\r\nfoo` (and RESP3 verbatim strings, with their `txt:` prefix).
    Bulk(&'a [u8]),
    /// `$-1`, `*-1` or RESP3 `_`.
    Nil,
    /// `*n` (and RESP3 sets, pushes, and maps as 2n flat elements).
    Array(Vec<Reply<'a>>),
}

impl Reply<'_> {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{}", String::from_utf8_lossy(s)),
            Reply::Error(s) => format!("-{}", String::from_utf8_lossy(s)),
            Reply::Integer(n) => format!(":{n}"),
            Reply::Bulk(s) => format!("${}", String::from_utf8_lossy(s)),
            Reply::Nil => "nil".to_string(),
            Reply::Array(a) => format!("array of {}", a.len()),
        }
    }
}

/// Input that cannot be a RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RESP protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Parses one reply from the start of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let mut pos = 0;
    match parse_at(buf, &mut pos, 0)? {
        Some(reply) => Ok(Some((reply, pos))),
        None => Ok(None),
    }
}

fn parse_at<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    depth: usize,
) -> Result<Option<Reply<'a>>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("replies nested too deep".into()));
    }
    let Some(&tag) = buf.get(*pos) else {
        return Ok(None);
    };
    let Some(line) = line(buf, *pos + 1) else {
        return Ok(None);
    };
    let after_line = *pos + 1 + line.len() + 2;
    let reply = match tag {
        b'+' | b',' | b'(' => Reply::Simple(line),
        b'-' => Reply::Error(line),
        b':' => Reply::Integer(int(line)?),
        b'#' => match line {
            b"t" => Reply::Integer(1),
            b"f" => Reply::Integer(0),
            _ => return Err(ProtocolError("bad boolean".into())),
        },
        b'_' => Reply::Nil,
        b'$' | b'=' | b'!' => {
            let n = int(line)?;
            if n < 0 {
                *pos = after_line;
                return Ok(Some(Reply::Nil));
            }
            let n = len(n)?;
            let end = after_line + n;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not followed by CRLF".into()));
            }
            *pos = end + 2;
            let s = &buf[after_line..end];
            return Ok(Some(if tag == b'!' {
                Reply::Error(s)
            } else {
                Reply::Bulk(s)
            }));
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = int(line)?;
            if n < 0 {
                *pos = after_line;
                return Ok(Some(Reply::Nil));
            }
            let n = len(n)? * if tag == b'%' { 2 } else { 1 };
            *pos = after_line;
            // Capacity from the wire is capped: an element takes at least 3 bytes.
            let mut items = Vec::with_capacity(n.min(buf.len() / 3));
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some(r) => items.push(r),
                    None => return Ok(None),
                }
            }
            return Ok(Some(Reply::Array(items)));
        }
        other => {
            return Err(ProtocolError(format!(
                "unexpected type byte {:?}",
                other as char
            )))
        }
    };
    *pos = after_line;
    Ok(Some(reply))
}

/// The bytes from `start` up to the next CRLF, or None if the CRLF is not there yet.
fn line(buf: &[u8], start: usize) -> Option<&[u8]> {
    let rest = buf.get(start..)?;
    let mut i = 0;
    while i + 1 < rest.len() {
        if rest[i] == b'\r' && rest[i + 1] == b'\n' {
            return Some(&rest[..i]);
        }
        i += 1;
    }
    None
}

fn int(s: &[u8]) -> Result<i64, ProtocolError> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(ProtocolError("bad integer".into()));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ProtocolError("bad integer".into()));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(|| ProtocolError("integer overflow".into()))?;
    }
    Ok(if neg { -n } else { n })
}

fn len(n: i64) -> Result<usize, ProtocolError> {
    let n = usize::try_from(n).map_err(|_| ProtocolError("bad length".into()))?;
    if n > MAX_LEN {
        return Err(ProtocolError(format!(
            "length {n} over the cap of {MAX_LEN}"
        )));
    }
    Ok(n)
}

/// A TCP connection speaking RESP: one request in flight, buffers reused.
pub struct RespConn {
    stream: TcpStream,
    /// The request being built; cleared by [`RespConn::request`].
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Unparsed bytes are `rbuf[start..end]`.
    start: usize,
    end: usize,
}

impl RespConn {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            wbuf: Vec::with_capacity(256),
            rbuf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        })
    }

    /// The (cleared) buffer to encode the next request into.
    pub fn request(&mut self) -> &mut Vec<u8> {
        self.wbuf.clear();
        &mut self.wbuf
    }

    /// Writes the request built in [`RespConn::request`] and reads one reply.
    pub async fn round_trip(&mut self) -> anyhow::Result<Reply<'_>> {
        self.stream.write_all(&self.wbuf).await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> anyhow::Result<Reply<'_>> {
        // Two passes, as in the server: find a complete reply, then parse it to return
        // (replies to lock commands are a few bytes; the second pass costs next to nothing).
        let n = loop {
            if let Some((_, n)) = parse(&self.rbuf[self.start..self.end])? {
                break n;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.rbuf.len() {
                if self.start > 0 {
                    self.rbuf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else {
                    let grown = self.rbuf.len() * 2;
                    if grown > MAX_LEN + 1024 {
                        bail!("reply larger than {MAX_LEN} bytes");
                    }
                    self.rbuf.resize(grown, 0);
                }
            }
            let read = self.stream.read(&mut self.rbuf[self.end..]).await?;
            if read == 0 {
                bail!("the server closed the connection");
            }
            self.end += read;
        };
        let from = self.start;
        self.start += n;
        Ok(parse(&self.rbuf[from..from + n])?
            .expect("a complete reply parses again")
            .0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut c = command(&mut out, args.len());
        for a in args {
            c.arg(a);
        }
        out
    }

    #[test]
    fn encodes_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"ACQUIRE", b"k", b"TTL"]),
            b"*3\r\n$7\r\nACQUIRE\r\n$1\r\nk\r\n$3\r\nTTL\r\n"
        );
        let mut out = Vec::new();
        command(&mut out, 2).arg(b"PX").arg_u64(1500);
        assert_eq!(out, b"*2\r\n$2\r\nPX\r\n$4\r\n1500\r\n");
        assert_eq!(encode(&[b""]), b"*1\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_resp2_replies() {
        assert_eq!(parse(b"+OK\r\n"), Ok(Some((Reply::Simple(b"OK"), 5))));
        assert_eq!(parse(b":42\r\n"), Ok(Some((Reply::Integer(42), 5))));
        assert_eq!(parse(b":-7\r\n"), Ok(Some((Reply::Integer(-7), 5))));
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Reply::Nil, 5))));
        assert_eq!(parse(b"*-1\r\n"), Ok(Some((Reply::Nil, 5))));
        assert_eq!(
            parse(b"-ERR unknown command\r\n"),
            Ok(Some((Reply::Error(b"ERR unknown command"), 22)))
        );
        assert_eq!(
            parse(b"$3\r\na\r\n\r\n"),
            Ok(Some((Reply::Bulk(b"a\r\n"), 9)))
        );
        assert_eq!(
            parse(b"*2\r\n:1\r\n$1\r\nx\r\n+rest"),
            Ok(Some((
                Reply::Array(vec![Reply::Integer(1), Reply::Bulk(b"x")]),
                15
            )))
        );
    }

    #[test]
    fn parses_resp3_replies() {
        assert_eq!(parse(b"_\r\n"), Ok(Some((Reply::Nil, 3))));
        assert_eq!(parse(b"#t\r\n"), Ok(Some((Reply::Integer(1), 4))));
        assert_eq!(
            parse(b"%1\r\n+a\r\n:1\r\n"),
            Ok(Some((
                Reply::Array(vec![Reply::Simple(b"a"), Reply::Integer(1)]),
                12
            )))
        );
        assert_eq!(parse(b"!3\r\nERR\r\n"), Ok(Some((Reply::Error(b"ERR"), 9))));
    }

    #[test]
    fn incomplete_input_asks_for_more_at_every_cut() {
        let full = b"*3\r\n:1\r\n$5\r\nhello\r\n*1\r\n_\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(matches!(parse(full), Ok(Some((_, n))) if n == full.len()));
    }

    #[test]
    fn rejects_garbage_and_huge_lengths() {
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b":12a\r\n").is_err());
        assert!(parse(b":99999999999999999999\r\n").is_err());
        assert!(parse(b"$999999999999\r\n").is_err());
        assert!(parse(b"$1\r\nab\r\n").is_err());
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn round_trips_what_it_encodes_as_a_reply_array() {
        // A command is itself a valid RESP array of bulk strings.
        let bytes = encode(&[b"SET", b"key", b"\x00\xff", b"NX"]);
        let (reply, n) = parse(&bytes).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Bulk(b"SET"),
                Reply::Bulk(b"key"),
                Reply::Bulk(b"\x00\xff"),
                Reply::Bulk(b"NX"),
            ])
        );
    }
}
