//! What travels between nodes: log messages, sessions, ephemeral requests and answers.
//!
//! Every type has one serde form (see [`crate::wire`]): binary attachments are base64
//! strings, rooms plain strings, durations whole milliseconds, positions
//! `{"epoch","seq"}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Position;

/// A room name.
pub type Room = Arc<str>;

/// A broadcast as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    /// The namespace.
    pub nsp: String,
    /// `[event, ...args]`; binary arguments are placeholders for `attachments`.
    pub data: Vec<Value>,
    /// Binary attachments.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::wire::base64"
    )]
    pub attachments: Vec<Bytes>,
    /// Target rooms (empty: the whole namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<Room>,
    /// Rooms left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Room>,
    /// Volatile: never replayed and gets no offset.
    #[serde(default)]
    pub volatile: bool,
}

/// A message in the cluster log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterMessage {
    /// A broadcast to deliver.
    Broadcast(Broadcast),
    /// Asks the node that holds `pid` whether that socket still answers.
    Probe {
        /// The namespace.
        nsp: String,
        /// The private session id.
        pid: String,
    },
    /// Makes the matching sockets join or leave rooms, or disconnects them
    /// (`socketsJoin`, `socketsLeave`, `disconnectSockets`).
    Sockets {
        /// The namespace.
        nsp: String,
        /// Target rooms (empty: the whole namespace).
        #[serde(default)]
        rooms: Vec<Room>,
        /// Rooms left out.
        #[serde(default)]
        except: Vec<Room>,
        /// What to do.
        action: SocketsAction,
    },
    /// Anything else (another implementation's heartbeats, for example).
    #[serde(other)]
    Other,
}

impl ClusterMessage {
    /// The namespace the message belongs to (`/` for [`ClusterMessage::Other`]).
    pub fn nsp(&self) -> &str {
        match self {
            ClusterMessage::Broadcast(b) => &b.nsp,
            ClusterMessage::Probe { nsp, .. } | ClusterMessage::Sockets { nsp, .. } => nsp,
            ClusterMessage::Other => "/",
        }
    }

    /// The kind of the message, as its wire form tags it.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterMessage::Broadcast(_) => "broadcast",
            ClusterMessage::Probe { .. } => "probe",
            ClusterMessage::Sockets { .. } => "sockets",
            ClusterMessage::Other => "other",
        }
    }
}

/// What [`ClusterMessage::Sockets`] does to its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketsAction {
    /// Join these rooms.
    Join(Vec<Room>),
    /// Leave these rooms.
    Leave(Vec<Room>),
    /// Disconnect: with `close`, by closing the connection (recoverable); otherwise with a
    /// DISCONNECT packet.
    Disconnect {
        /// Close the underlying connection.
        close: bool,
    },
}

/// A message between nodes that is not kept (Redis: pub/sub): a request that needs
/// answers, or an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ephemeral {
    /// The sending node.
    pub uid: String,
    /// The namespace.
    pub nsp: String,
    /// What it says.
    pub body: EphemeralBody,
}

/// The requests and answers of [`Ephemeral`] messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EphemeralBody {
    /// Emit to the matching sockets with an ack: answer [`EphemeralBody::ClientCount`]
    /// at once, then one [`EphemeralBody::BroadcastAck`] per answer.
    BroadcastWithAck {
        /// The request's id.
        request_id: String,
        /// What to emit, and to whom (`volatile` is ignored).
        broadcast: Broadcast,
        /// How long the requester waits.
        #[serde(default, rename = "timeout_ms", with = "crate::wire::millis")]
        timeout: Option<Duration>,
    },
    /// Describe the matching sockets: answer [`EphemeralBody::Sockets`].
    FetchSockets {
        /// The request's id.
        request_id: String,
        /// Target rooms (empty: the whole namespace).
        #[serde(default)]
        rooms: Vec<Room>,
        /// Rooms left out.
        #[serde(default)]
        except: Vec<Room>,
    },
    /// An event for the server-side handlers of the other nodes; with a request id,
    /// each answers once with [`EphemeralBody::ServerSideAck`].
    ServerSideEmit {
        /// Present when an answer is expected.
        #[serde(default)]
        request_id: Option<String>,
        /// `[event, ...args]`; binary arguments are placeholders for `attachments`.
        data: Vec<Value>,
        /// Binary attachments.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            with = "crate::wire::base64"
        )]
        attachments: Vec<Bytes>,
    },
    /// How many sockets a node reached with a broadcast with an ack.
    ClientCount {
        /// The request's id.
        request_id: String,
        /// The number of sockets.
        count: u64,
    },
    /// One socket's answer to a broadcast with an ack.
    BroadcastAck {
        /// The request's id.
        request_id: String,
        /// The socket that answered (Tether nodes say; Node.js nodes do not).
        #[serde(default)]
        sid: Option<String>,
        /// Its answer.
        args: Vec<Value>,
        /// Binary attachments of the answer.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            with = "crate::wire::base64"
        )]
        attachments: Vec<Bytes>,
    },
    /// A node's matching sockets.
    Sockets {
        /// The request's id.
        request_id: String,
        /// The sockets.
        sockets: Vec<SocketInfo>,
    },
    /// A node's answer to a server-side emit.
    ServerSideAck {
        /// The request's id.
        request_id: String,
        /// The answer.
        args: Vec<Value>,
        /// Binary attachments of the answer.
        #[serde(
            default,
            skip_serializing_if = "Vec::is_empty",
            with = "crate::wire::base64"
        )]
        attachments: Vec<Bytes>,
    },
}

