//! Splits a typed line into arguments with redis-cli's quoting rules (`sdssplitargs`), so
//! that what people already type into redis-cli means the same here.
//!
//! - Words are separated by spaces, tabs and newlines.
//! - `"double quotes"` allow spaces and the escapes `\n \r \t \b \a \\ \"` and `\xHH`
//!   for any byte, so binary keys can be typed (and are printed back the same way).
//! - `'single quotes'` take everything literally except `\'`.
//! - A closing quote must end the word: `"a"b` is refused, as in redis-cli.

/// The line cannot be split: unbalanced quotes, or a closing quote followed by more text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid argument(s)")]
pub(crate) struct SplitError;

/// The arguments of `line`, as bytes (a `\xHH` escape may produce any byte).
pub(crate) fn split_args(line: &str) -> Result<Vec<Vec<u8>>, SplitError> {
    let bytes = line.as_bytes();
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos == bytes.len() {
            return Ok(args);
        }
        let (arg, next) = word(bytes, pos)?;
        args.push(arg);
        pos = next;
    }
}

/// Reads one argument starting at `pos`; returns it and the position after it.
fn word(bytes: &[u8], mut pos: usize) -> Result<(Vec<u8>, usize), SplitError> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Double,
        Single,
    }
    let at = |i: usize| bytes.get(i).copied();
    // A closing quote must be followed by a space or the end of the line.
    let ends_word = |i: usize| at(i).map_or(true, |b| b.is_ascii_whitespace());
    let mut quote = Quote::None;
    let mut current = Vec::new();
    loop {
        let Some(byte) = at(pos) else {
            return match quote {
                Quote::None => Ok((current, pos)),
                _ => Err(SplitError),
            };
        };
        match quote {
            Quote::Double => match byte {
                b'\\'
                    if at(pos + 1) == Some(b'x')
                        && at(pos + 2).is_some_and(|b| b.is_ascii_hexdigit())
                        && at(pos + 3).is_some_and(|b| b.is_ascii_hexdigit()) =>
                {
                    current.push(hex(bytes[pos + 2]) * 16 + hex(bytes[pos + 3]));
                    pos += 3;
                }
                b'\\' if at(pos + 1).is_some() => {
                    pos += 1;
                    current.push(match bytes[pos] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                }
                b'"' => {
                    if !ends_word(pos + 1) {
                        return Err(SplitError);
                    }
                    return Ok((current, pos + 1));
                }
                _ => current.push(byte),
            },
            Quote::Single => match byte {
                b'\\' if at(pos + 1) == Some(b'\'') => {
                    pos += 1;
                    current.push(b'\'');
                }
                b'\'' => {
                    if !ends_word(pos + 1) {
                        return Err(SplitError);
                    }
                    return Ok((current, pos + 1));
                }
                _ => current.push(byte),
            },
            Quote::None => match byte {
                b' ' | b'\n' | b'\r' | b'\t' => return Ok((current, pos)),
                b'"' => quote = Quote::Double,
                b'\'' => quote = Quote::Single,
                _ => current.push(byte),
            },
        }
        pos += 1;
    }
}

fn hex(digit: u8) -> u8 {
    let value = char::from(digit)
        .to_digit(16)
        .expect("the caller checked is_ascii_hexdigit");
    value as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<String> {
        split_args(line)
            .expect("valid line")
            .into_iter()
            .map(|arg| String::from_utf8_lossy(&arg).into_owned())
            .collect()
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(
            split("  ACQUIRE  k\tTTL 5000 "),
            ["ACQUIRE", "k", "TTL", "5000"]
        );
        assert!(split("   ").is_empty());
        assert!(split("").is_empty());
    }

    #[test]
    fn double_quotes_take_escapes() {
        assert_eq!(
            split(r#"SET "a b" "x\"y\\z\n""#),
            ["SET", "a b", "x\"y\\z\n"]
        );
        assert_eq!(
            split_args(r#""\x00\xFF\x4a" "\q""#).expect("valid"),
            [b"\x00\xff\x4a".to_vec(), b"q".to_vec()]
        );
        // An incomplete \x escape is taken literally, as redis-cli does.
        assert_eq!(split(r#""\x4""#), ["x4"]);
        assert_eq!(split(r#""""#), [""]);
        // A quote may open in the middle of a word.
        assert_eq!(split(r#"a"b c""#), ["ab c"]);
    }

    #[test]
    fn single_quotes_are_literal_except_for_escaped_quotes() {
        assert_eq!(split(r"'a \n b' 'it\'s'"), [r"a \n b", "it's"]);
    }

    #[test]
    fn refuses_what_redis_cli_refuses() {
        assert_eq!(split_args(r#""unterminated"#), Err(SplitError));
        assert_eq!(split_args("'unterminated"), Err(SplitError));
        assert_eq!(split_args(r#""a"b"#), Err(SplitError));
        assert_eq!(split_args("'a'b"), Err(SplitError));
        assert_eq!(SplitError.to_string(), "Invalid argument(s)");
    }
}
