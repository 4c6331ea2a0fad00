//! The rule that gives a firmware sample its time (ARCHITECTURE.md, "Sample time"): a sample's
//! timestamp follows from its index and an anchor, and the anchor survives edge restarts (the
//! acquisition task keeps [`SampleClock`] in `{state_dir}/sample_clock.json`). Pure: the wall
//! clock comes in as an argument; knows nothing of files, frames or blocks.

use serde::{Deserialize, Serialize};

/// Smallest disagreement, ns, between where the anchor puts a frame after an index jump and
/// when the frame arrived that counts as the anchor being wrong. Covers scheduling and
/// transport latency; a frame's own span is added on top (see [`tolerance_ns`]).
pub const MIN_TOLERANCE_NS: u64 = 1_000_000_000;

/// The index → time mapping of one stream: sample `index0` was at `t0_ns`, each later one a
/// `sample_period_ns` after the previous. `next_index` is the index after the last sample
/// placed, so `time_of(next_index)` is the first time no sample of this rig used yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleClock {
    pub sample_period_ns: u64,
    pub index0: u64,
    /// ns since the Unix epoch.
    pub t0_ns: u64,
    pub next_index: u64,
}

impl SampleClock {
    /// Time of sample `index`, ns since the Unix epoch (saturating; indices below `index0`
    /// are never stamped: a re-anchor starts at the frame that caused it).
    pub fn time_of(&self, index: u64) -> u64 {
        let offset = i128::from(index) - i128::from(self.index0);
        let t = i128::from(self.t0_ns) + offset * i128::from(self.sample_period_ns);
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }

    /// The first time no sample placed by this clock used.
    pub fn next_free_ns(&self) -> u64 {
        self.time_of(self.next_index)
    }
}

/// What `{state_dir}/sample_clock.json` holds, rewritten before every stream-0 block leaves
/// the acquisition task: the clock, and the index after that block's last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRecord {
    pub clock: SampleClock,
    pub blocks_end_index: u64,
}

/// File name of the [`ClockRecord`] in the state directory.
pub const CLOCK_FILE_NAME: &str = "sample_clock.json";

/// Why a frame started a new anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reanchor {
    /// No clock yet (first sample ever, or the state file was missing).
    First,
    /// The manifest's sample period changed.
    PeriodChanged,
    /// The index went backwards: the firmware restarted.
    IndexBackwards,
    /// The index jumped forward by a different span than the wall clock moved: the old anchor
    /// would put the frame's last sample `disagreement_ns` after (positive) or before
    /// (negative) its arrival.
    JumpDisagrees { disagreement_ns: i128 },
}

/// Where a frame goes: the clock to stamp it (and every later contiguous sample) with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub clock: SampleClock,
    /// `Some` when the frame started a new anchor.
    pub reanchored: Option<Reanchor>,
}

/// How far the anchor may disagree with a frame of `samples_n` samples at `sample_period_ns`
/// before it is replaced: [`MIN_TOLERANCE_NS`] or two frames' span, whichever is larger.
pub fn tolerance_ns(sample_period_ns: u64, samples_n: u64) -> u64 {
    MIN_TOLERANCE_NS.max(2 * samples_n.saturating_mul(sample_period_ns))
}

/// A frame as the clock sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAt {
    pub first_index: u64,
    pub samples_n: u64,
    /// Wall clock when it arrived, ns since the Unix epoch.
    pub arrival_ns: u64,
}

