//! Test support: starting the Socket.IO servers under test, and waiting for events.
//!
//! Every end-to-end test runs against two servers ([`ServerKind`]):
//!
//! - [`ServerKind::Node`]: the reference, `node tests/node/server.js` (Socket.IO 4.8; its
//!   `node_modules` are installed with `npm ci` on first use);
//! - [`ServerKind::Tether`]: the Tether twin of that server,
//!   `servers/src/bin/client-test-server.rs`, built on first use with
//!   `cargo build --release -p tether-servers --bin client-test-server` (a no-op when it is
//!   up to date) and run from `<target>/release/client-test-server`; or, when
//!   `TETHER_SERVER_CMD` is set, that command, run with `sh -c`.
//!
//! Either way the server runs in `tests/node/` with `PORT=0` (and maybe `PING_INTERVAL` /
//! `PING_TIMEOUT`) in its environment and must print `listening <port>` on stdout once
//! ready; the contract is written at the top of `tests/node/server.js`. A server that
//! cannot be installed, built or started fails the test: nothing is skipped.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A running server, killed on drop.
pub struct TestServer {
    child: Child,
    pub port: u16,
}

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// The server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// The Socket.IO 4.8 reference server, `tests/node/server.js`.
    Node,
    /// Tether's `client-test-server`.
    Tether,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Node => "node",
            ServerKind::Tether => "tether",
        }
    }
}

static NPM: Mutex<bool> = Mutex::new(false);

/// Installs the Node server's dependencies if they are missing.
fn ensure_node_modules() {
    let mut done = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = node_dir();
    if !dir.join("node_modules/socket.io/package.json").exists() {
        eprintln!("installing the Node test server's dependencies (npm ci)");
        let ok = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "`npm ci` failed in {}", dir.display());
    }
    *done = true;
}

fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Builds Tether's `client-test-server` (once per test process) and returns its path.
fn tether_server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let ws = workspace_dir();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_relative() { ws.join(t) } else { t })
            .unwrap_or_else(|| ws.join("target"));
        let bin = target.join("release/client-test-server");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let args = [
            "build",
            "--release",
            "-p",
            "tether-servers",
            "--bin",
            "client-test-server",
        ];
        eprintln!("building the Tether test server: cargo {}", args.join(" "));
        let status = std::process::Command::new(&cargo)
            .args(args)
            .current_dir(&ws)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "could not build the Tether test server: `{cargo} {}` in {} exited with {s} \
                 (its output is above); the tether:: tests need it",
                args.join(" "),
                ws.display()
            ),
            Err(e) => panic!(
                "could not run `{cargo} {}` in {} to build the Tether test server: {e}",
                args.join(" "),
                ws.display()
            ),
        }
        assert!(
            bin.is_file(),
            "the Tether test server was built but {} does not exist",
            bin.display()
        );
        bin
    })
}

impl TestServer {
    /// Starts the server with the default heartbeat (1 s + 1 s).
    pub async fn start(kind: ServerKind) -> Self {
        Self::start_with(kind, &[]).await
    }

    /// Starts the server with extra environment variables.
    pub async fn start_with(kind: ServerKind, env: &[(&str, &str)]) -> Self {
        let mut cmd = match kind {
            ServerKind::Node => {
                ensure_node_modules();
                let mut cmd = Command::new("node");
                cmd.arg("server.js");
                cmd
            }
            ServerKind::Tether => match std::env::var("TETHER_SERVER_CMD") {
                Ok(c) if !c.trim().is_empty() => {
                    let mut cmd = Command::new("sh");
                    cmd.arg("-c").arg(c);
                    cmd
                }
                _ => {
                    // The build blocks: keep it off the runtime's thread.
                    let bin = tokio::task::spawn_blocking(tether_server_binary)
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                    Command::new(bin)
                }
            },
        };
        cmd.current_dir(node_dir())
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start the {} test server: {e}", kind.name()));
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(p) = line.trim().strip_prefix("listening ") {
                    return p.parse::<u16>().unwrap();
                }
            }
            panic!("the {} test server exited without listening", kind.name());
        })
        .await
        .unwrap_or_else(|_| panic!("the {} test server did not start in time", kind.name()));
        // Keep draining stdout so that the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        TestServer { child, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server now.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Receives within `secs` seconds, or panics with `what`.
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, secs: u64, what: &str) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("channel closed while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Receives until `pred` matches, within `secs` seconds; returns what was skipped too.
pub async fn recv_until<T: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    secs: u64,
    what: &str,
    pred: impl Fn(&T) -> bool,
) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) => {
                let done = pred(&v);
                seen.push(v);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("channel closed while waiting for {what}; saw {seen:?}"),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:?}"),
        }
    }
}
