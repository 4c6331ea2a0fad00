//! Owns frequency response functions of a shear building (receptance, mobility, accelerance),
//! evaluated three independent ways, and the modal summary (frequencies, shapes, damping
//! ratios, poles) they are checked against. Continuous time only; knows nothing of sampling
//! or of control laws, which build on the generic solvers here.
//!
//! Excitation is by forces with the ground at rest, so relative and absolute motions coincide
//! and "absolute acceleration" is simply −ω²·x.

use nalgebra::{Complex, DMatrix, DVector, RowDVector, Schur};
use serde::{Deserialize, Serialize};

use crate::model::ShearBuilding;
use crate::modes::Modes;

/// Complex double, the value type of every frequency response.
pub type C64 = Complex<f64>;

/// Largest sweep a [`FrequencyGrid`] may describe. A sweep allocates a few vectors of this
/// length per output, so this bound turns a typo (`--df 1e-9`) into an error, not an OOM.
pub const MAX_GRID_POINTS: usize = 10_000_000;

/// Schur iteration budget per eigenvalue. Francis QR needs a few sweeps per eigenvalue; the
/// bound only turns a pathological matrix into an error instead of an endless loop.
const SCHUR_ITERATIONS_PER_EIGENVALUE: usize = 1_000;

/// Everything that can go wrong while computing a frequency response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrfError {
    /// The request does not fit the building (floor out of range, no actuator fitted, bad
    /// grid); every problem is listed.
    #[error("invalid frequency-response request: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The linear algebra failed, e.g. an undamped system evaluated exactly at resonance.
    #[error("numerical failure: {0}")]
    Numerical(&'static str),
}

/// Default lowest frequency of a sweep, in Hz.
pub const fn default_f_min_hz() -> f64 {
    1.0
}
/// Default highest frequency of a sweep, in Hz.
pub const fn default_f_max_hz() -> f64 {
    100.0
}
/// Default frequency step of a sweep, in Hz.
pub const fn default_df_hz() -> f64 {
    0.01
}

/// A uniform frequency sweep `f_min_hz, f_min_hz + df_hz, …` up to and including `f_max_hz`
/// when it lies on the grid (to within 1e-9 steps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyGrid {
    /// First frequency, in Hz; zero or positive.
    #[serde(default = "default_f_min_hz")]
    pub f_min_hz: f64,
    /// Last frequency, in Hz; above `f_min_hz`.
    #[serde(default = "default_f_max_hz")]
    pub f_max_hz: f64,
    /// Step between frequencies, in Hz; positive.
    #[serde(default = "default_df_hz")]
    pub df_hz: f64,
}

impl Default for FrequencyGrid {
    fn default() -> Self {
        Self {
            f_min_hz: default_f_min_hz(),
            f_max_hz: default_f_max_hz(),
            df_hz: default_df_hz(),
        }
    }
}

impl FrequencyGrid {
    /// Every rule this grid breaks, as sentences; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.f_min_hz.is_finite() && self.f_min_hz >= 0.0) {
            problems.push(format!(
                "f_min_hz = {} must be zero or positive and finite",
                self.f_min_hz
            ));
        }
        if !(self.f_max_hz.is_finite() && self.f_max_hz > self.f_min_hz) {
            problems.push(format!(
                "f_max_hz = {} must be finite and above f_min_hz = {}",
                self.f_max_hz, self.f_min_hz
            ));
        }
        if !(self.df_hz.is_finite() && self.df_hz > 0.0) {
            problems.push(format!(
                "df_hz = {} must be positive and finite",
                self.df_hz
            ));
        } else if problems.is_empty() {
            let steps = (self.f_max_hz - self.f_min_hz) / self.df_hz;
            if steps >= MAX_GRID_POINTS as f64 {
                problems.push(format!(
                    "the sweep has about {steps:.0} points, more than the {MAX_GRID_POINTS} allowed: \
                     raise df_hz or narrow the band"
                ));
            }
        }
        problems
    }

    /// Checks every rule at once.
    ///
    /// # Errors
    /// [`FrfError::Invalid`] listing every problem.
    pub fn validate(&self) -> Result<(), FrfError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FrfError::Invalid(problems))
        }
    }

    /// Number of frequencies in the sweep (0 for an invalid grid).
    pub fn len(&self) -> usize {
        if !self.problems().is_empty() {
            return 0;
        }
        // The 1e-9 absorbs rounding in (f_max − f_min)/df, so 1–100 Hz by 0.01 Hz has
        // 9901 points and includes 100 Hz. Validation bounds the quotient, so the cast is exact.
        let steps = ((self.f_max_hz - self.f_min_hz) / self.df_hz + 1e-9).floor() as usize;
        steps + 1
    }

    /// True for an invalid grid, which has no points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frequencies, in Hz. Computed as `f_min + i·df` rather than by accumulation, so the
    /// last point carries one rounding, not thousands.
    pub fn frequencies_hz(&self) -> Vec<f64> {
        (0..self.len())
            .map(|i| self.f_min_hz + i as f64 * self.df_hz)
            .collect()
    }
}

