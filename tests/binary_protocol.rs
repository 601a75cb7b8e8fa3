//! The binary protocol over real sockets, frame by frame: handshake and refusals, every
//! operation, out-of-order replies, CANCEL, pushes, errors with their fields, and text
//! mode still answering on the same port.

mod common;

use std::time::Duration;

use common::*;
use turnstile::protocol::binary::{
    self as bin, ErrorCode, ErrorDetail, Kind, LimitKind, LostReason, Mode, ModeKind, Push,
    Request, Response, ServerMessage,
};
use turnstile::Config;

fn error(r: Response) -> bin::ErrorReply {
    match r {
        Response::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn token(r: Response) -> u64 {
    match r {
        Response::Granted { token } => token,
        other => panic!("expected GRANTED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_reports_session_and_limits() {
    let server = Server::start_with(Config {
        max_frame: 4096,
        max_in_flight: 7,
        default_ttl_ms: 1234,
        max_key_len: 100,
        ..Config::default()
    })
    .await;
    let a = Bin::connect(server.addr).await;
    let b = Bin::connect(server.addr).await;
    let (ok_a, ok_b) = (a.ok.clone().unwrap(), b.ok.clone().unwrap());
    assert_eq!(ok_a.version, 1);
    assert!(!ok_a.resumed);
    assert!(ok_a.session > 0);
    assert_ne!(ok_a.session, ok_b.session);
    assert_ne!(ok_a.secret, ok_b.secret, "secrets are random");
    assert_eq!(ok_a.max_frame, 4096);
    assert_eq!(ok_a.max_in_flight, 7);
    assert_eq!(ok_a.default_ttl_ms, 1234);
    assert_eq!(ok_a.max_key_len, 100);
    assert_eq!(ok_a.session_timeout_ms, 10_000, "the default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeout_is_clamped_into_the_configured_range() {
    let server = Server::start_with(Config {
        max_session_timeout_ms: 2_000,
        ..Config::default()
    })
    .await;
    for (asked, got) in [(1, 100), (500, 500), (60_000, 2_000)] {
        let b = Bin::connect_with(
            server.addr,
            &bin::Hello {
                session_timeout_ms: asked,
                ..hello()
            },
        )
        .await;
        assert_eq!(b.ok.unwrap().session_timeout_ms, got, "asked {asked}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_versions_are_refused_with_the_supported_range() {
    let server = Server::start().await;
    let (mut b, res) = Bin::handshake(
        server.addr,
        &bin::Hello {
            min_version: 2,
            max_version: 9,
            ..hello()
        },
    )
    .await;
    let e = res.unwrap_err();
    assert_eq!(e.code, ErrorCode::NoProto);
    assert_eq!(e.detail, ErrorDetail::NoProto { min: 1, max: 1 });
    b.closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_magic_or_first_frame_is_refused() {
    let server = Server::start().await;
    let mut b = Bin::open(server.addr).await;
    b.send_raw(&[0xF5, b'X', b'Y', b'Z', 0, 0]).await;
    let frames = b.closed().await;
    assert!(
        matches!(&frames[..], [ServerMessage::Response(Response::Error(e))] if e.code == ErrorCode::NoProto),
        "{frames:?}"
    );

    let mut b = Bin::open(server.addr).await;
    b.send_raw(&bin::MAGIC).await;
    b.send(3, Request::Ping(b"hi")).await;
    let frames = b.closed().await;
    assert!(
        matches!(&frames[..], [ServerMessage::Response(Response::Error(e))] if e.code == ErrorCode::Err),
        "{frames:?}"
    );

    // A HELLO over its cap.
    let mut b = Bin::open(server.addr).await;
    let mut out = bin::MAGIC.to_vec();
    out.extend_from_slice(&(bin::HELLO_MAX_PAYLOAD as u32 + 1).to_be_bytes());
    out.extend_from_slice(&[bin::op::HELLO, 0, 0, 0, 0]);
    b.send_raw(&out).await;
    let frames = b.closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_still_works_on_the_same_port() {
    let server = Server::start().await;
    let mut b = Bin::connect(server.addr).await;
    let mut con = server.redis().await;
    let t = acquire(&mut con, "shared-port", &[]).await;
    let r = b
        .call(1, acq(b"shared-port", Mode::Exclusive, 0, Some(0)))
        .await;
    assert_eq!(r, Response::Busy);
    let info = inspect(&mut con, "shared-port").await.unwrap();
    assert_eq!(info.fencing, t);
    let pong: String = ok(&mut con, &["PING"]).await;
    assert_eq!(pong, "PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_in_the_handshake() {
    let server = Server::start_with(Config {
        requirepass: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    let (mut b, res) = Bin::handshake(server.addr, &hello()).await;
    assert_eq!(res.unwrap_err().code, ErrorCode::NoAuth);
    b.closed().await;
    let (mut b, res) = Bin::handshake(
        server.addr,
        &bin::Hello {
            auth: Some((b"default", b"wrong")),
            ..hello()
        },
    )
    .await;
    assert_eq!(res.unwrap_err().code, ErrorCode::WrongPass);
    b.closed().await;
    let (_, res) = Bin::handshake(
        server.addr,
        &bin::Hello {
            auth: Some((b"someone", b"s3cret")),
            ..hello()
        },
    )
    .await;
    assert_eq!(res.unwrap_err().code, ErrorCode::WrongPass);
    let mut b = Bin::connect_with(
        server.addr,
        &bin::Hello {
            auth: Some((b"default", b"s3cret")),
            ..hello()
        },
    )
    .await;
    assert!(matches!(
        b.call(1, Request::Ping(b"")).await,
        Response::Pong(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_names_are_refused() {
    let server = Server::start().await;
    for name in [&b"has space"[..], b"new\nline", &[b'x'; 256]] {
        let (_, res) = Bin::handshake(server.addr, &bin::Hello { name, ..hello() }).await;
        assert_eq!(res.unwrap_err().code, ErrorCode::Err);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation() {
    let server = Server::start().await;
    let mut b = Bin::connect(server.addr).await;
    let me = b.session();

    assert_eq!(
        b.call(1, Request::Ping(b"echo me")).await,
        Response::Pong(bytes::Bytes::from_static(b"echo me"))
    );
    let t1 = token(b.call(2, acq(b"ops", Mode::Exclusive, 5000, None)).await);
    assert!(t1 > 0);
    match b.call(3, Request::Inspect { key: b"ops" }).await {
        Response::Inspect(Some(s)) => {
            assert_eq!(s.kind, Kind::Lock);
            assert_eq!(s.fencing, t1);
            assert_eq!(s.holders.len(), 1);
            assert_eq!(s.holders[0].session, me);
            assert_eq!(s.holders[0].token, t1);
            assert_eq!(s.holders[0].mode, ModeKind::Exclusive);
            assert!(s.holders[0].ttl_ms <= 5000 && s.holders[0].ttl_ms > 4000);
            assert!(s.waiters.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.call(
            4,
            Request::Renew {
                key: b"ops",
                ttl_ms: 20_000
            }
        )
        .await,
        Response::Renewed { ttl_ms: 20_000 }
    );
    assert_eq!(
        b.call(
            5,
            Request::Renew {
                key: b"ops",
                ttl_ms: 0
            }
        )
        .await,
        Response::Renewed { ttl_ms: 20_000 },
        "ttl 0 keeps the last TTL"
    );
    // Shared, semaphore and reentrant holds.
    let s1 = token(b.call(6, acq(b"ops-rw", Mode::Shared, 0, None)).await);
    let sem = token(
        b.call(
            7,
            acq(
                b"ops-sem",
                Mode::Semaphore {
                    limit: 3,
                    permits: 2,
                },
                0,
                None,
            ),
        )
        .await,
    );
    assert!(sem > 0);
    let again = token(
        b.call(
            8,
            Request::Acquire(bin::Acquire {
                key: b"ops-rw",
                mode: Mode::Shared,
                reentrant: true,
                ttl_ms: 0,
                wait_ms: None,
                priority: 0,
                lock_delay_ms: 0,
                value: None,
            }),
        )
        .await,
    );
    assert_eq!(again, s1, "reentrant: the same token");
    match b
        .call(
            9,
            Request::Locks {
                pattern: Some(b"ops*"),
                count: 0,
            },
        )
        .await
    {
        Response::Locks {
            mut keys,
            truncated,
        } => {
            keys.sort();
            assert_eq!(keys, ["ops", "ops-rw", "ops-sem"]);
            assert!(!truncated);
        }
        other => panic!("{other:?}"),
    }
    match b
        .call(
            10,
            Request::Locks {
                pattern: None,
                count: 2,
            },
        )
        .await
    {
        Response::Locks { keys, .. } => assert_eq!(keys.len(), 2),
        other => panic!("{other:?}"),
    }
    match b.call(11, Request::Info { section: b"locks" }).await {
        Response::Info(text) => {
            let text = String::from_utf8(text.to_vec()).unwrap();
            assert!(text.starts_with("# Locks"), "{text}");
            assert!(text.contains("holds:3"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.call(12, Request::Release { key: b"ops" }).await,
        Response::Ok
    );
    assert_eq!(
        error(b.call(13, Request::Release { key: b"ops" }).await).code,
        ErrorCode::NotHeld
    );
    assert_eq!(
        error(
            b.call(
                14,
                Request::Renew {
                    key: b"ops",
                    ttl_ms: 0
                }
            )
            .await
        )
        .code,
        ErrorCode::NotHeld
    );
    assert_eq!(
        b.call(15, Request::Inspect { key: b"ops" }).await,
        Response::Inspect(None)
    );
    // Two levels of the reentrant shared hold.
    assert_eq!(
        b.call(16, Request::Release { key: b"ops-rw" }).await,
        Response::Ok
    );
    assert_eq!(
        b.call(17, Request::Release { key: b"ops-rw" }).await,
        Response::Ok
    );
    assert_eq!(
        error(b.call(18, Request::Release { key: b"ops-rw" }).await).code,
        ErrorCode::NotHeld
    );
    // BYE: OK, then the connection closes; without END_SESSION the session lives on.
    assert_eq!(
        b.call(19, Request::Bye { end_session: false }).await,
        Response::Ok
    );
    b.closed().await;
    let mut other = Bin::connect(server.addr).await;
    match other.call(1, Request::Inspect { key: b"ops-sem" }).await {
        Response::Inspect(Some(s)) => assert_eq!(s.holders[0].session, me),
        r => panic!("{r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_come_out_of_order_and_a_queued_acquire_blocks_nothing() {
    let server = Server::start().await;
    let mut holder = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    token(holder.call(1, acq(b"ooo", Mode::Exclusive, 0, None)).await);

    // ACQUIRE (queues), then PING and INSPECT, written in one piece.
    let mut out = bytes::BytesMut::new();
    acq(b"ooo", Mode::Exclusive, 0, None).encode(100, &mut out);
    Request::Ping(b"after").encode(101, &mut out);
    acq(b"ooo-free", Mode::Exclusive, 0, None).encode(102, &mut out);
    b.send_raw(&out).await;
    assert_eq!(b.response(100).await, Response::Queued);
    assert!(matches!(b.response(101).await, Response::Pong(_)));
    token(b.response(102).await);
    // Nothing more until the holder lets go.
    assert!(b.recv_within(Duration::from_millis(100)).await.is_none());
    assert_eq!(
        holder
            .call_holder(2, Request::Release { key: b"ooo" })
            .await,
        Response::Ok
    );
    let (id, push) = b.push().await;
    assert_eq!(id, 100, "the grant names the queued request");
    assert!(matches!(push, Push::Granted { token } if token > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_queued_acquires_on_one_connection_complete_in_any_order() {
    let server = Server::start().await;
    let mut holder = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    for i in 0..5u32 {
        let key = format!("many-{i}");
        token(
            holder
                .call_holder(i, acq(key.as_bytes(), Mode::Exclusive, 0, None))
                .await,
        );
        assert_eq!(
            b.call(10 + i, acq(key.as_bytes(), Mode::Exclusive, 0, None))
                .await,
            Response::Queued
        );
    }
    for i in [3u32, 0, 4, 1, 2] {
        let key = format!("many-{i}");
        holder
            .call_holder(
                50 + i,
                Request::Release {
                    key: key.as_bytes(),
                },
            )
            .await;
        let (id, push) = b.push().await;
        assert_eq!(id, 10 + i);
        assert!(matches!(push, Push::Granted { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_by_request_id() {
    let server = Server::start().await;
    let mut holder = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    token(holder.call(1, acq(b"cx", Mode::Exclusive, 0, None)).await);
    assert_eq!(
        b.call(5, acq(b"cx", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    b.send(6, Request::Cancel { target: 5 }).await;
    assert_eq!(
        b.push().await,
        (5, Push::Cancelled),
        "the cancelled ACQUIRE ends first"
    );
    assert_eq!(
        b.response(6).await,
        Response::CancelResult { cancelled: true }
    );
    match holder.call_holder(2, Request::Inspect { key: b"cx" }).await {
        Response::Inspect(Some(s)) => assert!(s.waiters.is_empty()),
        other => panic!("{other:?}"),
    }
    // Unknown, already cancelled, or already granted: false.
    assert_eq!(
        b.call(7, Request::Cancel { target: 5 }).await,
        Response::CancelResult { cancelled: false }
    );
    assert_eq!(
        b.call(8, acq(b"cx", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    holder.call_holder(3, Request::Release { key: b"cx" }).await;
    assert!(matches!(b.push().await, (8, Push::Granted { .. })));
    assert_eq!(
        b.call(9, Request::Cancel { target: 8 }).await,
        Response::CancelResult { cancelled: false }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_hear_that_someone_waits() {
    let server = Server::start().await;
    let mut a = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    let mut c = Bin::connect(server.addr).await;
    token(a.call(1, acq(b"w", Mode::Exclusive, 0, None)).await);
    assert_eq!(
        b.call(1, acq(b"w", Mode::Shared, 0, None)).await,
        Response::Queued
    );
    let (id, push) = a.push().await;
    assert_eq!(id, 0);
    assert_eq!(
        push,
        Push::Waiting {
            session: b.session(),
            mode: ModeKind::Shared,
            permits: 1,
            key: bytes::Bytes::from_static(b"w")
        }
    );
    // C queues behind B; A hears again. When A releases, B is granted and hears that C
    // waits behind it.
    assert_eq!(
        c.call(1, acq(b"w", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    assert!(matches!(a.push().await, (0, Push::Waiting { session, .. }) if session == c.session()));
    a.call(2, Request::Release { key: b"w" }).await;
    assert!(matches!(b.push().await, (1, Push::Granted { .. })));
    assert!(matches!(b.push().await, (0, Push::Waiting { session, .. }) if session == c.session()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_lost_and_wait_timeout_are_pushed() {
    let server = Server::start().await;
    let mut a = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    let t = token(a.call(1, acq(b"ll", Mode::Exclusive, 300, None)).await);
    assert_eq!(
        b.call(1, acq(b"ll", Mode::Exclusive, 0, Some(50))).await,
        Response::Queued
    );
    assert_eq!(b.push().await, (1, Push::TimedOut));
    let (id, push) = a.recv().await;
    // First the WAITING notice of B's request, then the lease loss.
    assert_eq!(id.request_id, 0);
    assert!(matches!(push, ServerMessage::Push(Push::Waiting { .. })));
    assert_eq!(
        a.push().await,
        (
            0,
            Push::LeaseLost {
                reason: LostReason::Expired,
                token: t,
                key: bytes::Bytes::from_static(b"ll")
            }
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_names_the_cycle() {
    let server = Server::start().await;
    let mut a = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    token(a.call(1, acq(b"d1", Mode::Exclusive, 0, None)).await);
    token(b.call(1, acq(b"d2", Mode::Exclusive, 0, None)).await);
    assert_eq!(
        a.call(2, acq(b"d2", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    let _waiting = b.push().await;
    let e = error(b.call(2, acq(b"d1", Mode::Exclusive, 0, None)).await);
    assert_eq!(e.code, ErrorCode::Deadlock);
    assert_eq!(
        e.detail,
        ErrorDetail::Deadlock(vec![
            (b.session(), bytes::Bytes::from_static(b"d1")),
            (a.session(), bytes::Bytes::from_static(b"d2")),
        ])
    );
    let text = e.text();
    assert!(
        text.starts_with("DEADLOCK waiting would close a cycle:"),
        "{text}"
    );
    assert!(text.contains("'d1'") && text.contains("'d2'"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_errors_carry_their_codes_and_the_connection_lives_on() {
    let server = Server::start_with(Config {
        max_key_len: 8,
        max_semaphore: 10,
        max_ttl_ms: 60_000,
        ..Config::default()
    })
    .await;
    let mut b = Bin::connect(server.addr).await;
    let sem = |limit, permits| Mode::Semaphore { limit, permits };
    let cases: Vec<(Request, ErrorCode, Option<LimitKind>)> = vec![
        (
            acq(b"123456789", Mode::Exclusive, 0, None),
            ErrorCode::Limit,
            Some(LimitKind::Value),
        ),
        (
            Request::Release { key: b"123456789" },
            ErrorCode::Limit,
            Some(LimitKind::Value),
        ),
        (
            acq(b"k", Mode::Exclusive, 60_001, None),
            ErrorCode::Limit,
            Some(LimitKind::Value),
        ),
        (
            acq(b"k", sem(11, 1), 0, None),
            ErrorCode::Limit,
            Some(LimitKind::Value),
        ),
        (acq(b"k", sem(0, 0), 0, None), ErrorCode::Err, None),
        (acq(b"k", sem(3, 4), 0, None), ErrorCode::Err, None),
        (acq(b"k", sem(3, 0), 0, None), ErrorCode::Err, None),
        (
            Request::Renew {
                key: b"k",
                ttl_ms: 60_001,
            },
            ErrorCode::Limit,
            Some(LimitKind::Value),
        ),
        (
            Request::Acquire(bin::Acquire {
                key: b"k",
                mode: sem(3, 1),
                reentrant: true,
                ttl_ms: 0,
                wait_ms: None,
                priority: 0,
                lock_delay_ms: 0,
                value: None,
            }),
            ErrorCode::Err,
            None,
        ),
        (Request::Hello(hello()), ErrorCode::Err, None),
    ];
    for (i, (req, code, limit)) in cases.into_iter().enumerate() {
        let e = error(b.call(i as u32, req.clone()).await);
        assert_eq!(e.code, code, "{req:?}: {e}");
        if let Some(l) = limit {
            assert_eq!(e.detail, ErrorDetail::Limit(l), "{req:?}");
        }
    }
    // WRONGTYPE names the key's kind.
    token(b.call(50, acq(b"k", sem(3, 1), 0, None)).await);
    let e = error(b.call(51, acq(b"k", Mode::Exclusive, 0, None)).await);
    assert_eq!(e.code, ErrorCode::WrongType);
    assert_eq!(
        e.detail,
        ErrorDetail::WrongType(Kind::Semaphore { limit: 3 })
    );
    // A malformed payload and an unknown opcode: ERR, and the connection goes on.
    let mut raw = Vec::new();
    raw.extend_from_slice(&3u32.to_be_bytes());
    raw.push(bin::op::RELEASE);
    raw.extend_from_slice(&60u32.to_be_bytes());
    raw.extend_from_slice(&[0, 9, b'x']);
    raw.extend_from_slice(&0u32.to_be_bytes());
    raw.push(0x7F);
    raw.extend_from_slice(&61u32.to_be_bytes());
    b.send_raw(&raw).await;
    assert_eq!(error(b.response(60).await).code, ErrorCode::Err);
    assert_eq!(error(b.response(61).await).code, ErrorCode::Err);
    assert!(matches!(
        b.call(62, Request::Ping(b"")).await,
        Response::Pong(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_max_frame_closes_the_connection() {
    let server = Server::start_with(Config {
        max_frame: 1024,
        ..Config::default()
    })
    .await;
    let mut b = Bin::connect(server.addr).await;
    // Exactly at the cap: fine.
    let payload = vec![7u8; 1024];
    assert!(
        matches!(b.call(1, Request::Ping(&payload)).await, Response::Pong(p) if p.len() == 1024)
    );
    // One byte over: ERR naming the request, then closed (only the header is sent).
    let mut raw = 1025u32.to_be_bytes().to_vec();
    raw.push(bin::op::PING);
    raw.extend_from_slice(&2u32.to_be_bytes());
    b.send_raw(&raw).await;
    let frames = b.closed().await;
    match &frames[..] {
        [ServerMessage::Response(Response::Error(e))] => {
            assert_eq!(e.code, ErrorCode::Err);
            assert!(e.text().contains("over the maximum"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_counts_queued_acquires() {
    let server = Server::start_with(Config {
        max_in_flight: 2,
        ..Config::default()
    })
    .await;
    let mut holder = Bin::connect(server.addr).await;
    let mut b = Bin::connect(server.addr).await;
    for (i, key) in [b"f1", b"f2", b"f3"].into_iter().enumerate() {
        token(
            holder
                .call(i as u32, acq(key, Mode::Exclusive, 0, None))
                .await,
        );
    }
    assert_eq!(
        b.call(1, acq(b"f1", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    assert_eq!(
        b.call(2, acq(b"f2", Mode::Exclusive, 0, None)).await,
        Response::Queued
    );
    let e = error(b.call(3, acq(b"f3", Mode::Exclusive, 0, None)).await);
    assert_eq!(e.code, ErrorCode::Limit);
    assert_eq!(e.detail, ErrorDetail::Limit(LimitKind::InFlight));
    // Try-locks never queue, so they are not counted.
    assert_eq!(
        b.call(4, acq(b"f3", Mode::Exclusive, 0, Some(0))).await,
        Response::Busy
    );
    // A reused request id of a queued ACQUIRE is refused.
    b.send(5, Request::Cancel { target: 2 }).await;
    assert_eq!(b.push().await, (2, Push::Cancelled));
    assert_eq!(
        b.response(5).await,
        Response::CancelResult { cancelled: true }
    );
    assert_eq!(
        error(b.call(1, acq(b"f3", Mode::Exclusive, 0, None)).await).code,
        ErrorCode::Err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_limit() {
    let server = Server::start_with(Config {
        max_sessions: 2,
        ..Config::default()
    })
    .await;
    let _a = Bin::connect(server.addr).await;
    let b = Bin::connect(server.addr).await;
    let (_, res) = Bin::handshake(server.addr, &hello()).await;
    let e = res.unwrap_err();
    assert_eq!(e.code, ErrorCode::Limit);
    assert_eq!(e.detail, ErrorDetail::Limit(LimitKind::Sessions));
    // Ending one makes room.
    let mut b = b;
    b.call(1, Request::Bye { end_session: true }).await;
    b.closed().await;
    let mut ok = None;
    for _ in 0..100 {
        let (_, res) = Bin::handshake(server.addr, &hello()).await;
        if res.is_ok() {
            ok = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok.is_some(), "a session could be created after one ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_may_follow_the_hello_without_waiting() {
    let server = Server::start().await;
    let mut b = Bin::open(server.addr).await;
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&bin::MAGIC);
    Request::Hello(hello()).encode(0, &mut out);
    Request::Ping(b"first").encode(1, &mut out);
    acq(b"early", Mode::Exclusive, 0, None).encode(2, &mut out);
    b.send_raw(&out).await;
    assert!(matches!(b.response(0).await, Response::HelloOk(_)));
    assert_eq!(
        b.response(1).await,
        Response::Pong(bytes::Bytes::from_static(b"first"))
    );
    token(b.response(2).await);
}
