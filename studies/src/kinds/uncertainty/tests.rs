//! Tests of the `uncertainty` study: the outer bound encloses every sample, the inner bound is
//! attained, closed forms for one floor, and Cristallo's diagonal search is shown to be narrow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;

use dtop_dynamics::{Damping, ShearBuildingConfig};

use super::*;
use crate::StudyKind;
use crate::model::{SensorLayout, builtin_models};

fn chain_model(m: &[f64], k: &[f64]) -> ModelSpec {
    ModelSpec {
        description: "test chain".into(),
        structure: ShearBuildingConfig {
            floor_masses_kg: m.to_vec(),
            storey_stiffness_n_per_m: k.to_vec(),
            damping: Damping::Modal {
                zetas: vec![0.01; m.len()],
            },
            actuator: None,
        },
        sensors: SensorLayout::default(),
    }
}

/// Cristallo's msd3 library defaults (TOOLS.md §3.2), masses in kg, stiffness N/m.
fn msd3() -> (ModelSpec, Vec<f64>) {
    (
        chain_model(&[5.362e4, 5.144e4, 5.142e4], &[3.846e8, 4.464e8, 4.589e8]),
        vec![1.699e4, 1.016e4, 1.34e4],
    )
}

fn msd3_params(e: f64, samples: u64) -> Params {
    let (model, c) = msd3();
    Params {
        storey_damping_n_s_per_m: c,
        force_floor: 3,
        // 5..200 rad/s, as Cristallo's grid, in Hz.
        f_min_hz: 5.0 / std::f64::consts::TAU,
        f_max_hz: 200.0 / std::f64::consts::TAU,
        frequencies: 60,
        mass_rel_half_width: vec![e; 3],
        stiffness_rel_half_width: vec![e; 3],
        damping_rel_half_width: vec![e; 3],
        samples,
        samples_per_chunk: Some(512),
        ..Params::defaults_for(&model)
    }
}

/// Runs a study through the public dispatch: plan, every chunk, reduce.
fn run(model: &ModelSpec, params: &Params, seed: u64) -> StudyOutput {
    let json = serde_json::to_value(params).unwrap();
    let plan = crate::plan(StudyKind::Uncertainty, model, &json, &Budget::default()).unwrap();
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let chunks: Vec<_> = (0..plan.chunks)
        .map(|c| crate::run_chunk(StudyKind::Uncertainty, model, &json, seed, c, &ctx).unwrap())
        .collect();
    crate::reduce(StudyKind::Uncertainty, model, &json, seed, &chunks).unwrap()
}

fn column<'a>(out: &'a StudyOutput, name: &str) -> &'a [f64] {
    &out.arrays[0]
        .columns
        .iter()
        .find(|c| c.name == name)
        .unwrap()
        .values
}

fn assert_enclosed(out: &StudyOutput) {
    assert_eq!(
        out.summary["mc_points_escaping_outer"], 0,
        "{}",
        out.summary
    );
    // Where a lightly damped resonance crosses the box the budget may not suffice; the bound
    // there is [0, f64::MAX] and the frequency is listed, never a false enclosure.
    let unverified = out.summary["outer_unverified_frequencies"]
        .as_array()
        .unwrap()
        .len();
    let freqs = out.summary["frequencies"].as_u64().unwrap() as usize;
    assert!(unverified * 2 <= freqs, "{}", out.summary);
    let (il, iu) = (column(out, "inner_lower_m"), column(out, "inner_upper_m"));
    let (ol, ou) = (column(out, "outer_lower_m"), column(out, "outer_upper_m"));
    let (ml, mu) = (column(out, "mc_min_m"), column(out, "mc_max_m"));
    for c in 0..il.len() {
        assert!(ol[c] <= il[c] && iu[c] <= ou[c], "inner ⊄ outer at {c}");
        assert!(
            ol[c] <= ml[c] && mu[c] <= ou[c],
            "sample escapes outer at {c}"
        );
    }
}

#[test]
fn no_monte_carlo_sample_escapes_the_outer_bound_of_msd3_with_5_and_10_percent_boxes() {
    let (model, _) = msd3();
    for e in [0.05, 0.10] {
        let out = run(&model, &msd3_params(e, 3000), 7);
        assert_enclosed(&out);
        assert_eq!(out.summary["mc_samples"], 3000);
        assert!(
            out.summary["mc_fraction_points_outside_inner"]
                .as_f64()
                .unwrap()
                < 0.1
        );
    }
}

