//! Which sample times one rig's `dtop_samples` already holds, per stream, as runs of one edge
//! clock ([`Timeline`]), and the decision whether a new block may go there or must be stored
//! apart because it would replace stored samples ([`StoredTimes::place`]). Pure, plus the small
//! per-rig state file that carries the runs across twin restarts. Knows nothing of MQTT.
//!
//! A point in InfluxDB is identified by measurement, tags and time, so a block whose times
//! reuse stored ones would silently overwrite other values. The rule (ARCHITECTURE.md, "Storage
//! schema"): a block whose time range intersects a stored run of another timeline goes whole to
//! `dtop_samples_overlap` / `dtop_blocks_overlap`, tagged with its timeline; a block of the
//! same timeline (a re-send: the same sample indices at the same times) is harmless. The session
//! is not part of a timeline: the edge stamps replayed blocks with its current MQTT session.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use dtop_proto::RigId;
use serde::{Deserialize, Serialize};

/// Most runs remembered per stream; beyond it the oldest (earliest) are forgotten, so a block
/// overlapping only those is no longer recognised. A healthy rig adds one run per edge restart.
pub const MAX_RUNS_PER_STREAM: usize = 4096;

/// One edge clock: which sample index is stamped at which time. Two blocks of one timeline
/// that share a time share the sample index there, so they carry the same sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Time sample index 0 would have, ns since the Unix epoch (may be negative).
    pub origin_ns: i64,
    pub period_ns: u64,
}

impl Timeline {
    /// The timeline of a block whose sample `first_sample_index` is at `first_timestamp_ns`.
    pub fn of(first_sample_index: u64, first_timestamp_ns: u64, period_ns: u64) -> Self {
        let origin =
            i128::from(first_timestamp_ns) - i128::from(first_sample_index) * i128::from(period_ns);
        Self {
            // Saturating: only a hostile index gets here, and it still differs from real clocks.
            origin_ns: i64::try_from(origin).unwrap_or(if origin < 0 {
                i64::MIN
            } else {
                i64::MAX
            }),
            period_ns,
        }
    }

    /// The value of the `timeline` tag of blocks stored apart: `<origin_ns>/<period_ns>`.
    pub fn tag(&self) -> String {
        format!("{}/{}", self.origin_ns, self.period_ns)
    }
}

/// The sample times of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockTimes {
    pub stream_id: u32,
    /// The edge's MQTT session that sent it: only for the reason.
    pub session: u64,
    pub first_timestamp_ns: u64,
    pub samples: u64,
    pub timeline: Timeline,
}

impl BlockTimes {
    /// One past the block's last sample time: the block covers `[first, end)`.
    fn end_ns(&self) -> u64 {
        self.first_timestamp_ns
            .saturating_add(self.samples.saturating_mul(self.timeline.period_ns.max(1)))
    }
}

/// Why a block was stored apart; the metric label is [`OverlapReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OverlapReason {
    /// Its times are stored under another clock first seen in another edge session (a
    /// restarted edge).
    OtherSession,
    /// Its times are stored under another clock of its own session (a re-anchored clock).
    SameSession,
}

impl OverlapReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            OverlapReason::OtherSession => "other_session",
            OverlapReason::SameSession => "same_session",
        }
    }
}

/// Where a block's samples go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `dtop_samples`: nothing stored there at its times, or only the same samples.
    Main,
    /// `dtop_samples_overlap`: it would replace stored samples of another timeline.
    Apart {
        reason: OverlapReason,
        /// Sample times of the block inside stored runs of another timeline.
        colliding_samples: u64,
        /// The first such run's timeline and session, for the log.
        stored: Timeline,
        stored_session: u64,
    },
}

/// One stored run: `[start, end)` of one timeline (the map key is `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    start_ns: u64,
    end_ns: u64,
    timeline: Timeline,
    /// Session of the first block recorded in it.
    session: u64,
}

/// See the module docs. Runs of one stream never intersect: a block that would make two
/// intersect is stored apart and not recorded here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredTimes {
    streams: BTreeMap<u32, BTreeMap<u64, Run>>,
    /// Changed since the last [`StoredTimes::take_changed`].
    changed: bool,
}

