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

/// Storey dampers giving each storey a 1 % ratio against its own mass and stiffness, for
/// models whose damping is not storey dampers.
fn one_percent_dampers(model: &ModelSpec) -> Vec<f64> {
    let s = &model.structure;
    (0..s.floors())
        .map(|i| 2.0 * 0.01 * (s.storey_stiffness_n_per_m[i] * s.floor_masses_kg[i]).sqrt())
        .collect()
}

/// Cristallo's msd3 library defaults (TOOLS.md §3.2), masses in kg, stiffness N/m, storey
/// dampers N·s/m (in the model, as `storey_dampers`).
fn msd3() -> (ModelSpec, Vec<f64>) {
    let c = vec![1.699e4, 1.016e4, 1.34e4];
    let mut model = chain_model(&[5.362e4, 5.144e4, 5.142e4], &[3.846e8, 4.464e8, 4.589e8]);
    model.structure.damping = Damping::StoreyDampers {
        storey_damping_n_s_per_m: c.clone(),
    };
    (model, c)
}

fn msd3_params(e: f64, samples: u64) -> Params {
    let (model, c) = msd3();
    Params {
        storey_damping_n_s_per_m: Some(c),
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
    run_json(
        model,
        &serde_json::to_value(params).unwrap(),
        &Budget::default(),
        seed,
    )
    .0
}

/// Runs submitted JSON params through plan (which resolves them), every chunk and reduce;
/// also returns the resolved params and the chunk count.
fn run_json(
    model: &ModelSpec,
    submitted: &serde_json::Value,
    budget: &Budget,
    seed: u64,
) -> (StudyOutput, serde_json::Value, u32) {
    let plan = crate::plan(
        StudyKind::Uncertainty,
        model,
        submitted,
        &crate::Inputs::none(),
        budget,
    )
    .unwrap();
    let json = plan.params.clone();
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let chunks: Vec<_> = (0..plan.chunks)
        .map(|c| {
            crate::run_chunk(
                StudyKind::Uncertainty,
                model,
                &json,
                seed,
                c,
                &ctx,
                &crate::Inputs::none(),
            )
            .unwrap()
        })
        .collect();
    let out = crate::reduce(
        StudyKind::Uncertainty,
        model,
        &json,
        seed,
        &chunks,
        &crate::Inputs::none(),
    )
    .unwrap();
    (out, json, plan.chunks)
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
        // The inner bound includes every sample.
        assert!(
            il[c] <= ml[c] && mu[c] <= iu[c],
            "sample outside inner at {c}"
        );
    }
}

