//! Owns the time integration of the nonlinear chain: a classic fourth-order Runge–Kutta
//! step of M·ẍ + C·ẋ + K·x + f_nl(x) = e_j·f(t) with a scalar force f on the forced DOF,
//! allocation-free, and the response to a sampled (held) force. Knows nothing of
//! controllers, sweeps or Fourier analysis.

use nalgebra::DMatrix;

use crate::error::NonlinearError;
use crate::model::NonlinearChain;

/// The chain's state and the RK4 scratch space. Matrices are flat row-major arrays.
#[derive(Debug, Clone)]
pub(crate) struct Stepper<'a> {
    chain: &'a NonlinearChain,
    n: usize,
    forced: usize,
    /// M⁻¹K, M⁻¹C and M⁻¹, row-major n × n.
    m_inv_k: Vec<f64>,
    m_inv_c: Vec<f64>,
    m_inv: Vec<f64>,
    /// Displacements and velocities, relative to the ground.
    pub x: Vec<f64>,
    pub v: Vec<f64>,
    /// Stage states, stage rates (velocity, acceleration) and spring forces.
    xs: Vec<f64>,
    vs: Vec<f64>,
    kx: [Vec<f64>; 4],
    kv: [Vec<f64>; 4],
    spring: Vec<f64>,
}

impl<'a> Stepper<'a> {
    /// A stepper at rest.
    ///
    /// # Errors
    /// [`NonlinearError::Numerical`] if the mass matrix is singular.
    pub fn new(chain: &'a NonlinearChain) -> Result<Self, NonlinearError> {
        let n = chain.dofs();
        let m_inv = chain.mass_inverse()?;
        let flat = |a: &DMatrix<f64>| (0..n * n).map(|i| a[(i / n, i % n)]).collect();
        let zeros = || vec![0.0; n];
        Ok(Self {
            chain,
            n,
            forced: chain.forced_dof(),
            m_inv_k: flat(&(&m_inv * chain.stiffness())),
            m_inv_c: flat(&(&m_inv * chain.damping())),
            m_inv: flat(&m_inv),
            x: zeros(),
            v: zeros(),
            xs: zeros(),
            vs: zeros(),
            kx: [zeros(), zeros(), zeros(), zeros()],
            kv: [zeros(), zeros(), zeros(), zeros()],
            spring: zeros(),
        })
    }

    /// ẍ of the stage state (xs, vs) under force `f` on the forced DOF, into stage `stage`.
    fn rates(&mut self, f: f64, stage: usize) {
        let n = self.n;
        self.spring.iter_mut().for_each(|s| *s = 0.0);
        self.chain.add_spring_forces(&self.xs, &mut self.spring);
        self.spring[self.forced] -= f;
        for (i, a) in self.kv[stage].iter_mut().enumerate() {
            let mut sum = 0.0;
            for j in 0..n {
                sum -= self.m_inv_k[i * n + j] * self.xs[j]
                    + self.m_inv_c[i * n + j] * self.vs[j]
                    + self.m_inv[i * n + j] * self.spring[j];
            }
            *a = sum;
        }
        self.kx[stage].copy_from_slice(&self.vs);
    }

    /// One RK4 step from time `t` of length `dt`; `force(τ)` is the force on the forced DOF
    /// at the stage times τ ∈ {t, t + dt/2, t + dt}.
    pub fn step(&mut self, t: f64, dt: f64, force: impl Fn(f64) -> f64) {
        for (stage, c) in [0.0, 0.5, 0.5, 1.0].into_iter().enumerate() {
            for d in 0..self.n {
                let (dx, dv) = match stage.checked_sub(1) {
                    Some(p) => (self.kx[p][d], self.kv[p][d]),
                    None => (0.0, 0.0),
                };
                self.xs[d] = self.x[d] + c * dt * dx;
                self.vs[d] = self.v[d] + c * dt * dv;
            }
            self.rates(force(t + c * dt), stage);
        }
        for d in 0..self.n {
            let (kx, kv) = (&self.kx, &self.kv);
            self.x[d] += dt / 6.0 * (kx[0][d] + 2.0 * kx[1][d] + 2.0 * kx[2][d] + kx[3][d]);
            self.v[d] += dt / 6.0 * (kv[0][d] + 2.0 * kv[1][d] + 2.0 * kv[2][d] + kv[3][d]);
        }
    }

