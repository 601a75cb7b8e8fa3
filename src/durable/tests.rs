//! Replay is exact: a random history applied live (the timer driver's `advance` deciding
//! expiries) and then replayed from its records, or from a snapshot image plus the
//! records after it, gives the same table; records and images round-trip through their
//! encodings.

use proptest::prelude::*;

use super::command::{apply, fired_from, with_set, Command, Entry, Fired, LimitsSet, SessionKind};
use super::image_codec::{self, State};
use crate::engine::{
    AcquireRequest, FencingToken, Key, LimitKind, Limits, LockTable, Mode, MultiRequest,
    QueuePolicy, RequestId, SessionId,
};

const KEYS: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];

#[derive(Clone, Debug)]
enum Op {
    Open,
    Close(usize),
    Acquire {
        s: usize,
        k: usize,
        mode: u8,
        ttl: u64,
        wait: Option<u64>,
        reentrant: bool,
        priority: u32,
        lock_delay: u32,
    },
    /// CONVERT to SHARED (true) or EXCLUSIVE.
    Convert(usize, usize, bool, Option<u64>),
    Release(usize, usize),
    Cancel(usize, usize),
    Advance(u64),
    /// ADMIN FORCE-RELEASE of a key.
    ForceRelease(usize),
    /// ADMIN END-SESSION.
    EndSession(usize),
    /// ADMIN LIMITS SET (small values, so that they refuse things).
    SetLimit(u8, u64),
    /// MACQUIRE of up to three keys.
    Multi {
        s: usize,
        keys: Vec<(usize, u8)>,
        ttl: u64,
        wait: Option<u64>,
    },
    /// MRELEASE.
    ReleaseMany(usize, Vec<usize>),
    /// SETVALUE of one of [`VALUES`].
    SetValue(usize, usize, usize),
}

/// Values attached at ACQUIRE and by SETVALUE (the empty one clears).
const VALUES: [&[u8]; 3] = [b"", b"v1", b"10.0.0.1:7000"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Open),
        1 => (0..8usize).prop_map(Op::Close),
        6 => (0..8usize, 0..KEYS.len(), 0..4u8, 1..200u64, prop::option::of(0..300u64), any::<bool>(),
              prop_oneof![2 => Just(0u32), 1 => 1..4u32], prop_oneof![2 => Just(0u32), 1 => 1..100u32])
            .prop_map(|(s, k, mode, ttl, wait, reentrant, priority, lock_delay)| Op::Acquire {
                s, k, mode, ttl, wait, reentrant, priority, lock_delay
            }),
        2 => (0..8usize, 0..KEYS.len(), any::<bool>(), prop::option::of(0..300u64))
            .prop_map(|(s, k, shared, wait)| Op::Convert(s, k, shared, wait)),
        3 => (0..8usize, 0..KEYS.len()).prop_map(|(s, k)| Op::Release(s, k)),
        1 => (0..8usize, 0..KEYS.len()).prop_map(|(s, k)| Op::Cancel(s, k)),
        2 => (1..150u64).prop_map(Op::Advance),
        1 => (0..KEYS.len()).prop_map(Op::ForceRelease),
        1 => (0..8usize).prop_map(Op::EndSession),
        1 => (0..3u8, 1..6u64).prop_map(|(k, v)| Op::SetLimit(k, v)),
        3 => (0..8usize, prop::collection::vec((0..KEYS.len(), 0..4u8), 1..=3), 1..200u64, prop::option::of(0..300u64))
            .prop_map(|(s, keys, ttl, wait)| Op::Multi { s, keys, ttl, wait }),
        1 => (0..8usize, prop::collection::vec(0..KEYS.len(), 1..=3)).prop_map(|(s, k)| Op::ReleaseMany(s, k)),
        1 => (0..8usize, 0..KEYS.len(), 0..VALUES.len()).prop_map(|(s, k, v)| Op::SetValue(s, k, v)),
    ]
}

fn mode(m: u8, k: usize) -> Mode {
    // Keys d and e are semaphores so that kinds never clash by accident too often.
    if k >= 3 {
        return Mode::Semaphore {
            limit: 3,
            permits: u32::from(m % 3) + 1,
        };
    }
    if m.is_multiple_of(2) {
        Mode::Exclusive
    } else {
        Mode::Shared
    }
}

