//! Benchmark: how long a killed twin's rigs wait for a new owner (issue 16; BENCHMARKS.md,
//! "Twin takeover"), against the one-twin alternative, systemd restarting the dead twin.
//!
//! Run: `cargo build --release --workspace --bins`, then
//! `target/release/takeover_bench --pg URL [--rigs 6] [--rounds 5] [--ttl-ms 5000]
//! [--renew-ms 1000] [--margin-ms 1000] [--restart-sec 2]`. URL is a PostgreSQL database the
//! bench may create the lease tables in (BENCHMARKS.md says how to start a private one); each
//! run names its twins and rigs apart, so earlier runs' rows do not matter.
//!
//! On loopback it starts dtop-broker, a private InfluxDB 1.x, `--rigs` rigs (rig-sim + edge,
//! 1 kHz in real time) and two twins with `[coordinator]` at the given lease timings. Each
//! round SIGKILLs (by PID) the twin owning the most rigs and times, for each of its rigs, from
//! the kill to:
//! - `lease`: the lease table shows the survivor owning it at a higher epoch;
//! - `edge`: the edge fences at that epoch (it has seen the new owner's first message);
//! - `stored`: the edge's persisted watermark passes its value at the kill (the new owner has
//!   stored the rig's blocks and said so: data flows end to end again).
//!
//! The dead twin is then started again and takes back the rigs it wins (a rebalance, timed
//! the same way from its start), ready for the next round.
//!
//! The peer, in the same run: one twin without a coordinator owning every rig, SIGKILLed and
//! started again after `--restart-sec` (dtop-twin.service's `RestartSec`), timed to `stored`.
//! Bounded: each wait is at most 60 s; every process is stopped by PID.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dtop_e2e::WithLogs;
use dtop_e2e::fleet::{self, FleetRig, FleetTwin, LeaseTimings, RigSpec, TwinSpec};
use dtop_e2e::pipeline::spawn_broker;
use dtop_e2e::query::influx_create_db;
use dtop_e2e::{Proc, Services, bin, free_port, wait_for};
use dtop_lease::{LeaseRow, PgLeaseStore, TwinId};
use dtop_proto::RigId;

const BLOCK_SAMPLES: u32 = 100;
/// Each wait of a round.
const WAIT: Duration = Duration::from_secs(60);

struct Args {
    pg: String,
    rigs: usize,
    rounds: usize,
    lease: LeaseTimings,
    restart_sec: f64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        pg: String::new(),
        rigs: 6,
        rounds: 5,
        lease: LeaseTimings {
            ttl_ms: dtop_lease::config::default_ttl_ms(),
            renew_interval_ms: dtop_lease::config::default_renew_interval_ms(),
            safety_margin_ms: dtop_lease::config::default_safety_margin_ms(),
        },
        restart_sec: 2.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pg" => a.pg = value()?,
            "--rigs" => a.rigs = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--ttl-ms" => a.lease.ttl_ms = value()?.parse()?,
            "--renew-ms" => a.lease.renew_interval_ms = value()?.parse()?,
            "--margin-ms" => a.lease.safety_margin_ms = value()?.parse()?,
            "--restart-sec" => a.restart_sec = value()?.parse()?,
            other => bail!(
                "unknown flag {other} (--pg URL --rigs N --rounds N --ttl-ms MS --renew-ms MS \
                 --margin-ms MS --restart-sec S)"
            ),
        }
    }
    let mut problems = Vec::new();
    if a.pg.is_empty() {
        problems.push("--pg URL is required".to_owned());
    }
    if a.rigs < 2 {
        problems.push("--rigs must be at least 2".to_owned());
    }
    if a.rounds == 0 {
        problems.push("--rounds must be at least 1".to_owned());
    }
    if !(0.0..=60.0).contains(&a.restart_sec) {
        problems.push("--restart-sec must be within 0..=60".to_owned());
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(a)
}

