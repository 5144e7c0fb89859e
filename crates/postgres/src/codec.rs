//! The JSON forms of log messages, sessions and ephemeral messages.
//!
//! Every form is a JSON object (text, not `jsonb`: `jsonb` refuses `\u0000` in strings,
//! which Socket.IO payloads may carry). Binary attachments are base64 strings, rooms
//! plain strings, entry ids their `"<ms>-<seq>"` text, durations whole milliseconds.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether::cluster::{
    Broadcast, ClusterMessage, ClusterSession, EntryId, Ephemeral, EphemeralBody, SocketInfo,
    SocketsAction,
};
use tether::recovery::Room;

fn to_b64(v: &[Bytes]) -> Vec<String> {
    v.iter().map(|b| STANDARD.encode(b)).collect()
}

fn from_b64(v: Vec<String>) -> Option<Vec<Bytes>> {
    v.into_iter()
        .map(|s| STANDARD.decode(s).ok().map(Bytes::from))
        .collect()
}

fn to_rooms(v: &[Room]) -> Vec<String> {
    v.iter().map(|r| r.to_string()).collect()
}

fn from_rooms(v: Vec<String>) -> Vec<Room> {
    v.into_iter().map(|r| Room::from(r.as_str())).collect()
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Serialize, Deserialize)]
struct WireBroadcast {
    nsp: String,
    data: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rooms: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    except: Vec<String>,
    #[serde(default)]
    volatile: bool,
}

impl WireBroadcast {
    fn from(b: &Broadcast) -> Self {
        WireBroadcast {
            nsp: b.nsp.clone(),
            data: b.data.clone(),
            attachments: to_b64(&b.attachments),
            rooms: to_rooms(&b.rooms),
            except: to_rooms(&b.except),
            volatile: b.volatile,
        }
    }

