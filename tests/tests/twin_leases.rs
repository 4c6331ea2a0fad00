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
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dtop_e2e::WithLogs;
use dtop_e2e::audit;
use dtop_e2e::fleet::{self, FleetRig, FleetTwin, LeaseTimings, RigSpec, TwinSpec};
use dtop_e2e::query::influx_create_db;
use dtop_e2e::{Proc, Services, free_port, wait_for};
use dtop_lease::{PgLeaseStore, TwinId, owner_of};
use dtop_proto::RigId;

#[path = "../../engine/tests/support/postgres.rs"]
mod postgres;

/// Samples each simulator sends: 20 s at 1 kHz, a whole number of blocks (no partial block
/// waits for the edge's shutdown).
const SAMPLES: u64 = 20_000;
const BLOCK_SAMPLES: u32 = 100;
/// Short leases, so the takeover fits the test: `ttl_ms` > 2 × interval + margin.
const LEASE: LeaseTimings = LeaseTimings {
    ttl_ms: 2_000,
    renew_interval_ms: 400,
    safety_margin_ms: 500,
};
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

/// Every process's log tail, for failure messages.
fn logs(twins: &[FleetTwin], rigs: &[FleetRig], broker: &Proc) -> String {
    fleet::logs(
        fleet::fleet_procs(twins, rigs).chain([("broker".to_owned(), broker)]),
        30,
    )
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

    let brokers = [std::net::SocketAddr::from(([127, 0, 0, 1], mqtt_port))];
    let mut twins = TWINS
        .iter()
        .map(|id| {
            FleetTwin::spawn(
                dir.path(),
                &TwinSpec {
                    id,
                    brokers: &brokers,
                    influx: &influx,
                    database: &db,
                    database_url: &database_url,
                    lease: LEASE,
                    extra_toml: "[model]\ncheckpoint_interval_s = 1.0\n",
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let twin_ids: Vec<TwinId> = twins.iter().map(|t| t.id.clone()).collect();
    let rig_ids = rigs_split_two_to_one(&twin_ids)?;
    let mut rigs = rig_ids
        .iter()
        .zip(1..)
        .map(|(id, seed)| {
            FleetRig::spawn(
                dir.path(),
                &RigSpec {
                    id,
                    seed,
                    brokers: &brokers,
                    samples: SAMPLES,
                    block_samples: BLOCK_SAMPLES,
                    edge_toml: "",
                    stall_s: 10.0,
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;

    // Each rig owned by exactly one twin, the one the assignment names: the lease is live
    // under it, its metrics say owned and the other's do not, and the edge has its epoch.
    let settled = wait_for(
        "each rig to be owned by exactly one twin",
        Duration::from_secs(30),
        || {
            let leases = fleet::leases(&rt, &store)?;
            let owned: Vec<_> = twins
                .iter()
                .map(|t| t.views().map(|o| (t.id.clone(), o)))
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
                    .filter(|(_, o)| o.get(rig.id.as_str()).is_some_and(|v| v.owned))
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
    .or_logs(|| logs(&twins, &rigs, &broker))?;
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
    let bound = LEASE.takeover_bound() + TAKEOVER_SLACK;
    let taken = wait_for("the survivor to own the killed twin's rigs", bound, || {
        let leases = fleet::leases(&rt, &store)?;
        let all = moved.iter().all(|rig| {
            leases.get(rig).is_some_and(|l| {
                l.live && l.owner.as_ref() == Some(&survivor_id) && l.epoch > settled[rig].epoch
            })
        });
        Ok(all.then_some(leases))
    })
    .or_logs(|| logs(&twins, &rigs, &broker))?;
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
            let o = twins[survivor].views()?;
            Ok(rigs
                .iter()
                .all(|r| o.get(r.id.as_str()).is_some_and(|v| v.owned))
                .then_some(o))
        },
    )?;
    for rig in &moved {
        let dropped = survivor_view[rig.as_str()].blocks_not_owned;
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
        .or_logs(|| logs(&twins, &[], &broker))?;
    }
    // The edges batch what they have read before their counters are final.
    std::thread::sleep(Duration::from_secs(1));

    // Every seq each edge numbered is in InfluxDB, each block's samples once.
    for rig in &rigs {
        let next_seq = audit::edge_metrics(rig.metrics_port)?
            .get("dtop_edge_next_seq")
            .copied()
            .context("the edge exports no dtop_edge_next_seq")? as u64;
        let stored = fleet::wait_stored(
            &influx,
            &db,
            &rig.id,
            next_seq,
            SAMPLES,
            Duration::from_secs(30),
        )
        .or_logs(|| logs(&twins, &rigs, &broker))?;
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
    let takeovers = twins[survivor].takeovers()?;
    for rig in &moved {
        let continued = (rig.to_string(), "continued".to_owned());
        ensure!(
            takeovers.get(&continued) == Some(&1),
            "{survivor_id} did not continue {rig}'s run: {takeovers:?}\n{}",
            logs(&twins, &[], &broker)
        );
    }
    // ...so every rig's whole stored range replays as one run, every estimate identical.
    for rig in &rigs {
        let r = fleet::replay_verify(&twins[survivor].conf, &influx, &db, &rig.id, dir.path())?;
        ensure!(
            r.runs == 1,
            "{}: {} runs replayed, one expected: {:#}",
            rig.id,
            r.runs,
            r.report
        );
        eprintln!(
            "{}: one run, {} estimates replayed identical",
            rig.id, r.estimates
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
