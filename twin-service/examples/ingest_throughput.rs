//! Benchmark: the twin's per-block CPU path — protobuf decode → validation → seq tracking →
//! live stats → line-protocol encode — in samples per second on one core.
//!
//! Run: `cargo run --release -p dtop-twin --example ingest_throughput`
//! Bounded: a fixed number of pre-encoded blocks per configuration; no I/O.

use std::time::Instant;

use bytes::Bytes;
use dtop_proto::v1::{Channel, ChannelKind, ChannelSamples, ClockSync, RigBirth, SampleBlock};
use dtop_proto::{Message, RigId};
use dtop_twin::lineproto::Precision;
use dtop_twin::rig::{Event, RigState};

const BLOCK_SAMPLES: usize = 100;
const BLOCKS: u64 = 20_000;

fn birth(rig: &str, channels: u32) -> RigBirth {
    RigBirth {
        rig_id: rig.to_owned(),
        session: 1,
        channels: (0..channels)
            .map(|id| Channel {
                id,
                name: format!("floor{}_accel", id + 1),
                kind: ChannelKind::Acceleration as i32,
                unit: "m/s^2".to_owned(),
                scale: 1.17e-4,
                offset: 0.0,
                sample_rate_hz: 1000.0,
                floor: id + 1,
                stream_id: 0,
            })
            .collect(),
        floors: channels,
        ..RigBirth::default()
    }
}

fn block(rig: &str, channels: u32, seq: u64) -> Bytes {
    let first = seq * BLOCK_SAMPLES as u64;
    let block = SampleBlock {
        rig_id: rig.to_owned(),
        session: 1,
        seq,
        stream_id: 0,
        first_sample_index: first,
        sample_period_ns: 1_000_000,
        first_timestamp_ns: 1_700_000_000_000_000_000 + first * 1_000_000,
        clock_sync: ClockSync::FreeRunning as i32,
        clock_uncertainty_us: 0,
        channels: (0..channels)
            .map(|c| ChannelSamples {
                channel_id: c,
                // Realistic magnitudes: a few thousand counts around zero.
                raw: (0..BLOCK_SAMPLES as i32)
                    .map(|k| ((k * 7919 + c as i32 * 104_729) % 40_000) - 20_000)
                    .collect(),
            })
            .collect(),
        backfill: false,
        ..SampleBlock::default()
    };
    Bytes::from(block.encode_to_vec())
}

fn main() {
    println!(
        "twin ingest: decode → validate → seq → stats → line protocol, one core, {BLOCK_SAMPLES}-sample blocks"
    );
    for channels in [4_u32, 8] {
        let rig = "bench-rig";
        let mut state = RigState::new(
            RigId::new(rig).unwrap_or_else(|e| panic!("{e}")),
            Precision::Us,
            64,
        );
        let now = tokio::time::Instant::now();
        state.handle(
            &Event::Birth(Bytes::from(birth(rig, channels).encode_to_vec())),
            now,
        );
        let payloads: Vec<Bytes> = (0..BLOCKS).map(|seq| block(rig, channels, seq)).collect();
        let started = Instant::now();
        let mut lines = 0_usize;
        let mut bytes = 0_usize;
        for p in &payloads {
            for chunk in state.handle(&Event::Samples(p.clone()), now) {
                lines += chunk.line_count;
                bytes += chunk.lines.len();
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let instants = BLOCKS as f64 * BLOCK_SAMPLES as f64;
        println!(
            "  {channels} channels: {:.2} M sample instants/s, {:.2} M channel-samples/s, {:.0} MB/s of line protocol ({lines} lines, {:.3} s)",
            instants / secs / 1e6,
            instants * f64::from(channels) / secs / 1e6,
            bytes as f64 / secs / 1e6,
            secs
        );
    }
}
