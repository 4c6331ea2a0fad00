//! The drive path end to end through the real I/O: `ActuatorDrive`s published on a real
//! Mosquitto, `dtop_edge::run` on one end of a socat pty pair, and a fake firmware on the other
//! end checking which `ActuatorCommand`s arrive. The fake firmware's sample frames are the
//! envelope's clock, so every expected force is exact.
//!
//! Needs `socat` and `mosquitto`. Without them the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

use std::path::Path;
use std::time::Duration;

use dtop_edge::EdgeStats;
use dtop_edge::safety::{LatchCause, SafetyState};
use dtop_firmware::{ActuatorCommand, Samples};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::{ActuatorDrive, Command, SafetyReset};
use dtop_proto::{Message, RigId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);
/// Samples per frame the fake firmware sends: two periods of the envelope's clock.
const FRAME_SAMPLES: u64 = 2;
/// `actuator.drive_timeout_periods` in this test.
const TIMEOUT_PERIODS: u64 = 10;

use crate::common;
use common::{Broker, PtyPair, actuator_edge_config, fake_firmware, slow_actuator_manifest, tools};

// ---------------------------------------------------------------------------------------------
// The fake firmware: answers Hello with a manifest, sends the frames the test hands it, and
// acknowledges actuator commands as PROTOCOL.md §7.4 says.

// ---------------------------------------------------------------------------------------------
// The twin's side: a plain MQTT client publishing drives.

