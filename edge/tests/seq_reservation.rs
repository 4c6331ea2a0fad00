//! The block-seq reservation across a SIGKILL: the `dtop-edge` binary, a fake firmware on a
//! socat pty pair, a real Mosquitto, and a subscriber on the samples and loss topics. The
//! killed run's unused reservation must be declared `skipped`, the next run must number above
//! every seq the killed one sent, and a clean stop must give the unused reservation back.
//!
//! Needs `socat` and `mosquitto`. Without them the test says so and passes, unless `CI` or
//! `DTOP_REQUIRE_SERVICES=1` is set, in which case it fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use dtop_firmware::{ChannelDesc, ChannelKind, Manifest, Samples};
use dtop_proto::topic::{self, RigTopic};
use dtop_proto::v1::{LossReason, SampleBlock, SeqLoss};
use dtop_proto::{Message, RigId};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use crate::common;
use common::{Broker, Killed, PtyPair, fake_firmware, tools};

const BLOCK_SAMPLES: u64 = 10;

enum Seen {
    Block(SampleBlock),
    Loss(SeqLoss),
}

fn manifest() -> Manifest {
    let channels = [ChannelDesc {
        id: 0,
        kind: ChannelKind::Acceleration,
        floor: 1,
        scale: 0.001,
    }];
    Manifest::new("fake-fw-0.1", 1_000_000, 3, 0, 0.0, &channels)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Frames of 10 samples covering `from..to`.
fn frames(from: u64, to: u64) -> Vec<Samples> {
    (from..to)
        .step_by(BLOCK_SAMPLES as usize)
        .map(|first| {
            let values = (first..first + BLOCK_SAMPLES).map(|i| i as i32).collect();
            Samples::new(first, 1, values).unwrap_or_else(|e| panic!("{e:?}"))
        })
        .collect()
}

async fn subscribe(port: u16, rig: &RigId) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let (samples, loss) = (
        topic::rig(rig, RigTopic::Samples),
        topic::rig(rig, RigTopic::Loss),
    );
    let topics = vec![samples.clone(), loss.clone()];
    common::subscribe_decoded(port, format!("sub-{rig}"), topics, move |t, payload| {
        if t == samples {
            Some(Seen::Block(
                SampleBlock::decode(payload).unwrap_or_else(|e| panic!("{e}")),
            ))
        } else if t == loss {
            Some(Seen::Loss(
                SeqLoss::decode(payload).unwrap_or_else(|e| panic!("{e}")),
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

/// One `dtop-edge` process against a fresh pty pair and the fake firmware.
struct EdgeProcess {
    _pty: PtyPair,
    child: Killed,
    samples_tx: mpsc::UnboundedSender<Samples>,
}

fn start_edge(socat: &Path, dir: &Path, rig: &RigId, tag: &str, mqtt_port: u16) -> EdgeProcess {
    let pty = PtyPair::new(socat, dir, tag);
    let (commands_tx, _commands) = mpsc::unbounded_channel();
    let (samples_tx, samples_rx) = mpsc::unbounded_channel();
    tokio::spawn(fake_firmware(
        pty.b.clone(),
        manifest(),
        samples_rx,
        commands_tx,
    ));
    let config = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "rig_id = \"{rig}\"\nstate_dir = \"{}\"\n[serial]\npath = \"{}\"\n[acquisition]\nblock_samples = {BLOCK_SAMPLES}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n[actuator]\nmax_force_n = 1.0\nmax_slew_n_per_s = 10.0\n",
            dir.join("state").display(),
            pty.a.display(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let log =
        std::fs::File::create(dir.join(format!("{tag}.log"))).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(env!("CARGO_BIN_EXE_dtop-edge"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    EdgeProcess {
        _pty: pty,
        child: Killed(child),
        samples_tx,
    }
}

impl EdgeProcess {
    fn send(&self, frames: Vec<Samples>) {
        for f in frames {
            self.samples_tx
                .send(f)
                .unwrap_or_else(|_| panic!("the fake firmware is gone"));
        }
    }
}

fn read_next_seq(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("state").join("next_seq"))
        .unwrap_or_else(|e| panic!("reading next_seq: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_never_reuses_a_seq_and_declares_its_unused_reservation_skipped() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let rig =
        RigId::new(format!("reserve-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let (_client, mut seen) = subscribe(broker.port, &rig).await;

    // Run 1: 50 blocks, all seen on the broker (so all spooled), then SIGKILL.
    let mut run = start_edge(&socat, dir.path(), &rig, "run1", broker.port);
    run.send(frames(0, 500));
    let mut sent = BTreeSet::new();
    while sent.len() < 50 {
        match next_seen(&mut seen, "run 1's blocks").await {
            Seen::Block(b) => assert!(sent.insert(b.seq), "seq {} twice in run 1", b.seq),
            Seen::Loss(l) => panic!("run 1 declared a loss: {l:?}"),
        }
    }
    assert_eq!(
        sent.iter().copied().collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    let reserved_until = read_next_seq(dir.path());
    assert!(
        reserved_until > 49,
        "the reservation {reserved_until} does not cover the seqs sent"
    );
    run.child.0.kill().unwrap_or_else(|e| panic!("{e}"));
    run.child.0.wait().unwrap_or_else(|e| panic!("{e}"));

    // Run 2 numbers from the reservation and declares what run 1 did not use as skipped.
    let run = start_edge(&socat, dir.path(), &rig, "run2", broker.port);
    run.send(frames(0, 100));
    let mut skipped = None;
    let mut live = Vec::new();
    while skipped.is_none() || live.len() < 10 {
        match next_seen(&mut seen, "run 2's blocks and its loss declaration").await {
            // Run 1's spool, sent again: the same blocks under the same seqs.
            Seen::Block(b) if b.backfill => assert!(sent.contains(&b.seq), "{}", b.seq),
            Seen::Block(b) => {
                assert!(!sent.contains(&b.seq), "seq {} reused", b.seq);
                live.push(b.seq);
            }
            Seen::Loss(l) => skipped = Some(l),
        }
    }
    let skipped = skipped.unwrap_or_else(|| unreachable!());
    assert_eq!(skipped.reason(), LossReason::Skipped);
    assert_eq!(
        (
            skipped.first_seq,
            skipped.last_seq,
            skipped.blocks,
            skipped.samples
        ),
        (50, reserved_until - 1, reserved_until - 50, 0)
    );
    assert_eq!(
        live,
        (reserved_until..reserved_until + 10).collect::<Vec<_>>()
    );

    // A clean stop gives the unused reservation back: the next start continues at once.
    let status = Command::new("kill")
        .args(["-TERM", &run.child.0.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let mut child = run.child;
    let exit = child.0.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(exit.success(), "{exit:?}");
    assert_eq!(read_next_seq(dir.path()), reserved_until + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_empty_spool_the_twins_watermark_bounds_the_skipped_seqs() {
    let Some((socat, mosquitto)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start(&mosquitto, dir.path());
    let rig =
        RigId::new(format!("reserve-w-{}", std::process::id())).unwrap_or_else(|e| panic!("{e}"));
    let (client, mut seen) = subscribe(broker.port, &rig).await;
    // A previous run reserved up to 100 and its spool is gone; the twin has everything to 40.
    std::fs::create_dir_all(dir.path().join("state")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("state").join("next_seq"), "100\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let watermark = dtop_proto::v1::PersistedWatermark {
        rig_id: rig.to_string(),
        seq: 40,
        timestamp_ns: 0,
        owner_epoch: 0,
    };
    client
        .publish(
            topic::rig(&rig, RigTopic::Persisted),
            QoS::AtLeastOnce,
            true,
            watermark.encode_to_vec(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let run = start_edge(&socat, dir.path(), &rig, "run", broker.port);
    run.send(frames(0, 20));
    let (mut skipped, mut live) = (None, Vec::new());
    while skipped.is_none() || live.len() < 2 {
        match next_seen(&mut seen, "the blocks and the loss declaration").await {
            Seen::Block(b) => live.push(b.seq),
            Seen::Loss(l) => skipped = Some(l),
        }
    }
    let skipped = skipped.unwrap_or_else(|| unreachable!());
    assert_eq!(skipped.reason(), LossReason::Skipped);
    assert_eq!((skipped.first_seq, skipped.last_seq), (41, 99));
    assert_eq!(live, [100, 101]);
    // Clean up the retained watermark on a shared broker.
    client
        .publish(
            topic::rig(&rig, RigTopic::Persisted),
            QoS::AtLeastOnce,
            true,
            Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(run);
}
