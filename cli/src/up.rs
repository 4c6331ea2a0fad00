//! `dtop up`: the whole system in one process — embedded broker, simulated rig, edge and twin —
//! wired exactly as the separate daemons are (MQTT over loopback, firmware bytes over a pty).
//! Owns the startup order, the status line and the shutdown order; knows no protocol itself.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use dtop_edge::{EdgeConfig, EdgeStats};
use dtop_proto::RigId;
use dtop_rig_sim::SimConfig;
use dtop_twin::TwinConfig;

use crate::status;

/// Options of `dtop up`. Everything has a default: `dtop up` alone runs the Southampton rig at
/// real time and stores line-protocol files under `./dtop-data/lines`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Loopback port of the embedded MQTT broker.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_port: u16,
    /// Id of the simulated rig.
    #[arg(long, default_value = "southampton-3s")]
    pub rig: String,
    /// Where the edge keeps its counters and the twin its line-protocol files.
    #[arg(long, default_value = "./dtop-data")]
    pub data_dir: PathBuf,
    /// Simulated rig speed: 1 = real time, 5 = five times faster.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Seed of the simulated excitation and sensor noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Store into InfluxDB 1.x at this URL (e.g. http://127.0.0.1:8086) instead of files.
    #[arg(long, conflicts_with = "influx_v2_url")]
    pub influx_v1_url: Option<String>,
    /// InfluxDB 1.x database (must exist).
    #[arg(long, default_value = "dtop")]
    pub influx_db: String,
    /// Store through the InfluxDB v2 write API at this URL (InfluxDB 2.x, VictoriaMetrics).
    #[arg(long)]
    pub influx_v2_url: Option<String>,
    /// InfluxDB v2 organisation.
    #[arg(long, default_value = "dtop")]
    pub influx_org: String,
    /// InfluxDB v2 bucket.
    #[arg(long, default_value = "dtop")]
    pub influx_bucket: String,
    /// File holding the InfluxDB v2 token.
    #[arg(long)]
    pub influx_token_file: Option<PathBuf>,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 2.0)]
    pub status_every_s: f64,
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Where the studies API (`dtop-server`) listens. A busy address stops `dtop up` at start;
    /// pick another with this flag.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: std::net::SocketAddr,
    /// Study chunks run at once by the in-process worker (default: one per core).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Damage the simulated rig: `STOREY:FACTOR@AT_S` (storey 1..=3, its stiffness times
    /// FACTOR from AT_S seconds of simulated time, a step), or `STOREY:FACTOR@AT_S+RAMP_S` (a
    /// ramp). `2:0.9@300` is a 10 % loss of storey 2 five minutes in. Repeatable.
    #[arg(long, value_name = "STOREY:FACTOR@AT_S")]
    pub damage: Vec<String>,
    /// The twin tracks the rig's modes (operational modal analysis of the last
    /// `--track-window-s` every `--track-interval-s`) and raises a drift alarm when one leaves
    /// its band around the model's.
    #[arg(long)]
    pub track: bool,
    /// With --track: the window identified, s of sample time.
    #[arg(long, default_value_t = 120.0)]
    pub track_window_s: f64,
    /// With --track: how often a window is identified, s of sample time.
    #[arg(long, default_value_t = 60.0)]
    pub track_interval_s: f64,
    /// With --track: the centre of each band. `first-window` (default): what the first
    /// identification found, so an alarm means the structure changed since tracking began,
    /// whatever error the model carries (a real rig's model is never within 1 % of it, and
    /// the closely spaced pair of the actuator's proof mass and mode 1 is identified with a
    /// bias of that order). `model`: the modes and storeys of the model the twin runs on.
    #[arg(long, value_enum, default_value_t = TrackReference::FirstWindow)]
    pub track_reference: TrackReference,
    /// The catalogue model the twin follows: when an operator approves a new version of it
    /// (`dtop model approve NAME@N`), the twin switches the rig's estimator and controller to
    /// it. The default is the model of the rig `dtop up` simulates (the Southampton building
    /// with the inertial actuator on floor 3). Empty: the twin keeps its built-in model.
    #[arg(long, default_value = "southampton-actuator")]
    pub follow_model: String,
}

/// Where `dtop up`'s tracking centres its bands (the twin's `tracking.reference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrackReference {
    /// The first identification of each mode and fit of each storey.
    FirstWindow,
    /// The model the twin runs on.
    Model,
}

impl TrackReference {
    /// The twin config's spelling.
    fn as_toml(self) -> &'static str {
        match self {
            Self::FirstWindow => "first_window",
            Self::Model => "model",
        }
    }
}

