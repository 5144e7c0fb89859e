//! PostgreSQL backend for Tether clusters, on `tokio-postgres`.
//!
//! # Design
//!
//! Everything lives in a handful of tables, created on connect (`CREATE TABLE IF NOT
//! EXISTS`, under an advisory lock so that nodes starting together do not race), all named
//! `<prefix><name>` with the prefix of [`PostgresConfig::prefix`] (`tether_`). To put them
//! in a schema of their own, give the connection a `search_path` (in a URL:
//! `?options=-csearch_path%3Dmy_schema`).
//!
//! | table | rows |
//! | --- | --- |
//! | `log` | the cluster log: `id` (primary key), `uid`, `seq`, `nsp`, `kind`, `data` (JSON text), `created_at` |
//! | `counter` | one row: the last id handed out |
//! | `sessions` | kept sessions: `pid` (primary key), `nsp`, `session`, `expires_at` |
//! | `live` | live records: `pid` (primary key), `node`, `nsp`, `session`, `window_ms`, `expires_at` |
//! | `nodes` | heartbeats: `uid` (primary key), `expires_at`, `last_seen`, `life_ms` |
//! | `alive` | alive marks: `pid` (primary key), `expires_at` |
//! | `listeners` | who listens to the ephemeral messages of a namespace: `uid`, `nsp`, `expires_at` |
//! | `ephemeral` | ephemeral messages too large for a `NOTIFY` payload, kept a minute |
//!
//! Every expiry uses the database clock (`clock_timestamp()`), so nodes whose clocks
//! disagree still agree on what expired.
//!
//! **The log.** An append is one transaction: it takes the ids of the whole batch with
//! `UPDATE counter SET last = last + n RETURNING last` (the row lock serializes appends
//! until commit, so commits happen in id order and a reader never skips an id that
//! commits later), inserts the rows, and `pg_notify`s the log channel. Id `n` is the entry
//! id `n-0`: offsets look like `1764139200000123-0`. The counter starts at the database's
//! clock in microseconds when the table is created, so a log created anew (a database
//! that lost its data) never hands out an offset that clients saw before. Entries older
//! than [`PostgresConfig::retention`] are deleted by appends, at most once a second per
//! node.
//!
//! **Reads.** `read_after` selects `id > after ORDER BY id LIMIT read_count`; when there
//! is nothing, it waits for a notification on the log channel (a dedicated `LISTEN`
//! connection, shared with the ephemeral messages) or for at most
//! [`PostgresConfig::poll_interval`], then asks again, until its block ends.
//!
//! **Sessions.** `take_session` is one transaction with row locks (`SELECT ... FOR
//! UPDATE`, then `DELETE`), with the semantics of tether-redis's script: a kept session
//! first, then a live record, which is taken only when its node's heartbeat lapsed and
//! only within its window plus that heartbeat's life after the node's last heartbeat;
//! a take from another namespace or with an offset that is not in the log consumes
//! nothing. `apply` runs all its ops in one transaction, in order; a node only retires
//! (and keeps a session over) or refreshes its own live record.
//!
//! **Ephemeral messages.** `pg_notify` on a channel per namespace (public) and one per
//! namespace and node (private); channel names are hashes of the prefix, namespace and
//! node (a channel name has at most 63 bytes). The payload is the message's JSON; one
//! that would exceed the 8000 bytes of a `NOTIFY` is stored in the `ephemeral` table and
//! its id is sent instead. `listeners(nsp)` counts the rows of `listeners` whose expiry,
//! renewed by the node's heartbeat, is current.
//!
//! **Failures.** Commands run on a small pool of connections; every call has a timeout
//! ([`PostgresConfig::command_timeout`]), and a connection that failed or timed out is
//! dropped and replaced on the next call. The `LISTEN` connection reconnects with backoff
//! and listens again to every channel; readers are woken then, since notifications may
//! have been missed meanwhile.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let backend = tether_postgres::PostgresBackend::connect(
//!     "postgres://postgres@127.0.0.1:5432/test",
//!     Default::default(),
//! )
//! .await?;
//! let config = tether::ServerConfig {
//!     recovery: Some(tether::RecoveryConfig::default()),
//!     ..Default::default()
//! };
//! let io = tether::Server::join_cluster(config, "node-a".into(), Arc::new(backend), Default::default()).await?;
//! # let _ = io;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod tls;

pub use tls::{PostgresTls, SslMode};

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tether_backend::{
    wire, BackendError, BoxFuture, BusBackend, ClusterMessage, Ephemeral, EphemeralSink,
    LogBackend, OffsetForm, Position, Record, SessionBackend, SessionOp, TakeOutcome,
};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio_postgres::{AsyncMessage, Client, Notification, Row};

