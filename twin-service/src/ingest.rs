//! Decoding and validation of the frames a rig publishes: `RigBirth`, `SampleBlock`, `RigDeath`.
//!
//! Pure: bytes in, checked messages or a [`Rejection`] out. It keeps no per-rig state (that is
//! `rig::RigState`) and does no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use dtop_proto::limits::{MAX_CONTROL_BYTES, MAX_SAMPLE_BLOCK_BYTES};
use dtop_proto::topic::RigTopic;
use dtop_proto::v1::{ChannelKind, RigBirth, RigDeath, SampleBlock};
use dtop_proto::{Message, RigId};
use serde::Serialize;

use crate::lineproto::{Column, Precision};

/// Longest accepted channel name, bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 128;

/// Why a frame was not accepted; the label of `frames_rejected_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not a rig birth/samples/death topic, or a bad rig id in it.
    BadTopic,
    /// Payload above `dtop_proto::limits`.
    Oversize,
    /// Not a valid protobuf message of the expected type.
    Decode,
    /// The payload's rig id differs from the topic's.
    RigMismatch,
    /// A birth whose channel manifest cannot be stored (duplicate ids or names, bad names,
    /// non-finite scale).
    BadManifest,
    /// A block without channels or without samples.
    EmptyBlock,
    /// Channels of a block with different sample counts.
    RaggedChannels,
    /// The same channel twice in one block.
    DuplicateChannel,
    /// A channel the birth manifest does not list for the block's stream.
    UnknownChannel,
    /// `sample_period_ns` is 0.
    ZeroPeriod,
    /// The sample period is shorter than the storage timestamp precision, so samples would
    /// overwrite each other.
    PeriodBelowPrecision,
    /// A sample time beyond what InfluxDB can store (year 2262).
    TimestampOutOfRange,
    /// A channel's scale turns a sample into an infinite value.
    NonFiniteValue,
    /// Held while waiting for the rig's birth, then pushed out by newer blocks.
    PreBirthOverflow,
    /// More rigs than `ingest.max_rigs`.
    TooManyRigs,
    /// A loss declaration (`SeqLoss`) with first > last or a range above the bound.
    BadLossRange,
}

impl RejectReason {
    pub const ALL: [RejectReason; 16] = [
        RejectReason::BadTopic,
        RejectReason::Oversize,
        RejectReason::Decode,
        RejectReason::RigMismatch,
        RejectReason::BadManifest,
        RejectReason::EmptyBlock,
        RejectReason::RaggedChannels,
        RejectReason::DuplicateChannel,
        RejectReason::UnknownChannel,
        RejectReason::ZeroPeriod,
        RejectReason::PeriodBelowPrecision,
        RejectReason::TimestampOutOfRange,
        RejectReason::NonFiniteValue,
        RejectReason::PreBirthOverflow,
        RejectReason::TooManyRigs,
        RejectReason::BadLossRange,
    ];

