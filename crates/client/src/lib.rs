//! A Socket.IO v5 client (Engine.IO v4), async on tokio, sharing its codecs with the
//! Tether server (`tether-proto`).
//!
//! ```no_run
//! use std::time::Duration;
//! use tether_client::{json, ClientBuilder, Lifecycle};
//!
//! # async fn run() -> tether_client::Result<()> {
//! let client = ClientBuilder::new("http://localhost:3000")
//!     .auth(json!({"token": "abc"}))
//!     .on("chat", |_client, ev| println!("chat: {:?}", ev.args()))
//!     .on("ping?", |_client, ev| {
//!         // The server asked for an acknowledgement.
//!         if let Some(ack) = ev.ack {
//!             let _ = ack.send(json!("pong"));
//!         }
//!     })
//!     .on_lifecycle(|_client, l| {
//!         if let Lifecycle::Disconnect(reason) = l {
//!             eprintln!("disconnected: {}", reason.as_str());
//!         }
//!     })
//!     .connect()
//!     .await?;
//!
//! client.emit("chat", json!("hello"))?;
//! let reply = client
//!     .emit_with_ack("sum", vec![json!(1), json!(2)], Duration::from_secs(5))
//!     .await?;
//! println!("sum = {}", reply.args[0]);
//! # Ok(()) }
//! ```
//!
//! # What it does
//!
//! - **Transports.** Polling, WebSocket, or polling then upgrade (the default), chosen
//!   with [`ClientBuilder::transports`]. The client answers the server's pings and
//!   reconnects when no ping came within `pingInterval + pingTimeout`. Extra headers and
//!   query parameters go with every request ([`ClientBuilder::header`],
//!   [`ClientBuilder::query`]).
//! - **Namespaces.** Each [`Client`] is one namespace; [`Client::socket`] connects
//!   another one over the same Engine.IO connection (the JavaScript client's Manager).
//! - **Events.** [`Client::emit`], [`Client::emit_with_ack`] (with a timeout),
//!   [`Client::emit_volatile`]; handlers per event name ([`ClientBuilder::on`]) and a
//!   catch-all ([`ClientBuilder::on_any`]), which get an [`AckSender`] when the server
//!   asked for an acknowledgement. Binary data travels both ways, see [`Payload`].
//! - **Reconnection** as in the JavaScript client: attempts, exponential delay with a
//!   maximum and randomisation ([`Reconnection`]), [`Lifecycle`] events for attempts and
//!   failures, a send buffer while disconnected, and optional at-least-once sending
//!   ([`ClientBuilder::retries`], [`ClientBuilder::ack_timeout`]).
//! - **One order.** Per namespace, everything the server sent reaches you in wire
//!   order: event handlers, [`Lifecycle`] handlers, and the completion of
//!   [`Client::emit_with_ack`]. When the server emits an event and then acknowledges your
//!   emit, the event's handler has run when `emit_with_ack` returns; `connect()` returns
//!   after the first [`Lifecycle::Connect`] handlers ran.
//! - **TLS.** `https://` and `wss://` on rustls (ring; no OpenSSL), trusting the
//!   platform's root certificates by default (`rustls-native-certs`), or the roots given
//!   with [`ClientBuilder::tls_root_certificate`] /
//!   [`ClientBuilder::tls_root_certificates_pem`], or a whole [`rustls::ClientConfig`]
//!   ([`ClientBuilder::tls_config`]). An untrusted, expired or misnamed certificate is
//!   [`Error::Tls`] ([`Error::is_tls`], with rustls' reason in [`Error::tls_error`]).
//! - **Cookies** ([`ClientBuilder::cookies`], off by default): a jar per connection
//!   (`cookie_store`), so that long-polling works behind a load balancer with
//!   cookie-based sticky sessions.
//! - **The first connection** can be retried under the [`Reconnection`] policy like the
//!   later ones ([`ClientBuilder::retry_first_connection`]; off by default).
//! - **Typed arguments.** [`Client::emit_serde`] and [`Client::emit_with_ack_serde`] take
//!   any `T: Serialize` (a tuple is several arguments, anything else one:
//!   [`to_payload`]); [`Event::arg_as`], [`Event::args_as`] and [`from_payload`]
//!   deserialize into your types, with an [`Error::Serde`] naming the event and the
//!   argument when they do not match. Binary data anywhere in them is a [`Binary`] (an attachment
//!   with its placeholder, both ways).
//! - **Awaitable and streamable.** [`Client::wait_connected`] waits for the
//!   (re)connection; [`Client::events`] is a `Stream` of events and lifecycle events, an
//!   alternative to handlers. [`NamespaceBuilder`] is the trait of both builders.
//!   [`Client::connect`] connects a disconnected client again, with its handlers.
//! - **Errors** are one type, [`Error`], with predicates such as
//!   [`Error::is_connect_error`] (and [`Error::connect_error_message`]), [`Error::is_timeout`] and [`Error::is_protocol_version`].
//!
//! # Connection state recovery
//!
//! When the server has connection state recovery on, its `CONNECT` reply carries a
//! private session id, `{"sid": ..., "pid": ...}`, and it appends an *offset* (a string)
//! as the last argument of every event it stores for replay. The client keeps the `pid`
//! and the last offset it received, and on reconnection sends `{pid, offset}` merged
//! into the `auth` data (the auth's own keys win). If the server restores the session, it
//! replies with the same `pid` (then [`Client::recovered`] is true and
//! [`Lifecycle::Connect`] says `recovered: true`), keeps the socket id and rooms, and
//! sends the missed events, which the handlers get once and in order.
//!
//! Unlike the JavaScript client, the offset is **not** handed to the handlers as an
//! argument: the client takes it off the event.
//! [`Event::offset`] gives it.
//!
//! ## Resuming in a new process
//!
//! [`Client::session`] returns the `pid` and the offset of the last event whose handlers
//! ran ([`Session`], serializable); [`ClientBuilder::session`] builds a client that
//! sends them with its first `CONNECT`. A process killed and restarted within the
//! server's window (a mobile app, a CLI) gets its socket id, rooms and missed events back:
//!
//! ```no_run
//! # async fn f(saved: String) -> tether_client::Result<()> {
//! let session: tether_client::Session = serde_json::from_str(&saved).unwrap();
//! let client = tether_client::ClientBuilder::new("http://localhost:3000")
//!     .on("chat", |_c, ev| println!("{:?}", ev.args())) // missed events come here first
//!     .session(session)
//!     .connect()
//!     .await?;
//! println!("recovered: {}", client.recovered());
//! // ... later, before the process may be killed:
//! let saved = serde_json::to_string(&client.session()).unwrap();
//! # let _ = saved; Ok(()) }
//! ```
//!
//! [`Client::close`] and [`Client::disconnect`] end the session on the server: a process
//! that means to resume exits without calling them.
//!
//! ## Which trailing string is an offset
//!
//! Nothing on the wire marks the offset: it is a plain string at the end of the event's
//! argument array, so an event whose own last argument is a string looks exactly the
//! same. The server does not append one to every event either: not to events that ask
//! for an acknowledgement, nor to volatile events. The client therefore applies this rule:
//!
//! > While the namespace holds a `pid`, the last argument of an event **without** an ack
//! > id is the offset if it is a string (and not the event name itself).
//!
//! Consequences:
//!
//! - With a server without recovery (no `pid`), nothing is ever taken off.
//! - Events with an ack id are never touched (the server never stores them).
//! - A **volatile** event (or any other event that the server sends without storing it)
//!   whose last argument is a string **loses that argument**, and the string is taken for
//!   the offset. The next recovery then sends an offset that the server does not know,
//!   so the session is not recovered (the namespace connects as a new socket, and
//!   [`Client::recovered`] is false). Avoid a trailing string argument in volatile
//!   events sent to a client with recovery on, for example by adding a non-string last
//!   argument.
//! - If no stored event arrived before the connection dropped, there is no offset yet;
//!   the client sends the `pid` alone, and the Node.js server does not recover without an
//!   offset.
//!
//! # Not done
//!
//! Permessage-deflate, the msgpack parser, the `compress` flag, client certificates other
//! than through [`ClientBuilder::tls_config`].
#![forbid(unsafe_code)]

