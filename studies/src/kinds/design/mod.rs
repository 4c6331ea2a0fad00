//! The `design` study: design under uncertainty. Random floor masses, storey stiffnesses,
//! storey dampers and floor forces (Gaussian or Gamma each) are pushed through the storey chain
//! at one frequency to any selection of outputs (floor displacement amplitudes, storey shears);
//! the result is per-output statistics, histograms on pilot-fixed bins, failure probabilities
//! with their standard errors, and score-function / Fisher-information sensitivities.
//! One sample's parameters, outputs and scores are in [`eval`], the pilot (bins and thresholds
//! fixed before sampling) in [`pilot`], sampling and sums in [`sample`], its lane-wise kernels
//! (64 samples at a time) in [`lanes`]; statistics and the Fisher matrix in [`stats`].

pub mod eval;
pub mod lanes;
pub mod pilot;
pub mod sample;
pub mod stats;

use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::StudyOutput;
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// Computed from the model alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// Samples share one random stream and one set of partial sums per block of this many;
/// chunks hold whole blocks, so results are bit-identical whatever the chunk size.
pub const BLOCK_SAMPLES: u64 = 16_384;

/// A random input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Normal distribution; `std` 0 means fixed at `mean`.
    Gaussian {
        /// Mean, in the input's unit.
        mean: f64,
        /// Standard deviation, same unit, ≥ 0.
        std: f64,
    },
    /// Gamma distribution with mean shape·scale; `scale` 0 means fixed at 0 (use a Gaussian
    /// with std 0 for a fixed nonzero value).
    Gamma {
        /// Shape κ > 0.
        shape: f64,
        /// Scale θ ≥ 0, in the input's unit.
        scale: f64,
    },
}

impl Dist {
    /// The distribution's mean.
    pub fn mean(&self) -> f64 {
        match *self {
            Dist::Gaussian { mean, .. } => mean,
            Dist::Gamma { shape, scale } => shape * scale,
        }
    }

    /// Its standard deviation.
    pub fn std(&self) -> f64 {
        match *self {
            Dist::Gaussian { std, .. } => std,
            Dist::Gamma { shape, scale } => shape.sqrt() * scale,
        }
    }

    /// Whether it is random (has parameters to be sensitive to).
    pub fn is_random(&self) -> bool {
        match *self {
            Dist::Gaussian { std, .. } => std > 0.0,
            Dist::Gamma { scale, .. } => scale > 0.0,
        }
    }
}

/// One output of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputSel {
    /// Displacement amplitude |x_i| of floor i (1-based), m.
    Displacement(usize),
    /// Shear force of storey i (1-based), k_i·|x_i − x_{i−1}| from the complex relative
    /// displacement (x_0 = 0, the ground), N.
    Shear(usize),
}

impl OutputSel {
    /// Name with unit, e.g. `displacement_2_m`.
    pub fn name(&self) -> String {
        match self {
            OutputSel::Displacement(i) => format!("displacement_{i}_m"),
            OutputSel::Shear(i) => format!("shear_{i}_n"),
        }
    }
}

/// Parameters of `design`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Floor masses, kg, lowest first: one distribution per floor.
    pub mass_kg: Vec<Dist>,
    /// Storey stiffnesses, N/m, one per storey.
    pub stiffness_n_per_m: Vec<Dist>,
    /// Storey dampers, N·s/m, one per storey.
    pub damping_n_s_per_m: Vec<Dist>,
    /// Harmonic force amplitude at each floor, N (all in phase).
    pub force_n: Vec<Dist>,
    /// Analysis frequency, Hz (not rad/s), > 0.
    pub frequency_hz: f64,
    /// Outputs, any number ≥ 1 (repeats allowed).
    pub outputs: Vec<OutputSel>,
    /// Failure thresholds, one per output, in the output's unit: P_f = P(output > threshold).
    /// Absent: the pilot's mean + 3 pilot std (see `studies/STUDIES.md` § design).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f64>>,
    /// Monte Carlo samples, 1 to 10^9.
    pub samples: u64,
    /// Samples per chunk, rounded up to whole blocks of 16 384; absent: `plan` fixes it from
    /// the engine's `chunk_work_units` and [`work_units_per_sample`] in the resolved params
    /// (params stored without it: the default budget's `chunk_work_units` / floors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_chunk: Option<u64>,
    /// Histogram bins per output, 2 to 1000, over the pilot's mean ± 6 pilot std.
    pub bins: usize,
}

fn g(mean: f64, std: f64) -> Dist {
    Dist::Gaussian { mean, std }
}

