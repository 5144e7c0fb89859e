//! End-to-end tests against a Socket.IO server, each run twice: against the Node reference
//! server in `tests/node` (tests `node::*`) and against Tether's `client-test-server`
//! (tests `tether::*`, or the command in `TETHER_SERVER_CMD`); see `common/mod.rs`.
//!
//! Run one side only with a name filter: `cargo test -p tether-client --test e2e node::`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{recv, recv_until, ServerKind, TestServer};
use serde_json::{json, Value};
use tether_client::{
    Client, ClientBuilder, DisconnectReason, Error, Event, Lifecycle, Payload, Reconnection,
    Transport,
};
use tokio::sync::mpsc;

const WS: &[Transport] = &[Transport::Websocket];
const POLLING: &[Transport] = &[Transport::Polling];
const UPGRADE: &[Transport] = &[Transport::Polling, Transport::Websocket];
const MODES: [(&str, &[Transport]); 3] = [
    ("websocket", WS),
    ("polling", POLLING),
    ("upgrade", UPGRADE),
];

const T: Duration = Duration::from_secs(5);

struct Rec {
    events: mpsc::UnboundedReceiver<Event>,
    life: mpsc::UnboundedReceiver<Lifecycle>,
}

/// A builder with fast reconnection that records every event and lifecycle event.
fn builder(url: &str, transports: &[Transport]) -> (ClientBuilder, Rec) {
    let (etx, events) = mpsc::unbounded_channel();
    let (ltx, life) = mpsc::unbounded_channel();
    let b = ClientBuilder::new(url)
        .transports(transports.iter().copied())
        .reconnection(
            Reconnection::default()
                .delay(Duration::from_millis(100))
                .delay_max(Duration::from_millis(500)),
        )
        .on_any(move |_c, ev| {
            let _ = etx.send(ev);
        })
        .on_lifecycle(move |_c, l| {
            let _ = ltx.send(l);
        });
    (b, Rec { events, life })
}

async fn whoami(c: &Client) -> Value {
    let p = c.emit_with_ack("whoami", (), T).await.unwrap();
    p.args[0].clone()
}

async fn wait_for_upgrade(c: &Client) {
    for _ in 0..100 {
        if c.transport() == Some(Transport::Websocket) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no upgrade to websocket");
}

/// Waits for a disconnection, then for the reconnection of the namespace.
async fn wait_reconnected(rec: &mut Rec) -> Vec<Lifecycle> {
    recv_until(&mut rec.life, 10, "reconnection", |l| {
        matches!(l, Lifecycle::Connect { .. })
    })
    .await
}

async fn get_log(c: &Client, key: &str) -> Vec<Value> {
    let p = c.emit_with_ack("get-log", json!(key), T).await.unwrap();
    p.args[0].as_array().cloned().unwrap_or_default()
}

async fn echo_ack_and_binary_on_every_transport(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.connect().await.unwrap();
        assert!(c.connected(), "{mode}");
        assert!(c.id().is_some(), "{mode}");
        assert!(matches!(
            recv(&mut rec.life, 5, "connect").await,
            Lifecycle::Connect { recovered: false }
        ));
        if transports == UPGRADE {
            wait_for_upgrade(&c).await;
        }
        let who = whoami(&c).await;
        let expected = if transports == POLLING {
            "polling"
        } else {
            "websocket"
        };
        assert_eq!(who["transport"], expected, "{mode}");
        assert_eq!(
            c.transport().map(Transport::as_str),
            Some(expected),
            "{mode}"
        );

        // JSON with an ack.
        let args = vec![json!(1), json!("two"), json!({"three": [3]}), Value::Null];
        let ack = c.emit_with_ack("echo", args.clone(), T).await.unwrap();
        assert_eq!(ack.args, args, "{mode}");

        // Binary with an ack (a top-level and a nested attachment).
        let mut p = Payload::new().arg("file").binary(vec![0u8, 1, 2, 255]);
        let nested = p.push_attachment(vec![9u8; 1000]);
        p.args.push(json!({"inner": nested}));
        let ack = c.emit_with_ack("echo", p, T).await.unwrap();
        assert_eq!(ack.args[0], "file");
        assert_eq!(
            ack.binary_at(1).unwrap().as_ref(),
            &[0, 1, 2, 255],
            "{mode}"
        );
        assert_eq!(ack.bytes_of(&ack.args[2]["inner"]).unwrap().len(), 1000);

        // Plain emit; the server emits it back: the arguments come back exactly, without
        // the recovery offset that the server appends.
        c.emit("echo", vec![json!("a"), json!("last string")])
            .unwrap();
        let ev = recv(&mut rec.events, 5, "echo event").await;
        assert_eq!(ev.name, "echo");
        assert_eq!(ev.args(), &[json!("a"), json!("last string")], "{mode}");
        assert!(ev.ack.is_none());

        // Binary from the server: an event and a binary ack.
        let ack = c.emit_with_ack("binary", (), T).await.unwrap();
        assert_eq!(ack.binary_at(0).unwrap().as_ref(), &[0, 255]);
        let ev = recv(&mut rec.events, 5, "binary event").await;
        assert_eq!(ev.name, "binary");
        assert_eq!(ev.payload.args.len(), 2, "{mode}: {:?}", ev.payload);
        assert_eq!(ev.payload.binary_at(0).unwrap().as_ref(), &[1, 2, 3]);
        let nested = ev.payload.bytes_of(&ev.payload.args[1]["nested"]).unwrap();
        assert_eq!(nested.as_ref(), b"hi");
        c.close().await;
        assert!(!c.connected());
        assert!(c.emit("echo", ()).unwrap_err().is_closed());
    }
}

