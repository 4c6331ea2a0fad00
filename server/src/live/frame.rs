//! Owns the binary WebSocket frame a browser gets for live data: its layout, the pure encoder
//! (from a `SampleBlock` and the birth's scales, or from a `TwinState`) and a decoder for tests
//! and the RMS. Knows nothing about sockets or who may see what.
//!
//! # Layout (version 1, every number little-endian)
//! ```text
//! offset  size      field
//! 0       u8        version = 1
//! 1       u8        kind: 1 = measured samples, 2 = twin estimate
//! 2       u16       stream id (rig-local; 0 is the firmware stream; 0 for estimates)
//! 4       u16       channel count C
//! 6       u16       reserved, 0
//! 8       u32       samples per channel N
//! 12      u64       first sample index (stream-local; for estimates the stream-0 index)
//! 20      u64       first sample time, ns since the Unix epoch
//! 28      u64       sample period, ns (0 for estimates)
//! 36      C × u16   channel ids (rig-local: the birth's `Channel.id`; estimates use
//!                   0x1000 + floor for displacement, m, and 0x2000 + floor for velocity, m/s)
//! ..      0 or 2    zero padding, so the values start on a 4-byte boundary
//! ..      C×N × f32 values in SI units, channel-major; NaN where the sample carries no value
//! ```
//! A browser reads it with one `DataView` for the header and `Float32Array` views on the values,
//! without copying.

use bytes::{BufMut, Bytes, BytesMut};
use dtop_proto::RAW_NO_VALUE;
use dtop_proto::v1::{Channel, SampleBlock, TwinState};

/// Layout version in byte 0.
pub const VERSION: u8 = 1;
/// Bytes before the channel ids.
pub const HEADER_BYTES: usize = 36;
/// Channel id offset of an estimated displacement (add the floor).
pub const DISPLACEMENT_ID: u16 = 0x1000;
/// Channel id offset of an estimated velocity (add the floor).
pub const VELOCITY_ID: u16 = 0x2000;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Measured samples, from a `SampleBlock`.
    Samples = 1,
    /// The twin's estimated displacements and velocities, from a `TwinState`.
    Estimate = 2,
}

/// A decoded frame (tests, RMS).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// What it carries.
    pub kind: FrameKind,
    /// Rig-local stream id.
    pub stream_id: u16,
    /// First sample index.
    pub first_sample_index: u64,
    /// First sample time, ns since the Unix epoch.
    pub first_timestamp_ns: u64,
    /// Sample period, ns.
    pub sample_period_ns: u64,
    /// `(channel id, values)` in frame order.
    pub channels: Vec<(u16, Vec<f32>)>,
}

impl Frame {
    /// Samples per channel.
    pub fn samples(&self) -> usize {
        self.channels.first().map_or(0, |(_, v)| v.len())
    }
}

fn values_offset(channels: usize) -> usize {
    (HEADER_BYTES + 2 * channels).next_multiple_of(4)
}

