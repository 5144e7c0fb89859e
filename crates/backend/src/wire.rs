//! The one JSON wire form of the cluster types, for backends that store or send them
//! as JSON (PostgreSQL, NATS). A backend that speaks another implementation's format
//! (Redis: the Node.js adapter's) has its own codec.
//!
//! Log messages are tagged objects (`{"type":"broadcast",...}`); a message of a kind
//! this version does not know, or a malformed one, decodes as
//! [`ClusterMessage::Other`]. Strings keep `NUL` as the escape `\u0000`, so the text
//! also fits where raw `NUL` does not (PostgreSQL `text`).
//!
//! ```
//! use tether_backend::{wire, ClusterMessage};
//! let m = ClusterMessage::Probe { nsp: "/".into(), pid: "p".into() };
//! let text = wire::to_json(&m);
//! assert_eq!(text, r#"{"type":"probe","nsp":"/","pid":"p"}"#);
//! assert_eq!(wire::message(text.as_bytes()), m);
//! assert_eq!(wire::message(br#"{"type":"future"}"#), ClusterMessage::Other);
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ClusterMessage;

/// The JSON text of a value of the wire form.
pub fn to_json<T: Serialize>(v: &T) -> String {
    // The wire types are plain structs of strings, numbers and JSON values, with
    // string keys: serializing them cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// The JSON bytes of a value of the wire form.
pub fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec())
}

/// A value of the wire form; `None` when malformed.
pub fn from_slice<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
    serde_json::from_slice(b).ok()
}

/// A log message; anything unknown or malformed is [`ClusterMessage::Other`].
pub fn message(b: &[u8]) -> ClusterMessage {
    from_slice(b).unwrap_or(ClusterMessage::Other)
}

/// A log message from a JSON value; anything unknown or malformed is
/// [`ClusterMessage::Other`].
pub fn message_from_value(v: serde_json::Value) -> ClusterMessage {
    serde_json::from_value(v).unwrap_or(ClusterMessage::Other)
}

/// Binary attachments as standard base64 strings.
pub(crate) mod base64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[Bytes], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| STANDARD.encode(b)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bytes>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                STANDARD
                    .decode(t)
                    .map(Bytes::from)
                    .map_err(D::Error::custom)
            })
            .collect()
    }
}

