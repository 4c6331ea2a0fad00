//! Owns model updating: the storey stiffnesses of a shear building (and then its Rayleigh or
//! modal damping) fitted to target modes by regularised Levenberg–Marquardt on analytic
//! eigen-sensitivities, with the fitted parameters' covariance. Knows nothing about where
//! the targets came from (EMA, OMA) or where the new model is stored.
//!
//! Parameters are the factors θ_s = k_s / k_s,prior of the chosen storeys. For mass-normalised
//! φ_r, ∂λ_r/∂k_s = φ_rᵀ·(∂K/∂k_s)·φ_r = (φ_r,s − φ_r,s−1)² (Fox & Kapoor 1968; M does not
//! depend on k), and ∂φ_r/∂k_s = Σ_{q≠r} φ_q·φ_qᵀ(∂K/∂k_s)φ_r / (λ_r − λ_q) (Fox & Kapoor's
//! modal expansion, exact here because every mode of the model is in the sum).

use std::f64::consts::TAU;

use dtop_dynamics::frf::modal_damping_ratios;
use dtop_dynamics::{Damping, ShearBuilding, ShearBuildingConfig, mac};
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::error::{CalibrateError, check};
use crate::identified::IdentifiedMode;

/// One mode the updated model should have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetMode {
    /// Natural frequency, in Hz.
    pub frequency_hz: f64,
    /// Its standard deviation, in Hz: the weight of this frequency in the fit and the scale of
    /// the reported parameter uncertainty.
    pub frequency_std_hz: f64,
    /// Damping ratio, used by the damping update (fraction of critical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damping_ratio: Option<f64>,
    /// Mode shape over floors 1..=N (any scale or sign). When every target has one, targets
    /// are paired with model modes by MAC and the shapes join the fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<f64>>,
    /// The model mode (1-based, ascending in frequency) this target is, when known. Pins the
    /// pairing when every target has one; otherwise targets pair by MAC (all shapes given)
    /// or by rank (the k-th lowest target is the k-th model mode, so give the lowest modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_mode: Option<usize>,
}

impl TargetMode {
    /// A target from an identified mode: its frequency, a std of the mode's spread floored at
    /// `min_relative_std` of the frequency (an estimate's spread can be far below its real
    /// uncertainty), its damping ratio, and its shape when the channels cover floors
    /// 1..=`floors` exactly (the real parts of the modal constants, in floor order).
    pub fn from_identified(
        mode: &IdentifiedMode,
        output_floors: &[usize],
        floors: usize,
        min_relative_std: f64,
    ) -> Self {
        let mut sorted = output_floors.to_vec();
        sorted.sort_unstable();
        let complete = sorted == (1..=floors).collect::<Vec<_>>()
            && mode.modal_constants_per_kg.len() == floors;
        let shape = complete.then(|| {
            let mut shape = vec![0.0; floors];
            for (a, &floor) in mode.modal_constants_per_kg.iter().zip(output_floors) {
                shape[floor - 1] = a[0];
            }
            shape
        });
        Self {
            frequency_hz: mode.natural_frequency_hz,
            frequency_std_hz: mode
                .natural_frequency_std_hz
                .unwrap_or(0.0)
                .max(min_relative_std * mode.natural_frequency_hz),
            damping_ratio: Some(mode.damping_ratio),
            shape,
            model_mode: None,
        }
    }
}

/// What happens to the damping after the stiffnesses are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DampingUpdate {
    /// Keep the prior model's damping description.
    #[default]
    Keep,
    /// C = α·M + β·K with α, β ≥ 0 by least squares on ζ_r = α/(2ω_r) + β·ω_r/2 over the
    /// targets that give a damping ratio (at least two).
    Rayleigh,
    /// Modal damping: each paired mode gets its target's ratio, the others keep the prior
    /// model's modal ratio. Not for a building with an actuator.
    Modal,
}

