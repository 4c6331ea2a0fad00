//! dtop-lease against a real PostgreSQL: the store's statements, and coordinators sharing rigs
//! (two share, one crashes, a third joins, a renewal is refused, the database goes away), checked
//! from their event streams and from the table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../engine/tests/support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::time::Duration;

use dtop_lease::{
    Coordinator, Epoch, LeaseConfig, LeaseEvent, LostReason, PgLeaseStore, Settled, TwinId, assign,
};
use dtop_proto::RigId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Short timings so the crate's tests stay well under 30 s (valid: 1500 > 2 × 300 + 300).
const CONFIG: LeaseConfig = LeaseConfig {
    ttl_ms: 1_500,
    renew_interval_ms: 300,
    safety_margin_ms: 300,
};
/// Scheduling and database latency on a loaded 2-core CI machine, added to timing bounds.
const SLACK: Duration = Duration::from_millis(700);

fn twin(name: &str) -> TwinId {
    TwinId::new(name).unwrap()
}

fn rigs(n: usize) -> Vec<RigId> {
    (0..n)
        .map(|i| RigId::new(format!("rig-{i:02}")).unwrap())
        .collect()
}

/// A fresh database on the test server and a store on it; the `Postgres` keeps a private
/// cluster alive when there is no shared server.
async fn fresh_store() -> (postgres::Postgres, String, PgLeaseStore) {
    let pg = postgres::Postgres::get();
    let url = pg.fresh_database().await;
    let store = PgLeaseStore::connect(&url).await.unwrap();
    (pg, url, store)
}

async fn registered(store: &PgLeaseStore, n: usize) -> Vec<RigId> {
    let rs = rigs(n);
    for rig in &rs {
        store.register_rig(rig).await.unwrap();
    }
    rs
}

/// Starts a coordinator for `name` whose events go to the shared `events_tx`.
fn start(
    store: &PgLeaseStore,
    name: &str,
    events_tx: &mpsc::Sender<LeaseEvent>,
    cancel: &CancellationToken,
) -> JoinHandle<()> {
    let coordinator =
        Coordinator::new(store.clone(), twin(name), CONFIG, events_tx.clone()).unwrap();
    tokio::spawn(coordinator.run(cancel.clone()))
}

/// Every coordinator's events, in the one order they were sent (one shared channel, so a
/// holder's `Lost` precedes the next holder's `Owned` exactly when it was sent first), checked as
/// they arrive: a rig is never believed owned by two tenures at once, and its epochs only grow.
struct Recorder {
    events_rx: mpsc::Receiver<LeaseEvent>,
    /// Tenures believed held now, by rig.
    open: BTreeMap<RigId, Epoch>,
    /// Tenures of a coordinator that was killed: they end when their lease lapses, silently.
    dead: BTreeMap<RigId, Epoch>,
    last_epoch: BTreeMap<RigId, Epoch>,
    /// When each `Owned` arrived, by rig (the last one).
    owned_at: BTreeMap<RigId, Instant>,
    lost: Vec<(RigId, Epoch, LostReason)>,
}

impl Recorder {
    fn new(events_rx: mpsc::Receiver<LeaseEvent>) -> Self {
        Self {
            events_rx,
            open: BTreeMap::new(),
            dead: BTreeMap::new(),
            last_epoch: BTreeMap::new(),
            owned_at: BTreeMap::new(),
            lost: Vec::new(),
        }
    }

    fn apply(&mut self, event: LeaseEvent) {
        match event {
            LeaseEvent::Owned { rig, epoch } => {
                assert!(
                    !self.open.contains_key(&rig),
                    "{rig:?} owned as epoch {epoch} while epoch {} still believes it owns it",
                    self.open[&rig]
                );
                if let Some(last) = self.last_epoch.get(&rig) {
                    assert!(epoch > *last, "{rig:?}: epoch {epoch} after {last}");
                }
                assert!(epoch.get() >= 1);
                self.dead.remove(&rig);
                self.open.insert(rig.clone(), epoch);
                self.last_epoch.insert(rig.clone(), epoch);
                self.owned_at.insert(rig, Instant::now());
            }
            LeaseEvent::Lost { rig, epoch, reason } => {
                assert_eq!(
                    self.open.remove(&rig),
                    Some(epoch),
                    "{rig:?}: Lost epoch {epoch} ({reason:?}) that was not believed owned"
                );
                self.lost.push((rig, epoch, reason));
            }
        }
    }

