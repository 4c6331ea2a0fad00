//! The whole twin in-process, against a real Mosquitto broker and real storage: births, blocks
//! (in order, duplicated, out of order, before the birth), bad frames, and a graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::frames;
use crate::support;

use std::time::Duration;

use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use dtop_proto::topic::{self, RigTopic, TwinTopic};
use dtop_proto::v1::{Channel, ChannelKind, ChannelSamples, RigBirth, SampleBlock, TwinState};
use dtop_proto::{Message, RigId};
use dtop_twin::TwinStats;
use dtop_twin::config::{
    BatchConfig, FileStorageConfig, InfluxV1Config, MqttConfig, StorageConfig, TwinConfig,
};
use dtop_twin::ingest::RejectReason;
use dtop_twin::lineproto::Precision;
use frames::{PERIOD_NS, SAMPLES_PER_BLOCK, T0_NS, wait_stats as wait};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::json;
use support::{InfluxD, Mosquitto};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const RIG: &str = "lab-3s";

fn birth(session: u64) -> Vec<u8> {
    frames::birth(RIG, session)
}

fn block(session: u64, seq: u64) -> Vec<u8> {
    frames::block(RIG, session, seq, false)
}

fn rig() -> RigId {
    RigId::new(RIG).unwrap()
}

/// A publisher standing in for an edge: a real rumqttc client whose event loop is polled in
/// the background.
struct Edge {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Edge {
    async fn connect(port: u16) -> Self {
        let mut options = MqttOptions::new("test-edge", "127.0.0.1", port);
        options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
        let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(options, 64);
        let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
        Self { client, task }
    }

