//! The linear limit (no nonlinear springs) against `dtop_dynamics`' state-space frequency
//! response, and the refusal of bad input with every problem listed at once.

// Test helpers outside #[test] functions fail loudly by design.
#![allow(clippy::expect_used)]

use crate::common;

use dtop_dynamics::{Damping, ShearBuildingConfig};
use dtop_nonlinear::{
    ContinuationConfig, NonlinearChain, NonlinearChainConfig, NonlinearError, StopReason, Sweep,
    continue_branch, periodic_response,
};
use nalgebra::{DVector, RowDVector};

fn linear_cristallo() -> NonlinearChain {
    let mut config = NonlinearChainConfig::cristallo();
    config.springs[0].cubic_n_per_m3 = 0.0;
    NonlinearChain::new(config).expect("valid")
}

/// |H_d(ω)|·F by the state-space route: x = (jωI − A)⁻¹·b, an independent path from the
/// real-valued harmonic balance.
fn frf_amplitudes(chain: &NonlinearChain, omega: f64, forcing: f64) -> Vec<f64> {
    let ss = chain.building().state_space();
    let column = ss.input_floor_force(chain.config().forced_floor);
    let b: DVector<f64> = ss.b.column(column).into_owned();
    (0..chain.dofs())
        .map(|d| {
            let mut c = RowDVector::zeros(ss.n_states());
            c[d] = 1.0;
            let h = dtop_dynamics::frf::state_space_response(&ss.a, &b, &c, 0.0, omega)
                .expect("damped");
            h.norm() * forcing
        })
        .collect()
}

#[test]
fn without_nonlinear_springs_every_point_is_the_frf_times_the_force() {
    let chain = linear_cristallo();
    assert!(chain.is_linear());
    let branch = continue_branch(&chain, &common::cristallo_sweep(3)).expect("continues");
    assert_eq!(branch.stop, StopReason::ReachedEnd);
    assert!(branch.folds.is_empty());
    // It passes all three resonances (14.07, 39.43, 56.98 rad/s lie in or near the range).
    assert!(branch.points.len() > 30);
    for p in &branch.points {
        let want = frf_amplitudes(&chain, p.omega_rad_s, 10.0);
        for (d, (got, want)) in p.amplitude_m.iter().zip(&want).enumerate() {
            // A linear balance is solved exactly by one Newton step, so only rounding in two
            // complex/real solves remains (measured at most 8e-14, near the resonances,
            // where the dynamic stiffness is conditioned ~1/(2ζ) ≈ 150). The issue asks 1e-8.
            assert!(
                (got - want).abs() < 1e-8 * want,
                "ω = {}, DOF {d}: {got} against {want}",
                p.omega_rad_s
            );
        }
        for h in &p.harmonics {
            assert!(h.mean_m.abs() < 1e-14);
            for k in 2..=3 {
                assert!(
                    h.amplitude_m(k) < 1e-14,
                    "harmonic {k}: {}",
                    h.amplitude_m(k)
                );
            }
            // A pure cosine response: peak-to-peak is twice the amplitude.
            assert!((h.peak_to_peak_m() - 2.0 * h.amplitude_m(1)).abs() < 1e-12);
        }
        assert_eq!(p.stable, Some(true));
    }
}

#[test]
fn a_linear_amplitude_sweep_scales_the_response_with_the_force() {
    let chain = linear_cristallo();
    let sweep = Sweep::Amplitude {
        start_n: 0.0,
        end_n: 20.0,
        omega_rad_s: 16.0,
    };
    let branch = continue_branch(&chain, &ContinuationConfig::new(sweep, 2)).expect("continues");
    assert_eq!(branch.stop, StopReason::ReachedEnd);
    let unit = frf_amplitudes(&chain, 16.0, 1.0);
    for p in &branch.points {
        for (got, per_newton) in p.amplitude_m.iter().zip(&unit) {
            assert!((got - per_newton * p.forcing_n).abs() < 1e-8 * per_newton * 20.0);
        }
    }
    assert_eq!(branch.points.last().map(|p| p.forcing_n), Some(20.0));
}

