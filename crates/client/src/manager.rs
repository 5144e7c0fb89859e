//! The task that owns a connection and its namespaces (the JavaScript client's Manager
//! and Socket logic).
//!
//! Every state change happens here, on one task: commands from
//! [`Client`](crate::Client)s ([`Cmd`]), events of the Engine.IO connection, the
//! reconnection timer and connection attempts. Handlers run on each namespace's dispatch
//! task (see `client::dispatch_loop`), never here: the manager hands them their work as
//! [`Dispatch`]es.
//!
//! This module knows the handles only through `state` (the commands, the dispatch queue,
//! the shared status) and `event`; it does not import `client` or `builder`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tether_proto::sio::{self, PacketType};
use tether_proto::Payload;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

use crate::backoff::Reconnection;
use crate::error::{Error, Result};
use crate::event::{AckSender, DisconnectReason, Event, Lifecycle};
use crate::state::{Auth, Cmd, Conn, Dispatch, ManagerShared, NewNamespace, NsShared};
use crate::transport::connection::{self, EngineHandle};
use crate::transport::{CloseReason, EngineEvent, EngineOptions, Handshake, Transport};

/// Settings of the connection (the JavaScript client's Manager options).
#[derive(Clone)]
pub(crate) struct ManagerConfig {
    pub engine: Arc<EngineOptions>,
    pub reconnection: Reconnection,
    pub timeout: Duration,
    /// Retry the first connection too.
    pub retry_first: bool,
}

/// An encoded-to-be packet with its attachments.
struct Out {
    packet: sio::Packet,
    attachments: Vec<Bytes>,
}

enum AckKind {
    /// `emit_with_ack` without retries.
    User(oneshot::Sender<Result<Payload>>),
    /// The current try of the head of the retry queue.
    Queue(u64),
}

struct PendingAck {
    kind: AckKind,
    timer: Option<AbortHandle>,
}

/// An emit of the at-least-once queue.
struct Queued {
    seq: u64,
    event: String,
    payload: Payload,
    tries: u32,
    pending: bool,
    timeout: Option<Duration>,
    reply: Option<oneshot::Sender<Result<Payload>>>,
}

struct Ns {
    shared: Arc<NsShared>,
    auth: Auth,
    retries: u32,
    ack_timeout: Option<Duration>,
    dispatch: mpsc::UnboundedSender<Dispatch>,
    connected: bool,
    pid: Option<String>,
    offset: Option<Arc<str>>,
    next_id: u64,
    acks: HashMap<u64, PendingAck>,
    send_buffer: Vec<Out>,
    queue: VecDeque<Queued>,
    queue_seq: u64,
    /// `connect()` callers waiting for the first connection.
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

impl Ns {
    fn new(n: NewNamespace) -> Self {
        let (pid, offset) = match n.session {
            Some(s) => (Some(s.pid), s.offset.map(Arc::from)),
            None => (None, None),
        };
        Ns {
            shared: n.shared,
            auth: n.auth,
            retries: n.retries,
            ack_timeout: n.ack_timeout,
            dispatch: n.dispatch,
            connected: false,
            pid,
            offset,
            next_id: 0,
            acks: HashMap::new(),
            send_buffer: Vec::new(),
            queue: VecDeque::new(),
            queue_seq: 0,
            waiters: Vec::new(),
        }
    }

    fn nsp(&self) -> &str {
        &self.shared.nsp
    }

    fn lifecycle(&self, l: Lifecycle) {
        let _ = self.dispatch.send(Dispatch::Lifecycle(l));
    }

    /// Completes an acknowledgement once the handlers saw everything received before it.
    fn complete(&self, tx: oneshot::Sender<Result<Payload>>, r: Result<Payload>) {
        if let Err(mpsc::error::SendError(Dispatch::Ack(tx, r))) =
            self.dispatch.send(Dispatch::Ack(tx, r))
        {
            let _ = tx.send(r);
        }
    }

    /// Answers a `connect()` caller once the handlers saw everything before.
    fn ready(&self, tx: oneshot::Sender<Result<()>>, r: Result<()>) {
        if let Err(mpsc::error::SendError(Dispatch::Ready(tx, r))) =
            self.dispatch.send(Dispatch::Ready(tx, r))
        {
            let _ = tx.send(r);
        }
    }

