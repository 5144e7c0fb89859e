//! The adapter: everything that differs between one node and a cluster.
//!
//! A namespace keeps its own sockets and rooms (this node's, reached through
//! [`LocalSockets`]) and leaves the rest to its [`Adapter`]: the order of broadcasts and
//! their offsets, where sessions are kept and how they are restored, the hand-over from
//! replay to live delivery, live records, and the cluster-wide side of `fetch_sockets`,
//! `sockets_join`/`leave`, `disconnect_sockets`, broadcasts with acks, server-side emits
//! and `flush`.
//!
//! - [`MemoryAdapter`] (`memory.rs`), the embedded default: one node, offsets and the
//!   packet log in memory ([`MemoryStore`](crate::recovery::MemoryStore)).
//! - [`ClusterAdapter`] (`cluster.rs`): many nodes through a cluster backend; the log, the
//!   offsets and the sessions are the backend's, run by the [`Cluster`] runtime.
//!
//! The server chooses one when it is built ([`AdapterKind`]): `Server::new` in memory,
//! `Server::join_cluster` in a cluster. Nothing outside this folder asks which it is.

mod cluster;
mod memory;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cluster::{Cluster, ServerSideAck};
use crate::recovery::{
    Position, RecoveryConfig, RecoveryFailure, Room, Session, StoredPacket, Target,
};
use crate::{AckResponses, Error, Payload};
pub(crate) use cluster::ClusterAdapter;
pub(crate) use memory::MemoryAdapter;
pub use tether_backend::{SocketInfo, SocketsAction};

type BoxFuture<'a, T> = tether_backend::BoxFuture<'a, T>;

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
    pub(crate) fn to_socket(id: &str) -> Self {
        BroadcastOptions {
            rooms: vec![Room::from(id)],
            ..Default::default()
        }
    }

    pub(crate) fn target(&self) -> Target {
        Target {
            rooms: self.rooms.clone(),
            except: self.except.clone(),
        }
    }

    pub(crate) fn of_target(target: Target) -> Self {
        BroadcastOptions {
            rooms: target.rooms,
            except: target.except,
            ..Default::default()
        }
    }
}

/// This node's sockets of one namespace, as its adapter reaches them. The namespace
/// implements it; adapters never see a `Namespace` or a `Socket`.
pub(crate) trait LocalSockets: Send + Sync + 'static {
    /// Sends a packet to this node's targets of `opts` (dropped where the outbox is full
    /// when `opts.volatile`).
    fn deliver(&self, opts: &BroadcastOptions, packet: &StoredPacket);
    /// The sessions of this node's registered sockets that have a pid.
    fn live_sessions(&self) -> Vec<Session>;
    /// Probes the live socket holding `pid`, if any: `alive` runs if it answers; if not it
    /// is closed as a recoverable disconnect.
    fn probe_live(&self, pid: &str, alive: Box<dyn FnOnce() + Send>);
    /// Applies `socketsJoin`, `socketsLeave` or `disconnectSockets` to this node's targets.
    fn apply_sockets_action(&self, opts: &BroadcastOptions, action: &SocketsAction);
    /// Describes this node's targets for another node.
    fn socket_infos(&self, opts: &BroadcastOptions) -> Vec<SocketInfo>;
    /// Emits with one ack id to this node's targets: their ids and the receivers of their
    /// answers.
    fn emit_with_ack(
        &self,
        opts: &BroadcastOptions,
        event: &str,
        payload: &Payload,
    ) -> Vec<(String, oneshot::Receiver<Payload>)>;
    /// Runs this node's handler of a server-side event.
    fn run_server_side(&self, event: &str, payload: Payload, ack: Option<ServerSideAck>);
}

/// Makes a pending socket live under the adapter's order: the CONNECT reply, `replay`
/// (what it missed), what it emitted while connecting, then registration. Its argument
/// `start` is where the socket's replay starts after if it comes back without an offset.
/// Returns false when the socket went away meanwhile.
pub(crate) type Register<'a> =
    Box<dyn FnOnce(&[StoredPacket], Option<Position>) -> bool + Send + 'a>;

/// What a namespace tells its adapter about a socket that leaves.
pub(crate) struct Retiring<'a> {
    /// Its pid (recovery on).
    pub pid: Option<&'a str>,
    /// Whether it had been connected (registered with the adapter).
    pub was_connected: bool,
    /// The session to keep, when the disconnect is recoverable.
    pub keep: Option<Session>,
}

