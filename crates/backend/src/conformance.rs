//! A backend's tests call [`run`] and [`run_outage`] with its backend.
//!
//! [`run`] checks what the runtime relies on, each contract in a check of its own (an
//! async function named after it), in turn; it says on stderr which check runs, and
//! panics with a message that says what broke:
//!
//! - the log: `append` returns one id per message, strictly increasing, also across
//!   nodes and under concurrent appends; every record carries its uid, seq and message
//!   (broadcasts with data, binary attachments, rooms, except and volatile; probes;
//!   socket joins, leaves and disconnects), the same through `read_after`, `range` and
//!   `recent`; `read_after` waits its block on an
//!   empty log or at its end, wakes up for another node's append, returns entries at
//!   once, from the next one, and pages; `range` is `(after, upto]`, oldest first, at
//!   most `count`, and paging through it ends while the log grows; `recent` is newest
//!   first, `upto` included; `last_id` is zero on an empty log, else the newest id;
//! - kept sessions (`Retire` with `keep`): taken once, as kept, across the cluster; a take
//!   with an offset not in the log (`UnknownOffset`) or from another namespace
//!   (`WrongNamespace`) consumes nothing; they expire after their ttl; of 8 racing takes
//!   exactly one wins;
//! - live records (`PutLive`): `HolderAlive` while the holder's heartbeat is current
//!   (renewals count); taken once, as last written, when it lapsed; they expire with their
//!   window plus the holder's heartbeat ttl after its last heartbeat, and with their own
//!   ttl; `RefreshLive` extends the node's own (without overwriting them), writes the
//!   missing ones (with its window) and leaves other nodes' alone; a `Retire` deletes only
//!   the retiring node's own, and keeps nothing over another node's; with `keep`, the
//!   kept session replaces it;
//! - alive marks (`MarkAlive`, `ClearAlive`, `is_marked_alive`) across nodes, and their
//!   expiry; `apply` applies its ops in order.
//!
//! [`run_outage`] checks that every call fails, instead of hanging, while the server is
//! down or stalled, and that the backend works again when it is back.
//!
//! - ephemeral messages: `listeners` counts the nodes that `listen` to a namespace; a
//!   message to every node reaches each listener of its namespace (the sender included),
//!   one to a node reaches that node only, binary included; other namespaces and other
//!   clusters hear nothing.
//!
//! Every negative assertion has a positive control (a session that must still be there,
//! a mark that must not have expired), so that no check passes by doing nothing.
//!
//! `make(name)` opens a backend on the cluster `name`. Backends made with the same name
//! are nodes of one cluster: they share the log and the sessions. Backends made with
//! different names share nothing: give each name its own stream (table, subject) and
//! keys, and add an id of the test run so that runs never meet. Every check makes its
//! own clusters.
//!
//! ```
//! use std::future::Future;
//! use std::time::Duration;
//! use tether_backend::{conformance, BackendError, ClusterBackend};
//!
//! // In a backend's tests: `connect(url, prefix)` opens the backend's backend, with every
//! // name it uses (stream, keys) under `prefix`.
//! async fn conformance_tests<B, Fut>(connect: impl Fn(String, String) -> Fut)
//! where
//!     B: ClusterBackend,
//!     Fut: Future<Output = Result<B, BackendError>>,
//! {
//!     let run = std::process::id();
//!     conformance::run(|cluster| {
//!         let connecting = connect("backend://127.0.0.1".into(), format!("test:{run}:{cluster}:"));
//!         async { connecting.await.expect("the backend must run") }
//!     })
//!     .await;
//!     // The suite relays the backend's port through a proxy that it closes and stalls.
//!     let server = "127.0.0.1:6379".parse().expect("address");
//!     conformance::run_outage(server, Duration::from_secs(10), |proxy| {
//!         connect(format!("backend://{proxy}"), format!("test:{run}:outage:"))
//!     })
//!     .await;
//! }
//! ```
//!
//! `crates/redis/tests/conformance.rs` runs it against the Redis backend.
//!
//! [`run`]: crate::conformance::run
//! [`run_outage`]: crate::conformance::run_outage

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Barrier};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::{
    BackendError, Broadcast, ClusterBackend, ClusterMessage, Ephemeral, EphemeralBody, Position,
    Record, Room, Session, SessionOp, SocketsAction, TakeOutcome,
};

/// The suite's time scale.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The unit of every time to live, heartbeat and wait in [`run`] (200 ms). Each check
    /// keeps at least one unit between a deadline and the moment it looks, so a backend
    /// whose expiry is coarse (whole seconds) needs a larger unit. [`run`] waits about 35
    /// units in all.
    pub unit: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            unit: Duration::from_millis(200),
        }
    }
}

