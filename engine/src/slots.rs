//! A worker's cores: the gate between the jobs its River client has claimed (`concurrency +
//! prefetch`) and the ones computing (`concurrency`). Owns nothing but the semaphore; a job
//! holds its [`Slot`] for its computation only, so a claimed-ahead job reads its inputs while
//! another computes and starts the moment that one ends, before it records.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The cores of one worker process.
#[derive(Debug, Clone)]
pub(crate) struct CoreSlots {
    cores: Arc<Semaphore>,
    /// How long a job waits for a core before it runs beside the others.
    wait: Duration,
}

/// Where a job computes.
#[derive(Debug)]
pub(crate) enum Slot {
    /// On one of the worker's cores, released when dropped.
    Core {
        /// Held until the computation ends.
        _permit: OwnedSemaphorePermit,
    },
    /// Beside them: no core came free within the wait (a long chunk is running), and
    /// holding a claimed chunk back any longer would keep it from an idle worker elsewhere.
    Beside,
}

impl CoreSlots {
    pub(crate) fn new(cores: u32, wait: Duration) -> Self {
        Self {
            cores: Arc::new(Semaphore::new(cores as usize)),
            wait,
        }
    }

    /// A core, or [`Slot::Beside`] after the wait.
    pub(crate) async fn take(&self) -> Slot {
        match tokio::time::timeout(self.wait, self.cores.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Slot::Core { _permit: permit },
            // The semaphore is never closed; time out and closed both mean "run beside".
            Ok(Err(_)) | Err(_) => Slot::Beside,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_free_core_is_taken_at_once_and_released_on_drop() {
        let slots = CoreSlots::new(1, Duration::from_millis(50));
        let t0 = Instant::now();
        let first = slots.take().await;
        assert!(matches!(first, Slot::Core { .. }));
        assert_eq!(t0.elapsed(), Duration::ZERO);
        drop(first);
        assert!(matches!(slots.take().await, Slot::Core { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_claimed_ahead_starts_when_the_core_comes_free() {
        let slots = CoreSlots::new(1, Duration::from_millis(50));
        let running = slots.take().await;
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move {
                let t0 = Instant::now();
                (slots.take().await, t0.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(running);
        let (slot, waited) = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(slot, Slot::Core { .. }));
        assert_eq!(waited, Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_runs_beside_a_long_one_after_the_wait() {
        let slots = CoreSlots::new(1, Duration::from_millis(50));
        let _long = slots.take().await;
        let t0 = Instant::now();
        assert!(matches!(slots.take().await, Slot::Beside));
        assert_eq!(t0.elapsed(), Duration::from_millis(50));
    }
}
