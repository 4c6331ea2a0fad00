//! The measured Southampton FRFs of DTOP-Cristallo (`shared/data/cristallo/`): parsing, EMA,
//! updating the Southampton model to the identified modes, and FRAC before and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::cristallo_file;
use dtop_calibrate::crossval::CrossValParams;
use dtop_calibrate::rfp::{RationalFitParams, rational_fraction_fit};
use dtop_calibrate::update::DampingUpdate;
use dtop_calibrate::{
    AccelerationUnit, CircleFitParams, IdentifiedMode, MeasuredFrf, PeakSearch, TargetMode,
    UpdateParams, WindowChoice, circle_fit, crossvalidate, model_from_modes,
    parse_complex_accelerance, parse_db_accelerance, update_storey_stiffness,
};
use dtop_dynamics::{ShearBuilding, ShearBuildingConfig};

/// Peaks of `ExpDataSo.csv` (the same measurement) in 2–40 Hz, TOOLS.md § 6.2.
const MEASURED_PEAKS_HZ: [f64; 3] = [6.5, 17.469, 26.5];

const G: AccelerationUnit = AccelerationUnit::StandardGravity;

fn experimental() -> MeasuredFrf {
    parse_complex_accelerance(&cristallo_file("Experimental.csv"), G).unwrap()
}

fn circle_modes(frf: &MeasuredFrf) -> Vec<IdentifiedMode> {
    let params = CircleFitParams {
        windows: WindowChoice::Search(PeakSearch::band(2.0, 40.0)),
        pair_angle_min_deg: 10.0,
        pair_angle_max_deg: 150.0,
        geometric_refinement: true,
        min_coherence: 0.0,
    };
    circle_fit(frf, &params)
        .unwrap()
        .modes
        .into_iter()
        .map(|m| m.mode)
        .collect()
}

#[test]
fn parses_every_line_of_the_three_complex_files_and_the_two_db_files() {
    let frf = experimental();
    // 0.03125 → 128 Hz in steps of 0.03125 is 4096 lines. TOOLS.md § 8.1 says 4095 rows:
    // the file's last line has no newline, so `wc -l` counts one less.
    assert_eq!(frf.frequencies_hz.len(), 4096);
    assert_eq!(frf.frequencies_hz[0], 0.03125);
    assert_eq!(frf.frequencies_hz[4095], 128.0);
    assert_eq!(frf.channels(), 3);
    for name in ["test_2.csv", "test_3.csv"] {
        let other = parse_complex_accelerance(&cristallo_file(name), G).unwrap();
        assert_eq!(other.frequencies_hz.len(), 4096, "{name}");
    }
    let so = parse_db_accelerance(&cristallo_file("ExpDataSo.csv"), G).unwrap();
    assert_eq!((so.frequencies_hz.len(), so.channels()), (4097, 3));
    let sw = parse_db_accelerance(&cristallo_file("ExpDataSw.csv"), G).unwrap();
    assert_eq!((sw.frequencies_hz.len(), sw.channels()), (801, 3));
    // ExpDataSo.csv is 20·log10|H| of Experimental.csv in dB re 1 g/N, printed to 0.001 dB
    // (±0.0005 dB = ±5.8e-5 relative): this pins both units and both parsers.
    for c in 0..3 {
        let complex = frf.magnitude(c);
        let db = so.magnitude(c);
        for (i, m) in complex.iter().enumerate() {
            // ExpDataSo starts at 0 Hz, one line earlier.
            assert!(
                (db[i + 1] / m - 1.0).abs() < 6e-5,
                "channel {c} line {i}: {} vs {m}",
                db[i + 1]
            );
        }
    }
}

#[test]
fn ema_finds_the_three_southampton_modes_by_both_methods() {
    let frf = experimental();
    let circle = circle_modes(&frf);
    let rfp = rational_fraction_fit(&frf, &RationalFitParams::band(3.0, 32.0, 3)).unwrap();
    for (name, modes) in [("circle", &circle), ("rfp", &rfp.modes)] {
        assert_eq!(modes.len(), 3, "{name}");
        for (m, peak) in modes.iter().zip(MEASURED_PEAKS_HZ) {
            assert!(
                ((m.natural_frequency_hz - peak) / peak).abs() < 0.02,
                "{name}: {:.4} Hz against the measured peak {peak} Hz ({modes:#?})",
                m.natural_frequency_hz
            );
            assert!(
                m.damping_ratio > 0.0 && m.damping_ratio < 0.05,
                "{name}: {m:?}"
            );
        }
        println!(
            "{name}: f = {:?} Hz, ζ = {:?}",
            modes
                .iter()
                .map(|m| m.natural_frequency_hz)
                .collect::<Vec<_>>(),
            modes.iter().map(|m| m.damping_ratio).collect::<Vec<_>>()
        );
    }
}

