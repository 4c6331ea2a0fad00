//! Benchmark: software latency per Modbus TCP transaction on loopback, p50/p99, through the
//! edge's bus shell (`dtop_edge::modbus::bus::Bus`: timeout, reconnect, counters) against an
//! in-process tokio-modbus server that answers at once, next to raw tokio-modbus on the same
//! server (what the shell adds), and against the rig simulator's Modbus server.
//!
//! Run: `cargo run --release -p dtop-edge --example modbus_tcp_latency [-- TRANSACTIONS]`

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use dtop_edge::modbus::bus::{Bus, Transport};
use dtop_edge::modbus::config::{Table, TcpConfig};
use tokio::net::TcpListener;
use tokio_modbus::client::Reader;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

/// Answers every holding read with its addresses as values, at once.
#[derive(Debug, Clone, Copy)]
struct Instant0;

impl tokio_modbus::server::Service for Instant0 {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let reply = match request {
            Request::ReadHoldingRegisters(address, count) => Ok(Response::ReadHoldingRegisters(
                (address..address.saturating_add(count)).collect(),
            )),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        Box::pin(std::future::ready(reply))
    }
}

async fn serve_instant() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::new(listener);
    tokio::spawn(async move {
        let new_service =
            |_peer: SocketAddr| -> io::Result<Option<Instant0>> { Ok(Some(Instant0)) };
        let on_connected = |stream, peer: SocketAddr| {
            let accepted = accept_tcp_connection(stream, peer, &new_service);
            async move { accepted }
        };
        let _ = server.serve(&on_connected, |_e: io::Error| {}).await;
    });
    Ok(addr)
}

fn percentiles(mut ns: Vec<u64>) -> (f64, f64, f64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), at(0.999))
}

async fn through_bus(addr: SocketAddr, n: usize, table: Table, count: u16) -> Vec<u64> {
    let mut bus = Bus::new(Transport::Tcp(TcpConfig {
        addr,
        connect_timeout_ms: 1_000,
        reconnect_backoff_min_ms: 10,
        reconnect_backoff_max_ms: 100,
    }));
    let mut out = Vec::with_capacity(n);
    for k in 0..n + n / 10 {
        let t = Instant::now();
        let words = bus
            .read(1, table, 0, count, Duration::from_millis(500))
            .await;
        let dt = t.elapsed().as_nanos() as u64;
        if let Err(e) = words {
            eprintln!("request failed: {e}");
        }
        if k >= n / 10 {
            out.push(dt);
        }
    }
    out
}

async fn through_tokio_modbus(addr: SocketAddr, n: usize) -> io::Result<Vec<u64>> {
    let mut ctx = tokio_modbus::client::tcp::connect(addr).await?;
    let mut out = Vec::with_capacity(n);
    for k in 0..n + n / 10 {
        let t = Instant::now();
        let _ = ctx.read_holding_registers(0, 10).await;
        let dt = t.elapsed().as_nanos() as u64;
        if k >= n / 10 {
            out.push(dt);
        }
    }
    Ok(out)
}

fn report(what: &str, ns: Vec<u64>) {
    let n = ns.len();
    let (p50, p99, p999) = percentiles(ns);
    println!("{what:<56} n={n:>6}  p50 {p50:>7.1} µs  p99 {p99:>7.1} µs  p99.9 {p999:>7.1} µs");
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!("Modbus TCP on loopback, read 10 holding registers, {n} transactions after a 10 % warm-up");
        let addr = serve_instant().await?;
        report(
            "edge Bus -> in-process tokio-modbus server",
            through_bus(addr, n, Table::Holding, 10).await,
        );
        report(
            "raw tokio-modbus client -> same server",
            through_tokio_modbus(addr, n).await?,
        );
        let shutdown = tokio_util::sync::CancellationToken::new();
        let sim = dtop_rig_sim::start(
            dtop_rig_sim::SimConfig {
                modbus_listen: Some(([127, 0, 0, 1], 0).into()),
                ..dtop_rig_sim::SimConfig::default()
            },
            shutdown.clone(),
        )
        .await?;
        if let Some(sim_addr) = sim.modbus_addr() {
            report(
                "edge Bus -> dtop-rig-sim Modbus server (12 input regs)",
                through_bus(sim_addr, n, Table::Input, 12).await,
            );
        }
        shutdown.cancel();
        let _ = sim.join().await;
        anyhow::Ok(())
    })
}
