use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use serde_json::Value;
use tether_engine::{CloseReason, EngineSocket, Handshake, Sid, TextMessage};
use tokio::sync::oneshot;

use super::Namespace;
use crate::encode::attachments;
use crate::error::Error;
use crate::reason::DisconnectReason;
use crate::recovery::{Position, Room, Session};
use crate::sync::{MutexExt as _, RwLockExt as _};
use crate::{encode, IntoPayload, Payload};

/// A handle on a socket, cheap to clone; an [extractor](crate::extract) too.
pub type SocketRef = Arc<Socket>;

/// A handler stored type-erased (see [`crate::handler`], which boxes them).
pub(crate) type BoxedHandler = Arc<dyn Fn(Parts) + Send + Sync>;

/// What a socket and its namespace need of the Engine.IO connection the socket is on:
/// the client implements it, a layer up. Used when a socket connects and leaves, never
/// per event.
pub(crate) trait Connection: Send + Sync {
    /// The Engine.IO connection.
    fn engine(&self) -> &Arc<EngineSocket>;
    /// The CONNECT to `nsp` is over without a socket (refused, or it went away).
    fn connect_done(&self, nsp: &str);
    /// The socket of `nsp` on this connection is now `socket`.
    fn add_socket(&self, nsp: &str, socket: SocketRef);
    /// `socket` left `nsp`.
    fn remove_socket(&self, nsp: &str, socket: &SocketRef);
}

/// A message waiting for the CONNECT reply.
pub(crate) type Queued = (TextMessage, Option<Arc<[Bytes]>>);

/// Where a socket is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum State {
    /// Accepted, its middlewares and replay running; what it is sent waits.
    Pending = 0,
    /// Registered and live.
    Connected = 1,
    /// Gone.
    Closed = 2,
}

/// A [`State`] shared between tasks.
pub(crate) struct StateCell(AtomicU8);

impl StateCell {
    fn new(state: State) -> Self {
        StateCell(AtomicU8::new(state as u8))
    }

    fn of(raw: u8) -> State {
        match raw {
            0 => State::Pending,
            1 => State::Connected,
            _ => State::Closed,
        }
    }

    pub(crate) fn get(&self) -> State {
        Self::of(self.0.load(Ordering::Acquire))
    }

    pub(crate) fn set(&self, state: State) {
        self.0.store(state as u8, Ordering::Release);
    }

    /// Sets `state` and returns the one before.
    pub(crate) fn replace(&self, state: State) -> State {
        Self::of(self.0.swap(state as u8, Ordering::AcqRel))
    }
}

/// One client's presence in one namespace.
///
/// Created when a CONNECT is accepted; the connection handler registers event handlers on
/// it before the CONNECT reply is written, so no event is missed.
pub struct Socket {
    id: Sid,
    pid: Option<String>,
    pub(crate) ns: Arc<Namespace>,
    pub(crate) client: Weak<dyn Connection>,
    pub(crate) engine: Arc<EngineSocket>,
    pub(crate) state: StateCell,
    /// Whether the namespace's maps hold the socket (guarded by the rooms lock).
    pub(crate) registered: AtomicBool,
    recovered: bool,
    /// The log position its replay starts after when it comes back without an offset:
    /// where it started, or where its last replay started.
    pub(crate) start: Mutex<Option<Position>>,
    data: Mutex<Value>,
    pub(crate) rooms: Mutex<Vec<Room>>,
    /// Event handlers by name, hashed with FxHash: the names are the application's and a
    /// peer only looks them up, so nothing it sends can make them collide (SipHash was
    /// 2.6 % of an echo's instructions).
    handlers: RwLock<FxHashMap<String, BoxedHandler>>,
    any: RwLock<Option<BoxedHandler>>,
    on_disconnect: Mutex<Vec<BoxedHandler>>,
    on_disconnecting: Mutex<Vec<BoxedHandler>>,
    pub(crate) acks: Mutex<HashMap<u64, oneshot::Sender<Payload>>>,
    /// Messages emitted before the socket is connected (without recovery).
    pub(crate) early: Mutex<Vec<Queued>>,
    extensions: Mutex<http::Extensions>,
    /// The CONNECT payload (`socket.handshake.auth` in the reference).
    auth: Option<Value>,
    /// Its tracing span (see `crate::trace`).
    span: tracing::Span,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("nsp", &self.ns.name())
            .field("recovered", &self.recovered)
            .finish()
    }
}

/// How a new socket starts: fresh, or restored from a kept session.
pub(crate) struct Origin {
    pub id: Sid,
    pub pid: Option<String>,
    pub rooms: Vec<Room>,
    pub data: Value,
    pub start: Option<Position>,
    pub recovered: bool,
}

