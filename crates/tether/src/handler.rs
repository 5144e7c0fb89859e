//! Handlers: sync or async functions of [extractors](crate::extract).
//!
//! Event handlers ([`Socket::on`](crate::Socket::on)), connection handlers
//! ([`Namespace::on_connection`](crate::Namespace::on_connection)) and disconnect handlers
//! ([`Socket::on_disconnect`](crate::Socket::on_disconnect)) are all [`Handler`]s: a
//! closure or `fn` taking up to 8 arguments that implement
//! [`FromEvent`], and returning either `()` (a sync handler)
//! or a future of `()` that is `Send + 'static` (an async handler). Closure arguments
//! need their types written, as in axum.
//!
//! ```no_run
//! use tether::{SocketRef, extract::{AckSender, Data}};
//!
//! async fn lookup(socket: SocketRef, Data(id): Data<u64>, ack: AckSender) {
//!     tokio::time::sleep(std::time::Duration::from_millis(50)).await; // a database, say
//!     let _ = ack.send(serde_json::json!({ "id": id, "by": socket.id().as_str() }));
//! }
//!
//! # fn f(io: tether::Server) {
//! io.of("/").on_connection(|socket: SocketRef| {
//!     socket.on("lookup", lookup);                                   // an async fn
//!     socket.on("ping", |ack: AckSender| { let _ = ack.send("pong"); }); // a sync closure
//! });
//! # }
//! ```
//!
//! # How they run
//!
//! The connection's reader never waits for a handler:
//!
//! - A **sync** handler runs inline, on the connection's reader, when its packet arrives:
//!   no task, no allocation. Keep it short (it holds up that connection's next packets,
//!   not other connections'); anything that waits belongs in an async handler.
//! - An **async** handler's future is polled once inline, when its packet arrives; if it
//!   is not finished by then (it awaits something), it goes on in a task of its own.
//!   Heartbeats, the connection's later packets and every other socket go on meanwhile.
//!
//! So the handlers of one socket **start in the order their packets arrived**: each one
//! runs up to its first pending `.await` before the next packet is read. After that, async
//! handlers of the same socket run concurrently and may finish in any order; to keep an
//! order across awaits, keep the state behind a `tokio::sync::Mutex` taken before the
//! first await.
//!
//! # From the closure form of earlier versions
//!
//! `socket.on("ev", |socket, payload, ack| ...)` with `&SocketRef`, `Payload` and
//! `Option<AckSender>` is gone on purpose: a closure's argument types cannot be inferred
//! through a trait with several implementations. The same handler, written out, is still
//! a handler (`Payload` and `Option<AckSender>` are extractors), with an owned socket:
//! `|socket: SocketRef, payload: Payload, ack: Option<AckSender>| ...`. `on_any`
//! handlers get the event's name from [`Event`](crate::extract::Event) rather than as
//! the first argument, and middlewares take the CONNECT payload as `Data<T>` (or the raw
//! `Payload`).
//!
//! A connection handler runs the same way, before the CONNECT reply is written: the
//! handlers it registers before its first pending `.await` see every event the client
//! sends. Disconnect handlers run after the socket left its rooms (and
//! [`on_disconnecting`](crate::Socket::on_disconnecting) ones while it is still in them).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::error::ConnectError;
use crate::extract::FromEvent;
use crate::namespace::{BoxedHandler, BoxedMiddleware, Namespace, Parts, Socket};

/// A handler, type-erased for the namespace layer to store.
pub(crate) fn boxed<H: Handler<M>, M>(h: H) -> BoxedHandler {
    Arc::new(move |parts| h.call(parts))
}

/// A connect middleware, type-erased for the namespace layer to store.
pub(crate) fn boxed_middleware<H: Middleware<M>, M>(h: H) -> BoxedMiddleware {
    Arc::new(move |s, auth| h.call(Parts::connect(s, auth)))
}

/// A function of extractors that Tether can run for a message: see the
/// [module docs](self). `M` only tells the implementations apart (sync or async, and the
/// arguments' types); you never name it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Tether handler",
    label = "not a handler",
    note = "a handler is a closure or `fn`, sync (returning `()`) or async (returning a \
            `Future<Output = ()> + Send + 'static`), of up to 8 arguments that each implement \
            `tether::extract::FromEvent`",
    note = "closure arguments need their types: `|socket: SocketRef, Data(msg): Data<Msg>| ...`"
)]
pub trait Handler<M>: Send + Sync + 'static {
    /// Extracts the arguments and runs the handler (see the [module docs](self)).
    fn call(&self, parts: Parts);
}

