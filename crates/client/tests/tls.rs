//! `https://` and `wss://` against Node's `socket.io` served by `https.createServer` with
//! certificates generated at run time (`rcgen`): a throw-away CA, a certificate for
//! 127.0.0.1 signed by it, an expired one, and another CA. Each failure must be a TLS
//! error (`Error::is_tls`), with rustls' reason, never a generic transport error.
//!
//! (Tether's own TLS listener is not used here.)
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{ServerKind, TestServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use tether_client::rustls::{self, pki_types::CertificateDer, CertificateError};
use tether_client::{ClientBuilder, Error, Reconnection, Transport};

const T: Duration = Duration::from_secs(5);

struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names` signed by `ca`, written as PEM files; `expired` puts its
/// validity in the past.
fn leaf(ca: &Ca, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(1);
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "tether-client-tls-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ N.fetch_add(1, Ordering::SeqCst)
}

async fn https_server(cert: &(PathBuf, PathBuf)) -> TestServer {
    let (c, k) = (cert.0.to_str().unwrap(), cert.1.to_str().unwrap());
    let server = TestServer::start_with(ServerKind::Node, &[("TLS_CERT", c), ("TLS_KEY", k)]).await;
    // The server read them before listening.
    if let Some(dir) = cert.0.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    server
}

fn no_retry(b: ClientBuilder) -> ClientBuilder {
    b.reconnection(Reconnection::disabled()).timeout(T)
}

const MODES: [(&str, &[Transport]); 3] = [
    ("websocket", &[Transport::Websocket]),
    ("polling", &[Transport::Polling]),
    ("upgrade", &[Transport::Polling, Transport::Websocket]),
];

#[tokio::test]
async fn https_and_wss_with_a_custom_ca() {
    let ca = ca("tether test CA");
    let server = https_server(&leaf(&ca, &["127.0.0.1"], false)).await;
    let port = server.port;
    for (mode, transports) in MODES {
        for url in [
            format!("https://127.0.0.1:{port}"),
            format!("wss://127.0.0.1:{port}"),
        ] {
            let c = no_retry(ClientBuilder::new(&url))
                .transports(transports.iter().copied())
                .tls_root_certificates_pem(&ca.pem)
                .connect()
                .await
                .unwrap_or_else(|e| panic!("{mode} {url}: {e}"));
            if transports.len() == 2 {
                for _ in 0..100 {
                    if c.transport() == Some(Transport::Websocket) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert_eq!(
                    c.transport(),
                    Some(Transport::Websocket),
                    "{mode}: no upgrade"
                );
            }
            let args = vec![json!("over tls"), json!({"n": 1})];
            let ack = c.emit_with_ack("echo", args.clone(), T).await.unwrap();
            assert_eq!(ack.args, args, "{mode} {url}");
            let who = c.emit_with_ack("whoami", (), T).await.unwrap();
            let expected = if transports == [Transport::Polling] {
                "polling"
            } else {
                "websocket"
            };
            assert_eq!(who.args[0]["transport"], expected, "{mode} {url}");
            c.close().await;
        }
    }

    // A whole rustls configuration instead.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    for (mode, transports) in MODES {
        let c = no_retry(ClientBuilder::new(format!("https://127.0.0.1:{port}")))
            .transports(transports.iter().copied())
            .tls_config(Arc::new(cfg.clone()))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("tls_config, {mode}: {e}"));
        c.emit_with_ack("echo", (), T).await.unwrap();
        c.close().await;
    }
}

/// Connects with each transport and returns the errors.
async fn errors(url: &str, configure: impl Fn(ClientBuilder) -> ClientBuilder) -> Vec<Error> {
    let mut out = Vec::new();
    for (mode, transports) in MODES {
        let e = configure(no_retry(ClientBuilder::new(url)))
            .transports(transports.iter().copied())
            .connect()
            .await
            .map(|_| ())
            .expect_err(mode);
        assert!(e.is_tls(), "{mode}: not a TLS error: {e:?}");
        assert!(!e.is_transport(), "{mode}: {e:?}");
        out.push(e);
    }
    out
}

fn cert_error(e: &Error) -> &CertificateError {
    match e.tls_error() {
        Some(rustls::Error::InvalidCertificate(c)) => c,
        other => panic!("not a certificate error: {other:?} ({e})"),
    }
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_a_tls_error() {
    let ca1 = ca("tether test CA");
    let ca2 = ca("another CA");
    let server = https_server(&leaf(&ca1, &["127.0.0.1"], false)).await;
    let url = format!("https://127.0.0.1:{}", server.port);
    for e in errors(&url, |b| b.tls_root_certificate(ca2.cert.clone())).await {
        assert!(
            matches!(cert_error(&e), CertificateError::UnknownIssuer),
            "{e}"
        );
        assert!(e.to_string().starts_with("TLS error"), "{e}");
    }
    // The default, the platform's roots, does not know the test CA either.
    for e in errors(&url, |b| b).await {
        assert!(
            matches!(cert_error(&e), CertificateError::UnknownIssuer),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_certificate_for_another_host_is_a_tls_error() {
    let ca = ca("tether test CA");
    let server = https_server(&leaf(&ca, &["127.0.0.1"], false)).await;
    // localhost is not in the certificate.
    let url = format!("https://localhost:{}", server.port);
    for e in errors(&url, |b| b.tls_root_certificates_pem(&ca.pem)).await {
        assert!(
            matches!(
                cert_error(&e),
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ),
            "{e}"
        );
    }
}

#[tokio::test]
async fn an_expired_certificate_is_a_tls_error() {
    let ca = ca("tether test CA");
    let server = https_server(&leaf(&ca, &["127.0.0.1"], true)).await;
    let url = format!("wss://127.0.0.1:{}", server.port);
    for e in errors(&url, |b| b.tls_root_certificates_pem(&ca.pem)).await {
        assert!(
            matches!(
                cert_error(&e),
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            ),
            "{e}"
        );
    }
}
