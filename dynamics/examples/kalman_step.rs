//! Times `StructuralEstimator::step` and counts its heap allocations, for 6-, 8- and
//! 12-state building models, with every accelerometer present and with one missing.
//! Run: `cargo run --release -p dtop-dynamics --example kalman_step`.
//!
//! Bounded: a fixed number of steps per case, best of many short repeats (the minimum is
//! the figure least disturbed by whatever else the machine is running).

// A global allocator is the only way to count allocations, and implementing one needs
// `unsafe impl GlobalAlloc`. The impl only forwards to `System` and bumps a counter.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dtop_dynamics::config::{SOUTHAMPTON_FLOOR_MASS_KG, SOUTHAMPTON_STOREY_STIFFNESS_N_PER_M};
use dtop_dynamics::{
    Damping, GainSchedule, InertialActuator, KalmanError, ModelError, ShearBuilding,
    ShearBuildingConfig, StructuralEstimator, StructuralNoise,
};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct CountingAllocator;

// SAFETY: every method forwards the caller's arguments unchanged to `System`, which upholds
// the `GlobalAlloc` contract; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` via `alloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Steps per timed run: short, so that some runs fit between preemptions on a busy machine.
const STEPS: usize = 20_000;
/// Timed runs per case; the best is reported.
const REPEATS: usize = 50;
/// Distinct (u, y) samples cycled through, precomputed so the loop times only `step`.
const SAMPLES: usize = 1024;

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Kalman(#[from] KalmanError),
}

fn building(floors: usize, actuator_floor: Option<usize>) -> Result<ShearBuilding, ModelError> {
    ShearBuilding::new(ShearBuildingConfig {
        floor_masses_kg: vec![SOUTHAMPTON_FLOOR_MASS_KG; floors],
        storey_stiffness_n_per_m: vec![SOUTHAMPTON_STOREY_STIFFNESS_N_PER_M; floors],
        damping: Damping::RayleighModes {
            zeta: 0.002,
            mode_a: 1,
            mode_b: 2,
        },
        actuator: actuator_floor.map(|floor| InertialActuator {
            floor,
            ..InertialActuator::default()
        }),
    })
}

/// Best ns per step over `REPEATS` runs, and allocations during all timed runs.
fn time_steps(
    estimator: &mut StructuralEstimator,
    inputs: &[Vec<f64>],
    samples: &[Vec<Option<f64>>],
) -> (f64, u64) {
    let mut best_ns = f64::INFINITY;
    let mut allocations = 0;
    // One untimed run first, so caches and the clock frequency have settled.
    for k in 0..STEPS {
        let i = k % SAMPLES;
        black_box(estimator.step(black_box(&inputs[i]), black_box(&samples[i])));
    }
    for _ in 0..REPEATS {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut nis = 0.0;
        for k in 0..STEPS {
            let i = k % SAMPLES;
            nis += estimator
                .step(black_box(&inputs[i]), black_box(&samples[i]))
                .nis;
        }
        let elapsed = start.elapsed();
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
        black_box(nis);
        best_ns = best_ns.min(elapsed.as_nanos() as f64 / STEPS as f64);
    }
    (best_ns, allocations)
}

fn main() -> Result<(), BenchError> {
    let cases = [
        ("3-storey bare", building(3, None)?),
        ("3-storey + actuator", building(3, Some(3))?),
        ("6-storey bare", building(6, None)?),
        ("5-storey + actuator", building(5, Some(5))?),
    ];
    println!(
        "{:<22} {:>6} {:>8} {:<14} {:>10} {:<12} {:>10} {:>12}",
        "model", "states", "sensors", "schedule", "design ms", "samples", "ns/step", "allocations"
    );
    for (name, building) in &cases {
        let model = building.state_space().discretize_zoh(1e-3)?;
        let layout = model.io_layout();
        let floors = layout.floors();
        let noise = StructuralNoise::defaults(layout);
        let inputs: Vec<Vec<f64>> = (0..SAMPLES)
            .map(|k| {
                let t = k as f64 * 1e-3;
                let mut u = vec![0.0; model.n_inputs()];
                u[layout.input_floor_force(1)] = 3.0 * (40.0 * t).sin();
                if let Some(a) = layout.input_actuator() {
                    u[a] = (23.0 * t).cos();
                }
                u
            })
            .collect();
        let all: Vec<Vec<Option<f64>>> = (0..SAMPLES)
            .map(|k| {
                (0..floors)
                    .map(|f| Some(0.05 * (k as f64 * 0.04 * (f + 1) as f64).sin()))
                    .collect()
            })
            .collect();
        let one_missing: Vec<Vec<Option<f64>>> = all
            .iter()
            .map(|y| {
                let mut y = y.clone();
                y[floors / 2] = None;
                y
            })
            .collect();
        for schedule in [GainSchedule::SteadyState, GainSchedule::TimeVarying] {
            let design_start = Instant::now();
            let mut estimator = StructuralEstimator::new(&model, &noise, schedule)?;
            let design_ms = design_start.elapsed().as_secs_f64() * 1e3;
            for (label, samples) in [("all", &all), ("one missing", &one_missing)] {
                let (ns, allocations) = time_steps(&mut estimator, &inputs, samples);
                println!(
                    "{:<22} {:>6} {:>8} {:<14} {:>10.1} {:<12} {:>10.1} {:>12}",
                    name,
                    model.n_states(),
                    floors,
                    format!("{schedule:?}"),
                    design_ms,
                    label,
                    ns,
                    allocations
                );
            }
        }
    }
    Ok(())
}
