//! Several servers as one, through a shared engine (Redis Streams, PostgreSQL, NATS).
//!
//! Every broadcast is appended to one ordered log in the engine; every node reads the
//! log and delivers each entry to its own sockets, in log order, including the entries
//! it appended itself. So all nodes agree on the order, and the entry id is the offset
//! that every recipient gets and every node accepts for recovery.
//!
//! Sessions live in the engine too: a *live record* for every connected socket (rooms and
//! data, updated on change) and a *kept session* after a recoverable disconnect. A node
//! that crashes (SIGKILL) leaves live records behind; once its heartbeat lapses, any node
//! may restore them. Restoring is one-shot across the cluster: the backend takes a
//! session atomically.
//!
//! [`ClusterBackend`] is what an engine implements (see the `tether-redis` crate);
//! [`Cluster`] is the engine-independent runtime: the publish queue, the reader, the
//! session writer, heartbeats, and the restore protocol.

/// The conformance suite that every [`ClusterBackend`] must pass.
pub mod conformance;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::namespace::Namespace;
use crate::recovery::{RecoveryFailure, Room, Target};
use crate::server::ServerInner;

pub(crate) mod requests;
pub use requests::ServerSideAck;

/// A boxed future, as the backend trait returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The id of an entry in the cluster log; its text form `"<ms>-<seq>"` is the offset that
/// clients see.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// Parses `"<ms>-<seq>"`.
    ///
    /// ```
    /// use tether::cluster::EntryId;
    /// assert_eq!(EntryId::parse("17-3"), Some(EntryId { ms: 17, seq: 3 }));
    /// assert_eq!(EntryId::parse("17"), None);
    /// assert_eq!(EntryId::parse("a-b"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A broadcast as it travels between nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The namespace.
    pub nsp: String,
    /// `[event, ...args]`; binary arguments are placeholders for `attachments`.
    pub data: Vec<Value>,
    /// Binary attachments.
    pub attachments: Vec<Bytes>,
    /// Target rooms (empty: the whole namespace).
    pub rooms: Vec<Room>,
    /// Rooms left out.
    pub except: Vec<Room>,
    /// Volatile: never replayed and gets no offset.
    pub volatile: bool,
}

/// A message in the cluster log.
#[derive(Debug, Clone, PartialEq)]
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
        rooms: Vec<Room>,
        /// Rooms left out.
        except: Vec<Room>,
        /// What to do.
        action: SocketsAction,
    },
    /// Anything else (another implementation's heartbeats, for example).
    Other,
}

/// What [`ClusterMessage::Sockets`] does to its targets.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    /// The sending node.
    pub uid: String,
    /// The namespace.
    pub nsp: String,
    /// What it says.
    pub body: EphemeralBody,
}

/// The requests and answers of [`Ephemeral`] messages.
#[derive(Debug, Clone, PartialEq)]
pub enum EphemeralBody {
    /// Emit to the matching sockets with an ack: answer [`EphemeralBody::ClientCount`]
    /// at once, then one [`EphemeralBody::BroadcastAck`] per answer.
    BroadcastWithAck {
        /// The request's id.
        request_id: String,
        /// What to emit, and to whom (`volatile` is ignored).
        broadcast: Broadcast,
        /// How long the requester waits.
        timeout: Option<Duration>,
    },
    /// Describe the matching sockets: answer [`EphemeralBody::Sockets`].
    FetchSockets {
        /// The request's id.
        request_id: String,
        /// Target rooms (empty: the whole namespace).
        rooms: Vec<Room>,
        /// Rooms left out.
        except: Vec<Room>,
    },
    /// An event for the server-side handlers of the other nodes; with a request id,
    /// each answers once with [`EphemeralBody::ServerSideAck`].
    ServerSideEmit {
        /// Present when an answer is expected.
        request_id: Option<String>,
        /// `[event, ...args]`; binary arguments are placeholders for `attachments`.
        data: Vec<Value>,
        /// Binary attachments.
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
        sid: Option<String>,
        /// Its answer.
        args: Vec<Value>,
        /// Binary attachments of the answer.
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
#[derive(Debug, Clone, PartialEq)]
pub struct SocketInfo {
    /// The socket id.
    pub id: String,
    /// Its rooms, without its own id.
    pub rooms: Vec<Room>,
    /// `socket.data`.
    pub data: Value,
    /// The handshake, in the shape of the Node.js server's `socket.handshake`
    /// (`headers`, `url`, `query`, `auth`, `address`, ...).
    pub handshake: Value,
}

/// Where a backend hands the ephemeral messages it receives.
pub type EphemeralSink = tokio::sync::mpsc::Sender<Ephemeral>;

/// One entry read from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its id.
    pub id: EntryId,
    /// The node that appended it.
    pub uid: String,
    /// The appending node's sequence number, to drop an entry appended twice by a retry.
    pub seq: Option<u64>,
    /// The message.
    pub message: ClusterMessage,
}

/// A socket's session as the cluster stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSession {
    /// The socket id.
    pub sid: String,
    /// The private session id.
    pub pid: String,
    /// Rooms, without the socket's own id.
    pub rooms: Vec<Room>,
    /// `socket.data`.
    pub data: Value,
    /// The log position when the socket connected, to replay everything to a client
    /// that has no offset yet.
    pub start: Option<EntryId>,
}

