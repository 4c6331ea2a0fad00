//! Owns the continuous algebraic Riccati equation Aᵀ·P + P·A − P·G·P + Q = 0 (stabilizing
//! solution) and the Lyapunov equation Aᵀ·X + X·A + Q = 0 it is refined with. Generic dense
//! linear algebra; knows nothing of buildings or of which side (regulator or filter) asks.

use nalgebra::DMatrix;

use crate::control::ControlError;
use crate::frf::eigenvalues;

/// Newton iterations allowed for the matrix sign function. With determinant scaling it
/// converges in well under 100 steps unless the Hamiltonian has eigenvalues on (or within
/// rounding of) the imaginary axis, which means no stabilizing solution exists.
const MAX_SIGN_ITERATIONS: usize = 200;
/// Relative change of the sign iterate at which it is taken as converged; the Newton–Kleinman
/// refinement that follows recovers the last digits.
const SIGN_TOLERANCE: f64 = 1e-12;
/// Newton–Kleinman refinement steps: each one squares the error, so two or three suffice.
const MAX_REFINEMENT_STEPS: usize = 6;
/// Largest state dimension accepted: the Lyapunov solve is a dense n² × n² system.
pub const MAX_RICCATI_STATES: usize = 60;

/// The stabilizing solution P = Pᵀ of Aᵀ·P + P·A − P·G·P + Q = 0, where G = Gᵀ ≥ 0 and
/// Q = Qᵀ ≥ 0: A − G·P has every eigenvalue in the open left half plane.
///
/// Method: the matrix sign function of the Hamiltonian H = [[A, −G], [−Q, −Aᵀ]] (Newton
/// iteration with determinant scaling, Byers 1987) gives the stable invariant subspace
/// [I; P]; Newton–Kleinman steps then polish P to working precision.
///
/// # Errors
/// [`ControlError::Numerical`] if the shapes do not fit, the system is too large, the
/// Hamiltonian has imaginary-axis eigenvalues (not stabilizable or not detectable), or the
/// result is not stabilizing.
pub fn solve_care(
    a: &DMatrix<f64>,
    g: &DMatrix<f64>,
    q: &DMatrix<f64>,
) -> Result<DMatrix<f64>, ControlError> {
    let n = a.nrows();
    if !a.is_square() || g.shape() != a.shape() || q.shape() != a.shape() {
        return Err(ControlError::Numerical(
            "Riccati: A, G, Q must be square and equal size",
        ));
    }
    if n > MAX_RICCATI_STATES {
        return Err(ControlError::Numerical(
            "Riccati: too many states for a dense solve",
        ));
    }
    if a.iter()
        .chain(g.iter())
        .chain(q.iter())
        .any(|x| !x.is_finite())
    {
        return Err(ControlError::Numerical("Riccati: non-finite entry"));
    }
    let mut z = DMatrix::zeros(2 * n, 2 * n);
    z.view_mut((0, 0), (n, n)).copy_from(a);
    z.view_mut((0, n), (n, n)).copy_from(&(-g));
    z.view_mut((n, 0), (n, n)).copy_from(&(-q));
    z.view_mut((n, n), (n, n)).copy_from(&(-a.transpose()));

    let mut converged = false;
    for _ in 0..MAX_SIGN_ITERATIONS {
        let lu = z.clone().lu();
        let inverse = lu.try_inverse().ok_or(ControlError::Numerical(
            "Riccati: Hamiltonian is singular (eigenvalue on the imaginary axis)",
        ))?;
        // |det Z|^(−1/2n) scaling, computed in logs so 2n large entries cannot overflow.
        let log_det: f64 = lu.u().diagonal().iter().map(|d| d.abs().ln()).sum();
        let scale = (-log_det / (2 * n) as f64).exp();
        let next = (&z * scale + inverse / scale) * 0.5;
        let change = (&next - &z).norm() / next.norm();
        z = next;
        if !change.is_finite() {
            return Err(ControlError::Numerical("Riccati: sign iteration diverged"));
        }
        if change < SIGN_TOLERANCE {
            converged = true;
            break;
        }
    }
    if !converged {
        return Err(ControlError::Numerical(
            "Riccati: sign iteration did not converge (no stabilizing solution?)",
        ));
    }
    // (sign(H) + I)·[I; P] = 0, i.e. [W₁₂; W₂₂ + I]·P = −[W₁₁ + I; W₂₁], solved in least squares.
    let identity = DMatrix::<f64>::identity(n, n);
    let mut lhs = DMatrix::zeros(2 * n, n);
    lhs.view_mut((0, 0), (n, n))
        .copy_from(&z.view((0, n), (n, n)));
    lhs.view_mut((n, 0), (n, n))
        .copy_from(&(z.view((n, n), (n, n)) + &identity));
    let mut rhs = DMatrix::zeros(2 * n, n);
    rhs.view_mut((0, 0), (n, n))
        .copy_from(&(-(z.view((0, 0), (n, n)) + &identity)));
    rhs.view_mut((n, 0), (n, n))
        .copy_from(&(-z.view((n, 0), (n, n))));
    let p = lhs
        .svd(true, true)
        .solve(&rhs, f64::EPSILON)
        .map_err(|_| ControlError::Numerical("Riccati: subspace solve failed"))?;
    let mut p = (&p + p.transpose()) * 0.5;

    let mut residual = care_residual(a, g, q, &p);
    for _ in 0..MAX_REFINEMENT_STEPS {
        let closed = a - g * &p;
        let Ok(next) = solve_lyapunov(&closed, &(q + &p * g * &p)) else {
            break;
        };
        let next = (&next + next.transpose()) * 0.5;
        let next_residual = care_residual(a, g, q, &next);
        if next_residual.is_nan() || next_residual >= residual {
            break;
        }
        p = next;
        residual = next_residual;
    }
    let closed = a - g * &p;
    if eigenvalues(&closed)?.iter().any(|l| l.re >= 0.0) {
        return Err(ControlError::Numerical(
            "Riccati: solution is not stabilizing",
        ));
    }
    Ok(p)
}

