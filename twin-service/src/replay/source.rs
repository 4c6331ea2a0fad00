//! Replays a stored time range of one rig from InfluxDB 1.x: finds the estimator run and the
//! checkpoint to start from, reads the feed records, samples and controller laws window by
//! window, drives the pure [`Replayer`], and, when asked, compares every estimate and drive
//! with what the live twin stored, bit for bit. Owns nothing but the query client it is given.

use std::collections::{BTreeMap, HashMap};

use dtop_proto::RigId;
use serde::Serialize;
use serde_json::Value;

use super::engine::{EngineError, Replayer};
use super::record::{
    BIRTH_MEASUREMENT, BirthRecord, CHECKPOINT_MEASUREMENT, CONTROLLER_MEASUREMENT,
    CheckpointRecord, ControllerRecord, FEED_MEASUREMENT, FeedRecord, RecordError, RunId,
};
use crate::adopt::{MODEL_MEASUREMENT, ModelRecord};
use crate::estimate::{ESTIMATED_STREAM, Estimate, EstimatorCheckpoint};
use crate::lineproto::{Precision, SAMPLES_MEASUREMENT, TWIN_STATE_MEASUREMENT};
use crate::store::query::{InfluxQuery, QueryError, Row, quote};

/// Feed records read per query.
const FEED_RECORDS_PER_QUERY: usize = 2_000;
/// Samples read per query, at most (a window ends at a block boundary below this).
const SAMPLES_PER_QUERY: u64 = 50_000;
/// Mismatches described in the report; the rest are only counted.
const MISMATCHES_DESCRIBED: usize = 20;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Nothing to replay, or storage lacks what a replay needs; in words.
    #[error("{0}")]
    Missing(String),
}

/// The time range to replay, ns since the Unix epoch, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplayRange {
    pub from_ns: i64,
    pub to_ns: i64,
}

/// One output of a replay, in time order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplayOutput {
    /// An estimate, as the live twin published it on `twin/<rig>/state`.
    Estimate {
        run: u64,
        sample_index: u64,
        timestamp_ns: u64,
        displacement_m: Vec<f64>,
        velocity_m_s: Vec<f64>,
        nis: Option<f64>,
    },
    /// A twin-hosted drive, made after the block ending at `sample_index`.
    Drive {
        run: u64,
        sample_index: u64,
        force_n: f64,
    },
}

/// Where the replay started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ReplayStart {
    /// The checkpoint stored at `time_ns`.
    Checkpoint { run: u64, time_ns: i64 },
    /// The estimator's start (its birth), at `time_ns`.
    RunStart { run: u64, time_ns: i64 },
}

impl ReplayStart {
    pub fn run(self) -> RunId {
        match self {
            ReplayStart::Checkpoint { run, .. } | ReplayStart::RunStart { run, .. } => RunId(run),
        }
    }

    /// Where reading starts, ns since the Unix epoch (as stored).
    pub fn time_ns(self) -> i64 {
        match self {
            ReplayStart::Checkpoint { time_ns, .. } | ReplayStart::RunStart { time_ns, .. } => {
                time_ns
            }
        }
    }
}

/// The comparison of a replay with what the live twin stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verification {
    /// Estimates in range found in storage and compared.
    pub estimates_compared: u64,
    /// Of those, identical in every stored field, bit for bit.
    pub estimates_identical: u64,
    /// Stored `dtop_twin_state` points in range the replay did not make.
    pub stored_states_not_replayed: u64,
    /// Replayed estimates with no stored point.
    pub estimates_not_stored: u64,
    /// Drives of blocks in range compared with their feed records.
    pub drives_compared: u64,
    pub drives_identical: u64,
    /// Total differences found.
    pub mismatches: u64,
    /// The first few, described.
    pub examples: Vec<String>,
}

impl Verification {
    /// Every estimate and drive in range is the stored one, and nothing is missing.
    pub fn is_identical(&self) -> bool {
        self.mismatches == 0
    }

    /// Compares a replayed estimate with the stored point at its time, if there is one.
    fn check_estimate(&mut self, estimate: &Estimate, stored: Option<Row>, stored_ns: i64) {
        match stored {
            Some(row) => compare_estimate(self, estimate, &row),
            None => {
                self.estimates_not_stored += 1;
                self.mismatch(format!(
                    "the estimate at sample {} ({stored_ns} ns) is not in storage",
                    estimate.sample_index
                ));
            }
        }
    }

