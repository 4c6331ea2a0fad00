//! Cristallo's unused noise time history (`data_th_noise.csv`: velocities of the three floors
//! at 1 kHz for 60 s under a broadband force on floor 1; TOOLS.md § 6.4) through SSI and FDD,
//! checked against the H₁₁ peaks measured from the same record's force and response
//! (6.517, 18.266 and 26.40 Hz, TOOLS.md § 6.4): an input-output truth the output-only
//! methods never see.

#![allow(clippy::expect_used)]

use std::path::PathBuf;

use dtop_oma::{FddParams, OmaParams, SsiParams, identify};

/// The H₁₁ peaks of TOOLS.md § 6.4, Hz.
const H11_PEAKS_HZ: [f64; 3] = [6.517, 18.266, 26.40];

/// `shared/data/cristallo`, found by walking up from this crate (it sits beside the
/// repository's checkouts), or `DTOP_CRISTALLO_DATA`.
fn data_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("DTOP_CRISTALLO_DATA") {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/data/cristallo"))
        .find(|p| p.join("data_th_noise.csv").is_file())
        .expect(
            "shared/data/cristallo/data_th_noise.csv not found above this crate; set \
             DTOP_CRISTALLO_DATA to the folder that holds it",
        )
}

/// The three velocity columns, m/s.
fn velocities() -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(data_dir().join("data_th_noise.csv")).expect("readable");
    let mut channels = vec![Vec::new(); 3];
    for line in text.lines().skip(1) {
        let fields: Vec<f64> = line
            .split(',')
            .map(|f| f.trim().parse().expect("a number"))
            .collect();
        for (c, channel) in channels.iter_mut().enumerate() {
            channel.push(fields[1 + c]);
        }
    }
    channels
}

#[test]
fn ssi_and_fdd_find_the_measured_h11_peaks_of_cristallos_noise_record() {
    let channels = velocities();
    assert_eq!(channels[0].len(), 60_001);
    let params = OmaParams {
        ssi: SsiParams {
            block_rows: 80,
            max_order: 30,
            ..SsiParams::default()
        },
        // 16 384-sample segments (0.061 Hz lines, a tenth of the 1 % band at 6.5 Hz) leave
        // only 6 averages in 60 s: ripple peaks then reach 8 dB of prominence (measured), the
        // modes 33–62 dB. Hence 20 dB here instead of the default.
        fdd: Some(FddParams {
            segment_samples: 16_384,
            max_frequency_hz: Some(50.0),
            min_prominence_db: 20.0,
            ..FddParams::default()
        }),
        ..OmaParams::default()
    };
    let result = identify(&channels, 1000.0, &params).expect("identifies");
    // Measured: SSI within 0.06 %, FDD within 0.25 % (its lines are 0.061 Hz apart).
    assert_eq!(result.modes.len(), 3, "{:#?}", result.modes);
    let fdd = result.fdd.expect("asked for");
    assert_eq!(fdd.peaks.len(), 3, "{:#?}", fdd.peaks);
    for (r, want) in H11_PEAKS_HZ.iter().enumerate() {
        let ssi = result.modes[r].frequency_hz;
        let peak = fdd.peaks[r].frequency_hz;
        assert!(
            (ssi / want - 1.0).abs() < 0.01,
            "mode {r}: SSI {ssi} Hz, H11 {want} Hz"
        );
        assert!(
            (peak / want - 1.0).abs() < 0.01,
            "mode {r}: FDD {peak} Hz, H11 {want} Hz"
        );
        // Both methods see the same shape.
        let shapes_mac =
            dtop_dynamics::mac(&result.modes[r].shape, &fdd.peaks[r].shape).expect("same channels");
        assert!(shapes_mac > 0.99, "mode {r}: MAC {shapes_mac}");
    }
}
