use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use tether_engine::{CloseReason, Engine, EngineSocket, Handler, Message};

use crate::adapter::AdapterKind;
use crate::client::{Client, Namespaces};
use crate::cluster::{BackendError, Cluster, ClusterBackend, ClusterConfig};
use crate::config::ServerConfig;
use crate::handler::{boxed, boxed_middleware, Middleware};
use crate::namespace::{AckSender, Namespace, NsHandlers, Observers, SocketRef};
use crate::recovery::RecoveryConfig;
use crate::sync::{MutexExt as _, RwLockExt as _};

type Predicate = Arc<dyn Fn(&str, Option<&Value>) -> bool + Send + Sync>;

struct Dynamic {
    predicate: Predicate,
    handlers: Arc<NsHandlers>,
    recovery: Option<RecoveryConfig>,
}

pub(crate) struct ServerInner {
    pub(crate) config: ServerConfig,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    dynamic: RwLock<Vec<Dynamic>>,
    /// The adapter every namespace gets, chosen when the server is built.
    adapters: AdapterKind,
    /// Connections waiting for their connect timeout, oldest first; one task sweeps them
    /// (cheaper than a timer task per connection).
    connect_deadlines: Mutex<VecDeque<(Instant, Weak<Client>)>>,
    sweeper: AtomicBool,
    /// What [`Server::with_state`] set, for the `State<T>` extractor (its namespaces
    /// share it).
    state: Arc<RwLock<http::Extensions>>,
    /// CONNECTs under way per namespace name (counted only with
    /// `cleanup_empty_child_namespaces`).
    pending_connects: Mutex<HashMap<String, usize>>,
    /// Observers of every namespace's sockets (see `crate::namespace::Observer`).
    pub(crate) observers: Arc<Observers>,
    /// What the instruments built on the server (`crate::metrics`) keep per server, one
    /// value per type; the server itself never reads it.
    pub(crate) instruments: Mutex<http::Extensions>,
}

impl ServerInner {
    /// Removes the dynamic child `name` if it has no socket, no CONNECT under way and
    /// no session kept on this node (`cleanup_empty_child_namespaces`): a client that
    /// dropped for a moment still recovers; the child goes once its sessions expired.
    pub(crate) fn cleanup_child(self: &Arc<Self>, name: &str) {
        if !self.config.cleanup_empty_child_namespaces {
            return;
        }
        let Some(ns) = self.namespaces.reading().get(name).cloned() else {
            return;
        };
        if let Some(window) = ns.kept_sessions_window() {
            // Look again once they have expired (a recovery may take them first).
            let server = Arc::downgrade(self);
            let name = name.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(window + Duration::from_millis(100)).await;
                if let Some(server) = server.upgrade() {
                    server.cleanup_child(&name);
                }
            });
            return;
        }
        // Lock order as in `namespace_for`: the dynamic list, then the namespaces.
        let dynamic = self.dynamic.reading();
        if !dynamic
            .iter()
            .any(|d| Arc::ptr_eq(&d.handlers, &ns.handlers))
        {
            return;
        }
        let mut map = self.namespaces.writing();
        let same = map.get(name).is_some_and(|n| Arc::ptr_eq(n, &ns));
        let pending = self.pending_connects.locked().contains_key(name);
        if same && !pending && ns.sockets.reading().is_empty() {
            map.remove(name);
            tracing::debug!(nsp = name, "empty child namespace removed");
        }
    }

    pub(crate) fn watch_connect_timeout(self: &Arc<Self>, client: &Arc<Client>) {
        let deadline = Instant::now() + self.config.connect_timeout;
        self.connect_deadlines
            .locked()
            .push_back((deadline, Arc::downgrade(client)));
        if !self.sweeper.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let Some(server) = weak.upgrade() else { return };
                    let now = Instant::now();
                    let due: Vec<_> = {
                        let mut q = server.connect_deadlines.locked();
                        let n = q.iter().take_while(|(d, _)| *d <= now).count();
                        q.drain(..n).collect()
                    };
                    for (_, c) in due {
                        if let Some(c) = c.upgrade() {
                            c.close_if_idle();
                        }
                    }
                }
            });
        }
    }

    /// A namespace that exists already.
    pub(crate) fn existing_namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.reading().get(name).cloned()
    }

    /// Every namespace that exists now.
    pub(crate) fn all_namespaces(&self) -> Vec<Arc<Namespace>> {
        self.namespaces.reading().values().cloned().collect()
    }

    fn new_namespace(
        &self,
        name: String,
        handlers: Arc<NsHandlers>,
        recovery: Option<RecoveryConfig>,
    ) -> Arc<Namespace> {
        Namespace::new(
            name,
            handlers,
            self.adapters.clone(),
            recovery,
            self.observers.clone(),
            self.state.clone(),
        )
    }
}