/// A change to the sessions in the engine, applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOp {
    /// Writes the live record of a connected socket.
    PutLive {
        /// The namespace.
        nsp: String,
        /// The session.
        session: ClusterSession,
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
        keep: Option<(ClusterSession, Duration)>,
    },
    /// The periodic refresh of this node's live records in `nsp`: extends the life of
    /// each record this node owns, and writes the ones that are missing (an engine
    /// restarted without its data lost them). A record that another node owns is left
    /// alone.
    RefreshLive {
        /// The namespace.
        nsp: String,
        /// The sessions of the node's connected sockets, as of the refresh.
        sessions: Vec<ClusterSession>,
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
    Taken(ClusterSession),
    /// No session under this pid.
    NotFound,
    /// The session belongs to another namespace (left in place).
    WrongNamespace,
    /// The offset is not in the log (the session is left in place).
    UnknownOffset,
    /// The pid's socket is live on a node whose heartbeat is current.
    HolderAlive(String),
}

/// An engine error: unreachable, timed out, or an unexpected answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster engine: {0}")]
pub struct BackendError(pub String);

/// What an engine provides to make several nodes one.
pub trait ClusterBackend: Send + Sync + 'static {
    /// Appends messages in order, returning their ids.
    fn append<'a>(
        &'a self,
        uid: &'a str,
        batch: &'a [(u64, ClusterMessage)],
    ) -> BoxFuture<'a, Result<Vec<EntryId>, BackendError>>;
    /// Waits up to `block` for entries after `after`.
    fn read_after(
        &self,
        after: EntryId,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>>;
    /// Entries in `(after, upto]`, at most `count`.
    fn range(
        &self,
        after: EntryId,
        upto: EntryId,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>>;
    /// The newest entries up to `upto` (inclusive), at most `count`, newest first.
    fn recent(
        &self,
        upto: EntryId,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>>;
    /// The id of the newest entry (zero when the log is empty).
    fn last_id(&self) -> BoxFuture<'_, Result<EntryId, BackendError>>;
    /// Applies session changes, in order.
    fn apply<'a>(
        &'a self,
        uid: &'a str,
        ops: &'a [SessionOp],
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Tells the cluster that this node is alive for `ttl`.
    fn heartbeat<'a>(
        &'a self,
        uid: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Atomically takes the session `pid` of namespace `nsp`, if `offset` (when given) is
    /// in the log. A live record whose node's heartbeat lapsed counts as a kept session.
    fn take_session<'a>(
        &'a self,
        nsp: &'a str,
        pid: &'a str,
        offset: Option<EntryId>,
    ) -> BoxFuture<'a, Result<TakeOutcome, BackendError>>;
    /// Whether the holder of `pid` marked it alive (see [`SessionOp::MarkAlive`]).
    fn is_marked_alive<'a>(&'a self, pid: &'a str) -> BoxFuture<'a, Result<bool, BackendError>>;

    /// Sends an ephemeral message to every node listening to its namespace (`to` is
    /// `None`, the sender included) or to the node `to`. Nothing is kept: a node that is
    /// not listening misses it.
    fn send_ephemeral<'a>(
        &'a self,
        to: Option<&'a str>,
        message: &'a Ephemeral,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = (to, message);
        Box::pin(async { Err(BackendError("ephemeral messages are not supported".into())) })
    }

    /// How many nodes listen to the ephemeral messages of `nsp`, this one included.
    fn listeners<'a>(&'a self, nsp: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
        let _ = nsp;
        Box::pin(async { Err(BackendError("ephemeral messages are not supported".into())) })
    }

    /// Starts handing to `sink` the ephemeral messages of `nsp` sent to every node or to
    /// `uid`, for as long as the backend lives (through reconnections).
    fn listen<'a>(
        &'a self,
        uid: &'a str,
        nsp: &'a str,
        sink: EphemeralSink,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = (uid, nsp, sink);
        Box::pin(async { Err(BackendError("ephemeral messages are not supported".into())) })
    }
}

