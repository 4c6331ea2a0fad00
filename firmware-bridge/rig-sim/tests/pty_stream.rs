//! The simulator as the edge sees it: Hello, Manifest, contiguous Samples, actuator commands,
//! the watchdog and overflow drops, all over a real pty.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Edge, rows};
use dtop_firmware::{ActuatorCommand, ChannelKind, Fault, Frame, Heartbeat};
use dtop_rig_sim::firmware::fault_code;
use dtop_rig_sim::{ExcitationConfig, SimConfig, start};
use tokio_util::sync::CancellationToken;

async fn run_to_max(config: SimConfig) -> Vec<(u64, Vec<i32>)> {
    let max = config.max_samples.unwrap();
    let shutdown = CancellationToken::new();
    let sim = start(config, shutdown.clone()).await.unwrap();
    let mut edge = Edge::open(sim.pty_path());
    edge.hello().await;
    let frames = edge.samples(usize::try_from(max).unwrap()).await;
    assert!(sim.wait_max_samples().await);
    shutdown.cancel();
    let stats = sim.join().await.unwrap();
    assert_eq!(stats.samples_generated_total, max);
    assert_eq!(stats.frames_dropped_total, 0);
    rows(&frames)
}

#[tokio::test]
async fn streams_manifest_then_contiguous_samples_after_hello() {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.csv");
    let link = dir.path().join("rig0");
    let config = SimConfig {
        speed: 0.0,
        max_samples: Some(1005),
        truth_log: Some(truth.clone()),
        pty_link: Some(link.clone()),
        ..SimConfig::default()
    };
    let shutdown = CancellationToken::new();
    let sim = start(config, shutdown.clone()).await.unwrap();
    assert!(
        sim.pty_path().starts_with("/dev/pts"),
        "{}",
        sim.pty_path().display()
    );
    assert_eq!(std::fs::read_link(&link).unwrap(), sim.pty_path());

    // Open through the link, as a deployment would.
    let mut edge = Edge::open(&link);
    let manifest = edge.hello().await;
    assert_eq!(manifest.sample_rate_hz(), 1000.0);
    assert_eq!((manifest.floors, manifest.actuator_floor), (3, 3));
    let kinds: Vec<_> = manifest
        .channels()
        .iter()
        .map(|c| (c.id, c.kind, c.floor))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, ChannelKind::Acceleration, 1),
            (1, ChannelKind::Acceleration, 2),
            (2, ChannelKind::Acceleration, 3),
            (3, ChannelKind::Force, 1),
        ]
    );

    let frames = edge.samples(1005).await;
    let got = rows(&frames);
    let indices: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, (0..1005).collect::<Vec<_>>());
    assert!(
        frames[..frames.len() - 1]
            .iter()
            .all(|f| f.sample_count() == 10)
    );
    assert_eq!(frames.last().unwrap().sample_count(), 5);

    // The excitation (5 N RMS) must be visible on the force channel: raw counts well above
    // the ~0.005 N noise floor.
    let scale = f64::from(manifest.channels()[3].scale);
    let force_rms = (got
        .iter()
        .map(|(_, r)| (f64::from(r[3]) * scale).powi(2))
        .sum::<f64>()
        / 1005.0)
        .sqrt();
    assert!(force_rms > 1.0 && force_rms < 20.0, "force rms {force_rms}");

    assert!(sim.wait_max_samples().await);
    let csv = std::fs::read_to_string(&truth).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("sample_index,raw0,raw1,raw2,raw3"));
    let logged: Vec<(u64, Vec<i32>)> = lines
        .map(|l| {
            let mut fields = l.split(',');
            let index = fields.next().unwrap().parse().unwrap();
            (index, fields.map(|f| f.parse().unwrap()).collect())
        })
        .collect();
    assert_eq!(logged, got);

    // A second Hello re-sends the manifest and does not reset anything.
    let again = edge.hello().await;
    assert_eq!(again, manifest);
    let beat = edge
        .next_where(|f| match f {
            Frame::Heartbeat(h) => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(beat.sample_index, 1005);

    shutdown.cancel();
    let stats = sim.join().await.unwrap();
    assert_eq!(stats.frames_sent_total, frames.len() as u64);
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "link not removed"
    );
}

#[tokio::test]
async fn same_seed_gives_identical_samples_at_any_speed() {
    let config = |speed, seed| SimConfig {
        speed,
        seed,
        max_samples: Some(300),
        ..SimConfig::default()
    };
    let lock_step = run_to_max(config(0.0, 42)).await;
    let fast = run_to_max(config(20.0, 42)).await;
    assert_eq!(lock_step.len(), 300);
    assert_eq!(lock_step, fast);
    let other_seed = run_to_max(config(0.0, 43)).await;
    assert_ne!(lock_step, other_seed);
}

