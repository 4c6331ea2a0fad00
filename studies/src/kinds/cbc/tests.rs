//! The `cbc` study through the public dispatch, as the engine runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;

use serde_json::json;

use crate::model::builtin_model;
use crate::{Budget, ChunkCtx, Inputs, ModelSpec, StudyKind, StudyOutput};

fn run(model: &ModelSpec, submitted: &serde_json::Value) -> StudyOutput {
    let resolved = crate::plan(
        StudyKind::Cbc,
        model,
        submitted,
        &Inputs::none(),
        &Budget::default(),
    )
    .unwrap();
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let chunks: Vec<_> = (0..resolved.chunks)
        .map(|c| {
            crate::run_chunk(
                StudyKind::Cbc,
                model,
                &resolved.params,
                5,
                c,
                &ctx,
                &Inputs::none(),
            )
            .unwrap()
        })
        .collect();
    crate::reduce(
        StudyKind::Cbc,
        model,
        &resolved.params,
        5,
        &chunks,
        &Inputs::none(),
    )
    .unwrap()
}

fn array<'a>(out: &'a StudyOutput, name: &str) -> &'a crate::NamedArray {
    out.arrays
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no array {name}"))
}

fn col<'a>(array: &'a crate::NamedArray, name: &str) -> &'a [f64] {
    &array
        .columns
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name} in {}", array.name))
        .values
}

/// Cheap settings for the parts a test does not look at.
fn cheap(mut submitted: serde_json::Value) -> serde_json::Value {
    let extra = json!({ "cbc_targets": 2, "sweep_points": 2, "sweep_max_periods": 40 });
    for (k, v) in extra.as_object().unwrap() {
        submitted
            .as_object_mut()
            .unwrap()
            .entry(k.clone())
            .or_insert(v.clone());
    }
    submitted
}

