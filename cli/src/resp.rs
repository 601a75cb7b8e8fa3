//! The RESP codec of the shell: commands out as RESP2 arrays of bulk strings, replies in
//! as any RESP2 or RESP3 type.
//!
//! Decoding takes two passes over the buffered bytes, as mini-redis's `frame.rs` does:
//! [`check`] walks a frame without allocating and says whether it is complete, then
//! [`parse`] builds it. Every length read from the wire is checked against [`Limits`]
//! before anything is allocated or awaited, so a broken or hostile server can make the
//! shell fail with an error but not grow its memory without bound or overflow its stack.

use std::fmt;

/// One decoded reply, of any RESP2 or RESP3 type.
///
/// Simple strings, errors, doubles and big numbers are lines of text on the wire and are
/// kept as text (decoded lossily: they are for people to read); bulk and verbatim strings
/// are binary-safe and kept as bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`, and the RESP3 blob error `!<len>`.
    Error(String),
    /// `:7`
    Integer(i64),
    /// `$<len>`
    Bulk(Vec<u8>),
    /// The RESP2 null bulk string `$-1` and null array `*-1`, and the RESP3 null `_`.
    Null,
    /// `*<n>`
    Array(Vec<Frame>),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `,<double>`, kept as the server wrote it (`1.5`, `inf`, `nan`).
    Double(String),
    /// RESP3 `(<digits>`.
    BigNumber(String),
    /// RESP3 `=<len>` with its three-letter format (`txt`, `mkd`) split off.
    Verbatim { format: String, text: Vec<u8> },
    /// RESP3 `%<n>`: n key/value pairs, in wire order.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~<n>`.
    Set(Vec<Frame>),
    /// RESP3 `|<n>`: attributes about the reply that follows them, which the protocol
    /// sends as one unit, so they are decoded into one frame.
    Attribute {
        attributes: Vec<(Frame, Frame)>,
        value: Box<Frame>,
    },
    /// RESP3 `><n>`: out-of-band data, not the reply to a command.
    Push(Vec<Frame>),
}

/// Bounds on what the decoder accepts from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Longest bulk, verbatim or blob-error string (Redis's `proto-max-bulk-len` default).
    pub max_bulk: usize,
    /// Most elements of one array, set or push, or pairs of one map or attribute.
    pub max_elements: usize,
    /// Deepest nesting of aggregates: the decoder recurses, so this bounds its stack.
    pub max_depth: usize,
    /// Longest header or simple line (simple string, error, number), without its CRLF.
    pub max_line: usize,
    /// Most bytes one reply may occupy while it is being received.
    pub max_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 * 1024 * 1024,
            max_elements: 64 * 1024 * 1024,
            max_depth: 64,
            max_line: 64 * 1024,
            max_frame: 1024 * 1024 * 1024,
        }
    }
}

/// Why bytes from the server are not a valid reply. The connection cannot be resynchronised
/// after any of these, so the caller drops it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("Protocol error, got {} as reply type byte", Escaped(&[*.0]))]
    UnknownType(u8),
    #[error("Protocol error, invalid {what}: {}", Escaped(text))]
    Invalid { what: &'static str, text: Vec<u8> },
    #[error("Protocol error, line not terminated by CRLF")]
    MissingCrlf,
    #[error("Protocol error, {what} of {len} exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: usize,
    },
    #[error("Protocol error, reply nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("Protocol error, streamed RESP3 types are not supported")]
    Streamed,
}

/// Shows bytes from the wire in an error message with the same escapes as replies.
struct Escaped<'a>(&'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&crate::format::repr(self.0)))
    }
}

/// Encodes one command as a RESP2 array of bulk strings: the form every server accepts,
/// and binary-safe (arguments may hold spaces, CRLF or any byte).
pub(crate) fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let payload: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    let mut out = Vec::with_capacity(16 + payload);
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Says whether `buf` starts with a complete reply: `Ok(Some(len))` with its length in
/// bytes, `Ok(None)` when more bytes are needed. Allocates nothing.
pub(crate) fn check(buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    let mut cursor = Cursor::new(buf, limits);
    Ok(check_frame(&mut cursor, 0)?.map(|()| cursor.pos))
}

/// Decodes the reply at the start of `buf`, which [`check`] found complete.
pub(crate) fn parse(buf: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    let mut cursor = Cursor::new(buf, limits);
    parse_frame(&mut cursor, 0)
}

