//! Owns the Modbus TCP server shell: accepts connections and forwards register requests to
//! the firmware task, which owns the registers. The map itself lives in `registers.rs`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};
use tokio_util::sync::CancellationToken;

use crate::error::SimError;
use crate::registers::{RegisterReply, RegisterRequest};
use crate::sim::Event;

/// How long a request may wait for the firmware task before the device answers
/// ServerDeviceBusy. The task answers in microseconds unless the process is starved.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the listener (port 0 picks a free port) and reports the address it got.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SimError> {
    let err = |source| SimError::Modbus { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Serves until cancelled. Dropping `serve` also ends every connection task.
pub async fn serve(
    listener: TcpListener,
    local_addr: SocketAddr,
    events_tx: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> Result<(), SimError> {
    let server = Server::new(listener);
    let new_service = move |_peer: SocketAddr| -> io::Result<Option<RigService>> {
        Ok(Some(RigService {
            events_tx: events_tx.clone(),
        }))
    };
    let on_connected = |stream, peer: SocketAddr| {
        let accepted = accept_tcp_connection(stream, peer, &new_service);
        async move {
            tracing::debug!(%peer, "Modbus client connected.");
            accepted
        }
    };
    let on_process_error = |e: io::Error| {
        tracing::debug!(error = %e, "Modbus connection ended with an error.");
    };
    tokio::select! {
        () = cancel.cancelled() => Ok(()),
        served = server.serve(&on_connected, on_process_error) => {
            served.map_err(|source| SimError::Modbus { addr: local_addr, source })
        }
    }
}

/// One connection's view of the device.
#[derive(Debug, Clone)]
struct RigService {
    events_tx: mpsc::Sender<Event>,
}

type ReplyFuture = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for RigService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = ReplyFuture;

    fn call(&self, request: Self::Request) -> Self::Future {
        let events_tx = self.events_tx.clone();
        Box::pin(async move {
            let request = to_register_request(request)?;
            let (reply_tx, reply_rx) = oneshot::channel();
            let ask = async {
                events_tx
                    .send(Event::Register { request, reply_tx })
                    .await
                    .ok()?;
                reply_rx.await.ok()
            };
            match tokio::time::timeout(REPLY_TIMEOUT, ask).await {
                Ok(Some(reply)) => reply.map(to_response),
                Ok(None) => Err(ExceptionCode::ServerDeviceFailure),
                Err(_) => Err(ExceptionCode::ServerDeviceBusy),
            }
        })
    }
}

/// The register functions this device implements; anything else is IllegalFunction.
fn to_register_request(request: Request<'_>) -> Result<RegisterRequest, ExceptionCode> {
    match request {
        Request::ReadInputRegisters(address, quantity) => {
            Ok(RegisterRequest::ReadInput { address, quantity })
        }
        Request::ReadHoldingRegisters(address, quantity) => {
            Ok(RegisterRequest::ReadHolding { address, quantity })
        }
        Request::WriteSingleRegister(address, value) => Ok(RegisterRequest::WriteHolding {
            address,
            words: vec![value],
            single: true,
        }),
        Request::WriteMultipleRegisters(address, words) => Ok(RegisterRequest::WriteHolding {
            address,
            words: words.into_owned(),
            single: false,
        }),
        _ => Err(ExceptionCode::IllegalFunction),
    }
}

fn to_response(reply: RegisterReply) -> Response {
    match reply {
        RegisterReply::InputWords(words) => Response::ReadInputRegisters(words),
        RegisterReply::HoldingWords(words) => Response::ReadHoldingRegisters(words),
        RegisterReply::WroteSingle { address, value } => {
            Response::WriteSingleRegister(address, value)
        }
        RegisterReply::WroteMultiple { address, quantity } => {
            Response::WriteMultipleRegisters(address, quantity)
        }
    }
}