impl StoredTimes {
    /// Where `block` must be stored so no stored sample changes. Does not record it.
    pub fn place(&self, block: &BlockTimes) -> Placement {
        let Some(runs) = self.streams.get(&block.stream_id) else {
            return Placement::Main;
        };
        let (a, b) = (block.first_timestamp_ns, block.end_ns());
        let mut apart: Option<(OverlapReason, &Run)> = None;
        let mut colliding = 0;
        // Runs are disjoint and sorted, so those intersecting [a, b) are the last ones
        // starting before b, back to the first that ends after a.
        for run in runs.range(..b).rev().map(|(_, r)| r) {
            if run.end_ns <= a {
                break;
            }
            if run.timeline == block.timeline {
                continue;
            }
            colliding += samples_within(block, run.start_ns.max(a), run.end_ns.min(b));
            let reason = if run.session == block.session {
                OverlapReason::SameSession
            } else {
                OverlapReason::OtherSession
            };
            // Reported for the earliest colliding run.
            apart = Some((reason, run));
        }
        match apart {
            Some((reason, run)) => Placement::Apart {
                reason,
                colliding_samples: colliding,
                stored: run.timeline,
                stored_session: run.session,
            },
            None => Placement::Main,
        }
    }

    /// Records `block` as stored in `dtop_samples` (after [`StoredTimes::place`] said `Main`),
    /// merging it with touching runs of its timeline.
    pub fn record(&mut self, block: &BlockTimes) {
        let runs = self.streams.entry(block.stream_id).or_default();
        let mut start = block.first_timestamp_ns;
        let mut end = block.end_ns();
        // Same-timeline runs touching or intersecting [start, end]; others cannot intersect.
        let touching: Vec<u64> = runs
            .range(..=end)
            .rev()
            .take_while(|(_, r)| r.end_ns >= start)
            .filter(|(_, r)| r.timeline == block.timeline)
            .map(|(&s, _)| s)
            .collect();
        let mut removed = Vec::with_capacity(touching.len());
        let mut session = block.session;
        for s in touching {
            if let Some(r) = runs.remove(&s) {
                if r.start_ns <= start {
                    session = r.session;
                }
                start = start.min(r.start_ns);
                end = end.max(r.end_ns);
                removed.push(r);
            }
        }
        let run = Run {
            start_ns: start,
            end_ns: end,
            timeline: block.timeline,
            session,
        };
        // A re-send inside a stored run changes nothing worth saving.
        if removed != [run] {
            self.changed = true;
        }
        runs.insert(start, run);
        while runs.len() > MAX_RUNS_PER_STREAM {
            runs.pop_first();
        }
    }

    /// Whether anything changed since the last call (the state file is then due).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Runs of all streams.
    pub fn runs(&self) -> usize {
        self.streams.values().map(BTreeMap::len).sum()
    }
}

/// Sample times `first + k·period` of `block` inside `[lo, hi)`.
fn samples_within(block: &BlockTimes, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return 0;
    }
    let p = block.timeline.period_ns.max(1);
    let first = block.first_timestamp_ns;
    // The first k with first + k·p >= x.
    let k_at = |x: u64| x.saturating_sub(first).div_ceil(p).min(block.samples);
    k_at(hi) - k_at(lo)
}

/// On-disk form: runs by stream.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    streams: BTreeMap<u32, Vec<Run>>,
}

/// The state file of `rig` in `dir`.
pub fn state_path(dir: &Path, rig: &RigId) -> PathBuf {
    dir.join(format!("stored_times.{rig}.json"))
}

/// Reads `rig`'s state file; a missing file is nothing stored.
pub fn load(dir: &Path, rig: &RigId) -> std::io::Result<StoredTimes> {
    let bytes = match std::fs::read(state_path(dir, rig)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoredTimes::default()),
        Err(e) => return Err(e),
    };
    let file: StateFile = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let streams = file
        .streams
        .into_iter()
        .map(|(stream, runs)| (stream, runs.into_iter().map(|r| (r.start_ns, r)).collect()))
        .collect();
    Ok(StoredTimes {
        streams,
        changed: false,
    })
}

