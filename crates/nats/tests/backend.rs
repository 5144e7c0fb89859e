//! The NATS backend against the real NATS server (with JetStream) on 127.0.0.1:4222: what
//! is particular to NATS. The contracts every backend meets are checked by the
//! conformance suite (tests/conformance.rs). Each test uses its own stream, bucket and
//! subjects, deleted at its end. No NATS is a failure, never a skip.

use std::time::Duration;

use serde_json::json;
use tether_backend::{
    Broadcast, ClusterMessage, Ephemeral, EphemeralBody, Position, Session, SessionOp, TakeOutcome,
};
use tether_backend::{BusBackend as _, LogBackend as _, SessionBackend as _};
use tether_nats::{NatsBackend, NatsConfig};

const URL: &str = "nats://127.0.0.1:4222";

fn config(name: &str) -> NatsConfig {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let unique = format!("tb_{name}_{}_{nanos}", std::process::id());
    NatsConfig {
        stream: unique.clone(),
        bucket: unique.clone(),
        subject_prefix: unique,
        ..NatsConfig::default()
    }
}

async fn backend(config: &NatsConfig) -> NatsBackend {
    match NatsBackend::connect(URL, config.clone()).await {
        Ok(b) => b,
        Err(e) => panic!("NATS with JetStream must run on 127.0.0.1:4222: {e}"),
    }
}

async fn clean_up(config: &NatsConfig) {
    let client = async_nats::connect(URL).await.expect("NATS");
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(&config.stream).await;
    let _ = js.delete_key_value(&config.bucket).await;
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

fn broadcast(tag: &str) -> ClusterMessage {
    ClusterMessage::Broadcast(Broadcast {
        nsp: "/".into(),
        data: vec![json!("ev"), json!(tag)],
        attachments: vec![],
        rooms: vec![],
        except: vec![],
        volatile: false,
    })
}

#[tokio::test]
async fn offsets_are_stream_sequences_and_expire_with_the_retention() {
    let config = NatsConfig {
        retention: Duration::from_secs(1),
        ..config("retention")
    };
    let b = backend(&config).await;
    let ids = b
        .append("n", &[(1, broadcast("a")), (2, broadcast("b"))])
        .await
        .expect("append");
    assert_eq!(ids, [Position::new(0, 1), Position::new(0, 2)]);
    assert_eq!(b.offset_form().format(ids[1]), "2-0");
    let keep = |pid: &str| SessionOp::Retire {
        nsp: "/".into(),
        pid: pid.into(),
        keep: Some((session(pid), Duration::from_secs(60))),
    };
    b.apply("n", &[keep("p"), keep("q")]).await.expect("apply");
    assert_eq!(
        b.take_session("/", "p", Some(ids[0])).await.expect("take"),
        TakeOutcome::Taken(session("p"))
    );
    // Past the retention, the entries are gone: their offsets are unknown, the log reads
    // empty, and its position stays.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        b.take_session("/", "q", Some(ids[1])).await.expect("take"),
        TakeOutcome::UnknownOffset
    );
    assert!(b
        .read_after(Position::ZERO, Duration::from_millis(100))
        .await
        .expect("read_after")
        .is_empty());
    assert!(b
        .range(Position::ZERO, ids[1], 10)
        .await
        .expect("range")
        .is_empty());
    assert_eq!(b.last_id().await.expect("last_id"), ids[1]);
    let next = b.append("n", &[(3, broadcast("c"))]).await.expect("append");
    assert_eq!(next, [Position::new(0, 3)]);
    let got = b
        .read_after(Position::ZERO, Duration::from_millis(100))
        .await
        .expect("read_after");
    assert_eq!(got.len(), 1, "read_after skips what expired: {got:?}");
    drop(b);
    clean_up(&config).await;
}

#[tokio::test]
async fn the_refresh_rewrites_many_lost_records_with_their_window() {
    let config = config("refresh_many");
    let b = backend(&config).await;
    b.heartbeat("n", Duration::from_secs(30)).await.expect("hb");
    let pids: Vec<String> = (0..300).map(|k| format!("p{k}")).collect();
    let sessions = pids.iter().map(|p| session(p)).collect();
    b.apply(
        "n",
        &[SessionOp::RefreshLive {
            nsp: "/".into(),
            sessions,
            ttl: Duration::from_secs(30),
            window: Duration::from_secs(30),
        }],
    )
    .await
    .expect("apply");
    for pid in &pids {
        assert_eq!(
            b.take_session("/", pid, None).await.expect("take"),
            TakeOutcome::HolderAlive("n".into()),
            "{pid}"
        );
    }
    drop(b);
    clean_up(&config).await;
}

#[tokio::test]
async fn listeners_leave_when_dropped_and_listening_again_replaces() {
    use tokio::sync::mpsc;
    let config = config("listeners");
    let a = backend(&config).await;
    let b = backend(&config).await;
    let (ta, mut ra) = mpsc::channel(16);
    let (tb, _rb) = mpsc::channel(16);
    a.listen("a", "/", ta.clone()).await.expect("listen");
    a.listen("a", "/", ta).await.expect("listen again");
    b.listen("b", "/", tb).await.expect("listen");
    assert_eq!(a.listeners("/").await.expect("listeners"), 2);
    let m = Ephemeral {
        uid: "b".into(),
        nsp: "/".into(),
        body: EphemeralBody::ClientCount {
            request_id: "r".into(),
            count: 1,
        },
    };
    b.send_ephemeral(None, &m).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(2), ra.recv()).await;
    assert_eq!(got.ok().flatten(), Some(m));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ra.try_recv().is_err(), "listening twice delivers once");
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let n = a.listeners("/").await.expect("listeners");
        if n == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dropped backend still counts: {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
    clean_up(&config).await;
}
