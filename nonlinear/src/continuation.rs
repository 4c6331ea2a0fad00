//! Owns pseudo-arclength continuation of harmonic-balance solutions in the forcing frequency
//! or the forcing amplitude: the request and its validation, the tangent predictor, the
//! corrector with the arclength constraint, step-size control, stop conditions, stability
//! of every point and the location of folds. Also the single-point solve at a fixed forcing.
//!
//! Arclength is measured in scaled unknowns, so that displacements (m) and the parameter
//! (rad/s or N) weigh alike: coefficients are divided by `x_ref`, the largest linear
//! response amplitude over the range, and the parameter by the length of its range. Steps
//! (`initial_step`, `min_step`, `max_step`) are in these scaled units.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::error::NonlinearError;
use crate::floquet::{floquet_multipliers, max_modulus};
use crate::harmonic::{
    Balance, DofHarmonics, HarmonicBasis, balance, dof_harmonics, linear_guess, max_abs,
    solve_fixed,
};
use crate::model::NonlinearChain;

/// Most harmonics a request may keep: the Jacobian grows as (2H + 1)², and beyond this the
/// truncation is not what limits accuracy.
pub const MAX_HARMONICS: usize = 64;
/// Most points a continuation may be asked for.
pub const MAX_POINTS: usize = 100_000;
/// Corrector iterations per step before the step is halved.
const CORRECTOR_MAX_ITERATIONS: usize = 10;
/// Corrector iterations at or below which the next step grows.
const FAST_CORRECTOR: usize = 3;
/// Corrector iterations at or above which the next step shrinks.
const SLOW_CORRECTOR: usize = 6;
/// Largest turn of the tangent between two accepted points, in radians: sharper turns are
/// refused and the step halved, so the corrector cannot jump to a neighbouring branch.
const MAX_TURN_RAD: f64 = 0.35;
/// Bisection (Illinois) iterations allowed when locating a fold.
const FOLD_MAX_ITERATIONS: usize = 60;
/// Step below which the Newton update is rounding noise: the iterate cannot improve.
const ROUNDING_STEP: f64 = 1e-13;

/// Default number of harmonics.
pub const fn default_harmonics() -> usize {
    5
}
/// Default first step, in scaled arclength.
pub const fn default_initial_step() -> f64 {
    0.01
}
/// Default smallest step before the continuation gives up, in scaled arclength.
pub const fn default_min_step() -> f64 {
    1e-7
}
/// Default largest step, in scaled arclength.
pub const fn default_max_step() -> f64 {
    0.05
}
/// Default budget of points.
pub const fn default_max_points() -> usize {
    5_000
}
/// Default residual tolerance, relative to the largest forcing of the run.
pub const fn default_tolerance() -> f64 {
    1e-10
}

/// By default every point gets its stability.
pub const fn default_stability() -> bool {
    true
}

/// Which forcing parameter varies, and over what range (it must increase).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "parameter", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sweep {
    /// The forcing frequency varies at a fixed amplitude.
    Frequency {
        /// First frequency, where the branch starts, in rad/s; positive.
        start_rad_s: f64,
        /// Last frequency, in rad/s; above `start_rad_s`.
        end_rad_s: f64,
        /// Forcing amplitude F, in N; positive.
        forcing_n: f64,
    },
    /// The forcing amplitude varies at a fixed frequency.
    Amplitude {
        /// First amplitude, in N; zero or positive.
        start_n: f64,
        /// Last amplitude, in N; above `start_n`.
        end_n: f64,
        /// Forcing frequency ω, in rad/s; positive.
        omega_rad_s: f64,
    },
}

impl Sweep {
    /// (start, end) of the varying parameter.
    pub(crate) fn range(&self) -> (f64, f64) {
        match *self {
            Self::Frequency {
                start_rad_s,
                end_rad_s,
                ..
            } => (start_rad_s, end_rad_s),
            Self::Amplitude { start_n, end_n, .. } => (start_n, end_n),
        }
    }

    /// (ω, F) at parameter value `lambda`.
    pub(crate) fn forcing(&self, lambda: f64) -> (f64, f64) {
        match *self {
            Self::Frequency { forcing_n, .. } => (lambda, forcing_n),
            Self::Amplitude { omega_rad_s, .. } => (omega_rad_s, lambda),
        }
    }