    /// Fails everything pending, for a namespace that goes away.
    fn fail_all(&mut self, err: &Error) {
        for (_, a) in std::mem::take(&mut self.acks) {
            if let Some(t) = a.timer {
                t.abort();
            }
            if let AckKind::User(tx) = a.kind {
                self.complete(tx, Err(err.clone()));
            }
        }
        for q in std::mem::take(&mut self.queue) {
            if let Some(tx) = q.reply {
                self.complete(tx, Err(err.clone()));
            }
        }
        self.send_buffer.clear();
        for w in std::mem::take(&mut self.waiters) {
            self.ready(w, Err(err.clone()));
        }
        {
            let mut st = self.shared.status();
            st.active = false;
            st.connected = false;
            st.sid = None;
        }
        self.shared.set_conn(Conn::Closed);
    }
}

type Connecting = JoinHandle<
    Result<(
        EngineHandle,
        mpsc::UnboundedReceiver<EngineEvent>,
        Handshake,
    )>,
>;

pub(crate) struct Manager {
    cfg: ManagerConfig,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    weak: mpsc::WeakUnboundedSender<Cmd>,
    shared: Arc<ManagerShared>,
    engine: Option<(EngineHandle, mpsc::UnboundedReceiver<EngineEvent>)>,
    connecting: Option<Connecting>,
    reconnect_at: Option<Instant>,
    attempts: u32,
    reconnecting: bool,
    /// Whether an Engine.IO connection ever opened.
    opened_once: bool,
    nsps: BTreeMap<String, Ns>,
    /// A binary packet waiting for its attachments.
    partial: Option<(sio::Packet, Vec<Bytes>)>,
}

async fn next_engine_event(
    engine: &mut Option<(EngineHandle, mpsc::UnboundedReceiver<EngineEvent>)>,
) -> EngineEvent {
    match engine {
        Some((_, rx)) => rx
            .recv()
            .await
            .unwrap_or(EngineEvent::Closed(CloseReason::TransportClose)),
        None => std::future::pending().await,
    }
}

async fn join_connecting(
    c: &mut Option<Connecting>,
) -> Result<(
    EngineHandle,
    mpsc::UnboundedReceiver<EngineEvent>,
    Handshake,
)> {
    match c {
        Some(h) => {
            let r = h.await;
            *c = None;
            r.unwrap_or_else(|e| Err(Error::transport(e)))
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn disconnect_reason(r: CloseReason) -> DisconnectReason {
    match r {
        CloseReason::PingTimeout => DisconnectReason::PingTimeout,
        CloseReason::TransportClose => DisconnectReason::TransportClose,
        CloseReason::TransportError(e) => DisconnectReason::TransportError(e),
        CloseReason::ParseError(e) => DisconnectReason::ParseError(e),
        CloseReason::ForcedClose => DisconnectReason::IoClientDisconnect,
    }
}

fn write(engine: &EngineHandle, out: &Out) {
    trace!(packet = ?out.packet, "send");
    engine.send_text(out.packet.encode());
    for a in &out.attachments {
        engine.send_binary(a.clone());
    }
}

fn event_packet(nsp: &str, event: &str, payload: Payload, id: Option<u64>) -> Out {
    let mut data = Vec::with_capacity(payload.args.len() + 1);
    data.push(Value::String(event.to_owned()));
    data.extend(payload.args);
    let ty = if payload.attachments.is_empty() {
        PacketType::Event
    } else {
        PacketType::BinaryEvent
    };
    Out {
        packet: sio::Packet {
            ty,
            nsp: nsp.to_owned(),
            id,
            attachments: payload.attachments.len(),
            data: Some(Value::Array(data)),
        },
        attachments: payload.attachments,
    }
}

fn payload_of(data: Option<Value>, attachments: Vec<Bytes>) -> Payload {
    let args = match data {
        Some(Value::Array(a)) => a,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    Payload { args, attachments }
}

/// Splits an event's data into its name and arguments, and takes the recovery offset off
/// the end when the namespace holds a pid (see the crate documentation).
pub(crate) fn split_event(
    data: Option<Value>,
    has_ack_id: bool,
    holds_pid: bool,
) -> Option<(String, Vec<Value>, Option<String>)> {
    let Some(Value::Array(mut a)) = data else {
        return None;
    };
    if a.is_empty() {
        return None;
    }
    let name = match a.remove(0) {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let mut offset = None;
    if holds_pid && !has_ack_id && matches!(a.last(), Some(Value::String(_))) {
        if let Some(Value::String(s)) = a.pop() {
            offset = Some(s);
        }
    }
    Some((name, a, offset))
}

/// The `CONNECT` data: the auth, with `pid` and `offset` added for recovery.
pub(crate) fn connect_data(
    auth: serde_json::Map<String, Value>,
    pid: Option<&str>,
    offset: Option<&str>,
) -> Option<Value> {
    let mut m = serde_json::Map::new();
    if let Some(pid) = pid {
        m.insert("pid".into(), Value::String(pid.to_owned()));
        if let Some(o) = offset {
            m.insert("offset".into(), Value::String(o.to_owned()));
        }
    }
    // Like the JavaScript client, the auth wins over pid/offset of the same name.
    m.extend(auth);
    if m.is_empty() {
        None
    } else {
        Some(Value::Object(m))
    }
}

impl Manager {
    /// Starts the manager task with its first namespace, and connects.
    pub(crate) fn spawn(
        cfg: ManagerConfig,
        cmd_rx: mpsc::UnboundedReceiver<Cmd>,
        weak: mpsc::WeakUnboundedSender<Cmd>,
        shared: Arc<ManagerShared>,
        first: NewNamespace,
        reply: oneshot::Sender<Result<()>>,
    ) {
        let mut m = Manager {
            cfg,
            cmd_rx,
            weak,
            shared,
            engine: None,
            connecting: None,
            reconnect_at: None,
            attempts: 0,
            reconnecting: false,
            opened_once: false,
            nsps: BTreeMap::new(),
            partial: None,
        };
        let mut ns = Ns::new(first);
        ns.waiters.push(reply);
        m.nsps.insert(ns.nsp().to_owned(), ns);
        m.start_attempt();
        tokio::spawn(m.run());
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => {
                        debug!("every client handle dropped; closing");
                        self.close_all(None);
                        break;
                    }
                },
                ev = next_engine_event(&mut self.engine) => self.on_engine_event(ev),
                r = join_connecting(&mut self.connecting) => self.on_attempt_done(r),
                _ = sleep_until(self.reconnect_at) => {
                    self.reconnect_at = None;
                    self.attempts += 1;
                    let n = self.attempts;
                    debug!(attempt = n, "reconnecting");
                    self.broadcast(|| Lifecycle::ReconnectAttempt(n));
                    self.start_attempt();
                }
            }
            if self.nsps.is_empty() {
                self.go_idle();
            }
        }
        if let Some((e, _)) = self.engine.take() {
            e.close();
        }
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        self.shared.set_transport(None);
        debug!("manager stopped");
    }

    /// No namespace left: the connection closes, and the task waits for a namespace to
    /// connect again ([`Client::connect`](crate::Client::connect)) or for every handle to
    /// be dropped.
    fn go_idle(&mut self) {
        if let Some((e, _)) = self.engine.take() {
            e.close();
        }
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
        self.reconnect_at = None;
        self.reconnecting = false;
        self.attempts = 0;
        self.partial = None;
        self.shared.set_transport(None);
    }

    fn broadcast(&self, l: impl Fn() -> Lifecycle) {
        for ns in self.nsps.values() {
            ns.lifecycle(l());
        }
    }

    fn start_attempt(&mut self) {
        let opts = self.cfg.engine.clone();
        let timeout = self.cfg.timeout;
        self.connecting = Some(tokio::spawn(async move {
            tokio::time::timeout(timeout, connection::connect(opts))
                .await
                .map_err(|_| Error::Timeout)?
        }));
    }

    fn on_attempt_done(
        &mut self,
        r: Result<(
            EngineHandle,
            mpsc::UnboundedReceiver<EngineEvent>,
            Handshake,
        )>,
    ) {
        match r {
            Ok((handle, rx, hs)) => {
                debug!(sid = %hs.sid, "connection open");
                self.shared.set_transport(Some(handle.transport()));
                if self.reconnecting {
                    let n = self.attempts;
                    self.broadcast(|| Lifecycle::Reconnect(n));
                }
                self.reconnecting = false;
                self.attempts = 0;
                self.opened_once = true;
                for ns in self.nsps.values_mut() {
                    send_connect(&handle, ns);
                }
                self.engine = Some((handle, rx));
            }
            Err(e) => {
                debug!("connection attempt failed: {e}");
                let r = &self.cfg.reconnection;
                let gives_up = !r.enabled || r.attempts.is_some_and(|max| self.attempts >= max);
                let retry_first = self.cfg.retry_first && !self.opened_once;
                if !retry_first || gives_up {
                    self.fail_waiting(&e);
                }
                if self.reconnecting {
                    self.broadcast(|| Lifecycle::ReconnectError(e.clone()));
                    self.reconnecting = false;
                }
                self.schedule_reconnect();
            }
        }
    }

    /// Namespaces that never connected fail with the connection's error.
    fn fail_waiting(&mut self, e: &Error) {
        let waiting: Vec<String> = self
            .nsps
            .iter()
            .filter(|(_, ns)| !ns.waiters.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for k in waiting {
            if let Some(mut ns) = self.nsps.remove(&k) {
                ns.fail_all(e);
            }
        }
    }

    /// Schedules the next attempt, or gives up.
    fn schedule_reconnect(&mut self) {
        if self.nsps.is_empty() {
            return;
        }
        let r = &self.cfg.reconnection;
        if !r.enabled {
            self.close_namespaces(&Error::Closed);
            return;
        }
        if r.attempts.is_some_and(|max| self.attempts >= max) {
            debug!("reconnection failed");
            self.broadcast(|| Lifecycle::ReconnectFailed);
            self.close_namespaces(&Error::Closed);
            return;
        }
        let delay = r.jittered_delay(self.attempts, rand::random::<f64>());
        debug!(?delay, "next reconnection attempt");
        self.reconnecting = true;
        self.reconnect_at = Some(Instant::now() + delay);
    }

    fn close_namespaces(&mut self, e: &Error) {
        for (_, mut ns) in std::mem::take(&mut self.nsps) {
            ns.fail_all(e);
        }
    }

    fn close_all(&mut self, reply: Option<oneshot::Sender<()>>) {
        let engine = self.engine.take();
        for (_, mut ns) in std::mem::take(&mut self.nsps) {
            if ns.connected {
                if let Some((e, _)) = &engine {
                    write(
                        e,
                        &Out {
                            packet: sio::Packet::new(PacketType::Disconnect, ns.nsp()),
                            attachments: Vec::new(),
                        },
                    );
                }
                ns.lifecycle(Lifecycle::Disconnect(DisconnectReason::IoClientDisconnect));
            }
            ns.fail_all(&Error::Closed);
        }
        if let Some((e, _)) = engine {
            e.close_then(reply);
        } else if let Some(r) = reply {
            let _ = r.send(());
        }
        self.reconnect_at = None;
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Emit {
                nsp,
                event,
                payload,
                volatile,
                ack,
            } => {
                let engine = self.engine.as_ref().map(|(e, _)| e);
                let weak = &self.weak;
                let Some(ns) = self.nsps.get_mut(&nsp) else {
                    if let Some((_, tx)) = ack {
                        let _ = tx.send(Err(Error::Closed));
                    }
                    return;
                };
                if ns.retries > 0 && !volatile {
                    let (timeout, reply) = match ack {
                        Some((t, tx)) => (Some(t), Some(tx)),
                        None => (ns.ack_timeout, None),
                    };
                    let seq = ns.queue_seq;
                    ns.queue_seq += 1;
                    ns.queue.push_back(Queued {
                        seq,
                        event,
                        payload,
                        tries: 0,
                        pending: false,
                        timeout,
                        reply,
                    });
                    drain_queue(engine, weak, ns, false);
                } else {
                    let ack = ack.map(|(t, tx)| (Some(t), AckKind::User(tx)));
                    send_event(engine, weak, ns, &event, payload, volatile, ack);
                }
            }
            Cmd::Ack { nsp, id, payload } => {
                let Some((engine, _)) = &self.engine else {
                    return;
                };
                let Some(ns) = self.nsps.get(&nsp) else {
                    return;
                };
                if !ns.connected {
                    return;
                }
                let ty = if payload.attachments.is_empty() {
                    PacketType::Ack
                } else {
                    PacketType::BinaryAck
                };
                let out = Out {
                    packet: sio::Packet {
                        ty,
                        nsp,
                        id: Some(id),
                        attachments: payload.attachments.len(),
                        data: Some(Value::Array(payload.args)),
                    },
                    attachments: payload.attachments,
                };
                write(engine, &out);
            }
            Cmd::AddNamespace { ns, reply } => {
                let nsp = ns.shared.nsp.clone();
                if let Some(open) = self.nsps.get(&nsp) {
                    if !Arc::ptr_eq(&open.shared, &ns.shared) {
                        ns.shared.status().active = false;
                    }
                    let _ = reply.send(Err(Error::Config(format!(
                        "namespace {nsp:?} is already open on this connection"
                    ))));
                    return;
                }
                let mut ns = Ns::new(ns);
                ns.waiters.push(reply);
                if let Some((engine, _)) = &self.engine {
                    send_connect(engine, &mut ns);
                }
                self.nsps.insert(nsp, ns);
                if self.engine.is_none() && self.connecting.is_none() && self.reconnect_at.is_none()
                {
                    // The connection was idle (every namespace had left): open it again.
                    self.start_attempt();
                }
            }
            Cmd::Disconnect { nsp, reply } => {
                let Some(mut ns) = self.nsps.remove(&nsp) else {
                    let _ = reply.send(());
                    return;
                };
                if ns.connected {
                    if let Some((engine, _)) = &self.engine {
                        write(
                            engine,
                            &Out {
                                packet: sio::Packet::new(PacketType::Disconnect, nsp),
                                attachments: Vec::new(),
                            },
                        );
                    }
                    ns.lifecycle(Lifecycle::Disconnect(DisconnectReason::IoClientDisconnect));
                }
                ns.fail_all(&Error::Closed);
                if self.nsps.is_empty() {
                    if let Some((engine, _)) = self.engine.take() {
                        engine.close_then(Some(reply));
                        return;
                    }
                }
                let _ = reply.send(());
            }
            Cmd::Close { reply } => self.close_all(reply),
            Cmd::AckTimeout { nsp, id } => {
                let engine = self.engine.as_ref().map(|(e, _)| e);
                let weak = &self.weak;
                let Some(ns) = self.nsps.get_mut(&nsp) else {
                    return;
                };
                let Some(ack) = ns.acks.remove(&id) else {
                    return;
                };
                ns.send_buffer.retain(|o| o.packet.id != Some(id));
                debug!(id, nsp = %nsp, "ack timed out");
                resolve_ack(engine, weak, ns, ack.kind, Err(Error::Timeout));
            }
        }
    }

    fn on_engine_event(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::Text(s) => {
                if self.partial.is_some() {
                    self.on_parse_error("text message while waiting for attachments".into());
                    return;
                }
                match sio::Packet::decode(&s) {
                    Ok(p) if p.ty.is_binary() && p.attachments > 0 => {
                        if let Some(data) = &p.data {
                            if let Err(e) = sio::count_placeholders(data, p.attachments) {
                                self.on_parse_error(e.to_string());
                                return;
                            }
                        }
                        self.partial = Some((p, Vec::new()));
                    }
                    Ok(p) => self.on_packet(p, Vec::new()),
                    Err(e) => self.on_parse_error(format!("{e}: {s:?}")),
                }
            }
            EngineEvent::Binary(b) => {
                let Some((p, mut atts)) = self.partial.take() else {
                    self.on_parse_error("unexpected binary message".into());
                    return;
                };
                atts.push(b);
                if atts.len() == p.attachments {
                    self.on_packet(p, atts);
                } else {
                    self.partial = Some((p, atts));
                }
            }
            EngineEvent::Upgraded => {
                self.shared.set_transport(Some(Transport::Websocket));
            }
            EngineEvent::Closed(reason) => self.on_engine_closed(reason),
        }
    }

    fn on_parse_error(&mut self, msg: String) {
        warn!("closing the connection: {msg}");
        if let Some((e, _)) = self.engine.take() {
            e.close();
        }
        self.on_engine_closed(CloseReason::ParseError(msg));
    }

    fn on_engine_closed(&mut self, reason: CloseReason) {
        debug!(?reason, "connection closed");
        self.engine = None;
        self.partial = None;
        self.shared.set_transport(None);
        let why = disconnect_reason(reason);
        let err = Error::transport_msg(format!("connection lost: {}", why.as_str()));
        self.fail_waiting(&err);
        let weak = self.weak.clone();
        for ns in self.nsps.values_mut() {
            if ns.connected {
                ns.connected = false;
                {
                    let mut st = ns.shared.status();
                    st.connected = false;
                    st.sid = None;
                }
                ns.lifecycle(Lifecycle::Disconnect(why.clone()));
            }
            clear_acks(&weak, ns);
        }
        self.schedule_reconnect();
    }

    fn on_packet(&mut self, p: sio::Packet, attachments: Vec<Bytes>) {
        trace!(packet = ?p, "received");
        let engine = self.engine.as_ref().map(|(e, _)| e);
        let weak = self.weak.clone();
        let Some(ns) = self.nsps.get_mut(&p.nsp) else {
            debug!(nsp = %p.nsp, "packet for a namespace we are not in");
            return;
        };
        match p.ty {
            PacketType::Connect => {
                let data = p.data.as_ref();
                let Some(sid) = data.and_then(|d| d.get("sid")).and_then(Value::as_str) else {
                    let e = Error::ProtocolVersion(
                        "the CONNECT reply has no sid: a Socket.IO 2.x server? \
                         the client speaks Socket.IO v5 (servers 3.x and later)"
                            .into(),
                    );
                    self.refuse(&p.nsp, e);
                    return;
                };
                let pid = data
                    .and_then(|d| d.get("pid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let recovered = pid.is_some() && ns.pid == pid;
                if !recovered {
                    ns.offset = None;
                    let _ = ns.dispatch.send(Dispatch::NewSession(pid.clone()));
                }
                ns.pid = pid;
                ns.connected = true;
                {
                    let mut st = ns.shared.status();
                    st.connected = true;
                    st.sid = Some(sid.to_owned());
                    st.pid = ns.pid.clone();
                    st.recovered = recovered;
                }
                debug!(nsp = %p.nsp, sid, recovered, "namespace connected");
                ns.lifecycle(Lifecycle::Connect { recovered });
                for w in std::mem::take(&mut ns.waiters) {
                    ns.ready(w, Ok(()));
                }
                if let Some(engine) = engine {
                    for out in std::mem::take(&mut ns.send_buffer) {
                        write(engine, &out);
                    }
                }
                drain_queue(engine, &weak, ns, true);
            }
            PacketType::ConnectError => {
                let (message, data) = match p.data {
                    Some(Value::Object(mut m)) => (
                        m.remove("message")
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        m.remove("data"),
                    ),
                    Some(Value::String(s)) => (s, None),
                    _ => (String::new(), None),
                };
                let e = Error::ConnectError {
                    nsp: p.nsp.clone(),
                    message,
                    data,
                };
                self.refuse(&p.nsp, e);
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let Some((name, args, offset)) =
                    split_event(p.data, p.id.is_some(), ns.pid.is_some())
                else {
                    return;
                };
                // One shared copy: the manager's, for the next CONNECT, and the event's,
                // for `Client::session` once its handlers ran.
                let offset: Option<Arc<str>> = offset.map(Arc::from);
                if offset.is_some() {
                    ns.offset.clone_from(&offset);
                }
                let ev = Event {
                    name,
                    payload: Payload { args, attachments },
                    ack: p
                        .id
                        .map(|id| AckSender::new(weak.clone(), p.nsp.clone(), id)),
                    offset,
                };
                let _ = ns.dispatch.send(Dispatch::Event(ev));
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let Some(id) = p.id else { return };
                let Some(ack) = ns.acks.remove(&id) else {
                    debug!(id, "ack for an unknown id");
                    return;
                };
                if let Some(t) = ack.timer {
                    t.abort();
                }
                resolve_ack(
                    engine,
                    &weak,
                    ns,
                    ack.kind,
                    Ok(payload_of(p.data, attachments)),
                );
            }
            PacketType::Disconnect => {
                if let Some(mut ns) = self.nsps.remove(&p.nsp) {
                    debug!(nsp = %p.nsp, "the server disconnected the namespace");
                    if ns.connected {
                        ns.lifecycle(Lifecycle::Disconnect(DisconnectReason::IoServerDisconnect));
                    }
                    ns.fail_all(&Error::Closed);
                }
            }
        }
    }

    /// The server refused a namespace: it is closed.
    fn refuse(&mut self, nsp: &str, e: Error) {
        if let Some(mut ns) = self.nsps.remove(nsp) {
            debug!(nsp, "namespace refused: {e}");
            if ns.waiters.is_empty() {
                ns.lifecycle(Lifecycle::ConnectError(e.clone()));
            }
            ns.fail_all(&e);
        }
    }
}

fn send_connect(engine: &EngineHandle, ns: &mut Ns) {
    let data = connect_data(ns.auth.eval(), ns.pid.as_deref(), ns.offset.as_deref());
    let mut packet = sio::Packet::new(PacketType::Connect, ns.nsp());
    packet.data = data;
    write(
        engine,
        &Out {
            packet,
            attachments: Vec::new(),
        },
    );
}

/// Sends (or buffers) one event, registering its ack.
fn send_event(
    engine: Option<&EngineHandle>,
    weak: &mpsc::WeakUnboundedSender<Cmd>,
    ns: &mut Ns,
    event: &str,
    payload: Payload,
    volatile: bool,
    ack: Option<(Option<Duration>, AckKind)>,
) {
    if volatile && (!ns.connected || engine.is_none()) {
        trace!(event, "volatile event dropped while disconnected");
        if let Some((_, AckKind::User(tx))) = ack {
            ns.complete(tx, Err(Error::Disconnected));
        }
        return;
    }
    let id = ack.map(|(timeout, kind)| {
        let id = ns.next_id;
        ns.next_id += 1;
        let timer = timeout.map(|d| {
            let weak = weak.clone();
            let nsp = ns.nsp().to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                if let Some(tx) = weak.upgrade() {
                    let _ = tx.send(Cmd::AckTimeout { nsp, id });
                }
            })
            .abort_handle()
        });
        ns.acks.insert(id, PendingAck { kind, timer });
        id
    });
    let out = event_packet(ns.nsp(), event, payload, id);
    match engine {
        Some(engine) if ns.connected => write(engine, &out),
        _ => ns.send_buffer.push(out),
    }
}

/// Sends the head of the retry queue if it is not in flight (or always, if `force`).
fn drain_queue(
    engine: Option<&EngineHandle>,
    weak: &mpsc::WeakUnboundedSender<Cmd>,
    ns: &mut Ns,
    force: bool,
) {
    if !ns.connected || engine.is_none() {
        return;
    }
    let ack_timeout = ns.ack_timeout;
    let Some(head) = ns.queue.front_mut() else {
        return;
    };
    if head.pending && !force {
        return;
    }
    head.pending = true;
    head.tries += 1;
    let seq = head.seq;
    let event = head.event.clone();
    let payload = head.payload.clone();
    let timeout = head.timeout.or(ack_timeout);
    trace!(seq, tries = head.tries, "sending queued event");
    send_event(
        engine,
        weak,
        ns,
        &event,
        payload,
        false,
        Some((timeout, AckKind::Queue(seq))),
    );
}

fn resolve_ack(
    engine: Option<&EngineHandle>,
    weak: &mpsc::WeakUnboundedSender<Cmd>,
    ns: &mut Ns,
    kind: AckKind,
    result: Result<Payload>,
) {
    match kind {
        AckKind::User(tx) => ns.complete(tx, result),
        AckKind::Queue(seq) => {
            let retries = ns.retries;
            let Some(head) = ns.queue.front_mut() else {
                return;
            };
            if head.seq != seq {
                return;
            }
            match result {
                Ok(p) => {
                    if let Some(q) = ns.queue.pop_front() {
                        if let Some(tx) = q.reply {
                            ns.complete(tx, Ok(p));
                        }
                    }
                }
                Err(e) => {
                    if head.tries > retries {
                        debug!(seq, tries = head.tries, "queued event discarded");
                        if let Some(q) = ns.queue.pop_front() {
                            if let Some(tx) = q.reply {
                                ns.complete(tx, Err(e));
                            }
                        }
                    } else {
                        head.pending = false;
                    }
                }
            }
            drain_queue(engine, weak, ns, false);
        }
    }
}

/// On disconnection, fails the acks of packets already sent (those still in the send
/// buffer go out after the reconnection).
fn clear_acks(weak: &mpsc::WeakUnboundedSender<Cmd>, ns: &mut Ns) {
    let buffered: Vec<u64> = ns.send_buffer.iter().filter_map(|o| o.packet.id).collect();
    let ids: Vec<u64> = ns
        .acks
        .keys()
        .copied()
        .filter(|id| !buffered.contains(id))
        .collect();
    for id in ids {
        if let Some(a) = ns.acks.remove(&id) {
            if let Some(t) = a.timer {
                t.abort();
            }
            resolve_ack(None, weak, ns, a.kind, Err(Error::Disconnected));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offsets_are_taken_off_only_when_a_pid_is_held() {
        let d = || Some(json!(["ev", 1, "off-1"]));
        let (name, args, off) = split_event(d(), false, true).unwrap();
        assert_eq!(
            (name.as_str(), args, off.as_deref()),
            ("ev", vec![json!(1)], Some("off-1"))
        );
        let (_, args, off) = split_event(d(), false, false).unwrap();
        assert_eq!(args, vec![json!(1), json!("off-1")]);
        assert_eq!(off, None);
        // Events with an ack id are never stored by the server, so carry no offset.
        let (_, args, off) = split_event(d(), true, true).unwrap();
        assert_eq!(args.len(), 2);
        assert_eq!(off, None);
        // A non-string last argument is no offset; the name alone is no offset either.
        let (_, args, off) = split_event(Some(json!(["ev", "a", 2])), false, true).unwrap();
        assert_eq!((args.len(), off), (2, None));
        let (_, args, off) = split_event(Some(json!(["ev"])), false, true).unwrap();
        assert_eq!((args.len(), off), (0, None));
        let (name, _, _) = split_event(Some(json!([7, "x"])), false, false).unwrap();
        assert_eq!(name, "7");
        assert!(split_event(Some(json!([])), false, false).is_none());
        assert!(split_event(Some(json!({})), false, false).is_none());
        assert!(split_event(Some(json!([{}])), false, false).is_none());
    }

    #[test]
    fn connect_data_merges_recovery_into_auth() {
        assert_eq!(connect_data(serde_json::Map::new(), None, None), None);
        let auth = json!({"token": "t"}).as_object().cloned().unwrap();
        assert_eq!(
            connect_data(auth.clone(), Some("p"), Some("o")),
            Some(json!({"token": "t", "pid": "p", "offset": "o"}))
        );
        assert_eq!(
            connect_data(auth.clone(), Some("p"), None),
            Some(json!({"token": "t", "pid": "p"}))
        );
        let clash = json!({"pid": "mine"}).as_object().cloned().unwrap();
        assert_eq!(
            connect_data(clash, Some("p"), Some("o")),
            Some(json!({"pid": "mine", "offset": "o"}))
        );
    }

    #[test]
    fn events_encode_as_binary_when_they_carry_attachments() {
        let out = event_packet("/a", "up", Payload::new().arg(1).binary(vec![1u8]), Some(3));
        assert_eq!(
            out.packet.encode(),
            r#"51-/a,3["up",1,{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(out.attachments.len(), 1);
        let out = event_packet("/", "x", Payload::new(), None);
        assert_eq!(out.packet.encode(), r#"2["x"]"#);
    }
}
