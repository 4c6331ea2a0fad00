//! Persisted watermarks: per rig, the highest seq such that every block from the rig's start up
//! to it has been acknowledged by storage (2xx). Pure tracking, plus the small state file that
//! carries the watermarks across restarts. Knows nothing of MQTT.
//!
//! "The rig's start" is the watermark carried over from the state file; for a rig the twin has
//! no record of, it is just below the oldest block the edge still holds (its birth's
//! `oldest_unconfirmed_seq`), or, from an edge that does not say, the first block storage
//! acknowledges (see ARCHITECTURE.md, "Nothing lost").
//!
//! Seqs the edge declared lost for good (`SeqLoss`) count as accounted: the watermark passes
//! them once every block below them is durable, exactly as it passes acknowledged ones. They
//! are not saved: the edge repeats every declaration until the watermark covers it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dtop_proto::RigId;
use dtop_proto::v1::{LossReason, SeqLoss};

/// Name of the state file in the spool directory.
pub const STATE_FILE_NAME: &str = "watermarks.json";
const STATE_TMP_FILE_NAME: &str = "watermarks.json.tmp";

/// What acknowledging one block did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// The watermark moved up.
    Advanced,
    /// Stored, but a lower seq is still missing.
    Pending,
    /// Already acknowledged before (a replay).
    Duplicate,
}

/// Most blocks one loss declaration may cover. A larger one is refused: a bogus range could
/// otherwise carry the watermark over seqs the edge has not even numbered yet. About 48 days of
/// 10 blocks per second; the edge splits longer losses.
pub const MAX_LOSS_BLOCKS: u64 = 1 << 25;
/// Most separate declared-lost ranges kept per rig while they wait for the watermark; a
/// declaration that would need one more is refused (the edge repeats it later).
pub const MAX_LOST_RANGES: usize = 4096;

/// A validated loss declaration: seqs `first..=last` the edge lost for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredLoss {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Blocks the edge counted in the range (normally `last - first + 1`).
    pub blocks: u64,
    /// Sample instants in them (0 when the edge does not know).
    pub samples: u64,
    /// Metric label of `SeqLoss.reason` (`spool_full`, `paused`, ...).
    pub reason: &'static str,
    /// The edge's wall clock when it detected the loss, ns since the Unix epoch (0: unknown).
    pub detected_at_ns: u64,
}

impl DeclaredLoss {
    /// Seqs in the range.
    pub fn span(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

/// Why a `SeqLoss` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LossProblem {
    #[error("the payload names rig {payload:?}, the topic another")]
    RigMismatch { payload: String },
    #[error("first_seq {first} is above last_seq {last}")]
    Inverted { first: u64, last: u64 },
    #[error("the range covers {span} blocks, more than {MAX_LOSS_BLOCKS}")]
    TooLarge { span: u64 },
}

/// Checks a decoded `SeqLoss` published on `topic_rig`'s loss topic.
pub fn check_seq_loss(topic_rig: &RigId, loss: &SeqLoss) -> Result<DeclaredLoss, LossProblem> {
    if loss.rig_id != topic_rig.as_str() {
        return Err(LossProblem::RigMismatch {
            payload: loss.rig_id.clone(),
        });
    }
    if loss.first_seq > loss.last_seq {
        return Err(LossProblem::Inverted {
            first: loss.first_seq,
            last: loss.last_seq,
        });
    }
    let span = (loss.last_seq - loss.first_seq).saturating_add(1);
    if span > MAX_LOSS_BLOCKS {
        return Err(LossProblem::TooLarge { span });
    }
    Ok(DeclaredLoss {
        first_seq: loss.first_seq,
        last_seq: loss.last_seq,
        blocks: loss.blocks,
        samples: loss.samples,
        reason: loss_reason_label(loss.reason()),
        detected_at_ns: loss.detected_at_ns,
    })
}

/// Metric label of a loss reason; the same words the edge uses in its own counters.
pub const fn loss_reason_label(reason: LossReason) -> &'static str {
    match reason {
        LossReason::Unspecified => "unspecified",
        LossReason::SpoolFull => "spool_full",
        LossReason::EvictedUnconfirmed => "evicted_unconfirmed",
        LossReason::Paused => "paused",
        LossReason::SpoolError => "spool_error",
        LossReason::Crash => "crash",
        LossReason::SpoolCorrupt => "spool_corrupt",
        LossReason::Skipped => SKIPPED_LABEL,
    }
}

