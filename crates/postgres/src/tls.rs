//! TLS to PostgreSQL on rustls (ring): `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! in the URL, as libpq reads them, or a [`PostgresTls`] in the configuration.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tether_backend::tls::{platform_roots, read_pem_file, ring, TlsMaterial};
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
#[derive(Clone, Debug, Default)]
pub struct PostgresTls {
    /// `sslmode` when the URL has none ([`SslMode::Prefer`]).
    pub mode: SslMode,
    /// The CA to trust (as `sslrootcert`) and a client certificate and key (as `sslcert`
    /// and `sslkey`, for `cert` authentication or `clientcert=verify-full`), PEM.
    pub material: TlsMaterial,
}

fn config_err(msg: impl std::fmt::Display) -> BackendError {
    tether_backend::tls::config_error("postgres", msg)
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
                    "sslrootcert" | "sslcert" | "sslkey" => {
                        if let Some(slot) = tls.material.slot(&k, PARAMS) {
                            *slot = Some(read_pem_file("postgres", &k, &v)?);
                        }
                    }
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

const PARAMS: [&str; 3] = ["sslrootcert", "sslcert", "sslkey"];

fn client_config(mode: SslMode, tls: &PostgresTls) -> Result<ClientConfig, BackendError> {
    let provider = ring();
    let roots = match tls.material.roots("postgres")? {
        Some(roots) => roots,
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            let roots = platform_roots();
            if roots.is_empty() {
                return Err(config_err(
                    "no CA given (sslrootcert) and no platform root certificates found",
                ));
            }
            roots
        }
        None => RootCertStore::empty(),
    };
    let check = match mode {
        SslMode::VerifyFull => Check::Full,
        SslMode::VerifyCa => Check::Chain,
        _ if tls.material.ca.is_some() => Check::Chain,
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
    match tls.material.identity("postgres")? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| config_err(format!("the client certificate: {e}"))),
        None => Ok(builder.with_no_client_auth()),
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

pub(crate) use tether_backend::tls::{is_tls_error as from_tls, with_sources};

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
            material: TlsMaterial {
                client_cert: Some(b"x".to_vec()),
                ..TlsMaterial::default()
            },
            ..PostgresTls::default()
        };
        let e = configure("postgres://u@h/db", &half)
            .map(|_| ())
            .expect_err("half");
        assert!(e.to_string().contains("needs its key"), "{e}");
        let garbage = PostgresTls {
            material: TlsMaterial {
                ca: Some(b"not a certificate".to_vec()),
                ..TlsMaterial::default()
            },
            ..PostgresTls::default()
        };
        let e = configure("postgres://u@h/db", &garbage)
            .map(|_| ())
            .expect_err("garbage");
        assert!(e.to_string().contains("no certificate"), "{e}");
    }
}
