//! Cross-validation metrics against closed forms and a model's own FRF.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{grid, model_frf};
use dtop_calibrate::crossval::{frac_complex, frac_magnitude, mac_matrix};
use dtop_calibrate::measured::C64;
use dtop_calibrate::{
    CalibrateError, CrossValParams, FracKind, FrfValues, IdentifiedMode, MeasuredFrf, crossvalidate,
};
use dtop_dynamics::frf::modal_damping_ratios;
use dtop_dynamics::{ShearBuilding, ShearBuildingConfig};

/// The exact modes of `building` as an EMA of a force at floor 1 would report them.
fn exact_modes(building: &ShearBuilding) -> Vec<IdentifiedMode> {
    let modes = building.modes();
    let zetas = modal_damping_ratios(modes, building.damping_matrix());
    (0..modes.len())
        .map(|r| IdentifiedMode {
            natural_frequency_hz: modes.omegas_rad_s[r] / std::f64::consts::TAU,
            natural_frequency_std_hz: None,
            damping_ratio: zetas[r],
            damping_ratio_std: None,
            modal_constants_per_kg: (0..building.floors())
                .map(|c| [modes.shapes[(c, r)] * modes.shapes[(0, r)], 0.0])
                .collect(),
        })
        .collect()
}

#[test]
fn a_model_against_its_own_frf_has_frac_one_and_mac_identity() {
    // Equal floor masses make the modes plain-orthogonal, so the MAC matrix is the identity.
    let building = ShearBuilding::southampton();
    let frf = model_frf(&building, 1, &grid(1.0, 40.0, 0.05));
    let mut modes = exact_modes(&building);
    // Given out of order: the pairing must follow the shapes.
    modes.reverse();
    let params = CrossValParams {
        f_min_hz: 2.0,
        f_max_hz: 40.0,
    };
    let result = crossvalidate(&building, &frf, &modes, &params).unwrap();
    for f in &result.frac {
        assert_eq!(f.kind, FracKind::Complex);
        // Same solver on the same lines: equal to rounding.
        assert!((f.frac - 1.0).abs() < 1e-12, "{f:?}");
    }
    for (i, row) in result.mac_matrix.iter().enumerate() {
        for (r, m) in row.iter().enumerate() {
            let want = if i + r == 2 { 1.0 } else { 0.0 };
            assert!((m - want).abs() < 1e-12, "{:?}", result.mac_matrix);
        }
    }
    for p in &result.pairs {
        assert_eq!(p.model_mode, 3 - p.identified);
        assert!(p.error_percent.abs() < 1e-12, "{p:?}");
        assert_eq!(p.identified_damping_ratio, p.model_damping_ratio);
    }
    assert!(result.summary.mean_abs_frequency_error_percent.unwrap() < 1e-12);
}

#[test]
fn mac_matrix_matches_closed_form_angles() {
    // A uniform fixed-free chain's shapes are sin((2j − 1)kπ/(2N + 1)): mutually orthogonal.
    let n = 3;
    let shape = |j: usize| -> Vec<f64> {
        (1..=n)
            .map(|k| {
                ((2 * j - 1) as f64 * k as f64 * std::f64::consts::PI / (2 * n + 1) as f64).sin()
            })
            .collect()
    };
    let closed: Vec<Vec<f64>> = (1..=n).map(shape).collect();
    let building = ShearBuilding::southampton();
    let model: Vec<Vec<f64>> = (0..n)
        .map(|r| building.modes().shapes.column(r).iter().copied().collect())
        .collect();
    let m = mac_matrix(&closed, &model);
    for i in 0..n {
        for r in 0..n {
            let want = if i == r { 1.0 } else { 0.0 };
            assert!((m[i][r] - want).abs() < 1e-12, "{m:?}");
        }
    }
    // cos²45° = 0.5 and cos²60° = 0.25.
    let m = mac_matrix(
        &[vec![1.0, 0.0]],
        &[vec![1.0, 1.0], vec![0.5, 0.75f64.sqrt()]],
    );
    assert!(
        (m[0][0] - 0.5).abs() < 1e-15 && (m[0][1] - 0.25).abs() < 1e-15,
        "{m:?}"
    );
}

