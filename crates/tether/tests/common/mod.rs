//! A raw Socket.IO client over tokio-tungstenite for the end-to-end tests: a reader task
//! answers the server's pings (so heartbeats only depend on the server) and hands every
//! other message over a channel.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// One raw client.
pub struct Client {
    tx: mpsc::UnboundedSender<Message>,
    rx: mpsc::UnboundedReceiver<String>,
    /// The socket id of the CONNECT reply (or the whole CONNECT_ERROR packet, `44...`).
    pub sid: String,
    /// Messages skipped by [`ack`](Self::ack), oldest first.
    pub skipped: Vec<String>,
    /// The client's end of the TCP connection.
    pub local: SocketAddr,
}

impl Client {
    /// Opens a WebSocket session and connects to `/` with `auth` (a JSON text or "").
    pub async fn connect(addr: SocketAddr, auth: &str) -> Client {
        Self::connect_url(
            &format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
            auth,
        )
        .await
    }

    /// Like [`connect`](Self::connect), to a full URL.
    pub async fn connect_url(url: &str, auth: &str) -> Client {
        Self::connect_with(url, &[], auth).await
    }

    /// Like [`connect_url`](Self::connect_url), with extra request headers.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)], auth: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut req = url.into_client_request().expect("request");
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let local = match ws.get_ref() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().expect("local addr"),
            _ => unreachable!("plain TCP only"),
        };
        let (mut sink, mut stream) = ws.split();
        let (tx, mut out) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = out.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let (in_tx, rx) = mpsc::unbounded_channel();
        let pong = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Text(t) = msg {
                    if t.as_str() == "2" {
                        let _ = pong.send(Message::text("3"));
                        continue;
                    }
                    if in_tx.send(t.as_str().to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        let mut c = Client {
            tx,
            rx,
            sid: String::new(),
            skipped: Vec::new(),
            local,
        };
        assert!(c.next().await.starts_with("0{"), "Engine.IO open");
        c.send(&format!("40{auth}"));
        let reply = c.next().await;
        if reply.starts_with("44") {
            c.sid = reply;
            return c;
        }
        let data = reply
            .strip_prefix("40")
            .unwrap_or_else(|| panic!("CONNECT reply, got {reply}"));
        let v: Value = serde_json::from_str(data).expect("json");
        c.sid = v["sid"].as_str().expect("sid").to_owned();
        c
    }

    /// Sends a raw Engine.IO text message, such as `42["ev"]`.
    pub fn send(&self, text: &str) {
        self.tx
            .send(Message::text(text.to_owned()))
            .expect("writer");
    }

    /// Closes the WebSocket (a close frame: the server sees a transport close).
    pub fn close(&self) {
        let _ = self.tx.send(Message::Close(None));
    }

    /// Sends a binary frame (an attachment).
    pub fn send_binary(&self, bytes: Vec<u8>) {
        self.tx.send(Message::binary(bytes)).expect("writer");
    }

    /// The next message that is not a ping, within 10 s.
    pub async fn next(&mut self) -> String {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a message in time")
    }

    /// Whether the server closed the connection within `d` (every message until then is
    /// dropped).
    pub async fn closed_within(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// The next message within `d`, or `None`.
    pub async fn next_within(&mut self, d: Duration) -> Option<String> {
        tokio::time::timeout(d, self.rx.recv()).await.ok().flatten()
    }

    /// Waits for the ACK with this id and returns its args; other messages are kept in
    /// [`skipped`](Self::skipped), where a later call looks first.
    pub async fn ack(&mut self, id: u64) -> Value {
        let prefix = format!("43{id}[");
        let parse = |rest: &str| serde_json::from_str(&format!("[{rest}")).expect("ack json");
        if let Some(i) = self.skipped.iter().position(|m| m.starts_with(&prefix)) {
            let m = self.skipped.remove(i);
            return parse(&m[prefix.len()..]);
        }
        loop {
            let m = self.next().await;
            if let Some(rest) = m.strip_prefix(&prefix) {
                return parse(rest);
            }
            self.skipped.push(m);
        }
    }
}
