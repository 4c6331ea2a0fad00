//! The `cbc` study: control-based continuation on a model. The study's shear chain gets cubic
//! storey springs and a harmonic force on one floor; chunk 0 traces its response curve in
//! frequency by harmonic balance and pseudo-arclength continuation (stability and folds
//! included: the reference), chunk 1 runs the simulated CBC experiment at one frequency
//! (noisy sensors, a PD controller on the forced floor, its target iterated until the control
//! force is non-invasive) and the balance continued in the forcing amplitude at that
//! frequency to compare it with, chunk 2 the open-loop sweeps up and down, each point run to
//! steady state. The numerics are `dtop_nonlinear`'s; this module only maps parameters to its
//! requests and its results to arrays. A part that stops early (a lost branch, a CBC point
//! that does not converge, the actuator's force limit) keeps what it computed and says why.

use dtop_nonlinear::{
    Branch, CbcConfig, CbcRun, CbcStop, ContinuationConfig, NonlinearChain, NonlinearChainConfig,
    OpenLoopSweep, OpenLoopSweepConfig, PolynomialSpring, SpringLink, StopReason, Sweep,
    continue_branch, open_loop_sweep, run_cbc,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::ModelSpec;
use crate::output::{Column, NamedArray, StudyOutput};
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, InputSpec, Inputs, Plan, StudyError, chunk_seed};

/// Computed from the model alone: no measured inputs.
pub const INPUTS: &[InputSpec] = &[];

/// Chunk of the response curve's continuation in frequency.
pub const CONTINUATION_CHUNK: u32 = 0;
/// Chunk of the CBC experiment and its reference continuation in forcing amplitude.
pub const CBC_CHUNK: u32 = 1;
/// Chunk of the open-loop sweeps.
pub const SWEEP_CHUNK: u32 = 2;
/// Number of chunks.
pub const CHUNKS: u32 = 3;

/// Frequency shift of mode 1 along its backbone, at the forced floor's linear resonant
/// amplitude, that the default cubic springs give: ω_nl/ω₁ = 1.05. With the Southampton
/// model's 0.2 % damping this is 25 half-power bandwidths: a clear fold pair.
const DEFAULT_BACKBONE_SHIFT: f64 = 0.05;
/// Where the default CBC frequency sits: 2.5 % above f₁, between the folds of the default
/// response curve (on the Southampton model at 1.011·f₁ and 1.034·f₁).
const DEFAULT_CBC_FREQUENCY_RATIO: f64 = 1.025;
/// The reference continuation in forcing amplitude runs up to this times the largest CBC
/// force, so every CBC amplitude lies on it.
const REFERENCE_FORCE_MARGIN: f64 = 1.25;
/// Largest scaled arclength step of the reference continuation in forcing amplitude: small,
/// because CBC points are compared with it by linear interpolation between its points.
const REFERENCE_MAX_STEP: f64 = 0.005;

/// Parameters of `cbc`. Defaults ([`Params::defaults_for`]) are scaled to the model's first
/// mode so that `{}` shows a fold pair in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Cubic stiffness k₃ of each storey's spring on its drift, storey 1 first, in N/m³ (one
    /// per storey; positive hardens, negative softens, 0 for none).
    pub cubic_n_per_m3: Vec<f64>,
    /// Floor that carries the harmonic force F·cos ωt and the CBC controller, 1-based.
    pub forced_floor: usize,
    /// Floor whose first-harmonic amplitude the curves show, 1-based.
    pub observed_floor: usize,
    /// Forcing amplitude F of the response curve and of the sweeps, in N.
    pub forcing_n: f64,
    /// Lowest frequency of the response curve and the sweeps, in Hz; positive.
    pub f_min_hz: f64,
    /// Highest frequency, in Hz; above `f_min_hz`.
    pub f_max_hz: f64,
    /// Harmonics kept by the harmonic balance of both continuations, 1 to 64 (1 is the
    /// classical first-order approximation).
    pub harmonics: usize,
    /// Most points of each continuation, 2 to 100 000: the continuation's budget.
    pub max_points: usize,
    /// Largest continuation step, in scaled arclength (displacements over the largest linear
    /// amplitude, frequency over the range).
    pub max_step: f64,
    /// Frequency of the CBC experiment, in Hz; positive.
    pub cbc_frequency_hz: f64,
    /// First target amplitude of the forced floor's first harmonic, in m; positive.
    pub cbc_target_min_m: f64,
    /// Last target amplitude, in m; above `cbc_target_min_m`.
    pub cbc_target_max_m: f64,
    /// Target amplitudes, evenly spaced, 2 to 10 000.
    pub cbc_targets: usize,
    /// Proportional gain k_p of the CBC controller, in N/m; zero or positive.
    pub proportional_gain_n_per_m: f64,
    /// Derivative gain k_d, in N·s/m; zero or positive, not both zero.
    pub derivative_gain_n_s_per_m: f64,
    /// Harmonics of the CBC target, 1 to 64.
    pub cbc_harmonics: usize,
    /// Iterations allowed per CBC target before the experiment stops: its budget.
    pub cbc_max_iterations: usize,
    /// A CBC point is converged when every higher harmonic of the control force is at most
    /// this fraction of its first, and the first harmonics changed by at most this fraction
    /// since the previous iteration; within (0, 1).
    pub invasiveness_tolerance: f64,
    /// Standard deviation of the displacement sensors' noise, in m.
    pub displacement_noise_m: f64,
    /// Standard deviation of the forced floor's velocity sensor noise, in m/s.
    pub velocity_noise_m_s: f64,
    /// The actuator's force limit, in N: a control force above it stops the experiment.
    pub max_force_n: f64,
    /// Controller samples and integration steps per forcing period of the CBC experiment.
    pub steps_per_period: usize,
    /// Periods discarded after each change of the CBC target (its settling allowance).
    pub settle_periods: usize,
    /// Periods over which each CBC iteration is Fourier-analysed.
    pub measure_periods: usize,
    /// Frequencies of each open-loop sweep, evenly spaced over the range, 2 to 10 000.
    pub sweep_points: usize,
    /// A sweep point has settled when every floor's first-harmonic amplitude changes by at
    /// most this fraction of the largest over a block of 20 periods; within (0, 1).
    pub sweep_settle_tolerance: f64,
    /// Periods allowed per sweep point before it is reported unsettled.
    pub sweep_max_periods: usize,
}

