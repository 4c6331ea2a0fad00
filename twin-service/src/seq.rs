//! Per-rig block sequence bookkeeping: which `SampleBlock.seq` values are new, duplicated or
//! still missing. Pure; knows nothing about MQTT, storage or time.
//!
//! The state is the highest seq seen plus the *holes* below it, as ranges. Holes are what an
//! outage produces (one range however long it lasted), so memory is bounded by the number of
//! distinct holes rather than by the number of blocks that arrived out of order.

use std::collections::BTreeMap;

/// Default bound on tracked holes; beyond it the oldest hole is given up.
pub const DEFAULT_MAX_HOLES: usize = 1024;

/// What one observed seq means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The next seq after the highest one seen.
    New,
    /// Already seen: do not store it again.
    Duplicate,
    /// Above the highest seen, leaving `missing` seqs unseen in between.
    GapOpened { missing: u64 },
    /// One of the missing seqs arrived late (typically a backfill).
    FilledHole,
    /// Below the tracked range: older than the first block this tracker saw, or inside a hole
    /// that was given up. New and duplicate cannot be told apart; store it, since storage
    /// writes are idempotent (same series, same timestamp, same values).
    Untracked,
}

impl Observation {
    /// Whether the block should be stored.
    pub const fn is_storable(self) -> bool {
        !matches!(self, Observation::Duplicate)
    }
}

/// Counters since the tracker was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqCounters {
    /// Every observed block, duplicates included.
    pub blocks_received: u64,
    /// Blocks currently missing: opened by gaps, minus late arrivals. Blocks of a given-up hole
    /// stay counted.
    pub blocks_missing: u64,
    /// Blocks observed more than once.
    pub blocks_duplicate: u64,
    /// Blocks the edge declared lost for good and that have not arrived since: no longer
    /// counted as missing.
    pub blocks_declared_lost: u64,
}

/// Tracks one rig's block sequence.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// `None` until the first block. Then: (lowest tracked seq, highest seen seq).
    range: Option<(u64, u64)>,
    /// Missing seqs as inclusive ranges, start → end, all within the tracked range.
    holes: BTreeMap<u64, u64>,
    /// Seqs the edge declared lost and that have not arrived, as inclusive ranges, within the
    /// tracked range and disjoint from `holes`.
    declared: BTreeMap<u64, u64>,
    max_holes: usize,
    counters: SeqCounters,
}

impl Default for SeqTracker {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HOLES)
    }
}

impl SeqTracker {
    /// A tracker remembering at most `max_holes` holes (at least 1).
    pub fn new(max_holes: usize) -> Self {
        Self {
            range: None,
            holes: BTreeMap::new(),
            declared: BTreeMap::new(),
            max_holes: max_holes.max(1),
            counters: SeqCounters::default(),
        }
    }

    pub fn counters(&self) -> SeqCounters {
        self.counters
    }

    /// Highest seq such that it and every tracked seq below it have been seen.
    pub fn highest_contiguous(&self) -> Option<u64> {
        let (_, highest) = self.range?;
        match self.holes.first_key_value() {
            // A hole never starts at the lowest tracked seq, which was seen, so start >= 1.
            Some((&start, _)) => Some(start - 1),
            None => Some(highest),
        }
    }

    /// Number of tracked holes.
    pub fn holes(&self) -> usize {
        self.holes.len()
    }

    /// Classifies `seq` and records it.
    pub fn observe(&mut self, seq: u64) -> Observation {
        self.counters.blocks_received += 1;
        let Some((lowest, highest)) = self.range else {
            self.range = Some((seq, seq));
            return Observation::New;
        };
        if seq < lowest {
            return Observation::Untracked;
        }
        if seq > highest {
            self.range = Some((lowest, seq));
            let missing = seq - highest - 1;
            if missing == 0 {
                return Observation::New;
            }
            self.holes.insert(highest + 1, seq - 1);
            self.counters.blocks_missing += missing;
            self.give_up_excess_holes();
            return Observation::GapOpened { missing };
        }
        if take(&mut self.declared, seq) {
            // Declared lost, and here after all.
            self.counters.blocks_declared_lost -= 1;
            return Observation::FilledHole;
        }
        let containing = self
            .holes
            .range(..=seq)
            .next_back()
            .map(|(&s, &e)| (s, e))
            .filter(|&(_, e)| seq <= e);
        match containing {
            Some((start, end)) => {
                self.holes.remove(&start);
                if start < seq {
                    self.holes.insert(start, seq - 1);
                }
                if seq < end {
                    self.holes.insert(seq + 1, end);
                }
                self.counters.blocks_missing -= 1;
                Observation::FilledHole
            }
            None => {
                self.counters.blocks_duplicate += 1;
                Observation::Duplicate
            }
        }
    }