async fn events_stay_in_order_across_the_upgrade(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let (b, mut rec) = builder(&server.url(), UPGRADE);
    let c = b.connect().await.unwrap();
    // Start right away, while the upgrade is under way.
    c.emit("join", json!("r")).unwrap();
    for i in 0..20 {
        c.emit("numbered", vec![json!("r"), json!(i * 10), json!(10)])
            .unwrap();
    }
    for i in 0..200 {
        let ev = recv(&mut rec.events, 5, "numbered").await;
        assert_eq!(ev.name, "numbered");
        assert_eq!(ev.args(), &[json!(i)]);
    }
    wait_for_upgrade(&c).await;
    assert_eq!(whoami(&c).await["transport"], "websocket");
}

async fn namespaces_share_one_connection(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let (b, mut root_rec) = builder(&server.url(), transports);
        let root = b.connect().await.unwrap();
        let (atx, mut admin_events) = mpsc::unbounded_channel();
        let admin = root
            .socket("/admin")
            .auth(json!({"token": "secret"}))
            .on_any(move |_c, ev| {
                let _ = atx.send(ev);
            })
            .connect()
            .await
            .unwrap();
        assert_eq!(admin.namespace(), "/admin");
        let (r, a) = (whoami(&root).await, whoami(&admin).await);
        assert_eq!(r["nsp"], "/");
        assert_eq!(a["nsp"], "/admin");
        assert_eq!(r["conn"], a["conn"], "{mode}: one Engine.IO connection");
        assert_ne!(r["id"], a["id"]);

        // Events go to their own namespace.
        admin.emit("echo", json!("to admin")).unwrap();
        root.emit("echo", json!("to root")).unwrap();
        assert_eq!(
            recv(&mut admin_events, 5, "admin").await.args(),
            &[json!("to admin")]
        );
        assert_eq!(
            recv(&mut root_rec.events, 5, "root").await.args(),
            &[json!("to root")]
        );

        // The same namespace twice is refused; a bad token is a connect error.
        let e = root
            .socket("/admin")
            .auth(json!({"token": "secret"}))
            .connect()
            .await;
        assert!(matches!(e, Err(Error::Config(_))), "{e:?}");
        let e = root.socket("admin2").connect().await;
        assert!(e.is_err(), "unknown namespace");
        let e = root.socket("/admin").connect().await.unwrap_err();
        assert!(matches!(e, Error::Config(_)));

        // Leaving one namespace keeps the other.
        admin.disconnect().await;
        assert!(!admin.active());
        assert!(root.connected());
        assert_eq!(whoami(&root).await["conn"], r["conn"]);
        root.close().await;
    }
}

async fn connect_errors_carry_message_and_data(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let (b, _) = builder(&server.url(), transports);
        let e = b
            .auth(json!({"reject": "go away"}))
            .connect()
            .await
            .unwrap_err();
        assert!(e.is_connect_error(), "{mode}: {e:?}");
        let Error::ConnectError { nsp, message, data } = &e else {
            unreachable!()
        };
        assert_eq!(nsp, "/");
        assert_eq!(message, "go away");
        assert_eq!(data.as_ref().unwrap()["code"], 401);

        let (b, _) = builder(&server.url(), transports);
        let e = b.namespace("/admin").connect().await.unwrap_err();
        assert_eq!(
            e.connect_error_data(),
            Some(&json!({"code": 401})),
            "{mode}"
        );
        // The URL's path names the namespace, as in the JavaScript client.
        let e = ClientBuilder::new(format!("{}/admin", server.url()))
            .transports(transports.iter().copied())
            .connect()
            .await
            .unwrap_err();
        assert!(e.is_connect_error());
    }
    // An unknown namespace is refused by the server too.
    let e = ClientBuilder::new(server.url())
        .namespace("/nope")
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_connect_error(), "{e:?}");
}

async fn connection_refused_and_timeouts(kind: ServerKind) {
    // Nothing listens there.
    let e = ClientBuilder::new("http://127.0.0.1:1")
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_transport(), "{e:?}");
    let e = ClientBuilder::new("http://127.0.0.1:1")
        .transports([Transport::Websocket])
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_transport(), "{e:?}");

    let server = TestServer::start(kind).await;
    let (b, _) = builder(&server.url(), WS);
    let c = b.connect().await.unwrap();
    let e = c
        .emit_with_ack("never-ack", (), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    // Still connected and working afterwards.
    assert_eq!(
        c.emit_with_ack("echo", json!(1), T).await.unwrap().args,
        vec![json!(1)]
    );
}

async fn headers_and_query_reach_the_server(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let url = format!("{}/?fromurl=1", server.url());
        let c = ClientBuilder::new(url)
            .transports(transports.iter().copied())
            .header("x-tether-test", "yes")
            .query("q", "a b&c")
            .connect()
            .await
            .unwrap();
        let who = whoami(&c).await;
        assert_eq!(who["headers"]["x-tether-test"], "yes", "{mode}");
        assert_eq!(who["query"]["q"], "a b&c", "{mode}");
        assert_eq!(who["query"]["fromurl"], "1", "{mode}");
        assert_eq!(who["query"]["EIO"], "4");
        c.close().await;
    }
}

async fn auth_static_and_computed_per_attempt(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let (b, _) = builder(&server.url(), WS);
    let c = b.auth(json!({"token": "static"})).connect().await.unwrap();
    assert_eq!(whoami(&c).await["auth"], json!({"token": "static"}));
    c.close().await;

    for (mode, transports) in MODES {
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b
            .auth_fn(move || json!({"attempt": n2.fetch_add(1, Ordering::SeqCst)}))
            .connect()
            .await
            .unwrap();
        recv(&mut rec.life, 5, "connect").await;
        assert_eq!(whoami(&c).await["auth"], json!({"attempt": 0}), "{mode}");
        // Receive a recoverable event, so that there is an offset to send back.
        c.emit_with_ack("emit-to-me", json!("hello"), T)
            .await
            .unwrap();
        recv(&mut rec.events, 5, "hello").await;
        c.emit("drop", ()).unwrap();
        wait_reconnected(&mut rec).await;
        let who = whoami(&c).await;
        assert_eq!(who["auth"]["attempt"], 1, "{mode}: {who}");
        // The pid and offset of connection state recovery ride along with the auth.
        assert_eq!(who["auth"]["pid"].as_str(), c.pid().as_deref(), "{mode}");
        assert!(who["auth"]["offset"].is_string(), "{mode}: {who}");
        assert!(c.recovered(), "{mode}");
        c.close().await;
    }
}

