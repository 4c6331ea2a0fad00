//! Owns the pty byte stream: the reader task turns bytes into `Event`s, the writer task turns
//! frames into bytes (and truth-log rows). Decides nothing about what to send.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use dtop_firmware::codec::{CodecError, FirmwareCodec};
use dtop_firmware::{Frame, Samples};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;

use crate::error::SimError;
use crate::sim::{Counters, Event};
use crate::truth_log::TruthLog;

/// What the firmware task hands the writer on the samples queue.
#[derive(Debug)]
pub enum Outgoing {
    /// A frame of samples, logged to the truth log once written.
    Samples(Samples),
    /// `max_samples` reached: everything before this is written; flush the truth log and
    /// tell `SimHandle::wait_max_samples()`.
    MaxSamplesReached,
}

/// Reads frames from the edge until cancelled. The codec resyncs on garbage, so only an I/O
/// error ends this early.
pub async fn run_reader<R>(
    reader: R,
    events_tx: mpsc::Sender<Event>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) -> Result<(), SimError>
where
    R: AsyncRead + Unpin,
{
    let mut frames = FramedRead::new(reader, FirmwareCodec::new());
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            next = frames.next() => next,
        };
        let codec = frames.decoder();
        counters
            .rx_bad_frames_total
            .store(codec.bad_frames_total(), Ordering::Relaxed);
        counters
            .rx_dropped_bytes_total
            .store(codec.dropped_bytes_total(), Ordering::Relaxed);
        match next {
            Some(Ok(frame)) => {
                tracing::trace!(?frame, "Frame from the edge.");
                // The firmware task only stops on cancellation, so a closed channel means we
                // are shutting down too.
                let send = tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    send = events_tx.send(Event::Frame(frame)) => send,
                };
                if send.is_err() {
                    return Ok(());
                }
            }
            Some(Err(CodecError::Io(e))) => return Err(SimError::PtyIo(e)),
            Some(Err(e)) => return Err(SimError::PtyIo(std::io::Error::other(e))),
            // We hold the slave open, so the master never sees end-of-file while we run.
            None => return Ok(()),
        }
    }
}

/// Writes frames to the edge until cancelled: control frames first (they are small and
/// time-critical), then samples. A frame is always written whole, so the edge never sees a
/// frame cut by our own drop logic; the firmware task drops frames before they get here.
#[allow(clippy::too_many_arguments)]
pub async fn run_writer<W>(
    mut writer: W,
    mut control_rx: mpsc::Receiver<Frame>,
    mut samples_rx: mpsc::Receiver<Outgoing>,
    mut truth_log: Option<TruthLog>,
    counters: Arc<Counters>,
    max_reached_tx: watch::Sender<bool>,
    cancel: CancellationToken,
) -> Result<(), SimError>
where
    W: AsyncWrite + Unpin,
{
    let mut codec = FirmwareCodec::new();
    let mut buf = BytesMut::with_capacity(2 * 1036);
    let result = loop {
        let frame = tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            Some(frame) = control_rx.recv() => frame,
            Some(outgoing) = samples_rx.recv() => match outgoing {
                Outgoing::Samples(samples) => Frame::Samples(samples),
                Outgoing::MaxSamplesReached => {
                    if let Err(e) = flush(&mut truth_log).await {
                        break Err(e);
                    }
                    max_reached_tx.send_replace(true);
                    continue;
                }
            },
            else => break Ok(()),
        };
        buf.clear();
        if let Err(e) = codec.encode(&frame, &mut buf) {
            // An encode overflow is a bug in frame sizing (validate() bounds it); losing the
            // frame is better than stopping the rig.
            tracing::error!(error = %e, "Could not encode a frame; dropped it.");
            continue;
        }
        // No timeout here: the firmware task notices a stalled writer through the full
        // samples queue and drops frames, and cancellation ends this await on shutdown.
        // Never flush(): on a pty, SerialStream::flush is a blocking tcdrain.
        let written = tokio::select! {
            () = cancel.cancelled() => break Ok(()),
            written = writer.write_all(&buf) => written,
        };
        if let Err(e) = written {
            break Err(SimError::PtyIo(e));
        }
        if let Frame::Samples(samples) = &frame {
            counters.frames_sent_total.fetch_add(1, Ordering::Relaxed);
            let logged = match truth_log.as_mut() {
                Some(log) => log.append(samples).await,
                None => Ok(()),
            };
            if let Err(e) = logged {
                break Err(e);
            }
        }
    };
    flush(&mut truth_log).await?;
    result
}

async fn flush(truth_log: &mut Option<TruthLog>) -> Result<(), SimError> {
    match truth_log {
        Some(log) => log.flush().await,
        None => Ok(()),
    }
}
