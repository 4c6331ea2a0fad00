//! A takeover's restore (issue 16 item 2): the previous owner's estimator run as it stood after
//! the last block it folded in at or below the rig's persisted watermark, rebuilt from storage
//! with the same pure [`Replayer`] as `dtop-twin replay`, so that the new owner continues that
//! run (same run id, same checkpoint schedule, same controller version) instead of starting a
//! new one. [`Restorer`] is pure (records in, estimator out); [`read`] queries InfluxDB 1.x for
//! the records and drives it. What the rig actor does with the result is `crate::rig`'s.

use std::collections::{BTreeMap, HashMap};

use dtop_proto::RigId;
use serde_json::Value;

use super::engine::Replayer;
use super::record::{
    BirthRecord, CHECKPOINT_MEASUREMENT, CONTROLLER_MEASUREMENT, CheckpointRecord,
    ControllerRecord, FEED_MEASUREMENT, FeedRecord, RunId,
};
use super::source::{Reader, ReplayError, stored_ns};
use crate::adopt::{MODEL_MEASUREMENT, ModelRecord};
use crate::control::DriveLaw;
use crate::estimate::RigEstimator;
use crate::lineproto::{BLOCKS_MEASUREMENT, BLOCKS_OVERLAP_MEASUREMENT, Precision};
use crate::store::query::{InfluxQuery, Row};

/// Samples read per query, at most (a window ends at a block boundary below this).
const SAMPLES_PER_QUERY: u64 = 50_000;
/// Feed-record queries one restore may make: far beyond a checkpoint interval's blocks, so
/// only storage that keeps answering with records that do not move on can reach it.
const MAX_WINDOWS: usize = 10_000;

/// The previous owner's run, restored to just after `last_fed`.
#[derive(Debug)]
pub struct RestoredRun {
    /// The run's birth and design: the continued run is of this birth, on this design.
    pub birth: BirthRecord,
    /// The estimator after the last replayed block.
    pub estimator: RigEstimator,
    /// Sample index of the block the run's last checkpoint preceded (or of its first block,
    /// when it took none): where the checkpoint schedule goes on.
    pub last_checkpoint_index: u64,
    /// Every controller version the run recorded, with its law (`None`: no drives).
    pub laws: BTreeMap<u64, Option<DriveLaw>>,
    /// The last block folded in: the latest at or below the watermark.
    pub last_fed: FeedRecord,
    /// Blocks replayed to get here (from the checkpoint, or from the run's start).
    pub blocks_replayed: u64,
    /// Model switches the run recorded after `last_fed` (the new owner does not make them).
    pub switches_ahead: usize,
    /// The persisted watermark it was restored at (`last_fed.seq` or above): the continued
    /// run folds in the blocks above it.
    pub watermark_seq: u64,
}

impl RestoredRun {
    pub fn run(&self) -> RunId {
        self.birth.run
    }

    /// The controller version the last block was folded in under, and its law.
    pub fn last_law(&self) -> (u64, Option<&DriveLaw>) {
        let v = self.last_fed.controller_version;
        (v, self.laws.get(&v).and_then(Option::as_ref))
    }
}

/// Rebuilds one run's estimator up to a target block, window by window. Pure.
#[derive(Debug)]
pub struct Restorer {
    replayer: Replayer,
    birth: BirthRecord,
    /// Where the first feed record must be: the checkpoint's time, or the run's start.
    start_ns: i64,
    /// The block to stop after, with its stored time.
    target: (i64, FeedRecord),
    laws: BTreeMap<u64, Option<DriveLaw>>,
    first_index: Option<u64>,
    last_fed: Option<FeedRecord>,
    blocks: u64,
}

