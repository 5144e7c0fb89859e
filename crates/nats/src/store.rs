//! What the NATS backend keeps in its stream and its KV bucket, around the cluster
//! types' one wire form ([`tether_backend::wire`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether_backend::{wire, ClusterMessage, Session};

/// A name as a subject token or KV key token: base64url without padding, so that any
/// string (dots, spaces, `*`, `>`, non-ASCII) is safe; the empty string is `_`.
pub(crate) fn token(name: &str) -> String {
    if name.is_empty() {
        "_".into()
    } else {
        URL_SAFE_NO_PAD.encode(name.as_bytes())
    }
}

/// A log entry as stored in the stream. The message stays a JSON value until decoded,
/// so that an entry whose message this version does not know keeps its uid and seq.
#[derive(Serialize, Deserialize)]
struct Entry {
    uid: String,
    #[serde(default)]
    seq: Option<u64>,
    m: Value,
}

/// Encodes a log entry.
pub(crate) fn encode_entry(uid: &str, seq: u64, m: &ClusterMessage) -> Vec<u8> {
    wire::to_vec(&Entry {
        uid: uid.to_owned(),
        seq: Some(seq),
        m: serde_json::to_value(m).unwrap_or(Value::Null),
    })
}

/// Decodes a log entry: its uid, seq and message. A message this version does not know
/// is [`ClusterMessage::Other`]; `None` when it is not an entry at all.
pub(crate) fn decode_entry(raw: &[u8]) -> Option<(String, Option<u64>, ClusterMessage)> {
    let e: Entry = wire::from_slice(raw)?;
    Some((e.uid, e.seq, wire::message_from_value(e.m)))
}

/// A kept session (`s.<pid>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Kept {
    pub nsp: String,
    pub session: Session,
    /// Expires at (ms since the Unix epoch, the writer's clock).
    pub exp: u64,
}

/// A live record (`l.<pid>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Live {
    pub node: String,
    pub nsp: String,
    pub session: Session,
    /// The recovery window, ms.
    pub window: u64,
    /// Expires at (ms since the Unix epoch).
    pub exp: u64,
}

/// A node's heartbeat (`n.<uid>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Alive until (ms since the Unix epoch).
    pub exp: u64,
    /// When it was written (ms since the Unix epoch).
    pub seen: u64,
    /// The heartbeat's life, ms.
    pub life: u64,
}

/// Anything that only expires: alive marks (`a.<pid>`), listener registrations
/// (`e.<nsp>.<uid>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Expiring {
    pub exp: u64,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;
    use tether_backend::{Broadcast, Position, SocketsAction};

    use super::*;

    fn rooms(r: &[&str]) -> Vec<Arc<str>> {
        r.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn tokens_are_safe_subject_and_key_tokens() {
        for name in ["/", "", "a.b c*>", "ü/chat", "node-1"] {
            let t = token(name);
            assert!(!t.is_empty());
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{t}"
            );
        }
        assert_ne!(token("/a"), token("/b"));
        assert_ne!(token(""), token("_"));
    }

    #[test]
    fn entries_round_trip() {
        let messages = [
            ClusterMessage::Broadcast(Broadcast {
                nsp: "/chat".into(),
                data: vec![
                    json!("ev"),
                    json!({"n": [u64::MAX, i64::MIN, 2.5, null, "ünï"]}),
                    json!({"_placeholder": true, "num": 0}),
                ],
                attachments: vec![Bytes::from_static(&[0, 255, 1]), Bytes::new()],
                rooms: rooms(&["r", "a room"]),
                except: rooms(&["e"]),
                volatile: true,
            }),
            ClusterMessage::Probe {
                nsp: "/".into(),
                pid: "p".into(),
            },
            ClusterMessage::Sockets {
                nsp: "/".into(),
                rooms: vec![],
                except: vec![],
                action: SocketsAction::Disconnect { close: true },
            },
            ClusterMessage::Other,
        ];
        for (i, m) in messages.iter().enumerate() {
            let raw = encode_entry("node", i as u64 + 1, m);
            assert_eq!(
                decode_entry(&raw),
                Some(("node".to_owned(), Some(i as u64 + 1), m.clone()))
            );
        }
        assert_eq!(decode_entry(b"not json"), None);
        assert_eq!(
            decode_entry(br#"{"uid":"x","m":{"future":1}}"#),
            Some(("x".to_owned(), None, ClusterMessage::Other))
        );
    }

    #[test]
    fn kv_values_round_trip() {
        let session = Session {
            sid: "sid".into(),
            pid: "pid".into(),
            rooms: rooms(&["r1", "ü"]),
            data: json!({"k": [1, 2.5]}),
            start: Some(Position::new(0, 12)),
        };
        let live = Live {
            node: "n".into(),
            nsp: "/".into(),
            session: session.clone(),
            window: 120_000,
            exp: 1,
        };
        assert_eq!(wire::from_slice::<Live>(&wire::to_vec(&live)), Some(live));
        let kept = Kept {
            nsp: "/".into(),
            session,
            exp: 2,
        };
        assert_eq!(wire::from_slice::<Kept>(&wire::to_vec(&kept)), Some(kept));
        assert_eq!(wire::from_slice::<Kept>(br#"{"nsp":"/"}"#), None);
    }
}
