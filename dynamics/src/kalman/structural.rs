//! Owns the noise design of a shear building observed by floor accelerometers, and the
//! estimator that names the filter's states by floor. The filtering itself is
//! `filter.rs`'s; where samples come from is the caller's.

use nalgebra::DMatrix;

use super::KalmanError;
use super::filter::{GainSchedule, GaussianModel, KalmanFilter, StepReport};
use crate::discretize::DiscreteStateSpace;
use crate::state_space::IoLayout;

/// Accelerometer noise of the Southampton rig's sensors, RMS, m/s².
pub const DEFAULT_ACCEL_NOISE_RMS_M_S2: f64 = 0.002;
/// Noise of the force gauge on floor 1, RMS, N.
pub const DEFAULT_FORCE_GAUGE_NOISE_RMS_N: f64 = 0.005;
/// Unmeasured force on a floor (air, cables, people walking past), RMS per sample, N.
pub const DEFAULT_UNMEASURED_FORCE_RMS_N: f64 = 0.01;
/// Unmeasured ground acceleration (lab floor vibration), RMS per sample, m/s².
pub const DEFAULT_GROUND_ACCEL_RMS_M_S2: f64 = 0.001;
/// Difference between the commanded and the delivered actuator force, RMS per sample, N.
pub const DEFAULT_ACTUATOR_FORCE_ERROR_RMS_N: f64 = 0.01;
/// Unmodelled acceleration of every degree of freedom, RMS per sample, m/s².
pub const DEFAULT_MODEL_ERROR_ACCEL_RMS_M_S2: f64 = 1e-4;

/// Where the noise of a building model comes from, in physical units. Turned into the
/// filter's Q, R and S by [`StructuralNoise::gaussian_model`]:
///
/// - Every input enters with an error δu (white, held over the sample like u itself, so
///   it moves the structure through Bd and the floor accelerations through D at once):
///   Q = Bd·U·Bdᵀ + Q_model, R = D·U·Dᵀ + R_sensor, S = Bd·U·Dᵀ with U = diag(σ_u²).
///   For a measured force σ_u is the gauge's noise; for an input nobody measures (the
///   ground, floors without a shaker) it is the whole disturbance, and the filter is given 0.
/// - Q_model adds an independent unmodelled acceleration σ_a on every DOF, integrated over
///   the sample: (σ_a·dt²/2)² on displacements and (σ_a·dt)² on velocities. It stands for
///   model error (stiffness, damping, joints) and keeps Q positive on every state. It is not
///   fed to the accelerometers, a simplification that only matters when it dominates.
/// - R_sensor = (σ_acc² + lsb²/12)·I: white accelerometer noise plus uniform ADC rounding.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuralNoise {
    /// Floors (1-based) carrying an accelerometer, in the order their samples appear in y.
    pub measured_floors: Vec<usize>,
    /// White noise of each accelerometer, RMS, m/s².
    pub accel_noise_rms_m_s2: f64,
    /// One accelerometer ADC count, m/s² (0 for an ideal converter).
    pub accel_lsb_m_s2: f64,
    /// One entry per model input, in the model's order (ground acceleration, force on floor
    /// 1..=N, actuator force): RMS per sample of what the structure receives minus what the
    /// filter is told, in the input's unit (m/s² or N).
    pub input_uncertainty_rms: Vec<f64>,
    /// Unmodelled acceleration of every DOF, RMS per sample, m/s².
    pub model_error_accel_rms_m_s2: f64,
}

impl StructuralNoise {
    /// Defaults for a building with `layout`: an accelerometer on every floor, a force gauge
    /// on floor 1 (the rig's shaker), unmeasured forces on the other floors, lab-floor
    /// ground vibration, and the actuator's force error when one is fitted.
    pub fn defaults(layout: IoLayout) -> Self {
        let mut input_uncertainty_rms = vec![DEFAULT_UNMEASURED_FORCE_RMS_N; layout.n_inputs()];
        input_uncertainty_rms[layout.input_ground_accel()] = DEFAULT_GROUND_ACCEL_RMS_M_S2;
        input_uncertainty_rms[layout.input_floor_force(1)] = DEFAULT_FORCE_GAUGE_NOISE_RMS_N;
        if let Some(actuator) = layout.input_actuator() {
            input_uncertainty_rms[actuator] = DEFAULT_ACTUATOR_FORCE_ERROR_RMS_N;
        }
        Self {
            measured_floors: (1..=layout.floors()).collect(),
            accel_noise_rms_m_s2: DEFAULT_ACCEL_NOISE_RMS_M_S2,
            accel_lsb_m_s2: 0.0,
            input_uncertainty_rms,
            model_error_accel_rms_m_s2: DEFAULT_MODEL_ERROR_ACCEL_RMS_M_S2,
        }
    }

