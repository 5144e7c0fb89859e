//! TLS and authentication against a private `nats-server -c` (JetStream on, its own port
//! and store) that each test starts, never the shared one; the CA and certificates are
//! made at run time. A missing `nats-server` fails the test.

#[path = "../../../tests/support/backend.rs"]
mod backend;
#[path = "../../../tests/support/tls.rs"]
mod support;

use std::process::{Command, Stdio};

use support::{free_port, Ca, Pair, Proc, TempDir};
use tether_nats::{NatsBackend, NatsConfig, NatsTls};

struct PrivateNats {
    port: u16,
    ca: Ca,
    client: Pair,
    dir: TempDir,
    _proc: Proc,
}

/// Starts `nats-server -c` with JetStream, `block` (TLS, authorization) in its
/// configuration, and a server certificate for `names` at `server.pem`/`server.key`.
fn start(names: &[&str], block: &str) -> PrivateNats {
    let dir = TempDir::new("nats-tls");
    let ca = Ca::new("tether test CA");
    let server = ca.issue(names);
    let client = ca.issue(&["tether-client"]);
    dir.write("ca.pem", &ca.pem());
    dir.write("server.pem", &server.cert);
    dir.write("server.key", &server.key);
    let port = free_port();
    let d = dir.path().display();
    let conf = dir.write(
        "nats.conf",
        &format!(
            "listen: 127.0.0.1:{port}\nhttp: 0\njetstream {{ store_dir: \"{d}/js\" }}\n{}\n",
            block.replace("$DIR", &d.to_string())
        ),
    );
    let mut proc = Proc::spawn(
        Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "nats-server (2.9 or later)",
    );
    proc.wait_port(port, "nats-server");
    PrivateNats {
        port,
        ca,
        client,
        dir,
        _proc: proc,
    }
}

const MTLS: &str = "tls {\n  cert_file: \"$DIR/server.pem\"\n  key_file: \"$DIR/server.key\"\n  \
                    ca_file: \"$DIR/ca.pem\"\n  verify: true\n  timeout: 2\n}\n\
                    authorization { users = [ { user: alice, password: \"al1ce\" } ] }";

async fn connect(url: &str, config: NatsConfig) -> Result<NatsBackend, String> {
    NatsBackend::connect(url, config)
        .await
        .map_err(|e| e.to_string())
}

fn with_tls(tls: NatsTls) -> NatsConfig {
    NatsConfig {
        tls,
        ..NatsConfig::default()
    }
}

#[tokio::test]
async fn tls_with_a_custom_ca_a_client_certificate_and_a_password() {
    let n = start(&["127.0.0.1", "localhost"], MTLS);
    let mine = NatsTls {
        ca: Some(n.ca.pem().into_bytes()),
        client_cert: Some(n.client.cert.clone().into_bytes()),
        client_key: Some(n.client.key.clone().into_bytes()),
    };
    let b = connect(
        &format!("tls://alice:al1ce@127.0.0.1:{}", n.port),
        with_tls(mine.clone()),
    )
    .await
    .expect("TLS, a client certificate and a password");
    backend::round_trip(&b, "config").await;
    drop(b);
    // The same files named in the URL.
    let ca = n.dir.path().join("ca.pem");
    let cert = n.dir.write("client.pem", &n.client.cert);
    let key = n.dir.write("client.key", &n.client.key);
    let b = connect(
        &format!(
            "tls://alice:al1ce@localhost:{}?tls_ca={}&tls_cert={}&tls_key={}",
            n.port,
            ca.display(),
            cert.display(),
            key.display()
        ),
        NatsConfig::default(),
    )
    .await
    .expect("the CA and client certificate from the URL");
    backend::round_trip(&b, "url").await;
    // A wrong password.
    let e = connect(
        &format!("tls://alice:wrong@127.0.0.1:{}", n.port),
        with_tls(mine.clone()),
    )
    .await
    .map(|_| ())
    .expect_err("a wrong password");
    println!("wrong password: {e}");
    assert!(e.to_lowercase().contains("authorization"), "{e}");
    // No client certificate: the server (verify: true) refuses.
    let e = connect(
        &format!("tls://alice:al1ce@127.0.0.1:{}", n.port),
        with_tls(NatsTls {
            ca: Some(n.ca.pem().into_bytes()),
            ..NatsTls::default()
        }),
    )
    .await
    .map(|_| ())
    .expect_err("no client certificate");
    println!("no client certificate: {e}");
    assert!(e.contains("TLS"), "{e}");
}

#[tokio::test]
async fn a_wrong_ca_is_a_tls_error_at_connect() {
    let n = start(&["127.0.0.1"], MTLS);
    let other = Ca::new("some other CA");
    let e = connect(
        &format!("tls://alice:al1ce@127.0.0.1:{}", n.port),
        with_tls(NatsTls {
            ca: Some(other.pem().into_bytes()),
            client_cert: Some(n.client.cert.clone().into_bytes()),
            client_key: Some(n.client.key.clone().into_bytes()),
        }),
    )
    .await
    .map(|_| ())
    .expect_err("a certificate from another CA");
    println!("wrong CA: {e}");
    assert!(e.contains("TLS") && e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn a_wrong_host_name_is_a_tls_error_at_connect() {
    let n = start(&["nats.example.com"], MTLS);
    let e = connect(
        &format!("tls://alice:al1ce@127.0.0.1:{}", n.port),
        with_tls(NatsTls {
            ca: Some(n.ca.pem().into_bytes()),
            client_cert: Some(n.client.cert.clone().into_bytes()),
            client_key: Some(n.client.key.clone().into_bytes()),
        }),
    )
    .await
    .map(|_| ())
    .expect_err("a certificate for another name");
    println!("wrong name: {e}");
    assert!(e.contains("TLS") && e.contains("not valid for name"), "{e}");
}

#[tokio::test]
async fn a_token_from_the_url() {
    let n = start(&["127.0.0.1"], "authorization { token: \"t0ken\" }");
    let e = connect(
        &format!("nats://127.0.0.1:{}", n.port),
        NatsConfig::default(),
    )
    .await
    .map(|_| ())
    .expect_err("no token");
    println!("no token: {e}");
    assert!(e.to_lowercase().contains("authorization"), "{e}");
    let b = connect(
        &format!("nats://t0ken@127.0.0.1:{}", n.port),
        NatsConfig::default(),
    )
    .await
    .expect("the token from the URL");
    backend::round_trip(&b, "token").await;
}
