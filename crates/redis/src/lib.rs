//! Redis Streams backend for Tether clusters.
//!
//! Every broadcast is appended to one Redis stream (`XADD`, trimmed by age with `MINID ~`); every node reads
//! it with a blocking `XREAD` and delivers to its own sockets; the entry id is the offset.
//! Sessions live in Redis: kept sessions under `sio:session:<pid>` with a TTL equal to the
//! recovery window, live records of connected sockets under `tether:live:<pid>`, node
//! heartbeats under `tether:node:<uid>`. Taking a session is one Lua script: one-shot
//! across the cluster, and a failed attempt consumes nothing.
//!
//! Requests that need answers (`fetch_sockets`, broadcasts with acks, server-side emits)
//! are not kept: they go over pub/sub, to `socket.io#<nsp>#` (every node of the namespace)
//! and `socket.io#<nsp>#<uid>#` (one node), and `PUBSUB NUMSUB` says how many nodes to wait
//! for. One connection holds the subscriptions and subscribes again after a reconnection.
//! Pub/sub is not per database: clusters that share a Redis server need their own
//! [`RedisConfig::channel_prefix`].
//!
//! The entry and session formats are those of `@socket.io/redis-streams-adapter` 0.3.x
//! (see `codec.rs`), so Tether and Node.js nodes can share a cluster.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let backend = tether_redis::RedisBackend::connect("redis://127.0.0.1:6379", Default::default()).await?;
//! let config = tether::ServerConfig {
//!     recovery: Some(tether::RecoveryConfig::default()),
//!     ..Default::default()
//! };
//! let io = tether::Server::join_cluster(config, "node-a".into(), Arc::new(backend), Default::default()).await?;
//! # let _ = io;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod codec;
mod tls;

pub use tls::RedisTls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline, Script};
use tether_backend::{
    BackendError, BoxFuture, BusBackend, ClusterMessage, Ephemeral, EphemeralSink, LogBackend,
    Position, Record, SessionBackend, SessionOp, TakeOutcome,
};
use tokio::sync::{watch, Mutex};

/// Names and limits in Redis. The defaults are those of the Node adapter.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The stream (`socket.io`).
    pub stream: String,
    /// How long entries are kept (`MINID ~ now - retention` on every append): at least
    /// the longest recovery window of any namespace, so that however many events a
    /// disconnected client misses, they are still there (2 min 30 s). The Node adapter
    /// trims by count (`MAXLEN ~ 10000`), which loses events under load.
    pub retention: Duration,
    /// Entries per `XREAD` (100).
    pub read_count: usize,
    /// Prefix of kept sessions (`sio:session:`).
    pub session_prefix: String,
    /// Prefix of Tether's own keys (`tether:`).
    pub prefix: String,
    /// Timeout of one command (5 s).
    pub command_timeout: Duration,
    /// Prefix of the pub/sub channels of requests and answers (`socket.io`): a namespace's
    /// requests go to `<prefix>#<nsp>#`, answers to `<prefix>#<nsp>#<uid>#`.
    pub channel_prefix: String,
    /// TLS material for `rediss://` URLs (a custom CA, a client certificate); none by
    /// default (the platform's roots).
    pub tls: RedisTls,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            stream: "socket.io".into(),
            retention: Duration::from_secs(150),
            read_count: 100,
            session_prefix: "sio:session:".into(),
            prefix: "tether:".into(),
            command_timeout: Duration::from_secs(5),
            channel_prefix: "socket.io".into(),
            tls: RedisTls::default(),
        }
    }
}

/// A connection that reconnects on the next call after a failure.
struct Conn {
    client: Client,
    timeout: Duration,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    conn: Option<MultiplexedConnection>,
    /// The last failed attempt to connect: when it ended, and why.
    failed: Option<(Instant, Arc<redis::RedisError>)>,
}

fn err(e: impl std::error::Error + Send + Sync + 'static) -> BackendError {
    BackendError::with_source(e.to_string(), e)
}

impl Conn {
    fn new(client: Client, timeout: Duration) -> Self {
        Conn {
            client,
            timeout,
            slot: Mutex::new(Slot::default()),
        }
    }

