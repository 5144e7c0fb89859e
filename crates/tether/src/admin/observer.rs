//! What the admin namespace hears of the other namespaces, and how it describes sockets.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Instant;

use serde_json::{json, Map, Value};
use tether_engine::{CloseReason, EngineSocket};

use super::time::iso_now;
use crate::namespace::Namespace;
use crate::namespace::Observer;
use crate::sync::MutexExt as _;
use crate::{DisconnectReason, Payload, RemoteSocket, Server, SocketRef};

/// The admin namespace's observer: relays socket events (development mode) and counts
/// what `server_stats` aggregates.
pub(super) struct AdminObserver {
    ns: Weak<Namespace>,
    dev: bool,
    opened: AtomicU64,
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    closed: Mutex<HashMap<&'static str, u64>>,
    /// The engine's sent counters at the last `server_stats`.
    out: Mutex<(u64, u64)>,
}

impl AdminObserver {
    pub(super) fn new(ns: Weak<Namespace>, dev: bool) -> Self {
        AdminObserver {
            ns,
            dev,
            opened: AtomicU64::new(0),
            packets_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            closed: Mutex::new(HashMap::new()),
            out: Mutex::new((0, 0)),
        }
    }

    /// Emits to the admin namespace (cluster-wide in a cluster), in development mode.
    fn relay(&self, event: &str, args: Vec<Value>) {
        if !self.dev {
            return;
        }
        if let Some(ns) = self.ns.upgrade() {
            let _ = ns.emit(event, Payload::from_args(args));
        }
    }

    fn is_admin(&self, s: &SocketRef) -> bool {
        self.ns
            .upgrade()
            .is_some_and(|ns| std::ptr::eq(ns.as_ref(), s.namespace().as_ref()))
    }

    /// The counters since the last call, as the reference's `aggregatedEvents`.
    fn take_events(&self, io: &Server) -> Vec<Value> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() * 1000)
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut push = |ty: &str, sub: Option<&str>, count: u64| {
            if count > 0 {
                let mut e = json!({ "timestamp": now, "type": ty, "count": count });
                if let (Some(sub), Some(o)) = (sub, e.as_object_mut()) {
                    o.insert("subType".into(), Value::String(sub.to_owned()));
                }
                out.push(e);
            }
        };
        push(
            "rawConnection",
            None,
            self.opened.swap(0, Ordering::Relaxed),
        );
        for (reason, n) in std::mem::take(&mut *self.closed.locked()) {
            push("rawDisconnection", Some(reason), n);
        }
        push(
            "packetsIn",
            None,
            self.packets_in.swap(0, Ordering::Relaxed),
        );
        push("bytesIn", None, self.bytes_in.swap(0, Ordering::Relaxed));
        let engine = io.service();
        let now_out = (engine.stats().packets_out(), engine.stats().bytes_out());
        let last = std::mem::replace(&mut *self.out.locked(), now_out);
        push("packetsOut", None, now_out.0.saturating_sub(last.0));
        push("bytesOut", None, now_out.1.saturating_sub(last.1));
        out
    }

    /// This node's `server_stats`.
    pub(super) fn server_stats(
        &self,
        io: &Server,
        server_id: Option<&str>,
        started: Instant,
    ) -> Value {
        let hostname = hostname();
        let server_id = server_id
            .map(str::to_owned)
            .or_else(|| io.cluster().map(|c| c.uid().to_owned()))
            .unwrap_or_else(|| hostname.clone());
        let mut namespaces = Vec::new();
        let mut polling = HashSet::new();
        let mut recovery = RecoveryTotals::default();
        let mut all = io.inner().all_namespaces();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        for ns in all {
            let sockets = ns.sockets();
            for s in &sockets {
                if s.transport() == "polling" {
                    polling.insert(s.conn_id());
                }
            }
            namespaces.push(json!({ "name": ns.name(), "socketsCount": sockets.len() }));
            if let Some(m) = ns.recovery_metrics() {
                recovery.add(&m);
            }
        }
        json!({
            "serverId": server_id,
            "hostname": hostname,
            "pid": std::process::id(),
            "uptime": started.elapsed().as_secs_f64(),
            "clientsCount": io.connection_count(),
            "pollingClientsCount": polling.len(),
            "aggregatedEvents": self.take_events(io),
            "namespaces": namespaces,
            "recovery": recovery.to_json(),
        })
    }
}

/// A node's recovery counters, summed over its namespaces.
#[derive(Default)]
struct RecoveryTotals {
    kept: u64,
    recovered: u64,
    unknown_session: u64,
    unknown_offset: u64,
    evicted: u64,
    still_connected: u64,
    replayed: u64,
}

impl RecoveryTotals {
    fn add(&mut self, m: &crate::recovery::RecoveryMetricsSnapshot) {
        self.kept += m.sessions_kept;
        self.recovered += m.sessions_recovered;
        self.unknown_session += m.failed_unknown_session;
        self.unknown_offset += m.failed_unknown_offset;
        self.evicted += m.failed_evicted;
        self.still_connected += m.failed_still_connected;
        self.replayed += m.packets_replayed;
    }