impl EphemeralBody {
    /// The id of the request this message is or answers.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            EphemeralBody::ServerSideEmit { request_id, .. } => request_id.as_deref(),
            EphemeralBody::BroadcastWithAck { request_id, .. }
            | EphemeralBody::FetchSockets { request_id, .. }
            | EphemeralBody::ClientCount { request_id, .. }
            | EphemeralBody::BroadcastAck { request_id, .. }
            | EphemeralBody::Sockets { request_id, .. }
            | EphemeralBody::ServerSideAck { request_id, .. } => Some(request_id),
        }
    }
}

/// A socket as a node describes it to another (`fetchSockets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// The socket id.
    pub id: String,
    /// Its rooms, without its own id.
    #[serde(default)]
    pub rooms: Vec<Room>,
    /// `socket.data`.
    #[serde(default)]
    pub data: Value,
    /// The handshake, in the shape of the Node.js server's `socket.handshake`
    /// (`headers`, `url`, `query`, `auth`, `address`, ...).
    #[serde(default)]
    pub handshake: Value,
}

/// Where a backend hands the ephemeral messages it receives.
pub type EphemeralSink = tokio::sync::mpsc::Sender<Ephemeral>;

/// One entry read from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its position.
    pub id: Position,
    /// The node that appended it.
    pub uid: String,
    /// The appending node's sequence number, to drop an entry appended twice by a retry.
    pub seq: Option<u64>,
    /// The message.
    pub message: ClusterMessage,
}

/// A socket's session as the cluster stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The socket id.
    pub sid: String,
    /// The private session id.
    pub pid: String,
    /// Rooms, without the socket's own id.
    #[serde(default)]
    pub rooms: Vec<Room>,
    /// `socket.data`.
    #[serde(default)]
    pub data: Value,
    /// The log position when the socket connected, to replay everything to a client
    /// that has no offset yet.
    #[serde(default)]
    pub start: Option<Position>,
}

/// A change to the sessions in the backend, applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOp {
    /// Writes the live record of a connected socket.
    PutLive {
        /// The namespace.
        nsp: String,
        /// The session.
        session: Session,
        /// How long the record lives without a refresh.
        ttl: Duration,
        /// The namespace's recovery window: after a crash, the record is restorable for
        /// this long after the node's last heartbeat (plus the heartbeat's life).
        window: Duration,
    },
    /// Atomically deletes a live record and, for a recoverable disconnect, keeps the
    /// session for `ttl`.
    Retire {
        /// The namespace.
        nsp: String,
        /// The private session id.
        pid: String,
        /// The session to keep, and for how long.
        keep: Option<(Session, Duration)>,
    },
    /// The periodic refresh of this node's live records in `nsp`: extends the life of
    /// each record this node owns, and writes the ones that are missing (a backend
    /// restarted without its data lost them). A record that another node owns is left
    /// alone.
    RefreshLive {
        /// The namespace.
        nsp: String,
        /// The sessions of the node's connected sockets, as of the refresh.
        sessions: Vec<Session>,
        /// The new time to live.
        ttl: Duration,
        /// The namespace's recovery window (see [`SessionOp::PutLive`]).
        window: Duration,
    },
    /// Clears an earlier answer to a probe of `pid`, before probing again.
    ClearAlive {
        /// The private session id.
        pid: String,
    },
    /// Tells a node probing `pid` that its socket is alive.
    MarkAlive {
        /// The private session id.
        pid: String,
        /// How long the mark stays.
        ttl: Duration,
    },
}

/// What taking a session found.
#[derive(Debug, Clone, PartialEq)]
pub enum TakeOutcome {
    /// The session, now consumed.
    Taken(Session),
    /// No session under this pid.
    NotFound,
    /// The session belongs to another namespace (left in place).
    WrongNamespace,
    /// The offset is not in the log (the session is left in place).
    UnknownOffset,
    /// The pid's socket is live on a node whose heartbeat is current.
    HolderAlive(String),
}
