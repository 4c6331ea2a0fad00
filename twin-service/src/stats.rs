//! What the twin reports about itself ([`TwinStats`], published on a `watch` channel) and the
//! pure one-second live window behind the per-rig rates and RMS values.
//!
//! Owns no task; each number is produced by the task that owns the underlying state (rig
//! actors, the storage writer, the MQTT router) and merged by the router.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use dtop_proto::RigId;
use dtop_proto::v1::ChannelKind;
use serde::Serialize;
use tokio::time::Instant;

use crate::ingest::{ChannelInfo, Manifest, RejectReason};
use crate::lineproto::Column;

/// Length of the live window behind rates and RMS values.
pub const LIVE_WINDOW: Duration = Duration::from_secs(1);
/// RMS values are withdrawn when no live block arrived for this long.
pub const LIVE_STALE_AFTER: Duration = Duration::from_secs(2);
/// Bound on samples kept per channel for the RMS (one second at 100 kHz).
pub const MAX_RMS_SAMPLES: usize = 100_000;
/// Bound on remembered block arrivals (tiny blocks at a high rate).
const MAX_ARRIVALS: usize = 10_000;

/// Snapshot of the whole twin.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TwinStats {
    /// Where blocks are stored, in words for an operator (see `store::Sink::describe`).
    pub storage: String,
    /// Whether the MQTT session is up.
    pub mqtt_connected: bool,
    /// Failed MQTT connection attempts and dropped connections.
    pub mqtt_connection_errors_total: u64,
    pub rigs: BTreeMap<RigId, RigStats>,
    /// Refused frames by reason, all rigs together (`frames_rejected_total{reason}`).
    pub frames_rejected_total: BTreeMap<RejectReason, u64>,
    pub store: StoreStats,
    /// Catalogue model messages refused before reaching any rig (unparsable, not usable, not
    /// physical), by reason (`crate::adopt`).
    pub model_messages_refused_total: BTreeMap<crate::adopt::RefusalReason, u64>,
}

impl TwinStats {
    /// Sum of [`TwinStats::frames_rejected_total`] over reasons.
    pub fn frames_rejected_sum(&self) -> u64 {
        self.frames_rejected_total.values().sum()
    }
}

/// What the twin publishes on `dtop/v1/twin/{rig}/status` (retained JSON, every second): one
/// rig's ingest, storage and loss accounting, for dashboards and audits without a metrics
/// scraper. The edge's own accounting (samples produced, its spool) is on the rig's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RigStatus<'a> {
    pub rig: &'a str,
    /// Wall clock of the snapshot, ns since the Unix epoch.
    pub timestamp_ns: u64,
    pub online: bool,
    pub session: Option<u64>,
    pub estimating: bool,
    pub samples_per_s: f64,
    pub blocks_received: u64,
    /// Blocks not received between the seqs that were, and not declared lost by the edge.
    pub blocks_missing: u64,
    /// Blocks the edge declared lost for good (see `stored` for them by reason).
    pub blocks_declared_lost: u64,
    pub blocks_duplicate: u64,
    /// Sample blocks this twin dropped while it did not own the rig (see
    /// [`RigStats::blocks_not_owned`]), and the owner epoch it owns the rig at.
    pub blocks_not_owned: u64,
    pub owner_epoch: u64,
    /// Blocks and samples stored apart because their times were stored already from another
    /// edge clock, by reason (see [`RigStats::blocks_stored_apart`]).
    pub blocks_stored_apart: &'a BTreeMap<String, u64>,
    pub samples_stored_apart: &'a BTreeMap<String, u64>,
    /// Where blocks are stored, in words.
    pub storage: &'a str,
    pub storage_failing: bool,
    /// Stored, dropped, declared lost, backlog and watermark; absent before the first block.
    /// With several storage nodes, combined over them (`store::nodes::combine_stats`).
    pub stored: Option<&'a RigStoreStats>,
    /// With `[[storage.nodes]]`: each node's state and this rig's accounting on it, in name
    /// order; absent with a single storage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub storage_nodes: Vec<NodeRigStatus<'a>>,
    /// The DVF gain limit the twin enforces (critical gain, fraction, highest gain, N·s/m);
    /// null with `dvf_limit_unavailable` saying why.
    pub dvf_limit: Option<crate::control::DvfLimit>,
    pub dvf_limit_unavailable: Option<&'a str>,
    /// The model the rig's estimator runs on: `{"source": "config"}` or `{"source":
    /// "catalogue", "name", "version", "since_sample"}` (`crate::adopt`).
    pub model: &'a crate::adopt::ModelInUse,
    /// The catalogue model the rig follows, and a version waiting for the next block boundary.
    pub model_follows: Option<&'a str>,
    pub model_pending: Option<&'a str>,
    /// The latest controller a model switch stopped, and why; null if none was.
    pub controller_stopped: Option<&'a crate::adopt::ControllerStopped>,
}