    fn to_json(&self) -> Value {
        json!({
            "sessionsKept": self.kept,
            "sessionsRecovered": self.recovered,
            "sessionsFailed": self.unknown_session + self.unknown_offset + self.evicted
                + self.still_connected,
            "failedByReason": {
                "unknownSession": self.unknown_session,
                "unknownOffset": self.unknown_offset,
                "evicted": self.evicted,
                "stillConnected": self.still_connected,
            },
            "packetsReplayed": self.replayed,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Observer for AdminObserver {
    fn connected(&self, s: &SocketRef) {
        if self.dev {
            self.relay(
                "socket_connected",
                vec![serialize_local(s), Value::String(iso_now())],
            );
        }
    }

    fn disconnected(&self, s: &SocketRef, reason: DisconnectReason) {
        if !self.dev {
            return;
        }
        // As the reference's adapter, which leaves every room on the way out: the
        // dashboard drops a room when its last member leaves it.
        let id = s.id().to_string();
        for room in std::iter::once(crate::recovery::Room::from(id.as_str())).chain(s.rooms()) {
            self.left(s, &room);
        }
        self.relay(
            "socket_disconnected",
            vec![
                s.nsp().into(),
                s.id().to_string().into(),
                reason.as_str().into(),
                iso_now().into(),
            ],
        );
    }

    fn joined(&self, s: &SocketRef, room: &str) {
        self.relay(
            "room_joined",
            vec![
                s.nsp().into(),
                room.into(),
                s.id().to_string().into(),
                iso_now().into(),
            ],
        );
    }

    fn left(&self, s: &SocketRef, room: &str) {
        self.relay(
            "room_left",
            vec![
                s.nsp().into(),
                room.into(),
                s.id().to_string().into(),
                iso_now().into(),
            ],
        );
    }

    fn data_changed(&self, s: &SocketRef) {
        self.relay(
            "socket_updated",
            vec![json!({ "id": s.id().to_string(), "nsp": s.nsp(), "data": s.data() })],
        );
    }

    fn transport_changed(&self, s: &SocketRef) {
        self.relay(
            "socket_updated",
            vec![json!({ "id": s.id().to_string(), "nsp": s.nsp(), "transport": s.transport() })],
        );
    }

    fn event_received(&self, s: &SocketRef, args: &[Value]) {
        if self.dev && !self.is_admin(s) {
            self.relay(
                "event_received",
                vec![
                    s.nsp().into(),
                    s.id().to_string().into(),
                    Value::Array(args.to_vec()),
                    iso_now().into(),
                ],
            );
        }
    }

    fn event_sent(&self, s: &SocketRef, event: &str, payload: &Payload) {
        if self.dev && !self.is_admin(s) {
            let mut args = Vec::with_capacity(payload.args.len() + 1);
            args.push(Value::String(event.to_owned()));
            args.extend(payload.args.iter().cloned());
            self.relay(
                "event_sent",
                vec![
                    s.nsp().into(),
                    s.id().to_string().into(),
                    Value::Array(args),
                    iso_now().into(),
                ],
            );
        }
    }

    fn conn_opened(&self, _socket: &EngineSocket) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn conn_closed(&self, reason: CloseReason) {
        *self.closed.locked().entry(reason.as_str()).or_default() += 1;
    }

    fn message_in(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The handshake as the dashboard shows it: never the CONNECT payload (`auth` holds the
/// recovery pid).
fn handshake(mut h: Value, time: Option<String>) -> Value {
    if let Some(o) = h.as_object_mut() {
        o.remove("auth");
        if let Some(t) = time {
            o.insert("time".into(), Value::String(t));
        }
    }
    h
}

fn rooms_with_own(id: &str, rooms: &[crate::recovery::Room]) -> Value {
    let mut r = vec![Value::String(id.to_owned())];
    r.extend(rooms.iter().map(|x| Value::String(x.to_string())));
    Value::Array(r)
}

/// A socket of this node, as the reference's `serialize`.
fn serialize_local(s: &SocketRef) -> Value {
    let info = crate::namespace::socket_info(s);
    let client_id: String = s.conn_id().to_string().chars().take(12).collect();
    json!({
        "id": info.id,
        "clientId": client_id,
        "transport": s.transport(),
        "nsp": s.nsp(),
        "data": info.data,
        "handshake": handshake(info.handshake, Some(iso_now())),
        "rooms": rooms_with_own(&info.id, &info.rooms),
    })
}

/// A socket that [`fetch_sockets`](crate::BroadcastOperator::fetch_sockets) found. One
/// on another node says neither its connection id nor its current transport: its
/// `clientId` is made from its own id, and its transport is the one it opened with.
fn serialize_remote(nsp: &str, s: &RemoteSocket) -> Value {
    if let Some(local) = s.as_local() {
        return serialize_local(local);
    }
    let h = s.handshake();
    let transport = h
        .get("query")
        .and_then(|q| q.get("transport"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut o = Map::new();
    o.insert("id".into(), s.id().into());
    // Its connection's id is not known here: the socket stands for its own client.
    let client_id: String = s.id().chars().take(12).collect();
    o.insert("clientId".into(), client_id.into());
    o.insert("transport".into(), transport);
    o.insert("nsp".into(), nsp.into());
    o.insert("data".into(), s.data().clone());
    o.insert("handshake".into(), handshake(h.clone(), None));
    o.insert("rooms".into(), rooms_with_own(s.id(), s.rooms()));
    Value::Object(o)
}

/// Every socket of every namespace, on every node (`all_sockets`).
pub(super) async fn all_sockets(io: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in io.inner().all_namespaces() {
        match ns.operator().fetch_sockets().await {
            Ok(sockets) => out.extend(sockets.iter().map(|s| serialize_remote(ns.name(), s))),
            Err(e) => {
                tracing::warn!(nsp = ns.name(), "admin UI: fetch_sockets failed: {e}");
                out.extend(ns.sockets().iter().map(serialize_local));
            }
        }
    }
    out
}
