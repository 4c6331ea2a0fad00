//! A fleet as real processes (issue 16): rigs (a `dtop-rig-sim` and a `dtop-edge` each, 1 kHz in
//! real time) and `dtop-twin`s sharing them through rig leases on PostgreSQL (`[coordinator]`),
//! on any brokers (one `dtop-broker`, or a list of NATS nodes), storing into InfluxDB 1.x. Owns
//! the processes it starts (each a [`Proc`], killed by PID when dropped) and how their configs
//! are written; reads back what the tests judge: each twin's ownership (its `/metrics`), the
//! lease table, each edge's `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use dtop_lease::{LeaseRow, PgLeaseStore, TwinId};
use dtop_proto::RigId;
use serde_json::Value;

use crate::http::blocking_client;
use crate::{Proc, bin, free_port, wait_for};

/// The lease timings every twin of a fleet runs with (`[coordinator.lease]`): short, so a
/// takeover fits a test. `ttl_ms` must exceed 2 × `renew_interval_ms` + `safety_margin_ms`.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    pub ttl_ms: u64,
    pub renew_interval_ms: u64,
    pub safety_margin_ms: u64,
}

impl LeaseTimings {
    /// The longest a dead twin's rig waits for its next owner: the lease running out, plus
    /// two renew ticks of the survivor (the first may come just before the expiry).
    pub fn takeover_bound(&self) -> Duration {
        Duration::from_millis(self.ttl_ms + 2 * self.renew_interval_ms)
    }
}

/// What one twin is started with.
#[derive(Debug, Clone)]
pub struct TwinSpec<'a> {
    pub id: &'a str,
    /// The `[mqtt] brokers` list, tried in this order.
    pub brokers: &'a [SocketAddr],
    /// InfluxDB 1.x base URL and database.
    pub influx: &'a str,
    pub database: &'a str,
    /// The lease database (`[coordinator] database_url`).
    pub database_url: &'a str,
    pub lease: LeaseTimings,
    /// Appended to the config as it is (e.g. `[control]\nenabled = true\n`).
    pub extra_toml: &'a str,
}

/// One twin process and its metrics port.
#[derive(Debug)]
pub struct FleetTwin {
    pub id: TwinId,
    pub proc: Proc,
    pub metrics_port: u16,
    /// Its config file (also what `dtop-twin replay --config` reads storage from).
    pub conf: PathBuf,
}

/// What one twin says of one rig, from its `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TwinView {
    pub owned: bool,
    /// The epoch it owns the rig at, or lost it at.
    pub owner_epoch: u64,
    /// Sample blocks it dropped because it did not own the rig.
    pub blocks_not_owned: u64,
}

impl FleetTwin {
    /// Starts a twin and waits until it has subscribed and reached the lease database.
    pub fn spawn(dir: &Path, spec: &TwinSpec<'_>) -> Result<Self> {
        let metrics_port = free_port()?;
        let conf = dir.join(format!("{}.toml", spec.id));
        let l = spec.lease;
        std::fs::write(
            &conf,
            format!(
                "[mqtt]\n{brokers}client_id = \"dtop-{id}\"\n\n\
                 [storage.influx_v1]\nurl = \"{influx}\"\ndatabase = \"{db}\"\nprecision = \"us\"\n\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
                 [coordinator]\ntwin_id = \"{id}\"\ndatabase_url = \"{url}\"\n\n\
                 [coordinator.lease]\nttl_ms = {ttl}\nrenew_interval_ms = {renew}\n\
                 safety_margin_ms = {margin}\n\n{extra}",
                brokers = broker_list(spec.brokers),
                id = spec.id,
                influx = spec.influx,
                db = spec.database,
                url = spec.database_url,
                ttl = l.ttl_ms,
                renew = l.renew_interval_ms,
                margin = l.safety_margin_ms,
                extra = spec.extra_toml,
            ),
        )?;
        let mut proc = Proc::spawn(
            spec.id,
            &bin("dtop-twin")?,
            &["--config", &path_str(&conf)],
            dir,
        )?;
        // Under a full test suite on 2 cores a NATS gateway may refuse a QoS 1 filter a few
        // times (its consumer not created within `js_api_timeout`); the twin asks again.
        wait_for(
            &format!("{} to subscribe and reach the lease database", spec.id),
            Duration::from_secs(60),
            || {
                proc.ensure_running()?;
                let log = proc.log();
                Ok((log.contains("Subscribed to rig topics.")
                    && log.contains("Connected to the lease database."))
                .then_some(()))
            },
        )
        .with_context(|| format!("{} log:\n{}", spec.id, proc.log()))?;
        Ok(Self {
            id: TwinId::new(spec.id)?,
            proc,
            metrics_port,
            conf,
        })
    }