/// Runs `ops` live on a table, returning the encoded records of every change (what the
/// store would log) and the table.
fn run_live(ops: &[Op], shards: usize) -> (LockTable, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let table = LockTable::new(shards, Limits::default(), 0);
    let mut limits_set = LimitsSet::new();
    let mut records = Vec::new();
    let mut sessions: Vec<SessionId> = Vec::new();
    let mut now = 0u64;
    let mut events = Vec::new();
    let mut request = 0u64;
    let mut images = Vec::new();
    let log = |entry: &Entry<'_>, records: &mut Vec<Vec<u8>>| {
        let bytes = entry.to_vec();
        assert_eq!(&Entry::decode(&bytes).unwrap(), entry, "record round trip");
        records.push(bytes);
    };
    log(
        &Entry {
            now,
            command: Command::Start {
                epoch: 1,
                shards: shards as u32,
            },
        },
        &mut records,
    );
    apply(&table, &Entry::decode(&records[0]).unwrap(), &mut events);
    for op in ops {
        now += 1;
        let entry = match *op {
            Op::Open => {
                let s = table.open_session();
                sessions.push(s);
                Some(Entry {
                    now,
                    command: Command::OpenSession {
                        session: s,
                        kind: SessionKind::Text,
                    },
                })
            }
            Op::Close(i) if i < sessions.len() => {
                let s = sessions.remove(i);
                Some(Entry {
                    now,
                    command: Command::CloseSession { session: s },
                })
            }
            Op::Acquire {
                s,
                k,
                mode: m,
                ttl,
                wait,
                reentrant,
                priority,
                lock_delay,
            } if s < sessions.len() => {
                request += 1;
                Some(Entry {
                    now,
                    command: Command::Acquire {
                        session: sessions[s],
                        key: KEYS[k],
                        req: AcquireRequest {
                            id: RequestId(request),
                            mode: mode(m, k),
                            reentrant,
                            ttl_ms: ttl,
                            wait_ms: wait,
                            policy: QueuePolicy {
                                priority,
                                aging_ms: if priority > 0 { 20 } else { 0 },
                                lock_delay_ms: lock_delay,
                            },
                        },
                        value: Some(VALUES[(request % 3) as usize]).filter(|v| !v.is_empty()),
                    },
                })
            }
            Op::Convert(s, k, shared, wait) if s < sessions.len() => {
                request += 1;
                Some(Entry {
                    now,
                    command: Command::Convert {
                        session: sessions[s],
                        key: KEYS[k],
                        request: RequestId(request),
                        to: if shared {
                            Mode::Shared
                        } else {
                            Mode::Exclusive
                        },
                        wait_ms: wait,
                    },
                })
            }
            Op::SetValue(s, k, v) if s < sessions.len() => Some(Entry {
                now,
                command: Command::SetValue {
                    session: sessions[s],
                    key: KEYS[k],
                    value: VALUES[v],
                },
            }),
            Op::Release(s, k) if s < sessions.len() => Some(Entry {
                now,
                command: Command::Release {
                    session: sessions[s],
                    key: KEYS[k],
                },
            }),
            Op::Cancel(s, k) if s < sessions.len() => Some(Entry {
                now,
                command: Command::Cancel {
                    session: sessions[s],
                    key: KEYS[k],
                },
            }),
            Op::ForceRelease(k) => Some(Entry {
                now,
                command: Command::ForceRelease {
                    key: KEYS[k],
                    user: "ops",
                    holds: table.holders(KEYS[k]),
                },
            }),
            Op::EndSession(i) if i < sessions.len() => {
                let s = sessions.remove(i);
                Some(Entry {
                    now,
                    command: Command::EndSession {
                        session: s,
                        user: "ops",
                    },
                })
            }
            Op::SetLimit(k, value) => {
                let limit = LimitKind::from_tag(k).expect("a limit tag");
                limits_set.insert(limit, value);
                Some(Entry {
                    now,
                    command: Command::SetLimit {
                        limit,
                        value,
                        user: "ops",
                    },
                })
            }
            Op::Multi {
                s,
                ref keys,
                ttl,
                wait,
            } if s < sessions.len() => {
                request += 1;
                Some(Entry {
                    now,
                    command: Command::MultiAcquire {
                        session: sessions[s],
                        items: keys.iter().map(|&(k, m)| (KEYS[k], mode(m, k))).collect(),
                        req: MultiRequest {
                            id: RequestId(request),
                            ttl_ms: ttl,
                            wait_ms: wait,
                            lock_delay_ms: 0,
                        },
                    },
                })
            }
            Op::ReleaseMany(s, ref keys) if s < sessions.len() => Some(Entry {
                now,
                command: Command::MultiRelease {
                    session: sessions[s],
                    keys: keys.iter().map(|&k| KEYS[k]).collect(),
                },
            }),
            Op::Advance(d) => {
                now += d;
                events.clear();
                table.advance(now, &mut events);
                let fired = fired_from(&events);
                (!fired.is_empty())
                    .then(|| Entry {
                        now,
                        command: Command::Tick { fired },
                    })
                    .inspect(|e| log(e, &mut records));
                None
            }
            _ => None,
        };
        if let Some(entry) = entry {
            events.clear();
            let applied = apply(&table, &entry, &mut events);
            if applied.changed() {
                log(&entry, &mut records);
            }
        }
        // A snapshot image after this many records, for the snapshot-plus-tail check.
        images.push(image_codec::encode(&State {
            epoch: 1,
            now,
            next_request: request + 1,
            sessions: Default::default(),
            limits: limits_set.clone(),
            table: table.export(),
        }));
        let n = records.len();
        images
            .last_mut()
            .unwrap()
            .extend_from_slice(&(n as u64).to_le_bytes());
    }
    (table, records, images)
}

