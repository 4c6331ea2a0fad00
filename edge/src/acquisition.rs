//! The acquisition task: feeds firmware frames (and polled Modbus samples, one batcher per
//! stream) to the [`Batcher`]s, persists `next_seq` before a block leaves, and hands manifests
//! and blocks to the publisher. Owns the batchers and the `next_seq` file; knows nothing of
//! the serial port, Modbus or MQTT.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use dtop_proto::RigId;
use dtop_proto::v1::SampleBlock;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::batcher::{BatchError, Batcher, Discontinuity, StreamLayout, block_sample_count};
use crate::modbus::{PolledSample, streams::PolledStream};
use crate::publisher::PublisherEvent;
use crate::serial::SerialEvent;
use crate::state_file;
use crate::stats::StatsHandle;

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
    next_seq_path: PathBuf,
    out_tx: mpsc::Sender<PublisherEvent>,
    stats: StatsHandle,
    /// Polled Modbus streams by stream id, and where their samples come from.
    polled: BTreeMap<u32, Batcher>,
    polled_rx: Option<mpsc::Receiver<PolledSample>>,
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
    ) -> Self {
        Self {
            batcher: Batcher::new(rig_id, block_samples, next_seq),
            next_seq_path,
            out_tx,
            stats,
            polled: BTreeMap::new(),
            polled_rx: None,
        }
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

    /// Runs until the serial task closes its channel, then emits the partial block.
    pub async fn run(
        mut self,
        mut events_rx: mpsc::Receiver<SerialEvent>,
    ) -> Result<(), PublisherGone> {
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
                                    "Firmware sample index went backwards (restart?); closed the block and re-anchored timestamps."
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

    /// Persists the advanced `next_seq`, then sends the block: a crash in between skips a seq
    /// number, which downstream reads as a gap, instead of reusing one.
    async fn emit(&mut self, block: SampleBlock) -> Result<(), PublisherGone> {
        let (path, next_seq) = (self.next_seq_path.clone(), self.batcher.next_seq());
        let persisted =
            tokio::task::spawn_blocking(move || state_file::write_counter(&path, next_seq)).await;
        match persisted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, next_seq, "Could not persist next_seq; a restart may reuse block numbers.")
            }
            Err(e) => {
                error!(error = %e, next_seq, "The next_seq writer failed; a restart may reuse block numbers.")
            }
        }
        let samples = block_sample_count(&block);
        self.stats.update(|s| s.blocks_made_total += 1);
        tracing::trace!(seq = block.seq, samples, "Block closed.");
        self.out_tx
            .send(PublisherEvent::Block(block))
            .await
            .map_err(|_| PublisherGone)
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