/// Runs every check of the log, the sessions and the alive marks against backends made
/// by `make` (see the [module documentation](self)), with the default [`Timing`].
/// Panics on the first failure.
pub async fn run<F, Fut, B>(make: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = B>,
    B: ClusterBackend,
{
    run_with(Timing::default(), make).await;
}

/// [`run`] with another time scale.
pub async fn run_with<F, Fut, B>(timing: Timing, make: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = B>,
    B: ClusterBackend,
{
    let s = Suite {
        make,
        unit: timing.unit,
    };
    let started = Instant::now();
    check("clusters_are_isolated", s.clusters_are_isolated()).await;
    check("an_empty_log", s.an_empty_log()).await;
    check(
        "append_returns_increasing_ids",
        s.append_returns_increasing_ids(),
    )
    .await;
    check("messages_round_trip", s.messages_round_trip()).await;
    check(
        "read_after_blocks_wakes_and_pages",
        s.read_after_blocks_wakes_and_pages(),
    )
    .await;
    check(
        "range_recent_and_last_id_agree",
        s.range_recent_and_last_id_agree(),
    )
    .await;
    check(
        "range_paging_terminates_while_the_log_grows",
        s.range_paging_terminates_while_the_log_grows(),
    )
    .await;
    check(
        "kept_sessions_are_taken_once",
        s.kept_sessions_are_taken_once(),
    )
    .await;
    check(
        "failed_takes_consume_nothing",
        s.failed_takes_consume_nothing(),
    )
    .await;
    check("kept_sessions_expire", s.kept_sessions_expire()).await;
    check(
        "racing_takes_have_one_winner",
        s.racing_takes_have_one_winner(),
    )
    .await;
    check(
        "live_records_are_taken_once_the_holder_is_dead",
        s.live_records_are_taken_once_the_holder_is_dead(),
    )
    .await;
    check(
        "live_records_expire_with_their_window",
        s.live_records_expire_with_their_window(),
    )
    .await;
    check(
        "retire_deletes_only_the_own_live_record",
        s.retire_deletes_only_the_own_live_record(),
    )
    .await;
    check("live_records_refresh", s.live_records_refresh()).await;
    check("alive_marks", s.alive_marks()).await;
    check("ops_apply_in_order", s.ops_apply_in_order()).await;
    check("ephemeral_messages", s.ephemeral_messages()).await;
    eprintln!(
        "cluster conformance: all checks passed in {:.1?}",
        started.elapsed()
    );
}

async fn check(name: &str, f: impl Future<Output = ()>) {
    eprintln!("cluster conformance: {name} ...");
    let t = Instant::now();
    f.await;
    eprintln!("cluster conformance: {name} ok ({:.1?})", t.elapsed());
}

/// The zero id: the position of an empty log.
const ZERO: Position = Position::ZERO;
/// Long enough never to expire during the suite.
const LONG: Duration = Duration::from_secs(120);

fn ok<T>(r: Result<T, BackendError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

fn broadcast(nsp: &str, tag: &str) -> ClusterMessage {
    ClusterMessage::Broadcast(Broadcast {
        nsp: nsp.into(),
        data: vec![json!("ev"), json!(tag)],
        attachments: vec![],
        rooms: vec![],
        except: vec![],
        volatile: false,
    })
}

fn rooms(names: &[&str]) -> Vec<Room> {
    names.iter().map(|r| Room::from(*r)).collect()
}

fn session(pid: &str, rooms_: &[&str], data: Value, start: Option<Position>) -> Session {
    Session {
        sid: format!("sid-{pid}-AAAAAAAAAAAAAAAA")
            .chars()
            .take(20)
            .collect(),
        pid: pid.into(),
        rooms: rooms(rooms_),
        data,
        start,
    }
}

fn keep(nsp: &str, s: &Session, ttl: Duration) -> SessionOp {
    SessionOp::Retire {
        nsp: nsp.into(),
        pid: s.pid.clone(),
        keep: Some((s.clone(), ttl)),
    }
}

fn retire(nsp: &str, pid: &str) -> SessionOp {
    SessionOp::Retire {
        nsp: nsp.into(),
        pid: pid.into(),
        keep: None,
    }
}

fn put_live(nsp: &str, s: &Session, ttl: Duration, window: Duration) -> SessionOp {
    SessionOp::PutLive {
        nsp: nsp.into(),
        session: s.clone(),
        ttl,
        window,
    }
}

fn ids(records: &[Record]) -> Vec<Position> {
    records.iter().map(|r| r.id).collect()
}

fn strictly_increasing(ids: &[Position]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

/// The candidates that are not in `log`, each once.
fn not_in(log: &[Position], candidates: impl IntoIterator<Item = Position>) -> Vec<Position> {
    let mut out: Vec<Position> = Vec::new();
    for c in candidates {
        if !log.contains(&c) && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

struct Suite<F> {
    make: F,
    unit: Duration,
}

impl<F, Fut, B> Suite<F>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = B>,
    B: ClusterBackend,
{
    async fn node(&self, cluster: &str) -> B {
        (self.make)(cluster.to_owned()).await
    }

    fn units(&self, n: u32) -> Duration {
        self.unit * n
    }

    /// Appends `n` broadcasts from `uid`, in batches of at most 50.
    async fn fill(&self, b: &B, uid: &str, n: usize) -> Vec<Position> {
        let mut out = Vec::new();
        let mut seq = 0u64;
        while out.len() < n {
            let batch: Vec<(u64, ClusterMessage)> = (0..(n - out.len()).min(50))
                .map(|_| {
                    seq += 1;
                    (seq, broadcast("/", &format!("{uid}-{seq}")))
                })
                .collect();
            let got = ok(b.append(uid, &batch).await, "append");
            assert_eq!(
                got.len(),
                batch.len(),
                "append returned {} ids for {} messages",
                got.len(),
                batch.len()
            );
            out.extend(got);
        }
        out
    }

    /// The whole log, through `range`, in pages.
    async fn whole_log(&self, b: &B) -> Vec<Record> {
        let last = ok(b.last_id().await, "last_id");
        let mut out: Vec<Record> = Vec::new();
        let mut from = ZERO;
        while from < last {
            let page = ok(b.range(from, last, 1000).await, "range");
            let Some(newest) = page.last() else {
                panic!("range({from}, {last}, 1000) returned nothing, but last_id is {last}");
            };
            from = newest.id;
            out.extend(page);
        }
        out
    }

    async fn take(&self, b: &B, nsp: &str, pid: &str, offset: Option<Position>) -> TakeOutcome {
        ok(
            b.take_session(nsp, pid, offset).await,
            &format!("take_session({nsp}, {pid})"),
        )
    }

    async fn apply(&self, b: &B, uid: &str, ops: &[SessionOp]) {
        ok(b.apply(uid, ops).await, "apply");
    }

    async fn marked(&self, b: &B, pid: &str) -> bool {
        ok(b.is_marked_alive(pid).await, "is_marked_alive")
    }

    // ---- The log ----

    async fn clusters_are_isolated(&self) {
        let a = self.node("isolated-a").await;
        let other = self.node("isolated-b").await;
        let appended = ok(a.append("n1", &[(1, broadcast("/", "a"))]).await, "append");
        assert_eq!(
            ok(other.last_id().await, "last_id"),
            ZERO,
            "a backend made with another name sees the first cluster's log: make(name) must \
             give each name its own log"
        );
        let s = session("p", &[], json!(1), None);
        self.apply(&a, "n1", &[keep("/", &s, LONG)]).await;
        assert_eq!(
            self.take(&other, "/", "p", None).await,
            TakeOutcome::NotFound,
            "a backend made with another name takes the first cluster's session"
        );
        let a2 = self.node("isolated-a").await;
        assert_eq!(
            ok(a2.last_id().await, "last_id"),
            appended[0],
            "two backends made with the same name must share one log (nodes of one cluster)"
        );
        assert_eq!(
            self.take(&a2, "/", "p", None).await,
            TakeOutcome::Taken(s),
            "two backends made with the same name must share the sessions"
        );
    }

    async fn an_empty_log(&self) {
        let b = self.node("empty").await;
        assert_eq!(
            ok(b.last_id().await, "last_id"),
            ZERO,
            "last_id of an empty log must be zero"
        );
        let block = self.units(2);
        let t = Instant::now();
        let got = ok(
            b.read_after(ZERO, block).await,
            "read_after on an empty log",
        );
        let waited = t.elapsed();
        assert!(
            got.is_empty(),
            "read_after on an empty log returned {got:?}"
        );
        assert!(
            waited >= block / 2,
            "read_after on an empty log returned after {waited:?}: it must wait (up to its \
             block of {block:?}) for entries, or the reader spins"
        );
        assert!(
            waited <= block + Duration::from_secs(2),
            "read_after on an empty log took {waited:?}, far beyond its block of {block:?}"
        );
        assert_eq!(
            self.take(&b, "/", "p", None).await,
            TakeOutcome::NotFound,
            "a take in a fresh cluster found a session"
        );
        assert!(
            !self.marked(&b, "p").await,
            "a fresh cluster has an alive mark"
        );
    }

    async fn append_returns_increasing_ids(&self) {
        let a = self.node("append").await;
        let b = self.node("append").await;
        let first: Vec<(u64, ClusterMessage)> = vec![
            (1, broadcast("/", "a1")),
            (
                2,
                ClusterMessage::Probe {
                    nsp: "/".into(),
                    pid: "p".into(),
                },
            ),
            (3, broadcast("/x", "a3")),
            (4, broadcast("/", "a4")),
            (5, broadcast("/", "a5")),
        ];
        let ids1 = ok(a.append("node-a", &first).await, "append");
        assert_eq!(ids1.len(), 5, "append must return one id per message");
        assert!(
            strictly_increasing(&ids1),
            "append must return strictly increasing ids, in batch order: {ids1:?}"
        );
        let second: Vec<(u64, ClusterMessage)> = (1..=3)
            .map(|i| (i, broadcast("/", &format!("b{i}"))))
            .collect();
        let ids2 = ok(b.append("node-b", &second).await, "append");
        assert_eq!(ids2.len(), 3, "append must return one id per message");
        assert!(
            strictly_increasing(&ids2) && ids2[0] > ids1[4],
            "a later append (from another node) must get greater ids: {ids1:?} then {ids2:?}"
        );
        let none = ok(a.append("node-a", &[]).await, "append of an empty batch");
        assert!(
            none.is_empty(),
            "an empty batch must append nothing: {none:?}"
        );
        assert_eq!(ok(a.last_id().await, "last_id"), ids2[2]);

        let log = self.whole_log(&b).await;
        let expected: Vec<Position> = ids1.iter().chain(&ids2).copied().collect();
        assert_eq!(
            ids(&log),
            expected,
            "the log must hold exactly the appended ids"
        );
        for (r, (uid, (seq, msg))) in log.iter().zip(
            std::iter::repeat("node-a")
                .zip(&first)
                .chain(std::iter::repeat("node-b").zip(&second)),
        ) {
            assert_eq!(r.uid, uid, "record {} must carry its appender's uid", r.id);
            assert_eq!(
                r.seq,
                Some(*seq),
                "record {} must carry its appender's seq",
                r.id
            );
            assert_eq!(&r.message, msg, "record {} must carry its message", r.id);
        }

        // Concurrent appends from four nodes: distinct ids, each batch in order.
        let mut tasks = Vec::new();
        for n in 0..4u64 {
            let node = Arc::new(self.node("append").await);
            tasks.push(tokio::spawn(async move {
                let uid = format!("node-{n}");
                let mut got = Vec::new();
                for batch in 0..3u64 {
                    let msgs: Vec<(u64, ClusterMessage)> = (1..=10)
                        .map(|i| (batch * 10 + i, broadcast("/", &format!("{uid}-{i}"))))
                        .collect();
                    let ids = node.append(&uid, &msgs).await;
                    got.push(ids);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            for r in t.await.expect("append task") {
                let batch = ok(r, "concurrent append");
                assert_eq!(batch.len(), 10, "append must return one id per message");
                assert!(
                    strictly_increasing(&batch),
                    "a concurrent append returned ids out of order: {batch:?}"
                );
                all.extend(batch);
            }
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(
            all.len(),
            before,
            "concurrent appends got the same id twice"
        );
        let log = self.whole_log(&b).await;
        assert_eq!(
            ids(&log[8..]),
            all,
            "the log must hold exactly the ids that concurrent appends returned"
        );
        let mut last_seq = std::collections::HashMap::new();
        for r in &log[8..] {
            let seq = r.seq.expect("seq");
            let prev = last_seq.insert(r.uid.clone(), seq).unwrap_or(0);
            assert!(
                seq > prev,
                "{}'s entries are out of its order in the log ({prev} before {seq})",
                r.uid
            );
        }
    }

    async fn messages_round_trip(&self) {
        let a = self.node("round-trip").await;
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let messages = [
            broadcast("/", "plain"),
            ClusterMessage::Broadcast(Broadcast {
                nsp: "/chat".into(),
                data: vec![
                    json!("ev"),
                    json!({"nested": [1, -2, 2.5, u64::MAX, i64::MIN, null, true, "ünï ✓"]}),
                    json!("\"quoted\" \\ \n\t"),
                    json!([]),
                    json!({}),
                ],
                attachments: vec![],
                rooms: rooms(&["r1", "a room", "ü"]),
                except: rooms(&["e1", "e2"]),
                volatile: false,
            }),
            ClusterMessage::Broadcast(Broadcast {
                nsp: "/".into(),
                data: vec![json!("volatile")],
                attachments: vec![],
                rooms: rooms(&["r"]),
                except: vec![],
                volatile: true,
            }),
            ClusterMessage::Broadcast(Broadcast {
                nsp: "/bin".into(),
                data: vec![
                    json!("file"),
                    json!({"_placeholder": true, "num": 0}),
                    json!({"meta": {"n": 1, "blob": {"_placeholder": true, "num": 1}}}),
                    json!([{"_placeholder": true, "num": 2}]),
                ],
                attachments: vec![
                    Bytes::from_static(&[0, 1, 0xff, 0xfe]),
                    Bytes::from(big),
                    Bytes::new(),
                ],
                rooms: rooms(&["r"]),
                except: rooms(&["e"]),
                volatile: true,
            }),
            ClusterMessage::Probe {
                nsp: "/chat".into(),
                pid: "pid-ü".into(),
            },
            ClusterMessage::Sockets {
                nsp: "/chat".into(),
                rooms: rooms(&["r1", "ü"]),
                except: rooms(&["e"]),
                action: SocketsAction::Join(rooms(&["j1", "j 2"])),
            },
            ClusterMessage::Sockets {
                nsp: "/".into(),
                rooms: vec![],
                except: vec![],
                action: SocketsAction::Leave(rooms(&["l1"])),
            },
            ClusterMessage::Sockets {
                nsp: "/".into(),
                rooms: rooms(&["r"]),
                except: vec![],
                action: SocketsAction::Disconnect { close: true },
            },
            ClusterMessage::Sockets {
                nsp: "/".into(),
                rooms: vec![],
                except: rooms(&["e"]),
                action: SocketsAction::Disconnect { close: false },
            },
            ClusterMessage::Broadcast(Broadcast {
                nsp: "/".into(),
                data: vec![json!("no-args")],
                attachments: vec![],
                rooms: vec![],
                except: vec![],
                volatile: false,
            }),
        ];
        let batch: Vec<(u64, ClusterMessage)> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64 + 1, m.clone()))
            .collect();
        let appended = ok(a.append("node-rt", &batch).await, "append");
        let b = self.node("round-trip").await;
        let mut read = Vec::new();
        let mut pos = ZERO;
        while read.len() < messages.len() {
            let got = ok(b.read_after(pos, self.units(5)).await, "read_after");
            let Some(last) = got.last() else {
                panic!("read_after({pos}) returned nothing, but entries follow it");
            };
            pos = last.id;
            read.extend(got);
        }
        let last = appended[appended.len() - 1];
        let range = ok(b.range(ZERO, last, 100).await, "range");
        let mut recent = ok(b.recent(last, 100).await, "recent");
        recent.reverse();
        for (how, records) in [("read_after", read), ("range", range), ("recent", recent)] {
            assert_eq!(
                ids(&records),
                appended,
                "{how} must return every appended entry"
            );
            for (r, (seq, m)) in records.iter().zip(&batch) {
                assert_eq!(&r.message, m, "{how}: the message must round-trip");
                assert_eq!(r.uid, "node-rt", "{how}: the record must carry the uid");
                assert_eq!(r.seq, Some(*seq), "{how}: the record must carry the seq");
            }
        }
    }

    async fn read_after_blocks_wakes_and_pages(&self) {
        let writer = self.node("read-after").await;
        let reader = Arc::new(self.node("read-after").await);

        // A reader starts at last_id (zero on a fresh log) and wakes up for the first
        // entry that another node appends.
        let start = ok(reader.last_id().await, "last_id");
        let block = self.units(15);
        let r = reader.clone();
        let read = tokio::spawn(async move {
            let got = r.read_after(start, block).await;
            (got, Instant::now())
        });
        sleep(self.unit).await;
        let first = ok(
            writer.append("w", &[(1, broadcast("/", "wake"))]).await,
            "append",
        );
        let appended_at = Instant::now();
        let (got, returned_at) = timeout(block + Duration::from_secs(5), read)
            .await
            .expect("read_after did not return within its block")
            .expect("read_after task");
        let got = ok(got, "read_after");
        assert_eq!(
            ids(&got),
            first,
            "a blocked read_after must return the entry another node appended"
        );
        let late = returned_at.saturating_duration_since(appended_at);
        assert!(
            late <= self.units(5),
            "a blocked read_after must wake up for a new entry: it returned {late:?} after \
             the append (its block was {block:?})"
        );

        // With entries after the position: returns at once, oldest first, from the next
        // one; pages through more entries than one read returns.
        let rest = self.fill(&writer, "w2", 250).await;
        let t = Instant::now();
        let got = ok(reader.read_after(rest[9], block).await, "read_after");
        assert!(
            t.elapsed() <= self.units(5),
            "read_after waited {:?} although entries followed its position",
            t.elapsed()
        );
        assert_eq!(
            got.first().map(|r| r.id),
            Some(rest[10]),
            "read_after must start right after its position"
        );
        assert!(
            strictly_increasing(&ids(&got)),
            "read_after must return entries oldest first"
        );
        let all: Vec<Position> = first.iter().chain(&rest).copied().collect();
        let mut seen = Vec::new();
        let mut pos = start;
        for _ in 0..=all.len() {
            if pos == all[all.len() - 1] {
                break;
            }
            let got = ok(reader.read_after(pos, self.units(2)).await, "read_after");
            let Some(last) = got.last() else {
                panic!("read_after({pos}) returned nothing, but entries follow it");
            };
            assert!(
                got.iter().all(|r| r.id > pos),
                "read_after({pos}) returned an entry at or before its position"
            );
            pos = last.id;
            seen.extend(ids(&got));
        }
        assert_eq!(
            seen, all,
            "paging with read_after must see every entry once, in order"
        );

        // At the end of the log: waits for its block, then returns nothing.
        let t = Instant::now();
        let wait = self.units(2);
        let got = ok(reader.read_after(pos, wait).await, "read_after");
        assert!(
            got.is_empty(),
            "read_after at the end of the log returned {got:?}"
        );
        assert!(
            t.elapsed() >= wait / 2,
            "read_after at the end of the log returned after {:?}: it must wait (up to its \
             block of {wait:?}), or the reader spins",
            t.elapsed()
        );
    }

    async fn range_recent_and_last_id_agree(&self) {
        let b = self.node("range").await;
        let id = self.fill(&b, "n", 10).await;
        let got = ids(&ok(b.range(id[2], id[6], 100).await, "range"));
        assert_eq!(
            got,
            id[3..=6],
            "range(after, upto) must return (after, upto]: exclusive lower bound, inclusive \
             upper"
        );
        let got = ids(&ok(b.range(id[2], id[6], 2).await, "range"));
        assert_eq!(
            got,
            id[3..5],
            "range with count 2 must return the two oldest entries of the interval"
        );
        let got = ids(&ok(b.range(ZERO, id[9], 100).await, "range"));
        assert_eq!(got, id, "range from zero must return the whole log");
        let got = ids(&ok(b.range(ZERO, id[0], 1).await, "range"));
        assert_eq!(got, id[..1], "range from zero to the first entry, count 1");
        let got = ids(&ok(b.range(id[9], id[9], 100).await, "range"));
        assert!(got.is_empty(), "range(x, x) must be empty: {got:?}");

        let got = ids(&ok(b.recent(id[6], 3).await, "recent"));
        assert_eq!(
            got,
            [id[6], id[5], id[4]],
            "recent(upto, 3) must return the 3 newest entries up to upto, inclusive, newest \
             first"
        );
        let mut got = ids(&ok(b.recent(id[9], 100).await, "recent"));
        got.reverse();
        assert_eq!(got, id, "recent(last, 100) must return the whole log");
        let got = ids(&ok(b.recent(id[0], 5).await, "recent"));
        assert_eq!(
            got,
            id[..1],
            "recent(first, 5) must return only the first entry"
        );
        assert_eq!(
            ok(b.last_id().await, "last_id"),
            id[9],
            "last_id must be the newest entry"
        );
    }

    async fn range_paging_terminates_while_the_log_grows(&self) {
        let b = self.node("paging").await;
        let writer = Arc::new(self.node("paging").await);
        let id = self.fill(&b, "n", 40).await;
        let (after, upto) = (id[4], id[39]);
        let stop = Arc::new(AtomicBool::new(false));
        let grown = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, grown, writer) = (stop.clone(), grown.clone(), writer.clone());
            tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let msg = [(seq, broadcast("/", "later"))];
                    if writer.append("writer", &msg).await.is_ok() {
                        grown.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let deadline = Instant::now() + self.units(10);
        while grown.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "the writer could not append");
            sleep(Duration::from_millis(5)).await;
        }
        let before = grown.load(Ordering::Relaxed);
        // As the runtime pages through what a session missed.
        let mut from = after;
        let mut got = Vec::new();
        let mut pages = 0;
        while from < upto {
            let page = ok(b.range(from, upto, 3).await, "range");
            let Some(last) = page.last() else {
                panic!("range({from}, {upto}, 3) returned nothing before reaching {upto}");
            };
            assert!(
                page.len() <= 3,
                "range with count 3 returned {} entries",
                page.len()
            );
            from = last.id;
            got.extend(ids(&page));
            pages += 1;
            assert!(pages <= 20, "paging with range does not terminate");
            sleep(Duration::from_millis(2)).await;
        }
        stop.store(true, Ordering::Relaxed);
        task.await.expect("writer task");
        assert!(
            grown.load(Ordering::Relaxed) > before,
            "the log did not grow while paging (the check proved nothing)"
        );
        assert_eq!(
            got,
            id[5..],
            "paging range(after, upto) while the log grows must return (after, upto], once"
        );
    }

    // ---- Kept sessions ----

    async fn kept_sessions_are_taken_once(&self) {
        let a = self.node("kept").await;
        let b = self.node("kept").await;
        let c = self.node("kept").await;
        let id = self.fill(&a, "n", 2).await;
        let rich = session(
            "p-rich",
            &["r1", "a room ü"],
            json!({"user": "ü", "n": [1, 2.5, null], "ok": true}),
            Some(id[0]),
        );
        let minimal = session("p-min", &[], Value::Null, None);
        self.apply(
            &a,
            "node-a",
            &[keep("/chat", &rich, LONG), keep("/", &minimal, LONG)],
        )
        .await;
        assert_eq!(
            self.take(&b, "/chat", "p-rich", Some(id[1])).await,
            TakeOutcome::Taken(rich.clone()),
            "a kept session must be taken (sid, pid, rooms, data, start as kept)"
        );
        let again = self.take(&b, "/chat", "p-rich", Some(id[1])).await;
        assert_eq!(
            again,
            TakeOutcome::NotFound,
            "a kept session must be taken once: a second take found {again:?}"
        );
        let other = self.take(&c, "/chat", "p-rich", None).await;
        assert_eq!(
            other,
            TakeOutcome::NotFound,
            "a kept session must be taken once across the cluster: another node found {other:?}"
        );
        assert_eq!(
            self.take(&c, "/", "p-min", None).await,
            TakeOutcome::Taken(minimal),
            "a kept session without rooms, data or start must be taken as kept"
        );
        assert_eq!(
            self.take(&b, "/", "p-min", None).await,
            TakeOutcome::NotFound,
            "a kept session must be taken once"
        );
    }

    async fn failed_takes_consume_nothing(&self) {
        let a = self.node("failed").await;
        let elsewhere = self.node("failed-elsewhere").await;
        let id = self.fill(&a, "n", 3).await;
        let foreign = self.fill(&elsewhere, "n", 1).await;
        let s = session("p", &["r"], json!({"k": 1}), Some(id[0]));
        self.apply(&a, "n", &[keep("/", &s, LONG)]).await;
        let b = self.node("failed").await;
        let before_first = if id[0].seq > 0 {
            Position {
                epoch: id[0].epoch,
                seq: id[0].seq - 1,
            }
        } else {
            Position {
                epoch: id[0].epoch.saturating_sub(1),
                seq: u64::MAX,
            }
        };
        let unknown = not_in(
            &id,
            [
                ZERO,
                before_first,
                Position {
                    epoch: id[1].epoch,
                    seq: id[1].seq + 1,
                },
                Position {
                    epoch: id[2].epoch,
                    seq: id[2].seq + 1,
                },
                Position {
                    epoch: id[2].epoch + 1,
                    seq: 0,
                },
                Position {
                    epoch: u64::MAX,
                    seq: u64::MAX,
                },
                foreign[0],
            ],
        );
        for offset in unknown {
            assert_eq!(
                self.take(&b, "/", "p", Some(offset)).await,
                TakeOutcome::UnknownOffset,
                "a take with offset {offset}, which is not in the log, must be UnknownOffset"
            );
        }
        for offset in [Some(id[0]), None] {
            assert_eq!(
                self.take(&b, "/other", "p", offset).await,
                TakeOutcome::WrongNamespace,
                "a take from another namespace must be WrongNamespace"
            );
        }
        assert_eq!(
            self.take(&b, "/", "p-unknown", Some(id[0])).await,
            TakeOutcome::NotFound,
            "a take of an unknown pid must be NotFound"
        );
        assert_eq!(
            self.take(&b, "/", "p", Some(id[2])).await,
            TakeOutcome::Taken(s),
            "failed takes (unknown offset, wrong namespace) must consume nothing"
        );
    }

    async fn kept_sessions_expire(&self) {
        let b = self.node("kept-expire").await;
        let short1 = session("p-short-1", &[], json!(1), None);
        let short2 = session("p-short-2", &[], json!(2), None);
        let long = session("p-long", &[], json!(3), None);
        let ttl = self.units(2);
        let at = Instant::now();
        self.apply(
            &b,
            "n",
            &[
                keep("/", &short1, ttl),
                keep("/", &short2, ttl),
                keep("/", &long, LONG),
            ],
        )
        .await;
        assert_eq!(
            self.take(&b, "/", "p-short-1", None).await,
            TakeOutcome::Taken(short1),
            "a session kept for {ttl:?} must be there before its ttl"
        );
        sleep_until(at + ttl + self.unit).await;
        assert_eq!(
            self.take(&b, "/", "p-short-2", None).await,
            TakeOutcome::NotFound,
            "a session kept for {ttl:?} must be gone after its ttl"
        );
        assert_eq!(
            self.take(&b, "/", "p-long", None).await,
            TakeOutcome::Taken(long),
            "a session kept for {LONG:?} must still be there"
        );
    }

    async fn race(&self, cluster: &str, pid: &str) -> Vec<TakeOutcome> {
        const RACERS: usize = 8;
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for _ in 0..RACERS {
            let node = Arc::new(self.node(cluster).await);
            let barrier = barrier.clone();
            let pid = pid.to_owned();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                node.take_session("/", &pid, None).await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(ok(t.await.expect("take task"), "racing take_session"));
        }
        out
    }

    async fn racing_takes_have_one_winner(&self) {
        let b = self.node("race").await;
        let s = session("p-kept", &["r"], json!(1), None);
        self.apply(&b, "n", &[keep("/", &s, LONG)]).await;
        let outcomes = self.race("race", "p-kept").await;
        let won = outcomes
            .iter()
            .filter(|o| **o == TakeOutcome::Taken(s.clone()))
            .count();
        let lost = outcomes
            .iter()
            .filter(|o| **o == TakeOutcome::NotFound)
            .count();
        assert!(
            won == 1 && lost == outcomes.len() - 1,
            "exactly one of {} racing takes of a kept session must win, the others find \
             nothing: {outcomes:?}",
            outcomes.len()
        );

        // A live record whose holder is dead.
        let hb = self.unit;
        ok(b.heartbeat("race-holder", hb).await, "heartbeat");
        let live = session("p-live", &["r"], json!(2), None);
        self.apply(&b, "race-holder", &[put_live("/", &live, LONG, LONG)])
            .await;
        sleep(hb + self.unit).await;
        let outcomes = self.race("race", "p-live").await;
        let won = outcomes
            .iter()
            .filter(|o| **o == TakeOutcome::Taken(live.clone()))
            .count();
        let lost = outcomes
            .iter()
            .filter(|o| **o == TakeOutcome::NotFound)
            .count();
        assert!(
            won == 1 && lost == outcomes.len() - 1,
            "exactly one of {} racing takes of a dead holder's live record must win, the \
             others find nothing: {outcomes:?}",
            outcomes.len()
        );
    }

    // ---- Live records ----

    async fn live_records_are_taken_once_the_holder_is_dead(&self) {
        let holder = self.node("live").await;
        let taker = self.node("live").await;
        let id = self.fill(&holder, "holder", 1).await;
        let hb = self.units(3);
        let t0 = Instant::now();
        ok(holder.heartbeat("holder", hb).await, "heartbeat");
        let v1 = session("p", &["r1"], json!({"v": 1}), None);
        let v2 = session("p", &["r1", "r2"], json!({"v": 2}), Some(id[0]));
        self.apply(&holder, "holder", &[put_live("/", &v1, LONG, LONG)])
            .await;
        self.apply(&holder, "holder", &[put_live("/", &v2, LONG, LONG)])
            .await;
        assert_eq!(
            self.take(&taker, "/", "p", None).await,
            TakeOutcome::HolderAlive("holder".into()),
            "a live record must be HolderAlive(holder) while its holder's heartbeat is current"
        );
        assert_eq!(
            self.take(&taker, "/other", "p", None).await,
            TakeOutcome::WrongNamespace,
            "a live record taken from another namespace must be WrongNamespace"
        );
        sleep_until(t0 + self.units(2)).await;
        ok(holder.heartbeat("holder", hb).await, "heartbeat");
        sleep_until(t0 + self.units(4)).await;
        assert_eq!(
            self.take(&taker, "/", "p", None).await,
            TakeOutcome::HolderAlive("holder".into()),
            "a renewed heartbeat must keep the holder alive past the first heartbeat's ttl"
        );
        sleep_until(t0 + self.units(6)).await;
        assert_eq!(
            self.take(&taker, "/", "p", Some(ZERO)).await,
            TakeOutcome::UnknownOffset,
            "a dead holder's live record taken with an offset not in the log must be \
             UnknownOffset"
        );
        assert_eq!(
            self.take(&taker, "/other", "p", None).await,
            TakeOutcome::WrongNamespace,
            "a dead holder's live record taken from another namespace must be WrongNamespace"
        );
        assert_eq!(
            self.take(&taker, "/", "p", Some(id[0])).await,
            TakeOutcome::Taken(v2),
            "once the holder's heartbeat lapsed, its live record must be taken, as last \
             written (and failed takes must have consumed nothing)"
        );
        assert_eq!(
            self.take(&taker, "/", "p", None).await,
            TakeOutcome::NotFound,
            "a dead holder's live record must be taken once"
        );
    }

    async fn live_records_expire_with_their_window(&self) {
        let holder = self.node("window").await;
        let taker = self.node("window").await;
        // The taker is a live node with a heartbeat of its own, longer than the holder's:
        // the holder's heartbeat life counts.
        ok(taker.heartbeat("taker", LONG).await, "heartbeat");
        let hb = self.unit;
        let window = self.units(3);
        let t0 = Instant::now();
        ok(holder.heartbeat("holder", hb).await, "heartbeat");
        let mid = session("p-mid", &[], json!(1), None);
        let out = session("p-out", &[], json!(2), None);
        self.apply(
            &holder,
            "holder",
            &[
                put_live("/", &mid, LONG, window),
                put_live("/", &out, LONG, window),
            ],
        )
        .await;
        // The last heartbeat: it lapses at 3 units; the window ends at 6 (4 had it counted
        // from the first heartbeat).
        sleep_until(t0 + self.units(2)).await;
        ok(holder.heartbeat("holder", hb).await, "heartbeat");
        sleep_until(t0 + self.units(5)).await;
        assert_eq!(
            self.take(&taker, "/", "p-mid", None).await,
            TakeOutcome::Taken(mid),
            "a dead holder's live record must be restorable until window + heartbeat ttl \
             after the holder's last heartbeat"
        );
        sleep_until(t0 + self.units(7)).await;
        let got = self.take(&taker, "/", "p-out", None).await;
        assert_eq!(
            got,
            TakeOutcome::NotFound,
            "a dead holder's live record must expire window ({window:?}) + the holder's \
             heartbeat ttl ({hb:?}) after its last heartbeat; it was still there {:?} after \
             it (and the taker's own heartbeat ttl must not count)",
            self.units(5)
        );
    }

    async fn retire_deletes_only_the_own_live_record(&self) {
        let holder = self.node("retire").await;
        let other = self.node("retire").await;
        ok(holder.heartbeat("holder", LONG).await, "heartbeat");
        let p1 = session("p1", &["r"], json!(1), None);
        let p2 = session("p2", &["r"], json!(2), None);
        self.apply(
            &holder,
            "holder",
            &[
                put_live("/", &p1, LONG, LONG),
                put_live("/", &p2, LONG, LONG),
            ],
        )
        .await;
        // Another node retires late (it held the socket before, was cut off, and the
        // socket moved here): without and with keep.
        let stale = session("p1", &["old"], json!("stale"), None);
        self.apply(&other, "other", &[retire("/", "p1")]).await;
        assert_eq!(
            self.take(&other, "/", "p1", None).await,
            TakeOutcome::HolderAlive("holder".into()),
            "a Retire by another node must not delete this node's live record"
        );
        self.apply(&other, "other", &[keep("/", &stale, LONG)])
            .await;
        assert_eq!(
            self.take(&other, "/", "p1", None).await,
            TakeOutcome::HolderAlive("holder".into()),
            "a Retire with keep by another node must neither delete this node's live record \
             nor keep a stale session over it"
        );
        self.apply(&holder, "holder", &[retire("/", "p1")]).await;
        assert_eq!(
            self.take(&other, "/", "p1", None).await,
            TakeOutcome::NotFound,
            "a Retire without keep by the holder must leave nothing (and another node's \
             Retire with keep must have kept nothing)"
        );
        let kept = session("p2", &["r", "r2"], json!({"kept": true}), None);
        self.apply(&holder, "holder", &[keep("/", &kept, LONG)])
            .await;
        assert_eq!(
            self.take(&other, "/", "p2", None).await,
            TakeOutcome::Taken(kept),
            "a Retire with keep by the holder must keep its session (not the live record)"
        );
        assert_eq!(
            self.take(&other, "/", "p2", None).await,
            TakeOutcome::NotFound,
            "a Retire with keep must delete the live record: it was taken a second time"
        );
    }

    async fn live_records_refresh(&self) {
        let n1 = self.node("refresh").await;
        let n2 = self.node("refresh").await;
        let taker = self.node("refresh").await;
        let short = self.units(2);
        let hb = self.units(4);
        let t0 = Instant::now();
        ok(n1.heartbeat("n1", hb).await, "heartbeat");
        ok(n2.heartbeat("n2", hb).await, "heartbeat");
        let own = session("own", &["r"], json!({"v": 1}), None);
        let own_newer = session("own", &["r", "r2"], json!({"v": 2}), None);
        let lost = session("lost", &["r"], json!({"lost": true}), None);
        let lost_w = session("lost-w", &[], json!({"window": "short"}), None);
        let theirs_short = session("theirs-short", &[], json!({"holder": "n2"}), None);
        let theirs = session("theirs", &[], json!({"holder": "n2"}), None);
        let stale = |s: &Session| {
            let mut s = s.clone();
            s.data = json!({"holder": "n1, stale"});
            s
        };
        self.apply(&n1, "n1", &[put_live("/", &own, short, LONG)])
            .await;
        self.apply(
            &n2,
            "n2",
            &[
                put_live("/", &theirs_short, short, LONG),
                put_live("/", &theirs, LONG, LONG),
            ],
        )
        .await;
        // n1's refresh: "own" is its own, "lost" and "lost-w" are missing (a backend
        // restart lost them), the others are n2's (their sockets moved there).
        self.apply(
            &n1,
            "n1",
            &[
                SessionOp::RefreshLive {
                    nsp: "/".into(),
                    sessions: vec![
                        own_newer,
                        lost.clone(),
                        stale(&theirs_short),
                        stale(&theirs),
                    ],
                    ttl: LONG,
                    window: LONG,
                },
                SessionOp::RefreshLive {
                    nsp: "/w".into(),
                    sessions: vec![lost_w.clone()],
                    ttl: LONG,
                    window: self.unit,
                },
            ],
        )
        .await;
        for (nsp, pid, holder) in [
            ("/", "own", "n1"),
            ("/", "lost", "n1"),
            ("/w", "lost-w", "n1"),
            ("/", "theirs", "n2"),
        ] {
            assert_eq!(
                self.take(&taker, nsp, pid, None).await,
                TakeOutcome::HolderAlive(holder.into()),
                "after RefreshLive by n1, {pid} must be live on {holder} (RefreshLive writes \
                 the missing records, and leaves another node's alone)"
            );
        }
        // Both nodes alive; the records put for 2 units are past their ttl.
        sleep_until(t0 + self.units(3)).await;
        assert_eq!(
            self.take(&taker, "/", "own", None).await,
            TakeOutcome::HolderAlive("n1".into()),
            "RefreshLive must extend the life of the node's own records"
        );
        assert_eq!(
            self.take(&taker, "/", "theirs-short", None).await,
            TakeOutcome::NotFound,
            "a live record must expire after its ttl, even while its holder is alive; and \
             RefreshLive by another node must neither extend nor rewrite it"
        );
        // Both nodes dead (their heartbeats lapsed at 4 units).
        sleep_until(t0 + self.units(6)).await;
        assert_eq!(
            self.take(&taker, "/", "own", None).await,
            TakeOutcome::Taken(own),
            "RefreshLive must not overwrite an existing record of the node (only extend it)"
        );
        assert_eq!(
            self.take(&taker, "/", "lost", None).await,
            TakeOutcome::Taken(lost),
            "a record that RefreshLive wrote must be taken, as written, once its holder is dead"
        );
        assert_eq!(
            self.take(&taker, "/", "theirs", None).await,
            TakeOutcome::Taken(theirs),
            "RefreshLive by another node must not overwrite a record (the holder's own session \
             must be restored)"
        );
        assert_eq!(
            self.take(&taker, "/w", "lost-w", None).await,
            TakeOutcome::NotFound,
            "a record that RefreshLive wrote must expire with the refresh's window"
        );
    }

    // ---- Alive marks ----

    async fn alive_marks(&self) {
        let a = self.node("alive").await;
        let b = self.node("alive").await;
        assert!(
            !self.marked(&b, "p").await,
            "a pid is marked before MarkAlive"
        );
        self.apply(
            &a,
            "a",
            &[SessionOp::MarkAlive {
                pid: "p".into(),
                ttl: LONG,
            }],
        )
        .await;
        assert!(
            self.marked(&b, "p").await,
            "MarkAlive by one node must be seen by another"
        );
        assert!(
            !self.marked(&b, "q").await,
            "MarkAlive of one pid marked another"
        );
        self.apply(&b, "b", &[SessionOp::ClearAlive { pid: "p".into() }])
            .await;
        assert!(
            !self.marked(&a, "p").await,
            "ClearAlive (by another node) must clear the mark"
        );
        let ttl = self.units(2);
        let at = Instant::now();
        self.apply(
            &a,
            "a",
            &[
                SessionOp::MarkAlive {
                    pid: "p".into(),
                    ttl,
                },
                SessionOp::MarkAlive {
                    pid: "q".into(),
                    ttl: LONG,
                },
            ],
        )
        .await;
        assert!(
            self.marked(&b, "p").await,
            "a mark must be there before its ttl"
        );
        sleep_until(at + ttl + self.unit).await;
        assert!(
            !self.marked(&b, "p").await,
            "a mark must expire after its ttl ({ttl:?})"
        );
        assert!(
            self.marked(&b, "q").await,
            "a mark with a ttl of {LONG:?} expired"
        );
    }

    async fn ops_apply_in_order(&self) {
        let b = self.node("order").await;
        ok(b.heartbeat("holder", LONG).await, "heartbeat");
        let mark = |pid: &str| SessionOp::MarkAlive {
            pid: pid.into(),
            ttl: LONG,
        };
        let clear = |pid: &str| SessionOp::ClearAlive { pid: pid.into() };
        self.apply(
            &b,
            "holder",
            &[mark("p"), clear("p"), clear("q"), mark("q")],
        )
        .await;
        assert!(
            !self.marked(&b, "p").await && self.marked(&b, "q").await,
            "apply must apply its ops in order (MarkAlive then ClearAlive, and the reverse)"
        );
        let r = session("r", &[], json!(1), None);
        let s = session("s", &[], json!(2), None);
        let k1 = session("k", &["r1"], json!(3), None);
        let k2 = session("k", &["r2"], json!(4), None);
        self.apply(
            &b,
            "holder",
            &[
                put_live("/", &r, LONG, LONG),
                retire("/", "r"),
                retire("/", "s"),
                put_live("/", &s, LONG, LONG),
                put_live("/", &k1, LONG, LONG),
                keep("/", &k2, LONG),
            ],
        )
        .await;
        assert_eq!(
            self.take(&b, "/", "r", None).await,
            TakeOutcome::NotFound,
            "apply must apply its ops in order (PutLive then Retire)"
        );
        assert_eq!(
            self.take(&b, "/", "s", None).await,
            TakeOutcome::HolderAlive("holder".into()),
            "apply must apply its ops in order (Retire then PutLive)"
        );
        assert_eq!(
            self.take(&b, "/", "k", None).await,
            TakeOutcome::Taken(k2),
            "apply must apply its ops in order (PutLive then Retire with keep)"
        );
    }

    async fn ephemeral_messages(&self) {
        use tokio::sync::mpsc;
        let a = self.node("eph").await;
        let b = self.node("eph").await;
        let other = self.node("eph-other").await;
        let (ta, mut ra) = mpsc::channel(64);
        let (tb, mut rb) = mpsc::channel(64);
        let (tc, mut rc) = mpsc::channel(64);
        let (to, mut ro) = mpsc::channel(64);
        ok(a.listen("a", "/", ta).await, "listen");
        ok(b.listen("b", "/", tb).await, "listen");
        ok(b.listen("b", "/chat", tc).await, "listen");
        ok(other.listen("o", "/", to).await, "listen");
        // Subscriptions may take effect a moment after `listen` returns.
        let deadline = Instant::now() + self.units(10);
        loop {
            let n = ok(a.listeners("/").await, "listeners");
            if n == 2 {
                break;
            }
            assert!(
                n < 2 && Instant::now() < deadline,
                "listeners(\"/\") must count the 2 nodes of the cluster that listen to it, got {n}"
            );
            sleep(self.unit / 4).await;
        }
        assert_eq!(
            ok(a.listeners("/chat").await, "listeners"),
            1,
            "listeners counts per namespace"
        );
        assert_eq!(
            ok(a.listeners("/none").await, "listeners"),
            0,
            "no listener: zero"
        );
        let message = |uid: &str, nsp: &str, body: EphemeralBody| Ephemeral {
            uid: uid.into(),
            nsp: nsp.into(),
            body,
        };
        let to_all = message(
            "a",
            "/",
            EphemeralBody::ServerSideEmit {
                request_id: Some("r1".into()),
                data: vec![json!("hello"), json!({"_placeholder": true, "num": 0})],
                attachments: vec![Bytes::from_static(&[0, 1, 2, 255])],
            },
        );
        ok(a.send_ephemeral(None, &to_all).await, "send_ephemeral");
        let wait = self.units(10);
        let got = |r: Option<Ephemeral>, who: &str| match r {
            Some(m) => m,
            None => panic!("{who}: no message"),
        };
        assert_eq!(
            got(timeout(wait, rb.recv()).await.ok().flatten(), "b"),
            to_all,
            "a message to every node reaches another listener of its namespace, binary included"
        );
        assert_eq!(
            got(timeout(wait, ra.recv()).await.ok().flatten(), "a"),
            to_all,
            "a message to every node reaches its sender too (the runtime drops its own)"
        );
        let answer = message(
            "b",
            "/",
            EphemeralBody::ClientCount {
                request_id: "r1".into(),
                count: 3,
            },
        );
        ok(b.send_ephemeral(Some("a"), &answer).await, "send_ephemeral");
        assert_eq!(
            got(timeout(wait, ra.recv()).await.ok().flatten(), "a"),
            answer,
            "a message to a node reaches it"
        );
        let chat = message(
            "a",
            "/chat",
            EphemeralBody::FetchSockets {
                request_id: "r2".into(),
                rooms: rooms(&["room"]),
                except: vec![],
            },
        );
        ok(a.send_ephemeral(None, &chat).await, "send_ephemeral");
        assert_eq!(
            got(timeout(wait, rc.recv()).await.ok().flatten(), "b /chat"),
            chat,
            "a listener of /chat hears /chat"
        );
        // Nothing else arrived anywhere: b heard nothing of the answer to a, the other
        // cluster and the other namespace heard nothing.
        sleep(self.units(2)).await;
        assert!(
            rb.try_recv().is_err(),
            "a message to a node reaches no other"
        );
        assert!(ra.try_recv().is_err(), "a does not listen to /chat");
        assert!(rc.try_recv().is_err(), "each message once");
        assert!(ro.try_recv().is_err(), "another cluster hears nothing");
    }
}

// ---- Outages ----

/// Checks that a backend fails fast while its server is down or stalled, and works again
/// once the server is back.
///
/// The suite relays `server` (the backend's real address) through a TCP proxy of its own
/// and calls `make(proxy)` to connect through it. Then:
///
/// 1. the proxy closes its port and every connection: a blocking read in flight, every
///    method, and connecting anew must fail within `limit`;
/// 2. it listens again: the same backend must work again within `limit`, its log intact;
/// 3. it stalls (accepts connections and holds them, answering nothing, like a server
///    that hangs): the same as 1.;
/// 4. it forwards again: the same as 2.
///
/// `limit` is what the backend's own timeouts allow (connect, command, blocking read).
/// Each step waits at most `limit` (calls run concurrently); against Redis with a 1 s
/// command timeout and a limit of 10 s, the whole takes about 11 s.
pub async fn run_outage<F, Fut, B>(server: SocketAddr, limit: Duration, make: F)
where
    F: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = Result<B, BackendError>>,
    B: ClusterBackend,
{
    let started = Instant::now();
    let mut proxy = Proxy::start(server).await;
    let b = Arc::new(ok(make(proxy.addr).await, "connecting through the proxy"));
    let mut last = ok(
        b.append("outage", &[(1, broadcast("/", "before"))]).await,
        "append through the proxy",
    )[0];
    assert_eq!(ok(b.last_id().await, "last_id"), last);

    for (phase, stall) in [("server down", false), ("server stalled", true)] {
        eprintln!("cluster conformance: outage, {phase} ...");
        // A blocking read in flight when the server goes away.
        let reader = b.clone();
        let read = tokio::spawn(async move {
            reader
                .read_after(last, Duration::from_secs(3600))
                .await
                .map(|r| format!("{r:?}"))
        });
        sleep(Duration::from_millis(300)).await;
        if stall {
            proxy.stall();
        } else {
            proxy.down().await;
        }
        let t = Instant::now();
        let (in_flight, ()) = tokio::join!(
            async {
                let r = timeout(limit, read).await;
                (r.map(|j| j.expect("read task")), t.elapsed())
            },
            every_call_fails(&*b, limit, phase),
        );
        expect_failure("a blocking read_after in flight", in_flight, limit, phase);
        // Again, now that the failures have (typically) dropped the connections: every
        // call tries to connect anew, all at once.
        every_call_fails(&*b, limit, &format!("{phase}, again")).await;
        let t = Instant::now();
        match timeout(limit, make(proxy.addr)).await {
            Err(_) => panic!("connecting ({phase}) did not fail within {limit:?}: it hangs"),
            Ok(Ok(fresh)) => {
                let r = timeout(limit, fresh.last_id()).await;
                expect_failure(
                    "last_id of a backend connected while the server is unreachable",
                    (r.map(|r| r.map(|id| id.to_string())), t.elapsed()),
                    limit,
                    phase,
                );
            }
            Ok(Err(_)) => {}
        }

        // Back: the same backend works again.
        eprintln!("cluster conformance: outage, {phase}: back ...");
        proxy.down().await;
        proxy.up().await;
        let deadline = Instant::now() + limit;
        let id = loop {
            match timeout(limit, b.last_id()).await {
                Ok(Ok(id)) => break id,
                _ if Instant::now() < deadline => sleep(Duration::from_millis(100)).await,
                Ok(Err(e)) => panic!("the backend did not recover within {limit:?}: {e}"),
                Err(_) => panic!("the backend hangs after the server came back"),
            }
        };
        assert_eq!(
            id, last,
            "after the server came back, last_id must be the entry appended before"
        );
        let next = ok(
            b.append("outage", &[(2, broadcast("/", "after"))]).await,
            "append after the server came back",
        )[0];
        let got = ok(
            b.read_after(last, Duration::from_secs(1)).await,
            "read_after after the server came back",
        );
        assert_eq!(
            ids(&got),
            [next],
            "read_after after the server came back must return the new entry"
        );
        last = next;
    }
    drop(proxy);
    eprintln!(
        "cluster conformance: outage checks passed in {:.1?}",
        started.elapsed()
    );
}

type Bounded = (
    Result<Result<String, BackendError>, tokio::time::error::Elapsed>,
    Duration,
);

fn expect_failure(what: &str, (r, took): Bounded, limit: Duration, phase: &str) {
    match r {
        Err(_) => {
            panic!("{what} ({phase}) did not return within {limit:?}: it must fail, not hang")
        }
        Ok(Ok(v)) => panic!("{what} ({phase}) succeeded: {v:.200}"),
        Ok(Err(_)) => assert!(
            took <= limit,
            "{what} ({phase}) took {took:?}, over {limit:?}"
        ),
    }
}

async fn bounded<T: Debug>(
    limit: Duration,
    f: impl Future<Output = Result<T, BackendError>>,
) -> Bounded {
    let t = Instant::now();
    let r = timeout(limit, f).await;
    (r.map(|r| r.map(|v| format!("{v:?}"))), t.elapsed())
}

/// Every method, at once: each must fail within `limit`.
async fn every_call_fails<B: ClusterBackend>(b: &B, limit: Duration, phase: &str) {
    let batch = [(1, broadcast("/", "lost"))];
    let ops = [SessionOp::MarkAlive {
        pid: "p".into(),
        ttl: LONG,
    }];
    let short = Duration::from_millis(100);
    let mut slowest = Duration::ZERO;
    let (append, read, range, recent, last, apply, heartbeat, take, marked) = tokio::join!(
        bounded(limit, b.append("outage", &batch)),
        bounded(limit, b.read_after(ZERO, short)),
        bounded(limit, b.range(ZERO, ZERO, 10)),
        bounded(limit, b.recent(ZERO, 10)),
        bounded(limit, b.last_id()),
        bounded(limit, b.apply("outage", &ops)),
        bounded(limit, b.heartbeat("outage", LONG)),
        bounded(limit, b.take_session("/", "p", None)),
        bounded(limit, b.is_marked_alive("p")),
    );
    for (what, r) in [
        ("append", append),
        ("read_after", read),
        ("range", range),
        ("recent", recent),
        ("last_id", last),
        ("apply", apply),
        ("heartbeat", heartbeat),
        ("take_session", take),
        ("is_marked_alive", marked),
    ] {
        slowest = slowest.max(r.1);
        expect_failure(what, r, limit, phase);
    }
    eprintln!("cluster conformance: outage, {phase}: every call failed within {slowest:.1?}");
}

/// A TCP relay to the backend that can close its port, or stall.
struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    stalled: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (stalled, _) = watch::channel(false);
        let task = tokio::spawn(serve(listener, upstream, stalled.subscribe()));
        Proxy {
            addr,
            upstream,
            stalled,
            task: Some(task),
        }
    }

    /// Closes the port and every connection.
    async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port, forwarding.
    async fn up(&mut self) {
        self.stalled.send_replace(false);
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    attempts += 1;
                    assert!(
                        attempts < 50,
                        "rebinding the proxy's port {}: {e}",
                        self.addr
                    );
                    sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let rx = self.stalled.subscribe();
        self.task = Some(tokio::spawn(serve(listener, self.upstream, rx)));
    }

    /// Stops forwarding, on every connection, without closing any.
    fn stall(&self) {
        self.stalled.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, stalled: watch::Receiver<bool>) {
    // Dropping the set (when this task is aborted) aborts every relay.
    let mut relays = JoinSet::new();
    loop {
        while relays.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((client, _)) => {
                relays.spawn(relay(client, upstream, stalled.clone()));
            }
            Err(_) => sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut stalled: watch::Receiver<bool>) {
    // A stalled server accepts connections and answers nothing.
    if stalled.wait_for(|s| !*s).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, stalled.clone()),
        pump(server_read, client_write, stalled),
    );
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalled: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Stalled: hold the bytes (the proxy goes down before it forwards again).
        if stalled.wait_for(|s| !*s).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
