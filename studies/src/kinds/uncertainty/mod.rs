//! The `uncertainty` study: interval and Monte Carlo propagation of uncertain floor masses,
//! storey stiffnesses and storey dampers to the FRF magnitude |u_i(ω)| of every floor for a unit
//! force at one floor. Chunk 0 computes the inner bound ([`inner`]) and the guaranteed outer
//! bound ([`outer`]); chunks 1.. are Monte Carlo blocks ([`mc`]). Methods and guarantees are in
//! `studies/STUDIES.md` § uncertainty.

pub mod inner;
pub mod mc;
pub mod outer;

use serde::{Deserialize, Serialize};

use dtop_dynamics::Damping;

use crate::chain::Chain;
use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// Computed from the model alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// Monte Carlo samples share one random stream per block of this many samples, seeded with
/// `chunk_seed(seed, block)`; chunks hold whole blocks.
pub const BLOCK_SAMPLES: u64 = 64;

/// Most parameters for which every corner of the box is enumerated; above it a documented
/// subset is used (see [`inner::corners`]).
pub const MAX_ALL_CORNERS_PARAMS: usize = 12;

/// Parameters of `uncertainty`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Nominal storey dampers in N·s/m, lowest storey first, one per floor. (Storey `i` joins
    /// floor `i` to the one below.) Masses and stiffnesses are the model's. Defaults to the
    /// model's dampers when its damping is `storey_dampers`; required otherwise, because a
    /// Rayleigh, modal or matrix-damped model has no storey dampers to perturb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storey_damping_n_s_per_m: Option<Vec<f64>>,
    /// Floor (1-based) where the unit force (1 N) acts.
    pub force_floor: usize,
    /// Lowest frequency of the grid, Hz (not rad/s), > 0.
    pub f_min_hz: f64,
    /// Highest frequency of the grid, Hz, > `f_min_hz`.
    pub f_max_hz: f64,
    /// Number of grid frequencies, linearly spaced, 2 to 100 000.
    pub frequencies: usize,
    /// Relative half-width of each floor mass's interval, [m(1−e), m(1+e)], 0 ≤ e < 1.
    pub mass_rel_half_width: Vec<f64>,
    /// Relative half-width of each storey stiffness's interval, 0 ≤ e < 1.
    pub stiffness_rel_half_width: Vec<f64>,
    /// Relative half-width of each storey damper's interval, 0 ≤ e ≤ 1.
    pub damping_rel_half_width: Vec<f64>,
    /// Absolute mass intervals `[lo, hi]` in kg, one per floor; when given they replace the
    /// nominal masses and `mass_rel_half_width`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_intervals_kg: Option<Vec<[f64; 2]>>,
    /// Absolute stiffness intervals in N/m; replace the model's and the relative half-widths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stiffness_intervals_n_per_m: Option<Vec<[f64; 2]>>,
    /// Absolute damper intervals in N·s/m; replace the nominal dampers and half-widths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damping_intervals_n_s_per_m: Option<Vec<[f64; 2]>>,
    /// Monte Carlo samples, uniform in the box, 0 to 10^9.
    pub samples: u64,
    /// Monte Carlo samples per chunk (rounded up to whole blocks of 64); absent: `plan` fixes
    /// it from the engine's `chunk_work_units` in the resolved params, so chunking never
    /// depends on the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_chunk: Option<u64>,
    /// Grid frequencies per bounds chunk: the inner and outer bounds of each frequency are
    /// independent, so they are split over chunks of this many frequencies, which several
    /// workers run at once. Absent: `plan` fixes it from the engine's `chunk_work_units` in the
    /// resolved params; params stored without it (before this field) keep one bounds chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequencies_per_bounds_chunk: Option<usize>,
    /// Most boxes the outer bound may split the parameter box into, per frequency, 1 to 4096.
    pub outer_max_boxes: usize,
    /// The outer bound splits a box while its enclosure radius exceeds this fraction of the
    /// midpoint magnitude on some floor, 0 < t ≤ 1.
    pub outer_rel_tolerance: f64,
    /// Coordinate-search sweeps after the corner enumeration of the inner bound, 0 to 10.
    pub inner_search_sweeps: usize,
}