/// Rounds to three significant digits, so defaults read well in a form.
fn round3(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let scale = 10f64.powi(2 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

impl Params {
    /// The defaults for `model`: F = 1 N on the force gauge's floor (floor 1 without one),
    /// observed there; a cubic spring on storey 1 stiff enough that mode 1's backbone is 5 %
    /// above f₁ at the linear resonant amplitude (so the response curve folds twice); the
    /// curve and the sweeps over 0.95–1.1·f₁; CBC at 1.025·f₁ over targets up to 0.9 times
    /// the forced floor's linear resonant amplitude, with gains scaled from Cristallo's
    /// (k_p = 0.6·k₁, k_d = 1.2·k_p/ω₁, as 120 N/m and 10 N·s/m on its chain), sensor noise
    /// of 1e-6 of that amplitude, the force limit at 20 times F or twice k_p times the first
    /// target (the controller's first kick from rest), and enough controller samples per
    /// period for the closed loop's fastest rate.
    pub fn defaults_for(model: &ModelSpec) -> Self {
        let floors = model.floors().max(1);
        let forced = model
            .sensors
            .force_gauge_floor
            .filter(|f| (1..=floors).contains(f))
            .unwrap_or(1);
        let forcing_n = 1.0;
        let scale = model
            .building()
            .ok()
            .and_then(|b| default_scales(&b, forced, forcing_n));
        let (f1_hz, k1, cubic, a_forced, fastest_rad_s) =
            scale.unwrap_or((10.0, 1e4, 1e9, 1e-3, 100.0));
        let omega1 = std::f64::consts::TAU * f1_hz;
        let kp = round3(0.6 * k1);
        let kd = round3(1.2 * kp / omega1);
        let cbc_omega = std::f64::consts::TAU * round3(DEFAULT_CBC_FREQUENCY_RATIO * f1_hz);
        let forced_mass = model
            .structure
            .floor_masses_kg
            .get(forced - 1)
            .copied()
            .unwrap_or(1.0);
        // dtop-nonlinear refuses a step above 0.5 over the closed loop's fastest rate; bound
        // that rate by 2.5 times the larger of the fastest mode and k_d/m of the forced floor
        // (measured 2.2 times on the `southampton-actuator` model), in steps of 16.
        let rate = 2.5 * fastest_rad_s.max(kd / forced_mass);
        let needed = (std::f64::consts::TAU / cbc_omega * rate / 0.5 / 16.0).ceil() * 16.0;
        let steps_per_period = if needed.is_finite() && needed > 128.0 {
            needed as usize
        } else {
            128
        };
        let target_min = round3(0.1 * a_forced);
        let mut cubic_n_per_m3 = vec![0.0; floors];
        cubic_n_per_m3[0] = round3(cubic);
        Self {
            cubic_n_per_m3,
            forced_floor: forced,
            observed_floor: forced,
            forcing_n,
            f_min_hz: round3(0.95 * f1_hz),
            f_max_hz: round3(1.1 * f1_hz),
            harmonics: 5,
            max_points: 2000,
            max_step: 0.05,
            cbc_frequency_hz: cbc_omega / std::f64::consts::TAU,
            cbc_target_min_m: target_min,
            cbc_target_max_m: round3(0.9 * a_forced),
            cbc_targets: 13,
            proportional_gain_n_per_m: kp,
            derivative_gain_n_s_per_m: kd,
            cbc_harmonics: 11,
            cbc_max_iterations: 20,
            invasiveness_tolerance: 1e-3,
            displacement_noise_m: round3(1e-6 * a_forced),
            velocity_noise_m_s: round3(1e-6 * a_forced * omega1),
            max_force_n: round3((20.0 * forcing_n).max(2.0 * kp * target_min)),
            steps_per_period,
            settle_periods: 40,
            measure_periods: 10,
            sweep_points: 31,
            sweep_settle_tolerance: 1e-4,
            sweep_max_periods: 3000,
        }
    }

    /// The nonlinear chain these parameters put on `model`.
    fn chain_config(&self, model: &ModelSpec) -> NonlinearChainConfig {
        NonlinearChainConfig {
            building: model.structure.clone(),
            springs: self
                .cubic_n_per_m3
                .iter()
                .enumerate()
                .filter(|(_, k3)| **k3 != 0.0)
                .map(|(i, &k3)| PolynomialSpring {
                    link: SpringLink::Storey { storey: i + 1 },
                    quadratic_n_per_m2: 0.0,
                    cubic_n_per_m3: k3,
                    quintic_n_per_m5: 0.0,
                })
                .collect(),
            forced_floor: self.forced_floor,
        }
    }

    fn continuation(&self) -> ContinuationConfig {
        let mut config = ContinuationConfig::new(
            Sweep::Frequency {
                start_rad_s: std::f64::consts::TAU * self.f_min_hz,
                end_rad_s: std::f64::consts::TAU * self.f_max_hz,
                forcing_n: self.forcing_n,
            },
            self.harmonics,
        );
        config.max_points = self.max_points;
        config.max_step = self.max_step;
        config.initial_step = config.initial_step.min(self.max_step);
        config
    }

    fn cbc(&self, seed: u64) -> CbcConfig {
        let mut config = CbcConfig::new(
            std::f64::consts::TAU * self.cbc_frequency_hz,
            self.cbc_target_min_m,
            self.cbc_target_max_m,
            self.cbc_targets,
        );
        config.proportional_gain_n_per_m = self.proportional_gain_n_per_m;
        config.derivative_gain_n_s_per_m = self.derivative_gain_n_s_per_m;
        config.harmonics = self.cbc_harmonics;
        config.steps_per_period = self.steps_per_period;
        config.settle_periods = self.settle_periods;
        config.measure_periods = self.measure_periods;
        config.displacement_noise_m = self.displacement_noise_m;
        config.velocity_noise_m_s = self.velocity_noise_m_s;
        config.max_iterations = self.cbc_max_iterations;
        config.invasiveness_tolerance = self.invasiveness_tolerance;
        config.max_force_n = self.max_force_n;
        config.seed = seed;
        config
    }

    fn sweep(&self) -> OpenLoopSweepConfig {
        let mut config = OpenLoopSweepConfig::new(
            Sweep::Frequency {
                start_rad_s: std::f64::consts::TAU * self.f_min_hz,
                end_rad_s: std::f64::consts::TAU * self.f_max_hz,
                forcing_n: self.forcing_n,
            },
            self.sweep_points,
        );
        config.settle_tolerance = self.sweep_settle_tolerance;
        config.max_periods = self.sweep_max_periods;
        config
    }

    /// The reference continuation in forcing amplitude at the CBC frequency, up to `end_n`.
    fn reference(&self, end_n: f64) -> ContinuationConfig {
        let mut config = ContinuationConfig::new(
            Sweep::Amplitude {
                start_n: 0.0,
                end_n,
                omega_rad_s: std::f64::consts::TAU * self.cbc_frequency_hz,
            },
            self.harmonics,
        );
        config.max_points = self.max_points;
        config.max_step = REFERENCE_MAX_STEP.min(self.max_step);
        config.initial_step = config.initial_step.min(config.max_step);
        config
    }
}

/// (f₁ in Hz, storey 1's stiffness, the default cubic in N/m³, the forced floor's linear
/// resonant amplitude in m, the fastest natural frequency in rad/s) for `building` forced by `forcing_n` on `forced` (1-based).
///
/// Mode 1 alone (mass-normalised φ, modal coordinate q) with the cubic on storey 1, whose
/// drift is φ₁·q: the first-order backbone is ω² = ω₁²(1 + ¾·k₃·φ₁⁴·q²/ω₁²). At the storey
/// drift d of the linear resonance (q = d/φ₁) a shift by the factor s asks for
/// k₃ = ((1 + s)² − 1)·ω₁² / (¾·φ₁²·d²).
fn default_scales(
    building: &dtop_dynamics::ShearBuilding,
    forced: usize,
    forcing_n: f64,
) -> Option<(f64, f64, f64, f64, f64)> {
    let modes = building.modes();
    let omega1 = *modes.omegas_rad_s.iter().next()?;
    let phi1 = modes.shapes[(0, 0)];
    let mut load = nalgebra::DVector::zeros(building.dofs());
    load[forced - 1] = forcing_n;
    let x = dtop_dynamics::frf::second_order_response(
        building.mass_matrix(),
        building.damping_matrix(),
        building.stiffness_matrix(),
        &load,
        omega1,
    )
    .ok()?;
    let drift = x[0].norm();
    let a_forced = x[forced - 1].norm();
    let k1 = *building.config().storey_stiffness_n_per_m.first()?;
    let cubic = ((1.0 + DEFAULT_BACKBONE_SHIFT).powi(2) - 1.0) * omega1 * omega1
        / (0.75 * phi1 * phi1 * drift * drift);
    let fastest = modes.omegas_rad_s.iter().copied().fold(0.0_f64, f64::max);
    let all = [omega1, k1, cubic, a_forced, fastest];
    all.iter()
        .all(|v| v.is_finite() && *v > 0.0)
        .then(|| (omega1 / std::f64::consts::TAU, k1, cubic, a_forced, fastest))
}

/// Every problem of `params` on `model`, each under `params.<field>`. The library's own
/// checks run last, on the requests these parameters make, when the fields are sound.
fn problems(model: &ModelSpec, params: &Params) -> Vec<FieldProblem> {
    let floors = model.floors();
    let mut problems = Vec::new();
    let mut positive = |field: &str, v: f64, hint: &str| {
        if !(v.is_finite() && v > 0.0) {
            problems.push(FieldProblem::new(
                format!("params.{field}"),
                format!("{v} must be positive and finite{hint}"),
            ));
        }
    };
    positive("forcing_n", params.forcing_n, "");
    positive("f_min_hz", params.f_min_hz, "");
    positive("cbc_frequency_hz", params.cbc_frequency_hz, "");
    positive("cbc_target_min_m", params.cbc_target_min_m, "");
    positive("max_force_n", params.max_force_n, "");
    positive("max_step", params.max_step, "");
    if params.cubic_n_per_m3.len() != floors {
        problems.push(FieldProblem::new(
            "params.cubic_n_per_m3",
            format!(
                "has {} values; the model has {floors} storeys: give one per storey (0 for none)",
                params.cubic_n_per_m3.len()
            ),
        ));
    }
    for (i, k3) in params.cubic_n_per_m3.iter().enumerate() {
        if !k3.is_finite() {
            problems.push(FieldProblem::new(
                format!("params.cubic_n_per_m3[{i}]"),
                "must be a finite number",
            ));
        }
    }
    for (field, floor) in [
        ("forced_floor", params.forced_floor),
        ("observed_floor", params.observed_floor),
    ] {
        if !(1..=floors).contains(&floor) {
            problems.push(FieldProblem::new(
                format!("params.{field}"),
                format!("floor {floor} does not exist; floors are 1..={floors}"),
            ));
        }
    }
    if !(params.f_max_hz.is_finite() && params.f_max_hz > params.f_min_hz) {
        problems.push(FieldProblem::new(
            "params.f_max_hz",
            format!(
                "{} must be above f_min_hz = {}",
                params.f_max_hz, params.f_min_hz
            ),
        ));
    }
    if !(params.cbc_target_max_m.is_finite() && params.cbc_target_max_m > params.cbc_target_min_m) {
        problems.push(FieldProblem::new(
            "params.cbc_target_max_m",
            format!(
                "{} must be above cbc_target_min_m = {}",
                params.cbc_target_max_m, params.cbc_target_min_m
            ),
        ));
    }
    let mut within = |field: &str, v: usize, lo: usize, hi: usize, hint: &str| {
        if !(lo..=hi).contains(&v) {
            problems.push(FieldProblem::new(
                format!("params.{field}"),
                format!("{v} must be within {lo}..={hi}{hint}"),
            ));
        }
    };
    within("harmonics", params.harmonics, 1, 64, "");
    within("cbc_harmonics", params.cbc_harmonics, 1, 64, "");
    within("max_points", params.max_points, 2, 100_000, "");
    within("cbc_targets", params.cbc_targets, 2, 10_000, "");
    within("sweep_points", params.sweep_points, 2, 10_000, "");
    within("cbc_max_iterations", params.cbc_max_iterations, 1, 1000, "");
    within("measure_periods", params.measure_periods, 1, 10_000, "");
    within("settle_periods", params.settle_periods, 0, 100_000, "");
    within(
        "sweep_max_periods",
        params.sweep_max_periods,
        40,
        1_000_000,
        " (two blocks of 20 periods at least)",
    );
    for (field, v) in [
        ("invasiveness_tolerance", params.invasiveness_tolerance),
        ("sweep_settle_tolerance", params.sweep_settle_tolerance),
    ] {
        if !(v > 0.0 && v < 1.0) {
            problems.push(FieldProblem::new(
                format!("params.{field}"),
                format!("{v} must be within (0, 1)"),
            ));
        }
    }
    for (field, v) in [
        (
            "proportional_gain_n_per_m",
            params.proportional_gain_n_per_m,
        ),
        (
            "derivative_gain_n_s_per_m",
            params.derivative_gain_n_s_per_m,
        ),
        ("displacement_noise_m", params.displacement_noise_m),
        ("velocity_noise_m_s", params.velocity_noise_m_s),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            problems.push(FieldProblem::new(
                format!("params.{field}"),
                format!("{v} must be zero or positive and finite"),
            ));
        }
    }
    if params.proportional_gain_n_per_m == 0.0 && params.derivative_gain_n_s_per_m == 0.0 {
        problems.push(FieldProblem::new(
            "params.proportional_gain_n_per_m",
            "both controller gains are zero: nothing would be controlled; give k_p or k_d",
        ));
    }
    if problems.is_empty() {
        // The library's own rules (sampling against the target's harmonics, its step
        // budgets), phrased in its field names.
        let library = [
            ("params", params.chain_config(model).problems()),
            ("params", params.continuation().problems()),
            ("params", params.cbc(0).problems()),
            ("params", params.sweep().problems()),
        ];
        for (field, found) in library {
            problems.extend(found.into_iter().map(|p| FieldProblem::new(field, p)));
        }
    }
    problems
}

/// Work units: integration steps × DOFs of the CBC runs and the sweeps at their budgets, and
/// the continuations' points × balance unknowns × corrector iterations.
fn work_units(params: &Params, dofs: u64) -> u64 {
    let unknowns = (2 * params.harmonics as u64 + 1) * dofs;
    let continuation = 2 * params.max_points as u64 * unknowns * 10;
    let cbc = params.cbc_targets as u64
        * params.cbc_max_iterations as u64
        * (params.settle_periods + params.measure_periods) as u64
        * params.steps_per_period as u64
        * dofs;
    let sweeps = 2 * params.sweep_points as u64 * params.sweep_max_periods as u64 * 128 * dofs;
    continuation.saturating_add(cbc).saturating_add(sweeps)
}

/// Three chunks (continuation, CBC, sweeps), refused above the budget.
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
    let problems = problems(model, params);
    if !problems.is_empty() {
        return Err(StudyError::Invalid(problems));
    }
    let work_units = work_units(params, building.dofs() as u64);
    if work_units > budget.max_work_units {
        return Err(StudyError::TooLarge {
            work_units,
            max_work_units: budget.max_work_units,
        });
    }
    Ok(Plan {
        chunks: CHUNKS,
        work_units,
    })
}