/// The excitation of a frequency response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrfInput {
    /// A force on one floor, in N.
    FloorForce {
        /// Floor, 1-based.
        floor: usize,
    },
    /// The actuator's coil force, in N: `+f` on the proof mass, `−f` on the host floor.
    ActuatorForce,
}

/// Which motion of the output floor is measured per newton of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrfKind {
    /// Displacement per force, m/N.
    Receptance,
    /// Velocity per force, (m/s)/N.
    Mobility,
    /// Absolute acceleration per force, (m/s²)/N.
    Accelerance,
}

impl FrfKind {
    /// Units of the response, for display.
    pub const fn units(self) -> &'static str {
        match self {
            Self::Receptance => "m/N",
            Self::Mobility => "(m/s)/N",
            Self::Accelerance => "(m/s^2)/N",
        }
    }

    /// The power p in (jω)^p that turns a receptance into this kind.
    const fn derivative_order(self) -> i32 {
        match self {
            Self::Receptance => 0,
            Self::Mobility => 1,
            Self::Accelerance => 2,
        }
    }
}

/// One input/output pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrfRequest {
    /// The excitation.
    pub input: FrfInput,
    /// Floor whose motion is the output, 1-based.
    pub output_floor: usize,
    /// Displacement, velocity or acceleration.
    pub kind: FrfKind,
}

impl FrfRequest {
    /// Every way this request does not fit `building`; empty when it fits.
    pub fn problems(&self, building: &ShearBuilding) -> Vec<String> {
        let floors = building.floors();
        let mut problems = Vec::new();
        if !(1..=floors).contains(&self.output_floor) {
            problems.push(format!(
                "output floor {} must be within 1..={floors}",
                self.output_floor
            ));
        }
        match self.input {
            FrfInput::FloorForce { floor } if !(1..=floors).contains(&floor) => {
                problems.push(format!("input floor {floor} must be within 1..={floors}"));
            }
            FrfInput::ActuatorForce if !building.has_actuator() => {
                problems
                    .push("the actuator force is an input only when an actuator is fitted".into());
            }
            _ => {}
        }
        problems
    }
}

/// How a frequency response is evaluated. All three agree for classically damped
/// buildings; the first two agree always (tests check both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrfMethod {
    /// H(jω) = C·(jωI − A)⁻¹·B + D on the continuous state space.
    StateSpace,
    /// X = (K − ω²M + jωC)⁻¹·F on the second-order form.
    SecondOrder,
    /// Σ_r φ_o,r·φ_rᵀ·F / (ω_r² − ω² + 2jζ_r·ω_r·ω) with ζ_r from the diagonal of Φᵀ·C·Φ.
    /// Exact only when Φᵀ·C·Φ is diagonal (the bare building with Rayleigh or modal damping);
    /// with an actuator fitted it drops the modal coupling and is an approximation.
    ModalSuperposition,
}

/// A frequency response sampled on a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Frf {
    /// Frequencies, in Hz.
    pub frequencies_hz: Vec<f64>,
    /// Complex response at each frequency, in the units of the requested [`FrfKind`].
    pub values: Vec<C64>,
}

/// Generalized force vector (one entry per DOF) of a unit input.
pub fn input_load(building: &ShearBuilding, input: FrfInput) -> Result<DVector<f64>, FrfError> {
    let mut load = DVector::zeros(building.dofs());
    match input {
        FrfInput::FloorForce { floor } if (1..=building.floors()).contains(&floor) => {
            load[floor - 1] = 1.0;
        }
        FrfInput::ActuatorForce => {
            let (Some(actuator), Some(proof)) = (building.actuator(), building.proof_mass_dof())
            else {
                return Err(FrfError::Invalid(vec![
                    "the actuator force is an input only when an actuator is fitted".into(),
                ]));
            };
            load[proof] = 1.0;
            load[actuator.floor - 1] = -1.0;
        }
        FrfInput::FloorForce { floor } => {
            return Err(FrfError::Invalid(vec![format!(
                "input floor {floor} must be within 1..={}",
                building.floors()
            )]));
        }
    }
    Ok(load)
}

