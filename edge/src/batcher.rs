//! Turns the firmware's sample frames into `SampleBlock`s: block boundaries, sample-index
//! continuity, timestamps and block sequence numbers. Pure and synchronous: the wall clock comes
//! in as an argument and the caller persists [`Batcher::next_seq`]; knows nothing of serial
//! ports or MQTT.

use dtop_proto::RigId;
use dtop_proto::v1::{ChannelSamples, ClockSync, SampleBlock};

/// Upper bound on the protobuf size of a `SampleBlock` with `channels` channels of
/// `samples` samples each, bytes.
///
/// Every `sint32` is at most a 5-byte varint; each `ChannelSamples` adds a channel id (≤ 6 bytes)
/// and three tag+length prefixes (≤ 1 + 5 bytes each); the block's own scalar fields and a
/// 64-byte rig id fit comfortably in 256 bytes.
pub const fn max_encoded_block_bytes(channels: usize, samples: usize) -> usize {
    256 + channels * (6 + 3 * 6 + 5 * samples)
}

/// What a stream looks like, from the firmware's `Manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLayout {
    /// Channel ids in the order the firmware interleaves them.
    pub channel_ids: Vec<u32>,
    /// Sample period, ns (rounded to whole ns).
    pub sample_period_ns: u64,
}

impl StreamLayout {
    /// Layout of a stream sampled at `sample_rate_mhz` (millihertz, as in the firmware
    /// Manifest). `None` for a zero rate.
    pub fn from_rate_mhz(channel_ids: Vec<u32>, sample_rate_mhz: u32) -> Option<Self> {
        if sample_rate_mhz == 0 {
            return None;
        }
        let sample_period_ns =
            (1_000_000_000_000u64 + u64::from(sample_rate_mhz) / 2) / u64::from(sample_rate_mhz);
        Some(Self {
            channel_ids,
            sample_period_ns: sample_period_ns.max(1),
        })
    }

    /// Layout of the firmware's stream as its manifest describes it.
    pub fn from_manifest(manifest: &dtop_firmware::Manifest) -> Option<Self> {
        let ids = manifest
            .channels()
            .iter()
            .map(|c| u32::from(c.id))
            .collect();
        Self::from_rate_mhz(ids, manifest.sample_rate_mhz)
    }
}

/// A break in the firmware's sample index, reported so the shell can log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discontinuity {
    /// Samples `expected..got` never arrived.
    Gap {
        expected: u64,
        got: u64,
        missing: u64,
    },
    /// The index went backwards (firmware restart): timestamps are re-anchored.
    Restart { expected: u64, got: u64 },
}

/// Why a frame was not accepted. Nothing in the batcher changes when one is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("samples arrived before any manifest")]
    NoLayout,
    #[error("frame carries {got} channels; the manifest announced {expected}")]
    ChannelCount { expected: usize, got: usize },
    #[error("frame holds {len} values, not a whole number of {channels}-channel samples")]
    Ragged { len: usize, channels: usize },
}

/// What one frame produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pushed {
    /// Completed blocks, in order (at most a few per frame).
    pub blocks: Vec<SampleBlock>,
    /// A discontinuity found at the start of this frame.
    pub discontinuity: Option<Discontinuity>,
}

/// Where timestamps come from: wall time `t0_ns` was sample `index0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    index0: u64,
    t0_ns: u64,
}

/// The block being filled.
#[derive(Debug, Clone)]
struct Partial {
    first_sample_index: u64,
    /// One vector per channel, in layout order.
    raw: Vec<Vec<i32>>,
}

impl Partial {
    fn len(&self) -> usize {
        self.raw.first().map_or(0, Vec::len)
    }
}

/// Batches one stream of one rig (stream 0, the firmware's, unless made with
/// [`Batcher::for_stream`]).
#[derive(Debug, Clone)]
pub struct Batcher {
    rig_id: RigId,
    stream_id: u32,
    block_samples: usize,
    next_seq: u64,
    layout: Option<StreamLayout>,
    anchor: Option<Anchor>,
    /// Index the next frame should start at, once any sample has been seen.
    expected_index: Option<u64>,
    partial: Option<Partial>,
}

/// The firmware's serial stream.
const STREAM_ID: u32 = 0;