impl Namespaces for ServerInner {
    fn namespace_for(&self, name: &str, auth: Option<&Value>) -> Option<Arc<Namespace>> {
        if let Some(ns) = self.namespaces.reading().get(name) {
            return Some(ns.clone());
        }
        let dynamic = self.dynamic.reading();
        let parent = dynamic.iter().find(|d| (d.predicate)(name, auth))?;
        let mut map = self.namespaces.writing();
        Some(
            map.entry(name.to_owned())
                .or_insert_with(|| {
                    self.new_namespace(
                        name.to_owned(),
                        parent.handlers.clone(),
                        parent.recovery.clone(),
                    )
                })
                .clone(),
        )
    }

    /// Counted only with `cleanup_empty_child_namespaces` (no cost otherwise). Counted
    /// before the namespace is looked up, so a cleanup never removes a namespace a
    /// CONNECT is on its way to.
    fn connect_started(&self, name: &str) -> bool {
        if !self.config.cleanup_empty_child_namespaces {
            return false;
        }
        *self
            .pending_connects
            .locked()
            .entry(name.to_owned())
            .or_default() += 1;
        true
    }

    fn connect_ended(self: Arc<Self>, name: &str) {
        {
            let mut pending = self.pending_connects.locked();
            if let Some(n) = pending.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(name);
                }
            }
        }
        self.cleanup_child(name);
    }

    fn socket_left(self: Arc<Self>, name: &str) {
        self.cleanup_child(name);
    }
}

/// The backend handler that turns Engine.IO sessions into Socket.IO clients.
#[doc(hidden)]
pub struct SioHandler {
    inner: Arc<ServerInner>,
}

impl Handler for SioHandler {
    type Conn = Arc<Client>;

    fn on_open(&self, socket: &Arc<EngineSocket>) -> Arc<Client> {
        self.inner.observers.conn_opened(socket);
        let client = Client::new(socket.clone(), self.inner.clone(), &self.inner.config);
        self.inner.watch_connect_timeout(&client);
        client
    }

    fn on_message(&self, conn: &Arc<Client>, msg: Message<'_>) {
        self.inner.observers.message_in(match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        });
        conn.on_message(msg);
    }

    fn on_close(&self, conn: &Arc<Client>, reason: CloseReason) {
        conn.on_close(reason);
        self.inner.observers.conn_closed(reason);
    }

    fn on_upgrade(&self, conn: &Arc<Client>) {
        for s in conn.sockets() {
            self.inner.observers.transport_changed(&s);
        }
    }
}

/// The Socket.IO server. Cheap to clone.
///
/// ```no_run
/// use tether::{AckSender, Payload, RecoveryConfig, Server, ServerConfig, SocketRef};
///
/// # async fn run() -> Result<(), tether::Error> {
/// let io = Server::new(ServerConfig {
///     recovery: Some(RecoveryConfig::default()),
///     ..ServerConfig::default()
/// });
/// io.of("/").on_connection(|socket: SocketRef| {
///     socket.on("echo", |payload: Payload, ack: AckSender| {
///         let _ = ack.send(payload);
///     });
/// });
/// io.listen("127.0.0.1:3000".parse().unwrap()).await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
    engine: Engine<SioHandler>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server::new(ServerConfig::default())
    }
}

impl Server {
    /// A server with these options, on one node (the in-memory adapter). The main
    /// namespace `/` exists from the start.
    pub fn new(config: ServerConfig) -> Self {
        Self::with_adapters(config, AdapterKind::Memory)
    }

    /// A server that is one node of a cluster, through a shared backend (see
    /// [`crate::cluster`]): broadcasts, offsets and recovery are cluster-wide. It starts
    /// the cluster runtime first, so that the node receives every entry appended from
    /// then on; serve it afterwards. `uid` names this process in the cluster and must be
    /// unique (for example `host:port:pid:random`).
    ///
    /// ```no_run
    /// # async fn f(backend: std::sync::Arc<dyn tether::cluster::ClusterBackend>) -> Result<(), tether::cluster::BackendError> {
    /// use tether::{Server, ServerConfig};
    /// let io = Server::join_cluster(ServerConfig::default(), "node-a".into(), backend, Default::default()).await?;
    /// # let _ = io; Ok(()) }
    /// ```
    pub async fn join_cluster(
        config: ServerConfig,
        uid: String,
        backend: Arc<dyn ClusterBackend>,
        cluster: ClusterConfig,
    ) -> Result<Self, BackendError> {
        let cluster = Cluster::start(uid, backend, cluster).await?;
        Ok(Self::with_adapters(config, AdapterKind::Cluster(cluster)))
    }

    fn with_adapters(config: ServerConfig, adapters: AdapterKind) -> Self {
        let inner = Arc::new(ServerInner {
            config,
            namespaces: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(Vec::new()),
            adapters,
            connect_deadlines: Mutex::new(VecDeque::new()),
            sweeper: AtomicBool::new(false),
            state: Arc::new(RwLock::new(http::Extensions::new())),
            pending_connects: Mutex::new(HashMap::new()),
            observers: Arc::default(),
            instruments: Mutex::new(http::Extensions::new()),
        });
        let engine = Engine::new(
            inner.config.engine.clone(),
            SioHandler {
                inner: inner.clone(),
            },
        );
        let server = Server { inner, engine };
        server.of("/");
        server
    }

