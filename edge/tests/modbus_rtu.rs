//! Modbus RTU over a socat pty pair against pymodbus's RTU server: two slaves share one line
//! (one bus task owns it), and a third slave id that nobody answers times out without stopping
//! the other two.

use crate::common;
use crate::modbus_support;

use std::time::Duration;

use tokio::time::Instant;

use dtop_edge::EdgeStats;
use dtop_edge::modbus::config::ModbusConfig;
use dtop_edge::modbus::spawn_buses;
use dtop_edge::stats::StatsHandle;
use modbus_support::{PyPeer, device, python, services_required, wait_stats};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slaves_share_one_rtu_line_and_a_silent_slave_only_costs_its_own_samples() {
    let Some(python) = python() else { return };
    let Some(socat) = common::find_program("socat") else {
        assert!(!services_required(), "socat is required but missing");
        eprintln!("SKIPPED: socat is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pair = common::PtyPair::new(&socat, dir.path(), "rtu");
    let peer = PyPeer::rtu(&python, &pair.b, 115_200, &[1, 2]).await;

    // Slave s: hr 11 = s, ir k = 1000 s + k (modbus_support's map). Slave 3 does not exist.
    let device_toml = |name: &str, unit: u8| {
        format!(
            r#"
            [[devices]]
            name = "{name}"
            rtu = {{ path = "{path}", baud = 115200, parity = "none" }}
            unit_id = {unit}
            poll_period_ms = 50
            request_timeout_ms = 100
            [[devices.registers]]
            channel = "{name}_id"
            table = "holding"
            address = 11
            [[devices.registers]]
            channel = "{name}_ir0"
            table = "input"
            address = 0
            [[devices.registers]]
            channel = "{name}_ir1"
            table = "input"
            address = 1
            "#,
            path = pair.a.display()
        )
    };
    let text = device_toml("amp1", 1) + &device_toml("amp2", 2) + &device_toml("ghost", 3);
    let config: ModbusConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let mut problems = Vec::new();
    config.validate_into(&mut problems);
    assert!(problems.is_empty(), "{problems:?}");

    let (stats_tx, mut stats_rx) = watch::channel(EdgeStats::default());
    let stats = StatsHandle::new(stats_tx);
    let (polled_tx, mut polled_rx) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let buses = spawn_buses(&config, polled_tx, None, cancel.clone(), stats.clone());
    assert_eq!(buses.len(), 1, "three slaves on one line: one bus owner");

    let s = wait_stats(
        &mut stats_rx,
        "both slaves polled and the ghost timing out",
        |s| {
            device(s, "amp1").samples_total >= 10
                && device(s, "amp2").samples_total >= 10
                && device(s, "ghost").timeouts_total >= 3
        },
    )
    .await;
    let ghost = device(&s, "ghost");
    assert_eq!(ghost.samples_total, 0);
    assert!(ghost.samples_missed_total >= 3, "{ghost:#?}");
    for name in ["amp1", "amp2"] {
        let d = device(&s, name);
        assert_eq!(
            (
                d.timeouts_total,
                d.exceptions_total,
                d.transport_errors_total
            ),
            (0, 0, 0),
            "{name}: {d:#?}"
        );
        // Holding and input registers: two requests per poll.
        assert!(d.requests_total >= 2 * d.samples_total, "{name}: {d:#?}");
    }

    cancel.cancel();
    for b in buses {
        tokio::time::timeout(Duration::from_secs(5), b)
            .await
            .unwrap_or_else(|_| panic!("bus task did not stop"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut by_stream = std::collections::BTreeMap::<u32, Vec<Vec<i32>>>::new();
    while let Ok(sample) = polled_rx.try_recv() {
        by_stream
            .entry(sample.stream_id)
            .or_default()
            .push(sample.raw);
    }
    // Each answer came from the slave asked: no reply was taken for another's.
    assert!(
        by_stream[&1].iter().all(|raw| raw == &[1, 1000, 1001]),
        "{by_stream:?}"
    );
    assert!(
        by_stream[&2].iter().all(|raw| raw == &[2, 2000, 2001]),
        "{by_stream:?}"
    );
    assert!(!by_stream.contains_key(&3));
    peer.kill().await;
}

/// A simulated RTU slave on the far end of the pty that answers every read-holding request
/// with one word and stamps when each request began and each response was written.
async fn timing_slave(
    path: std::path::PathBuf,
    stamps_tx: mpsc::UnboundedSender<(Instant, Instant)>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_serial::SerialPortBuilderExt;
    const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);
    let mut port = tokio_serial::new(path.to_string_lossy(), 115_200)
        .open_native_async()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut request = Vec::new();
    let mut buf = [0u8; 64];
    let mut began = Instant::now();
    loop {
        let Ok(n) = port.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if request.is_empty() {
            began = Instant::now();
        }
        request.extend_from_slice(&buf[..n]);
        // Slave, 0x03, address, count, CRC: 8 bytes; a broadcast write (0x10) is longer and
        // gets no answer.
        if request.len() >= 8 && request[1] == 0x03 {
            let mut reply = vec![request[0], 0x03, 2, 0x00, 0x2A];
            let crc = CRC.checksum(&reply);
            reply.extend_from_slice(&crc.to_le_bytes());
            port.write_all(&reply)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            port.flush().await.unwrap_or_else(|e| panic!("{e}"));
            let _ = stamps_tx.send((began, Instant::now()));
            request.clear();
        } else if request.len() >= 2 && request[1] == 0x10 && request.len() >= 9 {
            let len = 9 + usize::from(request[6]);
            if request.len() >= len {
                let _ = stamps_tx.send((began, Instant::now()));
                request.clear();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_t3_5_silence_between_frames_and_the_turnaround_after_a_broadcast() {
    use dtop_edge::modbus::bus::{Bus, Transport, inter_frame_silence};
    use dtop_edge::modbus::config::{Parity, RtuConfig, Table};
    let Some(socat) = common::find_program("socat") else {
        assert!(!services_required(), "socat is required but missing");
        eprintln!("SKIPPED: socat is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pair = common::PtyPair::new(&socat, dir.path(), "t35");
    let (stamps_tx, mut stamps_rx) = mpsc::unbounded_channel();
    tokio::spawn(timing_slave(pair.b.clone(), stamps_tx));
    // 9600 bit/s 8E1: t3.5 = 3.5 × 11 bits / 9600 = 4.01 ms; 30 ms turnaround.
    let line = RtuConfig {
        path: pair.a.clone(),
        baud: 9_600,
        parity: Parity::Even,
        stop_bits: 1,
        data_bits: 8,
        turnaround_delay_ms: 30,
        reopen_delay_ms: 100,
    };
    let silence = inter_frame_silence(&line);
    assert_eq!(silence, Duration::from_nanos(4_010_415));
    let mut bus = Bus::new(Transport::Rtu(line));
    let read = Duration::from_millis(500);
    for k in 0..40u8 {
        let words = bus
            .read(1 + k % 2, Table::Holding, 0, 1, read)
            .await
            .unwrap_or_else(|e| panic!("read {k}: {e}"));
        assert_eq!(words, [42]);
    }
    // A broadcast write, then one more read: the slaves get the turnaround delay.
    bus.write(0, 0, &[1, 2], read)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    bus.read(1, Table::Holding, 0, 1, read)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut stamps = Vec::new();
    while let Ok(s) = stamps_rx.try_recv() {
        stamps.push(s);
    }
    assert_eq!(stamps.len(), 42, "40 reads, the broadcast, the last read");
    // From the end of each frame the slave wrote (or received, for the broadcast) to the start
    // of the next request: never less than t3.5, and the turnaround after the broadcast.
    let gaps: Vec<Duration> = stamps
        .windows(2)
        .map(|w| w[1].0.saturating_duration_since(w[0].1))
        .collect();
    let shortest = gaps[..40].iter().min().copied().unwrap_or_default();
    assert!(
        shortest >= silence,
        "a {shortest:?} gap is below t3.5 ({silence:?})"
    );
    assert!(
        gaps[40] >= Duration::from_millis(30),
        "only {:?} after the broadcast",
        gaps[40]
    );
}
