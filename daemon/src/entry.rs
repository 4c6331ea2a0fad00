//! Owns what every DTOP daemon's `main` does around its own work: the common flags
//! (`--config`, `--check`, `--print-default-config`, `--log`), logging to stderr, loading the
//! config (exit 64 with every problem, before any device or socket is touched), and running the
//! work on a runtime until it ends or a signal drains it, mapped to one exit code.
//!
//! A daemon describes itself once in a [`Daemon`] and its `main` reads:
//! `let (args, config) = match entry::begin(&DAEMON, |a: &Args| &a.common) { Start::Run(r) => r,
//! Start::Exit(code) => return code };` and ends in [`block_on`].

use std::fmt::Display;
use std::future::Future;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use crate::config::EXIT_CONFIG;
use crate::signals::{Ending, Signals, run_until_signal};

/// The flags every daemon takes; `#[command(flatten)]` them into the daemon's own `Args`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// TOML config file (see --print-default-config).
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration, say what it would do, and exit (0 valid, 64 not).
    #[arg(long)]
    pub check: bool,
    /// Print an example configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Log filter, in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,
}

/// What `main` needs to know about one daemon.
#[derive(Debug)]
pub struct Daemon<C> {
    /// The binary's name, prefixed to every message on stderr.
    pub name: &'static str,
    /// Printed by `--print-default-config`.
    pub example_config: fn() -> String,
    /// Whether running without `--config` is a usage error (else `load` gets `None` and uses
    /// the built-in defaults).
    pub config_required: bool,
    /// Reads and validates the config; the error lists every problem.
    pub load: fn(Option<&Path>) -> Result<C, String>,
    /// The `--check` report for a valid config (one line or more, to stdout).
    pub describe: fn(&C) -> String,
}

/// What `main` does after [`start`].
#[derive(Debug)]
pub enum Start<C> {
    /// Run the daemon with this config.
    Run(C),
    /// Exit now with this status (printed config, `--check`, or a refused config).
    Exit(ExitCode),
}

/// Parses the command line; `--help` and `--version` print and exit 0, a bad flag exits 64
/// (every DTOP daemon uses one number for "fix how you started me").
///
/// # Errors
/// The exit code when the daemon should stop here.
pub fn parse_args<A: clap::Parser>() -> Result<A, ExitCode> {
    match A::try_parse() {
        Ok(args) => Ok(args),
        Err(e) => {
            let _ = e.print();
            Err(if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// The whole start of a daemon's `main`: [`parse_args`], then [`start`] with the daemon's
/// common flags (`common` picks them out of its `Args`). Gives the arguments and the config to
/// run with, or the exit code to return now.
pub fn begin<A: clap::Parser, C>(
    daemon: &Daemon<C>,
    common: impl FnOnce(&A) -> &CommonArgs,
) -> Start<(A, C)> {
    let args = match parse_args::<A>() {
        Ok(args) => args,
        Err(code) => return Start::Exit(code),
    };
    match start(daemon, common(&args)) {
        Start::Run(config) => Start::Run((args, config)),
        Start::Exit(code) => Start::Exit(code),
    }
}

/// Handles `--print-default-config`, starts logging, loads the config and handles `--check`.
/// A refused config is reported on stderr (every problem) and in the log, and exits 64.
pub fn start<C>(daemon: &Daemon<C>, args: &CommonArgs) -> Start<C> {
    if args.print_default_config {
        print!("{}", (daemon.example_config)());
        return Start::Exit(ExitCode::SUCCESS);
    }
    if let Err(e) = init_logs(&args.log) {
        eprintln!(
            "{}: --log {:?} is not a valid filter: {e}",
            daemon.name, args.log
        );
        return Start::Exit(ExitCode::from(EXIT_CONFIG));
    }
    if daemon.config_required && args.config.is_none() {
        eprintln!(
            "{}: --config PATH is required (see --print-default-config)",
            daemon.name
        );
        return Start::Exit(ExitCode::from(EXIT_CONFIG));
    }
    let config = match (daemon.load)(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}: {e}", daemon.name);
            error!("Configuration refused.");
            return Start::Exit(ExitCode::from(EXIT_CONFIG));
        }
    };
    if args.check {
        println!("{}", (daemon.describe)(&config));
        return Start::Exit(ExitCode::SUCCESS);
    }
    Start::Run(config)
}

/// Logs to stderr with `filter` (or `RUST_LOG` when set), without colour codes unless stderr is
/// a terminal (journald and test harnesses capture it).
///
/// # Errors
/// When `filter` is not a valid filter.
pub fn init_logs(filter: &str) -> Result<(), String> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(from_env) => from_env,
        Err(_) => EnvFilter::try_new(filter).map_err(|e| e.to_string())?,
    };
    // A second call (tests that run two daemons' mains in one process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

/// Runs `work` to completion on a multi-threaded runtime; an error is logged and exits 1.
pub fn block_on<E: Display>(
    name: &str,
    work: impl Future<Output = Result<ExitCode, E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            error!(error = %e, "{name} failed.");
            ExitCode::FAILURE
        }
    }
}

