//! `dtop-worker`: the process shell around [`dtop_worker::run::run`]. The common daemon entry
//! (`dtop_daemon::entry`) loads and validates the config (exit 64 before connecting anything);
//! then it runs chunks, and on SIGINT/SIGTERM stops fetching and lets running chunks finish
//! within the grace period.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use dtop_daemon::entry::{self, CommonArgs, Daemon, Start};
use dtop_engine::{EngineConfig, WorkerOptions};
use dtop_worker::config::WorkerConfig;
use dtop_worker::run::{RunOptions, run};

/// DTOP worker: runs study chunks and reduce steps from the studies engine's queue.
#[derive(Debug, clap::Parser)]
#[command(name = "dtop-worker", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

const DAEMON: Daemon<(WorkerConfig, EngineConfig)> = Daemon {
    name: "dtop-worker",
    example_config: || dtop_worker::EXAMPLE_CONFIG.to_owned(),
    config_required: true,
    load,
    describe: |(_, engine)| {
        format!(
            "configuration OK; database {}",
            dtop_engine::db::redact(&engine.database_url)
        )
    },
};

fn load(path: Option<&Path>) -> Result<(WorkerConfig, EngineConfig), String> {
    let path = path.ok_or("--config PATH is required")?;
    let config = dtop_worker::config::load(path).map_err(|e| e.to_string())?;
    let engine = config.engine_config()?;
    Ok((config, engine))
}

fn main() -> ExitCode {
    let (_, (config, engine)) = match entry::begin(&DAEMON, |a: &Args| &a.common) {
        Start::Run(run) => run,
        Start::Exit(code) => return code,
    };
    let options = RunOptions {
        worker: WorkerOptions {
            name: config.name(),
            concurrency: config.concurrency(),
        },
        metrics_listen: config.metrics.as_ref().map(|m| m.listen.clone()),
    };
    let grace = Duration::from_secs_f64(config.worker.grace_s);
    entry::block_on(
        DAEMON.name,
        entry::until_signal(DAEMON.name, grace, |shutdown| {
            run(engine, options, shutdown)
        }),
    )
}