    /// Seqs `first..=last` the edge declared lost for good: those still missing stop counting
    /// as missing and count as declared lost; those above the highest seen are expected no
    /// more (a later block above them opens no gap). Seqs already seen, or below the tracked
    /// range, are ignored; a declared seq that arrives after all is stored as a late fill.
    pub fn declare_lost(&mut self, first: u64, last: u64) {
        let Some((lowest, highest)) = self.range else {
            return;
        };
        if first > last || last < lowest {
            return;
        }
        let first = first.max(lowest);
        let inside_end = last.min(highest);
        if first <= inside_end {
            let mut at = first;
            while at <= inside_end {
                let Some((&start, &end)) = self.holes.range(..=inside_end).find(|&(_, &e)| e >= at)
                else {
                    break;
                };
                let (from, to) = (start.max(at), end.min(inside_end));
                if from > to {
                    break;
                }
                self.holes.remove(&start);
                if start < from {
                    self.holes.insert(start, from - 1);
                }
                if to < end {
                    self.holes.insert(to + 1, end);
                }
                self.declared.insert(from, to);
                let n = to - from + 1;
                self.counters.blocks_missing -= n;
                self.counters.blocks_declared_lost += n;
                at = match to.checked_add(1) {
                    Some(next) => next,
                    None => break,
                };
            }
        }
        if last > highest {
            let from = first.max(highest + 1);
            self.declared.insert(from, last);
            self.counters.blocks_declared_lost += last - from + 1;
            self.range = Some((lowest, last));
        }
    }

    /// Forgets every seq and tracks again from `seq` (already observed, so counters are kept as
    /// they are), for when the edge lost its sequence state and started again from a lower seq.
    pub fn restart_at(&mut self, seq: u64) {
        self.range = Some((seq, seq));
        self.holes.clear();
        self.declared.clear();
    }

    fn give_up_excess_holes(&mut self) {
        while self.declared.len() > self.max_holes {
            // Forgotten declarations stay counted, like given-up holes.
            self.declared.pop_first();
        }
        while self.holes.len() > self.max_holes {
            let Some((_, end)) = self.holes.pop_first() else {
                break;
            };
            if let Some((lowest, _)) = &mut self.range {
                *lowest = end + 1;
            }
        }
    }
}