#[test]
fn no_monte_carlo_sample_escapes_the_outer_bound_of_msd3_with_5_and_10_percent_boxes() {
    let (model, _) = msd3();
    for e in [0.05, 0.10] {
        let out = run(&model, &msd3_params(e, 3000), 7);
        assert_enclosed(&out);
        // The tightness figure in STUDIES.md comes from this line (run with --nocapture).
        println!(
            "msd3 ±{e}: tightness median {} worst {}, unverified {}, beyond optimiser {}",
            out.summary["tightness_median_outer_over_inner_width"],
            out.summary["tightness_worst_outer_over_inner_width"],
            out.summary["outer_unverified_frequencies"]
                .as_array()
                .unwrap()
                .len(),
            out.summary["mc_fraction_points_beyond_optimiser"],
        );
        assert_eq!(out.summary["mc_samples"], 3000);
        assert!(
            out.summary["mc_fraction_points_beyond_optimiser"]
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
    p.storey_damping_n_s_per_m = Some(vec![5.0, 4.0, 3.0]);
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
        p.storey_damping_n_s_per_m = Some(one_percent_dampers(&model));
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
        storey_damping_n_s_per_m: Some(vec![c[0]]),
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
        frequencies_per_bounds_chunk: None,
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
    let plan = crate::plan(
        StudyKind::Uncertainty,
        &model,
        &json,
        &crate::Inputs::none(),
        &Budget::default(),
    )
    .unwrap();
    let mut chunks: Vec<_> = (0..plan.chunks)
        .rev()
        .map(|c| {
            (
                c,
                crate::run_chunk(
                    StudyKind::Uncertainty,
                    &model,
                    &json,
                    42,
                    c,
                    &ctx,
                    &crate::Inputs::none(),
                )
                .unwrap(),
            )
        })
        .collect();
    chunks.sort_by_key(|(c, _)| *c);
    let values: Vec<_> = chunks.into_iter().map(|(_, v)| v).collect();
    let again = crate::reduce(
        StudyKind::Uncertainty,
        &model,
        &json,
        42,
        &values,
        &crate::Inputs::none(),
    )
    .unwrap();
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
    p.storey_damping_n_s_per_m = Some(vec![1.699e4, 1.016e4, f64::NAN]);
    p.outer_max_boxes = 0;
    p.outer_rel_tolerance = 0.0;
    p.inner_search_sweeps = 11;
    p.frequencies_per_bounds_chunk = Some(0);
    let Err(StudyError::Invalid(problems)) =
        check(&model, &p, &Budget::default(), &crate::Inputs::none())
    else {
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
        "params.frequencies_per_bounds_chunk",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    assert!(problems.iter().all(|p| !p.message.is_empty()));
}

#[test]
fn unknown_fields_are_refused_and_defaults_round_trip() {
    let (model, _) = msd3();
    let mut json = crate::defaults(StudyKind::Uncertainty, &model);
    assert!(
        crate::plan(
            StudyKind::Uncertainty,
            &model,
            &json,
            &crate::Inputs::none(),
            &Budget::default()
        )
        .is_ok()
    );
    json["frobnicate"] = serde_json::json!(1);
    let Err(StudyError::Invalid(problems)) = crate::plan(
        StudyKind::Uncertainty,
        &model,
        &json,
        &crate::Inputs::none(),
        &Budget::default(),
    ) else {
        panic!("expected Invalid");
    };
    assert!(problems[0].message.contains("frobnicate"), "{problems:?}");
}

#[test]
fn a_study_above_the_budget_is_too_large_and_work_counts_samples_frequencies_and_floors() {
    let (model, _) = msd3();
    let p = msd3_params(0.05, 1_000_000);
    let plan = check(&model, &p, &Budget::default(), &crate::Inputs::none()).unwrap();
    assert!(plan.work_units >= 1_000_000 * 60 * 3);
    let small = Budget {
        max_work_units: 1000,
        chunk_work_units: 100,
    };
    assert!(matches!(
        check(&model, &p, &small, &crate::Inputs::none()),
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
        let r = crate::run_chunk(
            StudyKind::Uncertainty,
            &model,
            &json,
            1,
            c,
            &ctx,
            &crate::Inputs::none(),
        );
        assert_eq!(r, Err(StudyError::Cancelled));
    }
}

#[test]
fn a_submission_giving_only_samples_runs_and_resolves_to_the_defaults_with_that_override() {
    let model = crate::model::builtin_model("cristallo-msd3").unwrap();
    let submitted = serde_json::json!({ "samples": 200, "frequencies": 30 });
    let (out, resolved, chunks) = run_json(&model, &submitted, &Budget::default(), 4);
    let expected = Params {
        samples: 200,
        frequencies: 30,
        samples_per_chunk: Some(samples_per_chunk_within(
            30,
            3,
            Budget::default().chunk_work_units,
        )),
        // 30 frequencies' bounds are well under one chunk's work units: one bounds chunk.
        frequencies_per_bounds_chunk: Some(30),
        ..Params::defaults_for(&model)
    };
    assert_eq!(resolved, serde_json::to_value(&expected).unwrap());
    assert_eq!(chunks, 2);
    assert_eq!(out.summary["mc_samples"], 200);
    // The nominal dampers are the model's.
    let Damping::StoreyDampers {
        storey_damping_n_s_per_m,
    } = &model.structure.damping
    else {
        panic!("cristallo-msd3 has storey dampers");
    };
    assert_eq!(
        expected.storey_damping_n_s_per_m.as_ref(),
        Some(storey_damping_n_s_per_m)
    );
    assert_enclosed(&out);
}

#[test]
fn a_model_without_storey_dampers_needs_them_as_a_parameter_and_is_told_why() {
    let southampton = crate::model::builtin_model("southampton").unwrap();
    let modal = chain_model(&[2.0, 1.5], &[4000.0, 3500.0]);
    for model in [southampton, modal] {
        let Err(StudyError::Invalid(problems)) = crate::plan(
            StudyKind::Uncertainty,
            &model,
            &serde_json::json!({ "samples": 10, "frequencies": 5, "force_floor": 7 }),
            &crate::Inputs::none(),
            &Budget::default(),
        ) else {
            panic!("planned without storey dampers");
        };
        let damper = problems
            .iter()
            .find(|p| p.field == "params.storey_damping_n_s_per_m")
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert!(
            damper.message.contains("no storey dampers"),
            "{}",
            damper.message
        );
        // Every problem at once: the bad force floor too.
        assert!(problems.iter().any(|p| p.field == "params.force_floor"));
        let c = one_percent_dampers(&model);
        let given =
            serde_json::json!({ "samples": 10, "frequencies": 5, "storey_damping_n_s_per_m": c });
        assert!(
            crate::plan(
                StudyKind::Uncertainty,
                &model,
                &given,
                &crate::Inputs::none(),
                &Budget::default()
            )
            .is_ok()
        );
    }
}

#[test]
fn a_smaller_chunk_budget_splits_the_bounds_and_the_samples_but_not_the_result() {
    let (model, _) = msd3();
    let submitted = serde_json::json!({
        "samples": 1000, "frequencies": 16, "outer_max_boxes": 16, "inner_search_sweeps": 1,
    });
    let small = Budget {
        chunk_work_units: 16 * 3 * 64,
        ..Budget::default()
    };
    let (a, _, chunks_a) = run_json(&model, &submitted, &Budget::default(), 8);
    let (b, _, chunks_b) = run_json(&model, &submitted, &small, 8);
    assert_eq!(chunks_a, 2);
    // One frequency's bounds alone exceed the small budget: one bounds chunk per frequency.
    assert_eq!(chunks_b, 16 + 1000_u32.div_ceil(64));
    // Min, max and histograms merge exactly, so everything but the mean is bit-identical;
    // the mean is a floating-point sum taken in chunk order.
    for col in &a.arrays[0].columns {
        let other = column(&b, &col.name);
        if col.name == "mc_mean_m" {
            for (x, y) in col.values.iter().zip(other) {
                assert!((x - y).abs() <= 1e-13 * x.abs(), "{x} {y}");
            }
        } else {
            assert_eq!(col.values.as_slice(), other, "{}", col.name);
        }
    }
    assert_eq!(a.summary, b.summary);
}

#[test]
fn the_default_budget_splits_the_bounds_of_a_thousand_frequencies_over_several_chunks() {
    let model = crate::model::builtin_model("cristallo-msd3").unwrap();
    let submitted = serde_json::json!({ "samples": 100_000, "frequencies": 1000 });
    let plan = crate::plan(
        StudyKind::Uncertainty,
        &model,
        &submitted,
        &crate::Inputs::none(),
        &Budget::default(),
    )
    .unwrap();
    let p: Params = serde_json::from_value(plan.params).unwrap();
    let per = p.frequencies_per_bounds_chunk.unwrap();
    let bounds_chunks = 1000_u32.div_ceil(per as u32);
    let mc_chunks = 100_000_u32.div_ceil(p.samples_per_chunk.unwrap() as u32);
    assert!(bounds_chunks >= 4, "{bounds_chunks} bounds chunks");
    assert_eq!(plan.chunks, bounds_chunks + mc_chunks);
    // Chunk `bounds_chunks − 1` is the last bounds chunk; the next one runs samples.
    let json = serde_json::to_value(&p).unwrap();
    let flag = AtomicBool::new(true);
    let ctx = ChunkCtx::new(&flag);
    for c in [0, bounds_chunks - 1, bounds_chunks, plan.chunks - 1] {
        let r = crate::run_chunk(
            StudyKind::Uncertainty,
            &model,
            &json,
            1,
            c,
            &ctx,
            &crate::Inputs::none(),
        );
        assert_eq!(r, Err(StudyError::Cancelled), "chunk {c}");
    }
    let past = crate::run_chunk(
        StudyKind::Uncertainty,
        &model,
        &json,
        1,
        plan.chunks,
        &ctx,
        &crate::Inputs::none(),
    );
    assert!(matches!(past, Err(StudyError::BadChunk(_))), "{past:?}");
}

#[test]
fn params_stored_without_a_bounds_chunk_size_keep_one_bounds_chunk() {
    let (model, _) = msd3();
    let p = msd3_params(0.05, 1024);
    assert_eq!(p.frequencies_per_bounds_chunk, None);
    let plan = check(&model, &p, &Budget::default(), &crate::Inputs::none()).unwrap();
    assert_eq!(plan.chunks, 1 + 1024 / 512);
}

/// |u_i| of a 2-floor chain by Cramer's rule on the 2×2 dynamic stiffness: a computation
/// independent of `chain.rs` and of the bounds.
fn two_floor_receptance(m: [f64; 2], k: [f64; 2], c: [f64; 2], w: f64, floor: usize) -> f64 {
    use crate::chain::C64;
    let kc = |s: usize| C64::new(k[s], w * c[s]);
    let a11 = kc(0) + kc(1) - C64::new(w * w * m[0], 0.0);
    let a22 = kc(1) - C64::new(w * w * m[1], 0.0);
    let a12 = -kc(1);
    let det = a11 * a22 - a12 * a12;
    // Force at floor 2: u = A^-1 e_2 = [−a12, a11] / det.
    let u = if floor == 0 { -a12 / det } else { a11 / det };
    u.norm()
}

#[test]
fn the_optimiser_alone_is_within_four_percent_of_an_exhaustive_grid_on_a_four_parameter_box() {
    // Two floors, masses and stiffnesses ±8 %, dampers fixed (ζ ≈ 1 %), frequencies through
    // both resonances and the anti-resonance of floor 1: ridges cross the box's interior.
    // Coordinate search zig-zags along a diagonal ridge, so the optimiser alone falls short
    // of the grid's maximum by up to 3.1 % here (measured; printed below); the study's inner
    // bound also takes the Monte Carlo samples' min and max.
    let (m, k, c) = ([2.0, 1.5], [4000.0, 3500.0], [1.8, 1.4]);
    let model = chain_model(&m, &k);
    let e = 0.08;
    let mut params = Params::defaults_for(&model);
    params.storey_damping_n_s_per_m = Some(c.to_vec());
    params.mass_rel_half_width = vec![e; 2];
    params.stiffness_rel_half_width = vec![e; 2];
    params.damping_rel_half_width = vec![0.0; 2];
    params.force_floor = 2;
    params.f_min_hz = 4.0;
    params.f_max_hz = 12.0;
    params.frequencies = 17;
    params.samples = 0;
    params.outer_max_boxes = 1;
    let out = run(&model, &params, 1);
    let (ol, ou) = (
        column(&out, "inner_optimiser_lower_m"),
        column(&out, "inner_optimiser_upper_m"),
    );
    let freqs = column(&out, "frequency_hz");
    let steps = 30;
    let (mut worst_max, mut worst_min) = (0.0_f64, 0.0_f64);
    let at = |nominal: f64, s: usize| nominal * (1.0 - e + 2.0 * e * s as f64 / steps as f64);
    for cell in 0..ol.len() {
        let (f, floor) = (freqs[cell], cell % 2);
        let w = std::f64::consts::TAU * f;
        let (mut gmin, mut gmax) = (f64::INFINITY, 0.0_f64);
        for a in 0..=steps {
            for b in 0..=steps {
                for p in 0..=steps {
                    for q in 0..=steps {
                        let v = two_floor_receptance(
                            [at(m[0], a), at(m[1], b)],
                            [at(k[0], p), at(k[1], q)],
                            c,
                            w,
                            floor,
                        );
                        gmin = gmin.min(v);
                        gmax = gmax.max(v);
                    }
                }
            }
        }
        worst_max = worst_max.max(1.0 - ou[cell] / gmax);
        worst_min = worst_min.max(ol[cell] / gmin - 1.0);
        assert!(
            ou[cell] >= 0.96 * gmax,
            "{f} Hz floor {floor}: optimiser max {} grid {gmax}",
            ou[cell]
        );
        assert!(
            ol[cell] <= 1.04 * gmin,
            "{f} Hz floor {floor}: optimiser min {} grid {gmin}",
            ol[cell]
        );
    }
    // Printed for STUDIES.md: how far the optimiser alone falls short of the grid.
    println!("optimiser short of the grid: max by {worst_max:.4}, min by {worst_min:.4}");
}

#[test]
fn dense_sampling_of_msd3_stays_in_the_outer_bound_where_resonances_straddle_the_box() {
    use rand::{Rng, SeedableRng};
    let (model, _) = msd3();
    let params = msd3_params(0.05, 0);
    let out = run(&model, &params, 1);
    let unverified: Vec<usize> = out.summary["outer_unverified_frequencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert!(
        !unverified.is_empty(),
        "msd3 at ±5 % should straddle resonances"
    );
    let (ol, ou) = (column(&out, "outer_lower_m"), column(&out, "outer_upper_m"));
    let setup = setup(&model, &plan_params(&model, &params)).unwrap();
    let n = setup.floors;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    for &fi in &unverified {
        let w = std::f64::consts::TAU * setup.frequencies_hz[fi];
        for i in 0..n {
            assert!(ou[fi * n + i] < f64::MAX, "no finite upper bound at {fi}");
        }
        // Random points, then dense lines through the box on which all masses move together
        // with stiffnesses and dampers at either end: those lines cross the resonance ridge,
        // where the largest responses sit.
        let random = (0..20_000).map(|_| {
            (0..setup.params())
                .map(|l| rng.random_range(setup.lo[l]..=setup.hi[l]))
                .collect::<Vec<f64>>()
        });
        let lines = (0..=4000).flat_map(|t| {
            let setup = &setup;
            [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)].map(|(sk, sc)| {
                (0..setup.params())
                    .map(|l| {
                        let s = if l < n {
                            f64::from(t) / 4000.0
                        } else if l < 2 * n {
                            sk
                        } else {
                            sc
                        };
                        setup.lo[l] + (setup.hi[l] - setup.lo[l]) * s
                    })
                    .collect::<Vec<f64>>()
            })
        });
        for p in random.collect::<Vec<_>>().into_iter().chain(lines) {
            let u = dense_solve(&setup, &p, w);
            for i in 0..n {
                assert!(
                    ol[fi * n + i] <= u[i] && u[i] <= ou[fi * n + i],
                    "{u:?} outside [{}, {}] at frequency {fi} floor {i}",
                    ol[fi * n + i],
                    ou[fi * n + i]
                );
            }
        }
    }
}

/// The resolved params `plan` would store.
fn plan_params(model: &ModelSpec, params: &Params) -> Params {
    let json = serde_json::to_value(params).unwrap();
    let plan = crate::plan(
        StudyKind::Uncertainty,
        model,
        &json,
        &crate::Inputs::none(),
        &Budget::default(),
    )
    .unwrap();
    serde_json::from_value(plan.params).unwrap()
}

/// |u| of every floor by a dense complex LU (nalgebra), independent of the tridiagonal solver.
fn dense_solve(setup: &Setup, p: &[f64], w: f64) -> Vec<f64> {
    use crate::chain::C64;
    let n = setup.floors;
    let mut a = nalgebra::DMatrix::<C64>::zeros(n, n);
    for i in 0..n {
        let kc = C64::new(p[n + i], w * p[2 * n + i]);
        a[(i, i)] += kc - C64::new(w * w * p[i], 0.0);
        if i > 0 {
            a[(i - 1, i - 1)] += kc;
            a[(i - 1, i)] -= kc;
            a[(i, i - 1)] -= kc;
        }
    }
    let mut f = nalgebra::DVector::<C64>::zeros(n);
    f[setup.force_floor] = C64::new(1.0, 0.0);
    let x = a.lu().solve(&f).unwrap();
    x.iter().map(|z| z.norm()).collect()
}
