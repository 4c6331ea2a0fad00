//! Owns the assembly of a validated shear building (plus optional inertial actuator) into
//! mass, damping and stiffness matrices and their undamped modes. Knows nothing of
//! inputs, outputs or time: that is `state_space.rs`.

use nalgebra::DMatrix;

use crate::config::{Damping, InertialActuator, ShearBuildingConfig};
use crate::error::ModelError;
use crate::modes::Modes;

/// A validated N-storey shear building with its second-order matrices.
///
/// Degrees of freedom are displacements relative to the ground: DOF `i − 1` is floor `i`
/// (1-based), and, when an actuator is fitted, DOF `N` is its proof mass.
#[derive(Debug, Clone)]
pub struct ShearBuilding {
    /// Kept so that callers can show or re-serialize what the model was built from.
    config: ShearBuildingConfig,
    /// M, diagonal, kg. Includes the actuator housing on its host floor.
    mass_kg: DMatrix<f64>,
    /// K, N/m. Storey springs plus the actuator suspension.
    stiffness_n_per_m: DMatrix<f64>,
    /// C, N·s/m. Structural damping of the bare building plus the actuator damper.
    damping_n_s_per_m: DMatrix<f64>,
    /// Undamped modes of all DOFs, computed once because every consumer (frequencies,
    /// later modal analysis) needs them and they cannot change.
    modes: Modes,
}

impl ShearBuilding {
    /// Validates the config and assembles M, C and K.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] listing every config problem, or [`ModelError::Numerical`]
    /// if the eigen-analysis needed for damping or frequencies fails.
    pub fn new(config: ShearBuildingConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let floors = config.floors();
        let bare_mass = DMatrix::from_diagonal(&nalgebra::DVector::from_column_slice(
            &config.floor_masses_kg,
        ));
        let bare_stiffness = chain_stiffness(&config.storey_stiffness_n_per_m);
        let bare_damping = structural_damping(&config.damping, &bare_mass, &bare_stiffness)?;

        let dofs = floors + usize::from(config.actuator.is_some());
        let mut mass_kg = DMatrix::zeros(dofs, dofs);
        let mut stiffness_n_per_m = DMatrix::zeros(dofs, dofs);
        let mut damping_n_s_per_m = DMatrix::zeros(dofs, dofs);
        mass_kg
            .view_mut((0, 0), (floors, floors))
            .copy_from(&bare_mass);
        stiffness_n_per_m
            .view_mut((0, 0), (floors, floors))
            .copy_from(&bare_stiffness);
        damping_n_s_per_m
            .view_mut((0, 0), (floors, floors))
            .copy_from(&bare_damping);
        if let Some(actuator) = &config.actuator {
            let host = actuator.floor - 1;
            let proof = floors;
            mass_kg[(host, host)] += actuator.base_mass_kg;
            mass_kg[(proof, proof)] = actuator.proof_mass_kg;
            stamp_link(
                &mut stiffness_n_per_m,
                host,
                proof,
                actuator.stiffness_n_per_m,
            );
            stamp_link(
                &mut damping_n_s_per_m,
                host,
                proof,
                actuator.damping_n_s_per_m,
            );
        }
        let modes = Modes::solve(&mass_kg, &stiffness_n_per_m)?;
        Ok(Self {
            config,
            mass_kg,
            stiffness_n_per_m,
            damping_n_s_per_m,
            modes,
        })
    }

