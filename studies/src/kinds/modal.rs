//! The `modal` study: natural frequencies, mass-normalised mode shapes, modal damping ratios
//! and the poles of the damped model, for any model. One chunk; no randomness.

use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::StudyOutput;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// Computed from the model alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// `modal` has no parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

impl Params {
    /// The defaults for `model`: none.
    pub fn defaults_for(_model: &ModelSpec) -> Self {
        Self {}
    }
}

/// One chunk; the work is one eigenproblem.
///
/// # Errors
/// The model's problems.
pub fn check(
    model: &ModelSpec,
    _params: &Params,
    _budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let dofs = building.dofs() as u64;
    Ok(Plan {
        chunks: 1,
        work_units: dofs * dofs * dofs,
    })
}

/// The modal analysis, as JSON.
///
/// # Errors
/// [`StudyError::Numerics`] if the eigenvalues cannot be computed.
pub fn run_chunk(
    model: &ModelSpec,
    _params: &Params,
    _seed: u64,
    _chunk: u32,
    _ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let modal = dtop_dynamics::frf::modal_analysis(&building)
        .map_err(|e| StudyError::Numerics(e.to_string()))?;
    serde_json::to_value(&modal).map_err(|e| StudyError::Numerics(e.to_string()))
}

/// The one chunk's output is the summary.
///
/// # Errors
/// [`StudyError::BadChunk`] unless there is exactly one chunk.
pub fn reduce(
    _model: &ModelSpec,
    _params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    match chunks {
        [one] => Ok(StudyOutput {
            summary: one.clone(),
            arrays: Vec::new(),
            proposed_model: None,
        }),
        _ => Err(StudyError::BadChunk(format!(
            "modal has 1 chunk, got {}",
            chunks.len()
        ))),
    }
}
