//! The single-DOF Duffing oscillator m·ẍ + c·ẋ + k·x + k₃·x³ = F·cos ωt against its
//! closed-form first-order (one-harmonic) relations, against a long direct time
//! integration, and its stability on the three-valued part of the response curve; and an
//! asymmetric (quadratic and quintic) variant against time integration.

// Test helpers outside #[test] functions fail loudly by design.
#![allow(clippy::expect_used)]

use crate::common;

use dtop_dynamics::{Damping, ShearBuildingConfig};
use dtop_nonlinear::{
    Branch, ContinuationConfig, NonlinearChain, NonlinearChainConfig, PolynomialSpring, SpringLink,
    StopReason, Sweep, continue_branch, floquet_multipliers, periodic_response_near,
};
use nalgebra::DVector;

const M: f64 = 1.0;
const K: f64 = 1.0;
const C: f64 = 0.05;
const K3: f64 = 0.5;
const F: f64 = 0.1;

fn duffing() -> NonlinearChain {
    NonlinearChain::new(NonlinearChainConfig {
        building: ShearBuildingConfig {
            floor_masses_kg: vec![M],
            storey_stiffness_n_per_m: vec![K],
            damping: Damping::StoreyDampers {
                storey_damping_n_s_per_m: vec![C],
            },
            actuator: None,
        },
        springs: vec![PolynomialSpring {
            link: SpringLink::Storey { storey: 1 },
            quadratic_n_per_m2: 0.0,
            cubic_n_per_m3: K3,
            quintic_n_per_m5: 0.0,
        }],
        forced_floor: 1,
    })
    .expect("valid Duffing oscillator")
}

fn frequency_branch(harmonics: usize) -> Branch {
    let sweep = Sweep::Frequency {
        start_rad_s: 0.5,
        end_rad_s: 2.5,
        forcing_n: F,
    };
    continue_branch(&duffing(), &ContinuationConfig::new(sweep, harmonics)).expect("continues")
}

/// [(k − mω² + ¾k₃A²)² + (cω)²]·A² − F², divided by F².
fn first_order_defect(omega: f64, a: f64, forcing: f64) -> f64 {
    let detuning = K - M * omega * omega + 0.75 * K3 * a * a;
    ((detuning * detuning + (C * omega).powi(2)) * a * a - forcing * forcing) / (forcing * forcing)
}

#[test]
fn one_harmonic_branch_satisfies_the_first_order_amplitude_frequency_relation_everywhere() {
    let branch = frequency_branch(1);
    assert_eq!(branch.stop, StopReason::ReachedEnd);
    assert!(branch.points.len() > 20);
    for p in &branch.points {
        // One harmonic with an exact (alias-free) DFT makes the balance equations the
        // textbook relation itself; Newton stops at a residual of 1e-10·F, so the relation
        // holds to ~1e-10 relative. 1e-9 leaves margin for rounding in A² and A⁴.
        let defect = first_order_defect(p.omega_rad_s, p.amplitude_m[0], F);
        assert!(
            defect.abs() < 1e-9,
            "ω = {}: defect {defect}",
            p.omega_rad_s
        );
        assert!(p.harmonics[0].mean_m.abs() < 1e-12);
    }
    let last = branch.points.last().expect("points");
    assert!((last.omega_rad_s - 2.5).abs() < 1e-15);
}

