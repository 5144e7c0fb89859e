//! The entry and session formats of `@socket.io/redis-streams-adapter` 0.3.x, so that a
//! Tether node and a Node.js node share one cluster.
//!
//! - A stream entry has the fields `uid`, `nsp`, `type` and `data`. A broadcast is type
//!   `3` with `data` = JSON `{"packet":{"type":2,"data":[event,...args],"nsp":...},
//!   "opts":{"rooms":[...],"except":[...],"flags":{...}}}`, or, when it carries binary,
//!   the same object as MessagePack in base64. Tether adds a `seq` field (the appending
//!   node's sequence number, to drop an entry that a retry appended twice); Node ignores it.
//! - A session is base64 MessagePack of `{sid, pid, rooms, data}` where `rooms` includes
//!   the socket's own id. Tether adds `_start` (the stream position when the socket
//!   connected); Node ignores it.

use base64::Engine as _;
use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{json, Map, Value};
use tether_backend::Room;
use tether_backend::{
    Broadcast, ClusterMessage, Ephemeral, EphemeralBody, Position, Session, SocketInfo,
    SocketsAction,
};

/// The adapter's message type of a broadcast.
pub(crate) const BROADCAST: &str = "3";
/// `socketsJoin`.
const SOCKETS_JOIN: &str = "4";
/// `socketsLeave`.
const SOCKETS_LEAVE: &str = "5";
/// `disconnectSockets`.
const DISCONNECT_SOCKETS: &str = "6";
/// Tether's probe of a pid's holder.
pub(crate) const PROBE: &str = "tether:probe";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// JSON to MessagePack; placeholders become the attachments they stand for.
fn to_mp(v: &Value, attachments: &[Bytes]) -> Mp {
    if let Some(n) = tether_placeholder(v) {
        if let Some(b) = attachments.get(n) {
            return Mp::Binary(b.to_vec());
        }
    }
    match v {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else {
                Mp::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(a) => Mp::Array(a.iter().map(|x| to_mp(x, attachments)).collect()),
        Value::Object(o) => Mp::Map(
            o.iter()
                .map(|(k, x)| (Mp::from(k.as_str()), to_mp(x, attachments)))
                .collect(),
        ),
    }
}

fn tether_placeholder(v: &Value) -> Option<usize> {
    let o = v.as_object()?;
    if o.len() == 2 && o.get("_placeholder")?.as_bool()? {
        usize::try_from(o.get("num")?.as_u64()?).ok()
    } else {
        None
    }
}

/// MessagePack to JSON; binary values become placeholders and are pushed to `attachments`.
fn to_json(v: Mp, attachments: &mut Vec<Bytes>) -> Value {
    match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => {
            if let Some(x) = i.as_i64() {
                json!(x)
            } else {
                json!(i.as_u64().unwrap_or(0))
            }
        }
        Mp::F32(f) => serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Mp::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(s.into_str().unwrap_or_default()),
        Mp::Binary(b) => {
            attachments.push(Bytes::from(b));
            json!({ "_placeholder": true, "num": attachments.len() - 1 })
        }
        Mp::Array(a) => Value::Array(a.into_iter().map(|x| to_json(x, attachments)).collect()),
        Mp::Map(m) => {
            let mut o = Map::new();
            for (k, x) in m {
                let key = match k {
                    Mp::String(s) => s.into_str().unwrap_or_default(),
                    other => other.to_string(),
                };
                o.insert(key, to_json(x, attachments));
            }
            Value::Object(o)
        }
        Mp::Ext(_, _) => Value::Null,
    }
}

fn rooms_json(rooms: &[Room]) -> Value {
    Value::Array(rooms.iter().map(|r| Value::String(r.to_string())).collect())
}

