//! Frequency responses through the public API, each checked against an independent
//! computation: the state-space form against the second-order form, both against the
//! closed-form SDOF receptance, and modal superposition against both where it is exact.

// Helpers outside #[test] bodies fail the test the same way, by panicking.
#![allow(clippy::expect_used)]

use std::f64::consts::TAU;

use dtop_dynamics::frf::{self, C64, FrequencyGrid, FrfInput, FrfKind, FrfMethod, FrfRequest};
use dtop_dynamics::{Damping, ShearBuilding, ShearBuildingConfig};

fn sdof(m: f64, c: f64, k: f64) -> ShearBuilding {
    ShearBuilding::new(ShearBuildingConfig {
        floor_masses_kg: vec![m],
        storey_stiffness_n_per_m: vec![k],
        // α·M = c for one DOF.
        damping: Damping::Rayleigh {
            alpha_per_s: c / m,
            beta_s: 0.0,
        },
        actuator: None,
    })
    .expect("valid SDOF")
}

fn relative_error(got: C64, want: C64) -> f64 {
    (got - want).norm() / want.norm()
}

const ALL_KINDS: [FrfKind; 3] = [FrfKind::Receptance, FrfKind::Mobility, FrfKind::Accelerance];

#[test]
fn sdof_frfs_match_the_closed_form_receptance_by_both_methods() {
    let (m, c, k) = (2.0, 3.0, 8000.0);
    let building = sdof(m, c, k);
    // Straddles the 10 Hz resonance, with points on and near it.
    let grid = FrequencyGrid {
        f_min_hz: 0.5,
        f_max_hz: 40.0,
        df_hz: 0.05,
    };
    for kind in ALL_KINDS {
        let request = FrfRequest {
            input: FrfInput::FloorForce { floor: 1 },
            output_floor: 1,
            kind,
        };
        for method in [FrfMethod::StateSpace, FrfMethod::SecondOrder] {
            let frf = frf::frequency_response(&building, &request, &grid, method).expect("ok");
            for (f, h) in frf.frequencies_hz.iter().zip(&frf.values) {
                let w = TAU * f;
                let receptance = C64::new(1.0, 0.0) / C64::new(k - m * w * w, c * w);
                let want = receptance
                    * match kind {
                        FrfKind::Receptance => C64::new(1.0, 0.0),
                        FrfKind::Mobility => C64::new(0.0, w),
                        FrfKind::Accelerance => C64::new(-w * w, 0.0),
                    };
                // A 2×2 complex solve with condition ~1/(2ζ) ≈ 200 at resonance: errors of
                // ~1e-14; the state-space accelerance also cancels k·x/m against f/m, which
                // costs a few more digits near resonance. 1e-9 leaves ample margin and still
                // catches any sign or factor error.
                assert!(
                    relative_error(*h, want) < 1e-9,
                    "{kind:?} {method:?} at {f} Hz: {h} vs {want}"
                );
            }
        }
    }
}

