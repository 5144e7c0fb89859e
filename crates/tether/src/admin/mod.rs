//! The server side of the official Socket.IO Admin UI (`@socket.io/admin-ui` 0.5).
//!
//! [`Server::instrument`] opens the `/admin` namespace that the dashboard (the hosted one,
//! or the npm package's `ui/dist` served by [`AdminUiLayer`]) connects to. It speaks the
//! protocol of the package's Node.js `instrument()`:
//!
//! - auth: none, or basic (a username and a bcrypt hash of the password); a successful
//!   login gets a `session` id that the dashboard reuses when it reconnects;
//! - `config` (the supported features) on connection, then `server_stats` every
//!   [`stats_interval`](AdminConfig::stats_interval) (2 s);
//! - in [`AdminMode::Development`] only: `all_sockets` on connection, then
//!   `socket_connected`, `socket_updated`, `socket_disconnected`, `room_joined`,
//!   `room_left`, `event_received` and `event_sent` as they happen;
//! - the actions (unless [`readonly`](AdminConfig::readonly)): `emit`, `join`, `leave`
//!   and `_disconnect`, applied through the cluster-wide operators, so they reach a socket
//!   on any node.
//!
//! In a cluster every node instruments itself: each emits its own `server_stats` (its
//! cluster uid as `serverId`) and its own sockets' events to the admin namespace, which
//! is a cluster-wide broadcast, so a dashboard connected to any node sees every node.
//! `server_stats` also carries a `recovery` object (sessions kept, recovered, failed by
//! reason, packets replayed) for that node; the dashboard ignores fields it does not
//! know, so it is there for scripts and for the admin namespace's other clients.
//!
//! ```no_run
//! use tether::admin::{AdminAuth, AdminConfig};
//!
//! # fn f(io: tether::Server) -> Result<(), tether::Error> {
//! io.instrument(AdminConfig::new(AdminAuth::Basic {
//!     username: "admin".into(),
//!     // The bcrypt hash of "changeit" (at cost 4; use 10 or more for a real password).
//!     password_hash: "$2a$04$9y1B7yvs3MLaffC.hCZVxepNug2lDfDsg7ZZlMxDnOlf14So212He".into(),
//! }))?;
//! # Ok(()) }
//! ```

mod files;
mod observer;
mod time;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::extract::Data;
use crate::namespace::Namespace;
use crate::sync::MutexExt as _;
use crate::{ConnectError, Error, Payload, Server, SocketRef};

pub use files::{AdminUiLayer, AdminUiService};
use observer::AdminObserver;

/// How the dashboard logs in.
#[derive(Clone)]
pub enum AdminAuth {
    /// No login: anyone who reaches the server can use the dashboard. Use with care.
    None,
    /// A username and the bcrypt hash of the password (as made by `bcrypt` or
    /// `htpasswd -bnBC 10 "" PASSWORD`).
    Basic {
        /// The username.
        username: String,
        /// The bcrypt hash of the password (`$2a$`, `$2b$` or `$2y$`).
        password_hash: String,
    },
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminAuth::None => f.write_str("None"),
            AdminAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

/// Which events the admin namespace hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminMode {
    /// Every socket's connection, rooms, `data` and events, as they happen (the
    /// reference's default). Costs an admin broadcast per event.
    Development,
    /// Only `server_stats`: cheap enough for production.
    Production,
}

/// The options of [`Server::instrument`].
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The namespace the dashboard connects to (`/admin`).
    pub namespace: String,
    /// How the dashboard logs in. No default: say [`AdminAuth::None`] to go without.
    pub auth: AdminAuth,
    /// Hide the actions (emit, join, leave, disconnect) from the dashboard (`false`).
    pub readonly: bool,
    /// The `serverId` in `server_stats` (default: the cluster uid, else the hostname).
    pub server_id: Option<String>,
    /// [`AdminMode::Development`] by default, as the reference when `NODE_ENV` is unset.
    pub mode: AdminMode,
    /// How often `server_stats` goes out (2 s).
    pub stats_interval: Duration,
}

