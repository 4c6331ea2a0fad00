//! The storage writer task: sole owner of the batch being filled, the [`Outbox`] of sealed
//! batches (memory, then the disk spool), the sink, and the per-rig persisted watermarks.
//!
//! It never stops reading chunks: a write runs as a future beside the receive loop, so a slow,
//! failing or absent storage never blocks the rig actors (and with them estimation and
//! control). A batch is sealed at `max_lines` or `max_delay`; sealed batches are written one at
//! a time, oldest first. A transient failure (5xx, 429, timeout, connection error) keeps the
//! batch, retries it with jittered exponential backoff, and sends every batch in memory to the
//! disk spool until a write succeeds; replay is in order. When memory and spool are full the
//! oldest batch in memory is given up, counted per rig with its reason, and logged.
//!
//! After every acknowledged write the writer advances each rig's watermark (the highest seq up
//! to which every block was acknowledged by storage), saves the watermarks in the spool
//! directory, and only then hands them to the MQTT side to publish. Seqs the edge declared
//! lost for good (`SeqLoss`, validated by the router) are accounted the same way: the watermark
//! passes them once everything below is durable.
//!
//! Under a lease coordinator it is fenced too ([`Writer::with_owners`]): a chunk of a rig this
//! twin no longer owns is dropped on arrival, not stored. The rig's next owner stores those
//! blocks from the edge's replay, so two twins never write one rig's records at once (the
//! next owner may continue the same estimator run, `crate::replay::restore`, and InfluxDB
//! would merge two writers' points of one run and time into one).
//!
//! It also reports each lost rig *settled* ([`Writer::with_settled`]) once no block it accepted
//! for the rig is still waiting for storage (acknowledged, or given up and counted), so the
//! lease coordinator hands the rig to its next owner only then: that owner restores the rig
//! from storage, and a batch of this twin's landing after its read would leave two estimator
//! runs over the same samples. Blocks in a spool that outlives the writer are not waited for.
//!
//! It stops when every chunk sender is gone and everything pending is written, or the drain
//! timeout after shutdown has passed: then what is left waits in the spool for the next start,
//! or, without a spool, is dropped and counted.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use dtop_proto::RigId;
use dtop_spool::{Spool, SpoolError};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::batch::Batch;
use super::outbox::{Lost, Meta, Outbox, Sealed};
use super::persisted::{self, Acked, DeclaredLoss, PersistTracker};
use super::{Sink, WriteError};
use crate::config::{BackoffConfig, SpoolFsync, TwinConfig};
use crate::lineproto::{self, Precision, SeqLossRecord};
use crate::owner::{Owners, Ownership, ownership_of};
use crate::rig::Chunk;
use crate::stats::StoreStats;
use dtop_daemon::Backoff;

/// Why blocks were given up at shutdown (no spool to keep them).
pub const LOST_SHUTDOWN_DRAIN: &str = "shutdown_drain";
/// Why blocks were given up when storage refused their batch as malformed.
pub const LOST_REJECTED: &str = "rejected";

/// Logged (INFO) for each block the edge declared lost that storage acknowledged after the
/// watermark had passed it; the end-to-end tests count these lines.
pub const STORED_AFTER_ALL_LOG: &str =
    "A block declared lost was stored after all; it no longer counts as lost.";

/// Per-rig persisted watermarks, as the writer publishes them.
pub type Watermarks = BTreeMap<RigId, u64>;

/// The writer's knobs, from [`TwinConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriterConfig {
    pub max_lines: usize,
    pub max_delay: Duration,
    pub retry: BackoffConfig,
    pub drain_timeout: Duration,
    /// Most body bytes of sealed batches kept in memory while storage keeps up.
    pub memory_bytes: u64,
    /// How often the spool is fsynced from here (`spool.fsync = "interval"`).
    pub spool_sync_interval: Option<Duration>,
}

impl From<&TwinConfig> for WriterConfig {
    fn from(c: &TwinConfig) -> Self {
        Self {
            max_lines: c.batch.max_lines,
            max_delay: c.batch.max_delay(),
            retry: c.retry,
            drain_timeout: c.batch.drain_timeout(),
            memory_bytes: c.spool.memory_mib.saturating_mul(1024 * 1024),
            spool_sync_interval: (c.spool.fsync == SpoolFsync::Interval)
                .then(|| Duration::from_millis(c.spool.fsync_interval_ms)),
        }
    }
}

type WriteFuture = Pin<Box<dyn Future<Output = (Sink, Result<(), WriteError>)> + Send>>;