impl Params {
    /// The defaults. For a 3-floor model, Cristallo's (TOOLS.md §4.2) except c₂ and c₃, whose
    /// "Gamma" pairs are read as the Gaussian (mean, std) they evidently are (Cristallo's Gamma
    /// reading gives near-zero damping). Otherwise the model's masses and stiffnesses with 2 %
    /// std, 2 % storey damping ratio with 10 % std, 1 N ± 10 % at the top floor. Outputs: every
    /// displacement and shear; 1.97 Hz for Cristallo's, else 0.9× the lowest-storey frequency.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        let n = model.floors();
        let s = &model.structure;
        let outputs = (1..=n)
            .map(OutputSel::Displacement)
            .chain((1..=n).map(OutputSel::Shear))
            .collect();
        if n == 3 {
            return Self {
                mass_kg: vec![
                    g(4.8724882, 0.0312982),
                    g(5.4758033, 0.1002168),
                    g(5.6923249, 0.1144056),
                ],
                stiffness_n_per_m: vec![
                    g(4203.0027, 83.760278),
                    g(4147.6895, 69.627281),
                    g(5101.4822, 56.769849),
                ],
                damping_n_s_per_m: vec![
                    g(2.2007146, 0.2589255),
                    g(0.6018186, 0.0015333),
                    g(2.3842358, 0.0010963),
                ],
                force_n: vec![g(1.0, 0.1), g(0.0, 0.0), g(0.0, 0.0)],
                frequency_hz: 1.97,
                outputs,
                thresholds: None,
                samples: 10_000,
                samples_per_chunk: None,
                bins: 20,
            };
        }
        let m = &s.floor_masses_kg;
        let k = &s.storey_stiffness_n_per_m;
        let c: Vec<f64> = (0..n)
            .map(|i| 2.0 * 0.02 * (k.get(i).copied().unwrap_or(0.0) * m[i]).abs().sqrt())
            .collect();
        let w1 = k
            .first()
            .zip(m.first())
            .map_or(1.0, |(k, m)| (k / m).abs().sqrt());
        Self {
            mass_kg: m.iter().map(|&v| g(v, 0.02 * v)).collect(),
            stiffness_n_per_m: k.iter().map(|&v| g(v, 0.02 * v)).collect(),
            damping_n_s_per_m: c.iter().map(|&v| g(v, 0.1 * v)).collect(),
            force_n: (0..n)
                .map(|i| if i + 1 == n { g(1.0, 0.1) } else { g(0.0, 0.0) })
                .collect(),
            frequency_hz: 0.9 * w1 / std::f64::consts::TAU,
            outputs,
            thresholds: None,
            samples: 10_000,
            samples_per_chunk: None,
            bins: 20,
        }
    }

    /// Every input in the order masses, stiffnesses, dampers, forces.
    pub fn inputs(&self) -> Vec<Dist> {
        [
            &self.mass_kg[..],
            &self.stiffness_n_per_m[..],
            &self.damping_n_s_per_m[..],
            &self.force_n[..],
        ]
        .concat()
    }
}

fn check_dist(field: &str, d: &Dist, positive: bool, problems: &mut Vec<FieldProblem>) {
    match *d {
        Dist::Gaussian { mean, std } => {
            if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
                problems.push(FieldProblem::new(
                    field,
                    format!("Gaussian mean {mean}, std {std}: must be finite with std ≥ 0"),
                ));
            } else if positive && mean - 6.0 * std <= 0.0 {
                problems.push(FieldProblem::new(
                    field,
                    format!(
                        "Gaussian mean {mean}, std {std}: must stay positive, mean − 6·std > 0"
                    ),
                ));
            }
        }
        Dist::Gamma { shape, scale } => {
            if !(shape.is_finite() && shape > 0.0 && scale.is_finite() && scale >= 0.0) {
                problems.push(FieldProblem::new(
                    field,
                    format!("Gamma shape {shape}, scale {scale}: need shape > 0, scale ≥ 0"),
                ));
            } else if positive && scale == 0.0 {
                problems.push(FieldProblem::new(
                    field,
                    "Gamma with scale 0 is fixed at 0; this input must be positive",
                ));
            }
        }
    }
}

/// Work units of one sample: one per floor for the chain solve, and one per term of the
/// score-moment sums Σ y_a·y_b·s_j (outputs·(outputs+1)/2 × distribution parameters), which
/// dominate a sample's cost once there are a few outputs. With Cristallo's defaults (6 outputs,
/// 20 distribution parameters) a sample is 423 units and costs about as much as 50 to 60
/// `uncertainty` units, the same order.
pub fn work_units_per_sample(params: &Params, floors: usize) -> u64 {
    let o = params.outputs.len() as u64;
    let p = eval::thetas(params).len() as u64;
    (floors as u64).saturating_add((o * (o + 1) / 2).saturating_mul(p))
}

/// Samples per chunk: the params' or, for params stored before `plan` fixed it, the default
/// budget's at one work unit per floor, in whole blocks.
pub fn samples_per_chunk(params: &Params, floors: usize) -> u64 {
    let raw = params
        .samples_per_chunk
        .unwrap_or(Budget::default().chunk_work_units / floors.max(1) as u64)
        .max(1);
    raw.div_ceil(BLOCK_SAMPLES) * BLOCK_SAMPLES
}