/// Cluster runtime options.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often this node renews its heartbeat (1 s).
    pub heartbeat_interval: Duration,
    /// How long the heartbeat lasts: after a crash, its sockets become restorable this
    /// long after the last renewal (7 s: longer than a short engine outage, so that live
    /// sockets are not taken for dead, and short enough to restore within 10 s).
    pub heartbeat_ttl: Duration,
    /// Most broadcasts, and most session changes, waiting while the engine is unreachable
    /// (100 000 each); beyond it new ones are dropped (and logged), so an outage never
    /// grows memory without bound.
    pub max_queue: usize,
    /// How long [`Namespace::flush`](crate::Namespace::flush) waits at most (30 s).
    pub flush_timeout: Duration,
    /// How long a recovery attempt may wait to learn whether the pid's holder is dead
    /// (10 s).
    pub takeover_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(7),
            max_queue: 100_000,
            flush_timeout: Duration::from_secs(30),
            takeover_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every publish with a sequence number up to this one is appended.
    appended_seq: u64,
    /// The newest id appended by this node.
    last_appended: EntryId,
    /// The newest id this node's reader delivered.
    position: EntryId,
    /// Every session op up to this one is applied.
    applied_op: u64,
}

#[derive(Default)]
struct Queues {
    publish: VecDeque<(u64, ClusterMessage)>,
    next_publish: u64,
    ops: VecDeque<(u64, SessionOp)>,
    next_op: u64,
}

/// The cluster runtime of one node.
pub struct Cluster {
    uid: String,
    backend: Arc<dyn ClusterBackend>,
    server: Weak<ServerInner>,
    config: ClusterConfig,
    queues: Mutex<Queues>,
    publish_notify: Notify,
    op_notify: Notify,
    progress: watch::Sender<Progress>,
    dedup: Mutex<HashMap<String, u64>>,
    dropped: AtomicU64,
    pending: requests::Pending,
    ephemeral_tx: EphemeralSink,
    /// The last session change of the last refresh of live records.
    refresh_op: AtomicU64,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("uid", &self.uid).finish()
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(5)).min(2_000))
}