impl Params {
    /// The defaults for `model`: 5 % on every parameter, the model's storey dampers (none when
    /// its damping is not `storey_dampers`), force at the top floor, 400 frequencies from 1 %
    /// to 1.5× the highest natural frequency (a Gershgorin estimate), 10 000 samples.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        let s = &model.structure;
        let n = s.floors();
        let damping = match &s.damping {
            Damping::StoreyDampers {
                storey_damping_n_s_per_m,
            } => Some(storey_damping_n_s_per_m.clone()),
            _ => None,
        };
        let f_top_hz = undamped_top_frequency_hz(&s.floor_masses_kg, &s.storey_stiffness_n_per_m);
        Self {
            storey_damping_n_s_per_m: damping,
            force_floor: n.max(1),
            f_min_hz: (f_top_hz * 0.01).max(0.01),
            f_max_hz: (f_top_hz * 1.5).max(1.0),
            frequencies: 400,
            mass_rel_half_width: vec![0.05; n],
            stiffness_rel_half_width: vec![0.05; n],
            damping_rel_half_width: vec![0.05; n],
            mass_intervals_kg: None,
            stiffness_intervals_n_per_m: None,
            damping_intervals_n_s_per_m: None,
            samples: 10_000,
            samples_per_chunk: None,
            frequencies_per_bounds_chunk: None,
            outer_max_boxes: 256,
            outer_rel_tolerance: 0.05,
            inner_search_sweeps: 3,
        }
    }
}

/// Highest undamped natural frequency of the chain, Hz, by Gershgorin on M^-1/2 K M^-1/2 (an
/// upper estimate, fine for a default grid); 0 when the inputs are unusable.
fn undamped_top_frequency_hz(m: &[f64], k: &[f64]) -> f64 {
    let n = m.len().min(k.len());
    let mut top = 0.0_f64;
    for i in 0..n {
        let k_up = if i + 1 < n { k[i + 1] } else { 0.0 };
        let mut row = (k[i] + k_up) / m[i];
        if i > 0 {
            row += k[i] / (m[i] * m[i - 1]).sqrt();
        }
        if i + 1 < n {
            row += k_up / (m[i] * m[i + 1]).sqrt();
        }
        top = top.max(row);
    }
    if top.is_finite() && top > 0.0 {
        top.sqrt() / std::f64::consts::TAU
    } else {
        0.0
    }
}

/// The parameter box: `lo[l] ≤ p[l] ≤ hi[l]` for p = [masses, stiffnesses, dampers], and the
/// frequency grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// Floors.
    pub floors: usize,
    /// Lower ends, in the order masses (kg), stiffnesses (N/m), dampers (N·s/m).
    pub lo: Vec<f64>,
    /// Upper ends.
    pub hi: Vec<f64>,
    /// Force floor, 0-based.
    pub force_floor: usize,
    /// Grid, Hz.
    pub frequencies_hz: Vec<f64>,
    /// Samples per chunk (a multiple of [`BLOCK_SAMPLES`]).
    pub samples_per_chunk: u64,
    /// Number of Monte Carlo chunks.
    pub mc_chunks: u32,
    /// Grid frequencies per bounds chunk (the last may have fewer).
    pub frequencies_per_bounds_chunk: usize,
    /// Number of bounds chunks, at least 1; they come first, the Monte Carlo chunks after.
    pub bounds_chunks: u32,
}

impl Setup {
    /// Parameters in the box.
    pub fn params(&self) -> usize {
        self.lo.len()
    }

    /// The chain for a parameter vector.
    pub fn chain<'a>(&self, p: &'a [f64]) -> Chain<'a> {
        let n = self.floors;
        Chain {
            mass_kg: &p[..n],
            stiffness_n_per_m: &p[n..2 * n],
            damping_n_s_per_m: &p[2 * n..3 * n],
        }
    }
}

