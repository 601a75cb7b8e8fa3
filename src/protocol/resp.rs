//! The text-mode request decoder: RESP arrays of bulk strings, and inline commands typed
//! by hand (`ACQUIRE k TTL 500`), as Redis accepts them.
//!
//! Decoding is one pass over the buffer that records argument ranges (no copies, no
//! allocation once the range vector has grown) and checks every length against
//! [`FrameLimits`] before trusting it, so a hostile length can never make the server
//! allocate or wait for more than the configured maximum.

use std::ops::Range;

/// Limits on what one request may be. A request beyond them cannot be framed safely: the
/// server replies `-ERR Protocol error: ...` and closes the connection, as Redis does.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// Largest bulk string (one argument) in bytes.
    pub max_bulk: usize,
    /// Most arguments in one command (the command name included).
    pub max_args: usize,
    /// Longest inline command line in bytes.
    pub max_inline: usize,
    /// Largest whole request in bytes.
    pub max_request: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_bulk: 512 * 1024,
            max_args: 1024,
            max_inline: 64 * 1024,
            max_request: 1024 * 1024,
        }
    }
}

/// Input that cannot be framed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A `*` or `$` header that is not a number.
    #[error("invalid {0} length")]
    BadLength(&'static str),
    /// An array element that is not a bulk string.
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A bulk string not followed by CRLF.
    #[error("bulk string not terminated by CRLF")]
    MissingCrlf,
    /// A length beyond the configured maximum.
    #[error("{what} too large ({len} > {max})")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its declared size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An inline command with an unbalanced quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// The outcome of one decode attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command of `len` bytes; its arguments are in the range vector. An empty
    /// command (a blank inline line, `*0`) has no arguments and is skipped by the caller.
    Command {
        /// Bytes consumed.
        len: usize,
    },
    /// More bytes are needed.
    Incomplete,
}

/// Decodes one command from the front of `buf`. Argument ranges index `buf` (for inline
/// commands with quotes or escapes the unescaped bytes are appended to `scratch` and the
/// ranges index `buf.len()..` as offsets into `scratch` shifted by `buf.len()`).
pub fn parse_command(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    scratch: &mut Vec<u8>,
    limits: &FrameLimits,
) -> Result<Parsed, ProtocolError> {
    args.clear();
    scratch.clear();
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'*') => parse_array(buf, args, limits),
        Some(_) => parse_inline(buf, args, scratch, limits),
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn parse_array(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    limits: &FrameLimits,
) -> Result<Parsed, ProtocolError> {
    let Some((count, mut pos)) = header(buf, 1, "multibulk")? else {
        return Ok(Parsed::Incomplete);
    };
    if count <= 0 {
        return Ok(Parsed::Command { len: pos });
    }
    let count = count as usize;
    if count > limits.max_args {
        return Err(ProtocolError::TooLarge {
            what: "multibulk length",
            len: count,
            max: limits.max_args,
        });
    }
    for _ in 0..count {
        let Some(&sigil) = buf.get(pos) else {
            return request_incomplete(buf.len(), limits);
        };
        if sigil != b'$' {
            return Err(ProtocolError::ExpectedBulk(sigil as char));
        }
        let Some((len, start)) = header(buf, pos + 1, "bulk")? else {
            return request_incomplete(buf.len(), limits);
        };
        if len < 0 {
            return Err(ProtocolError::BadLength("bulk"));
        }
        let len = len as usize;
        if len > limits.max_bulk {
            return Err(ProtocolError::TooLarge {
                what: "bulk length",
                len,
                max: limits.max_bulk,
            });
        }
        let stop = start + len;
        if stop > limits.max_request {
            return Err(ProtocolError::TooLarge {
                what: "request",
                len: stop,
                max: limits.max_request,
            });
        }
        match buf.get(stop..stop + 2) {
            None => return Ok(Parsed::Incomplete),
            Some(b"\r\n") => {}
            Some(_) => return Err(ProtocolError::MissingCrlf),
        }
        args.push(start..stop);
        pos = stop + 2;
    }
    Ok(Parsed::Command { len: pos })
}

/// Parses the decimal number after a `*` or `$` sigil, starting at `pos`, through its line
/// end, in one pass. `Ok(None)`: the line is not complete yet. At most 18 digits, so a
/// hostile header is refused after a few bytes instead of being buffered.
#[inline]
fn header(
    buf: &[u8],
    mut pos: usize,
    what: &'static str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let negative = buf.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let mut value: i64 = 0;
    let mut digits = 0;
    loop {
        let Some(&c) = buf.get(pos) else {
            return Ok(None);
        };
        match c {
            b'0'..=b'9' if digits < 18 => {
                value = value * 10 + i64::from(c - b'0');
                digits += 1;
                pos += 1;
            }
            b'\r' => match buf.get(pos + 1) {
                None => return Ok(None),
                Some(b'\n') => {
                    pos += 2;
                    break;
                }
                Some(_) => return Err(ProtocolError::BadLength(what)),
            },
            b'\n' => {
                pos += 1;
                break;
            }
            _ => return Err(ProtocolError::BadLength(what)),
        }
    }
    if digits == 0 {
        return Err(ProtocolError::BadLength(what));
    }
    Ok(Some((if negative { -value } else { value }, pos)))
}

fn request_incomplete(have: usize, limits: &FrameLimits) -> Result<Parsed, ProtocolError> {
    if have > limits.max_request {
        return Err(ProtocolError::TooLarge {
            what: "request",
            len: have,
            max: limits.max_request,
        });
    }
    Ok(Parsed::Incomplete)
}

