//! `dtop-worker`: the process shell around [`dtop_worker::run::run`]. Logs, loads and validates
//! the config (exit 64 before connecting anything), runs chunks, and on SIGINT/SIGTERM stops
//! fetching and lets running chunks finish within the grace period.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dtop_daemon::signals::{Ending, Signals, run_until_signal};
use dtop_engine::WorkerOptions;
use dtop_worker::run::{RunOptions, run};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// DTOP worker: runs study chunks and reduce steps from the studies engine's queue.
#[derive(Debug, Parser)]
#[command(name = "dtop-worker", version)]
struct Args {
    /// TOML config file (see --print-default-config).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Print the example configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log filter, in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", dtop_worker::EXAMPLE_CONFIG);
        return ExitCode::SUCCESS;
    }
    init_logs(&args.log);
    let Some(path) = args.config else {
        eprintln!("dtop-worker: --config PATH is required (see --print-default-config)");
        return ExitCode::from(dtop_daemon::config::EXIT_CONFIG);
    };
    let config = match dtop_worker::config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dtop-worker: {e}");
            return ExitCode::from(dtop_daemon::config::EXIT_CONFIG);
        }
    };
    let engine = match config.engine_config() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("dtop-worker: {e}");
            return ExitCode::from(dtop_daemon::config::EXIT_CONFIG);
        }
    };
    if args.check {
        println!(
            "configuration OK; database {}",
            dtop_engine::db::redact(&engine.database_url)
        );
        return ExitCode::SUCCESS;
    }
    let options = RunOptions {
        worker: WorkerOptions {
            name: config.name(),
            concurrency: config.concurrency(),
        },
        metrics_listen: config.metrics.as_ref().map(|m| m.listen.clone()),
    };
    let grace = Duration::from_secs_f64(config.worker.grace_s);
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
    runtime.block_on(async move {
        let signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "Could not install signal handlers.");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let work = run(engine, options, shutdown.clone());
        match run_until_signal(signals, work, shutdown, grace).await {
            Ending::Finished(Ok(())) | Ending::Drained(Ok(())) => {
                info!("dtop-worker stopped.");
                ExitCode::SUCCESS
            }
            Ending::Finished(Err(e)) | Ending::Drained(Err(e)) => {
                error!(error = %e, "dtop-worker failed.");
                ExitCode::FAILURE
            }
            _ => ExitCode::FAILURE,
        }
    })
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