/// A write in progress; it owns the sink until it finishes.
struct InFlight {
    id: u64,
    future: WriteFuture,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").field("id", &self.id).finish()
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Writer {
    /// `None` while a write owns it.
    sink: Option<Sink>,
    in_flight: Option<InFlight>,
    chunk_rx: mpsc::Receiver<Chunk>,
    config: WriterConfig,
    shutdown: CancellationToken,
    /// Set the first time the writer notices shutdown; the drain timeout runs from here.
    drain_started: Option<Instant>,
    batch: Batch,
    outbox: Outbox,
    /// No write starts before this (backoff after a failure).
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// The last write failed: every batch goes to the disk spool until one succeeds.
    failing: bool,
    trackers: BTreeMap<RigId, PersistTracker>,
    /// Where the watermarks are saved (the spool directory).
    state_dir: Option<PathBuf>,
    watermark_tx: Option<watch::Sender<Watermarks>>,
    /// Watermarks seen on the broker (retained from before a restart, or our own echoes).
    published_rx: Option<mpsc::Receiver<(RigId, u64)>>,
    /// Seqs edges declared lost for good, validated by the router.
    loss_rx: Option<mpsc::Receiver<(RigId, DeclaredLoss)>>,
    /// Rig time waiting for storage, ns.
    backlog_ns: BTreeMap<RigId, u64>,
    /// Set: every loss declaration that accounts new seqs is stored as a `dtop_seq_losses`
    /// point, with timestamps in this precision (the sink's).
    loss_records: Option<Precision>,
    stats: StoreStats,
    stats_tx: watch::Sender<StoreStats>,
    rng: StdRng,
    /// Which rigs this twin owns (`crate::owner`); `None`: every rig (no coordinator).
    owners: Option<watch::Receiver<Owners>>,
    /// The same, read for its changes: a rig newly lost waits in `unsettled`.
    owner_changes: Option<watch::Receiver<Owners>>,
    /// Blocks accepted and not yet acknowledged or given up, by rig (open batch, memory, spool,
    /// in flight).
    pending_blocks: BTreeMap<RigId, u64>,
    /// Rigs lost at an epoch whose blocks are still pending.
    unsettled: BTreeMap<RigId, u64>,
    /// Where settled tenures are reported (`dtop_lease::Settled`).
    settled_tx: Option<watch::Sender<Settled>>,
}

/// Per rig, the newest owner epoch lost of which no accepted block still waits for storage.
pub type Settled = dtop_lease::Settled;

impl Writer {
    /// A writer that keeps unsent batches in memory only.
    pub fn new(
        sink: Sink,
        chunk_rx: mpsc::Receiver<Chunk>,
        config: WriterConfig,
        shutdown: CancellationToken,
        stats_tx: watch::Sender<StoreStats>,
    ) -> Self {
        let backoff = config.retry.backoff();
        Self {
            sink: Some(sink),
            in_flight: None,
            chunk_rx,
            config,
            shutdown,
            drain_started: None,
            batch: Batch::default(),
            outbox: Outbox::in_memory(),
            retry_at: None,
            backoff,
            failing: false,
            trackers: BTreeMap::new(),
            state_dir: None,
            watermark_tx: None,
            published_rx: None,
            loss_rx: None,
            backlog_ns: BTreeMap::new(),
            loss_records: None,
            stats: StoreStats::default(),
            stats_tx,
            rng: StdRng::from_os_rng(),
            owners: None,
            owner_changes: None,
            pending_blocks: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            settled_tx: None,
        }
    }

    /// Drops, on arrival, each chunk of a rig `owners` says this twin does not own (see the
    /// module docs), counting its blocks in the rig's `blocks_fenced`.
    pub fn with_owners(mut self, owners: watch::Receiver<Owners>) -> Self {
        let mut changes = owners.clone();
        // Read what is already lost at the first turn of the loop.
        changes.mark_changed();
        self.owner_changes = Some(changes);
        self.owners = Some(owners);
        self
    }

    /// Reports on `settled_tx` each rig `with_owners` says was lost, at the epoch it was lost
    /// at, once none of its accepted blocks waits for storage (see the module docs).
    pub fn with_settled(mut self, settled_tx: watch::Sender<Settled>) -> Self {
        self.settled_tx = Some(settled_tx);
        self
    }

    /// Notes every rig lost at an epoch not yet settled; settles those with nothing pending.
    fn on_owners_changed(&mut self) {
        let (Some(changes), Some(settled_tx)) = (&mut self.owner_changes, &self.settled_tx) else {
            return;
        };
        let owners = changes.borrow_and_update();
        let settled = settled_tx.borrow();
        for (rig, ownership) in owners.mentioned() {
            match *ownership {
                Ownership::Lost { epoch } if epoch > 0 => {
                    if settled.get(rig).is_none_or(|e| *e < epoch) {
                        self.unsettled.insert(rig.clone(), epoch);
                    }
                }
                // Owned again: nothing of the old tenure is waited for any more.
                Ownership::Owned { .. } => {
                    self.unsettled.remove(rig);
                }
                Ownership::Lost { .. } => {}
            }
        }
        drop((owners, settled));
        self.settle();
    }

    /// Reports the unsettled rigs that have no pending block any more.
    fn settle(&mut self) {
        let Some(settled_tx) = &self.settled_tx else {
            return;
        };
        let pending = &self.pending_blocks;
        let (done, waiting): (BTreeMap<RigId, u64>, BTreeMap<RigId, u64>) =
            std::mem::take(&mut self.unsettled)
                .into_iter()
                .partition(|(rig, _)| !pending.contains_key(rig));
        self.unsettled = waiting;
        if done.is_empty() {
            return;
        }
        for (rig, epoch) in &done {
            debug!(rig = %rig, owner_epoch = epoch, "Storage has every block of the lost rig this twin accepted; its lease may go.");
        }
        settled_tx.send_modify(|settled| {
            for (rig, epoch) in done {
                let e = settled.entry(rig).or_default();
                *e = (*e).max(epoch);
            }
        });
    }

