//! Owns the undamped generalized eigenproblem K·φ = ω²·M·φ for symmetric M (positive
//! definite) and K. Knows nothing about buildings; damping and FRFs build on its output.

use nalgebra::{Cholesky, DMatrix, DVector, SymmetricEigen};

use crate::error::ModelError;

/// Iteration budget for the symmetric QR sweep. Implicit-shift QR needs a handful of sweeps
/// per eigenvalue; this bound only exists so that a pathological matrix returns an error
/// instead of spinning forever.
const MAX_EIGEN_ITERATIONS: usize = 10_000;

/// Undamped modes of a second-order system, ascending in frequency.
#[derive(Debug, Clone, PartialEq)]
pub struct Modes {
    /// Natural angular frequencies ω_r, ascending, in rad/s.
    pub omegas_rad_s: DVector<f64>,
    /// Mode shapes as columns, in the order of `omegas_rad_s`, mass-normalised so that
    /// Φᵀ·M·Φ = I and Φᵀ·K·Φ = diag(ω²). Each column's largest-magnitude entry is positive,
    /// so the signs are reproducible.
    pub shapes: DMatrix<f64>,
}

impl Modes {
    /// Solves K·φ = ω²·M·φ through the Cholesky factor M = L·Lᵀ: the symmetric matrix
    /// L⁻¹·K·L⁻ᵀ has the same eigenvalues, and its orthonormal eigenvectors ψ map back to
    /// mass-normalised shapes φ = L⁻ᵀ·ψ.
    ///
    /// Rounding can push the eigenvalue of a rigid-body mode slightly below zero; such
    /// values are clamped to ω = 0.
    ///
    /// # Errors
    /// [`ModelError::Numerical`] if M is not positive definite, the matrices are not square
    /// and of equal size, or the eigen-solver does not converge.
    pub fn solve(mass: &DMatrix<f64>, stiffness: &DMatrix<f64>) -> Result<Self, ModelError> {
        let n = mass.nrows();
        if !mass.is_square() || stiffness.shape() != mass.shape() {
            return Err(ModelError::Numerical(
                "mass and stiffness matrices must be square and of equal size",
            ));
        }
        if mass.iter().chain(stiffness.iter()).any(|x| !x.is_finite()) {
            return Err(ModelError::Numerical(
                "mass or stiffness matrix has a non-finite entry",
            ));
        }
        let l = Cholesky::new(mass.clone())
            .ok_or(ModelError::Numerical(
                "mass matrix is not positive definite",
            ))?
            .unpack();
        let lower_solve_failed = ModelError::Numerical("mass matrix factor is singular");
        // L⁻¹·K, then L⁻¹·(L⁻¹·K)ᵀ = L⁻¹·K·L⁻ᵀ because K is symmetric.
        let half = l
            .solve_lower_triangular(stiffness)
            .ok_or_else(|| lower_solve_failed.clone())?;
        let mut reduced = l
            .solve_lower_triangular(&half.transpose())
            .ok_or(lower_solve_failed)?;
        // The two solves round differently above and below the diagonal; the eigen-solver
        // reads only the lower triangle, so symmetrise to use both halves equally.
        reduced = (&reduced + reduced.transpose()) * 0.5;
        if reduced.iter().any(|x| !x.is_finite()) {
            return Err(ModelError::Numerical(
                "reduced stiffness L⁻¹·K·L⁻ᵀ overflowed",
            ));
        }
        let eigen = SymmetricEigen::try_new(reduced, f64::EPSILON, MAX_EIGEN_ITERATIONS).ok_or(
            ModelError::Numerical("symmetric eigen-solver did not converge"),
        )?;

        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[a].total_cmp(&eigen.eigenvalues[b]));

        let omegas_rad_s = DVector::from_iterator(
            n,
            order.iter().map(|&i| eigen.eigenvalues[i].max(0.0).sqrt()),
        );
        let sorted_psi = DMatrix::from_fn(n, n, |row, col| eigen.eigenvectors[(row, order[col])]);
        let mut shapes = l
            .transpose()
            .solve_upper_triangular(&sorted_psi)
            .ok_or(ModelError::Numerical("mass matrix factor is singular"))?;
        for mut column in shapes.column_iter_mut() {
            let largest = column.iter().fold(
                0.0_f64,
                |best, &x| {
                    if x.abs() > best.abs() { x } else { best }
                },
            );
            if largest < 0.0 {
                column.neg_mut();
            }
        }
        Ok(Self {
            omegas_rad_s,
            shapes,
        })
    }

    /// Number of modes (equals the number of degrees of freedom).
    pub fn len(&self) -> usize {
        self.omegas_rad_s.len()
    }

    /// True for a system without degrees of freedom.
    pub fn is_empty(&self) -> bool {
        self.omegas_rad_s.is_empty()
    }

    /// Natural frequencies f_r = ω_r / 2π, ascending, in Hz.
    pub fn frequencies_hz(&self) -> Vec<f64> {
        self.omegas_rad_s
            .iter()
            .map(|w| w / std::f64::consts::TAU)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_mass_normalised_and_diagonalise_a_full_mass_matrix() {
        // A non-diagonal (consistent-mass-like) M exercises the Cholesky path for real.
        let m = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.0, 1.0, 3.0, 0.5, 0.0, 0.5, 2.0]);
        let k = DMatrix::from_row_slice(
            3,
            3,
            &[
                300.0, -100.0, 0.0, -100.0, 250.0, -150.0, 0.0, -150.0, 150.0,
            ],
        );
        let modes = Modes::solve(&m, &k).expect("well-posed");
        let phi = &modes.shapes;
        let mass_modal = phi.transpose() * &m * phi;
        let stiff_modal = phi.transpose() * &k * phi;
        // Entries are O(1) and O(100) after normalisation; a few ulps of each are expected.
        for r in 0..3 {
            for c in 0..3 {
                let want_m = if r == c { 1.0 } else { 0.0 };
                let want_k = if r == c {
                    modes.omegas_rad_s[r].powi(2)
                } else {
                    0.0
                };
                assert!((mass_modal[(r, c)] - want_m).abs() < 1e-12, "{mass_modal}");
                assert!(
                    (stiff_modal[(r, c)] - want_k).abs() < 1e-10,
                    "{stiff_modal}"
                );
            }
        }
        assert!(
            modes
                .omegas_rad_s
                .as_slice()
                .windows(2)
                .all(|w| w[0] <= w[1])
        );
        // det(K − λM) = 0 at every eigenvalue: an independent check of the values.
        for &w in modes.omegas_rad_s.iter() {
            let det = (&k - &m * (w * w)).determinant();
            let scale = k.determinant().abs();
            assert!(det.abs() < 1e-9 * scale, "det {det} at ω = {w}");
        }
    }

    #[test]
    fn rejects_a_mass_matrix_that_is_not_positive_definite() {
        let m = DMatrix::from_row_slice(2, 2, &[1.0, 0.0, 0.0, -1.0]);
        let k = DMatrix::identity(2, 2);
        assert!(matches!(
            Modes::solve(&m, &k),
            Err(ModelError::Numerical(_))
        ));
    }
}
