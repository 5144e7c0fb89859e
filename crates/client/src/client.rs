//! The public handle of a namespace, [`Client`], and the task that runs its handlers.
//!
//! A [`Client`] talks to the manager task only through commands ([`Cmd`]); the manager
//! hands it events and completions through the namespace's dispatch queue
//! ([`Dispatch`]), which the task here drains in order. [`Client::socket`] is in
//! `builder`, beside the [`SocketBuilder`](crate::SocketBuilder) it returns.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tether_proto::Payload;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::event::{ClientEvent, Event, Lifecycle, Session};
use crate::state::{Cmd, Conn, Dispatch, ManagerShared, NewNamespace, NsShared};
use crate::transport::Transport;
use crate::typed;

/// A handler of events: it gets the namespace's client (to emit, or to look at its state)
/// and the event.
///
/// Handlers run one at a time, in the order the events arrived, on a task of their
/// namespace: do not block in them; spawn a task for slow or async work.
pub(crate) type EventHandler = Arc<dyn Fn(Client, Event) + Send + Sync + 'static>;

/// A handler of [`Lifecycle`] events.
pub(crate) type LifecycleHandler = Arc<dyn Fn(Client, Lifecycle) + Send + Sync + 'static>;

/// Handlers of one namespace.
#[derive(Default)]
pub(crate) struct Handlers {
    pub events: HashMap<String, EventHandler>,
    pub any: Vec<EventHandler>,
    pub lifecycle: Vec<LifecycleHandler>,
}

/// A namespace as its handles see it: the state shared with the manager, and the handlers
/// (which take a [`Client`], so they live here rather than in `state`).
pub(crate) struct Namespace {
    pub shared: Arc<NsShared>,
    pub handlers: RwLock<Handlers>,
}

/// Starts the dispatch task of a namespace; the manager feeds it through the returned
/// sender.
fn spawn_dispatch(
    tx: &mpsc::UnboundedSender<Cmd>,
    ns: &Arc<Namespace>,
    mgr: &Arc<ManagerShared>,
) -> mpsc::UnboundedSender<Dispatch> {
    let (dtx, drx) = mpsc::unbounded_channel();
    tokio::spawn(dispatch_loop(drx, tx.downgrade(), ns.clone(), mgr.clone()));
    dtx
}

/// Runs a namespace's handlers, one event at a time.
async fn dispatch_loop(
    mut rx: mpsc::UnboundedReceiver<Dispatch>,
    tx: mpsc::WeakUnboundedSender<Cmd>,
    ns: Arc<Namespace>,
    mgr: Arc<ManagerShared>,
) {
    while let Some(d) = rx.recv().await {
        let d = match d {
            Dispatch::Ack(reply, r) => {
                let _ = reply.send(r);
                continue;
            }
            Dispatch::Ready(reply, r) => {
                let _ = reply.send(r);
                continue;
            }
            Dispatch::NewSession(pid) => {
                let mut st = ns.shared.status();
                st.session_pid = pid;
                st.offset = None;
                continue;
            }
            d => d,
        };
        let Some(tx) = tx.upgrade() else { return };
        let client = Client {
            tx,
            ns: ns.clone(),
            mgr: mgr.clone(),
        };
        match d {
            Dispatch::Event(ev) => {
                let offset = ev.offset.clone();
                let (any, specific) = {
                    let h = ns.handlers.read().unwrap_or_else(PoisonError::into_inner);
                    (h.any.clone(), h.events.get(&ev.name).cloned())
                };
                for h in any {
                    h(client.clone(), ev.clone());
                }
                if let Some(h) = specific {
                    h(client, ev);
                } else {
                    tracing::trace!(event = %ev.name, "no handler");
                }
                if offset.is_some() {
                    ns.shared.status().offset = offset;
                }
            }
            Dispatch::Ack(..) | Dispatch::Ready(..) | Dispatch::NewSession(_) => {}
            Dispatch::Lifecycle(l) => {
                let hs = ns
                    .handlers
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .lifecycle
                    .clone();
                for h in hs {
                    h(client.clone(), l.clone());
                }
                match l {
                    Lifecycle::Connect { .. } => ns.shared.set_conn(Conn::Up),
                    Lifecycle::Disconnect(_) => ns.shared.set_conn(Conn::Down),
                    _ => {}
                }
            }
        }
    }
}

