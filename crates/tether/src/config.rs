use std::time::Duration;

use tether_engine::EngineConfig;

use crate::RecoveryConfig;

/// Socket.IO server options. The defaults are the reference's.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Engine.IO options: path, heartbeats, payload limit, transports, CORS.
    pub engine: EngineConfig,
    /// How long a connection may stay without joining any namespace (45 s).
    pub connect_timeout: Duration,
    /// The most binary attachments one packet may announce (10, as the reference's
    /// parser). A packet that announces more closes the connection as a parse error.
    pub max_attachments: usize,
    /// The most bytes of binary attachments that may wait for the rest of their packet
    /// (10 MB: ten attachments of the default `max_payload`). Past it the connection
    /// closes as a parse error, so a peer cannot pin memory with a packet it never
    /// finishes.
    pub max_attachment_bytes: usize,
    /// Connection state recovery for every namespace (off); namespaces may override it.
    pub recovery: Option<RecoveryConfig>,
    /// Removes a child of a dynamic namespace ([`Server::of_dynamic`](crate::Server::of_dynamic))
    /// once its last socket has left, no CONNECT to it is under way and no session this
    /// node keeps for it can still be recovered (then once they expired), with its
    /// recovery state (`cleanupEmptyChildNamespaces` in the reference, which drops kept
    /// sessions at once; off). A later CONNECT creates it anew. In a cluster the kept
    /// sessions are the backend's and survive it.
    pub cleanup_empty_child_namespaces: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            max_attachment_bytes: 10_000_000,
            recovery: None,
            cleanup_empty_child_namespaces: false,
        }
    }
}
