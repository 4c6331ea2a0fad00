//! Benchmark: the twin's per-block CPU path with state estimation — protobuf decode →
//! validation → seq tracking → live stats → line-protocol encode → Kalman filter step per
//! sample (and the 10 Hz state) — for the Southampton rig (3 floor accelerometers + the force
//! gauge), in channel-samples per second on one core. The same path without a model is
//! measured alongside, so the filter's share is visible.
//!
//! Run: `cargo run --release -p dtop-twin --example ingest_kalman_throughput`
//! Bounded: a fixed number of pre-encoded blocks; no I/O.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dtop_proto::v1::{Channel, ChannelKind, ChannelSamples, RigBirth, SampleBlock};
use dtop_proto::{Message, RigId};
use dtop_twin::config::ModelConfig;
use dtop_twin::lineproto::Precision;
use dtop_twin::rig::{Event, RigState};

const BLOCK_SAMPLES: usize = 100;
const BLOCKS: u64 = 20_000;
const CHANNELS: u32 = 4;

fn birth(rig: &str) -> RigBirth {
    let channel = |id: u32, kind: ChannelKind, floor: u32, name: String| Channel {
        id,
        name,
        kind: kind as i32,
        unit: String::new(),
        scale: 1.17e-4,
        offset: 0.0,
        sample_rate_hz: 1000.0,
        floor,
        stream_id: 0,
    };
    let mut channels: Vec<Channel> = (1..=3)
        .map(|f| channel(f, ChannelKind::Acceleration, f, format!("floor{f}_accel")))
        .collect();
    channels.push(channel(4, ChannelKind::Force, 1, "shaker_force".to_owned()));
    RigBirth {
        rig_id: rig.to_owned(),
        session: 1,
        channels,
        floors: 3,
        ..RigBirth::default()
    }
}

fn block(rig: &str, seq: u64) -> Bytes {
    let first = seq * BLOCK_SAMPLES as u64;
    let block = SampleBlock {
        rig_id: rig.to_owned(),
        session: 1,
        seq,
        stream_id: 0,
        first_sample_index: first,
        sample_period_ns: 1_000_000,
        first_timestamp_ns: 1_700_000_000_000_000_000 + first * 1_000_000,
        channels: (1..=CHANNELS)
            .map(|c| ChannelSamples {
                channel_id: c,
                raw: (0..BLOCK_SAMPLES as i32)
                    .map(|k| ((k * 7919 + c as i32 * 104_729) % 4_000) - 2_000)
                    .collect(),
            })
            .collect(),
        ..SampleBlock::default()
    };
    Bytes::from(block.encode_to_vec())
}

fn run(model: Option<Arc<ModelConfig>>) -> (f64, usize) {
    let rig = "bench-rig";
    let mut state = RigState::new(
        RigId::new(rig).unwrap_or_else(|e| panic!("{e}")),
        Precision::Us,
        64,
    );
    if let Some(model) = model {
        state = state.with_model(model);
    }
    let now = tokio::time::Instant::now();
    state.handle(&Event::Birth(Bytes::from(birth(rig).encode_to_vec())), now);
    let payloads: Vec<Bytes> = (0..BLOCKS).map(|seq| block(rig, seq)).collect();
    let started = Instant::now();
    let mut states = 0;
    for p in &payloads {
        std::hint::black_box(state.handle(&Event::Samples(p.clone()), now));
        states += state.take_states().count();
    }
    (started.elapsed().as_secs_f64(), states)
}

fn main() {
    println!(
        "twin ingest + Kalman filter, Southampton rig ({CHANNELS} channels), one core, {BLOCK_SAMPLES}-sample blocks"
    );
    let channel_samples = (BLOCKS as usize * BLOCK_SAMPLES * CHANNELS as usize) as f64;
    for (label, model) in [
        ("without estimation", None),
        (
            "with the Kalman filter",
            Some(Arc::new(ModelConfig::default())),
        ),
    ] {
        let (secs, states) = run(model);
        println!(
            "  {label:<24} {:>6.2} M channel-samples/s ({:.2} M samples/s), {states} states",
            channel_samples / secs / 1e6,
            channel_samples / CHANNELS as f64 / secs / 1e6,
        );
    }
}
