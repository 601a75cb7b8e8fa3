//! The on-disk format of the write-ahead log, in one place (STYLE habit 11).
//!
//! Every byte the WAL, the vote file and the snapshot store put on disk is laid out by a
//! type in this file, with the layout written on the type. `docs/wal-format.md` repeats
//! the layouts with a hex example. All integers are little endian. All checksums are
//! CRC-32C (Castagnoli), the one with hardware support on x86-64 and aarch64.
//!
//! Files in a WAL directory:
//! - `{first_index:020}.wal`: a segment, a [`SegmentHeader`] then [`RecordType::Entry`]
//!   frames, whose indexes continue from `first_index` without a gap.
//! - `vote`: the last saved vote ([`VoteFile`]); `vote.tmp` while one is being replaced.
//!
//! Files in a snapshot directory: `snap-{last_index:020}.snap` ([`SnapshotHeader`]) and
//! `*.tmp` while one is being written.

use std::fmt;

/// First bytes of every segment file: says "this is a Turnstile WAL segment" before
/// anything else is trusted.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TSTLWAL\0";
/// First bytes of the vote file.
pub const VOTE_MAGIC: [u8; 8] = *b"TSTLVOTE";
/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TSTLSNAP";

/// The only format version this code writes and reads. A reader refuses any other
/// version rather than guess, so a format change must bump it.
pub const FORMAT_VERSION: u32 = 1;

/// Length of a [`SegmentHeader`] on disk.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a frame header: `len | type | crc32c`.
pub const FRAME_HEADER_LEN: usize = 9;
/// Length of the index that starts every entry payload.
pub const ENTRY_INDEX_LEN: usize = 8;
/// Largest data one entry may carry. The WAL holds lock-manager commands, which are
/// small; the cap keeps recovery from allocating whatever a corrupt length field says.
pub const MAX_ENTRY_DATA: usize = 16 << 20;
/// Largest payload length a frame header may carry (the data plus its index).
pub const MAX_FRAME_PAYLOAD: usize = MAX_ENTRY_DATA + ENTRY_INDEX_LEN;
/// Length of a [`VoteFile`] header.
pub const VOTE_HEADER_LEN: usize = 20;
/// Largest vote accepted: a vote is a term and a node id, a few dozen bytes serialized.
pub const MAX_VOTE_LEN: usize = 64 << 10;
/// Length of a [`SnapshotHeader`] on disk.
pub const SNAPSHOT_HEADER_LEN: usize = 40;

/// Segment header flag: this segment begins the log, and any segment with a lower first
/// index is the leftover of a purge that crashed before deleting it. Set on the segment a
/// purge past the end of the log creates, whose first index leaves a gap after the old
/// segments; recovery deletes those instead of reporting the gap.
pub const FLAG_BASE: u32 = 1;
const KNOWN_SEGMENT_FLAGS: u32 = FLAG_BASE;

/// File extension of segments.
pub const SEGMENT_EXT: &str = "wal";
/// Name of the vote file inside the WAL directory.
pub const VOTE_FILE: &str = "vote";
/// Name the vote file is written under before it is renamed over [`VOTE_FILE`].
pub const VOTE_TMP_FILE: &str = "vote.tmp";

