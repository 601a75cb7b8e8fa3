//! The text-mode reply encoder: RESP2 by default, RESP3 after `HELLO 3`.
//!
//! Replies are appended to the connection's output buffer; the connection writes the whole
//! buffer once per batch of pipelined commands.

use bytes::{BufMut, BytesMut};

/// The reply protocol of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// RESP2 (the default).
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// Appends replies to a buffer.
pub struct ReplyWriter<'a> {
    /// The output buffer.
    pub out: &'a mut BytesMut,
    /// The connection's protocol.
    pub proto: Proto,
}

impl ReplyWriter<'_> {
    /// `+OK` and other status replies.
    pub fn simple(&mut self, s: &str) {
        self.out.reserve(s.len() + 3);
        self.out.put_u8(b'+');
        self.out.put_slice(s.as_bytes());
        self.out.put_slice(b"\r\n");
    }

    /// An error reply; `msg` starts with its code (`ERR`, `DEADLOCK`, ...). Line breaks
    /// would break framing, so they become spaces.
    pub fn error(&mut self, msg: &str) {
        self.out.reserve(msg.len() + 3);
        self.out.put_u8(b'-');
        for b in msg.bytes() {
            self.out
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.out.put_slice(b"\r\n");
    }

    /// An integer reply.
    pub fn integer(&mut self, v: i64) {
        let mut buf = itoa::Buffer::new();
        let s = buf.format(v);
        self.out.reserve(s.len() + 3);
        self.out.put_u8(b':');
        self.out.put_slice(s.as_bytes());
        self.out.put_slice(b"\r\n");
    }

    /// A bulk string reply.
    pub fn bulk(&mut self, data: &[u8]) {
        let mut buf = itoa::Buffer::new();
        let len = buf.format(data.len());
        self.out.reserve(data.len() + len.len() + 5);
        self.out.put_u8(b'$');
        self.out.put_slice(len.as_bytes());
        self.out.put_slice(b"\r\n");
        self.out.put_slice(data);
        self.out.put_slice(b"\r\n");
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        match self.proto {
            Proto::Resp2 => self.out.put_slice(b"$-1\r\n"),
            Proto::Resp3 => self.out.put_slice(b"_\r\n"),
        }
    }

    /// The header of an array of `n` elements.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n);
    }

    /// The header of a RESP3 push message of `n` elements (`>n`).
    pub fn push(&mut self, n: usize) {
        self.header(b'>', n);
    }

    /// The header of a map of `n` pairs: `%n` in RESP3, a flat array of `2n` in RESP2.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.header(b'*', 2 * n),
            Proto::Resp3 => self.header(b'%', n),
        }
    }

    fn header(&mut self, kind: u8, n: usize) {
        let mut buf = itoa::Buffer::new();
        let s = buf.format(n);
        self.out.reserve(s.len() + 3);
        self.out.put_u8(kind);
        self.out.put_slice(s.as_bytes());
        self.out.put_slice(b"\r\n");
    }
}