/// Seconds of rig time each simulator streams: enough for every round, bounded.
fn samples_for(a: &Args) -> u64 {
    let per_round_s = 2.0 * (a.lease.ttl_ms as f64 / 1e3 + 10.0) + a.restart_sec + 15.0;
    ((30.0 + per_round_s * (a.rounds as f64 + 1.0)) * 1e3) as u64
}

/// The moments one rig passed each stage, from the kill (or the start).
#[derive(Debug, Default, Clone, Copy)]
struct Stages {
    lease: Option<Duration>,
    edge: Option<Duration>,
    stored: Option<Duration>,
}

/// Polls until each of `rigs` has a live lease under a member of `to` at an epoch above its
/// `before` lease, the edge fences at it, and the edge's watermark passed `watermark_at`.
#[allow(clippy::too_many_arguments)]
fn time_takeover(
    rt: &tokio::runtime::Runtime,
    store: &PgLeaseStore,
    all_rigs: &[FleetRig],
    rigs: &[usize],
    to: &TwinId,
    before: &BTreeMap<RigId, LeaseRow>,
    watermark_at: &BTreeMap<usize, f64>,
    since: Instant,
) -> Result<Vec<Stages>> {
    let mut stages = vec![Stages::default(); rigs.len()];
    wait_for("the rigs re-owned and stored", WAIT, || {
        let leases = fleet::leases(rt, store)?;
        for (slot, &k) in rigs.iter().enumerate() {
            let rig = &all_rigs[k];
            let s = &mut stages[slot];
            let now = since.elapsed();
            let lease = leases.get(&rig.id);
            if s.lease.is_none()
                && lease.is_some_and(|l| {
                    l.live
                        && l.owner.as_ref() == Some(to)
                        && before.get(&rig.id).is_none_or(|b| l.epoch > b.epoch)
                })
            {
                s.lease = Some(now);
            }
            let m = rig.metrics()?;
            if s.edge.is_none()
                && let Some(l) = lease.filter(|_| s.lease.is_some())
                && m.get("dtop_edge_owner_epoch") == Some(&(l.epoch.get() as f64))
            {
                s.edge = Some(now);
            }
            if s.stored.is_none()
                && s.edge.is_some()
                && m.get("dtop_edge_persisted_seq").copied().unwrap_or(-1.0)
                    > watermark_at.get(&k).copied().unwrap_or(-1.0)
            {
                s.stored = Some(now);
            }
        }
        Ok(stages.iter().all(|s| s.stored.is_some()).then_some(()))
    })?;
    Ok(stages)
}

fn watermarks(rigs: &[FleetRig]) -> Result<BTreeMap<usize, f64>> {
    rigs.iter()
        .enumerate()
        .map(|(k, r)| {
            Ok((
                k,
                r.metrics()?
                    .get("dtop_edge_persisted_seq")
                    .copied()
                    .unwrap_or(-1.0),
            ))
        })
        .collect()
}

