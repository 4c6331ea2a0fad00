//! Rig ownership under a lease coordinator (issue 16): which rigs this twin owns and at which
//! owner epoch, and the one handle through which a coordinator says so. Rig actors stamp the
//! epoch on everything they send to an edge and go silent for a rig this twin lost; the
//! watermark publisher does the same (ARCHITECTURE.md, "Owner epochs and fencing"). Knows
//! nothing of leases, elections or MQTT.
//!
//! Without a coordinator ([`OwnerMode::Single`]) nobody calls [`OwnersHandle`], every rig is
//! owned at epoch 0, and the twin behaves exactly as a single twin always has. Under one
//! ([`OwnerMode::Coordinated`]) a rig the coordinator has not given this twin is not owned: its
//! samples are left to the owner.

use std::collections::BTreeMap;

use dtop_proto::RigId;
use tokio::sync::watch;

/// The owner epoch of a twin without a coordinator: edges accept it until they have seen a
/// coordinator's epoch.
pub const NO_COORDINATOR: u64 = 0;

/// The epoch a coordinator gives a rig's first owner ever (`dtop_lease`'s `Epoch(1)`): no
/// other twin stored anything for the rig before it.
pub const FIRST_EPOCH: u64 = 1;

/// What this twin may do with one rig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// This twin owns the rig: everything it sends to the rig's edge carries `epoch`.
    Owned { epoch: u64 },
    /// Another twin owns the rig (since an epoch above `epoch`): nothing for it is published,
    /// and any control or live CBC run has ended without a last drive.
    Lost { epoch: u64 },
}

impl Default for Ownership {
    /// A rig of a twin without a coordinator: owned, as by a single twin.
    fn default() -> Self {
        Ownership::Owned {
            epoch: NO_COORDINATOR,
        }
    }
}

/// Who decides which rigs this twin owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerMode {
    /// No coordinator: every rig is owned at [`NO_COORDINATOR`] (one twin for all rigs).
    Single,
    /// A lease coordinator: a rig it has not given this twin is not owned (another twin, or
    /// nobody yet, holds it), so this twin neither stores nor publishes anything for it.
    Coordinated,
}

impl OwnerMode {
    /// The ownership of a rig the coordinator has not mentioned.
    pub const fn unmentioned(self) -> Ownership {
        match self {
            OwnerMode::Single => Ownership::Owned {
                epoch: NO_COORDINATOR,
            },
            // Lost at 0: any coordinator's epoch (they start at 1) may own it.
            OwnerMode::Coordinated => Ownership::Lost {
                epoch: NO_COORDINATOR,
            },
        }
    }
}

impl Ownership {
    /// Whether this twin may publish for the rig (drives, params, states, watermarks, ...).
    pub const fn is_owned(self) -> bool {
        matches!(self, Ownership::Owned { .. })
    }

    /// The epoch owned at, or the one lost at.
    pub const fn epoch(self) -> u64 {
        match self {
            Ownership::Owned { epoch } | Ownership::Lost { epoch } => epoch,
        }
    }
}

/// Every rig a coordinator has spoken about, and what the others are ([`OwnerMode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    mode: OwnerMode,
    rigs: BTreeMap<RigId, Ownership>,
}

impl Owners {
    /// Nothing said yet.
    pub const fn new(mode: OwnerMode) -> Self {
        Self {
            mode,
            rigs: BTreeMap::new(),
        }
    }

    pub const fn mode(&self) -> OwnerMode {
        self.mode
    }

    /// The ownership of `rig`: as the coordinator last said, else the mode's default.
    pub fn of(&self, rig: &RigId) -> Ownership {
        self.rigs
            .get(rig)
            .copied()
            .unwrap_or(self.mode.unmentioned())
    }

    /// The rigs the coordinator has spoken about.
    pub fn mentioned(&self) -> &BTreeMap<RigId, Ownership> {
        &self.rigs
    }

    /// Whether the coordinator has spoken about no rig yet.
    pub fn is_empty(&self) -> bool {
        self.rigs.is_empty()
    }
}

/// The ownership of `rig` in `owners`.
pub fn ownership_of(owners: &Owners, rig: &RigId) -> Ownership {
    owners.of(rig)
}

/// Why a coordinator's word was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// Epochs only grow: an epoch below the one recorded is a message from the past.
    #[error(
        "owner epoch {epoch} for rig {rig} is not above the recorded epoch {recorded}; epochs only grow"
    )]
    StaleEpoch {
        rig: RigId,
        epoch: u64,
        recorded: u64,
    },
}

/// The next ownership of a rig when a coordinator says `next` while it is `current`: `None`
/// when nothing changes. Owning at an epoch below the recorded one, or again at the epoch
/// just lost, is refused: the coordinator bumps the epoch on every change of owner.
pub fn transition(
    rig: &RigId,
    current: Ownership,
    next: Ownership,
) -> Result<Option<Ownership>, OwnerError> {
    let stale = |epoch| OwnerError::StaleEpoch {
        rig: rig.clone(),
        epoch,
        recorded: current.epoch(),
    };
    match (current, next) {
        (a, b) if a == b => Ok(None),
        (Ownership::Owned { epoch: held }, Ownership::Owned { epoch }) if epoch < held => {
            Err(stale(epoch))
        }
        (Ownership::Lost { epoch: lost }, Ownership::Owned { epoch }) if epoch <= lost => {
            Err(stale(epoch))
        }
        // Losing is always taken: fencing errs on the side of silence.
        (_, Ownership::Lost { .. }) => Ok(Some(Ownership::Lost {
            epoch: current.epoch().max(next.epoch()),
        })),
        (_, owned) => Ok(Some(owned)),
    }
}

