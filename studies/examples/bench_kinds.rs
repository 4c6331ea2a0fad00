//! Benchmark driver for the `design` and `uncertainty` study kinds: plans one study, runs every
//! chunk in order on this one thread, reduces, and prints a one-line digest, so a whole-process
//! timer can compare it with the NumPy peers in `studies/benches/peers/`. Not a test.
//!
//! `cargo run --release -p dtop-studies --example bench_kinds -- design|uncertainty`
//! - `design`: Cristallo's 3-floor defaults (TOOLS.md §4.2, c₂/c₃ as Gaussians), all 6 outputs,
//!   10^6 samples.
//! - `uncertainty`: Cristallo's msd3 chain (TOOLS.md §3.2), 5 % on all 9 parameters, force at
//!   floor 3, 1000 frequencies over 5–200 rad/s (in Hz), 10^5 Monte Carlo samples; the bounds
//!   chunk is kept small (corners only, one box) so the figure is the Monte Carlo part.

use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use dtop_dynamics::{Damping, ShearBuildingConfig};
use dtop_studies::model::SensorLayout;
use dtop_studies::{Budget, ChunkCtx, ModelSpec, StudyKind, kinds};

fn msd3() -> ModelSpec {
    ModelSpec {
        description: "Cristallo msd3 chain".into(),
        structure: ShearBuildingConfig {
            floor_masses_kg: vec![5.362e4, 5.144e4, 5.142e4],
            storey_stiffness_n_per_m: vec![3.846e8, 4.464e8, 4.589e8],
            damping: Damping::Modal {
                zetas: vec![0.01; 3],
            },
            actuator: None,
        },
        sensors: SensorLayout::default(),
    }
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    let (kind, model, params) = match which.as_str() {
        "design" => {
            let model = dtop_studies::model::builtin_models().remove(0).1;
            let mut p = kinds::design::Params::defaults_for(&model);
            p.samples = 1_000_000;
            (StudyKind::Design, model, serde_json::to_value(p)?)
        }
        "uncertainty" => {
            let model = msd3();
            let mut p = kinds::uncertainty::Params::defaults_for(&model);
            p.storey_damping_n_s_per_m = Some(vec![1.699e4, 1.016e4, 1.34e4]);
            p.force_floor = 3;
            p.f_min_hz = 5.0 / std::f64::consts::TAU;
            p.f_max_hz = 200.0 / std::f64::consts::TAU;
            p.frequencies = 1000;
            p.samples = 100_000;
            p.outer_max_boxes = 1;
            p.inner_search_sweeps = 0;
            (StudyKind::Uncertainty, model, serde_json::to_value(p)?)
        }
        other => bail!("usage: bench_kinds design|uncertainty (got {other:?})"),
    };
    let resolved = dtop_studies::plan(
        kind,
        &model,
        &params,
        &dtop_studies::Inputs::none(),
        &Budget::default(),
    )
    .context("planning the study")?;
    let params = resolved.params.clone();
    let plan = resolved;
    let flag = AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let mut chunks = Vec::with_capacity(plan.chunks as usize);
    for c in 0..plan.chunks {
        chunks.push(dtop_studies::run_chunk(
            kind,
            &model,
            &params,
            1,
            c,
            &ctx,
            &dtop_studies::Inputs::none(),
        )?);
    }
    let out = dtop_studies::reduce(
        kind,
        &model,
        &params,
        1,
        &chunks,
        &dtop_studies::Inputs::none(),
    )?;
    let digest = match kind {
        StudyKind::Design => {
            let mean = &out.arrays[0].columns[1].values;
            format!("outputs mean {mean:?}")
        }
        _ => {
            let cols = &out.arrays[0].columns;
            let mean = cols
                .iter()
                .find(|c| c.name == "mc_mean_m")
                .map(|c| c.values.iter().sum::<f64>());
            format!("sum of mean |u| {mean:?}")
        }
    };
    println!(
        "{kind}: {} chunks, {} work units, {digest}",
        plan.chunks, plan.work_units
    );
    Ok(())
}
