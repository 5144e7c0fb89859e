//! The public API: [`ClientBuilder`], [`Client`], [`SocketBuilder`], events and handlers.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{EngineOptions, Transport};
use crate::manager::{Cmd, Dispatch, Manager, NewNamespace};
use crate::tls::TlsOptions;
use crate::url::{self, Endpoint};
use crate::{Error, Payload, Reconnection, Result};

/// A handler of events: it gets the namespace's client (to emit, or to look at its state)
/// and the event.
///
/// Handlers run one at a time, in the order the events arrived, on a task of their
/// namespace: do not block in them; spawn a task for slow or async work.
pub(crate) type EventHandler = Arc<dyn Fn(Client, Event) + Send + Sync + 'static>;

/// A handler of [`Lifecycle`] events.
pub(crate) type LifecycleHandler = Arc<dyn Fn(Client, Lifecycle) + Send + Sync + 'static>;

/// A function that computes the `auth` data on every connection attempt.
pub(crate) type AuthFn = Arc<dyn Fn() -> Value + Send + Sync + 'static>;

/// An event the server sent.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event name (a numeric name is given as its decimal string).
    pub name: String,
    /// The arguments. The connection state recovery offset is never among them.
    pub payload: Payload,
    /// Present when the server asked for an acknowledgement.
    pub ack: Option<AckSender>,
    pub(crate) offset: Option<Arc<str>>,
}

impl Event {
    /// The JSON arguments (binary values are placeholders, see [`Payload`]).
    pub fn args(&self) -> &[Value] {
        &self.payload.args
    }

    /// Deserializes argument `i` into `T` (a missing argument is `null`), with an error
    /// that names the event and the argument.
    ///
    /// ```no_run
    /// # fn f(ev: tether_client::Event) -> tether_client::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Chat { user: String, text: String }
    /// let chat: Chat = ev.arg_as(0)?;
    /// # let _ = (chat.user, chat.text); Ok(()) }
    /// ```
    pub fn arg_as<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T> {
        crate::typed::arg_of(&self.payload, i, &format!("event {:?}", self.name))
    }

    /// Deserializes every argument into `T`, a tuple (`(u32, String)`) or a `Vec`.
    pub fn args_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        crate::from_payload(&self.payload).map_err(|e| match e {
            Error::Serde { source, .. } => Error::Serde {
                context: format!("the arguments of event {:?}", self.name),
                source,
            },
            e => e,
        })
    }

    /// The connection state recovery offset the server gave this event, if any (see the
    /// crate documentation for which trailing string is an offset).
    pub fn offset(&self) -> Option<&str> {
        self.offset.as_deref()
    }
}

/// What a server with connection state recovery needs to restore a session: its private
/// id and the offset of the last event handled. Read it with [`Client::session`], keep it
/// (it is `serde`-serializable), and give it to [`ClientBuilder::session`] in a new
/// process to resume within the server's `maxDisconnectionDuration`.
///
/// ```
/// # use tether_client::Session;
/// let s = Session { pid: "p1".into(), offset: Some("o9".into()) };
/// let saved = serde_json::to_string(&s).unwrap();
/// assert_eq!(serde_json::from_str::<Session>(&saved).unwrap(), s);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// The private session id (`pid` of the `CONNECT` reply).
    pub pid: String,
    /// The offset of the last event whose handlers ran; `None` before the first.
    #[serde(default)]
    pub offset: Option<String>,
}

/// Acknowledges one event of the server. Only the first [`send`](AckSender::send) of an
/// event's ack (and of its clones) goes out.
///
/// ```no_run
/// # async fn f() -> tether_client::Result<()> {
/// use tether_client::ClientBuilder;
/// use serde_json::json;
/// let client = ClientBuilder::new("http://localhost:3000")
///     .on("question", |_client, ev| {
///         if let Some(ack) = ev.ack {
///             let _ = ack.send(json!({"answer": 42}));
///         }
///     })
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AckSender(Arc<AckInner>);

/// One allocation per event that asks for an ack, and an `Event` that stays small (it
/// is moved through the dispatch queue).
struct AckInner {
    tx: mpsc::WeakUnboundedSender<Cmd>,
    nsp: String,
    id: u64,
    sent: AtomicBool,
}

impl fmt::Debug for AckSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckSender")
            .field("nsp", &self.0.nsp)
            .field("id", &self.0.id)
            .finish()
    }
}

impl AckSender {
    pub(crate) fn new(tx: mpsc::WeakUnboundedSender<Cmd>, nsp: String, id: u64) -> Self {
        AckSender(Arc::new(AckInner {
            tx,
            nsp,
            id,
            sent: AtomicBool::new(false),
        }))
    }

    /// The ack id the server chose.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Sends the acknowledgement with these arguments. Does nothing if this ack was
    /// already sent; fails with [`Error::Closed`] if the client is gone.
    pub fn send(&self, payload: impl Into<Payload>) -> Result<()> {
        let a = &self.0;
        if a.sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let tx = a.tx.upgrade().ok_or(Error::Closed)?;
        tx.send(Cmd::Ack {
            nsp: a.nsp.clone(),
            id: a.id,
            payload: payload.into(),
        })
        .map_err(|_| Error::Closed)
    }
}

/// An item of [`Client::events`].
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// An event the server sent.
    Event(Event),
    /// A lifecycle event.
    Lifecycle(Lifecycle),
}

/// Why a namespace got disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server disconnected the socket (`socket.disconnect()` on the server). No
    /// reconnection follows.
    IoServerDisconnect,
    /// [`Client::disconnect`] or [`Client::close`]. No reconnection follows.
    IoClientDisconnect,
    /// The server sent no ping within `pingInterval + pingTimeout`.
    PingTimeout,
    /// The server closed the connection.
    TransportClose,
    /// The network failed.
    TransportError(String),
    /// The server sent a packet that could not be decoded.
    ParseError(String),
}

