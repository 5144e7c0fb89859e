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
    /// The most binary attachments one packet may announce (256).
    pub max_attachments: usize,
    /// Connection state recovery for every namespace (off); namespaces may override it.
    pub recovery: Option<RecoveryConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_secs(45),
            max_attachments: 256,
            recovery: None,
        }
    }
}
