//! One rig's twin: the state machine ([`RigState`]) and the actor task that owns it.
//!
//! The actor is the only owner of a rig's manifests, sequence tracker, pre-birth queue and live
//! window; it turns accepted blocks into line-protocol [`Chunk`]s for the storage writer. It does
//! not talk to MQTT or to storage itself.
//!
//! It also owns the rig's state estimator ([`RigEstimator`]), built from each birth and fed
//! every live stream-0 block in [`RigState::accept`]; the estimates it makes become
//! `dtop_twin_state` lines in the block's chunk and [`TwinState`]s in an outbox the actor hands
//! to the MQTT publisher without ever waiting for it.
//!
//! When twin-hosted control is enabled it also owns the rig's [`RigController`]: commands on
//! the rig's `cmd` topic are decided here, and each estimated live block yields at most one
//! [`ActuatorDrive`] (see [`crate::control`] for the law, its signs and its limits).
//!
//! Under a lease coordinator it follows the rig's [`Ownership`] (`crate::owner`): every drive
//! and params it hands on carries the owner epoch, and while the rig is not owned it hands on
//! nothing at all and leaves the rig's samples to the owner (births are still followed).
//!
//! A takeover (owned after another twin held the rig) continues the previous owner's
//! estimator run when storage can be read back: the actor restores the run at the persisted
//! watermark off its hot path (`crate::replay::restore`) while the rig's blocks wait, then the
//! run folds in the blocks above the watermark in seq order, the edge's replay included
//! ([`RestorePhase`]). Otherwise, or when the restore fails, a new run starts at the rig's
//! latest birth, as a restarted twin's does.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dtop_proto::Message;
use dtop_proto::RigId;
use dtop_proto::topic::RigTopic;
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::command_ack::Status as AckStatus;
use dtop_proto::v1::set_control::Law as WireLaw;
use dtop_proto::v1::{
    ActuatorDrive, ActuatorLimits, Command, CommandAck, ControllerParams, FloorState, RigBirth,
    RigDeath, RunCbc, SampleBlock, SampleLossReason, TwinState,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::adopt::{self, Adoption, CatalogueModel, ControllerStopped, ModelRecord, RefusalReason};
use crate::config::{ControlConfig, ModelConfig, TrackingConfig};
use crate::control::{ActuatorPlant, Law, LoopPosition, RigController, check_delivery, failed};
use crate::estimate::{ESTIMATED_STREAM, Estimate, EstimatorDesign, Fed, RigEstimator};
use crate::ingest::{self, Frame, Manifest, RejectReason, Rejection};
use crate::lineproto::{self, BlockHeader, EncodeError, Precision};
use crate::live_cbc::{self, LiveRun, RunNext, RunOrigin};
use crate::overlap::{self, BlockTimes, Placement, StoredTimes, Timeline};
use crate::owner::{FIRST_EPOCH, NO_COORDINATOR, Owners, Ownership, ownership_of};
use crate::replay::record::FeedRecord;
use crate::replay::restore::RestoredRun;
use crate::replay::{ReplayError, RunId, RunRecorder};
use crate::seq::{Observation, SeqTracker};
use crate::stats::{LiveWindow, RigStats};
use crate::store::query::InfluxQuery;
use crate::tracking::{
    Identification, ReferenceModes, RigTracking, TrackingJob, TrackingOutput, identify_window,
};
use dtop_nonlinear::LiveTarget;

/// Manifests kept per rig, by session, so late backfill of recent sessions is scaled with the
/// manifest it was recorded under.
pub const MAX_MANIFESTS: usize = 8;
/// How often an actor republishes its stats while idle (rates decay without new blocks).
pub const STATS_INTERVAL: Duration = Duration::from_millis(250);
/// Sample blocks a rig holds while its run is restored after a takeover, and above a missing
/// seq while the continued run catches up; beyond it the restore gives up (a new run) or the
/// catch-up skips the missing seq.
pub const MAX_HELD_BLOCKS: usize = 4096;
/// How long a continued run waits for a missing seq before it skips it: longer than the
/// edge takes to replay what the new owner has not confirmed (it starts when the edge adopts
/// the new epoch, or at its stall replay), which a loaded broker cluster stretches to seconds.
pub const CATCH_UP_STALL: Duration = Duration::from_secs(30);
/// How long one takeover's restore may take (every query included) before a new run starts.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a takeover waits for the rig's persisted watermark when none is known yet (a twin
/// that has just subscribed: brokers deliver retained messages late, NATS by seconds).
pub const WATERMARK_WAIT: Duration = Duration::from_secs(30);

/// The rig's persisted watermark once `watermarks` has one, within `within`; `None` without.
async fn await_watermark(
    watermarks: Option<watch::Receiver<crate::store::Watermarks>>,
    rig: &RigId,
    within: Duration,
) -> Option<u64> {
    let mut rx = watermarks?;
    let found = tokio::time::timeout(within, rx.wait_for(|w| w.contains_key(rig))).await;
    match found {
        Ok(Ok(w)) => w.get(rig).copied(),
        _ => None,
    }
}

/// What a takeover's restore is doing (ARCHITECTURE.md "Twins sharing the rigs").
#[derive(Debug, Default)]
enum RestorePhase {
    #[default]
    Idle,
    /// The previous owner's run is being read back for owner epoch `epoch`: every sample
    /// payload waits here undecoded, in arrival order.
    Restoring {
        epoch: u64,
        held: VecDeque<Bytes>,
        /// Blocks that had arrived before the birth that started the restore (a rig first
        /// seen owned): decoded already, and older than anything in `held`.
        early: VecDeque<SampleBlock>,
    },
    /// The run continues after the block at the watermark: blocks from `next_seq` on are
    /// processed in seq order (a replayed, backfilled one folded in as it would have been
    /// live); those above a missing seq wait in `held`. Ends at the first live block with
    /// nothing waiting behind it.
    CatchingUp {
        next_seq: u64,
        held: BTreeMap<u64, SampleBlock>,
        /// When a block was last released (or the catch-up began).
        progress_at: Instant,
    },
}

/// A restore the actor is to run: the previous owner's run at the persisted watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreRequest {
    /// The owner epoch it is for: a result for another is ignored.
    pub epoch: u64,
    /// The persisted watermark to restore at; `None`: none is known yet (a twin that has just
    /// subscribed: the retained one may still be on its way), so the restore waits for one.
    pub watermark_seq: Option<u64>,
}

/// Why a restore failed, for the counter and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFailure {
    /// `storage` (a query failed or timed out), `records` (missing or unreadable records),
    /// `replay` (the records do not replay), `no_run` (nothing at or below the watermark was
    /// estimated: no run to continue), `held_full` (too many blocks waited).
    pub reason: &'static str,
    pub detail: String,
}

impl RestoreFailure {
    pub fn of(error: &ReplayError) -> Self {
        let reason = match error {
            ReplayError::Query(_) => "storage",
            ReplayError::Record(_) | ReplayError::Missing(_) => "records",
            ReplayError::Engine(_) => "replay",
        };
        Self {
            reason,
            detail: error.to_string(),
        }
    }

    pub fn timed_out() -> Self {
        Self {
            reason: "storage",
            detail: format!("no answer within {} s", RESTORE_TIMEOUT.as_secs()),
        }
    }
}

/// An input of a rig actor: a raw payload from one of the rig's topics. Decoding happens in the
/// actor, so a burst of big blocks for one rig does not stall the MQTT loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Birth(Bytes),
    Samples(Bytes),
    Death(Bytes),
    /// An operator command (only routed while twin-hosted control is enabled).
    Command(Bytes),
    /// An acknowledgement on the rig's cmd/ack (routed with commands): the edge's answers to
    /// the params of a live CBC run.
    CommandAck(Bytes),
    /// The edge's status JSON (routed with commands): its safety envelope's state, which a
    /// live CBC run cannot go on without.
    EdgeStatus(Bytes),
    /// Seqs the edge declared lost for good (already checked by the router).
    DeclaredLoss {
        first_seq: u64,
        last_seq: u64,
    },
    /// A usable, physical version of the catalogue model this rig follows (`crate::adopt`).
    Model(Arc<CatalogueModel>),
}

/// What a rig actor hands to the MQTT publisher.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// On `twin/<rig>/state` and `.../state/json`, QoS 0.
    State(TwinState),
    /// On `rig/<rig>/drive`, QoS 0.
    Drive(ActuatorDrive),
    /// On `rig/<rig>/cmd/ack`, QoS 1.
    Ack(CommandAck),
    /// On `rig/<rig>/controller`, QoS 1.
    Params(ControllerParams),
    /// A live CBC run's status (JSON) on `twin/<rig>/cbc`, QoS 1, retained.
    Cbc { rig: RigId, json: Vec<u8> },
    /// A tracking history record (JSON) on `twin/<rig>/modes`, QoS 0.
    Modes { rig: RigId, json: Vec<u8> },
    /// A drift alarm raised or cleared (JSON) on `twin/<rig>/alarm/drift`, QoS 1, retained.
    Drift { rig: RigId, json: Vec<u8> },
}

impl Event {
    /// The event for a payload of a rig topic the twin ingests.
    pub fn from_topic(kind: RigTopic, payload: Bytes) -> Option<Self> {
        match kind {
            RigTopic::Birth => Some(Event::Birth(payload)),
            RigTopic::Samples => Some(Event::Samples(payload)),
            RigTopic::Death => Some(Event::Death(payload)),
            RigTopic::Cmd => Some(Event::Command(payload)),
            RigTopic::CmdAck => Some(Event::CommandAck(payload)),
            RigTopic::Status => Some(Event::EdgeStatus(payload)),
            _ => None,
        }
    }

    fn kind(&self) -> RigTopic {
        match self {
            Event::Birth(_) => RigTopic::Birth,
            Event::Samples(_) => RigTopic::Samples,
            Event::Death(_) => RigTopic::Death,
            Event::Command(_) => RigTopic::Cmd,
            Event::CommandAck(_) => RigTopic::CmdAck,
            Event::EdgeStatus(_) => RigTopic::Status,
            Event::DeclaredLoss { .. } => RigTopic::Loss,
            // Never decoded as a rig frame: `handle` returns before.
            Event::Model(_) => RigTopic::Status,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Event::Birth(p)
            | Event::Samples(p)
            | Event::Death(p)
            | Event::Command(p)
            | Event::CommandAck(p)
            | Event::EdgeStatus(p) => p,
            Event::DeclaredLoss { .. } | Event::Model(_) => &[],
        }
    }
}

/// The line-protocol lines of one accepted block, on their way to storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub rig: RigId,
    pub seq: u64,
    /// The oldest seq the rig's edge still held at its latest birth
    /// (`RigBirth.oldest_unconfirmed_seq`): where a new watermark for the rig starts.
    pub rig_start_seq: Option<u64>,
    /// Newline-terminated lines.
    pub lines: String,
    pub line_count: usize,
}

/// Everything the twin knows about one rig. Synchronous and deterministic: time is passed in.
#[derive(Debug)]
pub struct RigState {
    rig: RigId,
    precision: Precision,
    /// By session; at most [`MAX_MANIFESTS`].
    manifests: BTreeMap<u64, Arc<Manifest>>,
    online: bool,
    /// Newest session seen on any stored block, to spot an edge that lost its seq state.
    newest_block_session: Option<u64>,
    seq: SeqTracker,
    /// Blocks of a session whose birth has not arrived yet, oldest first.
    waiting: VecDeque<SampleBlock>,
    max_waiting: usize,
    rejected: BTreeMap<RejectReason, u64>,
    live: LiveWindow,
    /// `None`: no estimation at all (the state was built without a model).
    model: Option<Arc<ModelConfig>>,
    /// The latest session's filter, when its manifest fits the model.
    estimator: Option<RigEstimator>,
    /// The last misfit warned about, so a rig that reconnects with the same manifest warns once.
    misfit_warned: Option<String>,
    period_mismatch_warned: bool,
    /// Estimates of the block being accepted; reused.
    due: Vec<Estimate>,
    /// States made but not yet taken by the actor.
    states: Vec<TwinState>,
    blocks_accepted: u64,
    /// Samples the edge declared no block carries (`SampleBlock.samples_lost_before`), by
    /// reason; each block's declaration counts once (duplicates do not).
    samples_unread_at_edge: BTreeMap<String, u64>,
    states_dropped: u64,
    /// The twin-hosted control loop; off unless enabled in the configuration.
    controller: RigController,
    /// Drives and command acks made but not yet taken by the actor.
    drives: Vec<ActuatorDrive>,
    acks: Vec<CommandAck>,
    /// Params for the edge's inner loop, waiting for publication.
    params: Vec<ControllerParams>,
    /// Highest seq storage has acknowledged for this rig (the persisted watermark).
    persisted_seq: Option<u64>,
    /// Writes the replay records of the running estimator (`crate::replay`).
    recorder: Option<RunRecorder>,
    /// The last run id given out, so ids keep rising even if the clock does not.
    last_run: u64,
    /// The latest birth's `oldest_unconfirmed_seq`, passed to storage with every chunk.
    start_hint: Option<u64>,
    /// The sample times `dtop_samples` holds for this rig, so no block replaces them.
    stored_times: StoredTimes,
    /// Blocks and samples stored apart because their times were stored already, by reason.
    blocks_stored_apart: BTreeMap<String, u64>,
    samples_stored_apart: BTreeMap<String, u64>,
    /// The (block, stored) clocks of the last overlap warned about: one WARN per pair.
    apart_warned: Option<(Timeline, Timeline)>,
    /// `[tracking]`, when enabled.
    tracking_config: Option<Arc<TrackingConfig>>,
    /// Mode tracking of the latest birth that fits the model (see [`crate::tracking`]).
    tracking: Option<RigTracking>,
    /// Windows due, waiting for the actor to identify them.
    tracking_jobs: Vec<TrackingJob>,
    /// Tracking history, drift and live CBC lines waiting for the next chunk (stored with the
    /// next block, so as durably as it).
    pending_lines: String,
    pending_line_count: usize,
    /// History records, drift alarms and live CBC status waiting for the publisher.
    pending_outbound: Vec<Outbound>,
    /// The latest live control-based continuation run (`crate::live_cbc`), running or ended.
    cbc: Option<LiveRun>,
    /// The latest birth's actuator: its floor (0 = none) and force limit, N.
    actuator: Option<ActuatorLimits>,
    /// The edge's safety envelope state from its latest status (`latched`, `disabled`, ...).
    edge_safety_state: Option<String>,
    /// The catalogue model this rig follows, the version in use and the one waiting.
    adoption: Adoption,
    /// Whether this twin owns the rig, at which owner epoch (`crate::owner`).
    ownership: Ownership,
    /// Sample blocks dropped undecoded because another twin (or nobody yet) owned the rig.
    blocks_not_owned: u64,
    /// Whether a takeover may restore the previous owner's run from storage (InfluxDB 1.x).
    restore_from_storage: bool,
    restore: RestorePhase,
    /// Owned at this epoch from the start (the rig first seen already owned, by a twin
    /// joining the fleet or after its lease moved here): another owner may have held it, so
    /// the actor starts a takeover before its first event ([`RigState::start_pending_takeover`]).
    takeover_pending: Option<u64>,
    /// The blocks held during a restore are being handed to the catch-up: it does not end yet.
    draining_held: bool,
    /// Restores for the actor to start.
    restore_requests: Vec<RestoreRequest>,
    /// Takeovers by outcome (`continued`, or why a new run started).
    takeovers: BTreeMap<String, u64>,
    takeover_gaps_skipped: u64,
}

impl RigState {
    pub fn new(rig: RigId, precision: Precision, max_waiting: usize) -> Self {
        Self {
            rig,
            precision,
            manifests: BTreeMap::new(),
            online: false,
            newest_block_session: None,
            seq: SeqTracker::default(),
            waiting: VecDeque::new(),
            max_waiting,
            rejected: BTreeMap::new(),
            live: LiveWindow::default(),
            model: None,
            estimator: None,
            misfit_warned: None,
            period_mismatch_warned: false,
            due: Vec::new(),
            states: Vec::new(),
            blocks_accepted: 0,
            samples_unread_at_edge: BTreeMap::new(),
            states_dropped: 0,
            controller: RigController::new(ControlConfig::default()),
            drives: Vec::new(),
            acks: Vec::new(),
            params: Vec::new(),
            persisted_seq: None,
            recorder: None,
            last_run: 0,
            start_hint: None,
            stored_times: StoredTimes::default(),
            blocks_stored_apart: BTreeMap::new(),
            samples_stored_apart: BTreeMap::new(),
            apart_warned: None,
            tracking_config: None,
            tracking: None,
            tracking_jobs: Vec::new(),
            pending_lines: String::new(),
            pending_line_count: 0,
            pending_outbound: Vec::new(),
            cbc: None,
            actuator: None,
            edge_safety_state: None,
            adoption: Adoption::default(),
            ownership: Ownership::default(),
            blocks_not_owned: 0,
            restore_from_storage: false,
            restore: RestorePhase::Idle,
            takeover_pending: None,
            draining_held: false,
            restore_requests: Vec::new(),
            takeovers: BTreeMap::new(),
            takeover_gaps_skipped: 0,
        }
    }

    /// Lets a takeover restore and continue the previous owner's run: storage can be read
    /// back (InfluxDB 1.x) and the actor runs the [`RestoreRequest`]s.
    pub fn with_restore_from_storage(mut self) -> Self {
        self.restore_from_storage = true;
        self
    }

