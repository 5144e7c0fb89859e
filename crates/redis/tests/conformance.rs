//! The cluster backend conformance suite (`tether_backend::conformance`) against the
//! real Redis on 127.0.0.1:6379 (scripts/services starts one). Every cluster the suite
//! asks for gets its own stream and key prefixes under `test-conformance:<run>:`, so runs
//! and tests never see each other; the keys are deleted after a passing run. No Redis is a
//! failure, never a skip.

use std::net::SocketAddr;
use std::time::Duration;

use tether_backend::conformance;
use tether_redis::{RedisBackend, RedisConfig};

const URL: &str = "redis://127.0.0.1:6379";

/// A prefix unique to this run of this test.
fn run_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("test-conformance:{test}-{}-{nanos}:", std::process::id())
}

/// The names of the cluster `name`.
fn config(run: &str, name: &str) -> RedisConfig {
    RedisConfig {
        stream: format!("{run}{name}:stream"),
        session_prefix: format!("{run}{name}:session:"),
        prefix: format!("{run}{name}:"),
        channel_prefix: format!("{run}{name}"),
        ..RedisConfig::default()
    }
}

/// Deletes every key of a run.
async fn clean_up(run: &str) {
    let client = redis::Client::open(URL).expect("Redis URL");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connecting to Redis");
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{run}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            let () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .expect("DEL");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_passes_the_conformance_suite() {
    let run = run_prefix("suite");
    conformance::run(|name| {
        let config = config(&run, &name);
        async move {
            RedisBackend::connect(URL, config)
                .await
                .expect("Redis must run on 127.0.0.1:6379 (run scripts/services)")
        }
    })
    .await;
    clean_up(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_fails_fast_while_redis_is_down_or_stalled() {
    let run = run_prefix("outage");
    let server: SocketAddr = "127.0.0.1:6379".parse().unwrap();
    // Commands time out after 1 s, the blocking reader after 6 s (its block plus 5 s).
    let config = RedisConfig {
        command_timeout: Duration::from_secs(1),
        ..config(&run, "outage")
    };
    conformance::run_outage(server, Duration::from_secs(10), |proxy| {
        let (url, config) = (format!("redis://{proxy}"), config.clone());
        async move { RedisBackend::connect(&url, config).await }
    })
    .await;
    clean_up(&run).await;
}
