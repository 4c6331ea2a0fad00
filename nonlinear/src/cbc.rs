//! Owns the model side of control-based continuation (CBC): a simulated experiment on the
//! nonlinear chain (RK4 time integration, noisy measurements, a sampled PD controller on
//! the forced floor following a target given by its Fourier coefficients), the iteration
//! that makes the control force free of higher harmonics (non-invasive), and the stepping
//! of the target's first-harmonic amplitude through the folds. Knows nothing of the edge,
//! the broker or a real rig.
//!
//! At a fixed frequency ω the controller applies u(t) = k_p·(x*(t) − x̃_j) + k_d·(ẋ*(t) − ṽ_j)
//! on the forced floor j, computed from noisy measurements x̃_j, ṽ_j at every sample and held
//! until the next (a digital controller). Once u has no harmonic but the first, it is an
//! ordinary harmonic forcing F·cos(ωt + φ) and the controlled orbit is an open-loop periodic
//! response, stable or not (Sieber, Gonzalez-Buelga, Neild, Wagg & Krauskopf, Phys. Rev.
//! Lett. 100, 244101, 2008). The target's first harmonic A*·cos ωt is the continuation
//! parameter: F is a single-valued function of it, so stepping A* passes the folds in F.
//!
//! The higher harmonics (and the mean) of the target are updated by a quasi-Newton step: for
//! harmonic k with phasors X (measured), X* (target), controller C_k = k_p + i·kω·k_d and
//! the linear chain's driving-point dynamic stiffness D_k = 1/H_jj(kω), X* ← X + (X − X*)·C_k/D_k
//! makes the control harmonic vanish for the linear part in one step. Cristallo instead
//! copies the measured harmonics into the target (X* ← X), a fixed point that contracts
//! only by C_k/(D_k + C_k) per iteration: close to 1 at its stiff gains. Its runs are also too
//! short to settle (TOOLS.md §5.3); here every iteration discards `settle_periods` first.

