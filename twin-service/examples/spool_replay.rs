//! Benchmark: the twin's storage writer through an InfluxDB outage. A private `influxd` is
//! killed, ten minutes of an 8-channel, 1 kHz rig (6 000 blocks of 100 samples) arrive as fast
//! as the writer takes them and go to the disk spool; then InfluxDB comes back while live
//! blocks keep arriving at the rig's real rate (10 per second), and the spool is replayed.
//!
//! Prints the spool rate during the outage, the replay rate, how long the backlog takes to
//! drain under live data, and an audit of every seq in InfluxDB.
//!
//! Run: `cargo run --release -p dtop-twin --example spool_replay` (needs `influxd`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use dtop_proto::RigId;
use dtop_spool::Spool;
use dtop_twin::config::{
    BackoffConfig, BatchConfig, HttpConfig, InfluxV1Config, StorageConfig, StorageSpoolConfig,
    TwinConfig,
};
use dtop_twin::lineproto::{self, BlockHeader, Column, Precision};
use dtop_twin::rig::Chunk;
use dtop_twin::stats::StoreStats;
use dtop_twin::store::audit;
use dtop_twin::store::{Sink, Watermarks, Writer, WriterConfig};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const RIG: &str = "bench-rig";
const CHANNELS: usize = 8;
const SAMPLES: usize = 100;
const PERIOD_NS: u64 = 1_000_000;
const BACKLOG_BLOCKS: u64 = 6_000;
const T0_NS: u64 = 1_700_000_000_000_000_000;
const TIMEOUT: Duration = Duration::from_secs(300);

