//! The options Node users reach for on the handshake, over raw HTTP: `allow_request`
//! (status + message, on polling and WebSocket handshakes) and `cookie` (`Set-Cookie`
//! with the session id on the handshake response).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tether_engine::{
    AllowRequest, CloseReason, Cookie, Engine, EngineConfig, EngineSocket, Handler, Message,
    Refusal, SameSite,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Nop;

impl Handler for Nop {
    type Conn = ();
    fn on_open(&self, _socket: &Arc<EngineSocket>) {}
    fn on_message(&self, _conn: &(), _msg: Message<'_>) {}
    fn on_close(&self, _conn: &(), _reason: CloseReason) {}
}

async fn start(config: EngineConfig) -> std::net::SocketAddr {
    let listener = tokio_listener().await;
    let addr = listener.local_addr().unwrap();
    let engine = Engine::new(config, Nop);
    tokio::spawn(tether_engine::serve(listener, engine));
    addr
}

async fn tokio_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A raw request; the head (lowercased) and the body, read until the server closes or,
/// for a 101, until the head is complete.
async fn request(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if n == 0 || (text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n")) {
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            return (head.to_ascii_lowercase(), body.to_owned());
        }
    }
}

const WS: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn allow_request_refuses_with_its_status_and_message() {
    let addr = start(EngineConfig {
        allow_request: Some(AllowRequest::new(|req| {
            match req.headers.get("x-api-key") {
                Some(k) if k == "secret" => Ok(()),
                Some(_) => Err(Refusal::forbidden()),
                None => Err(Refusal::new(http::StatusCode::UNAUTHORIZED, "no key")),
            }
        })),
        ..EngineConfig::default()
    })
    .await;
    let path = "/socket.io/?EIO=4&transport=polling";
    let (head, body) = request(addr, path, "").await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body, r#"{"code":4,"message":"no key"}"#);
    let (head, body) = request(addr, path, "X-Api-Key: wrong\r\n").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert_eq!(body, r#"{"code":4,"message":"Forbidden"}"#);
    let (head, body) = request(addr, path, "X-Api-Key: secret\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.starts_with("0{\"sid\""), "{body}");
    // A WebSocket handshake is checked too: refused before any upgrade.
    let ws = "/socket.io/?EIO=4&transport=websocket";
    let (head, _) = request(addr, ws, WS).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    let (head, _) = request(addr, ws, &format!("{WS}X-Api-Key: secret\r\n")).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
}

#[tokio::test]
async fn the_cookie_carries_the_session_id() {
    let addr = start(EngineConfig {
        cookie: Some(Cookie {
            name: "sticky".into(),
            same_site: Some(SameSite::Strict),
            secure: true,
            ..Cookie::default()
        }),
        ..EngineConfig::default()
    })
    .await;
    let (head, body) = request(addr, "/socket.io/?EIO=4&transport=polling", "").await;
    let sid: serde_json::Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
    let sid = sid["sid"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        head.contains(&format!(
            "set-cookie: sticky={sid}; path=/; httponly; secure; samesite=strict"
        )),
        "{head}"
    );
    // A direct WebSocket session: the 101 carries the cookie of the id it gets.
    let (head, _) = request(addr, "/socket.io/?EIO=4&transport=websocket", WS).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("set-cookie: sticky="), "{head}");

    // Without the option there is no cookie (the reference's default).
    let plain = start(EngineConfig::default()).await;
    let (head, _) = request(plain, "/socket.io/?EIO=4&transport=polling", "").await;
    assert!(!head.contains("set-cookie"), "{head}");
}

#[tokio::test]
async fn cors_answers_vary_by_origin() {
    let addr = start(EngineConfig {
        cors: Some(tether_engine::Cors {
            origins: vec!["http://app.example".into()],
            credentials: true,
        }),
        ..EngineConfig::default()
    })
    .await;
    let path = "/socket.io/?EIO=4&transport=polling";
    let (head, _) = request(addr, path, "Origin: http://app.example\r\n").await;
    assert!(
        head.contains("access-control-allow-origin: http://app.example"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );
    assert!(head.contains("vary: origin"), "{head}");
    let (head, _) = request(addr, path, "Origin: http://evil.example\r\n").await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    assert!(head.contains("vary: origin"), "{head}");
    // Without CORS configured, nothing changes.
    let plain = start(EngineConfig::default()).await;
    let (head, _) = request(plain, path, "Origin: http://app.example\r\n").await;
    assert!(!head.contains("vary"), "{head}");
}
