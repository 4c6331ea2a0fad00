//! `dtop-broker`: the process shell. Parses flags, initialises logs, loads and validates the
//! config (and the credentials file it names) before binding anything, runs the broker and
//! waits for SIGINT/SIGTERM; `dtop-broker passwd` edits a credentials file. All broker logic
//! lives in the library.

use std::error::Error as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dtop_broker::credentials::{self, RigSpec};
use dtop_broker::{BrokerConfig, BrokerError, ConfigError, EXAMPLE_CONFIG_TOML, Role, Secret};
use dtop_daemon::Signals;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// sysexits.h `EX_USAGE`: the invocation or its configuration is wrong; retrying won't help.
const EXIT_BAD_CONFIG: u8 = dtop_daemon::EXIT_CONFIG;

/// DTOP's MQTT broker: MQTT 3.1.1 and 5 with authentication and per-topic authorization,
/// routed by an embedded rumqttd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file. Without it the broker runs on built-in defaults
    /// (MQTT 3.1.1 on 127.0.0.1:1883, no console).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration, print the verdict and exit without binding anything.
    #[arg(long)]
    check: bool,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log filter: a level (`info`) or tracing directives (`info,rumqttd=warn`).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add or remove users in a credentials file (argon2id hashes).
    Passwd {
        /// The credentials file (created when missing, written with mode 0600).
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        #[command(subcommand)]
        action: PasswdAction,
    },
}

#[derive(Debug, Subcommand)]
enum PasswdAction {
    /// Add a user, or replace it. The password is read from --password-file, or else the
    /// first line of stdin.
    Add {
        /// User name (a rig's user name is its rig id unless --rigs says otherwise, so it must
        /// then be a valid rig id: ASCII letters, digits, `-`, `_`).
        user: String,
        /// rig, twin, operator, dashboard, researcher, server or admin.
        #[arg(long)]
        role: String,
        /// Rigs the user may address: `*`, a comma list, or `-` (default).
        #[arg(long, default_value = "-")]
        rigs: String,
        /// File whose first line is the password (e.g. a systemd credential).
        #[arg(long, value_name = "PATH", conflicts_with = "no_password")]
        password_file: Option<PathBuf>,
        /// No password: the user can only log in with a client certificate.
        #[arg(long)]
        no_password: bool,
    },
    /// Remove a user.
    Remove {
        /// User name.
        user: String,
    },
}

