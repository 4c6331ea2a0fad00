//! Two `dtop-twin`s share three rigs through rig leases on PostgreSQL (issue 16 item 2): one
//! dtop-broker, InfluxDB, a fresh PostgreSQL database, three rigs (rig-sim + edge each, 1 kHz
//! in real time) and two twins with `[coordinator]` and short lease timings. Each rig is owned
//! by exactly one twin (the lease table, both twins' metrics and the edges agree); the twin
//! owning two of them is SIGKILLed; the survivor owns them again within the TTL plus two renew
//! intervals, each at a higher epoch, and the edges follow. Once the simulators stop, every
//! block seq of every rig is in InfluxDB once and every sample once, with nothing lost; and
//! the survivor continued each moved rig's estimator run (restored at the persisted watermark,
//! the edge's replay folded in): `dtop-twin replay --verify` over each rig's whole stored range
//! replays one run and finds every stored estimate identical, as for a twin that never failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dtop_e2e::audit;
use dtop_e2e::http::blocking_client;
use dtop_e2e::query::influx_create_db;
use dtop_e2e::{Proc, Services, bin, free_port, wait_for};
use dtop_lease::{LeaseRow, PgLeaseStore, TwinId, owner_of};
use dtop_proto::RigId;

#[path = "../../engine/tests/support/postgres.rs"]
mod postgres;

/// Samples each simulator sends: 20 s at 1 kHz, a whole number of blocks (no partial block
/// waits for the edge's shutdown).
const SAMPLES: u64 = 20_000;
const BLOCK_SAMPLES: u32 = 100;
/// Short leases, so the takeover fits the test: `ttl_ms` > 2 × interval + margin.
const TTL_MS: u64 = 2_000;
const RENEW_INTERVAL_MS: u64 = 400;
const SAFETY_MARGIN_MS: u64 = 500;
/// On top of TTL + 2 intervals: the survivor's tick running late on a loaded 2-core machine
/// (three simulators, three edges, a broker, a twin, InfluxDB and PostgreSQL).
const TAKEOVER_SLACK: Duration = Duration::from_millis(2_000);
const TWINS: [&str; 2] = ["twin-a", "twin-b"];

/// Three rig ids the rendezvous assignment splits two to one between the twins, so killing the
/// twin owning most of them moves two rigs and leaves the survivor's own rig where it is.
fn rigs_split_two_to_one(twins: &[TwinId]) -> Result<Vec<RigId>> {
    let mut by_twin: BTreeMap<&TwinId, Vec<RigId>> = BTreeMap::new();
    for i in 0..256 {
        let rig = RigId::new(format!("share-{i}"))?;
        let owner = owner_of(&rig, twins).context("no twin")?;
        by_twin.entry(owner).or_default().push(rig);
        let mut sizes: Vec<&Vec<RigId>> = by_twin.values().collect();
        sizes.sort_by_key(|v| std::cmp::Reverse(v.len()));
        if let [most, other] = sizes[..]
            && most.len() >= 2
            && !other.is_empty()
        {
            return Ok(vec![most[0].clone(), most[1].clone(), other[0].clone()]);
        }
    }
    anyhow::bail!("no two-to-one split among 256 rig ids")
}

/// One rig: its simulator and edge.
struct Rig {
    id: RigId,
    sim: Proc,
    edge: Proc,
    metrics_port: u16,
}

/// One twin process and its metrics port.
struct Twin {
    id: TwinId,
    proc: Proc,
    metrics_port: u16,
    conf: PathBuf,
}

impl Twin {
    /// `rig` → (owned, blocks dropped as not owned), from the twin's `/metrics`.
    fn ownership(&self) -> Result<BTreeMap<String, (bool, u64)>> {
        let text = blocking_client()?
            .get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()?
            .text()
            .to_owned();
        let mut out: BTreeMap<String, (bool, u64)> = BTreeMap::new();
        for (name, rig, value) in text.lines().filter_map(rig_sample) {
            let entry = out.entry(rig).or_default();
            match name {
                "dtop_twin_rig_owned" => entry.0 = value == 1.0,
                "dtop_twin_rig_blocks_not_owned_total" => entry.1 = value as u64,
                _ => {}
            }
        }
        Ok(out)
    }
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

fn spawn_twin(
    dir: &Path,
    id: &str,
    mqtt_port: u16,
    influx: &str,
    db: &str,
    database_url: &str,
) -> Result<Twin> {
    let metrics_port = free_port()?;
    let conf = dir.join(format!("{id}.toml"));
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nclient_id = \"dtop-{id}\"\n\n\
             [storage.influx_v1]\nurl = \"{influx}\"\ndatabase = \"{db}\"\nprecision = \"us\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
             [model]\ncheckpoint_interval_s = 1.0\n\n\
             [coordinator]\ntwin_id = \"{id}\"\ndatabase_url = \"{database_url}\"\n\n\
             [coordinator.lease]\nttl_ms = {TTL_MS}\nrenew_interval_ms = {RENEW_INTERVAL_MS}\n\
             safety_margin_ms = {SAFETY_MARGIN_MS}\n"
        ),
    )?;
    let mut proc = Proc::spawn(id, &bin("dtop-twin")?, &["--config", &path_str(&conf)], dir)?;
    wait_for(
        &format!("{id} to subscribe and reach the lease database"),
        Duration::from_secs(20),
        || {
            proc.ensure_running()?;
            let log = proc.log();
            Ok((log.contains("Subscribed to rig topics.")
                && log.contains("Connected to the lease database."))
            .then_some(()))
        },
    )?;
    Ok(Twin {
        id: TwinId::new(id)?,
        proc,
        metrics_port,
        conf,
    })
}