impl TwinStats {
    /// The status of `rig` at `timestamp_ns`, if the twin knows the rig.
    pub fn rig_status<'a>(&'a self, rig: &'a RigId, timestamp_ns: u64) -> Option<RigStatus<'a>> {
        let r = self.rigs.get(rig)?;
        Some(RigStatus {
            rig: rig.as_str(),
            timestamp_ns,
            online: r.online,
            session: r.session,
            estimating: r.estimating,
            samples_per_s: r.samples_per_s,
            blocks_received: r.blocks_received,
            blocks_missing: r.blocks_missing,
            blocks_declared_lost: r.blocks_declared_lost,
            blocks_duplicate: r.blocks_duplicate,
            blocks_not_owned: r.blocks_not_owned,
            owner_epoch: r.owner_epoch,
            blocks_stored_apart: &r.blocks_stored_apart,
            samples_stored_apart: &r.samples_stored_apart,
            storage: &self.storage,
            storage_failing: self.store.storage_failing,
            stored: self.store.rigs.get(rig),
            storage_nodes: self
                .store
                .nodes
                .iter()
                .map(|(node, s)| NodeRigStatus {
                    node,
                    storage_failing: s.storage_failing,
                    last_error: s.last_error.as_deref(),
                    stored: s.rigs.get(rig),
                })
                .collect(),
            dvf_limit: r.dvf_limit,
            dvf_limit_unavailable: r.dvf_limit_unavailable.as_deref(),
            model: &r.adoption.model,
            model_follows: r.adoption.follows.as_deref(),
            model_pending: r.adoption.pending.as_deref(),
            controller_stopped: r.adoption.controller_stopped.as_ref(),
        })
    }
}

/// One storage node's part of a rig's status (`RigStatus::storage_nodes`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRigStatus<'a> {
    /// The node's name (`[[storage.nodes]] name`).
    pub node: &'a str,
    /// Whether the node's last write failed (its batches then wait in its own spool).
    pub storage_failing: bool,
    pub last_error: Option<&'a str>,
    /// The rig's stored, dropped (by reason), backlog and watermark on this node.
    pub stored: Option<&'a RigStoreStats>,
}

