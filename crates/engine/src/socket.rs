use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::outbox::{Frame, Outbox};
use crate::{SendError, Sid};

/// The transport a session currently uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Why a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the transport, or the connection ended.
    TransportClose,
    /// The transport failed (I/O error, malformed frame, oversized message).
    TransportError,
    /// No pong arrived within the ping timeout.
    PingTimeout,
    /// The client sent an Engine.IO packet that does not parse.
    ParseError,
    /// The server closed the session on purpose.
    ForcedClose,
    /// The server is shutting down.
    ServerShutdown,
    /// The client read too slowly: its outgoing buffer overflowed.
    SendBufferFull,
}

impl CloseReason {
    /// The reference's reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::SendBufferFull => "send buffer full",
        }
    }
}

/// A text message encoded once, ready for any number of sessions: the Engine.IO `4`
/// prefix followed by the payload. Cloning it is a reference-count increment.
///
/// ```
/// use tether_engine::TextMessage;
/// let mut buf = TextMessage::buffer();
/// buf.push_str("2[\"hi\"]");
/// let msg = TextMessage::from_buffer(buf);
/// assert_eq!(msg.payload(), "2[\"hi\"]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextMessage(pub(crate) Utf8Bytes);

impl TextMessage {
    /// A buffer that already holds the `4` prefix; append the payload and call
    /// [`TextMessage::from_buffer`].
    pub fn buffer() -> String {
        let mut s = String::with_capacity(64);
        s.push('4');
        s
    }

    /// Wraps a buffer made by [`TextMessage::buffer`].
    pub fn from_buffer(buf: String) -> Self {
        debug_assert!(buf.starts_with('4'));
        TextMessage(Utf8Bytes::from(buf))
    }

    /// A message from its payload.
    pub fn new(payload: &str) -> Self {
        let mut buf = Self::buffer();
        buf.push_str(payload);
        Self::from_buffer(buf)
    }

    /// The payload, without the Engine.IO prefix.
    pub fn payload(&self) -> &str {
        self.0.as_str().get(1..).unwrap_or_default()
    }
}

/// The request that opened a session, as the layer above may want to see it.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The request URI (path and query).
    pub uri: http::Uri,
    /// The request headers.
    pub headers: http::HeaderMap,
    /// The peer's address, when the server knows it: a `SocketAddr` in the request's
    /// extensions, as Tether's own `serve` inserts, or else (with the `axum` feature)
    /// axum's `ConnectInfo<SocketAddr>`, as `into_make_service_with_connect_info` inserts.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// The request's extensions, as tower layers in front of the engine left them (auth
    /// claims, for example). Only values that were in the extensions are here; they are
    /// cloned once per connection.
    pub extensions: http::Extensions,
}

impl Handshake {
    /// Copies what the layer above may want from a request. The copies own their bytes:
    /// hyper's header values are slices of its 8 KiB read buffer, which a session would
    /// otherwise keep alive for its whole life.
    pub(crate) fn from_request<B>(req: &http::Request<B>) -> Self {
        let mut headers = http::HeaderMap::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            if let Ok(v) = http::HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(name.clone(), v);
            }
        }
        let uri = req
            .uri()
            .path_and_query()
            .and_then(|pq| http::Uri::try_from(pq.as_str()).ok())
            .unwrap_or_default();
        let mut extensions = req.extensions().clone();
        // hyper's upgrade handle is the transport's, not the application's.
        extensions.remove::<hyper::upgrade::OnUpgrade>();
        let remote_addr = req.extensions().get::<std::net::SocketAddr>().copied();
        #[cfg(feature = "axum")]
        let remote_addr = remote_addr.or_else(|| {
            req.extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0)
        });
        Handshake {
            uri,
            headers,
            remote_addr,
            extensions,
        }
    }

    /// A query parameter of the handshake request.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.uri.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }
}