fn replay(table: &LockTable, records: &[Vec<u8>]) {
    let mut events = Vec::new();
    for r in records {
        let entry = Entry::decode(r).expect("record decodes");
        apply(table, &entry, &mut events);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn replay_rebuilds_the_live_table(ops in prop::collection::vec(op(), 1..120), shards in 1..4usize) {
        let (live, records, _) = run_live(&ops, shards);
        let replayed = LockTable::new(shards, Limits::unlimited(), 0);
        replay(&replayed, &records);
        prop_assert_eq!(replayed.export().canonical(), live.export().canonical());
        for kind in LimitKind::ALL {
            if live.limits().get(kind) != Limits::default().get(kind) {
                prop_assert_eq!(live.limits().get(kind), replayed.limits().get(kind));
            }
        }
    }

    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        ops in prop::collection::vec(op(), 1..120),
        shards in 1..4usize,
        cut in any::<prop::sample::Index>(),
    ) {
        let (live, records, images) = run_live(&ops, shards);
        let mut image = images[cut.index(images.len())].clone();
        let n = u64::from_le_bytes(image[image.len() - 8..].try_into().unwrap()) as usize;
        image.truncate(image.len() - 8);
        let state = image_codec::decode(&image).expect("image decodes");
        prop_assert_eq!(&image_codec::encode(&state), &image, "image round trip");
        // As recovery does: no limits but those the log set.
        let restored = LockTable::new(shards, with_set(&Limits::unlimited(), &state.limits), state.now);
        restored.import(&state.table, state.now);
        prop_assert_eq!(restored.export().canonical(), state.table.clone().canonical(), "import of export");
        replay(&restored, &records[n..]);
        prop_assert_eq!(restored.export().canonical(), live.export().canonical());
        // The limits set at runtime come back too (the live table started with the
        // defaults, the replayed one with none).
        let (l, r) = (live.limits(), restored.limits());
        for kind in LimitKind::ALL {
            if l.get(kind) != Limits::default().get(kind) {
                prop_assert_eq!(l.get(kind), r.get(kind), "{:?}", kind);
            }
        }
    }

    #[test]
    fn garbage_records_are_refused_not_panics(bytes: Vec<u8>) {
        let _ = Entry::decode(&bytes);
        let _ = image_codec::decode(&bytes);
    }
}