/// What chunk 0 returns: the branch, or why none was computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContinuationChunk {
    branch: Option<Branch>,
    failure: Option<String>,
}

/// One CBC point as a chunk carries it: JSON has no infinity, so an invasiveness that is not
/// finite (a control force without first harmonic) travels as `None`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CbcPointOut {
    target_amplitude_m: f64,
    omega_rad_s: f64,
    forcing_n: f64,
    amplitude_m: Vec<f64>,
    invasiveness: Option<f64>,
    iterations: usize,
    converged: bool,
}

/// Why the CBC experiment stopped: the library's kind, and the sentence with a suggestion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CbcStopOut {
    kind: String,
    reason: String,
}

/// The CBC experiment as a chunk carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CbcRunOut {
    points: Vec<CbcPointOut>,
    stop: CbcStopOut,
}

impl CbcRunOut {
    fn new(run: &CbcRun) -> Self {
        let kind = match run.stop {
            CbcStop::Completed => "completed",
            CbcStop::NotConverged { .. } => "not_converged",
            CbcStop::ForceLimit { .. } => "force_limit",
            CbcStop::Diverged { .. } => "diverged",
        };
        Self {
            points: run
                .points
                .iter()
                .map(|p| CbcPointOut {
                    target_amplitude_m: p.target_amplitude_m,
                    omega_rad_s: p.omega_rad_s,
                    forcing_n: p.forcing_n,
                    amplitude_m: p.amplitude_m.clone(),
                    invasiveness: p.invasiveness.is_finite().then_some(p.invasiveness),
                    iterations: p.iterations,
                    converged: p.converged,
                })
                .collect(),
            stop: CbcStopOut {
                kind: kind.to_owned(),
                reason: cbc_stop_text(&run.stop),
            },
        }
    }
}

