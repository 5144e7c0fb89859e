//! NATS JetStream backend for Tether clusters (`async-nats`; NATS Server 2.9 or later).
//!
//! # Design
//!
//! - **The log** is one JetStream stream ([`NatsConfig::stream`], default `TETHER`) on one
//!   subject (`<subject_prefix>.log`), with `max_age` = [`NatsConfig::retention`]. Every
//!   broadcast is published with an acknowledgement (a batch is published, then its acks
//!   are awaited in order), and the stream sequence is the offset: the entry with stream
//!   sequence `n` has the id `Position::new(0, n)`, so clients see offsets like
//!   `"42-0"`. Since only `max_age` removes entries (from the head), the log is the
//!   contiguous sequences `first_seq..=last_seq` of the stream info; entries are read by
//!   direct gets (`allow_direct`), pipelined. After each append, an empty core-NATS
//!   message on `<subject_prefix>.tick` wakes blocked readers at once; a blocked
//!   `read_after` also looks at the stream every [`NatsConfig::poll_interval`], so a lost
//!   tick only delays it and an outage fails it within the command timeout.
//! - **Sessions** live in one KV bucket ([`NatsConfig::bucket`], history 1): kept
//!   sessions under `s.<pid>`, live records under `l.<pid>`, node heartbeats under
//!   `n.<uid>`, alive marks under `a.<pid>`, listener registrations under
//!   `e.<nsp>.<uid>` (every name as a base64url token). NATS 2.9 has no per-message TTL,
//!   so every value carries its expiry (`exp`, ms since the Unix epoch, by the writing
//!   node's clock) and readers ignore expired values; the bucket's `max_age`
//!   ([`NatsConfig::kv_max_age`]) removes what is never rewritten. **Clock skew**
//!   between nodes shifts every expiry by as much: keep the nodes' clocks synchronised
//!   (NTP), well within the heartbeat ttl.
//! - **Takes are one-shot** by compare-and-set: a take reads the kept session (or the
//!   live record), checks it exactly as the Redis backend's script does (kept session
//!   first; namespace; offset in the log; a live record only when its node's heartbeat
//!   lapsed, and only within its window plus that node's heartbeat ttl after its last
//!   heartbeat), then deletes it expecting the revision it read. Of racing takes, one
//!   delete succeeds; the others see a revision conflict, read again and find nothing.
//!   A failed take writes nothing. `Retire` and `RefreshLive` also use revisions, so a
//!   node only retires or refreshes its own live record. Unlike a Lua script, a `Retire`
//!   with `keep` is two writes (the kept session, then the live record's delete): a take
//!   in between finds the kept session, which is what it should find.
//! - **Ephemeral messages** go over core NATS (nothing kept): `<subject_prefix>.req.<nsp>`
//!   reaches every node listening to a namespace, `<subject_prefix>.req.<nsp>.<uid>` one
//!   node. `listen` registers `e.<nsp>.<uid>` in the bucket, renewed every third of
//!   [`NatsConfig::listener_ttl`]; `listeners` counts the unexpired registrations.
//!   Registrations of a backend dropped cleanly are deleted; those of a crashed node
//!   count until they expire.
//! - **Outages**: every call is bounded by [`NatsConfig::command_timeout`] (connecting
//!   by [`NatsConfig::connect_timeout`] too), so calls fail instead of hanging while the
//!   server is down or stalled. Commands use a connection that makes a single
//!   reconnection attempt and is then replaced by a new one on the next call (a failed
//!   attempt answers the calls that waited for it): async-nats queues what is published
//!   while it reconnects and sends it once reconnected, so with endless reconnection an
//!   append reported as failed would land later. (An append that times out while
//!   connected may still land, as with any backend: the runtime drops the copy that its
//!   retry appends, by uid and seq.) Subscriptions (append ticks, requests) use a second
//!   connection, which reconnects and subscribes again by itself.
//! - The bucket's stream is created with the settings of `create_key_value`, but
//!   directly: that call first asks for the account info, which async-nats 0.51 cannot
//!   parse from a 2.9 server.
//!
//! Clusters sharing a NATS server need their own stream, bucket and subject prefix. A
//! stream or bucket that exists already is used as it is: one made by hand needs
//! `allow_direct` (direct gets). Every entry and request is one NATS message, JSON with
//! binary attachments in base64 (a third larger): the server's `max_payload` (1 MB by
//! default) bounds a broadcast; a larger one fails to append.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let backend = tether_nats::NatsBackend::connect("nats://127.0.0.1:4222", Default::default()).await?;
//! let config = tether::ServerConfig {
//!     recovery: Some(tether::RecoveryConfig::default()),
//!     ..Default::default()
//! };
//! let io = tether::Server::join_cluster(config, "node-a".into(), Arc::new(backend), Default::default()).await?;
//! # let _ = io;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod store;
mod tls;

