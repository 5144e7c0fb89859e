//! The PostgreSQL backend against a real PostgreSQL on 127.0.0.1:5432: what the
//! conformance suite does not cover (ephemeral messages, offsets, the schema). Each test
//! uses tables of its own, dropped at its end. No PostgreSQL is a failure, never a skip.

mod common;

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tether_backend::{
    Broadcast, ClusterMessage, Ephemeral, EphemeralBody, Position, SessionOp, TakeOutcome,
};
use tether_backend::{BusBackend as _, LogBackend as _, SessionBackend as _};
use tether_postgres::{PostgresBackend, PostgresConfig};
use tokio::sync::mpsc;

fn emit(uid: &str, nsp: &str, tag: &str, size: usize) -> Ephemeral {
    Ephemeral {
        uid: uid.into(),
        nsp: nsp.into(),
        body: EphemeralBody::ServerSideEmit {
            request_id: Some(tag.into()),
            data: vec![json!("ev"), json!("x".repeat(size))],
            attachments: vec![Bytes::from_static(b"\x00\x01")],
        },
    }
}

async fn next(rx: &mut mpsc::Receiver<Ephemeral>) -> Ephemeral {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an ephemeral message within 5 s")
        .expect("the sink is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_reach_the_namespace_or_one_node() {
    let run = common::run_prefix();
    let prefix = run.clone();
    common::with_clean_up(&run, async move {
        let a = common::connect(common::URL, common::config(&prefix, "eph")).await;
        let b = common::connect(common::URL, common::config(&prefix, "eph")).await;
        let other = common::connect(common::URL, common::config(&prefix, "eph-other")).await;
        for (n, uid) in [(&a, "a"), (&b, "b")] {
            n.heartbeat(uid, Duration::from_secs(30)).await.unwrap();
        }
        let (a_tx, mut a_rx) = mpsc::channel(16);
        let (b_tx, mut b_rx) = mpsc::channel(16);
        let (o_tx, mut o_rx) = mpsc::channel(16);
        a.listen("a", "/", a_tx).await.unwrap();
        b.listen("b", "/", b_tx).await.unwrap();
        other.listen("o", "/", o_tx).await.unwrap();
        assert_eq!(a.listeners("/").await.unwrap(), 2);
        assert_eq!(a.listeners("/none").await.unwrap(), 0);
        assert_eq!(other.listeners("/").await.unwrap(), 1);

        // To the namespace: both nodes, the sender included.
        let m = emit("a", "/", "public", 10);
        a.send_ephemeral(None, &m).await.unwrap();
        assert_eq!(next(&mut a_rx).await, m);
        assert_eq!(next(&mut b_rx).await, m);
        // To one node.
        let m = emit("a", "/", "private", 10);
        a.send_ephemeral(Some("b"), &m).await.unwrap();
        assert_eq!(next(&mut b_rx).await, m);
        // Larger than a NOTIFY payload: stored and sent by id.
        let big = emit("b", "/", "big", 20_000);
        b.send_ephemeral(Some("a"), &big).await.unwrap();
        assert_eq!(next(&mut a_rx).await, big);
        // Another namespace, another cluster: nothing.
        a.send_ephemeral(None, &emit("a", "/else", "else", 1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            a_rx.try_recv().is_err(),
            "a private message went to its sender"
        );
        assert!(b_rx.try_recv().is_err());
        assert!(o_rx.try_recv().is_err(), "a message crossed clusters");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_log_ids_and_survive_a_recreated_log() {
    let run = common::run_prefix();
    let prefix = run.clone();
    common::with_clean_up(&run, async move {
        let config = common::config(&prefix, "offsets");
        let b = common::connect(common::URL, config.clone()).await;
        let m = ClusterMessage::Broadcast(Broadcast {
            nsp: "/".into(),
            data: vec![json!("ev")],
            attachments: vec![],
            rooms: vec![],
            except: vec![],
            volatile: false,
        });
        let ids = b
            .append("n", &[(1, m.clone()), (2, m.clone())])
            .await
            .unwrap();
        assert_eq!(ids[0].epoch, 0);
        assert_eq!(ids[1], Position::new(0, ids[0].seq + 1));
        // Ids start at the database clock in microseconds.
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(ids[0].seq > now_us - 600_000_000 && ids[0].seq <= now_us + 600_000_000);
        // `n-1` is not an entry: a take with it consumes nothing.
        let s = tether_backend::Session {
            sid: "s".into(),
            pid: "p".into(),
            rooms: vec![],
            data: json!(null),
            start: Some(ids[0]),
        };
        b.apply(
            "n",
            &[SessionOp::Retire {
                nsp: "/".into(),
                pid: "p".into(),
                keep: Some((s.clone(), Duration::from_secs(30))),
            }],
        )
        .await
        .unwrap();
        let odd = Position::new(1, ids[0].seq);
        assert_eq!(
            b.take_session("/", "p", Some(odd)).await.unwrap(),
            TakeOutcome::UnknownOffset
        );
        assert_eq!(
            b.take_session("/", "p", Some(ids[1])).await.unwrap(),
            TakeOutcome::Taken(s)
        );
        // The tables dropped (a database that lost its data): new ids are greater.
        drop(b);
        common::clean_up(&prefix).await;
        let b = common::connect(common::URL, config).await;
        let again = b.append("n", &[(3, m)]).await.unwrap();
        assert!(again[0] > ids[1], "{again:?} after {ids:?}");
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_not_a_hang() {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        PostgresBackend::connect(
            "postgres://postgres@127.0.0.1:1/test",
            PostgresConfig::default(),
        ),
    )
    .await
    .expect("connect must fail fast");
    assert!(r.is_err());
}

#[tokio::test]
async fn a_bad_prefix_is_refused() {
    let config = PostgresConfig {
        prefix: "p".repeat(49),
        ..PostgresConfig::default()
    };
    assert!(PostgresBackend::connect(common::URL, config).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_racing_a_keeping_retire_finds_the_record_or_the_session() {
    let run = common::run_prefix();
    let prefix = run.clone();
    common::with_clean_up(&run, async move {
        let holder = std::sync::Arc::new(
            common::connect(common::URL, common::config(&prefix, "retire-race")).await,
        );
        let taker = std::sync::Arc::new(
            common::connect(common::URL, common::config(&prefix, "retire-race")).await,
        );
        holder
            .heartbeat("holder", Duration::from_secs(60))
            .await
            .unwrap();
        for k in 0..40 {
            let pid = format!("p{k}");
            let s = tether_backend::Session {
                sid: format!("s{k}"),
                pid: pid.clone(),
                rooms: vec!["r".into()],
                data: json!({"k": k}),
                start: None,
            };
            let long = Duration::from_secs(60);
            holder
                .apply(
                    "holder",
                    &[SessionOp::PutLive {
                        nsp: "/".into(),
                        session: s.clone(),
                        ttl: long,
                        window: long,
                    }],
                )
                .await
                .unwrap();
            let retire = [SessionOp::Retire {
                nsp: "/".into(),
                pid: pid.clone(),
                keep: Some((s.clone(), long)),
            }];
            let h = holder.clone();
            let retiring = tokio::spawn(async move { h.apply("holder", &retire).await });
            // Vary who comes first.
            if k % 2 == 0 {
                tokio::task::yield_now().await;
            }
            let first = taker.take_session("/", &pid, None).await.unwrap();
            retiring.await.unwrap().unwrap();
            match first {
                TakeOutcome::Taken(got) => assert_eq!(got, s),
                TakeOutcome::HolderAlive(h) => {
                    assert_eq!(h, "holder");
                    assert_eq!(
                        taker.take_session("/", &pid, None).await.unwrap(),
                        TakeOutcome::Taken(s),
                        "round {k}: kept after the retire"
                    );
                }
                other => panic!("round {k}: a take during a retire found {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_trim_entries_older_than_the_retention() {
    let run = common::run_prefix();
    let prefix = run.clone();
    common::with_clean_up(&run, async move {
        let config = PostgresConfig {
            retention: Duration::from_millis(300),
            ..common::config(&prefix, "trim")
        };
        let b = common::connect(common::URL, config).await;
        let m = ClusterMessage::Probe {
            nsp: "/".into(),
            pid: "p".into(),
        };
        let old = b.append("n", &[(1, m.clone())]).await.unwrap();
        // Appends trim at most once a second per node.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let new = b.append("n", &[(2, m)]).await.unwrap();
        let log = b
            .range(Position::ZERO, new[0], 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>();
        assert_eq!(log, new, "{old:?} must be trimmed");
        assert_eq!(b.last_id().await.unwrap(), new[0]);
    })
    .await;
}