/// Runs the daemon's `work` (given its shutdown token) until it ends or SIGINT/SIGTERM drains it
/// within `grace`: exit 0 when it ended well, 1 when it failed, ran out of grace or was stopped
/// by a second signal. Install nothing else before: the signal handlers are installed here,
/// first.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn until_signal<E, F>(
    name: &str,
    grace: Duration,
    work: impl FnOnce(CancellationToken) -> F,
) -> Result<ExitCode, std::io::Error>
where
    E: Display,
    F: Future<Output = Result<(), E>>,
{
    let signals = Signals::new()?;
    let shutdown = CancellationToken::new();
    let work = work(shutdown.clone());
    Ok(
        match run_until_signal(signals, work, shutdown, grace).await {
            Ending::Finished(Ok(())) | Ending::Drained(Ok(())) => {
                info!("{name} stopped.");
                ExitCode::SUCCESS
            }
            Ending::Finished(Err(e)) | Ending::Drained(Err(e)) => {
                error!(error = %e, "{name} failed.");
                ExitCode::FAILURE
            }
            Ending::GraceExceeded | Ending::SecondSignal => ExitCode::FAILURE,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn daemon(required: bool) -> Daemon<u32> {
        Daemon {
            name: "dtop-test",
            example_config: || "x = 1\n".into(),
            config_required: required,
            load: |path| match path {
                None => Ok(7),
                Some(p) if p.ends_with("good.toml") => Ok(1),
                Some(_) => Err("x: must be positive\ny: unknown field".into()),
            },
            describe: |c| format!("config {c}"),
        }
    }

    fn code(start: Start<u32>) -> Option<ExitCode> {
        match start {
            Start::Exit(code) => Some(code),
            Start::Run(_) => None,
        }
    }

    #[test]
    fn a_refused_config_exits_64_and_a_missing_required_one_too() {
        let bad = Args::parse_from(["d", "--config", "bad.toml"]);
        assert_eq!(
            code(start(&daemon(false), &bad.common)),
            Some(ExitCode::from(EXIT_CONFIG))
        );
        let none = Args::parse_from(["d"]);
        assert_eq!(
            code(start(&daemon(true), &none.common)),
            Some(ExitCode::from(EXIT_CONFIG))
        );
    }

    #[test]
    fn without_a_required_config_the_defaults_run_and_check_exits_zero() {
        let none = Args::parse_from(["d"]);
        assert!(matches!(start(&daemon(false), &none.common), Start::Run(7)));
        let check = Args::parse_from(["d", "-c", "good.toml", "--check"]);
        assert_eq!(
            code(start(&daemon(true), &check.common)),
            Some(ExitCode::SUCCESS)
        );
    }
}