    /// Compares a replayed drive with the one the feed record says the live twin made.
    fn check_drive(&mut self, feed: &FeedRecord, replayed_n: Option<f64>) {
        self.drives_compared += 1;
        if replayed_n.map(f64::to_bits) == feed.drive_n.map(f64::to_bits) {
            self.drives_identical += 1;
        } else {
            self.mismatch(format!(
                "block seq {}: live drive {:?} N, replayed {replayed_n:?} N",
                feed.seq, feed.drive_n
            ));
        }
    }

    fn mismatch(&mut self, what: String) {
        self.mismatches += 1;
        if self.examples.len() < MISMATCHES_DESCRIBED {
            self.examples.push(what);
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub rig: String,
    pub range: ReplayRange,
    pub start: ReplayStart,
    /// Estimator runs the range spans, in order.
    pub runs: Vec<u64>,
    /// Blocks folded in, including those between the start and the range (warm-up).
    pub blocks: u64,
    pub samples: u64,
    /// Outputs in range.
    pub estimates: u64,
    pub drives: u64,
    /// Present when the replay was compared with storage.
    pub verification: Option<Verification>,
}

/// Replays `range` of `rig` from the database `query` reads, written at `precision`; every
/// estimate and drive in range goes to `output` in time order. With `verify`, each is
/// compared with the stored one.
pub async fn replay(
    query: &InfluxQuery,
    rig: &RigId,
    precision: Precision,
    range: ReplayRange,
    verify: bool,
    mut output: impl FnMut(&ReplayOutput),
) -> Result<ReplayReport, ReplayError> {
    if range.from_ns > range.to_ns {
        return Err(ReplayError::Missing(format!(
            "the range starts at {} ns, after its end at {} ns",
            range.from_ns, range.to_ns
        )));
    }
    let reader = Reader { query, rig };
    let (start, checkpoint) = reader.start(range).await?;
    let mut report = ReplayReport {
        rig: rig.to_string(),
        range,
        start,
        runs: Vec::new(),
        blocks: 0,
        samples: 0,
        estimates: 0,
        drives: 0,
        verification: verify.then(Verification::default),
    };
    let mut replayer = reader
        .replayer(
            start.run(),
            checkpoint.as_ref().map(|c| (c, start.time_ns())),
        )
        .await?;
    report.runs.push(replayer.run().0);

    let mut cursor_ns = start.time_ns();
    // Stored states are compared window by window, each window starting after the last.
    let mut states_from_ns = range.from_ns;
    loop {
        let feeds = reader.feeds(cursor_ns, range.to_ns).await?;
        if feeds.is_empty() {
            break;
        }
        let read_all = feeds.len() < FEED_RECORDS_PER_QUERY;
        // Bound the samples of one window; always take at least one block.
        let mut window = Vec::with_capacity(feeds.len());
        let mut samples = 0;
        for (time_ns, feed) in &feeds {
            if !window.is_empty() && samples + feed.samples > SAMPLES_PER_QUERY {
                break;
            }
            samples += feed.samples;
            window.push((*time_ns, *feed));
        }
        let complete = read_all && window.len() == feeds.len();
        let (first_ns, _) = window[0];
        let (last_ns, last) = window[window.len() - 1];
        let span_end_ns = last.sample_time_ns(last.samples.saturating_sub(1));
        let samples_by_ns = reader
            .samples(first_ns, stored_ns(precision, span_end_ns))
            .await?;
        let mut stored_states = BTreeMap::new();
        if report.verification.is_some() {
            let to_ns = if complete {
                range.to_ns
            } else {
                stored_ns(precision, span_end_ns).min(range.to_ns)
            };
            stored_states = reader.states(states_from_ns, to_ns).await?;
            states_from_ns = to_ns.saturating_add(1);
        }

        for (_, feed) in &window {
            if feed.run != replayer.run() {
                replayer = reader.replayer(feed.run, None).await?;
                report.runs.push(feed.run.0);
            }
            let block = replayer.rebuild_block(feed, |name, k| {
                samples_by_ns
                    .get(&stored_ns(precision, feed.sample_time_ns(k)))
                    .and_then(|row| row.get(name))
                    .and_then(Value::as_f64)
            })?;
            let replayed = replayer.feed(feed, &block)?;
            report.blocks += 1;
            report.samples += feed.samples;
            for estimate in &replayed.estimates {
                let ts = stored_ns(precision, estimate.timestamp_ns);
                if !(range.from_ns..=range.to_ns).contains(&ts) {
                    continue;
                }
                report.estimates += 1;
                if let Some(v) = &mut report.verification {
                    v.check_estimate(estimate, stored_states.remove(&ts), ts);
                }
                output(&estimate_output(replayer.run(), estimate));
            }
            let block_time_ns = stored_ns(precision, feed.first_timestamp_ns);
            if (range.from_ns..=range.to_ns).contains(&block_time_ns) {
                if let Some(v) = &mut report.verification {
                    v.check_drive(feed, replayed.drive_n);
                }
                if let Some(force_n) = replayed.drive_n {
                    report.drives += 1;
                    output(&ReplayOutput::Drive {
                        run: replayer.run().0,
                        sample_index: feed.first_sample_index + feed.samples.saturating_sub(1),
                        force_n,
                    });
                }
            }
        }
        if let Some(v) = &mut report.verification {
            for (ts, _) in stored_states {
                v.stored_states_not_replayed += 1;
                v.mismatch(format!("the stored state at {ts} ns was not replayed"));
            }
        }
        if complete {
            break;
        }
        cursor_ns = last_ns + 1;
    }
    if report.blocks == 0 {
        return Err(ReplayError::Missing(format!(
            "rig {rig}: no estimated block is stored between {} and {} ns",
            range.from_ns, range.to_ns
        )));
    }
    Ok(report)
}

/// The time InfluxDB stores for `ts_ns` written at `precision`.
pub(super) fn stored_ns(precision: Precision, ts_ns: u64) -> i64 {
    precision
        .from_ns(ts_ns)
        .map_or(i64::MAX, |t| t.saturating_mul(precision.unit_ns() as i64))
}

fn estimate_output(run: RunId, e: &Estimate) -> ReplayOutput {
    ReplayOutput::Estimate {
        run: run.0,
        sample_index: e.sample_index,
        timestamp_ns: e.timestamp_ns,
        displacement_m: e.displacement_m.clone(),
        velocity_m_s: e.velocity_m_s.clone(),
        nis: e.nis_mean,
    }
}

/// Compares the fields `lineproto::encode_twin_state` stores for `estimate` with `row`.
fn compare_estimate(v: &mut Verification, estimate: &Estimate, row: &Row) {
    v.estimates_compared += 1;
    let mut expected: Vec<(String, Option<f64>)> = Vec::new();
    for (floor, (d, vel)) in (1..).zip(estimate.displacement_m.iter().zip(&estimate.velocity_m_s)) {
        expected.push((
            format!("floor{floor}_displacement_m"),
            d.is_finite().then_some(*d),
        ));
        expected.push((
            format!("floor{floor}_velocity_m_s"),
            vel.is_finite().then_some(*vel),
        ));
    }
    let nis = estimate.nis_mean.unwrap_or(0.0);
    expected.push((
        "nis".to_owned(),
        (nis > 0.0 && nis.is_finite()).then_some(nis),
    ));
    let differences: Vec<String> = expected
        .iter()
        .filter_map(|(name, want)| {
            let stored = row.get(name).and_then(Value::as_f64);
            (stored.map(f64::to_bits) != want.map(f64::to_bits))
                .then(|| format!("{name}: stored {stored:?}, replayed {want:?}"))
        })
        .collect();
    if differences.is_empty() {
        v.estimates_identical += 1;
    } else {
        v.mismatch(format!(
            "the estimate at sample {}: {}",
            estimate.sample_index,
            differences.join(", ")
        ));
    }
}

/// The queries of one replay.
pub(super) struct Reader<'a> {
    pub(super) query: &'a InfluxQuery,
    pub(super) rig: &'a RigId,
}

impl Reader<'_> {
    pub(super) fn rig(&self) -> String {
        quote(self.rig.as_str())
    }

