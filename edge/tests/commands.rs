//! Operator commands end to end through the real I/O: `Command`s published on a real Mosquitto,
//! `dtop_edge::run` on one end of a socat pty pair, a fake firmware on the other. Checks that a
//! command above the limits is refused with the reason, an expired one is answered EXPIRED, a
//! repeated id is applied once (also across an edge restart), and a safety stop is LATCHED, cuts
//! the force, refuses drives until a reset, and how long it took to reach the firmware.
//!
//! Needs `socat` and `mosquitto`. Without them the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

use std::time::{Duration, Instant};

use dtop_firmware::{ActuatorCommand, Samples};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::{Command, CommandAck, SafetyReset, SafetyStop, SetAcquisition, SetDrive};
use dtop_proto::{Message, RigId};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::common;
use common::{
    Broker, Edge, PtyPair, actuator_edge_config, fake_firmware, slow_actuator_manifest, tools,
};

const WAIT: Duration = Duration::from_secs(15);

/// The operator: publishes commands, collects acks.
struct Operator {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<CommandAck>,
    rig: RigId,
}

impl Operator {
    async fn connect(port: u16, rig: &RigId) -> Self {
        let options = MqttOptions::new(
            format!("operator-{}", std::process::id()),
            "127.0.0.1",
            port,
        );
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        eventloop.network_options.set_tcp_nodelay(true);
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(ack) = CommandAck::decode(p.payload) {
                            let _ = acks_tx.send(ack);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client
            .subscribe(topic::rig(rig, RigTopic::CmdAck), QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        timeout(WAIT, subscribed_rx)
            .await
            .unwrap_or_else(|_| panic!("no SUBACK for the operator"))
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            client,
            acks,
            rig: rig.clone(),
        }
    }

    async fn send(&mut self, id: &str, kind: Kind, deadline_ns: u64) -> CommandAck {
        let command = Command {
            id: id.into(),
            deadline_ns,
            target_rig: self.rig.to_string(),
            issued_by: "test-operator".into(),
            kind: Some(kind),
        };
        self.client
            .publish(
                topic::rig(&self.rig, RigTopic::Cmd),
                QoS::AtLeastOnce,
                false,
                command.encode_to_vec(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        loop {
            let ack = timeout(WAIT, self.acks.recv())
                .await
                .unwrap_or_else(|_| panic!("no ack for command {id}"))
                .unwrap_or_else(|| panic!("operator connection ended"));
            if ack.command_id == id {
                return ack;
            }
        }
    }
}

/// The next command other than a periodic repeat of `last`.
async fn next_change(
    commands: &mut mpsc::UnboundedReceiver<ActuatorCommand>,
    last: (bool, f32),
) -> ActuatorCommand {
    loop {
        let c = timeout(WAIT, commands.recv())
            .await
            .unwrap_or_else(|_| panic!("no actuator command"))
            .unwrap_or_else(|| panic!("the fake firmware ended"));
        if (c.enable, c.force_n) != last {
            return c;
        }
    }
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_applied_once_refused_with_reasons_and_a_safety_stop_latches() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let rig =
        RigId::new(format!("commands-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let pty = PtyPair::new(&socat, dir.path(), "pty");
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    let (samples_tx, samples_rx) = mpsc::unbounded_channel();
    tokio::spawn(fake_firmware(
        pty.b.clone(),
        slow_actuator_manifest(),
        samples_rx,
        commands_tx,
    ));
    let config = actuator_edge_config(&rig, dir.path(), &pty.a, broker.port, 10);
    let edge = Edge::start(config.clone());
    let mut operator = Operator::connect(broker.port, &rig).await;
    edge.wait("the subscriptions", |s| {
        s.drive_subscribed && s.firmware_online
    })
    .await;
    // One frame starts the envelope's clock.
    let frame = |first: u64| Samples::new(first, 1, vec![0; 2]).unwrap_or_else(|e| panic!("{e:?}"));
    samples_tx
        .send(frame(0))
        .unwrap_or_else(|_| panic!("firmware gone"));
    edge.wait("the first frame", |s| s.samples_in_total == 2)
        .await;

    // Above the limit (the firmware's 10 N is tighter than the config's 20 N): refused, why.
    let ack = operator
        .send("too-much", Kind::SetDrive(SetDrive { force_n: 15.0 }), 0)
        .await;
    assert_eq!(ack.status(), Status::Refused);
    assert!(
        ack.reason.contains("exceeds the actuator limit of 10 N"),
        "{}",
        ack.reason
    );
    // Past its deadline: expired, not applied.
    let ack = operator
        .send(
            "late",
            Kind::SetDrive(SetDrive { force_n: 1.0 }),
            unix_now_ns() - 1_000_000_000,
        )
        .await;
    assert_eq!(ack.status(), Status::Expired, "{ack:?}");

    // Applied at the next sample; the first step is the 2 N slew budget.
    let hold = operator
        .send("hold-1", Kind::SetDrive(SetDrive { force_n: 3.0 }), 0)
        .await;
    assert_eq!(hold.status(), Status::Applied, "{hold:?}");
    assert_eq!(hold.applied_at_sample_index, 2);
    let c = next_change(&mut commands, (false, 0.0)).await;
    assert_eq!((c.enable, c.force_n), (true, 2.0));
    // The same id again: the first answer, and nothing applied twice.
    let again = operator
        .send("hold-1", Kind::SetDrive(SetDrive { force_n: 9.0 }), 0)
        .await;
    assert_eq!(again, hold);
    let s = edge
        .wait("the counters", |s| s.commands_applied_total == 1)
        .await;
    assert_eq!((s.commands_refused_total, s.commands_expired_total), (1, 1));

    // Safety stop: latched, the force cut at once (no slew limit), drives refused until reset.
    let sent_at = Instant::now();
    let (stop, (c, latency)) = tokio::join!(
        operator.send("stop-1", Kind::SafetyStop(SafetyStop {}), 0),
        async {
            let c = next_change(&mut commands, (true, 2.0)).await;
            (c, sent_at.elapsed())
        }
    );
    assert_eq!(stop.status(), Status::Latched);
    assert_eq!((c.enable, c.force_n), (false, 0.0));
    println!("safety stop: command published → ActuatorCommand at the firmware in {latency:?}");
    let refused = operator
        .send("after-stop", Kind::SetDrive(SetDrive { force_n: 1.0 }), 0)
        .await;
    assert_eq!(refused.status(), Status::Refused);
    assert!(refused.reason.contains("latched"), "{}", refused.reason);
    let reset = operator
        .send("reset-1", Kind::SafetyReset(SafetyReset {}), 0)
        .await;
    assert_eq!(reset.status(), Status::Applied);

    // Acquisition parameters: applied by the acquisition task at a block boundary.
    let ack = operator
        .send(
            "blocks-2",
            Kind::SetAcquisition(SetAcquisition { block_samples: 2 }),
            0,
        )
        .await;
    assert_eq!(ack.status(), Status::Applied, "{ack:?}");
    let ack = operator
        .send(
            "blocks-0",
            Kind::SetAcquisition(SetAcquisition { block_samples: 0 }),
            0,
        )
        .await;
    assert_eq!(ack.status(), Status::Refused, "{ack:?}");
    assert!(ack.reason.contains("at least 1"), "{}", ack.reason);

    // A restarted edge still knows every id it decided.
    edge.stop().await;
    let edge = Edge::start(config);
    edge.wait("the subscriptions again", |s| {
        s.drive_subscribed && s.firmware_online
    })
    .await;
    let replayed = operator
        .send("hold-1", Kind::SetDrive(SetDrive { force_n: 3.0 }), 0)
        .await;
    assert_eq!(
        replayed, hold,
        "a restart must not re-apply a decided command"
    );
    let s = edge.wait("the restarted counters", |s| s.session > 0).await;
    assert_eq!(
        s.commands_applied_total, 0,
        "nothing applied after the restart"
    );
    edge.stop().await;
}
