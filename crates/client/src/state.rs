//! The types the handles and the manager task share: the commands a handle sends
//! ([`Cmd`]), what the manager hands to a namespace's dispatch task ([`Dispatch`]), a
//! namespace to connect ([`NewNamespace`]), and the state both sides read
//! ([`NsShared`], [`ManagerShared`]).
//!
//! Nothing here depends on the handles or on the manager: both import this module.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tether_proto::Payload;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::event::{AckSink, Event, Lifecycle, Session};
use crate::transport::Transport;

/// A command from the API to the manager task.
pub(crate) enum Cmd {
    Emit {
        nsp: String,
        event: String,
        payload: Payload,
        volatile: bool,
        ack: Option<(Duration, oneshot::Sender<Result<Payload>>)>,
    },
    Ack {
        nsp: String,
        id: u64,
        payload: Payload,
    },
    AddNamespace {
        ns: NewNamespace,
        reply: oneshot::Sender<Result<()>>,
    },
    Disconnect {
        nsp: String,
        reply: oneshot::Sender<()>,
    },
    Close {
        reply: Option<oneshot::Sender<()>>,
    },
    AckTimeout {
        nsp: String,
        id: u64,
    },
}

/// What the dispatch task of a namespace delivers, in the order the manager saw it: events
/// and lifecycle events go to the handlers; acknowledgements and `connect()` results go to
/// the callers waiting for them. Completions travel the same queue as events, so that an
/// ack never overtakes an event the server sent before it, and `connect()` returns after
/// the first connect handlers ran.
pub(crate) enum Dispatch {
    Event(Event),
    Lifecycle(Lifecycle),
    Ack(oneshot::Sender<Result<Payload>>, Result<Payload>),
    Ready(oneshot::Sender<Result<()>>, Result<()>),
    /// A session that was not recovered: a new pid (or none), no offset yet.
    NewSession(Option<String>),
}

/// A namespace that a builder wants connected.
pub(crate) struct NewNamespace {
    pub shared: Arc<NsShared>,
    pub auth: Auth,
    pub retries: u32,
    pub ack_timeout: Option<Duration>,
    pub session: Option<Session>,
    pub dispatch: mpsc::UnboundedSender<Dispatch>,
}

/// A function that computes the `auth` data on every connection attempt.
pub(crate) type AuthFn = Arc<dyn Fn() -> Value + Send + Sync + 'static>;

/// The `auth` data of a namespace: none, fixed, or computed on every attempt.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Static(serde_json::Map<String, Value>),
    Fn(AuthFn),
}

impl Auth {
    /// The auth data for one attempt.
    pub(crate) fn eval(&self) -> serde_json::Map<String, Value> {
        match self {
            Auth::None => serde_json::Map::new(),
            Auth::Static(m) => m.clone(),
            Auth::Fn(f) => match f() {
                Value::Object(m) => m,
                Value::Null => serde_json::Map::new(),
                other => {
                    tracing::warn!(?other, "auth function returned a non-object; ignored");
                    serde_json::Map::new()
                }
            },
        }
    }
}

/// What a [`Client`](crate::Client) can see of its namespace.
#[derive(Debug, Default, Clone)]
pub(crate) struct Status {
    pub active: bool,
    pub connected: bool,
    pub sid: Option<String>,
    pub pid: Option<String>,
    /// The pid and the offset of the last event whose handlers ran (kept by the
    /// dispatch task, so it matches what the handlers saw).
    pub session_pid: Option<String>,
    pub offset: Option<Arc<str>>,
    pub recovered: bool,
}

/// The state [`Client::wait_connected`](crate::Client::wait_connected) watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conn {
    Down,
    Up,
    Closed,
}

/// One namespace's state, shared by the manager, the dispatch task and the handles (the
/// handlers are not here: they belong to the handles, see `client::Namespace`).
pub(crate) struct NsShared {
    pub nsp: String,
    /// What [`Client::connect`](crate::Client::connect) needs to connect the namespace again.
    pub auth: Auth,
    pub retries: u32,
    pub ack_timeout: Option<Duration>,
    pub status: Mutex<Status>,
    /// Up once the connect handlers ran, down once the disconnect handlers ran.
    pub conn: tokio::sync::watch::Sender<Conn>,
}

impl NsShared {
    /// Moves the watched state, never out of `Closed`.
    pub(crate) fn set_conn(&self, c: Conn) {
        self.conn.send_if_modified(|cur| {
            if *cur == Conn::Closed || *cur == c {
                false
            } else {
                *cur = c;
                true
            }
        });
    }

    pub(crate) fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the handles can see of the connection.
pub(crate) struct ManagerShared {
    pub transport: Mutex<Option<Transport>>,
    /// The connection timeout, the default of [`SocketBuilder::timeout`](crate::SocketBuilder::timeout).
    pub timeout: Duration,
}

impl ManagerShared {
    pub(crate) fn set_transport(&self, t: Option<Transport>) {
        *self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = t;
    }
}

/// Acknowledgements of the server's events go to the manager as commands, in order with
/// the emits.
impl AckSink for mpsc::WeakUnboundedSender<Cmd> {
    fn send_ack(&self, nsp: String, id: u64, payload: Payload) -> Result<()> {
        let tx = self.upgrade().ok_or(Error::Closed)?;
        tx.send(Cmd::Ack { nsp, id, payload })
            .map_err(|_| Error::Closed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn auth_evaluation() {
        assert!(Auth::None.eval().is_empty());
        let mut m = serde_json::Map::new();
        m.insert("a".into(), json!(1));
        assert_eq!(Auth::Static(m).eval()["a"], 1);
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let f = Auth::Fn(Arc::new(
            move || json!({"n": n2.fetch_add(1, Ordering::SeqCst)}),
        ));
        assert_eq!(f.eval()["n"], 0);
        assert_eq!(f.eval()["n"], 1);
        assert!(Auth::Fn(Arc::new(|| json!("x"))).eval().is_empty());
        assert!(Auth::Fn(Arc::new(|| Value::Null)).eval().is_empty());
    }

    #[tokio::test]
    async fn acks_reach_the_manager_while_it_lives() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let weak = tx.downgrade();
        weak.send_ack("/".into(), 3, Payload::from(json!(1)))
            .unwrap();
        match rx.recv().await {
            Some(Cmd::Ack { nsp, id, payload }) => {
                assert_eq!((nsp.as_str(), id), ("/", 3));
                assert_eq!(payload.args, vec![json!(1)]);
            }
            _ => panic!("expected an ack"),
        }
        drop(tx);
        assert!(matches!(
            weak.send_ack("/".into(), 4, Payload::default()),
            Err(Error::Closed)
        ));
    }
}
