//! TLS material for connections to a backend, on rustls with the ring provider (the one
//! TLS stack of the workspace): the CA to trust, a client certificate, and the checks
//! every backend crate shares (PEM parsing, platform roots, telling a TLS failure apart).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::BackendError;

/// PEM material for a TLS connection to a backend. Empty (the default): the platform's
/// root certificates, no client certificate.
///
/// ```
/// use tether_backend::tls::TlsMaterial;
/// let tls = TlsMaterial::default();
/// assert!(tls.is_empty());
/// assert!(tls.roots("redis").unwrap().is_none()); // no CA: the caller picks the roots
/// ```
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// The CA certificates to trust instead of the platform's (PEM).
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain (PEM), for servers that ask for one.
    pub client_cert: Option<Vec<u8>>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("client_cert", &self.client_cert.as_ref().map(|_| "<pem>"))
            .field(
                "client_key",
                &self.client_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A configuration error of `backend`'s TLS.
pub fn config_error(backend: &str, msg: impl std::fmt::Display) -> BackendError {
    BackendError::new(format!("{backend} TLS configuration: {msg}"))
}

impl TlsMaterial {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_cert.is_none() && self.client_key.is_none()
    }

    /// The slot a URL parameter names (`names` are the backend's: `[ca, cert, key]`), if
    /// it is one.
    pub fn slot(&mut self, param: &str, names: [&str; 3]) -> Option<&mut Option<Vec<u8>>> {
        match param {
            p if p == names[0] => Some(&mut self.ca),
            p if p == names[1] => Some(&mut self.client_cert),
            p if p == names[2] => Some(&mut self.client_key),
            _ => None,
        }
    }

    /// The trusted CA as a root store, or `None` without a CA. An error when the PEM holds
    /// no certificate or a bad one.
    pub fn roots(&self, backend: &str) -> Result<Option<RootCertStore>, BackendError> {
        let Some(pem) = &self.ca else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| config_error(backend, format!("the CA (PEM): {e}")))?;
            roots
                .add(cert)
                .map_err(|e| config_error(backend, format!("the CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(config_error(backend, "the CA holds no certificate"));
        }
        Ok(Some(roots))
    }

    /// The client certificate chain and its key, or `None` without them; an error when
    /// only one of the two is given or either does not parse.
    #[allow(clippy::type_complexity)]
    pub fn identity(
        &self,
        backend: &str,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, BackendError> {
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        config_error(backend, format!("the client certificate (PEM): {e}"))
                    })?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| config_error(backend, format!("the client key (PEM): {e}")))?;
                Ok(Some((chain, key)))
            }
            (None, None) => Ok(None),
            _ => Err(config_error(
                backend,
                "a client certificate needs its key, and a key its certificate",
            )),
        }
    }

    /// A rustls client configuration with this material: the CA, else the platform's
    /// roots; the client certificate when given.
    pub fn client_config(&self, backend: &str) -> Result<rustls::ClientConfig, BackendError> {
        let roots = match self.roots(backend)? {
            Some(r) => r,
            None => platform_roots(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(backend, e))?
            .with_root_certificates(roots);
        match self.identity(backend)? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(backend, format!("the client certificate: {e}"))),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

/// Reads the PEM file a URL parameter names.
pub fn read_pem_file(backend: &str, param: &str, path: &str) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| config_error(backend, format!("{param}={path}: {e}")))
}

/// The platform's root certificates (those that parse).
pub fn platform_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}

/// The ring crypto provider.
pub fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `e` and its sources, `: `-separated, each said once (many clients leave the cause out
/// of their message: "error performing TLS handshake").
pub fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = s.source();
    }
    text
}

/// Whether `e` or one of its sources is a rustls error (also inside an I/O error, or
/// behind an `Arc`, as the `redis` crate gives its causes), so a wrong CA or host name
/// can be reported as TLS.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if is_tls_error(inner) {
                return true;
            }
        }
        if let Some(inner) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            if is_tls_error(&**inner) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_material_is_a_clear_configuration_error() {
        let only_cert = TlsMaterial {
            client_cert: Some(b"x".to_vec()),
            ..TlsMaterial::default()
        };
        let e = only_cert.identity("redis").expect_err("half an identity");
        assert!(e.to_string().contains("redis TLS configuration:"), "{e}");
        let empty_ca = TlsMaterial {
            ca: Some(b"not pem".to_vec()),
            ..TlsMaterial::default()
        };
        let e = empty_ca.roots("nats").expect_err("no certificate");
        assert!(e.to_string().contains("the CA holds no certificate"), "{e}");
        let e = read_pem_file("postgres", "sslrootcert", "/nonexistent.pem").expect_err("no file");
        assert!(
            e.to_string().contains("sslrootcert=/nonexistent.pem"),
            "{e}"
        );
        let io = std::io::Error::other(rustls::Error::General("x".into()));
        assert!(is_tls_error(&io));
        assert!(!is_tls_error(&std::io::Error::other("plain")));
    }
}
