//! Benchmark: how fast `dtop-twin replay` re-runs stored rig time through the estimator, against
//! a plain InfluxQL read of the same samples in the same run (the peer: what any tool pays just
//! to fetch the data). Real pipeline (rig-sim at speed 10 → edge → dtop-broker → twin →
//! InfluxDB 1.x), then the real `dtop-twin` binary on the stored range.
//!
//! Run: `cargo run --release -p dtop-e2e --bin replay_bench -- [RIG_SECONDS]` after
//! `cargo build --release --bins -p dtop-edge -p dtop-twin -p dtop-rig-sim -p dtop-broker`
//! (default 120 s of rig time, 1 kHz, 4 channels). Uses `DTOP_TEST_INFLUX_V1_URL` or starts a
//! private `influxd`. Bounded: about RIG_SECONDS / 10 + 30 s of wall time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dtop_e2e::pipeline::{BrokerKind, Pipeline, PipelineSpec, StoreKind};
use dtop_e2e::query::influx_query;
use dtop_e2e::{Services, bin, wait_for};
use serde_json::Value;

const SPEED: f64 = 10.0;
const S: i64 = 1_000_000_000;

fn first_and_last(url: &str, db: &str, rig: &str) -> Result<(i64, i64)> {
    let time = |order: &str| -> Result<i64> {
        let json = influx_query(
            url,
            db,
            &format!(
                "SELECT seq FROM dtop_twin_feed WHERE rig = '{rig}' ORDER BY time {order} LIMIT 1"
            ),
        )?;
        json.pointer("/results/0/series/0/values/0/0")
            .and_then(Value::as_i64)
            .context("no feed records")
    };
    Ok((time("ASC")?, time("DESC")?))
}

/// Runs `dtop-twin replay` and returns its wall time and report.
fn replay(
    config: &std::path::Path,
    rig: &str,
    from: i64,
    to: i64,
    verify: bool,
) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let mut command = std::process::Command::new(bin("dtop-twin")?);
    command.args(["replay", "--config"]).arg(config).args([
        "--rig",
        rig,
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
    ]);
    if verify {
        command.arg("--verify");
    }
    let out = command.output()?;
    let elapsed = started.elapsed();
    ensure!(
        out.status.success(),
        "replay failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((elapsed, serde_json::from_slice(&out.stdout)?))
}

fn main() -> Result<()> {
    let rig_seconds: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(120);
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let rig = "bench-replay";
    let database = format!("bench_replay_{}", std::process::id());
    let spec = PipelineSpec {
        rig: rig.into(),
        broker: BrokerKind::Dtop,
        store: StoreKind::InfluxV1 {
            url: url.clone(),
            database: database.clone(),
        },
        samples: rig_seconds * 1000,
        speed: SPEED,
        seed: 5,
        block_samples: 100,
        sim_args: Vec::new(),
        twin_toml: String::new(),
        edge: Default::default(),
    };
    let mut pipeline = Pipeline::start(spec, &mut services)?;
    // Under load the simulator may drop frames nobody read in time; only what was
    // stored matters here.
    pipeline.wait_stream_end(Duration::from_secs(rig_seconds + 60))?;
    std::thread::sleep(Duration::from_millis(500));
    pipeline.stop_edge()?;
    let mut last = (0, 0);
    wait_for(
        "the twin's records to settle",
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_secs(1));
            let now = first_and_last(&url, &database, rig).unwrap_or((0, 0));
            let settled = now.1 > 0 && now == last;
            last = now;
            Ok(settled.then_some(()))
        },
    )?;
    let (first_ns, last_ns) = last;
    let config = pipeline.dir.path().join("twin.toml");

    // The peer: one plain read of the same samples, as any export tool would do it.
    let started = Instant::now();
    let json = influx_query(
        &url,
        &database,
        &format!(
            "SELECT * FROM dtop_samples WHERE rig = '{rig}' AND time >= {first_ns} AND time <= {}",
            last_ns + S
        ),
    )?;
    let read = started.elapsed();
    let rows = json
        .pointer("/results/0/series/0/values")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);

    let (plain, report) = replay(&config, rig, first_ns, last_ns + S, false)?;
    let samples = report["samples"].as_u64().unwrap_or(0) as f64;
    let (verified, vreport) = replay(&config, rig, first_ns, last_ns + S, true)?;
    ensure!(
        vreport["verification"]["mismatches"] == 0,
        "the replay differs: {vreport:#}"
    );
    let mid = first_ns + (last_ns - first_ns) / 2;
    let (window, wreport) = replay(&config, rig, mid, mid + 10 * S, true)?;

    let rate = |d: Duration| samples / d.as_secs_f64();
    println!(
        "replay_bench: {samples:.0} samples ({:.0} s of rig time, 4 channels, {} estimates) stored in InfluxDB 1.x",
        samples / 1000.0,
        vreport["estimates"]
    );
    println!(
        "plain InfluxQL read of the samples (peer): {:.2} s for {rows} rows = {:.0} samples/s",
        read.as_secs_f64(),
        rows as f64 / read.as_secs_f64()
    );
    println!(
        "dtop-twin replay, whole range: {:.2} s = {:.0} samples/s = {:.0}x real time; ratio to the plain read {:.2}x",
        plain.as_secs_f64(),
        rate(plain),
        rate(plain) / 1000.0,
        plain.as_secs_f64() / read.as_secs_f64()
    );
    println!(
        "dtop-twin replay --verify, whole range: {:.2} s = {:.0} samples/s ({} estimates compared, all identical)",
        verified.as_secs_f64(),
        rate(verified),
        vreport["verification"]["estimates_compared"]
    );
    println!(
        "dtop-twin replay --verify, 10 s mid-run from {}: {:.2} s ({} blocks folded in, {} before the range)",
        wreport["start"]["from"],
        window.as_secs_f64(),
        wreport["blocks"],
        wreport["blocks"].as_u64().unwrap_or(0).saturating_sub(100)
    );
    Ok(())
}