use nalgebra::{Complex, DVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::continuation::MAX_HARMONICS;
use crate::error::NonlinearError;
use crate::integrate::{Stepper, fastest_rate_rad_s};
use crate::model::NonlinearChain;

/// Largest number of integration steps a CBC run may plan (targets × iterations × periods ×
/// steps per period): about a minute of one core.
pub const MAX_CBC_STEPS: f64 = 5e8;

/// Default proportional gain, in N/m (Cristallo's |k_p|).
pub const fn default_proportional_gain_n_per_m() -> f64 {
    120.0
}
/// Default derivative gain, in N·s/m. On Cristallo's chain with k_p = 120 N/m the
/// slowest closed-loop decay rate of the linear part is 0.44/s at 2.5, 1.5/s at 10 and
/// 1.8/s at 25 (Cristallo's value), where floor 1 is nearly clamped and the quasi-Newton
/// iteration slows down at large amplitudes; 10 balances the two.
pub const fn default_derivative_gain_n_s_per_m() -> f64 {
    10.0
}
/// Default harmonics of the target. On Cristallo's chain at 16 rad/s and 0.85 m (the
/// unstable branch) floor 1's odd harmonics fall by about 7× each: the 7th is 3.6e-3 of
/// the first, and the controller's force against an untargeted harmonic k is
/// |k_p + i·kω·k_d|·x_k, 0.16 of the forcing for the 7th, 1.3e-4 for the 15th and 2e-5
/// for the 17th, and more at the lower fold (0.88 m, 13 N), where 15 harmonics stall at
/// 1.2e-4. Cristallo's 5 leaves its iteration invasive and its forcing 1 % off near the
/// fold; 21 meets the default tolerance along the whole curve.
pub const fn default_cbc_harmonics() -> usize {
    21
}
/// Default controller samples (and integration steps) per forcing period: at least four
/// per target harmonic.
pub const fn default_steps_per_period() -> usize {
    128
}
/// Default periods discarded after every change of the target: 40 periods at 16 rad/s
/// are 15.7 s, in which the slowest closed-loop transient of Cristallo's chain at the
/// default gains (1.5/s) decays by e⁻²³.
pub const fn default_settle_periods() -> usize {
    40
}
/// Default periods over which Fourier coefficients are measured.
pub const fn default_measure_periods() -> usize {
    10
}
/// Default iteration budget per target. Cristallo allows 10; the quasi-Newton update
/// ignores how the springs couple the harmonics, and near the lower fold of its chain it
/// needs up to 14.
pub const fn default_max_iterations() -> usize {
    20
}
/// Default invasiveness tolerance: largest higher harmonic of the control force over its
/// first harmonic.
pub const fn default_invasiveness_tolerance() -> f64 {
    1e-4
}
/// Default actuator force limit, in N.
pub const fn default_max_force_n() -> f64 {
    200.0
}

/// A CBC run on a model: what is controlled and how, the noise, and the budgets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CbcConfig {
    /// Forcing frequency ω, in rad/s; positive.
    pub omega_rad_s: f64,
    /// First target amplitude A* on the forced floor, in m; positive.
    pub target_start_m: f64,
    /// Last target amplitude, in m; above `target_start_m`.
    pub target_end_m: f64,
    /// Number of target amplitudes, evenly spaced from start to end, 2..=10 000.
    pub target_steps: usize,
    /// Proportional gain k_p, in N/m; zero or positive.
    #[serde(default = "default_proportional_gain_n_per_m")]
    pub proportional_gain_n_per_m: f64,
    /// Derivative gain k_d, in N·s/m; zero or positive (not both gains zero).
    #[serde(default = "default_derivative_gain_n_s_per_m")]
    pub derivative_gain_n_s_per_m: f64,
    /// Harmonics of the target, 1..=`MAX_HARMONICS`; harmonics 0 and 2..=H are iterated.
    #[serde(default = "default_cbc_harmonics")]
    pub harmonics: usize,
    /// Controller samples and RK4 steps per forcing period; at least 4·(H + 1) and 16.
    #[serde(default = "default_steps_per_period")]
    pub steps_per_period: usize,
    /// Periods discarded after each change of the target (the settling allowance).
    #[serde(default = "default_settle_periods")]
    pub settle_periods: usize,
    /// Periods over which the response and control force are Fourier-analysed; at least 1.
    #[serde(default = "default_measure_periods")]
    pub measure_periods: usize,
    /// Standard deviation of the displacement sensors' noise, in m, on every floor.
    #[serde(default)]
    pub displacement_noise_m: f64,
    /// Standard deviation of the forced floor's velocity sensor noise, in m/s.
    #[serde(default)]
    pub velocity_noise_m_s: f64,
    /// Iterations allowed per target before the run stops, at least 1.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: usize,
    /// A point is converged when every harmonic of the control force but the first is at
    /// most this fraction of the first, and when the first harmonics of the control force
    /// and of the forced floor changed by at most this fraction since the previous
    /// iteration (so a point needs two iterations, and a transient that has not settled
    /// shows); within (0, 1).
    #[serde(default = "default_invasiveness_tolerance")]
    pub invasiveness_tolerance: f64,
    /// Largest control force the actuator may apply, in N; positive.
    #[serde(default = "default_max_force_n")]
    pub max_force_n: f64,
    /// Seed of the measurement noise.
    #[serde(default)]
    pub seed: u64,
}

impl CbcConfig {
    /// A run at `omega_rad_s` over target amplitudes `start..=end` in `steps` points, with
    /// default gains, budgets and no noise.
    pub fn new(omega_rad_s: f64, target_start_m: f64, target_end_m: f64, steps: usize) -> Self {
        Self {
            omega_rad_s,
            target_start_m,
            target_end_m,
            target_steps: steps,
            proportional_gain_n_per_m: default_proportional_gain_n_per_m(),
            derivative_gain_n_s_per_m: default_derivative_gain_n_s_per_m(),
            harmonics: default_cbc_harmonics(),
            steps_per_period: default_steps_per_period(),
            settle_periods: default_settle_periods(),
            measure_periods: default_measure_periods(),
            displacement_noise_m: 0.0,
            velocity_noise_m_s: 0.0,
            max_iterations: default_max_iterations(),
            invasiveness_tolerance: default_invasiveness_tolerance(),
            max_force_n: default_max_force_n(),
            seed: 0,
        }
    }