    /// Metric label.
    pub const fn label(self) -> &'static str {
        match self {
            RejectReason::BadTopic => "bad_topic",
            RejectReason::Oversize => "oversize",
            RejectReason::Decode => "decode",
            RejectReason::RigMismatch => "rig_mismatch",
            RejectReason::BadManifest => "bad_manifest",
            RejectReason::EmptyBlock => "empty_block",
            RejectReason::RaggedChannels => "ragged_channels",
            RejectReason::DuplicateChannel => "duplicate_channel",
            RejectReason::UnknownChannel => "unknown_channel",
            RejectReason::ZeroPeriod => "zero_period",
            RejectReason::PeriodBelowPrecision => "period_below_precision",
            RejectReason::TimestampOutOfRange => "timestamp_out_of_range",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::PreBirthOverflow => "pre_birth_overflow",
            RejectReason::TooManyRigs => "too_many_rigs",
            RejectReason::BadLossRange => "bad_loss_range",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A refused frame: the counter label and a sentence for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// A decoded frame whose rig id matches its topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Birth(RigBirth),
    Samples(SampleBlock),
    Death(RigDeath),
}

/// Largest payload accepted on a topic kind, bytes.
pub const fn max_payload_bytes(kind: RigTopic) -> usize {
    match kind {
        RigTopic::Samples => MAX_SAMPLE_BLOCK_BYTES,
        _ => MAX_CONTROL_BYTES,
    }
}

/// Decodes the payload of a birth, samples or death topic of `rig`.
///
/// `Ok(None)` for an empty birth payload: that is how a retained birth is cleared, not an error.
pub fn decode_frame(
    rig: &RigId,
    kind: RigTopic,
    payload: &[u8],
) -> Result<Option<Frame>, Rejection> {
    let max = max_payload_bytes(kind);
    if payload.len() > max {
        return Err(Rejection::new(
            RejectReason::Oversize,
            format!(
                "{} payload is {} bytes; the limit is {max}",
                kind.suffix(),
                payload.len()
            ),
        ));
    }
    let decode_error = |e: prost::DecodeError| {
        Rejection::new(RejectReason::Decode, format!("{}: {e}", kind.suffix()))
    };
    let (frame, payload_rig) = match kind {
        RigTopic::Birth if payload.is_empty() => return Ok(None),
        RigTopic::Birth => {
            let m = RigBirth::decode(payload).map_err(decode_error)?;
            let id = m.rig_id.clone();
            (Frame::Birth(m), id)
        }
        RigTopic::Samples => {
            let m = SampleBlock::decode(payload).map_err(decode_error)?;
            let id = m.rig_id.clone();
            (Frame::Samples(m), id)
        }
        RigTopic::Death => {
            let m = RigDeath::decode(payload).map_err(decode_error)?;
            let id = m.rig_id.clone();
            (Frame::Death(m), id)
        }
        other => {
            return Err(Rejection::new(
                RejectReason::BadTopic,
                format!("twin does not ingest {}", other.suffix()),
            ));
        }
    };
    if payload_rig != rig.as_str() {
        return Err(Rejection::new(
            RejectReason::RigMismatch,
            format!("topic is for rig {rig} but the payload says {payload_rig:?}"),
        ));
    }
    Ok(Some(frame))
}

/// One channel of a manifest, as the twin needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelInfo {
    pub id: u32,
    /// Field key in storage.
    pub name: String,
    pub kind: ChannelKind,
    pub unit: String,
    pub scale: f64,
    pub offset: f64,
    pub floor: u32,
    pub stream_id: u32,
}

/// A rig's checked channel manifest, from one birth.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub session: u64,
    pub floors: u32,
    /// By channel id.
    pub channels: BTreeMap<u32, ChannelInfo>,
}

impl Manifest {
    /// Checks a birth's channel list: unique ids and names, names storable as field keys,
    /// finite scale and offset.
    pub fn from_birth(birth: &RigBirth) -> Result<Self, Rejection> {
        let bad = |detail: String| Rejection::new(RejectReason::BadManifest, detail);
        let mut channels = BTreeMap::new();
        let mut names = BTreeSet::new();
        for c in &birth.channels {
            check_channel_name(&c.name)
                .map_err(|why| bad(format!("channel {} name {:?} {why}", c.id, c.name)))?;
            if !names.insert(c.name.as_str()) {
                return Err(bad(format!("channel name {:?} appears twice", c.name)));
            }
            if !(c.scale.is_finite() && c.offset.is_finite()) {
                return Err(bad(format!(
                    "channel {:?} has a non-finite scale or offset",
                    c.name
                )));
            }
            let kind = ChannelKind::try_from(c.kind).unwrap_or(ChannelKind::Unspecified);
            let info = ChannelInfo {
                id: c.id,
                name: c.name.clone(),
                kind,
                unit: c.unit.clone(),
                scale: c.scale,
                offset: c.offset,
                floor: c.floor,
                stream_id: c.stream_id,
            };
            if channels.insert(c.id, info).is_some() {
                return Err(bad(format!("channel id {} appears twice", c.id)));
            }
        }
        Ok(Self {
            session: birth.session,
            floors: birth.floors,
            channels,
        })
    }

    /// Checks that every channel of `block` is in this manifest, on the block's stream, and
    /// returns the columns to encode, in block order.
    pub fn columns<'a>(
        &'a self,
        block: &'a SampleBlock,
    ) -> Result<Vec<(Column<'a>, &'a ChannelInfo)>, Rejection> {
        block
            .channels
            .iter()
            .map(|cs| {
                let info = self.channels.get(&cs.channel_id).ok_or_else(|| {
                    Rejection::new(
                        RejectReason::UnknownChannel,
                        format!(
                            "channel id {} is not in the manifest of session {}",
                            cs.channel_id, self.session
                        ),
                    )
                })?;
                if info.stream_id != block.stream_id {
                    return Err(Rejection::new(
                        RejectReason::UnknownChannel,
                        format!(
                            "channel {:?} belongs to stream {}, the block to stream {}",
                            info.name, info.stream_id, block.stream_id
                        ),
                    ));
                }
                let column = Column {
                    name: &info.name,
                    scale: info.scale,
                    offset: info.offset,
                    raw: &cs.raw,
                };
                Ok((column, info))
            })
            .collect()
    }
}

