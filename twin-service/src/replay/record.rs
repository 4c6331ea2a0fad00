//! The replay records: what the live twin stores next to a rig's samples so that any stored
//! range can be run through the estimator and controller again, bit for bit. Their
//! line-protocol form, their parsing from query rows, and the per-run [`RunRecorder`] a rig's
//! state feeds. Pure: no I/O, no clocks.
//!
//! # Schema
//! ```text
//! dtop_twin_birth,rig=<rig>,run=<run> session=<i>i,birth="<base64 RigBirth>",design="<JSON EstimatorDesign>" <t>
//!     one per estimator run, at the first sample of the first block the run folded in. A run
//!     starts whenever the twin builds an estimator: at a birth, and when the twin restarts; a
//!     twin taking the rig over continues the previous owner's run (`super::restore`).
//! dtop_twin_feed,rig=<rig> run=<i>i,session=<i>i,seq=<i>i,first_sample_index=<i>i,samples=<i>i,first_timestamp_ns=<i>i,sample_period_ns=<i>i,controller_version=<i>i[,drive_n=<float>] <t_0>
//!     one per block the estimator folded in, at the block's first sample; drive_n is the
//!     twin-hosted drive made from it (absent when none was).
//! dtop_twin_checkpoint,rig=<rig> run=<i>i,state="<JSON EstimatorCheckpoint>" <t_0>
//!     the estimator just before the block at the same time was folded in, about every
//!     model.checkpoint_interval_s of samples.
//! dtop_twin_controller,rig=<rig>,run=<run>,version=<v> law="<JSON DriveLaw, or null>" <t_0>
//!     the law of controller version v (null: no drives), with the first block fed under it.
//! ```
//! Floats in the JSON strings are shortest round-trip decimals, so they parse back exactly.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dtop_proto::Message as _;
use dtop_proto::v1::RigBirth;
use serde_json::Value;

use crate::control::DriveLaw;
use crate::estimate::{EstimatorCheckpoint, EstimatorDesign, RigEstimator};
use crate::lineproto::{EncodeError, Precision, escape_key, escape_measurement, write_float};
use crate::store::query::Row;

/// Measurement of the run records (the birth and design each run was built from).
pub const BIRTH_MEASUREMENT: &str = "dtop_twin_birth";
/// Measurement of the record of every block the estimator folded in.
pub const FEED_MEASUREMENT: &str = "dtop_twin_feed";
/// Measurement of the estimator checkpoints.
pub const CHECKPOINT_MEASUREMENT: &str = "dtop_twin_checkpoint";
/// Measurement of the controller laws, by version.
pub const CONTROLLER_MEASUREMENT: &str = "dtop_twin_controller";

/// One estimator's life: from the birth the twin built it for until the next one (or the
/// twin's exit). Unique per rig: the twin takes the wall clock in ns, kept rising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The birth and design a run's estimator was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct BirthRecord {
    pub run: RunId,
    pub birth: RigBirth,
    pub design: EstimatorDesign,
    /// First sample of the run's first block, ns since the Unix epoch (as stored).
    pub time_ns: i64,
}

/// One block the estimator folded in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedRecord {
    pub run: RunId,
    pub session: u64,
    pub seq: u64,
    pub first_sample_index: u64,
    pub samples: u64,
    pub first_timestamp_ns: u64,
    pub sample_period_ns: u64,
    /// Controller version in force when the drive was (or was not) made.
    pub controller_version: u64,
    pub drive_n: Option<f64>,
}

impl FeedRecord {
    /// Unix time of sample `k` of the block, ns.
    pub fn sample_time_ns(&self, k: u64) -> u64 {
        self.first_timestamp_ns
            .saturating_add(k.saturating_mul(self.sample_period_ns))
    }
}

/// An estimator checkpoint and the block it precedes.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    pub run: RunId,
    /// Time of the block it precedes, ns (as stored).
    pub time_ns: i64,
    pub checkpoint: EstimatorCheckpoint,
}

/// The law of one controller version.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerRecord {
    pub run: RunId,
    pub version: u64,
    /// `None`: blocks fed under this version made no drive.
    pub law: Option<DriveLaw>,
}

/// Why a stored record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{measurement} record at {time_ns} ns: {problem}")]
pub struct RecordError {
    pub measurement: &'static str,
    pub time_ns: i64,
    pub problem: String,
}

