//! Fencing by owner epoch: the rule that decides whether a message a twin sent (controller
//! params, a drive, a persisted watermark) may act on this rig, given the highest owner epoch
//! the edge has seen (ARCHITECTURE.md, "Owner epochs and fencing"). Pure: the publisher keeps
//! the epoch in `{state_dir}/owner_epoch` and persists an adopted one before acting on it.

/// The file in `state_dir` holding the highest owner epoch seen (one decimal number).
pub const OWNER_EPOCH_FILE_NAME: &str = "owner_epoch";

/// The epoch of a twin that runs without a lease coordinator.
pub const NO_COORDINATOR: u64 = 0;

/// What the twin's message is, for the refusal's words and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fenced {
    Params,
    Drive,
    Watermark,
}

impl Fenced {
    /// The label in the status JSON and on `/metrics` (`kind`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Fenced::Params => "params",
            Fenced::Drive => "drive",
            Fenced::Watermark => "watermark",
        }
    }
}

/// The edge's decision on a message carrying `owner_epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The sender is the current owner (or, with no coordinator ever seen, a single twin).
    Accept,
    /// A newer owner: persist `epoch` as the highest seen, then act on the message.
    Adopt { epoch: u64 },
    /// An older owner, or a twin without a coordinator after one has been in use.
    Refuse(Refusal),
}

/// Why a message was fenced off: its epoch against the highest one seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "fenced: owner epoch {epoch} is older than the rig's current owner epoch {current}; \
         the sending twin no longer owns this rig"
    )]
    Stale { epoch: u64, current: u64 },
    #[error(
        "fenced: no owner epoch (a twin without a lease coordinator), but the rig has been \
         owned under a coordinator since owner epoch {current}"
    )]
    NoCoordinator { current: u64 },
}

/// The highest owner epoch this edge has seen for its rig.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fence {
    current: u64,
}

impl Fence {
    /// The fence as a previous run left it (`None`: the file does not exist, no epoch seen).
    pub const fn new(persisted: Option<u64>) -> Self {
        match persisted {
            Some(current) => Self { current },
            None => Self {
                current: NO_COORDINATOR,
            },
        }
    }

    /// The highest owner epoch seen (0: never one, single-twin mode).
    pub const fn current(&self) -> u64 {
        self.current
    }

    /// The decision on a message stamped `epoch`. Epoch 0 keeps working only until a
    /// coordinator's epoch has been seen, so a legacy twin cannot drive a coordinated rig.
    pub const fn admit(&self, epoch: u64) -> Admission {
        if epoch == NO_COORDINATOR {
            return if self.current == NO_COORDINATOR {
                Admission::Accept
            } else {
                Admission::Refuse(Refusal::NoCoordinator {
                    current: self.current,
                })
            };
        }
        if epoch > self.current {
            Admission::Adopt { epoch }
        } else if epoch == self.current {
            Admission::Accept
        } else {
            Admission::Refuse(Refusal::Stale {
                epoch,
                current: self.current,
            })
        }
    }

    /// Records `epoch` as the highest seen, once it is durable. Never lowers it.
    pub fn adopt(&mut self, epoch: u64) {
        self.current = self.current.max(epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_edge_accepts_a_twin_without_a_coordinator_as_before() {
        let fence = Fence::new(None);
        assert_eq!(fence.admit(0), Admission::Accept);
        assert_eq!(fence.current(), 0);
    }

    #[test]
    fn a_newer_epoch_is_adopted_and_then_the_same_epoch_is_accepted() {
        let mut fence = Fence::new(None);
        assert_eq!(fence.admit(2), Admission::Adopt { epoch: 2 });
        fence.adopt(2);
        assert_eq!(fence.admit(2), Admission::Accept);
        assert_eq!(fence.admit(3), Admission::Adopt { epoch: 3 });
    }

    #[test]
    fn an_older_epoch_is_refused_with_both_epochs_in_the_reason() {
        let mut fence = Fence::new(None);
        fence.adopt(2);
        let Admission::Refuse(refusal) = fence.admit(1) else {
            panic!("epoch 1 after 2 must be refused");
        };
        assert_eq!(
            refusal,
            Refusal::Stale {
                epoch: 1,
                current: 2
            }
        );
        let reason = refusal.to_string();
        assert!(
            reason.contains("owner epoch 1") && reason.contains("epoch 2"),
            "{reason}"
        );
    }

    #[test]
    fn epoch_zero_is_refused_once_a_coordinator_epoch_was_seen_even_after_a_restart() {
        let fence = Fence::new(Some(1));
        assert_eq!(
            fence.admit(0),
            Admission::Refuse(Refusal::NoCoordinator { current: 1 })
        );
        assert_eq!(fence.admit(1), Admission::Accept);
    }

    #[test]
    fn adopting_never_lowers_the_epoch() {
        let mut fence = Fence::new(Some(5));
        fence.adopt(3);
        assert_eq!(fence.current(), 5);
        assert!(matches!(fence.admit(4), Admission::Refuse(_)));
    }
}