/// The `(type, data)` fields of a message.
pub(crate) fn encode_message(msg: &ClusterMessage) -> Option<(&'static str, String)> {
    match msg {
        ClusterMessage::Broadcast(b) => {
            let mut flags = Map::new();
            if b.volatile {
                flags.insert("volatile".into(), Value::Bool(true));
            }
            let data = json!({
                "packet": { "type": 2, "data": b.data, "nsp": b.nsp },
                "opts": { "rooms": rooms_json(&b.rooms), "except": rooms_json(&b.except), "flags": flags },
            });
            if b.attachments.is_empty() {
                Some((BROADCAST, data.to_string()))
            } else {
                let mut buf = Vec::new();
                rmpv::encode::write_value(&mut buf, &to_mp(&data, &b.attachments)).ok()?;
                Some((BROADCAST, B64.encode(buf)))
            }
        }
        ClusterMessage::Probe { nsp, pid } => {
            Some((PROBE, json!({ "nsp": nsp, "pid": pid }).to_string()))
        }
        ClusterMessage::Sockets {
            rooms,
            except,
            action,
            ..
        } => {
            let opts =
                json!({ "rooms": rooms_json(rooms), "except": rooms_json(except), "flags": {} });
            Some(match action {
                SocketsAction::Join(r) => (
                    SOCKETS_JOIN,
                    json!({ "opts": opts, "rooms": rooms_json(r) }).to_string(),
                ),
                SocketsAction::Leave(r) => (
                    SOCKETS_LEAVE,
                    json!({ "opts": opts, "rooms": rooms_json(r) }).to_string(),
                ),
                SocketsAction::Disconnect { close } => (
                    DISCONNECT_SOCKETS,
                    json!({ "opts": opts, "close": close }).to_string(),
                ),
            })
        }
        ClusterMessage::Other => None,
    }
}

/// Reads the `data` field: JSON when it starts with `{`, else base64 MessagePack.
fn decode_data(data: &str) -> Option<(Value, Vec<Bytes>)> {
    if data.starts_with('{') {
        return serde_json::from_str(data).ok().map(|v| (v, Vec::new()));
    }
    let raw = B64.decode(data).ok()?;
    let mp = rmpv::decode::read_value(&mut raw.as_slice()).ok()?;
    let mut attachments = Vec::new();
    let v = to_json(mp, &mut attachments);
    Some((v, attachments))
}

fn str_list(v: Option<&Value>) -> Vec<Room> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(Room::from).collect())
        .unwrap_or_default()
}

/// Decodes a message from its `type` and `data` fields.
pub(crate) fn decode_message(ty: &str, nsp: &str, data: &str) -> ClusterMessage {
    match ty {
        BROADCAST => {
            let Some((v, attachments)) = decode_data(data) else {
                return ClusterMessage::Other;
            };
            let packet = &v["packet"];
            let opts = &v["opts"];
            let Some(Value::Array(items)) = packet.get("data").cloned() else {
                return ClusterMessage::Other;
            };
            // Only plain events are broadcast through the stream.
            if packet.get("type").and_then(Value::as_u64) != Some(2) || packet.get("id").is_some() {
                return ClusterMessage::Other;
            }
            let volatile = opts["flags"]["volatile"].as_bool().unwrap_or(false);
            ClusterMessage::Broadcast(Broadcast {
                nsp: nsp.to_owned(),
                data: items,
                attachments,
                rooms: str_list(opts.get("rooms")),
                except: str_list(opts.get("except")),
                volatile,
            })
        }
        SOCKETS_JOIN | SOCKETS_LEAVE | DISCONNECT_SOCKETS => {
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                return ClusterMessage::Other;
            };
            let action = match ty {
                SOCKETS_JOIN => SocketsAction::Join(str_list(v.get("rooms"))),
                SOCKETS_LEAVE => SocketsAction::Leave(str_list(v.get("rooms"))),
                _ => SocketsAction::Disconnect {
                    close: v["close"].as_bool().unwrap_or(false),
                },
            };
            ClusterMessage::Sockets {
                nsp: nsp.to_owned(),
                rooms: str_list(v["opts"].get("rooms")),
                except: str_list(v["opts"].get("except")),
                action,
            }
        }
        PROBE => {
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            match (v["nsp"].as_str(), v["pid"].as_str()) {
                (Some(nsp), Some(pid)) => ClusterMessage::Probe {
                    nsp: nsp.to_owned(),
                    pid: pid.to_owned(),
                },
                _ => ClusterMessage::Other,
            }
        }
        _ => ClusterMessage::Other,
    }
}

/// The adapter's message types of requests and answers (pub/sub).
mod kind {
    pub const BROADCAST: u64 = 3;
    pub const FETCH_SOCKETS: u64 = 7;
    pub const FETCH_SOCKETS_RESPONSE: u64 = 8;
    pub const SERVER_SIDE_EMIT: u64 = 9;
    pub const SERVER_SIDE_EMIT_RESPONSE: u64 = 10;
    pub const BROADCAST_CLIENT_COUNT: u64 = 11;
    pub const BROADCAST_ACK: u64 = 12;
}

/// An answer's `packet` (the reference carries the first argument only) and, when there
/// are more or fewer, Tether's `args`.
fn answer_fields(o: &mut Map<String, Value>, args: &[Value]) {
    o.insert(
        "packet".into(),
        args.first().cloned().unwrap_or(Value::Null),
    );
    if args.len() != 1 {
        o.insert("args".into(), Value::Array(args.to_vec()));
    }
}