/// Default lower bound of a stiffness factor: a storey may lose up to 90 %.
pub const fn default_lower_factor() -> f64 {
    0.1
}
/// Default upper bound of a stiffness factor.
pub const fn default_upper_factor() -> f64 {
    10.0
}
/// Default standard deviation of each component of a unit-norm target shape.
pub const fn default_shape_std() -> f64 {
    0.02
}
/// Default iteration cap; a well-posed update of a few storeys converges in under 20.
pub const fn default_max_iterations() -> usize {
    100
}

/// Parameters of a model update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateParams {
    /// The modes to match.
    pub targets: Vec<TargetMode>,
    /// Storeys to update, 1-based; all storeys when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storeys: Option<Vec<usize>>,
    /// Tikhonov regularisation towards the prior: each factor θ_s carries a prior N(1, σ²)
    /// with this σ (0.1 = "within about 10 % of the prior"). Without it the targets alone must
    /// determine every parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_relative_std: Option<f64>,
    /// Lowest stiffness factor allowed (positive: a storey never vanishes).
    #[serde(default = "default_lower_factor")]
    pub lower_factor: f64,
    /// Highest stiffness factor allowed.
    #[serde(default = "default_upper_factor")]
    pub upper_factor: f64,
    /// Standard deviation of each component of a unit-norm target shape.
    #[serde(default = "default_shape_std")]
    pub shape_std: f64,
    /// The damping update.
    #[serde(default)]
    pub damping: DampingUpdate,
    /// Iteration cap.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: usize,
}

impl UpdateParams {
    /// Parameters that fit all storeys to `targets` with the defaults.
    pub fn new(targets: Vec<TargetMode>) -> Self {
        Self {
            targets,
            storeys: None,
            prior_relative_std: None,
            lower_factor: default_lower_factor(),
            upper_factor: default_upper_factor(),
            shape_std: default_shape_std(),
            damping: DampingUpdate::Keep,
            max_iterations: default_max_iterations(),
        }
    }
}

/// How one target compares with its paired model mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeResidual {
    /// Target index, 0-based, in the order given.
    pub target: usize,
    /// Paired model mode, 1-based, ascending in frequency.
    pub model_mode: usize,
    /// Target frequency, in Hz.
    pub target_hz: f64,
    /// Model frequency, in Hz.
    pub model_hz: f64,
    /// (model − target) / target, in percent.
    pub error_percent: f64,
    /// (model − target) / std.
    pub normalised_error: f64,
    /// MAC of the target shape with the model shape, when the target has one.
    pub mac: Option<f64>,
}

/// Result of a model update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateResult {
    /// Storeys updated, 1-based.
    pub storeys: Vec<usize>,
    /// Prior stiffness of every storey, in N/m.
    pub prior_stiffness_n_per_m: Vec<f64>,
    /// Fitted stiffness of every storey (the prior's where not updated), in N/m.
    pub fitted_stiffness_n_per_m: Vec<f64>,
    /// Standard deviation of each updated storey's stiffness, in N/m, from (J̃ᵀJ̃)⁻¹ of the
    /// weighted Jacobian (with the prior's rows when regularised) at the solution: a
    /// linearised posterior that trusts the given target std.
    pub stiffness_std_n_per_m: Vec<f64>,
    /// Correlation matrix of the updated storeys' stiffnesses.
    pub correlation: Vec<Vec<f64>>,
    /// Residuals of the prior model.
    pub before: Vec<ModeResidual>,
    /// Residuals of the fitted model.
    pub after: Vec<ModeResidual>,
    /// Σ of squared weighted data residuals (frequencies and shapes) of the prior model.
    pub chi_square_before: f64,
    /// The same for the fitted model.
    pub chi_square_after: f64,
    /// Levenberg–Marquardt iterations run.
    pub iterations: usize,
    /// Updated storeys whose factor ended on a bound: the fit wanted to go further, so the
    /// data and the chain model disagree there; treat the value with suspicion.
    pub storeys_at_bounds: Vec<usize>,
    /// The updated model, ready to store as a new version.
    pub config: ShearBuildingConfig,
}

