use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tether_engine::{CloseReason, EngineSocket, Handshake, Sid, TextMessage};
use tokio::sync::oneshot;

use crate::client::Client;
use crate::namespace::Namespace;
use crate::operators::BroadcastOperator;
use crate::recovery::Room;
use crate::sync::{MutexExt as _, RwLockExt as _};
use crate::{encode, DisconnectReason, Error, Payload};

/// A handle on a socket, cheap to clone.
pub type SocketRef = Arc<Socket>;

/// An event handler: the socket, the arguments, and an [`AckSender`] when the client
/// asked for an answer.
pub type EventHandler = Arc<dyn Fn(&SocketRef, Payload, Option<AckSender>) + Send + Sync>;

/// A message waiting for the CONNECT reply.
pub(crate) type Queued = (TextMessage, Option<Arc<[Bytes]>>);
type DisconnectHandler = Box<dyn FnOnce(&SocketRef, DisconnectReason) + Send + Sync>;
type DisconnectingHandler = Box<dyn Fn(&SocketRef, DisconnectReason) + Send + Sync>;

pub(crate) const PENDING: u8 = 0;
pub(crate) const CONNECTED: u8 = 1;
pub(crate) const CLOSED: u8 = 2;

/// One client's presence in one namespace.
///
/// Created when a CONNECT is accepted; the connection handler registers event handlers on
/// it before the CONNECT reply is written, so no event is missed.
pub struct Socket {
    id: Sid,
    pid: Option<String>,
    pub(crate) ns: Arc<Namespace>,
    pub(crate) client: Weak<Client>,
    pub(crate) engine: Arc<EngineSocket>,
    pub(crate) state: AtomicU8,
    /// Whether the namespace's maps hold the socket (guarded by the rooms lock).
    pub(crate) registered: AtomicBool,
    recovered: bool,
    /// The log position the socket's replay starts after when it has no offset.
    pub(crate) start: u64,
    data: Mutex<Value>,
    pub(crate) rooms: Mutex<Vec<Room>>,
    handlers: RwLock<HashMap<String, EventHandler>>,
    any: RwLock<Option<EventHandler>>,
    on_disconnect: Mutex<Vec<DisconnectHandler>>,
    on_disconnecting: Mutex<Vec<DisconnectingHandler>>,
    pub(crate) acks: Mutex<HashMap<u64, oneshot::Sender<Payload>>>,
    /// Messages emitted before the socket is connected (without recovery).
    pub(crate) early: Mutex<Vec<Queued>>,
    extensions: Mutex<http::Extensions>,
    /// The CONNECT payload (`socket.handshake.auth` in the reference).
    auth: Option<Value>,
    /// Cluster: the entry position when the socket connected.
    pub(crate) cluster_start: Mutex<Option<crate::cluster::Position>>,
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
    pub start: u64,
    pub recovered: bool,
}