#[test]
fn every_frequency_verifies_when_the_box_is_narrow_against_the_damping() {
    let model = chain_model(&[2.0, 1.5, 1.8], &[4000.0, 3500.0, 3000.0]);
    let mut p = Params::defaults_for(&model);
    p.storey_damping_n_s_per_m = vec![5.0, 4.0, 3.0];
    p.mass_rel_half_width = vec![0.01; 3];
    p.stiffness_rel_half_width = vec![0.01; 3];
    p.damping_rel_half_width = vec![0.05; 3];
    p.frequencies = 100;
    p.samples = 1000;
    let out = run(&model, &p, 2);
    assert_enclosed(&out);
    assert_eq!(
        out.summary["outer_unverified_frequencies"],
        serde_json::json!([]),
        "{}",
        out.summary
    );
    assert!(
        out.summary["tightness_mean_outer_over_inner_width"]
            .as_f64()
            .unwrap()
            < 1.5
    );
}

#[test]
fn no_monte_carlo_sample_escapes_the_outer_bound_of_other_models() {
    let southampton = builtin_models().remove(0).1;
    let five = chain_model(
        &[2.0, 1.5, 1.8, 1.2, 1.0],
        &[4000.0, 3500.0, 3000.0, 2500.0, 2000.0],
    );
    for (model, floor) in [(southampton, 1), (five, 2)] {
        let mut p = Params::defaults_for(&model);
        p.force_floor = floor;
        p.frequencies = 80;
        p.samples = 2000;
        p.samples_per_chunk = Some(256);
        p.mass_rel_half_width[0] = 0.08;
        p.stiffness_rel_half_width[1] = 0.02;
        let out = run(&model, &p, 11);
        assert_enclosed(&out);
    }
}

fn one_dof(m: [f64; 2], k: [f64; 2], c: [f64; 2], f_hz: Vec<f64>) -> (ModelSpec, Params) {
    let model = chain_model(&[m[0]], &[k[0]]);
    let params = Params {
        storey_damping_n_s_per_m: vec![c[0]],
        force_floor: 1,
        f_min_hz: f_hz[0],
        f_max_hz: f_hz[1],
        frequencies: 2,
        mass_rel_half_width: vec![0.0],
        stiffness_rel_half_width: vec![0.0],
        damping_rel_half_width: vec![0.0],
        mass_intervals_kg: Some(vec![m]),
        stiffness_intervals_n_per_m: Some(vec![k]),
        damping_intervals_n_s_per_m: Some(vec![c]),
        samples: 500,
        samples_per_chunk: None,
        outer_max_boxes: 256,
        outer_rel_tolerance: 0.01,
        inner_search_sweeps: 2,
    };
    (model, params)
}

fn receptance(m: f64, k: f64, c: f64, f_hz: f64) -> f64 {
    let w = std::f64::consts::TAU * f_hz;
    1.0 / ((k - m * w * w).powi(2) + (c * w).powi(2)).sqrt()
}

#[test]
fn one_floor_bounds_match_the_closed_form_at_the_corners() {
    // Resonance between 2.9 and 3.5 Hz over the box: 1 Hz is below it (|u| grows with m,
    // falls with k), 6 Hz above it (falls with m, grows with k); |u| always falls with c.
    let (m, k, c) = ([1.9, 2.1], [700.0, 900.0], [0.5, 0.8]);
    let (model, params) = one_dof(m, k, c, vec![1.0, 6.0]);
    let out = run(&model, &params, 3);
    let (il, iu) = (column(&out, "inner_lower_m"), column(&out, "inner_upper_m"));
    let (ol, ou) = (column(&out, "outer_lower_m"), column(&out, "outer_upper_m"));
    let below = (
        receptance(m[0], k[1], c[1], 1.0),
        receptance(m[1], k[0], c[0], 1.0),
    );
    let above = (
        receptance(m[1], k[0], c[1], 6.0),
        receptance(m[0], k[1], c[0], 6.0),
    );
    for (i, (lo, hi)) in [below, above].into_iter().enumerate() {
        assert!((il[i] - lo).abs() <= 1e-12 * lo, "{} vs {lo}", il[i]);
        assert!((iu[i] - hi).abs() <= 1e-12 * hi, "{} vs {hi}", iu[i]);
        assert!(ol[i] <= lo && hi <= ou[i]);
        // Subdivision to 1 % makes the enclosure close to the exact range.
        assert!(
            ou[i] - ol[i] <= 1.05 * (hi - lo),
            "outer {} {} exact {lo} {hi}",
            ol[i],
            ou[i]
        );
    }
    assert_enclosed(&out);
}

