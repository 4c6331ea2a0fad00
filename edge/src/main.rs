//! The `dtop-edge` binary: the common daemon entry (`dtop_daemon::entry`: logs, config, exit 64
//! when bad, before any device or socket is opened), then [`dtop_edge::run`] until SIGINT/SIGTERM, drained by
//! [`dtop_daemon::run_until_signal`]. All behaviour lives in the library.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use dtop_daemon::entry::{self, CommonArgs, Daemon, Start};
use dtop_daemon::{Ending, Signals, run_until_signal};
use dtop_edge::config::EXAMPLE_CONFIG;
use dtop_edge::{EdgeConfig, EdgeError};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// sysexits.h EX_USAGE: the command line or the configuration is wrong.
const EXIT_CONFIG: u8 = dtop_daemon::EXIT_CONFIG;
/// Beyond the configured flush timeout, how long shutdown may take before we give up on it.
const SHUTDOWN_GRACE_EXTRA: Duration = Duration::from_secs(5);

/// DTOP edge daemon: firmware serial stream → MQTT.
#[derive(Debug, clap::Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

const DAEMON: Daemon<EdgeConfig> = Daemon {
    name: "dtop-edge",
    example_config: || EXAMPLE_CONFIG.to_owned(),
    config_required: true,
    load: |path| {
        let path = path.ok_or("--config PATH is required")?;
        EdgeConfig::load(path).map_err(|e| e.to_string())
    },
    describe: |config| {
        for warning in dtop_edge::modbus::overflow_warnings(&config.modbus) {
            eprintln!("dtop-edge: warning: {warning}");
        }
        format!("configuration OK; rig {}", config.rig_id)
    },
};

fn main() -> ExitCode {
    let (_, config) = match entry::begin(&DAEMON, |a: &Args| &a.common) {
        Start::Run(run) => run,
        Start::Exit(code) => return code,
    };

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
