//! The interface between Tether's cluster runtime and a cluster backend.
//!
//! A backend (Redis Streams, PostgreSQL, NATS JetStream, ...) implements
//! [`ClusterBackend`], by concern [`LogBackend`], [`SessionBackend`] and [`BusBackend`]:
//! an ordered log of [`ClusterMessage`]s whose [`Position`]s are the
//! offsets clients see, the sessions ([`SessionOp`], [`TakeOutcome`]), and a bus for
//! [`Ephemeral`] requests between nodes. The `tether` crate runs the cluster on top
//! of it (`tether::Server::join_cluster`); a backend crate depends on this crate only.
//!
//! [`wire`] is one JSON form of these types for backends that store JSON.
//!
//! With the **unstable** feature `conformance` (for backends' tests, not covered by
//! semver), [`conformance`] is the suite every backend must pass.
#![forbid(unsafe_code)]

mod backend;
mod message;
mod position;
pub mod tls;
pub mod wire;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{
    BackendError, BoxFuture, BusBackend, ClusterBackend, LogBackend, SessionBackend,
};
pub use message::{
    Broadcast, ClusterMessage, Ephemeral, EphemeralBody, EphemeralSink, Record, Room, Session,
    SessionOp, SocketInfo, SocketsAction, TakeOutcome,
};
pub use position::{OffsetForm, Position};