/// [`check`] then [`parse`]: the decoded reply and the bytes it took, or `None` when the
/// buffer does not yet hold a whole reply.
pub(crate) fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, DecodeError> {
    match check(buf, limits)? {
        Some(len) => Ok(Some((parse(&buf[..len], limits)?, len))),
        None => Ok(None),
    }
}

/// The first line of a frame: its type byte and what the line after it says.
enum Header<'a> {
    /// A frame that is one line (`+ - : , ( # _`), with the line's text.
    Line(u8, &'a [u8]),
    /// A length-prefixed string (`$ ! =`): its length, `None` for the RESP2 null.
    Blob(u8, Option<usize>),
    /// An aggregate (`* % ~ | >`): the number of frames that follow it (two per map pair,
    /// plus the described value for an attribute), `None` for the RESP2 null array.
    Aggregate(u8, Option<usize>),
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], limits: &'a Limits) -> Self {
        Cursor {
            buf,
            pos: 0,
            limits,
        }
    }

    /// The next CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let rest = &self.buf[self.pos..];
        // Look no further than a legal line could reach, so that a server streaming bytes
        // without a CRLF is refused instead of buffered.
        let window = &rest[..rest.len().min(self.limits.max_line + 1)];
        match window.iter().position(|&b| b == b'\r') {
            Some(cr) => match rest.get(cr + 1) {
                Some(b'\n') => {
                    self.pos += cr + 2;
                    Ok(Some(&rest[..cr]))
                }
                Some(_) => Err(DecodeError::MissingCrlf),
                None => Ok(None),
            },
            None if window.len() > self.limits.max_line => Err(DecodeError::TooLarge {
                what: "line",
                len: window.len() as u64,
                max: self.limits.max_line,
            }),
            None => Ok(None),
        }
    }

    fn header(&mut self) -> Result<Option<Header<'a>>, DecodeError> {
        let Some(&kind) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        if !b"+-:,(#_$!=*%~|>".contains(&kind) {
            return Err(DecodeError::UnknownType(kind));
        }
        let start = self.pos;
        self.pos += 1;
        let Some(line) = self.line()? else {
            self.pos = start;
            return Ok(None);
        };
        Ok(Some(match kind {
            b'$' | b'!' | b'=' => {
                let len = length(line, "bulk length")?;
                if let Some(len) = len {
                    if len > self.limits.max_bulk as u64 {
                        return Err(DecodeError::TooLarge {
                            what: "bulk length",
                            len,
                            max: self.limits.max_bulk,
                        });
                    }
                }
                // A null is only a RESP2 bulk string; `!-1` and `=-1` are malformed.
                if len.is_none() && kind != b'$' {
                    return Err(invalid("bulk length", line));
                }
                Header::Blob(kind, len.map(|len| len as usize))
            }
            b'*' | b'%' | b'~' | b'|' | b'>' => {
                let count = length(line, "multibulk length")?;
                if let Some(count) = count {
                    if count > self.limits.max_elements as u64 {
                        return Err(DecodeError::TooLarge {
                            what: "multibulk length",
                            len: count,
                            max: self.limits.max_elements,
                        });
                    }
                }
                if count.is_none() && kind != b'*' {
                    return Err(invalid("multibulk length", line));
                }
                // Bounded by max_elements above, so neither sum can overflow.
                let frames = count.map(|n| match kind {
                    b'%' => 2 * n as usize,
                    b'|' => 2 * n as usize + 1,
                    _ => n as usize,
                });
                Header::Aggregate(kind, frames)
            }
            _ => {
                validate_line(kind, line)?;
                Header::Line(kind, line)
            }
        }))
    }

    /// The `len` bytes of a blob and its CRLF, or `None` when they have not all arrived.
    fn blob(&mut self, len: usize) -> Result<Option<&'a [u8]>, DecodeError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < len + 2 {
            return Ok(None);
        }
        if &rest[len..len + 2] != b"\r\n" {
            return Err(DecodeError::MissingCrlf);
        }
        self.pos += len + 2;
        Ok(Some(&rest[..len]))
    }
}

/// Reads a length or count: a non-negative decimal, or -1 for the RESP2 nulls.
fn length(line: &[u8], what: &'static str) -> Result<Option<u64>, DecodeError> {
    if line == b"?" {
        return Err(DecodeError::Streamed);
    }
    if line == b"-1" {
        return Ok(None);
    }
    if line.is_empty() || line.len() > 19 || !line.iter().all(u8::is_ascii_digit) {
        return Err(invalid(what, line));
    }
    let text = std::str::from_utf8(line).map_err(|_| invalid(what, line))?;
    text.parse().map(Some).map_err(|_| invalid(what, line))
}

