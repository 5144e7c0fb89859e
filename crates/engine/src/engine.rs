use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::socket::{EngineSocket, Handshake, Transport};
use crate::transport::{polling, ws};
use crate::{CloseReason, EngineConfig, ProtocolError, Sid};

/// A message from a client, for the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message (the Engine.IO `4` packet's data).
    Text(&'a str),
    /// A binary message.
    Binary(Bytes),
}

/// What the engine calls as sessions open, talk and close.
///
/// Calls for one session never overlap: messages are delivered in order, and
/// [`on_close`](Handler::on_close) comes once, last.
pub trait Handler: Send + Sync + 'static {
    /// The per-session state that the handler keeps.
    type Conn: Send + Sync + 'static;
    /// A session opened.
    fn on_open(&self, socket: &Arc<EngineSocket>) -> Self::Conn;
    /// A message arrived.
    fn on_message(&self, conn: &Self::Conn, msg: Message<'_>);
    /// The session closed.
    fn on_close(&self, conn: &Self::Conn, reason: CloseReason);
    /// The session upgraded to WebSocket (nothing by default).
    fn on_upgrade(&self, _conn: &Self::Conn) {}
}

pub(crate) struct Session<H: Handler> {
    pub(crate) socket: Arc<EngineSocket>,
    pub(crate) conn: H::Conn,
    /// Serialises message delivery for this session across concurrent requests.
    pub(crate) inbound: tokio::sync::Mutex<()>,
}

pub(crate) struct Inner<H: Handler> {
    pub(crate) config: EngineConfig,
    pub(crate) handler: H,
    sessions: RwLock<HashMap<Sid, Arc<Session<H>>>>,
    stats: Arc<crate::stats::EngineStats>,
}

/// The Engine.IO server: a cloneable [`tower_service::Service`] for HTTP requests.
pub struct Engine<H: Handler> {
    pub(crate) inner: Arc<Inner<H>>,
}

impl<H: Handler> Clone for Engine<H> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

impl<H: Handler> std::fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl<H: Handler> Engine<H> {
    /// An engine with these options, calling `handler`.
    pub fn new(config: EngineConfig, handler: H) -> Self {
        Engine {
            inner: Arc::new(Inner {
                config,
                handler,
                sessions: RwLock::new(HashMap::new()),
                stats: Arc::default(),
            }),
        }
    }

