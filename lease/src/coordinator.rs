//! Owns one twin process's leases: the task that heartbeats, follows the assignment (acquires the
//! rigs it wins, releases those another twin wins, renews the rest) and tells its consumer by
//! [`LeaseEvent`]s. `Lost` is always sent before the lease could lapse or be released, so the
//! consumer never acts on a rig another twin may hold. A rig handed over to another twin is
//! released only once the consumer reports its tenure [`Settled`] (nothing it did under it is
//! still on its way, e.g. storage writes), or after one TTL. Knows nothing about what owning a
//! rig means.

use std::collections::BTreeMap;
use std::time::Duration;

use dtop_daemon::ConfigProblems;
use dtop_proto::RigId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::plan::{Holding, earliest_deadline, overdue, plan};
use crate::{Epoch, LeaseConfig, LeaseError, PgLeaseStore, TwinId};

/// What the coordinator tells its consumer (the twin's rig supervisor), in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This twin holds `rig` from now, as tenure `epoch`: act on the rig and stamp `epoch` on
    /// everything sent to it.
    Owned { rig: RigId, epoch: Epoch },
    /// This twin no longer holds `rig` (tenure `epoch`): stop acting on it at once. Sent before
    /// the lease is released or could lapse.
    Lost {
        rig: RigId,
        epoch: Epoch,
        reason: LostReason,
    },
}

/// Why a tenure ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The assignment gives the rig to another live twin (one joined): it was released for it.
    Rebalanced,
    /// The database refused the renewal: the lease had lapsed there, or another tenure began.
    Refused,
    /// No renewal succeeded in time (the database away or slow): the lease may lapse soon.
    Unreachable,
    /// The coordinator is stopping and released the rig.
    Shutdown,
}

/// What a consumer reports back about the rigs it was told it lost (see
/// [`Coordinator::with_settled`]): for each rig, the newest epoch of which nothing the consumer
/// did under it is still on its way. For a twin: every line it accepted for the rig under that
/// tenure is acknowledged by storage or given up. Only ever raised.
pub type Settled = BTreeMap<RigId, u64>;

/// One twin's coordinator. Build it with [`Coordinator::new`], then run [`Coordinator::run`] as a
/// task until its token is cancelled.
#[derive(Debug)]
pub struct Coordinator {
    store: PgLeaseStore,
    me: TwinId,
    config: LeaseConfig,
    events_tx: mpsc::Sender<LeaseEvent>,
    /// The tenures this twin holds, each with the instant it must stop acting on the rig unless
    /// a renewal lands first. Only this task changes it.
    held: BTreeMap<RigId, Holding>,
    /// The consumer dropped its receiver: nothing acts on the rigs any more, so stop.
    consumer_gone: bool,
    /// Where the consumer reports settled tenures; a handed-over rig is released once every
    /// one of them has settled it (none: at once).
    settled: Vec<watch::Receiver<Settled>>,
    /// Releases of handed-over rigs waiting for them to settle, one task per rig.
    releases: JoinSet<()>,
}

impl Coordinator {
    /// A coordinator for twin `me`, telling `events_tx` what it holds.
    ///
    /// # Errors
    /// Every problem of `config` (the caller should have checked it while loading, under its own
    /// prefix; a coordinator never runs on a config that could lose a lease it believes held).
    pub fn new(
        store: PgLeaseStore,
        me: TwinId,
        config: LeaseConfig,
        events_tx: mpsc::Sender<LeaseEvent>,
    ) -> Result<Self, ConfigProblems> {
        if let Some(problems) = ConfigProblems::from_problems(config.problems("")) {
            return Err(problems);
        }
        Ok(Self {
            store,
            me,
            config,
            events_tx,
            held: BTreeMap::new(),
            consumer_gone: false,
            settled: Vec::new(),
            releases: JoinSet::new(),
        })
    }

    /// Releases a rig handed over to another twin ([`LostReason::Rebalanced`]) only once every
    /// reporter's [`Settled`] has reached the lost tenure's epoch, waiting at most one TTL (the
    /// time the lease would have taken to lapse); a reporter whose sender is gone counts as
    /// settled. Without this, the next owner could read the rig's state from storage before
    /// this twin's last writes of it land. A rig lost any other way cannot wait: another twin
    /// may already hold it.
    pub fn with_settled(mut self, reporters: Vec<watch::Receiver<Settled>>) -> Self {
        self.settled = reporters;
        self
    }