    /// (rig id, outcome) → this twin's takeovers of the rig with that outcome
    /// (`dtop_twin_rig_takeovers_total`: `continued`, or why a new run started).
    pub fn takeovers(&self) -> Result<BTreeMap<(String, String), u64>> {
        let text = blocking_client()?
            .get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()?
            .text()
            .to_owned();
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("dtop_twin_rig_takeovers_total{rig=\"") else {
                continue;
            };
            let parsed = rest.split_once("\",reason=\"").and_then(|(rig, rest)| {
                let (reason, value) = rest.split_once("\"} ")?;
                Some((
                    (rig.to_owned(), reason.to_owned()),
                    value.trim().parse::<f64>().ok()?,
                ))
            });
            if let Some((key, n)) = parsed {
                out.insert(key, n as u64);
            }
        }
        Ok(out)
    }

    /// Rig id → what this twin says of it.
    pub fn views(&self) -> Result<BTreeMap<String, TwinView>> {
        let text = blocking_client()?
            .get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()?
            .text()
            .to_owned();
        let mut out: BTreeMap<String, TwinView> = BTreeMap::new();
        for (name, rig, value) in text.lines().filter_map(rig_sample) {
            let view = out.entry(rig).or_default();
            match name {
                "dtop_twin_rig_owned" => view.owned = value == 1.0,
                "dtop_twin_rig_owner_epoch" => view.owner_epoch = value as u64,
                "dtop_twin_rig_blocks_not_owned_total" => view.blocks_not_owned = value as u64,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// What one rig is started with.
#[derive(Debug, Clone)]
pub struct RigSpec<'a> {
    pub id: &'a RigId,
    pub seed: u64,
    /// The edge's `[mqtt] brokers` list, tried in this order.
    pub brokers: &'a [SocketAddr],
    /// Samples the simulator sends at 1 kHz before it stops.
    pub samples: u64,
    pub block_samples: u32,
    /// Appended to the edge's config as it is (tables not otherwise written: `[spool]` is).
    pub edge_toml: &'a str,
    /// `[spool] stall_s` of the edge: how long a stalled watermark waits for a replay.
    pub stall_s: f64,
}

/// One rig: its simulator and edge.
#[derive(Debug)]
pub struct FleetRig {
    pub id: RigId,
    pub sim: Proc,
    pub edge: Proc,
    pub metrics_port: u16,
}

impl FleetRig {
    /// Starts the simulator (in `dir/{rig}`), waits for its pty, then starts the edge on it.
    pub fn spawn(dir: &Path, spec: &RigSpec<'_>) -> Result<Self> {
        let dir = dir.join(spec.id.as_str());
        std::fs::create_dir_all(&dir)?;
        let pty = dir.join("rig.pty");
        let (seed, max) = (spec.seed.to_string(), spec.samples.to_string());
        let (truth, pty_arg) = (path_str(&dir.join("truth.csv")), path_str(&pty));
        let sim = Proc::spawn(
            "rig-sim",
            &bin("dtop-rig-sim")?,
            &[
                "--seed",
                &seed,
                "--speed",
                "1",
                "--max-samples",
                &max,
                "--truth-log",
                &truth,
                "--pty-link",
                &pty_arg,
            ],
            &dir,
        )?;
        wait_for("the simulator's pty", Duration::from_secs(15), || {
            Ok(pty.exists().then_some(()))
        })
        .with_context(|| format!("rig-sim log:\n{}", sim.log()))?;
        let metrics_port = free_port()?;
        let conf = dir.join("edge.toml");
        std::fs::write(
            &conf,
            format!(
                "rig_id = \"{id}\"\nstate_dir = \"{state}\"\n\n[serial]\npath = \"{pty}\"\n\n\
                 [acquisition]\nblock_samples = {blocks}\n\n\
                 [mqtt]\n{brokers}reconnect_backoff_max_ms = 1000\n\n\
                 [actuator]\nmax_force_n = 20.0\nmax_slew_n_per_s = 2000.0\n\n\
                 [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
                 [spool]\nreplay_blocks_per_s = 400\nstall_s = {stall}\n\n{extra}",
                id = spec.id,
                state = dir.join("edge-state").display(),
                pty = pty.display(),
                blocks = spec.block_samples,
                brokers = broker_list(spec.brokers),
                stall = spec.stall_s,
                extra = spec.edge_toml,
            ),
        )?;
        let edge = Proc::spawn(
            "edge",
            &bin("dtop-edge")?,
            &["--config", &path_str(&conf)],
            &dir,
        )?;
        Ok(Self {
            id: spec.id.clone(),
            sim,
            edge,
            metrics_port,
        })
    }

    /// The edge's `/metrics`, the rig label dropped (`crate::audit::edge_metrics`).
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        crate::audit::edge_metrics(self.metrics_port)
    }
}

/// `[mqtt] brokers = [...]` for `brokers`.
fn broker_list(brokers: &[SocketAddr]) -> String {
    let list: Vec<String> = brokers.iter().map(|b| format!("\"{b}\"")).collect();
    format!("brokers = [{}]\n", list.join(", "))
}

/// `name{rig="R"} value` → (name, R, value).
fn rig_sample(line: &str) -> Option<(&str, String, f64)> {
    let (name, rest) = line.split_once("{rig=\"")?;
    let (rig, rest) = rest.split_once("\"}")?;
    Some((name, rig.to_owned(), rest.trim().parse().ok()?))
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The leases by rig, read from `dtop_rig_leases`.
pub fn leases(
    rt: &tokio::runtime::Runtime,
    store: &PgLeaseStore,
) -> Result<BTreeMap<RigId, LeaseRow>> {
    Ok(rt
        .block_on(store.leases())?
        .into_iter()
        .map(|row| (row.rig.clone(), row))
        .collect())
}

/// The last `lines` lines of each process's log, for failure messages.
pub fn logs<'a>(procs: impl IntoIterator<Item = (String, &'a Proc)>, lines: usize) -> String {
    let mut out = String::new();
    for (name, p) in procs {
        let log = p.log();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        out.push_str(&format!("----- {name} (last {lines} lines)\n"));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every twin's and rig's processes, named, for [`logs`].
pub fn fleet_procs<'a>(
    twins: &'a [FleetTwin],
    rigs: &'a [FleetRig],
) -> impl Iterator<Item = (String, &'a Proc)> {
    twins
        .iter()
        .map(|t| (t.id.to_string(), &t.proc))
        .chain(rigs.iter().flat_map(|r| {
            [
                (format!("{} rig-sim", r.id), &r.sim),
                (format!("{} edge", r.id), &r.edge),
            ]
        }))
}

/// Waits until InfluxDB holds every block seq below `next_seq` of `rig` (no hole) and at least
/// `samples` sample points; returns what it holds. The error says what was missing last.
pub fn wait_stored(
    influx: &str,
    database: &str,
    rig: &RigId,
    next_seq: u64,
    samples: u64,
    within: Duration,
) -> Result<crate::audit::Stored> {
    let mut last = String::new();
    wait_for(
        &format!("InfluxDB to hold every block of {rig}"),
        within,
        || {
            let stored = crate::audit::stored(influx, database, rig.as_str())?;
            let holes = crate::audit::holes(next_seq.saturating_sub(1), &stored.blocks);
            last = format!(
                "next_seq {next_seq}, {} blocks stored, holes {:?}, {} sample points",
                stored.blocks.len(),
                &holes[..holes.len().min(8)],
                stored.sample_points
            );
            Ok((holes.is_empty() && stored.sample_points >= samples).then_some(stored))
        },
    )
    .with_context(|| last.clone())
}

/// What `dtop-twin replay --verify` found over one rig's whole stored range.
#[derive(Debug, Clone)]
pub struct ReplayVerified {
    /// Estimator runs replayed (one per birth, restart or new-run takeover).
    pub runs: usize,
    /// Stored estimates compared with the replay, every one identical.
    pub estimates: u64,
    /// The report as the CLI printed it.
    pub report: Value,
}

/// Replays `rig`'s whole stored range (its first birth to a second past its last feed record)
/// with `dtop-twin replay --verify`, storage read through the twin config `conf`, and fails
/// unless the CLI exits 0 and every stored estimate equals the replay's.
pub fn replay_verify(
    conf: &Path,
    influx: &str,
    database: &str,
    rig: &RigId,
    out_dir: &Path,
) -> Result<ReplayVerified> {
    let first = stored_time(influx, database, "dtop_twin_birth", rig, "ASC")?;
    let last = stored_time(influx, database, "dtop_twin_feed", rig, "DESC")?;
    let out = out_dir.join(format!("{rig}.replay.jsonl"));
    let output = std::process::Command::new(bin("dtop-twin")?)
        .args(["replay", "--config"])
        .arg(conf)
        .args(["--rig", rig.as_str(), "--verify", "--out"])
        .arg(&out)
        .args([
            "--from",
            &first.to_string(),
            "--to",
            &(last + 1_000_000_000).to_string(),
        ])
        .output()?;
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "{rig}: replay exited {code}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let v = &report["verification"];
    let estimates = v["estimates_compared"].as_u64().unwrap_or(0);
    ensure!(
        code == 0
            && estimates > 0
            && v["estimates_identical"].as_u64() == Some(estimates)
            && v["mismatches"].as_u64() == Some(0),
        "{rig}: replay exited {code}: {report:#}"
    );
    Ok(ReplayVerified {
        runs: report["runs"].as_array().map_or(0, Vec::len),
        estimates,
        report,
    })
}

/// The time (ns) of `rig`'s oldest (`ASC`) or newest (`DESC`) point of `measurement`.
fn stored_time(
    influx: &str,
    database: &str,
    measurement: &str,
    rig: &RigId,
    order: &str,
) -> Result<i64> {
    let json = crate::query::influx_query(
        influx,
        database,
        &format!("SELECT * FROM {measurement} WHERE rig = '{rig}' ORDER BY time {order} LIMIT 1"),
    )?;
    json.pointer("/results/0/series/0/values/0/0")
        .and_then(Value::as_i64)
        .with_context(|| format!("no {measurement} point of {rig}: {json}"))
}
