use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    PacketLog, RecoveryConfig, RecoveryFailure, RecoveryStore, Restored, Room, SessionRecord,
    StoredPacket, Target,
};
use crate::sync::MutexExt as _;

/// The in-memory [`RecoveryStore`]: a [`PacketLog`] and a map of kept sessions, each
/// dropped when it expires.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: PacketLog,
    sessions: HashMap<String, (SessionRecord, Instant)>,
}

impl MemoryStore {
    /// A store with the log limits of `config`.
    pub fn new(config: &RecoveryConfig) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                log: PacketLog::new(config.max_disconnection_duration, config.max_log_bytes),
                sessions: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.locked()
    }
}

impl RecoveryStore for MemoryStore {
    fn append(&self, target: Target, build: &mut dyn FnMut(&str) -> StoredPacket) -> StoredPacket {
        let mut inner = self.lock();
        let (_, offset) = inner.log.next_offset();
        let packet = build(&offset);
        inner.log.push(target, packet.clone());
        packet
    }

    fn keep_session(&self, session: SessionRecord, ttl: Duration) {
        let mut inner = self.lock();
        inner
            .sessions
            .insert(session.pid.clone(), (session, Instant::now() + ttl));
    }

    fn take_session(&self, pid: &str, offset: Option<&str>) -> Result<Restored, RecoveryFailure> {
        let mut inner = self.lock();
        let now = Instant::now();
        let (session, expires) = inner
            .sessions
            .get(pid)
            .ok_or(RecoveryFailure::UnknownSession)?;
        if *expires <= now {
            inner.sessions.remove(pid);
            return Err(RecoveryFailure::UnknownSession);
        }
        let after = match offset {
            Some(o) => inner
                .log
                .parse_offset(o)
                .ok_or(RecoveryFailure::UnknownOffset)?,
            None => session.start,
        };
        let missed = inner.log.read_after(after, &session.sid, &session.rooms);
        match missed {
            Ok(missed) => {
                let (session, _) = inner
                    .sessions
                    .remove(pid)
                    .ok_or(RecoveryFailure::UnknownSession)?;
                Ok(Restored {
                    session,
                    position_after: after,
                    missed,
                })
            }
            Err(e) => {
                // It can never succeed now: the packets it needs are gone.
                inner.sessions.remove(pid);
                Err(e)
            }
        }
    }

    fn read_after(
        &self,
        after: u64,
        sid: &str,
        rooms: &[Room],
    ) -> Result<Vec<StoredPacket>, RecoveryFailure> {
        self.lock().log.read_after(after, sid, rooms)
    }

    fn position(&self) -> u64 {
        self.lock().log.position()
    }

    fn purge(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.sessions.retain(|_, (_, exp)| *exp > now);
        inner.log.evict(now);
    }

    fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.sessions.len(), inner.log.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_store_conformance_suite() {
        super::super::conformance::run(MemoryStore::new);
    }
}
