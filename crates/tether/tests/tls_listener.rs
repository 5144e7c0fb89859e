//! The TLS listener end to end with the official `socket.io-client` (npm, in
//! tests/interop/node_modules, installed with `npm ci` when missing): `https://` polling,
//! the upgrade to `wss://`, WebSocket only, and a client without the CA refused; the CA
//! and the server certificate are made at run time; a silent connection holds no one up
//! and is dropped after the handshake limit. No `node` or `npm` is a failure.

#[path = "../../../tests/support/tls.rs"]
mod support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{Ca, TempDir};
use tether::rustls::pki_types::pem::PemObject;
use tether::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tether::{AckSender, Payload, Server, ServerConfig, SocketRef};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// tests/interop's npm packages (socket.io-client 4.8), installed if missing.
fn node_modules() -> PathBuf {
    let dir = interop_dir();
    if !dir.join("node_modules/socket.io-client").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| panic!("npm is needed to install socket.io-client: {e}"));
        assert!(status.success(), "npm ci in tests/interop failed");
    }
    dir.join("node_modules")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_over_https_and_wss() {
    let modules = node_modules();
    let dir = TempDir::new("listener-tls");
    let ca = Ca::new("tether test CA");
    let cert = ca.issue(&["127.0.0.1", "localhost"]);
    let ca_file = dir.write("ca.pem", &ca.pem());
    let chain = vec![CertificateDer::from_pem_slice(cert.cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).expect("key");
    let tls = tether::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");

    let io = Server::new(ServerConfig::default());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    io.of("/").on_connection(move |socket: SocketRef| {
        seen.fetch_add(1, Ordering::SeqCst);
        socket.on(
            "echo",
            |_socket: SocketRef, payload: Payload, ack: Option<AckSender>| {
                if let Some(ack) = ack {
                    let _ = ack.send(payload);
                }
            },
        );
    });
    let listener = tether::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let io = io.clone();
        tokio::spawn(async move {
            io.serve_tls_with_shutdown(listener, Arc::new(tls), async {
                let _ = stopped.await;
            })
            .await
        })
    };

    // Plain HTTP on the TLS port: that connection is dropped, the server goes on.
    let plain = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let _ = s.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await
    .expect("plain client");
    assert!(
        !plain.contains("HTTP/1.1 200"),
        "plain HTTP answered: {plain}"
    );

    // A client that opens a connection and says nothing: it holds no one else up, and
    // the server drops it once the handshake time is up.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let silent_since = std::time::Instant::now();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tls/client.js");
    let url = format!("https://127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(&url)
            .arg(&ca_file)
            .env("NODE_PATH", &modules)
            .output()
    })
    .await
    .expect("node")
    .unwrap_or_else(|e| panic!("node (20 or later) is needed: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed: {stdout}\n{stderr}");
    println!("{stdout}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON line");

    let p = &v["pollingThenUpgrade"];
    assert_eq!(p["first"], "polling", "{p}");
    assert_eq!(p["overPolling"], "over polling", "{p}");
    assert_eq!(p["after"], "websocket", "{p}");
    assert_eq!(p["overWs"], "over wss", "{p}");
    let w = &v["websocketOnly"];
    assert_eq!(w["transport"], "websocket", "{w}");
    assert_eq!(w["binary"], serde_json::json!([1, 2, 3]), "{w}");
    for case in ["withoutCaPolling", "withoutCaWebsocket"] {
        let n = &v[case];
        assert_eq!(n["connected"], false, "{case}: {n}");
        let why = format!("{} {}", n["message"], n["detail"]);
        assert!(
            why.contains("self-signed") || why.contains("unable to") || why.contains("certificate"),
            "{case}: {n}"
        );
    }
    // The two clients with the CA connected; those without never reached Socket.IO.
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    let silent = tokio::task::spawn_blocking(move || {
        silent
            .set_read_timeout(Some(
                tether_engine::TLS_HANDSHAKE_TIMEOUT + Duration::from_secs(20),
            ))
            .expect("timeout");
        let mut buf = [0u8; 16];
        silent.read(&mut buf)
    })
    .await
    .expect("silent client");
    assert!(
        matches!(silent, Ok(0))
            || silent
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the silent connection should be closed by the server: {silent:?}"
    );
    assert!(
        silent_since.elapsed() >= tether_engine::TLS_HANDSHAKE_TIMEOUT - Duration::from_millis(500)
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .expect("task")
        .expect("serve");
}
