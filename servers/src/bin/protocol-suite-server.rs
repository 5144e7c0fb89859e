//! The server that the official protocol test suites expect, on one port (3000 unless
//! `PORT` says otherwise, since both suites hard-code `http://localhost:3000`):
//!
//! - `/socket.io/`: the Socket.IO server of the `socket.io-protocol` suite (see the
//!   "Test suite" section of that repository's Readme): pingInterval 300 ms, pingTimeout
//!   200 ms, maxPayload 1 000 000, connectTimeout 1 s, CORS for any origin; namespaces `/`
//!   and `/custom` emit `auth` with the CONNECT payload (`{}` when there is none); `/`
//!   answers `message` with `message-back` and acknowledges `message-with-ack` with its
//!   arguments.
//! - `/engine.io/`: the raw Engine.IO echo server of the `engine.io-protocol` suite, with
//!   the same heartbeat and payload options: every text or binary message is sent back.
//!
//! Run the suites with `scripts/protocol-suites`.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tether::{Cors, EngineConfig, Payload, Server, ServerConfig, SocketRef};
use tether_engine::{CloseReason, Engine, EngineSocket, Handler, Message, TextMessage};

const SOCKET_IO_PATH: &str = "/socket.io/";
const ENGINE_IO_PATH: &str = "/engine.io/";

/// The suites' heartbeat and payload options.
fn engine_config(path: &str) -> EngineConfig {
    EngineConfig {
        path: path.to_owned(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        cors: Some(Cors::any()),
        ..EngineConfig::default()
    }
}

/// The Engine.IO echo server: `socket.on("data", (...args) => socket.send(...args))`.
struct Echo;

impl Handler for Echo {
    type Conn = Arc<EngineSocket>;

    fn on_open(&self, socket: &Arc<EngineSocket>) -> Self::Conn {
        socket.clone()
    }

    fn on_message(&self, socket: &Self::Conn, msg: Message<'_>) {
        let _ = match msg {
            Message::Text(t) => socket.send(TextMessage::new(t)),
            Message::Binary(b) => socket.send_binary(b),
        };
    }

    fn on_close(&self, _socket: &Self::Conn, _reason: CloseReason) {}
}

/// The CONNECT payload, kept by the middleware for the connection handler.
#[derive(Clone)]
struct Auth(Value);

fn emit_auth(socket: &SocketRef) {
    let auth = socket
        .extensions(|e| e.get::<Auth>().cloned())
        .map_or_else(|| json!({}), |a| a.0);
    let _ = socket.emit("auth", Payload::new().arg(auth));
}

fn socket_io_server() -> Server {
    let io = Server::new(ServerConfig {
        engine: engine_config(SOCKET_IO_PATH),
        connect_timeout: Duration::from_millis(1000),
        ..ServerConfig::default()
    });
    for name in ["/", "/custom"] {
        let ns = io.of(name);
        ns.use_middleware(|socket, auth| async move {
            socket.extensions(|e| e.insert(Auth(auth.unwrap_or_else(|| json!({})))));
            Ok(())
        });
    }
    io.of("/").on_connection(|socket| {
        emit_auth(socket);
        socket.on("message", |socket, payload, _ack| {
            let _ = socket.emit("message-back", payload);
        });
        socket.on("message-with-ack", |_socket, payload, ack| {
            if let Some(ack) = ack {
                ack.send(payload);
            }
        });
    });
    io.of("/custom").on_connection(emit_auth);
    io
}

fn main() -> std::io::Result<()> {
    tether_servers::init_tracing();
    let addr = tether_servers::listen_addr();
    tether_servers::runtime()?.block_on(async move {
        let io = socket_io_server();
        let sio = io.service();
        let eio = Engine::new(engine_config(ENGINE_IO_PATH), Echo);
        let listener = tether_engine::bind(addr)?;
        println!(
            "protocol-suite-server listening on http://{addr} \
             (Socket.IO at {SOCKET_IO_PATH}, Engine.IO echo at {ENGINE_IO_PATH})"
        );
        let shutdown = tether_servers::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let (sio, eio) = (sio.clone(), eio.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(peer);
                    let (sio, eio) = (sio.clone(), eio.clone());
                    async move {
                        let path = req.uri().path();
                        let res = if path == ENGINE_IO_PATH
                            || path == ENGINE_IO_PATH.trim_end_matches('/')
                        {
                            eio.handle(req).await
                        } else {
                            // Socket.IO answers 404 outside its own path.
                            sio.handle(req).await
                        };
                        Ok::<_, Infallible>(res)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::trace!("http connection ended: {e}");
                }
            });
        }
        println!("protocol-suite-server shutting down");
        tokio::join!(io.close(), eio.shutdown(Duration::from_secs(2)));
        Ok(())
    })
}
