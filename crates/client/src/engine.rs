//! The Engine.IO v4 client: handshake, heartbeat, transports and the upgrade.
//!
//! One [`connect`] call opens one Engine.IO connection and spawns a task that owns it.
//! The Socket.IO layer talks to that task through an [`EngineHandle`] (outgoing messages)
//! and a channel of [`EngineEvent`]s (incoming messages, then one `Closed`).
//!
//! Polling: a loop of long-polling `GET`s feeds the task; outgoing packets are batched
//! into one `POST` at a time, within the server's `maxPayload`.
//! WebSocket: one text frame per text packet, one binary frame per binary message.
//! Upgrade: once a polling connection is open, a WebSocket with the same `sid` is opened
//! and probed (`2probe` → `3probe`); then polling is paused (the pending `GET` and `POST`
//! finish, the server ends the `GET` with a noop), `5` is sent over the WebSocket, and the
//! WebSocket carries everything from then on, starting with the packets queued meanwhile.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tether_proto::engine::{self as eio, Packet, PayloadItem};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, trace};

use crate::tls;
use crate::url::Endpoint;
use crate::{Error, Result};

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

/// Commands for the engine task.
#[derive(Debug)]
enum EngineCmd {
    Text(String),
    Binary(Bytes),
    Close(Option<oneshot::Sender<()>>),
}

/// The sending side of an open Engine.IO connection. Dropping it closes the connection.
#[derive(Debug)]
pub(crate) struct EngineHandle {
    tx: mpsc::UnboundedSender<EngineCmd>,
    transport: Arc<AtomicU8>,
}

impl EngineHandle {
    /// Queues a text message.
    pub fn send_text(&self, s: String) {
        let _ = self.tx.send(EngineCmd::Text(s));
    }

    /// Queues a binary message.
    pub fn send_binary(&self, b: Bytes) {
        let _ = self.tx.send(EngineCmd::Binary(b));
    }

    /// Closes the connection (after flushing what is queued, best effort).
    pub fn close(&self) {
        self.close_then(None);
    }

    /// Closes the connection, then signals `done`.
    pub fn close_then(&self, done: Option<oneshot::Sender<()>>) {
        if let Err(mpsc::error::SendError(EngineCmd::Close(Some(done)))) =
            self.tx.send(EngineCmd::Close(done))
        {
            let _ = done.send(());
        }
    }

    /// The transport in use now.
    pub fn transport(&self) -> Transport {
        transport_from_u8(self.transport.load(Ordering::Relaxed))
    }
}

fn transport_from_u8(n: u8) -> Transport {
    if n == 1 {
        Transport::Websocket
    } else {
        Transport::Polling
    }
}

fn transport_to_u8(t: Transport) -> u8 {
    match t {
        Transport::Polling => 0,
        Transport::Websocket => 1,
    }
}

type Ws = WebSocketStream<tls::Stream>;

type HyperClient<C> = hyper_util::client::legacy::Client<C, Full<Bytes>>;

/// hyper's client, over TCP or TLS.
#[derive(Clone)]
enum HttpClient {
    Plain(HyperClient<HttpConnector>),
    Tls(HyperClient<hyper_rustls::HttpsConnector<HttpConnector>>),
}

/// The HTTP client of the polling transport.
#[derive(Clone)]
struct Http {
    client: HttpClient,
    headers: http::HeaderMap,
    cookies: Option<CookieJar>,
}

impl Http {
    fn new(
        headers: http::HeaderMap,
        tls: Option<&Arc<rustls::ClientConfig>>,
        cookies: Option<CookieJar>,
    ) -> Self {
        let builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        let client = match tls {
            None => HttpClient::Plain(builder.build_http()),
            Some(cfg) => {
                let mut http = HttpConnector::new();
                http.enforce_http(false);
                let mut cfg = (**cfg).clone();
                // hyper-rustls sets the ALPN itself (HTTP/1.1 only).
                cfg.alpn_protocols.clear();
                let conn = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(cfg)
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                HttpClient::Tls(builder.build(conn))
            }
        };
        Http {
            client,
            headers,
            cookies,
        }
    }

