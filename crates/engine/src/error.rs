use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

/// The errors that the Engine.IO protocol answers over HTTP, with the reference's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `0`: the transport is unknown or not enabled.
    #[error("Transport unknown")]
    UnknownTransport,
    /// `1`: no session has this id.
    #[error("Session ID unknown")]
    UnknownSid,
    /// `2`: a handshake must be a GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// `3`: anything else malformed.
    #[error("Bad request")]
    BadRequest,
    /// `4`: refused by the server.
    #[error("Forbidden")]
    Forbidden,
    /// `5`: only `EIO=4` is supported.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl ProtocolError {
    /// The numeric code that the reference server sends.
    pub fn code(self) -> u8 {
        match self {
            Self::UnknownTransport => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest => 3,
            Self::Forbidden => 4,
            Self::UnsupportedProtocolVersion => 5,
        }
    }

    pub(crate) fn response(self) -> Response<Full<Bytes>> {
        let status = if self == Self::Forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        let body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        res
    }
}

/// Why a session could not take a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// The outgoing buffer was full; the session is being closed as recoverable.
    #[error("send buffer full")]
    Full,
}