/// A connected namespace: emit events, and look at its state.
///
/// Cheap to clone. Every namespace of one connection shares its Engine.IO connection;
/// the connection closes when every namespace is disconnected, when
/// [`close`](Client::close) is called, or when every `Client` handle is dropped;
/// [`connect`](Client::connect) opens it again for a disconnected namespace.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::UnboundedSender<Cmd>,
    ns: Arc<Namespace>,
    mgr: Arc<ManagerShared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.ns.shared.nsp)
            .field("status", &*self.ns.shared.status())
            .finish()
    }
}

impl Client {
    /// A handle of a new namespace, with its dispatch task started; the manager feeds
    /// that task through the returned sender.
    pub(crate) fn open(
        tx: &mpsc::UnboundedSender<Cmd>,
        mgr: &Arc<ManagerShared>,
        shared: Arc<NsShared>,
        handlers: Handlers,
    ) -> (Client, mpsc::UnboundedSender<Dispatch>) {
        let ns = Arc::new(Namespace {
            shared,
            handlers: RwLock::new(handlers),
        });
        let dispatch = spawn_dispatch(tx, &ns, mgr);
        let client = Client {
            tx: tx.clone(),
            ns,
            mgr: mgr.clone(),
        };
        (client, dispatch)
    }

    /// The sender of commands, for a builder of another namespace on this connection.
    pub(crate) fn commands(&self) -> &mpsc::UnboundedSender<Cmd> {
        &self.tx
    }

    /// The connection's shared state, for a builder of another namespace.
    pub(crate) fn manager(&self) -> &Arc<ManagerShared> {
        &self.mgr
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns.shared.nsp
    }

    /// The socket id the server gave (`socket.id` on the server), while connected.
    pub fn id(&self) -> Option<String> {
        self.ns.shared.status().sid.clone()
    }

    /// Whether the namespace is connected now.
    pub fn connected(&self) -> bool {
        self.ns.shared.status().connected
    }

    /// Whether the namespace is still in use: connected, or waiting to reconnect.
    pub fn active(&self) -> bool {
        self.ns.shared.status().active
    }

    /// Whether the last (re)connection restored the previous session: the server knew
    /// our `pid`, kept our socket id and rooms, and sent the events we missed.
    pub fn recovered(&self) -> bool {
        self.ns.shared.status().recovered
    }

    /// The private session id for connection state recovery, if the server has it on.
    pub fn pid(&self) -> Option<String> {
        self.ns.shared.status().pid.clone()
    }

    /// The session to resume in another process ([`ClientBuilder::session`](crate::ClientBuilder::session)), if the
    /// server has connection state recovery on: the `pid`, and the offset of the last
    /// event whose handlers ran (so an event received but not yet handled is sent again).
    ///
    /// Save it whenever convenient (after each event, or when the app goes to the
    /// background). [`Client::disconnect`] and [`Client::close`] end the session on the
    /// server (the server does not keep sessions of clients that leave), so a process
    /// that means to resume must exit without calling them.
    pub fn session(&self) -> Option<Session> {
        let st = self.ns.shared.status();
        st.session_pid.as_ref().map(|pid| Session {
            pid: pid.clone(),
            offset: st.offset.as_deref().map(str::to_owned),
        })
    }

