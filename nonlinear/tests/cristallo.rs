//! Cristallo's 3-DOF cubic chain (TOOLS.md §5.1) at its sweep defaults, F = 10 N over
//! 1–50 rad/s: the continuation's folds against open-loop up and down sweeps run to steady
//! state by an independent RK4 integration (written in `common`), whose jumps must bracket
//! the folds; then the library's own open-loop sweeps against the same folds and balance.
//!
//! Found with 9 harmonics: folds at 15.8187 and 14.8511 rad/s (first resonance, jump down
//! and jump up) and 41.9055 and 40.8773 rad/s (second resonance). With 13 harmonics the
//! first moves by 7e-7 relative, the others by less.

// Test helpers outside #[test] functions fail loudly by design.
#![allow(clippy::expect_used)]

use crate::common;

use dtop_nonlinear::{
    Branch, NonlinearChain, OpenLoopSweepConfig, StopReason, Sweep, continue_branch,
    open_loop_sweep, periodic_response_near,
};
use nalgebra::DVector;

/// Harmonics kept. With 7, floor 3's amplitude at 15.8 rad/s (0.02 rad/s below the fold,
/// where it is most sensitive) is 1.2e-4 off the 13-harmonic value; with 9, 6e-6.
const HARMONICS: usize = 9;

fn branch(chain: &NonlinearChain) -> Branch {
    continue_branch(chain, &common::cristallo_sweep(HARMONICS)).expect("continues")
}

/// One open-loop sweep over `grid`, each frequency run from the previous end state until
/// every floor's first-harmonic amplitude changes by less than 1e-6 of the largest over 20
/// periods (the settling criterion; 3000 periods at most). Returns floor 3's amplitudes.
fn sweep(chain: &NonlinearChain, grid: &[f64]) -> Vec<f64> {
    // Cristallo's cubic, written out: 200 N/m³ · x₁³ between floor 1 and the ground.
    let cubic = |x: &[f64], f: &mut [f64]| f[0] = 200.0 * x[0].powi(3);
    let reference = common::Reference {
        mass: chain.mass().clone(),
        damping: chain.damping().clone(),
        stiffness: chain.stiffness().clone(),
        spring_force: &cubic,
        forced_dof: 0,
    };
    let (mut x, mut v) = (DVector::zeros(3), DVector::zeros(3));
    grid.iter()
        .map(|&omega| {
            // 160 RK4 steps per period keep h·ω_max below 0.25 here (ω_max ≈ 70 rad/s
            // with the cubic's stiffening at these amplitudes).
            let steady =
                reference.steady_state(x.clone(), v.clone(), omega, 10.0, 160, 20, 1e-6, 3000);
            assert!(
                steady.settled,
                "ω = {omega}: not settled in {} periods",
                steady.periods
            );
            (x, v) = (steady.x, steady.v);
            steady.amplitude[2]
        })
        .collect()
}

/// Index i where the amplitude jumps between grid[i] and grid[i + 1] by more than 2×.
fn jump(amplitudes: &[f64]) -> usize {
    let jumps: Vec<usize> = amplitudes
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] > 2.0 * w[1] || w[1] > 2.0 * w[0])
        .map(|(i, _)| i)
        .collect();
    assert_eq!(jumps.len(), 1, "{amplitudes:?}");
    jumps[0]
}

