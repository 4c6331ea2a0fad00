//! Owns the assessment of a control law: closing the loop, kinetic-energy and effort spectra
//! under a unit harmonic force, baselines, the open-loop Nyquist locus, gain margin,
//! closed-loop stability, the DVF critical gain, and `ControlStudy`, which runs it all and
//! returns a serializable `ControlReport`. Definitions are in `dynamics/CONTROL.md`.

use nalgebra::{DMatrix, DVector, RowDVector};
use serde::{Deserialize, Serialize};

use crate::config::{InertialActuator, ShearBuildingConfig};
use crate::control::ControlError;
use crate::control::compensator::Compensator;
use crate::control::laws::{
    ControlLaw, Controller, DenHartogDesign, LqgWeights, TmdTuning, den_hartog, dvf_controller,
    lqg_controller, measurement_matrices,
};
use crate::control::plant::{ActuatedPlant, ActuatorElectrics};
use crate::frf::{
    C64, FrequencyGrid, Pole, eigenvalues, omega, second_order_response, state_response,
};
use crate::model::ShearBuilding;

/// Loop-gain factors the eigenvalue scans try per decade before bisecting. Fine enough
/// that a stable window narrower than 6 % of the gain is the only thing that could be missed;
/// the Nyquist cross-check would then disagree and show it.
const SCAN_POINTS_PER_DECADE: f64 = 40.0;
/// Bisection stops when the bracket is this small relative to the gain.
const BISECTION_RELATIVE_TOLERANCE: f64 = 1e-12;
/// Smallest DVF gain the critical-gain scan starts from, A/(m/s): the loop is open for all
/// practical purposes.
const CRITICAL_SCAN_FROM_A_PER_M_S: f64 = 1e-6;
/// Largest DVF gain the critical-gain scan reaches, A/(m/s) (1e7 N·s/m with Bl = 10).
const CRITICAL_SCAN_TO_A_PER_M_S: f64 = 1e6;
/// Largest gain-margin factor looked for above the design gain.
const GAIN_MARGIN_SCAN_TO: f64 = 1e4;
/// Nyquist search band, Hz: wide enough that crossings outside it are irrelevant to the rig
/// (the structure and actuator live between 1 and 100 Hz).
const NYQUIST_SEARCH_HZ: (f64, f64) = (1e-3, 1e5);
/// Log-spaced Nyquist search points per decade, before pole clustering.
const NYQUIST_POINTS_PER_DECADE: f64 = 200.0;
/// Half-width of the extra cluster of search points around each pole, in units of that
/// pole's decay rate |Re λ|; a resonance turns the locus through 180° within ±1 of that.
const NYQUIST_CLUSTER_HALF_WIDTH: f64 = 40.0;
/// Points in each cluster.
const NYQUIST_CLUSTER_POINTS: usize = 321;

/// A closed loop ẋ = A·x + b·w under one excitation force w (N), with the outputs the
/// assessment needs. States: plant, then controller.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedLoop {
    /// Closed-loop state matrix.
    pub a: DMatrix<f64>,
    /// ẋ per N of excitation.
    pub b_excitation: DVector<f64>,
    /// Floor velocities (m/s), rows over the closed-loop state.
    pub c_floor_velocity: DMatrix<f64>,
    /// Coil current (A) as a row over the closed-loop state.
    pub c_current: RowDVector<f64>,
    /// Coil current per N of excitation fed straight through, A/N.
    pub d_current: f64,
}

/// Closes i = κ·K(s)·y around `plant` (κ = `loop_scale`, 1 for the design), with the
/// excitation on `excitation_floor` (1-based). `None` leaves the coil open: the passive plant.
///
/// # Errors
/// [`ControlError::Invalid`] for a floor out of range; [`ControlError::Numerical`] if the
/// loop is algebraically singular (1 − κ·d·d_i = 0).
pub fn close_loop(
    plant: &ActuatedPlant,
    controller: Option<&Controller>,
    loop_scale: f64,
    excitation_floor: usize,
) -> Result<ClosedLoop, ControlError> {
    if !(1..=plant.floors()).contains(&excitation_floor) {
        return Err(ControlError::Invalid(vec![format!(
            "excitation floor {excitation_floor} must be within 1..={}",
            plant.floors()
        )]));
    }
    let n = plant.n_states();
    let bw = plant
        .b_floor_force
        .column(excitation_floor - 1)
        .into_owned();
    let Some(k) = controller else {
        return Ok(ClosedLoop {
            a: plant.a.clone(),
            b_excitation: bw,
            c_floor_velocity: plant.c_floor_velocity.clone(),
            c_current: RowDVector::zeros(n),
            d_current: 0.0,
        });
    };
    let (cy, dyu, dyf) = measurement_matrices(plant, k.measurement);
    let dyw = dyf.column(excitation_floor - 1).into_owned();
    let nk = k.a.nrows();
    // i = κ·(c·ξ + d·(C·x + d_i·i + d_w·w))  ⇒  i = s·(c·ξ + d·C·x + d·d_w·w), s = κ/(1 − κ·d·d_i).
    let algebraic = 1.0 - loop_scale * k.d.dot(&dyu.transpose());
    if algebraic.abs() < 1e-12 {
        return Err(ControlError::Numerical(
            "closed loop is algebraically singular",
        ));
    }
    let s = loop_scale / algebraic;
    let i_x: RowDVector<f64> = (&k.d * &cy) * s;
    let i_xi: RowDVector<f64> = &k.c * s;
    let i_w = s * k.d.dot(&dyw.transpose());

    let mut a = DMatrix::zeros(n + nk, n + nk);
    a.view_mut((0, 0), (n, n))
        .copy_from(&(&plant.a + &plant.b_current * &i_x));
    a.view_mut((0, n), (n, nk))
        .copy_from(&(&plant.b_current * &i_xi));
    // ξ̇ = A_k·ξ + B_k·(C·x + d_i·i + d_w·w).
    a.view_mut((n, 0), (nk, n))
        .copy_from(&(&k.b * (&cy + &dyu * &i_x)));
    a.view_mut((n, n), (nk, nk))
        .copy_from(&(&k.a + &k.b * &dyu * &i_xi));
    let mut b_excitation = DVector::zeros(n + nk);
    b_excitation
        .rows_mut(0, n)
        .copy_from(&(&bw + &plant.b_current * i_w));
    b_excitation
        .rows_mut(n, nk)
        .copy_from(&(&k.b * (&dyw + &dyu * i_w)));
    let mut c_floor_velocity = DMatrix::zeros(plant.floors(), n + nk);
    c_floor_velocity
        .view_mut((0, 0), (plant.floors(), n))
        .copy_from(&plant.c_floor_velocity);
    let mut c_current = RowDVector::zeros(n + nk);
    c_current.columns_mut(0, n).copy_from(&i_x);
    c_current.columns_mut(n, nk).copy_from(&i_xi);
    Ok(ClosedLoop {
        a,
        b_excitation,
        c_floor_velocity,
        c_current,
        d_current: i_w,
    })
}

