//! What the twin's integration tests publish as an edge — a birth with two floor
//! accelerometers and blocks of 100 ramp samples at 1 kHz — and the bounded wait on the twin's
//! stats they all use. Only the twin's own tests include it (it needs `dtop_twin`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dtop_proto::Message;
use dtop_proto::v1::{Channel, ChannelKind, ChannelSamples, RigBirth, SampleBlock};
use dtop_twin::{TwinHandle, TwinStats};

/// Longest wait for the twin to reach a state.
pub const WAIT: Duration = Duration::from_secs(30);
pub const SAMPLES_PER_BLOCK: u64 = 100;
pub const PERIOD_NS: u64 = 1_000_000;
/// First sample time of block 0.
pub const T0_NS: u64 = 1_700_000_000_000_000_000;

/// A birth announcing `floor1_accel` (id 1) and `floor2_accel` (id 2), 1 mm/s² per count.
pub fn birth(rig: &str, session: u64) -> Vec<u8> {
    let channel = |id: u32, floor: u32| Channel {
        id,
        name: format!("floor{floor}_accel"),
        kind: ChannelKind::Acceleration as i32,
        unit: "m/s^2".into(),
        scale: 0.001,
        offset: 0.0,
        sample_rate_hz: 1000.0,
        floor,
        stream_id: 0,
    };
    RigBirth {
        rig_id: rig.into(),
        session,
        edge_version: "test".into(),
        channels: vec![channel(1, 1), channel(2, 2)],
        floors: 3,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Block `seq`: samples `seq·100 ..` at T0 + index·1 ms; channel 1 ramps from `seq`, channel 2
/// holds −1000 counts.
pub fn block(rig: &str, session: u64, seq: u64, backfill: bool) -> Vec<u8> {
    let n = SAMPLES_PER_BLOCK;
    SampleBlock {
        rig_id: rig.into(),
        session,
        seq,
        stream_id: 0,
        first_sample_index: seq * n,
        sample_period_ns: PERIOD_NS,
        first_timestamp_ns: T0_NS + seq * n * PERIOD_NS,
        channels: vec![
            ChannelSamples {
                channel_id: 1,
                raw: (0..n as i32).map(|k| k + seq as i32).collect(),
            },
            ChannelSamples {
                channel_id: 2,
                raw: vec![-1000; n as usize],
            },
        ],
        backfill,
        ..Default::default()
    }
    .encode_to_vec()
}

/// The first stats snapshot that satisfies `ready`; panics after [`WAIT`] or if the twin stops.
pub async fn wait_stats(
    handle: &mut TwinHandle,
    what: &str,
    ready: impl FnMut(&TwinStats) -> bool,
) -> TwinStats {
    match tokio::time::timeout(WAIT, handle.wait_for(ready)).await {
        Ok(Some(stats)) => stats,
        Ok(None) => panic!("twin stopped while waiting for {what}"),
        Err(_) => panic!(
            "timed out waiting for {what}; last stats: {:#?}",
            handle.stats()
        ),
    }
}