    /// Every rule this run breaks, as sentences; empty when it is valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let positive = |name: &str, v: f64, problems: &mut Vec<String>| {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("{name} = {v} must be positive and finite"));
            }
        };
        let non_negative = |name: &str, v: f64, problems: &mut Vec<String>| {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{name} = {v} must be zero or positive and finite"));
            }
        };
        positive("omega_rad_s", self.omega_rad_s, &mut problems);
        positive("target_start_m", self.target_start_m, &mut problems);
        positive("max_force_n", self.max_force_n, &mut problems);
        if !self.target_end_m.is_finite() {
            problems.push(format!(
                "target_end_m = {} must be finite",
                self.target_end_m
            ));
        } else if self.target_end_m <= self.target_start_m {
            problems.push(format!(
                "target_end_m = {} must be above target_start_m = {}",
                self.target_end_m, self.target_start_m
            ));
        }
        if !(2..=10_000).contains(&self.target_steps) {
            problems.push(format!(
                "target_steps = {} must be within 2..=10000",
                self.target_steps
            ));
        }
        non_negative(
            "proportional_gain_n_per_m",
            self.proportional_gain_n_per_m,
            &mut problems,
        );
        non_negative(
            "derivative_gain_n_s_per_m",
            self.derivative_gain_n_s_per_m,
            &mut problems,
        );
        if self.proportional_gain_n_per_m == 0.0 && self.derivative_gain_n_s_per_m == 0.0 {
            problems.push("both controller gains are zero: nothing would be controlled".into());
        }
        non_negative(
            "displacement_noise_m",
            self.displacement_noise_m,
            &mut problems,
        );
        non_negative("velocity_noise_m_s", self.velocity_noise_m_s, &mut problems);
        if !(1..=MAX_HARMONICS).contains(&self.harmonics) {
            problems.push(format!(
                "harmonics = {} must be within 1..={MAX_HARMONICS}",
                self.harmonics
            ));
        }
        let min_steps = (4 * (self.harmonics + 1)).max(16);
        if !(min_steps..=100_000).contains(&self.steps_per_period) {
            problems.push(format!(
                "steps_per_period = {} must be within {min_steps}..=100000 (four samples per \
                 target harmonic at least)",
                self.steps_per_period
            ));
        }
        if self.measure_periods == 0 {
            problems.push("measure_periods must be at least 1".into());
        }
        if self.max_iterations == 0 {
            problems.push("max_iterations must be at least 1".into());
        }
        if !(self.invasiveness_tolerance > 0.0 && self.invasiveness_tolerance < 1.0) {
            problems.push(format!(
                "invasiveness_tolerance = {} must be within (0, 1)",
                self.invasiveness_tolerance
            ));
        }
        let work = self.target_steps as f64
            * self.max_iterations as f64
            * (self.settle_periods + self.measure_periods) as f64
            * self.steps_per_period as f64;
        if work > MAX_CBC_STEPS {
            problems.push(format!(
                "the run may take {work:.3e} integration steps, above the budget of \
                 {MAX_CBC_STEPS:.0e}: fewer targets, iterations, periods or steps"
            ));
        }
        problems
    }
}

/// One converged (or, last in a stopped run, unconverged) CBC point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CbcPoint {
    /// Target first-harmonic amplitude A*, in m.
    pub target_amplitude_m: f64,
    /// Forcing frequency, in rad/s.
    pub omega_rad_s: f64,
    /// First-harmonic amplitude of the control force: the equivalent forcing F, in N.
    pub forcing_n: f64,
    /// Measured first-harmonic amplitude of each DOF, in m.
    pub amplitude_m: Vec<f64>,
    /// Largest harmonic of the control force other than the first (0 and 2 up to a quarter
    /// of the samples per period, beyond the target's H), over the first.
    pub invasiveness: f64,
    /// Largest relative change of the control force's and the forced floor's first
    /// harmonics since the previous iteration (infinite after the first): the settling check.
    pub change: f64,
    /// Iterations used.
    pub iterations: usize,
    /// True when `invasiveness` met the tolerance.
    pub converged: bool,
}

/// Why a CBC run stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CbcStop {
    /// Every target converged.
    Completed,
    /// A target did not converge within its iteration budget; it is the last point.
    NotConverged {
        /// The target amplitude, in m.
        target_amplitude_m: f64,
        /// Its invasiveness after the last iteration.
        invasiveness: f64,
    },
    /// The controller asked for more than the actuator's limit; the run stopped at once.
    ForceLimit {
        /// The target amplitude being tried, in m.
        target_amplitude_m: f64,
        /// The force requested, in N.
        force_n: f64,
    },
    /// The simulated experiment diverged (the sampled loop is unstable at these gains).
    Diverged {
        /// The target amplitude being tried, in m.
        target_amplitude_m: f64,
    },
}

/// The result of a CBC run: its points in target order and why it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CbcRun {
    /// The points computed, in target order.
    pub points: Vec<CbcPoint>,
    /// Why the run stopped.
    pub stop: CbcStop,
}

