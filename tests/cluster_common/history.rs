//! The history of every exclusive hold the test clients were granted, and the checks on
//! it (Jepsen style: judged from what clients saw, on one clock).
//!
//! # What is recorded
//!
//! All times are microseconds on one monotonic clock of the test process ([`History::now`]).
//! For each acknowledged grant (`ACQUIRE key EXCLUSIVE TTL t` answered with a token):
//!
//! - `sent` (S): when the ACQUIRE was sent; `acked` (A): when its token arrived;
//! - `lease_end`: `S + TTL`, or `Rn + TTL` after a RENEW sent at `Rn` was acknowledged
//!   (a client may use the lock until then, no longer);
//! - `given_up`: when the client stopped using the lock: just before it sent RELEASE, or
//!   before it abandoned the connection the lock was held on;
//! - the end `E = min(lease_end, given_up)`: the client used the lock during `[A, E]`.
//!
//! # The checks, and why they are sound (no false alarms)
//!
//! The server's promise for an exclusive lock: a key's next grant happens only after the
//! previous hold ended, and a hold ends only when its RELEASE is processed (after the
//! client sent it), when its lease runs out (the lease is counted from the grant, which is
//! after S, or from a renewal, which is after Rn; a failover only lengthens leases), or
//! when its session ends (a text session ends when its connection is closed, which a
//! client does only after giving up, or `--session-timeout-ms` after the connection was
//! lost, which the tests set well above the TTL). So every hold's real end is at or after
//! its `E`, and since the grants of a key are ordered, every later grant is after `E`. For
//! two acknowledged holds X and Y of one key with `Y.token > X.token`:
//!
//! 1. **mutual exclusion**: `Y.A > X.E` (`Y` was granted after `X` ended);
//! 2. **token order is grant order**: `Y.A > X.S`;
//! 3. **tokens are never reused**: no two grants carry the same token, on any key;
//! 4. **no early loss**: a RELEASE or RENEW of a held lock answered `-NOTHELD` before the
//!    hold's `lease_end` means the server lost an acknowledged hold.
//!
//! Requests whose outcome is unknown (`-ERR UNCERTAIN`, a lost connection, no reply in
//! time) may or may not have granted: they are left out. That cannot hide or invent a
//! violation between two acknowledged holds, because the promise above is about every
//! later grant, so it holds between X and Y whatever was granted in between (the
//! conservative reading of an unknown ACQUIRE as "possibly held from S to S + TTL"
//! would only matter for checks against unknown holds, which are not made).
//!
//! [`History::check_inspect`] compares a linearizable `INSPECT` (sent at `Vs`, answered
//! at `Ve`, on the leader) with the history: every acknowledged hold whose client had
//! not given up before `Ve` and whose `lease_end` is after `Ve` must be a holder with its
//! token (durability across failover), at most one exclusive holder is shown, and the
//! key's `fencing` (shown while the key exists) is at least every token acknowledged
//! before `Vs`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// One acknowledged grant.
#[derive(Clone, Debug)]
pub struct Hold {
    /// The key.
    pub key: String,
    /// The fencing token.
    pub token: i64,
    /// Which client (task) got it.
    pub client: usize,
    /// The node (client address) that answered.
    pub node: String,
    /// When the ACQUIRE was sent (µs).
    pub sent: u64,
    /// When the token arrived (µs).
    pub acked: u64,
    /// Until when the client may use it (µs): S + TTL, or the last acknowledged renewal's
    /// send time + TTL.
    pub lease_end: u64,
    /// When the client stopped using it (µs), if it has.
    pub given_up: Option<u64>,
    /// The reply to its RELEASE, if one came.
    pub release_reply: Option<String>,
    /// Acknowledged renewals.
    pub renewals: u32,
}

impl Hold {
    /// The end of the interval the client used the lock in.
    pub fn end(&self) -> u64 {
        self.given_up
            .map_or(self.lease_end, |g| g.min(self.lease_end))
    }