    /// Whether `rig`'s chunks are to be dropped: this twin does not own it (any more).
    fn fenced(&self, rig: &RigId) -> bool {
        self.owners
            .as_ref()
            .is_some_and(|o| !ownership_of(&o.borrow(), rig).is_owned())
    }

    /// Spools unsent batches in `spool` (its directory also keeps the watermarks), and picks
    /// up what a previous run left there: its batches are sent first, its watermarks continue.
    pub fn with_spool(mut self, spool: Spool) -> Result<Self, SpoolError> {
        let dir = spool.config().dir.clone();
        let (outbox, lost) = Outbox::with_spool(spool)?;
        self.outbox = outbox;
        match persisted::load(&dir) {
            Ok(saved) => {
                self.trackers = saved
                    .into_iter()
                    .map(|(rig, w)| (rig, PersistTracker::starting_at(Some(w))))
                    .collect();
            }
            Err(e) => {
                error!(dir = %dir.display(), error = %e, "Could not read the saved watermarks; they restart from the next block stored.");
            }
        }
        let metas: Vec<Meta> = self.outbox.metas().cloned().collect();
        for meta in &metas {
            self.add_pending(meta);
        }
        for l in lost {
            self.count_lost(&l.meta, l.reason);
        }
        if !metas.is_empty() {
            info!(
                batches = metas.len(),
                lines = self.stats.lines_pending,
                "Found batches a previous run left in the storage spool; sending them first."
            );
        }
        self.state_dir = Some(dir);
        self.stats.batches_spooled = self.outbox.spooled_len() as u64;
        self.stats.spool_bytes = self.outbox.spool_bytes();
        for (rig, t) in &self.trackers {
            self.stats
                .rigs
                .entry(rig.clone())
                .or_default()
                .persisted_seq = t.watermark();
        }
        Ok(self)
    }

    /// Sends every new set of watermarks on `watermark_tx` (after saving it), starting with
    /// the ones carried over.
    pub fn with_watermarks(mut self, watermark_tx: watch::Sender<Watermarks>) -> Self {
        watermark_tx.send_replace(self.watermarks());
        self.watermark_tx = Some(watermark_tx);
        self
    }

    /// Raises watermarks to those seen published on the broker: a restarted twin that lost (or
    /// never had) its state file continues from the watermark it published before, instead of
    /// from the first block it stores.
    pub fn with_published_watermarks(mut self, published_rx: mpsc::Receiver<(RigId, u64)>) -> Self {
        self.published_rx = Some(published_rx);
        self
    }

    /// Accounts for seqs edges declare lost for good (`rig/{rig}/loss`): the watermark passes
    /// them once every block below them is durable.
    pub fn with_declared_losses(mut self, loss_rx: mpsc::Receiver<(RigId, DeclaredLoss)>) -> Self {
        self.loss_rx = Some(loss_rx);
        self
    }

    /// Stores each loss declaration that accounts new seqs as a `dtop_seq_losses` point in
    /// the same batches as the blocks, so `dtop-twin audit` can tell declared losses from
    /// holes. `precision` must be the sink's.
    pub fn with_loss_records(mut self, precision: Precision) -> Self {
        self.loss_records = Some(precision);
        self
    }

    /// Queues the `dtop_seq_losses` point of a declaration that accounted new seqs.
    fn record_loss(&mut self, rig: &RigId, loss: &DeclaredLoss) {
        let Some(precision) = self.loss_records else {
            return;
        };
        let record = SeqLossRecord {
            rig: rig.as_str(),
            first_seq: loss.first_seq,
            last_seq: loss.last_seq,
            blocks: loss.blocks,
            samples: loss.samples,
            reason: loss.reason,
            // An edge that does not say when: the twin's clock, so the point still exists.
            detected_at_ns: if loss.detected_at_ns == 0 {
                unix_now_ns()
            } else {
                loss.detected_at_ns
            },
        };
        let mut line = String::new();
        match lineproto::encode_seq_loss(&mut line, &record, precision) {
            Ok(n) => {
                self.batch.push_lines(&line, n, Instant::now());
                self.stats.lines_pending += n as u64;
            }
            Err(e) => {
                warn!(rig = %rig, first_seq = loss.first_seq, last_seq = loss.last_seq, error = %e, "Could not record a loss declaration in storage; the audit will report its seqs as a hole.");
            }
        }
    }

