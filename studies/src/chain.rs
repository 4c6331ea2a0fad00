//! Owns the N-storey spring–damper chain used by the `uncertainty` and `design` studies: its
//! complex dynamic stiffness (K + iωC − ω²M, tridiagonal) built straight from storey masses,
//! stiffnesses and dampers, and its solution for a force at one floor. Knows nothing about
//! sampling or bounds. (Built here rather than from `dtop-dynamics` because storey dampers are
//! not yet a `Damping` variant there.)

use nalgebra::Complex;

/// Complex number of the chain's phasors.
pub type C64 = Complex<f64>;

/// One chain: per floor (lowest first) mass in kg, and per storey (storey `i` joins floor `i` to
/// the one below, or the ground) stiffness in N/m and viscous damper in N·s/m.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain<'a> {
    /// Floor masses, kg.
    pub mass_kg: &'a [f64],
    /// Storey stiffnesses, N/m.
    pub stiffness_n_per_m: &'a [f64],
    /// Storey dampers, N·s/m.
    pub damping_n_s_per_m: &'a [f64],
}

/// Why a chain could not be solved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    /// The dynamic stiffness has a zero pivot at this angular frequency.
    #[error("singular dynamic stiffness at {omega_rad_s} rad/s (pivot {pivot} is zero)")]
    Singular {
        /// Angular frequency, rad/s.
        omega_rad_s: f64,
        /// 0-based pivot row.
        pivot: usize,
    },
}

impl Chain<'_> {
    /// Number of floors.
    pub fn floors(&self) -> usize {
        self.mass_kg.len()
    }

    /// The tridiagonal dynamic stiffness at `omega_rad_s`: diagonal and the n−1 off-diagonal
    /// entries (symmetric).
    pub fn dynamic_stiffness(&self, omega_rad_s: f64, diag: &mut Vec<C64>, off: &mut Vec<C64>) {
        let n = self.floors();
        diag.clear();
        off.clear();
        let w = omega_rad_s;
        for i in 0..n {
            let (k_up, c_up) = if i + 1 < n {
                (self.stiffness_n_per_m[i + 1], self.damping_n_s_per_m[i + 1])
            } else {
                (0.0, 0.0)
            };
            diag.push(C64::new(
                self.stiffness_n_per_m[i] + k_up - w * w * self.mass_kg[i],
                w * (self.damping_n_s_per_m[i] + c_up),
            ));
            if i + 1 < n {
                off.push(C64::new(-k_up, -w * c_up));
            }
        }
    }

    /// Displacement phasors (m) of every floor for a unit-amplitude force (1 N) at floor
    /// `force_floor` (0-based), written into `u`. `scratch` is reused between calls.
    ///
    /// # Errors
    /// [`ChainError::Singular`] on a zero pivot.
    pub fn solve_unit_force(
        &self,
        omega_rad_s: f64,
        force_floor: usize,
        u: &mut Vec<C64>,
        scratch: &mut Scratch,
    ) -> Result<(), ChainError> {
        let n = self.floors();
        self.dynamic_stiffness(omega_rad_s, &mut scratch.diag, &mut scratch.off);
        u.clear();
        u.extend((0..n).map(|i| {
            if i == force_floor {
                C64::new(1.0, 0.0)
            } else {
                C64::new(0.0, 0.0)
            }
        }));
        thomas(&mut scratch.diag, &scratch.off, u)
            .map_err(|pivot| ChainError::Singular { omega_rad_s, pivot })
    }
}

impl Chain<'_> {
    /// Displacement phasors (m) of every floor for in-phase real force amplitudes `force_n`
    /// (N, one per floor), written into `u`.
    ///
    /// # Errors
    /// [`ChainError::Singular`] on a zero pivot.
    pub fn solve_force(
        &self,
        omega_rad_s: f64,
        force_n: &[f64],
        u: &mut Vec<C64>,
        scratch: &mut Scratch,
    ) -> Result<(), ChainError> {
        self.dynamic_stiffness(omega_rad_s, &mut scratch.diag, &mut scratch.off);
        u.clear();
        u.extend(force_n.iter().map(|&f| C64::new(f, 0.0)));
        thomas(&mut scratch.diag, &scratch.off, u)
            .map_err(|pivot| ChainError::Singular { omega_rad_s, pivot })
    }
}

