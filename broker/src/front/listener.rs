//! Owns the accept loops: plain TCP, TLS (rustls, optional client certificates whose CN or
//! DNS SAN names the user) and WebSocket (subprotocol `mqtt`). Each accepted stream is handed
//! to `connection::serve`; nothing here reads MQTT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tracing::{debug, warn};

use crate::config::TlsConfig;
use crate::front::Front;
use crate::front::connection::serve;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a finished WebSocket connection may take to flush and close.
const WS_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes buffered between a WebSocket and the MQTT connection reading it.
const WS_PIPE_BYTES: usize = 256 * 1024;

/// Builds the TLS acceptor from `config`'s PEM files (no ALPN: MQTT over TLS has no
/// protocol negotiation).
///
/// # Errors
/// When a file cannot be read or rustls refuses its contents.
pub fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, dtop_daemon::tls::TlsError> {
    dtop_daemon::tls::acceptor(
        dtop_daemon::tls::ServerPem {
            cert_file: &config.cert_file,
            key_file: &config.key_file,
            client_ca_file: config.client_ca_file.as_deref(),
        },
        &[],
    )
}

/// The user a client certificate names: its subject CN, else its first DNS SAN.
pub fn certificate_user(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Some(cn) = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_owned());
    }
    let san = parsed.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    })
}

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // MQTT packets are small and latency matters more than segment count.
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                warn!(error = %e, "Accept failed; retrying shortly.");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Accepts plain MQTT clients forever.
pub async fn serve_tcp(listener: TcpListener, front: Arc<Front>) {
    loop {
        let (stream, peer) = accept(&listener).await;
        tokio::spawn(serve(Arc::clone(&front), stream, peer, None));
    }
}

/// Accepts MQTT-over-TLS clients forever.
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, front: Arc<Front>) {
    let handshake_timeout = Duration::from_millis(u64::from(front.limits.connection_timeout_ms));
    loop {
        let (stream, peer) = accept(&listener).await;
        let acceptor = acceptor.clone();
        let front = Arc::clone(&front);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    front
                        .metrics
                        .refused(crate::metrics::Refusal::BadCredentials);
                    warn!(%peer, error = %e, "Refused a TLS handshake.");
                    return;
                }
                Err(_) => {
                    front
                        .metrics
                        .refused(crate::metrics::Refusal::ConnectTimeout);
                    debug!(%peer, "TLS handshake timed out.");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(certificate_user);
            serve(front, tls, peer, cert_user).await;
        });
    }
}

/// Accepts MQTT-over-WebSocket clients forever.
pub async fn serve_ws(listener: TcpListener, front: Arc<Front>) {
    let handshake_timeout = Duration::from_millis(u64::from(front.limits.connection_timeout_ms));
    loop {
        let (stream, peer) = accept(&listener).await;
        let front = Arc::clone(&front);
        tokio::spawn(async move {
            // MQTT over WebSocket names its subprotocol `mqtt` (MQTT 5 §6); echo it back.
            // tungstenite fixes the callback's error type (a whole HTTP response).
            #[allow(clippy::result_large_err)]
            let choose = |request: &Request, mut response: Response| {
                let offers_mqtt = request
                    .headers()
                    .get_all("Sec-WebSocket-Protocol")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .any(|p| p.trim() == "mqtt");
                if offers_mqtt {
                    response.headers_mut().insert(
                        "Sec-WebSocket-Protocol",
                        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
                    );
                }
                Ok(response)
            };
            let ws = match tokio::time::timeout(
                handshake_timeout,
                tokio_tungstenite::accept_hdr_async(stream, choose),
            )
            .await
            {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "WebSocket handshake failed.");
                    return;
                }
                Err(_) => {
                    front
                        .metrics
                        .refused(crate::metrics::Refusal::ConnectTimeout);
                    return;
                }
            };
            let (mqtt_side, mut pipe) = tokio::io::duplex(WS_PIPE_BYTES);
            let (mut ws_tx, mut ws_rx) = ws.split();
            // The pump owns the WebSocket; the MQTT connection sees a byte stream.
            let pump = tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    tokio::select! {
                        frame = ws_rx.next() => match frame {
                            Some(Ok(WsMessage::Binary(bytes))) => {
                                if pipe.write_all(&bytes).await.is_err() {
                                    break;
                                }
                            }
                            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                            Some(Ok(WsMessage::Text(_))) | Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                        },
                        read = pipe.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if ws_tx.send(WsMessage::binary(buf[..n].to_vec())).await.is_err() {
                                    break;
                                }
                            }
                        },
                    }
                }
                let _ = ws_tx.close().await;
            });
            serve(front, mqtt_side, peer, None).await;
            // Dropping our end lets the pump flush the last bytes and close the socket.
            if tokio::time::timeout(WS_CLOSE_TIMEOUT, pump).await.is_err() {
                debug!(%peer, "WebSocket did not close in time.");
            }
        });
    }
}