impl DisconnectReason {
    /// The reason as the JavaScript client names it (`"transport close"`...).
    pub fn as_str(&self) -> &'static str {
        match self {
            DisconnectReason::IoServerDisconnect => "io server disconnect",
            DisconnectReason::IoClientDisconnect => "io client disconnect",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError(_) => "transport error",
            DisconnectReason::ParseError(_) => "parse error",
        }
    }

    /// Whether the client reconnects after this (if reconnection is enabled).
    pub fn will_reconnect(&self) -> bool {
        !matches!(
            self,
            DisconnectReason::IoServerDisconnect | DisconnectReason::IoClientDisconnect
        )
    }
}

/// The connection's life, as the JavaScript client's `connect`, `connect_error`,
/// `disconnect` and Manager `reconnect*` events tell it.
///
/// The Manager events (`Reconnect*`) go to every namespace of the connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Lifecycle {
    /// The namespace is connected (again). `recovered` tells whether the server restored
    /// the session (connection state recovery), see [`Client::recovered`].
    Connect {
        /// Whether the session was recovered.
        recovered: bool,
    },
    /// The server refused the namespace (after a reconnection; the first refusal is the
    /// error of `connect()`). The namespace is closed.
    ConnectError(Error),
    /// The namespace got disconnected.
    Disconnect(DisconnectReason),
    /// Reconnection attempt `n` (from 1) starts.
    ReconnectAttempt(u32),
    /// Attempt `n` succeeded; the namespaces connect again.
    Reconnect(u32),
    /// An attempt failed.
    ReconnectError(Error),
    /// The last allowed attempt failed; the client is closed.
    ReconnectFailed,
}

#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Static(serde_json::Map<String, Value>),
    Fn(AuthFn),
}

impl Auth {
    /// The auth data for one attempt.
    pub(crate) fn eval(&self) -> serde_json::Map<String, Value> {
        match self {
            Auth::None => serde_json::Map::new(),
            Auth::Static(m) => m.clone(),
            Auth::Fn(f) => match f() {
                Value::Object(m) => m,
                Value::Null => serde_json::Map::new(),
                other => {
                    tracing::warn!(?other, "auth function returned a non-object; ignored");
                    serde_json::Map::new()
                }
            },
        }
    }
}

/// Handlers of one namespace.
#[derive(Default)]
pub(crate) struct Handlers {
    pub events: HashMap<String, EventHandler>,
    pub any: Vec<EventHandler>,
    pub lifecycle: Vec<LifecycleHandler>,
}

/// What a [`Client`] can see of its namespace.
#[derive(Debug, Default, Clone)]
pub(crate) struct Status {
    pub active: bool,
    pub connected: bool,
    pub sid: Option<String>,
    pub pid: Option<String>,
    /// The pid and the offset of the last event whose handlers ran (kept by the
    /// dispatch task, so it matches what the handlers saw).
    pub session_pid: Option<String>,
    pub offset: Option<Arc<str>>,
    pub recovered: bool,
}

/// The state [`Client::wait_connected`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conn {
    Down,
    Up,
    Closed,
}

pub(crate) struct NsShared {
    pub nsp: String,
    /// What [`Client::connect`] needs to connect the namespace again.
    pub auth: Auth,
    pub retries: u32,
    pub ack_timeout: Option<Duration>,
    pub status: Mutex<Status>,
    pub handlers: RwLock<Handlers>,
    /// Up once the connect handlers ran, down once the disconnect handlers ran.
    pub conn: tokio::sync::watch::Sender<Conn>,
}

impl NsShared {
    /// Moves the watched state, never out of `Closed`.
    pub(crate) fn set_conn(&self, c: Conn) {
        self.conn.send_if_modified(|cur| {
            if *cur == Conn::Closed || *cur == c {
                false
            } else {
                *cur = c;
                true
            }
        });
    }

