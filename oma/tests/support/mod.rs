//! Shared by the integration tests: simulates output-only records of a shear building under
//! independent white-noise floor forces, through dtop-dynamics' exact ZOH discretisation.

#![allow(clippy::expect_used)]

use dtop_dynamics::ShearBuilding;
use nalgebra::DVector;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Floor accelerations (m/s², one `Vec` per floor) of `building` sampled at `sample_rate_hz`
/// for `duration_s`, under independent unit-variance white forces (N) on every floor held over
/// each sample, plus white measurement noise of `noise_fraction` × each channel's RMS. The first
/// `settle_s` seconds are simulated and dropped, so the record starts in the stationary regime.
pub fn floor_accelerations(
    building: &ShearBuilding,
    sample_rate_hz: f64,
    duration_s: f64,
    noise_fraction: f64,
    seed: u64,
) -> Vec<Vec<f64>> {
    let settle_s = 30.0;
    let dss = building
        .state_space()
        .discretize_zoh(1.0 / sample_rate_hz)
        .expect("valid step");
    let floors = building.floors();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).expect("valid");
    let mut x = DVector::zeros(dss.n_states());
    let mut u = DVector::zeros(dss.n_inputs());
    let mut y = DVector::zeros(dss.n_outputs());
    let settle = (settle_s * sample_rate_hz) as usize;
    let samples = (duration_s * sample_rate_hz) as usize;
    let mut out = vec![Vec::with_capacity(samples); floors];
    for step in 0..settle + samples {
        for floor in 1..=floors {
            u[dss.input_floor_force(floor)] = normal.sample(&mut rng);
        }
        dss.step(&mut x, &u, &mut y);
        if step >= settle {
            for floor in 1..=floors {
                out[floor - 1].push(y[dss.output_floor_accel(floor)]);
            }
        }
    }
    for channel in &mut out {
        let rms = (channel.iter().map(|v| v * v).sum::<f64>() / channel.len() as f64).sqrt();
        for v in channel.iter_mut() {
            *v += noise_fraction * rms * normal.sample(&mut rng);
        }
    }
    out
}
