//! The Engine.IO v4 client: handshake, heartbeat, transports and the upgrade.
//!
//! One [`connect`](connection::connect) call opens one Engine.IO connection and spawns a task that owns it.
//! The Socket.IO layer talks to that task through an [`EngineHandle`](connection::EngineHandle) (outgoing messages)
//! and a channel of [`EngineEvent`]s (incoming messages, then one `Closed`).
//!
//! Polling: a loop of long-polling `GET`s feeds the task; outgoing packets are batched
//! into one `POST` at a time, within the server's `maxPayload`.
//! WebSocket: one text frame per text packet, one binary frame per binary message.
//! Upgrade: once a polling connection is open, a WebSocket with the same `sid` is opened
//! and probed (`2probe` → `3probe`); then polling is paused (the pending `GET` and `POST`
//! finish, the server ends the `GET` with a noop), `5` is sent over the WebSocket, and the
//! WebSocket carries everything from then on, starting with the packets queued meanwhile.
//!
//! The modules: this one holds what every part shares (the options, the handshake, the
//! events, the frames, cookies and error bodies); `polling` and `websocket` open and run
//! one transport each; `connection` is the task that owns one connection, drives its
//! transport and performs the upgrade. Nothing here imports its submodules; the rest of
//! the crate reaches [`connection::connect`] and [`connection::EngineHandle`] through
//! `connection`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::error::{Error, Result};
use crate::url::Endpoint;

pub(crate) mod connection;
mod polling;
mod websocket;

/// An Engine.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

impl Transport {
    /// The name used on the wire (`polling`, `websocket`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
        }
    }
}

/// Why an Engine.IO connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// No ping arrived within `pingInterval + pingTimeout`.
    PingTimeout,
    /// The server closed the connection (close packet, WebSocket close, end of stream).
    TransportClose,
    /// The network failed.
    TransportError(String),
    /// The server sent something that could not be decoded.
    ParseError(String),
    /// We closed it.
    ForcedClose,
}

/// What the connection settings say.
#[derive(Debug, Clone)]
pub(crate) struct EngineOptions {
    pub endpoint: Endpoint,
    pub headers: http::HeaderMap,
    pub transports: Vec<Transport>,
    pub upgrade: bool,
    /// The TLS configuration, for `https://` and `wss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The cookie jar of the connection, if on.
    pub cookies: Option<CookieJar>,
}

/// The cookies of one manager, kept across reconnections.
pub(crate) type CookieJar = Arc<std::sync::Mutex<cookie_store::CookieStore>>;

fn lock_jar(jar: &CookieJar) -> std::sync::MutexGuard<'_, cookie_store::CookieStore> {
    jar.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `Cookie` header for a request to `url` (`ws(s)://` is looked up as `http(s)://`).
fn cookie_header(jar: &CookieJar, url: &str) -> Option<http::HeaderValue> {
    let url = jar_url(url)?;
    let jar = lock_jar(jar);
    let mut s = String::new();
    for (k, v) in jar.get_request_values(&url) {
        if !s.is_empty() {
            s.push_str("; ");
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    if s.is_empty() {
        return None;
    }
    http::HeaderValue::from_str(&s).ok()
}

/// Keeps the `Set-Cookie`s of a response to `url`.
fn store_cookies(jar: &CookieJar, url: &str, headers: &http::HeaderMap) {
    let Some(url) = jar_url(url) else { return };
    let mut jar = lock_jar(jar);
    for v in headers.get_all(http::header::SET_COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        if let Err(e) = jar.parse(s, &url) {
            debug!("cookie not kept: {e}");
        }
    }
}

fn jar_url(url: &str) -> Option<url::Url> {
    let url = if let Some(rest) = url.strip_prefix("ws") {
        format!("http{rest}")
    } else {
        url.to_owned()
    };
    url::Url::parse(&url).ok()
}

/// The server's handshake (`0{"sid",...}`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Handshake {
    pub sid: String,
    pub upgrades: Vec<String>,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_payload: usize,
}

impl Handshake {
    /// Parses the data of an open packet.
    pub fn parse(data: &str) -> Result<Handshake> {
        let v: Value = serde_json::from_str(data)
            .map_err(|_| Error::Protocol(format!("invalid handshake {data:?}")))?;
        let field = |name: &str| {
            v.get(name)
                .ok_or_else(|| Error::Protocol(format!("handshake without {name:?}")))
        };
        let sid = field("sid")?
            .as_str()
            .ok_or_else(|| Error::Protocol("handshake sid is not a string".into()))?
            .to_owned();
        let ms = |name: &str| -> Result<Duration> {
            field(name)?
                .as_u64()
                .map(Duration::from_millis)
                .ok_or_else(|| Error::Protocol(format!("handshake {name:?} is not a number")))
        };
        let ping_interval = ms("pingInterval")?;
        let ping_timeout = ms("pingTimeout")?;
        let upgrades = v
            .get("upgrades")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        // maxPayload is new in v4; be lenient and fall back to the server default.
        let max_payload = v
            .get("maxPayload")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1_000_000);
        Ok(Handshake {
            sid,
            upgrades,
            ping_interval,
            ping_timeout,
            max_payload,
        })
    }
}

