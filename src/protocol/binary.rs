//! The binary protocol as the server sees it: the wire types of `turnstile-proto`, and the
//! conversions between them and the engine's vocabulary. Error messages are the text-mode
//! ones (the same helpers build both), so the two modes share one table of codes and
//! words; only the framing differs.

pub use turnstile_proto::{
    frame, op, Acquire, Convert, DecodeError, ErrorCode, ErrorDetail, ErrorReply, Header, Hello,
    HelloOk, Holder, HolderValue, KeyState, Kind, LimitKind, LostReason, Mode, ModeKind,
    MultiAcquire, Push, Request, Response, ServerMessage, HEADER_LEN, HELLO_MAX_PAYLOAD, MAGIC,
    MAX_PAYLOAD, MAX_STR, MAX_VERSION, MIN_VERSION, SECRET_LEN,
};

use bytes::Bytes;

use crate::cmd::acquire::{deadlock_message, wrongtype_message};
use crate::engine;

/// The engine's mode for a wire mode (numbers already validated).
pub fn mode_from_wire(mode: Mode) -> engine::Mode {
    match mode {
        Mode::Exclusive => engine::Mode::Exclusive,
        Mode::Shared => engine::Mode::Shared,
        Mode::Semaphore { limit, permits } => engine::Mode::Semaphore { limit, permits },
    }
}

/// The engine's mode a CONVERT asks for (the decoder allows only EXCLUSIVE and SHARED).
pub fn convert_mode(to: ModeKind) -> engine::Mode {
    match to {
        ModeKind::Shared => engine::Mode::Shared,
        _ => engine::Mode::Exclusive,
    }
}

/// The wire mode byte of an engine mode.
pub fn mode_kind(mode: engine::Mode) -> ModeKind {
    match mode {
        engine::Mode::Exclusive => ModeKind::Exclusive,
        engine::Mode::Shared => ModeKind::Shared,
        engine::Mode::Semaphore { .. } => ModeKind::Semaphore,
    }
}

/// The wire kind of an engine kind.
pub fn kind_to_wire(kind: engine::Kind) -> Kind {
    match kind {
        engine::Kind::Lock => Kind::Lock,
        engine::Kind::Semaphore { limit } => Kind::Semaphore { limit },
    }
}

/// The wire limit kind of an engine limit.
pub fn limit_to_wire(limit: engine::LimitKind) -> LimitKind {
    match limit {
        engine::LimitKind::WaitersPerKey => LimitKind::WaitersPerKey,
        engine::LimitKind::HoldsPerSession => LimitKind::HoldsPerSession,
        engine::LimitKind::Keys => LimitKind::Keys,
    }
}

/// An INSPECT result from the engine's view of a key.
pub fn key_state(info: &engine::KeyInfo) -> KeyState {
    let (max_holders, max_waiters) = KeyState::max_entries();
    KeyState {
        kind: kind_to_wire(info.kind),
        fencing: info.fencing.0,
        holders: info
            .holders
            .iter()
            .take(max_holders)
            .map(|h| Holder {
                session: h.session.0,
                mode: mode_kind(h.mode),
                token: h.token.0,
                permits: h.permits,
                count: h.count,
                ttl_ms: h.ttl_ms,
            })
            .collect(),
        holders_truncated: info.holders.len() > max_holders,
        waiters: info
            .waiters
            .iter()
            .take(max_waiters)
            .map(|w| turnstile_proto::Waiter {
                session: w.session.0,
                mode: mode_kind(w.mode),
                permits: w.permits,
                waited_ms: w.waited_ms,
            })
            .collect(),
        waiters_truncated: info.waiters.len() > max_waiters,
        values: None,
    }
}

