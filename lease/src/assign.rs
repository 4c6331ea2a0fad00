//! Owns the assignment of rigs to live twins: rendezvous (highest-random-weight) hashing with a
//! hash fixed here, so every twin, on every build and platform, computes the same owner for a
//! rig, and a twin joining or leaving moves only the rigs it wins or held (about 1/N).
//! Pure: no I/O, no clock. The assignment is a wish; the lease in PostgreSQL is the truth.

use std::collections::BTreeMap;

use dtop_proto::RigId;

use crate::TwinId;

/// FNV-1a, 64 bit: offset basis and prime (Fowler, Noll, Vo; draft-eastlake-fnv §2).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Separates the twin id from the rig id in the hashed bytes. 0xFF never occurs in UTF-8, so
/// (`"ab"`, `"c"`) and (`"a"`, `"bc"`) hash different bytes.
const SEPARATOR: u8 = 0xFF;

/// Folds `bytes` into an FNV-1a state.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finaliser. FNV-1a's last bytes reach only the low bits of its state, and
/// rig ids that differ in their last character are the common case; this spreads every input bit
/// over the whole word, which the balance of the weights needs.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The weight of `twin` for `rig`: the twin with the highest weight owns the rig.
///
/// This function is part of the wire contract between twins: two twin versions that weigh
/// differently would each take rigs the other keeps (the leases keep that safe, but the rigs
/// would never settle). Its values are pinned by a test.
pub fn weight(twin: &TwinId, rig: &RigId) -> u64 {
    let mut state = fnv1a(FNV_OFFSET_BASIS, twin.as_str().as_bytes());
    state = fnv1a(state, &[SEPARATOR]);
    state = fnv1a(state, rig.as_str().as_bytes());
    fmix64(state)
}

/// The twin among `twins` that should own `rig`; `None` when there are no twins. Equal weights
/// (astronomically rare) go to the greater twin id, so the answer never depends on the order of
/// `twins`.
pub fn owner_of<'a>(rig: &RigId, twins: &'a [TwinId]) -> Option<&'a TwinId> {
    twins.iter().max_by(|a, b| {
        weight(a, rig)
            .cmp(&weight(b, rig))
            .then_with(|| a.as_str().cmp(b.as_str()))
    })
}

/// The owner of every rig among `twins`; empty when there are no twins.
pub fn assign(twins: &[TwinId], rigs: &[RigId]) -> BTreeMap<RigId, TwinId> {
    rigs.iter()
        .filter_map(|rig| owner_of(rig, twins).map(|twin| (rig.clone(), twin.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn twins(n: usize) -> Vec<TwinId> {
        (0..n)
            .map(|i| TwinId::new(format!("twin-{i}")).unwrap())
            .collect()
    }

    fn rigs(n: usize) -> Vec<RigId> {
        (0..n)
            .map(|i| RigId::new(format!("rig-{i:05}")).unwrap())
            .collect()
    }

    fn count_per_twin(assignment: &BTreeMap<RigId, TwinId>) -> BTreeMap<TwinId, usize> {
        let mut counts = BTreeMap::new();
        for twin in assignment.values() {
            *counts.entry(twin.clone()).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // draft-eastlake-fnv, appendix C (FNV-1a, 64 bit).
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn weights_are_pinned_so_twins_of_different_builds_agree() {
        // Computed independently (Python, the same FNV-1a + fmix64 over b"twin-a\xffrig-1").
        let w = weight(
            &TwinId::new("twin-a").unwrap(),
            &RigId::new("rig-1").unwrap(),
        );
        assert_eq!(w, 0x406e_2c78_b5dc_46fd);
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_of_the_twins() {
        let mut ts = twins(5);
        let rs = rigs(200);
        let forward = assign(&ts, &rs);
        ts.reverse();
        assert_eq!(assign(&ts, &rs), forward);
        ts.swap(1, 3);
        assert_eq!(assign(&ts, &rs), forward);
        assert_eq!(forward.len(), rs.len());
    }

    #[test]
    fn no_twins_own_nothing() {
        assert!(assign(&[], &rigs(10)).is_empty());
        assert_eq!(owner_of(&rigs(1)[0], &[]), None);
    }

    #[test]
    fn a_thousand_rigs_spread_over_three_twins_within_15_percent() {
        let ts = twins(3);
        let counts = count_per_twin(&assign(&ts, &rigs(1000)));
        assert_eq!(counts.len(), 3);
        let fair = 1000.0 / 3.0;
        for (twin, &n) in &counts {
            assert!(
                (n as f64 - fair).abs() <= 0.15 * fair,
                "{twin} owns {n} of 1000 rigs, fair share {fair:.0}: {counts:?}"
            );
        }
    }

    #[test]
    fn ten_thousand_rigs_spread_over_ten_twins_within_10_percent() {
        // Binomial(10 000, 0.1): σ = 30 rigs, so ±100 is over 3σ for a fair hash.
        let counts = count_per_twin(&assign(&twins(10), &rigs(10_000)));
        assert_eq!(counts.len(), 10);
        for (twin, &n) in &counts {
            assert!((900..=1100).contains(&n), "{twin} owns {n}: {counts:?}");
        }
    }

    #[test]
    fn a_joining_twin_takes_about_a_quarter_and_nothing_else_moves() {
        let rs = rigs(1000);
        let before = assign(&twins(3), &rs);
        let after = assign(&twins(4), &rs);
        let newcomer = TwinId::new("twin-3").unwrap();
        let mut moved = 0;
        for (rig, old) in &before {
            let new = &after[rig];
            if new != old {
                assert_eq!(new, &newcomer, "{rig:?} moved between old twins");
                moved += 1;
            }
        }
        // Fair share 250; ±15 %.
        assert!((212..=288).contains(&moved), "{moved} of 1000 rigs moved");
    }

    #[test]
    fn a_leaving_twin_hands_over_only_its_own_rigs() {
        let rs = rigs(1000);
        let all = twins(4);
        let before = assign(&all, &rs);
        let gone = &all[1];
        let rest: Vec<TwinId> = all.iter().filter(|t| *t != gone).cloned().collect();
        let after = assign(&rest, &rs);
        for (rig, old) in &before {
            if old == gone {
                assert_ne!(&after[rig], gone);
            } else {
                assert_eq!(&after[rig], old, "{rig:?} moved though its twin stayed");
            }
        }
    }
}
