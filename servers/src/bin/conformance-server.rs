//! The server of `shared/conformance/CONTRACT.md`.
#![forbid(unsafe_code)]

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tether::{AckSender, ConnectError, Payload, RecoveryConfig, Server, ServerConfig, SocketRef};

#[derive(Clone, Copy)]
struct MiddlewareRan;

fn sorted_rooms(socket: &SocketRef) -> Value {
    let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
    rooms.sort();
    json!(rooms)
}

/// Acknowledges once this node's broadcasts and session changes are in the cluster
/// backend (§6.2: acks follow storage); at once on a single node.
fn ack_after_flush(socket: &SocketRef, ack: Option<tether::AckSender>, payload: Payload) {
    let Some(ack) = ack else { return };
    if CLUSTER.get().is_some() {
        let ns = socket.namespace().clone();
        tokio::spawn(async move {
            ns.flush().await;
            let _ = ack.send(payload);
        });
    } else {
        let _ = ack.send(payload);
    }
}

static CLUSTER: std::sync::OnceLock<()> = std::sync::OnceLock::new();

fn on_connection(socket: &SocketRef, node_id: &str) {
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
    socket.on(
        "whoami",
        |socket: SocketRef, _p: Payload, ack: Option<AckSender>| {
            let Some(ack) = ack else { return };
            let ran = socket.extensions(|e| e.get::<MiddlewareRan>().is_some());
            let _ = ack.send(json!({
                "id": socket.id().to_string(),
                "nsp": socket.nsp(),
                "recovered": socket.recovered(),
                "middlewareRan": ran,
                "rooms": sorted_rooms(&socket),
                "data": socket.data(),
                "transport": socket.transport(),
            }));
        },
    );
    socket.on(
        "join",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            if let Some(room) = p.first().and_then(Value::as_str) {
                socket.join(room);
            }
            ack_after_flush(&socket, ack, sorted_rooms(&socket).into());
        },
    );
    socket.on(
        "leave",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            if let Some(room) = p.first().and_then(Value::as_str) {
                socket.leave(room);
            }
            ack_after_flush(&socket, ack, sorted_rooms(&socket).into());
        },
    );
    socket.on(
        "set-data",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let data = socket.with_data(|data| {
                if let (Some(Value::Object(add)), Some(d)) = (p.first(), data.as_object_mut()) {
                    for (k, v) in add {
                        d.insert(k.clone(), v.clone());
                    }
                }
                data.clone()
            });
            ack_after_flush(&socket, ack, data.into());
        },
    );
    socket.on(
        "emit-to-self",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let payload = Payload {
                args: p.args.into_iter().take(1).collect(),
                attachments: p.attachments,
            };
            let _ = socket.emit("self", payload);
            ack_after_flush(&socket, ack, Payload::new());
        },
    );
    socket.on(
        "emit-numbered",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let opts = p.first().cloned().unwrap_or(Value::Null);
            let count = opts.get("count").and_then(Value::as_u64).unwrap_or(0);
            let tag = opts.get("tag").cloned().unwrap_or(Value::Null);
            let to = opts.get("to").and_then(Value::as_str).map(str::to_owned);
            let volatile = opts
                .get("volatile")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let binary = opts.get("binary").and_then(Value::as_bool).unwrap_or(false);
            let interval = opts.get("intervalMs").and_then(Value::as_u64).unwrap_or(0);
            let ns = socket.namespace().clone();
            let ns_flush = ns.clone();
            let emit_one = move |i: u64| {
                let mut op = match &to {
                    Some(room) => ns.to(room.as_str()),
                    None => ns.operator(),
                };
                if volatile {
                    op = op.volatile();
                }
                let payload = if binary {
                    let bytes = Bytes::from(vec![
                        (i % 256) as u8,
                        ((i + 1) % 256) as u8,
                        ((i + 2) % 256) as u8,
                    ]);
                    let mut p = Payload::new().binary(bytes);
                    let placeholder = p.args.remove(0);
                    p.args
                        .push(json!({ "tag": tag, "i": i, "bin": placeholder }));
                    p
                } else {
                    Payload::new().arg(json!({ "tag": tag, "i": i }))
                };
                let _ = op.emit("numbered", payload);
            };
            if interval == 0 {
                for i in 1..=count {
                    emit_one(i);
                }
                ack_after_flush(&socket, ack, json!({ "emitted": count }).into());
            } else {
                tokio::spawn(async move {
                    for i in 1..=count {
                        if i > 1 {
                            tokio::time::sleep(Duration::from_millis(interval)).await;
                        }
                        emit_one(i);
                    }
                    ns_flush.flush().await;
                    if let Some(ack) = ack {
                        let _ = ack.send(json!({ "emitted": count }));
                    }
                });
            }
        },
    );
    socket.on(
        "room-members",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let Some(ack) = ack else { return };
            let room = p
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let mut ids: Vec<String> = socket
                .namespace()
                .to(room)
                .local_sockets()
                .iter()
                .map(|s| s.id().to_string())
                .collect();
            ids.sort();
            let _ = ack.send(json!(ids));
        },
    );
    // Beyond the contract, for the interop suite: acks from the client to the server.
    socket.on(
        "ask-me",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let socket = socket.clone();
            tokio::spawn(async move {
                let answer = socket
                    .emit_with_ack("question", p, Duration::from_secs(2))
                    .await;
                if let Some(ack) = ack {
                    match answer {
                        Ok(p) => {
                            let _ = ack.send(p);
                        }
                        Err(e) => {
                            let _ = ack.send(json!({ "error": e.to_string() }));
                        }
                    }
                }
            });
        },
    );
    socket.on(
        "ask-room",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let room = p
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let ns = socket.namespace().clone();
            tokio::spawn(async move {
                // A string always serializes.
                let Ok(answers) = ns
                    .to(room)
                    .timeout(Duration::from_millis(1500))
                    .emit_with_ack("question", "room")
                    .await
                else {
                    return;
                };
                let mut out: Vec<Value> = answers
                    .responses
                    .into_iter()
                    .map(|r| match r.result {
                        Ok(p) => json!({ "id": r.socket_id, "answer": p.args }),
                        Err(e) => json!({ "id": r.socket_id, "error": e.to_string() }),
                    })
                    .collect();
                out.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_owned());
                if let Some(ack) = ack {
                    let _ = ack.send(Value::Array(out));
                }
            });
        },
    );
    cluster_events(socket);
    socket.on(
        "kill-transport",
        |socket: SocketRef, _p: Payload, _ack: Option<AckSender>| socket.close_transport(),
    );
    socket.on(
        "server-disconnect",
        |socket: SocketRef, _p: Payload, _ack: Option<AckSender>| socket.disconnect(),
    );
    let node_id = node_id.to_owned();
    socket.on(
        "node-id",
        move |_socket: SocketRef, _p: Payload, ack: Option<AckSender>| {
            if let Some(ack) = ack {
                let _ = ack.send(json!(node_id));
            }
        },
    );
}

