//! The three solvers of the Southampton frame as separate commands, so each can be timed as a
//! whole process: `write` puts the CalculiX deck and the OpenSeesPy script of a mesh into a
//! directory (run them with `ccx -i frame` there and `python frame.py`), `builtin` solves the
//! built-in model and prints its frequencies as the script does.
//!
//! Run: `cargo run --release -p dtop-fe --example frame_peers -- write DIR ELEMENTS_PER_LEG
//! [CCX_GRADED_ELEMENTS_PER_LEG]` or `... -- builtin ELEMENTS_PER_LEG`. 12 modes each; the
//! deck's legs are the shared mesh unless a graded count is given.

use dtop_fe::calculix::{DeckOptions, LegMesh, write_deck};
use dtop_fe::opensees::{FREQUENCY_LINE, write_script};
use dtop_fe::{FrameConfig, FrameModel};

const MODES: usize = 12;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: frame_peers write DIR ELEMENTS_PER_LEG [CCX_GRADED_ELEMENTS_PER_LEG] | \
                 frame_peers builtin ELEMENTS_PER_LEG";
    let per_leg = |i: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args.get(i).ok_or(usage)?.parse()?)
    };
    match args.first().map(String::as_str) {
        Some("write") => {
            let dir = std::path::Path::new(args.get(1).ok_or(usage)?);
            let config = FrameConfig {
                elements_per_leg: per_leg(2)?,
                ..FrameConfig::southampton()
            };
            let leg_mesh = match args.get(3) {
                Some(graded) => LegMesh::Graded {
                    elements_per_leg: graded.parse()?,
                },
                None => LegMesh::Shared,
            };
            let deck = write_deck(
                &config,
                &DeckOptions {
                    modes: MODES,
                    leg_mesh,
                    ..DeckOptions::default()
                },
            )?;
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("frame.inp"), deck)?;
            std::fs::write(dir.join("frame.py"), write_script(&config, MODES)?)?;
        }
        Some("builtin") => {
            let config = FrameConfig {
                elements_per_leg: per_leg(1)?,
                ..FrameConfig::southampton()
            };
            for mode in FrameModel::new(config)?.modes(MODES)?.modes {
                println!("{FREQUENCY_LINE} {}", mode.frequency_hz);
            }
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
