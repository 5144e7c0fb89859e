//! The backend interface and its error.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::{
    ClusterMessage, Ephemeral, EphemeralSink, OffsetForm, Position, Record, SessionOp, TakeOutcome,
};

/// A boxed future, as the backend trait returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend error: unreachable, timed out, or an unexpected answer; it keeps the error
/// that caused it, if any, as its [`source`](std::error::Error::source).
///
/// ```
/// use tether_backend::BackendError;
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
/// let e = BackendError::with_source("read", io);
/// assert_eq!(e.to_string(), "cluster backend: read");
/// assert!(std::error::Error::source(&e).is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("cluster backend: {message}")]
pub struct BackendError {
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl BackendError {
    /// An error that says `message`.
    pub fn new(message: impl Into<String>) -> Self {
        BackendError {
            message: message.into(),
            source: None,
        }
    }

    /// An error that says `message`, caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        BackendError {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The same failure again, for another caller (a backend that remembers a failed
    /// connection attempt answers the callers that waited for it with it): the message,
    /// with the first error as its source.
    pub fn again(first: &std::sync::Arc<BackendError>) -> Self {
        BackendError::with_source(first.message.clone(), std::sync::Arc::clone(first))
    }

    /// What went wrong, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a backend provides to make several nodes one: a log, sessions and a bus. It is
/// implemented for every type that implements the three.
pub trait ClusterBackend: LogBackend + SessionBackend + BusBackend {}

impl<T: LogBackend + SessionBackend + BusBackend> ClusterBackend for T {}

/// The cluster log: one order of messages that every node reads, whose positions are the
/// offsets clients see.
pub trait LogBackend: Send + Sync + 'static {
    /// Appends messages in order, returning their ids.
    fn append<'a>(
        &'a self,
        uid: &'a str,
        batch: &'a [(u64, ClusterMessage)],
    ) -> BoxFuture<'a, Result<Vec<Position>, BackendError>>;
    /// Waits up to `block` for entries after `after`.
    fn read_after(
        &self,
        after: Position,
        block: Duration,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>>;
    /// Entries in `(after, upto]`, at most `count`.
    fn range(
        &self,
        after: Position,
        upto: Position,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>>;
    /// The newest entries up to `upto` (inclusive), at most `count`, newest first.
    fn recent(
        &self,
        upto: Position,
        count: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, BackendError>>;
    /// The id of the newest entry (zero when the log is empty).
    fn last_id(&self) -> BoxFuture<'_, Result<Position, BackendError>>;
    /// How clients see this log's positions as offsets ([`OffsetForm::EpochSeq`]).
    fn offset_form(&self) -> OffsetForm {
        OffsetForm::EpochSeq
    }
}

/// Sessions: live records of connected sockets, kept sessions, node heartbeats and alive
/// marks, with the one-shot take of a session.
pub trait SessionBackend: Send + Sync + 'static {
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
        offset: Option<Position>,
    ) -> BoxFuture<'a, Result<TakeOutcome, BackendError>>;
    /// Whether the holder of `pid` marked it alive (see [`SessionOp::MarkAlive`]).
    fn is_marked_alive<'a>(&'a self, pid: &'a str) -> BoxFuture<'a, Result<bool, BackendError>>;
}

/// The bus: ephemeral requests and answers between nodes (fetch_sockets, broadcasts with
/// acks, server-side emits). Its methods fail unless implemented.
pub trait BusBackend: Send + Sync + 'static {
    /// Sends an ephemeral message to every node listening to its namespace (`to` is
    /// `None`, the sender included) or to the node `to`. Nothing is kept: a node that is
    /// not listening misses it.
    fn send_ephemeral<'a>(
        &'a self,
        to: Option<&'a str>,
        message: &'a Ephemeral,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let _ = (to, message);
        Box::pin(async { Err(BackendError::new("ephemeral messages are not supported")) })
    }

    /// How many nodes listen to the ephemeral messages of `nsp`, this one included.
    fn listeners<'a>(&'a self, nsp: &'a str) -> BoxFuture<'a, Result<usize, BackendError>> {
        let _ = nsp;
        Box::pin(async { Err(BackendError::new("ephemeral messages are not supported")) })
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
        Box::pin(async { Err(BackendError::new("ephemeral messages are not supported")) })
    }
}