impl AdminConfig {
    /// The defaults, with this login.
    pub fn new(auth: AdminAuth) -> Self {
        AdminConfig {
            namespace: "/admin".into(),
            auth,
            readonly: false,
            server_id: None,
            mode: AdminMode::Development,
            stats_interval: Duration::from_secs(2),
        }
    }
}

/// The features the dashboard may offer, as the reference names them.
fn features(config: &AdminConfig) -> Vec<&'static str> {
    let mut f = if config.readonly {
        Vec::new()
    } else {
        vec![
            "EMIT",
            "JOIN",
            "LEAVE",
            "DISCONNECT",
            "MJOIN",
            "MLEAVE",
            "MDISCONNECT",
        ]
    };
    f.push("AGGREGATED_EVENTS");
    if config.mode == AdminMode::Development {
        f.push("ALL_EVENTS");
    }
    f
}

impl Server {
    /// Serves the Socket.IO Admin UI's protocol on
    /// [`config.namespace`](AdminConfig::namespace) (see [`crate::admin`]). Call it once,
    /// on a server built with [`join_cluster`](Server::join_cluster) when there is a
    /// cluster, so the node reports its cluster uid.
    ///
    /// Fails with [`Error::AdminPasswordHash`] when the basic auth's hash is not a
    /// bcrypt hash.
    pub fn instrument(&self, config: AdminConfig) -> Result<(), Error> {
        if let AdminAuth::Basic { password_hash, .. } = &config.auth {
            password_hash
                .parse::<bcrypt::HashParts>()
                .map_err(Error::AdminPasswordHash)?;
        }
        let ns = self.of(&config.namespace);
        // The dashboard needs no recovery, and its `session` emit must reach a socket
        // that is still connecting.
        ns.set_recovery(None);
        let sessions: Arc<Mutex<HashSet<String>>> = Arc::default();
        if let AdminAuth::Basic {
            username,
            password_hash,
        } = config.auth.clone()
        {
            let sessions = sessions.clone();
            ns.use_middleware(move |socket: SocketRef, Data(auth): Data<Option<Value>>| {
                let (username, hash, sessions) =
                    (username.clone(), password_hash.clone(), sessions.clone());
                async move { login(&socket, auth, &username, &hash, &sessions).await }
            });
        }
        let features = features(&config);
        let dev = config.mode == AdminMode::Development;
        let io = self.clone();
        ns.on_connection(move |socket: SocketRef| {
            let _ = socket.emit("config", json!({ "supportedFeatures": features }));
            if !features.is_empty() {
                register_actions(&io, &socket, &features);
            }
            if dev {
                let (io, socket) = (io.clone(), socket.clone());
                tokio::spawn(async move {
                    let all = observer::all_sockets(&io).await;
                    let _ = socket.emit("all_sockets", Value::Array(all));
                });
            }
        });
        let observer = Arc::new(AdminObserver::new(Arc::downgrade(&ns), dev));
        self.inner().observers.add(observer.clone());
        let io = self.clone();
        let started = Instant::now();
        let server_id = config.server_id.clone();
        let interval = config.stats_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let stats = observer.server_stats(&io, server_id.as_deref(), started);
                let _ = ns.emit("server_stats", stats);
            }
        });
        Ok(())
    }
}

/// Checks a dashboard's login: a session id it got earlier, or the credentials.
async fn login(
    socket: &SocketRef,
    auth: Option<Value>,
    username: &str,
    hash: &str,
    sessions: &Mutex<HashSet<String>>,
) -> Result<(), ConnectError> {
    let field = |k: &str| {
        auth.as_ref()
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Some(id) = field("sessionId") {
        if sessions.locked().contains(&id) {
            return Ok(());
        }
    }
    if field("username").as_deref() == Some(username) {
        let password = field("password").unwrap_or_default();
        let hash = hash.to_owned();
        // bcrypt is slow on purpose: off the runtime's threads.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok {
            let id = format!("{:016x}", rand::random::<u64>());
            sessions.locked().insert(id.clone());
            let _ = socket.emit("session", id);
            return Ok(());
        }
    }
    tracing::debug!(nsp = socket.nsp(), "admin UI: invalid credentials");
    Err(ConnectError::new("invalid credentials"))
}