// The modules, from the top down: each imports only modules below it (and `state` is
// where the handles and the manager meet, so neither imports the other).
//
// builder   ClientBuilder, SocketBuilder, NamespaceBuilder
// client    Client (the handle of a namespace) and its dispatch task
// manager   the task that owns the connection, reconnection and recovery
// state     Cmd, Dispatch, NewNamespace, Auth, the shared status
// event     Event, AckSender, Lifecycle, DisconnectReason, Session
// transport Engine.IO: connection (its task), polling, websocket
// tls, url, typed, backoff, error
mod backoff;
mod builder;
mod client;
mod error;
mod event;
mod manager;
mod state;
mod tls;
mod transport;
mod typed;
mod url;

pub use backoff::Reconnection;
pub use builder::{ClientBuilder, NamespaceBuilder, SocketBuilder};
pub use client::Client;
pub use error::{Error, Result};
pub use event::{AckSender, ClientEvent, DisconnectReason, Event, Lifecycle, Session};
pub use tether_proto::Payload;
pub use transport::Transport;
pub use typed::{from_payload, to_payload, Binary};

/// Re-exported: the type of binary attachments.
pub use bytes::Bytes;
/// Re-exported: rustls, for [`ClientBuilder::tls_config`] and [`Error::tls_error`].
pub use rustls;
/// Re-exported: JSON values and the `json!` macro.
pub use serde_json::{json, Value};
