//! The raft type configuration (declared once, STYLE habit 14) and the types it names.
//!
//! - The app data ([`Request`]) is one encoded [`crate::durable::command::Entry`] record:
//!   the same bytes the standalone WAL logs, so replay, snapshots and the engine see one
//!   format whatever carried the entry.
//! - The response ([`Response`]) is what applying the entry did: the
//!   [`Applied`] outcome and the [`Event`]s it caused for other sessions, in engine types.
//!   openraft's `serde` feature requires responses to be serializable although they never
//!   leave the node; the serde impls go through a private mirror of the engine types
//!   (`wire`), so the engine itself stays free of serde.
//! - Nodes are [`NodeAddr`]: where peers reach the node's raft listener, and where clients
//!   reach its lock service (what a `NOTLEADER host:port` reply names).

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::durable::command::Applied;
use crate::engine::Event;

/// A node's id in the cluster (openraft's `NodeId`).
pub type NodeId = u64;

/// Where a node is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAddr {
    /// `host:port` of the node's raft listener (peer traffic).
    pub raft: String,
    /// `host:port` clients use (text and binary protocol); named in redirects.
    pub client: String,
}

impl NodeAddr {
    /// A node reached at `raft` by peers and at `client` by clients.
    pub fn new(raft: impl Into<String>, client: impl Into<String>) -> NodeAddr {
        NodeAddr {
            raft: raft.into(),
            client: client.into(),
        }
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} client={}", self.raft, self.client)
    }
}

/// One replicated command: an encoded [`crate::durable::command::Entry`] record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Vec<u8>);

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Records can be long; the tag byte and length say enough in logs.
        write!(
            f,
            "Request(tag {:?}, {} bytes)",
            self.0.first(),
            self.0.len()
        )
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What applying one log entry did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The command's outcome; `None` for raft's own entries (blank, membership) and for a
    /// record that does not decode (which changes nothing, on every node alike).
    pub applied: Option<Applied>,
    /// What the command caused for other sessions (grants to queued requests, expiries,
    /// timeouts), in the order the engine produced them.
    pub events: Vec<Event>,
    /// For a batch entry ([`super::batch`]): each record's outcome, in order (`applied`
    /// is then `None`).
    pub batch: Vec<Option<Applied>>,
}

openraft::declare_raft_types!(
    /// Turnstile's raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeAddr,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Short names for openraft's generic types, instantiated once.
pub mod typ {
    use super::{NodeAddr, NodeId, TypeConfig};

    /// The raft handle.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// A log entry.
    pub type Entry = openraft::Entry<TypeConfig>;
    /// A log entry's payload.
    pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
    /// A log id: (term, leader) and index.
    pub type LogId = openraft::LogId<NodeId>;
    /// A vote.
    pub type Vote = openraft::Vote<NodeId>;
    /// A membership config.
    pub type Membership = openraft::Membership<NodeId, NodeAddr>;
    /// A membership config and the log id it was logged at.
    pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
    /// A snapshot.
    pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
    /// A storage error.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// openraft's metrics.
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeAddr>;
    /// An error of a raft API call.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    /// An error of an RPC to a peer.
    pub type RpcError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, NodeAddr, RaftError<E>>;
    /// Why a write was refused.
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, NodeAddr>;
    /// Why a read index could not be had.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, NodeAddr>;
    /// Where the leader is.
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, NodeAddr>;
    /// Why initialize failed.
    pub type InitializeError = openraft::error::InitializeError<NodeId, NodeAddr>;
}

impl Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        wire::ResponseWire::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Response, D::Error> {
        wire::ResponseWire::deserialize(d).map(Response::from)
    }
}

/// A serde mirror of the engine's outcome and event types.
mod wire {
    use serde::{Deserialize, Serialize};

    use super::Response;
    use crate::durable::command::Applied;
    use crate::engine::{
        AcquireOutcome, Cycle, Event, FencingToken, Key, Kind, LimitKind, MultiOutcome, NotHeld,
        RequestId, SessionId,
    };

    #[derive(Serialize, Deserialize)]
    pub(super) struct ResponseWire {
        applied: Option<AppliedWire>,
        events: Vec<EventWire>,
        batch: Vec<Option<AppliedWire>>,
    }

    #[derive(Serialize, Deserialize)]
    enum AppliedWire {
        Done,
        Acquire(OutcomeWire),
        Release(bool),
        Cancel(bool),
        ForceRelease(Vec<(u64, u64)>),
        MultiAcquire(MultiWire),
        MultiRelease(u64),
        /// None: NOTHELD.
        Convert(Option<OutcomeWire>),
        SetValue(bool),
    }

    /// A multi-lock's outcome: its tokens, or a single ACQUIRE's outcome of the same
    /// meaning (with the index of the key a WRONGTYPE names).
    #[derive(Serialize, Deserialize)]
    enum MultiWire {
        Granted(Vec<u64>),
        Other(OutcomeWire, u64),
    }