    /// The Southampton three-storey laboratory building (m = 5.201 kg per floor,
    /// k = 4·12·E·J/l³ per storey, 0.2 % Rayleigh damping on modes 1 and 2), no actuator.
    #[expect(
        clippy::expect_used,
        reason = "the Southampton constants are valid (checked by \
                  `southampton_config_is_valid`) and its 3×3 eigenproblem is benign"
    )]
    pub fn southampton() -> Self {
        Self::new(ShearBuildingConfig::southampton()).expect("the Southampton model is valid")
    }

    /// The Southampton building with the default inertial actuator on `floor` (1-based).
    ///
    /// # Errors
    /// [`ModelError::Invalid`] if `floor` is not within 1..=3.
    pub fn southampton_with_actuator(floor: usize) -> Result<Self, ModelError> {
        Self::new(ShearBuildingConfig {
            actuator: Some(InertialActuator {
                floor,
                ..InertialActuator::default()
            }),
            ..ShearBuildingConfig::southampton()
        })
    }

    /// The config this model was built from.
    pub fn config(&self) -> &ShearBuildingConfig {
        &self.config
    }

    /// Number of floors N (not counting the ground).
    pub fn floors(&self) -> usize {
        self.config.floors()
    }

    /// Number of degrees of freedom: N, plus one for the proof mass if an actuator is fitted.
    pub fn dofs(&self) -> usize {
        self.mass_kg.nrows()
    }

    /// True when an inertial actuator is fitted.
    pub fn has_actuator(&self) -> bool {
        self.config.actuator.is_some()
    }

    /// The fitted actuator, if any.
    pub fn actuator(&self) -> Option<&InertialActuator> {
        self.config.actuator.as_ref()
    }

    /// DOF index (0-based) of the actuator's proof mass, if one is fitted.
    pub fn proof_mass_dof(&self) -> Option<usize> {
        self.has_actuator().then_some(self.floors())
    }

    /// Mass matrix M, in kg (dofs × dofs).
    pub fn mass_matrix(&self) -> &DMatrix<f64> {
        &self.mass_kg
    }

    /// Stiffness matrix K, in N/m (dofs × dofs).
    pub fn stiffness_matrix(&self) -> &DMatrix<f64> {
        &self.stiffness_n_per_m
    }

    /// Damping matrix C, in N·s/m (dofs × dofs).
    pub fn damping_matrix(&self) -> &DMatrix<f64> {
        &self.damping_n_s_per_m
    }

    /// Undamped modes of all DOFs (including the proof mass), ascending.
    pub fn modes(&self) -> &Modes {
        &self.modes
    }

    /// Undamped natural frequencies of all DOFs, ascending, in Hz.
    pub fn natural_frequencies_hz(&self) -> Vec<f64> {
        self.modes.frequencies_hz()
    }
}

/// Stiffness (or, given dampers, damping) of a chain of storeys on a fixed base: storey `i`
/// joins floor `i` to floor `i − 1` (the ground for the first storey).
fn chain_stiffness(storey_stiffness_n_per_m: &[f64]) -> DMatrix<f64> {
    let n = storey_stiffness_n_per_m.len();
    let mut k = DMatrix::zeros(n, n);
    for (storey, &k_storey) in storey_stiffness_n_per_m.iter().enumerate() {
        let upper = storey;
        k[(upper, upper)] += k_storey;
        if let Some(lower) = storey.checked_sub(1) {
            stamp_link_off_diagonal(&mut k, lower, upper, k_storey);
            k[(lower, lower)] += k_storey;
        }
    }
    k
}

/// Adds a two-node element (spring or damper of value `value`) between DOFs `a` and `b`.
fn stamp_link(matrix: &mut DMatrix<f64>, a: usize, b: usize, value: f64) {
    matrix[(a, a)] += value;
    matrix[(b, b)] += value;
    stamp_link_off_diagonal(matrix, a, b, value);
}

fn stamp_link_off_diagonal(matrix: &mut DMatrix<f64>, a: usize, b: usize, value: f64) {
    matrix[(a, b)] -= value;
    matrix[(b, a)] -= value;
}

