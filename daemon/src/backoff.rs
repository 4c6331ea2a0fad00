//! Jittered exponential backoff, as a pure calculator shared by every daemon's reconnects and
//! retries (MQTT, storage, the studies database). Sleeps nowhere: the caller supplies the
//! random source and waits on `tokio::time` itself.

use std::time::Duration;

use rand::Rng;

/// Successive waits `d_n` drawn uniformly from `[c_n / 2, c_n]`, `c_n = min(initial · 2^n, max)`
/// ("equal jitter"): the random half keeps many processes restarting together from hammering
/// a recovering server in lockstep, the fixed half keeps a wait from collapsing to nothing.
///
/// It replaced two copies, the twin's (the same code) and the edge's (`Backoff::new(min, max)`,
/// the same semantics: steps doubling from `min` to `max`, each wait uniform in the upper half
/// of its step). Two details differed and this one is kept: for a ceiling an odd number of ns
/// long the edge's lowest wait was 1 ns longer (`c − ⌊c/2⌋` against `⌊c/2⌋`), which no
/// reconnect can tell; and the edge doubled its step with a multiplication that panics on
/// overflow, where this one saturates.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// `max` below `initial` is treated as `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// Upper bound of the next wait, without jitter.
    pub fn ceiling(&self) -> Duration {
        // 2^31 times anything is past any sane max; saturate instead of overflowing.
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next wait; each call doubles the ceiling up to the max.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread_ns = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.random_range(0..=spread_ns))
    }

    /// Back to the first wait, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Consecutive failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn waits_double_up_to_the_max_and_stay_within_half_to_full_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut rng = StdRng::seed_from_u64(7);
        for ceiling_ms in [100, 200, 400, 800, 1000, 1000, 1000] {
            assert_eq!(b.ceiling(), Duration::from_millis(ceiling_ms));
            let d = b.next_delay(&mut rng);
            assert!(
                d >= Duration::from_millis(ceiling_ms / 2)
                    && d <= Duration::from_millis(ceiling_ms),
                "{d:?}"
            );
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn jitter_actually_varies_the_waits() {
        let mut rng = StdRng::seed_from_u64(1);
        let waits: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay(&mut rng)
            })
            .collect();
        assert!(waits.len() > 10);
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(u64::MAX / 2), Duration::MAX);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            b.next_delay(&mut rng);
        }
        assert!(b.ceiling() <= Duration::MAX);
    }
}