/// Writes the records of one estimator run as its blocks are folded in.
#[derive(Debug, Clone)]
pub struct RunRecorder {
    run: RunId,
    session: u64,
    /// The birth record's string fields, encoded once.
    birth_base64: String,
    design_json: String,
    birth_written: bool,
    /// 0: never.
    checkpoint_every_samples: u64,
    /// Sample index of the last checkpoint, or of the run's first block.
    last_checkpoint_index: Option<u64>,
    /// Controller versions whose law this run has recorded.
    versions_written: BTreeSet<u64>,
}

impl RunRecorder {
    pub fn new(
        run: RunId,
        birth: &RigBirth,
        design: &EstimatorDesign,
        checkpoint_every_samples: u64,
    ) -> Self {
        Self {
            run,
            session: birth.session,
            birth_base64: BASE64.encode(birth.encode_to_vec()),
            // A struct of numbers and strings always serializes.
            design_json: serde_json::to_string(design).unwrap_or_default(),
            birth_written: false,
            checkpoint_every_samples,
            last_checkpoint_index: None,
            versions_written: BTreeSet::new(),
        }
    }

    /// The recorder of a run another twin started and this one continues after a takeover
    /// (`super::restore`): its birth is stored already, its checkpoint schedule goes on from
    /// the block at `last_checkpoint_index`, and the laws of `versions_written` are stored.
    pub fn continuing(
        run: RunId,
        birth: &RigBirth,
        design: &EstimatorDesign,
        checkpoint_every_samples: u64,
        last_checkpoint_index: u64,
        versions_written: impl IntoIterator<Item = u64>,
    ) -> Self {
        Self {
            birth_written: true,
            last_checkpoint_index: Some(last_checkpoint_index),
            versions_written: versions_written.into_iter().collect(),
            ..Self::new(run, birth, design, checkpoint_every_samples)
        }
    }

    pub fn run(&self) -> RunId {
        self.run
    }

    /// The checkpoint to take before folding in a block that starts at `first_sample_index`,
    /// when one is due. Only keep it if the block is then folded in.
    pub fn checkpoint_due(
        &self,
        estimator: &RigEstimator,
        first_sample_index: u64,
    ) -> Option<EstimatorCheckpoint> {
        let last = self.last_checkpoint_index?;
        (self.checkpoint_every_samples > 0
            && first_sample_index.saturating_sub(last) >= self.checkpoint_every_samples)
            .then(|| estimator.checkpoint())
    }

    /// Appends the records of a block the estimator just folded in: the run's birth with its
    /// first block, the checkpoint taken before it (from [`checkpoint_due`](Self::checkpoint_due)),
    /// the block's feed record, and the law of a controller version not recorded yet.
    /// Returns the lines appended; on error `out` is left as it was.
    pub fn record_fed(
        &mut self,
        out: &mut String,
        rig: &str,
        feed: &FeedRecord,
        checkpoint: Option<&EstimatorCheckpoint>,
        law: Option<&DriveLaw>,
        precision: Precision,
    ) -> Result<usize, EncodeError> {
        let ts =
            precision
                .from_ns(feed.first_timestamp_ns)
                .ok_or(EncodeError::TimestampOutOfRange {
                    sample: 0,
                    ts_ns: u128::from(feed.first_timestamp_ns),
                })?;
        let mut lines = 0;
        if !self.birth_written {
            escape_measurement(out, BIRTH_MEASUREMENT);
            write_rig_tag(out, rig);
            let _ = write!(out, ",run={} session={}i,birth=", self.run, self.session);
            write_string(out, &self.birth_base64);
            out.push_str(",design=");
            write_string(out, &self.design_json);
            let _ = writeln!(out, " {ts}");
            self.birth_written = true;
            self.last_checkpoint_index = Some(feed.first_sample_index);
            lines += 1;
        }
        if let Some(checkpoint) = checkpoint {
            escape_measurement(out, CHECKPOINT_MEASUREMENT);
            write_rig_tag(out, rig);
            let _ = write!(out, " run={}i,state=", clamp_i64(self.run.0));
            write_string(out, &serde_json::to_string(checkpoint).unwrap_or_default());
            let _ = writeln!(out, " {ts}");
            self.last_checkpoint_index = Some(feed.first_sample_index);
            lines += 1;
        }
        if self.versions_written.insert(feed.controller_version) {
            escape_measurement(out, CONTROLLER_MEASUREMENT);
            write_rig_tag(out, rig);
            let _ = write!(
                out,
                ",run={},version={} law=",
                self.run, feed.controller_version
            );
            write_string(out, &serde_json::to_string(&law).unwrap_or_default());
            let _ = writeln!(out, " {ts}");
            lines += 1;
        }
        escape_measurement(out, FEED_MEASUREMENT);
        write_rig_tag(out, rig);
        let _ = write!(
            out,
            " run={}i,session={}i,seq={}i,first_sample_index={}i,samples={}i,\
             first_timestamp_ns={}i,sample_period_ns={}i,controller_version={}i",
            clamp_i64(self.run.0),
            clamp_i64(feed.session),
            clamp_i64(feed.seq),
            clamp_i64(feed.first_sample_index),
            clamp_i64(feed.samples),
            clamp_i64(feed.first_timestamp_ns),
            clamp_i64(feed.sample_period_ns),
            clamp_i64(feed.controller_version),
        );
        if let Some(drive_n) = feed.drive_n.filter(|d| d.is_finite()) {
            out.push_str(",drive_n=");
            write_float(out, drive_n);
        }
        let _ = writeln!(out, " {ts}");
        Ok(lines + 1)
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn write_rig_tag(out: &mut String, rig: &str) {
    out.push_str(",rig=");
    escape_key(out, rig);
}

/// A string field value: quoted, with `"` and `\` escaped (InfluxDB line protocol).
pub(crate) fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Reads one record's columns, naming the record in every error.
pub(crate) struct Fields<'a> {
    row: &'a Row,
    measurement: &'static str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(row: &'a Row, measurement: &'static str) -> Self {
        Self { row, measurement }
    }