#[test]
fn every_command_round_trips() {
    let entries = [
        Entry {
            now: 0,
            command: Command::Start {
                epoch: 3,
                shards: 64,
            },
        },
        Entry {
            now: 5,
            command: Command::OpenSession {
                session: SessionId(9),
                kind: SessionKind::Binary {
                    secret: [7; 16],
                    timeout_ms: 10_000,
                    user: None,
                },
            },
        },
        Entry {
            now: 5,
            command: Command::OpenSession {
                session: SessionId(10),
                kind: SessionKind::Binary {
                    secret: [8; 16],
                    timeout_ms: 10_000,
                    user: Some("alice".into()),
                },
            },
        },
        Entry {
            now: 6,
            command: Command::CloseSession {
                session: SessionId(9),
            },
        },
        Entry {
            now: u64::MAX,
            command: Command::Acquire {
                session: SessionId(1),
                key: b"orders/42",
                req: AcquireRequest {
                    id: RequestId(u64::MAX),
                    mode: Mode::Semaphore {
                        limit: 5,
                        permits: 2,
                    },
                    reentrant: false,
                    ttl_ms: 30_000,
                    wait_ms: Some(0),
                    policy: Default::default(),
                },
                value: None,
            },
        },
        Entry {
            now: 7,
            command: Command::Release {
                session: SessionId(1),
                key: b"",
            },
        },
        Entry {
            now: 8,
            command: Command::Cancel {
                session: SessionId(2),
                key: b"k",
            },
        },
        Entry {
            now: 8,
            command: Command::Clock {
                unix_ms: 1_795_000_000_000,
            },
        },
        Entry {
            now: 9,
            command: Command::Tick {
                fired: vec![
                    Fired::Expired {
                        session: SessionId(1),
                        key: Key::new(b"a"),
                    },
                    Fired::TimedOut {
                        session: SessionId(2),
                        key: Key::new(b"b"),
                    },
                ],
            },
        },
        Entry {
            now: 18,
            command: Command::MultiAcquire {
                session: SessionId(9),
                items: vec![
                    (b"a", Mode::Exclusive),
                    (
                        b"s",
                        Mode::Semaphore {
                            limit: 3,
                            permits: 2,
                        },
                    ),
                ],
                req: MultiRequest {
                    id: RequestId(77),
                    ttl_ms: 500,
                    wait_ms: Some(20),
                    lock_delay_ms: 250,
                },
            },
        },
        Entry {
            now: 19,
            command: Command::MultiRelease {
                session: SessionId(9),
                keys: vec![b"a", b"s"],
            },
        },
    ];
    let more = [
        Entry {
            now: 10,
            command: Command::ForceRelease {
                key: b"orders/42",
                user: "ops",
                holds: vec![
                    (SessionId(3), FencingToken(1 << 40 | 5)),
                    (SessionId(4), FencingToken(6)),
                ],
            },
        },
        Entry {
            now: 11,
            command: Command::ForceRelease {
                key: b"",
                user: "",
                holds: Vec::new(),
            },
        },
        Entry {
            now: 12,
            command: Command::EndSession {
                session: SessionId(7),
                user: "ops",
            },
        },
        Entry {
            now: 13,
            command: Command::SetLimit {
                limit: LimitKind::HoldsPerSession,
                value: 5,
                user: "ops",
            },
        },
        Entry {
            now: 14,
            command: Command::Convert {
                session: SessionId(3),
                key: b"k",
                request: RequestId(77),
                to: Mode::Exclusive,
                wait_ms: Some(250),
            },
        },
        Entry {
            now: 15,
            command: Command::Convert {
                session: SessionId(3),
                key: b"k",
                request: RequestId(78),
                to: Mode::Shared,
                wait_ms: None,
            },
        },
        Entry {
            now: 16,
            command: Command::Acquire {
                session: SessionId(3),
                key: b"k",
                req: AcquireRequest {
                    id: RequestId(79),
                    mode: Mode::Shared,
                    reentrant: false,
                    ttl_ms: 100,
                    wait_ms: None,
                    policy: QueuePolicy {
                        priority: 1000,
                        aging_ms: 1000,
                        lock_delay_ms: 5000,
                    },
                },
                value: None,
            },
        },
        Entry {
            now: 17,
            command: Command::Tick {
                fired: vec![
                    Fired::DelayEnded {
                        key: Key::from("k"),
                    },
                    Fired::Expired {
                        session: SessionId(3),
                        key: Key::from("k"),
                    },
                ],
            },
        },
        Entry {
            now: 16,
            command: Command::DeadlockRefused {
                session: SessionId(9),
                key: b"a",
                cycle: vec![
                    (SessionId(9), Key::new(b"a")),
                    (SessionId(3), Key::new(b"b")),
                ],
            },
        },
    ];
    for e in entries.into_iter().chain(more) {
        let bytes = e.to_vec();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        // Every strict prefix is refused.
        for cut in 0..bytes.len() {
            assert!(
                Entry::decode(&bytes[..cut]).is_err(),
                "prefix {cut} of {e:?}"
            );
        }
    }
}