fn incomplete_or_too_long(
    have: usize,
    max: usize,
    what: &'static str,
) -> Result<Parsed, ProtocolError> {
    if have > max {
        return Err(ProtocolError::TooLarge {
            what,
            len: have,
            max,
        });
    }
    Ok(Parsed::Incomplete)
}

/// An inline command: words separated by spaces, with "double" (escapes like `\n`, `\x41`)
/// and 'single' quotes, as redis-cli and Redis's own inline parser accept.
fn parse_inline(
    buf: &[u8],
    args: &mut Vec<Range<usize>>,
    scratch: &mut Vec<u8>,
    limits: &FrameLimits,
) -> Result<Parsed, ProtocolError> {
    let Some(nl) = memchr(b'\n', buf) else {
        return incomplete_or_too_long(buf.len(), limits.max_inline, "inline request");
    };
    if nl > limits.max_inline {
        return Err(ProtocolError::TooLarge {
            what: "inline request",
            len: nl,
            max: limits.max_inline,
        });
    }
    let line = if nl > 0 && buf[nl - 1] == b'\r' {
        &buf[..nl - 1]
    } else {
        &buf[..nl]
    };
    let base = buf.len();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        if args.len() >= limits.max_args {
            return Err(ProtocolError::TooLarge {
                what: "multibulk length",
                len: args.len() + 1,
                max: limits.max_args,
            });
        }
        match line[i] {
            q @ (b'"' | b'\'') => {
                let start = scratch.len();
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    i += 1;
                    if c == q {
                        // A closing quote must end the word.
                        if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        break;
                    }
                    if c == b'\\' && q == b'"' {
                        let Some(&e) = line.get(i) else {
                            return Err(ProtocolError::UnbalancedQuotes);
                        };
                        i += 1;
                        let ch = match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            b'x' if line.len() >= i + 2
                                && line[i].is_ascii_hexdigit()
                                && line[i + 1].is_ascii_hexdigit() =>
                            {
                                let v = hex(line[i]) * 16 + hex(line[i + 1]);
                                i += 2;
                                v
                            }
                            other => other,
                        };
                        scratch.push(ch);
                    } else if c == b'\\' && q == b'\'' && line.get(i) == Some(&b'\'') {
                        scratch.push(b'\'');
                        i += 1;
                    } else {
                        scratch.push(c);
                    }
                }
                args.push(base + start..base + scratch.len());
            }
            _ => {
                let start = i;
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    i += 1;
                }
                args.push(start..i);
            }
        }
    }
    Ok(Parsed::Command { len: nl + 1 })
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// The bytes of argument `r`, resolving inline-scratch ranges (see [`parse_command`]).
#[inline]
pub fn arg<'a>(buf: &'a [u8], scratch: &'a [u8], r: &Range<usize>) -> &'a [u8] {
    if r.start >= buf.len() {
        &scratch[r.start - buf.len()..r.end - buf.len()]
    } else {
        &buf[r.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<(Parsed, Vec<Vec<u8>>), ProtocolError> {
        let mut args = Vec::new();
        let mut scratch = Vec::new();
        let p = parse_command(input, &mut args, &mut scratch, &FrameLimits::default())?;
        let words = args
            .iter()
            .map(|r| arg(input, &scratch, r).to_vec())
            .collect();
        Ok((p, words))
    }

    #[test]
    fn resp_array() {
        let (p, w) = parse(b"*2\r\n$7\r\nRELEASE\r\n$1\r\nk\r\n").unwrap();
        assert_eq!(p, Parsed::Command { len: 24 });
        assert_eq!(w, vec![b"RELEASE".to_vec(), b"k".to_vec()]);
    }

    #[test]
    fn resp_incomplete_at_every_cut() {
        let full = b"*3\r\n$7\r\nACQUIRE\r\n$3\r\na\x00b\r\n$9\r\nREENTRANT\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                parse(&full[..cut]).unwrap().0,
                Parsed::Incomplete,
                "cut {cut}"
            );
        }
        let (_, w) = parse(full).unwrap();
        assert_eq!(w[1], b"a\x00b".to_vec());
    }

    #[test]
    fn inline_words_and_quotes() {
        let (p, w) = parse(b"ACQUIRE \"a b\\x41\" TTL  500\r\n").unwrap();
        assert_eq!(p, Parsed::Command { len: 28 });
        assert_eq!(
            w,
            vec![
                b"ACQUIRE".to_vec(),
                b"a bA".to_vec(),
                b"TTL".to_vec(),
                b"500".to_vec()
            ]
        );
        assert_eq!(parse(b"PING\n").unwrap().1, vec![b"PING".to_vec()]);
        assert_eq!(
            parse(b"\r\n").unwrap(),
            (Parsed::Command { len: 2 }, vec![])
        );
        assert_eq!(parse(b"GET 'x\n"), Err(ProtocolError::UnbalancedQuotes));
    }

    #[test]
    fn limits_are_enforced_before_reading_the_body() {
        assert!(matches!(
            parse(b"*99999\r\n"),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(b"*1\r\n$999999999\r\n"),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert_eq!(
            parse(b"*1\r\n$-5\r\n"),
            Err(ProtocolError::BadLength("bulk"))
        );
        assert_eq!(parse(b"*x\r\n"), Err(ProtocolError::BadLength("multibulk")));
        assert_eq!(
            parse(b"*1\r\n:5\r\n"),
            Err(ProtocolError::ExpectedBulk(':'))
        );
        let long = vec![b'a'; 70 * 1024];
        assert!(matches!(parse(&long), Err(ProtocolError::TooLarge { .. })));
    }
}
