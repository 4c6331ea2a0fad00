//! Tests of the `design` study: moments and failure probability of outputs linear in a
//! Gaussian input against closed forms, chunking invariance, many outputs, validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;

use nalgebra::{DMatrix, DVector};

use super::*;
use crate::StudyKind;
use crate::chain::C64;
use crate::model::builtin_models;

fn three_floor_model() -> ModelSpec {
    let mut m = builtin_models().remove(0).1;
    assert_eq!(m.floors(), 3);
    m.description = "test".into();
    m
}

fn run(model: &ModelSpec, params: &Params, seed: u64) -> StudyOutput {
    let json = serde_json::to_value(params).unwrap();
    let plan = crate::plan(
        StudyKind::Design,
        model,
        &json,
        &crate::Inputs::none(),
        &Budget::default(),
    )
    .unwrap();
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let chunks: Vec<_> = (0..plan.chunks)
        .map(|c| {
            crate::run_chunk(
                StudyKind::Design,
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
    crate::reduce(
        StudyKind::Design,
        model,
        &json,
        seed,
        &chunks,
        &crate::Inputs::none(),
    )
    .unwrap()
}

fn stat(out: &StudyOutput, name: &str) -> Vec<f64> {
    out.arrays[0]
        .columns
        .iter()
        .find(|c| c.name == format!("{name}_in_output_unit"))
        .unwrap()
        .values
        .clone()
}

/// |x| of every floor for a unit force at floor 1 by a dense LU solve (independent of the
/// study's tridiagonal solver).
fn dense_receptance(m: &[f64], k: &[f64], c: &[f64], f_hz: f64) -> Vec<C64> {
    let w = std::f64::consts::TAU * f_hz;
    let n = m.len();
    let mut a = DMatrix::<C64>::zeros(n, n);
    for i in 0..n {
        let kc = C64::new(k[i], w * c[i]);
        a[(i, i)] += kc - C64::new(w * w * m[i], 0.0);
        if i > 0 {
            a[(i - 1, i - 1)] += kc;
            a[(i - 1, i)] -= kc;
            a[(i, i - 1)] -= kc;
        }
    }
    let mut f = DVector::<C64>::zeros(n);
    f[0] = C64::new(1.0, 0.0);
    a.lu().solve(&f).unwrap().iter().copied().collect()
}

/// Everything fixed but the force at floor 1 (Gaussian 1 ± 0.1 N): every output is |H|·f,
/// linear in the Gaussian input (f < 0 has probability 1e-23).
fn linear_params(samples: u64) -> (ModelSpec, Params, Vec<f64>) {
    let model = three_floor_model();
    let (m, k, c) = ([2.0, 1.8, 1.6], [3000.0, 2800.0, 2500.0], [1.5, 1.2, 1.0]);
    let fixed = |v: &[f64]| {
        v.iter()
            .map(|&x| Dist::Gaussian { mean: x, std: 0.0 })
            .collect()
    };
    let params = Params {
        mass_kg: fixed(&m),
        stiffness_n_per_m: fixed(&k),
        damping_n_s_per_m: fixed(&c),
        force_n: vec![
            Dist::Gaussian {
                mean: 1.0,
                std: 0.1,
            },
            Dist::Gaussian {
                mean: 0.0,
                std: 0.0,
            },
            Dist::Gaussian {
                mean: 0.0,
                std: 0.0,
            },
        ],
        frequency_hz: 3.0,
        outputs: vec![
            OutputSel::Displacement(1),
            OutputSel::Displacement(3),
            OutputSel::Shear(2),
        ],
        thresholds: None,
        samples,
        samples_per_chunk: Some(BLOCK_SAMPLES),
        bins: 40,
    };
    let h = dense_receptance(&m, &k, &c, 3.0);
    let gains = vec![h[0].norm(), h[2].norm(), k[1] * (h[1] - h[0]).norm()];
    (model, params, gains)
}

#[test]
fn mean_and_std_of_outputs_linear_in_a_gaussian_input_match_the_closed_form() {
    let n = 40_000;
    let (model, params, gains) = linear_params(n);
    let out = run(&model, &params, 17);
    let (mean, std) = (stat(&out, "mean"), stat(&out, "std"));
    for (a, g) in gains.iter().enumerate() {
        let (mu, sigma) = (g * 1.0, g * 0.1);
        let se_mean = sigma / (n as f64).sqrt();
        let se_std = sigma / (2.0 * n as f64).sqrt();
        assert!(
            (mean[a] - mu).abs() < 4.0 * se_mean,
            "output {a}: mean {} vs {mu}",
            mean[a]
        );
        assert!(
            (std[a] - sigma).abs() < 4.0 * se_std,
            "output {a}: std {} vs {sigma}",
            std[a]
        );
    }
}

#[test]
fn failure_probability_of_a_gaussian_output_matches_phi_within_its_standard_error() {
    let n = 40_000;
    let (model, mut params, gains) = linear_params(n);
    // Threshold at μ + 1.5σ: P_f = 1 − Φ(1.5).
    params.thresholds = Some(gains.iter().map(|g| g * 1.15).collect());
    let out = run(&model, &params, 23);
    let pf = stat(&out, "p_failure");
    let se = stat(&out, "p_failure_std_error");
    let exact = 0.066_807_201_268_858_07; // 1 − Φ(1.5)
    for a in 0..gains.len() {
        assert!(
            (pf[a] - exact).abs() < 4.0 * se[a],
            "output {a}: {} vs {exact} ± {}",
            pf[a],
            se[a]
        );
    }
    // Score-function estimate of ∂P_f/∂μ_f = φ(1.5)/σ_f, with its own standard error.
    let sens = &out
        .arrays
        .iter()
        .find(|a| a.name == "sensitivities")
        .unwrap()
        .columns;
    let names = out.summary["parameters"].as_array().unwrap();
    let k_mean = names.iter().position(|v| v == "force_n[0].mean").unwrap();
    let p = names.len();
    let exact_d = 0.129_517_595_665_891_74 / 0.1;
    for a in 0..gains.len() {
        let (d, d_se) = (
            sens[2].values[a * p + k_mean],
            sens[3].values[a * p + k_mean],
        );
        assert!(
            (d - exact_d).abs() < 4.0 * d_se,
            "output {a}: dPf/dmu {d} vs {exact_d} ± {d_se}"
        );
    }
}

#[test]
fn results_are_identical_for_one_chunk_and_for_many() {
    let (model, mut params, _) = linear_params(4 * BLOCK_SAMPLES + 100);
    params.force_n[1] = Dist::Gamma {
        shape: 4.0,
        scale: 0.05,
    };
    params.stiffness_n_per_m[0] = Dist::Gaussian {
        mean: 3000.0,
        std: 60.0,
    };
    params.samples_per_chunk = Some(BLOCK_SAMPLES);
    let many = run(&model, &params, 5);
    params.samples_per_chunk = Some(100 * BLOCK_SAMPLES);
    let one = run(&model, &params, 5);
    assert_eq!(many, one);
}

#[test]
fn six_and_more_outputs_work_with_the_default_inputs() {
    let model = three_floor_model();
    let mut params = Params::defaults_for(&model);
    assert_eq!(params.outputs.len(), 6);
    params.outputs.push(OutputSel::Shear(1));
    params.outputs.push(OutputSel::Displacement(3));
    params.samples = 5000;
    let out = run(&model, &params, 1);
    let p = out.summary["parameters"].as_array().unwrap().len();
    assert_eq!(p, 20, "{}", out.summary["parameters"]);
    let eig = out.summary["fisher_eigenvalues"].as_array().unwrap();
    assert_eq!(eig.len(), 20);
    let vals: Vec<f64> = eig.iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(vals.windows(2).all(|w| w[0] >= w[1]));
    assert!(vals[0] > 0.0);
    assert_eq!(stat(&out, "mean").len(), 8);
    // 8 outputs: statistics, 8 histograms, sensitivities.
    assert_eq!(out.arrays.len(), 10);
    for h in &out.arrays[1..9] {
        let total: f64 = h.columns[2].values.iter().sum();
        assert!(total > 0.9 * 5000.0, "{}: {total}", h.name);
    }
}

#[test]
fn the_shear_uses_the_complex_relative_displacement_not_a_difference_of_magnitudes() {
    // A frequency where floors 1 and 2 move out of phase (above the second mode).
    let (m, k, c) = ([2.0, 1.8, 1.6], [3000.0, 2800.0, 2500.0], [1.5, 1.2, 1.0]);
    let f = (1..300)
        .map(|i| f64::from(i) * 0.1)
        .find(|&f| {
            let h = dense_receptance(&m, &k, &c, f);
            (h[1] - h[0]).norm() > 1.5 * (h[1].norm() - h[0].norm()).abs()
        })
        .unwrap();
    let (model, mut params, _) = linear_params(1000);
    params.frequency_hz = f;
    params.force_n[0] = Dist::Gaussian {
        mean: 1.0,
        std: 0.0,
    };
    params.force_n[2] = Dist::Gaussian {
        mean: 0.0,
        std: 1e-9,
    };
    let out = run(&model, &params, 3);
    let mean = stat(&out, "mean");
    let h = dense_receptance(&m, &k, &c, f);
    let exact = 2800.0 * (h[1] - h[0]).norm();
    let cristallo = 2800.0 * (h[1].norm() - h[0].norm());
    assert!(
        (mean[2] - exact).abs() < 1e-6 * exact,
        "{} vs {exact}",
        mean[2]
    );
    assert!(
        (mean[2] - cristallo.abs()).abs() > 0.1 * exact,
        "{} {cristallo}",
        mean[2]
    );
}

#[test]
fn digamma_matches_known_values() {
    use super::eval::digamma;
    let euler = 0.577_215_664_901_532_9;
    assert!((digamma(1.0) + euler).abs() < 1e-13);
    assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-13);
    assert!(
        (digamma(10.0) - (-euler + (1..10).map(|k| 1.0 / k as f64).sum::<f64>())).abs() < 1e-13
    );
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let model = three_floor_model();
    let mut p = Params::defaults_for(&model);
    p.mass_kg[0] = Dist::Gaussian {
        mean: 1.0,
        std: 0.5,
    };
    p.stiffness_n_per_m.pop();
    p.damping_n_s_per_m[1] = Dist::Gamma {
        shape: -1.0,
        scale: 1.0,
    };
    p.frequency_hz = 0.0;
    p.outputs.push(OutputSel::Shear(4));
    p.thresholds = Some(vec![1.0]);
    p.samples = 0;
    p.bins = 1;
    let Err(StudyError::Invalid(problems)) =
        check(&model, &p, &Budget::default(), &crate::Inputs::none())
    else {
        panic!("expected Invalid");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in [
        "params.mass_kg[0]",
        "params.stiffness_n_per_m",
        "params.damping_n_s_per_m[1]",
        "params.frequency_hz",
        "params.outputs[6]",
        "params.thresholds",
        "params.samples",
        "params.bins",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn the_plan_counts_the_solve_and_the_score_sums_per_sample_and_refuses_above_the_budget() {
    let model = three_floor_model();
    let mut p = Params::defaults_for(&model);
    p.samples = 1_000_000;
    let plan = check(&model, &p, &Budget::default(), &crate::Inputs::none()).unwrap();
    // Per sample: 3 floors, and 6 outputs' 21 pairs × the random inputs' 2 parameters each.
    let random = p.inputs().iter().filter(|d| d.is_random()).count() as u64;
    assert_eq!(plan.work_units, 1_000_000 * (3 + 21 * 2 * random));
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
fn the_default_budget_gives_a_million_samples_several_chunks_per_worker() {
    let model = three_floor_model();
    let submitted = serde_json::json!({ "samples": 1_000_000 });
    let plan = crate::plan(
        crate::StudyKind::Design,
        &model,
        &submitted,
        &crate::Inputs::none(),
        &Budget::default(),
    )
    .unwrap();
    let p: Params = serde_json::from_value(plan.params).unwrap();
    let per_chunk = p.samples_per_chunk.unwrap();
    assert_eq!(per_chunk % BLOCK_SAMPLES, 0);
    assert_eq!(u64::from(plan.chunks), 1_000_000_u64.div_ceil(per_chunk));
    assert!((8..=64).contains(&plan.chunks), "{} chunks", plan.chunks);
}

#[test]
fn a_cancelled_chunk_stops() {
    let model = three_floor_model();
    let json = serde_json::to_value(Params::defaults_for(&model)).unwrap();
    let flag = AtomicBool::new(true);
    let ctx = ChunkCtx::new(&flag);
    let r = crate::run_chunk(
        StudyKind::Design,
        &model,
        &json,
        1,
        0,
        &ctx,
        &crate::Inputs::none(),
    );
    assert_eq!(r, Err(StudyError::Cancelled));
}

/// The direct per-sample formula (the loop `sample::run` replaced): one sample at a time, the
/// scalar chain solve, and each sum a plain running sum in sample order. The reference for the
/// lane-wise loop.
#[allow(clippy::needless_range_loop)] // indices, as in the formulas
fn run_per_sample(
    params: &Params,
    pilot: &pilot::Pilot,
    seed: u64,
    first: u64,
    count: u64,
) -> Result<sample::ChunkSums, StudyError> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Gamma, StandardNormal};
    let n = params.mass_kg.len();
    let inputs = params.inputs();
    let th = eval::thetas(params);
    let (o, p, bins) = (params.outputs.len(), th.len(), pilot.bins);
    let omega = std::f64::consts::TAU * params.frequency_hz;
    let mut out = sample::ChunkSums {
        first_block: first / BLOCK_SAMPLES,
        blocks: Vec::new(),
        min: vec![f64::INFINITY; o],
        max: vec![f64::NEG_INFINITY; o],
        histogram: vec![0; o * bins],
        under: vec![0; o],
        over: vec![0; o],
        failures: vec![0; o],
    };
    let empty = |o: usize, p: usize| sample::BlockSums {
        n: 0,
        y: vec![0.0; o],
        yy: vec![0.0; o * o],
        s: vec![0.0; p],
        ys: vec![0.0; o * p],
        yys: vec![0.0; o * o * p],
        fs: vec![0.0; o * p],
        fss: vec![0.0; o * p],
    };
    let mut x = vec![0.0; inputs.len()];
    let (mut y, mut s) = (vec![0.0; o], vec![0.0; p]);
    let (mut u, mut scratch) = (Vec::new(), crate::chain::Scratch::default());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut block = empty(o, p);
    for idx in first..first + count {
        if idx % BLOCK_SAMPLES == 0 || idx == first {
            if block.n > 0 {
                out.blocks.push(std::mem::replace(&mut block, empty(o, p)));
            }
            rng = rand_chacha::ChaCha8Rng::seed_from_u64(crate::chunk_seed(
                seed,
                (idx / BLOCK_SAMPLES) as u32,
            ));
        }
        for (j, d) in inputs.iter().enumerate() {
            x[j] = match *d {
                Dist::Gaussian { mean, std } if std > 0.0 => {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    mean + std * z
                }
                Dist::Gamma { shape, scale } if scale > 0.0 => {
                    Gamma::new(shape, scale).unwrap().sample(&mut rng)
                }
                d => d.mean(),
            };
        }
        if let Some(j) = (0..2 * n).find(|&j| x[j].is_nan() || x[j] <= 0.0) {
            return Err(StudyError::Numerics(format!(
                "sample {idx} drew a non-positive {} ({}); narrow its distribution",
                if j < n { "mass" } else { "stiffness" },
                x[j]
            )));
        }
        eval::outputs(n, &params.outputs, omega, &x, &mut y, &mut u, &mut scratch)?;
        for (k, t) in th.iter().enumerate() {
            let d = inputs[t.input];
            let dg = match d {
                Dist::Gamma { shape, .. } => eval::digamma(shape),
                Dist::Gaussian { .. } => 0.0,
            };
            s[k] = eval::score(&d, t.which, x[t.input], dg);
        }
        for a in 0..o {
            let v = y[a];
            if !v.is_finite() {
                return Err(StudyError::Numerics(format!(
                    "sample {idx} gave a non-finite output"
                )));
            }
            out.min[a] = out.min[a].min(v);
            out.max[a] = out.max[a].max(v);
            let pos = (v - pilot.lower[a]) / pilot.width[a];
            if pos < 0.0 {
                out.under[a] += 1;
            } else if pos >= bins as f64 {
                out.over[a] += 1;
            } else {
                out.histogram[a * bins + pos as usize] += 1;
            }
            if v > pilot.threshold[a] {
                out.failures[a] += 1;
                for k in 0..p {
                    block.fs[a * p + k] += s[k];
                    block.fss[a * p + k] += s[k] * s[k];
                }
            }
        }
        block.n += 1;
        for a in 0..o {
            block.y[a] += y[a];
            for k in 0..p {
                block.ys[a * p + k] += y[a] * s[k];
            }
            for b in 0..o {
                block.yy[a * o + b] += y[a] * y[b];
                if b >= a {
                    for k in 0..p {
                        block.yys[(a * o + b) * p + k] += y[a] * y[b] * s[k];
                    }
                }
            }
        }
        for k in 0..p {
            block.s[k] += s[k];
        }
    }
    if block.n > 0 {
        out.blocks.push(block);
    }
    Ok(out)
}

/// Every input random (Gaussian masses and stiffnesses, Gamma dampers and forces), 7 outputs
/// with repeats, thresholds near the means so that many samples fail.
fn mixed_params() -> (ModelSpec, Params) {
    let model = three_floor_model();
    let mut params = Params::defaults_for(&model);
    params.damping_n_s_per_m = vec![
        Dist::Gamma {
            shape: 30.0,
            scale: 0.07,
        },
        Dist::Gamma {
            shape: 9.0,
            scale: 0.1,
        },
        Dist::Gamma {
            shape: 12.0,
            scale: 0.2,
        },
    ];
    params.force_n = vec![
        Dist::Gamma {
            shape: 50.0,
            scale: 0.02,
        },
        Dist::Gaussian {
            mean: 0.5,
            std: 0.05,
        },
        Dist::Gamma {
            shape: 4.0,
            scale: 0.1,
        },
    ];
    params.outputs.push(OutputSel::Shear(2));
    let pilot = pilot::pilot(3, &params).unwrap();
    params.thresholds = Some(pilot.nominal.clone());
    (model, params)
}

fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-12 * scale,
            "{what}[{i}]: {x} vs {y} (scale {scale})"
        );
    }
}

#[test]
fn the_lane_wise_sums_match_the_direct_per_sample_formula() {
    let (_, params) = mixed_params();
    let pilot = pilot::pilot(3, &params).unwrap();
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    // Two blocks, the second ending in a short group of 37 samples.
    let count = BLOCK_SAMPLES + 3 * lanes::LANES as u64 + 37;
    let lanes = sample::run(3, &params, &pilot, 9, BLOCK_SAMPLES, count, &ctx).unwrap();
    let direct = run_per_sample(&params, &pilot, 9, BLOCK_SAMPLES, count).unwrap();
    // Counts and extremes exactly; failures are common here (thresholds at the nominal:
    // about one sample in ten).
    assert_eq!(lanes.first_block, direct.first_block);
    assert_eq!(lanes.min, direct.min);
    assert_eq!(lanes.max, direct.max);
    assert_eq!(lanes.histogram, direct.histogram);
    assert_eq!((&lanes.under, &lanes.over), (&direct.under, &direct.over));
    assert_eq!(lanes.failures, direct.failures);
    assert!(
        lanes.failures.iter().all(|&f| f > count / 20),
        "{:?}",
        lanes.failures
    );
    assert_eq!(lanes.blocks.len(), 2);
    for (l, d) in lanes.blocks.iter().zip(&direct.blocks) {
        assert_eq!(l.n, d.n);
        close(&l.y, &d.y, "Σy");
        close(&l.yy, &d.yy, "Σyy");
        close(&l.s, &d.s, "Σs");
        close(&l.ys, &d.ys, "Σys");
        close(&l.yys, &d.yys, "Σyys");
        close(&l.fs, &d.fs, "Σfs");
        close(&l.fss, &d.fss, "Σfss");
    }
}

#[test]
fn the_lane_wise_solve_gives_the_same_bits_as_the_per_sample_solve() {
    let (_, params) = mixed_params();
    let inputs = params.inputs();
    let omega = std::f64::consts::TAU * params.frequency_hz;
    let o = params.outputs.len();
    let mut x = vec![0.0; inputs.len() * lanes::LANES];
    // Inputs spread ±30 % around the means, a different mix in every lane.
    for (j, d) in inputs.iter().enumerate() {
        for l in 0..lanes::LANES {
            let t = ((j * 7 + l * 13) % 29) as f64 / 28.0;
            x[j * lanes::LANES + l] = d.mean() * (0.7 + 0.6 * t);
        }
    }
    let mut y = vec![0.0; o * lanes::LANES];
    let mut sc = lanes::SolveScratch::default();
    let singular = lanes::outputs(3, &params.outputs, omega, &x, &mut y, &mut sc);
    assert_eq!(singular, None);
    let (mut u, mut scratch, mut y1) = (Vec::new(), crate::chain::Scratch::default(), vec![0.0; o]);
    for l in 0..lanes::LANES {
        let xl: Vec<f64> = (0..inputs.len()).map(|j| x[j * lanes::LANES + l]).collect();
        eval::outputs(
            3,
            &params.outputs,
            omega,
            &xl,
            &mut y1,
            &mut u,
            &mut scratch,
        )
        .unwrap();
        for a in 0..o {
            assert_eq!(
                y[a * lanes::LANES + l].to_bits(),
                y1[a].to_bits(),
                "lane {l} output {a}"
            );
        }
    }
}

#[test]
fn the_first_bad_sample_is_reported_as_by_the_per_sample_loop() {
    let (_, mut params) = mixed_params();
    // Masses that are often drawn ≤ 0 (the plan would refuse this; the loop must still say
    // which sample first went wrong).
    params.mass_kg[1] = Dist::Gaussian {
        mean: 5.0,
        std: 2.5,
    };
    let pilot = pilot::pilot(3, &params).unwrap();
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let lanes = sample::run(3, &params, &pilot, 3, 0, 4096, &ctx).unwrap_err();
    let direct = run_per_sample(&params, &pilot, 3, 0, 4096).unwrap_err();
    assert_eq!(lanes, direct);
    assert!(lanes.to_string().contains("non-positive mass"), "{lanes}");
}
