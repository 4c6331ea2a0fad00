//! Benchmark: the edge's block spool in-process: append throughput and its CPU cost at
//! 8 channels × 1 kHz (100-sample blocks, 10 per second), per fsync policy; and how fast a
//! backlog is read back for replay.
//!
//! Run: `cargo run --release -p dtop-edge --example spool_bench -- [BLOCKS]` (default 20 000
//! blocks, about 33 minutes of rig data). Writes into a temporary directory on the current
//! file system's `/tmp`.

use std::time::{Duration, Instant};

use dtop_edge::backlog::{Backlog, BacklogConfig};
use dtop_proto::v1::{ChannelSamples, SampleBlock};
use dtop_spool::{FsyncPolicy, FullPolicy};

const CHANNELS: u32 = 8;
const BLOCK_SAMPLES: usize = 100;
/// 8 channels × 1 kHz in 100-sample blocks.
const BLOCKS_PER_S: f64 = 10.0;

/// CPU time of this thread (on-CPU ns from `/proc/thread-self/schedstat`, Linux).
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// A block of plausible ADC counts (a few hundred counts of noise around a slow sine).
fn block(seq: u64) -> SampleBlock {
    let mut x = seq.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let channels = (0..CHANNELS)
        .map(|c| ChannelSamples {
            channel_id: c,
            raw: (0..BLOCK_SAMPLES)
                .map(|k| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let noise = ((x >> 33) % 512) as i32 - 256;
                    let t = (seq as usize * BLOCK_SAMPLES + k) as f64 * 1e-3;
                    (20_000.0 * (t * 2.0).sin()) as i32 + noise
                })
                .collect(),
        })
        .collect();
    SampleBlock {
        rig_id: "bench".into(),
        seq,
        stream_id: 0,
        first_sample_index: seq * BLOCK_SAMPLES as u64,
        sample_period_ns: 1_000_000,
        first_timestamp_ns: 1_700_000_000_000_000_000 + seq * 100_000_000,
        channels,
        ..SampleBlock::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let blocks: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let prepared: Vec<SampleBlock> = (0..blocks).map(block).collect();
    let bytes_per_block = prepared
        .iter()
        .map(dtop_proto::Message::encoded_len)
        .sum::<usize>() as f64
        / blocks as f64;
    println!(
        "spool_bench: {blocks} blocks of {CHANNELS} channels x {BLOCK_SAMPLES} samples, {bytes_per_block:.0} bytes each encoded"
    );
    for (name, fsync) in [
        ("interval 1000 ms (default)", FsyncPolicy::IntervalMs(1000)),
        ("never", FsyncPolicy::Never),
        ("always", FsyncPolicy::Always),
    ] {
        let dir = tempfile::tempdir()?;
        let config = BacklogConfig {
            dir: dir.path().join("spool"),
            capacity_bytes: 1 << 34,
            full: FullPolicy::DropOldest,
            fsync,
            stall_after: Duration::from_secs(10),
        };
        let mut backlog = Backlog::open(&config)?;
        // `always` pays one device flush per block: fewer blocks keep the run short.
        let n = if fsync == FsyncPolicy::Always {
            blocks.min(2_000)
        } else {
            blocks
        };
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        for b in &prepared[..n as usize] {
            backlog.append(b)?;
        }
        backlog.sync()?;
        let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
        let per_block_us = cpu.as_secs_f64() * 1e6 / n as f64;
        println!(
            "append, fsync {name}: {:.0} blocks/s ({:.1} MB/s) wall; {per_block_us:.1} us CPU per block = {:.3} % of one core at 8 ch x 1 kHz",
            n as f64 / wall.as_secs_f64(),
            n as f64 * bytes_per_block / wall.as_secs_f64() / 1e6,
            per_block_us * BLOCKS_PER_S / 1e4,
        );
        if fsync == FsyncPolicy::IntervalMs(1000) {
            // Reopen (index rebuild, as after a restart), then read everything back as a replay.
            let open0 = Instant::now();
            drop(backlog);
            let mut backlog = Backlog::open(&config)?;
            let reopen = open0.elapsed();
            let read0 = Instant::now();
            backlog.replay_all();
            let mut read = 0u64;
            while backlog.next_replay()?.is_some() {
                read += 1;
            }
            let read_wall = read0.elapsed();
            println!(
                "reopen with {n} unacked blocks: {:.0} ms; replay read-back: {:.0} blocks/s ({:.1} MB/s, {:.0}x real time at 8 ch x 1 kHz)",
                reopen.as_secs_f64() * 1e3,
                read as f64 / read_wall.as_secs_f64(),
                read as f64 * bytes_per_block / read_wall.as_secs_f64() / 1e6,
                read as f64 / read_wall.as_secs_f64() / BLOCKS_PER_S,
            );
        }
    }
    Ok(())
}
