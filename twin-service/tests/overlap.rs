//! Blocks whose sample times are already stored from another edge clock, against real
//! Mosquitto and InfluxDB 1.x: a restarted edge whose clock reuses stored times, within one
//! twin run and across a twin restart. No stored sample changes value; the blocks are stored
//! apart (`dtop_samples_overlap`), counted by reason in the stats and on the twin's status
//! topic; identical re-sends stay harmless; `dtop-twin audit` finds every seq, and lists the
//! declared ones apart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::frames;
use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use dtop_proto::topic::{self, RigTopic, TwinTopic};
use dtop_proto::v1::{ChannelSamples, LossReason, SampleBlock, SeqLoss};
use dtop_proto::{Message, RigId};
use dtop_twin::config::{StorageSpoolConfig, TwinConfig};
use dtop_twin::{TwinHandle, TwinStats};
use frames::{PERIOD_NS, SAMPLES_PER_BLOCK, T0_NS, wait_stats};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{InfluxD, Mosquitto};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const DB: &str = "dtop";
const RIG: &str = "overlap-rig";
const BIN: &str = env!("CARGO_BIN_EXE_dtop-twin");
const MS: u64 = 1_000_000;

fn rig() -> RigId {
    RigId::new(RIG).unwrap()
}

fn twin_config(mqtt_port: u16, influx: &InfluxD, spool_dir: &Path, client: &str) -> TwinConfig {
    TwinConfig {
        spool: StorageSpoolConfig {
            dir: Some(spool_dir.to_owned()),
            ..StorageSpoolConfig::default()
        },
        ..support::influx_twin_config(mqtt_port, influx, DB, client)
    }
}

