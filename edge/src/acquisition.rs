//! The acquisition task: feeds firmware frames (and polled Modbus samples, one batcher per
//! stream) to the [`Batcher`]s, keeps every block's seq inside the durable reservation
//! ([`SeqReservation`]) before it leaves, and hands manifests and blocks to the publisher. Owns
//! the batchers, the `next_seq` file and the sample clock file (`sample_clock.json`, see
//! [`crate::sample_clock`]); knows nothing of the serial port, Modbus or MQTT.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use dtop_proto::RigId;
use dtop_proto::v1::SampleBlock;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::batcher::{
    BatchError, Batcher, Discontinuity, StreamLayout, block_sample_count, loss_reason_label,
};
use crate::modbus::{PolledSample, streams::PolledStream};
use crate::publisher::PublisherEvent;
use crate::sample_clock::{ClockRecord, Reanchor};
use crate::seq_reservation::{Gate, SeqReservation};
use crate::serial::SerialEvent;
use crate::state_file::{self, StateFileError};
use crate::stats::StatsHandle;

/// First wait before retrying a reservation write that failed while a block waits on it;
/// doubles up to [`RESERVATION_RETRY_MAX`].
const RESERVATION_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const RESERVATION_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// The publisher stopped listening; nothing downstream can take blocks.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the publisher task is gone")]
pub struct PublisherGone;

/// Wall clock now, ns since the Unix epoch (0 if the clock is before 1970).
pub fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Debug)]
pub struct Acquisition {
    /// Stream 0's batcher; its `next_seq` is the rig-wide block sequence, which the polled
    /// streams' batchers borrow and hand back around every push.
    batcher: Batcher,
    /// The `next_seq` file: the durable reservation bound.
    next_seq_path: PathBuf,
    reservation: SeqReservation,
    /// The write making [`SeqReservation::pending`] durable; never two at once (they share a
    /// temporary file).
    reservation_write: Option<JoinHandle<Result<(), StateFileError>>>,
    /// Cancelled when the edge stops: a block still waiting on a failing reservation write is
    /// then given up (unsent, so its seq was never used) instead of waiting forever.
    stop: CancellationToken,
    /// The first seq given up that way; every later block is given up too, so the given-up
    /// seqs stay a suffix the next run numbers again (none was sent) instead of a hole.
    given_up_from: Option<u64>,
    out_tx: mpsc::Sender<PublisherEvent>,
    stats: StatsHandle,
    /// Polled Modbus streams by stream id, and where their samples come from.
    polled: BTreeMap<u32, Batcher>,
    polled_rx: Option<mpsc::Receiver<PolledSample>>,
    /// Where stream 0's [`ClockRecord`] is rewritten before each of its blocks leaves; `None`
    /// keeps the clock in memory only.
    clock_path: Option<PathBuf>,
    /// A failed clock write was logged; the next failures are not (until one succeeds).
    clock_write_failing: bool,
}

/// What woke the acquisition loop.
enum Input {
    Serial(Option<SerialEvent>),
    Polled(Option<PolledSample>),
}

impl Acquisition {
    pub fn new(
        rig_id: RigId,
        block_samples: usize,
        next_seq: u64,
        next_seq_path: PathBuf,
        out_tx: mpsc::Sender<PublisherEvent>,
        stats: StatsHandle,
        stop: CancellationToken,
    ) -> Self {
        stats.update(|s| s.next_seq = next_seq);
        Self {
            batcher: Batcher::new(rig_id, block_samples, next_seq),
            next_seq_path,
            reservation: SeqReservation::new(next_seq),
            reservation_write: None,
            stop,
            given_up_from: None,
            out_tx,
            stats,
            polled: BTreeMap::new(),
            polled_rx: None,
            clock_path: None,
            clock_write_failing: false,
        }
    }

