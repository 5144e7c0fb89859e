//! The crate's error type.

use std::sync::Arc;

use serde_json::Value;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
///
/// Errors are cheap to clone (an underlying I/O error is shared), so that one failure can
/// be reported to several namespaces and lifecycle handlers. Use the `is_*` predicates
/// rather than matching when you only need the kind:
///
/// ```
/// # use tether_client::Error;
/// let e = Error::Timeout;
/// assert!(e.is_timeout());
/// assert!(!e.is_connect_error());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL, a header or an option given to the builder is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// This version of the client does not support something the configuration asks for.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The server refused to connect the namespace (a Socket.IO `CONNECT_ERROR` packet),
    /// usually because a middleware rejected the `auth` data.
    #[error("namespace {nsp:?} refused the connection: {message}")]
    ConnectError {
        /// The namespace that refused.
        nsp: String,
        /// `err.message` on the server.
        message: String,
        /// `err.data` on the server, if it set one.
        data: Option<Value>,
    },
    /// An operation did not complete in time: the connection attempt (see
    /// [`ClientBuilder::timeout`](crate::ClientBuilder::timeout)) or an acknowledgement.
    #[error("operation timed out")]
    Timeout,
    /// The server speaks another protocol version than Engine.IO v4 / Socket.IO v5
    /// (for example a Socket.IO 2.x server, or a server that answers
    /// `{"code":5,"message":"Unsupported protocol version"}`).
    #[error("the server speaks another protocol version: {0}")]
    ProtocolVersion(String),
    /// The server sent something that the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An HTTP request of the polling transport or of the WebSocket handshake got an
    /// unexpected status.
    #[error("HTTP status {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// TLS failed: the server's certificate is not trusted (unknown issuer, expired, not
    /// valid for the host name...) or the handshake failed. [`Error::tls_error`] gives
    /// rustls' error.
    #[error("TLS error: {0}")]
    Tls(#[source] rustls::Error),
    /// The network failed (connection refused, reset, closed...).
    #[error("transport error: {}", chain(.0.as_ref()))]
    Transport(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The namespace was disconnected while the operation was pending (an
    /// acknowledgement whose packet had already been sent).
    #[error("the socket has been disconnected")]
    Disconnected,
    /// The client was closed: by [`Client::disconnect`](crate::Client::disconnect),
    /// by the server, or because reconnection gave up.
    #[error("the client is closed")]
    Closed,
    /// Arguments did not (de)serialize: the user's type does not match what the server
    /// sent, or a value is not JSON (see [`to_payload`](crate::to_payload)).
    #[error("{context}: {source}")]
    Serde {
        /// What was being (de)serialized (`argument 0 of event "chat"`...).
        context: String,
        /// serde_json's error.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// The event name is reserved by Socket.IO (`connect`, `disconnect`...).
    #[error("{0:?} is a reserved event name")]
    ReservedEvent(String),
}

impl Error {
    /// A network error, or [`Error::Tls`] if a TLS error is in its chain.
    pub(crate) fn transport(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        match find_tls_error(&e) {
            Some(t) => Error::Tls(t),
            None => Error::Transport(Arc::new(e)),
        }
    }

    pub(crate) fn transport_msg(msg: impl Into<String>) -> Self {
        Error::Transport(Arc::new(Message(msg.into())))
    }

    /// Whether the server refused the namespace connection (`CONNECT_ERROR`).
    pub fn is_connect_error(&self) -> bool {
        matches!(self, Error::ConnectError { .. })
    }

    /// Whether an operation timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }

    /// Whether the server speaks another protocol version.
    pub fn is_protocol_version(&self) -> bool {
        matches!(self, Error::ProtocolVersion(_))
    }

    /// Whether the server violated the protocol (not counting version mismatches).
    pub fn is_protocol(&self) -> bool {
        matches!(self, Error::Protocol(_))
    }

    /// Whether TLS failed: an untrusted, expired or misnamed certificate, or a failed
    /// handshake.
    pub fn is_tls(&self) -> bool {
        matches!(self, Error::Tls(_))
    }

    /// For a [`Error::Tls`], rustls' error, to tell the causes apart:
    ///
    /// ```
    /// # use tether_client::{rustls, Error};
    /// let e = Error::Tls(rustls::Error::InvalidCertificate(
    ///     rustls::CertificateError::UnknownIssuer,
    /// ));
    /// assert!(matches!(
    ///     e.tls_error(),
    ///     Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
    /// ));
    /// ```
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            Error::Tls(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the network or an HTTP request failed (not counting TLS errors, see
    /// [`Error::is_tls`]).
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Transport(_) | Error::Http { .. })
    }

    /// Whether the namespace was disconnected while the operation was pending.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected)
    }

    /// Whether arguments did not (de)serialize into the expected type.
    pub fn is_serde(&self) -> bool {
        matches!(self, Error::Serde { .. })
    }

    /// For a [`Error::ConnectError`], the message the server gave (`err.message`).
    pub fn connect_error_message(&self) -> Option<&str> {
        match self {
            Error::ConnectError { message, .. } => Some(message),
            _ => None,
        }
    }

    pub(crate) fn serde(context: &str, e: serde_json::Error) -> Self {
        Error::Serde {
            context: context.to_owned(),
            source: Arc::new(e),
        }
    }

    /// Whether the client is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    /// For a [`Error::ConnectError`], the `data` the server attached to it.
    ///
    /// ```
    /// # use tether_client::Error;
    /// let e = Error::ConnectError {
    ///     nsp: "/".into(),
    ///     message: "unauthorized".into(),
    ///     data: Some(serde_json::json!({"code": 401})),
    /// };
    /// assert_eq!(e.connect_error_data().unwrap()["code"], 401);
    /// ```
    pub fn connect_error_data(&self) -> Option<&Value> {
        match self {
            Error::ConnectError { data, .. } => data.as_ref(),
            _ => None,
        }
    }
}

/// An error and its sources, `a: b: c` (hyper's errors say little without their sources).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let text = src.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = src.source();
    }
    s
}

/// A plain message used as the source of a transport error.
#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// The first `rustls::Error` in an error's chain, looking inside I/O errors too (whose
/// `source()` skips the error they wrap).
pub(crate) fn find_tls_error(e: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.clone());
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(t) = find_tls_error(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn predicates_and_display() {
        let e = Error::transport_msg("connection reset");
        assert!(e.is_transport());
        assert_eq!(e.to_string(), "transport error: connection reset");
        let e = Error::ProtocolVersion("Engine.IO v3".into());
        assert!(e.is_protocol_version() && !e.is_protocol());
        let e = Error::ConnectError {
            nsp: "/admin".into(),
            message: "no".into(),
            data: None,
        };
        assert!(e.is_connect_error());
        assert_eq!(e.connect_error_data(), None);
        assert_eq!(e.connect_error_message(), Some("no"));
        assert_eq!(Error::Timeout.connect_error_message(), None);
        assert!(e.to_string().contains("/admin"));
        assert!(Error::Disconnected.is_disconnected());
        assert!(Error::Closed.is_closed());
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let t = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, t.clone());
        assert_eq!(find_tls_error(&io), Some(t.clone()));
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(find_tls_error(&Outer(io)), Some(t));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(find_tls_error(&plain), None);
    }
}
