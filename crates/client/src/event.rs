//! What the handlers get: [`Event`] (with its [`AckSender`]), [`Lifecycle`] and
//! [`DisconnectReason`], the items of [`Client::events`](crate::Client::events)
//! ([`ClientEvent`]), and the [`Session`] to resume.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tether_proto::Payload;

use crate::error::{Error, Result};
use crate::typed;

/// An event the server sent.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event name (a numeric name is given as its decimal string).
    pub name: String,
    /// The arguments. The connection state recovery offset is never among them.
    pub payload: Payload,
    /// Present when the server asked for an acknowledgement.
    pub ack: Option<AckSender>,
    pub(crate) offset: Option<Arc<str>>,
}

impl Event {
    /// The JSON arguments (binary values are placeholders, see [`Payload`]).
    pub fn args(&self) -> &[Value] {
        &self.payload.args
    }

    /// Deserializes argument `i` into `T` (a missing argument is `null`), with an error
    /// that names the event and the argument.
    ///
    /// ```no_run
    /// # fn f(ev: tether_client::Event) -> tether_client::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Chat { user: String, text: String }
    /// let chat: Chat = ev.arg_as(0)?;
    /// # let _ = (chat.user, chat.text); Ok(()) }
    /// ```
    pub fn arg_as<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T> {
        typed::arg_of(&self.payload, i, &format!("event {:?}", self.name))
    }

    /// Deserializes every argument into `T`, a tuple (`(u32, String)`) or a `Vec`.
    pub fn args_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        typed::from_payload(&self.payload).map_err(|e| match e {
            Error::Serde { source, .. } => Error::Serde {
                context: format!("the arguments of event {:?}", self.name),
                source,
            },
            e => e,
        })
    }

    /// The connection state recovery offset the server gave this event, if any (see the
    /// crate documentation for which trailing string is an offset).
    pub fn offset(&self) -> Option<&str> {
        self.offset.as_deref()
    }
}

/// What a server with connection state recovery needs to restore a session: its private
/// id and the offset of the last event handled. Read it with [`Client::session`](crate::Client::session), keep it
/// (it is `serde`-serializable), and give it to [`ClientBuilder::session`](crate::ClientBuilder::session) in a new
/// process to resume within the server's `maxDisconnectionDuration`.
///
/// ```
/// # use tether_client::Session;
/// let s = Session { pid: "p1".into(), offset: Some("o9".into()) };
/// let saved = serde_json::to_string(&s).unwrap();
/// assert_eq!(serde_json::from_str::<Session>(&saved).unwrap(), s);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// The private session id (`pid` of the `CONNECT` reply).
    pub pid: String,
    /// The offset of the last event whose handlers ran; `None` before the first.
    #[serde(default)]
    pub offset: Option<String>,
}

/// Acknowledges one event of the server. Only the first [`send`](AckSender::send) of an
/// event's ack (and of its clones) goes out.
///
/// ```no_run
/// # async fn f() -> tether_client::Result<()> {
/// use tether_client::ClientBuilder;
/// use serde_json::json;
/// let client = ClientBuilder::new("http://localhost:3000")
///     .on("question", |_client, ev| {
///         if let Some(ack) = ev.ack {
///             let _ = ack.send(json!({"answer": 42}));
///         }
///     })
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AckSender(Arc<AckInner<dyn AckSink>>);

/// Where an acknowledgement goes: the manager's command channel (the implementation is
/// in `state`, beside the command type, so that this module does not depend on it).
pub(crate) trait AckSink: Send + Sync + 'static {
    /// Hands the acknowledgement to the manager; fails with [`Error::Closed`] if it is
    /// gone.
    fn send_ack(&self, nsp: String, id: u64, payload: Payload) -> Result<()>;
}

/// One allocation per event that asks for an ack (the sink is stored inline and reached
/// through the `Arc`'s vtable), and an `Event` that stays small (it is moved through the
/// dispatch queue).
struct AckInner<S: ?Sized> {
    nsp: String,
    id: u64,
    sent: AtomicBool,
    sink: S,
}

impl fmt::Debug for AckSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckSender")
            .field("nsp", &self.0.nsp)
            .field("id", &self.0.id)
            .finish()
    }
}

