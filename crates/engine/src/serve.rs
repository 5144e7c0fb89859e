use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::{Engine, EngineConfig, Handler};

/// Binds a TCP listener with an accept backlog of 1024 (the OS default of 128 overflows
/// on connection bursts) and `SO_REUSEADDR`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves the engine on `listener` until the process ends.
pub async fn serve<H: Handler>(listener: TcpListener, engine: Engine<H>) -> std::io::Result<()> {
    serve_with_shutdown(listener, engine, std::future::pending()).await
}

/// Serves the engine until `shutdown` completes, then stops accepting connections.
pub async fn serve_with_shutdown<H: Handler>(
    listener: TcpListener,
    engine: Engine<H>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    accept_loop(
        listener,
        engine,
        shutdown,
        |stream| async move { Some(stream) },
    )
    .await
}

/// The accept loop of [`serve_with_shutdown`] and of the TLS listener: `prepare` turns
/// each accepted stream into the connection to serve (a TLS handshake), on the
/// connection's own task; `None` drops it.
pub(crate) async fn accept_loop<H, F, Fut, Io>(
    listener: TcpListener,
    engine: Engine<H>,
    shutdown: impl Future<Output = ()>,
    prepare: F,
) -> std::io::Result<()>
where
    H: Handler,
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Option<Io>> + Send + 'static,
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::pin!(shutdown);
    let http = http1_builder(engine.config());
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let engine = engine.clone();
        let http = http.clone();
        let io = prepare(stream);
        tokio::spawn(async move {
            let Some(io) = io.await else { return };
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(addr);
                let engine = engine.clone();
                async move { Ok::<_, Infallible>(engine.handle(req).await) }
            });
            let conn = http.serve_connection(TokioIo::new(io), svc).with_upgrades();
            if let Err(e) = conn.await {
                tracing::trace!("http connection ended: {e}");
            }
        });
    }
}

/// The HTTP/1 options that the engine's configuration asks for: how long headers may
/// take (also the keep-alive idle time) and how large they may be.
pub(crate) fn http1_builder(config: &EngineConfig) -> hyper::server::conn::http1::Builder {
    // hyper's smallest read buffer; it panics below it.
    const MIN_BUF: usize = 8192;
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(config.max_header_bytes.max(MIN_BUF));
    b
}