    /// Largest forcing amplitude of the run, the scale of residual tolerances.
    fn force_scale_n(&self) -> f64 {
        match *self {
            Self::Frequency { forcing_n, .. } => forcing_n.abs(),
            Self::Amplitude { start_n, end_n, .. } => start_n.abs().max(end_n.abs()),
        }
    }

    pub(crate) fn problems(&self, problems: &mut Vec<String>) {
        let (start, end, start_name, end_name) = match self {
            Self::Frequency {
                start_rad_s,
                end_rad_s,
                forcing_n,
            } => {
                if !(forcing_n.is_finite() && *forcing_n > 0.0) {
                    problems.push(format!(
                        "sweep.forcing_n = {forcing_n} must be positive and finite"
                    ));
                }
                if !(start_rad_s.is_finite() && *start_rad_s > 0.0) {
                    problems.push(format!(
                        "sweep.start_rad_s = {start_rad_s} must be positive and finite"
                    ));
                }
                (*start_rad_s, *end_rad_s, "start_rad_s", "end_rad_s")
            }
            Self::Amplitude {
                start_n,
                end_n,
                omega_rad_s,
            } => {
                if !(omega_rad_s.is_finite() && *omega_rad_s > 0.0) {
                    problems.push(format!(
                        "sweep.omega_rad_s = {omega_rad_s} must be positive and finite"
                    ));
                }
                if !(start_n.is_finite() && *start_n >= 0.0) {
                    problems.push(format!(
                        "sweep.start_n = {start_n} must be zero or positive and finite"
                    ));
                }
                (*start_n, *end_n, "start_n", "end_n")
            }
        };
        if !end.is_finite() {
            problems.push(format!("sweep.{end_name} = {end} must be finite"));
        } else if end <= start {
            problems.push(format!(
                "sweep.{end_name} = {end} must be above sweep.{start_name} = {start}: the \
                 range must increase"
            ));
        }
    }
}

/// A continuation request: what varies, how many harmonics, and the step controls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinuationConfig {
    /// The varying parameter and its range.
    pub sweep: Sweep,
    /// H, harmonics kept in the balance, 1..=`MAX_HARMONICS`. One harmonic gives the
    /// classical first-order approximation.
    #[serde(default = "default_harmonics")]
    pub harmonics: usize,
    /// First step, in scaled arclength (see the module docs).
    #[serde(default = "default_initial_step")]
    pub initial_step: f64,
    /// Smallest step: when a step this short fails the branch is declared lost.
    #[serde(default = "default_min_step")]
    pub min_step: f64,
    /// Largest step.
    #[serde(default = "default_max_step")]
    pub max_step: f64,
    /// Most points on the branch, the starting point included, 2..=`MAX_POINTS`.
    #[serde(default = "default_max_points")]
    pub max_points: usize,
    /// Newton converges when every residual entry is below this times the largest forcing
    /// amplitude of the run; within (0, 1e-3].
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Compute every point's Floquet multipliers (stability). They are the costliest part
    /// of a continuation (a monodromy matrix per point); folds are found without them.
    #[serde(default = "default_stability")]
    pub stability: bool,
}

impl ContinuationConfig {
    /// A request with default step controls and `harmonics` harmonics.
    pub fn new(sweep: Sweep, harmonics: usize) -> Self {
        Self {
            sweep,
            harmonics,
            initial_step: default_initial_step(),
            min_step: default_min_step(),
            max_step: default_max_step(),
            max_points: default_max_points(),
            tolerance: default_tolerance(),
            stability: default_stability(),
        }
    }

    /// Every rule this request breaks, as sentences; empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.sweep.problems(&mut problems);
        if !(1..=MAX_HARMONICS).contains(&self.harmonics) {
            problems.push(format!(
                "harmonics = {} must be within 1..={MAX_HARMONICS}",
                self.harmonics
            ));
        }
        for (name, value) in [
            ("initial_step", self.initial_step),
            ("min_step", self.min_step),
            ("max_step", self.max_step),
        ] {
            if !(value.is_finite() && value > 0.0) {
                problems.push(format!("{name} = {value} must be positive and finite"));
            }
        }
        if !(self.min_step <= self.initial_step && self.initial_step <= self.max_step) {
            problems.push(format!(
                "steps must satisfy min_step ≤ initial_step ≤ max_step, got {} ≤ {} ≤ {}",
                self.min_step, self.initial_step, self.max_step
            ));
        }
        if !(2..=MAX_POINTS).contains(&self.max_points) {
            problems.push(format!(
                "max_points = {} must be within 2..={MAX_POINTS}",
                self.max_points
            ));
        }
        if !(self.tolerance > 0.0 && self.tolerance <= 1e-3) {
            problems.push(format!(
                "tolerance = {} must be within (0, 1e-3]",
                self.tolerance
            ));
        }
        problems
    }
}

