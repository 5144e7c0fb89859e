//! `https://` and `wss://` against Node's `socket.io` served by `https.createServer` with
//! certificates generated at run time (`rcgen`): a throw-away CA, a certificate for
//! 127.0.0.1 signed by it, an expired one, and another CA. Each failure must be a TLS
//! error (`Error::is_tls`), with rustls' reason, never a generic transport error.
//!
//! Then the same client against Tether's own TLS listener
//! (`tether::Server::serve_tls_with_shutdown`, `listen_tls` on a port of our choosing), in
//! this process, with connection state recovery on: `https://` polling, polling then the
//! upgrade to `wss://`, `wss://` WebSocket only; an emit with ack, a broadcast, and a
//! recovery after the server closed the transport. (No cookie test against Tether: its
//! server sets no cookie; the jar is tested against Node in `e2e.rs`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{ServerKind, TestServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use tether::{AckSender, Payload, SocketRef};
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

// ---- Tether's own TLS listener -------------------------------------------------------

/// A Tether server over TLS with recovery on, serving in this process until stopped.
///
/// Its events: `echo` acks its arguments; `join(room)` joins and acks; `shout(room, x)`
/// emits `shout(x)` to the room (the sender included); `drop-then-emit(room, x)` closes
/// the connection, then emits `missed(x)` to the room; `whoami` acks `{id, recovered}`.
struct TetherTls {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tether::Error>>,
}

impl TetherTls {
    async fn start(ca: &Ca) -> TetherTls {
        use tether::rustls::pki_types::pem::PemObject;
        use tether::rustls::pki_types::{CertificateDer as ServerCert, PrivateKeyDer};
        let (c, k) = leaf(ca, &["127.0.0.1", "localhost"], false);
        let chain = vec![ServerCert::from_pem_file(&c).unwrap()];
        let key = PrivateKeyDer::from_pem_file(&k).unwrap();
        if let Some(dir) = c.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let tls = tether::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let io = tether::Server::new(tether::ServerConfig {
            recovery: Some(tether::RecoveryConfig::default()),
            ..tether::ServerConfig::default()
        });
        io.of("/").on_connection(|socket: SocketRef| {
            socket.on("echo", |p: Payload, ack: Option<AckSender>| {
                if let Some(ack) = ack {
                    let _ = ack.send(p);
                }
            });
            socket.on(
                "join",
                |s: SocketRef, p: Payload, ack: Option<AckSender>| {
                    s.join(p.get::<String>(0).unwrap_or_default());
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                },
            );
            socket.on("shout", |s: SocketRef, p: Payload| {
                let room = p.get::<String>(0).unwrap_or_default();
                let x = p.args.get(1).cloned().unwrap_or_default();
                let _ = s.namespace().to(room).emit("shout", x);
            });
            socket.on("drop-then-emit", |s: SocketRef, p: Payload| {
                let room = p.get::<String>(0).unwrap_or_default();
                let x = p.args.get(1).cloned().unwrap_or_default();
                s.close_transport();
                let ns = s.namespace().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = ns.to(room).emit("missed", x);
                });
            });
            socket.on("whoami", |s: SocketRef, ack: Option<AckSender>| {
                if let Some(ack) = ack {
                    let _ = ack.send(json!({"id": s.id().to_string(), "recovered": s.recovered()}));
                }
            });
        });
        let listener = tether::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            io.serve_tls_with_shutdown(listener, Arc::new(tls), async {
                let _ = stopped.await;
            })
            .await
        });
        TetherTls {
            port,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops")
            .expect("task")
            .expect("serve");
    }
}

/// What a client's handlers saw.
struct Seen {
    events: tokio::sync::mpsc::UnboundedReceiver<tether_client::Event>,
    life: tokio::sync::mpsc::UnboundedReceiver<tether_client::Lifecycle>,
}

fn recording(b: ClientBuilder) -> (ClientBuilder, Seen) {
    let (etx, events) = tokio::sync::mpsc::unbounded_channel();
    let (ltx, life) = tokio::sync::mpsc::unbounded_channel();
    let b = b
        .on_any(move |_c, ev| {
            let _ = etx.send(ev);
        })
        .on_lifecycle(move |_c, l| {
            let _ = ltx.send(l);
        });
    (b, Seen { events, life })
}

