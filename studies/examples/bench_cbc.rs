//! Benchmark of the `cbc` study kind (issue 15): times each of its three chunks on one thread
//! (0: numerical continuation of the response curve through its folds; 1: the simulated CBC
//! experiment with its reference continuation in forcing; 2: the open-loop up and down sweeps,
//! each point run to steady state, the way Cristallo traced the curve) and prints the points,
//! folds and CBC iterations the reduce reports. The sweeps are the peer in the same run: the
//! same curve by brute-force time integration. Not a test.
//!
//! `cargo run --release -p dtop-studies --example bench_cbc -- [MODEL] [RUNS]`
//! (MODEL a built-in: `southampton` by default; RUNS 3 by default, median printed).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use dtop_studies::{Budget, ChunkCtx, Inputs, StudyKind};

fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "southampton".into());
    let runs: usize = std::env::args()
        .nth(2)
        .map_or(Ok(3), |r| r.parse())
        .context("RUNS")?;
    let model = dtop_studies::model::builtin_models()
        .into_iter()
        .find(|(n, _)| *n == name)
        .with_context(|| format!("no built-in model {name}"))?
        .1;
    let none = Inputs::none();
    let plan = dtop_studies::plan(
        StudyKind::Cbc,
        &model,
        &serde_json::json!({}),
        &none,
        &Budget::default(),
    )
    .context("planning")?;
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let mut times_s: Vec<Vec<f64>> = vec![Vec::new(); plan.chunks as usize];
    let mut outputs = Vec::new();
    for _ in 0..runs.max(1) {
        outputs.clear();
        for chunk in 0..plan.chunks {
            let t = Instant::now();
            outputs.push(dtop_studies::run_chunk(
                StudyKind::Cbc,
                &model,
                &plan.params,
                1,
                chunk,
                &ctx,
                &none,
            )?);
            times_s[chunk as usize].push(t.elapsed().as_secs_f64());
        }
    }
    let out = dtop_studies::reduce(StudyKind::Cbc, &model, &plan.params, 1, &outputs, &none)?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let s = &out.summary;
    let rows = |name: &str| {
        out.arrays
            .iter()
            .find(|a| a.name == name)
            .map_or(0, dtop_studies::NamedArray::rows)
    };
    let iterations: Vec<f64> = out
        .arrays
        .iter()
        .find(|a| a.name == "cbc_points")
        .and_then(|a| a.columns.iter().find(|c| c.name == "iterations"))
        .map(|c| c.values.clone())
        .unwrap_or_default();
    let cbc_points = iterations.len().max(1) as f64;
    println!("model {name}, {runs} runs, median wall time on one thread");
    println!(
        "continuation: {:.3} s, {} points, folds {}",
        median(&mut times_s[0]),
        rows("response_curve"),
        s["folds"]
    );
    let t_cbc = median(&mut times_s[1]);
    println!(
        "cbc: {:.3} s for {} points ({:.3} s a point, {:.1} iterations a point; reference curve {} points), folds {}",
        t_cbc,
        iterations.len(),
        t_cbc / cbc_points,
        iterations.iter().sum::<f64>() / cbc_points,
        rows("cbc_reference"),
        s["cbc"]["folds"]
    );
    println!(
        "sweeps (peer: time integration to steady state): {:.3} s, {} + {} points, {}",
        median(&mut times_s[2]),
        rows("sweep_up"),
        rows("sweep_down"),
        s["sweeps"]
    );
    Ok(())
}