/// One rig, as seen by its actor and the storage writer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RigStats {
    /// Session of the latest accepted birth.
    pub session: Option<u64>,
    /// Born and not dead since.
    pub online: bool,
    /// Sample instants received over the last second of wall time, all streams together;
    /// backfilled blocks are not live and not counted.
    pub samples_per_s: f64,
    /// Per channel of the latest manifest, with the RMS of its last second of live samples.
    pub channels: Vec<ChannelLive>,
    /// RMS of the acceleration channels over the last second of live samples, by floor, m/s².
    pub floor_accel_rms_m_s2: BTreeMap<u32, f64>,
    /// Blocks that passed validation, duplicates included.
    pub blocks_received: u64,
    /// Blocks whose lines storage acknowledged.
    pub blocks_stored: u64,
    /// Blocks currently missing (seq gaps not filled yet, nor declared lost by the edge).
    pub blocks_missing: u64,
    /// Blocks received more than once and not stored again.
    pub blocks_duplicate: u64,
    /// Blocks the edge declared lost for good that have not arrived (not counted missing).
    pub blocks_declared_lost: u64,
    /// Lines of this rig storage acknowledged.
    pub lines_written: u64,
    /// Highest seq such that it and every seq below it since tracking began were received.
    pub highest_contiguous_seq: Option<u64>,
    /// Blocks held until the rig's birth arrives.
    pub blocks_waiting_for_birth: usize,
    /// Refused frames of this rig, by reason.
    pub frames_rejected: BTreeMap<RejectReason, u64>,
    /// Samples the rig's firmware produced that the edge declared no block carries
    /// (`SampleBlock.samples_lost_before`), by reason (`edge_down`, `not_delivered`,
    /// `firmware_restart`); counted once per block this twin received.
    pub samples_unread_at_edge: BTreeMap<String, u64>,
    /// Whether the latest session's manifest fits the structural model, so its state is
    /// estimated and published.
    pub estimating: bool,
    /// The DVF gain limit this twin enforces on the rig's actuator; `None` with
    /// [`RigStats::dvf_limit_unavailable`] saying why.
    pub dvf_limit: Option<crate::control::DvfLimit>,
    /// Why no DVF gain is accepted (no birth yet, control disabled, no actuator...).
    pub dvf_limit_unavailable: Option<String>,
    /// Estimated states dropped because the MQTT publisher was behind.
    pub twin_states_dropped: u64,
    /// Blocks stored apart (`dtop_samples_overlap`) because `dtop_samples` already held
    /// samples of another edge clock at their times, by reason (`other_session`,
    /// `same_session`; see `crate::overlap`). Stored, not lost: also in
    /// `blocks_stored`.
    pub blocks_stored_apart: BTreeMap<String, u64>,
    /// Sample instants of those blocks, by reason.
    pub samples_stored_apart: BTreeMap<String, u64>,
    /// Mode tracking's counts (`[tracking]`); `None` while the rig's modes are not tracked.
    pub tracking: Option<crate::tracking::TrackingCounters>,
    /// The catalogue model this rig follows and runs on, its switches and refusals, and the
    /// controllers a switch stopped (`crate::adopt`).
    pub adoption: crate::adopt::AdoptionStats,
    /// Whether this twin owns the rig (`crate::owner`; always without a lease coordinator).
    pub owned: bool,
    /// The owner epoch it owns the rig at, or lost it at (0: no coordinator).
    pub owner_epoch: u64,
    /// Sample blocks dropped because another twin (or nobody yet) owned the rig: its owner
    /// stores them, and the edge replays what was not persisted to the next owner.
    pub blocks_not_owned: u64,
    /// Takeovers of the rig by this twin, by outcome: `continued` (the previous owner's run
    /// restored from storage and continued) or why a new run started instead
    /// (`crate::rig`, ARCHITECTURE.md "Twins sharing the rigs").
    pub takeovers: BTreeMap<String, u64>,
    /// Seqs a continued run skipped while folding the edge's replay in order, because they
    /// did not arrive in time (the estimator bridged the gap, as live).
    pub takeover_gaps_skipped: u64,
}

/// One channel's live view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelLive {
    pub id: u32,
    pub name: String,
    pub kind: ChannelKind,
    pub unit: String,
    pub floor: u32,
    /// RMS over the last second of live samples, in `unit`; `None` when no recent live data.
    pub rms: Option<f64>,
}

