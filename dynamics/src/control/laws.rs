//! Owns the control laws — passive tuned-mass damper, direct velocity feedback, LQG — their
//! validation, and the design step that turns a law plus an `ActuatedPlant` into a linear
//! controller. Knows nothing of how the loop is assessed: that is `analysis.rs`.

use nalgebra::{DMatrix, DVector, RowDVector};
use serde::{Deserialize, Serialize};

use crate::config::InertialActuator;
use crate::control::ControlError;
use crate::control::compensator::Compensator;
use crate::control::plant::ActuatedPlant;
use crate::control::riccati::solve_care;
use crate::model::ShearBuilding;
use crate::modes::Modes;

/// Upper end of the velocity-feedback gain range the tool accepts, in A/(m/s). With the
/// default Bl = 10 N/A this is a 500 N·s/m skyhook damper.
pub const MAX_DVF_GAIN_A_PER_M_S: f64 = 50.0;

/// Default LQR weight on the coil current, in J/A²: the cost is ∫ (E(x) + ρ·i²) dt with E
/// the structure's mechanical energy in J. Chosen so that on the Southampton rig LQG spends
/// about the RMS coil force of DVF at half its critical gain (see CONTROL.md).
pub const fn default_lqg_current_weight_j_per_a2() -> f64 {
    1.0
}
/// Default intensity of the white force noise the Kalman filter assumes on every floor, N²·s.
pub const fn default_lqg_force_noise_n2_s() -> f64 {
    1.0
}
/// Default intensity of each accelerometer's white noise, (m/s²)²·s.
pub const fn default_lqg_accel_noise_m2_s3() -> f64 {
    1e-4
}

/// How the proof mass's suspension is set for the passive law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TmdTuning {
    /// The actuator's own spring and damper.
    #[default]
    AsBuilt,
    /// Spring and damper re-tuned by Den Hartog's rules for one mode of the structure
    /// (with the housing attached): f_opt = 1/(1 + μ), ζ_opt = √(3μ / (8·(1 + μ)³)).
    DenHartog {
        /// Target mode, 1-based.
        mode: usize,
    },
}

/// Weights of the LQG design (documented in CONTROL.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LqgWeights {
    /// ρ in the LQR cost ∫ (strain + kinetic energy of the structure + ρ·i²) dt, in J/A².
    #[serde(default = "default_lqg_current_weight_j_per_a2")]
    pub current_weight_j_per_a2: f64,
    /// Intensity W of the white force noise on every floor assumed by the Kalman filter, N²·s.
    #[serde(default = "default_lqg_force_noise_n2_s")]
    pub force_noise_n2_s: f64,
    /// Intensity V of each accelerometer's white measurement noise, (m/s²)²·s.
    #[serde(default = "default_lqg_accel_noise_m2_s3")]
    pub accel_noise_m2_s3: f64,
}

impl Default for LqgWeights {
    fn default() -> Self {
        Self {
            current_weight_j_per_a2: default_lqg_current_weight_j_per_a2(),
            force_noise_n2_s: default_lqg_force_noise_n2_s(),
            accel_noise_m2_s3: default_lqg_accel_noise_m2_s3(),
        }
    }
}

/// A vibration-control law for the actuator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "law", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlLaw {
    /// Passive tuned-mass damper: the proof mass on its suspension, no coil current.
    Tmd {
        /// Which suspension the proof mass rides on.
        #[serde(default)]
        tuning: TmdTuning,
    },
    /// Direct velocity feedback of the host floor's absolute velocity v (collocated):
    /// coil current i = h·C(s)·v, so the host floor feels −Bl·h·C(s)·v.
    Dvf {
        /// h, in A/(m/s), within 0..=50.
        gain_a_per_m_s: f64,
        /// C(s); unity by default.
        #[serde(default)]
        compensator: Compensator,
    },
    /// LQR on the structure + actuator state, with a Kalman estimator fed by the absolute
    /// accelerations of every floor.
    Lqg {
        /// Design weights.
        #[serde(default)]
        weights: LqgWeights,
    },
}