    /// Starts with `ownership` (what the coordinator says when the rig is first seen), without
    /// the hand-over [`RigState::set_ownership`] makes: nothing ran here before.
    ///
    /// Owned at a coordinator's epoch, the rig may have had an owner before this twin saw it
    /// (a twin joining the fleet, or a rig first heard of after its lease moved here): a
    /// takeover is then pending, started by [`RigState::start_pending_takeover`].
    pub fn with_ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self.takeover_pending = match ownership {
            Ownership::Owned { epoch } if epoch != NO_COORDINATOR => Some(epoch),
            _ => None,
        };
        self
    }

    /// Whether a takeover waits to start (its restore wants the latest watermark first).
    pub fn takeover_pending(&self) -> bool {
        self.takeover_pending.is_some()
    }

    /// Starts the takeover [`RigState::with_ownership`] left pending, if the rig is still
    /// owned at its epoch.
    pub fn start_pending_takeover(&mut self) {
        if let Some(epoch) = self.takeover_pending.take()
            && self.ownership == (Ownership::Owned { epoch })
        {
            self.begin_takeover(epoch);
        }
    }

    /// Tracks each rig's modes as `tracking` says (from the next birth that fits the model).
    pub fn with_tracking(mut self, tracking: Arc<TrackingConfig>) -> Self {
        self.tracking_config = tracking.enabled.then_some(tracking);
        self
    }

    /// The rig's mode tracking, if running.
    pub fn tracking(&self) -> Option<&RigTracking> {
        self.tracking.as_ref()
    }

    /// The windows that fell due since the last call, for identification.
    pub fn take_tracking_jobs(&mut self) -> std::vec::Drain<'_, TrackingJob> {
        self.tracking_jobs.drain(..)
    }

    /// Counts a due window the actor had no room to identify.
    pub fn count_tracking_skipped(&mut self) {
        if let Some(t) = &mut self.tracking {
            t.count_skipped();
        }
    }

    /// Takes the identification of `job`: decides on it, queues its lines for the next chunk
    /// and its messages for the publisher. A result for a tracking that a new birth replaced
    /// is still recorded by the new one only if it tracks the same channels.
    pub fn on_identified(&mut self, job: &TrackingJob, identification: &Identification) {
        let Some(tracking) = &mut self.tracking else {
            return;
        };
        let TrackingOutput {
            lines,
            line_count,
            modes_json,
            drift_json,
        } = tracking.on_identified(self.rig.as_str(), job, identification, self.precision);
        match identification {
            Identification::Modes(modes) => {
                info!(rig = %self.rig, start_s = job.job.start_s(), end_s = job.job.end_s(), modes = modes.len(), "Identified the rig's modes.");
            }
            Identification::Failed(reason) => {
                info!(rig = %self.rig, start_s = job.job.start_s(), end_s = job.job.end_s(), reason = %reason, "Identification of a tracking window found no modes.");
            }
        }
        if !drift_json.is_empty() {
            warn!(rig = %self.rig, changes = drift_json.len(), raised = ?tracking.counters().drift_alarms_active, "A drift alarm changed.");
        }
        self.pending_lines.push_str(&lines);
        self.pending_line_count += line_count;
        self.pending_outbound.push(Outbound::Modes {
            rig: self.rig.clone(),
            json: modes_json,
        });
        self.pending_outbound
            .extend(drift_json.into_iter().map(|json| Outbound::Drift {
                rig: self.rig.clone(),
                json,
            }));
    }

    /// History records, drift alarms and live CBC status made since the last call, for
    /// publication; none while the rig is lost.
    pub fn take_pending_outbound(&mut self) -> impl DoubleEndedIterator<Item = Outbound> + '_ {
        let owned = self.ownership.is_owned();
        self.pending_outbound.drain(..).filter(move |_| owned)
    }

    /// The rig switched to `building`: tracking takes its modes as the reference, and every
    /// raised drift alarm clears (stored with the next chunk, published, retained).
    fn rebase_tracking(
        &mut self,
        building: &dtop_dynamics::ShearBuildingConfig,
        block: &SampleBlock,
    ) {
        let Some(tracking) = &mut self.tracking else {
            return;
        };
        let floors: Vec<usize> = (1..=building.floors()).collect();
        let reference = match dtop_dynamics::ShearBuilding::new(building.clone()) {
            Ok(b) => ReferenceModes::from_building(&b, &floors),
            Err(e) => {
                warn!(rig = %self.rig, error = %e, "Could not build the adopted model's modes; tracking keeps the old reference.");
                return;
            }
        };
        let at_s = block.first_sample_index as f64 / tracking.sample_rate_hz();
        let (lines, count, drift_json) = tracking.rebase(
            self.rig.as_str(),
            reference,
            building.clone(),
            at_s,
            block.first_timestamp_ns,
            self.precision,
        );
        if !drift_json.is_empty() {
            info!(rig = %self.rig, cleared = drift_json.len(), "Drift alarms cleared: the rig now runs on the adopted model, the reference of its tracking.");
        }
        self.pending_lines.push_str(&lines);
        self.pending_line_count += count;
        self.pending_outbound
            .extend(drift_json.into_iter().map(|json| Outbound::Drift {
                rig: self.rig.clone(),
                json,
            }));
    }

    /// Builds the rig's tracking for a birth the estimator fits: the floor accelerometers
    /// (`floor{k}_accel`) of stream 0 against the modes of the fitted building.
    fn build_tracking(&mut self, estimator: &RigEstimator) {
        let Some(config) = &self.tracking_config else {
            return;
        };
        let io = estimator.loop_io();
        let floors: Vec<usize> = (1..=estimator.floors()).collect();
        let reference = match dtop_dynamics::ShearBuilding::new(io.building.clone()) {
            Ok(building) => ReferenceModes::from_building(&building, &floors),
            Err(e) => {
                warn!(rig = %self.rig, error = %e, "Could not build the model's modes; the rig's modes are not tracked.");
                self.tracking = None;
                return;
            }
        };
        let channels: Vec<String> = floors.iter().map(|k| format!("floor{k}_accel")).collect();
        let sample_rate_hz = 1.0 / io.dt_s;
        // Keep the alarms and the window across a re-birth of the same rig and model.
        if let Some(t) = &self.tracking
            && t.channels() == channels.as_slice()
            && t.sample_rate_hz() == sample_rate_hz
            && t.reference() == &reference
        {
            return;
        }
        info!(rig = %self.rig, floors = floors.len(), window_s = config.window_s, interval_s = config.interval_s, "Tracking the rig's modes.");
        self.tracking = Some(RigTracking::new(
            config,
            channels,
            floors,
            sample_rate_hz,
            reference,
            io.building.clone(),
        ));
    }

    /// Feeds a live stream-0 block's floor accelerations to the tracking window. A block
    /// missing a tracked channel or a value is a gap: the window restarts after it.
    fn track(
        &mut self,
        block: &SampleBlock,
        columns: &[(lineproto::Column<'_>, &ingest::ChannelInfo)],
    ) {
        let Some(tracking) = &mut self.tracking else {
            return;
        };
        if block.stream_id != 0 {
            return;
        }
        let values: Option<Vec<Vec<f64>>> = tracking
            .channels()
            .iter()
            .map(|name| {
                let (column, _) = columns.iter().find(|(c, _)| c.name == name.as_str())?;
                (0..column.raw.len()).map(|k| column.value(k)).collect()
            })
            .collect();
        let Some(values) = values else {
            return;
        };
        let jobs = tracking.push_block(
            block.first_sample_index,
            block.first_timestamp_ns,
            block.sample_period_ns,
            &values,
        );
        self.tracking_jobs.extend(jobs);
    }

    /// Continues from the sample times a previous run recorded as stored (its state file).
    pub fn set_stored_times(&mut self, times: StoredTimes) {
        self.stored_times = times;
    }

    /// The sample times this rig has in `dtop_samples`, and whether they changed since the
    /// last call (the state file is then due).
    pub fn stored_times_changed(&mut self) -> Option<&StoredTimes> {
        self.stored_times
            .take_changed()
            .then_some(&self.stored_times)
    }

    /// The sample times this rig has in `dtop_samples`.
    pub fn stored_times(&self) -> &StoredTimes {
        &self.stored_times
    }

    /// Runs the twin-hosted control loop as `control` says (from the next birth on).
    pub fn with_control(mut self, control: ControlConfig) -> Self {
        self.controller = RigController::new(control);
        self
    }

    /// The rig's controller, for inspection.
    pub fn controller(&self) -> &RigController {
        &self.controller
    }

    /// The drives made since the last call, oldest first, for publication: stamped with the
    /// owner epoch, and none while the rig is lost.
    pub fn take_drives(&mut self) -> impl DoubleEndedIterator<Item = ActuatorDrive> + '_ {
        take_owned(&mut self.drives, self.ownership, |d, epoch| {
            d.owner_epoch = epoch;
        })
    }

    /// Whether this twin owns the rig, at which owner epoch.
    pub fn ownership(&self) -> Ownership {
        self.ownership
    }

    /// A coordinator's word on this rig (`crate::owner`, transitions already checked there),
    /// at wall time `now_unix_ns`.
    ///
    /// Lost: nothing more is published for the rig (what is waiting is dropped), commands go
    /// unanswered (the owner answers them), and a control law or live CBC run ends without a
    /// last drive or params: the edge would fence them off, and the new owner decides.
    ///
    /// Owned after another owner may have held the rig (it was lost, or the epoch moved on
    /// from a coordinator's): with storage that can be read back, the previous owner's run is
    /// restored at the persisted watermark (a [`RestoreRequest`] for the actor; the rig's
    /// blocks wait) and continued ([`RigState::on_restored`]); otherwise the estimator starts
    /// a new run from the rig's latest birth, exactly as a restarted twin's does at the
    /// retained birth. Either way params switching the edge's loop off go out at the new
    /// epoch, so no loop the previous owner left runs on, and the edge fences that owner off
    /// at once. From epoch 0 (no coordinator yet) to a coordinator's first epoch this twin
    /// simply keeps the rig: its control runs on, stamped with the new epoch.
    pub fn set_ownership(&mut self, next: Ownership, now_unix_ns: u64) {
        let previous = std::mem::replace(&mut self.ownership, next);
        if previous == next {
            return;
        }
        match next {
            Ownership::Lost { epoch } => {
                warn!(rig = %self.rig, owner_epoch = epoch, "This twin lost the rig: it publishes nothing more for it; its control and live CBC run end without driving.");
                // What waits is the next owner's to store (the edge replays it).
                self.restore = RestorePhase::Idle;
                self.takeover_pending = None;
                self.stop_quietly(
                    format!("this twin lost the rig (owner epoch {epoch})"),
                    now_unix_ns,
                );
            }
            Ownership::Owned { epoch } => {
                let took_over = !previous.is_owned() || previous.epoch() != NO_COORDINATOR;
                info!(rig = %self.rig, owner_epoch = epoch, previous_epoch = previous.epoch(), took_over, "This twin owns the rig.");
                if !took_over {
                    return;
                }
                self.stop_quietly(
                    format!("another twin owned the rig before owner epoch {epoch}"),
                    now_unix_ns,
                );
                self.restore = RestorePhase::Idle;
                self.takeover_pending = None;
                self.begin_takeover(epoch);
                // Rebuilding the estimator queued the switch-off already when it fits.
                if self.params.is_empty()
                    && self.controller.is_enabled()
                    && self.actuator.is_some_and(|a| a.floor != 0)
                {
                    let off = self.controller.edge_off_params(&self.rig, now_unix_ns);
                    self.params.push(off);
                }
            }
        }
    }

    /// Takes the rig over at owner epoch `epoch`: restores the previous owner's run at the
    /// persisted watermark (the rig's blocks wait; its birth need not have arrived: the run's
    /// stored birth serves), or starts a new run from the latest birth, saying why (at the
    /// first birth when none has arrived yet).
    fn begin_takeover(&mut self, epoch: u64) {
        match self.restore_plan(epoch) {
            Ok(watermark_seq) => {
                info!(rig = %self.rig, owner_epoch = epoch, watermark_seq = ?watermark_seq, "Restoring the previous owner's run of the rig at its persisted watermark; the rig's blocks wait.");
                self.restore = RestorePhase::Restoring {
                    epoch,
                    held: VecDeque::new(),
                    early: VecDeque::new(),
                };
                self.restore_requests.push(RestoreRequest {
                    epoch,
                    watermark_seq,
                });
            }
            Err(reason) => match self.adoption.birth().cloned() {
                Some(birth) => self.new_run_at_takeover(&birth, reason, String::new()),
                None => self.new_run_at_first_birth(reason, String::new()),
            },
        }
    }

    /// A takeover that does not continue the previous owner's run, with no birth known yet:
    /// counted now; the first birth starts the new run as usual.
    fn new_run_at_first_birth(&mut self, reason: &'static str, detail: String) {
        *self.takeovers.entry(reason.to_owned()).or_default() += 1;
        info!(rig = %self.rig, reason, detail = %detail, "The previous owner's run of the rig cannot be restored; its estimator starts a new run at the rig's first birth.");
    }

    /// The persisted watermark a takeover's restore at owner epoch `epoch` starts at (`None`:
    /// not known yet, the restore waits for it), or why it cannot restore.
    fn restore_plan(&self, epoch: u64) -> Result<Option<u64>, &'static str> {
        if !self.restore_from_storage {
            return Err("storage_not_readable");
        }
        // Without a model nothing is estimated; with a birth that did not fit it, neither.
        if self.model.is_none() || (self.adoption.birth().is_some() && self.estimator.is_none()) {
            return Err("not_estimating");
        }
        match self.persisted_seq {
            Some(seq) => Ok(Some(seq)),
            // The first epoch is the rig's first owner ever: nobody stored anything before.
            None if epoch <= FIRST_EPOCH => Err("no_watermark"),
            None => Ok(None),
        }
    }

    /// A takeover that does not continue the previous owner's run: a new run at `birth`.
    fn new_run_at_takeover(&mut self, birth: &RigBirth, reason: &'static str, detail: String) {
        *self.takeovers.entry(reason.to_owned()).or_default() += 1;
        match reason {
            "storage_not_readable" | "not_estimating" | "no_watermark" | "no_run" => {
                info!(rig = %self.rig, session = birth.session, reason, "Starting the rig's estimator from its latest birth, as after a restart (a new run): the previous owner's run cannot be restored.");
            }
            _ => {
                warn!(rig = %self.rig, session = birth.session, reason, detail = %detail, "Could not restore the previous owner's run of the rig; starting a new run from its latest birth.");
            }
        }
        self.build_estimator(birth);
    }

    /// Restores the actor is to start, oldest first.
    pub fn take_restore_requests(&mut self) -> std::vec::Drain<'_, RestoreRequest> {
        self.restore_requests.drain(..)
    }

    /// Whether sample blocks wait for a restore.
    pub fn is_restoring(&self) -> bool {
        matches!(self.restore, RestorePhase::Restoring { .. })
    }

    /// The outcome of the restore for owner epoch `epoch` (one for another epoch, or after
    /// the rig was lost or born again, is ignored). Restored: the run continues from the block
    /// at the watermark, on its own birth record and design, with its run id, checkpoint
    /// schedule and controller versions, and folds in the blocks above it in seq order.
    /// Failed: a new run at the latest birth. Either way the blocks that waited are handled
    /// now, in arrival order; returns their chunks.
    pub fn on_restored(
        &mut self,
        epoch: u64,
        result: Result<RestoredRun, RestoreFailure>,
        now: Instant,
    ) -> Vec<Chunk> {
        if !matches!(self.restore, RestorePhase::Restoring { epoch: e, .. } if e == epoch)
            || self.ownership != (Ownership::Owned { epoch })
        {
            debug!(rig = %self.rig, owner_epoch = epoch, "Ignored a restore for an ownership that has ended.");
            return Vec::new();
        }
        let RestorePhase::Restoring { held, early, .. } = std::mem::take(&mut self.restore) else {
            return Vec::new();
        };
        let known = self.adoption.birth().cloned();
        if let Some(birth) = known {
            match result {
                Ok(run) if run.birth.birth.session == birth.session => {
                    self.continue_run(&birth, run, now);
                }
                Ok(run) => self.new_run_at_takeover(
                    &birth,
                    "other_session",
                    format!(
                        "the run at the watermark is of session {}, the rig's latest birth of session {}",
                        run.birth.birth.session, birth.session
                    ),
                ),
                Err(failure) => self.new_run_at_takeover(&birth, failure.reason, failure.detail),
            }
        } else {
            // No birth has arrived: the run's own stored birth is the rig's, until a newer one.
            match result {
                Ok(run) => {
                    let birth = run.birth.birth.clone();
                    match Manifest::from_birth(&birth) {
                        Ok(manifest) => {
                            self.note_birth(&birth, manifest);
                            self.continue_run(&birth, run, now);
                        }
                        Err(rejection) => self.new_run_at_first_birth(
                            "records",
                            format!("the run's stored birth does not fit: {rejection:?}"),
                        ),
                    }
                }
                Err(failure) => self.new_run_at_first_birth(failure.reason, failure.detail),
            }
        }
        // Everything that waited goes into the catch-up before it may end: "nothing waiting
        // behind" a live block includes the payloads not yet decoded.
        self.draining_held = true;
        let mut chunks = Vec::new();
        for block in early {
            chunks.extend(self.on_samples(block, now));
        }
        for payload in held {
            chunks.extend(self.handle(&Event::Samples(payload), now));
        }
        self.draining_held = false;
        chunks.extend(self.release_caught_up(now));
        chunks
    }

    /// Continues `run` (restored at the watermark) as this rig's estimator run. The blocks
    /// between its last one and the watermark were not folded in by the previous owner (other
    /// streams, late fills), and the edge does not send them again: the catch-up starts above
    /// the watermark.
    fn continue_run(&mut self, birth: &RigBirth, run: RestoredRun, now: Instant) {
        let next_seq = run.last_fed.seq.max(run.watermark_seq) + 1;
        info!(
            rig = %self.rig,
            run = %run.run(),
            last_seq = run.last_fed.seq,
            blocks_replayed = run.blocks_replayed,
            "Continuing the previous owner's run of the rig from its last persisted block; the blocks above it are folded in, in seq order."
        );
        if run.switches_ahead > 0 {
            warn!(rig = %self.rig, run = %run.run(), switches = run.switches_ahead, "The previous owner switched models after the watermark; the continued run stays on the model in force at the watermark.");
        }
        self.build_estimator_continuing(birth, Some(run));
        if self.estimator.is_some() {
            *self.takeovers.entry("continued".to_owned()).or_default() += 1;
            self.restore = RestorePhase::CatchingUp {
                next_seq,
                held: BTreeMap::new(),
                progress_at: now,
            };
        } else {
            *self
                .takeovers
                .entry("not_estimating".to_owned())
                .or_default() += 1;
        }
    }

    /// Skips the seq a continued run's catch-up has waited for too long (or with too many
    /// blocks behind it); returns the chunks of the blocks that then go through.
    pub fn check_catch_up(&mut self, now: Instant) -> Vec<Chunk> {
        let RestorePhase::CatchingUp {
            next_seq,
            held,
            progress_at,
        } = &mut self.restore
        else {
            return Vec::new();
        };
        let Some(&first) = held.keys().next() else {
            return Vec::new();
        };
        if now.duration_since(*progress_at) < CATCH_UP_STALL && held.len() <= MAX_HELD_BLOCKS {
            return Vec::new();
        }
        warn!(rig = %self.rig, from_seq = *next_seq, to_seq = first - 1, waiting = held.len(), "Seqs above the watermark did not arrive; the continued run skips them (the estimator bridges the gap, as live).");
        self.takeover_gaps_skipped += first - *next_seq;
        *next_seq = first;
        self.release_caught_up(now)
    }

    /// Processes the blocks of a catch-up that are next in seq order.
    fn release_caught_up(&mut self, now: Instant) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        while let RestorePhase::CatchingUp {
            next_seq,
            held,
            progress_at,
        } = &mut self.restore
        {
            let Some(block) = held.remove(next_seq) else {
                break;
            };
            *next_seq += 1;
            *progress_at = now;
            let caught_up = !block.backfill && held.is_empty() && !self.draining_held;
            chunks.extend(self.process(block, now, true));
            if caught_up {
                info!(rig = %self.rig, "The continued run has caught up with the rig's live blocks.");
                self.restore = RestorePhase::Idle;
                break;
            }
        }
        if matches!(&self.restore, RestorePhase::CatchingUp { held, .. } if held.len() > MAX_HELD_BLOCKS)
        {
            chunks.extend(self.check_catch_up(now));
        }
        chunks
    }

    /// Ends a catch-up (a new birth starts a new run): what waits is processed as usual.
    fn end_catch_up(&mut self, now: Instant) -> Vec<Chunk> {
        let RestorePhase::CatchingUp { held, .. } = std::mem::take(&mut self.restore) else {
            return Vec::new();
        };
        held.into_values()
            .filter_map(|b| self.process(b, now, false))
            .collect()
    }

    /// Ends a live CBC run and the control law without sending anything, and drops what waits
    /// for publication.
    fn stop_quietly(&mut self, why: String, now_unix_ns: u64) {
        self.end_cbc(why, now_unix_ns, false);
        self.controller.on_ownership_lost();
        self.drives.clear();
        self.params.clear();
        self.acks.clear();
        self.states.clear();
        self.pending_outbound.clear();
    }

    /// Storage's persisted watermark for this rig: re-sent blocks above it are stored again.
    pub fn set_persisted_seq(&mut self, seq: Option<u64>) {
        self.persisted_seq = seq;
    }

    /// The controller params made since the last call, oldest first, for publication:
    /// stamped with the owner epoch, and none while the rig is lost.
    pub fn take_params(&mut self) -> impl DoubleEndedIterator<Item = ControllerParams> + '_ {
        take_owned(&mut self.params, self.ownership, |p, epoch| {
            p.owner_epoch = epoch;
        })
    }

    /// The command acks made since the last call, oldest first, for publication; none while
    /// the rig is lost.
    pub fn take_acks(&mut self) -> impl DoubleEndedIterator<Item = CommandAck> + '_ {
        let owned = self.ownership.is_owned();
        self.acks.drain(..).filter(move |_| owned)
    }

    /// Decides an operator command received at wall time `now_unix_ns` (ns since the Unix
    /// epoch, for the command's deadline). Only `SetControl` is the twin's; every other kind
    /// belongs to the edge and is ignored without an answer.
    pub fn on_command(&mut self, payload: &[u8], now_unix_ns: u64) {
        if !self.ownership.is_owned() {
            debug!(rig = %self.rig, "Left a command to the rig's owner: this twin lost the rig.");
            return;
        }
        let command = match Command::decode(payload) {
            Ok(c) => c,
            Err(e) => {
                // Without an id there is nothing to acknowledge.
                warn!(rig = %self.rig, error = %e, "Ignored an undecodable command.");
                return;
            }
        };
        match &command.kind {
            Some(Kind::RunCbc(run)) => {
                self.on_run_cbc(&command, run, now_unix_ns);
                return;
            }
            Some(Kind::SetControl(set)) if self.cbc.as_ref().is_some_and(LiveRun::is_running) => {
                if set.law() != WireLaw::Off {
                    if let Some(ack) = self.controller.answered(&command.id) {
                        self.acks.push(ack);
                        return;
                    }
                    let run = self.cbc.as_ref().map_or(0, |r| r.origin().run);
                    let ack = failed(
                        &self.rig,
                        &command.id,
                        AckStatus::Refused,
                        format!(
                            "a live CBC run (run {run}) is driving the actuator; stop it first \
                             (dtop cmd stop-cbc) or switch control off"
                        ),
                    );
                    self.controller.remember(ack.clone());
                    self.acks.push(ack);
                    return;
                }
                let why = format!(
                    "control switched off by command {} from {}",
                    command.id, command.issued_by
                );
                self.end_cbc(why, now_unix_ns, false);
            }
            _ => {}
        }
        let position = self.loop_position();
        let Some(decision) = self
            .controller
            .decide(&self.rig, &command, now_unix_ns, position)
        else {
            return;
        };
        if decision.duplicate {
            debug!(rig = %self.rig, command_id = %command.id, "Acknowledged a repeated command again without applying it.");
        } else {
            info!(
                rig = %self.rig,
                command_id = %command.id,
                issued_by = %command.issued_by,
                status = decision.ack.status().as_str_name(),
                reason = %decision.ack.reason,
                controller = %self.controller.describe(),
                controller_version = self.controller.version(),
                "Decided a control command."
            );
        }
        self.acks.push(decision.ack);
        self.drives.extend(decision.drive);
        self.params.extend(decision.params);
    }

    fn loop_position(&self) -> LoopPosition {
        LoopPosition {
            estimating: self.estimator.is_some(),
            next_sample_index: self
                .estimator
                .as_ref()
                .and_then(RigEstimator::next_sample_index)
                .unwrap_or(0),
        }
    }

    /// Decides a `RunCbc` (`crate::live_cbc`): stops the running run, or starts one when the
    /// rig can carry it, sending its first target to the edge. Answered once per command id.
    fn on_run_cbc(&mut self, command: &Command, run: &RunCbc, now_unix_ns: u64) {
        if let Some(ack) = self.controller.answered(&command.id) {
            self.acks.push(ack);
            return;
        }
        let position = self.loop_position();
        let outcome = if let Err(failure) = check_delivery(&self.rig, command, now_unix_ns) {
            Err(failure)
        } else if run.stop {
            match self.cbc.as_ref().filter(|r| r.is_running()) {
                Some(r) => {
                    let id = r.origin().run;
                    let why = format!(
                        "stopped by command {} from {}",
                        command.id, command.issued_by
                    );
                    self.end_cbc(why, now_unix_ns, true);
                    Ok(format!("run {id} stopped; the edge's loop is switched off"))
                }
                None => Ok("no live CBC run was running".to_owned()),
            }
        } else {
            self.start_cbc(command, run, now_unix_ns)
                .map_err(|why| (AckStatus::Refused, why))
        };
        let ack = match outcome {
            Ok(reason) => CommandAck {
                command_id: command.id.clone(),
                rig_id: self.rig.as_str().to_owned(),
                status: AckStatus::Applied as i32,
                applied_at_sample_index: position.next_sample_index,
                reason,
            },
            Err((status, why)) => failed(&self.rig, &command.id, status, why),
        };
        info!(
            rig = %self.rig,
            command_id = %command.id,
            issued_by = %command.issued_by,
            status = ack.status().as_str_name(),
            reason = %ack.reason,
            "Decided a live CBC command."
        );
        if !command.id.is_empty() {
            self.controller.remember(ack.clone());
        }
        self.acks.push(ack);
    }

    /// Starts a run, or says why not (every problem of its configuration at once).
    fn start_cbc(
        &mut self,
        command: &Command,
        run: &RunCbc,
        now_unix_ns: u64,
    ) -> Result<String, String> {
        if let Some(r) = self.cbc.as_ref().filter(|r| r.is_running()) {
            return Err(format!(
                "live CBC run {} (command {}) is running; stop it first",
                r.origin().run,
                r.origin().command_id
            ));
        }
        if self.controller.law() != Law::Off {
            return Err(format!(
                "control is on ({}); switch it off first",
                self.controller.describe()
            ));
        }
        if let Some(state) = self
            .edge_safety_state
            .as_deref()
            .filter(|s| actuator_off(s))
        {
            return Err(format!(
                "the edge's safety envelope is {state}: reset or enable the actuator first"
            ));
        }
        let (Some(estimator), Some(model)) = (&self.estimator, &self.model) else {
            return Err(
                "the twin is not estimating this rig's state (no birth yet, or its \
                        manifest does not fit the model), so it has no model to continue on"
                    .into(),
            );
        };
        let next_sample = estimator.next_sample_index().unwrap_or(0);
        let sample_rate_hz = 1.0 / estimator.loop_io().dt_s;
        // Every problem at once: the actuator, the channels, the run's own configuration.
        let mut problems = Vec::new();
        let actuator = self.actuator.filter(|a| a.floor != 0);
        if actuator.is_none() {
            problems.push(
                "the rig's birth declares no actuator, so nothing can follow a target".to_owned(),
            );
        }
        let floor = actuator.map_or(0, |a| a.floor);
        let channels = match self.latest_session().and_then(|s| self.manifests.get(&s)) {
            Some(manifest) if floor != 0 => live_cbc::channels(manifest, floor)
                .map_err(|why| problems.push(why))
                .ok(),
            Some(_) => None,
            None => {
                problems.push("the rig has no manifest".to_owned());
                None
            }
        };
        let max_force_n = actuator.map_or(f64::NAN, |a| a.max_force_n);
        let config = live_cbc::config_for(run, sample_rate_hz, max_force_n);
        if actuator.is_some() {
            problems.extend(config.problems());
        }
        let chain = live_cbc::chain_for(
            self.adoption.building(model.building_for(&self.rig)),
            floor.max(1),
        )
        .map_err(|why| problems.push(why))
        .ok();
        let (Some(channels), Some(chain), true) = (channels, chain, problems.is_empty()) else {
            return Err(problems.join("; "));
        };
        self.last_run = (self.last_run + 1).max(now_unix_ns);
        let origin = RunOrigin {
            run: self.last_run,
            command_id: command.id.clone(),
            issued_by: command.issued_by.clone(),
        };
        let (live, first) = LiveRun::start(self.rig.as_str(), origin, channels, &chain, config)?;
        let run_id = live.origin().run;
        self.cbc = Some(live);
        let version = self.send_cbc_target(&first, next_sample, now_unix_ns);
        let reason = format!(
            "run {}: {:.4} Hz first, on floor {} (accelerometer channel {}, force channel {}); \
             sent to the edge as controller/{}",
            run_id,
            first.frequency_hz,
            channels.floor,
            channels.accel_channel_id,
            channels.force_channel_id,
            version
        );
        info!(rig = %self.rig, run = run_id, controller_version = version, "Live CBC run started.");
        self.offer_cbc();
        Ok(reason)
    }

    /// Ends the running run for `why`; `switch_off` sends the edge params that stop its loop
    /// (a birth already did, and a `SetControl` off is about to).
    fn end_cbc(&mut self, why: String, now_unix_ns: u64, switch_off: bool) {
        let Some(run) = self.cbc.as_mut() else { return };
        let next = run.abort(why, now_unix_ns, self.precision);
        self.follow_cbc(next, 0, now_unix_ns, switch_off);
    }

    /// Does what the run asks after being fed (`next_sample` is the rig's next stream-0
    /// sample, `now_unix_ns` the wall clock): sends its next target, or logs its end and, if
    /// `switch_off`, switches the edge's loop off. Then offers its lines and status.
    fn follow_cbc(&mut self, next: RunNext, next_sample: u64, now_unix_ns: u64, switch_off: bool) {
        match next {
            RunNext::Continue => {}
            RunNext::Send(target) => {
                self.send_cbc_target(&target, next_sample, now_unix_ns);
            }
            RunNext::Ended => {
                if let Some(run) = &self.cbc {
                    let status = run.status();
                    info!(rig = %self.rig, run = status.origin.run, state = ?status.state, reason = status.reason.unwrap_or(""), points = status.points.len(), "Live CBC run ended.");
                }
                if switch_off {
                    let off = self.controller.edge_off_params(&self.rig, now_unix_ns);
                    self.params.push(off);
                }
            }
        }
        self.offer_cbc();
    }

    /// Sends the run's `target` to the edge as the next params version, from the rig's next
    /// stream-0 sample `next_sample`; returns the version.
    fn send_cbc_target(&mut self, target: &LiveTarget, next_sample: u64, now_unix_ns: u64) -> u64 {
        let Some(run) = self.cbc.as_mut() else {
            return 0;
        };
        let params = self.controller.edge_cbc_params(
            &self.rig,
            now_unix_ns,
            run.config(),
            target,
            run.channels().accel_channel_id,
        );
        run.sent(target, params.version, next_sample);
        let version = params.version;
        self.params.push(params);
        version
    }

    /// Moves the run's new lines to the next chunk and its changed status to the publisher.
    fn offer_cbc(&mut self) {
        let Some(run) = self.cbc.as_mut() else { return };
        if let Some((lines, count)) = run.take_lines() {
            self.pending_lines.push_str(&lines);
            self.pending_line_count += count;
        }
        if let Some(json) = run.take_status_json() {
            self.pending_outbound.push(Outbound::Cbc {
                rig: self.rig.clone(),
                json,
            });
        }
    }

    /// An acknowledgement on the rig's cmd/ack, received at wall time `now_unix_ns`: the
    /// edge's answer to a live CBC run's params.
    pub fn on_command_ack(&mut self, payload: &[u8], now_unix_ns: u64) {
        let Some(run) = self.cbc.as_mut().filter(|r| r.is_running()) else {
            return;
        };
        let Ok(ack) = CommandAck::decode(payload) else {
            return;
        };
        let next = run.on_ack(&ack, now_unix_ns, self.precision);
        self.follow_cbc(next, 0, now_unix_ns, true);
    }

    /// The edge's status JSON, received at wall time `now_unix_ns`: a safety envelope that
    /// latched or was disabled has switched the actuator off, so a running run ends at once
    /// (it would only iterate on an unmoving floor), and no run starts until it is reset.
    pub fn on_edge_status(&mut self, payload: &[u8], now_unix_ns: u64) {
        #[derive(serde::Deserialize)]
        struct EdgeStatus {
            safety_state: Option<String>,
        }
        let Ok(EdgeStatus {
            safety_state: Some(state),
        }) = serde_json::from_slice(payload)
        else {
            return;
        };
        if actuator_off(&state) && self.cbc.as_ref().is_some_and(LiveRun::is_running) {
            self.end_cbc(
                format!("the edge's safety envelope is {state}: the actuator is off"),
                now_unix_ns,
                true,
            );
        }
        self.edge_safety_state = Some(state);
    }

    /// Feeds the running run a live stream-0 block.
    fn feed_cbc(
        &mut self,
        block: &SampleBlock,
        columns: &[(lineproto::Column<'_>, &ingest::ChannelInfo)],
    ) {
        let Some(run) = self.cbc.as_mut().filter(|r| r.is_running()) else {
            return;
        };
        if block.stream_id != ESTIMATED_STREAM {
            return;
        }
        let channels = run.channels();
        let column = |id: u32| {
            columns
                .iter()
                .find(|(_, info)| info.id == id)
                .map(|(c, _)| c)
        };
        let (Some(accel), Some(force)) = (
            column(channels.accel_channel_id),
            column(channels.force_channel_id),
        ) else {
            return;
        };
        let n = accel.raw.len().min(force.raw.len());
        let a: Vec<_> = (0..n).map(|k| accel.value(k)).collect();
        let f: Vec<_> = (0..n).map(|k| force.value(k)).collect();
        let end_ns =
            block.first_timestamp_ns + block.sample_period_ns * (n.saturating_sub(1) as u64);
        let next = run.on_samples(block.first_sample_index, &a, &f, end_ns, self.precision);
        self.follow_cbc(
            next,
            block.first_sample_index + n as u64,
            unix_now_ns(),
            true,
        );
    }

    /// Estimates each rig's state on `model` (from the next birth on).
    pub fn with_model(mut self, model: Arc<ModelConfig>) -> Self {
        self.model = Some(model);
        self
    }

    /// The states made since the last call, oldest first, for publication; none while the
    /// rig is lost.
    pub fn take_states(&mut self) -> impl DoubleEndedIterator<Item = TwinState> + '_ {
        let owned = self.ownership.is_owned();
        self.states.drain(..).filter(move |_| owned)
    }

    /// Counts a state the publisher had no room for.
    pub fn count_dropped_state(&mut self) {
        self.states_dropped += 1;
    }

    /// The running estimator, if the latest manifest fits the model.
    pub fn estimator(&self) -> Option<&RigEstimator> {
        self.estimator.as_ref()
    }

    pub fn rig(&self) -> &RigId {
        &self.rig
    }

    /// Handles one event; returns the chunks to store, in order.
    pub fn handle(&mut self, event: &Event, now: Instant) -> Vec<Chunk> {
        match event {
            Event::Command(_) | Event::CommandAck(_) | Event::EdgeStatus(_) => {
                // Commands need wall time for their deadline: the actor calls `on_command`
                // and `on_command_ack`.
                debug!(rig = %self.rig, "Ignored a command or ack passed to handle().");
                return Vec::new();
            }
            Event::DeclaredLoss {
                first_seq,
                last_seq,
            } => {
                self.seq.declare_lost(*first_seq, *last_seq);
                // A continued run waits for no seq the edge declared lost.
                if let RestorePhase::CatchingUp { next_seq, .. } = &mut self.restore
                    && (*first_seq..=*last_seq).contains(next_seq)
                {
                    *next_seq = last_seq.saturating_add(1);
                    return self.release_caught_up(now);
                }
                return Vec::new();
            }
            Event::Model(model) => {
                self.on_model(Arc::clone(model));
                return Vec::new();
            }
            // The owner stores them; the edge replays what it has not persisted to whoever
            // owns the rig next. Dropped undecoded: every twin receives every rig's blocks.
            Event::Samples(_) if !self.ownership.is_owned() => {
                self.blocks_not_owned += 1;
                return Vec::new();
            }
            // The run they continue is being restored: they wait, undecoded, in order.
            Event::Samples(payload) if self.is_restoring() => {
                let RestorePhase::Restoring { epoch, held, .. } = &mut self.restore else {
                    return Vec::new();
                };
                held.push_back(payload.clone());
                if held.len() <= MAX_HELD_BLOCKS {
                    return Vec::new();
                }
                let epoch = *epoch;
                return self.on_restored(
                    epoch,
                    Err(RestoreFailure {
                        reason: "held_full",
                        detail: format!(
                            "more than {MAX_HELD_BLOCKS} blocks waited for the restore"
                        ),
                    }),
                    now,
                );
            }
            _ => {}
        }
        let frame = match ingest::decode_frame(&self.rig, event.kind(), event.payload()) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                debug!(rig = %self.rig, "Ignored an empty birth (a cleared retained message).");
                return Vec::new();
            }
            Err(rejection) => {
                self.reject(rejection);
                return Vec::new();
            }
        };
        match frame {
            Frame::Birth(birth) => self.on_birth(&birth, now),
            Frame::Samples(block) => self.on_samples(block, now),
            Frame::Death(death) => {
                self.on_death(&death);
                Vec::new()
            }
        }
    }

    /// Takes `birth` as the rig's current one without starting a run: its manifest, the
    /// live-rate window, the actuator, the birth the estimator is built from.
    fn note_birth(&mut self, birth: &RigBirth, manifest: Manifest) {
        self.live.reset(&manifest);
        self.start_hint = birth.oldest_unconfirmed_seq;
        self.actuator = birth.actuator;
        if self.model.is_some() {
            self.adoption.set_birth(birth);
        }
        self.manifests.insert(birth.session, Arc::new(manifest));
        while self.manifests.len() > MAX_MANIFESTS {
            self.manifests.pop_first();
        }
        self.online = true;
    }

    fn latest_session(&self) -> Option<u64> {
        self.manifests.last_key_value().map(|(&s, _)| s)
    }

    fn on_birth(&mut self, birth: &RigBirth, now: Instant) -> Vec<Chunk> {
        let manifest = match Manifest::from_birth(birth) {
            Ok(m) => m,
            Err(rejection) => {
                self.reject(rejection);
                return Vec::new();
            }
        };
        if let Some(latest) = self.latest_session() {
            if birth.session < latest {
                debug!(rig = %self.rig, session = birth.session, latest, "Ignored a birth older than the current session.");
                return Vec::new();
            }
            if birth.session == latest
                && self.manifests.get(&latest).is_some_and(|m| **m == manifest)
            {
                // The retained birth, delivered again after our reconnect.
                self.online = true;
                return Vec::new();
            }
        }
        info!(
            rig = %self.rig,
            session = birth.session,
            channels = manifest.channels.len(),
            floors = manifest.floors,
            edge_version = %birth.edge_version,
            "Rig born."
        );
        // The rig's first birth here, while a takeover restores its run: the run goes on.
        if self.is_restoring() && self.latest_session().is_none() {
            self.note_birth(birth, manifest);
            let ready: Vec<SampleBlock> = self.waiting.drain(..).collect();
            if let RestorePhase::Restoring { early, .. } = &mut self.restore {
                early.extend(ready);
            }
            return Vec::new();
        }
        // A new birth starts a new run: no restore or catch-up goes on across it.
        let mut chunks = self.end_catch_up(now);
        let (abandoned_early, abandoned) = match std::mem::take(&mut self.restore) {
            RestorePhase::Restoring { held, early, .. } => {
                *self.takeovers.entry("born_again".to_owned()).or_default() += 1;
                info!(rig = %self.rig, session = birth.session, "The rig was born again while its run was being restored; a new run starts.");
                (early, held)
            }
            _ => (VecDeque::new(), VecDeque::new()),
        };
        self.live.reset(&manifest);
        self.start_hint = birth.oldest_unconfirmed_seq;
        self.actuator = birth.actuator;
        // The birth switches the edge's loop off (`build_estimator`).
        self.end_cbc(
            format!("the rig was born again (session {})", birth.session),
            unix_now_ns(),
            false,
        );
        self.build_estimator(birth);
        self.manifests.insert(birth.session, Arc::new(manifest));
        while self.manifests.len() > MAX_MANIFESTS {
            self.manifests.pop_first();
        }
        self.online = true;
        let (ready, still_waiting): (VecDeque<_>, VecDeque<_>) = self
            .waiting
            .drain(..)
            .partition(|b| b.session <= birth.session);
        self.waiting = still_waiting;
        if !ready.is_empty() {
            debug!(rig = %self.rig, blocks = ready.len(), "Releasing blocks that arrived before the birth.");
        }
        chunks.extend(
            ready
                .into_iter()
                .filter_map(|b| self.process(b, now, false)),
        );
        for block in abandoned_early {
            chunks.extend(self.on_samples(block, now));
        }
        for payload in abandoned {
            chunks.extend(self.handle(&Event::Samples(payload), now));
        }
        chunks
    }

    fn build_estimator(&mut self, birth: &RigBirth) {
        self.build_estimator_continuing(birth, None);
    }

    /// Builds the estimator of a new run at `birth`, or, with `continuing`, continues that
    /// run (a takeover): its restored estimator, run id, checkpoint schedule and controller
    /// versions; controller, tracking and the edge's switch-off as at any birth.
    fn build_estimator_continuing(&mut self, birth: &RigBirth, continuing: Option<RestoredRun>) {
        if self.model.is_some() {
            self.adopt_at_birth(birth);
        }
        let Some(model) = &self.model else { return };
        let building = self.adoption.building(model.building_for(&self.rig));
        self.estimator = match RigEstimator::from_birth(
            birth,
            building,
            &model.noise,
            model.state_publish_hz,
        ) {
            Ok(estimator) => {
                let every_samples =
                    (model.checkpoint_interval_s / estimator.loop_io().dt_s).round() as u64;
                let (estimator, versions) = match continuing {
                    Some(run) => {
                        self.last_run = self.last_run.max(run.run().0);
                        self.recorder = Some(RunRecorder::continuing(
                            run.run(),
                            &run.birth.birth,
                            &run.birth.design,
                            every_samples,
                            run.last_checkpoint_index,
                            run.laws.keys().copied(),
                        ));
                        let (last_version, last_law) = run.last_law();
                        let highest = run.laws.keys().next_back().copied().unwrap_or(0);
                        let versions = (last_version, last_law.cloned(), highest);
                        (run.estimator, Some(versions))
                    }
                    None => {
                        self.last_run = (self.last_run + 1).max(unix_now_ns());
                        let design = EstimatorDesign {
                            building: building.clone(),
                            noise: model.noise.clone(),
                            state_publish_hz: model.state_publish_hz,
                            model: self.adoption.in_use().map(|m| m.label()),
                        };
                        self.recorder = Some(RunRecorder::new(
                            RunId(self.last_run),
                            birth,
                            &design,
                            every_samples,
                        ));
                        (estimator, None)
                    }
                };
                info!(rig = %self.rig, session = birth.session, floors = estimator.floors(), run = self.last_run, continued = versions.is_some(), "Estimating the rig's state.");
                self.misfit_warned = None;
                let host_floor = birth.actuator.as_ref().map_or(0, |a| a.floor);
                let plant = if self.controller.is_enabled() {
                    ActuatorPlant::design(building, usize::try_from(host_floor).unwrap_or(0))
                } else {
                    Err("twin-hosted control is disabled (control.enabled = false)".to_owned())
                };
                self.controller
                    .set_loop_io(Some(estimator.loop_io().clone()));
                if host_floor != 0 && self.controller.is_enabled() {
                    let off = self.controller.edge_off_params(&self.rig, unix_now_ns());
                    self.params.push(off);
                }
                if let Err(why) = self.controller.on_birth(plant) {
                    warn!(rig = %self.rig, session = birth.session, problem = %why, "The configured control law is not allowed on this rig; control stays off.");
                } else if self.controller.is_active() {
                    info!(rig = %self.rig, controller = %self.controller.describe(), "Twin-hosted control is on.");
                }
                if let Some((last_version, last_law, highest)) = versions {
                    self.controller
                        .continue_versions(last_version, last_law.as_ref(), highest);
                }
                self.build_tracking(&estimator);
                Some(estimator)
            }
            Err(misfit) => {
                let why = misfit.to_string();
                if self.misfit_warned.as_deref() != Some(why.as_str()) {
                    warn!(rig = %self.rig, session = birth.session, problems = %why, "The rig's manifest does not fit the structural model; storing samples without state estimation.");
                    self.misfit_warned = Some(why);
                }
                self.controller
                    .on_estimator_lost("the rig's state is not being estimated".to_owned());
                self.recorder = None;
                self.tracking = None;
                None
            }
        };
        self.period_mismatch_warned = false;
    }

    fn on_death(&mut self, death: &RigDeath) {
        if self
            .latest_session()
            .is_some_and(|latest| death.session < latest)
        {
            debug!(rig = %self.rig, session = death.session, "Ignored the death of an older session.");
            return;
        }
        self.online = false;
        let reason = if death.reason.is_empty() {
            "connection lost"
        } else {
            death.reason.as_str()
        };
        self.end_cbc(
            format!("the rig went offline ({reason})"),
            unix_now_ns(),
            true,
        );
        info!(rig = %self.rig, session = death.session, reason, "Rig died.");
    }

    fn on_samples(&mut self, block: SampleBlock, now: Instant) -> Vec<Chunk> {
        if let Err(rejection) = ingest::check_block_shape(&block, self.precision) {
            self.reject(rejection);
            return Vec::new();
        }
        if self
            .latest_session()
            .is_none_or(|latest| block.session > latest)
        {
            self.waiting.push_back(block);
            while self.waiting.len() > self.max_waiting {
                let Some(old) = self.waiting.pop_front() else {
                    break;
                };
                self.reject(Rejection::new(
                    RejectReason::PreBirthOverflow,
                    format!(
                        "block seq {} of session {} waited too long for its birth",
                        old.seq, old.session
                    ),
                ));
            }
            return Vec::new();
        }
        // A continued run folds the blocks above the watermark in seq order.
        if let RestorePhase::CatchingUp { next_seq, held, .. } = &mut self.restore
            && block.seq >= *next_seq
        {
            held.entry(block.seq).or_insert(block);
            return self.release_caught_up(now);
        }
        self.process(block, now, false).into_iter().collect()
    }

    /// The manifest a block was recorded under: the newest one not newer than its session,
    /// else the oldest known (its own was never seen).
    fn manifest_for(&self, session: u64) -> Option<Arc<Manifest>> {
        self.manifests
            .range(..=session)
            .next_back()
            .or_else(|| self.manifests.first_key_value())
            .map(|(_, m)| Arc::clone(m))
    }

    /// Stores a block (and estimates it if it is live); with `fold_backfill`, a backfilled
    /// block is folded in too (the catch-up of a continued run, in seq order).
    fn process(&mut self, block: SampleBlock, now: Instant, fold_backfill: bool) -> Option<Chunk> {
        let manifest = self.manifest_for(block.session)?;
        let columns = match manifest.columns(&block) {
            Ok(c) => c,
            Err(rejection) => {
                self.reject(rejection);
                return None;
            }
        };
        let header = BlockHeader {
            rig: self.rig.as_str(),
            stream_id: block.stream_id,
            session: block.session,
            seq: block.seq,
            first_sample_index: block.first_sample_index,
            first_timestamp_ns: block.first_timestamp_ns,
            sample_period_ns: block.sample_period_ns,
            backfill: block.backfill,
        };
        let just_columns: Vec<_> = columns.iter().map(|(c, _)| *c).collect();
        let samples = just_columns.first().map_or(0, |c| c.raw.len() as u64);
        let times = BlockTimes {
            stream_id: block.stream_id,
            session: block.session,
            first_timestamp_ns: block.first_timestamp_ns,
            samples,
            timeline: Timeline::of(
                block.first_sample_index,
                block.first_timestamp_ns,
                block.sample_period_ns,
            ),
        };
        let placement = self.stored_times.place(&times);
        let mut lines = String::new();
        let encoded = match placement {
            Placement::Main => {
                lineproto::encode_block(&mut lines, &header, &just_columns, self.precision)
            }
            Placement::Apart { .. } => lineproto::encode_block_apart(
                &mut lines,
                &header,
                &just_columns,
                self.precision,
                &times.timeline.tag(),
            ),
        };
        let mut line_count = match encoded {
            Ok(n) => n,
            Err(e) => {
                let reason = match e {
                    EncodeError::Empty => RejectReason::EmptyBlock,
                    EncodeError::Ragged { .. } => RejectReason::RaggedChannels,
                    EncodeError::TimestampOutOfRange { .. } => RejectReason::TimestampOutOfRange,
                    EncodeError::NonFinite { .. } => RejectReason::NonFiniteValue,
                };
                self.reject(Rejection::new(reason, e.to_string()));
                return None;
            }
        };
        let mut observation = self.seq.observe(block.seq);
        let first_sight = !matches!(observation, Observation::Duplicate);
        let newer_session = self.newest_block_session.is_some_and(|s| block.session > s);
        if newer_session && matches!(observation, Observation::Duplicate | Observation::Untracked) {
            // A new session restarting below the old seqs means the edge lost its state directory.
            warn!(
                rig = %self.rig,
                seq = block.seq,
                session = block.session,
                "Block seq went backwards in a new session; the edge lost its sequence state, so tracking restarts."
            );
            self.seq.restart_at(block.seq);
            observation = Observation::New;
        }
        self.newest_block_session = Some(
            self.newest_block_session
                .map_or(block.session, |s| s.max(block.session)),
        );
        match observation {
            // Storage has not acknowledged it yet (or lost it): the edge re-sends until the
            // watermark covers it, so store it again; InfluxDB overwrites the same points.
            Observation::Duplicate
                if self.persisted_seq.is_some_and(|p| block.seq > p) && block.backfill =>
            {
                debug!(rig = %self.rig, seq = block.seq, "Storing a re-sent block above the persisted watermark again.");
            }
            Observation::Duplicate => {
                debug!(rig = %self.rig, seq = block.seq, "Dropped a duplicate block.");
                return None;
            }
            Observation::GapOpened { missing } => {
                warn!(rig = %self.rig, seq = block.seq, missing, "Blocks are missing before this one.");
            }
            Observation::FilledHole | Observation::Untracked | Observation::New => {}
        }
        if first_sight && block.samples_lost_before > 0 {
            self.count_unread_at_edge(&block);
        }
        match placement {
            Placement::Main => {
                self.stored_times.record(&times);
                let late = fold_backfill && block.backfill;
                line_count += self.accept(&block, &columns, now, &mut lines, late);
            }
            Placement::Apart {
                reason,
                colliding_samples,
                stored,
                stored_session,
            } => {
                if observation != Observation::Duplicate {
                    *self
                        .blocks_stored_apart
                        .entry(reason.as_str().to_owned())
                        .or_default() += 1;
                    *self
                        .samples_stored_apart
                        .entry(reason.as_str().to_owned())
                        .or_default() += samples;
                }
                if self.apart_warned != Some((times.timeline, stored)) {
                    warn!(
                        rig = %self.rig,
                        seq = block.seq,
                        session = block.session,
                        stream = block.stream_id,
                        reason = reason.as_str(),
                        colliding_samples,
                        stored_session,
                        timeline = %times.timeline.tag(),
                        "A block's sample times are already stored from another edge clock; storing it apart (dtop_samples_overlap) so no stored sample changes. Later blocks of this clock that overlap are logged at debug."
                    );
                    self.apart_warned = Some((times.timeline, stored));
                } else {
                    debug!(rig = %self.rig, seq = block.seq, reason = reason.as_str(), colliding_samples, "Stored a block apart: its times are already stored.");
                }
                // Counted, but neither live nor estimated: its times are not the rig's.
                self.blocks_accepted += 1;
            }
        }
        if !self.pending_lines.is_empty() {
            lines.push_str(&self.pending_lines);
            line_count += self.pending_line_count;
            self.pending_lines.clear();
            self.pending_line_count = 0;
        }
        Some(Chunk {
            rig: self.rig.clone(),
            seq: block.seq,
            rig_start_seq: self.start_hint,
            lines,
            line_count,
        })
    }

    /// A block that passed every check and is on its way to storage: live blocks go to the
    /// live window and the estimator; the estimates that fall due become `dtop_twin_state`
    /// lines appended to `lines` and states in the outbox. Returns the lines appended.
    /// `late`: a replayed block a continued run folds in (not live now: no live window, no
    /// drive sent to the rig; its drive is still recorded, as the live twin's was).
    fn accept(
        &mut self,
        block: &SampleBlock,
        columns: &[(lineproto::Column<'_>, &ingest::ChannelInfo)],
        now: Instant,
        lines: &mut String,
        late: bool,
    ) -> usize {
        self.blocks_accepted += 1;
        // Stored as the edge flagged it; folded in as the live block it was.
        let unflagged;
        let block = if late {
            unflagged = SampleBlock {
                backfill: false,
                ..block.clone()
            };
            &unflagged
        } else {
            block
        };
        if block.backfill {
            return 0;
        }
        if !late {
            self.live.record(now, columns, block.sample_period_ns);
        }
        // Between two blocks: a waiting catalogue version is switched to here.
        let mut appended = self.switch_model_before(block, lines);
        self.track(block, columns);
        self.feed_cbc(block, columns);
        let Some(estimator) = &mut self.estimator else {
            return appended;
        };
        let checkpoint = self
            .recorder
            .as_ref()
            .and_then(|r| r.checkpoint_due(estimator, block.first_sample_index));
        match estimator.feed(block, columns, &mut self.due) {
            Fed::PeriodMismatch { block_period_ns } if !self.period_mismatch_warned => {
                warn!(rig = %self.rig, block_period_ns, "A block's sample period differs from the birth's sample rate; such blocks are stored but not estimated.");
                self.period_mismatch_warned = true;
            }
            // One drive per block, from the estimate at its last sample (see crate::control).
            Fed::Samples(n) if n > 0 => {
                let last = block.first_sample_index + n as u64 - 1;
                let law = self.controller.drive_law();
                let drive =
                    self.controller
                        .drive(&self.rig, last, law.as_ref(), estimator.estimator());
                let drive_n = drive.as_ref().map(|d| d.force_n);
                if !late {
                    self.drives.extend(drive);
                }
                if let Some(recorder) = &mut self.recorder {
                    let feed = FeedRecord {
                        run: recorder.run(),
                        session: block.session,
                        seq: block.seq,
                        first_sample_index: block.first_sample_index,
                        samples: n as u64,
                        first_timestamp_ns: block.first_timestamp_ns,
                        sample_period_ns: block.sample_period_ns,
                        controller_version: self.controller.version(),
                        drive_n,
                    };
                    // The block's own timestamps already passed the same range check.
                    appended += recorder
                        .record_fed(
                            lines,
                            self.rig.as_str(),
                            &feed,
                            checkpoint.as_ref(),
                            law.as_ref(),
                            self.precision,
                        )
                        .unwrap_or(0);
                }
            }
            _ => {}
        }
        if self.due.is_empty() {
            return appended;
        }
        let (_, floor_rms) = self.live.rms(now);
        let counters = self.seq.counters();
        let sample_rate_hz = self.live.samples_per_s(now);
        for estimate in self.due.drain(..) {
            let state = TwinState {
                rig_id: self.rig.as_str().to_owned(),
                sample_index: estimate.sample_index,
                timestamp_ns: estimate.timestamp_ns,
                floors: (1..)
                    .zip(estimate.displacement_m.iter().zip(&estimate.velocity_m_s))
                    .map(|(floor, (&displacement_m, &velocity_m_s))| FloorState {
                        floor,
                        displacement_m,
                        velocity_m_s,
                        accel_rms_m_s2: floor_rms.get(&floor).copied().unwrap_or(0.0),
                    })
                    .collect(),
                sample_rate_hz,
                blocks_stored: self.blocks_accepted,
                blocks_missing: counters.blocks_missing,
                blocks_duplicate: counters.blocks_duplicate,
                innovation_nis: estimate.nis_mean.unwrap_or(0.0),
                controller: self.controller.describe(),
                controller_active: self.controller.is_active(),
            };
            // The block's own timestamps already passed the same range check.
            appended += lineproto::encode_twin_state(lines, &state, self.precision).unwrap_or(0);
            self.states.push(state);
        }
        appended
    }

    fn count_unread_at_edge(&mut self, block: &SampleBlock) {
        let reason = match block.samples_lost_reason() {
            SampleLossReason::EdgeDown => "edge_down",
            SampleLossReason::NotDelivered => "not_delivered",
            SampleLossReason::FirmwareRestart => "firmware_restart",
            SampleLossReason::Unspecified => "unspecified",
        };
        *self
            .samples_unread_at_edge
            .entry(reason.to_owned())
            .or_default() += block.samples_lost_before;
        info!(
            rig = %self.rig,
            seq = block.seq,
            samples = block.samples_lost_before,
            reason,
            "The edge declared firmware samples no block carries."
        );
    }

    fn reject(&mut self, rejection: Rejection) {
        *self.rejected.entry(rejection.reason).or_default() += 1;
        warn!(rig = %self.rig, reason = %rejection.reason, detail = %rejection.detail, "Rejected a frame.");
    }

    /// This rig's numbers as its actor knows them (storage counters are merged in later).
    pub fn stats(&self, now: Instant) -> RigStats {
        let counters = self.seq.counters();
        let (channels, floor_accel_rms_m_s2) = self.live.rms(now);
        RigStats {
            session: self.latest_session(),
            online: self.online,
            samples_per_s: self.live.samples_per_s(now),
            channels,
            floor_accel_rms_m_s2,
            blocks_received: counters.blocks_received,
            blocks_stored: 0,
            blocks_missing: counters.blocks_missing,
            blocks_duplicate: counters.blocks_duplicate,
            blocks_declared_lost: counters.blocks_declared_lost,
            lines_written: 0,
            highest_contiguous_seq: self.seq.highest_contiguous(),
            blocks_waiting_for_birth: self.waiting.len(),
            frames_rejected: self.rejected.clone(),
            samples_unread_at_edge: self.samples_unread_at_edge.clone(),
            estimating: self.estimator.is_some(),
            dvf_limit: self.controller.dvf_limit().ok(),
            dvf_limit_unavailable: self.controller.dvf_limit().err(),
            twin_states_dropped: self.states_dropped,
            blocks_stored_apart: self.blocks_stored_apart.clone(),
            samples_stored_apart: self.samples_stored_apart.clone(),
            tracking: self.tracking.as_ref().map(RigTracking::counters),
            adoption: self.adoption.stats().clone(),
            owned: self.ownership.is_owned(),
            owner_epoch: self.ownership.epoch(),
            blocks_not_owned: self.blocks_not_owned,
            takeovers: self.takeovers.clone(),
            takeover_gaps_skipped: self.takeover_gaps_skipped,
        }
    }
}

// ---- Model adoption (crate::adopt): following a catalogue model, switching at a block
// boundary, re-checking the controller, recording the switch for replay ----
impl RigState {
    /// Follows catalogue model `name` (`None`: the configured building only).
    pub fn with_follow(mut self, name: Option<String>) -> Self {
        self.adoption = Adoption::new(name);
        self
    }

    /// The rig's model adoption, for inspection.
    pub fn adoption(&self) -> &Adoption {
        &self.adoption
    }

    /// A version of the catalogue model this rig follows (parsed, usable and physical: the
    /// router checked). It waits for the next block boundary; with no estimator running but
    /// a birth known (the configured building did not fit it), the rig is rebuilt on it now.
    pub fn on_model(&mut self, model: Arc<CatalogueModel>) {
        let label = model.label();
        if !self.adoption.offer(model) {
            debug!(rig = %self.rig, model = %label, "Ignored a model version already in use or waiting, or not followed.");
            return;
        }
        info!(rig = %self.rig, model = %label, in_use = %self.adoption.describe_in_use(), "A new model version will be adopted at the next block boundary.");
        if self.estimator.is_none()
            && self.model.is_some()
            && let Some(birth) = self.adoption.birth().cloned()
        {
            self.build_estimator(&birth);
        }
    }

    /// At a birth: remembers it, and adopts a waiting version whose floors fit it.
    fn adopt_at_birth(&mut self, birth: &RigBirth) {
        self.adoption.set_birth(birth);
        let floors = usize::try_from(birth.floors).unwrap_or(usize::MAX);
        match self.adoption.take_pending(floors) {
            Ok(Some(model)) => {
                info!(rig = %self.rig, model = %model.label(), session = birth.session, "The rig's estimator is built on the adopted model version.");
                self.adoption.switched(model, None);
            }
            Ok(None) => self.adoption.new_run(),
            Err(refusal) => {
                warn!(rig = %self.rig, reason = refusal.reason.as_str(), problem = %refusal, "Refused a model version for this rig.");
                self.adoption.new_run();
            }
        }
    }

    /// Before `block` is folded in: switches the running estimator to a waiting version
    /// (never inside a block), re-checks the controller on it, and appends the switch's
    /// `dtop_twin_model` record to `lines`. Returns the lines appended.
    fn switch_model_before(&mut self, block: &SampleBlock, lines: &mut String) -> usize {
        let (Some(estimator), Some(config)) = (&self.estimator, &self.model) else {
            return 0;
        };
        let fed_next = block.stream_id == ESTIMATED_STREAM
            && block.session == estimator.session()
            && estimator
                .next_sample_index()
                .is_none_or(|next| block.first_sample_index >= next);
        if self.adoption.pending().is_none() || !fed_next {
            return 0;
        }
        let Some(birth) = self.adoption.birth().cloned() else {
            return 0;
        };
        let model = match self.adoption.take_pending(estimator.floors()) {
            Ok(Some(model)) => model,
            Ok(None) => return 0,
            Err(refusal) => {
                warn!(rig = %self.rig, reason = refusal.reason.as_str(), problem = %refusal, "Refused a model version for this rig.");
                return 0;
            }
        };
        let rebuilt = adopt::rebuild_estimator(
            estimator,
            &birth,
            &model.building,
            &config.noise,
            config.state_publish_hz,
        );
        let (new, carried) = match rebuilt {
            Ok(rebuilt) => rebuilt,
            Err(misfit) => {
                self.adoption.count_refusal(RefusalReason::NotEstimable);
                warn!(rig = %self.rig, model = %model.label(), problems = %misfit, in_use = %self.adoption.describe_in_use(), "Refused a model version: no estimator can be built on it for this rig; it stays on the model in use.");
                return 0;
            }
        };
        let first = block.first_sample_index;
        let host_floor =
            usize::try_from(birth.actuator.as_ref().map_or(0, |a| a.floor)).unwrap_or(0);
        let plant = if self.controller.is_enabled() {
            ActuatorPlant::design(&model.building, host_floor)
        } else {
            Err("twin-hosted control is disabled (control.enabled = false)".to_owned())
        };
        let position = LoopPosition {
            estimating: true,
            next_sample_index: new.next_sample_index().unwrap_or(first),
        };
        let before = self.controller.describe();
        let recheck = self.controller.on_model_switch(
            &self.rig,
            plant,
            new.loop_io().clone(),
            unix_now_ns(),
            position,
        );
        let from = self.adoption.describe_in_use();
        self.rebase_tracking(&model.building, block);
        self.estimator = Some(new);
        self.adoption.switched(Arc::clone(&model), Some(first));
        info!(rig = %self.rig, model = %model.label(), from = %from, since_sample = first, state = carried.as_str(), dvf_limit = ?self.controller.dvf_limit().ok(), "Switched the rig's estimator to a new model version at a block boundary (state estimate {}).", carried.as_str());
        if let Some(why) = recheck.stopped {
            let reason = format!(
                "the controller ({before}) was stopped when the rig switched to model {}: {why}",
                model.label()
            );
            error!(rig = %self.rig, model = %model.label(), at_sample = first, reason = %reason, "Stopped the running controller: it is not allowed on the new model. Command it again within the new limit.");
            self.adoption.controller_stopped(ControllerStopped {
                reason,
                model: model.label(),
                at_sample_index: first,
            });
        }
        self.drives.extend(recheck.drive);
        self.params.extend(recheck.params);
        let Some(recorder) = &self.recorder else {
            return 0;
        };
        let record = ModelRecord {
            run: recorder.run(),
            name: model.name.clone(),
            version: model.version,
            first_sample_index: first,
            carried,
            building: model.building.clone(),
            time_ns: 0,
        };
        // The block's own timestamps already passed the same range check.
        record
            .encode(
                lines,
                self.rig.as_str(),
                block.first_timestamp_ns,
                self.precision,
            )
            .unwrap_or(0)
    }
}
// ---- end of model adoption ----

/// The task owning one [`RigState`].
#[derive(Debug)]
pub struct RigActor {
    state: RigState,
    events_rx: mpsc::Receiver<Event>,
    chunk_tx: mpsc::Sender<Chunk>,
    stats_tx: watch::Sender<RigStats>,
    /// Where estimated states, drives and command acks go for publication; `None` drops them.
    state_tx: Option<mpsc::Sender<Outbound>>,
    /// The storage writer's persisted watermarks; this rig's is handed to the state.
    watermarks: Option<watch::Receiver<crate::store::Watermarks>>,
    /// Where the rig's stored sample times are kept across restarts (the spool directory).
    times_dir: Option<PathBuf>,
    /// Saved since the last fsync.
    times_unsynced: bool,
    /// A save failed and was logged; logged again only after one succeeds.
    times_save_failed: bool,
    /// Identifications of tracking windows come back here from their blocking tasks.
    identified_tx: mpsc::Sender<(TrackingJob, Identification)>,
    identified_rx: mpsc::Receiver<(TrackingJob, Identification)>,
    /// An identification is running (at most one per rig, so tracking takes one core at most).
    identifying: bool,
    /// Windows due while one was running, oldest first (at most [`TRACKING_QUEUE`]).
    tracking_queue: VecDeque<TrackingJob>,
    /// The coordinator's word on which rigs this twin owns (`crate::owner`); `None` without
    /// one, or once its handle is gone (the last word stands).
    owners: Option<watch::Receiver<Owners>>,
    /// Where a takeover's restore reads the previous owner's run (InfluxDB 1.x).
    restore_query: Option<InfluxQuery>,
    /// Restores come back here from their tasks, with the owner epoch they are for.
    restored_tx: mpsc::Sender<(u64, Result<RestoredRun, RestoreFailure>)>,
    restored_rx: mpsc::Receiver<(u64, Result<RestoredRun, RestoreFailure>)>,
}

/// Due tracking windows a rig actor holds while an identification runs; more are skipped
/// and counted (the identification takes well under a second per window, so this only
/// happens when `interval_s` is far below that or the machine is overloaded).
pub const TRACKING_QUEUE: usize = 2;

impl RigActor {
    pub fn new(
        state: RigState,
        events_rx: mpsc::Receiver<Event>,
        chunk_tx: mpsc::Sender<Chunk>,
        stats_tx: watch::Sender<RigStats>,
    ) -> Self {
        let (identified_tx, identified_rx) = mpsc::channel(1);
        let (restored_tx, restored_rx) = mpsc::channel(1);
        Self {
            state,
            events_rx,
            chunk_tx,
            stats_tx,
            state_tx: None,
            watermarks: None,
            times_dir: None,
            times_unsynced: false,
            times_save_failed: false,
            identified_tx,
            identified_rx,
            identifying: false,
            tracking_queue: VecDeque::new(),
            owners: None,
            restore_query: None,
            restored_tx,
            restored_rx,
        }
    }

    /// Restores and continues the previous owner's run at a takeover, reading it from `query`
    /// (the twin's InfluxDB 1.x storage).
    pub fn with_restore(mut self, query: InfluxQuery) -> Self {
        self.restore_query = Some(query);
        self.state.restore_from_storage = true;
        self
    }

    /// Starts the restores the state asked for, each in its own task (bounded by
    /// [`RESTORE_TIMEOUT`]), so ingest of other rigs and this actor's stats go on; the rig's
    /// blocks wait in the state meanwhile.
    fn dispatch_restores(&mut self) {
        let requests: Vec<RestoreRequest> = self.state.take_restore_requests().collect();
        for request in requests {
            let tx = self.restored_tx.clone();
            let Some(query) = self.restore_query.clone() else {
                // Without a query the state never asks (`with_restore`).
                let _ = tx.try_send((
                    request.epoch,
                    Err(RestoreFailure {
                        reason: "storage_not_readable",
                        detail: String::new(),
                    }),
                ));
                continue;
            };
            let rig = self.state.rig().clone();
            let precision = self.state.precision;
            let watermarks = self.watermarks.clone();
            tokio::spawn(async move {
                let watermark_seq = match request.watermark_seq {
                    Some(seq) => Some(seq),
                    None => {
                        // The wait is for a retained watermark arriving late, which matters
                        // only if the previous owner stored a run: one that died before
                        // storing any estimate (before its first watermark, too) leaves
                        // nothing to continue, so the new run starts now, not 30 s later.
                        // Storage not answering: wait, as before.
                        let stored = tokio::time::timeout(
                            RESTORE_TIMEOUT,
                            crate::replay::restore::any_run(&query, &rig),
                        )
                        .await;
                        if let Ok(Ok(false)) = stored {
                            let failure = RestoreFailure {
                                reason: "no_run",
                                detail: "no estimate of the rig is stored, so no run waits to be continued".into(),
                            };
                            let _ = tx.send((request.epoch, Err(failure))).await;
                            return;
                        }
                        await_watermark(watermarks, &rig, WATERMARK_WAIT).await
                    }
                };
                let Some(watermark_seq) = watermark_seq else {
                    let failure = RestoreFailure {
                        reason: "no_watermark",
                        detail: format!(
                            "no persisted watermark arrived within {} s",
                            WATERMARK_WAIT.as_secs()
                        ),
                    };
                    let _ = tx.send((request.epoch, Err(failure))).await;
                    return;
                };
                let result = match tokio::time::timeout(
                    RESTORE_TIMEOUT,
                    crate::replay::restore::read(&query, &rig, precision, watermark_seq),
                )
                .await
                {
                    Ok(Ok(Some(run))) => Ok(run),
                    Ok(Ok(None)) => Err(RestoreFailure {
                        reason: "no_run",
                        detail: format!(
                            "no estimated block at or below the watermark (seq {watermark_seq}) is stored"
                        ),
                    }),
                    Ok(Err(e)) => Err(RestoreFailure::of(&e)),
                    Err(_) => Err(RestoreFailure::timed_out()),
                };
                // The actor is gone only at shutdown; the result is not needed then.
                let _ = tx.send((request.epoch, result)).await;
            });
        }
    }

    /// Hands `chunks` to storage, in order; `false` when the writer is gone.
    async fn store(&mut self, chunks: Vec<Chunk>) -> bool {
        self.save_times(false);
        for chunk in chunks {
            // Waiting here is the backpressure from storage to ingest.
            if self.chunk_tx.send(chunk).await.is_err() {
                warn!(rig = %self.state.rig(), "Storage writer is gone; stopping this rig.");
                self.publish();
                return false;
            }
        }
        true
    }

    /// Follows a coordinator's word on which rigs this twin owns (`crate::owner`), starting
    /// with what it says now.
    pub fn with_owners(mut self, owners: watch::Receiver<Owners>) -> Self {
        self.owners = Some(owners);
        self.follow_owners();
        self
    }

    /// Applies the rig's ownership as the coordinator last said it, if it changed.
    fn follow_owners(&mut self) {
        let Some(rx) = self.owners.as_mut() else {
            return;
        };
        let ownership = ownership_of(&rx.borrow_and_update(), self.state.rig());
        if ownership != self.state.ownership() {
            // A takeover restores at the latest persisted watermark.
            if let Some(rx) = self.watermarks.as_mut() {
                let persisted = rx.borrow_and_update().get(self.state.rig()).copied();
                self.state.set_persisted_seq(persisted);
            }
            self.state.set_ownership(ownership, unix_now_ns());
            self.offer_states();
            self.dispatch_restores();
        }
    }

    /// Starts identifying due tracking windows off the actor: one at a time, on the blocking
    /// pool, so ingest never waits for an identification.
    fn dispatch_tracking(&mut self) {
        let due: Vec<TrackingJob> = self.state.take_tracking_jobs().collect();
        for job in due {
            if self.tracking_queue.len() < TRACKING_QUEUE {
                self.tracking_queue.push_back(job);
            } else {
                self.state.count_tracking_skipped();
                warn!(rig = %self.state.rig(), "Identification is behind; skipped a tracking window.");
            }
        }
        if self.identifying {
            return;
        }
        let Some(config) = self.state.tracking().map(|t| t.config().clone()) else {
            self.tracking_queue.clear();
            return;
        };
        let Some(job) = self.tracking_queue.pop_front() else {
            return;
        };
        self.identifying = true;
        let tx = self.identified_tx.clone();
        tokio::task::spawn_blocking(move || {
            let identification = identify_window(&job.job, &config);
            // The actor is gone only at shutdown; the result is not needed then.
            let _ = tx.blocking_send((job, identification));
        });
    }

    /// Keeps the rig's stored sample times in `dir` (see [`crate::overlap`]), continuing from
    /// what a previous run saved there: a block that reuses times stored before a twin
    /// restart is still stored apart. Saved before each chunk that changed them goes to
    /// storage (without fsync; fsynced every [`STATS_INTERVAL`]), so a killed twin never
    /// stored a sample whose time its file does not know.
    pub fn with_stored_times(mut self, dir: PathBuf) -> Self {
        match overlap::load(&dir, self.state.rig()) {
            Ok(times) => {
                if times.runs() > 0 {
                    info!(rig = %self.state.rig(), runs = times.runs(), "Continuing from the stored sample times a previous run saved.");
                }
                self.state.set_stored_times(times);
            }
            Err(e) => {
                error!(rig = %self.state.rig(), path = %overlap::state_path(&dir, self.state.rig()).display(), error = %e, "Could not read the rig's stored sample times; overlaps with samples stored before this start go undetected.");
            }
        }
        self.times_dir = Some(dir);
        self
    }

    /// Saves the stored sample times if they changed (`sync`: also fsync what was saved).
    fn save_times(&mut self, sync: bool) {
        let Some(dir) = &self.times_dir else { return };
        let changed = self.state.stored_times_changed().is_some();
        let unsynced = sync && self.times_unsynced;
        if !(changed || unsynced) {
            return;
        }
        match overlap::save(dir, self.state.rig(), self.state.stored_times(), sync) {
            Ok(()) => {
                self.times_unsynced = !sync;
                self.times_save_failed = false;
            }
            Err(e) => {
                if !self.times_save_failed {
                    error!(rig = %self.state.rig(), dir = %dir.display(), error = %e, "Could not save the rig's stored sample times; after a restart, overlaps with them may go undetected.");
                }
                self.times_save_failed = true;
            }
        }
    }

    /// Follows the storage writer's persisted watermarks, so a block re-sent above this rig's
    /// is stored again instead of being dropped as a duplicate.
    pub fn with_watermarks(
        mut self,
        watermarks: watch::Receiver<crate::store::Watermarks>,
    ) -> Self {
        self.watermarks = Some(watermarks);
        self
    }

    /// Offers each estimated state, drive and command ack to `state_tx`; a full channel drops
    /// and counts it, so the publisher never slows ingest down.
    pub fn with_states(mut self, state_tx: mpsc::Sender<Outbound>) -> Self {
        self.state_tx = Some(state_tx);
        self
    }

    fn offer_states(&mut self) {
        let mut outbound: Vec<Outbound> = self.state.take_acks().map(Outbound::Ack).collect();
        outbound.extend(self.state.take_drives().map(Outbound::Drive));
        outbound.extend(self.state.take_params().map(Outbound::Params));
        outbound.extend(self.state.take_states().map(Outbound::State));
        outbound.extend(self.state.take_pending_outbound());
        let mut dropped = 0;
        for item in outbound {
            let Some(tx) = &self.state_tx else { continue };
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(item) {
                dropped += 1;
            }
        }
        for _ in 0..dropped {
            self.state.count_dropped_state();
        }
        if dropped > 0 {
            debug!(rig = %self.state.rig(), dropped, "The state publisher is behind; dropped estimated states, drives or acks.");
        }
    }

    /// Runs until the event channel closes (the router's shutdown), then publishes final stats.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(STATS_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = owners_changed(&mut self.owners) => {
                    if changed {
                        self.follow_owners();
                        self.publish();
                    } else {
                        self.owners = None;
                    }
                }
                event = self.events_rx.recv() => {
                    let Some(event) = event else { break };
                    // A loss takes effect before anything this event would publish.
                    if self
                        .owners
                        .as_ref()
                        .is_some_and(|rx| rx.has_changed().unwrap_or(false))
                    {
                        self.follow_owners();
                    }
                    // A takeover pending from the start restores at the latest watermark.
                    if let Some(rx) = self.watermarks.as_mut()
                        && (rx.has_changed().unwrap_or(false) || self.state.takeover_pending())
                    {
                        let persisted = rx.borrow_and_update().get(self.state.rig()).copied();
                        self.state.set_persisted_seq(persisted);
                    }
                    if self.state.takeover_pending() {
                        self.state.start_pending_takeover();
                        self.dispatch_restores();
                    }
                    let chunks = match &event {
                        Event::Command(payload) => {
                            self.state.on_command(payload, unix_now_ns());
                            Vec::new()
                        }
                        Event::CommandAck(payload) => {
                            self.state.on_command_ack(payload, unix_now_ns());
                            Vec::new()
                        }
                        Event::EdgeStatus(payload) => {
                            self.state.on_edge_status(payload, unix_now_ns());
                            Vec::new()
                        }
                        _ => self.state.handle(&event, Instant::now()),
                    };
                    self.dispatch_restores();
                    self.dispatch_tracking();
                    self.offer_states();
                    // Before storage can have them: see `with_stored_times`.
                    if !self.store(chunks).await {
                        return;
                    }
                    self.publish();
                }
                Some((epoch, result)) = self.restored_rx.recv() => {
                    let chunks = self.state.on_restored(epoch, result, Instant::now());
                    self.dispatch_tracking();
                    self.offer_states();
                    if !self.store(chunks).await {
                        return;
                    }
                    self.publish();
                }
                Some((job, identification)) = self.identified_rx.recv() => {
                    self.identifying = false;
                    self.state.on_identified(&job, &identification);
                    self.dispatch_tracking();
                    self.offer_states();
                    self.publish();
                }
                _ = tick.tick() => {
                    let chunks = self.state.check_catch_up(Instant::now());
                    if !chunks.is_empty() {
                        self.offer_states();
                        if !self.store(chunks).await {
                            return;
                        }
                    }
                    self.save_times(true);
                    self.publish();
                }
            }
        }
        self.save_times(true);
        self.publish();
        debug!(rig = %self.state.rig(), "Rig actor stopped.");
    }

    fn publish(&self) {
        self.stats_tx.send_replace(self.state.stats(Instant::now()));
    }
}