/// Complex phasors X_k = a_k − i·b_k of harmonics 0..=H, so that a_k·cos + b_k·sin
/// = Re(X_k·e^{ikωt}).
type Phasors = Vec<Complex<f64>>;

/// The simulated rig: chain (with its state, carried between runs), controller, sensors.
struct Experiment<'a> {
    config: &'a CbcConfig,
    n: usize,
    forced: usize,
    stepper: Stepper<'a>,
    /// e^{−ikθ_s} for samples s = 0..=N (θ_s = 2πs/N) and harmonics k up to
    /// `force_harmonics`, row by row: the sample clock's trigonometry, computed once.
    phases: Vec<Complex<f64>>,
    rng: ChaCha8Rng,
}

/// What one measured stretch of periods gives.
struct Measurement {
    /// Response phasors per DOF (from noisy samples).
    response: Vec<Phasors>,
    /// Control-force phasors, exact for the held (staircase) force.
    force: Phasors,
}

/// Why a stretch of simulation stopped early.
enum Abort {
    ForceLimit(f64),
    Diverged,
}

impl Experiment<'_> {
    /// Runs `periods` forcing periods with the target `target`; Fourier-analyses them when
    /// `measure` is set.
    fn run(
        &mut self,
        target: &Phasors,
        periods: usize,
        measure: bool,
    ) -> Result<Option<Measurement>, Abort> {
        let cfg = self.config;
        let h = cfg.harmonics;
        let omega = cfg.omega_rad_s;
        let steps = cfg.steps_per_period;
        let dt = std::f64::consts::TAU / omega / steps as f64;
        let mut response = vec![vec![Complex::new(0.0, 0.0); h + 1]; self.n];
        let width = force_harmonics(cfg) + 1;
        let mut force = vec![Complex::new(0.0, 0.0); width];
        let mut x_meas = vec![0.0; self.n];
        for _ in 0..periods {
            for s in 0..steps {
                let row = &self.phases[s * width..(s + 1) * width];
                let next = &self.phases[(s + 1) * width..(s + 2) * width];
                let (x_star, v_star) = target_at(target, omega, row);
                let mut noisy = |sd: f64| -> f64 {
                    if sd > 0.0 {
                        sd * self.rng.sample::<f64, _>(StandardNormal)
                    } else {
                        0.0
                    }
                };
                for (measured, x) in x_meas.iter_mut().zip(&self.stepper.x) {
                    *measured = x + noisy(cfg.displacement_noise_m);
                }
                let v_meas = self.stepper.v[self.forced] + noisy(cfg.velocity_noise_m_s);
                let u = cfg.proportional_gain_n_per_m * (x_star - x_meas[self.forced])
                    + cfg.derivative_gain_n_s_per_m * (v_star - v_meas);
                if !u.is_finite() {
                    return Err(Abort::Diverged);
                }
                if u.abs() > cfg.max_force_n {
                    return Err(Abort::ForceLimit(u));
                }
                if measure {
                    for (d, x) in x_meas.iter().enumerate() {
                        for (acc, e) in response[d].iter_mut().zip(row) {
                            *acc += e * *x;
                        }
                    }
                    // ∫ u·e^{−ikωt} dt over the step, exactly, for the held force.
                    force[0] += u * dt;
                    for k in 1..width {
                        force[k] += (next[k] - row[k]) * Complex::new(0.0, u / (k as f64 * omega));
                    }
                }
                self.stepper.step(0.0, dt, |_| u);
                if !self.stepper.is_finite() {
                    return Err(Abort::Diverged);
                }
            }
        }
        if !measure {
            return Ok(None);
        }
        // Mean: 1/N·Σ; harmonics: 2/N·Σ (samples) or 2/(P·T)·∫ (force).
        let samples = (periods * steps) as f64;
        let duration = periods as f64 * std::f64::consts::TAU / omega;
        for r in &mut response {
            r[0] /= samples;
            for c in r.iter_mut().skip(1) {
                *c *= 2.0 / samples;
            }
        }
        force[0] /= duration;
        for c in force.iter_mut().skip(1) {
            *c *= 2.0 / duration;
        }
        Ok(Some(Measurement { response, force }))
    }
}

/// Largest step times a bound of the closed loop's fastest linear rate: keeps RK4 (stable
/// to |h·λ| ≈ 2.8) and the sampled PD loop far from their stability limits, with room for
/// the cubic's stiffening at large amplitudes. Accuracy is set by the slower modes the
/// forcing excites (the tests measure the result against the balance: 2.3e-4 at most).
const MAX_STEP_TIMES_RATE: f64 = 0.5;