impl Socket {
    pub(crate) fn new(
        ns: Arc<Namespace>,
        client: &Arc<Client>,
        origin: Origin,
        auth: Option<Value>,
    ) -> SocketRef {
        let span = crate::trace::socket_span(
            &ns,
            origin.id,
            origin.pid.as_deref(),
            client.engine.transport(),
            origin.recovered,
        );
        Arc::new(Socket {
            span,
            id: origin.id,
            pid: origin.pid,
            ns,
            client: Arc::downgrade(client),
            engine: client.engine.clone(),
            state: AtomicU8::new(PENDING),
            registered: AtomicBool::new(false),
            recovered: origin.recovered,
            start: origin.start,
            data: Mutex::new(origin.data),
            rooms: Mutex::new(origin.rooms),
            handlers: RwLock::new(HashMap::new()),
            any: RwLock::new(None),
            on_disconnect: Mutex::new(Vec::new()),
            on_disconnecting: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            early: Mutex::new(Vec::new()),
            extensions: Mutex::new(http::Extensions::new()),
            cluster_start: Mutex::new(None),
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
        self.state.load(Ordering::Acquire) == CONNECTED
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

    /// Registers the handler of an event, replacing any earlier one.
    ///
    /// ```no_run
    /// # fn f(socket: tether::SocketRef) {
    /// socket.on("echo", |_socket, payload, ack| {
    ///     if let Some(ack) = ack {
    ///         ack.send(payload);
    ///     }
    /// });
    /// # }
    /// ```
    pub fn on<F>(&self, event: impl Into<String>, handler: F)
    where
        F: Fn(&SocketRef, Payload, Option<AckSender>) + Send + Sync + 'static,
    {
        self.handlers
            .writing()
            .insert(event.into(), Arc::new(handler));
    }

    /// Registers a handler for events that have no handler of their own; it gets the event
    /// name as the first argument.
    pub fn on_any<F>(&self, handler: F)
    where
        F: Fn(&SocketRef, Payload, Option<AckSender>) + Send + Sync + 'static,
    {
        *self.any.writing() = Some(Arc::new(handler));
    }

    /// Runs once when the socket disconnects, after it left its rooms.
    pub fn on_disconnect<F>(&self, handler: F)
    where
        F: FnOnce(&SocketRef, DisconnectReason) + Send + Sync + 'static,
    {
        self.on_disconnect.locked().push(Box::new(handler));
    }

    /// Runs when the socket is about to disconnect, while it is still in its rooms.
    pub fn on_disconnecting<F>(&self, handler: F)
    where
        F: Fn(&SocketRef, DisconnectReason) + Send + Sync + 'static,
    {
        self.on_disconnecting.locked().push(Box::new(handler));
    }

    /// Emits an event to this socket. With recovery on, it gets an offset and is stored.
    pub fn emit(self: &Arc<Self>, event: &str, payload: impl Into<Payload>) -> Result<(), Error> {
        let payload = payload.into();
        self.ns.observers.event_sent(self, event, &payload);
        if self.ns.recovery().is_some() {
            self.ns.emit_to(
                &crate::operators::BroadcastOptions::to_socket(self.id),
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
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload, Error> {
        let payload = payload.into();
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
        if self.state.load(Ordering::Acquire) == PENDING {
            let mut early = self.early.locked();
            // Checked again under the lock: the commit drains `early` after switching state.
            if self.state.load(Ordering::Acquire) == PENDING {
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

    /// The rooms the socket is in, without its own id (every socket is also in the room
    /// named by its id).
    pub fn rooms(&self) -> Vec<Room> {
        self.rooms.locked().clone()
    }

    /// Targets a room: the event goes to its members except this socket.
    pub fn to(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// Targets every socket of the namespace except this one.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).except(Room::from(self.id.as_str()))
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
        let Some(Value::String(event)) = args.first().cloned() else {
            return;
        };
        self.ns.observers.event_received(self, &args);
        let handler = self.handlers.reading().get(&event).cloned();
        let (handler, args) = match handler {
            Some(h) => {
                args.remove(0);
                (h, args)
            }
            None => match self.any.reading().clone() {
                Some(h) => (h, args),
                None => return,
            },
        };
        let ack = id.map(|id| AckSender {
            socket: self.clone(),
            id,
        });
        let _span = self.span.enter();
        handler(self, Payload { args, attachments }, ack);
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
            h(self, reason);
        }
    }

    pub(crate) fn run_disconnect(self: &Arc<Self>, reason: DisconnectReason) {
        self.acks.locked().clear();
        let handlers = std::mem::take(&mut *self.on_disconnect.locked());
        let _span = self.span.enter();
        for h in handlers {
            h(self, reason);
        }
        self.handlers.writing().clear();
        *self.any.writing() = None;
    }
}

pub(crate) fn attachments(payload: &Payload) -> Option<Arc<[Bytes]>> {
    (!payload.attachments.is_empty()).then(|| Arc::from(payload.attachments.clone()))
}

/// Answers an event that asked for an acknowledgement.
#[derive(Debug)]
pub struct AckSender {
    socket: SocketRef,
    id: u64,
}

impl AckSender {
    /// Sends the answer.
    pub fn send(self, payload: impl Into<Payload>) {
        let payload = payload.into();
        let msg = encode::ack(self.socket.nsp(), self.id, &payload);
        let _ = self.socket.send(msg, attachments(&payload));
    }
}