/// What is wrong with a header or a frame. Carried by `WalError::Corrupt` together with
/// the file and the byte offset, so an operator can look at the exact spot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// The file ends inside a header.
    TruncatedHeader { len: usize },
    /// The magic bytes are not ours.
    BadMagic,
    /// A version this code does not know.
    UnsupportedVersion(u32),
    /// The header's own checksum does not match.
    BadHeaderCrc { stored: u32, computed: u32 },
    /// Flag bits this code does not know.
    UnknownFlags(u32),
    /// The segment header's first index differs from the one in the file name.
    NameMismatch { name: u64, header: u64 },
    /// The file ends inside a frame (a torn write, when it is the tail).
    TruncatedFrame { need: usize, have: usize },
    /// A frame length beyond the format's limit (or too short for its type).
    BadLength(u32),
    /// The frame's checksum does not match its bytes.
    BadCrc { stored: u32, computed: u32 },
    /// A checksummed frame of a type this code does not know.
    UnknownType(u8),
    /// An entry whose index does not continue the log.
    IndexGap { expected: u64, found: u64 },
    /// An entry at index `u64::MAX`: no record could ever follow it.
    IndexOverflow { found: u64 },
    /// A snapshot or vote whose length disagrees with its file.
    LengthMismatch { header: u64, file: u64 },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::TruncatedHeader { len } => write!(f, "header truncated ({len} bytes)"),
            Corruption::BadMagic => f.write_str("bad magic"),
            Corruption::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            Corruption::BadHeaderCrc { stored, computed } => {
                write!(
                    f,
                    "header crc mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Corruption::UnknownFlags(flags) => write!(f, "unknown header flags {flags:#x}"),
            Corruption::NameMismatch { name, header } => {
                write!(f, "file name says first index {name}, header says {header}")
            }
            Corruption::TruncatedFrame { need, have } => {
                write!(f, "frame truncated (need {need} bytes, have {have})")
            }
            Corruption::BadLength(len) => write!(f, "bad frame length {len}"),
            Corruption::BadCrc { stored, computed } => {
                write!(
                    f,
                    "frame crc mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Corruption::UnknownType(t) => write!(f, "unknown record type {t}"),
            Corruption::IndexGap { expected, found } => {
                write!(f, "index gap (expected {expected}, found {found})")
            }
            Corruption::IndexOverflow { found } => {
                write!(f, "entry index {found} leaves no room for another")
            }
            Corruption::LengthMismatch { header, file } => {
                write!(
                    f,
                    "length mismatch (header says {header}, file holds {file})"
                )
            }
        }
    }
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    let bytes: [u8; 4] = buf[at..at + 4].try_into().expect("slice of length 4");
    u32::from_le_bytes(bytes)
}

fn le_u64(buf: &[u8], at: usize) -> u64 {
    let bytes: [u8; 8] = buf[at..at + 8].try_into().expect("slice of length 8");
    u64::from_le_bytes(bytes)
}

/// The header at offset 0 of every segment file.
///
/// ```text
/// offset  0        8          12       16              24        28         32
///         +--------+----------+--------+---------------+---------+----------+
///         | magic  | version  | flags  | first_index   | crc32c  | reserved |
///         | 8 B    | u32      | u32    | u64           | u32     | u32 = 0  |
///         +--------+----------+--------+---------------+---------+----------+
/// ```
/// `crc32c` covers bytes 0..24. `first_index` is the index of the segment's first
/// entry (or of the next entry appended, when the segment is empty) and equals the
/// number in the file name. `flags` may hold [`FLAG_BASE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Index of the first entry in the segment.
    pub first_index: u64,
    /// Bit set of `FLAG_*`.
    pub flags: u32,
}

impl SegmentHeader {
    /// The header bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        buf[0..8].copy_from_slice(&SEGMENT_MAGIC);
        buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[12..16].copy_from_slice(&self.flags.to_le_bytes());
        buf[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        let crc = crc32c::crc32c(&buf[0..24]);
        buf[24..28].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Parses the first [`SEGMENT_HEADER_LEN`] bytes of `buf`. Magic first, then the
    /// version (a future version may move the checksum), then the checksum, then flags.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, Corruption> {
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(Corruption::TruncatedHeader { len: buf.len() });
        }
        if buf[0..8] != SEGMENT_MAGIC {
            return Err(Corruption::BadMagic);
        }
        let version = le_u32(buf, 8);
        if version != FORMAT_VERSION {
            return Err(Corruption::UnsupportedVersion(version));
        }
        let stored = le_u32(buf, 24);
        let computed = crc32c::crc32c(&buf[0..24]);
        if stored != computed {
            return Err(Corruption::BadHeaderCrc { stored, computed });
        }
        let flags = le_u32(buf, 12);
        if flags & !KNOWN_SEGMENT_FLAGS != 0 {
            return Err(Corruption::UnknownFlags(flags));
        }
        Ok(SegmentHeader {
            first_index: le_u64(buf, 16),
            flags,
        })
    }

    /// Whether [`FLAG_BASE`] is set.
    pub fn is_base(&self) -> bool {
        self.flags & FLAG_BASE != 0
    }
}

/// The type byte of a frame. Only entries exist today; the byte is there so a later
/// version can add, say, a checkpoint marker without reframing, and an old reader
/// refuses it ([`Corruption::UnknownType`]) instead of misreading it as an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// A log entry: payload = `index: u64 | data`.
    Entry = 1,
}

impl RecordType {
    fn from_byte(b: u8) -> Option<RecordType> {
        match b {
            1 => Some(RecordType::Entry),
            _ => None,
        }
    }
}