/// What chunk 1 returns: the CBC run and its reference, or why they are missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CbcChunk {
    run: Option<CbcRunOut>,
    failure: Option<String>,
    reference: Option<Branch>,
    reference_failure: Option<String>,
}

/// What chunk 2 returns: both sweeps, or why they are missing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepChunk {
    sweep: Option<OpenLoopSweep>,
    failure: Option<String>,
}

fn to_value<T: Serialize>(value: &T) -> Result<serde_json::Value, StudyError> {
    serde_json::to_value(value).map_err(|e| StudyError::Numerics(e.to_string()))
}

fn from_value<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    part: &str,
) -> Result<T, StudyError> {
    serde_json::from_value(value.clone())
        .map_err(|e| StudyError::BadChunk(format!("cbc {part} chunk: {e}")))
}

/// Computes one part. A part that fails after the study was planned returns its reason as
/// data, so the others still make a result.
///
/// # Errors
/// [`StudyError::Cancelled`]; [`StudyError::Invalid`] for a bad model or chunk number.
pub fn run_chunk(
    model: &ModelSpec,
    params: &Params,
    seed: u64,
    chunk: u32,
    ctx: &ChunkCtx<'_>,
    _inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    ctx.check()?;
    let chain = NonlinearChain::new(params.chain_config(model)).map_err(|e| {
        StudyError::Invalid(vec![FieldProblem::new("model.structure", e.to_string())])
    })?;
    let out = match chunk {
        CONTINUATION_CHUNK => {
            let (branch, failure) = match continue_branch(&chain, &params.continuation()) {
                Ok(b) => (Some(b), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "{e}; try another f_min_hz (the branch starts there) or fewer harmonics"
                    )),
                ),
            };
            to_value(&ContinuationChunk { branch, failure })?
        }
        CBC_CHUNK => {
            let (run, failure) = match run_cbc(&chain, &params.cbc(chunk_seed(seed, chunk))) {
                Ok(r) => (Some(CbcRunOut::new(&r)), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "{e}; try more steps_per_period, lower gains or a higher cbc_frequency_hz"
                    )),
                ),
            };
            ctx.check()?;
            let largest = run.as_ref().map_or(0.0, |r| {
                r.points.iter().fold(0.0_f64, |m, p| m.max(p.forcing_n))
            });
            let (reference, reference_failure) = if largest > 0.0 {
                match continue_branch(&chain, &params.reference(REFERENCE_FORCE_MARGIN * largest)) {
                    Ok(b) => (Some(b), None),
                    Err(e) => (None, Some(e.to_string())),
                }
            } else {
                (
                    None,
                    Some("no CBC point was measured, so there is nothing to compare".to_owned()),
                )
            };
            to_value(&CbcChunk {
                run,
                failure,
                reference,
                reference_failure,
            })?
        }
        SWEEP_CHUNK => {
            let (sweep, failure) = match open_loop_sweep(&chain, &params.sweep()) {
                Ok(s) => (Some(s), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "{e}; try fewer sweep_points or sweep_max_periods, or a higher f_min_hz"
                    )),
                ),
            };
            to_value(&SweepChunk { sweep, failure })?
        }
        other => {
            return Err(StudyError::Invalid(vec![FieldProblem::new(
                "chunk",
                format!("cbc has chunks 0..{CHUNKS}, not {other}"),
            )]));
        }
    };
    Ok(out)
}