/// Replaces `rig`'s state file (temporary file, rename), so a twin killed at any point finds
/// the old or the new runs. `sync` also fsyncs file and directory (power loss).
pub fn save(dir: &Path, rig: &RigId, times: &StoredTimes, sync: bool) -> std::io::Result<()> {
    let path = state_path(dir, rig);
    let tmp = path.with_extension("json.tmp");
    let file = StateFile {
        streams: times
            .streams
            .iter()
            .map(|(&s, runs)| (s, runs.values().copied().collect()))
            .collect(),
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    if sync {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, &path)?;
    if sync {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    /// 100 samples at 1 kHz starting at sample `index`, stamped `T0 + (index + shift)` ms.
    fn block(session: u64, index: u64, shift_ms: i64) -> BlockTimes {
        let first = (T0 as i64 + (index as i64 + shift_ms) * MS as i64) as u64;
        BlockTimes {
            stream_id: 0,
            session,
            first_timestamp_ns: first,
            samples: 100,
            timeline: Timeline::of(index, first, MS),
        }
    }

    fn stored(blocks: &[BlockTimes]) -> StoredTimes {
        let mut t = StoredTimes::default();
        for b in blocks {
            assert_eq!(t.place(b), Placement::Main);
            t.record(b);
        }
        t
    }

    #[test]
    fn contiguous_blocks_of_one_clock_make_one_run_and_their_resends_are_harmless() {
        let t = stored(&[block(1, 0, 0), block(1, 100, 0), block(1, 200, 0)]);
        assert_eq!(t.runs(), 1);
        assert_eq!(t.place(&block(1, 100, 0)), Placement::Main);
        // The edge stamps a replay with its current session: still the same samples.
        assert_eq!(t.place(&block(7, 100, 0)), Placement::Main);
        // A late hole-fill of the same clock, and the next block, are not overlaps either.
        let mut t = stored(&[block(1, 0, 0), block(1, 200, 0)]);
        assert_eq!(t.runs(), 2);
        t.record(&block(1, 100, 0));
        assert_eq!(t.runs(), 1);
        assert_eq!(t.place(&block(1, 300, 0)), Placement::Main);
    }

    #[test]
    fn a_new_session_reusing_stored_times_is_placed_apart_with_the_colliding_samples() {
        let t = stored(&[block(1, 0, 0), block(1, 100, 0)]);
        // The restarted edge's clock: its index 0 stamped at T0 + 150 ms.
        let b = block(2, 0, 150);
        match t.place(&b) {
            Placement::Apart {
                reason,
                colliding_samples,
                stored,
                stored_session,
            } => {
                assert_eq!(reason, OverlapReason::OtherSession);
                assert_eq!(colliding_samples, 50);
                assert_eq!((stored.origin_ns as u64, stored_session), (T0, 1));
            }
            other => panic!("{other:?}"),
        }
        // Right after the stored run: fine.
        assert_eq!(t.place(&block(2, 0, 200)), Placement::Main);
        // Another stream is another series.
        let other_stream = BlockTimes { stream_id: 1, ..b };
        assert_eq!(t.place(&other_stream), Placement::Main);
    }

    #[test]
    fn a_re_anchored_clock_in_the_same_session_is_its_own_reason() {
        let t = stored(&[block(1, 0, 0)]);
        let Placement::Apart {
            reason,
            colliding_samples,
            ..
        } = t.place(&block(1, 100, -150))
        else {
            panic!()
        };
        assert_eq!(reason, OverlapReason::SameSession);
        assert_eq!(colliding_samples, 50);
    }

    #[test]
    fn interleaving_samples_of_another_clock_also_count_as_overlap() {
        let t = stored(&[block(1, 0, 0)]);
        let mut b = block(2, 0, 0);
        b.first_timestamp_ns += MS / 2;
        b.timeline = Timeline::of(0, b.first_timestamp_ns, MS);
        assert!(matches!(t.place(&b), Placement::Apart { .. }));
    }

    #[test]
    fn the_state_file_round_trips_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let rig = RigId::new("r-1").unwrap();
        assert_eq!(load(dir.path(), &rig).unwrap(), StoredTimes::default());
        let mut t = stored(&[block(1, 0, 0), block(2, 1000, 5000)]);
        assert!(t.take_changed());
        save(dir.path(), &rig, &t, true).unwrap();
        save(dir.path(), &rig, &t, false).unwrap();
        let back = load(dir.path(), &rig).unwrap();
        assert_eq!(back, t);
        assert!(matches!(
            back.place(&block(3, 0, 50)),
            Placement::Apart { .. }
        ));
    }

    #[test]
    fn the_oldest_runs_are_forgotten_beyond_the_bound() {
        let mut t = StoredTimes::default();
        for k in 0..=MAX_RUNS_PER_STREAM as u64 {
            // Separate clocks, each 1 s after the previous.
            t.record(&block(k, 0, (k * 1000) as i64));
        }
        assert_eq!(t.runs(), MAX_RUNS_PER_STREAM);
        assert_eq!(t.place(&block(9999, 0, 0)), Placement::Main);
    }
}
