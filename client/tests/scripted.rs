//! The client against scripted fake nodes that speak the binary protocol, for the
//! cluster answers a real cluster gives only by chance: `ERR UNCERTAIN` (a leader that
//! lost its leadership after proposing a request) and NOTLEADER on a connection whose
//! node was the leader when the session attached. Each fake node logs every request it
//! reads, so the tests can check what the client sent where (the same request id for an
//! ACQUIRE sent again, the resume with the session's secret, the INSPECT that settles).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use turnstile_client::proto::{
    op, ErrorCode, ErrorDetail, ErrorReply, Header, HelloOk, Request, Response, HEADER_LEN, MAGIC,
    MAX_PAYLOAD,
};
use turnstile_client::Client;

const SECRET: [u8; 16] = [7; 16];
const SESSION: u64 = 5;

/// One request a fake node read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// Which connection to this node (0, 1, ...).
    conn: usize,
    op: u8,
    id: u32,
    /// The key of ACQUIRE and INSPECT; "resume" for a HELLO that resumes with `SECRET`.
    what: String,
}

enum Act {
    Reply(Response),
    Close,
}

type Script = Arc<dyn Fn(usize, &Request<'_>) -> Vec<Act> + Send + Sync>;

struct FakeNode {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNode {
    /// A node that answers every request as `script` says (PING and BYE it answers
    /// itself).
    async fn start(script: Script) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut conn = 0;
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, conn, script.clone(), log.clone()));
                conn += 1;
            }
        });
        FakeNode { addr, seen, task }
    }

    /// What it read, without the keepalive PINGs.
    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.op != op::PING)
            .cloned()
            .collect()
    }
}