/// Everything the fit needs of the model at one parameter vector.
struct Evaluation {
    omegas: Vec<f64>,
    shapes: DMatrix<f64>,
    /// pairs[t] = model mode (0-based) of target t.
    pairs: Vec<usize>,
    residuals: DVector<f64>,
    jacobian: DMatrix<f64>,
}

/// Fits the storey stiffnesses of `prior` (then its damping) to `params.targets`.
///
/// # Errors
/// [`CalibrateError::Invalid`] listing every problem with the parameters or the prior;
/// [`CalibrateError::NotIdentifiable`] when the targets cannot determine the storeys (fewer
/// data than parameters without regularisation, or a singular Jacobian);
/// [`CalibrateError::NotConverged`] when the iteration stalls or runs out.
pub fn update_storey_stiffness(
    prior: &ShearBuildingConfig,
    params: &UpdateParams,
) -> Result<UpdateResult, CalibrateError> {
    let floors = prior.floors();
    let mut problems = prior.problems();
    let storeys: Vec<usize> = params
        .storeys
        .clone()
        .unwrap_or_else(|| (1..=floors).collect());
    problems.extend(param_problems(params, &storeys, floors, prior));
    check(problems)?;
    let prior_building = ShearBuilding::new(prior.clone())?;
    let dofs = prior_building.dofs();
    let mut pairing_problems = Vec::new();
    if params.targets.len() > dofs {
        pairing_problems.push(format!(
            "{} targets but the model has only {dofs} modes",
            params.targets.len()
        ));
    }
    let mut pinned = vec![false; dofs + 1];
    for (i, t) in params.targets.iter().enumerate() {
        match t.model_mode {
            Some(m) if m == 0 || m > dofs => pairing_problems.push(format!(
                "targets[{i}].model_mode = {m} is not within 1..={dofs}"
            )),
            Some(m) if std::mem::replace(&mut pinned[m], true) => pairing_problems.push(format!(
                "targets[{i}].model_mode = {m} is already another target's mode"
            )),
            _ => {}
        }
    }
    check(pairing_problems)?;
    let shapes_given = params.targets.iter().all(|t| t.shape.is_some());
    let data_rows = params.targets.len()
        + if shapes_given {
            params.targets.len() * floors
        } else {
            0
        };
    // A shape adds N components but only N − 1 independent ones (its scale is free).
    let independent = params.targets.len()
        + if shapes_given {
            params.targets.len() * (floors - 1)
        } else {
            0
        };
    if params.prior_relative_std.is_none() && independent < storeys.len() {
        return Err(CalibrateError::NotIdentifiable(format!(
            "{} storeys to update from {independent} independent data (target frequencies \
             and shape components): give more targets or shapes, fewer storeys, or set \
             prior_relative_std to regularise",
            storeys.len()
        )));
    }
    let k0 = prior.storey_stiffness_n_per_m.clone();
    let problem = Problem {
        prior,
        params,
        storeys: &storeys,
        k0: &k0,
        shapes_given,
        data_rows,
    };
    let theta0 = DVector::from_element(storeys.len(), 1.0);
    let first = problem.evaluate(&theta0)?;
    let before = problem.mode_residuals(&first);
    let chi_before = first.residuals.rows(0, data_rows).norm_squared();

    let mut theta = theta0;
    let mut current = first;
    let mut cost = current.residuals.norm_squared();
    let mut lambda = 1e-3;
    let mut iterations = 0;
    let mut converged = false;
    while iterations < params.max_iterations {
        iterations += 1;
        let j = &current.jacobian;
        let jtj = j.transpose() * j;
        let g = j.transpose() * &current.residuals;
        let mut accepted = false;
        for _ in 0..30 {
            let mut damped = jtj.clone();
            for i in 0..damped.nrows() {
                damped[(i, i)] += lambda * jtj[(i, i)].max(1e-12);
            }
            let Some(step) = damped.lu().solve(&(-&g)) else {
                lambda *= 10.0;
                continue;
            };
            let trial = theta
                .zip_map(&step, |t, s| t + s)
                .map(|t| t.clamp(params.lower_factor, params.upper_factor));
            let Ok(evaluation) = problem.evaluate(&trial) else {
                lambda *= 4.0;
                continue;
            };
            let trial_cost = evaluation.residuals.norm_squared();
            if trial_cost <= cost {
                let moved = (&trial - &theta).amax();
                let small_gain = cost - trial_cost <= 1e-14 * (1.0 + cost);
                theta = trial;
                current = evaluation;
                cost = trial_cost;
                lambda = (lambda / 3.0).max(1e-12);
                accepted = true;
                converged = moved < 1e-10 || (small_gain && moved < 1e-6);
                break;
            }
            lambda *= 4.0;
        }
        if !accepted {
            // No step lowers the cost: a minimum to rounding, if the gradient is flat there.
            let g = current.jacobian.transpose() * &current.residuals;
            converged = g.amax() <= 1e-8 * (1.0 + cost);
            if !converged {
                return Err(CalibrateError::NotConverged {
                    iterations,
                    reason: format!(
                        "no step lowers the misfit (χ² = {cost:.4e}, gradient {:.3e}); check \
                         the target pairing or regularise with prior_relative_std",
                        g.amax()
                    ),
                });
            }
        }
        if converged {
            break;
        }
    }
    if !converged {
        return Err(CalibrateError::NotConverged {
            iterations,
            reason: format!(
                "the iteration cap of {} was reached with χ² = {cost:.4e}; raise \
                 max_iterations or regularise with prior_relative_std",
                params.max_iterations
            ),
        });
    }

    let covariance = covariance(&current.jacobian)?;
    let n = storeys.len();
    let std_theta: Vec<f64> = (0..n).map(|i| covariance[(i, i)].max(0.0).sqrt()).collect();
    let correlation: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    let s = std_theta[i] * std_theta[j];
                    if s > 0.0 { covariance[(i, j)] / s } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let fitted = problem.stiffness(&theta);
    let after = problem.mode_residuals(&current);
    let chi_after = current.residuals.rows(0, data_rows).norm_squared();
    let at_bounds: Vec<usize> = storeys
        .iter()
        .zip(theta.iter())
        .filter(|(_, t)| {
            (*t - params.lower_factor).abs() < 1e-9 || (*t - params.upper_factor).abs() < 1e-9
        })
        .map(|(s, _)| *s)
        .collect();
    let mut config = prior.clone();
    config.storey_stiffness_n_per_m = fitted.clone();
    config.damping = fitted_damping(&config, params, &current)?;
    config.validate()?;
    Ok(UpdateResult {
        stiffness_std_n_per_m: storeys
            .iter()
            .zip(&std_theta)
            .map(|(s, sd)| k0[s - 1] * sd)
            .collect(),
        storeys,
        prior_stiffness_n_per_m: k0,
        fitted_stiffness_n_per_m: fitted,
        correlation,
        before,
        after,
        chi_square_before: chi_before,
        chi_square_after: chi_after,
        iterations,
        storeys_at_bounds: at_bounds,
        config,
    })
}