/// The closed-form folds: on G(A, ω) = 0, dω/dA = 0 means ∂G/∂A = 0. With D = k − mω² +
/// ¾k₃A², eliminating (D² + c²ω²) = F²/A² gives D = −2F²/(3k₃A⁴), and the folds are the
/// roots of h(A) = D² + c²·(k + ¾k₃A² − D)/m − F²/A², found by scanning and bisection.
fn closed_form_folds_rad_s() -> Vec<f64> {
    let d_of = |a: f64| -2.0 * F * F / (3.0 * K3 * a.powi(4));
    let u_of = |a: f64| (K + 0.75 * K3 * a * a - d_of(a)) / M;
    let h = |a: f64| d_of(a).powi(2) + C * C * u_of(a) - F * F / (a * a);
    let grid: Vec<f64> = (1..=4000).map(|i| i as f64 * 1e-3).collect();
    let mut folds = Vec::new();
    for pair in grid.windows(2) {
        let (mut lo, mut hi) = (pair[0], pair[1]);
        if h(lo) * h(hi) > 0.0 {
            continue;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if h(lo) * h(mid) <= 0.0 {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        folds.push(u_of(0.5 * (lo + hi)).sqrt());
    }
    folds
}

#[test]
fn one_harmonic_folds_sit_where_the_closed_form_fold_condition_holds() {
    let mut want = closed_form_folds_rad_s();
    assert_eq!(
        want.len(),
        2,
        "the test's parameters give two folds: {want:?}"
    );
    want.sort_by(f64::total_cmp);
    let branch = frequency_branch(1);
    let mut got: Vec<f64> = branch.folds.iter().map(|f| f.omega_rad_s).collect();
    assert!(branch.folds.iter().all(|f| f.located));
    assert_eq!(got.len(), 2, "{:?}", branch.folds);
    // Along the branch the jump-down fold (higher ω) comes first.
    assert!(got[0] > got[1]);
    got.sort_by(f64::total_cmp);
    for (g, w) in got.iter().zip(&want) {
        // The fold is located where the tangent's ω component vanishes, to ~1e-13 in the
        // arclength; ω is quadratic in the arclength there, so ω is far more accurate.
        // The closed form is bisected to rounding. 1e-9 relative covers both.
        assert!(
            (g - w).abs() < 1e-9 * w,
            "fold at {g} rad/s, closed form {w}"
        );
    }
    for fold in &branch.folds {
        assert!(first_order_defect(fold.omega_rad_s, fold.amplitude_m[0], F).abs() < 1e-9);
    }
}

#[test]
fn phase_resonance_points_of_an_amplitude_sweep_lie_on_the_backbone() {
    let chain = duffing();
    // Frequencies where the amplitude branch from F = 0 reaches phase resonance within
    // 0.3 N (at 1.5 rad/s the resonant branch is not connected to F = 0 in this range).
    for omega in [1.1, 1.2] {
        let sweep = Sweep::Amplitude {
            start_n: 0.0,
            end_n: 0.3,
            omega_rad_s: omega,
        };
        let branch =
            continue_branch(&chain, &ContinuationConfig::new(sweep, 1)).expect("continues");
        assert_eq!(branch.stop, StopReason::ReachedEnd);
        for p in &branch.points {
            let defect = first_order_defect(omega, p.amplitude_m[0], p.forcing_n.max(1e-300));
            // At F = 0 the relation is 0 = 0; elsewhere as in the frequency test.
            assert!(p.forcing_n == 0.0 || defect.abs() < 1e-9, "{defect}");
        }
        // Phase resonance: the cosine (in-phase) coefficient changes sign. Refine by the
        // secant method on F with single-point solves.
        let cos1 = |p: &dtop_nonlinear::PeriodicResponse| p.harmonics[0].cos_m[0];
        let i = branch
            .points
            .windows(2)
            .position(|w| cos1(&w[0]) * cos1(&w[1]) < 0.0)
            .expect("the sweep passes phase resonance");
        let (mut p0, mut p1) = (branch.points[i].clone(), branch.points[i + 1].clone());
        for _ in 0..50 {
            let (g0, g1) = (cos1(&p0), cos1(&p1));
            if g1 == 0.0 || (p1.forcing_n - p0.forcing_n).abs() < 1e-15 {
                break;
            }
            let f = p1.forcing_n - g1 * (p1.forcing_n - p0.forcing_n) / (g1 - g0);
            let next = periodic_response_near(&chain, &p1, omega, f).expect("solves");
            (p0, p1) = (p1, next);
        }
        let a = p1.amplitude_m[0];
        // Backbone of the undamped free oscillation: ω² = (k + ¾k₃A²)/m.
        let backbone = ((K + 0.75 * K3 * a * a) / M).sqrt();
        assert!(
            (backbone - omega).abs() < 1e-9 * omega,
            "A = {a}: backbone {backbone} rad/s against ω = {omega}"
        );
        // At phase resonance the damper alone balances the force: c·ω·A = F.
        assert!((C * omega * a - p1.forcing_n).abs() < 1e-9 * p1.forcing_n);
    }
}

#[test]
fn the_middle_branch_is_unstable_and_stability_changes_only_at_the_folds() {
    let chain = duffing();
    let branch = frequency_branch(7);
    assert_eq!(branch.folds.len(), 2, "{:?}", branch.folds);
    let (first, second) = (branch.folds[0].after_point, branch.folds[1].after_point);
    for (i, p) in branch.points.iter().enumerate() {
        let middle = i > first && i <= second;
        assert_eq!(
            p.stable,
            Some(!middle),
            "point {i} at ω = {} (folds after {first} and {second}), max |μ| = {:?}",
            p.omega_rad_s,
            p.max_floquet_modulus
        );
        if middle {
            // A saddle: exactly one real multiplier above 1.
            let mu = floquet_multipliers(&chain, &p.harmonics, p.omega_rad_s).expect("fine");
            let outside: Vec<_> = mu.iter().filter(|z| z.norm() > 1.0).collect();
            assert_eq!(outside.len(), 1, "{mu:?}");
            assert!(outside[0].re > 1.0 && outside[0].im.abs() < 1e-9, "{mu:?}");
        }
    }
    // The unstable middle branch lies between the two fold frequencies.
    let (hi, lo) = (branch.folds[0].omega_rad_s, branch.folds[1].omega_rad_s);
    assert!(
        branch.points[first + 1..=second]
            .iter()
            .all(|p| (lo..=hi).contains(&p.omega_rad_s))
    );
}

/// First-harmonic amplitude of a long RK4 run started near the orbit, settled.
fn integrated_amplitude(chain: &NonlinearChain, p: &dtop_nonlinear::PeriodicResponse) -> f64 {
    let cubic = |x: &[f64], f: &mut [f64]| f[0] = K3 * x[0].powi(3);
    let reference = common::Reference {
        mass: chain.mass().clone(),
        damping: chain.damping().clone(),
        stiffness: chain.stiffness().clone(),
        spring_force: &cubic,
        forced_dof: 0,
    };
    // Start 2 % off the balanced orbit's state at t = 0, inside its basin.
    let h = &p.harmonics[0];
    let x0 = 0.98 * h.value_m(0.0);
    let v0 = 0.98
        * p.omega_rad_s
        * h.sin_m
            .iter()
            .enumerate()
            .map(|(i, b)| (i + 1) as f64 * b)
            .sum::<f64>();
    let steady = reference.steady_state(
        DVector::from_element(1, x0),
        DVector::from_element(1, v0),
        p.omega_rad_s,
        F,
        2000,
        10,
        1e-12,
        3000,
    );
    assert!(steady.settled, "ran {} periods", steady.periods);
    steady.amplitude[0]
}

#[test]
fn several_harmonics_match_a_long_time_integration_at_stable_points() {
    let chain = duffing();
    let branch = frequency_branch(7);
    let (first, second) = (branch.folds[0].after_point, branch.folds[1].after_point);
    // Inside the three-valued region: the resonant (upper) point just before the first
    // fold and a non-resonant (lower) point just after the second; plus one point far
    // below resonance.
    let upper = &branch.points[first - 2];
    let lower = &branch.points[second + 2];
    let far = &branch.points[1];
    assert!([upper, lower, far].iter().all(|p| p.stable == Some(true)));
    assert!(upper.amplitude_m[0] > 3.0 * lower.amplitude_m[0]);
    for p in [upper, lower, far] {
        let want = integrated_amplitude(&chain, p);
        // RK4 at 2000 steps per period errs by ~(2π/2000)⁴ ≈ 1e-10; the settling criterion
        // (1e-12 change per 10 periods, multipliers below 0.9) leaves ~1e-11; truncation
        // after 7 harmonics of a response whose third harmonic is ~1 % of the first errs
        // by far less than 1e-6. 1e-4 is the acceptance bound.
        let got = p.amplitude_m[0];
        assert!(
            (got - want).abs() < 1e-4 * want,
            "ω = {}: balance {got} m, integration {want} m",
            p.omega_rad_s
        );
    }
}

#[test]
fn an_asymmetric_spring_with_quadratic_and_quintic_terms_matches_time_integration() {
    // k₂ = 0.2 and k₅ = 0.1 added: the response gets a mean offset and even harmonics.
    let (k2, k5) = (0.2, 0.1);
    let mut config = duffing().config().clone();
    config.springs[0].quadratic_n_per_m2 = k2;
    config.springs[0].quintic_n_per_m5 = k5;
    let chain = NonlinearChain::new(config).expect("valid");
    let sweep = Sweep::Frequency {
        start_rad_s: 0.5,
        end_rad_s: 2.5,
        forcing_n: 0.05,
    };
    let branch = continue_branch(&chain, &ContinuationConfig::new(sweep, 9)).expect("continues");
    let p = branch
        .points
        .iter()
        .filter(|p| p.stable == Some(true))
        .max_by(|a, b| a.amplitude_m[0].total_cmp(&b.amplitude_m[0]))
        .expect("stable points");
    assert!(p.harmonics[0].mean_m.abs() > 1e-3 * p.amplitude_m[0]);
    assert!(p.harmonics[0].amplitude_m(2) > 1e-3 * p.amplitude_m[0]);
    let springs = |x: &[f64], f: &mut [f64]| {
        f[0] = k2 * x[0].powi(2) + K3 * x[0].powi(3) + k5 * x[0].powi(5);
    };
    let reference = common::Reference {
        mass: chain.mass().clone(),
        damping: chain.damping().clone(),
        stiffness: chain.stiffness().clone(),
        spring_force: &springs,
        forced_dof: 0,
    };
    let h = &p.harmonics[0];
    let v0 = p.omega_rad_s
        * h.sin_m
            .iter()
            .enumerate()
            .map(|(i, b)| (i + 1) as f64 * b)
            .sum::<f64>();
    let steady = reference.steady_state(
        DVector::from_element(1, 0.98 * h.value_m(0.0)),
        DVector::from_element(1, 0.98 * v0),
        p.omega_rad_s,
        0.05,
        2000,
        10,
        1e-12,
        3000,
    );
    assert!(steady.settled);
    // As for the cubic oscillator: RK4 and settling err ~1e-10; 9 harmonics of a response
    // whose harmonics fall by ~10× each leave far less than 1e-6 (measured 3e-12, at
    // A = 0.87 m with a mean of −0.048 m and a second harmonic of 0.012 m).
    let want = steady.amplitude[0];
    assert!(
        (p.amplitude_m[0] - want).abs() < 1e-4 * want,
        "ω = {}: balance {} m, integration {want} m",
        p.omega_rad_s,
        p.amplitude_m[0]
    );
}
