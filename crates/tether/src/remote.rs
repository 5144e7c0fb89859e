//! What cluster-wide operations return: sockets on any node, and answers to broadcasts
//! with acks.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::cluster::SocketInfo;
use crate::namespace::Namespace;
use crate::recovery::Room;
use crate::socket::SocketRef;
use crate::Error;

/// A socket found by [`fetch_sockets`](crate::BroadcastOperator::fetch_sockets), on this
/// node or another. Its actions go through the cluster, so they work wherever it is.
///
/// ```no_run
/// # async fn f(io: tether::Server) -> Result<(), tether::Error> {
/// for s in io.of("/").to("room1").fetch_sockets().await? {
///     println!("{} in {:?}", s.id(), s.rooms());
///     s.emit("hello", "you");
///     s.join("room2");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteSocket {
    ns: Arc<Namespace>,
    info: SocketInfo,
    local: Option<SocketRef>,
}

impl std::fmt::Debug for RemoteSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSocket")
            .field("id", &self.info.id)
            .field("nsp", &self.ns.name())
            .field("local", &self.local.is_some())
            .finish()
    }
}

impl RemoteSocket {
    pub(crate) fn local(ns: Arc<Namespace>, socket: SocketRef) -> Self {
        RemoteSocket {
            ns,
            info: socket_info(&socket),
            local: Some(socket),
        }
    }

    pub(crate) fn remote(ns: Arc<Namespace>, info: SocketInfo) -> Self {
        RemoteSocket {
            ns,
            info,
            local: None,
        }
    }

    /// The socket id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Its rooms when it was fetched, without its own id.
    pub fn rooms(&self) -> &[Room] {
        &self.info.rooms
    }

    /// Its `data` when it was fetched.
    pub fn data(&self) -> &Value {
        &self.info.data
    }

    /// Its handshake, in the shape of the Node.js server's `socket.handshake`
    /// (`headers`, `url`, `query`, `auth`, `address`, ...).
    pub fn handshake(&self) -> &Value {
        &self.info.handshake
    }

    /// The socket itself, when it is on this node.
    pub fn as_local(&self) -> Option<&SocketRef> {
        self.local.as_ref()
    }

    /// Emits an event to it, wherever it is.
    pub fn emit(&self, event: &str, payload: impl crate::IntoPayload) -> Result<(), Error> {
        self.ns.to(self.id()).emit(event, payload)
    }

    /// Makes it join a room, wherever it is.
    pub fn join(&self, room: impl Into<Room>) {
        self.ns.to(self.id()).sockets_join(room);
    }

    /// Makes it leave a room, wherever it is.
    pub fn leave(&self, room: &str) {
        self.ns.to(self.id()).sockets_leave(room);
    }

    /// Disconnects it, wherever it is (see
    /// [`disconnect_sockets`](crate::BroadcastOperator::disconnect_sockets)).
    pub fn disconnect(&self, close: bool) {
        self.ns.to(self.id()).disconnect_sockets(close);
    }
}

/// Describes a socket of this node for another node.
pub(crate) fn socket_info(s: &SocketRef) -> SocketInfo {
    SocketInfo {
        id: s.id().to_string(),
        rooms: s.rooms(),
        data: s.data(),
        handshake: handshake_json(s),
    }
}

/// The handshake in the shape of the Node.js server's `socket.handshake`.
fn handshake_json(s: &SocketRef) -> Value {
    let h = s.handshake();
    let mut headers = Map::new();
    for (name, value) in &h.headers {
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    let mut query = Map::new();
    if let Some(q) = h.uri.query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            query.insert(k.to_owned(), Value::String(v.to_owned()));
        }
    }
    json!({
        "headers": headers,
        "url": h.uri.to_string(),
        "query": query,
        "auth": s.auth().cloned().unwrap_or_else(|| json!({})),
        "address": h.remote_addr.map(|a| a.ip().to_string()),
        "xdomain": h.headers.contains_key(http::header::ORIGIN),
        "secure": false,
    })
}