/// Time-averaged kinetic energy ¼·Σ_j m_j·|V_j|² (J per N² of force amplitude) of floors
/// with masses `masses_kg` and complex velocity amplitudes `velocities`.
pub fn kinetic_energy(masses_kg: &[f64], velocities: &DVector<C64>) -> f64 {
    0.25 * masses_kg
        .iter()
        .zip(velocities.iter())
        .map(|(m, v)| m * v.norm_sqr())
        .sum::<f64>()
}

/// Kinetic-energy spectrum of the structure and the coil current under a unit harmonic
/// force, at each `omegas_rad_s`.
///
/// # Errors
/// [`ControlError::Numerical`] if the closed loop has an undamped pole on a frequency.
pub fn closed_loop_spectra(
    closed: &ClosedLoop,
    masses_kg: &[f64],
    omegas_rad_s: &[f64],
) -> Result<(Vec<f64>, Vec<C64>), ControlError> {
    let mut energy = Vec::with_capacity(omegas_rad_s.len());
    let mut current = Vec::with_capacity(omegas_rad_s.len());
    for &w in omegas_rad_s {
        let x = state_response(&closed.a, &closed.b_excitation, w)?;
        let v = closed.c_floor_velocity.map(C64::from) * &x;
        energy.push(kinetic_energy(masses_kg, &v));
        let i: C64 = closed
            .c_current
            .iter()
            .zip(x.iter())
            .map(|(c, xi)| xi * *c)
            .sum::<C64>()
            + closed.d_current;
        current.push(i);
    }
    Ok((energy, current))
}

/// Kinetic-energy spectrum of the first `masses_kg.len()` DOFs of a second-order model
/// M·ẍ + C·ẋ + K·x = f under the unit harmonic load `load`: ¼·Σ m_j·ω²·|X_j|².
///
/// # Errors
/// [`ControlError::Numerical`] if the dynamic stiffness is singular on a frequency.
pub fn second_order_energy_spectrum(
    mass: &DMatrix<f64>,
    damping: &DMatrix<f64>,
    stiffness: &DMatrix<f64>,
    load: &DVector<f64>,
    masses_kg: &[f64],
    omegas_rad_s: &[f64],
) -> Result<Vec<f64>, ControlError> {
    omegas_rad_s
        .iter()
        .map(|&w| {
            let x = second_order_response(mass, damping, stiffness, load, w)?;
            let v = x.rows(0, masses_kg.len()).map(|xi| xi * C64::new(0.0, w));
            Ok(kinetic_energy(masses_kg, &v))
        })
        .collect()
}

/// Open-loop transfer L(jω) = −K(jω)·P(jω) with the loop broken at the coil current, where
/// P maps current to the controller's measurement. The closed loop's characteristic equation
/// is 1 + κ·L = 0, so the standard Nyquist rules apply. For DVF with C(s) = 1 this is
/// h·G(jω) with G(jω) = −v_host/i.
///
/// # Errors
/// [`ControlError::Numerical`] if ω hits an undamped pole of the plant or controller.
pub fn loop_transfer(
    plant: &ActuatedPlant,
    controller: &Controller,
    omega_rad_s: f64,
) -> Result<C64, ControlError> {
    let (cy, dyu, _) = measurement_matrices(plant, controller.measurement);
    let x = state_response(&plant.a, &plant.b_current, omega_rad_s)?;
    let p = cy.map(C64::from) * &x + dyu.map(C64::from);
    let mut k = controller.d.map(C64::from);
    if controller.a.nrows() > 0 {
        for (j, kj) in k.iter_mut().enumerate() {
            let column = controller.b.column(j).into_owned();
            let xi = state_response(&controller.a, &column, omega_rad_s)?;
            *kj += controller
                .c
                .iter()
                .zip(xi.iter())
                .map(|(c, z)| z * *c)
                .sum::<C64>();
        }
    }
    Ok(-k.iter().zip(p.iter()).map(|(a, b)| a * b).sum::<C64>())
}

