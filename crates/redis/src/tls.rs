//! TLS to Redis: `rediss://` URLs on rustls (ring), a custom CA, a client certificate.

use std::path::Path;
use std::sync::Arc;

use redis::{Client, ClientTlsConfig, TlsCertificates};
use tether_backend::BackendError;

/// TLS material for a `rediss://` URL. Empty (the default) trusts the platform's root
/// certificates and sends no client certificate.
///
/// The same can come from the URL, as files: `rediss://host:6380/?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem`.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// The CA certificates to trust instead of the platform's (PEM).
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain (PEM), for servers that ask for one (`tls-auth-clients`).
    pub client_cert: Option<Vec<u8>>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("client_cert", &self.client_cert.as_ref().map(|_| "<pem>"))
            .field(
                "client_key",
                &self.client_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn config_err(msg: impl std::fmt::Display) -> BackendError {
    BackendError::new(format!("redis TLS configuration: {msg}"))
}

fn read(param: &str, path: &str) -> Result<Vec<u8>, BackendError> {
    std::fs::read(Path::new(path)).map_err(|e| config_err(format!("{param}={path}: {e}")))
}

/// The client for `url` with `tls`, the URL's `tls_*` parameters taken out.
pub(crate) fn client(url: &str, tls: &RedisTls) -> Result<Client, BackendError> {
    let mut parsed = url::Url::parse(url).map_err(|e| config_err(format!("bad URL: {e}")))?;
    let mut tls = tls.clone();
    let mut rest = Vec::new();
    let mut ours = false;
    for (k, v) in parsed.query_pairs() {
        let slot = match &*k {
            "tls_ca" => &mut tls.ca,
            "tls_cert" => &mut tls.client_cert,
            "tls_key" => &mut tls.client_key,
            _ => {
                rest.push((k.into_owned(), v.into_owned()));
                continue;
            }
        };
        *slot = Some(read(&k, &v)?);
        ours = true;
    }
    if ours {
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
    }
    if parsed.scheme() == "rediss" {
        install_provider();
    }
    let material = tls.ca.is_some() || tls.client_cert.is_some() || tls.client_key.is_some();
    if !material {
        return Client::open(parsed.as_str()).map_err(config_err);
    }
    if parsed.scheme() != "rediss" {
        return Err(config_err(
            "a CA or client certificate needs a rediss:// URL",
        ));
    }
    let client_tls = match (tls.client_cert, tls.client_key) {
        (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => {
            return Err(config_err(
                "a client certificate needs its key, and a key its certificate",
            ))
        }
    };
    Client::build_with_tls(
        parsed.as_str(),
        TlsCertificates {
            client_tls,
            root_cert: tls.ca,
        },
    )
    .map_err(config_err)
}

/// The `redis` crate builds its rustls configurations on the process-wide provider: make
/// it ring when the process has chosen none (with ring alone in the build, rustls picks
/// it anyway; this keeps `rediss://` working when another crate also enables aws-lc-rs).
pub(crate) fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Says "TLS" in a connection error that comes from the TLS handshake, so a wrong CA or
/// host name reads as such.
pub(crate) fn describe(e: &redis::RedisError) -> String {
    if from_tls(e) {
        format!("TLS: {e}")
    } else {
        e.to_string()
    }
}

/// Whether `e` or one of its sources is a rustls error (also inside an I/O error).
fn from_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if from_tls(inner) {
                return true;
            }
        }
        // `RedisError` gives its cause as an `Arc`, whose own sources skip the cause.
        if let Some(inner) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            if from_tls(&**inner) {
                return true;
            }
        }
        next = e.source();
    }
    false
}