/// One periodic steady state: the forcing, the response's harmonics and its stability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodicResponse {
    /// Forcing frequency ω, in rad/s.
    pub omega_rad_s: f64,
    /// Forcing amplitude F, in N.
    pub forcing_n: f64,
    /// First-harmonic amplitude √(a₁² + b₁²) of each DOF, in m.
    pub amplitude_m: Vec<f64>,
    /// Peak-to-peak displacement of each DOF over one period, in m.
    pub peak_to_peak_m: Vec<f64>,
    /// Fourier coefficients of each DOF's displacement.
    pub harmonics: Vec<DofHarmonics>,
    /// True when every Floquet multiplier lies strictly inside the unit circle; `None` when
    /// the continuation was asked not to compute stability.
    pub stable: Option<bool>,
    /// Largest modulus of the Floquet multipliers; `None` as for `stable`.
    pub max_floquet_modulus: Option<f64>,
}

/// A limit point of the branch: the varying parameter turns back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fold {
    /// Forcing frequency at the fold, in rad/s.
    pub omega_rad_s: f64,
    /// Forcing amplitude at the fold, in N.
    pub forcing_n: f64,
    /// First-harmonic amplitude of each DOF at the fold, in m.
    pub amplitude_m: Vec<f64>,
    /// The fold lies between branch points `after_point` and `after_point + 1`.
    pub after_point: usize,
    /// True when the fold was located to rounding (the parameter's tangent component is
    /// zero there); false when only the bracketing pair of points is known and the values
    /// above are interpolated between them.
    pub located: bool,
}

/// Why a continuation stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StopReason {
    /// The parameter reached the end of its range; the last point lies exactly on it.
    ReachedEnd,
    /// The branch turned back and left the range at its start; the last point lies on it.
    ReturnedToStart,
    /// The point budget ran out.
    MaxPoints,
    /// The corrector failed even with the smallest step: the branch is lost there.
    LostBranch {
        /// Frequency of the last point, in rad/s.
        omega_rad_s: f64,
        /// Forcing of the last point, in N.
        forcing_n: f64,
        /// What failed.
        reason: String,
    },
}

/// A continued branch of periodic responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// The request's sweep, echoed.
    pub sweep: Sweep,
    /// Harmonics kept.
    pub harmonics: usize,
    /// Points in arclength order, the starting point first.
    pub points: Vec<PeriodicResponse>,
    /// Folds in arclength order.
    pub folds: Vec<Fold>,
    /// Why the continuation stopped.
    pub stop: StopReason,
}

/// The periodic response at one forcing, by Newton's method from the linear response.
/// Meant for forcings where the response is single-valued or the linear guess is close;
/// for a chosen branch start from a neighbouring solution with [`periodic_response_near`].
///
/// # Errors
/// [`NonlinearError::Invalid`] for bad arguments (every problem listed);
/// [`NonlinearError::CannotStart`] when Newton's method fails.
pub fn periodic_response(
    chain: &NonlinearChain,
    harmonics: usize,
    omega_rad_s: f64,
    forcing_n: f64,
) -> Result<PeriodicResponse, NonlinearError> {
    point_problems(harmonics, omega_rad_s, forcing_n)?;
    let basis = HarmonicBasis::new(chain, harmonics);
    let guess = linear_guess(chain, &basis, omega_rad_s, forcing_n).ok_or_else(|| {
        NonlinearError::CannotStart {
            omega_rad_s,
            forcing_n,
            reason: "the linear chain is singular at this frequency".into(),
        }
    })?;
    solve_point(chain, &basis, guess, omega_rad_s, forcing_n)
}