pub use tls::NatsTls;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tether_backend::{
    wire, BackendError, BoxFuture, BusBackend, ClusterMessage, Ephemeral, EphemeralSink,
    LogBackend, OffsetForm, Position, Record, SessionBackend, SessionOp, TakeOutcome,
};
use tokio::sync::watch;

use store::{token, Expiring, Kept, Live, Node};

/// Names, limits and timeouts.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The JetStream stream of the log (`TETHER`).
    pub stream: String,
    /// The KV bucket of sessions, live records, heartbeats, alive marks and listeners
    /// (`tether`).
    pub bucket: String,
    /// The prefix of every subject (`tether`): the log is `<prefix>.log`, append ticks
    /// `<prefix>.tick`, requests `<prefix>.req.<nsp>` and `<prefix>.req.<nsp>.<uid>`.
    pub subject_prefix: String,
    /// How long log entries are kept (the stream's `max_age`): at least the longest
    /// recovery window of any namespace (2 min 30 s).
    pub retention: Duration,
    /// The KV bucket's `max_age`, a backstop for values never rewritten (24 h). Must
    /// exceed every session ttl and recovery window.
    pub kv_max_age: Duration,
    /// Entries per `read_after` (100).
    pub read_count: usize,
    /// Timeout of one call (5 s).
    pub command_timeout: Duration,
    /// Timeout of connecting (5 s).
    pub connect_timeout: Duration,
    /// How often a blocked `read_after` looks at the stream without a tick (1 s).
    pub poll_interval: Duration,
    /// How long a listener registration lives without renewal (15 s): a node that
    /// crashed still counts in `listeners` for up to this long (one dropped cleanly
    /// deletes its registrations).
    pub listener_ttl: Duration,
    /// TLS material (a custom CA, a client certificate); none by default. The URL's
    /// `tls_ca`, `tls_cert` and `tls_key` files fill it too.
    pub tls: NatsTls,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            stream: "TETHER".into(),
            bucket: "tether".into(),
            subject_prefix: "tether".into(),
            retention: Duration::from_secs(150),
            kv_max_age: Duration::from_secs(86_400),
            read_count: 100,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            listener_ttl: Duration::from_secs(15),
            tls: NatsTls::default(),
        }
    }
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
    BackendError::with_source(e.to_string(), e)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How many times a compare-and-set is retried after a conflict.
const ATTEMPTS: usize = 16;

/// Direct gets in flight per read.
const PIPELINE: usize = 32;

/// The NATS JetStream [`ClusterBackend`].
pub struct NatsBackend {
    config: NatsConfig,
    /// Commands: JetStream and KV requests, publishes.
    conn: Arc<Conn>,
    /// Subscriptions only (append ticks, requests); it reconnects and subscribes again by
    /// itself.
    sub_client: async_nats::Client,
    tick_subject: String,
    /// Bumped by every append tick.
    ticks: watch::Receiver<u64>,
    /// Listener registrations to renew (their keys).
    registrations: Arc<Mutex<HashSet<String>>>,
    /// The forwarding task of every subject listened to: listening again replaces it.
    subscriptions: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    renewing: std::sync::atomic::AtomicBool,
    /// Ends the background tasks when the backend is dropped.
    _stop: watch::Sender<()>,
    stop: watch::Receiver<()>,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("config", &self.config)
            .finish()
    }
}

/// One command connection with its JetStream handles.
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    log: stream::Stream,
    kv: kv::Store,
    /// The bucket's own stream (to list listener registrations).
    kv_stream: stream::Stream,
    log_subject: String,
}

/// The command connection, opened anew on the next call once it is lost.
///
/// async-nats queues what is published while it reconnects and sends it once
/// reconnected: an append reported as failed (timed out) would land later. So the
/// command client makes a single reconnection attempt (a blip), and is replaced by a new
/// one, opened on the next call, once that failed: what it had queued dies with it.
struct Conn {
    url: String,
    config: NatsConfig,
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    inner: Option<Arc<Inner>>,
    /// The last failed attempt to connect: when it ended, and why.
    failed: Option<(Instant, Arc<BackendError>)>,
}

