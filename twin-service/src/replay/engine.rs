//! The pure replay engine: one run's estimator rebuilt from its birth record (and restored
//! from a checkpoint), fed blocks rebuilt from stored values through the same code the live
//! twin uses, making the same estimates and drives. No I/O: the caller reads storage.

use std::collections::{BTreeMap, VecDeque};

use dtop_proto::v1::{ChannelSamples, SampleBlock};

use super::record::{BirthRecord, ControllerRecord, FeedRecord, RunId};
use crate::adopt::{self, ModelRecord};
use crate::control::DriveLaw;
use crate::estimate::{ESTIMATED_STREAM, Estimate, EstimatorCheckpoint, Fed, RigEstimator};
use crate::ingest::Manifest;

/// Why a run cannot be replayed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("run {run}: the stored birth cannot be used: {why}")]
    Birth { run: RunId, why: String },
    #[error("run {run}: the checkpoint does not fit its estimator: {why}")]
    Checkpoint { run: RunId, why: String },
    #[error("run {run}, block seq {seq}: {problem}")]
    Block {
        run: RunId,
        seq: u64,
        problem: String,
    },
}

/// What one replayed block made.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The estimates that fell due in the block, in sample order.
    pub estimates: Vec<Estimate>,
    /// The twin-hosted drive made after it, as live.
    pub drive_n: Option<f64>,
}

/// One run's estimator and controller laws, replaying.
#[derive(Debug)]
pub struct Replayer {
    run: RunId,
    manifest: Manifest,
    estimator: RigEstimator,
    /// Law by controller version; `None`: no drive under that version.
    laws: BTreeMap<u64, Option<DriveLaw>>,
    due: Vec<Estimate>,
    /// The run's birth record, to rebuild the estimator at a model switch.
    record: BirthRecord,
    /// Model switches not applied yet, by first sample index (`crate::adopt`).
    switches: VecDeque<ModelRecord>,
}

impl Replayer {
    /// The estimator of `record`'s run, as it was at the run's start, or at `checkpoint`.
    pub fn new(
        record: &BirthRecord,
        checkpoint: Option<&EstimatorCheckpoint>,
    ) -> Result<Self, EngineError> {
        Self::with_model_switches(record, checkpoint.map(|c| (c, i64::MIN)), Vec::new())
    }

    /// The estimator of `record`'s run at its start, or at `checkpoint` (stored at `time_ns`),
    /// switching buildings where the live twin did: the switches stored at or before the
    /// checkpoint's time were made before it (so the checkpoint is of their building), the
    /// others are made before the first block at or after their first sample index.
    pub fn with_model_switches(
        record: &BirthRecord,
        checkpoint: Option<(&EstimatorCheckpoint, i64)>,
        mut switches: Vec<ModelRecord>,
    ) -> Result<Self, EngineError> {
        let run = record.run;
        let birth_error = |why: String| EngineError::Birth { run, why };
        let manifest = Manifest::from_birth(&record.birth).map_err(|r| birth_error(r.detail))?;
        let design = &record.design;
        switches.retain(|s| s.run == run);
        switches.sort_by_key(|s| (s.time_ns, s.first_sample_index));
        let made_before = checkpoint.map_or(0, |(_, time_ns)| {
            switches.iter().filter(|s| s.time_ns <= time_ns).count()
        });
        let building = switches[..made_before]
            .last()
            .map_or(&design.building, |s| &s.building);
        let checkpoint = checkpoint.map(|(c, _)| c);
        let mut estimator = RigEstimator::from_birth(
            &record.birth,
            building,
            &design.noise,
            design.state_publish_hz,
        )
        .map_err(|m| birth_error(m.to_string()))?;
        if let Some(checkpoint) = checkpoint {
            estimator
                .restore(checkpoint)
                .map_err(|e| EngineError::Checkpoint {
                    run,
                    why: e.to_string(),
                })?;
        }
        Ok(Self {
            run,
            manifest,
            estimator,
            laws: BTreeMap::new(),
            due: Vec::new(),
            record: record.clone(),
            switches: switches.into_iter().skip(made_before).collect(),
        })
    }

    pub fn run(&self) -> RunId {
        self.run
    }

    /// The estimator, for inspection.
    pub fn estimator(&self) -> &RigEstimator {
        &self.estimator
    }

    /// The estimator, as the replayed blocks left it (a takeover continues the run with it,
    /// `super::restore`).
    pub fn into_estimator(self) -> RigEstimator {
        self.estimator
    }

    /// Model switches recorded for the run that no replayed block has reached yet.
    pub fn switches_ahead(&self) -> usize {
        self.switches.len()
    }

    /// Learns the law of one controller version of this run.
    pub fn add_controller(&mut self, record: ControllerRecord) {
        if record.run == self.run {
            self.laws.insert(record.version, record.law);
        }
    }