async fn server_emits_with_ack_answered_by_handlers(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let (b, _) = builder(&server.url(), transports);
        let c = b
            .on("question", |_c, ev| {
                let n = ev.args()[0].as_i64().unwrap();
                let ack = ev.ack.expect("the server asked for an ack");
                ack.send(json!(n + 1)).unwrap();
                // A second answer is ignored.
                ack.send(json!("again")).unwrap();
            })
            .on("upload", |_c, ev| {
                let len = ev.payload.binary_at(0).map(|b| b.len()).unwrap_or(0);
                let answer = Payload::new().arg(len).binary(vec![7u8; 3]);
                ev.ack.unwrap().send(answer).unwrap();
            })
            .connect()
            .await
            .unwrap();
        let ack = c
            .emit_with_ack("ask", vec![json!("question"), json!([41])], T)
            .await
            .unwrap();
        assert_eq!(ack.args, vec![json!([42])], "{mode}");

        // Binary both ways through the server's ack.
        // ask(event, args, ack), with args = [a binary value].
        let mut ask = Payload::new().arg("upload");
        let ph = ask.push_attachment(vec![1u8; 10]);
        ask.args.push(json!([ph]));
        let ack = c.emit_with_ack("ask", ask, T).await.unwrap();
        let answer = ack.args[0].as_array().unwrap();
        assert_eq!(answer[0], 10, "{mode}");
        assert_eq!(ack.bytes_of(&answer[1]).unwrap().as_ref(), &[7, 7, 7]);

        // A handler may also add handlers at run time.
        c.on("late", |_c, ev| {
            ev.ack.unwrap().send(json!("late answer")).unwrap();
        });
        let ack = c
            .emit_with_ack("ask", vec![json!("late"), json!([])], T)
            .await
            .unwrap();
        assert_eq!(ack.args, vec![json!(["late answer"])]);
        c.off("late");
        let ack = c
            .emit_with_ack("ask", vec![json!("late"), json!([])], T)
            .await
            .unwrap();
        assert!(
            ack.args[0]["error"].is_string(),
            "no handler: the server times out"
        );
        c.close().await;
    }
}

async fn catch_all_and_specific_handlers(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let (stx, mut specific) = mpsc::unbounded_channel();
    let (b, mut rec) = builder(&server.url(), WS);
    let c = b
        .on("a", move |_c, ev| {
            let _ = stx.send(ev.args().to_vec());
        })
        .connect()
        .await
        .unwrap();
    c.emit("emit-to-me", vec![json!("a"), json!(1)]).unwrap();
    c.emit("emit-to-me", vec![json!("b"), json!(2)]).unwrap();
    c.emit("emit-to-me", vec![json!(42), json!(3)]).unwrap();
    let names: Vec<String> = [
        recv(&mut rec.events, 5, "a").await,
        recv(&mut rec.events, 5, "b").await,
        recv(&mut rec.events, 5, "42").await,
    ]
    .into_iter()
    .map(|e| e.name)
    .collect();
    assert_eq!(names, ["a", "b", "42"]);
    assert_eq!(recv(&mut specific, 5, "specific a").await, vec![json!(1)]);
}

async fn volatile_emits_are_dropped_while_disconnected(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let key = format!("volatile-{mode}");
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b
            .reconnection(Reconnection::default().delay(Duration::from_millis(300)))
            .connect()
            .await
            .unwrap();
        c.emit_volatile("log", vec![json!(key), json!(1)]).unwrap();
        c.emit_with_ack("echo", (), T).await.unwrap(); // a round trip: the log is done
        c.emit("drop", ()).unwrap();
        recv_until(&mut rec.life, 5, "disconnect", |l| {
            matches!(l, Lifecycle::Disconnect(_))
        })
        .await;
        assert!(!c.connected());
        c.emit_volatile("log", vec![json!(key), json!(2)]).unwrap();
        c.emit("log", vec![json!(key), json!(3)]).unwrap();
        wait_reconnected(&mut rec).await;
        // The buffered emit went out right after the reconnection, before this one.
        assert_eq!(get_log(&c, &key).await, vec![json!(1), json!(3)], "{mode}");
        c.close().await;
    }
}

async fn reconnects_and_recovers_missed_events_once_and_in_order(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let room = format!("room-{mode}");
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.connect().await.unwrap();
        assert!(matches!(
            recv(&mut rec.life, 5, "connect").await,
            Lifecycle::Connect { .. }
        ));
        if transports == UPGRADE {
            wait_for_upgrade(&c).await;
        }
        let sid = c.id().unwrap();
        assert!(c.pid().is_some(), "the server has recovery on");
        assert!(!c.recovered());
        c.emit_with_ack("join", json!(room), T).await.unwrap();
        c.emit("numbered", vec![json!(room), json!(0), json!(5)])
            .unwrap();
        for i in 0..5 {
            assert_eq!(recv(&mut rec.events, 5, "live").await.args(), &[json!(i)]);
        }
        // The server closes the transport, then emits 5..10 while we are away.
        c.emit("drop-then-emit", vec![json!(room), json!(5), json!(5)])
            .unwrap();
        let life = wait_reconnected(&mut rec).await;
        let kinds: Vec<String> = life.iter().map(|l| format!("{l:?}")).collect();
        assert!(
            matches!(
                life.as_slice(),
                [
                    Lifecycle::Disconnect(DisconnectReason::TransportClose),
                    Lifecycle::ReconnectAttempt(1),
                    Lifecycle::Reconnect(1),
                    Lifecycle::Connect { recovered: true }
                ]
            ),
            "{mode}: {kinds:?}"
        );
        assert!(c.recovered(), "{mode}");
        assert_eq!(
            c.id().as_deref(),
            Some(sid.as_str()),
            "{mode}: same socket id"
        );
        // Live events after the recovery come after the missed ones.
        c.emit("numbered", vec![json!(room), json!(10), json!(3)])
            .unwrap();
        for i in 5..13 {
            let ev = recv(&mut rec.events, 5, "numbered after recovery").await;
            assert_eq!(ev.name, "numbered");
            assert_eq!(ev.args(), &[json!(i)], "{mode}: once, in order, no offset");
        }
        let who = whoami(&c).await;
        assert_eq!(who["recovered"], true);
        assert!(who["rooms"].as_array().unwrap().contains(&json!(room)));
        // Nothing more (no duplicates).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rec.events.try_recv().is_err(), "{mode}: no duplicates");
        c.close().await;
    }
}

