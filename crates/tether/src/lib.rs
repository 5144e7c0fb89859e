//! Tether: a Socket.IO v5 server with connection state recovery.
//!
//! The official `socket.io-client` 4.x connects to it with no special option. When a client
//! drops for a moment, it comes back with the same socket id, its rooms and its `data`,
//! and receives every event it missed, once and in order: see [`recovery`].
//!
//! ```no_run
//! use tether::{Server, ServerConfig, RecoveryConfig, Payload};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), tether::Error> {
//!     let io = Server::new(ServerConfig {
//!         recovery: Some(RecoveryConfig::default()),
//!         ..ServerConfig::default()
//!     });
//!     io.of("/").on_connection(|socket| {
//!         println!("{} connected (recovered: {})", socket.id(), socket.recovered());
//!         socket.on("chat", |socket, payload, _ack| {
//!             socket.namespace().emit("chat", payload);
//!         });
//!     });
//!     io.listen("127.0.0.1:3000".parse().unwrap()).await
//! }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
mod client;
pub mod cluster;
mod config;
mod encode;
mod error;
mod handlers;
pub mod layer;
pub mod metrics;
mod namespace;
mod observe;
mod operators;

mod reason;
pub mod recovery;
mod remote;
mod server;
mod socket;
mod sync;
mod tls;
mod trace;

pub use cluster::ServerSideAck;
pub use config::ServerConfig;
pub use error::{ConnectError, Error};
pub use namespace::Namespace;
pub use operators::{BroadcastOperator, BroadcastOptions};
pub use reason::DisconnectReason;
pub use recovery::RecoveryConfig;
pub use remote::{AckResponse, AckResponses, RemoteSocket};
pub use server::{DynamicNamespace, Server, SioHandler};
pub use socket::{AckSender, EventHandler, Socket, SocketRef};
pub use tether_engine::{bind, rustls, Cors, EngineConfig, Sid, Transports};
pub use tether_proto::Payload;
