//! Owns harmonic balance: the truncated Fourier series of a periodic response, the balance
//! residual with its analytic Jacobian (alternating frequency–time for the springs, by a
//! direct DFT), Newton's method at a fixed forcing, and the time-domain read-outs
//! (amplitudes, peak-to-peak). Knows nothing of continuation or stability.
//!
//! Unknowns: per DOF d, x_d(t) = a₀ + Σ_{k=1..H} (a_k·cos kωt + b_k·sin kωt), stored DOF by
//! DOF as [a₀, a₁, b₁, …, a_H, b_H]. The residual is the Fourier projection of
//! M·ẍ + C·ẋ + K·x + f_nl(x) − e_j·F·cos ωt onto the same 2H + 1 functions.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use crate::model::NonlinearChain;

/// Newton iterations allowed when solving at a fixed forcing before giving up.
pub(crate) const NEWTON_MAX_ITERATIONS: usize = 30;

/// The sampled Fourier basis of the alternating frequency–time scheme.
///
/// With N time samples per period the discrete projection of a trigonometric polynomial of
/// degree D onto harmonics 0..=H is exact when N > D + H. A spring of degree p on a response
/// of H harmonics gives D = p·H, so N = (p + 1)·H + 1 makes the nonlinear forces, and the
/// Jacobian (degree (p − 1)·H times one basis function), exact: no aliasing.
#[derive(Debug, Clone)]
pub(crate) struct HarmonicBasis {
    /// H, the highest harmonic kept.
    pub harmonics: usize,
    /// Number of DOFs of the chain.
    pub dofs: usize,
    /// N, time samples per period.
    pub samples: usize,
    /// Row m holds the 2H + 1 basis functions at θ_m = 2πm/N.
    table: DMatrix<f64>,
    /// Projection weight of each basis function: 1/N for the mean, 2/N for the others.
    weights: Vec<f64>,
}

impl HarmonicBasis {
    pub fn new(chain: &NonlinearChain, harmonics: usize) -> Self {
        let degree = chain.degree().max(1);
        let samples = ((degree + 1) * harmonics + 1).max(2 * harmonics + 1);
        let width = 2 * harmonics + 1;
        let table = DMatrix::from_fn(samples, width, |m, j| {
            let theta = std::f64::consts::TAU * m as f64 / samples as f64;
            basis_value(j, theta)
        });
        let n = samples as f64;
        let weights = (0..width)
            .map(|j| if j == 0 { 1.0 / n } else { 2.0 / n })
            .collect();
        Self {
            harmonics,
            dofs: chain.dofs(),
            samples,
            table,
            weights,
        }
    }

    /// 2H + 1, the unknowns per DOF.
    pub fn width(&self) -> usize {
        2 * self.harmonics + 1
    }

    /// Number of unknowns, DOFs × (2H + 1).
    pub fn len(&self) -> usize {
        self.dofs * self.width()
    }

    /// Index of basis function `j` of DOF `dof`.
    pub fn index(&self, dof: usize, j: usize) -> usize {
        dof * self.width() + j
    }
}

/// Basis function j at phase θ: 1, cos θ, sin θ, cos 2θ, sin 2θ, …
fn basis_value(j: usize, theta: f64) -> f64 {
    if j == 0 {
        1.0
    } else {
        let k = j.div_ceil(2) as f64;
        if j % 2 == 1 {
            (k * theta).cos()
        } else {
            (k * theta).sin()
        }
    }
}

/// The balance residual at (coefficients, ω, F) and, on request, its derivatives.
#[derive(Debug, Clone)]
pub(crate) struct Balance {
    /// R, in N, one entry per unknown.
    pub residual: DVector<f64>,
    /// ∂R/∂coefficients, in N/m.
    pub jacobian: Option<DMatrix<f64>>,
    /// ∂R/∂ω, in N·s/m.
    pub d_omega: DVector<f64>,
    /// ∂R/∂F, dimensionless.
    pub d_forcing: DVector<f64>,
}