/// Reusable buffers for [`Chain::solve_unit_force`].
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    diag: Vec<C64>,
    off: Vec<C64>,
}

/// Solves the symmetric tridiagonal system (diag, off) x = rhs in place (Thomas algorithm, no
/// pivoting: the dynamic stiffness of a damped chain has nonzero leading minors away from the
/// undamped resonances). `Err(row)` on a zero or non-finite pivot. `diag` is left holding the
/// pivots' reciprocals.
pub fn thomas(diag: &mut [C64], off: &[C64], rhs: &mut [C64]) -> Result<(), usize> {
    let n = diag.len();
    // Each pivot's reciprocal, conj(p) / |p|², is formed once (one real division per row) and
    // overwrites the pivot; the elimination and the back substitution multiply by it.
    for i in 0..n {
        if i > 0 {
            let factor = off[i - 1] * diag[i - 1];
            diag[i] -= factor * off[i - 1];
            let prev = rhs[i - 1];
            rhs[i] -= factor * prev;
        }
        let p = diag[i];
        let nsq = p.norm_sqr();
        if nsq == 0.0 || !p.re.is_finite() || !p.im.is_finite() {
            return Err(i);
        }
        let r = 1.0 / nsq;
        diag[i] = C64::new(p.re * r, -p.im * r);
    }
    let last = n - 1;
    rhs[last] *= diag[last];
    for i in (0..last).rev() {
        let next = rhs[i + 1];
        rhs[i] = (rhs[i] - off[i] * next) * diag[i];
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;

    #[test]
    fn one_floor_matches_the_closed_form_receptance() {
        let (m, k, c, w) = (2.0, 800.0, 3.0, 17.0);
        let chain = Chain {
            mass_kg: &[m],
            stiffness_n_per_m: &[k],
            damping_n_s_per_m: &[c],
        };
        let mut u = Vec::new();
        chain
            .solve_unit_force(w, 0, &mut u, &mut Scratch::default())
            .unwrap();
        let expected = 1.0 / ((k - m * w * w).powi(2) + (c * w).powi(2)).sqrt();
        assert!((u[0].norm() - expected).abs() < 1e-15 * expected);
    }

    #[test]
    fn three_floors_match_a_dense_lu_solve() {
        let m = [5.362e4, 5.144e4, 5.142e4];
        let k = [3.846e8, 4.464e8, 4.589e8];
        let c = [1.699e4, 1.016e4, 1.34e4];
        let chain = Chain {
            mass_kg: &m,
            stiffness_n_per_m: &k,
            damping_n_s_per_m: &c,
        };
        for (w, j) in [(10.0, 0), (62.832, 2), (150.0, 1)] {
            let mut a = DMatrix::<C64>::zeros(3, 3);
            for i in 0..3 {
                let kc = C64::new(k[i], w * c[i]);
                a[(i, i)] += kc;
                if i > 0 {
                    a[(i - 1, i - 1)] += kc;
                    a[(i - 1, i)] -= kc;
                    a[(i, i - 1)] -= kc;
                }
                a[(i, i)] -= C64::new(w * w * m[i], 0.0);
            }
            let mut f = nalgebra::DVector::<C64>::zeros(3);
            f[j] = C64::new(1.0, 0.0);
            let x = a.lu().solve(&f).unwrap();
            let mut u = Vec::new();
            chain
                .solve_unit_force(w, j, &mut u, &mut Scratch::default())
                .unwrap();
            for i in 0..3 {
                assert!((u[i] - x[i]).norm() < 1e-12 * x[i].norm(), "{w} {j} {i}");
            }
        }
    }
}