    /// Takes events until `done` holds (checked against the table as well), or panics after
    /// `within`.
    async fn until<F>(&mut self, store: &PgLeaseStore, within: Duration, what: &str, done: F)
    where
        F: Fn(&Self, &[dtop_lease::LeaseRow]) -> bool,
    {
        let end = Instant::now() + within;
        loop {
            let rows = store.leases().await.unwrap();
            if done(self, &rows) {
                return;
            }
            assert!(
                Instant::now() < end,
                "not {what} within {within:?}: believed {:?}, table {rows:?}",
                self.open
            );
            // Events settle it; the timeout only re-reads the table now and then.
            if let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(50), self.events_rx.recv()).await
            {
                self.apply(event);
            }
        }
    }

    /// Takes every event that arrives within `during` (each checked).
    async fn watch(&mut self, during: Duration) -> usize {
        let end = Instant::now() + during;
        let mut n = 0;
        while let Ok(Some(event)) = tokio::time::timeout_at(end, self.events_rx.recv()).await {
            self.apply(event);
            n += 1;
        }
        n
    }
}

/// Whether every rig is held as `assign(twins)` says, live in the table with the epoch its
/// holder believes.
fn settled_on(
    twins: &[TwinId],
    rigs: &[RigId],
) -> impl Fn(&Recorder, &[dtop_lease::LeaseRow]) -> bool {
    let wanted = assign(twins, rigs);
    move |rec, rows| {
        rec.open.len() == wanted.len()
            && rows.len() == wanted.len()
            && rows.iter().all(|row| {
                row.live
                    && row.owner.as_ref() == wanted.get(&row.rig)
                    && rec.open.get(&row.rig) == Some(&row.epoch)
            })
    }
}