#[test]
fn an_exhaustive_grid_of_a_two_parameter_box_stays_in_the_outer_bound_and_reaches_the_inner() {
    // m and k uncertain, c fixed; at 3.2 Hz the resonance line k = m·ω² crosses the box, so the
    // maximum is interior (1/(c·ω)) and the minimum at a corner.
    let (m, k, c) = ([1.9, 2.1], [700.0, 900.0], [0.6, 0.6]);
    for f in [3.2, 1.0] {
        let (model, mut params) = one_dof(m, k, c, vec![f, f + 1e-6]);
        params.samples = 64;
        let out = run(&model, &params, 5);
        let (il, iu) = (
            column(&out, "inner_lower_m")[0],
            column(&out, "inner_upper_m")[0],
        );
        let (ol, ou) = (
            column(&out, "outer_lower_m")[0],
            column(&out, "outer_upper_m")[0],
        );
        let (mut gmin, mut gmax) = (f64::INFINITY, 0.0_f64);
        let steps = 400;
        for a in 0..=steps {
            for b in 0..=steps {
                let mm = m[0] + (m[1] - m[0]) * a as f64 / steps as f64;
                let kk = k[0] + (k[1] - k[0]) * b as f64 / steps as f64;
                let v = receptance(mm, kk, c[0], f);
                assert!(
                    ol <= v && v <= ou,
                    "grid value {v} outside [{ol}, {ou}] at {f} Hz"
                );
                gmin = gmin.min(v);
                gmax = gmax.max(v);
            }
        }
        assert!(
            (il - gmin).abs() <= 1e-3 * gmin,
            "{f} Hz: inner lower {il}, grid {gmin}"
        );
        assert!(
            (iu - gmax).abs() <= 1e-3 * gmax,
            "{f} Hz: inner upper {iu}, grid {gmax}"
        );
        assert!(il <= gmin * (1.0 + 1e-12) && iu >= gmax * (1.0 - 1e-3));
    }
}

/// Cristallo's "Cartesian" bounds (TOOLS.md §3.3): masses move together and stiffnesses move
/// together along 30 points each; dampers all at their lower or all at their upper ends.
fn diagonal_bounds(setup: &Setup) -> (Vec<f64>, Vec<f64>) {
    let n = setup.floors;
    let mut lo = vec![f64::INFINITY; setup.frequencies_hz.len() * n];
    let mut hi = vec![0.0_f64; lo.len()];
    let mut u = Vec::new();
    let mut scratch = crate::chain::Scratch::default();
    for a in 0..30 {
        for b in 0..30 {
            for side in [0.0, 1.0] {
                let ta = a as f64 / 29.0;
                let tb = b as f64 / 29.0;
                let p: Vec<f64> = (0..3 * n)
                    .map(|l| {
                        let t = if l < n {
                            ta
                        } else if l < 2 * n {
                            tb
                        } else {
                            side
                        };
                        setup.lo[l] + (setup.hi[l] - setup.lo[l]) * t
                    })
                    .collect();
                for (fi, f) in setup.frequencies_hz.iter().enumerate() {
                    setup
                        .chain(&p)
                        .solve_unit_force(
                            std::f64::consts::TAU * f,
                            setup.force_floor,
                            &mut u,
                            &mut scratch,
                        )
                        .unwrap();
                    for i in 0..n {
                        lo[fi * n + i] = lo[fi * n + i].min(u[i].norm());
                        hi[fi * n + i] = hi[fi * n + i].max(u[i].norm());
                    }
                }
            }
        }
    }
    (lo, hi)
}

#[test]
fn cristallos_diagonal_search_is_narrower_than_ours_and_monte_carlo_escapes_it() {
    let (model, _) = msd3();
    let params = msd3_params(0.05, 2000);
    let setup = setup(&model, &params).unwrap();
    let (dlo, dhi) = diagonal_bounds(&setup);
    let out = run(&model, &params, 9);
    let (il, iu) = (column(&out, "inner_lower_m"), column(&out, "inner_upper_m"));
    let (ml, mu) = (column(&out, "mc_min_m"), column(&out, "mc_max_m"));
    let cells = dlo.len();
    let escapes = (0..cells)
        .filter(|&c| ml[c] < dlo[c] || mu[c] > dhi[c])
        .count();
    let wider = (0..cells)
        .filter(|&c| iu[c] - il[c] > (dhi[c] - dlo[c]) * (1.0 + 1e-9))
        .count();
    let (ol, ou) = (column(&out, "outer_lower_m"), column(&out, "outer_upper_m"));
    assert!(
        escapes * 10 > cells,
        "MC escapes the diagonal at only {escapes}/{cells} points"
    );
    assert!(
        wider * 2 > cells,
        "our inner bound is wider at only {wider}/{cells} points"
    );
    assert!(
        (0..cells).all(|c| ol[c] <= dlo[c] && dhi[c] <= ou[c]),
        "diagonal values escape outer"
    );
    assert_enclosed(&out);
}

