//! Mounting Tether in hyper or axum as a tower [`Layer`](tower_layer::Layer): requests on
//! the engine's path go to Socket.IO, every other request to the inner service.
//!
//! ```no_run
//! # async fn f() {
//! use tower_layer::Layer as _;
//! let io = tether::Server::default();
//! let inner = tower_service_fn();
//! let svc = tether::layer::SocketIoLayer::new(io.clone()).layer(inner);
//! # let _ = svc;
//! # }
//! # fn tower_service_fn() -> impl Clone { () }
//! ```
//!
//! # In axum
//!
//! Mount [`Server::service`] on the engine's path beside your routes; tower layers in
//! front (CORS from `tower-http`, auth) apply to it as to any route. What they insert in
//! the request's extensions reaches the sockets ([`Socket::req_extensions`](crate::Socket::req_extensions) and the
//! [`Extension`](crate::extract::Extension) extractor). With the `axum` feature, axum's
//! `ConnectInfo<SocketAddr>` is the sockets' remote address
//! (`socket.handshake().remote_addr`). Close Tether's sessions in the graceful-shutdown
//! future, so that long-polls end and axum's drain is quick.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use tether::{SocketRef, extract::Extension};
//! use tower_http::cors::CorsLayer;
//!
//! #[derive(Clone)]
//! struct Claims { user: String }
//!
//! # async fn f() -> std::io::Result<()> {
//! let io = tether::Server::default();
//! io.of("/").on_connection(|socket: SocketRef, Extension(c): Extension<Claims>| {
//!     socket.join(c.user);
//! });
//! let app = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .route_service("/socket.io/", io.service())
//!     // .layer(your auth layer inserting Claims into the request's extensions)
//!     .layer(CorsLayer::permissive());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let shutdown_io = io.clone();
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .with_graceful_shutdown(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         shutdown_io.close().await;
//!     })
//!     .await
//! # }
//! ```
//!
//! `crates/tether/tests/axum.rs` runs all of this end to end, and `examples/chat` is a
//! whole app on axum and `tower-http`'s `ServeDir`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use tether_engine::Engine;

use crate::{Server, SioHandler};

/// Routes the Socket.IO path to a [`Server`], everything else to the inner service.
#[derive(Clone, Debug)]
pub struct SocketIoLayer {
    server: Server,
}

impl SocketIoLayer {
    /// The layer for `server`.
    pub fn new(server: Server) -> Self {
        SocketIoLayer { server }
    }
}

impl<S> tower_layer::Layer<S> for SocketIoLayer {
    type Service = SocketIoService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SocketIoService {
            engine: self.server.service(),
            path: self.server.config().engine.path.clone(),
            inner,
        }
    }
}

/// The service made by [`SocketIoLayer`].
#[derive(Clone, Debug)]
pub struct SocketIoService<S> {
    engine: Engine<SioHandler>,
    path: String,
    inner: S,
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for SocketIoService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<Either<Full<Bytes>, ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let p = req.uri().path();
        if p == self.path || p == self.path.trim_end_matches('/') {
            let engine = self.engine.clone();
            Box::pin(async move {
                let res = engine.handle(req).await;
                Ok(res.map(Either::Left))
            })
        } else {
            let fut = self.inner.call(req);
            Box::pin(async move { Ok(fut.await?.map(Either::Right)) })
        }
    }
}

#[allow(dead_code)]
fn _infallible(_: Infallible) {}
