/// A packet that the protocol does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input was empty.
    #[error("empty packet")]
    Empty,
    /// The packet type is not one the protocol defines.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// A binary packet announced an invalid number of attachments.
    #[error("invalid attachment count")]
    BadAttachments,
    /// The namespace is malformed.
    #[error("invalid namespace")]
    BadNamespace,
    /// The ack id is malformed or too large.
    #[error("invalid ack id")]
    BadAckId,
    /// The JSON payload could not be parsed.
    #[error("invalid JSON payload")]
    BadJson,
    /// The JSON payload nests deeper than [`json::MAX_DEPTH`](crate::json::MAX_DEPTH).
    #[error("JSON payload nested too deeply")]
    TooDeep,
    /// The payload does not have the shape this packet type requires.
    #[error("invalid payload for this packet type")]
    BadPayload,
    /// Base64 of a binary packet over polling could not be decoded.
    #[error("invalid base64")]
    BadBase64,
}