/// The periodic response at one forcing, by Newton's method from a known response `near`
/// (of the same chain and number of harmonics).
///
/// # Errors
/// As [`periodic_response`], and [`NonlinearError::Invalid`] if `near` does not fit.
pub fn periodic_response_near(
    chain: &NonlinearChain,
    near: &PeriodicResponse,
    omega_rad_s: f64,
    forcing_n: f64,
) -> Result<PeriodicResponse, NonlinearError> {
    let harmonics = near.harmonics.first().map_or(0, |d| d.cos_m.len());
    point_problems(harmonics, omega_rad_s, forcing_n)?;
    let basis = HarmonicBasis::new(chain, harmonics);
    if near.harmonics.len() != chain.dofs()
        || near
            .harmonics
            .iter()
            .any(|d| d.cos_m.len() != harmonics || d.sin_m.len() != harmonics)
    {
        return Err(NonlinearError::Invalid(vec![format!(
            "the guess must have {} DOFs of {harmonics} harmonics each",
            chain.dofs()
        )]));
    }
    let mut guess = DVector::zeros(basis.len());
    for (d, h) in near.harmonics.iter().enumerate() {
        guess[basis.index(d, 0)] = h.mean_m;
        for k in 1..=harmonics {
            guess[basis.index(d, 2 * k - 1)] = h.cos_m[k - 1];
            guess[basis.index(d, 2 * k)] = h.sin_m[k - 1];
        }
    }
    solve_point(chain, &basis, guess, omega_rad_s, forcing_n)
}