    pub(crate) fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct ManagerShared {
    pub transport: Mutex<Option<Transport>>,
    /// The connection timeout, the default of [`SocketBuilder::timeout`].
    pub timeout: Duration,
}

impl ManagerShared {
    pub(crate) fn set_transport(&self, t: Option<Transport>) {
        *self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = t;
    }
}

/// Settings of the connection (the JavaScript client's Manager options).
#[derive(Clone)]
pub(crate) struct ManagerConfig {
    pub engine: Arc<EngineOptions>,
    pub reconnection: Reconnection,
    pub timeout: Duration,
    /// Retry the first connection too.
    pub retry_first: bool,
}

/// Settings of one namespace (the JavaScript client's Socket options) and its handlers.
#[derive(Clone)]
struct NsConfig {
    auth: Auth,
    retries: u32,
    ack_timeout: Option<Duration>,
    handlers: Vec<(String, EventHandler)>,
    any: Vec<EventHandler>,
    lifecycle: Vec<LifecycleHandler>,
    session: Option<Session>,
    error: Option<Error>,
}

impl Default for NsConfig {
    fn default() -> Self {
        NsConfig {
            auth: Auth::None,
            retries: 0,
            ack_timeout: None,
            handlers: Vec::new(),
            any: Vec::new(),
            lifecycle: Vec::new(),
            session: None,
            error: None,
        }
    }
}

impl NsConfig {
    fn auth(&mut self, v: Value) {
        match v {
            Value::Object(m) => self.auth = Auth::Static(m),
            Value::Null => self.auth = Auth::None,
            _ => self.error = Some(Error::Config("auth must be a JSON object".into())),
        }
    }
}

macro_rules! namespace_options {
    () => {
        /// Sets the `auth` data sent with the namespace's `CONNECT` (a JSON object;
        /// `null` for none). On a reconnection with connection state recovery, `pid` and
        /// `offset` are added to it.
        pub fn auth(mut self, auth: Value) -> Self {
            self.ns.auth(auth);
            self
        }

        /// Computes the `auth` data on every connection attempt (for example a fresh
        /// token). A returned value that is not an object is ignored.
        pub fn auth_fn(mut self, f: impl Fn() -> Value + Send + Sync + 'static) -> Self {
            self.ns.auth = Auth::Fn(Arc::new(f));
            self
        }

        /// Handles the event `event` (one handler per name; a later one replaces it).
        ///
        /// A handler gets the namespace's [`Client`] (to emit, or to look at its state) and
        /// the [`Event`], whose [`ack`](Event::ack) is set when the server asked for an
        /// acknowledgement. The handlers of a namespace run one at a time, in the order the
        /// events arrived, on a task of their own: do not block in them; spawn a task for
        /// slow or async work.
        pub fn on(
            mut self,
            event: impl Into<String>,
            handler: impl Fn(Client, Event) + Send + Sync + 'static,
        ) -> Self {
            self.ns.handlers.push((event.into(), Arc::new(handler)));
            self
        }

        /// Handles every event, before its own handler (the JavaScript client's `onAny`).
        pub fn on_any(mut self, handler: impl Fn(Client, Event) + Send + Sync + 'static) -> Self {
            self.ns.any.push(Arc::new(handler));
            self
        }

        /// Handles the namespace's [`Lifecycle`] events.
        pub fn on_lifecycle(
            mut self,
            handler: impl Fn(Client, Lifecycle) + Send + Sync + 'static,
        ) -> Self {
            self.ns.lifecycle.push(Arc::new(handler));
            self
        }

        /// At-least-once sending (the JavaScript client's `retries`): every non-volatile
        /// emit is queued, sent one at a time with an ack id, and sent again (up to
        /// `retries` more times) when its ack does not come within
        /// [`ack_timeout`](Self::ack_timeout) or the connection drops. The server's handler
        /// must call its acknowledgement for the emit to count as delivered. 0 (the
        /// default) turns it off.
        ///
        /// An emit the server never acknowledges is given up after its last try: its
        /// `emit_with_ack` fails with [`Error::Timeout`] (a plain `emit` is dropped, with a
        /// debug log), and the next queued emit goes. So that it cannot hold the queue
        /// forever, each try waits at most [`ack_timeout`](Self::ack_timeout), or the
        /// connection timeout (`timeout`, 20 s by default) if none is set (the JavaScript
        /// client, without `ackTimeout`, waits for a reconnection).
        pub fn retries(mut self, retries: u32) -> Self {
            self.ns.retries = retries;
            self
        }

        /// Resumes a session saved by [`Client::session`] (in this process or an earlier
        /// one): the first `CONNECT` sends its `pid` and `offset`, so a server with
        /// connection state recovery restores the socket id, rooms and data, and sends the
        /// events missed since that offset ([`Client::recovered`] tells whether it did;
        /// if not, the namespace connects as a new socket).
        pub fn session(mut self, session: Session) -> Self {
            self.ns.session = Some(session);
            self
        }

        /// How long to wait for each acknowledgement of a [`retries`](Self::retries) emit
        /// (the JavaScript client's `ackTimeout`; default: the connection timeout). An
        /// `emit_with_ack`'s own timeout wins for its tries.
        pub fn ack_timeout(mut self, timeout: Duration) -> Self {
            self.ns.ack_timeout = Some(timeout);
            self
        }
    };
}

/// Configures a connection and its first namespace, then connects.
///
/// ```no_run
/// # async fn f() -> tether_client::Result<()> {
/// use std::time::Duration;
/// use tether_client::{ClientBuilder, Reconnection, Transport};
/// use serde_json::json;
///
/// let client = ClientBuilder::new("http://localhost:3000")
///     .namespace("/chat")
///     .auth(json!({"token": "abc"}))
///     .transports([Transport::Polling, Transport::Websocket])
///     .reconnection(Reconnection::default().attempts(10))
///     .on("message", |_client, ev| println!("message: {:?}", ev.args()))
///     .on_any(|_client, ev| println!("any: {}", ev.name))
///     .connect()
///     .await?;
/// client.emit("message", json!("hello"))?;
/// let answer = client
///     .emit_with_ack("sum", vec![json!(1), json!(2)], Duration::from_secs(5))
///     .await?;
/// println!("{:?}", answer.args);
/// # Ok(()) }
/// ```
pub struct ClientBuilder {
    url: String,
    namespace: Option<String>,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    transports: Vec<Transport>,
    upgrade: bool,
    reconnection: Reconnection,
    timeout: Duration,
    tls: TlsOptions,
    tls_error: Option<Error>,
    cookies: bool,
    retry_first: bool,
    ns: NsConfig,
}

impl ClientBuilder {
    /// Starts configuring a client of the server at `url` (`http://host:port` or
    /// `ws://host:port`). As in the JavaScript client, a path in the URL names the
    /// namespace (`http://host/admin`), and its query is sent with every request.
    pub fn new(url: impl Into<String>) -> Self {
        ClientBuilder {
            url: url.into(),
            namespace: None,
            path: "/socket.io/".into(),
            query: Vec::new(),
            headers: Vec::new(),
            transports: vec![Transport::Polling, Transport::Websocket],
            upgrade: true,
            reconnection: Reconnection::default(),
            timeout: Duration::from_secs(20),
            tls: TlsOptions::default(),
            tls_error: None,
            cookies: false,
            retry_first: false,
            ns: NsConfig::default(),
        }
    }