/// A watch message as a PUSH_WATCH.
pub fn watch_push(msg: &crate::server::watches::WatchMsg) -> Push {
    use crate::engine::Cause;
    use crate::server::watches::{HolderState, WatchEvent as E};
    use turnstile_proto::{EndCause, WatchEvent, WatchedHold};
    let hold = |h: &HolderState| WatchedHold {
        session: h.session,
        mode: mode_kind(h.mode),
        token: h.token,
        value: h
            .value
            .as_deref()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
    };
    let event = match &msg.event {
        E::State { fencing, holders } => WatchEvent::State {
            fencing: *fencing,
            holders: holders.iter().map(hold).collect(),
        },
        E::Granted(h) => WatchEvent::Granted(hold(h)),
        E::Released(h) => WatchEvent::Released(hold(h)),
        E::Expired(h, cause) => WatchEvent::Expired(
            hold(h),
            match cause {
                Cause::Lease => EndCause::Lease,
                Cause::Session => EndCause::Session,
                Cause::Forced => EndCause::Forced,
            },
        ),
        E::Value(h) => WatchEvent::Value(hold(h)),
    };
    Push::Watch {
        key: Bytes::copy_from_slice(msg.key.as_bytes()),
        event,
    }
}

/// An error reply from a text-mode error line (`"LIMIT TTL ..."`): the first word is the
/// code, the rest the message.
pub fn error_from_text(line: &str) -> ErrorReply {
    let (code, message) = ErrorCode::split_text(line);
    ErrorReply::new(code, Bytes::copy_from_slice(message.as_bytes()))
}

/// DEADLOCK naming the cycle, in words (as text mode says it) and in fields.
pub fn deadlock_error(cycle: &engine::Cycle) -> ErrorReply {
    let mut e = error_from_text(&deadlock_message(cycle));
    e.detail = ErrorDetail::Deadlock(
        cycle
            .sessions
            .iter()
            .zip(&cycle.keys)
            .map(|(s, k)| (s.0, Bytes::copy_from_slice(k.as_bytes())))
            .collect(),
    );
    e
}

/// WRONGTYPE with the key's current kind.
pub fn wrongtype_error(current: engine::Kind) -> ErrorReply {
    let mut e = error_from_text(&wrongtype_message(current));
    e.detail = ErrorDetail::WrongType(kind_to_wire(current));
    e
}

/// LIMIT for a limit the engine enforces.
pub fn engine_limit_error(limit: engine::LimitKind) -> ErrorReply {
    let mut e = ErrorReply::new(ErrorCode::Limit, limit.describe());
    e.detail = ErrorDetail::Limit(limit_to_wire(limit));
    e
}

/// LIMIT for another limit, with its message.
pub fn limit_error(kind: LimitKind, message: String) -> ErrorReply {
    let mut e = ErrorReply::new(ErrorCode::Limit, message);
    e.detail = ErrorDetail::Limit(kind);
    e
}

/// ERR with a message.
pub fn err(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::Err, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::acquire::validate_ttl;
    use crate::cmd::release::NOTHELD;
    use crate::engine::{Cycle, Key, SessionId};

    /// The text-mode error lines the binary server reuses start with a code of the one
    /// table, and keep their words as the message.
    #[test]
    fn text_errors_map_onto_the_code_table() {
        let cycle = Cycle {
            sessions: vec![SessionId(1), SessionId(2)],
            keys: vec![Key::from("a"), Key::from("b")],
        };
        let e = deadlock_error(&cycle);
        assert_eq!(e.code, ErrorCode::Deadlock);
        assert_eq!(e.text(), deadlock_message(&cycle));
        assert_eq!(
            e.detail,
            ErrorDetail::Deadlock(vec![(1, Bytes::from("a")), (2, Bytes::from("b"))])
        );
        assert_eq!(
            wrongtype_error(engine::Kind::Semaphore { limit: 3 }).detail,
            ErrorDetail::WrongType(Kind::Semaphore { limit: 3 })
        );
        assert_eq!(error_from_text(NOTHELD).code, ErrorCode::NotHeld);
        assert_eq!(error_from_text(NOTHELD).text(), NOTHELD);
        assert_eq!(
            error_from_text(&validate_ttl(0, 10).unwrap_err()).code,
            ErrorCode::Err
        );
        assert_eq!(
            error_from_text(&validate_ttl(11, 10).unwrap_err()).code,
            ErrorCode::Limit
        );
        for limit in [
            engine::LimitKind::WaitersPerKey,
            engine::LimitKind::HoldsPerSession,
            engine::LimitKind::Keys,
        ] {
            assert_eq!(engine_limit_error(limit).code, ErrorCode::Limit);
        }
    }
}