    /// The options in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.inner.read_sessions().len()
    }

    /// What the transports sent, summed over every session.
    pub fn stats(&self) -> &crate::stats::EngineStats {
        &self.inner.stats
    }

    /// What waits in the sessions' outboxes now (it locks each outbox in turn: for a
    /// scrape, not for a hot path).
    pub fn outbox_depth(&self) -> crate::stats::OutboxDepth {
        let sessions: Vec<_> = self.inner.read_sessions().values().cloned().collect();
        let mut d = crate::stats::OutboxDepth::default();
        for s in sessions {
            let (n, b) = s.socket.outbox.depth();
            d.packets += n;
            d.bytes += b;
            d.max_packets = d.max_packets.max(n);
        }
        d
    }

    /// Closes every session with [`CloseReason::ServerShutdown`] and waits (up to
    /// `grace`) until their transports have flushed.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let sessions: Vec<_> = self.inner.read_sessions().values().cloned().collect();
        for s in &sessions {
            s.socket.close(CloseReason::ServerShutdown);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Handles one HTTP request; requests outside the engine's path get 404.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &self.inner;
        let path = req.uri().path();
        let base = inner.config.path.trim_end_matches('/');
        if path != inner.config.path && path != base {
            return status(StatusCode::NOT_FOUND);
        }
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut res = if req.method() == Method::OPTIONS && inner.config.cors.is_some() {
            let mut r = status(StatusCode::NO_CONTENT);
            r.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                header::HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
            );
            if let Some(h) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                r.headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
            }
            r
        } else {
            match self.route(req).await {
                Ok(r) => r,
                Err(e) => e.response(),
            }
        };
        if inner.config.cors.is_some() {
            // The answer depends on the origin: caches must not share it across origins.
            res.headers_mut()
                .append(header::VARY, header::HeaderValue::from_static("Origin"));
        }
        if let (Some(cors), Some(origin)) = (&inner.config.cors, origin) {
            let allowed = cors.origins.is_empty()
                || cors
                    .origins
                    .iter()
                    .any(|o| o.as_bytes() == origin.as_bytes());
            if allowed {
                res.headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                if cors.credentials {
                    res.headers_mut().insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        header::HeaderValue::from_static("true"),
                    );
                }
            }
        }
        res
    }

    async fn route<B>(&self, mut req: Request<B>) -> Result<Response<Full<Bytes>>, ProtocolError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &self.inner;
        let query = Query::parse(req.uri().query().unwrap_or(""));
        let transport = match query.transport {
            Some("polling") if inner.config.transports.polling => Transport::Polling,
            Some("websocket") if inner.config.transports.websocket => Transport::Websocket,
            _ => return Err(ProtocolError::UnknownTransport),
        };
        if query.eio != Some("4") {
            return Err(ProtocolError::UnsupportedProtocolVersion);
        }
        let is_upgrade = is_ws_upgrade(&req);
        if let (Some(allow), true) = (
            &inner.config.allow_request,
            query.sid.is_none() || is_upgrade,
        ) {
            if let Err(refusal) = allow.check(&Handshake::from_request(&req)) {
                return Ok(refusal.response());
            }
        }
        match query.sid {
            None => {
                if req.method() != Method::GET {
                    return Err(ProtocolError::BadHandshakeMethod);
                }
                match transport {
                    Transport::Polling => Ok(polling::open(self, &req)),
                    Transport::Websocket if is_upgrade => ws::accept(self, &mut req, None),
                    Transport::Websocket => Err(ProtocolError::BadRequest),
                }
            }
            Some(sid) => {
                let sid = Sid::parse(sid).ok_or(ProtocolError::UnknownSid)?;
                let session = inner.session(&sid).ok_or(ProtocolError::UnknownSid)?;
                // A session closed by the client or by a failure is gone, as in the
                // reference, which forgets it at once; one that the server closed stays
                // until a poll has collected its last packets and the close packet.
                let socket = &session.socket;
                if socket.check_pong_deadline() {
                    let last_poll = socket.closed_by_server()
                        && !socket.close_sent.load(std::sync::atomic::Ordering::Acquire)
                        && transport == Transport::Polling
                        && req.method() == Method::GET;
                    if !last_poll {
                        return Err(ProtocolError::UnknownSid);
                    }
                }
                match transport {
                    // A second WebSocket for a session that is upgrading or upgraded is
                    // accepted, then closed (see `ws::accept`).
                    Transport::Websocket if is_upgrade => ws::accept(self, &mut req, Some(session)),
                    Transport::Websocket => Err(ProtocolError::BadRequest),
                    Transport::Polling => {
                        if session.socket.transport() != Transport::Polling {
                            return Err(ProtocolError::BadRequest);
                        }
                        match *req.method() {
                            Method::GET => Ok(polling::get(self, session).await),
                            Method::POST => Ok(polling::post(self, session, req).await),
                            _ => Err(ProtocolError::BadRequest),
                        }
                    }
                }
            }
        }
    }
}

impl<H: Handler> Inner<H> {
    pub(crate) fn read_sessions(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<Sid, Arc<Session<H>>>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn session(&self, sid: &Sid) -> Option<Arc<Session<H>>> {
        self.read_sessions().get(sid).cloned()
    }

    /// Creates a session, registers it, starts its heartbeat, and returns it.
    pub(crate) fn open_session(
        self: &Arc<Self>,
        sid: Sid,
        transport: Transport,
        handshake: Handshake,
    ) -> Arc<Session<H>> {
        // Heartbeat deadlines count from here, before the client can see the session.
        let opened = tokio::time::Instant::now();
        let socket = Arc::new(EngineSocket::new(
            sid,
            transport,
            (
                self.config.max_buffered_packets,
                self.config.max_buffered_bytes,
            ),
            handshake,
            self.stats.clone(),
        ));
        let conn = self.handler.on_open(&socket);
        let session = Arc::new(Session {
            socket,
            conn,
            inbound: tokio::sync::Mutex::new(()),
        });
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid, session.clone());
        tokio::spawn(heartbeat(self.clone(), session.clone(), opened));
        session
    }

