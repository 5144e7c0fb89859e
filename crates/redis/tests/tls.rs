//! TLS and passwords, each test against a private `redis-server` it starts on a free port
//! (never the shared one), with a CA and certificates made at run time. A missing
//! `redis-server` fails the test.

#[path = "../../../tests/support/tls.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{free_port, Ca, Pair, Proc, TempDir};
use tether_backend::{LogBackend, Session, SessionBackend, SessionOp, TakeOutcome};
use tether_redis::{RedisBackend, RedisConfig, RedisTls};

/// A private Redis with TLS only (`--port 0`), its CA, and the files it reads.
struct TlsRedis {
    port: u16,
    ca: Ca,
    client: Pair,
    dir: TempDir,
    _proc: Proc,
}

/// Starts a private `redis-server` on a free TLS port; `auth_clients` is its
/// `tls-auth-clients` (`yes`, `no`, `optional`). The server's certificate names `names`.
fn tls_redis(auth_clients: &str, names: &[&str]) -> TlsRedis {
    tls_redis_with(auth_clients, names, false)
}

/// [`tls_redis`], with an expired server certificate when `expired`.
fn tls_redis_with(auth_clients: &str, names: &[&str], expired: bool) -> TlsRedis {
    let dir = TempDir::new("redis-tls");
    let ca = Ca::new("tether test CA");
    let server = if expired {
        ca.issue_expired(names)
    } else {
        ca.issue(names)
    };
    let client = ca.issue(&["tether-client"]);
    let ca_file = dir.write("ca.pem", &ca.pem());
    let cert = dir.write("server.pem", &server.cert);
    let key = dir.write("server.key", &server.key);
    let port = free_port();
    let mut proc = Proc::spawn(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--tls-auth-clients", auth_clients])
            .stdout(Stdio::null()),
        "redis-server (Redis 6+ built with TLS)",
    );
    proc.wait_port(port, "redis-server --tls-port");
    TlsRedis {
        port,
        ca,
        client,
        dir,
        _proc: proc,
    }
}

fn unique(name: &str) -> RedisConfig {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let u = format!("{name}-{}-{n}", std::process::id());
    RedisConfig {
        stream: format!("tls-stream:{u}"),
        session_prefix: format!("tls-session:{u}:"),
        prefix: format!("tls-tether:{u}:"),
        channel_prefix: format!("tls-{u}"),
        ..RedisConfig::default()
    }
}

/// Keeps a session and takes it back: commands, a script, and the reader connection.
async fn round_trip(b: &RedisBackend) {
    let session = Session {
        sid: "AAAAAAAAAAAAAAAAAAAA".into(),
        pid: "tls-pid".into(),
        rooms: vec!["r".into()],
        data: json!({"over": "tls"}),
        start: None,
    };
    b.apply(
        "n",
        &[SessionOp::Retire {
            nsp: "/".into(),
            pid: "tls-pid".into(),
            keep: Some((session.clone(), Duration::from_secs(30))),
        }],
    )
    .await
    .expect("keep a session");
    match b.take_session("/", "tls-pid", None).await.expect("take") {
        TakeOutcome::Taken(s) => assert_eq!(s.data, json!({"over": "tls"})),
        other => panic!("expected the kept session, got {other:?}"),
    }
    let _ = b
        .read_after(Default::default(), Duration::from_millis(10))
        .await
        .expect("a read on the reader connection");
}

#[tokio::test]
async fn rediss_with_a_custom_ca_and_a_client_certificate() {
    let r = tls_redis("yes", &["127.0.0.1", "localhost"]);
    let config = RedisConfig {
        tls: RedisTls {
            ca: Some(r.ca.pem().into_bytes()),
            client_cert: Some(r.client.cert.clone().into_bytes()),
            client_key: Some(r.client.key.clone().into_bytes()),
        },
        ..unique("mtls")
    };
    let b = RedisBackend::connect(&format!("rediss://127.0.0.1:{}", r.port), config)
        .await
        .expect("connect over TLS with a client certificate");
    round_trip(&b).await;
}

#[tokio::test]
async fn rediss_takes_the_ca_and_client_certificate_files_from_the_url() {
    let r = tls_redis("yes", &["localhost"]);
    let ca = r.dir.write("client-ca.pem", &r.ca.pem());
    let cert = r.dir.write("client.pem", &r.client.cert);
    let key = r.dir.write("client.key", &r.client.key);
    let url = format!(
        "rediss://localhost:{}/0?tls_ca={}&tls_cert={}&tls_key={}",
        r.port,
        ca.display(),
        cert.display(),
        key.display()
    );
    let b = RedisBackend::connect(&url, unique("url-files"))
        .await
        .expect("connect with the files named in the URL");
    round_trip(&b).await;
}