/// Resolves when the coordinator's word changes (`true`) or its handle is gone (`false`);
/// never without a coordinator.
async fn owners_changed(owners: &mut Option<watch::Receiver<Owners>>) -> bool {
    match owners {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Whether an edge safety state (`dtop_edge::safety::SafetyState::as_str`) means the actuator
/// stays off until an operator acts.
/// Drains `queue` for publication, each item stamped with the owner epoch by `stamp`; nothing
/// while the rig is lost.
fn take_owned<'a, T>(
    queue: &'a mut Vec<T>,
    ownership: Ownership,
    stamp: impl Fn(&mut T, u64) + 'a,
) -> impl DoubleEndedIterator<Item = T> + 'a {
    let (owned, epoch) = (ownership.is_owned(), ownership.epoch());
    queue.drain(..).filter(move |_| owned).map(move |mut item| {
        stamp(&mut item, epoch);
        item
    })
}

fn actuator_off(safety_state: &str) -> bool {
    matches!(safety_state, "latched" | "disabled")
}

/// Wall time, ns since the Unix epoch: command deadlines are wall-clock instants, which
/// tokio's monotonic clock cannot express.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_proto::Message;
    use dtop_proto::v1::{Channel, ChannelKind, ChannelSamples};

    fn rig() -> RigId {
        RigId::new("r1").unwrap()
    }

    fn birth(session: u64) -> Event {
        let b = RigBirth {
            rig_id: "r1".into(),
            session,
            channels: vec![Channel {
                id: 1,
                name: "floor1_accel".into(),
                kind: ChannelKind::Acceleration as i32,
                scale: 0.5,
                floor: 1,
                ..Default::default()
            }],
            floors: 3,
            ..Default::default()
        };
        Event::Birth(b.encode_to_vec().into())
    }

    fn block(session: u64, seq: u64) -> Event {
        let b = SampleBlock {
            rig_id: "r1".into(),
            session,
            seq,
            first_sample_index: seq * 2,
            sample_period_ns: 1_000_000,
            first_timestamp_ns: 1_700_000_000_000_000_000 + seq * 2_000_000,
            channels: vec![ChannelSamples {
                channel_id: 1,
                raw: vec![2, 4],
            }],
            ..Default::default()
        };
        Event::Samples(b.encode_to_vec().into())
    }

    fn seqs(chunks: &[Chunk]) -> Vec<u64> {
        chunks.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn stores_scaled_samples_of_a_born_rig() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        assert!(s.handle(&birth(1), now).is_empty());
        let chunks = s.handle(&block(1, 5), now);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].line_count, 3);
        assert!(chunks[0].lines.starts_with(
            "dtop_samples,rig=r1,stream=0 floor1_accel=1 1700000000010000\n\
             dtop_samples,rig=r1,stream=0 floor1_accel=2 1700000000011000\n"
        ));
        let stats = s.stats(now);
        assert!(stats.online);
        assert_eq!(stats.blocks_received, 1);
        assert_eq!(
            stats.floor_accel_rms_m_s2.get(&1).copied(),
            Some((2.5f64).sqrt())
        );
    }

    #[test]
    fn a_new_session_block_at_stored_times_is_stored_apart_and_counted() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        s.handle(&block(1, 5), now);
        // A restarted edge: the same times, other sample indices and values.
        s.handle(&birth(2), now);
        let mut b = SampleBlock::decode(block(2, 9).payload()).unwrap();
        b.first_timestamp_ns = 1_700_000_000_000_000_000 + 11_000_000;
        b.first_sample_index = 0;
        let chunks = s.handle(&Event::Samples(b.encode_to_vec().into()), now);
        assert_eq!(chunks.len(), 1);
        assert!(
            chunks[0].lines.starts_with(
                "dtop_samples_overlap,rig=r1,stream=0,timeline=1700000000011000000/1000000 floor1_accel=1 1700000000011000\n"
            ),
            "{}",
            chunks[0].lines
        );
        assert!(
            chunks[0]
                .lines
                .contains("\ndtop_blocks_overlap,rig=r1,stream=0,timeline=1700000000011000000/")
        );
        let stats = s.stats(now);
        assert_eq!(stats.blocks_stored_apart.get("other_session"), Some(&1));
        assert_eq!(stats.samples_stored_apart.get("other_session"), Some(&2));
        // The same block of the first session again is harmless; the next block of the new
        // clock, past the stored times, goes where it belongs.
        assert!(s.handle(&block(1, 5), now).is_empty());
        b.seq = 10;
        b.first_sample_index = 2;
        b.first_timestamp_ns += 2_000_000;
        let chunks = s.handle(&Event::Samples(b.encode_to_vec().into()), now);
        assert!(chunks[0].lines.starts_with("dtop_samples,rig=r1,stream=0 "));
        assert_eq!(
            s.stats(now).blocks_stored_apart.get("other_session"),
            Some(&1)
        );
    }

    #[test]
    fn holds_blocks_until_the_birth_arrives_then_releases_them_in_order() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        assert!(s.handle(&block(1, 1), now).is_empty());
        assert!(s.handle(&block(1, 2), now).is_empty());
        assert_eq!(s.stats(now).blocks_waiting_for_birth, 2);
        assert_eq!(seqs(&s.handle(&birth(1), now)), [1, 2]);
        assert_eq!(s.stats(now).blocks_waiting_for_birth, 0);
    }

    #[test]
    fn drops_and_counts_the_oldest_waiting_block_when_the_queue_overflows() {
        let mut s = RigState::new(rig(), Precision::Us, 2);
        let now = Instant::now();
        for seq in 1..=3 {
            s.handle(&block(1, seq), now);
        }
        assert_eq!(
            s.stats(now)
                .frames_rejected
                .get(&RejectReason::PreBirthOverflow),
            Some(&1)
        );
        assert_eq!(seqs(&s.handle(&birth(1), now)), [2, 3]);
    }

    #[test]
    fn blocks_of_a_newer_session_wait_for_that_session_birth() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        assert!(s.handle(&block(2, 10), now).is_empty());
        assert_eq!(seqs(&s.handle(&block(1, 9), now)), [9]);
        assert_eq!(seqs(&s.handle(&birth(2), now)), [10]);
    }

    #[test]
    fn duplicates_are_counted_and_not_stored_again() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        assert_eq!(seqs(&s.handle(&block(1, 1), now)), [1]);
        assert!(s.handle(&block(1, 1), now).is_empty());
        assert_eq!(s.stats(now).blocks_duplicate, 1);
    }

    #[test]
    fn samples_the_edge_declared_unread_are_counted_by_reason_once_per_block() {
        let with_loss = |seq: u64, samples: u64, reason: SampleLossReason| {
            let Event::Samples(bytes) = block(1, seq) else {
                unreachable!("block() makes samples")
            };
            let mut b = SampleBlock::decode(bytes).unwrap_or_else(|e| panic!("{e}"));
            b.samples_lost_before = samples;
            b.samples_lost_reason = reason as i32;
            Event::Samples(b.encode_to_vec().into())
        };
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        s.handle(&with_loss(1, 30, SampleLossReason::EdgeDown), now);
        // A redelivery of the same block declares nothing new.
        s.handle(&with_loss(1, 30, SampleLossReason::EdgeDown), now);
        s.handle(&with_loss(2, 5, SampleLossReason::NotDelivered), now);
        s.handle(&block(1, 3), now);
        let unread = s.stats(now).samples_unread_at_edge;
        assert_eq!(
            unread,
            [
                ("edge_down".to_owned(), 30),
                ("not_delivered".to_owned(), 5)
            ]
            .into()
        );
    }

    #[test]
    fn a_resent_block_above_the_persisted_watermark_is_stored_again() {
        let backfill = |seq| {
            let Event::Samples(p) = block(1, seq) else {
                unreachable!()
            };
            let mut b = SampleBlock::decode(p).unwrap();
            b.backfill = true;
            Event::Samples(b.encode_to_vec().into())
        };
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        assert_eq!(seqs(&s.handle(&block(1, 1), now)), [1]);
        assert_eq!(seqs(&s.handle(&block(1, 2), now)), [2]);
        // Storage has acknowledged seq 1 only: the edge re-sends 1 and 2 as backfill.
        s.set_persisted_seq(Some(1));
        assert!(
            s.handle(&backfill(1), now).is_empty(),
            "covered by the watermark"
        );
        assert_eq!(seqs(&s.handle(&backfill(2), now)), [2], "not yet durable");
        // A live duplicate (a QoS 1 redelivery) is still dropped.
        assert!(s.handle(&block(1, 2), now).is_empty());
    }

    #[test]
    fn a_repeated_retained_birth_changes_nothing_and_stale_ones_are_ignored() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(2), now);
        s.handle(&birth(2), now);
        s.handle(&birth(1), now);
        assert_eq!(s.stats(now).session, Some(2));
        assert!(s.stats(now).frames_rejected.is_empty());
    }

    #[test]
    fn a_death_of_the_current_session_marks_the_rig_offline_but_older_ones_do_not() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(2), now);
        let death = |session| {
            Event::Death(
                RigDeath {
                    rig_id: "r1".into(),
                    session,
                    reason: String::new(),
                }
                .encode_to_vec()
                .into(),
            )
        };
        s.handle(&death(1), now);
        assert!(s.stats(now).online);
        s.handle(&death(2), now);
        assert!(!s.stats(now).online);
    }

    #[test]
    fn bad_frames_are_counted_by_reason_and_never_stored() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        assert!(
            s.handle(&Event::Samples(Bytes::from_static(&[0xff, 0xff])), now)
                .is_empty()
        );
        let other_rig = SampleBlock {
            rig_id: "r2".into(),
            ..Default::default()
        };
        assert!(
            s.handle(&Event::Samples(other_rig.encode_to_vec().into()), now)
                .is_empty()
        );
        let unknown = SampleBlock {
            rig_id: "r1".into(),
            session: 1,
            sample_period_ns: 1_000_000,
            channels: vec![ChannelSamples {
                channel_id: 9,
                raw: vec![1],
            }],
            ..Default::default()
        };
        assert!(
            s.handle(&Event::Samples(unknown.encode_to_vec().into()), now)
                .is_empty()
        );
        let rejected = s.stats(now).frames_rejected;
        assert_eq!(rejected.get(&RejectReason::Decode), Some(&1));
        assert_eq!(rejected.get(&RejectReason::RigMismatch), Some(&1));
        assert_eq!(rejected.get(&RejectReason::UnknownChannel), Some(&1));
        assert_eq!(s.stats(now).blocks_received, 0);
    }

    #[test]
    fn a_seq_restart_in_a_new_session_restarts_tracking_instead_of_dropping_blocks() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        assert_eq!(seqs(&s.handle(&block(1, 100), now)), [100]);
        s.handle(&birth(2), now);
        assert_eq!(seqs(&s.handle(&block(2, 0), now)), [0]);
        assert_eq!(seqs(&s.handle(&block(2, 1), now)), [1]);
        assert_eq!(s.stats(now).blocks_duplicate, 0);
    }

    #[test]
    fn backfill_of_an_old_session_is_stored_without_restarting_tracking() {
        let mut s = RigState::new(rig(), Precision::Us, 4);
        let now = Instant::now();
        s.handle(&birth(1), now);
        s.handle(&block(1, 10), now);
        s.handle(&birth(2), now);
        assert_eq!(seqs(&s.handle(&block(2, 14), now)), [14]);
        assert_eq!(s.stats(now).blocks_missing, 3);
        assert_eq!(seqs(&s.handle(&block(1, 12), now)), [12]);
        assert_eq!(s.stats(now).blocks_missing, 2);
    }

    /// A seeded Gaussian source (xorshift64* and Box–Muller), so the simulation is repeatable.
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn gaussian(&mut self) -> f64 {
            let (a, b) = (self.uniform(), self.uniform());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        }
    }

    const ACCEL_SCALE: f64 = 1e-4;
    const FORCE_SCALE: f64 = 1e-3;
    const SIM_BLOCK: usize = 100;

    fn southampton_birth(floors: u32, with_force: bool) -> Event {
        southampton_birth_with_actuator(floors, with_force, 0)
    }

    fn southampton_birth_with_actuator(
        floors: u32,
        with_force: bool,
        actuator_floor: u32,
    ) -> Event {
        let mut channels: Vec<Channel> = (1..=floors)
            .map(|floor| Channel {
                id: floor,
                name: format!("floor{floor}_accel"),
                kind: ChannelKind::Acceleration as i32,
                unit: "m/s^2".into(),
                scale: ACCEL_SCALE,
                sample_rate_hz: 1000.0,
                floor,
                ..Default::default()
            })
            .collect();
        if with_force {
            channels.push(Channel {
                id: 10,
                name: "shaker_force".into(),
                kind: ChannelKind::Force as i32,
                unit: "N".into(),
                scale: FORCE_SCALE,
                sample_rate_hz: 1000.0,
                floor: 1,
                ..Default::default()
            });
        }
        let b = RigBirth {
            rig_id: "r1".into(),
            session: 1,
            channels,
            floors: 3,
            actuator: Some(dtop_proto::v1::ActuatorLimits {
                floor: actuator_floor,
                ..Default::default()
            }),
            ..Default::default()
        };
        Event::Birth(b.encode_to_vec().into())
    }

    /// Simulated blocks of the Southampton building shaken on floor 1 by a 1 N RMS white
    /// force, with accelerometer noise at the model's level, quantised to raw counts; and the
    /// true floor velocities per sample.
    fn simulate(blocks: usize) -> (Vec<Event>, Vec<[f64; 3]>) {
        use dtop_dynamics::ShearBuilding;
        use nalgebra::DVector;
        let model = ShearBuilding::southampton()
            .state_space()
            .discretize_zoh(1e-3)
            .unwrap();
        let mut x = DVector::zeros(model.n_states());
        let mut u = DVector::zeros(model.n_inputs());
        let mut y = DVector::zeros(model.n_outputs());
        let mut noise = Noise(0x5EED_1234_ABCD_0001);
        let mut truth = Vec::new();
        let mut events = Vec::new();
        for seq in 0..blocks as u64 {
            let mut accel: Vec<Vec<i32>> = (0..3).map(|_| Vec::with_capacity(SIM_BLOCK)).collect();
            let mut force = Vec::with_capacity(SIM_BLOCK);
            for _ in 0..SIM_BLOCK {
                let f = noise.gaussian();
                u[model.input_floor_force(1)] = f;
                model.step(&mut x, &u, &mut y);
                force.push((f / FORCE_SCALE).round() as i32);
                let mut v = [0.0; 3];
                for floor in 1..=3 {
                    let a = y[model.output_floor_accel(floor)] + 0.002 * noise.gaussian();
                    accel[floor - 1].push((a / ACCEL_SCALE).round() as i32);
                    v[floor - 1] = y[model.output_floor_velocity(floor)];
                }
                truth.push(v);
            }
            let mut channels: Vec<ChannelSamples> = accel
                .into_iter()
                .zip(1..)
                .map(|(raw, channel_id)| ChannelSamples { channel_id, raw })
                .collect();
            channels.push(ChannelSamples {
                channel_id: 10,
                raw: force,
            });
            let first = seq * SIM_BLOCK as u64;
            let b = SampleBlock {
                rig_id: "r1".into(),
                session: 1,
                seq,
                first_sample_index: first,
                sample_period_ns: 1_000_000,
                first_timestamp_ns: 1_700_000_000_000_000_000 + first * 1_000_000,
                channels,
                ..Default::default()
            };
            events.push(Event::Samples(b.encode_to_vec().into()));
        }
        (events, truth)
    }

    fn modelled(state_publish_hz: f64) -> RigState {
        let model = ModelConfig {
            state_publish_hz,
            ..ModelConfig::default()
        };
        RigState::new(rig(), Precision::Us, 4).with_model(Arc::new(model))
    }

    /// The shell around the tracking core: windows fall due in sample time as blocks are
    /// accepted, and an identification's record goes into the next block's chunk, to the
    /// publisher and into the stats.
    #[test]
    fn tracked_windows_fall_due_and_their_records_ride_on_the_next_chunk() {
        let (events, _) = simulate(41);
        let tracking = TrackingConfig {
            enabled: true,
            window_s: 2.0,
            interval_s: 1.0,
            block_rows: 20,
            max_order: 12,
            ..TrackingConfig::default()
        };
        let mut s = modelled(10.0).with_tracking(Arc::new(tracking.clone()));
        let now = Instant::now();
        s.handle(&southampton_birth(3, true), now);
        assert!(s.tracking().is_some());
        for e in &events[..40] {
            s.handle(e, now);
        }
        // 4 s of samples: windows end at 2, 3 and 4 s.
        let jobs: Vec<TrackingJob> = s.take_tracking_jobs().collect();
        let ends: Vec<f64> = jobs.iter().map(|j| j.job.end_s()).collect();
        assert_eq!(ends, vec![2.0, 3.0, 4.0]);
        assert_eq!(
            jobs[0].end_timestamp_ns,
            1_700_000_000_000_000_000 + 2_000 * 1_000_000
        );
        let identification = identify_window(&jobs[0].job, &tracking);
        s.on_identified(&jobs[0], &identification);
        let outbound: Vec<Outbound> = s.take_pending_outbound().collect();
        assert!(matches!(&outbound[0], Outbound::Modes { rig, .. } if rig.as_str() == "r1"));
        let chunks = s.handle(&events[40], now);
        assert_eq!(chunks.len(), 1);
        assert!(
            chunks[0]
                .lines
                .lines()
                .any(|l| l.starts_with("dtop_twin_modes,rig=r1,mode=")
                    && l.ends_with(" 1700000002000000")),
            "{}",
            chunks[0].lines
        );
        let counters = s.stats(now).tracking.unwrap();
        assert_eq!(
            counters.windows_identified_total + counters.windows_failed_total,
            1
        );
        // Off by default: no tracking, no jobs.
        let mut off = modelled(10.0).with_tracking(Arc::new(TrackingConfig::default()));
        off.handle(&southampton_birth(3, true), now);
        assert!(off.tracking().is_none());
    }

    #[test]
    fn estimated_velocities_track_a_simulated_southampton_building() {
        let (events, truth) = simulate(40);
        // One state per sample, so every estimate can be compared with the truth.
        let mut s = modelled(1000.0);
        let now = Instant::now();
        s.handle(&southampton_birth(3, true), now);
        assert!(s.estimator().is_some());
        let mut states = Vec::new();
        for e in &events {
            assert_eq!(s.handle(e, now).len(), 1);
            states.extend(s.take_states());
        }
        assert_eq!(states.len(), truth.len());
        // One second of burn-in: the filter starts at rest and the lightest-damped mode
        // (0.2 %) needs a few hundred ms of closed-loop settling.
        let burn_in = 1000;
        for floor in 0..3 {
            let (mut err_sq, mut truth_sq) = (0.0, 0.0);
            for (state, v) in states.iter().zip(&truth).skip(burn_in) {
                let estimate = state.floors[floor].velocity_m_s;
                err_sq += (estimate - v[floor]).powi(2);
                truth_sq += v[floor].powi(2);
            }
            let ratio = (err_sq / truth_sq).sqrt();
            assert!(
                ratio < 0.05,
                "floor {}: RMS error is {ratio} of the RMS velocity",
                floor + 1
            );
        }
        let nis = states.last().unwrap().innovation_nis;
        // Mean NIS per channel is about 1 for a consistent filter (quantisation and the
        // model's extra input noise make it a little smaller).
        assert!((0.3..3.0).contains(&nis), "NIS {nis}");
    }

    #[test]
    fn publishes_and_stores_states_at_the_configured_rate() {
        let (events, _) = simulate(20);
        let mut s = modelled(10.0);
        let now = Instant::now();
        s.handle(&southampton_birth(3, true), now);
        let mut states = Vec::new();
        let mut state_lines = Vec::new();
        for e in &events {
            let chunks = s.handle(e, now);
            let chunk = &chunks[0];
            let lines: Vec<&str> = chunk.lines.lines().collect();
            assert_eq!(lines.len(), chunk.line_count);
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.starts_with("dtop_samples,"))
                    .count(),
                SIM_BLOCK
            );
            state_lines.extend(
                lines
                    .iter()
                    .filter(|l| l.starts_with("dtop_twin_state,"))
                    .map(|l| l.to_string()),
            );
            states.extend(s.take_states());
        }
        // Two seconds of 1 kHz samples at 10 Hz: one state every 100 samples.
        assert_eq!(states.len(), 20);
        let indices: Vec<u64> = states.iter().map(|s| s.sample_index).collect();
        assert_eq!(indices, (0..20).map(|i| i * 100).collect::<Vec<_>>());
        let last = states.last().unwrap();
        assert_eq!(
            last.timestamp_ns,
            1_700_000_000_000_000_000 + 1900 * 1_000_000
        );
        assert_eq!(last.floors.len(), 3);
        assert!(last.floors.iter().all(|f| f.accel_rms_m_s2 > 0.0));
        assert_eq!(last.blocks_stored, 20);
        assert_eq!(last.controller, "off");
        assert!(!last.controller_active);
        assert_eq!(state_lines.len(), 20);
        let line = state_lines.last().unwrap();
        assert!(
            line.starts_with("dtop_twin_state,rig=r1 floor1_displacement_m="),
            "{line}"
        );
        for field in ["floor3_velocity_m_s=", ",nis="] {
            assert!(line.contains(field), "{line}");
        }
        assert!(line.ends_with(" 1700000001900000"), "{line}");
    }

    #[test]
    fn a_manifest_that_does_not_fit_the_model_still_stores_every_sample() {
        let (events, _) = simulate(3);
        let mut s = modelled(10.0);
        let now = Instant::now();
        // No force gauge: the known input is missing.
        s.handle(&southampton_birth(3, false), now);
        assert!(s.estimator().is_none());
        assert!(!s.stats(now).estimating);
        for e in &events {
            // The force channel is not in this manifest, so blocks without it are needed.
            let Event::Samples(p) = e else { unreachable!() };
            let mut b = SampleBlock::decode(p.clone()).unwrap();
            b.channels.retain(|c| c.channel_id != 10);
            let chunks = s.handle(&Event::Samples(b.encode_to_vec().into()), now);
            assert_eq!(chunks[0].line_count, SIM_BLOCK + 1);
            assert!(!chunks[0].lines.contains("dtop_twin_state"));
        }
        assert_eq!(s.take_states().count(), 0);
        // Two floors announced for a three-floor model: no estimation either.
        let mut s = modelled(10.0);
        s.handle(&southampton_birth(2, true), now);
        assert!(s.estimator().is_none());
    }

    #[test]
    fn backfill_blocks_are_stored_but_not_estimated() {
        let (events, _) = simulate(2);
        let mut s = modelled(10.0);
        let now = Instant::now();
        s.handle(&southampton_birth(3, true), now);
        let Event::Samples(p) = &events[0] else {
            unreachable!()
        };
        let mut b = SampleBlock::decode(p.clone()).unwrap();
        b.backfill = true;
        let chunks = s.handle(&Event::Samples(b.encode_to_vec().into()), now);
        assert_eq!(chunks[0].line_count, SIM_BLOCK + 1);
        assert_eq!(s.take_states().count(), 0);
    }

    use crate::control::Law;
    use dtop_proto::v1::command_ack::Status;
    use dtop_proto::v1::{
        ActuatorLimits, Command, RunCbc, SetControl, command::Kind, set_control::Law as WireLaw,
    };

    /// Far in the future of any test's wall clock.
    const NOW_NS: u64 = 1_800_000_000_000_000_000;

    /// A modelled rig with control enabled, born with the actuator on floor 3, and `blocks`
    /// simulated blocks ingested; also the blocks not yet ingested.
    fn controlled(blocks: usize) -> (RigState, Vec<Event>) {
        let (events, _) = simulate(blocks + 3);
        let mut s = modelled(10.0).with_control(ControlConfig {
            enabled: true,
            ..ControlConfig::default()
        });
        let now = Instant::now();
        s.handle(&southampton_birth_with_actuator(3, true, 3), now);
        assert!(s.estimator().is_some());
        let critical = s.controller().plant().unwrap().critical_gain_a_per_m_s;
        assert!((critical - 1.79465).abs() < 1e-4, "{critical}");
        let mut rest = events.into_iter();
        for e in rest.by_ref().take(blocks) {
            s.handle(&e, now);
        }
        // Control is off until commanded, so no drives so far.
        assert_eq!(s.take_drives().count(), 0);
        (s, rest.collect())
    }

    #[test]
    fn the_status_carries_the_dvf_limit_the_controller_enforces_or_why_there_is_none() {
        let (s, _) = controlled(0);
        let stats = s.stats(Instant::now());
        let limit = stats.dvf_limit.expect("a limit once born with an actuator");
        assert_eq!(stats.dvf_limit_unavailable, None);
        assert_eq!(limit.floor, 3);
        // h_crit = 1.79465 A/(m/s) (above) times the default coil's Bl = 10 N/A.
        assert!(
            (limit.critical_gain_n_s_per_m - 17.9465).abs() < 1e-3,
            "{limit:?}"
        );
        assert_eq!(limit.max_fraction_of_critical, 0.8);
        assert!((limit.max_gain_n_s_per_m - 0.8 * limit.critical_gain_n_s_per_m).abs() < 1e-12);

        let unborn = modelled(10.0).with_control(ControlConfig {
            enabled: true,
            ..ControlConfig::default()
        });
        let stats = unborn.stats(Instant::now());
        assert_eq!(stats.dvf_limit, None);
        assert!(
            stats
                .dvf_limit_unavailable
                .as_deref()
                .is_some_and(|why| why.contains("not been born")),
            "{stats:?}"
        );
    }

    fn set_control(id: &str, law: WireLaw, gain_n_s_per_m: f64, deadline_ns: u64) -> Vec<u8> {
        Command {
            id: id.into(),
            deadline_ns,
            target_rig: "r1".into(),
            issued_by: "test".into(),
            kind: Some(Kind::SetControl(SetControl {
                law: law as i32,
                gain_n_s_per_m,
                ..SetControl::default()
            })),
        }
        .encode_to_vec()
    }

    fn only_ack(s: &mut RigState) -> CommandAck {
        let acks: Vec<_> = s.take_acks().collect();
        assert_eq!(acks.len(), 1, "{acks:?}");
        acks.into_iter().next().unwrap()
    }

    #[test]
    fn refuses_a_dvf_gain_above_the_limit_and_says_the_critical_gain_in_both_units() {
        let (mut s, _) = controlled(2);
        // 0.8 × 17.946 N·s/m = 14.36 N·s/m is the limit.
        s.on_command(&set_control("c1", WireLaw::Dvf, 15.0, 0), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Refused);
        assert_eq!(ack.command_id, "c1");
        assert_eq!(ack.rig_id, "r1");
        for part in [
            "h_crit = 1.7946 A/(m/s)",
            "= 17.946 N·s/m",
            "0.8",
            "floor 3",
        ] {
            assert!(
                ack.reason.contains(part),
                "{part:?} not in {:?}",
                ack.reason
            );
        }
        assert_eq!(s.controller().law(), Law::Off);
        assert_eq!(s.take_drives().count(), 0);
    }

    #[test]
    fn applies_a_dvf_gain_below_the_limit_from_the_next_sample() {
        let (mut s, rest) = controlled(2);
        let before = s.controller().version();
        s.on_command(&set_control("c1", WireLaw::Dvf, 14.0, NOW_NS + 1), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Applied, "{}", ack.reason);
        assert_eq!(ack.applied_at_sample_index, 2 * SIM_BLOCK as u64);
        assert!(ack.reason.is_empty());
        // SetControl carries Bl·h; Bl = 10 N/A.
        assert_eq!(
            s.controller().law(),
            Law::Dvf {
                gain_a_per_m_s: 1.4
            }
        );
        assert!(s.controller().version() > before);
        s.handle(&rest[0], Instant::now());
        let state = s.take_states().next_back().unwrap();
        assert_eq!(state.controller, "dvf h=1.4000 A/(m/s)");
        assert!(state.controller_active);
    }

    #[test]
    fn refuses_an_expired_command() {
        let (mut s, _) = controlled(1);
        s.on_command(&set_control("late", WireLaw::Dvf, 1.0, NOW_NS - 1), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Expired);
        assert_eq!(s.controller().law(), Law::Off);
    }

    #[test]
    fn twin_hosted_lqg_drives_against_the_estimated_motion() {
        let (mut s, rest) = controlled(2);
        // The birth's "edge loop off" params.
        assert_eq!(s.take_params().count(), 1);
        s.on_command(&set_control("lqg", WireLaw::Lqg, 0.0, 0), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Applied, "{}", ack.reason);
        assert_eq!(s.controller().law(), Law::Lqg);
        assert_eq!(
            s.take_params().count(),
            0,
            "twin-hosted: nothing for the edge"
        );
        let mut drives = Vec::new();
        for e in &rest {
            s.handle(e, Instant::now());
            drives.extend(s.take_drives());
        }
        assert_eq!(drives.len(), rest.len());
        // The LQR row applied to the estimate: finite, and not all zero under noise excitation.
        assert!(drives.iter().all(|d| d.force_n.is_finite()));
        assert!(drives.iter().any(|d| d.force_n.abs() > 1e-6), "{drives:?}");
        let state = s.take_states().next_back().unwrap();
        assert!(state.controller.starts_with("lqg"), "{}", state.controller);
    }

    fn set_control_at(id: &str, law: WireLaw, gain_n_s_per_m: f64, edge: bool) -> Vec<u8> {
        use dtop_proto::v1::set_control::Placement;
        let mut command =
            Command::decode(set_control(id, law, gain_n_s_per_m, 0).as_slice()).unwrap();
        if let Some(Kind::SetControl(set)) = command.kind.as_mut() {
            set.placement = if edge {
                Placement::Edge
            } else {
                Placement::Twin
            } as i32;
        }
        command.encode_to_vec()
    }

    #[test]
    fn edge_placement_pushes_versioned_params_and_no_drives() {
        let (mut s, rest) = controlled(2);
        // The birth already switched any edge loop off.
        let births: Vec<_> = s.take_params().collect();
        assert_eq!(births.len(), 1);
        assert!(!births[0].enabled);
        s.on_command(&set_control_at("e1", WireLaw::Dvf, 10.0, true), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Applied, "{}", ack.reason);
        let params: Vec<_> = s.take_params().collect();
        assert_eq!(params.len(), 1);
        let p = &params[0];
        assert!(p.enabled && p.version > births[0].version);
        assert!(
            ack.reason.contains(&format!("controller/{}", p.version)),
            "{}",
            ack.reason
        );
        // 4 DOFs (3 floors + proof mass) → 8 states + the applied force; w = 3 accels + force.
        let (n, m) = (p.state_count as usize, p.input_channel_ids.len());
        assert_eq!((n, m), (9, 4));
        assert_eq!(
            (p.a.len(), p.b.len(), p.e.len(), p.c.len(), p.d.len()),
            (n * n, n * m, n, n, m)
        );
        assert!((p.sample_period_s - 1e-3).abs() < 1e-12);
        for e in &rest {
            s.handle(e, Instant::now());
        }
        assert_eq!(s.take_drives().count(), 0, "the edge runs the law");
        // LQG at the edge, then off: each a new, higher version.
        s.on_command(&set_control_at("e2", WireLaw::Lqg, 0.0, true), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        s.on_command(&set_control_at("e3", WireLaw::Off, 0.0, true), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        let later: Vec<_> = s.take_params().collect();
        assert_eq!(later.len(), 2);
        assert!(later[0].enabled && !later[1].enabled);
        assert!(p.version < later[0].version && later[0].version < later[1].version);
    }

    #[test]
    fn refuses_an_edge_dvf_gain_above_the_limit_without_pushing_params() {
        let (mut s, _) = controlled(1);
        s.take_params().for_each(drop);
        s.on_command(&set_control_at("big", WireLaw::Dvf, 100.0, true), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Refused);
        assert_eq!(s.take_params().count(), 0);
    }

    #[test]
    fn a_repeated_command_id_gets_the_same_ack_and_is_applied_once() {
        let (mut s, _) = controlled(1);
        s.on_command(&set_control("c1", WireLaw::Dvf, 10.0, 0), NOW_NS);
        let first = only_ack(&mut s);
        assert_eq!(first.status(), Status::Applied);
        let version = s.controller().version();
        // Redelivered, even with other contents: the first answer, nothing applied.
        s.on_command(&set_control("c1", WireLaw::Off, 0.0, 0), NOW_NS);
        assert_eq!(only_ack(&mut s), first);
        assert_eq!(s.controller().version(), version);
        assert_eq!(
            s.controller().law(),
            Law::Dvf {
                gain_a_per_m_s: 1.0
            }
        );
        assert_eq!(s.take_drives().count(), 0);
    }

    #[test]
    fn each_live_block_drives_minus_bl_h_times_the_host_velocity_on_the_floor() {
        let (mut s, rest) = controlled(2);
        s.on_command(&set_control("c1", WireLaw::Dvf, 10.0, 0), NOW_NS);
        only_ack(&mut s);
        let version = s.controller().version();
        for (k, e) in rest.iter().enumerate() {
            s.handle(e, Instant::now());
            let drives: Vec<_> = s.take_drives().collect();
            assert_eq!(drives.len(), 1, "one drive per block");
            let d = &drives[0];
            // The estimate at the block's last sample.
            assert_eq!(d.sample_index, (3 + k as u64) * SIM_BLOCK as u64 - 1);
            let v = s.estimator().unwrap().estimator().floor_velocity_m_s(3);
            assert!(v != 0.0);
            // Coil force +Bl·h·v on the proof mass: the floor feels −Bl·h·v (Bl·h = 10 N·s/m).
            assert!(
                (d.force_n - 10.0 * v).abs() <= 1e-12 * v.abs(),
                "{} vs {v}",
                d.force_n
            );
            assert_eq!(d.controller_version, version);
            assert_eq!(d.rig_id, "r1");
        }
    }

    #[test]
    fn off_sends_one_zero_drive_and_stops_the_drives() {
        let (mut s, rest) = controlled(1);
        s.on_command(&set_control("on", WireLaw::Dvf, 10.0, 0), NOW_NS);
        s.handle(&rest[0], Instant::now());
        assert_eq!(s.take_drives().count(), 1);
        s.on_command(&set_control("off", WireLaw::Off, 0.0, 0), NOW_NS);
        let acks: Vec<_> = s.take_acks().collect();
        assert_eq!(acks.last().unwrap().status(), Status::Applied);
        let drives: Vec<_> = s.take_drives().collect();
        assert_eq!(drives.len(), 1);
        assert_eq!(drives[0].force_n, 0.0);
        assert_eq!(drives[0].controller_version, s.controller().version());
        s.handle(&rest[1], Instant::now());
        assert_eq!(s.take_drives().count(), 0);
        assert_eq!(s.take_states().next_back().unwrap().controller, "off");
    }

    #[test]
    fn other_command_kinds_are_left_to_the_edge_and_control_stays_off_when_disabled() {
        let (mut s, _) = controlled(1);
        let other = Command {
            id: "x".into(),
            target_rig: "r1".into(),
            kind: Some(Kind::SafetyStop(dtop_proto::v1::SafetyStop {})),
            ..Default::default()
        };
        s.on_command(&other.encode_to_vec(), NOW_NS);
        assert_eq!(s.take_acks().count(), 0);
        // The default config: DVF refused, OFF applied without a drive.
        let (events, _) = simulate(1);
        let mut s = modelled(10.0);
        s.handle(&southampton_birth_with_actuator(3, true, 3), Instant::now());
        s.handle(&events[0], Instant::now());
        s.on_command(&set_control("c1", WireLaw::Dvf, 1.0, 0), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Refused);
        assert!(
            ack.reason.contains("control.enabled = false"),
            "{}",
            ack.reason
        );
        s.on_command(&set_control("c2", WireLaw::Off, 0.0, 0), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        assert_eq!(s.take_drives().count(), 0);
    }

    fn run_cbc(id: &str, stop: bool, target_amplitude_m: f64) -> Vec<u8> {
        Command {
            id: id.into(),
            target_rig: "r1".into(),
            issued_by: "alice".into(),
            kind: Some(Kind::RunCbc(RunCbc {
                stop,
                frequency_start_hz: 6.8,
                frequency_end_hz: 7.4,
                frequency_steps: 3,
                target_amplitude_m,
                ..RunCbc::default()
            })),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Session `session`'s birth of the Southampton rig with a 20 N actuator on floor 1 (a
    /// shaker there, beside the force gauge).
    fn shaker_birth(session: u64) -> Event {
        let Event::Birth(bytes) = southampton_birth_with_actuator(3, true, 1) else {
            unreachable!()
        };
        let mut birth = RigBirth::decode(bytes).unwrap();
        birth.session = session;
        birth.actuator = Some(ActuatorLimits {
            floor: 1,
            max_force_n: 20.0,
            ..Default::default()
        });
        Event::Birth(birth.encode_to_vec().into())
    }

    /// A controlled rig whose birth declares a 20 N actuator on floor 1 (a shaker there).
    fn shaker_rig() -> RigState {
        let (events, _) = simulate(2);
        let mut s = modelled(10.0).with_control(ControlConfig {
            enabled: true,
            ..ControlConfig::default()
        });
        s.handle(&shaker_birth(1), Instant::now());
        for e in &events {
            s.handle(e, Instant::now());
        }
        assert!(s.estimator().is_some());
        let _ = s.take_params().count();
        s
    }

    fn cbc_status(s: &mut RigState) -> serde_json::Value {
        let json = s
            .take_pending_outbound()
            .filter_map(|o| match o {
                Outbound::Cbc { json, .. } => Some(json),
                _ => None,
            })
            .next_back()
            .expect("a live CBC status");
        serde_json::from_slice(&json).unwrap()
    }

    #[test]
    fn a_live_cbc_run_sends_its_target_waits_for_the_edge_and_holds_the_actuator_until_stopped() {
        let mut s = shaker_rig();
        s.on_command(&run_cbc("cbc1", false, 2e-4), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Applied, "{}", ack.reason);
        let params: Vec<_> = s.take_params().collect();
        assert_eq!(params.len(), 1);
        let target = params[0].harmonic_target.as_ref().expect("a target");
        // Floor 1's accelerometer is channel 1 (the force gauge is channel 10).
        assert_eq!(
            (target.channel_id, params[0].input_channel_ids.clone()),
            (1, vec![1])
        );
        assert!(
            (target.frequency_hz - 6.8).abs() < 1e-12 && (target.cos_m[0] - 2e-4).abs() < 1e-15
        );
        assert!(
            ack.reason
                .contains(&format!("controller/{}", params[0].version)),
            "{}",
            ack.reason
        );
        let status = cbc_status(&mut s);
        assert_eq!(status["state"], "running");
        assert_eq!(status["channels"]["force_channel_id"], 10);
        assert_eq!(status["command_id"], "cbc1");

        // The same id again: the same answer, nothing sent.
        s.on_command(&run_cbc("cbc1", false, 2e-4), NOW_NS);
        assert_eq!(only_ack(&mut s), ack);
        assert_eq!(s.take_params().count(), 0);
        // A second run, or a control law, is refused while this one runs.
        s.on_command(&run_cbc("cbc2", false, 2e-4), NOW_NS);
        assert!(only_ack(&mut s).reason.contains("is running"));
        s.on_command(&set_control("dvf", WireLaw::Dvf, 5.0, 0), NOW_NS);
        let refused = only_ack(&mut s);
        assert_eq!(refused.status(), Status::Refused);
        assert!(
            refused.reason.contains("live CBC run"),
            "{}",
            refused.reason
        );

        // The edge runs the target from sample 5000.
        let edge_ack = CommandAck {
            command_id: format!("controller/{}", params[0].version),
            rig_id: "r1".into(),
            status: Status::Applied as i32,
            applied_at_sample_index: 5000,
            reason: String::new(),
        };
        s.on_command_ack(&edge_ack.encode_to_vec(), NOW_NS);
        assert_eq!(cbc_status(&mut s)["controller_version"], params[0].version);

        // Stopped: the edge's loop goes off, the run's end is stored with the next block.
        s.on_command(&run_cbc("stop", true, 0.0), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        let off: Vec<_> = s.take_params().collect();
        assert!(off.len() == 1 && !off[0].enabled && off[0].version > params[0].version);
        let status = cbc_status(&mut s);
        assert_eq!(status["state"], "stopped");
        assert!(
            status["reason"]
                .as_str()
                .unwrap()
                .contains("stop from alice"),
            "{status}"
        );
        assert!(
            s.pending_lines.starts_with("dtop_twin_cbc_run,rig=r1,run="),
            "{}",
            s.pending_lines
        );
        assert!(
            s.pending_lines
                .contains("state=\"stopped\",points=0i,targets_sent=1i"),
            "{}",
            s.pending_lines
        );
        // And control may be switched on again.
        s.on_command(&set_control("dvf2", WireLaw::Dvf, 5.0, 0), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
    }

    #[test]
    fn a_live_cbc_run_ends_when_the_edge_refuses_its_params_the_rig_is_born_again_or_the_envelope_latches()
     {
        let mut s = shaker_rig();
        s.on_command(&run_cbc("a", false, 2e-4), NOW_NS);
        let version = s.take_params().next().unwrap().version;
        let _ = s.take_acks().count();
        let refused = CommandAck {
            command_id: format!("controller/{version}"),
            rig_id: "r1".into(),
            status: Status::Refused as i32,
            applied_at_sample_index: 0,
            reason: "safety stop latched".into(),
        };
        s.on_command_ack(&refused.encode_to_vec(), NOW_NS);
        assert!(s.take_params().next().is_some_and(|p| !p.enabled));
        let status = cbc_status(&mut s);
        assert_eq!(status["state"], "stopped");
        assert!(
            status["reason"]
                .as_str()
                .unwrap()
                .contains("safety stop latched"),
            "{status}"
        );

        s.on_command(&run_cbc("b", false, 2e-4), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        s.handle(&shaker_birth(2), Instant::now());
        let status = cbc_status(&mut s);
        assert!(
            status["reason"].as_str().unwrap().contains("born again"),
            "{status}"
        );

        // The edge's envelope latches (a sample stall, a safety stop): the run ends at once,
        // and none starts until it is reset.
        s.on_command(&run_cbc("c", false, 2e-4), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        let _ = s.take_params().count();
        s.on_edge_status(br#"{"safety_state":"driving","next_seq":7}"#, NOW_NS);
        assert_eq!(cbc_status(&mut s)["state"], "running");
        s.on_edge_status(br#"{"safety_state":"latched","next_seq":9}"#, NOW_NS);
        assert!(s.take_params().next().is_some_and(|p| !p.enabled));
        let status = cbc_status(&mut s);
        assert!(
            status["reason"]
                .as_str()
                .unwrap()
                .contains("envelope is latched"),
            "{status}"
        );
        s.on_command(&run_cbc("d", false, 2e-4), NOW_NS);
        assert!(
            only_ack(&mut s)
                .reason
                .contains("reset or enable the actuator")
        );
        s.on_edge_status(br#"{"safety_state":"idle"}"#, NOW_NS);
        s.on_command(&run_cbc("e", false, 2e-4), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
    }

    #[test]
    fn a_live_cbc_run_is_refused_with_every_problem_or_without_an_actuator_or_while_control_is_on()
    {
        let mut s = shaker_rig();
        // A target no accelerometer could resolve, and a harmonic count the edge refuses.
        let mut bad = Command::decode(&run_cbc("bad", false, 0.0)[..]).unwrap();
        if let Some(Kind::RunCbc(r)) = bad.kind.as_mut() {
            r.harmonics = Some(100);
        }
        s.on_command(&bad.encode_to_vec(), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Refused);
        assert!(
            ack.reason.contains("target_amplitude_m") && ack.reason.contains("harmonics"),
            "{}",
            ack.reason
        );
        assert_eq!(s.take_params().count(), 0);

        s.on_command(&set_control("dvf", WireLaw::Dvf, 5.0, 0), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        s.on_command(&run_cbc("c", false, 2e-4), NOW_NS);
        assert!(only_ack(&mut s).reason.contains("switch it off first"));

        // The Southampton rig's inertial actuator declares no force limit here: refused.
        let (mut s, _) = controlled(1);
        s.on_command(&run_cbc("d", false, 2e-4), NOW_NS);
        let ack = only_ack(&mut s);
        assert_eq!(ack.status(), Status::Refused, "{}", ack.reason);
    }

    // ---- Owner epochs (crate::owner) ----

    #[test]
    fn drives_and_params_carry_the_owner_epoch_and_a_lost_rig_gets_nothing_sent() {
        let (mut s, rest) = controlled(2);
        assert_eq!(s.take_params().next_back().map(|p| p.owner_epoch), Some(0));
        // A coordinator's first epoch: this twin keeps the rig, nothing is switched off.
        s.set_ownership(Ownership::Owned { epoch: 3 }, NOW_NS);
        assert_eq!(s.take_params().count(), 0);
        s.on_command(&set_control("c1", WireLaw::Dvf, 14.0, 0), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        s.handle(&rest[0], Instant::now());
        let drives: Vec<_> = s.take_drives().collect();
        assert!(!drives.is_empty());
        assert!(drives.iter().all(|d| d.owner_epoch == 3), "{drives:?}");
        s.on_command(&set_control_at("e1", WireLaw::Lqg, 0.0, true), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        let params: Vec<_> = s.take_params().collect();
        assert_eq!(params.len(), 1);
        assert!(params[0].enabled && params[0].owner_epoch == 3);

        // What waits when the loss comes is dropped; after it nothing is made or answered.
        s.handle(&rest[1], Instant::now());
        s.set_ownership(Ownership::Lost { epoch: 3 }, NOW_NS);
        assert_eq!(s.controller().law(), Law::Off);
        s.handle(&rest[2], Instant::now());
        s.on_command(&set_control("c2", WireLaw::Dvf, 14.0, 0), NOW_NS);
        assert_eq!(s.take_drives().count(), 0);
        assert_eq!(
            s.take_params().count(),
            0,
            "no switch-off: the edge fences us"
        );
        assert_eq!(s.take_states().count(), 0);
        assert_eq!(s.take_acks().count(), 0, "the owner answers commands");
        assert_eq!(s.controller().law(), Law::Off);
        // Samples are left to the owner: dropped undecoded, and counted.
        assert_eq!(s.blocks_accepted, 4);
        assert_eq!(s.stats(Instant::now()).blocks_not_owned, 1);
    }

    #[test]
    fn a_rig_not_owned_drops_its_samples_and_a_takeover_starts_a_new_run_from_its_birth() {
        let (mut s, rest) = controlled(1);
        s.take_params().count();
        let run_before = s.last_run;
        s.set_ownership(Ownership::Lost { epoch: 2 }, NOW_NS);
        assert!(s.handle(&rest[0], Instant::now()).is_empty());
        let stats = s.stats(Instant::now());
        assert_eq!((stats.blocks_not_owned, stats.owned), (1, false));
        assert_eq!(stats.blocks_received, 1, "the block before the loss only");

        s.set_ownership(Ownership::Owned { epoch: 3 }, NOW_NS);
        assert!(
            s.last_run > run_before,
            "a new run, as a restarted twin starts"
        );
        assert_eq!(
            s.estimator().and_then(RigEstimator::next_sample_index),
            None,
            "the new run starts at its first block"
        );
        let params: Vec<_> = s.take_params().collect();
        assert_eq!(params.len(), 1, "{params:?}");
        assert!(!params[0].enabled);
        assert_eq!(params[0].owner_epoch, 3);
        // The next block is stored and estimated in the new run, its birth record first.
        let chunks = s.handle(&rest[1], Instant::now());
        assert_eq!(chunks.len(), 1);
        let birth_record = format!(
            "{},rig=r1,run={} ",
            crate::replay::record::BIRTH_MEASUREMENT,
            s.last_run
        );
        assert!(
            chunks[0].lines.contains(&birth_record),
            "{}",
            chunks[0].lines
        );
        let stats = s.stats(Instant::now());
        assert_eq!((stats.owned, stats.owner_epoch), (true, 3));
    }

    #[test]
    fn a_rig_first_seen_under_a_coordinator_that_has_not_given_it_stores_nothing() {
        let (events, _) = simulate(2);
        let mut s =
            modelled(10.0).with_ownership(crate::owner::OwnerMode::Coordinated.unmentioned());
        let now = Instant::now();
        assert!(s.handle(&southampton_birth(3, true), now).is_empty());
        let chunks: Vec<Chunk> = events.iter().flat_map(|e| s.handle(e, now)).collect();
        assert!(chunks.is_empty());
        assert_eq!(s.stats(now).blocks_not_owned, 2);
        assert!(
            s.estimator().is_some(),
            "the birth is followed for a takeover"
        );
        assert_eq!(s.take_params().count(), 0);
    }

    #[test]
    fn a_lost_rig_ends_its_live_cbc_run_silently_and_a_new_epoch_switches_the_edge_loop_off() {
        let mut s = shaker_rig();
        s.set_ownership(Ownership::Owned { epoch: 1 }, NOW_NS);
        s.on_command(&run_cbc("cbc1", false, 2e-4), NOW_NS);
        assert_eq!(only_ack(&mut s).status(), Status::Applied);
        let params: Vec<_> = s.take_params().collect();
        assert_eq!(params.len(), 1);
        assert_eq!(params[0].owner_epoch, 1);
        assert_eq!(cbc_status(&mut s)["state"], "running");

        s.set_ownership(Ownership::Lost { epoch: 1 }, NOW_NS);
        assert!(s.cbc.as_ref().is_some_and(|r| !r.is_running()));
        assert_eq!(s.take_params().count(), 0);
        assert_eq!(s.take_pending_outbound().count(), 0, "no CBC status either");

        // Owned again, after another twin: whatever loop it left on the edge goes off, under
        // the new epoch.
        s.set_ownership(Ownership::Owned { epoch: 4 }, NOW_NS);
        let params: Vec<_> = s.take_params().collect();
        assert_eq!(params.len(), 1);
        assert!(!params[0].enabled);
        assert_eq!(params[0].owner_epoch, 4);
    }
}
