//! Frames and the two-pass decoder.
//!
//! Every message in both directions is one frame:
//!
//! ```text
//!  0               4       5               9
//! +---------------+-------+---------------+---------------------+
//! | len: u32 (BE) | op:u8 | id: u32 (BE)  | payload: len bytes  |
//! +---------------+-------+---------------+---------------------+
//! ```
//!
//! `len` counts the payload only. Decoding is done in two passes: [`Header::check`] looks
//! at the 9 header bytes, refuses a length over the cap ([`DecodeError::TooLarge`]) and
//! says whether the whole frame is there yet ([`DecodeError::Incomplete`]); only then does
//! a message decoder look at the payload ([`DecodeError::Malformed`] when it does not
//! parse). A reader therefore never allocates or waits for more than the cap.

use bytes::{BufMut, BytesMut};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 9;

/// The hard maximum payload of any frame, in either direction (16 MiB). A server announces
/// its own, smaller, maximum for requests in HELLO_OK.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The largest HELLO payload a server accepts (before authentication, a small cap).
pub const HELLO_MAX_PAYLOAD: usize = 4096;

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More bytes are needed; read and try again.
    #[error("incomplete frame")]
    Incomplete,
    /// The header announces a payload over the cap: the stream cannot be trusted further.
    #[error("frame payload of {len} bytes is over the maximum of {max}")]
    TooLarge {
        /// The announced payload length.
        len: u32,
        /// The cap in force.
        max: usize,
        /// The request id of the oversized frame, to address the error reply.
        request_id: u32,
    },
    /// The frame is complete but its payload does not parse as its opcode says. The
    /// frame boundary is still known, so a server answers ERR and goes on.
    #[error("malformed frame (opcode 0x{opcode:02x}): {reason}")]
    Malformed {
        /// The frame's opcode.
        opcode: u8,
        /// What was wrong.
        reason: &'static str,
    },
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// What the frame is (see [`crate::op`]).
    pub opcode: u8,
    /// The request id: chosen by the client on a request, echoed on its response, the
    /// queued ACQUIRE's id on a grant/timeout/cancel push, 0 on other pushes.
    pub request_id: u32,
}

impl Header {
    /// Reads a header from the first 9 bytes of `buf` without checking anything else.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header {
            len: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            opcode: h[4],
            request_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]),
        })
    }

    /// The first pass: the header of the frame at the front of `buf` when the whole frame
    /// (header and payload) is there; [`DecodeError::Incomplete`] when more bytes are
    /// needed; [`DecodeError::TooLarge`] when the payload would pass `max_payload` (itself
    /// capped at [`MAX_PAYLOAD`]), which is known from the header alone.
    pub fn check(buf: &[u8], max_payload: usize) -> Result<Header, DecodeError> {
        let header = Header::peek(buf).ok_or(DecodeError::Incomplete)?;
        let max = max_payload.min(MAX_PAYLOAD);
        if header.len as usize > max {
            return Err(DecodeError::TooLarge {
                len: header.len,
                max,
                request_id: header.request_id,
            });
        }
        if buf.len() < header.frame_len() {
            return Err(DecodeError::Incomplete);
        }
        Ok(header)
    }

    /// Header plus payload length.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

/// Splits the frame at the front of `buf` into its header and payload (see
/// [`Header::check`]).
pub fn split(buf: &[u8], max_payload: usize) -> Result<(Header, &[u8]), DecodeError> {
    let header = Header::check(buf, max_payload)?;
    Ok((header, &buf[HEADER_LEN..header.frame_len()]))
}

/// Starts a frame in `out`; returns where it starts, for [`finish`].
pub(crate) fn begin(out: &mut BytesMut, opcode: u8, request_id: u32) -> usize {
    let start = out.len();
    out.reserve(HEADER_LEN + 32);
    out.put_u32(0);
    out.put_u8(opcode);
    out.put_u32(request_id);
    start
}

/// Writes the payload length of the frame begun at `start`.
pub(crate) fn finish(out: &mut BytesMut, start: usize) {
    let len = out.len() - start - HEADER_LEN;
    debug_assert!(len <= MAX_PAYLOAD, "encoders keep payloads under the cap");
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_reports_incomplete_then_frame() {
        let frame = [0, 0, 0, 2, 0x02, 0, 0, 0, 9, b'h', b'i'];
        for n in 0..frame.len() {
            assert_eq!(
                Header::check(&frame[..n], 100),
                Err(DecodeError::Incomplete),
                "{n}"
            );
        }
        let h = Header::check(&frame, 100).unwrap();
        assert_eq!(
            h,
            Header {
                len: 2,
                opcode: 2,
                request_id: 9
            }
        );
        assert_eq!(h.frame_len(), frame.len());
    }

    #[test]
    fn too_large_is_known_from_the_header() {
        let header = [0, 1, 0, 1, 0x02, 0, 0, 0, 5];
        assert_eq!(
            Header::check(&header, 65536),
            Err(DecodeError::TooLarge {
                len: 65537,
                max: 65536,
                request_id: 5
            })
        );
        // Exactly at the cap is fine (just incomplete here).
        let header = [0, 1, 0, 0, 0x02, 0, 0, 0, 5];
        assert_eq!(Header::check(&header, 65536), Err(DecodeError::Incomplete));
        // The hard cap applies whatever the caller asks for.
        let header = [1, 0, 0, 1, 0x02, 0, 0, 0, 5];
        assert!(matches!(
            Header::check(&header, usize::MAX),
            Err(DecodeError::TooLarge {
                max: MAX_PAYLOAD,
                ..
            })
        ));
    }
}
