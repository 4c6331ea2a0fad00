//! Turns the firmware's sample frames into `SampleBlock`s: block boundaries, sample-index
//! continuity, timestamps ([`crate::sample_clock`]), the samples no block carries (declared on
//! the next block) and block sequence numbers. Pure and synchronous: the wall clock comes in as
//! an argument and the caller persists [`Batcher::next_seq`] and [`Batcher::clock`]; knows
//! nothing of serial ports or MQTT.

use dtop_proto::RigId;
use dtop_proto::v1::{ChannelSamples, ClockSync, SampleBlock, SampleLossReason};

use crate::sample_clock::{self, FrameAt, Prev, Reanchor, SampleClock};

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

/// Samples the firmware produced that no block will carry, declared on the next block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredLoss {
    pub samples: u64,
    pub reason: SampleLossReason,
}

/// The wire reason's label, for logs and metrics.
pub const fn loss_reason_label(reason: SampleLossReason) -> &'static str {
    match reason {
        SampleLossReason::EdgeDown => "edge_down",
        SampleLossReason::NotDelivered => "not_delivered",
        SampleLossReason::FirmwareRestart => "firmware_restart",
        SampleLossReason::Unspecified => "unspecified",
    }
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
    /// Samples before this frame declared lost (on the block this frame starts).
    pub declared_lost: Option<DeclaredLoss>,
    /// Why this frame started a new timestamp anchor, if it did.
    pub reanchored: Option<Reanchor>,
}