/// Evaluates one input/output pair of `building` over `grid` by `method`.
///
/// # Errors
/// [`FrfError::Invalid`] listing every problem with the request and grid;
/// [`FrfError::Numerical`] if a system matrix is singular at some frequency.
pub fn frequency_response(
    building: &ShearBuilding,
    request: &FrfRequest,
    grid: &FrequencyGrid,
    method: FrfMethod,
) -> Result<Frf, FrfError> {
    let mut problems = request.problems(building);
    problems.extend(grid.problems());
    if !problems.is_empty() {
        return Err(FrfError::Invalid(problems));
    }
    let frequencies_hz = grid.frequencies_hz();
    let out_dof = request.output_floor - 1;
    let order = request.kind.derivative_order();
    let values = match method {
        FrfMethod::StateSpace => {
            let ss = building.state_space();
            let column = match request.input {
                FrfInput::FloorForce { floor } => ss.input_floor_force(floor),
                FrfInput::ActuatorForce => ss
                    .input_actuator()
                    .ok_or_else(|| FrfError::Invalid(vec!["no actuator fitted".into()]))?,
            };
            let b = ss.b.column(column).into_owned();
            let dofs = building.dofs();
            // Displacement and velocity are states; acceleration is the model's own output
            // row, which carries the force feedthrough in D.
            let (c, d) = match request.kind {
                FrfKind::Receptance => (unit_row(2 * dofs, out_dof), 0.0),
                FrfKind::Mobility => (unit_row(2 * dofs, dofs + out_dof), 0.0),
                FrfKind::Accelerance => {
                    let row = ss.output_floor_accel(request.output_floor);
                    (ss.c.row(row).into_owned(), ss.d[(row, column)])
                }
            };
            frequencies_hz
                .iter()
                .map(|f| state_space_response(&ss.a, &b, &c, d, omega(*f)))
                .collect::<Result<Vec<_>, _>>()?
        }
        FrfMethod::SecondOrder => {
            let load = input_load(building, request.input)?;
            frequencies_hz
                .iter()
                .map(|f| {
                    let w = omega(*f);
                    let x = second_order_response(
                        building.mass_matrix(),
                        building.damping_matrix(),
                        building.stiffness_matrix(),
                        &load,
                        w,
                    )?;
                    Ok(x[out_dof] * jw_power(w, order))
                })
                .collect::<Result<Vec<_>, FrfError>>()?
        }
        FrfMethod::ModalSuperposition => {
            let load = input_load(building, request.input)?;
            let modes = building.modes();
            let zetas = modal_damping_ratios(modes, building.damping_matrix());
            let participation = modes.shapes.transpose() * &load;
            frequencies_hz
                .iter()
                .map(|f| {
                    let w = omega(*f);
                    let x: C64 = (0..modes.len())
                        .map(|r| {
                            let wr = modes.omegas_rad_s[r];
                            let numerator = modes.shapes[(out_dof, r)] * participation[r];
                            C64::from(numerator)
                                / C64::new(wr * wr - w * w, 2.0 * zetas[r] * wr * w)
                        })
                        .sum();
                    x * jw_power(w, order)
                })
                .collect()
        }
    };
    Ok(Frf {
        frequencies_hz,
        values,
    })
}

/// ω = 2π·f, in rad/s.
pub fn omega(f_hz: f64) -> f64 {
    std::f64::consts::TAU * f_hz
}

/// (jω)^p for p = 0, 1, 2.
fn jw_power(w: f64, order: i32) -> C64 {
    C64::new(0.0, w).powi(order)
}

fn unit_row(n: usize, index: usize) -> RowDVector<f64> {
    let mut row = RowDVector::zeros(n);
    row[index] = 1.0;
    row
}

/// x = (jωI − A)⁻¹·b: every state's response to one input at one frequency.
///
/// # Errors
/// [`FrfError::Numerical`] if jω is an eigenvalue of A (or A and b do not fit).
pub fn state_response(
    a: &DMatrix<f64>,
    b: &DVector<f64>,
    omega_rad_s: f64,
) -> Result<DVector<C64>, FrfError> {
    if !a.is_square() || a.nrows() != b.len() {
        return Err(FrfError::Numerical("A must be square and b must fit it"));
    }
    let mut resolvent = a.map(|x| C64::new(-x, 0.0));
    for i in 0..a.nrows() {
        resolvent[(i, i)] += C64::new(0.0, omega_rad_s);
    }
    resolvent
        .lu()
        .solve(&b.map(C64::from))
        .ok_or(FrfError::Numerical(
            "jωI − A is singular: the frequency hits an undamped pole",
        ))
}

