use std::time::Duration;

/// Engine.IO server options. The defaults are the reference server's.
///
/// ```
/// use std::time::Duration;
/// use tether_engine::EngineConfig;
/// let config = EngineConfig {
///     ping_interval: Duration::from_secs(10),
///     ..EngineConfig::default()
/// };
/// assert_eq!(config.path, "/socket.io/");
/// ```
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The HTTP path that the engine serves (`/socket.io/`).
    pub path: String,
    /// How often the server pings each client (25 s).
    pub ping_interval: Duration,
    /// How long the server waits for a pong before it closes the session (20 s).
    pub ping_timeout: Duration,
    /// The largest message or polling body a client may send, in bytes (1 000 000).
    pub max_payload: usize,
    /// How long a WebSocket upgrade may take (10 s).
    pub upgrade_timeout: Duration,
    /// Which transports clients may use (both).
    pub transports: Transports,
    /// How many packets may wait for a slow client before its session is closed as a
    /// recoverable `"send buffer full"` disconnect (65 536). Never a silent drop.
    ///
    /// A long-polling client collects what waits at each poll, so a burst of tens of
    /// thousands of events to it must fit here; the byte budget below is what bounds
    /// memory.
    pub max_buffered_packets: usize,
    /// How many bytes may wait for a slow client, counting 48 bytes per packet on top of
    /// its payload, before its session is closed as `"send buffer full"` (8 MiB). One
    /// packet larger than this is still sent when nothing else waits.
    ///
    /// The reference has no bound: one client that sends requests and never reads the
    /// answers could make it hold gigabytes.
    pub max_buffered_bytes: usize,
    /// How long one write to a WebSocket may wait for a peer that does not read (20 s);
    /// then the connection is dropped (a recoverable `"transport error"`) and its
    /// buffers are freed.
    pub write_timeout: Duration,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open waiting for the next request (30 s; Node's
    /// `headersTimeout` is 60 s). Used by [`serve`](crate::serve).
    pub header_read_timeout: Duration,
    /// How long a polling client may take to send the body of one POST (30 s).
    pub body_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted, in bytes (16 KiB,
    /// as Node's `maxHeaderSize`); a larger one is answered `431 Request Header Fields
    /// Too Large`. Used by [`serve`](crate::serve); at least 8 KiB.
    pub max_header_bytes: usize,
    /// Cross-origin access for browsers on other origins (off).
    pub cors: Option<Cors>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/socket.io/".to_owned(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_secs(10),
            transports: Transports::default(),
            max_buffered_packets: 65_536,
            max_buffered_bytes: 8 << 20,
            write_timeout: Duration::from_secs(20),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 << 10,
            cors: None,
        }
    }
}

/// The transports a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// HTTP long-polling.
    pub polling: bool,
    /// WebSocket (direct, or by upgrade from polling).
    pub websocket: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            polling: true,
            websocket: true,
        }
    }
}

/// Cross-origin resource sharing for the polling transport.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Origins allowed; empty means any origin (the request's origin is echoed back).
    pub origins: Vec<String>,
    /// Whether to send `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
}

impl Cors {
    /// Any origin, with credentials.
    pub fn any() -> Self {
        Cors {
            origins: Vec::new(),
            credentials: true,
        }
    }
}
