//! Proves through the public API that `KalmanFilter::step` never touches the heap, for both
//! gain schedules and every mix of present and missing samples, by counting allocations
//! made on this test's thread with a wrapping global allocator.

mod alloc_counter;

use dtop_dynamics::{GainSchedule, ShearBuilding, StructuralEstimator, StructuralNoise};

use alloc_counter::allocations_on_this_thread;

#[test]
fn kalman_step_allocates_nothing_with_any_schedule_or_missing_samples() {
    // The counter must see allocations at all, or a zero below would prove nothing.
    let before_probe = allocations_on_this_thread();
    let probe = vec![0u8; 16];
    assert!(allocations_on_this_thread() > before_probe);
    drop(probe);

    let model = ShearBuilding::southampton_with_actuator(3)
        .expect("floor 3 exists")
        .state_space()
        .discretize_zoh(1e-3)
        .expect("valid step");
    let noise = StructuralNoise::defaults(model.io_layout());
    for schedule in [GainSchedule::SteadyState, GainSchedule::TimeVarying] {
        let mut estimator = StructuralEstimator::new(&model, &noise, schedule).expect("valid");
        let mut u = vec![0.0; model.n_inputs()];
        let mut y = [None; 3];
        let mut nis_total = 0.0;
        let before = allocations_on_this_thread();
        for k in 0..3000 {
            let t = k as f64 * 1e-3;
            u[model.input_floor_force(1)] = (2.0 * std::f64::consts::PI * 7.0 * t).sin();
            // Cycle through every availability pattern, so each gain (or every re-masking
            // of the time-varying update) is exercised.
            let pattern = (k / 50) % 8;
            for (c, sample) in y.iter_mut().enumerate() {
                *sample = (pattern & (1 << c) != 0).then_some(0.01 * (t * (c + 3) as f64).sin());
            }
            nis_total += estimator.step(&u, &y).nis;
        }
        let after = allocations_on_this_thread();
        assert_eq!(
            after - before,
            0,
            "{schedule:?}: step allocated {} times",
            after - before
        );
        // The run did something, so the loop was not optimised into nothing.
        assert!(nis_total > 0.0 && estimator.floor_velocity_m_s(3) != 0.0);
    }
}
