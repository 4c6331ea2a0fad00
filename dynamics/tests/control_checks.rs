//! Vibration-control assessment through the public API, checked against closed forms
//! (SDOF kinetic energy, SDOF with ideal velocity feedback) and against independent routes
//! (eigenvalues vs Nyquist, state space vs second-order baselines).

// Helpers outside #[test] bodies fail the test the same way, by panicking.
#![allow(clippy::expect_used)]

use std::f64::consts::TAU;

use dtop_dynamics::control::analysis::{
    close_loop, closed_loop_spectra, loop_transfer, max_real_part, second_order_energy_spectrum,
};
use dtop_dynamics::control::laws::dvf_controller;
use dtop_dynamics::control::{
    ActuatedPlant, ActuatorElectrics, Compensator, ControlLaw, ControlStudy, LqgWeights, TmdTuning,
};
use dtop_dynamics::frf::{C64, eigenvalues, omega};
use dtop_dynamics::{ControlError, Damping, InertialActuator, ShearBuilding, ShearBuildingConfig};
use nalgebra::{DMatrix, DVector};

fn sdof(m: f64, c: f64, k: f64) -> ShearBuilding {
    ShearBuilding::new(ShearBuildingConfig {
        floor_masses_kg: vec![m],
        storey_stiffness_n_per_m: vec![k],
        damping: Damping::Rayleigh {
            alpha_per_s: c / m,
            beta_s: 0.0,
        },
        actuator: None,
    })
    .expect("valid SDOF")
}

fn dvf(gain_a_per_m_s: f64) -> ControlLaw {
    ControlLaw::Dvf {
        gain_a_per_m_s,
        compensator: Compensator::unity(),
    }
}

/// The Southampton reference study on a 0.05 Hz grid: these tests check properties that do
/// not depend on the grid, and the unoptimised test build is 5× faster on it.
fn study(floor: usize) -> ControlStudy {
    let mut study = ControlStudy::southampton(floor);
    study.grid.df_hz = 0.05;
    study
}

fn critical_gain(floor: usize) -> f64 {
    ControlStudy::southampton(floor)
        .dvf_critical_gain(&Compensator::unity())
        .expect("computable")
        .expect("an inertial actuator has a finite critical gain")
        .gain_a_per_m_s
}

#[test]
fn sdof_kinetic_energy_and_current_match_their_closed_forms_with_and_without_feedback() {
    let (m, c, k) = (2.0, 3.0, 8000.0);
    let electrics = ActuatorElectrics::default();
    let bl = electrics.force_factor_n_per_a;
    let plant = ActuatedPlant::ideal_force(&sdof(m, c, k), 1, electrics).expect("valid");
    let omegas: Vec<f64> = (1..=400).map(|i| omega(0.1 * i as f64)).collect();
    for h in [0.0, 0.7, 5.0] {
        let controller = dvf_controller(h, &Compensator::unity()).expect("valid");
        let closed = close_loop(&plant, Some(&controller), 1.0, 1).expect("closes");
        let (energy, current) = closed_loop_spectra(&closed, &[m], &omegas).expect("ok");
        let g = bl * h;
        for ((w, e), i) in omegas.iter().zip(&energy).zip(&current) {
            let x = C64::new(1.0, 0.0) / C64::new(k - m * w * w, (c + g) * w);
            let v = x * C64::new(0.0, *w);
            // Time-averaged KE of a harmonic velocity amplitude V: ¼·m·|V|².
            let want_energy = 0.25 * m * v.norm_sqr();
            let want_current = v * h;
            // A 2×2 complex solve per point: ~1e-14 relative; 1e-10 catches any factor error.
            assert!(
                ((e - want_energy) / want_energy).abs() < 1e-10,
                "h {h} ω {w}: {e}"
            );
            if h > 0.0 {
                assert!(
                    (i - want_current).norm() < 1e-10 * want_current.norm(),
                    "{i}"
                );
            }
        }
        if h == 0.0 {
            // The second-order route, independent of the state space, gives the same KE.
            let b = sdof(m, c, k);
            let load = DVector::from_element(1, 1.0);
            let direct = second_order_energy_spectrum(
                b.mass_matrix(),
                b.damping_matrix(),
                b.stiffness_matrix(),
                &load,
                &[m],
                &omegas,
            )
            .expect("ok");
            for (a, b) in energy.iter().zip(&direct) {
                assert!(((a - b) / b).abs() < 1e-10);
            }
        }
    }
}