    /// Continues the previous run's stream-0 timestamps and loss accounting: `record` is its
    /// clock file (at `path`, rewritten from now on), `spool_end_index` the end of its newest
    /// spooled stream-0 block. Samples from there to the first one read are declared lost
    /// (`edge_down`): the spool is what survived, so blocks a killed run made but never
    /// spooled count there too.
    pub fn with_sample_clock(
        mut self,
        path: PathBuf,
        record: Option<ClockRecord>,
        spool_end_index: Option<u64>,
    ) -> Self {
        let accounted_to = spool_end_index
            .or(record.map(|r| r.blocks_end_index))
            .unwrap_or(0);
        info!(
            clock = ?record.map(|r| r.clock),
            accounted_to,
            "Resuming the sample clock and loss accounting."
        );
        self.batcher.resume(record.map(|r| r.clock), accounted_to);
        self.clock_path = Some(path);
        self
    }

    /// Also batches the polled Modbus `streams`, whose samples arrive on `polled_rx`. Their
    /// blocks share the rig-wide `seq` with stream 0 and cover at most about a second each.
    pub fn with_polled(
        mut self,
        rig_id: &RigId,
        block_samples: usize,
        streams: &[PolledStream],
        polled_rx: mpsc::Receiver<PolledSample>,
    ) -> Self {
        for s in streams {
            let samples = polled_block_samples(s.sample_period_ns, block_samples);
            let mut batcher = Batcher::for_stream(rig_id.clone(), s.stream_id, samples, 0);
            batcher.set_layout(s.layout());
            self.polled.insert(s.stream_id, batcher);
        }
        self.polled_rx = Some(polled_rx);
        self
    }

    /// Runs until the serial task closes its channel, then emits the partial block and gives
    /// back the unused reservation (see [`Self::release_reservation`]).
    pub async fn run(
        mut self,
        events_rx: mpsc::Receiver<SerialEvent>,
    ) -> Result<(), PublisherGone> {
        let result = self.acquire(events_rx).await;
        self.release_reservation().await;
        result
    }