impl ControlLaw {
    /// Short name: `tmd`, `dvf` or `lqg`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Tmd { .. } => "tmd",
            Self::Dvf { .. } => "dvf",
            Self::Lqg { .. } => "lqg",
        }
    }

    /// Every rule this law breaks for a building of `floors` floors; empty when valid.
    pub fn problems(&self, floors: usize) -> Vec<String> {
        let mut problems = Vec::new();
        match self {
            Self::Tmd {
                tuning: TmdTuning::DenHartog { mode },
            } if !(1..=floors).contains(mode) => {
                problems.push(format!(
                    "Den Hartog target mode {mode} must be within 1..={floors}"
                ));
            }
            Self::Tmd { .. } => {}
            Self::Dvf {
                gain_a_per_m_s,
                compensator,
            } => {
                if !(0.0..=MAX_DVF_GAIN_A_PER_M_S).contains(gain_a_per_m_s) {
                    problems.push(format!(
                        "DVF gain h = {gain_a_per_m_s} A/(m/s) must be within 0..={MAX_DVF_GAIN_A_PER_M_S}"
                    ));
                }
                problems.extend(compensator.problems());
            }
            Self::Lqg { weights } => {
                for (name, value) in [
                    ("current_weight_j_per_a2", weights.current_weight_j_per_a2),
                    ("force_noise_n2_s", weights.force_noise_n2_s),
                    ("accel_noise_m2_s3", weights.accel_noise_m2_s3),
                ] {
                    if !(value.is_finite() && value > 0.0) {
                        problems.push(format!("LQG {name} = {value} must be positive and finite"));
                    }
                }
            }
        }
        problems
    }
}

/// The signal a controller reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measurement {
    /// Velocity of the host floor, m/s (one channel).
    HostVelocity,
    /// Absolute accelerations of floors 1..=N, m/s² (N channels).
    FloorAccelerations,
}

/// A linear controller ξ̇ = A·ξ + B·y, i = c·ξ + d·y, from the measurement y to the coil
/// current i (A). The law's sign is inside c and d: the loop is i = K(s)·y as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    /// What y is.
    pub measurement: Measurement,
    /// State matrix (n_k × n_k; empty for a static gain).
    pub a: DMatrix<f64>,
    /// Input matrix (n_k × channels).
    pub b: DMatrix<f64>,
    /// Output row (n_k).
    pub c: RowDVector<f64>,
    /// Feedthrough row (channels).
    pub d: RowDVector<f64>,
}

/// Direct velocity feedback i = h·C(s)·v_host.
///
/// # Errors
/// [`ControlError::Invalid`] if the compensator is improper or unstable.
pub fn dvf_controller(
    gain_a_per_m_s: f64,
    compensator: &Compensator,
) -> Result<Controller, ControlError> {
    let realization = compensator.realize()?;
    let n = realization.a.nrows();
    Ok(Controller {
        measurement: Measurement::HostVelocity,
        a: realization.a,
        b: DMatrix::from_column_slice(n, 1, realization.b.as_slice()),
        c: realization.c * gain_a_per_m_s,
        d: RowDVector::from_element(1, realization.d * gain_a_per_m_s),
    })
}

/// An LQG design and the gains it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct LqgDesign {
    /// The output-feedback controller i = −K·x̂.
    pub controller: Controller,
    /// LQR gain K, A per unit state.
    pub regulator_gain: RowDVector<f64>,
    /// Kalman gain L, states × floors.
    pub estimator_gain: DMatrix<f64>,
    /// A − b_i·K.
    pub regulator_matrix: DMatrix<f64>,
    /// A − L·C (with the noise correlation folded in, see [`lqg_controller`]).
    pub estimator_matrix: DMatrix<f64>,
}