/// Label of `LOSS_REASON_SKIPPED`: seqs a previous edge run reserved but did not use (or
/// numbered but never spooled before a crash). Counted apart from lost blocks.
pub const SKIPPED_LABEL: &str = "skipped";

/// What one loss declaration did to a rig's tracker; the four counts add up to its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LossApplied {
    /// Seqs newly accounted as lost: above the watermark, not acknowledged, not declared before.
    pub newly_lost: u64,
    /// Seqs storage had already acknowledged (above the watermark): the data is there.
    pub already_stored: u64,
    /// Seqs already declared lost and still waiting for the watermark (a repeat).
    pub repeated: u64,
    /// Seqs at or below the watermark: stored, or declared and passed before.
    pub below_watermark: u64,
    /// The watermark moved up.
    pub advanced: bool,
}

/// Why a declaration was not applied at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyLostRanges;

/// Declared-lost runs the watermark passed that are remembered, per rig, so a block in one
/// that storage acknowledges later is recognised as stored after all (oldest forgotten).
pub const MAX_PASSED_RUNS: usize = 1024;

/// A run of seqs declared lost for one reason (the key is its first seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LostRun {
    /// Last seq, inclusive.
    end: u64,
    reason: &'static str,
}

/// A value in a map of inclusive ranges keyed by their first seq.
trait Span: Copy {
    fn end(&self) -> u64;
    fn with_end(self, end: u64) -> Self;
}

impl Span for u64 {
    fn end(&self) -> u64 {
        *self
    }
    fn with_end(self, end: u64) -> Self {
        end
    }
}

impl Span for LostRun {
    fn end(&self) -> u64 {
        self.end
    }
    fn with_end(self, end: u64) -> Self {
        Self { end, ..self }
    }
}

/// One rig's watermark, the acknowledged seqs above it, and the seqs declared lost above it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistTracker {
    watermark: Option<u64>,
    /// Acknowledged seqs above `watermark + 1`, as inclusive ranges start → end.
    above: BTreeMap<u64, u64>,
    /// Seqs declared lost above the watermark, by first seq, disjoint from `above`.
    lost: BTreeMap<u64, LostRun>,
    /// Declared-lost runs the watermark has passed (never acknowledged by storage), at most
    /// [`MAX_PASSED_RUNS`]: a late acknowledgement in one is a block stored after all.
    passed: BTreeMap<u64, LostRun>,
    /// No watermark yet, and the rig's edge still holds seq 0 (a watermark cannot sit below 0):
    /// it starts at seq 0 rather than at whichever block storage acknowledges first.
    waits_for_seq_0: bool,
}

impl PersistTracker {
    /// Continues from a watermark carried over from a previous run.
    pub fn starting_at(watermark: Option<u64>) -> Self {
        Self {
            watermark,
            above: BTreeMap::new(),
            lost: BTreeMap::new(),
            passed: BTreeMap::new(),
            waits_for_seq_0: false,
        }
    }

    /// The rig's edge still holds every block from `first` on that no watermark covered (its
    /// birth's `oldest_unconfirmed_seq`): a tracker with no watermark yet starts just below
    /// it, so blocks the edge will still send are waited for. Ignored once there is a
    /// watermark (it comes from this twin's own records, which know better).
    pub fn expect_start(&mut self, first: u64) {
        if self.watermark.is_some() {
            return;
        }
        match first.checked_sub(1) {
            // Everything below `first` the edge already saw covered by some watermark.
            Some(below) => {
                self.raise_to(below);
            }
            None => {
                self.waits_for_seq_0 = true;
                self.start();
            }
        }
    }

    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Acknowledged ranges waiting for a lower seq.
    pub fn pending_ranges(&self) -> usize {
        self.above.len()
    }

