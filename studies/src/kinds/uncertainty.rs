//! The `uncertainty` study. SCAFFOLD: replaced by its implementation in issue 12.

use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::StudyOutput;
use crate::{Budget, ChunkCtx, Plan, StudyError};

/// Parameters of `uncertainty`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

impl Params {
    /// The defaults for `model`.
    pub fn defaults_for(_model: &ModelSpec) -> Self {
        Self {}
    }
}

/// Plans the study.
///
/// # Errors
/// Every problem.
pub fn check(_model: &ModelSpec, _params: &Params, _budget: &Budget) -> Result<Plan, StudyError> {
    Err(StudyError::Numerics("uncertainty: not built yet".into()))
}

/// Computes one chunk.
///
/// # Errors
/// Numerics.
pub fn run_chunk(
    _model: &ModelSpec,
    _params: &Params,
    _seed: u64,
    _chunk: u32,
    _ctx: &ChunkCtx<'_>,
) -> Result<serde_json::Value, StudyError> {
    Err(StudyError::Numerics("uncertainty: not built yet".into()))
}

/// Reduces the chunks.
///
/// # Errors
/// Numerics.
pub fn reduce(
    _model: &ModelSpec,
    _params: &Params,
    _seed: u64,
    _chunks: &[serde_json::Value],
) -> Result<StudyOutput, StudyError> {
    Err(StudyError::Numerics("uncertainty: not built yet".into()))
}
