//! The acquisition task: feeds firmware frames to the [`Batcher`], persists `next_seq` before a
//! block leaves, and hands manifests and blocks to the publisher. Owns the batcher and the
//! `next_seq` file; knows nothing of the serial port or MQTT.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use dtop_proto::RigId;
use dtop_proto::v1::SampleBlock;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::batcher::{BatchError, Batcher, Discontinuity, StreamLayout, block_sample_count};
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
    batcher: Batcher,
    next_seq_path: PathBuf,
    out_tx: mpsc::Sender<PublisherEvent>,
    stats: StatsHandle,
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
        }
    }

    /// Runs until the serial task closes its channel, then emits the partial block.
    pub async fn run(
        mut self,
        mut events_rx: mpsc::Receiver<SerialEvent>,
    ) -> Result<(), PublisherGone> {
        while let Some(event) = events_rx.recv().await {
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

fn batch_error_reason(e: &BatchError) -> &'static str {
    match e {
        BatchError::NoLayout => "no_manifest",
        BatchError::ChannelCount { .. } => "channel_count",
        BatchError::Ragged { .. } => "ragged_frame",
    }
}