impl Cluster {
    /// Starts the runtime: reads the log's end, then starts the reader, the publisher,
    /// the session writer and the heartbeat. Nodes call this before they listen, so they
    /// receive every entry appended after it returns.
    pub(crate) async fn start(
        uid: String,
        backend: Arc<dyn ClusterBackend>,
        server: Weak<ServerInner>,
        config: ClusterConfig,
    ) -> Result<Arc<Self>, BackendError> {
        let start = backend.last_id().await?;
        backend.heartbeat(&uid, config.heartbeat_ttl).await?;
        let (progress, _) = watch::channel(Progress {
            position: start,
            ..Progress::default()
        });
        let (ephemeral_tx, ephemeral_rx) = tokio::sync::mpsc::channel(10_000);
        let cluster = Arc::new(Cluster {
            uid,
            backend,
            server,
            config,
            queues: Mutex::new(Queues {
                next_publish: 1,
                next_op: 1,
                ..Queues::default()
            }),
            publish_notify: Notify::new(),
            op_notify: Notify::new(),
            progress,
            dedup: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            pending: requests::Pending::default(),
            ephemeral_tx,
            refresh_op: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&cluster);
        tokio::spawn(ephemeral_listener(weak.clone(), ephemeral_rx));
        tokio::spawn(reader(weak.clone(), start));
        tokio::spawn(publisher(weak.clone()));
        tokio::spawn(session_writer(weak.clone()));
        tokio::spawn(heartbeat(weak));
        Ok(cluster)
    }

    /// This node's id in the cluster.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The newest entry this node has delivered.
    pub(crate) fn position(&self) -> EntryId {
        self.progress.borrow().position
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message for the log.
    pub(crate) fn publish(&self, message: ClusterMessage) {
        {
            let mut q = self.queues();
            if q.publish.len() >= self.config.max_queue {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(
                        "cluster publish queue full: broadcast dropped ({} so far)",
                        n + 1
                    );
                }
                return;
            }
            let seq = q.next_publish;
            q.next_publish += 1;
            q.publish.push_back((seq, message));
        }
        self.publish_notify.notify_one();
    }

    /// Queues a session change.
    pub(crate) fn session_op(&self, op: SessionOp) {
        {
            let mut q = self.queues();
            if q.ops.len() >= self.config.max_queue {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(
                        "cluster session queue full: change dropped ({} so far)",
                        n + 1
                    );
                }
                return;
            }
            let seq = q.next_op;
            q.next_op += 1;
            q.ops.push_back((seq, op));
        }
        self.op_notify.notify_one();
    }

    /// Whether the last refresh of live records still waits for the engine. The next one
    /// is skipped then: an outage queues at most one refresh, not one every 10 s.
    pub(crate) fn refresh_pending(&self) -> bool {
        self.progress.borrow().applied_op < self.refresh_op.load(Ordering::Acquire)
    }

    /// Marks the session changes queued so far as the last refresh of live records.
    pub(crate) fn refresh_queued(&self) {
        let last = self.queues().next_op - 1;
        self.refresh_op.store(last, Ordering::Release);
    }

    /// Waits until every broadcast and session change queued so far is in the engine and
    /// every broadcast is delivered to this node's sockets (bounded by the flush timeout).
    pub async fn flush(&self) {
        let (publish, op) = {
            let q = self.queues();
            (q.next_publish - 1, q.next_op - 1)
        };
        let mut rx = self.progress.subscribe();
        let wait = async {
            let appended = match rx
                .wait_for(|p| p.appended_seq >= publish && p.applied_op >= op)
                .await
            {
                Ok(p) => p.last_appended,
                Err(_) => return,
            };
            let _ = rx.wait_for(|p| p.position >= appended).await;
        };
        if tokio::time::timeout(self.config.flush_timeout, wait)
            .await
            .is_err()
        {
            tracing::warn!("cluster flush timed out");
        }
    }

