//! Property tests of the codec: every message survives encode -> check -> decode; every
//! prefix of a frame is Incomplete; decoding arbitrary or mutated bytes never panics, and
//! whatever does decode encodes back to the very same bytes (one encoding per message).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use turnstile_proto::{
    Acquire, Convert, DecodeError, ErrorCode, ErrorDetail, ErrorReply, Header, Hello, HelloOk,
    Holder, KeyState, Kind, LimitKind, LostReason, Mode, ModeKind, Push, Request, Response,
    ServerMessage, Waiter, HEADER_LEN, MAX_PAYLOAD,
};

/// A request with owned strings (a [`Request`] borrows them).
#[derive(Clone, Debug)]
enum OwnedRequest {
    Hello {
        min: u16,
        max: u16,
        timeout: u32,
        resume: Option<[u8; 16]>,
        name: Vec<u8>,
        auth: Option<(Vec<u8>, Vec<u8>)>,
    },
    Ping(Vec<u8>),
    Acquire {
        key: Vec<u8>,
        mode: Mode,
        reentrant: bool,
        ttl_ms: u32,
        wait_ms: Option<u32>,
        priority: u32,
        lock_delay_ms: u32,
    },
    Convert(Vec<u8>, bool, Option<u32>),
    Release(Vec<u8>),
    Renew(Vec<u8>, u32),
    Cancel(u32),
    Inspect(Vec<u8>),
    Locks(Option<Vec<u8>>, u32),
    Info(Vec<u8>),
    Bye(bool),
    Explain(turnstile_proto::ExplainTarget, u32),
    WaitGraph(u32),
}

impl OwnedRequest {
    fn borrow(&self) -> Request<'_> {
        match self {
            OwnedRequest::Hello {
                min,
                max,
                timeout,
                resume,
                name,
                auth,
            } => Request::Hello(Hello {
                min_version: *min,
                max_version: *max,
                session_timeout_ms: *timeout,
                resume: *resume,
                name,
                auth: auth.as_ref().map(|(u, p)| (&u[..], &p[..])),
            }),
            OwnedRequest::Ping(p) => Request::Ping(p),
            OwnedRequest::Acquire {
                key,
                mode,
                reentrant,
                ttl_ms,
                wait_ms,
                priority,
                lock_delay_ms,
            } => Request::Acquire(Acquire {
                key,
                mode: *mode,
                reentrant: *reentrant,
                ttl_ms: *ttl_ms,
                wait_ms: *wait_ms,
                priority: *priority,
                lock_delay_ms: *lock_delay_ms,
                value: None,
            }),
            OwnedRequest::Convert(k, shared, wait_ms) => Request::Convert(Convert {
                key: k,
                to: if *shared {
                    ModeKind::Shared
                } else {
                    ModeKind::Exclusive
                },
                wait_ms: *wait_ms,
            }),
            OwnedRequest::Release(k) => Request::Release { key: k },
            OwnedRequest::Renew(k, ttl) => Request::Renew {
                key: k,
                ttl_ms: *ttl,
            },
            OwnedRequest::Cancel(t) => Request::Cancel { target: *t },
            OwnedRequest::Inspect(k) => Request::Inspect { key: k },
            OwnedRequest::Locks(p, c) => Request::Locks {
                pattern: p.as_deref(),
                count: *c,
            },
            OwnedRequest::Info(s) => Request::Info { section: s },
            OwnedRequest::Bye(e) => Request::Bye { end_session: *e },
            OwnedRequest::Explain(target, count) => Request::Explain {
                target: *target,
                count: *count,
            },
            OwnedRequest::WaitGraph(count) => Request::WaitGraph { count: *count },
        }
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn bbytes(max: usize) -> impl Strategy<Value = Bytes> {
    bytes(max).prop_map(Bytes::from)
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Exclusive),
        Just(Mode::Shared),
        (any::<u32>(), any::<u32>())
            .prop_map(|(limit, permits)| Mode::Semaphore { limit, permits }),
    ]
}

fn mode_kind() -> impl Strategy<Value = ModeKind> {
    prop_oneof![
        Just(ModeKind::Exclusive),
        Just(ModeKind::Shared),
        Just(ModeKind::Semaphore)
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Lock),
        any::<u32>().prop_map(|limit| Kind::Semaphore { limit })
    ]
}