    async fn acquire(
        &mut self,
        mut events_rx: mpsc::Receiver<SerialEvent>,
    ) -> Result<(), PublisherGone> {
        // The first reservation is written while the firmware handshake runs.
        self.renew_reservation();
        loop {
            let polled = async {
                match &mut self.polled_rx {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                event = events_rx.recv() => Input::Serial(event),
                sample = polled => Input::Polled(sample),
            };
            let event = match input {
                Input::Serial(Some(event)) => event,
                Input::Serial(None) => break,
                Input::Polled(Some(sample)) => {
                    self.push_polled(sample).await?;
                    continue;
                }
                Input::Polled(None) => {
                    self.polled_rx = None;
                    continue;
                }
            };
            match event {
                SerialEvent::Manifest(manifest) => {
                    let Some(layout) = StreamLayout::from_manifest(&manifest) else {
                        warn!("Firmware manifest has a zero sample rate; ignoring it.");
                        continue;
                    };
                    if let Some(block) = self.batcher.set_layout(layout) {
                        self.emit(block).await?;
                    }
                    self.out_tx
                        .send(PublisherEvent::Manifest(manifest))
                        .await
                        .map_err(|_| PublisherGone)?;
                }
                SerialEvent::SetBlockSamples {
                    command_id,
                    block_samples,
                } => {
                    if let Some(block) = self.batcher.set_block_samples(block_samples as usize) {
                        self.emit(block).await?;
                    }
                    info!(block_samples, command_id = %command_id, "Block length changed by command.");
                    let ack = dtop_proto::v1::CommandAck {
                        command_id,
                        rig_id: String::new(),
                        status: dtop_proto::v1::command_ack::Status::Applied as i32,
                        applied_at_sample_index: self.batcher.expected_index().unwrap_or(0),
                        reason: String::new(),
                    };
                    self.out_tx
                        .send(PublisherEvent::CommandAck(ack))
                        .await
                        .map_err(|_| PublisherGone)?;
                }
                SerialEvent::Samples(samples) => {
                    let channel_count = usize::from(samples.channel_count);
                    match self.batcher.push(
                        samples.first_sample_index,
                        channel_count,
                        &samples.raw,
                        wall_clock_ns(),
                    ) {
                        Ok(pushed) => {
                            if let Some(lost) = pushed.declared_lost {
                                let reason = loss_reason_label(lost.reason);
                                warn!(
                                    samples = lost.samples,
                                    reason,
                                    first_sample_index = samples.first_sample_index,
                                    "Firmware samples no block carries; declared lost on the next block."
                                );
                                self.stats.update(|s| {
                                    *s.samples_unread_by_reason.entry(reason).or_default() +=
                                        lost.samples;
                                });
                            }
                            match pushed.reanchored {
                                Some(Reanchor::JumpDisagrees { disagreement_ns }) => warn!(
                                    disagreement_ms = (disagreement_ns / 1_000_000) as i64,
                                    first_sample_index = samples.first_sample_index,
                                    "The sample index jump disagrees with the wall clock; re-anchored timestamps."
                                ),
                                Some(why) => info!(
                                    cause = ?why,
                                    first_sample_index = samples.first_sample_index,
                                    "Anchored sample timestamps."
                                ),
                                None => {}
                            }
                            match pushed.discontinuity {
                                Some(Discontinuity::Gap {
                                    expected,
                                    got,
                                    missing,
                                }) => warn!(
                                    expected_index = expected,
                                    got_index = got,
                                    missing_samples = missing,
                                    "Firmware sample index jumped forward; closed the block early."
                                ),
                                Some(Discontinuity::Restart { expected, got }) => warn!(
                                    expected_index = expected,
                                    got_index = got,
                                    "Firmware sample index went backwards (restart?); closed the block."
                                ),
                                None => {}
                            }
                            for block in pushed.blocks {
                                self.emit(block).await?;
                            }
                        }
                        Err(e) => {
                            let lost = samples.sample_count() as u64;
                            error!(
                                reason = batch_error_reason(&e),
                                samples = lost,
                                first_sample_index = samples.first_sample_index,
                                error = %e,
                                "Dropped a samples frame the batcher could not accept."
                            );
                            self.stats.add_samples_dropped(lost);
                        }
                    }
                }
            }
        }
        if let Some(block) = self.batcher.flush() {
            self.emit(block).await?;
        }
        let ids: Vec<u32> = self.polled.keys().copied().collect();
        for id in ids {
            let next_seq = self.batcher.next_seq();
            let block = self.polled.get_mut(&id).and_then(|b| {
                b.set_next_seq(next_seq);
                let block = b.flush();
                next_seq_after(b, &mut self.batcher);
                block
            });
            if let Some(block) = block {
                self.emit(block).await?;
            }
        }
        Ok(())
    }

    /// Adds one polled sample to its stream's batcher and emits what closed.
    async fn push_polled(&mut self, sample: PolledSample) -> Result<(), PublisherGone> {
        let next_seq = self.batcher.next_seq();
        let Some(batcher) = self.polled.get_mut(&sample.stream_id) else {
            warn!(
                stream = sample.stream_id,
                "Dropped a polled sample of an unknown stream."
            );
            return Ok(());
        };
        batcher.set_next_seq(next_seq);
        let channels = batcher.layout().map_or(0, |l| l.channel_ids.len());
        // The bus task counts missed polls; a gap here only closes the block early.
        let pushed = batcher.push(
            sample.sample_index,
            channels,
            &sample.raw,
            sample.timestamp_ns,
        );
        next_seq_after(batcher, &mut self.batcher);
        match pushed {
            Ok(pushed) => {
                for block in pushed.blocks {
                    self.emit(block).await?;
                }
            }
            Err(e) => {
                error!(
                    stream = sample.stream_id,
                    reason = batch_error_reason(&e),
                    error = %e,
                    "Dropped a polled sample the batcher could not accept."
                );
                self.stats.add_samples_dropped(1);
            }
        }
        Ok(())
    }

    /// Sends the block once its seq is inside the durable reservation: a crash then leaves
    /// the rest of the reservation unused (declared `skipped` at the next start) and never
    /// lets a restart reuse a seq. Renewals are written in the background from half-way, so
    /// the block that crosses the bound rarely waits.
    async fn emit(&mut self, block: SampleBlock) -> Result<(), PublisherGone> {
        if self.given_up_from.is_some() {
            self.give_up(&block);
            return Ok(());
        }
        self.reap_reservation_write().await;
        self.renew_reservation();
        let mut retry = RESERVATION_RETRY_MIN;
        while self.reservation.gate(block.seq) == Gate::Wait {
            if self.reservation_write.is_none() {
                self.renew_reservation();
            }
            if self.await_reservation_write().await {
                continue;
            }
            // The write failed. Correctness first: the block waits (the serial task's queue
            // absorbs a short wait) unless the edge is stopping.
            let stopped = tokio::select! {
                () = tokio::time::sleep(retry) => false,
                () = self.stop.cancelled() => true,
            };
            if stopped {
                self.given_up_from = Some(block.seq);
                self.give_up(&block);
                return Ok(());
            }
            retry = (retry * 2).min(RESERVATION_RETRY_MAX);
        }
        if block.stream_id == 0 {
            self.save_clock(&block);
        }
        let samples = block_sample_count(&block);
        let next_seq = self.batcher.next_seq();
        self.stats.update(|s| {
            s.blocks_made_total += 1;
            s.next_seq = next_seq;
        });
        tracing::trace!(seq = block.seq, samples, "Block closed.");
        self.out_tx
            .send(PublisherEvent::Block(block))
            .await
            .map_err(|_| PublisherGone)
    }
}

impl Acquisition {
    /// Rewrites the clock file before `block` leaves, so a restart never stamps a sample at a
    /// time this block used, and knows where its blocks ended. A tiny unsynced write (see
    /// [`state_file::write_json_unsynced`]); a failure costs only that weaker restart.
    fn save_clock(&mut self, block: &SampleBlock) {
        let (Some(path), Some(clock)) = (&self.clock_path, self.batcher.clock()) else {
            return;
        };
        let record = ClockRecord {
            clock,
            blocks_end_index: block.first_sample_index + block_sample_count(block) as u64,
        };
        match state_file::write_json_unsynced(path, &record) {
            Ok(()) => self.clock_write_failing = false,
            Err(e) if !self.clock_write_failing => {
                self.clock_write_failing = true;
                warn!(error = %e, "Could not save the sample clock; a restart may re-anchor timestamps later than needed.");
            }
            Err(_) => {}
        }
    }

