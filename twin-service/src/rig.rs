//! One rig's twin: the state machine ([`RigState`]) and the actor task that owns it.
//!
//! The actor is the only owner of a rig's manifests, sequence tracker, pre-birth queue and live
//! window; it turns accepted blocks into line-protocol [`Chunk`]s for the storage writer. It does
//! not talk to MQTT or to storage itself.
//!
//! It is also where the state estimator will live: the Kalman filter of a rig will be owned by
//! this actor and fed at [`RigState::accept`], next to the live window, with each accepted live
//! block's scaled samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dtop_proto::RigId;
use dtop_proto::topic::RigTopic;
use dtop_proto::v1::{RigBirth, RigDeath, SampleBlock};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::ingest::{self, Frame, Manifest, RejectReason, Rejection};
use crate::lineproto::{self, BlockHeader, EncodeError, Precision};
use crate::seq::{Observation, SeqTracker};
use crate::stats::{LiveWindow, RigStats};

/// Manifests kept per rig, by session, so late backfill of recent sessions is scaled with the
/// manifest it was recorded under.
pub const MAX_MANIFESTS: usize = 8;
/// How often an actor republishes its stats while idle (rates decay without new blocks).
pub const STATS_INTERVAL: Duration = Duration::from_millis(250);

/// An input of a rig actor: a raw payload from one of the rig's topics. Decoding happens in the
/// actor, so a burst of big blocks for one rig does not stall the MQTT loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Birth(Bytes),
    Samples(Bytes),
    Death(Bytes),
}

impl Event {
    /// The event for a payload of a rig topic the twin ingests.
    pub fn from_topic(kind: RigTopic, payload: Bytes) -> Option<Self> {
        match kind {
            RigTopic::Birth => Some(Event::Birth(payload)),
            RigTopic::Samples => Some(Event::Samples(payload)),
            RigTopic::Death => Some(Event::Death(payload)),
            _ => None,
        }
    }

    fn kind(&self) -> RigTopic {
        match self {
            Event::Birth(_) => RigTopic::Birth,
            Event::Samples(_) => RigTopic::Samples,
            Event::Death(_) => RigTopic::Death,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Event::Birth(p) | Event::Samples(p) | Event::Death(p) => p,
        }
    }
}

/// The line-protocol lines of one accepted block, on their way to storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub rig: RigId,
    pub seq: u64,
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
        }
    }

    pub fn rig(&self) -> &RigId {
        &self.rig
    }

    /// Handles one event; returns the chunks to store, in order.
    pub fn handle(&mut self, event: &Event, now: Instant) -> Vec<Chunk> {
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
            Frame::Samples(block) => self.on_samples(block, now).into_iter().collect(),
            Frame::Death(death) => {
                self.on_death(&death);
                Vec::new()
            }
        }
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
        self.live.reset(&manifest);
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
        ready
            .into_iter()
            .filter_map(|b| self.process(b, now))
            .collect()
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
        info!(rig = %self.rig, session = death.session, reason, "Rig died.");
    }

    fn on_samples(&mut self, block: SampleBlock, now: Instant) -> Option<Chunk> {
        if let Err(rejection) = ingest::check_block_shape(&block, self.precision) {
            self.reject(rejection);
            return None;
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
            return None;
        }
        self.process(block, now)
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

    fn process(&mut self, block: SampleBlock, now: Instant) -> Option<Chunk> {
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
        let mut lines = String::new();
        let line_count =
            match lineproto::encode_block(&mut lines, &header, &just_columns, self.precision) {
                Ok(n) => n,
                Err(e) => {
                    let reason = match e {
                        EncodeError::Empty => RejectReason::EmptyBlock,
                        EncodeError::Ragged { .. } => RejectReason::RaggedChannels,
                        EncodeError::TimestampOutOfRange { .. } => {
                            RejectReason::TimestampOutOfRange
                        }
                        EncodeError::NonFinite { .. } => RejectReason::NonFiniteValue,
                    };
                    self.reject(Rejection::new(reason, e.to_string()));
                    return None;
                }
            };
        let mut observation = self.seq.observe(block.seq);
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
            Observation::Duplicate => {
                debug!(rig = %self.rig, seq = block.seq, "Dropped a duplicate block.");
                return None;
            }
            Observation::GapOpened { missing } => {
                warn!(rig = %self.rig, seq = block.seq, missing, "Blocks are missing before this one.");
            }
            Observation::FilledHole | Observation::Untracked | Observation::New => {}
        }
        self.accept(&block, &columns, now);
        Some(Chunk {
            rig: self.rig.clone(),
            seq: block.seq,
            lines,
            line_count,
        })
    }

    /// A block that passed every check and is on its way to storage.
    ///
    /// This is the estimator's seam: live blocks will also be fed to the rig's Kalman filter
    /// here, in sample order, next to the live window.
    fn accept(
        &mut self,
        block: &SampleBlock,
        columns: &[(lineproto::Column<'_>, &ingest::ChannelInfo)],
        now: Instant,
    ) {
        if !block.backfill {
            self.live.record(now, columns, block.sample_period_ns);
        }
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
            lines_written: 0,
            highest_contiguous_seq: self.seq.highest_contiguous(),
            blocks_waiting_for_birth: self.waiting.len(),
            frames_rejected: self.rejected.clone(),
        }
    }
}

/// The task owning one [`RigState`].
#[derive(Debug)]
pub struct RigActor {
    state: RigState,
    events_rx: mpsc::Receiver<Event>,
    chunk_tx: mpsc::Sender<Chunk>,
    stats_tx: watch::Sender<RigStats>,
}

impl RigActor {
    pub fn new(
        state: RigState,
        events_rx: mpsc::Receiver<Event>,
        chunk_tx: mpsc::Sender<Chunk>,
        stats_tx: watch::Sender<RigStats>,
    ) -> Self {
        Self {
            state,
            events_rx,
            chunk_tx,
            stats_tx,
        }
    }

    /// Runs until the event channel closes (the router's shutdown), then publishes final stats.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(STATS_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.events_rx.recv() => {
                    let Some(event) = event else { break };
                    let chunks = self.state.handle(&event, Instant::now());
                    for chunk in chunks {
                        // Waiting here is the backpressure from storage to ingest.
                        if self.chunk_tx.send(chunk).await.is_err() {
                            warn!(rig = %self.state.rig(), "Storage writer is gone; stopping this rig.");
                            self.publish();
                            return;
                        }
                    }
                    self.publish();
                }
                _ = tick.tick() => self.publish(),
            }
        }
        self.publish();
        debug!(rig = %self.state.rig(), "Rig actor stopped.");
    }

    fn publish(&self) {
        self.stats_tx.send_replace(self.state.stats(Instant::now()));
    }
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
}
