//! Benchmark of the issue-14 goal "time to identify 10 minutes of 4 channels at 1 kHz (< 2 s on
//! one core)", and the record for the pyOMA2 peer (`oma/bench/pyoma2_ssi.py`).
//!
//! Simulates a four-storey chain of Southampton floors and storeys (Rayleigh damping, 0.2 % on
//! modes 1 and 2) under independent white floor forces, 10 minutes of floor accelerations at
//! 1 kHz with 2 % measurement noise; times SSI-cov plus mode picking, and FDD, on one thread
//! (median of 5 runs); prints the modes against the model's; writes the record as raw
//! little-endian f64, sample-major (N × 4), to `target/oma-bench/record.f64`, and the truth to
//! `target/oma-bench/truth.json`.
//!
//! `cargo run --release -p dtop-oma --example bench_ssi`

#![allow(clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use dtop_dynamics::frf::modal_analysis;
use dtop_dynamics::{Damping, ShearBuilding, ShearBuildingConfig, mac};
use dtop_oma::{FddParams, ModePicking, SsiParams, fdd, pick_modes, ssi_cov};

const FS_HZ: f64 = 1000.0;
const DURATION_S: f64 = 600.0;
const RUNS: usize = 5;

/// CPU time (user + system) of this process so far, from /proc/self/stat (Linux; clock ticks
/// of 10 ms). The machine is shared, so CPU time is the figure to quote, not wall time.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let southampton = ShearBuildingConfig::southampton();
    let building = ShearBuilding::new(ShearBuildingConfig {
        floor_masses_kg: vec![southampton.floor_masses_kg[0]; 4],
        storey_stiffness_n_per_m: vec![southampton.storey_stiffness_n_per_m[0]; 4],
        damping: Damping::RayleighModes {
            zeta: 0.002,
            mode_a: 1,
            mode_b: 2,
        },
        actuator: None,
    })
    .expect("valid building");
    let truth = modal_analysis(&building).expect("modal analysis");
    let data = support::floor_accelerations(&building, FS_HZ, DURATION_S, 0.02, 2026);
    let samples = data[0].len();
    println!(
        "record: {} channels × {samples} samples at {FS_HZ} Hz",
        data.len()
    );

    let params = SsiParams {
        block_rows: 80,
        max_order: 40,
        ..SsiParams::default()
    };
    let picking = ModePicking::default();
    let mut ssi_times = Vec::new();
    let mut modes = Vec::new();
    let cpu_start = cpu_time();
    for _ in 0..RUNS {
        let start = Instant::now();
        let result = ssi_cov(&data, FS_HZ, &params).expect("identifies");
        modes = pick_modes(&result.poles, &result.orders, &picking);
        ssi_times.push(start.elapsed());
    }
    let ssi_cpu = (cpu_time() - cpu_start) / RUNS as u32;
    let fdd_params = FddParams::default();
    let mut fdd_times = Vec::new();
    let mut peaks = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        peaks = fdd(&data, FS_HZ, &fdd_params).expect("decomposes").peaks;
        fdd_times.push(start.elapsed());
    }
    println!(
        "SSI-cov (i = {}, orders {}..={} step 2) + mode picking: median {:.3} s of {RUNS} \
         (min {:.3} s)",
        params.block_rows,
        params.min_order,
        params.max_order,
        median(ssi_times.clone()).as_secs_f64(),
        ssi_times.iter().min().expect("runs").as_secs_f64()
    );
    println!(
        "SSI-cov + mode picking: {:.3} CPU s per run (mean of {RUNS})",
        ssi_cpu.as_secs_f64()
    );
    println!(
        "FDD ({} samples per segment): median {:.3} s of {RUNS}",
        fdd_params.segment_samples,
        median(fdd_times).as_secs_f64()
    );
    println!("mode | model f Hz | SSI f Hz (err %) | model ζ % | SSI ζ % (err %) | MAC | FDD f Hz");
    for (r, pole) in truth.poles.iter().enumerate() {
        let f = pole.natural_frequency_hz;
        let zeta = pole.damping_ratio;
        let found = modes.iter().min_by(|a, b| {
            (a.frequency_hz - f)
                .abs()
                .total_cmp(&(b.frequency_hz - f).abs())
        });
        let peak = peaks.iter().min_by(|a, b| {
            (a.frequency_hz - f)
                .abs()
                .total_cmp(&(b.frequency_hz - f).abs())
        });
        match found {
            Some(m) => println!(
                "{} | {f:.4} | {:.4} ({:+.3}) | {:.3} | {:.3} ({:+.1}) | {:.5} | {}",
                r + 1,
                m.frequency_hz,
                100.0 * (m.frequency_hz / f - 1.0),
                100.0 * zeta,
                100.0 * m.damping_ratio,
                100.0 * (m.damping_ratio / zeta - 1.0),
                mac(&m.shape, &truth.modes[r].shape).unwrap_or(0.0),
                peak.map_or("-".into(), |p| format!("{:.3}", p.frequency_hz)),
            ),
            None => println!("{} | {f:.4} | not found", r + 1),
        }
    }
    println!("modes picked: {}", modes.len());
    for m in &modes {
        println!(
            "  {:.4} Hz ± {:.4}, ζ {:.4} % ± {:.4}, MPC {:.4}, {} orders",
            m.frequency_hz,
            m.frequency_std_hz,
            100.0 * m.damping_ratio,
            100.0 * m.damping_ratio_std,
            m.mpc,
            m.orders.len()
        );
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/oma-bench");
    std::fs::create_dir_all(&dir).expect("create target/oma-bench");
    let mut bytes = Vec::with_capacity(samples * data.len() * 8);
    for t in 0..samples {
        for channel in &data {
            bytes.extend_from_slice(&channel[t].to_le_bytes());
        }
    }
    std::fs::write(dir.join("record.f64"), bytes).expect("write record");
    let truth_json = format!(
        "{{\"sample_rate_hz\": {FS_HZ}, \"channels\": {}, \"samples\": {samples}, \
         \"frequencies_hz\": {:?}, \"damping_ratios\": {:?}}}",
        data.len(),
        truth
            .poles
            .iter()
            .map(|p| p.natural_frequency_hz)
            .collect::<Vec<_>>(),
        truth
            .poles
            .iter()
            .map(|p| p.damping_ratio)
            .collect::<Vec<_>>()
    );
    let mut file = std::fs::File::create(dir.join("truth.json")).expect("create truth");
    writeln!(file, "{truth_json}").expect("write truth");
    println!("wrote {}", dir.display());
}
