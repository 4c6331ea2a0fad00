//! DTOP's study kinds as pure functions, and models as data. A *study* is one simulation
//! request: a kind, a model, parameters and a seed. This crate turns it into a plan (how many
//! chunks, how much work), computes each chunk, and reduces the chunks to a result. No I/O, no
//! clocks, no threads: the engine (`dtop-engine`) schedules chunks on workers anywhere and
//! stores what they return.
//!
//! Determinism is the contract the engine relies on: chunk `i` of a study depends only on
//! (kind, model, params, seed, i) ([`chunk_seed`]), and [`reduce`] takes the chunk outputs in
//! chunk order, so a result is bit-identical whatever the number of workers, their order, or the
//! retries of a killed worker's chunk.
//!
//! # Layout
//! - [`model`]: [`ModelSpec`] (an N-storey shear chain, damping, actuator, sensor layout),
//!   [`ModelRef`] (`name@version`), [`Provenance`], the built-in models.
//! - [`problems`]: [`FieldProblem`], one per bad field, all reported at once.
//! - [`output`]: [`StudyOutput`] (a JSON summary and named column arrays) and CSV.
//! - [`signal`]: spectral estimation shared by kinds: Hann window, Welch and periodogram
//!   densities, H1 and coherence, percentiles.
//! - [`measured`]: measured inputs as `dtop-calibrate` data: the `frf` table to and from a
//!   `MeasuredFrf`, a shaker test's `acceleration` table to its H1 FRF and coherence.
//! - [`kinds`]: one module per [`StudyKind`], each with its `Params`, validation, chunk and
//!   reduce functions; [`plan`] (which resolves the parameters: defaults for the model, chunk
//!   size from the budget), [`run_chunk`], [`reduce`] and [`defaults`] dispatch to them.

pub mod chain;
pub mod inputs;
pub mod kinds;
pub mod measured;
pub mod model;
pub mod output;
pub mod problems;
pub mod signal;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

pub use inputs::{InputSpec, Inputs};
pub use kinds::{defaults, inputs, plan, reduce, run_chunk};
pub use model::{ModelRef, ModelSpec, Provenance};
pub use output::{Column, NamedArray, ProposedModel, StudyOutput};
pub use problems::FieldProblem;

/// What a study computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyKind {
    /// Natural frequencies, mode shapes, modal damping and poles.
    Modal,
    /// One or more frequency response functions.
    Frf,
    /// A vibration-control law assessed on the model (TMD, DVF, LQG).
    Control,
    /// Time-domain response to an excitation, PSD and H1 estimates, optional Monte Carlo.
    Simulate,
    /// Interval and Monte Carlo propagation of parameter uncertainty to FRFs.
    Uncertainty,
    /// Design under uncertainty: Monte Carlo statistics, Fisher sensitivities, failure
    /// probability.
    Design,
    /// Operational modal analysis of a measured acceleration record: SSI-cov with its
    /// stabilisation diagram, the modes' spread across segments, FDD as the cross-check.
    Oma,
    /// Control-based continuation on a model with cubic springs: the response curve by
    /// numerical continuation, the simulated CBC experiment and open-loop sweeps.
    Cbc,
    /// Natural modes of the rig as a 3D frame (built-in beams or CalculiX), their
    /// stabilisation against mesh refinement, and the frame condensed to a shear chain.
    Fea,
    /// Experimental modal analysis of a measured FRF or a shaker test: rational-fraction and
    /// circle fits.
    Ema,
    /// A model against a measured FRF, in numbers: frequency errors, MAC, FRAC.
    Crossval,
    /// Storey stiffnesses (and damping) fitted to target modes; proposes the updated model.
    Update,
}

impl StudyKind {
    /// Every kind, in documentation order.
    pub const ALL: [StudyKind; 12] = [
        StudyKind::Modal,
        StudyKind::Frf,
        StudyKind::Control,
        StudyKind::Simulate,
        StudyKind::Uncertainty,
        StudyKind::Design,
        StudyKind::Oma,
        StudyKind::Cbc,
        StudyKind::Fea,
        StudyKind::Ema,
        StudyKind::Crossval,
        StudyKind::Update,
    ];

    /// The kind's name in URLs, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            StudyKind::Modal => "modal",
            StudyKind::Frf => "frf",
            StudyKind::Control => "control",
            StudyKind::Simulate => "simulate",
            StudyKind::Uncertainty => "uncertainty",
            StudyKind::Design => "design",
            StudyKind::Oma => "oma",
            StudyKind::Cbc => "cbc",
            StudyKind::Fea => "fea",
            StudyKind::Ema => "ema",
            StudyKind::Crossval => "crossval",
            StudyKind::Update => "update",
        }
    }
}