    async fn get(&self) -> Result<MultiplexedConnection, BackendError> {
        let asked = Instant::now();
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.conn.as_ref() {
            return Ok(c.clone());
        }
        // An attempt that failed while this call waited answers for it too: otherwise,
        // while the server hangs, calls queue up behind each other's attempts (each as
        // long as the connection timeout).
        if let Some((at, e)) = &slot.failed {
            if *at >= asked {
                return Err(BackendError::with_source(e.to_string(), Arc::clone(e)));
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(self.timeout));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => {
                slot.conn = Some(c.clone());
                slot.failed = None;
                Ok(c)
            }
            Err(e) => {
                let e = Arc::new(e);
                slot.failed = Some((Instant::now(), Arc::clone(&e)));
                Err(BackendError::with_source(tls::describe(&e), e))
            }
        }
    }

    async fn reset(&self) {
        self.slot.lock().await.conn = None;
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BackendError> {
        let mut c = self.get().await?;
        match cmd.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if !e.is_unrecoverable_error()
                    && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                {
                    return Err(err(e));
                }
                self.reset().await;
                Err(err(e))
            }
        }
    }

    async fn pipe<T: FromRedisValue>(&self, p: &Pipeline) -> Result<T, BackendError> {
        let mut c = self.get().await?;
        match p.query_async(&mut c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.reset().await;
                Err(err(e))
            }
        }
    }
}

/// The Redis Streams [`ClusterBackend`].
pub struct RedisBackend {
    config: RedisConfig,
    /// Commands.
    cmd: Conn,
    /// The blocking reader's own connection.
    reader: Conn,
    take: Script,
    /// The heartbeat's life, as the last `heartbeat` call gave it: stands in for the life
    /// of a dead node that did not record its own (an older version).
    heartbeat_ttl_ms: std::sync::atomic::AtomicU64,
    /// Requests and answers (pub/sub).
    pubsub: Arc<PubSub>,
    /// Ends the pub/sub task when the backend is dropped.
    _stop: watch::Sender<()>,
    stop: watch::Receiver<()>,
}

/// The pub/sub side: the channels to listen to and where messages go. One task owns the
/// connection, and subscribes again to every channel after a reconnection.
struct PubSub {
    client: Client,
    /// Every channel listened to, and where its messages go.
    channels: std::sync::Mutex<HashMap<String, EphemeralSink>>,
    /// The live subscription; its lock is held while the task (re)subscribes.
    sub: Mutex<Option<PubSubSink>>,
    started: AtomicBool,
    dropped: AtomicU64,
}

impl PubSub {
    fn channels(&self) -> Vec<String> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn deliver(&self, channel: &str, raw: &[u8]) {
        let sink = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .cloned();
        let Some(m) = codec::decode_ephemeral(raw) else {
            return;
        };
        if let Some(sink) = sink {
            if sink.try_send(m).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(
                        "redis pub/sub: request dropped, the node is busy ({} so far)",
                        n + 1
                    );
                }
            }
        }
    }
}

/// Keeps a pub/sub connection subscribed to `PubSub::channels`, reconnecting with backoff.
async fn pubsub_task(state: Weak<PubSub>, mut stop: watch::Receiver<()>) {
    let mut failures: u32 = 0;
    loop {
        let Some(ps) = state.upgrade() else { return };
        let connected = async {
            let (mut sink, stream) = ps.client.get_async_pubsub().await?.split();
            let mut slot = ps.sub.lock().await;
            let channels = ps.channels();
            if !channels.is_empty() {
                sink.subscribe(&channels).await?;
            }
            *slot = Some(sink);
            Ok::<_, redis::RedisError>(stream)
        };
        let stream = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(5), connected) => r,
            _ = stop.changed() => return,
        };
        match stream {
            Ok(Ok(mut stream)) => {
                if failures > 0 {
                    tracing::info!("redis pub/sub: reconnected");
                }
                failures = 0;
                drop(ps);
                loop {
                    let msg = tokio::select! {
                        m = stream.next() => m,
                        _ = stop.changed() => return,
                    };
                    let Some(msg) = msg else { break };
                    let Some(ps) = state.upgrade() else { return };
                    ps.deliver(msg.get_channel_name(), msg.get_payload_bytes());
                }
                tracing::warn!("redis pub/sub: connection lost; reconnecting");
                if let Some(ps) = state.upgrade() {
                    *ps.sub.lock().await = None;
                }
            }
            Ok(Err(e)) => {
                if failures == 0 {
                    tracing::warn!("redis pub/sub: {e}; retrying");
                }
                drop(ps);
            }
            Err(_) => {
                if failures == 0 {
                    tracing::warn!("redis pub/sub: connection timed out; retrying");
                }
                drop(ps);
            }
        }
        failures += 1;
        let pause = Duration::from_millis((50u64 << failures.min(5)).min(2_000));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.config)
            .finish()
    }
}

