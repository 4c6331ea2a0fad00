//! End to end through the real I/O: a fake firmware on one end of a socat pty pair, `dtop_edge::run`
//! on the other, a real Mosquitto on loopback, and a rumqttc subscriber checking what arrives.
//!
//! Needs `socat` and `mosquitto`. Without them the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

use std::path::Path;
use std::time::Duration;

use dtop_edge::{EdgeConfig, EdgeStats};
use dtop_firmware::{ActuatorCommand, ChannelDesc, ChannelKind, Manifest, Samples};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::{ChannelSamples, ClockSync, RigBirth, RigDeath, SampleBlock};
use dtop_proto::{Message, RigId};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);
const PERIOD_NS: u64 = 1_000_000;
const CHANNELS: u8 = 4;

use crate::common;
use common::{Broker, PtyPair, fake_firmware, tools};

/// A TCP proxy in front of the broker that the test can cut (dropping every connection
/// abruptly and refusing new ones) and restore: a network outage between edge and broker,
/// while the subscriber stays connected to the broker directly.
struct Proxy {
    port: u16,
    open_tx: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the proxy: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let (open_tx, open_rx) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut downstream, _)) = listener.accept().await {
                if !*open_rx.borrow() {
                    continue;
                }
                let mut open_rx = open_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {}
                        _ = open_rx.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Self { port, open_tx }
    }

    fn cut(&self) {
        self.open_tx.send_replace(false);
    }

    fn restore(&self) {
        self.open_tx.send_replace(true);
    }
}

// ---------------------------------------------------------------------------------------------
// The fake firmware: answers Hello with a manifest, plays a script of sample frames, and
// acknowledges actuator commands as PROTOCOL.md §7.4 says.

