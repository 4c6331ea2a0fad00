//! Measures wall time of each study kind this crate implements (modal, frf, control,
//! simulate) at its defaults on the built-in models, plus a Monte Carlo simulate, one chunk
//! after another on one thread. A benchmark, not a test: prints figures, asserts nothing.
//!
//! `cargo run --release -p dtop-studies --example study_timing`

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use dtop_studies::model::builtin_models;
use dtop_studies::{Budget, ChunkCtx, Inputs, StudyKind, defaults, plan, reduce, run_chunk};

fn time_study(
    kind: StudyKind,
    name: &str,
    model: &dtop_studies::ModelSpec,
    params: &serde_json::Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let start = Instant::now();
    let p = plan(kind, model, params, &Inputs::none(), &Budget::default())?;
    let chunks = (0..p.chunks)
        .map(|i| run_chunk(kind, model, params, 1, i, &ctx, &Inputs::none()))
        .collect::<Result<Vec<_>, _>>()?;
    let out = reduce(kind, model, params, 1, &chunks, &Inputs::none())?;
    let elapsed = start.elapsed();
    let rows: usize = out.arrays.iter().map(|a| a.rows()).sum();
    println!(
        "{kind:<9} {name:<22} chunks {:>3}  work units {:>12}  {:>9.1} ms  ({:.1} ns/work unit, {rows} array rows)",
        p.chunks,
        p.work_units,
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e9 / p.work_units.max(1) as f64,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (name, model) in builtin_models() {
        for kind in [
            StudyKind::Modal,
            StudyKind::Frf,
            StudyKind::Control,
            StudyKind::Simulate,
        ] {
            time_study(kind, name, &model, &defaults(kind, &model))?;
        }
    }
    let (name, model) = builtin_models()
        .into_iter()
        .next()
        .ok_or("no built-in model")?;
    let mut params = defaults(StudyKind::Simulate, &model);
    params["dispersion"] = serde_json::json!({
        "n_samples": 20, "mass_rel_std": 0.02, "stiffness_rel_std": 0.05, "damping_rel_std": 0.2
    });
    time_study(
        StudyKind::Simulate,
        &format!("{name} MC x20"),
        &model,
        &params,
    )?;
    Ok(())
}
