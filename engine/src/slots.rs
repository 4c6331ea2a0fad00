//! A worker's cores and its claiming ahead: owns the semaphore of `concurrency` cores that
//! gates computations, and the decision whether the worker's River client may claim
//! `prefetch` jobs beyond them. Pure apart from the semaphore; `jobs.rs` applies the
//! decisions to the River client.
//!
//! Claiming ahead hides the claim's round trips between short chunks: the job claimed ahead
//! reads its inputs while another computes and starts the moment that one ends. Behind a long
//! chunk it would hold a job back from idle workers (River claims as many jobs as it has free
//! slots, with no per-fetch limit), so the worker claims ahead only while its chunks are
//! short: on after a computation shorter than `wait`, off (and the waiting job given back)
//! when a job claimed ahead has waited `wait` for a core.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The cores of one worker process.
#[derive(Debug, Clone)]
pub(crate) struct CoreSlots {
    cores: Arc<Semaphore>,
    concurrency: u32,
    prefetch: u32,
    /// How long a job waits for a core before it is given back.
    wait: Duration,
    /// Whether River's slots are now `concurrency + prefetch` (else `concurrency`).
    ahead: Arc<AtomicBool>,
}

/// A core for one computation, released when dropped.
#[derive(Debug)]
pub(crate) struct Core {
    _permit: OwnedSemaphorePermit,
}

impl CoreSlots {
    /// Starts without claiming ahead, until a short chunk has been seen.
    pub(crate) fn new(concurrency: u32, prefetch: u32, wait: Duration) -> Self {
        Self {
            cores: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
            prefetch,
            wait,
            ahead: Arc::new(AtomicBool::new(false)),
        }
    }

    /// River's job slots to start with.
    pub(crate) fn initial_slots(&self) -> usize {
        self.concurrency as usize
    }

    /// A core, or `None` when none came free within the wait: the job was claimed ahead of
    /// a long computation and goes back to the queue.
    pub(crate) async fn take(&self) -> Option<Core> {
        match tokio::time::timeout(self.wait, self.cores.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(Core { _permit: permit }),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// After a job was given back: River's new slot count if it changes (claiming ahead
    /// stops).
    pub(crate) fn after_give_back(&self) -> Option<usize> {
        self.ahead
            .swap(false, Ordering::Relaxed)
            .then_some(self.concurrency as usize)
    }

    /// After a computation of `took`: River's new slot count if it changes (claiming ahead
    /// starts when computations are short against the wait).
    pub(crate) fn after_compute(&self, took: Duration) -> Option<usize> {
        if self.prefetch == 0 || took >= self.wait {
            return None;
        }
        (!self.ahead.swap(true, Ordering::Relaxed))
            .then_some((self.concurrency + self.prefetch) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test(start_paused = true)]
    async fn a_free_core_is_taken_at_once_and_released_on_drop() {
        let slots = CoreSlots::new(1, 1, WAIT);
        let t0 = Instant::now();
        let first = slots.take().await;
        assert!(first.is_some());
        assert_eq!(t0.elapsed(), Duration::ZERO);
        drop(first);
        assert!(slots.take().await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_claimed_ahead_starts_when_the_core_comes_free() {
        let slots = CoreSlots::new(1, 1, WAIT);
        let running = slots.take().await;
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move {
                let t0 = Instant::now();
                (slots.take().await.is_some(), t0.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(running);
        let (got, waited) = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(got);
        assert_eq!(waited, Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_behind_a_long_one_is_given_back_after_the_wait() {
        let slots = CoreSlots::new(1, 1, WAIT);
        let _long = slots.take().await;
        let t0 = Instant::now();
        assert!(slots.take().await.is_none());
        assert_eq!(t0.elapsed(), WAIT);
    }

    #[test]
    fn claiming_ahead_starts_after_a_short_computation_and_stops_after_a_give_back() {
        let slots = CoreSlots::new(2, 1, WAIT);
        assert_eq!(slots.initial_slots(), 2);
        // Long computations never turn it on; a give-back while off changes nothing.
        assert_eq!(slots.after_compute(WAIT), None);
        assert_eq!(slots.after_give_back(), None);
        // A short one does, once.
        assert_eq!(slots.after_compute(Duration::from_millis(10)), Some(3));
        assert_eq!(slots.after_compute(Duration::from_millis(10)), None);
        // A long one alone does not turn it off; a give-back does, once.
        assert_eq!(slots.after_compute(Duration::from_secs(5)), None);
        assert_eq!(slots.after_give_back(), Some(2));
        assert_eq!(slots.after_give_back(), None);
        assert_eq!(slots.after_compute(Duration::from_millis(1)), Some(3));
    }

    #[test]
    fn without_prefetch_the_slots_never_change() {
        let slots = CoreSlots::new(1, 0, WAIT);
        assert_eq!(slots.after_compute(Duration::ZERO), None);
        assert_eq!(slots.after_give_back(), None);
        assert_eq!(slots.initial_slots(), 1);
    }
}
