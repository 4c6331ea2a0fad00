//! `tokio_util` codec for the firmware protocol (feature `tokio`): turns a byte stream into
//! `Frame`s and back. Owns the edge-side `Deframer` and its counters. Does no I/O itself, so it
//! works over a serial port, a TCP socket or an in-memory pipe.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::deframer::Deframer;
use crate::frame::{FrameError, MAX_ENCODED_FRAME_LEN, encode_frame, max_wire_len};
use crate::message::EncodeError;
use crate::owned::Frame;

/// Why the codec failed. Garbage on the line is never an error: it is dropped and counted
/// (PROTOCOL.md §6).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The underlying stream failed; reopen the port.
    #[error("firmware link I/O failed")]
    Io(#[from] std::io::Error),
    /// A frame to send was invalid; a bug in the caller, nothing was written.
    #[error("cannot encode a firmware frame")]
    Encode(#[from] EncodeError),
}

/// Decoder and encoder of firmware frames (PROTOCOL.md §3), for `tokio_util::codec::Framed`.
#[derive(Debug, Default)]
pub struct FirmwareCodec {
    /// Receives into a buffer that fits the largest valid frame (PROTOCOL.md §5).
    deframer: Deframer<MAX_ENCODED_FRAME_LEN>,
}

impl FirmwareCodec {
    /// A codec with zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes dropped so far: bad frames and unterminated frames at end of stream
    /// (PROTOCOL.md §6.4).
    pub fn dropped_bytes_total(&self) -> u64 {
        self.deframer.dropped_bytes_total()
    }

    /// Frames dropped so far (PROTOCOL.md §6.4).
    pub fn bad_frames_total(&self) -> u64 {
        self.deframer.bad_frames_total()
    }

    /// Valid frames decoded so far.
    pub fn frames_total(&self) -> u64 {
        self.deframer.frames_total()
    }

    /// Bytes of valid frames and empty-frame delimiters so far (PROTOCOL.md §6.5).
    pub fn accepted_bytes_total(&self) -> u64 {
        self.deframer.accepted_bytes_total()
    }

    /// Why the most recent bad frame was dropped, for logs.
    pub fn last_error(&self) -> Option<FrameError> {
        self.deframer.last_error()
    }
}

impl Decoder for FirmwareCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        // Every byte moves into the deframer, so `src` is always drained; partial frames wait
        // there, not in `src`.
        while !src.is_empty() {
            let (consumed, result) = self.deframer.feed(src);
            let frame = match result {
                Some(Ok(message)) => Some(Frame::from(message)),
                // Already counted by the deframer; resync at the next frame.
                Some(Err(_)) | None => None,
            };
            src.advance(consumed);
            if frame.is_some() {
                return Ok(frame);
            }
        }
        Ok(None)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                self.deframer.finish();
                Ok(None)
            }
        }
    }
}

impl Encoder<&Frame> for FirmwareCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let message = frame.as_message().map_err(EncodeError::Invalid)?;
        let start = dst.len();
        dst.resize(start + max_wire_len(message.payload_len()), 0);
        match encode_frame(&message, &mut dst[start..]) {
            Ok(len) => {
                dst.truncate(start + len);
                Ok(())
            }
            Err(e) => {
                dst.truncate(start);
                Err(e.into())
            }
        }
    }
}