fn point_problems(
    harmonics: usize,
    omega_rad_s: f64,
    forcing_n: f64,
) -> Result<(), NonlinearError> {
    let mut problems = Vec::new();
    if !(1..=MAX_HARMONICS).contains(&harmonics) {
        problems.push(format!(
            "harmonics = {harmonics} must be within 1..={MAX_HARMONICS}"
        ));
    }
    if !(omega_rad_s.is_finite() && omega_rad_s > 0.0) {
        problems.push(format!(
            "omega_rad_s = {omega_rad_s} must be positive and finite"
        ));
    }
    if !forcing_n.is_finite() {
        problems.push(format!("forcing_n = {forcing_n} must be finite"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(NonlinearError::Invalid(problems))
    }
}

fn solve_point(
    chain: &NonlinearChain,
    basis: &HarmonicBasis,
    guess: DVector<f64>,
    omega_rad_s: f64,
    forcing_n: f64,
) -> Result<PeriodicResponse, NonlinearError> {
    let tolerance_n = default_tolerance() * forcing_n.abs().max(f64::MIN_POSITIVE);
    let z = solve_fixed(chain, basis, guess, omega_rad_s, forcing_n, tolerance_n).map_err(
        |failure| NonlinearError::CannotStart {
            omega_rad_s,
            forcing_n,
            reason: failure.to_string(),
        },
    )?;
    response(chain, basis, &z, omega_rad_s, forcing_n, true)
}

/// Read-outs and, when asked, stability of the solution `z`.
fn response(
    chain: &NonlinearChain,
    basis: &HarmonicBasis,
    z: &DVector<f64>,
    omega_rad_s: f64,
    forcing_n: f64,
    stability: bool,
) -> Result<PeriodicResponse, NonlinearError> {
    let harmonics = dof_harmonics(basis, z);
    let max_floquet_modulus = if stability {
        Some(max_modulus(&floquet_multipliers(
            chain,
            &harmonics,
            omega_rad_s,
        )?))
    } else {
        None
    };
    Ok(PeriodicResponse {
        omega_rad_s,
        forcing_n,
        amplitude_m: harmonics.iter().map(|h| h.amplitude_m(1)).collect(),
        peak_to_peak_m: harmonics.iter().map(DofHarmonics::peak_to_peak_m).collect(),
        harmonics,
        stable: max_floquet_modulus.map(|m| m < 1.0),
        max_floquet_modulus,
    })
}

/// The continuation's working state: the chain, the basis, the sweep and the scaling.
struct Tracer<'a> {
    chain: &'a NonlinearChain,
    basis: HarmonicBasis,
    sweep: Sweep,
    /// Weight of a coefficient in the arclength norm, 1/x_ref².
    weight_x: f64,
    /// Weight of the parameter, 1/λ_ref².
    weight_lambda: f64,
    /// Residual tolerance, in N.
    tolerance_n: f64,
    /// Whether every point gets its Floquet multipliers.
    stability: bool,
}

/// A point of the augmented unknown [coefficients; λ] with its unit tangent.
#[derive(Debug, Clone)]
struct Node {
    z: DVector<f64>,
    tangent: DVector<f64>,
}

impl Tracer<'_> {
    fn len(&self) -> usize {
        self.basis.len() + 1
    }

    fn lambda(&self, z: &DVector<f64>) -> f64 {
        z[self.basis.len()]
    }

    fn evaluate(&self, z: &DVector<f64>, with_jacobian: bool) -> Balance {
        let coefficients = z.rows(0, self.basis.len()).into_owned();
        let (omega, forcing) = self.sweep.forcing(self.lambda(z));
        balance(
            self.chain,
            &self.basis,
            &coefficients,
            omega,
            forcing,
            with_jacobian,
        )
    }

    /// W·v, the weighted vector of the arclength inner product.
    fn weighted(&self, v: &DVector<f64>) -> DVector<f64> {
        let mut w = v * self.weight_x;
        let last = self.basis.len();
        w[last] = v[last] * self.weight_lambda;
        w
    }

    fn norm(&self, v: &DVector<f64>) -> f64 {
        v.dot(&self.weighted(v)).sqrt()
    }

    /// [J_x | ∂R/∂λ] with one more row, `border`ᵀ.
    fn bordered(&self, b: Balance, border: &DVector<f64>) -> Option<DMatrix<f64>> {
        let n = self.basis.len();
        let jx = b.jacobian?;
        let d_lambda = match self.sweep {
            Sweep::Frequency { .. } => b.d_omega,
            Sweep::Amplitude { .. } => b.d_forcing,
        };
        let mut a = DMatrix::zeros(n + 1, n + 1);
        a.view_mut((0, 0), (n, n)).copy_from(&jx);
        a.view_mut((0, n), (n, 1)).copy_from(&d_lambda);
        a.view_mut((n, 0), (1, n + 1))
            .copy_from(&border.transpose());
        Some(a)
    }

    /// Unit tangent at `z`, oriented along `previous` (positive weighted inner product).
    fn tangent(&self, z: &DVector<f64>, previous: &DVector<f64>) -> Option<DVector<f64>> {
        let border = self.weighted(previous);
        let a = self.bordered(self.evaluate(z, true), &border)?;
        let mut rhs = DVector::zeros(self.len());
        rhs[self.len() - 1] = 1.0;
        let t = a.lu().solve(&rhs)?;
        let norm = self.norm(&t);
        (norm.is_finite() && norm > 0.0).then(|| t / norm)
    }

    /// Newton's method on R(z) = 0 with the pseudo-arclength constraint
    /// ⟨t, z − z₀⟩_W = s. Returns the point and the iterations it took.
    fn correct(&self, from: &Node, step: f64) -> Result<(DVector<f64>, usize), String> {
        let border = self.weighted(&from.tangent);
        let mut z = &from.z + &from.tangent * step;
        for iteration in 1..=CORRECTOR_MAX_ITERATIONS {
            let b = self.evaluate(&z, true);
            let r = max_abs(&b.residual);
            if !r.is_finite() {
                return Err("the residual became non-finite".into());
            }
            let constraint = border.dot(&(&z - &from.z)) - step;
            let mut rhs = DVector::zeros(self.len());
            rhs.rows_mut(0, self.basis.len()).copy_from(&b.residual);
            rhs[self.len() - 1] = constraint;
            let a = self
                .bordered(b, &border)
                .ok_or_else(|| "no Jacobian".to_string())?;
            let update = a
                .lu()
                .solve(&rhs)
                .ok_or_else(|| "the bordered Jacobian is singular".to_string())?;
            z -= &update;
            if z.iter().any(|v| !v.is_finite()) {
                return Err("the corrector diverged".into());
            }
            if r <= self.tolerance_n || self.norm(&update) <= ROUNDING_STEP {
                return Ok((z, iteration));
            }
        }
        Err(format!(
            "the corrector did not converge in {CORRECTOR_MAX_ITERATIONS} iterations"
        ))
    }

    /// A step from `from`: the corrected node and the corrector's iteration count, or why
    /// the step was refused.
    fn step(&self, from: &Node, step: f64) -> Result<(Node, usize), String> {
        let (z, iterations) = self.correct(from, step)?;
        let tangent = self
            .tangent(&z, &from.tangent)
            .ok_or_else(|| "the tangent system is singular".to_string())?;
        let turn = self
            .weighted(&from.tangent)
            .dot(&tangent)
            .clamp(-1.0, 1.0)
            .acos();
        if turn > MAX_TURN_RAD {
            return Err(format!("the tangent turned by {turn:.3} rad"));
        }
        Ok((Node { z, tangent }, iterations))
    }

    /// Locates the fold between `from` and a node one step `step` further whose tangent's
    /// parameter component has the opposite sign, by the Illinois method on the step length.
    fn locate_fold(&self, from: &Node, step: f64) -> Option<DVector<f64>> {
        let last = self.basis.len();
        let g = |s: f64| -> Option<(DVector<f64>, f64)> {
            let (z, _) = self.correct(from, s).ok()?;
            let t = self.tangent(&z, &from.tangent)?;
            Some((z, t[last]))
        };
        let (mut lo, mut g_lo) = (0.0, from.tangent[last]);
        let (mut hi, mut g_hi) = (step, g(step)?.1);
        if g_lo * g_hi > 0.0 {
            return None;
        }
        let mut side = 0_i32;
        let mut best = None;
        for _ in 0..FOLD_MAX_ITERATIONS {
            let s = (lo * g_hi - hi * g_lo) / (g_hi - g_lo);
            let (z, value) = g(s)?;
            best = Some(z);
            if value == 0.0 || (hi - lo).abs() <= 1e-14 * step {
                break;
            }
            if value * g_hi > 0.0 {
                (hi, g_hi) = (s, value);
                if side == 1 {
                    g_lo *= 0.5;
                }
                side = 1;
            } else {
                (lo, g_lo) = (s, value);
                if side == -1 {
                    g_hi *= 0.5;
                }
                side = -1;
            }
            if value.abs() <= 1e-13 {
                break;
            }
        }
        best
    }

    /// Solves at a fixed parameter value from `guess`, to land a branch exactly on the end
    /// of its range.
    fn land(&self, guess: &DVector<f64>, lambda: f64) -> Option<DVector<f64>> {
        let n = self.basis.len();
        let (omega, forcing) = self.sweep.forcing(lambda);
        let coefficients = solve_fixed(
            self.chain,
            &self.basis,
            guess.rows(0, n).into_owned(),
            omega,
            forcing,
            self.tolerance_n,
        )
        .ok()?;
        let mut z = DVector::zeros(n + 1);
        z.rows_mut(0, n).copy_from(&coefficients);
        z[n] = lambda;
        Some(z)
    }

    fn response(&self, z: &DVector<f64>) -> Result<PeriodicResponse, NonlinearError> {
        let (omega, forcing) = self.sweep.forcing(self.lambda(z));
        response(
            self.chain,
            &self.basis,
            &z.rows(0, self.basis.len()).into_owned(),
            omega,
            forcing,
            self.stability,
        )
    }
}

