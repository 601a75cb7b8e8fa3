//! Fuzzes what recovery reads back from disk. The first byte picks the decoder:
//!
//! - `0`: a log record (`durable::Entry::decode`) and
//! - `1`: a snapshot payload (`durable::image_codec::decode`): never panic, and whatever
//!   decodes, re-encoded, decodes to the same value;
//! - `2`: WAL segments built from a plan (valid frames, frames with a skewed index, raw
//!   bytes, flipped bits, a chopped tail, torn headers) over one to three segment files;
//! - `3`: one segment: a valid header, then the raw input.
//!
//! For the WAL the files go into a temporary directory and are opened with `Wal::open` in
//! the recovery mode the input picks. Open must return Ok or a clean Err. When it is Ok,
//! the records read back have consecutive indexes matching the report, start with every
//! record a valid writer wrote before the first damaged byte, and the log is usable: a
//! record appended after recovery, then a reopen in `AbsoluteConsistency`, must find the
//! recovered records plus that one (so a cut left no garbage behind).
#![no_main]

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use turnstile::durable::image_codec;
use turnstile::durable::Entry;
use turnstile::wal::format::{
    encode_entry, segment_file_name, SegmentHeader, FLAG_BASE, SEGMENT_HEADER_LEN,
};
use turnstile::wal::{Record, RecoveryMode, Wal, WalOptions};

#[derive(Arbitrary, Debug)]
enum FirstIndex {
    Zero,
    One,
    Small(u16),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Header {
    Valid,
    /// The flag saying older segments are leftovers of an interrupted purge.
    Base,
    /// A header cut to `n % 32` bytes (a torn creation, when it is the last file).
    Torn(u8),
    /// A header whose first index is off by `skew` from the file name.
    Misnamed(i8),
}

#[derive(Arbitrary, Debug)]
enum Piece {
    /// A record as the writer frames it, at the next index.
    Entry(Vec<u8>),
    /// A well-framed record at the wrong index.
    Skewed(i8, Vec<u8>),
    /// Garbage.
    Raw(Vec<u8>),
    /// Flips bit `bit % 8` of the byte `back` bytes before the current end.
    Flip(u16, u8),
    /// Cuts `n` bytes off the end.
    Chop(u8),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    header: Header,
    pieces: Vec<Piece>,
}

#[derive(Arbitrary, Debug)]
struct Plan {
    mode: u8,
    first: FirstIndex,
    segments: Vec<Segment>,
}

fn mode(m: u8) -> RecoveryMode {
    match m % 3 {
        0 => RecoveryMode::TolerateTailCorruption,
        1 => RecoveryMode::AbsoluteConsistency,
        _ => RecoveryMode::TruncateAtFirstCorruption,
    }
}

/// One segment file as written, and what a valid writer wrote into it.
struct Built {
    name_index: u64,
    bytes: Vec<u8>,
    /// Records framed by the writer, with the byte where each ends.
    records: Vec<(Record, usize)>,
    /// The first byte that is not the writer's (the file length if none).
    dirty: usize,
    header_ok: bool,
    /// A base segment whose header reads back: recovery deletes every file before it.
    base: bool,
}

fn build(plan: &Plan) -> Vec<Built> {
    let mut next = match plan.first {
        FirstIndex::Zero => 0,
        FirstIndex::One => 1,
        FirstIndex::Small(n) => u64::from(n),
        FirstIndex::Any(n) => n,
    };
    let mut out = Vec::new();
    for seg in plan.segments.iter().take(3) {
        let name_index = next;
        if out
            .last()
            .is_some_and(|b: &Built| b.name_index == name_index)
        {
            // A segment without records: the next one would get the same file name.
            break;
        }
        let (header_index, flags, torn) = match seg.header {
            Header::Valid => (name_index, 0, None),
            Header::Base => (name_index, FLAG_BASE, None),
            Header::Torn(n) => (name_index, 0, Some(usize::from(n) % SEGMENT_HEADER_LEN)),
            Header::Misnamed(skew) => {
                let h = name_index.wrapping_add_signed(i64::from(skew));
                (h, 0, None)
            }
        };
        let header = SegmentHeader {
            first_index: header_index,
            flags,
        }
        .encode();
        let mut bytes = header[..torn.unwrap_or(SEGMENT_HEADER_LEN)].to_vec();
        let header_ok = torn.is_none() && header_index == name_index;
        let mut dirty = if header_ok { usize::MAX } else { 0 };
        let mut records = Vec::new();
        for piece in seg.pieces.iter().take(64) {
            match piece {
                Piece::Entry(data) => {
                    let Some(after) = next.checked_add(1) else {
                        // A writer cannot go past the last index.
                        break;
                    };
                    encode_entry(&mut bytes, next, data);
                    records.push((
                        Record {
                            index: next,
                            data: data.clone(),
                        },
                        bytes.len(),
                    ));
                    next = after;
                }
                Piece::Skewed(skew, data) => {
                    let index = next.wrapping_add_signed(i64::from(*skew));
                    dirty = dirty.min(bytes.len());
                    encode_entry(&mut bytes, index, data);
                }
                Piece::Raw(raw) => {
                    if !raw.is_empty() {
                        dirty = dirty.min(bytes.len());
                        bytes.extend_from_slice(raw);
                    }
                }
                Piece::Flip(back, bit) => {
                    let back = usize::from(*back);
                    if back < bytes.len() {
                        let at = bytes.len() - 1 - back;
                        bytes[at] ^= 1 << (bit % 8);
                        dirty = dirty.min(at);
                    }
                }
                Piece::Chop(n) => {
                    let n = usize::from(*n).min(bytes.len());
                    if n > 0 {
                        bytes.truncate(bytes.len() - n);
                        dirty = dirty.min(bytes.len());
                    }
                }
            }
        }
        // As recovery sees it (a flipped reserved byte is outside the checksum).
        let base = SegmentHeader::decode(&bytes).is_ok_and(|h| h.is_base());
        out.push(Built {
            name_index,
            dirty: dirty.min(bytes.len()),
            bytes,
            records,
            header_ok: header_ok && dirty >= SEGMENT_HEADER_LEN,
            base,
        });
    }
    out
}

/// The records a reader must return first: the writer's records in file order, from the
/// last base segment on (older files are purge leftovers), up to the first damaged byte
/// (a damaged file's later files are not guaranteed).
fn clean_prefix(built: &[Built]) -> Vec<Record> {
    let from = built.iter().rposition(|b| b.base).unwrap_or(0);
    let mut out: Vec<Record> = Vec::new();
    for b in &built[from..] {
        if !b.header_ok {
            break;
        }
        for (r, end) in &b.records {
            if *end > b.dirty {
                return out;
            }
            out.push(r.clone());
        }
        if b.dirty < b.bytes.len() {
            break;
        }
    }
    out
}

fn read_all(wal: &Wal) -> Vec<Record> {
    wal.read(..).expect("a recovered log reads back")
}

fn check_wal(dir: &Path, files: &[Built], mode: RecoveryMode, clean: &[Record]) {
    for b in files {
        std::fs::write(dir.join(segment_file_name(b.name_index)), &b.bytes).expect("write");
    }
    let mut opts = WalOptions::new(dir);
    opts.recovery = mode;
    opts.segment_size = 4096;
    let Ok((wal, report)) = Wal::open(opts.clone()) else {
        return;
    };
    let records = read_all(&wal);
    let state = wal.state();
    assert_eq!(state.first_index, report.first_index);
    assert_eq!(state.next_index, report.next_index);
    assert_eq!(
        records.len() as u64,
        report.next_index - report.first_index,
        "records read vs the report's range"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            r.index,
            report.first_index + i as u64,
            "consecutive indexes"
        );
    }
    if !clean.is_empty() {
        assert!(
            records.len() >= clean.len() && records[..clean.len()] == *clean,
            "lost or changed a valid record: recovered {} records from {}, the writer wrote {} before the damage",
            records.len(),
            records.first().map_or(0, |r| r.index),
            clean.len(),
        );
    }
    if report.next_index == u64::MAX {
        return;
    }
    let appended = wal
        .append(vec![b"after recovery".to_vec()])
        .wait()
        .expect("append after recovery");
    assert_eq!(appended, report.next_index..report.next_index + 1);
    drop(wal);

