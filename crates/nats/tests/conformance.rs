//! The cluster backend conformance suite (`tether_backend::conformance`) against the
//! real NATS server (with JetStream) on 127.0.0.1:4222. Every cluster the suite asks for
//! gets its own stream, bucket and subject prefix under a name unique to the run, so runs
//! and tests never see each other; they are deleted after a passing run. No NATS is a
//! failure, never a skip.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_backend::conformance;
use tether_nats::{NatsBackend, NatsConfig};

const URL: &str = "nats://127.0.0.1:4222";
const NO_NATS: &str = "NATS with JetStream must run on 127.0.0.1:4222 (nats-server -js)";

/// A name unique to this run of this test.
fn run_id(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("tc_{test}_{}_{nanos}", std::process::id())
}

/// The names of the cluster `name` of run `run`.
fn config(run: &str, name: &str) -> NatsConfig {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    NatsConfig {
        stream: format!("{run}_{name}"),
        bucket: format!("{run}_{name}"),
        subject_prefix: format!("{run}.{name}"),
        ..NatsConfig::default()
    }
}

/// Deletes the streams and buckets of a run.
async fn clean_up(configs: &[NatsConfig]) {
    let client = async_nats::connect(URL).await.expect(NO_NATS);
    let js = async_nats::jetstream::new(client);
    for c in configs {
        let _ = js.delete_stream(&c.stream).await;
        let _ = js.delete_key_value(&c.bucket).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_backend_passes_the_conformance_suite() {
    let run = run_id("suite");
    let made: Arc<Mutex<Vec<NatsConfig>>> = Arc::default();
    conformance::run(|name| {
        let config = config(&run, &name);
        made.lock().expect("lock").push(config.clone());
        async move {
            match NatsBackend::connect(URL, config).await {
                Ok(b) => b,
                Err(e) => panic!("{NO_NATS}: {e}"),
            }
        }
    })
    .await;
    let configs = made.lock().expect("lock").clone();
    clean_up(&configs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_backend_fails_fast_while_nats_is_down_or_stalled() {
    let run = run_id("outage");
    let server: SocketAddr = "127.0.0.1:4222".parse().expect("address");
    // Calls time out after 1 s; connecting after 1 s too.
    let config = NatsConfig {
        command_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..config(&run, "outage")
    };
    conformance::run_outage(server, Duration::from_secs(10), |proxy| {
        let (url, config) = (format!("nats://{proxy}"), config.clone());
        async move { NatsBackend::connect(&url, config).await }
    })
    .await;
    clean_up(&[config]).await;
}