    /// Declared-lost ranges waiting for a lower seq.
    pub fn lost_ranges(&self) -> usize {
        self.lost.len()
    }

    /// Storage is acknowledging `seq`, which the edge declared lost (waiting for the
    /// watermark, or already passed by it): it is stored after all (the edge evicted it after
    /// the broker had it, and it was still on its way). Returns the reason it was declared
    /// with, once, and forgets the seq as lost; `None` for any other seq. Call it before
    /// [`PersistTracker::record`] for a successful write.
    pub fn take_declared_lost(&mut self, seq: u64) -> Option<&'static str> {
        for runs in [&mut self.lost, &mut self.passed] {
            if let Some(run) = covering_run(runs, seq) {
                remove_seq(runs, seq);
                return Some(run.reason);
            }
        }
        None
    }

    /// Records that storage acknowledged block `seq`.
    pub fn record(&mut self, seq: u64) -> Acked {
        // Declared lost but here after all (the edge evicted it after the broker had it).
        remove_seq(&mut self.lost, seq);
        let Some(w) = self.watermark else {
            if self.waits_for_seq_0 && seq > 0 {
                self.insert_above(seq);
                return Acked::Pending;
            }
            self.waits_for_seq_0 = false;
            self.watermark = Some(seq);
            drop_through(&mut self.lost, seq);
            self.absorb();
            return Acked::Advanced;
        };
        if seq <= w {
            return Acked::Duplicate;
        }
        if seq == w + 1 {
            self.watermark = Some(seq);
            self.absorb();
            return Acked::Advanced;
        }
        if self.insert_above(seq) {
            Acked::Pending
        } else {
            Acked::Duplicate
        }
    }

    /// Adds `seq` to the acknowledged ranges above the watermark; `false` if it was there.
    fn insert_above(&mut self, seq: u64) -> bool {
        if let Some((_, &end)) = self.above.range(..=seq).next_back()
            && seq <= end
        {
            return false;
        }
        let mut start = seq;
        let mut end = seq;
        if let Some((&s, &e)) = self.above.range(..seq).next_back()
            && e + 1 == seq
        {
            start = s;
            self.above.remove(&s);
        }
        if let Some(&e) = self.above.get(&(seq + 1)) {
            end = e;
            self.above.remove(&(seq + 1));
        }
        self.above.insert(start, end);
        true
    }

    /// Waiting for seq 0: starts once it is acknowledged or declared lost.
    fn start(&mut self) {
        if self.watermark.is_some() || !self.waits_for_seq_0 {
            return;
        }
        if let Some(end) = self.above.remove(&0) {
            self.watermark = Some(end);
        } else if let Some(run) = self.lost.remove(&0) {
            self.watermark = Some(run.end);
            self.passed.insert(0, run);
        } else {
            return;
        }
        self.waits_for_seq_0 = false;
        self.absorb();
    }

    /// Raises the watermark to `seq`, known durable from elsewhere (the twin's own retained
    /// watermark on the broker, from before a restart). `false` when it was already there.
    pub fn raise_to(&mut self, seq: u64) -> bool {
        if self.watermark.is_some_and(|w| w >= seq) {
            return false;
        }
        self.watermark = Some(seq);
        drop_through(&mut self.above, seq);
        drop_through(&mut self.lost, seq);
        self.absorb();
        true
    }

    /// Accounts for seqs the edge declared lost for good: once every block below them is
    /// durable the watermark passes them. Idempotent: a repeated declaration changes nothing.
    /// Seqs storage already acknowledged stay stored (the data is there) and are only counted.
    pub fn declare_lost(
        &mut self,
        first: u64,
        last: u64,
        reason: &'static str,
    ) -> Result<LossApplied, TooManyLostRanges> {
        let mut applied = LossApplied::default();
        if first > last {
            return Ok(applied);
        }
        let mut from = first;
        if let Some(w) = self.watermark {
            if last <= w {
                applied.below_watermark = last - first + 1;
                return Ok(applied);
            }
            if first <= w {
                applied.below_watermark = w - first + 1;
                from = w + 1;
            }
        }
        // The parts of [from, last] not yet acknowledged nor declared.
        let mut fresh: Vec<(u64, u64)> = Vec::new();
        let mut at = from;
        while at <= last {
            if let Some(end) = covering(&self.above, at) {
                let end = end.min(last);
                applied.already_stored += end - at + 1;
                at = match end.checked_add(1) {
                    Some(n) => n,
                    None => break,
                };
                continue;
            }
            if let Some(end) = covering(&self.lost, at) {
                let end = end.min(last);
                applied.repeated += end - at + 1;
                at = match end.checked_add(1) {
                    Some(n) => n,
                    None => break,
                };
                continue;
            }
            // Up to the next known range, or `last`.
            let next_known = [
                self.above.range(at..).next().map(|(&s, _)| s),
                self.lost.range(at..).next().map(|(&s, _)| s),
            ]
            .into_iter()
            .flatten()
            .min();
            let end = next_known.map_or(last, |s| (s - 1).min(last));
            fresh.push((at, end));
            applied.newly_lost += end - at + 1;
            at = match end.checked_add(1) {
                Some(n) => n,
                None => break,
            };
        }
        // Each fresh piece adds a range, less one per neighbour of its reason it joins.
        let joins = |&(s, e): &(u64, u64)| {
            let left = s
                .checked_sub(1)
                .and_then(|p| covering_run(&self.lost, p))
                .is_some_and(|r| r.reason == reason);
            let right = e
                .checked_add(1)
                .and_then(|n| self.lost.get(&n))
                .is_some_and(|r| r.reason == reason);
            usize::from(left) + usize::from(right)
        };
        let added = fresh.len();
        let joined: usize = fresh.iter().map(joins).sum();
        if (self.lost.len() + added).saturating_sub(joined) > MAX_LOST_RANGES {
            return Err(TooManyLostRanges);
        }
        for (s, e) in fresh {
            insert_merged(&mut self.lost, s, LostRun { end: e, reason });
        }
        let before = self.watermark;
        self.start();
        self.absorb();
        applied.advanced = self.watermark != before;
        Ok(applied)
    }

    /// Moves the watermark over acknowledged and declared-lost ranges that now touch it.
    fn absorb(&mut self) {
        while let Some(w) = self.watermark {
            let Some(next) = w.checked_add(1) else { break };
            if let Some(end) = self.above.remove(&next) {
                self.watermark = Some(end);
            } else if let Some(run) = self.lost.remove(&next) {
                self.watermark = Some(run.end);
                self.passed.insert(next, run);
                while self.passed.len() > MAX_PASSED_RUNS {
                    self.passed.pop_first();
                }
            } else {
                break;
            }
        }
        // Ranges at or below the watermark cannot exist: records below it are duplicates, and
        // declarations below it are cut at it.
    }
}