/// Everything `dtop up` will run, validated before anything is started.
#[derive(Debug)]
pub struct UpPlan {
    pub broker: dtop_broker::BrokerConfig,
    pub twin: TwinConfig,
    pub sim: SimConfig,
    /// The edge's config, minus the serial path, which only exists once the simulator runs.
    pub edge_toml_without_serial: String,
    pub status_every: Duration,
    pub duration: Option<Duration>,
    /// The studies API server: SQLite engine under the data dir, in-process workers.
    pub server: dtop_server::ServerConfig,
    /// Where the first-run admin login lives.
    pub data_dir: PathBuf,
}

/// Builds and validates every component's config from the flags; returns every problem found.
/// `STOREY:FACTOR@AT_S[+RAMP_S]` as the simulator's damage entry (its own checks of the
/// values run with the rest of its config).
fn parse_damage(text: &str) -> Result<dtop_rig_sim::config::DamageConfig, String> {
    let bad = || {
        format!(
            "--damage {text:?}: expected STOREY:FACTOR@AT_S or STOREY:FACTOR@AT_S+RAMP_S, e.g. 2:0.9@300"
        )
    };
    let (storey, rest) = text.split_once(':').ok_or_else(bad)?;
    let (factor, when) = rest.split_once('@').ok_or_else(bad)?;
    let (at, ramp) = when.split_once('+').unwrap_or((when, "0"));
    let number = |s: &str| s.trim().parse::<f64>().map_err(|_| bad());
    Ok(dtop_rig_sim::config::DamageConfig {
        storey: storey.trim().parse().map_err(|_| bad())?,
        stiffness_factor: number(factor)?,
        damping_factor: 1.0,
        at_s: number(at)?,
        ramp_s: number(ramp)?,
    })
}

