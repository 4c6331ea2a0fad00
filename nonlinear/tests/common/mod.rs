//! A reference time integrator for the tests: classic fourth-order Runge–Kutta on
//! M·ẍ + C·ẋ + K·x + f(x) = e_j·F·cos ωt, written here independently of the crate's
//! harmonic balance and Magnus code, with the spring force given by the test as a closure.

#![allow(dead_code, reason = "each test binary uses part of this module")]
#![allow(clippy::expect_used, reason = "a test helper fails loudly")]

use nalgebra::{DMatrix, DVector};

/// The system to integrate: linear matrices, a spring force f(x) and the forced DOF.
pub struct Reference<'a> {
    pub mass: DMatrix<f64>,
    pub damping: DMatrix<f64>,
    pub stiffness: DMatrix<f64>,
    pub spring_force: &'a dyn Fn(&DVector<f64>) -> DVector<f64>,
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

impl Reference<'_> {
    fn acceleration(
        &self,
        m_inv: &DMatrix<f64>,
        x: &DVector<f64>,
        v: &DVector<f64>,
        t: f64,
        omega: f64,
        forcing: f64,
    ) -> DVector<f64> {
        let mut load = -(&self.stiffness * x) - &self.damping * v - (self.spring_force)(x);
        load[self.forced_dof] += forcing * (omega * t).cos();
        m_inv * load
    }

    /// Integrates from (x, v) at t = 0 with `steps_per_period` RK4 steps per forcing
    /// period. Every `block` periods it compares the first-harmonic amplitudes of the last
    /// period with those of the block before, and stops when the largest relative change
    /// is below `settle_tol` (the settling criterion), or after `max_periods`.
    #[allow(clippy::too_many_arguments, reason = "a test helper with plain inputs")]
    pub fn steady_state(
        &self,
        mut x: DVector<f64>,
        mut v: DVector<f64>,
        omega: f64,
        forcing: f64,
        steps_per_period: usize,
        block: usize,
        settle_tol: f64,
        max_periods: usize,
    ) -> SteadyState {
        let n = self.mass.nrows();
        let m_inv = self.mass.clone().try_inverse().expect("invertible mass");
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
                    // Time is taken modulo the period: the forcing is periodic and this
                    // keeps cos(ωt) accurate over long runs.
                    let t = s as f64 * dt;
                    if last {
                        // Rectangle rule on a periodic integrand is spectrally accurate.
                        let theta = omega * t;
                        for d in 0..n {
                            cos_sum[d] += x[d] * theta.cos();
                            sin_sum[d] += x[d] * theta.sin();
                        }
                    }
                    let a1 = self.acceleration(&m_inv, &x, &v, t, omega, forcing);
                    let (x2, v2) = (&x + &v * (dt / 2.0), &v + &a1 * (dt / 2.0));
                    let a2 = self.acceleration(&m_inv, &x2, &v2, t + dt / 2.0, omega, forcing);
                    let (x3, v3) = (&x + &v2 * (dt / 2.0), &v + &a2 * (dt / 2.0));
                    let a3 = self.acceleration(&m_inv, &x3, &v3, t + dt / 2.0, omega, forcing);
                    let (x4, v4) = (&x + &v3 * dt, &v + &a3 * dt);
                    let a4 = self.acceleration(&m_inv, &x4, &v4, t + dt, omega, forcing);
                    x += (&v + &v2 * 2.0 + &v3 * 2.0 + &v4) * (dt / 6.0);
                    v += (&a1 + &a2 * 2.0 + &a3 * 2.0 + &a4) * (dt / 6.0);
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
                    x,
                    v,
                    amplitude,
                    periods,
                    settled,
                };
            }
            previous = Some(amplitude);
        }
    }
}
