//! The actuator behind Modbus: the whole edge with the rig simulator's pty (the sample clock)
//! and its Modbus TCP holding registers as the actuator output (`[modbus.actuator]`). An
//! operator's `SetDrive` passes the same safety envelope as with the firmware's serial
//! actuator and lands in the simulator's drive and enable registers; a safety stop clears
//! them. Read back by a third Modbus client (tokio-modbus) like any SCADA would.
//!
//! Needs `mosquitto`. Without it the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dtop_edge::{EdgeConfig, EdgeStats};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::excitation::Waveform;
use dtop_proto::v1::{Command, CommandAck, Excitation, SafetyStop, SetDrive};
use dtop_proto::{Message, RigId};
use dtop_rig_sim::{ExcitationConfig, SimConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_modbus::prelude::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Reads the simulator's holding registers 0..3: (enable, force as f32, high word first).
async fn read_actuator(addr: SocketAddr) -> (u16, f32) {
    let mut ctx = tcp::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
    let words = ctx
        .read_holding_registers(0, 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("exception {e:?}"));
    let force = f32::from_bits((u32::from(words[1]) << 16) | u32::from(words[2]));
    (words[0], force)
}

/// The next command acknowledgement.
async fn next_ack(acks: &mut mpsc::UnboundedReceiver<CommandAck>) -> CommandAck {
    timeout(WAIT, acks.recv())
        .await
        .unwrap_or_else(|_| panic!("no ack"))
        .unwrap_or_else(|| panic!("operator connection gone"))
}

async fn wait_actuator(addr: SocketAddr, want: (u16, f32)) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = read_actuator(addr).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "registers {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_drives_reach_the_modbus_actuator_through_the_safety_envelope() {
    let Some(mosquitto) = common::find_program("mosquitto") else {
        assert!(
            !common::services_required(),
            "mosquitto is required but missing"
        );
        eprintln!("SKIPPED: mosquitto is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = common::Broker::start(&mosquitto, dir.path());
    let shutdown = CancellationToken::new();
    let sim = dtop_rig_sim::start(
        SimConfig {
            speed: 1.0,
            modbus_listen: Some(([127, 0, 0, 1], 0).into()),
            excitation: ExcitationConfig::None,
            ..SimConfig::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let modbus = sim
        .modbus_addr()
        .unwrap_or_else(|| panic!("no Modbus address"));
    let rig =
        RigId::new(format!("mb-act-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));

    let config = EdgeConfig::from_toml(&format!(
        r#"
        rig_id = "{rig}"
        state_dir = "{state}"
        [serial]
        path = "{pty}"
        [mqtt]
        host = "127.0.0.1"
        port = {port}
        [actuator]
        max_force_n = 5.0
        max_slew_n_per_s = 2000.0

        [[modbus.devices]]
        name = "sim"
        tcp = {{ addr = "{modbus}" }}
        poll_period_ms = 0
        [modbus.actuator]
        device = "sim"
        enable_address = 0
        force_address = 1
        force_data_type = "f32"
        origin_address = 3
        [modbus.shaker]
        device = "sim"
        waveform_address = 7
        max_amplitude_n = 8.0
        "#,
        state = dir.path().join("state").display(),
        pty = sim.pty_path().display(),
        port = broker.port,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let (stats_tx, stats) = watch::channel(EdgeStats::default());
    let stop = CancellationToken::new();
    let edge = tokio::spawn(dtop_edge::run_with_stats(config, stop.clone(), stats_tx));

    // The operator.
    let mut options = MqttOptions::new(format!("op-{rig}"), "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    eventloop.network_options.set_tcp_nodelay(true);
    client
        .subscribe(topic::rig(&rig, RigTopic::CmdAck), QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (acks_tx, mut acks) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
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
    let mut watch_stats = stats.clone();
    timeout(
        WAIT,
        watch_stats.wait_for(|s| s.firmware_online && s.drive_subscribed && s.samples_in_total > 0),
    )
    .await
    .unwrap_or_else(|_| panic!("edge not ready: {:?}", *stats.borrow()))
    .unwrap_or_else(|e| panic!("{e}"));

    let send = |id: &str, kind: Kind| {
        let command = Command {
            id: id.into(),
            deadline_ns: 0,
            target_rig: rig.to_string(),
            issued_by: "test".into(),
            kind: Some(kind),
        };
        let client = client.clone();
        let topic = topic::rig(&rig, RigTopic::Cmd);
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, command.encode_to_vec())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    send("drive", Kind::SetDrive(SetDrive { force_n: 3.5 })).await;
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.status(), Status::Applied, "{ack:?}");
    // 2 N per 1 kHz period: 3.5 N within two samples, held (no drive timeout for an operator).
    wait_actuator(modbus, (1, 3.5)).await;
    // Past the simulator's 500 ms watchdog: the bus task keeps refreshing the setpoint.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(read_actuator(modbus).await, (1, 3.5));
    // The same request carried the sample the drive belongs to (registers 3–6).
    let mut ctx = tcp::connect(modbus).await.unwrap_or_else(|e| panic!("{e}"));
    let origin = ctx
        .read_holding_registers(3, 4)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("exception {e:?}"));
    let origin = origin
        .iter()
        .fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
    assert!(origin < 1_000_000, "origin sample index {origin}");

    // The shaker: a sine within the limit starts it, one above is refused with the reason.
    send(
        "shake",
        Kind::Excitation(Excitation {
            waveform: Waveform::Sine as i32,
            amplitude_n: 5.0,
            frequency_hz: 7.0,
            frequency_end_hz: 0.0,
        }),
    )
    .await;
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.status(), Status::Applied, "{ack:?}");
    let shaker = ctx
        .read_holding_registers(7, 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("exception {e:?}"));
    assert_eq!(shaker, [2, 0x40A0, 0], "sine at 5 N");
    send(
        "shake-hard",
        Kind::Excitation(Excitation {
            waveform: Waveform::Sine as i32,
            amplitude_n: 50.0,
            frequency_hz: 7.0,
            frequency_end_hz: 0.0,
        }),
    )
    .await;
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.status(), Status::Refused, "{ack:?}");
    assert!(ack.reason.contains("max_amplitude_n"), "{}", ack.reason);

    send("stop", Kind::SafetyStop(SafetyStop {})).await;
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.status(), Status::Latched, "{ack:?}");
    wait_actuator(modbus, (0, 0.0)).await;

    stop.cancel();
    timeout(WAIT, edge)
        .await
        .unwrap_or_else(|_| panic!("edge did not stop"))
        .unwrap_or_else(|e| panic!("edge panicked: {e}"))
        .unwrap_or_else(|e| panic!("edge failed: {e}"));
    shutdown.cancel();
    let _ = sim.join().await;
}
