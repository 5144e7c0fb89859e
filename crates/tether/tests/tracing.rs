//! Per-socket spans: a subscriber that records every event with the `sid` of its socket
//! span sees a socket's whole life under one sid, its recovery included, and never the
//! full pid.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether::{RecoveryConfig, Server, ServerConfig};
use tokio_tungstenite::tungstenite::Message;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The fields of a span or an event, as strings.
#[derive(Default, Clone, Debug)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// One recorded event: its message, its fields, and the fields of its `socket` span.
#[derive(Debug, Clone)]
struct Record {
    message: String,
    socket: Option<Fields>,
}

#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<Fields>>>,
    events: Arc<Mutex<Vec<Record>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if attrs.metadata().name() == "socket" {
            self.spans.lock().unwrap().push(f.clone());
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(f);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let socket = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find(|s| s.name() == "socket")
                .and_then(|s| s.extensions().get::<Fields>().cloned())
        });
        self.events.lock().unwrap().push(Record {
            message: f.0.get("message").cloned().unwrap_or_default(),
            socket,
        });
    }
}

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

async fn connect(addr: std::net::SocketAddr, auth: Value) -> (Ws, Value) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    let reply = next_text(&mut ws).await;
    let json = serde_json::from_str(reply.strip_prefix("40").expect("CONNECT reply")).unwrap();
    (ws, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sid_shows_a_sockets_whole_life_recovery_included() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(capture.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let io = Server::new(ServerConfig {
        recovery: Some(RecoveryConfig::default()),
        ..ServerConfig::default()
    });
    io.of("/")
        .use_middleware(|_socket: tether::SocketRef| async move {
            tracing::info!("middleware ran");
            Ok(())
        });
    io.of("/").on_connection(|socket: tether::SocketRef| {
        tracing::info!("connection handler ran");
        socket.on("hello", |ack: Option<tether::AckSender>| {
            tracing::info!("hello handled");
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        });
        socket.on_disconnect(|_socket: tether::SocketRef| tracing::info!("disconnect handler ran"));
    });
    let listener = tether::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = io.clone();
    tokio::spawn(async move {
        server
            .serve_with_shutdown(listener, std::future::pending())
            .await
    });

    let (mut a, session) = connect(addr, json!({})).await;
    let sid = session["sid"].as_str().unwrap().to_owned();
    let pid = session["pid"].as_str().unwrap().to_owned();
    a.send(Message::text("420[\"hello\"]")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "430[]");
    drop(a); // an abrupt close: recoverable
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut b, restored) = connect(addr, json!({ "pid": pid })).await;
    assert_eq!(restored["sid"], sid.as_str());
    b.send(Message::text("421[\"hello\"]")).await.unwrap();
    assert_eq!(next_text(&mut b).await, "431[]");
    // Another socket, to check that its events are not under the first sid.
    let (_c, other) = connect(addr, json!({})).await;
    assert_ne!(other["sid"], sid.as_str());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let events = capture.events.lock().unwrap().clone();
    let of_sid: Vec<&str> = events
        .iter()
        .filter(|e| e.socket.as_ref().and_then(|s| s.0.get("sid")) == Some(&sid))
        .map(|e| e.message.as_str())
        .collect();
    let expected = [
        "middleware ran",
        "connection handler ran",
        "connected",
        "hello handled",
        "disconnect handler ran",
        "disconnected",
        // The recovered socket: the same sid (middlewares are skipped by default).
        "connection handler ran",
        "connected",
        "hello handled",
    ];
    assert_eq!(of_sid, expected, "all events: {events:#?}");

    let spans = capture.spans.lock().unwrap().clone();
    let mine: Vec<&Fields> = spans
        .iter()
        .filter(|s| s.0.get("sid") == Some(&sid))
        .collect();
    assert_eq!(mine.len(), 2, "{spans:?}");
    assert_eq!(mine[0].0["recovered"], "false");
    assert_eq!(mine[1].0["recovered"], "true");
    for s in &mine {
        assert_eq!(s.0["nsp"], "/");
        assert_eq!(s.0["transport"], "websocket");
        assert_eq!(s.0["pid"], &pid[..4], "the pid, redacted");
    }
    let everything = format!("{spans:?} {events:?}");
    assert!(!everything.contains(&pid), "the full pid is never recorded");
}
