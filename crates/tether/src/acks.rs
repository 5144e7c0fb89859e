//! What broadcasts with acks collect: one answer (or failure) per target reached.

use crate::{Error, Payload};

/// One target's answer to a broadcast with an ack.
#[derive(Debug)]
pub struct AckResponse {
    /// The socket that answered, when known: sockets of this node and of Tether nodes
    /// say; a Node.js node does not.
    pub socket_id: Option<String>,
    /// The answer, or [`Error::Timeout`] / [`Error::Disconnected`].
    pub result: Result<Payload, Error>,
}

/// What [`emit_with_ack`](crate::BroadcastOperator::emit_with_ack) collected: one
/// entry per target reached.
#[derive(Debug)]
pub struct AckResponses {
    /// The answers (and the failures) of every target reached.
    pub responses: Vec<AckResponse>,
    /// Whether every other node said in time how many sockets it reached. When false,
    /// targets on those nodes are missing from `responses`.
    pub complete: bool,
}

impl AckResponses {
    /// Whether every target was heard from and answered.
    pub fn all_answered(&self) -> bool {
        self.complete && self.responses.iter().all(|r| r.result.is_ok())
    }

    /// The answers that came, in no particular order.
    pub fn answers(&self) -> impl Iterator<Item = &Payload> {
        self.responses.iter().filter_map(|r| r.result.as_ref().ok())
    }
}
