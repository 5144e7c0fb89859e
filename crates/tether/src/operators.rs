use std::sync::Arc;
use std::time::Duration;

use tether_engine::Sid;

use crate::namespace::Namespace;
use crate::recovery::Room;
use crate::socket::{attachments, SocketRef};
use crate::{encode, Error, Payload};

/// Whom an emit targets and how.
#[derive(Debug, Clone, Default)]
pub struct BroadcastOptions {
    /// Rooms (or socket ids) to reach; empty means the whole namespace.
    pub rooms: Vec<Room>,
    /// Rooms (or socket ids) to leave out.
    pub except: Vec<Room>,
    /// Volatile: no offset, never stored, may be lost.
    pub volatile: bool,
    /// This server only (the in-memory adapter is always local).
    pub local: bool,
    /// How long `emit_with_ack` waits.
    pub timeout: Option<Duration>,
}

impl BroadcastOptions {
    pub(crate) fn to_socket(id: Sid) -> Self {
        BroadcastOptions {
            rooms: vec![Room::from(id.as_str())],
            ..Default::default()
        }
    }
}

/// A chain of broadcast operators: `to`, `except`, `volatile`, `local`, `timeout`, then an
/// action: `emit`, `emit_with_ack`, `fetch_sockets`, `sockets_join`, `sockets_leave`,
/// `disconnect_sockets`.
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

    /// Emits the event to every target.
    pub fn emit(self, event: &str, payload: impl Into<Payload>) {
        self.ns.emit_to(&self.opts, event, &payload.into());
    }

    /// Emits the event with an ack id and collects every target's answer, or
    /// [`Error::Timeout`] for a target that did not answer in time (5 s by default).
    pub async fn emit_with_ack(
        self,
        event: &str,
        payload: impl Into<Payload>,
    ) -> Vec<(SocketRef, Result<Payload, Error>)> {
        let payload = payload.into();
        let id = self.ns.next_ack_id();
        let msg = encode::event(self.ns.name(), Some(id), event, &payload, None);
        let att = attachments(&payload);
        let mut waits = Vec::new();
        self.ns.for_each_target(&self.opts, |s| {
            let rx = s.register_ack(id);
            match s.send(msg.clone(), att.clone()) {
                Ok(()) => waits.push((s.clone(), rx)),
                Err(_) => s.forget_ack(id),
            }
        });
        let timeout = self.opts.timeout.unwrap_or(Duration::from_secs(5));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(waits.len());
        for (s, rx) in waits {
            let r = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(_)) => Err(Error::Disconnected),
                Err(_) => {
                    s.forget_ack(id);
                    Err(Error::Timeout)
                }
            };
            out.push((s, r));
        }
        out
    }

    /// The connected sockets that the operators target.
    pub fn fetch_sockets(&self) -> Vec<SocketRef> {
        let mut out = Vec::new();
        self.ns.for_each_target(&self.opts, |s| out.push(s.clone()));
        out
    }

    /// Makes every target join a room.
    pub fn sockets_join(&self, room: impl Into<Room>) {
        let room = room.into();
        for s in self.fetch_sockets() {
            s.join(room.clone());
        }
    }

    /// Makes every target leave a room.
    pub fn sockets_leave(&self, room: &str) {
        for s in self.fetch_sockets() {
            s.leave(room);
        }
    }

    /// Disconnects every target: with `close`, by closing the connection (recoverable);
    /// otherwise with a DISCONNECT packet (not recoverable).
    pub fn disconnect_sockets(&self, close: bool) {
        for s in self.fetch_sockets() {
            if close {
                s.close_transport();
            } else {
                s.disconnect();
            }
        }
    }
}
