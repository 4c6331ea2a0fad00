//! `dtop-twin`: the process shell around [`dtop_twin::run`]. Logs, loads and validates the
//! config (exit 64 before connecting anything), runs, waits for SIGINT/SIGTERM, and drains
//! within a grace period ([`dtop_daemon::run_until_signal`]; a second signal gives up at once). Two off-line tools share the config: `replay` (a stored range
//! through the estimator and controller again, [`dtop_twin::replay`]) and `audit` (holes in the
//! stored block seqs, [`dtop_twin::store::audit`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Subcommand};
use dtop_daemon::entry::{self, CommonArgs, Daemon, Start};
use dtop_daemon::{Ending, Signals, run_until_signal};
use dtop_proto::RigId;
use dtop_twin::config::{ConfigError, TwinConfig};
use dtop_twin::replay::{ReplayError, ReplayRange};
use dtop_twin::store::query::InfluxQuery;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// EX_USAGE from sysexits.h: the configuration is unusable.
const EXIT_BAD_CONFIG: u8 = dtop_daemon::EXIT_CONFIG;
/// `replay --verify` or `audit` found a difference or a hole.
const EXIT_DIFFERENCES: u8 = 1;
/// `replay` or `audit` could not read what it needs from storage.
const EXIT_STORAGE: u8 = 2;
/// How long one storage query of `replay` or `audit` may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a one-line summary is logged while running.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(30);

/// DTOP twin service: ingests rig sample blocks from MQTT and stores them durably.
#[derive(Debug, clap::Parser)]
#[command(name = "dtop-twin", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Without a subcommand the twin runs.
    #[command(subcommand)]
    tool: Option<Tool>,
    /// How long shutdown may take before the process exits anyway, ms. Default: the config's
    /// drain timeout plus one HTTP timeout plus 5 s.
    #[arg(long, value_name = "MS")]
    grace_ms: Option<u64>,
}

const DAEMON: Daemon<TwinConfig> = Daemon {
    name: "dtop-twin",
    example_config: || dtop_twin::EXAMPLE_CONFIG.to_owned(),
    config_required: false,
    load: |path| load_config(path).map_err(|e| e.to_string()),
    describe: |config| {
        let coordinator = match &config.coordinator {
            None => "none (this twin owns every rig)".to_owned(),
            Some(c) => match c.database_url() {
                Ok(url) => format!("twin {} on {url}", c.twin_id),
                Err(e) => format!("twin {} ({e})", c.twin_id),
            },
        };
        format!(
            "configuration OK; storage: {}; coordinator: {coordinator}",
            config.storage.describe()
        )
    },
};

/// The off-line tools; both read the storage the config's `[storage]` writes to.
#[derive(Debug, Subcommand)]
enum Tool {
    /// Replays a stored time range of one rig through the estimator and controller, off-line;
    /// prints a JSON report, writes the estimates and drives as JSON lines, and with --verify
    /// compares them bit for bit with what the live twin stored (exit 1 on any difference).
    Replay(ReplayArgs),
    /// Lists the holes in one rig's stored block seqs, and apart from them the missing seqs the
    /// edge declared lost, with their reasons (exit 1 if any missing seq is not declared).
    Audit(AuditArgs),
}

#[derive(Debug, ClapArgs)]
struct ReplayArgs {
    /// Rig id.
    #[arg(long)]
    rig: String,
    /// Start of the range: RFC 3339 (`2026-11-24T08:00:00Z`) or ns since the Unix epoch.
    #[arg(long)]
    from: String,
    /// End of the range (included), as --from.
    #[arg(long)]
    to: String,
    /// Compare every estimate and drive with the stored ones.
    #[arg(long)]
    verify: bool,
    /// Where the replayed estimates and drives go, one JSON object per line (`-`: stdout, the
    /// report then goes to stderr). Without it they are only counted.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// With `[[storage.nodes]]`: read this node only (default: the first node that answers).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
}

#[derive(Debug, ClapArgs)]
struct AuditArgs {
    /// Rig id.
    #[arg(long)]
    rig: String,
    /// First seq expected; default the lowest stored.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Last seq expected; default the highest stored.
    #[arg(long)]
    to_seq: Option<u64>,
    /// With `[[storage.nodes]]`: read this node only (default: the first node that answers).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
}