/// The default study on the Southampton model, all three parts: one run, several checks
/// (it is the costliest test, ~6 s in release).
#[test]
fn the_default_study_folds_twice_cbc_lies_on_the_continuation_and_the_sweeps_jump_at_the_folds() {
    let model = builtin_model("southampton").unwrap();
    let out = run(&model, &json!({}));
    let s = &out.summary;

    // The response curve folds twice and is unstable between the folds.
    let folds = s["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 2, "{s}");
    let upper_hz = folds[0]["frequency_hz"].as_f64().unwrap();
    let lower_hz = folds[1]["frequency_hz"].as_f64().unwrap();
    assert!(lower_hz < upper_hz, "{folds:?}");
    let curve = array(&out, "response_curve");
    assert!(col(curve, "stable").contains(&0.0) && col(curve, "stable").contains(&1.0));

    // Every CBC point converged and lies within the 2 % of the continuation in the
    // forcing amplitude at the same frequency (measured: at most 7e-4, the invasiveness
    // tolerance's order).
    assert_eq!(s["cbc"]["stop"]["kind"], "completed", "{s}");
    let points = array(&out, "cbc_points");
    assert!(col(points, "converged").iter().all(|c| *c == 1.0));
    let distances = col(points, "distance_ratio");
    assert_eq!(distances.len(), 13);
    assert!(distances.iter().all(|d| *d < 0.02), "{distances:?}");
    // The experiment passes both folds of the forcing (a maximum, then a minimum along the
    // targets), each within 2 % of the continuation's located fold in forcing: the targets
    // step by 0.15 mm, so the extremes of the points miss the folds' flat tops by ~1 %.
    let cbc_folds = s["cbc"]["folds"].as_array().unwrap();
    let reference_folds = s["cbc"]["reference_folds"].as_array().unwrap();
    assert_eq!(cbc_folds.len(), 2, "{s}");
    assert_eq!(reference_folds.len(), 2, "{s}");
    for (c, r) in cbc_folds.iter().zip(reference_folds) {
        let (fc, fr) = (
            c["forcing_n"].as_f64().unwrap(),
            r["forcing_n"].as_f64().unwrap(),
        );
        assert!(
            (fc - fr).abs() < 0.02 * fr,
            "CBC {fc} N, continuation {fr} N"
        );
    }
    // Some CBC points hold the part between the folds, unstable in open loop.
    let (a_upper, a_lower) = (
        reference_folds[0]["amplitude_m"].as_f64().unwrap(),
        reference_folds[1]["amplitude_m"].as_f64().unwrap(),
    );
    let held = col(points, "forced_amplitude_m")
        .iter()
        .filter(|a| (a_upper..a_lower).contains(*a))
        .count();
    assert!(held >= 3, "{held} points between the folds");

    // The up sweep jumps down where the upper fold is, the down sweep up where the lower one
    // is: each jump's grid interval holds its fold (grid step 0.036 Hz).
    let bracket = |name: &str| {
        let b = &s["sweeps"][name]["largest_jump"]["between_hz"];
        let (a, b) = (b[0].as_f64().unwrap(), b[1].as_f64().unwrap());
        (a.min(b), a.max(b))
    };
    let (u0, u1) = bracket("sweep_up");
    assert!((u0..=u1).contains(&upper_hz), "{u0}..{u1} vs {upper_hz}");
    let (d0, d1) = bracket("sweep_down");
    assert!((d0..=d1).contains(&lower_hz), "{d0}..{d1} vs {lower_hz}");
    assert_eq!(s["sweeps"]["sweep_up"]["unsettled_points"], 0);
    // Away from the folds the sweeps sit on the continued curve: the sweep's first point
    // (f_min, far below resonance) against the curve's first point, to 1e-3 (the settling
    // tolerance 1e-4 and RK4 at 128 steps per period are far inside that).
    let up = array(&out, "sweep_up");
    let (a_sweep, a_curve) = (col(up, "amplitude_m")[0], col(curve, "amplitude_m")[0]);
    assert!(
        (a_sweep - a_curve).abs() < 1e-3 * a_curve,
        "{a_sweep} vs {a_curve}"
    );
}

/// A one-storey chain is the Duffing oscillator m·ẍ + c·ẋ + k·x + k₃·x³ = F·cos ωt. With one
/// harmonic, the balance is the first-order relation G(u, ω) = u·[(k − mω² + ¾k₃u)² + c²ω²]
/// − F² = 0 with u = A², and a fold of the frequency response is where also ∂G/∂u = 0.
#[test]
fn a_one_storey_chain_folds_where_the_duffing_first_order_relation_turns() {
    let (m, k, c) = (2.0, 8000.0, 2.0);
    let model: ModelSpec = serde_json::from_value(json!({
        "structure": {
            "floor_masses_kg": [m],
            "storey_stiffness_n_per_m": [k],
            "damping": { "kind": "storey_dampers", "storey_damping_n_s_per_m": [c] },
        },
    }))
    .unwrap();
    let out = run(&model, &cheap(json!({ "harmonics": 1 })));
    let resolved = crate::plan(
        StudyKind::Cbc,
        &model,
        &json!({}),
        &Inputs::none(),
        &Budget::default(),
    )
    .unwrap();
    let k3 = resolved.params["cubic_n_per_m3"][0].as_f64().unwrap();
    let f = resolved.params["forcing_n"].as_f64().unwrap();
    let folds = out.summary["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 2, "{}", out.summary);
    for fold in folds {
        let w = std::f64::consts::TAU * fold["frequency_hz"].as_f64().unwrap();
        let u = fold["amplitude_m"].as_f64().unwrap().powi(2);
        let p = k - m * w * w + 0.75 * k3 * u;
        let g = u * (p * p + c * c * w * w) - f * f;
        let dg = p * p + 2.0 * u * p * 0.75 * k3 + c * c * w * w;
        // The fold is located to rounding and the balance solved to 1e-10 of F: both
        // relations hold to far better than 1e-6 of their scales (F², k²).
        assert!(g.abs() < 1e-6 * f * f, "G = {g} at {fold}");
        assert!(dg.abs() < 1e-6 * k * k, "dG/du = {dg} at {fold}");
    }
}

#[test]
fn exhausted_budgets_and_the_force_limit_keep_the_partial_result_with_the_reason() {
    let model = builtin_model("southampton").unwrap();
    let out = run(
        &model,
        &cheap(json!({ "max_points": 15, "cbc_max_iterations": 1, "cbc_targets": 3 })),
    );
    assert_eq!(array(&out, "response_curve").rows(), 15);
    let stops = out.summary["stops"].to_string();
    assert!(stops.contains("point budget ran out"), "{stops}");
    assert!(stops.contains("raise params.max_points"), "{stops}");
    // One iteration can never show a point has settled: the first target stops the run.
    assert_eq!(out.summary["cbc"]["stop"]["kind"], "not_converged");
    assert!(stops.contains("raise params.cbc_max_iterations"), "{stops}");
    let points = array(&out, "cbc_points");
    assert_eq!(points.rows(), 1);
    assert_eq!(col(points, "converged"), [0.0]);

    let out = run(
        &model,
        &cheap(json!({ "max_force_n": 0.5, "cbc_targets": 3 })),
    );
    assert_eq!(
        out.summary["cbc"]["stop"]["kind"], "force_limit",
        "{}",
        out.summary
    );
    assert!(
        out.summary["stops"]
            .to_string()
            .contains("actuator's limit")
    );
    // The other parts are whole.
    assert!(
        out.summary["stops"]
            .to_string()
            .contains("reached the end of the range")
    );
}

#[test]
fn every_bad_parameter_is_reported_at_once_with_its_field() {
    let model = builtin_model("southampton").unwrap();
    let submitted = json!({
        "cubic_n_per_m3": [1.0, 2.0],
        "forced_floor": 9,
        "f_min_hz": 8.0,
        "f_max_hz": 7.0,
        "harmonics": 0,
        "proportional_gain_n_per_m": 0.0,
        "derivative_gain_n_s_per_m": 0.0,
        "invasiveness_tolerance": 2.0,
    });
    let Err(crate::StudyError::Invalid(problems)) = crate::plan(
        StudyKind::Cbc,
        &model,
        &submitted,
        &Inputs::none(),
        &Budget::default(),
    ) else {
        panic!("bad parameters were planned");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "params.cubic_n_per_m3",
        "params.forced_floor",
        "params.f_max_hz",
        "params.harmonics",
        "params.proportional_gain_n_per_m",
        "params.invasiveness_tolerance",
    ] {
        assert!(fields.contains(&want), "{want} missing from {problems:?}");
    }
    let small = Budget {
        max_work_units: 1000,
        ..Budget::default()
    };
    assert!(matches!(
        crate::plan(StudyKind::Cbc, &model, &json!({}), &Inputs::none(), &small),
        Err(crate::StudyError::TooLarge { .. })
    ));
}