impl Socket {
    pub(crate) fn new(
        ns: Arc<Namespace>,
        client: &Arc<dyn Connection>,
        origin: Origin,
        auth: Option<Value>,
    ) -> SocketRef {
        let span = crate::trace::socket_span(
            ns.name(),
            ns.node(),
            origin.id,
            origin.pid.as_deref(),
            client.engine().transport(),
            origin.recovered,
        );
        Arc::new(Socket {
            span,
            id: origin.id,
            pid: origin.pid,
            ns,
            client: Arc::downgrade(client),
            engine: client.engine().clone(),
            state: StateCell::new(State::Pending),
            registered: AtomicBool::new(false),
            recovered: origin.recovered,
            start: Mutex::new(origin.start),
            data: Mutex::new(origin.data),
            rooms: Mutex::new(origin.rooms),
            handlers: RwLock::new(FxHashMap::default()),
            any: RwLock::new(None),
            on_disconnect: Mutex::new(Vec::new()),
            on_disconnecting: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            early: Mutex::new(Vec::new()),
            extensions: Mutex::new(http::Extensions::new()),
            auth,
        })
    }

    /// The socket id: the same after a recovery.
    pub fn id(&self) -> Sid {
        self.id
    }

    pub(crate) fn pid(&self) -> Option<&str> {
        self.pid.as_deref()
    }

    /// The namespace's name.
    pub fn nsp(&self) -> &str {
        self.ns.name()
    }

    /// The namespace.
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// The socket's tracing span, `socket` with its `sid`, `nsp`, `transport`, `node`
    /// and the first characters of its pid: the core enters it around the socket's
    /// handlers; enter it in tasks of your own to have their logs filtered with it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Whether this socket was restored by connection state recovery.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// Whether the socket is connected.
    pub fn connected(&self) -> bool {
        self.state.get() == State::Connected
    }

    /// The request that opened the underlying connection.
    pub fn handshake(&self) -> &Handshake {
        self.engine.handshake()
    }

    /// The CONNECT payload the client sent (`socket.handshake.auth` in the reference).
    pub fn auth(&self) -> Option<&Value> {
        self.auth.as_ref()
    }

    /// The id of the underlying Engine.IO connection, shared by every namespace on it
    /// (`socket.conn.id` in the reference).
    pub fn conn_id(&self) -> Sid {
        self.engine.sid()
    }