#[test]
fn cristallo_folds_are_bracketed_by_the_jumps_of_steady_state_sweeps() {
    let chain = NonlinearChain::cristallo().expect("valid");
    let branch = branch(&chain);
    assert_eq!(branch.stop, StopReason::ReachedEnd);
    assert_eq!(branch.folds.len(), 4, "{:?}", branch.folds);
    assert!(branch.folds.iter().all(|f| f.located));
    // Stability changes exactly at the folds, and only there.
    let fold_points: Vec<usize> = branch.folds.iter().map(|f| f.after_point).collect();
    for (i, pair) in branch.points.windows(2).enumerate() {
        assert_eq!(
            pair[0].stable != pair[1].stable,
            fold_points.contains(&i),
            "between points {i} and {} (ω = {} → {})",
            i + 1,
            pair[0].omega_rad_s,
            pair[1].omega_rad_s
        );
    }
    let folds: Vec<f64> = branch.folds.iter().map(|f| f.omega_rad_s).collect();
    println!("folds (rad/s): {folds:?}");

    // Grids of 0.1 rad/s, placed so that no grid point sits within 0.02 rad/s of a fold.
    for (lo, hi, (jump_down, jump_up)) in [
        (14.5, 16.2, (folds[0], folds[1])),
        (40.45, 42.25, (folds[2], folds[3])),
    ] {
        let steps = ((hi - lo) / 0.1_f64).round() as usize;
        let up: Vec<f64> = (0..=steps).map(|i| lo + 0.1 * i as f64).collect();
        let down: Vec<f64> = up.iter().rev().copied().collect();
        let a_up = sweep(&chain, &up);
        let i = jump(&a_up);
        assert!(a_up[i] > a_up[i + 1], "the up sweep jumps down");
        assert!(
            up[i] < jump_down && jump_down < up[i + 1],
            "up sweep jumps between {} and {} rad/s; fold at {jump_down}",
            up[i],
            up[i + 1]
        );
        let a_down = sweep(&chain, &down);
        let j = jump(&a_down);
        assert!(a_down[j] < a_down[j + 1], "the down sweep jumps up");
        assert!(
            down[j + 1] < jump_up && jump_up < down[j],
            "down sweep jumps between {} and {} rad/s; fold at {jump_up}",
            down[j],
            down[j + 1]
        );
        // The last resonant state before the up sweep's jump is the balance's upper branch.
        let near = branch
            .points
            .iter()
            .filter(|p| p.stable == Some(true))
            .min_by(|a, b| {
                let key = |p: &&dtop_nonlinear::PeriodicResponse| {
                    (p.omega_rad_s - up[i]).abs() + (p.amplitude_m[2] - a_up[i]).abs()
                };
                key(a).total_cmp(&key(b))
            })
            .expect("points");
        let balanced = periodic_response_near(&chain, near, up[i], 10.0).expect("solves");
        // Settling to 1e-6 per 20 periods leaves ≲ 1e-5 of transient; RK4 at 160 steps
        // per period errs by 6e-6 here and 9 harmonics by 6e-6 (both measured against
        // 640 steps and 13 harmonics, which agree to 2e-8).
        assert!(
            (balanced.amplitude_m[2] - a_up[i]).abs() < 1e-4 * a_up[i],
            "ω = {}: balance {} m, sweep {} m",
            up[i],
            balanced.amplitude_m[2],
            a_up[i]
        );
    }
}

#[test]
fn the_library_sweeps_settle_on_the_balance_and_jump_across_the_folds() {
    let chain = NonlinearChain::cristallo().expect("valid");
    let mut config = common::cristallo_sweep(HARMONICS);
    config.stability = false;
    let branch = continue_branch(&chain, &config).expect("continues");
    let (jump_down, jump_up) = (branch.folds[0].omega_rad_s, branch.folds[1].omega_rad_s);
    // The same grid as the reference integrator's: 14.5 to 16.2 rad/s by 0.1.
    let sweep = open_loop_sweep(
        &chain,
        &OpenLoopSweepConfig::new(
            Sweep::Frequency {
                start_rad_s: 14.5,
                end_rad_s: 16.2,
                forcing_n: 10.0,
            },
            18,
        ),
    )
    .expect("sweeps");
    assert!(sweep.up.iter().chain(&sweep.down).all(|p| p.settled));
    let up: Vec<f64> = sweep.up.iter().map(|p| p.amplitude_m[2]).collect();
    let i = jump(&up);
    let (w0, w1) = (sweep.up[i].omega_rad_s, sweep.up[i + 1].omega_rad_s);
    assert!(
        up[i] > up[i + 1] && w0 < jump_down && jump_down < w1,
        "{w0}..{w1}"
    );
    let down: Vec<f64> = sweep.down.iter().map(|p| p.amplitude_m[2]).collect();
    let j = jump(&down);
    let (w0, w1) = (sweep.down[j].omega_rad_s, sweep.down[j + 1].omega_rad_s);
    assert!(
        down[j] < down[j + 1] && w1 < jump_up && jump_up < w0,
        "{w1}..{w0}"
    );
    // Every settled point, on either branch, is a periodic response of the balance.
    for p in sweep.up.iter().chain(&sweep.down) {
        let near = branch
            .points
            .iter()
            .min_by(|a, b| {
                let key = |q: &&dtop_nonlinear::PeriodicResponse| {
                    (q.omega_rad_s - p.omega_rad_s).abs()
                        + (q.amplitude_m[2] - p.amplitude_m[2]).abs()
                };
                key(a).total_cmp(&key(b))
            })
            .expect("points");
        let balanced = periodic_response_near(&chain, near, p.omega_rad_s, 10.0).expect("solves");
        // As in the reference sweep test: settling, RK4 (128 steps per period: 1.5e-5 at
        // worst, scaling the measured 160-step error) and 9 harmonics each stay well
        // below 1e-4.
        assert!(
            (balanced.amplitude_m[2] - p.amplitude_m[2]).abs() < 1e-4 * p.amplitude_m[2],
            "ω = {}: balance {} m, sweep {} m",
            p.omega_rad_s,
            balanced.amplitude_m[2],
            p.amplitude_m[2]
        );
    }
}
