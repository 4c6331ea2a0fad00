//! Owns the continuous-time state-space form ẋ = A·x + B·u, y = C·x + D·u of a shear
//! building and the names of its input and output indices. Knows nothing of sampling:
//! that is `discretize.rs`.

use nalgebra::{Cholesky, DMatrix};

use crate::error::ModelError;
use crate::model::ShearBuilding;

/// Where each physical signal sits in the input vector u and the output vector y.
///
/// Inputs: `[ground acceleration (m/s²), force on floor 1..=N (N), actuator force (N, only
/// if fitted)]`. Outputs: `[absolute acceleration of floor 1..=N (m/s²), velocity of floor
/// 1..=N relative to the ground (m/s)]`. Floors are 1-based throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLayout {
    /// Number of floors N.
    floors: usize,
    /// Whether the last input is the actuator force.
    actuator_fitted: bool,
}

impl IoLayout {
    /// The layout of an N-floor building, with or without an actuator.
    pub const fn new(floors: usize, actuator_fitted: bool) -> Self {
        Self {
            floors,
            actuator_fitted,
        }
    }

    /// Number of floors N.
    pub const fn floors(&self) -> usize {
        self.floors
    }

    /// True when the input vector ends with the actuator force.
    pub const fn has_actuator(&self) -> bool {
        self.actuator_fitted
    }

    /// Length of u.
    pub const fn n_inputs(&self) -> usize {
        1 + self.floors + if self.actuator_fitted { 1 } else { 0 }
    }

    /// Length of y.
    pub const fn n_outputs(&self) -> usize {
        2 * self.floors
    }

    /// Index of the ground acceleration (m/s²) in u.
    pub const fn input_ground_accel(&self) -> usize {
        0
    }

    /// Index of the external force (N) on `floor` (1-based) in u.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N, like an out-of-range slice index.
    pub fn input_floor_force(&self, floor: usize) -> usize {
        self.check_floor(floor);
        floor
    }

    /// Index of the actuator force (N) in u, if an actuator is fitted. Positive force pushes
    /// the proof mass forward and the host floor back.
    pub const fn input_actuator(&self) -> Option<usize> {
        if self.actuator_fitted {
            Some(1 + self.floors)
        } else {
            None
        }
    }

    /// Index of the absolute acceleration (m/s²) of `floor` (1-based) in y.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn output_floor_accel(&self, floor: usize) -> usize {
        self.check_floor(floor);
        floor - 1
    }

    /// Index of the velocity relative to the ground (m/s) of `floor` (1-based) in y.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn output_floor_velocity(&self, floor: usize) -> usize {
        self.check_floor(floor);
        self.floors + floor - 1
    }

    fn check_floor(&self, floor: usize) {
        assert!(
            (1..=self.floors).contains(&floor),
            "floor {floor} is outside 1..={}",
            self.floors
        );
    }
}

/// Continuous-time model ẋ = A·x + B·u, y = C·x + D·u of a shear building.
///
/// States are `[relative displacements of all DOFs; relative velocities of all DOFs]`, DOFs
/// ordered as in [`ShearBuilding`] (floors 1..=N, then the proof mass). Inputs and outputs
/// follow [`IoLayout`]. D is not zero: forces feed straight through to accelerations.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpace {
    /// State matrix, 2·dofs × 2·dofs.
    pub a: DMatrix<f64>,
    /// Input matrix, 2·dofs × inputs.
    pub b: DMatrix<f64>,
    /// Output matrix, outputs × 2·dofs.
    pub c: DMatrix<f64>,
    /// Feedthrough matrix, outputs × inputs.
    pub d: DMatrix<f64>,
    /// Meaning of u and y; private so it cannot drift from the matrices.
    layout: IoLayout,
}