fn column(name: &str, values: Vec<f64>) -> Column {
    Column {
        name: name.to_owned(),
        values,
    }
}

fn hz(omega_rad_s: f64) -> f64 {
    omega_rad_s / std::f64::consts::TAU
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn stop_text(stop: &StopReason) -> String {
    match stop {
        StopReason::ReachedEnd => "reached the end of the range".to_owned(),
        StopReason::ReturnedToStart => {
            "the branch turned back to the start of the range".to_owned()
        }
        StopReason::MaxPoints => {
            "the point budget ran out (partial curve): raise params.max_points or params.max_step"
                .to_owned()
        }
        StopReason::LostBranch {
            omega_rad_s,
            forcing_n,
            reason,
        } => format!(
            "lost the branch at {:.6} Hz, {forcing_n} N ({reason}); the curve up to there is kept: \
             try fewer harmonics or a smaller params.max_step",
            hz(*omega_rad_s)
        ),
    }
}

fn cbc_stop_text(stop: &CbcStop) -> String {
    match stop {
        CbcStop::Completed => "every target converged".to_owned(),
        CbcStop::NotConverged {
            target_amplitude_m,
            invasiveness,
        } => format!(
            "the target {target_amplitude_m} m did not converge within \
             params.cbc_max_iterations (invasiveness {invasiveness:.3e}); the points before it \
             are kept: raise params.cbc_max_iterations or params.invasiveness_tolerance"
        ),
        CbcStop::ForceLimit {
            target_amplitude_m,
            force_n,
        } => format!(
            "the controller asked for {force_n:.4} N at target {target_amplitude_m} m, beyond the \
             actuator's limit params.max_force_n; the points before it are kept: lower \
             params.cbc_target_max_m or raise the limit"
        ),
        CbcStop::Diverged { target_amplitude_m } => format!(
            "the simulated experiment diverged at target {target_amplitude_m} m; the points \
             before it are kept: try lower gains or more steps_per_period"
        ),
    }
}

/// The forcing of `branch` where the forced floor's amplitude is `a`, by linear interpolation
/// between its points (the amplitude increases along a forcing-amplitude branch); `None` when
/// `a` is outside the branch.
fn forcing_at_amplitude(branch: &Branch, forced: usize, a: f64) -> Option<f64> {
    branch.points.windows(2).find_map(|w| {
        let (a0, a1) = (w[0].amplitude_m[forced], w[1].amplitude_m[forced]);
        ((a0 - a) * (a1 - a) <= 0.0 && a0 != a1).then(|| {
            let t = (a - a0) / (a1 - a0);
            w[0].forcing_n + t * (w[1].forcing_n - w[0].forcing_n)
        })
    })
}

/// Indices of the CBC points where the forcing turns along the targets (a local maximum or
/// minimum between two neighbours): the folds as the experiment sees them, to the spacing
/// of its targets.
fn local_extremes(points: &[CbcPointOut]) -> Vec<usize> {
    (1..points.len().saturating_sub(1))
        .filter(|&i| {
            let (a, b, c) = (
                points[i - 1].forcing_n,
                points[i].forcing_n,
                points[i + 1].forcing_n,
            );
            (b > a && b >= c) || (b < a && b <= c)
        })
        .collect()
}

/// The frequencies (Hz) between which a sweep's amplitude changes most, by ratio.
fn largest_jump(points: &[dtop_nonlinear::SweepPoint], observed: usize) -> Option<(f64, f64, f64)> {
    points
        .windows(2)
        .map(|w| {
            let (a0, a1) = (w[0].amplitude_m[observed], w[1].amplitude_m[observed]);
            let ratio = a0.max(a1) / a0.min(a1).max(f64::MIN_POSITIVE);
            (hz(w[0].omega_rad_s), hz(w[1].omega_rad_s), ratio)
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
}

/// Arrays and summary from the three parts; an error only when no part computed anything.
///
/// # Errors
/// [`StudyError::BadChunk`] for outputs that are not this kind's; [`StudyError::Numerics`]
/// with every part's reason when none computed anything.
pub fn reduce(
    _model: &ModelSpec,
    params: &Params,
    _seed: u64,
    chunks: &[serde_json::Value],
    _inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    let [continuation, cbc, sweep] = chunks else {
        return Err(StudyError::BadChunk(format!(
            "cbc has {CHUNKS} chunks, got {}",
            chunks.len()
        )));
    };
    let continuation: ContinuationChunk = from_value(continuation, "continuation")?;
    let cbc: CbcChunk = from_value(cbc, "CBC")?;
    let sweep: SweepChunk = from_value(sweep, "sweep")?;
    let observed = params.observed_floor - 1;
    let forced = params.forced_floor - 1;
    let mut arrays = Vec::new();
    let mut stops = Vec::new();
    let mut summary = serde_json::Map::new();

    if let Some(branch) = &continuation.branch {
        arrays.push(NamedArray {
            name: "response_curve".to_owned(),
            columns: vec![
                column(
                    "frequency_hz",
                    branch.points.iter().map(|p| hz(p.omega_rad_s)).collect(),
                ),
                column(
                    "amplitude_m",
                    branch
                        .points
                        .iter()
                        .map(|p| p.amplitude_m[observed])
                        .collect(),
                ),
                column(
                    "stable",
                    branch
                        .points
                        .iter()
                        .map(|p| flag(p.stable.unwrap_or(false)))
                        .collect(),
                ),
            ],
        });
        let folds: Vec<_> = branch
            .folds
            .iter()
            .map(|f| {
                json!({
                    "frequency_hz": hz(f.omega_rad_s),
                    "amplitude_m": f.amplitude_m[observed],
                    "located": f.located,
                })
            })
            .collect();
        summary.insert("folds".into(), json!(folds));
        summary.insert("response_curve_points".into(), json!(branch.points.len()));
        stops.push(json!({ "part": "continuation", "reason": stop_text(&branch.stop) }));
    } else {
        summary.insert("folds".into(), json!([]));
    }
    if let Some(reason) = &continuation.failure {
        stops.push(json!({ "part": "continuation", "reason": reason }));
    }

    let mut cbc_summary = serde_json::Map::new();
    cbc_summary.insert("frequency_hz".into(), json!(params.cbc_frequency_hz));
    if let Some(run) = &cbc.run {
        let distances: Vec<Option<f64>> = run
            .points
            .iter()
            .map(|p| {
                let reference = cbc.reference.as_ref()?;
                let f = forcing_at_amplitude(reference, forced, p.amplitude_m[forced])?;
                Some((p.forcing_n - f).abs() / f)
            })
            .collect();
        let mut columns = vec![
            column(
                "frequency_hz",
                run.points.iter().map(|p| hz(p.omega_rad_s)).collect(),
            ),
            column(
                "amplitude_m",
                run.points.iter().map(|p| p.amplitude_m[observed]).collect(),
            ),
            column(
                "forced_amplitude_m",
                run.points.iter().map(|p| p.amplitude_m[forced]).collect(),
            ),
            column(
                "target_amplitude_m",
                run.points.iter().map(|p| p.target_amplitude_m).collect(),
            ),
            column(
                "forcing_n",
                run.points.iter().map(|p| p.forcing_n).collect(),
            ),
            column(
                "iterations",
                run.points.iter().map(|p| p.iterations as f64).collect(),
            ),
        ];
        let invasiveness: Option<Vec<f64>> = run.points.iter().map(|p| p.invasiveness).collect();
        if let Some(invasiveness) = invasiveness {
            columns.push(column(
                "higher_harmonics_n",
                run.points
                    .iter()
                    .zip(&invasiveness)
                    .map(|(p, i)| i * p.forcing_n)
                    .collect(),
            ));
            columns.push(column("invasiveness", invasiveness));
        }
        columns.extend([column(
            "converged",
            run.points.iter().map(|p| flag(p.converged)).collect(),
        )]);
        if let Some(all) = distances.iter().copied().collect::<Option<Vec<f64>>>() {
            columns.push(column("distance_ratio", all));
        }
        arrays.push(NamedArray {
            name: "cbc_points".to_owned(),
            columns,
        });
        let cbc_folds: Vec<_> = local_extremes(&run.points)
            .into_iter()
            .map(|i| {
                json!({
                    "forcing_n": run.points[i].forcing_n,
                    "amplitude_m": run.points[i].amplitude_m[forced],
                })
            })
            .collect();
        let measured: Vec<f64> = distances.iter().flatten().copied().collect();
        cbc_summary.insert("points".into(), json!(run.points.len()));
        cbc_summary.insert(
            "converged_points".into(),
            json!(run.points.iter().filter(|p| p.converged).count()),
        );
        cbc_summary.insert("folds".into(), json!(cbc_folds));
        cbc_summary.insert("distance_ratios".into(), json!(distances));
        cbc_summary.insert(
            "max_distance_ratio".into(),
            json!(
                measured
                    .iter()
                    .copied()
                    .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))))
            ),
        );
        cbc_summary.insert("stop".into(), json!({ "kind": run.stop.kind }));
        stops.push(json!({ "part": "cbc", "reason": run.stop.reason }));
    }
    if let Some(reason) = &cbc.failure {
        stops.push(json!({ "part": "cbc", "reason": reason }));
    }
    if let Some(reference) = &cbc.reference {
        arrays.push(NamedArray {
            name: "cbc_reference".to_owned(),
            columns: vec![
                column(
                    "forcing_n",
                    reference.points.iter().map(|p| p.forcing_n).collect(),
                ),
                column(
                    "amplitude_m",
                    reference
                        .points
                        .iter()
                        .map(|p| p.amplitude_m[forced])
                        .collect(),
                ),
                column(
                    "stable",
                    reference
                        .points
                        .iter()
                        .map(|p| flag(p.stable.unwrap_or(false)))
                        .collect(),
                ),
            ],
        });
        let folds: Vec<_> = reference
            .folds
            .iter()
            .map(|f| json!({ "forcing_n": f.forcing_n, "amplitude_m": f.amplitude_m[forced] }))
            .collect();
        cbc_summary.insert("reference_folds".into(), json!(folds));
        stops.push(json!({ "part": "cbc_reference", "reason": stop_text(&reference.stop) }));
    }
    if let Some(reason) = &cbc.reference_failure {
        stops.push(json!({ "part": "cbc_reference", "reason": reason }));
    }
    summary.insert("cbc".into(), serde_json::Value::Object(cbc_summary));

    if let Some(s) = &sweep.sweep {
        let mut sweeps = serde_json::Map::new();
        for (name, points) in [("sweep_up", &s.up), ("sweep_down", &s.down)] {
            arrays.push(NamedArray {
                name: name.to_owned(),
                columns: vec![
                    column(
                        "frequency_hz",
                        points.iter().map(|p| hz(p.omega_rad_s)).collect(),
                    ),
                    column(
                        "amplitude_m",
                        points.iter().map(|p| p.amplitude_m[observed]).collect(),
                    ),
                    column("periods", points.iter().map(|p| p.periods as f64).collect()),
                    column("settled", points.iter().map(|p| flag(p.settled)).collect()),
                ],
            });
            let unsettled = points.iter().filter(|p| !p.settled).count();
            let jump = largest_jump(points, observed)
                .map(|(f0, f1, ratio)| json!({ "between_hz": [f0, f1], "amplitude_ratio": ratio }));
            sweeps.insert(
                name.into(),
                json!({ "largest_jump": jump, "unsettled_points": unsettled }),
            );
            if unsettled > 0 {
                stops.push(json!({
                    "part": name,
                    "reason": format!(
                        "{unsettled} points had not settled within params.sweep_max_periods; \
                         they show the last period: raise sweep_max_periods"
                    ),
                }));
            }
        }
        summary.insert("sweeps".into(), serde_json::Value::Object(sweeps));
    }
    if let Some(reason) = &sweep.failure {
        stops.push(json!({ "part": "sweeps", "reason": reason }));
    }
    summary.insert("stops".into(), json!(stops));

    if arrays.is_empty() {
        let reasons: Vec<String> = stops
            .iter()
            .filter_map(|s| s["reason"].as_str().map(str::to_owned))
            .collect();
        return Err(StudyError::Numerics(format!(
            "no part of the cbc study computed anything: {}",
            reasons.join("; ")
        )));
    }
    Ok(StudyOutput::new(serde_json::Value::Object(summary), arrays))
}

#[cfg(test)]
mod tests;