    /// Where to start for `range`: the run in force at its start, and its latest checkpoint at
    /// or before it if there is one, else the run's start.
    async fn start(
        &self,
        range: ReplayRange,
    ) -> Result<(ReplayStart, Option<EstimatorCheckpoint>), ReplayError> {
        let rig = self.rig();
        let before = self
            .query
            .rows(&format!(
                "SELECT * FROM {FEED_MEASUREMENT} WHERE rig = {rig} AND time <= {} \
                 ORDER BY time DESC LIMIT 1",
                range.from_ns
            ))
            .await?;
        let in_range = match before.first() {
            Some(_) => before,
            None => {
                self.query
                    .rows(&format!(
                        "SELECT * FROM {FEED_MEASUREMENT} WHERE rig = {rig} AND time >= {} \
                         AND time <= {} ORDER BY time ASC LIMIT 1",
                        range.from_ns, range.to_ns
                    ))
                    .await?
            }
        };
        let Some(row) = in_range.first() else {
            return Err(ReplayError::Missing(format!(
                "rig {}: no estimated block is stored at or before {} ns, nor in the range \
                 (is the twin estimating this rig, and does it store to this database?)",
                self.rig, range.to_ns
            )));
        };
        let run = FeedRecord::from_row(row)?.run;
        let checkpoints = self
            .query
            .rows(&format!(
                "SELECT * FROM {CHECKPOINT_MEASUREMENT} WHERE rig = {rig} AND run = {run} \
                 AND time <= {} ORDER BY time DESC LIMIT 1",
                range.from_ns
            ))
            .await?;
        if let Some(row) = checkpoints.first() {
            let record = CheckpointRecord::from_row(row)?;
            return Ok((
                ReplayStart::Checkpoint {
                    run: run.0,
                    time_ns: record.time_ns,
                },
                Some(record.checkpoint),
            ));
        }
        let birth = self.birth(run).await?;
        Ok((
            ReplayStart::RunStart {
                run: run.0,
                time_ns: birth.time_ns,
            },
            None,
        ))
    }