/// The block being filled.
#[derive(Debug, Clone)]
struct Partial {
    first_sample_index: u64,
    /// One vector per channel, in layout order.
    raw: Vec<Vec<i32>>,
    /// Declared on this block: samples right before it that no block carries.
    lost_before: Option<DeclaredLoss>,
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
    /// Index → time; its `next_index` is where the next frame should start.
    clock: Option<SampleClock>,
    /// The clock came from disk and no frame was read since (see [`sample_clock::place`]).
    clock_restored: bool,
    /// Every sample of this stream below this index is in a block or declared lost; `None`
    /// when unknown (no loss is declared before the first frame then).
    accounted_to: Option<u64>,
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
            clock: None,
            clock_restored: false,
            accounted_to: None,
            partial: None,
        }
    }

    /// Continues a previous run: `clock` as it persisted it, and every sample below
    /// `accounted_to` in a block it made durable (or declared). The first frame's gap from
    /// `accounted_to` is declared `edge_down`.
    pub fn resume(&mut self, clock: Option<SampleClock>, accounted_to: u64) {
        self.clock_restored = clock.is_some();
        self.clock = clock;
        self.accounted_to = Some(accounted_to);
    }

    /// The index → time mapping so far (persist it with every block).
    pub fn clock(&self) -> Option<SampleClock> {
        self.clock
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
    /// a different one closes the partial block (a new sample period re-anchors timestamps at
    /// the next sample, after the old ones).
    pub fn set_layout(&mut self, layout: StreamLayout) -> Option<SampleBlock> {
        if self.layout.as_ref() == Some(&layout) {
            return None;
        }
        let closed = self.flush();
        self.layout = Some(layout);
        closed
    }

    /// Adds one frame: `raw` is sample-major (`raw[s * channels + c]`), starting at
    /// `first_sample_index`. `now_ns` is the wall clock (ns since the Unix epoch) at arrival,
    /// used only where [`sample_clock::place`] (re-)anchors timestamps.
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
        if let Some(expected) = self.clock.map(|c| c.next_index) {
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
            }
        }
        if sample_count == 0 {
            return Ok(out);
        }
        let first_of_run = self.clock_restored || self.clock.is_none();
        let mut lost_before = match self.accounted_to {
            Some(to) if first_sample_index > to => Some(DeclaredLoss {
                samples: first_sample_index - to,
                reason: if first_of_run {
                    SampleLossReason::EdgeDown
                } else {
                    SampleLossReason::NotDelivered
                },
            }),
            // A new boot counts from 0; the old boot's tail after `to` is unknown.
            Some(to) if first_sample_index < to && first_sample_index > 0 => Some(DeclaredLoss {
                samples: first_sample_index,
                reason: SampleLossReason::FirmwareRestart,
            }),
            _ => None,
        };
        out.declared_lost = lost_before;
        let prev = match (&self.clock, self.clock_restored) {
            (None, _) => Prev::None,
            (Some(c), true) => Prev::Restored(c),
            (Some(c), false) => Prev::Live(c),
        };
        let frame = FrameAt {
            first_index: first_sample_index,
            samples_n: sample_count as u64,
            arrival_ns: now_ns,
        };
        let placement = sample_clock::place(prev, period_ns, frame);
        out.reanchored = placement.reanchored;
        self.clock = Some(placement.clock);
        self.clock_restored = false;

        let block_samples = self.block_samples;
        for (s, sample) in raw.chunks_exact(channels).enumerate() {
            let partial = self.partial.get_or_insert_with(|| Partial {
                first_sample_index: first_sample_index + s as u64,
                raw: vec![Vec::with_capacity(block_samples); channels],
                lost_before: lost_before.take(),
            });
            for (column, value) in partial.raw.iter_mut().zip(sample) {
                column.push(*value);
            }
            if partial.len() == block_samples {
                out.blocks.extend(self.flush());
            }
        }
        self.accounted_to = Some(first_sample_index + sample_count as u64);
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
        self.clock.map(|c| c.next_index)
    }

    /// Closes the partial block, if any (shutdown, or a discontinuity).
    pub fn flush(&mut self) -> Option<SampleBlock> {
        let partial = self.partial.take()?;
        // A partial block only exists after push() checked the layout and placed its first
        // frame; every later frame in it continued that clock (a discontinuity flushes first).
        let (layout, clock) = (self.layout.as_ref()?, self.clock?);
        let period_ns = clock.sample_period_ns;
        let first_timestamp_ns = clock.time_of(partial.first_sample_index);
        let lost = partial.lost_before.unwrap_or(DeclaredLoss {
            samples: 0,
            reason: SampleLossReason::Unspecified,
        });
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
            samples_lost_before: lost.samples,
            samples_lost_reason: lost.reason as i32,
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
            samples_lost_before: 0,
            samples_lost_reason: 0,
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
        // The first frame's last sample (index 2) arrived at 5.0024567 s: sample 0 was at
        // 5.000 s, rounded down to the period.
        let now_ns = 5_002_456_789;
        let t0 = 5_000_000_000;
        let first = pushed(&mut b, 0, 3, now_ns);
        assert_eq!(
            first,
            Pushed {
                reanchored: Some(Reanchor::First),
                ..Pushed::default()
            }
        );
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
        // The first frame's last sample (1001) is at its arrival, rounded down to the period.
        let blocks = pushed(&mut b, 1000, 2, t0 + MS_NS + 1).blocks;
        let later = pushed(&mut b, 1002, 2, t0 + 9_999 * MS_NS).blocks;
        assert_eq!(blocks[0].first_timestamp_ns, t0);
        assert_eq!(later[0].first_timestamp_ns, t0 + 2 * MS_NS);
    }

    #[test]
    fn closes_the_partial_block_early_at_a_gap_keeps_the_clock_and_declares_the_gap() {
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
        let mut after_gap = expected_block(2, 10, 4, t0);
        after_gap.samples_lost_before = 4;
        after_gap.samples_lost_reason = SampleLossReason::NotDelivered as i32;
        assert_eq!(out.blocks, vec![expected_block(1, 4, 2, t0), after_gap]);
    }

    #[test]
    fn re_anchors_the_clock_when_the_firmware_restarts() {
        let mut b = Batcher::new(rig(), 4, 0);
        b.set_layout(layout());
        pushed(&mut b, 100, 2, 0);
        let restart_ns = 60_003 * MS_NS + 123;
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

    /// A batcher resumed after a run that made blocks up to sample `accounted_to`, whose clock
    /// put sample 0 at `t0` and had read up to `clock_next`.
    fn resumed(accounted_to: u64, clock_next: u64, t0: u64) -> Batcher {
        let mut b = Batcher::new(rig(), 4, 50);
        b.set_layout(layout());
        let clock = SampleClock {
            sample_period_ns: MS_NS,
            index0: 0,
            t0_ns: t0,
            next_index: clock_next,
        };
        b.resume(Some(clock), accounted_to);
        b
    }

    #[test]
    fn a_restarted_edge_stamps_queued_frames_on_the_old_clock_and_declares_what_it_never_read() {
        const S: u64 = 1_000 * MS_NS;
        let t0 = 1_000_000 * S;
        // The killed run made blocks to sample 1 000 and read to 1 008; its queued frames
        // arrive 25 s later, then the live index, 25 s on.
        let mut b = resumed(1_000, 1_008, t0);
        let stale = pushed(&mut b, 1_008, 4, t0 + 26 * S);
        assert_eq!(
            stale.declared_lost,
            Some(DeclaredLoss {
                samples: 8,
                reason: SampleLossReason::EdgeDown
            })
        );
        assert_eq!(stale.blocks[0].first_timestamp_ns, t0 + 1_008 * MS_NS);
        assert_eq!(stale.blocks[0].samples_lost_before, 8);
        let live = pushed(&mut b, 26_000, 4, t0 + 26 * S + 3 * MS_NS + 10);
        assert_eq!(live.reanchored, None);
        assert_eq!(live.blocks[0].first_timestamp_ns, t0 + 26 * S);
        assert_eq!(
            (
                live.blocks[0].samples_lost_before,
                live.blocks[0].samples_lost_reason
            ),
            (26_000 - 1_012, SampleLossReason::NotDelivered as i32)
        );
        let next = pushed(&mut b, 26_004, 4, t0 + 26 * S + 7 * MS_NS);
        assert_eq!(next.blocks[0].samples_lost_before, 0);
    }

    #[test]
    fn a_firmware_restart_during_the_outage_declares_the_new_boots_unread_samples() {
        let mut b = resumed(5_000, 5_000, 0);
        let out = pushed(&mut b, 300, 4, 10_000 * MS_NS);
        assert_eq!(out.reanchored, Some(Reanchor::IndexBackwards));
        assert_eq!(
            (
                out.blocks[0].samples_lost_before,
                out.blocks[0].samples_lost_reason
            ),
            (300, SampleLossReason::FirmwareRestart as i32)
        );
        // After every time the old boot used.
        assert!(out.blocks[0].first_timestamp_ns >= 5_000 * MS_NS);
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
            samples_lost_before: u64::MAX,
            samples_lost_reason: SampleLossReason::FirmwareRestart as i32,
        };
        assert!(
            block.encoded_len() <= max_encoded_block_bytes(16, n),
            "{} bytes",
            block.encoded_len()
        );
    }
}
