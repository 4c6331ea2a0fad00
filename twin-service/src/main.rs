//! `dtop-twin`: the process shell around [`dtop_twin::run`]. Logs, loads and validates the
//! config (exit 64 before connecting anything), runs, waits for SIGINT/SIGTERM, and drains
//! within a grace period.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use dtop_twin::config::{ConfigError, TwinConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// EX_USAGE from sysexits.h: the configuration is unusable.
const EXIT_BAD_CONFIG: u8 = 64;
/// How often a one-line summary is logged while running.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(30);

/// DTOP twin service: ingests rig sample blocks from MQTT and stores them durably.
#[derive(Debug, Parser)]
#[command(name = "dtop-twin", version)]
struct Args {
    /// TOML config file; without it the built-in defaults are used (see --print-default-config).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration, print where data would be stored, and exit.
    #[arg(long)]
    check: bool,
    /// Print the default configuration (commented) and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log filter, in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    #[arg(long, default_value = "info")]
    log: String,
    /// How long shutdown may take before the process exits anyway, ms. Default: the config's
    /// drain timeout plus one HTTP timeout plus 5 s.
    #[arg(long, value_name = "MS")]
    grace_ms: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", dtop_twin::EXAMPLE_CONFIG);
        return ExitCode::SUCCESS;
    }
    init_logs(&args.log);

    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dtop-twin: {e}");
            error!(error = %e, "Configuration refused.");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check {
        println!("configuration OK; storage: {}", config.storage.describe());
        return ExitCode::SUCCESS;
    }
    let grace = Duration::from_millis(
        args.grace_ms
            .unwrap_or(config.batch.drain_timeout_ms + config.http.timeout_ms + 5_000),
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "Could not start the async runtime.");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, grace)) {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "dtop-twin failed.");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(path: Option<&std::path::Path>) -> Result<TwinConfig, ConfigError> {
    match path {
        Some(path) => TwinConfig::load(path),
        None => {
            let config = TwinConfig::default();
            config.validate().map_err(|problems| ConfigError::Invalid {
                path: "(built-in defaults)".into(),
                problems,
            })?;
            Ok(config)
        }
    }
}

async fn serve(config: TwinConfig, grace: Duration) -> anyhow::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = CancellationToken::new();
    let (handle, mut twin) = dtop_twin::spawn(config, shutdown.clone());
    let mut summary = tokio::time::interval(SUMMARY_INTERVAL);
    summary.tick().await;

    let finished_early = loop {
        tokio::select! {
            _ = sigterm.recv() => { info!(signal = "SIGTERM", "Shutting down."); break None; }
            _ = sigint.recv() => { info!(signal = "SIGINT", "Shutting down."); break None; }
            result = &mut twin => break Some(result),
            _ = summary.tick() => log_summary(&handle.stats()),
        }
    };
    if let Some(result) = finished_early {
        result.context("twin task")?.context("running the twin")?;
        warn!("The twin stopped without being asked to.");
        return Ok(ExitCode::FAILURE);
    }

    shutdown.cancel();
    match tokio::time::timeout(grace, &mut twin).await {
        Ok(result) => {
            result.context("twin task")?.context("draining the twin")?;
            info!(
                grace_ms = grace.as_millis() as u64,
                "Shutdown was graceful."
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            twin.abort();
            let stats = handle.stats();
            error!(
                grace_ms = grace.as_millis() as u64,
                lines_pending = stats.store.lines_pending,
                "Shutdown was forced: the grace period ended before storage drained."
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn log_summary(stats: &dtop_twin::TwinStats) {
    for (rig, r) in &stats.rigs {
        info!(
            rig = %rig,
            online = r.online,
            samples_per_s = r.samples_per_s,
            blocks_stored = r.blocks_stored,
            blocks_missing = r.blocks_missing,
            blocks_duplicate = r.blocks_duplicate,
            "Rig summary."
        );
    }
    info!(
        mqtt_connected = stats.mqtt_connected,
        lines_written = stats.store.lines_written_total,
        write_errors = stats.store.write_errors_total,
        frames_rejected = stats.frames_rejected_sum(),
        storage = %stats.storage,
        "Twin summary."
    );
}