/// A connection that drops before any stored event arrived: the client holds a pid but no
/// offset, and sends the pid alone. Here the two servers legitimately differ:
/// - the Node server (socket.io 4.8) recovers only with both a pid and an offset, so the
///   namespace connects as a new socket, outside its old rooms, and what was emitted
///   meanwhile is lost (the client's documentation says so, see `lib.rs`);
/// - Tether restores the session and replays everything since the session started
///   (`shared/conformance/CONTRACT.md`; a `[tether-only]` case of `tests/interop`).
async fn recovery_with_a_pid_and_no_offset(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let room = format!("no-offset-{mode}");
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.connect().await.unwrap();
        recv(&mut rec.life, 5, "connect").await;
        if transports == UPGRADE {
            wait_for_upgrade(&c).await;
        }
        let sid = c.id().unwrap();
        let pid = c.pid().unwrap();
        // Only acks so far: they carry no offset.
        c.emit_with_ack("join", json!(room), T).await.unwrap();
        c.emit("drop-then-emit", vec![json!(room), json!(0), json!(3)])
            .unwrap();
        let life = wait_reconnected(&mut rec).await;
        let recovered = matches!(life.last(), Some(Lifecycle::Connect { recovered: true }));
        let who = whoami(&c).await;
        let in_room = who["rooms"].as_array().unwrap().contains(&json!(room));
        match kind {
            ServerKind::Node => {
                assert!(!recovered && !c.recovered(), "{mode}: {life:?}");
                assert_eq!(who["recovered"], false, "{mode}");
                assert_ne!(
                    c.id().as_deref(),
                    Some(sid.as_str()),
                    "{mode}: a new socket"
                );
                assert_ne!(c.pid().as_deref(), Some(pid.as_str()), "{mode}: a new pid");
                assert!(!in_room, "{mode}: the rooms are gone: {who}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(rec.events.try_recv().is_err(), "{mode}: nothing replayed");
            }
            ServerKind::Tether => {
                assert!(recovered && c.recovered(), "{mode}: {life:?}");
                assert_eq!(who["recovered"], true, "{mode}");
                assert_eq!(c.id().as_deref(), Some(sid.as_str()), "{mode}: same socket");
                assert_eq!(c.pid().as_deref(), Some(pid.as_str()), "{mode}: same pid");
                assert!(in_room, "{mode}: the rooms are kept: {who}");
                for i in 0..3 {
                    let ev = recv(&mut rec.events, 5, "missed numbered").await;
                    assert_eq!(ev.name, "numbered");
                    assert_eq!(ev.args(), &[json!(i)], "{mode}: once, in order");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert!(rec.events.try_recv().is_err(), "{mode}: no duplicates");
            }
        }
        c.close().await;
    }
}

async fn send_buffer_and_acks_across_a_reconnection(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let key = format!("buffer-{mode}");
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b
            .reconnection(Reconnection::default().delay(Duration::from_millis(300)))
            .connect()
            .await
            .unwrap();
        // An ack pending when the connection drops fails with Disconnected.
        let pending = {
            let c = c.clone();
            tokio::spawn(async move { c.emit_with_ack("never-ack", (), T).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.emit("drop", ()).unwrap();
        recv_until(&mut rec.life, 5, "disconnect", |l| {
            matches!(l, Lifecycle::Disconnect(_))
        })
        .await;
        let e = pending.await.unwrap().unwrap_err();
        assert!(e.is_disconnected(), "{mode}: {e:?}");
        // Emitted while disconnected: buffered, sent after the reconnection.
        c.emit("log", vec![json!(key), json!("buffered")]).unwrap();
        let with_ack = {
            let c = c.clone();
            tokio::spawn(async move { c.emit_with_ack("echo", json!("acked later"), T).await })
        };
        // Timed out while still buffered: never sent.
        let e = c
            .emit_with_ack(
                "log",
                vec![json!(key), json!("expired")],
                Duration::from_millis(50),
            )
            .await
            .unwrap_err();
        assert!(e.is_timeout());
        wait_reconnected(&mut rec).await;
        let ack = with_ack.await.unwrap().unwrap();
        assert_eq!(ack.args, vec![json!("acked later")], "{mode}");
        assert_eq!(get_log(&c, &key).await, vec![json!("buffered")], "{mode}");
        c.close().await;
    }
}

async fn retries_send_at_least_once(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let (b, _) = builder(&server.url(), transports);
        let c = b
            .retries(3)
            .ack_timeout(Duration::from_millis(200))
            .connect()
            .await
            .unwrap();
        // The server ignores the first two tries, and acks the third.
        let key = format!("flaky-{mode}");
        let ack = c
            .emit_with_ack(
                "flaky",
                vec![json!(key), json!(2)],
                Duration::from_millis(200),
            )
            .await
            .unwrap();
        assert_eq!(ack.args, vec![json!(3)], "{mode}");
        // A plain emit is retried too (with ack_timeout).
        let key2 = format!("flaky-plain-{mode}");
        c.emit("flaky", vec![json!(key2), json!(1)]).unwrap();
        // Emits are sent one at a time, in order: this one follows the one above.
        let n = c.emit_with_ack("count", json!(key2), T).await.unwrap();
        assert_eq!(n.args, vec![json!(2)], "{mode}");
        // Giving up after 1 + retries tries.
        let key3 = format!("flaky-never-{mode}");
        let e = c
            .emit_with_ack(
                "flaky",
                vec![json!(key3), json!(100)],
                Duration::from_millis(100),
            )
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{mode}: {e:?}");
        let n = c.emit_with_ack("count", json!(key3), T).await.unwrap();
        assert_eq!(n.args, vec![json!(4)], "{mode}");
        c.close().await;
    }
}

async fn retries_survive_a_reconnection(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let (b, mut rec) = builder(&server.url(), WS);
    let c = b.retries(2).connect().await.unwrap();
    c.emit("drop", ()).unwrap();
    recv_until(&mut rec.life, 5, "disconnect", |l| {
        matches!(l, Lifecycle::Disconnect(_))
    })
    .await;
    // Queued while disconnected, sent once connected again.
    let ack = c.emit_with_ack("echo", json!("queued"), T).await.unwrap();
    assert_eq!(ack.args, vec![json!("queued")]);
}

async fn reconnection_gives_up_after_its_attempts(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let (b, mut rec) = builder(&server.url(), UPGRADE);
    let c = b
        .reconnection(
            Reconnection::default()
                .attempts(2)
                .delay(Duration::from_millis(100))
                .randomization_factor(0.0),
        )
        .connect()
        .await
        .unwrap();
    recv(&mut rec.life, 5, "connect").await;
    server.kill().await;
    let life = recv_until(&mut rec.life, 10, "reconnect failed", |l| {
        matches!(l, Lifecycle::ReconnectFailed)
    })
    .await;
    let kinds: Vec<String> = life.iter().map(|l| format!("{l:?}")).collect();
    assert!(
        matches!(
            life.as_slice(),
            [
                Lifecycle::Disconnect(_),
                Lifecycle::ReconnectAttempt(1),
                Lifecycle::ReconnectError(_),
                Lifecycle::ReconnectAttempt(2),
                Lifecycle::ReconnectError(_),
                Lifecycle::ReconnectFailed,
            ]
        ),
        "{kinds:?}"
    );
    assert!(!c.active());
    assert!(c.emit("echo", ()).unwrap_err().is_closed());
}

async fn no_reconnection_when_disabled_or_after_a_server_disconnect(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    let (b, mut rec) = builder(&server.url(), WS);
    let c = b.connect().await.unwrap();
    recv(&mut rec.life, 5, "connect").await;
    c.emit("server-disconnect", ()).unwrap();
    let l = recv(&mut rec.life, 5, "disconnect").await;
    assert!(
        matches!(
            l,
            Lifecycle::Disconnect(DisconnectReason::IoServerDisconnect)
        ),
        "{l:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rec.life.try_recv().is_err(), "no reconnection");
    assert!(!c.active());

    let (b, mut rec) = builder(&server.url(), WS);
    let c = b
        .reconnection(Reconnection::disabled())
        .connect()
        .await
        .unwrap();
    recv(&mut rec.life, 5, "connect").await;
    c.emit("drop", ()).unwrap();
    let l = recv(&mut rec.life, 5, "disconnect").await;
    assert!(
        matches!(l, Lifecycle::Disconnect(DisconnectReason::TransportClose)),
        "{l:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rec.life.try_recv().is_err(), "no reconnection");
    assert!(c.emit("echo", ()).unwrap_err().is_closed());
}

async fn client_disconnect_reaches_the_server(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in MODES {
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.connect().await.unwrap();
        recv(&mut rec.life, 5, "connect").await;
        let id = c.id().unwrap();
        c.disconnect().await;
        let l = recv(&mut rec.life, 5, "disconnect").await;
        assert!(matches!(
            l,
            Lifecycle::Disconnect(DisconnectReason::IoClientDisconnect)
        ));
        assert!(!c.connected() && !c.active());

        let (b, _) = builder(&server.url(), WS);
        let other = b.connect().await.unwrap();
        let mut found = None;
        for _ in 0..20 {
            found = get_log(&other, "disconnects")
                .await
                .into_iter()
                .find(|d| d["id"] == json!(id));
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let found = found.unwrap_or_else(|| panic!("{mode}: the server saw no disconnect"));
        assert_eq!(found["reason"], "client namespace disconnect", "{mode}");
        other.close().await;
    }
}

async fn heartbeat_keeps_the_connection_alive(kind: ServerKind) {
    let server =
        TestServer::start_with(kind, &[("PING_INTERVAL", "200"), ("PING_TIMEOUT", "200")]).await;
    let mut clients = Vec::new();
    for (_, transports) in MODES {
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.connect().await.unwrap();
        recv(&mut rec.life, 5, "connect").await;
        clients.push((c, rec));
    }
    // Several ping intervals: the server would close a client that does not answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (c, rec) in &mut clients {
        assert!(rec.life.try_recv().is_err(), "no disconnection");
        let who = whoami(c).await;
        assert_eq!(who["recovered"], false);
    }
}

async fn volatile_trailing_strings_are_taken_for_offsets(kind: ServerKind) {
    // The documented consequence of the offset rule: while a pid is held, the trailing
    // string of an event without ack id is taken for an offset, also when the event was
    // volatile and the server appended none.
    let server = TestServer::start(kind).await;
    let (b, mut rec) = builder(&server.url(), WS);
    let c = b.connect().await.unwrap();
    c.emit("volatile-to-me", vec![json!("v"), json!(1), json!("str")])
        .unwrap();
    let ev = recv(&mut rec.events, 5, "volatile").await;
    assert_eq!(ev.args(), &[json!(1)]);
    // A non-string last argument is left alone.
    c.emit("volatile-to-me", vec![json!("v"), json!("str"), json!(2)])
        .unwrap();
    let ev = recv(&mut rec.events, 5, "volatile").await;
    assert_eq!(ev.args(), &[json!("str"), json!(2)]);
}

async fn acks_never_overtake_earlier_events(kind: ServerKind) {
    // The server writes `42["self",i]` then the ack of `emit-to-me`: the handler of
    // "self" must have run when `emit_with_ack` returns, and the first connect handler
    // when `connect()` returns.
    let server = TestServer::start(kind).await;
    for (mode, transports) in [("polling", POLLING), ("websocket", WS)] {
        let seen = Arc::new(AtomicU32::new(u32::MAX));
        let connected = Arc::new(AtomicU32::new(0));
        let (s, c2) = (seen.clone(), connected.clone());
        let c = ClientBuilder::new(server.url())
            .transports(transports.iter().copied())
            .on("self", move |_c, ev| {
                // A little work, so that a racing ack would win.
                std::thread::sleep(Duration::from_micros(200));
                s.store(ev.args()[0].as_u64().unwrap() as u32, Ordering::SeqCst);
            })
            .on_lifecycle(move |_c, l| {
                if matches!(l, Lifecycle::Connect { .. }) {
                    std::thread::sleep(Duration::from_millis(5));
                    c2.fetch_add(1, Ordering::SeqCst);
                }
            })
            .connect()
            .await
            .unwrap();
        let connect_handler_ran = connected.load(Ordering::SeqCst) == 1;
        let mut overtaken = 0;
        for i in 0..50u32 {
            c.emit_with_ack("emit-to-me", vec![json!("self"), json!(i)], T)
                .await
                .unwrap();
            if seen.load(Ordering::SeqCst) != i {
                overtaken += 1;
            }
        }
        assert!(
            connect_handler_ran && overtaken == 0,
            "{mode}: connect handler ran before connect() returned: {connect_handler_ran}; \
             {overtaken} of 50 acks overtook their event"
        );
        c.close().await;
    }
}

async fn a_saved_session_resumes_in_a_new_client(kind: ServerKind) {
    // A client "process" (its own runtime, dropped without a word to the server, as a
    // killed app) saves its session; a new client built from it recovers the socket and
    // gets the events sent meanwhile, once and in order.
    let server = TestServer::start(kind).await;
    let url = server.url();
    let (saved, old_id) = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            let (b, mut rec) = builder(&url, WS);
            let c = b.connect().await.unwrap();
            assert!(c.session().is_some_and(|s| s.offset.is_none()));
            c.emit_with_ack("join", json!("resume-room"), T)
                .await
                .unwrap();
            c.emit_with_ack(
                "numbered",
                vec![json!("resume-room"), json!(0), json!(3)],
                T,
            )
            .await
            .unwrap();
            for i in 0..3 {
                let ev = recv(&mut rec.events, 5, "numbered").await;
                assert_eq!(ev.args(), &[json!(i)]);
                assert!(ev.offset().is_some());
            }
            let s = c.session().unwrap();
            assert_eq!(Some(s.pid.clone()), c.pid());
            assert!(s.offset.is_some(), "{s:?}");
            (serde_json::to_string(&s).unwrap(), c.id().unwrap())
        });
        drop(rt); // every task and socket gone, no DISCONNECT sent
        r
    })
    .await
    .unwrap();

    // Meanwhile, events for the room.
    let other = ClientBuilder::new(server.url())
        .transports([Transport::Websocket])
        .connect()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    other
        .emit_with_ack(
            "numbered",
            vec![json!("resume-room"), json!(3), json!(3)],
            T,
        )
        .await
        .unwrap();

    let session: tether_client::Session = serde_json::from_str(&saved).unwrap();
    let (b, mut rec) = builder(&server.url(), WS);
    let c = b.session(session).connect().await.unwrap();
    assert!(c.recovered(), "{kind:?}: not recovered");
    assert_eq!(c.id().unwrap(), old_id);
    for i in 3..6 {
        let ev = recv(&mut rec.events, 5, "missed event").await;
        assert_eq!((ev.name.as_str(), ev.args()), ("numbered", &[json!(i)][..]));
    }
    // Nothing twice: the next event is a new one.
    other
        .emit_with_ack(
            "numbered",
            vec![json!("resume-room"), json!(6), json!(1)],
            T,
        )
        .await
        .unwrap();
    let ev = recv(&mut rec.events, 5, "live event").await;
    assert_eq!(ev.args(), &[json!(6)]);
    let who = whoami(&c).await;
    assert!(who["rooms"]
        .as_array()
        .unwrap()
        .contains(&json!("resume-room")));

    // A session the server does not know gives a new socket, not an error.
    let (b, _rec) = builder(&server.url(), WS);
    let c2 = b
        .session(tether_client::Session {
            pid: "unknown".into(),
            offset: Some("0-0".into()),
        })
        .connect()
        .await
        .unwrap();
    assert!(!c2.recovered());
    assert_ne!(c2.session().unwrap().pid, "unknown");
}

