//! The store conformance suite: every [`RecoveryStore`] must pass [`run`]. Unstable:
//! compiled with the feature `conformance` only, for tests.
//!
//! `MemoryStore` runs it in its unit tests:
//! `conformance::run(MemoryStore::new)`.

use std::time::Duration;

use serde_json::json;
use tether_engine::TextMessage;

use super::{
    RecoveryConfig, RecoveryFailure, RecoveryStore, Room, SessionRecord, StoredPacket, Target,
};

fn append(store: &dyn RecoveryStore, target: Target, body: &str) -> String {
    let mut offset = String::new();
    store.append(target, &mut |o| {
        offset = o.to_owned();
        StoredPacket {
            message: TextMessage::new(&format!("{body}|{o}")),
            attachments: None,
        }
    });
    offset
}

fn bodies(packets: &[StoredPacket]) -> Vec<String> {
    packets
        .iter()
        .map(|p| {
            let s = p.message.payload();
            s.split('|').next().unwrap_or_default().to_owned()
        })
        .collect()
}

fn session(sid: &str, pid: &str, rooms: &[&str], start: u64) -> SessionRecord {
    SessionRecord {
        sid: sid.into(),
        pid: pid.into(),
        rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
        data: json!({"k": 1}),
        start,
    }
}

fn to(rooms: &[&str], except: &[&str]) -> Target {
    Target {
        rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
        except: except.iter().map(|r| Room::from(*r)).collect(),
    }
}

/// Runs every check against stores made by `make`. Panics on the first failure.
pub fn run<S: RecoveryStore>(make: impl Fn(&RecoveryConfig) -> S) {
    let config = RecoveryConfig::default();
    let ttl = Duration::from_secs(60);

    // Offsets are unique, and a session gets exactly the packets after its offset that
    // match it, in order, with their original offsets.
    let store = make(&config);
    let start = store.position();
    let o1 = append(&store, to(&[], &[]), "all-1");
    let o2 = append(&store, to(&["r"], &[]), "r-2");
    assert_ne!(o1, o2, "offsets must be unique");
    append(&store, to(&["other"], &[]), "other-3");
    append(&store, to(&["s1"], &[]), "direct-4");
    append(&store, to(&["s2"], &[]), "direct-other-5");
    append(&store, to(&[], &["r"]), "except-r-6");
    append(&store, to(&["r", "s1"], &[]), "both-7");
    assert!(store.position() >= start + 7);
    store.keep_session(session("s1", "p1", &["r"], start), ttl);
    let restored = store.take_session("p1", Some(&o1)).expect("restore");
    assert_eq!(restored.session, session("s1", "p1", &["r"], start));
    assert_eq!(bodies(&restored.missed), ["r-2", "direct-4", "both-7"]);
    assert!(restored.missed[0].message.payload().ends_with(&o2));

    // One-shot.
    assert_eq!(
        store.take_session("p1", Some(&o1)).err(),
        Some(RecoveryFailure::UnknownSession)
    );

    // A failed attempt consumes nothing: unknown or forged offsets.
    store.keep_session(session("s3", "p3", &[], start), ttl);
    for bad in [
        "",
        "zzz",
        "1.1",
        "ffffffff.ffffffffffffffff",
        &"9".repeat(10_000),
    ] {
        assert_eq!(
            store.take_session("p3", Some(bad)).err(),
            Some(RecoveryFailure::UnknownOffset),
            "{bad:.20}"
        );
    }
    assert_eq!(
        store.take_session("unknown", Some(&o1)).err(),
        Some(RecoveryFailure::UnknownSession)
    );
    let r = store
        .take_session("p3", Some(&o2))
        .expect("still restorable");
    assert_eq!(bodies(&r.missed), ["except-r-6"]);

    // No offset: everything since the session started.
    store.keep_session(session("s1", "p4", &[], start), ttl);
    let r = store
        .take_session("p4", None)
        .expect("restore without offset");
    assert_eq!(
        bodies(&r.missed),
        ["all-1", "direct-4", "except-r-6", "both-7"]
    );

    // Reading after a position.
    let pos = store.position();
    append(&store, to(&[], &[]), "later");
    let later = store.read_after(pos, "x", &[]).expect("read");
    assert_eq!(bodies(&later), ["later"]);

    // Sessions expire.
    store.keep_session(session("s5", "p5", &[], start), Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(20));
    store.purge();
    assert_eq!(
        store.take_session("p5", None).err(),
        Some(RecoveryFailure::UnknownSession)
    );

    // The byte budget: a session that needs an evicted packet fails cleanly.
    let small = make(&RecoveryConfig {
        max_log_bytes: 2_000,
        ..RecoveryConfig::default()
    });
    let first = append(&small, to(&[], &[]), "first");
    small.keep_session(session("s6", "p6", &[], small.position()), ttl);
    for i in 0..100 {
        append(&small, to(&[], &[]), &format!("filler-{i}"));
    }
    assert!(
        small.usage().1 <= 2_000,
        "log over budget: {}",
        small.usage().1
    );
    assert_eq!(
        small.take_session("p6", Some(&first)).err(),
        Some(RecoveryFailure::Evicted)
    );
}
