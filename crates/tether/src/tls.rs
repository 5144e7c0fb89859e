//! The standalone server over TLS (`https://`, `wss://`), on rustls. Behind a proxy that
//! ends TLS, or mounted in axum with its own TLS, none of this is needed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tether_engine::rustls::ServerConfig;

use crate::Server;

impl Server {
    /// Serves over TLS on `addr` (accept backlog 1024) until the process ends.
    ///
    /// `tls` holds the certificate chain and key (and client authentication, if any);
    /// only HTTP/1.1 is served. A handshake that fails or takes longer than
    /// [`TLS_HANDSHAKE_TIMEOUT`](tether_engine::TLS_HANDSHAKE_TIMEOUT) drops that
    /// connection only.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use tether::rustls::pki_types::pem::PemObject;
    /// use tether::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    ///
    /// # async fn f(io: tether::Server) -> Result<(), Box<dyn std::error::Error>> {
    /// let chain = CertificateDer::pem_file_iter("fullchain.pem")?.collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_file("privkey.pem")?;
    /// let tls = tether::rustls::ServerConfig::builder()
    ///     .with_no_client_auth()
    ///     .with_single_cert(chain, key)?;
    /// io.listen_tls("0.0.0.0:443".parse()?, Arc::new(tls)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn listen_tls(
        &self,
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
    ) -> Result<(), crate::Error> {
        let listener = tether_engine::bind(addr)?;
        tether_engine::serve_tls(listener, tls, self.service()).await?;
        Ok(())
    }

    /// [`serve_with_shutdown`](Self::serve_with_shutdown) over TLS: serves on a bound
    /// listener until `shutdown` completes, then closes every connection as
    /// [`DisconnectReason::ServerShutdown`](crate::DisconnectReason) and returns.
    pub async fn serve_tls_with_shutdown(
        &self,
        listener: tokio::net::TcpListener,
        tls: Arc<ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), crate::Error> {
        tether_engine::serve_tls_with_shutdown(listener, tls, self.service(), shutdown).await?;
        self.close().await;
        Ok(())
    }
}