fn spawn_rig(dir: &Path, id: &RigId, seed: u64, mqtt_port: u16) -> Result<Rig> {
    let dir = dir.join(id.as_str());
    std::fs::create_dir_all(&dir)?;
    let pty = dir.join("rig.pty");
    let (seed, max) = (seed.to_string(), SAMPLES.to_string());
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
             [acquisition]\nblock_samples = {BLOCK_SAMPLES}\n\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nreconnect_backoff_max_ms = 1000\n\n\
             [actuator]\nmax_force_n = 20.0\nmax_slew_n_per_s = 2000.0\n\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[spool]\nreplay_blocks_per_s = 400\n",
            state = dir.join("edge-state").display(),
            pty = pty.display(),
        ),
    )?;
    let edge = Proc::spawn(
        "edge",
        &bin("dtop-edge")?,
        &["--config", &path_str(&conf)],
        &dir,
    )?;
    Ok(Rig {
        id: id.clone(),
        sim,
        edge,
        metrics_port,
    })
}

/// The leases by rig, read from `dtop_rig_leases`.
fn leases(rt: &tokio::runtime::Runtime, store: &PgLeaseStore) -> Result<BTreeMap<RigId, LeaseRow>> {
    Ok(rt
        .block_on(store.leases())?
        .into_iter()
        .map(|row| (row.rig.clone(), row))
        .collect())
}

