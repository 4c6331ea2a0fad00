//! The `update` study: the storey stiffnesses (and, if asked, the damping) of the study's
//! model fitted to target modes by `dtop_calibrate::update_storey_stiffness` (regularised
//! Levenberg–Marquardt on analytic eigen-sensitivities, with the fitted parameters'
//! covariance), returned as a proposed model version. Targets use the shared mode convention,
//! so the `modes` of an `oma` or `ema` summary paste in unchanged. Refuses, with the reason and
//! what to try, an update that does not converge, leaves a storey non-physical or changed
//! beyond `params.max_relative_change`, or cannot be determined by its targets. One chunk.

use std::collections::BTreeMap;

use dtop_calibrate::update::DampingUpdate;
use dtop_calibrate::{CalibrateError, TargetMode, UpdateParams, update_storey_stiffness};
use dtop_dynamics::frf::modal_damping_ratios;
use dtop_dynamics::{ShearBuilding, mac};
use serde::{Deserialize, Serialize};

use crate::model::ModelSpec;
use crate::output::{ProposedModel, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError};

/// The targets are parameters (small JSON), not measured tables.
pub const INPUTS: &[InputSpec] = &[];

/// Most iterations one study may ask for.
pub const MAX_ITERATIONS: usize = 1000;

/// Lowest and highest stiffness factor the fit may reach: a storey may lose up to 90 % or
/// grow tenfold inside the iteration; `params.max_relative_change` then bounds the result.
const LOWER_FACTOR: f64 = 0.1;
const UPPER_FACTOR: f64 = 10.0;

const fn one() -> f64 {
    1.0
}

/// One mode the updated model should have, in the shared mode convention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Natural frequency, in Hz.
    pub frequency_hz: f64,
    /// Damping ratio (fraction of critical), used by a damping update.
    #[serde(default)]
    pub damping_ratio: Option<f64>,
    /// Mode shape over floors 1..=N of the model (any scale and sign), `null` where a floor
    /// was not measured. A complete shape on every target joins the fit (targets are then
    /// paired with model modes by MAC); otherwise shapes only give each target's MAC.
    #[serde(default)]
    pub shape: Option<Vec<Option<f64>>>,
    /// Relative weight of this target's frequency (> 0): its standard deviation is divided by
    /// √weight.
    #[serde(default = "one")]
    pub weight: f64,
    /// Standard deviation of the frequency from the identification, in Hz; floored at
    /// `params.min_frequency_relative_std` of the frequency.
    #[serde(default)]
    pub frequency_std_hz: Option<f64>,
    /// The model mode (1-based, ascending) this target is, when known; pins the pairing when
    /// every target has one.
    #[serde(default)]
    pub model_mode: Option<usize>,
    /// Any other field of a pasted mode (its spreads, complexity, method): kept, not used,
    /// and listed in the summary's `ignored_target_fields`.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// What happens to the damping after the stiffnesses are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Damping {
    /// Keep the model's damping description.
    Keep,
    /// Rayleigh C = αM + βK (α, β ≥ 0) fitted to the targets' damping ratios (two or more).
    Rayleigh,
    /// Modal damping: each paired mode takes its target's ratio (not for an actuator model).
    Modal,
}

/// Parameters of `update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The modes to match; the model's own modes by default (so the model comes back
    /// unchanged).
    pub targets: Vec<Target>,
    /// Storeys to update, 1-based; `null` for all.
    pub storeys: Option<Vec<usize>>,
    /// Tikhonov regularisation: each storey's stiffness factor has a prior N(1, σ²) with this
    /// σ (0.1 = "within about 10 % of the model"); `null` for none, when the targets alone
    /// must determine every storey.
    pub regularisation: Option<f64>,
    /// `keep`, `rayleigh` or `modal`.
    pub damping: Damping,
    /// Iteration cap of the Levenberg–Marquardt fit.
    pub max_iterations: usize,
    /// Least standard deviation of a target frequency, relative (0.001 = 0.1 %, a fraction of
    /// a typical line spacing): an identification's own spread can be far below its real
    /// uncertainty.
    pub min_frequency_relative_std: f64,
    /// Standard deviation of each component of a unit-norm target shape.
    pub shape_std: f64,
    /// Largest relative change of a storey stiffness the study accepts (0.5 = ±50 %); a
    /// larger one is refused as damage to inspect or mispaired targets, not proposed.
    pub max_relative_change: f64,
}

