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
//! One HTTP server serves both the Socket.IO endpoint (`/socket.io/`, through
//! [`tether::layer::SocketIoLayer`]) and the page's static files, which are compiled into
//! the binary so that it runs from any directory.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tether::{Payload, RecoveryConfig, Server, ServerConfig, SocketRef};
use tower_layer::Layer as _;
use tower_service::Service as _;

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

    let io = Server::new(ServerConfig {
        recovery: Some(RecoveryConfig::default()),
        ..ServerConfig::default()
    });
    io.of("/").on_connection(on_connection);
    // The Socket.IO Admin UI on `/admin` (ADMIN_AUTH=USER:BCRYPT_HASH to require a login),
    // and its page under /admin/ when ADMIN_UI_DIR names @socket.io/admin-ui's ui/dist.
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
    let admin_ui = std::env::var("ADMIN_UI_DIR").unwrap_or_else(|_| "admin-ui-not-set".into());

    // PORT=0 picks a free port; the line below says which (the browser test reads it).
    let listener = tether::bind(SocketAddr::new(host, port))?;
    let addr = listener.local_addr()?;
    println!("Tether chat listening on http://{addr}/");

    let app = tether::admin::AdminUiLayer::new(admin_ui, "/admin")
        .layer(tether::layer::SocketIoLayer::new(io.clone()).layer(StaticFiles));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, io) = (app.clone(), io.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                // The engine records the peer address in the handshake.
                req.extensions_mut().insert(peer);
                let mut app = app.clone();
                // GET /metrics: Tether's metrics, OpenMetrics text.
                let metrics = (req.uri().path() == "/metrics").then(|| io.metrics_text());
                async move {
                    if let Some(text) = metrics {
                        let mut res = Response::new(http_body_util::Either::Left(Full::new(
                            Bytes::from(text),
                        )));
                        res.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        return Ok(res);
                    }
                    std::future::poll_fn(|cx| {
                        tower_service::Service::<Request<Incoming>>::poll_ready(&mut app, cx)
                    })
                    .await?;
                    app.call(req).await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
    println!("shutting down");
    // Recoverable for the clients: they reconnect, and recover if the server comes back
    // with its state (it does not here: the state is in memory).
    io.close().await;
    Ok(())
}

/// Runs for every new socket, and again for a socket that comes back by recovery (with
/// the same id, and its `data` restored).
fn on_connection(socket: &SocketRef) {
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
        println!("{} connected", socket.id());
    }
    // The page uses this event as the end-of-replay marker. Emitted here, before the
    // CONNECT reply, it is logged like any event and reaches the client right after the
    // events the socket missed: see `static/chat.js`.
    let _ = socket.emit(
        "hello",
        json!({ "id": socket.id().to_string(), "recovered": socket.recovered() }),
    );

    socket.on("chat", |socket, payload, ack| {
        let name = clean(payload.args.first().and_then(|m| m.get("name")), MAX_NAME);
        let text = clean(payload.args.first().and_then(|m| m.get("text")), MAX_TEXT);
        let ok = !text.is_empty();
        if ok {
            let name = if name.is_empty() {
                "anonymous".to_owned()
            } else {
                name
            };
            socket.set_data(json!({ "name": name }));
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            socket
                .namespace()
                .emit("chat", json!({ "name": name, "text": text, "at": at }));
        }
        if let Some(ack) = ack {
            ack.send(Payload::new().arg(ok));
        }
    });

    // The page's "Drop connection" button: close the connection without a goodbye, as a
    // network failure would. The client reconnects by itself and recovers.
    socket.on("kill-transport", |socket, _payload, _ack| {
        println!("{} asked to drop its transport", socket.id());
        socket.close_transport();
    });

    socket.on_disconnect(|socket, reason| {
        println!("{} disconnected: {reason}", socket.id());
    });
}

/// A trimmed string argument, cut to `max` characters; empty when absent.
fn clean(v: Option<&Value>, max: usize) -> String {
    v.and_then(Value::as_str)
        .map(|s| s.trim().chars().take(max).collect())
        .unwrap_or_default()
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

/// The page and its scripts, compiled in.
#[derive(Clone, Copy)]
struct StaticFiles;

impl StaticFiles {
    fn lookup(path: &str) -> Option<(&'static str, &'static [u8])> {
        Some(match path {
            "/" | "/index.html" => (
                "text/html; charset=utf-8",
                include_bytes!("../static/index.html"),
            ),
            "/style.css" => (
                "text/css; charset=utf-8",
                include_bytes!("../static/style.css"),
            ),
            "/chat.js" => (
                "text/javascript; charset=utf-8",
                include_bytes!("../static/chat.js"),
            ),
            "/socket.io.min.js" => (
                "text/javascript; charset=utf-8",
                include_bytes!("../static/socket.io.min.js"),
            ),
            _ => return None,
        })
    }
}

impl<B> tower_service::Service<Request<B>> for StaticFiles {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let plain = |status: StatusCode, text: &'static str| {
            let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res
        };
        let res = if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            res.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            res
        } else if let Some((mime, body)) = Self::lookup(req.uri().path()) {
            // hyper leaves the body out of a HEAD response by itself.
            let mut res = Response::new(Full::new(Bytes::from_static(body)));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(mime));
            h.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            );
            res
        } else {
            plain(StatusCode::NOT_FOUND, "not found\n")
        };
        ready(Ok(res))
    }
}