/// A crossing of the negative real axis by the Nyquist locus.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseCrossover {
    /// Frequency of the crossing, Hz.
    pub frequency_hz: f64,
    /// L(jω) there (real, negative).
    pub loop_value: f64,
    /// The loop-gain factor κ = −1/L that would put the locus through −1.
    pub gain_factor: f64,
}

/// Every crossing of the negative real axis by L(jω) for ω in the Nyquist search band,
/// sorted by gain factor. Found on a log grid with extra points clustered around every pole
/// of the plant and controller, then refined by bisection on Im L to full precision.
///
/// # Errors
/// [`ControlError::Numerical`] if the transfer cannot be evaluated.
pub fn phase_crossovers(
    plant: &ActuatedPlant,
    controller: &Controller,
) -> Result<Vec<PhaseCrossover>, ControlError> {
    let (lo, hi) = (omega(NYQUIST_SEARCH_HZ.0), omega(NYQUIST_SEARCH_HZ.1));
    let decades = (hi / lo).log10();
    let count = (decades * NYQUIST_POINTS_PER_DECADE).ceil() as usize;
    let mut omegas: Vec<f64> = (0..=count)
        .map(|i| lo * 10f64.powf(decades * i as f64 / count as f64))
        .collect();
    let mut poles = eigenvalues(&plant.a)?;
    poles.extend(eigenvalues(&controller.a)?);
    for pole in poles.iter().filter(|p| p.im > 0.0) {
        let width = pole.re.abs().max(1e-9 * pole.im);
        for i in 0..NYQUIST_CLUSTER_POINTS {
            let t = -1.0 + 2.0 * i as f64 / (NYQUIST_CLUSTER_POINTS - 1) as f64;
            let w = pole.im + t * NYQUIST_CLUSTER_HALF_WIDTH * width;
            if w > lo && w < hi {
                omegas.push(w);
            }
        }
    }
    omegas.sort_by(f64::total_cmp);
    omegas.dedup();

    let values = omegas
        .iter()
        .map(|&w| loop_transfer(plant, controller, w))
        .collect::<Result<Vec<_>, _>>()?;
    let mut crossings = Vec::new();
    for i in 1..omegas.len() {
        let (l0, l1) = (values[i - 1], values[i]);
        if l0.im.signum() == l1.im.signum() || (l0.re >= 0.0 && l1.re >= 0.0) {
            continue;
        }
        let (mut a, mut b, mut fa) = (omegas[i - 1], omegas[i], l0.im);
        for _ in 0..200 {
            if b - a <= 4.0 * f64::EPSILON * b {
                break;
            }
            let mid = 0.5 * (a + b);
            let f_mid = loop_transfer(plant, controller, mid)?.im;
            if f_mid.signum() == fa.signum() {
                a = mid;
                fa = f_mid;
            } else {
                b = mid;
            }
        }
        let w = 0.5 * (a + b);
        let l = loop_transfer(plant, controller, w)?;
        if l.re < 0.0 {
            crossings.push(PhaseCrossover {
                frequency_hz: w / std::f64::consts::TAU,
                loop_value: l.re,
                gain_factor: -1.0 / l.re,
            });
        }
    }
    crossings.sort_by(|a, b| a.gain_factor.total_cmp(&b.gain_factor));
    Ok(crossings)
}

/// Largest real part of the closed-loop eigenvalues at loop gain κ, in 1/s.
///
/// # Errors
/// As [`close_loop`] and the eigen-solver.
pub fn max_real_part(
    plant: &ActuatedPlant,
    controller: &Controller,
    loop_scale: f64,
) -> Result<f64, ControlError> {
    let closed = close_loop(plant, Some(controller), loop_scale, 1)?;
    Ok(eigenvalues(&closed.a)?
        .iter()
        .map(|l| l.re)
        .fold(f64::NEG_INFINITY, f64::max))
}

/// The smallest loop gain κ in (`from`, `to`] at which a closed-loop eigenvalue reaches the
/// right half plane, by a log scan then bisection on max Re λ(κ). `None` if the loop stays
/// stable up to `to`. `from` must be a stable gain.
///
/// # Errors
/// [`ControlError::Numerical`] if the loop is already unstable at `from`, or as
/// [`max_real_part`].
pub fn first_instability(
    plant: &ActuatedPlant,
    controller: &Controller,
    from: f64,
    to: f64,
) -> Result<Option<f64>, ControlError> {
    if max_real_part(plant, controller, from)? >= 0.0 {
        return Err(ControlError::Numerical(
            "the closed loop is unstable at the start of the gain scan",
        ));
    }
    let steps = ((to / from).log10() * SCAN_POINTS_PER_DECADE)
        .ceil()
        .max(1.0) as usize;
    let mut stable = from;
    for i in 1..=steps {
        let kappa = from * (to / from).powf(i as f64 / steps as f64);
        if max_real_part(plant, controller, kappa)? >= 0.0 {
            let mut unstable = kappa;
            while unstable - stable > BISECTION_RELATIVE_TOLERANCE * unstable {
                let mid = 0.5 * (stable + unstable);
                if max_real_part(plant, controller, mid)? >= 0.0 {
                    unstable = mid;
                } else {
                    stable = mid;
                }
            }
            return Ok(Some(0.5 * (stable + unstable)));
        }
        stable = kappa;
    }
    Ok(None)
}