/// Removes `seq` from the inclusive `ranges`, splitting its range; `false` if absent.
fn take(ranges: &mut BTreeMap<u64, u64>, seq: u64) -> bool {
    let Some((&start, &end)) = ranges.range(..=seq).next_back() else {
        return false;
    };
    if seq > end {
        return false;
    }
    ranges.remove(&start);
    if start < seq {
        ranges.insert(start, seq - 1);
    }
    if seq < end {
        ranges.insert(seq + 1, end);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observation::*;

    fn observe_all(t: &mut SeqTracker, seqs: &[u64]) -> Vec<Observation> {
        seqs.iter().map(|&s| t.observe(s)).collect()
    }

    #[test]
    fn in_order_blocks_are_new_and_contiguous() {
        let mut t = SeqTracker::default();
        assert_eq!(observe_all(&mut t, &[10, 11, 12]), [New, New, New]);
        assert_eq!(t.highest_contiguous(), Some(12));
        assert_eq!(
            t.counters(),
            SeqCounters {
                blocks_received: 3,
                blocks_missing: 0,
                blocks_duplicate: 0,
                blocks_declared_lost: 0,
            }
        );
    }

    #[test]
    fn declared_losses_are_no_longer_missing_and_may_still_arrive() {
        let mut t = SeqTracker::default();
        observe_all(&mut t, &[0, 1, 10]);
        assert_eq!(t.counters().blocks_missing, 8);
        t.declare_lost(3, 5);
        t.declare_lost(3, 5); // repeated by the edge: no change
        assert_eq!(t.counters().blocks_missing, 5);
        assert_eq!(t.counters().blocks_declared_lost, 3);
        assert_eq!(t.holes(), 2, "2 and 6..=9 are still missing");
        assert_eq!(t.observe(4), FilledHole, "here after all: stored");
        assert_eq!(t.observe(4), Duplicate);
        assert_eq!(t.counters().blocks_declared_lost, 2);
        assert_eq!(t.counters().blocks_missing, 5);
    }

    #[test]
    fn a_loss_declared_ahead_of_the_next_block_opens_no_gap() {
        let mut t = SeqTracker::default();
        observe_all(&mut t, &[0, 1]);
        t.declare_lost(2, 4);
        assert_eq!(t.observe(5), New);
        assert_eq!(t.counters().blocks_missing, 0);
        assert_eq!(t.counters().blocks_declared_lost, 3);
        assert_eq!(t.highest_contiguous(), Some(5));
        assert_eq!(t.observe(3), FilledHole);
        // Declarations for seqs already seen, or before the first block, change nothing.
        t.declare_lost(0, 1);
        assert_eq!(t.counters().blocks_declared_lost, 2);
        let mut fresh = SeqTracker::default();
        fresh.declare_lost(0, 9);
        assert_eq!(fresh.counters(), SeqCounters::default());
    }

    #[test]
    fn repeated_block_is_a_duplicate() {
        let mut t = SeqTracker::default();
        assert_eq!(
            observe_all(&mut t, &[1, 2, 2, 1]),
            [New, New, Duplicate, Duplicate]
        );
        assert_eq!(t.counters().blocks_duplicate, 2);
        assert_eq!(t.counters().blocks_received, 4);
    }

    #[test]
    fn a_jump_opens_a_gap_that_late_blocks_fill_in_any_order() {
        let mut t = SeqTracker::default();
        assert_eq!(
            observe_all(&mut t, &[1, 5]),
            [New, GapOpened { missing: 3 }]
        );
        assert_eq!(t.counters().blocks_missing, 3);
        assert_eq!(t.highest_contiguous(), Some(1));
        assert_eq!(t.observe(3), FilledHole);
        assert_eq!(t.holes(), 2);
        assert_eq!(t.observe(3), Duplicate);
        assert_eq!(t.observe(2), FilledHole);
        assert_eq!(t.highest_contiguous(), Some(3));
        assert_eq!(t.observe(4), FilledHole);
        assert_eq!(t.highest_contiguous(), Some(5));
        assert_eq!(t.holes(), 0);
        assert_eq!(
            t.counters(),
            SeqCounters {
                blocks_received: 6,
                blocks_missing: 0,
                blocks_duplicate: 1,
                blocks_declared_lost: 0,
            }
        );
    }

    #[test]
    fn blocks_received_above_a_hole_are_duplicates_when_repeated() {
        let mut t = SeqTracker::default();
        assert_eq!(
            observe_all(&mut t, &[1, 3, 4, 4, 3]),
            [New, GapOpened { missing: 1 }, New, Duplicate, Duplicate]
        );
        assert_eq!(t.highest_contiguous(), Some(1));
    }

    #[test]
    fn blocks_older_than_the_first_seen_are_untracked_and_storable() {
        let mut t = SeqTracker::default();
        assert_eq!(
            observe_all(&mut t, &[100, 99, 99]),
            [New, Untracked, Untracked]
        );
        assert!(Untracked.is_storable());
        assert!(!Duplicate.is_storable());
        assert_eq!(t.counters().blocks_missing, 0);
    }

    #[test]
    fn gives_up_the_oldest_hole_beyond_the_bound_and_keeps_it_counted() {
        let mut t = SeqTracker::new(2);
        assert_eq!(
            observe_all(&mut t, &[0, 2, 4, 6]),
            [
                New,
                GapOpened { missing: 1 },
                GapOpened { missing: 1 },
                GapOpened { missing: 1 }
            ]
        );
        assert_eq!(t.holes(), 2);
        assert_eq!(t.highest_contiguous(), Some(2));
        assert_eq!(t.observe(1), Untracked);
        assert_eq!(t.observe(3), FilledHole);
        assert_eq!(t.counters().blocks_missing, 2);
    }

    #[test]
    fn restart_forgets_seqs_but_keeps_counters() {
        let mut t = SeqTracker::default();
        assert_eq!(
            observe_all(&mut t, &[50, 52, 0]),
            [New, GapOpened { missing: 1 }, Untracked]
        );
        t.restart_at(0);
        assert_eq!(t.highest_contiguous(), Some(0));
        assert_eq!(t.observe(1), New);
        assert_eq!(t.observe(0), Duplicate);
        assert_eq!(t.counters().blocks_received, 5);
        assert_eq!(t.counters().blocks_missing, 1);
    }

    #[test]
    fn seq_zero_and_max_do_not_overflow() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), New);
        assert_eq!(
            t.observe(u64::MAX),
            GapOpened {
                missing: u64::MAX - 1
            }
        );
        assert_eq!(t.observe(u64::MAX - 1), FilledHole);
        assert_eq!(t.observe(u64::MAX), Duplicate);
    }
}
