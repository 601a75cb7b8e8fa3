//! CI-speed stand-ins for the fuzz targets in `fuzz/` (which need `cargo fuzz` and long
//! runs): the text decoder over arbitrary bytes, driven the way a connection drives it,
//! and RESP round trips. Also writes the fuzz targets' seed corpora:
//!
//! ```sh
//! cargo test --test fuzz_smoke -- --ignored write_fuzz_seeds
//! ```

use std::ops::Range;
use std::path::Path;

use proptest::prelude::*;
use turnstile::durable::command::{Command, Entry, Fired, SessionKind};
use turnstile::durable::image_codec::{self, State};
use turnstile::engine::{AcquireRequest, Key, Limits, LockTable, Mode, RequestId, SessionId};
use turnstile::protocol::resp::{arg, parse_command, FrameLimits, Parsed};
use turnstile::wal::format::encode_entry;

fn small_limits(bulk: usize, args: usize, inline: usize, request: usize) -> FrameLimits {
    FrameLimits {
        max_bulk: bulk,
        max_args: args,
        max_inline: inline,
        max_request: request,
    }
}

fn words(buf: &[u8], args: &[Range<usize>], scratch: &[u8]) -> Vec<Vec<u8>> {
    args.iter().map(|r| arg(buf, scratch, r).to_vec()).collect()
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

/// Parses commands off `buf` until Incomplete or an error, as the connection loop does,
/// checking progress and bounds; returns the commands' arguments.
fn drive(buf: &[u8], limits: &FrameLimits) -> Vec<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut scratch = Vec::new();
    let mut rest = buf;
    let mut out = Vec::new();
    for _ in 0..=buf.len() {
        match parse_command(rest, &mut args, &mut scratch, limits) {
            Ok(Parsed::Command { len }) => {
                assert!(
                    len > 0 && len <= rest.len(),
                    "consumed {len} of {}",
                    rest.len()
                );
                assert!(args.len() <= limits.max_args);
                out.push(words(rest, &args, &scratch));
                rest = &rest[len..];
            }
            Ok(Parsed::Incomplete) | Err(_) => return out,
        }
    }
    panic!("more commands than bytes");
}

fn bytes_like_requests() -> impl Strategy<Value = Vec<u8>> {
    // Mostly protocol-shaped bytes (sigils, digits, CRLF, quotes), some plain noise.
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b"-".to_vec()),
        (0u32..40).prop_map(|n| n.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_command_never_panics_on_bytes(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..200), bytes_like_requests()],
        bulk in 0usize..40,
        nargs in 0usize..8,
        inline in 0usize..40,
        request in 0usize..120,
        small in any::<bool>(),
    ) {
        let limits = if small {
            small_limits(bulk, nargs, inline, request)
        } else {
            FrameLimits::default()
        };
        drive(&bytes, &limits);
    }

    #[test]
    fn resp_arrays_round_trip(
        cmds in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..6), 1..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire: Vec<u8> = cmds.iter().flat_map(|c| encode_resp(c)).collect();
        let limits = FrameLimits::default();
        prop_assert_eq!(&drive(&wire, &limits), &cmds);
        // Cut anywhere, only the whole commands before the cut come out.
        let at = cut.index(wire.len() + 1);
        let got = drive(&wire[..at], &limits);
        prop_assert_eq!(&got[..], &cmds[..got.len()]);
    }
}

// ----- seed corpora for fuzz/ -----

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

/// Deterministic filler for the targets whose input is read through `arbitrary`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn seed_resp(dir: &Path) {
    let default = [0u8, 0u8];
    let small = [0x80 | 0x3f, 0xff];
    let cases: [(&str, &[u8], &[u8]); 6] = [
        (
            "array",
            &default,
            b"*2\r\n$7\r\nRELEASE\r\n$1\r\nk\r\n" as &[u8],
        ),
        (
            "inline",
            &default,
            b"ACQUIRE \"a b\\x41\" TTL  500\r\nPING\n'it\\'s' x\r\n",
        ),
        (
            "pipeline",
            &default,
            b"*3\r\n$7\r\nACQUIRE\r\n$3\r\na\x00b\r\n$9\r\nREENTRANT\r\n*1\r\n$4\r\nPING\r\n*0\r\n*-1\r\n\r\nINFO\r\n",
        ),
        (
            "small-limits",
            &small,
            b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\nPING\n*9\r\n",
        ),
        ("partial", &default, b"*2\r\n$6\r\nRENEW\r\n$3\r\nke"),
        (
            "bad",
            &small,
            b"*1\r\n$-5\r\n*x\r\n*1\r\n:5\r\nGET \"x\n",
        ),
    ];
    for (name, limits, body) in cases {
        write(dir, name, &[limits, body].concat());
    }
}

