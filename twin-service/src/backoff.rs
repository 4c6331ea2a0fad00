//! Jittered exponential backoff, shared by MQTT reconnects and storage retries.
//!
//! Pure: the caller supplies the random source and does the sleeping.

use std::time::Duration;

use rand::Rng;

use crate::config::BackoffConfig;

/// Successive waits `d_n` drawn uniformly from `[c_n / 2, c_n]`, `c_n = min(initial · 2^n, max)`.
/// The random half keeps many twins (or many retries) from hammering a recovering server in
/// lockstep; the fixed half keeps the wait from collapsing to nothing.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            initial: Duration::from_millis(config.initial_ms),
            max: Duration::from_millis(config.max_ms.max(config.initial_ms)),
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
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn waits_double_up_to_the_max_and_stay_within_half_to_full_ceiling() {
        let mut b = Backoff::new(BackoffConfig {
            initial_ms: 100,
            max_ms: 1000,
        });
        let mut rng = StdRng::seed_from_u64(7);
        let ceilings_ms = [100, 200, 400, 800, 1000, 1000, 1000];
        for ceiling_ms in ceilings_ms {
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
                Backoff::new(BackoffConfig {
                    initial_ms: 1000,
                    max_ms: 1000,
                })
                .next_delay(&mut rng)
            })
            .collect();
        assert!(waits.len() > 10);
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(BackoffConfig {
            initial_ms: u64::MAX / 2,
            max_ms: u64::MAX,
        });
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            b.next_delay(&mut rng);
        }
        assert!(b.ceiling() <= Duration::from_millis(u64::MAX));
    }
}