/// H(jω) = c·(jωI − A)⁻¹·b + d for one input and one output.
///
/// # Errors
/// As [`state_response`].
pub fn state_space_response(
    a: &DMatrix<f64>,
    b: &DVector<f64>,
    c: &RowDVector<f64>,
    d: f64,
    omega_rad_s: f64,
) -> Result<C64, FrfError> {
    let x = state_response(a, b, omega_rad_s)?;
    Ok(c.iter().zip(x.iter()).map(|(ci, xi)| xi * *ci).sum::<C64>() + d)
}

/// x = (K − ω²M + jωC)⁻¹·f: the complex displacement amplitudes under the harmonic load `f`.
///
/// # Errors
/// [`FrfError::Numerical`] if the dynamic stiffness is singular (an undamped resonance) or
/// the matrices do not fit.
pub fn second_order_response(
    mass: &DMatrix<f64>,
    damping: &DMatrix<f64>,
    stiffness: &DMatrix<f64>,
    load: &DVector<f64>,
    omega_rad_s: f64,
) -> Result<DVector<C64>, FrfError> {
    let n = mass.nrows();
    if !mass.is_square()
        || damping.shape() != mass.shape()
        || stiffness.shape() != mass.shape()
        || load.len() != n
    {
        return Err(FrfError::Numerical(
            "M, C, K must be square, of equal size, and fit the load",
        ));
    }
    let w = omega_rad_s;
    let dynamic = DMatrix::from_fn(n, n, |r, c| {
        C64::new(
            stiffness[(r, c)] - w * w * mass[(r, c)],
            w * damping[(r, c)],
        )
    });
    dynamic
        .lu()
        .solve(&load.map(C64::from))
        .ok_or(FrfError::Numerical(
            "K − ω²M + jωC is singular: the frequency hits an undamped resonance",
        ))
}

/// Modal damping ratios ζ_r = (Φᵀ·C·Φ)_rr / (2·ω_r) with mass-normalised Φ. A zero
/// frequency (rigid-body mode) gets ζ = 0, since the ratio has no meaning there.
pub fn modal_damping_ratios(modes: &Modes, damping: &DMatrix<f64>) -> Vec<f64> {
    let modal = modes.shapes.transpose() * damping * &modes.shapes;
    (0..modes.len())
        .map(|r| {
            let wr = modes.omegas_rad_s[r];
            if wr > 0.0 {
                modal[(r, r)] / (2.0 * wr)
            } else {
                0.0
            }
        })
        .collect()
}

/// Eigenvalues of a real square matrix, via a real Schur decomposition.
///
/// # Errors
/// [`FrfError::Numerical`] if the matrix has non-finite entries or the QR iteration does
/// not converge within its budget.
pub fn eigenvalues(a: &DMatrix<f64>) -> Result<Vec<C64>, FrfError> {
    if !a.is_square() {
        return Err(FrfError::Numerical("eigenvalues need a square matrix"));
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Err(FrfError::Numerical("matrix has a non-finite entry"));
    }
    if a.nrows() == 0 {
        return Ok(Vec::new());
    }
    let budget = SCHUR_ITERATIONS_PER_EIGENVALUE * a.nrows();
    let schur = Schur::try_new(a.clone(), f64::EPSILON, budget)
        .ok_or(FrfError::Numerical("Schur decomposition did not converge"))?;
    Ok(schur.complex_eigenvalues().iter().copied().collect())
}

/// One undamped mode with its proportional-damping estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeSummary {
    /// Mode number, 1-based, ascending in frequency.
    pub mode: usize,
    /// Undamped natural frequency, in Hz.
    pub frequency_hz: f64,
    /// Mass-normalised shape (Φᵀ·M·Φ = I), one entry per DOF (floors 1..=N, then the proof
    /// mass), in 1/√kg. Largest-magnitude entry positive.
    pub shape: Vec<f64>,
    /// ζ_r = (Φᵀ·C·Φ)_rr / (2·ω_r), fraction of critical.
    pub modal_damping_ratio: f64,
}

/// One pole of the damped system (one per complex-conjugate pair).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pole {
    /// |λ| / 2π, in Hz.
    pub natural_frequency_hz: f64,
    /// Im λ / 2π, in Hz.
    pub damped_frequency_hz: f64,
    /// −Re λ / |λ|, fraction of critical.
    pub damping_ratio: f64,
}

impl Pole {
    /// Summarises the eigenvalue λ.
    pub fn from_eigenvalue(lambda: C64) -> Self {
        let magnitude = lambda.norm();
        Self {
            natural_frequency_hz: magnitude / std::f64::consts::TAU,
            damped_frequency_hz: lambda.im.abs() / std::f64::consts::TAU,
            damping_ratio: if magnitude > 0.0 {
                -lambda.re / magnitude
            } else {
                0.0
            },
        }
    }
}

