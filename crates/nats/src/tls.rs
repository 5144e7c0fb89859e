//! TLS to NATS on rustls (ring): `tls://` URLs (or any URL with TLS material), a custom
//! CA, a client certificate. User and password (`tls://user:pass@host`) or a token
//! (`nats://token@host`) come from the URL, as async-nats reads them.

use std::sync::Arc;

use async_nats::ConnectOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tether_backend::BackendError;

/// TLS material. Empty (the default): a `tls://` URL trusts the platform's roots and sends
/// no client certificate; a `nats://` URL uses TLS only if the server requires it.
///
/// The same can come from the URL, as files: `tls://host:4222?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem`.
/// Any of them makes TLS required.
#[derive(Clone, Default)]
pub struct NatsTls {
    /// The CA certificates to trust instead of the platform's (PEM).
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain (PEM), for servers with `verify: true`.
    pub client_cert: Option<Vec<u8>>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for NatsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTls")
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
    BackendError::new(format!("nats TLS configuration: {msg}"))
}

/// Takes the `tls_*` parameters out of each of the (comma-separated) URLs, reading their
/// files into `tls`.
pub(crate) fn strip_url(urls: &str, tls: &mut NatsTls) -> Result<String, BackendError> {
    let mut out = Vec::new();
    for one in urls.split(',') {
        let Some((base, query)) = one.split_once('?') else {
            out.push(one.to_owned());
            continue;
        };
        let mut kept = Vec::new();
        for raw in query.split('&').filter(|p| !p.is_empty()) {
            let Some((k, v)) = url::form_urlencoded::parse(raw.as_bytes()).next() else {
                continue;
            };
            let slot = match &*k {
                "tls_ca" => &mut tls.ca,
                "tls_cert" => &mut tls.client_cert,
                "tls_key" => &mut tls.client_key,
                _ => {
                    kept.push(raw);
                    continue;
                }
            };
            *slot = Some(std::fs::read(&*v).map_err(|e| config_err(format!("{k}={v}: {e}")))?);
        }
        out.push(if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        });
    }
    Ok(out.join(","))
}

/// `options` with `tls` applied: with material, TLS is required and uses it.
pub(crate) fn apply(
    options: ConnectOptions,
    tls: &NatsTls,
) -> Result<ConnectOptions, BackendError> {
    if tls.ca.is_none() && tls.client_cert.is_none() && tls.client_key.is_none() {
        return Ok(options);
    }
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| config_err(format!("the CA (PEM): {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| config_err(format!("the CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(config_err("the CA holds no certificate"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config_err(format!("the client certificate (PEM): {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| config_err(format!("the client key (PEM): {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_err(format!("the client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(config_err(
                "a client certificate needs its key, and a key its certificate",
            ))
        }
    };
    Ok(options.require_tls(true).tls_client_config(config))
}

/// `options` with the credentials of the first URL that has some: `user:password@` as a
/// user and password, `token@` as a token (async-nats leaves them in the URL unused).
pub(crate) fn credentials(options: ConnectOptions, urls: &str) -> ConnectOptions {
    for one in urls.split(',') {
        let Ok(parsed) = url::Url::parse(one.trim()) else {
            continue;
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(parsed.username());
        match parsed.password().map(decode) {
            Some(pass) => return options.user_and_password(user, pass),
            None if !user.is_empty() => return options.token(user),
            None => {}
        }
    }
    options
}

/// `urls` with the credentials hidden, for messages.
pub(crate) fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|one| match url::Url::parse(one.trim()) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                let _ = u.set_username("***");
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A connection error, with "TLS" said when the handshake failed.
pub(crate) fn describe(e: &async_nats::ConnectError) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    let mut tls = matches!(e.kind(), async_nats::ConnectErrorKind::Tls);
    while let Some(s) = next {
        let in_io = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if in_io || s.is::<rustls::Error>() {
            tls = true;
        }
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = s.source();
    }
    if tls && !text.contains("TLS") {
        text = format!("TLS: {text}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden_in_messages() {
        assert_eq!(
            redact("tls://alice:s3cret@h:4222,nats://t0ken@g:4222,nats://plain:4222"),
            "tls://***:***@h:4222,nats://***@g:4222,nats://plain:4222"
        );
    }

    #[test]
    fn tls_parameters_leave_the_url() {
        let mut tls = NatsTls::default();
        assert_eq!(
            strip_url("nats://h:4222?x=1", &mut tls).ok().as_deref(),
            Some("nats://h:4222?x=1")
        );
        let e = strip_url("tls://h:4222?tls_ca=/nonexistent/ca.pem", &mut tls)
            .map(|_| ())
            .expect_err("a missing file");
        assert!(e.to_string().contains("tls_ca=/nonexistent/ca.pem"), "{e}");
    }
}
