//! TLS to NATS on rustls (ring): `tls://` URLs (or any URL with TLS material), a custom
//! CA, a client certificate. User and password (`tls://user:pass@host`) or a token
//! (`nats://token@host`) come from the URL, as async-nats reads them.

use async_nats::ConnectOptions;
use tether_backend::tls::{is_tls_error, read_pem_file, with_sources, TlsMaterial};
use tether_backend::BackendError;

/// TLS material for NATS. Empty (the default): a `tls://` URL trusts the platform's roots
/// and sends no client certificate; a `nats://` URL uses TLS only if the server requires
/// it.
///
/// The same can come from the URL, as files: `tls://host:4222?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem`.
/// Any of them makes TLS required.
pub type NatsTls = TlsMaterial;

const PARAMS: [&str; 3] = ["tls_ca", "tls_cert", "tls_key"];

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
            let Some(slot) = tls.slot(&k, PARAMS) else {
                kept.push(raw);
                continue;
            };
            *slot = Some(read_pem_file("nats", &k, &v)?);
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
    if tls.is_empty() {
        return Ok(options);
    }
    let config = tls.client_config("nats")?;
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
    let mut text = with_sources(e);
    let tls = matches!(e.kind(), async_nats::ConnectErrorKind::Tls) || is_tls_error(e);
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