/// The DVF gain at which the collocated loop goes unstable, found two independent ways.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CriticalGain {
    /// Host floor, 1-based.
    pub floor: usize,
    /// Smallest h > 0 with a closed-loop eigenvalue in the right half plane, A/(m/s).
    pub gain_a_per_m_s: f64,
    /// The same as a physical damper constant Bl·h, N·s/m.
    pub feedback_gain_n_s_per_m: f64,
    /// 1/|G(jω)| at the Nyquist crossing of the negative real axis farthest from the
    /// origin, A/(m/s).
    pub nyquist_gain_a_per_m_s: f64,
    /// Frequency of that crossing, where the closed loop oscillates at the critical gain, Hz.
    pub crossover_hz: f64,
    /// |eigen − Nyquist| / eigen.
    pub relative_difference: f64,
}

/// Critical DVF gain of `plant` with compensator C(s): eigenvalue bisection from h → 0,
/// cross-checked against the Nyquist locus of G(jω)·C(jω). `None` if the loop stays stable
/// up to h = 1e6 A/(m/s) (e.g. an ideal force actuator).
///
/// # Errors
/// [`ControlError::Invalid`] for an invalid compensator; [`ControlError::Numerical`] if the
/// linear algebra fails.
pub fn dvf_critical_gain(
    plant: &ActuatedPlant,
    compensator: &Compensator,
) -> Result<Option<CriticalGain>, ControlError> {
    let unit = dvf_controller(1.0, compensator)?;
    let Some(eigen) = first_instability(
        plant,
        &unit,
        CRITICAL_SCAN_FROM_A_PER_M_S,
        CRITICAL_SCAN_TO_A_PER_M_S,
    )?
    else {
        return Ok(None);
    };
    let crossings = phase_crossovers(plant, &unit)?;
    let first = crossings.first().copied();
    let (nyquist, crossover_hz) =
        first.map_or((f64::NAN, f64::NAN), |c| (c.gain_factor, c.frequency_hz));
    Ok(Some(CriticalGain {
        floor: plant.host_floor,
        gain_a_per_m_s: eigen,
        feedback_gain_n_s_per_m: eigen * plant.electrics.force_factor_n_per_a,
        nyquist_gain_a_per_m_s: nyquist,
        crossover_hz,
        relative_difference: (eigen - nyquist).abs() / eigen,
    }))
}

/// A frequency-response study of one actuator position: the building (with the actuator on
/// its host floor), the coil, the excitation and the sweep. The defaults are the Southampton
/// reference case of CONTROL.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlStudy {
    /// The building, with its actuator fitted (the actuator's floor is the host floor).
    pub building: ShearBuildingConfig,
    /// The coil's constants.
    #[serde(default)]
    pub electrics: ActuatorElectrics,
    /// Floor carrying the unit harmonic excitation force, 1-based.
    #[serde(default = "default_excitation_floor")]
    pub excitation_floor: usize,
    /// The frequency sweep.
    #[serde(default)]
    pub grid: FrequencyGrid,
}

/// The reference excitation acts on floor 1.
pub const fn default_excitation_floor() -> usize {
    1
}

impl ControlStudy {
    /// The Southampton rig with the default actuator on `actuator_floor`, default coil, unit
    /// force on floor 1, 1–100 Hz by 0.01 Hz.
    pub fn southampton(actuator_floor: usize) -> Self {
        Self {
            building: ShearBuildingConfig {
                actuator: Some(InertialActuator {
                    floor: actuator_floor,
                    ..InertialActuator::default()
                }),
                ..ShearBuildingConfig::southampton()
            },
            electrics: ActuatorElectrics::default(),
            excitation_floor: default_excitation_floor(),
            grid: FrequencyGrid::default(),
        }
    }

