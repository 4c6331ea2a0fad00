//! The `dtop-server` daemon: the common daemon entry (`dtop_daemon::entry`) loads and checks the
//! config (exit 64 with every problem before binding); then connect the engine, bind, tell
//! systemd READY, serve until SIGINT/SIGTERM, drain.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use dtop_daemon::entry::{self, CommonArgs, Daemon, Start};
use dtop_server::ServerConfig;
use tokio_util::sync::CancellationToken;

/// DTOP HTTP API server.
#[derive(Debug, clap::Parser)]
#[command(name = "dtop-server", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

/// Where the config is read from without `--config`.
const DEFAULT_CONFIG_PATH: &str = "/etc/dtop/dtop-server.toml";

/// How long running requests get after a signal.
const GRACE: Duration = Duration::from_secs(30);

const DAEMON: Daemon<ServerConfig> = Daemon {
    name: "dtop-server",
    example_config: || {
        toml::to_string_pretty(&ServerConfig::example())
            .unwrap_or_else(|e| format!("# cannot print the example: {e}\n"))
    },
    config_required: false,
    load,
    describe: |config| format!("configuration OK; listening on {}", config.http.listen),
};

fn load(path: Option<&Path>) -> Result<ServerConfig, String> {
    let path = path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    let mut config = dtop_daemon::load(path, ServerConfig::validate).map_err(|e| e.to_string())?;
    // The web users' rules are the broker's own: read from its config file (whose problems
    // `validate` reported already, with every other one).
    config.live.load_roles()?;
    Ok(config)
}

fn main() -> ExitCode {
    let (_, config) = match entry::begin(&DAEMON, |a: &Args| &a.common) {
        Start::Run(run) => run,
        Start::Exit(code) => return code,
    };
    entry::block_on(
        DAEMON.name,
        entry::until_signal(DAEMON.name, GRACE, |shutdown| async move {
            run(config, shutdown).await.map_err(|e| format!("{e:#}"))
        }),
    )
}

async fn run(config: ServerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let engine = dtop_engine::Engine::connect(&config.engine)
        .await
        .context("connecting the studies engine")?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    let watchdog = dtop_daemon::notify::Watchdog::from_env();
    tokio::spawn(watchdog.run(shutdown.clone()));
    dtop_daemon::notify::ready("dtop-server");
    dtop_server::serve(config, engine, listener, shutdown)
        .await
        .context("serving")
}