    /// Runs until `cancel` is cancelled or the event receiver is dropped, then hands every held
    /// rig over (`Lost { reason: Shutdown }`, release) and leaves the members. Dropping or
    /// aborting the task instead releases nothing: the leases lapse after their TTL.
    pub async fn run(mut self, cancel: CancellationToken) {
        let interval = self.config.renew_interval();
        info!(twin = %self.me, ttl_ms = self.config.ttl_ms,
              renew_interval_ms = self.config.renew_interval_ms, "Lease coordinator started.");
        let mut next_tick = Instant::now();
        loop {
            // Wait for the tick, but give up any lease whose deadline comes first.
            let deadline = earliest_deadline(&self.held);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = sleep_until_some(deadline) => {
                    self.give_up_overdue().await;
                    continue;
                }
                () = sleep_until(next_tick) => {}
            }
            let started = Instant::now();
            next_tick = started + interval;
            // A tick must not outlast the next tick nor any held lease's deadline: cut short,
            // whatever it recorded stays recorded, and the leases it did not renew are given up.
            let limit = earliest_deadline(&self.held).map_or(next_tick, |d| d.min(next_tick));
            let outcome = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                outcome = timeout_at(limit, self.tick()) => outcome,
            };
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_unavailable() => {
                    warn!(twin = %self.me, held = self.held.len(), error = %e,
                          "Lease database unavailable; held rigs run down towards their deadlines.");
                }
                Ok(Err(e)) => {
                    tracing::error!(twin = %self.me, held = self.held.len(), error = %e,
                                    "Lease tick failed.");
                }
                Err(_) => {
                    warn!(twin = %self.me, held = self.held.len(),
                          elapsed_ms = started.elapsed().as_millis() as u64,
                          "Lease tick did not finish before the next tick or a lease's deadline.");
                }
            }
            self.give_up_overdue().await;
            if self.consumer_gone {
                info!(twin = %self.me, "Lease event receiver dropped; stopping the coordinator.");
                break;
            }
        }
        self.shutdown().await;
    }

    /// Heartbeat, read, decide, then release, renew and acquire as decided.
    async fn tick(&mut self) -> Result<(), LeaseError> {
        let ttl = self.config.ttl();
        self.store.heartbeat(&self.me, ttl).await?;
        let members = self.store.live_members().await?;
        let rigs = self.store.rigs().await?;
        let plan = plan(&self.me, &members, &rigs, &self.held);

        // Releases that finished since the last tick.
        while self.releases.try_join_next().is_some() {}
        for (rig, epoch) in plan.release {
            // The consumer stops first; only then may the next owner take the rig, once what
            // the consumer did under this tenure has landed (`with_settled`).
            self.lose(&rig, epoch, LostReason::Rebalanced).await;
            if self.consumer_gone {
                return Ok(());
            }
            self.release_once_settled(rig, epoch);
        }

        if !plan.renew.is_empty() {
            let sent_at = Instant::now();
            let renewed = self.store.renew_all(&self.me, &plan.renew, ttl).await?;
            let deadline = sent_at + self.config.hold_for();
            for (rig, epoch) in plan.renew {
                if renewed.contains(&rig) {
                    if let Some(h) = self.held.get_mut(&rig) {
                        h.deadline = deadline;
                    }
                } else {
                    self.lose(&rig, epoch, LostReason::Refused).await;
                }
            }
        }

        for rig in plan.acquire {
            if self.consumer_gone {
                break;
            }
            let sent_at = Instant::now();
            if let Some(epoch) = self.store.acquire(&rig, &self.me, ttl).await? {
                let deadline = sent_at + self.config.hold_for();
                info!(twin = %self.me, rig = %rig, epoch = %epoch, "Took the rig's lease.");
                self.emit(LeaseEvent::Owned {
                    rig: rig.clone(),
                    epoch,
                })
                .await;
                // Recorded only once the consumer has it: a tick cut during the send leaves the
                // rig unheld here, and the next tick takes it again under a newer epoch.
                self.held.insert(rig, Holding { epoch, deadline });
            }
        }
        Ok(())
    }

    /// Releases `rig` (tenure `epoch`, already reported lost) once every reporter has settled
    /// it, or after one TTL, in a task of its own so the ticks (and the renewals of the other
    /// rigs) go on meanwhile. The release is conditional on the epoch, so it never ends a later
    /// tenure of this twin.
    fn release_once_settled(&mut self, rig: RigId, epoch: Epoch) {
        let store = self.store.clone();
        let me = self.me.clone();
        let reporters = self.settled.clone();
        let wait = self.config.ttl();
        self.releases.spawn(async move {
            let started = Instant::now();
            match timeout(wait, all_settled(reporters, &rig, epoch)).await {
                Ok(()) => debug!(twin = %me, rig = %rig, epoch = %epoch,
                                 settled_ms = duration_ms(started.elapsed()),
                                 "The rig's tenure settled; releasing it."),
                Err(_) => warn!(twin = %me, rig = %rig, epoch = %epoch, waited_ms = duration_ms(wait),
                                "The rig's tenure did not settle within the lease TTL (storage slow or away); releasing it anyway, so its next owner may read storage before this twin's last writes land."),
            }
            if let Err(e) = store.release(&rig, &me, epoch).await {
                // The lease lapses after its TTL instead; the new owner waits for that.
                warn!(twin = %me, rig = %rig, epoch = %epoch, error = %e,
                      "Could not release a rebalanced rig's lease.");
            }
        });
    }

    /// Gives up every held rig whose deadline has come.
    async fn give_up_overdue(&mut self) {
        for (rig, epoch) in overdue(&self.held, Instant::now()) {
            self.lose(&rig, epoch, LostReason::Unreachable).await;
        }
    }

    /// Tells the consumer that `rig` is lost, then forgets it (in that order: a send cut short
    /// leaves the rig held here, so it is told again).
    async fn lose(&mut self, rig: &RigId, epoch: Epoch, reason: LostReason) {
        match reason {
            LostReason::Refused | LostReason::Unreachable => {
                warn!(twin = %self.me, rig = %rig, epoch = %epoch, ?reason, "Lost the rig's lease.");
            }
            LostReason::Rebalanced | LostReason::Shutdown => {
                debug!(twin = %self.me, rig = %rig, epoch = %epoch, ?reason, "Handing the rig over.");
            }
        }
        self.emit(LeaseEvent::Lost {
            rig: rig.clone(),
            epoch,
            reason,
        })
        .await;
        self.held.remove(rig);
    }

    async fn emit(&mut self, event: LeaseEvent) {
        if self.events_tx.send(event).await.is_err() {
            self.consumer_gone = true;
        }
    }

    /// Hands every held rig over and leaves the members, within one renew interval for the
    /// events and one for the database. If the consumer does not take the events in time, the
    /// leases are left to lapse instead of being released under a consumer still acting.
    async fn shutdown(mut self) {
        let interval = self.config.renew_interval();
        // Handovers still waiting to settle get one interval; the rest lapse after their TTL.
        let releases = std::mem::take(&mut self.releases);
        if !releases.is_empty() {
            let pending = releases.len();
            let joined = timeout(interval, releases.join_all()).await;
            if joined.is_err() {
                warn!(twin = %self.me, pending, "Handovers still waiting to settle at shutdown; those leases lapse after their TTL.");
            }
        }
        let held: Vec<(RigId, Epoch)> = self
            .held
            .iter()
            .map(|(rig, h)| (rig.clone(), h.epoch))
            .collect();
        let told = timeout(interval, async {
            for (rig, epoch) in &held {
                self.lose(rig, *epoch, LostReason::Shutdown).await;
            }
        })
        .await
        .is_ok();
        let store = self.store.clone();
        let me = self.me.clone();
        let handed_over = timeout(interval, async {
            if told {
                for (rig, epoch) in &held {
                    store.release(rig, &me, *epoch).await?;
                }
            }
            store.leave(&me).await
        })
        .await;
        match (told, handed_over) {
            (true, Ok(Ok(()))) => {
                info!(twin = %me, released = held.len(), "Lease coordinator stopped; rigs released.");
            }
            (false, _) => warn!(twin = %me, held = held.len(),
                                "Lease events not taken in time; the leases will lapse after their TTL."),
            (true, Ok(Err(e))) => warn!(twin = %me, held = held.len(), error = %e,
                                        "Could not release every lease; the rest lapse after their TTL."),
            (true, Err(_)) => warn!(twin = %me, held = held.len(),
                                    timeout_ms = duration_ms(interval),
                                    "Releasing the leases timed out; the rest lapse after their TTL."),
        }
    }
}

/// Waits until every reporter has settled `rig` at `epoch` or later, or dropped its sender.
async fn all_settled(mut reporters: Vec<watch::Receiver<Settled>>, rig: &RigId, epoch: Epoch) {
    for reporter in &mut reporters {
        // An error means the sender is gone: the consumer has stopped and nothing more of it
        // is on its way.
        let _ = reporter
            .wait_for(|settled| settled.get(rig).is_some_and(|e| *e >= epoch.get()))
            .await;
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
