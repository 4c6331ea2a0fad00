//! Jittered exponential backoff, as a pure calculator. Sleeps nowhere: callers ask for the next
//! delay and wait on `tokio::time` themselves.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `min` to `max`, each drawn uniformly from the upper half of the
/// current step ("equal jitter"), so that many edges restarting together spread out while no
/// delay is ever shorter than half a step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// `max` below `min` is treated as `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The delay before the next attempt; grows the step for the one after.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter_ns = rng.random_range(0..=half.as_nanos().min(u128::from(u64::MAX)) as u64);
        (step - half) + Duration::from_nanos(jitter_ns)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn delays_double_stay_in_the_upper_half_and_cap_at_max() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let expected_steps_ms = [100, 200, 400, 800, 1000, 1000];
        for step_ms in expected_steps_ms {
            let d = b.next_delay(&mut rng);
            let step = Duration::from_millis(step_ms);
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn reset_returns_to_the_first_step() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(10));
        for _ in 0..10 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(10));
    }
}
