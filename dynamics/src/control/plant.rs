//! Owns the plant every control law acts on: a shear building in first-order form whose
//! control input is the actuator's coil current, in A, plus the coil's electrical constants.
//! Knows nothing of control laws or of how the loop is closed.

use nalgebra::{DMatrix, DVector, RowDVector};
use serde::{Deserialize, Serialize};

use crate::config::ShearBuildingConfig;
use crate::control::ControlError;
use crate::model::ShearBuilding;

/// Default force factor Bl of the actuator's voice coil, in N/A.
pub const fn default_force_factor_n_per_a() -> f64 {
    10.0
}
/// Default DC resistance of the actuator's coil, in Ω.
pub const fn default_coil_resistance_ohm() -> f64 {
    8.0
}

/// The electrical side of a voice-coil inertial actuator driven by a current (transconductance)
/// amplifier. With a current drive the coil force is Bl·i whatever the coil's back-EMF, so the
/// resistance only matters for the Joule power the amplifier must supply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorElectrics {
    /// Force factor Bl: coil force on the proof mass per unit coil current, in N/A.
    #[serde(default = "default_force_factor_n_per_a")]
    pub force_factor_n_per_a: f64,
    /// DC resistance of the coil, in Ω; converts current into dissipated power R·i².
    #[serde(default = "default_coil_resistance_ohm")]
    pub coil_resistance_ohm: f64,
}

impl Default for ActuatorElectrics {
    fn default() -> Self {
        Self {
            force_factor_n_per_a: default_force_factor_n_per_a(),
            coil_resistance_ohm: default_coil_resistance_ohm(),
        }
    }
}

impl ActuatorElectrics {
    /// Every rule these constants break, as sentences; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.force_factor_n_per_a.is_finite() && self.force_factor_n_per_a > 0.0) {
            problems.push(format!(
                "force_factor_n_per_a = {} must be positive and finite",
                self.force_factor_n_per_a
            ));
        }
        if !(self.coil_resistance_ohm.is_finite() && self.coil_resistance_ohm >= 0.0) {
            problems.push(format!(
                "coil_resistance_ohm = {} must be zero or positive and finite",
                self.coil_resistance_ohm
            ));
        }
        problems
    }
}

/// What the coil current pushes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActuatorKind {
    /// The building's own inertial actuator: Bl·i on the proof mass, −Bl·i on the host floor.
    Inertial,
    /// A force source without dynamics: −Bl·i straight on the host floor (same sign as the
    /// inertial actuator's reaction, so a gain means the same thing for both).
    IdealForce,
}

/// A building in first-order form ẋ = A·x + b_i·i + B_f·f with the coil current i (A) as the
/// control input and floor forces f (N) as disturbances. States are those of
/// [`crate::StateSpace`]: relative displacements, then velocities, of all DOFs. The ground is
/// at rest, so relative and absolute motions coincide.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatedPlant {
    /// State matrix A, 2·dofs square.
    pub a: DMatrix<f64>,
    /// ẋ per A of coil current.
    pub b_current: DVector<f64>,
    /// ẋ per N of force on each floor (one column per floor, floor 1 first).
    pub b_floor_force: DMatrix<f64>,
    /// Velocities of floors 1..=N, in m/s, as rows over the state.
    pub c_floor_velocity: DMatrix<f64>,
    /// Absolute accelerations of floors 1..=N, in m/s², as rows over the state.
    pub c_floor_accel: DMatrix<f64>,
    /// Acceleration feedthrough of the coil current, (m/s²)/A per floor.
    pub d_accel_current: DVector<f64>,
    /// Acceleration feedthrough of the floor forces, (m/s²)/N, floors × floors.
    pub d_accel_floor_force: DMatrix<f64>,
    /// Masses of the bare floors, in kg: the weights of the structure's kinetic energy
    /// (neither the actuator housing nor the proof mass counts as structure).
    pub floor_masses_kg: Vec<f64>,
    /// Symmetric E with xᵀ·E·x = strain energy of the storeys + kinetic energy of the bare
    /// floors, in J; zero on the proof-mass states. The LQR state weight.
    pub structure_energy: DMatrix<f64>,
    /// Host floor of the actuator and of the collocated velocity sensor, 1-based.
    pub host_floor: usize,
    /// The coil's constants.
    pub electrics: ActuatorElectrics,
    /// What the current pushes on.
    pub kind: ActuatorKind,
}

