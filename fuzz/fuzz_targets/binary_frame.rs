//! Fuzzes the binary frame decoder: any bytes, split into frames as the server does, each
//! decoded as a request and as a server message. Nothing may panic; a frame that decodes
//! must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnstile_proto::bytes::BytesMut;
use turnstile_proto::{DecodeError, Header, Request, ServerMessage, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the cap, as a server configured anywhere in its range would.
    let Some((&cap, mut rest)) = data.split_first() else {
        return;
    };
    let max = 16usize << (cap % 21);
    loop {
        let h = match Header::check(rest, max) {
            Ok(h) => h,
            Err(DecodeError::Incomplete) => return,
            Err(DecodeError::TooLarge { len, .. }) => {
                assert!(len as usize > max);
                return;
            }
            Err(DecodeError::Malformed { .. }) => unreachable!("check never says Malformed"),
        };
        let frame = &rest[..h.frame_len()];
        let payload = &frame[HEADER_LEN..];
        if let Ok(req) = Request::decode(&h, payload) {
            let mut out = BytesMut::new();
            req.encode(h.request_id, &mut out);
            assert_eq!(&out[..], frame);
        }
        match ServerMessage::decode(&h, payload) {
            Ok(ServerMessage::Response(r)) => {
                let mut out = BytesMut::new();
                r.encode(h.request_id, &mut out);
                assert_eq!(&out[..], frame);
            }
            Ok(ServerMessage::Push(p)) => {
                let mut out = BytesMut::new();
                p.encode(h.request_id, &mut out);
                assert_eq!(&out[..], frame);
            }
            Err(_) => {}
        }
        rest = &rest[h.frame_len()..];
    }
});