impl Batcher {
    /// `next_seq` is the persisted counter: the first block gets it.
    pub fn new(rig_id: RigId, block_samples: usize, next_seq: u64) -> Self {
        Self::for_stream(rig_id, STREAM_ID, block_samples, next_seq)
    }

    /// A batcher for stream `stream_id` (a polled Modbus device's, say).
    pub fn for_stream(rig_id: RigId, stream_id: u32, block_samples: usize, next_seq: u64) -> Self {
        Self {
            rig_id,
            stream_id,
            block_samples: block_samples.max(1),
            next_seq,
            layout: None,
            anchor: None,
            expected_index: None,
            partial: None,
        }
    }

    /// Sequence number the next block will get; persist it after every block.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Continues the rig-wide block sequence from `next_seq`, when several batchers (one per
    /// stream) share it.
    pub fn set_next_seq(&mut self, next_seq: u64) {
        self.next_seq = next_seq;
    }

    pub fn layout(&self) -> Option<&StreamLayout> {
        self.layout.as_ref()
    }

    /// Adopts the stream layout from a (new) manifest. The same layout again changes nothing;
    /// a different one closes the partial block and re-anchors timestamps at the next sample.
    pub fn set_layout(&mut self, layout: StreamLayout) -> Option<SampleBlock> {
        if self.layout.as_ref() == Some(&layout) {
            return None;
        }
        let closed = self.flush();
        self.layout = Some(layout);
        self.anchor = None;
        self.expected_index = None;
        closed
    }

    /// Adds one frame: `raw` is sample-major (`raw[s * channels + c]`), starting at
    /// `first_sample_index`. `now_ns` is the wall clock (ns since the Unix epoch) at arrival,
    /// used only to anchor the first sample of a session.
    pub fn push(
        &mut self,
        first_sample_index: u64,
        channel_count: usize,
        raw: &[i32],
        now_ns: u64,
    ) -> Result<Pushed, BatchError> {
        let layout = self.layout.as_ref().ok_or(BatchError::NoLayout)?;
        let channels = layout.channel_ids.len();
        if channel_count != channels {
            return Err(BatchError::ChannelCount {
                expected: channels,
                got: channel_count,
            });
        }
        if channels == 0 || !raw.chunks_exact(channels).remainder().is_empty() {
            return Err(BatchError::Ragged {
                len: raw.len(),
                channels,
            });
        }
        let period_ns = layout.sample_period_ns;
        let sample_count = raw.len() / channels;

        let mut out = Pushed::default();
        if let Some(expected) = self.expected_index {
            if first_sample_index > expected {
                out.discontinuity = Some(Discontinuity::Gap {
                    expected,
                    got: first_sample_index,
                    missing: first_sample_index - expected,
                });
                out.blocks.extend(self.flush());
            } else if first_sample_index < expected {
                out.discontinuity = Some(Discontinuity::Restart {
                    expected,
                    got: first_sample_index,
                });
                out.blocks.extend(self.flush());
                self.anchor = None;
            }
        }
        if sample_count == 0 {
            return Ok(out);
        }
        if self.anchor.is_none() {
            self.anchor = Some(Anchor {
                index0: first_sample_index,
                t0_ns: now_ns - now_ns % period_ns,
            });
        }

        let block_samples = self.block_samples;
        for (s, sample) in raw.chunks_exact(channels).enumerate() {
            let partial = self.partial.get_or_insert_with(|| Partial {
                first_sample_index: first_sample_index + s as u64,
                raw: vec![Vec::with_capacity(block_samples); channels],
            });
            for (column, value) in partial.raw.iter_mut().zip(sample) {
                column.push(*value);
            }
            if partial.len() == block_samples {
                out.blocks.extend(self.flush());
            }
        }
        self.expected_index = Some(first_sample_index + sample_count as u64);
        Ok(out)
    }

    /// Samples per block from now on; the partial block, if any, is closed first so every block
    /// keeps one length.
    pub fn set_block_samples(&mut self, block_samples: usize) -> Option<SampleBlock> {
        let closed = self.flush();
        self.block_samples = block_samples.max(1);
        closed
    }

    /// The index the next sample of this stream should carry, once samples flowed.
    pub fn expected_index(&self) -> Option<u64> {
        self.expected_index
    }