/// Distinguishes the sync and async implementations of [`Handler`].
#[doc(hidden)]
pub mod private {
    /// A handler returning `()`.
    #[derive(Debug)]
    pub enum Sync {}
    /// A handler returning a future.
    #[derive(Debug)]
    pub enum Async {}
}

/// Polls `fut` once here, and spawns the rest if it waits.
pub(crate) fn run<F: Future<Output = ()> + Send + 'static>(fut: F) {
    let mut fut = Box::pin(fut);
    if poll_once(fut.as_mut()).is_pending() {
        tokio::spawn(fut);
    }
}

fn poll_once(fut: Pin<&mut (dyn Future<Output = ()> + Send)>) -> Poll<()> {
    let waker = futures_util::task::noop_waker_ref();
    fut.poll(&mut Context::from_waker(waker))
}

/// What a failed extraction does: a warning, then the namespace's hook if any.
#[cold]
pub(crate) fn rejected(parts: Parts, err: crate::Error) {
    tracing::warn!(
        sid = %parts.socket.id(),
        nsp = parts.socket.nsp(),
        event = parts.event.as_str(),
        "handler not called: {err}"
    );
    let hook = parts.socket.ns.handlers.extract_error_hook();
    if let Some(hook) = hook {
        let ack = parts.ack_sender();
        hook(parts.socket, err, ack);
    }
}

macro_rules! extract_or_reject {
    ($parts:ident, $($ty:ident),*) => {
        $(
            let $ty = match $ty::from_event(&mut $parts) {
                Ok(v) => v,
                Err(e) => return rejected($parts, e),
            };
        )*
    };
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, $($ty,)*> Handler<(private::Sync, $($ty,)*)> for F
        where
            F: Fn($($ty),*) + Send + Sync + 'static,
            $($ty: FromEvent,)*
        {
            fn call(&self, mut parts: Parts) {
                extract_or_reject!(parts, $($ty),*);
                self($($ty),*);
            }
        }

        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, Fut, $($ty,)*> Handler<(private::Async, $($ty,)*)> for F
        where
            F: Fn($($ty),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = ()> + Send + 'static,
            $($ty: FromEvent,)*
        {
            fn call(&self, mut parts: Parts) {
                extract_or_reject!(parts, $($ty),*);
                run(self($($ty),*));
            }
        }
    };
}

/// The handlers a socket runs.
impl Socket {
    /// Registers the handler of an event, replacing any earlier one. The handler is a
    /// sync or async function of [extractors](crate::extract); see [`crate::handler`] for
    /// how it runs (never on hold of the connection's reader, and started in the order the
    /// packets arrived).
    ///
    /// ```no_run
    /// # use tether::{SocketRef, extract::{AckSender, Data}};
    /// # fn f(socket: SocketRef) {
    /// #[derive(serde::Deserialize, serde::Serialize)]
    /// struct Msg { text: String }
    ///
    /// socket.on("echo", |Data(msg): Data<Msg>, ack: AckSender| {
    ///     let _ = ack.send(msg);
    /// });
    /// socket.on("slow", |ack: AckSender| async move {
    ///     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    ///     let _ = ack.send("done");
    /// });
    /// # }
    /// ```
    pub fn on<H: Handler<M>, M>(&self, event: impl Into<String>, handler: H) {
        self.set_handler(event.into(), boxed(handler));
    }

    /// Registers a handler for events that have no handler of their own; the
    /// [`Event`](crate::extract::Event) extractor gives the event's name.
    ///
    /// ```no_run
    /// # use tether::{SocketRef, Payload, extract::Event};
    /// # fn f(socket: SocketRef) {
    /// socket.on_any(|Event(name): Event, p: Payload| println!("{name}: {:?}", p.args));
    /// # }
    /// ```
    pub fn on_any<H: Handler<M>, M>(&self, handler: H) {
        self.set_any_handler(boxed(handler));
    }

    /// Runs once when the socket disconnects, after it left its rooms. The
    /// [`DisconnectReason`](crate::DisconnectReason) is an extractor here.
    ///
    /// ```no_run
    /// # use tether::{SocketRef, DisconnectReason};
    /// # fn f(socket: SocketRef) {
    /// socket.on_disconnect(|socket: SocketRef, reason: DisconnectReason| {
    ///     println!("{} left: {}", socket.id(), reason.as_str());
    /// });
    /// # }
    /// ```
    pub fn on_disconnect<H: Handler<M>, M>(&self, handler: H) {
        self.add_disconnect_handler(boxed(handler));
    }