impl Conn {
    async fn get(&self) -> Result<Arc<Inner>, BackendError> {
        let asked = Instant::now();
        let mut slot = self.slot.lock().await;
        if let Some(inner) = &slot.inner {
            if inner.client.connection_state() == async_nats::connection::State::Connected {
                return Ok(inner.clone());
            }
            slot.inner = None;
        }
        // An attempt that failed while this call waited answers for it too: otherwise,
        // while the server hangs, calls queue up behind each other's attempts.
        if let Some((at, e)) = &slot.failed {
            if *at >= asked {
                return Err(BackendError::again(e));
            }
        }
        let limit = self.config.connect_timeout + self.config.command_timeout;
        let opened = tokio::time::timeout(limit, Box::pin(Inner::open(&self.url, &self.config)));
        match opened.await {
            Ok(Ok(inner)) => {
                let inner = Arc::new(inner);
                slot.inner = Some(inner.clone());
                slot.failed = None;
                Ok(inner)
            }
            Ok(Err(e)) => {
                let e = Arc::new(e);
                slot.failed = Some((Instant::now(), Arc::clone(&e)));
                Err(BackendError::again(&e))
            }
            Err(_) => {
                let e = Arc::new(BackendError::new(format!(
                    "connecting to {} timed out",
                    tls::redact(&self.url)
                )));
                slot.failed = Some((Instant::now(), Arc::clone(&e)));
                Err(BackendError::again(&e))
            }
        }
    }
}

fn options(config: &NatsConfig, url: &str) -> Result<async_nats::ConnectOptions, BackendError> {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.command_timeout))
        .ping_interval(Duration::from_secs(10))
        // async-nats waits this long before every attempt, the first one included.
        .reconnect_delay_callback(|n| match n {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis((25u64 << n.min(6)).min(1_000)),
        });
    tls::apply(tls::credentials(options, url), &config.tls)
}

fn key(kind: &str, name: &str) -> String {
    format!("{kind}.{}", token(name))
}

fn listener_key(nsp: &str, uid: &str) -> String {
    format!("e.{}.{}", token(nsp), token(uid))
}

impl NatsBackend {
    /// Connects to the NATS server at `url` (`nats://host:port`, `tls://host:port` for
    /// TLS, `user:password@` or `token@` for authentication; see [`NatsTls`]), creating the stream and
    /// the bucket if they do not exist.
    pub async fn connect(url: &str, mut config: NatsConfig) -> Result<Self, BackendError> {
        let url = &tls::strip_url(url, &mut config.tls)?;
        let limit = config.connect_timeout + config.command_timeout;
        // Boxed: the connecting future is large.
        match tokio::time::timeout(limit, Box::pin(Self::open(url, config))).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::new(format!(
                "connecting to {} timed out",
                tls::redact(url)
            ))),
        }
    }

    async fn open(url: &str, config: NatsConfig) -> Result<Self, BackendError> {
        let inner = Inner::open(url, &config).await?;
        let sub_client = options(&config, url)?
            .connect(url)
            .await
            .map_err(|e| BackendError::with_source(tls::describe(&e), e))?;
        let tick_subject = format!("{}.tick", config.subject_prefix);
        let (stop_tx, stop) = watch::channel(());
        let (tick_tx, ticks) = watch::channel(0u64);
        let sub = sub_client
            .subscribe(tick_subject.clone())
            .await
            .map_err(err)?;
        // Subscribed once the server answers on this connection.
        sub_client.flush().await.map_err(err)?;
        tokio::spawn(tick_task(sub, tick_tx, stop.clone()));
        let conn = Arc::new(Conn {
            url: url.to_owned(),
            config: config.clone(),
            slot: tokio::sync::Mutex::new(Slot {
                inner: Some(Arc::new(inner)),
                failed: None,
            }),
        });
        Ok(NatsBackend {
            config,
            conn,
            sub_client,
            tick_subject,
            ticks,
            registrations: Arc::new(Mutex::new(HashSet::new())),
            subscriptions: Mutex::new(HashMap::new()),
            renewing: std::sync::atomic::AtomicBool::new(false),
            _stop: stop_tx,
            stop,
        })
    }

    /// Runs `f` on the command connection, bounded by the command timeout.
    async fn with<T, Fut>(
        &self,
        what: &str,
        f: impl FnOnce(Arc<Inner>) -> Fut,
    ) -> Result<T, BackendError>
    where
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let c = self.conn.get().await?;
        match tokio::time::timeout(self.config.command_timeout, f(c)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::new(format!("{what} timed out"))),
        }
    }

    fn public_subject(&self, nsp: &str) -> String {
        format!("{}.req.{}", self.config.subject_prefix, token(nsp))
    }

    fn private_subject(&self, nsp: &str, uid: &str) -> String {
        format!(
            "{}.req.{}.{}",
            self.config.subject_prefix,
            token(nsp),
            token(uid)
        )
    }
}