/// Evaluates the harmonic-balance residual of `chain` for the coefficients `z`.
pub(crate) fn balance(
    chain: &NonlinearChain,
    basis: &HarmonicBasis,
    z: &DVector<f64>,
    omega_rad_s: f64,
    forcing_n: f64,
    with_jacobian: bool,
) -> Balance {
    let n = basis.dofs;
    let h = basis.harmonics;
    let len = basis.len();
    let (m, c, k) = (chain.mass(), chain.damping(), chain.stiffness());
    let mut residual = DVector::zeros(len);
    let mut d_omega = DVector::zeros(len);
    let mut jacobian = with_jacobian.then(|| DMatrix::zeros(len, len));
    for d1 in 0..n {
        for d2 in 0..n {
            let (m12, c12, k12) = (m[(d1, d2)], c[(d1, d2)], k[(d1, d2)]);
            if m12 == 0.0 && c12 == 0.0 && k12 == 0.0 {
                continue;
            }
            let (r0, c0) = (basis.index(d1, 0), basis.index(d2, 0));
            residual[r0] += k12 * z[c0];
            if let Some(j) = jacobian.as_mut() {
                j[(r0, c0)] += k12;
            }
            for harmonic in 1..=h {
                let kf = harmonic as f64;
                let (rc, rs) = (
                    basis.index(d1, 2 * harmonic - 1),
                    basis.index(d1, 2 * harmonic),
                );
                let (cc, cs) = (
                    basis.index(d2, 2 * harmonic - 1),
                    basis.index(d2, 2 * harmonic),
                );
                let dynamic = k12 - kf * kf * omega_rad_s * omega_rad_s * m12;
                let viscous = kf * omega_rad_s * c12;
                let (a, b) = (z[cc], z[cs]);
                residual[rc] += dynamic * a + viscous * b;
                residual[rs] += dynamic * b - viscous * a;
                let d_dynamic = -2.0 * kf * kf * omega_rad_s * m12;
                let d_viscous = kf * c12;
                d_omega[rc] += d_dynamic * a + d_viscous * b;
                d_omega[rs] += d_dynamic * b - d_viscous * a;
                if let Some(j) = jacobian.as_mut() {
                    j[(rc, cc)] += dynamic;
                    j[(rc, cs)] += viscous;
                    j[(rs, cs)] += dynamic;
                    j[(rs, cc)] -= viscous;
                }
            }
        }
    }
    let forced_cos = basis.index(chain.forced_dof(), 1);
    residual[forced_cos] -= forcing_n;
    let mut d_forcing = DVector::zeros(len);
    d_forcing[forced_cos] = -1.0;
    if !chain.is_linear() {
        add_spring_balance(chain, basis, z, &mut residual, jacobian.as_mut());
    }
    Balance {
        residual,
        jacobian,
        d_omega,
        d_forcing,
    }
}

/// Alternating frequency–time: the springs' forces (and tangents) at the N time samples,
/// projected back onto the harmonics.
fn add_spring_balance(
    chain: &NonlinearChain,
    basis: &HarmonicBasis,
    z: &DVector<f64>,
    residual: &mut DVector<f64>,
    mut jacobian: Option<&mut DMatrix<f64>>,
) {
    let width = basis.width();
    let samples = basis.samples;
    // x_d(θ_m) for every DOF: samples × dofs.
    let coefficients = DMatrix::from_fn(width, basis.dofs, |j, d| z[basis.index(d, j)]);
    let x_t = &basis.table * coefficients;
    let mut force_t = vec![0.0; samples];
    let mut tangent_t = vec![0.0; samples];
    let mut row = vec![0.0; basis.dofs];
    for element in chain.elements() {
        for s in 0..samples {
            for (d, value) in row.iter_mut().enumerate() {
                *value = x_t[(s, d)];
            }
            let delta = element.extension(&row);
            force_t[s] = element.spring.force_n(delta);
            tangent_t[s] = element.spring.tangent_n_per_m(delta);
        }
        let mut projected = vec![0.0; width];
        for (j, value) in projected.iter_mut().enumerate() {
            *value = basis.weights[j]
                * (0..samples)
                    .map(|s| basis.table[(s, j)] * force_t[s])
                    .sum::<f64>();
        }
        for (j, value) in projected.iter().enumerate() {
            residual[basis.index(element.upper, j)] += value;
            if let Some(l) = element.lower {
                residual[basis.index(l, j)] -= value;
            }
        }
        if let Some(jac) = jacobian.as_deref_mut() {
            // G[j, c] = w_j Σ_m B[m, j]·k_t(θ_m)·B[m, c]: the element's tangent in harmonics.
            let weighted =
                DMatrix::from_fn(samples, width, |s, c| tangent_t[s] * basis.table[(s, c)]);
            let mut g = basis.table.transpose() * weighted;
            for (j, mut r) in g.row_iter_mut().enumerate() {
                r *= basis.weights[j];
            }
            let stamp = |jac: &mut DMatrix<f64>, a: usize, b: usize, sign: f64| {
                for j in 0..width {
                    for c in 0..width {
                        jac[(basis.index(a, j), basis.index(b, c))] += sign * g[(j, c)];
                    }
                }
            };
            stamp(jac, element.upper, element.upper, 1.0);
            if let Some(l) = element.lower {
                stamp(jac, l, l, 1.0);
                stamp(jac, element.upper, l, -1.0);
                stamp(jac, l, element.upper, -1.0);
            }
        }
    }
}

