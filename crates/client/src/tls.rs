//! TLS on rustls (ring): the client configuration, and the stream of `wss://`.
//!
//! The platform's root certificates (`rustls-native-certs`: the system store, or the
//! files `SSL_CERT_FILE` / `SSL_CERT_DIR` name) are the default; custom roots or a whole
//! [`rustls::ClientConfig`] replace them.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Which certificates the client trusts.
#[derive(Clone, Default)]
pub(crate) enum TlsOptions {
    /// The platform's roots.
    #[default]
    Platform,
    /// These roots only.
    Roots(Vec<CertificateDer<'static>>),
    /// The user's configuration, as it is.
    Config(Arc<ClientConfig>),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The platform's roots, read once per process.
fn platform_roots() -> Result<Arc<RootCertStore>> {
    static ROOTS: OnceLock<std::result::Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "no root certificate found on this system ({}); give one with \
                     ClientBuilder::tls_root_certificate",
                    errors.join("; ")
                ));
            }
            tracing::debug!(added, "platform root certificates loaded");
            Ok(Arc::new(store))
        })
        .clone()
        .map_err(Error::Config)
}

impl TlsOptions {
    /// The configuration to connect with.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let roots = match self {
            TlsOptions::Config(c) => return Ok(c.clone()),
            TlsOptions::Platform => platform_roots()?,
            TlsOptions::Roots(certs) => {
                let mut store = RootCertStore::empty();
                for c in certs {
                    store
                        .add(c.clone())
                        .map_err(|e| Error::Config(format!("invalid root certificate: {e}")))?;
                }
                Arc::new(store)
            }
        };
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }
}

/// Parses PEM certificates (`-----BEGIN CERTIFICATE-----`).
pub(crate) fn parse_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config("no certificate in the PEM data".into()));
    }
    Ok(certs)
}

/// The TCP or TLS stream under a WebSocket.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Opens a TCP connection, and a TLS session over it if `tls` is given.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Stream> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(Error::transport)?;
    let _ = tcp.set_nodelay(true);
    let Some(cfg) = tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Config(format!("invalid TLS server name {host:?}: {e}")))?;
    let mut cfg = cfg.clone();
    if !cfg.alpn_protocols.is_empty() {
        // The WebSocket handshake is HTTP/1.1.
        let mut c = (*cfg).clone();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg = Arc::new(c);
    }
    let s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(Error::transport)?;
    Ok(Stream::Tls(Box::new(s)))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pem_parsing() {
        assert!(parse_pem(b"nothing").is_err());
        assert!(
            parse_pem(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }
}