async fn the_first_connection_is_retried_when_asked(kind: ServerKind) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    // Off (the default): the first error is the answer.
    let (b, _) = builder(&url, WS);
    let e = b.connect().await.unwrap_err();
    assert!(e.is_transport(), "{e}");
    // On, with two attempts, nobody listening: the last error, after both attempts.
    let (b, mut rec) = builder(&url, WS);
    let e = b
        .reconnection(
            Reconnection::default()
                .attempts(2)
                .delay(Duration::from_millis(50))
                .delay_max(Duration::from_millis(50)),
        )
        .retry_first_connection(true)
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_transport(), "{e}");
    let mut attempts = Vec::new();
    while let Ok(l) = rec.life.try_recv() {
        if let Lifecycle::ReconnectAttempt(n) = l {
            attempts.push(n);
        }
    }
    assert_eq!(attempts, vec![1, 2]);
    // On, and the server comes up later: connected.
    for (mode, transports) in [("websocket", WS), ("polling", POLLING)] {
        let (b, mut rec) = builder(&url, transports);
        let pending = tokio::spawn(b.retry_first_connection(true).connect());
        let _ = recv_until(&mut rec.life, 10, "a retry", |l| {
            matches!(l, Lifecycle::ReconnectAttempt(2))
        })
        .await;
        let port_s = port.to_string();
        let server = TestServer::start_with(kind, &[("PORT", &port_s)]).await;
        let c = tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("connect() did not return once the server was up")
            .unwrap()
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(c.connected(), "{mode}");
        c.emit_with_ack("echo", (), T).await.unwrap();
        c.close().await;
        server.kill().await;
    }
}

