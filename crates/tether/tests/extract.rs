//! Typed handlers end to end: each extractor against a raw client, and what a payload
//! that does not fit does (the handler is not called, the hook sees it, no silent null).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tether::extract::{AckSender, Bin, Data, Event, Extension, State, TryData};
use tether::{Error, Payload, Server, SocketRef};

async fn serve(io: &Server) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let io = io.clone();
    tokio::spawn(async move {
        io.serve_with_shutdown(listener, std::future::pending())
            .await
    });
    addr
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Msg {
    room: String,
    n: u32,
}

#[derive(Clone)]
struct Greeting(&'static str);

#[derive(Clone, Debug, PartialEq)]
struct User(String);

#[derive(Deserialize)]
struct Auth {
    user: String,
}

fn app() -> (Server, Arc<Mutex<Vec<String>>>) {
    let io = Server::default().with_state(Greeting("hi"));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = errors.clone();
    let ns = io.of("/");
    ns.on_extract_error(move |_socket, err, ack| {
        seen.lock().unwrap().push(err.to_string());
        // This app answers a bad payload with an error of its own.
        if let (Some(ack), Error::Deserialize(e)) = (ack, &err) {
            let _ = ack.send(json!({ "error": e.to_string() }));
        }
    });
    ns.use_middleware(|socket: SocketRef| {
        socket.extensions(|e| e.insert(User("from-middleware".into())));
        Ok(())
    });
    // An async connection handler: the handlers registered before its first await see
    // every event; `Data` is the CONNECT auth here.
    ns.on_connection(
        |socket: SocketRef, Data(auth): Data<Auth>, State(g): State<Greeting>| async move {
            socket.on("struct", |Data(m): Data<Msg>, ack: AckSender| {
                let _ = ack.send(m);
            });
            socket.on(
                "tuple",
                |Data((a, b)): Data<(String, u32)>, ack: AckSender| {
                    let _ = ack.send((b, a)); // two arguments back
                },
            );
            socket.on("try", |TryData(r): TryData<u32>, ack: AckSender| {
                let _ = ack.send(r.map_err(|e| e.to_string()).is_ok());
            });
            socket.on(
                "bin",
                |Data(meta): Data<Value>, Bin(files): Bin, ack: AckSender| {
                    let sizes: Vec<usize> = files.iter().map(|f| f.len()).collect();
                    let _ = ack.send(
                        Payload::new()
                            .arg(json!({"meta": meta, "sizes": sizes}))
                            .binary(files.into_iter().next().unwrap_or_default()),
                    );
                },
            );
            socket.on("user", |Extension(u): Extension<User>, ack: AckSender| {
                let _ = ack.send(u.0);
            });
            socket.on("no-such-state", |State(_): State<u8>| {});
            socket.on("unserializable", |socket: SocketRef, ack: AckSender| {
                let bad: HashMap<Vec<u8>, u8> = [(vec![1], 1)].into();
                let r = socket.emit("bad", &bad);
                let _ = ack.send(matches!(r, Err(Error::Serialize(_))));
            });
            socket.on_any(|Event(name): Event, p: Payload, ack: Option<AckSender>| {
                if let Some(ack) = ack {
                    let _ = ack.send((name, p.args.len()));
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = socket.emit("welcome", (g.0, auth.user));
        },
    );
    (io, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_extractor_end_to_end() {
    let (io, errors) = app();
    let addr = serve(&io).await;
    let mut c = Client::connect(addr, r#"{"user":"ann"}"#).await;
    // Sent at once after CONNECT: the handlers were registered before the first await.
    c.send(r#"421["struct",{"room":"r","n":7}]"#);
    assert_eq!(c.ack(1).await, json!([{"room":"r","n":7}]));
    let welcome = match c.skipped.is_empty() {
        true => c.next().await,
        false => c.skipped.remove(0),
    };
    assert_eq!(welcome, r#"42["welcome","hi","ann"]"#);

    c.send(r#"422["tuple","a",2]"#);
    assert_eq!(c.ack(2).await, json!([2, "a"]));
    c.send(r#"423["try","nope"]"#);
    assert_eq!(c.ack(3).await, json!([false]));
    c.send(r#"424["try",5]"#);
    assert_eq!(c.ack(4).await, json!([true]));

    // A binary event: one attachment.
    c.send(r#"451-5["bin",{"name":"f"},{"_placeholder":true,"num":0}]"#);
    c.send_binary(vec![1, 2, 3]);
    let m = c.next().await;
    assert!(m.starts_with("461-5["), "{m}");
    assert!(m.contains(r#""sizes":[3]"#), "{m}");

    c.send(r#"426["user"]"#);
    assert_eq!(c.ack(6).await, json!(["from-middleware"]));
    c.send(r#"427["unserializable"]"#);
    assert_eq!(c.ack(7).await, json!([true]));
    c.send(r#"428["whatever",1,2]"#);
    assert_eq!(c.ack(8).await, json!(["whatever", 2]));
    assert!(errors.lock().unwrap().is_empty(), "{errors:?}");

    // A payload that does not fit: the handler is not called, the hook answers.
    c.send(r#"429["struct",{"room":1}]"#);
    let answer = c.ack(9).await;
    assert!(
        answer[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{answer}"
    );
    c.send(r#"4210["no-such-state"]"#);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let errs = errors.lock().unwrap().clone();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("invalid arguments"), "{errs:?}");
    assert!(errs[1].contains("no server state of type u8"), "{errs:?}");
    // No silent null: the hook did not answer that one, so nothing came.
    assert_eq!(c.next_within(Duration::from_millis(300)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hook_a_bad_payload_gets_no_answer() {
    let io = Server::default();
    let called = Arc::new(Mutex::new(0));
    let n = called.clone();
    io.of("/").on_connection(move |socket: SocketRef| {
        let n = n.clone();
        socket.on("n", move |Data(_): Data<u32>, ack: AckSender| {
            *n.lock().unwrap() += 1;
            let _ = ack.send(());
        });
    });
    let addr = serve(&io).await;
    let mut c = Client::connect(addr, "").await;
    c.send(r#"421["n","not a number"]"#);
    assert_eq!(c.next_within(Duration::from_millis(300)).await, None);
    c.send(r#"422["n",1]"#);
    assert_eq!(c.ack(2).await, json!([]));
    assert_eq!(*called.lock().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_middleware_refuses_an_auth_that_does_not_fit() {
    let io = Server::default();
    io.of("/")
        .use_middleware(|socket: SocketRef, Data(auth): Data<Auth>| async move {
            if auth.user == "mallory" {
                return Err(tether::ConnectError::new("go away"));
            }
            socket.extensions(|e| e.insert(User(auth.user)));
            Ok(())
        });
    io.of("/")
        .on_connection(|socket: SocketRef, Extension(u): Extension<User>| {
            let _ = socket.emit("hello", u.0);
        });
    let addr = serve(&io).await;
    let mut ok = Client::connect(addr, r#"{"user":"ann"}"#).await;
    assert_eq!(ok.next().await, r#"42["hello","ann"]"#);
    let refused = Client::connect(addr, r#"{"user":"mallory"}"#).await;
    assert_eq!(refused.sid, r#"44{"message":"go away"}"#);
    // No auth at all does not fit `Auth`: refused, saying why.
    let bad = Client::connect(addr, "").await;
    assert!(
        bad.sid
            .starts_with(r#"44{"message":"invalid arguments: invalid type: null"#),
        "{}",
        bad.sid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_s_ack_deserializes_into_a_type() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct Answer {
        ok: bool,
    }
    let io = Server::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Arc::new(Mutex::new(Some(tx)));
    io.of("/").on_connection(move |socket: SocketRef| {
        let tx = tx.clone();
        async move {
            let answer = socket
                .emit_with_ack("question", "ready?", Duration::from_secs(5))
                .await
                .and_then(|p| p.into_data::<Answer>().map_err(Error::Deserialize));
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(answer.map_err(|e| e.to_string()));
            }
        }
    });
    let addr = serve(&io).await;
    let mut c = Client::connect(addr, "").await;
    let q = c.next().await;
    let id = q
        .strip_prefix("42")
        .and_then(|r| r.split_once('['))
        .map(|(id, _)| id.to_owned())
        .unwrap();
    assert!(q.ends_with(r#"["question","ready?"]"#), "{q}");
    c.send(&format!(r#"43{id}[{{"ok":true}}]"#));
    let answer = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, Ok(Answer { ok: true }));
}
