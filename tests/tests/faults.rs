//! Fault tests for "nothing lost" (issue 6): the real broker, twin, simulator and edge as
//! processes, real InfluxDB, the simulator at speed; one fault each, then every block seq the
//! edge numbered is looked up in InfluxDB and every sample counted.
//!
//! Expected: with a spool large enough, every sample is stored exactly once; with a spool
//! deliberately too small, what is missing is exactly what the edge's metrics report lost.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dtop_e2e::WithLogs;
use dtop_e2e::audit::{self, Stored};
use dtop_e2e::pipeline::{BrokerKind, EdgeOptions, Pipeline, PipelineSpec, StoreKind};
use dtop_e2e::proxy::CuttableProxy;
use dtop_e2e::{Services, free_port, wait_for};

/// The edge's spool settings for every run: a replay fast enough to drain a backlog while
/// live data flows.
const EDGE_SPOOL: &str = "replay_blocks_per_s = 400\n";
/// Quick stall detection, unless a test sets its own.
const EDGE_STALL: &str = "stall_s = 2.0\n";

/// What one run's end looks like.
#[derive(Debug)]
struct Audit {
    next_seq: u64,
    stored: Stored,
    holes: Vec<(u64, u64)>,
    metrics: std::collections::BTreeMap<String, f64>,
}

impl Audit {
    fn metric(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(0.0)
    }

    /// Sum over every label set of `name`.
    fn metric_sum(&self, name: &str) -> f64 {
        self.metrics
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    fn missing_blocks(&self) -> u64 {
        self.holes.iter().map(|(a, b)| b - a + 1).sum()
    }
}

struct Run {
    pipeline: Pipeline,
    influx_url: String,
    db: String,
    metrics_port: u16,
}

#[allow(clippy::too_many_arguments)]
/// One fault run's pipeline: everything but the rig name has the usual value.
struct Setup {
    rig: &'static str,
    speed: f64,
    samples: u64,
    block_samples: u32,
    /// Extra edge `[spool]` keys; `stall_s` and `replay_blocks_per_s` here replace the defaults.
    spool_toml: &'static str,
    twin_toml: String,
    /// The dtop-broker port and the port the edge connects to instead (a cuttable proxy).
    broker_port: Option<u16>,
    edge_mqtt_port: Option<u16>,
    /// More InfluxDB servers: with any, the twin writes `[[storage.nodes]]` "a" (the run's
    /// server) and "b", "c", ... (these), each into the run's database.
    more_nodes: Vec<String>,
}

impl Setup {
    /// Speed 10, [`SHORT_SAMPLES`], 100-sample blocks, default spools, no proxy.
    fn new(rig: &'static str) -> Self {
        Self {
            rig,
            speed: 10.0,
            samples: SHORT_SAMPLES,
            block_samples: 100,
            spool_toml: "",
            twin_toml: String::new(),
            broker_port: None,
            edge_mqtt_port: None,
            more_nodes: Vec::new(),
        }
    }

    /// The twin spools to `dir` (and keeps its watermark file there).
    fn twin_spool(self, dir: &std::path::Path) -> Self {
        Self {
            twin_toml: format!("[spool]\ndir = \"{}\"\n", dir.display()),
            ..self
        }
    }