/// A block of a restarted edge: session `session`, sample index 0 of the new firmware run
/// stamped `shift_ms` after T0 (its clock reuses the first run's times), channel 1 at
/// 5000 + k counts so any overwrite would show.
fn restarted_block(session: u64, seq: u64, k: u64, shift_ms: u64) -> Vec<u8> {
    let n = SAMPLES_PER_BLOCK;
    SampleBlock {
        rig_id: RIG.into(),
        session,
        seq,
        stream_id: 0,
        first_sample_index: k * n,
        sample_period_ns: PERIOD_NS,
        first_timestamp_ns: T0_NS + shift_ms * MS + k * n * PERIOD_NS,
        channels: vec![
            ChannelSamples {
                channel_id: 1,
                raw: (0..n as i32).map(|i| 5000 + i).collect(),
            },
            ChannelSamples {
                channel_id: 2,
                raw: vec![7; n as usize],
            },
        ],
        backfill: false,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Publishes as an edge would, and keeps the latest twin status of the rig.
struct Edge {
    client: AsyncClient,
    status_rx: watch::Receiver<serde_json::Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Edge {
    async fn connect(port: u16, id: &str) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let status_topic = topic::twin(&rig(), TwinTopic::Status);
        client
            .subscribe(status_topic.clone(), QoS::AtMostOnce)
            .await
            .unwrap();
        let (tx, status_rx) = watch::channel(serde_json::Value::Null);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == status_topic => {
                        if let Ok(v) = serde_json::from_slice(&p.payload) {
                            tx.send_replace(v);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self {
            client,
            status_rx,
            task,
        }
    }

    async fn publish(&self, kind: RigTopic, payload: Vec<u8>) {
        self.client
            .publish(topic::rig(&rig(), kind), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
}

/// Mosquitto and InfluxDB (with the test database made), or `None` when a test may skip
/// because one is not installed.
async fn start_services() -> Option<(Mosquitto, InfluxD)> {
    let broker = Mosquitto::start_if_installed().await?;
    let influx = InfluxD::start_if_installed().await?;
    influx.create_database(DB).await;
    Some((broker, influx))
}

/// The first edge run, session 1: its birth and blocks 0..=9 (T0 .. T0 + 1 s), all persisted
/// before the edge "restarts".
async fn publish_first_run(edge: &Edge, handle: &mut TwinHandle) {
    edge.publish(RigTopic::Birth, frames::birth(RIG, 1)).await;
    for seq in 0..=9 {
        edge.publish(RigTopic::Samples, frames::block(RIG, 1, seq, false))
            .await;
    }
    wait_persisted(handle, 9).await;
}

async fn wait_persisted(handle: &mut TwinHandle, seq: u64) -> TwinStats {
    wait_stats(handle, &format!("the watermark at {seq}"), |s| {
        s.store
            .rigs
            .get(&rig())
            .is_some_and(|r| r.persisted_seq == Some(seq))
    })
    .await
}

async fn stop(
    shutdown: CancellationToken,
    twin: tokio::task::JoinHandle<Result<(), dtop_twin::TwinError>>,
) {
    shutdown.cancel();
    tokio::time::timeout(frames::WAIT, twin)
        .await
        .expect("the twin stops")
        .unwrap()
        .unwrap();
}

async fn count(influx: &InfluxD, q: &str) -> u64 {
    let rows = influx.rows(DB, q).await;
    // The one aggregate column beside `time`; no row when nothing matched.
    rows.first()
        .and_then(|r| {
            r.iter()
                .find(|(k, _)| *k != "time")
                .map(|(_, v)| v.as_u64())
        })
        .map_or(0, |n| n.unwrap())
}

/// The rig's samples in the main series `dtop_samples`, where no overlapping block may land.
async fn count_main_samples(influx: &InfluxD) -> u64 {
    count(
        influx,
        &format!("SELECT COUNT(floor1_accel) FROM dtop_samples WHERE rig = '{RIG}'"),
    )
    .await
}

/// Every `floor1_accel` value of the first run's `blocks` blocks is the one it stored: sample
/// `k` of block `seq` is `(k + seq)` mm/s².
async fn assert_first_run_unchanged(influx: &InfluxD, blocks: u64) {
    let end_ns = T0_NS + blocks * SAMPLES_PER_BLOCK * PERIOD_NS;
    let rows = influx
        .rows(
            DB,
            &format!(
                "SELECT floor1_accel, floor2_accel FROM dtop_samples WHERE rig = '{RIG}' \
                 AND time >= {T0_NS} AND time < {end_ns}"
            ),
        )
        .await;
    assert_eq!(rows.len() as u64, blocks * SAMPLES_PER_BLOCK);
    let mut changed = Vec::new();
    for row in &rows {
        let t = row["time"].as_u64().unwrap();
        let index = (t - T0_NS) / PERIOD_NS;
        let (seq, k) = (index / SAMPLES_PER_BLOCK, index % SAMPLES_PER_BLOCK);
        let expected = (k + seq) as f64 * 0.001;
        let got = row["floor1_accel"].as_f64().unwrap();
        if (got - expected).abs() > 1e-12 || row["floor2_accel"].as_f64() != Some(-1.0) {
            changed.push((index, got));
        }
    }
    assert!(
        changed.is_empty(),
        "{} stored samples changed value, first {:?}",
        changed.len(),
        &changed[..changed.len().min(5)]
    );
}

fn apart(stats: &TwinStats) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let r = &stats.rigs[&rig()];
    (
        r.blocks_stored_apart.clone(),
        r.samples_stored_apart.clone(),
    )
}

fn by_reason(reason: &str, n: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(reason.to_owned(), n)])
}

/// What [`apart`] reads when `blocks` blocks of `samples` samples in all were stored apart
/// because another session of the rig had stored their times.
fn apart_as_other_session(
    blocks: u64,
    samples: u64,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    (
        by_reason("other_session", blocks),
        by_reason("other_session", samples),
    )
}

fn audit(influx: &InfluxD, dir: &Path) -> (Option<i32>, serde_json::Value) {
    let config = dir.join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "[storage.influx_v1]\nurl = \"{}\"\ndatabase = \"{DB}\"\n",
            influx.url
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("audit")
        .arg("--config")
        .arg(&config)
        .args(["--rig", RIG])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_reusing_stored_times_is_stored_apart_and_no_stored_sample_changes() {
    let Some((broker, influx)) = start_services().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = twin_config(broker.port, &influx, dir.path(), "twin-overlap-1");
    let (mut handle, twin) = dtop_twin::spawn(config, shutdown.clone());
    wait_stats(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    let edge = Edge::connect(broker.port, "edge-overlap-1").await;

    // The first edge run: blocks 0..=9, T0 .. T0 + 1 s.
    publish_first_run(&edge, &mut handle).await;

    // The restarted edge skipped seqs 10 and 11 and anchored its clock 550 ms after T0: its
    // first five blocks reuse stored times (the last one half), the sixth does not.
    edge.publish(RigTopic::Birth, frames::birth(RIG, 2)).await;
    // Its spool replays an identical block of the first run, stamped with the new session (as
    // the edge does): harmless, not an overlap.
    edge.publish(RigTopic::Samples, frames::block(RIG, 2, 3, true))
        .await;
    for (k, seq) in (12..=17).enumerate() {
        edge.publish(RigTopic::Samples, restarted_block(2, seq, k as u64, 550))
            .await;
    }
    let skipped = SeqLoss {
        rig_id: RIG.into(),
        session: 2,
        first_seq: 10,
        last_seq: 11,
        blocks: 2,
        samples: 0,
        reason: LossReason::Skipped as i32,
        detected_at_ns: T0_NS + 2_000 * MS,
    };
    edge.publish(RigTopic::Loss, skipped.encode_to_vec()).await;
    wait_persisted(&mut handle, 17).await;
    // InfluxDB: the first run's samples are untouched.
    assert_first_run_unchanged(&influx, 10).await;
    let stats = wait_stats(&mut handle, "the overlaps and the re-send counted", |s| {
        s.rigs.get(&rig()).is_some_and(|r| {
            r.blocks_stored_apart.values().sum::<u64>() == 5 && r.blocks_duplicate == 1
        })
    })
    .await;
    assert_eq!(apart(&stats), apart_as_other_session(5, 500));

    // The overlapping blocks are all kept apart under their clock; dtop_samples holds exactly
    // what dtop_blocks accounts for.
    let main = count_main_samples(&influx).await;
    assert_eq!(main, 1100);
    let accounted = count(
        &influx,
        &format!("SELECT SUM(samples) FROM dtop_blocks WHERE rig = '{RIG}'"),
    )
    .await;
    assert_eq!(accounted, main);
    let origin_ns = T0_NS + 550 * MS;
    let kept_apart = count(
        &influx,
        &format!(
            "SELECT COUNT(floor1_accel) FROM dtop_samples_overlap WHERE rig = '{RIG}' \
             AND timeline = '{origin_ns}/{PERIOD_NS}'"
        ),
    )
    .await;
    assert_eq!(kept_apart, 500);

    // The twin's status topic says so too.
    let mut status_rx = edge.status_rx.clone();
    let status = tokio::time::timeout(
        frames::WAIT,
        status_rx.wait_for(|s| s["blocks_stored_apart"]["other_session"] == 5),
    )
    .await
    .expect("a status with the overlaps")
    .unwrap()
    .clone();
    assert_eq!(status["samples_stored_apart"]["other_session"], 500);

    // Every seq is stored (some apart) or declared: the audit passes and names the skipped.
    let (code, report) = audit(&influx, dir.path());
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        report["report"]["declared"],
        serde_json::json!([{"first_seq": 10, "last_seq": 11, "reason": "skipped"}])
    );
    assert_eq!(report["report"]["holes"], serde_json::json!([]));

    edge.task.abort();
    stop(shutdown, twin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_twin_restart_blocks_reusing_stored_times_are_still_stored_apart() {
    let Some((broker, influx)) = start_services().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::connect(broker.port, "edge-overlap-2").await;

    let shutdown = CancellationToken::new();
    let config = twin_config(broker.port, &influx, dir.path(), "twin-overlap-2");
    let (mut handle, twin) = dtop_twin::spawn(config.clone(), shutdown.clone());
    wait_stats(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    publish_first_run(&edge, &mut handle).await;
    stop(shutdown, twin).await;

    // A new twin process on the same spool directory.
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(config, shutdown.clone());
    wait_stats(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    edge.publish(RigTopic::Birth, frames::birth(RIG, 2)).await;
    // The old run's spool replays a block the new twin has not seen: the same samples.
    edge.publish(RigTopic::Samples, frames::block(RIG, 1, 5, true))
        .await;
    for (k, seq) in (10..=14).enumerate() {
        edge.publish(RigTopic::Samples, restarted_block(2, seq, k as u64, 200))
            .await;
    }
    wait_persisted(&mut handle, 14).await;
    assert_first_run_unchanged(&influx, 10).await;
    let stats = wait_stats(&mut handle, "the overlaps counted", |s| {
        s.rigs
            .get(&rig())
            .is_some_and(|r| r.blocks_stored_apart.values().sum::<u64>() == 5)
    })
    .await;
    assert_eq!(apart(&stats), apart_as_other_session(5, 500));
    let main = count_main_samples(&influx).await;
    assert_eq!(main, 1000);
    let kept_apart = count(
        &influx,
        &format!("SELECT COUNT(floor1_accel) FROM dtop_samples_overlap WHERE rig = '{RIG}'"),
    )
    .await;
    assert_eq!(kept_apart, 500);

    edge.task.abort();
    stop(shutdown, twin).await;
}
