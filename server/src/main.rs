//! The `dtop-server` daemon: load and check the config (exit 64 with every problem before
//! binding), connect the engine, bind, tell systemd READY, serve until SIGINT/SIGTERM, drain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use dtop_daemon::{EXIT_CONFIG, Ending};
use dtop_server::ServerConfig;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// DTOP HTTP API server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The TOML config file.
    #[arg(long, default_value = "/etc/dtop/dtop-server.toml")]
    config: PathBuf,
    /// Check the config and exit (0 valid, 64 not).
    #[arg(long)]
    check: bool,
    /// Print a default config and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log: String,
}

/// How long running requests and chunks get after a signal.
const GRACE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    if args.print_default_config {
        match toml::to_string_pretty(&ServerConfig::example()) {
            Ok(text) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let config = match dtop_daemon::load(&args.config, ServerConfig::validate) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "dtop-server failed.");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ServerConfig) -> anyhow::Result<ExitCode> {
    let signals = dtop_daemon::Signals::new().context("installing signal handlers")?;
    let engine = dtop_engine::Engine::connect(&config.engine)
        .await
        .context("connecting the studies engine")?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    let shutdown = CancellationToken::new();
    let watchdog = dtop_daemon::notify::Watchdog::from_env();
    tokio::spawn(watchdog.run(shutdown.clone()));
    dtop_daemon::notify::ready("dtop-server");
    let work = dtop_server::serve(config, engine, listener, shutdown.clone());
    match dtop_daemon::run_until_signal(signals, work, shutdown, GRACE).await {
        Ending::Finished(result) | Ending::Drained(result) => {
            result.context("serving")?;
            info!("dtop-server stopped.");
            Ok(ExitCode::SUCCESS)
        }
        Ending::GraceExceeded | Ending::SecondSignal => Ok(ExitCode::FAILURE),
    }
}