fn param_problems(
    params: &UpdateParams,
    storeys: &[usize],
    floors: usize,
    prior: &ShearBuildingConfig,
) -> Vec<String> {
    let mut problems = Vec::new();
    if params.targets.is_empty() {
        problems.push("targets is empty: give at least one mode to match".into());
    }
    for (i, t) in params.targets.iter().enumerate() {
        if !(t.frequency_hz.is_finite() && t.frequency_hz > 0.0) {
            problems.push(format!(
                "targets[{i}].frequency_hz = {} must be positive and finite",
                t.frequency_hz
            ));
        }
        if !(t.frequency_std_hz.is_finite() && t.frequency_std_hz > 0.0) {
            problems.push(format!(
                "targets[{i}].frequency_std_hz = {} must be positive and finite",
                t.frequency_std_hz
            ));
        }
        if let Some(z) = t.damping_ratio
            && !(z.is_finite() && (0.0..1.0).contains(&z))
        {
            problems.push(format!(
                "targets[{i}].damping_ratio = {z} must lie in [0, 1)"
            ));
        }
        if let Some(shape) = &t.shape {
            if shape.len() != floors {
                problems.push(format!(
                    "targets[{i}].shape has {} entries; the model has {floors} floors",
                    shape.len()
                ));
            }
            if shape.iter().any(|x| !x.is_finite()) || shape.iter().all(|x| *x == 0.0) {
                problems.push(format!(
                    "targets[{i}].shape must be finite and not all zero"
                ));
            }
        }
    }
    if storeys.is_empty() {
        problems.push("storeys is empty: update at least one".into());
    }
    let mut seen = vec![false; floors + 1];
    for &s in storeys {
        if s == 0 || s > floors {
            problems.push(format!("storey {s} is not within 1..={floors}"));
        } else if std::mem::replace(&mut seen[s], true) {
            problems.push(format!("storey {s} is listed twice"));
        }
    }
    if let Some(sd) = params.prior_relative_std
        && !(sd.is_finite() && sd > 0.0)
    {
        problems.push(format!(
            "prior_relative_std = {sd} must be positive and finite"
        ));
    }
    if !(params.lower_factor.is_finite()
        && params.lower_factor > 0.0
        && params.lower_factor < 1.0
        && params.upper_factor.is_finite()
        && params.upper_factor > 1.0)
    {
        problems.push(format!(
            "bounds {}..{} must satisfy 0 < lower_factor < 1 < upper_factor: the prior must \
             lie inside and no storey may reach zero stiffness",
            params.lower_factor, params.upper_factor
        ));
    }
    if !(params.shape_std.is_finite() && params.shape_std > 0.0) {
        problems.push(format!("shape_std = {} must be positive", params.shape_std));
    }
    if params.max_iterations == 0 {
        problems.push("max_iterations must be at least 1".into());
    }
    match params.damping {
        DampingUpdate::Keep => {}
        DampingUpdate::Rayleigh => {
            let with = params
                .targets
                .iter()
                .filter(|t| t.damping_ratio.is_some())
                .count();
            if with < 2 {
                problems.push(format!(
                    "a Rayleigh damping update needs at least two targets with damping_ratio; \
                     {with} have one"
                ));
            }
        }
        DampingUpdate::Modal => {
            if prior.actuator.is_some() {
                problems.push(
                    "a modal damping update describes the bare building; this prior has an \
                     actuator, whose modes are not the building's: use rayleigh"
                        .into(),
                );
            }
            if params.targets.iter().all(|t| t.damping_ratio.is_none()) {
                problems.push("a modal damping update needs targets with damping_ratio".into());
            }
        }
    }
    problems
}