impl Inner {
    async fn open(url: &str, config: &NatsConfig) -> Result<Self, BackendError> {
        // One reconnection attempt, then the connection is replaced (see `Conn`).
        let client = options(config, url)?
            .max_reconnects(Some(1))
            .connect(url)
            .await
            .map_err(|e| BackendError::with_source(tls::describe(&e), e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.command_timeout)
            .build(client.clone());
        let log_subject = format!("{}.log", config.subject_prefix);
        let log = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![log_subject.clone()],
                max_age: config.retention,
                allow_direct: true,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| BackendError::new(format!("creating the stream: {e}")))?;
        // The bucket's stream as `create_key_value` makes it, made here: that call first
        // asks for the account info, which async-nats 0.51 cannot parse from NATS 2.9.
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{}", config.bucket),
            subjects: vec![format!("$KV.{}.>", config.bucket)],
            max_messages_per_subject: 1,
            max_age: config.kv_max_age,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| BackendError::new(format!("creating the bucket: {e}")))?;
        let kv = js
            .get_key_value(&config.bucket)
            .await
            .map_err(|e| BackendError::new(format!("opening the bucket: {e}")))?;
        let kv_stream = js
            .get_stream(format!("KV_{}", config.bucket))
            .await
            .map_err(|e| BackendError::new(format!("the bucket's stream: {e}")))?;
        Ok(Inner {
            client,
            js,
            log,
            kv,
            kv_stream,
            log_subject,
        })
    }

    // ---- The log ----

    /// `(first, last)` sequences of the stream; `first > last` when it is empty.
    async fn bounds(&self) -> Result<(u64, u64), BackendError> {
        let info = self.log.get_info().await.map_err(err)?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// The records of the sequences `from..=to`, oldest first (those removed meanwhile
    /// left out).
    async fn fetch(&self, from: u64, to: u64) -> Result<Vec<Record>, BackendError> {
        if from > to {
            return Ok(Vec::new());
        }
        let gets = futures_util::stream::iter(from..=to)
            .map(|seq| async move {
                match self.log.direct_get(seq).await {
                    Ok(m) => Ok(Some(m)),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(err(e)),
                }
            })
            .buffered(PIPELINE)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(gets.len());
        for g in gets {
            let Some(m) = g? else { continue };
            let (uid, seq, message) = store::decode_entry(&m.payload).unwrap_or((
                String::new(),
                None,
                ClusterMessage::Other,
            ));
            out.push(Record {
                id: Position::new(0, m.sequence),
                uid,
                seq,
                message,
            });
        }
        Ok(out)
    }

    /// Entries after `after`, at most `count`, without waiting.
    async fn page_after(&self, after: Position, count: usize) -> Result<Vec<Record>, BackendError> {
        let (first, last) = self.bounds().await?;
        let from = after.seq.saturating_add(1).max(first);
        let to = last.min(from.saturating_add(count.max(1) as u64 - 1));
        self.fetch(from, to).await
    }

    /// Whether `offset` is an entry of the log.
    async fn offset_ok(&self, offset: Option<Position>) -> Result<bool, BackendError> {
        let Some(o) = offset else { return Ok(true) };
        if o.epoch != 0 || o.seq == 0 || o.seq > i64::MAX as u64 {
            return Ok(false);
        }
        match self.log.direct_get(o.seq).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    // ---- KV ----

    /// The entry of `key`: its revision and its value (`None` when deleted or not
    /// decodable); `None` when the key never existed (or its history is gone).
    async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(u64, Option<T>)>, BackendError> {
        let e = self.kv.entry(key).await.map_err(err)?;
        Ok(e.map(|e| {
            let v = match e.operation {
                kv::Operation::Put => wire::from_slice(&e.value),
                _ => None,
            };
            (e.revision, v)
        }))
    }

    async fn put<T: Serialize>(&self, key: &str, v: &T) -> Result<u64, BackendError> {
        self.kv
            .put(key, Bytes::from(wire::to_vec(v)))
            .await
            .map_err(err)
    }

    /// Writes `key` if its revision is still `prev` (`None`: the key has no entry).
    /// `Ok(false)` on a conflict.
    async fn write<T: Serialize>(
        &self,
        key: &str,
        v: &T,
        prev: Option<u64>,
    ) -> Result<bool, BackendError> {
        let value = Bytes::from(wire::to_vec(v));
        match prev {
            Some(rev) => match self.kv.update(key, value, rev).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(err(e)),
            },
            None => match self.kv.create(key, value).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(err(e)),
            },
        }
    }

    /// Deletes `key` if its revision is still `rev`. `Ok(false)` on a conflict.
    async fn delete(&self, key: &str, rev: u64) -> Result<bool, BackendError> {
        match self.kv.delete_expect_revision(key, Some(rev)).await {
            Ok(()) => Ok(true),
            Err(e) => {
                // A conflict, if the key has another revision now.
                match self.kv.entry(key).await {
                    Ok(Some(now)) if now.revision != rev => Ok(false),
                    _ => Err(err(e)),
                }
            }
        }
    }

    /// Deletes `key` if it holds a value.
    async fn clear(&self, key: &str) -> Result<(), BackendError> {
        if let Some((_, Some(_))) = self.get::<serde_json::Value>(key).await? {
            self.kv.delete(key).await.map_err(err)?;
        }
        Ok(())
    }

    async fn take(
        &self,
        nsp: &str,
        pid: &str,
        offset: Option<Position>,
    ) -> Result<TakeOutcome, BackendError> {
        let s_key = key("s", pid);
        let l_key = key("l", pid);
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            if let Some((rev, Some(k))) = self.get::<Kept>(&s_key).await? {
                if k.exp > now {
                    if k.nsp != nsp {
                        return Ok(TakeOutcome::WrongNamespace);
                    }
                    if !self.offset_ok(offset).await? {
                        return Ok(TakeOutcome::UnknownOffset);
                    }
                    if self.delete(&s_key, rev).await? {
                        return Ok(TakeOutcome::Taken(k.session));
                    }
                    continue;
                }
            }
            let Some((rev, Some(live))) = self.get::<Live>(&l_key).await? else {
                // A retire puts the kept session before it deletes the live record, but
                // these two reads are not one: a retire that ran between them left a
                // kept session, which the next round takes.
                if let Some((_, Some(k))) = self.get::<Kept>(&s_key).await? {
                    if k.exp > now_ms() {
                        continue;
                    }
                }
                return Ok(TakeOutcome::NotFound);
            };
            if live.exp <= now {
                return Ok(TakeOutcome::NotFound);
            }
            if live.nsp != nsp {
                return Ok(TakeOutcome::WrongNamespace);
            }
            let node = self
                .get::<Node>(&key("n", &live.node))
                .await?
                .and_then(|(_, n)| n);
            if let Some(n) = &node {
                if n.exp > now {
                    return Ok(TakeOutcome::HolderAlive(live.node));
                }
                // The node is dead: its sockets' window runs from its last heartbeat
                // (plus that heartbeat's life, since it died somewhere in between).
                if now.saturating_sub(n.seen) > live.window.saturating_add(n.life) {
                    if self.delete(&l_key, rev).await? {
                        return Ok(TakeOutcome::NotFound);
                    }
                    continue;
                }
            }
            if !self.offset_ok(offset).await? {
                return Ok(TakeOutcome::UnknownOffset);
            }
            if self.delete(&l_key, rev).await? {
                return Ok(TakeOutcome::Taken(live.session));
            }
        }
        Err(BackendError::new(format!(
            "take of {pid}: too much contention"
        )))
    }

    async fn retire(
        &self,
        uid: &str,
        nsp: &str,
        pid: &str,
        keep: Option<&(tether_backend::Session, Duration)>,
    ) -> Result<(), BackendError> {
        let s_key = key("s", pid);
        let l_key = key("l", pid);
        let mut kept: Option<u64> = None;
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let live = self.get::<Live>(&l_key).await?;
            if let Some((_, Some(l))) = &live {
                if l.exp > now && l.node != uid {
                    // Another node owns it now: this node keeps nothing either.
                    if let Some(rev) = kept {
                        self.delete(&s_key, rev).await?;
                    }
                    return Ok(());
                }
            }
            if kept.is_none() {
                if let Some((session, ttl)) = keep {
                    let k = Kept {
                        nsp: nsp.to_owned(),
                        session: session.clone(),
                        exp: now.saturating_add(ms(*ttl)),
                    };
                    kept = Some(self.put(&s_key, &k).await?);
                }
            }
            self.clear(&key("a", pid)).await?;
            match live {
                Some((rev, Some(_))) => {
                    if self.delete(&l_key, rev).await? {
                        return Ok(());
                    }
                }
                _ => return Ok(()),
            }
        }
        Err(BackendError::new(format!(
            "retire of {pid}: too much contention"
        )))
    }

    async fn refresh_one(
        &self,
        uid: &str,
        nsp: &str,
        session: &tether_backend::Session,
        ttl: u64,
        window: u64,
    ) -> Result<(), BackendError> {
        let key = key("l", &session.pid);
        for _ in 0..ATTEMPTS {
            let now = now_ms();
            let done = match self.get::<Live>(&key).await? {
                Some((rev, Some(mut l))) if l.exp > now => {
                    if l.node != uid {
                        return Ok(());
                    }
                    l.exp = now.saturating_add(ttl);
                    self.write(&key, &l, Some(rev)).await?
                }
                found => {
                    let l = Live {
                        node: uid.to_owned(),
                        nsp: nsp.to_owned(),
                        session: session.clone(),
                        window,
                        exp: now.saturating_add(ttl),
                    };
                    self.write(&key, &l, found.map(|(rev, _)| rev)).await?
                }
            };
            if done {
                return Ok(());
            }
        }
        Err(BackendError::new(format!(
            "refresh of {}: too much contention",
            session.pid
        )))
    }

    async fn apply_op(&self, uid: &str, op: &SessionOp) -> Result<(), BackendError> {
        match op {
            SessionOp::PutLive {
                nsp,
                session,
                ttl,
                window,
            } => {
                let l = Live {
                    node: uid.to_owned(),
                    nsp: nsp.clone(),
                    session: session.clone(),
                    window: ms(*window),
                    exp: now_ms().saturating_add(ms(*ttl)),
                };
                self.put(&key("l", &session.pid), &l).await?;
            }
            SessionOp::Retire { nsp, pid, keep } => {
                self.retire(uid, nsp, pid, keep.as_ref()).await?;
            }
            // Applied by chunks in `apply`.
            SessionOp::RefreshLive { .. } => {}
            SessionOp::ClearAlive { pid } => self.clear(&key("a", pid)).await?,
            SessionOp::MarkAlive { pid, ttl } => {
                let m = Expiring {
                    exp: now_ms().saturating_add(ms(*ttl)),
                };
                self.put(&key("a", pid), &m).await?;
            }
        }
        Ok(())
    }

    async fn register(&self, key: &str, ttl: Duration) -> Result<(), BackendError> {
        let e = Expiring {
            exp: now_ms().saturating_add(ms(ttl)),
        };
        self.put(key, &e).await.map(|_| ())
    }
}

