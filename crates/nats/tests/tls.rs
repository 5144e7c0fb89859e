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
    let log = std::fs::File::create(dir.path().join("nats.log")).expect("log file");
    let mut proc = Proc::spawn(
        Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log),
        "nats-server (2.9 or later)",
    );
    proc.wait_port(port, "nats-server");
    wait_info(&mut proc, port, &dir);
    PrivateNats {
        port,
        ca,
        client,
        dir,
        _proc: proc,
    }
}

/// Waits until the server greets a new connection with its `INFO` line: a port that
/// accepts is not yet a server that answers (a CI run once saw the first client refused
/// right after the port had accepted). Fails with the server's log if it exited.
fn wait_info(proc: &mut Proc, port: u16, dir: &TempDir) {
    use std::io::Read as _;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let greeted = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
                let mut b = [0u8; 4];
                s.read_exact(&mut b)?;
                Ok(&b == b"INFO")
            })
            .unwrap_or(false);
        if greeted {
            return;
        }
        if let Ok(Some(status)) = proc.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default();
            panic!("nats-server exited ({status}) on port {port}:\n{log}");
        }
        assert!(
            std::time::Instant::now() < until,
            "nats-server on {port} sent no INFO in 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
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
