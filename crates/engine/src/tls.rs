//! The TLS listener: the accept loop of [`serve_with_shutdown`](crate::serve_with_shutdown)
//! with a rustls handshake on each connection, for servers without a proxy in front.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::{Engine, Handler};

/// How long a client has to finish the TLS handshake before its connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the engine over TLS (`https://`, `wss://`) on `listener` until the process ends.
///
/// `tls` is the user's rustls configuration (certificates, client authentication). Only
/// HTTP/1.1 is served: leave its ALPN protocols empty or include `http/1.1`.
pub async fn serve_tls<H: Handler>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    engine: Engine<H>,
) -> std::io::Result<()> {
    serve_tls_with_shutdown(listener, tls, engine, std::future::pending()).await
}

/// [`serve_tls`] until `shutdown` completes, then stops accepting connections. A failed
/// or slow handshake (over [`TLS_HANDSHAKE_TIMEOUT`]) drops that connection only.
pub async fn serve_tls_with_shutdown<H: Handler>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    engine: Engine<H>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    crate::serve::accept_loop(listener, engine, shutdown, move |stream| {
        let accept = acceptor.accept(stream);
        async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake failed: {e}");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    None
                }
            }
        }
    })
    .await
}
