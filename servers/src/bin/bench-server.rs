//! The server of `shared/bench/CONTRACT.md`: `echo`, `join`, `broadcast`, `storm` on `/`.
#![forbid(unsafe_code)]

use serde_json::Value;
use std::sync::Arc;

use tether::cluster::ClusterBackend;
use tether::{AckSender, Payload, RecoveryConfig, Server, ServerConfig, SocketRef};

fn main() -> std::io::Result<()> {
    tether_servers::init_tracing();
    let csr = std::env::var("CSR").as_deref() == Ok("1");
    let addr = tether_servers::listen_addr();
    tether_servers::runtime()?.block_on(async move {
        let config = ServerConfig {
            recovery: csr.then(RecoveryConfig::default),
            ..ServerConfig::default()
        };
        // Optional: join a cluster to measure the cross-node path (the bench contract itself
        // is single-node). `ADAPTER` picks the backend by its URL: `redis://HOST:PORT/DB`,
        // `postgres://USER@HOST:PORT/DB[?options=-csearch_path%3DSCHEMA]` or
        // `nats://HOST:PORT`. `ADAPTER_PREFIX` names the backend's state (PostgreSQL table
        // prefix; NATS stream, KV bucket and subject prefix): `bench_` / `bench` by default,
        // so that a bench never touches another cluster's data.
        let io = match std::env::var("ADAPTER") {
            Ok(url) => {
                let prefix = std::env::var("ADAPTER_PREFIX")
                    .ok()
                    .filter(|p| !p.is_empty());
                let backend = connect_backend(&url, prefix)
                    .await
                    .map_err(std::io::Error::other)?;
                let uid = format!("bench:{}:{}", addr.port(), std::process::id());
                Server::join_cluster(config, uid, backend, Default::default())
                    .await
                    .map_err(std::io::Error::other)?
            }
            Err(_) => Server::new(config),
        };
        io.of("/").on_connection(|socket: SocketRef| {
            socket.on(
                "echo",
                |_s: SocketRef, payload: Payload, ack: Option<AckSender>| {
                    if let Some(ack) = ack {
                        let _ = ack.send(payload);
                    }
                },
            );
            socket.on(
                "join",
                |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                    if let Some(room) = p.first().and_then(Value::as_str) {
                        socket.join(room);
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                },
            );
            socket.on(
                "broadcast",
                |socket: SocketRef, mut p: Payload, ack: Option<AckSender>| {
                    let room = p.first().and_then(Value::as_str).map(str::to_owned);
                    let payload = if p.args.len() > 1 {
                        p.args.swap_remove(1)
                    } else {
                        Value::Null
                    };
                    let ns = socket.namespace();
                    let op = match room {
                        Some(r) => ns.to(r),
                        None => ns.operator(),
                    };
                    let _ = op.emit("tick", Payload::from_args(vec![payload]));
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                },
            );
            socket.on(
                "storm",
                |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                    let room = p.first().and_then(Value::as_str).map(str::to_owned);
                    let n = p.args.get(1).and_then(Value::as_u64).unwrap_or(0);
                    let size = p.args.get(2).and_then(Value::as_u64).unwrap_or(0) as usize;
                    let pad = "x".repeat(size);
                    let ns = socket.namespace();
                    for i in 0..n {
                        let op = match &room {
                            Some(r) => ns.to(r.as_str()),
                            None => ns.operator(),
                        };
                        let _ = op.emit(
                            "tick",
                            Payload::from_args(vec![Value::String(format!("{i}:{pad}"))]),
                        );
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                },
            );
        });
        // Beyond the contract, for measuring their overhead: `METRICS=1` turns Tether's
        // metrics on (the live counters, as a `/metrics` endpoint would).
        if std::env::var("METRICS").as_deref() == Ok("1") {
            let mut registry = tether::metrics::prometheus_client::registry::Registry::default();
            io.register_metrics(&mut registry);
        }
        let listener = tether::bind(addr)?;
        println!(
            "bench-server listening on http://{addr} (CSR {})",
            if csr { "on" } else { "off" }
        );
        io.serve_with_shutdown(listener, tether_servers::shutdown_signal())
            .await
            .map_err(std::io::Error::other)
    })
}

/// The backend of `ADAPTER`'s URL, its state named after `prefix` when given.
async fn connect_backend(
    url: &str,
    prefix: Option<String>,
) -> Result<Arc<dyn ClusterBackend>, Box<dyn std::error::Error + Send + Sync>> {
    if url.starts_with("redis://") {
        let backend = tether_redis::RedisBackend::connect(url, Default::default()).await?;
        Ok(Arc::new(backend))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let config = tether_postgres::PostgresConfig {
            prefix: prefix.unwrap_or_else(|| "bench_".to_owned()),
            ..Default::default()
        };
        Ok(Arc::new(
            tether_postgres::PostgresBackend::connect(url, config).await?,
        ))
    } else if url.starts_with("nats://") {
        let name = prefix.unwrap_or_else(|| "bench".to_owned());
        let config = tether_nats::NatsConfig {
            stream: name.clone(),
            bucket: name.clone(),
            subject_prefix: name,
            ..Default::default()
        };
        Ok(Arc::new(
            tether_nats::NatsBackend::connect(url, config).await?,
        ))
    } else {
        Err(format!("ADAPTER: unknown backend URL {url:?} (redis://, postgres://, nats://)").into())
    }
}