    /// ẍ at the current state under force `f` on the forced DOF.
    pub fn acceleration(&mut self, f: f64) -> &[f64] {
        self.xs.copy_from_slice(&self.x);
        self.vs.copy_from_slice(&self.v);
        self.rates(f, 0);
        &self.kv[0]
    }

    /// False once the state has left the finite numbers.
    pub fn is_finite(&self) -> bool {
        self.x.iter().chain(&self.v).all(|v| v.is_finite())
    }
}

/// Gershgorin bound of the fastest rate of the linear chain with extra stiffness
/// `extra_k_n_per_m` and damping `extra_c_n_s_per_m` on the forced DOF, in rad/s:
/// √‖M⁻¹(K + k·e·eᵀ)‖_∞ + ‖M⁻¹(C + c·e·eᵀ)‖_∞.
pub(crate) fn fastest_rate_rad_s(
    chain: &NonlinearChain,
    extra_k_n_per_m: f64,
    extra_c_n_s_per_m: f64,
) -> Option<f64> {
    let m_inv = chain.mass_inverse().ok()?;
    let j = chain.forced_dof();
    let mut k = chain.stiffness().clone();
    k[(j, j)] += extra_k_n_per_m;
    let mut c = chain.damping().clone();
    c[(j, j)] += extra_c_n_s_per_m;
    let row_sum = |a: DMatrix<f64>| {
        a.row_iter()
            .map(|r| r.iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0_f64, f64::max)
    };
    Some(row_sum(&m_inv * k).sqrt() + row_sum(&m_inv * c))
}

/// The chain's state at the start of one sample, relative to the ground.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSample {
    /// Displacement of each DOF, in m.
    pub displacement_m: Vec<f64>,
    /// Velocity of each DOF, in m/s.
    pub velocity_m_s: Vec<f64>,
    /// Acceleration of each DOF under the sample's force, in m/s².
    pub acceleration_m_s2: Vec<f64>,
}

/// The response from rest of `chain` to a force on its forced DOF held constant over each
/// sample of `sample_period_s` (a DAC's zero-order hold): `force_n[s]` acts from s·T to
/// (s+1)·T. Integrated by RK4 with `steps_per_sample` steps per sample; one
/// [`ChainSample`] per force sample, at the sample's start. What a sampled rig of this
/// chain measures, for checking a simulator against an independent integrator.
///
/// # Errors
/// [`NonlinearError::Invalid`] for a non-positive period or zero steps,
/// [`NonlinearError::Numerical`] if the mass matrix is singular or the state diverges.
pub fn held_force_response(
    chain: &NonlinearChain,
    sample_period_s: f64,
    steps_per_sample: usize,
    force_n: &[f64],
) -> Result<Vec<ChainSample>, NonlinearError> {
    let mut problems = Vec::new();
    if !(sample_period_s.is_finite() && sample_period_s > 0.0) {
        problems.push(format!(
            "sample_period_s = {sample_period_s} must be positive and finite"
        ));
    }
    if steps_per_sample == 0 {
        problems.push("steps_per_sample must be at least 1".into());
    }
    if !problems.is_empty() {
        return Err(NonlinearError::Invalid(problems));
    }
    let mut stepper = Stepper::new(chain)?;
    let dt = sample_period_s / steps_per_sample as f64;
    let mut samples = Vec::with_capacity(force_n.len());
    for &f in force_n {
        let acceleration_m_s2 = stepper.acceleration(f).to_vec();
        samples.push(ChainSample {
            displacement_m: stepper.x.clone(),
            velocity_m_s: stepper.v.clone(),
            acceleration_m_s2,
        });
        for _ in 0..steps_per_sample {
            stepper.step(0.0, dt, |_| f);
        }
        if !stepper.is_finite() {
            return Err(NonlinearError::Numerical(
                "the chain's response diverged under the held force",
            ));
        }
    }
    Ok(samples)
}
