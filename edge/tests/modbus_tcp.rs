//! Modbus TCP against real peers: the rig simulator's register map (polled into SampleBlocks by
//! the real acquisition task, and its actuator driven through holding registers), and pymodbus
//! (every data type and order, a refused register and values out of range beside good ones, a
//! server that freezes or dies).

use crate::modbus_support;

use std::time::Duration;

use dtop_edge::EdgeStats;
use dtop_edge::acquisition::Acquisition;
use dtop_edge::modbus::config::ModbusConfig;
use dtop_edge::modbus::{
    ActuatorChannels, ModbusSetpoint, PolledSample, overflow_warnings, polled_streams, spawn_buses,
};
use dtop_edge::publisher::PublisherEvent;
use dtop_edge::stats::StatsHandle;
use dtop_firmware::Frame;
use dtop_firmware::codec::FirmwareCodec;
use dtop_proto::RigId;
use dtop_proto::v1::SampleBlock;
use dtop_rig_sim::{ExcitationConfig, SimConfig};
use futures::{SinkExt, StreamExt};
use modbus_support::{PyPeer, device, python, wait_stats};
use tokio::sync::{mpsc, watch};
use tokio_modbus::client::Reader;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

fn parse(text: &str) -> ModbusConfig {
    let config: ModbusConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut problems = Vec::new();
    config.validate_into(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    config
}

fn stats() -> (StatsHandle, watch::Receiver<EdgeStats>) {
    let (tx, rx) = watch::channel(EdgeStats::default());
    (StatsHandle::new(tx), rx)
}

/// Next block from the acquisition task, within 10 s.
async fn next_block(rx: &mut mpsc::Receiver<PublisherEvent>) -> SampleBlock {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no block within 10 s"))
            .unwrap_or_else(|| panic!("acquisition stopped"));
        if let PublisherEvent::Block(block) = event {
            return block;
        }
    }
}

