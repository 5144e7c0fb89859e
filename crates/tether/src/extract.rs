//! Extractors: the typed arguments of handlers, in the style of axum's.
//!
//! A handler (see [`Handler`](crate::handler::Handler)) is a function or closure whose
//! arguments each implement [`FromEvent`]. Tether builds every argument from the message
//! that triggered the handler, in the order the arguments are written:
//!
//! | extractor | what it gives | fails when |
//! |---|---|---|
//! | [`SocketRef`](crate::SocketRef) | the socket | never |
//! | [`Data<T>`] | the arguments deserialized into `T` (the CONNECT `auth` in a connection handler) | they do not fit `T` |
//! | [`TryData<T>`] | the same, as a `Result` | never |
//! | [`Bin`] | the binary attachments | never |
//! | [`Payload`] | the raw arguments and attachments | never |
//! | [`AckSender`] | the way to answer the client's acknowledgement | the client asked for none |
//! | [`State<T>`] | a value set with [`Server::with_state`](crate::Server::with_state) | no state of that type |
//! | [`Extension<T>`] | a value of the socket's extensions, or of its handshake request's | none of that type |
//! | [`Event`] | the event's name | outside an event handler |
//! | [`DisconnectReason`] | why the socket left | outside a disconnect handler |
//! | `Option<T>` | `Some` when `T` could be extracted | never |
//! | `Result<T, Error>` | what extracting `T` gave | never |
//!
//! `Data`, `TryData` and `Payload` take the arguments, and `Bin` and `Payload` the
//! attachments: use one of each per handler.
//!
//! When an extractor fails the handler is not called. The failure is logged as a
//! `tracing` warning and goes to the namespace's
//! [`on_extract_error`](crate::Namespace::on_extract_error) hook, if one is set, with the
//! [`AckSender`] when the client asked for an answer. Without a hook the client gets no
//! answer (never a silent `null`): its acknowledgement times out.
//!
//! ```no_run
//! use serde::Deserialize;
//! use tether::extract::{AckSender, Data, State};
//! use tether::SocketRef;
//!
//! #[derive(Deserialize)]
//! struct Say { room: String, text: String }
//!
//! #[derive(Clone)]
//! struct Motd(&'static str);
//!
//! # fn f() {
//! let io = tether::Server::default().with_state(Motd("hello"));
//! io.of("/").on_connection(|socket: SocketRef, State(motd): State<Motd>| {
//!     let _ = socket.emit("motd", motd.0);
//!     socket.on("say", |socket: SocketRef, Data(say): Data<Say>, ack: AckSender| async move {
//!         let _ = socket.to(say.room).emit("said", &say.text);
//!         let _ = ack.send("ok");
//!     });
//! });
//! # }
//! ```

use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::namespace::{Kind, Socket};
use crate::reason::DisconnectReason;
use crate::Payload;

pub use crate::namespace::{AckSender, Parts};

/// A type a handler can take as an argument, built from the message that triggered it.
///
/// Implement it for your own extractors (an authenticated user read from the socket's
/// extensions, for example):
///
/// ```
/// use tether::extract::{FromEvent, Parts};
///
/// #[derive(Clone)]
/// struct User(String);
///
/// impl FromEvent for User {
///     fn from_event(parts: &mut Parts) -> Result<Self, tether::Error> {
///         parts
///             .socket()
///             .extensions(|e| e.get::<User>().cloned())
///             .ok_or(tether::Error::MissingExtension(std::any::type_name::<User>()))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "not an extractor",
    note = "handler arguments implement `tether::extract::FromEvent`: `SocketRef`, `Data<T>`, \
            `TryData<T>`, `Bin`, `Payload`, `AckSender`, `State<T>`, `Extension<T>`, `Event`, \
            `DisconnectReason`, and `Option` or `Result` of those",
    note = "the socket is `SocketRef` (an owned `Arc<Socket>`), not `&SocketRef`"
)]
pub trait FromEvent: Sized {
    /// Builds the argument, or says why it cannot.
    fn from_event(parts: &mut Parts) -> Result<Self, Error>;
}

impl FromEvent for Arc<Socket> {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        Ok(parts.socket.clone())
    }
}

/// Zero arguments as `null`, one as itself, several as an array.
fn take_args(parts: &mut Parts) -> Value {
    match parts.args.len() {
        0 => Value::Null,
        1 => parts.args.pop().unwrap_or(Value::Null),
        _ => Value::Array(std::mem::take(&mut parts.args)),
    }
}