/// Every process's log tail, for failure messages.
fn logs(twins: &[Twin], rigs: &[Rig], broker: &Proc) -> String {
    let mut out = String::new();
    let procs = twins
        .iter()
        .map(|t| (t.id.to_string(), &t.proc))
        .chain(rigs.iter().flat_map(|r| {
            [
                (format!("{} rig-sim", r.id), &r.sim),
                (format!("{} edge", r.id), &r.edge),
            ]
        }))
        .chain([("broker".to_owned(), broker)]);
    for (name, p) in procs {
        let log = p.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        out.push_str(&format!("----- {name} (last 30 lines)\n"));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn a_killed_twins_rigs_are_taken_over_and_every_sample_is_stored_once() -> Result<()> {
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut services = Services::new()?;
    let influx = services.influx_v1()?;
    let db = format!("twin_leases_{}_{}", std::process::id(), pipeline_stamp());
    influx_create_db(&influx, &db)?;
    let pg = postgres::Postgres::get();
    let database_url = rt.block_on(pg.fresh_database());
    let store = rt
        .block_on(PgLeaseStore::connect(&database_url))
        .context("connecting to the test's lease database")?;

    let dir = tempfile::tempdir()?;
    let mqtt_port = free_port()?;
    let broker_conf = dir.path().join("broker.toml");
    std::fs::write(
        &broker_conf,
        format!("[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n"),
    )?;
    let broker = dtop_e2e::pipeline::spawn_broker(dir.path(), "broker", mqtt_port)?;

    let mut twins = TWINS
        .iter()
        .map(|id| spawn_twin(dir.path(), id, mqtt_port, &influx, &db, &database_url))
        .collect::<Result<Vec<_>>>()?;
    let twin_ids: Vec<TwinId> = twins.iter().map(|t| t.id.clone()).collect();
    let rig_ids = rigs_split_two_to_one(&twin_ids)?;
    let mut rigs = rig_ids
        .iter()
        .zip(1..)
        .map(|(id, seed)| spawn_rig(dir.path(), id, seed, mqtt_port))
        .collect::<Result<Vec<_>>>()?;

    // Each rig owned by exactly one twin, the one the assignment names: the lease is live
    // under it, its metrics say owned and the other's do not, and the edge has its epoch.
    let settled = wait_for(
        "each rig to be owned by exactly one twin",
        Duration::from_secs(30),
        || {
            let leases = leases(&rt, &store)?;
            let owned: Vec<_> = twins
                .iter()
                .map(|t| t.ownership().map(|o| (t.id.clone(), o)))
                .collect::<Result<_>>()?;
            for rig in &rigs {
                let Some(lease) = leases.get(&rig.id).filter(|l| l.live) else {
                    return Ok(None);
                };
                if lease.owner.as_ref() != owner_of(&rig.id, &twin_ids) {
                    return Ok(None);
                }
                let owners: Vec<&TwinId> = owned
                    .iter()
                    .filter(|(_, o)| o.get(rig.id.as_str()).is_some_and(|(owned, _)| *owned))
                    .map(|(id, _)| id)
                    .collect();
                if owners != [lease.owner.as_ref().context("owner")?] {
                    return Ok(None);
                }
                let edge = audit::edge_metrics(rig.metrics_port)?;
                if edge.get("dtop_edge_owner_epoch") != Some(&(lease.epoch.get() as f64)) {
                    return Ok(None);
                }
            }
            Ok(Some(leases))
        },
    )
    .with_context(|| logs(&twins, &rigs, &broker))?;
    let owned_by = |twin: &TwinId| -> Vec<RigId> {
        settled
            .values()
            .filter(|l| l.owner.as_ref() == Some(twin))
            .map(|l| l.rig.clone())
            .collect()
    };
    let victim = twins
        .iter()
        .position(|t| owned_by(&t.id).len() == 2)
        .context("no twin owns two rigs")?;
    let survivor = 1 - victim;
    let (victim_id, survivor_id) = (twins[victim].id.clone(), twins[survivor].id.clone());
    let moved = owned_by(&victim_id);
    eprintln!(
        "settled after {:.1} s: {victim_id} owns {moved:?}, {survivor_id} owns {:?}",
        started.elapsed().as_secs_f64(),
        owned_by(&survivor_id)
    );

    // Both twins store their rigs for a while, then the one owning two is SIGKILLed: its
    // leases are neither renewed nor released.
    std::thread::sleep(Duration::from_secs(2));
    twins[victim].proc.kill()?;
    let killed_at = Instant::now();
    let bound = Duration::from_millis(TTL_MS + 2 * RENEW_INTERVAL_MS) + TAKEOVER_SLACK;
    let taken = wait_for("the survivor to own the killed twin's rigs", bound, || {
        let leases = leases(&rt, &store)?;
        let all = moved.iter().all(|rig| {
            leases.get(rig).is_some_and(|l| {
                l.live && l.owner.as_ref() == Some(&survivor_id) && l.epoch > settled[rig].epoch
            })
        });
        Ok(all.then_some(leases))
    })
    .with_context(|| logs(&twins, &rigs, &broker))?;
    let takeover = killed_at.elapsed();
    eprintln!(
        "taken over {:.2} s after the kill (bound {:.1} s): {:?}",
        takeover.as_secs_f64(),
        bound.as_secs_f64(),
        moved
            .iter()
            .map(|r| (r.as_str(), settled[r].epoch.get(), taken[r].epoch.get()))
            .collect::<Vec<_>>()
    );
    // The survivor's own rig did not move.
    for (rig, lease) in &settled {
        if !moved.contains(rig) {
            ensure!(
                taken[rig].epoch == lease.epoch && taken[rig].owner.as_ref() == Some(&survivor_id),
                "{rig}: {:?} became {:?}",
                lease,
                taken[rig]
            );
        }
    }
    // The survivor now owns all three, and had left the moved rigs' blocks to their owner.
    let survivor_view = wait_for(
        "the survivor's metrics to own every rig",
        Duration::from_secs(5),
        || {
            let o = twins[survivor].ownership()?;
            Ok(rigs
                .iter()
                .all(|r| o.get(r.id.as_str()).is_some_and(|(owned, _)| *owned))
                .then_some(o))
        },
    )?;
    for rig in &moved {
        let dropped = survivor_view[rig.as_str()].1;
        ensure!(
            dropped > 0,
            "{survivor_id} dropped no block of {rig} before owning it"
        );
    }

    // The rigs run on; the simulators stop at SAMPLES.
    for rig in &mut rigs {
        wait_for(
            &format!("{} to send its last sample", rig.id),
            Duration::from_secs(60),
            || {
                twins[survivor].proc.ensure_running()?;
                rig.edge.ensure_running()?;
                Ok(rig.sim.log().contains("Reached max_samples").then_some(()))
            },
        )
        .with_context(|| logs(&twins, &[], &broker))?;
    }
    // The edges batch what they have read before their counters are final.
    std::thread::sleep(Duration::from_secs(1));

    // Every seq each edge numbered is in InfluxDB, each block's samples once.
    for rig in &rigs {
        let next_seq = audit::edge_metrics(rig.metrics_port)?
            .get("dtop_edge_next_seq")
            .copied()
            .context("the edge exports no dtop_edge_next_seq")? as u64;
        let mut last = String::new();
        let stored = wait_for(
            &format!("InfluxDB to hold every block of {}", rig.id),
            Duration::from_secs(30),
            || {
                let stored = audit::stored(&influx, &db, rig.id.as_str())?;
                let holes = audit::holes(next_seq.saturating_sub(1), &stored.blocks);
                last = format!(
                    "next_seq {next_seq}, {} blocks stored, holes {:?}, {} sample points",
                    stored.blocks.len(),
                    &holes[..holes.len().min(8)],
                    stored.sample_points
                );
                Ok((holes.is_empty() && stored.sample_points >= SAMPLES).then_some(stored))
            },
        )
        .with_context(|| format!("{last}\n{}", logs(&twins, &rigs, &broker)))?;
        ensure!(
            stored.blocks.len() as u64 == next_seq,
            "{}: {} seqs stored, the edge numbered {next_seq}",
            rig.id,
            stored.blocks.len()
        );
        ensure!(
            stored.block_samples() == SAMPLES && stored.sample_points == SAMPLES,
            "{}: the stored blocks hold {} samples and dtop_samples {} points; the simulator sent {SAMPLES}",
            rig.id,
            stored.block_samples(),
            stored.sample_points
        );
        let edge = audit::edge_metrics(rig.metrics_port)?;
        let lost: f64 = edge
            .iter()
            .filter(|(k, _)| k.starts_with("dtop_edge_samples_lost_total"))
            .map(|(_, v)| v)
            .sum();
        ensure!(lost == 0.0, "{}: the edge reports losses: {edge:?}", rig.id);
        // The edge's status carries the owner epoch it fences with: the survivor's.
        ensure!(
            edge.get("dtop_edge_owner_epoch") == Some(&(taken[&rig.id].epoch.get() as f64)),
            "{}: the edge's owner epoch is {:?}, the lease's {}",
            rig.id,
            edge.get("dtop_edge_owner_epoch"),
            taken[&rig.id].epoch
        );
        eprintln!(
            "{}: {next_seq} seqs, {} sample points in InfluxDB, {} blocks replayed by the edge",
            rig.id,
            stored.sample_points,
            edge.get("dtop_edge_blocks_replayed_total")
                .copied()
                .unwrap_or(0.0)
        );
    }
    // The survivor continued each moved rig's run rather than starting a new one...
    let survivor_metrics = audit::edge_metrics(twins[survivor].metrics_port)?;
    for rig in &moved {
        let continued =
            format!("dtop_twin_rig_takeovers_total{{rig=\"{rig}\",reason=\"continued\"}}");
        ensure!(
            survivor_metrics.get(&continued) == Some(&1.0),
            "{survivor_id} did not continue {rig}'s run: {:?}\n{}",
            survivor_metrics
                .iter()
                .filter(|(k, _)| k.contains("takeover"))
                .collect::<Vec<_>>(),
            logs(&twins, &[], &broker)
        );
    }
    // ...so every rig's whole stored range replays as one run, every estimate identical.
    let to_ns = i64::try_from(pipeline_stamp() * 1_000_000)? + 3_600_000_000_000;
    for rig in &rigs {
        let out = dir.path().join(format!("replay-{}.jsonl", rig.id));
        let output = std::process::Command::new(bin("dtop-twin")?)
            .args(["replay", "--config"])
            .arg(&twins[survivor].conf)
            .args(["--rig", rig.id.as_str(), "--verify", "--out"])
            .arg(&out)
            .args(["--from", "0", "--to", &to_ns.to_string()])
            .output()?;
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report: serde_json::Value = serde_json::from_str(&stdout).with_context(|| {
            format!(
                "replay of {} exited {code}: {stdout}\n{}",
                rig.id,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        let v = &report["verification"];
        let compared = v["estimates_compared"].as_u64().unwrap_or(0);
        ensure!(
            code == 0
                && compared > 0
                && v["estimates_identical"].as_u64() == Some(compared)
                && v["mismatches"].as_u64() == Some(0)
                && report["runs"].as_array().map(Vec::len) == Some(1),
            "{}: replay exited {code}: {report:#}",
            rig.id
        );
        eprintln!(
            "{}: one run, {compared} estimates replayed identical from {:?}",
            rig.id, report["start"]
        );
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Wall clock in ms: apart from the PID, what makes this run's InfluxDB database new.
fn pipeline_stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
