//! Bad input gets a clear error listing every problem at once, never a panic or a NaN
//! result; and the parameter types carry as JSON with unknown fields refused.

#![allow(clippy::expect_used)]

use dtop_oma::{FddParams, OmaError, OmaParams, SegmentParams, SsiParams, fdd, identify, ssi_cov};

/// A deterministic, well-behaved channel (no ties at its extremes).
fn channel(n: usize, phase: f64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64) * 0.7371 + phase).sin() * (1.0 + 0.5 * ((i as f64) * 0.013).cos()))
        .collect()
}

fn problems(result: Result<impl std::fmt::Debug, OmaError>) -> Vec<String> {
    match result {
        Err(OmaError::Invalid(problems)) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn every_problem_of_record_and_parameters_is_reported_at_once() {
    let n = 1000;
    let mut with_nan = channel(n, 0.0);
    with_nan[500] = f64::NAN;
    let dead = vec![0.25; n];
    let mut clipped = channel(n, 1.0);
    for x in clipped.iter_mut().filter(|x| **x > 1.2) {
        *x = 1.2;
    }
    let params = OmaParams {
        ssi: SsiParams {
            block_rows: 60,
            max_order: 400,
            ..SsiParams::default()
        },
        segments: Some(SegmentParams {
            segments: 10,
            ..SegmentParams::default()
        }),
        fdd: Some(FddParams {
            segment_samples: 4096,
            ..FddParams::default()
        }),
        ..OmaParams::default()
    };
    let found = problems(identify(&[with_nan, dead, clipped], 0.0, &params));
    let expect = [
        "sample_rate_hz = 0 must be positive and finite",
        "channel 0 has 1 NaN or infinite samples (the first at index 500)",
        "channel 1 is constant at 0.25 (zero variance)",
        "channel 2 looks clipped",
        "ssi.max_order = 400 is above the Hankel size: with 3 channels, 3 references and 60 \
         block rows the largest order is min(r·i, l·(i−1)) = 177; raise block_rows to at \
         least 135 or lower max_order",
        "ssi.block_rows = 60 needs at least 1200 samples (20 per block row) but the record \
         has 1000",
        "segments.segments = 10 leaves 100 samples per segment but 60 block rows need at \
         least 1200",
        "fdd.segment_samples = 4096 is longer than the record (1000 samples)",
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for (problem, want) in found.iter().zip(expect) {
        assert!(
            problem.starts_with(want),
            "{problem}\n  should start with\n{want}"
        );
    }
}

#[test]
fn a_record_without_channels_or_samples_is_refused_not_a_panic() {
    let params = SsiParams::default();
    assert!(!problems(ssi_cov(&[], 100.0, &params)).is_empty());
    let empty = problems(ssi_cov(&[vec![], vec![]], 100.0, &params));
    assert!(empty.iter().any(|p| p == "channel 0 is empty"), "{empty:?}");
    assert!(!problems(fdd(&[vec![1.0, 2.0]], 100.0, &FddParams::default())).is_empty());
    let infinite = problems(ssi_cov(&[channel(2000, 0.0)], f64::INFINITY, &params));
    assert!(infinite[0].contains("sample_rate_hz = inf"));
}

#[test]
fn orders_that_fit_the_toeplitz_matrix_exactly_are_accepted() {
    // 2 channels, 1 reference, 10 block rows: min(1·10, 2·9) = 10 is the largest order.
    let data = vec![channel(4000, 0.0), channel(4000, 0.5)];
    let fits = SsiParams {
        reference_channels: Some(vec![1]),
        block_rows: 10,
        min_order: 2,
        max_order: 10,
        ..SsiParams::default()
    };
    let result = ssi_cov(&data, 50.0, &fits).expect("fits");
    assert_eq!(result.orders, [2, 4, 6, 8, 10]);
    assert!(
        result
            .poles
            .iter()
            .all(|p| p.frequency_hz.is_finite() && p.damping_ratio.is_finite())
    );
    let too_high = SsiParams {
        max_order: 11,
        ..fits
    };
    let found = problems(ssi_cov(&data, 50.0, &too_high));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("largest order is min(r·i, l·(i−1)) = 10"));
}

#[test]
fn parameters_carry_as_json_with_defaults_and_refuse_unknown_fields() {
    let params: OmaParams = serde_json::from_str(
        r#"{"ssi": {"block_rows": 80, "max_order": 30}, "fdd": {"segment_samples": 2048}}"#,
    )
    .expect("parses");
    assert_eq!(params.ssi.block_rows, 80);
    assert_eq!(params.ssi.min_order, 2);
    assert_eq!(params.ssi.stability.min_mac, 0.98);
    assert_eq!(params.fdd.expect("given").overlap, 0.5);
    assert!(params.segments.is_none());
    let round_trip: OmaParams =
        serde_json::from_str(&serde_json::to_string(&params).expect("serialises"))
            .expect("parses back");
    assert_eq!(round_trip, params);
    let typo = serde_json::from_str::<OmaParams>(r#"{"ssi": {"blockrows": 80}}"#);
    assert!(typo.is_err());
    let nested = serde_json::from_str::<OmaParams>(r#"{"ssi": {"stability": {"mac": 0.9}}}"#);
    assert!(nested.is_err());
}