/// The arguments deserialized into `T`: a single argument into `T` itself, several into
/// a tuple (or a `Vec`), none into `()` or `Option<_>`. In a connection handler, the
/// CONNECT payload (`auth`). Binary values stay placeholders; take them with [`Bin`].
///
/// When they do not fit, the handler is not called (see the [module](self) docs); use
/// [`TryData`] to handle the error yourself.
///
/// ```no_run
/// # use tether::{SocketRef, extract::Data};
/// # fn f(socket: SocketRef) {
/// // socket.emit("move", 3, 4) on the client:
/// socket.on("move", |Data((x, y)): Data<(i32, i32)>| println!("{x},{y}"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned> FromEvent for Data<T> {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        serde_json::from_value(take_args(parts))
            .map(Data)
            .map_err(Error::Deserialize)
    }
}

/// Like [`Data`], but the handler is called either way, with the deserialization's result.
///
/// ```no_run
/// # use tether::{SocketRef, extract::{TryData, AckSender}};
/// # fn f(socket: SocketRef) {
/// socket.on("n", |TryData(n): TryData<u32>, ack: AckSender| {
///     let _ = match n {
///         Ok(n) => ack.send(n + 1),
///         Err(e) => ack.send(serde_json::json!({ "error": e.to_string() })),
///     };
/// });
/// # }
/// ```
#[derive(Debug)]
pub struct TryData<T>(pub Result<T, serde_json::Error>);

impl<T: DeserializeOwned> FromEvent for TryData<T> {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        Ok(TryData(serde_json::from_value(take_args(parts))))
    }
}

/// The binary attachments, in order (the placeholders `{"_placeholder":true,"num":N}` in
/// the arguments index them).
///
/// ```no_run
/// # use tether::{SocketRef, extract::Bin};
/// # fn f(socket: SocketRef) {
/// socket.on("upload", |Bin(files): Bin| println!("{} files", files.len()));
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bin(pub Vec<Bytes>);

impl FromEvent for Bin {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        Ok(Bin(std::mem::take(&mut parts.attachments)))
    }
}

/// The raw arguments and attachments.
impl FromEvent for Payload {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        Ok(Payload {
            args: std::mem::take(&mut parts.args),
            attachments: std::mem::take(&mut parts.attachments),
        })
    }
}

/// Fails with [`Error::NoAck`] when the client asked for no acknowledgement; take an
/// `Option<AckSender>` when it may or may not.
impl FromEvent for AckSender {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        parts.ack_sender().ok_or(Error::NoAck)
    }
}

/// A value shared by every handler of the server, set with
/// [`Server::with_state`](crate::Server::with_state). It is cloned for each handler: keep
/// it cheap to clone (an `Arc`, a pool handle).
///
/// ```no_run
/// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// use tether::extract::State;
///
/// #[derive(Clone, Default)]
/// struct Counter(Arc<AtomicU64>);
///
/// # fn f() {
/// let io = tether::Server::default().with_state(Counter::default());
/// io.of("/").on_connection(|State(c): State<Counter>| {
///     c.0.fetch_add(1, Ordering::Relaxed);
/// });
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromEvent for State<T> {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        parts
            .socket
            .server_state::<T>()
            .map(State)
            .ok_or(Error::MissingState(std::any::type_name::<T>()))
    }
}

/// A value of the socket's [`extensions`](Socket::extensions) (set by a middleware, say)
/// or, failing that, of the extensions of the HTTP request that opened the connection
/// (set by a tower layer in front of Tether: auth claims, axum's `ConnectInfo`).
///
/// ```no_run
/// # use tether::{SocketRef, extract::Extension};
/// #[derive(Clone)]
/// struct Claims { user: String }
/// # fn f(io: tether::Server) {
/// io.of("/").on_connection(|socket: SocketRef, Extension(c): Extension<Claims>| {
///     socket.join(c.user);
/// });
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Extension<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromEvent for Extension<T> {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        parts
            .socket
            .extensions(|e| e.get::<T>().cloned())
            .or_else(|| parts.socket.req_extensions().get::<T>().cloned())
            .map(Extension)
            .ok_or(Error::MissingExtension(std::any::type_name::<T>()))
    }
}

/// The event's name, for a handler set with [`on_any`](Socket::on_any) or shared by
/// several events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event(pub String);

impl FromEvent for Event {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        match parts.kind {
            Kind::Event => Ok(Event(parts.event.clone())),
            _ => Err(Error::WrongHandler("Event", "event")),
        }
    }
}

impl FromEvent for DisconnectReason {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        parts
            .reason
            .ok_or(Error::WrongHandler("DisconnectReason", "disconnect"))
    }
}

impl<T: FromEvent> FromEvent for Option<T> {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        Ok(T::from_event(parts).ok())
    }
}

impl<T: FromEvent> FromEvent for Result<T, Error> {
    fn from_event(parts: &mut Parts) -> Result<Self, Error> {
        Ok(T::from_event(parts))
    }
}