    fn on_declared_loss(&mut self, rig: RigId, loss: DeclaredLoss) {
        let tracker = self.trackers.entry(rig.clone()).or_default();
        let result = tracker.declare_lost(loss.first_seq, loss.last_seq, loss.reason);
        let watermark = tracker.watermark();
        let s = self.stats.rigs.entry(rig.clone()).or_default();
        s.loss_declarations_total += 1;
        let applied = match result {
            Ok(applied) => applied,
            Err(persisted::TooManyLostRanges) => {
                s.loss_declarations_refused += 1;
                warn!(rig = %rig, first_seq = loss.first_seq, last_seq = loss.last_seq, max_ranges = persisted::MAX_LOST_RANGES, "Refused a loss declaration: too many separate lost ranges wait for the watermark; the edge repeats it later.");
                return;
            }
        };
        s.loss_blocks_already_stored += applied.already_stored;
        if applied.newly_lost > 0 {
            self.record_loss(&rig, &loss);
        }
        let s = self.stats.rigs.entry(rig.clone()).or_default();
        if applied.newly_lost > 0 && loss.reason == persisted::SKIPPED_LABEL {
            // Mostly seqs a crashed edge run reserved and never used: not lost blocks.
            s.seqs_skipped_at_edge += applied.newly_lost;
            info!(
                rig = %rig,
                first_seq = loss.first_seq,
                last_seq = loss.last_seq,
                seqs = applied.newly_lost,
                persisted_seq = ?watermark,
                "The edge declared seqs its previous run reserved but did not use skipped; the watermark passes them once everything below is stored."
            );
        } else if applied.newly_lost > 0 {
            *s.blocks_lost_at_edge
                .entry(loss.reason.to_owned())
                .or_default() += applied.newly_lost;
            // The edge counts samples per declaration; a partly new one gets its share.
            let samples = if applied.newly_lost == loss.span() {
                loss.samples
            } else {
                let share = u128::from(loss.samples) * u128::from(applied.newly_lost)
                    / u128::from(loss.span());
                u64::try_from(share).unwrap_or(u64::MAX)
            };
            *s.samples_lost_at_edge
                .entry(loss.reason.to_owned())
                .or_default() += samples;
            warn!(
                rig = %rig,
                reason = loss.reason,
                first_seq = loss.first_seq,
                last_seq = loss.last_seq,
                blocks = applied.newly_lost,
                samples,
                already_stored = applied.already_stored,
                persisted_seq = ?watermark,
                "The edge declared blocks lost for good; the watermark passes them once everything below is stored."
            );
        } else {
            debug!(rig = %rig, first_seq = loss.first_seq, last_seq = loss.last_seq, repeated = applied.repeated, already_stored = applied.already_stored, below_watermark = applied.below_watermark, "A loss declaration already accounted for.");
        }
        if applied.advanced {
            self.save_and_send_watermarks();
        }
    }

    fn on_published(&mut self, rig: RigId, seq: u64) {
        let tracker = self.trackers.entry(rig.clone()).or_default();
        let first = tracker.watermark().is_none();
        if !tracker.raise_to(seq) {
            return;
        }
        if first {
            info!(rig = %rig, seq, "Continuing from the watermark published before this start.");
        } else {
            // Under a lease coordinator this is the rig's owner storing it, every few blocks.
            debug!(rig = %rig, seq, "Raised to a watermark another twin published.");
        }
        self.save_and_send_watermarks();
    }

    fn watermarks(&self) -> Watermarks {
        self.trackers
            .iter()
            .filter_map(|(rig, t)| Some((rig.clone(), t.watermark()?)))
            .collect()
    }

    /// Runs until every chunk sender is dropped and storage has everything (or the drain
    /// timeout passed); returns the final counters.
    pub async fn run(mut self) -> StoreStats {
        let mut sync_tick = tokio::time::interval(
            self.config
                .spool_sync_interval
                .unwrap_or(Duration::from_secs(3600)),
        );
        sync_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let sync_enabled = self.config.spool_sync_interval.is_some() && self.outbox.has_spool();
        let mut closed = false;
        let mut drain_expired = false;
        loop {
            if drain_expired {
                self.give_up_for_shutdown();
            }
            self.pump();
            self.publish();
            if !self.unsettled.is_empty() {
                self.settle();
            }
            if closed
                && self.batch.is_empty()
                && self.in_flight.is_none()
                && (self.outbox.is_empty() || drain_expired)
            {
                break;
            }
            let due = self.batch.started().map(|t| t + self.config.max_delay);
            let retry_at = self.retry_at.filter(|_| self.in_flight.is_none());
            let drain_pending = !drain_expired;
            tokio::select! {
                chunk = self.chunk_rx.recv(), if !closed => match chunk {
                    Some(chunk) => {
                        self.add_chunk(chunk);
                        if self.batch.lines() >= self.config.max_lines {
                            self.seal();
                        }
                    }
                    None => {
                        closed = true;
                        self.seal();
                    }
                },
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => self.seal(),
                (sink, result) = poll_in_flight(&mut self.in_flight), if self.in_flight.is_some() => {
                    self.sink = Some(sink);
                    if let Some(f) = self.in_flight.take() {
                        self.on_written(f.id, result);
                    }
                }
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.retry_at = None;
                }
                _ = sync_tick.tick(), if sync_enabled => self.outbox.sync(),
                published = recv_published(&mut self.published_rx), if self.published_rx.is_some() => match published {
                    Some((rig, seq)) => self.on_published(rig, seq),
                    None => self.published_rx = None,
                },
                loss = recv_published(&mut self.loss_rx), if self.loss_rx.is_some() => match loss {
                    Some((rig, loss)) => self.on_declared_loss(rig, loss),
                    None => self.loss_rx = None,
                },
                changed = owners_changed(&mut self.owner_changes), if self.settled_tx.is_some() && self.owner_changes.is_some() => {
                    if changed {
                        self.on_owners_changed();
                    } else {
                        self.owner_changes = None;
                    }
                }
                _ = wait_for_drain_expiry(&self.shutdown, &mut self.drain_started, self.config.drain_timeout), if drain_pending => {
                    drain_expired = true;
                }
            }
        }
        self.outbox.sync();
        if let Some(sink) = &mut self.sink
            && let Err(e) = sink.close().await
        {
            error!(error = %e, "Could not make the last storage writes durable.");
            self.stats.last_error = Some(e.to_string());
        }
        self.publish();
        debug!(
            lines_written = self.stats.lines_written_total,
            batches_spooled = self.outbox.spooled_len(),
            "Storage writer stopped."
        );
        self.stats
    }