/// Undamped modes, modal damping ratios and the poles of the damped model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModalAnalysis {
    /// Number of floors N.
    pub floors: usize,
    /// Host floor of the actuator, if one is fitted.
    pub actuator_floor: Option<usize>,
    /// Degrees of freedom: N, plus the proof mass if fitted.
    pub dofs: usize,
    /// Undamped modes, ascending.
    pub modes: Vec<ModeSummary>,
    /// Largest |(Φᵀ·C·Φ)_rs| / √((Φᵀ·C·Φ)_rr·(Φᵀ·C·Φ)_ss) over r ≠ s: 0 for classical
    /// damping, where the modal ratios are exact; otherwise the poles are the truth.
    pub modal_damping_coupling: f64,
    /// Poles of the damped model (eigenvalues of A, upper half plane), ascending in
    /// natural frequency.
    pub poles: Vec<Pole>,
}

/// Modal analysis of `building`.
///
/// # Errors
/// [`FrfError::Numerical`] if the eigenvalues of A cannot be computed.
pub fn modal_analysis(building: &ShearBuilding) -> Result<ModalAnalysis, FrfError> {
    let modes = building.modes();
    let zetas = modal_damping_ratios(modes, building.damping_matrix());
    let modal_c = modes.shapes.transpose() * building.damping_matrix() * &modes.shapes;
    let mut coupling: f64 = 0.0;
    for r in 0..modes.len() {
        for s in 0..modes.len() {
            let scale = (modal_c[(r, r)] * modal_c[(s, s)]).abs().sqrt();
            if r != s && scale > 0.0 {
                coupling = coupling.max(modal_c[(r, s)].abs() / scale);
            }
        }
    }
    let summaries = (0..modes.len())
        .map(|r| ModeSummary {
            mode: r + 1,
            frequency_hz: modes.omegas_rad_s[r] / std::f64::consts::TAU,
            shape: modes.shapes.column(r).iter().copied().collect(),
            modal_damping_ratio: zetas[r],
        })
        .collect();
    let mut poles: Vec<Pole> = eigenvalues(&building.state_space().a)?
        .into_iter()
        .filter(|l| l.im >= 0.0)
        .map(Pole::from_eigenvalue)
        .collect();
    poles.sort_by(|a, b| a.natural_frequency_hz.total_cmp(&b.natural_frequency_hz));
    Ok(ModalAnalysis {
        floors: building.floors(),
        actuator_floor: building.actuator().map(|a| a.floor),
        dofs: building.dofs(),
        modes: summaries,
        modal_damping_coupling: coupling,
        poles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grid_has_9901_points_ending_at_100_hz() {
        let grid = FrequencyGrid::default();
        let f = grid.frequencies_hz();
        assert_eq!(f.len(), 9901);
        assert_eq!(f[0], 1.0);
        // f_min + 9900·0.01 rounds once: within an ulp or two of 100.
        assert!((f[9900] - 100.0).abs() < 1e-12);
    }

    #[test]
    fn invalid_grid_reports_every_problem_and_has_no_points() {
        let grid = FrequencyGrid {
            f_min_hz: -1.0,
            f_max_hz: f64::NAN,
            df_hz: 0.0,
        };
        assert_eq!(grid.problems().len(), 3, "{:?}", grid.problems());
        assert!(grid.is_empty());
        let huge = FrequencyGrid {
            f_min_hz: 0.0,
            f_max_hz: 1e3,
            df_hz: 1e-6,
        };
        assert_eq!(huge.problems().len(), 1);
    }

    #[test]
    fn request_for_the_actuator_on_a_bare_building_is_refused() {
        let request = FrfRequest {
            input: FrfInput::ActuatorForce,
            output_floor: 4,
            kind: FrfKind::Mobility,
        };
        let problems = request.problems(&ShearBuilding::southampton());
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn pole_of_an_sdof_gives_back_its_natural_frequency_and_damping() {
        let (wn, zeta) = (30.0_f64, 0.05_f64);
        let lambda = C64::new(-zeta * wn, wn * (1.0 - zeta * zeta).sqrt());
        let pole = Pole::from_eigenvalue(lambda);
        // Pure arithmetic on one complex number: a few ulps.
        assert!((pole.natural_frequency_hz * std::f64::consts::TAU - wn).abs() < 1e-12);
        assert!((pole.damping_ratio - zeta).abs() < 1e-14);
    }
}
