//! Several servers as one, through a shared backend (Redis Streams, PostgreSQL, NATS).
//!
//! Every broadcast is appended to one ordered log in the backend; every node reads the
//! log and delivers each entry to its own sockets, in log order, including the entries
//! it appended itself. So all nodes agree on the order, and the entry's [`Position`],
//! written in the backend's [`OffsetForm`], is the offset that every recipient gets and
//! every node accepts for recovery.
//!
//! Sessions live in the backend too: a *live record* for every connected socket (rooms and
//! data, updated on change) and a *kept session* after a recoverable disconnect. A node
//! that crashes (SIGKILL) leaves live records behind; once its heartbeat lapses, any node
//! may restore them. Restoring is one-shot across the cluster: the backend takes a
//! session atomically.
//!
//! [`ClusterBackend`] is what a backend implements; it and the types it speaks live in
//! the `tether-backend` crate (re-exported here), which backend crates (`tether-redis`,
//! `tether-postgres`, `tether-nats`) depend on instead of this one.
//! [`Cluster`] is the backend-independent runtime: the publish queue, the reader, the
//! session writer, heartbeats, and the restore protocol. It reaches this node's
//! namespaces through `Member` (crate-private), which their cluster adapter implements
//! (`adapter/cluster.rs`); it never sees a namespace or the server.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};

use crate::recovery::{RecoveryFailure, Room, Target};
use crate::sync::{MutexExt as _, RwLockExt as _};
use crate::Payload;

pub(crate) mod cache;
pub(crate) mod requests;
pub(crate) mod stats;
use cache::{Entry, LogCache};
pub use requests::ServerSideAck;
use stats::BackendOp;
pub use tether_backend::{
    wire, BackendError, BoxFuture, Broadcast, BusBackend, ClusterBackend, ClusterMessage,
    Ephemeral, EphemeralBody, EphemeralSink, LogBackend, OffsetForm, Position, Record, Session,
    SessionBackend, SessionOp, SocketInfo, SocketsAction, TakeOutcome,
};

/// Cluster runtime options.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How often this node renews its heartbeat (1 s).
    pub heartbeat_interval: Duration,
    /// How long the heartbeat lasts: after a crash, its sockets become restorable this
    /// long after the last renewal (7 s: longer than a short backend outage, so that live
    /// sockets are not taken for dead, and short enough to restore within 10 s).
    pub heartbeat_ttl: Duration,
    /// Most broadcasts, and most session changes, waiting while the backend is unreachable
    /// (100 000 each); beyond it new ones are dropped (and logged), so an outage never
    /// grows memory without bound.
    pub max_queue: usize,
    /// How long [`Namespace::flush`](crate::Namespace::flush) waits at most (30 s).
    pub flush_timeout: Duration,
    /// How long a recovery attempt may wait to learn whether the pid's holder is dead
    /// (10 s).
    pub takeover_timeout: Duration,
    /// Most log entries this node keeps in memory after reading them, so that a
    /// recovery reads what it missed from here rather than from the backend (10 000;
    /// 0 turns the cache off).
    pub log_cache_entries: usize,
    /// Most bytes those entries may take (32 MiB); the oldest go first.
    pub log_cache_bytes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(7),
            max_queue: 100_000,
            flush_timeout: Duration::from_secs(30),
            takeover_timeout: Duration::from_secs(10),
            log_cache_entries: 10_000,
            log_cache_bytes: 32 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every publish with a sequence number up to this one is appended.
    appended_seq: u64,
    /// The newest id appended by this node.
    last_appended: Position,
    /// The newest id this node's reader delivered.
    position: Position,
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

/// How many of the newest entries before a client's offset a recovery checks for an entry
/// appended twice by a retry.
const SEEN_WINDOW: usize = 1000;

/// What the runtime needs of one namespace on this node: its cluster adapter.
pub(crate) trait Member: Send + Sync {
    /// Delivers a log entry (a broadcast of the namespace) to this node's sockets of it,
    /// in log order.
    fn deliver<'a>(&'a self, entry: &'a Entry) -> BoxFuture<'a, ()>;
    /// Another node wants to restore `pid`: probe the socket holding it here, if any.
    fn answer_probe(&self, pid: String);
    /// Applies another node's sockets action to this node's targets.
    fn apply_sockets(&self, target: Target, action: &SocketsAction);
    /// This node's targets, for another node's `fetch_sockets`.
    fn socket_infos(&self, target: Target) -> Vec<SocketInfo>;
    /// Emits with an ack to this node's targets: their ids and their answers.
    fn emit_with_ack(
        &self,
        target: Target,
        event: &str,
        payload: &Payload,
    ) -> Vec<(String, oneshot::Receiver<Payload>)>;
    /// Runs this node's handler of a server-side event.
    fn run_server_side(&self, event: &str, payload: Payload, ack: Option<ServerSideAck>);
    /// Queues the refresh of this node's live records.
    fn refresh_live_records(&self);
}

