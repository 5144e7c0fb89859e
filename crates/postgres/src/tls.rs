//! TLS to PostgreSQL on rustls (ring): `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! in the URL, as libpq reads them, or a [`PostgresTls`] in the configuration.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tether_backend::BackendError;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection uses TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, else plain text (libpq's default). As in libpq, the
    /// certificate is checked only when a CA is given (then as [`SslMode::VerifyCa`]).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked as with `Prefer`.
    Require,
    /// TLS, with a certificate signed by a trusted CA, whatever host name it names.
    VerifyCa,
    /// TLS, with a certificate signed by a trusted CA and valid for the host name: what a
    /// connection over an untrusted network needs.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, BackendError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(config_err(format!(
                    "sslmode={other} (use disable, prefer, require, verify-ca or verify-full)"
                )))
            }
        })
    }
}

/// TLS options, on top of what the URL says (the URL's parameters win).
///
/// With neither a CA here nor `sslrootcert` in the URL, `verify-ca` and `verify-full`
/// trust the platform's root certificates (libpq would read `~/.postgresql/root.crt`);
/// `sslrootcert=system` says so explicitly.
#[derive(Clone, Default)]
pub struct PostgresTls {
    /// `sslmode` when the URL has none ([`SslMode::Prefer`]).
    pub mode: SslMode,
    /// The CA certificates to trust (PEM), as `sslrootcert`.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain (PEM), as `sslcert`, for `cert` authentication or
    /// `clientcert=verify-full`.
    pub client_cert: Option<Vec<u8>>,
    /// The client certificate's private key (PEM), as `sslkey`.
    pub client_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for PostgresTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTls")
            .field("mode", &self.mode)
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
    BackendError::new(format!("postgres TLS configuration: {msg}"))
}

/// The connection settings of `url` and the TLS connector they ask for.
pub(crate) fn configure(
    url: &str,
    tls: &PostgresTls,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), BackendError> {
    let mut tls = tls.clone();
    let mut system_roots = false;
    let mut mode = None;
    let rest = match url.split_once('?') {
        Some((base, query))
            if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
        {
            // The other parameters stay as they were written (tokio-postgres decodes
            // them its own way).
            let mut kept = Vec::new();
            for raw in query.split('&').filter(|p| !p.is_empty()) {
                let Some((k, v)) = url::form_urlencoded::parse(raw.as_bytes()).next() else {
                    continue;
                };
                match &*k {
                    "sslmode" => mode = Some(SslMode::parse(&v)?),
                    "sslrootcert" if v == "system" => system_roots = true,
                    "sslrootcert" => tls.ca = Some(read(&k, &v)?),
                    "sslcert" => tls.client_cert = Some(read(&k, &v)?),
                    "sslkey" => tls.client_key = Some(read(&k, &v)?),
                    _ => kept.push(raw),
                }
            }
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        _ => url.to_owned(),
    };
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| config_err(e))?;
    let mut mode = mode.unwrap_or(match pg.get_ssl_mode() {
        // A key=value string's own `sslmode` (tokio-postgres reads disable, prefer and
        // require there).
        PgSslMode::Disable => SslMode::Disable,
        PgSslMode::Require => SslMode::Require,
        _ => tls.mode,
    });
    if system_roots && mode != SslMode::Disable {
        // As libpq: `sslrootcert=system` implies verify-full.
        mode = SslMode::VerifyFull;
    }
    pg.ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        _ => PgSslMode::Require,
    });
    let config = client_config(mode, &tls)?;
    Ok((pg, MakeRustlsConnect::new(config)))
}

fn read(param: &str, path: &str) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| config_err(format!("{param}={path}: {e}")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(mode: SslMode, tls: &PostgresTls) -> Result<ClientConfig, BackendError> {
    let provider = provider();
    let roots = match &tls.ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| config_err(format!("the CA (PEM): {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| config_err(format!("the CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(config_err("the CA holds no certificate"));
            }
            roots
        }
        None => {
            let mut roots = RootCertStore::empty();
            if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(config_err(
                        "no CA given (sslrootcert) and no platform root certificates found",
                    ));
                }
            }
            roots
        }
    };
    let check = match mode {
        SslMode::VerifyFull => Check::Full,
        SslMode::VerifyCa => Check::Chain,
        _ if tls.ca.is_some() => Check::Chain,
        _ => Check::Nothing,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;
    let builder = match check {
        Check::Full => builder.with_root_certificates(roots),
        Check::Chain => {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(config_err)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
        }
        Check::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider))),
    };
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config_err(format!("the client certificate (PEM): {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| config_err(format!("the client key (PEM): {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_err(format!("the client certificate: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(config_err(
            "a client certificate needs its key (sslcert and sslkey)",
        )),
    }
}

enum Check {
    Full,
    Chain,
    Nothing,
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA, as libpq: encrypted, the certificate unchecked
/// (the handshake's signatures still are).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `e` and its sources, `: `-separated (tokio-postgres leaves the cause out of its
/// message: "error performing TLS handshake", "invalid configuration").
pub(crate) fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
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

/// Whether `e` or one of its sources is a rustls error (also inside an I/O error).
pub(crate) fn from_tls(e: &(dyn std::error::Error + 'static)) -> bool {
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
        next = e.source();
    }
    false
}

/// Where and how to connect: the settings and the TLS connector.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
}

impl Target {
    /// Opens one connection.
    pub(crate) async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_parameters_stay_as_written() {
        let (pg, _) = configure(
            "postgres://u@h:5432/db?options=-c%20search_path%3Dx&sslmode=require",
            &PostgresTls::default(),
        )
        .expect("configure");
        assert_eq!(pg.get_options(), Some("-c search_path=x"));
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Require);
        let (pg, _) = configure(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=system",
            &PostgresTls::default(),
        )
        .expect("configure");
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Require);
        let (pg, _) =
            configure("host=h user=u sslmode=disable", &PostgresTls::default()).expect("key=value");
        assert_eq!(pg.get_ssl_mode(), PgSslMode::Disable);
    }

    #[test]
    fn bad_values_are_configuration_errors() {
        for url in [
            "postgres://u@h/db?sslmode=maybe",
            "postgres://u@h/db?sslrootcert=/nonexistent/ca.pem",
            "postgres://u@h/db?sslcert=/nonexistent/c.pem",
        ] {
            let e = configure(url, &PostgresTls::default())
                .map(|_| ())
                .expect_err(url);
            assert!(
                e.to_string().contains("postgres TLS configuration"),
                "{url}: {e}"
            );
        }
        let half = PostgresTls {
            client_cert: Some(b"x".to_vec()),
            ..PostgresTls::default()
        };
        let e = configure("postgres://u@h/db", &half)
            .map(|_| ())
            .expect_err("half");
        assert!(e.to_string().contains("needs its key"), "{e}");
        let garbage = PostgresTls {
            ca: Some(b"not a certificate".to_vec()),
            ..PostgresTls::default()
        };
        let e = configure("postgres://u@h/db", &garbage)
            .map(|_| ())
            .expect_err("garbage");
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
