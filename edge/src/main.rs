//! The `dtop-edge` binary: logs, config (exit 64 when bad, before any device or socket is
//! opened), then [`dtop_edge::run`] until SIGINT/SIGTERM, drained by
//! [`dtop_daemon::run_until_signal`]. All behaviour lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dtop_daemon::{Ending, Signals, run_until_signal};
use dtop_edge::config::EXAMPLE_CONFIG;
use dtop_edge::{EdgeConfig, EdgeError};
use tokio_util::sync::CancellationToken;
use tracing::error;
use tracing_subscriber::EnvFilter;

/// sysexits.h EX_USAGE: the command line or the configuration is wrong.
const EXIT_CONFIG: u8 = dtop_daemon::EXIT_CONFIG;
/// Beyond the configured flush timeout, how long shutdown may take before we give up on it.
const SHUTDOWN_GRACE_EXTRA: Duration = Duration::from_secs(5);

/// DTOP edge daemon: firmware serial stream → MQTT.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Path of the TOML configuration.
    #[arg(long, short, required_unless_present = "print_default_config")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (0 when valid, 64 when not).
    #[arg(long)]
    check: bool,
    /// Print an example configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.print_default_config {
        print!("{EXAMPLE_CONFIG}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let Some(path) = args.config else {
        eprintln!("dtop-edge: --config is required");
        return ExitCode::from(EXIT_CONFIG);
    };
    let config = match EdgeConfig::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dtop-edge: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        for warning in dtop_edge::modbus::overflow_warnings(&config.modbus) {
            eprintln!("dtop-edge: warning: {warning}");
        }
        println!("{}: OK", path.display());
        return ExitCode::SUCCESS;
    }

    match serve(config) {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "dtop-edge failed.");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: EdgeConfig) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let grace = config.mqtt.shutdown_flush_timeout() + SHUTDOWN_GRACE_EXTRA;
        let shutdown = CancellationToken::new();
        // Installed before the edge starts, so a signal during startup is kept.
        let signals = Signals::new().context("installing signal handlers")?;
        let edge = tokio::spawn(dtop_edge::run(config, shutdown.clone()));
        let outcome = match run_until_signal(signals, edge, shutdown, grace).await {
            Ending::Finished(outcome) | Ending::Drained(outcome) => outcome,
            Ending::GraceExceeded | Ending::SecondSignal => return Ok(ExitCode::FAILURE),
        };
        match outcome.context("edge task panicked")? {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e @ (EdgeError::Config(_) | EdgeError::Secret(_))) => {
                eprintln!("dtop-edge: {e}");
                Ok(ExitCode::from(EXIT_CONFIG))
            }
            Err(e) => Err(e).context("running the edge"),
        }
    })
}
