use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tether_engine::{CloseReason, Sid};
use tether_proto::sio::PacketType;

use crate::client::Client;
use crate::cluster::{
    Broadcast, Cluster, ClusterMessage, ClusterSession, Position, ServerSideAck, SessionOp,
    SocketsAction,
};
use crate::handlers::NsHandlers;
use crate::operators::{BroadcastOperator, BroadcastOptions};
use crate::recovery::{
    self, MemoryStore, RecoveryConfig, RecoveryFailure, RecoveryMetrics, RecoveryMetricsSnapshot,
    RecoveryStore, Room, SessionRecord, StoredPacket, Target,
};
use crate::socket::{Origin, Socket, SocketRef, CLOSED, CONNECTED, PENDING};
use crate::sync::{MutexExt as _, RwLockExt as _};
use crate::{encode, ConnectError, DisconnectReason, Error, Payload};

/// How long a half-open socket may take to answer the probe that decides whether its pid
/// can be taken over.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Recovery state of one namespace.
pub(crate) struct Recovery {
    pub config: RecoveryConfig,
    pub store: Arc<dyn RecoveryStore>,
    pub metrics: RecoveryMetrics,
    last_purge: Mutex<Instant>,
}

/// A namespace: its sockets, rooms, middlewares and, when enabled, recovery.
///
/// ```no_run
/// # async fn f(io: tether::Server) {
/// let chat = io.of("/chat");
/// chat.use_middleware(|_socket, auth| async move {
///     match auth.and_then(|a| a.get("token").cloned()) {
///         Some(_) => Ok(()),
///         None => Err(tether::ConnectError::new("no token")),
///     }
/// });
/// chat.on_connection(|socket| {
///     socket.on("say", |socket, payload, _ack| {
///         let _ = socket.broadcast().emit("said", payload);
///     });
/// });
/// # }
/// ```
pub struct Namespace {
    name: String,
    pub(crate) handlers: Arc<NsHandlers>,
    recovery: RwLock<Option<Arc<Recovery>>>,
    /// Orders recoverable emits: offset, log and delivery happen under it.
    emit_lock: Mutex<()>,
    pub(crate) sockets: RwLock<HashMap<Sid, SocketRef>>,
    pub(crate) rooms: RwLock<HashMap<Room, HashMap<Sid, SocketRef>>>,
    live: Mutex<HashMap<String, Weak<Socket>>>,
    ack_ids: AtomicU64,
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Serialises cluster delivery with cluster restores (held across backend reads).
    cluster_lock: tokio::sync::Mutex<()>,
    /// The newest cluster entry delivered to this namespace.
    cluster_position: Mutex<Position>,
    /// Handlers of events from other nodes.
    server_side: RwLock<HashMap<String, ServerSideHandler>>,
    /// The server's observers (admin UI...), told of socket lifecycle events.
    pub(crate) observers: Arc<crate::observe::Observers>,
}