fn owners(rows: &[dtop_lease::LeaseRow]) -> BTreeMap<RigId, (TwinId, Epoch)> {
    rows.iter()
        .map(|r| (r.rig.clone(), (r.owner.clone().unwrap(), r.epoch)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_with_a_stale_epoch_fails_and_every_new_tenure_has_the_next_epoch() {
    let (_pg, _url, store) = fresh_store().await;
    let (a, b) = (twin("a"), twin("b"));
    let rig = RigId::new("rig-1").unwrap();
    let ttl = Duration::from_secs(60);
    assert_eq!(
        store.acquire(&rig, &a, ttl).await.unwrap(),
        None,
        "unregistered"
    );
    store.register_rig(&rig).await.unwrap();
    store.register_rig(&rig).await.unwrap();
    assert_eq!(store.rigs().await.unwrap(), vec![rig.clone()]);

    assert_eq!(
        store.acquire(&rig, &a, ttl).await.unwrap(),
        Some(Epoch::new(1))
    );
    assert_eq!(
        store.acquire(&rig, &b, ttl).await.unwrap(),
        None,
        "held by a"
    );
    assert!(store.renew(&rig, &a, Epoch::new(1), ttl).await.unwrap());
    assert!(!store.renew(&rig, &a, Epoch::new(0), ttl).await.unwrap());
    assert!(!store.renew(&rig, &b, Epoch::new(1), ttl).await.unwrap());

    // A graceful handover keeps the epoch; the next holder's is one more.
    assert!(store.release(&rig, &a, Epoch::new(1)).await.unwrap());
    assert!(!store.release(&rig, &a, Epoch::new(1)).await.unwrap());
    let row = &store.leases().await.unwrap()[0];
    assert_eq!((row.epoch, row.live), (Epoch::new(1), false));
    assert_eq!(
        store.acquire(&rig, &b, ttl).await.unwrap(),
        Some(Epoch::new(2))
    );
    assert!(
        !store.renew(&rig, &a, Epoch::new(1), ttl).await.unwrap(),
        "stale"
    );
    assert_eq!(
        store
            .renew_all(&a, &[(rig.clone(), Epoch::new(1))], ttl)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        store
            .renew_all(&b, &[(rig.clone(), Epoch::new(2))], ttl)
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![rig.clone()]
    );

    // The same twin id starting again (a restart) takes its own live lease under a new epoch,
    // so the old process's renewals fail.
    assert_eq!(
        store.acquire(&rig, &b, ttl).await.unwrap(),
        Some(Epoch::new(3))
    );
    assert!(!store.renew(&rig, &b, Epoch::new(2), ttl).await.unwrap());

    // A lapsed lease (by the database's clock) can be taken, and cannot be renewed.
    assert!(store.release(&rig, &b, Epoch::new(3)).await.unwrap());
    assert_eq!(
        store
            .acquire(&rig, &a, Duration::from_millis(100))
            .await
            .unwrap(),
        Some(Epoch::new(4))
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!store.renew(&rig, &a, Epoch::new(4), ttl).await.unwrap());
    assert_eq!(
        store.acquire(&rig, &b, ttl).await.unwrap(),
        Some(Epoch::new(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_count_while_their_heartbeat_lasts_by_the_database_clock() {
    let (_pg, url, store) = fresh_store().await;
    // A second connect finds the tables and changes nothing.
    PgLeaseStore::connect(&url).await.unwrap();
    let (a, b) = (twin("a"), twin("b"));
    store
        .heartbeat(&a, Duration::from_millis(200))
        .await
        .unwrap();
    store.heartbeat(&b, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        store.live_members().await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.live_members().await.unwrap(), vec![b.clone()]);
    store.heartbeat(&a, Duration::from_secs(60)).await.unwrap();
    store.leave(&b).await.unwrap();
    assert_eq!(store.live_members().await.unwrap(), vec![a]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_share_twelve_rigs_each_owned_once_and_release_them_on_stop() {
    let (_pg, _url, store) = fresh_store().await;
    let rs = registered(&store, 12).await;
    let (events_tx, events_rx) = mpsc::channel(256);
    let mut rec = Recorder::new(events_rx);
    let cancel = CancellationToken::new();
    let a = start(&store, "a", &events_tx, &cancel);
    let b = start(&store, "b", &events_tx, &cancel);
    let both = [twin("a"), twin("b")];
    let wanted = assign(&both, &rs);
    assert!(wanted.values().any(|t| *t == both[0]) && wanted.values().any(|t| *t == both[1]));

    rec.until(
        &store,
        Duration::from_secs(5),
        "shared by a and b",
        settled_on(&both, &rs),
    )
    .await;
    assert!(rec.open.values().all(|e| e.get() >= 1));
    // Stable: several renewals later nothing has moved.
    let moved = rec.watch(CONFIG.renew_interval() * 4).await;
    assert_eq!(moved, 0, "lost: {:?}", rec.lost);
    assert!(settled_on(&both, &rs)(&rec, &store.leases().await.unwrap()));

    // (Earlier losses may be Rebalanced: a coordinator that ticked before the other's first
    // heartbeat took every rig, then handed the other's share over.)
    let lost_before_stop = rec.lost.len();
    cancel.cancel();
    a.await.unwrap();
    b.await.unwrap();
    rec.watch(Duration::from_millis(100)).await;
    assert!(rec.open.is_empty(), "still believed: {:?}", rec.open);
    let on_stop = &rec.lost[lost_before_stop..];
    assert_eq!(on_stop.len(), rs.len());
    assert!(
        on_stop.iter().all(|(_, _, r)| *r == LostReason::Shutdown),
        "{on_stop:?}"
    );
    assert!(store.leases().await.unwrap().iter().all(|r| !r.live));
    assert!(store.live_members().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinators_rigs_go_to_the_survivor_after_their_leases_lapse() {
    let (_pg, _url, store) = fresh_store().await;
    let rs = registered(&store, 12).await;
    let (events_tx, events_rx) = mpsc::channel(256);
    let mut rec = Recorder::new(events_rx);
    let cancel = CancellationToken::new();
    let a = start(&store, "a", &events_tx, &cancel);
    let _b = start(&store, "b", &events_tx, &cancel);
    let both = [twin("a"), twin("b")];
    rec.until(
        &store,
        Duration::from_secs(5),
        "shared by a and b",
        settled_on(&both, &rs),
    )
    .await;

    // Killed without a release (a crash, or a lost host): its leases simply stop being renewed.
    a.abort();
    let killed_at = Instant::now();
    assert!(a.await.unwrap_err().is_cancelled());
    let before = owners(&store.leases().await.unwrap());
    for (rig, (owner, epoch)) in &before {
        if *owner == both[0] {
            rec.open.remove(rig);
            rec.dead.insert(rig.clone(), *epoch);
        }
    }
    let orphans = rec.dead.clone();
    assert!(!orphans.is_empty());

    let bound = CONFIG.ttl() + CONFIG.renew_interval() + SLACK;
    rec.until(&store, bound, "all with b", settled_on(&both[1..], &rs))
        .await;
    for (rig, old) in &orphans {
        assert_eq!(rec.open[rig].get(), old.get() + 1, "{rig:?}");
        let after = rec.owned_at[rig] - killed_at;
        // The last renewal was at most one interval before the kill, so the lease lapsed no
        // sooner than TTL − interval after it: taking it earlier would mean taking a live lease.
        assert!(
            after >= CONFIG.ttl() - CONFIG.renew_interval() - Duration::from_millis(100),
            "{rig:?} taken {after:?} after the kill"
        );
        assert!(after <= bound, "{rig:?} taken {after:?} after the kill");
    }
    // The survivor's own rigs never moved.
    for (rig, (owner, epoch)) in &before {
        if *owner == both[1] {
            assert_eq!(rec.open[rig], *epoch, "{rig:?}");
        }
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_coordinator_takes_its_third_without_two_owners_at_any_instant() {
    let (_pg, _url, store) = fresh_store().await;
    let rs = registered(&store, 12).await;
    let (events_tx, events_rx) = mpsc::channel(256);
    let mut rec = Recorder::new(events_rx);
    let cancel = CancellationToken::new();
    let _a = start(&store, "a", &events_tx, &cancel);
    let _b = start(&store, "b", &events_tx, &cancel);
    let two = [twin("a"), twin("b")];
    rec.until(
        &store,
        Duration::from_secs(5),
        "shared by a and b",
        settled_on(&two, &rs),
    )
    .await;
    let before = owners(&store.leases().await.unwrap());

    let _c = start(&store, "c", &events_tx, &cancel);
    let three = [twin("a"), twin("b"), twin("c")];
    let joined_at = Instant::now();
    rec.until(
        &store,
        Duration::from_secs(5),
        "shared by a, b and c",
        settled_on(&three, &rs),
    )
    .await;
    let handover = joined_at.elapsed();
    let after = owners(&store.leases().await.unwrap());

    let moved: Vec<&RigId> = rs.iter().filter(|r| before[*r].0 != after[*r].0).collect();
    // Exactly the rigs c wins move (about a third), each from its holder to c, one epoch on.
    let to_c: Vec<&RigId> = rs.iter().filter(|r| after[*r].0 == three[2]).collect();
    assert_eq!(moved, to_c);
    assert!(
        (2..=6).contains(&moved.len()),
        "{} of 12 moved",
        moved.len()
    );
    for rig in &rs {
        let (old, new) = (before[rig].1.get(), after[rig].1.get());
        if moved.contains(&rig) {
            assert_eq!(new, old + 1, "{rig:?}");
            assert!(
                rec.lost.iter().any(|(r, e, why)| r == rig
                    && e.get() == old
                    && *why == LostReason::Rebalanced),
                "{rig:?}: {:?}",
                rec.lost
            );
        } else {
            assert_eq!(new, old, "{rig:?} moved though c does not win it");
        }
    }
    // The old holder releases at its next tick and c takes it at its next: no TTL to wait.
    assert!(
        handover < CONFIG.ttl(),
        "handover took {handover:?}, as long as a lapse"
    );
    cancel.cancel();
}

/// The twin's storage race (issue 16): a rig handed over to a joining twin stays leased to its
/// old holder until the holder reports the tenure settled (its last writes landed), so the next
/// owner never reads storage before them; a tenure that never settles is released after one
/// TTL, as a lapse would have been.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_rig_is_released_once_its_tenure_settles_or_after_one_ttl() {
    let (_pg, _url, store) = fresh_store().await;
    let rs = registered(&store, 12).await;
    let (events_tx, events_rx) = mpsc::channel(256);
    let mut rec = Recorder::new(events_rx);
    let cancel = CancellationToken::new();
    let (settled_tx, settled_rx) = watch::channel(Settled::new());
    let a = Coordinator::new(store.clone(), twin("a"), CONFIG, events_tx.clone())
        .unwrap()
        .with_settled(vec![settled_rx]);
    let _a = tokio::spawn(a.run(cancel.clone()));
    let alone = [twin("a")];
    rec.until(
        &store,
        Duration::from_secs(5),
        "held by a",
        settled_on(&alone, &rs),
    )
    .await;
    let held = owners(&store.leases().await.unwrap());

    let _b = start(&store, "b", &events_tx, &cancel);
    let both = [twin("a"), twin("b")];
    let to_b: Vec<RigId> = assign(&both, &rs)
        .into_iter()
        .filter(|(_, t)| *t == both[1])
        .map(|(r, _)| r)
        .collect();
    assert!(to_b.len() >= 2, "b wins {} of 12", to_b.len());
    // a tells its consumer first, then waits for the settle.
    rec.until(
        &store,
        Duration::from_secs(5),
        "handed over by a",
        |rec, _| to_b.iter().all(|r| !rec.open.contains_key(r)),
    )
    .await;
    let lost_at = Instant::now();
    let (settle, never) = to_b.split_at(to_b.len() / 2);

    // Not settled: still a's in the table, and b holds none of them. (a's last renewal was at
    // most one interval before the loss, so the lease is live for 1.2 s more at least.)
    rec.watch(CONFIG.ttl() / 3).await;
    let rows = owners(&store.leases().await.unwrap());
    let live: BTreeMap<RigId, bool> = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.rig, r.live))
        .collect();
    for rig in &to_b {
        assert_eq!(
            rows[rig], held[rig],
            "{rig:?} changed hands before it settled"
        );
        assert!(live[rig], "{rig:?} released before it settled");
        assert!(!rec.open.contains_key(rig), "{rig:?}");
    }

    // Settled (at the tenure's epoch): b has them within a tick or two.
    settled_tx.send_modify(|s| {
        for rig in settle {
            s.insert(rig.clone(), held[rig].1.get());
        }
    });
    let settled_at = Instant::now();
    rec.until(
        &store,
        CONFIG.renew_interval() * 3 + SLACK,
        "settled rigs taken by b",
        |rec, rows| {
            let rows = owners(rows);
            settle
                .iter()
                .all(|r| rows[r].0 == both[1] && rec.open.contains_key(r))
        },
    )
    .await;
    let took = settled_at.elapsed();

    // Never settled: free once the lease lapses or a stops waiting, one TTL after its last
    // renewal (at most one interval before the loss), no sooner.
    rec.until(
        &store,
        CONFIG.ttl() + SLACK * 2,
        "unsettled rigs taken by b",
        |rec, rows| {
            let rows = owners(rows);
            never
                .iter()
                .all(|r| rows[r].0 == both[1] && rec.open.contains_key(r))
        },
    )
    .await;
    let waited = lost_at.elapsed();
    let lapse = CONFIG.ttl() - CONFIG.renew_interval() - Duration::from_millis(100);
    assert!(
        waited >= lapse,
        "unsettled rigs moved {waited:?} after the loss, before the lease could lapse"
    );
    assert!(
        took < CONFIG.ttl(),
        "settled rigs moved {took:?} after the settle"
    );
    for rig in &to_b {
        let epoch = owners(&store.leases().await.unwrap())[rig].1;
        assert_eq!(epoch.get(), held[rig].1.get() + 1, "{rig:?}");
    }
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_is_reported_lost_at_once() {
    let (_pg, _url, store) = fresh_store().await;
    let rs = registered(&store, 1).await;
    let (events_tx, events_rx) = mpsc::channel(16);
    let mut rec = Recorder::new(events_rx);
    let cancel = CancellationToken::new();
    let _a = start(&store, "a", &events_tx, &cancel);
    let one = [twin("a")];
    rec.until(
        &store,
        Duration::from_secs(5),
        "held by a",
        settled_on(&one, &rs),
    )
    .await;
    let epoch = rec.open[&rs[0]];

    // An operator (or a twin not in the members) takes the rig behind a's back.
    assert!(store.release(&rs[0], &one[0], epoch).await.unwrap());
    let intruder = twin("intruder");
    let taken = store
        .acquire(&rs[0], &intruder, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(taken.map(|e| e.get()), Some(epoch.get() + 1));
    let at = Instant::now();
    rec.until(
        &store,
        CONFIG.renew_interval() + SLACK,
        "lost by a",
        |rec, _| rec.open.is_empty(),
    )
    .await;
    assert_eq!(rec.lost, vec![(rs[0].clone(), epoch, LostReason::Refused)]);
    assert!(at.elapsed() <= CONFIG.renew_interval() + SLACK);
    // It does not take the rig back while the intruder's lease lasts.
    assert_eq!(rec.watch(CONFIG.renew_interval() * 3).await, 0);
    cancel.cancel();
}

/// A TCP relay to the database that can be cut: established connections are dropped and new
/// ones closed at once, as when the network to the database fails.
struct Relay {
    port: u16,
    cut: CancellationToken,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if stop.is_cancelled() {
                    continue; // dropping `client` closes it
                }
                let stop = stop.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, hp)| hp)
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_makes_the_holder_give_up_before_the_lease_lapses() {
    let (_pg, url, store) = fresh_store().await;
    let rs = registered(&store, 4).await;
    let relay = Relay::start(host_port(&url)).await;
    let relayed_url = url.replacen(&host_port(&url), &format!("127.0.0.1:{}", relay.port), 1);
    let relayed = PgLeaseStore::connect(&relayed_url).await.unwrap();
    let (events_tx, events_rx) = mpsc::channel(16);
    let mut rec = Recorder::new(events_rx);
    let cancel = CancellationToken::new();
    let coordinator = Coordinator::new(relayed, twin("a"), CONFIG, events_tx).unwrap();
    let _a = tokio::spawn(coordinator.run(cancel.clone()));
    let one = [twin("a")];
    rec.until(
        &store,
        Duration::from_secs(5),
        "held by a",
        settled_on(&one, &rs),
    )
    .await;

    relay.cut.cancel();
    let cut_at = Instant::now();
    // Each Lost must arrive while the database (read directly, not through the relay) still
    // shows the lease live: the holder stopped before anyone else could take the rig.
    while !rec.open.is_empty() {
        let event = tokio::time::timeout(CONFIG.ttl() + SLACK, rec.events_rx.recv())
            .await
            .expect("no Lost before the TTL ran out")
            .unwrap();
        if let LeaseEvent::Lost { rig, reason, .. } = &event {
            assert_eq!(*reason, LostReason::Unreachable);
            let row = store
                .leases()
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.rig == *rig)
                .unwrap();
            assert!(
                row.live,
                "{rig:?} reported lost only after its lease lapsed"
            );
        }
        rec.apply(event);
    }
    let gave_up = cut_at.elapsed();
    // No later than TTL − margin after the last renewal, which was before the cut; the timer may
    // fire late on a loaded machine, by less than the margin (the check above is the safety one).
    assert!(
        gave_up <= CONFIG.hold_for() + CONFIG.safety_margin(),
        "gave up {gave_up:?} after the cut"
    );
    assert_eq!(rec.lost.len(), rs.len());
    cancel.cancel();
}