    fn add_chunk(&mut self, chunk: Chunk) {
        if self.fenced(&chunk.rig) {
            debug!(rig = %chunk.rig, seq = chunk.seq, "Dropped a chunk of a rig this twin no longer owns; its next owner stores it from the edge's replay.");
            self.stats.rigs.entry(chunk.rig).or_default().blocks_fenced += 1;
            return;
        }
        if let Some(first) = chunk.rig_start_seq {
            self.trackers
                .entry(chunk.rig.clone())
                .or_default()
                .expect_start(first);
        }
        self.batch.push(chunk, Instant::now());
        if let Some(b) = self.batch.blocks().last() {
            *self.backlog_ns.entry(b.rig.clone()).or_default() += b.span_ns;
            *self.pending_blocks.entry(b.rig.clone()).or_default() += 1;
            self.stats.lines_pending += b.lines;
        }
    }

    /// Closes the batch being filled and queues it.
    fn seal(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let (body, lines, blocks) = self.batch.take();
        let id = self.outbox.take_id();
        self.outbox.push(Sealed {
            id,
            body,
            meta: Meta {
                lines: lines as u64,
                blocks,
            },
        });
    }

    /// Spills what memory should not hold, then starts the next write if none is running.
    fn pump(&mut self) {
        // Without a spool, memory is all there is, failing or not.
        let keep = if self.failing && self.outbox.has_spool() {
            0
        } else {
            self.config.memory_bytes
        };
        let in_flight = self.in_flight.as_ref().map(|f| f.id);
        let lost = self.outbox.spill(keep, in_flight);
        self.count_all_lost(lost);
        if self.in_flight.is_some() || self.retry_at.is_some() || self.drain_expired_now() {
            return;
        }
        let (next, lost) = self.outbox.oldest();
        self.count_all_lost(lost);
        let Some(next) = next else { return };
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        let body = next.body;
        self.in_flight = Some(InFlight {
            id: next.id,
            future: Box::pin(async move {
                let result = sink.write(&body).await;
                (sink, result)
            }),
        });
    }

    fn drain_expired_now(&self) -> bool {
        self.drain_started
            .is_some_and(|s| Instant::now() >= s + self.config.drain_timeout)
    }

