//! Owns the coordinator's decisions for one tick, as pure functions of what it read and what it
//! holds: which rigs to acquire, renew and release, and which held leases are past their local
//! deadline. No I/O; instants are values passed in, so tests need no clock.

use std::collections::{BTreeMap, BTreeSet};

use dtop_proto::RigId;
use tokio::time::Instant;

use crate::{Epoch, TwinId, assign::owner_of};

/// A lease this twin holds, as the coordinator tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// The tenure the database granted.
    pub epoch: Epoch,
    /// When this twin must stop acting on the rig unless a renewal succeeds first: the instant
    /// the last successful acquire or renew was *sent*, plus the TTL, less the safety margin.
    /// The database started the lease's TTL after that send, on its own clock, so the lease
    /// lapses no earlier than this plus the margin.
    pub deadline: Instant,
}

/// What one tick does with the leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Rigs assigned to this twin that it does not hold: try to take them (they succeed once the
    /// previous holder released them or its lease lapsed).
    pub acquire: Vec<RigId>,
    /// Rigs this twin holds and keeps.
    pub renew: Vec<(RigId, Epoch)>,
    /// Rigs this twin holds that the assignment gives to another live twin (or that are no
    /// longer registered): hand them over.
    pub release: Vec<(RigId, Epoch)>,
}

/// Decides one tick. `members` are the live twins read from the database; `me` counts as live
/// whatever they say (it has just heartbeated, and a twin that ignored itself would release
/// everything on a late read).
pub fn plan(
    me: &TwinId,
    members: &[TwinId],
    rigs: &[RigId],
    held: &BTreeMap<RigId, Holding>,
) -> Plan {
    let mut live: Vec<TwinId> = members.to_vec();
    if !live.contains(me) {
        live.push(me.clone());
    }
    let mut out = Plan::default();
    let registered: BTreeSet<&RigId> = rigs.iter().collect();
    for rig in rigs {
        let mine = owner_of(rig, &live) == Some(me);
        match (mine, held.get(rig)) {
            (true, Some(h)) => out.renew.push((rig.clone(), h.epoch)),
            (true, None) => out.acquire.push(rig.clone()),
            (false, Some(h)) => out.release.push((rig.clone(), h.epoch)),
            (false, None) => {}
        }
    }
    for (rig, h) in held {
        if !registered.contains(rig) {
            out.release.push((rig.clone(), h.epoch));
        }
    }
    out
}

/// The held rigs whose deadline is at or before `now`: they must be given up at once.
pub fn overdue(held: &BTreeMap<RigId, Holding>, now: Instant) -> Vec<(RigId, Epoch)> {
    held.iter()
        .filter(|(_, h)| h.deadline <= now)
        .map(|(rig, h)| (rig.clone(), h.epoch))
        .collect()
}

/// The earliest deadline among the held rigs.
pub fn earliest_deadline(held: &BTreeMap<RigId, Holding>) -> Option<Instant> {
    held.values().map(|h| h.deadline).min()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::assign;

    fn twin(name: &str) -> TwinId {
        TwinId::new(name).unwrap()
    }

    fn rigs(n: usize) -> Vec<RigId> {
        (0..n)
            .map(|i| RigId::new(format!("rig-{i:02}")).unwrap())
            .collect()
    }

    fn holding(epoch: u64, deadline: Instant) -> Holding {
        Holding {
            epoch: Epoch::new(epoch),
            deadline,
        }
    }

    #[test]
    fn a_lone_twin_acquires_every_rig_even_before_its_heartbeat_is_read() {
        let me = twin("a");
        let rs = rigs(5);
        let p = plan(&me, &[], &rs, &BTreeMap::new());
        assert_eq!(p.acquire, rs);
        assert!(p.renew.is_empty() && p.release.is_empty());
    }

    #[test]
    fn renews_what_it_keeps_and_releases_what_a_newcomer_wins() {
        let (a, b) = (twin("a"), twin("b"));
        let rs = rigs(40);
        let now = Instant::now();
        // `a` alone held everything; `b` has joined.
        let held: BTreeMap<RigId, Holding> =
            rs.iter().map(|r| (r.clone(), holding(3, now))).collect();
        let p = plan(&a, &[a.clone(), b.clone()], &rs, &held);
        let wanted = assign(&[a.clone(), b.clone()], &rs);
        let to_b: Vec<RigId> = rs.iter().filter(|r| wanted[*r] == b).cloned().collect();
        assert!(!to_b.is_empty() && to_b.len() < rs.len());
        assert!(p.acquire.is_empty());
        assert_eq!(
            p.release.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(),
            to_b
        );
        assert_eq!(p.renew.len() + p.release.len(), rs.len());
        assert!(p.renew.iter().all(|(r, e)| wanted[r] == a && e.get() == 3));
    }

    #[test]
    fn releases_a_held_rig_that_is_no_longer_registered() {
        let me = twin("a");
        let rs = rigs(3);
        let gone = RigId::new("retired").unwrap();
        let held = BTreeMap::from([(gone.clone(), holding(7, Instant::now()))]);
        let p = plan(&me, std::slice::from_ref(&me), &rs, &held);
        assert_eq!(p.release, vec![(gone, Epoch::new(7))]);
        assert_eq!(p.acquire, rs);
    }

    #[test]
    fn finds_the_leases_past_their_deadline_and_the_next_one() {
        let t0 = Instant::now();
        let rs = rigs(3);
        let held = BTreeMap::from([
            (rs[0].clone(), holding(1, t0 + Duration::from_millis(100))),
            (rs[1].clone(), holding(2, t0 + Duration::from_millis(300))),
            (rs[2].clone(), holding(3, t0 + Duration::from_millis(200))),
        ]);
        assert_eq!(
            earliest_deadline(&held),
            Some(t0 + Duration::from_millis(100))
        );
        assert!(overdue(&held, t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(
            overdue(&held, t0 + Duration::from_millis(200)),
            vec![
                (rs[0].clone(), Epoch::new(1)),
                (rs[2].clone(), Epoch::new(3))
            ]
        );
        assert_eq!(earliest_deadline(&BTreeMap::new()), None);
    }
}