async fn typed_arguments_streams_and_awaitable_state(kind: ServerKind) {
    use futures_util::StreamExt as _;
    use tether_client::{ClientEvent, NamespaceBuilder};

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Chat {
        user: String,
        text: String,
    }
    fn logged<B: NamespaceBuilder>(b: B) -> B {
        b.on("never-sent", |_c, _ev| {})
    }
    let server = TestServer::start(kind).await;
    let (b, _rec) = builder(&server.url(), WS);
    let c = logged(b).connect().await.unwrap();

    // Typed emit and ack: a tuple is several arguments, a struct one.
    let chat = Chat {
        user: "ann".into(),
        text: "hi".into(),
    };
    let (back, n): (Chat, u32) = c.emit_with_ack_serde("echo", &(&chat, 7), T).await.unwrap();
    assert_eq!((back, n), (chat, 7));
    let (v,): (Vec<u8>,) = c
        .emit_with_ack_serde("echo", &vec![1u8, 2], T)
        .await
        .unwrap();
    assert_eq!(v, vec![1, 2]);
    // A type that does not match: a clear error, not a panic.
    let e = c
        .emit_with_ack_serde::<_, (u32,)>("echo", &("text",), T)
        .await
        .unwrap_err();
    assert!(e.is_serde(), "{e}");
    assert!(e.to_string().contains("acknowledgement of \"echo\""), "{e}");

    // The events stream, with typed access to an event's arguments.
    let mut events = std::pin::pin!(c.events());
    c.emit_serde(
        "emit-to-me",
        &(
            "typed",
            Chat {
                user: "bob".into(),
                text: "yo".into(),
            },
        ),
    )
    .unwrap();
    let ev = loop {
        match tokio::time::timeout(T, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Event(ev) if ev.name == "typed" => break ev,
            _ => {}
        }
    };
    let got: Chat = ev.arg_as(0).unwrap();
    assert_eq!(got.user, "bob");
    let e = ev.arg_as::<u32>(0).unwrap_err();
    assert!(
        e.to_string().starts_with("argument 0 of event \"typed\""),
        "{e}"
    );

    // Awaitable state: after a drop, wait_connected returns once reconnected, and the
    // stream saw the disconnection and the connection in order.
    c.emit("drop", ()).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let ClientEvent::Lifecycle(l) = tokio::time::timeout(T, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            match l {
                Lifecycle::Disconnect(_) => seen.push("disconnect"),
                Lifecycle::Connect { .. } => seen.push("connect"),
                _ => {}
            }
        }
    }
    assert_eq!(seen, ["disconnect", "connect"]);
    tokio::time::timeout(T, c.wait_connected())
        .await
        .unwrap()
        .unwrap();
    assert!(c.connected());
    c.close().await;
    assert!(c.wait_connected().await.unwrap_err().is_closed());

    // connect_error_message.
    let (b, _) = builder(&server.url(), WS);
    let e = b
        .auth(json!({"reject": "go away"}))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(e.connect_error_message(), Some("go away"));
}

