//! The Redis backend against a real Redis on 127.0.0.1:6379 (scripts/services starts
//! one). Each test uses its own stream and key prefixes, so tests never see each other.
//! No Redis is a failure, never a skip.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tether::cluster::{
    Broadcast, ClusterBackend, ClusterMessage, ClusterSession, EntryId, SessionOp, TakeOutcome,
};
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

fn broadcast(nsp: &str, tag: &str, rooms: &[&str]) -> ClusterMessage {
    ClusterMessage::Broadcast(Broadcast {
        nsp: nsp.into(),
        data: vec![json!("ev"), json!(tag)],
        attachments: vec![],
        rooms: rooms.iter().map(|r| (*r).into()).collect(),
        except: vec![],
        volatile: false,
    })
}

fn session(pid: &str) -> ClusterSession {
    ClusterSession {
        sid: "AAAAAAAAAAAAAAAAAAAA".into(),
        pid: pid.into(),
        rooms: vec!["r".into()],
        data: json!({"k": 1}),
        start: None,
    }
}

#[tokio::test]
async fn append_read_and_range_keep_order() {
    let b = backend("order").await;
    let start = b.last_id().await.unwrap();
    let batch = vec![
        (1, broadcast("/", "a", &[])),
        (2, broadcast("/", "b", &["r"])),
        (3, broadcast("/x", "c", &[])),
    ];
    let ids = b.append("node-1", &batch).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let read = b
        .read_after(start, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].uid, "node-1");
    assert_eq!(read[1].seq, Some(2));
    assert_eq!(read[1].message, batch[1].1);
    let range = b.range(ids[0], ids[2], 10).await.unwrap();
    assert_eq!(range.iter().map(|r| r.id).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(b.last_id().await.unwrap(), ids[2]);
    // Nothing new: the blocking read returns empty after its timeout.
    let none = b
        .read_after(ids[2], Duration::from_millis(50))
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn kept_sessions_are_one_shot_and_failures_consume_nothing() {
    let b = backend("oneshot").await;
    let ids = b
        .append("n", &[(1, broadcast("/", "a", &[]))])
        .await
        .unwrap();
    let ops = [SessionOp::Retire {
        nsp: "/".into(),
        pid: "p1".into(),
        keep: Some((session("p1"), Duration::from_secs(30))),
    }];
    b.apply("n", &ops).await.unwrap();
    // Another namespace, an unknown offset: refused, session left in place.
    assert_eq!(
        b.take_session("/other", "p1", Some(ids[0])).await.unwrap(),
        TakeOutcome::WrongNamespace
    );
    let bogus = EntryId { ms: 1, seq: 1 };
    assert_eq!(
        b.take_session("/", "p1", Some(bogus)).await.unwrap(),
        TakeOutcome::UnknownOffset
    );
    // Then it works once.
    assert_eq!(
        b.take_session("/", "p1", Some(ids[0])).await.unwrap(),
        TakeOutcome::Taken(session("p1"))
    );
    assert_eq!(
        b.take_session("/", "p1", Some(ids[0])).await.unwrap(),
        TakeOutcome::NotFound
    );
}

#[tokio::test]
async fn racing_takes_have_exactly_one_winner() {
    let b = Arc::new(backend("race").await);
    let keep = [SessionOp::Retire {
        nsp: "/".into(),
        pid: "p".into(),
        keep: Some((session("p"), Duration::from_secs(30))),
    }];
    b.apply("n", &keep).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            b.take_session("/", "p", None).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), TakeOutcome::Taken(_)) {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn live_records_are_taken_only_once_their_node_is_dead() {
    let b = backend("live").await;
    b.heartbeat("alive-node", Duration::from_millis(300))
        .await
        .unwrap();
    let put = [SessionOp::PutLive {
        nsp: "/".into(),
        session: session("p"),
        ttl: Duration::from_secs(30),
        window: Duration::from_secs(30),
    }];
    b.apply("alive-node", &put).await.unwrap();
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::HolderAlive("alive-node".into())
    );
    assert_eq!(
        b.take_session("/x", "p", None).await.unwrap(),
        TakeOutcome::WrongNamespace
    );
    // The node stops renewing its heartbeat (a crash): the record becomes a session.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::Taken(session("p"))
    );
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::NotFound
    );
    // A graceful retire without a keep leaves nothing.
    b.apply("n", &put).await.unwrap();
    b.apply(
        "n",
        &[SessionOp::Retire {
            nsp: "/".into(),
            pid: "p".into(),
            keep: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::NotFound
    );
}

#[tokio::test]
async fn alive_marks_expire() {
    let b = backend("alive").await;
    assert!(!b.is_marked_alive("p").await.unwrap());
    b.apply(
        "n",
        &[SessionOp::MarkAlive {
            pid: "p".into(),
            ttl: Duration::from_millis(200),
        }],
    )
    .await
    .unwrap();
    assert!(b.is_marked_alive("p").await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_marked_alive("p").await.unwrap());
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        RedisBackend::connect("redis://127.0.0.1:1", RedisConfig::default()),
    )
    .await
    .expect("connect must fail fast");
    assert!(r.is_err());
}

