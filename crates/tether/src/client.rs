//! One Engine.IO connection and the namespaces multiplexed on it.

use std::future::Future as _;
use std::sync::{Arc, Mutex};
use std::task::Context;

use bytes::Bytes;
use serde_json::Value;
use tether_engine::{CloseReason, EngineSocket, Message};
use tether_proto::sio::{count_placeholders, Packet, PacketType};

use crate::config::ServerConfig;
use crate::encode;
use crate::namespace::{Connection, Namespace, SocketRef};
use crate::reason::DisconnectReason;
use crate::sync::MutexExt as _;

/// The server's namespaces, as a connection sees them: what a CONNECT names, and the
/// upkeep of dynamic namespaces' children. The server implements it; no method runs per
/// event.
pub(crate) trait Namespaces: Send + Sync {
    /// The namespace a CONNECT names: a static one, or a new child of a dynamic one.
    fn namespace_for(&self, name: &str, auth: Option<&Value>) -> Option<Arc<Namespace>>;
    /// A CONNECT to `name` starts. True when the server counts it: then
    /// [`connect_ended`](Self::connect_ended) follows.
    fn connect_started(&self, name: &str) -> bool;
    /// A counted CONNECT to `name` is over (the socket joined, or not).
    fn connect_ended(self: Arc<Self>, name: &str);
    /// A socket of `name` left its connection.
    fn socket_left(self: Arc<Self>, name: &str);
}

/// A CONNECT the server counts, until it drops.
struct Connecting {
    server: Arc<dyn Namespaces>,
    name: String,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        self.server.clone().connect_ended(&self.name);
    }
}

/// A binary packet waiting for its attachments.
struct Partial {
    packet: Packet,
    attachments: Vec<Bytes>,
    /// The summed length of `attachments`.
    bytes: usize,
}

/// One Engine.IO connection, as the Socket.IO layer sees it.
#[doc(hidden)]
pub struct Client {
    pub(crate) engine: Arc<EngineSocket>,
    server: Arc<dyn Namespaces>,
    /// `ServerConfig::max_attachments`.
    max_attachments: usize,
    /// `ServerConfig::max_attachment_bytes`.
    max_attachment_bytes: usize,
    sockets: Mutex<Vec<(String, SocketRef)>>,
    connecting: Mutex<Vec<String>>,
    partial: Mutex<Option<Partial>>,
}

impl Client {
    pub(crate) fn new(
        engine: Arc<EngineSocket>,
        server: Arc<dyn Namespaces>,
        config: &ServerConfig,
    ) -> Arc<Self> {
        Arc::new(Client {
            engine,
            server,
            max_attachments: config.max_attachments,
            max_attachment_bytes: config.max_attachment_bytes,
            sockets: Mutex::new(Vec::new()),
            connecting: Mutex::new(Vec::new()),
            partial: Mutex::new(None),
        })
    }

    /// Closes the connection if it has joined no namespace (the connect timeout).
    pub(crate) fn close_if_idle(&self) {
        let idle = self.lock_sockets().is_empty() && self.lock_connecting().is_empty();
        if idle && !self.engine.is_closed() {
            self.engine.close(CloseReason::ForcedClose);
        }
    }