#[test]
fn values_round_trip_through_records_and_snapshots() {
    use crate::durable::image_codec::{self, State};
    let req = |id| AcquireRequest {
        id: RequestId(id),
        mode: Mode::Exclusive,
        reentrant: false,
        ttl_ms: 30_000,
        wait_ms: None,
        policy: Default::default(),
    };
    let records = [
        Entry {
            now: 1,
            command: Command::Acquire {
                session: SessionId(1),
                key: b"leader",
                req: req(1),
                value: Some(b"10.0.0.1:7000"),
            },
        },
        Entry {
            now: 2,
            command: Command::Acquire {
                session: SessionId(2),
                key: b"leader",
                req: req(2),
                value: Some(b"10.0.0.2:7000"),
            },
        },
        Entry {
            now: 3,
            command: Command::SetValue {
                session: SessionId(1),
                key: b"leader",
                value: b"10.0.0.9:7000",
            },
        },
    ];
    let table = LockTable::new(2, Limits::default(), 0);
    for r in &records {
        let bytes = r.to_vec();
        let back = Entry::decode(&bytes).expect("decodes");
        assert_eq!(&back, r);
        apply(&table, &back, &mut Vec::new());
    }
    // An acquire without a value keeps the old layout (flag 16 clear, nothing appended).
    let plain = Entry {
        now: 1,
        command: Command::Acquire {
            session: SessionId(1),
            key: b"k",
            req: req(1),
            value: None,
        },
    };
    let with_empty = Entry {
        now: 1,
        command: Command::Acquire {
            session: SessionId(1),
            key: b"k",
            req: req(1),
            value: Some(b""),
        },
    };
    assert_eq!(plain.to_vec(), with_empty.to_vec());
    let state = State {
        epoch: 1,
        now: 3,
        next_request: 3,
        sessions: Default::default(),
        limits: Default::default(),
        table: table.export(),
    };
    let decoded = image_codec::decode(&image_codec::encode(&state)).expect("decodes");
    assert_eq!(
        decoded.clone().table.canonical(),
        state.table.clone().canonical()
    );
    let restored = LockTable::new(2, Limits::default(), 0);
    restored.import(&decoded.table, 10);
    let values = |t: &LockTable| t.inspect_values(b"leader", 10).map(|(_, v)| v);
    assert_eq!(values(&restored), values(&table));
    assert_eq!(
        values(&restored).unwrap(),
        vec![Some(b"10.0.0.9:7000".to_vec().into_boxed_slice())]
    );
    // The queued request's value comes with it: granted after the holder goes.
    let mut ev = Vec::new();
    restored
        .release(SessionId(1), b"leader", 11, &mut ev)
        .unwrap();
    assert_eq!(
        values(&restored).unwrap(),
        vec![Some(b"10.0.0.2:7000".to_vec().into_boxed_slice())]
    );
}