#[tokio::test]
async fn a_dead_nodes_records_expire_with_their_window() {
    let b = backend("window").await;
    b.heartbeat("short-node", Duration::from_millis(100))
        .await
        .unwrap();
    let put = [SessionOp::PutLive {
        nsp: "/short".into(),
        session: session("p"),
        ttl: Duration::from_secs(30),
        window: Duration::from_millis(200),
    }];
    b.apply("short-node", &put).await.unwrap();
    // Dead (heartbeat lapsed) and past its window: gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.take_session("/short", "p", None).await.unwrap(),
        TakeOutcome::NotFound
    );
}

#[tokio::test]
async fn a_node_retires_only_its_own_live_record() {
    let b = backend("own").await;
    let put = [SessionOp::PutLive {
        nsp: "/".into(),
        session: session("p"),
        ttl: Duration::from_secs(30),
        window: Duration::from_secs(30),
    }];
    b.heartbeat("new-holder", Duration::from_secs(5))
        .await
        .unwrap();
    b.apply("new-holder", &put).await.unwrap();
    // The old holder retires late, recoverably: the new holder's record stays, and no
    // stale session is kept over it.
    let late = [SessionOp::Retire {
        nsp: "/".into(),
        pid: "p".into(),
        keep: Some((session("p"), Duration::from_secs(30))),
    }];
    b.apply("old-holder", &late).await.unwrap();
    let retire = [SessionOp::Retire {
        nsp: "/".into(),
        pid: "p".into(),
        keep: None,
    }];
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::HolderAlive("new-holder".into())
    );
    b.apply("new-holder", &retire).await.unwrap();
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::NotFound
    );
}

fn refresh(sessions: Vec<ClusterSession>, ttl: Duration, window: Duration) -> [SessionOp; 1] {
    [SessionOp::RefreshLive {
        nsp: "/".into(),
        sessions,
        ttl,
        window,
    }]
}

#[tokio::test]
async fn the_refresh_extends_own_records_rewrites_lost_ones_and_leaves_others_alone() {
    let b = backend("refresh").await;
    let long = Duration::from_secs(30);
    b.heartbeat("n1", Duration::from_millis(1500))
        .await
        .unwrap();
    b.heartbeat("n2", Duration::from_secs(30)).await.unwrap();
    let put = |pid: &str, ttl| {
        [SessionOp::PutLive {
            nsp: "/".into(),
            session: session(pid),
            ttl,
            window: long,
        }]
    };
    let mut newer = session("own");
    newer.data = json!({"k": 2});
    // n1's own record, about to expire; n2's record, about to expire too.
    b.apply("n1", &put("own", Duration::from_millis(300)))
        .await
        .unwrap();
    b.apply("n2", &put("theirs", Duration::from_millis(300)))
        .await
        .unwrap();
    // n1's refresh: "lost" is missing (the engine restarted without its data).
    let sessions = vec![session("lost"), newer, session("theirs")];
    b.apply("n1", &refresh(sessions, long, long)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Written again, and extended.
    assert_eq!(
        b.take_session("/", "lost", None).await.unwrap(),
        TakeOutcome::HolderAlive("n1".into())
    );
    assert_eq!(
        b.take_session("/", "own", None).await.unwrap(),
        TakeOutcome::HolderAlive("n1".into())
    );
    // Another node's record: neither taken over nor extended by n1.
    assert_eq!(
        b.take_session("/", "theirs", None).await.unwrap(),
        TakeOutcome::NotFound
    );
    // n1 crashes: its records are restorable, as the refresh found or wrote them (an
    // existing record keeps its own session, the refresh does not overwrite it).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        b.take_session("/", "lost", None).await.unwrap(),
        TakeOutcome::Taken(session("lost"))
    );
    assert_eq!(
        b.take_session("/", "own", None).await.unwrap(),
        TakeOutcome::Taken(session("own"))
    );
}

#[tokio::test]
async fn the_refresh_does_not_touch_a_record_another_node_owns() {
    let b = backend("refresh-other").await;
    b.heartbeat("new-holder", Duration::from_secs(30))
        .await
        .unwrap();
    let mut theirs = session("p");
    theirs.data = json!({"holder": "new"});
    b.apply(
        "new-holder",
        &[SessionOp::PutLive {
            nsp: "/".into(),
            session: theirs.clone(),
            ttl: Duration::from_secs(30),
            window: Duration::from_secs(30),
        }],
    )
    .await
    .unwrap();
    // The old holder's late refresh (its socket was taken over meanwhile).
    b.apply(
        "old-holder",
        &refresh(
            vec![session("p")],
            Duration::from_secs(30),
            Duration::from_secs(30),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::HolderAlive("new-holder".into())
    );
    // Once the new holder is gone, its own session is what is restored.
    b.heartbeat("new-holder", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        b.take_session("/", "p", None).await.unwrap(),
        TakeOutcome::Taken(theirs)
    );
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
