//! The actuator behind Modbus: the whole edge with the rig simulator's pty (the sample clock)
//! and its Modbus TCP holding registers as the actuator output (`[modbus.actuator]`). An
//! operator's `SetDrive` passes the same safety envelope as with the firmware's serial
//! actuator and lands in the simulator's drive and enable registers; a safety stop clears
//! them. Read back by a third Modbus client (tokio-modbus) like any SCADA would.
//!
//! A pymodbus drive that dies while driving and comes back later stays off until an operator's
//! `SafetyReset` (IEC 60204-1, no unexpected start-up); status and metrics report what the drive
//! acknowledged, checked against its write log.
//!
//! Needs `mosquitto` (and pymodbus for the second test). Without them the tests say so and
//! pass, unless `CI` or `DTOP_REQUIRE_SERVICES=1` is set, in which case they fail.

use crate::common;
use crate::modbus_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dtop_edge::safety::{LatchCause, SafetyState};
use dtop_edge::{EdgeConfig, EdgeStats};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::excitation::Waveform;
use dtop_proto::v1::{Command, CommandAck, Excitation, SafetyReset, SafetyStop, SetDrive};
use dtop_proto::{Message, RigId};
use dtop_rig_sim::{ExcitationConfig, SimConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_modbus::prelude::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// The mosquitto binary; `None`, after saying the test is skipped, when it is missing and the
/// services are optional (a missing one fails the test when they are required).
fn find_mosquitto() -> Option<PathBuf> {
    let found = common::find_program("mosquitto");
    if found.is_none() {
        assert!(
            !common::services_required(),
            "mosquitto is required but missing"
        );
        eprintln!("SKIPPED: mosquitto is not installed");
    }
    found
}

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

/// Waits until the edge has its firmware online, its drive topic subscribed and samples coming
/// in: before then an operator's command could race the edge's own start-up.
async fn wait_edge_ready(stats: &watch::Receiver<EdgeStats>) {
    let mut watch_stats = stats.clone();
    timeout(
        WAIT,
        watch_stats.wait_for(|s| s.firmware_online && s.drive_subscribed && s.samples_in_total > 0),
    )
    .await
    .unwrap_or_else(|_| panic!("edge not ready: {:?}", *stats.borrow()))
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Publishes an operator's command `kind` to `rig` (QoS 1). The command is built before the
/// returned future, which borrows nothing, so a test's `send` closure can hand it straight back.
fn send_command(
    client: &AsyncClient,
    rig: &RigId,
    id: &str,
    kind: Kind,
) -> impl Future<Output = ()> + use<> {
    let command = Command {
        id: id.into(),
        deadline_ns: 0,
        target_rig: rig.to_string(),
        issued_by: "test".into(),
        kind: Some(kind),
    };
    let client = client.clone();
    let topic = topic::rig(rig, RigTopic::Cmd);
    async move {
        client
            .publish(topic, QoS::AtLeastOnce, false, command.encode_to_vec())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_drives_reach_the_modbus_actuator_through_the_safety_envelope() {
    let Some(mosquitto) = find_mosquitto() else {
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
    wait_edge_ready(&stats).await;

    let send = |id: &str, kind: Kind| send_command(&client, &rig, id, kind);
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

/// The writes a pymodbus drive acknowledged, from its log: (address, words).
fn write_log(path: &std::path::Path) -> Vec<Vec<u32>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').filter_map(|w| w.parse().ok()).collect())
        .collect()
}

/// (enable, force) of an acknowledged write of registers 0–2 (enable, f32 force ABCD).
fn setpoint_of(write: &[u32]) -> Option<(u32, f32)> {
    match write {
        [0, enable, hi, lo] => Some((*enable, f32::from_bits((hi << 16) | lo))),
        _ => None,
    }
}

/// The edge's retained status, once `ready` holds for it.
async fn wait_status(
    status: &mut watch::Receiver<serde_json::Value>,
    what: &str,
    ready: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let got = match timeout(WAIT, status.wait_for(ready)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("no status with {what}: {}", *status.borrow()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modbus_drive_back_after_an_outage_longer_than_the_drive_timeout_stays_off_until_a_safety_reset()
 {
    let Some(mosquitto) = find_mosquitto() else {
        return;
    };
    let Some(python) = modbus_support::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = common::Broker::start(&mosquitto, dir.path());
    let shutdown = CancellationToken::new();
    // The simulator is the sample clock (1 kHz: the 250-period drive timeout is 250 ms); the
    // drive is a separate pymodbus device, killed and restarted on the same port.
    let sim = dtop_rig_sim::start(
        SimConfig {
            speed: 1.0,
            excitation: ExcitationConfig::None,
            ..SimConfig::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("writes.log");
    let drive = modbus_support::PyPeer::actuator(&python, 0, &log).await;
    let drive_addr: SocketAddr = drive.address.parse().unwrap_or_else(|e| panic!("{e}"));
    let rig =
        RigId::new(format!("mb-restart-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
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
        drive_timeout_periods = 250

        [[modbus.devices]]
        name = "drive"
        tcp = {{ addr = "{drive_addr}", reconnect_backoff_min_ms = 20, reconnect_backoff_max_ms = 100 }}
        poll_period_ms = 0
        request_timeout_ms = 200
        [modbus.actuator]
        device = "drive"
        enable_address = 0
        force_address = 1
        force_data_type = "f32"
        "#,
        state = dir.path().join("state").display(),
        pty = sim.pty_path().display(),
        port = broker.port,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let (stats_tx, stats) = watch::channel(EdgeStats::default());
    let stop = CancellationToken::new();
    let edge = tokio::spawn(dtop_edge::run_with_stats(config, stop.clone(), stats_tx));

    // The operator: commands, their acks, and the retained status.
    let mut options = MqttOptions::new(format!("op-{rig}"), "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let (ack_topic, status_topic) = (
        topic::rig(&rig, RigTopic::CmdAck),
        topic::rig(&rig, RigTopic::Status),
    );
    for t in [&ack_topic, &status_topic] {
        client
            .subscribe(t.clone(), QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (acks_tx, mut acks) = mpsc::unbounded_channel();
    let (status_tx, mut status) = watch::channel(serde_json::Value::Null);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == status_topic => {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        status_tx.send_replace(v);
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
    wait_edge_ready(&stats).await;
    let send = |id: &str, kind: Kind| send_command(&client, &rig, id, kind);
    let wait_stats = |what: &'static str, ready: fn(&EdgeStats) -> bool| {
        let mut rx = stats.clone();
        async move {
            let got = match timeout(WAIT, rx.wait_for(ready)).await {
                Ok(Ok(s)) => Some(s.clone()),
                _ => None,
            };
            got.unwrap_or_else(|| panic!("timed out waiting for {what}: {:?}", *rx.borrow()))
        }
    };

    // Driving at 3.5 N: the drive acknowledged it, and status says so.
    send("drive", Kind::SetDrive(SetDrive { force_n: 3.5 })).await;
    assert_eq!(next_ack(&mut acks).await.status(), Status::Applied);
    let s = wait_stats("an acknowledged 3.5 N", |s| {
        s.actuator_enabled && s.last_applied_force_n == 3.5
    })
    .await;
    assert!(!s.actuator_write_failing);
    assert!(
        write_log(&log)
            .iter()
            .any(|w| setpoint_of(w) == Some((1, 3.5))),
        "{:?}",
        write_log(&log)
    );
    wait_status(&mut status, "the acknowledged drive", |v| {
        v["actuator_enabled"] == true && v["last_applied_force_n"] == 3.5
    })
    .await;

    // The drive dies. Its state is unknown: status says null, not the last force; and after
    // the drive timeout the envelope latches.
    drive.kill().await;
    let s = wait_stats("the link loss latched", |s| {
        s.latch_cause == Some(LatchCause::ActuatorLinkLost)
    })
    .await;
    assert_eq!(s.safety_state, SafetyState::Latched);
    assert!(s.actuator_write_failing);
    wait_status(&mut status, "an unknown actuator state", |v| {
        v["actuator_enabled"].is_null()
            && v["last_applied_force_n"].is_null()
            && v["latch_cause"] == "actuator_link_lost"
    })
    .await;
    let before_restart = write_log(&log).len();

    // It comes back a second after it died, on the same port: it gets the safe state only,
    // and stays off well past the 0.35 s in which it used to be re-enabled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let drive = modbus_support::PyPeer::actuator(&python, drive_addr.port(), &log).await;
    let s = wait_stats("the safe state acknowledged after the restart", |s| {
        s.modbus.get("drive").is_some_and(|d| d.connects_total >= 2) && !s.actuator_write_failing
    })
    .await;
    assert!(!s.actuator_enabled);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<_> = write_log(&log)[before_restart..].to_vec();
    assert!(!after.is_empty(), "nothing written after the restart");
    assert!(
        after.iter().all(|w| setpoint_of(w) == Some((0, 0.0))),
        "the restarted drive was driven: {after:?}"
    );
    assert_eq!(read_actuator(drive_addr).await, (0, 0.0));
    assert_eq!(stats.borrow().safety_state, SafetyState::Latched);
    wait_status(&mut status, "the reason in the status", |v| {
        v["safety_state"] == "latched"
            && v["latch_cause"] == "actuator_link_lost"
            && v["actuator_enabled"] == false
            && v["modbus"]["drive"]["actuator_link_losses_total"] == 1
    })
    .await;

    // Drives are refused until the operator resets the envelope; then it drives again.
    send("drive-latched", Kind::SetDrive(SetDrive { force_n: 2.0 })).await;
    let ack = next_ack(&mut acks).await;
    assert_eq!(ack.status(), Status::Refused, "{ack:?}");
    send("reset", Kind::SafetyReset(SafetyReset {})).await;
    assert_eq!(next_ack(&mut acks).await.status(), Status::Applied);
    send("drive-again", Kind::SetDrive(SetDrive { force_n: 2.0 })).await;
    assert_eq!(next_ack(&mut acks).await.status(), Status::Applied);
    wait_actuator(drive_addr, (1, 2.0)).await;
    wait_stats("an acknowledged 2 N", |s| {
        s.actuator_enabled && s.last_applied_force_n == 2.0 && s.latch_cause.is_none()
    })
    .await;

    // Stopped, the drive is left off; every write the edge counts as acknowledged is in the
    // drive's log (one more at most: a write it took just as it was killed, unanswered).
    stop.cancel();
    timeout(WAIT, edge)
        .await
        .unwrap_or_else(|_| panic!("edge did not stop"))
        .unwrap_or_else(|e| panic!("edge panicked: {e}"))
        .unwrap_or_else(|e| panic!("edge failed: {e}"));
    assert_eq!(read_actuator(drive_addr).await, (0, 0.0));
    let s = stats.borrow().clone();
    let d = s.modbus.get("drive").cloned().unwrap_or_default();
    let logged = write_log(&log).len() as u64;
    assert!(
        (d.actuator_writes_total..=d.actuator_writes_total + 1).contains(&logged),
        "{logged} writes logged, {} acknowledged",
        d.actuator_writes_total
    );
    assert!(d.actuator_write_failures_total > 0);
    assert_eq!(d.actuator_link_losses_total, 1);
    let text = dtop_edge::metrics::render("r", &s);
    for want in [
        format!(
            "dtop_edge_modbus_actuator_writes_total{{rig=\"r\",device=\"drive\",outcome=\"acknowledged\"}} {}\n",
            d.actuator_writes_total
        ),
        "dtop_edge_modbus_actuator_link_losses_total{rig=\"r\",device=\"drive\"} 1\n".into(),
        "dtop_edge_actuator_enabled{rig=\"r\"} 0\n".into(),
    ] {
        assert!(text.contains(&want), "{want}\n{text}");
    }
    drive.kill().await;
    shutdown.cancel();
    let _ = sim.join().await;
}
