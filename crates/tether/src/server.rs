use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use tether_engine::{CloseReason, Engine, EngineSocket, Handler, Message};

use crate::client::Client;
use crate::cluster::{BackendError, Cluster, ClusterBackend, ClusterConfig};
use crate::handlers::NsHandlers;
use crate::namespace::Namespace;
use crate::sync::{MutexExt as _, RwLockExt as _};
use crate::{ConnectError, RecoveryConfig, ServerConfig, SocketRef};

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
    cluster: OnceLock<Arc<Cluster>>,
    /// Connections waiting for their connect timeout, oldest first; one task sweeps them
    /// (cheaper than a timer task per connection).
    connect_deadlines: Mutex<VecDeque<(Instant, Weak<Client>)>>,
    sweeper: AtomicBool,
    /// Observers of every namespace's sockets (see `crate::observe`).
    pub(crate) observers: Arc<crate::observe::Observers>,
    /// The live counters, once metrics are registered (see `crate::metrics`).
    pub(crate) metrics: OnceLock<crate::metrics::LiveMetrics>,
}

impl ServerInner {
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

    /// Extends the life of this node's live records in the cluster, and rewrites the ones
    /// the backend lost. At most one refresh waits for the backend at a time.
    pub(crate) fn refresh_live_records(&self, cluster: &Cluster) {
        if cluster.refresh_pending() {
            return;
        }
        for ns in self.all_namespaces() {
            ns.refresh_live_records(cluster);
        }
        cluster.refresh_queued();
    }

    fn new_namespace(
        &self,
        name: String,
        handlers: Arc<NsHandlers>,
        recovery: Option<RecoveryConfig>,
    ) -> Arc<Namespace> {
        let ns = Namespace::new(name, handlers, recovery, self.observers.clone());
        if let Some(c) = self.cluster.get() {
            ns.attach_cluster(c.clone());
        }
        ns
    }

    /// The namespace a CONNECT names: a static one, or a new child of a dynamic one.
    pub(crate) fn namespace_for(&self, name: &str, auth: Option<&Value>) -> Option<Arc<Namespace>> {
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
        Client::new(socket.clone(), self.inner.clone())
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
/// use tether::{Server, ServerConfig, RecoveryConfig};
///
/// # async fn run() -> Result<(), tether::Error> {
/// let io = Server::new(ServerConfig {
///     recovery: Some(RecoveryConfig::default()),
///     ..ServerConfig::default()
/// });
/// io.of("/").on_connection(|socket| {
///     socket.on("echo", |_socket, payload, ack| {
///         if let Some(ack) = ack {
///             ack.send(payload);
///         }
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
    /// A server with these options. The main namespace `/` exists from the start.
    pub fn new(config: ServerConfig) -> Self {
        let inner = Arc::new(ServerInner {
            config,
            namespaces: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(Vec::new()),
            cluster: OnceLock::new(),
            connect_deadlines: Mutex::new(VecDeque::new()),
            sweeper: AtomicBool::new(false),
            observers: Arc::default(),
            metrics: OnceLock::new(),
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
    /// workspaces.on_connection(|socket| {
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

    /// Joins a cluster through a shared backend (see [`crate::cluster`]): broadcasts,
    /// offsets and recovery become cluster-wide. Call it before serving, so that this node
    /// receives every entry from then on. `uid` names this process in the cluster and
    /// must be unique (for example `host:port:pid:random`).
    pub async fn attach_cluster(
        &self,
        uid: String,
        backend: Arc<dyn ClusterBackend>,
        config: ClusterConfig,
    ) -> Result<(), BackendError> {
        let cluster = Cluster::start(uid, backend, Arc::downgrade(&self.inner), config).await?;
        for ns in self.inner.all_namespaces() {
            ns.attach_cluster(cluster.clone());
        }
        let _ = self.inner.cluster.set(cluster);
        Ok(())
    }

    /// The cluster runtime, when [`attach_cluster`](Self::attach_cluster) was called.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.get()
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
        if let Some(c) = self.inner.cluster.get() {
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
    /// Adds a connect middleware to every child namespace.
    pub fn use_middleware<F, Fut>(&self, f: F)
    where
        F: Fn(SocketRef, Option<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.handlers.add_middleware(f);
    }

    /// Sets the connection handler of every child namespace.
    pub fn on_connection<F>(&self, f: F)
    where
        F: Fn(&SocketRef) + Send + Sync + 'static,
    {
        self.handlers.set_on_connection(f);
    }
}