/// Names, limits and timeouts.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Prefix of every table (`tether_`). Backends with the same prefix (in the same
    /// database and schema) are nodes of one cluster. At most 48 bytes.
    pub prefix: String,
    /// How long log entries are kept (2 min 30 s): at least the longest recovery window
    /// of any namespace.
    pub retention: Duration,
    /// Entries per read (100).
    pub read_count: usize,
    /// Timeout of one call's work on a connection (5 s), and of waiting for a connection.
    pub command_timeout: Duration,
    /// Timeout of opening a connection (2 s).
    pub connect_timeout: Duration,
    /// Connections for commands (4); the `LISTEN` connection comes on top.
    pub pool_size: usize,
    /// How often a waiting `read_after` asks again even without a notification (1 s): it
    /// bounds the delay when a notification is lost (the `LISTEN` connection reconnects),
    /// and how long a read waits before it notices that the database is gone.
    pub poll_interval: Duration,
    /// How long stored ephemeral messages (those too large for `NOTIFY`) are kept (60 s).
    pub ephemeral_retention: Duration,
    /// TLS options under the URL's `sslmode`, `sslrootcert`, `sslcert`, `sslkey`: the
    /// default mode (`prefer`), a custom CA, a client certificate.
    pub tls: PostgresTls,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            prefix: "tether_".into(),
            retention: Duration::from_secs(150),
            read_count: 100,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            pool_size: 4,
            poll_interval: Duration::from_secs(1),
            ephemeral_retention: Duration::from_secs(60),
            tls: PostgresTls::default(),
        }
    }
}

/// Payloads up to this size go inline in a `NOTIFY` (whose limit is 8000 bytes).
const INLINE_PAYLOAD: usize = 7000;

/// How often a node deletes expired rows (on a heartbeat).
const CLEANUP_EVERY: Duration = Duration::from_secs(10);

type PgError = tokio_postgres::Error;

fn fail(message: impl std::fmt::Display) -> BackendError {
    BackendError::new(format!("postgres: {message}"))
}

fn pg_err(e: PgError) -> BackendError {
    if let Some(db) = e.as_db_error() {
        let message = format!("postgres: {db}");
        return BackendError::with_source(message, e);
    }
    let message = if tls::from_tls(&e) {
        format!("postgres: TLS: {}", tls::with_sources(&e))
    } else {
        format!("postgres: {}", tls::with_sources(&e))
    };
    BackendError::with_source(message, e)
}

/// Milliseconds, as a `bigint`.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The log id of an entry id (`n-0` is `n`); ids beyond `i64` are clamped.
fn log_id(id: Position) -> i64 {
    i64::try_from(id.seq).unwrap_or(i64::MAX)
}

/// 64-bit FNV-1a: stable across processes and versions, for channel and lock names.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The quoted table names.
#[derive(Debug, Clone)]
struct Names {
    log: String,
    log_at: String,
    counter: String,
    sessions: String,
    live: String,
    nodes: String,
    alive: String,
    listeners: String,
    ephemeral: String,
    log_channel: String,
    prefix: String,
}

impl Names {
    fn new(prefix: &str) -> Result<Self, BackendError> {
        if prefix.len() > 48 {
            return Err(BackendError::new(format!(
                "postgres: the table prefix {prefix:?} is longer than 48 bytes"
            )));
        }
        let q = |name: &str| format!("\"{}\"", format!("{prefix}{name}").replace('"', "\"\""));
        Ok(Names {
            log: q("log"),
            log_at: q("log_created_at"),
            counter: q("counter"),
            sessions: q("sessions"),
            live: q("live"),
            nodes: q("nodes"),
            alive: q("alive"),
            listeners: q("listeners"),
            ephemeral: q("ephemeral"),
            log_channel: channel(prefix, &["log"]),
            prefix: prefix.to_owned(),
        })
    }

    fn public_channel(&self, nsp: &str) -> String {
        channel(&self.prefix, &["public", nsp])
    }

    fn private_channel(&self, nsp: &str, uid: &str) -> String {
        channel(&self.prefix, &["private", nsp, uid])
    }
}

/// A channel name: short, lowercase, never needing more than plain quotes.
fn channel(prefix: &str, parts: &[&str]) -> String {
    let mut all = vec![prefix];
    all.extend_from_slice(parts);
    format!("tether_{:016x}", fnv(&all))
}

/// A pooled connection slot.
#[derive(Default)]
struct Slot {
    client: Option<Arc<Client>>,
    /// The last failed attempt to connect: when it ended, and why.
    failed: Option<(Instant, Arc<BackendError>)>,
}

/// Opens a connection and drives it on its own task.
async fn open(pg: &tls::Target, limit: Duration) -> Result<Client, BackendError> {
    let (client, conn) = tokio::time::timeout(limit, pg.connect())
        .await
        .map_err(|_| fail("connecting timed out"))?
        .map_err(pg_err)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("postgres: connection closed: {e}");
        }
    });
    Ok(client)
}

