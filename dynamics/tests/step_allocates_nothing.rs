//! Proves through the public API that `DiscreteStateSpace::step` never touches the heap, by
//! counting allocations made on this test's thread with a wrapping global allocator.

mod alloc_counter;

use dtop_dynamics::ShearBuilding;
use nalgebra::DVector;

use alloc_counter::allocations_on_this_thread;

#[test]
fn discrete_step_allocates_nothing() {
    let model = ShearBuilding::southampton_with_actuator(3)
        .expect("floor 3 exists")
        .state_space()
        .discretize_zoh(1e-3)
        .expect("valid step");
    let mut x = DVector::zeros(model.n_states());
    let mut u = DVector::zeros(model.n_inputs());
    let mut y = DVector::zeros(model.n_outputs());
    u[model.input_ground_accel()] = 0.3;

    // The counter must see allocations at all, or a zero below would prove nothing.
    let before_probe = allocations_on_this_thread();
    let probe = DVector::<f64>::zeros(16);
    assert!(allocations_on_this_thread() > before_probe);
    drop(probe);

    let before = allocations_on_this_thread();
    for k in 0..1000 {
        u[model.input_actuator().unwrap_or(0)] = (k as f64 * 0.01).sin();
        model.step(&mut x, &u, &mut y);
    }
    let after = allocations_on_this_thread();
    assert_eq!(after - before, 0, "step allocated {} times", after - before);
    // The run did something, so the loop was not optimised into nothing.
    assert!(y.amax() > 0.0);
}
