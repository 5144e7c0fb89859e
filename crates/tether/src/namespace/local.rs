//! This node's side of a namespace: the socket and room maps, registration, and what the
//! adapter reaches through [`LocalSockets`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tether_engine::{CloseReason, Sid};
use tether_proto::sio::PacketType;
use tokio::sync::oneshot;

use serde_json::{json, Map, Value};

use super::{Connection, Namespace, SocketRef, State, PROBE_TIMEOUT};
use crate::adapter::{BroadcastOptions, LocalSockets, SocketInfo, SocketsAction};
use crate::cluster::ServerSideAck;
use crate::encode::attachments;
use crate::reason::DisconnectReason;
use crate::recovery::{Position, Room, Session, StoredPacket};
use crate::sync::{MutexExt as _, RwLockExt as _};
use crate::{encode, Payload};

impl Namespace {
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

    /// Makes a pending socket live (called by the adapter, under its order): the
    /// CONNECT reply, the replay, then the messages it emitted while connecting, then
    /// registration. False when it went away meanwhile.
    pub(super) fn register(
        &self,
        client: &Arc<dyn Connection>,
        socket: &SocketRef,
        replay: &[StoredPacket],
        start: Option<Position>,
    ) -> bool {
        if client.engine().is_closed() || socket.state.get() != State::Pending {
            client.connect_done(&self.name);
            socket.state.set(State::Closed);
            return false;
        }
        *socket.start.locked() = start;
        client.add_socket(&self.name, socket.clone());
        let mut reply = serde_json::Map::new();
        reply.insert("sid".into(), Value::String(socket.id().to_string()));
        if let Some(pid) = socket.pid() {
            reply.insert("pid".into(), Value::String(pid.to_owned()));
        }
        let msg = encode::simple(PacketType::Connect, &self.name, Some(&Value::Object(reply)));
        socket.engine.send_unbounded(msg, None);
        for p in replay {
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
            socket.state.set(State::Connected);
            for (m, a) in early.drain(..) {
                socket.engine.send_unbounded(m, a);
            }
        }
        if let Some(pid) = socket.pid() {
            self.live
                .locked()
                .insert(pid.to_owned(), Arc::downgrade(socket));
        }
        true
    }

    /// Takes a socket out of the maps (called by the adapter, under its order).
    pub(super) fn unregister(&self, socket: &SocketRef) {
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
        if let Some(pid) = socket.pid() {
            let mut live = self.live.locked();
            if live
                .get(pid)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(socket)))
            {
                live.remove(pid);
            }
        }
    }

    pub(crate) fn join(&self, socket: &SocketRef, room: Room) {
        {
            let mut map = self.rooms.writing();
            let mut rooms = socket.rooms.locked();
            if socket.state.get() == State::Closed || rooms.contains(&room) {
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

    /// Sends the event with one ack id to every local target; the receivers of their
    /// answers.
    pub(crate) fn send_with_ack(
        &self,
        opts: &BroadcastOptions,
        event: &str,
        payload: &Payload,
    ) -> Vec<(SocketRef, oneshot::Receiver<Payload>)> {
        let id = self.next_ack_id();
        let msg = encode::event(self.name(), Some(id), event, payload, None);
        let att = attachments(payload);
        let mut waits = Vec::new();
        self.for_each_target(opts, |s| {
            let rx = s.register_ack(id);
            match s.send(msg.clone(), att.clone()) {
                Ok(()) => waits.push((s.clone(), rx)),
                Err(_) => s.forget_ack(id),
            }
        });
        waits
    }
}

impl LocalSockets for Namespace {
    fn deliver(&self, opts: &BroadcastOptions, packet: &StoredPacket) {
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

    fn live_sessions(&self) -> Vec<Session> {
        let sockets: Vec<SocketRef> = self
            .live
            .locked()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        sockets
            .iter()
            .filter(|s| s.registered.load(Ordering::Acquire))
            .map(|s| s.session())
            .collect()
    }

    fn probe_live(&self, pid: &str, alive: Box<dyn FnOnce() + Send>) {
        let Some(socket) = self.live_socket(pid) else {
            return;
        };
        tokio::spawn(async move {
            if socket.engine.probe(PROBE_TIMEOUT).await {
                alive();
            } else {
                socket.engine.close(CloseReason::PingTimeout);
                socket
                    .namespace()
                    .remove_socket(&socket, DisconnectReason::PingTimeout);
            }
        });
    }

    fn apply_sockets_action(&self, opts: &BroadcastOptions, action: &SocketsAction) {
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

    fn socket_infos(&self, opts: &BroadcastOptions) -> Vec<SocketInfo> {
        let mut out = Vec::new();
        self.for_each_target(opts, |s| out.push(socket_info(s)));
        out
    }

    fn emit_with_ack(
        &self,
        opts: &BroadcastOptions,
        event: &str,
        payload: &Payload,
    ) -> Vec<(String, oneshot::Receiver<Payload>)> {
        self.send_with_ack(opts, event, payload)
            .into_iter()
            .map(|(s, rx)| (s.id().to_string(), rx))
            .collect()
    }

    fn run_server_side(&self, event: &str, payload: Payload, ack: Option<ServerSideAck>) {
        let handler = self.server_side.reading().get(event).cloned();
        if let Some(h) = handler {
            h(payload, ack);
        }
    }
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