/// Connections for commands, each used by one call at a time (transactions need that),
/// replaced on the next call after a failure.
struct Pool {
    pg: tls::Target,
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Pool {
    /// Runs `f` on a connection, within the timeouts; a connection that fails or times
    /// out is dropped (which also rolls back a transaction it had open).
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, PgError>>,
    {
        let asked = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        let mut guard = None;
        for k in 0..n {
            if let Ok(g) = self.slots[(start + k) % n].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => tokio::time::timeout(self.timeout, self.slots[start % n].lock())
                .await
                .map_err(|_| fail("timed out waiting for a connection"))?,
        };
        let client = match guard.client.as_ref().filter(|c| !c.is_closed()) {
            Some(c) => c.clone(),
            None => {
                // An attempt that failed while this call waited answers for it too:
                // otherwise, while the server hangs, calls queue up behind each other's
                // attempts.
                if let Some((at, e)) = &guard.failed {
                    if *at >= asked {
                        return Err(BackendError::again(e));
                    }
                }
                match open(&self.pg, self.connect_timeout).await {
                    Ok(c) => {
                        let c = Arc::new(c);
                        guard.client = Some(c.clone());
                        guard.failed = None;
                        c
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        guard.client = None;
                        guard.failed = Some((Instant::now(), Arc::clone(&e)));
                        return Err(BackendError::again(&e));
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, f(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                guard.client = None;
                Err(pg_err(e))
            }
            Err(_) => {
                guard.client = None;
                Err(fail(format_args!("timed out after {:?}", self.timeout)))
            }
        }
    }
}

/// A request to the listener task: `LISTEN` to these channels, then answer.
type ListenRequest = (Vec<String>, oneshot::Sender<()>);

/// The `LISTEN` side: the channels, where messages go, and the readers to wake.
struct Listener {
    pg: tls::Target,
    names: Names,
    timeout: Duration,
    connect_timeout: Duration,
    /// Bumped on every log notification, and when notifications may have been missed.
    log_wake: watch::Sender<u64>,
    /// The channels of ephemeral messages, and where each one's messages go.
    channels: std::sync::Mutex<HashMap<String, EphemeralSink>>,
    requests: mpsc::Sender<ListenRequest>,
    /// Taken by the task when it starts.
    requests_rx: std::sync::Mutex<Option<mpsc::Receiver<ListenRequest>>>,
    started: AtomicBool,
    dropped: AtomicU64,
}

impl Listener {
    fn wake(&self) {
        self.log_wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn channels(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        all.push(self.names.log_channel.clone());
        all
    }

    /// Connects, listens to every channel, and forwards notifications through a bounded
    /// channel (the driver task waits when it is full).
    async fn connect(
        &self,
    ) -> Result<
        (
            Client,
            mpsc::Receiver<Notification>,
            tokio::task::JoinHandle<()>,
        ),
        BackendError,
    > {
        let (client, mut conn) = tokio::time::timeout(self.connect_timeout, self.pg.connect())
            .await
            .map_err(|_| fail("connecting timed out"))?
            .map_err(pg_err)?;
        let (tx, rx) = mpsc::channel(1024);
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("postgres listener: {e}");
                        return;
                    }
                }
            }
        });
        let channels = self.channels();
        let listening = listen_all(&client, &channels);
        match tokio::time::timeout(self.timeout, listening).await {
            Ok(Ok(())) => Ok((client, rx, driver)),
            Ok(Err(e)) => {
                driver.abort();
                Err(pg_err(e))
            }
            Err(_) => {
                driver.abort();
                Err(fail("LISTEN timed out"))
            }
        }
    }

    async fn handle(&self, client: &Client, n: Notification) {
        if n.channel() == self.names.log_channel {
            self.wake();
            return;
        }
        let payload = n.payload();
        let text = if let Some(inline) = payload.strip_prefix('i') {
            inline.to_owned()
        } else if let Some(id) = payload
            .strip_prefix('r')
            .and_then(|s| s.parse::<i64>().ok())
        {
            let sql = format!("SELECT payload FROM {} WHERE id = $1", self.names.ephemeral);
            match tokio::time::timeout(self.timeout, client.query_opt(&sql, &[&id])).await {
                Ok(Ok(Some(row))) => match row.try_get::<_, String>(0) {
                    Ok(t) => t,
                    Err(_) => return,
                },
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::debug!("postgres listener: a stored message: {e}");
                    return;
                }
                Err(_) => return,
            }
        } else {
            return;
        };
        let Some(m) = wire::from_slice::<Ephemeral>(text.as_bytes()) else {
            return;
        };
        let sink = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(n.channel())
            .cloned();
        if let Some(sink) = sink {
            if sink.try_send(m).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(
                        "postgres listener: request dropped, the node is busy ({} so far)",
                        n + 1
                    );
                }
            }
        }
    }
}

async fn listen_all(client: &Client, channels: &[String]) -> Result<(), PgError> {
    if channels.is_empty() {
        return Ok(());
    }
    let sql: String = channels
        .iter()
        .map(|c| format!("LISTEN \"{c}\";"))
        .collect();
    client.batch_execute(&sql).await
}

/// Keeps a connection listening to `Listener::channels`, reconnecting with backoff.
async fn listener_task(
    state: Weak<Listener>,
    mut requests: mpsc::Receiver<ListenRequest>,
    mut stop: watch::Receiver<()>,
) {
    let mut failures: u32 = 0;
    loop {
        let Some(l) = state.upgrade() else { return };
        let connected = tokio::select! {
            r = l.connect() => r,
            _ = stop.changed() => return,
        };
        let timeout = l.timeout;
        match connected {
            Ok((client, mut notes, driver)) => {
                if failures > 0 {
                    tracing::info!("postgres listener: reconnected");
                }
                failures = 0;
                // Notifications may have been missed while disconnected.
                l.wake();
                drop(l);
                let mut ping = tokio::time::interval(Duration::from_secs(5));
                ping.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.changed() => { driver.abort(); return; }
                        n = notes.recv() => {
                            let Some(n) = n else { break };
                            let Some(l) = state.upgrade() else { driver.abort(); return };
                            l.handle(&client, n).await;
                        }
                        r = requests.recv() => {
                            let Some((channels, ack)) = r else { driver.abort(); return };
                            let listened =
                                tokio::time::timeout(timeout, listen_all(&client, &channels)).await;
                            let _ = ack.send(());
                            if !matches!(listened, Ok(Ok(()))) {
                                break;
                            }
                        }
                        _ = ping.tick() => {
                            // A stalled server closes nothing: ask it something.
                            let r = tokio::time::timeout(timeout, client.simple_query("SELECT 1")).await;
                            if !matches!(r, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                driver.abort();
                tracing::warn!("postgres listener: connection lost; reconnecting");
                if let Some(l) = state.upgrade() {
                    l.wake();
                }
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!("postgres listener: {e}; retrying");
                }
                drop(l);
            }
        }
        failures += 1;
        let pause =
            tokio::time::sleep(Duration::from_millis((50u64 << failures.min(5)).min(2_000)));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                _ = stop.changed() => return,
                // Channels are listened to on reconnection; do not keep callers waiting.
                r = requests.recv() => match r {
                    Some((_, ack)) => { let _ = ack.send(()); }
                    None => return,
                },
            }
        }
    }
}