struct Problem<'a> {
    prior: &'a ShearBuildingConfig,
    params: &'a UpdateParams,
    storeys: &'a [usize],
    k0: &'a [f64],
    shapes_given: bool,
    data_rows: usize,
}

impl Problem<'_> {
    fn stiffness(&self, theta: &DVector<f64>) -> Vec<f64> {
        let mut k = self.k0.to_vec();
        for (&s, t) in self.storeys.iter().zip(theta.iter()) {
            k[s - 1] = self.k0[s - 1] * t;
        }
        k
    }

    fn evaluate(&self, theta: &DVector<f64>) -> Result<Evaluation, CalibrateError> {
        let mut config = self.prior.clone();
        config.storey_stiffness_n_per_m = self.stiffness(theta);
        let building = ShearBuilding::new(config)?;
        let modes = building.modes();
        let omegas: Vec<f64> = modes.omegas_rad_s.iter().copied().collect();
        let phi = modes.shapes.clone();
        let floors = self.prior.floors();
        let floor_shape = |r: usize| -> Vec<f64> { (0..floors).map(|i| phi[(i, r)]).collect() };
        let targets = &self.params.targets;
        let pinned: Option<Vec<usize>> = targets
            .iter()
            .map(|t| t.model_mode.map(|m| m - 1))
            .collect();
        let pairs = if let Some(pinned) = pinned {
            pinned
        } else if self.shapes_given {
            pair_by_mac(
                targets
                    .iter()
                    .map(|t| t.shape.clone().unwrap_or_default())
                    .collect(),
                (0..omegas.len()).map(floor_shape).collect(),
            )
        } else {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            order.sort_by(|&a, &b| targets[a].frequency_hz.total_cmp(&targets[b].frequency_hz));
            let mut pairs = vec![0; targets.len()];
            for (rank, &t) in order.iter().enumerate() {
                pairs[t] = rank;
            }
            pairs
        };
        let n = self.storeys.len();
        let prior_rows = if self.params.prior_relative_std.is_some() {
            n
        } else {
            0
        };
        let mut residuals = DVector::zeros(self.data_rows + prior_rows);
        let mut jacobian = DMatrix::zeros(self.data_rows + prior_rows, n);
        // Storey s joins floor s to floor s − 1: its strain in mode r is φ_r,s − φ_r,s−1.
        let drift = |r: usize, s: usize| -> f64 {
            phi[(s - 1, r)] - if s >= 2 { phi[(s - 2, r)] } else { 0.0 }
        };
        let mut row = 0;
        for (t, target) in targets.iter().enumerate() {
            let r = pairs[t];
            let f = omegas[r] / TAU;
            residuals[row] = (f - target.frequency_hz) / target.frequency_std_hz;
            for (j, &s) in self.storeys.iter().enumerate() {
                // dλ/dθ = k0·(Δφ)², and λ = (2πf)² gives df = dλ / (8π²f).
                let dlambda = self.k0[s - 1] * drift(r, s).powi(2);
                jacobian[(row, j)] = dlambda / (2.0 * TAU * TAU * f) / target.frequency_std_hz;
            }
            row += 1;
        }
        if self.shapes_given {
            for (t, target) in targets.iter().enumerate() {
                let r = pairs[t];
                let u = unit(&target.shape.clone().unwrap_or_default());
                let model = floor_shape(r);
                let norm = model.iter().map(|x| x * x).sum::<f64>().sqrt();
                let v: Vec<f64> = model.iter().map(|x| x / norm).collect();
                let sign = if v.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>() < 0.0 {
                    -1.0
                } else {
                    1.0
                };
                for i in 0..floors {
                    residuals[row + i] = (sign * v[i] - u[i]) / self.params.shape_std;
                }
                for (j, &s) in self.storeys.iter().enumerate() {
                    // dφ_r over all DOFs, then restricted to the floors and normalised.
                    let mut dphi = vec![0.0; floors];
                    for q in 0..omegas.len() {
                        let gap = omegas[r].powi(2) - omegas[q].powi(2);
                        if q == r || gap.abs() <= 1e-12 * omegas[r].powi(2) {
                            continue;
                        }
                        let coupling = self.k0[s - 1] * drift(q, s) * drift(r, s) / gap;
                        for (i, d) in dphi.iter_mut().enumerate() {
                            *d += phi[(i, q)] * coupling;
                        }
                    }
                    let along: f64 = v.iter().zip(&dphi).map(|(a, b)| a * b).sum();
                    for i in 0..floors {
                        let dv = (dphi[i] - v[i] * along) / norm;
                        jacobian[(row + i, j)] = sign * dv / self.params.shape_std;
                    }
                }
                row += floors;
            }
        }
        if let Some(sd) = self.params.prior_relative_std {
            for j in 0..n {
                residuals[row + j] = (theta[j] - 1.0) / sd;
                jacobian[(row + j, j)] = 1.0 / sd;
            }
        }
        Ok(Evaluation {
            omegas,
            shapes: phi,
            pairs,
            residuals,
            jacobian,
        })
    }

    fn mode_residuals(&self, e: &Evaluation) -> Vec<ModeResidual> {
        let floors = self.prior.floors();
        self.params
            .targets
            .iter()
            .enumerate()
            .map(|(t, target)| {
                let r = e.pairs[t];
                let f = e.omegas[r] / TAU;
                let model: Vec<f64> = (0..floors).map(|i| e.shapes[(i, r)]).collect();
                ModeResidual {
                    target: t,
                    model_mode: r + 1,
                    target_hz: target.frequency_hz,
                    model_hz: f,
                    error_percent: 100.0 * (f - target.frequency_hz) / target.frequency_hz,
                    normalised_error: (f - target.frequency_hz) / target.frequency_std_hz,
                    mac: target.shape.as_ref().and_then(|s| mac(s, &model)),
                }
            })
            .collect()
    }
}

