//! `EdgeStats`: the counters and flags the edge exposes through a `tokio::sync::watch`, so the
//! CLI and tests can observe it. Each field has exactly one writing task (noted per field); the
//! watch only publishes snapshots.

use tokio::sync::watch;

/// A snapshot of the edge's health and throughput.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeStats {
    /// Firmware frames decoded (serial task).
    pub frames_in_total: u64,
    /// Samples (per channel) received in `Samples` frames (serial task).
    pub samples_in_total: u64,
    /// Bytes the codec discarded while resynchronising (serial task).
    pub dropped_bytes_total: u64,
    /// Frames with a bad CRC or an undecodable payload (serial task).
    pub bad_frames_total: u64,
    /// True between a `Manifest` and the next silence timeout (serial task).
    pub firmware_online: bool,
    /// Blocks closed by the batcher (acquisition task).
    pub blocks_made_total: u64,
    /// Blocks the broker acknowledged (publisher task).
    pub blocks_published_total: u64,
    /// Samples (per channel) lost for any reason; the ERROR log says why (acquisition and
    /// publisher tasks, via [`StatsHandle::add_samples_dropped`]).
    pub samples_dropped_total: u64,
    /// Blocks waiting for the broker, in memory (publisher task).
    pub queued_blocks: usize,
    /// True between a CONNACK and the connection's loss (publisher task).
    pub mqtt_connected: bool,
    /// Current MQTT session number; 0 before the first connect (publisher task).
    pub session: u64,
}

/// Writer side shared by the tasks; updates are synchronous and never held across `.await`.
#[derive(Debug, Clone)]
pub struct StatsHandle(watch::Sender<EdgeStats>);

impl StatsHandle {
    pub fn new(tx: watch::Sender<EdgeStats>) -> Self {
        Self(tx)
    }

    /// Applies `f` and notifies watchers.
    pub fn update(&self, f: impl FnOnce(&mut EdgeStats)) {
        self.0.send_modify(f);
    }

    pub fn add_samples_dropped(&self, samples: u64) {
        self.update(|s| s.samples_dropped_total += samples);
    }

    pub fn snapshot(&self) -> EdgeStats {
        self.0.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<EdgeStats> {
        self.0.subscribe()
    }
}