/// The PostgreSQL [`ClusterBackend`] (see the [crate documentation](crate)).
pub struct PostgresBackend {
    config: PostgresConfig,
    names: Names,
    pool: Pool,
    listener: Arc<Listener>,
    /// The heartbeat's life, as the last `heartbeat` call gave it, for the expiry of
    /// listener registrations made before the next heartbeat.
    heartbeat_ttl_ms: AtomicU64,
    last_trim: std::sync::Mutex<Option<Instant>>,
    last_cleanup: std::sync::Mutex<Option<Instant>>,
    /// Ends the listener task when the backend is dropped.
    _stop: watch::Sender<()>,
    stop: watch::Receiver<()>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("config", &self.config)
            .finish()
    }
}

/// Whether `last` is older than `every` (or unset); if so, sets it to now.
fn due(last: &std::sync::Mutex<Option<Instant>>, every: Duration) -> bool {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    match *last {
        Some(t) if t.elapsed() < every => false,
        _ => {
            *last = Some(Instant::now());
            true
        }
    }
}

fn record(row: &Row) -> Option<Record> {
    let id: i64 = row.try_get(0).ok()?;
    let uid: String = row.try_get(1).ok()?;
    let seq: Option<i64> = row.try_get(2).ok()?;
    let data: String = row.try_get(4).ok()?;
    Some(Record {
        id: Position::new(0, u64::try_from(id).ok()?),
        uid,
        seq: seq.and_then(|s| u64::try_from(s).ok()),
        message: wire::message(data.as_bytes()),
    })
}

impl PostgresBackend {
    /// Connects to the database at `url` (`postgres://user@host:port/db` or a key=value
    /// string) and creates the tables if they are missing.
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<Self, BackendError> {
        let (mut pg, tls) = tls::configure(url, &config.tls)?;
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("tether");
        }
        let pg = tls::Target { config: pg, tls };
        let names = Names::new(&config.prefix)?;
        let (stop_tx, stop) = watch::channel(());
        let (requests, requests_rx) = mpsc::channel(64);
        let backend = PostgresBackend {
            pool: Pool {
                pg: pg.clone(),
                slots: (0..config.pool_size.max(1))
                    .map(|_| Mutex::new(Slot::default()))
                    .collect(),
                next: AtomicUsize::new(0),
                timeout: config.command_timeout,
                connect_timeout: config.connect_timeout,
            },
            listener: Arc::new(Listener {
                pg,
                names: names.clone(),
                timeout: config.command_timeout,
                connect_timeout: config.connect_timeout,
                log_wake: watch::channel(0).0,
                channels: std::sync::Mutex::new(HashMap::new()),
                requests,
                requests_rx: std::sync::Mutex::new(Some(requests_rx)),
                started: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
            }),
            names,
            heartbeat_ttl_ms: AtomicU64::new(7_000),
            last_trim: std::sync::Mutex::new(None),
            last_cleanup: std::sync::Mutex::new(None),
            _stop: stop_tx,
            stop,
            config,
        };
        backend.create_schema().await?;
        Ok(backend)
    }

    async fn create_schema(&self) -> Result<(), BackendError> {
        let n = &self.names;
        // Nodes starting together would race on the catalog: one at a time.
        let lock = fnv(&[&n.prefix, "schema"]) as i64;
        // Creating an index takes a lock on its table even when the index exists, which
        // would deadlock with other nodes' appends: nothing is created when the last
        // table exists (it is created last).
        let exists = format!(
            "SELECT to_regclass('{}') IS NOT NULL",
            n.ephemeral.replace('\'', "''")
        );
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {log} (
                id bigint PRIMARY KEY, uid text NOT NULL, seq bigint, nsp text NOT NULL,
                kind text NOT NULL, data text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp());
            CREATE INDEX IF NOT EXISTS {log_at} ON {log} (created_at);
            CREATE TABLE IF NOT EXISTS {counter} (k int PRIMARY KEY, last bigint NOT NULL);
            INSERT INTO {counter} VALUES
                (1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
                ON CONFLICT DO NOTHING;
            CREATE TABLE IF NOT EXISTS {sessions} (
                pid text PRIMARY KEY, nsp text NOT NULL, session text NOT NULL,
                expires_at timestamptz NOT NULL);
            CREATE TABLE IF NOT EXISTS {live} (
                pid text PRIMARY KEY, node text NOT NULL, nsp text NOT NULL,
                session text NOT NULL, window_ms bigint NOT NULL,
                expires_at timestamptz NOT NULL);
            CREATE TABLE IF NOT EXISTS {nodes} (
                uid text PRIMARY KEY, expires_at timestamptz NOT NULL,
                last_seen timestamptz NOT NULL, life_ms bigint NOT NULL);
            CREATE TABLE IF NOT EXISTS {alive} (
                pid text PRIMARY KEY, expires_at timestamptz NOT NULL);
            CREATE TABLE IF NOT EXISTS {listeners} (
                uid text NOT NULL, nsp text NOT NULL, expires_at timestamptz NOT NULL,
                PRIMARY KEY (uid, nsp));
            CREATE TABLE IF NOT EXISTS {ephemeral} (
                id bigserial PRIMARY KEY, payload text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp());",
            log = n.log,
            log_at = n.log_at,
            counter = n.counter,
            sessions = n.sessions,
            live = n.live,
            nodes = n.nodes,
            alive = n.alive,
            listeners = n.listeners,
            ephemeral = n.ephemeral,
        );
        self.pool
            .run(|c| async move {
                if c.query_one(&exists, &[]).await?.try_get(0)? {
                    return Ok(());
                }
                // Nodes starting together would race on the catalog: one at a time.
                c.batch_execute("BEGIN").await?;
                c.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
                    .await?;
                if !c.query_one(&exists, &[]).await?.try_get::<_, bool>(0)? {
                    c.batch_execute(&create).await?;
                }
                c.batch_execute("COMMIT").await
            })
            .await
    }

    fn start_listener(&self) {
        if self.listener.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let rx = self
            .listener
            .requests_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = rx {
            tokio::spawn(listener_task(
                Arc::downgrade(&self.listener),
                rx,
                self.stop.clone(),
            ));
        }
    }

    async fn select_records(
        &self,
        sql: String,
        params: (i64, i64, i64),
    ) -> Result<Vec<Record>, BackendError> {
        let rows = self
            .pool
            .run(|c| async move {
                let (a, b, n) = params;
                c.query(&sql, &[&a, &b, &n]).await
            })
            .await?;
        Ok(rows.iter().filter_map(record).collect())
    }

    async fn read_once(&self, after: i64) -> Result<Vec<Record>, BackendError> {
        let sql = format!(
            "SELECT id, uid, seq, kind, data FROM {} WHERE id > $1 AND id <= $2 \
             ORDER BY id LIMIT $3",
            self.names.log
        );
        let count = i64::try_from(self.config.read_count.max(1)).unwrap_or(i64::MAX);
        self.select_records(sql, (after, i64::MAX, count)).await
    }
}