#[test]
fn documented_example_bytes() {
    let acquire = Entry {
        now: 1_000_000,
        command: Command::Acquire {
            session: SessionId(1234),
            key: b"orders/42",
            req: AcquireRequest {
                id: RequestId(77 << 32),
                mode: Mode::Exclusive,
                reentrant: false,
                ttl_ms: 30_000,
                wait_ms: None,
                policy: Default::default(),
            },
            value: None,
        },
    };
    let release = Entry {
        now: 1_000_001,
        command: Command::Release {
            session: SessionId(1234),
            key: b"orders/42",
        },
    };
    // The example of docs/wal-format.md, byte for byte.
    let mut expected = vec![0x04, 0xc0, 0x84, 0x3d, 0xd2, 0x09, 0x09];
    expected.extend_from_slice(b"orders/42");
    expected.extend_from_slice(&[
        0x80, 0x80, 0x80, 0x80, 0xd0, 0x09, 0x00, 0x00, 0xb0, 0xea, 0x01,
    ]);
    assert_eq!(acquire.to_vec(), expected);
    let mut expected = vec![0x05, 0xc1, 0x84, 0x3d, 0xd2, 0x09, 0x09];
    expected.extend_from_slice(b"orders/42");
    assert_eq!(release.to_vec(), expected);
    // Each record also carries the WAL frame (9 bytes) and its index (8 bytes).
    let on_disk = acquire.to_vec().len() + release.to_vec().len() + 2 * 17;
    assert_eq!(on_disk, 77);
}

/// docs/wal-format.md's OpenSession examples: a default-user binary session keeps the
/// layout logs had before users existed (kind 1); a named user's is kind 2 with the name.
#[test]
fn documented_open_session_bytes() {
    let open = |user: Option<&str>| {
        Entry {
            now: 10,
            command: Command::OpenSession {
                session: SessionId(5),
                kind: SessionKind::Binary {
                    secret: [0x11; 16],
                    timeout_ms: 10_000,
                    user: user.map(str::to_string),
                },
            },
        }
        .to_vec()
    };
    let mut expected = vec![0x02, 0x0a, 0x05, 0x01];
    expected.extend_from_slice(&[0x11; 16]);
    expected.extend_from_slice(&[0x90, 0x4e]);
    assert_eq!(open(None), expected);
    let mut expected = vec![0x02, 0x0a, 0x05, 0x02];
    expected.extend_from_slice(&[0x11; 16]);
    expected.extend_from_slice(&[0x90, 0x4e, 0x05]);
    expected.extend_from_slice(b"alice");
    assert_eq!(open(Some("alice")), expected);
    for user in [None, Some("alice")] {
        let bytes = open(user);
        let back = Entry::decode(&bytes).expect("decodes");
        assert_eq!(back.to_vec(), bytes);
    }
}

/// A failed fsync reaches every waiting and later reply as an error, never as an
/// acknowledgement; the records before it stay acknowledged.
#[test]
fn a_failed_fsync_fails_the_replies_that_wait_for_it() {
    use crate::wal::{FaultIo, FsyncMode};
    use std::sync::Arc;

    let io = Arc::new(FaultIo::new());
    let opts = super::Options {
        dir: std::path::PathBuf::from("/data"),
        fsync: FsyncMode::Always,
        repair: false,
        shards: 4,
        limits: Limits::default(),
        snapshot_every: u64::MAX,
        segment_size: 1 << 20,
    };
    let (store, _) = super::open_with_io(&opts, io.clone()).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (s, _) = store.open_session(SessionKind::Text, 1);
    let req = |id| AcquireRequest {
        id: RequestId(id),
        mode: Mode::Exclusive,
        reentrant: false,
        ttl_ms: 1000,
        wait_ms: Some(0),
        policy: Default::default(),
    };
    let (_, ok_ticket) = store.acquire(s, b"a", &req(1), 2);
    rt.block_on(store.durable(ok_ticket))
        .expect("durable before the fault");

    io.fail_all_syncs(true);
    let (_, ticket) = store.acquire(s, b"b", &req(2), 3);
    let err = rt
        .block_on(store.durable(ticket))
        .expect_err("a reply whose record was not fsynced is not acknowledged");
    assert!(err.to_string().contains("write-ahead log failed"), "{err}");
    // Everything later fails too: the log stopped.
    let (_, later) = store.acquire(s, b"c", &req(3), 4);
    assert!(rt.block_on(store.durable(later)).is_err());
    // What was acknowledged before stays acknowledged.
    assert!(rt.block_on(store.durable(ok_ticket)).is_ok());
    assert!(store.watermark().unwrap().failure().is_some());
}