/// One Engine.IO session: a client connection that outlives its transports.
///
/// Sending never blocks: packets wait in an outbox, bounded in packets and in bytes, that
/// the current transport drains. See
/// [`EngineConfig::max_buffered_packets`](crate::EngineConfig::max_buffered_packets) and
/// [`EngineConfig::max_buffered_bytes`](crate::EngineConfig::max_buffered_bytes).
pub struct EngineSocket {
    sid: Sid,
    transport: AtomicU8,
    pub(crate) outbox: Outbox,
    pub(crate) upgrading: AtomicBool,
    /// Set when a WebSocket is accepted as this session's upgrade: a second one is refused
    /// until that upgrade fails.
    pub(crate) upgrade_claimed: AtomicBool,
    pub(crate) polling_get: AtomicBool,
    pub(crate) polling_post: AtomicBool,
    pub(crate) close_sent: AtomicBool,
    /// How many polls have been answered: a closing session waits while they go on.
    pub(crate) polls: AtomicU64,
    closing: Mutex<Option<CloseReason>>,
    closed: AtomicBool,
    pub(crate) close_notify: Notify,
    pongs: AtomicU64,
    pong_notify: Notify,
    /// While a ping waits for its pong: the pong count before it, and its deadline.
    pong_due: Mutex<Option<(u64, tokio::time::Instant)>>,
    handshake: Handshake,
}

impl std::fmt::Debug for EngineSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSocket")
            .field("sid", &self.sid)
            .field("transport", &self.transport())
            .finish()
    }
}

const POLLING: u8 = 0;
const WEBSOCKET: u8 = 1;

impl EngineSocket {
    pub(crate) fn new(
        sid: Sid,
        transport: Transport,
        max_buffered: (usize, usize),
        handshake: Handshake,
        stats: Arc<crate::stats::EngineStats>,
    ) -> Self {
        EngineSocket {
            sid,
            transport: AtomicU8::new(match transport {
                Transport::Polling => POLLING,
                Transport::Websocket => WEBSOCKET,
            }),
            outbox: Outbox::new(max_buffered.0, max_buffered.1, stats),
            upgrading: AtomicBool::new(false),
            upgrade_claimed: AtomicBool::new(false),
            polling_get: AtomicBool::new(false),
            polling_post: AtomicBool::new(false),
            close_sent: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            closing: Mutex::new(None),
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            pongs: AtomicU64::new(0),
            pong_notify: Notify::new(),
            pong_due: Mutex::new(None),
            handshake,
        }
    }

    /// The session id.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The transport in use now.
    pub fn transport(&self) -> Transport {
        if self.transport.load(Ordering::Acquire) == WEBSOCKET {
            Transport::Websocket
        } else {
            Transport::Polling
        }
    }

    pub(crate) fn set_transport(&self, t: Transport) {
        let v = match t {
            Transport::Polling => POLLING,
            Transport::Websocket => WEBSOCKET,
        };
        self.transport.store(v, Ordering::Release);
    }

    /// The request that opened the session.
    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// Queues a text message. When the outbox is full the session closes with
    /// [`CloseReason::SendBufferFull`] and this returns [`SendError::Full`].
    pub fn send(&self, msg: TextMessage) -> Result<(), SendError> {
        self.push(Frame::Text(msg.0), &[], true)
    }

    /// Queues a text message followed by its binary attachments, with nothing in between.
    pub fn send_with_attachments(
        &self,
        msg: TextMessage,
        attachments: Arc<[Bytes]>,
    ) -> Result<(), SendError> {
        self.push(Frame::Text(msg.0), &attachments, true)
    }

    /// Queues a message that may be lost (a volatile emit): when the outbox is full it is
    /// dropped and the session stays open. Returns whether it was queued.
    pub fn send_volatile(&self, msg: TextMessage, attachments: Option<Arc<[Bytes]>>) -> bool {
        if self.is_closed() {
            return false;
        }
        let attachments = attachments.as_deref().unwrap_or_default();
        self.outbox
            .push(Frame::Text(msg.0), attachments, true)
            .is_ok()
    }

    /// Queues a raw binary message.
    pub fn send_binary(&self, bytes: Bytes) -> Result<(), SendError> {
        self.push(Frame::Binary(bytes), &[], true)
    }