const TAKE: &str = r#"
local function offset_ok()
  if ARGV[2] == '' then return true end
  local r = redis.pcall('XRANGE', KEYS[4], ARGV[2], ARGV[2])
  if type(r) ~= 'table' or r.err then return false end
  return #r > 0
end
local s = redis.call('GET', KEYS[1])
if s then
  local owner = redis.call('GET', KEYS[2])
  if owner and owner ~= ARGV[1] then return {'wrong_nsp'} end
  if not offset_ok() then return {'unknown_offset'} end
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'ok', s}
end
local live = redis.call('HMGET', KEYS[3], 'node', 'nsp', 'session', 'window')
if live[1] then
  if live[2] ~= ARGV[1] then return {'wrong_nsp'} end
  if redis.call('EXISTS', ARGV[3] .. live[1]) == 1 then return {'alive', live[1]} end
  -- The node is dead: its sockets' window runs from its last heartbeat (plus that
  -- heartbeat's life, since it died somewhere in between; nodes of older versions did
  -- not record it: this node's stands in).
  local seen = redis.call('GET', ARGV[4] .. live[1])
  local window = tonumber(live[4] or '')
  if seen and window then
    local life = tonumber(redis.call('GET', ARGV[6] .. live[1]) or ARGV[5])
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if now - tonumber(seen) > window + life then
      redis.call('DEL', KEYS[3])
      return {'none'}
    end
  end
  if not offset_ok() then return {'unknown_offset'} end
  redis.call('DEL', KEYS[3])
  return {'ok', live[3]}
end
return {'none'}
"#;

/// Retires a socket's live record (and its alive mark) and keeps its session, unless
/// another node owns the record now: a node only ever retires its own.
const RETIRE_OWN: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4])
  redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
end
return 1
"#;

/// The periodic refresh of a node's live records (KEYS, with their sessions from ARGV[5]
/// on): extends the node's own records, writes the missing ones (a restart without
/// persistence lost them), and leaves alone those that another node owns.
const REFRESH_LIVE: &str = r#"
for i, key in ipairs(KEYS) do
  local owner = redis.call('HGET', key, 'node')
  if not owner then
    redis.call('HSET', key, 'node', ARGV[1], 'nsp', ARGV[2], 'window', ARGV[4],
      'session', ARGV[4 + i])
    redis.call('PEXPIRE', key, ARGV[3])
  elseif owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
"#;

/// Live records per `REFRESH_LIVE` call.
const REFRESH_CHUNK: usize = 200;

impl RedisBackend {
    /// Connects (and checks the connection) to the Redis at `url`: `redis://` in plain
    /// text, `rediss://` over TLS (rustls; see [`RedisTls`] for a custom CA and a client
    /// certificate), `[user]:password@` for `requirepass` or an ACL user, `/db` for the
    /// database.
    pub async fn connect(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        let client = tls::client(url, &config.tls)?;
        let (stop_tx, stop) = watch::channel(());
        let backend = RedisBackend {
            cmd: Conn::new(client.clone(), config.command_timeout),
            reader: Conn::new(
                client.clone(),
                config.command_timeout + Duration::from_secs(5),
            ),
            pubsub: Arc::new(PubSub {
                client,
                channels: std::sync::Mutex::new(HashMap::new()),
                sub: Mutex::new(None),
                started: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
            }),
            _stop: stop_tx,
            stop,
            config,
            take: Script::new(TAKE),
            heartbeat_ttl_ms: std::sync::atomic::AtomicU64::new(7_000),
        };
        let _: String = backend.cmd.query(&redis::cmd("PING")).await?;
        Ok(backend)
    }