/// Largest absolute entry, the residual norm used for convergence (a force, in N).
pub(crate) fn max_abs(v: &DVector<f64>) -> f64 {
    v.iter().fold(0.0_f64, |m, x| m.max(x.abs()))
}

/// The coefficients of the linear chain's steady state under F·cos ωt (one harmonic), the
/// starting guess of Newton's method. None if K − ω²M + jωC is singular.
pub(crate) fn linear_guess(
    chain: &NonlinearChain,
    basis: &HarmonicBasis,
    omega_rad_s: f64,
    forcing_n: f64,
) -> Option<DVector<f64>> {
    let mut load = DVector::zeros(chain.dofs());
    load[chain.forced_dof()] = forcing_n;
    let x = dtop_dynamics::frf::second_order_response(
        chain.mass(),
        chain.damping(),
        chain.stiffness(),
        &load,
        omega_rad_s,
    )
    .ok()?;
    let mut z = DVector::zeros(basis.len());
    if basis.harmonics == 0 {
        return Some(z);
    }
    for d in 0..chain.dofs() {
        // x_d·e^{jωt} real part: Re(x)·cos ωt − Im(x)·sin ωt.
        z[basis.index(d, 1)] = x[d].re;
        z[basis.index(d, 2)] = -x[d].im;
    }
    Some(z)
}

/// Why Newton's method stopped without converging.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NewtonFailure {
    /// The Jacobian could not be factorised.
    Singular,
    /// An iterate became NaN or infinite.
    NotFinite,
    /// The iteration budget ran out; carries the last residual, in N.
    NoConvergence(f64),
}

impl std::fmt::Display for NewtonFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Singular => write!(f, "the harmonic-balance Jacobian is singular"),
            Self::NotFinite => write!(f, "Newton's iterates diverged to non-finite values"),
            Self::NoConvergence(r) => write!(
                f,
                "Newton's method did not converge in {NEWTON_MAX_ITERATIONS} iterations \
                 (last residual {r:.3e} N)"
            ),
        }
    }
}

/// Newton's method on the balance at fixed ω and F, from `guess`. Converged when the largest
/// residual is at most `tolerance_n` and one more step has been taken (quadratic convergence
/// then puts the error far below the tolerance).
pub(crate) fn solve_fixed(
    chain: &NonlinearChain,
    basis: &HarmonicBasis,
    guess: DVector<f64>,
    omega_rad_s: f64,
    forcing_n: f64,
    tolerance_n: f64,
) -> Result<DVector<f64>, NewtonFailure> {
    let mut z = guess;
    let mut last = f64::INFINITY;
    for _ in 0..NEWTON_MAX_ITERATIONS {
        let b = balance(chain, basis, &z, omega_rad_s, forcing_n, true);
        let r = max_abs(&b.residual);
        if !r.is_finite() {
            return Err(NewtonFailure::NotFinite);
        }
        let Some(jacobian) = b.jacobian else {
            return Err(NewtonFailure::Singular);
        };
        let step = jacobian
            .lu()
            .solve(&b.residual)
            .ok_or(NewtonFailure::Singular)?;
        z -= step;
        if z.iter().any(|v| !v.is_finite()) {
            return Err(NewtonFailure::NotFinite);
        }
        if r <= tolerance_n {
            return Ok(z);
        }
        last = r;
    }
    Err(NewtonFailure::NoConvergence(last))
}

/// The Fourier coefficients of one DOF's steady-state displacement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DofHarmonics {
    /// Mean (harmonic 0) displacement, in m.
    pub mean_m: f64,
    /// Cosine coefficients a_k of harmonics 1..=H, in m.
    pub cos_m: Vec<f64>,
    /// Sine coefficients b_k of harmonics 1..=H, in m.
    pub sin_m: Vec<f64>,
}

