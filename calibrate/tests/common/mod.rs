//! Synthetic FRFs from closed forms and from dtop-dynamics, shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::TAU;
use std::path::PathBuf;

use dtop_calibrate::measured::C64;
use dtop_calibrate::{FrfValues, MeasuredFrf};
use dtop_dynamics::frf::{input_load, second_order_response};
use dtop_dynamics::{Damping, FrfInput, ShearBuilding, ShearBuildingConfig};

/// A mode of the closed-form test FRF.
pub struct SdofMode {
    pub f_hz: f64,
    pub zeta: f64,
    /// Receptance modal constant per channel, 1/kg.
    pub constants: Vec<f64>,
}

/// The uniform grid f_lo, f_lo + df, …, ≤ f_hi.
pub fn grid(f_lo: f64, f_hi: f64, df: f64) -> Vec<f64> {
    let n = ((f_hi - f_lo) / df).round() as usize;
    (0..=n).map(|i| f_lo + i as f64 * df).collect()
}

/// Accelerance −ω²·Σ A/(ω_r² − ω² + 2jζω_rω), the textbook sum of viscous SDOF terms.
pub fn closed_form_frf(modes: &[SdofMode], frequencies_hz: &[f64]) -> MeasuredFrf {
    let channels = modes[0].constants.len();
    let values = (0..channels)
        .map(|c| {
            frequencies_hz
                .iter()
                .map(|&f| {
                    let w = TAU * f;
                    let receptance: C64 = modes
                        .iter()
                        .map(|m| {
                            let wr = TAU * m.f_hz;
                            C64::from(m.constants[c])
                                / C64::new(wr * wr - w * w, 2.0 * m.zeta * wr * w)
                        })
                        .sum();
                    receptance * (-w * w)
                })
                .collect()
        })
        .collect();
    MeasuredFrf {
        frequencies_hz: frequencies_hz.to_vec(),
        input_floor: 1,
        output_floors: (1..=channels).collect(),
        accelerance_m_s2_per_n: FrfValues::Complex { channels: values },
        coherence: None,
    }
}

/// A 3-storey chain unlike Southampton (unequal masses and storeys), Rayleigh-damped.
pub fn test_chain() -> ShearBuilding {
    ShearBuilding::new(ShearBuildingConfig {
        floor_masses_kg: vec![5.0, 4.0, 3.0],
        storey_stiffness_n_per_m: vec![40_000.0, 30_000.0, 20_000.0],
        damping: Damping::Rayleigh {
            alpha_per_s: 0.4,
            beta_s: 4.0e-5,
        },
        actuator: None,
    })
    .unwrap()
}

/// Accelerance of `building` from a force at `input_floor` to every floor, by the
/// second-order solve of dtop-dynamics (independent of any modal decomposition).
pub fn model_frf(
    building: &ShearBuilding,
    input_floor: usize,
    frequencies_hz: &[f64],
) -> MeasuredFrf {
    let load = input_load(building, FrfInput::FloorForce { floor: input_floor }).unwrap();
    let floors = building.floors();
    let mut values = vec![Vec::with_capacity(frequencies_hz.len()); floors];
    for &f in frequencies_hz {
        let w = TAU * f;
        let x = second_order_response(
            building.mass_matrix(),
            building.damping_matrix(),
            building.stiffness_matrix(),
            &load,
            w,
        )
        .unwrap();
        for (c, column) in values.iter_mut().enumerate() {
            column.push(x[c] * (-w * w));
        }
    }
    MeasuredFrf {
        frequencies_hz: frequencies_hz.to_vec(),
        input_floor,
        output_floors: (1..=floors).collect(),
        accelerance_m_s2_per_n: FrfValues::Complex { channels: values },
        coherence: None,
    }
}

/// Relative error |got − want| / |want|.
pub fn rel(got: f64, want: f64) -> f64 {
    ((got - want) / want).abs()
}

/// The Cristallo data directory: `shared/data/cristallo` beside an ancestor of this crate
/// (the worktree's or the main checkout's parent), or `DTOP_CRISTALLO_DATA`.
pub fn cristallo_file(name: &str) -> String {
    let dir = std::env::var_os("DTOP_CRISTALLO_DATA")
        .map(PathBuf::from)
        .or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|a| a.join("shared/data/cristallo"))
                .find(|p| p.is_dir())
        })
        .expect("the Cristallo data (shared/data/cristallo) must be reachable, or set DTOP_CRISTALLO_DATA");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}
