//! Missing samples and dropped-out sensors: a step with nothing measured is a pure
//! prediction, estimates stay bounded through outages and come back afterwards, and the
//! tabulated steady-state gains end up where the exact time-varying filter does.

// Helpers outside #[test] fns panic on broken preconditions too; that is how tests fail.
#![allow(clippy::expect_used)]

mod kalman_support;

use dtop_dynamics::{
    DiscreteStateSpace, GainSchedule, ShearBuilding, StructuralEstimator, StructuralNoise,
};
use kalman_support::{NoisyPlant, discretize, rms};
use nalgebra::DVector;

const FLOORS: usize = 3;

fn rig_model() -> DiscreteStateSpace {
    discretize(&ShearBuilding::southampton_with_actuator(3).expect("floor 3 exists"))
}

/// Band-limited-looking known force on floor 1 (three incommensurate sines spanning the
/// modes) and a slower actuator command.
fn known_input(model: &DiscreteStateSpace, k: usize) -> Vec<f64> {
    let t = k as f64 * model.dt_s;
    let tau = 2.0 * std::f64::consts::PI;
    let mut u = vec![0.0; model.n_inputs()];
    u[model.input_floor_force(1)] =
        3.0 * (tau * 6.1 * t).sin() + 2.0 * (tau * 19.3 * t).sin() + 1.0 * (tau * 28.9 * t).sin();
    if let Some(i) = model.input_actuator() {
        u[i] = 1.0 * (tau * 3.7 * t).sin();
    }
    u
}

/// Per step and floor: true velocity and the estimates of each estimator.
struct Trace {
    truth: Vec<[f64; FLOORS]>,
    estimates: Vec<Vec<[f64; FLOORS]>>,
    nis: Vec<Vec<f64>>,
}

/// Runs every estimator on the same data; `present(k, channel)` decides which samples
/// arrive.
fn run(
    model: &DiscreteStateSpace,
    estimators: &mut [StructuralEstimator],
    steps: usize,
    present: impl Fn(usize, usize) -> bool,
) -> Trace {
    let noise = windy(model);
    let mut plant = NoisyPlant::new(model, &noise, 21);
    let mut trace = Trace {
        truth: Vec::with_capacity(steps),
        estimates: vec![Vec::with_capacity(steps); estimators.len()],
        nis: vec![Vec::with_capacity(steps); estimators.len()],
    };
    let dofs = model.n_states() / 2;
    for k in 0..steps {
        let u = known_input(model, k);
        trace.truth.push(std::array::from_fn(|f| plant.x[dofs + f]));
        let y = plant.step(&u);
        let samples: Vec<Option<f64>> = y
            .iter()
            .enumerate()
            .map(|(c, v)| present(k, c).then_some(*v))
            .collect();
        for (i, estimator) in estimators.iter_mut().enumerate() {
            let report = estimator.step(&u, &samples);
            trace.nis[i].push(report.nis);
            trace.estimates[i].push(std::array::from_fn(|f| estimator.floor_velocity_m_s(f + 1)));
        }
    }
    trace
}

impl Trace {
    /// Worst floor's RMS velocity error of estimator `i` over `range`, as a fraction of that
    /// floor's RMS true velocity over the whole run.
    fn relative_error(&self, i: usize, range: std::ops::Range<usize>) -> f64 {
        (0..FLOORS)
            .map(|f| {
                let errors: Vec<f64> = range
                    .clone()
                    .map(|k| self.estimates[i][k][f] - self.truth[k][f])
                    .collect();
                let truth: Vec<f64> = self.truth.iter().map(|v| v[f]).collect();
                rms(&errors) / rms(&truth)
            })
            .fold(0.0, f64::max)
    }
}

/// The defaults with unmeasured forces 30 times larger (0.3 N RMS per sample on floors 2
/// and 3): enough that the structure wanders off the known-input prediction within an
/// outage, so that recovery has something to recover from.
fn windy(model: &DiscreteStateSpace) -> StructuralNoise {
    let mut noise = StructuralNoise::defaults(model.io_layout());
    for floor in 2..=FLOORS {
        noise.input_uncertainty_rms[model.input_floor_force(floor)] = 0.3;
    }
    noise
}

fn estimator(model: &DiscreteStateSpace, schedule: GainSchedule) -> StructuralEstimator {
    StructuralEstimator::new(model, &windy(model), schedule).expect("valid design")
}

#[test]
fn a_step_without_samples_is_a_pure_prediction() {
    let model = rig_model();
    for schedule in [GainSchedule::SteadyState, GainSchedule::TimeVarying] {
        let mut estimator = estimator(&model, schedule);
        let x0: Vec<f64> = (0..model.n_states())
            .map(|i| 1e-4 * (i as f64 - 3.0))
            .collect();
        estimator.filter_mut().reset(&x0);
        let u = known_input(&model, 40);
        let report = estimator.step(&u, &[None, None, None]);
        assert_eq!((report.nis, report.measured), (0.0, 0));
        // x̂(k|k) = x̂(k|k−1) exactly: nothing was learnt.
        assert_eq!(estimator.filter().state().as_slice(), x0.as_slice());
        let mut x = DVector::from_column_slice(&x0);
        let mut y = DVector::zeros(model.n_outputs());
        model.step(&mut x, &DVector::from_column_slice(&u), &mut y);
        // Same products in another summation order ([Ad Bd]·[x; u] vs Ad·x + Bd·u): equal
        // to a few ulps of the largest term.
        let predicted = estimator.filter().predicted_state().into_owned();
        assert!((predicted - x).amax() < 1e-15, "prediction differs");
    }
}

