//! How replies are printed: byte for byte as redis-cli prints them, so that people and
//! scripts that know redis-cli read Turnstile's shell without surprises.
//!
//! Two modes, chosen as redis-cli chooses them: [`Output::Standard`] (type annotations,
//! quoted strings, numbered and indented aggregates) when stdout is a terminal, and
//! [`Output::Raw`] (bare values, one per line) when it is not, so that
//! `TOKEN=$(turnstile cli ACQUIRE k)` captures just the token. `--raw` and `--no-raw`
//! override the choice.

use crate::resp::Frame;

/// The printing mode (redis-cli's `OUTPUT_STANDARD` and `OUTPUT_RAW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Standard,
    Raw,
}

/// A reply as it is printed, with its final newline.
pub(crate) fn format_reply(frame: &Frame, output: Output) -> Vec<u8> {
    let mut out = Vec::new();
    match output {
        Output::Standard => tty(frame, "", &mut out),
        Output::Raw => {
            raw(frame, &mut out);
            out.push(b'\n');
        }
    }
    out
}

/// Quotes bytes as redis-cli (`sdscatrepr`) does: printable ASCII as is, `"` and `\`
/// escaped, the usual control characters as `\n`, `\r`, `\t`, `\a`, `\b`, and every
/// other byte as `\xHH`, so any binary key prints on one line and can be typed back in.
pub(crate) fn repr(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'"');
    for &byte in bytes {
        match byte {
            b'\\' | b'"' => out.extend_from_slice(&[b'\\', byte]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(byte),
            _ => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
        }
    }
    out.push(b'"');
    out
}

/// redis-cli's `cliFormatReplyTTY`. `prefix` is the indentation of the lines after the
/// first: the caller has already written the element's number on the first line.
fn tty(frame: &Frame, prefix: &str, out: &mut Vec<u8>) {
    match frame {
        Frame::Simple(text) => line(out, text.as_bytes()),
        Frame::Error(text) => line(out, format!("(error) {text}").as_bytes()),
        Frame::Integer(n) => line(out, format!("(integer) {n}").as_bytes()),
        Frame::Double(text) => line(out, format!("(double) {text}").as_bytes()),
        Frame::BigNumber(text) => line(out, format!("(big number) {text}").as_bytes()),
        Frame::Boolean(true) => line(out, b"(true)"),
        Frame::Boolean(false) => line(out, b"(false)"),
        Frame::Null => line(out, b"(nil)"),
        Frame::Bulk(bytes) => line(out, &repr(bytes)),
        // Verbatim strings are text meant to be shown as they are (INFO under RESP3).
        Frame::Verbatim { text, .. } => line(out, text),
        Frame::Array(items) => list(items, "(empty array)", ')', prefix, out),
        Frame::Set(items) => list(items, "(empty set)", '~', prefix, out),
        Frame::Push(items) => list(items, "(empty push)", ')', prefix, out),
        Frame::Map(pairs) => map(pairs, "(empty hash)", '#', prefix, out),
        // redis-cli cannot show attributes; we show them, marked, above the value they
        // describe, since the shell is where people go to see what the server says.
        Frame::Attribute { attributes, value } => {
            const LABEL: &str = "(attributes) ";
            out.extend_from_slice(LABEL.as_bytes());
            let inner = format!("{prefix}{}", " ".repeat(LABEL.len()));
            map(attributes, "(empty hash)", '#', &inner, out);
            out.extend_from_slice(prefix.as_bytes());
            tty(value, prefix, out);
        }
    }
}

