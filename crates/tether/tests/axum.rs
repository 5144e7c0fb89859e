//! Tether mounted in an axum `Router` beside other routes: tower-http CORS in front, an
//! auth layer whose request extensions reach the socket, axum's `ConnectInfo` as the
//! remote address, and graceful shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use common::Client;
use http::{header, HeaderValue, Method};
use serde_json::json;
use tether::extract::{AckSender, Extension};
use tether::{ConnectError, DisconnectReason, Server, SocketRef};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// What the auth layer found in the request.
#[derive(Clone, Debug, PartialEq)]
struct Claims {
    user: String,
}

/// A tower layer (axum middleware): `Authorization: Bearer <user>` becomes [`Claims`] in
/// the request's extensions.
async fn auth(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(user) = user {
        req.extensions_mut().insert(Claims { user });
    }
    next.run(req).await
}

const ORIGIN: &str = "http://app.example";

fn app(io: &Server) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list([HeaderValue::from_static(ORIGIN)]))
        .allow_methods([Method::GET, Method::POST])
        .allow_credentials(true);
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route_service("/socket.io/", io.service())
        .layer(axum::middleware::from_fn(auth))
        .layer(cors)
}

/// A raw HTTP/1.1 request; the response's head (lowercase) and body.
async fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tether_in_an_axum_router() {
    let io = Server::default();
    let reasons: Arc<Mutex<Vec<DisconnectReason>>> = Arc::default();
    let seen = reasons.clone();
    // Refuse sockets whose request carried no claims.
    io.of("/").use_middleware(|socket: SocketRef| async move {
        match socket.req_extensions().get::<Claims>() {
            Some(_) => Ok(()),
            None => Err(ConnectError::new("unauthorized")),
        }
    });
    io.of("/")
        .on_connection(move |socket: SocketRef, Extension(c): Extension<Claims>| {
            let seen = seen.clone();
            socket.on_disconnect(move |r: DisconnectReason| seen.lock().unwrap().push(r));
            socket.on("whoami", move |s: SocketRef, ack: AckSender| {
                let addr = s.handshake().remote_addr.map(|a| a.to_string());
                let _ = ack.send(json!({ "user": c.user, "addr": addr }));
            });
        });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let io2 = io.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app(&io2).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
            // Sessions first (long-polls and WebSockets end, recoverable), then axum
            // stops accepting and lets in-flight requests finish.
            io2.close().await;
        })
        .await
    });

    // The other route, with CORS from tower-http.
    let (head, body) = http(addr, "/health", &[("Origin", ORIGIN)]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    assert!(
        head.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{head}"
    );
    assert!(head.contains("vary: origin"), "{head}");

    // Engine.IO polling through the same layers.
    let (head, body) = http(
        addr,
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", ORIGIN), ("Authorization", "Bearer ann")],
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.starts_with("0{\"sid\""), "{body}");
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );
    // Another origin gets no CORS grant.
    let (head, _) = http(
        addr,
        "/socket.io/?EIO=4&transport=polling",
        &[("Origin", "http://evil.example")],
    )
    .await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");

    // WebSocket through axum: the claims of the auth layer reach the socket, and axum's
    // ConnectInfo is the remote address.
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let mut c = Client::connect_with(&url, &[("Authorization", "Bearer ann")], "").await;
    c.send("421[\"whoami\"]");
    let me = c.ack(1).await;
    assert_eq!(me[0]["user"], "ann");
    assert_eq!(me[0]["addr"], c.local.to_string());

    // No claims: the middleware refuses the socket.
    let refused = Client::connect_url(&url, "").await;
    assert!(
        refused.sid.starts_with("44{\"message\":\"unauthorized\""),
        "{}",
        refused.sid
    );

    // Graceful shutdown: the socket is closed as a recoverable server shutdown and
    // axum's serve returns.
    stop.send(()).unwrap();
    assert!(c.closed_within(Duration::from_secs(5)).await);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert_eq!(
        *reasons.lock().unwrap(),
        vec![DisconnectReason::ServerShutdown]
    );
}