/// One record frame, as written back to back after the segment header.
///
/// ```text
/// offset  0          4        5          9                   17
///         +----------+--------+----------+-------------------+------------------+
///         | len      | type   | crc32c   | index             | data             |
///         | u32      | u8     | u32      | u64               | len - 8 bytes    |
///         +----------+--------+----------+-------------------+------------------+
///         |<------ frame header -------->|<------------- payload -------------->|
/// ```
/// `len` is the payload length (index plus data, so at least 8 for an entry).
/// `crc32c` covers `len`, `type` and the payload: every byte of the frame but itself,
/// so a flipped length or type is caught as surely as a flipped data byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record type.
    pub kind: RecordType,
    /// The payload bytes (for an entry: index then data).
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame occupies on disk.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

/// Bytes an entry with `data_len` bytes of data occupies on disk.
pub fn entry_frame_len(data_len: usize) -> usize {
    FRAME_HEADER_LEN + ENTRY_INDEX_LEN + data_len
}

/// Appends the frame of entry `index` carrying `data` to `out`.
///
/// The caller keeps `data.len() <= MAX_ENTRY_DATA`; the writer checks it before it gets
/// here, so a violation is a bug, not input.
pub fn encode_entry(out: &mut Vec<u8>, index: u64, data: &[u8]) {
    debug_assert!(data.len() <= MAX_ENTRY_DATA, "writer checks the entry size");
    let len = u32::try_from(ENTRY_INDEX_LEN + data.len()).expect("entry size is capped");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.push(RecordType::Entry as u8);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(data);
    let mut crc = crc32c::crc32c(&out[start..start + 5]);
    crc = crc32c::crc32c_append(crc, &out[start + FRAME_HEADER_LEN..]);
    out[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the frame at the start of `buf`, checking length and checksum.
///
/// Checks run in the order that lets a torn tail be told from garbage: enough bytes for
/// the header, a plausible length, enough bytes for the payload, the checksum, and only
/// then the type (an unknown type with a good checksum is a newer writer, not noise).
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, Corruption> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(Corruption::TruncatedFrame {
            need: FRAME_HEADER_LEN,
            have: buf.len(),
        });
    }
    let len = le_u32(buf, 0);
    let payload_len = len as usize;
    if payload_len > MAX_FRAME_PAYLOAD {
        return Err(Corruption::BadLength(len));
    }
    let total = FRAME_HEADER_LEN + payload_len;
    if buf.len() < total {
        return Err(Corruption::TruncatedFrame {
            need: total,
            have: buf.len(),
        });
    }
    let stored = le_u32(buf, 5);
    let mut computed = crc32c::crc32c(&buf[0..5]);
    computed = crc32c::crc32c_append(computed, &buf[FRAME_HEADER_LEN..total]);
    if stored != computed {
        return Err(Corruption::BadCrc { stored, computed });
    }
    let kind = RecordType::from_byte(buf[4]).ok_or(Corruption::UnknownType(buf[4]))?;
    let payload = &buf[FRAME_HEADER_LEN..total];
    if kind == RecordType::Entry && payload.len() < ENTRY_INDEX_LEN {
        return Err(Corruption::BadLength(len));
    }
    Ok(Frame { kind, payload })
}

/// Splits an entry payload into its index and data. The frame decoder has checked the
/// payload is long enough.
pub fn split_entry(payload: &[u8]) -> (u64, &[u8]) {
    (le_u64(payload, 0), &payload[ENTRY_INDEX_LEN..])
}

/// File name of the segment whose first index is `first_index`. Twenty digits, so the
/// names sort like the numbers and every u64 fits.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}.{SEGMENT_EXT}")
}

/// The first index a segment file name stands for, or `None` when the name is not a
/// segment's (other files in the directory are left alone).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The vote file: the last vote this node cast, replaced whole by write-to-temp, fsync,
/// rename, fsync-directory, so it is always either the old vote or the new one.
///
/// ```text
/// offset  0        8          12         16        20
///         +--------+----------+----------+---------+------------------+
///         | magic  | version  | len      | crc32c  | vote bytes       |
///         | 8 B    | u32      | u32      | u32     | len bytes        |
///         +--------+----------+----------+---------+------------------+
/// ```
/// `crc32c` covers bytes 0..16 and the vote bytes. The vote bytes are opaque here (the
/// raft layer serializes its `Vote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteFile;

