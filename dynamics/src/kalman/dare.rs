//! Owns the steady state of the Kalman filter: the stabilizing solution of the filter
//! discrete algebraic Riccati equation (DARE) with correlated noise, and the gains that
//! follow from it. Runs once per design, so it allocates freely; knows nothing of stepping.

use nalgebra::{Cholesky, DMatrix};

use super::KalmanError;

/// Doubling steps before giving up. Each step doubles the horizon the solution covers, so
/// 64 steps reach 2⁶⁴ samples: a mode that has not settled by then never will.
const MAX_DOUBLINGS: usize = 64;

/// Convergence: the last doubling changed no entry of P by more than this fraction of
/// √(Pᵢᵢ·Pⱼⱼ). Scaled per entry because displacement and velocity variances differ by
/// orders of magnitude, and a plain norm would only watch the largest.
const RELATIVE_TOLERANCE: f64 = 1e-14;

/// The steady-state Kalman filter of one model and one set of sensors.
#[derive(Debug, Clone, PartialEq)]
pub struct DareSolution {
    /// Steady-state prediction error covariance P = cov(x(k) − x̂(k|k−1)), n × n.
    pub covariance: DMatrix<f64>,
    /// Innovation covariance Σ = C·P·Cᵀ + R, m × m.
    pub innovation_covariance: DMatrix<f64>,
    /// Measurement-update gain L = P·Cᵀ·Σ⁻¹, n × m: x̂(k|k) = x̂(k|k−1) + L·e(k).
    pub filter_gain: DMatrix<f64>,
    /// One-step predictor gain K = (A·P·Cᵀ + S)·Σ⁻¹, n × m:
    /// x̂(k+1|k) = A·x̂(k|k−1) + B·u(k) + K·e(k).
    pub predictor_gain: DMatrix<f64>,
    /// Doubling steps taken (each one doubles the horizon).
    pub iterations: usize,
}

/// Solves the filter DARE with cross-covariance,
///
/// P = A·P·Aᵀ + Q − (A·P·Cᵀ + S)·(C·P·Cᵀ + R)⁻¹·(A·P·Cᵀ + S)ᵀ,
///
/// for its stabilizing solution, where Q = cov(w), R = cov(v), S = cov(w, v) of
/// x(k+1) = A·x(k) + w(k), y(k) = C·x(k) + v(k).
///
/// The cross term is removed first: with Ã = A − S·R⁻¹·C and Q̃ = Q − S·R⁻¹·Sᵀ the equation
/// becomes the standard P = Ã·P·(I + G·P)⁻¹·Ãᵀ + Q̃, G = Cᵀ·R⁻¹·C. That is solved by the
/// structure-preserving doubling algorithm (Chu, Fan & Lin, 2005): quadratic convergence,
/// so a lightly damped mode (pole radius 1 − 10⁻⁴) needs ~20 steps where the plain Riccati
/// recursion needs ~10⁵.
///
/// # Errors
/// [`KalmanError::Invalid`] if the sizes do not fit or an entry is not finite;
/// [`KalmanError::Numerical`] if R is not positive definite, or the iteration diverges or
/// does not settle (a mode that grows, or does not decay, and that no sensor sees).
pub fn solve_filter_dare(
    a: &DMatrix<f64>,
    c: &DMatrix<f64>,
    q: &DMatrix<f64>,
    r: &DMatrix<f64>,
    s: &DMatrix<f64>,
) -> Result<DareSolution, KalmanError> {
    check_sizes(a, c, q, r, s)?;
    let n = a.nrows();
    let r_chol = Cholesky::new(r.clone()).ok_or_else(|| {
        KalmanError::Numerical("measurement noise covariance R is not positive definite".into())
    })?;
    let r_inv_c = r_chol.solve(c);
    let r_inv_s_t = r_chol.solve(&s.transpose());
    let a_tilde = a - s * &r_inv_c;
    let mut q_tilde = q - s * &r_inv_s_t;
    symmetrize(&mut q_tilde);

    // Control-form SDA on the dual: X = Aₖᵀ·X·(I + G·X)⁻¹·Aₖ + H with A₀ = Ãᵀ.
    let identity = DMatrix::<f64>::identity(n, n);
    let mut a_k = a_tilde.transpose();
    let mut g_k = c.transpose() * &r_inv_c;
    symmetrize(&mut g_k);
    let mut h_k = q_tilde;
    let mut iterations = 0;
    loop {
        if iterations == MAX_DOUBLINGS {
            return Err(KalmanError::Numerical(format!(
                "Riccati doubling did not settle in {MAX_DOUBLINGS} steps: a mode no sensor \
                 sees does not decay"
            )));
        }
        iterations += 1;
        let lu = (&identity + &g_k * &h_k).lu();
        let (Some(w_a), Some(w_g)) = (lu.solve(&a_k), lu.solve(&g_k)) else {
            return Err(KalmanError::Numerical(
                "Riccati doubling met a singular I + G·H".into(),
            ));
        };
        let mut h_next = &h_k + a_k.transpose() * &h_k * &w_a;
        let mut g_next = &g_k + &a_k * w_g * a_k.transpose();
        symmetrize(&mut h_next);
        symmetrize(&mut g_next);
        a_k = &a_k * w_a;
        if h_next.iter().any(|v| !v.is_finite()) {
            return Err(KalmanError::Numerical(
                "Riccati doubling diverged: a mode no sensor sees grows".into(),
            ));
        }
        let change = scaled_max_abs(&(&h_next - &h_k), &h_next);
        h_k = h_next;
        g_k = g_next;
        if change <= RELATIVE_TOLERANCE {
            break;
        }
    }
    let p = h_k;
    gains(a, c, r, s, p, iterations)
}