/// ‖Aᵀ·P + P·A − P·G·P + Q‖_F relative to the sum of its terms' norms: about machine
/// precision for an accurate solution.
pub fn care_residual(
    a: &DMatrix<f64>,
    g: &DMatrix<f64>,
    q: &DMatrix<f64>,
    p: &DMatrix<f64>,
) -> f64 {
    let ap = a.transpose() * p;
    let pgp = p * g * p;
    let residual = &ap + ap.transpose() - &pgp + q;
    let scale = 2.0 * ap.norm() + pgp.norm() + q.norm();
    if scale > 0.0 {
        residual.norm() / scale
    } else {
        residual.norm()
    }
}

/// X solving Aᵀ·X + X·A + Q = 0, through the Kronecker form (I⊗Aᵀ + Aᵀ⊗I)·vec X = −vec Q.
/// Unique when no two eigenvalues of A sum to zero (e.g. A stable).
///
/// # Errors
/// [`ControlError::Numerical`] if shapes do not fit, the system is too large, or the
/// Kronecker matrix is singular.
pub fn solve_lyapunov(a: &DMatrix<f64>, q: &DMatrix<f64>) -> Result<DMatrix<f64>, ControlError> {
    let n = a.nrows();
    if !a.is_square() || q.shape() != a.shape() {
        return Err(ControlError::Numerical(
            "Lyapunov: A and Q must be square and equal size",
        ));
    }
    if n > MAX_RICCATI_STATES {
        return Err(ControlError::Numerical(
            "Lyapunov: too many states for a dense solve",
        ));
    }
    let identity = DMatrix::<f64>::identity(n, n);
    let at = a.transpose();
    let kron = identity.kronecker(&at) + at.kronecker(&identity);
    let rhs = -DMatrix::from_column_slice(n * n, 1, q.as_slice());
    let x = kron
        .lu()
        .solve(&rhs)
        .ok_or(ControlError::Numerical("Lyapunov: equation is singular"))?;
    Ok(DMatrix::from_column_slice(n, n, x.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_riccati_matches_the_quadratic_formula() {
        // ẋ = a·x + b·u, cost ∫ q·x² + r·u²: 2·a·p − p²·b²/r + q = 0, p = r·(a + √(a² + b²q/r))/b².
        for (a, b, q, r) in [
            (-1.0_f64, 2.0_f64, 3.0_f64, 0.5_f64),
            (0.7, 1.0, 1.0, 1.0),
            (-20.0, 0.1, 1e4, 1e-3),
        ] {
            let want: f64 = r * (a + (a * a + b * b * q / r).sqrt()) / (b * b);
            let p = solve_care(
                &DMatrix::from_element(1, 1, a),
                &DMatrix::from_element(1, 1, b * b / r),
                &DMatrix::from_element(1, 1, q),
            )
            .expect("stabilizable");
            // A 2×2 sign iteration plus Newton polish: a few ulps relative.
            assert!(
                (p[(0, 0)] - want).abs() < 1e-10 * want.abs(),
                "{p} vs {want}"
            );
        }
    }

    #[test]
    fn lightly_damped_oscillator_riccati_has_a_tiny_residual_and_stabilizes() {
        let (wn, zeta) = (45.0, 0.002);
        let a = DMatrix::from_row_slice(2, 2, &[0.0, 1.0, -wn * wn, -2.0 * zeta * wn]);
        let b = DMatrix::from_column_slice(2, 1, &[0.0, 1.0]);
        let q = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![wn * wn, 1.0]));
        let g = &b * b.transpose() * 100.0;
        let p = solve_care(&a, &g, &q).expect("stabilizable");
        // Entries span wn² ≈ 2000 : 1; residual relative to the terms' size stays near ε.
        assert!(care_residual(&a, &g, &q, &p) < 1e-12);
        let closed = &a - &g * &p;
        assert!(
            eigenvalues(&closed)
                .expect("eig")
                .iter()
                .all(|l| l.re < 0.0)
        );
    }

    #[test]
    fn lyapunov_solution_satisfies_its_equation() {
        let a = DMatrix::from_row_slice(3, 3, &[-1.0, 2.0, 0.0, -3.0, -0.5, 1.0, 0.0, 0.2, -2.0]);
        let q = DMatrix::from_row_slice(3, 3, &[2.0, 0.1, 0.0, 0.1, 1.0, 0.3, 0.0, 0.3, 4.0]);
        let x = solve_lyapunov(&a, &q).expect("stable A");
        let residual = a.transpose() * &x + &x * &a + &q;
        assert!(residual.norm() < 1e-12 * q.norm(), "{residual}");
    }

    #[test]
    fn riccati_without_a_stabilizing_solution_is_an_error() {
        // Unstable mode a = 1 with no actuation at all (G = 0): not stabilizable.
        let result = solve_care(
            &DMatrix::from_element(1, 1, 1.0),
            &DMatrix::zeros(1, 1),
            &DMatrix::from_element(1, 1, 1.0),
        );
        assert!(
            matches!(result, Err(ControlError::Numerical(_))),
            "{result:?}"
        );
    }
}