fn check_widths(field: &str, widths: &[f64], n: usize, max: f64, problems: &mut Vec<FieldProblem>) {
    if widths.len() != n {
        problems.push(FieldProblem::new(
            format!("params.{field}"),
            format!("has {} entries; give one per floor ({n})", widths.len()),
        ));
    }
    for (i, &e) in widths.iter().enumerate() {
        let ok = e.is_finite() && e >= 0.0 && (e < max || (max >= 1.0 && e <= max));
        if !ok {
            problems.push(FieldProblem::new(
                format!("params.{field}[{i}]"),
                format!(
                    "= {e}; allowed range is 0 ≤ e {} {max}",
                    if max >= 1.0 { "≤" } else { "<" }
                ),
            ));
        }
    }
}

fn interval_box(
    field: &str,
    nominal: &[f64],
    widths: &[f64],
    absolute: Option<&Vec<[f64; 2]>>,
    n: usize,
    allow_zero: bool,
    problems: &mut Vec<FieldProblem>,
) -> (Vec<f64>, Vec<f64>) {
    match absolute {
        Some(iv) => {
            if iv.len() != n {
                problems.push(FieldProblem::new(
                    format!("params.{field}"),
                    format!("has {} intervals; give one per floor ({n})", iv.len()),
                ));
            }
            for (i, [lo, hi]) in iv.iter().enumerate() {
                let lo_ok = lo.is_finite() && (*lo > 0.0 || (allow_zero && *lo >= 0.0));
                if !lo_ok || !hi.is_finite() || hi < lo {
                    problems.push(FieldProblem::new(
                        format!("params.{field}[{i}]"),
                        format!(
                            "= [{lo}, {hi}]; allowed: finite, {} lower end, lower ≤ upper",
                            if allow_zero {
                                "non-negative"
                            } else {
                                "positive"
                            }
                        ),
                    ));
                }
            }
            (
                iv.iter().map(|v| v[0]).collect(),
                iv.iter().map(|v| v[1]).collect(),
            )
        }
        None => (
            nominal
                .iter()
                .zip(widths)
                .map(|(v, e)| v * (1.0 - e))
                .collect(),
            nominal
                .iter()
                .zip(widths)
                .map(|(v, e)| v * (1.0 + e))
                .collect(),
        ),
    }
}

/// Samples making about `chunk_work_units` work units at `frequencies` × `floors` per sample,
/// in whole blocks: what `plan` fixes when the submitter gave no `samples_per_chunk`.
pub fn samples_per_chunk_within(frequencies: usize, floors: usize, chunk_work_units: u64) -> u64 {
    let per_sample = (frequencies as u64).saturating_mul(floors as u64).max(1);
    (chunk_work_units / per_sample)
        .max(1)
        .div_ceil(BLOCK_SAMPLES)
        .saturating_mul(BLOCK_SAMPLES)
}

/// Samples per chunk: the resolved params', in whole blocks (the default budget's only for
/// params stored before `plan` resolved them).
fn samples_per_chunk(params: &Params, freqs: usize, floors: usize) -> u64 {
    match params.samples_per_chunk {
        Some(given) => given.max(1).div_ceil(BLOCK_SAMPLES) * BLOCK_SAMPLES,
        None => samples_per_chunk_within(freqs, floors, Budget::default().chunk_work_units),
    }
}

/// The nominal storey dampers: the params', else the model's `storey_dampers`; a problem
/// saying why when neither gives them.
fn nominal_dampers(
    model: &ModelSpec,
    params: &Params,
    problems: &mut Vec<FieldProblem>,
) -> Vec<f64> {
    if let Some(c) = &params.storey_damping_n_s_per_m {
        return c.clone();
    }
    let n = model.floors();
    match &model.structure.damping {
        Damping::StoreyDampers {
            storey_damping_n_s_per_m,
        } => storey_damping_n_s_per_m.clone(),
        other => {
            let what = match other {
                Damping::Rayleigh { .. } | Damping::RayleighModes { .. } => "Rayleigh",
                Damping::Modal { .. } => "modal",
                _ => "matrix",
            };
            problems.push(FieldProblem::new(
                "params.storey_damping_n_s_per_m",
                format!(
                    "is required: the model's damping is {what}, which has no storey dampers to \
                     perturb; give one damper per storey ({n}) in N·s/m"
                ),
            ));
            vec![0.0; n]
        }
    }
}