/// Damping matrix of the bare structure (floors and storeys only).
fn structural_damping(
    damping: &Damping,
    mass: &DMatrix<f64>,
    stiffness: &DMatrix<f64>,
) -> Result<DMatrix<f64>, ModelError> {
    match damping {
        Damping::Rayleigh {
            alpha_per_s,
            beta_s,
        } => Ok(mass * *alpha_per_s + stiffness * *beta_s),
        Damping::RayleighModes {
            zeta,
            mode_a,
            mode_b,
        } => {
            let modes = Modes::solve(mass, stiffness)?;
            let (alpha_per_s, beta_s) = rayleigh_coefficients(
                *zeta,
                modes.omegas_rad_s[*mode_a - 1],
                modes.omegas_rad_s[*mode_b - 1],
            );
            Ok(mass * alpha_per_s + stiffness * beta_s)
        }
        Damping::StoreyDampers {
            storey_damping_n_s_per_m,
        } => Ok(chain_stiffness(storey_damping_n_s_per_m)),
        Damping::Matrix { matrix_n_s_per_m } => {
            let n = mass.nrows();
            let c = DMatrix::from_fn(n, n, |r, col| matrix_n_s_per_m[r][col]);
            // Validation allowed rounding-level asymmetry; even it out for Cholesky users.
            Ok((&c + c.transpose()) * 0.5)
        }
        Damping::Modal { zetas } => {
            let modes = Modes::solve(mass, stiffness)?;
            // Mass-normalised Φ gives Φᵀ·C·Φ = diag(2ζω) for C = M·Φ·diag(2ζω)·Φᵀ·M.
            let modal = nalgebra::DVector::from_iterator(
                zetas.len(),
                zetas
                    .iter()
                    .zip(modes.omegas_rad_s.iter())
                    .map(|(zeta, omega)| 2.0 * zeta * omega),
            );
            let m_phi = mass * &modes.shapes;
            let c = &m_phi * DMatrix::from_diagonal(&modal) * m_phi.transpose();
            // Symmetric by construction; rounding is evened out so later Cholesky-based
            // consumers see an exactly symmetric matrix.
            Ok((&c + c.transpose()) * 0.5)
        }
    }
}

