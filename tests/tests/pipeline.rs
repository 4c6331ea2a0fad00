//! End-to-end: the simulated rig's samples pass through the real serial path, the edge, an MQTT
//! broker and the twin into real storage, and every sample of every channel arrives exactly
//! once, with the right value and timestamp. The same checks run on each broker:
//!
//! 1. rig-sim → pty → edge → dtop-broker → twin → InfluxDB 1.x (v1 API)
//! 2. the same into VictoriaMetrics through the InfluxDB v2 write API
//! 3. both through a real Mosquitto instead of dtop-broker
//! 4. both through a three-node NATS cluster (JetStream, MQTT gateway; issue 16), one cluster
//!    for the two runs, the edge and the twin each given the three nodes as their
//!    `[mqtt] brokers` list, starting on different nodes so every block crosses the cluster's
//!    routes. Nothing changes for NATS: it speaks MQTT 3.1.1 only, QoS 0 and 1, without
//!    shared subscriptions, and the edge (QoS 1 blocks, retained birth) and the twin (plain
//!    QoS 1 subscriptions) need no more. Killing a node is `nats_failover`'s.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dtop_e2e::pipeline::{BrokerKind, Pipeline, PipelineSpec, StoreKind, expected_values, now_ns};
use dtop_e2e::query::{self, Series};
use dtop_e2e::{Services, wait_for};

/// 1 kHz: a 1 ms period, which VictoriaMetrics' millisecond timestamps hold exactly.
const PERIOD_NS: i64 = 1_000_000;

/// Samples per run: 30 s of rig time. Not a multiple of the block length, so the last block is
/// partial and only reaches storage because the edge flushes it on SIGTERM.
const SAMPLES: u64 = 30_050;

fn spec(rig: &str, broker: BrokerKind, store: StoreKind, seed: u64) -> PipelineSpec {
    PipelineSpec {
        rig: rig.to_owned(),
        broker,
        store,
        samples: SAMPLES,
        speed: 10.0,
        seed,
        block_samples: 100,
        sim_args: Vec::new(),
        twin_toml: String::new(),
        edge: Default::default(),
    }
}

/// Runs the pipeline until the simulator has sent every sample, then stops the edge cleanly.
fn run_to_completion(pipeline: &mut Pipeline) -> Result<dtop_e2e::truth::Truth> {
    let truth = pipeline.wait_truth(Duration::from_secs(120))?;
    truth.ensure_contiguous_from_zero()?;
    // Wait until the edge has batched everything whole blocks can hold, then stop it: the
    // remainder goes out as a short block during its graceful shutdown.
    std::thread::sleep(Duration::from_millis(500));
    pipeline.stop_edge()?;
    Ok(truth)
}

/// Checks one stored channel against the truth: exactly one point per sample, in order, each
/// at the timestamp its sample index implies and holding the scaled truth value.
fn check_channel(
    name: &str,
    stored: &Series,
    expected: &[f64],
    first_ts_ns: i64,
    tolerance_rel: f64,
) -> Result<()> {
    ensure!(
        stored.values.len() == expected.len(),
        "{name}: {} points stored, {} samples sent",
        stored.values.len(),
        expected.len()
    );
    for (k, (&ts, (&got, &want))) in stored
        .timestamps_ns
        .iter()
        .zip(stored.values.iter().zip(expected))
        .enumerate()
    {
        let want_ts = first_ts_ns + k as i64 * PERIOD_NS;
        ensure!(
            ts == want_ts,
            "{name}: sample {k} stored at {ts} ns, expected {want_ts} ns"
        );
        let close = if tolerance_rel == 0.0 {
            got.to_bits() == want.to_bits() || got == want
        } else {
            (got - want).abs() <= tolerance_rel * want.abs().max(f64::MIN_POSITIVE)
        };
        ensure!(close, "{name}: sample {k} is {got:e}, expected {want:e}");
    }
    Ok(())
}

/// The first sample's time is a whole period and lies within the run.
fn check_first_timestamp(first_ts_ns: i64, pipeline: &Pipeline) -> Result<()> {
    ensure!(
        first_ts_ns % PERIOD_NS == 0,
        "first timestamp {first_ts_ns} is not on a 1 ms boundary"
    );
    // The edge anchors at most one period before the first sample arrives.
    ensure!(
        first_ts_ns >= pipeline.started_ns - PERIOD_NS && first_ts_ns <= now_ns(),
        "first timestamp {first_ts_ns} is outside the run ({} .. now)",
        pipeline.started_ns
    );
    Ok(())
}

/// The audit points: block seqs 0..n with no gap, covering every sample index exactly once.
fn check_blocks(seqs: &[f64], first_indices: &[f64], counts: &[f64]) -> Result<()> {
    let mut blocks: Vec<(u64, u64, u64)> = seqs
        .iter()
        .zip(first_indices)
        .zip(counts)
        .map(|((&s, &f), &c)| (s as u64, f as u64, c as u64))
        .collect();
    blocks.sort();
    let mut next_index = 0;
    for (k, &(seq, first, count)) in blocks.iter().enumerate() {
        ensure!(
            seq == k as u64,
            "block seqs are not 0..n: position {k} holds seq {seq}"
        );
        ensure!(
            first == next_index,
            "block {seq} starts at sample {first}, expected {next_index}"
        );
        next_index += count;
    }
    ensure!(
        next_index == SAMPLES,
        "blocks cover {next_index} samples, expected {SAMPLES}"
    );
    Ok(())
}