    /// The Engine.IO transport in use, if the connection is open.
    pub fn transport(&self) -> Option<Transport> {
        *self
            .mgr
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the namespace is connected (at once if it is) and its connect handlers
    /// ran; fails with [`Error::Closed`] if it is closed (disconnected for good, or
    /// reconnection gave up).
    pub async fn wait_connected(&self) -> Result<()> {
        let mut rx = self.ns.shared.conn.subscribe();
        let state = rx
            .wait_for(|c| *c != Conn::Down)
            .await
            .map(|c| *c)
            .unwrap_or(Conn::Closed);
        match state {
            Conn::Up => Ok(()),
            _ => Err(Error::Closed),
        }
    }

    /// The namespace's events and lifecycle events from now on, as a stream (an
    /// alternative to handlers; the handlers still run). The stream buffers what you do
    /// not read yet; it ends when the namespace's handlers are dropped (the client closed
    /// and every handle gone). Each call adds a stream: call it once.
    ///
    /// ```no_run
    /// # async fn f(client: tether_client::Client) {
    /// use futures_util::StreamExt as _;
    /// use tether_client::ClientEvent;
    /// let mut events = std::pin::pin!(client.events());
    /// while let Some(e) = events.next().await {
    ///     match e {
    ///         ClientEvent::Event(ev) => println!("{}: {:?}", ev.name, ev.args()),
    ///         ClientEvent::Lifecycle(l) => println!("{l:?}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> impl futures_util::Stream<Item = ClientEvent> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let t = tx.clone();
        self.on_any(move |_c, ev| {
            let _ = t.send(ClientEvent::Event(ev));
        });
        self.on_lifecycle(move |_c, l| {
            let _ = tx.send(ClientEvent::Lifecycle(l));
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
    }

    /// Adds or replaces the handler of `event`.
    pub fn on(
        &self,
        event: impl Into<String>,
        handler: impl Fn(Client, Event) + Send + Sync + 'static,
    ) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .insert(event.into(), Arc::new(handler));
    }

    /// Removes the handler of `event`.
    pub fn off(&self, event: &str) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .remove(event);
    }

    /// Adds a handler of every event.
    pub fn on_any(&self, handler: impl Fn(Client, Event) + Send + Sync + 'static) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .any
            .push(Arc::new(handler));
    }

    /// Adds a handler of [`Lifecycle`] events.
    pub fn on_lifecycle(&self, handler: impl Fn(Client, Lifecycle) + Send + Sync + 'static) {
        self.ns
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .lifecycle
            .push(Arc::new(handler));
    }