/// The coordinator's side: tells this twin's rig actors and watermark publisher which rigs it
/// owns. Cheap to clone; every call takes effect at once (rig actors react before their next
/// event, the watermark publisher republishes with the new epoch).
#[derive(Debug, Clone)]
pub struct OwnersHandle {
    owners_tx: watch::Sender<Owners>,
}

/// The handle a coordinator keeps, and the receiver to pass to `service::run_with_owners`:
/// every rig not mentioned through the handle is owned at epoch 0 ([`OwnerMode::Single`]).
pub fn owners_channel() -> (OwnersHandle, watch::Receiver<Owners>) {
    owners_channel_for(OwnerMode::Single)
}

/// [`owners_channel`] in `mode`: under [`OwnerMode::Coordinated`] only the rigs owned through
/// the handle are owned.
pub fn owners_channel_for(mode: OwnerMode) -> (OwnersHandle, watch::Receiver<Owners>) {
    let (owners_tx, owners_rx) = watch::channel(Owners::new(mode));
    (OwnersHandle { owners_tx }, owners_rx)
}

impl OwnersHandle {
    /// "This twin now owns `rig` at `epoch`." From then on everything it sends to the rig's
    /// edge carries `epoch`; the edge adopts it and fences off every older owner.
    ///
    /// # Errors
    /// [`OwnerError::StaleEpoch`] when `epoch` is below the recorded one (or not above the
    /// epoch the rig was lost at); nothing changes then.
    pub fn own(&self, rig: RigId, epoch: u64) -> Result<(), OwnerError> {
        self.set(rig, Ownership::Owned { epoch })
    }

    /// "This twin lost `rig`." Its actor stops publishing anything for the rig at once and
    /// ends any control or live CBC run without a last drive; its watermarks stop too.
    pub fn lose(&self, rig: RigId) {
        // Losing is never refused (see `transition`).
        let _ = self.set(rig, Ownership::Lost { epoch: 0 });
    }

    /// What this twin holds now, by rig.
    pub fn owners(&self) -> Owners {
        self.owners_tx.borrow().clone()
    }

    fn set(&self, rig: RigId, next: Ownership) -> Result<(), OwnerError> {
        let mut outcome = Ok(());
        self.owners_tx.send_if_modified(|owners| {
            match transition(&rig, ownership_of(owners, &rig), next) {
                Ok(Some(o)) => {
                    owners.rigs.insert(rig.clone(), o);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    outcome = Err(e);
                    false
                }
            }
        });
        outcome
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rig() -> RigId {
        RigId::new("r1").unwrap()
    }

    #[test]
    fn an_unmentioned_rig_is_owned_at_epoch_zero() {
        let (handle, rx) = owners_channel();
        assert_eq!(
            ownership_of(&rx.borrow(), &rig()),
            Ownership::Owned { epoch: 0 }
        );
        assert!(handle.owners().is_empty());
    }

    #[test]
    fn under_a_coordinator_an_unmentioned_rig_is_not_owned_until_it_is_given() {
        let (handle, rx) = owners_channel_for(OwnerMode::Coordinated);
        assert_eq!(
            ownership_of(&rx.borrow(), &rig()),
            Ownership::Lost { epoch: 0 }
        );
        assert!(!ownership_of(&rx.borrow(), &rig()).is_owned());
        // A coordinator's first epoch is 1; 0 is never a coordinator's.
        assert!(handle.own(rig(), 0).is_err());
        handle.own(rig(), 1).unwrap();
        assert_eq!(
            ownership_of(&rx.borrow(), &rig()),
            Ownership::Owned { epoch: 1 }
        );
        let other = RigId::new("r2").unwrap();
        assert!(!ownership_of(&rx.borrow(), &other).is_owned());
        assert_eq!(rx.borrow().mode(), OwnerMode::Coordinated);
    }

    #[test]
    fn owning_losing_and_owning_again_at_a_newer_epoch() {
        let (handle, mut rx) = owners_channel();
        handle.own(rig(), 2).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            ownership_of(&rx.borrow_and_update(), &rig()),
            Ownership::Owned { epoch: 2 }
        );
        handle.lose(rig());
        assert_eq!(
            ownership_of(&rx.borrow_and_update(), &rig()),
            Ownership::Lost { epoch: 2 }
        );
        // The epoch just lost does not come back: the coordinator bumps it on every change.
        assert!(matches!(
            handle.own(rig(), 2),
            Err(OwnerError::StaleEpoch {
                epoch: 2,
                recorded: 2,
                ..
            })
        ));
        handle.own(rig(), 4).unwrap();
        assert_eq!(
            ownership_of(&rx.borrow(), &rig()),
            Ownership::Owned { epoch: 4 }
        );
    }

    #[test]
    fn an_older_epoch_is_refused_and_the_same_one_changes_nothing() {
        let (handle, mut rx) = owners_channel();
        handle.own(rig(), 3).unwrap();
        rx.borrow_and_update();
        handle.own(rig(), 3).unwrap();
        assert!(!rx.has_changed().unwrap());
        let err = handle.own(rig(), 1).unwrap_err();
        assert!(err.to_string().contains("rig r1"), "{err}");
        assert_eq!(
            ownership_of(&rx.borrow(), &rig()),
            Ownership::Owned { epoch: 3 }
        );
    }
}