    fn lock_sockets(&self) -> std::sync::MutexGuard<'_, Vec<(String, SocketRef)>> {
        self.sockets.locked()
    }

    fn lock_connecting(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.connecting.locked()
    }

    fn socket(&self, nsp: &str) -> Option<SocketRef> {
        self.lock_sockets()
            .iter()
            .find(|(n, _)| n == nsp)
            .map(|(_, s)| s.clone())
    }

    /// The sockets of every namespace on this connection.
    pub(crate) fn sockets(&self) -> Vec<SocketRef> {
        self.lock_sockets().iter().map(|(_, s)| s.clone()).collect()
    }

    pub(crate) fn on_message(self: &Arc<Self>, msg: Message<'_>) {
        match msg {
            Message::Text(text) => {
                if self
                    .partial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some()
                {
                    // As the reference's parser: text while attachments are awaited.
                    return self.parse_error("text packet while awaiting attachments");
                }
                match Packet::decode_borrowed(text) {
                    Ok(p) if p.ty.is_binary() && p.attachments > 0 => {
                        self.start_binary(p.into_owned())
                    }
                    Ok(p) => self.on_packet(p, Vec::new()),
                    Err(tether_proto::Error::TooDeep) if !text.starts_with(['5', '6']) => {
                        // A clean refusal: the packet is dropped, the connection stays.
                        tracing::warn!(
                            sid = %self.engine.sid(),
                            max_depth = tether_proto::json::MAX_DEPTH,
                            "packet dropped: JSON nested too deeply"
                        );
                    }
                    Err(e) => self.parse_error(&e.to_string()),
                }
            }
            Message::Binary(bytes) => {
                let mut partial = self.partial.locked();
                let Some(p) = partial.as_mut() else {
                    drop(partial);
                    return self.parse_error("unexpected binary message");
                };
                p.bytes += bytes.len();
                if p.bytes > self.max_attachment_bytes {
                    partial.take();
                    drop(partial);
                    return self.parse_error("attachments too large");
                }
                p.attachments.push(bytes);
                if p.attachments.len() == p.packet.attachments {
                    if let Some(done) = partial.take() {
                        drop(partial);
                        let Packet {
                            ty,
                            nsp,
                            id,
                            attachments,
                            data,
                        } = done.packet;
                        let packet = Packet {
                            ty,
                            nsp: nsp.as_str(),
                            id,
                            attachments,
                            data,
                        };
                        self.on_packet(packet, done.attachments);
                    }
                }
            }
        }
    }

    fn start_binary(self: &Arc<Self>, packet: Packet) {
        let max = self.max_attachments;
        let placeholders_ok = packet
            .data
            .as_ref()
            .is_some_and(|d| count_placeholders(d, packet.attachments).is_ok());
        if packet.attachments > max || !placeholders_ok {
            return self.parse_error("invalid attachments");
        }
        let mut partial = self.partial.locked();
        if partial.is_some() {
            drop(partial);
            return self.parse_error("binary packet interleaved");
        }
        *partial = Some(Partial {
            packet,
            attachments: Vec::new(),
            bytes: 0,
        });
    }

    fn parse_error(&self, why: &str) {
        tracing::debug!(sid = %self.engine.sid(), "parse error: {why}");
        self.engine.close(CloseReason::ParseError);
    }

    fn on_packet(self: &Arc<Self>, packet: Packet<&str>, attachments: Vec<Bytes>) {
        match packet.ty {
            PacketType::Connect => self.on_connect(packet),
            PacketType::Disconnect => {
                if let Some(s) = self.socket(packet.nsp) {
                    s.ns.remove_socket(&s, DisconnectReason::ClientNamespaceDisconnect);
                }
            }
            PacketType::Event | PacketType::BinaryEvent => {
                if let (Some(s), Some(Value::Array(args))) = (self.socket(packet.nsp), packet.data)
                {
                    s.handle_event(packet.id, args, attachments);
                }
            }
            PacketType::Ack | PacketType::BinaryAck => {
                if let (Some(s), Some(id), Some(Value::Array(args))) =
                    (self.socket(packet.nsp), packet.id, packet.data)
                {
                    s.handle_ack(id, args, attachments);
                }
            }
            PacketType::ConnectError => self.parse_error("CONNECT_ERROR from a client"),
        }
    }

    fn on_connect(self: &Arc<Self>, packet: Packet<&str>) {
        let nsp = packet.nsp.to_owned();
        if self.socket(&nsp).is_some() {
            return;
        }
        {
            let mut connecting = self.lock_connecting();
            if connecting.contains(&nsp) {
                return;
            }
            connecting.push(nsp.clone());
        }
        let pending = self.server.connect_started(&nsp).then(|| Connecting {
            server: self.server.clone(),
            name: nsp.clone(),
        });
        let Some(ns) = self.server.namespace_for(&nsp, packet.data.as_ref()) else {
            self.connect_done(&nsp);
            let err = serde_json::json!({ "message": "Invalid namespace" });
            let _ = self
                .engine
                .send(encode::simple(PacketType::ConnectError, &nsp, Some(&err)));
            return;
        };
        // Run the connect inline when it does not wait (no middleware, no probe): the
        // common case keeps its order with the packets that follow. Otherwise, a task.
        let connect = ns.connect(self.clone(), packet.data);
        let mut fut = Box::pin(async move {
            connect.await;
            drop(pending);
        });
        let waker = futures_util::task::noop_waker();
        if fut
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
        {
            tokio::spawn(fut);
        }
    }

    pub(crate) fn on_close(&self, reason: CloseReason) {
        let sockets = std::mem::take(&mut *self.lock_sockets());
        for (_, s) in sockets {
            s.ns.remove_socket(&s, reason.into());
        }
        self.partial.locked().take();
    }
}

impl Connection for Client {
    fn engine(&self) -> &Arc<EngineSocket> {
        &self.engine
    }

    fn connect_done(&self, nsp: &str) {
        self.lock_connecting().retain(|n| n != nsp);
    }

    fn add_socket(&self, nsp: &str, socket: SocketRef) {
        self.lock_connecting().retain(|n| n != nsp);
        let mut sockets = self.lock_sockets();
        sockets.retain(|(n, _)| n != nsp);
        sockets.push((nsp.to_owned(), socket));
    }

    fn remove_socket(&self, nsp: &str, socket: &SocketRef) {
        self.lock_sockets()
            .retain(|(n, s)| !(n == nsp && Arc::ptr_eq(s, socket)));
        self.server.clone().socket_left(nsp);
    }
}