    async fn publish(&self, kind: RigTopic, payload: Vec<u8>) {
        let retain = kind == RigTopic::Birth;
        self.client
            .publish(topic::rig(&rig(), kind), QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(mqtt_port: u16, storage: StorageConfig) -> TwinConfig {
    TwinConfig {
        mqtt: MqttConfig {
            port: Some(mqtt_port),
            client_id: "dtop-twin-test".into(),
            ..MqttConfig::default()
        },
        storage,
        batch: BatchConfig {
            max_delay_ms: 20,
            ..BatchConfig::default()
        },
        ..TwinConfig::default()
    }
}

/// The first JSON message on `topic` (retained ones included) that satisfies `ready`.
async fn retained_json(
    port: u16,
    topic: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut options = MqttOptions::new("test-status-reader", "127.0.0.1", port);
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    let (client, mut events) = AsyncClient::new(options, 16);
    client.subscribe(topic, QoS::AtMostOnce).await.unwrap();
    let mut last = serde_json::Value::Null;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                last = serde_json::from_slice(&p.payload).unwrap();
                if ready(&last) {
                    return last.clone();
                }
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no matching status on {topic}; last: {last:#}"))
}

fn rig_stats(stats: &TwinStats) -> dtop_twin::RigStats {
    stats.rigs.get(&rig()).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_every_block_once_in_influxdb_and_shuts_down_gracefully() {
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database("dtop").await;
    let storage = StorageConfig::InfluxV1(InfluxV1Config {
        url: influx.url.clone(),
        database: "dtop".into(),
        username: None,
        password_file: None,
        precision: Precision::Us,
    });
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(config(broker.port, storage), shutdown.clone());
    let stats = wait(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    assert!(
        stats
            .storage
            .starts_with("InfluxDB 1.x at http://127.0.0.1:"),
        "{}",
        stats.storage
    );

    let edge = Edge::connect(broker.port).await;
    // Blocks before the birth wait for it.
    edge.publish(RigTopic::Samples, block(1, 1)).await;
    wait(&mut handle, "a block waiting for the birth", |s| {
        rig_stats(s).blocks_waiting_for_birth == 1
    })
    .await;
    edge.publish(RigTopic::Birth, birth(1)).await;
    // In order, a duplicate, a gap, then the late block filling it.
    for seq in [2, 3, 3, 5, 4] {
        edge.publish(RigTopic::Samples, block(1, seq)).await;
    }
    // Bad frames: garbage, wrong rig in the payload, an unknown channel.
    edge.publish(RigTopic::Samples, vec![0xff, 0xff, 0xff])
        .await;
    let mut other = SampleBlock::decode(&block(1, 6)[..]).unwrap();
    other.rig_id = "someone-else".into();
    edge.publish(RigTopic::Samples, other.encode_to_vec()).await;
    let mut unknown = SampleBlock::decode(&block(1, 6)[..]).unwrap();
    unknown.channels[1].channel_id = 99;
    edge.publish(RigTopic::Samples, unknown.encode_to_vec())
        .await;

    let stats = wait(&mut handle, "5 blocks stored and 3 frames rejected", |s| {
        rig_stats(s).blocks_stored == 5 && s.frames_rejected_sum() == 3
    })
    .await;
    let r = rig_stats(&stats);
    assert!(r.online);
    assert_eq!(r.session, Some(1));
    assert_eq!(r.blocks_received, 6);
    assert_eq!(r.blocks_duplicate, 1);
    assert_eq!(r.blocks_missing, 0);
    assert_eq!(r.highest_contiguous_seq, Some(5));
    assert_eq!(r.lines_written, 5 * (SAMPLES_PER_BLOCK + 1));
    assert_eq!(
        stats.frames_rejected_total.get(&RejectReason::Decode),
        Some(&1)
    );
    assert_eq!(
        stats.frames_rejected_total.get(&RejectReason::RigMismatch),
        Some(&1)
    );
    assert_eq!(
        stats
            .frames_rejected_total
            .get(&RejectReason::UnknownChannel),
        Some(&1)
    );
    assert_eq!(r.channels.len(), 2);
    // Floor 2 reads a constant -1000 counts * 0.001 = -1 m/s^2: RMS 1.
    assert_eq!(r.floor_accel_rms_m_s2.get(&2).copied(), Some(1.0));

    let count = influx
        .rows("dtop", "SELECT count(floor1_accel) FROM dtop_samples")
        .await;
    assert_eq!(count[0]["count"], json!(5 * SAMPLES_PER_BLOCK));
    let blocks = influx
        .rows("dtop", "SELECT seq FROM dtop_blocks ORDER BY time")
        .await;
    let seqs: Vec<_> = blocks.iter().map(|b| b["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    // Block 4, sample 7: raw 4 + 7 = 11 counts, at t0 + (4 * 100 + 7) ms.
    let t_ns = T0_NS + (4 * SAMPLES_PER_BLOCK + 7) * PERIOD_NS;
    let point = influx
        .rows(
            "dtop",
            &format!("SELECT floor1_accel, floor2_accel FROM dtop_samples WHERE time = {t_ns}"),
        )
        .await;
    assert_eq!(point.len(), 1);
    assert_eq!(point[0]["floor1_accel"].as_f64(), Some(11.0 * 0.001));
    assert_eq!(point[0]["floor2_accel"].as_f64(), Some(-1000.0 * 0.001));

    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let last = handle.stats();
    assert!(!last.mqtt_connected);
    assert_eq!(last.store.lines_dropped_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_to_line_protocol_files_when_no_influxdb_is_configured() {
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lines_dir = dir.path().join("lines");
    let storage = StorageConfig::File(FileStorageConfig {
        dir: lines_dir.clone(),
        precision: Precision::Us,
    });
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(config(broker.port, storage), shutdown.clone());
    let stats = wait(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    assert!(
        stats.storage.contains("no InfluxDB configured"),
        "{}",
        stats.storage
    );
    assert!(
        stats.storage.contains("--data-binary @FILE"),
        "{}",
        stats.storage
    );

    let edge = Edge::connect(broker.port).await;
    edge.publish(RigTopic::Birth, birth(4)).await;
    for seq in 10..13 {
        edge.publish(RigTopic::Samples, block(4, seq)).await;
    }
    wait(&mut handle, "3 blocks stored", |s| {
        rig_stats(s).blocks_stored == 3
    })
    .await;
    // The twin's accounting for the rig is on its retained status topic, once a second.
    let status = retained_json(broker.port, &topic::twin(&rig(), TwinTopic::Status), |v| {
        v["stored"]["blocks_stored"] == 3
    })
    .await;
    assert_eq!(status["stored"]["samples_stored"], 3 * SAMPLES_PER_BLOCK);
    assert_eq!(status["stored"]["persisted_seq"], 12);
    assert_eq!(status["online"], true);
    assert_eq!(status["session"], 4);
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let files: Vec<_> = std::fs::read_dir(&lines_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(text.lines().count() as u64, 3 * (SAMPLES_PER_BLOCK + 1));
    let first_us = (T0_NS + 10 * SAMPLES_PER_BLOCK * PERIOD_NS) / 1_000;
    assert!(
        text.starts_with(&format!(
            "dtop_samples,rig={RIG},stream=0 floor1_accel=0.01,floor2_accel=-1 {first_us}\n"
        )),
        "{}",
        &text[..200]
    );
    assert!(text.contains(",session=4i,backfill=false "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_the_broker_and_connects_once_it_is_up() {
    if support::require_binary(support::MOSQUITTO).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::File(FileStorageConfig {
        dir: dir.path().to_owned(),
        precision: Precision::Us,
    });
    let port = support::free_port();
    let mut cfg = config(port, storage);
    cfg.mqtt.reconnect.initial_ms = 20;
    cfg.mqtt.reconnect.max_ms = 200;
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(cfg, shutdown.clone());
    // Nothing listens yet: the twin must back off and keep trying.
    wait(&mut handle, "failed connection attempts", |s| {
        s.mqtt_connection_errors_total >= 3
    })
    .await;
    assert!(
        !twin.is_finished(),
        "the twin must not give up on an absent broker"
    );
    let _broker = Mosquitto::start_on(Some(port)).await;
    wait(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuts_down_promptly_while_the_broker_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::File(FileStorageConfig {
        dir: dir.path().to_owned(),
        precision: Precision::Us,
    });
    let shutdown = CancellationToken::new();
    let (mut handle, twin) =
        dtop_twin::spawn(config(support::free_port(), storage), shutdown.clone());
    wait(&mut handle, "a failed connection attempt", |s| {
        s.mqtt_connection_errors_total >= 1
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn run_refuses_an_invalid_config_before_connecting() {
    let mut cfg = TwinConfig::default();
    cfg.batch.max_lines = 0;
    cfg.mqtt.host = Some(String::new());
    let (stats_tx, _handle) = dtop_twin::stats_channel();
    match dtop_twin::run(cfg, CancellationToken::new(), stats_tx).await {
        Err(dtop_twin::TwinError::InvalidConfig(problems)) => {
            assert_eq!(problems.0.len(), 2, "{problems}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_the_estimated_state_of_a_rig_that_fits_the_model_as_json() {
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::File(FileStorageConfig {
        dir: dir.path().join("lines"),
        precision: Precision::Us,
    });
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(config(broker.port, storage), shutdown.clone());
    wait(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;

    let mut options = MqttOptions::new("test-dashboard", "127.0.0.1", broker.port);
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    let (dashboard, mut events) = AsyncClient::new(options, 16);
    dashboard
        .subscribe(topic::all_twins(TwinTopic::StateJson), QoS::AtMostOnce)
        .await
        .unwrap();
    let subscribed = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    });
    subscribed.await.expect("no SUBACK");

    // The Southampton rig: three floor accelerometers and the shaker's force gauge on floor 1.
    let channel = |id: u32, name: &str, kind: ChannelKind, floor: u32| Channel {
        id,
        name: name.into(),
        kind: kind as i32,
        unit: String::new(),
        scale: 0.001,
        offset: 0.0,
        sample_rate_hz: 1000.0,
        floor,
        stream_id: 0,
    };
    let birth = RigBirth {
        rig_id: RIG.into(),
        session: 1,
        channels: vec![
            channel(1, "floor1_accel", ChannelKind::Acceleration, 1),
            channel(2, "floor2_accel", ChannelKind::Acceleration, 2),
            channel(3, "floor3_accel", ChannelKind::Acceleration, 3),
            channel(4, "shaker_force", ChannelKind::Force, 1),
        ],
        floors: 3,
        ..Default::default()
    };
    let edge = Edge::connect(broker.port).await;
    edge.publish(RigTopic::Birth, birth.encode_to_vec()).await;
    for seq in 0..5u64 {
        let n = SAMPLES_PER_BLOCK;
        let block = SampleBlock {
            rig_id: RIG.into(),
            session: 1,
            seq,
            first_sample_index: seq * n,
            sample_period_ns: PERIOD_NS,
            first_timestamp_ns: T0_NS + seq * n * PERIOD_NS,
            channels: (1..=4)
                .map(|channel_id| ChannelSamples {
                    channel_id,
                    raw: (0..n as i32).map(|k| (k * 37 % 200) - 100).collect(),
                })
                .collect(),
            ..Default::default()
        };
        edge.publish(RigTopic::Samples, block.encode_to_vec()).await;
    }

    let expected_topic = topic::twin(&rig(), TwinTopic::StateJson);
    let state: TwinState = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                assert_eq!(p.topic, expected_topic);
                return serde_json::from_slice(&p.payload).expect("a JSON TwinState");
            }
        }
    })
    .await
    .expect("no twin state published");
    assert_eq!(state.rig_id, RIG);
    assert_eq!(state.sample_index % SAMPLES_PER_BLOCK, 0);
    assert_eq!(state.timestamp_ns, T0_NS + state.sample_index * PERIOD_NS);
    assert_eq!(
        state.floors.iter().map(|f| f.floor).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        state
            .floors
            .iter()
            .all(|f| f.displacement_m.is_finite() && f.velocity_m_s.is_finite())
    );
    assert_eq!(state.controller, "off");
    wait(&mut handle, "the rig's estimator in the stats", |s| {
        rig_stats(s).estimating
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_set_control_command_and_publishes_drives() {
    use dtop_proto::v1::command_ack::Status;
    use dtop_proto::v1::{
        ActuatorDrive, ActuatorLimits, Command, CommandAck, SetControl, command::Kind,
        set_control::Law,
    };
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::File(FileStorageConfig {
        dir: dir.path().join("lines"),
        precision: Precision::Us,
    });
    let mut config = config(broker.port, storage);
    config.control.enabled = true;
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(config, shutdown.clone());
    wait(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;

    let mut options = MqttOptions::new("test-operator", "127.0.0.1", broker.port);
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    let (operator, mut events) = AsyncClient::new(options, 16);
    for kind in [RigTopic::CmdAck, RigTopic::Drive] {
        operator
            .subscribe(topic::rig(&rig(), kind), QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    tokio::time::timeout(WAIT, async {
        let mut acks = 0;
        while acks < 2 {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                acks += 1;
            }
        }
    })
    .await
    .expect("no SUBACK");

    let channel = |id: u32, kind: ChannelKind, floor: u32| Channel {
        id,
        name: format!("c{id}"),
        kind: kind as i32,
        unit: String::new(),
        scale: 0.001,
        offset: 0.0,
        sample_rate_hz: 1000.0,
        floor,
        stream_id: 0,
    };
    let birth = RigBirth {
        rig_id: RIG.into(),
        session: 1,
        channels: vec![
            channel(1, ChannelKind::Acceleration, 1),
            channel(2, ChannelKind::Acceleration, 2),
            channel(3, ChannelKind::Acceleration, 3),
            channel(4, ChannelKind::Force, 1),
        ],
        floors: 3,
        actuator: Some(ActuatorLimits {
            floor: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    let edge = Edge::connect(broker.port).await;
    edge.publish(RigTopic::Birth, birth.encode_to_vec()).await;
    let block = |seq: u64| {
        let n = SAMPLES_PER_BLOCK;
        SampleBlock {
            rig_id: RIG.into(),
            session: 1,
            seq,
            first_sample_index: seq * n,
            sample_period_ns: PERIOD_NS,
            first_timestamp_ns: T0_NS + seq * n * PERIOD_NS,
            channels: (1..=4)
                .map(|channel_id| ChannelSamples {
                    channel_id,
                    raw: (0..n as i32).map(|k| (k * 37 % 200) - 100).collect(),
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    edge.publish(RigTopic::Samples, block(0)).await;
    wait(&mut handle, "the rig's estimator", |s| {
        s.rigs
            .get(&rig())
            .is_some_and(|r| r.estimating && r.blocks_received >= 1)
    })
    .await;

    let command = Command {
        id: "cmd-1".into(),
        deadline_ns: 0,
        target_rig: RIG.into(),
        issued_by: "test".into(),
        kind: Some(Kind::SetControl(SetControl {
            law: Law::Dvf as i32,
            gain_n_s_per_m: 5.0,
            ..SetControl::default()
        })),
    };
    edge.publish(RigTopic::Cmd, command.encode_to_vec()).await;
    let ack_topic = topic::rig(&rig(), RigTopic::CmdAck);
    let ack: CommandAck = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap()
                && p.topic == ack_topic
            {
                return CommandAck::decode(p.payload).unwrap();
            }
        }
    })
    .await
    .expect("no command ack");
    assert_eq!(ack.command_id, "cmd-1");
    assert_eq!(ack.status(), Status::Applied, "{}", ack.reason);
    assert_eq!(ack.applied_at_sample_index, SAMPLES_PER_BLOCK);

    edge.publish(RigTopic::Samples, block(1)).await;
    let drive_topic = topic::rig(&rig(), RigTopic::Drive);
    let drive: ActuatorDrive = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap()
                && p.topic == drive_topic
            {
                return ActuatorDrive::decode(p.payload).unwrap();
            }
        }
    })
    .await
    .expect("no drive");
    assert_eq!(drive.rig_id, RIG);
    assert_eq!(drive.sample_index, 2 * SAMPLES_PER_BLOCK - 1);
    assert!(drive.force_n.is_finite());
    assert!(drive.controller_version > 0);

    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Issue 14 item 5: a rig following a catalogue model adopts its latest usable version from
/// the retained `dtop/v1/models/{name}/latest`, refuses a proposed one, and its status says
/// which version it runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rig_following_a_catalogue_model_adopts_its_usable_version_and_says_so() {
    use dtop_dynamics::ShearBuildingConfig;
    use dtop_twin::adopt::{ModelInUse, RefusalReason};
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::File(FileStorageConfig {
        dir: dir.path().join("lines"),
        precision: Precision::Us,
    });
    let mut config = config(broker.port, storage);
    config.model.follow = Some("lab".into());
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(config, shutdown.clone());
    wait(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;

    // The API server's side: the latest usable version, retained (here a stiffer building).
    let mut options = MqttOptions::new("test-api-server", "127.0.0.1", broker.port);
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    let (server, mut server_events) = AsyncClient::new(options, 16);
    let server_task = tokio::spawn(async move { while server_events.poll().await.is_ok() {} });
    let mut building = ShearBuildingConfig::southampton();
    building.storey_stiffness_n_per_m[1] *= 0.9;
    let version = |version: u32, status: &str| {
        serde_json::to_vec(&json!({
            "name": "lab",
            "version": version,
            "spec": {"description": "updated", "structure": building, "sensors": []},
            "provenance": {"kind": "study"},
            "created_by": "test",
            "created_at": "2026-12-06T21:00:00Z",
            "status": status,
        }))
        .unwrap()
    };
    let model_topic = "dtop/v1/models/lab/latest";
    server
        .publish(model_topic, QoS::AtLeastOnce, true, version(3, "proposed"))
        .await
        .unwrap();
    wait(&mut handle, "the proposed version refused", |s| {
        s.model_messages_refused_total
            .get(&RefusalReason::NotUsable)
            == Some(&1)
    })
    .await;
    server
        .publish(model_topic, QoS::AtLeastOnce, true, version(2, "approved"))
        .await
        .unwrap();

    let edge = Edge::connect(broker.port).await;
    edge.publish(RigTopic::Birth, birth(1)).await;
    for seq in 0..3 {
        edge.publish(RigTopic::Samples, block(1, seq)).await;
    }
    let stats = wait(&mut handle, "the rig on lab@2", |s| {
        matches!(
            &rig_stats(s).adoption.model,
            ModelInUse::Catalogue { name, version: 2, .. } if name == "lab"
        )
    })
    .await;
    assert_eq!(rig_stats(&stats).adoption.follows.as_deref(), Some("lab"));
    let status = retained_json(broker.port, &topic::twin(&rig(), TwinTopic::Status), |v| {
        v["model"]["version"] == 2
    })
    .await;
    assert_eq!(status["model"]["source"], "catalogue");
    assert_eq!(status["model_follows"], "lab");

    // Clear the retained model so later tests on this broker start clean.
    server
        .publish(model_topic, QoS::AtLeastOnce, true, Vec::new())
        .await
        .unwrap();
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server_task.abort();
}

async fn next_watermark(
    watermarks: &mut tokio::sync::mpsc::UnboundedReceiver<dtop_proto::v1::PersistedWatermark>,
    what: &str,
) -> dtop_proto::v1::PersistedWatermark {
    tokio::time::timeout(WAIT, watermarks.recv())
        .await
        .unwrap_or_else(|_| panic!("no watermark: {what}"))
        .unwrap()
}

/// Under a lease coordinator (issue 16): the twin stamps its owner epoch on the rig's
/// watermark, publishes it again at once when the epoch changes, and publishes none for a rig
/// it lost, whose blocks it leaves to the owner (dropped and counted); owning it again, it
/// stores what the edge replays above its watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_carry_the_owner_epoch_and_stop_while_the_rig_is_lost() {
    use dtop_proto::v1::PersistedWatermark;
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageConfig::File(FileStorageConfig {
        dir: dir.path().join("lines"),
        precision: Precision::Us,
    });
    // Every watermark the twin publishes, in order.
    let mut options = MqttOptions::new("test-watermark-reader", "127.0.0.1", broker.port);
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    let (reader, mut reader_events) = AsyncClient::new(options, 16);
    reader
        .subscribe(topic::rig(&rig(), RigTopic::Persisted), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (watermarks_tx, mut watermarks) = tokio::sync::mpsc::unbounded_channel();
    let reader_task = tokio::spawn(async move {
        while let Ok(event) = reader_events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = watermarks_tx.send(PersistedWatermark::decode(p.payload).unwrap());
            }
        }
    });

    let (owners, owners_rx) = dtop_twin::owners_channel();
    owners.own(rig(), 3).unwrap();
    let shutdown = CancellationToken::new();
    let (stats_tx, mut handle) = dtop_twin::stats_channel();
    let twin = tokio::spawn(dtop_twin::run_with_owners(
        config(broker.port, storage),
        shutdown.clone(),
        stats_tx,
        owners_rx,
    ));
    wait(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    let edge = Edge::connect(broker.port).await;
    edge.publish(RigTopic::Birth, birth(1)).await;
    for seq in 0..3 {
        edge.publish(RigTopic::Samples, block(1, seq)).await;
    }
    let w = loop {
        let w = next_watermark(&mut watermarks, "epoch 3's").await;
        if w.seq == 2 {
            break w;
        }
    };
    assert_eq!(w.owner_epoch, 3);

    // Lost: the blocks are left to the owner, counted, and no watermark goes out.
    owners.lose(rig());
    for seq in 3..6 {
        edge.publish(RigTopic::Samples, block(1, seq)).await;
    }
    let s = wait(&mut handle, "the lost rig's blocks to be dropped", |s| {
        s.rigs
            .get(&rig())
            .is_some_and(|r| r.blocks_not_owned == 3 && !r.owned)
    })
    .await;
    assert_eq!(s.rigs[&rig()].owner_epoch, 3);
    // Several publish intervals (100 ms) for a watermark that must not come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(watermarks.try_recv().is_err(), "a lost rig got a watermark");
    assert_eq!(
        handle
            .stats()
            .store
            .rigs
            .get(&rig())
            .and_then(|r| r.persisted_seq),
        Some(2),
        "nothing of the lost rig was stored"
    );

    // Owned again at a newer epoch: the watermark goes out at once, stamped with it; the
    // edge (adopting the epoch) replays the blocks above it, which are stored now.
    owners.own(rig(), 5).unwrap();
    let w = next_watermark(&mut watermarks, "epoch 5's").await;
    assert_eq!((w.seq, w.owner_epoch), (2, 5));
    for seq in 3..6 {
        edge.publish(RigTopic::Samples, frames::block(RIG, 1, seq, true))
            .await;
    }
    let w = loop {
        let w = next_watermark(&mut watermarks, "epoch 5's after the replay").await;
        if w.seq == 5 {
            break w;
        }
    };
    assert_eq!(w.owner_epoch, 5);

    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    reader_task.abort();
}