/// Validates everything and builds the box and grid.
///
/// # Errors
/// Every problem found, each under `params.` or `model.`.
pub fn setup(model: &ModelSpec, params: &Params) -> Result<Setup, Vec<FieldProblem>> {
    let mut problems = model.problems();
    let s = &model.structure;
    let n = s.floors();
    if n > 40 {
        problems.push(FieldProblem::new(
            "model.structure.floor_masses_kg",
            format!("has {n} floors; uncertainty handles 1 to 40"),
        ));
    }
    if s.actuator.is_some() {
        problems.push(FieldProblem::new(
            "model.structure.actuator",
            "uncertainty works on a bare storey chain; remove the actuator",
        ));
    }
    let dampers = nominal_dampers(model, params, &mut problems);
    if dampers.len() != n {
        problems.push(FieldProblem::new(
            "params.storey_damping_n_s_per_m",
            format!("has {} entries; give one per storey ({n})", dampers.len()),
        ));
    }
    for (i, &c) in dampers.iter().enumerate() {
        if !(c.is_finite() && c >= 0.0) {
            problems.push(FieldProblem::new(
                format!("params.storey_damping_n_s_per_m[{i}]"),
                format!("= {c}; must be finite and ≥ 0"),
            ));
        }
    }
    if params.force_floor == 0 || params.force_floor > n {
        problems.push(FieldProblem::new(
            "params.force_floor",
            format!("= {}; allowed range is 1..={n}", params.force_floor),
        ));
    }
    if !(params.f_min_hz.is_finite() && params.f_min_hz > 0.0) {
        problems.push(FieldProblem::new(
            "params.f_min_hz",
            format!("= {}; must be finite and > 0", params.f_min_hz),
        ));
    }
    if !(params.f_max_hz.is_finite() && params.f_max_hz > params.f_min_hz) {
        problems.push(FieldProblem::new(
            "params.f_max_hz",
            format!(
                "= {}; must be finite and > f_min_hz ({})",
                params.f_max_hz, params.f_min_hz
            ),
        ));
    }
    if !(2..=100_000).contains(&params.frequencies) {
        problems.push(FieldProblem::new(
            "params.frequencies",
            format!("= {}; allowed range is 2..=100000", params.frequencies),
        ));
    }
    if params.mass_intervals_kg.is_none() {
        check_widths(
            "mass_rel_half_width",
            &params.mass_rel_half_width,
            n,
            1.0 - f64::EPSILON,
            &mut problems,
        );
    }
    if params.stiffness_intervals_n_per_m.is_none() {
        check_widths(
            "stiffness_rel_half_width",
            &params.stiffness_rel_half_width,
            n,
            1.0 - f64::EPSILON,
            &mut problems,
        );
    }
    if params.damping_intervals_n_s_per_m.is_none() {
        check_widths(
            "damping_rel_half_width",
            &params.damping_rel_half_width,
            n,
            1.0,
            &mut problems,
        );
    }
    if params.samples > 1_000_000_000 {
        problems.push(FieldProblem::new(
            "params.samples",
            format!("= {}; allowed range is 0..=1000000000", params.samples),
        ));
    }
    if params.samples_per_chunk == Some(0) {
        problems.push(FieldProblem::new(
            "params.samples_per_chunk",
            "= 0; must be ≥ 1",
        ));
    }
    if params.frequencies_per_bounds_chunk == Some(0) {
        problems.push(FieldProblem::new(
            "params.frequencies_per_bounds_chunk",
            "= 0; must be ≥ 1",
        ));
    }
    if !(1..=4096).contains(&params.outer_max_boxes) {
        problems.push(FieldProblem::new(
            "params.outer_max_boxes",
            format!("= {}; allowed range is 1..=4096", params.outer_max_boxes),
        ));
    }
    if !(params.outer_rel_tolerance > 0.0 && params.outer_rel_tolerance <= 1.0) {
        problems.push(FieldProblem::new(
            "params.outer_rel_tolerance",
            format!(
                "= {}; allowed range is 0 < t ≤ 1",
                params.outer_rel_tolerance
            ),
        ));
    }
    if params.inner_search_sweeps > 10 {
        problems.push(FieldProblem::new(
            "params.inner_search_sweeps",
            format!("= {}; allowed range is 0..=10", params.inner_search_sweeps),
        ));
    }
    let (m_lo, m_hi) = interval_box(
        "mass_intervals_kg",
        &s.floor_masses_kg,
        &params.mass_rel_half_width,
        params.mass_intervals_kg.as_ref(),
        n,
        false,
        &mut problems,
    );
    let (k_lo, k_hi) = interval_box(
        "stiffness_intervals_n_per_m",
        &s.storey_stiffness_n_per_m,
        &params.stiffness_rel_half_width,
        params.stiffness_intervals_n_per_m.as_ref(),
        n,
        false,
        &mut problems,
    );
    let (c_lo, c_hi) = interval_box(
        "damping_intervals_n_s_per_m",
        &dampers,
        &params.damping_rel_half_width,
        params.damping_intervals_n_s_per_m.as_ref(),
        n,
        true,
        &mut problems,
    );
    if !problems.is_empty() {
        return Err(problems);
    }
    let f = params.frequencies;
    let step = (params.f_max_hz - params.f_min_hz) / (f - 1) as f64;
    let frequencies_hz = (0..f).map(|i| params.f_min_hz + step * i as f64).collect();
    let per_chunk = samples_per_chunk(params, f, n);
    let mc_chunks = params.samples.div_ceil(per_chunk);
    let mc_chunks = u32::try_from(mc_chunks).map_err(|_| {
        vec![FieldProblem::new(
            "params.samples_per_chunk",
            "too small for this many samples: more than 2^32 chunks",
        )]
    })?;
    // One bounds chunk for the whole grid when not given (params stored before the split).
    let per_bounds_chunk = params.frequencies_per_bounds_chunk.unwrap_or(f).clamp(1, f);
    // At most `f` ≤ 10^5 chunks (`frequencies` is range-checked above), so this fits.
    let bounds_chunks = u32::try_from(f.div_ceil(per_bounds_chunk)).unwrap_or(u32::MAX);
    Ok(Setup {
        floors: n,
        lo: [m_lo, k_lo, c_lo].concat(),
        hi: [m_hi, k_hi, c_hi].concat(),
        force_floor: params.force_floor - 1,
        frequencies_hz,
        samples_per_chunk: per_chunk,
        mc_chunks,
        frequencies_per_bounds_chunk: per_bounds_chunk,
        bounds_chunks,
    })
}