    /// Keeps the cookies the server sets (`Set-Cookie` on polling responses and on the
    /// WebSocket handshake) and sends them back with every later request of this
    /// connection, reconnections included, as a browser does with `withCredentials`. Off
    /// by default; turn it on behind a load balancer with cookie-based sticky sessions,
    /// which long-polling needs (every request of a session must reach the same server).
    pub fn cookies(mut self, on: bool) -> Self {
        self.cookies = on;
        self
    }

    /// Retries the very first connection under the [`reconnection`](Self::reconnection)
    /// policy, as the JavaScript client does, instead of failing at the first error (off
    /// by default). [`connect`](Self::connect) then returns once connected, or the last
    /// attempt's error when the policy gives up (never, with unlimited attempts: put a
    /// timeout around it if needed); [`Lifecycle::ReconnectAttempt`] and
    /// [`Lifecycle::ReconnectError`] tell each try. A refusal of the namespace
    /// (`CONNECT_ERROR`) is not retried.
    pub fn retry_first_connection(mut self, on: bool) -> Self {
        self.retry_first = on;
        self
    }

    /// Trusts this root certificate (DER) for `https://` and `wss://`, instead of the
    /// platform's roots (the default). Call it once per certificate.
    pub fn tls_root_certificate(
        mut self,
        cert: rustls::pki_types::CertificateDer<'static>,
    ) -> Self {
        match &mut self.tls {
            TlsOptions::Roots(v) => v.push(cert),
            _ => self.tls = TlsOptions::Roots(vec![cert]),
        }
        self
    }

    /// Trusts the root certificates of this PEM data (`-----BEGIN CERTIFICATE-----`...)
    /// instead of the platform's roots; invalid PEM makes [`connect`](Self::connect) fail
    /// with [`Error::Config`].
    pub fn tls_root_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        match crate::tls::parse_pem(pem.as_ref()) {
            Ok(certs) => {
                for c in certs {
                    self = self.tls_root_certificate(c);
                }
            }
            Err(e) => self.tls_error = Some(e),
        }
        self
    }

    /// Uses this rustls configuration for `https://` and `wss://` (client certificates,
    /// custom verifiers, protocol versions...). Its ALPN protocols are replaced by
    /// HTTP/1.1.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = TlsOptions::Config(config);
        self
    }

    /// The namespace to connect (default: the URL's path, else `/`).
    pub fn namespace(mut self, nsp: impl Into<String>) -> Self {
        self.namespace = Some(nsp.into());
        self
    }

    /// The Engine.IO path on the server (default `/socket.io/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Adds a query parameter to every Engine.IO request (`socket.handshake.query` on the
    /// server).
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Adds a header to every HTTP request and to the WebSocket handshake.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The transports to use, in order: `[Polling, Websocket]` (the default) connects
    /// with polling and upgrades to WebSocket; `[Websocket]` connects with WebSocket only;
    /// `[Polling]` never upgrades.
    pub fn transports(mut self, transports: impl IntoIterator<Item = Transport>) -> Self {
        self.transports = transports.into_iter().collect();
        self
    }

    /// Whether to upgrade from polling to WebSocket when both are enabled (default true).
    pub fn upgrade(mut self, upgrade: bool) -> Self {
        self.upgrade = upgrade;
        self
    }

    /// How to reconnect after the connection is lost.
    pub fn reconnection(mut self, r: Reconnection) -> Self {
        self.reconnection = r;
        self
    }

    /// How long a connection attempt may take: the Engine.IO handshake, and for
    /// [`connect`](Self::connect) also the namespace's `CONNECT` (default 20 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    namespace_options!();

    /// Connects and returns once the namespace is connected and its
    /// [`Lifecycle::Connect`] handlers ran.
    ///
    /// Fails with the error of the first attempt (no retries before the first success;
    /// [`Reconnection`] applies once connected): [`Error::ConnectError`] if the server
    /// refuses the namespace, [`Error::Timeout`], [`Error::ProtocolVersion`],
    /// [`Error::Transport`]...
    pub async fn connect(self) -> Result<Client> {
        if let Some(e) = self.ns.error.clone().or(self.tls_error.clone()) {
            return Err(e);
        }
        let parsed = url::parse(&self.url)?;
        let tls = if parsed.tls {
            Some(self.tls.client_config()?)
        } else {
            None
        };
        let mut query = parsed.query;
        for (k, v) in &self.query {
            query.push(format!(
                "{}={}",
                url::encode_component(k),
                url::encode_component(v)
            ));
        }
        let mut headers = http::HeaderMap::new();
        for (k, v) in &self.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::Config(format!("invalid header name {k:?}")))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|_| Error::Config(format!("invalid header value for {k:?}")))?;
            headers.append(name, value);
        }
        if self.transports.is_empty() {
            return Err(Error::Config("no transport enabled".into()));
        }
        let engine = EngineOptions {
            endpoint: Endpoint {
                authority: parsed.authority,
                tls: parsed.tls,
                path: url::normalise_path(&self.path),
                query,
            },
            headers,
            transports: self.transports,
            upgrade: self.upgrade,
            tls,
            cookies: self
                .cookies
                .then(|| Arc::new(Mutex::new(cookie_store::CookieStore::default()))),
        };
        let cfg = ManagerConfig {
            engine: Arc::new(engine),
            reconnection: self.reconnection,
            timeout: self.timeout,
            retry_first: self.retry_first,
        };
        let nsp = normalise_namespace(self.namespace.as_deref().unwrap_or(&parsed.namespace));
        let (tx, rx) = mpsc::unbounded_channel();
        let mgr = Arc::new(ManagerShared {
            transport: Mutex::new(None),
            timeout: cfg.timeout,
        });
        let mut ns_cfg = self.ns;
        if ns_cfg.retries > 0 && ns_cfg.ack_timeout.is_none() {
            ns_cfg.ack_timeout = Some(cfg.timeout);
        }
        let (ns, client) = new_namespace(&tx, &mgr, nsp, ns_cfg);
        let (reply_tx, reply_rx) = oneshot::channel();
        Manager::spawn(cfg.clone(), rx, tx.downgrade(), mgr, ns, reply_tx);
        // With retries, each attempt has its own timeout, and the policy decides the end.
        let limit = if cfg.retry_first {
            Duration::MAX
        } else {
            cfg.timeout
        };
        let reply = async {
            match tokio::time::Instant::now().checked_add(limit) {
                Some(deadline) => tokio::time::timeout_at(deadline, reply_rx).await,
                None => Ok(reply_rx.await),
            }
        };
        match reply.await {
            Ok(Ok(Ok(()))) => Ok(client),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                let _ = tx.send(Cmd::Close { reply: None });
                Err(Error::Timeout)
            }
        }
    }
}