fn answer_args(v: &Value) -> Vec<Value> {
    match v.get("args") {
        Some(Value::Array(a)) => a.clone(),
        _ => vec![v.get("packet").cloned().unwrap_or(Value::Null)],
    }
}

fn socket_json(s: &SocketInfo) -> Value {
    let mut rooms = vec![Value::String(s.id.clone())];
    rooms.extend(s.rooms.iter().map(|r| Value::String(r.to_string())));
    json!({ "id": s.id, "handshake": s.handshake, "rooms": rooms, "data": s.data })
}

fn socket_from_json(v: &Value) -> Option<SocketInfo> {
    let id = v["id"].as_str()?.to_owned();
    let rooms = str_list(v.get("rooms"))
        .into_iter()
        .filter(|r| **r != *id)
        .collect();
    Some(SocketInfo {
        id,
        rooms,
        data: v.get("data").cloned().unwrap_or(Value::Null),
        handshake: v.get("handshake").cloned().unwrap_or(Value::Null),
    })
}

/// An ephemeral message as the adapter publishes it: MessagePack of
/// `{uid, nsp, type, data}`, binary as MessagePack binary.
pub(crate) fn encode_ephemeral(m: &Ephemeral) -> Vec<u8> {
    let no_binary: &[Bytes] = &[];
    let (ty, data, attachments) = match &m.body {
        EphemeralBody::BroadcastWithAck {
            request_id,
            broadcast: b,
            timeout,
        } => {
            let mut flags = Map::new();
            if let Some(t) = timeout {
                flags.insert("timeout".into(), json!(t.as_millis() as u64));
            }
            (
                kind::BROADCAST,
                json!({
                    "packet": { "type": 2, "data": b.data, "nsp": b.nsp },
                    "requestId": request_id,
                    "opts": { "rooms": rooms_json(&b.rooms), "except": rooms_json(&b.except), "flags": flags },
                }),
                b.attachments.as_slice(),
            )
        }
        EphemeralBody::FetchSockets {
            request_id,
            rooms,
            except,
        } => (
            kind::FETCH_SOCKETS,
            json!({
                "opts": { "rooms": rooms_json(rooms), "except": rooms_json(except), "flags": {} },
                "requestId": request_id,
            }),
            no_binary,
        ),
        EphemeralBody::ServerSideEmit {
            request_id,
            data,
            attachments,
        } => {
            let mut o = Map::new();
            o.insert("packet".into(), Value::Array(data.clone()));
            if let Some(id) = request_id {
                o.insert("requestId".into(), Value::String(id.clone()));
            }
            (
                kind::SERVER_SIDE_EMIT,
                Value::Object(o),
                attachments.as_slice(),
            )
        }
        EphemeralBody::ClientCount { request_id, count } => (
            kind::BROADCAST_CLIENT_COUNT,
            json!({ "requestId": request_id, "clientCount": count }),
            no_binary,
        ),
        EphemeralBody::BroadcastAck {
            request_id,
            sid,
            args,
            attachments,
        } => {
            let mut o = Map::new();
            o.insert("requestId".into(), Value::String(request_id.clone()));
            answer_fields(&mut o, args);
            if let Some(sid) = sid {
                o.insert("sid".into(), Value::String(sid.clone()));
            }
            (
                kind::BROADCAST_ACK,
                Value::Object(o),
                attachments.as_slice(),
            )
        }
        EphemeralBody::Sockets {
            request_id,
            sockets,
        } => (
            kind::FETCH_SOCKETS_RESPONSE,
            json!({
                "requestId": request_id,
                "sockets": sockets.iter().map(socket_json).collect::<Vec<_>>(),
            }),
            no_binary,
        ),
        EphemeralBody::ServerSideAck {
            request_id,
            args,
            attachments,
        } => {
            let mut o = Map::new();
            o.insert("requestId".into(), Value::String(request_id.clone()));
            answer_fields(&mut o, args);
            (
                kind::SERVER_SIDE_EMIT_RESPONSE,
                Value::Object(o),
                attachments.as_slice(),
            )
        }
    };
    let message = Mp::Map(vec![
        (Mp::from("uid"), Mp::from(m.uid.as_str())),
        (Mp::from("nsp"), Mp::from(m.nsp.as_str())),
        (Mp::from("type"), Mp::from(ty)),
        (Mp::from("data"), to_mp(&data, attachments)),
    ]);
    let mut buf = Vec::new();
    let _ = rmpv::encode::write_value(&mut buf, &message);
    buf
}