impl StateSpace {
    /// Builds the state-space form of `building`.
    ///
    /// With relative coordinates the ground acceleration a_g acts as the inertial load
    /// −M·1·a_g, so its column of B is −1 on every velocity state, exactly. The absolute
    /// acceleration output adds a_g back, which makes its D entry exactly zero.
    ///
    /// # Errors
    /// [`ModelError::Numerical`] if M cannot be factored (cannot happen for a validated
    /// building, whose M is diagonal and positive).
    pub fn from_building(building: &ShearBuilding) -> Result<Self, ModelError> {
        let dofs = building.dofs();
        let floors = building.floors();
        let layout = IoLayout::new(floors, building.has_actuator());
        let n_states = 2 * dofs;

        let mass = Cholesky::new(building.mass_matrix().clone()).ok_or(ModelError::Numerical(
            "mass matrix is not positive definite",
        ))?;
        let minv_k = mass.solve(building.stiffness_matrix());
        let minv_c = mass.solve(building.damping_matrix());

        let mut a = DMatrix::zeros(n_states, n_states);
        a.view_mut((0, dofs), (dofs, dofs)).fill_with_identity();
        a.view_mut((dofs, 0), (dofs, dofs)).copy_from(&(-minv_k));
        a.view_mut((dofs, dofs), (dofs, dofs)).copy_from(&(-minv_c));

        // Generalized forces per unit input, then mapped through M⁻¹.
        let mut load = DMatrix::zeros(dofs, layout.n_inputs());
        for floor in 1..=floors {
            load[(floor - 1, layout.input_floor_force(floor))] = 1.0;
        }
        if let (Some(actuator), Some(column), Some(proof)) = (
            building.actuator(),
            layout.input_actuator(),
            building.proof_mass_dof(),
        ) {
            load[(proof, column)] = 1.0;
            load[(actuator.floor - 1, column)] = -1.0;
        }
        let mut accel_per_input = mass.solve(&load);
        accel_per_input
            .column_mut(layout.input_ground_accel())
            .fill(-1.0);
        let mut b = DMatrix::zeros(n_states, layout.n_inputs());
        b.view_mut((dofs, 0), (dofs, layout.n_inputs()))
            .copy_from(&accel_per_input);

        let mut c = DMatrix::zeros(layout.n_outputs(), n_states);
        let mut d = DMatrix::zeros(layout.n_outputs(), layout.n_inputs());
        for floor in 1..=floors {
            let dof = floor - 1;
            let accel_row = layout.output_floor_accel(floor);
            c.row_mut(accel_row).copy_from(&a.row(dofs + dof));
            d.row_mut(accel_row).copy_from(&b.row(dofs + dof));
            d[(accel_row, layout.input_ground_accel())] += 1.0;
            c[(layout.output_floor_velocity(floor), dofs + dof)] = 1.0;
        }
        Ok(Self { a, b, c, d, layout })
    }

    /// Meaning of each input and output index.
    pub fn io_layout(&self) -> IoLayout {
        self.layout
    }

    /// Length of x.
    pub fn n_states(&self) -> usize {
        self.a.nrows()
    }

    /// Length of u.
    pub fn n_inputs(&self) -> usize {
        self.b.ncols()
    }

    /// Length of y.
    pub fn n_outputs(&self) -> usize {
        self.c.nrows()
    }

    /// Index of the ground acceleration (m/s²) in u.
    pub fn input_ground_accel(&self) -> usize {
        self.layout.input_ground_accel()
    }

    /// Index of the external force (N) on `floor` (1-based) in u.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn input_floor_force(&self, floor: usize) -> usize {
        self.layout.input_floor_force(floor)
    }

    /// Index of the actuator force (N) in u, if an actuator is fitted.
    pub fn input_actuator(&self) -> Option<usize> {
        self.layout.input_actuator()
    }

    /// Index of the absolute acceleration (m/s²) of `floor` (1-based) in y.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn output_floor_accel(&self, floor: usize) -> usize {
        self.layout.output_floor_accel(floor)
    }

    /// Index of the relative velocity (m/s) of `floor` (1-based) in y.
    ///
    /// # Panics
    /// If `floor` is not within 1..=N.
    pub fn output_floor_velocity(&self, floor: usize) -> usize {
        self.layout.output_floor_velocity(floor)
    }
}