impl LogBackend for PostgresBackend {
    fn append<'a>(
        &'a self,
        uid: &'a str,
        batch: &'a [(u64, ClusterMessage)],
    ) -> BoxFuture<'a, Result<Vec<Position>, BackendError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let n = i64::try_from(batch.len()).unwrap_or(i64::MAX);
            let mut seqs = Vec::with_capacity(batch.len());
            let mut nsps = Vec::with_capacity(batch.len());
            let mut kinds = Vec::with_capacity(batch.len());
            let mut datas = Vec::with_capacity(batch.len());
            for (seq, m) in batch {
                seqs.push(i64::try_from(*seq).unwrap_or(i64::MAX));
                nsps.push(m.nsp().to_owned());
                kinds.push(m.kind().to_owned());
                datas.push(wire::to_json(m));
            }
            let names = &self.names;
            let take_ids = format!(
                "UPDATE {} SET last = last + $1 WHERE k = 1 RETURNING last",
                names.counter
            );
            let insert = format!(
                "INSERT INTO {} (id, uid, seq, nsp, kind, data) \
                 SELECT $1 + t.ord, $2, t.seq, t.nsp, t.kind, t.data \
                 FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[]) \
                 WITH ORDINALITY AS t(seq, nsp, kind, data, ord)",
                names.log
            );
            let trim = due(&self.last_trim, Duration::from_secs(1)).then(|| {
                format!(
                    "DELETE FROM {} WHERE created_at < clock_timestamp() - $1::bigint * interval '1 millisecond'",
                    names.log
                )
            });
            let retention = ms(self.config.retention);
            let channel = names.log_channel.clone();
            let last = self
                .pool
                .run(|c| async move {
                    c.batch_execute("BEGIN").await?;
                    let row = c.query_one(&take_ids, &[&n]).await?;
                    let last: i64 = row.try_get(0)?;
                    let first = last - n;
                    c.execute(&insert, &[&first, &uid, &seqs, &nsps, &kinds, &datas])
                        .await?;
                    if let Some(trim) = trim {
                        c.execute(&trim, &[&retention]).await?;
                    }
                    c.execute("SELECT pg_notify($1, '')", &[&channel]).await?;
                    c.batch_execute("COMMIT").await?;
                    Ok(last)
                })
                .await?;
            let first = last - n;
            Ok((1..=n)
                .filter_map(|k| u64::try_from(first + k).ok())
                .map(|ms| Position::new(0, ms))
                .collect())
        })
    }

    fn read_after(
        &self,
        after: Position,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(async move {
            self.start_listener();
            let after = log_id(after);
            let deadline = tokio::time::Instant::now() + block;
            loop {
                let mut wake = self.listener.log_wake.subscribe();
                let got = self.read_once(after).await?;
                let now = tokio::time::Instant::now();
                if !got.is_empty() || now >= deadline {
                    return Ok(got);
                }
                let wait = (deadline - now).min(self.config.poll_interval);
                tokio::select! {
                    _ = wake.changed() => {}
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
        Box::pin(async move {
            let sql = format!(
                "SELECT id, uid, seq, kind, data FROM {} WHERE id > $1 AND id <= $2 \
                 ORDER BY id LIMIT $3",
                self.names.log
            );
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.select_records(sql, (log_id(after), log_id(upto), count))
                .await
        })
    }

    fn recent(
        &self,
        upto: Position,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT id, uid, seq, kind, data FROM {} WHERE id > $1 AND id <= $2 \
                 ORDER BY id DESC LIMIT $3",
                self.names.log
            );
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.select_records(sql, (i64::MIN, log_id(upto), count))
                .await
        })
    }

    fn offset_form(&self) -> OffsetForm {
        OffsetForm::SeqEpoch
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Position, BackendError>> {
        Box::pin(async move {
            let sql = format!("SELECT max(id) FROM {}", self.names.log);
            let last: Option<i64> = self
                .pool
                .run(|c| async move { c.query_one(&sql, &[]).await?.try_get(0) })
                .await?;
            Ok(Position::new(
                0,
                last.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            ))
        })
    }
}

impl SessionBackend for PostgresBackend {
    fn apply<'a>(
        &'a self,
        uid: &'a str,
        ops: &'a [SessionOp],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            if ops.is_empty() {
                return Ok(());
            }
            let n = &self.names;
            let put_live = format!(
                "INSERT INTO {live} (pid, node, nsp, session, window_ms, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, clock_timestamp() + $6::bigint * interval '1 millisecond') \
                 ON CONFLICT (pid) DO UPDATE SET node = excluded.node, nsp = excluded.nsp, \
                 session = excluded.session, window_ms = excluded.window_ms, \
                 expires_at = excluded.expires_at",
                live = n.live
            );
            let clear_alive = format!("DELETE FROM {} WHERE pid = $1", n.alive);
            let owner = format!(
                "SELECT node FROM {} WHERE pid = $1 AND expires_at > clock_timestamp() FOR UPDATE",
                n.live
            );
            let delete_live = format!("DELETE FROM {} WHERE pid = $1", n.live);
            let keep = format!(
                "INSERT INTO {s} (pid, nsp, session, expires_at) \
                 VALUES ($1, $2, $3, clock_timestamp() + $4::bigint * interval '1 millisecond') \
                 ON CONFLICT (pid) DO UPDATE SET nsp = excluded.nsp, \
                 session = excluded.session, expires_at = excluded.expires_at",
                s = n.sessions
            );
            // A record this node owns gets a longer life; a missing one (or one that
            // expired) is written; another node's is left alone.
            let refresh = format!(
                "INSERT INTO {live} AS l (pid, node, nsp, session, window_ms, expires_at) \
                 SELECT t.pid, $1, $2, t.session, $3, \
                   clock_timestamp() + $4::bigint * interval '1 millisecond' \
                 FROM unnest($5::text[], $6::text[]) AS t(pid, session) \
                 ON CONFLICT (pid) DO UPDATE SET \
                   expires_at = excluded.expires_at, \
                   nsp = CASE WHEN l.expires_at <= clock_timestamp() THEN excluded.nsp ELSE l.nsp END, \
                   session = CASE WHEN l.expires_at <= clock_timestamp() THEN excluded.session ELSE l.session END, \
                   window_ms = CASE WHEN l.expires_at <= clock_timestamp() THEN excluded.window_ms ELSE l.window_ms END, \
                   node = excluded.node \
                 WHERE l.node = excluded.node OR l.expires_at <= clock_timestamp()",
                live = n.live
            );
            let mark_alive = format!(
                "INSERT INTO {a} (pid, expires_at) \
                 VALUES ($1, clock_timestamp() + $2::bigint * interval '1 millisecond') \
                 ON CONFLICT (pid) DO UPDATE SET expires_at = excluded.expires_at",
                a = n.alive
            );
            let uid = uid.to_owned();
            self.pool
                .run(|c| async move {
                    c.batch_execute("BEGIN").await?;
                    for op in ops {
                        match op {
                            SessionOp::PutLive {
                                nsp,
                                session,
                                ttl,
                                window,
                            } => {
                                c.execute(
                                    &put_live,
                                    &[
                                        &session.pid,
                                        &uid,
                                        nsp,
                                        &wire::to_json(session),
                                        &ms(*window),
                                        &ms(*ttl),
                                    ],
                                )
                                .await?;
                            }
                            SessionOp::ClearAlive { pid } => {
                                c.execute(&clear_alive, &[pid]).await?;
                            }
                            SessionOp::Retire { nsp, pid, keep: k } => {
                                // Only this node's record: another node may have taken
                                // the session over meanwhile (this node was cut off and
                                // looked dead) and written its own; then this node
                                // keeps nothing either.
                                let row = c.query_opt(&owner, &[pid]).await?;
                                let other = match row {
                                    Some(r) => r.try_get::<_, String>(0)? != uid,
                                    None => false,
                                };
                                if other {
                                    continue;
                                }
                                c.execute(&delete_live, &[pid]).await?;
                                c.execute(&clear_alive, &[pid]).await?;
                                if let Some((session, ttl)) = k {
                                    c.execute(
                                        &keep,
                                        &[pid, nsp, &wire::to_json(session), &ms(*ttl)],
                                    )
                                    .await?;
                                }
                            }
                            SessionOp::RefreshLive {
                                nsp,
                                sessions,
                                ttl,
                                window,
                            } => {
                                if sessions.is_empty() {
                                    continue;
                                }
                                // Rows locked in one order by every node: no deadlocks.
                                let mut sorted: Vec<&tether_backend::Session> =
                                    sessions.iter().collect();
                                sorted.sort_by(|a, b| a.pid.cmp(&b.pid));
                                sorted.dedup_by(|a, b| a.pid == b.pid);
                                let pids: Vec<&str> =
                                    sorted.iter().map(|s| s.pid.as_str()).collect();
                                let encoded: Vec<String> =
                                    sorted.iter().map(wire::to_json).collect();
                                c.execute(
                                    &refresh,
                                    &[&uid, nsp, &ms(*window), &ms(*ttl), &pids, &encoded],
                                )
                                .await?;
                            }
                            SessionOp::MarkAlive { pid, ttl } => {
                                c.execute(&mark_alive, &[pid, &ms(*ttl)]).await?;
                            }
                        }
                    }
                    c.batch_execute("COMMIT").await
                })
                .await
        })
    }

    fn heartbeat<'a>(
        &'a self,
        uid: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let life = ms(ttl).max(1);
            self.heartbeat_ttl_ms
                .store(life.unsigned_abs(), Ordering::Relaxed);
            let n = &self.names;
            let beat = format!(
                "INSERT INTO {nodes} (uid, expires_at, last_seen, life_ms) \
                 VALUES ($1, clock_timestamp() + $2::bigint * interval '1 millisecond', \
                   clock_timestamp(), $2) \
                 ON CONFLICT (uid) DO UPDATE SET expires_at = excluded.expires_at, \
                 last_seen = excluded.last_seen, life_ms = excluded.life_ms",
                nodes = n.nodes
            );
            let listeners = format!(
                "UPDATE {} SET expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond' \
                 WHERE uid = $1",
                n.listeners
            );
            // Expired rows are only ever ignored; deleting them now and then keeps the
            // tables small. Dead nodes' heartbeats stay a day, for their sockets' windows.
            let cleanup = due(&self.last_cleanup, CLEANUP_EVERY).then(|| {
                format!(
                    "DELETE FROM {sessions} WHERE expires_at < clock_timestamp();
                     DELETE FROM {live} WHERE expires_at < clock_timestamp();
                     DELETE FROM {alive} WHERE expires_at < clock_timestamp();
                     DELETE FROM {listeners} WHERE expires_at < clock_timestamp();
                     DELETE FROM {nodes} WHERE last_seen < clock_timestamp() - interval '1 day';
                     DELETE FROM {ephemeral} WHERE created_at < clock_timestamp() - interval '{eph} milliseconds';",
                    sessions = n.sessions,
                    live = n.live,
                    alive = n.alive,
                    listeners = n.listeners,
                    nodes = n.nodes,
                    ephemeral = n.ephemeral,
                    eph = ms(self.config.ephemeral_retention),
                )
            });
            self.pool
                .run(|c| async move {
                    c.execute(&beat, &[&uid, &life]).await?;
                    c.execute(&listeners, &[&uid, &life]).await?;
                    if let Some(cleanup) = cleanup {
                        c.batch_execute(&cleanup).await?;
                    }
                    Ok(())
                })
                .await
        })
    }

    fn take_session<'a>(
        &'a self,
        nsp: &'a str,
        pid: &'a str,
        offset: Option<Position>,
    ) -> BoxFuture<'a, Result<TakeOutcome, BackendError>> {
        Box::pin(async move {
            let n = &self.names;
            let kept = format!(
                "SELECT nsp, session FROM {} WHERE pid = $1 AND expires_at > clock_timestamp() \
                 FOR UPDATE",
                n.sessions
            );
            let delete_kept = format!("DELETE FROM {} WHERE pid = $1", n.sessions);
            let live = format!(
                "SELECT l.node, l.nsp, l.session, \
                   coalesce(n.expires_at > clock_timestamp(), false), \
                   coalesce(clock_timestamp() - n.last_seen > \
                     (l.window_ms + n.life_ms) * interval '1 millisecond', false) \
                 FROM {live} l LEFT JOIN {nodes} n ON n.uid = l.node \
                 WHERE l.pid = $1 AND l.expires_at > clock_timestamp() \
                 FOR UPDATE OF l",
                live = n.live,
                nodes = n.nodes
            );
            let delete_live = format!("DELETE FROM {} WHERE pid = $1", n.live);
            let in_log = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1)", n.log);
            // `n-0` is entry `n`; any other id is not in this log.
            let offset = offset.map(|o| (o.epoch == 0).then(|| log_id(o)));
            self.pool
                .run(|c| async move {
                    let offset_ok = |c: Arc<Client>| {
                        let in_log = in_log.clone();
                        async move {
                            match offset {
                                None => Ok(true),
                                Some(None) => Ok(false),
                                Some(Some(id)) => c.query_one(&in_log, &[&id]).await?.try_get(0),
                            }
                        }
                    };
                    c.batch_execute("BEGIN").await?;
                    // The live record first: a Retire locks it before it writes the kept
                    // session, so a take that meets a Retire in flight waits for it and
                    // then sees the kept session (the next statement's snapshot), rather
                    // than neither.
                    let live_row = c.query_opt(&live, &[&pid]).await?;
                    if let Some(row) = c.query_opt(&kept, &[&pid]).await? {
                        let owner: String = row.try_get(0)?;
                        let session: String = row.try_get(1)?;
                        if owner != nsp {
                            return rollback(&c, TakeOutcome::WrongNamespace).await;
                        }
                        if !offset_ok(c.clone()).await? {
                            return rollback(&c, TakeOutcome::UnknownOffset).await;
                        }
                        c.execute(&delete_kept, &[&pid]).await?;
                        c.batch_execute("COMMIT").await?;
                        return Ok(taken(&session));
                    }
                    let Some(row) = live_row else {
                        return rollback(&c, TakeOutcome::NotFound).await;
                    };
                    let node: String = row.try_get(0)?;
                    let owner: String = row.try_get(1)?;
                    let session: String = row.try_get(2)?;
                    let alive: bool = row.try_get(3)?;
                    let lapsed: bool = row.try_get(4)?;
                    if owner != nsp {
                        return rollback(&c, TakeOutcome::WrongNamespace).await;
                    }
                    if alive {
                        return rollback(&c, TakeOutcome::HolderAlive(node)).await;
                    }
                    if lapsed {
                        // Dead for longer than the socket's window: gone.
                        c.execute(&delete_live, &[&pid]).await?;
                        c.batch_execute("COMMIT").await?;
                        return Ok(TakeOutcome::NotFound);
                    }
                    if !offset_ok(c.clone()).await? {
                        return rollback(&c, TakeOutcome::UnknownOffset).await;
                    }
                    c.execute(&delete_live, &[&pid]).await?;
                    c.batch_execute("COMMIT").await?;
                    Ok(taken(&session))
                })
                .await
        })
    }

    fn is_marked_alive<'a>(&'a self, pid: &'a str) -> BoxFuture<'a, Result<bool, BackendError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE pid = $1 AND expires_at > clock_timestamp())",
                self.names.alive
            );
            self.pool
                .run(|c| async move { c.query_one(&sql, &[&pid]).await?.try_get(0) })
                .await
        })
    }
}

