//! Push-based receiver (PROTOCOL.md §6): buffers bytes up to each `0x00`, decodes the frame in
//! place and keeps the drop/bad-frame counters. Owns only its fixed buffer; no I/O, no
//! allocation, so the same code runs in firmware and under the tokio codec.

use crate::frame::{
    DELIMITER, FrameError, MAX_ENCODED_FRAME_LEN, cobs_decode_in_place, decode_raw_frame,
};
use crate::message::Message;

/// Receive state for one byte stream, with an `N`-byte buffer for one encoded frame.
///
/// `N = MAX_ENCODED_FRAME_LEN` accepts every valid frame (the edge). Firmware may pick a
/// smaller `N`, e.g. 32: longer frames then count as oversized (PROTOCOL.md §5).
///
/// Every byte fed ends up in exactly one of `accepted_bytes_total`, `dropped_bytes_total` or
/// `pending_len` (PROTOCOL.md §6.5).
#[derive(Clone)]
pub struct Deframer<const N: usize = MAX_ENCODED_FRAME_LEN> {
    /// Encoded bytes of the frame being received; decoded in place on its delimiter.
    buf: [u8; N],
    /// Used bytes of `buf`.
    len: usize,
    /// The current frame overflowed `buf`; its bytes are dropped up to the next delimiter.
    discarding: bool,
    frames_total: u64,
    bad_frames_total: u64,
    dropped_bytes_total: u64,
    accepted_bytes_total: u64,
    last_error: Option<FrameError>,
}

impl<const N: usize> core::fmt::Debug for Deframer<N> {
    // The buffer is left out: a kilobyte of stale bytes helps no log reader.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Deframer")
            .field("capacity", &N)
            .field("pending_len", &self.len)
            .field("discarding", &self.discarding)
            .field("frames_total", &self.frames_total)
            .field("bad_frames_total", &self.bad_frames_total)
            .field("dropped_bytes_total", &self.dropped_bytes_total)
            .field("accepted_bytes_total", &self.accepted_bytes_total)
            .field("last_error", &self.last_error)
            .finish()
    }
}

