//! Model updating against known damaged chains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::rel;
use dtop_calibrate::update::DampingUpdate;
use dtop_calibrate::{CalibrateError, TargetMode, UpdateParams, update_storey_stiffness};
use dtop_dynamics::{Damping, ShearBuilding, ShearBuildingConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn undamaged() -> ShearBuildingConfig {
    ShearBuildingConfig {
        floor_masses_kg: vec![5.0, 4.0, 3.0],
        storey_stiffness_n_per_m: vec![40_000.0, 30_000.0, 20_000.0],
        damping: Damping::RayleighModes {
            zeta: 0.01,
            mode_a: 1,
            mode_b: 2,
        },
        actuator: None,
    }
}

fn damaged() -> ShearBuildingConfig {
    let mut c = undamaged();
    c.storey_stiffness_n_per_m[1] *= 0.9;
    c
}

fn targets(truth: &ShearBuildingConfig, relative_std: f64, with_shapes: bool) -> Vec<TargetMode> {
    let b = ShearBuilding::new(truth.clone()).unwrap();
    let modes = b.modes();
    b.natural_frequencies_hz()
        .iter()
        .enumerate()
        .map(|(r, &f)| TargetMode {
            frequency_hz: f,
            frequency_std_hz: relative_std * f,
            damping_ratio: None,
            shape: with_shapes.then(|| modes.shapes.column(r).iter().copied().collect()),
            model_mode: None,
        })
        .collect()
}

#[test]
fn recovers_a_ten_percent_loss_of_storey_two_from_frequencies() {
    let params = UpdateParams::new(targets(&damaged(), 0.005, false));
    let result = update_storey_stiffness(&undamaged(), &params).unwrap();
    let k = &result.fitted_stiffness_n_per_m;
    // Noise-free targets and as many frequencies as storeys: the solution is exact up to the
    // convergence test; 0.5 % of the 10 % loss is the brief's bound.
    let loss = 1.0 - k[1] / 30_000.0;
    assert!((loss - 0.10).abs() < 0.005 * 0.10, "{result:#?}");
    assert!(
        rel(k[0], 40_000.0) < 1e-6 && rel(k[2], 20_000.0) < 1e-6,
        "{k:?}"
    );
    assert!(
        result.chi_square_after < 1e-12 && result.chi_square_before > 1.0,
        "{result:#?}"
    );
    for r in &result.after {
        assert!(r.error_percent.abs() < 1e-6, "{r:?}");
    }
    assert!(result.storeys_at_bounds.is_empty());
    assert_eq!(
        result.config.storey_stiffness_n_per_m,
        result.fitted_stiffness_n_per_m
    );
    assert_eq!(result.config.damping, undamaged().damping);
}

#[test]
fn recovers_the_loss_from_frequencies_and_shapes_paired_by_mac() {
    let mut t = targets(&damaged(), 0.005, true);
    // Shuffle the targets: pairing must follow the shapes, not the order given.
    t.swap(0, 2);
    let result = update_storey_stiffness(&undamaged(), &UpdateParams::new(t)).unwrap();
    assert!(
        rel(result.fitted_stiffness_n_per_m[1], 27_000.0) < 1e-6,
        "{result:#?}"
    );
    assert_eq!(result.after[0].model_mode, 3);
    assert!(result.after.iter().all(|r| r.mac.unwrap() > 1.0 - 1e-10));
}

#[test]
fn reported_std_covers_the_truth_under_noisy_targets() {
    // Seeded Monte Carlo: target frequencies with 0.3 % Gaussian noise, 400 updates. For a
    // near-linear problem the ±2σ interval holds the truth with probability 95.4 %; with 400
    // runs the binomial standard error is 1.0 %, so [91 %, 99 %] is a 4σ band.
    let truth = damaged();
    let clean = targets(&truth, 0.003, false);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let runs = 400;
    let mut covered = [0usize; 3];
    for _ in 0..runs {
        let noisy: Vec<TargetMode> = clean
            .iter()
            .map(|t| {
                let noise = Normal::new(0.0, t.frequency_std_hz)
                    .unwrap()
                    .sample(&mut rng);
                TargetMode {
                    frequency_hz: t.frequency_hz + noise,
                    ..t.clone()
                }
            })
            .collect();
        let result = update_storey_stiffness(&undamaged(), &UpdateParams::new(noisy)).unwrap();
        for (s, count) in covered.iter_mut().enumerate() {
            let err =
                (result.fitted_stiffness_n_per_m[s] - truth.storey_stiffness_n_per_m[s]).abs();
            if err <= 2.0 * result.stiffness_std_n_per_m[s] {
                *count += 1;
            }
        }
    }
    for (s, c) in covered.iter().enumerate() {
        let fraction = *c as f64 / runs as f64;
        println!("storey {}: ±2σ coverage {fraction}", s + 1);
        assert!(
            (0.91..=0.99).contains(&fraction),
            "storey {}: coverage {fraction}",
            s + 1
        );
    }
}

#[test]
fn one_frequency_cannot_fix_three_storeys_without_regularisation() {
    let one = vec![targets(&damaged(), 0.005, false)[0].clone()];
    let err = update_storey_stiffness(&undamaged(), &UpdateParams::new(one.clone())).unwrap_err();
    assert!(matches!(err, CalibrateError::NotIdentifiable(_)), "{err}");
    // With a prior the problem is well posed: the fit moves the storeys as little as the
    // prior allows and matches the one frequency.
    let params = UpdateParams {
        prior_relative_std: Some(0.1),
        ..UpdateParams::new(one)
    };
    let result = update_storey_stiffness(&undamaged(), &params).unwrap();
    assert!(
        result.after[0].error_percent.abs() < result.before[0].error_percent.abs() / 10.0,
        "{result:#?}"
    );
    // The prior bounds every std by the prior's own 10 %.
    for (sd, k) in result
        .stiffness_std_n_per_m
        .iter()
        .zip(&result.prior_stiffness_n_per_m)
    {
        assert!(*sd <= 0.1 * k * (1.0 + 1e-9), "{sd} vs {k}");
    }
}

#[test]
fn fits_rayleigh_damping_to_target_damping_ratios() {
    // Targets from a Rayleigh-damped truth: ζ_r = α/(2ω_r) + βω_r/2 holds exactly, so the
    // least-squares α, β are the truth's.
    let (alpha, beta) = (0.3, 5.0e-5);
    let truth = ShearBuildingConfig {
        damping: Damping::Rayleigh {
            alpha_per_s: alpha,
            beta_s: beta,
        },
        ..damaged()
    };
    let b = ShearBuilding::new(truth.clone()).unwrap();
    let mut t = targets(&truth, 0.005, false);
    for (target, w) in t.iter_mut().zip(b.modes().omegas_rad_s.iter()) {
        target.damping_ratio = Some(alpha / (2.0 * w) + beta * w / 2.0);
    }
    let params = UpdateParams {
        damping: DampingUpdate::Rayleigh,
        ..UpdateParams::new(t)
    };
    let result = update_storey_stiffness(&undamaged(), &params).unwrap();
    let Damping::Rayleigh {
        alpha_per_s,
        beta_s,
    } = result.config.damping
    else {
        panic!("{:?}", result.config.damping);
    };
    assert!(
        rel(alpha_per_s, alpha) < 1e-6 && rel(beta_s, beta) < 1e-6,
        "{alpha_per_s} {beta_s}"
    );
}

#[test]
fn refuses_bad_parameters_all_at_once() {
    let mut params = UpdateParams::new(vec![TargetMode {
        frequency_hz: -1.0,
        frequency_std_hz: 0.0,
        damping_ratio: Some(1.5),
        shape: Some(vec![0.0, 0.0]),
        model_mode: None,
    }]);
    params.storeys = Some(vec![0, 2, 2]);
    params.prior_relative_std = Some(f64::NAN);
    params.lower_factor = 0.0;
    params.max_iterations = 0;
    params.damping = DampingUpdate::Rayleigh;
    let Err(CalibrateError::Invalid(problems)) = update_storey_stiffness(&undamaged(), &params)
    else {
        panic!("bad parameters must be refused");
    };
    // frequency, std, damping ratio, shape length, shape zero, storey 0, storey twice, prior
    // std, bounds, max_iterations, Rayleigh with one damped target.
    assert_eq!(problems.len(), 11, "{problems:#?}");
}

#[test]
fn stops_with_a_reason_when_the_iteration_cap_is_hit() {
    let params = UpdateParams {
        max_iterations: 1,
        ..UpdateParams::new(targets(&damaged(), 1e-4, false))
    };
    let err = update_storey_stiffness(&undamaged(), &params).unwrap_err();
    assert!(
        matches!(err, CalibrateError::NotConverged { iterations: 1, .. }),
        "{err}"
    );
}

#[test]
fn the_whole_chain_ema_then_update_recovers_the_damage_from_frfs() {
    // The damaged chain's FRFs (dtop-dynamics' second-order solve), identified by the
    // rational-fraction fit, turned into targets with shapes, and the undamaged model updated
    // to them: the 10 % loss of storey 2 comes back within 0.5 % of itself.
    use dtop_calibrate::rfp::{RationalFitParams, rational_fraction_fit};
    let building = ShearBuilding::new(damaged()).unwrap();
    let frf = common::model_frf(&building, 1, &common::grid(1.0, 40.0, 0.02));
    let modes = rational_fraction_fit(&frf, &RationalFitParams::band(2.0, 35.0, 3))
        .unwrap()
        .modes;
    let targets: Vec<TargetMode> = modes
        .iter()
        .map(|m| TargetMode::from_identified(m, &frf.output_floors, 3, 1e-3))
        .collect();
    assert!(targets.iter().all(|t| t.shape.is_some()));
    let result = update_storey_stiffness(&undamaged(), &UpdateParams::new(targets)).unwrap();
    let loss = 1.0 - result.fitted_stiffness_n_per_m[1] / 30_000.0;
    assert!((loss - 0.10).abs() < 0.005 * 0.10, "{result:#?}");
    assert!(
        result.after.iter().all(|r| r.mac.unwrap() > 0.9999),
        "{:#?}",
        result.after
    );
}

#[test]
fn targets_pinned_to_model_modes_pair_correctly_when_the_lowest_mode_is_missing() {
    // Only modes 2 and 3 were identified. Paired by rank they would be taken for modes 1
    // and 2; pinned, they update storey 2 exactly.
    let all = targets(&damaged(), 0.005, false);
    let pinned: Vec<TargetMode> = all[1..]
        .iter()
        .enumerate()
        .map(|(i, t)| TargetMode {
            model_mode: Some(i + 2),
            ..t.clone()
        })
        .collect();
    let params = UpdateParams {
        storeys: Some(vec![2]),
        ..UpdateParams::new(pinned.clone())
    };
    let result = update_storey_stiffness(&undamaged(), &params).unwrap();
    assert!(
        rel(result.fitted_stiffness_n_per_m[1], 27_000.0) < 1e-6,
        "{result:#?}"
    );
    assert_eq!(
        result
            .after
            .iter()
            .map(|r| r.model_mode)
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    let by_rank: Vec<TargetMode> = pinned
        .iter()
        .map(|t| TargetMode {
            model_mode: None,
            ..t.clone()
        })
        .collect();
    let wrong = update_storey_stiffness(
        &undamaged(),
        &UpdateParams {
            storeys: Some(vec![2]),
            ..UpdateParams::new(by_rank)
        },
    );
    if let Ok(w) = wrong {
        assert!(
            rel(w.fitted_stiffness_n_per_m[1], 27_000.0) > 0.01,
            "{w:#?}"
        );
    }
    let twice: Vec<TargetMode> = pinned
        .iter()
        .map(|t| TargetMode {
            model_mode: Some(2),
            ..t.clone()
        })
        .collect();
    let Err(CalibrateError::Invalid(problems)) =
        update_storey_stiffness(&undamaged(), &UpdateParams::new(twice))
    else {
        panic!("a mode pinned twice must be refused");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
}