/// Every problem with the model and the parameters.
pub fn problems(model: &ModelSpec, params: &Params) -> Vec<FieldProblem> {
    let mut problems = model.problems();
    let n = model.floors();
    for (field, v, positive) in [
        ("mass_kg", &params.mass_kg, true),
        ("stiffness_n_per_m", &params.stiffness_n_per_m, true),
        ("damping_n_s_per_m", &params.damping_n_s_per_m, false),
        ("force_n", &params.force_n, false),
    ] {
        if v.len() != n {
            problems.push(FieldProblem::new(
                format!("params.{field}"),
                format!("has {} entries; give one per floor ({n})", v.len()),
            ));
        }
        for (i, d) in v.iter().enumerate() {
            check_dist(&format!("params.{field}[{i}]"), d, positive, &mut problems);
        }
    }
    if !(params.frequency_hz.is_finite() && params.frequency_hz > 0.0) {
        problems.push(FieldProblem::new(
            "params.frequency_hz",
            format!("= {}; must be finite and > 0", params.frequency_hz),
        ));
    }
    if params.outputs.is_empty() {
        problems.push(FieldProblem::new(
            "params.outputs",
            "is empty; select at least one output",
        ));
    }
    for (i, o) in params.outputs.iter().enumerate() {
        let (OutputSel::Displacement(f) | OutputSel::Shear(f)) = *o;
        if f == 0 || f > n {
            problems.push(FieldProblem::new(
                format!("params.outputs[{i}]"),
                format!("floor {f} does not exist; allowed range is 1..={n}"),
            ));
        }
    }
    if let Some(t) = &params.thresholds {
        if t.len() != params.outputs.len() {
            problems.push(FieldProblem::new(
                "params.thresholds",
                format!(
                    "has {} entries; give one per output ({})",
                    t.len(),
                    params.outputs.len()
                ),
            ));
        }
        for (i, v) in t.iter().enumerate() {
            if !v.is_finite() {
                problems.push(FieldProblem::new(
                    format!("params.thresholds[{i}]"),
                    "must be finite",
                ));
            }
        }
    }
    if !(1..=1_000_000_000).contains(&params.samples) {
        problems.push(FieldProblem::new(
            "params.samples",
            format!("= {}; allowed range is 1..=1000000000", params.samples),
        ));
    }
    if params.samples_per_chunk == Some(0) {
        problems.push(FieldProblem::new(
            "params.samples_per_chunk",
            "= 0; must be ≥ 1",
        ));
    }
    if !(2..=1000).contains(&params.bins) {
        problems.push(FieldProblem::new(
            "params.bins",
            format!("= {}; allowed range is 2..=1000", params.bins),
        ));
    }
    problems
}

/// Plans the study: work units = samples × floors (one frequency), chunks of whole blocks.
///
/// # Errors
/// [`StudyError::Invalid`] with every problem, or [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let p = problems(model, params);
    if !p.is_empty() {
        return Err(StudyError::Invalid(p));
    }
    let work_units = params
        .samples
        .saturating_mul(work_units_per_sample(params, model.floors()));
    if work_units > budget.max_work_units {
        return Err(StudyError::TooLarge {
            work_units,
            max_work_units: budget.max_work_units,
        });
    }
    let chunks = params
        .samples
        .div_ceil(samples_per_chunk(params, model.floors()));
    let chunks = u32::try_from(chunks).map_err(|_| {
        StudyError::Invalid(vec![FieldProblem::new(
            "params.samples_per_chunk",
            "too small for this many samples: more than 2^32 chunks",
        )])
    })?;
    Ok(Plan { chunks, work_units })
}

/// Computes chunk `chunk`: its blocks' partial sums.
///
/// # Errors
/// [`StudyError::Cancelled`], [`StudyError::Numerics`] (a non-positive sampled mass or
/// stiffness, a singular system), [`StudyError::Invalid`].
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    seed: u64,
    chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let p = problems(model, params);
    if !p.is_empty() {
        return Err(StudyError::Invalid(p));
    }
    let per_chunk = samples_per_chunk(params, model.floors());
    let first = u64::from(chunk) * per_chunk;
    if first >= params.samples {
        return Err(StudyError::BadChunk(format!(
            "chunk {chunk} is past the last sample"
        )));
    }
    let count = per_chunk.min(params.samples - first);
    let pilot = pilot::pilot(model.floors(), params)?;
    let out = sample::run(model.floors(), params, &pilot, seed, first, count, ctx)?;
    serde_json::to_value(out).map_err(|e| StudyError::Numerics(e.to_string()))
}

/// Combines the chunks' block sums, in order, into the statistics.
///
/// # Errors
/// [`StudyError::BadChunk`]; [`StudyError::Numerics`].
pub fn reduce(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    let p = problems(model, params);
    if !p.is_empty() {
        return Err(StudyError::Invalid(p));
    }
    let pilot = pilot::pilot(model.floors(), params)?;
    let mut parts = Vec::with_capacity(chunks.len());
    for c in chunks {
        // Read in place: `from_value` would first copy the whole JSON tree.
        let part =
            sample::ChunkSums::deserialize(c).map_err(|e| StudyError::BadChunk(e.to_string()))?;
        parts.push(part);
    }
    stats::reduce(params, &pilot, &parts)
}

#[cfg(test)]
mod tests;