/// min / median / max of `xs`, in seconds.
fn spread(xs: &mut [f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    xs.sort_by(f64::total_cmp);
    format!(
        "{:.2} / {:.2} / {:.2} s (n = {})",
        xs[0],
        xs[xs.len() / 2],
        xs[xs.len() - 1],
        xs.len()
    )
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = rt
        .block_on(PgLeaseStore::connect(&a.pg))
        .context("connecting to --pg")?;
    let mut services = Services::new()?;
    let influx = services.influx_v1()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let db = format!("takeover_bench_{stamp}");
    influx_create_db(&influx, &db)?;
    let dir = tempfile::tempdir()?;
    let mqtt_port = free_port()?;
    std::fs::write(
        dir.path().join("broker.toml"),
        format!("[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n"),
    )?;
    let _broker = spawn_broker(dir.path(), "broker", mqtt_port)?;
    let brokers = [std::net::SocketAddr::from(([127, 0, 0, 1], mqtt_port))];
    let samples = samples_for(&a);
    println!(
        "takeover_bench: {} rigs, {} rounds, lease ttl {} ms, renew {} ms, margin {} ms; \
         peer restart after {} s; {} s of rig time",
        a.rigs,
        a.rounds,
        a.lease.ttl_ms,
        a.lease.renew_interval_ms,
        a.lease.safety_margin_ms,
        a.restart_sec,
        samples / 1000
    );

    // The peer first: one twin, no coordinator, killed and restarted.
    let peer = peer_run(&a, dir.path(), &influx, &db, &brokers, stamp)?;

    let twin_ids = [format!("tk{stamp}-a"), format!("tk{stamp}-b")];
    let spawn_twin = |id: &str| -> Result<FleetTwin> {
        FleetTwin::spawn(
            dir.path(),
            &TwinSpec {
                id,
                brokers: &brokers,
                influx: &influx,
                database: &db,
                database_url: &a.pg,
                lease: a.lease,
                extra_toml: "",
            },
        )
    };
    let mut twins = twin_ids
        .iter()
        .map(|id| spawn_twin(id))
        .collect::<Result<Vec<_>>>()?;
    let rigs = spawn_rigs(&a, dir.path(), &brokers, &format!("tk{stamp}"), samples)?;
    let settle = |twins: &[FleetTwin]| -> Result<BTreeMap<RigId, LeaseRow>> {
        let ids: Vec<TwinId> = twins.iter().map(|t| t.id.clone()).collect();
        wait_for("each rig owned as assigned", WAIT, || {
            let leases = fleet::leases(&rt, &store)?;
            let ok = rigs.iter().all(|r| {
                leases.get(&r.id).is_some_and(|l| {
                    l.live && l.owner.as_ref() == dtop_lease::owner_of(&r.id, &ids)
                })
            });
            Ok(ok.then_some(leases))
        })
        .or_logs(|| fleet::logs(fleet::fleet_procs(twins, &rigs), 20))
    };
    let mut leases = settle(&twins)?;
    let (mut lease_s, mut edge_s, mut stored_s, mut back_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        // The twin owning the most rigs dies.
        let victim = (0..twins.len())
            .max_by_key(|&i| {
                leases
                    .values()
                    .filter(|l| l.owner.as_ref() == Some(&twins[i].id))
                    .count()
            })
            .context("no twin")?;
        let survivor = twins[1 - victim].id.clone();
        let moved: Vec<usize> = (0..rigs.len())
            .filter(|&k| leases[&rigs[k].id].owner.as_ref() == Some(&twins[victim].id))
            .collect();
        let at_kill = watermarks(&rigs)?;
        let killed = Instant::now();
        twins[victim].proc.kill()?;
        let stages = time_takeover(
            &rt, &store, &rigs, &moved, &survivor, &leases, &at_kill, killed,
        )
        .or_logs(|| fleet::logs(fleet::fleet_procs(&twins, &rigs), 20))?;
        for s in &stages {
            lease_s.extend(s.lease.map(|d| d.as_secs_f64()));
            edge_s.extend(s.edge.map(|d| d.as_secs_f64()));
            stored_s.extend(s.stored.map(|d| d.as_secs_f64()));
        }
        println!(
            "round {round}: killed {}, its {} rigs: {stages:?}; their edges' persisted seqs at the kill: {:?} (-1: none yet)",
            twins[victim].id,
            moved.len(),
            moved.iter().map(|k| at_kill[k]).collect::<Vec<_>>()
        );
        // Back: the dead twin starts again and takes back what it wins.
        let after = fleet::leases(&rt, &store)?;
        let restarted = Instant::now();
        twins[victim] = spawn_twin(twin_ids[victim].as_str())?;
        leases = settle(&twins)?;
        let taken_back = rigs
            .iter()
            .filter(|r| after[&r.id].owner != leases[&r.id].owner)
            .count();
        back_s.push(restarted.elapsed().as_secs_f64());
        println!(
            "round {round}: {} started again, took back {taken_back} rigs in {:.2} s",
            twins[victim].id,
            restarted.elapsed().as_secs_f64()
        );
    }
    println!("\nkill → lease re-owned:          {}", spread(&mut lease_s));
    println!("kill → edge at the new epoch:   {}", spread(&mut edge_s));
    println!("kill → stored again (watermark): {}", spread(&mut stored_s));
    println!("restart → rebalanced back:      {}", spread(&mut back_s));
    let mut peer = peer;
    println!(
        "peer, one twin restarted after {} s: kill → stored again: {}",
        a.restart_sec,
        spread(&mut peer)
    );
    Ok(())
}

fn spawn_rigs(
    a: &Args,
    dir: &Path,
    brokers: &[std::net::SocketAddr],
    prefix: &str,
    samples: u64,
) -> Result<Vec<FleetRig>> {
    (0..a.rigs)
        .map(|k| {
            let id = RigId::new(format!("{prefix}-{k}"))?;
            FleetRig::spawn(
                dir,
                &RigSpec {
                    id: &id,
                    seed: 1 + k as u64,
                    brokers,
                    samples,
                    block_samples: BLOCK_SAMPLES,
                    edge_toml: "",
                    stall_s: 10.0,
                },
            )
        })
        .collect()
}

/// One twin without a coordinator: each round SIGKILLed, started again after `restart_sec`;
/// returns each rig's kill → watermark past its value at the kill, over all rounds.
fn peer_run(
    a: &Args,
    dir: &Path,
    influx: &str,
    db: &str,
    brokers: &[std::net::SocketAddr],
    stamp: u64,
) -> Result<Vec<f64>> {
    let dir = dir.join("peer");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("twin.toml");
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nbrokers = [\"{}\"]\nclient_id = \"dtop-peer-{stamp}\"\n\n\
             [storage.influx_v1]\nurl = \"{influx}\"\ndatabase = \"{db}\"\nprecision = \"us\"\n",
            brokers[0]
        ),
    )?;
    let spawn = |n: usize| -> Result<Proc> {
        let mut p = Proc::spawn(
            &format!("peer-twin-{n}"),
            &bin("dtop-twin")?,
            &["--config", &conf.to_string_lossy()],
            &dir,
        )?;
        wait_for("the peer twin to subscribe", WAIT, || {
            p.ensure_running()?;
            Ok(p.log().contains("Subscribed to rig topics.").then_some(()))
        })?;
        Ok(p)
    };
    let mut twin = spawn(0)?;
    let per_round_s = a.restart_sec + 20.0;
    let samples = ((20.0 + per_round_s * a.rounds as f64) * 1e3) as u64;
    let rigs = spawn_rigs(a, &dir, brokers, &format!("tkpeer{stamp}"), samples)?;
    // Data flowing: every watermark moving.
    let start = watermarks(&rigs)?;
    wait_for("the peer's rigs stored", WAIT, || {
        let now = watermarks(&rigs)?;
        Ok(now.iter().all(|(k, w)| *w > start[k] + 10.0).then_some(()))
    })?;
    let mut out = Vec::new();
    for round in 1..=a.rounds {
        let at_kill = watermarks(&rigs)?;
        let killed = Instant::now();
        twin.kill()?;
        std::thread::sleep(Duration::from_secs_f64(a.restart_sec));
        twin = spawn(round)?;
        let mut done: BTreeMap<usize, f64> = BTreeMap::new();
        wait_for("the peer's rigs stored again", WAIT, || {
            for (k, w) in watermarks(&rigs)? {
                if w > at_kill[&k] {
                    done.entry(k)
                        .or_insert_with(|| killed.elapsed().as_secs_f64());
                }
            }
            Ok((done.len() == rigs.len()).then_some(()))
        })?;
        println!("peer round {round}: {done:?}");
        out.extend(done.values());
        std::thread::sleep(Duration::from_secs(3));
    }
    Ok(out)
}