/// Builds the chain from `chain_config` and traces its branch: the entry point for callers
/// that hold both descriptions (a study), since every problem of both is reported at once.
///
/// # Errors
/// [`NonlinearError::Invalid`] listing every problem of the chain and of the request; then
/// as [`continue_branch`].
pub fn trace_branch(
    chain_config: &crate::model::NonlinearChainConfig,
    config: &ContinuationConfig,
) -> Result<Branch, NonlinearError> {
    let mut problems = chain_config.problems();
    problems.extend(config.problems());
    if !problems.is_empty() {
        return Err(NonlinearError::Invalid(problems));
    }
    continue_branch(&NonlinearChain::new(chain_config.clone())?, config)
}

/// The forcing amplitude F, N, at which the forced DOF's first harmonic reaches
/// `amplitude_m` at frequency `omega_rad_s`: the first crossing along the branch continued in
/// forcing from 0 to `max_forcing_n` with `harmonics` harmonics, interpolated linearly between
/// points a short step apart (0.005 of scaled arclength). This is what a control-based
/// continuation point measured at that response claims, and what it is checked against.
/// `None` when the branch does not reach the amplitude below `max_forcing_n`.
///
/// # Errors
/// As [`continue_branch`].
pub fn forcing_for_amplitude(
    chain: &NonlinearChain,
    omega_rad_s: f64,
    amplitude_m: f64,
    max_forcing_n: f64,
    harmonics: usize,
) -> Result<Option<f64>, NonlinearError> {
    let mut config = ContinuationConfig::new(
        Sweep::Amplitude {
            start_n: 0.0,
            end_n: max_forcing_n,
            omega_rad_s,
        },
        harmonics,
    );
    config.initial_step = 0.005;
    config.max_step = 0.005;
    config.stability = false;
    let branch = continue_branch(chain, &config)?;
    let dof = chain.forced_dof();
    let p = &branch.points;
    Ok(p.windows(2).find_map(|w| {
        let (a0, a1) = (w[0].amplitude_m[dof], w[1].amplitude_m[dof]);
        ((a0 - amplitude_m) * (a1 - amplitude_m) <= 0.0 && a0 != a1).then(|| {
            w[0].forcing_n + (w[1].forcing_n - w[0].forcing_n) * (amplitude_m - a0) / (a1 - a0)
        })
    }))
}

