//! Benchmark and comparison: the built-in frame solver against CalculiX and OpenSees on the
//! Southampton frame. Prints each solver's wall time and the first modes side by side.
//!
//! Run: `cargo run --release -p dtop-fe --example frame_vs_calculix -- [BUILTIN_ELEMENTS_PER_LEG]
//! [CCX_ELEMENTS_PER_LEG] [REPEATS] [equal|graded]` (defaults 8, 24, 5, equal: ccx's legs
//! meshed like the built-in's, or cosine-graded towards the joints). Needs `ccx` on PATH;
//! writes its jobs into a fresh directory under the system temp dir. With `DTOP_TEST_PYTHON`
//! set to a Python that has `openseespy` (scripts/test.sh's venv), OpenSees runs the built-in's
//! mesh too.

use std::process::Command;
use std::time::{Duration, Instant};

use dtop_fe::calculix::{DeckOptions, LegMesh, RunOptions, run_ccx, write_deck};
use dtop_fe::opensees::{parse_frequencies, write_script};
use dtop_fe::{FrameConfig, FrameModel};

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let elements_per_leg: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let ccx_elements_per_leg: usize = args.next().map_or(Ok(24), |a| a.parse())?;
    let repeats: usize = args.next().map_or(Ok(5), |a| a.parse())?.max(1);
    let graded = match args.next().as_deref() {
        None | Some("equal") => false,
        Some("graded") => true,
        Some(other) => return Err(format!("spacing {other:?}: give `equal` or `graded`").into()),
    };
    let modes = 12;
    let config = FrameConfig {
        elements_per_leg,
        ..FrameConfig::southampton()
    };
    let (ccx_config, leg_mesh) = if graded {
        (
            config.clone(),
            LegMesh::Graded {
                elements_per_leg: ccx_elements_per_leg,
            },
        )
    } else {
        (
            FrameConfig {
                elements_per_leg: ccx_elements_per_leg,
                ..FrameConfig::southampton()
            },
            LegMesh::Shared,
        )
    };

    let mut builtin_times = Vec::new();
    let mut builtin = None;
    for _ in 0..repeats {
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
            leg_mesh,
            ..DeckOptions::default()
        },
    )?;
    let mut ccx_times = Vec::new();
    let mut ccx = None;
    for _ in 0..repeats {
        let started = Instant::now();
        let run = run_ccx(&deck, &dir, "frame", &RunOptions::default())?;
        ccx_times.push(started.elapsed());
        ccx = Some(run);
    }
    let ccx = ccx.ok_or("no run")?;

    let mut opensees_times = Vec::new();
    let mut opensees: Option<Vec<f64>> = None;
    if let Ok(python) = std::env::var("DTOP_TEST_PYTHON") {
        let script_path = dir.join("frame.py");
        std::fs::write(&script_path, write_script(&config, modes)?)?;
        for _ in 0..repeats {
            let started = Instant::now();
            let output = Command::new(&python).arg(&script_path).output()?;
            opensees_times.push(started.elapsed());
            if !output.status.success() {
                return Err(format!(
                    "OpenSees script failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            opensees = Some(parse_frequencies(&String::from_utf8_lossy(&output.stdout))?);
        }
    }
    std::fs::remove_dir_all(&dir)?;

    println!(
        "Southampton frame, {modes} modes, {repeats} runs each: built-in {elements_per_leg} \
         elements per leg ({dofs} DOFs), ccx {ccx_elements_per_leg} {} B31 per leg",
        if graded { "cosine-graded" } else { "equal" }
    );
    println!(
        "built-in (mesh + assemble + dense eigen): median {:.1} ms",
        median(&mut builtin_times)
    );
    println!(
        "ccx B31 (write deck to disk + ccx + parse, 1 thread): median {:.1} ms",
        median(&mut ccx_times)
    );
    if !opensees_times.is_empty() {
        println!(
            "OpenSees (python start + openseespy import + model + ARPACK eigen): median \
             {:.1} ms",
            median(&mut opensees_times)
        );
    }
    println!(
        "mode  class      built-in Hz   ccx Hz     ccx %    ccx class     OpenSees Hz  OpenSees %"
    );
    for (i, (b, c)) in builtin.modes.iter().zip(&ccx.modes).enumerate() {
        let peer = opensees
            .as_ref()
            .and_then(|f| f.get(i))
            .map_or(String::new(), |f| {
                format!("{f:>12.4}  {:>+9.4}", (f / b.frequency_hz - 1.0) * 100.0)
            });
        println!(
            "{:>4}  {:<9}  {:>10.4}  {:>10.4}  {:>+7.3}   {:<12}  {peer}",
            i + 1,
            format!("{:?}", b.class),
            b.frequency_hz,
            c.frequency_hz,
            (c.frequency_hz / b.frequency_hz - 1.0) * 100.0,
            format!("{:?}", c.effective_mass.map(|m| m.class())),
        );
    }
    Ok(())
}