    /// Waits (up to 5 s) until this node has delivered the entry `id`: a client may
    /// present an offset that another node delivered before this node read it.
    pub(crate) async fn wait_delivered(&self, id: EntryId) {
        let mut rx = self.progress.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| p.position >= id)).await;
    }

    /// Whether the record is new (not a retry's duplicate of an entry already seen).
    fn first_sighting(&self, record: &Record) -> bool {
        let Some(seq) = record.seq else { return true };
        let mut d = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        let last = d.entry(record.uid.clone()).or_insert(0);
        if seq <= *last {
            return false;
        }
        *last = seq;
        true
    }

    /// Takes a session for a recovery attempt, waiting (bounded) to learn whether a
    /// holder that still has a heartbeat is really alive.
    pub(crate) async fn take(
        &self,
        nsp: &str,
        pid: &str,
        offset: Option<EntryId>,
    ) -> Result<ClusterSession, RecoveryFailure> {
        let deadline = tokio::time::Instant::now() + self.config.takeover_timeout;
        let mut probed = false;
        loop {
            match self.backend.take_session(nsp, pid, offset).await {
                Ok(TakeOutcome::Taken(s)) => {
                    // A node taken for dead may still hold a socket with this pid (it was
                    // cut off from the engine, not dead): when it reads this, it probes
                    // the socket and lets it go unless it answers.
                    self.publish(ClusterMessage::Probe {
                        nsp: nsp.to_owned(),
                        pid: pid.to_owned(),
                    });
                    return Ok(s);
                }
                Ok(TakeOutcome::NotFound | TakeOutcome::WrongNamespace) => {
                    return Err(RecoveryFailure::UnknownSession)
                }
                Ok(TakeOutcome::UnknownOffset) => return Err(RecoveryFailure::UnknownOffset),
                Ok(TakeOutcome::HolderAlive(holder)) => {
                    if holder != self.uid {
                        if !probed {
                            // Only an answer to this probe counts: an old mark may be
                            // from before the holder died.
                            let clear = [SessionOp::ClearAlive {
                                pid: pid.to_owned(),
                            }];
                            let _ = self.backend.apply(&self.uid, &clear).await;
                            self.publish(ClusterMessage::Probe {
                                nsp: nsp.to_owned(),
                                pid: pid.to_owned(),
                            });
                            probed = true;
                        } else if self.backend.is_marked_alive(pid).await.unwrap_or(false) {
                            return Err(RecoveryFailure::StillConnected);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("recovery attempt: {e}");
                    return Err(RecoveryFailure::UnknownSession);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RecoveryFailure::StillConnected);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The entries of `(after, upto]` that a socket of `nsp` with this id and these rooms
    /// missed, oldest first, each once.
    /// `seen` carries the appenders' sequence numbers across calls, so that an entry
    /// appended twice by a retry is replayed once; [`Cluster::seed_seen`] fills it with the
    /// entries just before the offset, whose retried copies may follow it.
    pub(crate) async fn missed(
        &self,
        nsp: &str,
        after: EntryId,
        upto: EntryId,
        sid: &str,
        rooms: &[Room],
        seen: &mut HashMap<String, u64>,
    ) -> Result<Vec<(EntryId, Broadcast)>, BackendError> {
        let mut out = Vec::new();
        let mut from = after;
        while from < upto {
            let page = self.backend.range(from, upto, 1000).await?;
            let Some(last) = page.last() else { break };
            from = last.id;
            for r in page {
                if let Some(seq) = r.seq {
                    let s = seen.entry(r.uid.clone()).or_insert(0);
                    if seq <= *s {
                        continue;
                    }
                    *s = seq;
                }
                if let ClusterMessage::Broadcast(b) = r.message {
                    let target = Target {
                        rooms: b.rooms.clone(),
                        except: b.except.clone(),
                    };
                    if b.nsp == nsp && !b.volatile && target.matches(sid, rooms) {
                        out.push((r.id, b));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records the appenders' sequence numbers of the entries up to `at` (the newest
    /// 1000), so that a copy of one of them appended again by a retry is not replayed.
    pub(crate) async fn seed_seen(&self, at: EntryId, seen: &mut HashMap<String, u64>) {
        if let Ok(recent) = self.backend.recent(at, 1000).await {
            for r in recent {
                if let Some(seq) = r.seq {
                    let s = seen.entry(r.uid).or_insert(0);
                    *s = (*s).max(seq);
                }
            }
        }
    }

    fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.server.upgrade()?.existing_namespace(name)
    }

    async fn handle(&self, record: Record) {
        if !self.first_sighting(&record) {
            return;
        }
        match record.message {
            ClusterMessage::Broadcast(b) => {
                if let Some(ns) = self.namespace(&b.nsp) {
                    ns.deliver_cluster(record.id, &b).await;
                }
            }
            ClusterMessage::Probe { nsp, pid } => {
                if record.uid == self.uid {
                    return; // a node never probes for itself
                }
                if let Some(ns) = self.namespace(&nsp) {
                    ns.answer_probe(pid);
                }
            }
            ClusterMessage::Sockets {
                nsp,
                rooms,
                except,
                action,
            } => {
                // This node applied its own at once.
                if record.uid != self.uid {
                    if let Some(ns) = self.namespace(&nsp) {
                        let opts = crate::BroadcastOptions {
                            rooms,
                            except,
                            ..Default::default()
                        };
                        ns.apply_sockets_action(&opts, &action);
                    }
                }
            }
            ClusterMessage::Other => {}
        }
    }

    fn publish_batch(&self) -> Vec<(u64, ClusterMessage)> {
        self.queues().publish.iter().take(256).cloned().collect()
    }

    fn op_batch(&self) -> Vec<(u64, SessionOp)> {
        self.queues().ops.iter().take(256).cloned().collect()
    }
}

async fn reader(cluster: Weak<Cluster>, start: EntryId) {
    let mut pos = start;
    let mut failures = 0;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        match c.backend.read_after(pos, Duration::from_millis(1000)).await {
            Ok(records) => {
                failures = 0;
                for r in records {
                    let id = r.id;
                    c.handle(r).await;
                    pos = id;
                    c.progress.send_modify(|p| p.position = id);
                }
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!("cluster reader: {e}; retrying");
                }
                failures += 1;
                drop(c);
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

async fn ephemeral_listener(
    cluster: Weak<Cluster>,
    mut rx: tokio::sync::mpsc::Receiver<Ephemeral>,
) {
    while let Some(m) = rx.recv().await {
        let Some(c) = cluster.upgrade() else { return };
        c.handle_ephemeral(m);
    }
}

async fn publisher(cluster: Weak<Cluster>) {
    let mut failures = 0;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let batch = c.publish_batch();
        if batch.is_empty() {
            // A push stores a permit, so none is missed; the timeout lets the task end
            // when the cluster is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(1), c.publish_notify.notified()).await;
            continue;
        }
        match c.backend.append(&c.uid, &batch).await {
            Ok(ids) => {
                failures = 0;
                let last_seq = batch.last().map_or(0, |b| b.0);
                let newest = ids.iter().copied().max().unwrap_or_default();
                {
                    let mut q = c.queues();
                    while q.publish.front().is_some_and(|(s, _)| *s <= last_seq) {
                        q.publish.pop_front();
                    }
                }
                c.progress.send_modify(|p| {
                    p.appended_seq = last_seq;
                    p.last_appended = p.last_appended.max(newest);
                });
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!("cluster publish: {e}; retrying");
                }
                failures += 1;
                drop(c);
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

async fn session_writer(cluster: Weak<Cluster>) {
    let mut failures = 0;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let batch = c.op_batch();
        if batch.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.op_notify.notified()).await;
            continue;
        }
        let ops: Vec<SessionOp> = batch.iter().map(|(_, op)| op.clone()).collect();
        match c.backend.apply(&c.uid, &ops).await {
            Ok(()) => {
                failures = 0;
                let last = batch.last().map_or(0, |b| b.0);
                {
                    let mut q = c.queues();
                    while q.ops.front().is_some_and(|(s, _)| *s <= last) {
                        q.ops.pop_front();
                    }
                }
                c.progress.send_modify(|p| p.applied_op = last);
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!("cluster session writer: {e}; retrying");
                }
                failures += 1;
                drop(c);
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }
}

async fn heartbeat(cluster: Weak<Cluster>) {
    let mut since_refresh = Duration::ZERO;
    let mut was_down = false;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let interval = c.config.heartbeat_interval;
        let up = match c.backend.heartbeat(&c.uid, c.config.heartbeat_ttl).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("cluster heartbeat: {e}");
                false
            }
        };
        since_refresh += interval;
        // Also as soon as the engine is back: if it restarted without its data, the live
        // records are gone, and the refresh writes them again.
        let back = up && was_down;
        was_down = !up;
        if since_refresh >= Duration::from_secs(10) || back {
            since_refresh = Duration::ZERO;
            if let Some(server) = c.server.upgrade() {
                server.refresh_live_records(&c);
            }
        }
        drop(c);
        tokio::time::sleep(interval).await;
    }
}
