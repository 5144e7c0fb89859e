//! Recovery behaviours beyond the reference, end to end over a raw WebSocket client:
//! middlewares before replay, eviction failing cleanly, metrics.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether::extract::Data;
use tether::{AckSender, ConnectError, Payload, RecoveryConfig, Server, ServerConfig, SocketRef};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no error");
        if let Message::Text(t) = msg {
            return t.as_str().to_owned();
        }
    }
}

async fn ws(addr: std::net::SocketAddr) -> Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws
}

async fn connect(addr: std::net::SocketAddr, auth: Value) -> (Ws, String) {
    let mut w = ws(addr).await;
    w.send(Message::text(format!("40{auth}"))).await.unwrap();
    let reply = next_text(&mut w).await;
    (w, reply)
}

fn start(io: &Server) -> std::net::SocketAddr {
    let listener = tether::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let io = io.clone();
    tokio::spawn(async move {
        io.serve_with_shutdown(listener, std::future::pending())
            .await
    });
    addr
}

fn server(recovery: RecoveryConfig) -> Server {
    let io = Server::new(ServerConfig {
        recovery: Some(recovery),
        ..ServerConfig::default()
    });
    io.of("/")
        .use_middleware(|Data(auth): Data<Option<Value>>| async move {
            if auth.and_then(|a| a.get("deny").cloned()) == Some(json!(true)) {
                Err(ConnectError::new("denied"))
            } else {
                Ok(())
            }
        });
    io.of("/").on_connection(|socket: SocketRef| {
        socket.on(
            "join",
            |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                socket.join(p.get::<String>(0).unwrap_or_default());
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            },
        );
        socket.on(
            "data",
            |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                socket.set_data(p.args.first().cloned().unwrap_or_default());
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            },
        );
        socket.on(
            "say",
            |socket: SocketRef, p: Payload, ack: Option<AckSender>| {
                let _ = socket.namespace().to("r").emit("said", p);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            },
        );
    });
    io
}

fn reply_json(reply: &str) -> Value {
    serde_json::from_str(reply.strip_prefix("40").expect("CONNECT reply")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_middlewares_on_nothing_is_replayed_before_they_accept() {
    let io = server(RecoveryConfig {
        skip_middlewares: false,
        ..RecoveryConfig::default()
    });
    let addr = start(&io);
    let (mut a, reply) = connect(addr, json!({})).await;
    let session = reply_json(&reply);
    a.send(Message::text("420[\"join\",\"r\"]")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "430[]");
    drop(a); // an abrupt close: recoverable
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut b, _) = connect(addr, json!({})).await;
    b.send(Message::text("421[\"say\",\"missed\"]"))
        .await
        .unwrap();
    assert_eq!(next_text(&mut b).await, "431[]");

    // The middleware refuses the recovery attempt: the answer is CONNECT_ERROR alone,
    // with no replayed event before it (the reference writes them first).
    let auth = json!({"pid": session["pid"], "deny": true});
    let (mut refused, first) = connect(addr, auth).await;
    assert_eq!(first, r#"44{"message":"denied"}"#);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), refused.next())
            .await
            .is_err(),
        "nothing after the CONNECT_ERROR"
    );
    // A refused attempt consumed nothing: the next one recovers, and the middleware ran.
    let (mut ok, reply) = connect(addr, json!({"pid": session["pid"]})).await;
    assert_eq!(reply_json(&reply)["sid"], session["sid"]);
    let replayed = next_text(&mut ok).await;
    assert!(
        replayed.starts_with("42[\"said\",\"missed\",\""),
        "{replayed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_packet_fails_recovery_cleanly_and_metrics_count_it() {
    let io = server(RecoveryConfig {
        max_log_bytes: 4_096,
        ..RecoveryConfig::default()
    });
    let addr = start(&io);
    let (mut a, reply) = connect(addr, json!({})).await;
    let session = reply_json(&reply);
    a.send(Message::text("420[\"join\",\"r\"]")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "430[]");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut b, _) = connect(addr, json!({})).await;
    // ~20 KiB of events to a room the dropped socket is in: beyond the 4 KiB budget.
    for i in 0..20 {
        let pad = "y".repeat(1000);
        b.send(Message::text(format!("42{i}[\"say\",\"{pad}\"]")))
            .await
            .unwrap();
        assert_eq!(next_text(&mut b).await, format!("43{i}[]"));
    }
    // No silent gap: a new session (different sid), recovered false.
    let (_c, reply) = connect(addr, json!({"pid": session["pid"]})).await;
    let fresh = reply_json(&reply);
    assert_ne!(fresh["sid"], session["sid"]);
    assert_ne!(fresh["pid"], session["pid"]);
    let m = io.of("/").recovery_metrics().unwrap();
    assert_eq!(m.failed_evicted, 1);
    assert_eq!(m.sessions_recovered, 0);
    assert!(m.log_bytes.unwrap() <= 4_096);
    let text = io.metrics_text();
    assert!(
        text.contains("tether_recovery_failed_total{nsp=\"/\",reason=\"evicted\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_its_byte_budget_is_not_kept_and_its_attempt_fails_cleanly() {
    let io = server(RecoveryConfig {
        max_session_bytes: 2_000,
        ..RecoveryConfig::default()
    });
    let addr = start(&io);
    let mut sessions = Vec::new();
    for size in [3_000, 100] {
        let (mut a, reply) = connect(addr, json!({})).await;
        let pad = "x".repeat(size);
        a.send(Message::text(format!(
            "420[\"data\",{{\"pad\":\"{pad}\"}}]"
        )))
        .await
        .unwrap();
        assert_eq!(next_text(&mut a).await, "430[]");
        drop(a);
        sessions.push(reply_json(&reply));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The large one: not kept, so its attempt gets a new session.
    let (_b, reply) = connect(addr, json!({"pid": sessions[0]["pid"]})).await;
    assert_ne!(reply_json(&reply)["sid"], sessions[0]["sid"]);
    // The small one: kept and recovered.
    let (_c, reply) = connect(addr, json!({"pid": sessions[1]["pid"]})).await;
    assert_eq!(reply_json(&reply)["sid"], sessions[1]["sid"]);
    let m = io.of("/").recovery_metrics().unwrap();
    assert_eq!((m.sessions_not_kept, m.sessions_kept), (1, 1));
    assert_eq!(m.failed_unknown_session, 1);
    let text = io.metrics_text();
    assert!(
        text.contains("tether_recovery_sessions_not_kept_total{nsp=\"/\",reason=\"too_large\"} 1"),
        "{text}"
    );
}
