//! A namespace: this node's sockets and rooms, the application's handlers, and its
//! adapter. The recovery path reads top to bottom in [`Namespace::connect`].
//!
//! One unit with its sockets: the namespace's maps hold them and it drives their state
//! (pending, registered, closed) under one lock order, and a socket reaches its namespace
//! on every event. So [`Socket`] lives here (`socket.rs`), with what the unit stores of
//! the application (`handlers.rs`) and the observer hook it calls (`observe.rs`). It
//! reaches its connection through [`Connection`], which the client implements. The
//! layers above add to these types: the extractors (`crate::extract`), the handler
//! traits and their registration (`crate::handler`: `Socket::on`,
//! `Namespace::on_connection`, ...) and the broadcast operators (`crate::operators`:
//! `Namespace::to`, `Socket::broadcast`, ...).

mod handlers;
mod local;
mod observe;
mod socket;

pub(crate) use handlers::{BoxedMiddleware, NsHandlers};
pub(crate) use local::socket_info;
pub(crate) use observe::{Observer, Observers};
pub use socket::{AckSender, Parts, Socket, SocketRef};
pub(crate) use socket::{BoxedHandler, Connection, Kind, Origin, State};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use serde_json::Value;
use tether_engine::{CloseReason, Sid};
use tether_proto::sio::PacketType;

use crate::adapter::{
    Adapter, AdapterKind, BroadcastOptions, LocalSockets, Retiring, SocketsAction,
};
use crate::cluster::ServerSideAck;
use crate::error::{ConnectError, Error};
use crate::reason::DisconnectReason;
use crate::recovery::{
    self, RecoveryConfig, RecoveryFailure, RecoveryMetrics, RecoveryMetricsSnapshot, Room,
};
use crate::sync::RwLockExt as _;
use crate::{encode, Payload};

/// How long a half-open socket may take to answer the probe that decides whether its pid
/// can be taken over.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

type ServerSideHandler = Arc<dyn Fn(Payload, Option<ServerSideAck>) + Send + Sync>;

/// A namespace: its sockets, rooms, middlewares and, when enabled, recovery.
///
/// ```no_run
/// # async fn f(io: tether::Server) {
/// let chat = io.of("/chat");
/// #[derive(serde::Deserialize)]
/// struct Auth { token: String }
///
/// chat.use_middleware(|tether::extract::Data(auth): tether::extract::Data<Auth>| async move {
///     match auth.token.is_empty() {
///         false => Ok(()),
///         true => Err(tether::ConnectError::new("no token")),
///     }
/// });
/// chat.on_connection(|socket: tether::SocketRef| {
///     socket.on("say", |socket: tether::SocketRef, payload: tether::Payload| {
///         let _ = socket.broadcast().emit("said", payload);
///     });
/// });
/// # }
/// ```
pub struct Namespace {
    name: String,
    pub(crate) handlers: Arc<NsHandlers>,
    /// Which adapter this server's namespaces get.
    kind: AdapterKind,
    adapter: RwLock<Arc<dyn Adapter>>,
    metrics: RecoveryMetrics,
    pub(crate) sockets: RwLock<HashMap<Sid, SocketRef>>,
    pub(crate) rooms: RwLock<HashMap<Room, HashMap<Sid, SocketRef>>>,
    /// Registered sockets with a pid, by pid.
    live: Mutex<HashMap<String, Weak<Socket>>>,
    ack_ids: AtomicU64,
    /// Handlers of events from other nodes.
    server_side: RwLock<HashMap<String, ServerSideHandler>>,
    /// The server's observers (admin UI, metrics), told of socket lifecycle events.
    pub(crate) observers: Arc<Observers>,
    /// What [`Server::with_state`](crate::Server::with_state) set, shared by the
    /// server's namespaces, for the `State<T>` extractor.
    pub(crate) server_state: Arc<RwLock<http::Extensions>>,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish()
    }
}