impl Params {
    /// The defaults for `model`: its own modes as targets (frequency, modal damping ratio,
    /// shape over the floors with unit peak), every storey, no regularisation, damping kept,
    /// 100 iterations, 0.1 % least frequency std, 0.02 shape std, ±50 % largest change.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        Self {
            targets: model_targets(model),
            storeys: None,
            regularisation: None,
            damping: Damping::Keep,
            max_iterations: 100,
            min_frequency_relative_std: 1e-3,
            shape_std: 0.02,
            max_relative_change: 0.5,
        }
    }
}

/// The model's own modes as targets (none when the model is invalid: `check` says why).
fn model_targets(model: &ModelSpec) -> Vec<Target> {
    let Ok(building) = model.building() else {
        return Vec::new();
    };
    let modes = building.modes();
    let zetas = modal_damping_ratios(modes, building.damping_matrix());
    let floors = model.floors();
    (0..modes.omegas_rad_s.len())
        .map(|r| {
            let shape: Vec<f64> = (0..floors).map(|i| modes.shapes[(i, r)]).collect();
            let peak = shape
                .iter()
                .copied()
                .fold(0.0_f64, |p, x| if x.abs() > p.abs() { x } else { p });
            Target {
                frequency_hz: modes.omegas_rad_s[r] / std::f64::consts::TAU,
                damping_ratio: zetas.get(r).copied(),
                shape: Some(
                    shape
                        .iter()
                        .map(|x| Some(if peak != 0.0 { x / peak } else { *x }))
                        .collect(),
                ),
                weight: 1.0,
                frequency_std_hz: None,
                model_mode: None,
                other: BTreeMap::new(),
            }
        })
        .collect()
}

/// The complete shape of a target (every floor given), if it has one.
fn full_shape(t: &Target) -> Option<Vec<f64>> {
    t.shape.as_ref()?.iter().copied().collect()
}