/// α and β such that ζ = α/(2ω) + β·ω/2 holds at both ω_a and ω_b.
fn rayleigh_coefficients(zeta: f64, omega_a: f64, omega_b: f64) -> (f64, f64) {
    let sum = omega_a + omega_b;
    (2.0 * zeta * omega_a * omega_b / sum, 2.0 * zeta / sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::SymmetricEigen;
    use std::f64::consts::PI;

    fn undamped_chain(masses: Vec<f64>, stiffnesses: Vec<f64>) -> ShearBuilding {
        ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: masses,
            storey_stiffness_n_per_m: stiffnesses,
            damping: Damping::Rayleigh {
                alpha_per_s: 0.0,
                beta_s: 0.0,
            },
            actuator: None,
        })
        .expect("valid chain")
    }

    /// ω_r = 2·√(k/m)·sin((2r − 1)·π / (2·(2N + 1))) for a uniform fixed-free chain.
    fn uniform_chain_omegas(n: usize, m: f64, k: f64) -> Vec<f64> {
        (1..=n)
            .map(|r| {
                let r = r as f64;
                2.0 * (k / m).sqrt() * ((2.0 * r - 1.0) * PI / (2.0 * (2.0 * n as f64 + 1.0))).sin()
            })
            .collect()
    }

    fn assert_relative(got: &[f64], want: &[f64], tolerance: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                ((g - w) / w).abs() < tolerance,
                "got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn uniform_chain_frequencies_match_closed_form_for_1_3_and_10_storeys() {
        let (m, k) = (2.5, 8000.0);
        for n in [1, 3, 10] {
            let building = undamped_chain(vec![m; n], vec![k; n]);
            let want_hz: Vec<f64> = uniform_chain_omegas(n, m, k)
                .iter()
                .map(|w| w / (2.0 * PI))
                .collect();
            // Symmetric QR is backward stable: eigenvalue errors are ~ε·λ_max, and for N = 10
            // λ_max/λ_min ≈ 170, so ω_min carries ~1e-14 relative error. 1e-10 leaves margin.
            assert_relative(&building.natural_frequencies_hz(), &want_hz, 1e-10);
        }
    }

    #[test]
    fn southampton_frequencies_match_the_closed_form() {
        // Independent of the crate's constants: four clamped-clamped aluminium columns.
        let e_pa: f64 = 70.0e9;
        let (b_m, h_m, l_m): (f64, f64, f64) = (25.0e-3, 3.0e-3, 153.3e-3);
        let j_m4 = b_m * h_m.powi(3) / 12.0;
        let k = 4.0 * 12.0 * e_pa * j_m4 / l_m.powi(3);
        assert!((k - 52_460.0).abs() / 52_460.0 < 1e-3, "k = {k}");
        let building = ShearBuilding::southampton();
        assert!(!building.has_actuator());
        assert_eq!(building.floors(), 3);
        assert_eq!(building.dofs(), 3);
        let want_hz: Vec<f64> = uniform_chain_omegas(3, 5.201, k)
            .iter()
            .map(|w| w / (2.0 * PI))
            .collect();
        // Same eigen-solver accuracy argument as the uniform chains; N = 3 is well conditioned.
        assert_relative(&building.natural_frequencies_hz(), &want_hz, 1e-12);
    }

    #[test]
    fn two_dof_frequencies_match_roots_of_the_characteristic_quadratic() {
        let (m1, m2, k1, k2) = (3.0, 1.2, 12_000.0, 4_500.0);
        let building = undamped_chain(vec![m1, m2], vec![k1, k2]);
        // det(K − λM) = m1·m2·λ² − (m1·k2 + m2·(k1 + k2))·λ + k1·k2 = 0.
        let a = m1 * m2;
        let b = -(m1 * k2 + m2 * (k1 + k2));
        let c = k1 * k2;
        let disc = (b * b - 4.0 * a * c).sqrt();
        // The citardauq form avoids cancellation in the smaller root.
        let lambda_low = 2.0 * c / (-b + disc);
        let lambda_high = (-b + disc) / (2.0 * a);
        let want_hz = [
            lambda_low.sqrt() / (2.0 * PI),
            lambda_high.sqrt() / (2.0 * PI),
        ];
        // A well-separated 2×2 problem: both sides are accurate to a few ulps.
        assert_relative(&building.natural_frequencies_hz(), &want_hz, 1e-12);
    }

    /// Mass-normalised modes computed independently of `Modes::solve`: M is diagonal, so
    /// M^{-1/2}·K·M^{-1/2} is symmetric and its eigenvectors map back with M^{-1/2}.
    fn independent_modes(m: &DMatrix<f64>, k: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
        let inv_sqrt = m.map_diagonal(|x| 1.0 / x.sqrt());
        let inv_sqrt = DMatrix::from_diagonal(&inv_sqrt);
        let eigen = SymmetricEigen::new(&inv_sqrt * k * &inv_sqrt);
        let mut order: Vec<usize> = (0..m.nrows()).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[a].total_cmp(&eigen.eigenvalues[b]));
        let omegas = order.iter().map(|&i| eigen.eigenvalues[i].sqrt()).collect();
        let psi = DMatrix::from_fn(m.nrows(), m.ncols(), |r, c| {
            eigen.eigenvectors[(r, order[c])]
        });
        (omegas, inv_sqrt * psi)
    }

    #[test]
    fn rayleigh_modes_damp_the_chosen_modes_at_the_requested_ratio() {
        let zeta = 0.02;
        let building = ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: vec![4.0, 3.5, 3.0, 2.0, 1.5],
            storey_stiffness_n_per_m: vec![9000.0, 8000.0, 7000.0, 6000.0, 4000.0],
            damping: Damping::RayleighModes {
                zeta,
                mode_a: 1,
                mode_b: 3,
            },
            actuator: None,
        })
        .expect("valid");
        let (omegas, phi) = independent_modes(building.mass_matrix(), building.stiffness_matrix());
        let modal_c = phi.transpose() * building.damping_matrix() * &phi;
        let ratio = |r: usize| modal_c[(r, r)] / (2.0 * omegas[r]);
        // The ratios come from a 2×2 solve and two eigen-decompositions: ~1e-13 relative.
        assert!((ratio(0) - zeta).abs() < 1e-10 * zeta, "ζ1 = {}", ratio(0));
        assert!((ratio(2) - zeta).abs() < 1e-10 * zeta, "ζ3 = {}", ratio(2));
        // Rayleigh damping is classical: Φᵀ·C·Φ is diagonal.
        for r in 0..5 {
            for c in 0..5 {
                if r != c {
                    assert!(modal_c[(r, c)].abs() < 1e-10 * modal_c[(r, r)]);
                }
            }
        }
        // Between the matched modes Rayleigh damping dips below ζ, above them it grows.
        assert!(ratio(1) < zeta && ratio(4) > zeta);
    }

    #[test]
    fn modal_damping_gives_each_mode_its_own_ratio() {
        let zetas = vec![0.01, 0.03, 0.05];
        let building = ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: vec![2.0, 3.0, 1.0],
            storey_stiffness_n_per_m: vec![5000.0, 3000.0, 2000.0],
            damping: Damping::Modal {
                zetas: zetas.clone(),
            },
            actuator: None,
        })
        .expect("valid");
        let (omegas, phi) = independent_modes(building.mass_matrix(), building.stiffness_matrix());
        let modal_c = phi.transpose() * building.damping_matrix() * &phi;
        for (r, zeta) in zetas.iter().enumerate() {
            let got = modal_c[(r, r)] / (2.0 * omegas[r]);
            // Two independent eigen-decompositions agree to ~1e-14; 1e-10 leaves margin.
            assert!((got - zeta).abs() < 1e-10, "mode {}: ζ = {got}", r + 1);
        }
    }

    #[test]
    fn actuator_adds_housing_mass_and_a_suspended_proof_mass() {
        let building = ShearBuilding::southampton_with_actuator(2).expect("floor 2 exists");
        let bare = ShearBuilding::southampton();
        let act = InertialActuator::default();
        assert_eq!(building.dofs(), 4);
        assert_eq!(building.proof_mass_dof(), Some(3));
        let m = building.mass_matrix();
        assert_eq!(m[(1, 1)], 5.201 + act.base_mass_kg);
        assert_eq!(m[(0, 0)], 5.201);
        assert_eq!(m[(3, 3)], act.proof_mass_kg);
        let k = building.stiffness_matrix();
        let c = building.damping_matrix();
        let host = 1;
        for (matrix, bare_matrix, value) in [
            (k, bare.stiffness_matrix(), act.stiffness_n_per_m),
            (c, bare.damping_matrix(), act.damping_n_s_per_m),
        ] {
            assert_eq!(matrix[(3, 3)], value);
            assert_eq!(matrix[(host, 3)], -value);
            assert_eq!(matrix[(3, host)], -value);
            assert_eq!(matrix[(0, 3)], 0.0);
            // The structural part is the bare building's, plus the suspension on the host.
            for r in 0..3 {
                for col in 0..3 {
                    let extra = if r == host && col == host { value } else { 0.0 };
                    assert_eq!(matrix[(r, col)], bare_matrix[(r, col)] + extra);
                }
            }
        }
        assert_eq!(building.natural_frequencies_hz().len(), 4);
    }

    #[test]
    fn southampton_with_actuator_rejects_a_floor_outside_the_building() {
        for floor in [0, 4] {
            let err = ShearBuilding::southampton_with_actuator(floor).expect_err("no such floor");
            assert!(
                matches!(err, ModelError::Invalid(ref p) if p.len() == 1),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_config_is_refused_before_any_matrix_is_built() {
        let err = ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: vec![1.0, 0.0],
            storey_stiffness_n_per_m: vec![f64::INFINITY, 1.0],
            damping: Damping::Modal { zetas: vec![0.0] },
            actuator: None,
        })
        .expect_err("invalid");
        let ModelError::Invalid(problems) = err else {
            panic!("wrong error kind");
        };
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }

    #[test]
    fn storey_dampers_give_c_the_pattern_of_k() {
        let building = ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: vec![5.362, 5.144, 5.142],
            storey_stiffness_n_per_m: vec![3.846e8, 4.464e8, 4.589e8],
            damping: Damping::StoreyDampers {
                storey_damping_n_s_per_m: vec![1.699e4, 1.016e4, 1.34e4],
            },
            actuator: None,
        })
        .expect("valid");
        let (c1, c2, c3) = (1.699e4, 1.016e4, 1.34e4);
        // TOOLS.md §3.1, written out by hand.
        let want =
            DMatrix::from_row_slice(3, 3, &[c1 + c2, -c2, 0.0, -c2, c2 + c3, -c3, 0.0, -c3, c3]);
        assert_eq!(building.damping_matrix(), &want);
    }

    #[test]
    fn an_explicit_damping_matrix_is_used_as_given_and_the_actuator_damper_added() {
        let rows = vec![
            vec![3.0, -1.0, 0.0],
            vec![-1.0, 2.0, -0.5],
            vec![0.0, -0.5, 0.5],
        ];
        let building = ShearBuilding::new(ShearBuildingConfig {
            damping: Damping::Matrix {
                matrix_n_s_per_m: rows.clone(),
            },
            actuator: Some(InertialActuator {
                floor: 3,
                ..InertialActuator::default()
            }),
            ..ShearBuildingConfig::southampton()
        })
        .expect("valid");
        let cp = InertialActuator::default().damping_n_s_per_m;
        let want = DMatrix::from_row_slice(
            4,
            4,
            &[
                3.0,
                -1.0,
                0.0,
                0.0, //
                -1.0,
                2.0,
                -0.5,
                0.0, //
                0.0,
                -0.5,
                0.5 + cp,
                -cp, //
                0.0,
                0.0,
                -cp,
                cp,
            ],
        );
        assert_eq!(building.damping_matrix(), &want);
    }

    #[test]
    fn damping_matrices_that_are_not_symmetric_psd_or_square_are_refused_with_the_reason() {
        let with = |rows: Vec<Vec<f64>>| ShearBuildingConfig {
            floor_masses_kg: vec![1.0, 1.0],
            storey_stiffness_n_per_m: vec![100.0, 100.0],
            damping: Damping::Matrix {
                matrix_n_s_per_m: rows,
            },
            actuator: None,
        };
        // Eigenvalues 3 and −1: indefinite.
        let indefinite = with(vec![vec![1.0, 2.0], vec![2.0, 1.0]]).problems();
        assert!(
            indefinite.len() == 1 && indefinite[0].contains("not positive semi-definite"),
            "{indefinite:?}"
        );
        let asymmetric = with(vec![vec![1.0, 0.5], vec![0.0, 1.0]]).problems();
        assert!(
            asymmetric.len() == 1 && asymmetric[0].contains("not symmetric"),
            "{asymmetric:?}"
        );
        let ragged = with(vec![vec![1.0], vec![0.0, f64::NAN], vec![]]).problems();
        assert_eq!(ragged.len(), 4, "{ragged:#?}");
        // Semi-definite (a single damper between the floors) is fine.
        assert!(
            with(vec![vec![1.0, -1.0], vec![-1.0, 1.0]])
                .problems()
                .is_empty()
        );
        let dampers = ShearBuildingConfig {
            damping: Damping::StoreyDampers {
                storey_damping_n_s_per_m: vec![-1.0, 2.0, 3.0],
            },
            ..with(vec![])
        }
        .problems();
        assert_eq!(dampers.len(), 2, "{dampers:#?}");
    }
}
