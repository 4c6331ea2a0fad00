//! Deterministic replay end to end: the real pipeline (dtop-rig-sim → dtop-edge → dtop-broker
//! → dtop-twin → InfluxDB 1.x) runs with twin-hosted DVF and a twin SIGKILLed and restarted
//! mid-run; then `dtop-twin replay --verify` replays stored ranges (the whole run across both
//! estimator runs, a range starting at a checkpoint, a range across the restart) and every
//! estimate and drive must equal the stored one bit for bit. Replaying twice gives the same
//! bytes, and one stored sample changed by one count makes the verification fail.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dtop_e2e::WithLogs;
use dtop_e2e::control::set_control;
use dtop_e2e::http::blocking_client;
use dtop_e2e::pipeline::{BrokerKind, Pipeline, PipelineSpec, StoreKind};
use dtop_e2e::query::influx_query;
use dtop_e2e::{Services, bin, wait_for};
use dtop_proto::v1::ChannelKind;
use dtop_proto::v1::set_control::{Law, Placement};
use serde_json::Value;

/// 30 s of rig time at 10× speed.
const SAMPLES: u64 = 30_000;
const S: i64 = 1_000_000_000;

/// Runs `dtop-twin replay` on the pipeline's twin config; returns its exit code and report.
fn replay(pipeline: &Pipeline, from_ns: i64, to_ns: i64, out: &Path) -> Result<(i32, Value)> {
    let (code, report, _) = replay_raw(pipeline, from_ns, to_ns, out)?;
    let report =
        serde_json::from_str(&report).with_context(|| format!("replay exited {code}: {report}"))?;
    Ok((code, report))
}

