use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tether_backend::{Position, Session};

use super::{PacketLog, RecoveryConfig, RecoveryFailure, Room, StoredPacket, Target};
use crate::sync::MutexExt as _;

/// One node's recovery state: a [`PacketLog`] and the kept sessions, each dropped when it
/// expires. The in-memory adapter keeps it; its calls come under the adapter's order lock,
/// so appends, takes and reads happen in one order.
///
/// ```
/// use std::time::Duration;
/// use tether::recovery::{MemoryStore, StoredPacket, Target};
/// use tether::RecoveryConfig;
/// let store = MemoryStore::new(&RecoveryConfig::default());
/// let start = store.position();
/// store.append(Target::default(), &mut |offset| StoredPacket {
///     message: tether_engine::TextMessage::new(&format!("2[\"e\",\"{offset}\"]")),
///     attachments: None,
/// });
/// assert_eq!(store.read_after(start, "sid", &[]).map(|p| p.len()), Ok(1));
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: PacketLog,
    sessions: HashMap<String, Kept>,
    /// Pids in the order they were kept (with their expiry, to tell a later keep of the
    /// same pid apart), for dropping the oldest beyond the byte budget.
    kept_order: VecDeque<(String, Instant)>,
    kept_bytes: usize,
    max_kept_bytes: usize,
}

#[derive(Debug)]
struct Kept {
    session: Session,
    expires: Instant,
    bytes: usize,
}

impl Inner {
    fn remove_session(&mut self, pid: &str) -> Option<Session> {
        let kept = self.sessions.remove(pid)?;
        self.kept_bytes -= kept.bytes;
        Some(kept.session)
    }
}

