//! Innovation consistency: on data drawn from exactly the noise model the filter was
//! designed with, the normalised innovation squared (NIS) is χ² with as many degrees of
//! freedom as channels present, so its average must be that number.

// Helpers outside #[test] fns panic on broken preconditions too; that is how tests fail.
#![allow(clippy::expect_used)]

mod kalman_support;

use dtop_dynamics::{GainSchedule, ShearBuilding, StructuralEstimator, StructuralNoise};
use kalman_support::{Gaussian, NoisyPlant, discretize};

/// Steps after which the filter's error covariance has reached its steady state from the
/// zero initial error; the slowest closed-loop error pole of these designs has a time
/// constant under 0.2 s (checked in `closed_loop_settles_quickly`), so 2 s is more than
/// ten of them.
const BURN_IN: usize = 2_000;
/// Averaged steps: the mean of N independent χ²_m draws has standard deviation √(2m/N).
const STEPS: usize = 40_000;

/// Known inputs: a force on floor 1 and, when fitted, the actuator, as sums of sines so
/// that the structure moves; the filter is told them exactly, their errors are the plant's.
fn known_input(k: usize, n_inputs: usize, floor1: usize, actuator: Option<usize>) -> Vec<f64> {
    let t = k as f64 * 1e-3;
    let mut u = vec![0.0; n_inputs];
    u[floor1] = 3.0 * (2.0 * std::f64::consts::PI * 7.0 * t).sin()
        + 2.0 * (2.0 * std::f64::consts::PI * 19.0 * t).sin();
    if let Some(i) = actuator {
        u[i] = 1.5 * (2.0 * std::f64::consts::PI * 11.0 * t).sin();
    }
    u
}

/// Runs `schedule` on `STEPS` samples, where `present(k, channel)` says whether a sample
/// arrives, and returns (Σ NIS, Σ channels present) after burn-in.
fn run(schedule: GainSchedule, seed: u64, present: impl Fn(usize, usize) -> bool) -> (f64, f64) {
    let building = ShearBuilding::southampton_with_actuator(3).expect("floor 3 exists");
    let model = discretize(&building);
    let noise = StructuralNoise::defaults(model.io_layout());
    let mut estimator = StructuralEstimator::new(&model, &noise, schedule).expect("valid");
    let mut plant = NoisyPlant::new(&model, &noise, seed);
    let layout = model.io_layout();
    let (mut nis_sum, mut dof_sum) = (0.0, 0.0);
    for k in 0..BURN_IN + STEPS {
        let u = known_input(
            k,
            layout.n_inputs(),
            layout.input_floor_force(1),
            layout.input_actuator(),
        );
        let y = plant.step(&u);
        let samples: Vec<Option<f64>> = y
            .iter()
            .enumerate()
            .map(|(c, v)| present(k, c).then_some(*v))
            .collect();
        let report = estimator.step(&u, &samples);
        assert_eq!(report.measured, samples.iter().flatten().count());
        if k >= BURN_IN {
            nis_sum += report.nis;
            dof_sum += report.measured as f64;
        }
    }
    (nis_sum, dof_sum)
}

/// |mean NIS per degree of freedom − 1| must be within 5 standard deviations of the mean
/// of independent χ² draws: √(2·Σdof)/Σdof. Innovations of the optimal filter are white,
/// so the draws are independent.
fn assert_chi_square_mean(label: &str, (nis_sum, dof_sum): (f64, f64)) {
    let ratio = nis_sum / dof_sum;
    let tolerance = 5.0 * (2.0 * dof_sum).sqrt() / dof_sum;
    eprintln!("{label}: mean NIS / dof = {ratio:.4} (1 ± {tolerance:.4})");
    assert!(
        (ratio - 1.0).abs() < tolerance,
        "{label}: mean NIS / dof = {ratio:.4}, allowed 1 ± {tolerance:.4}"
    );
}

#[test]
fn nis_averages_the_number_of_measured_floors() {
    let result = run(GainSchedule::SteadyState, 11, |_, _| true);
    // Three channels every step.
    assert_eq!(result.1, 3.0 * STEPS as f64);
    assert_chi_square_mean("all present", result);
}

#[test]
fn nis_averages_two_with_one_accelerometer_dropped_out() {
    let result = run(GainSchedule::SteadyState, 12, |_, channel| channel != 1);
    assert_eq!(result.1, 2.0 * STEPS as f64);
    assert_chi_square_mean("floor 2 dropped out", result);
}

#[test]
fn time_varying_nis_stays_consistent_under_random_missing_samples() {
    // Each sample of each channel is lost with probability 0.2, independently: the exact
    // filter's NIS is χ² with the count present, step by step.
    let mut losses = Gaussian::new(99);
    let lost: Vec<[bool; 3]> = (0..BURN_IN + STEPS)
        .map(|_| std::array::from_fn(|_| losses.sample() > 0.8416)) // P(z > 0.8416) = 0.2
        .collect();
    let result = run(GainSchedule::TimeVarying, 13, |k, c| !lost[k][c]);
    let expected_dof = 3.0 * 0.8 * STEPS as f64;
    assert!((result.1 - expected_dof).abs() < 0.02 * expected_dof);
    assert_chi_square_mean("time-varying, 20 % lost", result);
}

#[test]
fn closed_loop_settles_quickly() {
    // Justifies BURN_IN: the error dynamics A − K·C of the all-channel design decay by e
    // in under 0.2 s (200 samples; ~146 today), so 2000 samples is > 10 time constants.
    let model = discretize(&ShearBuilding::southampton_with_actuator(3).expect("valid"));
    let noise = StructuralNoise::defaults(model.io_layout());
    let gaussian = noise.gaussian_model(&model).expect("valid");
    let estimator =
        StructuralEstimator::new(&model, &noise, GainSchedule::SteadyState).expect("valid");
    let gain = &estimator.filter().steady_state().predictor_gain;
    let radius = (&gaussian.ad - gain * &gaussian.c)
        .complex_eigenvalues()
        .iter()
        .map(|z| z.norm())
        .fold(0.0, f64::max);
    let time_constant_samples = -1.0 / radius.ln();
    assert!(
        time_constant_samples < 200.0,
        "τ = {time_constant_samples} samples"
    );
}
