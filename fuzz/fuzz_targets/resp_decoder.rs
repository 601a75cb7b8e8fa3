//! Fuzzes the text-mode request decoder the way a connection drives it: parse every
//! complete command out of the buffer, advance by the consumed length, stop at Incomplete
//! or at a protocol error. The first two bytes pick the limits (small ones included, so
//! every TooLarge path is reachable). Nothing may panic, consume more than the buffer,
//! consume nothing, or hand out an argument outside the buffer or the scratch space; every
//! command, re-encoded as a RESP array, must parse back to the same arguments; and a
//! command split at any point must be reported Incomplete (or the same error), never
//! misparsed.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use turnstile::protocol::resp::{arg, parse_command, FrameLimits, Parsed};

fn limits(a: u8, b: u8) -> FrameLimits {
    if a & 0x80 == 0 {
        return FrameLimits::default();
    }
    // Small limits: bulk 0..=63, args 0..=15, inline 0..=63, request 0..=255 (from b).
    FrameLimits {
        max_bulk: usize::from(a & 0x3f),
        max_args: usize::from(b & 0x0f),
        max_inline: usize::from((a >> 1) & 0x3f),
        max_request: usize::from(b),
    }
}

fn encode_resp(words: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn words(buf: &[u8], args: &[Range<usize>], scratch: &[u8]) -> Vec<Vec<u8>> {
    args.iter()
        .map(|r| {
            assert!(r.start <= r.end, "inverted range {r:?}");
            if r.start >= buf.len() {
                assert!(
                    r.end - buf.len() <= scratch.len(),
                    "scratch range {r:?} past scratch ({} bytes)",
                    scratch.len()
                );
            } else {
                assert!(r.end <= buf.len(), "range {r:?} straddles the buffer end");
            }
            arg(buf, scratch, r).to_vec()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let limits = limits(*a, *b);
    let mut args = Vec::new();
    let mut scratch = Vec::new();
    let mut buf = rest;
    // Each successful parse consumes at least one byte, so this ends; the bound makes a
    // regression show up as a failure rather than a hang.
    for _ in 0..=rest.len() {
        let len = match parse_command(buf, &mut args, &mut scratch, &limits) {
            Ok(Parsed::Incomplete) => {
                // Bounded buffering: an array header is at most 22 bytes, a bulk may wait
                // for its CRLF just past max_request, an inline line up to max_inline.
                let bound = limits
                    .max_request
                    .saturating_add(2)
                    .max(limits.max_inline)
                    .max(22);
                assert!(
                    buf.len() <= bound,
                    "Incomplete over {} buffered bytes: the connection would buffer forever",
                    buf.len()
                );
                return;
            }
            Err(_) => return,
            Ok(Parsed::Command { len }) => len,
        };
        assert!(len > 0, "a command of zero bytes would loop forever");
        assert!(len <= buf.len(), "consumed {len} of {} bytes", buf.len());
        assert!(args.len() <= limits.max_args, "{} args", args.len());
        let got = words(buf, &args, &scratch);
        if buf[0] == b'*' {
            // The bulks are checked against max_request (their CRLF aside); the array
            // header alone is not, but it is at most 22 bytes.
            let bound = limits.max_request.saturating_add(2).max(22);
            assert!(len <= bound, "request of {len} bytes");
            for w in &got {
                assert!(w.len() <= limits.max_bulk);
            }
        }

        // Every proper prefix of a RESP command is Incomplete or fails like the whole.
        if buf[0] == b'*' && len <= 512 {
            for cut in 0..len {
                let r = parse_command(&buf[..cut], &mut args, &mut scratch, &limits);
                assert!(
                    !matches!(r, Ok(Parsed::Command { .. })),
                    "prefix of {cut} bytes parsed as a command: {r:?}"
                );
            }
        }

        // Re-encoded as RESP, the same arguments come back (with limits that admit it).
        let again = encode_resp(&got);
        let roomy = FrameLimits {
            max_bulk: got.iter().map(Vec::len).max().unwrap_or(0),
            max_args: got.len(),
            max_inline: 0,
            max_request: again.len(),
        };
        match parse_command(&again, &mut args, &mut scratch, &roomy) {
            Ok(Parsed::Command { len }) => assert_eq!(len, again.len()),
            other => panic!("re-encoded {again:?} gave {other:?}"),
        }
        assert_eq!(words(&again, &args, &scratch), got, "round trip");

        buf = &buf[len..];
    }
    panic!("more commands than bytes");
});
