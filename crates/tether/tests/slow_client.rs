//! A client that stops reading: its outbox overflows, the server closes its connection as
//! a recoverable "send buffer full" disconnect (never a silent drop), and on reconnect the
//! client recovers and receives every event, once and in order.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether::{
    AckSender, DisconnectReason, EngineConfig, Payload, RecoveryConfig, Server, ServerConfig,
    SocketRef,
};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(t) = msg {
            if t.as_str() == "2" {
                ws.send(Message::text("3")).await.expect("pong");
                continue;
            }
            return t.as_str().to_owned();
        }
    }
}

async fn open(addr: std::net::SocketAddr, connect: &str) -> (Ws, Value) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text(connect.to_owned()))
        .await
        .expect("send");
    let reply = next_text(&mut ws).await;
    let data = reply.strip_prefix("40").expect("CONNECT reply");
    (ws, serde_json::from_str(data).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_as_recoverable_and_gets_the_rest() {
    let io = Server::new(ServerConfig {
        engine: EngineConfig {
            max_buffered_packets: 16,
            ..EngineConfig::default()
        },
        recovery: Some(RecoveryConfig::default()),
        ..ServerConfig::default()
    });
    let reasons: Arc<Mutex<Vec<DisconnectReason>>> = Arc::default();
    let seen = reasons.clone();
    let emitted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = emitted.clone();
    io.of("/").on_connection(move |socket: SocketRef| {
        let seen = seen.clone();
        let counter = counter.clone();
        socket.on_disconnect(move |_: SocketRef, reason: DisconnectReason| {
            seen.lock().unwrap().push(reason)
        });
        socket.on(
            "flood",
            move |socket: SocketRef, p: Payload, _ack: Option<AckSender>| {
                let n = p.get::<u64>(0).unwrap_or(0);
                let socket = socket.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let pad = "x".repeat(64 * 1024);
                    for i in 0..n {
                        socket.emit("big", json!([i, pad])).unwrap();
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                });
            },
        );
    });
    let listener = tether::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = io.clone();
    tokio::spawn(async move {
        server
            .serve_with_shutdown(listener, std::future::pending())
            .await
    });

    let (mut ws, reply) = open(addr, "40").await;
    let sid = reply["sid"].as_str().unwrap().to_owned();
    let pid = reply["pid"].as_str().unwrap().to_owned();
    const N: u64 = 300; // 300 × 64 KiB ≈ 19 MiB, far beyond the socket buffers
    ws.send(Message::text(format!("42[\"flood\",{N}]")))
        .await
        .unwrap();
    // Stop reading. The server must close the connection as recoverable.
    let mut waited = 0;
    while reasons.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 50;
        assert!(waited < 10_000, "the slow client was never disconnected");
    }
    let reason = reasons.lock().unwrap()[0];
    assert_eq!(reason, DisconnectReason::SendBufferFull);
    assert!(reason.is_recoverable());
    assert_eq!(reason.as_str(), "send buffer full");
    // Wait until every event is emitted (the log keeps them for the session): an event
    // emitted after the recovery would go live into an outbox of 16 behind the replay, and
    // close the connection again.
    let mut waited = 0;
    while emitted.load(std::sync::atomic::Ordering::SeqCst) < N {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 20;
        assert!(waited < 30_000, "the flood never finished");
    }
    drop(ws);

    // Reconnect with the pid and no offset (it never read one): everything comes back.
    let (mut ws, reply) = open(addr, &format!("40{{\"pid\":\"{pid}\"}}")).await;
    assert_eq!(reply["sid"], sid.as_str(), "same socket id");
    assert_eq!(reply["pid"], pid.as_str(), "same pid: recovered");
    let mut last_offset = String::new();
    for i in 0..N {
        let text = next_text(&mut ws).await;
        let data: Value = serde_json::from_str(text.strip_prefix("42").expect("event")).unwrap();
        assert_eq!(data[0], "big");
        assert_eq!(data[1][0], i, "in order, none missing");
        let offset = data[2].as_str().expect("offset").to_owned();
        assert_ne!(offset, last_offset);
        last_offset = offset;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_emits_to_a_slow_client_are_dropped_without_closing_it() {
    let io = Server::new(ServerConfig {
        engine: EngineConfig {
            max_buffered_packets: 16,
            ..EngineConfig::default()
        },
        ..ServerConfig::default()
    });
    let reasons: Arc<Mutex<Vec<DisconnectReason>>> = Arc::default();
    let seen = reasons.clone();
    io.of("/").on_connection(move |socket: SocketRef| {
        let seen = seen.clone();
        socket.on_disconnect(move |_: SocketRef, reason: DisconnectReason| {
            seen.lock().unwrap().push(reason)
        });
        socket.on(
            "flood",
            |socket: SocketRef, _p: Payload, _ack: Option<AckSender>| {
                let ns = socket.namespace().clone();
                let socket = socket.clone();
                tokio::spawn(async move {
                    let pad = "v".repeat(64 * 1024);
                    for i in 0..300 {
                        let _ = ns.volatile().emit("v", json!([i, pad]));
                        tokio::task::yield_now().await;
                    }
                    drop(socket);
                });
            },
        );
        socket.on(
            "ping",
            |_socket: SocketRef, _p: Payload, ack: Option<AckSender>| {
                if let Some(ack) = ack {
                    let _ = ack.send("pong");
                }
            },
        );
    });
    let listener = tether::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = io.clone();
    tokio::spawn(async move {
        server
            .serve_with_shutdown(listener, std::future::pending())
            .await
    });
    let (mut ws, _) = open(addr, "40").await;
    ws.send(Message::text("42[\"flood\"]")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        reasons.lock().unwrap().is_empty(),
        "volatile emits never close a session"
    );
    // Reading again: some volatile events were dropped, and the session still answers.
    let mut volatile = 0;
    ws.send(Message::text("421[\"ping\"]")).await.unwrap();
    loop {
        let text = next_text(&mut ws).await;
        if text == "431[\"pong\"]" {
            break;
        }
        assert!(
            text.starts_with("42[\"v\","),
            "{}",
            &text[..20.min(text.len())]
        );
        volatile += 1;
    }
    assert!(
        volatile < 300,
        "some volatile events were dropped ({volatile} arrived)"
    );
    assert!(reasons.lock().unwrap().is_empty());
}