impl Restorer {
    /// The run of `birth`, at `checkpoint` (its latest at or before the target) or at its
    /// start, knowing the run's model `switches` and controller laws, to be replayed up to and
    /// including the block of `target` (stored at `target.0`).
    pub fn new(
        birth: &BirthRecord,
        checkpoint: Option<&CheckpointRecord>,
        switches: Vec<ModelRecord>,
        controllers: Vec<ControllerRecord>,
        target: (i64, FeedRecord),
    ) -> Result<Self, ReplayError> {
        let run = birth.run;
        if target.1.run != run {
            return Err(ReplayError::Missing(format!(
                "the block at the watermark (seq {}) is of run {}, not of run {run}",
                target.1.seq, target.1.run
            )));
        }
        if let Some(c) = checkpoint
            && (c.run != run || c.time_ns > target.0)
        {
            return Err(ReplayError::Missing(format!(
                "the checkpoint at {} ns (run {}) is not one of run {run} before its block \
                 at {} ns",
                c.time_ns, c.run, target.0
            )));
        }
        let mut replayer = Replayer::with_model_switches(
            birth,
            checkpoint.map(|c| (&c.checkpoint, c.time_ns)),
            switches,
        )?;
        let mut laws = BTreeMap::new();
        for c in controllers.into_iter().filter(|c| c.run == run) {
            laws.insert(c.version, c.law.clone());
            replayer.add_controller(c);
        }
        Ok(Self {
            replayer,
            birth: birth.clone(),
            start_ns: checkpoint.map_or(birth.time_ns, |c| c.time_ns),
            target,
            laws,
            first_index: None,
            last_fed: None,
            blocks: 0,
        })
    }

    /// Where reading the feed records starts, ns (as stored).
    pub fn start_ns(&self) -> i64 {
        self.start_ns
    }

    /// The target block's stored time, ns.
    pub fn target_ns(&self) -> i64 {
        self.target.0
    }