fn problems(model: &ModelSpec, building: &ShearBuilding, params: &Params) -> Vec<FieldProblem> {
    let floors = model.floors();
    let dofs = building.dofs();
    let mut problems = Vec::new();
    if params.targets.is_empty() {
        problems.push(FieldProblem::new(
            "params.targets",
            "is empty: give at least one mode to match (e.g. the modes of an ema or oma summary)",
        ));
    }
    if params.targets.len() > dofs {
        problems.push(FieldProblem::new(
            "params.targets",
            format!(
                "{} targets but the model has {dofs} modes: targets must map to the model's modes",
                params.targets.len()
            ),
        ));
    }
    let mut pinned = vec![false; dofs + 1];
    for (i, t) in params.targets.iter().enumerate() {
        let field = |name: &str| format!("params.targets[{i}].{name}");
        if !(t.frequency_hz.is_finite() && t.frequency_hz > 0.0) {
            problems.push(FieldProblem::new(
                field("frequency_hz"),
                format!("{} must be positive and finite", t.frequency_hz),
            ));
        }
        if !(t.weight.is_finite() && t.weight > 0.0) {
            problems.push(FieldProblem::new(
                field("weight"),
                format!("{} must be positive and finite", t.weight),
            ));
        }
        if let Some(z) = t.damping_ratio
            && !(z.is_finite() && (0.0..1.0).contains(&z))
        {
            problems.push(FieldProblem::new(
                field("damping_ratio"),
                format!("{z} must lie in [0, 1)"),
            ));
        }
        if let Some(sd) = t.frequency_std_hz
            && !(sd.is_finite() && sd > 0.0)
        {
            problems.push(FieldProblem::new(
                field("frequency_std_hz"),
                format!("{sd} must be positive and finite"),
            ));
        }
        if let Some(shape) = &t.shape {
            if shape.len() != floors {
                problems.push(FieldProblem::new(
                    field("shape"),
                    format!(
                        "has {} entries but the model has {floors} floors: give one value per floor 1..={floors} (null where a floor was not measured), or pick the model of the rig the modes were measured on",
                        shape.len()
                    ),
                ));
            } else if shape.iter().flatten().any(|x| !x.is_finite())
                || shape.iter().flatten().all(|x| *x == 0.0)
            {
                problems.push(FieldProblem::new(
                    field("shape"),
                    "must be finite and hold at least one non-zero value",
                ));
            }
        }
        if let Some(m) = t.model_mode {
            if m == 0 || m > dofs {
                problems.push(FieldProblem::new(
                    field("model_mode"),
                    format!("{m} is not a mode of the model: modes are 1..={dofs}"),
                ));
            } else if std::mem::replace(&mut pinned[m], true) {
                problems.push(FieldProblem::new(
                    field("model_mode"),
                    format!("mode {m} is already another target's"),
                ));
            }
        }
    }
    let storeys: Vec<usize> = params
        .storeys
        .clone()
        .unwrap_or_else(|| (1..=floors).collect());
    if storeys.is_empty() {
        problems.push(FieldProblem::new(
            "params.storeys",
            "is empty: update at least one storey, or null for all",
        ));
    }
    let mut seen = vec![false; floors + 1];
    for (j, &s) in storeys.iter().enumerate() {
        if s == 0 || s > floors {
            problems.push(FieldProblem::new(
                format!("params.storeys[{j}]"),
                format!("storey {s} does not exist; storeys are 1..={floors}"),
            ));
        } else if std::mem::replace(&mut seen[s], true) {
            problems.push(FieldProblem::new(
                format!("params.storeys[{j}]"),
                format!("storey {s} is listed twice"),
            ));
        }
    }
    if let Some(sd) = params.regularisation
        && !(sd.is_finite() && sd > 0.0)
    {
        problems.push(FieldProblem::new(
            "params.regularisation",
            format!("{sd} must be positive and finite, or null for none"),
        ));
    }
    if !(1..=MAX_ITERATIONS).contains(&params.max_iterations) {
        problems.push(FieldProblem::new(
            "params.max_iterations",
            format!("{} must lie in 1..={MAX_ITERATIONS}", params.max_iterations),
        ));
    }
    if !(params.min_frequency_relative_std.is_finite() && params.min_frequency_relative_std > 0.0) {
        problems.push(FieldProblem::new(
            "params.min_frequency_relative_std",
            format!("{} must be positive", params.min_frequency_relative_std),
        ));
    }
    if !(params.shape_std.is_finite() && params.shape_std > 0.0) {
        problems.push(FieldProblem::new(
            "params.shape_std",
            format!("{} must be positive", params.shape_std),
        ));
    }
    if !(params.max_relative_change > 0.0 && params.max_relative_change <= 0.9) {
        problems.push(FieldProblem::new(
            "params.max_relative_change",
            format!(
                "{} must lie in (0, 0.9]: a storey may not lose all its stiffness",
                params.max_relative_change
            ),
        ));
    }
    let with_damping = params
        .targets
        .iter()
        .filter(|t| t.damping_ratio.is_some())
        .count();
    match params.damping {
        Damping::Keep => {}
        Damping::Rayleigh if with_damping < 2 => problems.push(FieldProblem::new(
            "params.damping",
            format!(
                "a Rayleigh update needs at least two targets with damping_ratio; {with_damping} have one: give damping ratios or keep the damping"
            ),
        )),
        Damping::Rayleigh => {}
        Damping::Modal => {
            if model.structure.actuator.is_some() {
                problems.push(FieldProblem::new(
                    "params.damping",
                    "modal damping describes the bare building and this model has an actuator: use rayleigh or keep",
                ));
            }
            if with_damping == 0 {
                problems.push(FieldProblem::new(
                    "params.damping",
                    "a modal update needs targets with damping_ratio: give them or keep the damping",
                ));
            }
        }
    }
    // Identifiability, counted as dtop-calibrate counts it: a complete shape adds N − 1
    // independent data (its scale is free), and shapes count only when every target has one.
    let shapes_fitted =
        !params.targets.is_empty() && params.targets.iter().all(|t| full_shape(t).is_some());
    let independent = params.targets.len() * if shapes_fitted { floors } else { 1 };
    if params.regularisation.is_none() && !params.targets.is_empty() && independent < storeys.len()
    {
        problems.push(FieldProblem::new(
            "params.targets",
            format!(
                "{} storeys to update from {independent} independent data (target frequencies{}): give more targets or complete shapes, fewer params.storeys, or set params.regularisation (e.g. 0.1)",
                storeys.len(),
                if shapes_fitted { " and shape components" } else { "; shapes count only when every target has a complete one" }
            ),
        ));
    }
    problems
}