pub fn plan(args: &UpArgs) -> Result<UpPlan, Vec<String>> {
    let mut problems = Vec::new();
    let rig_ok = match RigId::new(args.rig.as_str()) {
        Ok(_) => true,
        Err(e) => {
            problems.push(format!("--rig: {e}"));
            false
        }
    };
    if !(args.speed.is_finite() && args.speed > 0.0 && args.speed <= 1000.0) {
        problems.push(format!("--speed must be in (0, 1000], got {}", args.speed));
    }
    if !(args.status_every_s.is_finite() && args.status_every_s >= 0.1) {
        problems.push(format!(
            "--status-every-s must be at least 0.1, got {}",
            args.status_every_s
        ));
    }
    if let Some(d) = args.duration_s
        && !(d.is_finite() && d > 0.0)
    {
        problems.push(format!("--duration-s must be positive, got {d}"));
    }
    let token_missing = args.influx_v2_url.is_some() && args.influx_token_file.is_none();
    if token_missing {
        problems.push("--influx-v2-url needs --influx-token-file".to_owned());
    }

    let mut broker = dtop_broker::BrokerConfig::default();
    broker.mqtt.listen = ([127, 0, 0, 1], args.mqtt_port).into();
    if let Err(e) = broker.validate() {
        problems.push(format!("broker: {e}"));
    }

    let mut server = studies_server_config(args);
    // The web users' rules are the embedded broker's own (its built-in ones when it has no
    // `[auth]`, as here): one owner, handed over rather than configured twice.
    server.live.roles = broker
        .auth
        .as_ref()
        .map(|auth| auth.roles.clone())
        .unwrap_or_default();
    problems.extend(
        server
            .validate()
            .into_iter()
            .map(|p| format!("studies server: {p}")),
    );

    let data_dir = args.data_dir.display().to_string();
    let storage = match (&args.influx_v1_url, &args.influx_v2_url) {
        (Some(url), _) => format!(
            "[storage.influx_v1]\nurl = {url:?}\ndatabase = {:?}\n",
            args.influx_db
        ),
        (None, Some(url)) if !token_missing => format!(
            "[storage.influx_v2]\nurl = {url:?}\norg = {:?}\nbucket = {:?}\ntoken_file = {:?}\n",
            args.influx_org,
            args.influx_bucket,
            args.influx_token_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        _ => format!("[storage.file]\ndir = {:?}\n", format!("{data_dir}/lines")),
    };
    // Control on: the twin takes `SetControl` commands (and designs the edge-hosted loop), so
    // an operator can switch DVF on from the rig page. Every rig still starts with law "off".
    let tracking = if args.track {
        format!(
            "[tracking]\nenabled = true\nwindow_s = {:?}\ninterval_s = {:?}\nreference = {:?}\n\n",
            args.track_window_s,
            args.track_interval_s,
            args.track_reference.as_toml()
        )
    } else {
        String::new()
    };
    let follow = if args.follow_model.is_empty() {
        String::new()
    } else {
        format!("[model]\nfollow = {:?}\n\n", args.follow_model)
    };
    let twin_toml = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\n\n[control]\nenabled = true\n\n{tracking}{follow}{storage}",
        args.mqtt_port
    );
    let twin = match TwinConfig::from_toml_str(&twin_toml) {
        Ok(twin) => {
            if let Err(e) = twin.validate() {
                problems.push(format!("twin: {e}"));
            }
            Some(twin)
        }
        Err(e) => {
            problems.push(format!("twin: {e}"));
            None
        }
    };

    // The simulator's Modbus TCP server (on a free loopback port) carries its shaker
    // registers, so the edge can start and stop excitation on command (the firmware link has
    // no excitation message).
    let mut damage = Vec::new();
    for text in &args.damage {
        match parse_damage(text) {
            Ok(d) => damage.push(d),
            Err(p) => problems.push(p),
        }
    }
    let sim = SimConfig {
        seed: args.seed,
        speed: args.speed,
        modbus_listen: Some(([127, 0, 0, 1], 0).into()),
        damage,
        ..SimConfig::default()
    };
    if let Err(e) = sim.validate() {
        problems.push(format!("rig simulator: {e}"));
    }

    let edge_toml_without_serial = format!(
        "rig_id = {rig:?}\nstate_dir = {state:?}\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
         [actuator]\nmax_force_n = 20.0\nmax_slew_n_per_s = 2000.0\n",
        rig = args.rig,
        state = format!("{data_dir}/edge/{}", args.rig),
        port = args.mqtt_port,
    );
    // Check the edge config now, with a placeholder port path, so a bad flag fails before start.
    // A bad rig id was reported above already; the edge would only repeat it.
    if rig_ok {
        match EdgeConfig::from_toml(&edge_config_text(
            &edge_toml_without_serial,
            &PathBuf::from("/dev/null"),
            Some(([127, 0, 0, 1], 1).into()),
        )) {
            Ok(edge) => {
                if let Err(e) = edge.validate() {
                    problems.push(format!("edge: {e}"));
                }
            }
            Err(e) => problems.push(format!("edge: {e}")),
        }
    }

    match (problems.is_empty(), twin) {
        (true, Some(twin)) => Ok(UpPlan {
            broker,
            twin,
            sim,
            edge_toml_without_serial,
            status_every: Duration::from_secs_f64(args.status_every_s),
            duration: args.duration_s.map(Duration::from_secs_f64),
            server,
            data_dir: args.data_dir.clone(),
        }),
        _ => Err(problems),
    }
}

/// The API server of `dtop up`: the engine on `{data_dir}/studies.db` (SQLite), results in
/// `{data_dir}/results/`, in-process workers, the first-run credentials file, and study state
/// published (retained) on the embedded broker, which `dtop up` runs without logins on loopback,
/// and the live rig pages over the same broker (history when the twin stores into InfluxDB 1.x).
fn studies_server_config(args: &UpArgs) -> dtop_server::ServerConfig {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut config = dtop_server::ServerConfig::example();
    config.http.listen = args.http;
    config.credentials_file = args.data_dir.join(crate::first_run::CREDENTIALS_FILE);
    config.engine.database_url = format!("sqlite://{}", args.data_dir.join("studies.db").display());
    config.engine.result_dir = args.data_dir.join("results");
    config.workers.count = args.workers.unwrap_or(cores);
    config.mqtt = Some(dtop_server::config::MqttConfig {
        host: Some("127.0.0.1".into()),
        port: Some(args.mqtt_port),
        brokers: Vec::new(),
        client_id: "dtop-up-studies".into(),
        username: None,
        password_file: None,
    });
    // The rig pages read history from the InfluxDB 1.x the twin writes to, when it does.
    config.live.history = args
        .influx_v1_url
        .as_ref()
        .map(|url| dtop_server::config::HistoryConfig::influx_v1(url, &args.influx_db));
    // `fea` studies with `solver = calculix` run CalculiX when it is installed.
    config.engine.solvers.calculix = on_path("ccx").map(|_| "ccx".into());
    config
}