#[test]
fn sdof_with_ideal_velocity_feedback_has_damping_ratio_c_plus_g_over_2_sqrt_km() {
    let (m, c, k) = (2.0, 3.0, 8000.0);
    let electrics = ActuatorElectrics::default();
    let plant = ActuatedPlant::ideal_force(&sdof(m, c, k), 1, electrics).expect("valid");
    for h in [0.0, 0.5, 3.0, 20.0] {
        let g = electrics.force_factor_n_per_a * h;
        let want = (c + g) / (2.0 * (k * m).sqrt());
        assert!(want < 1.0, "test case must stay underdamped");
        let controller = dvf_controller(h, &Compensator::unity()).expect("valid");
        let closed = close_loop(&plant, Some(&controller), 1.0, 1).expect("closes");
        let poles = eigenvalues(&closed.a).expect("eig");
        assert_eq!(poles.len(), 2);
        for lambda in poles {
            let zeta = -lambda.re / lambda.norm();
            // Eigenvalues of a 2×2 matrix from Francis QR: a few ulps of ‖A‖ ≈ 4000, so
            // ~1e-12 absolute on Re λ ≈ −ζ·63; 1e-10 on ζ is comfortable.
            assert!((zeta - want).abs() < 1e-10, "h {h}: ζ {zeta} vs {want}");
            assert!((lambda.norm() - (k / m).sqrt()).abs() < 1e-9);
        }
    }
    // Collocated velocity feedback through an ideal force source never destabilises.
    let unit = dvf_controller(1.0, &Compensator::unity()).expect("valid");
    assert!(max_real_part(&plant, &unit, 1e6).expect("eig") < 0.0);
    let critical =
        dtop_dynamics::control::dvf_critical_gain(&plant, &Compensator::unity()).expect("ok");
    assert!(critical.is_none(), "{critical:?}");
}

#[test]
fn dvf_critical_gain_from_eigenvalues_agrees_with_the_nyquist_crossing_on_every_floor() {
    for floor in 1..=3 {
        let study = ControlStudy::southampton(floor);
        let critical = study
            .dvf_critical_gain(&Compensator::unity())
            .expect("ok")
            .expect("finite");
        // The brief asks for 1e-3; both routes are refined to ~1e-12, so a disagreement
        // above 1e-3 means the two definitions measure different things (a real bug).
        assert!(critical.relative_difference < 1e-3, "{critical:?}");
        let h = critical.gain_a_per_m_s;
        // Independent of the bisection: just below the critical gain every pole is in the
        // left half plane, just above one is not.
        let building = ShearBuilding::new(study.building.clone()).expect("valid");
        let plant = ActuatedPlant::inertial(&building, study.electrics).expect("valid");
        let unit = dvf_controller(1.0, &Compensator::unity()).expect("valid");
        assert!(max_real_part(&plant, &unit, 0.999 * h).expect("eig") < 0.0);
        assert!(max_real_part(&plant, &unit, 1.001 * h).expect("eig") > 0.0);
        // At the crossover, h·L(jω) = −1: the closed loop has a pole on the imaginary axis.
        let l = loop_transfer(&plant, &unit, omega(critical.crossover_hz)).expect("ok");
        assert!((l * h + 1.0).norm() < 1e-6, "h·L = {}", l * h);
        assert!(
            (critical.feedback_gain_n_s_per_m - h * study.electrics.force_factor_n_per_a).abs()
                < 1e-12
        );
    }
}

#[test]
fn dvf_feeds_back_the_absolute_velocity_of_the_host_floor_and_nothing_else() {
    let h = 0.8;
    for floor in 1..=3 {
        let building = ShearBuilding::southampton_with_actuator(floor).expect("valid");
        let plant = ActuatedPlant::inertial(&building, ActuatorElectrics::default()).expect("ok");
        let controller = dvf_controller(h, &Compensator::unity()).expect("valid");
        let closed = close_loop(&plant, Some(&controller), 1.0, 1).expect("closes");
        let dofs = building.dofs();
        // The closed loop is A + b_i·h·e_vᵀ where e_v picks the host floor's velocity state
        // (not the proof mass's, not a relative velocity, not a displacement).
        let mut selector = DMatrix::zeros(1, plant.n_states());
        selector[(0, dofs + floor - 1)] = 1.0;
        let want = &plant.a + &plant.b_current * h * &selector;
        assert_eq!(closed.a.shape(), want.shape());
        // Same arithmetic in a different order: a few ulps of entries up to ~2e4.
        assert!((&closed.a - &want).amax() < 1e-9, "{}", &closed.a - &want);
    }
}