impl DofHarmonics {
    /// Amplitude √(a_k² + b_k²) of harmonic `k` (1-based), in m; zero beyond H.
    pub fn amplitude_m(&self, k: usize) -> f64 {
        match (
            k.checked_sub(1).and_then(|i| self.cos_m.get(i)),
            k.checked_sub(1).and_then(|i| self.sin_m.get(i)),
        ) {
            (Some(a), Some(b)) => a.hypot(*b),
            _ => 0.0,
        }
    }

    /// x(θ) at phase θ = ωt, in m.
    pub fn value_m(&self, theta: f64) -> f64 {
        self.mean_m
            + self
                .cos_m
                .iter()
                .zip(&self.sin_m)
                .enumerate()
                .map(|(i, (a, b))| {
                    let k = (i + 1) as f64;
                    a * (k * theta).cos() + b * (k * theta).sin()
                })
                .sum::<f64>()
    }

    /// dx/dθ and d²x/dθ² at phase θ.
    fn derivatives(&self, theta: f64) -> (f64, f64) {
        self.cos_m
            .iter()
            .zip(&self.sin_m)
            .enumerate()
            .fold((0.0, 0.0), |(d1, d2), (i, (a, b))| {
                let k = (i + 1) as f64;
                let (s, c) = (k * theta).sin_cos();
                (d1 + k * (-a * s + b * c), d2 - k * k * (a * c + b * s))
            })
    }

    /// Peak-to-peak displacement over one period, in m: the extremes are bracketed on a
    /// grid of 32 samples per harmonic and polished by Newton's method on dx/dθ = 0, so the
    /// result is exact to rounding rather than to the grid.
    pub fn peak_to_peak_m(&self) -> f64 {
        let h = self.cos_m.len();
        if h == 0 {
            return 0.0;
        }
        let samples = 32 * h + 1;
        let step = std::f64::consts::TAU / samples as f64;
        let (mut max_at, mut min_at) = (0.0, 0.0);
        let (mut max_v, mut min_v) = (f64::NEG_INFINITY, f64::INFINITY);
        for s in 0..samples {
            let theta = s as f64 * step;
            let v = self.value_m(theta);
            if v > max_v {
                (max_v, max_at) = (v, theta);
            }
            if v < min_v {
                (min_v, min_at) = (v, theta);
            }
        }
        self.polish(max_at, step, 1.0) - self.polish(min_at, step, -1.0)
    }

    /// Refines an extremum found on the grid; keeps the grid value if Newton wanders off
    /// its bracket or does not improve it (`sign` is +1 for a maximum, −1 for a minimum).
    fn polish(&self, theta0: f64, step: f64, sign: f64) -> f64 {
        let mut theta = theta0;
        for _ in 0..8 {
            let (d1, d2) = self.derivatives(theta);
            if d2 == 0.0 {
                break;
            }
            let next = theta - d1 / d2;
            if (next - theta0).abs() > step {
                break;
            }
            theta = next;
        }
        let grid = self.value_m(theta0);
        let polished = self.value_m(theta);
        if sign * polished >= sign * grid {
            polished
        } else {
            grid
        }
    }
}