    pub(crate) fn open_packet(&self, sid: Sid, transport: Transport) -> String {
        let upgrades = if transport == Transport::Polling && self.config.transports.websocket {
            r#"["websocket"]"#
        } else {
            "[]"
        };
        format!(
            r#"0{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            sid,
            upgrades,
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload
        )
    }
}

/// Pings the client `ping_interval` after the session opened or after the last pong,
/// closes the session when no pong arrives within `ping_timeout` of the ping, and
/// performs the close: unregister, then tell the handler.
///
/// Deadlines are absolute instants counted from when the ping was due, so timer lateness
/// does not accumulate: a client that never answers is closed `ping_interval +
/// ping_timeout` after the session opened, as the reference does (and a request arriving
/// after that instant finds the session closed: see
/// `EngineSocket::check_pong_deadline`).
async fn heartbeat<H: Handler>(
    inner: Arc<Inner<H>>,
    session: Arc<Session<H>>,
    opened: tokio::time::Instant,
) {
    let socket = &session.socket;
    let mut anchor = opened;
    let reason = 'outer: loop {
        let closed = socket.close_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if let Some(r) = socket.close_reason() {
            break r;
        }
        let ping_at = anchor + inner.config.ping_interval;
        tokio::select! {
            _ = &mut closed => continue,
            _ = tokio::time::sleep_until(ping_at) => {}
        }
        let before = socket.pong_count();
        let deadline = ping_at + inner.config.ping_timeout;
        socket.set_pong_due(before, deadline);
        socket.send_control("2");
        tokio::select! {
            _ = &mut closed => continue 'outer,
            ok = socket.wait_pong_until(before, deadline) => {
                if ok {
                    anchor = tokio::time::Instant::now();
                } else {
                    socket.close(CloseReason::PingTimeout);
                }
            }
        }
    };
    tracing::debug!(sid = %socket.sid(), reason = reason.as_str(), "engine session closed");
    {
        // Deliver the close after any message being delivered right now.
        let _guard = session.inbound.lock().await;
        inner.handler.on_close(&session.conn, reason);
    }
    let server_initiated = matches!(
        reason,
        CloseReason::ForcedClose | CloseReason::ServerShutdown | CloseReason::SendBufferFull
    );
    if server_initiated && socket.transport() == Transport::Polling {
        // Let the client collect what is queued, over as many polls as it takes, and then
        // the close packet. The wait ends 2 s after the last poll (a client that stopped
        // polling), and at the latest after a whole heartbeat.
        use std::sync::atomic::Ordering;
        const QUIET: std::time::Duration = std::time::Duration::from_secs(2);
        let start = tokio::time::Instant::now();
        let last = start + inner.config.ping_interval + inner.config.ping_timeout;
        let mut polls = socket.polls.load(Ordering::Acquire);
        let mut quiet_until = start + QUIET;
        while !socket.close_sent.load(Ordering::Acquire) {
            let now = tokio::time::Instant::now();
            let seen = socket.polls.load(Ordering::Acquire);
            if seen != polls {
                polls = seen;
                quiet_until = now + QUIET;
            }
            if now >= quiet_until || now >= last {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
    inner
        .sessions
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&socket.sid());
    // Whatever a client did not collect is freed now, even while the layer above still
    // holds the socket.
    socket.outbox.clear();
}

pub(crate) fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

fn is_ws_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

#[derive(Default)]
struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

impl<'a> Query<'a> {
    fn parse(q: &'a str) -> Self {
        let mut out = Query::default();
        for kv in q.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "EIO" => out.eio = Some(v),
                "transport" => out.transport = Some(v),
                "sid" => out.sid = Some(v),
                _ => {}
            }
        }
        out
    }
}