/// Encodes a frame from its parts; every channel must have the same length (shorter ones are
/// padded with NaN, so a malformed input cannot make a malformed frame).
pub fn encode(frame: &Frame) -> Bytes {
    let c = frame.channels.len();
    let n = frame.samples();
    let offset = values_offset(c);
    let mut out = BytesMut::with_capacity(offset + 4 * c * n);
    out.put_u8(VERSION);
    out.put_u8(frame.kind as u8);
    out.put_u16_le(frame.stream_id);
    out.put_u16_le(u16::try_from(c).unwrap_or(u16::MAX));
    out.put_u16_le(0);
    out.put_u32_le(u32::try_from(n).unwrap_or(u32::MAX));
    out.put_u64_le(frame.first_sample_index);
    out.put_u64_le(frame.first_timestamp_ns);
    out.put_u64_le(frame.sample_period_ns);
    for (id, _) in &frame.channels {
        out.put_u16_le(*id);
    }
    out.put_bytes(0, offset - out.len());
    for (_, values) in &frame.channels {
        for k in 0..n {
            out.put_f32_le(values.get(k).copied().unwrap_or(f32::NAN));
        }
    }
    out.freeze()
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header says.
    #[error("frame too short: {0} bytes")]
    TooShort(usize),
    /// Unknown version or kind.
    #[error("unknown frame version {version} or kind {kind}")]
    Unknown {
        /// Byte 0.
        version: u8,
        /// Byte 1.
        kind: u8,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes a frame.
///
/// # Errors
/// [`FrameError`] when the bytes are short or of another version.
pub fn decode(b: &[u8]) -> Result<Frame, FrameError> {
    if b.len() < HEADER_BYTES {
        return Err(FrameError::TooShort(b.len()));
    }
    let kind = match (b[0], b[1]) {
        (VERSION, 1) => FrameKind::Samples,
        (VERSION, 2) => FrameKind::Estimate,
        (version, kind) => return Err(FrameError::Unknown { version, kind }),
    };
    let c = usize::from(u16_at(b, 4));
    let n = u32_at(b, 8) as usize;
    let offset = values_offset(c);
    if b.len() < offset + 4 * c * n {
        return Err(FrameError::TooShort(b.len()));
    }
    let channels = (0..c)
        .map(|i| {
            let id = u16_at(b, HEADER_BYTES + 2 * i);
            let start = offset + 4 * i * n;
            let values = (0..n)
                .map(|k| f32::from_le_bytes(u32_at(b, start + 4 * k).to_le_bytes()))
                .collect();
            (id, values)
        })
        .collect();
    Ok(Frame {
        kind,
        stream_id: u16_at(b, 2),
        first_sample_index: u64_at(b, 12),
        first_timestamp_ns: u64_at(b, 20),
        sample_period_ns: u64_at(b, 28),
        channels,
    })
}

/// The frame of a `SampleBlock`, scaled with the birth's channels (`raw × scale + offset`;
/// `RAW_NO_VALUE` and channels the birth does not know become NaN).
pub fn from_block(block: &SampleBlock, birth_channels: &[Channel]) -> Frame {
    let channels = block
        .channels
        .iter()
        .map(|cs| {
            let scale = birth_channels.iter().find(|c| c.id == cs.channel_id);
            let values = cs
                .raw
                .iter()
                .map(|&raw| match scale {
                    Some(c) if raw != RAW_NO_VALUE => (f64::from(raw) * c.scale + c.offset) as f32,
                    _ => f32::NAN,
                })
                .collect();
            (u16::try_from(cs.channel_id).unwrap_or(u16::MAX), values)
        })
        .collect();
    Frame {
        kind: FrameKind::Samples,
        stream_id: u16::try_from(block.stream_id).unwrap_or(u16::MAX),
        first_sample_index: block.first_sample_index,
        first_timestamp_ns: block.first_timestamp_ns,
        sample_period_ns: block.sample_period_ns,
        channels,
    }
}

/// The frame of a `TwinState`: one sample of every floor's displacement and velocity.
pub fn from_twin_state(state: &TwinState) -> Frame {
    let mut channels = Vec::with_capacity(2 * state.floors.len());
    for f in &state.floors {
        let floor = u16::try_from(f.floor).unwrap_or(0x0fff).min(0x0fff);
        channels.push((DISPLACEMENT_ID + floor, vec![f.displacement_m as f32]));
    }
    for f in &state.floors {
        let floor = u16::try_from(f.floor).unwrap_or(0x0fff).min(0x0fff);
        channels.push((VELOCITY_ID + floor, vec![f.velocity_m_s as f32]));
    }
    Frame {
        kind: FrameKind::Estimate,
        stream_id: 0,
        first_sample_index: state.sample_index,
        first_timestamp_ns: state.timestamp_ns,
        sample_period_ns: 0,
        channels,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use dtop_proto::v1::{ChannelSamples, FloorState};

    #[test]
    fn encodes_the_documented_layout_byte_for_byte() {
        let frame = Frame {
            kind: FrameKind::Samples,
            stream_id: 2,
            first_sample_index: 7,
            first_timestamp_ns: 1_000,
            sample_period_ns: 1_000_000,
            channels: vec![(5, vec![1.0, -2.5]), (9, vec![0.5, f32::NAN])],
        };
        let b = encode(&frame);
        #[rustfmt::skip]
        let header: [u8; 40] = [
            1, 1,                    // version 1, kind samples
            2, 0,                    // stream 2
            2, 0,                    // 2 channels
            0, 0,                    // reserved
            2, 0, 0, 0,              // 2 samples per channel
            7, 0, 0, 0, 0, 0, 0, 0,  // first sample index 7
            0xe8, 3, 0, 0, 0, 0, 0, 0, // first time 1000 ns
            0x40, 0x42, 0x0f, 0, 0, 0, 0, 0, // period 1 ms
            5, 0, 9, 0,              // channel ids 5, 9 (already 4-byte aligned)
        ];
        assert_eq!(&b[..40], &header);
        assert_eq!(&b[40..44], &1.0f32.to_le_bytes());
        assert_eq!(&b[44..48], &(-2.5f32).to_le_bytes());
        assert_eq!(b.len(), 40 + 16);
        let back = decode(&b).unwrap();
        assert_eq!(back.channels[0], (5, vec![1.0, -2.5]));
        assert!(back.channels[1].1[1].is_nan());
        assert_eq!(back.first_sample_index, 7);
    }

    #[test]
    fn pads_an_odd_channel_count_so_values_are_four_byte_aligned() {
        let frame = Frame {
            kind: FrameKind::Estimate,
            stream_id: 0,
            first_sample_index: 1,
            first_timestamp_ns: 2,
            sample_period_ns: 0,
            channels: vec![(1, vec![3.0]), (2, vec![4.0]), (3, vec![5.0])],
        };
        let b = encode(&frame);
        assert_eq!(values_offset(3), 44);
        assert_eq!(&b[42..44], &[0, 0]);
        assert_eq!(decode(&b).unwrap(), frame);
        assert_eq!(decode(&b[..40]), Err(FrameError::TooShort(40)));
    }

    #[test]
    fn scales_raw_counts_and_marks_missing_values_as_nan() {
        let birth = [Channel {
            id: 3,
            scale: 0.5,
            offset: 1.0,
            ..Channel::default()
        }];
        let block = SampleBlock {
            first_sample_index: 100,
            channels: vec![
                ChannelSamples {
                    channel_id: 3,
                    raw: vec![2, RAW_NO_VALUE, -4],
                },
                ChannelSamples {
                    channel_id: 8,
                    raw: vec![1, 1, 1],
                },
            ],
            ..SampleBlock::default()
        };
        let f = decode(&encode(&from_block(&block, &birth))).unwrap();
        assert_eq!(f.channels[0].1[0], 2.0);
        assert!(f.channels[0].1[1].is_nan());
        assert_eq!(f.channels[0].1[2], -1.0);
        assert!(
            f.channels[1].1.iter().all(|v| v.is_nan()),
            "unknown channel"
        );
    }

    #[test]
    fn an_estimate_carries_displacements_then_velocities_by_floor() {
        let state = TwinState {
            sample_index: 9,
            floors: vec![
                FloorState {
                    floor: 1,
                    displacement_m: 0.25,
                    velocity_m_s: -1.0,
                    ..FloorState::default()
                },
                FloorState {
                    floor: 2,
                    displacement_m: 0.5,
                    velocity_m_s: 2.0,
                    ..FloorState::default()
                },
            ],
            ..TwinState::default()
        };
        let f = decode(&encode(&from_twin_state(&state))).unwrap();
        let ids: Vec<u16> = f.channels.iter().map(|c| c.0).collect();
        assert_eq!(ids, [0x1001, 0x1002, 0x2001, 0x2002]);
        assert_eq!(f.channels[3].1, [2.0]);
        assert_eq!(f.kind, FrameKind::Estimate);
    }
}
