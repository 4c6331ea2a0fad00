//! Owned messages for hosts (feature `std`): `Frame` and the Vec-backed `Samples` that the edge
//! and the simulator pass around. Only converts to and from the borrowed core types; framing
//! stays in `frame.rs`.

use crate::frame::{encode_frame, max_wire_len};
use crate::message::{
    ActuatorCommand, ActuatorStatus, EncodeError, Fault, Heartbeat, Manifest, Message, MessageType,
    PayloadError, SamplesView,
};

/// Consecutive samples of every channel (PROTOCOL.md §4.3), owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Samples {
    /// Index of the first sample; the next frame continues at `next_sample_index()`.
    pub first_sample_index: u64,
    /// Channels per sample, in manifest order.
    pub channel_count: u8,
    /// Raw ADC counts, sample-major: `raw[s * channel_count + c]`.
    pub raw: Vec<i32>,
}

impl Samples {
    /// Builds samples that are guaranteed to encode (PROTOCOL.md §4.3 limits).
    pub fn new(
        first_sample_index: u64,
        channel_count: u8,
        raw: Vec<i32>,
    ) -> Result<Self, PayloadError> {
        SamplesView::from_values(first_sample_index, channel_count, &raw)?;
        Ok(Self {
            first_sample_index,
            channel_count,
            raw,
        })
    }

    /// Samples (time instants) held; 0 if `channel_count` is 0.
    pub fn sample_count(&self) -> usize {
        match self.channel_count {
            0 => 0,
            channels => self.raw.len() / usize::from(channels),
        }
    }

    /// Index the next frame should start at if nothing is lost.
    pub fn next_sample_index(&self) -> u64 {
        self.first_sample_index + self.sample_count() as u64
    }

    /// Raw ADC count of `channel` at `sample`, or `None` outside the frame.
    pub fn get(&self, sample: usize, channel: usize) -> Option<i32> {
        let channels = usize::from(self.channel_count);
        if channel >= channels {
            return None;
        }
        self.raw.get(sample * channels + channel).copied()
    }

    /// Borrows these samples for encoding; fails if the public fields were set out of range.
    pub fn view(&self) -> Result<SamplesView<'_>, PayloadError> {
        SamplesView::from_values(self.first_sample_index, self.channel_count, &self.raw)
    }
}

impl From<SamplesView<'_>> for Samples {
    fn from(view: SamplesView<'_>) -> Self {
        Self {
            first_sample_index: view.first_sample_index(),
            channel_count: view.channel_count(),
            raw: view.values().collect(),
        }
    }
}

/// One message of the firmware protocol, owned (PROTOCOL.md §4).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// §4.1, edge → firmware.
    Hello,
    /// §4.2, firmware → edge.
    Manifest(Manifest),
    /// §4.3, firmware → edge.
    Samples(Samples),
    /// §4.4, edge → firmware.
    ActuatorCommand(ActuatorCommand),
    /// §4.5, firmware → edge.
    ActuatorStatus(ActuatorStatus),
    /// §4.6, both directions.
    Heartbeat(Heartbeat),
    /// §4.7, firmware → edge.
    Fault(Fault),
}

impl Frame {
    /// This frame's type code.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Hello => MessageType::Hello,
            Self::Manifest(_) => MessageType::Manifest,
            Self::Samples(_) => MessageType::Samples,
            Self::ActuatorCommand(_) => MessageType::ActuatorCommand,
            Self::ActuatorStatus(_) => MessageType::ActuatorStatus,
            Self::Heartbeat(_) => MessageType::Heartbeat,
            Self::Fault(_) => MessageType::Fault,
        }
    }

    /// Borrows this frame as a core `Message`; fails only for out-of-range `Samples` fields.
    pub fn as_message(&self) -> Result<Message<'_>, PayloadError> {
        Ok(match self {
            Self::Hello => Message::Hello,
            Self::Manifest(m) => Message::Manifest(*m),
            Self::Samples(s) => Message::Samples(s.view()?),
            Self::ActuatorCommand(c) => Message::ActuatorCommand(*c),
            Self::ActuatorStatus(s) => Message::ActuatorStatus(*s),
            Self::Heartbeat(h) => Message::Heartbeat(*h),
            Self::Fault(f) => Message::Fault(*f),
        })
    }

    /// Appends this frame's wire bytes, delimiter included, to `out`. On error `out` is left
    /// as it was.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let message = self.as_message().map_err(EncodeError::Invalid)?;
        let start = out.len();
        out.resize(start + max_wire_len(message.payload_len()), 0);
        match encode_frame(&message, &mut out[start..]) {
            Ok(len) => {
                out.truncate(start + len);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// This frame's wire bytes, delimiter included.
    pub fn to_wire(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

impl From<Message<'_>> for Frame {
    fn from(message: Message<'_>) -> Self {
        match message {
            Message::Hello => Self::Hello,
            Message::Manifest(m) => Self::Manifest(m),
            Message::Samples(s) => Self::Samples(Samples::from(s)),
            Message::ActuatorCommand(c) => Self::ActuatorCommand(c),
            Message::ActuatorStatus(s) => Self::ActuatorStatus(s),
            Message::Heartbeat(h) => Self::Heartbeat(h),
            Message::Fault(f) => Self::Fault(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deframer::Deframer;

    #[test]
    fn samples_accessors_follow_sample_major_order() {
        let samples = Samples::new(100, 2, vec![10, 20, 11, 21, 12, 22]).unwrap();
        assert_eq!(samples.sample_count(), 3);
        assert_eq!(samples.next_sample_index(), 103);
        assert_eq!(samples.get(2, 1), Some(22));
        assert_eq!(samples.get(3, 0), None);
        assert_eq!(samples.get(0, 2), None);
    }

    #[test]
    fn samples_with_out_of_range_fields_refuse_to_encode() {
        let ragged = Frame::Samples(Samples {
            first_sample_index: 0,
            channel_count: 3,
            raw: vec![1, 2],
        });
        let mut out = vec![0xAA];
        assert!(matches!(
            ragged.encode_into(&mut out),
            Err(EncodeError::Invalid(_))
        ));
        assert_eq!(out, [0xAA], "output left untouched");
    }

    #[test]
    fn owned_frames_survive_the_no_std_deframer() {
        let frame = Frame::Samples(Samples::new(7, 1, vec![-5, 5]).unwrap());
        let wire = frame.to_wire().unwrap();
        let mut deframer = Deframer::<64>::new();
        let (_, result) = deframer.feed(&wire);
        let decoded = Frame::from(result.unwrap().unwrap());
        assert_eq!(decoded, frame);
    }
}