/// What the storage writer reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreStats {
    /// Lines storage acknowledged.
    pub lines_written_total: u64,
    /// Batches storage acknowledged.
    pub batches_written_total: u64,
    /// Failed write attempts (each retry counts).
    pub write_errors_total: u64,
    /// Lines storage refused as malformed (4xx other than 429); they are not retried.
    pub lines_rejected_total: u64,
    /// Lines dropped because shutdown's drain timeout expired before storage accepted them.
    pub lines_dropped_total: u64,
    /// Lines buffered or being retried.
    pub lines_pending: u64,
    /// Sealed batches waiting in memory and in the disk spool.
    pub batches_in_memory: u64,
    pub batches_spooled: u64,
    /// Bytes the disk spool takes (0 without one).
    pub spool_bytes: u64,
    /// Whether the last storage write failed (batches go to the disk spool until one succeeds).
    pub storage_failing: bool,
    /// Per rig: what storage acknowledged, what was lost and why, what is waiting.
    pub rigs: BTreeMap<RigId, RigStoreStats>,
    /// The latest write failure, for operators (with several nodes: the failing node's,
    /// named).
    pub last_error: Option<String>,
    /// With `[[storage.nodes]]`: each node's own stats, by node name (the fields above then
    /// combine them, `store::nodes::combine_stats`). Empty with a single storage.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, StoreStats>,
}

/// Per-rig storage counters: the loss accounting an operator audits.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RigStoreStats {
    /// Blocks whose lines storage acknowledged (2xx), replays included.
    pub blocks_stored: u64,
    pub lines_written: u64,
    /// Sample instants of those blocks.
    pub samples_stored: u64,
    /// Blocks storage acknowledged again (a replay of a seq at or below the watermark).
    pub blocks_duplicate_stored: u64,
    /// Blocks made while this twin owned the rig but dropped before storage because it lost
    /// the rig first (`store::writer`); the next owner stores them from the edge's replay.
    pub blocks_fenced: u64,
    /// Blocks that will never be stored by this twin, by reason (`queue_full`, `spool_full`,
    /// `rejected`, `shutdown_drain`, `spool_error`).
    pub blocks_dropped: BTreeMap<String, u64>,
    /// Sample instants of those blocks, by reason.
    pub samples_dropped: BTreeMap<String, u64>,
    /// Rig time of the blocks waiting for storage (batch, memory and disk spool), s.
    pub backlog_s: f64,
    /// The persisted watermark: every block with a seq up to it is acknowledged by storage,
    /// or was declared lost by the edge (`blocks_lost_at_edge`).
    pub persisted_seq: Option<u64>,
    /// Blocks the edge declared lost for good (`SeqLoss` on `rig/{rig}/loss`) and the
    /// watermark may pass, by the edge's reason (`spool_full`, `paused`, `crash`, ...). Each
    /// seq counts once, however often the edge repeats the declaration, and stops counting if
    /// storage acknowledges it after all (`loss_blocks_stored_after_all`).
    pub blocks_lost_at_edge: BTreeMap<String, u64>,
    /// Sample instants of those blocks, by reason, as the edge counted them (0 for `crash`
    /// and `spool_corrupt`, whose size the edge does not know).
    pub samples_lost_at_edge: BTreeMap<String, u64>,
    /// Seqs the edge declared `skipped` (`SeqLoss` reason `LOSS_REASON_SKIPPED`): reserved by
    /// a run that crashed and never used, or numbered but never spooled; no sample count. Not
    /// in `blocks_lost_at_edge`: most carried no data. Each seq counts once, and stops
    /// counting if storage acknowledges it after all.
    pub seqs_skipped_at_edge: u64,
    /// Loss declarations received, repeats included.
    pub loss_declarations_total: u64,
    /// Seqs declared lost that storage had acknowledged (the data is there; ignored).
    pub loss_blocks_already_stored: u64,
    /// Blocks declared lost that storage acknowledged later (an `evicted_unconfirmed` block
    /// that was still on its way); taken off `blocks_lost_at_edge`.
    pub loss_blocks_stored_after_all: u64,
    /// Declarations not applied because the rig already has the most separate lost ranges
    /// waiting (`store::persisted::MAX_LOST_RANGES`); the edge repeats them later.
    pub loss_declarations_refused: u64,
}