impl VoteFile {
    /// The whole file for `vote`.
    pub fn encode(vote: &[u8]) -> Vec<u8> {
        let len = u32::try_from(vote.len()).expect("vote size is capped by the caller");
        let mut out = Vec::with_capacity(VOTE_HEADER_LEN + vote.len());
        out.extend_from_slice(&VOTE_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[0..16]), vote);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(vote);
        out
    }

    /// The vote bytes of a whole vote file, or what is wrong with it and where.
    pub fn decode(buf: &[u8]) -> Result<&[u8], (u64, Corruption)> {
        if buf.len() < VOTE_HEADER_LEN {
            return Err((0, Corruption::TruncatedHeader { len: buf.len() }));
        }
        if buf[0..8] != VOTE_MAGIC {
            return Err((0, Corruption::BadMagic));
        }
        let version = le_u32(buf, 8);
        if version != FORMAT_VERSION {
            return Err((8, Corruption::UnsupportedVersion(version)));
        }
        let len = le_u32(buf, 12) as usize;
        if buf.len() != VOTE_HEADER_LEN + len {
            return Err((
                12,
                Corruption::LengthMismatch {
                    header: len as u64,
                    file: (buf.len() - VOTE_HEADER_LEN) as u64,
                },
            ));
        }
        let vote = &buf[VOTE_HEADER_LEN..];
        let stored = le_u32(buf, 16);
        let computed = crc32c::crc32c_append(crc32c::crc32c(&buf[0..16]), vote);
        if stored != computed {
            return Err((16, Corruption::BadCrc { stored, computed }));
        }
        Ok(vote)
    }
}

/// The header of a snapshot file, followed by `len` bytes of snapshot data.
///
/// ```text
/// offset  0       8         12      16            24      32          36          40
///         +-------+---------+-------+-------------+-------+-----------+-----------+
///         | magic | version | flags | last_index  | len   | data_crc  | head_crc  |
///         | 8 B   | u32     | u32=0 | u64         | u64   | u32       | u32       |
///         +-------+---------+-------+-------------+-------+-----------+-----------+
/// ```
/// `head_crc` covers bytes 0..36 (so also `data_crc`); `data_crc` covers the data.
/// `last_index` is the index of the last log entry the snapshot includes: after it is
/// durable, the log may be purged up to that index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Last log index included in the snapshot.
    pub last_index: u64,
    /// Length of the data that follows.
    pub len: u64,
    /// CRC-32C of the data.
    pub data_crc: u32,
}

