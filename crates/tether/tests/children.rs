//! `cleanup_empty_child_namespaces`: a dynamic child goes away (with its recovery state)
//! when its last socket leaves, and comes back anew on the next CONNECT; static
//! namespaces and, without the option, children stay.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::Client;
use tether::{Namespace, RecoveryConfig, Server, ServerConfig, SocketRef};

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

type Seen = Arc<Mutex<Vec<Weak<Namespace>>>>;

/// The recovery window of the children.
const WINDOW: Duration = Duration::from_millis(500);

fn server(cleanup: bool) -> (Server, Seen) {
    let io = Server::new(ServerConfig {
        recovery: Some(RecoveryConfig {
            max_disconnection_duration: WINDOW,
            ..RecoveryConfig::default()
        }),
        cleanup_empty_child_namespaces: cleanup,
        ..ServerConfig::default()
    });
    let seen: Seen = Arc::default();
    let s = seen.clone();
    io.of_dynamic(|name, _auth| name.starts_with("/room-"))
        .on_connection(move |socket: SocketRef| {
            s.lock().unwrap().push(Arc::downgrade(socket.namespace()));
        });
    (io, seen)
}

async fn join(c: &mut Client, nsp: &str) {
    c.send(&format!("40{nsp},"));
    let reply = c.next().await;
    assert!(
        reply.starts_with(&format!("40{nsp},{{")) && reply.contains("\"sid\""),
        "{reply}"
    );
}

/// Waits up to 2 s for `f` to hold.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_child_is_removed_with_its_state() {
    let (io, seen) = server(true);
    let addr = serve(&io).await;
    let mut a = Client::connect(addr, "").await;
    let mut b = Client::connect(addr, "").await;
    join(&mut a, "/room-1").await;
    join(&mut b, "/room-1").await;
    let first = seen.lock().unwrap()[0].clone();
    assert!(Weak::ptr_eq(&first, &seen.lock().unwrap()[1]), "one child");

    // One socket left: the child stays.
    a.send("41/room-1,");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        first.upgrade().is_some(),
        "removed while a socket is still in it"
    );

    // The last one leaves (by closing its connection, a recoverable disconnect): the
    // child stays while its session may be recovered, then it and its recovery store
    // are freed.
    b.close();
    tokio::time::sleep(WINDOW / 2).await;
    assert!(
        first.upgrade().is_some(),
        "removed while a session may still recover"
    );
    assert!(eventually(|| first.upgrade().is_none()).await, "child kept");
    // `/` is static: never removed.
    assert_eq!(io.of("/").sockets().len(), 1);

    // The next CONNECT creates it anew.
    join(&mut a, "/room-1").await;
    let second = seen.lock().unwrap()[2].clone();
    assert!(!Weak::ptr_eq(&first, &second));
    assert!(second.upgrade().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_children_stay() {
    let (io, seen) = server(false);
    let addr = serve(&io).await;
    let mut a = Client::connect(addr, "").await;
    join(&mut a, "/room-2").await;
    a.send("41/room-2,");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = seen.lock().unwrap()[0].clone();
    assert!(first.upgrade().is_some());
    join(&mut a, "/room-2").await;
    assert!(Weak::ptr_eq(&first, &seen.lock().unwrap()[1]));
}