/// A block's arrival, for the rate.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at: Instant,
    /// Sample time the block covers.
    span: Duration,
    samples: u64,
}

/// Last second of live samples of one channel.
#[derive(Debug, Clone)]
struct ChannelRing {
    info: ChannelInfo,
    values: VecDeque<f64>,
    capacity: usize,
}

/// Rolling one-second view of a rig's live (non-backfill) blocks. Pure: time is passed in.
#[derive(Debug, Clone, Default)]
pub struct LiveWindow {
    arrivals: VecDeque<Arrival>,
    channels: BTreeMap<u32, ChannelRing>,
    last_live: Option<Instant>,
}

impl LiveWindow {
    /// Starts over with the channels of a new manifest.
    pub fn reset(&mut self, manifest: &Manifest) {
        self.channels = manifest
            .channels
            .values()
            .map(|info| {
                let ring = ChannelRing {
                    info: info.clone(),
                    values: VecDeque::new(),
                    capacity: 1,
                };
                (info.id, ring)
            })
            .collect();
    }

    /// Records a live block that arrived at `now`.
    pub fn record(
        &mut self,
        now: Instant,
        columns: &[(Column<'_>, &ChannelInfo)],
        sample_period_ns: u64,
    ) {
        let samples = columns.first().map_or(0, |(c, _)| c.raw.len());
        let span = Duration::from_nanos(sample_period_ns.saturating_mul(samples as u64));
        self.arrivals.push_back(Arrival {
            at: now,
            span,
            samples: samples as u64,
        });
        self.last_live = Some(now);
        self.evict(now);
        let capacity = (LIVE_WINDOW.as_nanos() / u128::from(sample_period_ns.max(1)))
            .clamp(1, MAX_RMS_SAMPLES as u128);
        let capacity = capacity as usize;
        for (column, info) in columns {
            let ring = self.channels.entry(info.id).or_insert_with(|| ChannelRing {
                info: (*info).clone(),
                values: VecDeque::new(),
                capacity,
            });
            ring.capacity = capacity;
            ring.values
                .extend((0..column.raw.len()).filter_map(|k| column.value(k)));
            let excess = ring.values.len().saturating_sub(capacity);
            ring.values.drain(..excess);
        }
    }

    fn evict(&mut self, now: Instant) {
        while self
            .arrivals
            .front()
            .is_some_and(|a| a.at + a.span + LIVE_WINDOW < now)
            || self.arrivals.len() > MAX_ARRIVALS
        {
            self.arrivals.pop_front();
        }
    }

    /// Sample instants per second over `[now - 1 s, now]`. A block's samples are counted as if
    /// they arrived evenly over the sample time the block covers, starting at its arrival, so
    /// one-second blocks every second give a steady rate instead of alternating between 0 and
    /// twice the true rate. The price is up to one block span of lag.
    pub fn samples_per_s(&self, now: Instant) -> f64 {
        let window_start = now.checked_sub(LIVE_WINDOW);
        let in_window = |t: Instant| window_start.is_none_or(|ws| t >= ws) && t <= now;
        let mut samples = 0.0;
        for a in &self.arrivals {
            if a.span.is_zero() {
                if in_window(a.at) {
                    samples += a.samples as f64;
                }
                continue;
            }
            let from = window_start.map_or(a.at, |ws| a.at.max(ws));
            let to = (a.at + a.span).min(now);
            if to > from {
                samples += a.samples as f64 * (to - from).as_secs_f64() / a.span.as_secs_f64();
            }
        }
        samples / LIVE_WINDOW.as_secs_f64()
    }

    /// Per-channel RMS, and the per-floor RMS of acceleration channels.
    pub fn rms(&self, now: Instant) -> (Vec<ChannelLive>, BTreeMap<u32, f64>) {
        let fresh = self
            .last_live
            .is_some_and(|t| now.saturating_duration_since(t) <= LIVE_STALE_AFTER);
        let mut floors: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
        let channels = self
            .channels
            .values()
            .map(|ring| {
                let n = ring.values.len();
                let sum_sq: f64 = ring.values.iter().map(|v| v * v).sum();
                let rms = (fresh && n > 0).then(|| (sum_sq / n as f64).sqrt());
                if rms.is_some() && ring.info.kind == ChannelKind::Acceleration {
                    let f = floors.entry(ring.info.floor).or_default();
                    f.0 += sum_sq;
                    f.1 += n;
                }
                ChannelLive {
                    id: ring.info.id,
                    name: ring.info.name.clone(),
                    kind: ring.info.kind,
                    unit: ring.info.unit.clone(),
                    floor: ring.info.floor,
                    rms,
                }
            })
            .collect();
        let floors = floors
            .into_iter()
            .map(|(floor, (sum_sq, n))| (floor, (sum_sq / n as f64).sqrt()))
            .collect();
        (channels, floors)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn col(raw: &[i32]) -> Column<'_> {
        Column {
            name: "",
            scale: 1.0,
            offset: 0.0,
            raw,
        }
    }

    fn info(id: u32, kind: ChannelKind, floor: u32) -> ChannelInfo {
        ChannelInfo {
            id,
            name: format!("c{id}"),
            kind,
            unit: "m/s^2".into(),
            scale: 1.0,
            offset: 0.0,
            floor,
            stream_id: 0,
        }
    }

    #[test]
    fn one_second_blocks_every_second_give_a_steady_rate() {
        let mut w = LiveWindow::default();
        let i = info(1, ChannelKind::Acceleration, 1);
        let raw = vec![0; 1000];
        let t0 = Instant::now();
        for s in 1..=5u64 {
            let now = t0 + Duration::from_secs(s);
            w.record(now, &[(col(&raw), &i)], 1_000_000);
            // The first block only ramps the rate up; from the second on it is steady.
            for probe_ms in [0u64, 250, 500, 999].into_iter().filter(|_| s >= 2) {
                let rate = w.samples_per_s(now + Duration::from_millis(probe_ms));
                assert!(
                    (rate - 1000.0).abs() < 1e-6,
                    "rate {rate} at {s} s + {probe_ms} ms"
                );
            }
        }
        assert!((w.samples_per_s(t0 + Duration::from_millis(6500)) - 500.0).abs() < 1e-6);
        assert_eq!(w.samples_per_s(t0 + Duration::from_secs(8)), 0.0);
    }

    #[test]
    fn rms_covers_the_last_second_of_samples_and_groups_accel_by_floor() {
        let mut w = LiveWindow::default();
        let a1 = info(1, ChannelKind::Acceleration, 1);
        let a2 = info(2, ChannelKind::Acceleration, 1);
        let f = info(3, ChannelKind::Force, 0);
        let t0 = Instant::now();
        // 4 samples at 250 ms: the window holds 4 samples; the first block is pushed out.
        let old = [100, 100, 100, 100];
        let x = [3, -3, 3, -3];
        let y = [4, 4, -4, -4];
        w.record(
            t0,
            &[(col(&old), &a1), (col(&old), &a2), (col(&old), &f)],
            250_000_000,
        );
        w.record(
            t0 + Duration::from_secs(1),
            &[(col(&x), &a1), (col(&y), &a2), (col(&y), &f)],
            250_000_000,
        );
        let (channels, floors) = w.rms(t0 + Duration::from_secs(1));
        let rms: Vec<_> = channels.iter().map(|c| c.rms).collect();
        assert_eq!(rms, [Some(3.0), Some(4.0), Some(4.0)]);
        // Floor 1: sqrt((4*9 + 4*16) / 8) = 5/sqrt(2).
        assert_eq!(floors.len(), 1);
        assert!((floors[&1] - 5.0 / 2f64.sqrt()).abs() < 1e-12);
        let (stale, floors) = w.rms(t0 + Duration::from_secs(4));
        assert!(stale.iter().all(|c| c.rms.is_none()));
        assert!(floors.is_empty());
    }
}