/// The cluster runtime of one node.
pub struct Cluster {
    uid: String,
    backend: Arc<dyn ClusterBackend>,
    offset_form: OffsetForm,
    /// This node's namespaces, by name.
    members: RwLock<HashMap<String, Weak<dyn Member>>>,
    config: ClusterConfig,
    queues: Mutex<Queues>,
    publish_notify: Notify,
    op_notify: Notify,
    progress: watch::Sender<Progress>,
    dedup: Mutex<HashMap<String, u64>>,
    /// The newest entries read, for recoveries.
    cache: LogCache,
    dropped: AtomicU64,
    pending: requests::Pending,
    ephemeral_tx: EphemeralSink,
    /// The last session change of the last refresh of live records.
    refresh_op: AtomicU64,
    /// Backend errors and delivery lag, for the metrics.
    pub(crate) stats: stats::ClusterStats,
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
        config: ClusterConfig,
    ) -> Result<Arc<Self>, BackendError> {
        let start = backend.last_id().await?;
        backend.heartbeat(&uid, config.heartbeat_ttl).await?;
        let cache = LogCache::new(start, config.log_cache_entries, config.log_cache_bytes);
        if config.log_cache_entries > 0 {
            // What came just before the start, so that the cache answers recoveries
            // from offsets given before this node started too.
            if let Ok(before) = backend.recent(start, SEEN_WINDOW).await {
                let complete = before.len() < SEEN_WINDOW;
                cache.prefill(before, complete);
            }
        }
        let (progress, _) = watch::channel(Progress {
            position: start,
            ..Progress::default()
        });
        let (ephemeral_tx, ephemeral_rx) = tokio::sync::mpsc::channel(10_000);
        let cluster = Arc::new(Cluster {
            uid,
            offset_form: backend.offset_form(),
            backend,
            members: RwLock::new(HashMap::new()),
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
            cache,
            dropped: AtomicU64::new(0),
            pending: requests::Pending::default(),
            ephemeral_tx,
            refresh_op: AtomicU64::new(0),
            stats: Default::default(),
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

    /// The offset text that clients see for the log position `p`.
    pub(crate) fn offset(&self, p: Position) -> String {
        self.offset_form.format(p)
    }

    /// The log position of an offset a client presented; `None` when malformed.
    pub(crate) fn parse_offset(&self, offset: &str) -> Option<Position> {
        self.offset_form.parse(offset)
    }

    /// The newest entry this node has delivered.
    pub(crate) fn position(&self) -> Position {
        self.progress.borrow().position
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.locked()
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

    /// Joins a namespace of this node: its entries, probes and requests reach `member`.
    pub(crate) fn join(self: &Arc<Self>, nsp: &str, member: Weak<dyn Member>) {
        let first = self
            .members
            .writing()
            .insert(nsp.to_owned(), member)
            .is_none();
        if first {
            self.listen(nsp);
        }
    }

    fn member(&self, nsp: &str) -> Option<Arc<dyn Member>> {
        self.members.reading().get(nsp).and_then(Weak::upgrade)
    }

    /// Extends the life of this node's live records, and rewrites the ones the backend
    /// lost. Skipped while the last refresh still waits for the backend: an outage queues
    /// at most one refresh, not one every 10 s.
    fn refresh_live_records(&self) {
        if self.progress.borrow().applied_op < self.refresh_op.load(Ordering::Acquire) {
            return;
        }
        let members: Vec<_> = self
            .members
            .reading()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for m in members {
            m.refresh_live_records();
        }
        let last = self.queues().next_op - 1;
        self.refresh_op.store(last, Ordering::Release);
    }

    /// Waits until every broadcast and session change queued so far is in the backend and
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
    pub(crate) async fn wait_delivered(&self, id: Position) {
        let mut rx = self.progress.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| p.position >= id)).await;
    }

    /// Whether the record is new (not a retry's duplicate of an entry already seen).
    fn first_sighting(&self, record: &Record) -> bool {
        let Some(seq) = record.seq else { return true };
        let mut d = self.dedup.locked();
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
        offset: Option<Position>,
    ) -> Result<Session, RecoveryFailure> {
        let deadline = tokio::time::Instant::now() + self.config.takeover_timeout;
        let mut probed = false;
        loop {
            match self.backend.take_session(nsp, pid, offset).await {
                Ok(TakeOutcome::Taken(s)) => {
                    // A node taken for dead may still hold a socket with this pid (it was
                    // cut off from the backend, not dead): when it reads this, it probes
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
        after: Position,
        upto: Position,
        sid: &str,
        rooms: &[Room],
        seen: &mut HashMap<String, u64>,
    ) -> Result<Vec<Arc<Entry>>, BackendError> {
        let mut out = Vec::new();
        let mut from = after;
        while from < upto {
            let page = match self.cache.range(from, upto) {
                Some(all) => {
                    from = upto;
                    all
                }
                None => {
                    let page = self.backend.range(from, upto, 1000).await?;
                    let Some(last) = page.last() else { break };
                    from = last.id;
                    page.into_iter().map(Entry::uncached).collect()
                }
            };
            for e in page {
                let r = &e.record;
                if let Some(seq) = r.seq {
                    let s = seen.entry(r.uid.clone()).or_insert(0);
                    if seq <= *s {
                        continue;
                    }
                    *s = seq;
                }
                if let ClusterMessage::Broadcast(b) = &r.message {
                    if b.nsp == nsp
                        && !b.volatile
                        && crate::recovery::targets(&b.rooms, &b.except, sid, rooms)
                    {
                        out.push(e.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Records the appenders' sequence numbers of the entries up to `at` (the newest
    /// 1000), so that a copy of one of them appended again by a retry is not replayed.
    pub(crate) async fn seed_seen(&self, at: Position, seen: &mut HashMap<String, u64>) {
        let recent = match self.cache.recent(at, SEEN_WINDOW) {
            Some(entries) => entries,
            None => match self.backend.recent(at, SEEN_WINDOW).await {
                Ok(records) => records.into_iter().map(Entry::uncached).collect(),
                Err(_) => return,
            },
        };
        for e in recent {
            if let Some(seq) = e.record.seq {
                let s = seen.entry(e.record.uid.clone()).or_insert(0);
                *s = (*s).max(seq);
            }
        }
    }

    async fn handle(&self, entry: &Entry) {
        let record = &entry.record;
        if !self.first_sighting(record) {
            return;
        }
        match &record.message {
            ClusterMessage::Broadcast(b) => {
                if let Some(m) = self.member(&b.nsp) {
                    m.deliver(entry).await;
                }
            }
            ClusterMessage::Probe { nsp, pid } => {
                if record.uid == self.uid {
                    return; // a node never probes for itself
                }
                if let Some(m) = self.member(nsp) {
                    m.answer_probe(pid.clone());
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
                    if let Some(m) = self.member(nsp) {
                        let target = Target {
                            rooms: rooms.clone(),
                            except: except.clone(),
                        };
                        m.apply_sockets(target, action);
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

async fn reader(cluster: Weak<Cluster>, start: Position) {
    let mut pos = start;
    let mut failures = 0;
    loop {
        let Some(c) = cluster.upgrade() else { return };
        match c.backend.read_after(pos, Duration::from_millis(1000)).await {
            Ok(records) => {
                if failures > 0 {
                    c.stats.back(BackendOp::Read);
                }
                failures = 0;
                for r in records {
                    let id = r.id;
                    // Cached before it is delivered: a replay never asks for an entry
                    // past what the cache holds.
                    let entry = c.cache.push(r);
                    c.handle(&entry).await;
                    pos = id;
                    c.progress.send_modify(|p| p.position = id);
                }
                c.stats.delivered(pos);
            }
            Err(e) => {
                c.stats.failed(BackendOp::Read);
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
        let started = std::time::Instant::now();
        match c.backend.append(&c.uid, &batch).await {
            Ok(ids) => {
                if failures > 0 {
                    c.stats.back(BackendOp::Append);
                }
                failures = 0;
                let last_seq = batch.last().map_or(0, |b| b.0);
                let newest = ids.iter().copied().max().unwrap_or_default();
                {
                    let mut q = c.queues();
                    while q.publish.front().is_some_and(|(s, _)| *s <= last_seq) {
                        q.publish.pop_front();
                    }
                }
                c.stats.appended(newest, started);
                c.progress.send_modify(|p| {
                    p.appended_seq = last_seq;
                    p.last_appended = p.last_appended.max(newest);
                });
            }
            Err(e) => {
                c.stats.failed(BackendOp::Append);
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
                if failures > 0 {
                    c.stats.back(BackendOp::Sessions);
                }
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
                c.stats.failed(BackendOp::Sessions);
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
        // Also as soon as the backend is back: if it restarted without its data, the live
        // records are gone, and the refresh writes them again.
        let back = up && was_down;
        was_down = !up;
        if since_refresh >= Duration::from_secs(10) || back {
            since_refresh = Duration::ZERO;
            c.refresh_live_records();
        }
        drop(c);
        tokio::time::sleep(interval).await;
    }
}