    fn describe(&self) -> String {
        format!(
            "token {} of '{}' (client {}, via {}, sent {:.3}s, acked {:.3}s, lease end {:.3}s, \
             given up {}, {} renewals, release {})",
            self.token,
            self.key,
            self.client,
            self.node,
            secs(self.sent),
            secs(self.acked),
            secs(self.lease_end),
            self.given_up
                .map_or("never".into(), |g| format!("{:.3}s", secs(g))),
            self.renewals,
            self.release_reply.as_deref().unwrap_or("not answered"),
        )
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// What `INSPECT key` showed, reduced to what the checks need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspect {
    /// `lock` or `semaphore` (empty when the key does not exist).
    pub kind: String,
    /// The last token issued for the key (0 when the key does not exist).
    pub fencing: i64,
    /// Holders: (session, mode, token, permits, count).
    pub holders: Vec<(i64, String, i64, i64, i64)>,
    /// Waiters in queue order: (session, mode, permits).
    pub waiters: Vec<(i64, String, i64)>,
}

/// Counters of what the clients saw.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// ACQUIREs sent.
    pub acquires: u64,
    /// ACQUIREs answered nil (WAIT ran out).
    pub timed_out: u64,
    /// Requests answered `-NOTLEADER` (redirects followed).
    pub redirects: u64,
    /// ACQUIREs with an unknown outcome (UNCERTAIN, lost connection, no reply).
    pub unknown_acquires: u64,
    /// Of those, `-ERR UNCERTAIN` replies.
    pub uncertain: u64,
    /// RELEASEs answered `:1`.
    pub releases_acked: u64,
    /// RENEWs answered with a lease.
    pub renewals_acked: u64,
    /// Other error replies (first few kept in `errors`).
    pub other_errors: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

/// The shared record of one test run.
pub struct History {
    t0: Instant,
    /// Every acknowledged grant, in the order the acknowledgements were recorded.
    pub holds: Vec<Hold>,
    /// Counters.
    pub counts: Counts,
    /// Violations found while recording (rule 4).
    pub live_violations: Vec<String>,
    /// A few unexpected error replies, for the report.
    pub errors: Vec<String>,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> History {
        History {
            t0: Instant::now(),
            holds: Vec::new(),
            counts: Counts::default(),
            live_violations: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The test's clock (µs since the history was created).
    pub fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// `t` on the test's clock.
    pub fn at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.t0).as_micros()).unwrap_or(u64::MAX)
    }

    /// Records an acknowledged grant; returns its index.
    #[allow(clippy::too_many_arguments)]
    pub fn granted(
        &mut self,
        key: &str,
        token: i64,
        client: usize,
        node: &str,
        sent: u64,
        acked: u64,
        ttl_us: u64,
    ) -> usize {
        self.holds.push(Hold {
            key: key.to_string(),
            token,
            client,
            node: node.to_string(),
            sent,
            acked,
            lease_end: sent + ttl_us,
            given_up: None,
            release_reply: None,
            renewals: 0,
        });
        self.holds.len() - 1
    }

    /// A RENEW sent at `sent` was acknowledged: the client may use the lock until
    /// `sent + ttl`.
    pub fn renewed(&mut self, hold: usize, sent: u64, ttl_us: u64) {
        let h = &mut self.holds[hold];
        h.lease_end = h.lease_end.max(sent + ttl_us);
        h.renewals += 1;
        self.counts.renewals_acked += 1;
    }

    /// The client stops using the lock at `at` (before sending RELEASE or abandoning the
    /// connection).
    pub fn give_up(&mut self, hold: usize, at: u64) {
        let h = &mut self.holds[hold];
        if h.given_up.is_none() {
            h.given_up = Some(at);
        }
    }

    /// The reply to the hold's RELEASE.
    pub fn release_reply(&mut self, hold: usize, reply: &str) {
        if reply == ":1" {
            self.counts.releases_acked += 1;
        }
        self.holds[hold].release_reply = Some(reply.to_string());
    }

    /// A RELEASE or RENEW of the hold was answered `-NOTHELD` at `at`: a violation unless
    /// the lease may have run out (`at` at or after `lease_end`).
    pub fn not_held(&mut self, hold: usize, what: &str, at: u64) {
        let h = &self.holds[hold];
        if at < h.lease_end {
            let msg = format!(
                "acknowledged hold lost early: {what} answered NOTHELD at {:.3}s, before the \
                 lease could end: {}",
                secs(at),
                h.describe()
            );
            self.live_violations.push(msg);
        }
    }

    /// Keeps an unexpected error reply for the report (the first 20).
    pub fn error(&mut self, text: String) {
        self.counts.other_errors += 1;
        if self.errors.len() < 20 {
            self.errors.push(text);
        }
    }

    /// Rules 1-3 over the whole history, plus the violations recorded live (rule 4).
    pub fn check(&self) -> Report {
        check_holds(&self.holds, &self.live_violations)
    }

    /// Compares a linearizable INSPECT of `key` (sent at `vs`, answered at `ve`) with the
    /// history; returns the violations and how many holds it confirmed.
    pub fn check_inspect(&self, key: &str, insp: &Inspect, vs: u64, ve: u64) -> (Vec<String>, u64) {
        let mut bad = Vec::new();
        let mut confirmed = 0;
        if insp.kind == "lock" {
            let exclusive = insp.holders.iter().filter(|h| h.1 == "exclusive").count();
            if exclusive > 1 || (exclusive == 1 && insp.holders.len() > 1) {
                bad.push(format!(
                    "INSPECT {key} at {:.3}s shows an exclusive holder with others: {:?}",
                    secs(ve),
                    insp.holders
                ));
            }
        }
        for h in self.holds.iter().filter(|h| h.key == key) {
            // A key without holders or waiters is shown as an empty reply, without
            // its fencing token.
            if !insp.kind.is_empty() && h.acked < vs && h.token > insp.fencing {
                bad.push(format!(
                    "INSPECT {key} at {:.3}s shows fencing {} below an acknowledged token: {}",
                    secs(ve),
                    insp.fencing,
                    h.describe()
                ));
            }
            let still_used = h.given_up.is_none_or(|g| g >= ve) && h.lease_end > ve;
            if h.acked < vs && still_used {
                if insp.holders.iter().any(|x| x.2 == h.token) {
                    confirmed += 1;
                } else {
                    bad.push(format!(
                        "acknowledged hold missing: INSPECT {key} (sent {:.3}s, answered {:.3}s) \
                         shows holders {:?}, fencing {}, but the lease cannot have ended: {}",
                        secs(vs),
                        secs(ve),
                        insp.holders,
                        insp.fencing,
                        h.describe()
                    ));
                }
            }
        }
        (bad, confirmed)
    }