impl BusBackend for PostgresBackend {
    fn send_ephemeral<'a>(
        &'a self,
        to: Option<&'a str>,
        message: &'a Ephemeral,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let channel = match to {
                Some(uid) => self.names.private_channel(&message.nsp, uid),
                None => self.names.public_channel(&message.nsp),
            };
            let payload = wire::to_json(message);
            if payload.len() <= INLINE_PAYLOAD {
                let inline = format!("i{payload}");
                return self
                    .pool
                    .run(|c| async move {
                        c.execute("SELECT pg_notify($1, $2)", &[&channel, &inline])
                            .await
                            .map(drop)
                    })
                    .await;
            }
            let store = format!(
                "WITH stored AS (INSERT INTO {} (payload) VALUES ($2) RETURNING id) \
                 SELECT pg_notify($1, 'r' || id::text) FROM stored",
                self.names.ephemeral
            );
            self.pool
                .run(|c| async move { c.execute(&store, &[&channel, &payload]).await.map(drop) })
                .await
        })
    }

    fn listeners<'a>(&'a self, nsp: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT count(*) FROM {} WHERE nsp = $1 AND expires_at > clock_timestamp()",
                self.names.listeners
            );
            let count: i64 = self
                .pool
                .run(|c| async move { c.query_one(&sql, &[&nsp]).await?.try_get(0) })
                .await?;
            Ok(usize::try_from(count).unwrap_or(0))
        })
    }

    fn listen<'a>(
        &'a self,
        uid: &'a str,
        nsp: &'a str,
        sink: EphemeralSink,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let channels = vec![
                self.names.public_channel(nsp),
                self.names.private_channel(nsp, uid),
            ];
            self.listener
                .channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(channels.iter().map(|c| (c.clone(), sink.clone())));
            self.start_listener();
            // Listening before this returns: a request sent right after reaches this node.
            let (ack, acked) = oneshot::channel();
            if self.listener.requests.try_send((channels, ack)).is_ok() {
                let _ = tokio::time::timeout(self.config.command_timeout, acked).await;
            }
            // Counted by `listeners` for as long as the node's heartbeat lasts.
            let sql = format!(
                "INSERT INTO {} (uid, nsp, expires_at) \
                 VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (uid, nsp) DO UPDATE SET expires_at = excluded.expires_at",
                self.names.listeners
            );
            let life =
                i64::try_from(self.heartbeat_ttl_ms.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
            self.pool
                .run(|c| async move { c.execute(&sql, &[&uid, &nsp, &life]).await.map(drop) })
                .await
        })
    }
}

