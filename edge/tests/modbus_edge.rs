//! The whole edge (`dtop_edge::run_with_stats`) with a Modbus device: the rig simulator streams
//! over its pty (stream 0) and serves Modbus TCP, which the edge polls as stream 1; both reach a
//! real Mosquitto as `SampleBlock`s sharing one `seq`.
//!
//! Needs `mosquitto`. Without it the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

use crate::common;

use std::time::Duration;

use dtop_edge::{EdgeConfig, EdgeStats};
use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::SampleBlock;
use dtop_proto::{Message, RigId};
use dtop_rig_sim::{ExcitationConfig, SimConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Subscribes to the rig's samples and waits for the SUBACK.
async fn subscribe(port: u16, rig: &RigId) -> (AsyncClient, mpsc::UnboundedReceiver<SampleBlock>) {
    let mut options = MqttOptions::new(format!("sub-{rig}"), "127.0.0.1", port);
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let samples = topic::rig(rig, RigTopic::Samples);
    client
        .subscribe(samples.clone(), QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::unbounded_channel();
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
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == samples => {
                    let block =
                        SampleBlock::decode(p.payload).unwrap_or_else(|e| panic!("bad block: {e}"));
                    if tx.send(block).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    timeout(WAIT, subscribed_rx)
        .await
        .unwrap_or_else(|_| panic!("no SUBACK"))
        .unwrap_or_else(|e| panic!("{e}"));
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_modbus_blocks_join_the_firmware_stream_with_one_seq() {
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
        RigId::new(format!("mb-edge-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let (_client, mut blocks) = subscribe(broker.port, &rig).await;

    let config = EdgeConfig::from_toml(&format!(
        r#"
        rig_id = "{rig}"
        state_dir = "{state}"
        [serial]
        path = "{pty}"
        [acquisition]
        block_samples = 100
        [mqtt]
        host = "127.0.0.1"
        port = {port}
        [actuator]
        max_force_n = 20.0
        max_slew_n_per_s = 2000.0

        [[modbus.devices]]
        name = "sim"
        tcp = {{ addr = "{modbus}" }}
        poll_period_ms = 50
        [[modbus.devices.registers]]
        channel = "sim_samples"
        table = "input"
        address = 10
        data_type = "u32"
        [[modbus.devices.registers]]
        channel = "sim_enable"
        table = "holding"
        address = 0
        "#,
        state = dir.path().join("state").display(),
        pty = sim.pty_path().display(),
        port = broker.port,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let (stats_tx, stats_rx) = watch::channel(EdgeStats::default());
    let stop = CancellationToken::new();
    let edge = tokio::spawn(dtop_edge::run_with_stats(config, stop.clone(), stats_tx));

    // 20 polls per second, a second's worth per block; the firmware's 1 kHz in blocks of 100.
    let mut seen: Vec<SampleBlock> = Vec::new();
    while seen.iter().filter(|b| b.stream_id == 1).count() < 2 {
        let block = timeout(WAIT, blocks.recv())
            .await
            .unwrap_or_else(|_| panic!("no block; stats {:#?}", stats_rx.borrow().modbus))
            .unwrap_or_else(|| panic!("subscriber gone"));
        seen.push(block);
    }
    stop.cancel();
    timeout(WAIT, edge)
        .await
        .unwrap_or_else(|_| panic!("edge did not stop"))
        .unwrap_or_else(|e| panic!("edge panicked: {e}"))
        .unwrap_or_else(|e| panic!("edge failed: {e}"));

    let polled: Vec<_> = seen.iter().filter(|b| b.stream_id == 1).collect();
    assert!(seen.iter().any(|b| b.stream_id == 0), "no firmware blocks");
    for b in &polled {
        let ids: Vec<_> = b.channels.iter().map(|c| c.channel_id).collect();
        assert_eq!(ids, [256, 257]);
        assert_eq!(b.sample_period_ns, 50_000_000);
        assert_eq!(b.first_timestamp_ns % 50_000_000, 0);
        assert_eq!(b.channels[0].raw.len(), 20);
        // The simulator's sample counter (1 kHz) advances ~50 per poll.
        let counts = &b.channels[0].raw;
        assert!(counts.windows(2).all(|w| w[1] > w[0]), "{counts:?}");
    }
    assert_eq!(
        polled[1].first_sample_index,
        polled[0].first_sample_index + 20,
        "consecutive polled blocks"
    );
    // One rig-wide seq over both streams: strictly increasing, no repeats.
    let seqs: Vec<_> = seen.iter().map(|b| b.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let s = stats_rx.borrow().clone();
    assert!(s.modbus["sim"].samples_total >= 40, "{:#?}", s.modbus);
    shutdown.cancel();
    let _ = sim.join().await;
}
