//! The Tether twin of `crates/client/tests/node/server.js`: the server of the
//! `tether-client` end-to-end tests, with the same contract (see the top of server.js):
//!
//! - listens on 127.0.0.1:$PORT (0: any free port) and prints `listening <port>`;
//! - `PING_INTERVAL` / `PING_TIMEOUT` (ms, default 1000 each) set the heartbeat;
//! - connection state recovery on (60 s), middlewares skipped on recovery;
//! - namespaces "/" and "/admin" ("/admin" wants auth `{token: "secret"}`); on any
//!   namespace auth `{reject: "msg"}` is refused with message "msg" and data `{code: 401}`;
//! - the same events as server.js;
//! - exits when its stdin closes (the test process went away).
//!
//! Two things the Tether API does not give directly, and how they are obtained here:
//!
//! - `socket.handshake.auth`: a Tether `Socket` does not keep its CONNECT payload; only
//!   the middlewares see it. So the middleware records it in the socket's extensions, and
//!   runs for recovered sockets too (`skip_middlewares: false`) but lets a recovered socket
//!   through without checks, which is what `skipMiddlewares: true` does in server.js.
//! - `socket.conn.id` (the Engine.IO session id): a Tether `Socket` does not expose it.
//!   Every namespace socket of one Engine.IO session shares one handshake, so the
//!   handshake's address stands for the session.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tether::{
    AckSender, ConnectError, DisconnectReason, EngineConfig, Payload, RecoveryConfig, Server,
    ServerConfig, SocketRef,
};

/// Shared by every socket: key -> list of values, key -> counter.
#[derive(Default)]
struct State {
    logs: Mutex<HashMap<String, Vec<Value>>>,
    counters: Mutex<HashMap<String, u64>>,
}

impl State {
    fn log(&self, key: &str, value: Value) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .push(value);
    }
}