fn line(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// How wide the numbers of `count` elements are, so that `9)` and `10)` line up.
fn index_width(count: usize) -> usize {
    count.to_string().len()
}

fn list(items: &[Frame], empty: &str, sep: char, prefix: &str, out: &mut Vec<u8>) {
    if items.is_empty() {
        return line(out, empty.as_bytes());
    }
    let width = index_width(items.len());
    // Nested elements line up under the first character after `N) `.
    let inner = format!("{prefix}{}", " ".repeat(width + 2));
    for (i, item) in items.iter().enumerate() {
        let indent = if i == 0 { "" } else { prefix };
        out.extend_from_slice(format!("{indent}{:>width$}{sep} ", i + 1).as_bytes());
        tty(item, &inner, out);
    }
}

fn map(pairs: &[(Frame, Frame)], empty: &str, sep: char, prefix: &str, out: &mut Vec<u8>) {
    if pairs.is_empty() {
        return line(out, empty.as_bytes());
    }
    let width = index_width(pairs.len());
    let inner = format!("{prefix}{}", " ".repeat(width + 2));
    for (i, (key, value)) in pairs.iter().enumerate() {
        let indent = if i == 0 { "" } else { prefix };
        out.extend_from_slice(format!("{indent}{:>width$}{sep} ", i + 1).as_bytes());
        tty(key, &inner, out);
        out.pop(); // the key's newline: its value follows on the same line
        out.extend_from_slice(b" => ");
        // A non-empty aggregate value starts on its own line, as in redis-cli 7.
        if is_nonempty_aggregate(value) {
            out.push(b'\n');
            out.extend_from_slice(inner.as_bytes());
        }
        tty(value, &inner, out);
    }
}

fn is_nonempty_aggregate(frame: &Frame) -> bool {
    match frame {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => !items.is_empty(),
        Frame::Map(pairs) => !pairs.is_empty(),
        Frame::Attribute { value, .. } => is_nonempty_aggregate(value),
        _ => false,
    }
}

/// redis-cli's `cliFormatReplyRaw`: values without annotations or quotes, aggregate
/// elements one per line, map pairs as `key value`. Nil prints as an empty line, and an
/// error keeps the extra newline that redis-cli gives it.
fn raw(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Null => {}
        Frame::Error(text) => line(out, text.as_bytes()),
        Frame::Simple(text) | Frame::Double(text) | Frame::BigNumber(text) => {
            out.extend_from_slice(text.as_bytes())
        }
        Frame::Bulk(bytes) => out.extend_from_slice(bytes),
        Frame::Verbatim { text, .. } => out.extend_from_slice(text),
        Frame::Integer(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Frame::Boolean(true) => out.extend_from_slice(b"(true)"),
        Frame::Boolean(false) => out.extend_from_slice(b"(false)"),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw(item, out);
            }
        }
        Frame::Map(pairs) => {
            for (i, (key, value)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                raw(key, out);
                out.push(b' ');
                raw(value, out);
            }
        }
        Frame::Attribute { value, .. } => raw(value, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(s.as_bytes().to_vec())
    }

    fn standard(frame: &Frame) -> String {
        String::from_utf8(format_reply(frame, Output::Standard)).expect("utf-8")
    }

    fn raw_text(frame: &Frame) -> String {
        String::from_utf8(format_reply(frame, Output::Raw)).expect("utf-8")
    }

    #[test]
    fn scalars_print_with_redis_cli_annotations() {
        assert_eq!(standard(&Frame::Integer(7)), "(integer) 7\n");
        assert_eq!(standard(&Frame::Null), "(nil)\n");
        assert_eq!(
            standard(&Frame::Error("DEADLOCK waiting would close a cycle".into())),
            "(error) DEADLOCK waiting would close a cycle\n"
        );
        assert_eq!(standard(&Frame::Simple("OK".into())), "OK\n");
        assert_eq!(standard(&bulk("PONG")), "\"PONG\"\n");
        assert_eq!(standard(&Frame::Double("1.5".into())), "(double) 1.5\n");
        assert_eq!(
            standard(&Frame::BigNumber("123".into())),
            "(big number) 123\n"
        );
        assert_eq!(standard(&Frame::Boolean(true)), "(true)\n");
        assert_eq!(standard(&Frame::Boolean(false)), "(false)\n");
        let verbatim = Frame::Verbatim {
            format: "txt".into(),
            text: b"# Server\nversion:1".to_vec(),
        };
        assert_eq!(standard(&verbatim), "# Server\nversion:1\n");
    }

    #[test]
    fn bulk_strings_are_quoted_with_redis_cli_escapes() {
        assert_eq!(
            repr(b"a\x00\x01\xff\xc3\xa9\t\\z"),
            br#""a\x00\x01\xff\xc3\xa9\t\\z""#
        );
        assert_eq!(repr(b"a\"b\nc\r\x07\x08 ~"), br#""a\"b\nc\r\a\b ~""#);
        assert_eq!(repr(b""), b"\"\"");
    }

    /// The shape redis-cli 7.0 prints for `EVAL "return {1,{2,'x',{3,{},'z'}},'y',false}" 0`.
    #[test]
    fn nested_arrays_are_numbered_and_aligned() {
        let reply = Frame::Array(vec![
            Frame::Integer(1),
            Frame::Array(vec![
                Frame::Integer(2),
                bulk("x"),
                Frame::Array(vec![Frame::Integer(3), Frame::Array(vec![]), bulk("z")]),
            ]),
            bulk("y"),
            Frame::Null,
        ]);
        assert_eq!(
            standard(&reply),
            "1) (integer) 1\n\
             2) 1) (integer) 2\n   \
                2) \"x\"\n   \
                3) 1) (integer) 3\n      \
                   2) (empty array)\n      \
                   3) \"z\"\n\
             3) \"y\"\n\
             4) (nil)\n"
        );
        assert_eq!(raw_text(&reply), "1\n2\nx\n3\n\nz\ny\n\n");
    }

    #[test]
    fn wide_indexes_are_right_aligned() {
        let mut items: Vec<Frame> = (1..=10).map(Frame::Integer).collect();
        items.push(Frame::Array(vec![Frame::Integer(1), Frame::Integer(2)]));
        let text = standard(&Frame::Array(items));
        assert!(text.starts_with(" 1) (integer) 1\n 2) (integer) 2\n"));
        assert!(text.ends_with("10) (integer) 10\n11) 1) (integer) 1\n    2) (integer) 2\n"));
    }

    #[test]
    fn resp3_maps_and_sets_print_like_redis_cli() {
        let hello = Frame::Map(vec![
            (bulk("server"), bulk("turnstile")),
            (bulk("proto"), Frame::Integer(3)),
            (bulk("modules"), Frame::Array(vec![])),
        ]);
        assert_eq!(
            standard(&hello),
            "1# \"server\" => \"turnstile\"\n\
             2# \"proto\" => (integer) 3\n\
             3# \"modules\" => (empty array)\n"
        );
        assert_eq!(raw_text(&hello), "server turnstile\nproto 3\nmodules \n");
        // A non-empty aggregate value goes on its own line (redis-cli 7.0, checked by hand).
        let nested = Frame::Map(vec![
            (
                bulk("a"),
                Frame::Array(vec![Frame::Integer(1), Frame::Integer(2)]),
            ),
            (bulk("b"), Frame::Array(vec![])),
        ]);
        assert_eq!(
            standard(&nested),
            "1# \"a\" => \n   1) (integer) 1\n   2) (integer) 2\n2# \"b\" => (empty array)\n"
        );
        let set = Frame::Set(vec![Frame::Integer(0), Frame::Integer(1)]);
        assert_eq!(standard(&set), "1~ (integer) 0\n2~ (integer) 1\n");
        assert_eq!(standard(&Frame::Map(vec![])), "(empty hash)\n");
        assert_eq!(standard(&Frame::Set(vec![])), "(empty set)\n");
    }

    #[test]
    fn raw_output_is_bare_values() {
        assert_eq!(raw_text(&Frame::Integer(7)), "7\n");
        assert_eq!(raw_text(&Frame::Null), "\n");
        assert_eq!(raw_text(&bulk("a\"b")), "a\"b\n");
        assert_eq!(raw_text(&Frame::Simple("OK".into())), "OK\n");
        // redis-cli 7.0 prints an error and then an empty line when the output is raw.
        assert_eq!(raw_text(&Frame::Error("ERR x".into())), "ERR x\n\n");
        assert_eq!(raw_text(&Frame::Boolean(true)), "(true)\n");
        assert_eq!(raw_text(&Frame::Double("3.141".into())), "3.141\n");
        assert_eq!(raw_text(&Frame::Array(vec![])), "\n");
    }

    #[test]
    fn attributes_are_shown_above_their_value() {
        let reply = Frame::Array(vec![Frame::Attribute {
            attributes: vec![(bulk("ttl"), Frame::Integer(5))],
            value: Box::new(Frame::Integer(1)),
        }]);
        assert_eq!(
            standard(&reply),
            "1) (attributes) 1# \"ttl\" => (integer) 5\n   (integer) 1\n"
        );
        assert_eq!(raw_text(&reply), "1\n");
    }
}
