use tether_engine::CloseReason;

/// Why a socket left its namespace. [`as_str`](Self::as_str) gives the reference's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The connection closed (the client went away or the network dropped).
    TransportClose,
    /// The connection failed.
    TransportError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The client sent a packet that does not parse.
    ParseError,
    /// The server closed the connection (for example `disconnect(true)` or a kill).
    ForcedClose,
    /// The server is shutting down.
    ServerShutdown,
    /// The client read too slowly and its outgoing buffer overflowed.
    SendBufferFull,
    /// The client left the namespace (`socket.disconnect()` on the client).
    ClientNamespaceDisconnect,
    /// The server removed the socket from the namespace.
    ServerNamespaceDisconnect,
}

impl DisconnectReason {
    /// The reason string that the reference server uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TransportClose => "transport close",
            Self::TransportError => "transport error",
            Self::PingTimeout => "ping timeout",
            Self::ParseError => "parse error",
            Self::ForcedClose => "forced close",
            Self::ServerShutdown => "server shutting down",
            Self::SendBufferFull => "send buffer full",
            Self::ClientNamespaceDisconnect => "client namespace disconnect",
            Self::ServerNamespaceDisconnect => "server namespace disconnect",
        }
    }

    /// Whether connection state recovery keeps the session after this disconnection.
    pub fn is_recoverable(self) -> bool {
        !matches!(
            self,
            Self::ParseError | Self::ClientNamespaceDisconnect | Self::ServerNamespaceDisconnect
        )
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(r: CloseReason) -> Self {
        match r {
            CloseReason::TransportClose => Self::TransportClose,
            CloseReason::TransportError => Self::TransportError,
            CloseReason::PingTimeout => Self::PingTimeout,
            CloseReason::ParseError => Self::ParseError,
            CloseReason::ForcedClose => Self::ForcedClose,
            CloseReason::ServerShutdown => Self::ServerShutdown,
            CloseReason::SendBufferFull => Self::SendBufferFull,
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
