//! The builders: [`ClientBuilder`] (a connection and its first namespace),
//! [`SocketBuilder`] (another namespace on it, from [`Client::socket`]), and the
//! [`NamespaceBuilder`] trait of both.
//!
//! `connect` turns the options into the manager's configuration, starts the manager task
//! (`manager`) and the namespace's handle (`client`), and waits for the `CONNECT`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Reconnection;
use crate::client::{Client, EventHandler, Handlers, LifecycleHandler};
use crate::error::{Error, Result};
use crate::event::{Event, Lifecycle, Session};
use crate::manager::{Manager, ManagerConfig};
use crate::state::{Auth, Cmd, Conn, ManagerShared, NewNamespace, NsShared, Status};
use crate::tls::{self, TlsOptions};
use crate::transport::{EngineOptions, Transport};
use crate::url::{self, Endpoint};

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
        match tls::parse_pem(pem.as_ref()) {
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
        nsp,
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
        conn: tokio::sync::watch::Sender::new(Conn::Down),
    });
    let (client, dispatch) = Client::open(tx, mgr, shared.clone(), handlers);
    let ns = NewNamespace {
        shared,
        auth: cfg.auth,
        retries: cfg.retries,
        ack_timeout: cfg.ack_timeout,
        session: cfg.session,
        dispatch,
    };
    (ns, client)
}

/// [`Client::socket`] lives here, beside the builder it returns, so that the handle's
/// module does not depend on the builders.
impl Client {
    /// Connects another namespace over the same connection.
    pub fn socket(&self, nsp: impl AsRef<str>) -> SocketBuilder {
        SocketBuilder {
            tx: self.commands().clone(),
            mgr: self.manager().clone(),
            nsp: normalise_namespace(nsp.as_ref()),
            timeout: self.manager().timeout,
            ns: NsConfig::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_option() {
        let mut cfg = NsConfig::default();
        cfg.auth(json!({"a": 1}));
        assert_eq!(cfg.auth.eval()["a"], 1);
        assert!(cfg.error.is_none());
        cfg.auth(Value::Null);
        assert!(matches!(cfg.auth, Auth::None));
        cfg.auth(json!(3));
        assert!(cfg.error.is_some());
    }

    #[test]
    fn namespaces_are_normalised() {
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
