//! Owns the allocation-free dense kernels the time-varying covariance update runs every
//! step: products into preallocated matrices, an in-place Cholesky factorization and its
//! solves. Knows nothing of Kalman filtering.
//!
//! nalgebra's `gemm` hands dynamic matrices above 5×5 to `matrixmultiply`, whose packing
//! buffers are heap-allocated per call; products here go column by column through `gemv`,
//! which never allocates and is as fast at the sizes a structural model has.

use nalgebra::{DMatrix, DVector};

/// `out = a · b`.
pub(crate) fn mul_into(out: &mut DMatrix<f64>, a: &DMatrix<f64>, b: &DMatrix<f64>) {
    for j in 0..out.ncols() {
        out.column_mut(j).gemv(1.0, a, &b.column(j), 0.0);
    }
}

/// `out = alpha · aᵀ · b + beta · out`.
pub(crate) fn mul_tr_into(
    out: &mut DMatrix<f64>,
    alpha: f64,
    a: &DMatrix<f64>,
    b: &DMatrix<f64>,
    beta: f64,
) {
    for j in 0..out.ncols() {
        out.column_mut(j).gemv_tr(alpha, a, &b.column(j), beta);
    }
}

/// Replaces the lower triangle of the symmetric matrix `a` with its Cholesky factor G
/// (a = G·Gᵀ) and zeroes the strict upper triangle. Returns false, leaving `a` partly
/// overwritten, if `a` is not numerically positive definite.
pub(crate) fn cholesky_in_place(a: &mut DMatrix<f64>) -> bool {
    let n = a.nrows();
    for j in 0..n {
        let mut diagonal = a[(j, j)];
        for k in 0..j {
            diagonal -= a[(j, k)] * a[(j, k)];
        }
        if !(diagonal > 0.0 && diagonal.is_finite()) {
            return false;
        }
        let g_jj = diagonal.sqrt();
        a[(j, j)] = g_jj;
        for i in j + 1..n {
            let mut value = a[(i, j)];
            for k in 0..j {
                value -= a[(i, k)] * a[(j, k)];
            }
            a[(i, j)] = value / g_jj;
        }
        for i in 0..j {
            a[(i, j)] = 0.0;
        }
    }
    true
}

/// Solves G·z = v in place, G lower triangular from [`cholesky_in_place`].
pub(crate) fn forward_substitute(g: &DMatrix<f64>, v: &mut DVector<f64>) {
    let n = g.nrows();
    for i in 0..n {
        let mut value = v[i];
        for k in 0..i {
            value -= g[(i, k)] * v[k];
        }
        v[i] = value / g[(i, i)];
    }
}

/// Solves (G·Gᵀ)·X = B in place for every column of `b`, G from [`cholesky_in_place`].
pub(crate) fn cholesky_solve_columns(g: &DMatrix<f64>, b: &mut DMatrix<f64>) {
    let n = g.nrows();
    for j in 0..b.ncols() {
        for i in 0..n {
            let mut value = b[(i, j)];
            for k in 0..i {
                value -= g[(i, k)] * b[(k, j)];
            }
            b[(i, j)] = value / g[(i, i)];
        }
        for i in (0..n).rev() {
            let mut value = b[(i, j)];
            for k in i + 1..n {
                value -= g[(k, i)] * b[(k, j)];
            }
            b[(i, j)] = value / g[(i, i)];
        }
    }
}

/// Replaces `a` with (a + aᵀ)/2, so rounding cannot make a covariance drift asymmetric.
pub(crate) fn symmetrize(a: &mut DMatrix<f64>) {
    let n = a.nrows();
    for j in 0..n {
        for i in j + 1..n {
            let mean = 0.5 * (a[(i, j)] + a[(j, i)]);
            a[(i, j)] = mean;
            a[(j, i)] = mean;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> DMatrix<f64> {
        let m = DMatrix::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 5) as f64 - 2.0);
        &m * m.transpose() + DMatrix::identity(n, n) * 0.5
    }

    #[test]
    fn products_match_nalgebra() {
        let a = DMatrix::from_fn(7, 6, |i, j| (i as f64 - 2.0 * j as f64).sin());
        let b = DMatrix::from_fn(6, 8, |i, j| (i as f64 * 0.3 + j as f64).cos());
        let mut out = DMatrix::zeros(7, 8);
        mul_into(&mut out, &a, &b);
        assert!((&out - &a * &b).amax() < 1e-14);
        let c = DMatrix::from_fn(7, 8, |i, j| (i + j) as f64);
        let mut out = c.clone();
        mul_tr_into(&mut out, -2.0, &a.transpose(), &b, 0.5);
        assert!((&out - (&a * &b * -2.0 + &c * 0.5)).amax() < 1e-13);
    }

    #[test]
    fn cholesky_solves_like_nalgebra() {
        let a = spd(5);
        let mut g = a.clone();
        assert!(cholesky_in_place(&mut g));
        // Entries are O(10): a few ulps of them.
        assert!((&g * g.transpose() - &a).amax() < 1e-12);
        let b = DMatrix::from_fn(5, 3, |i, j| (i * 3 + j) as f64 - 4.0);
        let mut x = b.clone();
        cholesky_solve_columns(&g, &mut x);
        assert!((&a * &x - &b).amax() < 1e-10);
        let mut v = DVector::from_fn(5, |i, _| i as f64 + 1.0);
        let want = g.clone().solve_lower_triangular(&v).expect("nonsingular");
        forward_substitute(&g, &mut v);
        assert!((v - want).amax() < 1e-12);
    }

    #[test]
    fn cholesky_refuses_an_indefinite_matrix() {
        let mut a = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert!(!cholesky_in_place(&mut a));
    }
}