fn request() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            proptest::option::of(any::<[u8; 16]>()),
            bytes(40),
            proptest::option::of((bytes(20), bytes(20)))
        )
            .prop_map(
                |(min, max, timeout, resume, name, auth)| OwnedRequest::Hello {
                    min,
                    max,
                    timeout,
                    resume,
                    name,
                    auth
                }
            ),
        bytes(64).prop_map(OwnedRequest::Ping),
        (
            bytes(64),
            mode(),
            any::<bool>(),
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            prop_oneof![Just(0u32), any::<u32>()],
            prop_oneof![Just(0u32), any::<u32>()],
        )
            .prop_map(
                |(key, mode, reentrant, ttl_ms, wait_ms, priority, lock_delay_ms)| {
                    OwnedRequest::Acquire {
                        key,
                        mode,
                        reentrant,
                        ttl_ms,
                        wait_ms,
                        priority,
                        lock_delay_ms,
                    }
                }
            ),
        (bytes(64), any::<bool>(), proptest::option::of(any::<u32>()))
            .prop_map(|(k, s, w)| OwnedRequest::Convert(k, s, w)),
        bytes(64).prop_map(OwnedRequest::Release),
        (bytes(64), any::<u32>()).prop_map(|(k, t)| OwnedRequest::Renew(k, t)),
        any::<u32>().prop_map(OwnedRequest::Cancel),
        bytes(64).prop_map(OwnedRequest::Inspect),
        (proptest::option::of(bytes(16)), any::<u32>())
            .prop_map(|(p, c)| OwnedRequest::Locks(p, c)),
        bytes(16).prop_map(OwnedRequest::Info),
        any::<bool>().prop_map(OwnedRequest::Bye),
        (explain_target(), any::<u32>()).prop_map(|(t, c)| OwnedRequest::Explain(t, c)),
        any::<u32>().prop_map(OwnedRequest::WaitGraph),
    ]
}

fn explain_target() -> impl Strategy<Value = turnstile_proto::ExplainTarget> {
    use turnstile_proto::ExplainTarget as T;
    prop_oneof![
        Just(T::OwnSession),
        any::<u64>().prop_map(T::Session),
        any::<u64>().prop_map(T::Request),
        any::<u32>().prop_map(T::OwnRequest),
    ]
}

fn wait_edge() -> impl Strategy<Value = turnstile_proto::WaitEdge> {
    use turnstile_proto::Blocker;
    (
        any::<[u64; 6]>(),
        any::<[u32; 3]>(),
        (mode_kind(), mode_kind(), kind(), any::<bool>()),
        bbytes(20),
    )
        .prop_map(|(n, m, (mode, bmode, kind, holder), key)| {
            let blocker = if holder {
                Blocker::Holder {
                    session: n[3],
                    mode: bmode,
                    permits: m[2],
                    token: n[4],
                    ttl_ms: n[5],
                }
            } else {
                Blocker::Queued {
                    session: n[3],
                    mode: bmode,
                    permits: m[2],
                    request: n[4],
                    waited_ms: n[5],
                }
            };
            turnstile_proto::WaitEdge {
                depth: m[0],
                key,
                kind,
                waiter: n[0],
                request: n[1],
                mode,
                permits: m[1],
                waited_ms: n[2],
                blocker,
            }
        })
}

fn error_reply() -> impl Strategy<Value = ErrorReply> {
    let code = prop::sample::select(ErrorCode::ALL.to_vec());
    (code, bbytes(80), any::<u64>())
        .prop_flat_map(|(code, message, seed)| {
            let detail: BoxedStrategy<ErrorDetail> = match code {
                ErrorCode::Deadlock => prop::collection::vec((any::<u64>(), bbytes(12)), 0..6)
                    .prop_map(ErrorDetail::Deadlock)
                    .boxed(),
                ErrorCode::WrongType => kind().prop_map(ErrorDetail::WrongType).boxed(),
                ErrorCode::Limit => prop::sample::select(LimitKind::ALL.to_vec())
                    .prop_map(ErrorDetail::Limit)
                    .boxed(),
                ErrorCode::NotLeader => bbytes(24).prop_map(ErrorDetail::NotLeader).boxed(),
                ErrorCode::NoProto => (any::<u16>(), any::<u16>())
                    .prop_map(|(min, max)| ErrorDetail::NoProto { min, max })
                    .boxed(),
                _ => Just(ErrorDetail::None).boxed(),
            };
            let _ = seed;
            (Just(code), Just(message), detail)
        })
        .prop_map(|(code, message, detail)| ErrorReply {
            code,
            message,
            detail,
        })
}