/// Grid frequencies per bounds chunk making about `chunk_work_units` work units, counted as
/// [`check`] counts the bounds (solves per frequency × floors): what `plan` fixes when the
/// submitter gave no `frequencies_per_bounds_chunk`.
///
/// # Errors
/// The parameters' problems (then `check` reports them).
pub fn frequencies_per_bounds_chunk_within(
    model: &ModelSpec,
    params: &Params,
    chunk_work_units: u64,
) -> Result<usize, Vec<FieldProblem>> {
    let setup = setup(model, params)?;
    let per_frequency = bounds_solves_per_frequency(&setup, params)
        .saturating_mul(setup.floors as u64)
        .max(1);
    let f = setup.frequencies_hz.len();
    Ok(usize::try_from(chunk_work_units / per_frequency)
        .unwrap_or(f)
        .clamp(1, f.max(1)))
}

/// Solves per frequency spent by the bounds chunk (corners + search + boxes), for the plan.
fn bounds_solves_per_frequency(setup: &Setup, params: &Params) -> u64 {
    let p = setup.params();
    let corners = inner::corner_count(p) as u64 + inner::INTERIOR_STARTS as u64;
    // Per floor: a minimum and a maximum search from each start.
    let search = (params.inner_search_sweeps
        * p
        * (inner::SEARCH_POINTS + 2 * inner::GOLDEN_STEPS)
        * 2
        * inner::STARTS
        * setup.floors) as u64;
    let boxes = (params.outer_max_boxes * setup.floors) as u64;
    corners + search + boxes
}

