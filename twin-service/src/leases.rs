//! Owns this twin's side of the rig leases (`[coordinator]`): connecting to the lease database,
//! running the `dtop-lease` [`Coordinator`], handing its `Owned`/`Lost` to the
//! [`OwnersHandle`], and registering every rig whose birth the twin sees. Knows nothing of rig
//! actors, MQTT or storage: what owning a rig means is `crate::owner`'s and `crate::rig`'s.

use std::collections::BTreeSet;
use std::time::Duration;

use dtop_lease::{Coordinator, LeaseConfig, LeaseEvent, LostReason, PgLeaseStore, Settled, TwinId};
use dtop_proto::RigId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tokio::time::{MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::DatabaseUrl;
use crate::owner::OwnersHandle;

/// Lease events queued between the coordinator and the owners handle. The coordinator waits
/// when it is full (a `Lost` must be taken before the lease may lapse); taking one is instant.
const LEASE_EVENTS: usize = 64;
/// How long one connection attempt (with the creation of the tables) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one rig's registration may take before the database counts as away.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two connection attempts.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the lease task needs, from `[coordinator]`.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// This twin's id in the lease tables.
    pub me: TwinId,
    pub database_url: DatabaseUrl,
    pub lease: LeaseConfig,
}

/// Applies one coordinator event to the rigs this twin owns.
pub fn apply(owners: &OwnersHandle, event: &LeaseEvent) {
    match event {
        LeaseEvent::Owned { rig, epoch } => {
            if let Err(e) = owners.own(rig.clone(), epoch.get()) {
                // The coordinator starts a new epoch at every acquire, so this is a bug; the
                // rig stays as it was rather than be driven under an epoch that does not grow.
                error!(rig = %rig, owner_epoch = %epoch, error = %e, "Did not take a rig's lease epoch.");
            }
        }
        LeaseEvent::Lost { rig, epoch, reason } => {
            match reason {
                LostReason::Rebalanced | LostReason::Shutdown => {
                    info!(rig = %rig, owner_epoch = %epoch, ?reason, "Handing the rig over to another twin.");
                }
                LostReason::Refused | LostReason::Unreachable => {
                    warn!(rig = %rig, owner_epoch = %epoch, ?reason, "Lost the rig's lease; another twin takes it over.");
                }
            }
            owners.lose(rig.clone());
        }
    }
}

/// Runs this twin's leases until `stop`: connects (retrying with backoff while the database is
/// away), then runs the coordinator, applies its events to `owners`, and registers each rig
/// that arrives on `births_rx`. A rig handed to another twin is released once every storage
/// writer reports it on `settled` (or after one TTL). At `stop` the coordinator hands every rig
/// over (`Lost`, release) and leaves the members.
pub async fn run(
    settings: LeaseSettings,
    owners: OwnersHandle,
    births_rx: mpsc::Receiver<RigId>,
    settled: Vec<watch::Receiver<Settled>>,
    stop: CancellationToken,
) {
    let Some(store) = connect(&settings, &stop).await else {
        return;
    };
    let (events_tx, mut events_rx) = mpsc::channel(LEASE_EVENTS);
    let coordinator = match Coordinator::new(
        store.clone(),
        settings.me.clone(),
        settings.lease,
        events_tx,
    ) {
        Ok(c) => c.with_settled(settled),
        Err(problems) => {
            // Unreachable: the twin's config validation checks the same ranges.
            error!(problems = %problems, "The lease timing is not usable; this twin owns no rig.");
            return;
        }
    };
    let forward = async {
        // Ends when the coordinator has stopped and dropped its sender.
        while let Some(event) = events_rx.recv().await {
            apply(&owners, &event);
        }
    };
    let registrar = register_births(
        store,
        births_rx,
        settings.lease.renew_interval(),
        stop.clone(),
    );
    tokio::join!(coordinator.run(stop), forward, registrar);
}

