//! Limits against peers that misbehave, over real TCP: oversized and unfinished request
//! heads, idle connections, a polling client that never collects its answers, and a
//! WebSocket peer that never reads.

use std::sync::Arc;
use std::time::Duration;

use tether_engine::{
    CloseReason, Engine, EngineConfig, EngineSocket, Handler, Message, TextMessage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Echoes every text message; floods a WebSocket session that says `flood`. Reports
/// each close, and when a session's state is finally dropped (every task let go of it).
#[derive(Clone)]
struct Echo {
    closed: mpsc::UnboundedSender<CloseReason>,
    dropped: mpsc::UnboundedSender<()>,
}

struct Conn {
    socket: Arc<EngineSocket>,
    dropped: mpsc::UnboundedSender<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.dropped.send(());
    }
}

impl Handler for Echo {
    type Conn = Conn;
    fn on_open(&self, socket: &Arc<EngineSocket>) -> Conn {
        Conn {
            socket: socket.clone(),
            dropped: self.dropped.clone(),
        }
    }
    fn on_message(&self, conn: &Conn, msg: Message<'_>) {
        match msg {
            Message::Text("flood") => {
                let socket = conn.socket.clone();
                tokio::spawn(async move {
                    let chunk = TextMessage::new(&"x".repeat(64 * 1024));
                    while socket.send(chunk.clone()).is_ok() {
                        tokio::task::yield_now().await;
                    }
                });
            }
            Message::Text(t) => {
                let _ = conn.socket.send(TextMessage::new(t));
            }
            Message::Binary(_) => {}
        }
    }
    fn on_close(&self, _conn: &Conn, reason: CloseReason) {
        let _ = self.closed.send(reason);
    }
}

struct Server {
    addr: std::net::SocketAddr,
    closed: mpsc::UnboundedReceiver<CloseReason>,
    dropped: mpsc::UnboundedReceiver<()>,
}

async fn start(config: EngineConfig) -> Server {
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let engine = Engine::new(
        config,
        Echo {
            closed: closed_tx,
            dropped: dropped_tx,
        },
    );
    let listener = tether_engine::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(tether_engine::serve(listener, engine));
    Server {
        addr,
        closed,
        dropped,
    }
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_request_head_over_the_limit_gets_431() {
    let server = start(EngineConfig::default()).await;
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let big = "a".repeat(20 * 1024);
    let req = format!(
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Under the limit, the same request is served.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let small = "a".repeat(8 * 1024);
    let req = format!(
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: {small}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn unfinished_heads_and_idle_connections_are_closed() {
    let server = start(EngineConfig {
        header_read_timeout: Duration::from_millis(300),
        ..EngineConfig::default()
    })
    .await;
    // Slowloris: a head that never ends.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let t0 = std::time::Instant::now();
    read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(t0.elapsed() >= Duration::from_millis(250));

    // A connection that never sends anything.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    read_to_close(&mut s, Duration::from_secs(5)).await;

    // A keep-alive connection left idle after a request.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Opens a polling session over raw HTTP and returns its sid.
async fn open_polling(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await;
    let body = answer.split("\r\n\r\n").nth(1).expect("body");
    let open: serde_json::Value = serde_json::from_str(&body[1..]).expect("open packet");
    open["sid"].as_str().expect("sid").to_owned()
}

/// POSTs one polling body; returns the status code.
async fn post(addr: std::net::SocketAddr, sid: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body.as_bytes()).await.expect("write");
    let answer = read_to_close(&mut s, Duration::from_secs(10)).await;
    answer
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("status")
}

#[tokio::test]
async fn a_polling_client_that_never_collects_its_answers_is_bounded_in_bytes() {
    let mut server = start(EngineConfig::default()).await;
    let sid = open_polling(server.addr).await;
    // Each POST carries one 900 kB message that the server answers in full; the client
    // never polls. Without a byte budget the session would hold 4096 x 900 kB.
    let body = format!("4{}", "y".repeat(900_000));
    let mut accepted = 0;
    let mut refused = false;
    for _ in 0..40 {
        match post(server.addr, &sid, &body).await {
            200 => accepted += 1,
            400 => {
                refused = true;
                break;
            }
            other => panic!("status {other}"),
        }
    }
    assert!(refused, "the session never filled up ({accepted} accepted)");
    // 8 MiB of 900 kB answers.
    assert!((8..=10).contains(&accepted), "{accepted} accepted");
    let reason = tokio::time::timeout(Duration::from_secs(5), server.closed.recv())
        .await
        .expect("closed");
    assert_eq!(reason, Some(CloseReason::SendBufferFull));
    // Nobody collects the queue: it is freed once the close has waited for a poll.
    tokio::time::timeout(Duration::from_secs(10), server.dropped.recv())
        .await
        .expect("the session's state was freed");
}

#[tokio::test]
async fn a_websocket_peer_that_never_reads_loses_its_connection() {
    let mut server = start(EngineConfig {
        write_timeout: Duration::from_millis(500),
        ..EngineConfig::default()
    })
    .await;
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = s.connect(server.addr).await.expect("connect");
    s.write_all(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("write");
    // The Engine.IO message "4flood" as a masked text frame (client frames are masked).
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 6];
    frame.extend_from_slice(&mask);
    frame.extend(b"4flood".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.expect("write");
    // From now on the client reads nothing. The server's writes stall; its session
    // closes and every task lets go of it within the write timeout, even though the
    // peer never reads again.
    let reason = tokio::time::timeout(Duration::from_secs(10), server.closed.recv())
        .await
        .expect("the session closed");
    assert!(
        matches!(
            reason,
            Some(CloseReason::TransportError | CloseReason::SendBufferFull)
        ),
        "{reason:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), server.dropped.recv())
        .await
        .expect("the connection was dropped while its peer did not read");
    drop(s);
}