#[test]
fn driving_point_modal_masses_say_the_complex_files_are_in_m_s2_per_newton() {
    // The published floor mass is 5.201 kg (shared/data/cristallo/README.md). Rebuilt from
    // the driving-point modal constants, the files read as g/N give floors g times lighter;
    // read as (m/s²)/N they give the published mass within 3 % (modal constants of lightly
    // damped, coarsely sampled modes, and a real frame is not exactly a lumped chain).
    let as_si = parse_complex_accelerance(
        &cristallo_file("Experimental.csv"),
        AccelerationUnit::MetrePerSecondSquared,
    )
    .unwrap();
    for (frf, unit_mass_kg) in [(experimental(), 5.201 / 9.80665), (as_si, 5.201)] {
        let spatial = model_from_modes(&circle_modes(&frf), 1, &frf.output_floors).unwrap();
        let masses = &spatial.config.floor_masses_kg;
        println!(
            "floor masses {masses:?} kg, storeys {:?} N/m",
            spatial.config.storey_stiffness_n_per_m
        );
        for m in masses {
            assert!(
                ((m - unit_mass_kg) / unit_mass_kg).abs() < 0.03,
                "{masses:?} vs {unit_mass_kg}"
            );
        }
    }
}

#[test]
fn the_southampton_model_updated_to_the_measured_modes_fits_them_and_the_frfs_better() {
    let frf = experimental();
    let modes = circle_modes(&frf);
    // Frequencies only: the spread across channels, floored at 0.1 % (a fraction of a line
    // spacing); the shapes are checked by MAC below instead of fitted.
    let targets: Vec<TargetMode> = modes
        .iter()
        .map(|m| TargetMode {
            shape: None,
            model_mode: None,
            ..TargetMode::from_identified(m, &frf.output_floors, 3, 1e-3)
        })
        .collect();
    let params = UpdateParams {
        damping: DampingUpdate::Modal,
        ..UpdateParams::new(targets)
    };
    let prior = ShearBuildingConfig::southampton();
    let result = update_storey_stiffness(&prior, &params).unwrap();
    let k = &result.fitted_stiffness_n_per_m;
    let report = format!(
        "fitted storey stiffnesses {k:?} N/m ± {:?} (prior {:?}), after {} iterations; \
         residuals before {:?}, after {:?}",
        result.stiffness_std_n_per_m,
        result.prior_stiffness_n_per_m,
        result.iterations,
        result
            .before
            .iter()
            .map(|r| r.error_percent)
            .collect::<Vec<_>>(),
        result
            .after
            .iter()
            .map(|r| r.error_percent)
            .collect::<Vec<_>>(),
    );
    println!("{report}");
    assert!(k.iter().all(|k| *k > 0.0), "{report}");
    assert!(result.storeys_at_bounds.is_empty(), "{report}");
    for r in &result.after {
        assert!(r.error_percent.abs() < 0.5, "{report}");
    }
    // The test: the updated model reproduces the measured FRFs better than the
    // nominal one, by FRAC over the band of the three modes.
    let band = CrossValParams {
        f_min_hz: 3.0,
        f_max_hz: 32.0,
    };
    let nominal = crossvalidate(&ShearBuilding::new(prior).unwrap(), &frf, &modes, &band).unwrap();
    let updated = crossvalidate(
        &ShearBuilding::new(result.config).unwrap(),
        &frf,
        &modes,
        &band,
    )
    .unwrap();
    println!(
        "FRAC nominal {:?}, updated {:?}; frequency error nominal {:?} %, updated {:?} %",
        nominal.frac.iter().map(|f| f.frac).collect::<Vec<_>>(),
        updated.frac.iter().map(|f| f.frac).collect::<Vec<_>>(),
        nominal.summary.max_abs_frequency_error_percent,
        updated.summary.max_abs_frequency_error_percent,
    );
    for (n, u) in nominal.frac.iter().zip(&updated.frac) {
        assert!(
            u.frac > n.frac,
            "channel {}: FRAC {} updated vs {} nominal",
            u.output_floor,
            u.frac,
            n.frac
        );
    }
    assert!(
        updated.summary.min_pair_mac.unwrap() > 0.9,
        "{:?}",
        updated.mac_matrix
    );
}

#[test]
fn the_three_southampton_measurements_agree_and_the_swansea_peaks_are_found_from_db() {
    // Three measurements of one rig: the circle-fitted frequencies agree to far better than
    // a line (0.03125 Hz, 0.5 % at 6.5 Hz); 0.1 % bounds a day's drift of a lab frame.
    let reference = circle_modes(&experimental());
    for name in ["test_2.csv", "test_3.csv"] {
        let modes = circle_modes(&parse_complex_accelerance(&cristallo_file(name), G).unwrap());
        for (m, r) in modes.iter().zip(&reference) {
            let drift = (m.natural_frequency_hz / r.natural_frequency_hz - 1.0).abs();
            assert!(drift < 1e-3, "{name}: {m:?} vs {r:?}");
        }
    }
    // Swansea has magnitudes only; TOOLS.md § 6.2 lists its peaks in 2–40 Hz as 7.0, 19.375
    // and 29.125 Hz. The search must find those lines.
    let sw = parse_db_accelerance(&cristallo_file("ExpDataSw.csv"), G).unwrap();
    let peaks = dtop_calibrate::find_mode_windows(&sw, &PeakSearch::band(2.0, 40.0)).unwrap();
    let found: Vec<f64> = peaks.iter().map(|p| p.peak_hz).collect();
    assert_eq!(found, vec![7.0, 19.375, 29.125], "{peaks:#?}");
}
