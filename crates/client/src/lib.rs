//! placeholder
#![forbid(unsafe_code)]

mod backoff;
mod client;
mod engine;
mod error;
mod manager;
mod payload;
mod url;

pub use backoff::Reconnection;
pub use client::{
    AckSender, AuthFn, Client, ClientBuilder, DisconnectReason, Event, EventHandler, Lifecycle,
    LifecycleHandler, SocketBuilder,
};
pub use engine::Transport;
pub use error::{Error, Result};
pub use payload::Payload;
pub use bytes::Bytes;
pub use serde_json::{json, Value};