/// The first `PATH` entry holding an executable file `program`.
fn on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Most shaker force an operator may ask of the simulated rig, N (the default excitation is
/// 5 N RMS).
const SHAKER_MAX_AMPLITUDE_N: f64 = 10.0;

/// The edge's config: the serial port, and the simulator's shaker on its Modbus TCP server
/// (register map in `firmware-bridge/rig-sim/MODBUS.md`) when it runs one.
fn edge_config_text(
    without_serial: &str,
    serial_path: &std::path::Path,
    sim_modbus: Option<std::net::SocketAddr>,
) -> String {
    let shaker = sim_modbus.map_or_else(String::new, |addr| {
        format!(
            "\n[[modbus.devices]]\nname = \"sim\"\ntcp = {{ addr = \"{addr}\" }}\npoll_period_ms = 0\n\n\
             [modbus.shaker]\ndevice = \"sim\"\nwaveform_address = 7\nmax_amplitude_n = {SHAKER_MAX_AMPLITUDE_N:?}\n"
        )
    });
    format!(
        "{without_serial}\n[serial]\npath = {:?}\n{shaker}",
        serial_path.display().to_string()
    )
}

/// Runs the plan until Ctrl-C, SIGTERM or `duration`, then shuts down from the inputs
/// downstream: edge (stop sampling, actuator safe, flush), simulator, twin (drain storage).
pub async fn run(plan: UpPlan) -> Result<()> {
    // The studies API first: a busy port or an unusable data dir stops `dtop up` before the rig
    // starts.
    let admin = crate::first_run::ensure_admin(&plan.data_dir).context("first-run admin login")?;
    let listener = tokio::net::TcpListener::bind(plan.server.http.listen)
        .await
        .with_context(|| {
            format!(
                "binding the studies API on {} (choose another with --http)",
                plan.server.http.listen
            )
        })?;
    let engine = dtop_engine::Engine::connect(&plan.server.engine)
        .await
        .context("opening the studies database")?;
    let server_stop = CancellationToken::new();
    let server_task = tokio::spawn(dtop_server::serve(
        plan.server.clone(),
        engine,
        listener,
        server_stop.clone(),
    ));
    println!(
        "studies: API on http://{}/api/v1 ({} in-process workers, SQLite {})",
        plan.server.http.listen, plan.server.workers.count, plan.server.engine.database_url
    );
    println!(
        "web:     open http://{}/ in a browser and log in with the user below",
        plan.server.http.listen
    );
    match &admin.new_password {
        Some(password) => println!(
            "login:   user admin, password {} (first run; also kept in {})",
            password.expose(),
            admin.password_file.display()
        ),
        None => println!(
            "login:   user admin, password in {}",
            admin.password_file.display()
        ),
    }

    let broker_config = plan.broker.clone();
    let broker = tokio::task::spawn_blocking(move || dtop_broker::spawn(&broker_config))
        .await
        .context("starting the broker thread")?
        .context("starting the embedded MQTT broker")?;
    println!(
        "broker:  MQTT 3.1.1 on {} (embedded rumqttd)",
        broker.mqtt_addr()
    );

    let twin_stop = CancellationToken::new();
    let (mut twin_handle, twin_task) = dtop_twin::spawn(plan.twin.clone(), twin_stop.clone());
    println!("storage: {}", plan.twin.storage.describe());
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        twin_handle.wait_for(|s| s.mqtt_connected),
    )
    .await;
    if !matches!(connected, Ok(Some(_))) {
        warn!("The twin has not connected to the broker within 10 s; continuing.");
    }

    let sim_stop = CancellationToken::new();
    let sim = dtop_rig_sim::start(plan.sim.clone(), sim_stop.clone())
        .await
        .context("starting the rig simulator")?;
    println!(
        "rig:     simulated Southampton 3-storey rig on {} ({} Hz, speed {}x; shaker on Modbus TCP {})",
        sim.pty_path().display(),
        plan.sim.sample_rate_hz,
        plan.sim.speed,
        sim.modbus_addr()
            .map_or_else(|| "none".to_owned(), |a| a.to_string())
    );

    let edge_text = edge_config_text(
        &plan.edge_toml_without_serial,
        sim.pty_path(),
        sim.modbus_addr(),
    );
    let edge_config = EdgeConfig::from_toml(&edge_text).context("edge config")?;
    let edge_stop = CancellationToken::new();
    let (edge_stats_tx, edge_stats_rx) = watch::channel(EdgeStats::default());
    let edge_task = tokio::spawn(dtop_edge::run_with_stats(
        edge_config,
        edge_stop.clone(),
        edge_stats_tx,
    ));
    println!(
        "edge:    reading {} and publishing to the broker; Ctrl-C stops everything\n",
        sim.pty_path().display()
    );

    let started = Instant::now();
    let mut ticker = tokio::time::interval(plan.status_every);
    ticker.tick().await;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let deadline = plan.duration.map(|d| started + d);
    let reason = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break "duration reached",
            _ = ticker.tick() => {
                print!("{}", status::render(started.elapsed().as_secs_f64(), &twin_handle.stats(), &edge_stats_rx.borrow()));
            }
        }
    };
    info!(reason, "Shutting down: edge, then simulator, then twin.");

    edge_stop.cancel();
    let edge_result = tokio::time::timeout(Duration::from_secs(20), edge_task).await;
    sim_stop.cancel();
    let sim_result = tokio::time::timeout(Duration::from_secs(10), sim.join()).await;
    // Let the twin take the edge's last blocks off the broker before it drains.
    tokio::time::sleep(Duration::from_millis(300)).await;
    twin_stop.cancel();
    let twin_result = tokio::time::timeout(Duration::from_secs(30), twin_task).await;
    server_stop.cancel();
    let server_result = tokio::time::timeout(Duration::from_secs(30), server_task).await;

    print!(
        "{}",
        status::render(
            started.elapsed().as_secs_f64(),
            &twin_handle.stats(),
            &edge_stats_rx.borrow()
        )
    );
    let mut failures = Vec::new();
    match edge_result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => failures.push(format!("edge: {e}")),
        Ok(Err(e)) => failures.push(format!("edge task: {e}")),
        Err(_) => failures.push("edge did not stop within 20 s".to_owned()),
    }
    match sim_result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => failures.push(format!("simulator: {e}")),
        Err(_) => failures.push("simulator did not stop within 10 s".to_owned()),
    }
    match twin_result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => failures.push(format!("twin: {e}")),
        Ok(Err(e)) => failures.push(format!("twin task: {e}")),
        Err(_) => failures.push("twin did not drain within 30 s".to_owned()),
    }
    match server_result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => failures.push(format!("studies server: {e}")),
        Ok(Err(e)) => failures.push(format!("studies server task: {e}")),
        Err(_) => failures.push("studies server did not stop within 30 s".to_owned()),
    }
    if failures.is_empty() {
        info!("Stopped gracefully.");
        Ok(())
    } else {
        Err(anyhow!(
            "shutdown was not graceful: {}",
            failures.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    fn args(extra: &[&str]) -> UpArgs {
        let mut argv = vec!["dtop"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).up
    }

    #[test]
    fn defaults_plan_a_file_store_and_real_time_rig() {
        let plan = plan(&args(&[])).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(plan.twin.storage.describe().contains("dtop-data/lines"));
        assert_eq!(plan.sim.speed, 1.0);
        assert_eq!(plan.broker.mqtt.listen.port(), 1883);
    }

    #[test]
    fn a_damage_scenario_and_tracking_reach_the_simulator_and_the_twin() {
        let planned = plan(&args(&[
            "--damage",
            "2:0.9@300",
            "--damage",
            "1:0.95@10+20",
            "--track",
        ]))
        .unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(planned.sim.damage.len(), 2);
        assert_eq!(planned.sim.damage[0].storey, 2);
        assert_eq!(planned.sim.damage[0].stiffness_factor, 0.9);
        assert_eq!(planned.sim.damage[0].at_s, 300.0);
        assert_eq!(planned.sim.damage[1].ramp_s, 20.0);
        assert!(planned.twin.tracking.enabled);
        assert_eq!(
            planned.twin.model.follow.as_deref(),
            Some("southampton-actuator")
        );
        assert_eq!(planned.twin.tracking.window_s, 120.0);
        assert_eq!(
            planned.twin.tracking.reference,
            dtop_twin::config::TrackingReference::FirstWindow
        );
        let problems = plan(&args(&["--damage", "2-0.9", "--damage", "9:0.9@1"])).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("--damage \"2-0.9\"")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("rig simulator")),
            "{problems:?}"
        );
    }

    #[test]
    fn reports_every_bad_flag_at_once() {
        let problems = plan(&args(&[
            "--rig",
            "a/b",
            "--speed",
            "0",
            "--status-every-s",
            "0",
            "--influx-v2-url",
            "http://x",
        ]))
        .err()
        .unwrap_or_default();
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    #[test]
    fn influx_flags_select_the_v1_store() {
        let plan = plan(&args(&[
            "--influx-v1-url",
            "http://127.0.0.1:8086",
            "--influx-db",
            "lab",
        ]))
        .unwrap_or_else(|p| panic!("{p:?}"));
        assert!(plan.twin.storage.describe().contains("database lab"));
    }
}
