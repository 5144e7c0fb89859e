//! A chat room on the official `socket.io-client`, to watch connection state recovery.
//!
//! ```text
//! cargo run --release -p tether-chat      # PORT=3000 HOST=127.0.0.1 by default
//! ```
//!
//! Open the printed URL in two tabs, press **Drop connection** in one, send messages from
//! the other: the first tab comes back with the same socket id and shows the messages it
//! missed, once and in order, marked as replayed.
//!
//! An axum [`Router`] serves both the Socket.IO endpoint (`/socket.io/`, Tether's service)
//! and the page's static files (`tower-http`'s [`ServeDir`] on `static/`, or on
//! `STATIC_DIR`). axum's `ConnectInfo` gives each socket its remote address, and Ctrl-C
//! (or SIGTERM) shuts down gracefully.
//!
//! Observability: the Socket.IO Admin UI's server side on `/admin` (`ADMIN_AUTH=USER:BCRYPT_HASH`
//! to require a login) and, when `ADMIN_UI_DIR` names `@socket.io/admin-ui`'s `ui/dist`, its
//! page under `/admin/`; Tether's metrics on `GET /metrics`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::serve::ListenerExt as _;
use axum::Router;
use http::{header, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tether::extract::{AckSender, TryData};
use tether::{DisconnectReason, RecoveryConfig, Server, ServerConfig, SocketRef};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// The longest name and message the server relays, in characters.
const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 500;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("tether-chat: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p
            .parse()
            .map_err(|_| format!("PORT is not a port number: {p:?}"))?,
        Err(_) => 3000,
    };
    let host: IpAddr = match std::env::var("HOST") {
        Ok(h) => h
            .parse()
            .map_err(|_| format!("HOST is not an IP address: {h:?}"))?,
        Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let static_dir = std::env::var_os("STATIC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/static")));

    let io = Server::new(ServerConfig {
        recovery: Some(RecoveryConfig::default()),
        ..ServerConfig::default()
    });
    io.of("/").on_connection(on_connection);
    let admin_auth = match std::env::var("ADMIN_AUTH")
        .ok()
        .and_then(|a| a.split_once(':').map(|(u, h)| (u.to_owned(), h.to_owned())))
    {
        Some((username, password_hash)) => tether::admin::AdminAuth::Basic {
            username,
            password_hash,
        },
        None => tether::admin::AdminAuth::None,
    };
    io.instrument(tether::admin::AdminConfig::new(admin_auth))?;
    let _ = io.metrics_text(); // starts the live counters of /metrics
    let metrics_io = io.clone();

    let app = Router::new()
        .route_service("/socket.io/", io.service())
        .route_service("/socket.io", io.service())
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics_io.metrics_text();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .fallback_service(ServeDir::new(static_dir));
    let app = match std::env::var_os("ADMIN_UI_DIR") {
        Some(dir) => app.nest_service("/admin", ServeDir::new(dir)),
        None => app,
    };
    let app = app
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));

    // PORT=0 picks a free port; the line below says which (the browser test reads it).
    let listener = tether::bind(SocketAddr::new(host, port))?;
    let addr = listener.local_addr()?;
    println!("Tether chat listening on http://{addr}/");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let shutdown_io = io.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        println!("shutting down");
        // Recoverable for the clients: they reconnect, and recover if the server comes
        // back with its state (it does not here: the state is in memory). Closing the
        // sessions first ends their long-polls, so axum's drain is quick.
        shutdown_io.close().await;
    })
    .await?;
    Ok(())
}

/// A chat message as the page sends it.
#[derive(Deserialize)]
struct ChatIn {
    #[serde(default)]
    name: String,
    text: String,
}

/// A chat message as the server relays it.
#[derive(Serialize)]
struct ChatOut {
    name: String,
    text: String,
    /// Milliseconds since the Unix epoch.
    at: u64,
}

/// Runs for every new socket, and again for a socket that comes back by recovery (with
/// the same id, and its `data` restored).
fn on_connection(socket: SocketRef) {
    if socket.recovered() {
        // `data` came back with the session: the name it last sent with.
        let name = socket
            .data()
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        println!(
            "{} reconnected: state recovered (name: {})",
            socket.id(),
            name.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "{} connected from {}",
            socket.id(),
            socket
                .handshake()
                .remote_addr
                .map_or_else(|| "?".to_owned(), |a| a.to_string())
        );
    }
    // The page uses this event as the end-of-replay marker. Emitted here, before the
    // CONNECT reply, it is logged like any event and reaches the client right after the
    // events the socket missed: see `static/chat.js`.
    let _ = socket.emit(
        "hello",
        json!({ "id": socket.id().to_string(), "recovered": socket.recovered() }),
    );

    socket.on("chat", on_chat);

    // The page's "Drop connection" button: close the connection without a goodbye, as a
    // network failure would. The client reconnects by itself and recovers.
    socket.on("kill-transport", |socket: SocketRef| {
        println!("{} asked to drop its transport", socket.id());
        socket.close_transport();
    });

    socket.on_disconnect(|socket: SocketRef, reason: DisconnectReason| {
        println!("{} disconnected: {reason}", socket.id());
    });
}

/// `chat({name, text}, ack)`: relays the message to everyone, acks whether it did.
fn on_chat(socket: SocketRef, TryData(msg): TryData<ChatIn>, ack: Option<AckSender>) {
    let msg = msg.ok().map(|m| ChatOut {
        name: clean(&m.name, MAX_NAME).unwrap_or_else(|| "anonymous".to_owned()),
        text: clean(&m.text, MAX_TEXT).unwrap_or_default(),
        at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    });
    let ok = match msg.filter(|m| !m.text.is_empty()) {
        Some(m) => {
            socket.set_data(json!({ "name": m.name }));
            socket.namespace().emit("chat", &m).is_ok()
        }
        None => false,
    };
    if let Some(ack) = ack {
        let _ = ack.send(ok);
    }
}

/// Trimmed and cut to `max` characters; `None` when that leaves nothing.
fn clean(s: &str, max: usize) -> Option<String> {
    let s: String = s.trim().chars().take(max).collect();
    (!s.is_empty()).then_some(s)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
