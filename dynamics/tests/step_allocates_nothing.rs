//! Proves through the public API that `DiscreteStateSpace::step` never touches the heap, by
//! counting allocations made on this test's thread with a wrapping global allocator.

// A global allocator is the only way to observe allocations, and implementing one needs
// `unsafe impl GlobalAlloc`. The impl only forwards to `System` and bumps a counter.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dtop_dynamics::ShearBuilding;
use nalgebra::DVector;

thread_local! {
    // Const-initialised so reading it from inside the allocator cannot itself allocate.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAllocator;

// SAFETY: every method forwards the caller's arguments unchanged to `System`, which upholds
// the `GlobalAlloc` contract; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` via `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_on_this_thread() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

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
