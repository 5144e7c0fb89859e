//! A handler that waits never stalls its connection: one socket's handler sleeps far
//! longer than pingInterval + pingTimeout while the same client keeps answering pings
//! and emitting, and other clients keep emitting with acks. Nobody is disconnected, and
//! every other ack stays fast. Also: a socket's handlers start in the order their packets
//! arrived.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Client;
use serde_json::{json, Value};
use tether::extract::{AckSender, Data};
use tether::{DisconnectReason, EngineConfig, Server, ServerConfig, SocketRef};

/// pingInterval + pingTimeout = 500 ms; the slow handler sleeps six times that.
const PING_INTERVAL: Duration = Duration::from_millis(300);
const PING_TIMEOUT: Duration = Duration::from_millis(200);
const SLEEP: Duration = Duration::from_secs(3);

async fn server(io: &Server) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let io = io.clone();
    tokio::spawn(async move {
        io.serve_with_shutdown(listener, std::future::pending())
            .await
    });
    addr
}

fn config() -> ServerConfig {
    ServerConfig {
        engine: EngineConfig {
            ping_interval: PING_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            ..EngineConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// Emits `echo` with an ack every 50 ms until `until`; the slowest ack's latency.
async fn echo_loop(client: &mut Client, first_id: u64, until: Instant) -> (Duration, u64) {
    let mut worst = Duration::ZERO;
    let mut id = first_id;
    let mut n = 0;
    while Instant::now() < until {
        let t = Instant::now();
        client.send(&format!("42{id}[\"echo\",{id}]"));
        assert_eq!(client.ack(id).await, json!([id]));
        worst = worst.max(t.elapsed());
        id += 1;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (worst, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_handler_stalls_nobody() {
    let io = Server::new(config());
    let disconnects: Arc<Mutex<Vec<DisconnectReason>>> = Arc::default();
    let seen = disconnects.clone();
    io.of("/").on_connection(move |socket: SocketRef| {
        let seen = seen.clone();
        socket.on_disconnect(move |reason: DisconnectReason| seen.lock().unwrap().push(reason));
        socket.on("sleep", |ack: AckSender| async move {
            tokio::time::sleep(SLEEP).await;
            let _ = ack.send("slept");
        });
        socket.on("echo", |Data(n): Data<u64>, ack: AckSender| {
            let _ = ack.send(n);
        });
    });
    let addr = server(&io).await;

    let mut sleeper = Client::connect(addr, "").await;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(Client::connect(addr, "").await);
    }

    let start = Instant::now();
    sleeper.send("421[\"sleep\"]");
    let until = start + SLEEP + Duration::from_millis(300);
    // The sleeper keeps emitting too: its own later events are not held up either.
    let own = tokio::spawn(async move {
        let r = echo_loop(&mut sleeper, 2, until).await;
        (sleeper, r)
    });
    let mut loops = Vec::new();
    for mut c in others {
        loops.push(tokio::spawn(async move {
            let r = echo_loop(&mut c, 1, until).await;
            (c, r)
        }));
    }
    let (mut sleeper, (own_worst, own_n)) = own.await.unwrap();
    let mut clients = vec![];
    for l in loops {
        let (c, (worst, n)) = l.await.unwrap();
        assert!(n >= 20, "{n} echoes in {SLEEP:?}");
        assert!(
            worst < Duration::from_millis(500),
            "another socket's ack took {worst:?}"
        );
        clients.push(c);
    }
    assert!(own_n >= 20, "{own_n} echoes from the sleeper");
    assert!(
        own_worst < Duration::from_millis(500),
        "the sleeper's own later ack took {own_worst:?}"
    );

    // The sleeping handler's answer comes once it is done, on the same connection.
    assert_eq!(sleeper.ack(1).await, json!(["slept"]));
    assert!(start.elapsed() >= SLEEP);

    // More than six ping timeouts later, everyone is still there.
    assert!(disconnects.lock().unwrap().is_empty(), "{disconnects:?}");
    assert_eq!(io.connection_count(), 3);
    assert_eq!(io.of("/").sockets().len(), 3);
    sleeper.send("423[\"echo\",3]");
    assert_eq!(sleeper.ack(3).await, json!([3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_start_in_arrival_order_and_finish_concurrently() {
    let io = Server::new(config());
    let started: Arc<Mutex<Vec<u64>>> = Arc::default();
    let finished: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (s, f) = (started.clone(), finished.clone());
    io.of("/").on_connection(move |socket: SocketRef| {
        let (s, f) = (s.clone(), f.clone());
        // Async: records its start before its first await, then waits longer for earlier
        // packets, so they finish in the reverse order.
        socket.on("task", move |Data(i): Data<u64>, ack: AckSender| {
            s.lock().unwrap().push(i);
            let f = f.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50 * (10 - i))).await;
                f.lock().unwrap().push(i);
                let _ = ack.send(i);
            }
        });
    });
    let addr = server(&io).await;
    let mut c = Client::connect(addr, "").await;
    for i in 0..10 {
        c.send(&format!("42{i}[\"task\",{i}]"));
    }
    let mut acks = Vec::new();
    for _ in 0..10 {
        let m = c.next().await;
        let rest = m.strip_prefix("43").unwrap();
        let open = rest.find('[').unwrap();
        let v: Value = serde_json::from_str(&rest[open..]).unwrap();
        acks.push(v[0].as_u64().unwrap());
    }
    assert_eq!(*started.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(*finished.lock().unwrap(), (0..10).rev().collect::<Vec<_>>());
    assert_eq!(acks, (0..10).rev().collect::<Vec<_>>());
}