/// Harmonics of the control force checked for invasiveness: all those the sampling
/// resolves well (a quarter of the samples per period), not only the target's, because the
/// response's harmonics above H meet no target and the controller fights them.
fn force_harmonics(config: &CbcConfig) -> usize {
    (config.steps_per_period / 4).max(config.harmonics)
}

/// The table of [`Experiment::phases`].
fn phase_table(config: &CbcConfig) -> Vec<Complex<f64>> {
    let width = force_harmonics(config) + 1;
    let steps = config.steps_per_period;
    let mut table = Vec::with_capacity((steps + 1) * width);
    for s in 0..=steps {
        let theta = std::f64::consts::TAU * s as f64 / steps as f64;
        table.extend((0..width).map(|k| Complex::from_polar(1.0, -(k as f64) * theta)));
    }
    table
}

/// x*(t) and ẋ*(t) from the target's phasors, given the row e^{−ikωt} of the sample.
fn target_at(target: &Phasors, omega: f64, row: &[Complex<f64>]) -> (f64, f64) {
    target
        .iter()
        .zip(row)
        .enumerate()
        .fold((0.0, 0.0), |(x, v), (k, (c, e))| {
            let z = c * e.conj();
            (x + z.re, v - k as f64 * omega * z.im)
        })
}

/// Quasi-Newton factors C_k·R_k for harmonics 0..=`harmonics` at fundamental `omega_rad_s`:
/// the controller's phasor `controller(kω)` (force per metre of displacement error) times
/// the linear chain's driving-point receptance R_k at the forced DOF. Shared by the model's
/// and the live rig's iteration.
///
/// # Errors
/// [`NonlinearError::Numerical`] if the linear chain is singular at a harmonic.
pub(crate) fn newton_factors(
    chain: &NonlinearChain,
    omega_rad_s: f64,
    harmonics: usize,
    controller: impl Fn(f64) -> Complex<f64>,
) -> Result<Vec<Complex<f64>>, NonlinearError> {
    let forced = chain.forced_dof();
    let mut unit = DVector::zeros(chain.dofs());
    unit[forced] = 1.0;
    (0..=harmonics)
        .map(|k| {
            let kw = k as f64 * omega_rad_s;
            let receptance = dtop_dynamics::frf::second_order_response(
                chain.mass(),
                chain.damping(),
                chain.stiffness(),
                &unit,
                kw,
            )
            .map_err(|_| {
                NonlinearError::Numerical("the linear chain is singular at a target harmonic")
            })?[forced];
            Ok(controller(kw) * receptance)
        })
        .collect()
}

/// Largest harmonic of the control force other than the first, over the first (infinite
/// when the first is zero): 0 for a non-invasive controller.
pub(crate) fn invasiveness(force: &[Complex<f64>]) -> f64 {
    let first = force.get(1).map_or(0.0, |c| c.norm());
    let higher = force
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != 1)
        .fold(0.0_f64, |m, (_, c)| m.max(c.norm()));
    if first > 0.0 {
        higher / first
    } else {
        f64::INFINITY
    }
}

/// Largest relative change of the control force's and the forced floor's first harmonics
/// `(u1, x1)` since the previous iteration's; infinite without one. The settling check.
pub(crate) fn first_harmonic_change(
    previous: Option<(Complex<f64>, Complex<f64>)>,
    u1: Complex<f64>,
    x1: Complex<f64>,
) -> f64 {
    previous.map_or(f64::INFINITY, |(u0, x0)| {
        ((u1 - u0).norm() / u1.norm()).max((x1 - x0).norm() / x1.norm())
    })
}

/// The quasi-Newton step on the target's harmonics other than the first, from
/// `lowest` up (0 with the mean, 2 without): X* ← X + (X − X*)·C_k·R_k, which makes the
/// control harmonic vanish for the linear part in one step.
pub(crate) fn update_target(
    target: &mut [Complex<f64>],
    response: &[Complex<f64>],
    newton: &[Complex<f64>],
    lowest: usize,
) {
    for (k, ((t, x), n)) in target.iter_mut().zip(response).zip(newton).enumerate() {
        if k >= lowest && k != 1 {
            *t = x + (x - *t) * n;
        }
    }
}