fn taken(session: &str) -> TakeOutcome {
    match wire::from_slice(session.as_bytes()) {
        Some(s) => TakeOutcome::Taken(s),
        None => TakeOutcome::NotFound,
    }
}

async fn rollback(c: &Client, outcome: TakeOutcome) -> Result<TakeOutcome, PgError> {
    c.batch_execute("ROLLBACK").await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_short_distinct_and_stable() {
        let n = Names::new("tether_").expect("names");
        let a = n.public_channel("/");
        assert_eq!(a, n.public_channel("/"));
        assert_ne!(a, n.public_channel("/chat"));
        assert_ne!(a, n.private_channel("/", "node"));
        assert_ne!(a, n.log_channel);
        assert_ne!(
            n.private_channel("/a", "b"),
            n.private_channel("/", "ab"),
            "parts are separated"
        );
        let long = "x".repeat(500);
        assert!(n.private_channel(&long, &long).len() < 64);
        assert!(Names::new(&"p".repeat(49)).is_err());
        assert_eq!(
            Names::new("we\"ird").expect("names").log,
            "\"we\"\"irdlog\""
        );
    }

    #[test]
    fn entry_ids_map_to_log_ids() {
        assert_eq!(log_id(Position::new(0, 17)), 17);
        assert_eq!(log_id(Position::new(0, u64::MAX)), i64::MAX);
    }
}