/// An optional duration as whole milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::{
        Broadcast, Ephemeral, EphemeralBody, Position, Room, Session, SocketInfo, SocketsAction,
    };

    fn broadcast() -> Broadcast {
        Broadcast {
            nsp: "/chat".into(),
            data: vec![
                json!("ev"),
                json!({"_placeholder": true, "num": 0}),
                json!("nul \u{0} and ünïcode"),
                json!(1.5),
                json!(u64::MAX),
            ],
            attachments: vec![Bytes::from_static(&[0, 1, 2, 255])],
            rooms: vec![Room::from("a"), Room::from("b c")],
            except: vec![Room::from("x")],
            volatile: true,
        }
    }

    #[test]
    fn messages_round_trip() {
        let messages = [
            ClusterMessage::Broadcast(broadcast()),
            ClusterMessage::Broadcast(Broadcast {
                nsp: "/".into(),
                data: vec![json!("only")],
                attachments: vec![],
                rooms: vec![],
                except: vec![],
                volatile: false,
            }),
            ClusterMessage::Probe {
                nsp: "/".into(),
                pid: "p1".into(),
            },
            ClusterMessage::Sockets {
                nsp: "/".into(),
                rooms: vec![Room::from("r")],
                except: vec![],
                action: SocketsAction::Join(vec![Room::from("j")]),
            },
            ClusterMessage::Sockets {
                nsp: "/".into(),
                rooms: vec![],
                except: vec![Room::from("e")],
                action: SocketsAction::Leave(vec![Room::from("l")]),
            },
            ClusterMessage::Sockets {
                nsp: "/n".into(),
                rooms: vec![],
                except: vec![],
                action: SocketsAction::Disconnect { close: true },
            },
            ClusterMessage::Other,
        ];
        for m in messages {
            let text = to_json(&m);
            assert_eq!(message(text.as_bytes()), m, "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(v["type"], m.kind(), "{text}");
            assert_eq!(message_from_value(v), m, "{text}");
        }
    }

    #[test]
    fn attachments_are_base64_and_nul_survives_as_an_escape() {
        let text = to_json(&ClusterMessage::Broadcast(broadcast()));
        assert!(text.contains("\"AAEC/w==\""), "{text}");
        assert!(text.contains("\\u0000"), "{text}");
        assert!(!text.contains('\0'));
    }

    #[test]
    fn malformed_messages_are_other() {
        for bad in [
            &b"{"[..],
            br#"{"type":"nope"}"#,
            br#"{"nsp":"/"}"#,
            br#"{"type":"broadcast","nsp":"/","data":[],"attachments":["not base64!"]}"#,
            br#"{"type":"probe","nsp":"/"}"#,
            b"\xff\xfe",
        ] {
            assert_eq!(message(bad), ClusterMessage::Other);
        }
    }

    #[test]
    fn sessions_round_trip() {
        for start in [None, Some(Position::new(0, 17)), Some(Position::new(5, 1))] {
            let s = Session {
                sid: "AAAAAAAAAAAAAAAAAAAA".into(),
                pid: "pid".into(),
                rooms: vec![Room::from("r1"), Room::from("r2")],
                data: json!({"k": [1, "two", null]}),
                start,
            };
            assert_eq!(from_slice::<Session>(&to_vec(&s)), Some(s));
        }
        assert_eq!(from_slice::<Session>(b"{}"), None);
        assert_eq!(
            from_slice::<Session>(br#"{"sid":"s","pid":"p","start":"bad"}"#),
            None
        );
    }

    #[test]
    fn ephemerals_round_trip() {
        let bodies = [
            EphemeralBody::BroadcastWithAck {
                request_id: "r1".into(),
                broadcast: broadcast(),
                timeout: Some(Duration::from_millis(1500)),
            },
            EphemeralBody::BroadcastWithAck {
                request_id: "r1b".into(),
                broadcast: broadcast(),
                timeout: None,
            },
            EphemeralBody::FetchSockets {
                request_id: "r2".into(),
                rooms: vec![Room::from("a")],
                except: vec![Room::from("b")],
            },
            EphemeralBody::ServerSideEmit {
                request_id: None,
                data: vec![json!("hello"), json!({"_placeholder": true, "num": 0})],
                attachments: vec![Bytes::from_static(b"bin")],
            },
            EphemeralBody::ServerSideEmit {
                request_id: Some("r3".into()),
                data: vec![json!("x")],
                attachments: vec![],
            },
            EphemeralBody::ClientCount {
                request_id: "r4".into(),
                count: 3,
            },
            EphemeralBody::BroadcastAck {
                request_id: "r5".into(),
                sid: Some("sid".into()),
                args: vec![json!(1)],
                attachments: vec![Bytes::from_static(b"\x00")],
            },
            EphemeralBody::Sockets {
                request_id: "r6".into(),
                sockets: vec![SocketInfo {
                    id: "s1".into(),
                    rooms: vec![Room::from("r")],
                    data: json!({"user": "u"}),
                    handshake: json!({"headers": {"host": "h"}, "query": {}}),
                }],
            },
            EphemeralBody::ServerSideAck {
                request_id: "r7".into(),
                args: vec![json!("ok")],
                attachments: vec![],
            },
        ];
        for body in bodies {
            let m = Ephemeral {
                uid: "node-a".into(),
                nsp: "/chat".into(),
                body,
            };
            let text = to_json(&m);
            assert_eq!(from_slice::<Ephemeral>(text.as_bytes()), Some(m), "{text}");
        }
        assert_eq!(from_slice::<Ephemeral>(b"not json"), None);
        assert_eq!(
            from_slice::<Ephemeral>(
                br#"{"uid":"u","nsp":"/","body":{"type":"server_side_ack","request_id":"r","args":[],"attachments":["!"]}}"#
            ),
            None
        );
    }
}
