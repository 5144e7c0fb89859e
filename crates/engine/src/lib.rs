//! Engine.IO v4 server: HTTP long-polling, WebSocket, the upgrade between them, and
//! heartbeats, as a [`tower_service::Service`] that mounts in hyper or axum.
//!
//! The layer above (Socket.IO) plugs in through [`Handler`]: it is told when a session
//! opens, receives each message, and is told once when the session closes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tether_engine::{Engine, EngineConfig, EngineSocket, Handler, Message, CloseReason};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type Conn = Arc<EngineSocket>;
//!     fn on_open(&self, socket: &Arc<EngineSocket>) -> Self::Conn { socket.clone() }
//!     fn on_message(&self, socket: &Self::Conn, msg: Message<'_>) {
//!         if let Message::Text(t) = msg {
//!             let _ = socket.send(tether_engine::TextMessage::new(t));
//!         }
//!     }
//!     fn on_close(&self, _socket: &Self::Conn, _reason: CloseReason) {}
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let engine = Engine::new(EngineConfig::default(), Echo);
//! tether_engine::serve(tether_engine::bind("127.0.0.1:3000".parse().unwrap())?, engine).await
//! # }
//! ```
#![forbid(unsafe_code)]

mod config;
mod engine;
mod error;
mod outbox;
mod serve;
mod sid;
mod socket;
mod stats;
mod tls;
mod transport;

pub use config::{AllowRequest, Cookie, Cors, EngineConfig, Refusal, SameSite, Transports};
pub use engine::{Engine, Handler, Message};
pub use error::{ProtocolError, SendError};
pub use serve::{bind, serve, serve_with_shutdown};
pub use sid::{random_id, Sid};
pub use socket::{CloseReason, EngineSocket, Handshake, TextMessage, Transport};
pub use stats::{EngineStats, OutboxDepth};
pub use tls::{serve_tls, serve_tls_with_shutdown, TLS_HANDSHAKE_TIMEOUT};
/// The rustls crate the TLS listener takes its [`ServerConfig`](rustls::ServerConfig) from.
pub use tokio_rustls::rustls;