type ServerSideHandler = Arc<dyn Fn(Payload, Option<ServerSideAck>) + Send + Sync>;

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
        recovery: Option<RecoveryConfig>,
        observers: Arc<crate::observe::Observers>,
    ) -> Arc<Self> {
        let ns = Namespace {
            name,
            handlers,
            recovery: RwLock::new(None),
            emit_lock: Mutex::new(()),
            sockets: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            ack_ids: AtomicU64::new(0),
            cluster: std::sync::OnceLock::new(),
            cluster_lock: tokio::sync::Mutex::new(()),
            cluster_position: Mutex::new(Position::default()),
            server_side: RwLock::new(HashMap::new()),
            observers,
        };
        ns.set_recovery(recovery);
        Arc::new(ns)
    }

    /// The namespace's name, such as `/` or `/chat`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a connect middleware. Middlewares run in order for every CONNECT (except a
    /// recovered one when `skip_middlewares` is on); an error is sent to the client as
    /// CONNECT_ERROR `{message, data}`. `auth` is the CONNECT payload.
    pub fn use_middleware<F, Fut>(&self, f: F)
    where
        F: Fn(SocketRef, Option<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.handlers.add_middleware(f);
    }

    /// Sets the connection handler. It runs before the CONNECT reply is written, so the
    /// event handlers it registers see every event the client sends afterwards.
    pub fn on_connection<F>(&self, f: F)
    where
        F: Fn(&SocketRef) + Send + Sync + 'static,
    {
        self.handlers.set_on_connection(f);
    }

    /// Enables (or with `None` disables) connection state recovery here, overriding the
    /// server's default. Set it before clients connect.
    pub fn set_recovery(&self, config: Option<RecoveryConfig>) {
        let store: Option<Arc<dyn RecoveryStore>> = config
            .as_ref()
            .map(|c| Arc::new(MemoryStore::new(c)) as Arc<dyn RecoveryStore>);
        self.set_recovery_store(config.zip(store));
    }

    /// Enables recovery with a store of your own (see [`RecoveryStore`]).
    pub fn set_recovery_store(&self, recovery: Option<(RecoveryConfig, Arc<dyn RecoveryStore>)>) {
        *self.recovery.writing() = recovery.map(|(config, store)| {
            Arc::new(Recovery {
                config,
                store,
                metrics: RecoveryMetrics::default(),
                last_purge: Mutex::new(Instant::now()),
            })
        });
    }

    pub(crate) fn recovery(&self) -> Option<Arc<Recovery>> {
        self.recovery.reading().clone()
    }

    /// Recovery counters, when recovery is on.
    pub fn recovery_metrics(&self) -> Option<RecoveryMetricsSnapshot> {
        self.recovery().map(|r| {
            let usage = self.cluster.get().is_none().then(|| r.store.usage());
            r.metrics.snapshot(usage)
        })
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.ack_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// An operator on the whole namespace, to chain `except`, `volatile`, `timeout`...
    pub fn operator(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone())
    }

    /// Targets a room (or a socket id).
    pub fn to(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).to(room)
    }

    /// Leaves out the members of a room (or a socket id).
    pub fn except(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).except(room)
    }

    /// Marks the next emit as volatile: no offset, never stored, may be lost.
    pub fn volatile(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).volatile()
    }

    /// Sets the timeout of the next `emit_with_ack`.
    pub fn timeout(self: &Arc<Self>, timeout: Duration) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).timeout(timeout)
    }

    /// Emits to every socket of the namespace.
    pub fn emit(self: &Arc<Self>, event: &str, payload: impl Into<Payload>) {
        BroadcastOperator::new(self.clone()).emit(event, payload)
    }

    /// The connected sockets of this namespace (on this server).
    pub fn sockets(&self) -> Vec<SocketRef> {
        self.sockets.reading().values().cloned().collect()
    }

    /// A connected socket by id.
    pub fn get_socket(&self, id: Sid) -> Option<SocketRef> {
        self.sockets.reading().get(&id).cloned()
    }

    /// Calls `f` for every connected socket that `opts` targets, each once. The common
    /// cases (the whole namespace, one room) walk the maps in place, cloning nothing.
    pub(crate) fn for_each_target(&self, opts: &BroadcastOptions, mut f: impl FnMut(&SocketRef)) {
        let sockets = self.sockets.reading();
        let rooms = self.rooms.reading();
        // A room's members, or the socket whose id names it.
        let each_member = |room: &Room, g: &mut dyn FnMut(&SocketRef)| {
            if let Some(m) = rooms.get(room) {
                m.values().for_each(&mut *g);
            } else if let Some(s) = Sid::parse(room).and_then(|id| sockets.get(&id)) {
                g(s);
            }
        };
        let mut excluded: HashSet<Sid> = HashSet::new();
        for r in &opts.except {
            each_member(r, &mut |s| {
                excluded.insert(s.id());
            });
        }
        let mut call = |s: &SocketRef| {
            if excluded.is_empty() || !excluded.contains(&s.id()) {
                f(s);
            }
        };
        match opts.rooms.as_slice() {
            [] => sockets.values().for_each(&mut call),
            [room] => each_member(room, &mut call),
            many => {
                let mut seen = HashSet::new();
                for r in many {
                    each_member(r, &mut |s| {
                        if seen.insert(s.id()) {
                            call(s);
                        }
                    });
                }
            }
        }
    }

    /// Emits an event to the targets of `opts`.
    ///
    /// - In a cluster (and not `local`): the broadcast goes to the cluster log; every node,
    ///   this one included, delivers it when it reads it back, in log order.
    /// - With recovery on and the emit not volatile: the packet gets an offset, goes into
    ///   the log and is delivered, all under the emit lock, so every socket sees the
    ///   log's order.
    pub(crate) fn emit_to(&self, opts: &BroadcastOptions, event: &str, payload: &Payload) {
        if let (Some(cluster), false) = (self.cluster.get(), opts.local) {
            cluster.publish(ClusterMessage::Broadcast(Broadcast {
                nsp: self.name.clone(),
                data: crate::cluster::requests::event_data(event, payload),
                attachments: payload.attachments.clone(),
                rooms: opts.rooms.clone(),
                except: opts.except.clone(),
                volatile: opts.volatile,
            }));
            return;
        }
        let attachments = crate::socket::attachments(payload);
        match self.recovery().filter(|_| !opts.volatile) {
            Some(rec) => {
                let target = Target {
                    rooms: opts.rooms.clone(),
                    except: opts.except.clone(),
                };
                let _order = self.emit_lock.locked();
                let packet = rec.store.append(target, &mut |offset| StoredPacket {
                    message: encode::event(&self.name, None, event, payload, Some(offset)),
                    attachments: attachments.clone(),
                });
                self.for_each_target(opts, |s| deliver(s, &packet));
            }
            None => {
                let packet = StoredPacket {
                    message: encode::event(&self.name, None, event, payload, None),
                    attachments,
                };
                if opts.volatile {
                    // May be lost: a full outbox drops it rather than closing the session.
                    self.for_each_target(opts, |s| {
                        if s.connected() {
                            s.engine
                                .send_volatile(packet.message.clone(), packet.attachments.clone());
                        }
                    });
                } else {
                    self.for_each_target(opts, |s| {
                        let _ = s.send(packet.message.clone(), packet.attachments.clone());
                    });
                }
            }
        }
    }

    /// Encodes a cluster broadcast for this namespace's sockets, with its offset when it
    /// is recoverable here.
    fn encode_cluster(&self, id: Position, b: &Broadcast) -> Option<StoredPacket> {
        let event = b.data.first()?.as_str()?;
        let offset = (self.recovery().is_some() && !b.volatile)
            .then(|| self.cluster().map(|c| c.offset(id)))
            .flatten();
        Some(StoredPacket {
            message: encode::event_args(
                &self.name,
                None,
                event,
                b.data.get(1..).unwrap_or_default(),
                b.attachments.len(),
                offset.as_deref(),
            ),
            attachments: (!b.attachments.is_empty()).then(|| Arc::from(b.attachments.clone())),
        })
    }

    /// Delivers an entry read from the cluster log to this node's sockets.
    pub(crate) async fn deliver_cluster(&self, id: Position, b: &Broadcast) {
        let _cluster = self.cluster_lock.lock().await;
        let packet = self.encode_cluster(id, b);
        let _order = self.emit_lock.locked();
        if let Some(packet) = packet {
            let opts = BroadcastOptions {
                rooms: b.rooms.clone(),
                except: b.except.clone(),
                ..Default::default()
            };
            if b.volatile {
                self.for_each_target(&opts, |s| {
                    s.engine
                        .send_volatile(packet.message.clone(), packet.attachments.clone());
                });
            } else {
                self.for_each_target(&opts, |s| deliver(s, &packet));
            }
        }
        *self.position() = id;
    }

    fn position(&self) -> std::sync::MutexGuard<'_, Position> {
        self.cluster_position.locked()
    }

    /// Another node wants to restore a pid that this node holds: probe the socket; if it
    /// answers, mark it alive, else close it as a recoverable disconnect.
    pub(crate) fn answer_probe(self: &Arc<Self>, pid: String) {
        let Some(socket) = self.live_socket(&pid) else {
            return;
        };
        let ns = self.clone();
        tokio::spawn(async move {
            if socket.engine.probe(PROBE_TIMEOUT).await {
                if let Some(c) = ns.cluster.get() {
                    c.session_op(SessionOp::MarkAlive {
                        pid,
                        ttl: Duration::from_secs(10),
                    });
                }
            } else {
                socket.engine.close(CloseReason::PingTimeout);
                ns.remove_socket(&socket, DisconnectReason::PingTimeout);
            }
        });
    }

    /// Waits until every broadcast and session change this node made is stored in the
    /// cluster and delivered to this node's sockets. Returns at once without a cluster.
    pub async fn flush(&self) {
        if let Some(c) = self.cluster.get() {
            c.flush().await;
        }
    }

    pub(crate) fn attach_cluster(&self, cluster: Arc<Cluster>) {
        *self.position() = cluster.position();
        cluster.listen(&self.name);
        let _ = self.cluster.set(cluster);
    }

    /// The cluster runtime, when the server joined a cluster.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Applies `socketsJoin`, `socketsLeave` or `disconnectSockets` to this node's targets.
    pub(crate) fn apply_sockets_action(&self, opts: &BroadcastOptions, action: &SocketsAction) {
        let mut targets = Vec::new();
        self.for_each_target(opts, |s| targets.push(s.clone()));
        for s in targets {
            match action {
                SocketsAction::Join(rooms) => rooms.iter().for_each(|r| s.join(r.clone())),
                SocketsAction::Leave(rooms) => rooms.iter().for_each(|r| s.leave(r)),
                SocketsAction::Disconnect { close: true } => s.close_transport(),
                SocketsAction::Disconnect { close: false } => s.disconnect(),
            }
        }
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

    pub(crate) fn run_server_side(
        &self,
        event: &str,
        payload: Payload,
        ack: Option<ServerSideAck>,
    ) {
        let handler = self.server_side.reading().get(event).cloned();
        if let Some(h) = handler {
            h(payload, ack);
        }
    }

    /// Sends an event to the [`on_server_side`](Self::on_server_side) handlers of the
    /// other nodes of the cluster (not this one). Without a cluster there is nobody to
    /// tell, and it returns at once.
    pub async fn server_side_emit(
        &self,
        event: &str,
        payload: impl Into<Payload>,
    ) -> Result<(), Error> {
        let Some(c) = self.cluster.get() else {
            return Ok(());
        };
        let p = payload.into();
        c.server_side_emit(
            &self.name,
            crate::cluster::requests::event_data(event, &p),
            p.attachments,
        )
        .await
    }

    /// Like [`server_side_emit`](Self::server_side_emit), and collects one answer from
    /// every other node; [`Error::Timeout`] when one does not answer within `timeout`.
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Vec<Payload>, Error> {
        let Some(c) = self.cluster.get() else {
            return Ok(Vec::new());
        };
        let p = payload.into();
        c.server_side_emit_with_ack(
            &self.name,
            crate::cluster::requests::event_data(event, &p),
            p.attachments,
            timeout,
        )
        .await
    }

    /// How long a live record lives without a refresh.
    pub(crate) fn live_ttl(rec: &Recovery) -> Duration {
        rec.config.max_disconnection_duration + Duration::from_secs(30)
    }

    /// Writes the live record of a connected socket (cluster and recovery only).
    pub(crate) fn socket_changed(&self, socket: &SocketRef) {
        if let (Some(c), Some(rec)) = (self.cluster.get(), self.recovery()) {
            if socket.registered.load(Ordering::Acquire) {
                c.session_op(SessionOp::PutLive {
                    nsp: self.name.clone(),
                    session: cluster_session(socket),
                    ttl: Self::live_ttl(&rec),
                    window: rec.config.max_disconnection_duration,
                });
            }
        }
    }

    /// Queues the periodic refresh of this node's live records (cluster and recovery
    /// only): it extends them, and rewrites the ones the backend lost.
    pub(crate) fn refresh_live_records(&self, cluster: &Cluster) {
        let Some(rec) = self.recovery() else { return };
        // Under the emit lock, which registration and `remove_socket` hold too: a socket
        // retired before this refresh is not in it, and one retired after it has its
        // `Retire` queued after it, so the refresh never writes back a retired record.
        let _order = self.emit_lock.locked();
        let sockets: Vec<SocketRef> = self
            .live
            .locked()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let sessions: Vec<ClusterSession> = sockets
            .iter()
            .filter(|s| s.registered.load(Ordering::Acquire))
            .map(cluster_session)
            .collect();
        if !sessions.is_empty() {
            cluster.session_op(SessionOp::RefreshLive {
                nsp: self.name.clone(),
                sessions,
                ttl: Self::live_ttl(&rec),
                window: rec.config.max_disconnection_duration,
            });
        }
    }

    pub(crate) fn join(&self, socket: &SocketRef, room: Room) {
        {
            let mut map = self.rooms.writing();
            let mut rooms = socket.rooms.locked();
            if socket.state.load(Ordering::Acquire) == CLOSED || rooms.contains(&room) {
                return;
            }
            rooms.push(room.clone());
            if socket.registered.load(Ordering::Acquire) {
                map.entry(room.clone())
                    .or_default()
                    .insert(socket.id(), socket.clone());
            }
        }
        self.socket_changed(socket);
        self.observers.joined(socket, &room);
    }

    pub(crate) fn leave(&self, socket: &SocketRef, room: &str) {
        let was_in = {
            let mut map = self.rooms.writing();
            let mut rooms = socket.rooms.locked();
            let before = rooms.len();
            rooms.retain(|r| &**r != room);
            remove_member(&mut map, room, socket);
            before != rooms.len()
        };
        self.socket_changed(socket);
        if was_in {
            self.observers.left(socket, room);
        }
    }

    pub(crate) fn live_socket(&self, pid: &str) -> Option<SocketRef> {
        self.live.locked().get(pid).and_then(Weak::upgrade)
    }

    /// Handles a CONNECT: recovery attempt, middlewares, connection handler, commit.
    pub(crate) async fn connect(self: Arc<Self>, client: Arc<Client>, auth: Option<Value>) {
        let rec = self.recovery();
        let cluster = self.cluster.get().cloned();
        let mut attempt = rec
            .as_ref()
            .and_then(|_| recovery::parse_attempt(auth.as_ref()));
        if let (Some(rec), Some((pid, _))) = (&rec, &attempt) {
            if let Some(old) = self.live_socket(pid) {
                // The pid's socket is still here. Alive: refuse. Silent: take over.
                if old.engine.probe(PROBE_TIMEOUT).await {
                    tracing::debug!(pid = recovery::redact(pid), "pid is live, new session");
                    rec.metrics.failed(RecoveryFailure::StillConnected);
                    attempt = None;
                } else {
                    tracing::debug!(
                        pid = recovery::redact(pid),
                        "taking over a half-open socket"
                    );
                    old.engine.close(CloseReason::PingTimeout);
                    self.remove_socket(&old, DisconnectReason::PingTimeout);
                    if let Some(c) = &cluster {
                        c.flush().await;
                    }
                }
            }
        }
        let mut restored: Option<Restoring> = None;
        if let (Some(rec), Some((pid, offset))) = (&rec, attempt) {
            let outcome = match &cluster {
                Some(c) => match offset.as_deref().map(|o| c.parse_offset(o)) {
                    Some(None) => Err(RecoveryFailure::UnknownOffset),
                    parsed => {
                        let after = parsed.flatten();
                        c.take(&self.name, &pid, after).await.map(|s| Restoring {
                            after: after.or(s.start),
                            sid: s.sid,
                            pid: s.pid,
                            rooms: s.rooms,
                            data: s.data,
                            start: 0,
                        })
                    }
                },
                None => rec
                    .store
                    .take_session(&pid, offset.as_deref())
                    .map(|r| Restoring {
                        after: None,
                        sid: r.session.sid,
                        pid: r.session.pid,
                        rooms: r.session.rooms,
                        data: r.session.data,
                        start: r.position_after,
                    }),
            };
            match outcome {
                Ok(r) => restored = Some(r),
                Err(e) => {
                    tracing::debug!(pid = recovery::redact(&pid), "recovery failed: {e}");
                    rec.metrics.failed(e);
                }
            }
        }
        let restored_id = restored.as_ref().and_then(|r| Sid::parse(&r.sid));
        let mut cluster_after = None;
        let origin = match (restored, restored_id) {
            (Some(r), Some(id)) => {
                cluster_after = Some(r.after);
                let own = id.to_string();
                Origin {
                    id,
                    pid: Some(r.pid),
                    rooms: r.rooms.into_iter().filter(|x| **x != *own).collect(),
                    data: r.data,
                    start: r.start,
                    recovered: true,
                }
            }
            _ => Origin {
                id: Sid::random(),
                pid: rec.as_ref().map(|_| recovery::new_pid()),
                rooms: Vec::new(),
                data: Value::Object(Default::default()),
                start: match (&rec, &cluster) {
                    (Some(r), None) => r.store.position(),
                    _ => 0,
                },
                recovered: false,
            },
        };
        let socket = Socket::new(self.clone(), &client, origin, auth.clone());
        let skip = socket.recovered() && rec.as_ref().is_some_and(|r| r.config.skip_middlewares);
        if !skip {
            let middlewares = self.handlers.middlewares.reading().clone();
            for mw in middlewares {
                let run = tracing::Instrument::instrument(
                    mw(socket.clone(), auth.clone()),
                    socket.span().clone(),
                );
                if let Err(err) = run.await {
                    if let (Some(rec), true) = (&rec, socket.recovered()) {
                        // A refused attempt consumes nothing.
                        self.keep_again(rec, &socket, cluster_after.flatten());
                    }
                    socket.state.store(CLOSED, Ordering::Release);
                    client.connect_done(&self.name);
                    let msg =
                        encode::simple(PacketType::ConnectError, &self.name, Some(&err.to_json()));
                    let _ = client.engine.send(msg);
                    return;
                }
            }
        }
        let on_connection = self.handlers.on_connection.reading().clone();
        if let Some(h) = on_connection {
            socket.span().in_scope(|| h(&socket));
        }
        match (&cluster, rec.as_deref()) {
            (Some(c), Some(rec)) if socket.recovered() => {
                let commit = self.commit_cluster(c, &client, &socket, rec, cluster_after.flatten());
                tracing::Instrument::instrument(commit, socket.span().clone()).await
            }
            _ => socket
                .span()
                .in_scope(|| self.commit(&client, &socket, rec.as_deref())),
        }
    }

    /// Puts a taken session back (a refused or aborted restore consumes nothing).
    fn keep_again(&self, rec: &Recovery, socket: &SocketRef, after: Option<Position>) {
        match self.cluster.get() {
            Some(c) => {
                let mut s = cluster_session(socket);
                s.start = after.or(s.start);
                c.session_op(SessionOp::Retire {
                    nsp: self.name.clone(),
                    pid: s.pid.clone(),
                    keep: Some((s, rec.config.max_disconnection_duration)),
                });
            }
            None => rec.store.keep_session(
                session_record(socket),
                rec.config.max_disconnection_duration,
            ),
        }
    }

    /// Commits a socket restored from the cluster: under the cluster lock (the reader
    /// waits), reads what it missed up to this node's position, replays it, registers it.
    async fn commit_cluster(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        client: &Arc<Client>,
        socket: &SocketRef,
        rec: &Recovery,
        after: Option<Position>,
    ) {
        // Read the bulk of the replay without holding up delivery, then, under the cluster
        // lock (the reader waits), the tail up to what this node has delivered.
        if let Some(after) = after {
            // Never replay from behind the client: first catch up with its offset.
            cluster.wait_delivered(after).await;
        }
        let mut seen = HashMap::new();
        if let Some(after) = after {
            cluster.seed_seen(after, &mut seen).await;
        }
        let sid = socket.id();
        let rooms = socket.rooms();
        let early = *self.position();
        let after = after.unwrap_or(early);
        let bulk = cluster
            .missed(&self.name, after, early, sid.as_str(), &rooms, &mut seen)
            .await;
        let _cluster = self.cluster_lock.lock().await;
        let upto = *self.position();
        let missed = match bulk {
            Ok(mut m) if upto > early.max(after) => cluster
                .missed(
                    &self.name,
                    early.max(after),
                    upto,
                    sid.as_str(),
                    &rooms,
                    &mut seen,
                )
                .await
                .map(|tail| {
                    m.extend(tail);
                    m
                }),
            other => other,
        };
        let replay = match missed {
            Ok(m) => m
                .iter()
                .filter_map(|(id, b)| self.encode_cluster(*id, b))
                .collect(),
            Err(e) => {
                tracing::warn!("replay failed: {e}");
                rec.metrics.failed(RecoveryFailure::Evicted);
                self.keep_again(rec, socket, Some(after));
                socket.state.store(CLOSED, Ordering::Release);
                client.connect_done(&self.name);
                client.engine.close(CloseReason::ForcedClose);
                return;
            }
        };
        *socket.cluster_start.locked() = Some(after);
        self.commit_with(client, socket, Some(rec), replay);
    }

    /// Makes a socket live: CONNECT reply, replay of what it missed, then the messages
    /// it emitted while connecting, then registration, all under the emit lock.
    fn commit(self: &Arc<Self>, client: &Arc<Client>, socket: &SocketRef, rec: Option<&Recovery>) {
        let replay = match (rec, self.cluster.get()) {
            (Some(rec), None) => {
                match rec
                    .store
                    .read_after(socket.start, socket.id().as_str(), &socket.rooms())
                {
                    Ok(p) => p,
                    Err(e) if socket.recovered() => {
                        // Packets it needs were evicted while middlewares ran: no silent gap.
                        rec.metrics.failed(e);
                        socket.state.store(CLOSED, Ordering::Release);
                        client.connect_done(&self.name);
                        client.engine.close(CloseReason::ForcedClose);
                        return;
                    }
                    Err(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        self.commit_with(client, socket, rec, replay);
    }

    fn commit_with(
        self: &Arc<Self>,
        client: &Arc<Client>,
        socket: &SocketRef,
        rec: Option<&Recovery>,
        replay: Vec<StoredPacket>,
    ) {
        {
            let _order = self.emit_lock.locked();
            if client.engine.is_closed() || socket.state.load(Ordering::Acquire) != PENDING {
                client.connect_done(&self.name);
                if let (Some(rec), true) = (rec, socket.recovered()) {
                    let after = *socket.cluster_start.locked();
                    self.keep_again(rec, socket, after);
                }
                socket.state.store(CLOSED, Ordering::Release);
                return;
            }
            if self.cluster.get().is_some() && !socket.recovered() {
                *socket.cluster_start.locked() = Some(*self.position());
            }
            client.add_socket(&self.name, socket.clone());
            let mut reply = serde_json::Map::new();
            reply.insert("sid".into(), Value::String(socket.id().to_string()));
            if let Some(pid) = socket.pid() {
                reply.insert("pid".into(), Value::String(pid.to_owned()));
            }
            let msg = encode::simple(PacketType::Connect, &self.name, Some(&Value::Object(reply)));
            socket.engine.send_unbounded(msg, None);
            for p in &replay {
                socket
                    .engine
                    .send_unbounded(p.message.clone(), p.attachments.clone());
            }
            {
                // Lock order everywhere: sockets, rooms, then the socket's own rooms.
                let mut sockets = self.sockets.writing();
                let mut map = self.rooms.writing();
                let rooms = socket.rooms.locked();
                for r in rooms.iter() {
                    map.entry(r.clone())
                        .or_default()
                        .insert(socket.id(), socket.clone());
                }
                sockets.insert(socket.id(), socket.clone());
                socket.registered.store(true, Ordering::Release);
            }
            {
                let mut early = socket.early.locked();
                socket.state.store(CONNECTED, Ordering::Release);
                for (m, a) in early.drain(..) {
                    socket.engine.send_unbounded(m, a);
                }
            }
            if let (Some(rec), Some(pid)) = (rec, socket.pid()) {
                self.live
                    .locked()
                    .insert(pid.to_owned(), Arc::downgrade(socket));
                if socket.recovered() {
                    rec.metrics.recovered(replay.len());
                }
            }
        }
        self.socket_changed(socket);
        self.observers.connected(socket);
    }

    /// Takes a socket out of the namespace; keeps its session if the reason is recoverable.
    pub(crate) fn remove_socket(self: &Arc<Self>, socket: &SocketRef, reason: DisconnectReason) {
        let prev = socket.state.swap(CLOSED, Ordering::AcqRel);
        if prev == CLOSED {
            return;
        }
        if prev == CONNECTED {
            socket.run_disconnecting(reason);
        }
        let rec = self.recovery();
        {
            let _order = self.emit_lock.locked();
            {
                let mut sockets = self.sockets.writing();
                let mut map = self.rooms.writing();
                let rooms = socket.rooms.locked();
                for r in rooms.iter() {
                    remove_member(&mut map, r, socket);
                }
                if sockets
                    .get(&socket.id())
                    .is_some_and(|s| Arc::ptr_eq(s, socket))
                {
                    sockets.remove(&socket.id());
                }
                socket.registered.store(false, Ordering::Release);
            }
            if let (Some(rec), Some(pid)) = (&rec, socket.pid()) {
                let mut live = self.live.locked();
                if live
                    .get(pid)
                    .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(socket)))
                {
                    live.remove(pid);
                }
                drop(live);
                let keep = prev == CONNECTED && reason.is_recoverable();
                match self.cluster.get() {
                    Some(c) if prev == CONNECTED => {
                        let ttl = rec.config.max_disconnection_duration;
                        c.session_op(SessionOp::Retire {
                            nsp: self.name.clone(),
                            pid: pid.to_owned(),
                            keep: keep.then(|| (cluster_session(socket), ttl)),
                        });
                    }
                    Some(_) => {}
                    None if keep => {
                        rec.store.keep_session(
                            session_record(socket),
                            rec.config.max_disconnection_duration,
                        );
                        self.maybe_purge(rec);
                    }
                    None => {}
                }
                if keep {
                    rec.metrics.kept();
                }
            }
        }
        if let Some(client) = socket.client.upgrade() {
            client.remove_socket(&self.name, socket);
        }
        if prev == CONNECTED {
            socket.run_disconnect(reason);
            self.observers.disconnected(socket, reason);
        }
    }

    fn maybe_purge(&self, rec: &Recovery) {
        let mut last = rec.last_purge.locked();
        if last.elapsed() > Duration::from_secs(1) {
            *last = Instant::now();
            rec.store.purge();
        }
    }
}

/// A session being restored, from the local store or the cluster.
struct Restoring {
    sid: String,
    pid: String,
    rooms: Vec<Room>,
    data: Value,
    /// Local store: the log position the replay starts after.
    start: u64,
    /// Cluster: the entry the replay starts after.
    after: Option<Position>,
}

fn deliver(socket: &SocketRef, packet: &StoredPacket) {
    let _ = match &packet.attachments {
        Some(a) => socket
            .engine
            .send_with_attachments(packet.message.clone(), a.clone()),
        None => socket.engine.send(packet.message.clone()),
    };
}

fn remove_member(map: &mut HashMap<Room, HashMap<Sid, SocketRef>>, room: &str, socket: &SocketRef) {
    if let Some(members) = map.get_mut(room) {
        if members
            .get(&socket.id())
            .is_some_and(|s| Arc::ptr_eq(s, socket))
        {
            members.remove(&socket.id());
        }
        if members.is_empty() {
            map.remove(room);
        }
    }
}

fn session_record(socket: &SocketRef) -> SessionRecord {
    SessionRecord {
        sid: socket.id().to_string(),
        pid: socket.pid().unwrap_or_default().to_owned(),
        rooms: socket.rooms(),
        data: socket.data(),
        start: socket.start,
    }
}

fn cluster_session(socket: &SocketRef) -> ClusterSession {
    ClusterSession {
        sid: socket.id().to_string(),
        pid: socket.pid().unwrap_or_default().to_owned(),
        rooms: socket.rooms(),
        data: socket.data(),
        start: *socket.cluster_start.locked(),
    }
}