/// The gains of the steady-state filter with prediction covariance `p`.
fn gains(
    a: &DMatrix<f64>,
    c: &DMatrix<f64>,
    r: &DMatrix<f64>,
    s: &DMatrix<f64>,
    p: DMatrix<f64>,
    iterations: usize,
) -> Result<DareSolution, KalmanError> {
    let p_ct = &p * c.transpose();
    let mut sigma = c * &p_ct + r;
    symmetrize(&mut sigma);
    let sigma_chol = Cholesky::new(sigma.clone()).ok_or_else(|| {
        KalmanError::Numerical("innovation covariance is not positive definite".into())
    })?;
    // L = P·Cᵀ·Σ⁻¹ and K = (A·P·Cᵀ + S)·Σ⁻¹, through Σ⁻¹·(·)ᵀ because Σ is symmetric.
    let filter_gain = sigma_chol.solve(&p_ct.transpose()).transpose();
    let predictor_gain = sigma_chol.solve(&(a * &p_ct + s).transpose()).transpose();
    Ok(DareSolution {
        covariance: p,
        innovation_covariance: sigma,
        filter_gain,
        predictor_gain,
        iterations,
    })
}

fn check_sizes(
    a: &DMatrix<f64>,
    c: &DMatrix<f64>,
    q: &DMatrix<f64>,
    r: &DMatrix<f64>,
    s: &DMatrix<f64>,
) -> Result<(), KalmanError> {
    let n = a.nrows();
    let m = c.nrows();
    let mut problems = Vec::new();
    let mut want = |name: &str, got: (usize, usize), rows: usize, cols: usize| {
        if got != (rows, cols) {
            problems.push(format!(
                "{name} is {}×{}, expected {rows}×{cols}",
                got.0, got.1
            ));
        }
    };
    want("A", a.shape(), n, n);
    want("C", c.shape(), m, n);
    want("Q", q.shape(), n, n);
    want("R", r.shape(), m, m);
    want("S", s.shape(), n, m);
    for (name, matrix) in [("A", a), ("C", c), ("Q", q), ("R", r), ("S", s)] {
        if matrix.iter().any(|v| !v.is_finite()) {
            problems.push(format!("{name} has a non-finite entry"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(KalmanError::Invalid(problems))
    }
}

/// max |Δᵢⱼ| / √(Pᵢᵢ·Pⱼⱼ), with a floor on the diagonal so noise-free states do not divide
/// by zero.
pub(crate) fn scaled_max_abs(delta: &DMatrix<f64>, p: &DMatrix<f64>) -> f64 {
    let scale: Vec<f64> = p
        .diagonal()
        .iter()
        .map(|d| d.abs().max(f64::MIN_POSITIVE).sqrt())
        .collect();
    let mut worst: f64 = 0.0;
    for j in 0..delta.ncols() {
        for i in 0..delta.nrows() {
            worst = worst.max(delta[(i, j)].abs() / (scale[i] * scale[j]));
        }
    }
    worst
}

fn symmetrize(a: &mut DMatrix<f64>) {
    super::linalg::symmetrize(a);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_random_walk_has_the_textbook_steady_gain() {
        // x(k+1) = x(k) + w, y = x + v, q = r = 1: P = (1 + √5)/2 (golden ratio),
        // L = P/(P + 1).
        let one = DMatrix::from_element(1, 1, 1.0);
        let zero = DMatrix::zeros(1, 1);
        let sol = solve_filter_dare(&one, &one, &one, &one, &zero).expect("detectable");
        let golden = (1.0 + 5f64.sqrt()) / 2.0;
        assert!((sol.covariance[(0, 0)] - golden).abs() < 1e-14);
        assert!((sol.filter_gain[(0, 0)] - golden / (golden + 1.0)).abs() < 1e-14);
    }

    #[test]
    fn unseen_growing_mode_is_a_numerical_error() {
        let a = DMatrix::from_row_slice(2, 2, &[1.01, 0.0, 0.0, 0.5]);
        let c = DMatrix::from_row_slice(1, 2, &[0.0, 1.0]);
        let q = DMatrix::identity(2, 2);
        let r = DMatrix::identity(1, 1);
        let s = DMatrix::zeros(2, 1);
        assert!(matches!(
            solve_filter_dare(&a, &c, &q, &r, &s),
            Err(KalmanError::Numerical(_))
        ));
    }

    #[test]
    fn mismatched_sizes_are_all_reported() {
        let err = solve_filter_dare(
            &DMatrix::identity(2, 2),
            &DMatrix::zeros(1, 3),
            &DMatrix::identity(2, 2),
            &DMatrix::identity(2, 2),
            &DMatrix::zeros(2, 1),
        )
        .expect_err("sizes do not fit");
        let KalmanError::Invalid(problems) = err else {
            panic!("wrong error {err:?}");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