    async fn request(
        &self,
        method: http::Method,
        url: &str,
        body: Option<String>,
    ) -> Result<String> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8");
        }
        if let Some(c) = self.cookies.as_ref().and_then(|j| cookie_header(j, url)) {
            req = req.header(http::header::COOKIE, c);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Config(e.to_string()))?;
        let resp = match &self.client {
            HttpClient::Plain(c) => c.request(req).await,
            HttpClient::Tls(c) => c.request(req).await,
        }
        .map_err(Error::transport)?;
        if let Some(jar) = &self.cookies {
            store_cookies(jar, url, resp.headers());
        }
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(Error::transport)?
            .to_bytes();
        if !status.is_success() {
            return Err(http_error(status.as_u16(), &body));
        }
        String::from_utf8(body.to_vec())
            .map_err(|_| Error::Protocol("polling response is not UTF-8".into()))
    }
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

async fn connect_ws(opts: &EngineOptions, sid: Option<&str>) -> Result<Ws> {
    let url = opts.endpoint.ws_url(sid);
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Config(format!("invalid WebSocket URL {url:?}: {e}")))?;
    for (k, v) in &opts.headers {
        req.headers_mut().append(k, v.clone());
    }
    if let Some(c) = opts.cookies.as_ref().and_then(|j| cookie_header(j, &url)) {
        req.headers_mut().append(http::header::COOKIE, c);
    }
    let (host, port) = opts.endpoint.host_port()?;
    let stream = tls::connect(&host, port, opts.tls.as_ref()).await?;
    match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, resp)) => {
            if let Some(jar) = &opts.cookies {
                store_cookies(jar, &url, resp.headers());
            }
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err(http_error(resp.status().as_u16(), &body))
        }
        Err(e) => Err(Error::transport(e)),
    }
}

/// Opens an Engine.IO connection with the first of `opts.transports`.
///
/// Returns the handle, the events, and the handshake.
pub(crate) async fn connect(
    opts: Arc<EngineOptions>,
) -> Result<(
    EngineHandle,
    mpsc::UnboundedReceiver<EngineEvent>,
    Handshake,
)> {
    let first = opts
        .transports
        .first()
        .copied()
        .ok_or_else(|| Error::Config("no transport enabled".into()))?;
    let http = Http::new(
        opts.headers.clone(),
        opts.tls.as_ref(),
        opts.cookies.clone(),
    );
    let (t_tx, t_rx) = mpsc::unbounded_channel();
    let mut guard = TaskGuard::default();
    let (handshake, transport, initial) = match first {
        Transport::Polling => {
            let body = http
                .request(http::Method::GET, &opts.endpoint.polling_url(None), None)
                .await?;
            let mut items = eio::decode_payload(&body);
            let hs = match items.next() {
                Some(Ok(PayloadItem::Packet(Packet::Open(data)))) => Handshake::parse(data)?,
                _ => return Err(bad_handshake(&body)),
            };
            // Anything after the open packet is handled once the task runs.
            let rest: Vec<String> = body
                .split_once(eio::SEPARATOR)
                .map(|(_, rest)| vec![rest.to_owned()])
                .unwrap_or_default();
            let (stop_tx, stop_rx) = watch::channel(false);
            let url = opts.endpoint.polling_url(Some(&hs.sid));
            guard.0.push(tokio::spawn(poll_loop(
                http.clone(),
                url,
                t_tx.clone(),
                stop_rx,
            )));
            let tr = Tr::Polling {
                post_in_flight: false,
                paused: false,
                stop_tx,
            };
            (hs, tr, rest)
        }
        Transport::Websocket => {
            let mut ws = connect_ws(&opts, None).await?;
            let hs = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => match Packet::decode(t.as_str()) {
                        Ok(Packet::Open(data)) => break Handshake::parse(data)?,
                        _ => return Err(bad_handshake(t.as_str())),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(other)) => {
                        return Err(Error::Protocol(format!(
                            "expected an Engine.IO open packet, got {other:?}"
                        )))
                    }
                    Some(Err(e)) => return Err(Error::transport(e)),
                    None => return Err(Error::transport_msg("WebSocket closed during handshake")),
                }
            };
            let tr = start_ws(ws, &t_tx, &mut guard);
            (hs, tr, Vec::new())
        }
    };
    debug!(sid = %handshake.sid, transport = first.as_str(), "engine.io open");
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(AtomicU8::new(transport_to_u8(first)));
    for body in initial {
        let _ = t_tx.send(TEvent::PollBody(body));
    }
    let want_upgrade = first == Transport::Polling
        && opts.upgrade
        && opts.transports.contains(&Transport::Websocket)
        && handshake.upgrades.iter().any(|u| u == "websocket");
    let probe = if want_upgrade {
        let o = opts.clone();
        let sid = handshake.sid.clone();
        Some(tokio::spawn(async move { probe(&o, &sid).await }))
    } else {
        None
    };
    let task = EngineTask {
        http,
        post_url: opts.endpoint.polling_url(Some(&handshake.sid)),
        max_payload: handshake.max_payload.max(1),
        heartbeat: handshake.ping_interval + handshake.ping_timeout,
        ping_deadline: Instant::now() + handshake.ping_interval + handshake.ping_timeout,
        cmd_rx,
        ev_tx,
        t_tx,
        t_rx,
        queue: VecDeque::new(),
        transport,
        probe,
        upgrading: None,
        shared: shared.clone(),
        guard,
    };
    tokio::spawn(task.run());
    Ok((
        EngineHandle {
            tx: cmd_tx,
            transport: shared,
        },
        ev_rx,
        handshake,
    ))
}