impl<const N: usize> Default for Deframer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Deframer<N> {
    /// An empty receiver.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            discarding: false,
            frames_total: 0,
            bad_frames_total: 0,
            dropped_bytes_total: 0,
            accepted_bytes_total: 0,
            last_error: None,
        }
    }

    /// Feeds one byte; returns the outcome when it completes a non-empty frame.
    pub fn push(&mut self, byte: u8) -> Option<Result<Message<'_>, FrameError>> {
        self.feed(core::slice::from_ref(&byte)).1
    }

    /// Feeds bytes up to and including the first delimiter that ends a non-empty frame.
    ///
    /// Returns how many bytes of `bytes` were consumed and, if a frame ended, the decoded
    /// message or why it was dropped (already counted). Call again with the rest.
    pub fn feed(&mut self, bytes: &[u8]) -> (usize, Option<Result<Message<'_>, FrameError>>) {
        let mut consumed = 0;
        loop {
            let rest = &bytes[consumed..];
            let Some(at) = rest.iter().position(|&b| b == DELIMITER) else {
                self.append(rest);
                return (bytes.len(), None);
            };
            self.append(&rest[..at]);
            consumed += at + 1;
            if self.len == 0 && !self.discarding {
                // An empty frame: senders may flush the line with extra delimiters (§6.2).
                self.accepted_bytes_total += 1;
                continue;
            }
            return (consumed, Some(self.complete()));
        }
    }

    /// Ends the stream: the partial frame, if any, is dropped and counted (PROTOCOL.md §6.6).
    /// Returns the bytes dropped.
    pub fn finish(&mut self) -> usize {
        let dropped = self.len;
        self.dropped_bytes_total += dropped as u64;
        self.len = 0;
        self.discarding = false;
        dropped
    }

    /// Bytes buffered for a frame whose delimiter has not arrived yet.
    pub fn pending_len(&self) -> usize {
        self.len
    }

    /// Valid frames decoded.
    pub fn frames_total(&self) -> u64 {
        self.frames_total
    }

    /// Frames dropped for any reason of PROTOCOL.md §6.3.
    pub fn bad_frames_total(&self) -> u64 {
        self.bad_frames_total
    }

    /// Bytes of bad frames (delimiters included) and of unterminated frames at `finish`.
    pub fn dropped_bytes_total(&self) -> u64 {
        self.dropped_bytes_total
    }

    /// Bytes of valid frames (delimiters included) plus empty-frame delimiters.
    pub fn accepted_bytes_total(&self) -> u64 {
        self.accepted_bytes_total
    }

    /// Why the most recent bad frame was dropped.
    pub fn last_error(&self) -> Option<FrameError> {
        self.last_error
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.discarding {
            self.dropped_bytes_total += bytes.len() as u64;
            return;
        }
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => {
                self.dropped_bytes_total += (self.len + bytes.len()) as u64;
                self.len = 0;
                self.discarding = true;
            }
        }
    }

    /// Handles a delimiter after a non-empty frame.
    fn complete(&mut self) -> Result<Message<'_>, FrameError> {
        let encoded_len = self.len;
        self.len = 0;
        let result = if core::mem::take(&mut self.discarding) {
            Err(FrameError::Oversized)
        } else {
            cobs_decode_in_place(&mut self.buf[..encoded_len])
                .and_then(|raw_len| decode_raw_frame(&self.buf[..raw_len]))
        };
        // `+ 1` is the delimiter; an oversized frame's other bytes were counted as they came.
        match &result {
            Ok(_) => {
                self.frames_total += 1;
                self.accepted_bytes_total += encoded_len as u64 + 1;
            }
            Err(error) => {
                self.bad_frames_total += 1;
                self.dropped_bytes_total += encoded_len as u64 + 1;
                self.last_error = Some(*error);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{crc32c, encode_frame, max_wire_len};
    use crate::message::{ActuatorCommand, Heartbeat, MessageType, PayloadError, SamplesView};

    fn wire(message: &Message<'_>) -> Vec<u8> {
        let mut out = vec![0; max_wire_len(message.payload_len())];
        let n = encode_frame(message, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn heartbeat(uptime_ms: u32) -> Message<'static> {
        Message::Heartbeat(Heartbeat {
            uptime_ms,
            sample_index: 42,
        })
    }

    /// Feeds everything; collects decoded messages (as Debug strings, since they borrow).
    fn drain<const N: usize>(
        deframer: &mut Deframer<N>,
        mut bytes: &[u8],
    ) -> Vec<Result<String, FrameError>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (used, result) = deframer.feed(bytes);
            if let Some(result) = result {
                out.push(result.map(|m| format!("{m:?}")));
            }
            bytes = &bytes[used..];
        }
        out
    }

    fn assert_accounted<const N: usize>(deframer: &Deframer<N>, fed: usize) {
        assert_eq!(
            deframer.accepted_bytes_total()
                + deframer.dropped_bytes_total()
                + deframer.pending_len() as u64,
            fed as u64
        );
    }

    fn frame_with_raw(raw_body: &[u8]) -> Vec<u8> {
        let raw = [raw_body, &crc32c(raw_body).to_le_bytes()].concat();
        let mut out = vec![0; raw.len() + 8];
        let n = crate::frame::cobs_encode(&raw, &mut out).unwrap();
        out.truncate(n);
        out.push(0);
        out
    }

    #[test]
    fn decodes_frames_fed_one_byte_at_a_time() {
        let bytes = wire(&heartbeat(1));
        let mut deframer = Deframer::<MAX_ENCODED_FRAME_LEN>::new();
        let (last, head) = bytes.split_last().unwrap();
        for &b in head {
            assert!(deframer.push(b).is_none(), "partial frame yields nothing");
        }
        assert_eq!(deframer.push(*last), Some(Ok(heartbeat(1))));
        assert_eq!(deframer.frames_total(), 1);
        assert_accounted(&deframer, bytes.len());
    }

    #[test]
    fn stops_after_each_frame_and_reports_what_it_consumed() {
        let first = wire(&heartbeat(1));
        let second = wire(&heartbeat(2));
        let both = [first.clone(), second].concat();
        let mut deframer = Deframer::<64>::new();
        let (used, result) = deframer.feed(&both);
        assert_eq!(used, first.len());
        assert_eq!(result, Some(Ok(heartbeat(1))));
        let (used, result) = deframer.feed(&both[first.len()..]);
        assert_eq!(used, both.len() - first.len());
        assert_eq!(result, Some(Ok(heartbeat(2))));
    }

    #[test]
    fn ignores_empty_frames_without_counting_them_as_bad() {
        let bytes = [&[0u8, 0, 0][..], &wire(&Message::Hello), &[0, 0]].concat();
        let mut deframer = Deframer::<64>::new();
        let results = drain(&mut deframer, &bytes);
        assert_eq!(results, vec![Ok("Hello".to_string())]);
        assert_eq!(deframer.bad_frames_total(), 0);
        assert_eq!(deframer.dropped_bytes_total(), 0);
        assert_accounted(&deframer, bytes.len());
    }

    #[test]
    fn resyncs_after_garbage_and_counts_the_dropped_bytes() {
        let garbage = [0x13u8, 0x37, 0xff, 0x00];
        let frame = wire(&heartbeat(5));
        let bytes = [&garbage[..], &frame].concat();
        let mut deframer = Deframer::<64>::new();
        let results = drain(&mut deframer, &bytes);
        assert_eq!(results.len(), 2);
        assert!(results[0].is_err());
        assert_eq!(results[1], Ok(format!("{:?}", heartbeat(5))));
        assert_eq!(deframer.bad_frames_total(), 1);
        assert_eq!(deframer.dropped_bytes_total(), garbage.len() as u64);
        assert_accounted(&deframer, bytes.len());
    }

    #[test]
    fn resyncs_after_corrupted_crc() {
        let mut corrupted = wire(&heartbeat(1));
        let crc_byte = corrupted.len() - 2;
        corrupted[crc_byte] ^= 0x01;
        let good = wire(&heartbeat(2));
        let bytes = [corrupted.clone(), good].concat();
        let mut deframer = Deframer::<64>::new();
        let results = drain(&mut deframer, &bytes);
        assert!(matches!(results[0], Err(FrameError::BadCrc { .. })));
        assert_eq!(results[1], Ok(format!("{:?}", heartbeat(2))));
        assert_eq!(deframer.dropped_bytes_total(), corrupted.len() as u64);
        assert_eq!(deframer.bad_frames_total(), 1);
        assert!(matches!(
            deframer.last_error(),
            Some(FrameError::BadCrc { .. })
        ));
        assert_accounted(&deframer, bytes.len());
    }

    #[test]
    fn counts_truncated_wrong_version_unknown_type_and_bad_payload_frames_and_continues() {
        let truncated = frame_with_raw(&[]); // only a CRC: 4 bytes raw
        let wrong_version = frame_with_raw(&[0x01, 0x01]);
        let unknown_type = frame_with_raw(&[0x02, 0x7f]);
        let short_heartbeat = frame_with_raw(&[0x02, 0x30, 1, 2, 3]);
        let good = wire(&heartbeat(9));
        let bad = [truncated, wrong_version, unknown_type, short_heartbeat];
        let bytes = [bad.concat(), good].concat();
        let mut deframer = Deframer::<64>::new();
        let results = drain(&mut deframer, &bytes);
        assert_eq!(
            results,
            vec![
                Err(FrameError::Truncated { len: 4 }),
                Err(FrameError::WrongVersion { version: 1 }),
                Err(FrameError::UnknownType { code: 0x7f }),
                Err(FrameError::Payload {
                    message_type: MessageType::Heartbeat,
                    error: PayloadError::BadLength { len: 3 },
                }),
                Ok(format!("{:?}", heartbeat(9))),
            ]
        );
        assert_eq!(deframer.bad_frames_total(), 4);
        assert_eq!(
            deframer.dropped_bytes_total(),
            bad.iter().map(Vec::len).sum::<usize>() as u64
        );
        assert_accounted(&deframer, bytes.len());
    }

    #[test]
    fn drops_oversized_frames_up_to_the_next_delimiter() {
        let values = [3i32; 40];
        let samples = wire(&Message::Samples(
            SamplesView::from_values(0, 4, &values).unwrap(),
        ));
        let command = wire(&Message::ActuatorCommand(ActuatorCommand {
            seq: 1,
            enable: false,
            force_n: 0.0,
            origin_sample_index: ActuatorCommand::NO_ORIGIN,
        }));
        // A firmware-sized buffer: the samples frame cannot fit, the command can.
        let mut deframer = Deframer::<32>::new();
        let bytes = [samples.clone(), command.clone()].concat();
        let results = drain(&mut deframer, &bytes);
        assert_eq!(results[0], Err(FrameError::Oversized));
        assert!(results[1].is_ok());
        assert_eq!(results.len(), 2);
        assert_eq!(deframer.dropped_bytes_total(), samples.len() as u64);
        assert_accounted(&deframer, bytes.len());
    }

    #[test]
    fn a_frame_of_exactly_the_buffer_size_fits() {
        let frame = wire(&heartbeat(0x0101_0101));
        let mut deframer = Deframer::<19>::new();
        assert_eq!(frame.len(), 20, "fixture is a 19-byte encoded heartbeat");
        assert_eq!(drain(&mut deframer, &frame).len(), 1);
        assert_eq!(deframer.frames_total(), 1);
    }

    #[test]
    fn finish_drops_a_partial_frame() {
        let frame = wire(&heartbeat(1));
        let mut deframer = Deframer::<64>::new();
        assert_eq!(deframer.feed(&frame[..7]), (7, None));
        assert_eq!(deframer.pending_len(), 7);
        assert_eq!(deframer.finish(), 7);
        assert_eq!(deframer.dropped_bytes_total(), 7);
        assert_accounted(&deframer, 7);
    }
}