fn main() -> ExitCode {
    let (args, config) = match entry::begin(&DAEMON, |a: &Args| &a.common) {
        Start::Run(run) => run,
        Start::Exit(code) => return code,
    };
    if let Some(tool) = &args.tool {
        return run_tool(tool, &config);
    }
    let grace = Duration::from_millis(
        args.grace_ms
            .unwrap_or(config.batch.drain_timeout_ms + config.http.timeout_ms + 5_000),
    );

    entry::block_on(DAEMON.name, async move {
        serve(config, grace).await.map_err(|e| format!("{e:#}"))
    })
}

fn load_config(path: Option<&std::path::Path>) -> Result<TwinConfig, ConfigError> {
    match path {
        Some(path) => TwinConfig::load(path),
        None => {
            let config = TwinConfig::default();
            if let Err(problems) = config.validate()
                && let Some(problems) =
                    dtop_daemon::ConfigProblems::from_problems(problems.into_daemon_problems())
            {
                return Err(ConfigError::Invalid {
                    path: "(built-in defaults)".into(),
                    problems,
                });
            }
            Ok(config)
        }
    }
}

async fn serve(config: TwinConfig, grace: Duration) -> anyhow::Result<ExitCode> {
    let signals = Signals::new().context("installing the signal handlers")?;
    let shutdown = CancellationToken::new();
    // Bound before anything runs, so a taken port fails the start.
    let metrics = match config.metrics.listen {
        Some(addr) => Some((
            addr,
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint {addr}"))?,
        )),
        None => None,
    };
    let (handle, mut twin) = dtop_twin::spawn(config, shutdown.clone());
    if let Some((addr, listener)) = metrics {
        info!(%addr, "Serving Prometheus metrics on /metrics.");
        let (render, shutdown) = (
            dtop_twin::metrics::renderer(handle.clone()),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = dtop_daemon::metrics::serve(listener, render, shutdown).await {
                error!(error = %e, "The metrics endpoint stopped.");
            }
        });
    }
    let mut summary = tokio::time::interval(SUMMARY_INTERVAL);
    summary.tick().await;
    // The twin, with a summary line every interval until shutdown begins.
    let work = async {
        loop {
            tokio::select! {
                result = &mut twin => break result,
                _ = summary.tick(), if !shutdown.is_cancelled() => {
                    if !shutdown.is_cancelled() {
                        log_summary(&handle.stats());
                    }
                }
            }
        }
    };

    match run_until_signal(signals, work, shutdown.clone(), grace).await {
        Ending::Finished(result) => {
            result.context("twin task")?.context("running the twin")?;
            warn!("The twin stopped without being asked to.");
            Ok(ExitCode::FAILURE)
        }
        Ending::Drained(result) => {
            result.context("twin task")?.context("draining the twin")?;
            info!(
                grace_ms = grace.as_millis() as u64,
                "Shutdown was graceful."
            );
            Ok(ExitCode::SUCCESS)
        }
        Ending::GraceExceeded => {
            twin.abort();
            let stats = handle.stats();
            error!(
                grace_ms = grace.as_millis() as u64,
                lines_pending = stats.store.lines_pending,
                "Shutdown was forced: the grace period ended before storage drained."
            );
            Ok(ExitCode::FAILURE)
        }
        Ending::SecondSignal => {
            twin.abort();
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
            owned = r.owned,
            owner_epoch = r.owner_epoch,
            blocks_not_owned = r.blocks_not_owned,
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

fn run_tool(tool: &Tool, config: &TwinConfig) -> ExitCode {
    let (rig, node) = match tool {
        Tool::Replay(a) => (&a.rig, a.node.as_deref()),
        Tool::Audit(a) => (&a.rig, a.node.as_deref()),
    };
    let mut problems = Vec::new();
    let rig = RigId::new(rig.as_str())
        .map_err(|e| problems.push(format!("--rig {rig:?}: {e}")))
        .ok();
    let range = match tool {
        Tool::Replay(a) => {
            let from = parse_time_ns(&a.from).map_err(|e| problems.push(format!("--from: {e}")));
            let to = parse_time_ns(&a.to).map_err(|e| problems.push(format!("--to: {e}")));
            match (from, to) {
                (Ok(from_ns), Ok(to_ns)) if from_ns > to_ns => {
                    problems.push(format!("--from ({from_ns} ns) is after --to ({to_ns} ns)"));
                    None
                }
                (Ok(from_ns), Ok(to_ns)) => Some(ReplayRange { from_ns, to_ns }),
                _ => None,
            }
        }
        Tool::Audit(_) => None,
    };
    let query = InfluxQuery::from_storage_nodes(&config.storage, node, QUERY_TIMEOUT)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    let (Some(rig), Some(query), true) = (rig, query, problems.is_empty()) else {
        for p in &problems {
            eprintln!("dtop-twin: {p}");
        }
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dtop-twin: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match (tool, range) {
        (Tool::Replay(a), Some(range)) => runtime.block_on(replay(a, config, &query, &rig, range)),
        (Tool::Audit(a), _) => runtime.block_on(audit(a, &query, &rig)),
        (Tool::Replay(_), None) => return ExitCode::from(EXIT_BAD_CONFIG),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dtop-twin: {e:#}");
            ExitCode::from(EXIT_STORAGE)
        }
    }
}

/// RFC 3339, or an integer count of ns since the Unix epoch.
fn parse_time_ns(text: &str) -> Result<i64, String> {
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is neither RFC 3339 nor ns since the epoch: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| format!("{text:?} is outside the years InfluxDB can store"))
}

async fn replay(
    args: &ReplayArgs,
    config: &TwinConfig,
    query: &InfluxQuery,
    rig: &RigId,
    range: ReplayRange,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let to_stdout = args.out.as_deref() == Some(std::path::Path::new("-"));
    let mut out: Option<Box<dyn std::io::Write>> = match &args.out {
        None => None,
        Some(_) if to_stdout => Some(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        Some(path) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ))),
    };
    let mut write_error = None;
    let result = dtop_twin::replay::replay(
        query,
        rig,
        config.storage.precision(),
        range,
        args.verify,
        |item| {
            if let (Some(w), None) = (&mut out, &write_error) {
                let line = serde_json::to_string(item).unwrap_or_default();
                if let Err(e) = writeln!(w, "{line}") {
                    write_error = Some(e);
                }
            }
        },
    )
    .await;
    if let Some(w) = &mut out {
        w.flush().context("writing the replayed estimates")?;
    }
    if let Some(e) = write_error {
        return Err(e).context("writing the replayed estimates");
    }
    let report = match result {
        Ok(report) => report,
        Err(e @ ReplayError::Missing(_)) => return Err(e.into()),
        Err(e) => return Err(e).context("replaying"),
    };
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    if to_stdout {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    let identical = report
        .verification
        .as_ref()
        .is_none_or(|v| v.is_identical());
    Ok(if identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DIFFERENCES)
    })
}

async fn audit(args: &AuditArgs, query: &InfluxQuery, rig: &RigId) -> anyhow::Result<ExitCode> {
    let found = dtop_twin::store::audit::stored_seqs(query, rig)
        .await
        .context("reading the stored block seqs")?;
    let (Some(&lowest), Some(&highest)) = (found.iter().min(), found.iter().max()) else {
        anyhow::bail!("rig {rig}: no block is stored");
    };
    let declared = dtop_twin::store::audit::declared_losses(query, rig)
        .await
        .context("reading the declared seq losses")?;
    let expected = args.from_seq.unwrap_or(lowest)..=args.to_seq.unwrap_or(highest);
    let report = dtop_twin::store::audit::holes(expected.clone(), &found).with_declared(&declared);
    let text = serde_json::json!({
        "rig": rig.as_str(),
        "expected": [expected.start(), expected.end()],
        "complete": report.is_complete(),
        "report": report,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&text).unwrap_or_default()
    );
    Ok(if report.is_complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DIFFERENCES)
    })
}