    /// Every rule this study breaks, as sentences; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.building.problems();
        if self.building.actuator.is_none() {
            problems.push("a control study needs an actuator fitted to the building".into());
        }
        let floors = self.building.floors();
        if !(1..=floors).contains(&self.excitation_floor) {
            problems.push(format!(
                "excitation floor {} must be within 1..={floors}",
                self.excitation_floor
            ));
        }
        problems.extend(self.electrics.problems());
        problems.extend(self.grid.problems());
        problems
    }

    /// The actuated building, validated.
    fn building(&self) -> Result<ShearBuilding, ControlError> {
        let problems = self.problems();
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems));
        }
        Ok(ShearBuilding::new(self.building.clone())?)
    }

    /// Critical DVF gain of this study's actuator position with compensator C(s).
    ///
    /// # Errors
    /// As [`dvf_critical_gain`], plus [`ControlError::Invalid`] for an invalid study.
    pub fn dvf_critical_gain(
        &self,
        compensator: &Compensator,
    ) -> Result<Option<CriticalGain>, ControlError> {
        let building = self.building()?;
        let plant = ActuatedPlant::inertial(&building, self.electrics)?;
        dvf_critical_gain(&plant, compensator)
    }

    /// Assesses `law` on this study: see [`ControlReport`].
    ///
    /// # Errors
    /// [`ControlError::Invalid`] listing every problem of the study and the law;
    /// [`ControlError::Numerical`] if a design or response computation fails.
    pub fn run(&self, law: &ControlLaw) -> Result<ControlReport, ControlError> {
        let mut problems = self.problems();
        problems.extend(law.problems(self.building.floors()));
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems));
        }
        let building = self.building()?;
        let host_floor = building
            .actuator()
            .map(|a| a.floor)
            .ok_or(ControlError::Numerical("validated study lost its actuator"))?;
        let frequencies_hz = self.grid.frequencies_hz();
        let omegas: Vec<f64> = frequencies_hz.iter().map(|&f| omega(f)).collect();
        let floors = building.floors();
        let masses = &self.building.floor_masses_kg;

        let baselines = Baselines::compute(&building, self.excitation_floor, masses, &omegas)?;
        let bands = mode_band_edges(&building, &self.grid)?;

        let passive_plant = ActuatedPlant::inertial(&building, self.electrics)?;
        let mut tmd = None;
        let mut dvf_gain = None;
        let mut lqg_info = None;
        let (plant, controller) = match law {
            ControlLaw::Tmd { tuning } => {
                let (plant, design) = match tuning {
                    TmdTuning::AsBuilt => (passive_plant.clone(), None),
                    TmdTuning::DenHartog { mode } => {
                        let (tuned, design) = den_hartog(&building, *mode)?;
                        let tuned_building = ShearBuilding::new(ShearBuildingConfig {
                            actuator: Some(tuned),
                            ..self.building.clone()
                        })?;
                        (
                            ActuatedPlant::inertial(&tuned_building, self.electrics)?,
                            Some(design),
                        )
                    }
                };
                let suspension = match &design {
                    Some(d) => (d.stiffness_n_per_m, d.damping_n_s_per_m),
                    None => building
                        .actuator()
                        .map(|a| (a.stiffness_n_per_m, a.damping_n_s_per_m))
                        .unwrap_or_default(),
                };
                tmd = Some(TmdReport {
                    stiffness_n_per_m: suspension.0,
                    damping_n_s_per_m: suspension.1,
                    den_hartog: design,
                });
                (plant, None)
            }
            ControlLaw::Dvf {
                gain_a_per_m_s,
                compensator,
            } => {
                dvf_gain = Some((*gain_a_per_m_s, compensator.clone()));
                let controller = dvf_controller(*gain_a_per_m_s, compensator)?;
                (passive_plant.clone(), Some(controller))
            }
            ControlLaw::Lqg { weights } => {
                let design = lqg_controller(&passive_plant, weights)?;
                lqg_info = Some(LqgReport::from_design(weights, &design)?);
                (passive_plant.clone(), Some(design.controller))
            }
        };

        let closed = close_loop(&plant, controller.as_ref(), 1.0, self.excitation_floor)?;
        let (energy, current) = closed_loop_spectra(&closed, masses, &omegas)?;
        let bl = self.electrics.force_factor_n_per_a;
        let force_abs: Vec<f64> = current.iter().map(|i| bl * i.norm()).collect();

        let controlled = EnergyIntegrals::of(&frequencies_hz, &energy, &bands);
        let locked = EnergyIntegrals::of(&frequencies_hz, &baselines.locked, &bands);
        let passive = EnergyIntegrals::of(&frequencies_hz, &baselines.passive, &bands);
        let bare = EnergyIntegrals::of(&frequencies_hz, &baselines.bare, &bands);
        let kinetic_energy = KineticEnergyReport {
            mode_band_edges_hz: bands.clone(),
            reduction_db_vs_locked: Reductions::between(&locked, &controlled),
            reduction_db_vs_passive: Reductions::between(&passive, &controlled),
            reduction_db_vs_bare: Reductions::between(&bare, &controlled),
            controlled,
            locked,
            passive,
            bare,
        };

        let bandwidth_hz = self.grid.f_max_hz - self.grid.f_min_hz;
        let force_squared: Vec<f64> = force_abs.iter().map(|f| f * f).collect();
        let force_rms = (trapezoid(&frequencies_hz, &force_squared) / bandwidth_hz).sqrt();
        let (peak_index, peak_force) =
            force_abs
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, 0.0),
                    |best, (i, f)| if f > best.1 { (i, f) } else { best },
                );
        let current_rms = force_rms / bl;
        let effort = EffortReport {
            force_rms_n_per_n: force_rms,
            force_peak_n_per_n: peak_force,
            force_peak_frequency_hz: frequencies_hz.get(peak_index).copied().unwrap_or(f64::NAN),
            current_rms_a_per_n: current_rms,
            coil_power_w_per_n2: self.electrics.coil_resistance_ohm * current_rms * current_rms,
        };

        let closed_poles = eigenvalues(&closed.a)?;
        let stability = StabilityReport::of(&closed_poles);

        let mut nyquist = None;
        let open_loop = match &controller {
            Some(k) => {
                let locus = omegas
                    .iter()
                    .map(|&w| loop_transfer(&plant, k, w))
                    .collect::<Result<Vec<_>, _>>()?;
                nyquist = Some(locus);
                Some(LoopReport::of(&plant, k, stability.stable)?)
            }
            None => None,
        };

        let dvf = match dvf_gain {
            Some((gain, compensator)) => {
                let critical = dvf_critical_gain(&plant, &compensator)?;
                Some(DvfReport {
                    gain_a_per_m_s: gain,
                    feedback_gain_n_s_per_m: gain * bl,
                    fraction_of_critical: critical.map(|c| gain / c.gain_a_per_m_s),
                    critical,
                })
            }
            None => None,
        };

        let spectra = Spectra {
            frequency_hz: frequencies_hz.clone(),
            kinetic_energy_j_per_n2: energy,
            locked_kinetic_energy_j_per_n2: baselines.locked.clone(),
            passive_kinetic_energy_j_per_n2: baselines.passive.clone(),
            bare_kinetic_energy_j_per_n2: baselines.bare.clone(),
            actuator_force_n_per_n: force_abs,
            nyquist_re: nyquist.as_ref().map(|l| l.iter().map(|x| x.re).collect()),
            nyquist_im: nyquist.as_ref().map(|l| l.iter().map(|x| x.im).collect()),
        };

        Ok(ControlReport {
            law: law.clone(),
            host_floor,
            excitation_floor: self.excitation_floor,
            floors,
            grid: self.grid,
            electrics: self.electrics,
            tmd,
            dvf,
            lqg: lqg_info,
            kinetic_energy,
            effort,
            stability,
            open_loop,
            spectra: Some(spectra),
        })
    }
}