fn unit(x: &[f64]) -> Vec<f64> {
    let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    x.iter().map(|v| v / n).collect()
}

/// Pairs each target shape with a distinct model shape, highest MAC first (greedy: with
/// well-separated MACs this is the optimal assignment).
pub(crate) fn pair_by_mac(targets: Vec<Vec<f64>>, model: Vec<Vec<f64>>) -> Vec<usize> {
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (t, ts) in targets.iter().enumerate() {
        for (m, ms) in model.iter().enumerate() {
            candidates.push((mac(ts, ms).unwrap_or(0.0), t, m));
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut pairs = vec![usize::MAX; targets.len()];
    let mut used = vec![false; model.len()];
    for (_, t, m) in candidates {
        if pairs[t] == usize::MAX && !used[m] {
            pairs[t] = m;
            used[m] = true;
        }
    }
    // Every target finds a mode: validation keeps targets ≤ modes.
    pairs
        .iter()
        .map(|&p| if p == usize::MAX { 0 } else { p })
        .collect()
}

/// (J̃ᵀJ̃)⁻¹, refusing a Jacobian whose columns the data cannot tell apart.
fn covariance(jacobian: &DMatrix<f64>) -> Result<DMatrix<f64>, CalibrateError> {
    let svd = jacobian.clone().svd(false, true);
    let largest = svd.singular_values.max();
    let smallest = svd.singular_values.min();
    if smallest.is_nan() || smallest <= 1e-9 * largest {
        return Err(CalibrateError::NotIdentifiable(format!(
            "the targets do not separate the storeys (Jacobian condition {:.2e}); give mode \
             shapes or set prior_relative_std",
            largest / smallest
        )));
    }
    let v_t = svd
        .v_t
        .ok_or_else(|| CalibrateError::Numerical("SVD without V".into()))?;
    let inv_s2 = DMatrix::from_diagonal(&svd.singular_values.map(|s| 1.0 / (s * s)));
    Ok(v_t.transpose() * inv_s2 * v_t)
}

fn fitted_damping(
    config: &ShearBuildingConfig,
    params: &UpdateParams,
    e: &Evaluation,
) -> Result<Damping, CalibrateError> {
    let paired: Vec<(f64, f64)> = params
        .targets
        .iter()
        .enumerate()
        .filter_map(|(t, target)| target.damping_ratio.map(|z| (e.omegas[e.pairs[t]], z)))
        .collect();
    match params.damping {
        DampingUpdate::Keep => Ok(config.damping.clone()),
        DampingUpdate::Rayleigh => Ok(rayleigh_fit(&paired)),
        DampingUpdate::Modal => {
            let building = ShearBuilding::new(config.clone())?;
            let mut zetas = modal_damping_ratios(building.modes(), building.damping_matrix());
            zetas.truncate(config.floors());
            for (t, target) in params.targets.iter().enumerate() {
                if let (Some(z), Some(slot)) = (target.damping_ratio, zetas.get_mut(e.pairs[t])) {
                    *slot = z;
                }
            }
            Ok(Damping::Modal { zetas })
        }
    }
}

/// α, β ≥ 0 minimising Σ (α/(2ω) + βω/2 − ζ)²: the unconstrained solution if both are
/// non-negative, else the better of the two one-parameter fits.
fn rayleigh_fit(data: &[(f64, f64)]) -> Damping {
    let a = DMatrix::from_fn(data.len(), 2, |i, j| {
        if j == 0 {
            0.5 / data[i].0
        } else {
            0.5 * data[i].0
        }
    });
    let b = DVector::from_iterator(data.len(), data.iter().map(|d| d.1));
    let sse = |alpha: f64, beta: f64| -> f64 {
        data.iter()
            .map(|(w, z)| (alpha * 0.5 / w + beta * 0.5 * w - z).powi(2))
            .sum()
    };
    if let Ok(x) = a.clone().svd(true, true).solve(&b, 1e-14)
        && x[0] >= 0.0
        && x[1] >= 0.0
    {
        return Damping::Rayleigh {
            alpha_per_s: x[0],
            beta_s: x[1],
        };
    }
    let single = |col: usize| -> f64 {
        let c = a.column(col);
        (c.dot(&b) / c.dot(&c)).max(0.0)
    };
    let (alpha, beta) = (single(0), single(1));
    if sse(alpha, 0.0) <= sse(0.0, beta) {
        Damping::Rayleigh {
            alpha_per_s: alpha,
            beta_s: 0.0,
        }
    } else {
        Damping::Rayleigh {
            alpha_per_s: 0.0,
            beta_s: beta,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> ShearBuildingConfig {
        ShearBuildingConfig {
            floor_masses_kg: vec![5.0, 4.0, 3.0, 2.5],
            storey_stiffness_n_per_m: vec![40_000.0, 30_000.0, 20_000.0, 15_000.0],
            damping: Damping::Rayleigh {
                alpha_per_s: 0.1,
                beta_s: 1e-5,
            },
            actuator: None,
        }
    }

    #[test]
    fn analytic_sensitivities_match_central_differences() {
        // An independent check of the Fox–Kapoor eigenvalue and eigenvector derivatives:
        // central differences with step h have error O(h²) ≈ 1e-8 relative here, rounding
        // ≈ ε/h ≈ 1e-12; 1e-6 of the largest entry bounds both.
        let prior = chain();
        let b = ShearBuilding::new(prior.clone()).unwrap();
        let targets: Vec<TargetMode> = b
            .natural_frequencies_hz()
            .iter()
            .enumerate()
            .map(|(r, f)| TargetMode {
                frequency_hz: f * 1.03,
                frequency_std_hz: 0.01 * f,
                damping_ratio: None,
                shape: Some(
                    b.modes()
                        .shapes
                        .column(r)
                        .iter()
                        .map(|x| x + 0.01)
                        .collect(),
                ),
                model_mode: None,
            })
            .collect();
        let params = UpdateParams {
            storeys: Some(vec![1, 2, 4]),
            prior_relative_std: Some(0.2),
            ..UpdateParams::new(targets)
        };
        let storeys = vec![1, 2, 4];
        let problem = Problem {
            prior: &prior,
            params: &params,
            storeys: &storeys,
            k0: &prior.storey_stiffness_n_per_m,
            shapes_given: true,
            data_rows: 4 + 4 * 4,
        };
        let theta = DVector::from_vec(vec![0.9, 1.1, 0.95]);
        let at = problem.evaluate(&theta).unwrap();
        let h = 1e-6;
        let scale = at.jacobian.amax();
        for j in 0..3 {
            let mut plus = theta.clone();
            let mut minus = theta.clone();
            plus[j] += h;
            minus[j] -= h;
            let numeric = (problem.evaluate(&plus).unwrap().residuals
                - problem.evaluate(&minus).unwrap().residuals)
                / (2.0 * h);
            for i in 0..numeric.len() {
                assert!(
                    (numeric[i] - at.jacobian[(i, j)]).abs() < 1e-6 * scale,
                    "row {i}, storey {}: numeric {} vs analytic {}",
                    storeys[j],
                    numeric[i],
                    at.jacobian[(i, j)]
                );
            }
        }
    }

    #[test]
    fn rayleigh_fit_keeps_both_coefficients_non_negative() {
        // ζ falling faster than 1/ω fits α > 0 and β < 0 unconstrained; the constrained fit
        // drops β.
        let data = [(10.0, 0.05), (30.0, 0.01), (60.0, 0.002)];
        let Damping::Rayleigh {
            alpha_per_s,
            beta_s,
        } = rayleigh_fit(&data)
        else {
            panic!("Rayleigh expected");
        };
        assert!(alpha_per_s > 0.0 && beta_s == 0.0, "{alpha_per_s} {beta_s}");
    }
}