#[test]
fn dvf_at_half_the_critical_gain_is_stable_and_reduces_energy_around_mode_1() {
    for floor in 1..=3 {
        let h = 0.5 * critical_gain(floor);
        let report = study(floor).run(&dvf(h)).expect("runs");
        assert!(report.stability.stable, "floor {floor}");
        let ke = &report.kinetic_energy;
        // Mode band 1 is 1 Hz … √(f₁·f₂); the active loop must add to the passive absorber.
        assert!(ke.reduction_db_vs_passive.mode_bands_db[0] > 0.0, "{ke:?}");
        assert!(ke.reduction_db_vs_locked.mode_bands_db[0] > 10.0, "{ke:?}");
        assert!(ke.reduction_db_vs_locked.full_band_db > 0.0);
        let open_loop = report.open_loop.as_ref().expect("active law");
        let margin = open_loop.gain_margin.expect("finite");
        // Half the critical gain is a gain margin of exactly 2 (6.02 dB), both ways.
        assert!((margin - 2.0).abs() < 1e-6, "{margin}");
        let by_eigen = open_loop.gain_margin_from_eigenvalues.expect("finite");
        assert!((by_eigen - 2.0).abs() < 1e-6, "{by_eigen}");
        assert!(report.effort.force_rms_n_per_n > 0.0);
    }
}

#[test]
fn dvf_at_h_10_is_above_critical_everywhere_and_reported_unstable() {
    for floor in 1..=3 {
        let report = study(floor).run(&dvf(10.0)).expect("runs");
        assert!(!report.stability.stable, "floor {floor}");
        assert!(report.stability.max_real_part_per_s > 0.0);
        let open_loop = report.open_loop.as_ref().expect("active law");
        assert_eq!(open_loop.gain_margin, None);
        let fraction = report
            .dvf
            .and_then(|d| d.fraction_of_critical)
            .expect("finite");
        assert!(fraction > 1.0);
    }
}

#[test]
fn lqg_closed_loop_is_stable_and_its_gain_margins_agree() {
    for floor in 1..=3 {
        let report = study(floor)
            .run(&ControlLaw::Lqg {
                weights: LqgWeights::default(),
            })
            .expect("runs");
        assert!(report.stability.stable, "floor {floor}");
        let ke = &report.kinetic_energy;
        assert!(ke.reduction_db_vs_passive.full_band_db > 0.0, "{ke:?}");
        let open_loop = report.open_loop.as_ref().expect("active law");
        if let (Some(nyquist), Some(eigen)) = (
            open_loop.gain_margin,
            open_loop.gain_margin_from_eigenvalues,
        ) {
            // Both refined to ~1e-12; 1e-6 allows for the eigen-solver near the boundary.
            assert!(
                ((nyquist - eigen) / eigen).abs() < 1e-6,
                "{nyquist} vs {eigen}"
            );
            assert!(nyquist > 1.0);
        } else {
            assert_eq!(
                open_loop.gain_margin,
                open_loop.gain_margin_from_eigenvalues
            );
        }
    }
}

#[test]
fn passive_law_equals_the_passive_baseline_computed_the_other_way() {
    let report = study(2)
        .run(&ControlLaw::Tmd {
            tuning: TmdTuning::AsBuilt,
        })
        .expect("runs");
    let ke = &report.kinetic_energy;
    // State space (law) against second-order form (baseline): the same physics, so 0 dB
    // to within rounding of two solvers (~1e-12 relative → ~1e-11 dB).
    assert!(
        ke.reduction_db_vs_passive.full_band_db.abs() < 1e-9,
        "{ke:?}"
    );
    for band in &ke.reduction_db_vs_passive.mode_bands_db {
        assert!(band.abs() < 1e-9);
    }
    assert_eq!(report.effort.force_rms_n_per_n, 0.0);
    assert!(report.open_loop.is_none());
    assert!(report.stability.stable);
}