/// The three uncontrolled references, as kinetic-energy spectra on the sweep.
struct Baselines {
    /// Actuator housing and proof mass rigidly fixed to the host floor (mass loading only).
    locked: Vec<f64>,
    /// Actuator fitted, coil open: the proof mass rides its own suspension.
    passive: Vec<f64>,
    /// No actuator at all.
    bare: Vec<f64>,
}

impl Baselines {
    fn compute(
        building: &ShearBuilding,
        excitation_floor: usize,
        masses_kg: &[f64],
        omegas: &[f64],
    ) -> Result<Self, ControlError> {
        let floors = building.floors();
        let dofs = building.dofs();
        let (m, c, k) = (
            building.mass_matrix(),
            building.damping_matrix(),
            building.stiffness_matrix(),
        );
        let mut load = DVector::zeros(dofs);
        load[excitation_floor - 1] = 1.0;
        let passive = second_order_energy_spectrum(m, c, k, &load, masses_kg, omegas)?;

        // Locking imposes x_proof = x_host: T maps floor DOFs to all DOFs, and Tᵀ·(M, C, K)·T
        // keeps the same structural damping while the suspension (which then never strains)
        // drops out by itself.
        let mut t = DMatrix::zeros(dofs, floors);
        for floor in 0..floors {
            t[(floor, floor)] = 1.0;
        }
        if let (Some(a), Some(proof)) = (building.actuator(), building.proof_mass_dof()) {
            t[(proof, a.floor - 1)] = 1.0;
        }
        let tt = t.transpose();
        let locked_load = &tt * &load;
        let locked = second_order_energy_spectrum(
            &(&tt * m * &t),
            &(&tt * c * &t),
            &(&tt * k * &t),
            &locked_load,
            masses_kg,
            omegas,
        )?;

        let bare_building = ShearBuilding::new(ShearBuildingConfig {
            actuator: None,
            ..building.config().clone()
        })?;
        let bare = second_order_energy_spectrum(
            bare_building.mass_matrix(),
            bare_building.damping_matrix(),
            bare_building.stiffness_matrix(),
            &locked_load,
            masses_kg,
            omegas,
        )?;
        Ok(Self {
            locked,
            passive,
            bare,
        })
    }
}

/// Band edges [f_min, √(f₁·f₂), …, √(f_{N−1}·f_N), f_max] from the bare building's natural
/// frequencies, clamped to the sweep: band r holds mode r. Shared by every law and actuator
/// position so that reductions compare like with like.
fn mode_band_edges(
    building: &ShearBuilding,
    grid: &FrequencyGrid,
) -> Result<Vec<f64>, ControlError> {
    let bare = ShearBuilding::new(ShearBuildingConfig {
        actuator: None,
        ..building.config().clone()
    })?;
    let f = bare.natural_frequencies_hz();
    let mut edges = vec![grid.f_min_hz];
    edges.extend(
        f.windows(2)
            .map(|w| (w[0] * w[1]).sqrt().clamp(grid.f_min_hz, grid.f_max_hz)),
    );
    edges.push(grid.f_max_hz);
    Ok(edges)
}

/// ∫ y df by the trapezoid rule over the whole sweep.
pub fn trapezoid(f: &[f64], y: &[f64]) -> f64 {
    trapezoid_between(f, y, f64::NEG_INFINITY, f64::INFINITY)
}

/// ∫ y df over [lo, hi] ∩ sweep of the piecewise-linear interpolant, so that bands that
/// share an edge add up to the whole exactly.
pub fn trapezoid_between(f: &[f64], y: &[f64], lo: f64, hi: f64) -> f64 {
    let mut total = 0.0;
    for i in 1..f.len().min(y.len()) {
        let (f0, f1) = (f[i - 1], f[i]);
        let (a, b) = (f0.max(lo), f1.min(hi));
        if b <= a || f1 <= f0 {
            continue;
        }
        let at = |x: f64| y[i - 1] + (y[i] - y[i - 1]) * (x - f0) / (f1 - f0);
        total += 0.5 * (at(a) + at(b)) * (b - a);
    }
    total
}

