//! Receive-side CPU cost of the client: how much CPU time this process spends per event
//! received, while a server emits a stream of small events to it as fast as it can.
//!
//! The server is Tether's bench server (`scripts/bench-server`, `servers/src/bin/bench-server.rs`):
//! `storm(room, n, size)` emits `n` events `tick` with one string argument `"<i>:<size x's>"`.
//! The client asks for the stream in batches of `BATCH` with at most `WINDOW` batches
//! outstanding, so that the server's per-client outbox (4096 packets) never overflows.
//!
//! Its twin for the JavaScript client is `tests/node/bench/recv-bench.js`; `scripts/client-cpu`
//! runs both and prints the medians.
//!
//! ```text
//! cargo run --release -p tether-client --example recv_bench -- http://127.0.0.1:3000
//! ```
//!
//! Environment: `N` events (200 000), `SIZE` of the padding (0), `BATCH` (500), `WINDOW` (4),
//! `TRANSPORT` (`websocket` or `polling`, default websocket), `CLK_TCK` (100), `TLS_CA` (a PEM
//! file of the root to trust for an `https://` URL; `scripts/client-cpu` with `TLS=1` puts a
//! TLS-terminating proxy in front of the server).
//!
//! CPU time is measured from the first request to the last event received (the connection
//! set-up is left out), in two ways that should agree: the sum over this process's threads
//! of the run time the scheduler accounts (`/proc/self/task/*/schedstat`, nanoseconds), and
//! `utime + stime` of `/proc/self/stat` (clock ticks). It prints one line of `key=value`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_client::{json, ClientBuilder, Transport};
use tokio::sync::Notify;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Run time of each thread of this process, in nanoseconds, by thread id.
fn thread_cpu_ns() -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Ok(s) = std::fs::read_to_string(entry.path().join("schedstat")) {
            if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
                out.insert(tid, ns);
            }
        }
    }
    out
}

/// CPU time used since `before`, by the threads alive now (a thread that ended in between
/// loses its share; this client keeps its threads).
fn cpu_ns_since(before: &HashMap<u64, u64>) -> u64 {
    thread_cpu_ns()
        .into_iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(&tid).copied().unwrap_or(0)))
        .sum()
}

/// `utime + stime` of the whole process, in clock ticks.
fn stat_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

struct Stream {
    n: u64,
    batch: u64,
    size: u64,
    received: AtomicU64,
    requested: AtomicU64,
    done: Notify,
}

impl Stream {
    /// Asks for the next batch, if any is left.
    fn request(&self, c: &tether_client::Client) {
        let asked = self.requested.load(Ordering::Relaxed);
        let k = self.batch.min(self.n - asked);
        if k > 0 {
            self.requested.store(asked + k, Ordering::Relaxed);
            c.emit("storm", vec![json!(null), json!(k), json!(self.size)])
                .unwrap();
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:3000".to_owned());
    let stream = Arc::new(Stream {
        n: env_u64("N", 200_000),
        batch: env_u64("BATCH", 500).max(1),
        size: env_u64("SIZE", 0),
        received: AtomicU64::new(0),
        requested: AtomicU64::new(0),
        done: Notify::new(),
    });
    let window = env_u64("WINDOW", 4).max(1);
    let clk_tck = env_u64("CLK_TCK", 100).max(1);
    let transport = match std::env::var("TRANSPORT").as_deref() {
        Ok("polling") => Transport::Polling,
        _ => Transport::Websocket,
    };

    let s = stream.clone();
    let mut builder = ClientBuilder::new(url);
    if let Ok(ca) = std::env::var("TLS_CA") {
        builder = builder.tls_root_certificates_pem(std::fs::read(ca).unwrap());
    }
    let client = builder
        .transports([transport])
        .on("tick", move |c, _ev| {
            let got = s.received.fetch_add(1, Ordering::Relaxed) + 1;
            if got.checked_rem(s.batch) == Some(0) {
                s.request(&c);
            }
            if got == s.n {
                s.done.notify_one();
            }
        })
        .connect()
        .await
        .expect("could not connect to the bench server");

    let cpu0 = thread_cpu_ns();
    let ticks0 = stat_ticks();
    let t0 = Instant::now();
    for _ in 0..window {
        stream.request(&client);
    }
    let finished = tokio::time::timeout(Duration::from_secs(600), stream.done.notified()).await;
    let wall = t0.elapsed();
    let cpu_ns = cpu_ns_since(&cpu0);
    let ticks = stat_ticks() - ticks0;
    let got = stream.received.load(Ordering::Relaxed);
    assert!(
        finished.is_ok(),
        "timed out: received {got} of {} events",
        stream.n
    );
    let n = stream.n as f64;
    println!(
        "client=rust messages={} cpu_ms={:.1} cpu_ns_per_msg={:.0} stat_cpu_ms={} \
         stat_ns_per_msg={:.0} wall_ms={:.1} msgs_per_s={:.0}",
        stream.n,
        cpu_ns as f64 / 1e6,
        cpu_ns as f64 / n,
        ticks * 1000 / clk_tck,
        (ticks * 1_000_000_000 / clk_tck) as f64 / n,
        wall.as_secs_f64() * 1e3,
        n / wall.as_secs_f64(),
    );
    client.close().await;
}