/// Splits the unknown vector into one [`DofHarmonics`] per DOF.
pub(crate) fn dof_harmonics(basis: &HarmonicBasis, z: &DVector<f64>) -> Vec<DofHarmonics> {
    (0..basis.dofs)
        .map(|d| DofHarmonics {
            mean_m: z[basis.index(d, 0)],
            cos_m: (1..=basis.harmonics)
                .map(|k| z[basis.index(d, 2 * k - 1)])
                .collect(),
            sin_m: (1..=basis.harmonics)
                .map(|k| z[basis.index(d, 2 * k)])
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NonlinearChainConfig, PolynomialSpring, SpringLink};
    use dtop_dynamics::{Damping, ShearBuildingConfig};

    fn duffing(k3: f64) -> NonlinearChain {
        NonlinearChain::new(NonlinearChainConfig {
            building: ShearBuildingConfig {
                floor_masses_kg: vec![1.0],
                storey_stiffness_n_per_m: vec![1.0],
                damping: Damping::StoreyDampers {
                    storey_damping_n_s_per_m: vec![0.1],
                },
                actuator: None,
            },
            springs: vec![PolynomialSpring {
                link: SpringLink::Storey { storey: 1 },
                quadratic_n_per_m2: 0.3,
                cubic_n_per_m3: k3,
                quintic_n_per_m5: 0.05,
            }],
            forced_floor: 1,
        })
        .expect("valid")
    }

    #[test]
    fn the_analytic_jacobian_matches_central_differences_of_the_residual() {
        let chain = NonlinearChain::cristallo().expect("valid");
        let mut config = chain.config().clone();
        config.springs.push(PolynomialSpring {
            link: SpringLink::Storey { storey: 3 },
            quadratic_n_per_m2: 40.0,
            cubic_n_per_m3: -30.0,
            quintic_n_per_m5: 80.0,
        });
        let chain = NonlinearChain::new(config).expect("valid");
        let basis = HarmonicBasis::new(&chain, 3);
        let z = DVector::from_fn(basis.len(), |i, _| 0.1 * ((i as f64) * 1.7).sin());
        let (w, f) = (12.0, 3.0);
        let b = balance(&chain, &basis, &z, w, f, true);
        let jac = b.jacobian.expect("asked for");
        let eps = 1e-6;
        for c in 0..basis.len() {
            let mut plus = z.clone();
            let mut minus = z.clone();
            plus[c] += eps;
            minus[c] -= eps;
            let fd = (balance(&chain, &basis, &plus, w, f, false).residual
                - balance(&chain, &basis, &minus, w, f, false).residual)
                / (2.0 * eps);
            for r in 0..basis.len() {
                // Central differences carry O(eps²·f''') truncation and O(ε/eps) rounding
                // on entries of size ~100 N/m: 1e-5 absolute is well above both.
                assert!(
                    (fd[r] - jac[(r, c)]).abs() < 1e-5 * (1.0 + jac[(r, c)].abs()),
                    "J[{r},{c}] = {} but differences give {}",
                    jac[(r, c)],
                    fd[r]
                );
            }
        }
        let fd_w = (balance(&chain, &basis, &z, w + eps, f, false).residual
            - balance(&chain, &basis, &z, w - eps, f, false).residual)
            / (2.0 * eps);
        assert!((fd_w - &b.d_omega).amax() < 1e-6);
    }

    #[test]
    fn the_alternating_scheme_reproduces_hand_expanded_harmonics_of_a_cubic() {
        // x = A cos θ: x³ = A³(3 cos θ + cos 3θ)/4, x² = A²(1 + cos 2θ)/2,
        // x⁵ = A⁵(10 cos θ + 5 cos 3θ + cos 5θ)/16 (trigonometric power reduction).
        let chain = duffing(2.0);
        let basis = HarmonicBasis::new(&chain, 5);
        let a = 0.8_f64;
        let mut z = DVector::zeros(basis.len());
        z[1] = a;
        let b = balance(&chain, &basis, &z, 0.0, 0.0, false);
        // At ω = 0 the linear part is k·x = 1·A at cos θ plus the 0.1·0 damping.
        let want = |j: usize| match j {
            0 => 0.3 * a * a / 2.0,
            1 => a + 2.0 * 0.75 * a.powi(3) + 0.05 * 10.0 / 16.0 * a.powi(5),
            3 => 0.3 * a * a / 2.0,
            5 => 2.0 * 0.25 * a.powi(3) + 0.05 * 5.0 / 16.0 * a.powi(5),
            9 => 0.05 / 16.0 * a.powi(5),
            _ => 0.0,
        };
        for j in 0..basis.width() {
            // The DFT is exact for these degrees (no aliasing): only rounding remains.
            assert!(
                (b.residual[j] - want(j)).abs() < 1e-14,
                "harmonic slot {j}: {} vs {}",
                b.residual[j],
                want(j)
            );
        }
    }

    #[test]
    fn peak_to_peak_is_found_between_grid_samples() {
        let h = DofHarmonics {
            mean_m: 0.3,
            cos_m: vec![1.0, 0.0, 0.2],
            sin_m: vec![0.5, 0.1, 0.0],
        };
        // Independent: a dense brute-force scan; its own error is ~ A·(Δθ·k)²/2 ≈ 1e-10.
        let n = 2_000_000;
        let (mut hi, mut lo) = (f64::NEG_INFINITY, f64::INFINITY);
        for s in 0..n {
            let v = h.value_m(std::f64::consts::TAU * s as f64 / n as f64);
            hi = hi.max(v);
            lo = lo.min(v);
        }
        assert!((h.peak_to_peak_m() - (hi - lo)).abs() < 1e-9);
    }
}