    pub(crate) fn inner(&self) -> &Arc<ServerInner> {
        &self.inner
    }

    /// The options in force.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Adds a value that every handler can take with the
    /// [`State<T>`](crate::extract::State) extractor (one value per type; a second one of
    /// the same type replaces the first). It is cloned for each handler that takes it.
    ///
    /// ```no_run
    /// # use tether::{Server, extract::State};
    /// #[derive(Clone)]
    /// struct Db(std::sync::Arc<String>);
    ///
    /// let io = Server::default().with_state(Db(std::sync::Arc::new("postgres://".into())));
    /// io.of("/").on_connection(|State(db): State<Db>| println!("{}", db.0));
    /// ```
    pub fn with_state<T: Clone + Send + Sync + 'static>(self, state: T) -> Self {
        self.inner.state.writing().insert(state);
        self
    }

    /// The namespace with this name, created on first use.
    pub fn of(&self, name: &str) -> Arc<Namespace> {
        let name = if name.starts_with('/') {
            name.to_owned()
        } else {
            format!("/{name}")
        };
        let mut map = self.inner.namespaces.writing();
        map.entry(name.clone())
            .or_insert_with(|| {
                self.inner.new_namespace(
                    name,
                    Arc::new(NsHandlers::default()),
                    self.inner.config.recovery.clone(),
                )
            })
            .clone()
    }

    /// Dynamic namespaces: every CONNECT to a namespace that does not exist yet and that
    /// `predicate` accepts creates it, sharing the middlewares and connection handler set
    /// on the returned handle.
    ///
    /// ```no_run
    /// # fn f(io: tether::Server) {
    /// let workspaces = io.of_dynamic(|name, _auth| name.starts_with("/workspace-"));
    /// workspaces.on_connection(|socket: tether::SocketRef| {
    ///     let _ = socket.emit("hello", socket.nsp());
    /// });
    /// # }
    /// ```
    pub fn of_dynamic<F>(&self, predicate: F) -> DynamicNamespace
    where
        F: Fn(&str, Option<&Value>) -> bool + Send + Sync + 'static,
    {
        let handlers = Arc::new(NsHandlers::default());
        self.inner.dynamic.writing().push(Dynamic {
            predicate: Arc::new(predicate),
            handlers: handlers.clone(),
            recovery: self.inner.config.recovery.clone(),
        });
        DynamicNamespace { handlers }
    }

    /// The cluster runtime, when the server was built with
    /// [`join_cluster`](Self::join_cluster).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.inner.adapters {
            AdapterKind::Cluster(c) => Some(c),
            AdapterKind::Memory => None,
        }
    }

    /// The Engine.IO service, to mount in hyper or axum (see [`crate::layer`]).
    pub fn service(&self) -> Engine<SioHandler> {
        self.engine.clone()
    }

    /// Serves on `addr` (accept backlog 1024) until the process ends.
    pub async fn listen(&self, addr: SocketAddr) -> Result<(), crate::Error> {
        let listener = tether_engine::bind(addr)?;
        tether_engine::serve(listener, self.engine.clone()).await?;
        Ok(())
    }

    /// Serves on a bound listener until `shutdown` completes, then closes every
    /// connection as [`DisconnectReason::ServerShutdown`](crate::DisconnectReason)
    /// (recoverable) and returns.
    pub async fn serve_with_shutdown(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), crate::Error> {
        tether_engine::serve_with_shutdown(listener, self.engine.clone(), shutdown).await?;
        self.close().await;
        Ok(())
    }

    /// Closes every connection (recoverable: "server shutting down") and waits up to
    /// 5 s for them to flush.
    pub async fn close(&self) {
        self.engine.shutdown(Duration::from_secs(5)).await;
        if let Some(c) = self.cluster() {
            c.flush().await;
        }
    }

    /// How many Engine.IO connections are open.
    pub fn connection_count(&self) -> usize {
        self.engine.session_count()
    }
}

/// The handle on a family of dynamic namespaces.
#[derive(Clone)]
pub struct DynamicNamespace {
    handlers: Arc<NsHandlers>,
}

impl std::fmt::Debug for DynamicNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynamicNamespace")
    }
}

impl DynamicNamespace {
    /// Adds a connect middleware to every child namespace (see
    /// [`Namespace::use_middleware`]).
    pub fn use_middleware<H: Middleware<M>, M>(&self, h: H) {
        self.handlers.add_middleware(boxed_middleware(h));
    }

    /// Sets the connection handler of every child namespace (see
    /// [`Namespace::on_connection`]).
    pub fn on_connection<H: crate::handler::Handler<M>, M>(&self, h: H) {
        self.handlers.set_on_connection(boxed(h));
    }

    /// Sets the extraction-error hook of every child namespace (see
    /// [`Namespace::on_extract_error`]).
    pub fn on_extract_error<F>(&self, f: F)
    where
        F: Fn(SocketRef, crate::Error, Option<AckSender>) + Send + Sync + 'static,
    {
        self.handlers.set_on_extract_error(Arc::new(f));
    }
}
