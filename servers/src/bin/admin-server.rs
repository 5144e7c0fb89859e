//! A server for the admin UI tests (`tests/admin`): the Socket.IO Admin UI's protocol on
//! `/admin`, the dashboard's files under `/admin/` when `ADMIN_UI_DIR` names the npm
//! package's `ui/dist`, and a few events on `/` to drive the sockets it shows.
//!
//! Environment: `PORT` (0 picks a free one; the first line printed says which), `HOST`,
//! `ADAPTER` (`redis://HOST:PORT[/DB]` joins a cluster), `CLUSTER_NAME` (the cluster's
//! own stream and key prefixes, so that test runs never meet), `NODE_NAME`,
//! `ADMIN_AUTH` (`USER:BCRYPT_HASH`; unset: no login), `ADMIN_MODE` (`production` or
//! development by default), `ADMIN_UI_DIR`.
//!
//! Events on `/`: `join` (room), `leave` (room), `set-data` (any value), `echo` (acked).
//! `GET /metrics`: Tether's metrics, registered in the server's own registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tether::admin::{AdminAuth, AdminConfig, AdminMode, AdminUiLayer};
use tether::{AckSender, Payload, RecoveryConfig, Server, ServerConfig, SocketRef};
use tower_layer::Layer as _;
use tower_service::Service as _;

fn main() -> std::io::Result<()> {
    tether_servers::init_tracing();
    let addr = tether_servers::listen_addr();
    tether_servers::runtime()?.block_on(run(addr))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let config = ServerConfig {
        recovery: Some(RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(30),
            ..RecoveryConfig::default()
        }),
        ..ServerConfig::default()
    };
    let listener = tether::bind(addr)?;
    let local = listener.local_addr()?;
    let io = match env("ADAPTER") {
        Some(url) => {
            let name = env("CLUSTER_NAME").unwrap_or_else(|| "admin".into());
            let redis = tether_redis::RedisConfig {
                stream: format!("tether-admin-test:{name}"),
                session_prefix: format!("tether-admin-test:{name}:session:"),
                prefix: format!("tether-admin-test:{name}:"),
                channel_prefix: format!("tether-admin-test:{name}"),
                ..Default::default()
            };
            let backend = tether_redis::RedisBackend::connect(&url, redis)
                .await
                .map_err(std::io::Error::other)?;
            let uid = format!(
                "{}:{}:{}",
                env("NODE_NAME").unwrap_or_else(|| "tether".into()),
                local.port(),
                std::process::id()
            );
            Server::join_cluster(config, uid, Arc::new(backend), Default::default())
                .await
                .map_err(std::io::Error::other)?
        }
        None => Server::new(config),
    };
    io.of("/").on_connection(|socket: SocketRef| {
        socket.on(
            "join",
            |s: SocketRef, p: Payload, ack: Option<AckSender>| {
                if let Some(room) = p.first().and_then(Value::as_str) {
                    s.join(room.to_owned());
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            },
        );
        socket.on(
            "leave",
            |s: SocketRef, p: Payload, ack: Option<AckSender>| {
                if let Some(room) = p.first().and_then(Value::as_str) {
                    s.leave(room);
                }
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            },
        );
        socket.on(
            "set-data",
            |s: SocketRef, p: Payload, ack: Option<AckSender>| {
                s.set_data(p.first().cloned().unwrap_or(Value::Null));
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            },
        );
        socket.on("echo", |p: Payload, ack: Option<AckSender>| {
            if let Some(ack) = ack {
                let _ = ack.send(p);
            }
        });
    });
    let auth = match env("ADMIN_AUTH") {
        Some(a) => {
            let (username, hash) = a
                .split_once(':')
                .ok_or_else(|| std::io::Error::other("ADMIN_AUTH must be USER:BCRYPT_HASH"))?;
            AdminAuth::Basic {
                username: username.to_owned(),
                password_hash: hash.to_owned(),
            }
        }
        None => AdminAuth::None,
    };
    let mut admin = AdminConfig::new(auth);
    if env("ADMIN_MODE").as_deref() == Some("production") {
        admin.mode = AdminMode::Production;
    }
    if let Some(ms) = env("ADMIN_STATS_MS").and_then(|m| m.parse().ok()) {
        admin.stats_interval = Duration::from_millis(ms);
    }
    io.instrument(admin).map_err(std::io::Error::other)?;
    println!("admin-server listening on http://{local}");

    // The application's own registry, with Tether's metrics in it.
    let mut registry = tether::metrics::prometheus_client::registry::Registry::default();
    io.register_metrics(&mut registry);
    let registry = Arc::new(registry);

    let ui_dir = env("ADMIN_UI_DIR").unwrap_or_else(|| "/nonexistent".into());
    let app = AdminUiLayer::new(ui_dir, "/admin").layer(io.service());
    let shutdown = tether_servers::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, registry) = (app.clone(), registry.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer);
                let mut app = app.clone();
                let metrics = (req.uri().path() == "/metrics").then(|| {
                    let mut text = String::new();
                    let _ = tether::metrics::prometheus_client::encoding::text::encode(
                        &mut text, &registry,
                    );
                    text
                });
                async move {
                    match metrics {
                        Some(text) => Ok(metrics_response(text)),
                        None => app.call(req).await,
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
    io.close().await;
    Ok(())
}

/// The OpenMetrics text of `/metrics`.
fn metrics_response(
    text: String,
) -> hyper::Response<
    http_body_util::Either<http_body_util::Full<bytes::Bytes>, http_body_util::Full<bytes::Bytes>>,
> {
    let mut res = hyper::Response::new(http_body_util::Either::Left(http_body_util::Full::new(
        bytes::Bytes::from(text),
    )));
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    res
}