/// Runs control-based continuation on the simulated experiment: for each target amplitude
/// A* (in order), iterates the target's other harmonics until the control force is
/// non-invasive, and records the equivalent forcing and the measured response.
///
/// # Errors
/// [`NonlinearError::Invalid`] listing every problem of the run; a run that starts but
/// fails later is not an error: [`CbcRun::stop`] says why and the points so far are kept.
pub fn run_cbc(chain: &NonlinearChain, config: &CbcConfig) -> Result<CbcRun, NonlinearError> {
    let mut problems = config.problems();
    let n = chain.dofs();
    let forced = chain.forced_dof();
    if problems.is_empty() {
        let rate = fastest_rate_rad_s(
            chain,
            config.proportional_gain_n_per_m,
            config.derivative_gain_n_s_per_m,
        )
        .ok_or(NonlinearError::Numerical("the mass matrix is singular"))?;
        let dt = std::f64::consts::TAU / config.omega_rad_s / config.steps_per_period as f64;
        if dt * rate > MAX_STEP_TIMES_RATE {
            problems.push(format!(
                "steps_per_period = {} is too few at {} rad/s: the step {dt:.3e} s times the \
                 linear closed loop's fastest rate {rate:.1} rad/s exceeds {MAX_STEP_TIMES_RATE} \
                 (RK4 and the sampled controller would be inaccurate or unstable)",
                config.steps_per_period, config.omega_rad_s
            ));
        }
    }
    if !problems.is_empty() {
        return Err(NonlinearError::Invalid(problems));
    }
    let h = config.harmonics;
    let omega = config.omega_rad_s;
    let newton = newton_factors(chain, omega, h, |kw| {
        Complex::new(
            config.proportional_gain_n_per_m,
            kw * config.derivative_gain_n_s_per_m,
        )
    })?;
    let mut experiment = Experiment {
        config,
        n,
        forced,
        stepper: Stepper::new(chain)?,
        phases: phase_table(config),
        rng: ChaCha8Rng::seed_from_u64(config.seed),
    };
    let mut target: Phasors = vec![Complex::new(0.0, 0.0); h + 1];
    let mut points = Vec::new();
    let span = config.target_end_m - config.target_start_m;
    for i in 0..config.target_steps {
        let amplitude = config.target_start_m + span * i as f64 / (config.target_steps - 1) as f64;
        target[1] = Complex::new(amplitude, 0.0);
        let mut last = None;
        let mut previous: Option<(Complex<f64>, Complex<f64>)> = None;
        for iteration in 1..=config.max_iterations {
            let outcome = experiment
                .run(&target, config.settle_periods, false)
                .and_then(|_| experiment.run(&target, config.measure_periods, true));
            let measured = match outcome {
                Ok(Some(m)) => m,
                Ok(None) => return Err(NonlinearError::Numerical("no measurement was taken")),
                Err(Abort::ForceLimit(force_n)) => {
                    return Ok(CbcRun {
                        points,
                        stop: CbcStop::ForceLimit {
                            target_amplitude_m: amplitude,
                            force_n,
                        },
                    });
                }
                Err(Abort::Diverged) => {
                    return Ok(CbcRun {
                        points,
                        stop: CbcStop::Diverged {
                            target_amplitude_m: amplitude,
                        },
                    });
                }
            };
            let first = measured.force[1].norm();
            let invasiveness = invasiveness(&measured.force);
            let (u1, x1) = (measured.force[1], measured.response[forced][1]);
            let change = first_harmonic_change(previous, u1, x1);
            previous = Some((u1, x1));
            let converged = invasiveness <= config.invasiveness_tolerance
                && change <= config.invasiveness_tolerance;
            let point = CbcPoint {
                target_amplitude_m: amplitude,
                omega_rad_s: omega,
                forcing_n: first,
                amplitude_m: measured.response.iter().map(|r| r[1].norm()).collect(),
                invasiveness,
                change,
                iterations: iteration,
                converged,
            };
            if converged {
                last = Some(point);
                break;
            }
            update_target(&mut target, &measured.response[forced], &newton, 0);
            last = Some(point);
        }
        let Some(point) = last else {
            return Err(NonlinearError::Numerical("no iteration ran"));
        };
        let converged = point.converged;
        let invasiveness = point.invasiveness;
        points.push(point);
        if !converged {
            return Ok(CbcRun {
                points,
                stop: CbcStop::NotConverged {
                    target_amplitude_m: amplitude,
                    invasiveness,
                },
            });
        }
    }
    Ok(CbcRun {
        points,
        stop: CbcStop::Completed,
    })
}
