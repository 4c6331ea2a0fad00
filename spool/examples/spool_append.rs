//! Spool append throughput for SampleBlock-sized records (100 samples × 8 channels × 3 bytes
//! plus protobuf framing ≈ 2.45 kB, what an 8-channel rig at 1 kHz produces ten times a second)
//! under each fsync policy, with acks keeping the spool short as the edge's watermark would.
//!
//! Run: `cargo run --release -p dtop-spool --example spool_append [-- DIR]` (default: a
//! temporary directory under the current one, so the disk is the project's, not a tmpfs).
//! Prints records/s, MB/s, and the CPU it costs at the rig's real rate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use dtop_spool::{FsyncPolicy, Spool, SpoolConfig};

/// Payload bytes of one 100-sample, 8-channel block.
const RECORD_BYTES: usize = 2450;
/// Blocks per second of an 8-channel rig at 1 kHz in 100-sample blocks.
const RIG_BLOCKS_PER_S: f64 = 10.0;

/// User + system CPU time of this process, s (from /proc, in clock ticks of 10 ms).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap());
    let payload: Vec<u8> = (0..RECORD_BYTES).map(|i| (i * 7) as u8).collect();
    println!(
        "{RECORD_BYTES}-byte records, spool under {}",
        base.display()
    );
    println!(
        "| fsync policy | records | records/s | MB/s | CPU µs per record | CPU at 8 ch × 1 kHz |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let policies = [
        ("never", FsyncPolicy::Never, 40_000u64),
        ("interval_ms(1000)", FsyncPolicy::IntervalMs(1000), 40_000),
        ("interval_ms(100)", FsyncPolicy::IntervalMs(100), 40_000),
        ("every_n(100)", FsyncPolicy::EveryN(100), 40_000),
        ("every_n(10)", FsyncPolicy::EveryN(10), 10_000),
        ("always", FsyncPolicy::Always, 2_000),
    ];
    for (name, fsync, records) in policies {
        let dir = tempfile::Builder::new()
            .prefix("spool-bench-")
            .tempdir_in(&base)
            .unwrap();
        let mut spool = Spool::open(
            SpoolConfig::new(dir.path(), 1 << 30)
                .with_fsync(fsync)
                .with_segment_bytes(8 << 20),
        )
        .unwrap();
        let cpu0 = cpu_s();
        let t0 = Instant::now();
        for seq in 1..=records {
            let _ = spool.append(seq, &payload).unwrap();
            // The watermark trails the newest block by about a second of data.
            if seq % 100 == 0 {
                spool.ack(seq - 10).unwrap();
            }
        }
        spool.sync().unwrap();
        let wall_s = t0.elapsed().as_secs_f64();
        let cpu = cpu_s() - cpu0;
        let rate = records as f64 / wall_s;
        let mb_s = rate * RECORD_BYTES as f64 / 1e6;
        let cpu_us = cpu / records as f64 * 1e6;
        println!(
            "| {name} | {records} | {rate:.0} | {mb_s:.1} | {cpu_us:.1} | {:.3} % |",
            cpu_us * RIG_BLOCKS_PER_S / 1e6 * 100.0
        );
    }
}