fn entry_seeds() -> Vec<Vec<u8>> {
    let req = AcquireRequest {
        id: RequestId(7),
        mode: Mode::Semaphore {
            limit: 3,
            permits: 2,
        },
        reentrant: true,
        ttl_ms: 30_000,
        wait_ms: Some(500),
        policy: Default::default(),
    };
    let commands = [
        Command::Start {
            epoch: 2,
            shards: 16,
        },
        Command::OpenSession {
            session: SessionId(3),
            kind: SessionKind::Binary {
                secret: [0xab; 16],
                timeout_ms: 10_000,
                user: None,
            },
        },
        Command::CloseSession {
            session: SessionId(3),
        },
        Command::Acquire {
            session: SessionId(3),
            key: b"orders/42",
            req,
            value: None,
        },
        Command::Release {
            session: SessionId(3),
            key: b"orders/42",
        },
        Command::Cancel {
            session: SessionId(4),
            key: b"k",
        },
        Command::Tick {
            fired: vec![
                Fired::Expired {
                    session: SessionId(3),
                    key: Key::from("a"),
                },
                Fired::TimedOut {
                    session: SessionId(5),
                    key: Key::from("b"),
                },
            ],
        },
        // A binary session of a named user (kind 2).
        Command::OpenSession {
            session: SessionId(4),
            kind: SessionKind::Binary {
                secret: [0xcd; 16],
                timeout_ms: 10_000,
                user: Some("alice".into()),
            },
        },
        // The ADMIN commands' records.
        Command::ForceRelease {
            key: b"orders/42",
            user: "ops",
            holds: vec![(SessionId(3), turnstile::engine::FencingToken(9))],
        },
        Command::EndSession {
            session: SessionId(4),
            user: "ops",
        },
        Command::SetLimit {
            limit: turnstile::engine::LimitKind::HoldsPerSession,
            value: 2,
            user: "ops",
        },
    ];
    commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| {
            Entry {
                now: 1000 + i as u64,
                command,
            }
            .to_vec()
        })
        .collect()
}

fn image_seed() -> Vec<u8> {
    let table = LockTable::new(2, Limits::default(), 0);
    let (a, b) = (table.open_session(), table.open_session());
    let req = |id, mode, wait_ms| AcquireRequest {
        id: RequestId(id),
        mode,
        reentrant: false,
        ttl_ms: 5000,
        wait_ms,
        policy: Default::default(),
    };
    let sem = Mode::Semaphore {
        limit: 2,
        permits: 1,
    };
    table.acquire(a, b"x", &req(1, Mode::Exclusive, None), 0);
    table.acquire(b, b"x", &req(2, Mode::Shared, Some(900)), 1);
    table.acquire(b, b"y", &req(3, Mode::Exclusive, None), 2);
    table.acquire(a, b"s", &req(4, sem, None), 3);
    let mut sessions = std::collections::BTreeMap::new();
    sessions.insert(a, SessionKind::Text);
    sessions.insert(
        b,
        SessionKind::Binary {
            secret: [7; 16],
            timeout_ms: 3000,
            user: Some("alice".into()),
        },
    );
    image_codec::encode(&State {
        epoch: 1,
        now: 3,
        next_request: 5,
        sessions,
        limits: [(turnstile::engine::LimitKind::Keys, 100)]
            .into_iter()
            .collect(),
        table: table.export(),
    })
}

fn seed_wal(dir: &Path) {
    for (i, e) in entry_seeds().into_iter().enumerate() {
        write(dir, &format!("entry-{i}"), &[&[0u8][..], &e].concat());
    }
    write(dir, "image", &[&[1u8][..], &image_seed()].concat());
    // Selector 3 (mode by sel / 4): raw frames after a header at index 1.
    let mut frames = Vec::new();
    for (i, e) in entry_seeds().into_iter().enumerate() {
        encode_entry(&mut frames, 1 + i as u64, &e);
    }
    for (mode, sel) in [("tolerate", 3u8), ("absolute", 7), ("repair", 11)] {
        write(
            dir,
            &format!("segment-{mode}"),
            &[&[sel][..], &frames].concat(),
        );
    }
    let torn = &frames[..frames.len() - 3];
    write(dir, "segment-torn", &[&[3u8][..], torn].concat());
    // Selector 2: plans read through `arbitrary`.
    for (i, len) in [64usize, 256, 1024].into_iter().enumerate() {
        write(
            dir,
            &format!("plan-{i}"),
            &[&[2u8][..], &noise(i as u64 + 1, len)].concat(),
        );
    }
}

fn seed_engine(dir: &Path) {
    for (i, len) in [32usize, 128, 512, 2048].into_iter().enumerate() {
        write(dir, &format!("ops-{i}"), &noise(100 + i as u64, len));
    }
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand when the targets' input formats change"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    seed_resp(&root.join("resp_decoder"));
    seed_wal(&root.join("wal_records"));
    seed_engine(&root.join("engine_ops"));
}

#[test]
fn seeds_decode() {
    // The seeds are valid inputs: keep them so when the encoders change.
    for e in entry_seeds() {
        let entry = Entry::decode(&e).expect("entry seed decodes");
        assert_eq!(entry.to_vec(), e);
    }
    let image = image_seed();
    assert_eq!(
        image_codec::encode(&image_codec::decode(&image).expect("image seed decodes")),
        image
    );
}