impl Namespace {
    pub(crate) fn new(
        name: String,
        handlers: Arc<NsHandlers>,
        kind: AdapterKind,
        recovery: Option<RecoveryConfig>,
        observers: Arc<Observers>,
        server_state: Arc<RwLock<http::Extensions>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|weak: &Weak<Namespace>| {
            let local: Weak<dyn LocalSockets> = weak.clone();
            Namespace {
                adapter: RwLock::new(kind.build(&name, local, recovery)),
                name,
                handlers,
                kind,
                metrics: RecoveryMetrics::default(),
                sockets: RwLock::new(HashMap::new()),
                rooms: RwLock::new(HashMap::new()),
                live: Mutex::new(HashMap::new()),
                ack_ids: AtomicU64::new(0),
                server_side: RwLock::new(HashMap::new()),
                observers,
                server_state,
            }
        })
    }

    /// The namespace's name, such as `/` or `/chat`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets what runs when a handler's arguments cannot be extracted (the handler is then
    /// not called): the socket, the error, and the [`AckSender`] when
    /// the client asked for an answer. Without it the client gets no answer. See
    /// [`crate::extract`].
    pub fn on_extract_error<F>(&self, f: F)
    where
        F: Fn(SocketRef, Error, Option<AckSender>) + Send + Sync + 'static,
    {
        self.handlers.set_on_extract_error(Arc::new(f));
    }

    /// Enables (or with `None` disables) connection state recovery here, overriding the
    /// server's default. Set it before clients connect.
    pub fn set_recovery(self: &Arc<Self>, config: Option<RecoveryConfig>) {
        let local: Weak<dyn LocalSockets> = Arc::downgrade(self) as Weak<Namespace>;
        *self.adapter.writing() = self.kind.build(&self.name, local, config);
    }

    /// This node's id in its cluster, if it is one.
    pub(crate) fn node(&self) -> Option<&str> {
        self.kind.node()
    }

    /// The adapter (see [`crate::adapter`]).
    pub(crate) fn adapter(&self) -> Arc<dyn Adapter> {
        self.adapter.reading().clone()
    }

    /// Whether connection state recovery is on here.
    pub(crate) fn recovery_on(&self) -> bool {
        self.adapter.reading().recovery().is_some()
    }

    /// Recovery counters, when recovery is on.
    pub fn recovery_metrics(&self) -> Option<RecoveryMetricsSnapshot> {
        let adapter = self.adapter();
        adapter.recovery()?;
        Some(self.metrics.snapshot(adapter.usage()))
    }

    /// When this node keeps sessions of this namespace that a client may still recover:
    /// how long they may live.
    pub(crate) fn kept_sessions_window(&self) -> Option<Duration> {
        let adapter = self.adapter();
        adapter
            .holds_sessions()
            .then(|| adapter.recovery().map(|r| r.max_disconnection_duration))
            .flatten()
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.ack_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The connected sockets of this namespace (on this server).
    pub fn sockets(&self) -> Vec<SocketRef> {
        self.sockets.reading().values().cloned().collect()
    }

    /// A connected socket by id.
    pub fn get_socket(&self, id: Sid) -> Option<SocketRef> {
        self.sockets.reading().get(&id).cloned()
    }

    /// Emits an event to the targets of `opts`, through the adapter: in a cluster (and not
    /// `local`) every node delivers it in log order; with recovery on and not volatile it
    /// gets an offset and is logged.
    pub(crate) fn emit_to(&self, opts: &BroadcastOptions, event: &str, payload: &Payload) {
        self.adapter().broadcast(self, opts, event, payload);
    }

    /// Makes the targets of `opts` join or leave rooms or disconnect: on the other nodes
    /// through the adapter, then here.
    pub(crate) fn sockets_action(&self, opts: &BroadcastOptions, action: &SocketsAction) {
        self.adapter().sockets_action(opts, action);
        self.apply_sockets_action(opts, action);
    }

    /// Waits until every broadcast and session change this node made is stored in the
    /// cluster and delivered to this node's sockets. Returns at once without a cluster.
    pub async fn flush(&self) {
        self.adapter().flush().await;
    }

    /// Handles an event that other nodes send with
    /// [`server_side_emit`](Self::server_side_emit) (`io.on(event)` of the reference).
    /// The handler gets a [`ServerSideAck`] when the sender waits for an answer.
    ///
    /// ```no_run
    /// # fn f(io: tether::Server) {
    /// io.of("/").on_server_side("who-is-there", |_payload, ack| {
    ///     if let Some(ack) = ack {
    ///         ack.send("node-a");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn on_server_side<F>(&self, event: impl Into<String>, handler: F)
    where
        F: Fn(Payload, Option<ServerSideAck>) + Send + Sync + 'static,
    {
        self.server_side
            .writing()
            .insert(event.into(), Arc::new(handler));
    }

    /// Sends an event to the [`on_server_side`](Self::on_server_side) handlers of the
    /// other nodes of the cluster (not this one). Without a cluster there is nobody to
    /// tell, and it returns at once.
    pub async fn server_side_emit(
        &self,
        event: &str,
        payload: impl Into<Payload>,
    ) -> Result<(), Error> {
        self.adapter().server_side_emit(event, payload.into()).await
    }

    /// Like [`server_side_emit`](Self::server_side_emit), and collects one answer from
    /// every other node; [`Error::Timeout`] when one does not answer in time.
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Vec<Payload>, Error> {
        self.adapter()
            .server_side_emit_with_ack(event, payload.into(), timeout)
            .await
    }

    /// Handles a CONNECT: the recovery attempt, middlewares, the connection handler, then
    /// replay and registration. The whole recovery path, top to bottom.
    pub(crate) async fn connect(self: Arc<Self>, client: Arc<dyn Connection>, auth: Option<Value>) {
        let adapter = self.adapter();
        // 1. The attempt: `{pid, offset}` in the auth, unless its socket is still alive.
        let attempt = match adapter.recovery() {
            Some(_) => self.recovery_attempt(auth.as_ref()).await,
            None => None,
        };
        // 2. The session, taken from the adapter (one-shot, cluster-wide).
        let mut restored = None;
        if let Some((pid, offset)) = attempt {
            match adapter.restore(&pid, offset.as_deref()).await {
                Ok(s) => restored = Some(s),
                Err(e) => {
                    tracing::debug!(pid = recovery::redact(&pid), "recovery failed: {e}");
                    self.metrics.failed(e);
                }
            }
        }
        let origin = match restored.and_then(|s| Some((Sid::parse(&s.sid)?, s))) {
            Some((id, s)) => Origin {
                rooms: s.rooms.into_iter().filter(|r| **r != *s.sid).collect(),
                id,
                pid: Some(s.pid),
                data: s.data,
                start: s.start,
                recovered: true,
            },
            None => Origin {
                id: Sid::random(),
                pid: adapter.recovery().map(|_| recovery::new_pid()),
                rooms: Vec::new(),
                data: Value::Object(Default::default()),
                start: adapter.fresh_start(),
                recovered: false,
            },
        };
        let socket = Socket::new(self.clone(), &client, origin, auth.clone());
        // 3. Middlewares (a recovered socket skips them unless configured otherwise).
        let skip = socket.recovered() && adapter.recovery().is_some_and(|r| r.skip_middlewares);
        if !skip {
            if let Err(err) = self.run_middlewares(&socket, &auth).await {
                if socket.recovered() {
                    // A refused attempt consumes nothing.
                    adapter.keep_again(socket.session());
                }
                socket.state.set(State::Closed);
                client.connect_done(&self.name);
                let msg =
                    encode::simple(PacketType::ConnectError, &self.name, Some(&err.to_json()));
                let _ = client.engine().send(msg);
                return;
            }
        }
        // 4. The connection handler registers the event handlers before anything is sent.
        let on_connection = self.handlers.on_connection.reading().clone();
        if let Some(h) = on_connection {
            socket
                .span()
                .in_scope(|| h(Parts::connect(socket.clone(), auth)));
        }
        // 5. Replay what it missed, then live.
        let register =
            Box::new(|replay: &[_], start| self.register(&client, &socket, replay, start));
        let registered =
            adapter.replay_and_register(socket.session(), socket.recovered(), register);
        match tracing::Instrument::instrument(registered, socket.span().clone()).await {
            Ok(Some(replayed)) => {
                if socket.recovered() {
                    self.metrics.recovered(replayed);
                }
                self.socket_changed(&socket);
                self.observers.connected(&socket);
            }
            Ok(None) => {}
            Err(e) => {
                // Its replay cannot be read: no silent gap, the client starts afresh.
                self.metrics.failed(e);
                socket.state.set(State::Closed);
                client.connect_done(&self.name);
                client.engine().close(CloseReason::ForcedClose);
            }
        }
    }

    /// Reads `{pid, offset}` from the auth. When the pid's socket is still here, probes
    /// it: alive, there is no attempt; silent (half-open), it is taken over.
    async fn recovery_attempt(
        self: &Arc<Self>,
        auth: Option<&Value>,
    ) -> Option<(String, Option<String>)> {
        let (pid, offset) = recovery::parse_attempt(auth)?;
        if let Some(old) = self.live_socket(&pid) {
            if old.engine.probe(PROBE_TIMEOUT).await {
                tracing::debug!(pid = recovery::redact(&pid), "pid is live, new session");
                self.metrics.failed(RecoveryFailure::StillConnected);
                return None;
            }
            tracing::debug!(
                pid = recovery::redact(&pid),
                "taking over a half-open socket"
            );
            old.engine.close(CloseReason::PingTimeout);
            self.remove_socket(&old, DisconnectReason::PingTimeout);
            self.adapter().flush().await;
        }
        Some((pid, offset))
    }

    async fn run_middlewares(
        &self,
        socket: &SocketRef,
        auth: &Option<Value>,
    ) -> Result<(), ConnectError> {
        let middlewares = self.handlers.middlewares.reading().clone();
        for mw in middlewares {
            tracing::Instrument::instrument(
                mw(socket.clone(), auth.clone()),
                socket.span().clone(),
            )
            .await?;
        }
        Ok(())
    }

    /// Takes a socket out of the namespace; keeps its session if the reason is recoverable.
    pub(crate) fn remove_socket(self: &Arc<Self>, socket: &SocketRef, reason: DisconnectReason) {
        let prev = socket.state.replace(State::Closed);
        if prev == State::Closed {
            return;
        }
        if prev == State::Connected {
            socket.run_disconnecting(reason);
        }
        let adapter = self.adapter();
        let recoverable =
            prev == State::Connected && reason.is_recoverable() && socket.pid().is_some();
        let keep = match adapter.recovery() {
            Some(rec) if recoverable => {
                let session = socket.session();
                if rec.fits(&session) {
                    Some(session)
                } else {
                    tracing::warn!(
                        sid = %socket.id(),
                        bytes = recovery::session_bytes(&session),
                        max = rec.max_session_bytes,
                        "session not kept: over max_session_bytes"
                    );
                    self.metrics.not_kept();
                    None
                }
            }
            _ => None,
        };
        let kept = keep.is_some();
        let retiring = Retiring {
            pid: socket.pid(),
            was_connected: prev == State::Connected,
            keep,
        };
        adapter.retire(retiring, &mut || self.unregister(socket));
        if kept {
            self.metrics.kept();
        }
        if let Some(client) = socket.client.upgrade() {
            client.remove_socket(&self.name, socket);
        }
        if prev == State::Connected {
            socket.run_disconnect(reason);
            self.observers.disconnected(socket, reason);
        }
    }

    /// Tells the adapter that a registered socket's rooms or data changed (a cluster
    /// rewrites its live record).
    pub(crate) fn socket_changed(&self, socket: &SocketRef) {
        if socket.registered.load(Ordering::Acquire) {
            self.adapter().socket_changed(&mut || socket.session());
        }
    }
}