#[test]
fn state_space_and_second_order_forms_agree_for_every_pair_with_an_actuator() {
    let building = ShearBuilding::southampton_with_actuator(2).expect("valid");
    let grid = FrequencyGrid {
        f_min_hz: 1.0,
        f_max_hz: 100.0,
        df_hz: 0.37,
    };
    let inputs = [
        FrfInput::FloorForce { floor: 1 },
        FrfInput::FloorForce { floor: 2 },
        FrfInput::FloorForce { floor: 3 },
        FrfInput::ActuatorForce,
    ];
    for input in inputs {
        for output_floor in 1..=3 {
            for kind in ALL_KINDS {
                let request = FrfRequest {
                    input,
                    output_floor,
                    kind,
                };
                let ss = frf::frequency_response(&building, &request, &grid, FrfMethod::StateSpace)
                    .expect("ok");
                let so =
                    frf::frequency_response(&building, &request, &grid, FrfMethod::SecondOrder)
                        .expect("ok");
                for (a, b) in ss.values.iter().zip(&so.values) {
                    // Two different linear systems (8×8 first order, 4×4 second order) with
                    // condition numbers below ~1e4 on this grid: agreement to ~1e-12; 1e-8
                    // tolerates the accelerance cancellation and still fails on any real bug.
                    assert!(relative_error(*a, *b) < 1e-8, "{request:?}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn modal_superposition_matches_the_direct_forms_for_the_classically_damped_bare_building() {
    let building = ShearBuilding::southampton();
    let grid = FrequencyGrid::default();
    for (input_floor, output_floor) in [(1, 3), (2, 2), (3, 1)] {
        for kind in ALL_KINDS {
            let request = FrfRequest {
                input: FrfInput::FloorForce { floor: input_floor },
                output_floor,
                kind,
            };
            let modal =
                frf::frequency_response(&building, &request, &grid, FrfMethod::ModalSuperposition)
                    .expect("ok");
            let direct = frf::frequency_response(&building, &request, &grid, FrfMethod::StateSpace)
                .expect("ok");
            for (a, b) in modal.values.iter().zip(&direct.values) {
                // Rayleigh damping makes Φᵀ·C·Φ diagonal up to rounding (~1e-16 relative),
                // so the modal sum is exact; near anti-resonances |H| is small and errors are
                // relative to the largest modal term, hence 1e-7 rather than 1e-12.
                assert!(relative_error(*a, *b) < 1e-7, "{request:?}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn bare_southampton_modal_analysis_gives_0_2_percent_on_modes_1_and_2() {
    let analysis = frf::modal_analysis(&ShearBuilding::southampton()).expect("ok");
    let want_hz = [7.1137, 19.9321, 28.8028];
    for (mode, want) in analysis.modes.iter().zip(want_hz) {
        // The published figures are rounded to 4 decimals.
        assert!((mode.frequency_hz - want).abs() < 1e-4, "{mode:?}");
    }
    // Rayleigh damping matched to modes 1 and 2; the ratio comes from a 2×2 solve.
    assert!((analysis.modes[0].modal_damping_ratio - 0.002).abs() < 1e-12);
    assert!((analysis.modes[1].modal_damping_ratio - 0.002).abs() < 1e-12);
    assert!(analysis.modes[2].modal_damping_ratio > 0.002);
    // Classical damping: the coupling is rounding only, and each pole carries exactly the
    // modal ratio (ω_n = |λ|, ζ = −Re λ/|λ| for s² + 2ζω s + ω² = 0).
    assert!(analysis.modal_damping_coupling < 1e-10);
    for (mode, pole) in analysis.modes.iter().zip(&analysis.poles) {
        assert!((pole.natural_frequency_hz - mode.frequency_hz).abs() < 1e-9);
        assert!((pole.damping_ratio - mode.modal_damping_ratio).abs() < 1e-9);
    }
}

#[test]
fn mode_shapes_are_mass_normalised_with_and_without_the_actuator() {
    for building in [
        ShearBuilding::southampton(),
        ShearBuilding::southampton_with_actuator(3).expect("valid"),
    ] {
        let analysis = frf::modal_analysis(&building).expect("ok");
        let m = building.mass_matrix();
        for a in &analysis.modes {
            for b in &analysis.modes {
                let phi_a = nalgebra::DVector::from_column_slice(&a.shape);
                let phi_b = nalgebra::DVector::from_column_slice(&b.shape);
                let product = (phi_a.transpose() * m * phi_b)[(0, 0)];
                let want = if a.mode == b.mode { 1.0 } else { 0.0 };
                // Cholesky + symmetric QR are backward stable: a few ulps of O(1) entries.
                assert!(
                    (product - want).abs() < 1e-12,
                    "{} {}: {product}",
                    a.mode,
                    b.mode
                );
            }
        }
        assert_eq!(analysis.poles.len(), building.dofs());
    }
}

#[test]
fn actuator_force_frf_needs_an_actuator() {
    let request = FrfRequest {
        input: FrfInput::ActuatorForce,
        output_floor: 1,
        kind: FrfKind::Receptance,
    };
    let result = frf::frequency_response(
        &ShearBuilding::southampton(),
        &request,
        &FrequencyGrid::default(),
        FrfMethod::StateSpace,
    );
    assert!(
        matches!(result, Err(frf::FrfError::Invalid(_))),
        "{result:?}"
    );
}