    fn on_written(&mut self, id: u64, result: Result<(), WriteError>) {
        match result {
            Ok(()) => {
                if self.failing {
                    info!(
                        batches_waiting = self.outbox.memory_len() + self.outbox.spooled_len(),
                        "Storage accepts writes again; replaying waiting batches in order."
                    );
                }
                self.failing = false;
                self.retry_at = None;
                self.backoff.reset();
                if let Some(meta) = self.outbox.complete(id) {
                    self.record_success(&meta);
                }
            }
            Err(WriteError::Rejected { status, message }) => {
                let Some(meta) = self.outbox.complete(id) else {
                    return;
                };
                error!(status, lines = meta.lines, blocks = meta.blocks.len(), message = %message, "Storage refused a batch as malformed; its lines are lost.");
                self.stats.lines_rejected_total += meta.lines;
                self.stats.last_error = Some(format!("HTTP {status}: {message}"));
                // Refused for good: the watermark may pass these blocks, which are counted lost.
                self.count_lost(&meta, LOST_REJECTED);
                self.advance(&meta, false);
            }
            Err(e) => {
                let (detail, retry_after) = match e {
                    WriteError::Retryable {
                        detail,
                        retry_after,
                    } => (detail, retry_after),
                    other => {
                        error!(error = %other, "Storage refuses writes until an operator acts (credentials, database or bucket); keeping the batch and retrying.");
                        (other.to_string(), None)
                    }
                };
                self.failing = true;
                self.stats.write_errors_total += 1;
                self.stats.last_error = Some(detail.clone());
                let max = Duration::from_millis(self.config.retry.max_ms);
                let delay = self
                    .backoff
                    .next_delay(&mut self.rng)
                    .max(retry_after.unwrap_or_default().min(max));
                warn!(
                    error = %detail,
                    attempt = self.backoff.attempts(),
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    spooled = self.outbox.has_spool(),
                    "Storage write failed; keeping the batch and retrying."
                );
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }

    fn record_success(&mut self, meta: &Meta) {
        self.stats.lines_written_total += meta.lines;
        self.stats.batches_written_total += 1;
        self.remove_pending(meta);
        for b in &meta.blocks {
            let s = self.stats.rigs.entry(b.rig.clone()).or_default();
            s.blocks_stored += 1;
            s.lines_written += b.lines;
            s.samples_stored += b.samples;
        }
        self.advance(meta, true);
        debug!(lines = meta.lines, "Stored a batch.");
    }

    /// Moves the watermarks over `meta`'s blocks; saves and hands them on if any moved.
    fn advance(&mut self, meta: &Meta, count_duplicates: bool) {
        let mut moved = false;
        for b in &meta.blocks {
            let tracker = self.trackers.entry(b.rig.clone()).or_default();
            // Only a real acknowledgement can show a block declared lost was there after all.
            let after_all = count_duplicates
                .then(|| tracker.take_declared_lost(b.seq))
                .flatten();
            match tracker.record(b.seq) {
                Acked::Advanced => moved = true,
                Acked::Duplicate if count_duplicates && after_all.is_none() => {
                    self.stats
                        .rigs
                        .entry(b.rig.clone())
                        .or_default()
                        .blocks_duplicate_stored += 1;
                }
                Acked::Duplicate | Acked::Pending => {}
            }
            if let Some(reason) = after_all {
                // The edge declared it lost, yet it was on its way all along (evicted after
                // the broker had it): it no longer counts as lost.
                let s = self.stats.rigs.entry(b.rig.clone()).or_default();
                if reason == persisted::SKIPPED_LABEL {
                    s.seqs_skipped_at_edge = s.seqs_skipped_at_edge.saturating_sub(1);
                }
                if let Some(n) = s.blocks_lost_at_edge.get_mut(reason) {
                    *n = n.saturating_sub(1);
                }
                if let Some(n) = s.samples_lost_at_edge.get_mut(reason) {
                    *n = n.saturating_sub(b.samples);
                }
                s.loss_blocks_stored_after_all += 1;
                info!(rig = %b.rig, seq = b.seq, reason, "{STORED_AFTER_ALL_LOG}");
            }
        }
        if moved {
            self.save_and_send_watermarks();
        }
    }

    fn save_and_send_watermarks(&mut self) {
        let watermarks = self.watermarks();
        for (rig, w) in &watermarks {
            self.stats
                .rigs
                .entry(rig.clone())
                .or_default()
                .persisted_seq = Some(*w);
        }
        if let Some(dir) = &self.state_dir
            && let Err(e) = persisted::save(dir, &watermarks)
        {
            // Storage has the blocks, so publishing stays truthful; a restart may only start
            // from an older watermark.
            error!(dir = %dir.display(), error = %e, "Could not save the persisted watermarks.");
        }
        if let Some(tx) = &self.watermark_tx {
            tx.send_replace(watermarks);
        }
    }

    fn add_pending(&mut self, meta: &Meta) {
        self.stats.lines_pending += meta.lines;
        for b in &meta.blocks {
            *self.backlog_ns.entry(b.rig.clone()).or_default() += b.span_ns;
            *self.pending_blocks.entry(b.rig.clone()).or_default() += 1;
        }
    }

    fn remove_pending(&mut self, meta: &Meta) {
        self.stats.lines_pending = self.stats.lines_pending.saturating_sub(meta.lines);
        for b in &meta.blocks {
            if let Some(ns) = self.backlog_ns.get_mut(&b.rig) {
                *ns = ns.saturating_sub(b.span_ns);
            }
            if let Some(n) = self.pending_blocks.get_mut(&b.rig) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.pending_blocks.remove(&b.rig);
                }
            }
        }
    }

    fn count_all_lost(&mut self, lost: Vec<Lost>) {
        for l in lost {
            self.count_lost(&l.meta, l.reason);
        }
    }

    /// Counts blocks that will never be stored, per rig and reason, and logs them as data loss.
    fn count_lost(&mut self, meta: &Meta, reason: &'static str) {
        self.remove_pending(meta);
        let mut per_rig: BTreeMap<&RigId, (u64, u64)> = BTreeMap::new();
        for b in &meta.blocks {
            let e = per_rig.entry(&b.rig).or_default();
            e.0 += 1;
            e.1 += b.samples;
            let s = self.stats.rigs.entry(b.rig.clone()).or_default();
            *s.blocks_dropped.entry(reason.to_owned()).or_default() += 1;
            *s.samples_dropped.entry(reason.to_owned()).or_default() += b.samples;
        }
        for (rig, (blocks, samples)) in per_rig {
            error!(rig = %rig, reason, blocks, samples, "Gave up blocks before storage acknowledged them.");
        }
        if reason != LOST_REJECTED {
            self.stats.lines_dropped_total += meta.lines;
        }
    }

    /// After the drain timeout: stop writing; what is left goes to the spool, or is dropped.
    fn give_up_for_shutdown(&mut self) {
        if let Some(f) = self.in_flight.take() {
            // The sink is inside the cancelled write; nothing else will be written.
            debug!(id = f.id, "Cancelled a storage write at the drain timeout.");
        }
        self.seal();
        if self.outbox.has_spool() {
            let lost = self.outbox.spill(0, None);
            self.count_all_lost(lost);
            if self.outbox.spooled_len() > 0 {
                info!(
                    batches = self.outbox.spooled_len(),
                    "Storage did not take everything before the drain timeout; the rest waits in the spool for the next start."
                );
            }
        } else {
            for meta in self.outbox.drain_memory() {
                error!(
                    lines = meta.lines,
                    "Shutdown drain timed out; dropping lines storage has not accepted."
                );
                self.count_lost(&meta, LOST_SHUTDOWN_DRAIN);
            }
        }
    }

