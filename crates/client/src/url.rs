//! Server URLs: parsing the user's URL and building the Engine.IO request URLs.

use crate::error::{Error, Result};

/// Where the Engine.IO server lives, and the query that every request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host[:port]`.
    pub authority: String,
    /// Whether the server is reached over TLS (`https://`, `wss://`).
    pub tls: bool,
    /// The Engine.IO path, with a trailing slash (`/socket.io/`).
    pub path: String,
    /// Extra query pairs, already percent-encoded (`k=v`).
    pub query: Vec<String>,
}

/// The parts of the URL the user gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    pub authority: String,
    /// `https://` or `wss://`.
    pub tls: bool,
    /// The URL's path, which names a namespace as in the JavaScript client (`/` if none).
    pub namespace: String,
    /// The URL's query pairs, as written.
    pub query: Vec<String>,
}

/// Parses `http://host:port/namespace?query` (also `ws://`, `https://`, `wss://`).
pub(crate) fn parse(url: &str) -> Result<ParsedUrl> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("invalid URL {url:?}: {e}")))?;
    let tls = match uri.scheme_str() {
        Some("http" | "ws") => false,
        Some("https" | "wss") => true,
        _ => {
            return Err(Error::Config(format!(
                "URL {url:?} must start with http://, https://, ws:// or wss://"
            )))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| Error::Config(format!("URL {url:?} has no host")))?
        .as_str()
        .to_owned();
    if authority.contains('@') {
        return Err(Error::Config(
            "user info in the URL is not supported".into(),
        ));
    }
    let path = uri.path();
    let namespace = if path.is_empty() { "/" } else { path };
    let query = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(ParsedUrl {
        authority,
        tls,
        namespace: namespace.to_owned(),
        query,
    })
}

/// Normalises an Engine.IO path to start and end with `/`.
pub(crate) fn normalise_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}/")
    }
}

/// Percent-encodes a query component (everything but RFC 3986 unreserved characters).
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Endpoint {
    /// The path and query of an Engine.IO request.
    pub fn path_and_query(&self, transport: &str, sid: Option<&str>) -> String {
        let mut s = format!("{}?EIO=4&transport={transport}", self.path);
        if let Some(sid) = sid {
            s.push_str("&sid=");
            s.push_str(&encode_component(sid));
        }
        for q in &self.query {
            s.push('&');
            s.push_str(q);
        }
        s
    }

    /// The host (without brackets for IPv6) and port to connect to.
    pub fn host_port(&self) -> Result<(String, u16)> {
        let a: http::uri::Authority = self
            .authority
            .parse()
            .map_err(|e| Error::Config(format!("invalid host {:?}: {e}", self.authority)))?;
        let host = a.host().trim_start_matches('[').trim_end_matches(']');
        let port = a.port_u16().unwrap_or(if self.tls { 443 } else { 80 });
        Ok((host.to_owned(), port))
    }

    /// The URL of a polling request.
    pub fn polling_url(&self, sid: Option<&str>) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "https" } else { "http" },
            self.authority,
            self.path_and_query("polling", sid)
        )
    }

    /// The URL of a WebSocket connection.
    pub fn ws_url(&self, sid: Option<&str>) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "wss" } else { "ws" },
            self.authority,
            self.path_and_query("websocket", sid)
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let p = parse("http://localhost:3000").unwrap();
        assert_eq!(p.authority, "localhost:3000");
        assert_eq!(p.namespace, "/");
        assert!(p.query.is_empty());
        let p = parse("ws://127.0.0.1:1/admin?token=a%20b&x=1").unwrap();
        assert_eq!(p.namespace, "/admin");
        assert_eq!(p.query, vec!["token=a%20b", "x=1"]);
        assert!(parse("https://example.com").unwrap().tls);
        assert!(parse("wss://example.com/x").unwrap().tls);
        assert!(!p.tls);
        assert!(matches!(parse("ftp://example.com"), Err(Error::Config(_))));
        assert!(matches!(parse("not a url"), Err(Error::Config(_))));
    }

    #[test]
    fn builds_request_urls() {
        let mut e = Endpoint {
            authority: "h:1".into(),
            tls: false,
            path: normalise_path("socket.io"),
            query: vec!["a=b".into(), format!("c={}", encode_component("d e&é"))],
        };
        assert_eq!(
            e.polling_url(None),
            "http://h:1/socket.io/?EIO=4&transport=polling&a=b&c=d%20e%26%C3%A9"
        );
        assert_eq!(
            e.ws_url(Some("x+y")),
            "ws://h:1/socket.io/?EIO=4&transport=websocket&sid=x%2By&a=b&c=d%20e%26%C3%A9"
        );
        assert_eq!(e.host_port().unwrap(), ("h".to_owned(), 1));
        e.tls = true;
        assert!(e.polling_url(None).starts_with("https://h:1/"));
        assert!(e.ws_url(None).starts_with("wss://h:1/"));
        e.authority = "[::1]".into();
        assert_eq!(e.host_port().unwrap(), ("::1".to_owned(), 443));
        assert_eq!(normalise_path("/"), "/");
        assert_eq!(normalise_path("/a/b"), "/a/b/");
    }
}