fn is_not_found(e: &stream::DirectGetError) -> bool {
    match e.kind() {
        stream::DirectGetErrorKind::NotFound => true,
        stream::DirectGetErrorKind::ErrorResponse(code, _) => code.as_u16() == 404,
        _ => false,
    }
}

/// Bumps `ticks` for every append tick.
async fn tick_task(
    mut sub: async_nats::Subscriber,
    ticks: watch::Sender<u64>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            m = sub.next() => {
                if m.is_none() {
                    return;
                }
                ticks.send_modify(|n| *n = n.wrapping_add(1));
            }
            _ = stop.changed() => return,
        }
    }
}

/// Hands the messages of one subscription to `sink`, dropping them when it is full.
async fn forward(
    mut sub: async_nats::Subscriber,
    sink: EphemeralSink,
    mut stop: watch::Receiver<()>,
) {
    let mut dropped = 0u64;
    loop {
        let m = tokio::select! {
            m = sub.next() => m,
            _ = stop.changed() => return,
        };
        let Some(m) = m else { return };
        let Some(e) = wire::from_slice::<Ephemeral>(&m.payload) else {
            continue;
        };
        match sink.try_send(e) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            Err(_) => {
                if dropped.is_multiple_of(1000) {
                    tracing::warn!(
                        "nats: request dropped, the node is busy ({} so far)",
                        dropped + 1
                    );
                }
                dropped += 1;
            }
        }
    }
}