impl Encoder<Frame> for FirmwareCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{
        ActuatorCommand, ActuatorStatus, ChannelDesc, ChannelKind, Fault, Heartbeat, MAX_CHANNELS,
        Manifest, max_samples_per_frame,
    };
    use crate::owned::Samples;
    use futures::{SinkExt, StreamExt};
    use proptest::prelude::*;
    use tokio_util::codec::Framed;

    fn encode(frame: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        FirmwareCodec::new().encode(frame, &mut out).unwrap();
        out
    }

    fn decode_all(codec: &mut FirmwareCodec, bytes: &[u8]) -> Vec<Frame> {
        let mut src = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut src).unwrap() {
            out.push(frame);
        }
        assert!(src.is_empty());
        out
    }

    fn finite_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            -1.0e6f32..1.0e6,
            Just(0.0),
            Just(-0.0),
            Just(f32::MAX),
            Just(f32::MIN_POSITIVE)
        ]
    }

    fn channel_kind() -> impl Strategy<Value = ChannelKind> {
        prop_oneof![
            Just(ChannelKind::Acceleration),
            Just(ChannelKind::Force),
            Just(ChannelKind::Displacement),
            Just(ChannelKind::Velocity),
            Just(ChannelKind::Current),
            Just(ChannelKind::Other),
        ]
    }

    fn manifest() -> impl Strategy<Value = Manifest> {
        (
            "[a-zA-Z0-9.+\\-é]{0,10}",
            1u32..,
            0u8..=10,
            proptest::collection::btree_set(any::<u8>(), 1..=MAX_CHANNELS),
            0.0f32..1000.0,
        )
            .prop_flat_map(|(version, rate, floors, ids, max_force)| {
                let channels: Vec<_> = ids
                    .into_iter()
                    .map(|id| {
                        (channel_kind(), 0..=floors, finite_f32()).prop_map(
                            move |(kind, floor, scale)| ChannelDesc {
                                id,
                                kind,
                                floor,
                                scale,
                            },
                        )
                    })
                    .collect();
                (0..=floors, channels).prop_map(move |(actuator_floor, channels)| {
                    Manifest::new(&version, rate, floors, actuator_floor, max_force, &channels)
                        .unwrap()
                })
            })
    }

    fn samples() -> impl Strategy<Value = Samples> {
        (1u8..=MAX_CHANNELS as u8)
            .prop_flat_map(|channels| {
                let most = max_samples_per_frame(usize::from(channels));
                (
                    any::<u64>(),
                    Just(channels),
                    (1..=most).prop_flat_map(move |samples| {
                        proptest::collection::vec(any::<i32>(), samples * usize::from(channels))
                    }),
                )
            })
            .prop_map(|(first, channels, raw)| Samples::new(first, channels, raw).unwrap())
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            Just(Frame::Hello),
            manifest().prop_map(Frame::Manifest),
            samples().prop_map(Frame::Samples),
            (any::<u16>(), any::<bool>(), finite_f32()).prop_map(|(seq, enable, force_n)| {
                Frame::ActuatorCommand(ActuatorCommand {
                    seq,
                    enable,
                    force_n,
                    origin_sample_index: ActuatorCommand::NO_ORIGIN,
                })
            }),
            (any::<u16>(), any::<bool>(), finite_f32(), any::<u64>()).prop_map(
                |(seq, enabled, force_n, applied_at_sample_index)| {
                    Frame::ActuatorStatus(ActuatorStatus {
                        seq,
                        enabled,
                        force_n,
                        applied_at_sample_index,
                    })
                }
            ),
            (any::<u32>(), any::<u64>()).prop_map(|(uptime_ms, sample_index)| {
                Frame::Heartbeat(Heartbeat {
                    uptime_ms,
                    sample_index,
                })
            }),
            (any::<u16>(), any::<u64>())
                .prop_map(|(code, sample_index)| Frame::Fault(Fault { code, sample_index })),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips_through_the_codec(frame in any_frame()) {
            let wire = encode(&frame);
            prop_assert!(wire.len() <= crate::frame::MAX_WIRE_FRAME_LEN);
            prop_assert_eq!(wire.iter().filter(|&&b| b == 0).count(), 1);
            let mut codec = FirmwareCodec::new();
            prop_assert_eq!(decode_all(&mut codec, &wire), vec![frame]);
            prop_assert_eq!(codec.bad_frames_total(), 0);
            prop_assert_eq!(codec.dropped_bytes_total(), 0);
        }

        #[test]
        fn every_frame_round_trips_when_split_at_any_point(frame in any_frame(), cut in any::<prop::sample::Index>()) {
            let wire = encode(&frame);
            let at = cut.index(wire.len());
            let mut codec = FirmwareCodec::new();
            let mut src = BytesMut::from(&wire[..at]);
            prop_assert_eq!(codec.decode(&mut src).unwrap(), None);
            src.extend_from_slice(&wire[at..]);
            let decoded = codec.decode(&mut src).unwrap();
            prop_assert_eq!(decoded, Some(frame), "cut at {} of {}, last error {:?}", at, wire.len(), codec.last_error());
        }

        #[test]
        fn garbage_followed_by_a_valid_frame_still_yields_that_frame(
            garbage in proptest::collection::vec(any::<u8>(), 0..3000),
            frame in any_frame(),
        ) {
            // The delimiter ends whatever the garbage left half-built (PROTOCOL.md §6.1).
            let bytes = [&garbage[..], &[0], &encode(&frame)[..]].concat();
            let mut codec = FirmwareCodec::new();
            let frames = decode_all(&mut codec, &bytes);
            prop_assert_eq!(frames.last(), Some(&frame));
            prop_assert_eq!(
                codec.accepted_bytes_total() + codec.dropped_bytes_total(),
                bytes.len() as u64
            );
        }
    }

    #[test]
    fn partial_input_returns_none_and_keeps_nothing_in_the_source_buffer() {
        let wire = encode(&Frame::Hello);
        let mut codec = FirmwareCodec::new();
        let mut src = BytesMut::from(&wire[..3]);
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        assert!(src.is_empty());
        src.extend_from_slice(&wire[3..]);
        assert_eq!(codec.decode(&mut src).unwrap(), Some(Frame::Hello));
    }

    #[test]
    fn resyncs_after_corrupted_crc_and_counts_the_dropped_bytes() {
        let mut bad = encode(&Frame::Hello);
        bad[3] ^= 0xff; // first CRC byte
        let good = encode(&Frame::Heartbeat(Heartbeat {
            uptime_ms: 1,
            sample_index: 2,
        }));
        let bytes = [&bad[..], &good[..]].concat();
        let mut codec = FirmwareCodec::new();
        assert_eq!(decode_all(&mut codec, &bytes).len(), 1);
        assert_eq!(codec.bad_frames_total(), 1);
        assert_eq!(codec.dropped_bytes_total(), bad.len() as u64);
        assert!(matches!(
            codec.last_error(),
            Some(FrameError::BadCrc { .. })
        ));
    }

    #[test]
    fn end_of_stream_drops_the_unterminated_tail() {
        let wire = encode(&Frame::Hello);
        let mut codec = FirmwareCodec::new();
        let frames = decode_all(&mut codec, &[&wire[..], &wire[..4]].concat());
        assert_eq!(frames, vec![Frame::Hello]);
        assert_eq!(codec.dropped_bytes_total(), 4);
        assert_eq!(codec.bad_frames_total(), 0);
    }

    #[test]
    fn invalid_frames_are_refused_without_writing() {
        let mut dst = BytesMut::from(&b"keep"[..]);
        let nan = Frame::ActuatorCommand(ActuatorCommand {
            seq: 0,
            enable: true,
            force_n: f32::NAN,
            origin_sample_index: ActuatorCommand::NO_ORIGIN,
        });
        let result = FirmwareCodec::new().encode(&nan, &mut dst);
        assert!(matches!(
            result,
            Err(CodecError::Encode(EncodeError::Invalid(_)))
        ));
        assert_eq!(&dst[..], b"keep");
    }

    #[tokio::test]
    async fn frames_cross_an_in_memory_duplex_both_ways() {
        // A small pipe buffer forces frames to arrive in pieces.
        let (edge_io, firmware_io) = tokio::io::duplex(64);
        let mut edge = Framed::new(edge_io, FirmwareCodec::new());
        let mut firmware = Framed::new(firmware_io, FirmwareCodec::new());

        let manifest = Manifest::new(
            "sim-0.1",
            1_000_000,
            3,
            3,
            10.0,
            &[ChannelDesc {
                id: 1,
                kind: ChannelKind::Acceleration,
                floor: 1,
                scale: 1e-3,
            }],
        )
        .unwrap();
        let firmware_task = tokio::spawn(async move {
            let hello = firmware.next().await.unwrap().unwrap();
            assert_eq!(hello, Frame::Hello);
            firmware.send(Frame::Manifest(manifest)).await.unwrap();
            for block in 0..20u64 {
                let raw = (0..250).map(|i| (block * 250 + i) as i32).collect();
                let samples = Samples::new(block * 250, 1, raw).unwrap();
                firmware.send(Frame::Samples(samples)).await.unwrap();
            }
            let command = firmware.next().await.unwrap().unwrap();
            let Frame::ActuatorCommand(command) = command else {
                panic!("expected a command, got {command:?}");
            };
            firmware
                .send(Frame::ActuatorStatus(ActuatorStatus {
                    seq: command.seq,
                    enabled: command.enable,
                    force_n: command.force_n,
                    applied_at_sample_index: 5000,
                }))
                .await
                .unwrap();
        });

        edge.send(Frame::Hello).await.unwrap();
        assert_eq!(
            edge.next().await.unwrap().unwrap(),
            Frame::Manifest(manifest)
        );
        let mut next_index = 0u64;
        for _ in 0..20 {
            let Frame::Samples(samples) = edge.next().await.unwrap().unwrap() else {
                panic!("expected samples");
            };
            assert_eq!(samples.first_sample_index, next_index);
            assert_eq!(samples.get(0, 0), Some(next_index as i32));
            next_index = samples.next_sample_index();
        }
        assert_eq!(next_index, 5000);
        edge.send(Frame::ActuatorCommand(ActuatorCommand {
            seq: 77,
            enable: true,
            force_n: 1.5,
            origin_sample_index: ActuatorCommand::NO_ORIGIN,
        }))
        .await
        .unwrap();
        let Frame::ActuatorStatus(status) = edge.next().await.unwrap().unwrap() else {
            panic!("expected a status");
        };
        assert_eq!(status.seq, 77);
        firmware_task.await.unwrap();
        // The firmware side hung up: the stream ends cleanly.
        assert!(edge.next().await.is_none());
        assert_eq!(edge.codec().bad_frames_total(), 0);
        assert_eq!(edge.codec().dropped_bytes_total(), 0);
    }
}