/// LQG: LQR on the plant state with cost ∫ (xᵀ·E·x + ρ·i²) dt (E = structure energy), and a
/// Kalman–Bucy filter on the floor accelerations y = C·x + d_i·i + D_f·w + v, with white force
/// noise w (intensity W·I) on every floor and accelerometer noise v (V·I). Because the floor
/// forces feed straight through to the accelerations, w and the measurement are correlated
/// (S = B_f·W·D_fᵀ); the filter Riccati equation accounts for it.
///
/// # Errors
/// [`ControlError::Numerical`] if a Riccati equation has no stabilizing solution.
pub fn lqg_controller(
    plant: &ActuatedPlant,
    weights: &LqgWeights,
) -> Result<LqgDesign, ControlError> {
    let a = &plant.a;
    let b = &plant.b_current;
    let rho = weights.current_weight_j_per_a2;
    let g = b * b.transpose() / rho;
    let p = solve_care(a, &g, &plant.structure_energy)?;
    let k: RowDVector<f64> = (b.transpose() * &p) / rho;

    let floors = plant.floors();
    let c = &plant.c_floor_accel;
    let bw = &plant.b_floor_force;
    let dw = &plant.d_accel_floor_force;
    let w = weights.force_noise_n2_s;
    let q_f = bw * bw.transpose() * w;
    let s = bw * dw.transpose() * w;
    let r_f = DMatrix::<f64>::identity(floors, floors) * weights.accel_noise_m2_s3
        + dw * dw.transpose() * w;
    let r_inv = r_f
        .clone()
        .cholesky()
        .ok_or(ControlError::Numerical(
            "LQG: measurement covariance not positive definite",
        ))?
        .inverse();
    // Dual Riccati with the cross term removed: Ā = A − S·R⁻¹·C, Q̄ = Q − S·R⁻¹·Sᵀ.
    let a_bar = a - &s * &r_inv * c;
    let q_bar = &q_f - &s * &r_inv * s.transpose();
    let q_bar = (&q_bar + q_bar.transpose()) * 0.5;
    let g_f = c.transpose() * &r_inv * c;
    let p_f = solve_care(&a_bar.transpose(), &g_f, &q_bar)?;
    let l = (&p_f * c.transpose() + &s) * &r_inv;

    let d_i = &plant.d_accel_current;
    let a_k = a - b * &k - &l * c + &l * d_i * &k;
    let regulator_matrix = a - b * &k;
    let estimator_matrix = a - &l * c;
    Ok(LqgDesign {
        controller: Controller {
            measurement: Measurement::FloorAccelerations,
            a: a_k,
            b: l.clone(),
            c: -&k,
            d: RowDVector::zeros(floors),
        },
        regulator_gain: k,
        estimator_gain: l,
        regulator_matrix,
        estimator_matrix,
    })
}

/// Den Hartog's optimum for a proof mass on one mode of its host structure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DenHartogDesign {
    /// Target mode, 1-based.
    pub mode: usize,
    /// Natural frequency of that mode with the housing attached and the proof mass absent, Hz.
    pub primary_frequency_hz: f64,
    /// Modal mass of that mode seen at the host floor, 1/φ_host², in kg.
    pub modal_mass_kg: f64,
    /// μ = proof mass / modal mass.
    pub mass_ratio: f64,
    /// Absorber frequency / primary frequency, 1/(1 + μ).
    pub frequency_ratio: f64,
    /// Absorber damping ratio √(3μ / (8·(1 + μ)³)).
    pub damping_ratio: f64,
    /// Tuned suspension stiffness, N/m.
    pub stiffness_n_per_m: f64,
    /// Tuned suspension damping, N·s/m.
    pub damping_n_s_per_m: f64,
}

/// Den Hartog tuning of `building`'s actuator for `mode`: returns the re-tuned actuator and
/// the design numbers.
///
/// # Errors
/// [`ControlError::Invalid`] if no actuator is fitted, the mode does not exist, or the host
/// floor sits on a node of that mode.
pub fn den_hartog(
    building: &ShearBuilding,
    mode: usize,
) -> Result<(InertialActuator, DenHartogDesign), ControlError> {
    let Some(actuator) = building.actuator().copied() else {
        return Err(ControlError::Invalid(vec![
            "a tuned-mass damper needs an actuator".into(),
        ]));
    };
    let floors = building.floors();
    if !(1..=floors).contains(&mode) {
        return Err(ControlError::Invalid(vec![format!(
            "Den Hartog target mode {mode} must be within 1..={floors}"
        )]));
    }
    let host = actuator.floor - 1;
    // The primary structure: floors with the housing, without the proof mass and its spring.
    let mass = building
        .mass_matrix()
        .view((0, 0), (floors, floors))
        .into_owned();
    let mut stiffness = building
        .stiffness_matrix()
        .view((0, 0), (floors, floors))
        .into_owned();
    stiffness[(host, host)] -= actuator.stiffness_n_per_m;
    let modes = Modes::solve(&mass, &stiffness)?;
    let phi = modes.shapes[(host, mode - 1)];
    // A relative amplitude below 1e-6 of the largest means the absorber cannot see the mode.
    if phi.abs() < 1e-6 * modes.shapes.column(mode - 1).amax() {
        return Err(ControlError::Invalid(vec![format!(
            "floor {} is a node of mode {mode}: a damper there cannot tune to it",
            actuator.floor
        )]));
    }
    let modal_mass_kg = 1.0 / (phi * phi);
    let mu = actuator.proof_mass_kg / modal_mass_kg;
    let frequency_ratio = 1.0 / (1.0 + mu);
    let damping_ratio = (3.0 * mu / (8.0 * (1.0 + mu).powi(3))).sqrt();
    let w_primary = modes.omegas_rad_s[mode - 1];
    let w_absorber = frequency_ratio * w_primary;
    let design = DenHartogDesign {
        mode,
        primary_frequency_hz: w_primary / std::f64::consts::TAU,
        modal_mass_kg,
        mass_ratio: mu,
        frequency_ratio,
        damping_ratio,
        stiffness_n_per_m: actuator.proof_mass_kg * w_absorber * w_absorber,
        damping_n_s_per_m: 2.0 * damping_ratio * actuator.proof_mass_kg * w_absorber,
    };
    let tuned = InertialActuator {
        stiffness_n_per_m: design.stiffness_n_per_m,
        damping_n_s_per_m: design.damping_n_s_per_m,
        ..actuator
    };
    Ok((tuned, design))
}