/// Reads an ephemeral message; `None` for one Tether does not take part in (or garbage).
pub(crate) fn decode_ephemeral(raw: &[u8]) -> Option<Ephemeral> {
    let mut cursor = raw;
    let mp = rmpv::decode::read_value(&mut cursor).ok()?;
    let mut attachments = Vec::new();
    let v = to_json(mp, &mut attachments);
    let uid = v["uid"].as_str()?.to_owned();
    let nsp = v["nsp"].as_str()?.to_owned();
    let data = &v["data"];
    let request_id = data["requestId"].as_str().map(str::to_owned);
    let body = match v["type"].as_u64()? {
        kind::BROADCAST => {
            let packet = &data["packet"];
            let items = packet["data"].as_array()?.clone();
            let opts = &data["opts"];
            EphemeralBody::BroadcastWithAck {
                request_id: request_id?,
                broadcast: Broadcast {
                    nsp: nsp.clone(),
                    data: items,
                    attachments,
                    rooms: str_list(opts.get("rooms")),
                    except: str_list(opts.get("except")),
                    volatile: false,
                },
                timeout: opts["flags"]["timeout"]
                    .as_u64()
                    .map(std::time::Duration::from_millis),
            }
        }
        kind::FETCH_SOCKETS => EphemeralBody::FetchSockets {
            request_id: request_id?,
            rooms: str_list(data["opts"].get("rooms")),
            except: str_list(data["opts"].get("except")),
        },
        kind::FETCH_SOCKETS_RESPONSE => EphemeralBody::Sockets {
            request_id: request_id?,
            sockets: data["sockets"]
                .as_array()?
                .iter()
                .filter_map(socket_from_json)
                .collect(),
        },
        kind::SERVER_SIDE_EMIT => EphemeralBody::ServerSideEmit {
            request_id,
            data: data["packet"].as_array()?.clone(),
            attachments,
        },
        kind::SERVER_SIDE_EMIT_RESPONSE => EphemeralBody::ServerSideAck {
            request_id: request_id?,
            args: answer_args(data),
            attachments,
        },
        kind::BROADCAST_CLIENT_COUNT => EphemeralBody::ClientCount {
            request_id: request_id?,
            count: data["clientCount"].as_u64()?,
        },
        kind::BROADCAST_ACK => EphemeralBody::BroadcastAck {
            request_id: request_id?,
            sid: data["sid"].as_str().map(str::to_owned),
            args: answer_args(data),
            attachments,
        },
        _ => return None,
    };
    Some(Ephemeral { uid, nsp, body })
}

/// A session in the adapter's format.
pub(crate) fn encode_session(s: &Session) -> String {
    let mut rooms = vec![Mp::from(s.sid.as_str())];
    rooms.extend(s.rooms.iter().map(|r| Mp::from(&**r)));
    let mut map = vec![
        (Mp::from("sid"), Mp::from(s.sid.as_str())),
        (Mp::from("pid"), Mp::from(s.pid.as_str())),
        (Mp::from("rooms"), Mp::Array(rooms)),
        (Mp::from("data"), to_mp(&s.data, &[])),
    ];
    if let Some(start) = s.start {
        map.push((Mp::from("_start"), Mp::from(start.to_string())));
    }
    let mut buf = Vec::new();
    let _ = rmpv::encode::write_value(&mut buf, &Mp::Map(map));
    B64.encode(buf)
}