fn key_state() -> impl Strategy<Value = KeyState> {
    let holder = (
        any::<u64>(),
        mode_kind(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(session, mode, token, permits, count, ttl_ms)| Holder {
            session,
            mode,
            token,
            permits,
            count,
            ttl_ms,
        });
    let waiter = (any::<u64>(), mode_kind(), any::<u32>(), any::<u64>()).prop_map(
        |(session, mode, permits, waited_ms)| Waiter {
            session,
            mode,
            permits,
            waited_ms,
        },
    );
    (
        kind(),
        any::<u64>(),
        prop::collection::vec(holder, 0..5),
        any::<bool>(),
        prop::collection::vec(waiter, 0..5),
        any::<bool>(),
    )
        .prop_map(
            |(kind, fencing, holders, holders_truncated, waiters, waiters_truncated)| KeyState {
                kind,
                fencing,
                holders,
                holders_truncated,
                waiters,
                waiters_truncated,
                values: None,
            },
        )
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        error_reply().prop_map(Response::Error),
        (
            any::<u16>(),
            any::<bool>(),
            any::<u64>(),
            any::<[u8; 16]>(),
            any::<[u32; 6]>(),
            bbytes(16)
        )
            .prop_map(|(version, resumed, session, secret, n, server_version)| {
                Response::HelloOk(HelloOk {
                    version,
                    resumed,
                    session,
                    secret,
                    session_timeout_ms: n[0],
                    max_frame: n[1],
                    max_in_flight: n[2],
                    default_ttl_ms: n[3],
                    max_ttl_ms: n[4],
                    max_key_len: n[5],
                    server_version,
                })
            }),
        Just(Response::Ok),
        bbytes(64).prop_map(Response::Pong),
        any::<u64>().prop_map(|token| Response::Granted { token }),
        Just(Response::Queued),
        Just(Response::Busy),
        any::<u32>().prop_map(|ttl_ms| Response::Renewed { ttl_ms }),
        any::<bool>().prop_map(|cancelled| Response::CancelResult { cancelled }),
        proptest::option::of(key_state()).prop_map(Response::Inspect),
        (prop::collection::vec(bbytes(20), 0..8), any::<bool>())
            .prop_map(|(keys, truncated)| Response::Locks { keys, truncated }),
        bbytes(200).prop_map(Response::Info),
        (
            any::<u64>(),
            prop::collection::vec(any::<u64>(), 0..4),
            prop::collection::vec(wait_edge(), 0..5),
            any::<bool>(),
            prop::collection::vec(any::<u64>(), 0..4),
        )
            .prop_map(|(session, waiting, edges, truncated, cycle)| {
                Response::Explain(turnstile_proto::Explanation {
                    session,
                    waiting,
                    edges,
                    truncated,
                    cycle,
                })
            }),
        (prop::collection::vec(wait_edge(), 0..5), any::<bool>()).prop_map(|(edges, truncated)| {
            Response::WaitGraph(turnstile_proto::WaitGraph { edges, truncated })
        }),
    ]
}

fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        any::<u64>().prop_map(|token| Push::Granted { token }),
        Just(Push::TimedOut),
        Just(Push::Cancelled),
        (
            prop_oneof![Just(LostReason::Expired), Just(LostReason::Revoked)],
            any::<u64>(),
            bbytes(32)
        )
            .prop_map(|(reason, token, key)| Push::LeaseLost { reason, token, key }),
        (any::<u64>(), mode_kind(), any::<u32>(), bbytes(32)).prop_map(
            |(session, mode, permits, key)| Push::Waiting {
                session,
                mode,
                permits,
                key
            }
        ),
    ]
}

