//! Batched proposals: many command records in one log entry.
//!
//! openraft 0.9 appends, flushes and applies client writes about one entry per log flush
//! when they arrive one by one, so a leader serving many connections would pay one
//! fsync-and-apply cycle per command. The server's proposer instead packs every command
//! waiting at that moment into one entry; the state machine applies them in order and
//! answers each. A single record (tags 1..=8) stays a valid entry on its own, so replay and
//! the audit read both forms.
//!
//! ```text
//! 0xB5  count  { len record }*        (varints; each record an encoded command Entry)
//! ```

use crate::durable::codec::{put_bytes, put_u64, DecodeError, Reader};

/// The first byte of a batch entry (no command record starts with it).
pub const BATCH_TAG: u8 = 0xB5;

/// Packs `records` into one batch entry.
pub fn encode(records: &[Vec<u8>]) -> Vec<u8> {
    let len: usize = records.iter().map(|r| r.len() + 3).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(BATCH_TAG);
    put_u64(&mut out, records.len() as u64);
    for r in records {
        put_bytes(&mut out, r);
    }
    out
}

/// The records of an entry: its batch's records, or the entry itself when it is a single
/// record.
pub fn records(bytes: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    if bytes.first() != Some(&BATCH_TAG) {
        return Ok(vec![bytes]);
    }
    let mut rd = Reader::new(&bytes[1..]);
    let n = rd.u64()?;
    let mut out = Vec::with_capacity(usize::try_from(n.min(1 << 16)).unwrap_or(0));
    for _ in 0..n {
        out.push(rd.bytes()?);
    }
    Ok(out)
}

/// Whether `bytes` is a batch entry.
pub fn is_batch(bytes: &[u8]) -> bool {
    bytes.first() == Some(&BATCH_TAG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_single_records() {
        let recs = vec![vec![4, 1, 2], vec![], vec![5; 300]];
        let b = encode(&recs);
        assert!(is_batch(&b));
        let back = records(&b).expect("decodes");
        assert_eq!(back, recs.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(records(&[4, 1]).expect("single"), vec![&[4u8, 1][..]]);
        assert!(records(&[BATCH_TAG, 2, 1]).is_err(), "truncated batch");
    }
}