/// Why a channel name cannot be a field key, if it cannot.
fn check_channel_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err("is too long");
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        // Line protocol cannot carry newlines in keys, and backslash escaping differs between
        // InfluxDB versions.
        return Err("contains a control character or a backslash");
    }
    if name.starts_with('_') {
        return Err("starts with '_', which InfluxDB reserves");
    }
    if matches!(name, "time" | "rig" | "stream") {
        return Err("collides with the time column or a tag key");
    }
    Ok(())
}

/// Checks what can be checked on a block without its manifest; returns its sample count.
pub fn check_block_shape(block: &SampleBlock, precision: Precision) -> Result<usize, Rejection> {
    if block.sample_period_ns == 0 {
        return Err(Rejection::new(
            RejectReason::ZeroPeriod,
            "sample_period_ns is 0",
        ));
    }
    let samples = block.channels.first().map_or(0, |c| c.raw.len());
    if samples == 0 {
        return Err(Rejection::new(
            RejectReason::EmptyBlock,
            "block has no channels or no samples",
        ));
    }
    let mut ids = BTreeSet::new();
    for c in &block.channels {
        if c.raw.len() != samples {
            return Err(Rejection::new(
                RejectReason::RaggedChannels,
                format!(
                    "channel {} has {} samples, channel {} has {samples}",
                    c.channel_id,
                    c.raw.len(),
                    block.channels[0].channel_id
                ),
            ));
        }
        if !ids.insert(c.channel_id) {
            return Err(Rejection::new(
                RejectReason::DuplicateChannel,
                format!("channel {} appears twice", c.channel_id),
            ));
        }
    }
    if block.sample_period_ns < precision.unit_ns() {
        return Err(Rejection::new(
            RejectReason::PeriodBelowPrecision,
            format!(
                "sample period {} ns is shorter than the storage precision ({}); configure precision = \"ns\"",
                block.sample_period_ns,
                precision.as_str()
            ),
        ));
    }
    let last_ns = u128::from(block.first_timestamp_ns)
        + (samples as u128 - 1) * u128::from(block.sample_period_ns);
    if last_ns > i64::MAX as u128 {
        return Err(Rejection::new(
            RejectReason::TimestampOutOfRange,
            format!("last sample at {last_ns} ns is beyond InfluxDB's range"),
        ));
    }
    Ok(samples)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_proto::v1::{Channel, ChannelSamples};

    fn rig() -> RigId {
        RigId::new("r1").unwrap()
    }

    fn channel(id: u32, name: &str) -> Channel {
        Channel {
            id,
            name: name.into(),
            scale: 0.5,
            stream_id: 0,
            ..Default::default()
        }
    }

    fn block(channels: Vec<ChannelSamples>) -> SampleBlock {
        SampleBlock {
            rig_id: "r1".into(),
            sample_period_ns: 1_000_000,
            first_timestamp_ns: 1_700_000_000_000_000_000,
            channels,
            ..Default::default()
        }
    }

    fn cs(id: u32, raw: &[i32]) -> ChannelSamples {
        ChannelSamples {
            channel_id: id,
            raw: raw.to_vec(),
        }
    }

    #[test]
    fn decodes_a_matching_sample_block() {
        let b = block(vec![cs(1, &[1, 2])]);
        let frame = decode_frame(&rig(), RigTopic::Samples, &b.encode_to_vec()).unwrap();
        assert_eq!(frame, Some(Frame::Samples(b)));
    }

    #[test]
    fn refuses_a_payload_whose_rig_differs_from_the_topic() {
        let mut b = block(vec![cs(1, &[1])]);
        b.rig_id = "r2".into();
        let err = decode_frame(&rig(), RigTopic::Samples, &b.encode_to_vec()).unwrap_err();
        assert_eq!(err.reason, RejectReason::RigMismatch);
    }

    #[test]
    fn refuses_garbage_and_oversize_payloads() {
        let err = decode_frame(&rig(), RigTopic::Samples, &[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.reason, RejectReason::Decode);
        let big = vec![0u8; MAX_SAMPLE_BLOCK_BYTES + 1];
        assert_eq!(
            decode_frame(&rig(), RigTopic::Samples, &big)
                .unwrap_err()
                .reason,
            RejectReason::Oversize
        );
        let big = vec![0u8; MAX_CONTROL_BYTES + 1];
        assert_eq!(
            decode_frame(&rig(), RigTopic::Birth, &big)
                .unwrap_err()
                .reason,
            RejectReason::Oversize
        );
    }

    #[test]
    fn an_empty_birth_payload_is_a_cleared_retained_message() {
        assert_eq!(decode_frame(&rig(), RigTopic::Birth, &[]), Ok(None));
    }

    #[test]
    fn manifest_refuses_duplicate_ids_names_and_unstorable_names() {
        let birth = |channels| RigBirth {
            rig_id: "r1".into(),
            channels,
            ..Default::default()
        };
        assert!(Manifest::from_birth(&birth(vec![channel(1, "a"), channel(2, "b")])).is_ok());
        for bad in [
            vec![channel(1, "a"), channel(1, "b")],
            vec![channel(1, "a"), channel(2, "a")],
            vec![channel(1, "")],
            vec![channel(1, "a\nb")],
            vec![channel(1, "a\\b")],
            vec![channel(1, "_field")],
            vec![channel(1, "time")],
            vec![channel(1, "rig")],
            vec![Channel {
                scale: f64::NAN,
                ..channel(1, "a")
            }],
        ] {
            assert_eq!(
                Manifest::from_birth(&birth(bad.clone()))
                    .unwrap_err()
                    .reason,
                RejectReason::BadManifest,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn block_shape_checks_period_emptiness_raggedness_and_duplicates() {
        assert_eq!(
            check_block_shape(&block(vec![cs(1, &[1, 2]), cs(2, &[3, 4])]), Precision::Us),
            Ok(2)
        );
        let reason = |b: SampleBlock| check_block_shape(&b, Precision::Us).unwrap_err().reason;
        assert_eq!(
            reason(SampleBlock {
                sample_period_ns: 0,
                ..block(vec![cs(1, &[1])])
            }),
            RejectReason::ZeroPeriod
        );
        assert_eq!(reason(block(vec![])), RejectReason::EmptyBlock);
        assert_eq!(reason(block(vec![cs(1, &[])])), RejectReason::EmptyBlock);
        assert_eq!(
            reason(block(vec![cs(1, &[1, 2]), cs(2, &[3])])),
            RejectReason::RaggedChannels
        );
        assert_eq!(
            reason(block(vec![cs(1, &[1]), cs(1, &[3])])),
            RejectReason::DuplicateChannel
        );
        assert_eq!(
            reason(SampleBlock {
                sample_period_ns: 999,
                ..block(vec![cs(1, &[1])])
            }),
            RejectReason::PeriodBelowPrecision
        );
        assert!(
            check_block_shape(
                &SampleBlock {
                    sample_period_ns: 999,
                    ..block(vec![cs(1, &[1])])
                },
                Precision::Ns
            )
            .is_ok()
        );
        assert_eq!(
            reason(SampleBlock {
                first_timestamp_ns: i64::MAX as u64,
                ..block(vec![cs(1, &[1, 2])])
            }),
            RejectReason::TimestampOutOfRange
        );
    }

    #[test]
    fn columns_refuse_channels_missing_from_the_manifest_or_on_another_stream() {
        let birth = RigBirth {
            rig_id: "r1".into(),
            channels: vec![
                channel(1, "a"),
                Channel {
                    stream_id: 1,
                    ..channel(2, "b")
                },
            ],
            ..Default::default()
        };
        let m = Manifest::from_birth(&birth).unwrap();
        let ok = block(vec![cs(1, &[4])]);
        let cols = m.columns(&ok).unwrap();
        assert_eq!(cols[0].0.value(0), Some(2.0));
        assert_eq!(
            m.columns(&block(vec![cs(9, &[1])])).unwrap_err().reason,
            RejectReason::UnknownChannel
        );
        assert_eq!(
            m.columns(&block(vec![cs(2, &[1])])).unwrap_err().reason,
            RejectReason::UnknownChannel
        );
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: BTreeSet<_> = RejectReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }
}
