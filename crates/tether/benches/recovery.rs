//! Connection state recovery micro-benchmarks: the packet log and the in-memory store.
//!
//! - `append`: one recoverable emit to a room (offset, encoded message, log entry).
//! - `take_session`: a reconnecting socket takes its session and reads the 100 packets it
//!   missed, from a log of 10 000: either the last 100 (`tail`) or 100 addressed to its room among
//!   10 000 after its offset (`filtered`).
//! - `read_after`: the same two reads on the [`PacketLog`] alone.
//!
//! ```sh
//! cargo bench -p tether --bench recovery -- --warm-up-time 1 --measurement-time 3
//! ```

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use serde_json::json;
use tether::recovery::{MemoryStore, PacketLog, Position, Session, StoredPacket, Target};
use tether::RecoveryConfig;
use tether_engine::TextMessage;

/// A 64-character event argument.
const ARG: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
/// Packets in the log for the reads.
const LOGGED: usize = 10_000;
/// Packets the reconnecting socket missed.
const MISSED: usize = 100;

/// The packet a recoverable emit stores: the event with its offset as the last argument.
fn packet(offset: &str) -> StoredPacket {
    let mut buf = TextMessage::buffer();
    buf.push_str(r#"2["tick",""#);
    buf.push_str(ARG);
    buf.push_str(r#"",""#);
    buf.push_str(offset);
    buf.push_str(r#""]"#);
    StoredPacket {
        message: TextMessage::from_buffer(buf),
        attachments: None,
    }
}

fn to_room(room: &str) -> Target {
    Target {
        rooms: vec![room.into()],
        except: vec![],
    }
}

fn config() -> RecoveryConfig {
    RecoveryConfig {
        max_disconnection_duration: Duration::from_secs(3600),
        ..RecoveryConfig::default()
    }
}

/// A store whose log holds [`LOGGED`] packets; the ones `is_mine(i)` selects go to room
/// `mine`, the others to other rooms. Returns the offset of each packet.
fn filled_store(is_mine: impl Fn(usize) -> bool) -> (MemoryStore, Vec<String>) {
    let store = MemoryStore::new(&config());
    let mut offsets = Vec::with_capacity(LOGGED);
    for i in 0..LOGGED {
        let room = if is_mine(i) {
            "mine".to_owned()
        } else {
            format!("room{}", i % 50)
        };
        store.append(to_room(&room), &mut |o| {
            offsets.push(o.to_owned());
            packet(o)
        });
    }
    (store, offsets)
}

fn session(pid: String, start: Position) -> Session {
    Session {
        sid: "AbCdEfGhIjKlMnOpQrSt".into(),
        pid,
        rooms: vec!["mine".into(), "lobby".into()],
        data: json!({"user": 42}),
        start: Some(start),
    }
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_room_target");
    g.throughput(Throughput::Elements(1));
    // Steady state: a 16 MiB budget, so every push past the first ~80 000 also evicts one.
    let store = MemoryStore::new(&RecoveryConfig {
        max_log_bytes: 16 << 20,
        ..config()
    });
    g.bench_function("memory_store", |b| {
        b.iter(|| store.append(to_room(black_box("room1")), &mut |o| packet(o)))
    });
    let mut log = PacketLog::new(Duration::from_secs(3600), 16 << 20);
    g.bench_function("packet_log", |b| {
        b.iter(|| {
            let (_, offset) = log.next_offset();
            log.push(to_room(black_box("room1")), packet(&offset));
        })
    });
    g.finish();
}

/// Keeps a fresh session in `store` and returns its pid.
fn keep(store: &MemoryStore, next: &Cell<u64>, start: Position) -> String {
    let pid = format!("pid{}", next.get());
    next.set(next.get() + 1);
    store.keep_session(session(pid.clone(), start), Duration::from_secs(3600));
    pid
}

fn take_session(c: &mut Criterion) {
    let mut g = c.benchmark_group("take_session_100_of_10000");
    g.throughput(Throughput::Elements(MISSED as u64));
    let next = Cell::new(0);

    // Disconnected after packet 9 900; everything after it was for the socket.
    let (store, offsets) = filled_store(|i| i >= LOGGED - MISSED);
    let offset = offsets[LOGGED - MISSED - 1].clone();
    let origin = Position::new(store.position().epoch, 0);
    g.bench_function("tail", |b| {
        b.iter_batched(
            || keep(&store, &next, origin),
            |pid| {
                let r = store.take_session(&pid, Some(&offset)).expect("recovers");
                let missed = store.read_after(r.start.unwrap_or_default(), &r.sid, &r.rooms);
                assert_eq!(missed.map(|m| m.len()), Ok(MISSED));
                r
            },
            BatchSize::SmallInput,
        )
    });

    // No offset yet (replay from the session's start): 100 of the 10 000 were for its room.
    let (store, _) = filled_store(|i| i % (LOGGED / MISSED) == 0);
    let origin = Position::new(store.position().epoch, 0);
    g.bench_function("filtered", |b| {
        b.iter_batched(
            || keep(&store, &next, origin),
            |pid| {
                let r = store.take_session(&pid, None).expect("recovers");
                let missed = store.read_after(r.start.unwrap_or_default(), &r.sid, &r.rooms);
                assert_eq!(missed.map(|m| m.len()), Ok(MISSED));
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A bare log holding [`LOGGED`] packets, routed like [`filled_store`].
fn filled_log(is_mine: impl Fn(usize) -> bool) -> PacketLog {
    let mut log = PacketLog::new(Duration::from_secs(3600), 64 << 20);
    for i in 0..LOGGED {
        let (_, offset) = log.next_offset();
        let room = if is_mine(i) {
            "mine".to_owned()
        } else {
            format!("room{}", i % 50)
        };
        log.push(to_room(&room), packet(&offset));
    }
    log
}

fn read_after(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_after_100_of_10000");
    g.throughput(Throughput::Elements(MISSED as u64));
    let rooms = session(String::new(), Position::ZERO).rooms;
    let sid = "AbCdEfGhIjKlMnOpQrSt";
    let tail = |i| i >= LOGGED - MISSED;
    let spread = |i| i % (LOGGED / MISSED) == 0;
    let after_tail = (LOGGED - MISSED) as u64;

    let log = filled_log(tail);
    let at = |seq| Position::new(log.position().epoch, seq);
    g.bench_function("packet_log_tail", |b| {
        b.iter(|| {
            let missed = log
                .read_after(black_box(at(after_tail)), sid, &rooms)
                .expect("not evicted");
            assert_eq!(missed.len(), MISSED);
            missed
        })
    });

    let log = filled_log(spread);
    let origin = Position::new(log.position().epoch, 0);
    g.bench_function("packet_log_filtered", |b| {
        b.iter(|| {
            let missed = log
                .read_after(black_box(origin), sid, &rooms)
                .expect("not evicted");
            assert_eq!(missed.len(), MISSED);
            missed
        })
    });

    let (store, _) = filled_store(tail);
    let after = Position::new(store.position().epoch, after_tail);
    g.bench_function("memory_store_tail", |b| {
        b.iter(|| {
            let missed = store
                .read_after(black_box(after), sid, &rooms)
                .expect("not evicted");
            assert_eq!(missed.len(), MISSED);
            missed
        })
    });
    g.finish();
}

/// `criterion_group!` makes a `pub fn`; kept in a private module so it needs no docs.
mod group {
    criterion::criterion_group!(
        benches,
        super::append,
        super::take_session,
        super::read_after
    );
}
criterion_main!(group::benches);
