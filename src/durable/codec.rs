//! Byte-level helpers shared by the command and snapshot encodings: LEB128 varints,
//! length-prefixed byte strings and lock modes, with a reader that reports where it ran
//! out instead of panicking (a record passed its checksum, but it may come from a newer
//! version or a bug, and recovery must say so clearly).

use crate::engine::Mode;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a field.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// A varint longer than 10 bytes or over 64 bits.
    #[error("bad varint at byte {0}")]
    Varint(usize),
    /// A tag this version does not know.
    #[error("unknown {what} tag {tag} at byte {at}")]
    Tag {
        /// What was being decoded.
        what: &'static str,
        /// The tag found.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// A format version this code does not read.
    #[error("format version {0} is not supported (this build reads version {1})")]
    Version(u8, u8),
    /// Bytes left over after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A value out of range for its field.
    #[error("bad value: {0}")]
    Value(&'static str),
}

/// Appends a LEB128 varint.
pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends a session kind (see [`Reader::session_kind`]).
pub fn put_session_kind(out: &mut Vec<u8>, kind: &super::command::SessionKind) {
    use super::command::SessionKind;
    match kind {
        SessionKind::Text => out.push(0),
        SessionKind::Binary {
            secret,
            timeout_ms,
            user,
        } => {
            // Kind 1 (no user: `default`) is the layout logs had before users existed,
            // so a log without named users reads the same in either version.
            out.push(if user.is_some() { 2 } else { 1 });
            out.extend_from_slice(secret);
            put_u64(out, *timeout_ms);
            if let Some(user) = user {
                put_bytes(out, user.as_bytes());
            }
        }
    }
}

/// Appends a mode: `0` exclusive, `1` shared, `2 limit permits` semaphore.
pub fn put_mode(out: &mut Vec<u8>, mode: Mode) {
    match mode {
        Mode::Exclusive => out.push(0),
        Mode::Shared => out.push(1),
        Mode::Semaphore { limit, permits } => {
            out.push(2);
            put_u64(out, u64::from(limit));
            put_u64(out, u64::from(permits));
        }
    }
}

/// Reads fields off a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Where the next read starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    /// A varint.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Varint(start));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint(start))
    }

    /// A varint that must fit a u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u64()?).map_err(|_| DecodeError::Value("u32 field over 2^32"))
    }

    /// `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated(self.pos))?;
        self.take(n)
    }

    /// A mode.
    pub fn mode(&mut self) -> Result<Mode, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            0 => Ok(Mode::Exclusive),
            1 => Ok(Mode::Shared),
            2 => Ok(Mode::Semaphore {
                limit: self.u32()?,
                permits: self.u32()?,
            }),
            tag => Err(DecodeError::Tag {
                what: "mode",
                tag,
                at,
            }),
        }
    }

    /// A session kind: `0` text, `1 secret:16 timeout_ms` binary of the default user,
    /// `2 secret:16 timeout_ms user` binary of a named user.
    pub fn session_kind(&mut self) -> Result<super::command::SessionKind, DecodeError> {
        use super::command::{SessionKind, SECRET_LEN};
        let at = self.pos;
        match self.u8()? {
            0 => Ok(SessionKind::Text),
            tag @ (1 | 2) => Ok(SessionKind::Binary {
                secret: self.take(SECRET_LEN)?.try_into().expect("16 bytes"),
                timeout_ms: self.u64()?,
                user: if tag == 2 {
                    let name = std::str::from_utf8(self.bytes()?)
                        .map_err(|_| DecodeError::Value("session user name is not UTF-8"))?;
                    Some(name.to_string())
                } else {
                    None
                },
            }),
            tag => Err(DecodeError::Tag {
                what: "session kind",
                tag,
                at,
            }),
        }
    }

    /// A count of items that each take at least one byte (bounds allocations by the
    /// bytes actually present, whatever a bad count says).
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(DecodeError::Truncated(self.pos));
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(v: u64) {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.u64().unwrap(), v);
            r.finish().unwrap();
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let mut r = Reader::new(&bytes);
            let _ = r.u64();
            let _ = r.bytes();
            let _ = r.mode();
            let _ = r.count();
        }
    }
}
