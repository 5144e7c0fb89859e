//! A check that a cluster backend works over its connection (included with `#[path]`).

use std::time::Duration;

use serde_json::json;
use tether::cluster::{ClusterBackend, Session, SessionOp, TakeOutcome};

/// Keeps a session and takes it back, then reads the log: commands and the reader work.
pub async fn round_trip(b: &dyn ClusterBackend, pid: &str) {
    let session = Session {
        sid: "AAAAAAAAAAAAAAAAAAAA".into(),
        pid: pid.into(),
        rooms: vec!["r".into()],
        data: json!({"over": "tls"}),
        start: None,
    };
    b.apply(
        "n",
        &[SessionOp::Retire {
            nsp: "/".into(),
            pid: pid.into(),
            keep: Some((session, Duration::from_secs(30))),
        }],
    )
    .await
    .expect("keep a session");
    match b.take_session("/", pid, None).await.expect("take") {
        TakeOutcome::Taken(s) => assert_eq!(s.data, json!({"over": "tls"})),
        other => panic!("expected the kept session, got {other:?}"),
    }
    b.read_after(Default::default(), Duration::from_millis(10))
        .await
        .expect("a read of the log");
}