/// The namespace an action names, when this node has it.
fn target_ns(io: &Server, payload: &Payload) -> Option<Arc<Namespace>> {
    let name = payload.args.first()?.as_str()?;
    io.inner().existing_namespace(name)
}

/// The `filter` argument: a room or a socket id, or nothing for the whole namespace.
fn filter_at(payload: &Payload, i: usize) -> Option<String> {
    payload
        .args
        .get(i)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn register_actions(io: &Server, socket: &SocketRef, features: &[&'static str]) {
    if features.contains(&"EMIT") {
        let io = io.clone();
        socket.on("emit", move |payload: Payload| {
            let (Some(ns), Some(ev)) = (
                target_ns(&io, &payload),
                payload.args.get(2).and_then(Value::as_str),
            ) else {
                return;
            };
            let out = Payload {
                args: payload.args.get(3..).unwrap_or_default().to_vec(),
                attachments: payload.attachments.clone(),
            };
            let _ = match filter_at(&payload, 1) {
                Some(room) => ns.to(room).emit(ev, out),
                None => ns.emit(ev, out),
            };
        });
    }
    if features.contains(&"JOIN") {
        let io = io.clone();
        socket.on("join", move |payload: Payload| {
            let (Some(ns), Some(room)) = (target_ns(&io, &payload), filter_at(&payload, 1)) else {
                return;
            };
            tracing::debug!(nsp = ns.name(), room, "admin UI: join");
            match filter_at(&payload, 2) {
                Some(f) => ns.to(f).sockets_join(room),
                None => ns.operator().sockets_join(room),
            }
        });
    }
    if features.contains(&"LEAVE") {
        let io = io.clone();
        socket.on("leave", move |payload: Payload| {
            let (Some(ns), Some(room)) = (target_ns(&io, &payload), filter_at(&payload, 1)) else {
                return;
            };
            tracing::debug!(nsp = ns.name(), room, "admin UI: leave");
            match filter_at(&payload, 2) {
                Some(f) => ns.to(f).sockets_leave(&room),
                None => ns.operator().sockets_leave(&room),
            }
        });
    }
    if features.contains(&"DISCONNECT") {
        let io = io.clone();
        socket.on("_disconnect", move |payload: Payload| {
            let Some(ns) = target_ns(&io, &payload) else {
                return;
            };
            let close = payload.args.get(1).and_then(Value::as_bool) == Some(true);
            tracing::debug!(nsp = ns.name(), close, "admin UI: disconnect");
            match filter_at(&payload, 2) {
                Some(f) => ns.to(f).disconnect_sockets(close),
                None => ns.operator().disconnect_sockets(close),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readonly_offers_no_action() {
        let mut c = AdminConfig::new(AdminAuth::None);
        assert_eq!(
            features(&c),
            [
                "EMIT",
                "JOIN",
                "LEAVE",
                "DISCONNECT",
                "MJOIN",
                "MLEAVE",
                "MDISCONNECT",
                "AGGREGATED_EVENTS",
                "ALL_EVENTS"
            ]
        );
        c.readonly = true;
        c.mode = AdminMode::Production;
        assert_eq!(features(&c), ["AGGREGATED_EVENTS"]);
    }

    #[tokio::test]
    async fn a_bad_hash_is_refused() {
        let io = Server::default();
        let e = io
            .instrument(AdminConfig::new(AdminAuth::Basic {
                username: "admin".into(),
                password_hash: "plain text".into(),
            }))
            .unwrap_err();
        assert!(matches!(e, Error::AdminPasswordHash(_)), "{e}");
    }

    #[test]
    fn the_documented_hash_is_of_the_documented_password() {
        let hash = "$2a$04$9y1B7yvs3MLaffC.hCZVxepNug2lDfDsg7ZZlMxDnOlf14So212He";
        assert!(bcrypt::verify("changeit", hash).unwrap());
        assert!(!bcrypt::verify("other", hash).unwrap());
    }

    #[test]
    fn the_debug_form_hides_the_hash() {
        let a = AdminAuth::Basic {
            username: "u".into(),
            password_hash: "$2b$secret".into(),
        };
        assert!(!format!("{a:?}").contains("secret"));
    }
}