    /// Like [`send_with_attachments`](Self::send_with_attachments) but ignores the outbox
    /// bound: for replays whose size a bounded log already limits.
    pub fn send_unbounded(&self, msg: TextMessage, attachments: Option<Arc<[Bytes]>>) {
        let attachments = attachments.as_deref().unwrap_or_default();
        let _ = self.push(Frame::Text(msg.0), attachments, false);
    }

    pub(crate) fn send_control(&self, packet: &'static str) {
        let _ = self.push(Frame::Text(Utf8Bytes::from_static(packet)), &[], false);
    }

    fn push(&self, frame: Frame, attachments: &[Bytes], bounded: bool) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        match self.outbox.push(frame, attachments, bounded) {
            Err(SendError::Full) => {
                tracing::debug!(sid = %self.sid, "outbox full, closing session");
                self.close(CloseReason::SendBufferFull);
                Err(SendError::Full)
            }
            other => other,
        }
    }

    /// Closes the session. The first reason given wins; later calls do nothing.
    pub fn close(&self, reason: CloseReason) {
        {
            let mut c = self.closing.lock().unwrap_or_else(|e| e.into_inner());
            if c.is_some() {
                return;
            }
            *c = Some(reason);
        }
        self.closed.store(true, Ordering::Release);
        // Wake a probe too: a closed session answers it at once with "dead".
        self.pong_notify.notify_waiters();
        self.close_notify.notify_waiters();
        self.close_notify.notify_one();
        self.outbox.notify.notify_waiters();
        self.outbox.notify.notify_one();
        self.outbox.task.wake();
    }

    /// Whether the session is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        *self.closing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the session was closed by the server on purpose, so that a poll may still
    /// collect what is queued and the close packet (until it has done so).
    pub(crate) fn closed_by_server(&self) -> bool {
        matches!(
            self.close_reason(),
            Some(
                CloseReason::ForcedClose
                    | CloseReason::ServerShutdown
                    | CloseReason::SendBufferFull
            )
        )
    }

    /// Records that a ping was sent, with the pong count before it and the instant by
    /// which a pong must arrive.
    pub(crate) fn set_pong_due(&self, before: u64, deadline: tokio::time::Instant) {
        *self.pong_due.lock().unwrap_or_else(|e| e.into_inner()) = Some((before, deadline));
    }

    /// Closes the session with [`CloseReason::PingTimeout`] when its pong is overdue, so
    /// that a request arriving after the deadline never races the heartbeat's timer.
    /// Returns whether the session is closed.
    pub(crate) fn check_pong_deadline(&self) -> bool {
        let due = *self.pong_due.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((before, deadline)) = due {
            if self.pong_count() == before && tokio::time::Instant::now() >= deadline {
                self.close(CloseReason::PingTimeout);
            }
        }
        self.is_closed()
    }

    pub(crate) fn on_pong(&self) {
        self.pongs.fetch_add(1, Ordering::AcqRel);
        self.pong_notify.notify_waiters();
    }

    /// Sends a ping and waits up to `timeout` for any pong: whether the peer is alive.
    ///
    /// Used to tell a live client from a half-open connection without waiting for the
    /// regular heartbeat.
    pub async fn probe(&self, timeout: Duration) -> bool {
        if self.is_closed() {
            return false;
        }
        let before = self.pongs.load(Ordering::Acquire);
        let wait = async {
            loop {
                let n = self.pong_notify.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if self.pongs.load(Ordering::Acquire) != before {
                    return true;
                }
                if self.is_closed() {
                    return false;
                }
                n.await;
            }
        };
        self.send_control("2");
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    pub(crate) async fn wait_pong_until(
        &self,
        before: u64,
        deadline: tokio::time::Instant,
    ) -> bool {
        let wait = async {
            loop {
                let n = self.pong_notify.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if self.pongs.load(Ordering::Acquire) != before {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout_at(deadline, wait).await.is_ok()
    }

    pub(crate) fn pong_count(&self) -> u64 {
        self.pongs.load(Ordering::Acquire)
    }
}