/// Reads a session in the adapter's format.
pub(crate) fn decode_session(raw: &str) -> Option<Session> {
    let bytes = B64.decode(raw.trim()).ok()?;
    let mp = rmpv::decode::read_value(&mut bytes.as_slice()).ok()?;
    let mut attachments = Vec::new();
    let v = to_json(mp, &mut attachments);
    let sid = v["sid"].as_str()?.to_owned();
    let pid = v["pid"].as_str()?.to_owned();
    let rooms = str_list(v.get("rooms"))
        .into_iter()
        .filter(|r| **r != *sid)
        .collect();
    let data = v.get("data").cloned().unwrap_or(json!({}));
    let start = v["_start"].as_str().and_then(Position::parse);
    Some(Session {
        sid,
        pid,
        rooms,
        data,
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_round_trips_as_json_and_msgpack() {
        for attachments in [vec![], vec![Bytes::from_static(&[1, 2, 3])]] {
            let mut data = vec![json!("ev"), json!({"a": [1, 2.5, "x", null, true]})];
            if !attachments.is_empty() {
                data.push(json!({"_placeholder": true, "num": 0}));
            }
            let b = Broadcast {
                nsp: "/n".into(),
                data,
                attachments: attachments.clone(),
                rooms: vec!["r".into()],
                except: vec!["e".into()],
                volatile: true,
            };
            let (ty, raw) = encode_message(&ClusterMessage::Broadcast(b.clone())).unwrap();
            assert_eq!(ty, BROADCAST);
            assert_eq!(raw.starts_with('{'), attachments.is_empty());
            assert_eq!(decode_message(ty, "/n", &raw), ClusterMessage::Broadcast(b));
        }
    }

    #[test]
    fn sessions_round_trip_and_drop_the_own_room() {
        let s = Session {
            sid: "s".into(),
            pid: "p".into(),
            rooms: vec!["r1".into()],
            data: json!({"k": [1, "v"]}),
            start: Some(Position::new(5, 1)),
        };
        assert_eq!(decode_session(&encode_session(&s)), Some(s));
    }

    #[test]
    fn sockets_actions_round_trip() {
        for action in [
            SocketsAction::Join(vec!["a".into(), "b".into()]),
            SocketsAction::Leave(vec!["a".into()]),
            SocketsAction::Disconnect { close: true },
            SocketsAction::Disconnect { close: false },
        ] {
            let m = ClusterMessage::Sockets {
                nsp: "/n".into(),
                rooms: vec!["r".into()],
                except: vec!["e".into()],
                action,
            };
            let (ty, raw) = encode_message(&m).unwrap();
            assert_eq!(decode_message(ty, "/n", &raw), m);
        }
    }

    #[test]
    fn ephemeral_messages_round_trip_with_binary() {
        let bin = vec![Bytes::from_static(&[0, 1, 255])];
        let ph = json!({"_placeholder": true, "num": 0});
        let bodies = vec![
            EphemeralBody::BroadcastWithAck {
                request_id: "r1".into(),
                broadcast: Broadcast {
                    nsp: "/n".into(),
                    data: vec![json!("ev"), json!(1), ph.clone()],
                    attachments: bin.clone(),
                    rooms: vec!["a".into()],
                    except: vec!["b".into()],
                    volatile: false,
                },
                timeout: Some(std::time::Duration::from_millis(1500)),
            },
            EphemeralBody::FetchSockets {
                request_id: "r2".into(),
                rooms: vec!["a".into()],
                except: vec![],
            },
            EphemeralBody::ServerSideEmit {
                request_id: None,
                data: vec![json!("hello"), json!({"k": 1})],
                attachments: vec![],
            },
            EphemeralBody::ServerSideEmit {
                request_id: Some("r3".into()),
                data: vec![json!("hello"), ph.clone()],
                attachments: bin.clone(),
            },
            EphemeralBody::ClientCount {
                request_id: "r4".into(),
                count: 7,
            },
            EphemeralBody::BroadcastAck {
                request_id: "r5".into(),
                sid: Some("s1".into()),
                args: vec![ph.clone()],
                attachments: bin.clone(),
            },
            EphemeralBody::BroadcastAck {
                request_id: "r5".into(),
                sid: None,
                args: vec![json!(1), json!(2)],
                attachments: vec![],
            },
            EphemeralBody::Sockets {
                request_id: "r6".into(),
                sockets: vec![SocketInfo {
                    id: "s1".into(),
                    rooms: vec!["a".into()],
                    data: json!({"x": 1}),
                    handshake: json!({"url": "/socket.io/"}),
                }],
            },
            EphemeralBody::ServerSideAck {
                request_id: "r7".into(),
                args: vec![],
                attachments: vec![],
            },
        ];
        for body in bodies {
            let m = Ephemeral {
                uid: "node".into(),
                nsp: "/n".into(),
                body,
            };
            assert_eq!(decode_ephemeral(&encode_ephemeral(&m)), Some(m));
        }
        assert_eq!(decode_ephemeral(b"\xc1garbage"), None);
        assert_eq!(decode_ephemeral(&[]), None);
    }

    #[test]
    fn garbage_is_other() {
        assert_eq!(
            decode_message(BROADCAST, "/", "{not json"),
            ClusterMessage::Other
        );
        assert_eq!(decode_message(BROADCAST, "/", "!!!"), ClusterMessage::Other);
        assert_eq!(decode_message("1", "/", "{}"), ClusterMessage::Other);
        assert_eq!(decode_session("!!"), None);
    }
}
