//! Fencing by owner epoch end to end through the real I/O (ARCHITECTURE.md, "Owner epochs and
//! fencing"): controller params, drives and persisted watermarks published on a real Mosquitto
//! with owner epochs, `dtop_edge::run` on one end of a socat pty pair, a fake firmware on the
//! other. Checks that an older owner's params are refused with the reason while the current
//! owner's loop runs on, that an older owner's watermark releases no spooled block, that a new
//! owner gets every block not yet confirmed replayed at once, and that the epoch survives an
//! edge restart.
//!
//! Needs `socat` and `mosquitto`. Without them the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

use std::time::Duration;

use dtop_firmware::Samples;
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::{ActuatorDrive, CommandAck, ControllerParams, PersistedWatermark};
use dtop_proto::{Message, RigId};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::common;
use common::{
    Broker, Edge, PtyPair, actuator_edge_config, fake_firmware, slow_actuator_manifest, tools,
};

const WAIT: Duration = Duration::from_secs(15);
/// Samples per block: small, so a few frames make the blocks the watermarks release.
const BLOCK_SAMPLES: u32 = 2;

/// The twins' side: one client publishing for any epoch, and the acks the edge answers with.
struct Twins {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<CommandAck>,
    rig: RigId,
}

impl Twins {
    async fn connect(port: u16, rig: &RigId) -> Self {
        let (client, acks) = common::subscribe_decoded(
            port,
            format!("twins-{rig}"),
            vec![topic::rig(rig, RigTopic::CmdAck)],
            |_, payload| CommandAck::decode(payload).ok(),
        )
        .await;
        Self {
            client,
            acks,
            rig: rig.clone(),
        }
    }

    async fn publish(&self, kind: RigTopic, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(
                topic::rig(&self.rig, kind),
                QoS::AtLeastOnce,
                retain,
                payload,
            )
            .await
            .unwrap_or_else(|e| panic!("publishing on {kind:?}: {e}"));
    }

    /// A pass-through law of zero gain on the one accelerometer: runs, drives 0 N.
    async fn params(&self, version: u64, owner_epoch: u64) {
        let params = ControllerParams {
            rig_id: self.rig.to_string(),
            version,
            enabled: true,
            description: format!("zero gain, epoch {owner_epoch}"),
            sample_period_s: 1.0 / slow_actuator_manifest().sample_rate_hz(),
            input_channel_ids: vec![0],
            state_count: 0,
            d: vec![0.0],
            owner_epoch,
            ..ControllerParams::default()
        };
        self.publish(RigTopic::Controller, false, params.encode_to_vec())
            .await;
    }

    async fn watermark(&self, seq: u64, owner_epoch: u64) {
        let w = PersistedWatermark {
            rig_id: self.rig.to_string(),
            seq,
            timestamp_ns: 0,
            owner_epoch,
        };
        self.publish(RigTopic::Persisted, true, w.encode_to_vec())
            .await;
    }

    /// The edge's answer to params `version`, skipping acks of others. Accepted params start
    /// at the next sample, so `firmware` sends one every so often until the answer comes.
    async fn ack_of(&mut self, version: u64, firmware: &mut Firmware) -> CommandAck {
        let id = format!("controller/{version}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match timeout(Duration::from_millis(300), self.acks.recv()).await {
                Ok(Some(ack)) if ack.command_id == id => return ack,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the ack subscriber ended"),
                Err(_) => firmware.sample(1),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {id}"
            );
        }
    }
}

/// The fake firmware's sample stream: one channel at 1 Hz, so the envelope's wall-clock
/// guards never fire however slowly the test runs.
struct Firmware {
    samples_tx: mpsc::UnboundedSender<Samples>,
    next_index: u64,
}