/// The CONNECT payload, as the middleware saw it.
#[derive(Clone)]
struct Auth(Value);

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default),
    )
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `String(v)` for the values a test may send.
fn js_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An event name as Node would turn it into one (`socket.emit(42)` sends `42`, which a
/// client reads as "42"; Tether's emit takes a string).
fn event_name(v: Option<&Value>) -> String {
    v.map(js_string).unwrap_or_default()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `querystring.unescape` with `+` as a space, as Node's query parser does.
fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The handshake's query string as Node's `socket.handshake.query`.
fn query_object(socket: &SocketRef) -> Value {
    let mut q = Map::new();
    if let Some(query) = socket.handshake().uri.query() {
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let (k, v) = (decode_component(k), Value::String(decode_component(v)));
            match q.get_mut(&k) {
                Some(Value::Array(all)) => all.push(v),
                Some(first) => *first = Value::Array(vec![first.clone(), v]),
                None => {
                    q.insert(k, v);
                }
            }
        }
    }
    Value::Object(q)
}

/// The handshake's headers as Node's `socket.handshake.headers` (lower-case names,
/// repeated headers joined with ", ").
fn headers_object(socket: &SocketRef) -> Value {
    let mut h = Map::new();
    let headers = &socket.handshake().headers;
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        h.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    Value::Object(h)
}

/// `[...socket.rooms]`: the socket's own room (its id) first, then the others.
fn rooms(socket: &SocketRef) -> Value {
    let mut rooms = vec![Value::String(socket.id().to_string())];
    rooms.extend(socket.rooms().iter().map(|r| Value::String(r.to_string())));
    Value::Array(rooms)
}

/// The Engine.IO session a socket belongs to (see the top of this file).
fn conn_id(socket: &SocketRef) -> String {
    format!("{:p}", socket.handshake())
}

fn ack_empty(ack: Option<AckSender>) {
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

/// Emits `numbered` from..from+count-1 to a room.
fn emit_numbered(socket: &SocketRef, room: &str, from: i64, count: i64) {
    let ns = socket.namespace();
    for i in from..from + count {
        let _ = ns.to(room).emit("numbered", json!(i));
    }
}

fn on_connection(socket: &SocketRef, state: &Arc<State>) {
    {
        let state = state.clone();
        socket.on_disconnect(move |socket: SocketRef, reason: DisconnectReason| {
            state.log(
                "disconnects",
                json!({"id": socket.id().to_string(), "nsp": socket.nsp(), "reason": reason.as_str()}),
            );
        });
    }

    // echo(...args[, ack]): acks the arguments back, or emits them back as "echo".
    socket.on(
        "echo",
        |socket: SocketRef, payload: Payload, ack: Option<AckSender>| match ack {
            Some(ack) => {
                let _ = ack.send(payload);
            }
            None => {
                let _ = socket.emit("echo", payload);
            }
        },
    );

    // whoami(ack): what the server knows of this socket.
    socket.on(
        "whoami",
        |socket: SocketRef, _p: Payload, ack: Option<AckSender>| {
            let Some(ack) = ack else { return };
            let auth = socket
                .extensions(|e| e.get::<Auth>().cloned())
                .map_or_else(|| json!({}), |a| a.0);
            let _ = ack.send(json!({
                "id": socket.id().to_string(),
                "conn": conn_id(&socket),
                "nsp": socket.nsp(),
                "transport": socket.transport(),
                "recovered": socket.recovered(),
                "auth": auth,
                "query": query_object(&socket),
                "headers": headers_object(&socket),
                "rooms": rooms(&socket),
            }));
        },
    );

    // ask(event, args, ack): emits `event` with `args` to this client, asking for an ack,
    // and acks with the client's answer (an array) or {error}.
    socket.on(
        "ask",
        |socket: SocketRef, payload: Payload, ack: Option<AckSender>| {
            let event = event_name(payload.args.first());
            let args = match payload.args.get(1) {
                Some(Value::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            let out = Payload {
                args,
                attachments: payload.attachments,
            };
            let socket = socket.clone();
            tokio::spawn(async move {
                let answer = socket
                    .emit_with_ack(&event, out, Duration::from_millis(2000))
                    .await;
                let Some(ack) = ack else { return };
                match answer {
                    Ok(p) => {
                        let _ = ack.send(Payload {
                            args: vec![Value::Array(p.args)],
                            attachments: p.attachments,
                        });
                    }
                    Err(e) => {
                        let message = if e.is_timeout() {
                            "operation has timed out".to_owned()
                        } else {
                            e.to_string()
                        };
                        let _ = ack.send(json!({ "error": message }));
                    }
                }
            });
        },
    );

    // emit-to-me(event, ...args[, ack]): a plain (recoverable) emit to this socket.
    socket.on(
        "emit-to-me",
        |socket: SocketRef, mut payload: Payload, ack: Option<AckSender>| {
            let event = event_name(payload.args.first());
            if !payload.args.is_empty() {
                payload.args.remove(0);
            }
            let _ = socket.emit(&event, payload);
            ack_empty(ack);
        },
    );

    // volatile-to-me(event, ...args[, ack]): a volatile emit to this socket.
    socket.on(
        "volatile-to-me",
        |socket: SocketRef, mut payload: Payload, ack: Option<AckSender>| {
            let event = event_name(payload.args.first());
            if !payload.args.is_empty() {
                payload.args.remove(0);
            }
            let _ = socket
                .namespace()
                .to(socket.id().as_str())
                .volatile()
                .emit(&event, payload);
            ack_empty(ack);
        },
    );

    // binary(ack): emits "binary" with a top-level and a nested buffer, then acks a buffer.
    socket.on(
        "binary",
        |socket: SocketRef, _p: Payload, ack: Option<AckSender>| {
            let mut p = Payload::new().binary(Bytes::from_static(&[1, 2, 3]));
            p.args
                .push(json!({"nested": {"_placeholder": true, "num": p.attachments.len()}}));
            p.attachments.push(Bytes::from_static(b"hi"));
            let _ = socket.emit("binary", p);
            if let Some(ack) = ack {
                let _ = ack.send(Payload::new().binary(Bytes::from_static(&[0, 255])));
            }
        },
    );

    socket.on(
        "join",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            socket.join(js_string(p.first().unwrap_or(&Value::Null)));
            if let Some(ack) = ack {
                let _ = ack.send(json!(true));
            }
        },
    );

    // numbered(room, from, count[, ack]): emits "numbered" from..from+count-1 to a room.
    socket.on(
        "numbered",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let room = js_string(p.first().unwrap_or(&Value::Null));
            let from = p.get::<i64>(1).unwrap_or(0);
            let count = p.get::<i64>(2).unwrap_or(0);
            emit_numbered(&socket, &room, from, count);
            ack_empty(ack);
        },
    );

    // drop([ack]): acks, then closes the Engine.IO connection (recoverable).
    socket.on(
        "drop",
        |socket: SocketRef, _p: Payload, ack: Option<AckSender>| {
            ack_empty(ack);
            socket.close_transport();
        },
    );

    // drop-then-emit(room, from, count): closes the connection, then emits "numbered"
    // from..from+count-1 to the room: the client misses them and must recover them.
    socket.on(
        "drop-then-emit",
        |socket: SocketRef, p: Payload, _ack: Option<AckSender>| {
            let room = js_string(p.first().unwrap_or(&Value::Null));
            let from = p.get::<i64>(1).unwrap_or(0);
            let count = p.get::<i64>(2).unwrap_or(0);
            socket.close_transport();
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                emit_numbered(&socket, &room, from, count);
            });
        },
    );

    // server-disconnect(): the server disconnects this socket (not recoverable).
    socket.on(
        "server-disconnect",
        |socket: SocketRef, _p: Payload, _ack: Option<AckSender>| {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                socket.disconnect();
            });
        },
    );

    {
        let state = state.clone();
        socket.on(
            "log",
            move |_socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                let key = js_string(p.first().unwrap_or(&Value::Null));
                state.log(&key, p.args.get(1).cloned().unwrap_or(Value::Null));
                ack_empty(ack);
            },
        );
    }

    {
        let state = state.clone();
        socket.on(
            "get-log",
            move |_socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                let key = js_string(p.first().unwrap_or(&Value::Null));
                let log = state
                    .logs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                if let Some(ack) = ack {
                    let _ = ack.send(Value::Array(log));
                }
            },
        );
    }

    // flaky(key, failures, ack): ignores the first `failures` calls, then acks the count.
    {
        let state = state.clone();
        socket.on(
            "flaky",
            move |_socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                let key = js_string(p.first().unwrap_or(&Value::Null));
                let failures = p.get::<u64>(1).unwrap_or(0);
                let n = {
                    let mut counters = state.counters.lock().unwrap_or_else(|e| e.into_inner());
                    let n = counters.entry(key).or_default();
                    *n += 1;
                    *n
                };
                if n > failures {
                    if let Some(ack) = ack {
                        let _ = ack.send(json!(n));
                    }
                }
            },
        );
    }

    {
        let state = state.clone();
        socket.on(
            "count",
            move |_socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                let key = js_string(p.first().unwrap_or(&Value::Null));
                let n = state
                    .counters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .copied()
                    .unwrap_or(0);
                if let Some(ack) = ack {
                    let _ = ack.send(json!(n));
                }
            },
        );
    }

    socket.on(
        "never-ack",
        |_socket: SocketRef, _p: Payload, _ack: Option<AckSender>| {},
    );
}