#[test]
fn frac_is_one_for_proportional_frfs_and_drops_with_a_frequency_shift() {
    let a: Vec<C64> = (0..50)
        .map(|i| C64::new(i as f64, 1.0 - i as f64))
        .collect();
    let scaled: Vec<C64> = a.iter().map(|z| z * C64::new(0.0, -3.0)).collect();
    assert!((frac_complex(&a, &scaled).unwrap() - 1.0).abs() < 1e-14);
    // Orthogonal FRFs: Σ X*·A = 0.
    let x = [C64::new(1.0, 0.0), C64::new(0.0, 0.0)];
    let y = [C64::new(0.0, 0.0), C64::new(1.0, 0.0)];
    assert_eq!(frac_complex(&x, &y), Some(0.0));
    assert_eq!(frac_magnitude(&[3.0, 4.0], &[6.0, 8.0]), Some(1.0));
    // (1·1 + 1·0)² / (2·1) = 0.5.
    assert_eq!(frac_magnitude(&[1.0, 1.0], &[1.0, 0.0]), Some(0.5));
    assert_eq!(frac_complex(&x, &y[..1]), None);

    // A model 5 % stiffer everywhere moves every peak by 2.5 %: the FRAC drops well below 1.
    let building = ShearBuilding::southampton();
    let frf = model_frf(&building, 1, &grid(1.0, 40.0, 0.05));
    let mut stiffer = ShearBuildingConfig::southampton();
    for k in &mut stiffer.storey_stiffness_n_per_m {
        *k *= 1.05;
    }
    let params = CrossValParams {
        f_min_hz: 2.0,
        f_max_hz: 40.0,
    };
    let shifted = crossvalidate(
        &ShearBuilding::new(stiffer).unwrap(),
        &frf,
        &exact_modes(&building),
        &params,
    )
    .unwrap();
    assert!(shifted.summary.mean_frac < 0.5, "{:?}", shifted.frac);
    for p in &shifted.pairs {
        assert!(
            (p.error_percent - 100.0 * (1.05f64.sqrt() - 1.0)).abs() < 1e-9,
            "{p:?}"
        );
    }
}

#[test]
fn magnitude_only_data_gets_a_magnitude_frac_at_least_the_complex_one() {
    let building = ShearBuilding::southampton();
    let frf = model_frf(&building, 1, &grid(1.0, 40.0, 0.05));
    let mut other = ShearBuildingConfig::southampton();
    other.storey_stiffness_n_per_m[0] *= 0.95;
    let other = ShearBuilding::new(other).unwrap();
    let magnitude_only = MeasuredFrf {
        accelerance_m_s2_per_n: FrfValues::Magnitude {
            channels: (0..3).map(|c| frf.magnitude(c)).collect(),
        },
        ..frf.clone()
    };
    let params = CrossValParams {
        f_min_hz: 2.0,
        f_max_hz: 40.0,
    };
    let complex = crossvalidate(&other, &frf, &[], &params).unwrap();
    let magnitude = crossvalidate(&other, &magnitude_only, &[], &params).unwrap();
    assert_eq!(magnitude.summary.frac_kind, FracKind::Magnitude);
    assert!(complex.pairs.is_empty() && complex.summary.min_pair_mac.is_none());
    for (m, c) in magnitude.frac.iter().zip(&complex.frac) {
        // |Σ X*A| ≤ Σ |X||A| (triangle inequality).
        assert!(m.frac >= c.frac - 1e-15 && m.frac < 1.0, "{m:?} {c:?}");
    }
}

#[test]
fn refuses_mismatched_inputs_all_at_once() {
    let building = ShearBuilding::southampton();
    let mut frf = model_frf(&building, 1, &grid(1.0, 40.0, 0.5));
    frf.output_floors = vec![1, 2, 7];
    frf.input_floor = 5;
    let bad_mode = IdentifiedMode {
        natural_frequency_hz: 7.0,
        natural_frequency_std_hz: None,
        damping_ratio: 0.01,
        damping_ratio_std: None,
        modal_constants_per_kg: vec![[1.0, 0.0]],
    };
    let params = CrossValParams {
        f_min_hz: 0.0,
        f_max_hz: 40.0,
    };
    let Err(CalibrateError::Invalid(problems)) =
        crossvalidate(&building, &frf, &[bad_mode], &params)
    else {
        panic!("mismatches must be refused");
    };
    // Band, input floor, output floor 7, modal constant count.
    assert_eq!(problems.len(), 4, "{problems:#?}");
}