    /// The current transport: `"polling"` or `"websocket"`.
    pub fn transport(&self) -> &'static str {
        self.engine.transport().as_str()
    }

    /// `socket.data`: anything the application keeps with the socket. Restored by
    /// recovery. An empty object by default.
    pub fn data(&self) -> Value {
        self.lock_data().clone()
    }

    /// Replaces `socket.data`.
    pub fn set_data(self: &Arc<Self>, data: Value) {
        *self.lock_data() = data;
        self.ns.socket_changed(self);
        self.ns.observers.data_changed(self);
    }

    /// Changes `socket.data` in place and returns what `f` returns.
    pub fn with_data<R>(self: &Arc<Self>, f: impl FnOnce(&mut Value) -> R) -> R {
        let r = f(&mut self.lock_data());
        self.ns.socket_changed(self);
        self.ns.observers.data_changed(self);
        r
    }

    fn lock_data(&self) -> std::sync::MutexGuard<'_, Value> {
        self.data.locked()
    }

    /// Per-connection values for middlewares and handlers. Unlike [`data`](Self::data),
    /// they are never restored by recovery.
    pub fn extensions<R>(&self, f: impl FnOnce(&mut http::Extensions) -> R) -> R {
        f(&mut self.extensions.locked())
    }

    /// The extensions of the HTTP request that opened the connection: what tower layers
    /// in front of Tether inserted (auth claims, axum's `ConnectInfo`). The
    /// [`Extension`](crate::extract::Extension) extractor looks here after
    /// [`extensions`](Self::extensions).
    pub fn req_extensions(&self) -> &http::Extensions {
        &self.engine.handshake().extensions
    }

    /// A value set with [`Server::with_state`](crate::Server::with_state).
    pub(crate) fn server_state<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.ns.server_state.reading().get::<T>().cloned()
    }

    /// Sets the handler of `event` (see [`on`](Self::on)).
    pub(crate) fn set_handler(&self, event: String, handler: BoxedHandler) {
        self.handlers.writing().insert(event, handler);
    }

    /// Sets the handler of events without one (see [`on_any`](Self::on_any)).
    pub(crate) fn set_any_handler(&self, handler: BoxedHandler) {
        *self.any.writing() = Some(handler);
    }

    /// Adds a disconnect handler (see [`on_disconnect`](Self::on_disconnect)).
    pub(crate) fn add_disconnect_handler(&self, handler: BoxedHandler) {
        self.on_disconnect.locked().push(handler);
    }

    /// Adds a disconnecting handler (see [`on_disconnecting`](Self::on_disconnecting)).
    pub(crate) fn add_disconnecting_handler(&self, handler: BoxedHandler) {
        self.on_disconnecting.locked().push(handler);
    }

    /// Emits an event to this socket: any `T: Serialize` (a tuple for several arguments)
    /// or a [`Payload`] for binary (see [`IntoPayload`]). With recovery on, it gets an
    /// offset and is stored.
    ///
    /// ```no_run
    /// # fn f(socket: tether::SocketRef) -> Result<(), tether::Error> {
    /// socket.emit("hello", "world")?;
    /// socket.emit("move", (3, 4))?; // two arguments
    /// socket.emit("file", tether::Payload::new().arg("a.bin").binary(vec![1u8, 2]))?;
    /// # Ok(()) }
    /// ```
    pub fn emit(self: &Arc<Self>, event: &str, payload: impl IntoPayload) -> Result<(), Error> {
        let payload = payload.into_payload().map_err(Error::Serialize)?;
        self.ns.observers.event_sent(self, event, &payload);
        if self.ns.recovery_on() {
            self.ns.emit_to(
                &crate::BroadcastOptions::to_socket(self.id.as_str()),
                event,
                &payload,
            );
            return Ok(());
        }
        let msg = encode::event(self.nsp(), None, event, &payload, None);
        self.send(msg, attachments(&payload))
    }

    /// Emits an event and waits up to `timeout` for the client's answer.
    pub async fn emit_with_ack(
        self: &Arc<Self>,
        event: &str,
        payload: impl IntoPayload,
        timeout: Duration,
    ) -> Result<Payload, Error> {
        let payload = payload.into_payload().map_err(Error::Serialize)?;
        self.ns.observers.event_sent(self, event, &payload);
        let id = self.ns.next_ack_id();
        let rx = self.register_ack(id);
        let msg = encode::event(self.nsp(), Some(id), event, &payload, None);
        if let Err(e) = self.send(msg, attachments(&payload)) {
            self.forget_ack(id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(Error::Disconnected),
            Err(_) => {
                self.forget_ack(id);
                self.ns.observers.ack_timeout(self);
                Err(Error::Timeout)
            }
        }
    }

    pub(crate) fn register_ack(&self, id: u64) -> oneshot::Receiver<Payload> {
        let (tx, rx) = oneshot::channel();
        self.acks.locked().insert(id, tx);
        rx
    }

    pub(crate) fn forget_ack(&self, id: u64) {
        self.acks.locked().remove(&id);
    }

    /// Queues a message, or keeps it for the CONNECT reply if the socket is not connected yet.
    pub(crate) fn send(
        &self,
        msg: TextMessage,
        attachments: Option<Arc<[Bytes]>>,
    ) -> Result<(), Error> {
        if self.state.get() == State::Pending {
            let mut early = self.early.locked();
            // Checked again under the lock: the commit drains `early` after switching state.
            if self.state.get() == State::Pending {
                early.push((msg, attachments));
                return Ok(());
            }
        }
        match attachments {
            Some(a) => self.engine.send_with_attachments(msg, a)?,
            None => self.engine.send(msg)?,
        }
        Ok(())
    }

    /// Joins a room.
    pub fn join(self: &Arc<Self>, room: impl Into<Room>) {
        self.ns.join(self, room.into());
    }

    /// Leaves a room.
    pub fn leave(self: &Arc<Self>, room: &str) {
        self.ns.leave(self, room);
    }

    /// What a recoverable disconnect keeps of it, and its live record in a cluster.
    pub(crate) fn session(&self) -> Session {
        Session {
            sid: self.id.to_string(),
            pid: self.pid.clone().unwrap_or_default(),
            rooms: self.rooms(),
            data: self.data(),
            start: *self.start.locked(),
        }
    }

    /// The rooms the socket is in, without its own id (every socket is also in the room
    /// named by its id).
    pub fn rooms(&self) -> Vec<Room> {
        self.rooms.locked().clone()
    }

    /// Removes the socket from its namespace with a DISCONNECT packet. Not recoverable.
    pub fn disconnect(self: &Arc<Self>) {
        if self.connected() {
            let msg = encode::simple(tether_proto::sio::PacketType::Disconnect, self.nsp(), None);
            let _ = self.engine.send(msg);
        }
        self.ns
            .remove_socket(self, DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Closes the whole underlying connection (every namespace on it) without a
    /// DISCONNECT packet. Recoverable: the client reconnects and recovers.
    pub fn close_transport(&self) {
        self.engine.close(CloseReason::ForcedClose);
    }

    pub(crate) fn handle_event(
        self: &Arc<Self>,
        id: Option<u64>,
        mut args: Vec<Value>,
        attachments: Vec<Bytes>,
    ) {
        let Some(Value::String(event)) = args.first() else {
            return;
        };
        self.ns.observers.event_received(self, &args);
        let handler = self.handlers.reading().get(event.as_str()).cloned();
        let handler = match handler {
            Some(h) => h,
            None => match self.any.reading().clone() {
                Some(h) => h,
                None => return,
            },
        };
        let Value::String(event) = args.remove(0) else {
            return;
        };
        let _span = self.span.enter();
        handler(Parts::event(self.clone(), event, args, attachments, id));
    }

    pub(crate) fn handle_ack(self: &Arc<Self>, id: u64, args: Vec<Value>, attachments: Vec<Bytes>) {
        let tx = self.acks.locked().remove(&id);
        if let Some(tx) = tx {
            self.ns.observers.ack_received(self);
            let _ = tx.send(Payload { args, attachments });
        }
    }

    pub(crate) fn run_disconnecting(self: &Arc<Self>, reason: DisconnectReason) {
        let handlers = std::mem::take(&mut *self.on_disconnecting.locked());
        let _span = self.span.enter();
        for h in &handlers {
            h(Parts::disconnect(self.clone(), reason));
        }
    }

    pub(crate) fn run_disconnect(self: &Arc<Self>, reason: DisconnectReason) {
        self.acks.locked().clear();
        let handlers = std::mem::take(&mut *self.on_disconnect.locked());
        let _span = self.span.enter();
        for h in handlers {
            h(Parts::disconnect(self.clone(), reason));
        }
        self.handlers.writing().clear();
        *self.any.writing() = None;
    }
}

/// Answers an event that asked for an acknowledgement; an [extractor](crate::extract).
///
/// ```no_run
/// # use tether::extract::AckSender;
/// # fn f(socket: tether::SocketRef) {
/// socket.on("sum", |tether::extract::Data(v): tether::extract::Data<Vec<i64>>, ack: AckSender| {
///     let _ = ack.send(v.iter().sum::<i64>());
/// });
/// # }
/// ```
#[derive(Debug)]
pub struct AckSender {
    socket: SocketRef,
    id: u64,
}

impl AckSender {
    pub(crate) fn new(socket: SocketRef, id: u64) -> Self {
        AckSender { socket, id }
    }

    /// Sends the answer: any `T: Serialize` (a tuple for several arguments) or a
    /// [`Payload`]. Fails when it does not serialize or the socket cannot take it.
    pub fn send(self, payload: impl IntoPayload) -> Result<(), Error> {
        let payload = payload.into_payload().map_err(Error::Serialize)?;
        let msg = encode::ack(self.socket.nsp(), self.id, &payload);
        self.socket.send(msg, attachments(&payload))
    }
}

/// What a handler runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Event,
    Connect,
    Disconnect,
}

/// What a handler's arguments are extracted from: the socket and the message.
#[derive(Debug)]
pub struct Parts {
    pub(crate) socket: SocketRef,
    pub(crate) kind: Kind,
    pub(crate) event: String,
    pub(crate) args: Vec<Value>,
    pub(crate) attachments: Vec<Bytes>,
    pub(crate) ack: Option<u64>,
    pub(crate) reason: Option<DisconnectReason>,
}

impl Parts {
    pub(crate) fn event(
        socket: SocketRef,
        event: String,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
        ack: Option<u64>,
    ) -> Self {
        Parts {
            socket,
            kind: Kind::Event,
            event,
            args,
            attachments,
            ack,
            reason: None,
        }
    }

    pub(crate) fn connect(socket: SocketRef, auth: Option<Value>) -> Self {
        Parts {
            socket,
            kind: Kind::Connect,
            event: String::new(),
            args: auth.into_iter().collect(),
            attachments: Vec::new(),
            ack: None,
            reason: None,
        }
    }

    pub(crate) fn disconnect(socket: SocketRef, reason: DisconnectReason) -> Self {
        Parts {
            socket,
            kind: Kind::Disconnect,
            event: String::new(),
            args: Vec::new(),
            attachments: Vec::new(),
            ack: None,
            reason: Some(reason),
        }
    }

    /// The socket the message is for.
    pub fn socket(&self) -> &SocketRef {
        &self.socket
    }

    /// The event's name (empty in connection and disconnect handlers).
    pub fn event_name(&self) -> &str {
        &self.event
    }

    /// The arguments not taken yet by an extractor.
    pub fn args(&self) -> &[Value] {
        &self.args
    }

    /// The attachments not taken yet by an extractor.
    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    /// Whether the client asked for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    pub(crate) fn ack_sender(&self) -> Option<AckSender> {
        self.ack.map(|id| AckSender::new(self.socket.clone(), id))
    }
}
