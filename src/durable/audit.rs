//! `turnstile audit`: who held what, and when, read back from a data directory.
//!
//! Post-mortems ask "who held orders/42 at 14:03, with which token, and how did the hold
//! end?". The log has the answer: replaying it through the table (from the newest
//! snapshot) shows, record by record, which holds began and ended on the keys each record
//! touched. Nothing in the directory is changed (no torn tail is cut, no file is
//! created), so it can be read while a server runs on it; a torn tail simply ends the
//! history. Dates come from the `Clock` record every start logs (table time is
//! monotonic milliseconds; the wall clock is read once per start).
//!
//! Administrators' commands (ADMIN FORCE-RELEASE, END-SESSION, LIMITS SET) are printed
//! as one line each with the user that ran them, besides the holds they ended:
//!
//! ```text
//! 2026-11-22T04:43:45.123Z  index=812  forced release of orders/42 (tokens 1099511627781, sessions 7) by ops
//! 2026-11-22T04:43:45.123Z  index=812  key=orders/42  session=7  token=1099511627781  forced release by ops
//! ```
//!
//! Requests refused with DEADLOCK are logged for this (a no-op record, see
//! [`Command::DeadlockRefused`]) and printed with the cycle:
//!
//! ```text
//! 2026-11-22T04:43:46.001Z  index=815  key=orders/42  session=9  deadlock refused: session 9 waits for 'orders/42' -> session 8 waits for 'orders/43' -> session 9
//! ```
//!
//! A key filter matches a refusal when it matches any key of the cycle, a session filter
//! when the session is in the cycle. Not in the log, so not in the audit: other refused
//! requests (WRONGTYPE, LIMIT), renewals, reads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::command::{apply, Command, Entry, Fired};
use super::image_codec;
use crate::engine::{Key, Limits, LockTable, SessionId};
use crate::wal::format::{
    decode_frame, parse_segment_file_name, split_entry, SegmentHeader, FRAME_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::wal::{SnapshotStore, WalError};

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keys matching this glob pattern (as LOCKS MATCH), or every key.
    pub key: Option<Vec<u8>>,
    /// Only this session's holds.
    pub session: Option<u64>,
    /// Only changes at or after this wall-clock time (Unix ms).
    pub since_ms: Option<u64>,
    /// Only changes before this wall-clock time (Unix ms).
    pub until_ms: Option<u64>,
}

/// Why the audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading the directory or a file failed.
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Reading the snapshots failed.
    #[error(transparent)]
    Snapshot(#[from] WalError),
    /// A snapshot or record passed its checksum but does not decode.
    #[error("{0} does not decode: {1}")]
    Decode(String, super::DecodeError),
}

/// One change of a hold, as printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The log index of the record that made it.
    pub index: u64,
    /// Wall clock (Unix ms), when a Clock record dated it.
    pub unix_ms: Option<u64>,
    /// The key.
    pub key: Key,
    /// The holder.
    pub session: SessionId,
    /// The hold's fencing token.
    pub token: u64,
    /// `granted`, `released`, `expired`, `session ended` or `forced release`.
    pub what: &'static str,
    /// The administrator whose command ended the hold (a forced release, or a session
    /// ended by ADMIN END-SESSION).
    pub by: Option<String>,
}

/// An administrator's command, as printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// The log index of its record.
    pub index: u64,
    /// Wall clock (Unix ms), when a Clock record dated it.
    pub unix_ms: Option<u64>,
    /// The user that ran it.
    pub user: String,
    /// The key it was about (a forced release).
    pub key: Option<Key>,
    /// The sessions it ended holds of (a forced release) or ended.
    pub sessions: Vec<SessionId>,
    /// What it did, e.g. `forced release of orders/42 (tokens 5, sessions 3)`.
    pub what: String,
}

/// A request refused with DEADLOCK, as printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The log index of its record.
    pub index: u64,
    /// Wall clock (Unix ms), when a Clock record dated it.
    pub unix_ms: Option<u64>,
    /// The requester.
    pub session: SessionId,
    /// The key it asked for.
    pub key: Key,
    /// The cycle from the requester: each session and the key it waits on.
    pub cycle: Vec<(SessionId, Key)>,
}

/// Everything the audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Changes of holds.
    pub changes: Vec<Change>,
    /// Administrators' commands.
    pub actions: Vec<Action>,
    /// Requests refused with DEADLOCK.
    pub refusals: Vec<Refusal>,
}