#[test]
fn den_hartog_tuning_beats_the_as_built_absorber_around_mode_1() {
    // The default suspension (6.5 Hz, ζ ≈ 6 %) is near but not at Den Hartog's optimum for
    // mode 1, so re-tuning must lower the mode-1 band energy on every floor.
    for floor in 1..=3 {
        let study = study(floor);
        let as_built = study
            .run(&ControlLaw::Tmd {
                tuning: TmdTuning::AsBuilt,
            })
            .expect("runs");
        let tuned = study
            .run(&ControlLaw::Tmd {
                tuning: TmdTuning::DenHartog { mode: 1 },
            })
            .expect("runs");
        let band = |r: &dtop_dynamics::ControlReport| {
            r.kinetic_energy.controlled.mode_bands_j_hz_per_n2[0]
        };
        assert!(band(&tuned) < band(&as_built), "floor {floor}");
        let design = tuned.tmd.and_then(|t| t.den_hartog).expect("tuned");
        assert!(design.frequency_ratio < 1.0 && design.damping_ratio > 0.0);
    }
}

#[test]
fn locked_and_bare_baselines_match_independently_built_buildings() {
    // Stiffness-proportional damping C = β·K does not depend on the masses, so a building
    // with the actuator's whole mass added to floor 2 has exactly the locked C.
    let beta_s = 1e-4;
    let masses = vec![5.0, 4.0, 3.0];
    let stiffness = vec![40_000.0, 30_000.0, 20_000.0];
    let actuator = InertialActuator {
        floor: 2,
        ..InertialActuator::default()
    };
    let config = ShearBuildingConfig {
        floor_masses_kg: masses.clone(),
        storey_stiffness_n_per_m: stiffness.clone(),
        damping: Damping::Rayleigh {
            alpha_per_s: 0.0,
            beta_s,
        },
        actuator: Some(actuator),
    };
    let study = ControlStudy {
        building: config,
        ..study(2)
    };
    let report = study
        .run(&ControlLaw::Tmd {
            tuning: TmdTuning::AsBuilt,
        })
        .expect("runs");
    let spectra = report.spectra.expect("library always fills spectra");
    let omegas: Vec<f64> = spectra.frequency_hz.iter().map(|f| TAU * f).collect();
    let mut heavier = masses.clone();
    heavier[1] += actuator.base_mass_kg + actuator.proof_mass_kg;
    let mut load = DVector::zeros(3);
    load[0] = 1.0;
    for (floor_masses, got) in [
        (heavier, &spectra.locked_kinetic_energy_j_per_n2),
        (masses.clone(), &spectra.bare_kinetic_energy_j_per_n2),
    ] {
        let building = ShearBuilding::new(ShearBuildingConfig {
            floor_masses_kg: floor_masses,
            storey_stiffness_n_per_m: stiffness.clone(),
            damping: Damping::Rayleigh {
                alpha_per_s: 0.0,
                beta_s,
            },
            actuator: None,
        })
        .expect("valid");
        let want = second_order_energy_spectrum(
            building.mass_matrix(),
            building.damping_matrix(),
            building.stiffness_matrix(),
            &load,
            &masses,
            &omegas,
        )
        .expect("ok");
        for (g, w) in got.iter().zip(&want) {
            // Tᵀ·M·T against a directly assembled M: same numbers up to rounding.
            assert!(((g - w) / w).abs() < 1e-9, "{g} vs {w}");
        }
    }
}

#[test]
fn mode_band_integrals_add_up_to_the_full_band() {
    let report = study(3).run(&dvf(0.5)).expect("runs");
    let ke = &report.kinetic_energy;
    assert_eq!(ke.mode_band_edges_hz.len(), 4);
    for integrals in [&ke.controlled, &ke.locked, &ke.passive, &ke.bare] {
        let sum: f64 = integrals.mode_bands_j_hz_per_n2.iter().sum();
        // The bands partition the sweep exactly; only summation order differs.
        assert!(((sum - integrals.full_band_j_hz_per_n2) / sum).abs() < 1e-12);
    }
}

#[test]
fn invalid_study_and_law_report_every_problem_at_once() {
    let mut study = ControlStudy::southampton(2);
    study.excitation_floor = 7;
    study.grid.df_hz = -1.0;
    study.electrics.force_factor_n_per_a = 0.0;
    let law = ControlLaw::Dvf {
        gain_a_per_m_s: -1.0,
        compensator: Compensator::unity(),
    };
    let Err(ControlError::Invalid(problems)) = study.run(&law) else {
        panic!("an invalid study ran");
    };
    assert_eq!(problems.len(), 4, "{problems:#?}");
}
