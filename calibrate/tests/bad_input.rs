//! Every bad input of the identification steps gets a clear error, never a panic or NaN.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{SdofMode, closed_form_frf, grid};
use dtop_calibrate::rfp::{RationalFitParams, rational_fraction_fit};
use dtop_calibrate::{
    CalibrateError, CircleFitParams, FrfValues, IdentifiedMode, MeasuredFrf, ModeWindow,
    PeakSearch, WindowChoice, circle_fit, find_mode_windows, model_from_modes,
};

fn one_mode() -> MeasuredFrf {
    closed_form_frf(
        &[SdofMode {
            f_hz: 8.0,
            zeta: 0.02,
            constants: vec![0.2, 0.1],
        }],
        &grid(1.0, 20.0, 0.05),
    )
}

fn given(windows: Vec<ModeWindow>) -> CircleFitParams {
    CircleFitParams {
        windows: WindowChoice::Given { windows },
        pair_angle_min_deg: 10.0,
        pair_angle_max_deg: 150.0,
        geometric_refinement: true,
        min_coherence: 0.0,
    }
}

fn invalid(result: Result<impl std::fmt::Debug, CalibrateError>) -> Vec<String> {
    match result {
        Err(CalibrateError::Invalid(problems)) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn peak_search_finds_each_resonance_within_a_line_with_its_half_power_band() {
    let modes = [
        SdofMode {
            f_hz: 5.0,
            zeta: 0.01,
            constants: vec![0.05, 0.08],
        },
        SdofMode {
            f_hz: 12.0,
            zeta: 0.02,
            constants: vec![0.12, -0.09],
        },
    ];
    let frf = closed_form_frf(&modes, &grid(1.0, 20.0, 0.01));
    let peaks = find_mode_windows(&frf, &PeakSearch::band(1.0, 20.0)).unwrap();
    assert_eq!(peaks.len(), 2, "{peaks:?}");
    for (p, m) in peaks.iter().zip(&modes) {
        // The mobility peak of a viscous mode is at f_n exactly; the grid puts it within a line.
        assert!((p.peak_hz - m.f_hz).abs() <= 0.01, "{p:?}");
        // Half-power bandwidth 2ζf_n, to interpolation over 0.01 Hz lines and the other
        // mode's small contribution: within 5 %.
        let want = 2.0 * m.zeta * m.f_hz;
        assert!(
            (p.half_power_bandwidth_hz / want - 1.0).abs() < 0.05,
            "{p:?} vs {want}"
        );
        assert!(p.window.f_lo_hz < p.peak_hz && p.window.f_hi_hz > p.peak_hz);
    }
    assert!(
        peaks[0].window.f_hi_hz <= peaks[1].window.f_lo_hz,
        "{peaks:?}"
    );
}

#[test]
fn refuses_bad_search_settings_all_at_once() {
    let search = PeakSearch {
        f_min_hz: 0.0,
        f_max_hz: -1.0,
        max_modes: 0,
        min_prominence_db: f64::NAN,
        window_half_bandwidths: 0.0,
        min_lines_per_side: 1,
    };
    assert_eq!(invalid(find_mode_windows(&one_mode(), &search)).len(), 6);
}

#[test]
fn reports_no_peak_in_a_flat_band_or_an_empty_one() {
    // A mass-like accelerance (constant) has a mobility falling as 1/ω: no local maximum.
    let flat = MeasuredFrf {
        accelerance_m_s2_per_n: FrfValues::Magnitude {
            channels: vec![vec![1.0; 40]],
        },
        frequencies_hz: grid(1.0, 40.0, 1.0),
        input_floor: 1,
        output_floors: vec![1],
        coherence: None,
    };
    assert!(matches!(
        find_mode_windows(&flat, &PeakSearch::band(1.0, 40.0)),
        Err(CalibrateError::NoPeak(_))
    ));
    assert!(matches!(
        find_mode_windows(&one_mode(), &PeakSearch::band(50.0, 60.0)),
        Err(CalibrateError::NoPeak(_))
    ));
}

#[test]
fn circle_fit_refuses_data_without_phase_and_windows_with_too_few_lines() {
    let frf = one_mode();
    let magnitude_only = MeasuredFrf {
        accelerance_m_s2_per_n: FrfValues::Magnitude {
            channels: (0..2).map(|c| frf.magnitude(c)).collect(),
        },
        ..frf.clone()
    };
    let problems = invalid(circle_fit(
        &magnitude_only,
        &given(vec![ModeWindow {
            f_lo_hz: 7.0,
            f_hi_hz: 9.0,
        }]),
    ));
    assert!(problems.iter().any(|p| p.contains("phase")), "{problems:?}");
    // Two windows of 3 lines each at 0.05 Hz: both listed.
    let narrow = given(vec![
        ModeWindow {
            f_lo_hz: 7.9,
            f_hi_hz: 8.0,
        },
        ModeWindow {
            f_lo_hz: 12.0,
            f_hi_hz: 12.1,
        },
    ]);
    assert_eq!(invalid(circle_fit(&frf, &narrow)).len(), 2);
    // Bad windows and bad pair angles together.
    let mut bad = given(vec![ModeWindow {
        f_lo_hz: 9.0,
        f_hi_hz: 7.0,
    }]);
    bad.pair_angle_max_deg = 200.0;
    assert_eq!(invalid(circle_fit(&frf, &bad)).len(), 2);
    assert_eq!(invalid(circle_fit(&frf, &given(vec![]))).len(), 1);
}

#[test]
fn non_finite_data_is_refused_before_any_fit() {
    let mut frf = one_mode();
    if let FrfValues::Complex { channels } = &mut frf.accelerance_m_s2_per_n {
        channels[1][10].re = f64::NAN;
    }
    frf.frequencies_hz[20] = frf.frequencies_hz[19];
    let problems = invalid(circle_fit(
        &frf,
        &given(vec![ModeWindow {
            f_lo_hz: 7.0,
            f_hi_hz: 9.0,
        }]),
    ));
    assert_eq!(problems.len(), 2, "{problems:?}");
    let problems = invalid(rational_fraction_fit(
        &frf,
        &RationalFitParams::band(2.0, 15.0, 1),
    ));
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn rational_fit_refuses_orders_the_data_cannot_carry() {
    let frf = one_mode();
    // 1 mode needs order ≥ 2; 0 modes is meaningless; the order cap is 60.
    let bad = RationalFitParams {
        denominator_order: Some(1),
        ..RationalFitParams::band(15.0, 5.0, 0)
    };
    assert_eq!(invalid(rational_fraction_fit(&frf, &bad)).len(), 2);
    let too_high = RationalFitParams {
        denominator_order: Some(80),
        ..RationalFitParams::band(2.0, 15.0, 1)
    };
    assert_eq!(invalid(rational_fraction_fit(&frf, &too_high)).len(), 1);
    // 0.05 Hz lines in 7.5..8.5 Hz: 21 lines against 2·(20 + 1) + 1 unknowns at order 20.
    let short = RationalFitParams {
        denominator_order: Some(20),
        ..RationalFitParams::band(7.5, 8.5, 1)
    };
    let problems = invalid(rational_fraction_fit(&frf, &short));
    assert!(problems[0].contains("lines"), "{problems:?}");
}

#[test]
fn model_from_modes_refuses_incomplete_or_unscalable_mode_sets() {
    let mode = |constants: Vec<[f64; 2]>, f: f64| IdentifiedMode {
        natural_frequency_hz: f,
        natural_frequency_std_hz: None,
        damping_ratio: 0.01,
        damping_ratio_std: None,
        modal_constants_per_kg: constants,
    };
    // Two modes for three channels, input floor not measured, one constant short, f ≤ 0.
    let problems = invalid(model_from_modes(
        &[
            mode(vec![[0.1, 0.0]; 3], 5.0),
            mode(vec![[0.1, 0.0]; 2], -1.0),
        ],
        4,
        &[1, 2, 3],
    ));
    assert_eq!(problems.len(), 4, "{problems:?}");
    // A negative driving-point constant has no real square root: not identifiable.
    let negative = [
        mode(vec![[-0.1, 0.0], [0.1, 0.0]], 5.0),
        mode(vec![[0.1, 0.0], [-0.1, 0.0]], 9.0),
    ];
    assert!(matches!(
        model_from_modes(&negative, 1, &[1, 2]),
        Err(CalibrateError::NotIdentifiable(_))
    ));
    // Parallel shapes make Φ singular.
    let parallel = [
        mode(vec![[0.1, 0.0], [0.2, 0.0]], 5.0),
        mode(vec![[0.2, 0.0], [0.4, 0.0]], 9.0),
    ];
    assert!(matches!(
        model_from_modes(&parallel, 1, &[1, 2]),
        Err(CalibrateError::NotIdentifiable(_))
    ));
}

#[test]
fn parameters_reject_unknown_json_fields() {
    let ok =
        r#"{"windows":{"kind":"search","f_min_hz":2.0,"f_max_hz":40.0},"pair_angle_min_deg":10.0}"#;
    let params: CircleFitParams = serde_json::from_str(ok).unwrap();
    assert_eq!(params.pair_angle_max_deg, 150.0);
    let typo = r#"{"windows":{"kind":"search","f_min_hz":2.0,"f_max_hz":40.0,"max_mode":3}}"#;
    assert!(serde_json::from_str::<CircleFitParams>(typo).is_err());
    let update =
        r#"{"targets":[{"frequency_hz":6.5,"frequency_std_hz":0.01}],"damping":"rayleigh"}"#;
    let parsed: dtop_calibrate::UpdateParams = serde_json::from_str(update).unwrap();
    assert_eq!(parsed.lower_factor, 0.1);
    assert!(
        serde_json::from_str::<dtop_calibrate::UpdateParams>(&update.replace("targets", "target"))
            .is_err()
    );
    let rfp = r#"{"f_min_hz":2.0,"f_max_hz":40.0,"modes":3,"order":8}"#;
    assert!(serde_json::from_str::<RationalFitParams>(rfp).is_err());
}