impl SnapshotHeader {
    /// The header bytes.
    pub fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut buf = [0u8; SNAPSHOT_HEADER_LEN];
        buf[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[16..24].copy_from_slice(&self.last_index.to_le_bytes());
        buf[24..32].copy_from_slice(&self.len.to_le_bytes());
        buf[32..36].copy_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32c::crc32c(&buf[0..36]);
        buf[36..40].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Parses a snapshot header (data not checked here).
    pub fn decode(buf: &[u8]) -> Result<SnapshotHeader, Corruption> {
        if buf.len() < SNAPSHOT_HEADER_LEN {
            return Err(Corruption::TruncatedHeader { len: buf.len() });
        }
        if buf[0..8] != SNAPSHOT_MAGIC {
            return Err(Corruption::BadMagic);
        }
        let version = le_u32(buf, 8);
        if version != FORMAT_VERSION {
            return Err(Corruption::UnsupportedVersion(version));
        }
        let stored = le_u32(buf, 36);
        let computed = crc32c::crc32c(&buf[0..36]);
        if stored != computed {
            return Err(Corruption::BadHeaderCrc { stored, computed });
        }
        let flags = le_u32(buf, 12);
        if flags != 0 {
            return Err(Corruption::UnknownFlags(flags));
        }
        Ok(SnapshotHeader {
            last_index: le_u64(buf, 16),
            len: le_u64(buf, 24),
            data_crc: le_u32(buf, 32),
        })
    }
}

/// File name of the snapshot that includes the log up to `last_index`.
pub fn snapshot_file_name(last_index: u64) -> String {
    format!("snap-{last_index:020}.snap")
}

/// The last index a snapshot file name stands for.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_hex_example_matches_the_doc() {
        let h = SegmentHeader {
            first_index: 1,
            flags: 0,
        };
        let bytes = h.encode();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // The same bytes are shown in docs/wal-format.md.
        assert_eq!(
            hex,
            "5453544c57414c0001000000000000000100000000000000b5aa9f8400000000"
        );
    }

    #[test]
    fn entry_hex_example_matches_the_doc() {
        let mut out = Vec::new();
        encode_entry(&mut out, 1, b"hi");
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "0a000000017d7f8bf601000000000000006869");
    }

    #[test]
    fn other_hex_examples_match_the_doc() {
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let base = SegmentHeader {
            first_index: 1001,
            flags: FLAG_BASE,
        };
        assert_eq!(
            hex(&base.encode()),
            "5453544c57414c000100000001000000e903000000000000c837d16c00000000"
        );
        let mut entry = Vec::new();
        encode_entry(&mut entry, 2, b"");
        assert_eq!(hex(&entry), "08000000013b3c60590200000000000000");
        assert_eq!(
            hex(&VoteFile::encode(b"v1")),
            "5453544c564f54450100000002000000504b3e237631"
        );
        let snap = SnapshotHeader {
            last_index: 2,
            len: 2,
            data_crc: crc32c::crc32c(b"ok"),
        };
        assert_eq!(
            hex(&snap.encode()),
            "5453544c534e41500100000000000000020000000000000002000000000000007060cb6eb0ae2462"
        );
    }

    #[test]
    fn flipping_any_bit_of_a_frame_is_detected() {
        let mut out = Vec::new();
        encode_entry(&mut out, 42, b"some data");
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                match decode_frame(&bad) {
                    Err(_) => {}
                    Ok(f) => panic!("flip at {byte}.{bit} accepted: {f:?}"),
                }
            }
        }
    }

    #[test]
    fn names_round_trip_and_reject_strangers() {
        assert_eq!(segment_file_name(7), "00000000000000000007.wal");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("7.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000007.wal.tmp"),
            None
        );
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(9)), Some(9));
        assert_eq!(parse_snapshot_file_name("snap-9.snap"), None);
    }

    #[test]
    fn unknown_type_with_good_crc_is_refused() {
        let mut out = Vec::new();
        encode_entry(&mut out, 1, b"x");
        out[4] = 9;
        let mut crc = crc32c::crc32c(&out[0..5]);
        crc = crc32c::crc32c_append(crc, &out[FRAME_HEADER_LEN..]);
        out[5..9].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_frame(&out), Err(Corruption::UnknownType(9)));
    }

    #[test]
    fn huge_length_is_refused_before_allocating() {
        let mut buf = vec![0u8; FRAME_HEADER_LEN];
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_frame(&buf), Err(Corruption::BadLength(u32::MAX)));
    }

    proptest! {
        #[test]
        fn segment_header_round_trips(first in any::<u64>(), base in any::<bool>()) {
            let h = SegmentHeader { first_index: first, flags: if base { FLAG_BASE } else { 0 } };
            prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn segment_header_prefix_is_truncated(first in any::<u64>(), cut in 0usize..SEGMENT_HEADER_LEN) {
            let h = SegmentHeader { first_index: first, flags: 0 };
            prop_assert_eq!(
                SegmentHeader::decode(&h.encode()[..cut]),
                Err(Corruption::TruncatedHeader { len: cut })
            );
        }

        #[test]
        fn entries_round_trip(entries in proptest::collection::vec(
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 1..20)
        ) {
            let mut buf = Vec::new();
            for (index, data) in &entries {
                encode_entry(&mut buf, *index, data);
            }
            let mut at = 0;
            for (index, data) in &entries {
                let frame = decode_frame(&buf[at..]).expect("valid frame");
                prop_assert_eq!(frame.kind, RecordType::Entry);
                let (i, d) = split_entry(frame.payload);
                prop_assert_eq!(i, *index);
                prop_assert_eq!(d, &data[..]);
                prop_assert_eq!(frame.encoded_len(), entry_frame_len(data.len()));
                at += frame.encoded_len();
            }
            prop_assert_eq!(at, buf.len());
        }

        #[test]
        fn a_cut_frame_is_truncated_not_misread(
            data in proptest::collection::vec(any::<u8>(), 0..100), cut_seed in any::<usize>()
        ) {
            let mut buf = Vec::new();
            encode_entry(&mut buf, 3, &data);
            let cut = cut_seed % buf.len();
            let is_truncated = matches!(decode_frame(&buf[..cut]), Err(Corruption::TruncatedFrame { .. }));
            prop_assert!(is_truncated);
        }

        #[test]
        fn vote_round_trips(vote in proptest::collection::vec(any::<u8>(), 0..200)) {
            let file = VoteFile::encode(&vote);
            prop_assert_eq!(VoteFile::decode(&file), Ok(&vote[..]));
            prop_assert!(VoteFile::decode(&file[..file.len() - 1]).is_err());
        }

        #[test]
        fn snapshot_header_round_trips(last in any::<u64>(), len in any::<u64>(), crc in any::<u32>()) {
            let h = SnapshotHeader { last_index: last, len, data_crc: crc };
            prop_assert_eq!(SnapshotHeader::decode(&h.encode()), Ok(h));
        }
    }
}