    impl From<&MultiOutcome> for MultiWire {
        fn from(o: &MultiOutcome) -> MultiWire {
            let single = match o {
                MultiOutcome::Granted(tokens) => {
                    return MultiWire::Granted(tokens.iter().map(|t| t.0).collect())
                }
                MultiOutcome::Queued => AcquireOutcome::Queued,
                MultiOutcome::WouldBlock => AcquireOutcome::WouldBlock,
                MultiOutcome::Deadlock(c) => AcquireOutcome::Deadlock(c.clone()),
                MultiOutcome::WrongType { index, current } => {
                    return MultiWire::Other(
                        OutcomeWire::from(&AcquireOutcome::WrongType { current: *current }),
                        *index as u64,
                    )
                }
                MultiOutcome::Limit(l) => AcquireOutcome::Limit(*l),
            };
            MultiWire::Other(OutcomeWire::from(&single), 0)
        }
    }

    impl From<MultiWire> for MultiOutcome {
        fn from(w: MultiWire) -> MultiOutcome {
            match w {
                MultiWire::Granted(tokens) => {
                    MultiOutcome::Granted(tokens.into_iter().map(FencingToken).collect())
                }
                MultiWire::Other(o, index) => match AcquireOutcome::from(o) {
                    AcquireOutcome::Granted(t) => MultiOutcome::Granted(vec![t]),
                    AcquireOutcome::Queued => MultiOutcome::Queued,
                    AcquireOutcome::WouldBlock => MultiOutcome::WouldBlock,
                    AcquireOutcome::Deadlock(c) => MultiOutcome::Deadlock(c),
                    AcquireOutcome::WrongType { current } => MultiOutcome::WrongType {
                        index: index as usize,
                        current,
                    },
                    AcquireOutcome::Limit(l) => MultiOutcome::Limit(l),
                },
            }
        }
    }

    #[derive(Serialize, Deserialize)]
    enum OutcomeWire {
        Granted(u64),
        Queued,
        WouldBlock,
        Deadlock {
            sessions: Vec<u64>,
            keys: Vec<Vec<u8>>,
        },
        WrongType(KindWire),
        Limit(u8),
    }

    #[derive(Serialize, Deserialize)]
    enum KindWire {
        Lock,
        Semaphore(u32),
    }

    #[derive(Serialize, Deserialize)]
    enum EventWire {
        Granted {
            session: u64,
            request: u64,
            key: Vec<u8>,
            token: u64,
        },
        TimedOut {
            session: u64,
            request: u64,
            key: Vec<u8>,
        },
        Expired {
            session: u64,
            key: Vec<u8>,
            token: u64,
        },
        DelayEnded {
            key: Vec<u8>,
        },
    }

    impl From<&Response> for ResponseWire {
        fn from(r: &Response) -> ResponseWire {
            ResponseWire {
                applied: r.applied.as_ref().map(AppliedWire::from),
                events: r.events.iter().map(EventWire::from).collect(),
                batch: r
                    .batch
                    .iter()
                    .map(|a| a.as_ref().map(AppliedWire::from))
                    .collect(),
            }
        }
    }

    impl From<ResponseWire> for Response {
        fn from(w: ResponseWire) -> Response {
            Response {
                applied: w.applied.map(Applied::from),
                events: w.events.into_iter().map(Event::from).collect(),
                batch: w.batch.into_iter().map(|a| a.map(Applied::from)).collect(),
            }
        }
    }

    impl From<&Applied> for AppliedWire {
        fn from(a: &Applied) -> AppliedWire {
            match a {
                Applied::Done => AppliedWire::Done,
                Applied::Acquire(o) => AppliedWire::Acquire(OutcomeWire::from(o)),
                Applied::Release(r) => AppliedWire::Release(r.is_ok()),
                Applied::Cancel(c) => AppliedWire::Cancel(*c),
                Applied::ForceRelease(d) => {
                    AppliedWire::ForceRelease(d.iter().map(|(s, t)| (s.0, t.0)).collect())
                }
                Applied::MultiAcquire(o) => AppliedWire::MultiAcquire(MultiWire::from(o)),
                Applied::MultiRelease(n) => AppliedWire::MultiRelease(*n as u64),
                Applied::Convert(r) => AppliedWire::Convert(r.as_ref().ok().map(OutcomeWire::from)),
                Applied::SetValue(r) => AppliedWire::SetValue(r.is_ok()),
            }
        }
    }

    impl From<AppliedWire> for Applied {
        fn from(w: AppliedWire) -> Applied {
            match w {
                AppliedWire::Done => Applied::Done,
                AppliedWire::Acquire(o) => Applied::Acquire(AcquireOutcome::from(o)),
                AppliedWire::Release(ok) => {
                    Applied::Release(if ok { Ok(()) } else { Err(NotHeld) })
                }
                AppliedWire::Cancel(c) => Applied::Cancel(c),
                AppliedWire::Convert(o) => {
                    Applied::Convert(o.map(AcquireOutcome::from).ok_or(NotHeld))
                }
                AppliedWire::ForceRelease(d) => Applied::ForceRelease(
                    d.into_iter()
                        .map(|(s, t)| (SessionId(s), FencingToken(t)))
                        .collect(),
                ),
                AppliedWire::MultiAcquire(m) => Applied::MultiAcquire(MultiOutcome::from(m)),
                AppliedWire::MultiRelease(n) => Applied::MultiRelease(n as usize),
                AppliedWire::SetValue(ok) => {
                    Applied::SetValue(if ok { Ok(()) } else { Err(NotHeld) })
                }
            }
        }
    }

