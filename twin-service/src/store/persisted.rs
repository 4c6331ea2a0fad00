//! Persisted watermarks: per rig, the highest seq such that every block from the rig's start up
//! to it has been acknowledged by storage (2xx). Pure tracking, plus the small state file that
//! carries the watermarks across restarts. Knows nothing of MQTT.
//!
//! "The rig's start" is the watermark carried over from the state file; for a rig the twin has
//! no record of, it is the first block storage acknowledges (see ARCHITECTURE.md, "Nothing
//! lost").

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dtop_proto::RigId;

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

/// One rig's watermark and the acknowledged seqs above it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistTracker {
    watermark: Option<u64>,
    /// Acknowledged seqs above `watermark + 1`, as inclusive ranges start → end.
    above: BTreeMap<u64, u64>,
}

impl PersistTracker {
    /// Continues from a watermark carried over from a previous run.
    pub fn starting_at(watermark: Option<u64>) -> Self {
        Self {
            watermark,
            above: BTreeMap::new(),
        }
    }

    pub fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// Acknowledged ranges waiting for a lower seq.
    pub fn pending_ranges(&self) -> usize {
        self.above.len()
    }

    /// Records that storage acknowledged block `seq`.
    pub fn record(&mut self, seq: u64) -> Acked {
        let Some(w) = self.watermark else {
            self.watermark = Some(seq);
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
        // Inside an existing range?
        if let Some((_, &end)) = self.above.range(..=seq).next_back()
            && seq <= end
        {
            return Acked::Duplicate;
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
        Acked::Pending
    }

    /// Raises the watermark to `seq`, known durable from elsewhere (the twin's own retained
    /// watermark on the broker, from before a restart). `false` when it was already there.
    pub fn raise_to(&mut self, seq: u64) -> bool {
        if self.watermark.is_some_and(|w| w >= seq) {
            return false;
        }
        self.watermark = Some(seq);
        let covered: Vec<(u64, u64)> = self.above.range(..=seq).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in covered {
            self.above.remove(&s);
            if e > seq {
                self.above.insert(seq + 1, e);
            }
        }
        self.absorb();
        true
    }

    /// Moves the watermark over ranges that now touch it.
    fn absorb(&mut self) {
        while let Some(w) = self.watermark
            && let Some(end) = self.above.remove(&(w.saturating_add(1)))
        {
            self.watermark = Some(end);
        }
        // Ranges at or below the watermark cannot exist: records below it are duplicates.
    }
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
