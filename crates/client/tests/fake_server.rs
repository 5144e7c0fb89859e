//! Tests against small fake servers written here: servers that speak another protocol
//! version, or that stop sending pings.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tether_client::{ClientBuilder, DisconnectReason, Lifecycle, Reconnection, Transport};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const HANDSHAKE: &str =
    r#"0{"sid":"fake","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#;

/// An HTTP server that answers every request with the same status and body.
async fn http_server(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=UTF-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_engine_io_v3_server_is_a_protocol_version_error() {
    let url = http_server(
        "200 OK",
        r#"96:0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}2:40"#,
    )
    .await;
    let e = ClientBuilder::new(url)
        .transports([Transport::Polling])
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_protocol_version(), "{e:?}");
}

#[tokio::test]
async fn unsupported_protocol_version_answers_are_recognised() {
    let url = http_server(
        "400 Bad Request",
        r#"{"code":5,"message":"Unsupported protocol version"}"#,
    )
    .await;
    for transports in [vec![Transport::Polling], vec![Transport::Websocket]] {
        let e = ClientBuilder::new(&url)
            .transports(transports.clone())
            .connect()
            .await
            .unwrap_err();
        assert!(e.is_protocol_version(), "{transports:?}: {e:?}");
        assert!(e.to_string().contains("Unsupported protocol version"));
    }
    // Any other refusal is an HTTP error.
    let url = http_server("403 Forbidden", r#"{"code":4,"message":"Forbidden"}"#).await;
    let e = ClientBuilder::new(&url).connect().await.unwrap_err();
    assert!(
        matches!(e, tether_client::Error::Http { status: 403, .. }),
        "{e:?}"
    );
}

/// A WebSocket-only fake Engine.IO server; `script` runs each accepted connection after
/// the handshake was sent.
async fn ws_server<F, Fut>(script: F) -> String
where
    F: Fn(tokio_tungstenite::WebSocketStream<TcpStream>, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = std::sync::Arc::new(script);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((s, _)) = listener.accept().await {
            let script = script.clone();
            let i = n;
            n += 1;
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                ws.send(Message::text(HANDSHAKE)).await.unwrap();
                script(ws, i).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn next_text(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Option<String> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn a_socket_io_v2_connect_reply_is_a_protocol_version_error() {
    let url = ws_server(|mut ws, _| async move {
        if next_text(&mut ws).await.as_deref() == Some("40") {
            // Socket.IO v2 servers answer a CONNECT without data.
            let _ = ws.send(Message::text("40")).await;
        }
        let _ = next_text(&mut ws).await;
    })
    .await;
    let e = ClientBuilder::new(url)
        .transports([Transport::Websocket])
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_protocol_version(), "{e:?}");
}

#[tokio::test]
async fn pings_are_answered_and_a_silent_server_is_left() {
    let (pong_tx, mut pongs) = mpsc::unbounded_channel();
    let url = ws_server(move |mut ws, i| {
        let pong_tx = pong_tx.clone();
        async move {
            assert_eq!(next_text(&mut ws).await.as_deref(), Some("40"));
            ws.send(Message::text(format!(r#"40{{"sid":"s{i}"}}"#)))
                .await
                .unwrap();
            // One ping, which must be answered; then silence.
            ws.send(Message::text("2")).await.unwrap();
            let pong = next_text(&mut ws).await;
            let _ = pong_tx.send(pong);
            while next_text(&mut ws).await.is_some() {}
        }
    })
    .await;
    let (ltx, mut life) = mpsc::unbounded_channel();
    let c = ClientBuilder::new(url)
        .transports([Transport::Websocket])
        .reconnection(Reconnection::default().delay(Duration::from_millis(50)))
        .on_lifecycle(move |_c, l| {
            let _ = ltx.send(l);
        })
        .connect()
        .await
        .unwrap();
    assert_eq!(c.id().as_deref(), Some("s0"));
    assert_eq!(
        common::recv(&mut pongs, 5, "pong").await.as_deref(),
        Some("3")
    );
    assert!(matches!(
        common::recv(&mut life, 5, "first connect").await,
        Lifecycle::Connect { .. }
    ));
    let seen = common::recv_until(&mut life, 5, "reconnection", |l| {
        matches!(l, Lifecycle::Connect { .. })
    })
    .await;
    assert!(
        matches!(
            seen.as_slice(),
            [
                Lifecycle::Disconnect(DisconnectReason::PingTimeout),
                Lifecycle::ReconnectAttempt(1),
                Lifecycle::Reconnect(1),
                Lifecycle::Connect { recovered: false },
            ]
        ),
        "{seen:?}"
    );
    assert_eq!(c.id().as_deref(), Some("s1"));
    c.close().await;
}