/// Beyond the contract, for the cluster suite: the operations that reach every node.
/// `{to?, except?, local?}` selects the targets as the broadcast operators do.
fn cluster_events(socket: &SocketRef) {
    fn operator(socket: &SocketRef, p: &Value) -> tether::BroadcastOperator {
        let mut op = socket.namespace().operator();
        if let Some(to) = p["to"].as_str() {
            op = op.to(to);
        }
        if let Some(except) = p["except"].as_str() {
            op = op.except(except);
        }
        if p["local"].as_bool() == Some(true) {
            op = op.local();
        }
        if let Some(ms) = p["timeoutMs"].as_u64() {
            op = op.timeout(Duration::from_millis(ms));
        }
        op
    }
    // ack({ids, local}): the sorted ids of the targets on every node, and on this one.
    socket.on("fetch-sockets", |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
        let Some(ack) = ack else { return };
        let p = p.first().cloned().unwrap_or(Value::Null);
        let op = operator(&socket, &p);
        tokio::spawn(async move {
            match op.fetch_sockets().await {
                Ok(found) => {
                    let mut ids: Vec<&str> = found.iter().map(|s| s.id()).collect();
                    ids.sort();
                    let mut local: Vec<&str> = found
                        .iter()
                        .filter(|s| s.as_local().is_some())
                        .map(|s| s.id())
                        .collect();
                    local.sort();
                    let sockets: Vec<Value> = found
                        .iter()
                        .map(|s| json!({ "id": s.id(), "rooms": s.rooms().iter().map(|r| r.to_string()).collect::<Vec<_>>(), "data": s.data() }))
                        .collect();
                    let _ = ack.send(json!({ "ids": ids, "local": local, "sockets": sockets }));
                }
                Err(e) => {
 let _ = ack.send(json!({ "error": e.to_string() }));
}
            }
        });
    });
    // Acts on the targets everywhere, then ack() once this node's share is stored.
    socket.on(
        "sockets-join",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let p = p.first().cloned().unwrap_or(Value::Null);
            operator(&socket, &p).sockets_join(p["room"].as_str().unwrap_or_default());
            ack_after_flush(&socket, ack, Payload::default());
        },
    );
    socket.on(
        "sockets-leave",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let p = p.first().cloned().unwrap_or(Value::Null);
            operator(&socket, &p).sockets_leave(p["room"].as_str().unwrap_or_default());
            ack_after_flush(&socket, ack, Payload::default());
        },
    );
    socket.on(
        "disconnect-sockets",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let p = p.first().cloned().unwrap_or(Value::Null);
            let op = operator(&socket, &p);
            // The ack goes first: the sender may be one of the targets.
            if let Some(ack) = ack {
                let _ = ack.send(Payload::default());
            }
            op.disconnect_sockets(p["close"].as_bool().unwrap_or(false));
        },
    );
    // emit_with_ack of `question` with `args` to the targets: ack({answers, complete}).
    socket.on(
        "broadcast-ack",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let Some(ack) = ack else { return };
            let p = p.first().cloned().unwrap_or(Value::Null);
            let op = operator(&socket, &p);
            let args = p["args"].as_array().cloned().unwrap_or_default();
            tokio::spawn(async move {
                // A payload is sent as it is: no serialization to fail.
                let Ok(acks) = op.emit_with_ack("question", Payload::from_args(args)).await else {
                    return;
                };
                let mut answers: Vec<Value> = acks
                    .responses
                    .iter()
                    .map(|r| match &r.result {
                        Ok(p) => json!({ "id": r.socket_id, "answer": p.args }),
                        Err(e) => json!({ "id": r.socket_id, "error": e.to_string() }),
                    })
                    .collect();
                answers.sort_by_key(|v| v.to_string());
                let _ = ack.send(json!({ "answers": answers, "complete": acks.complete }));
            });
        },
    );
    // server_side_emit(`hello`, text) to the other nodes, which emit `node-hello` to their
    // sockets of this namespace.
    socket.on(
        "server-side-emit",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let ns = socket.namespace().clone();
            let text = p.first().cloned().unwrap_or(Value::Null);
            tokio::spawn(async move {
                let r = ns.server_side_emit("hello", text).await;
                if let Some(ack) = ack {
                    let _ = ack.send(json!({ "ok": r.is_ok() }));
                }
            });
        },
    );
    // server_side_emit_with_ack(`ping`): ack(the other nodes' ids, sorted) or {error}.
    socket.on(
        "server-side-ping",
        |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
            let Some(ack) = ack else { return };
            let ns = socket.namespace().clone();
            let ms = p.first().and_then(Value::as_u64).unwrap_or(2000);
            tokio::spawn(async move {
                match ns
                    .server_side_emit_with_ack("ping", (), Duration::from_millis(ms))
                    .await
                {
                    Ok(answers) => {
                        let mut ids: Vec<Value> = answers
                            .into_iter()
                            .filter_map(|p| p.args.into_iter().next())
                            .collect();
                        ids.sort_by_key(|v| v.to_string());
                        let _ = ack.send(json!({ "ids": ids }));
                    }
                    Err(e) => {
                        let _ = ack.send(json!({ "error": e.to_string() }));
                    }
                }
            });
        },
    );
}