/// Traces the branch of periodic responses of `chain` from the start of `config.sweep`.
///
/// The branch is followed through folds (the parameter may decrease along it) until the
/// parameter leaves its range, the point budget runs out or the corrector fails at the
/// smallest step; [`Branch::stop`] says which, and every point computed is kept.
///
/// # Errors
/// [`NonlinearError::Invalid`] listing every problem of the request;
/// [`NonlinearError::CannotStart`] if no periodic response is found at the start;
/// [`NonlinearError::Numerical`] if a stability computation fails.
pub fn continue_branch(
    chain: &NonlinearChain,
    config: &ContinuationConfig,
) -> Result<Branch, NonlinearError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(NonlinearError::Invalid(problems));
    }
    let sweep = config.sweep;
    let basis = HarmonicBasis::new(chain, config.harmonics);
    let (start, end) = sweep.range();
    let (omega0, forcing0) = sweep.forcing(start);
    let cannot_start = |reason: String| NonlinearError::CannotStart {
        omega_rad_s: omega0,
        forcing_n: forcing0,
        reason,
    };
    let x_ref = reference_amplitude(chain, &sweep);
    let tracer = Tracer {
        chain,
        basis,
        sweep,
        weight_x: 1.0 / (x_ref * x_ref),
        weight_lambda: 1.0 / ((end - start) * (end - start)),
        tolerance_n: config.tolerance * sweep.force_scale_n(),
        stability: config.stability,
    };
    let n = tracer.basis.len();
    let guess = linear_guess(chain, &tracer.basis, omega0, forcing0)
        .ok_or_else(|| cannot_start("the linear chain is singular there".into()))?;
    let coefficients = solve_fixed(
        chain,
        &tracer.basis,
        guess,
        omega0,
        forcing0,
        tracer.tolerance_n,
    )
    .map_err(|f| cannot_start(f.to_string()))?;
    let mut z0 = DVector::zeros(n + 1);
    z0.rows_mut(0, n).copy_from(&coefficients);
    z0[n] = start;
    let mut increasing = DVector::zeros(n + 1);
    increasing[n] = 1.0 / tracer.weight_lambda;
    let tangent = tracer
        .tangent(&z0, &increasing)
        .ok_or_else(|| cannot_start("the tangent system is singular".into()))?;
    let mut node = Node { z: z0, tangent };
    let mut points = vec![tracer.response(&node.z)?];
    let mut folds = Vec::new();
    let mut step = config.initial_step;
    let stop = loop {
        if points.len() >= config.max_points {
            break StopReason::MaxPoints;
        }
        let (next, iterations) = match tracer.step(&node, step) {
            Ok(accepted) => accepted,
            Err(reason) => {
                step *= 0.5;
                if step < config.min_step {
                    let (omega_rad_s, forcing_n) = sweep.forcing(tracer.lambda(&node.z));
                    break StopReason::LostBranch {
                        omega_rad_s,
                        forcing_n,
                        reason,
                    };
                }
                continue;
            }
        };
        let folded = node.tangent[n] * next.tangent[n] < 0.0;
        let lambda = tracer.lambda(&next.z);
        let outside = if lambda > end {
            Some((end, StopReason::ReachedEnd))
        } else if lambda < start {
            Some((start, StopReason::ReturnedToStart))
        } else {
            None
        };
        if let Some((edge, reason)) = outside {
            // Land exactly on the edge when the parameter is monotonic over the step;
            // otherwise shorten the step so a fold and the edge are not in one step.
            if folded {
                step *= 0.5;
                if step >= config.min_step {
                    continue;
                }
            }
            let fraction = (edge - tracer.lambda(&node.z)) / (lambda - tracer.lambda(&node.z));
            let guess = &node.z + (&next.z - &node.z) * fraction;
            if let Some(z) = tracer.land(&guess, edge) {
                points.push(tracer.response(&z)?);
                break reason;
            }
            let (omega_rad_s, forcing_n) = sweep.forcing(edge);
            break StopReason::LostBranch {
                omega_rad_s,
                forcing_n,
                reason: "Newton's method failed on the end of the range".into(),
            };
        }
        if folded {
            let after_point = points.len() - 1;
            let fold = match tracer.locate_fold(&node, step) {
                Some(z) => fold_at(&tracer, &z, after_point, true)?,
                None => {
                    // Interpolate where the tangent's parameter component vanishes.
                    let (a, b) = (node.tangent[n], next.tangent[n]);
                    let z = &node.z + (&next.z - &node.z) * (a / (a - b));
                    fold_at(&tracer, &z, after_point, false)?
                }
            };
            folds.push(fold);
        }
        points.push(tracer.response(&next.z)?);
        node = next;
        if iterations <= FAST_CORRECTOR {
            step = (step * 1.5).min(config.max_step);
        } else if iterations >= SLOW_CORRECTOR {
            step = (step * 0.7).max(config.min_step);
        }
    };
    Ok(Branch {
        sweep,
        harmonics: config.harmonics,
        points,
        folds,
        stop,
    })
}