impl ActuatedPlant {
    /// The plant of a building with its inertial actuator fitted.
    ///
    /// # Errors
    /// [`ControlError::Invalid`] if no actuator is fitted or the electrics are invalid.
    pub fn inertial(
        building: &ShearBuilding,
        electrics: ActuatorElectrics,
    ) -> Result<Self, ControlError> {
        let mut problems = electrics.problems();
        let Some(actuator) = building.actuator() else {
            problems.push("an inertial-actuator plant needs a building with an actuator".into());
            return Err(ControlError::Invalid(problems));
        };
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems));
        }
        let ss = building.state_space();
        let column = ss
            .input_actuator()
            .ok_or(ControlError::Numerical("actuator fitted but not an input"))?;
        Self::assemble(
            building,
            actuator.floor,
            electrics,
            ActuatorKind::Inertial,
            column,
            electrics.force_factor_n_per_a,
        )
    }

    /// The plant of `building` driven by an ideal force source on `host_floor`: the floor
    /// receives −Bl·i, with no actuator dynamics. Any inertial actuator the building carries
    /// stays as a passive device.
    ///
    /// # Errors
    /// [`ControlError::Invalid`] if the floor is out of range or the electrics are invalid.
    pub fn ideal_force(
        building: &ShearBuilding,
        host_floor: usize,
        electrics: ActuatorElectrics,
    ) -> Result<Self, ControlError> {
        let mut problems = electrics.problems();
        if !(1..=building.floors()).contains(&host_floor) {
            problems.push(format!(
                "host floor {host_floor} must be within 1..={}",
                building.floors()
            ));
        }
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems));
        }
        let column = building.state_space().input_floor_force(host_floor);
        Self::assemble(
            building,
            host_floor,
            electrics,
            ActuatorKind::IdealForce,
            column,
            -electrics.force_factor_n_per_a,
        )
    }

    /// Shared assembly: the current enters as `scale` times input column `column` of the
    /// building's state space.
    fn assemble(
        building: &ShearBuilding,
        host_floor: usize,
        electrics: ActuatorElectrics,
        kind: ActuatorKind,
        column: usize,
        scale: f64,
    ) -> Result<Self, ControlError> {
        let ss = building.state_space();
        let floors = building.floors();
        let n = ss.n_states();
        let floor_columns: Vec<usize> = (1..=floors).map(|f| ss.input_floor_force(f)).collect();
        let accel_rows: Vec<usize> = (1..=floors).map(|f| ss.output_floor_accel(f)).collect();
        let velocity_rows: Vec<usize> = (1..=floors).map(|f| ss.output_floor_velocity(f)).collect();

        let b_floor_force = ss.b.select_columns(&floor_columns);
        let c_floor_accel = ss.c.select_rows(&accel_rows);
        let c_floor_velocity = ss.c.select_rows(&velocity_rows);
        let d_accel_floor_force = ss.d.select_rows(&accel_rows).select_columns(&floor_columns);
        let d_accel_current = DVector::from_iterator(
            floors,
            accel_rows.iter().map(|&r| ss.d[(r, column)] * scale),
        );

        let config = building.config();
        let bare = ShearBuilding::new(ShearBuildingConfig {
            actuator: None,
            ..config.clone()
        })?;
        let dofs = building.dofs();
        let mut structure_energy = DMatrix::zeros(n, n);
        structure_energy
            .view_mut((0, 0), (floors, floors))
            .copy_from(&(bare.stiffness_matrix() * 0.5));
        structure_energy
            .view_mut((dofs, dofs), (floors, floors))
            .copy_from(&(bare.mass_matrix() * 0.5));

        Ok(Self {
            b_current: ss.b.column(column) * scale,
            a: ss.a,
            b_floor_force,
            c_floor_velocity,
            c_floor_accel,
            d_accel_current,
            d_accel_floor_force,
            floor_masses_kg: config.floor_masses_kg.clone(),
            structure_energy,
            host_floor,
            electrics,
            kind,
        })
    }

    /// Number of floors N.
    pub fn floors(&self) -> usize {
        self.floor_masses_kg.len()
    }

    /// Length of the state x.
    pub fn n_states(&self) -> usize {
        self.a.nrows()
    }

    /// The collocated sensor: velocity of the host floor, in m/s, as a row over the state.
    pub fn host_velocity_row(&self) -> RowDVector<f64> {
        self.c_floor_velocity.row(self.host_floor - 1).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inertial_plant_pushes_the_proof_mass_forward_and_the_host_back() {
        let building = ShearBuilding::southampton_with_actuator(2).expect("valid");
        let plant = ActuatedPlant::inertial(&building, ActuatorElectrics::default()).expect("ok");
        let m = building.mass_matrix();
        let bl = default_force_factor_n_per_a();
        let dofs = building.dofs();
        // ẋ rows of velocities are M⁻¹ times the generalized force; M is diagonal.
        assert!((plant.b_current[dofs + 1] + bl / m[(1, 1)]).abs() < 1e-14);
        assert!((plant.b_current[dofs + 3] - bl / m[(3, 3)]).abs() < 1e-14);
        assert_eq!(plant.b_current[dofs], 0.0);
        assert!((plant.d_accel_current[1] + bl / m[(1, 1)]).abs() < 1e-14);
        assert_eq!(plant.host_velocity_row()[dofs + 1], 1.0);
    }

    #[test]
    fn structure_energy_counts_bare_floors_and_storeys_only() {
        let building = ShearBuilding::southampton_with_actuator(3).expect("valid");
        let plant = ActuatedPlant::inertial(&building, ActuatorElectrics::default()).expect("ok");
        // Unit velocity of every floor and of the proof mass: ½·Σ m_floor, proof mass ignored.
        let mut x = DVector::zeros(plant.n_states());
        for dof in 0..4 {
            x[4 + dof] = 1.0;
        }
        let energy = (x.transpose() * &plant.structure_energy * &x)[(0, 0)];
        assert!((energy - 0.5 * 3.0 * 5.201).abs() < 1e-12);
    }

    #[test]
    fn plant_refuses_bad_electrics_and_missing_actuator_together() {
        let electrics = ActuatorElectrics {
            force_factor_n_per_a: 0.0,
            coil_resistance_ohm: -1.0,
        };
        let err =
            ActuatedPlant::inertial(&ShearBuilding::southampton(), electrics).expect_err("invalid");
        let ControlError::Invalid(problems) = err else {
            panic!("wrong kind");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