impl ShearBuilding {
    /// Continuous-time state-space model; see [`StateSpace`] for the signal order.
    #[expect(
        clippy::expect_used,
        reason = "a validated building has a diagonal M with positive finite entries, \
                  whose Cholesky factor always exists"
    )]
    pub fn state_space(&self) -> StateSpace {
        StateSpace::from_building(self).expect("validated mass matrix is positive definite")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Damping, ShearBuildingConfig};
    use nalgebra::DVector;

    #[test]
    fn layout_orders_ground_then_floors_then_actuator() {
        let ss = ShearBuilding::southampton_with_actuator(3)
            .expect("valid")
            .state_space();
        assert_eq!(ss.n_states(), 8);
        assert_eq!(ss.n_inputs(), 5);
        assert_eq!(ss.n_outputs(), 6);
        assert_eq!(ss.input_ground_accel(), 0);
        assert_eq!(
            (1..=3).map(|f| ss.input_floor_force(f)).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(ss.input_actuator(), Some(4));
        assert_eq!(ss.output_floor_accel(1), 0);
        assert_eq!(ss.output_floor_velocity(3), 5);
        assert_eq!(
            ShearBuilding::southampton().state_space().input_actuator(),
            None
        );
    }

    #[test]
    #[should_panic(expected = "outside 1..=3")]
    fn floor_zero_is_not_an_index() {
        ShearBuilding::southampton()
            .state_space()
            .input_floor_force(0);
    }

    #[test]
    fn forces_feed_through_to_accelerations_and_ground_motion_does_not() {
        let building = ShearBuilding::southampton_with_actuator(2).expect("valid");
        let ss = building.state_space();
        let host_mass = building.mass_matrix()[(1, 1)];
        let act = ss.input_actuator().expect("fitted");
        for floor in 1..=3 {
            let row = ss.output_floor_accel(floor);
            // Absolute acceleration = relative (−a_g) + a_g: exactly zero feedthrough.
            assert_eq!(ss.d[(row, ss.input_ground_accel())], 0.0);
            for other in 1..=3 {
                let want = if other == floor {
                    1.0 / building.mass_matrix()[(floor - 1, floor - 1)]
                } else {
                    0.0
                };
                assert!((ss.d[(row, ss.input_floor_force(other))] - want).abs() < 1e-15);
            }
            let want_act = if floor == 2 { -1.0 / host_mass } else { 0.0 };
            assert!((ss.d[(row, act)] - want_act).abs() < 1e-15);
            assert!(
                ss.d.row(ss.output_floor_velocity(floor))
                    .iter()
                    .all(|&x| x == 0.0)
            );
        }
    }

    #[test]
    fn constant_ground_acceleration_settles_where_absolute_accelerations_equal_it() {
        let a_g = 0.7;
        let ss = ShearBuilding::southampton_with_actuator(3)
            .expect("valid")
            .state_space();
        let mut u = DVector::zeros(ss.n_inputs());
        u[ss.input_ground_accel()] = a_g;
        // Steady state: 0 = A·x + B·u.
        let x =
            ss.a.clone()
                .lu()
                .solve(&(-&ss.b * &u))
                .expect("A is invertible for a damped, grounded structure");
        let y = &ss.c * &x + &ss.d * &u;
        for floor in 1..=3 {
            // Terms of size k·x/m ≈ a_g cancel: allow a few ulps of the stiffness terms.
            assert!((y[ss.output_floor_accel(floor)] - a_g).abs() < 1e-12, "{y}");
            assert!(y[ss.output_floor_velocity(floor)].abs() < 1e-15);
        }
    }

    #[test]
    fn static_floor_force_deflects_the_building_by_k_inverse_f() {
        let building = ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: vec![1.0, 2.0],
            storey_stiffness_n_per_m: vec![1000.0, 500.0],
            damping: Damping::Modal {
                zetas: vec![0.02, 0.02],
            },
            actuator: None,
        })
        .expect("valid");
        let ss = building.state_space();
        let mut u = DVector::zeros(ss.n_inputs());
        u[ss.input_floor_force(2)] = 10.0;
        let x = ss.a.clone().lu().solve(&(-&ss.b * &u)).expect("invertible");
        // Springs in series: top floor moves 10/1000 + 10/500, first floor 10/1000.
        assert!((x[0] - 0.01).abs() < 1e-14);
        assert!((x[1] - 0.03).abs() < 1e-14);
    }
}