/// Configures another namespace on an existing connection (the JavaScript client's
/// `manager.socket(nsp)`), from [`Client::socket`].
///
/// ```no_run
/// # async fn f(client: tether_client::Client) -> tether_client::Result<()> {
/// use serde_json::json;
/// let admin = client
///     .socket("/admin")
///     .auth(json!({"token": "secret"}))
///     .on("stats", |_c, ev| println!("{:?}", ev.args()))
///     .connect()
///     .await?;
/// admin.emit("refresh", ())?;
/// # Ok(()) }
/// ```
pub struct SocketBuilder {
    tx: mpsc::UnboundedSender<Cmd>,
    mgr: Arc<ManagerShared>,
    nsp: String,
    timeout: Duration,
    ns: NsConfig,
}

impl SocketBuilder {
    namespace_options!();

    /// How long to wait for the namespace's `CONNECT` reply (default: the client's
    /// connection timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects the namespace over the shared connection, and returns once connected and
    /// its [`Lifecycle::Connect`] handlers ran.
    /// Fails with [`Error::ConnectError`] if the server refuses it, with
    /// [`Error::Config`] if this namespace is already open on the connection, and with
    /// the connection's error if the connection fails before the namespace connected.
    pub async fn connect(self) -> Result<Client> {
        if let Some(e) = self.ns.error.clone() {
            return Err(e);
        }
        let mut ns_cfg = self.ns;
        if ns_cfg.retries > 0 && ns_cfg.ack_timeout.is_none() {
            ns_cfg.ack_timeout = Some(self.timeout);
        }
        let (ns, client) = new_namespace(&self.tx, &self.mgr, self.nsp, ns_cfg);
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Cmd::AddNamespace {
                ns,
                reply: reply_tx,
            })
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(self.timeout, reply_rx).await {
            Ok(Ok(Ok(()))) => Ok(client),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                let (tx, _rx) = oneshot::channel();
                let _ = self.tx.send(Cmd::Disconnect {
                    nsp: client.namespace().to_owned(),
                    reply: tx,
                });
                Err(Error::Timeout)
            }
        }
    }
}