#[tokio::test]
async fn applies_actuator_commands_and_trips_the_watchdog_when_the_edge_goes_silent() {
    let config = SimConfig {
        speed: 1.0,
        excitation: ExcitationConfig::None,
        accel_noise_rms_m_s2: 0.0,
        force_noise_rms_n: 0.0,
        ..SimConfig::default()
    };
    let shutdown = CancellationToken::new();
    let sim = start(config, shutdown.clone()).await.unwrap();
    let mut edge = Edge::open(sim.pty_path());
    edge.hello().await;
    edge.samples(20).await;

    edge.send(Frame::ActuatorCommand(ActuatorCommand {
        seq: 7,
        enable: true,
        force_n: 500.0,
        origin_sample_index: ActuatorCommand::NO_ORIGIN,
    }))
    .await;
    let status = edge
        .next_where(|f| match f {
            Frame::ActuatorStatus(s) => Some(s),
            _ => None,
        })
        .await;
    assert_eq!(
        (status.seq, status.enabled, status.force_n),
        (7, true, 20.0),
        "clamped to 20 N"
    );
    assert!(status.applied_at_sample_index >= 20);

    // Without noise or excitation, floor 3 (the actuator's floor) reads exactly 0 until the
    // command takes effect, and moves from the sample it took effect on.
    let frames = edge.samples(50).await;
    let floor3: Vec<(u64, i32)> = rows(&frames).into_iter().map(|(i, r)| (i, r[2])).collect();
    for (index, raw) in &floor3 {
        if *index < status.applied_at_sample_index {
            assert_eq!(*raw, 0, "sample {index} moved before the command");
        }
    }
    assert!(
        floor3
            .iter()
            .any(|(i, raw)| *i >= status.applied_at_sample_index && *raw != 0),
        "actuator had no effect"
    );

    // Now stay silent: within 500 ms (+ slack) the firmware disables the actuator.
    let (off, fault) = tokio::time::timeout(Duration::from_secs(3), async {
        let off = edge
            .next_where(|f| match f {
                Frame::ActuatorStatus(s) => Some(s),
                _ => None,
            })
            .await;
        let fault = edge
            .next_where(|f| match f {
                Frame::Fault(fault) => Some(fault),
                _ => None,
            })
            .await;
        (off, fault)
    })
    .await
    .expect("watchdog did not trip");
    assert_eq!((off.seq, off.enabled, off.force_n), (7, false, 0.0));
    assert_eq!(fault.code, fault_code::ACTUATOR_WATCHDOG);

    // A heartbeat does not re-enable (PROTOCOL.md §7.4); a new command does.
    edge.send(Frame::Heartbeat(Heartbeat {
        uptime_ms: 0,
        sample_index: 0,
    }))
    .await;
    edge.send(Frame::ActuatorCommand(ActuatorCommand {
        seq: 8,
        enable: true,
        force_n: 1.5,
        origin_sample_index: ActuatorCommand::NO_ORIGIN,
    }))
    .await;
    let status = edge
        .next_where(|f| match f {
            Frame::ActuatorStatus(s) => Some(s),
            _ => None,
        })
        .await;
    assert_eq!((status.seq, status.enabled, status.force_n), (8, true, 1.5));

    shutdown.cancel();
    sim.join().await.unwrap();
}

#[tokio::test]
async fn drops_frames_when_nobody_reads_and_the_edge_sees_the_gap() {
    let config = SimConfig {
        speed: 0.0,
        write_stall_timeout_ms: 50,
        ..SimConfig::default()
    };
    let shutdown = CancellationToken::new();
    let sim = start(config, shutdown.clone()).await.unwrap();
    let mut edge = Edge::open(sim.pty_path());
    edge.send(Frame::Hello).await;

    // Stop reading: lock-step fills the pty buffer, then each stalled frame is dropped.
    tokio::time::timeout(Duration::from_secs(30), async {
        while sim.stats().frames_dropped_total < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no frames were dropped");

    // Read again: the stream resumes after a gap, and the firmware reports where it began.
    let mut last_index = None;
    let mut gap = None;
    let fault = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match edge.next().await {
                Frame::Samples(s) => {
                    let jumped =
                        last_index.is_some_and(|expected| s.first_sample_index != expected);
                    if jumped && gap.is_none() {
                        gap = last_index.map(|expected| (expected, s.first_sample_index));
                    }
                    last_index = Some(s.next_sample_index());
                }
                Frame::Fault(fault) => break fault,
                _ => {}
            }
        }
    })
    .await
    .expect("no SAMPLES_DROPPED fault");
    assert_eq!(fault.code, fault_code::SAMPLES_DROPPED);
    let first_lost = fault.sample_index;
    let stats = sim.stats();
    assert!(stats.frames_dropped_total >= 3);
    assert!(stats.samples_generated_total > stats.frames_sent_total * 10);

    // The gap is where the fault says it starts, possibly seen a frame or two after the fault
    // (control frames overtake queued samples).
    let gap = match gap {
        Some(gap) => gap,
        None => loop {
            let s = edge
                .next_where(|f| match f {
                    Frame::Samples(s) => Some(s),
                    _ => None,
                })
                .await;
            let expected = last_index.unwrap();
            if s.first_sample_index != expected {
                break (expected, s.first_sample_index);
            }
            last_index = Some(s.next_sample_index());
        },
    };
    assert_eq!(gap.0, first_lost);
    assert!(gap.1 > gap.0);
    assert!(!matches!(
        fault,
        Fault {
            code: fault_code::ACTUATOR_WATCHDOG,
            ..
        }
    ));

    shutdown.cancel();
    sim.join().await.unwrap();
}