    fn give_up(&self, block: &SampleBlock) {
        let samples = block_sample_count(block) as u64;
        error!(
            seq = block.seq,
            samples, "Gave up a block at shutdown: its seq could not be reserved durably."
        );
        self.stats.add_samples_dropped(samples);
    }

    /// Starts the background write of a renewed bound if one is due.
    fn renew_reservation(&mut self) {
        if self.reservation_write.is_some() {
            return;
        }
        let next_seq = self.batcher.next_seq();
        let Some(until) = self
            .reservation
            .renewal(next_seq, tokio::time::Instant::now())
        else {
            return;
        };
        let path = self.next_seq_path.clone();
        tracing::debug!(next_seq, until, "Reserving block seqs ahead.");
        self.reservation_write = Some(tokio::task::spawn_blocking(move || {
            state_file::write_counter(&path, until)
        }));
    }

    /// Takes in a finished background write, without waiting for one still running.
    async fn reap_reservation_write(&mut self) {
        if self
            .reservation_write
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
        {
            self.await_reservation_write().await;
        }
    }

    /// Waits for the write in flight (a local file write and fsync; a disk that hangs it
    /// hangs the spool too, so no timeout of its own); `true` if it made its bound durable.
    async fn await_reservation_write(&mut self) -> bool {
        let Some(write) = self.reservation_write.take() else {
            return false;
        };
        let until = self.reservation.pending();
        let outcome = write.await;
        match (outcome, until) {
            (Ok(Ok(())), Some(until)) => {
                self.reservation.renewed(until);
                true
            }
            (Ok(Ok(())), None) => false,
            (Ok(Err(e)), _) => {
                error!(error = %e, until, "Could not persist the block seq reservation; blocks wait until it is durable.");
                self.reservation.renewal_failed();
                false
            }
            (Err(e), _) => {
                error!(error = %e, until, "The seq reservation writer failed; blocks wait until it is durable.");
                self.reservation.renewal_failed();
                false
            }
        }
    }

