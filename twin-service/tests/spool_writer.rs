//! The storage writer when storage is unreachable: ingest never waits on it, what memory and the
//! disk spool cannot hold is counted per rig with its reason, and a writer restarted on the same
//! spool replays what was spooled, in order, continuing the saved watermark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use dtop_proto::RigId;
use dtop_spool::Spool;
use dtop_twin::config::{
    BackoffConfig, BatchConfig, FileStorageConfig, HttpConfig, InfluxV1Config, StorageConfig,
    StorageSpoolConfig, TwinConfig,
};
use dtop_twin::lineproto::Precision;
use dtop_twin::rig::Chunk;
use dtop_twin::stats::StoreStats;
use dtop_twin::store::outbox::{LOST_QUEUE_FULL, LOST_SPOOL_FULL};
use dtop_twin::store::{Sink, Watermarks, Writer, WriterConfig};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const SAMPLES: u64 = 100;

fn rig() -> RigId {
    RigId::new("r1").unwrap()
}

/// A block's chunk: `filler_lines` sample lines padded to ~`line_bytes`, and its audit line.
fn chunk(seq: u64, filler_lines: usize, line_bytes: usize) -> Chunk {
    let mut lines = String::new();
    for k in 0..filler_lines {
        let pad = "1".repeat(line_bytes.saturating_sub(40));
        lines.push_str(&format!(
            "dtop_samples,rig=r1,stream=0 a={pad} {}\n",
            seq * 1000 + k as u64
        ));
    }
    lines.push_str(&format!(
        "dtop_blocks,rig=r1,stream=0 seq={seq}i,first_sample_index=0i,samples={SAMPLES}i,sample_period_ns=1000000i,session=1i,backfill=false {}\n",
        seq * 1000
    ));
    Chunk {
        rig_start_seq: None,
        rig: rig(),
        seq,
        lines,
        line_count: filler_lines + 1,
    }
}

/// InfluxDB at a port nobody listens on.
fn unreachable_config(spool: StorageSpoolConfig) -> TwinConfig {
    TwinConfig {
        storage: StorageConfig::InfluxV1(InfluxV1Config {
            url: format!("http://127.0.0.1:{}", support::free_port()),
            database: "dtop".into(),
            username: None,
            password_file: None,
            precision: Precision::Us,
        }),
        // One chunk per batch.
        batch: BatchConfig {
            max_lines: 1,
            max_delay_ms: 10,
            drain_timeout_ms: 100,
        },
        http: HttpConfig { timeout_ms: 500 },
        retry: BackoffConfig {
            initial_ms: 20,
            max_ms: 50,
        },
        spool,
        ..TwinConfig::default()
    }
}

async fn wait_stats(
    rx: &mut watch::Receiver<StoreStats>,
    what: &str,
    ready: impl FnMut(&StoreStats) -> bool,
) -> StoreStats {
    let got = match tokio::time::timeout(WAIT, rx.wait_for(ready)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("timed out waiting for {what}: {:#?}", rx.borrow()))
}

#[tokio::test]
async fn without_a_spool_ingest_never_waits_and_the_overflow_is_counted_as_queue_full() {
    let config = unreachable_config(StorageSpoolConfig::default());
    let sink = Sink::from_config(&config).await.unwrap();
    // A channel far smaller than what is sent: only a writer that keeps reading lets it through.
    let (tx, rx) = mpsc::channel(4);
    let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
    let shutdown = CancellationToken::new();
    const SENT: u64 = 60;
    // Room in memory for exactly the three newest batches (blocks 58 to 60 are the same size).
    let writer_config = WriterConfig {
        memory_bytes: 3 * chunk(SENT, 2, 60).lines.len() as u64,
        ..WriterConfig::from(&config)
    };
    let writer = Writer::new(sink, rx, writer_config, shutdown.clone(), stats_tx);
    let task = tokio::spawn(writer.run());
    tokio::time::timeout(WAIT, async {
        for seq in 1..=SENT {
            tx.send(chunk(seq, 2, 60)).await.unwrap();
        }
    })
    .await
    .expect("ingest waited on a storage that is down");
    let stats = wait_stats(&mut stats_rx, "every block kept or dropped", |s| {
        s.rigs.get(&rig()).is_some_and(|r| {
            r.blocks_dropped.get(LOST_QUEUE_FULL).copied().unwrap_or(0) == SENT - 3
        }) && s.write_errors_total > 0
    })
    .await;
    let r = &stats.rigs[&rig()];
    assert_eq!(r.samples_dropped[LOST_QUEUE_FULL], (SENT - 3) * SAMPLES);
    assert_eq!(r.blocks_stored, 0);
    assert_eq!(r.persisted_seq, None);
    // Three blocks of 100 samples at 1 kHz wait in memory.
    assert!((r.backlog_s - 0.3).abs() < 1e-9, "backlog {}", r.backlog_s);
    assert_eq!(stats.batches_in_memory, 3);
    // Storage never came back: shutdown gives up what memory held, and says so.
    shutdown.cancel();
    drop(tx);
    let final_stats = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let r = &final_stats.rigs[&rig()];
    assert_eq!(r.blocks_dropped["shutdown_drain"], 3);
    assert_eq!(r.backlog_s, 0.0);
}