    pub(crate) fn time_ns(&self) -> i64 {
        self.row.time_ns().unwrap_or(i64::MIN)
    }

    pub(crate) fn error(&self, problem: String) -> RecordError {
        RecordError {
            measurement: self.measurement,
            time_ns: self.time_ns(),
            problem,
        }
    }

    pub(crate) fn value(&self, name: &str) -> Result<&'a Value, RecordError> {
        self.row
            .get(name)
            .ok_or_else(|| self.error(format!("no {name}")))
    }

    pub(crate) fn u64(&self, name: &str) -> Result<u64, RecordError> {
        let v = self.value(name)?;
        // Tags come back as strings, integer fields as numbers.
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| self.error(format!("{name} = {v} is not an unsigned integer")))
    }

    pub(crate) fn str(&self, name: &str) -> Result<&'a str, RecordError> {
        let v = self.value(name)?;
        v.as_str()
            .ok_or_else(|| self.error(format!("{name} = {v} is not a string")))
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<T, RecordError> {
        serde_json::from_str(self.str(name)?).map_err(|e| self.error(format!("{name}: {e}")))
    }
}

impl BirthRecord {
    pub fn from_row(row: &Row) -> Result<Self, RecordError> {
        let f = Fields::new(row, BIRTH_MEASUREMENT);
        let bytes = BASE64
            .decode(f.str("birth")?)
            .map_err(|e| f.error(format!("birth is not base64: {e}")))?;
        let birth = RigBirth::decode(bytes.as_slice())
            .map_err(|e| f.error(format!("birth is not a RigBirth: {e}")))?;
        Ok(Self {
            run: RunId(f.u64("run")?),
            birth,
            design: f.json("design")?,
            time_ns: f.time_ns(),
        })
    }
}

impl FeedRecord {
    pub fn from_row(row: &Row) -> Result<Self, RecordError> {
        let f = Fields::new(row, FEED_MEASUREMENT);
        let drive_n = match row.get("drive_n") {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| f.error(format!("drive_n = {v} is not a number")))?,
            ),
        };
        Ok(Self {
            run: RunId(f.u64("run")?),
            session: f.u64("session")?,
            seq: f.u64("seq")?,
            first_sample_index: f.u64("first_sample_index")?,
            samples: f.u64("samples")?,
            first_timestamp_ns: f.u64("first_timestamp_ns")?,
            sample_period_ns: f.u64("sample_period_ns")?,
            controller_version: f.u64("controller_version")?,
            drive_n,
        })
    }
}

impl CheckpointRecord {
    pub fn from_row(row: &Row) -> Result<Self, RecordError> {
        let f = Fields::new(row, CHECKPOINT_MEASUREMENT);
        Ok(Self {
            run: RunId(f.u64("run")?),
            time_ns: f.time_ns(),
            checkpoint: f.json("state")?,
        })
    }
}

impl ControllerRecord {
    pub fn from_row(row: &Row) -> Result<Self, RecordError> {
        let f = Fields::new(row, CONTROLLER_MEASUREMENT);
        Ok(Self {
            run: RunId(f.u64("run")?),
            version: f.u64("version")?,
            law: f.json("law")?,
        })
    }
}