    /// Folds in `feeds` (oldest first, each with its stored time, continuing the previous
    /// window), rebuilding each block from `samples` (stream-0 rows by stored time, written at
    /// `precision`). Records after the target are left alone. Returns whether the target
    /// block has been folded in.
    pub fn feed_window(
        &mut self,
        feeds: &[(i64, FeedRecord)],
        samples: &HashMap<i64, Row>,
        precision: Precision,
    ) -> Result<bool, ReplayError> {
        let run = self.birth.run;
        for (time_ns, feed) in feeds {
            if *time_ns > self.target.0 {
                break;
            }
            if self.first_index.is_none() && *time_ns != self.start_ns {
                return Err(ReplayError::Missing(format!(
                    "run {run}: no feed record at {} ns, where the replay must start (the \
                     first stored is at {time_ns} ns)",
                    self.start_ns
                )));
            }
            let block = self.replayer.rebuild_block(feed, |name, k| {
                samples
                    .get(&stored_ns(precision, feed.sample_time_ns(k)))
                    .and_then(|row| row.get(name))
                    .and_then(Value::as_f64)
            })?;
            self.replayer.feed(feed, &block)?;
            self.first_index.get_or_insert(feed.first_sample_index);
            self.last_fed = Some(*feed);
            self.blocks += 1;
            if *time_ns == self.target.0 {
                if feed.seq != self.target.1.seq {
                    return Err(ReplayError::Missing(format!(
                        "run {run}: the block stored at {time_ns} ns is seq {}, the one at the \
                         watermark seq {}",
                        feed.seq, self.target.1.seq
                    )));
                }
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The run restored; an error unless the target block was folded in.
    pub fn finish(self) -> Result<RestoredRun, ReplayError> {
        let (Some(first_index), Some(last_fed)) = (self.first_index, self.last_fed) else {
            return Err(ReplayError::Missing(format!(
                "run {}: no block was replayed",
                self.birth.run
            )));
        };
        if last_fed.seq != self.target.1.seq {
            return Err(ReplayError::Missing(format!(
                "run {}: the feed records end at seq {}, before the watermark's block seq {}",
                self.birth.run, last_fed.seq, self.target.1.seq
            )));
        }
        let switches_ahead = self.replayer.switches_ahead();
        Ok(RestoredRun {
            birth: self.birth,
            estimator: self.replayer.into_estimator(),
            last_checkpoint_index: first_index,
            laws: self.laws,
            last_fed,
            blocks_replayed: self.blocks,
            switches_ahead,
            watermark_seq: last_fed.seq,
        })
    }
}

/// Whether any block of `rig` was ever estimated and stored: a run a takeover could continue.
/// Without one, no watermark that may still arrive would give the new owner anything to
/// restore, so it need not wait for one (`crate::rig`).
pub async fn any_run(query: &InfluxQuery, rig: &RigId) -> Result<bool, ReplayError> {
    let tag = Reader { query, rig }.rig();
    let rows = query
        .rows(&format!(
            "SELECT * FROM {FEED_MEASUREMENT} WHERE rig = {tag} ORDER BY time DESC LIMIT 1"
        ))
        .await?;
    Ok(!rows.is_empty())
}

/// Reads from InfluxDB 1.x the run in force at `watermark_seq` (the run of the latest block
/// folded in with a seq at or below it), its latest checkpoint at or before that block, and
/// the feed records and stream-0 samples from there to that block, and replays them: the
/// estimator as the previous owner had it after its last persisted block. `None`: no block at
/// or below the watermark was ever estimated (no run to continue, e.g. the rig's first owner).
pub async fn read(
    query: &InfluxQuery,
    rig: &RigId,
    precision: Precision,
    watermark_seq: u64,
) -> Result<Option<RestoredRun>, ReplayError> {
    let reader = Reader { query, rig };
    let tag = reader.rig();
    // The watermark this twin heard may be behind the one the edge holds (a retained message
    // delivered late, the old owner's last ones lost with it): storage has every block up to
    // it, and often the previous owner's blocks above it without a hole. Restore to the end of
    // that stretch, so no block the edge will not send again is missing from the run.
    let above = query
        .rows(&format!(
            "SELECT seq FROM {BLOCKS_MEASUREMENT}, {BLOCKS_OVERLAP_MEASUREMENT} \
             WHERE rig = {tag} AND seq > {watermark_seq} AND seq <= {}",
            watermark_seq.saturating_add(MAX_STRETCH_BLOCKS)
        ))
        .await?
        .iter()
        .filter_map(|row| {
            let v = row.get("seq")?;
            v.as_u64().or_else(|| v.as_f64().map(|f| f as u64))
        })
        .collect::<Vec<u64>>();
    let stored_to = contiguous_end(watermark_seq, above);
    let rows = query
        .rows(&format!(
            "SELECT * FROM {FEED_MEASUREMENT} WHERE rig = {tag} AND seq <= {stored_to} \
             ORDER BY time DESC LIMIT 1"
        ))
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let at_stretch = (
        row.time_ns().unwrap_or(i64::MIN),
        FeedRecord::from_row(row)?,
    );
    // The run goes on from the last block its owner folded in, not from the end of the
    // gap-free stretch: that owner may have bridged a block that was missing then (it
    // arrives later as backfill, stored but not folded), and folding it here would make a
    // second history of the same run id whose records mix with the first in storage.
    let run = at_stretch.1.run;
    let rows = query
        .rows(&format!(
            "SELECT * FROM {FEED_MEASUREMENT} WHERE rig = {tag} AND run = {run} \
             ORDER BY time DESC LIMIT 1"
        ))
        .await?;
    let last_folded = match rows.first() {
        Some(row) => Some((
            row.time_ns().unwrap_or(i64::MIN),
            FeedRecord::from_row(row)?,
        )),
        None => None,
    };
    let mut restored = match last_folded {
        Some(last) if last.1.seq > at_stretch.1.seq => {
            match restore_to(&reader, precision, last).await {
                Ok(run) => run,
                // Its records not all stored yet (the owner died mid-write): the stretch.
                Err(e) => {
                    tracing::debug!(rig = %rig, error = %e, "The run's last folded block does not replay; restoring at the end of the stored stretch.");
                    restore_to(&reader, precision, at_stretch).await?
                }
            }
        }
        _ => restore_to(&reader, precision, at_stretch).await?,
    };
    restored.watermark_seq = restored.watermark_seq.max(stored_to);
    Ok(Some(restored))
}

/// Replays the run of `target` (a feed record and its time) from its latest checkpoint at or
/// before it to it.
async fn restore_to(
    reader: &Reader<'_>,
    precision: Precision,
    (target_ns, target): (i64, FeedRecord),
) -> Result<RestoredRun, ReplayError> {
    let query = reader.query;
    let tag = reader.rig();
    let run = target.run;
    let checkpoint = query
        .rows(&format!(
            "SELECT * FROM {CHECKPOINT_MEASUREMENT} WHERE rig = {tag} AND run = {run} \
             AND time <= {target_ns} ORDER BY time DESC LIMIT 1"
        ))
        .await?
        .first()
        .map(CheckpointRecord::from_row)
        .transpose()?;
    let birth = reader.birth(run).await?;
    let switches = reader
        .of_run(MODEL_MEASUREMENT, run)
        .await?
        .iter()
        .map(ModelRecord::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let controllers = reader
        .of_run(CONTROLLER_MEASUREMENT, run)
        .await?
        .iter()
        .map(ControllerRecord::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let mut restorer = Restorer::new(
        &birth,
        checkpoint.as_ref(),
        switches,
        controllers,
        (target_ns, target),
    )?;
    let mut cursor_ns = restorer.start_ns();
    for _ in 0..MAX_WINDOWS {
        let feeds: Vec<(i64, FeedRecord)> = reader
            .feeds(cursor_ns, restorer.target_ns())
            .await?
            .into_iter()
            .filter(|(_, f)| f.run == run)
            .collect();
        let Some(&(first_ns, _)) = feeds.first() else {
            break;
        };
        let mut window = Vec::with_capacity(feeds.len());
        let mut samples = 0;
        for (time_ns, feed) in feeds {
            if !window.is_empty() && samples + feed.samples > SAMPLES_PER_QUERY {
                break;
            }
            samples += feed.samples;
            window.push((time_ns, feed));
        }
        let (last_ns, last) = window[window.len() - 1];
        let span_end_ns = stored_ns(
            precision,
            last.sample_time_ns(last.samples.saturating_sub(1)),
        );
        let rows = reader.samples(first_ns, span_end_ns).await?;
        if restorer.feed_window(&window, &rows, precision)? {
            break;
        }
        cursor_ns = last_ns + 1;
    }
    restorer.finish()
}

/// Blocks above the watermark a restore looks at for a stretch stored without a hole.
const MAX_STRETCH_BLOCKS: u64 = 100_000;

/// The last seq of the stretch `watermark_seq`, `watermark_seq + 1`, ... that `stored` (seqs
/// above the watermark, in any order, repeats allowed) continues without a hole.
pub fn contiguous_end(watermark_seq: u64, mut stored: Vec<u64>) -> u64 {
    stored.sort_unstable();
    stored.dedup();
    let mut end = watermark_seq;
    for seq in stored {
        if seq == end + 1 {
            end = seq;
        } else if seq > end + 1 {
            break;
        }
    }
    end
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::adopt::tests::{birth, parse_line, records, simulate};
    use crate::config::ModelConfig;
    use crate::owner::Ownership;
    use crate::rig::{Event, RigState};
    use dtop_proto::Message as _;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use tokio::time::Instant;

    #[test]
    fn the_stored_stretch_above_the_watermark_ends_at_the_first_hole() {
        assert_eq!(contiguous_end(80, vec![]), 80);
        assert_eq!(contiguous_end(80, vec![83, 81, 82, 82, 85]), 83);
        assert_eq!(contiguous_end(80, vec![82, 83]), 80);
        assert_eq!(contiguous_end(0, vec![1, 2, 3]), 3);
    }

    /// A rig of a twin whose storage can be read back, as `ownership` says, holding at most
    /// `max_waiting` blocks before their birth.
    fn restoring_rig(max_waiting: usize, model: ModelConfig, ownership: Ownership) -> RigState {
        RigState::new(RigId::new("r1").unwrap(), Precision::Us, max_waiting)
            .with_model(Arc::new(model))
            .with_ownership(ownership)
            .with_restore_from_storage()
    }

    /// A rig estimating at 100 Hz with a checkpoint every 0.5 s (50 blocks of 100 samples).
    fn live_rig() -> RigState {
        let mut s = RigState::new(RigId::new("r1").unwrap(), Precision::Us, 4)
            .with_model(Arc::new(live_model()));
        s.handle(
            &Event::Birth(birth().encode_to_vec().into()),
            Instant::now(),
        );
        s
    }

    /// The stream-0 `dtop_samples` rows among `lines`, by stored time.
    fn stored_samples(lines: &str) -> HashMap<i64, Row> {
        lines
            .lines()
            .filter(|l| l.starts_with("dtop_samples,rig=r1,stream=0 "))
            .map(|l| {
                let (_, row) = parse_line(l);
                (row.time_ns().unwrap(), row)
            })
            .collect()
    }

    /// Restores from `lines` (what the live twin stored) the run at block `target_seq`.
    fn restore_from(lines: &str, target_seq: u64) -> Result<RestoredRun, ReplayError> {
        let by = records(lines);
        let of = |m: &str| by.get(m).cloned().unwrap_or_default();
        let birth = BirthRecord::from_row(&of(super::super::record::BIRTH_MEASUREMENT)[0])?;
        let feeds: Vec<(i64, FeedRecord)> = of(FEED_MEASUREMENT)
            .iter()
            .map(|r| Ok((r.time_ns().unwrap(), FeedRecord::from_row(r)?)))
            .collect::<Result<_, ReplayError>>()?;
        let target = *feeds.iter().find(|(_, f)| f.seq == target_seq).unwrap();
        let checkpoint = of(CHECKPOINT_MEASUREMENT)
            .iter()
            .map(CheckpointRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .rfind(|c| c.time_ns <= target.0);
        let controllers = of(CONTROLLER_MEASUREMENT)
            .iter()
            .map(ControllerRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut restorer =
            Restorer::new(&birth, checkpoint.as_ref(), Vec::new(), controllers, target)?;
        let from: Vec<_> = feeds
            .into_iter()
            .filter(|(t, _)| *t >= restorer.start_ns())
            .collect();
        // Two windows, as `read` may make.
        let samples = stored_samples(lines);
        let (a, b) = from.split_at(from.len() / 2);
        if !restorer.feed_window(a, &samples, Precision::Us)? {
            restorer.feed_window(b, &samples, Precision::Us)?;
        }
        restorer.finish()
    }

    #[test]
    fn the_restored_estimator_is_the_live_one_after_the_watermarks_block_bit_for_bit() {
        let blocks = simulate(130);
        let mut live = live_rig();
        let mut lines = String::new();
        let mut after = BTreeMap::new();
        for b in &blocks {
            for chunk in live.handle(&Event::Samples(b.encode_to_vec().into()), Instant::now()) {
                lines.push_str(&chunk.lines);
            }
            after.insert(b.seq, live.estimator().unwrap().checkpoint());
        }
        // At a checkpoint (every 500 samples: blocks 5, 10, ... have one), after one, and
        // before the first.
        for target in [120, 77, 31, 3] {
            let restored = restore_from(&lines, target).unwrap();
            assert_eq!(restored.last_fed.seq, target);
            assert_eq!(
                restored.estimator.checkpoint(),
                after[&target],
                "the estimator after block {target}"
            );
            let expected_checkpoint = (target / 5) * 500;
            assert_eq!(restored.last_checkpoint_index, expected_checkpoint);
            assert_eq!(
                restored.blocks_replayed,
                target + 1 - expected_checkpoint / 100
            );
            assert_eq!(restored.last_law(), (0, None));
        }
    }

    /// The replay records and estimates among `lines` stored at or after `from_ns`, with
    /// run id `run` written as `RUN`, so two twins' runs compare.
    fn twin_lines(lines: &str, run: RunId, from_ns: u64) -> BTreeSet<String> {
        let from_us = from_ns / 1_000;
        lines
            .lines()
            .filter(|l| {
                l.starts_with("dtop_twin_")
                    && l.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= from_us
            })
            .map(|l| l.replace(&run.to_string(), "RUN"))
            .collect()
    }

    /// States at 100 Hz, a checkpoint every 0.5 s (50 blocks of 100 samples).
    fn live_model() -> ModelConfig {
        ModelConfig {
            state_publish_hz: 100.0,
            checkpoint_interval_s: 0.5,
            ..ModelConfig::default()
        }
    }

    /// What a twin that never failed stores for `blocks`, all live, in one run.
    fn live_lines(blocks: &[dtop_proto::v1::SampleBlock], now: Instant) -> String {
        let mut rig = live_rig();
        let mut lines = String::new();
        for b in blocks {
            for c in rig.handle(&with_backfill(b, false), now) {
                lines.push_str(&c.lines);
            }
        }
        lines
    }

    fn run_of(lines: &str) -> RunId {
        BirthRecord::from_row(&records(lines)[super::super::record::BIRTH_MEASUREMENT][0])
            .unwrap()
            .run
    }

    fn with_backfill(block: &dtop_proto::v1::SampleBlock, backfill: bool) -> Event {
        let mut b = block.clone();
        b.backfill = backfill;
        Event::Samples(b.encode_to_vec().into())
    }

    /// The whole takeover on the rig's state: the old owner stored blocks 0..=95 but only
    /// 0..=80 are persisted; the new owner holds the live blocks that arrive while it restores,
    /// continues the old run at block 80, folds in the edge's replay of 81..=99 (backfill) and
    /// the held live blocks in seq order, and stores exactly the records and estimates of a
    /// twin that never failed (under the old run's id, with no second birth record).
    fn birth_event() -> Event {
        Event::Birth(birth().encode_to_vec().into())
    }

    /// Asserts the takeover asked for exactly one restore, at `epoch` with `watermark_seq`.
    fn assert_one_request(rig: &mut RigState, epoch: u64, watermark_seq: Option<u64>) {
        let requests: Vec<_> = rig.take_restore_requests().collect();
        assert_eq!(
            requests,
            [crate::rig::RestoreRequest {
                epoch,
                watermark_seq
            }]
        );
    }

    /// Asserts the one takeover outcome counted so far.
    fn assert_takeover(rig: &RigState, outcome: &str, context: &str) {
        assert_eq!(
            rig.stats(Instant::now()).takeovers,
            BTreeMap::from([(outcome.to_owned(), 1)]),
            "{context}"
        );
    }

    /// Hands `events` to `rig`, appending the lines of the chunks they make to `lines`.
    fn feed(rig: &mut RigState, events: &[Event], now: Instant, lines: &mut String) {
        for e in events {
            for c in rig.handle(e, now) {
                lines.push_str(&c.lines);
            }
        }
    }

    /// The edge's replay of the blocks above watermark 80, up to the live ones.
    fn replay_above_80(blocks: &[dtop_proto::v1::SampleBlock]) -> Vec<Event> {
        blocks[81..=99]
            .iter()
            .map(|b| with_backfill(b, true))
            .collect()
    }

    #[test]
    fn a_takeover_continues_the_run_and_stores_what_a_run_without_the_fault_stores() {
        let blocks = simulate(140);
        let now = Instant::now();
        let reference_lines = live_lines(&blocks, now);
        let old_lines = live_lines(&blocks[..=95], now);
        let mut new = restoring_rig(4, live_model(), Ownership::Lost { epoch: 1 });
        new.handle(&birth_event(), now);
        for b in &blocks[..=95] {
            assert!(new.handle(&with_backfill(b, false), now).is_empty());
        }
        new.set_persisted_seq(Some(80));
        new.set_ownership(Ownership::Owned { epoch: 2 }, 0);
        assert_one_request(&mut new, 2, Some(80));
        let mut new_lines = String::new();
        // Live blocks arrive while the run is read back: they wait.
        for b in &blocks[100..=101] {
            assert!(new.handle(&with_backfill(b, false), now).is_empty());
        }
        let restored = restore_from(&old_lines, 80).unwrap();
        for c in new.on_restored(2, Ok(restored), now) {
            new_lines.push_str(&c.lines);
        }
        assert!(new_lines.is_empty(), "blocks 100 and 101 wait for 81..=99");
        // The edge replays everything above the watermark; live blocks go on meanwhile.
        let mut arrivals = replay_above_80(&blocks);
        arrivals.insert(10, with_backfill(&blocks[102], false));
        arrivals.extend(blocks[103..].iter().map(|b| with_backfill(b, false)));
        feed(&mut new, &arrivals, now, &mut new_lines);
        assert!(!new_lines.contains(super::super::record::BIRTH_MEASUREMENT));
        let run = run_of(&old_lines);
        let t81 = blocks[81].first_timestamp_ns;
        let expected = twin_lines(&reference_lines, run_of(&reference_lines), t81);
        let got = twin_lines(&new_lines, run, t81);
        assert!(
            expected
                .iter()
                .any(|l| l.starts_with("dtop_twin_checkpoint"))
        );
        assert_eq!(got.len(), expected.len());
        assert_eq!(got, expected);
        // What the old owner stored above the watermark is stored again with the same values.
        let old_above = twin_lines(&old_lines, run, t81);
        assert!(!old_above.is_empty() && old_above.is_subset(&got));
        assert_takeover(&new, "continued", "");
    }

    /// A twin that first hears of the rig already owning it (it joined the fleet and the
    /// rebalance gave it the rig, maybe before the retained birth arrived) takes it over at
    /// once: its blocks wait for the restore, and the run continues exactly as the previous
    /// owner's would have, whether the birth arrives during the restore, after it (the run's
    /// stored birth serves meanwhile), or never.
    #[test]
    fn a_rig_first_seen_owned_is_taken_over_and_its_run_continues_whenever_its_birth_arrives() {
        let blocks = simulate(140);
        let now = Instant::now();
        let reference_lines = live_lines(&blocks, now);
        let old_lines = live_lines(&blocks[..=95], now);
        let run = run_of(&old_lines);
        let t81 = blocks[81].first_timestamp_ns;
        let expected = twin_lines(&reference_lines, run_of(&reference_lines), t81);
        for birth_arrives in ["during the restore", "after the restore", "never"] {
            let mut new = restoring_rig(8, live_model(), Ownership::Owned { epoch: 2 });
            assert!(new.takeover_pending());
            new.set_persisted_seq(Some(80));
            new.start_pending_takeover();
            assert!(!new.takeover_pending());
            assert_one_request(&mut new, 2, Some(80));
            // Live blocks while the run is read back: they wait.
            for b in &blocks[100..=102] {
                assert!(new.handle(&with_backfill(b, false), now).is_empty());
            }
            if birth_arrives == "during the restore" {
                assert!(new.handle(&birth_event(), now).is_empty());
                assert!(new.is_restoring());
            }
            let mut new_lines = String::new();
            let restored = restore_from(&old_lines, 80).unwrap();
            for c in new.on_restored(2, Ok(restored), now) {
                new_lines.push_str(&c.lines);
            }
            assert!(
                new_lines.is_empty(),
                "{birth_arrives}: 100 to 102 wait for 81..=99"
            );
            let mut arrivals = replay_above_80(&blocks);
            if birth_arrives == "after the restore" {
                // The retained birth, late: the run's own, so nothing changes.
                arrivals.insert(5, birth_event());
            }
            arrivals.extend(blocks[103..].iter().map(|b| with_backfill(b, false)));
            feed(&mut new, &arrivals, now, &mut new_lines);
            assert!(
                !new_lines.contains(super::super::record::BIRTH_MEASUREMENT),
                "{birth_arrives}"
            );
            let got = twin_lines(&new_lines, run, t81);
            assert_eq!(got.len(), expected.len(), "{birth_arrives}");
            assert_eq!(got, expected, "{birth_arrives}");
            assert_takeover(&new, "continued", birth_arrives);
        }
    }

    /// A rig first seen owned with no watermark anywhere (its first owner ever) starts a new
    /// run at its birth, counted as such, and stores what came before the birth.
    #[test]
    fn a_rig_first_seen_owned_without_a_watermark_starts_a_new_run_at_its_birth() {
        let blocks = simulate(3);
        let now = Instant::now();
        let mut new = restoring_rig(8, ModelConfig::default(), Ownership::Owned { epoch: 1 });
        new.start_pending_takeover();
        assert_eq!(new.take_restore_requests().count(), 0);
        assert!(
            new.handle(&with_backfill(&blocks[0], false), now)
                .is_empty()
        );
        let chunks = new.handle(&birth_event(), now);
        assert_eq!(chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), [0]);
        assert_takeover(&new, "no_watermark", "");
    }

    /// Owned at a later epoch with no watermark known yet (a twin that has just subscribed):
    /// the restore waits for one (the request carries none); if none comes, a new run starts
    /// at the birth, counted as `no_watermark`.
    #[test]
    fn a_later_owner_without_a_watermark_yet_waits_for_one() {
        let blocks = simulate(3);
        let now = Instant::now();
        let mut new = restoring_rig(8, ModelConfig::default(), Ownership::Owned { epoch: 3 });
        new.start_pending_takeover();
        assert_one_request(&mut new, 3, None);
        for b in &blocks {
            assert!(new.handle(&with_backfill(b, false), now).is_empty());
        }
        let failure = crate::rig::RestoreFailure {
            reason: "no_watermark",
            detail: "none arrived".into(),
        };
        assert!(new.on_restored(3, Err(failure), now).is_empty());
        let chunks = new.handle(&birth_event(), now);
        assert_eq!(chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_takeover(&new, "no_watermark", "");
    }

    /// A failed restore (storage away) starts a new run, counted, and the blocks that waited
    /// are stored.
    #[test]
    fn a_failed_restore_starts_a_new_run_and_stores_the_blocks_that_waited() {
        let blocks = simulate(5);
        let now = Instant::now();
        let mut new = restoring_rig(4, ModelConfig::default(), Ownership::Lost { epoch: 1 });
        new.handle(&birth_event(), now);
        new.set_persisted_seq(Some(1));
        new.set_ownership(Ownership::Owned { epoch: 2 }, 0);
        assert_eq!(new.take_restore_requests().count(), 1);
        for b in &blocks[2..] {
            assert!(new.handle(&with_backfill(b, false), now).is_empty());
        }
        // A result for another epoch changes nothing.
        let failure = || crate::rig::RestoreFailure {
            reason: "storage",
            detail: "connection refused".into(),
        };
        assert!(new.on_restored(1, Err(failure()), now).is_empty());
        let chunks = new.on_restored(2, Err(failure()), now);
        assert_eq!(chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(
            chunks[0]
                .lines
                .contains(super::super::record::BIRTH_MEASUREMENT)
        );
        assert_takeover(&new, "storage", "");
    }

    #[test]
    fn a_stored_sample_missing_fails_the_restore() {
        let blocks = simulate(60);
        let mut live = live_rig();
        let mut lines = String::new();
        for b in &blocks {
            for chunk in live.handle(&Event::Samples(b.encode_to_vec().into()), Instant::now()) {
                lines.push_str(&chunk.lines);
            }
        }
        assert!(restore_from(&lines, 58).is_ok());
        // One sample of block 57 (after the checkpoint at block 55) gone: the block cannot be
        // rebuilt.
        let t_us = (crate::adopt::tests::T0_NS + 5_703 * 1_000_000) / 1_000;
        let holed: String = lines
            .lines()
            .filter(|l| !(l.starts_with("dtop_samples,") && l.ends_with(&format!(" {t_us}"))))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = restore_from(&holed, 58).unwrap_err().to_string();
        assert!(e.contains("seq 57"), "{e}");
    }
}