    /// Writes the exact next seq over the reservation once no block can leave any more, so a
    /// clean stop leaves no gap for the next start to declare. Nothing at or above it was sent.
    async fn release_reservation(&mut self) {
        if self.reservation_write.is_some() {
            self.await_reservation_write().await;
        }
        let next_seq = self.given_up_from.unwrap_or(self.batcher.next_seq());
        let path = self.next_seq_path.clone();
        if next_seq >= self.reservation.durable_until() {
            return;
        }
        let written =
            tokio::task::spawn_blocking(move || state_file::write_counter(&path, next_seq)).await;
        match written {
            Ok(Ok(())) => {
                info!(next_seq, "Gave back the unused block seq reservation.")
            }
            // The reservation stays: the next start declares the unused seqs skipped.
            Ok(Err(e)) => {
                warn!(error = %e, next_seq, "Could not give back the unused seq reservation.")
            }
            Err(e) => {
                warn!(error = %e, next_seq, "Could not give back the unused seq reservation.")
            }
        }
    }
}

/// Hands the rig-wide sequence back to stream 0's batcher after `polled` used it.
fn next_seq_after(polled: &Batcher, stream0: &mut Batcher) {
    stream0.set_next_seq(polled.next_seq());
}

/// Samples per block of a polled stream: `block_samples`, but no more than a second's worth,
/// so a slow poll still reaches the twin about once a second.
pub fn polled_block_samples(sample_period_ns: u64, block_samples: usize) -> usize {
    let per_second = (1_000_000_000 / sample_period_ns.max(1)) as usize;
    block_samples.min(per_second).max(1)
}

fn batch_error_reason(e: &BatchError) -> &'static str {
    match e {
        BatchError::NoLayout => "no_manifest",
        BatchError::ChannelCount { .. } => "channel_count",
        BatchError::Ragged { .. } => "ragged_frame",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_firmware::{ChannelDesc, ChannelKind, Manifest, Samples};

    fn manifest() -> Box<Manifest> {
        let channels = [ChannelDesc {
            id: 0,
            kind: ChannelKind::Acceleration,
            floor: 1,
            scale: 0.001,
        }];
        Box::new(Manifest::new("t", 1_000_000, 3, 0, 0.0, &channels).unwrap())
    }

    /// Runs an acquisition over `frames` of 10 samples (blocks of 10); returns the block seqs
    /// it sent, the `next_seq` file and the samples it gave up.
    async fn run(
        path: PathBuf,
        start: u64,
        frames: u64,
        stop: CancellationToken,
    ) -> (Vec<u64>, Option<u64>, u64) {
        let (stats_tx, stats_rx) = tokio::sync::watch::channel(crate::EdgeStats::default());
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        let (events_tx, events_rx) = mpsc::channel(1024);
        let rig = RigId::new("t").unwrap();
        let a = Acquisition::new(
            rig,
            10,
            start,
            path.clone(),
            out_tx,
            StatsHandle::new(stats_tx),
            stop,
        );
        events_tx
            .send(SerialEvent::Manifest(manifest()))
            .await
            .unwrap();
        for f in 0..frames {
            let samples = Samples::new(f * 10, 1, (0..10).collect()).unwrap();
            events_tx.send(SerialEvent::Samples(samples)).await.unwrap();
        }
        drop(events_tx);
        a.run(events_rx).await.unwrap();
        let mut seqs = Vec::new();
        while let Ok(event) = out_rx.try_recv() {
            if let PublisherEvent::Block(b) = event {
                seqs.push(b.seq);
            }
        }
        let file = state_file::read_counter(&path).ok().flatten();
        let dropped = stats_rx.borrow().samples_dropped_total;
        (seqs, file, dropped)
    }

    #[tokio::test]
    async fn a_clean_stop_gives_the_unused_reservation_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("next_seq");
        let (seqs, file, dropped) = run(path.clone(), 7, 30, CancellationToken::new()).await;
        assert_eq!(seqs, (7..37).collect::<Vec<_>>());
        assert_eq!((file, dropped), (Some(37), 0));
    }

    #[tokio::test]
    async fn a_block_whose_seq_cannot_be_reserved_is_given_up_at_shutdown_never_sent() {
        let dir = tempfile::tempdir().unwrap();
        // No such directory: every reservation write fails.
        let path = dir.path().join("missing").join("next_seq");
        let stop = CancellationToken::new();
        stop.cancel();
        let (seqs, file, dropped) = run(path, 7, 3, stop).await;
        assert_eq!(seqs, Vec::<u64>::new());
        assert_eq!((file, dropped), (None, 30));
    }
}