/// Every decodable frame at the front of `buf` decodes without panicking, both as a
/// request and as a server message; one that decodes re-encodes to the same bytes.
fn decode_everything(buf: &[u8]) {
    let mut rest = buf;
    while let Ok(h) = Header::check(rest, MAX_PAYLOAD) {
        let payload = &rest[HEADER_LEN..h.frame_len()];
        if let Ok(req) = Request::decode(&h, payload) {
            let mut again = BytesMut::new();
            req.encode(h.request_id, &mut again);
            assert_eq!(&again[..], &rest[..h.frame_len()], "{req:?}");
        }
        match ServerMessage::decode(&h, payload) {
            Ok(ServerMessage::Response(r)) => {
                let mut again = BytesMut::new();
                r.encode(h.request_id, &mut again);
                assert_eq!(&again[..], &rest[..h.frame_len()], "{r:?}");
            }
            Ok(ServerMessage::Push(p)) => {
                let mut again = BytesMut::new();
                p.encode(h.request_id, &mut again);
                assert_eq!(&again[..], &rest[..h.frame_len()], "{p:?}");
            }
            Err(DecodeError::Malformed { opcode, .. }) => assert_eq!(opcode, h.opcode),
            Err(e) => panic!("payload decoders only say Malformed, got {e:?}"),
        }
        rest = &rest[h.frame_len()..];
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip(req in request(), id in any::<u32>()) {
        let req_ref = req.borrow();
        let mut out = BytesMut::new();
        req_ref.encode(id, &mut out);
        let h = Header::check(&out, MAX_PAYLOAD).unwrap();
        prop_assert_eq!(h.request_id, id);
        prop_assert_eq!(h.frame_len(), out.len());
        let decoded = Request::decode(&h, &out[HEADER_LEN..]).unwrap();
        prop_assert_eq!(decoded, req_ref);
    }

    #[test]
    fn responses_round_trip(resp in response(), id in any::<u32>()) {
        let mut out = BytesMut::new();
        resp.encode(id, &mut out);
        let h = Header::check(&out, MAX_PAYLOAD).unwrap();
        prop_assert_eq!(h.request_id, id);
        prop_assert_eq!(h.frame_len(), out.len());
        let decoded = ServerMessage::decode(&h, &out[HEADER_LEN..]).unwrap();
        prop_assert_eq!(decoded, ServerMessage::Response(resp));
    }

    #[test]
    fn pushes_round_trip(push in push(), id in any::<u32>()) {
        let mut out = BytesMut::new();
        push.encode(id, &mut out);
        let h = Header::check(&out, MAX_PAYLOAD).unwrap();
        let decoded = ServerMessage::decode(&h, &out[HEADER_LEN..]).unwrap();
        prop_assert_eq!(decoded, ServerMessage::Push(push));
    }

    /// Several frames back to back split where the headers say, and every strict prefix
    /// of a frame is Incomplete (never TooLarge, never a wrong frame).
    #[test]
    fn streams_split_and_prefixes_are_incomplete(reqs in prop::collection::vec(request(), 1..6)) {
        let mut out = BytesMut::new();
        let mut ends = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            r.borrow().encode(i as u32, &mut out);
            ends.push(out.len());
        }
        let mut start = 0;
        for (i, end) in ends.iter().enumerate() {
            for cut in start..*end {
                prop_assert_eq!(Header::check(&out[start..cut], MAX_PAYLOAD), Err(DecodeError::Incomplete));
            }
            let h = Header::check(&out[start..], MAX_PAYLOAD).unwrap();
            prop_assert_eq!(h.request_id, i as u32);
            prop_assert_eq!(start + h.frame_len(), *end);
            let decoded = Request::decode(&h, &out[start + HEADER_LEN..*end]).unwrap();
            prop_assert_eq!(decoded, reqs[i].borrow());
            start = *end;
        }
    }

    /// A frame over the caller's cap is TooLarge from its header alone, whatever follows.
    #[test]
    fn over_the_cap_is_too_large(len in 1025u32.., op in any::<u8>(), id in any::<u32>(), tail in bytes(16)) {
        let mut buf = len.to_be_bytes().to_vec();
        buf.push(op);
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&tail);
        let err = Header::check(&buf, 1024).unwrap_err();
        prop_assert_eq!(err, DecodeError::TooLarge { len, max: 1024, request_id: id });
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in bytes(256)) {
        decode_everything(&buf);
    }

    /// Frames with a valid header and an arbitrary payload, for every opcode.
    #[test]
    fn arbitrary_payloads_never_panic(op in any::<u8>(), id in any::<u32>(), payload in bytes(96)) {
        let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
        buf.push(op);
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&payload);
        decode_everything(&buf);
    }

    /// Valid frames with one byte changed or cut short somewhere.
    #[test]
    fn mutated_frames_never_panic(
        resp in response(),
        req in request(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        for which in 0..2 {
            let mut out = BytesMut::new();
            if which == 0 { resp.encode(1, &mut out) } else { req.borrow().encode(1, &mut out) }
            let mut buf = out.to_vec();
            let i = pos.index(buf.len());
            buf[i] = byte;
            decode_everything(&buf);
            let c = cut.index(buf.len());
            decode_everything(&buf[..c]);
        }
    }
}