    /// Every point of a measurement tagged with `run`.
    pub(super) async fn of_run(
        &self,
        measurement: &str,
        run: RunId,
    ) -> Result<Vec<Row>, ReplayError> {
        let statement = format!(
            "SELECT * FROM {measurement} WHERE rig = {} AND run = {}",
            self.rig(),
            quote(&run.to_string())
        );
        Ok(self.query.rows(&statement).await?)
    }

    pub(super) async fn birth(&self, run: RunId) -> Result<BirthRecord, ReplayError> {
        let rows = self.of_run(BIRTH_MEASUREMENT, run).await?;
        let row = rows.first().ok_or_else(|| {
            ReplayError::Missing(format!(
                "rig {}: the birth record of estimator run {run} is not stored",
                self.rig
            ))
        })?;
        Ok(BirthRecord::from_row(row)?)
    }

    /// The replayer of `run`, with every controller law and model switch the run recorded.
    async fn replayer(
        &self,
        run: RunId,
        checkpoint: Option<(&EstimatorCheckpoint, i64)>,
    ) -> Result<Replayer, ReplayError> {
        let birth = self.birth(run).await?;
        let switches = self
            .of_run(MODEL_MEASUREMENT, run)
            .await?
            .iter()
            .map(ModelRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let mut replayer = Replayer::with_model_switches(&birth, checkpoint, switches)?;
        for row in &self.of_run(CONTROLLER_MEASUREMENT, run).await? {
            replayer.add_controller(ControllerRecord::from_row(row)?);
        }
        Ok(replayer)
    }

    /// Up to [`FEED_RECORDS_PER_QUERY`] feed records from `from_ns` to `to_ns`, oldest first.
    pub(super) async fn feeds(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<(i64, FeedRecord)>, ReplayError> {
        let rows = self
            .query
            .rows(&format!(
                "SELECT * FROM {FEED_MEASUREMENT} WHERE rig = {} AND time >= {from_ns} \
                 AND time <= {to_ns} ORDER BY time ASC LIMIT {FEED_RECORDS_PER_QUERY}",
                self.rig()
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let time_ns = row.time_ns().unwrap_or(i64::MIN);
                Ok((time_ns, FeedRecord::from_row(row)?))
            })
            .collect()
    }

    /// Stream-0 sample rows from `from_ns` to `to_ns`, by stored time.
    pub(super) async fn samples(
        &self,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<HashMap<i64, Row>, ReplayError> {
        let stream = format!("AND stream = '{ESTIMATED_STREAM}'");
        self.by_time(SAMPLES_MEASUREMENT, &stream, from_ns, to_ns)
            .await
    }

    /// Stored estimates from `from_ns` to `to_ns`, by stored time.
    async fn states(&self, from_ns: i64, to_ns: i64) -> Result<BTreeMap<i64, Row>, ReplayError> {
        if from_ns > to_ns {
            return Ok(BTreeMap::new());
        }
        self.by_time(TWIN_STATE_MEASUREMENT, "", from_ns, to_ns)
            .await
    }

    /// The rig's points of `measurement` from `from_ns` to `to_ns` (and `condition`), keyed by
    /// stored time.
    async fn by_time<C: FromIterator<(i64, Row)>>(
        &self,
        measurement: &str,
        condition: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<C, ReplayError> {
        let statement = format!(
            "SELECT * FROM {measurement} WHERE rig = {} {condition} AND time >= {from_ns} \
             AND time <= {to_ns}",
            self.rig()
        );
        let rows = self.query.rows(&statement).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| Some((row.time_ns()?, row)))
            .collect())
    }
}
