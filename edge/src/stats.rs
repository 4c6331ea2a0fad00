//! `EdgeStats`: the counters and flags the edge exposes through a `tokio::sync::watch`, so the
//! CLI and tests can observe it. Each field has exactly one writing task (noted per field); the
//! watch only publishes snapshots.

use tokio::sync::watch;

use crate::safety::{LatchCause, SafetyState};

/// A snapshot of the edge's health and throughput.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// True once the broker granted the drive subscription on the current connection
    /// (publisher task).
    pub drive_subscribed: bool,
    /// Messages that arrived on the drive topic, good or bad (publisher task).
    pub drives_received_total: u64,
    /// Drive messages that were oversized, did not decode, or named another rig (publisher task).
    pub drives_bad_total: u64,
    /// Good drives lost because the serial task's queue was full or gone (publisher task).
    pub drives_dropped_total: u64,
    /// Drives the safety envelope applied, clamped or not (serial task).
    pub drives_applied_total: u64,
    /// Drives the safety envelope refused: latched, non-finite, no actuator or no sample clock
    /// (serial task).
    pub drives_refused_total: u64,
    /// Times the actuator went to its safe state for want of drives (serial task).
    pub drive_timeouts_total: u64,
    /// Safety envelope state (serial task).
    pub safety_state: SafetyState,
    /// Why the envelope is latched, while it is (serial task).
    pub latch_cause: Option<LatchCause>,
    /// Latches by a fault (clock or actuator link lost), not by a safety stop (serial task).
    pub fault_latches_total: u64,
    /// The actuator is enabled: the last `ActuatorCommand` sent to the firmware enabled it
    /// (serial task), or, for a `[modbus.actuator]`, the last write the device acknowledged
    /// did (its bus task).
    pub actuator_enabled: bool,
    /// Force of that command or acknowledged write, N; 0 before any (same writer).
    pub last_applied_force_n: f64,
    /// A `[modbus.actuator]`'s last write failed: what the device does now is unknown (its bus
    /// task). The status then reports `actuator_enabled` and `last_applied_force_n` as null.
    pub actuator_write_failing: bool,
    /// `ActuatorCommand`s sent to the firmware, the shutdown one included (serial task).
    pub actuator_commands_total: u64,
    /// Modbus counters per device name (each device's bus task).
    pub modbus: std::collections::BTreeMap<String, crate::modbus::ModbusDeviceStats>,
    /// Version of the last controller params applied to the inner loop (0 = none yet).
    pub inner_loop_version: u64,
    /// Whether the edge-hosted inner loop is running a law.
    pub inner_loop_running: bool,
    /// Controller params refused (stale version, wrong channels, bad sizes…).
    pub inner_loop_params_refused_total: u64,
    /// Twin drives ignored because the edge-hosted loop owns the actuator.
    pub drives_ignored_total: u64,
    /// The highest owner epoch seen for this rig, 0 while no coordinator has been (publisher
    /// task; `crate::fence`).
    pub owner_epoch: u64,
    /// Twin messages refused for an older owner epoch (or epoch 0 after a coordinator's), by
    /// kind: `params`, `drive`, `watermark` (publisher task).
    pub fenced_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Operator commands applied (or latched), refused and expired (publisher).
    pub commands_applied_total: u64,
    pub commands_refused_total: u64,
    pub commands_expired_total: u64,
    /// When this process started, ns since the Unix epoch: every counter here counts from it
    /// (they start at zero in each process; the spool and the twin keep the rig's totals).
    pub started_at_ns: u64,
    /// Samples (per channel) in blocks handed to the publisher (publisher task).
    pub samples_produced_total: u64,
    /// Samples in blocks the twin's persisted watermark covered: stored in InfluxDB
    /// (publisher task).
    pub samples_stored_total: u64,
    /// Samples released from the spool on the broker's PUBACK alone, because the watermark
    /// waits for a seq this edge lost (publisher task).
    pub samples_released_unconfirmed_total: u64,
    /// Samples given up, by reason (`spool_full`, `paused`, `spool_error`, `crash`,
    /// `evicted_unconfirmed`, ...); every reason but `evicted_unconfirmed` also counts in
    /// `samples_dropped_total` (publisher task).
    pub samples_dropped_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Blocks given up for sure (every reason but `evicted_unconfirmed`), by reason
    /// (publisher task).
    pub blocks_dropped_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Seqs declared `skipped` at start: the previous run's reservation it did not use (or
    /// numbered but never spooled before a crash); not counted as lost blocks (publisher task).
    pub seqs_skipped_total: u64,
    /// Samples (per channel) the firmware produced that no block carries, declared on the next
    /// block (`SampleBlock.samples_lost_before`), by reason: `edge_down`, `not_delivered`,
    /// `firmware_restart` (acquisition task).
    pub samples_unread_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// The next block seq the acquisition task will number (acquisition task).
    pub next_seq: u64,
    /// The most recent seq ranges given up for sure, oldest first, at most
    /// [`MAX_LOST_RANGES`] (publisher task).
    pub lost_seq_ranges: Vec<(u64, u64)>,
    /// Blocks in the spool not yet covered by the watermark (publisher task).
    pub backlog_blocks: usize,
    /// Rig time in those blocks, s (publisher task).
    pub backlog_s: f64,
    /// Spool bytes of those blocks (publisher task).
    pub backlog_bytes: u64,
    /// The twin's last persisted watermark for this rig (publisher task).
    pub persisted_seq: Option<u64>,
    /// Backfill blocks replayed from the spool (publisher task).
    pub blocks_replayed_total: u64,
    /// Whether blocks are spooled at all (false: the spool could not be opened; publisher).
    pub spool_ok: bool,
    /// Lost seq ranges declared to the twin (`rig/{rig}/loss`) that its watermark has not
    /// passed yet (publisher task).
    pub lost_ranges_uncovered: usize,
    /// `SeqLoss` declarations handed to MQTT, repeats included (publisher task).
    pub loss_declarations_total: u64,
}

/// Lost seq ranges kept in [`EdgeStats::lost_seq_ranges`].
pub const MAX_LOST_RANGES: usize = 64;

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
