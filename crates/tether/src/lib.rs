//! Tether: a Socket.IO v5 server with connection state recovery.
//!
//! The official `socket.io-client` 4.x connects to it with no special option. When a client
//! drops for a moment, it comes back with the same socket id, its rooms and its `data`,
//! and receives every event it missed, once and in order: see [`recovery`].
//!
//! Handlers are sync or async functions of typed [extractors](extract), as in axum; they
//! never hold up the connection (see [`handler`]). Anything `Serialize` can be emitted.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use tether::extract::{AckSender, Data};
//! use tether::{RecoveryConfig, Server, ServerConfig, SocketRef};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Chat { room: String, text: String }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), tether::Error> {
//!     let io = Server::new(ServerConfig {
//!         recovery: Some(RecoveryConfig::default()),
//!         ..ServerConfig::default()
//!     });
//!     io.of("/").on_connection(|socket: SocketRef| {
//!         println!("{} connected (recovered: {})", socket.id(), socket.recovered());
//!         socket.on("join", |socket: SocketRef, Data(room): Data<String>| socket.join(room));
//!         socket.on("chat", |socket: SocketRef, Data(msg): Data<Chat>, ack: AckSender| async move {
//!             let sent = socket.namespace().to(msg.room.clone()).emit("chat", &msg);
//!             let _ = ack.send(sent.is_ok());
//!         });
//!     });
//!     io.listen("127.0.0.1:3000".parse().unwrap()).await
//! }
//! ```
#![forbid(unsafe_code)]

mod acks;
mod adapter;
pub mod admin;
mod client;
pub mod cluster;
mod config;
mod encode;
mod error;
pub mod extract;
pub mod handler;
pub mod layer;
pub mod metrics;
mod namespace;
mod operators;
mod reason;
pub mod recovery;
mod remote;
mod server;
mod sync;
mod tls;
mod trace;

pub use acks::{AckResponse, AckResponses};
pub use adapter::BroadcastOptions;
pub use cluster::ServerSideAck;
pub use config::ServerConfig;
pub use error::{ConnectError, Error};
pub use namespace::{AckSender, Namespace, Socket, SocketRef};
pub use operators::BroadcastOperator;
pub use reason::DisconnectReason;
pub use recovery::RecoveryConfig;
pub use remote::RemoteSocket;
pub use server::{DynamicNamespace, Server, SioHandler};
pub use tether_engine::{bind, rustls, Cors, EngineConfig, Sid, Transports};
pub use tether_proto::{IntoPayload, Payload};