async fn next<X>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<X>, what: &str) -> X {
    tokio::time::timeout(T, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

async fn wait_transport(c: &tether_client::Client, t: Transport, mode: &str) {
    for _ in 0..100 {
        if c.transport() == Some(t) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{mode}: transport {:?}, expected {t:?}", c.transport());
}

#[tokio::test]
async fn tethers_own_tls_listener_acks_broadcasts_and_recovers() {
    use tether_client::{DisconnectReason, Lifecycle};
    let ca = ca("tether test CA");
    let server = TetherTls::start(&ca).await;
    let port = server.port;
    let cases: [(&str, String, &[Transport]); 3] = [
        (
            "https polling",
            format!("https://127.0.0.1:{port}"),
            &[Transport::Polling],
        ),
        (
            "https polling then wss",
            format!("https://127.0.0.1:{port}"),
            &[Transport::Polling, Transport::Websocket],
        ),
        (
            "wss websocket only",
            format!("wss://127.0.0.1:{port}"),
            &[Transport::Websocket],
        ),
    ];
    for (mode, url, transports) in cases {
        let room = format!("room {mode}");
        let (b, mut seen) = recording(
            ClientBuilder::new(&url)
                .transports(transports.iter().copied())
                .tls_root_certificates_pem(&ca.pem)
                .reconnection(
                    Reconnection::default()
                        .attempts(5)
                        .delay(Duration::from_millis(100)),
                )
                .timeout(T),
        );
        let c = b.connect().await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(matches!(
            next(&mut seen.life, "connect").await,
            Lifecycle::Connect { recovered: false }
        ));
        let expected = *transports.last().unwrap();
        wait_transport(&c, expected, mode).await;

        // An emit with ack, binary included.
        let args = tether_client::to_payload(&(
            "over tls",
            json!({"n": 1}),
            tether_client::Binary(vec![1u8, 2, 3].into()),
        ))
        .unwrap();
        let ack = c.emit_with_ack("echo", args.clone(), T).await.unwrap();
        assert_eq!(ack, args, "{mode}");

        // A broadcast to a room: both clients get it, once.
        let (b2, mut seen2) = recording(
            ClientBuilder::new(format!("wss://127.0.0.1:{port}"))
                .transports([Transport::Websocket])
                .tls_root_certificates_pem(&ca.pem)
                .reconnection(Reconnection::disabled())
                .timeout(T),
        );
        let other = b2.connect().await.unwrap();
        for x in [&c, &other] {
            x.emit_with_ack("join", json!(room), T).await.unwrap();
        }
        c.emit("shout", vec![json!(room), json!("hello room")])
            .unwrap();
        for (who, rx) in [("sender", &mut seen.events), ("other", &mut seen2.events)] {
            let ev = next(rx, "shout").await;
            assert_eq!(ev.name, "shout", "{mode}, {who}");
            assert_eq!(
                ev.args(),
                &[json!("hello room")],
                "{mode}, {who}: no offset"
            );
            assert!(ev.offset().is_some(), "{mode}, {who}: a stored event");
        }

        // Recovery: the server closes the transport, then emits to the room while we
        // are away; we come back with the same sid and get the missed event once.
        let sid = c.id().unwrap();
        assert!(c.pid().is_some(), "{mode}: the server has recovery on");
        assert!(!c.recovered());
        c.emit("drop-then-emit", vec![json!(room), json!("while away")])
            .unwrap();
        let mut life = Vec::new();
        loop {
            let l = next(&mut seen.life, "the reconnection").await;
            let done = matches!(l, Lifecycle::Connect { .. });
            life.push(l);
            if done {
                break;
            }
        }
        assert!(
            matches!(
                life.as_slice(),
                [
                    Lifecycle::Disconnect(DisconnectReason::TransportClose),
                    Lifecycle::ReconnectAttempt(1),
                    Lifecycle::Reconnect(1),
                    Lifecycle::Connect { recovered: true }
                ]
            ),
            "{mode}: {life:?}"
        );
        assert!(c.recovered(), "{mode}");
        assert_eq!(c.id().as_deref(), Some(sid.as_str()), "{mode}: same sid");
        let missed = next(&mut seen.events, "the missed event").await;
        assert_eq!(missed.name, "missed", "{mode}");
        assert_eq!(missed.args(), &[json!("while away")], "{mode}");
        // The other client stayed connected and got it live.
        let live = next(&mut seen2.events, "missed, live").await;
        assert_eq!(live.args(), &[json!("while away")], "{mode}");
        wait_transport(&c, expected, mode).await;
        let who = c.emit_with_ack("whoami", (), T).await.unwrap();
        assert_eq!(who.args[0]["id"], json!(sid), "{mode}");
        assert_eq!(who.args[0]["recovered"], true, "{mode}");
        // Once: nothing else arrived (an ack's round trip came after it).
        c.emit_with_ack("echo", (), T).await.unwrap();
        assert!(
            seen.events.try_recv().is_err(),
            "{mode}: the missed event came twice"
        );
        other.close().await;
        c.close().await;
    }
    server.stop().await;
}