fn main() -> std::io::Result<()> {
    tether_servers::init_tracing();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    // Exit with the test process.
    std::thread::spawn(|| {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    tether_servers::runtime()?.block_on(async move {
        let io = Server::new(ServerConfig {
            engine: EngineConfig {
                ping_interval: env_ms("PING_INTERVAL", 1000),
                ping_timeout: env_ms("PING_TIMEOUT", 1000),
                ..EngineConfig::default()
            },
            // skip_middlewares: false, but the middleware lets recovered sockets through
            // unchecked: see the top of this file.
            recovery: Some(RecoveryConfig {
                max_disconnection_duration: Duration::from_secs(60),
                skip_middlewares: false,
                ..RecoveryConfig::default()
            }),
            ..ServerConfig::default()
        });
        let state = Arc::new(State::default());
        for name in ["/", "/admin"] {
            let ns = io.of(name);
            let admin = name == "/admin";
            ns.use_middleware(move |socket: SocketRef, auth: Payload| async move {
                // The CONNECT payload as it came.
                let auth = auth.args.into_iter().next();
                let auth = auth.unwrap_or_else(|| json!({}));
                socket.extensions(|e| e.insert(Auth(auth.clone())));
                if socket.recovered() {
                    return Ok(());
                }
                if let Some(reject) = auth.get("reject").filter(|r| truthy(r)) {
                    return Err(
                        ConnectError::new(js_string(reject)).with_data(json!({"code": 401}))
                    );
                }
                if admin && auth.get("token") != Some(&json!("secret")) {
                    return Err(ConnectError::new("unauthorized").with_data(json!({"code": 401})));
                }
                Ok(())
            });
            let state = state.clone();
            ns.on_connection(move |socket: SocketRef| on_connection(&socket, &state));
        }
        let listener = tether::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
        let port = listener.local_addr()?.port();
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {port}")?;
            out.flush()?;
        }
        io.serve_with_shutdown(listener, tether_servers::shutdown_signal())
            .await
            .map_err(std::io::Error::other)
    })
}