fn manifest() -> Manifest {
    let channels = [
        ChannelDesc {
            id: 0,
            kind: ChannelKind::Acceleration,
            floor: 1,
            scale: 0.001,
        },
        ChannelDesc {
            id: 1,
            kind: ChannelKind::Acceleration,
            floor: 2,
            scale: 0.001,
        },
        ChannelDesc {
            id: 2,
            kind: ChannelKind::Acceleration,
            floor: 3,
            scale: 0.001,
        },
        ChannelDesc {
            id: 3,
            kind: ChannelKind::Force,
            floor: 3,
            scale: 0.01,
        },
    ];
    Manifest::new("fake-fw-0.1", 1_000_000, 3, 3, 10.0, &channels)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Raw count of channel `c` at sample `i`: distinct per sample and channel, signs mixed.
fn raw(i: u64, c: u8) -> i32 {
    (i as i32 * 7 - 1000) * (i32::from(c) + 1)
}

/// Frames of 50 samples covering `from..to`.
fn frames(from: u64, to: u64) -> Vec<Samples> {
    (from..to)
        .step_by(50)
        .map(|first| {
            let values = (first..(first + 50).min(to))
                .flat_map(|i| (0..CHANNELS).map(move |c| raw(i, c)))
                .collect();
            Samples::new(first, CHANNELS, values).unwrap_or_else(|e| panic!("{e:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The subscriber.

enum Seen {
    Birth(RigBirth),
    Block(SampleBlock),
    Death(RigDeath),
}

/// Subscribes to `rig`'s birth, samples and death, and waits for the SUBACKs.
async fn subscribe(port: u16, rig: &str) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let rig = RigId::new(rig).unwrap_or_else(|e| panic!("{e}"));
    let (birth, samples, death) = (
        topic::rig(&rig, RigTopic::Birth),
        topic::rig(&rig, RigTopic::Samples),
        topic::rig(&rig, RigTopic::Death),
    );
    let topics = vec![birth.clone(), samples.clone(), death.clone()];
    let client_id = format!("sub-{rig}-{}", std::process::id());
    common::subscribe_decoded(port, client_id, topics, move |t, payload| {
        if t == birth {
            Some(Seen::Birth(
                RigBirth::decode(payload).unwrap_or_else(|e| panic!("bad birth: {e}")),
            ))
        } else if t == samples {
            Some(Seen::Block(
                SampleBlock::decode(payload).unwrap_or_else(|e| panic!("bad block: {e}")),
            ))
        } else if t == death {
            Some(Seen::Death(
                RigDeath::decode(payload).unwrap_or_else(|e| panic!("bad death: {e}")),
            ))
        } else {
            None
        }
    })
    .await
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>, what: &str) -> Seen {
    common::next_decoded(rx, what).await
}

async fn next_birth(rx: &mut mpsc::UnboundedReceiver<Seen>) -> RigBirth {
    match next_seen(rx, "the birth").await {
        Seen::Birth(b) => b,
        Seen::Block(b) => panic!("block seq {} before the birth", b.seq),
        Seen::Death(d) => panic!("death {d:?} before the birth"),
    }
}

async fn next_block(rx: &mut mpsc::UnboundedReceiver<Seen>) -> SampleBlock {
    match next_seen(rx, "a block").await {
        Seen::Block(b) => b,
        Seen::Birth(b) => panic!("unexpected birth of session {}", b.session),
        Seen::Death(d) => panic!("unexpected death {d:?}"),
    }
}

async fn next_death(rx: &mut mpsc::UnboundedReceiver<Seen>) -> RigDeath {
    match next_seen(rx, "the death").await {
        Seen::Death(d) => d,
        Seen::Birth(b) => panic!("unexpected birth of session {}", b.session),
        Seen::Block(b) => panic!("unexpected block seq {}", b.seq),
    }
}

/// A rig id unique to this test process, so retained births on a shared broker from earlier
/// runs never reach these subscribers.
fn rig_name(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// What the edge must publish for samples `first..first + n`, given the block's timestamp.
fn expected_block(
    rig: &str,
    seq: u64,
    session: u64,
    first: u64,
    n: u64,
    first_timestamp_ns: u64,
) -> SampleBlock {
    SampleBlock {
        rig_id: rig.into(),
        session,
        seq,
        stream_id: 0,
        first_sample_index: first,
        sample_period_ns: PERIOD_NS,
        first_timestamp_ns,
        clock_sync: ClockSync::FreeRunning as i32,
        clock_uncertainty_us: 0,
        channels: (0..CHANNELS)
            .map(|c| ChannelSamples {
                channel_id: u32::from(c),
                raw: (first..first + n).map(|i| raw(i, c)).collect(),
            })
            .collect(),
        backfill: false,
        ..SampleBlock::default()
    }
}

fn edge_config(rig: &str, dir: &Path, serial: &Path, mqtt_port: u16) -> EdgeConfig {
    let config = EdgeConfig::from_toml(&format!(
        r#"
        rig_id = "{rig}"
        state_dir = "{state}"
        [serial]
        path = "{serial}"
        hello_timeout_ms = 1000
        read_timeout_ms = 10000
        [acquisition]
        block_samples = 100
        [mqtt]
        host = "127.0.0.1"
        port = {mqtt_port}
        keepalive_s = 5
        reconnect_backoff_min_ms = 50
        reconnect_backoff_max_ms = 500
        [actuator]
        max_force_n = 20.0
        max_slew_n_per_s = 2000.0
        "#,
        state = dir.join(format!("state-{rig}")).display(),
        serial = serial.display(),
    ))
    .unwrap_or_else(|e| panic!("test config: {e}"));
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    config
}

/// One edge running against a fresh pty pair and the fake firmware.
struct EdgeRun {
    _pty: PtyPair,
    shutdown: CancellationToken,
    edge: tokio::task::JoinHandle<Result<(), dtop_edge::EdgeError>>,
    stats: watch::Receiver<EdgeStats>,
    /// Sample frames for the firmware to send (after it has answered Hello).
    samples_tx: mpsc::UnboundedSender<Samples>,
    /// Actuator commands the firmware received.
    commands: mpsc::UnboundedReceiver<ActuatorCommand>,
}

fn start_edge(socat: &Path, dir: &Path, rig: &str, tag: &str, mqtt_port: u16) -> EdgeRun {
    start_edge_with(socat, dir, rig, tag, mqtt_port, |_| {})
}

/// [`start_edge`], with the test's changes to the config.
fn start_edge_with(
    socat: &Path,
    dir: &Path,
    rig: &str,
    tag: &str,
    mqtt_port: u16,
    change: impl FnOnce(&mut EdgeConfig),
) -> EdgeRun {
    let pty = PtyPair::new(socat, dir, tag);
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (samples_tx, samples_rx) = mpsc::unbounded_channel();
    tokio::spawn(fake_firmware(
        pty.b.clone(),
        manifest(),
        samples_rx,
        commands_tx,
    ));
    let mut config = edge_config(rig, dir, &pty.a, mqtt_port);
    change(&mut config);
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    let (stats_tx, stats) = watch::channel(EdgeStats::default());
    let shutdown = CancellationToken::new();
    let edge = tokio::spawn(dtop_edge::run_with_stats(
        config,
        shutdown.clone(),
        stats_tx,
    ));
    EdgeRun {
        _pty: pty,
        shutdown,
        edge,
        stats,
        samples_tx,
        commands,
    }
}

impl EdgeRun {
    fn send(&self, frames: Vec<Samples>) {
        for f in frames {
            self.samples_tx
                .send(f)
                .unwrap_or_else(|_| panic!("the fake firmware is gone"));
        }
    }

    async fn wait_stats(&self, what: &str, ready: impl FnMut(&EdgeStats) -> bool) -> EdgeStats {
        let mut stats = self.stats.clone();
        let waited = timeout(WAIT, stats.wait_for(ready))
            .await
            .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!(
                "timed out waiting for {what}; stats: {:?}",
                *self.stats.borrow()
            ),
        }
    }

    /// Cancels, waits for a clean exit, and checks the firmware was told to go safe.
    async fn stop(mut self) -> EdgeStats {
        self.shutdown.cancel();
        timeout(WAIT, &mut self.edge)
            .await
            .unwrap_or_else(|_| panic!("edge did not stop"))
            .unwrap_or_else(|e| panic!("edge panicked: {e}"))
            .unwrap_or_else(|e| panic!("edge failed: {e}"));
        let command = timeout(WAIT, self.commands.recv())
            .await
            .unwrap_or_else(|_| panic!("no actuator command at shutdown"))
            .unwrap_or_else(|| panic!("firmware ended without an actuator command"));
        assert!(
            !command.enable && command.force_n == 0.0,
            "{command:?} is not the safe state"
        );
        self.stats.borrow().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_birth_blocks_and_death_and_never_reuses_seq_or_session() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let rig = rig_name("pipeline");
    let (_subscriber, mut seen) = subscribe(broker.port, &rig).await;

    // Run 1: samples 0..350, then 50 samples lost, then 400..500.
    let run = start_edge(&socat, dir.path(), &rig, "run1", broker.port);
    run.send(frames(0, 350));
    run.send(frames(400, 500));

    let birth = next_birth(&mut seen).await;
    assert_eq!(birth.rig_id, rig);
    assert_eq!(birth.session, 1, "first connect with an empty state dir");
    assert_eq!(birth.firmware_version, "fake-fw-0.1");
    assert_eq!(birth.floors, 3);
    let names: Vec<&str> = birth.channels.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["floor1_accel", "floor2_accel", "floor3_accel", "force"]
    );
    assert_eq!(
        birth.actuator.as_ref().map(|a| (a.max_force_n, a.floor)),
        Some((10.0, 3))
    );

    let b0 = next_block(&mut seen).await;
    let t0 = b0.first_timestamp_ns;
    assert_eq!(
        t0 % PERIOD_NS,
        0,
        "the clock anchor falls on a sample period"
    );
    let now_ns = dtop_edge::acquisition::wall_clock_ns();
    assert!(
        t0 <= now_ns && now_ns - t0 < 60_000_000_000,
        "anchor {t0} is not near now {now_ns}"
    );
    assert_eq!(b0, expected_block(&rig, 0, 1, 0, 100, t0));
    assert_eq!(
        next_block(&mut seen).await,
        expected_block(&rig, 1, 1, 100, 100, t0 + 100 * PERIOD_NS)
    );
    assert_eq!(
        next_block(&mut seen).await,
        expected_block(&rig, 2, 1, 200, 100, t0 + 200 * PERIOD_NS)
    );
    // The gap closes 300..350 early; the next block starts at 400 on the same clock and
    // declares the 50 samples no block carries.
    assert_eq!(
        next_block(&mut seen).await,
        expected_block(&rig, 3, 1, 300, 50, t0 + 300 * PERIOD_NS)
    );
    let mut after_gap = expected_block(&rig, 4, 1, 400, 100, t0 + 400 * PERIOD_NS);
    after_gap.samples_lost_before = 50;
    after_gap.samples_lost_reason = dtop_proto::v1::SampleLossReason::NotDelivered as i32;
    assert_eq!(next_block(&mut seen).await, after_gap);

    let stats = run.stop().await;
    let death = next_death(&mut seen).await;
    assert_eq!(
        death,
        RigDeath {
            rig_id: rig.clone(),
            session: 1,
            reason: "shutdown".into()
        }
    );
    assert_eq!(stats.blocks_published_total, 5);
    assert_eq!(stats.samples_in_total, 450);
    assert_eq!(stats.samples_dropped_total, 0);
    assert!(!stats.mqtt_connected);

    // Run 2, same state dir, restarted firmware: the session and the seq carry on, and a
    // partial block is flushed at shutdown rather than lost.
    // No twin here, so no watermark released run 1's blocks: its spool sends them again as
    // backfill beside the live ones.
    let run = start_edge(&socat, dir.path(), &rig, "run2", broker.port);
    run.send(frames(0, 150));
    let birth = next_birth(&mut seen).await;
    assert_eq!(birth.session, 2);
    let mut resent = Vec::new();
    let block = loop {
        let b = next_block(&mut seen).await;
        if !b.backfill {
            break b;
        }
        resent.push(b.seq);
    };
    assert_eq!(
        block,
        expected_block(&rig, 5, 2, 0, 100, block.first_timestamp_ns)
    );
    run.wait_stats("all 150 samples in and run 1's blocks resent", |s| {
        s.samples_in_total == 150 && s.blocks_replayed_total == 5
    })
    .await;
    let stats = run.stop().await;
    let t0 = block.first_timestamp_ns;
    let last = loop {
        let b = next_block(&mut seen).await;
        if !b.backfill {
            break b;
        }
        resent.push(b.seq);
    };
    assert_eq!(
        last,
        expected_block(&rig, 6, 2, 100, 50, t0 + 100 * PERIOD_NS)
    );
    assert_eq!(resent, [0, 1, 2, 3, 4]);
    assert_eq!(next_death(&mut seen).await.session, 2);
    assert_eq!(stats.blocks_published_total, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_blocks_through_a_network_outage_and_resends_them_as_backfill() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let proxy = Proxy::start(broker.port).await;
    let rig = rig_name("outage");
    let (_subscriber, mut seen) = subscribe(broker.port, &rig).await;

    let run = start_edge(&socat, dir.path(), &rig, "outage", proxy.port);
    run.send(frames(0, 200));
    assert_eq!(next_birth(&mut seen).await.session, 1);
    let b0 = next_block(&mut seen).await;
    let t0 = b0.first_timestamp_ns;
    assert_eq!(b0, expected_block(&rig, 0, 1, 0, 100, t0));
    assert_eq!(
        next_block(&mut seen).await,
        expected_block(&rig, 1, 1, 100, 100, t0 + 100 * PERIOD_NS)
    );
    run.wait_stats("both blocks acknowledged", |s| {
        s.blocks_published_total == 2
    })
    .await;

    proxy.cut();
    // The broker sees the edge vanish and publishes its will.
    assert_eq!(
        next_death(&mut seen).await,
        RigDeath {
            rig_id: rig.clone(),
            session: 1,
            reason: String::new()
        }
    );
    run.wait_stats("the edge to notice the outage", |s| !s.mqtt_connected)
        .await;
    run.send(frames(200, 400));
    // No twin here, so no watermark: all four blocks stay in the spool.
    run.wait_stats("two more blocks spooled during the outage", |s| {
        s.backlog_blocks == 4
    })
    .await;
    proxy.restore();

    // Reconnect: a new session and its birth, then every block no watermark covers, oldest
    // first, flagged as backfill (a PUBACK alone does not release a block).
    let birth = next_birth(&mut seen).await;
    assert_eq!(birth.session, 2);
    for (seq, first) in [(0, 0), (1, 100), (2, 200), (3, 300)] {
        let mut expected = expected_block(&rig, seq, 2, first, 100, t0 + first * PERIOD_NS);
        expected.backfill = true;
        assert_eq!(next_block(&mut seen).await, expected);
    }
    // Live again: new blocks are not backfill.
    run.send(frames(400, 500));
    assert_eq!(
        next_block(&mut seen).await,
        expected_block(&rig, 4, 2, 400, 100, t0 + 400 * PERIOD_NS)
    );
    let stats = run.stop().await;
    assert_eq!(next_death(&mut seen).await.session, 2);
    assert_eq!(stats.blocks_published_total, 7);
    assert_eq!(stats.samples_dropped_total, 0);
    assert_eq!(stats.blocks_replayed_total, 4);
}

/// A twin holds a session's blocks until it has the session's birth. A NATS node that died
/// while storing the retained birth once left a twin holding them for ever (CI, session 12):
/// a stalled watermark now sends the birth again ahead of the backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watermark_sends_the_birth_again_ahead_of_the_backfill() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let rig = rig_name("stall-birth");
    let (_subscriber, mut seen) = subscribe(broker.port, &rig).await;

    let run = start_edge_with(&socat, dir.path(), &rig, "stall-birth", broker.port, |c| {
        c.spool.stall_s = 1.0;
    });
    run.send(frames(0, 200));
    let birth = next_birth(&mut seen).await;
    assert_eq!(birth.session, 1);
    assert_eq!(next_block(&mut seen).await.seq, 0);
    assert_eq!(next_block(&mut seen).await.seq, 1);
    // No twin, so no watermark: after stall_s the same birth, then both blocks again.
    let again = next_birth(&mut seen).await;
    assert_eq!(again.session, 1);
    assert_eq!(again.channels, birth.channels);
    assert_eq!(again.oldest_unconfirmed_seq, Some(0));
    for seq in [0, 1] {
        let b = next_block(&mut seen).await;
        assert_eq!((b.seq, b.session, b.backfill), (seq, 1, true));
    }
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_blocks_until_the_persisted_watermark_covers_them_and_resends_the_rest_after_a_restart()
 {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let rig = rig_name("watermark");
    let (client, mut seen) = subscribe(broker.port, &rig).await;

    let run = start_edge(&socat, dir.path(), &rig, "watermark-1", broker.port);
    run.send(frames(0, 300));
    assert_eq!(next_birth(&mut seen).await.session, 1);
    for seq in 0..3 {
        assert_eq!(next_block(&mut seen).await.seq, seq);
    }
    let stats = run
        .wait_stats("three blocks acknowledged by the broker", |s| {
            s.blocks_published_total == 3
        })
        .await;
    // A PUBACK does not release a block.
    assert_eq!(stats.backlog_blocks, 3);
    assert_eq!(stats.samples_stored_total, 0);

    let rig_id = RigId::new(&rig).unwrap_or_else(|e| panic!("{e}"));
    let watermark = dtop_proto::v1::PersistedWatermark {
        rig_id: rig.clone(),
        seq: 1,
        timestamp_ns: 0,
        owner_epoch: 0,
    };
    client
        .publish(
            topic::rig(&rig_id, RigTopic::Persisted),
            QoS::AtLeastOnce,
            true,
            watermark.encode_to_vec(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stats = run
        .wait_stats("the watermark to release blocks 0 and 1", |s| {
            s.backlog_blocks == 1
        })
        .await;
    assert_eq!(stats.persisted_seq, Some(1));
    assert_eq!(stats.samples_stored_total, 200);
    assert!((stats.backlog_s - 0.1).abs() < 1e-9, "{}", stats.backlog_s);
    run.stop().await;
    assert_eq!(next_death(&mut seen).await.session, 1);

    // The next start sends what no watermark covered, and only that, as backfill.
    let run = start_edge(&socat, dir.path(), &rig, "watermark-2", broker.port);
    assert_eq!(next_birth(&mut seen).await.session, 2);
    let resent = next_block(&mut seen).await;
    assert_eq!((resent.seq, resent.session, resent.backfill), (2, 2, true));
    let stats = run
        .wait_stats("the resent block acknowledged", |s| {
            s.blocks_replayed_total == 1 && s.blocks_published_total == 1
        })
        .await;
    assert_eq!(stats.backlog_blocks, 1);
    run.stop().await;
}