    fn into_broadcast(self) -> Option<Broadcast> {
        Some(Broadcast {
            nsp: self.nsp,
            data: self.data,
            attachments: from_b64(self.attachments)?,
            rooms: from_rooms(self.rooms),
            except: from_rooms(self.except),
            volatile: self.volatile,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct WireProbe {
    nsp: String,
    pid: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireAction {
    Join { rooms: Vec<String> },
    Leave { rooms: Vec<String> },
    Disconnect { close: bool },
}

#[derive(Serialize, Deserialize)]
struct WireSockets {
    nsp: String,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    action: WireAction,
}

/// The kind and the JSON data of a log message.
pub(crate) fn encode_message(m: &ClusterMessage) -> (&'static str, String) {
    let encoded = match m {
        ClusterMessage::Broadcast(b) => {
            ("broadcast", serde_json::to_string(&WireBroadcast::from(b)))
        }
        ClusterMessage::Probe { nsp, pid } => (
            "probe",
            serde_json::to_string(&WireProbe {
                nsp: nsp.clone(),
                pid: pid.clone(),
            }),
        ),
        ClusterMessage::Sockets {
            nsp,
            rooms,
            except,
            action,
        } => {
            let action = match action {
                SocketsAction::Join(r) => WireAction::Join { rooms: to_rooms(r) },
                SocketsAction::Leave(r) => WireAction::Leave { rooms: to_rooms(r) },
                SocketsAction::Disconnect { close } => WireAction::Disconnect { close: *close },
            };
            (
                "sockets",
                serde_json::to_string(&WireSockets {
                    nsp: nsp.clone(),
                    rooms: to_rooms(rooms),
                    except: to_rooms(except),
                    action,
                }),
            )
        }
        ClusterMessage::Other => ("other", Ok("null".to_owned())),
    };
    // Serializing these plain structs of strings and JSON values cannot fail.
    (encoded.0, encoded.1.unwrap_or_else(|_| "null".to_owned()))
}

/// The namespace a log message belongs to (`/` for [`ClusterMessage::Other`]).
pub(crate) fn message_nsp(m: &ClusterMessage) -> &str {
    match m {
        ClusterMessage::Broadcast(b) => &b.nsp,
        ClusterMessage::Probe { nsp, .. } | ClusterMessage::Sockets { nsp, .. } => nsp,
        ClusterMessage::Other => "/",
    }
}

/// A log message from its kind and data; anything unknown or malformed is
/// [`ClusterMessage::Other`].
pub(crate) fn decode_message(kind: &str, data: &str) -> ClusterMessage {
    let decoded = match kind {
        "broadcast" => serde_json::from_str::<WireBroadcast>(data)
            .ok()
            .and_then(WireBroadcast::into_broadcast)
            .map(ClusterMessage::Broadcast),
        "probe" => serde_json::from_str::<WireProbe>(data)
            .ok()
            .map(|p| ClusterMessage::Probe {
                nsp: p.nsp,
                pid: p.pid,
            }),
        "sockets" => serde_json::from_str::<WireSockets>(data).ok().map(|s| {
            let action = match s.action {
                WireAction::Join { rooms } => SocketsAction::Join(from_rooms(rooms)),
                WireAction::Leave { rooms } => SocketsAction::Leave(from_rooms(rooms)),
                WireAction::Disconnect { close } => SocketsAction::Disconnect { close },
            };
            ClusterMessage::Sockets {
                nsp: s.nsp,
                rooms: from_rooms(s.rooms),
                except: from_rooms(s.except),
                action,
            }
        }),
        _ => None,
    };
    decoded.unwrap_or(ClusterMessage::Other)
}

#[derive(Serialize, Deserialize)]
struct WireSession {
    sid: String,
    pid: String,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    start: Option<String>,
}

/// A session as stored in the session tables.
pub(crate) fn encode_session(s: &ClusterSession) -> String {
    serde_json::to_string(&WireSession {
        sid: s.sid.clone(),
        pid: s.pid.clone(),
        rooms: to_rooms(&s.rooms),
        data: s.data.clone(),
        start: s.start.map(|id| id.to_string()),
    })
    .unwrap_or_else(|_| "null".to_owned())
}

/// A stored session; `None` when malformed.
pub(crate) fn decode_session(s: &str) -> Option<ClusterSession> {
    let w: WireSession = serde_json::from_str(s).ok()?;
    let start = match w.start {
        Some(t) => Some(EntryId::parse(&t)?),
        None => None,
    };
    Some(ClusterSession {
        sid: w.sid,
        pid: w.pid,
        rooms: from_rooms(w.rooms),
        data: w.data,
        start,
    })
}

#[derive(Serialize, Deserialize)]
struct WireSocket {
    id: String,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    handshake: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBody {
    BroadcastWithAck {
        request_id: String,
        broadcast: WireBroadcast,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    FetchSockets {
        request_id: String,
        #[serde(default)]
        rooms: Vec<String>,
        #[serde(default)]
        except: Vec<String>,
    },
    ServerSideEmit {
        #[serde(default)]
        request_id: Option<String>,
        data: Vec<Value>,
        #[serde(default)]
        attachments: Vec<String>,
    },
    ClientCount {
        request_id: String,
        count: u64,
    },
    BroadcastAck {
        request_id: String,
        #[serde(default)]
        sid: Option<String>,
        args: Vec<Value>,
        #[serde(default)]
        attachments: Vec<String>,
    },
    Sockets {
        request_id: String,
        sockets: Vec<WireSocket>,
    },
    ServerSideAck {
        request_id: String,
        args: Vec<Value>,
        #[serde(default)]
        attachments: Vec<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct WireEphemeral {
    uid: String,
    nsp: String,
    body: WireBody,
}

/// An ephemeral message as sent through `NOTIFY` (or stored, when too large).
pub(crate) fn encode_ephemeral(m: &Ephemeral) -> String {
    let body = match &m.body {
        EphemeralBody::BroadcastWithAck {
            request_id,
            broadcast,
            timeout,
        } => WireBody::BroadcastWithAck {
            request_id: request_id.clone(),
            broadcast: WireBroadcast::from(broadcast),
            timeout_ms: timeout.map(ms),
        },
        EphemeralBody::FetchSockets {
            request_id,
            rooms,
            except,
        } => WireBody::FetchSockets {
            request_id: request_id.clone(),
            rooms: to_rooms(rooms),
            except: to_rooms(except),
        },
        EphemeralBody::ServerSideEmit {
            request_id,
            data,
            attachments,
        } => WireBody::ServerSideEmit {
            request_id: request_id.clone(),
            data: data.clone(),
            attachments: to_b64(attachments),
        },
        EphemeralBody::ClientCount { request_id, count } => WireBody::ClientCount {
            request_id: request_id.clone(),
            count: *count,
        },
        EphemeralBody::BroadcastAck {
            request_id,
            sid,
            args,
            attachments,
        } => WireBody::BroadcastAck {
            request_id: request_id.clone(),
            sid: sid.clone(),
            args: args.clone(),
            attachments: to_b64(attachments),
        },
        EphemeralBody::Sockets {
            request_id,
            sockets,
        } => WireBody::Sockets {
            request_id: request_id.clone(),
            sockets: sockets
                .iter()
                .map(|s| WireSocket {
                    id: s.id.clone(),
                    rooms: to_rooms(&s.rooms),
                    data: s.data.clone(),
                    handshake: s.handshake.clone(),
                })
                .collect(),
        },
        EphemeralBody::ServerSideAck {
            request_id,
            args,
            attachments,
        } => WireBody::ServerSideAck {
            request_id: request_id.clone(),
            args: args.clone(),
            attachments: to_b64(attachments),
        },
    };
    serde_json::to_string(&WireEphemeral {
        uid: m.uid.clone(),
        nsp: m.nsp.clone(),
        body,
    })
    .unwrap_or_else(|_| "null".to_owned())
}

/// An ephemeral message; `None` when malformed.
pub(crate) fn decode_ephemeral(s: &str) -> Option<Ephemeral> {
    let w: WireEphemeral = serde_json::from_str(s).ok()?;
    let body = match w.body {
        WireBody::BroadcastWithAck {
            request_id,
            broadcast,
            timeout_ms,
        } => EphemeralBody::BroadcastWithAck {
            request_id,
            broadcast: broadcast.into_broadcast()?,
            timeout: timeout_ms.map(std::time::Duration::from_millis),
        },
        WireBody::FetchSockets {
            request_id,
            rooms,
            except,
        } => EphemeralBody::FetchSockets {
            request_id,
            rooms: from_rooms(rooms),
            except: from_rooms(except),
        },
        WireBody::ServerSideEmit {
            request_id,
            data,
            attachments,
        } => EphemeralBody::ServerSideEmit {
            request_id,
            data,
            attachments: from_b64(attachments)?,
        },
        WireBody::ClientCount { request_id, count } => {
            EphemeralBody::ClientCount { request_id, count }
        }
        WireBody::BroadcastAck {
            request_id,
            sid,
            args,
            attachments,
        } => EphemeralBody::BroadcastAck {
            request_id,
            sid,
            args,
            attachments: from_b64(attachments)?,
        },
        WireBody::Sockets {
            request_id,
            sockets,
        } => EphemeralBody::Sockets {
            request_id,
            sockets: sockets
                .into_iter()
                .map(|s| SocketInfo {
                    id: s.id,
                    rooms: from_rooms(s.rooms),
                    data: s.data,
                    handshake: s.handshake,
                })
                .collect(),
        },
        WireBody::ServerSideAck {
            request_id,
            args,
            attachments,
        } => EphemeralBody::ServerSideAck {
            request_id,
            args,
            attachments: from_b64(attachments)?,
        },
    };
    Some(Ephemeral {
        uid: w.uid,
        nsp: w.nsp,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

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
            let (kind, data) = encode_message(&m);
            assert_eq!(decode_message(kind, &data), m, "{kind} {data}");
        }
    }

    #[test]
    fn attachments_are_base64_and_nul_survives_as_an_escape() {
        let (_, data) = encode_message(&ClusterMessage::Broadcast(broadcast()));
        assert!(data.contains("\"AAEC/w==\""), "{data}");
        assert!(data.contains("\\u0000"), "{data}");
        assert!(!data.contains('\0'));
    }

    #[test]
    fn malformed_messages_are_other() {
        assert_eq!(decode_message("broadcast", "{"), ClusterMessage::Other);
        assert_eq!(decode_message("nope", "{}"), ClusterMessage::Other);
        assert_eq!(
            decode_message(
                "broadcast",
                r#"{"nsp":"/","data":[],"attachments":["not base64!"]}"#
            ),
            ClusterMessage::Other
        );
    }

    #[test]
    fn sessions_round_trip() {
        for start in [None, Some(EntryId { ms: 17, seq: 0 })] {
            let s = ClusterSession {
                sid: "AAAAAAAAAAAAAAAAAAAA".into(),
                pid: "pid".into(),
                rooms: vec![Room::from("r1"), Room::from("r2")],
                data: json!({"k": [1, "two", null]}),
                start,
            };
            assert_eq!(decode_session(&encode_session(&s)), Some(s));
        }
        assert_eq!(decode_session("{}"), None);
        assert_eq!(
            decode_session(r#"{"sid":"s","pid":"p","start":"bad"}"#),
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
            let text = encode_ephemeral(&m);
            assert_eq!(decode_ephemeral(&text), Some(m), "{text}");
        }
        assert_eq!(decode_ephemeral("not json"), None);
    }
}
