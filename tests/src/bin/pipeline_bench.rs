//! Benchmark: sustained end-to-end throughput, rig-sim (lock-step, as fast as the pty is read)
//! → edge → broker → twin → InfluxDB 1.x, with the same run through Mosquitto for comparison.
//!
//! Run: `cargo run --release -p dtop-e2e --bin pipeline_bench -- [SAMPLES]` after
//! `cargo build --release --workspace --bins`. Uses the services `scripts/test.sh` exports, or
//! starts private InfluxDB and Mosquitto instances. Bounded: SAMPLES samples (default 300 000)
//! per broker, each run stops by itself.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use dtop_e2e::Services;
use dtop_e2e::pipeline::{BrokerKind, Pipeline, PipelineSpec, StoreKind};
use dtop_e2e::query::influx_count;

fn run(services: &mut Services, url: &str, broker: BrokerKind, samples: u64) -> Result<f64> {
    let rig = format!(
        "bench-{}",
        if broker == BrokerKind::Dtop {
            "dtop"
        } else {
            "mosquitto"
        }
    );
    let database = format!("bench_{}", std::process::id());
    let spec = PipelineSpec {
        rig: rig.clone(),
        broker,
        store: StoreKind::InfluxV1 {
            url: url.to_owned(),
            database: database.clone(),
        },
        samples,
        speed: 0.0,
        seed: 5,
        block_samples: 1000,
        sim_args: Vec::new(),
        twin_toml: String::new(),
        edge: Default::default(),
    };
    let mut pipeline = Pipeline::start(spec, services)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        pipeline.ensure_running()?;
        let stored = influx_count(url, &database, "dtop_samples", "floor1_accel", &rig)?;
        if stored >= samples {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {stored} of {samples} samples stored after 600 s\n{}",
                pipeline.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(samples as f64 / started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let samples: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(300_000);
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    println!(
        "end-to-end: rig-sim (lock-step, 4 channels) → edge → broker → twin → InfluxDB 1.x at {url}"
    );
    println!(
        "{samples} samples per run, 1000-sample blocks; the last partial block is not waited for"
    );
    // Whole blocks only: the sim stops at `samples`, so pick a multiple of the block length.
    let samples = samples / 1000 * 1000;
    let dtop = run(&mut services, &url, BrokerKind::Dtop, samples)?;
    println!(
        "  via dtop-broker: {:>9.0} samples/s ({:.0} channel-samples/s)",
        dtop,
        dtop * 4.0
    );
    let mosq = run(&mut services, &url, BrokerKind::Mosquitto, samples)?;
    println!(
        "  via mosquitto:   {:>9.0} samples/s ({:.0} channel-samples/s)",
        mosq,
        mosq * 4.0
    );
    println!("  ratio dtop-broker / mosquitto: {:.2}", dtop / mosq);
    Ok(())
}