async fn a_disconnected_client_connects_again(kind: ServerKind) {
    let server = TestServer::start(kind).await;
    for (mode, transports) in [("websocket", WS), ("polling", POLLING)] {
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.connect().await.unwrap();
        let first = c.id().unwrap();
        // By the client.
        c.disconnect().await;
        assert!(
            !c.active() && c.emit("echo", ()).unwrap_err().is_closed(),
            "{mode}"
        );
        c.connect().await.unwrap();
        assert!(c.connected(), "{mode}");
        assert_ne!(c.id().unwrap(), first, "{mode}: a new socket");
        // The handlers are still there.
        c.emit("echo", vec![json!("again")]).unwrap();
        let ev = recv_until(&mut rec.events, 5, "echo", |e| e.name == "echo").await;
        assert_eq!(ev.last().unwrap().args(), &[json!("again")], "{mode}");
        // By the server, then by close(): each time back with connect().
        c.emit("server-disconnect", ()).unwrap();
        recv_until(&mut rec.life, 5, "server disconnect", |l| {
            matches!(
                l,
                Lifecycle::Disconnect(DisconnectReason::IoServerDisconnect)
            )
        })
        .await;
        tokio::time::timeout(T, async {
            while c.active() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        c.connect().await.unwrap();
        c.emit_with_ack("echo", (), T).await.unwrap();
        c.close().await;
        assert!(!c.connected());
        c.connect().await.unwrap();
        // Connecting an active client does nothing.
        c.connect().await.unwrap();
        let who = whoami(&c).await;
        assert_eq!(who["id"], json!(c.id().unwrap()), "{mode}");
        c.close().await;
    }
}

async fn retries_never_block_later_emits_for_good(kind: ServerKind) {
    // The server never acks "never-ack": with retries and no ack_timeout, each try waits
    // the connection timeout, the emit is given up, and the next one goes.
    let server = TestServer::start(kind).await;
    let (b, _) = builder(&server.url(), WS);
    let c = b
        .retries(1)
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    c.emit("never-ack", ()).unwrap();
    let ack = tokio::time::timeout(
        Duration::from_secs(5),
        c.emit_with_ack("echo", json!("after"), Duration::from_secs(2)),
    )
    .await
    .expect("a never-acknowledged emit blocked the next one")
    .unwrap();
    assert_eq!(ack.args, vec![json!("after")]);
    // emit_with_ack of a never-acknowledged event: a timeout after its tries.
    let e = c
        .emit_with_ack("never-ack", (), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    c.emit_with_ack("echo", (), T).await.unwrap();
}

async fn binary_anywhere_in_typed_arguments(kind: ServerKind) {
    use tether_client::Binary;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Upload {
        name: String,
        parts: Vec<Binary>,
        meta: Meta,
    }
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Meta {
        thumb: Option<Binary>,
    }
    let server = TestServer::start(kind).await;
    for (mode, transports) in [("websocket", WS), ("polling", POLLING)] {
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.connect().await.unwrap();
        let up = Upload {
            name: "f".into(),
            parts: vec![Binary::from(vec![0u8, 255]), Binary::from(vec![7u8; 3000])],
            meta: Meta {
                thumb: Some(Binary::from(b"png".to_vec())),
            },
        };
        let (back, n): (Upload, u8) = c.emit_with_ack_serde("echo", &(&up, 1), T).await.unwrap();
        assert_eq!((back, n), (up, 1), "{mode}");
        // From the server: `emit("binary", <buffer>, {nested: <buffer>})`.
        c.emit_with_ack("binary", (), T).await.unwrap();
        #[derive(serde::Deserialize)]
        struct Nested {
            nested: Binary,
        }
        let ev = recv_until(&mut rec.events, 5, "binary", |e| e.name == "binary").await;
        let (top, nested): (Binary, Nested) = ev.last().unwrap().args_as().unwrap();
        assert_eq!(
            (top.as_ref(), nested.nested.as_ref()),
            (&[1u8, 2, 3][..], &b"hi"[..]),
            "{mode}"
        );
        c.close().await;
    }
}

/// Generates, for each test body above, `node::<name>` and `tether::<name>`.
macro_rules! on_both_servers {
    ($($name:ident),* $(,)?) => {
        mod node {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::ServerKind::Node).await
                }
            )*
        }
        mod tether {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::ServerKind::Tether).await
                }
            )*
        }
    };
}

