use serde_json::Value;

/// The errors of the Socket.IO server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer came before the timeout.
    #[error("operation timed out")]
    Timeout,
    /// The socket disconnected before it answered.
    #[error("socket disconnected")]
    Disconnected,
    /// The socket's outgoing buffer is full or the socket is closed.
    #[error("could not send: {0}")]
    Send(#[from] tether_engine::SendError),
    /// The cluster backend failed (unreachable, or it does not support the operation).
    #[error(transparent)]
    Cluster(#[from] tether_backend::BackendError),
    /// The admin UI's basic auth was given a password that is not a bcrypt hash.
    #[error("the admin UI password must be a bcrypt hash")]
    AdminPasswordHash(#[source] bcrypt::BcryptError),
    /// An I/O error, while binding or serving.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// What was to be sent does not serialize to JSON.
    #[error("could not serialize: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A handler's arguments do not fit the type its [`Data`](crate::extract::Data)
    /// extractor asked for.
    #[error("invalid arguments: {0}")]
    Deserialize(#[source] serde_json::Error),
    /// A handler takes an [`AckSender`](crate::extract::AckSender) but the client asked
    /// for no acknowledgement.
    #[error("the client asked for no acknowledgement")]
    NoAck,
    /// No [`State`](crate::extract::State) of this type was set on the server.
    #[error("no server state of type {0}")]
    MissingState(&'static str),
    /// No [`Extension`](crate::extract::Extension) of this type on the socket or its
    /// handshake request.
    #[error("no extension of type {0}")]
    MissingExtension(&'static str),
    /// An extractor used in a handler it has no meaning in (the extractor, then the kind
    /// of handler it belongs to).
    #[error("{0} is only available in {1} handlers")]
    WrongHandler(&'static str, &'static str),
}

impl Error {
    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }
}

/// A middleware's refusal, sent to the client as CONNECT_ERROR `{message, data}`.
///
/// ```
/// use tether::ConnectError;
/// let e = ConnectError::new("not authorized").with_data(serde_json::json!({"retry": false}));
/// assert_eq!(e.message, "not authorized");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    /// The message the client sees as `err.message`.
    pub message: String,
    /// Extra data the client sees as `err.data`.
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> Self {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    /// Attaches data.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut v = serde_json::json!({ "message": self.message });
        if let (Some(d), Some(o)) = (&self.data, v.as_object_mut()) {
            o.insert("data".into(), d.clone());
        }
        v
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}