impl<H, B> tower_service::Service<Request<B>> for Engine<H>
where
    H: Handler,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    struct Nop;

    impl Handler for Nop {
        type Conn = ();
        fn on_open(&self, _socket: &Arc<EngineSocket>) {}
        fn on_message(&self, _conn: &(), _msg: Message<'_>) {}
        fn on_close(&self, _conn: &(), _reason: CloseReason) {}
    }

    fn engine(ping_interval: Duration, ping_timeout: Duration) -> Engine<Nop> {
        Engine::new(
            EngineConfig {
                ping_interval,
                ping_timeout,
                ..EngineConfig::default()
            },
            Nop,
        )
    }

    async fn call(
        engine: &Engine<Nop>,
        method: Method,
        query: &str,
        body: &'static str,
    ) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(format!("/socket.io/?EIO=4&transport=polling{query}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request");
        let res = engine.handle(req).await;
        let status = res.status();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn open(engine: &Engine<Nop>) -> String {
        let (status, body) = call(engine, Method::GET, "", "").await;
        assert_eq!(status, StatusCode::OK);
        let open: serde_json::Value =
            serde_json::from_str(body.get(1..).unwrap_or_default()).expect("open packet");
        open["sid"].as_str().expect("sid").to_owned()
    }

    #[tokio::test]
    async fn a_poll_after_the_pong_deadline_finds_the_session_gone() {
        let interval = Duration::from_millis(40);
        let timeout = Duration::from_millis(30);
        let engine = engine(interval, timeout);
        let sid = open(&engine).await;
        // The ping is queued but nobody polls it: at interval + timeout the session is
        // over, whether or not the heartbeat's timer has fired yet.
        tokio::time::sleep(interval + timeout).await;
        let (status, _) = call(&engine, Method::GET, &format!("&sid={sid}"), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_pong_in_time_keeps_the_session() {
        let engine = engine(Duration::from_millis(40), Duration::from_millis(200));
        let sid = open(&engine).await;
        let q = format!("&sid={sid}");
        for _ in 0..3 {
            assert_eq!(
                call(&engine, Method::GET, &q, "").await,
                (StatusCode::OK, "2".to_owned())
            );
            assert_eq!(
                call(&engine, Method::POST, &q, "3").await,
                (StatusCode::OK, "ok".to_owned())
            );
        }
    }

    #[tokio::test]
    async fn a_client_close_ends_the_pending_poll_with_a_noop() {
        let engine = engine(Duration::from_secs(5), Duration::from_secs(5));
        let sid = open(&engine).await;
        let q = format!("&sid={sid}");
        let poll = {
            let (engine, q) = (engine.clone(), q.clone());
            tokio::spawn(async move { call(&engine, Method::GET, &q, "").await })
        };
        let session = engine
            .inner
            .session(&Sid::parse(&sid).expect("sid"))
            .expect("session");
        while !session
            .socket
            .polling_get
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            call(&engine, Method::POST, &q, "1").await,
            (StatusCode::OK, "ok".to_owned())
        );
        assert_eq!(poll.await.expect("poll"), (StatusCode::OK, "6".to_owned()));
        let (status, _) = call(&engine, Method::GET, &q, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_server_close_is_collected_by_the_next_poll() {
        let engine = engine(Duration::from_secs(5), Duration::from_secs(5));
        let sid = open(&engine).await;
        let q = format!("&sid={sid}");
        let session = engine
            .inner
            .session(&Sid::parse(&sid).expect("sid"))
            .expect("session");
        session.socket.close(CloseReason::ForcedClose);
        assert_eq!(
            call(&engine, Method::GET, &q, "").await,
            (StatusCode::OK, "1".to_owned())
        );
        let (status, _) = call(&engine, Method::GET, &q, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    fn session_of(engine: &Engine<Nop>, sid: &str) -> Arc<Session<Nop>> {
        engine
            .inner
            .session(&Sid::parse(sid).expect("sid"))
            .expect("session")
    }

    #[tokio::test]
    async fn queued_events_go_out_before_the_close_packet_in_a_poll_of_their_own() {
        for reason in [
            CloseReason::ForcedClose,
            CloseReason::ServerShutdown,
            CloseReason::SendBufferFull,
        ] {
            let engine = engine(Duration::from_secs(5), Duration::from_secs(5));
            let sid = open(&engine).await;
            let q = format!("&sid={sid}");
            let session = session_of(&engine, &sid);
            for i in 0..3 {
                session
                    .socket
                    .send(crate::TextMessage::new(&format!("2[\"e\",{i}]")))
                    .expect("send");
            }
            session.socket.close(reason);
            // The close packet never shares a payload with events.
            assert_eq!(
                call(&engine, Method::GET, &q, "").await,
                (
                    StatusCode::OK,
                    "42[\"e\",0]\u{1e}42[\"e\",1]\u{1e}42[\"e\",2]".to_owned()
                ),
                "{reason:?}"
            );
            assert_eq!(
                call(&engine, Method::GET, &q, "").await,
                (StatusCode::OK, "1".to_owned())
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
            let (status, _) = call(&engine, Method::GET, &q, "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn a_pending_poll_woken_by_a_close_carries_the_events_only() {
        let engine = engine(Duration::from_secs(5), Duration::from_secs(5));
        let sid = open(&engine).await;
        let q = format!("&sid={sid}");
        let session = session_of(&engine, &sid);
        let poll = {
            let (engine, q) = (engine.clone(), q.clone());
            tokio::spawn(async move { call(&engine, Method::GET, &q, "").await })
        };
        while !session
            .socket
            .polling_get
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        {
            // An event and the close land while the poll waits, as a handler that emits
            // and then closes the transport does.
            let _ = session.socket.send(crate::TextMessage::new("2[\"last\"]"));
            session.socket.close(CloseReason::ForcedClose);
        }
        assert_eq!(
            poll.await.expect("poll"),
            (StatusCode::OK, "42[\"last\"]".to_owned())
        );
        assert_eq!(
            call(&engine, Method::GET, &q, "").await,
            (StatusCode::OK, "1".to_owned())
        );
    }

    #[tokio::test]
    async fn a_large_queue_drains_over_several_polls_within_max_payload() {
        let max_payload = 10_000;
        let engine = Engine::new(
            EngineConfig {
                max_payload,
                ..EngineConfig::default()
            },
            Nop,
        );
        let sid = open(&engine).await;
        let q = format!("&sid={sid}");
        let session = session_of(&engine, &sid);
        let n = 20_000;
        for i in 0..n {
            session
                .socket
                .send(crate::TextMessage::new(&format!("2[\"n\",{i}]")))
                .expect("a burst of 20 000 fits");
        }
        let mut got = Vec::new();
        let mut polls = 0;
        while got.len() < n {
            let (status, body) = call(&engine, Method::GET, &q, "").await;
            assert_eq!(status, StatusCode::OK);
            assert!(body.len() <= max_payload, "a poll of {} bytes", body.len());
            got.extend(body.split('\u{1e}').map(str::to_owned));
            polls += 1;
        }
        assert!(polls > 1);
        let want: Vec<String> = (0..n).map(|i| format!("42[\"n\",{i}]")).collect();
        assert_eq!(got, want, "every event once, in order");
        assert!(!session.socket.is_closed());
    }

    #[tokio::test]
    async fn one_packet_larger_than_max_payload_still_goes_out_alone() {
        let engine = Engine::new(
            EngineConfig {
                max_payload: 100,
                ..EngineConfig::default()
            },
            Nop,
        );
        let sid = open(&engine).await;
        let q = format!("&sid={sid}");
        let session = session_of(&engine, &sid);
        let big = format!("2[\"{}\"]", "x".repeat(500));
        session
            .socket
            .send(crate::TextMessage::new("2[1]"))
            .expect("send");
        session
            .socket
            .send(crate::TextMessage::new(&big))
            .expect("send");
        session
            .socket
            .send(crate::TextMessage::new("2[2]"))
            .expect("send");
        assert_eq!(call(&engine, Method::GET, &q, "").await.1, "42[1]");
        assert_eq!(
            call(&engine, Method::GET, &q, "").await.1,
            format!("4{big}")
        );
        assert_eq!(call(&engine, Method::GET, &q, "").await.1, "42[2]");
    }

    #[tokio::test]
    async fn the_outbox_is_bounded_in_bytes() {
        let engine = Engine::new(
            EngineConfig {
                max_buffered_bytes: 1 << 20,
                ..EngineConfig::default()
            },
            Nop,
        );
        let sid = open(&engine).await;
        let session = session_of(&engine, &sid);
        let chunk = format!("2[\"{}\"]", "x".repeat(100_000));
        let mut queued = 0;
        while session.socket.send(crate::TextMessage::new(&chunk)).is_ok() {
            queued += 1;
            assert!(queued <= 11, "more than 1 MiB queued");
        }
        assert_eq!(queued, 10);
        assert_eq!(
            session.socket.close_reason(),
            Some(CloseReason::SendBufferFull)
        );
    }
}