    fn check(&self, event: &str) -> Result<()> {
        if tether_proto::sio::RESERVED_EVENTS.contains(&event) {
            return Err(Error::ReservedEvent(event.to_owned()));
        }
        if !self.active() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn send_emit(
        &self,
        event: &str,
        payload: Payload,
        volatile: bool,
        ack: Option<(Duration, oneshot::Sender<Result<Payload>>)>,
    ) -> Result<()> {
        self.check(event)?;
        self.tx
            .send(Cmd::Emit {
                nsp: self.ns.shared.nsp.clone(),
                event: event.to_owned(),
                payload,
                volatile,
                ack,
            })
            .map_err(|_| Error::Closed)
    }

    /// Emits an event. While disconnected, it is buffered and sent once the namespace
    /// connects again (with [`retries`](crate::ClientBuilder::retries), it is queued for
    /// at-least-once delivery instead).
    ///
    /// Fails at once for a reserved event name, or if the client is closed.
    pub fn emit(&self, event: &str, payload: impl Into<Payload>) -> Result<()> {
        self.send_emit(event, payload.into(), false, None)
    }

    /// Emits a volatile event: it is dropped, not buffered, unless the namespace is
    /// connected now. Volatile events bypass the [`retries`](crate::ClientBuilder::retries) queue.
    pub fn emit_volatile(&self, event: &str, payload: impl Into<Payload>) -> Result<()> {
        self.send_emit(event, payload.into(), true, None)
    }

    /// Emits an event and waits for the server's acknowledgement.
    ///
    /// It returns after the handlers of every event the server sent before the
    /// acknowledgement ran (one order per namespace).
    ///
    /// Fails with [`Error::Timeout`] if it does not come within `timeout` (the event is
    /// then removed from the send buffer if it was still there), and with
    /// [`Error::Disconnected`] if the connection drops after the event was sent. With
    /// [`retries`](crate::ClientBuilder::retries), `timeout` applies to each try, and the error
    /// comes after the last one.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload> {
        let (tx, rx) = oneshot::channel();
        self.send_emit(event, payload.into(), false, Some((timeout, tx)))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Emits an event whose arguments are any serializable value: a tuple is several
    /// arguments, anything else one (see [`to_payload`](crate::to_payload)).
    ///
    /// ```no_run
    /// # fn f(client: tether_client::Client) -> tether_client::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Chat<'a> { user: &'a str, text: &'a str }
    /// client.emit_serde("chat", &(Chat { user: "ann", text: "hi" }, 42))?; // two arguments
    /// # Ok(()) }
    /// ```
    pub fn emit_serde<T: serde::Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<()> {
        self.emit(event, typed::to_payload(args)?)
    }

    /// Emits serializable arguments (as [`emit_serde`](Self::emit_serde)) and deserializes
    /// the acknowledgement's arguments into `R` (a tuple, or a `Vec`; see
    /// [`from_payload`](crate::from_payload)).
    ///
    /// ```no_run
    /// # async fn f(client: tether_client::Client) -> tether_client::Result<()> {
    /// use std::time::Duration;
    /// let (sum,): (i64,) = client.emit_with_ack_serde("sum", &(1, 2), Duration::from_secs(5)).await?;
    /// # let _ = sum; Ok(()) }
    /// ```
    pub async fn emit_with_ack_serde<T, R>(
        &self,
        event: &str,
        args: &T,
        timeout: Duration,
    ) -> Result<R>
    where
        T: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let p = self
            .emit_with_ack(event, typed::to_payload(args)?, timeout)
            .await?;
        typed::from_payload(&p).map_err(|e| match e {
            Error::Serde { source, .. } => Error::Serde {
                context: format!("the acknowledgement of {event:?}"),
                source,
            },
            e => e,
        })
    }

    /// Connects the namespace again after it was disconnected for good (by
    /// [`disconnect`](Self::disconnect), [`close`](Self::close), the server, or a
    /// reconnection policy that gave up), with the same handlers, auth and options, as the
    /// JavaScript client's `socket.connect()`; the connection opens again if it had closed.
    /// The saved [`session`](Self::session) goes with the `CONNECT`, so a server that
    /// still holds it recovers it. Returns at once if the namespace is active already.
    pub async fn connect(&self) -> Result<()> {
        {
            let mut st = self.ns.shared.status();
            if st.active {
                return Ok(());
            }
            st.active = true;
        }
        self.ns.shared.conn.send_replace(Conn::Down);
        let session = self.session();
        let dtx = spawn_dispatch(&self.tx, &self.ns, &self.mgr);
        let ns = NewNamespace {
            shared: self.ns.shared.clone(),
            auth: self.ns.shared.auth.clone(),
            retries: self.ns.shared.retries,
            ack_timeout: self.ns.shared.ack_timeout,
            session,
            dispatch: dtx,
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        if self
            .tx
            .send(Cmd::AddNamespace {
                ns,
                reply: reply_tx,
            })
            .is_err()
        {
            self.ns.shared.status().active = false;
            return Err(Error::Closed);
        }
        match tokio::time::timeout(self.mgr.timeout, reply_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                let (tx, _rx) = oneshot::channel();
                let _ = self.tx.send(Cmd::Disconnect {
                    nsp: self.ns.shared.nsp.clone(),
                    reply: tx,
                });
                Err(Error::Timeout)
            }
        }
    }

    /// Leaves the namespace (sends a `DISCONNECT`; no reconnection). Pending
    /// acknowledgements fail with [`Error::Closed`]. When the last namespace leaves, the
    /// connection closes; this returns once it did.
    pub async fn disconnect(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Cmd::Disconnect {
                nsp: self.ns.shared.nsp.clone(),
                reply: tx,
            })
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Leaves every namespace and closes the connection.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Close { reply: Some(tx) }).is_ok() {
            let _ = rx.await;
        }
    }
}