/// Connected (CONNACK seen) client for publishing drives.
async fn drive_publisher(port: u16, rig: &RigId) -> AsyncClient {
    let options = MqttOptions::new(format!("drive-pub-{rig}"), "127.0.0.1", port);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    timeout(WAIT, connected_rx)
        .await
        .unwrap_or_else(|_| panic!("no CONNACK for the drive publisher"))
        .unwrap_or_else(|e| panic!("{e}"));
    client
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Bench {
    _pty: PtyPair,
    rig: RigId,
    shutdown: CancellationToken,
    edge: tokio::task::JoinHandle<Result<(), dtop_edge::EdgeError>>,
    stats: watch::Receiver<EdgeStats>,
    samples_tx: mpsc::UnboundedSender<Samples>,
    commands: mpsc::UnboundedReceiver<ActuatorCommand>,
    publisher: AsyncClient,
    /// First sample index of the next frame.
    next_index: u64,
    /// The last command seen, to check that seq numbers run without gaps.
    last: Option<ActuatorCommand>,
}

impl Bench {
    /// `name` keeps the rig id (and so the MQTT client ids) apart from the other tests in this
    /// process: tests run in parallel against one broker.
    async fn start(socat: &Path, dir: &Path, mqtt_port: u16, name: &str) -> Self {
        let rig =
            RigId::new(format!("{name}-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
        let pty = PtyPair::new(socat, dir, "pty");
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (samples_tx, samples_rx) = mpsc::unbounded_channel();
        tokio::spawn(fake_firmware(
            pty.b.clone(),
            slow_actuator_manifest(),
            samples_rx,
            commands_tx,
        ));
        let config = actuator_edge_config(&rig, dir, &pty.a, mqtt_port, TIMEOUT_PERIODS);
        let (stats_tx, stats) = watch::channel(EdgeStats::default());
        let shutdown = CancellationToken::new();
        let edge = tokio::spawn(dtop_edge::run_with_stats(
            config,
            shutdown.clone(),
            stats_tx,
        ));
        let publisher = drive_publisher(mqtt_port, &rig).await;
        Self {
            _pty: pty,
            rig,
            shutdown,
            edge,
            stats,
            samples_tx,
            commands,
            publisher,
            next_index: 0,
            last: None,
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

    async fn publish_raw(&self, payload: Vec<u8>) {
        self.publisher
            .publish(
                topic::rig(&self.rig, RigTopic::Drive),
                QoS::AtMostOnce,
                false,
                payload,
            )
            .await
            .unwrap_or_else(|e| panic!("publishing a drive: {e}"));
    }

    async fn publish_drive(&self, force_n: f64) {
        let drive = ActuatorDrive {
            rig_id: self.rig.to_string(),
            sample_index: self.next_index,
            force_n,
            controller_version: 1,
            owner_epoch: 0,
        };
        self.publish_raw(drive.encode_to_vec()).await;
    }

    /// Publishes an operator command.
    async fn command(&self, id: &str, kind: Kind) {
        let command = Command {
            id: id.into(),
            deadline_ns: 0,
            target_rig: self.rig.to_string(),
            issued_by: "test".into(),
            kind: Some(kind),
        };
        self.publisher
            .publish(
                topic::rig(&self.rig, RigTopic::Cmd),
                QoS::AtLeastOnce,
                false,
                command.encode_to_vec(),
            )
            .await
            .unwrap_or_else(|e| panic!("publishing a command: {e}"));
    }

    /// Sends the next frame of [`FRAME_SAMPLES`] samples: that many periods of the envelope's
    /// clock.
    fn send_frame(&mut self) {
        let first = self.next_index;
        let frame = Samples::new(first, 1, vec![0; FRAME_SAMPLES as usize])
            .unwrap_or_else(|e| panic!("{e:?}"));
        self.next_index += FRAME_SAMPLES;
        self.samples_tx
            .send(frame)
            .unwrap_or_else(|_| panic!("the fake firmware is gone"));
    }

    async fn wait_frames_in(&self) {
        let n = self.next_index;
        self.wait_stats("the edge to take the frames", |s| s.samples_in_total == n)
            .await;
    }

    /// Waits for the command `(enable, force_n)`. Before it only repeats of the previous command
    /// may arrive: the edge re-sends an unchanged force every 200 ms while enabled, which a slow
    /// test run can see. Anything else fails, and so does a gap in seq numbers.
    async fn expect(&mut self, what: &str, want: (bool, f32)) -> ActuatorCommand {
        loop {
            let c = timeout(WAIT, self.commands.recv())
                .await
                .unwrap_or_else(|_| panic!("no actuator command for {what}"))
                .unwrap_or_else(|| panic!("the fake firmware ended before {what}"));
            if let Some(last) = self.last {
                assert_eq!(c.seq, last.seq.wrapping_add(1), "seq gap before {c:?}");
            }
            let previous = self.last.map(|l| (l.enable, l.force_n));
            self.last = Some(c);
            let got = (c.enable, c.force_n);
            if got == want {
                return c;
            }
            assert_eq!(
                Some(got),
                previous,
                "{what}: expected {want:?} (or a repeat of {previous:?})"
            );
        }
    }

    /// Cancels, waits for a clean exit, and checks the shutdown command comes straight after the
    /// last one seen (nothing in between) and is the safe state.
    async fn stop(mut self) -> EdgeStats {
        self.shutdown.cancel();
        timeout(WAIT, &mut self.edge)
            .await
            .unwrap_or_else(|_| panic!("edge did not stop"))
            .unwrap_or_else(|e| panic!("edge panicked: {e}"))
            .unwrap_or_else(|e| panic!("edge failed: {e}"));
        let last = self.last;
        let command = timeout(WAIT, self.commands.recv())
            .await
            .unwrap_or_else(|_| panic!("no actuator command at shutdown"))
            .unwrap_or_else(|| panic!("firmware ended without an actuator command"));
        assert_eq!(
            (command.enable, command.force_n),
            (false, 0.0),
            "{command:?} is not the safe state"
        );
        if let Some(last) = last {
            assert_eq!(
                command.seq,
                last.seq.wrapping_add(1),
                "commands were sent after the last expected one"
            );
        }
        self.stats.borrow().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_reach_the_firmware_clamped_and_slew_limited_and_time_out_to_the_safe_state() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let mut bench = Bench::start(&socat, dir.path(), broker.port, "actuator").await;
    bench
        .wait_stats("the drive subscription", |s| {
            s.drive_subscribed && s.firmware_online
        })
        .await;

    // Garbage and another rig's drive are counted and ignored.
    bench.publish_raw(vec![0xff, 0xff, 0xff, 0x01]).await;
    let foreign = ActuatorDrive {
        rig_id: "some-other-rig".into(),
        sample_index: 0,
        force_n: 1.0,
        controller_version: 1,
        owner_epoch: 0,
    };
    bench.publish_raw(foreign.encode_to_vec()).await;
    bench
        .wait_stats("two bad drives", |s| s.drives_bad_total == 2)
        .await;

    // Samples start the envelope's clock; a NaN drive is refused and commands nothing.
    bench.send_frame();
    bench.wait_frames_in().await;
    bench.publish_drive(f64::NAN).await;
    bench
        .wait_stats("the NaN drive refused", |s| s.drives_refused_total == 1)
        .await;

    // 50 N is cut to the firmware's 10 N, and the slew limit allows 2 N per period.
    bench.publish_drive(50.0).await;
    let first = bench.expect("the first drive", (true, 2.0)).await;
    assert_eq!(first.seq, 1, "nothing was commanded before the first drive");
    bench.send_frame();
    bench.expect("frame 1", (true, 6.0)).await;
    bench.send_frame();
    bench.expect("frame 2", (true, 10.0)).await;

    // The last period's slew budget is spent, so the new drive changes nothing until the next.
    let second_drive_at = bench.next_index;
    bench.publish_drive(-3.0).await;
    bench.expect("the second drive", (true, 10.0)).await;
    // Periods since the second drive: 2, 4, 6, 8; then frame 7 holds the 10th, which starts the
    // ramp to 0 N.
    assert_eq!(second_drive_at + TIMEOUT_PERIODS, 8 * FRAME_SAMPLES);
    for (k, force_n) in [(3, 6.0), (4, 2.0), (5, -2.0), (6, -3.0), (7, -1.0)] {
        bench.send_frame();
        bench.expect(&format!("frame {k}"), (true, force_n)).await;
    }
    let s = bench
        .wait_stats("the timeout", |s| s.drive_timeouts_total == 1)
        .await;
    assert_eq!(s.safety_state, SafetyState::SafeTimeout);
    bench.send_frame();
    bench.expect("frame 8", (false, 0.0)).await;

    // Disabled: further samples command nothing (checked by `stop` through the seq numbers).
    bench.send_frame();
    bench.wait_frames_in().await;
    let s = bench
        .wait_stats("the safe state", |s| !s.actuator_enabled)
        .await;
    assert_eq!(s.safety_state, SafetyState::SafeTimeout);
    assert_eq!(s.last_applied_force_n, 0.0);
    assert_eq!(
        (
            s.drives_received_total,
            s.drives_bad_total,
            s.drives_dropped_total,
            s.drives_applied_total,
            s.drives_refused_total,
        ),
        (5, 2, 0, 2, 1)
    );

    let s = bench.stop().await;
    assert!(!s.actuator_enabled);
    assert!(!s.drive_subscribed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firmware_restart_while_driving_leaves_the_actuator_off_until_a_safety_reset() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let mut bench = Bench::start(&socat, dir.path(), broker.port, "fw-restart").await;
    bench
        .wait_stats("the drive subscription", |s| {
            s.drive_subscribed && s.firmware_online
        })
        .await;
    bench.send_frame();
    bench.wait_frames_in().await;
    bench.publish_drive(4.0).await;
    bench.expect("the drive", (true, 2.0)).await;
    bench.send_frame();
    bench.expect("the ramp", (true, 4.0)).await;

    // The firmware restarts: its sample index starts again from 0. The actuator goes off at
    // once, latched, and the status says why.
    bench.next_index = 0;
    bench.send_frame();
    bench
        .expect("the safe state at the restart", (false, 0.0))
        .await;
    let s = bench
        .wait_stats("the latch", |s| {
            s.latch_cause == Some(LatchCause::ClockLost)
        })
        .await;
    assert_eq!(s.safety_state, SafetyState::Latched);
    let in_before = bench
        .wait_stats("the manifest after the restart", |s| s.firmware_online)
        .await
        .samples_in_total;

    // Samples flow again and the twin keeps driving: nothing starts by itself.
    bench.send_frame();
    let refused_before = s.drives_refused_total;
    bench.publish_drive(4.0).await;
    bench
        .wait_stats("the drive refused", |s| {
            s.drives_refused_total > refused_before
        })
        .await;
    bench.send_frame();
    bench
        .wait_stats("the frames after the restart", |s| {
            s.samples_in_total >= in_before + 2 * FRAME_SAMPLES
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        bench.commands.try_recv().is_err(),
        "the actuator was commanded after the restart"
    );

    // An operator's SafetyReset releases it; the next drive ramps up from 0 N.
    bench
        .command("reset", Kind::SafetyReset(SafetyReset {}))
        .await;
    bench
        .wait_stats("the reset", |s| s.safety_state == SafetyState::Idle)
        .await;
    bench.send_frame();
    bench.publish_drive(4.0).await;
    bench.expect("the drive after the reset", (true, 2.0)).await;
    // Not `stop`: an enabled actuator is refreshed every 200 ms, so more commands may come.
    bench.shutdown.cancel();
    timeout(WAIT, &mut bench.edge)
        .await
        .unwrap_or_else(|_| panic!("edge did not stop"))
        .unwrap_or_else(|e| panic!("edge panicked: {e}"))
        .unwrap_or_else(|e| panic!("edge failed: {e}"));
    let s = bench.stats.borrow().clone();
    assert_eq!(
        (s.fault_latches_total, s.safety_state),
        (1, SafetyState::Disabled),
        "a shutdown disables the actuator; it is not a fault"
    );
}