/// Kinetic energy of one configuration integrated over the sweep and over each mode band.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnergyIntegrals {
    /// ∫ KE(f) df over the whole sweep, J·Hz/N².
    pub full_band_j_hz_per_n2: f64,
    /// ∫ KE(f) df over each mode band (mode 1 first), J·Hz/N².
    pub mode_bands_j_hz_per_n2: Vec<f64>,
    /// Highest KE(f) on the sweep, J/N².
    pub peak_j_per_n2: f64,
    /// Where that peak is, Hz.
    pub peak_frequency_hz: f64,
}

impl EnergyIntegrals {
    fn of(f: &[f64], energy: &[f64], bands: &[f64]) -> Self {
        let (peak_index, peak) =
            energy
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, 0.0),
                    |best, (i, e)| if e > best.1 { (i, e) } else { best },
                );
        Self {
            full_band_j_hz_per_n2: trapezoid(f, energy),
            mode_bands_j_hz_per_n2: bands
                .windows(2)
                .map(|w| trapezoid_between(f, energy, w[0], w[1]))
                .collect(),
            peak_j_per_n2: peak,
            peak_frequency_hz: f.get(peak_index).copied().unwrap_or(f64::NAN),
        }
    }
}

/// 10·log₁₀(baseline / controlled) for the whole sweep and each mode band: positive means
/// the law removed energy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reductions {
    /// Over the whole sweep, dB.
    pub full_band_db: f64,
    /// Over each mode band, dB.
    pub mode_bands_db: Vec<f64>,
}

impl Reductions {
    fn between(baseline: &EnergyIntegrals, controlled: &EnergyIntegrals) -> Self {
        let db = |b: f64, c: f64| 10.0 * (b / c).log10();
        Self {
            full_band_db: db(
                baseline.full_band_j_hz_per_n2,
                controlled.full_band_j_hz_per_n2,
            ),
            mode_bands_db: baseline
                .mode_bands_j_hz_per_n2
                .iter()
                .zip(&controlled.mode_bands_j_hz_per_n2)
                .map(|(b, c)| db(*b, *c))
                .collect(),
        }
    }
}

/// Kinetic energy of the structure: the law against the three baselines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KineticEnergyReport {
    /// Edges of the mode bands, Hz (N + 1 values).
    pub mode_band_edges_hz: Vec<f64>,
    /// With the law applied.
    pub controlled: EnergyIntegrals,
    /// Baseline: actuator housing and proof mass locked to the host floor.
    pub locked: EnergyIntegrals,
    /// Baseline: actuator fitted, coil open (the as-built passive absorber).
    pub passive: EnergyIntegrals,
    /// Baseline: no actuator at all.
    pub bare: EnergyIntegrals,
    /// Reduction against the locked baseline (the headline figure).
    pub reduction_db_vs_locked: Reductions,
    /// Reduction against the passive baseline: what the active part adds.
    pub reduction_db_vs_passive: Reductions,
    /// Reduction against the bare building.
    pub reduction_db_vs_bare: Reductions,
}

/// Actuator effort for a unit excitation; see CONTROL.md.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EffortReport {
    /// √(mean over the sweep of |F_a(f)|²): RMS coil force per RMS excitation force under
    /// band-limited white noise, N/N.
    pub force_rms_n_per_n: f64,
    /// Largest |F_a(f)| on the sweep, N/N.
    pub force_peak_n_per_n: f64,
    /// Where that peak is, Hz.
    pub force_peak_frequency_hz: f64,
    /// RMS coil current per RMS excitation force, A/N.
    pub current_rms_a_per_n: f64,
    /// Mean Joule power R·i_rms² in the coil per unit excitation variance, W/N².
    pub coil_power_w_per_n2: f64,
}

/// Closed-loop stability from the eigenvalues of the closed-loop A.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StabilityReport {
    /// Every eigenvalue has a negative real part.
    pub stable: bool,
    /// Largest real part, 1/s (negative when stable).
    pub max_real_part_per_s: f64,
    /// Smallest damping ratio among the poles.
    pub min_damping_ratio: f64,
    /// Poles (upper half plane and real), ascending in natural frequency.
    pub poles: Vec<Pole>,
}

impl StabilityReport {
    fn of(eigenvalues: &[C64]) -> Self {
        let max_real_part_per_s = eigenvalues
            .iter()
            .map(|l| l.re)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut poles: Vec<Pole> = eigenvalues
            .iter()
            .filter(|l| l.im >= 0.0)
            .map(|l| Pole::from_eigenvalue(*l))
            .collect();
        poles.sort_by(|a, b| a.natural_frequency_hz.total_cmp(&b.natural_frequency_hz));
        Self {
            stable: max_real_part_per_s < 0.0,
            max_real_part_per_s,
            min_damping_ratio: poles
                .iter()
                .map(|p| p.damping_ratio)
                .fold(f64::INFINITY, f64::min),
            poles,
        }
    }
}

/// The open loop L(jω) with the loop broken at the coil current.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoopReport {
    /// Upward gain margin from the Nyquist locus: the smallest κ > 1 with κ·L through −1,
    /// i.e. min 1/|L(jω_pc)| over crossings with −1 < L < 0. `None` if no such crossing
    /// exists (infinite margin) or the design is unstable.
    pub gain_margin: Option<f64>,
    /// The same in dB, 20·log₁₀.
    pub gain_margin_db: Option<f64>,
    /// Cross-check: smallest κ > 1 making a closed-loop eigenvalue unstable (scan up to 1e4).
    pub gain_margin_from_eigenvalues: Option<f64>,
    /// Every crossing of the negative real axis, by gain factor.
    pub phase_crossovers: Vec<PhaseCrossover>,
}

