//! What the ADMIN commands do to the server (`crate::cmd::admin` parses them): a forced
//! release, a session ended, a limit changed, each a logged command (standalone, through
//! the [`crate::durable::Store`]) or a proposed one (cluster mode), and logged at info
//! with the user that asked.
//!
//! Ending a session also lets go of whoever serves it: a binary session leaves the
//! registry and its connection is closed ([`super::sessions::Sessions::forget`]); a text
//! connection's parked ACQUIRE is answered as timed out, and its next command gets an
//! error and closes the connection (see [`super::router::Router::end_text`]).

use tracing::info;

use super::cluster::{Cluster, Refusal};
use super::Shared;
use crate::durable::command::{Applied, Command};
use crate::durable::Ticket;
use crate::engine::{Event, FencingToken, Key, LimitKind, LockTable, RequestId, SessionId};

/// A changing ADMIN command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    /// ADMIN FORCE-RELEASE key.
    ForceRelease {
        /// The key.
        key: Vec<u8>,
    },
    /// ADMIN END-SESSION id.
    EndSession(SessionId),
    /// ADMIN LIMITS SET name value.
    SetLimit {
        /// Which limit.
        limit: LimitKind,
        /// Its new value.
        value: u64,
    },
}

/// What an ADMIN command replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminReply {
    /// `:n`: holds released, or sessions ended (0 or 1).
    Count(u64),
    /// `+OK`.
    Ok,
}

/// Standalone: runs `op` for `user` through the store. Grants it caused go to `events`.
pub fn run_local(
    shared: &Shared,
    op: &AdminOp,
    user: &str,
    now: u64,
    events: &mut Vec<Event>,
) -> (AdminReply, Ticket) {
    let store = &shared.store;
    match op {
        AdminOp::ForceRelease { key } => {
            let (dropped, ticket) = store.force_release(key, user, now, events);
            log_forced(key, &dropped, user);
            (AdminReply::Count(dropped.len() as u64), ticket)
        }
        AdminOp::EndSession(session) => {
            // Without a log only the connections know which sessions exist.
            if !store.is_durable() && !shared.router.knows(*session) {
                return (AdminReply::Count(0), 0);
            }
            let queued = queued_of(store.table(), *session);
            let (ended, ticket) = store.end_session(*session, user, now, events);
            if ended {
                info!(session = %session, user, "session ended by an administrator");
                let_go(shared, *session, queued);
            }
            (AdminReply::Count(u64::from(ended)), ticket)
        }
        AdminOp::SetLimit { limit, value } => {
            let ticket = store.set_limit(*limit, *value, user, now);
            info!(
                limit = limit.name(),
                value, user, "limit changed by an administrator"
            );
            (AdminReply::Ok, ticket)
        }
    }
}

/// Cluster mode: proposes `op` for `user` (on the leader) and waits for its outcome.
pub async fn run_replicated(
    shared: &Shared,
    cluster: &Cluster,
    op: AdminOp,
    user: &str,
) -> Result<AdminReply, Refusal> {
    let now = || shared.clock.now_ms();
    match op {
        AdminOp::ForceRelease { key } => {
            // The holders as of everything committed: the entry lists them, and applying
            // it drops those still holding with the same token.
            cluster.read_barrier().await?;
            let holds = cluster.node().table().holders(&key);
            if holds.is_empty() {
                return Ok(AdminReply::Count(0));
            }
            let command = Command::ForceRelease {
                key: &key,
                user,
                holds,
            };
            match cluster.propose(now(), command).await? {
                Applied::ForceRelease(dropped) => {
                    log_forced(&key, &dropped, user);
                    Ok(AdminReply::Count(dropped.len() as u64))
                }
                other => Err(Refusal::Failed(format!("unexpected outcome {other:?}"))),
            }
        }
        AdminOp::EndSession(session) => {
            cluster.read_barrier().await?;
            let sm = cluster.node().state_machine();
            if !sm.sessions().contains_key(&session) {
                return Ok(AdminReply::Count(0));
            }
            let queued = queued_of(&cluster.node().table(), session);
            cluster
                .propose(now(), Command::EndSession { session, user })
                .await?;
            info!(session = %session, user, "session ended by an administrator");
            let_go(shared, session, queued);
            Ok(AdminReply::Count(1))
        }
        AdminOp::SetLimit { limit, value } => {
            cluster
                .propose(now(), Command::SetLimit { limit, value, user })
                .await?;
            info!(
                limit = limit.name(),
                value, user, "limit changed by an administrator"
            );
            Ok(AdminReply::Ok)
        }
    }
}

fn log_forced(key: &[u8], dropped: &[(SessionId, FencingToken)], user: &str) {
    let key = String::from_utf8_lossy(key);
    if dropped.is_empty() {
        info!(%key, user, "forced release found no holder");
    }
    for (session, token) in dropped {
        info!(%key, session = %session, token = token.0, user, "hold released by an administrator");
    }
}

/// The queued requests of `session` (before its end cancels them).
fn queued_of(table: &LockTable, session: SessionId) -> Vec<(Key, RequestId)> {
    let mut queued = Vec::new();
    table.for_each_waiter(|key, s, request| {
        if s == session {
            queued.push((key.clone(), request));
        }
    });
    queued
}

/// Lets go of whoever serves `session`, which has just been ended.
fn let_go(shared: &Shared, session: SessionId, queued: Vec<(Key, RequestId)>) {
    if shared.sessions.forget(shared, session) {
        return;
    }
    // A text connection parked on one of these answers it as timed out.
    let mut events: Vec<Event> = queued
        .into_iter()
        .map(|(key, request)| Event::TimedOut {
            session,
            request,
            key,
        })
        .collect();
    shared.router.route(&mut events);
    shared.router.end_text(session);
}