/// Plans the study: `bounds_chunks` chunks for the bounds (each `frequencies_per_bounds_chunk`
/// grid frequencies), then one chunk per `samples_per_chunk` samples.
/// Work units = (samples + bound evaluations) × frequencies × floors.
///
/// # Errors
/// [`StudyError::Invalid`] with every problem, or [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let setup = setup(model, params).map_err(StudyError::Invalid)?;
    let per_sample = (setup.frequencies_hz.len() as u64) * setup.floors as u64;
    let work_units = params
        .samples
        .saturating_add(bounds_solves_per_frequency(&setup, params))
        .saturating_mul(per_sample);
    if work_units > budget.max_work_units {
        return Err(StudyError::TooLarge {
            work_units,
            max_work_units: budget.max_work_units,
        });
    }
    Ok(Plan {
        chunks: setup.mc_chunks.saturating_add(setup.bounds_chunks),
        work_units,
    })
}

/// Chunk b < `bounds_chunks`: the inner and outer bounds at grid frequencies
/// `b·frequencies_per_bounds_chunk ..`. Chunk c ≥ `bounds_chunks`: Monte Carlo samples
/// `(c − bounds_chunks)·samples_per_chunk ..`.
///
/// # Errors
/// [`StudyError::Cancelled`], [`StudyError::Numerics`], [`StudyError::Invalid`].
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    seed: u64,
    chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let setup = setup(model, params).map_err(StudyError::Invalid)?;
    let value = if chunk < setup.bounds_chunks {
        // Each frequency's bounds depend on that frequency alone, so a slice of the grid
        // gives exactly the rows the whole grid would.
        let first = chunk as usize * setup.frequencies_per_bounds_chunk;
        let last = (first + setup.frequencies_per_bounds_chunk).min(setup.frequencies_hz.len());
        let part = Setup {
            frequencies_hz: setup.frequencies_hz[first..last].to_vec(),
            ..setup.clone()
        };
        let inner = inner::inner_bounds(&part, params.inner_search_sweeps, ctx)?;
        let mut outer = outer::outer_bounds(
            &part,
            params.outer_max_boxes,
            params.outer_rel_tolerance,
            ctx,
        )?;
        for fi in &mut outer.unverified_frequencies {
            *fi += first;
        }
        serde_json::to_value(BoundsChunk { inner, outer })
    } else if chunk - setup.bounds_chunks < setup.mc_chunks {
        let first = u64::from(chunk - setup.bounds_chunks) * setup.samples_per_chunk;
        let count = setup.samples_per_chunk.min(params.samples - first);
        serde_json::to_value(mc::run(&setup, seed, first, count, ctx)?)
    } else {
        return Err(StudyError::BadChunk(format!(
            "uncertainty has {} chunks, asked for chunk {chunk}",
            setup.mc_chunks.saturating_add(setup.bounds_chunks)
        )));
    };
    value.map_err(|e| StudyError::Numerics(e.to_string()))
}

/// What chunk 0 returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoundsChunk {
    /// Attained range.
    pub inner: inner::InnerBounds,
    /// Guaranteed enclosure.
    pub outer: outer::OuterBounds,
}

