//! Wire codecs for Engine.IO v4 and Socket.IO v5, shared by the Tether server and client.
//!
//! Everything here is pure: bytes in, packets out, and an [`Error`] for any input that the
//! protocol does not allow. No function in this crate panics on input from a peer.
//!
//! ```
//! use tether_proto::sio::{Packet, PacketType};
//! let p = Packet::decode(r#"2/chat,7["hello",1]"#).unwrap();
//! assert_eq!(p.ty, PacketType::Event);
//! assert_eq!(p.nsp, "/chat");
//! assert_eq!(p.id, Some(7));
//! assert_eq!(p.encode(), r#"2/chat,7["hello",1]"#);
//! ```
#![forbid(unsafe_code)]

pub mod engine;
mod error;
mod into_payload;
pub mod json;
mod payload;
pub mod sio;

pub use error::Error;
pub use into_payload::{shape_of, IntoPayload, Shape};
pub use payload::Payload;