/// The measurement matrices of `measurement` on `plant`: y = C·x + d_i·i + D_f·f.
pub fn measurement_matrices(
    plant: &ActuatedPlant,
    measurement: Measurement,
) -> (DMatrix<f64>, DVector<f64>, DMatrix<f64>) {
    match measurement {
        Measurement::HostVelocity => (
            DMatrix::from_rows(&[plant.host_velocity_row()]),
            DVector::zeros(1),
            // Velocity is a state: forces do not feed through to it.
            DMatrix::zeros(1, plant.floors()),
        ),
        Measurement::FloorAccelerations => (
            plant.c_floor_accel.clone(),
            plant.d_accel_current.clone(),
            plant.d_accel_floor_force.clone(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::plant::ActuatorElectrics;
    use crate::frf::eigenvalues;

    #[test]
    fn den_hartog_on_an_sdof_primary_matches_the_textbook_numbers() {
        // 1-floor primary of 10 kg (9.5 + 0.5 housing), k = 4000 N/m; proof mass 0.5 kg: μ = 0.05.
        let building = ShearBuilding::new(crate::ShearBuildingConfig {
            floor_masses_kg: vec![9.5],
            storey_stiffness_n_per_m: vec![4000.0],
            damping: crate::Damping::Rayleigh {
                alpha_per_s: 0.0,
                beta_s: 0.0,
            },
            actuator: Some(InertialActuator {
                floor: 1,
                proof_mass_kg: 0.5,
                ..InertialActuator::default()
            }),
        })
        .expect("valid");
        let (_, design) = den_hartog(&building, 1).expect("tunable");
        let mu: f64 = 0.05;
        let w_primary = (4000.0_f64 / 10.0).sqrt();
        // Closed forms evaluated directly; the eigen-solve of a 1×1 problem is exact to ulps.
        assert!((design.mass_ratio - mu).abs() < 1e-12);
        assert!((design.frequency_ratio - 1.0 / 1.05).abs() < 1e-12);
        assert!(
            (design.damping_ratio - (3.0 * mu / (8.0 * 1.05_f64.powi(3))).sqrt()).abs() < 1e-12
        );
        let wa = w_primary / 1.05;
        assert!((design.stiffness_n_per_m - 0.5 * wa * wa).abs() < 1e-9);
    }

    #[test]
    fn lqg_design_on_southampton_gives_stable_regulator_and_estimator() {
        let building = ShearBuilding::southampton_with_actuator(3).expect("valid");
        let plant = ActuatedPlant::inertial(&building, ActuatorElectrics::default()).expect("ok");
        let design = lqg_controller(&plant, &LqgWeights::default()).expect("design");
        for matrix in [&design.regulator_matrix, &design.estimator_matrix] {
            assert!(eigenvalues(matrix).expect("eig").iter().all(|l| l.re < 0.0));
        }
    }

    #[test]
    fn law_validation_reports_every_problem() {
        let dvf = ControlLaw::Dvf {
            gain_a_per_m_s: 60.0,
            compensator: Compensator {
                numerator: vec![1.0, 0.0],
                denominator: vec![1.0],
            },
        };
        assert_eq!(dvf.problems(3).len(), 2, "{:?}", dvf.problems(3));
        let lqg = ControlLaw::Lqg {
            weights: LqgWeights {
                current_weight_j_per_a2: 0.0,
                force_noise_n2_s: f64::NAN,
                accel_noise_m2_s3: 1.0,
            },
        };
        assert_eq!(lqg.problems(3).len(), 2);
        let tmd = ControlLaw::Tmd {
            tuning: TmdTuning::DenHartog { mode: 4 },
        };
        assert_eq!(tmd.problems(3).len(), 1);
    }
}