async fn serve(mut stream: TcpStream, conn: usize, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut magic = [0u8; 4];
    if stream.read_exact(&mut magic).await.is_err() || magic != MAGIC {
        return;
    }
    let mut buf = BytesMut::new();
    loop {
        while let Ok(h) = Header::check(&buf, MAX_PAYLOAD) {
            let frame = buf.split_to(h.frame_len());
            let req = Request::decode(&h, &frame[HEADER_LEN..]).expect("a valid request");
            let what = match &req {
                Request::Acquire(a) => String::from_utf8_lossy(a.key).into_owned(),
                Request::Inspect { key } => String::from_utf8_lossy(key).into_owned(),
                Request::Hello(hello) if hello.resume == Some(SECRET) => "resume".into(),
                _ => String::new(),
            };
            seen.lock().unwrap().push(Seen {
                conn,
                op: h.opcode,
                id: h.request_id,
                what,
            });
            let acts = match &req {
                Request::Ping(p) => vec![Act::Reply(Response::Pong(Bytes::copy_from_slice(p)))],
                Request::Bye { .. } => vec![Act::Reply(Response::Ok), Act::Close],
                other => script(conn, other),
            };
            let mut out = BytesMut::new();
            let mut close = false;
            for act in acts {
                match act {
                    Act::Reply(r) => r.encode(h.request_id, &mut out),
                    Act::Close => close = true,
                }
            }
            if stream.write_all(&out).await.is_err() || close {
                return;
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn hello_ok(resumed: bool) -> Response {
    Response::HelloOk(HelloOk {
        version: 1,
        resumed,
        session: SESSION,
        secret: SECRET,
        session_timeout_ms: 10_000,
        max_frame: 65_536,
        max_in_flight: 1024,
        default_ttl_ms: 30_000,
        max_ttl_ms: 86_400_000,
        max_key_len: 1024,
        server_version: Bytes::from_static(b"fake"),
    })
}

fn not_leader(leader: &str) -> Response {
    let mut e = ErrorReply::new(ErrorCode::NotLeader, leader.to_string());
    e.detail = ErrorDetail::NotLeader(Bytes::copy_from_slice(leader.as_bytes()));
    Response::Error(e)
}

/// The leader to be: resumes only (a new session here would be a client bug), answers
/// INSPECT with "nothing there" and grants ACQUIREs with token 43.
fn leader_script() -> Script {
    Arc::new(|_, req| match req {
        Request::Hello(h) if h.resume == Some(SECRET) => vec![Act::Reply(hello_ok(true))],
        Request::Hello(_) => vec![
            Act::Reply(Response::Error(ErrorReply::new(
                ErrorCode::NoSession,
                "expected a resume",
            ))),
            Act::Close,
        ],
        Request::Inspect { .. } => vec![Act::Reply(Response::Inspect(None))],
        Request::Acquire(_) => vec![Act::Reply(Response::Granted { token: 43 })],
        _ => vec![Act::Reply(Response::Ok)],
    })
}

async fn connect(addr: &str) -> Client {
    within(
        "connect",
        Client::builder()
            .addrs(addr)
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .connect(),
    )
    .await
    .expect("connect")
}

/// `ERR UNCERTAIN` to an ACQUIRE (and the connection closed): the client resumes, finds
/// the key neither held nor waited for, and sends the ACQUIRE again with its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncertain_acquire_is_settled_after_the_resume() {
    let node = FakeNode::start(Arc::new(|conn, req| match req {
        Request::Hello(h) => vec![Act::Reply(hello_ok(h.resume.is_some()))],
        Request::Acquire(_) if conn == 0 => vec![
            Act::Reply(Response::Error(ErrorReply::new(
                ErrorCode::Err,
                "UNCERTAIN leadership was lost before the outcome was known (test); \
                 the request may or may not have taken effect",
            ))),
            Act::Close,
        ],
        Request::Acquire(_) => vec![Act::Reply(Response::Granted { token: 42 })],
        Request::Inspect { .. } => vec![Act::Reply(Response::Inspect(None))],
        _ => vec![Act::Reply(Response::Ok)],
    }))
    .await;
    let client = connect(&node.addr).await;
    let guard = within("acquire", client.lock("k").acquire())
        .await
        .expect("granted after the resume");
    assert_eq!(guard.token(), 42);
    assert_eq!(client.session_id(), SESSION);
    let seen = node.seen();
    let first = seen
        .iter()
        .find(|s| s.op == op::ACQUIRE)
        .expect("an ACQUIRE")
        .id;
    let at = |conn| -> Vec<(u8, String)> {
        seen.iter()
            .filter(|s| s.conn == conn)
            .map(|s| (s.op, s.what.clone()))
            .collect()
    };
    assert_eq!(
        at(0),
        [(op::HELLO, String::new()), (op::ACQUIRE, "k".into())]
    );
    assert_eq!(
        at(1),
        [
            (op::HELLO, "resume".into()),
            (op::INSPECT, "k".into()),
            (op::ACQUIRE, "k".into())
        ],
        "{seen:?}"
    );
    let again = seen
        .iter()
        .filter(|s| s.op == op::ACQUIRE)
        .nth(1)
        .expect("sent again");
    assert_eq!(again.id, first, "the same request id");
}

/// A NOTLEADER naming the leader, on a connection whose node led when the session
/// attached: the client resumes the session there, and the refused ACQUIRE (nothing was
/// done) is sent again, with its id, to the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notleader_moves_the_session_and_the_acquire_to_the_leader() {
    let leader = FakeNode::start(leader_script()).await;
    let addr = leader.addr.clone();
    let old = FakeNode::start(Arc::new(move |_, req| match req {
        Request::Hello(_) => vec![Act::Reply(hello_ok(false))],
        _ => vec![Act::Reply(not_leader(&addr))],
    }))
    .await;
    let client = connect(&old.addr).await;
    let guard = within("acquire", client.lock("k").acquire())
        .await
        .expect("granted by the leader");
    assert_eq!(guard.token(), 43);
    assert_eq!(client.server_addr(), Some(leader.addr.clone()));
    let refused = old
        .seen()
        .iter()
        .find(|s| s.op == op::ACQUIRE)
        .expect("the ACQUIRE went to the old node first")
        .id;
    let seen: Vec<(u8, String)> = leader
        .seen()
        .iter()
        .map(|s| (s.op, s.what.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (op::HELLO, "resume".into()),
            (op::INSPECT, "k".into()),
            (op::ACQUIRE, "k".into())
        ]
    );
    let sent = leader
        .seen()
        .iter()
        .find(|s| s.op == op::ACQUIRE)
        .expect("sent again")
        .id;
    assert_eq!(sent, refused, "the same request id");
}

/// A plain request (INSPECT) answered NOTLEADER is sent again once the client is on the
/// leader; the caller sees only the leader's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_answered_notleader_follows_the_session_to_the_leader() {
    let leader = FakeNode::start(leader_script()).await;
    let addr = leader.addr.clone();
    let old = FakeNode::start(Arc::new(move |_, req| match req {
        Request::Hello(_) => vec![Act::Reply(hello_ok(false))],
        _ => vec![Act::Reply(not_leader(&addr))],
    }))
    .await;
    let client = connect(&old.addr).await;
    let state = within("inspect", client.inspect("x"))
        .await
        .expect("answered by the leader");
    assert_eq!(state, None);
    assert_eq!(client.server_addr(), Some(leader.addr.clone()));
    let on_leader: Vec<(u8, String)> = leader
        .seen()
        .iter()
        .map(|s| (s.op, s.what.clone()))
        .collect();
    assert_eq!(
        on_leader,
        [(op::HELLO, "resume".into()), (op::INSPECT, "x".into())]
    );
}

/// At connect, a node that knows no leader yet (NOTLEADER without an address) is asked
/// again after a pause; once it names the leader, the client goes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_waits_while_no_leader_is_known() {
    let leader = FakeNode::start(Arc::new(|_, req| match req {
        Request::Hello(_) => vec![Act::Reply(hello_ok(false))],
        _ => vec![Act::Reply(Response::Ok)],
    }))
    .await;
    let addr = leader.addr.clone();
    let follower = FakeNode::start(Arc::new(move |conn, req| match req {
        // Three rounds without a leader, then one.
        Request::Hello(_) if conn < 3 => vec![Act::Reply(not_leader("")), Act::Close],
        Request::Hello(_) => vec![Act::Reply(not_leader(&addr)), Act::Close],
        _ => vec![Act::Close],
    }))
    .await;
    let client = connect(&follower.addr).await;
    assert_eq!(client.server_addr(), Some(leader.addr.clone()));
    assert_eq!(follower.seen().len(), 4);

    // A leader that loses its leadership while opening the session (ERR UNCERTAIN) is
    // asked again, as if no leader were known.
    let flaky = FakeNode::start(Arc::new(|conn, req| match req {
        Request::Hello(_) if conn == 0 => vec![
            Act::Reply(Response::Error(ErrorReply::new(
                ErrorCode::Err,
                "UNCERTAIN leadership was lost before the outcome was known (test)",
            ))),
            Act::Close,
        ],
        Request::Hello(_) => vec![Act::Reply(hello_ok(false))],
        _ => vec![Act::Reply(Response::Ok)],
    }))
    .await;
    let client = connect(&flaky.addr).await;
    assert_eq!(client.server_addr(), Some(flaky.addr.clone()));
    assert_eq!(flaky.seen().len(), 2);

    // With no time to wait for a leader, connecting gives up with NOTLEADER.
    let silent = FakeNode::start(Arc::new(|_, _| {
        vec![Act::Reply(not_leader("")), Act::Close]
    }))
    .await;
    let err = within(
        "connect",
        Client::builder()
            .addrs(&silent.addr)
            .leader_wait(Duration::from_millis(200))
            .connect(),
    )
    .await
    .expect_err("no leader");
    assert!(
        matches!(err, turnstile_client::Error::NotLeader { leader: None, .. }),
        "{err:?}"
    );
}
