//! SSI-cov and mode picking on simulated output-only records of shear buildings, checked
//! against dtop-dynamics' eigen-solution (an independent path: the generalized symmetric
//! eigenproblem of M and K, and the eigenvalues of the continuous state matrix for damping).

#![allow(clippy::expect_used)]

use crate::support;

use dtop_dynamics::frf::modal_analysis;
use dtop_dynamics::{ShearBuilding, mac};
use dtop_oma::{FddParams, IdentifiedMode, OmaParams, OmaResult, SsiParams};

/// The rig's modes as truth: natural frequency (Hz) and damping ratio of each pole of the
/// damped model, and the mass-normalised undamped shape (classical damping: the same).
fn truth(building: &ShearBuilding) -> Vec<(f64, f64, Vec<f64>)> {
    let analysis = modal_analysis(building).expect("modal analysis");
    analysis
        .poles
        .iter()
        .zip(&analysis.modes)
        .map(|(pole, mode)| {
            (
                pole.natural_frequency_hz,
                pole.damping_ratio,
                mode.shape.clone(),
            )
        })
        .collect()
}

fn identify(building: &ShearBuilding, seed: u64) -> OmaResult {
    let fs = 1000.0;
    let data = support::floor_accelerations(building, fs, 600.0, 0.02, seed);
    let params = OmaParams {
        ssi: SsiParams {
            // 2i/fs = 0.16 s, about 1.1 periods of mode 1.
            block_rows: 80,
            max_order: 30,
            ..SsiParams::default()
        },
        fdd: Some(FddParams::default()),
        ..OmaParams::default()
    };
    dtop_oma::identify(&data, fs, &params).expect("identifies")
}

/// Relative errors (frequency, damping) and the MAC of each model mode against the identified
/// mode nearest in frequency.
fn errors(building: &ShearBuilding, modes: &[IdentifiedMode]) -> Vec<(f64, f64, f64)> {
    truth(building)
        .iter()
        .map(|(f, zeta, shape)| {
            let found = modes
                .iter()
                .min_by(|a, b| {
                    (a.frequency_hz - f)
                        .abs()
                        .total_cmp(&(b.frequency_hz - f).abs())
                })
                .expect("at least one mode");
            (
                (found.frequency_hz - f) / f,
                (found.damping_ratio - zeta) / zeta,
                mac(&found.shape, shape).expect("same DOFs"),
            )
        })
        .collect()
}

/// The acceptance test: 10 minutes at 1 kHz, frequencies within 0.5 %, damping within
/// 25 %, MAC ≥ 0.99. Frequencies and shapes are easy (measured errors below 0.06 % and 1e-6 in
/// MAC for seeds 1–7). Damping is not: at 0.2 % of critical, 10 minutes hold only
/// ζ·ω·T ≈ 54 rad of decay for mode 1, and the mode-1 damping error measured over seeds 1–7
/// (`OMA_SEED=k cargo test ... -- --nocapture`) ranged from −4 % to +22 %. So 25 % is about
/// two standard deviations of the estimate, not slack in the method; the seed is pinned.
#[test]
fn ten_minutes_of_the_southampton_rig_at_1_khz_give_its_three_modes() {
    let building = ShearBuilding::southampton();
    let seed = std::env::var("OMA_SEED").map_or(7, |s| s.parse().expect("integer seed"));
    let result = identify(&building, seed);
    let modes = result.modes;
    let errors = errors(&building, &modes);
    println!("{modes:#?}\n{errors:?}");
    assert_eq!(modes.len(), 3, "{modes:#?}");
    for (f_err, zeta_err, mac) in errors {
        assert!(f_err.abs() < 0.005, "frequency error {f_err}");
        assert!(zeta_err.abs() < 0.25, "damping error {zeta_err}");
        assert!(mac >= 0.99, "MAC {mac}");
    }
    // FDD's cross-check: 4096-sample segments, 0.244 Hz lines, 292 averages.
    let fdd = result.fdd.expect("asked for");
    assert_eq!(fdd.peaks.len(), 3, "{:#?}", fdd.peaks);
    for (peak, f) in fdd.peaks.iter().zip(building.natural_frequencies_hz()) {
        assert!(
            (peak.frequency_hz - f).abs() <= fdd.frequency_resolution_hz,
            "FDD {} Hz, model {f} Hz",
            peak.frequency_hz
        );
    }
}