/// Runs `dtop-twin replay`; returns its exit code, stdout and stderr.
fn replay_raw(
    pipeline: &Pipeline,
    from_ns: i64,
    to_ns: i64,
    out: &Path,
) -> Result<(i32, String, String)> {
    let config = pipeline.dir.path().join("twin.toml");
    let output = std::process::Command::new(bin("dtop-twin")?)
        .args(["replay", "--config"])
        .arg(&config)
        .args(["--rig", &pipeline.spec.rig, "--verify", "--out"])
        .arg(out)
        .args(["--from", &from_ns.to_string(), "--to", &to_ns.to_string()])
        .output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Checks a report says everything in range was compared and identical.
fn ensure_identical(report: &Value, code: i32) -> Result<()> {
    let v = &report["verification"];
    let compared = v["estimates_compared"].as_u64().unwrap_or(0);
    ensure!(
        code == 0
            && compared > 0
            && v["estimates_identical"].as_u64() == Some(compared)
            && v["mismatches"].as_u64() == Some(0)
            && v["drives_compared"].as_u64().unwrap_or(0) > 0,
        "exit {code}: {report:#}"
    );
    Ok(())
}

/// The times of a measurement's points for the rig, oldest first.
fn times(url: &str, db: &str, q: &str) -> Result<Vec<i64>> {
    let json = influx_query(url, db, q)?;
    Ok(json
        .pointer("/results/0/series/0/values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|row| row[0].as_i64())
        .collect())
}

#[test]
fn stored_ranges_replay_bit_for_bit_across_a_twin_restart() -> Result<()> {
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let rig = "replay";
    let database = format!("e2e_replay_{}", std::process::id());
    let spec = PipelineSpec {
        rig: rig.to_owned(),
        broker: BrokerKind::Dtop,
        store: StoreKind::InfluxV1 {
            url: url.clone(),
            database: database.clone(),
        },
        samples: SAMPLES,
        speed: 10.0,
        seed: 11,
        block_samples: 10,
        sim_args: Vec::new(),
        twin_toml: "[control]\nenabled = true\n\n[model]\ncheckpoint_interval_s = 2.0\n".into(),
        edge: Default::default(),
    };
    let mut pipeline = Pipeline::start(spec, &mut services)?;
    let result = (|| {
        // Twin-hosted DVF, so the replay has drives to make; the twin accepts it once its
        // estimator runs.
        set_control(
            pipeline.mqtt_port,
            rig,
            Law::Dvf,
            4.0,
            Placement::Twin,
            Duration::from_secs(30),
        )?;
        // Blocks the twin folded in (10 samples each), as stored with their records.
        let count_feeds = || -> Result<u64> {
            let json = influx_query(
                &url,
                &database,
                &format!("SELECT count(seq) FROM dtop_twin_feed WHERE rig = '{rig}'"),
            )?;
            Ok(json
                .pointer("/results/0/series/0/values/0/1")
                .and_then(Value::as_u64)
                .unwrap_or(0))
        };
        // Kill the twin after more than 10 s of estimated rig time, whatever the load.
        wait_for("10 s of estimated blocks", Duration::from_secs(60), || {
            std::thread::sleep(Duration::from_millis(200));
            Ok((count_feeds()? > 1_000).then_some(()))
        })?;
        pipeline.kill_twin()?;
        pipeline.start_twin()?;
        // Under load the simulator may drop frames nobody read in time; only what was
        // stored matters here.
        pipeline.wait_stream_end(Duration::from_secs(120))?;
        pipeline.stop_edge()?;
        let birth = pipeline.read_birth()?;
        // Every block a twin folded in is stored with its records in one write; blocks sent
        // while no twin ran are in the edge's spool, not fed, and not needed here.
        let mut last_count = 0;
        wait_for(
            "the twin's records to settle in InfluxDB",
            Duration::from_secs(60),
            || {
                std::thread::sleep(Duration::from_secs(1));
                let count = count_feeds()?;
                let settled = count > 0 && count == last_count;
                last_count = count;
                Ok(settled.then_some(()))
            },
        )?;

        let runs = times(
            &url,
            &database,
            &format!("SELECT session FROM dtop_twin_birth WHERE rig = '{rig}' ORDER BY time ASC"),
        )?;
        ensure!(
            runs.len() == 2,
            "two estimator runs expected (before and after the restart): {runs:?}"
        );
        let (run1_ns, run2_ns) = (runs[0], runs[1]);
        ensure!(
            run2_ns - run1_ns > 8 * S,
            "the restart came {} s after the first run started; the ranges below need 8 s",
            (run2_ns - run1_ns) / S
        );
        let feeds = times(
            &url,
            &database,
            &format!("SELECT seq FROM dtop_twin_feed WHERE rig = '{rig}' ORDER BY time ASC"),
        )?;
        let last_ns = *feeds.last().context("no feed records")?;
        let dir = pipeline.dir.path();

        // The whole stored run, both estimator runs.
        let (code, report) = replay(&pipeline, run1_ns, last_ns + S, &dir.join("all.jsonl"))?;
        ensure_identical(&report, code)?;
        ensure!(
            report["runs"].as_array().map(Vec::len) == Some(2),
            "{report:#}"
        );
        ensure!(report["start"]["from"] == "run_start", "{report:#}");
        ensure!(
            report["drives"].as_u64().unwrap_or(0) > 0,
            "DVF made no drive: {report:#}"
        );
        println!("whole run replayed: {report}");

        // A range inside the first run starts at its last checkpoint before it.
        let (from_ns, to_ns) = (run1_ns + 5 * S, run1_ns + 7 * S);
        let (code, report) = replay(&pipeline, from_ns, to_ns, &dir.join("mid-1.jsonl"))?;
        ensure_identical(&report, code)?;
        ensure!(report["start"]["from"] == "checkpoint", "{report:#}");
        println!("2 s from a checkpoint: {report}");
        let checkpoint_ns = report["start"]["time_ns"].as_i64().unwrap_or(0);
        ensure!(
            (from_ns - 2 * S - S / 10..=from_ns).contains(&checkpoint_ns),
            "the checkpoint (every 2 s) should be within 2 s before the range: {report:#}"
        );
        // Replaying again gives the same bytes.
        let (code, _) = replay(&pipeline, from_ns, to_ns, &dir.join("mid-2.jsonl"))?;
        ensure!(code == 0);
        let (a, b) = (
            std::fs::read(dir.join("mid-1.jsonl"))?,
            std::fs::read(dir.join("mid-2.jsonl"))?,
        );
        ensure!(!a.is_empty() && a == b, "two replays of one range differ");

        // Across the restart: the old run's tail, then the new run from its birth.
        let (code, report) = replay(
            &pipeline,
            run2_ns - 2 * S,
            run2_ns + 2 * S,
            &dir.join("x.jsonl"),
        )?;
        ensure_identical(&report, code)?;
        ensure!(
            report["runs"].as_array().map(Vec::len) == Some(2),
            "{report:#}"
        );

        // One stored floor-3 sample one count off: the replay no longer matches.
        let channel = birth
            .channels
            .iter()
            .find(|c| c.kind == ChannelKind::Acceleration as i32 && c.floor == 3)
            .context("no floor-3 accelerometer")?;
        let row = influx_query(
            &url,
            &database,
            &format!(
                "SELECT \"{}\" FROM dtop_samples WHERE rig = '{rig}' AND time >= {} LIMIT 1",
                channel.name,
                from_ns + S
            ),
        )?;
        let point = row
            .pointer("/results/0/series/0/values/0")
            .and_then(Value::as_array)
            .context("no sample to alter")?;
        let (ts, value) = (
            point[0].as_i64().context("time")?,
            point[1].as_f64().context("value")?,
        );
        let write = |value: f64| -> Result<()> {
            let line = format!(
                "dtop_samples,rig={rig},stream=0 {}={value:?} {ts}\n",
                channel.name
            );
            let write_url = format!("{url}/write?db={database}&precision=n");
            let response = blocking_client()?.post(&write_url).body(line).send()?;
            ensure!(
                response.status().is_success(),
                "altering a sample: {}",
                response.text()
            );
            Ok(())
        };
        // A value no raw count scales to: the replay refuses and names the sample.
        write(value + 0.25 * channel.scale)?;
        let (code, _, stderr) = replay_raw(&pipeline, from_ns, to_ns, &dir.join("off-grid.jsonl"))?;
        ensure!(
            code == 2 && stderr.contains("no raw count scales to the stored"),
            "exit {code}: {stderr}"
        );
        // One count more: a valid sample, but not the one the live twin saw.
        let raw = ((value - channel.offset) / channel.scale).round();
        write((raw + 1.0) * channel.scale + channel.offset)?;
        let (code, report) = replay(&pipeline, from_ns, to_ns, &dir.join("altered.jsonl"))?;
        ensure!(
            code == 1 && report["verification"]["mismatches"].as_u64().unwrap_or(0) > 0,
            "a one-count change must be caught: exit {code}, {report:#}"
        );
        Ok(())
    })();
    result.or_logs(|| pipeline.logs())
}
