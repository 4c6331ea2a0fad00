//! Nothing lost through storage outages and twin crashes, against real InfluxDB 1.x and
//! Mosquitto: InfluxDB SIGKILLed and restarted while blocks keep arriving, and the twin (the
//! real binary) SIGKILLed and restarted with its spool. Each test ends by auditing every block
//! seq in InfluxDB against the range published, and checks that every persisted watermark the
//! twin published was already covered by InfluxDB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::frames;
use crate::support;

use std::path::Path;
use std::time::Duration;

use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::PersistedWatermark;
use dtop_proto::{Message, RigId};
use dtop_twin::config::{BackoffConfig, StorageSpoolConfig, TwinConfig};
use dtop_twin::store::audit::{self, HoleReport};
use frames::{SAMPLES_PER_BLOCK, birth, block, wait_stats};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{InfluxD, Mosquitto};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const DB: &str = "dtop";

/// Stands in for an edge: publishes births and blocks, and follows the rig's retained
/// `persisted` topic the way an edge does.
struct Edge {
    rig: RigId,
    client: AsyncClient,
    task: JoinHandle<()>,
    /// Every watermark received, in order.
    watermarks_rx: watch::Receiver<Vec<u64>>,
}

impl Edge {
    async fn connect(port: u16, rig: &str) -> Self {
        let rig = RigId::new(rig).unwrap();
        let mut options = MqttOptions::new(format!("edge-{rig}"), "127.0.0.1", port);
        options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (tx, watermarks_rx) = watch::channel(Vec::new());
        let persisted = topic::rig(&rig, RigTopic::Persisted);
        client
            .subscribe(persisted.clone(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == persisted => {
                        let w = PersistedWatermark::decode(&p.payload[..]).unwrap();
                        tx.send_modify(|v| v.push(w.seq));
                    }
                    Ok(_) => {}
                    Err(_) => sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self {
            rig,
            client,
            task,
            watermarks_rx,
        }
    }

    async fn birth(&self, session: u64) {
        self.client
            .publish(
                topic::rig(&self.rig, RigTopic::Birth),
                QoS::AtLeastOnce,
                true,
                birth(self.rig.as_str(), session),
            )
            .await
            .unwrap();
    }

    async fn block(&self, seq: u64, backfill: bool) {
        self.client
            .publish(
                topic::rig(&self.rig, RigTopic::Samples),
                QoS::AtLeastOnce,
                false,
                block(self.rig.as_str(), 1, seq, backfill),
            )
            .await
            .unwrap();
    }

    fn last_watermark(&self) -> Option<u64> {
        self.watermarks_rx.borrow().last().copied()
    }

    async fn wait_for_watermark(&mut self, at_least: u64) {
        let reached = tokio::time::timeout(
            WAIT,
            self.watermarks_rx
                .wait_for(|v| v.last().is_some_and(|&w| w >= at_least)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        assert!(
            reached,
            "no watermark >= {at_least}; got {:?}",
            self.watermarks_rx.borrow()
        );
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stored(influx: &InfluxD, rig: &str) -> Vec<u64> {
    audit::stored_seqs_v1(
        &influx.url,
        DB,
        &RigId::new(rig).unwrap(),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

async fn audit_range(influx: &InfluxD, rig: &str, last: u64) -> HoleReport {
    audit::holes(1..=last, &stored(influx, rig).await)
}

async fn sample_points(influx: &InfluxD, rig: &str) -> u64 {
    let rows = influx
        .rows(
            DB,
            &format!("SELECT count(floor1_accel) FROM dtop_samples WHERE rig = '{rig}'"),
        )
        .await;
    rows.first().map_or(0, |r| r["count"].as_u64().unwrap())
}

fn twin_config(mqtt_port: u16, influx: &InfluxD, spool_dir: &Path, client_id: &str) -> TwinConfig {
    TwinConfig {
        retry: BackoffConfig {
            initial_ms: 50,
            max_ms: 400,
        },
        spool: StorageSpoolConfig {
            dir: Some(spool_dir.to_owned()),
            memory_mib: 1,
            ..StorageSpoolConfig::default()
        },
        ..support::influx_twin_config(mqtt_port, influx, DB, client_id)
    }
}

/// Checks, for every watermark the edge receives, that InfluxDB already holds every block up
/// to it (retrying while InfluxDB is down: what it acknowledged before dying must be there
/// after its restart). Returns how many watermarks were checked.
fn check_watermarks_against_influx(
    mut watermarks_rx: watch::Receiver<Vec<u64>>,
    url: String,
    rig: &'static str,
    stop: CancellationToken,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut checked = 0;
        let mut last_checked = 0;
        let rig_id = RigId::new(rig).unwrap();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = watermarks_rx.changed() => if changed.is_err() { break },
            }
            let Some(w) = watermarks_rx.borrow_and_update().last().copied() else {
                continue;
            };
            if w <= last_checked {
                continue;
            }
            let deadline = Instant::now() + WAIT;
            let seqs = loop {
                match audit::stored_seqs_v1(&url, DB, &rig_id, Duration::from_secs(2)).await {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => sleep(Duration::from_millis(100)).await,
                    Err(e) => panic!("cannot audit watermark {w}: {e}"),
                }
            };
            let report = audit::holes(1..=w, &seqs);
            assert_eq!(
                report.missing, 0,
                "watermark {w} published before InfluxDB held {:?}",
                report.holes
            );
            last_checked = w;
            checked += 1;
        }
        checked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_down_then_back_every_block_ends_in_influxdb_exactly_once() {
    const RIG: &str = "outage-rig";
    const LAST: u64 = 400;
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let Some(mut influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database(DB).await;
    let spool_dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(
        twin_config(broker.port, &influx, spool_dir.path(), "twin-outage"),
        shutdown.clone(),
    );
    wait_stats(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    let mut edge = Edge::connect(broker.port, RIG).await;
    let stop_checker = CancellationToken::new();
    let checker = check_watermarks_against_influx(
        edge.watermarks_rx.clone(),
        influx.url.clone(),
        RIG,
        stop_checker.clone(),
    );
    edge.birth(1).await;

    // 10 blocks (1 s of rig time) every 100 ms: 10x real time.
    let mut seq = 0;
    let mut send = async |edge: &Edge, upto: u64| {
        while seq < upto {
            seq += 1;
            edge.block(seq, false).await;
            if seq % 10 == 0 {
                sleep(Duration::from_millis(100)).await;
            }
        }
    };
    send(&edge, 100).await;
    edge.wait_for_watermark(100).await;

    influx.kill();
    let watermark_at_kill = edge.last_watermark().unwrap();
    send(&edge, 250).await;
    let during = wait_stats(&mut handle, "batches in the disk spool", |s| {
        s.store.storage_failing && s.store.batches_spooled > 0
    })
    .await;
    let backlog_s = during.store.rigs[&RigId::new(RIG).unwrap()].backlog_s;
    assert!(backlog_s > 0.5, "backlog {backlog_s} s");
    // While InfluxDB is down the watermark cannot pass what it acknowledged.
    assert_eq!(edge.last_watermark().unwrap(), watermark_at_kill);

    influx.restart().await;
    send(&edge, LAST).await;
    edge.wait_for_watermark(LAST).await;

    let report = audit_range(&influx, RIG, LAST).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.outside, 0);
    assert_eq!(sample_points(&influx, RIG).await, LAST * SAMPLES_PER_BLOCK);

    let stats = wait_stats(&mut handle, "an empty backlog", |s| {
        s.store
            .rigs
            .get(&RigId::new(RIG).unwrap())
            .is_some_and(|r| r.backlog_s == 0.0 && r.persisted_seq == Some(LAST))
    })
    .await;
    let r = &stats.store.rigs[&RigId::new(RIG).unwrap()];
    assert!(r.blocks_dropped.is_empty(), "{:?}", r.blocks_dropped);
    assert!(r.blocks_stored >= LAST);
    assert_eq!(r.samples_stored, r.blocks_stored * SAMPLES_PER_BLOCK);
    assert!(stats.store.write_errors_total > 0);
    assert_eq!(stats.store.batches_spooled, 0);

    stop_checker.cancel();
    let checked = checker.await.unwrap();
    assert!(checked >= 2, "checked {checked} watermarks");
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The real `dtop-twin` binary, killed by PID on drop.
struct TwinProcess {
    child: tokio::process::Child,
}

impl TwinProcess {
    fn start(config_path: &Path, log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dtop-twin"))
            .arg("--config")
            .arg(config_path)
            .arg("--log")
            .arg("info,dtop_twin=debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(out.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { child }
    }

    async fn sigkill(&mut self) {
        // tokio's start_kill sends SIGKILL to this child's PID.
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

fn spooled_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_sigkilled_and_restarted_with_its_spool_loses_nothing_it_watermarked() {
    const RIG: &str = "crash-rig";
    const LAST: u64 = 300;
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let Some(mut influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database(DB).await;
    let work = tempfile::tempdir().unwrap();
    let spool_dir = work.path().join("spool");
    let config_path = work.path().join("twin.toml");
    let config = twin_config(broker.port, &influx, &spool_dir, "twin-crash");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let log = work.path().join("twin.log");
    let twin_log = || std::fs::read_to_string(work.path().join("twin.log")).unwrap_or_default();

    let mut twin = TwinProcess::start(&config_path, &log);
    let mut edge = Edge::connect(broker.port, RIG).await;
    // The twin subscribes after connecting; the retained birth reaches it whenever that is.
    edge.birth(1).await;
    let deadline = Instant::now() + WAIT;
    // Blocks published before the twin subscribed are gone (clean sessions): send until the
    // first watermark shows the twin is listening, then audit from there.
    let mut seq = 0;
    while edge.last_watermark().is_none() {
        assert!(
            Instant::now() < deadline,
            "twin never stored anything:\n{}",
            twin_log()
        );
        seq += 1;
        edge.block(seq, false).await;
        sleep(Duration::from_millis(20)).await;
    }
    let first_stored = *stored(&influx, RIG).await.iter().min().unwrap();
    for s in seq + 1..=100 {
        edge.block(s, false).await;
    }
    edge.wait_for_watermark(100).await;

    // InfluxDB goes away; the twin spools what keeps arriving, then dies mid-outage.
    influx.kill();
    for s in 101..=200 {
        edge.block(s, false).await;
        if s % 10 == 0 {
            sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + WAIT;
    while spooled_bytes(&spool_dir) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing spooled:\n{}",
            twin_log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(300)).await;
    twin.sigkill().await;
    let watermark_at_kill = edge.last_watermark().unwrap();
    assert!(watermark_at_kill >= 100);

    // Everything the edge was told is durable is in InfluxDB, before anyone re-sends a thing.
    influx.restart().await;
    let report = audit_range(&influx, RIG, watermark_at_kill).await;
    let holes_below = audit::holes(
        first_stored..=watermark_at_kill,
        &stored(&influx, RIG).await,
    );
    assert!(
        holes_below.is_complete(),
        "{holes_below:?} (full: {report:?})"
    );

    // The restarted twin replays its spool and continues its watermark from its state file.
    let mut twin = TwinProcess::start(&config_path, &log);
    let deadline = Instant::now() + WAIT;
    while spooled_bytes(&spool_dir) > 0 {
        assert!(
            Instant::now() < deadline,
            "spool never drained:\n{}",
            twin_log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    // The edge's side of the contract: re-send, as backfill, every block above the last
    // watermark it got (the twin may have lost what it held in memory), then carry on live.
    let resend_from = edge.last_watermark().unwrap() + 1;
    for s in resend_from..=200 {
        edge.block(s, true).await;
    }
    for s in 201..=LAST {
        edge.block(s, false).await;
        if s % 10 == 0 {
            sleep(Duration::from_millis(10)).await;
        }
    }
    edge.wait_for_watermark(LAST).await;
    let report = audit::holes(first_stored..=LAST, &stored(&influx, RIG).await);
    assert!(report.is_complete(), "{report:?}\n{}", twin_log());
    // Watermarks never went backwards across the crash.
    let seen = edge.watermarks_rx.borrow().clone();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    twin.sigkill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_twin_without_state_continues_from_its_retained_watermark() {
    const RIG: &str = "retained-rig";
    let Some(broker) = Mosquitto::start_if_installed().await else {
        return;
    };
    let Some(influx) = InfluxD::start_if_installed().await else {
        return;
    };
    influx.create_database(DB).await;
    let no_spool = |client_id: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = twin_config(broker.port, &influx, dir.path(), client_id);
        c.spool = StorageSpoolConfig::default();
        c
    };
    let rig = RigId::new(RIG).unwrap();
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(no_spool("twin-a"), shutdown.clone());
    wait_stats(&mut handle, "the MQTT connection", |s| s.mqtt_connected).await;
    let mut edge = Edge::connect(broker.port, RIG).await;
    edge.birth(1).await;
    // Wait until the twin listens (it reports the rig once the birth arrived).
    wait_stats(&mut handle, "the rig's birth", |s| {
        s.rigs.contains_key(&rig)
    })
    .await;
    for s in 1..=50 {
        edge.block(s, false).await;
    }
    edge.wait_for_watermark(50).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // A new twin with no state file: it learns 50 from the broker, not from the blocks.
    let shutdown = CancellationToken::new();
    let (mut handle, twin) = dtop_twin::spawn(no_spool("twin-b"), shutdown.clone());
    wait_stats(&mut handle, "the retained watermark", |s| {
        s.store
            .rigs
            .get(&rig)
            .is_some_and(|r| r.persisted_seq == Some(50))
    })
    .await;
    // Blocks 51..=79 never reach this twin; 80..=100 do.
    for s in 80..=100 {
        edge.block(s, false).await;
    }
    let stats = wait_stats(&mut handle, "blocks 80..=100 stored", |s| {
        s.store
            .rigs
            .get(&rig)
            .is_some_and(|r| r.blocks_stored >= 21)
    })
    .await;
    // Storing 80..=100 proves nothing about 51..=79: the watermark stays.
    assert_eq!(stats.store.rigs[&rig].persisted_seq, Some(50));
    sleep(Duration::from_millis(300)).await;
    assert_eq!(edge.last_watermark(), Some(50));
    // The edge re-sends what the watermark does not cover; then it moves.
    for s in 51..=79 {
        edge.block(s, true).await;
    }
    edge.wait_for_watermark(100).await;
    let report = audit_range(&influx, RIG, 100).await;
    assert!(report.is_complete(), "{report:?}");
    shutdown.cancel();
    tokio::time::timeout(WAIT, twin)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
