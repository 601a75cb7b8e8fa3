//! Primitive readers and writers: big-endian integers and `str16` strings (a u16 length
//! then that many bytes).

use bytes::{BufMut, BytesMut};

/// Why a payload did not parse (the caller adds the opcode).
pub(crate) type Bad = &'static str;

/// A cursor over a payload. Every read checks the bytes are there first.
pub(crate) struct Rd<'a> {
    buf: &'a [u8],
}

impl<'a> Rd<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Rd { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if self.buf.len() < n {
            return Err("payload too short");
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Bad> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Bad> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Bad> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Bad> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// A `str16`: u16 length, then the bytes.
    pub(crate) fn str16(&mut self) -> Result<&'a [u8], Bad> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// A count of entries of at least `min_entry` bytes each, refused when the payload
    /// could not hold that many (so a hostile count never drives an allocation).
    pub(crate) fn count(&mut self, min_entry: usize) -> Result<usize, Bad> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_entry) > self.buf.len() {
            return Err("count larger than the payload can hold");
        }
        Ok(n)
    }

    /// Every payload is consumed exactly: bytes left over are an error.
    pub(crate) fn end(&self) -> Result<(), Bad> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after the payload")
        }
    }
}

/// Writes a `str16`. Callers keep strings within [`crate::MAX_STR`]; a longer one is cut
/// there so that the frame stays well-formed.
pub(crate) fn put_str16(out: &mut BytesMut, s: &[u8]) {
    let s = &s[..s.len().min(crate::MAX_STR)];
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}
