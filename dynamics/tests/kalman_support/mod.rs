//! Test-side support shared by the `kalman_*` tests: a small deterministic Gaussian source
//! (so the tests need no extra dependencies) and a simulator that draws every noise term
//! exactly as `StructuralNoise` describes it to the filter.

// Not every test uses every helper; helpers panic on broken preconditions, as tests do.
#![allow(dead_code, clippy::expect_used)]

use dtop_dynamics::{DiscreteStateSpace, ShearBuilding, StructuralNoise};
use nalgebra::DVector;

/// SplitMix64 for the bits, Box–Muller for the shape: independent standard normals, the
/// same sequence for the same seed.
#[derive(Debug, Clone)]
pub struct Gaussian {
    state: u64,
    spare: Option<f64>,
}

impl Gaussian {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on (0, 1], never 0 so that ln() is finite.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

pub fn discretize(building: &ShearBuilding) -> DiscreteStateSpace {
    building
        .state_space()
        .discretize_zoh(1e-3)
        .expect("1 ms is a valid step")
}

/// A building driven by a known input plus the disturbances `noise` describes, measured
/// by accelerometers with the noise `noise` describes: the filter's own noise model.
pub struct NoisyPlant<'a> {
    pub model: &'a DiscreteStateSpace,
    pub noise: &'a StructuralNoise,
    pub x: DVector<f64>,
    rng: Gaussian,
    u_true: DVector<f64>,
    y: DVector<f64>,
}

impl<'a> NoisyPlant<'a> {
    pub fn new(model: &'a DiscreteStateSpace, noise: &'a StructuralNoise, seed: u64) -> Self {
        Self {
            model,
            noise,
            x: DVector::zeros(model.n_states()),
            rng: Gaussian::new(seed),
            u_true: DVector::zeros(model.n_inputs()),
            y: DVector::zeros(model.n_outputs()),
        }
    }

    /// Applies the known input `u_known` plus input errors, advances, and returns the
    /// noisy accelerations of the measured floors (at the state before the advance).
    pub fn step(&mut self, u_known: &[f64]) -> Vec<f64> {
        for (i, &known) in u_known.iter().enumerate() {
            self.u_true[i] = known + self.noise.input_uncertainty_rms[i] * self.rng.sample();
        }
        self.model.step(&mut self.x, &self.u_true, &mut self.y);
        // Model error: independent acceleration kicks on every DOF, integrated over the
        // sample, drawn independently for displacement and velocity as the filter's
        // diagonal Q_model assumes.
        let dofs = self.model.n_states() / 2;
        let dt = self.model.dt_s;
        let sigma_a = self.noise.model_error_accel_rms_m_s2;
        for dof in 0..dofs {
            self.x[dof] += sigma_a * dt * dt / 2.0 * self.rng.sample();
            self.x[dofs + dof] += sigma_a * dt * self.rng.sample();
        }
        let sensor_rms = (self.noise.accel_noise_rms_m_s2.powi(2)
            + self.noise.accel_lsb_m_s2.powi(2) / 12.0)
            .sqrt();
        let layout = self.model.io_layout();
        self.noise
            .measured_floors
            .iter()
            .map(|&f| self.y[layout.output_floor_accel(f)] + sensor_rms * self.rng.sample())
            .collect()
    }
}

/// The true state before the last `NoisyPlant::step` is not kept there; tests that need
/// it copy `x` before stepping.
pub fn rms(values: &[f64]) -> f64 {
    (values.iter().map(|v| v * v).sum::<f64>() / values.len() as f64).sqrt()
}