#[tokio::test]
async fn a_server_that_wants_a_client_certificate_refuses_one_without() {
    let r = tls_redis("yes", &["127.0.0.1"]);
    let config = RedisConfig {
        tls: RedisTls {
            ca: Some(r.ca.pem().into_bytes()),
            ..RedisTls::default()
        },
        ..unique("no-client-cert")
    };
    let e = RedisBackend::connect(&format!("rediss://127.0.0.1:{}", r.port), config)
        .await
        .map(|_| ())
        .expect_err("no client certificate must fail");
    println!("without a client certificate: {e}");
    assert!(e.to_string().contains("TLS"), "{e}");
}

#[tokio::test]
async fn a_wrong_ca_is_a_tls_error_at_connect() {
    let r = tls_redis("no", &["127.0.0.1"]);
    let other = Ca::new("some other CA");
    let config = RedisConfig {
        tls: RedisTls {
            ca: Some(other.pem().into_bytes()),
            ..RedisTls::default()
        },
        ..unique("wrong-ca")
    };
    let e = RedisBackend::connect(&format!("rediss://127.0.0.1:{}", r.port), config)
        .await
        .map(|_| ())
        .expect_err("a certificate from another CA must fail");
    let text = e.to_string();
    println!("wrong CA: {text}");
    assert!(text.contains("TLS"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
}

#[tokio::test]
async fn a_wrong_host_name_is_a_tls_error_at_connect() {
    let r = tls_redis("no", &["redis.example.com"]);
    let config = RedisConfig {
        tls: RedisTls {
            ca: Some(r.ca.pem().into_bytes()),
            ..RedisTls::default()
        },
        ..unique("wrong-name")
    };
    let e = RedisBackend::connect(&format!("rediss://127.0.0.1:{}", r.port), config)
        .await
        .map(|_| ())
        .expect_err("a certificate for another name must fail");
    let text = e.to_string();
    println!("wrong name: {text}");
    assert!(text.contains("TLS"), "{text}");
    assert!(text.contains("not valid for name"), "{text}");
}

#[tokio::test]
async fn an_expired_certificate_is_a_tls_error_at_connect() {
    let r = tls_redis_with("no", &["127.0.0.1"], true);
    let config = RedisConfig {
        tls: RedisTls {
            ca: Some(r.ca.pem().into_bytes()),
            ..RedisTls::default()
        },
        ..unique("expired")
    };
    let e = RedisBackend::connect(&format!("rediss://127.0.0.1:{}", r.port), config)
        .await
        .map(|_| ())
        .expect_err("an expired certificate must fail");
    let text = e.to_string();
    println!("expired: {text}");
    assert!(text.contains("TLS") && text.contains("expired"), "{text}");
}

#[tokio::test]
async fn tls_material_without_rediss_is_refused() {
    let config = RedisConfig {
        tls: RedisTls {
            ca: Some(Ca::new("x").pem().into_bytes()),
            ..RedisTls::default()
        },
        ..unique("plain-with-ca")
    };
    let e = RedisBackend::connect("redis://127.0.0.1:1", config)
        .await
        .map(|_| ())
        .expect_err("a CA on redis:// must be refused");
    assert!(e.to_string().contains("rediss://"), "{e}");
}

#[tokio::test]
async fn passwords_and_acl_users_from_the_url() {
    let dir = TempDir::new("redis-auth");
    let port = free_port();
    let mut proc = Proc::spawn(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--requirepass", "default-secret"])
            .args([
                "--user",
                "alice",
                "on",
                ">alice-secret",
                "~*",
                "&*",
                "+@all",
            ])
            .stdout(Stdio::null()),
        "redis-server",
    );
    proc.wait_port(port, "redis-server");
    let e = RedisBackend::connect(&format!("redis://127.0.0.1:{port}"), unique("nopass"))
        .await
        .map(|_| ())
        .expect_err("no password must fail");
    assert!(e.to_string().contains("NOAUTH"), "{e}");
    let e = RedisBackend::connect(&format!("redis://:wrong@127.0.0.1:{port}"), unique("bad"))
        .await
        .map(|_| ())
        .expect_err("a wrong password must fail");
    println!("wrong password: {e}");
    let b = RedisBackend::connect(
        &format!("redis://:default-secret@127.0.0.1:{port}"),
        unique("requirepass"),
    )
    .await
    .expect("requirepass password from the URL");
    round_trip(&b).await;
    let b = RedisBackend::connect(
        &format!("redis://alice:alice-secret@127.0.0.1:{port}"),
        unique("acl"),
    )
    .await
    .expect("ACL user and password from the URL");
    round_trip(&b).await;
}