fn invalid(what: &'static str, text: &[u8]) -> DecodeError {
    DecodeError::Invalid {
        what,
        text: text.to_vec(),
    }
}

/// Checks the text of a one-line frame, so that [`parse`] cannot fail on it.
fn validate_line(kind: u8, line: &[u8]) -> Result<(), DecodeError> {
    match kind {
        b':' => integer(line).map(drop),
        b'#' if line == b"t" || line == b"f" => Ok(()),
        b'#' => Err(invalid("boolean", line)),
        b'_' if line.is_empty() => Ok(()),
        b'_' => Err(invalid("null", line)),
        b',' if !line.is_empty() => Ok(()),
        b',' => Err(invalid("double", line)),
        b'(' => {
            let digits = line.strip_prefix(b"-").unwrap_or(line);
            let digits = digits.strip_prefix(b"+").unwrap_or(digits);
            if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                Ok(())
            } else {
                Err(invalid("big number", line))
            }
        }
        _ => Ok(()),
    }
}

fn integer(line: &[u8]) -> Result<i64, DecodeError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid("integer", line))
}

fn check_frame(cursor: &mut Cursor<'_>, depth: usize) -> Result<Option<()>, DecodeError> {
    if depth > cursor.limits.max_depth {
        return Err(DecodeError::TooDeep(cursor.limits.max_depth));
    }
    let Some(header) = cursor.header()? else {
        return Ok(None);
    };
    match header {
        Header::Line(..) | Header::Blob(_, None) | Header::Aggregate(_, None) => {}
        Header::Blob(kind, Some(len)) => {
            let Some(blob) = cursor.blob(len)? else {
                return Ok(None);
            };
            if kind == b'=' && (blob.len() < 4 || blob[3] != b':') {
                return Err(invalid("verbatim string", blob));
            }
        }
        Header::Aggregate(_, Some(frames)) => {
            for _ in 0..frames {
                if check_frame(cursor, depth + 1)?.is_none() {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(()))
}

fn parse_frame(cursor: &mut Cursor<'_>, depth: usize) -> Result<Frame, DecodeError> {
    if depth > cursor.limits.max_depth {
        return Err(DecodeError::TooDeep(cursor.limits.max_depth));
    }
    let header = cursor.header()?.ok_or(DecodeError::MissingCrlf)?;
    Ok(match header {
        Header::Line(kind, line) => {
            let text = || String::from_utf8_lossy(line).into_owned();
            match kind {
                b'+' => Frame::Simple(text()),
                b'-' => Frame::Error(text()),
                b':' => Frame::Integer(integer(line)?),
                b'#' => Frame::Boolean(line == b"t"),
                b',' => Frame::Double(text()),
                b'(' => Frame::BigNumber(text()),
                b'_' => Frame::Null,
                _ => return Err(DecodeError::UnknownType(kind)),
            }
        }
        Header::Blob(_, None) | Header::Aggregate(_, None) => Frame::Null,
        Header::Blob(kind, Some(len)) => {
            let blob = cursor.blob(len)?.ok_or(DecodeError::MissingCrlf)?;
            match kind {
                b'!' => Frame::Error(String::from_utf8_lossy(blob).into_owned()),
                b'=' if blob.len() >= 4 && blob[3] == b':' => Frame::Verbatim {
                    format: String::from_utf8_lossy(&blob[..3]).into_owned(),
                    text: blob[4..].to_vec(),
                },
                b'=' => return Err(invalid("verbatim string", blob)),
                _ => Frame::Bulk(blob.to_vec()),
            }
        }
        Header::Aggregate(kind, Some(frames)) => {
            // The count came from the wire: reserve only a little up front and let the
            // vector grow with the elements that really arrive.
            let mut items = Vec::with_capacity(frames.min(1024));
            for _ in 0..frames {
                items.push(parse_frame(cursor, depth + 1)?);
            }
            match kind {
                b'~' => Frame::Set(items),
                b'>' => Frame::Push(items),
                b'%' => Frame::Map(pairs(items)),
                b'|' => {
                    let value = items.pop().ok_or(invalid("attribute", b""))?;
                    Frame::Attribute {
                        attributes: pairs(items),
                        value: Box::new(value),
                    }
                }
                _ => Frame::Array(items),
            }
        }
    })
}

/// Groups the flat key, value, key, value... frames of a map into pairs.
fn pairs(items: Vec<Frame>) -> Vec<(Frame, Frame)> {
    let mut pairs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        pairs.push((key, value));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn one(bytes: &[u8]) -> Frame {
        let (frame, len) = decode(bytes, &limits()).expect("valid").expect("complete");
        assert_eq!(len, bytes.len(), "the whole input is one frame");
        frame
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn encodes_binary_safe_arrays_of_bulk_strings() {
        assert_eq!(
            encode_command(&["ACQUIRE", "k", "TTL", "5000"]),
            b"*4\r\n$7\r\nACQUIRE\r\n$1\r\nk\r\n$3\r\nTTL\r\n$4\r\n5000\r\n"
        );
        assert_eq!(
            encode_command(&[b"SET".as_slice(), b"a\r\nb", b"\x00"]),
            b"*3\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n$1\r\n\x00\r\n"
        );
        assert_eq!(encode_command::<&str>(&[]), b"*0\r\n");
    }

    #[test]
    fn decodes_every_resp2_type() {
        assert_eq!(one(b"+OK\r\n"), Frame::Simple("OK".into()));
        assert_eq!(
            one(b"-DEADLOCK would wait on itself\r\n"),
            Frame::Error("DEADLOCK would wait on itself".into())
        );
        assert_eq!(one(b":7\r\n"), Frame::Integer(7));
        assert_eq!(one(b":-9223372036854775808\r\n"), Frame::Integer(i64::MIN));
        assert_eq!(one(b"$5\r\nhe\r\no\r\n"), bulk("he\r\no"));
        assert_eq!(one(b"$0\r\n\r\n"), bulk(""));
        assert_eq!(one(b"$-1\r\n"), Frame::Null);
        assert_eq!(one(b"*-1\r\n"), Frame::Null);
        assert_eq!(one(b"*0\r\n"), Frame::Array(vec![]));
        assert_eq!(
            one(b"*3\r\n:1\r\n*2\r\n:2\r\n$1\r\nx\r\n$1\r\ny\r\n"),
            Frame::Array(vec![
                Frame::Integer(1),
                Frame::Array(vec![Frame::Integer(2), bulk("x")]),
                bulk("y"),
            ])
        );
    }

    #[test]
    fn decodes_every_resp3_type() {
        assert_eq!(one(b"_\r\n"), Frame::Null);
        assert_eq!(one(b"#t\r\n"), Frame::Boolean(true));
        assert_eq!(one(b"#f\r\n"), Frame::Boolean(false));
        assert_eq!(one(b",1.5\r\n"), Frame::Double("1.5".into()));
        assert_eq!(one(b",-inf\r\n"), Frame::Double("-inf".into()));
        assert_eq!(
            one(b"(3492890328409238509324850943850943825024385\r\n"),
            Frame::BigNumber("3492890328409238509324850943850943825024385".into())
        );
        assert_eq!(
            one(b"=15\r\ntxt:Some string\r\n"),
            Frame::Verbatim {
                format: "txt".into(),
                text: b"Some string".to_vec()
            }
        );
        assert_eq!(
            one(b"!21\r\nSYNTAX invalid syntax\r\n"),
            Frame::Error("SYNTAX invalid syntax".into())
        );
        assert_eq!(
            one(b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n*1\r\n_\r\n"),
            Frame::Map(vec![
                (Frame::Simple("first".into()), Frame::Integer(1)),
                (bulk("second"), Frame::Array(vec![Frame::Null])),
            ])
        );
        assert_eq!(
            one(b"~2\r\n+a\r\n#t\r\n"),
            Frame::Set(vec![Frame::Simple("a".into()), Frame::Boolean(true)])
        );
        assert_eq!(
            one(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2039123\r\n"),
            Frame::Attribute {
                attributes: vec![(
                    Frame::Simple("key-popularity".into()),
                    Frame::Map(vec![(bulk("a"), Frame::Double("0.19".into()))]),
                )],
                value: Box::new(Frame::Array(vec![Frame::Integer(2039123)])),
            }
        );
        assert_eq!(
            one(b">2\r\n+message\r\n$2\r\nhi\r\n"),
            Frame::Push(vec![Frame::Simple("message".into()), bulk("hi")])
        );
        assert_eq!(one(b"%0\r\n"), Frame::Map(vec![]));
    }

    /// Every reply, cut at every byte: each strict prefix is incomplete (never an error,
    /// never a wrong frame), and the whole decodes to the same frame as in one piece.
    #[test]
    fn fragmented_input_is_incomplete_until_the_last_byte() {
        let replies: &[&[u8]] = &[
            b"+PONG\r\n",
            b"-ERR x\r\n",
            b":42\r\n",
            b"$3\r\nabc\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*2\r\n*2\r\n:1\r\n$0\r\n\r\n%1\r\n+k\r\n#f\r\n",
            b"=8\r\ntxt:a\r\nb\r\n",
            b"|1\r\n+a\r\n:1\r\n~2\r\n,2.5\r\n(12\r\n",
            b">1\r\n_\r\n",
        ];
        for reply in replies {
            for cut in 0..reply.len() {
                assert_eq!(
                    check(&reply[..cut], &limits()),
                    Ok(None),
                    "prefix {cut} of {:?}",
                    String::from_utf8_lossy(reply)
                );
            }
            let whole = one(reply);
            // Fed one byte at a time into a growing buffer, as a socket may deliver it.
            let mut buf = Vec::new();
            let mut decoded = None;
            for &byte in *reply {
                assert!(decoded.is_none(), "decoded before the last byte");
                buf.push(byte);
                decoded = decode(&buf, &limits()).expect("valid");
            }
            assert_eq!(decoded, Some((whole, reply.len())));
        }
    }

    #[test]
    fn pipelined_replies_decode_one_at_a_time() {
        let buf = b"+OK\r\n:1\r\n$1\r\nx";
        let (first, len) = decode(buf, &limits()).expect("valid").expect("complete");
        assert_eq!((first, len), (Frame::Simple("OK".into()), 5));
        let (second, len2) = decode(&buf[len..], &limits())
            .expect("valid")
            .expect("complete");
        assert_eq!((second, len2), (Frame::Integer(1), 4));
        assert_eq!(decode(&buf[len + len2..], &limits()), Ok(None));
    }

    #[test]
    fn refuses_malformed_input() {
        let bad: &[&[u8]] = &[
            b"?what\r\n",
            b":12x\r\n",
            b":\r\n",
            b"$-2\r\n",
            b"$abc\r\n",
            b"$3\r\nabcd\r\n",
            b"*-3\r\n",
            b"%-1\r\n",
            b"#x\r\n",
            b"_x\r\n",
            b"(1.5\r\n",
            b"=3\r\ntxt\r\n",
            b"+OK\rX",
            b"$?\r\n",
            b"*?\r\n",
        ];
        for input in bad {
            assert!(
                check(input, &limits()).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn caps_lengths_before_allocating_or_waiting() {
        let small = Limits {
            max_bulk: 10,
            max_elements: 3,
            max_depth: 2,
            max_line: 8,
            max_frame: 1024,
        };
        // The header alone is refused: no need to wait for 11 bytes that may never come.
        assert!(matches!(
            check(b"$11\r\n", &small),
            Err(DecodeError::TooLarge { len: 11, .. })
        ));
        assert!(check(b"$10\r\n", &small).expect("within limits").is_none());
        assert!(matches!(
            check(b"*4\r\n", &small),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            check(b"%4\r\n", &small),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            check(b"$99999999999999999999999\r\n", &limits()),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            check(b"+123456789", &small),
            Err(DecodeError::TooLarge { what: "line", .. })
        ));
        assert!(check(b"+12345678", &small).expect("short").is_none());
        assert_eq!(
            check(b"*1\r\n*1\r\n*1\r\n:1\r\n", &small),
            Err(DecodeError::TooDeep(2))
        );
        assert!(check(b"*1\r\n*1\r\n:1\r\n", &small)
            .expect("depth 2 is allowed")
            .is_some());
        // Deep nesting far beyond the cap fails cleanly instead of overflowing the stack.
        let deep = b"*1\r\n".repeat(1_000_000);
        assert!(matches!(
            check(&deep, &limits()),
            Err(DecodeError::TooDeep(_))
        ));
    }

    #[test]
    fn errors_read_like_redis_cli_protocol_errors() {
        assert_eq!(
            check(b"|x\r\n", &limits()).expect_err("bad").to_string(),
            "Protocol error, invalid multibulk length: \"x\""
        );
        assert_eq!(
            check(b"?\r\n", &limits()).expect_err("bad").to_string(),
            "Protocol error, got \"?\" as reply type byte"
        );
        assert_eq!(
            check(b"\x01\r\n", &limits()).expect_err("bad").to_string(),
            "Protocol error, got \"\\x01\" as reply type byte"
        );
    }
}
