//! Snapshots: a filter rebuilt from the same model and restored from a snapshot taken mid-run
//! continues bit for bit like the original, for both gain schedules, across sensor dropouts
//! and through a JSON round trip; a snapshot that does not fit is refused and changes nothing.

#![allow(clippy::expect_used)]

mod kalman_support;

use dtop_dynamics::{
    DiscreteStateSpace, FilterSnapshot, GainSchedule, KalmanError, ShearBuilding,
    StructuralEstimator, StructuralNoise,
};
use kalman_support::{NoisyPlant, discretize};

fn rig_model() -> DiscreteStateSpace {
    discretize(&ShearBuilding::southampton_with_actuator(3).expect("floor 3 exists"))
}

fn estimator(model: &DiscreteStateSpace, schedule: GainSchedule) -> StructuralEstimator {
    let noise = StructuralNoise::defaults(model.io_layout());
    StructuralEstimator::new(model, &noise, schedule).expect("the rig's filter exists")
}

/// Measured data with a known floor-1 force and channel 1 dropping out every 7th sample.
fn data(model: &DiscreteStateSpace, steps: usize) -> Vec<(Vec<f64>, Vec<Option<f64>>)> {
    let noise = StructuralNoise::defaults(model.io_layout());
    let mut plant = NoisyPlant::new(model, &noise, 5);
    (0..steps)
        .map(|k| {
            let mut u = vec![0.0; model.n_inputs()];
            u[model.input_floor_force(1)] = 2.0 * (k as f64 * 0.043).sin();
            let y: Vec<Option<f64>> = plant
                .step(&u)
                .into_iter()
                .enumerate()
                .map(|(i, v)| (!(i == 1 && k % 7 == 0)).then_some(v))
                .collect();
            (u, y)
        })
        .collect()
}

fn bits(e: &StructuralEstimator) -> Vec<u64> {
    e.filter().state().iter().map(|x| x.to_bits()).collect()
}

fn continues_bit_for_bit(schedule: GainSchedule) {
    let model = rig_model();
    let steps = data(&model, 600);
    let mut original = estimator(&model, schedule);
    for (u, y) in &steps[..250] {
        original.step(u, y);
    }
    let json = serde_json::to_string(&original.filter().snapshot()).expect("serializes");
    let snapshot: FilterSnapshot = serde_json::from_str(&json).expect("parses");
    assert_eq!(
        snapshot,
        original.filter().snapshot(),
        "JSON must round-trip exactly"
    );

    let mut restored = estimator(&model, schedule);
    restored
        .filter_mut()
        .restore(&snapshot)
        .expect("a snapshot of the same design fits");
    assert_eq!(bits(&restored), bits(&original));
    for (k, (u, y)) in steps[250..].iter().enumerate() {
        let a = original.step(u, y);
        let b = restored.step(u, y);
        assert_eq!(
            bits(&restored),
            bits(&original),
            "diverged at step {}",
            250 + k
        );
        assert_eq!(a.nis.to_bits(), b.nis.to_bits());
    }
    // The run must have moved the state, or the comparison proves nothing.
    assert!(original.floor_velocity_m_s(3).abs() > 0.0);
}

#[test]
fn a_restored_steady_state_filter_continues_bit_for_bit() {
    continues_bit_for_bit(GainSchedule::SteadyState);
}

#[test]
fn a_restored_time_varying_filter_continues_bit_for_bit() {
    continues_bit_for_bit(GainSchedule::TimeVarying);
}

#[test]
fn a_fresh_filter_differs_from_the_restored_one() {
    // Guards the test above: without the restore the runs do not agree.
    let model = rig_model();
    let steps = data(&model, 300);
    let mut original = estimator(&model, GainSchedule::TimeVarying);
    for (u, y) in &steps[..250] {
        original.step(u, y);
    }
    let mut fresh = estimator(&model, GainSchedule::TimeVarying);
    for (u, y) in &steps[250..] {
        original.step(u, y);
        fresh.step(u, y);
    }
    assert_ne!(bits(&fresh), bits(&original));
}

#[test]
fn refuses_a_snapshot_that_does_not_fit_and_keeps_its_state() {
    let model = rig_model();
    let mut steady = estimator(&model, GainSchedule::SteadyState);
    let varying = estimator(&model, GainSchedule::TimeVarying);
    for (u, y) in &data(&model, 50) {
        steady.step(u, y);
    }
    let before = bits(&steady);
    let Err(KalmanError::Invalid(problems)) =
        steady.filter_mut().restore(&varying.filter().snapshot())
    else {
        panic!("a time-varying snapshot restored into a steady-state filter");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    let mut short = steady.filter().snapshot();
    short.predicted_state.pop();
    short.state[0] = f64::NAN;
    let Err(KalmanError::Invalid(problems)) = steady.filter_mut().restore(&short) else {
        panic!("a short, non-finite snapshot was restored");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(bits(&steady), before);
}