#[test]
fn a_non_finite_sample_counts_as_missing() {
    let model = rig_model();
    let mut with_nan = estimator(&model, GainSchedule::SteadyState);
    let mut with_none = estimator(&model, GainSchedule::SteadyState);
    for k in 0..200 {
        let u = known_input(&model, k);
        let y = [Some(0.01 * k as f64), Some(-0.02), Some(0.005)];
        with_nan.step(&u, &y);
        with_none.step(&u, &y);
    }
    let u = known_input(&model, 200);
    let a = with_nan.step(&u, &[Some(0.1), Some(f64::NAN), Some(f64::INFINITY)]);
    let b = with_none.step(&u, &[Some(0.1), None, None]);
    assert_eq!(a, b);
    assert_eq!(a.measured, 1);
    assert_eq!(with_nan.filter().state(), with_none.filter().state());
    assert!(with_nan.filter().state().iter().all(|v| v.is_finite()));
}

#[test]
fn estimates_stay_bounded_through_a_total_outage_and_recover() {
    let model = rig_model();
    let mut estimators = [
        estimator(&model, GainSchedule::SteadyState),
        estimator(&model, GainSchedule::TimeVarying),
    ];
    // 4 s of data; every sample lost from 1.5 s to 2.5 s.
    let outage = 1_500..2_500;
    let trace = run(&model, &mut estimators, 4_000, |k, _| !outage.contains(&k));
    for (i, name) in ["steady-state", "time-varying"].iter().enumerate() {
        let before = trace.relative_error(i, 500..1_500);
        let during = trace.relative_error(i, outage.clone());
        let after = trace.relative_error(i, 3_000..4_000);
        eprintln!("{name}: before {before:.4}, during {during:.4}, after {after:.4}");
        // Observed: 0.08 % before, 2 % during, 0.06 % after.
        // Before: tracking far inside the 5 % acceptance bar.
        assert!(before < 0.01, "{name}: {before}");
        // During: open-loop prediction from the known inputs drifts with the unmeasured
        // forces, so the error grows (which shows the samples really were withheld) but
        // stays bounded well below the motion itself.
        assert!(during > 5.0 * before && during < 0.1, "{name}: {during}");
        // After: back to the pre-outage level within half a second (>3 closed-loop time
        // constants) and measured over the second after that.
        assert!(after < 2.0 * before.max(1e-3), "{name}: {after}");
        // NIS is exactly 0 while nothing is measured.
        assert!(outage.clone().all(|k| trace.nis[i][k] == 0.0));
    }
}

#[test]
fn a_dropped_accelerometer_leaves_tracking_to_the_others() {
    let model = rig_model();
    let mut estimators = [
        estimator(&model, GainSchedule::SteadyState),
        estimator(&model, GainSchedule::TimeVarying),
    ];
    // Floor 2's accelerometer (channel 1) is gone from 1 s to 4 s.
    let dropout = 1_000..4_000;
    let trace = run(&model, &mut estimators, 6_000, |k, c| {
        !(c == 1 && dropout.contains(&k))
    });
    for (i, name) in ["steady-state", "time-varying"].iter().enumerate() {
        let during = trace.relative_error(i, 2_000..4_000);
        let after = trace.relative_error(i, 5_000..6_000);
        eprintln!("{name}: during {during:.4}, after {after:.4}");
        // Observed: 0.3 % during, 0.08 % after. Two accelerometers still observe every
        // mode, so tracking stays far inside the 5 % bar, and returns to the all-sensor
        // level once the third is back.
        assert!(during < 0.01, "{name}: {during}");
        assert!(after < 0.002, "{name}: {after}");
    }
}

#[test]
fn steady_state_gains_catch_up_with_the_exact_filter_after_an_outage() {
    let model = rig_model();
    let mut estimators = [
        estimator(&model, GainSchedule::SteadyState),
        estimator(&model, GainSchedule::TimeVarying),
    ];
    // A long outage (3 s), then everything back.
    let outage = 1_000..4_000;
    let trace = run(&model, &mut estimators, 7_000, |k, _| !outage.contains(&k));
    let gap = |range: std::ops::Range<usize>| {
        (0..FLOORS)
            .map(|f| {
                let d: Vec<f64> = range
                    .clone()
                    .map(|k| trace.estimates[0][k][f] - trace.estimates[1][k][f])
                    .collect();
                let truth: Vec<f64> = trace.truth.iter().map(|v| v[f]).collect();
                rms(&d) / rms(&truth)
            })
            .fold(0.0, f64::max)
    };
    let right_after = gap(4_000..4_050);
    let later = gap(6_000..7_000);
    eprintln!("steady-state vs exact: right after {right_after:.2e}, later {later:.2e}");
    // Both start from the same prediction when samples return, but the exact filter's
    // covariance has grown during the outage, so it trusts the returning samples more:
    // for a moment they differ by a few % of the motion (2.7 % observed). The difference
    // then decays at the closed-loop rate (τ ≈ 0.15 s), so two seconds on, both being in
    // steady state on the same data, they agree to ~1e-6 of the motion (7.6e-7 observed).
    assert!(right_after > 1e-3, "{right_after}");
    assert!(later < 1e-5, "{later}");
}

#[test]
#[should_panic(expected = "y has the wrong length")]
fn a_sample_vector_of_the_wrong_length_is_a_bug() {
    let model = rig_model();
    let mut estimator = estimator(&model, GainSchedule::SteadyState);
    estimator.step(&known_input(&model, 0), &[Some(0.0), Some(0.0)]);
}
