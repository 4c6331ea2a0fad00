//! The storage writer task: sole owner of the batch and the sink.
//!
//! Flushes when the batch reaches `max_lines` or is `max_delay` old; retries transient failures
//! with jittered exponential backoff, keeping the batch (the full input channel then slows ingest
//! down); counts and logs batches the server refuses. It stops when every chunk sender is gone,
//! after a last flush bounded by the drain timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use dtop_proto::RigId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::batch::Batch;
use super::{Sink, WriteError};
use crate::backoff::Backoff;
use crate::config::{BackoffConfig, TwinConfig};
use crate::rig::Chunk;
use crate::stats::{RigStoreStats, StoreStats};

/// The writer's knobs, from [`TwinConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriterConfig {
    pub max_lines: usize,
    pub max_delay: Duration,
    pub retry: BackoffConfig,
    pub drain_timeout: Duration,
}

impl From<&TwinConfig> for WriterConfig {
    fn from(c: &TwinConfig) -> Self {
        Self {
            max_lines: c.batch.max_lines,
            max_delay: c.batch.max_delay(),
            retry: c.retry,
            drain_timeout: c.batch.drain_timeout(),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Writer {
    sink: Sink,
    chunk_rx: mpsc::Receiver<Chunk>,
    config: WriterConfig,
    shutdown: CancellationToken,
    /// Set the first time the writer notices shutdown; the drain timeout runs from here.
    drain_started: Option<Instant>,
    batch: Batch,
    stats: StoreStats,
    stats_tx: watch::Sender<StoreStats>,
    rng: StdRng,
}

impl Writer {
    pub fn new(
        sink: Sink,
        chunk_rx: mpsc::Receiver<Chunk>,
        config: WriterConfig,
        shutdown: CancellationToken,
        stats_tx: watch::Sender<StoreStats>,
    ) -> Self {
        Self {
            sink,
            chunk_rx,
            config,
            shutdown,
            drain_started: None,
            batch: Batch::default(),
            stats: StoreStats::default(),
            stats_tx,
            rng: StdRng::from_os_rng(),
        }
    }

    /// Runs until every chunk sender is dropped; returns the final counters.
    pub async fn run(mut self) -> StoreStats {
        loop {
            let due = self.batch.started().map(|t| t + self.config.max_delay);
            tokio::select! {
                chunk = self.chunk_rx.recv() => {
                    let Some(chunk) = chunk else { break };
                    self.batch.push(chunk, Instant::now());
                    self.stats.lines_pending = self.batch.lines() as u64;
                    if self.batch.lines() >= self.config.max_lines {
                        self.flush().await;
                    }
                }
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => self.flush().await,
            }
        }
        self.flush().await;
        if let Err(e) = self.sink.close().await {
            error!(error = %e, "Could not make the last storage writes durable.");
            self.stats.last_error = Some(e.to_string());
        }
        self.publish();
        debug!(
            lines_written = self.stats.lines_written_total,
            "Storage writer stopped."
        );
        self.stats
    }

    async fn flush(&mut self) {
        let (body, lines, per_rig) = self.batch.take();
        if lines == 0 {
            return;
        }
        let mut backoff = Backoff::new(self.config.retry);
        loop {
            if self.drain_expired() {
                error!(
                    lines,
                    "Shutdown drain timed out; dropping lines storage has not accepted."
                );
                self.stats.lines_dropped_total += lines as u64;
                break;
            }
            match self.sink.write(&body).await {
                Ok(()) => {
                    self.record_success(lines, per_rig);
                    break;
                }
                Err(WriteError::Rejected { status, message }) => {
                    error!(status, lines, message = %message, "Storage refused a batch as malformed; its lines are lost.");
                    self.stats.lines_rejected_total += lines as u64;
                    self.stats.last_error = Some(format!("HTTP {status}: {message}"));
                    break;
                }
                Err(e @ (WriteError::Retryable { .. } | WriteError::NeedsOperator { .. })) => {
                    let (detail, retry_after) = match e {
                        WriteError::Retryable {
                            detail,
                            retry_after,
                        } => (detail, retry_after),
                        other => {
                            error!(error = %other, lines, "Storage refuses writes until an operator acts (credentials, database or bucket); keeping the batch and retrying.");
                            (other.to_string(), None)
                        }
                    };
                    self.stats.write_errors_total += 1;
                    self.stats.last_error = Some(detail.clone());
                    let max = Duration::from_millis(self.config.retry.max_ms);
                    let delay = backoff
                        .next_delay(&mut self.rng)
                        .max(retry_after.unwrap_or_default().min(max));
                    warn!(
                        error = %detail,
                        lines,
                        attempt = backoff.attempts(),
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "Storage write failed; keeping the batch and retrying."
                    );
                    self.stats.lines_pending = lines as u64;
                    self.publish();
                    tokio::select! {
                        _ = sleep(delay) => {}
                        _ = wait_for_drain_expiry(&self.shutdown, &mut self.drain_started, self.config.drain_timeout) => {}
                    }
                }
            }
        }
        self.stats.lines_pending = self.batch.lines() as u64;
        self.publish();
    }

    fn record_success(&mut self, lines: usize, per_rig: BTreeMap<RigId, RigStoreStats>) {
        self.stats.lines_written_total += lines as u64;
        self.stats.batches_written_total += 1;
        for (rig, s) in per_rig {
            let total = self.stats.rigs.entry(rig).or_default();
            total.blocks_stored += s.blocks_stored;
            total.lines_written += s.lines_written;
        }
        debug!(lines, "Stored a batch.");
    }

    fn drain_expired(&mut self) -> bool {
        if !self.shutdown.is_cancelled() {
            return false;
        }
        let started = *self.drain_started.get_or_insert_with(Instant::now);
        Instant::now() >= started + self.config.drain_timeout
    }

    fn publish(&self) {
        self.stats_tx.send_replace(self.stats.clone());
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
            rig: RigId::new("r1").unwrap(),
            seq,
            lines: format!("m a={seq} {seq}\n"),
            line_count: 1,
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
        }
    }

    async fn file_sink(dir: &std::path::Path) -> Sink {
        let c = FileStorageConfig {
            dir: dir.to_owned(),
            precision: Precision::Us,
        };
        Sink::File(FileSink::create(&c).await.unwrap())
    }

    #[tokio::test]
    async fn flushes_a_full_batch_without_waiting_for_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(8);
        let (stats_tx, mut stats_rx) = watch::channel(StoreStats::default());
        // A delay far longer than the test: only max_lines can trigger this flush.
        let writer = Writer::new(
            file_sink(dir.path()).await,
            rx,
            config(2, 3_600_000),
            CancellationToken::new(),
            stats_tx,
        );
        let task = tokio::spawn(writer.run());
        tx.send(chunk(1)).await.unwrap();
        tx.send(chunk(2)).await.unwrap();
        let stats = tokio::time::timeout(
            Duration::from_secs(10),
            stats_rx.wait_for(|s| s.batches_written_total == 1),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        assert_eq!(stats.lines_written_total, 2);
        assert_eq!(
            stats.rigs[&RigId::new("r1").unwrap()],
            RigStoreStats {
                blocks_stored: 2,
                lines_written: 2
            }
        );
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
        tokio::time::timeout(
            Duration::from_secs(10),
            stats_rx.wait_for(|s| s.lines_written_total == 1),
        )
        .await
        .unwrap()
        .unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }
}
