//! Deterministic replay: any stored time range of a rig run through the twin's estimator and
//! controller again, off-line, giving the estimates and drives the live twin made, bit for bit
//! (for incident review and regression tests).
//!
//! The live twin stores, next to the samples, what replay needs and cannot recompute: which
//! blocks its estimator folded in (late, duplicate and backfilled blocks are not), the birth
//! and model design of every estimator run, a checkpoint of the estimator every
//! `model.checkpoint_interval_s`, each controller version's law ([`record`]), and each switch of
//! the estimator to a catalogue model version (`crate::adopt::ModelRecord`). Replay starts
//! at the last checkpoint before the range (or the run's start), rebuilds each block's raw
//! counts from the stored values, and feeds them through the same code ([`engine`]);
//! [`source`] reads it all from InfluxDB 1.x and compares.
//!
//! - [`record`]: the records, their line protocol and parsing, and the live [`RunRecorder`].
//! - [`engine`]: the pure replayer of one run.
//! - [`source`]: reading a range from InfluxDB 1.x, replaying it, verifying it.
//! - [`restore`]: a takeover's restore of the previous owner's run at the persisted
//!   watermark, so the new owner continues it.

pub mod engine;
pub mod record;
pub mod restore;
pub mod source;

pub use engine::{EngineError, Replayed, Replayer};
pub use record::{RunId, RunRecorder};
pub use source::{ReplayError, ReplayOutput, ReplayRange, ReplayReport, ReplayStart, replay};
