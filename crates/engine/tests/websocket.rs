//! The WebSocket framing as a strict peer sees it (RFC 6455), over real TCP with
//! hand-made frames: the accept key, fragmented messages, control frames between
//! fragments, pings, the close handshake, and the closes that protocol errors, invalid
//! UTF-8 and oversized messages earn.

use std::sync::Arc;
use std::time::Duration;

use tether_engine::{
    CloseReason, Engine, EngineConfig, EngineSocket, Handler, Message, TextMessage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Echoes text messages, answers a binary message with its length; reports closes.
struct Echo {
    closed: mpsc::UnboundedSender<CloseReason>,
}

impl Handler for Echo {
    type Conn = Arc<EngineSocket>;
    fn on_open(&self, socket: &Arc<EngineSocket>) -> Self::Conn {
        socket.clone()
    }
    fn on_message(&self, socket: &Self::Conn, msg: Message<'_>) {
        match msg {
            Message::Text(t) => {
                let _ = socket.send(TextMessage::new(t));
            }
            Message::Binary(b) => {
                let _ = socket.send(TextMessage::new(&format!("binary {}", b.len())));
            }
        }
    }
    fn on_close(&self, _socket: &Self::Conn, reason: CloseReason) {
        let _ = self.closed.send(reason);
    }
}

struct Server {
    addr: std::net::SocketAddr,
    closed: mpsc::UnboundedReceiver<CloseReason>,
}

async fn start(max_payload: usize) -> Server {
    let (tx, closed) = mpsc::unbounded_channel();
    let config = EngineConfig {
        max_payload,
        ping_interval: Duration::from_secs(60),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Echo { closed: tx });
    let listener = tether_engine::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(tether_engine::serve(listener, engine));
    Server { addr, closed }
}

/// A frame as the server sent it.
#[derive(Debug, PartialEq)]
struct Received {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl Received {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

struct Peer {
    stream: TcpStream,
}

impl Peer {
    /// Opens a WebSocket session and reads its open packet.
    async fn connect(server: &Server) -> Peer {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(
                b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nhost: x\r\n\
                  connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
                  sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
            .await
            .expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.expect("read head");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        // The example of RFC 6455, 1.3.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let mut peer = Peer { stream };
        let open = peer.read().await;
        assert_eq!(open.opcode, TEXT);
        assert!(open.payload.starts_with(b"0{"), "{open:?}");
        peer
    }

    /// Sends one frame, masked when `masked`.
    async fn send_raw(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xFFFF => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.expect("write frame");
    }

    async fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(fin, opcode, payload, true).await;
    }

    /// Reads one frame; the server's frames are never masked.
    async fn read(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.expect("frame head");
            assert_eq!(head[1] & 0x80, 0, "a server frame is masked");
            assert_eq!(head[0] & 0x70, 0, "reserved bits set");
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).await.expect("len");
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).await.expect("len");
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).expect("len")];
            self.stream.read_exact(&mut payload).await.expect("payload");
            Received {
                fin: head[0] & 0x80 != 0,
                opcode: head[0] & 0x0f,
                payload,
            }
        })
        .await
        .expect("no frame in time")
    }

    /// Asserts that the next frame is a close with `code` and that the server then
    /// ends the TCP connection.
    async fn expect_close(&mut self, code: u16) {
        let frame = self.read().await;
        assert_eq!(frame.close_code(), Some(code), "{frame:?}");
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server kept the connection open");
    }
}

async fn next_close(server: &mut Server) -> CloseReason {
    tokio::time::timeout(Duration::from_secs(5), server.closed.recv())
        .await
        .expect("no close in time")
        .expect("closed channel")
}

#[tokio::test]
async fn a_fragmented_text_message_is_reassembled() {
    let mut server = start(1_000_000).await;
    let mut peer = Peer::connect(&server).await;
    peer.send(false, TEXT, b"4he").await;
    peer.send(false, CONTINUATION, b"ll").await;
    // A control frame may come between fragments; it is answered at once.
    peer.send(true, PING, b"between").await;
    // A code point split across two fragments.
    peer.send(false, CONTINUATION, "o é".as_bytes().split_at(3).0)
        .await;
    peer.send(true, CONTINUATION, "o é".as_bytes().split_at(3).1)
        .await;
    let pong = peer.read().await;
    assert_eq!(
        pong,
        Received {
            fin: true,
            opcode: PONG,
            payload: b"between".to_vec()
        }
    );
    let echo = peer.read().await;
    assert_eq!(echo.opcode, TEXT);
    assert!(echo.fin);
    assert_eq!(String::from_utf8(echo.payload).expect("utf-8"), "4hello é");

    // Binary too, in three fragments.
    peer.send(false, BINARY, &[1, 2]).await;
    peer.send(false, CONTINUATION, &[3]).await;
    peer.send(true, CONTINUATION, &[4, 5]).await;
    assert_eq!(peer.read().await.payload, b"4binary 5");

    peer.send(true, CLOSE, &1000u16.to_be_bytes()).await;
    peer.expect_close(1000).await;
    assert_eq!(next_close(&mut server).await, CloseReason::TransportClose);
}