    /// Closes the partial block, if any (shutdown, or a discontinuity).
    pub fn flush(&mut self) -> Option<SampleBlock> {
        let partial = self.partial.take()?;
        // A partial block only exists after push() checked the layout and set the anchor.
        let (layout, anchor) = (self.layout.as_ref()?, self.anchor?);
        let period_ns = layout.sample_period_ns;
        let first_timestamp_ns =
            anchor.t0_ns + (partial.first_sample_index - anchor.index0) * period_ns;
        let seq = self.next_seq;
        self.next_seq += 1;
        Some(SampleBlock {
            rig_id: self.rig_id.to_string(),
            session: 0,
            seq,
            stream_id: self.stream_id,
            first_sample_index: partial.first_sample_index,
            sample_period_ns: period_ns,
            first_timestamp_ns,
            clock_sync: ClockSync::FreeRunning as i32,
            clock_uncertainty_us: 0,
            channels: layout
                .channel_ids
                .iter()
                .zip(partial.raw)
                .map(|(&channel_id, raw)| ChannelSamples { channel_id, raw })
                .collect(),
            backfill: false,
        })
    }
}

/// Samples (per channel) a block carries.
pub fn block_sample_count(block: &SampleBlock) -> usize {
    block.channels.first().map_or(0, |c| c.raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS_NS: u64 = 1_000_000;

    fn rig() -> RigId {
        RigId::new("r1").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Two channels (ids 10 and 11) at 1 kHz.
    fn layout() -> StreamLayout {
        StreamLayout::from_rate_mhz(vec![10, 11], 1_000_000).unwrap_or_else(|| panic!("zero rate"))
    }

    /// Frame of `n` samples from `first`: channel 10 carries the index, channel 11 its negation.
    fn frame(first: u64, n: u64) -> Vec<i32> {
        (first..first + n)
            .flat_map(|i| [i as i32, -(i as i32)])
            .collect()
    }

    fn expected_block(seq: u64, first: u64, n: u64, t0_ns: u64) -> SampleBlock {
        SampleBlock {
            rig_id: "r1".into(),
            session: 0,
            seq,
            stream_id: 0,
            first_sample_index: first,
            sample_period_ns: MS_NS,
            first_timestamp_ns: t0_ns + first * MS_NS,
            clock_sync: ClockSync::FreeRunning as i32,
            clock_uncertainty_us: 0,
            channels: vec![
                ChannelSamples {
                    channel_id: 10,
                    raw: (first..first + n).map(|i| i as i32).collect(),
                },
                ChannelSamples {
                    channel_id: 11,
                    raw: (first..first + n).map(|i| -(i as i32)).collect(),
                },
            ],
            backfill: false,
        }
    }

    fn pushed(b: &mut Batcher, first: u64, n: u64, now_ns: u64) -> Pushed {
        b.push(first, 2, &frame(first, n), now_ns)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn period_is_rounded_from_millihertz() {
        assert_eq!(layout().sample_period_ns, MS_NS);
        assert_eq!(
            StreamLayout::from_rate_mhz(vec![0], 3_000_000).map(|l| l.sample_period_ns),
            Some(333_333)
        );
        assert_eq!(StreamLayout::from_rate_mhz(vec![0], 0), None);
    }

    #[test]
    fn cuts_frames_into_blocks_of_exactly_block_samples() {
        let mut b = Batcher::new(rig(), 4, 7);
        assert_eq!(b.set_layout(layout()), None);
        // Wall clock 5.0004567 s: anchor rounds down to 5.000 s... plus whole ms.
        let now_ns = 5_000_456_789;
        let t0 = 5_000_000_000;
        let first = pushed(&mut b, 0, 3, now_ns);
        assert_eq!(first, Pushed::default());
        let second = pushed(&mut b, 3, 6, now_ns + 99 * MS_NS);
        assert_eq!(
            second.blocks,
            vec![expected_block(7, 0, 4, t0), expected_block(8, 4, 4, t0)]
        );
        assert_eq!(second.discontinuity, None);
        assert_eq!(b.next_seq(), 9);
        assert_eq!(b.flush(), Some(expected_block(9, 8, 1, t0)));
        assert_eq!(b.flush(), None);
    }

    #[test]
    fn timestamps_follow_the_sample_index_not_the_arrival_time() {
        let mut b = Batcher::new(rig(), 2, 0);
        b.set_layout(layout());
        let t0 = 1_000 * MS_NS;
        // The anchor is the first frame's index (1000) at the rounded-down wall clock.
        let blocks = pushed(&mut b, 1000, 2, t0 + 1).blocks;
        let later = pushed(&mut b, 1002, 2, t0 + 9_999 * MS_NS).blocks;
        assert_eq!(blocks[0].first_timestamp_ns, t0);
        assert_eq!(later[0].first_timestamp_ns, t0 + 2 * MS_NS);
    }

    #[test]
    fn closes_the_partial_block_early_at_a_gap_and_keeps_the_clock() {
        let mut b = Batcher::new(rig(), 4, 0);
        b.set_layout(layout());
        let t0 = 0;
        assert!(pushed(&mut b, 0, 6, 0).blocks.len() == 1);
        // Samples 6..10 are lost.
        let out = pushed(&mut b, 10, 4, 0);
        assert_eq!(
            out.discontinuity,
            Some(Discontinuity::Gap {
                expected: 6,
                got: 10,
                missing: 4
            })
        );
        assert_eq!(
            out.blocks,
            vec![expected_block(1, 4, 2, t0), expected_block(2, 10, 4, t0)]
        );
    }

    #[test]
    fn re_anchors_the_clock_when_the_firmware_restarts() {
        let mut b = Batcher::new(rig(), 4, 0);
        b.set_layout(layout());
        pushed(&mut b, 100, 2, 0);
        let restart_ns = 60_000 * MS_NS + 123;
        let out = pushed(&mut b, 0, 4, restart_ns);
        assert_eq!(
            out.discontinuity,
            Some(Discontinuity::Restart {
                expected: 102,
                got: 0
            })
        );
        let mut old = expected_block(0, 100, 2, 0);
        old.first_timestamp_ns = 0;
        assert_eq!(
            out.blocks,
            vec![old, expected_block(1, 0, 4, 60_000 * MS_NS)]
        );
    }

    #[test]
    fn a_new_layout_closes_the_block_and_an_identical_one_does_not() {
        let mut b = Batcher::new(rig(), 4, 0);
        b.set_layout(layout());
        pushed(&mut b, 0, 2, 0);
        assert_eq!(b.set_layout(layout()), None);
        pushed(&mut b, 2, 1, 0);
        let three = StreamLayout::from_rate_mhz(vec![1, 2, 3], 1_000_000)
            .unwrap_or_else(|| panic!("zero rate"));
        assert_eq!(b.set_layout(three), Some(expected_block(0, 0, 3, 0)));
        assert_eq!(
            b.push(3, 2, &frame(3, 1), 0),
            Err(BatchError::ChannelCount {
                expected: 3,
                got: 2
            })
        );
    }

    #[test]
    fn refuses_samples_before_a_manifest_and_ragged_frames() {
        let mut b = Batcher::new(rig(), 4, 0);
        assert_eq!(b.push(0, 2, &frame(0, 1), 0), Err(BatchError::NoLayout));
        b.set_layout(layout());
        assert_eq!(
            b.push(0, 2, &[1, 2, 3], 0),
            Err(BatchError::Ragged {
                len: 3,
                channels: 2
            })
        );
        assert_eq!(b.next_seq(), 0);
    }

    #[test]
    fn the_default_block_fits_the_size_limit_with_all_channels() {
        use dtop_proto::Message;
        let n = 100;
        let block = SampleBlock {
            rig_id: "x".repeat(64),
            session: u64::MAX,
            seq: u64::MAX,
            stream_id: u32::MAX,
            first_sample_index: u64::MAX,
            sample_period_ns: u64::MAX,
            first_timestamp_ns: u64::MAX,
            clock_sync: ClockSync::Ptp as i32,
            clock_uncertainty_us: u32::MAX,
            channels: (0..16)
                .map(|c| ChannelSamples {
                    channel_id: u32::MAX - c,
                    raw: vec![i32::MIN; n],
                })
                .collect(),
            backfill: true,
        };
        assert!(
            block.encoded_len() <= max_encoded_block_bytes(16, n),
            "{} bytes",
            block.encoded_len()
        );
    }
}
