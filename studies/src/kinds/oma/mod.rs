//! The `oma` study: operational modal analysis of a measured acceleration record (output only;
//! ambient or shaker noise, force unknown) with `dtop-oma`: SSI-cov over a range of model
//! orders with its stabilisation diagram and automatic mode picking, the modes' spread across
//! data segments, and FDD (with EFDD damping) as the cross-check; each mode compared with the
//! study's model.
//!
//! One chunk: the whole identification of a 10-minute, 4-channel 1 kHz record takes well
//! under a second on one core (BENCHMARKS.md, "OMA"), less than the engine's own work for a
//! handful of extra chunks, so splitting the segments into chunks would cost more than it
//! saves. The chunk looks at the cancel flag between SSI, the segments and FDD. Work units are
//! samples × channels × model orders, twice that with segments (they read the record again).
//!
//! - [`params`]: the flat parameters, their defaults and their checks.
//! - [`record`]: the record out of `inputs.acceleration`, and its checks.
//! - [`summary`]: the result: modes with their spreads, FDD and the model's modes beside
//!   them, the stabilisation diagram, the singular-value spectra and the mode shapes.

pub mod params;
pub mod record;
pub mod summary;

#[cfg(test)]
mod tests;

use dtop_oma::{OmaError, OmaResult, fdd, pick_modes, segment_uncertainty, ssi_cov};
use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::StudyOutput;
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, Inputs, Plan, StudyError};

pub use params::Params;
pub use record::INPUTS;
use record::{Record, RecordFacts};

/// A record needs this many samples per block row (`dtop-oma`'s floor against nonsense).
const SAMPLES_PER_BLOCK_ROW: usize = dtop_oma::ssi::MIN_SAMPLES_PER_BLOCK_ROW;

/// What the one chunk returns: the record's facts and `dtop-oma`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkOutput {
    /// The record identified.
    pub record: RecordFacts,
    /// SSI with its poles, the modes in the band, their spread across segments, FDD.
    pub result: OmaResult,
}

/// Checks the record and the parameters together (every problem at once) and plans one
/// chunk of samples × channels × orders work units (× 2 with segments).
///
/// # Errors
/// [`StudyError::Invalid`] with every problem; [`StudyError::TooLarge`] above the budget.
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let mut problems = model.problems();
    let record = record::read(inputs, params, model.floors());
    let (channels, sample_rate_hz) = match &record {
        Ok(r) => (r.data.len(), r.facts.sample_rate_hz),
        Err(_) => (0, f64::NAN),
    };
    problems.extend(params.problems(channels, sample_rate_hz));
    match &record {
        Ok(r) => problems.extend(length_problems(r, params)),
        Err(p) => problems.extend(p.iter().cloned()),
    }
    let Ok(record) = record else {
        return Err(StudyError::Invalid(problems));
    };
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let orders = params.oma_params().ssi.orders().len() as u64;
    let passes = if params.segments > 0 { 2 } else { 1 };
    let work_units = (record.facts.samples as u64)
        .saturating_mul(record.data.len() as u64)
        .saturating_mul(orders)
        .saturating_mul(passes);
    if work_units > budget.max_work_units {
        return Err(StudyError::TooLarge {
            work_units,
            max_work_units: budget.max_work_units,
        });
    }
    Ok(Plan {
        chunks: 1,
        work_units,
    })
}