    /// Checks the description against a model with `layout`, reporting every problem.
    ///
    /// # Errors
    /// [`KalmanError::Invalid`] listing every problem found.
    pub fn validate(&self, layout: IoLayout) -> Result<(), KalmanError> {
        let mut problems = Vec::new();
        if self.measured_floors.is_empty() {
            problems.push("measured_floors is empty: the filter needs a sensor".to_owned());
        }
        for (i, floor) in self.measured_floors.iter().enumerate() {
            if !(1..=layout.floors()).contains(floor) {
                problems.push(format!(
                    "measured_floors[{i}] = {floor} is outside 1..={}",
                    layout.floors()
                ));
            }
            if self.measured_floors[..i].contains(floor) {
                problems.push(format!("floor {floor} is measured twice"));
            }
        }
        let scalars = [
            ("accel_noise_rms_m_s2", self.accel_noise_rms_m_s2),
            ("accel_lsb_m_s2", self.accel_lsb_m_s2),
            (
                "model_error_accel_rms_m_s2",
                self.model_error_accel_rms_m_s2,
            ),
        ];
        for (name, value) in scalars {
            if !(value.is_finite() && value >= 0.0) {
                problems.push(format!("{name} = {value} must be finite and >= 0"));
            }
        }
        if !(self.accel_noise_rms_m_s2 > 0.0 || self.accel_lsb_m_s2 > 0.0) {
            problems.push(
                "accel_noise_rms_m_s2 and accel_lsb_m_s2 are both 0: a noiseless sensor \
                 makes R singular"
                    .to_owned(),
            );
        }
        if self.input_uncertainty_rms.len() != layout.n_inputs() {
            problems.push(format!(
                "input_uncertainty_rms has {} entries, the model has {} inputs",
                self.input_uncertainty_rms.len(),
                layout.n_inputs()
            ));
        }
        for (i, value) in self.input_uncertainty_rms.iter().enumerate() {
            if !(value.is_finite() && *value >= 0.0) {
                problems.push(format!(
                    "input_uncertainty_rms[{i}] = {value} must be finite and >= 0"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(KalmanError::Invalid(problems))
        }
    }

    /// The filter's model: the accelerations of `measured_floors` as y, Q, R and S as
    /// described on [`StructuralNoise`].
    ///
    /// # Errors
    /// [`KalmanError::Invalid`] if [`validate`](Self::validate) finds problems.
    pub fn gaussian_model(&self, model: &DiscreteStateSpace) -> Result<GaussianModel, KalmanError> {
        let layout = model.io_layout();
        self.validate(layout)?;
        let n = model.n_states();
        let dofs = n / 2;
        let m = self.measured_floors.len();
        let rows: Vec<usize> = self
            .measured_floors
            .iter()
            .map(|&floor| layout.output_floor_accel(floor))
            .collect();
        let c = model.c.select_rows(rows.iter());
        let d = model.d.select_rows(rows.iter());
        let input_variance = DMatrix::from_diagonal(&nalgebra::DVector::from_iterator(
            self.input_uncertainty_rms.len(),
            self.input_uncertainty_rms.iter().map(|s| s * s),
        ));
        let bd_u = &model.bd * &input_variance;

        let mut process_noise = &bd_u * model.bd.transpose();
        let dt_s = model.dt_s;
        let sigma_a = self.model_error_accel_rms_m_s2;
        for dof in 0..dofs {
            process_noise[(dof, dof)] += (sigma_a * dt_s * dt_s / 2.0).powi(2);
            process_noise[(dofs + dof, dofs + dof)] += (sigma_a * dt_s).powi(2);
        }
        let sensor_variance =
            self.accel_noise_rms_m_s2.powi(2) + self.accel_lsb_m_s2.powi(2) / 12.0;
        let measurement_noise =
            &d * &input_variance * d.transpose() + DMatrix::identity(m, m) * sensor_variance;
        let cross_noise = &bd_u * d.transpose();
        let mut gaussian = GaussianModel {
            ad: model.ad.clone(),
            bd: model.bd.clone(),
            c,
            d,
            process_noise,
            measurement_noise,
            cross_noise,
        };
        // Products of the form X·U·Xᵀ are symmetric only to rounding; make it exact.
        for matrix in [&mut gaussian.process_noise, &mut gaussian.measurement_noise] {
            let symmetric = (&*matrix + matrix.transpose()) * 0.5;
            *matrix = symmetric;
        }
        Ok(gaussian)
    }
}

/// A Kalman filter on a shear building's discretized model that answers in floors:
/// displacements and velocities relative to the ground, and the proof mass's when an
/// actuator is fitted.
///
/// The input u is the model's whole input vector (ground acceleration, floor forces,
/// actuator force) with the known values filled in and 0 for the unknown ones; y holds the
/// absolute accelerations of [`StructuralNoise::measured_floors`], in that order.
#[derive(Debug, Clone)]
pub struct StructuralEstimator {
    filter: KalmanFilter,
    layout: IoLayout,
    /// Degrees of freedom: velocities start at this state index.
    dofs: usize,
    measured_floors: Vec<usize>,
}

impl StructuralEstimator {
    /// Designs the filter for `model` with the noise described by `noise`.
    ///
    /// # Errors
    /// As [`StructuralNoise::gaussian_model`] and [`KalmanFilter::new`].
    pub fn new(
        model: &DiscreteStateSpace,
        noise: &StructuralNoise,
        schedule: GainSchedule,
    ) -> Result<Self, KalmanError> {
        let gaussian = noise.gaussian_model(model)?;
        Ok(Self {
            filter: KalmanFilter::new(&gaussian, schedule)?,
            layout: model.io_layout(),
            dofs: model.n_states() / 2,
            measured_floors: noise.measured_floors.clone(),
        })
    }

    /// Folds in one sample: the model input `u` and the measured floor accelerations
    /// (m/s², `None` when a sample is missing). Allocates nothing.
    ///
    /// # Panics
    /// If `u` does not have one entry per model input or `accel_m_s2` one per measured floor.
    pub fn step(&mut self, u: &[f64], accel_m_s2: &[Option<f64>]) -> StepReport {
        self.filter.step(u, accel_m_s2)
    }

    /// Estimated displacement of `floor` (1-based) relative to the ground, m.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn floor_displacement_m(&self, floor: usize) -> f64 {
        self.filter.state()[self.floor_dof(floor)]
    }

    /// Estimated velocity of `floor` (1-based) relative to the ground, m/s.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn floor_velocity_m_s(&self, floor: usize) -> f64 {
        self.filter.state()[self.dofs + self.floor_dof(floor)]
    }

    /// Estimated displacement of the actuator's proof mass relative to the ground, m.
    pub fn proof_mass_displacement_m(&self) -> Option<f64> {
        self.proof_mass_dof().map(|dof| self.filter.state()[dof])
    }

    /// Estimated velocity of the actuator's proof mass relative to the ground, m/s.
    pub fn proof_mass_velocity_m_s(&self) -> Option<f64> {
        self.proof_mass_dof()
            .map(|dof| self.filter.state()[self.dofs + dof])
    }

    /// Floors whose accelerations `step` expects, in order.
    pub fn measured_floors(&self) -> &[usize] {
        &self.measured_floors
    }

    /// Meaning of the input indices.
    pub fn io_layout(&self) -> IoLayout {
        self.layout
    }

    /// The underlying filter: full state, innovation, NIS, steady state.
    pub fn filter(&self) -> &KalmanFilter {
        &self.filter
    }

    /// The underlying filter, for `reset`.
    pub fn filter_mut(&mut self) -> &mut KalmanFilter {
        &mut self.filter
    }

    fn floor_dof(&self, floor: usize) -> usize {
        // Same numbering as the model: floor i is DOF i − 1; checked like an output index.
        self.layout.output_floor_accel(floor)
    }

    fn proof_mass_dof(&self) -> Option<usize> {
        self.layout.has_actuator().then_some(self.layout.floors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Damping, ShearBuildingConfig};
    use crate::model::ShearBuilding;

    fn rig() -> DiscreteStateSpace {
        ShearBuilding::southampton_with_actuator(3)
            .expect("valid")
            .state_space()
            .discretize_zoh(1e-3)
            .expect("valid")
    }

    #[test]
    fn validate_reports_every_problem_at_once() {
        let model = rig();
        let noise = StructuralNoise {
            measured_floors: vec![0, 2, 2],
            accel_noise_rms_m_s2: 0.0,
            accel_lsb_m_s2: 0.0,
            input_uncertainty_rms: vec![0.1, f64::NAN],
            model_error_accel_rms_m_s2: -1.0,
        };
        let Err(KalmanError::Invalid(problems)) = noise.validate(model.io_layout()) else {
            panic!("invalid noise accepted");
        };
        // Floor 0, floor 2 twice, negative model error, both sensor terms zero, input
        // count, NaN input.
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }

    #[test]
    fn an_input_error_moves_state_and_acceleration_together() {
        let model = rig();
        let layout = model.io_layout();
        let mut noise = StructuralNoise::defaults(layout);
        noise.input_uncertainty_rms.fill(0.0);
        noise.model_error_accel_rms_m_s2 = 0.0;
        let force = layout.input_floor_force(2);
        noise.input_uncertainty_rms[force] = 0.5;
        let g = noise.gaussian_model(&model).expect("valid");
        // One input with variance σ²: Q = σ²·b·bᵀ, S = σ²·b·dᵀ, R − R_sensor = σ²·d·dᵀ, with b
        // the input's column of Bd and d its column of D (nonzero on floor 2 only, 1/m₂).
        let b = model.bd.column(force);
        let d = g.d.column(force);
        assert!((&g.process_noise - b * b.transpose() * 0.25).amax() < 1e-20);
        assert!((&g.cross_noise - b * d.transpose() * 0.25).amax() < 1e-20);
        let sensor = DEFAULT_ACCEL_NOISE_RMS_M_S2.powi(2);
        let m2 = ShearBuilding::southampton().mass_matrix()[(1, 1)];
        assert!((g.measurement_noise[(1, 1)] - sensor - 0.25 / (m2 * m2)).abs() < 1e-15);
        assert_eq!(g.measurement_noise[(0, 0)], sensor);
    }

    #[test]
    fn auto_schedule_switches_to_time_varying_above_the_table_limit() {
        let seven = ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: vec![5.0; 7],
            storey_stiffness_n_per_m: vec![3e4; 7],
            damping: Damping::Modal {
                zetas: vec![0.01; 7],
            },
            actuator: None,
        })
        .expect("valid")
        .state_space()
        .discretize_zoh(1e-3)
        .expect("valid");
        let noise = StructuralNoise::defaults(seven.io_layout());
        let auto = StructuralEstimator::new(&seven, &noise, GainSchedule::Auto).expect("valid");
        assert!(!auto.filter().is_steady_state());
        assert!(auto.filter().covariance().is_some());
        assert!(matches!(
            StructuralEstimator::new(&seven, &noise, GainSchedule::SteadyState),
            Err(KalmanError::Invalid(_))
        ));
        let fewer = StructuralNoise {
            measured_floors: vec![1, 4, 7],
            ..noise
        };
        let auto = StructuralEstimator::new(&seven, &fewer, GainSchedule::Auto).expect("valid");
        assert!(auto.filter().is_steady_state());
    }

    #[test]
    fn floors_and_proof_mass_read_the_right_states() {
        let model = rig();
        let mut estimator = StructuralEstimator::new(
            &model,
            &StructuralNoise::defaults(model.io_layout()),
            GainSchedule::Auto,
        )
        .expect("valid");
        // States: [q1 q2 q3 q_proof v1 v2 v3 v_proof].
        let x0: Vec<f64> = (0..8).map(|i| i as f64).collect();
        estimator.filter_mut().reset(&x0);
        assert_eq!(estimator.floor_displacement_m(2), 1.0);
        assert_eq!(estimator.floor_velocity_m_s(3), 6.0);
        assert_eq!(estimator.proof_mass_displacement_m(), Some(3.0));
        assert_eq!(estimator.proof_mass_velocity_m_s(), Some(7.0));
    }
}
