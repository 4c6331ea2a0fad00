//! Benchmark: closed-loop latency at 1 kHz over loopback, from the moment the rig simulator
//! takes a sample to the moment it applies the drive computed from it (PROTOCOL.md §4.4
//! `origin_sample_index`, measured inside the simulator on one clock).
//!
//! - twin-hosted DVF: sample → pty → edge → MQTT → twin (decode, Kalman filter, law) → MQTT
//!   → edge (safety envelope) → pty → simulator; through dtop-broker and through Mosquitto.
//! - edge-hosted DVF: sample → pty → edge (inner loop, envelope) → pty → simulator, or → a
//!   Modbus TCP write of the simulator's holding registers (the actuator behind Modbus).
//!
//! Each run is real time for SECONDS (default 60) with one sample per firmware frame and one
//! sample per block, idle and with two busy-spinning threads loading both cores.
//!
//! Run: `cargo build --release --workspace --bins && cargo run --release -p dtop-e2e --bin
//! loop_latency_bench -- [SECONDS] [CASE-FILTER]`. Uses the Mosquitto `scripts/test.sh` exports, or starts a
//! private one. Bounded: every run stops by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dtop_e2e::Services;
use dtop_e2e::WithLogs;
use dtop_e2e::control::{LoopSummary, read_latency_log, set_control, summarize};
use dtop_e2e::pipeline::{BrokerKind, Pipeline, PipelineSpec, StoreKind};
use dtop_proto::v1::set_control::{Law, Placement};

/// DVF gain for every run: about half the floor-3 critical gain (17.9 N·s/m).
const GAIN_N_S_PER_M: f64 = 8.0;

fn run(
    services: &mut Services,
    broker: BrokerKind,
    placement: Placement,
    modbus: bool,
    loaded: bool,
    seconds: u64,
) -> Result<LoopSummary> {
    let rig = format!("loop-{}", std::process::id());
    // With `modbus`, the actuator is the simulator's Modbus TCP holding registers: the drive,
    // with the sample it came from in registers 3–6, goes out as one write per change.
    let modbus_port = dtop_e2e::free_port()?;
    let mut sim_args: Vec<String> = vec![
        "--samples-per-frame".into(),
        "1".into(),
        "--latency-log".into(),
        "{dir}/latency.csv".into(),
    ];
    let mut edge = dtop_e2e::pipeline::EdgeOptions::default();
    if modbus {
        sim_args.extend(["--modbus-listen".into(), format!("127.0.0.1:{modbus_port}")]);
        edge.toml = format!(
            "[[modbus.devices]]\nname = \"sim\"\ntcp = {{ addr = \"127.0.0.1:{modbus_port}\" }}\n\
             poll_period_ms = 0\n[modbus.actuator]\ndevice = \"sim\"\nenable_address = 0\n\
             force_address = 1\nforce_data_type = \"f32\"\norigin_address = 3\n"
        );
    }
    let spec = PipelineSpec {
        rig: rig.clone(),
        broker,
        store: StoreKind::Files,
        // Settling, commanding and the measured window, then the simulator stops by itself.
        samples: (seconds + 30) * 1000,
        speed: 1.0,
        seed: 11,
        // The twin-hosted loop runs once per block, so it needs one sample per block; the
        // edge-hosted one runs per sample whatever the block length.
        block_samples: if placement == Placement::Twin { 1 } else { 100 },
        sim_args,
        twin_toml: "[control]\nenabled = true\n".into(),
        edge,
    };
    let mut pipeline = Pipeline::start(spec, services)?;
    let acks = set_control(
        pipeline.mqtt_port,
        &rig,
        Law::Dvf,
        GAIN_N_S_PER_M,
        placement,
        Duration::from_secs(30),
    )
    .or_logs(|| pipeline.logs())?;
    let started_at_index = acks.last().map_or(0, |a| a.applied_at_sample_index);

    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..if loaded { 2 } else { 0 })
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(seconds + 5);
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < until {
        pipeline.ensure_running()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        let _ = s.join();
    }
    pipeline.sim.terminate(Duration::from_secs(10))?;
    let log = read_latency_log(&pipeline.dir.path().join("latency.csv"))?;
    // The measured window: from the first sample the law ran on, for SECONDS of samples.
    let window: Vec<_> = log
        .into_iter()
        .filter(|s| s.origin_sample_index >= started_at_index)
        .take_while(|s| s.origin_sample_index < started_at_index + seconds * 1000)
        .collect();
    summarize(&window).context("no drives were applied")
}

fn main() -> Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(60);
    let mut services = Services::new()?;
    println!(
        "closed loop at 1 kHz, DVF g = {GAIN_N_S_PER_M} N·s/m on floor 3, {seconds} s per run, \
         latency = sample taken → drive applied, inside the rig simulator"
    );
    println!(
        "{:<36} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}",
        "path", "drives", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "late", "lost"
    );
    let cases = [
        (
            "edge-hosted, serial, idle",
            BrokerKind::Dtop,
            Placement::Edge,
            false,
            false,
        ),
        (
            "edge-hosted, serial, loaded",
            BrokerKind::Dtop,
            Placement::Edge,
            false,
            true,
        ),
        (
            "edge-hosted, Modbus TCP, idle",
            BrokerKind::Dtop,
            Placement::Edge,
            true,
            false,
        ),
        (
            "edge-hosted, Modbus TCP, loaded",
            BrokerKind::Dtop,
            Placement::Edge,
            true,
            true,
        ),
        (
            "twin-hosted via dtop-broker, idle",
            BrokerKind::Dtop,
            Placement::Twin,
            false,
            false,
        ),
        (
            "twin-hosted via mosquitto, idle",
            BrokerKind::Mosquitto,
            Placement::Twin,
            false,
            false,
        ),
        (
            "twin-hosted via dtop-broker, loaded",
            BrokerKind::Dtop,
            Placement::Twin,
            false,
            true,
        ),
        (
            "twin-hosted via mosquitto, loaded",
            BrokerKind::Mosquitto,
            Placement::Twin,
            false,
            true,
        ),
    ];
    // An optional second argument keeps only the cases whose name contains it.
    let only = std::env::args().nth(2).unwrap_or_default();
    for (name, broker, placement, modbus, loaded) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let s = run(&mut services, broker, placement, modbus, loaded, seconds)?;
        println!(
            "{name:<36} {:>8} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>6} {:>6}",
            s.drives, s.p50_us, s.p99_us, s.p999_us, s.max_us, s.late, s.lost
        );
    }
    Ok(())
}