/// Opens a WebSocket with the session id and checks that the server answers the probe.
async fn probe(opts: &EngineOptions, sid: &str) -> Result<Ws> {
    let fut = async {
        let mut ws = connect_ws(opts, Some(sid)).await?;
        ws.send(Message::text("2probe"))
            .await
            .map_err(Error::transport)?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "3probe" => return Ok(ws),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => {
                    return Err(Error::Protocol(format!(
                        "unexpected probe answer {other:?}"
                    )))
                }
                Some(Err(e)) => return Err(Error::transport(e)),
                None => return Err(Error::transport_msg("WebSocket closed during the probe")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| Error::Timeout)?
}

/// Events from the transport tasks to the engine task.
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

enum Tr {
    Polling {
        post_in_flight: bool,
        paused: bool,
        stop_tx: watch::Sender<bool>,
    },
    Ws {
        out: mpsc::UnboundedSender<Message>,
    },
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

async fn poll_loop(
    http: Http,
    url: String,
    tx: mpsc::UnboundedSender<TEvent>,
    stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            let _ = tx.send(TEvent::PollPaused);
            return;
        }
        match http.request(http::Method::GET, &url, None).await {
            Ok(body) => {
                if tx.send(TEvent::PollBody(body)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(TEvent::PollError(e));
                return;
            }
        }
    }
}

fn start_ws(ws: Ws, t_tx: &mpsc::UnboundedSender<TEvent>, guard: &mut TaskGuard) -> Tr {
    let (mut sink, mut stream) = ws.split();
    let tx = t_tx.clone();
    guard.0.push(tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let ev = match msg {
                // A message packet (`4...`, nearly every frame) is copied once, without
                // its type.
                Ok(Message::Text(t)) => match t.as_str().strip_prefix('4') {
                    Some(m) => TEvent::WsMessage(m.to_owned()),
                    None => TEvent::WsText(t.as_str().to_owned()),
                },
                Ok(Message::Binary(b)) => TEvent::WsBinary(b),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(TEvent::WsError(Error::transport(e)));
                    return;
                }
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
        let _ = tx.send(TEvent::WsClosed);
    }));
    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let tx = t_tx.clone();
    guard.0.push(tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            // Feed everything that is ready, then flush once.
            let mut r = sink.feed(msg).await;
            while r.is_ok() {
                match out_rx.try_recv() {
                    Ok(m) => r = sink.feed(m).await,
                    Err(_) => break,
                }
            }
            if r.is_ok() {
                r = sink.flush().await;
            }
            if let Err(e) = r {
                let _ = tx.send(TEvent::WsError(Error::transport(e)));
                return;
            }
            if closing {
                return;
            }
        }
    }));
    Tr::Ws { out }
}

struct EngineTask {
    http: Http,
    post_url: String,
    max_payload: usize,
    heartbeat: Duration,
    ping_deadline: Instant,
    cmd_rx: mpsc::UnboundedReceiver<EngineCmd>,
    ev_tx: mpsc::UnboundedSender<EngineEvent>,
    t_tx: mpsc::UnboundedSender<TEvent>,
    t_rx: mpsc::UnboundedReceiver<TEvent>,
    queue: VecDeque<Frame>,
    transport: Tr,
    /// The WebSocket probe under way.
    probe: Option<JoinHandle<Result<Ws>>>,
    /// A probed WebSocket waiting for polling to pause.
    upgrading: Option<Ws>,
    shared: Arc<AtomicU8>,
    guard: TaskGuard,
}

async fn wait_probe(p: &mut Option<JoinHandle<Result<Ws>>>) -> Result<Ws> {
    match p {
        Some(h) => {
            let r = h.await;
            *p = None;
            r.unwrap_or_else(|e| Err(Error::transport(e)))
        }
        None => std::future::pending().await,
    }
}

