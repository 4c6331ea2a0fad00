//! `dtop-rig-sim` binary: maps flags onto `SimConfig`, validates, starts the simulator,
//! prints `pty: PATH` (and `modbus: ADDR`) on stdout, and runs until a signal or until
//! `--max-samples` with `--exit-after-max`. All the behaviour lives in the library.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dtop_rig_sim::{ExcitationConfig, ExcitationTarget, SimConfig};
use tokio_util::sync::CancellationToken;

/// Exit status for a bad config or bad flags (sysexits EX_USAGE).
const EXIT_USAGE: u8 = dtop_daemon::EXIT_CONFIG;
/// How long tasks get to finish after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Simulated DTOP rig: the structure, its sensors and the firmware, on a pty and Modbus TCP.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    /// TOML config file (see `--print-default-config`); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed of all random streams.
    #[arg(long)]
    seed: Option<u64>,
    /// Time scale: 1 = real time, 10 = ten times faster, 0 = lock-step.
    #[arg(long)]
    speed: Option<f64>,
    /// ADC sample rate, Hz.
    #[arg(long)]
    sample_rate_hz: Option<f64>,
    /// Samples per Samples frame.
    #[arg(long)]
    samples_per_frame: Option<u16>,
    /// Stop streaming after this many samples.
    #[arg(long)]
    max_samples: Option<u64>,
    /// Exit once --max-samples samples have been written (after --exit-grace-ms).
    #[arg(long, requires = "max_samples")]
    exit_after_max: bool,
    /// With --exit-after-max: wait this long before exiting, so the edge can read what is
    /// still buffered in the pty.
    #[arg(long, default_value_t = 500)]
    exit_grace_ms: u64,
    /// CSV of every sample written to the pty.
    #[arg(long)]
    truth_log: Option<PathBuf>,
    /// CSV of the control-loop latency of every actuator command that names its origin
    /// sample, written at exit.
    #[arg(long)]
    latency_log: Option<PathBuf>,
    /// Symlink to the pty slave, removed on exit.
    #[arg(long)]
    pty_link: Option<PathBuf>,
    /// Serve the Modbus TCP register map on this address (e.g. 127.0.0.1:5020).
    #[arg(long)]
    modbus_listen: Option<SocketAddr>,
    /// Take run-time commands on a Unix socket at this path, one per line, e.g.
    /// `damage storey=2 stiffness_factor=0.9 ramp_s=30` (see the library's `control`).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Excitation: `none`, `noise:RMS:LOW_HZ:HIGH_HZ`, `sine:AMPLITUDE:FREQ_HZ` or
    /// `chirp:AMPLITUDE:F0_HZ:F1_HZ:PERIOD_S`.
    #[arg(long)]
    excitation: Option<String>,
    /// Where the excitation enters: `floor1_force` or `ground_accel`.
    #[arg(long)]
    excitation_target: Option<String>,
    /// Floor carrying the actuator, 0 for none.
    #[arg(long)]
    actuator_floor: Option<u8>,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Print the default config as TOML and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG wins if set.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logs(&args.log_level);
    if args.print_default_config {
        return match toml::to_string(&SimConfig::default()) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: could not render the default config: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match build_config(&args) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("error: invalid configuration:");
            for problem in problems {
                eprintln!("  - {problem}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.check {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, &args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "Rig simulator failed.");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // stdout carries the `pty:` and `modbus:` lines for scripts; logs go to stderr.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Config file (or defaults), then flags, then `validate()`; every problem is returned.
fn build_config(args: &Args) -> Result<SimConfig, Vec<String>> {
    let mut problems = Vec::new();
    let mut config = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => {
                // Every parse-level problem; the flags and `validate()` below add theirs.
                let collected = dtop_daemon::config::collect::<SimConfig>(&text);
                problems.extend(
                    collected
                        .problems
                        .iter()
                        .map(|p| format!("{}: {p}", path.display())),
                );
                match collected.value {
                    Some(config) => config,
                    None => return Err(problems),
                }
            }
            Err(e) => return Err(vec![format!("reading {}: {e}", path.display())]),
        },
        None => SimConfig::default(),
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(speed) = args.speed {
        config.speed = speed;
    }
    if let Some(rate) = args.sample_rate_hz {
        config.sample_rate_hz = rate;
    }
    if let Some(n) = args.samples_per_frame {
        config.samples_per_frame = n;
    }
    if args.max_samples.is_some() {
        config.max_samples = args.max_samples;
    }
    if args.latency_log.is_some() {
        config.latency_log.clone_from(&args.latency_log);
    }
    if args.truth_log.is_some() {
        config.truth_log.clone_from(&args.truth_log);
    }
    if args.pty_link.is_some() {
        config.pty_link.clone_from(&args.pty_link);
    }
    if args.modbus_listen.is_some() {
        config.modbus_listen = args.modbus_listen;
    }
    if args.control.is_some() {
        config.control_socket.clone_from(&args.control);
    }
    if let Some(floor) = args.actuator_floor {
        config.actuator_floor = floor;
    }
    if let Some(spec) = &args.excitation {
        match parse_excitation(spec) {
            Ok(excitation) => config.excitation = excitation,
            Err(problem) => problems.push(problem),
        }
    }
    if let Some(target) = &args.excitation_target {
        match target.as_str() {
            "floor1_force" => config.excitation_target = ExcitationTarget::Floor1Force,
            "ground_accel" => config.excitation_target = ExcitationTarget::GroundAccel,
            other => problems.push(format!(
                "--excitation-target {other:?}: expected floor1_force or ground_accel"
            )),
        }
    }
    if let Err(e) = config.validate() {
        problems.extend(e.0);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Parses `--excitation`: `none`, `noise:RMS:LOW:HIGH`, `sine:AMP:FREQ`,
/// `chirp:AMP:F0:F1:PERIOD`.
fn parse_excitation(spec: &str) -> Result<ExcitationConfig, String> {
    let mut parts = spec.split(':');
    let kind = parts.next().unwrap_or_default();
    let numbers: Result<Vec<f64>, _> = parts.map(str::parse::<f64>).collect();
    let numbers = numbers.map_err(|e| format!("--excitation {spec:?}: {e}"))?;
    match (kind, numbers.as_slice()) {
        ("none", []) => Ok(ExcitationConfig::None),
        ("noise", &[rms, low_hz, high_hz]) => Ok(ExcitationConfig::Noise {
            rms,
            low_hz,
            high_hz,
        }),
        ("sine", &[amplitude, frequency_hz]) => Ok(ExcitationConfig::Sine {
            amplitude,
            frequency_hz,
        }),
        ("chirp", &[amplitude, f0_hz, f1_hz, period_s]) => Ok(ExcitationConfig::Chirp {
            amplitude,
            f0_hz,
            f1_hz,
            period_s,
        }),
        _ => Err(format!(
            "--excitation {spec:?}: expected none, noise:RMS:LOW_HZ:HIGH_HZ, sine:AMPLITUDE:FREQ_HZ or chirp:AMPLITUDE:F0_HZ:F1_HZ:PERIOD_S"
        )),
    }
}

async fn run(config: SimConfig, args: &Args) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let handle = dtop_rig_sim::start(config, shutdown.clone())
        .await
        .context("starting the simulator")?;
    println!("pty: {}", handle.pty_path().display());
    if let Some(addr) = handle.modbus_addr() {
        println!("modbus: {addr}");
    }

    let exit_after_max = async {
        if args.exit_after_max && handle.wait_max_samples().await {
            tracing::info!(
                grace_ms = args.exit_grace_ms,
                "Max samples written; exiting after the grace period."
            );
            tokio::time::sleep(Duration::from_millis(args.exit_grace_ms)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "Shutting down."),
        _ = sigterm.recv() => tracing::info!(signal = "SIGTERM", "Shutting down."),
        () = exit_after_max => {}
        () = handle.stopped() => tracing::warn!("Simulator stopped on its own."),
    }
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, handle.join()).await {
        Ok(Ok(stats)) => {
            tracing::info!(
                samples = stats.samples_generated_total,
                frames_sent = stats.frames_sent_total,
                frames_dropped = stats.frames_dropped_total,
                "Shut down gracefully."
            );
            Ok(())
        }
        Ok(Err(e)) => Err(e).context("simulator task"),
        Err(_) => {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "Tasks did not finish in time; forced shutdown."
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_excitation_spec() {
        assert_eq!(parse_excitation("none"), Ok(ExcitationConfig::None));
        assert_eq!(
            parse_excitation("noise:5:0:50"),
            Ok(ExcitationConfig::Noise {
                rms: 5.0,
                low_hz: 0.0,
                high_hz: 50.0
            })
        );
        assert_eq!(
            parse_excitation("sine:2:7.5"),
            Ok(ExcitationConfig::Sine {
                amplitude: 2.0,
                frequency_hz: 7.5
            })
        );
        assert!(matches!(
            parse_excitation("chirp:1:1:40:10"),
            Ok(ExcitationConfig::Chirp { .. })
        ));
        assert!(parse_excitation("sine:2").is_err());
        assert!(parse_excitation("square:1:2").is_err());
        assert!(parse_excitation("sine:a:2").is_err());
    }

    #[test]
    fn reports_flag_and_config_problems_together() {
        let args = Args::parse_from([
            "dtop-rig-sim",
            "--speed=-1",
            "--excitation",
            "bogus",
            "--excitation-target",
            "roof",
        ]);
        let problems = build_config(&args).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:#?}");
    }
}