/// One chunk; work = iterations × DOFs³ × targets.
///
/// # Errors
/// Every problem of the model and the parameters; [`StudyError::TooLarge`].
pub fn check(
    model: &ModelSpec,
    params: &Params,
    budget: &Budget,
    _inputs: &Inputs,
) -> Result<Plan, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let problems = problems(model, &building, params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let dofs = building.dofs() as u64;
    let work_units = (params.max_iterations as u64)
        .saturating_mul(dofs * dofs * dofs)
        .saturating_mul(params.targets.len().max(1) as u64);
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

/// MAC of a target's shape with mode `r` (0-based) of `building`, over the floors the target
/// gives.
fn target_mac(t: &Target, building: &ShearBuilding, r: usize) -> Option<f64> {
    let shape = t.shape.as_ref()?;
    let modes = building.modes();
    let (a, b): (Vec<f64>, Vec<f64>) = shape
        .iter()
        .enumerate()
        .filter_map(|(i, x)| x.map(|x| (x, modes.shapes[(i, r)])))
        .unzip();
    mac(&a, &b)
}

fn rms(x: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = x.fold((0.0, 0usize), |(s, n), v| (s + v * v, n + 1));
    if n == 0 { 0.0 } else { (sum / n as f64).sqrt() }
}

/// The update, as the study's output in JSON (with the proposed model).
///
/// # Errors
/// [`StudyError::Invalid`] as in [`check`]; [`StudyError::Numerics`] when the fit does not
/// converge within `params.max_iterations`, the targets cannot determine the storeys, or the
/// result is non-physical or changed beyond `params.max_relative_change`.
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    _seed: u64,
    _chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    let building = model.building().map_err(StudyError::Invalid)?;
    let problems = problems(model, &building, params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    ctx.check()?;
    let shapes_fitted = params.targets.iter().all(|t| full_shape(t).is_some());
    let targets: Vec<TargetMode> = params
        .targets
        .iter()
        .map(|t| TargetMode {
            frequency_hz: t.frequency_hz,
            frequency_std_hz: t
                .frequency_std_hz
                .unwrap_or(0.0)
                .max(params.min_frequency_relative_std * t.frequency_hz)
                / t.weight.sqrt(),
            damping_ratio: t.damping_ratio,
            shape: if shapes_fitted { full_shape(t) } else { None },
            model_mode: t.model_mode,
        })
        .collect();
    let update = UpdateParams {
        targets,
        storeys: params.storeys.clone(),
        prior_relative_std: params.regularisation,
        lower_factor: LOWER_FACTOR,
        upper_factor: UPPER_FACTOR,
        shape_std: params.shape_std,
        damping: match params.damping {
            Damping::Keep => DampingUpdate::Keep,
            Damping::Rayleigh => DampingUpdate::Rayleigh,
            Damping::Modal => DampingUpdate::Modal,
        },
        max_iterations: params.max_iterations,
    };
    let result = update_storey_stiffness(&model.structure, &update).map_err(|e| match e {
        CalibrateError::NotConverged { iterations, reason } => StudyError::Numerics(format!(
            "the update did not converge within params.max_iterations = {} (ran {iterations}): {}; check that the targets are this rig's modes",
            params.max_iterations,
            // dtop-calibrate names its own parameters; say which of ours they are.
            reason
                .replace("prior_relative_std", "params.regularisation")
                .replace("raise max_iterations", "raise params.max_iterations")
        )),
        CalibrateError::NotIdentifiable(reason) => StudyError::Numerics(format!(
            "the targets cannot determine the storeys: {reason}"
        )),
        CalibrateError::Invalid(p) => StudyError::Invalid(
            p.into_iter()
                .map(|m| FieldProblem::new("params.targets", m))
                .collect(),
        ),
        CalibrateError::Model(e) => StudyError::Numerics(format!(
            "the update gave a non-physical model ({e}); check the targets or set params.regularisation"
        )),
        other => StudyError::Numerics(format!("the update failed: {other}")),
    })?;
    ctx.check()?;
    // The result must be physical and within the bound before it is proposed.
    let mut refusals = Vec::new();
    for (s, (k, k0)) in result
        .fitted_stiffness_n_per_m
        .iter()
        .zip(&result.prior_stiffness_n_per_m)
        .enumerate()
    {
        let change = k / k0 - 1.0;
        if !(k.is_finite() && *k > 0.0) {
            refusals.push(format!(
                "storey {} came out at {k} N/m, not positive",
                s + 1
            ));
        } else if change.abs() > params.max_relative_change {
            refusals.push(format!(
                "storey {} changed by {:+.1} % (from {k0:.6e} to {k:.6e} N/m), beyond params.max_relative_change = {} %",
                s + 1,
                100.0 * change,
                100.0 * params.max_relative_change
            ));
        }
    }
    if !result.storeys_at_bounds.is_empty() {
        refusals.push(format!(
            "storeys {:?} ended on the fit's bounds ({LOWER_FACTOR}× to {UPPER_FACTOR}× the model): the targets and a shear chain disagree there",
            result.storeys_at_bounds
        ));
    }
    if !refusals.is_empty() {
        return Err(StudyError::Numerics(format!(
            "the updated model is refused as non-physical or implausible: {}; inspect the structure (damage this large is not drift) or check that each target is paired with the right model mode (targets[].model_mode), or raise params.max_relative_change",
            refusals.join("; ")
        )));
    }
    let updated = ShearBuilding::new(result.config.clone())
        .map_err(|e| StudyError::Numerics(format!("the updated model cannot be built: {e}")))?;
    let target_rows: Vec<serde_json::Value> = params
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let before = result.before.get(i);
            let after = result.after.get(i);
            let r = after.map_or(0, |a| a.model_mode.saturating_sub(1));
            serde_json::json!({
                "target": i,
                "model_mode": after.map(|a| a.model_mode),
                "target_hz": t.frequency_hz,
                "model_hz_before": before.map(|b| b.model_hz),
                "model_hz": after.map(|a| a.model_hz),
                "error_percent_before": before.map(|b| b.error_percent),
                "error_percent": after.map(|a| a.error_percent),
                "normalised_error": after.map(|a| a.normalised_error),
                "mac_before": target_mac(t, &building, before.map_or(0, |b| b.model_mode.saturating_sub(1))),
                "mac": target_mac(t, &updated, r),
            })
        })
        .collect();
    let rms_before = rms(result.before.iter().map(|r| r.error_percent));
    let rms_after = rms(result.after.iter().map(|r| r.error_percent));
    let ignored: Vec<&String> = {
        let mut names: Vec<&String> = params.targets.iter().flat_map(|t| t.other.keys()).collect();
        names.sort();
        names.dedup();
        names
    };
    let relative_change: Vec<f64> = result
        .fitted_stiffness_n_per_m
        .iter()
        .zip(&result.prior_stiffness_n_per_m)
        .map(|(k, k0)| k / k0 - 1.0)
        .collect();
    let method = format!(
        "update: storeys {:?} fitted by regularised Levenberg–Marquardt on eigen-sensitivities to {} target modes ({}), damping {}; RMS frequency error {rms_after:.3} % (model {rms_before:.3} %), {} iterations",
        result.storeys,
        params.targets.len(),
        if shapes_fitted {
            "frequencies and shapes"
        } else {
            "frequencies"
        },
        serde_json::to_value(params.damping)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        result.iterations
    );
    let summary = serde_json::json!({
        "converged": true,
        "iterations": result.iterations,
        "storeys": result.storeys,
        "prior_stiffness_n_per_m": result.prior_stiffness_n_per_m,
        "fitted_stiffness_n_per_m": result.fitted_stiffness_n_per_m,
        "stiffness_std_n_per_m": result.stiffness_std_n_per_m,
        "relative_change": relative_change,
        "correlation": result.correlation,
        "storeys_at_bounds": result.storeys_at_bounds,
        "damping": result.config.damping,
        "shapes_fitted": shapes_fitted,
        "targets": target_rows,
        "rms_frequency_error_percent_before": rms_before,
        "rms_frequency_error_percent": rms_after,
        "chi_square_before": result.chi_square_before,
        "chi_square": result.chi_square_after,
        "natural_frequencies_hz": updated.natural_frequencies_hz(),
        "ignored_target_fields": ignored,
    });
    let proposed = ProposedModel {
        name: "updated".into(),
        spec: ModelSpec {
            description: format!(
                "{} (updated: storey stiffnesses {:?} N/m)",
                model.description, result.fitted_stiffness_n_per_m
            ),
            structure: result.config,
            sensors: model.sensors.clone(),
        },
        method,
    };
    let output = StudyOutput {
        summary,
        arrays: Vec::new(),
        proposed_model: Some(proposed),
    };
    serde_json::to_value(&output).map_err(|e| StudyError::Numerics(e.to_string()))
}