impl LoopReport {
    fn of(
        plant: &ActuatedPlant,
        controller: &Controller,
        stable: bool,
    ) -> Result<Self, ControlError> {
        let phase_crossovers = phase_crossovers(plant, controller)?;
        if !stable {
            return Ok(Self {
                gain_margin: None,
                gain_margin_db: None,
                gain_margin_from_eigenvalues: None,
                phase_crossovers,
            });
        }
        let gain_margin = phase_crossovers
            .iter()
            .map(|c| c.gain_factor)
            .find(|&k| k > 1.0);
        let gain_margin_from_eigenvalues =
            first_instability(plant, controller, 1.0, GAIN_MARGIN_SCAN_TO)?;
        Ok(Self {
            gain_margin,
            gain_margin_db: gain_margin.map(|g| 20.0 * g.log10()),
            gain_margin_from_eigenvalues,
            phase_crossovers,
        })
    }
}

/// The suspension the passive law runs on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TmdReport {
    /// Suspension stiffness, N/m.
    pub stiffness_n_per_m: f64,
    /// Suspension damping, N·s/m.
    pub damping_n_s_per_m: f64,
    /// The Den Hartog design, when re-tuned.
    pub den_hartog: Option<DenHartogDesign>,
}

/// The velocity-feedback gain in both units and against its critical value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DvfReport {
    /// h, A/(m/s).
    pub gain_a_per_m_s: f64,
    /// Bl·h, N·s/m.
    pub feedback_gain_n_s_per_m: f64,
    /// Critical gain of this position and compensator.
    pub critical: Option<CriticalGain>,
    /// h / h_critical.
    pub fraction_of_critical: Option<f64>,
}

/// The LQG design as numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LqgReport {
    /// The weights used.
    pub weights: LqgWeights,
    /// LQR gain K (A per state unit): i = −K·x̂.
    pub regulator_gain: Vec<f64>,
    /// Smallest damping ratio of the regulator poles eig(A − b·K).
    pub regulator_min_damping_ratio: f64,
    /// Smallest damping ratio of the estimator poles eig(A − L·C).
    pub estimator_min_damping_ratio: f64,
    /// Whether the controller on its own (A_k) is stable.
    pub controller_stable: bool,
}

impl LqgReport {
    fn from_design(
        weights: &LqgWeights,
        design: &crate::control::laws::LqgDesign,
    ) -> Result<Self, ControlError> {
        let min_zeta = |m: &DMatrix<f64>| -> Result<f64, ControlError> {
            Ok(StabilityReport::of(&eigenvalues(m)?).min_damping_ratio)
        };
        Ok(Self {
            weights: *weights,
            regulator_gain: design.regulator_gain.iter().copied().collect(),
            regulator_min_damping_ratio: min_zeta(&design.regulator_matrix)?,
            estimator_min_damping_ratio: min_zeta(&design.estimator_matrix)?,
            controller_stable: StabilityReport::of(&eigenvalues(&design.controller.a)?).stable,
        })
    }
}

/// The spectra behind the report, one value per sweep frequency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spectra {
    /// Sweep frequencies, Hz.
    pub frequency_hz: Vec<f64>,
    /// KE(f) with the law applied, J/N².
    pub kinetic_energy_j_per_n2: Vec<f64>,
    /// KE(f) of the locked baseline, J/N².
    pub locked_kinetic_energy_j_per_n2: Vec<f64>,
    /// KE(f) of the passive baseline, J/N².
    pub passive_kinetic_energy_j_per_n2: Vec<f64>,
    /// KE(f) of the bare building, J/N².
    pub bare_kinetic_energy_j_per_n2: Vec<f64>,
    /// |F_a(f)|, coil force per unit excitation, N/N.
    pub actuator_force_n_per_n: Vec<f64>,
    /// Re L(jω) of the open loop (absent for the passive law).
    pub nyquist_re: Option<Vec<f64>>,
    /// Im L(jω) of the open loop (absent for the passive law).
    pub nyquist_im: Option<Vec<f64>>,
}

/// Everything `ControlStudy::run` finds for one law. Definitions in CONTROL.md.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlReport {
    /// The law assessed.
    pub law: ControlLaw,
    /// Actuator and sensor floor, 1-based.
    pub host_floor: usize,
    /// Floor of the unit harmonic excitation, 1-based.
    pub excitation_floor: usize,
    /// Number of floors.
    pub floors: usize,
    /// The sweep.
    pub grid: FrequencyGrid,
    /// The coil.
    pub electrics: ActuatorElectrics,
    /// Passive-law details.
    pub tmd: Option<TmdReport>,
    /// DVF details.
    pub dvf: Option<DvfReport>,
    /// LQG details.
    pub lqg: Option<LqgReport>,
    /// Kinetic energy of the structure against the baselines.
    pub kinetic_energy: KineticEnergyReport,
    /// Actuator effort.
    pub effort: EffortReport,
    /// Closed-loop stability.
    pub stability: StabilityReport,
    /// Open-loop margins (absent for the passive law).
    pub open_loop: Option<LoopReport>,
    /// Per-frequency spectra; large, so callers may drop them before printing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spectra: Option<Spectra>,
}