    opts.recovery = RecoveryMode::AbsoluteConsistency;
    let (wal, again) = match Wal::open(opts) {
        Ok(w) => w,
        Err(e) => panic!("recovered log does not reopen cleanly: {e}"),
    };
    assert!(again.cut.is_none());
    let mut expect = records;
    expect.push(Record {
        index: report.next_index,
        data: b"after recovery".to_vec(),
    });
    let got = read_all(&wal);
    // A purge leftover deleted on the first open is not there the second time either.
    assert_eq!(got, expect, "reopened log");
}

fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("tempdir")
    } else {
        tempfile::tempdir().expect("tempdir")
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            if let Ok(entry) = Entry::decode(rest) {
                let bytes = entry.to_vec();
                let again = Entry::decode(&bytes).expect("an encoded entry decodes");
                assert_eq!(again, entry);
                assert!(
                    bytes.len() <= rest.len(),
                    "canonical encoding is never longer"
                );
            }
        }
        1 => {
            if let Ok(state) = image_codec::decode(rest) {
                let bytes = image_codec::encode(&state);
                let again = image_codec::decode(&bytes).expect("an encoded image decodes");
                assert_eq!(again, state);
            }
        }
        2 => {
            let Ok(plan) = Plan::arbitrary_take_rest(Unstructured::new(rest)) else {
                return;
            };
            let files = build(&plan);
            let clean = clean_prefix(&files);
            let dir = tempdir();
            check_wal(dir.path(), &files, mode(plan.mode), &clean);
        }
        _ => {
            let mode = mode(sel / 4);
            let mut bytes = SegmentHeader {
                first_index: 1,
                flags: 0,
            }
            .encode()
            .to_vec();
            bytes.extend_from_slice(rest);
            let files = [Built {
                name_index: 1,
                dirty: SEGMENT_HEADER_LEN,
                bytes,
                records: Vec::new(),
                header_ok: true,
                base: false,
            }];
            let dir = tempdir();
            check_wal(dir.path(), &files, mode, &[]);
        }
    }
});