/// Combines the bounds chunks (joined in grid order) with the Monte Carlo chunks (merged in
/// chunk order) into the
/// summary and the arrays `bounds` (per frequency and floor) and `monte_carlo`.
///
/// # Errors
/// [`StudyError::BadChunk`] when the chunks are not this study's.
pub fn reduce(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    let setup = setup(model, params).map_err(StudyError::Invalid)?;
    let b = setup.bounds_chunks as usize;
    let expected = setup.mc_chunks as usize + b;
    if chunks.len() != expected {
        return Err(StudyError::BadChunk(format!(
            "expected {expected} chunks, got {}",
            chunks.len()
        )));
    }
    let bad = |e: serde_json::Error| StudyError::BadChunk(e.to_string());
    let mut parts = chunks[..b]
        .iter()
        .map(|c| BoundsChunk::deserialize(c).map_err(bad));
    let mut bounds = parts
        .next()
        .ok_or_else(|| StudyError::BadChunk("no bounds chunk".into()))??;
    for part in parts {
        bounds.append(part?);
    }
    let cells = setup.frequencies_hz.len() * setup.floors;
    if bounds.inner.lower_m.len() != cells || bounds.outer.lower_m.len() != cells {
        return Err(StudyError::BadChunk(
            "bounds chunk has the wrong size".into(),
        ));
    }
    let mut acc = mc::McChunk::empty(cells);
    for c in &chunks[b..] {
        let part = mc::McChunk::deserialize(c).map_err(bad)?;
        acc.merge(&part).map_err(StudyError::BadChunk)?;
    }
    Ok(assemble(&setup, &bounds, &acc))
}

impl BoundsChunk {
    /// Appends the bounds of the next grid frequencies (`other`'s indices are the grid's).
    fn append(&mut self, other: BoundsChunk) {
        self.inner.lower_m.extend(other.inner.lower_m);
        self.inner.upper_m.extend(other.inner.upper_m);
        self.outer.lower_m.extend(other.outer.lower_m);
        self.outer.upper_m.extend(other.outer.upper_m);
        self.outer
            .unverified_frequencies
            .extend(other.outer.unverified_frequencies);
        self.outer.boxes += other.outer.boxes;
    }
}

/// The inner bound: the optimiser's range widened by the Monte Carlo samples' min and max
/// (every sample is a realisation inside the box, so its |u| is attained too).
fn merged_inner(b: &BoundsChunk, acc: &mc::McChunk) -> (Vec<f64>, Vec<f64>) {
    let lower = b
        .inner
        .lower_m
        .iter()
        .zip(&acc.min_m)
        .map(|(o, m)| o.min(*m))
        .collect();
    let upper = b
        .inner
        .upper_m
        .iter()
        .zip(&acc.max_m)
        .map(|(o, m)| o.max(*m))
        .collect();
    (lower, upper)
}

/// Median and worst over frequencies of the ratio of outer to inner width (each frequency's
/// worst floor); frequencies where the inner width is 0 or the outer bound is unbounded are
/// left out. NaN when none is left.
fn tightness(n: usize, inner: (&[f64], &[f64]), outer: (&[f64], &[f64])) -> (f64, f64) {
    let cells = inner.0.len();
    let mut ratios: Vec<f64> = (0..cells / n.max(1))
        .filter_map(|fi| {
            (fi * n..(fi + 1) * n)
                .map(|c| {
                    let inner_w = inner.1[c] - inner.0[c];
                    let outer_w = outer.1[c] - outer.0[c];
                    (inner_w > 0.0 && outer.1[c] < f64::MAX).then(|| outer_w / inner_w)
                })
                .try_fold(0.0_f64, |worst, r| r.map(|r| worst.max(r)))
        })
        .collect();
    if ratios.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    ratios.sort_by(f64::total_cmp);
    let k = ratios.len();
    let median = if k % 2 == 1 {
        ratios[k / 2]
    } else {
        0.5 * (ratios[k / 2 - 1] + ratios[k / 2])
    };
    (median, ratios[k - 1])
}