/// What [`ClientBuilder`] and [`SocketBuilder`] share: the options and handlers of a
/// namespace, and `connect`. Write code that configures either once:
///
/// ```no_run
/// use tether_client::{Client, ClientBuilder, NamespaceBuilder};
///
/// fn with_logging<B: NamespaceBuilder>(b: B) -> B {
///     b.on_any(|c, ev| println!("{}: {}", c.namespace(), ev.name))
/// }
///
/// # async fn f() -> tether_client::Result<()> {
/// let main = with_logging(ClientBuilder::new("http://localhost:3000")).connect().await?;
/// let admin = with_logging(main.socket("/admin")).connect().await?;
/// # let _ = admin; Ok(()) }
/// ```
pub trait NamespaceBuilder: Sized + Send {
    /// See [`ClientBuilder::auth`].
    fn auth(self, auth: Value) -> Self;
    /// See [`ClientBuilder::auth_fn`].
    fn auth_fn(self, f: impl Fn() -> Value + Send + Sync + 'static) -> Self;
    /// See [`ClientBuilder::on`].
    fn on(
        self,
        event: impl Into<String>,
        handler: impl Fn(Client, Event) + Send + Sync + 'static,
    ) -> Self;
    /// See [`ClientBuilder::on_any`].
    fn on_any(self, handler: impl Fn(Client, Event) + Send + Sync + 'static) -> Self;
    /// See [`ClientBuilder::on_lifecycle`].
    fn on_lifecycle(self, handler: impl Fn(Client, Lifecycle) + Send + Sync + 'static) -> Self;
    /// See [`ClientBuilder::retries`].
    fn retries(self, retries: u32) -> Self;
    /// See [`ClientBuilder::ack_timeout`].
    fn ack_timeout(self, timeout: Duration) -> Self;
    /// See [`ClientBuilder::session`].
    fn session(self, session: Session) -> Self;
    /// See [`ClientBuilder::timeout`] and [`SocketBuilder::timeout`].
    fn timeout(self, timeout: Duration) -> Self;
    /// Connects the namespace; see [`ClientBuilder::connect`].
    fn connect(self) -> impl std::future::Future<Output = Result<Client>> + Send;
}

macro_rules! namespace_builder {
    ($t:ty) => {
        impl NamespaceBuilder for $t {
            fn auth(self, auth: Value) -> Self {
                <$t>::auth(self, auth)
            }
            fn auth_fn(self, f: impl Fn() -> Value + Send + Sync + 'static) -> Self {
                <$t>::auth_fn(self, f)
            }
            fn on(
                self,
                event: impl Into<String>,
                handler: impl Fn(Client, Event) + Send + Sync + 'static,
            ) -> Self {
                <$t>::on(self, event, handler)
            }
            fn on_any(self, handler: impl Fn(Client, Event) + Send + Sync + 'static) -> Self {
                <$t>::on_any(self, handler)
            }
            fn on_lifecycle(
                self,
                handler: impl Fn(Client, Lifecycle) + Send + Sync + 'static,
            ) -> Self {
                <$t>::on_lifecycle(self, handler)
            }
            fn retries(self, retries: u32) -> Self {
                <$t>::retries(self, retries)
            }
            fn ack_timeout(self, timeout: Duration) -> Self {
                <$t>::ack_timeout(self, timeout)
            }
            fn session(self, session: Session) -> Self {
                <$t>::session(self, session)
            }
            fn timeout(self, timeout: Duration) -> Self {
                <$t>::timeout(self, timeout)
            }
            fn connect(self) -> impl std::future::Future<Output = Result<Client>> + Send {
                <$t>::connect(self)
            }
        }
    };
}

namespace_builder!(ClientBuilder);
namespace_builder!(SocketBuilder);

fn normalise_namespace(nsp: &str) -> String {
    if nsp.starts_with('/') {
        nsp.to_owned()
    } else {
        format!("/{nsp}")
    }
}

fn new_namespace(
    tx: &mpsc::UnboundedSender<Cmd>,
    mgr: &Arc<ManagerShared>,
    nsp: String,
    cfg: NsConfig,
) -> (NewNamespace, Client) {
    let mut handlers = Handlers {
        events: HashMap::new(),
        any: cfg.any,
        lifecycle: cfg.lifecycle,
    };
    for (name, h) in cfg.handlers {
        handlers.events.insert(name, h);
    }
    let shared = Arc::new(NsShared {
        nsp: nsp.clone(),
        auth: cfg.auth.clone(),
        retries: cfg.retries,
        ack_timeout: cfg.ack_timeout,
        status: Mutex::new(Status {
            active: true,
            session_pid: cfg.session.as_ref().map(|s| s.pid.clone()),
            offset: cfg
                .session
                .as_ref()
                .and_then(|s| s.offset.as_deref())
                .map(Arc::from),
            ..Status::default()
        }),
        handlers: RwLock::new(handlers),
        conn: tokio::sync::watch::Sender::new(Conn::Down),
    });
    let (dtx, drx) = mpsc::unbounded_channel();
    tokio::spawn(dispatch_loop(
        drx,
        tx.downgrade(),
        shared.clone(),
        mgr.clone(),
    ));
    let ns = NewNamespace {
        shared: shared.clone(),
        auth: cfg.auth,
        retries: cfg.retries,
        ack_timeout: cfg.ack_timeout,
        session: cfg.session,
        dispatch: dtx,
    };
    let client = Client {
        tx: tx.clone(),
        ns: shared,
        mgr: mgr.clone(),
    };
    (ns, client)
}

/// Runs a namespace's handlers, one event at a time.
async fn dispatch_loop(
    mut rx: mpsc::UnboundedReceiver<Dispatch>,
    tx: mpsc::WeakUnboundedSender<Cmd>,
    ns: Arc<NsShared>,
    mgr: Arc<ManagerShared>,
) {
    while let Some(d) = rx.recv().await {
        let d = match d {
            Dispatch::Ack(reply, r) => {
                let _ = reply.send(r);
                continue;
            }
            Dispatch::Ready(reply, r) => {
                let _ = reply.send(r);
                continue;
            }
            Dispatch::NewSession(pid) => {
                let mut st = ns.status();
                st.session_pid = pid;
                st.offset = None;
                continue;
            }
            d => d,
        };
        let Some(tx) = tx.upgrade() else { return };
        let client = Client {
            tx,
            ns: ns.clone(),
            mgr: mgr.clone(),
        };
        match d {
            Dispatch::Event(ev) => {
                let offset = ev.offset.clone();
                let (any, specific) = {
                    let h = ns.handlers.read().unwrap_or_else(PoisonError::into_inner);
                    (h.any.clone(), h.events.get(&ev.name).cloned())
                };
                for h in any {
                    h(client.clone(), ev.clone());
                }
                if let Some(h) = specific {
                    h(client, ev);
                } else {
                    tracing::trace!(event = %ev.name, "no handler");
                }
                if offset.is_some() {
                    ns.status().offset = offset;
                }
            }
            Dispatch::Ack(..) | Dispatch::Ready(..) | Dispatch::NewSession(_) => {}
            Dispatch::Lifecycle(l) => {
                let hs = ns
                    .handlers
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .lifecycle
                    .clone();
                for h in hs {
                    h(client.clone(), l.clone());
                }
                match l {
                    Lifecycle::Connect { .. } => ns.set_conn(Conn::Up),
                    Lifecycle::Disconnect(_) => ns.set_conn(Conn::Down),
                    _ => {}
                }
            }
        }
    }
}

/// A connected namespace: emit events, and look at its state.
///
/// Cheap to clone. Every namespace of one connection shares its Engine.IO connection;
/// the connection closes when every namespace is disconnected, when
/// [`close`](Client::close) is called, or when every `Client` handle is dropped;
/// [`connect`](Client::connect) opens it again for a disconnected namespace.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Cmd>,
    ns: Arc<NsShared>,
    mgr: Arc<ManagerShared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.ns.nsp)
            .field("status", &*self.ns.status())
            .finish()
    }
}