    /// Runs when the socket is about to disconnect, while it is still in its rooms.
    pub fn on_disconnecting<H: Handler<M>, M>(&self, handler: H) {
        self.add_disconnecting_handler(boxed(handler));
    }
}

/// The handlers a namespace runs.
impl Namespace {
    /// Adds a connect middleware: a sync or async function of
    /// [extractors](crate::extract) returning `Result<(), ConnectError>` (see
    /// [`Middleware`]). Middlewares run in order for every CONNECT (except a recovered
    /// one when `skip_middlewares` is on); an error is sent to the client as
    /// CONNECT_ERROR `{message, data}`. `Data<T>` is the CONNECT payload.
    pub fn use_middleware<H: Middleware<M>, M>(&self, h: H) {
        self.handlers.add_middleware(boxed_middleware(h));
    }

    /// Sets the connection handler: a sync or async function of
    /// [extractors](crate::extract) (`Data<T>` is the CONNECT `auth` here). It runs before
    /// the CONNECT reply is written, up to its first pending `.await`, so the event
    /// handlers it registers by then see every event the client sends afterwards.
    pub fn on_connection<H: Handler<M>, M>(&self, h: H) {
        self.handlers.set_on_connection(boxed(h));
    }
}

/// A future of a connect middleware.
pub(crate) type MiddlewareFuture = Pin<Box<dyn Future<Output = Result<(), ConnectError>> + Send>>;

/// A connect middleware: a sync or async function of up to 8
/// [extractors](crate::extract) returning `Result<(), ConnectError>`; see
/// [`Namespace::use_middleware`](crate::Namespace::use_middleware). In a middleware,
/// [`Data<T>`](crate::extract::Data) is the CONNECT payload (`auth`); an extractor that
/// fails refuses the socket with a CONNECT_ERROR saying why.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Tether connect middleware",
    label = "not a middleware",
    note = "a middleware is a closure or `fn`, sync or async, of up to 8 arguments that each \
            implement `tether::extract::FromEvent`, returning `Result<(), ConnectError>`",
    note = "closure arguments need their types: `|socket: SocketRef, Data(auth): Data<Auth>| ...`"
)]
pub trait Middleware<M>: Send + Sync + 'static {
    /// Extracts the arguments and runs the middleware.
    fn call(&self, parts: Parts) -> MiddlewareFuture;
}

#[cold]
fn refused(parts: &Parts, err: crate::Error) -> MiddlewareFuture {
    tracing::debug!(sid = %parts.socket.id(), nsp = parts.socket.nsp(), "connect refused: {err}");
    Box::pin(std::future::ready(Err(ConnectError::new(err.to_string()))))
}

macro_rules! extract_or_refuse {
    ($parts:ident, $($ty:ident),*) => {
        $(
            let $ty = match $ty::from_event(&mut $parts) {
                Ok(v) => v,
                Err(e) => return refused(&$parts, e),
            };
        )*
    };
}

macro_rules! impl_middleware {
    ($($ty:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, $($ty,)*> Middleware<(private::Sync, $($ty,)*)> for F
        where
            F: Fn($($ty),*) -> Result<(), ConnectError> + Send + Sync + 'static,
            $($ty: FromEvent,)*
        {
            fn call(&self, mut parts: Parts) -> MiddlewareFuture {
                extract_or_refuse!(parts, $($ty),*);
                Box::pin(std::future::ready(self($($ty),*)))
            }
        }

        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, Fut, $($ty,)*> Middleware<(private::Async, $($ty,)*)> for F
        where
            F: Fn($($ty),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
            $($ty: FromEvent,)*
        {
            fn call(&self, mut parts: Parts) -> MiddlewareFuture {
                extract_or_refuse!(parts, $($ty),*);
                Box::pin(self($($ty),*))
            }
        }
    };
}

impl_middleware!();
impl_middleware!(T1);
impl_middleware!(T1, T2);
impl_middleware!(T1, T2, T3);
impl_middleware!(T1, T2, T3, T4);
impl_middleware!(T1, T2, T3, T4, T5);
impl_middleware!(T1, T2, T3, T4, T5, T6);
impl_middleware!(T1, T2, T3, T4, T5, T6, T7);
impl_middleware!(T1, T2, T3, T4, T5, T6, T7, T8);

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