/// Connects, or `None` once `stop` comes first.
async fn connect(settings: &LeaseSettings, stop: &CancellationToken) -> Option<PgLeaseStore> {
    let mut backoff =
        dtop_daemon::Backoff::new(settings.lease.renew_interval(), CONNECT_BACKOFF_MAX);
    let mut rng = StdRng::from_os_rng();
    loop {
        let attempt = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            attempt = timeout(CONNECT_TIMEOUT, PgLeaseStore::connect(settings.database_url.expose())) => attempt,
        };
        let delay = backoff.next_delay(&mut rng);
        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        match attempt {
            Ok(Ok(store)) => {
                info!(twin = %settings.me, database = %settings.database_url, "Connected to the lease database.");
                return Some(store);
            }
            Ok(Err(e)) if e.is_unavailable() => {
                warn!(twin = %settings.me, database = %settings.database_url, error = %e, retry_in_ms, "The lease database is unavailable; this twin owns no rig until it connects.");
            }
            Ok(Err(e)) => {
                error!(twin = %settings.me, database = %settings.database_url, error = %e, retry_in_ms, "The lease database refused this twin (URL, credentials or schema?); it owns no rig until it connects.");
            }
            Err(_) => {
                warn!(twin = %settings.me, database = %settings.database_url, timeout_ms = CONNECT_TIMEOUT.as_millis() as u64, retry_in_ms, "Connecting to the lease database timed out; this twin owns no rig until it connects.");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Registers every rig that arrives on `births_rx` (each arrives once: the router announces a
/// rig at its first birth), retrying those the database did not take every `retry_every`.
/// Registration is idempotent, so every twin registers every rig it sees born.
async fn register_births(
    store: PgLeaseStore,
    mut births_rx: mpsc::Receiver<RigId>,
    retry_every: Duration,
    stop: CancellationToken,
) {
    let mut pending = BTreeSet::new();
    let mut open = true;
    let mut retry = tokio::time::interval(retry_every);
    retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            rig = births_rx.recv(), if open => match rig {
                Some(rig) => {
                    pending.insert(rig);
                }
                None => open = false,
            },
            _ = retry.tick(), if !pending.is_empty() => {}
        }
        while let Some(rig) = pending.first().cloned() {
            let registered = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                r = timeout(REGISTER_TIMEOUT, store.register_rig(&rig)) => r,
            };
            match registered {
                Ok(Ok(())) => {
                    debug!(rig = %rig, "Registered the rig for leasing.");
                    pending.remove(&rig);
                }
                // The rest wait for the next retry: the database is away or refusing.
                Ok(Err(e)) => {
                    warn!(rig = %rig, waiting = pending.len(), error = %e, "Could not register a rig for leasing; retrying.");
                    break;
                }
                Err(_) => {
                    warn!(rig = %rig, waiting = pending.len(), "Registering a rig for leasing timed out; retrying.");
                    break;
                }
            }
        }
        if !open && pending.is_empty() {
            break;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use dtop_lease::Epoch;

    use super::*;
    use crate::owner::{OwnerMode, Ownership, owners_channel_for, ownership_of};

    #[test]
    fn owned_and_lost_events_become_the_rigs_ownership() {
        let (owners, rx) = owners_channel_for(OwnerMode::Coordinated);
        let rig = RigId::new("r1").unwrap();
        let owned = |epoch| LeaseEvent::Owned {
            rig: rig.clone(),
            epoch: Epoch::new(epoch),
        };
        assert!(!ownership_of(&rx.borrow(), &rig).is_owned());
        apply(&owners, &owned(2));
        assert_eq!(
            ownership_of(&rx.borrow(), &rig),
            Ownership::Owned { epoch: 2 }
        );
        apply(
            &owners,
            &LeaseEvent::Lost {
                rig: rig.clone(),
                epoch: Epoch::new(2),
                reason: LostReason::Unreachable,
            },
        );
        assert_eq!(
            ownership_of(&rx.borrow(), &rig),
            Ownership::Lost { epoch: 2 }
        );
        // An epoch that does not grow is not taken; the next one is.
        apply(&owners, &owned(2));
        assert!(!ownership_of(&rx.borrow(), &rig).is_owned());
        apply(&owners, &owned(3));
        assert_eq!(
            ownership_of(&rx.borrow(), &rig),
            Ownership::Owned { epoch: 3 }
        );
    }
}