impl Client {
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns.nsp
    }

    /// The socket id the server gave (`socket.id` on the server), while connected.
    pub fn id(&self) -> Option<String> {
        self.ns.status().sid.clone()
    }

    /// Whether the namespace is connected now.
    pub fn connected(&self) -> bool {
        self.ns.status().connected
    }

    /// Whether the namespace is still in use: connected, or waiting to reconnect.
    pub fn active(&self) -> bool {
        self.ns.status().active
    }

    /// Whether the last (re)connection restored the previous session: the server knew
    /// our `pid`, kept our socket id and rooms, and sent the events we missed.
    pub fn recovered(&self) -> bool {
        self.ns.status().recovered
    }

    /// The private session id for connection state recovery, if the server has it on.
    pub fn pid(&self) -> Option<String> {
        self.ns.status().pid.clone()
    }

    /// The session to resume in another process ([`ClientBuilder::session`]), if the
    /// server has connection state recovery on: the `pid`, and the offset of the last
    /// event whose handlers ran (so an event received but not yet handled is sent again).
    ///
    /// Save it whenever convenient (after each event, or when the app goes to the
    /// background). [`Client::disconnect`] and [`Client::close`] end the session on the
    /// server (the server does not keep sessions of clients that leave), so a process
    /// that means to resume must exit without calling them.
    pub fn session(&self) -> Option<Session> {
        let st = self.ns.status();
        st.session_pid.as_ref().map(|pid| Session {
            pid: pid.clone(),
            offset: st.offset.as_deref().map(str::to_owned),
        })
    }

    /// The Engine.IO transport in use, if the connection is open.
    pub fn transport(&self) -> Option<Transport> {
        *self
            .mgr
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the namespace is connected (at once if it is) and its connect handlers
    /// ran; fails with [`Error::Closed`] if it is closed (disconnected for good, or
    /// reconnection gave up).
    pub async fn wait_connected(&self) -> Result<()> {
        let mut rx = self.ns.conn.subscribe();
        let state = rx
            .wait_for(|c| *c != Conn::Down)
            .await
            .map(|c| *c)
            .unwrap_or(Conn::Closed);
        match state {
            Conn::Up => Ok(()),
            _ => Err(Error::Closed),
        }
    }

    /// The namespace's events and lifecycle events from now on, as a stream (an
    /// alternative to handlers; the handlers still run). The stream buffers what you do
    /// not read yet; it ends when the namespace's handlers are dropped (the client closed
    /// and every handle gone). Each call adds a stream: call it once.
    ///
    /// ```no_run
    /// # async fn f(client: tether_client::Client) {
    /// use futures_util::StreamExt as _;
    /// use tether_client::ClientEvent;
    /// let mut events = std::pin::pin!(client.events());
    /// while let Some(e) = events.next().await {
    ///     match e {
    ///         ClientEvent::Event(ev) => println!("{}: {:?}", ev.name, ev.args()),
    ///         ClientEvent::Lifecycle(l) => println!("{l:?}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> impl futures_util::Stream<Item = ClientEvent> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = tx.clone();
        self.on_any(move |_c, ev| {
            let _ = t.send(ClientEvent::Event(ev));
        });
        self.on_lifecycle(move |_c, l| {
            let _ = tx.send(ClientEvent::Lifecycle(l));
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
    }

    /// Adds or replaces the handler of `event`.
    pub fn on(
        &self,
        event: impl Into<String>,
        handler: impl Fn(Client, Event) + Send + Sync + 'static,
    ) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .insert(event.into(), Arc::new(handler));
    }

    /// Removes the handler of `event`.
    pub fn off(&self, event: &str) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .remove(event);
    }

    /// Adds a handler of every event.
    pub fn on_any(&self, handler: impl Fn(Client, Event) + Send + Sync + 'static) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .any
            .push(Arc::new(handler));
    }

    /// Adds a handler of [`Lifecycle`] events.
    pub fn on_lifecycle(&self, handler: impl Fn(Client, Lifecycle) + Send + Sync + 'static) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .lifecycle
            .push(Arc::new(handler));
    }

    fn check(&self, event: &str) -> Result<()> {
        if tether_proto::sio::RESERVED_EVENTS.contains(&event) {
            return Err(Error::ReservedEvent(event.to_owned()));
        }
        if !self.active() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn send_emit(
        &self,
        event: &str,
        payload: Payload,
        volatile: bool,
        ack: Option<(Duration, oneshot::Sender<Result<Payload>>)>,
    ) -> Result<()> {
        self.check(event)?;
        self.tx
            .send(Cmd::Emit {
                nsp: self.ns.nsp.clone(),
                event: event.to_owned(),
                payload,
                volatile,
                ack,
            })
            .map_err(|_| Error::Closed)
    }

    /// Emits an event. While disconnected, it is buffered and sent once the namespace
    /// connects again (with [`retries`](ClientBuilder::retries), it is queued for
    /// at-least-once delivery instead).
    ///
    /// Fails at once for a reserved event name, or if the client is closed.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<()> {
        self.send_emit(event, payload.into(), false, None)
    }

    /// Emits a volatile event: it is dropped, not buffered, unless the namespace is
    /// connected now. Volatile events bypass the [`retries`](ClientBuilder::retries) queue.
    pub fn emit_volatile(&self, event: &str, payload: impl Into<Payload>) -> Result<()> {
        self.send_emit(event, payload.into(), true, None)
    }

    /// Emits an event and waits for the server's acknowledgement.
    ///
    /// It returns after the handlers of every event the server sent before the
    /// acknowledgement ran (one order per namespace).
    ///
    /// Fails with [`Error::Timeout`] if it does not come within `timeout` (the event is
    /// then removed from the send buffer if it was still there), and with
    /// [`Error::Disconnected`] if the connection drops after the event was sent. With
    /// [`retries`](ClientBuilder::retries), `timeout` applies to each try, and the error
    /// comes after the last one.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload> {
        let (tx, rx) = oneshot::channel();
        self.send_emit(event, payload.into(), false, Some((timeout, tx)))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Emits an event whose arguments are any serializable value: a tuple is several
    /// arguments, anything else one (see [`to_payload`](crate::to_payload)).
    ///
    /// ```no_run
    /// # fn f(client: tether_client::Client) -> tether_client::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Chat<'a> { user: &'a str, text: &'a str }
    /// client.emit_serde("chat", &(Chat { user: "ann", text: "hi" }, 42))?; // two arguments
    /// # Ok(()) }
    /// ```
    pub fn emit_serde<T: serde::Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<()> {
        self.emit(event, crate::to_payload(args)?)
    }

    /// Emits serializable arguments (as [`emit_serde`](Self::emit_serde)) and deserializes
    /// the acknowledgement's arguments into `R` (a tuple, or a `Vec`; see
    /// [`from_payload`](crate::from_payload)).
    ///
    /// ```no_run
    /// # async fn f(client: tether_client::Client) -> tether_client::Result<()> {
    /// use std::time::Duration;
    /// let (sum,): (i64,) = client.emit_with_ack_serde("sum", &(1, 2), Duration::from_secs(5)).await?;
    /// # let _ = sum; Ok(()) }
    /// ```
    pub async fn emit_with_ack_serde<T, R>(
        &self,
        event: &str,
        args: &T,
        timeout: Duration,
    ) -> Result<R>
    where
        T: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let p = self
            .emit_with_ack(event, crate::to_payload(args)?, timeout)
            .await?;
        crate::from_payload(&p).map_err(|e| match e {
            Error::Serde { source, .. } => Error::Serde {
                context: format!("the acknowledgement of {event:?}"),
                source,
            },
            e => e,
        })
    }

    /// Connects another namespace over the same connection.
    pub fn socket(&self, nsp: impl AsRef<str>) -> SocketBuilder {
        SocketBuilder {
            tx: self.tx.clone(),
            mgr: self.mgr.clone(),
            nsp: normalise_namespace(nsp.as_ref()),
            timeout: self.mgr.timeout,
            ns: NsConfig::default(),
        }
    }

    /// Connects the namespace again after it was disconnected for good (by
    /// [`disconnect`](Self::disconnect), [`close`](Self::close), the server, or a
    /// reconnection policy that gave up), with the same handlers, auth and options, as the
    /// JavaScript client's `socket.connect()`; the connection opens again if it had closed.
    /// The saved [`session`](Self::session) goes with the `CONNECT`, so a server that
    /// still holds it recovers it. Returns at once if the namespace is active already.
    pub async fn connect(&self) -> Result<()> {
        {
            let mut st = self.ns.status();
            if st.active {
                return Ok(());
            }
            st.active = true;
        }
        self.ns.conn.send_replace(Conn::Down);
        let session = self.session();
        let (dtx, drx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch_loop(
            drx,
            self.tx.downgrade(),
            self.ns.clone(),
            self.mgr.clone(),
        ));
        let ns = NewNamespace {
            shared: self.ns.clone(),
            auth: self.ns.auth.clone(),
            retries: self.ns.retries,
            ack_timeout: self.ns.ack_timeout,
            session,
            dispatch: dtx,
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        if self
            .tx
            .send(Cmd::AddNamespace {
                ns,
                reply: reply_tx,
            })
            .is_err()
        {
            self.ns.status().active = false;
            return Err(Error::Closed);
        }
        match tokio::time::timeout(self.mgr.timeout, reply_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                let (tx, _rx) = oneshot::channel();
                let _ = self.tx.send(Cmd::Disconnect {
                    nsp: self.ns.nsp.clone(),
                    reply: tx,
                });
                Err(Error::Timeout)
            }
        }
    }

    /// Leaves the namespace (sends a `DISCONNECT`; no reconnection). Pending
    /// acknowledgements fail with [`Error::Closed`]. When the last namespace leaves, the
    /// connection closes; this returns once it did.
    pub async fn disconnect(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Cmd::Disconnect {
                nsp: self.ns.nsp.clone(),
                reply: tx,
            })
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Leaves every namespace and closes the connection.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Close { reply: Some(tx) }).is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_evaluation() {
        assert!(Auth::None.eval().is_empty());
        let mut cfg = NsConfig::default();
        cfg.auth(json!({"a": 1}));
        assert_eq!(cfg.auth.eval()["a"], 1);
        cfg.auth(json!(3));
        assert!(cfg.error.is_some());
        let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n2 = n.clone();
        let f = Auth::Fn(Arc::new(
            move || json!({"n": n2.fetch_add(1, Ordering::SeqCst)}),
        ));
        assert_eq!(f.eval()["n"], 0);
        assert_eq!(f.eval()["n"], 1);
        assert!(Auth::Fn(Arc::new(|| json!("x"))).eval().is_empty());
    }

    #[test]
    fn reasons() {
        assert_eq!(DisconnectReason::TransportClose.as_str(), "transport close");
        assert!(DisconnectReason::PingTimeout.will_reconnect());
        assert!(!DisconnectReason::IoServerDisconnect.will_reconnect());
        assert_eq!(normalise_namespace("admin"), "/admin");
        assert_eq!(normalise_namespace("/"), "/");
    }

    #[tokio::test]
    async fn builder_rejects_bad_input() {
        let e = ClientBuilder::new("http://127.0.0.1:1")
            .auth(json!([1]))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)));
        let e = ClientBuilder::new("wss://127.0.0.1:1")
            .tls_root_certificates_pem("no pem here")
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        let e = ClientBuilder::new("http://127.0.0.1:1")
            .header("bad header", "x")
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)));
        let e = ClientBuilder::new("http://127.0.0.1:1")
            .transports([])
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)));
    }
}