impl Firmware {
    /// Sends the next `n` samples, one frame each.
    fn sample(&mut self, n: u64) {
        for _ in 0..n {
            let i = self.next_index;
            let frame = Samples::new(i, 1, vec![i as i32]).unwrap_or_else(|e| panic!("{e:?}"));
            self.samples_tx
                .send(frame)
                .unwrap_or_else(|_| panic!("the fake firmware is gone"));
            self.next_index += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_owner_is_fenced_off_and_the_epoch_survives_a_restart() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let rig = RigId::new(format!("fence-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let pty = PtyPair::new(&socat, dir.path(), "pty");
    let (commands_tx, _commands) = mpsc::unbounded_channel();
    let (samples_tx, samples_rx) = mpsc::unbounded_channel();
    tokio::spawn(fake_firmware(
        pty.b.clone(),
        slow_actuator_manifest(),
        samples_rx,
        commands_tx,
    ));
    let mut config = actuator_edge_config(&rig, dir.path(), &pty.a, broker.port, 10);
    config.acquisition.block_samples = BLOCK_SAMPLES;
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    let mut twins = Twins::connect(broker.port, &rig).await;
    let mut firmware = Firmware {
        samples_tx,
        next_index: 0,
    };

    let edge = Edge::start(config.clone());
    let s = edge.wait("the subscriptions", |s| s.drive_subscribed).await;
    assert_eq!(s.owner_epoch, 0);

    // The owner at epoch 2: adopted (persisted first), its params run.
    twins.params(10, 2).await;
    let ack = twins.ack_of(10, &mut firmware).await;
    assert_eq!(ack.status(), Status::Applied, "{}", ack.reason);
    edge.wait("epoch 2 and its loop", |s| {
        s.owner_epoch == 2 && s.inner_loop_running && s.inner_loop_version == 10
    })
    .await;
    let persisted =
        std::fs::read_to_string(config.owner_epoch_path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(persisted.trim(), "2");

    // The owner at epoch 1 (lost the rig): refused with the reason; epoch 2's loop runs on.
    twins.params(11, 1).await;
    let ack = twins.ack_of(11, &mut firmware).await;
    assert_eq!(ack.status(), Status::Refused);
    assert!(
        ack.reason.contains("owner epoch 1") && ack.reason.contains("owner epoch 2"),
        "{}",
        ack.reason
    );
    // A twin without a coordinator: refused too, once a coordinator's epoch was seen.
    twins.params(12, 0).await;
    let ack = twins.ack_of(12, &mut firmware).await;
    assert_eq!(ack.status(), Status::Refused);
    assert!(
        ack.reason.contains("without a lease coordinator"),
        "{}",
        ack.reason
    );
    // Epoch 1's drive: counted, not passed on.
    let drive = ActuatorDrive {
        rig_id: rig.to_string(),
        sample_index: 2,
        force_n: 5.0,
        controller_version: 11,
        owner_epoch: 1,
    };
    twins
        .publish(RigTopic::Drive, false, drive.encode_to_vec())
        .await;
    firmware.sample(2 * u64::from(BLOCK_SAMPLES));
    let s = edge
        .wait("the fenced params and drive counted", |s| {
            s.fenced_by_kind.get("params") == Some(&2) && s.fenced_by_kind.get("drive") == Some(&1)
        })
        .await;
    assert!(s.inner_loop_running);
    assert_eq!(s.inner_loop_version, 10);
    assert_eq!(
        s.inner_loop_params_refused_total, 0,
        "never reached the loop"
    );

    // Watermarks: epoch 1's releases nothing, epoch 2's releases what it covers.
    firmware.sample(2 * u64::from(BLOCK_SAMPLES));
    let s = edge
        .wait("every block made spooled and acknowledged", |s| {
            s.blocks_made_total >= 3
                && s.blocks_published_total == s.blocks_made_total
                && s.backlog_blocks as u64 == s.blocks_made_total
        })
        .await;
    let spooled = s.backlog_blocks;
    twins.watermark(1, 1).await;
    let s = edge
        .wait("the fenced watermark counted", |s| {
            s.fenced_by_kind.get("watermark") == Some(&1)
        })
        .await;
    assert_eq!(s.persisted_seq, None);
    assert_eq!(s.backlog_blocks, spooled);
    assert_eq!(s.samples_stored_total, 0);
    twins.watermark(1, 2).await;
    let s = edge
        .wait("epoch 2's watermark to release blocks 0 and 1", |s| {
            s.persisted_seq == Some(1)
        })
        .await;
    assert_eq!(s.backlog_blocks, spooled - 2);
    assert_eq!(s.samples_stored_total, 2 * u64::from(BLOCK_SAMPLES));
    // Adopting epoch 2 (with the first params) replayed what was spooled then; count from here.
    let replayed_before = s.blocks_replayed_total;

    // A new owner (epoch 3, the previous one died holding what it had not persisted): every
    // block its watermark does not cover is replayed to it at once, long before the stall
    // replay (10 s after the last progress).
    let unconfirmed = s.backlog_blocks as u64;
    twins.watermark(1, 3).await;
    let asked = std::time::Instant::now();
    let s = edge
        .wait("epoch 3 and the replay of every unconfirmed block", |s| {
            s.owner_epoch == 3 && s.blocks_replayed_total >= replayed_before + unconfirmed
        })
        .await;
    assert_eq!(s.blocks_replayed_total - replayed_before, unconfirmed);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the replay took {:?}, as long as the stall replay",
        asked.elapsed()
    );
    edge.stop().await;

    // A restarted edge still fences the older owners off.
    let edge = Edge::start(config);
    edge.wait("the subscriptions again", |s| s.drive_subscribed)
        .await;
    assert_eq!(edge.stats().owner_epoch, 3);
    twins.params(13, 2).await;
    let ack = twins.ack_of(13, &mut firmware).await;
    assert_eq!(ack.status(), Status::Refused);
    assert!(ack.reason.contains("owner epoch 3"), "{}", ack.reason);
    // The current owner still gets through.
    twins.params(14, 3).await;
    let ack = twins.ack_of(14, &mut firmware).await;
    assert_eq!(ack.status(), Status::Applied, "{}", ack.reason);
    edge.stop().await;
}