/// A message for or from the Socket.IO layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EngineEvent {
    /// A text message (the data of a `4` packet).
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// The connection now runs over WebSocket.
    Upgraded,
    /// The connection is closed; nothing follows.
    Closed(CloseReason),
}

/// Turns a failed HTTP response into an error, recognising Engine.IO's error bodies.
fn http_error(status: u16, body: &[u8]) -> Error {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v.get("code").and_then(Value::as_u64) == Some(5) {
            let msg = v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unsupported protocol version");
            return Error::ProtocolVersion(format!("{msg} (the client speaks Engine.IO v4)"));
        }
    }
    let text = String::from_utf8_lossy(body);
    let body: String = text.chars().take(200).collect();
    Error::Http { status, body }
}

/// Explains a handshake that is not an Engine.IO v4 open packet.
fn bad_handshake(body: &str) -> Error {
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && body.as_bytes().get(digits) == Some(&b':') {
        // Engine.IO v3 frames polling payloads as `<length>:<packet>`.
        return Error::ProtocolVersion(
            "the server answered with Engine.IO v3 framing (Socket.IO 2.x?); \
             the client speaks Engine.IO v4 (Socket.IO 3 and later)"
                .into(),
        );
    }
    let start: String = body.chars().take(100).collect();
    Error::Protocol(format!("expected an Engine.IO open packet, got {start:?}"))
}

/// Events from the transport tasks to the connection task.
#[derive(Debug)]
enum TEvent {
    PollBody(String),
    PollPaused,
    PollError(Error),
    PostDone(Result<()>),
    WsText(String),
    /// The data of a message packet (`4<data>`).
    WsMessage(String),
    WsBinary(Bytes),
    WsClosed,
    WsError(Error),
}

/// One queued outgoing Engine.IO packet.
#[derive(Debug)]
enum Frame {
    /// An encoded text packet (`4...`, `3`, ...).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl Frame {
    fn polling_len(&self) -> usize {
        match self {
            Frame::Text(s) => s.len(),
            Frame::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        }
    }
}

/// Aborts the transport tasks when the engine task ends.
#[derive(Default)]
struct TaskGuard(Vec<JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_handshakes() {
        let hs = Handshake::parse(
            r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        assert_eq!(hs.sid, "abc");
        assert_eq!(hs.upgrades, vec!["websocket"]);
        assert_eq!(hs.ping_interval, Duration::from_secs(25));
        assert_eq!(hs.ping_timeout, Duration::from_secs(20));
        assert_eq!(hs.max_payload, 1_000_000);
        assert!(Handshake::parse(r#"{"sid":1,"pingInterval":1,"pingTimeout":1}"#).is_err());
        assert!(Handshake::parse(r#"{"sid":"a","pingTimeout":1}"#).is_err());
        assert!(Handshake::parse("nope").is_err());
        let hs = Handshake::parse(r#"{"sid":"a","pingInterval":1,"pingTimeout":2}"#).unwrap();
        assert_eq!(hs.max_payload, 1_000_000);
        assert!(hs.upgrades.is_empty());
    }

    #[test]
    fn recognises_other_protocol_versions() {
        assert!(bad_handshake(r#"96:0{"sid":"x"}2:40"#).is_protocol_version());
        assert!(bad_handshake("hello").is_protocol());
        let e = http_error(
            400,
            br#"{"code":5,"message":"Unsupported protocol version"}"#,
        );
        assert!(e.is_protocol_version(), "{e}");
        let e = http_error(400, br#"{"code":1,"message":"Session ID unknown"}"#);
        assert!(matches!(e, Error::Http { status: 400, .. }));
    }

    #[test]
    fn binary_frames_count_their_base64_size() {
        assert_eq!(
            Frame::Binary(Bytes::from_static(&[1, 2, 3])).polling_len(),
            5
        );
        assert_eq!(Frame::Binary(Bytes::from_static(&[1])).polling_len(), 5);
        assert_eq!(Frame::Text("4ab".into()).polling_len(), 3);
    }
}