/// Renews the listener registrations every third of their ttl.
async fn renew_task(
    conn: Arc<Conn>,
    registrations: Arc<Mutex<HashSet<String>>>,
    ttl: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = stop.changed() => return,
        }
        let keys: Vec<String> = registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let renew = async {
            let c = conn.get().await?;
            for key in keys {
                c.register(&key, ttl).await?;
            }
            Ok::<_, BackendError>(())
        };
        match tokio::time::timeout(timeout * 2, renew).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("nats: renewing the listener registrations: {e}"),
            Err(_) => tracing::debug!("nats: renewing the listener registrations timed out"),
        }
    }
}

impl LogBackend for NatsBackend {
    fn append<'a>(
        &'a self,
        uid: &'a str,
        batch: &'a [(u64, ClusterMessage)],
    ) -> BoxFuture<'a, Result<Vec<Position>, BackendError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let tick = self.tick_subject.clone();
            self.with("append", move |c| async move {
                let mut acks = Vec::with_capacity(batch.len());
                for (seq, msg) in batch {
                    let payload = Bytes::from(store::encode_entry(uid, *seq, msg));
                    acks.push(
                        c.js.publish(c.log_subject.clone(), payload)
                            .await
                            .map_err(err)?,
                    );
                }
                let mut ids = Vec::with_capacity(acks.len());
                for ack in acks {
                    let ack = ack.await.map_err(err)?;
                    ids.push(Position::new(0, ack.sequence));
                }
                // Wakes the blocked readers (best effort: they also poll).
                let _ = c.client.publish(tick, Bytes::new()).await;
                Ok(ids)
            })
            .await
        })
    }

    fn read_after(
        &self,
        after: Position,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + block;
            let mut ticks = self.ticks.clone();
            let count = self.config.read_count;
            loop {
                ticks.borrow_and_update();
                let got = self
                    .with("read_after", move |c| async move {
                        c.page_after(after, count).await
                    })
                    .await?;
                let now = tokio::time::Instant::now();
                if !got.is_empty() || now >= deadline {
                    return Ok(got);
                }
                let wait = (deadline - now).min(self.config.poll_interval);
                tokio::select! {
                    r = ticks.changed() => {
                        if r.is_err() {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    fn range(
        &self,
        after: Position,
        upto: Position,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(self.with("range", move |c| async move {
            if count == 0 {
                return Ok(Vec::new());
            }
            let (first, last) = c.bounds().await?;
            let from = after.seq.saturating_add(1).max(first);
            let to = upto
                .seq
                .min(last)
                .min(from.saturating_add(count as u64 - 1));
            c.fetch(from, to).await
        }))
    }

    fn recent(
        &self,
        upto: Position,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(self.with("recent", move |c| async move {
            if count == 0 {
                return Ok(Vec::new());
            }
            let (first, last) = c.bounds().await?;
            let to = upto.seq.min(last);
            let from = to.saturating_sub(count as u64 - 1).max(first).max(1);
            let mut got = c.fetch(from, to).await?;
            got.reverse();
            Ok(got)
        }))
    }

    fn offset_form(&self) -> OffsetForm {
        OffsetForm::SeqEpoch
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Position, BackendError>> {
        Box::pin(self.with("last_id", |c| async move {
            let (_, last) = c.bounds().await?;
            Ok(Position::new(0, last))
        }))
    }
}

impl SessionBackend for NatsBackend {
    fn apply<'a>(
        &'a self,
        uid: &'a str,
        ops: &'a [SessionOp],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            for op in ops {
                match op {
                    // However many sessions: each chunk has the command timeout.
                    SessionOp::RefreshLive {
                        nsp,
                        sessions,
                        ttl,
                        window,
                    } => {
                        let (ttl, window) = (ms(*ttl), ms(*window));
                        for chunk in sessions.chunks(PIPELINE) {
                            self.with("apply", move |c| async move {
                                let refreshes = chunk
                                    .iter()
                                    .map(|s| c.refresh_one(uid, nsp, s, ttl, window));
                                for r in futures_util::future::join_all(refreshes).await {
                                    r?;
                                }
                                Ok(())
                            })
                            .await?;
                        }
                    }
                    _ => {
                        self.with("apply", move |c| async move { c.apply_op(uid, op).await })
                            .await?
                    }
                }
            }
            Ok(())
        })
    }

    fn heartbeat<'a>(
        &'a self,
        uid: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.with("heartbeat", move |c| async move {
            let now = now_ms();
            let n = Node {
                exp: now.saturating_add(ms(ttl)),
                seen: now,
                life: ms(ttl),
            };
            c.put(&key("n", uid), &n).await.map(|_| ())
        }))
    }

    fn take_session<'a>(
        &'a self,
        nsp: &'a str,
        pid: &'a str,
        offset: Option<Position>,
    ) -> BoxFuture<'a, Result<TakeOutcome, BackendError>> {
        Box::pin(self.with("take_session", move |c| async move {
            c.take(nsp, pid, offset).await
        }))
    }

    fn is_marked_alive<'a>(&'a self, pid: &'a str) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(self.with("is_marked_alive", move |c| async move {
            let m = c.get::<Expiring>(&key("a", pid)).await?;
            Ok(matches!(m, Some((_, Some(m))) if m.exp > now_ms()))
        }))
    }
}