/// The end of the range in `ranges` that contains `seq`.
fn covering<V: Span>(ranges: &BTreeMap<u64, V>, seq: u64) -> Option<u64> {
    covering_run(ranges, seq).map(|v| v.end())
}

/// The range in `ranges` that contains `seq`.
fn covering_run<V: Span>(ranges: &BTreeMap<u64, V>, seq: u64) -> Option<V> {
    ranges
        .range(..=seq)
        .next_back()
        .and_then(|(_, &v)| (seq <= v.end()).then_some(v))
}

/// Removes every seq up to `seq` from `ranges`, splitting the range that straddles it.
fn drop_through<V: Span>(ranges: &mut BTreeMap<u64, V>, seq: u64) {
    let covered: Vec<(u64, V)> = ranges.range(..=seq).map(|(&s, &v)| (s, v)).collect();
    for (s, v) in covered {
        ranges.remove(&s);
        if v.end() > seq {
            ranges.insert(seq + 1, v);
        }
    }
}

/// Removes one seq from `ranges`, splitting its range.
fn remove_seq<V: Span>(ranges: &mut BTreeMap<u64, V>, seq: u64) {
    let Some((&s, &v)) = ranges.range(..=seq).next_back() else {
        return;
    };
    if seq > v.end() {
        return;
    }
    ranges.remove(&s);
    if s < seq {
        ranges.insert(s, v.with_end(seq - 1));
    }
    if seq < v.end() {
        ranges.insert(seq + 1, v);
    }
}