/// The one chunk's output is the result.
///
/// # Errors
/// [`StudyError::BadChunk`] unless there is exactly one chunk holding a [`StudyOutput`].
pub fn reduce(
    _model: &ModelSpec,
    _params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    super::single_output(crate::StudyKind::Update, chunks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use dtop_dynamics::ShearBuildingConfig;
    use serde_json::json;

    use super::*;
    use crate::StudyKind;
    use crate::kinds::run_study;
    use crate::model::builtin_model;

    fn run(model: &ModelSpec, params: serde_json::Value) -> Result<StudyOutput, StudyError> {
        run_study(StudyKind::Update, model, &params, &Inputs::none())
    }

    /// The modes of `config` in the shared convention, computed by dtop-dynamics (an
    /// eigen-solution independent of the update's sensitivities).
    fn modes_of(config: ShearBuildingConfig, with_shapes: bool) -> serde_json::Value {
        let b = ShearBuilding::new(config).unwrap();
        let m = b.modes();
        let floors = b.floors();
        (0..floors)
            .map(|r| {
                let shape: Vec<f64> = (0..floors).map(|i| m.shapes[(i, r)]).collect();
                if with_shapes {
                    json!({ "frequency_hz": m.omegas_rad_s[r] / std::f64::consts::TAU, "shape": shape })
                } else {
                    json!({ "frequency_hz": m.omegas_rad_s[r] / std::f64::consts::TAU })
                }
            })
            .collect()
    }

    fn invalid_fields(e: StudyError) -> Vec<String> {
        match e {
            StudyError::Invalid(p) => p.into_iter().map(|p| p.field).collect(),
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn an_empty_submission_targets_the_models_own_modes_and_proposes_it_unchanged() {
        for (name, model) in crate::model::builtin_models() {
            let out = run(&model, json!({})).unwrap();
            let proposed = out.proposed_model.unwrap();
            assert_eq!(proposed.name, "updated");
            assert_eq!(
                proposed.spec.structure.floor_masses_kg,
                model.structure.floor_masses_kg
            );
            assert_eq!(proposed.spec.structure.damping, model.structure.damping);
            // The targets are the model's own modes to the last bit of their eigen-solution,
            // so the fit moves each factor by rounding only.
            for (k, k0) in proposed
                .spec
                .structure
                .storey_stiffness_n_per_m
                .iter()
                .zip(&model.structure.storey_stiffness_n_per_m)
            {
                assert!((k / k0 - 1.0).abs() < 1e-9, "{name}: {k} vs {k0}");
            }
            assert_eq!(out.summary["converged"], json!(true));
            assert!(out.summary["rms_frequency_error_percent"].as_f64().unwrap() < 1e-7);
            assert!(
                proposed.method.contains("RMS frequency error"),
                "{}",
                proposed.method
            );
        }
    }

    #[test]
    fn the_modes_of_a_model_with_storey_2_ten_percent_softer_give_the_truth_within_2_percent() {
        let model = builtin_model("southampton").unwrap();
        let mut damaged = model.structure.clone();
        damaged.storey_stiffness_n_per_m[1] *= 0.9;
        let truth = damaged.storey_stiffness_n_per_m.clone();
        // Frequencies alone (3 data for 3 storeys) and with shapes.
        for with_shapes in [false, true] {
            let out = run(
                &model,
                json!({ "targets": modes_of(damaged.clone(), with_shapes) }),
            )
            .unwrap();
            let k = out
                .proposed_model
                .unwrap()
                .spec
                .structure
                .storey_stiffness_n_per_m;
            for (s, (k, t)) in k.iter().zip(&truth).enumerate() {
                assert!(
                    (k / t - 1.0).abs() < 0.02,
                    "shapes {with_shapes}: storey {}: {k} vs {t}",
                    s + 1
                );
            }
            let change = out.summary["relative_change"][1].as_f64().unwrap();
            assert!((change + 0.1).abs() < 0.02, "{change}");
            assert_eq!(out.summary["shapes_fitted"], json!(with_shapes));
            assert_eq!(
                out.summary["stiffness_std_n_per_m"]
                    .as_array()
                    .unwrap()
                    .len(),
                3
            );
        }
    }

    #[test]
    fn modes_pasted_with_extra_fields_and_unmeasured_floors_are_taken_and_the_extras_listed() {
        let model = builtin_model("southampton").unwrap();
        let mut targets = modes_of(model.structure.clone(), true);
        for t in targets.as_array_mut().unwrap() {
            t["shape"][2] = serde_json::Value::Null;
            t["complexity"] = json!(0.01);
            t["method"] = json!("rfp");
        }
        let out = run(&model, json!({ "targets": targets })).unwrap();
        assert_eq!(out.summary["shapes_fitted"], json!(false));
        assert_eq!(
            out.summary["ignored_target_fields"],
            json!(["complexity", "method"])
        );
        for t in out.summary["targets"].as_array().unwrap() {
            // MAC over the two measured floors of the model's own shape.
            assert!(t["mac"].as_f64().unwrap() > 1.0 - 1e-12, "{t}");
        }
    }

    #[test]
    fn an_update_that_does_not_converge_within_its_budget_is_refused_with_a_suggestion() {
        let model = builtin_model("southampton").unwrap();
        let mut damaged = model.structure.clone();
        damaged.storey_stiffness_n_per_m[1] *= 0.8;
        let params = json!({ "targets": modes_of(damaged, false), "max_iterations": 1 });
        let Err(StudyError::Numerics(m)) = run(&model, params) else {
            panic!("one iteration cannot converge on a 20 % change");
        };
        assert!(
            m.contains("did not converge") && m.contains("max_iterations"),
            "{m}"
        );
    }

    #[test]
    fn a_change_beyond_the_documented_bound_is_refused_not_proposed() {
        let model = builtin_model("southampton").unwrap();
        let mut damaged = model.structure.clone();
        damaged.storey_stiffness_n_per_m[1] *= 0.7;
        let targets = modes_of(damaged, false);
        let Err(StudyError::Numerics(m)) = run(
            &model,
            json!({ "targets": targets, "max_relative_change": 0.2 }),
        ) else {
            panic!("a 30 % loss must be refused under a 20 % bound");
        };
        assert!(m.contains("storey 2 changed by -30.0 %"), "{m}");
        assert!(m.contains("max_relative_change"), "{m}");
        // The same targets under the default ±50 % are proposed.
        assert!(run(&model, json!({ "targets": targets })).is_ok());
        // A storey at 5 % of its stiffness lies beyond the fit's floor of 0.1×: the fit
        // either stalls against the bound or stops on it, and both are refused, even under
        // the widest change allowed.
        let mut gone = model.structure.clone();
        gone.storey_stiffness_n_per_m[1] *= 0.05;
        let Err(StudyError::Numerics(m)) = run(
            &model,
            json!({ "targets": modes_of(gone, false), "max_relative_change": 0.9 }),
        ) else {
            panic!("a storey on the fit's bound must be refused");
        };
        assert!(
            m.contains("ended on the fit's bounds") || m.contains("did not converge"),
            "{m}"
        );
    }

    #[test]
    fn too_few_independent_targets_without_regularisation_are_refused_before_queueing() {
        let model = builtin_model("southampton").unwrap();
        let one = json!([{ "frequency_hz": 6.0 }]);
        let fields = invalid_fields(run(&model, json!({ "targets": one })).unwrap_err());
        assert_eq!(fields, ["params.targets"]);
        // Regularised, one frequency may move three storeys towards it.
        let out = run(&model, json!({ "targets": one, "regularisation": 0.1 })).unwrap();
        assert!(
            out.summary["rms_frequency_error_percent"].as_f64().unwrap()
                < out.summary["rms_frequency_error_percent_before"]
                    .as_f64()
                    .unwrap()
        );
    }

    #[test]
    fn targets_that_do_not_map_to_the_models_floors_and_every_other_bad_field_are_listed() {
        let model = builtin_model("southampton").unwrap();
        let params = json!({
            "targets": [
                { "frequency_hz": 6.0, "shape": [1.0, 0.5] },
                { "frequency_hz": -1.0, "model_mode": 7, "weight": 0.0 },
                { "frequency_hz": 20.0, "shape": [null, null, 0.0] },
                { "frequency_hz": 26.0 },
            ],
            "storeys": [0, 2, 2],
            "regularisation": -1.0,
            "max_relative_change": 2.0,
            "damping": "rayleigh",
        });
        let fields = invalid_fields(run(&model, params).unwrap_err());
        assert_eq!(
            fields,
            [
                "params.targets",
                "params.targets[0].shape",
                "params.targets[1].frequency_hz",
                "params.targets[1].weight",
                "params.targets[1].model_mode",
                "params.targets[2].shape",
                "params.storeys[0]",
                "params.storeys[2]",
                "params.regularisation",
                "params.max_relative_change",
                "params.damping",
            ]
        );
    }
}