    /// The edge reaches the broker on `broker_port` through `proxy_port`.
    fn through_proxy(self, broker_port: u16, proxy_port: u16) -> Self {
        Self {
            broker_port: Some(broker_port),
            edge_mqtt_port: Some(proxy_port),
            ..self
        }
    }
}

fn start(setup: Setup, influx_url: &str, services: &mut Services) -> Result<Run> {
    let Setup {
        rig,
        speed,
        samples,
        block_samples,
        spool_toml,
        twin_toml,
        broker_port,
        edge_mqtt_port,
        more_nodes,
    } = setup;
    let metrics_port = free_port()?;
    let stall = if spool_toml.contains("stall_s") {
        ""
    } else {
        EDGE_STALL
    };
    let replay = if spool_toml.contains("replay_blocks_per_s") {
        ""
    } else {
        EDGE_SPOOL
    };
    let db = format!("faults_{}", rig.replace('-', "_"));
    let spec = PipelineSpec {
        rig: rig.to_owned(),
        broker: BrokerKind::Dtop,
        store: if more_nodes.is_empty() {
            StoreKind::InfluxV1 {
                url: influx_url.to_owned(),
                database: db.clone(),
            }
        } else {
            let urls = std::iter::once(influx_url.to_owned()).chain(more_nodes);
            StoreKind::InfluxV1Nodes {
                nodes: ('a'..='z').map(String::from).zip(urls).collect(),
                database: db.clone(),
            }
        },
        samples,
        speed,
        seed: 6,
        block_samples,
        sim_args: Vec::new(),
        twin_toml,
        edge: EdgeOptions {
            toml: format!(
                "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[spool]\n{replay}{stall}{spool_toml}"
            ),
            broker_port,
            mqtt_port: edge_mqtt_port,
            ..EdgeOptions::default()
        },
    };
    let pipeline = Pipeline::start(spec, services)?;
    Ok(Run {
        pipeline,
        influx_url: influx_url.to_owned(),
        db,
        metrics_port,
    })
}

impl Run {
    /// Lets the pipeline run for `wall`, failing early if a process died.
    fn run_for(&mut self, wall: Duration) -> Result<()> {
        let until = Instant::now() + wall;
        while Instant::now() < until {
            self.pipeline.ensure_running()?;
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Waits for the simulator to send its last sample, then until InfluxDB holds every seq the edge
    /// numbered except those the edge reports lost, and until the watermark covered
    /// `stored_samples` (when given); returns the audit.
    fn finish(&mut self, within: Duration, stored_samples: Option<u64>) -> Result<Audit> {
        // Not the truth log: with the edge down the simulator drops frames like a full
        // firmware buffer, so its truth never reaches `samples`.
        let sim_done = wait_for("the simulator to finish", within, || {
            self.pipeline.ensure_running()?;
            Ok(self
                .pipeline
                .sim
                .log()
                .contains("Reached max_samples")
                .then_some(()))
        });
        if let Err(e) = sim_done {
            return Err(e.context(self.pipeline.logs()));
        }
        // The edge batches what it has read before its counter is final.
        std::thread::sleep(Duration::from_secs(1));
        // Not the `next_seq` file: that is the reservation bound, ahead of the seqs used.
        let next_seq = audit::edge_metrics(self.metrics_port)?
            .get("dtop_edge_next_seq")
            .copied()
            .context("the edge exports no dtop_edge_next_seq")? as u64;
        let mut last = None;
        let result = wait_for("InfluxDB to hold every block", within, || {
            self.pipeline.ensure_running()?;
            let metrics = audit::edge_metrics(self.metrics_port)?;
            let stored = audit::stored(&self.influx_url, &self.db, &self.pipeline.spec.rig)?;
            let holes = audit::holes(next_seq.saturating_sub(1), &stored.blocks);
            let a = Audit {
                next_seq,
                stored,
                holes,
                metrics,
            };
            // Seqs a killed run reserved but did not use are declared skipped, not lost.
            let lost = a.metric_sum("dtop_edge_blocks_lost_total") as u64
                + a.metric("dtop_edge_seqs_skipped_total") as u64;
            let confirmed = stored_samples
                .is_none_or(|n| a.metric("dtop_edge_samples_stored_total") as u64 >= n);
            let done = a.missing_blocks() <= lost && confirmed;
            last = Some(format!(
                "next_seq {next_seq}, stored blocks {}, holes {:?}, lost blocks {lost}, stored samples (watermark) {}",
                a.stored.blocks.len(),
                &a.holes[..a.holes.len().min(8)],
                a.metric("dtop_edge_samples_stored_total")
            ));
            Ok(done.then_some(a))
        });
        let a =
            result.or_logs(|| format!("{}\n{}", last.unwrap_or_default(), self.pipeline.logs()))?;
        eprintln!(
            "{}: {} seqs numbered, {} blocks and {} sample points in InfluxDB, holes {:?}, {} blocks replayed, edge loss {:?}",
            self.pipeline.spec.rig,
            a.next_seq,
            a.stored.blocks.len(),
            a.stored.sample_points,
            a.holes,
            a.metric("dtop_edge_blocks_replayed_total"),
            a.metrics
                .iter()
                .filter(|(k, _)| k.contains("lost")
                    || k.contains("produced")
                    || k.contains("stored"))
                .collect::<Vec<_>>()
        );
        Ok(a)
    }
}

/// Every stored block's samples are in `dtop_samples` exactly once, and nothing is missing.
fn ensure_nothing_lost(a: &Audit, samples: u64) -> Result<()> {
    ensure!(a.holes.is_empty(), "holes in InfluxDB: {:?}", a.holes);
    ensure!(
        a.stored.block_samples() == samples,
        "stored blocks hold {} samples, the simulator sent {samples}",
        a.stored.block_samples()
    );
    ensure!(
        a.stored.sample_points == samples,
        "dtop_samples holds {} points, expected {samples}",
        a.stored.sample_points
    );
    ensure!(
        a.metric_sum("dtop_edge_samples_lost_total") == 0.0,
        "the edge reports losses: {:?}",
        a.metrics
    );
    Ok(())
}

fn broker_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Speed 10, 20 s of wall time, the fault after 6 s.
const SHORT_SAMPLES: u64 = 200_000;

#[test]
fn a_broker_killed_and_restarted_mid_run_loses_no_sample() -> Result<()> {
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let mut run = start(Setup::new("fault-broker"), &url, &mut services)?;
    run.run_for(Duration::from_secs(6))?;
    run.pipeline.kill_broker()?;
    std::thread::sleep(Duration::from_secs(3));
    run.pipeline.start_broker()?;
    let a = run.finish(Duration::from_secs(90), Some(SHORT_SAMPLES))?;
    ensure_nothing_lost(&a, SHORT_SAMPLES)?;
    ensure!(a.metric("dtop_edge_blocks_replayed_total") > 0.0);
    Ok(())
}

#[test]
fn a_twin_killed_and_restarted_loses_no_sample() -> Result<()> {
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let twin_spool = tempfile::tempdir()?;
    let mut run = start(
        Setup::new("fault-twin").twin_spool(twin_spool.path()),
        &url,
        &mut services,
    )?;
    run.run_for(Duration::from_secs(6))?;
    run.pipeline.kill_twin()?;
    std::thread::sleep(Duration::from_secs(2));
    run.pipeline.start_twin()?;
    let a = run.finish(Duration::from_secs(90), Some(SHORT_SAMPLES))?;
    ensure_nothing_lost(&a, SHORT_SAMPLES)?;
    Ok(())
}

#[test]
fn an_edge_killed_and_restarted_loses_only_what_it_reports() -> Result<()> {
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let mut run = start(Setup::new("fault-edge"), &url, &mut services)?;
    run.run_for(Duration::from_secs(6))?;
    run.pipeline.kill_edge()?;
    std::thread::sleep(Duration::from_secs(1));
    run.pipeline.start_edge()?;
    // Samples the firmware sent while no edge was reading are not the pipeline's to keep; every
    // block the edge numbered is.
    let a = run.finish(Duration::from_secs(90), None)?;
    // The killed run's reservation beyond its spool is declared skipped: exactly the holes.
    let skipped = a.metric("dtop_edge_seqs_skipped_total") as u64;
    ensure!(
        skipped > 0 && a.missing_blocks() == skipped,
        "holes {:?} but the restarted edge reports {skipped} seqs skipped",
        a.holes
    );
    ensure!(
        a.metric_sum("dtop_edge_samples_lost_total") == 0.0
            && a.metric_sum("dtop_edge_blocks_lost_total") == 0.0,
        "the edge reports losses: {:?}",
        a.metrics
    );
    // The twin's watermark passes the skipped seqs and reaches the last block.
    let last_seq = a.next_seq.saturating_sub(1);
    wait_for(
        "the watermark to reach the last block",
        Duration::from_secs(60),
        || {
            run.pipeline.ensure_running()?;
            let m = audit::edge_metrics(run.metrics_port)?;
            let w = m.get("dtop_edge_persisted_seq").copied().unwrap_or(-1.0);
            Ok((w >= last_seq as f64).then_some(()))
        },
    )
    .or_logs(|| run.pipeline.logs())?;
    ensure!(a.next_seq > 0 && !a.stored.blocks.is_empty());
    // The restarted edge continues the first one's sample clock: no sample shares a timestamp
    // (an InfluxDB point) with another, even at speed 10, where timestamps run ahead of the
    // wall clock.
    ensure!(
        a.stored.sample_points == a.stored.block_samples(),
        "dtop_samples holds {} points, the stored blocks {} samples",
        a.stored.sample_points,
        a.stored.block_samples()
    );
    Ok(())
}

/// The 60 s InfluxDB outage, in wall time (the one slow test, named to start first).
/// InfluxDB is a private server: the shared one is never stopped.
#[test]
fn a_60_s_influxdb_outage_then_restart_loses_no_sample() -> Result<()> {
    const SAMPLES: u64 = 750_000;
    let mut services = Services::new()?;
    let mut influx = services.private_influx_v1()?;
    let twin_spool = tempfile::tempdir()?;
    let url = influx.url.clone();
    // A stalled watermark here is the twin waiting on storage, not a loss: re-send rarely.
    let mut run = start(
        Setup {
            samples: SAMPLES,
            block_samples: 200,
            spool_toml: "stall_s = 30.0\n",
            ..Setup::new("fault-influx")
        }
        .twin_spool(twin_spool.path()),
        &url,
        &mut services,
    )?;
    run.run_for(Duration::from_secs(5))?;
    influx.stop()?;
    run.run_for(Duration::from_secs(60))?;
    influx.start()?;
    let a = run.finish(Duration::from_secs(150), Some(SAMPLES))?;
    ensure_nothing_lost(&a, SAMPLES)?;
    Ok(())
}

/// Issue 16 item 3: two InfluxDB nodes, node "b" SIGKILLed for 20 s and started again on
/// its data directory and port. While it is down the published watermark stays where "b" is
/// (node "a" runs far ahead) and "b"'s batches wait in its own twin spool; with the twin
/// frozen (SIGSTOP) just after "b" is back, "b" already holds every block up to the highest
/// watermark ever published; once resumed, the twin fills "b"'s gap from its spool. In the
/// end both nodes hold every sample exactly once and no node dropped anything.
#[test]
fn a_storage_node_stopped_for_20_s_is_filled_from_the_spool_and_the_watermark_waits_for_it()
-> Result<()> {
    storage_node_outage(Duration::from_secs(20), 300_000)
}

/// The same for minutes (issue 16: "one stopped for minutes"), a soak kept out of CI:
/// `DTOP_STORAGE_OUTAGE_S` seconds (default 180) of node "b" down while the rig streams at
/// 10 kHz of rig time; BENCHMARKS.md § "A storage node stopped for minutes".
#[test]
#[ignore = "soak: minutes of outage; run by hand, see BENCHMARKS.md"]
fn a_storage_node_stopped_for_minutes_is_filled_from_the_spool() -> Result<()> {
    let outage_s: u64 = match std::env::var("DTOP_STORAGE_OUTAGE_S") {
        Ok(v) => v.parse().with_context(|| {
            format!("DTOP_STORAGE_OUTAGE_S={v:?} is not a whole number of seconds")
        })?,
        Err(_) => 180,
    };
    // 10 kHz of rig time (speed 10): the outage, 30 s around it, in whole 100-sample blocks.
    let samples = (outage_s + 30) * 10_000;
    storage_node_outage(Duration::from_secs(outage_s), samples)
}

/// Node "b" of two InfluxDB nodes SIGKILLed for `outage` while a rig streams `samples`.
fn storage_node_outage(outage_for: Duration, samples: u64) -> Result<()> {
    let mut services = Services::new()?;
    let node_a = services.private_influx_v1()?;
    let mut node_b = services.private_influx_v1()?;
    let twin_spool = tempfile::tempdir()?;
    let twin_metrics = free_port()?;
    let setup = Setup {
        samples,
        // A stalled watermark here is the twin waiting on node b: re-send rarely.
        spool_toml: "stall_s = 30.0\n",
        more_nodes: vec![node_b.url.clone()],
        ..Setup::new("fault-node")
    }
    .twin_spool(twin_spool.path());
    let setup = Setup {
        twin_toml: format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{twin_metrics}\"\n",
            setup.twin_toml
        ),
        ..setup
    };
    let mut run = start(setup, &node_a.url, &mut services)?;
    let twin = |name: &str| -> Result<f64> {
        Ok(audit::edge_metrics(twin_metrics)?
            .get(name)
            .copied()
            .unwrap_or(0.0))
    };
    // Both nodes take writes before the fault.
    wait_for(
        "both nodes to store blocks",
        Duration::from_secs(30),
        || {
            run.pipeline.ensure_running()?;
            Ok((twin("dtop_twin_node_rig_persisted_seq{node=\"b\"}")? > 10.0).then_some(()))
        },
    )?;
    run.run_for(Duration::from_secs(3))?;
    node_b.stop()?;
    let outage = Instant::now();
    // What the twin published (its metrics) and what the edge received, highest seen.
    let mut published_max = 0.0_f64;
    let mut a_max = 0.0_f64;
    let mut b_spooled_max = 0.0_f64;
    while outage.elapsed() < outage_for {
        run.pipeline.ensure_running()?;
        let m = audit::edge_metrics(twin_metrics)?;
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        published_max = published_max.max(get("dtop_twin_rig_persisted_seq"));
        a_max = a_max.max(get("dtop_twin_node_rig_persisted_seq{node=\"a\"}"));
        b_spooled_max = b_spooled_max.max(get("dtop_twin_node_batches_spooled{node=\"b\"}"));
        std::thread::sleep(Duration::from_millis(250));
    }
    // Freeze the twin, then read what the edge last received: nothing newer can be published.
    run.pipeline.twin.suspend()?;
    std::thread::sleep(Duration::from_secs(1));
    let edge_watermark = audit::edge_metrics(run.metrics_port)?
        .get("dtop_edge_persisted_seq")
        .copied()
        .unwrap_or(0.0);
    published_max = published_max.max(edge_watermark);
    let frozen_check = (|| -> Result<()> {
        node_b.start()?;
        let b_held = audit::stored(&node_b.url, &run.db, &run.pipeline.spec.rig)?;
        let lacking = audit::holes(published_max as u64, &b_held.blocks);
        ensure!(
            lacking.is_empty(),
            "the watermark reached {published_max} while node b lacked {lacking:?}"
        );
        Ok(())
    })();
    run.pipeline.twin.resume()?;
    frozen_check?;
    let back_at = Instant::now();
    eprintln!(
        "node outage of {outage_for:?}: published watermark at most {published_max}, node a reached {a_max}, node b spooled up to {b_spooled_max} batches"
    );
    ensure!(
        a_max > published_max + 200.0,
        "node a ({a_max}) should have run far ahead of the published watermark ({published_max}) while b was down"
    );
    ensure!(
        b_spooled_max > 0.0,
        "node b's batches never went to its twin spool"
    );
    let a = run.finish(Duration::from_secs(120) + outage_for, Some(samples))?;
    ensure_nothing_lost(&a, samples)?;
    // Node b too: every seq, every sample exactly once.
    let b = wait_for(
        "node b to hold every block",
        Duration::from_secs(60),
        || {
            let stored = audit::stored(&node_b.url, &run.db, &run.pipeline.spec.rig)?;
            let holes = audit::holes(a.next_seq.saturating_sub(1), &stored.blocks);
            Ok((holes.is_empty() && stored.sample_points == samples).then_some(stored))
        },
    )?;
    ensure!(b.block_samples() == samples && b.blocks == a.stored.blocks);
    eprintln!(
        "node b holds every block and sample once, {:.1} s after it was started again",
        back_at.elapsed().as_secs_f64()
    );
    let m = audit::edge_metrics(twin_metrics)?;
    let dropped: f64 = m
        .iter()
        .filter(|(k, _)| k.contains("dropped_total"))
        .map(|(_, v)| v)
        .sum();
    ensure!(dropped == 0.0, "the twin dropped lines or blocks: {m:?}");
    ensure!(
        m.get("dtop_twin_node_rig_persisted_seq{node=\"b\"}")
            == m.get("dtop_twin_rig_persisted_seq"),
        "node b's watermark is not the published one at the end: {m:?}"
    );
    Ok(())
}

/// 10 minutes of rig time cut off from the broker (speed 20: about 30 s of wall time).
#[test]
fn an_edge_cut_off_from_the_broker_for_10_minutes_of_rig_time_loses_no_sample() -> Result<()> {
    const SAMPLES: u64 = 1_000_000;
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let broker_port = free_port()?;
    let proxy = CuttableProxy::start(broker_addr(broker_port))?;
    let mut run = start(
        Setup {
            speed: 20.0,
            samples: SAMPLES,
            block_samples: 200,
            ..Setup::new("fault-cut")
        }
        .through_proxy(broker_port, proxy.port),
        &url,
        &mut services,
    )?;
    run.run_for(Duration::from_secs(5))?;
    proxy.cut();
    let cut_at = Instant::now();
    // Cut for 10 minutes of rig time, however fast the simulator manages to run (30 s at 20×
    // on an idle machine).
    let backlog_s = wait_for(
        "10 minutes of rig data spooled",
        Duration::from_secs(120),
        || {
            run.pipeline.ensure_running()?;
            let m = audit::edge_metrics(run.metrics_port)?;
            let backlog = m.get("dtop_edge_backlog_seconds").copied().unwrap_or(0.0);
            Ok((backlog >= 600.0).then_some(backlog))
        },
    )?;
    proxy.restore();
    let restored_at = Instant::now();
    // How long the backlog takes to drain while live data keeps flowing (for BENCHMARKS.md).
    let drained = wait_for("the backlog to drain", Duration::from_secs(120), || {
        run.pipeline.ensure_running()?;
        let m = audit::edge_metrics(run.metrics_port)?;
        let backlog = m
            .get("dtop_edge_backlog_seconds")
            .copied()
            .unwrap_or(f64::MAX);
        Ok((backlog < 1.0).then(|| restored_at.elapsed()))
    })?;
    eprintln!(
        "fault-cut: cut for {:.1} s wall, backlog {backlog_s:.0} s of rig time, drained in {:.1} s wall while live data flowed at 20x",
        (restored_at - cut_at).as_secs_f64(),
        drained.as_secs_f64()
    );
    let a = run.finish(Duration::from_secs(120), Some(SAMPLES))?;
    ensure_nothing_lost(&a, SAMPLES)?;
    Ok(())
}

/// A spool of 20 s of rig data, 100 s of rig time cut off, `pause`: the edge refuses blocks
/// once full; exactly those are missing from InfluxDB, and the metrics say so.
#[test]
fn a_spool_too_small_for_the_outage_loses_exactly_what_the_metrics_report() -> Result<()> {
    const SAMPLES: u64 = 250_000;
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let broker_port = free_port()?;
    let proxy = CuttableProxy::start(broker_addr(broker_port))?;
    let mut run = start(
        Setup {
            samples: SAMPLES,
            spool_toml: "capacity_s = 20.0\nfull_policy = \"pause\"\n",
            ..Setup::new("fault-tiny")
        }
        .through_proxy(broker_port, proxy.port),
        &url,
        &mut services,
    )?;
    run.run_for(Duration::from_secs(4))?;
    proxy.cut();
    run.run_for(Duration::from_secs(10))?;
    proxy.restore();
    let a = run.finish(Duration::from_secs(90), None)?;
    let produced = a.metric("dtop_edge_samples_produced_total") as u64;
    let paused = a.metric("dtop_edge_samples_lost_total{reason=\"paused\"}") as u64;
    let lost_blocks = a.metric_sum("dtop_edge_blocks_lost_total") as u64;
    ensure!(paused > 0, "the spool never filled: {:?}", a.metrics);
    ensure!(
        a.missing_blocks() == lost_blocks,
        "holes {:?} ({} blocks) but the edge reports {lost_blocks} blocks lost",
        a.holes,
        a.missing_blocks()
    );
    ensure!(
        produced == SAMPLES,
        "the edge batched {produced} samples, the simulator sent {SAMPLES}"
    );
    ensure!(
        a.stored.block_samples() == produced - paused,
        "InfluxDB holds {} samples; the edge produced {produced} and reports {paused} lost",
        a.stored.block_samples()
    );
    ensure!(a.stored.sample_points == a.stored.block_samples());
    Ok(())
}

/// The same outage with `drop_oldest`: the edge evicts its oldest blocks, declares them lost
/// (`rig/{rig}/loss`), and the twin's watermark passes them, so the spool drains to nothing
/// without the `stall_s` release (set far beyond the test). InfluxDB's holes are exactly the
/// blocks the twin counted as declared lost.
#[test]
fn a_spool_too_small_under_drop_oldest_declares_its_losses_and_the_watermark_passes_them()
-> Result<()> {
    const SAMPLES: u64 = 200_000;
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let broker_port = free_port()?;
    let proxy = CuttableProxy::start(broker_addr(broker_port))?;
    let mut run = start(
        Setup {
            samples: SAMPLES,
            spool_toml: "capacity_s = 20.0\nfull_policy = \"drop_oldest\"\nstall_s = 3600.0\n",
            ..Setup::new("fault-drop")
        }
        .through_proxy(broker_port, proxy.port),
        &url,
        &mut services,
    )?;
    run.run_for(Duration::from_secs(3))?;
    proxy.cut();
    run.run_for(Duration::from_secs(8))?;
    proxy.restore();
    let a = run.finish(Duration::from_secs(90), None)?;
    let last_seq = a.next_seq.saturating_sub(1);
    // The watermark passes the evicted range and reaches the last block; the spool drains.
    let metrics = wait_for(
        "the watermark to pass the loss and the spool to drain",
        Duration::from_secs(60),
        || {
            run.pipeline.ensure_running()?;
            let m = audit::edge_metrics(run.metrics_port)?;
            let w = m.get("dtop_edge_persisted_seq").copied().unwrap_or(-1.0);
            let backlog = m
                .get("dtop_edge_backlog_blocks")
                .copied()
                .unwrap_or(f64::MAX);
            let uncovered = m
                .get("dtop_edge_lost_ranges_uncovered")
                .copied()
                .unwrap_or(f64::MAX);
            Ok((w >= last_seq as f64 && backlog == 0.0 && uncovered == 0.0).then_some(m))
        },
    )
    .or_logs(|| run.pipeline.logs())?;
    let spool_full = a.metric("dtop_edge_blocks_lost_total{reason=\"spool_full\"}") as u64;
    ensure!(spool_full > 0, "the spool never filled: {:?}", a.metrics);
    ensure!(
        metrics
            .get("dtop_edge_samples_released_unconfirmed_total")
            .copied()
            .unwrap_or(0.0)
            == 0.0,
        "blocks were released by the stall_s stopgap: {metrics:?}"
    );
    ensure!(
        metrics
            .get("dtop_edge_loss_declarations_total")
            .copied()
            .unwrap_or(0.0)
            > 0.0
    );
    // Exactly the seqs the twin accounted as declared lost are missing; the edge's own count
    // may be a window higher (blocks in flight at the cut that reached the twin after all).
    let twin_lost = audit::declared_lost_blocks(&run.pipeline.twin.log());
    ensure!(
        a.missing_blocks() == twin_lost,
        "holes {:?} ({} blocks) but the twin counted {twin_lost} blocks declared lost",
        a.holes,
        a.missing_blocks()
    );
    let lost_blocks = a.metric_sum("dtop_edge_blocks_lost_total") as u64;
    ensure!(
        twin_lost <= lost_blocks && lost_blocks <= twin_lost + 32,
        "the edge reports {lost_blocks} blocks lost, the twin {twin_lost}"
    );
    ensure!(a.stored.sample_points == a.stored.block_samples());
    Ok(())
}

#[test]
fn a_fresh_twin_waits_for_the_edge_backlog_instead_of_confirming_it_unseen() -> Result<()> {
    // The twin loses every record of the rig (its spool and watermark file, and the broker its
    // retained watermark) while the edge holds a backlog: the new twin must start below the
    // oldest block the edge still holds (the birth's oldest_unconfirmed_seq), not at the first
    // block InfluxDB happens to acknowledge, or the edge would release blocks never stored.
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let twin_spool = tempfile::tempdir()?;
    // A slow replay, so most of the backlog is still unsent when the fresh twin starts.
    let mut run = start(
        Setup {
            spool_toml: "replay_blocks_per_s = 30\n",
            ..Setup::new("fault-fresh-twin")
        }
        .twin_spool(twin_spool.path()),
        &url,
        &mut services,
    )?;
    run.run_for(Duration::from_secs(4))?;
    run.pipeline.kill_twin()?;
    std::thread::sleep(Duration::from_secs(3));
    for entry in std::fs::read_dir(twin_spool.path())? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    run.pipeline.kill_broker()?;
    run.pipeline.start_broker()?;
    // The edge reconnects and starts its replay before any twin subscribes: those blocks go
    // nowhere, and only the edge's spool still has them.
    std::thread::sleep(Duration::from_secs(3));
    run.pipeline.start_twin()?;
    let a = run.finish(Duration::from_secs(90), Some(SHORT_SAMPLES))?;
    ensure_nothing_lost(&a, SHORT_SAMPLES)?;
    Ok(())
}

/// Issue 11: the edge SIGKILLed twice, the first time long enough for the firmware to queue
/// frames and then drop the rest (so the restarted edge reads stale frames, then an index
/// jump), the second time briefly. Every sample index the simulator produced is either stored
/// once, at a time no other stored sample has, or declared lost by the edge; InfluxDB holds
/// exactly the points its blocks account for, per channel.
#[test]
fn an_edge_killed_twice_with_stale_frames_queued_stores_each_sample_once_or_declares_it()
-> Result<()> {
    const SAMPLES: u64 = 200_000;
    let mut services = Services::new()?;
    let url = services.influx_v1()?;
    let mut run = start(Setup::new("fault-stale"), &url, &mut services)?;
    run.run_for(Duration::from_secs(4))?;
    run.pipeline.kill_edge()?;
    // The pty and the simulator's queue fill within a frame or two; the rest is dropped.
    std::thread::sleep(Duration::from_secs(3));
    run.pipeline.start_edge()?;
    run.run_for(Duration::from_secs(4))?;
    // The firmware dropped frames while no edge read: the restarted edge read the queued ones,
    // then an index jump.
    let sim_log = run.pipeline.sim.log();
    ensure!(
        sim_log.contains("The pty is being read again; samples were lost."),
        "the simulator dropped no frame while the edge was down:\n{sim_log}"
    );
    run.pipeline.kill_edge()?;
    std::thread::sleep(Duration::from_millis(500));
    run.pipeline.start_edge()?;
    wait_for("the simulator to finish", Duration::from_secs(90), || {
        run.pipeline.ensure_running()?;
        Ok(run
            .pipeline
            .sim
            .log()
            .contains("Reached max_samples")
            .then_some(()))
    })
    .or_logs(|| run.pipeline.logs())?;
    // Let the edge read the last frames, then stop it cleanly so its partial block is sent.
    std::thread::sleep(Duration::from_secs(1));
    run.pipeline.stop_edge()?;

    // Every produced index is stored or declared: wait for the twin to store the last blocks.
    let mut last = String::new();
    let (blocks, declared) = wait_for(
        "stored + declared samples to reach the samples produced",
        Duration::from_secs(60),
        || {
            let blocks = audit::stored_blocks(&run.influx_url, &run.db, "fault-stale")?;
            let stored: u64 = blocks.iter().map(|b| b.samples).sum();
            let declared = audit::declared_unread_samples(&run.pipeline.twin.log());
            last = format!("stored {stored} + declared {declared}, produced {SAMPLES}");
            Ok((stored + declared >= SAMPLES).then_some((blocks, declared)))
        },
    )
    .or_logs(|| format!("{last}\n{}", run.pipeline.logs()))?;
    let stored: u64 = blocks.iter().map(|b| b.samples).sum();
    eprintln!(
        "fault-stale: {} blocks, {stored} samples stored, {declared} declared unread, {SAMPLES} produced",
        blocks.len()
    );
    ensure!(
        stored + declared == SAMPLES,
        "produced {SAMPLES} != stored {stored} + declared {declared}"
    );
    let time_overlaps = audit::time_overlaps(&blocks);
    ensure!(
        time_overlaps.is_empty(),
        "blocks share timestamps (seq pairs): {:?}",
        &time_overlaps[..time_overlaps.len().min(10)]
    );
    let index_overlaps = audit::index_overlaps(&blocks);
    ensure!(
        index_overlaps.is_empty(),
        "samples stored twice (seq pairs): {:?}",
        &index_overlaps[..index_overlaps.len().min(10)]
    );
    // InfluxDB holds one point per stored sample, on every channel: nothing overwritten.
    let points = audit::sample_points_per_channel(&run.influx_url, &run.db, "fault-stale")?;
    ensure!(!points.is_empty(), "no sample points stored");
    for (channel, n) in &points {
        ensure!(
            *n == stored,
            "channel {channel}: {n} points in dtop_samples, the blocks hold {stored}"
        );
    }
    // Against the rig's truth: every stored index was sent by the simulator.
    let truth = dtop_e2e::truth::Truth::read(&run.pipeline.truth_path())?;
    let sent: std::collections::BTreeSet<u64> = truth.indices.iter().copied().collect();
    for b in &blocks {
        let range = b.first_sample_index..b.first_sample_index + b.samples;
        ensure!(
            range.clone().all(|i| sent.contains(&i)),
            "block {} holds indices {range:?} the simulator never sent",
            b.seq
        );
    }
    ensure!(
        stored <= truth.len() as u64,
        "stored {stored} samples, the simulator sent {}",
        truth.len()
    );
    Ok(())
}