/// One run into InfluxDB 1.x through `broker`, checked sample by sample and block by block.
fn influx_pipeline(
    services: &mut Services,
    rig: &str,
    broker: BrokerKind,
    seed: u64,
) -> Result<()> {
    let url = services.influx_v1()?;
    let database = format!("e2e_{}", rig.replace('-', "_"));
    let store = StoreKind::InfluxV1 {
        url: url.clone(),
        database: database.clone(),
    };
    let mut pipeline = Pipeline::start(spec(rig, broker, store, seed), services)?;
    let result = (|| {
        let truth = run_to_completion(&mut pipeline)?;
        let birth = pipeline.read_birth()?;
        ensure!(
            birth.channels.len() == 4,
            "birth announces {} channels",
            birth.channels.len()
        );
        let first = birth.channels[0].name.clone();
        wait_for("every sample in InfluxDB", Duration::from_secs(60), || {
            Ok(
                (query::influx_count(&url, &database, "dtop_samples", &first, rig)? >= SAMPLES)
                    .then_some(()),
            )
        })?;
        let fields = query::influx_fields(&url, &database, "dtop_samples", rig)?;
        let first_ts = fields
            .get(&first)
            .and_then(|s| s.timestamps_ns.first().copied())
            .context("no samples")?;
        check_first_timestamp(first_ts, &pipeline)?;
        for (position, ch) in birth.channels.iter().enumerate() {
            let stored = fields
                .get(&ch.name)
                .with_context(|| format!("no field {}", ch.name))?;
            // InfluxDB keeps float64 and JSON round-trips it exactly: no tolerance.
            check_channel(
                &ch.name,
                stored,
                &expected_values(&truth, &birth, position),
                first_ts,
                0.0,
            )?;
        }
        let blocks = query::influx_fields(&url, &database, "dtop_blocks", rig)?;
        let get = |f: &str| {
            blocks
                .get(f)
                .map(|s| s.values.clone())
                .with_context(|| format!("dtop_blocks.{f} missing"))
        };
        check_blocks(&get("seq")?, &get("first_sample_index")?, &get("samples")?)
    })();
    result.with_context(|| {
        let nats = services.nats_warnings().unwrap_or_default();
        format!("{}{nats}", pipeline.logs())
    })
}

/// One run into VictoriaMetrics through the InfluxDB v2 write API and `broker`, checked
/// sample by sample (to VictoriaMetrics' precision) and block by block.
fn victoria_pipeline(
    services: &mut Services,
    rig: &str,
    broker: BrokerKind,
    seed: u64,
) -> Result<()> {
    let url = services.victoria_metrics()?;
    let mut pipeline = Pipeline::start(
        spec(rig, broker, StoreKind::InfluxV2 { url: url.clone() }, seed),
        services,
    )?;
    let result = (|| {
        let truth = run_to_completion(&mut pipeline)?;
        let birth = pipeline.read_birth()?;
        let selector = format!("{{__name__=~\"dtop_samples_.*\",rig=\"{rig}\"}}");
        let series: BTreeMap<String, Series> = wait_for(
            "every sample in VictoriaMetrics",
            Duration::from_secs(60),
            || {
                let s = query::vm_export(&url, &selector)?;
                let complete = birth.channels.iter().all(|ch| {
                    s.get(&format!("dtop_samples_{}", ch.name))
                        .is_some_and(|x| x.values.len() as u64 >= SAMPLES)
                });
                Ok(complete.then_some(s))
            },
        )?;
        let first_name = format!("dtop_samples_{}", birth.channels[0].name);
        let first_ts = series[&first_name].timestamps_ns[0];
        check_first_timestamp(first_ts, &pipeline)?;
        for (position, ch) in birth.channels.iter().enumerate() {
            let name = format!("dtop_samples_{}", ch.name);
            // VictoriaMetrics stores values as a decimal mantissa and exponent, exact to about
            // 15 significant digits; 1e-12 relative is far below one ADC count (~1e-7 relative).
            check_channel(
                &name,
                &series[&name],
                &expected_values(&truth, &birth, position),
                first_ts,
                1e-12,
            )?;
        }
        let blocks = query::vm_export(
            &url,
            &format!("{{__name__=~\"dtop_blocks_.*\",rig=\"{rig}\"}}"),
        )?;
        let get = |f: &str| {
            blocks
                .get(&format!("dtop_blocks_{f}"))
                .map(|s| s.values.clone())
                .with_context(|| format!("dtop_blocks_{f} missing"))
        };
        check_blocks(&get("seq")?, &get("first_sample_index")?, &get("samples")?)
    })();
    result.with_context(|| {
        let nats = services.nats_warnings().unwrap_or_default();
        format!("{}{nats}", pipeline.logs())
    })
}

#[test]
fn every_sample_reaches_influxdb_v1_exactly_once_through_dtop_broker() -> Result<()> {
    influx_pipeline(&mut Services::new()?, "e2e-influx-v1", BrokerKind::Dtop, 11)
}

#[test]
fn every_sample_reaches_victoria_metrics_through_the_v2_write_api() -> Result<()> {
    victoria_pipeline(&mut Services::new()?, "e2e-victoria", BrokerKind::Dtop, 12)
}

#[test]
fn edge_and_twin_speak_standard_mqtt_through_mosquitto() -> Result<()> {
    let mut services = Services::new()?;
    influx_pipeline(&mut services, "e2e-mosquitto", BrokerKind::Mosquitto, 13)?;
    victoria_pipeline(&mut services, "e2e-mosquitto-vm", BrokerKind::Mosquitto, 14)
}

#[test]
fn every_sample_reaches_storage_exactly_once_through_a_nats_cluster() -> Result<()> {
    if !BrokerKind::Nats.available()? {
        return Ok(());
    }
    // One cluster (the Services' own) for both runs.
    let mut services = Services::new()?;
    influx_pipeline(&mut services, "e2e-nats", BrokerKind::Nats, 15)?;
    victoria_pipeline(&mut services, "e2e-nats-vm", BrokerKind::Nats, 16)
}
