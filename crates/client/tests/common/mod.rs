//! Test support: starting the Socket.IO server under test, and waiting for events.
//!
//! The server is `node tests/node/server.js` (its `node_modules` are installed with
//! `npm ci` on first use), or the command in `TETHER_SERVER_CMD`, run with `sh -c` in
//! `tests/node/`. Either way it gets `PORT=0` (and maybe `PING_INTERVAL` / `PING_TIMEOUT`)
//! in its environment and must print `listening <port>` on stdout once ready; the
//! contract is written at the top of `tests/node/server.js`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
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

impl TestServer {
    /// Starts the server with the default heartbeat (1 s + 1 s).
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the server with extra environment variables.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let mut cmd = match std::env::var("TETHER_SERVER_CMD") {
            Ok(c) if !c.trim().is_empty() => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(c);
                cmd
            }
            _ => {
                ensure_node_modules();
                let mut cmd = Command::new("node");
                cmd.arg("server.js");
                cmd
            }
        };
        cmd.current_dir(node_dir())
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("failed to start the test server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(p) = line.trim().strip_prefix("listening ") {
                    return p.parse::<u16>().unwrap();
                }
            }
            panic!("the test server exited without listening");
        })
        .await
        .expect("the test server did not start in time");
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
