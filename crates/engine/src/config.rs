use std::sync::Arc;
use std::time::Duration;

use crate::Handshake;

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
    /// Cross-origin access for browsers on other origins (off). Behind a tower stack,
    /// `tower-http`'s `CorsLayer` does the same (and more); leave this off then.
    pub cors: Option<Cors>,
    /// Decides whether a handshake (or WebSocket upgrade) request may open a session
    /// (`allowRequest` in the reference): refused ones get the status and a JSON body
    /// `{"code":4,"message":...}`. Off: every request may.
    pub allow_request: Option<AllowRequest>,
    /// A cookie holding the session id, set on the handshake response, for load
    /// balancers with sticky sessions (`cookie` in the reference). Off.
    pub cookie: Option<Cookie>,
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
            allow_request: None,
            cookie: None,
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

/// Why a request may not open a session: the HTTP status and the message of the JSON
/// body `{"code":4,"message":...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status of the answer (403 in the reference).
    pub status: http::StatusCode,
    /// The message the body carries.
    pub message: String,
}

impl Refusal {
    /// A refusal with this status and message.
    pub fn new(status: http::StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }

    /// `403 Forbidden`, as the reference answers.
    pub fn forbidden() -> Self {
        Refusal::new(http::StatusCode::FORBIDDEN, "Forbidden")
    }

    pub(crate) fn response(&self) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let body = serde_json::json!({ "code": 4, "message": self.message });
        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )));
        *res.status_mut() = self.status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        res
    }
}

type AllowFn = dyn Fn(&Handshake) -> Result<(), Refusal> + Send + Sync;

/// The [`allow_request`](EngineConfig::allow_request) hook: sees the request (URI,
/// headers, remote address, extensions) before a session exists.
///
/// ```
/// use tether_engine::{AllowRequest, EngineConfig, Refusal};
/// let config = EngineConfig {
///     allow_request: Some(AllowRequest::new(|req| {
///         match req.headers.get("x-api-key") {
///             Some(k) if k == "secret" => Ok(()),
///             _ => Err(Refusal::new(http::StatusCode::UNAUTHORIZED, "no key")),
///         }
///     })),
///     ..EngineConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct AllowRequest(Arc<AllowFn>);

impl AllowRequest {
    /// The hook.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&Handshake) -> Result<(), Refusal> + Send + Sync + 'static,
    {
        AllowRequest(Arc::new(f))
    }

    pub(crate) fn check(&self, req: &Handshake) -> Result<(), Refusal> {
        (self.0)(req)
    }
}

impl std::fmt::Debug for AllowRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AllowRequest(..)")
    }
}

/// The session cookie's attributes (the reference's `cookie` option; its defaults with
/// [`Cookie::default`]: `io`, `Path=/`, `HttpOnly`, `SameSite=Lax`).
///
/// ```
/// use tether_engine::{Cookie, SameSite};
/// let c = Cookie { name: "sticky".into(), same_site: Some(SameSite::Strict), ..Cookie::default() };
/// assert_eq!(c.header_value("abc"), "sticky=abc; Path=/; HttpOnly; SameSite=Strict");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// The cookie's name (`io`).
    pub name: String,
    /// `Path` (`/`); `None` leaves it out.
    pub path: Option<String>,
    /// `HttpOnly` (on).
    pub http_only: bool,
    /// `SameSite` (`Lax`); `None` leaves it out.
    pub same_site: Option<SameSite>,
    /// `Secure` (off).
    pub secure: bool,
    /// `Max-Age`; `None` (a session cookie) by default.
    pub max_age: Option<Duration>,
}

impl Default for Cookie {
    fn default() -> Self {
        Cookie {
            name: "io".to_owned(),
            path: Some("/".to_owned()),
            http_only: true,
            same_site: Some(SameSite::Lax),
            secure: false,
            max_age: None,
        }
    }
}

/// The `SameSite` attribute of a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None` (browsers then require `Secure`).
    None,
}

impl Cookie {
    /// The `Set-Cookie` value for a session id.
    pub fn header_value(&self, sid: &str) -> String {
        let mut v = format!("{}={sid}", self.name);
        if let Some(p) = &self.path {
            v.push_str("; Path=");
            v.push_str(p);
        }
        if let Some(age) = self.max_age {
            v.push_str(&format!("; Max-Age={}", age.as_secs()));
        }
        if self.http_only {
            v.push_str("; HttpOnly");
        }
        if self.secure {
            v.push_str("; Secure");
        }
        match self.same_site {
            Some(SameSite::Strict) => v.push_str("; SameSite=Strict"),
            Some(SameSite::Lax) => v.push_str("; SameSite=Lax"),
            Some(SameSite::None) => v.push_str("; SameSite=None"),
            None => {}
        }
        v
    }

    pub(crate) fn header(&self, sid: &str) -> Option<http::HeaderValue> {
        http::HeaderValue::from_str(&self.header_value(sid)).ok()
    }
}