/// Runs `dtop-broker passwd`.
fn passwd(file: &std::path::Path, action: PasswdAction) -> ExitCode {
    match action {
        PasswdAction::Add {
            user,
            role,
            rigs,
            password_file,
            no_password,
        } => {
            let Some(role) = Role::parse(&role) else {
                eprintln!(
                    "error: unknown role {role:?}; expected rig, twin, operator, dashboard, researcher, server or admin"
                );
                return ExitCode::from(EXIT_BAD_CONFIG);
            };
            let rigs = match RigSpec::parse(&rigs) {
                Ok(rigs) => rigs,
                Err(e) => {
                    eprintln!("error: --rigs: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            let password = if no_password {
                None
            } else {
                let text = match &password_file {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display())),
                    None => {
                        let mut line = String::new();
                        std::io::stdin()
                            .read_line(&mut line)
                            .map(|_| line)
                            .map_err(|e| format!("cannot read stdin: {e}"))
                    }
                };
                match text {
                    Ok(text) => {
                        let password = text.lines().next().unwrap_or_default().to_owned();
                        if password.is_empty() {
                            eprintln!("error: empty password");
                            return ExitCode::from(EXIT_BAD_CONFIG);
                        }
                        Some(Secret::new(password))
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(EXIT_BAD_CONFIG);
                    }
                }
            };
            match credentials::add_user(file, &user, role, rigs, password.as_ref()) {
                Ok(()) => {
                    println!("{}: {user} ({role}) saved", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_BAD_CONFIG)
                }
            }
        }
        PasswdAction::Remove { user } => match credentials::remove_user(file, &user) {
            Ok(true) => {
                println!("{}: {user} removed", file.display());
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!("error: {}: no user {user:?}", file.display());
                ExitCode::from(EXIT_BAD_CONFIG)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
    }
}

fn main() -> ExitCode {
    let cli = match dtop_daemon::entry::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };

    if let Some(Command::Passwd { file, action }) = cli.command {
        return passwd(&file, action);
    }
    if cli.print_default_config {
        print!("{EXAMPLE_CONFIG_TOML}");
        return ExitCode::SUCCESS;
    }

    let filter = match EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: --log {:?} is not a valid filter: {e}", cli.log);
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    // rumqttd's router opens several spans per routed message (some at error level, so no
    // level filter removes them); nothing we log runs inside them, and recording them costs
    // the router thread CPU on every message. Its events (warnings, errors) still pass.
    let no_router_spans =
        filter_fn(|meta| !(meta.is_span() && meta.target().starts_with("rumqttd")));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // journald and test harnesses capture stderr; escape codes would only garble them.
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter)
        .with_filter(no_router_spans);
    tracing_subscriber::registry().with(logs).init();

    let config = match &cli.config {
        Some(path) => match dtop_broker::load_config(path) {
            Ok(config) => config,
            Err(e) => {
                report_config_error(&e);
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        None => {
            let config = BrokerConfig::default();
            if let Err(errors) = config.validate() {
                report_invalid("built-in defaults", errors);
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            config
        }
    };

    if let Some(auth) = &config.auth
        && let Err(e) = dtop_broker::run::load_credentials(auth)
    {
        eprintln!("error: auth.credentials_file: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(inner) = cause {
            eprintln!("  caused by: {inner}");
            cause = inner.source();
        }
        return ExitCode::from(EXIT_BAD_CONFIG);
    }

    if cli.check {
        let source = cli.config.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        println!("{source}: configuration is valid");
        return ExitCode::SUCCESS;
    }
    if cli.config.is_none() {
        info!(mqtt = %config.mqtt.listen, "No --config given; running on built-in defaults.");
    }

    match run(config) {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "Broker failed.");
            ExitCode::FAILURE
        }
    }
}

/// Prints every problem, one per line, on stderr. Logs may be filtered; this must not be.
fn report_config_error(error: &ConfigError) {
    eprintln!("error: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        eprintln!("  caused by: {inner}");
        cause = inner.source();
    }
}

/// Reports `validate()` problems found outside `load_config`, listed the same way.
fn report_invalid(source: &str, errors: dtop_broker::ConfigErrors) {
    match dtop_daemon::ConfigProblems::from_problems(dtop_broker::load::daemon_problems(errors)) {
        Some(problems) => report_config_error(&ConfigError::Invalid {
            path: source.into(),
            problems,
        }),
        None => eprintln!("error: {source}: invalid configuration"),
    }
}

fn run(config: BrokerConfig) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal-handling runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: BrokerConfig) -> anyhow::Result<ExitCode> {
    // Installed before the broker starts so a signal during startup is not lost.
    let mut signals = Signals::new().context("installing the signal handlers")?;

    let spawned = tokio::task::spawn_blocking(move || dtop_broker::spawn(&config))
        .await
        .context("joining the broker startup task")?;
    let handle = match spawned {
        Ok(handle) => handle,
        Err(BrokerError::Invalid(errors)) => {
            // validate() already passed in main; kept so this path can never bind silently.
            report_invalid("config", errors);
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
        Err(e @ (BrokerError::Credentials(_) | BrokerError::Tls(_))) => {
            eprintln!("error: {e}");
            let mut cause = e.source();
            while let Some(inner) = cause {
                eprintln!("  caused by: {inner}");
                cause = inner.source();
            }
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
        Err(e) => return Err(anyhow::Error::new(e).context("starting the broker")),
    };

    // Not `run_until_signal`: there is nothing to drain (below), so no grace period either.
    let signal_name = tokio::select! {
        name = signals.next() => name,
        stopped = handle.stopped() => {
            return Err(anyhow::Error::new(stopped).context("the broker stopped on its own"));
        }
    };
    // rumqttd's router cannot drain: connections close when the process exits, and clients
    // reconnect to the next broker. There is nothing to flush, so shutdown is immediate.
    info!(
        signal = signal_name,
        "Shutting down; open MQTT connections close with the process."
    );
    Ok(ExitCode::SUCCESS)
}