/// Replays the data directory in `dir` and writes every matching change to `out`, one
/// line each; returns them too.
pub fn run(dir: &Path, filter: &Filter, out: &mut dyn Write) -> Result<Vec<Change>, AuditError> {
    Ok(report(dir, filter, out)?.changes)
}

/// [`run`], returning the administrators' commands as well.
pub fn report(dir: &Path, filter: &Filter, out: &mut dyn Write) -> Result<Report, AuditError> {
    let snapshots = dir.join("snapshots");
    let latest = if snapshots.is_dir() {
        SnapshotStore::open_read_only(snapshots).load_latest()?
    } else {
        None
    };
    let (table, mut index) = match latest.map(|s| (s.last_index, s.data)) {
        Some((last, data)) => {
            let state = image_codec::decode(&data)
                .map_err(|e| AuditError::Decode(format!("snapshot at index {last}"), e))?;
            let table = LockTable::new(state.table.shards.len(), Limits::unlimited(), state.now);
            table.import(&state.table, state.now);
            (Some(table), last + 1)
        }
        None => (None, 1),
    };
    let mut table = table;
    let mut clock: Option<(u64, u64)> = None;
    let mut changes = Vec::new();
    let mut actions = Vec::new();
    let mut refusals = Vec::new();
    let mut events = Vec::new();
    for (first, bytes) in segments(&dir.join("wal"))? {
        let mut at = SEGMENT_HEADER_LEN;
        let mut next = first;
        while at < bytes.len() {
            let Ok(frame) = decode_frame(&bytes[at..]) else {
                break; // a torn tail (or the live server's unfinished write): history ends
            };
            at += FRAME_HEADER_LEN + frame.payload.len();
            let (rec_index, data) = split_entry(frame.payload);
            if rec_index != next {
                break;
            }
            next += 1;
            if rec_index < index {
                continue;
            }
            index = rec_index + 1;
            let entry = Entry::decode(data)
                .map_err(|e| AuditError::Decode(format!("log record {rec_index}"), e))?;
            if let Command::Start { shards, .. } = entry.command {
                if table.is_none() {
                    table = Some(LockTable::new(
                        shards as usize,
                        Limits::unlimited(),
                        entry.now,
                    ));
                }
            }
            if let Command::Clock { unix_ms } = entry.command {
                clock = Some((entry.now, unix_ms));
            }
            let Some(t) = &table else { continue };
            let keys = touched(t, &entry);
            let before: Vec<_> = keys.iter().map(|k| holders(t, k)).collect();
            apply(t, &entry, &mut events);
            events.clear();
            let unix_ms = clock.map(|(now, unix)| unix + entry.now.saturating_sub(now));
            if let Some(action) = action(&entry, &before_of(&keys, &before), rec_index, unix_ms) {
                actions.push(action);
            }
            if let Command::DeadlockRefused {
                session,
                key,
                cycle,
            } = &entry.command
            {
                refusals.push(Refusal {
                    index: rec_index,
                    unix_ms,
                    session: *session,
                    key: Key::new(key),
                    cycle: cycle.clone(),
                });
            }
            let by = match &entry.command {
                Command::ForceRelease { user, .. } | Command::EndSession { user, .. } => {
                    Some(user.to_string())
                }
                _ => None,
            };
            let end_reason = |session: SessionId, key: &Key| {
                match &entry.command {
                Command::Release { .. } => "released",
                Command::CloseSession { .. } | Command::EndSession { .. } => "session ended",
                Command::ForceRelease { .. } => "forced release",
                Command::Tick { fired } => {
                    if fired.iter().any(|f| {
                        matches!(f, Fired::Expired { session: s, key: k } if *s == session && k == key)
                    }) {
                        "expired"
                    } else {
                        "session ended"
                    }
                }
                _ => "ended",
            }
            };
            for (key, before) in keys.iter().zip(before) {
                let after = holders(t, key);
                for &(s, token) in &before {
                    if !after.contains(&(s, token)) {
                        changes.push(Change {
                            index: rec_index,
                            unix_ms,
                            key: key.clone(),
                            session: s,
                            token,
                            what: end_reason(s, key),
                            by: by.clone(),
                        });
                    }
                }
                for &(s, token) in &after {
                    if !before.contains(&(s, token)) {
                        changes.push(Change {
                            index: rec_index,
                            unix_ms,
                            key: key.clone(),
                            session: s,
                            token,
                            what: "granted",
                            by: None,
                        });
                    }
                }
            }
        }
    }
    changes.retain(|c| matches(filter, c));
    actions.retain(|a| action_matches(filter, a));
    refusals.retain(|r| refusal_matches(filter, r));
    let when =
        |unix_ms: Option<u64>| unix_ms.map_or_else(|| "(no date)".to_string(), format_unix_ms);
    // All in log order; an action's line comes before the changes it made.
    let mut lines: Vec<(u64, String)> = Vec::new();
    for a in &actions {
        lines.push((
            a.index,
            format!(
                "{}  index={}  {} by {}",
                when(a.unix_ms),
                a.index,
                a.what,
                a.user
            ),
        ));
    }
    for r in &refusals {
        let mut cycle = String::new();
        for (s, k) in &r.cycle {
            cycle.push_str(&format!(
                "session {s} waits for '{}' -> ",
                String::from_utf8_lossy(k.as_bytes())
            ));
        }
        cycle.push_str(&format!("session {}", r.session));
        lines.push((
            r.index,
            format!(
                "{}  index={}  key={}  session={}  deadlock refused: {cycle}",
                when(r.unix_ms),
                r.index,
                String::from_utf8_lossy(r.key.as_bytes()),
                r.session,
            ),
        ));
    }
    for c in &changes {
        let by =
            c.by.as_ref()
                .map(|u| format!(" by {u}"))
                .unwrap_or_default();
        lines.push((
            c.index,
            format!(
                "{}  index={}  key={}  session={}  token={}  {}{by}",
                when(c.unix_ms),
                c.index,
                String::from_utf8_lossy(c.key.as_bytes()),
                c.session,
                c.token,
                c.what
            ),
        ));
    }
    // Stable: at one index, actions first, then the changes in the order they happened.
    lines.sort_by_key(|(index, _)| *index);
    for (_, line) in lines {
        let _ = writeln!(out, "{line}");
    }
    Ok(Report {
        changes,
        actions,
        refusals,
    })
}

