//! Two Tether servers made one through the NATS backend, end to end over raw WebSocket
//! clients: a broadcast reaches the other node's client with a `"<seq>-0"` offset, and a
//! session disconnected from one node is recovered on the other, with what it missed.
//! Needs NATS with JetStream on 127.0.0.1:4222 (a failure otherwise, never a skip).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether::{RecoveryConfig, Server, ServerConfig};
use tether_nats::{NatsBackend, NatsConfig};
use tokio_tungstenite::tungstenite::Message;

const URL: &str = "nats://127.0.0.1:4222";

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
            let t = t.as_str().to_owned();
            if t != "2" {
                return t;
            }
            ws.send(Message::text("3")).await.unwrap();
        }
    }
}

async fn connect(addr: std::net::SocketAddr, auth: Value) -> (Ws, Value) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    let reply = next_text(&mut ws).await;
    let reply = serde_json::from_str(reply.strip_prefix("40").expect("CONNECT reply")).unwrap();
    (ws, reply)
}

/// `42[...]` as JSON.
fn event(text: &str) -> Value {
    serde_json::from_str(text.strip_prefix("42").expect("an event")).unwrap()
}

async fn node(uid: &str, config: &NatsConfig) -> (Server, std::net::SocketAddr) {
    let backend = NatsBackend::connect(URL, config.clone())
        .await
        .unwrap_or_else(|e| panic!("NATS with JetStream must run on 127.0.0.1:4222: {e}"));
    let server = ServerConfig {
        recovery: Some(RecoveryConfig::default()),
        ..ServerConfig::default()
    };
    let io = Server::join_cluster(server, uid.into(), Arc::new(backend), Default::default())
        .await
        .unwrap();
    io.of("/").set_recovery(Some(RecoveryConfig {
        skip_middlewares: true,
        ..RecoveryConfig::default()
    }));
    let listener = tether::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = io.clone();
    tokio::spawn(async move {
        serving
            .serve_with_shutdown(listener, std::future::pending())
            .await
    });
    (io, addr)
}

/// A stream, bucket and subjects of this test's own.
fn unique_config(tag: &str) -> NatsConfig {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let unique = format!("{tag}_{}_{nanos}", std::process::id());
    NatsConfig {
        stream: unique.clone(),
        bucket: unique.clone(),
        subject_prefix: unique,
        ..NatsConfig::default()
    }
}

/// Deletes what [`unique_config`] made.
async fn remove(config: &NatsConfig) {
    let client = async_nats::connect(URL).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(&config.stream).await;
    let _ = js.delete_key_value(&config.bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_cross_nodes_and_sessions_recover_on_another_node() {
    let config = unique_config("te");
    let (n1, a1) = node("n1", &config).await;
    let (n2, a2) = node("n2", &config).await;

    let (mut a, session) = connect(a1, json!({})).await;
    let pid = session["pid"].as_str().expect("a pid").to_owned();
    let _ = n2.of("/").emit("news", json!("one"));
    let got = event(&next_text(&mut a).await);
    assert_eq!(got[0], "news");
    assert_eq!(got[1], "one");
    let offset = got[2].as_str().expect("an offset").to_owned();
    assert!(
        offset.ends_with("-0") && offset.len() > 2,
        "offsets are stream sequences: {offset}"
    );

    // An abrupt close keeps the session; n2 broadcasts what the client misses; the client
    // comes back on n2, which takes the session that n1 kept.
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    n1.cluster().expect("a cluster").flush().await;
    let _ = n2.of("/").emit("news", json!("two"));
    n2.cluster().expect("a cluster").flush().await;
    let (mut b, reply) = connect(a2, json!({"pid": pid, "offset": offset})).await;
    assert_eq!(
        reply["pid"],
        json!(pid),
        "the session is recovered: {reply}"
    );
    let got = event(&next_text(&mut b).await);
    assert_eq!(
        (got[0].clone(), got[1].clone()),
        (json!("news"), json!("two"))
    );

    // Requests between nodes: n1 sees the socket on n2.
    let sockets = n1.of("/").operator().fetch_sockets().await.unwrap();
    assert_eq!(sockets.len(), 1);

    remove(&config).await;
}

/// A live record holds only a session that a disconnect would keep: once `socket.data`
/// grows past `max_session_bytes` the record goes (a crash of the node would otherwise
/// restore it), and it comes back once the data fits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_record_holds_no_session_over_max_session_bytes() {
    use tether::extract::Data;
    use tether::SocketRef;
    use tether_backend::{SessionBackend, TakeOutcome};

    let config = unique_config("tl");
    let (io, addr) = node("n1", &config).await;
    io.of("/").set_recovery(Some(RecoveryConfig {
        max_session_bytes: 2_000,
        ..RecoveryConfig::default()
    }));
    io.of("/").on_connection(|socket: SocketRef| {
        socket.on("data", |socket: SocketRef, Data(n): Data<usize>| {
            socket.set_data(json!("x".repeat(n)));
            let _ = socket.emit("done", n);
        });
    });
    let backend = NatsBackend::connect(URL, config.clone()).await.unwrap();
    let (mut ws, reply) = connect(addr, json!({})).await;
    let pid = reply["pid"].as_str().expect("a pid").to_owned();
    for (n, want) in [
        (100, TakeOutcome::HolderAlive("n1".into())),
        (5_000, TakeOutcome::NotFound),
        (100, TakeOutcome::HolderAlive("n1".into())),
    ] {
        ws.send(Message::text(format!("42[\"data\",{n}]")))
            .await
            .unwrap();
        let done = event(&next_text(&mut ws).await);
        assert_eq!((&done[0], &done[1]), (&json!("done"), &json!(n)));
        // The record is written in the background: wait for it (5 s at most).
        let mut found = None;
        for _ in 0..50 {
            let got = backend.take_session("/", &pid, None).await.unwrap();
            if got == want {
                found = None;
                break;
            }
            found = Some(got);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(found, None, "{n} bytes of data: want {want:?}");
    }

    remove(&config).await;
}