    fn limit_code(l: LimitKind) -> u8 {
        match l {
            LimitKind::WaitersPerKey => 0,
            LimitKind::HoldsPerSession => 1,
            LimitKind::Keys => 2,
        }
    }

    fn limit_kind(code: u8) -> LimitKind {
        match code {
            0 => LimitKind::WaitersPerKey,
            1 => LimitKind::HoldsPerSession,
            _ => LimitKind::Keys,
        }
    }

    impl From<&AcquireOutcome> for OutcomeWire {
        fn from(o: &AcquireOutcome) -> OutcomeWire {
            match o {
                AcquireOutcome::Granted(t) => OutcomeWire::Granted(t.0),
                AcquireOutcome::Queued => OutcomeWire::Queued,
                AcquireOutcome::WouldBlock => OutcomeWire::WouldBlock,
                AcquireOutcome::Deadlock(c) => OutcomeWire::Deadlock {
                    sessions: c.sessions.iter().map(|s| s.0).collect(),
                    keys: c.keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
                },
                AcquireOutcome::WrongType { current } => OutcomeWire::WrongType(match current {
                    Kind::Lock => KindWire::Lock,
                    Kind::Semaphore { limit } => KindWire::Semaphore(*limit),
                }),
                AcquireOutcome::Limit(l) => OutcomeWire::Limit(limit_code(*l)),
            }
        }
    }

    impl From<OutcomeWire> for AcquireOutcome {
        fn from(w: OutcomeWire) -> AcquireOutcome {
            match w {
                OutcomeWire::Granted(t) => AcquireOutcome::Granted(FencingToken(t)),
                OutcomeWire::Queued => AcquireOutcome::Queued,
                OutcomeWire::WouldBlock => AcquireOutcome::WouldBlock,
                OutcomeWire::Deadlock { sessions, keys } => AcquireOutcome::Deadlock(Cycle {
                    sessions: sessions.into_iter().map(SessionId).collect(),
                    keys: keys.iter().map(|k| Key::new(k)).collect(),
                }),
                OutcomeWire::WrongType(k) => AcquireOutcome::WrongType {
                    current: match k {
                        KindWire::Lock => Kind::Lock,
                        KindWire::Semaphore(limit) => Kind::Semaphore { limit },
                    },
                },
                OutcomeWire::Limit(code) => AcquireOutcome::Limit(limit_kind(code)),
            }
        }
    }

    impl From<&Event> for EventWire {
        fn from(e: &Event) -> EventWire {
            match e {
                Event::Granted {
                    session,
                    request,
                    key,
                    token,
                } => EventWire::Granted {
                    session: session.0,
                    request: request.0,
                    key: key.as_bytes().to_vec(),
                    token: token.0,
                },
                Event::TimedOut {
                    session,
                    request,
                    key,
                } => EventWire::TimedOut {
                    session: session.0,
                    request: request.0,
                    key: key.as_bytes().to_vec(),
                },
                Event::Expired {
                    session,
                    key,
                    token,
                } => EventWire::Expired {
                    session: session.0,
                    key: key.as_bytes().to_vec(),
                    token: token.0,
                },
                Event::DelayEnded { key } => EventWire::DelayEnded {
                    key: key.as_bytes().to_vec(),
                },
            }
        }
    }

    impl From<EventWire> for Event {
        fn from(w: EventWire) -> Event {
            match w {
                EventWire::Granted {
                    session,
                    request,
                    key,
                    token,
                } => Event::Granted {
                    session: SessionId(session),
                    request: RequestId(request),
                    key: Key::new(&key),
                    token: FencingToken(token),
                },
                EventWire::TimedOut {
                    session,
                    request,
                    key,
                } => Event::TimedOut {
                    session: SessionId(session),
                    request: RequestId(request),
                    key: Key::new(&key),
                },
                EventWire::Expired {
                    session,
                    key,
                    token,
                } => Event::Expired {
                    session: SessionId(session),
                    key: Key::new(&key),
                    token: FencingToken(token),
                },
                EventWire::DelayEnded { key } => Event::DelayEnded {
                    key: Key::new(&key),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AcquireOutcome, Cycle, FencingToken, Key, RequestId, SessionId};

    #[test]
    fn response_round_trips_through_postcard() {
        let r = Response {
            applied: Some(Applied::Acquire(AcquireOutcome::Deadlock(Cycle {
                sessions: vec![SessionId(5), SessionId(6)],
                keys: vec![Key::from("a"), Key::from("b")],
            }))),
            events: vec![Event::Granted {
                session: SessionId(2),
                request: RequestId(9),
                key: Key::from("k"),
                token: FencingToken(77),
            }],
            batch: vec![Some(Applied::Release(Ok(()))), None, Some(Applied::Done)],
        };
        let bytes = postcard::to_allocvec(&r).expect("encodes");
        let back: Response = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, r);
    }
}