#[test]
fn every_problem_of_a_continuation_request_is_reported_at_once() {
    let chain = NonlinearChain::cristallo().expect("valid");
    let config = ContinuationConfig {
        sweep: Sweep::Frequency {
            start_rad_s: 50.0,
            end_rad_s: 1.0,
            forcing_n: -1.0,
        },
        harmonics: 0,
        initial_step: 0.1,
        min_step: f64::NAN,
        max_step: 0.05,
        max_points: 1,
        tolerance: 0.0,
        stability: true,
    };
    let Err(NonlinearError::Invalid(problems)) = continue_branch(&chain, &config) else {
        panic!("an invalid request was accepted");
    };
    common::assert_mentions(
        &problems,
        &[
            "sweep.forcing_n = -1",
            "sweep.end_rad_s = 1 must be above sweep.start_rad_s = 50",
            "harmonics = 0",
            "min_step = NaN",
            "min_step ≤ initial_step ≤ max_step",
            "max_points = 1",
            "tolerance = 0",
        ],
    );
    assert_eq!(problems.len(), 7, "{problems:#?}");

    let amplitude = ContinuationConfig::new(
        Sweep::Amplitude {
            start_n: -1.0,
            end_n: f64::INFINITY,
            omega_rad_s: 0.0,
        },
        3,
    );
    let Err(NonlinearError::Invalid(problems)) = continue_branch(&chain, &amplitude) else {
        panic!("an invalid amplitude sweep was accepted");
    };
    assert_eq!(problems.len(), 3, "{problems:#?}");

    let Err(NonlinearError::Invalid(problems)) = periodic_response(&chain, 0, -2.0, f64::NAN)
    else {
        panic!("an invalid point was accepted");
    };
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

#[test]
fn a_continuation_that_cannot_start_says_where_and_why() {
    // Undamped, k/m = 4: the linear dynamic stiffness is exactly zero at ω = 2 rad/s.
    let chain = NonlinearChain::new(NonlinearChainConfig {
        building: ShearBuildingConfig {
            floor_masses_kg: vec![1.0],
            storey_stiffness_n_per_m: vec![4.0],
            damping: Damping::Rayleigh {
                alpha_per_s: 0.0,
                beta_s: 0.0,
            },
            actuator: None,
        },
        springs: Vec::new(),
        forced_floor: 1,
    })
    .expect("valid");
    let sweep = Sweep::Frequency {
        start_rad_s: 2.0,
        end_rad_s: 3.0,
        forcing_n: 1.0,
    };
    let err = continue_branch(&chain, &ContinuationConfig::new(sweep, 1)).expect_err("singular");
    let NonlinearError::CannotStart {
        omega_rad_s,
        forcing_n,
        ..
    } = err
    else {
        panic!("wrong error: {err}");
    };
    assert_eq!((omega_rad_s, forcing_n), (2.0, 1.0));
    assert!(
        err.to_string().contains("cannot start at ω = 2 rad/s"),
        "{err}"
    );
}

#[test]
fn a_point_budget_stops_the_branch_and_keeps_what_was_computed() {
    let chain = NonlinearChain::cristallo().expect("valid");
    let mut config = common::cristallo_sweep(3);
    config.max_points = 7;
    let branch = continue_branch(&chain, &config).expect("starts");
    assert_eq!(branch.stop, StopReason::MaxPoints);
    assert_eq!(branch.points.len(), 7);
    assert!(
        branch
            .points
            .windows(2)
            .all(|w| w[1].omega_rad_s > w[0].omega_rad_s)
    );
}

#[test]
fn a_request_round_trips_through_json_with_defaults_and_refuses_unknown_fields() {
    let text = r#"{"sweep": {"parameter": "frequency", "start_rad_s": 1.0,
                   "end_rad_s": 50.0, "forcing_n": 10.0}}"#;
    let config: ContinuationConfig = serde_json::from_str(text).expect("parses");
    assert_eq!(config.harmonics, 5);
    assert_eq!(config.max_points, 5_000);
    assert!(config.problems().is_empty());
    let back: ContinuationConfig =
        serde_json::from_str(&serde_json::to_string(&config).expect("serializes")).expect("parses");
    assert_eq!(back, config);
    let typo = text.replace("forcing_n", "force_n");
    assert!(serde_json::from_str::<ContinuationConfig>(&typo).is_err());
}