fn refusal_matches(f: &Filter, r: &Refusal) -> bool {
    f.key.as_ref().is_none_or(|p| {
        crate::glob::glob_match(p, r.key.as_bytes())
            || r.cycle
                .iter()
                .any(|(_, k)| crate::glob::glob_match(p, k.as_bytes()))
    }) && f
        .session
        .is_none_or(|s| r.session.0 == s || r.cycle.iter().any(|(x, _)| x.0 == s))
        && f.since_ms.is_none_or(|t| r.unix_ms.is_some_and(|u| u >= t))
        && f.until_ms.is_none_or(|t| r.unix_ms.is_some_and(|u| u < t))
}

/// The holders of every touched key before the record, as one list.
fn before_of(keys: &[Key], before: &[Vec<(SessionId, u64)>]) -> Vec<(Key, SessionId, u64)> {
    keys.iter()
        .zip(before)
        .flat_map(|(k, hs)| hs.iter().map(move |&(s, t)| (k.clone(), s, t)))
        .collect()
}

/// The line an administrator's record gets (None for the other records). `before` are
/// the holders of the keys it touched just before it applied.
fn action(
    entry: &Entry<'_>,
    before: &[(Key, SessionId, u64)],
    index: u64,
    unix_ms: Option<u64>,
) -> Option<Action> {
    let (user, key, sessions, what) = match &entry.command {
        Command::ForceRelease { key, user, holds } => {
            // What it dropped: the listed holds that still held the key.
            let dropped: Vec<(SessionId, u64)> = holds
                .iter()
                .map(|&(s, t)| (s, t.0))
                .filter(|&(s, t)| before.iter().any(|(_, bs, bt)| *bs == s && *bt == t))
                .collect();
            let list = |f: &dyn Fn(&(SessionId, u64)) -> String| {
                dropped.iter().map(f).collect::<Vec<_>>().join(", ")
            };
            let what = format!(
                "forced release of {} (tokens {}, sessions {})",
                String::from_utf8_lossy(key),
                list(&|(_, t)| t.to_string()),
                list(&|(s, _)| s.to_string()),
            );
            let sessions = dropped.iter().map(|&(s, _)| s).collect();
            (user, Some(Key::new(key)), sessions, what)
        }
        Command::EndSession { session, user } => (
            user,
            None,
            vec![*session],
            format!("ended session {session}"),
        ),
        Command::SetLimit { limit, value, user } => (
            user,
            None,
            Vec::new(),
            format!("set {} to {value}", limit.name()),
        ),
        _ => return None,
    };
    Some(Action {
        index,
        unix_ms,
        user: user.to_string(),
        key,
        sessions,
        what,
    })
}

