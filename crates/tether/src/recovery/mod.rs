//! Connection state recovery: everything that lets a client that dropped for a moment
//! come back with the same socket id, rooms and data, and get the events it missed.
//!
//! - [`RecoveryConfig`]: the options (`max_disconnection_duration`, `skip_middlewares`,
//!   and the packet log's byte budget).
//! - [`PacketLog`] and [`MemoryStore`]: one node's log and kept sessions, bounded by age
//!   and by bytes, kept by the in-memory adapter.
//! - [`RecoveryMetrics`]: counters a user can scrape.
//!
//! The recovery path reads top to bottom in `Namespace::connect` (`namespace.rs`): parse
//! the attempt, take over a half-open socket, `adapter.restore`, middlewares,
//! `adapter.replay_and_register`. What differs between one node and a cluster (where the
//! offsets, the log and the sessions live; how "replay, then live" is ordered) is the
//! adapter's: `adapter/memory.rs` beside `adapter/cluster.rs`.

mod log;
mod memory;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::RngCore as _;
use serde_json::Value;
use tether_engine::TextMessage;

pub use log::PacketLog;
pub use memory::MemoryStore;
pub use metrics::{RecoveryMetrics, RecoveryMetricsSnapshot};

/// A room name; a socket's session (what a recoverable disconnect keeps); a log position.
pub use tether_backend::{Position, Room, Session};

/// Connection state recovery options. Off unless enabled, like the reference.
///
/// ```
/// use std::time::Duration;
/// use tether::RecoveryConfig;
/// let csr = RecoveryConfig {
///     max_disconnection_duration: Duration::from_secs(30),
///     ..RecoveryConfig::default()
/// };
/// assert!(csr.skip_middlewares);
/// ```
#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// How long a session and the packets it may need are kept after a disconnection
    /// (2 minutes).
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the connect middlewares (true).
    pub skip_middlewares: bool,
    /// The packet log's budget in bytes (64 MiB). When it evicts a packet that a session
    /// still needs, that session's recovery fails cleanly: `recovered` false, no gap.
    pub max_log_bytes: usize,
    /// The largest session kept on a recoverable disconnect, in bytes: its ids, rooms and
    /// `data` as JSON (64 KiB). A larger one is not kept (logged, and counted as
    /// `sessions_not_kept`): the client's attempt then gets a new session. In a cluster,
    /// a connected socket's live record (what restores it after its node crashed) is
    /// removed while its session is larger, and written again once it fits.
    pub max_session_bytes: usize,
    /// The bytes of kept sessions that one node holds in memory (64 MiB); beyond it the
    /// oldest are dropped. In a cluster the backend holds them and this does not apply.
    pub max_kept_bytes: usize,
}

impl RecoveryConfig {
    /// Whether `session` is within [`max_session_bytes`](Self::max_session_bytes): only
    /// such a session is kept on a disconnect, or held by a cluster's live record.
    pub(crate) fn fits(&self, session: &Session) -> bool {
        session_bytes(session) <= self.max_session_bytes
    }
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: true,
            max_log_bytes: 64 * 1024 * 1024,
            max_session_bytes: 64 * 1024,
            max_kept_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Whether a socket with id `sid` in `rooms` is among `to` (empty: everyone) minus
/// `except`.
pub(crate) fn targets(to: &[Room], except: &[Room], sid: &str, rooms: &[Room]) -> bool {
    let member = |r: &Room| &**r == sid || rooms.contains(r);
    (to.is_empty() || to.iter().any(member)) && !except.iter().any(member)
}

/// Whom a logged packet was sent to: the rooms (empty: the whole namespace; a socket id
/// counts as a room) minus the `except` rooms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The rooms; empty means every socket of the namespace.
    pub rooms: Vec<Room>,
    /// Rooms whose members are left out.
    pub except: Vec<Room>,
}

impl Target {
    /// Whether a socket with this id and these rooms was a recipient.
    pub fn matches(&self, sid: &str, rooms: &[Room]) -> bool {
        targets(&self.rooms, &self.except, sid, rooms)
    }

    /// The approximate heap size, for the log's budget.
    pub(crate) fn size(&self) -> usize {
        self.rooms
            .iter()
            .chain(&self.except)
            .map(|r| r.len() + 16)
            .sum()
    }
}

