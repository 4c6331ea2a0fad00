//! Benchmark: the edge cut off from the broker for 10 minutes of rig time, then how fast its
//! spool replays and how long the backlog takes to drain while live data keeps flowing, end to
//! end (rig-sim at speed 20 → edge → dtop-broker → twin → InfluxDB 1.x).
//!
//! Run: `cargo run --release -p dtop-e2e --bin backlog_drain_bench -- [REPLAY_BLOCKS_PER_S]`
//! after `cargo build --release --bins -p dtop-edge -p dtop-twin -p dtop-rig-sim -p
//! dtop-broker` (default 400 blocks/s of 200 samples). Uses `DTOP_TEST_INFLUX_V1_URL` or starts
//! a private `influxd`. Bounded: about 70 s of wall time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dtop_e2e::pipeline::{BrokerKind, EdgeOptions, Pipeline, PipelineSpec, StoreKind};
use dtop_e2e::proxy::CuttableProxy;
use dtop_e2e::{Services, audit, free_port};

const SPEED: f64 = 20.0;
const BLOCK_SAMPLES: u32 = 200;
const CUT: Duration = Duration::from_secs(30);

fn metric(port: u16, name: &str) -> Result<f64> {
    audit::edge_metrics(port)?
        .get(name)
        .copied()
        .with_context(|| format!("no {name} on the edge's metrics"))
}

fn main() -> Result<()> {
    let replay_rate: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(400);
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let (broker_port, metrics_port) = (free_port()?, free_port()?);
    let proxy = CuttableProxy::start(SocketAddr::from(([127, 0, 0, 1], broker_port)))?;
    let spec = PipelineSpec {
        rig: "bench-drain".into(),
        broker: BrokerKind::Dtop,
        store: StoreKind::InfluxV1 {
            url,
            database: format!("bench_drain_{}", std::process::id()),
        },
        // 5 s before the cut, the cut, and 30 s after it.
        samples: (65.0 * 1000.0 * SPEED) as u64,
        speed: SPEED,
        seed: 7,
        block_samples: BLOCK_SAMPLES,
        sim_args: Vec::new(),
        twin_toml: String::new(),
        edge: EdgeOptions {
            toml: format!(
                "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[spool]\nreplay_blocks_per_s = {replay_rate}\nstall_s = 2.0\n"
            ),
            broker_port: Some(broker_port),
            mqtt_port: Some(proxy.port),
            ..EdgeOptions::default()
        },
    };
    let mut pipeline = Pipeline::start(spec, &mut services)?;
    std::thread::sleep(Duration::from_secs(5));
    pipeline.ensure_running()?;
    proxy.cut();
    std::thread::sleep(CUT);
    pipeline.ensure_running()?;
    let backlog_s = metric(metrics_port, "dtop_edge_backlog_seconds")?;
    let replayed0 = metric(metrics_port, "dtop_edge_blocks_replayed_total")?;
    proxy.restore();
    let restored = Instant::now();
    let deadline = restored + Duration::from_secs(120);
    let drained = loop {
        pipeline.ensure_running()?;
        if metric(metrics_port, "dtop_edge_backlog_seconds")? < 1.0 {
            break restored.elapsed();
        }
        if Instant::now() > deadline {
            bail!(
                "the backlog did not drain within 120 s\n{}",
                pipeline.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let replayed = metric(metrics_port, "dtop_edge_blocks_replayed_total")? - replayed0;
    println!(
        "backlog_drain_bench: cut {:.0} s wall at speed {SPEED} = {backlog_s:.0} s of rig data spooled ({:.0} blocks of {BLOCK_SAMPLES} samples x 4 channels)",
        CUT.as_secs_f64(),
        backlog_s * 1000.0 / f64::from(BLOCK_SAMPLES)
    );
    println!(
        "replay limit {replay_rate} blocks/s: drained in {:.1} s wall while live data flowed at {SPEED}x ({:.0} blocks replayed, {:.0} blocks/s = {:.0} samples/s; backlog drained at {:.0}x real time)",
        drained.as_secs_f64(),
        replayed,
        replayed / drained.as_secs_f64(),
        replayed * f64::from(BLOCK_SAMPLES) / drained.as_secs_f64(),
        backlog_s / drained.as_secs_f64()
    );
    Ok(())
}