/// The handlers of the other nodes' server-side emits.
fn server_side_handlers(ns: &std::sync::Arc<tether::Namespace>, node_id: &str) {
    let node_id = node_id.to_owned();
    ns.on_server_side("ping", move |_p, ack| {
        if let Some(ack) = ack {
            ack.send(json!(node_id));
        }
    });
    let weak = std::sync::Arc::downgrade(ns);
    ns.on_server_side("hello", move |p, _ack| {
        if let Some(ns) = weak.upgrade() {
            let _ = ns.operator().local().emit("node-hello", p);
        }
    });
}

/// Connects to the backend, retrying for up to 30 s (the backend may start after the node).
async fn connect_backend<B, F, Fut>(connect: F) -> std::io::Result<std::sync::Arc<B>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<B, tether::cluster::BackendError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match connect().await {
            Ok(b) => return Ok(std::sync::Arc::new(b)),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("conformance-server: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
}

/// `nats://HOST:PORT[?cluster=NAME]` (or `tls://`, with `tls_*` parameters): with a name, the cluster's stream, bucket and
/// subjects are its own (`TETHER_NAME`, `tether_NAME`, `tether.NAME`), so that clusters
/// on one server never meet (the multi-node suite starts one per test file).
fn nats_config(adapter: &str) -> (String, tether_nats::NatsConfig) {
    let (url, query) = adapter.split_once('?').unwrap_or((adapter, ""));
    let name = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("cluster="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    let mut config = tether_nats::NatsConfig::default();
    if let Some(n) = name {
        config.stream = format!("TETHER_{n}");
        config.bucket = format!("tether_{n}");
        config.subject_prefix = format!("tether.{n}");
    }
    // The other parameters (tls_ca, tls_cert, tls_key) are the backend's.
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("cluster="))
        .collect();
    if rest.is_empty() {
        (url.to_owned(), config)
    } else {
        (format!("{url}?{}", rest.join("&")), config)
    }
}

/// The cluster backend of `ADAPTER`.
enum Backend {
    Redis(String),
    Postgres(String),
    Nats(String),
}

fn main() -> std::io::Result<()> {
    tether_servers::init_tracing();
    let adapter = std::env::var("ADAPTER").unwrap_or_default();
    let backend_url = match adapter.as_str() {
        "" | "memory" => None,
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Some(Backend::Redis(url.to_owned()))
        }
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(Backend::Postgres(url.to_owned()))
        }
        url if url.starts_with("nats://") || url.starts_with("tls://") => {
            Some(Backend::Nats(url.to_owned()))
        }
        other => {
            eprintln!(
                "conformance-server: ADAPTER={other:?} is not supported: use memory (or unset), \
                 redis://HOST:PORT (rediss:// for TLS), postgres://USER@HOST:PORT/DB \
                 or nats://HOST:PORT (tls:// for TLS)"
            );
            std::process::exit(2);
        }
    };
    let addr = tether_servers::listen_addr();
    tether_servers::runtime()?.block_on(async move {
        let node_id = format!(
            "{}:{}:{}:{}",
            std::env::var("NODE_NAME").unwrap_or_else(|_| "tether".into()),
            addr.port(),
            std::process::id(),
            tether::Sid::random()
        );
        let config = ServerConfig {
            recovery: Some(RecoveryConfig::default()),
            ..ServerConfig::default()
        };
        let cluster = tether::cluster::ClusterConfig::default();
        let io = match backend_url {
            None => Server::new(config),
            Some(Backend::Redis(url)) => {
                let backend = connect_backend(|| {
                    tether_redis::RedisBackend::connect(&url, Default::default())
                })
                .await?;
                let _ = CLUSTER.set(());
                Server::join_cluster(config, node_id.clone(), backend, cluster)
                    .await
                    .map_err(std::io::Error::other)?
            }
            Some(Backend::Postgres(url)) => {
                let backend = connect_backend(|| {
                    tether_postgres::PostgresBackend::connect(&url, Default::default())
                })
                .await?;
                let _ = CLUSTER.set(());
                Server::join_cluster(config, node_id.clone(), backend, cluster)
                    .await
                    .map_err(std::io::Error::other)?
            }
            Some(Backend::Nats(url)) => {
                let (url, config_nats) = nats_config(&url);
                let backend = connect_backend(|| {
                    tether_nats::NatsBackend::connect(&url, config_nats.clone())
                })
                .await?;
                let _ = CLUSTER.set(());
                Server::join_cluster(config, node_id.clone(), backend, cluster)
                    .await
                    .map_err(std::io::Error::other)?
            }
        };
        for (name, window) in [("/", 120_000), ("/custom", 120_000), ("/short", 2_000)] {
            let ns = io.of(name);
            ns.set_recovery(Some(RecoveryConfig {
                max_disconnection_duration: Duration::from_millis(window),
                skip_middlewares: true,
                ..RecoveryConfig::default()
            }));
            ns.use_middleware(|socket: SocketRef, auth: Payload| async move {
                // The CONNECT payload as it came.
                let auth = auth.args.into_iter().next();
                if auth
                    .as_ref()
                    .and_then(|a| a.get("deny"))
                    .and_then(Value::as_bool)
                    == Some(true)
                {
                    return Err(ConnectError::new("denied"));
                }
                socket.extensions(|e| e.insert(MiddlewareRan));
                Ok(())
            });
            server_side_handlers(&ns, &node_id);
            let node_id = node_id.clone();
            ns.on_connection(move |socket: SocketRef| on_connection(&socket, &node_id));
        }
        let listener = tether::bind(addr)?;
        println!("conformance-server listening on http://{addr}");
        io.serve_with_shutdown(listener, tether_servers::shutdown_signal())
            .await
            .map_err(std::io::Error::other)
    })
}
