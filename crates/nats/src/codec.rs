//! JSON encodings of log entries, sessions, KV values and ephemeral messages. Binary
//! attachments travel as standard base64 strings.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether::cluster::{
    Broadcast, ClusterMessage, ClusterSession, EntryId, Ephemeral, EphemeralBody, SocketInfo,
    SocketsAction,
};

/// A name as a subject token or KV key token: base64url without padding, so that any
/// string (dots, spaces, `*`, `>`, non-ASCII) is safe; the empty string is `_`.
pub(crate) fn token(name: &str) -> String {
    if name.is_empty() {
        "_".into()
    } else {
        URL_SAFE_NO_PAD.encode(name.as_bytes())
    }
}

fn rooms_out(r: &[Arc<str>]) -> Vec<String> {
    r.iter().map(|s| s.to_string()).collect()
}

fn rooms_in(r: Vec<String>) -> Vec<Arc<str>> {
    r.into_iter().map(Arc::from).collect()
}

fn bin_out(a: &[Bytes]) -> Vec<String> {
    a.iter().map(|b| STANDARD.encode(b)).collect()
}

fn bin_in(a: Vec<String>) -> Option<Vec<Bytes>> {
    a.iter()
        .map(|s| STANDARD.decode(s).ok().map(Bytes::from))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct B {
    nsp: String,
    data: Vec<Value>,
    #[serde(default)]
    att: Vec<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    volatile: bool,
}

impl B {
    fn from(b: &Broadcast) -> Self {
        B {
            nsp: b.nsp.clone(),
            data: b.data.clone(),
            att: bin_out(&b.attachments),
            rooms: rooms_out(&b.rooms),
            except: rooms_out(&b.except),
            volatile: b.volatile,
        }
    }

    fn into(self) -> Option<Broadcast> {
        Some(Broadcast {
            nsp: self.nsp,
            data: self.data,
            attachments: bin_in(self.att)?,
            rooms: rooms_in(self.rooms),
            except: rooms_in(self.except),
            volatile: self.volatile,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Join(Vec<String>),
    Leave(Vec<String>),
    Disconnect(bool),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Msg {
    Broadcast(B),
    Probe {
        nsp: String,
        pid: String,
    },
    Sockets {
        nsp: String,
        rooms: Vec<String>,
        except: Vec<String>,
        action: Action,
    },
    Other,
}

/// A log entry as stored in the stream.
#[derive(Serialize, Deserialize)]
struct Entry {
    uid: String,
    #[serde(default)]
    seq: Option<u64>,
    m: Value,
}

fn msg_out(m: &ClusterMessage) -> Msg {
    match m {
        ClusterMessage::Broadcast(b) => Msg::Broadcast(B::from(b)),
        ClusterMessage::Probe { nsp, pid } => Msg::Probe {
            nsp: nsp.clone(),
            pid: pid.clone(),
        },
        ClusterMessage::Sockets {
            nsp,
            rooms,
            except,
            action,
        } => Msg::Sockets {
            nsp: nsp.clone(),
            rooms: rooms_out(rooms),
            except: rooms_out(except),
            action: match action {
                SocketsAction::Join(r) => Action::Join(rooms_out(r)),
                SocketsAction::Leave(r) => Action::Leave(rooms_out(r)),
                SocketsAction::Disconnect { close } => Action::Disconnect(*close),
            },
        },
        ClusterMessage::Other => Msg::Other,
    }
}

fn msg_in(m: Msg) -> Option<ClusterMessage> {
    Some(match m {
        Msg::Broadcast(b) => ClusterMessage::Broadcast(b.into()?),
        Msg::Probe { nsp, pid } => ClusterMessage::Probe { nsp, pid },
        Msg::Sockets {
            nsp,
            rooms,
            except,
            action,
        } => ClusterMessage::Sockets {
            nsp,
            rooms: rooms_in(rooms),
            except: rooms_in(except),
            action: match action {
                Action::Join(r) => SocketsAction::Join(rooms_in(r)),
                Action::Leave(r) => SocketsAction::Leave(rooms_in(r)),
                Action::Disconnect(close) => SocketsAction::Disconnect { close },
            },
        },
        Msg::Other => ClusterMessage::Other,
    })
}

/// Encodes a log entry.
pub(crate) fn encode_entry(uid: &str, seq: u64, m: &ClusterMessage) -> Vec<u8> {
    let entry = Entry {
        uid: uid.to_owned(),
        seq: Some(seq),
        m: serde_json::to_value(msg_out(m)).unwrap_or(Value::Null),
    };
    serde_json::to_vec(&entry).unwrap_or_default()
}

/// Decodes a log entry: its uid, seq and message. A message this version does not know
/// is [`ClusterMessage::Other`]; `None` when it is not an entry at all.
pub(crate) fn decode_entry(raw: &[u8]) -> Option<(String, Option<u64>, ClusterMessage)> {
    let e: Entry = serde_json::from_slice(raw).ok()?;
    let m = serde_json::from_value::<Msg>(e.m)
        .ok()
        .and_then(msg_in)
        .unwrap_or(ClusterMessage::Other);
    Some((e.uid, e.seq, m))
}

/// A session as stored in the KV bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Session {
    sid: String,
    pid: String,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    start: Option<String>,
}

impl Session {
    pub(crate) fn from(s: &ClusterSession) -> Self {
        Session {
            sid: s.sid.clone(),
            pid: s.pid.clone(),
            rooms: rooms_out(&s.rooms),
            data: s.data.clone(),
            start: s.start.map(|id| id.to_string()),
        }
    }

    pub(crate) fn into(self) -> ClusterSession {
        ClusterSession {
            sid: self.sid,
            pid: self.pid,
            rooms: rooms_in(self.rooms),
            data: self.data,
            start: self.start.as_deref().and_then(EntryId::parse),
        }
    }
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

pub(crate) fn to_bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) fn from_bytes<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Option<T> {
    serde_json::from_slice(b).ok()
}

#[derive(Serialize, Deserialize)]
struct Sock {
    id: String,
    rooms: Vec<String>,
    data: Value,
    handshake: Value,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Body {
    BroadcastWithAck {
        request_id: String,
        broadcast: B,
        timeout_ms: Option<u64>,
    },
    FetchSockets {
        request_id: String,
        rooms: Vec<String>,
        except: Vec<String>,
    },
    ServerSideEmit {
        request_id: Option<String>,
        data: Vec<Value>,
        att: Vec<String>,
    },
    ClientCount {
        request_id: String,
        count: u64,
    },
    BroadcastAck {
        request_id: String,
        sid: Option<String>,
        args: Vec<Value>,
        att: Vec<String>,
    },
    Sockets {
        request_id: String,
        sockets: Vec<Sock>,
    },
    ServerSideAck {
        request_id: String,
        args: Vec<Value>,
        att: Vec<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct Eph {
    uid: String,
    nsp: String,
    body: Body,
}

/// Encodes an ephemeral message.
pub(crate) fn encode_ephemeral(m: &Ephemeral) -> Bytes {
    let body = match &m.body {
        EphemeralBody::BroadcastWithAck {
            request_id,
            broadcast,
            timeout,
        } => Body::BroadcastWithAck {
            request_id: request_id.clone(),
            broadcast: B::from(broadcast),
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        },
        EphemeralBody::FetchSockets {
            request_id,
            rooms,
            except,
        } => Body::FetchSockets {
            request_id: request_id.clone(),
            rooms: rooms_out(rooms),
            except: rooms_out(except),
        },
        EphemeralBody::ServerSideEmit {
            request_id,
            data,
            attachments,
        } => Body::ServerSideEmit {
            request_id: request_id.clone(),
            data: data.clone(),
            att: bin_out(attachments),
        },
        EphemeralBody::ClientCount { request_id, count } => Body::ClientCount {
            request_id: request_id.clone(),
            count: *count,
        },
        EphemeralBody::BroadcastAck {
            request_id,
            sid,
            args,
            attachments,
        } => Body::BroadcastAck {
            request_id: request_id.clone(),
            sid: sid.clone(),
            args: args.clone(),
            att: bin_out(attachments),
        },
        EphemeralBody::Sockets {
            request_id,
            sockets,
        } => Body::Sockets {
            request_id: request_id.clone(),
            sockets: sockets
                .iter()
                .map(|s| Sock {
                    id: s.id.clone(),
                    rooms: rooms_out(&s.rooms),
                    data: s.data.clone(),
                    handshake: s.handshake.clone(),
                })
                .collect(),
        },
        EphemeralBody::ServerSideAck {
            request_id,
            args,
            attachments,
        } => Body::ServerSideAck {
            request_id: request_id.clone(),
            args: args.clone(),
            att: bin_out(attachments),
        },
    };
    to_bytes(&Eph {
        uid: m.uid.clone(),
        nsp: m.nsp.clone(),
        body,
    })
}

/// Decodes an ephemeral message (`None` if it is not one).
pub(crate) fn decode_ephemeral(raw: &[u8]) -> Option<Ephemeral> {
    let e: Eph = serde_json::from_slice(raw).ok()?;
    let body = match e.body {
        Body::BroadcastWithAck {
            request_id,
            broadcast,
            timeout_ms,
        } => EphemeralBody::BroadcastWithAck {
            request_id,
            broadcast: broadcast.into()?,
            timeout: timeout_ms.map(Duration::from_millis),
        },
        Body::FetchSockets {
            request_id,
            rooms,
            except,
        } => EphemeralBody::FetchSockets {
            request_id,
            rooms: rooms_in(rooms),
            except: rooms_in(except),
        },
        Body::ServerSideEmit {
            request_id,
            data,
            att,
        } => EphemeralBody::ServerSideEmit {
            request_id,
            data,
            attachments: bin_in(att)?,
        },
        Body::ClientCount { request_id, count } => EphemeralBody::ClientCount { request_id, count },
        Body::BroadcastAck {
            request_id,
            sid,
            args,
            att,
        } => EphemeralBody::BroadcastAck {
            request_id,
            sid,
            args,
            attachments: bin_in(att)?,
        },
        Body::Sockets {
            request_id,
            sockets,
        } => EphemeralBody::Sockets {
            request_id,
            sockets: sockets
                .into_iter()
                .map(|s| SocketInfo {
                    id: s.id,
                    rooms: rooms_in(s.rooms),
                    data: s.data,
                    handshake: s.handshake,
                })
                .collect(),
        },
        Body::ServerSideAck {
            request_id,
            args,
            att,
        } => EphemeralBody::ServerSideAck {
            request_id,
            args,
            attachments: bin_in(att)?,
        },
    };
    Some(Ephemeral {
        uid: e.uid,
        nsp: e.nsp,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
                rooms: rooms(&["r"]),
                except: vec![],
                action: SocketsAction::Join(rooms(&["j"])),
            },
            ClusterMessage::Sockets {
                nsp: "/".into(),
                rooms: vec![],
                except: rooms(&["x"]),
                action: SocketsAction::Leave(rooms(&["l"])),
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
    fn sessions_round_trip() {
        let s = ClusterSession {
            sid: "sid".into(),
            pid: "pid".into(),
            rooms: rooms(&["r1", "ü"]),
            data: json!({"k": [1, 2.5]}),
            start: Some(EntryId { ms: 12, seq: 0 }),
        };
        let live = Live {
            node: "n".into(),
            nsp: "/".into(),
            session: Session::from(&s),
            window: 5,
            exp: 7,
        };
        let back: Live = from_bytes(&to_bytes(&live)).expect("decodes");
        assert_eq!(back, live);
        assert_eq!(back.session.into(), s);
    }

    #[test]
    fn ephemerals_round_trip() {
        let bodies = [
            EphemeralBody::BroadcastWithAck {
                request_id: "r".into(),
                broadcast: Broadcast {
                    nsp: "/".into(),
                    data: vec![json!("e")],
                    attachments: vec![Bytes::from_static(b"\x00\x01")],
                    rooms: rooms(&["a"]),
                    except: vec![],
                    volatile: false,
                },
                timeout: Some(Duration::from_millis(1500)),
            },
            EphemeralBody::FetchSockets {
                request_id: "r".into(),
                rooms: rooms(&["a"]),
                except: rooms(&["b"]),
            },
            EphemeralBody::ServerSideEmit {
                request_id: None,
                data: vec![json!("x")],
                attachments: vec![Bytes::from_static(&[9])],
            },
            EphemeralBody::ClientCount {
                request_id: "r".into(),
                count: 3,
            },
            EphemeralBody::BroadcastAck {
                request_id: "r".into(),
                sid: Some("s".into()),
                args: vec![json!(1)],
                attachments: vec![],
            },
            EphemeralBody::Sockets {
                request_id: "r".into(),
                sockets: vec![SocketInfo {
                    id: "s".into(),
                    rooms: rooms(&["a"]),
                    data: json!({"d": 1}),
                    handshake: json!({"url": "/"}),
                }],
            },
            EphemeralBody::ServerSideAck {
                request_id: "r".into(),
                args: vec![json!(null)],
                attachments: vec![Bytes::from_static(&[1, 2])],
            },
        ];
        for body in bodies {
            let m = Ephemeral {
                uid: "u".into(),
                nsp: "/n".into(),
                body,
            };
            assert_eq!(decode_ephemeral(&encode_ephemeral(&m)), Some(m));
        }
        assert_eq!(decode_ephemeral(b"{}"), None);
    }
}
