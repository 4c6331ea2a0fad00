//! `dtop`: thin entry point. Parses the command line, validates (exit 64 on bad input, before
//! anything starts), and runs the chosen subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use dtop_cli::cmd::{self, CmdArgs};
use dtop_cli::compute::{
    self, Computation, ComputeError, ControlArgs, CriticalGainArgs, FrfArgs, ModalArgs,
};
use dtop_cli::model::{self, ModelArgs};
use dtop_cli::model_source::{self, ModelOption};
use dtop_cli::nats_config::{self, NatsConfigArgs, NatsConfigError};
use dtop_cli::study::{self, StudyArgs};
use dtop_cli::up::{self, UpArgs};

/// DTOP: digital-twin operational platform for vibrating structures.
#[derive(Debug, Parser)]
#[command(name = "dtop", version)]
struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `dtop_edge=debug`.
    /// rumqttd 0.20 logs every clean client disconnect at ERROR, so its logs are off by default
    /// here; `dtop-broker` run on its own keeps them.
    #[arg(long, global = true, default_value = "warn,rumqttd=off")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system locally on embedded defaults: broker, simulated rig, edge and twin.
    Up(UpArgs),
    /// Print the modal analysis (frequencies, mass-normalised shapes, damping, poles) of the
    /// Southampton building (or --model) as JSON.
    Modal {
        #[command(flatten)]
        args: ModalArgs,
        #[command(flatten)]
        model: ModelOption,
    },
    /// Print one frequency response function of the Southampton building (or --model) as JSON.
    Frf {
        #[command(flatten)]
        args: FrfArgs,
        #[command(flatten)]
        model: ModelOption,
    },
    /// Assess a vibration-control law (tmd, dvf, lqg) on the Southampton building (or
    /// --model); JSON.
    Control {
        #[command(flatten)]
        args: ControlArgs,
        #[command(flatten)]
        model: ModelOption,
    },
    /// Print the critical direct-velocity-feedback gain per actuator floor as JSON.
    DvfCriticalGain {
        #[command(flatten)]
        args: CriticalGainArgs,
        #[command(flatten)]
        model: ModelOption,
    },
    /// Send an operator command to a rig over MQTT and print its acknowledgements as JSON.
    /// Exit 0 if applied (or latched), 1 if refused or expired, 2 without an answer.
    Cmd(CmdArgs),
    /// Submit, follow, list, cancel and download studies on the API server (`dtop up` serves
    /// one). Exit 0 ok, 1 study failed or request refused, 2 server unreachable, 64 bad
    /// input, 77 not logged in or not allowed.
    Study(StudyArgs),
    /// The model catalogue on the API server: list, show, add, import. Exit codes as `study`.
    Model(ModelArgs),
    /// Write a NATS `authorization` block (users with bcrypt hashes and permissions) generated
    /// from DTOP's credentials file and role rules, to `include` in each NATS node's config.
    /// Exit 0 written, 64 bad options, credentials or rules (every problem listed), 1 write
    /// failed.
    NatsConfig(NatsConfigArgs),
}

/// Exit status for bad command-line input (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cli.log));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --log {:?}: {e}", cli.log);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let computation = match cli.command {
        Command::Up(args) => return run_up(&args),
        Command::Cmd(args) => return run_cmd(&args),
        Command::Study(args) => return client_exit(study::run(&args)),
        Command::Model(args) => return client_exit(model::run(&args)),
        Command::NatsConfig(args) => return run_nats_config(&args),
        Command::Modal { args, model } => (Computation::Modal(args), model),
        Command::Frf { args, model } => (Computation::Frf(args), model),
        Command::Control { args, model } => (Computation::Control(args), model),
        Command::DvfCriticalGain { args, model } => (Computation::DvfCriticalGain(args), model),
    };
    let (computation, model) = computation;
    let structure = match model_source::resolve(&model) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --model: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match compute::run_on(&computation, &structure) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(ComputeError::Usage(problems)) => {
            eprintln!("error: {} problem(s) with the options:", problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            ExitCode::from(EXIT_USAGE)
        }
        Err(ComputeError::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of a `dtop study`/`dtop model` command, with the error on stderr.
fn client_exit(outcome: Result<u8, dtop_cli::client::ClientError>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `dtop nats-config`: generate and write the block; say what was left out.
fn run_nats_config(args: &NatsConfigArgs) -> ExitCode {
    match nats_config::run(args) {
        Ok(written) => {
            eprintln!(
                "wrote {} NATS user(s) to {}",
                written.users,
                args.out.display()
            );
            if !written.certificate_only.is_empty() {
                eprintln!(
                    "left out certificate-only user(s) {}: NATS cannot check them without a \
                     password (map their certificates in the NATS TLS config)",
                    written.certificate_only.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ NatsConfigError::Invalid(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `dtop cmd`: build the command (exit 64 on bad options), send it, print the answers.
fn run_cmd(args: &CmdArgs) -> ExitCode {
    let command = match cmd::build(args, cmd::unix_now_ns()) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("error: {} problem(s) with the options:", problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = std::time::Duration::from_secs_f64(args.timeout_s);
    match runtime.block_on(cmd::send(args, &command, timeout)) {
        Ok(acks) => {
            let mut ok = acks.iter().all(cmd::succeeded);
            let json: Vec<_> = acks.iter().map(cmd::ack_json).collect();
            if ok && cmd::waits_for_cbc(args) {
                let run = match runtime.block_on(cmd::wait_cbc(args, &command.id, timeout)) {
                    Ok(run) => run,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        return ExitCode::from(2);
                    }
                };
                ok = run["state"] == "completed";
                let out = serde_json::json!({ "acks": json, "run": run });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                return if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `dtop up`: validate every option, then run until Ctrl-C or `--duration-s`.
fn run_up(args: &UpArgs) -> ExitCode {
    let plan = match up::plan(args) {
        Ok(plan) => plan,
        Err(problems) => {
            eprintln!("error: {} problem(s) with the options:", problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(up::run(plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
