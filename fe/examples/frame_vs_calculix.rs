//! Benchmark and comparison: the built-in frame solver against CalculiX on the same
//! Southampton frame and mesh. Prints each solver's wall time and the first modes side by side.
//!
//! Run: `cargo run --release -p dtop-fe --example frame_vs_calculix -- [BUILTIN_ELEMENTS_PER_LEG]
//! [CCX_ELEMENTS_PER_LEG] [REPEATS]` (defaults 8, 24, 5)
//! (needs `ccx` on PATH; writes its job into a fresh directory under the system temp dir).

use std::time::{Duration, Instant};

use dtop_fe::calculix::{DeckOptions, RunOptions, run_ccx, write_deck};
use dtop_fe::{FrameConfig, FrameModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let elements_per_leg: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let ccx_elements_per_leg: usize = args.next().map_or(Ok(24), |a| a.parse())?;
    let repeats: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let modes = 12;
    let config = FrameConfig {
        elements_per_leg,
        ..FrameConfig::southampton()
    };
    let ccx_config = FrameConfig {
        elements_per_leg: ccx_elements_per_leg,
        ..FrameConfig::southampton()
    };

    let mut builtin_times = Vec::new();
    let mut builtin = None;
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        let model = FrameModel::new(config.clone())?;
        let solved = model.modes(modes)?;
        builtin_times.push(started.elapsed());
        builtin = Some((model.dofs(), solved));
    }
    let (dofs, builtin) = builtin.ok_or("no run")?;

    let dir = std::env::temp_dir().join(format!("dtop-fe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let deck = write_deck(
        &ccx_config,
        &DeckOptions {
            modes,
            ..DeckOptions::default()
        },
    )?;
    let mut ccx_times = Vec::new();
    let mut ccx = None;
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        let run = run_ccx(&deck, &dir, "frame", &RunOptions::default())?;
        ccx_times.push(started.elapsed());
        ccx = Some(run);
    }
    let ccx = ccx.ok_or("no run")?;
    std::fs::remove_dir_all(&dir)?;

    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    println!(
        "Southampton frame, {modes} modes, {repeats} runs each: built-in {elements_per_leg} elements per leg ({dofs} DOFs), ccx {ccx_elements_per_leg} B31 per leg"
    );
    println!(
        "built-in (mesh + assemble + dense eigen): median {:.1} ms",
        median(&mut builtin_times).as_secs_f64() * 1e3
    );
    println!(
        "ccx B31 (write deck to disk + ccx + parse, 1 thread): median {:.1} ms",
        median(&mut ccx_times).as_secs_f64() * 1e3
    );
    println!("mode  class      built-in Hz   ccx Hz     diff %   ccx class");
    for (i, (b, c)) in builtin.modes.iter().zip(&ccx.modes).enumerate() {
        println!(
            "{:>4}  {:<9}  {:>10.4}  {:>10.4}  {:>+7.3}   {:?}",
            i + 1,
            format!("{:?}", b.class),
            b.frequency_hz,
            c.frequency_hz,
            (c.frequency_hz / b.frequency_hz - 1.0) * 100.0,
            c.effective_mass.map(|m| m.class())
        );
    }
    Ok(())
}