impl fmt::Display for StudyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StudyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StudyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = StudyKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown study kind {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How much work one study may ask for, and how big one chunk should be. A work unit is one
/// evaluation of one DOF at one frequency or time step for one sample
/// (samples × frequencies-or-steps × DOFs); kinds count their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Studies planned above this are refused before anything is queued.
    pub max_work_units: u64,
    /// Kinds split Monte Carlo work into chunks of about this many work units, so one chunk
    /// runs for a second or so and a cancel or a killed worker costs little.
    pub chunk_work_units: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_work_units: 2_000_000_000_000,
            chunk_work_units: 20_000_000,
        }
    }
}

/// What [`plan`] found a study to be: how many chunks it splits into and how much work it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Number of chunks, at least 1. Chunks are numbered `0..chunks`.
    pub chunks: u32,
    /// Total work units (see [`Budget`]).
    pub work_units: u64,
}

/// What [`plan`] returns: the plan, and the parameters every chunk and the reduce must be
/// given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Number of chunks, at least 1, as in [`Plan`].
    pub chunks: u32,
    /// Total work units, as in [`Plan`].
    pub work_units: u64,
    /// The submitted parameters with every omitted field taken from the kind's defaults for
    /// the model, and each Monte Carlo kind's chunk size fixed from the budget. The engine
    /// stores these with the study, not the submitted ones.
    pub params: serde_json::Value,
}

/// What a running chunk may look at: whether its study was cancelled (kinds check it between
/// samples or blocks and return [`StudyError::Cancelled`]), and the third-party solvers the
/// worker offers.
#[derive(Clone, Copy)]
pub struct ChunkCtx<'a> {
    cancelled: &'a AtomicBool,
    solvers: Option<&'a dyn ExternalSolvers>,
}

impl fmt::Debug for ChunkCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkCtx")
            .field("cancelled", &self.is_cancelled())
            .field("solvers", &self.solvers.is_some())
            .finish()
    }
}

/// Third-party programs a worker runs for chunks that ask for them. The kinds stay pure: a kind
/// that needs one (`fea` with `solver = "calculix"`) asks its [`ChunkCtx`], and the worker's
/// implementation starts the program (as a child it kills when `cancelled` is set).
pub trait ExternalSolvers: Sync {
    /// Runs CalculiX on the input deck `deck` and returns what it computed.
    ///
    /// # Errors
    /// CalculiX missing, failing (with its own message), cancelled or timed out.
    fn calculix(
        &self,
        deck: &str,
        cancelled: &AtomicBool,
    ) -> Result<dtop_fe::calculix::CalculixRun, dtop_fe::calculix::CalculixError>;
}

impl<'a> ChunkCtx<'a> {
    /// A context watching `cancelled`, with no third-party solvers.
    pub fn new(cancelled: &'a AtomicBool) -> Self {
        Self {
            cancelled,
            solvers: None,
        }
    }

    /// The same context, offering `solvers`.
    pub fn with_solvers(self, solvers: &'a dyn ExternalSolvers) -> Self {
        Self {
            solvers: Some(solvers),
            ..self
        }
    }

    /// The third-party solvers the worker offers, if any.
    pub fn solvers(&self) -> Option<&'a dyn ExternalSolvers> {
        self.solvers
    }

    /// The flag a third-party run watches to be killed on cancel.
    pub fn cancel_flag(&self) -> &'a AtomicBool {
        self.cancelled
    }

    /// Whether the study was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once the study was cancelled.
    ///
    /// # Errors
    /// [`StudyError::Cancelled`].
    pub fn check(&self) -> Result<(), StudyError> {
        if self.is_cancelled() {
            Err(StudyError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Why a study could not be planned or computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StudyError {
    /// The model or the parameters are invalid; every problem is listed.
    #[error("invalid study: {}", problems::join(.0))]
    Invalid(Vec<FieldProblem>),
    /// The study is larger than the budget allows.
    #[error("study too large: {work_units} work units, budget {max_work_units}")]
    TooLarge {
        /// What the study would cost.
        work_units: u64,
        /// What the budget allows.
        max_work_units: u64,
    },
    /// The study was cancelled while a chunk ran.
    #[error("cancelled")]
    Cancelled,
    /// The numerics failed (singular matrix, NaN, no convergence), with the reason.
    #[error("numerics failed: {0}")]
    Numerics(String),
    /// A chunk output handed to `reduce` is not what this kind's chunks produce.
    #[error("bad chunk output: {0}")]
    BadChunk(String),
}

/// The seed of chunk `chunk` of a study seeded with `study_seed`: SplitMix64 of the pair, so
/// neighbouring chunks get unrelated streams and the mapping never changes between versions.
pub fn chunk_seed(study_seed: u64, chunk: u32) -> u64 {
    let mut z = study_seed ^ (u64::from(chunk).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in StudyKind::ALL {
            assert_eq!(kind.as_str().parse::<StudyKind>(), Ok(kind));
        }
        assert!("shooting".parse::<StudyKind>().is_err());
    }

    #[test]
    fn chunk_seeds_differ_between_chunks_and_studies() {
        let seeds: std::collections::BTreeSet<_> = (0..1000)
            .flat_map(|c| [chunk_seed(1, c), chunk_seed(2, c)])
            .collect();
        assert_eq!(seeds.len(), 2000);
    }
}
