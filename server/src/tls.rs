//! Owns serving HTTPS: the acceptor for `[http.tls]`'s PEM files (built by `dtop_daemon::tls`),
//! and a listener for `axum::serve` whose handshakes run in their own tasks (with a timeout),
//! so one slow client never holds up the others. Knows nothing about routes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::TlsConfig;

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// The acceptor for `config`'s certificate chain and key (HTTP/1.1 by ALPN).
///
/// # Errors
/// When a file cannot be read or rustls refuses its contents.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, dtop_daemon::tls::TlsError> {
    dtop_daemon::tls::acceptor(
        dtop_daemon::tls::ServerPem {
            cert_file: &config.cert_file,
            key_file: &config.key_file,
            client_ca_file: None,
        },
        &[b"http/1.1"],
    )
}

/// The peer of a TLS connection, as `ConnectInfo` (see [`crate::extract::ClientAddr`]).
#[derive(Debug, Clone, Copy)]
pub struct TlsPeer(pub SocketAddr);

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Connections whose handshake has finished.
#[derive(Debug)]
pub struct TlsListener {
    ready_rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and hands each connection to `acceptor` in its own task until
    /// `shutdown`.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (ready_tx, ready_rx) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(ok) => ok,
                    Err(e) => {
                        debug!(error = %e, "Accept failed.");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let ready_tx = ready_tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready_tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(client = %peer, error = %e, "TLS handshake failed."),
                        Err(_) => debug!(client = %peer, "TLS handshake timed out."),
                    }
                });
            }
        });
        Ok(Self { ready_rx, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready_rx.recv().await {
            Some(ready) => ready,
            // The accept loop stopped (shutdown): serving ends through its graceful shutdown,
            // so this only has to never return.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