impl EngineTask {
    async fn run(mut self) {
        let reason = loop {
            tokio::select! {
                ev = self.t_rx.recv() => {
                    let Some(ev) = ev else { break CloseReason::TransportClose };
                    if let Err(r) = self.on_transport_event(ev).await {
                        break r;
                    }
                }
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(EngineCmd::Text(s)) => {
                        let mut out = String::with_capacity(s.len() + 1);
                        Packet::Message(&s).encode_into(&mut out);
                        self.queue.push_back(Frame::Text(out));
                        self.flush();
                    }
                    Some(EngineCmd::Binary(b)) => {
                        self.queue.push_back(Frame::Binary(b));
                        self.flush();
                    }
                    Some(EngineCmd::Close(done)) => {
                        self.close().await;
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        break CloseReason::ForcedClose;
                    }
                    None => {
                        self.close().await;
                        break CloseReason::ForcedClose;
                    }
                },
                r = wait_probe(&mut self.probe) => match r {
                    Ok(ws) => {
                        debug!("websocket probe succeeded, pausing polling");
                        self.upgrading = Some(ws);
                        if let Tr::Polling { stop_tx, .. } = &self.transport {
                            let _ = stop_tx.send(true);
                        }
                        if let Err(r) = self.maybe_finish_upgrade().await {
                            break r;
                        }
                    }
                    Err(e) => debug!("websocket probe failed, staying on polling: {e}"),
                },
                _ = tokio::time::sleep_until(self.ping_deadline) => break CloseReason::PingTimeout,
            }
        };
        debug!(?reason, "engine.io closed");
        let _ = self.ev_tx.send(EngineEvent::Closed(reason));
        drop(self.guard);
    }

    async fn on_transport_event(&mut self, ev: TEvent) -> Result<(), CloseReason> {
        let polling = matches!(self.transport, Tr::Polling { .. });
        match ev {
            TEvent::PollBody(body) if polling => {
                for item in eio::decode_payload(&body) {
                    match item {
                        Ok(PayloadItem::Packet(p)) => self.on_packet(p)?,
                        Ok(PayloadItem::Binary(b)) => self.deliver(EngineEvent::Binary(b.into())),
                        Err(e) => return Err(CloseReason::ParseError(e.to_string())),
                    }
                }
            }
            TEvent::PollPaused if polling => {
                if let Tr::Polling { paused, .. } = &mut self.transport {
                    *paused = true;
                }
                self.maybe_finish_upgrade().await?;
            }
            TEvent::PostDone(r) if polling => {
                if let Err(e) = r {
                    return Err(CloseReason::TransportError(e.to_string()));
                }
                if let Tr::Polling { post_in_flight, .. } = &mut self.transport {
                    *post_in_flight = false;
                }
                self.flush();
                self.maybe_finish_upgrade().await?;
            }
            TEvent::PollError(e) if polling => {
                return Err(CloseReason::TransportError(e.to_string()))
            }
            TEvent::WsText(t) if !polling => match Packet::decode(&t) {
                Ok(p) => self.on_packet(p)?,
                Err(e) => return Err(CloseReason::ParseError(e.to_string())),
            },
            TEvent::WsMessage(m) if !polling => self.deliver(EngineEvent::Text(m)),
            TEvent::WsBinary(b) if !polling => self.deliver(EngineEvent::Binary(b)),
            TEvent::WsClosed if !polling => return Err(CloseReason::TransportClose),
            TEvent::WsError(e) if !polling => {
                return Err(CloseReason::TransportError(e.to_string()))
            }
            // Late events of the transport we left.
            other => trace!(?other, "ignoring an event of the previous transport"),
        }
        Ok(())
    }

    fn deliver(&self, ev: EngineEvent) {
        let _ = self.ev_tx.send(ev);
    }

    fn on_packet(&mut self, p: Packet<'_>) -> Result<(), CloseReason> {
        trace!(?p, "engine.io packet");
        match p {
            Packet::Ping(data) => {
                self.ping_deadline = Instant::now() + self.heartbeat;
                self.queue
                    .push_back(Frame::Text(Packet::Pong(data).encode()));
                self.flush();
            }
            Packet::Message(m) => self.deliver(EngineEvent::Text(m.to_owned())),
            Packet::Close => return Err(CloseReason::TransportClose),
            Packet::Open(_) | Packet::Pong(_) | Packet::Upgrade | Packet::Noop => {}
        }
        Ok(())
    }

    /// Sends what is queued, if the transport can take it now.
    fn flush(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let upgrading = self.upgrading.is_some();
        match &mut self.transport {
            Tr::Polling {
                post_in_flight,
                paused,
                ..
            } => {
                if *post_in_flight || *paused || upgrading {
                    return;
                }
                let mut body = String::new();
                let mut size = 0;
                while let Some(f) = self.queue.front() {
                    let len = f.polling_len() + usize::from(size > 0);
                    if size > 0 && size + len > self.max_payload {
                        break;
                    }
                    size += len;
                    if !body.is_empty() {
                        body.push(eio::SEPARATOR);
                    }
                    match self.queue.pop_front() {
                        Some(Frame::Text(s)) => body.push_str(&s),
                        Some(Frame::Binary(b)) => eio::encode_binary_into(&b, &mut body),
                        None => break,
                    }
                }
                *post_in_flight = true;
                let http = self.http.clone();
                let url = self.post_url.clone();
                let tx = self.t_tx.clone();
                self.guard.0.retain(|h| !h.is_finished());
                self.guard.0.push(tokio::spawn(async move {
                    let r = http
                        .request(http::Method::POST, &url, Some(body))
                        .await
                        .map(drop);
                    let _ = tx.send(TEvent::PostDone(r));
                }));
            }
            Tr::Ws { out } => {
                while let Some(f) = self.queue.pop_front() {
                    let msg = match f {
                        Frame::Text(s) => Message::text(s),
                        Frame::Binary(b) => Message::Binary(b),
                    };
                    let _ = out.send(msg);
                }
            }
        }
    }

    /// Completes the upgrade once polling is paused.
    async fn maybe_finish_upgrade(&mut self) -> Result<(), CloseReason> {
        let ready = matches!(
            self.transport,
            Tr::Polling {
                post_in_flight: false,
                paused: true,
                ..
            }
        );
        if !ready {
            return Ok(());
        }
        let Some(mut ws) = self.upgrading.take() else {
            return Ok(());
        };
        if let Err(e) = ws.send(Message::text(Packet::Upgrade.encode())).await {
            return Err(CloseReason::TransportError(e.to_string()));
        }
        debug!("upgraded to websocket");
        self.transport = start_ws(ws, &self.t_tx, &mut self.guard);
        self.shared
            .store(transport_to_u8(Transport::Websocket), Ordering::Relaxed);
        self.deliver(EngineEvent::Upgraded);
        self.flush();
        Ok(())
    }

    /// Tells the server that we leave, best effort.
    async fn close(&mut self) {
        match &self.transport {
            Tr::Polling { post_in_flight, .. } => {
                let deadline = Instant::now() + Duration::from_secs(1);
                // The server refuses overlapping POSTs: let the one in flight finish.
                if *post_in_flight {
                    while let Ok(Some(ev)) =
                        tokio::time::timeout_at(deadline, self.t_rx.recv()).await
                    {
                        if matches!(ev, TEvent::PostDone(_)) {
                            break;
                        }
                    }
                }
                // What is queued goes in its own POST before the close packet: the
                // Node.js server handles a Socket.IO packet a tick later than an
                // Engine.IO close in the same payload, so a `DISCONNECT` sharing a POST
                // with the close would be lost.
                let mut body = String::new();
                for f in self.queue.drain(..) {
                    if !body.is_empty() {
                        body.push(eio::SEPARATOR);
                    }
                    match f {
                        Frame::Text(s) => body.push_str(&s),
                        Frame::Binary(b) => eio::encode_binary_into(&b, &mut body),
                    }
                }
                let http = &self.http;
                let url = &self.post_url;
                let _ = tokio::time::timeout_at(deadline, async {
                    if !body.is_empty() {
                        http.request(http::Method::POST, url, Some(body)).await?;
                    }
                    http.request(http::Method::POST, url, Some(Packet::Close.encode()))
                        .await
                })
                .await;
            }
            Tr::Ws { .. } => {
                self.flush();
                let Tr::Ws { out } = &self.transport else {
                    return;
                };
                // The writer sends what is queued, then the close frame; wait (a little)
                // for the server's close frame in answer.
                let _ = out.send(Message::Close(None));
                let deadline = Instant::now() + Duration::from_secs(1);
                while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.t_rx.recv()).await {
                    if matches!(ev, TEvent::WsClosed | TEvent::WsError(_)) {
                        break;
                    }
                }
            }
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