fn fold_at(
    tracer: &Tracer<'_>,
    z: &DVector<f64>,
    after_point: usize,
    located: bool,
) -> Result<Fold, NonlinearError> {
    let (omega_rad_s, forcing_n) = tracer.sweep.forcing(tracer.lambda(z));
    let harmonics = dof_harmonics(&tracer.basis, &z.rows(0, tracer.basis.len()).into_owned());
    Ok(Fold {
        omega_rad_s,
        forcing_n,
        amplitude_m: harmonics.iter().map(|h| h.amplitude_m(1)).collect(),
        after_point,
        located,
    })
}

/// The scale of displacements along the run: the largest first-harmonic amplitude of the
/// linear chain at the ends of the range and (for a frequency sweep) at its damped natural
/// frequencies inside it. Falls back to 1 m when the linear response is zero or singular.
fn reference_amplitude(chain: &NonlinearChain, sweep: &Sweep) -> f64 {
    let mut probes: Vec<(f64, f64)> = Vec::new();
    match *sweep {
        Sweep::Frequency {
            start_rad_s,
            end_rad_s,
            forcing_n,
        } => {
            probes.push((start_rad_s, forcing_n));
            probes.push((end_rad_s, forcing_n));
            for &w in &chain.building().modes().omegas_rad_s {
                if (start_rad_s..=end_rad_s).contains(&w) {
                    probes.push((w, forcing_n));
                }
            }
        }
        Sweep::Amplitude {
            end_n, omega_rad_s, ..
        } => probes.push((omega_rad_s, end_n)),
    }
    let mut load = DVector::zeros(chain.dofs());
    load[chain.forced_dof()] = 1.0;
    let largest = probes
        .iter()
        .filter_map(|&(w, f)| {
            dtop_dynamics::frf::second_order_response(
                chain.mass(),
                chain.damping(),
                chain.stiffness(),
                &load,
                w,
            )
            .ok()
            .map(|x| x.iter().fold(0.0_f64, |m, v| m.max(v.norm())) * f.abs())
        })
        .fold(0.0_f64, f64::max);
    if largest.is_finite() && largest > 0.0 {
        largest
    } else {
        1.0
    }
}
