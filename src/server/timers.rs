//! The timer driver: the one task that moves the lock table's clock forward.
//!
//! It sleeps until the earliest lease or wait deadline, advances the table, and routes the
//! resulting events. A command that arms a timer earlier than the planned wake-up wakes it
//! through a [`Notify`]; with no timers pending it sleeps until woken, so an idle server
//! uses no CPU.

use std::sync::Arc;

use tokio::sync::{watch, Notify};

use super::Shared;

/// Runs the driver until `shutdown` changes.
pub async fn run(shared: Arc<Shared>, notify: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let table = shared.store.table();
    let mut events = Vec::new();
    loop {
        // Awake: no command needs to wake us until we announce the next deadline.
        table.set_wake_at(0);
        let now = shared.clock.now_ms();
        shared.store.advance(now, &mut events);
        // Nobody may wait for these records (an expiry nobody is told of): send them to
        // the log now rather than with the next batch.
        shared.store.flush();
        log_contended_expiries(&events);
        if !events.is_empty() {
            shared.router.route(&mut events);
        }
        let mut next = table.next_deadline();
        table.set_wake_at(next.unwrap_or(u64::MAX));
        // A timer armed between the scan and the announcement did not wake us: look again.
        let again = table.next_deadline();
        if again < next || (next.is_none() && again.is_some()) {
            next = again;
            table.set_wake_at(next.unwrap_or(u64::MAX));
        }
        match next {
            Some(at) if at <= now => continue,
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(shared.clock.instant(at).into()) => {}
                    _ = notify.notified() => {}
                    _ = shutdown.changed() => return,
                }
            }
            None => {
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// A lease that ran out while others queued for the key is worth an operator's eye (a
/// holder that stopped renewing, or a TTL too short): info, with who lost it and who got
/// it next.
fn log_contended_expiries(events: &[crate::engine::Event]) {
    use crate::engine::Event;
    for (i, e) in events.iter().enumerate() {
        let Event::Expired {
            session,
            key,
            token,
        } = e
        else {
            continue;
        };
        let next = events[i + 1..].iter().find_map(|g| match g {
            Event::Granted {
                session: s,
                key: k,
                token: t,
                ..
            } if k == key => Some((s.0, t.0)),
            _ => None,
        });
        if let Some((to, new_token)) = next {
            tracing::info!(
                key = %crate::cmd::printable(key.as_bytes()),
                session = session.0,
                token = token.0,
                granted_to = to,
                new_token,
                "lease expired on a contended key; handed over"
            );
        }
    }
}
