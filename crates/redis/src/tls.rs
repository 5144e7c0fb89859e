//! TLS to Redis: `rediss://` URLs on rustls (ring), a custom CA, a client certificate.

use redis::{Client, ClientTlsConfig, TlsCertificates};
use tether_backend::tls::{config_error, is_tls_error, read_pem_file, TlsMaterial};
use tether_backend::BackendError;

/// TLS material for a `rediss://` URL. Empty (the default) trusts the platform's root
/// certificates and sends no client certificate.
///
/// The same can come from the URL, as files: `rediss://host:6380/?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem`.
pub type RedisTls = TlsMaterial;

const PARAMS: [&str; 3] = ["tls_ca", "tls_cert", "tls_key"];

fn config_err(msg: impl std::fmt::Display) -> BackendError {
    config_error("redis", msg)
}

/// The client for `url` with `tls`, the URL's `tls_*` parameters taken out.
pub(crate) fn client(url: &str, tls: &RedisTls) -> Result<Client, BackendError> {
    let mut parsed = url::Url::parse(url).map_err(|e| config_err(format!("bad URL: {e}")))?;
    let mut tls = tls.clone();
    let mut rest = Vec::new();
    let mut ours = false;
    for (k, v) in parsed.query_pairs() {
        let Some(slot) = tls.slot(&k, PARAMS) else {
            rest.push((k.into_owned(), v.into_owned()));
            continue;
        };
        *slot = Some(read_pem_file("redis", &k, &v)?);
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
    if tls.is_empty() {
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
    if is_tls_error(e) {
        format!("TLS: {e}")
    } else {
        e.to_string()
    }
}