    /// Rebuilds the stream-0 block of `feed` from stored values: `value(channel_name, k)` is
    /// the stored value of sample k, `None` if storage has none. A channel with no value at all
    /// was not in the block; one with some values missing is a hole in storage. The raw count
    /// of each value is the one that scales to exactly the stored bits.
    pub fn rebuild_block(
        &self,
        feed: &FeedRecord,
        value: impl Fn(&str, u64) -> Option<f64>,
    ) -> Result<SampleBlock, EngineError> {
        let problem = |problem: String| EngineError::Block {
            run: self.run,
            seq: feed.seq,
            problem,
        };
        let mut channels = Vec::new();
        for info in self
            .manifest
            .channels
            .values()
            .filter(|c| c.stream_id == ESTIMATED_STREAM)
        {
            let values: Vec<Option<f64>> =
                (0..feed.samples).map(|k| value(&info.name, k)).collect();
            let present = values.iter().filter(|v| v.is_some()).count();
            if present == 0 {
                continue;
            }
            if present != values.len() {
                return Err(problem(format!(
                    "storage holds {present} of the block's {} samples of channel {:?}",
                    values.len(),
                    info.name
                )));
            }
            let raw = values
                .iter()
                .enumerate()
                .map(|(k, v)| {
                    let v = v.unwrap_or(f64::NAN);
                    raw_count(v, info.scale, info.offset).ok_or_else(|| {
                        problem(format!(
                            "channel {:?} sample {k} (at {} ns): no raw count scales to the \
                             stored {v:e} with scale {:e} and offset {:e}",
                            info.name,
                            feed.sample_time_ns(k as u64),
                            info.scale,
                            info.offset
                        ))
                    })
                })
                .collect::<Result<Vec<i32>, _>>()?;
            channels.push(ChannelSamples {
                channel_id: info.id,
                raw,
            });
        }
        if channels.is_empty() {
            return Err(problem("storage holds none of the block's samples".into()));
        }
        Ok(SampleBlock {
            session: feed.session,
            seq: feed.seq,
            stream_id: ESTIMATED_STREAM,
            first_sample_index: feed.first_sample_index,
            sample_period_ns: feed.sample_period_ns,
            first_timestamp_ns: feed.first_timestamp_ns,
            channels,
            backfill: false,
            ..SampleBlock::default()
        })
    }

    /// Folds in a block as the live twin did (`RigState::accept`): the estimates that fall due
    /// and the drive the recorded controller law makes from the estimate after it.
    pub fn feed(
        &mut self,
        feed: &FeedRecord,
        block: &SampleBlock,
    ) -> Result<Replayed, EngineError> {
        let problem = |problem: String| EngineError::Block {
            run: self.run,
            seq: feed.seq,
            problem,
        };
        if feed.run != self.run {
            return Err(problem(format!("it belongs to run {}", feed.run)));
        }
        let law = self
            .laws
            .get(&feed.controller_version)
            .ok_or_else(|| {
                problem(format!(
                    "no law is recorded for controller version {}",
                    feed.controller_version
                ))
            })?
            .clone();
        let columns = self
            .manifest
            .columns(block)
            .map_err(|r| problem(r.detail))?;
        while let Some(switch) = self
            .switches
            .front()
            .filter(|s| s.first_sample_index <= block.first_sample_index)
        {
            let design = &self.record.design;
            let (estimator, carried) = adopt::rebuild_estimator(
                &self.estimator,
                &self.record.birth,
                &switch.building,
                &design.noise,
                design.state_publish_hz,
            )
            .map_err(|m| {
                problem(format!(
                    "the switch to model {}@{} cannot be made: {m}",
                    switch.name, switch.version
                ))
            })?;
            if carried != switch.carried {
                return Err(problem(format!(
                    "at the switch to model {}@{} the live twin's estimate was {}, the replay's {}",
                    switch.name,
                    switch.version,
                    switch.carried.as_str(),
                    carried.as_str()
                )));
            }
            self.estimator = estimator;
            self.switches.pop_front();
        }
        self.due.clear();
        match self.estimator.feed(block, &columns, &mut self.due) {
            Fed::Samples(n) if n as u64 == feed.samples => {}
            other => {
                return Err(problem(format!(
                    "the live twin folded in {} samples, the replay {other:?}",
                    feed.samples
                )));
            }
        }
        let drive_n = law.and_then(|l| l.force_n(self.estimator.estimator()));
        Ok(Replayed {
            estimates: std::mem::take(&mut self.due),
            drive_n,
        })
    }
}

/// The raw count r with `r · scale + offset` bit-identical to `value`, if there is one.
pub fn raw_count(value: f64, scale: f64, offset: f64) -> Option<i32> {
    let scales_to = |r: i32| (f64::from(r) * scale + offset).to_bits() == value.to_bits();
    if scale == 0.0 {
        return scales_to(0).then_some(0);
    }
    let guess = ((value - offset) / scale).round();
    if !(guess.is_finite() && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&guess)) {
        return None;
    }
    // In range by the check above.
    let guess = guess as i32;
    [guess, guess.saturating_sub(1), guess.saturating_add(1)]
        .into_iter()
        .find(|&r| scales_to(r))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_raw_count_of_every_scaled_value() {
        for (scale, offset) in [
            (1e-3, 0.0),
            (0.000_598_5, -0.25),
            (-2.5e-4, 3.0),
            (1.0, 0.0),
        ] {
            for raw in [-32768, -1, 0, 1, 7, 12_345, 32767, i32::MAX / 3] {
                let v = f64::from(raw) * scale + offset;
                let found = raw_count(v, scale, offset).expect("a count exists");
                assert_eq!(
                    (f64::from(found) * scale + offset).to_bits(),
                    v.to_bits(),
                    "scale {scale} offset {offset} raw {raw}"
                );
            }
        }
    }

    #[test]
    fn a_value_no_count_scales_to_has_no_raw_count() {
        assert_eq!(raw_count(0.0005, 1e-3, 0.0), None);
        assert_eq!(raw_count(f64::NAN, 1e-3, 0.0), None);
        assert_eq!(raw_count(1e300, 1e-3, 0.0), None);
        assert_eq!(raw_count(2.0, 0.0, 2.0), Some(0));
    }
}
