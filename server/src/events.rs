//! Owns the one study-change poller: it asks the engine for changes since the last revision it
//! saw, at a fixed interval, and fans each changed record out on a broadcast channel to every
//! SSE stream and the MQTT publisher, so N watchers cost one database query per interval.
//! Knows nothing about HTTP or MQTT.

use std::sync::Arc;
use std::time::Duration;

use dtop_engine::{Engine, StudyRecord};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Records a slow subscriber may fall behind before it is told it lagged.
const CHANNEL_CAPACITY: usize = 1024;

/// The sending side of study changes; subscribe to receive them.
#[derive(Debug, Clone)]
pub struct Changes {
    tx: broadcast::Sender<Arc<StudyRecord>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self::new()
    }
}

impl Changes {
    /// A channel with no subscriber yet.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self { tx }
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StudyRecord>> {
        self.tx.subscribe()
    }

    /// Fans `record` out; nobody listening is fine.
    pub fn send(&self, record: StudyRecord) {
        let _ = self.tx.send(Arc::new(record));
    }
}

/// Polls `engine` every `interval` until `shutdown`. The first poll starts at revision 0, so
/// at start every study's current record is sent once (the MQTT publisher re-publishes each
/// retained state). While the database is away it keeps its revision and tries again.
pub async fn run_poller(
    engine: Engine,
    interval: Duration,
    changes: Changes,
    shutdown: CancellationToken,
) {
    let mut after = 0u64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let polled = tokio::select! {
            () = shutdown.cancelled() => return,
            polled = tokio::time::timeout(interval.max(Duration::from_secs(5)), engine.changes_since(after)) => polled,
        };
        match polled {
            Ok(Ok((records, highest))) => {
                if failing {
                    debug!("Study change poller reaches the database again.");
                    failing = false;
                }
                for record in records {
                    changes.send(record);
                }
                after = after.max(highest);
            }
            Ok(Err(e)) => {
                if !failing {
                    warn!(error = %e, "Study change poller cannot read changes; retrying.");
                    failing = true;
                }
            }
            Err(_) => {
                if !failing {
                    warn!("Study change poller timed out; retrying.");
                    failing = true;
                }
            }
        }
    }
}
