//! Shared by the test binaries: a reference time integrator (classic fourth-order Runge–Kutta
//! on M·ẍ + C·ẋ + K·x + f(x) = e_j·F·cos ωt, written here independently of the crate's
//! harmonic balance and Magnus code, with the spring force given by the test as a closure),
//! the check that a refusal names every expected problem, and Cristallo's frequency sweep.

#![allow(dead_code, reason = "each test binary uses part of this module")]
#![allow(clippy::expect_used, reason = "a test helper fails loudly")]

use nalgebra::{DMatrix, DVector};

/// The system to integrate: linear matrices, a spring force f(x) (written into its second
/// argument, one entry per DOF) and the forced DOF.
pub struct Reference<'a> {
    pub mass: DMatrix<f64>,
    pub damping: DMatrix<f64>,
    pub stiffness: DMatrix<f64>,
    pub spring_force: &'a dyn Fn(&[f64], &mut [f64]),
    pub forced_dof: usize,
}

/// The state after integration and the first-harmonic read-out of the last period.
pub struct SteadyState {
    /// Displacement and velocity at the end (a whole number of periods from t = 0).
    pub x: DVector<f64>,
    pub v: DVector<f64>,
    /// First-harmonic amplitude of each DOF over the last period.
    pub amplitude: Vec<f64>,
    /// Periods integrated.
    pub periods: usize,
    /// True when the settling criterion was met before the period budget ran out.
    pub settled: bool,
}

/// M⁻¹K, M⁻¹C and M⁻¹ row by row, and scratch space, so a step allocates nothing.
struct Rates {
    n: usize,
    m_inv_k: Vec<f64>,
    m_inv_c: Vec<f64>,
    m_inv: Vec<f64>,
    spring: Vec<f64>,
}

impl Rates {
    /// ẍ for state (x, v) at time t, written into `a`.
    fn acceleration(
        &mut self,
        reference: &Reference<'_>,
        x: &[f64],
        v: &[f64],
        forcing_now: f64,
        a: &mut [f64],
    ) {
        let n = self.n;
        self.spring.iter_mut().for_each(|f| *f = 0.0);
        (reference.spring_force)(x, &mut self.spring);
        self.spring[reference.forced_dof] -= forcing_now;
        for (i, ai) in a.iter_mut().enumerate() {
            let mut sum = 0.0;
            for j in 0..n {
                sum -= self.m_inv_k[i * n + j] * x[j]
                    + self.m_inv_c[i * n + j] * v[j]
                    + self.m_inv[i * n + j] * self.spring[j];
            }
            *ai = sum;
        }
    }
}

impl Reference<'_> {
    /// Integrates from (x, v) at t = 0 with `steps_per_period` RK4 steps per forcing
    /// period. Every `block` periods it compares the first-harmonic amplitudes of the last
    /// period with those of the block before, and stops when the largest change is below
    /// `settle_tol` times the largest amplitude (the settling criterion), or after
    /// `max_periods`.
    #[allow(clippy::too_many_arguments, reason = "a test helper with plain inputs")]
    pub fn steady_state(
        &self,
        x0: DVector<f64>,
        v0: DVector<f64>,
        omega: f64,
        forcing: f64,
        steps_per_period: usize,
        block: usize,
        settle_tol: f64,
        max_periods: usize,
    ) -> SteadyState {
        let n = self.mass.nrows();
        let m_inv = self.mass.clone().try_inverse().expect("invertible mass");
        let flat = |a: DMatrix<f64>| (0..n * n).map(|i| a[(i / n, i % n)]).collect();
        let mut rates = Rates {
            n,
            m_inv_k: flat(&m_inv * &self.stiffness),
            m_inv_c: flat(&m_inv * &self.damping),
            m_inv: flat(m_inv.clone()),
            spring: vec![0.0; n],
        };
        let (mut x, mut v) = (x0.as_slice().to_vec(), v0.as_slice().to_vec());
        let (mut xs, mut vs) = (vec![0.0; n], vec![0.0; n]);
        let mut k = [vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]];
        let mut kv = [vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]];
        let period = std::f64::consts::TAU / omega;
        let dt = period / steps_per_period as f64;
        let mut previous: Option<Vec<f64>> = None;
        let mut periods = 0;
        loop {
            let mut cos_sum = vec![0.0; n];
            let mut sin_sum = vec![0.0; n];
            for b in 0..block {
                let last = b + 1 == block;
                for s in 0..steps_per_period {
                    // Time restarts every period: the forcing is periodic, and this keeps
                    // cos(ωt) accurate over long runs.
                    let t = s as f64 * dt;
                    if last {
                        // Rectangle rule on a periodic integrand is spectrally accurate.
                        let (sin, cos) = (omega * t).sin_cos();
                        for d in 0..n {
                            cos_sum[d] += x[d] * cos;
                            sin_sum[d] += x[d] * sin;
                        }
                    }
                    // Stage c: state = (x, v) + c·dt·(previous stage's rates).
                    for (stage, c) in [0.0, 0.5, 0.5, 1.0].into_iter().enumerate() {
                        for d in 0..n {
                            let (dx, dv) = if stage == 0 {
                                (0.0, 0.0)
                            } else {
                                (kv[stage - 1][d], k[stage - 1][d])
                            };
                            xs[d] = x[d] + c * dt * dx;
                            vs[d] = v[d] + c * dt * dv;
                        }
                        let f_now = forcing * (omega * (t + c * dt)).cos();
                        rates.acceleration(self, &xs, &vs, f_now, &mut k[stage]);
                        kv[stage].copy_from_slice(&vs);
                    }
                    for d in 0..n {
                        x[d] += dt / 6.0 * (kv[0][d] + 2.0 * kv[1][d] + 2.0 * kv[2][d] + kv[3][d]);
                        v[d] += dt / 6.0 * (k[0][d] + 2.0 * k[1][d] + 2.0 * k[2][d] + k[3][d]);
                    }
                }
                periods += 1;
            }
            let scale = 2.0 / steps_per_period as f64;
            let amplitude: Vec<f64> = (0..n)
                .map(|d| (cos_sum[d] * scale).hypot(sin_sum[d] * scale))
                .collect();
            let settled = previous.as_ref().is_some_and(|p| {
                let largest = amplitude.iter().fold(0.0_f64, |m, a| m.max(*a));
                p.iter()
                    .zip(&amplitude)
                    .all(|(a, b)| (a - b).abs() <= settle_tol * largest)
            });
            if settled || periods >= max_periods {
                return SteadyState {
                    x: DVector::from_vec(x),
                    v: DVector::from_vec(v),
                    amplitude,
                    periods,
                    settled,
                };
            }
            previous = Some(amplitude);
        }
    }
}

/// Asserts that every needle is part of some problem in `problems`.
pub fn assert_mentions(problems: &[String], needles: &[&str]) {
    for needle in needles {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
}

/// Cristallo's frequency sweep (TOOLS.md § 5.2): 1 → 50 rad/s at a 10 N force, with
/// `harmonics` harmonics and the default steps.
pub fn cristallo_sweep(harmonics: usize) -> dtop_nonlinear::ContinuationConfig {
    dtop_nonlinear::ContinuationConfig::new(
        dtop_nonlinear::Sweep::Frequency {
            start_rad_s: 1.0,
            end_rad_s: 50.0,
            forcing_n: 10.0,
        },
        harmonics,
    )
}