/// Says `Hello` on the simulator's pty (its ADC starts then) and keeps reading it.
fn start_firmware_link(pty: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let port = tokio_serial::new(pty.to_string_lossy(), 921_600)
            .open_native_async()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut framed = Framed::new(port, FirmwareCodec::new());
        framed
            .send(Frame::Hello)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        while let Some(Ok(_)) = framed.next().await {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_the_rig_simulator_into_blocks_and_drives_its_actuator() {
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
    let addr = sim
        .modbus_addr()
        .unwrap_or_else(|| panic!("no Modbus address"));
    let _link = start_firmware_link(sim.pty_path().to_owned());

    // MODBUS.md: input 0–1 floor-1 acceleration (f32), 8–11 sample count (u64, MSW first, so
    // 10–11 are its low 32 bits); holding 0 enable, 1–2 force (f32).
    let config = parse(&format!(
        r#"
        [[devices]]
        name = "sim"
        tcp = {{ addr = "{addr}" }}
        poll_period_ms = 20
        request_timeout_ms = 500
        [[devices.registers]]
        channel = "sim_floor1_accel"
        table = "input"
        address = 0
        data_type = "f32"
        resolution = 1e-6
        unit = "m/s^2"
        kind = "acceleration"
        floor = 1
        [[devices.registers]]
        channel = "sim_samples"
        table = "input"
        address = 10
        data_type = "u32"
        [[devices.registers]]
        channel = "sim_enable"
        table = "holding"
        address = 0
        [[devices.registers]]
        channel = "sim_force"
        table = "holding"
        address = 1
        data_type = "f32"
        resolution = 0.001
        unit = "N"
        kind = "force"

        [actuator]
        device = "sim"
        enable_address = 0
        force_address = 1
        "#
    ));
    let streams = polled_streams(&config);
    let (stats, mut stats_rx) = stats();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rig = RigId::new("mb-sim").unwrap_or_else(|e| panic!("{e}"));
    let (serial_tx, serial_rx) = mpsc::channel(4);
    let (publisher_tx, mut publisher_rx) = mpsc::channel(64);
    let (polled_tx, polled_rx) = mpsc::channel::<PolledSample>(256);
    // Stream 0 has no firmware here; the polled stream shares the rig-wide seq from 40.
    let acquisition = Acquisition::new(
        rig.clone(),
        100,
        40,
        dir.path().join("next_seq"),
        publisher_tx,
        stats.clone(),
        CancellationToken::new(),
    )
    .with_polled(&rig, 5, &streams, polled_rx);
    let acquisition_task = tokio::spawn(acquisition.run(serial_rx));
    let (setpoint_tx, setpoint_rx) = watch::channel(ModbusSetpoint::SAFE);
    let cancel = CancellationToken::new();
    let buses = spawn_buses(
        &config,
        polled_tx,
        Some(ActuatorChannels {
            setpoint_rx,
            link_tx: watch::channel(Default::default()).0,
        }),
        cancel.clone(),
        stats.clone(),
    );
    assert_eq!(buses.len(), 1, "one device, one connection");

    // A poll missed on a loaded machine closes its block early (the bus task counts the
    // miss), so the layout is checked on the first full block; the seqs start at 40 anyway.
    let mut seqs = Vec::new();
    let first = loop {
        let b = next_block(&mut publisher_rx).await;
        seqs.push(b.seq);
        if b.channels[0].raw.len() == 5 || seqs.len() == 20 {
            break b;
        }
    };
    assert_eq!(seqs, (40..40 + seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(first.stream_id, 1);
    assert_eq!(first.sample_period_ns, 20_000_000);
    assert_eq!(first.first_timestamp_ns % 20_000_000, 0, "on the poll grid");
    let ids: Vec<_> = first.channels.iter().map(|c| c.channel_id).collect();
    assert_eq!(ids, [256, 257, 258, 259]);
    assert_eq!(first.channels[0].raw.len(), 5);
    // The simulator's sample counter moves between polls (1 kHz, polled every 20 ms).
    let counts = &first.channels[1].raw;
    assert!(counts.windows(2).all(|w| w[1] >= w[0]), "{counts:?}");
    let second = next_block(&mut publisher_rx).await;
    assert_eq!(second.seq, first.seq + 1);
    assert!(
        second.channels[1].raw.last() > counts.first(),
        "counter stuck"
    );
    assert!(second.first_sample_index > first.first_sample_index);

    // Drive: enable at 3.5 N; the holding registers read back what was written.
    setpoint_tx.send_replace(ModbusSetpoint {
        enable: true,
        force_n: 3.5,
        origin_sample_index: ModbusSetpoint::NO_ORIGIN,
        link_timeout: Duration::from_secs(1),
        link_losses_seen_n: 0,
    });
    let enabled = loop {
        let b = next_block(&mut publisher_rx).await;
        if b.channels[2].raw.last() == Some(&1) {
            break b;
        }
    };
    assert_eq!(
        enabled.channels[3].raw.last(),
        Some(&3500),
        "3.5 N in mN steps"
    );
    let s = wait_stats(&mut stats_rx, "an enabled actuator", |s| {
        device(s, "sim").actuator_enabled
    })
    .await;
    assert_eq!(device(&s, "sim").actuator_force_n, 3.5);

    // Over a second later (twice the simulator's 500 ms watchdog) it is still enabled: the
    // refresh keeps it fed.
    let start = tokio::time::Instant::now();
    let mut last = enabled;
    while start.elapsed() < Duration::from_millis(1_200) {
        last = next_block(&mut publisher_rx).await;
    }
    assert_eq!(last.channels[2].raw, [1; 5], "the watchdog tripped");

    // Shutdown leaves the actuator disabled at 0 N.
    cancel.cancel();
    for b in buses {
        tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .unwrap_or_else(|_| panic!("bus task did not stop"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut ctx = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_modbus::client::tcp::connect(addr),
    )
    .await
    .unwrap_or_else(|_| panic!("connect timed out"))
    .unwrap_or_else(|e| panic!("{e}"));
    let holding = tokio::time::timeout(Duration::from_secs(5), ctx.read_holding_registers(0, 3))
        .await
        .unwrap_or_else(|_| panic!("read timed out"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(holding, [0, 0, 0]);
    let s = stats.snapshot();
    let d = device(&s, "sim");
    assert_eq!((d.timeouts_total, d.exceptions_total), (0, 0), "{d:#?}");
    assert!(d.samples_total >= 60, "{d:#?}");
    assert_eq!(d.connects_total, 1);

    drop(serial_tx);
    let _ = acquisition_task.await;
    shutdown.cancel();
    let _ = sim.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decodes_every_type_and_order_from_pymodbus_and_counts_exceptions_per_register() {
    let Some(python) = python() else { return };
    let peer = PyPeer::tcp(&python, &[1]).await;
    let addr = &peer.address;
    // The map is in modbus_support (PEER_PY). "bad" asks for input registers past the end.
    let config = parse(&format!(
        r#"
        [[devices]]
        name = "py"
        tcp = {{ addr = "{addr}" }}
        unit_id = 1
        poll_period_ms = 20
        max_gap_registers = 0
        [[devices.registers]]
        channel = "pi_abcd"
        table = "holding"
        address = 0
        data_type = "f32"
        resolution = 1e-6
        [[devices.registers]]
        channel = "pi_cdab"
        table = "holding"
        address = 2
        data_type = "f32"
        word_order = "little"
        resolution = 1e-6
        [[devices.registers]]
        channel = "minus_200"
        table = "holding"
        address = 4
        data_type = "i16"
        scale = 0.5
        offset = 1.0
        [[devices.registers]]
        channel = "u32_abcd"
        table = "holding"
        address = 5
        data_type = "u32"
        [[devices.registers]]
        channel = "pi_f64"
        table = "holding"
        address = 7
        data_type = "f64"
        resolution = 1e-8
        [[devices.registers]]
        channel = "pi_badc"
        table = "holding"
        address = 12
        data_type = "f32"
        byte_order = "little"
        resolution = 1e-6
        [[devices.registers]]
        channel = "pi_dcba"
        table = "holding"
        address = 14
        data_type = "f32"
        word_order = "little"
        byte_order = "little"
        resolution = 1e-6
        [[devices.registers]]
        channel = "ir_200"
        table = "input"
        address = 200
        [[devices.registers]]
        channel = "coil_3"
        table = "coil"
        address = 3
        [[devices.registers]]
        channel = "di_4"
        table = "discrete"
        address = 4
        "#
    ));
    let (stats, _stats_rx) = stats();
    let (polled_tx, mut polled_rx) = mpsc::channel(256);
    let cancel = CancellationToken::new();
    let buses = spawn_buses(&config, polled_tx, None, cancel.clone(), stats.clone());
    assert_eq!(buses.len(), 1);
    let sample = tokio::time::timeout(Duration::from_secs(10), polled_rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no sample"))
        .unwrap_or_else(|| panic!("buses gone"));
    assert_eq!(sample.stream_id, 1, "only device py produces samples");
    // π in µ-units for f32 (3.14159274 → 3141593) and in 1e-8 steps for f64; integers travel
    // as their register values (the i16's scale and offset go in the birth instead).
    let pi_f32 = 3_141_593;
    assert_eq!(
        sample.raw,
        [
            pi_f32,
            pi_f32,
            -200,
            0x1234_5678,
            314_159_265,
            pi_f32,
            pi_f32,
            1200, // ir[200] of slave 1
            1,    // coil 3 (odd: on)
            0,    // discrete 4 (not a multiple of 3)
        ]
    );
    let s = stats.snapshot();
    assert_eq!(device(&s, "py").exceptions_total, 0);
    cancel.cancel();
    peer.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_register_and_values_beyond_i32_cost_only_their_channels_and_are_counted() {
    let Some(python) = python() else { return };
    let peer = PyPeer::tcp(&python, &[1]).await;
    let addr = &peer.address;
    // Beside two good channels: a register past the end of the input table (IllegalDataAddress),
    // 0x80000000 as u32 (2³¹: one past i32) and 1e30 as f32 in mN steps (modbus_support's map).
    let config = parse(&format!(
        r#"
        [[devices]]
        name = "mixed"
        tcp = {{ addr = "{addr}" }}
        unit_id = 1
        poll_period_ms = 20
        max_gap_registers = 0
        [[devices.registers]]
        channel = "slave_id"
        table = "holding"
        address = 11
        [[devices.registers]]
        channel = "past_the_end"
        table = "input"
        address = 400
        [[devices.registers]]
        channel = "u32_top"
        table = "holding"
        address = 16
        data_type = "u32"
        [[devices.registers]]
        channel = "huge_f32"
        table = "holding"
        address = 18
        data_type = "f32"
        resolution = 0.001
        [[devices.registers]]
        channel = "ir_5"
        table = "input"
        address = 5
        "#
    ));
    // At load: the two channels that can leave the i32 range are named, nothing else.
    let warnings = overflow_warnings(&config);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("\"u32_top\""), "{warnings:?}");
    assert!(warnings[1].contains("\"huge_f32\""), "{warnings:?}");

    let (_stats, mut stats_rx, samples, cancel) = spawn_recorded_buses(&config);
    let s = wait_stats(&mut stats_rx, "ten samples of the mixed device", |s| {
        device(s, "mixed").samples_total >= 10
    })
    .await;
    // The good channels keep their values; the three others carry "no value" in every sample.
    let no = dtop_proto::RAW_NO_VALUE;
    let mut seen = samples.clone();
    let got = tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|v| v.len() >= 10))
        .await
        .unwrap_or_else(|_| panic!("fewer than ten samples handed over"))
        .unwrap_or_else(|e| panic!("{e}"))
        .clone();
    assert!(
        got.iter().all(|(_, raw)| raw == &[1, no, no, no, 1005]),
        "{got:?}"
    );
    // Each missing value is counted against its channel, and only there.
    let d = device(&s, "mixed");
    let exceptions = d.exceptions_by_channel.get("past_the_end").copied();
    assert!(exceptions >= Some(10), "{d:#?}");
    assert_eq!(d.exceptions_by_channel.len(), 1, "{d:#?}");
    assert!(
        d.out_of_range_by_channel.get("u32_top") >= Some(&10),
        "{d:#?}"
    );
    assert!(
        d.out_of_range_by_channel.get("huge_f32") >= Some(&10),
        "{d:#?}"
    );
    assert_eq!(d.out_of_range_by_channel.len(), 2, "{d:#?}");
    assert_eq!((d.timeouts_total, d.transport_errors_total), (0, 0));
    // The same counters on /metrics.
    let text = dtop_edge::metrics::render("r", &s);
    for want in [
        format!(
            "dtop_edge_modbus_register_exceptions_total{{rig=\"r\",device=\"mixed\",channel=\"past_the_end\"}} {}\n",
            exceptions.unwrap_or_default()
        ),
        "dtop_edge_modbus_out_of_range_total{rig=\"r\",device=\"mixed\",channel=\"u32_top\"}"
            .into(),
    ] {
        assert!(text.contains(&want), "{want}\n{text}");
    }
    cancel.cancel();
    peer.kill().await;
}

/// Every sample seen so far: (stream id, raw values).
type Seen = watch::Receiver<Vec<(u32, Vec<i32>)>>;

/// Counts the samples of each stream until the sender side is gone.
fn count_samples(mut rx: mpsc::Receiver<PolledSample>) -> (Seen, tokio::task::JoinHandle<()>) {
    let (tx, out) = watch::channel(Vec::new());
    let task = tokio::spawn(async move {
        while let Some(s) = rx.recv().await {
            tx.send_modify(|v| v.push((s.stream_id, s.raw)));
        }
    });
    (out, task)
}

/// Spawns the buses of `config` with every sample they hand over recorded in [`Seen`]. Returns
/// the stats handle (hold it: it keeps the stats channel open as long as the test runs), the
/// stats the buses report, the samples, and the token that stops the buses.
fn spawn_recorded_buses(
    config: &ModbusConfig,
) -> (
    StatsHandle,
    watch::Receiver<EdgeStats>,
    Seen,
    CancellationToken,
) {
    let (stats, stats_rx) = stats();
    let (polled_tx, polled_rx) = mpsc::channel(256);
    let (samples, _counter) = count_samples(polled_rx);
    let cancel = CancellationToken::new();
    let _buses = spawn_buses(config, polled_tx, None, cancel.clone(), stats.clone());
    (stats, stats_rx, samples, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_then_dead_server_costs_its_samples_while_the_other_device_keeps_polling() {
    let Some(python) = python() else { return };
    let (a, b) = (
        PyPeer::tcp(&python, &[1]).await,
        PyPeer::tcp(&python, &[1]).await,
    );
    let device_toml = |name: &str, addr: &str| {
        format!(
            r#"
            [[devices]]
            name = "{name}"
            tcp = {{ addr = "{addr}", reconnect_backoff_min_ms = 20, reconnect_backoff_max_ms = 200 }}
            poll_period_ms = 20
            request_timeout_ms = 100
            [[devices.registers]]
            channel = "{name}_ir0"
            table = "input"
            address = 0
            "#
        )
    };
    let config = parse(&(device_toml("a", &a.address) + &device_toml("b", &b.address)));
    let (_stats, mut stats_rx, samples, cancel) = spawn_recorded_buses(&config);
    wait_stats(&mut stats_rx, "both devices polling", |s| {
        device(s, "a").samples_total >= 5 && device(s, "b").samples_total >= 5
    })
    .await;

    // Frozen: the socket stays open, nothing answers. Timeouts are counted and b carries on.
    a.freeze(true);
    let s = wait_stats(&mut stats_rx, "timeouts on a", |s| {
        device(s, "a").timeouts_total >= 3
    })
    .await;
    let b_before = device(&s, "b").samples_total;
    let a_before = device(&s, "a").samples_total;
    let s = wait_stats(&mut stats_rx, "b polling past a's timeouts", |s| {
        device(s, "b").samples_total >= b_before + 20
    })
    .await;
    assert_eq!(device(&s, "b").timeouts_total, 0);
    assert!(device(&s, "a").samples_missed_total >= 3);
    assert!(device(&s, "a").samples_total <= a_before + 1);

    // Thawed: a answers again, on a fresh connection.
    a.freeze(false);
    let s = wait_stats(&mut stats_rx, "a recovering", |s| {
        device(s, "a").samples_total >= a_before + 10
    })
    .await;
    assert!(
        device(&s, "a").connects_total >= 2,
        "{:#?}",
        device(&s, "a")
    );

    // Dead: connections are refused; errors are counted, b still carries on.
    let errors_before = device(&s, "a").transport_errors_total;
    a.kill().await;
    let s = wait_stats(&mut stats_rx, "a's connection errors", |s| {
        device(s, "a").transport_errors_total >= errors_before + 2
    })
    .await;
    let b_before = device(&s, "b").samples_total;
    wait_stats(&mut stats_rx, "b polling while a is dead", |s| {
        device(s, "b").samples_total >= b_before + 20
    })
    .await;
    // Every sample b produced carries its slave's value: ir[0] = 1000.
    let got = samples.borrow().clone();
    assert!(got.iter().filter(|(stream, _)| *stream == 2).count() >= 40);
    assert!(got.iter().all(|(_, raw)| raw == &[1000]), "{got:?}");
    cancel.cancel();
    b.kill().await;
}