/// Where the clock so far came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prev<'a> {
    None,
    /// Restored from disk; no frame read by this run yet.
    Restored(&'a SampleClock),
    /// Frames read by this run.
    Live(&'a SampleClock),
}

/// Places `frame` after `prev`, at `sample_period_ns`. The rule:
///
/// 1. The index continues `prev` (`first_index == prev.next_index`): keep the anchor, however
///    late the frame arrives. Frames queued in the firmware while no edge read them keep the
///    times they were sampled at.
/// 2. The index jumped forward: keep the anchor unless it disagrees with the wall clock by
///    more than [`tolerance_ns`]: it would put the frame's last sample after its arrival
///    (impossible: the anchor was made on frames that had waited in the firmware's buffer),
///    or, within a run, before it (the index advanced less than the wall clock: the firmware
///    stopped counting). The first frame after a restart may be old (queued while no edge
///    read), so it keeps a restored anchor in that direction.
/// 3. No clock, a new period, or the index went backwards (firmware restart): new anchor.
///
/// A new anchor puts the frame's last sample at its arrival (it cannot have been sampled
/// later), rounded down to the period, but never before `prev.next_free_ns()`: no sample
/// gets a time an earlier one of this rig already had, across restarts too.
pub fn place(prev: Prev<'_>, sample_period_ns: u64, frame: FrameAt) -> Placement {
    let FrameAt {
        first_index,
        samples_n,
        arrival_ns,
    } = frame;
    let period = sample_period_ns.max(1);
    let (prev, restored) = match prev {
        Prev::None => (None, false),
        Prev::Restored(c) => (Some(c), true),
        Prev::Live(c) => (Some(c), false),
    };
    let span_end = first_index + samples_n.saturating_sub(1);
    let reanchor = match prev {
        None => Some(Reanchor::First),
        Some(p) if p.sample_period_ns != period => Some(Reanchor::PeriodChanged),
        Some(p) if first_index < p.next_index => Some(Reanchor::IndexBackwards),
        Some(p) if first_index == p.next_index => None,
        Some(p) => {
            let disagreement_ns = i128::from(p.time_of(span_end)) - i128::from(arrival_ns);
            let tolerance = i128::from(tolerance_ns(period, samples_n));
            let wrong = disagreement_ns > tolerance || (!restored && disagreement_ns < -tolerance);
            wrong.then_some(Reanchor::JumpDisagrees { disagreement_ns })
        }
    };
    let next_index = first_index + samples_n;
    let clock = match (reanchor, prev) {
        (None, Some(p)) => SampleClock { next_index, ..*p },
        _ => {
            let back_ns = samples_n.saturating_sub(1).saturating_mul(period);
            let first_ns = arrival_ns.saturating_sub(back_ns);
            let aligned_ns = first_ns - first_ns % period;
            let floor_ns = prev.map_or(0, SampleClock::next_free_ns);
            SampleClock {
                sample_period_ns: period,
                index0: first_index,
                t0_ns: aligned_ns.max(floor_ns),
                next_index,
            }
        }
    };
    Placement {
        clock,
        reanchored: reanchor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;
    /// 2026-01-01, a realistic wall clock.
    const T: u64 = 1_767_225_600 * S;

    fn at(first_index: u64, samples_n: u64, arrival_ns: u64) -> FrameAt {
        FrameAt {
            first_index,
            samples_n,
            arrival_ns,
        }
    }

    fn clock(index0: u64, t0_ns: u64, next_index: u64) -> SampleClock {
        SampleClock {
            sample_period_ns: MS,
            index0,
            t0_ns,
            next_index,
        }
    }

    #[test]
    fn the_first_frame_puts_its_last_sample_at_its_arrival() {
        let p = place(Prev::None, MS, at(500, 10, T + 9 * MS + 400));
        assert_eq!(p.reanchored, Some(Reanchor::First));
        assert_eq!(p.clock, clock(500, T, 510));
        assert_eq!(p.clock.time_of(509), T + 9 * MS);
    }

    #[test]
    fn contiguous_frames_keep_the_anchor_however_late_they_arrive() {
        let prev = clock(0, T, 1_000);
        // Queued in the firmware for 25 s while no edge read it.
        let p = place(Prev::Restored(&prev), MS, at(1_000, 10, T + 26 * S));
        assert_eq!(p.reanchored, None);
        assert_eq!(p.clock, clock(0, T, 1_010));
        assert_eq!(p.clock.time_of(1_000), T + S);
    }

    #[test]
    fn the_first_frame_after_a_restart_may_be_old_and_keeps_the_restored_anchor() {
        // The killed run made blocks up to sample 1 000 but had read to 1 040; the frames
        // queued since waited 25 s in the firmware.
        let restored = clock(0, T, 1_000);
        let p = place(Prev::Restored(&restored), MS, at(1_040, 10, T + 26 * S));
        assert_eq!(p.reanchored, None);
        assert_eq!(p.clock.time_of(1_040), T + S + 40 * MS);
        // Within a run the same lag means the firmware stopped counting.
        let p = place(Prev::Live(&restored), MS, at(1_040, 10, T + 26 * S));
        assert!(matches!(p.reanchored, Some(Reanchor::JumpDisagrees { .. })));
    }

    #[test]
    fn a_jump_that_spans_the_elapsed_wall_time_keeps_the_anchor() {
        // Samples 1 000..1 010 were stamped T+1 s; the edge was down 25 s and the firmware
        // kept counting: sample 26 000 arrives at T+26 s, where the anchor puts it.
        let prev = clock(0, T, 1_010);
        let p = place(Prev::Live(&prev), MS, at(26_000, 10, T + 26 * S + 15 * MS));
        assert_eq!(p.reanchored, None);
        assert_eq!(p.clock.time_of(26_000), T + 26 * S);
    }

    #[test]
    fn a_jump_from_an_anchor_made_on_stale_frames_re_anchors_at_the_arrival() {
        // The old bug: stale frames anchored at their (late) arrival, so the jump to the live
        // index would be stamped 25 s in the future.
        let stale = place(Prev::None, MS, at(1_000, 10, T + 26 * S)).clock;
        let p = place(
            Prev::Live(&stale),
            MS,
            at(26_000, 10, T + 26 * S + 500 * MS),
        );
        assert!(matches!(
            p.reanchored,
            Some(Reanchor::JumpDisagrees { disagreement_ns }) if disagreement_ns > 24 * S as i128
        ));
        assert_eq!(p.clock.time_of(26_009), T + 26 * S + 500 * MS);
        assert!(p.clock.time_of(26_000) >= stale.next_free_ns());
    }

    #[test]
    fn a_jump_shorter_than_the_elapsed_time_re_anchors_forward() {
        // The firmware stopped counting for a while: the anchor would put the frame 60 s back.
        let prev = clock(0, T, 1_000);
        let p = place(Prev::Live(&prev), MS, at(2_000, 10, T + 62 * S));
        assert!(matches!(
            p.reanchored,
            Some(Reanchor::JumpDisagrees { disagreement_ns }) if disagreement_ns < 0
        ));
        assert_eq!(p.clock.time_of(2_009), T + 62 * S);
    }

    #[test]
    fn a_firmware_restart_re_anchors_but_never_onto_times_already_used() {
        // The previous boot's stamps ran ahead of the wall clock (a fast sample clock, or a
        // simulator at speed): its last sample is at T+100 s, the restart is seen at T+50 s.
        let prev = clock(0, T, 100_000);
        let p = place(Prev::Live(&prev), MS, at(0, 10, T + 50 * S));
        assert_eq!(p.reanchored, Some(Reanchor::IndexBackwards));
        assert_eq!(p.clock.time_of(0), prev.next_free_ns());
        assert_eq!(p.clock.time_of(0), T + 100 * S);
        // An ordinary restart, after the old stamps: at the wall clock.
        let p = place(Prev::Live(&prev), MS, at(0, 10, T + 200 * S + 9 * MS));
        assert_eq!(p.clock.time_of(0), T + 200 * S);
    }

    #[test]
    fn a_new_period_re_anchors_after_the_old_samples() {
        let prev = clock(0, T, 1_000);
        let p = place(Prev::Live(&prev), 2 * MS, at(1_000, 1, T));
        assert_eq!(p.reanchored, Some(Reanchor::PeriodChanged));
        assert_eq!(p.clock.t0_ns, T + S);
    }

    #[test]
    fn the_clock_survives_a_json_round_trip() {
        let c = clock(7, T, 9);
        let json = serde_json::to_string(&c).unwrap_or_else(|e| panic!("{e}"));
        let back: SampleClock = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, c);
    }
}