on_both_servers!(
    echo_ack_and_binary_on_every_transport,
    events_stay_in_order_across_the_upgrade,
    namespaces_share_one_connection,
    connect_errors_carry_message_and_data,
    connection_refused_and_timeouts,
    headers_and_query_reach_the_server,
    auth_static_and_computed_per_attempt,
    server_emits_with_ack_answered_by_handlers,
    catch_all_and_specific_handlers,
    volatile_emits_are_dropped_while_disconnected,
    reconnects_and_recovers_missed_events_once_and_in_order,
    recovery_with_a_pid_and_no_offset,
    send_buffer_and_acks_across_a_reconnection,
    retries_send_at_least_once,
    retries_survive_a_reconnection,
    reconnection_gives_up_after_its_attempts,
    no_reconnection_when_disabled_or_after_a_server_disconnect,
    client_disconnect_reaches_the_server,
    heartbeat_keeps_the_connection_alive,
    volatile_trailing_strings_are_taken_for_offsets,
    a_saved_session_resumes_in_a_new_client,
    the_first_connection_is_retried_when_asked,
    typed_arguments_streams_and_awaitable_state,
    a_disconnected_client_connects_again,
    retries_never_block_later_emits_for_good,
    binary_anywhere_in_typed_arguments,
);

// A cookie-sticky load balancer, played by the Node server (COOKIE in tests/node/server.js:
// the handshake sets a cookie, every later request of the session must bring it back).
#[tokio::test]
async fn cookies_keep_polling_sessions_sticky() {
    let server = TestServer::start_with(ServerKind::Node, &[("COOKIE", "sticky")]).await;
    // Without the jar (the default), the session's first request is refused.
    let (b, _) = builder(&server.url(), POLLING);
    let e = b
        .reconnection(Reconnection::disabled())
        .connect()
        .await
        .unwrap_err();
    assert!(e.is_transport() || e.is_closed(), "{e}");
    let probe = ClientBuilder::new(server.url())
        .cookies(true)
        .transports([Transport::Websocket])
        .connect()
        .await
        .unwrap();
    let refused = get_log(&probe, "cookie-refused").await.len();
    assert!(refused >= 1, "the server refused nothing without cookies");

    for (mode, transports) in [("polling", POLLING), ("upgrade", UPGRADE)] {
        let (b, mut rec) = builder(&server.url(), transports);
        let c = b.cookies(true).connect().await.unwrap();
        assert!(matches!(
            recv(&mut rec.life, 5, "connect").await,
            Lifecycle::Connect { .. }
        ));
        if transports == UPGRADE {
            wait_for_upgrade(&c).await;
        }
        c.emit_with_ack("echo", (), T).await.unwrap();
        let seen = get_log(&probe, "cookies").await;
        let cookie = seen.last().and_then(Value::as_str).unwrap_or_default();
        assert!(
            cookie.contains("sticky=") && cookie.contains("other=1"),
            "{mode}: {cookie:?}"
        );
        // A reconnection is a new session: its handshake sets a new cookie, kept too.
        c.emit("drop", ()).unwrap();
        wait_reconnected(&mut rec).await;
        c.emit_with_ack("echo", (), T).await.unwrap();
        c.close().await;
    }
    assert_eq!(
        get_log(&probe, "cookie-refused").await.len(),
        refused,
        "a request with the jar on was refused"
    );
}

// On the multi-threaded runtime, where handlers and the awaiting task really race.
mod node_mt {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_never_overtake_earlier_events() {
        super::acks_never_overtake_earlier_events(super::ServerKind::Node).await
    }
}
mod tether_mt {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_never_overtake_earlier_events() {
        super::acks_never_overtake_earlier_events(super::ServerKind::Tether).await
    }
}