    fn live_key(&self, pid: &str) -> String {
        format!("{}live:{}", self.config.prefix, pid)
    }

    fn session_key(&self, pid: &str) -> String {
        format!("{}{}", self.config.session_prefix, pid)
    }

    fn session_nsp_key(&self, pid: &str) -> String {
        format!("{}session-nsp:{}", self.config.prefix, pid)
    }

    fn node_prefix(&self) -> String {
        format!("{}node:", self.config.prefix)
    }

    fn seen_prefix(&self) -> String {
        format!("{}seen:", self.config.prefix)
    }

    fn life_prefix(&self) -> String {
        format!("{}life:", self.config.prefix)
    }

    /// Where requests of `nsp` go: every node of the namespace listens.
    fn public_channel(&self, nsp: &str) -> String {
        format!("{}#{}#", self.config.channel_prefix, nsp)
    }

    /// Where answers to node `uid` go.
    fn private_channel(&self, nsp: &str, uid: &str) -> String {
        format!("{}#{}#{}#", self.config.channel_prefix, nsp, uid)
    }

    fn record(e: &StreamId) -> Option<Record> {
        let id = Position::parse(&e.id)?;
        let uid: String = e.get("uid").unwrap_or_default();
        let nsp: Option<String> = e.get("nsp");
        let ty: String = e.get("type").unwrap_or_default();
        let data: String = e.get("data").unwrap_or_default();
        let seq: Option<u64> = e.get::<String>("seq").and_then(|s| s.parse().ok());
        let message = match nsp {
            Some(nsp) => codec::decode_message(&ty, &nsp, &data),
            None => ClusterMessage::Other,
        };
        Some(Record {
            id,
            uid,
            seq,
            message,
        })
    }
}

