//! What cluster-wide operations return: sockets on any node, and answers to broadcasts
//! with acks.

use std::sync::Arc;

use serde_json::Value;

use crate::adapter::{BroadcastOptions, SocketsAction};
use crate::cluster::SocketInfo;
use crate::error::Error;
use crate::namespace::{socket_info, Namespace, SocketRef};
use crate::recovery::Room;

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
        let payload = payload.into_payload().map_err(Error::Serialize)?;
        self.ns.emit_to(&self.target(), event, &payload);
        Ok(())
    }

    /// Makes it join a room, wherever it is.
    pub fn join(&self, room: impl Into<Room>) {
        let action = SocketsAction::Join(vec![room.into()]);
        self.ns.sockets_action(&self.target(), &action);
    }

    /// Makes it leave a room, wherever it is.
    pub fn leave(&self, room: &str) {
        let action = SocketsAction::Leave(vec![Room::from(room)]);
        self.ns.sockets_action(&self.target(), &action);
    }

    /// Disconnects it, wherever it is (see
    /// [`disconnect_sockets`](crate::BroadcastOperator::disconnect_sockets)).
    pub fn disconnect(&self, close: bool) {
        let action = SocketsAction::Disconnect { close };
        self.ns.sockets_action(&self.target(), &action);
    }

    /// The socket alone, as a broadcast target (what `to(id)` targets).
    fn target(&self) -> BroadcastOptions {
        BroadcastOptions::to_socket(self.id())
    }
}