#[test]
fn monte_carlo_statistics_do_not_depend_on_the_chunk_size_and_chunks_run_in_any_order() {
    let (model, _) = msd3();
    let mut a = msd3_params(0.05, 1024);
    a.frequencies = 20;
    a.samples_per_chunk = Some(1024);
    let mut b = a.clone();
    b.samples_per_chunk = Some(64);
    let (oa, ob) = (run(&model, &a, 42), run(&model, &b, 42));
    for name in [
        "mc_min_m",
        "mc_max_m",
        "mc_p05_m",
        "mc_p50_m",
        "mc_p95_m",
        "inner_upper_m",
        "outer_upper_m",
    ] {
        assert_eq!(column(&oa, name), column(&ob, name), "{name}");
    }
    for (x, y) in column(&oa, "mc_mean_m")
        .iter()
        .zip(column(&ob, "mc_mean_m"))
    {
        assert!((x - y).abs() <= 1e-12 * x.abs());
    }
    // Chunks computed in reverse order, reduced in chunk order: the same result.
    let json = serde_json::to_value(&b).unwrap();
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let plan = crate::plan(StudyKind::Uncertainty, &model, &json, &Budget::default()).unwrap();
    let mut chunks: Vec<_> = (0..plan.chunks)
        .rev()
        .map(|c| {
            (
                c,
                crate::run_chunk(StudyKind::Uncertainty, &model, &json, 42, c, &ctx).unwrap(),
            )
        })
        .collect();
    chunks.sort_by_key(|(c, _)| *c);
    let values: Vec<_> = chunks.into_iter().map(|(_, v)| v).collect();
    let again = crate::reduce(StudyKind::Uncertainty, &model, &json, 42, &values).unwrap();
    assert_eq!(again, ob);
}

#[test]
fn percentile_envelopes_are_ordered_and_inside_the_sample_range() {
    let (model, _) = msd3();
    let out = run(&model, &msd3_params(0.05, 1500), 1);
    let cols: Vec<&[f64]> = ["mc_min_m", "mc_p05_m", "mc_p50_m", "mc_p95_m", "mc_max_m"]
        .iter()
        .map(|n| column(&out, n))
        .collect();
    for c in 0..cols[0].len() {
        for w in cols.windows(2) {
            assert!(w[0][c] <= w[1][c], "{c}");
        }
    }
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let (model, _) = msd3();
    let mut p = msd3_params(0.05, 10);
    p.force_floor = 4;
    p.f_min_hz = -1.0;
    p.frequencies = 1;
    p.mass_rel_half_width = vec![0.05, 1.5, 0.05];
    p.stiffness_rel_half_width = vec![0.05];
    p.storey_damping_n_s_per_m[2] = f64::NAN;
    p.outer_max_boxes = 0;
    p.outer_rel_tolerance = 0.0;
    p.inner_search_sweeps = 11;
    let Err(StudyError::Invalid(problems)) = check(&model, &p, &Budget::default()) else {
        panic!("expected Invalid");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in [
        "params.force_floor",
        "params.f_min_hz",
        "params.frequencies",
        "params.mass_rel_half_width[1]",
        "params.stiffness_rel_half_width",
        "params.storey_damping_n_s_per_m[2]",
        "params.outer_max_boxes",
        "params.outer_rel_tolerance",
        "params.inner_search_sweeps",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    assert!(problems.iter().all(|p| !p.message.is_empty()));
}

#[test]
fn unknown_fields_are_refused_and_defaults_round_trip() {
    let (model, _) = msd3();
    let mut json = crate::defaults(StudyKind::Uncertainty, &model);
    assert!(crate::plan(StudyKind::Uncertainty, &model, &json, &Budget::default()).is_ok());
    json["frobnicate"] = serde_json::json!(1);
    let Err(StudyError::Invalid(problems)) =
        crate::plan(StudyKind::Uncertainty, &model, &json, &Budget::default())
    else {
        panic!("expected Invalid");
    };
    assert!(problems[0].message.contains("frobnicate"), "{problems:?}");
}

#[test]
fn a_study_above_the_budget_is_too_large_and_work_counts_samples_frequencies_and_floors() {
    let (model, _) = msd3();
    let p = msd3_params(0.05, 1_000_000);
    let plan = check(&model, &p, &Budget::default()).unwrap();
    assert!(plan.work_units >= 1_000_000 * 60 * 3);
    let small = Budget {
        max_work_units: 1000,
        chunk_work_units: 100,
    };
    assert!(matches!(
        check(&model, &p, &small),
        Err(StudyError::TooLarge { .. })
    ));
}

#[test]
fn a_cancelled_study_stops_its_chunks() {
    let (model, _) = msd3();
    let p = msd3_params(0.05, 1000);
    let json = serde_json::to_value(&p).unwrap();
    let flag = AtomicBool::new(true);
    let ctx = ChunkCtx::new(&flag);
    for c in [0, 1] {
        let r = crate::run_chunk(StudyKind::Uncertainty, &model, &json, 1, c, &ctx);
        assert_eq!(r, Err(StudyError::Cancelled));
    }
}