fn px(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl LogBackend for RedisBackend {
    fn append<'a>(
        &'a self,
        uid: &'a str,
        batch: &'a [(u64, ClusterMessage)],
    ) -> BoxFuture<'a, Result<Vec<Position>, BackendError>> {
        Box::pin(async move {
            let mut p = redis::pipe();
            let mut n = 0;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let min_id = now_ms.saturating_sub(px(self.config.retention));
            for (seq, msg) in batch {
                let Some((ty, data)) = codec::encode_message(msg) else {
                    continue;
                };
                let nsp = match msg {
                    ClusterMessage::Broadcast(b) => b.nsp.as_str(),
                    ClusterMessage::Probe { nsp, .. } => nsp.as_str(),
                    ClusterMessage::Sockets { nsp, .. } => nsp.as_str(),
                    ClusterMessage::Other => "/",
                };
                p.cmd("XADD")
                    .arg(&self.config.stream)
                    .arg("MINID")
                    .arg("~")
                    .arg(min_id)
                    .arg("*")
                    .arg("uid")
                    .arg(uid)
                    .arg("nsp")
                    .arg(nsp)
                    .arg("type")
                    .arg(ty)
                    .arg("data")
                    .arg(data)
                    .arg("seq")
                    .arg(seq.to_string());
                n += 1;
            }
            if n == 0 {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = self.cmd.pipe(&p).await?;
            Ok(ids.iter().filter_map(|s| Position::parse(s)).collect())
        })
    }

    fn read_after(
        &self,
        after: Position,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(async move {
            let mut c = redis::cmd("XREAD");
            c.arg("COUNT")
                .arg(self.config.read_count)
                .arg("BLOCK")
                .arg(px(block))
                .arg("STREAMS")
                .arg(&self.config.stream)
                .arg(after.to_string());
            let reply: Option<StreamReadReply> = self.reader.query(&c).await?;
            Ok(reply
                .map(|r| {
                    r.keys
                        .iter()
                        .flat_map(|k| k.ids.iter())
                        .filter_map(Self::record)
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    fn range(
        &self,
        after: Position,
        upto: Position,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(async move {
            let mut c = redis::cmd("XRANGE");
            c.arg(&self.config.stream)
                .arg(format!("({after}"))
                .arg(upto.to_string())
                .arg("COUNT")
                .arg(count);
            let reply: StreamRangeReply = self.cmd.query(&c).await?;
            Ok(reply.ids.iter().filter_map(Self::record).collect())
        })
    }

    fn recent(
        &self,
        upto: Position,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(async move {
            let mut c = redis::cmd("XREVRANGE");
            c.arg(&self.config.stream)
                .arg(upto.to_string())
                .arg("-")
                .arg("COUNT")
                .arg(count);
            let reply: StreamRangeReply = self.cmd.query(&c).await?;
            Ok(reply.ids.iter().filter_map(Self::record).collect())
        })
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Position, BackendError>> {
        Box::pin(async move {
            let mut c = redis::cmd("XREVRANGE");
            c.arg(&self.config.stream)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
            let reply: StreamRangeReply = self.cmd.query(&c).await?;
            Ok(reply
                .ids
                .first()
                .and_then(|e| Position::parse(&e.id))
                .unwrap_or_default())
        })
    }
}

impl SessionBackend for RedisBackend {
    fn apply<'a>(
        &'a self,
        uid: &'a str,
        ops: &'a [SessionOp],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let mut p = redis::pipe();
            p.atomic();
            for op in ops {
                match op {
                    SessionOp::PutLive {
                        nsp,
                        session,
                        ttl,
                        window,
                    } => {
                        let key = self.live_key(&session.pid);
                        p.cmd("HSET")
                            .arg(&key)
                            .arg("node")
                            .arg(uid)
                            .arg("nsp")
                            .arg(nsp)
                            .arg("window")
                            .arg(px(*window))
                            .arg("session")
                            .arg(codec::encode_session(session))
                            .ignore();
                        p.cmd("PEXPIRE").arg(&key).arg(px(*ttl)).ignore();
                    }
                    SessionOp::ClearAlive { pid } => {
                        p.cmd("DEL")
                            .arg(format!("{}alive:{}", self.config.prefix, pid))
                            .ignore();
                    }
                    SessionOp::Retire { nsp, pid, keep } => {
                        // Only this node's record: another node may have taken the
                        // session over meanwhile (this node was cut off and looked dead)
                        // and written its own; then this node keeps nothing either.
                        let (session, ttl) = match keep {
                            Some((s, ttl)) => (codec::encode_session(s), px(*ttl)),
                            None => (String::new(), 1),
                        };
                        p.cmd("EVAL")
                            .arg(RETIRE_OWN)
                            .arg(4)
                            .arg(self.live_key(pid))
                            .arg(format!("{}alive:{}", self.config.prefix, pid))
                            .arg(self.session_key(pid))
                            .arg(self.session_nsp_key(pid))
                            .arg(uid)
                            .arg(session)
                            .arg(nsp)
                            .arg(ttl)
                            .ignore();
                    }
                    SessionOp::RefreshLive {
                        nsp,
                        sessions,
                        ttl,
                        window,
                    } => {
                        for chunk in sessions.chunks(REFRESH_CHUNK) {
                            let c = p.cmd("EVAL").arg(REFRESH_LIVE).arg(chunk.len());
                            for session in chunk {
                                c.arg(self.live_key(&session.pid));
                            }
                            c.arg(uid).arg(nsp).arg(px(*ttl)).arg(px(*window));
                            for session in chunk {
                                c.arg(codec::encode_session(session));
                            }
                            c.ignore();
                        }
                    }
                    SessionOp::MarkAlive { pid, ttl } => {
                        p.cmd("SET")
                            .arg(format!("{}alive:{}", self.config.prefix, pid))
                            .arg(1)
                            .arg("PX")
                            .arg(px(*ttl))
                            .ignore();
                    }
                }
            }
            let () = self.cmd.pipe(&p).await?;
            Ok(())
        })
    }

    fn heartbeat<'a>(
        &'a self,
        uid: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.heartbeat_ttl_ms
                .store(px(ttl), std::sync::atomic::Ordering::Relaxed);
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let mut p = redis::pipe();
            p.cmd("SET")
                .arg(format!("{}{}", self.node_prefix(), uid))
                .arg(1)
                .arg("PX")
                .arg(px(ttl))
                .ignore();
            // When it was last seen, and how long that heartbeat lasts, for the windows
            // of its sockets after a crash.
            p.cmd("SET")
                .arg(format!("{}{}", self.seen_prefix(), uid))
                .arg(now_ms)
                .arg("PX")
                .arg(86_400_000u64)
                .ignore();
            p.cmd("SET")
                .arg(format!("{}{}", self.life_prefix(), uid))
                .arg(px(ttl))
                .arg("PX")
                .arg(86_400_000u64)
                .ignore();
            let () = self.cmd.pipe(&p).await?;
            Ok(())
        })
    }

    fn take_session<'a>(
        &'a self,
        nsp: &'a str,
        pid: &'a str,
        offset: Option<Position>,
    ) -> BoxFuture<'a, Result<TakeOutcome, BackendError>> {
        Box::pin(async move {
            let mut inv = self.take.prepare_invoke();
            inv.key(self.session_key(pid))
                .key(self.session_nsp_key(pid))
                .key(self.live_key(pid))
                .key(&self.config.stream)
                .arg(nsp)
                .arg(offset.map(|o| o.to_string()).unwrap_or_default())
                .arg(self.node_prefix())
                .arg(self.seen_prefix())
                .arg(
                    self.heartbeat_ttl_ms
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
                .arg(self.life_prefix());
            let mut c = self.cmd.get().await?;
            let reply: Vec<String> = match inv.invoke_async(&mut c).await {
                Ok(r) => r,
                Err(e) => {
                    self.cmd.reset().await;
                    return Err(err(e));
                }
            };
            Ok(match reply.first().map(String::as_str) {
                Some("ok") => match reply.get(1).and_then(|s| codec::decode_session(s)) {
                    Some(s) => TakeOutcome::Taken(s),
                    None => TakeOutcome::NotFound,
                },
                Some("wrong_nsp") => TakeOutcome::WrongNamespace,
                Some("unknown_offset") => TakeOutcome::UnknownOffset,
                Some("alive") => {
                    TakeOutcome::HolderAlive(reply.get(1).cloned().unwrap_or_default())
                }
                _ => TakeOutcome::NotFound,
            })
        })
    }

    fn is_marked_alive<'a>(&'a self, pid: &'a str) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let mut c = redis::cmd("EXISTS");
            c.arg(format!("{}alive:{}", self.config.prefix, pid));
            let n: i64 = self.cmd.query(&c).await?;
            Ok(n > 0)
        })
    }
}

