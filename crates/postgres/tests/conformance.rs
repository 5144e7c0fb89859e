//! The cluster backend conformance suite (`tether_backend::conformance`) against the
//! real PostgreSQL on 127.0.0.1:5432 (scripts/services starts one). Every cluster the
//! suite asks for gets its own tables, under a prefix unique to the run; they are dropped
//! after a passing run. No PostgreSQL is a failure, never a skip.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tether_backend::conformance;
use tether_postgres::{PostgresBackend, PostgresConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_passes_the_conformance_suite() {
    let run = common::run_prefix();
    let prefix = run.clone();
    common::with_clean_up(&run, async move {
        conformance::run(|name| {
            let config = common::config(&prefix, &name);
            common::connect(common::URL, config)
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_fails_fast_while_postgres_is_down_or_stalled() {
    let run = common::run_prefix();
    let server: SocketAddr = "127.0.0.1:5432".parse().expect("address");
    // Make sure the database answers at all, so that its absence fails with a clear
    // message rather than as a failed outage check.
    drop(common::connect(common::URL, common::config(&run, "outage")).await);
    // Commands time out after 1 s, connecting after 1 s, waiting reads ask again every
    // second.
    let config = PostgresConfig {
        command_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..common::config(&run, "outage")
    };
    conformance::run_outage(server, Duration::from_secs(10), |proxy| {
        let (url, config) = (format!("postgres://postgres@{proxy}/test"), config.clone());
        async move { PostgresBackend::connect(&url, config).await }
    })
    .await;
    common::clean_up(&run).await;
}
