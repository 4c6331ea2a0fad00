//! Owns the control-loop latency probe: when each sample was taken, and for every actuator
//! command that names the sample it was computed from (PROTOCOL.md §4.4
//! `origin_sample_index`), how long after that sample it was applied. Pure: the caller passes
//! the clock in; writing the CSV is the caller's job.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

/// Frames whose production time is remembered. A drive older than this many frames is
/// counted as unmatched: at 1 kHz and one sample per frame that is 4 s.
const REMEMBERED_FRAMES: usize = 4096;
/// Commands recorded at most (about 100 MB of CSV); later ones are only counted.
const MAX_RECORDS: usize = 1 << 22;

/// One applied command that named its origin sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopRecord {
    /// The sample the force was computed from.
    pub origin_sample_index: u64,
    /// The first sample taken with the force in effect.
    pub applied_at_sample_index: u64,
    /// From taking the origin sample to applying the force.
    pub latency: Duration,
}

/// Production times of recent frames, and the latency of every command since start.
#[derive(Debug, Default)]
pub struct LatencyProbe {
    /// (first sample index, samples, taken at), oldest first.
    frames: VecDeque<(u64, u64, Duration)>,
    records: Vec<LoopRecord>,
    /// Commands whose origin sample was too old, from the future, or past `MAX_RECORDS`.
    unmatched_total: u64,
    /// Origin of the last command recorded: the edge refreshes the same drive with new
    /// commands (PROTOCOL.md §7.4), and only the first one measures the loop.
    last_origin: Option<u64>,
}

impl LatencyProbe {
    /// Notes that `count` samples from `first_sample_index` on were taken at `at`.
    pub fn sampled(&mut self, first_sample_index: u64, count: u64, at: Duration) {
        if self.frames.len() == REMEMBERED_FRAMES {
            self.frames.pop_front();
        }
        self.frames.push_back((first_sample_index, count, at));
    }

    /// Notes a command computed from `origin_sample_index`, applied at `at`, in effect from
    /// sample `applied_at_sample_index` on.
    pub fn applied(
        &mut self,
        origin_sample_index: u64,
        applied_at_sample_index: u64,
        at: Duration,
    ) {
        if self.last_origin == Some(origin_sample_index) {
            return;
        }
        self.last_origin = Some(origin_sample_index);
        let taken = self
            .frames
            .iter()
            .rev()
            .find(|(first, count, _)| (*first..first + count).contains(&origin_sample_index))
            .map(|(_, _, taken)| *taken);
        match taken {
            Some(taken) if self.records.len() < MAX_RECORDS => self.records.push(LoopRecord {
                origin_sample_index,
                applied_at_sample_index,
                latency: at.saturating_sub(taken),
            }),
            _ => self.unmatched_total += 1,
        }
    }

    /// Every command recorded so far, in the order applied.
    pub fn records(&self) -> &[LoopRecord] {
        &self.records
    }

    /// Commands that could not be matched to a sample.
    pub fn unmatched_total(&self) -> u64 {
        self.unmatched_total
    }

    /// The records as CSV with a header: `origin_sample_index,applied_at_sample_index,latency_ns`.
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(40 * (self.records.len() + 1));
        out.push_str("origin_sample_index,applied_at_sample_index,latency_ns\n");
        for r in &self.records {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{},{},{}",
                r.origin_sample_index,
                r.applied_at_sample_index,
                r.latency.as_nanos()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn latency_runs_from_the_frame_that_held_the_origin_sample() {
        let mut probe = LatencyProbe::default();
        probe.sampled(0, 10, 10 * MS);
        probe.sampled(10, 10, 20 * MS);
        probe.applied(13, 20, 20 * MS + Duration::from_micros(250));
        assert_eq!(
            probe.records(),
            &[LoopRecord {
                origin_sample_index: 13,
                applied_at_sample_index: 20,
                latency: Duration::from_micros(250),
            }]
        );
        assert!(probe.to_csv().ends_with("13,20,250000\n"));
        // A refresh of the same drive measures nothing new.
        probe.applied(13, 21, 21 * MS);
        assert_eq!(probe.records().len(), 1);
    }

    #[test]
    fn forgotten_or_future_origins_are_counted_not_recorded() {
        let mut probe = LatencyProbe::default();
        for i in 0..(REMEMBERED_FRAMES as u64 + 1) {
            probe.sampled(i, 1, MS * i as u32);
        }
        probe.applied(0, 5000, 5 * MS);
        probe.applied(1_000_000, 5000, 5 * MS);
        assert!(probe.records().is_empty());
        assert_eq!(probe.unmatched_total(), 2);
    }
}
