//! The in-memory index of segment files: which file holds which indexes, at which byte
//! offsets. Built by recovery, extended by the writer, read by readers under a read lock.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{WalError, WalResult};
use super::format::{
    decode_frame, segment_file_name, split_entry, Corruption, SegmentHeader, FRAME_HEADER_LEN,
};
use super::io::{read_exact_at, write_all, WalFile, WalIo};

/// One log record: its index and the bytes the caller appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The log index.
    pub index: u64,
    /// The payload as given to `append`.
    pub data: Vec<u8>,
}

/// One segment file and where its records are.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) path: PathBuf,
    /// Index of the first record (or of the next one, while empty).
    pub(super) first_index: u64,
    /// One handle shared by the writer (appends) and readers (positional reads).
    pub(super) file: Arc<dyn WalFile>,
    /// Byte offset of each record's frame: record `first_index + i` is at `offsets[i]`.
    /// `u32` because a segment is capped below 4 GiB and there can be millions of them.
    pub(super) offsets: Vec<u32>,
    /// End of the last record written: the byte where the next frame goes.
    pub(super) len: u64,
}

impl Segment {
    /// Index after the last record in this segment (written, not necessarily visible).
    pub(super) fn end_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    /// Byte offset where record `i` (position inside the segment) ends.
    fn end_of(&self, pos: usize) -> u64 {
        self.offsets
            .get(pos + 1)
            .map_or(self.len, |&off| u64::from(off))
    }
}

/// All segments, oldest first, and the range of indexes readers may see.
#[derive(Debug)]
pub(super) struct LogIndex {
    pub(super) segments: VecDeque<Segment>,
    /// First readable index. A purge raises it at once even though it deletes only whole
    /// segments, so readers never see purged records in this process.
    pub(super) first_index: u64,
    /// One past the last visible record: records are visible once their append has
    /// completed (after fsync in `Always` mode), never before.
    pub(super) next_index: u64,
}

impl LogIndex {
    /// Reads the visible records in `[start, end)`; indexes outside the log are skipped,
    /// as openraft's `try_get_log_entries` expects.
    pub(super) fn read(&self, start: u64, end: u64) -> WalResult<Vec<Record>> {
        let start = start.max(self.first_index);
        let end = end.min(self.next_index);
        let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
        if start >= end {
            return Ok(out);
        }
        // The last segment whose first index is <= start.
        let mut seg_pos = self
            .segments
            .partition_point(|s| s.first_index <= start)
            .saturating_sub(1);
        let mut next = start;
        while next < end {
            let Some(seg) = self.segments.get(seg_pos) else {
                break;
            };
            seg_pos += 1;
            if next >= seg.end_index() {
                // Empty, or wholly before `next`.
                continue;
            }
            if seg.first_index > next {
                // Cannot happen in a contiguous log; return what is there.
                break;
            }
            let from = usize::try_from(next - seg.first_index).expect("position fits in memory");
            let upto_index = end.min(seg.end_index());
            let last =
                usize::try_from(upto_index - 1 - seg.first_index).expect("position fits in memory");
            let byte_start = u64::from(seg.offsets[from]);
            let byte_end = seg.end_of(last);
            let mut buf = vec![0u8; usize::try_from(byte_end - byte_start).expect("span fits")];
            read_exact_at(seg.file.as_ref(), &mut buf, byte_start)
                .map_err(|e| WalError::io("read", &seg.path, e))?;
            let mut at = 0usize;
            while next < upto_index {
                let offset = byte_start + at as u64;
                let frame = decode_frame(&buf[at..]).map_err(|kind| WalError::Corrupt {
                    file: seg.path.clone(),
                    offset,
                    kind,
                })?;
                let (index, data) = split_entry(frame.payload);
                if index != next {
                    return Err(WalError::Corrupt {
                        file: seg.path.clone(),
                        offset,
                        kind: Corruption::IndexGap {
                            expected: next,
                            found: index,
                        },
                    });
                }
                out.push(Record {
                    index,
                    data: data.to_vec(),
                });
                at += FRAME_HEADER_LEN + frame.payload.len();
                next += 1;
            }
        }
        Ok(out)
    }
}

/// Creates a segment file holding only its header, durably: header fsynced, then the
/// directory fsynced so the name survives a crash too.
pub(super) fn create_segment(
    io: &dyn WalIo,
    dir: &Path,
    first_index: u64,
    flags: u32,
) -> WalResult<Segment> {
    let path = dir.join(segment_file_name(first_index));
    let file: Arc<dyn WalFile> = Arc::from(
        io.create(&path)
            .map_err(|e| WalError::io("create", &path, e))?,
    );
    let header = SegmentHeader { first_index, flags }.encode();
    write_all(file.as_ref(), &header).map_err(|e| WalError::io("write", &path, e))?;
    file.sync().map_err(|e| WalError::io("fsync", &path, e))?;
    io.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    Ok(Segment {
        path,
        first_index,
        file,
        offsets: Vec::new(),
        len: header.len() as u64,
    })
}

/// Removes a segment file durably. Each removal gets its own directory fsync so that a
/// crash in the middle of removing several leaves a contiguous log (POSIX does not order
/// unsynced name operations).
pub(super) fn remove_segment(io: &dyn WalIo, dir: &Path, path: &Path) -> WalResult<()> {
    io.remove(path)
        .map_err(|e| WalError::io("remove", path, e))?;
    io.sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))
}