    /// Holds acknowledged by `node` for requests sent at or after `after`.
    pub fn granted_by_after(&self, node: &str, after: u64) -> Vec<String> {
        self.holds
            .iter()
            .filter(|h| h.node == node && h.sent >= after)
            .map(Hold::describe)
            .collect()
    }

    /// The first acknowledgement at or after `after` from a node other than `not_node`.
    pub fn first_ack_after(&self, after: u64, not_node: &str) -> Option<u64> {
        self.holds
            .iter()
            .filter(|h| h.acked >= after && h.node != not_node)
            .map(|h| h.acked)
            .min()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

/// The outcome of [`History::check`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// What is wrong (empty: the history is correct).
    pub violations: Vec<String>,
    /// Holds checked.
    pub holds: u64,
    /// Keys checked.
    pub keys: u64,
    /// Ordered pairs of holds covered by rules 1 and 2 (each hold against all earlier
    /// tokens of its key).
    pub pairs: u64,
}

/// Rules 1-3 over `holds`.
pub fn check_holds(holds: &[Hold], live: &[String]) -> Report {
    let mut report = Report {
        violations: live.to_vec(),
        ..Report::default()
    };
    let mut by_token: HashMap<i64, &Hold> = HashMap::new();
    for h in holds {
        if let Some(other) = by_token.insert(h.token, h) {
            report.violations.push(format!(
                "token issued twice: {} and {}",
                other.describe(),
                h.describe()
            ));
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for h in holds {
        by_key.entry(&h.key).or_default().push(h);
    }
    for list in by_key.values_mut() {
        list.sort_by_key(|h| h.token);
        report.keys += 1;
        // The earlier token with the latest end, and the one sent latest.
        let mut latest_end: Option<&Hold> = None;
        let mut latest_sent: Option<&Hold> = None;
        for (i, y) in list.iter().enumerate() {
            report.holds += 1;
            report.pairs += i as u64;
            if let Some(x) = latest_end {
                if y.acked <= x.end() && x.token < y.token {
                    report.violations.push(format!(
                        "two holders at once: {} was acknowledged before {} ended, \
                         and has the larger token",
                        y.describe(),
                        x.describe()
                    ));
                }
            }
            if let Some(x) = latest_sent {
                if y.acked <= x.sent && x.token < y.token {
                    report.violations.push(format!(
                        "tokens out of grant order: {} was acknowledged before {} was sent, \
                         but has the larger token",
                        y.describe(),
                        x.describe()
                    ));
                }
            }
            if latest_end.is_none_or(|x| y.end() > x.end()) {
                latest_end = Some(y);
            }
            if latest_sent.is_none_or(|x| y.sent > x.sent) {
                latest_sent = Some(y);
            }
        }
    }
    report
}

/// Parses an `INSPECT` reply (RESP2 flat field/value array, or RESP3 map flattened).
pub fn parse_inspect(reply: &super::resp::Reply) -> Result<Inspect, String> {
    use super::resp::Reply;
    let items = reply
        .items()
        .ok_or_else(|| format!("INSPECT answered {reply:?}"))?;
    let mut out = Inspect::default();
    let text = |r: &Reply| r.text().unwrap_or_default();
    let int = |r: &Reply| r.int().unwrap_or(-1);
    for pair in items.chunks(2) {
        let [name, value] = pair else {
            return Err(format!("INSPECT reply has an odd length: {reply:?}"));
        };
        match text(name).as_str() {
            "kind" => out.kind = text(value),
            "fencing" => out.fencing = int(value),
            "holders" => {
                for h in value.items().unwrap_or_default() {
                    let f = h.items().unwrap_or_default();
                    if f.len() < 5 {
                        return Err(format!("INSPECT holder {h:?}"));
                    }
                    out.holders
                        .push((int(&f[0]), text(&f[1]), int(&f[2]), int(&f[3]), int(&f[4])));
                }
            }
            "waiters" => {
                for w in value.items().unwrap_or_default() {
                    let f = w.items().unwrap_or_default();
                    if f.len() < 3 {
                        return Err(format!("INSPECT waiter {w:?}"));
                    }
                    out.waiters.push((int(&f[0]), text(&f[1]), int(&f[2])));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}