#[tokio::test]
async fn a_ping_is_answered_with_its_payload() {
    let server = start(1_000_000).await;
    let mut peer = Peer::connect(&server).await;
    peer.send(true, PING, b"abc").await;
    assert_eq!(
        peer.read().await,
        Received {
            fin: true,
            opcode: PONG,
            payload: b"abc".to_vec()
        }
    );
    // A pong from the client (unsolicited) is ignored.
    peer.send(true, PONG, b"x").await;
    peer.send(true, TEXT, b"4after").await;
    assert_eq!(peer.read().await.payload, b"4after");
}

#[tokio::test]
async fn the_close_handshake_echoes_the_code_and_ends_the_connection() {
    let mut server = start(1_000_000).await;
    let mut peer = Peer::connect(&server).await;
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    peer.send(true, CLOSE, &close).await;
    peer.expect_close(4001).await;
    assert_eq!(next_close(&mut server).await, CloseReason::TransportClose);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let mut server = start(1_000_000).await;
    let mut peer = Peer::connect(&server).await;
    peer.send(true, TEXT, &[b'4', 0xff, 0xfe]).await;
    peer.expect_close(1007).await;
    assert_eq!(next_close(&mut server).await, CloseReason::TransportError);

    // Also when the bad byte arrives in a later fragment.
    let mut peer = Peer::connect(&server).await;
    peer.send(false, TEXT, b"4ok").await;
    peer.send(true, CONTINUATION, &[0xc3, 0x28]).await;
    peer.expect_close(1007).await;
    assert_eq!(next_close(&mut server).await, CloseReason::TransportError);
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let mut server = start(1000).await;
    let mut peer = Peer::connect(&server).await;
    // Up to the limit it is served.
    let mut ok = b"4".to_vec();
    ok.resize(1000, b'a');
    peer.send(true, TEXT, &ok).await;
    assert_eq!(peer.read().await.payload, ok);
    // One frame over the limit.
    peer.send(true, TEXT, &vec![b'a'; 1001]).await;
    peer.expect_close(1009).await;
    assert_eq!(next_close(&mut server).await, CloseReason::TransportError);

    // Fragments each under the limit, together over it.
    let mut peer = Peer::connect(&server).await;
    peer.send(false, TEXT, &vec![b'a'; 600]).await;
    peer.send(true, CONTINUATION, &vec![b'a'; 600]).await;
    peer.expect_close(1009).await;
    assert_eq!(next_close(&mut server).await, CloseReason::TransportError);
}

#[tokio::test]
async fn protocol_errors_close_with_1002() {
    let mut server = start(1_000_000).await;
    // An unmasked client frame.
    let mut peer = Peer::connect(&server).await;
    peer.send_raw(true, TEXT, b"4x", false).await;
    peer.expect_close(1002).await;
    assert_eq!(next_close(&mut server).await, CloseReason::TransportError);

    // A continuation with nothing to continue, a fragmented control frame, a reserved
    // opcode, reserved bits.
    for (first, payload) in [
        (0x80 | CONTINUATION, &b"x"[..]),
        (PING, &b"x"[..]),
        (0x80 | 0x3, &b"x"[..]),
        (0x80 | 0x40 | TEXT, &b"4x"[..]),
    ] {
        let mut peer = Peer::connect(&server).await;
        peer.send(first & 0x80 != 0, first & 0x7f, payload).await;
        peer.expect_close(1002).await;
        assert_eq!(next_close(&mut server).await, CloseReason::TransportError);
    }
}

#[tokio::test]
async fn small_and_large_messages_keep_their_order() {
    let server = start(1_000_000).await;
    let mut peer = Peer::connect(&server).await;
    // Small answers are gathered before a write, large ones are written as they are:
    // in between, the order holds.
    let large = format!("4{}", "y".repeat(100_000));
    for _ in 0..3 {
        peer.send(true, TEXT, b"4a").await;
        peer.send(true, TEXT, large.as_bytes()).await;
        peer.send(true, TEXT, b"4b").await;
    }
    for _ in 0..3 {
        assert_eq!(peer.read().await.payload, b"4a");
        assert_eq!(peer.read().await.payload, large.as_bytes());
        assert_eq!(peer.read().await.payload, b"4b");
    }
}