#[tokio::test]
async fn a_full_disk_spool_counts_what_it_refuses_and_a_restart_replays_the_rest_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let spool_config = StorageSpoolConfig {
        dir: Some(spool_dir.clone()),
        capacity_mib: 1,
        ..StorageSpoolConfig::default()
    };
    let config = unreachable_config(spool_config.clone());
    let (tx, rx) = mpsc::channel(4);
    let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
    let spool = Spool::open(dtop_twin::store::spool_config(&spool_config).unwrap()).unwrap();
    let shutdown = CancellationToken::new();
    let writer = Writer::new(
        Sink::from_config(&config).await.unwrap(),
        rx,
        WriterConfig::from(&config),
        shutdown.clone(),
        stats_tx,
    )
    .with_spool(spool)
    .unwrap();
    let task = tokio::spawn(writer.run());
    // ~100 kB per block: about ten fit in the 1 MiB spool.
    const SENT: u64 = 30;
    tokio::time::timeout(WAIT, async {
        for seq in 1..=SENT {
            tx.send(chunk(seq, 50, 2000)).await.unwrap();
        }
    })
    .await
    .expect("ingest waited on a storage that is down");
    let stats = wait_stats(&mut stats_rx, "the spool full", |s| {
        s.rigs.get(&rig()).is_some_and(|r| {
            r.blocks_dropped.values().sum::<u64>() + s.batches_spooled + s.batches_in_memory == SENT
        }) && s.storage_failing
    })
    .await;
    let r = &stats.rigs[&rig()];
    let refused = r.blocks_dropped[LOST_SPOOL_FULL];
    assert!(refused > 0 && stats.batches_spooled >= 5, "{stats:#?}");
    assert!(stats.spool_bytes <= 1024 * 1024);
    // Stop: the drain timeout passes and what is in memory goes to the spool, or is refused.
    shutdown.cancel();
    drop(tx);
    let final_stats = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let kept = final_stats.batches_spooled;
    assert!(kept >= stats.batches_spooled);

    // A new writer on the same spool, with storage that works (files), replays it in order.
    let lines_dir = dir.path().join("lines");
    let file_config = TwinConfig {
        storage: StorageConfig::File(FileStorageConfig {
            dir: lines_dir.clone(),
            precision: Precision::Us,
        }),
        ..unreachable_config(spool_config.clone())
    };
    let (tx, rx) = mpsc::channel(4);
    let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
    let (wm_tx, wm_rx) = watch::channel(Watermarks::new());
    let spool = Spool::open(dtop_twin::store::spool_config(&spool_config).unwrap()).unwrap();
    let writer = Writer::new(
        Sink::from_config(&file_config).await.unwrap(),
        rx,
        WriterConfig::from(&file_config),
        CancellationToken::new(),
        stats_tx,
    )
    .with_spool(spool)
    .unwrap()
    .with_watermarks(wm_tx);
    let task = tokio::spawn(writer.run());
    let stats = wait_stats(&mut stats_rx, "the spool replayed", |s| {
        s.batches_spooled == 0 && s.batches_written_total == kept
    })
    .await;
    assert_eq!(stats.rigs[&rig()].blocks_stored, kept);
    // The stored seqs, in the order they were written.
    let mut written = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&lines_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if let Some(rest) = line.strip_prefix("dtop_blocks,rig=r1,stream=0 seq=") {
                written.push(rest.split('i').next().unwrap().parse::<u64>().unwrap());
            }
        }
    }
    assert_eq!(written.len() as u64, kept);
    assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    // The first blocks (spooled before the spool filled) start the watermark, which then
    // stops at the first block given up.
    assert_eq!(written[0], 1);
    let contiguous = written
        .iter()
        .zip(1..)
        .take_while(|(s, i)| **s == *i)
        .count() as u64;
    assert_eq!(wm_rx.borrow()[&rig()], contiguous);
    drop(tx);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    // Everything replayed was acked: nothing is left for a third run.
    let spool = Spool::open(dtop_twin::store::spool_config(&spool_config).unwrap()).unwrap();
    assert!(spool.is_empty());
    // Spooled records are whole batches; the spool never dropped one on its own.
    assert_eq!(spool.counters().dropped_records_total, 0);
}