/// One packet in the log: encoded once, with its offset inside, shared by every
/// recipient and every replay.
#[derive(Debug, Clone)]
pub struct StoredPacket {
    /// The encoded Engine.IO message.
    pub message: TextMessage,
    /// Binary attachments that follow the message.
    pub attachments: Option<Arc<[Bytes]>>,
}

impl StoredPacket {
    pub(crate) fn size(&self) -> usize {
        self.message.payload().len()
            + self
                .attachments
                .as_ref()
                .map_or(0, |a| a.iter().map(|b| b.len()).sum())
    }
}

/// Why a recovery attempt failed. The client then gets a normal new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryFailure {
    /// No session is kept under this pid (unknown, expired, consumed, another namespace).
    #[error("unknown session")]
    UnknownSession,
    /// The offset is not one this namespace issued.
    #[error("unknown offset")]
    UnknownOffset,
    /// A packet that the session needs was evicted from the log.
    #[error("missed packets were evicted")]
    Evicted,
    /// The pid belongs to a socket that is still connected and answered a probe.
    #[error("session still connected")]
    StillConnected,
}

/// The size of a session as its budget counts it: ids, rooms and `data` as JSON.
pub fn session_bytes(session: &Session) -> usize {
    let rooms: usize = session.rooms.iter().map(|r| r.len() + 16).sum();
    session.sid.len() + session.pid.len() + rooms + json_len(&session.data) + 64
}

/// The length of `value` written as JSON, counted without writing it anywhere.
pub(crate) fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, value);
    n.0
}

/// A private session id: 144 bits from the CSPRNG, 24 URL-safe characters.
pub(crate) fn new_pid() -> String {
    let mut raw = [0u8; 18];
    rand::rng().fill_bytes(&mut raw);
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Reads `{pid, offset}` from a CONNECT's auth. Anything malformed is no attempt at all.
pub(crate) fn parse_attempt(auth: Option<&Value>) -> Option<(String, Option<String>)> {
    let obj = auth?.as_object()?;
    let pid = obj.get("pid")?.as_str()?;
    if pid.is_empty() || pid.len() > 64 {
        return None;
    }
    let offset = match obj.get("offset") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
        Some(_) => return None,
    };
    Some((pid.to_owned(), offset))
}

/// The first characters of a pid, for logs (never the whole secret).
pub(crate) fn redact(pid: &str) -> &str {
    pid.get(..4).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attempts() {
        assert_eq!(
            parse_attempt(Some(&json!({"pid":"abc","offset":"o"}))),
            Some(("abc".into(), Some("o".into())))
        );
        assert_eq!(
            parse_attempt(Some(&json!({"pid":"abc"}))),
            Some(("abc".into(), None))
        );
        for bad in [
            json!({"pid": 1, "offset": "o"}),
            json!({"pid": null}),
            json!({"pid": {}}),
            json!({"pid": []}),
            json!({"pid": ""}),
            json!({"pid": "x".repeat(10_000)}),
            json!({"pid": "abc", "offset": 5}),
            json!({"pid": "abc", "offset": ""}),
            json!({"pid": "abc", "offset": "x".repeat(10_000)}),
            json!({"pid": "abc", "offset": null}),
        ] {
            assert_eq!(parse_attempt(Some(&bad)), None, "{bad}");
        }
        assert_eq!(parse_attempt(None), None);
    }

    #[test]
    fn pids_are_long_and_distinct() {
        let a = new_pid();
        assert_eq!(a.len(), 24);
        assert_ne!(a, new_pid());
    }

    #[test]
    fn targets() {
        let r: Room = "r".into();
        let t = Target::default();
        assert!(t.matches("s", &[]));
        let t = Target {
            rooms: vec![r.clone()],
            except: vec![],
        };
        assert!(t.matches("s", std::slice::from_ref(&r)));
        assert!(!t.matches("s", &[]));
        let t = Target {
            rooms: vec!["s".into()],
            except: vec![],
        };
        assert!(t.matches("s", &[]));
        let t = Target {
            rooms: vec![],
            except: vec![r.clone()],
        };
        assert!(!t.matches("s", &[r]));
    }
}