fn action_matches(f: &Filter, a: &Action) -> bool {
    let key_ok = f.key.as_ref().is_none_or(|p| {
        a.key
            .as_ref()
            .is_some_and(|k| crate::glob::glob_match(p, k.as_bytes()))
    });
    key_ok
        && f.session
            .is_none_or(|s| a.sessions.iter().any(|x| x.0 == s))
        && f.since_ms.is_none_or(|t| a.unix_ms.is_some_and(|u| u >= t))
        && f.until_ms.is_none_or(|t| a.unix_ms.is_some_and(|u| u < t))
}

fn matches(f: &Filter, c: &Change) -> bool {
    f.key
        .as_ref()
        .is_none_or(|p| crate::glob::glob_match(p, c.key.as_bytes()))
        && f.session.is_none_or(|s| c.session.0 == s)
        && f.since_ms.is_none_or(|t| c.unix_ms.is_some_and(|u| u >= t))
        && f.until_ms.is_none_or(|t| c.unix_ms.is_some_and(|u| u < t))
}

/// The keys whose holders a record may change.
fn touched(table: &LockTable, entry: &Entry<'_>) -> Vec<Key> {
    match &entry.command {
        Command::Acquire { key, .. }
        | Command::Convert { key, .. }
        | Command::Release { key, .. }
        | Command::Cancel { key, .. }
        | Command::ForceRelease { key, .. } => {
            vec![Key::new(key)]
        }
        Command::MultiAcquire { items, .. } => items.iter().map(|(k, _)| Key::new(k)).collect(),
        Command::MultiRelease { keys, .. } => keys.iter().map(|k| Key::new(k)).collect(),
        Command::Tick { fired } => {
            let mut keys: Vec<Key> = fired
                .iter()
                .map(|f| match f {
                    Fired::Expired { key, .. }
                    | Fired::TimedOut { key, .. }
                    | Fired::DelayEnded { key } => key.clone(),
                })
                .collect();
            keys.dedup();
            keys
        }
        Command::CloseSession { session } | Command::EndSession { session, .. } => {
            let mut keys = BTreeMap::new();
            table.for_each_hold(|k, _, s, _, _, _| {
                if s == *session {
                    keys.insert(k.clone(), ());
                }
            });
            table.for_each_waiter(|k, s, _| {
                if s == *session {
                    keys.insert(k.clone(), ());
                }
            });
            keys.into_keys().collect()
        }
        _ => Vec::new(),
    }
}

fn holders(table: &LockTable, key: &Key) -> Vec<(SessionId, u64)> {
    table
        .inspect(key.as_bytes(), 0)
        .map(|i| i.holders.iter().map(|h| (h.session, h.token.0)).collect())
        .unwrap_or_default()
}

/// Segment files in index order, with their first index, read whole.
fn segments(dir: &Path) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
    let mut names: Vec<(u64, PathBuf)> = list(dir)?
        .into_iter()
        .filter_map(|(name, path)| parse_segment_file_name(&name).map(|i| (i, path)))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for (first, path) in names {
        let bytes = std::fs::read(&path).map_err(|e| AuditError::Io(path.clone(), e))?;
        if SegmentHeader::decode(&bytes).is_err() {
            continue;
        }
        out.push((first, bytes));
    }
    Ok(out)
}

fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>, AuditError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::Io(dir.to_path_buf(), e)),
    };
    Ok(rd
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for Unix milliseconds.
pub fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses `YYYY-MM-DDTHH:MM[:SS]` (UTC, an optional trailing `Z`) or plain Unix ms.
pub fn parse_time(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once('T').or_else(|| s.split_once(' '))?;
    let mut dp = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, d) = (dp.next()??, dp.next()??, dp.next()??);
    let mut tp = time.split(':').map(|x| x.parse::<u64>().ok());
    let (hh, mm) = (tp.next()??, tp.next()??);
    let ss = tp.next().map_or(Some(0), |x| x)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000)
}

// Howard Hinnant's civil calendar algorithms (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_unix_ms(1_795_322_625_123),
            "2026-11-22T04:43:45.123Z"
        );
        assert_eq!(parse_time("2026-11-22T04:43:45Z"), Some(1_795_322_625_000));
        assert_eq!(parse_time("2026-11-22T04:43"), Some(1_795_322_580_000));
        assert_eq!(parse_time("1795322625123"), Some(1_795_322_625_123));
        assert_eq!(parse_time("2026-13-01T00:00"), None);
        assert_eq!(parse_time("yesterday"), None);
        for ms in [86_399_999u64, 951_782_400_000, 4_102_444_800_000] {
            let s = format_unix_ms(ms);
            assert_eq!(parse_time(&s[..19]), Some(ms / 1000 * 1000), "{s}");
        }
    }
}