/// Inserts `run` at `start` (disjoint from every run in `ranges`), merging with neighbours of
/// the same reason.
fn insert_merged(ranges: &mut BTreeMap<u64, LostRun>, mut start: u64, mut run: LostRun) {
    if let Some((&s, &r)) = ranges.range(..start).next_back()
        && r.end.checked_add(1) == Some(start)
        && r.reason == run.reason
    {
        start = s;
        ranges.remove(&s);
    }
    if let Some(next) = run.end.checked_add(1)
        && ranges.get(&next).is_some_and(|r| r.reason == run.reason)
        && let Some(r) = ranges.remove(&next)
    {
        run.end = r.end;
    }
    ranges.insert(start, run);
}

/// Reads the state file; a missing file is an empty map.
pub fn load(dir: &Path) -> std::io::Result<BTreeMap<RigId, u64>> {
    let path = dir.join(STATE_FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Replaces the state file atomically (temporary file, fsync, rename, directory fsync), so a
/// restart never sees a watermark lower than one already published.
pub fn save(dir: &Path, watermarks: &BTreeMap<RigId, u64>) -> std::io::Result<PathBuf> {
    let tmp = dir.join(STATE_TMP_FILE_NAME);
    let path = dir.join(STATE_FILE_NAME);
    let bytes = serde_json::to_vec(watermarks).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use Acked::*;

    #[test]
    fn a_new_rig_starts_below_the_oldest_block_its_edge_still_holds() {
        // Without the hint the first acknowledgement would start the watermark at 7 and tell
        // the edge to release 5 and 6, which it has not sent yet.
        let mut t = PersistTracker::default();
        t.expect_start(5);
        assert_eq!(t.watermark(), Some(4));
        assert_eq!(t.record(7), Pending);
        assert_eq!(t.record(5), Advanced);
        assert_eq!(t.watermark(), Some(5));
        assert_eq!(t.record(6), Advanced);
        assert_eq!(t.watermark(), Some(7));
        let mut old_edge = PersistTracker::default();
        assert_eq!(
            old_edge.record(7),
            Advanced,
            "no hint: the first ack starts it"
        );
    }

    #[test]
    fn a_new_rig_whose_edge_holds_seq_0_waits_for_it_or_its_loss() {
        let mut t = PersistTracker::default();
        t.expect_start(0);
        assert_eq!(t.record(2), Pending);
        assert_eq!(t.watermark(), None);
        assert_eq!(t.record(1), Pending);
        assert_eq!(t.record(0), Advanced);
        assert_eq!(t.watermark(), Some(2));

        let mut t = PersistTracker::default();
        t.expect_start(0);
        assert_eq!(t.record(1), Pending);
        t.declare_lost(0, 0, "spool_full").unwrap();
        assert_eq!(t.watermark(), Some(1));
    }

    #[test]
    fn the_start_hint_is_ignored_once_the_twin_has_a_watermark() {
        let mut t = PersistTracker::starting_at(Some(20));
        t.expect_start(5);
        assert_eq!(t.watermark(), Some(20));
        t.expect_start(30);
        assert_eq!(t.watermark(), Some(20));
    }

    #[test]
    fn in_order_acks_advance_the_watermark() {
        let mut t = PersistTracker::starting_at(Some(9));
        assert_eq!(t.record(10), Advanced);
        assert_eq!(t.record(11), Advanced);
        assert_eq!(t.watermark(), Some(11));
        assert_eq!(t.record(11), Duplicate);
        assert_eq!(t.record(3), Duplicate);
    }

    #[test]
    fn the_watermark_waits_for_a_missing_seq_then_jumps_over_what_was_stored() {
        let mut t = PersistTracker::starting_at(Some(0));
        assert_eq!(t.record(1), Advanced);
        assert_eq!(t.record(3), Pending);
        assert_eq!(t.record(5), Pending);
        assert_eq!(t.record(6), Pending);
        assert_eq!(t.record(6), Duplicate);
        assert_eq!(t.pending_ranges(), 2);
        assert_eq!(t.watermark(), Some(1));
        assert_eq!(t.record(2), Advanced);
        assert_eq!(t.watermark(), Some(3));
        assert_eq!(t.record(4), Advanced);
        assert_eq!(t.watermark(), Some(6));
        assert_eq!(t.pending_ranges(), 0);
    }

    #[test]
    fn ranges_merge_from_both_sides() {
        let mut t = PersistTracker::starting_at(Some(0));
        assert_eq!(t.record(10), Pending);
        assert_eq!(t.record(12), Pending);
        assert_eq!(t.record(11), Pending);
        assert_eq!(t.pending_ranges(), 1);
        assert_eq!(t.record(9), Pending);
        assert_eq!(t.pending_ranges(), 1);
        for s in 1..=8 {
            t.record(s);
        }
        assert_eq!(t.watermark(), Some(12));
    }

    #[test]
    fn an_unknown_rig_starts_at_its_first_acknowledged_block() {
        let mut t = PersistTracker::default();
        assert_eq!(t.watermark(), None);
        assert_eq!(t.record(500), Advanced);
        assert_eq!(t.watermark(), Some(500));
        assert_eq!(t.record(499), Duplicate);
    }

    #[test]
    fn raising_the_watermark_swallows_covered_ranges_and_joins_the_next() {
        let mut t = PersistTracker::default();
        assert!(t.raise_to(10));
        assert!(!t.raise_to(10));
        assert!(!t.raise_to(3));
        assert_eq!(t.record(12), Pending);
        assert_eq!(t.record(20), Pending);
        assert_eq!(t.record(21), Pending);
        assert!(t.raise_to(19));
        assert_eq!(t.watermark(), Some(21));
        assert_eq!(t.pending_ranges(), 0);
        let mut t = PersistTracker::starting_at(Some(0));
        for s in [5, 6, 7] {
            t.record(s);
        }
        assert!(t.raise_to(6));
        assert_eq!(t.watermark(), Some(7));
    }

    fn applied(
        newly_lost: u64,
        already_stored: u64,
        repeated: u64,
        below: u64,
        advanced: bool,
    ) -> LossApplied {
        LossApplied {
            newly_lost,
            already_stored,
            repeated,
            below_watermark: below,
            advanced,
        }
    }

    #[test]
    fn a_declared_loss_is_passed_only_once_everything_below_it_is_durable() {
        let mut t = PersistTracker::starting_at(Some(4));
        for s in 5..=7 {
            t.record(s);
        }
        // 8 and 9 are still on their way to storage; 10..=14 are lost; 15..=20 are stored.
        for s in 15..=20 {
            assert_eq!(t.record(s), Pending);
        }
        assert_eq!(
            t.declare_lost(10, 14, "spool_full"),
            Ok(applied(5, 0, 0, 0, false))
        );
        assert_eq!(t.watermark(), Some(7));
        assert_eq!(t.record(8), Advanced);
        assert_eq!(t.watermark(), Some(8));
        assert_eq!(t.record(9), Advanced);
        assert_eq!(t.watermark(), Some(20));
        assert_eq!((t.pending_ranges(), t.lost_ranges()), (0, 0));
        assert_eq!(t.record(21), Advanced);
    }

    #[test]
    fn a_declaration_right_above_the_watermark_moves_it_at_once() {
        let mut t = PersistTracker::starting_at(Some(9));
        for s in 15..=20 {
            t.record(s);
        }
        assert_eq!(
            t.declare_lost(10, 14, "spool_full"),
            Ok(applied(5, 0, 0, 0, true))
        );
        assert_eq!(t.watermark(), Some(20));
        // The edge repeats it until it sees the watermark: nothing changes, nothing is counted.
        assert_eq!(
            t.declare_lost(10, 14, "spool_full"),
            Ok(applied(0, 0, 0, 5, false))
        );
        assert_eq!(t.watermark(), Some(20));
    }

    #[test]
    fn seqs_already_stored_inside_a_declared_range_are_counted_as_stored_not_lost() {
        let mut t = PersistTracker::starting_at(Some(0));
        t.record(12);
        t.record(13);
        // 2 and 3 below the watermark, 12 and 13 stored above it: 10 seqs newly lost.
        for s in 1..=3 {
            t.record(s);
        }
        assert_eq!(
            t.declare_lost(2, 15, "spool_full"),
            Ok(applied(10, 2, 0, 2, true))
        );
        assert_eq!(t.watermark(), Some(15));
        // A partly repeated declaration counts only what is new.
        assert_eq!(t.record(20), Pending);
        assert_eq!(
            t.declare_lost(17, 18, "spool_full"),
            Ok(applied(2, 0, 0, 0, false))
        );
        assert_eq!(
            t.declare_lost(16, 19, "spool_full"),
            Ok(applied(2, 0, 2, 0, true))
        );
        assert_eq!(t.watermark(), Some(20));
    }

    #[test]
    fn a_declaration_before_any_data_waits_and_one_after_the_data_is_ignored() {
        // Before: a fresh rig whose edge lost 0..=4 before anything reached storage.
        let mut t = PersistTracker::default();
        assert_eq!(
            t.declare_lost(5, 9, "spool_full"),
            Ok(applied(5, 0, 0, 0, false))
        );
        assert_eq!(t.watermark(), None);
        assert_eq!(t.record(4), Advanced);
        assert_eq!(t.watermark(), Some(9));
        // A rig whose first stored block is past a declared range starts there.
        let mut t = PersistTracker::default();
        t.declare_lost(0, 4, "spool_full").unwrap();
        assert_eq!(t.record(7), Advanced);
        assert_eq!((t.watermark(), t.lost_ranges()), (Some(7), 0));
        // After: the data came after all and is stored; the late declaration changes nothing.
        let mut t = PersistTracker::starting_at(Some(0));
        for s in 1..=5 {
            t.record(s);
        }
        assert_eq!(
            t.declare_lost(3, 5, "spool_full"),
            Ok(applied(0, 0, 0, 3, false))
        );
        assert_eq!(t.watermark(), Some(5));
    }

    #[test]
    fn a_block_declared_lost_that_arrives_after_all_is_stored_normally() {
        let mut t = PersistTracker::starting_at(Some(0));
        t.declare_lost(3, 6, "spool_full").unwrap();
        assert_eq!(t.take_declared_lost(4), Some("spool_full"));
        assert_eq!(t.take_declared_lost(4), None);
        assert_eq!(t.record(4), Pending);
        assert_eq!(t.lost_ranges(), 2);
        assert_eq!(t.record(1), Advanced);
        assert_eq!(t.record(2), Advanced);
        assert_eq!(t.watermark(), Some(6));
    }

    #[test]
    fn a_block_acknowledged_after_the_watermark_passed_it_as_lost_is_recognised_once() {
        let mut t = PersistTracker::starting_at(Some(0));
        t.declare_lost(1, 3, "evicted_unconfirmed").unwrap();
        t.declare_lost(4, 5, "spool_full").unwrap();
        assert_eq!(t.watermark(), Some(5));
        assert_eq!(t.record(2), Duplicate);
        assert_eq!(t.take_declared_lost(2), Some("evicted_unconfirmed"));
        assert_eq!(t.take_declared_lost(2), None);
        assert_eq!(t.take_declared_lost(5), Some("spool_full"));
        assert_eq!(t.take_declared_lost(0), None);
        // A replay of a block that was simply stored is no such thing.
        assert_eq!(t.record(6), Advanced);
        assert_eq!(t.take_declared_lost(6), None);
    }

    #[test]
    fn declared_runs_of_different_reasons_do_not_merge() {
        let mut t = PersistTracker::starting_at(Some(0));
        t.declare_lost(5, 6, "paused").unwrap();
        t.declare_lost(7, 8, "crash").unwrap();
        t.declare_lost(9, 9, "crash").unwrap();
        assert_eq!(t.lost_ranges(), 2);
        for s in 1..=4 {
            t.record(s);
        }
        assert_eq!(t.watermark(), Some(9));
        assert_eq!(t.take_declared_lost(6), Some("paused"));
        assert_eq!(t.take_declared_lost(7), Some("crash"));
    }

    #[test]
    fn raising_the_watermark_drops_declared_ranges_below_it() {
        let mut t = PersistTracker::starting_at(Some(0));
        t.declare_lost(5, 9, "spool_full").unwrap();
        t.declare_lost(20, 29, "spool_full").unwrap();
        assert!(t.raise_to(7));
        assert_eq!(t.watermark(), Some(9));
        assert_eq!(t.lost_ranges(), 1);
        assert!(t.raise_to(19));
        assert_eq!(t.watermark(), Some(29));
    }

    #[test]
    fn too_many_separate_declared_ranges_are_refused_without_change() {
        let mut t = PersistTracker::starting_at(Some(0));
        for k in 0..MAX_LOST_RANGES as u64 {
            t.declare_lost(10 + 2 * k, 10 + 2 * k, "spool_full")
                .unwrap();
        }
        let far = 10 + 2 * MAX_LOST_RANGES as u64 + 5;
        assert_eq!(
            t.declare_lost(far, far, "spool_full"),
            Err(TooManyLostRanges)
        );
        // Filling a gap merges two ranges into one, so it still fits.
        assert!(t.declare_lost(11, 11, "spool_full").is_ok());
    }

    #[test]
    fn checks_a_seq_loss_for_rig_order_and_size() {
        let rig = RigId::new("r1").unwrap();
        let good = SeqLoss {
            rig_id: "r1".into(),
            first_seq: 10,
            last_seq: 14,
            blocks: 5,
            samples: 500,
            reason: LossReason::SpoolFull as i32,
            ..SeqLoss::default()
        };
        let d = check_seq_loss(&rig, &good).unwrap();
        assert_eq!((d.span(), d.reason, d.samples), (5, "spool_full", 500));
        let other = SeqLoss {
            rig_id: "r2".into(),
            ..good.clone()
        };
        assert!(matches!(
            check_seq_loss(&rig, &other),
            Err(LossProblem::RigMismatch { .. })
        ));
        let inverted = SeqLoss {
            first_seq: 15,
            ..good.clone()
        };
        assert!(matches!(
            check_seq_loss(&rig, &inverted),
            Err(LossProblem::Inverted { .. })
        ));
        let huge = SeqLoss {
            first_seq: 0,
            last_seq: u64::MAX,
            ..good
        };
        assert!(matches!(
            check_seq_loss(&rig, &huge),
            Err(LossProblem::TooLarge { .. })
        ));
    }

    #[test]
    fn the_state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let mut w = BTreeMap::new();
        w.insert(RigId::new("a").unwrap(), 7);
        w.insert(RigId::new("b-2").unwrap(), u64::MAX);
        save(dir.path(), &w).unwrap();
        assert_eq!(load(dir.path()).unwrap(), w);
    }
}