impl BusBackend for RedisBackend {
    fn send_ephemeral<'a>(
        &'a self,
        to: Option<&'a str>,
        message: &'a Ephemeral,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let channel = match to {
                Some(uid) => self.private_channel(&message.nsp, uid),
                None => self.public_channel(&message.nsp),
            };
            let mut c = redis::cmd("PUBLISH");
            c.arg(channel).arg(codec::encode_ephemeral(message));
            let _: i64 = self.cmd.query(&c).await?;
            Ok(())
        })
    }

    fn listeners<'a>(&'a self, nsp: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            let mut c = redis::cmd("PUBSUB");
            c.arg("NUMSUB").arg(self.public_channel(nsp));
            let reply: Vec<(String, usize)> = self.cmd.query(&c).await?;
            Ok(reply.first().map_or(0, |r| r.1))
        })
    }

    fn listen<'a>(
        &'a self,
        uid: &'a str,
        nsp: &'a str,
        sink: EphemeralSink,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let channels = [self.public_channel(nsp), self.private_channel(nsp, uid)];
            self.pubsub
                .channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(channels.iter().map(|c| (c.clone(), sink.clone())));
            if !self.pubsub.started.swap(true, Ordering::AcqRel) {
                tokio::spawn(pubsub_task(Arc::downgrade(&self.pubsub), self.stop.clone()));
            }
            let mut slot = self.pubsub.sub.lock().await;
            if let Some(sub) = slot.as_mut() {
                if let Err(e) = sub.subscribe(&channels).await {
                    // The task subscribes again to every channel when it reconnects.
                    tracing::debug!("redis pub/sub: subscribe: {e}");
                }
            }
            Ok(())
        })
    }
}