impl MemoryStore {
    /// A store with the log limits of `config`.
    pub fn new(config: &RecoveryConfig) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                log: PacketLog::new(config.max_disconnection_duration, config.max_log_bytes),
                sessions: HashMap::new(),
                kept_order: VecDeque::new(),
                kept_bytes: 0,
                max_kept_bytes: config.max_kept_bytes,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.locked()
    }

    /// Assigns the next offset, builds the packet with it, logs it for `target`, and
    /// returns it for delivery.
    pub fn append(
        &self,
        target: Target,
        build: &mut dyn FnMut(&str) -> StoredPacket,
    ) -> StoredPacket {
        let mut inner = self.lock();
        let (_, offset) = inner.log.next_offset();
        let packet = build(&offset);
        inner.log.push(target, packet.clone());
        packet
    }

    /// Keeps a session for `ttl`; beyond the byte budget of kept sessions, the oldest
    /// are dropped.
    pub fn keep_session(&self, session: Session, ttl: Duration) {
        let mut inner = self.lock();
        let expires = Instant::now() + ttl;
        let bytes = super::session_bytes(&session);
        let pid = session.pid.clone();
        inner.remove_session(&pid);
        inner.kept_bytes += bytes;
        inner.kept_order.push_back((pid.clone(), expires));
        inner.sessions.insert(
            pid,
            Kept {
                session,
                expires,
                bytes,
            },
        );
        while inner.kept_bytes > inner.max_kept_bytes {
            let Some((oldest, at)) = inner.kept_order.pop_front() else {
                break;
            };
            if inner.sessions.get(&oldest).is_some_and(|k| k.expires == at) {
                tracing::debug!(
                    pid = super::redact(&oldest),
                    "kept session dropped: kept sessions over their byte budget"
                );
                inner.remove_session(&oldest);
            }
        }
        // Entries whose session is gone (taken, expired) leave the queue as they reach
        // its front; bound it anyway.
        if inner.kept_order.len() > 2 * inner.sessions.len() + 1024 {
            let Inner {
                kept_order,
                sessions,
                ..
            } = &mut *inner;
            kept_order.retain(|(p, at)| sessions.get(p).is_some_and(|k| k.expires == *at));
        }
    }

    /// Takes the session named by `pid`, its `start` set to the position its replay
    /// starts after: `offset`'s, or the session's own start without one. One-shot: a
    /// success consumes the session; an unknown offset leaves it in place; a session whose
    /// replay would have a gap (evicted packets) is dropped, as it can never succeed.
    pub fn take_session(
        &self,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<Session, RecoveryFailure> {
        let mut inner = self.lock();
        let now = Instant::now();
        let kept = inner
            .sessions
            .get(pid)
            .ok_or(RecoveryFailure::UnknownSession)?;
        if kept.expires <= now {
            inner.remove_session(pid);
            return Err(RecoveryFailure::UnknownSession);
        }
        let session = &kept.session;
        let after = match offset {
            Some(o) => inner
                .log
                .parse_offset(o)
                .ok_or(RecoveryFailure::UnknownOffset)?,
            None => session.start.unwrap_or_default(),
        };
        let whole = inner.log.holds_after(after);
        let mut session = inner
            .remove_session(pid)
            .ok_or(RecoveryFailure::UnknownSession)?;
        if !whole {
            return Err(RecoveryFailure::Evicted);
        }
        session.start = Some(after);
        Ok(session)
    }

    /// The packets after `after` that a socket with this id and these rooms was sent;
    /// [`RecoveryFailure::Evicted`] if one of the packets after `after` is gone.
    pub fn read_after(
        &self,
        after: Position,
        sid: &str,
        rooms: &[Room],
    ) -> Result<Vec<StoredPacket>, RecoveryFailure> {
        self.lock().log.read_after(after, sid, rooms)
    }

    /// The position of the newest packet.
    pub fn position(&self) -> Position {
        self.lock().log.position()
    }

    /// Drops expired sessions and packets.
    pub fn purge(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        let expired: Vec<String> = inner
            .sessions
            .iter()
            .filter(|(_, k)| k.expires <= now)
            .map(|(pid, _)| pid.clone())
            .collect();
        for pid in expired {
            inner.remove_session(&pid);
        }
        inner.log.evict(now);
    }

    /// Whether a session is kept that has not expired.
    pub fn holds_sessions(&self) -> bool {
        let now = Instant::now();
        self.lock().sessions.values().any(|k| k.expires > now)
    }

    /// How many bytes the kept sessions count for their budget.
    pub fn kept_bytes(&self) -> usize {
        self.lock().kept_bytes
    }

    /// How many sessions are kept and how many bytes the log holds.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.sessions.len(), inner.log.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tether_engine::TextMessage;

    /// What a restored session missed: the replay a commit reads.
    fn missed(store: &MemoryStore, s: &Session) -> Vec<StoredPacket> {
        store
            .read_after(s.start.unwrap_or_default(), &s.sid, &s.rooms)
            .expect("not evicted")
    }

    fn append(store: &MemoryStore, target: Target, body: &str) -> String {
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

    fn session(sid: &str, pid: &str, rooms: &[&str], start: Position) -> Session {
        Session {
            sid: sid.into(),
            pid: pid.into(),
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            data: json!({"k": 1}),
            start: Some(start),
        }
    }

    fn to(rooms: &[&str], except: &[&str]) -> Target {
        Target {
            rooms: rooms.iter().map(|r| Room::from(*r)).collect(),
            except: except.iter().map(|r| Room::from(*r)).collect(),
        }
    }

    #[test]
    fn sessions_offsets_replays_expiry_and_budget() {
        let make = MemoryStore::new;
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
        assert_eq!(store.position().seq, start.seq + 7);
        store.keep_session(session("s1", "p1", &["r"], start), ttl);
        let restored = store.take_session("p1", Some(&o1)).expect("restore");
        let after = restored.start.expect("a replay start");
        assert_eq!(
            Session {
                start: Some(start),
                ..restored.clone()
            },
            session("s1", "p1", &["r"], start)
        );
        let replay = missed(&store, &restored);
        assert_eq!(bodies(&replay), ["r-2", "direct-4", "both-7"]);
        assert!(replay[0].message.payload().ends_with(&o2));
        assert_eq!(
            store
                .read_after(after, "s1", &restored.rooms)
                .map(|m| m.len()),
            Ok(3)
        );

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
        assert_eq!(bodies(&missed(&store, &r)), ["except-r-6"]);

        // No offset: everything since the session started.
        store.keep_session(session("s1", "p4", &[], start), ttl);
        let r = store
            .take_session("p4", None)
            .expect("restore without offset");
        assert_eq!(
            bodies(&missed(&store, &r)),
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

    #[test]
    fn kept_sessions_stay_within_their_byte_budget_oldest_dropped_first() {
        let store = MemoryStore::new(&RecoveryConfig {
            max_kept_bytes: 10_000,
            ..RecoveryConfig::default()
        });
        let ttl = Duration::from_secs(60);
        let start = store.position();
        let big = |pid: &str| Session {
            data: json!({ "pad": "x".repeat(3_000) }),
            ..session("s", pid, &[], start)
        };
        for pid in ["a", "b", "c", "d"] {
            store.keep_session(big(pid), ttl);
        }
        assert!(store.kept_bytes() <= 10_000, "{}", store.kept_bytes());
        assert_eq!(store.usage().0, 3);
        assert_eq!(
            store.take_session("a", None).err(),
            Some(RecoveryFailure::UnknownSession),
            "the oldest goes first"
        );
        // Keeping a pid again replaces it (counted once), and taking frees its bytes.
        store.keep_session(big("d"), ttl);
        assert_eq!(store.usage().0, 3);
        for pid in ["b", "c", "d"] {
            store.take_session(pid, None).expect("kept");
        }
        assert_eq!(store.kept_bytes(), 0);
    }
}