    fn publish(&mut self) {
        self.stats.batches_in_memory = self.outbox.memory_len() as u64;
        self.stats.batches_spooled = self.outbox.spooled_len() as u64;
        self.stats.spool_bytes = self.outbox.spool_bytes();
        self.stats.storage_failing = self.failing;
        for (rig, ns) in &self.backlog_ns {
            self.stats.rigs.entry(rig.clone()).or_default().backlog_s = *ns as f64 * 1e-9;
        }
        self.stats_tx.send_if_modified(|s| {
            if *s == self.stats {
                false
            } else {
                *s = self.stats.clone();
                true
            }
        });
    }
}

/// Wall time, ns since the Unix epoch.
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether the owners changed (`false`: their sender is gone); pending without a receiver.
async fn owners_changed(changes: &mut Option<watch::Receiver<Owners>>) -> bool {
    match changes {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn poll_in_flight(in_flight: &mut Option<InFlight>) -> (Sink, Result<(), WriteError>) {
    match in_flight {
        Some(f) => (&mut f.future).await,
        // Guarded by the select condition.
        None => std::future::pending().await,
    }
}

async fn recv_published<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        // Guarded by the select condition.
        None => std::future::pending().await,
    }
}

async fn wait_for_drain_expiry(
    shutdown: &CancellationToken,
    drain_started: &mut Option<Instant>,
    timeout: Duration,
) {
    shutdown.cancelled().await;
    let started = *drain_started.get_or_insert_with(Instant::now);
    sleep_until(started + timeout).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::FileStorageConfig;
    use crate::lineproto::Precision;
    use crate::store::FileSink;

    fn chunk(seq: u64) -> Chunk {
        Chunk {
            rig_start_seq: None,
            rig: RigId::new("r1").unwrap(),
            seq,
            lines: format!(
                "m a={seq} {seq}\ndtop_blocks,rig=r1,stream=0 seq={seq}i,first_sample_index=0i,samples=10i,sample_period_ns=1000000i,session=1i,backfill=false {seq}\n"
            ),
            line_count: 2,
        }
    }

    fn config(max_lines: usize, max_delay_ms: u64) -> WriterConfig {
        WriterConfig {
            max_lines,
            max_delay: Duration::from_millis(max_delay_ms),
            retry: BackoffConfig {
                initial_ms: 10,
                max_ms: 20,
            },
            drain_timeout: Duration::from_millis(200),
            memory_bytes: 1 << 20,
            spool_sync_interval: None,
        }
    }

    /// The value of `rx` once `done` holds, waiting at most 10 s.
    async fn when<T: Clone>(rx: &mut watch::Receiver<T>, done: impl FnMut(&T) -> bool) -> T {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(done))
            .await
            .expect("not within 10 s")
            .expect("the sender is gone")
            .clone()
    }

    async fn file_sink(dir: &std::path::Path) -> Sink {
        let c = FileStorageConfig {
            dir: dir.to_owned(),
            precision: Precision::Us,
        };
        Sink::File(FileSink::create(&c).await.unwrap())
    }

    #[tokio::test]
    async fn chunks_of_a_rig_this_twin_lost_are_dropped_on_arrival_and_counted() {
        use crate::owner::{OwnerMode, owners_channel_for};
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
        let (owners, owners_rx) = owners_channel_for(OwnerMode::Coordinated);
        let rig = RigId::new("r1").unwrap();
        owners.own(rig.clone(), 3).unwrap();
        // One chunk a batch, so each arrival is decided on its own.
        let writer = Writer::new(
            file_sink(dir.path()).await,
            rx,
            config(2, 3_600_000),
            CancellationToken::new(),
            stats_tx,
        )
        .with_owners(owners_rx);
        let task = tokio::spawn(writer.run());
        tx.send(chunk(1)).await.unwrap();
        let stored = |s: &StoreStats| s.rigs.get(&rig).is_some_and(|r| r.blocks_stored == 1);
        when(&mut stats_rx, stored).await;
        // Lost: made while owned, but arriving after the loss, so never stored.
        owners.lose(rig.clone());
        tx.send(chunk(2)).await.unwrap();
        tx.send(chunk(3)).await.unwrap();
        drop(tx);
        let stats = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        let r = &stats.rigs[&rig];
        assert_eq!((r.blocks_stored, r.blocks_fenced), (1, 2));
        assert_eq!(stats.lines_written_total, 2);
        assert_eq!(r.persisted_seq, Some(1));
    }

    /// The storage race of a handover: a lost rig is reported settled only once the blocks of
    /// it this writer accepted before the loss are stored, at the epoch it was lost at.
    #[tokio::test]
    async fn a_lost_rig_is_settled_only_once_its_accepted_blocks_are_stored() {
        use crate::owner::{OwnerMode, owners_channel_for};
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
        let (settled_tx, mut settled_rx) = watch::channel(Settled::new());
        let (owners, owners_rx) = owners_channel_for(OwnerMode::Coordinated);
        let (r1, r2) = (RigId::new("r1").unwrap(), RigId::new("r2").unwrap());
        owners.own(r1.clone(), 3).unwrap();
        owners.own(r2.clone(), 5).unwrap();
        // Sealed at 4 lines only: a lone 2-line chunk stays in the open batch.
        let writer = Writer::new(
            file_sink(dir.path()).await,
            rx,
            config(4, 3_600_000),
            CancellationToken::new(),
            stats_tx,
        )
        .with_owners(owners_rx)
        .with_settled(settled_tx);
        let task = tokio::spawn(writer.run());
        tx.send(chunk(1)).await.unwrap();
        // Accepted (pending in the batch), then lost.
        when(&mut stats_rx, |s| s.lines_pending == 2).await;
        owners.lose(r1.clone());
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            settled_rx.wait_for(|s| s.contains_key(&r1)),
        )
        .await
        .is_ok();
        assert!(!early, "settled while its block waited in the batch");
        // Another rig's block fills the batch: it is written, and r1 settles at epoch 3.
        tx.send(Chunk {
            rig: r2.clone(),
            lines: chunk(1).lines.replace("rig=r1", "rig=r2"),
            ..chunk(1)
        })
        .await
        .unwrap();
        let settled = when(&mut settled_rx, |s| s.contains_key(&r1)).await;
        assert_eq!(settled, Settled::from([(r1.clone(), 3)]));
        let stats = stats_rx.borrow().clone();
        assert_eq!(stats.rigs[&r1].blocks_stored, 1);
        // A rig lost with nothing pending settles at once; an owned one never.
        owners.lose(r2.clone());
        let settled = when(&mut settled_rx, |s| s.contains_key(&r2)).await;
        assert_eq!(settled, Settled::from([(r1, 3), (r2, 5)]));
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn flushes_a_full_batch_without_waiting_for_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
        let (wm_tx, mut wm_rx) = watch::channel(Watermarks::new());
        // A delay far longer than the test: only max_lines can trigger this flush.
        let writer = Writer::new(
            file_sink(dir.path()).await,
            rx,
            config(4, 3_600_000),
            CancellationToken::new(),
            stats_tx,
        )
        .with_watermarks(wm_tx);
        let task = tokio::spawn(writer.run());
        tx.send(chunk(1)).await.unwrap();
        tx.send(chunk(2)).await.unwrap();
        let stats = when(&mut stats_rx, |s| s.batches_written_total == 1).await;
        assert_eq!(stats.lines_written_total, 4);
        let r = &stats.rigs[&RigId::new("r1").unwrap()];
        assert_eq!(
            (r.blocks_stored, r.lines_written, r.samples_stored),
            (2, 4, 20)
        );
        assert_eq!(r.persisted_seq, Some(2));
        assert_eq!(r.backlog_s, 0.0);
        let wm = wm_rx.wait_for(|w| !w.is_empty()).await.unwrap().clone();
        assert_eq!(wm[&RigId::new("r1").unwrap()], 2);
        drop(tx);
        let final_stats = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(final_stats.batches_written_total, 1);
    }

    #[tokio::test]
    async fn flushes_a_partial_batch_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
        let writer = Writer::new(
            file_sink(dir.path()).await,
            rx,
            config(1000, 20),
            CancellationToken::new(),
            stats_tx,
        );
        let task = tokio::spawn(writer.run());
        tx.send(chunk(1)).await.unwrap();
        when(&mut stats_rx, |s| s.lines_written_total == 2).await;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[tokio::test]
    async fn skipped_seqs_let_the_watermark_pass_but_do_not_count_as_lost_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (loss_tx, loss_rx) = mpsc::channel(8);
        let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
        let (wm_tx, mut wm_rx) = watch::channel(Watermarks::new());
        let writer = Writer::new(
            file_sink(dir.path()).await,
            rx,
            config(1000, 20),
            CancellationToken::new(),
            stats_tx,
        )
        .with_watermarks(wm_tx)
        .with_declared_losses(loss_rx);
        let task = tokio::spawn(writer.run());
        let rig = RigId::new("r1").unwrap();
        tx.send(chunk(1)).await.unwrap();
        let at = |wm_rx: &mut watch::Receiver<Watermarks>, seq: u64| {
            let rig = rig.clone();
            let mut wm_rx = wm_rx.clone();
            async move {
                when(&mut wm_rx, |w| w.get(&rig) == Some(&seq)).await;
            }
        };
        at(&mut wm_rx, 1).await;
        let skipped = DeclaredLoss {
            first_seq: 2,
            last_seq: 5,
            blocks: 4,
            samples: 0,
            reason: persisted::SKIPPED_LABEL,
            detected_at_ns: 1_700_000_000_000_000_000,
        };
        loss_tx.send((rig.clone(), skipped.clone())).await.unwrap();
        at(&mut wm_rx, 5).await;
        // A repeat counts once.
        loss_tx.send((rig.clone(), skipped)).await.unwrap();
        tx.send(chunk(6)).await.unwrap();
        at(&mut wm_rx, 6).await;
        let stats = when(&mut stats_rx, |s| {
            s.rigs
                .get(&rig)
                .is_some_and(|r| r.loss_declarations_total == 2)
        })
        .await;
        let r = &stats.rigs[&rig];
        assert_eq!(r.seqs_skipped_at_edge, 4);
        assert!(
            r.blocks_lost_at_edge.is_empty(),
            "{:?}",
            r.blocks_lost_at_edge
        );
        assert!(r.samples_lost_at_edge.is_empty());
        drop(tx);
        drop(loss_tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}