fn chunk(seq: u64, backfill: bool) -> Chunk {
    let names: Vec<String> = (1..=CHANNELS).map(|c| format!("ch{c}_accel")).collect();
    let raws: Vec<Vec<i32>> = (0..CHANNELS)
        .map(|c| {
            (0..SAMPLES)
                .map(|k| ((seq as i64 * 7919 + k as i64 * 31 + c as i64 * 1013) % 65_536) as i32)
                .collect()
        })
        .collect();
    let columns: Vec<Column<'_>> = names
        .iter()
        .zip(&raws)
        .map(|(name, raw)| Column {
            name,
            scale: 1.17e-4,
            offset: 0.0,
            raw,
        })
        .collect();
    let header = BlockHeader {
        rig: RIG,
        stream_id: 0,
        session: 1,
        seq,
        first_sample_index: seq * SAMPLES as u64,
        first_timestamp_ns: T0_NS + seq * SAMPLES as u64 * PERIOD_NS,
        sample_period_ns: PERIOD_NS,
        backfill,
    };
    let mut lines = String::new();
    let line_count = lineproto::encode_block(&mut lines, &header, &columns, Precision::Us).unwrap();
    Chunk {
        rig_start_seq: None,
        rig: RigId::new(RIG).unwrap(),
        seq,
        lines,
        line_count,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if support::require_binary(support::INFLUXD).is_none() {
        return;
    }
    let mut influx = support::InfluxD::start_on(None).await;
    influx.create_database("dtop").await;
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let spool_config = StorageSpoolConfig {
        dir: Some(dir.path().join("spool")),
        ..StorageSpoolConfig::default()
    };
    let config = TwinConfig {
        storage: StorageConfig::InfluxV1(InfluxV1Config {
            url: influx.url.clone(),
            database: "dtop".into(),
            username: None,
            password_file: None,
            precision: Precision::Us,
        }),
        batch: BatchConfig::default(),
        http: HttpConfig { timeout_ms: 5000 },
        retry: BackoffConfig {
            initial_ms: 100,
            max_ms: 500,
        },
        spool: spool_config.clone(),
        ..TwinConfig::default()
    };
    let (chunk_tx, chunk_rx) = mpsc::channel(256);
    let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
    let (wm_tx, mut wm_rx) = watch::channel(Watermarks::new());
    let shutdown = CancellationToken::new();
    let spool = Spool::open(dtop_twin::store::spool_config(&spool_config).unwrap()).unwrap();
    let writer = Writer::new(
        Sink::from_config(&config).await.unwrap(),
        chunk_rx,
        WriterConfig::from(&config),
        shutdown.clone(),
        stats_tx,
    )
    .with_spool(spool)
    .unwrap()
    .with_watermarks(wm_tx);
    let task = tokio::spawn(writer.run());
    let rig = RigId::new(RIG).unwrap();

    influx.kill();
    println!(
        "InfluxDB down; {BACKLOG_BLOCKS} blocks of {CHANNELS} ch x {SAMPLES} samples ({} s of rig time) arrive:",
        BACKLOG_BLOCKS as usize * SAMPLES / 1000
    );
    let chunks: Vec<Chunk> = (1..=BACKLOG_BLOCKS).map(|s| chunk(s, false)).collect();
    let total_lines: u64 = chunks.iter().map(|c| c.line_count as u64).sum();
    let t0 = Instant::now();
    for c in chunks {
        chunk_tx.send(c).await.unwrap();
    }
    let spooled = tokio::time::timeout(
        TIMEOUT,
        stats_rx.wait_for(|s| s.batches_in_memory == 0 && s.lines_pending == total_lines),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    let spool_s = t0.elapsed().as_secs_f64();
    println!(
        "  spooled in {spool_s:.2} s: {:.0} blocks/s, {:.1} MB/s of line protocol; {} batches, {:.1} MB on disk, backlog {:.0} s",
        BACKLOG_BLOCKS as f64 / spool_s,
        spooled.spool_bytes as f64 / 1e6 / spool_s,
        spooled.batches_spooled,
        spooled.spool_bytes as f64 / 1e6,
        spooled.rigs[&rig].backlog_s
    );

    influx.restart().await;
    println!("InfluxDB back; live blocks keep arriving at 10 per second while the spool replays:");
    let t1 = Instant::now();
    let live_stop = CancellationToken::new();
    let live = {
        let tx = chunk_tx.clone();
        let stop = live_stop.clone();
        tokio::spawn(async move {
            let mut seq = BACKLOG_BLOCKS;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break seq,
                    _ = tick.tick() => {
                        seq += 1;
                        if tx.send(chunk(seq, false)).await.is_err() {
                            break seq;
                        }
                    }
                }
            }
        })
    };
    tokio::time::timeout(
        TIMEOUT,
        wm_rx.wait_for(|w| w.get(&rig).is_some_and(|&s| s >= BACKLOG_BLOCKS)),
    )
    .await
    .unwrap()
    .unwrap();
    let drain_s = t1.elapsed().as_secs_f64();
    let samples = BACKLOG_BLOCKS as f64 * SAMPLES as f64;
    println!(
        "  backlog drained in {drain_s:.2} s: {:.0} blocks/s, {:.0} samples/s, {:.0} channel-samples/s, {:.0}x real time",
        BACKLOG_BLOCKS as f64 / drain_s,
        samples / drain_s,
        samples * CHANNELS as f64 / drain_s,
        samples / 1000.0 / drain_s
    );
    live_stop.cancel();
    let last = live.await.unwrap();
    tokio::time::timeout(
        TIMEOUT,
        wm_rx.wait_for(|w| w.get(&rig).is_some_and(|&s| s >= last)),
    )
    .await
    .unwrap()
    .unwrap();
    let seqs = audit::stored_seqs_v1(&influx.url, "dtop", &rig, Duration::from_secs(30))
        .await
        .unwrap();
    let report = audit::holes(1..=last, &seqs);
    println!(
        "  audit of seqs 1..={last}: {} present, {} missing, {} duplicated",
        report.present,
        report.missing,
        report.duplicated.len()
    );
    shutdown.cancel();
    drop(chunk_tx);
    let stats = task.await.unwrap();
    println!(
        "  writer: {} batches written, {} write errors, {} duplicate blocks stored",
        stats.batches_written_total,
        stats.write_errors_total,
        stats.rigs[&rig].blocks_duplicate_stored
    );
}
