//! The Redis backend against a real Redis on 127.0.0.1:6379 (scripts/services starts
//! one): what is particular to Redis. The contracts every backend meets are checked by
//! the conformance suite (tests/conformance.rs). Each test uses its own stream and key
//! prefixes, so tests never see each other. No Redis is a failure, never a skip.

use std::time::Duration;

use serde_json::json;
use tether_backend::SessionBackend as _;
use tether_backend::{Session, SessionOp, TakeOutcome};
use tether_redis::{RedisBackend, RedisConfig};

const URL: &str = "redis://127.0.0.1:6379";

async fn backend(name: &str) -> RedisBackend {
    let unique = format!("{name}-{}-{}", std::process::id(), rand_suffix());
    let config = RedisConfig {
        stream: format!("test-stream:{unique}"),
        session_prefix: format!("test-session:{unique}:"),
        prefix: format!("test-tether:{unique}:"),
        ..RedisConfig::default()
    };
    RedisBackend::connect(URL, config)
        .await
        .expect("Redis must run on 127.0.0.1:6379 (run scripts/services)")
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn session(pid: &str) -> Session {
    Session {
        sid: "AAAAAAAAAAAAAAAAAAAA".into(),
        pid: pid.into(),
        rooms: vec!["r".into()],
        data: json!({"k": 1}),
        start: None,
    }
}

fn refresh(sessions: Vec<Session>, ttl: Duration, window: Duration) -> [SessionOp; 1] {
    [SessionOp::RefreshLive {
        nsp: "/".into(),
        sessions,
        ttl,
        window,
    }]
}

#[tokio::test]
async fn the_refresh_rewrites_many_lost_records_with_their_window() {
    let b = backend("refresh-many").await;
    b.heartbeat("n", Duration::from_secs(30)).await.unwrap();
    // More than one script call's worth of records, all lost.
    let pids: Vec<String> = (0..450).map(|k| format!("p{k}")).collect();
    let sessions = pids.iter().map(|p| session(p)).collect();
    b.apply(
        "n",
        &refresh(sessions, Duration::from_secs(30), Duration::from_secs(30)),
    )
    .await
    .unwrap();
    for pid in &pids {
        assert_eq!(
            b.take_session("/", pid, None).await.unwrap(),
            TakeOutcome::HolderAlive("n".into()),
            "{pid}"
        );
    }
    // The window is written too: a dead node's rewritten record expires with it.
    b.heartbeat("short", Duration::from_millis(100))
        .await
        .unwrap();
    b.apply(
        "short",
        &refresh(
            vec![session("w")],
            Duration::from_secs(30),
            Duration::from_millis(200),
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.take_session("/", "w", None).await.unwrap(),
        TakeOutcome::NotFound
    );
}