fn assemble(setup: &Setup, b: &BoundsChunk, acc: &mc::McChunk) -> StudyOutput {
    let n = setup.floors;
    let freqs = &setup.frequencies_hz;
    let cells = freqs.len() * n;
    let (inner_lower, inner_upper) = merged_inner(b, acc);
    let mut lower_from_samples = 0_usize;
    let mut upper_from_samples = 0_usize;
    let mut beyond_optimiser = 0_usize;
    let mut largest_extension = 0.0_f64;
    let mut escaping_outer = 0_usize;
    let mut width_ratio_sum = 0.0;
    let mut width_ratio_count = 0_usize;
    for cell in 0..cells {
        if acc.samples > 0 {
            let (opt_lo, opt_hi) = (b.inner.lower_m[cell], b.inner.upper_m[cell]);
            let below = acc.min_m[cell] < opt_lo;
            let above = acc.max_m[cell] > opt_hi;
            lower_from_samples += usize::from(below);
            upper_from_samples += usize::from(above);
            beyond_optimiser += usize::from(below || above);
            if below && opt_lo > 0.0 {
                largest_extension = largest_extension.max((opt_lo - acc.min_m[cell]) / opt_lo);
            }
            if above && opt_hi > 0.0 {
                largest_extension = largest_extension.max((acc.max_m[cell] - opt_hi) / opt_hi);
            }
            if acc.min_m[cell] < b.outer.lower_m[cell] || acc.max_m[cell] > b.outer.upper_m[cell] {
                escaping_outer += 1;
            }
        }
        let inner_w = inner_upper[cell] - inner_lower[cell];
        let outer_w = b.outer.upper_m[cell] - b.outer.lower_m[cell];
        if inner_w > 0.0 && outer_w.is_finite() && b.outer.upper_m[cell] < f64::MAX {
            width_ratio_sum += outer_w / inner_w;
            width_ratio_count += 1;
        }
    }
    let (tight_median, tight_worst) = tightness(
        n,
        (&inner_lower, &inner_upper),
        (&b.outer.lower_m, &b.outer.upper_m),
    );
    let pct = acc.percentiles(&[0.05, 0.5, 0.95]);
    let mut bounds_cols = vec![Column {
        name: "frequency_hz".into(),
        values: freqs
            .iter()
            .flat_map(|&f| std::iter::repeat_n(f, n))
            .collect(),
    }];
    bounds_cols.push(Column {
        name: "floor".into(),
        values: (0..cells).map(|c| (c % n + 1) as f64).collect(),
    });
    let mean: Vec<f64> = acc
        .sum_m
        .iter()
        .map(|s| {
            if acc.samples > 0 {
                s / acc.samples as f64
            } else {
                f64::NAN
            }
        })
        .collect();
    for (name, v) in [
        ("inner_lower_m", &inner_lower),
        ("inner_upper_m", &inner_upper),
        ("inner_optimiser_lower_m", &b.inner.lower_m),
        ("inner_optimiser_upper_m", &b.inner.upper_m),
        ("outer_lower_m", &b.outer.lower_m),
        ("outer_upper_m", &b.outer.upper_m),
        ("mc_min_m", &acc.min_m),
        ("mc_max_m", &acc.max_m),
        ("mc_mean_m", &mean),
        ("mc_p05_m", &pct[0]),
        ("mc_p50_m", &pct[1]),
        ("mc_p95_m", &pct[2]),
    ] {
        bounds_cols.push(Column {
            name: name.into(),
            values: v.clone(),
        });
    }
    let summary = serde_json::json!({
        "floors": n,
        "force_floor": setup.force_floor + 1,
        "frequencies": freqs.len(),
        "parameters": setup.params(),
        "corners_enumerated": inner::corner_count(setup.params()),
        "mc_samples": acc.samples,
        "mc_points_beyond_optimiser": beyond_optimiser,
        "mc_fraction_points_beyond_optimiser": if cells > 0 { beyond_optimiser as f64 / cells as f64 } else { 0.0 },
        "inner_lower_points_from_samples": lower_from_samples,
        "inner_upper_points_from_samples": upper_from_samples,
        "inner_largest_rel_extension_by_samples": largest_extension,
        "mc_points_escaping_outer": escaping_outer,
        "outer_unverified_frequencies": b.outer.unverified_frequencies,
        "outer_boxes": b.outer.boxes,
        "tightness_mean_outer_over_inner_width": if width_ratio_count > 0 { width_ratio_sum / width_ratio_count as f64 } else { f64::NAN },
        "tightness_median_outer_over_inner_width": tight_median,
        "tightness_worst_outer_over_inner_width": tight_worst,
        "histogram_bins_per_point": mc::BINS,
    });
    StudyOutput {
        summary,
        arrays: vec![NamedArray {
            name: "bounds".into(),
            columns: bounds_cols,
        }],
        proposed_model: None,
    }
}

#[cfg(test)]
mod tests;