impl AckSender {
    pub(crate) fn new(sink: impl AckSink, nsp: String, id: u64) -> Self {
        AckSender(Arc::new(AckInner {
            nsp,
            id,
            sent: AtomicBool::new(false),
            sink,
        }))
    }

    /// The ack id the server chose.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Sends the acknowledgement with these arguments. Does nothing if this ack was
    /// already sent; fails with [`Error::Closed`] if the client is gone.
    pub fn send(&self, payload: impl Into<Payload>) -> Result<()> {
        let a = &self.0;
        if a.sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        a.sink.send_ack(a.nsp.clone(), a.id, payload.into())
    }
}

/// An item of [`Client::events`](crate::Client::events).
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// An event the server sent.
    Event(Event),
    /// A lifecycle event.
    Lifecycle(Lifecycle),
}

/// Why a namespace got disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server disconnected the socket (`socket.disconnect()` on the server). No
    /// reconnection follows.
    IoServerDisconnect,
    /// [`Client::disconnect`](crate::Client::disconnect) or [`Client::close`](crate::Client::close). No reconnection follows.
    IoClientDisconnect,
    /// The server sent no ping within `pingInterval + pingTimeout`.
    PingTimeout,
    /// The server closed the connection.
    TransportClose,
    /// The network failed.
    TransportError(String),
    /// The server sent a packet that could not be decoded.
    ParseError(String),
}

impl DisconnectReason {
    /// The reason as the JavaScript client names it (`"transport close"`...).
    pub fn as_str(&self) -> &'static str {
        match self {
            DisconnectReason::IoServerDisconnect => "io server disconnect",
            DisconnectReason::IoClientDisconnect => "io client disconnect",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError(_) => "transport error",
            DisconnectReason::ParseError(_) => "parse error",
        }
    }

    /// Whether the client reconnects after this (if reconnection is enabled).
    pub fn will_reconnect(&self) -> bool {
        !matches!(
            self,
            DisconnectReason::IoServerDisconnect | DisconnectReason::IoClientDisconnect
        )
    }
}

/// The connection's life, as the JavaScript client's `connect`, `connect_error`,
/// `disconnect` and Manager `reconnect*` events tell it.
///
/// The Manager events (`Reconnect*`) go to every namespace of the connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Lifecycle {
    /// The namespace is connected (again). `recovered` tells whether the server restored
    /// the session (connection state recovery), see [`Client::recovered`](crate::Client::recovered).
    Connect {
        /// Whether the session was recovered.
        recovered: bool,
    },
    /// The server refused the namespace (after a reconnection; the first refusal is the
    /// error of `connect()`). The namespace is closed.
    ConnectError(Error),
    /// The namespace got disconnected.
    Disconnect(DisconnectReason),
    /// Reconnection attempt `n` (from 1) starts.
    ReconnectAttempt(u32),
    /// Attempt `n` succeeded; the namespaces connect again.
    Reconnect(u32),
    /// An attempt failed.
    ReconnectError(Error),
    /// The last allowed attempt failed; the client is closed.
    ReconnectFailed,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn reasons() {
        assert_eq!(DisconnectReason::TransportClose.as_str(), "transport close");
        assert!(DisconnectReason::PingTimeout.will_reconnect());
        assert!(!DisconnectReason::IoServerDisconnect.will_reconnect());
    }

    /// Records what it is given.
    struct Recorder(Arc<Mutex<Vec<(String, u64, Payload)>>>);

    impl AckSink for Recorder {
        fn send_ack(&self, nsp: String, id: u64, payload: Payload) -> Result<()> {
            self.0.lock().unwrap().push((nsp, id, payload));
            Ok(())
        }
    }

    #[test]
    fn an_ack_goes_once_whatever_the_clones() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ack = AckSender::new(Recorder(seen.clone()), "/chat".into(), 7);
        let again = ack.clone();
        assert_eq!(ack.id(), 7);
        ack.send(serde_json::json!("yes")).unwrap();
        again.send(serde_json::json!("no")).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "/chat");
        assert_eq!(seen[0].1, 7);
        assert_eq!(seen[0].2.args, vec![serde_json::json!("yes")]);
        assert_eq!(format!("{ack:?}"), r#"AckSender { nsp: "/chat", id: 7 }"#);
    }
}
