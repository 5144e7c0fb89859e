//! Broadcast operators: [`BroadcastOperator`], and the methods of [`Namespace`] and
//! [`Socket`] that start one.

use std::sync::Arc;
use std::time::Duration;

use crate::acks::{AckResponse, AckResponses};
use crate::adapter::{BroadcastOptions, SocketsAction};
use crate::error::Error;
use crate::namespace::{Namespace, Socket, SocketRef};
use crate::recovery::Room;
use crate::remote::RemoteSocket;
use crate::IntoPayload;

/// A chain of broadcast operators: `to`, `except`, `volatile`, `local`, `timeout`, then an
/// action: `emit`, `emit_with_ack`, `fetch_sockets`, `sockets_join`, `sockets_leave`,
/// `disconnect_sockets`. In a cluster, every action reaches every node unless `local`.
///
/// ```no_run
/// # fn f(io: tether::Server) {
/// io.of("/").to("room1").to("room2").except("banned").emit("news", "hello");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    ns: Arc<Namespace>,
    opts: BroadcastOptions,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<Namespace>) -> Self {
        BroadcastOperator {
            ns,
            opts: BroadcastOptions::default(),
        }
    }

    /// Adds a room (or a socket id) to the targets.
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        let room = room.into();
        if !self.opts.rooms.contains(&room) {
            self.opts.rooms.push(room);
        }
        self
    }

    /// Leaves out the members of a room (or a socket id).
    pub fn except(mut self, room: impl Into<Room>) -> Self {
        let room = room.into();
        if !self.opts.except.contains(&room) {
            self.opts.except.push(room);
        }
        self
    }

    /// Volatile: no offset, never stored for recovery, may be lost.
    pub fn volatile(mut self) -> Self {
        self.opts.volatile = true;
        self
    }

    /// This server only (meaningful with a multi-server adapter).
    pub fn local(mut self) -> Self {
        self.opts.local = true;
        self
    }

    /// The timeout of [`emit_with_ack`](Self::emit_with_ack).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.timeout = Some(timeout);
        self
    }

    /// Emits the event to every target: any `T: Serialize` (a tuple for several
    /// arguments) or a [`Payload`](crate::Payload). Fails only when it does not serialize.
    pub fn emit(self, event: &str, payload: impl IntoPayload) -> Result<(), Error> {
        let payload = payload.into_payload().map_err(Error::Serialize)?;
        self.ns.emit_to(&self.opts, event, &payload);
        Ok(())
    }

    /// Emits the event with an ack id to every target, on every node, and collects the
    /// answers: one entry per target reached, with [`Error::Timeout`] for a target that did
    /// not answer in time (5 s by default, see [`timeout`](Self::timeout)). Fails only
    /// when the payload does not serialize.
    ///
    /// ```no_run
    /// # async fn f(io: tether::Server) -> Result<(), tether::Error> {
    /// use std::time::Duration;
    /// let acks = io.of("/").to("room1").timeout(Duration::from_secs(2))
    ///     .emit_with_ack("question", "ready?").await?;
    /// for r in &acks.responses {
    ///     println!("{:?}: {:?}", r.socket_id, r.result);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn emit_with_ack(
        self,
        event: &str,
        payload: impl IntoPayload,
    ) -> Result<AckResponses, Error> {
        let payload = payload.into_payload().map_err(Error::Serialize)?;
        let timeout = self.opts.timeout.unwrap_or(DEFAULT_ACK_TIMEOUT);
        let deadline = tokio::time::Instant::now() + timeout;
        let waits = self.ns.send_with_ack(&self.opts, event, &payload);
        let local = async {
            let mut out = Vec::with_capacity(waits.len());
            for (s, rx) in waits {
                let result = match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(_)) => Err(Error::Disconnected),
                    Err(_) => Err(Error::Timeout),
                };
                out.push(AckResponse {
                    socket_id: Some(s.id().to_string()),
                    result,
                });
            }
            out
        };
        let adapter = self.ns.adapter();
        let remote =
            adapter.broadcast_with_ack_remote(&self.opts, event, &payload, timeout, deadline);
        let (mut responses, remote) = tokio::join!(local, remote);
        let mut complete = true;
        if let Some(r) = remote {
            responses.extend(r.responses);
            complete = r.complete;
        }
        Ok(AckResponses {
            responses,
            complete,
        })
    }

    /// The targets that are connected to this node.
    pub fn local_sockets(&self) -> Vec<SocketRef> {
        let mut out = Vec::new();
        self.ns.for_each_target(&self.opts, |s| out.push(s.clone()));
        out
    }

    /// The targets on every node (on this one only with [`local`](Self::local) or without
    /// a cluster). [`Error::Timeout`] when a node does not answer in time (5 s by default,
    /// see [`timeout`](Self::timeout)).
    pub async fn fetch_sockets(&self) -> Result<Vec<RemoteSocket>, Error> {
        let mut out: Vec<RemoteSocket> = self
            .local_sockets()
            .into_iter()
            .map(|s| RemoteSocket::local(self.ns.clone(), s))
            .collect();
        let timeout = self.opts.timeout.unwrap_or(DEFAULT_ACK_TIMEOUT);
        let remote = self.ns.adapter().fetch_remote(&self.opts, timeout).await?;
        out.extend(
            remote
                .into_iter()
                .map(|info| RemoteSocket::remote(self.ns.clone(), info)),
        );
        Ok(out)
    }

    /// Makes every target, on every node, join a room.
    pub fn sockets_join(&self, room: impl Into<Room>) {
        self.sockets_action(SocketsAction::Join(vec![room.into()]));
    }

    /// Makes every target, on every node, leave a room.
    pub fn sockets_leave(&self, room: &str) {
        self.sockets_action(SocketsAction::Leave(vec![Room::from(room)]));
    }

    /// Disconnects every target, on every node: with `close`, by closing the connection
    /// (recoverable); otherwise with a DISCONNECT packet (not recoverable).
    pub fn disconnect_sockets(&self, close: bool) {
        self.sockets_action(SocketsAction::Disconnect { close });
    }

    fn sockets_action(&self, action: SocketsAction) {
        self.ns.sockets_action(&self.opts, &action);
    }
}

/// How long acks and cluster requests wait by default (the reference's 5 s).
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The operators a namespace starts.
impl Namespace {
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

    /// Emits to every socket of the namespace (see [`BroadcastOperator::emit`]).
    pub fn emit(self: &Arc<Self>, event: &str, payload: impl IntoPayload) -> Result<(), Error> {
        BroadcastOperator::new(self.clone()).emit(event, payload)
    }
}

/// The operators a socket starts: they leave the socket itself out.
impl Socket {
    /// Targets a room: the event goes to its members except this socket.
    pub fn to(self: &Arc<Self>, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// Targets every socket of the namespace except this one.
    pub fn broadcast(self: &Arc<Self>) -> BroadcastOperator {
        BroadcastOperator::new(self.namespace().clone()).except(Room::from(self.id().as_str()))
    }
}