#[test]
fn every_problem_of_an_open_loop_sweep_is_reported_at_once() {
    let chain = NonlinearChain::cristallo().expect("valid");
    let mut config = dtop_nonlinear::OpenLoopSweepConfig::new(
        Sweep::Frequency {
            start_rad_s: 2.0,
            end_rad_s: 2.0,
            forcing_n: 0.0,
        },
        1,
    );
    config.steps_per_period = 8;
    config.block_periods = 0;
    config.settle_tolerance = 2.0;
    let Err(NonlinearError::Invalid(problems)) = dtop_nonlinear::open_loop_sweep(&chain, &config)
    else {
        panic!("an invalid sweep was accepted");
    };
    common::assert_mentions(
        &problems,
        &[
            "sweep.forcing_n = 0",
            "sweep.end_rad_s = 2 must be above",
            "points = 1",
            "steps_per_period = 8",
            "block_periods",
            "settle_tolerance = 2",
        ],
    );
    // 16 steps per period at 0.5 rad/s would be far too coarse for the chain's 57 rad/s
    // mode: the sweep takes more there by itself, and the quasi-static response is F/k₁
    // on every floor (floor 1 carries the force, the floors above ride along).
    let low = dtop_nonlinear::OpenLoopSweepConfig {
        steps_per_period: 16,
        ..dtop_nonlinear::OpenLoopSweepConfig::new(
            Sweep::Frequency {
                start_rad_s: 0.5,
                end_rad_s: 0.6,
                forcing_n: 1.0,
            },
            2,
        )
    };
    let sweep = dtop_nonlinear::open_loop_sweep(&chain, &low).expect("runs");
    for p in sweep.up.iter().chain(&sweep.down) {
        assert!(p.settled);
        for a in &p.amplitude_m {
            // F/k = 5 mm; inertia adds (ω/ω₁)² ≈ 0.2 % at most, the cubic 200·x³ ≈ 2.5e-5 N.
            assert!((a - 0.005).abs() < 0.01 * 0.005, "{a}");
        }
    }
}

#[test]
fn problems_of_the_chain_and_of_the_request_are_reported_together() {
    let mut chain = NonlinearChainConfig::cristallo();
    chain.forced_floor = 5;
    chain.building.floor_masses_kg[2] = -0.2;
    let config = ContinuationConfig::new(
        Sweep::Frequency {
            start_rad_s: 10.0,
            end_rad_s: 5.0,
            forcing_n: 1.0,
        },
        0,
    );
    let Err(NonlinearError::Invalid(problems)) = dtop_nonlinear::trace_branch(&chain, &config)
    else {
        panic!("an invalid pair was accepted");
    };
    common::assert_mentions(
        &problems,
        &[
            "forced_floor = 5",
            "floor_masses_kg[2]",
            "end_rad_s = 5 must be above",
            "harmonics = 0",
        ],
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn a_branch_that_cannot_be_followed_at_the_smallest_step_stops_as_lost_with_its_points() {
    // Steps fixed at 0.2 of the range cannot turn round the Cristallo chain's resonance:
    // the tangent turns too far, the step may not shrink, and the branch is lost there.
    let chain = NonlinearChain::cristallo().expect("valid");
    let mut config = common::cristallo_sweep(3);
    config.initial_step = 0.2;
    config.min_step = 0.2;
    config.max_step = 0.2;
    let branch = continue_branch(&chain, &config).expect("starts");
    let StopReason::LostBranch {
        omega_rad_s,
        reason,
        ..
    } = &branch.stop
    else {
        panic!("expected a lost branch, got {:?}", branch.stop);
    };
    assert!(!branch.points.is_empty() && !reason.is_empty());
    let last = branch.points.last().expect("points");
    assert_eq!(*omega_rad_s, last.omega_rad_s);
}
