//! The server of `shared/conformance/CONTRACT.md`.
#![forbid(unsafe_code)]

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tether::{ConnectError, Payload, RecoveryConfig, Server, ServerConfig, SocketRef};

#[derive(Clone, Copy)]
struct MiddlewareRan;

fn sorted_rooms(socket: &SocketRef) -> Value {
    let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
    rooms.sort();
    json!(rooms)
}

/// Acknowledges once this node's broadcasts and session changes are in the cluster
/// engine (§6.2: acks follow storage); at once on a single node.
fn ack_after_flush(socket: &SocketRef, ack: Option<tether::AckSender>, payload: Payload) {
    let Some(ack) = ack else { return };
    if CLUSTER.get().is_some() {
        let ns = socket.namespace().clone();
        tokio::spawn(async move {
            ns.flush().await;
            ack.send(payload);
        });
    } else {
        ack.send(payload);
    }
}

static CLUSTER: std::sync::OnceLock<()> = std::sync::OnceLock::new();

fn on_connection(socket: &SocketRef, node_id: &str) {
    socket.on("echo", |socket, payload, ack| match ack {
        Some(ack) => ack.send(payload),
        None => {
            let _ = socket.emit("echo", payload);
        }
    });
    socket.on("whoami", |socket, _p, ack| {
        let Some(ack) = ack else { return };
        let ran = socket.extensions(|e| e.get::<MiddlewareRan>().is_some());
        ack.send(json!({
            "id": socket.id().to_string(),
            "nsp": socket.nsp(),
            "recovered": socket.recovered(),
            "middlewareRan": ran,
            "rooms": sorted_rooms(socket),
            "data": socket.data(),
            "transport": socket.transport(),
        }));
    });
    socket.on("join", |socket, p, ack| {
        if let Some(room) = p.first().and_then(Value::as_str) {
            socket.join(room);
        }
        ack_after_flush(socket, ack, sorted_rooms(socket).into());
    });
    socket.on("leave", |socket, p, ack| {
        if let Some(room) = p.first().and_then(Value::as_str) {
            socket.leave(room);
        }
        ack_after_flush(socket, ack, sorted_rooms(socket).into());
    });
    socket.on("set-data", |socket, p, ack| {
        let data = socket.with_data(|data| {
            if let (Some(Value::Object(add)), Some(d)) = (p.first(), data.as_object_mut()) {
                for (k, v) in add {
                    d.insert(k.clone(), v.clone());
                }
            }
            data.clone()
        });
        ack_after_flush(socket, ack, data.into());
    });
    socket.on("emit-to-self", |socket, p, ack| {
        let payload = Payload {
            args: p.args.into_iter().take(1).collect(),
            attachments: p.attachments,
        };
        let _ = socket.emit("self", payload);
        ack_after_flush(socket, ack, Payload::new());
    });
    socket.on("emit-numbered", |socket, p, ack| {
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
            op.emit("numbered", payload);
        };
        if interval == 0 {
            for i in 1..=count {
                emit_one(i);
            }
            ack_after_flush(socket, ack, json!({ "emitted": count }).into());
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
                    ack.send(json!({ "emitted": count }));
                }
            });
        }
    });
    socket.on("room-members", |socket, p, ack| {
        let Some(ack) = ack else { return };
        let room = p
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut ids: Vec<String> = socket
            .namespace()
            .to(room)
            .fetch_sockets()
            .iter()
            .map(|s| s.id().to_string())
            .collect();
        ids.sort();
        ack.send(json!(ids));
    });
    // Beyond the contract, for the interop suite: acks from the client to the server.
    socket.on("ask-me", |socket, p, ack| {
        let socket = socket.clone();
        tokio::spawn(async move {
            let answer = socket
                .emit_with_ack("question", p, Duration::from_secs(2))
                .await;
            if let Some(ack) = ack {
                match answer {
                    Ok(p) => ack.send(p),
                    Err(e) => ack.send(json!({ "error": e.to_string() })),
                }
            }
        });
    });
    socket.on("ask-room", |socket, p, ack| {
        let room = p
            .first()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ns = socket.namespace().clone();
        tokio::spawn(async move {
            let answers = ns
                .to(room)
                .timeout(Duration::from_millis(1500))
                .emit_with_ack("question", "room")
                .await;
            let mut out: Vec<Value> = answers
                .into_iter()
                .map(|(s, r)| match r {
                    Ok(p) => json!({ "id": s.id().to_string(), "answer": p.args }),
                    Err(e) => json!({ "id": s.id().to_string(), "error": e.to_string() }),
                })
                .collect();
            out.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_owned());
            if let Some(ack) = ack {
                ack.send(Value::Array(out));
            }
        });
    });
    socket.on("kill-transport", |socket, _p, _ack| {
        socket.close_transport()
    });
    socket.on("server-disconnect", |socket, _p, _ack| socket.disconnect());
    let node_id = node_id.to_owned();
    socket.on("node-id", move |_socket, _p, ack| {
        if let Some(ack) = ack {
            ack.send(json!(node_id));
        }
    });
}

/// Connects to Redis, retrying for up to 30 s (the engine may start after the node).
async fn connect_redis(url: &str) -> std::io::Result<std::sync::Arc<tether_redis::RedisBackend>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tether_redis::RedisBackend::connect(url, Default::default()).await {
            Ok(b) => return Ok(std::sync::Arc::new(b)),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("conformance-server: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
}

fn main() -> std::io::Result<()> {
    tether_servers::init_tracing();
    let adapter = std::env::var("ADAPTER").unwrap_or_default();
    let redis_url = match adapter.as_str() {
        "" | "memory" => None,
        url if url.starts_with("redis://") => Some(url.to_owned()),
        other => {
            eprintln!(
                "conformance-server: ADAPTER={other:?} is not supported: use memory (or unset) \
                 or redis://HOST:PORT (postgres:// and nats:// are not implemented yet)"
            );
            std::process::exit(2);
        }
    };
    let addr = tether_servers::listen_addr();
    tether_servers::runtime()?.block_on(async move {
        let io = Server::new(ServerConfig {
            recovery: Some(RecoveryConfig::default()),
            ..ServerConfig::default()
        });
        let node_id = format!(
            "{}:{}:{}:{}",
            std::env::var("NODE_NAME").unwrap_or_else(|_| "tether".into()),
            addr.port(),
            std::process::id(),
            tether::Sid::random()
        );
        for (name, window) in [("/", 120_000), ("/custom", 120_000), ("/short", 2_000)] {
            let ns = io.of(name);
            ns.set_recovery(Some(RecoveryConfig {
                max_disconnection_duration: Duration::from_millis(window),
                skip_middlewares: true,
                ..RecoveryConfig::default()
            }));
            ns.use_middleware(|socket, auth| async move {
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
            let node_id = node_id.clone();
            ns.on_connection(move |socket| on_connection(socket, &node_id));
        }
        if let Some(url) = redis_url {
            let backend = connect_redis(&url).await?;
            io.attach_cluster(
                node_id.clone(),
                backend,
                tether::cluster::ClusterConfig::default(),
            )
            .await
            .map_err(std::io::Error::other)?;
            let _ = CLUSTER.set(());
        }
        let listener = tether::bind(addr)?;
        println!("conformance-server listening on http://{addr}");
        io.serve_with_shutdown(listener, tether_servers::shutdown_signal())
            .await
            .map_err(std::io::Error::other)
    })
}