/// What differs between one node and a cluster (see the [module docs](self)).
pub(crate) trait Adapter: Send + Sync + 'static {
    /// The recovery options, when recovery is on here.
    fn recovery(&self) -> Option<&RecoveryConfig>;

    /// Sessions held and log bytes, when this node holds them (in memory).
    fn usage(&self) -> Option<(usize, usize)>;

    /// Whether this node holds sessions that have not expired (in memory).
    fn holds_sessions(&self) -> bool;

    /// Emits to the targets of `opts`: with recovery on and not volatile, with an offset,
    /// logged, and delivered in the log's order.
    fn broadcast(
        &self,
        local: &dyn LocalSockets,
        opts: &BroadcastOptions,
        event: &str,
        payload: &Payload,
    );

    /// Where a new socket's replay starts when it never got an offset, if known before
    /// registration.
    fn fresh_start(&self) -> Option<Position>;

    /// Takes the session named by `pid` for a recovery attempt; its `start` is where its
    /// replay starts after. One-shot across the cluster.
    fn restore<'a>(
        &'a self,
        pid: &'a str,
        offset: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Session, RecoveryFailure>>;

    /// Puts back a session that was taken but not restored (a middleware refused it).
    fn keep_again(&self, session: Session);

    /// Reads what the socket of `session` missed (after `session.start`) and calls
    /// `register` with it, so that no broadcast falls between replay and live delivery.
    /// `Ok(Some(n))`: live, `n` packets replayed; `Ok(None)`: the socket went away (a
    /// restored session is kept again); `Err`: its replay cannot be read.
    fn replay_and_register<'a>(
        &'a self,
        session: Session,
        recovered: bool,
        register: Register<'a>,
    ) -> BoxFuture<'a, Result<Option<usize>, RecoveryFailure>>;

    /// Takes a socket out: `unregister` runs under the adapter's order, then its session
    /// is kept or retired.
    fn retire(&self, socket: Retiring<'_>, unregister: &mut dyn FnMut());

    /// A registered socket's rooms or data changed (`session` describes it now).
    fn socket_changed(&self, session: &mut dyn FnMut() -> Session);

    /// The other nodes' part of a sockets action (this node's is the namespace's).
    fn sockets_action(&self, opts: &BroadcastOptions, action: &SocketsAction);

    /// The other nodes' targets of `opts`.
    fn fetch_remote<'a>(
        &'a self,
        opts: &'a BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<SocketInfo>, Error>>;

    /// Emits with an ack to the other nodes' targets and collects their answers until
    /// `deadline`; `None` when there are no other nodes to ask.
    fn broadcast_with_ack_remote<'a>(
        &'a self,
        opts: &'a BroadcastOptions,
        event: &'a str,
        payload: &'a Payload,
        timeout: Duration,
        deadline: Instant,
    ) -> BoxFuture<'a, Option<AckResponses>>;

    /// Sends an event to the other nodes' server-side handlers.
    fn server_side_emit<'a>(
        &'a self,
        event: &'a str,
        payload: Payload,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Like `server_side_emit`, collecting one answer per other node.
    fn server_side_emit_with_ack<'a>(
        &'a self,
        event: &'a str,
        payload: Payload,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Payload>, Error>>;

    /// Waits until every broadcast and session change made here is stored and delivered.
    fn flush(&self) -> BoxFuture<'_, ()>;
}

/// Which adapter a server's namespaces get, chosen when the server is built.
#[derive(Clone, Debug)]
pub(crate) enum AdapterKind {
    /// One node.
    Memory,
    /// A node of a cluster.
    Cluster(Arc<Cluster>),
}

impl AdapterKind {
    /// This node's id in its cluster, if it is one.
    pub(crate) fn node(&self) -> Option<&str> {
        match self {
            AdapterKind::Memory => None,
            AdapterKind::Cluster(c) => Some(c.uid()),
        }
    }

    /// The adapter of the namespace `nsp`, whose sockets `local` reaches.
    pub(crate) fn build(
        &self,
        nsp: &str,
        local: Weak<dyn LocalSockets>,
        recovery: Option<RecoveryConfig>,
    ) -> Arc<dyn Adapter> {
        match self {
            AdapterKind::Memory => Arc::new(MemoryAdapter::new(nsp, recovery)),
            AdapterKind::Cluster(c) => ClusterAdapter::start(c.clone(), nsp, local, recovery),
        }
    }
}