/// Whether the record is long enough for the block rows, the segments and FDD's segments,
/// each with the length needed in seconds and what to lower instead.
fn length_problems(record: &Record, params: &Params) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    let n = record.facts.samples;
    let fs = record.facts.sample_rate_hz;
    let l = record.data.len();
    let seconds = |samples: usize| samples as f64 / fs;
    let i = params.block_rows;
    let needed = SAMPLES_PER_BLOCK_ROW * i;
    // With i block rows the highest order is l·(i − 1) (the rows of O↑), all references used.
    let order_with = |rows: usize| l * rows.saturating_sub(1);
    if i >= 2 && n < needed {
        let rows = n / SAMPLES_PER_BLOCK_ROW;
        let or_lower = if rows >= 2 {
            format!(
                ", or lower params.block_rows to {rows} (then params.max_order to at most {})",
                order_with(rows)
            )
        } else {
            String::new()
        };
        problems.push(FieldProblem::new(
            format!("inputs.{}", record::INPUT),
            format!(
                "holds {n} samples ({:.3} s) but block_rows = {i} needs at least {needed} \
                 ({:.3} s, {SAMPLES_PER_BLOCK_ROW} per block row): give at least {:.3} s{or_lower}",
                seconds(n),
                seconds(needed),
                seconds(needed),
            ),
        ));
    } else if i >= 2 && params.segments >= 2 && n / params.segments < needed {
        let most = n / needed;
        problems.push(FieldProblem::new(
            "params.segments",
            format!(
                "segments = {} cuts the {:.3} s record into {:.3} s pieces but block_rows = \
                 {i} needs {:.3} s in each: give at least {:.3} s, or lower params.segments \
                 to {} (0 for none)",
                params.segments,
                seconds(n),
                seconds(n / params.segments),
                seconds(needed),
                seconds(needed * params.segments),
                if most >= 2 { most } else { 0 }
            ),
        ));
    }
    if params.fdd && params.fdd_segment_samples > n {
        problems.push(FieldProblem::new(
            "params.fdd_segment_samples",
            format!(
                "fdd_segment_samples = {} ({:.3} s) is longer than the {:.3} s record: give at \
                 least {:.3} s, or lower params.fdd_segment_samples to {n}",
                params.fdd_segment_samples,
                seconds(params.fdd_segment_samples),
                seconds(n),
                seconds(params.fdd_segment_samples)
            ),
        ));
    }
    problems
}

/// The identification: SSI-cov and mode picking on the whole record (modes outside the band
/// dropped), their spread across segments, FDD.
///
/// # Errors
/// [`StudyError::Invalid`] if the record or parameters are bad (as `check` says);
/// [`StudyError::Cancelled`]; [`StudyError::Numerics`] if a decomposition fails.
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunk: u32,
    ctx: &ChunkCtx<'_>,
    inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    if chunk != 0 {
        return Err(StudyError::BadChunk(format!(
            "oma has 1 chunk, not {chunk}"
        )));
    }
    let record = record::read(inputs, params, model.floors()).map_err(StudyError::Invalid)?;
    let fs = record.facts.sample_rate_hz;
    let oma = params.oma_params();
    ctx.check()?;
    let ssi = ssi_cov(&record.data, fs, &oma.ssi).map_err(from_oma)?;
    let modes: Vec<_> = pick_modes(&ssi.poles, &ssi.orders, &oma.picking)
        .into_iter()
        .filter(|m| params.in_band(m.frequency_hz))
        .collect();
    let segments = match &oma.segments {
        Some(segment_params) => {
            ctx.check()?;
            Some(
                segment_uncertainty(
                    &record.data,
                    fs,
                    &modes,
                    &oma.ssi,
                    &oma.picking,
                    segment_params,
                )
                .map_err(from_oma)?,
            )
        }
        None => None,
    };
    let fdd = match &oma.fdd {
        Some(fdd_params) => {
            ctx.check()?;
            Some(fdd(&record.data, fs, fdd_params).map_err(from_oma)?)
        }
        None => None,
    };
    let output = ChunkOutput {
        record: record.facts,
        result: OmaResult {
            ssi,
            modes,
            segments,
            fdd,
        },
    };
    serde_json::to_value(&output).map_err(|e| StudyError::Numerics(e.to_string()))
}

/// The one chunk's identification as the study's result (see [`summary`]).
///
/// # Errors
/// [`StudyError::BadChunk`] unless there is exactly one chunk of this kind;
/// [`StudyError::Invalid`] for a bad model; [`StudyError::Numerics`] if the model's modes
/// cannot be computed.
pub fn reduce(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    let [one] = chunks else {
        return Err(StudyError::BadChunk(format!(
            "oma has 1 chunk, got {}",
            chunks.len()
        )));
    };
    let output: ChunkOutput = serde_json::from_value(one.clone())
        .map_err(|e| StudyError::BadChunk(format!("not an oma chunk: {e}")))?;
    summary::output(model, params, &output)
}

/// `dtop-oma`'s error as a study error: its problems are the record's (the parameters were
/// checked under their own names by `check`).
fn from_oma(error: OmaError) -> StudyError {
    match error {
        OmaError::Invalid(problems) => StudyError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldProblem::new(format!("inputs.{}", record::INPUT), p))
                .collect(),
        ),
        OmaError::Numerical(reason) => StudyError::Numerics(reason),
    }
}