impl BusBackend for NatsBackend {
    fn send_ephemeral<'a>(
        &'a self,
        to: Option<&'a str>,
        message: &'a Ephemeral,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let subject = match to {
            Some(uid) => self.private_subject(&message.nsp, uid),
            None => self.public_subject(&message.nsp),
        };
        Box::pin(self.with("send_ephemeral", move |c| async move {
            c.client
                .publish(subject, Bytes::from(wire::to_vec(message)))
                .await
                .map_err(err)?;
            // Published means handed to the connection; a flush makes it sent.
            c.client.flush().await.map_err(err)
        }))
    }

    fn listeners<'a>(&'a self, nsp: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
        let bucket = self.config.bucket.clone();
        Box::pin(self.with("listeners", move |c| async move {
            let prefix = format!("$KV.{bucket}.");
            let filter = format!("{prefix}e.{}.*", token(nsp));
            let mut subjects = c.kv_stream.info_with_subjects(filter).await.map_err(err)?;
            let mut keys = Vec::new();
            while let Some(s) = subjects.next().await {
                let (subject, _) = s.map_err(err)?;
                if let Some(key) = subject.strip_prefix(&prefix) {
                    keys.push(key.to_owned());
                }
            }
            let now = now_ms();
            let mut n = 0;
            for key in keys {
                if let Some((_, Some(e))) = c.get::<Expiring>(&key).await? {
                    if e.exp > now {
                        n += 1;
                    }
                }
            }
            Ok(n)
        }))
    }

    fn listen<'a>(
        &'a self,
        uid: &'a str,
        nsp: &'a str,
        sink: EphemeralSink,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let subscribing = async {
                for subject in [self.public_subject(nsp), self.private_subject(nsp, uid)] {
                    let sub = self
                        .sub_client
                        .subscribe(subject.clone())
                        .await
                        .map_err(err)?;
                    let task = tokio::spawn(forward(sub, sink.clone(), self.stop.clone()));
                    let old = self
                        .subscriptions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(subject, task);
                    if let Some(old) = old {
                        // Its subscription ends with it.
                        old.abort();
                    }
                }
                // Registered once the server has the subscriptions: whoever counts this
                // node reaches it.
                self.sub_client.flush().await.map_err(err)
            };
            match tokio::time::timeout(self.config.command_timeout, subscribing).await {
                Ok(r) => r?,
                Err(_) => return Err(BackendError::new("listen timed out")),
            }
            let k = listener_key(nsp, uid);
            let ttl = self.config.listener_ttl;
            self.with("listen", |c| async move {
                c.register(&k, ttl).await.map(|()| k)
            })
            .await
            .map(|k| {
                self.registrations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(k);
            })?;
            if !self
                .renewing
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                tokio::spawn(renew_task(
                    self.conn.clone(),
                    self.registrations.clone(),
                    self.config.listener_ttl,
                    self.config.command_timeout,
                    self.stop.clone(),
                ));
            }
            Ok(())
        })
    }
}

impl Drop for NatsBackend {
    /// Deletes this backend's listener registrations (best effort, in the background).
    fn drop(&mut self) {
        let keys: Vec<String> = self
            .registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        if keys.is_empty() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(inner) = self.conn.slot.try_lock().ok().and_then(|s| s.inner.clone()) else {
            return;
        };
        let timeout = self.config.command_timeout;
        rt.spawn(async move {
            for key in keys {
                let _ = tokio::time::timeout(timeout, inner.kv.delete(&key)).await;
            }
        });
    }
}
