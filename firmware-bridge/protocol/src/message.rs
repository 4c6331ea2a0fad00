//! Message types of the firmware protocol (PROTOCOL.md §4) and their payload layouts.
//! Owns payload encoding, decoding and validation. Framing, CRC and COBS live in `frame.rs`;
//! nothing here allocates.

use core::fmt;

/// Firmware protocol version this crate speaks (PROTOCOL.md §2).
pub const PROTOCOL_VERSION: u8 = 2;

/// Most channels one stream may carry (PROTOCOL.md §5).
pub const MAX_CHANNELS: usize = 16;

/// Longest firmware version string, bytes (PROTOCOL.md §4.2).
pub const MAX_VERSION_LEN: usize = 32;

/// Largest frame payload (the bytes after the header, before the CRC), bytes (PROTOCOL.md §5).
pub const MAX_PAYLOAD_LEN: usize = 1024;

/// Bytes of a `Samples` payload before the values (PROTOCOL.md §4.3).
pub const SAMPLES_HEADER_LEN: usize = 11;

/// Most i32 values (channels × samples) one `Samples` frame carries (PROTOCOL.md §4.3, §5).
pub const MAX_SAMPLE_VALUES: usize = (MAX_PAYLOAD_LEN - SAMPLES_HEADER_LEN) / 4;

/// Bytes of one channel descriptor in a `Manifest` (PROTOCOL.md §4.2).
const CHANNEL_DESC_LEN: usize = 7;

/// Most samples (time instants) one `Samples` frame may carry for `channel_count` channels
/// (PROTOCOL.md §4.3); 0 for an invalid channel count.
pub const fn max_samples_per_frame(channel_count: usize) -> usize {
    if channel_count == 0 || channel_count > MAX_CHANNELS {
        0
    } else {
        MAX_SAMPLE_VALUES / channel_count
    }
}

/// Message type codes (PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Edge → firmware: ask for the manifest (also resets nothing; idempotent).
    Hello = 0x01,
    /// Firmware → edge: firmware version and channel manifest.
    Manifest = 0x02,
    /// Firmware → edge: consecutive samples of every channel.
    Samples = 0x10,
    /// Edge → firmware: actuator enable and drive force.
    ActuatorCommand = 0x20,
    /// Firmware → edge: what the actuator is actually doing.
    ActuatorStatus = 0x21,
    /// Either direction: liveness.
    Heartbeat = 0x30,
    /// Firmware → edge: a fault the firmware detected.
    Fault = 0x40,
}

impl MessageType {
    /// The type for a wire code, or `None` for a code PROTOCOL.md §4 does not define.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => Self::Hello,
            0x02 => Self::Manifest,
            0x10 => Self::Samples,
            0x20 => Self::ActuatorCommand,
            0x21 => Self::ActuatorStatus,
            0x30 => Self::Heartbeat,
            0x40 => Self::Fault,
            _ => return None,
        })
    }

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// What a channel measures, as a wire code (PROTOCOL.md §4.2). Mirrors `dtop.v1.ChannelKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChannelKind {
    /// Absolute acceleration, m/s².
    Acceleration = 1,
    /// Force, N.
    Force = 2,
    /// Displacement, m.
    Displacement = 3,
    /// Velocity, m/s.
    Velocity = 4,
    /// Actuator coil current, A.
    Current = 5,
    /// Site-specific.
    Other = 15,
}

impl ChannelKind {
    /// The kind for a wire code, or `None` for a code PROTOCOL.md §4.2 does not define.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Acceleration,
            2 => Self::Force,
            3 => Self::Displacement,
            4 => Self::Velocity,
            5 => Self::Current,
            15 => Self::Other,
            _ => return None,
        })
    }

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// One channel in a `Manifest` (PROTOCOL.md §4.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelDesc {
    /// Channel id, unique within the rig; samples carry channels in manifest order.
    pub id: u8,
    /// What the channel measures; fixes the SI unit of the scaled value.
    pub kind: ChannelKind,
    /// Floor the sensor is on (0 = base).
    pub floor: u8,
    /// SI units per ADC count (scaled = raw * scale).
    pub scale: f32,
}

/// Fills unused `Manifest::channels` slots so that two equal manifests are bit-identical.
const UNUSED_CHANNEL: ChannelDesc = ChannelDesc {
    id: 0,
    kind: ChannelKind::Other,
    floor: 0,
    scale: 0.0,
};

/// The firmware's self-description (PROTOCOL.md §4.2).
///
/// Fixed-size so that firmware can build one without allocating; only the first
/// `version_len` bytes of `version` and `channel_count` entries of `channels` are meaningful
/// (and only those take part in `==`).
#[derive(Debug, Clone, Copy)]
pub struct Manifest {
    /// Firmware version, UTF-8, `version_len` bytes used.
    pub version: [u8; MAX_VERSION_LEN],
    /// Used bytes of `version`.
    pub version_len: u8,
    /// Sample rate of the stream, millihertz (1 kHz = 1_000_000).
    pub sample_rate_mhz: u32,
    /// Number of floors of the structure.
    pub floors: u8,
    /// Floor the inertial actuator is on (0 = none).
    pub actuator_floor: u8,
    /// Largest force the actuator hardware accepts, N.
    pub actuator_max_force_n: f32,
    /// Channel descriptors in stream order; `channel_count` used.
    pub channels: [ChannelDesc; MAX_CHANNELS],
    /// Used entries of `channels`.
    pub channel_count: u8,
}

/// Why a `Manifest` is not valid (PROTOCOL.md §4.2). The first problem found is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestError {
    /// The version string is longer than `MAX_VERSION_LEN` bytes.
    VersionTooLong { len: usize },
    /// The version bytes are not UTF-8.
    VersionNotUtf8,
    /// A sample rate of 0 mHz.
    ZeroSampleRate,
    /// `actuator_floor` is above `floors`.
    ActuatorFloorOutOfRange { actuator_floor: u8, floors: u8 },
    /// `actuator_max_force_n` is negative, NaN or infinite.
    InvalidMaxForce,
    /// No channels, or more than `MAX_CHANNELS`.
    ChannelCount { count: usize },
    /// Two channels share an id.
    DuplicateChannelId { id: u8 },
    /// A channel's floor is above `floors`.
    ChannelFloorOutOfRange { id: u8, floor: u8, floors: u8 },
    /// A channel's scale is NaN or infinite.
    InvalidScale { id: u8 },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::VersionTooLong { len } => write!(
                f,
                "firmware version is {len} bytes, longer than {MAX_VERSION_LEN}"
            ),
            Self::VersionNotUtf8 => f.write_str("firmware version is not UTF-8"),
            Self::ZeroSampleRate => f.write_str("sample rate is 0"),
            Self::ActuatorFloorOutOfRange {
                actuator_floor,
                floors,
            } => write!(
                f,
                "actuator floor {actuator_floor} is above the top floor {floors}"
            ),
            Self::InvalidMaxForce => f.write_str("actuator max force is negative or not finite"),
            Self::ChannelCount { count } => {
                write!(f, "{count} channels; expected 1 to {MAX_CHANNELS}")
            }
            Self::DuplicateChannelId { id } => write!(f, "channel id {id} appears twice"),
            Self::ChannelFloorOutOfRange { id, floor, floors } => write!(
                f,
                "channel {id} is on floor {floor}, above the top floor {floors}"
            ),
            Self::InvalidScale { id } => write!(f, "channel {id} has a non-finite scale"),
        }
    }
}

impl core::error::Error for ManifestError {}

impl Manifest {
    /// Builds a validated manifest.
    pub fn new(
        version: &str,
        sample_rate_mhz: u32,
        floors: u8,
        actuator_floor: u8,
        actuator_max_force_n: f32,
        channels: &[ChannelDesc],
    ) -> Result<Manifest, ManifestError> {
        if version.len() > MAX_VERSION_LEN {
            return Err(ManifestError::VersionTooLong { len: version.len() });
        }
        if channels.is_empty() || channels.len() > MAX_CHANNELS {
            return Err(ManifestError::ChannelCount {
                count: channels.len(),
            });
        }
        let mut manifest = Manifest {
            version: [0; MAX_VERSION_LEN],
            // Both casts are in range: checked against the maxima (32 and 16) above.
            version_len: version.len() as u8,
            sample_rate_mhz,
            floors,
            actuator_floor,
            actuator_max_force_n,
            channels: [UNUSED_CHANNEL; MAX_CHANNELS],
            channel_count: channels.len() as u8,
        };
        manifest.version[..version.len()].copy_from_slice(version.as_bytes());
        manifest.channels[..channels.len()].copy_from_slice(channels);
        manifest.validate()?;
        Ok(manifest)
    }

    /// The firmware version string. A hand-built manifest with broken UTF-8 yields its longest
    /// valid prefix; `validate()` reports it.
    pub fn version_str(&self) -> &str {
        let bytes = &self.version[..usize::from(self.version_len).min(MAX_VERSION_LEN)];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        }
    }

    /// The channels in stream order.
    pub fn channels(&self) -> &[ChannelDesc] {
        &self.channels[..usize::from(self.channel_count).min(MAX_CHANNELS)]
    }

    /// Sample rate, Hz.
    pub fn sample_rate_hz(&self) -> f64 {
        f64::from(self.sample_rate_mhz) / 1000.0
    }

    /// Checks every rule of PROTOCOL.md §4.2; encoders and decoders both call this, so nothing
    /// invalid crosses the wire in either direction.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let version_len = usize::from(self.version_len);
        if version_len > MAX_VERSION_LEN {
            return Err(ManifestError::VersionTooLong { len: version_len });
        }
        if core::str::from_utf8(&self.version[..version_len]).is_err() {
            return Err(ManifestError::VersionNotUtf8);
        }
        if self.sample_rate_mhz == 0 {
            return Err(ManifestError::ZeroSampleRate);
        }
        if self.actuator_floor > self.floors {
            return Err(ManifestError::ActuatorFloorOutOfRange {
                actuator_floor: self.actuator_floor,
                floors: self.floors,
            });
        }
        if !(self.actuator_max_force_n.is_finite() && self.actuator_max_force_n >= 0.0) {
            return Err(ManifestError::InvalidMaxForce);
        }
        let count = usize::from(self.channel_count);
        if count == 0 || count > MAX_CHANNELS {
            return Err(ManifestError::ChannelCount { count });
        }
        let channels = self.channels();
        for (i, channel) in channels.iter().enumerate() {
            if channels[..i].iter().any(|other| other.id == channel.id) {
                return Err(ManifestError::DuplicateChannelId { id: channel.id });
            }
            if channel.floor > self.floors {
                return Err(ManifestError::ChannelFloorOutOfRange {
                    id: channel.id,
                    floor: channel.floor,
                    floors: self.floors,
                });
            }
            if !channel.scale.is_finite() {
                return Err(ManifestError::InvalidScale { id: channel.id });
            }
        }
        Ok(())
    }

    fn payload_len(&self) -> usize {
        12 + usize::from(self.version_len) + CHANNEL_DESC_LEN * usize::from(self.channel_count)
    }

    fn write_payload<S: Sink>(&self, sink: &mut S) -> Result<(), S::Error> {
        sink.put(&[self.version_len])?;
        sink.put(self.version_str().as_bytes())?;
        sink.put(&self.sample_rate_mhz.to_le_bytes())?;
        sink.put(&[self.floors, self.actuator_floor])?;
        sink.put(&self.actuator_max_force_n.to_le_bytes())?;
        sink.put(&[self.channel_count])?;
        for channel in self.channels() {
            sink.put(&[channel.id, channel.kind.code(), channel.floor])?;
            sink.put(&channel.scale.to_le_bytes())?;
        }
        Ok(())
    }

    fn decode_payload(payload: &[u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(payload);
        let version_len = r.u8()?;
        if usize::from(version_len) > MAX_VERSION_LEN {
            return Err(ManifestError::VersionTooLong {
                len: usize::from(version_len),
            }
            .into());
        }
        let mut version = [0; MAX_VERSION_LEN];
        version[..usize::from(version_len)].copy_from_slice(r.take(usize::from(version_len))?);
        let sample_rate_mhz = r.u32()?;
        let floors = r.u8()?;
        let actuator_floor = r.u8()?;
        let actuator_max_force_n = r.f32()?;
        let channel_count = r.u8()?;
        if channel_count == 0 || usize::from(channel_count) > MAX_CHANNELS {
            return Err(ManifestError::ChannelCount {
                count: usize::from(channel_count),
            }
            .into());
        }
        let mut channels = [UNUSED_CHANNEL; MAX_CHANNELS];
        for slot in &mut channels[..usize::from(channel_count)] {
            let id = r.u8()?;
            let kind_code = r.u8()?;
            let kind = ChannelKind::from_code(kind_code)
                .ok_or(PayloadError::UnknownChannelKind { code: kind_code })?;
            let floor = r.u8()?;
            let scale = r.f32()?;
            *slot = ChannelDesc {
                id,
                kind,
                floor,
                scale,
            };
        }
        r.finish()?;
        let manifest = Manifest {
            version,
            version_len,
            sample_rate_mhz,
            floors,
            actuator_floor,
            actuator_max_force_n,
            channels,
            channel_count,
        };
        manifest.validate()?;
        Ok(manifest)
    }
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.version_len == other.version_len
            && self.version[..usize::from(self.version_len).min(MAX_VERSION_LEN)]
                == other.version[..usize::from(other.version_len).min(MAX_VERSION_LEN)]
            && self.sample_rate_mhz == other.sample_rate_mhz
            && self.floors == other.floors
            && self.actuator_floor == other.actuator_floor
            && self.actuator_max_force_n == other.actuator_max_force_n
            && self.channels() == other.channels()
    }
}

/// Actuator command (PROTOCOL.md §4.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActuatorCommand {
    /// Echoed in `ActuatorStatus` so the edge can match replies.
    pub seq: u16,
    /// `false` drives 0 N whatever `force_n` says.
    pub enable: bool,
    /// Drive force, N. Firmware clamps to its own limit as well.
    pub force_n: f32,
    /// Sample index the force was computed from, or [`ActuatorCommand::NO_ORIGIN`] for an
    /// open-loop or safe-state command; lets the firmware measure the loop's latency.
    pub origin_sample_index: u64,
}

impl ActuatorCommand {
    /// `origin_sample_index` of a command not computed from any sample (PROTOCOL.md §4.4).
    pub const NO_ORIGIN: u64 = u64::MAX;
}

/// Actuator status (PROTOCOL.md §4.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActuatorStatus {
    /// `seq` of the last command applied.
    pub seq: u16,
    /// Whether the actuator is driving now.
    pub enabled: bool,
    /// Force actually being applied, N.
    pub force_n: f32,
    /// Sample index at which the last command took effect.
    pub applied_at_sample_index: u64,
}

/// Liveness (PROTOCOL.md §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's monotonic uptime, ms.
    pub uptime_ms: u32,
    /// Next sample index the firmware will produce (0 from the edge).
    pub sample_index: u64,
}

/// A fault (PROTOCOL.md §4.7). Codes without a constant here are still valid (vendor range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Fault code; see the associated constants.
    pub code: u16,
    /// Sample index at which the firmware detected the fault.
    pub sample_index: u64,
}

impl Fault {
    /// Samples were lost in the firmware; `sample_index` is the first lost (PROTOCOL.md §4.7).
    pub const SAMPLES_DROPPED: u16 = 0x0001;
    /// An ADC or sensor reported an error (PROTOCOL.md §4.7).
    pub const SENSOR_FAULT: u16 = 0x0002;
    /// The actuator watchdog put the actuator in its safe state (PROTOCOL.md §4.7, §7.4).
    pub const ACTUATOR_WATCHDOG: u16 = 0x0003;
    /// The actuator hardware faulted; the actuator is disabled (PROTOCOL.md §4.7).
    pub const ACTUATOR_FAULT: u16 = 0x0004;
    /// An `ActuatorCommand` could not be applied (PROTOCOL.md §4.7, §7.4).
    pub const COMMAND_REJECTED: u16 = 0x0005;
    /// First firmware-specific code (PROTOCOL.md §4.7).
    pub const VENDOR_FIRST: u16 = 0x8000;
}

/// Consecutive samples of every channel, borrowed (PROTOCOL.md §4.3).
///
/// Either points into a received frame's bytes (little-endian values) or at a firmware's own
/// `i32` buffer, so neither side copies or allocates. Values are sample-major.
#[derive(Debug, Clone, Copy)]
pub struct SamplesView<'a> {
    first_sample_index: u64,
    channel_count: u8,
    sample_count: u16,
    values: Values<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Values<'a> {
    /// `4 * channel_count * sample_count` little-endian bytes, straight from a frame.
    Wire(&'a [u8]),
    /// `channel_count * sample_count` values in native order, from the sender.
    Native(&'a [i32]),
}

impl<'a> SamplesView<'a> {
    /// Wraps sample-major `values` (`values[s * channel_count + c]`) for sending.
    pub fn from_values(
        first_sample_index: u64,
        channel_count: u8,
        values: &'a [i32],
    ) -> Result<Self, PayloadError> {
        let channels = usize::from(channel_count);
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(PayloadError::InvalidField {
                field: "channel_count",
            });
        }
        if values.len() > MAX_SAMPLE_VALUES {
            return Err(PayloadError::TooLarge {
                len: SAMPLES_HEADER_LEN + 4 * values.len(),
            });
        }
        // `usize::is_multiple_of` needs Rust 1.87; the workspace MSRV is 1.85.
        #[allow(clippy::manual_is_multiple_of)]
        let ragged = values.len() % channels != 0;
        if values.is_empty() || ragged {
            return Err(PayloadError::InvalidField {
                field: "sample_count",
            });
        }
        Ok(Self {
            first_sample_index,
            channel_count,
            // In range: at most MAX_SAMPLE_VALUES (253), checked above.
            sample_count: (values.len() / channels) as u16,
            values: Values::Native(values),
        })
    }

    /// Index of the first sample in this frame.
    pub fn first_sample_index(&self) -> u64 {
        self.first_sample_index
    }

    /// Channels per sample (the manifest's channel count).
    pub fn channel_count(&self) -> u8 {
        self.channel_count
    }

    /// Samples (time instants) in this frame.
    pub fn sample_count(&self) -> u16 {
        self.sample_count
    }

    /// Raw ADC count of `channel` at `sample` (both 0-based within this frame).
    ///
    /// # Panics
    /// If `sample >= sample_count()` or `channel >= channel_count()`, like slice indexing.
    pub fn get(&self, sample: usize, channel: usize) -> i32 {
        let channels = usize::from(self.channel_count);
        assert!(
            sample < usize::from(self.sample_count) && channel < channels,
            "sample {sample} channel {channel} is outside the frame"
        );
        self.value(sample * channels + channel)
    }

    /// All values, sample-major.
    pub fn values(&self) -> impl ExactSizeIterator<Item = i32> + 'a {
        let values = self.values;
        let len = self.value_count();
        (0..len).map(move |i| match values {
            Values::Wire(bytes) => le_i32(bytes, i),
            Values::Native(v) => v[i],
        })
    }

    fn value_count(&self) -> usize {
        usize::from(self.channel_count) * usize::from(self.sample_count)
    }

    fn value(&self, i: usize) -> i32 {
        match self.values {
            Values::Wire(bytes) => le_i32(bytes, i),
            Values::Native(v) => v[i],
        }
    }

    fn payload_len(&self) -> usize {
        SAMPLES_HEADER_LEN + 4 * self.value_count()
    }

    fn write_payload<S: Sink>(&self, sink: &mut S) -> Result<(), S::Error> {
        sink.put(&self.first_sample_index.to_le_bytes())?;
        sink.put(&[self.channel_count])?;
        sink.put(&self.sample_count.to_le_bytes())?;
        match self.values {
            Values::Wire(bytes) => sink.put(bytes),
            Values::Native(values) => {
                // Batch through a small stack buffer: one sink call per value would dominate
                // the cost of encoding.
                let mut chunk = [0u8; 64];
                for group in values.chunks(chunk.len() / 4) {
                    for (dst, v) in chunk.chunks_exact_mut(4).zip(group) {
                        dst.copy_from_slice(&v.to_le_bytes());
                    }
                    sink.put(&chunk[..4 * group.len()])?;
                }
                Ok(())
            }
        }
    }

    fn decode_payload(payload: &'a [u8]) -> Result<Self, PayloadError> {
        let mut r = Reader::new(payload);
        let first_sample_index = r.u64()?;
        let channel_count = r.u8()?;
        let sample_count = r.u16()?;
        let channels = usize::from(channel_count);
        if channels == 0 || channels > MAX_CHANNELS {
            return Err(PayloadError::InvalidField {
                field: "channel_count",
            });
        }
        if sample_count == 0 {
            return Err(PayloadError::InvalidField {
                field: "sample_count",
            });
        }
        let value_bytes = 4 * channels * usize::from(sample_count);
        let bytes = r.take(value_bytes)?;
        r.finish()?;
        Ok(Self {
            first_sample_index,
            channel_count,
            sample_count,
            values: Values::Wire(bytes),
        })
    }
}

impl PartialEq for SamplesView<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.first_sample_index == other.first_sample_index
            && self.channel_count == other.channel_count
            && self.sample_count == other.sample_count
            && self.values().eq(other.values())
    }
}

fn le_i32(bytes: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([
        bytes[4 * i],
        bytes[4 * i + 1],
        bytes[4 * i + 2],
        bytes[4 * i + 3],
    ])
}

/// One decoded (or to-be-encoded) message, borrowing sample data (PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Message<'a> {
    /// §4.1.
    Hello,
    /// §4.2.
    Manifest(Manifest),
    /// §4.3.
    Samples(SamplesView<'a>),
    /// §4.4.
    ActuatorCommand(ActuatorCommand),
    /// §4.5.
    ActuatorStatus(ActuatorStatus),
    /// §4.6.
    Heartbeat(Heartbeat),
    /// §4.7.
    Fault(Fault),
}

impl<'a> Message<'a> {
    /// This message's type code.
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

    /// Length of this message's payload, bytes (PROTOCOL.md §4 table).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Hello => 0,
            Self::Manifest(m) => m.payload_len(),
            Self::Samples(s) => s.payload_len(),
            Self::ActuatorCommand(_) => 15,
            Self::ActuatorStatus(_) => 15,
            Self::Heartbeat(_) => 12,
            Self::Fault(_) => 10,
        }
    }

    /// Checks the field rules of PROTOCOL.md §4 that the types alone do not enforce.
    pub fn validate(&self) -> Result<(), PayloadError> {
        match self {
            Self::Manifest(m) => m.validate()?,
            Self::ActuatorCommand(c) => finite(c.force_n, "force_n")?,
            Self::ActuatorStatus(s) => finite(s.force_n, "force_n")?,
            // A SamplesView is only built through checked constructors.
            Self::Samples(_) | Self::Hello | Self::Heartbeat(_) | Self::Fault(_) => {}
        }
        Ok(())
    }

    /// Writes the payload (no header, no CRC) into `out`; returns the bytes written.
    pub fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.validate().map_err(EncodeError::Invalid)?;
        let mut sink = SliceSink { out, len: 0 };
        self.write_payload(&mut sink)
            .map_err(|BufferFull| EncodeError::BufferTooSmall)?;
        Ok(sink.len)
    }

    /// Decodes a payload of type `message_type` (PROTOCOL.md §4), checking its exact length and
    /// every field rule.
    pub fn decode_payload(
        message_type: MessageType,
        payload: &'a [u8],
    ) -> Result<Message<'a>, PayloadError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(PayloadError::TooLarge { len: payload.len() });
        }
        let mut r = Reader::new(payload);
        let message = match message_type {
            MessageType::Hello => Self::Hello,
            MessageType::Manifest => return Manifest::decode_payload(payload).map(Self::Manifest),
            MessageType::Samples => {
                return SamplesView::decode_payload(payload).map(Self::Samples);
            }
            MessageType::ActuatorCommand => Self::ActuatorCommand(ActuatorCommand {
                seq: r.u16()?,
                enable: r.bool("enable")?,
                force_n: r.finite_f32("force_n")?,
                origin_sample_index: r.u64()?,
            }),
            MessageType::ActuatorStatus => Self::ActuatorStatus(ActuatorStatus {
                seq: r.u16()?,
                enabled: r.bool("enabled")?,
                force_n: r.finite_f32("force_n")?,
                applied_at_sample_index: r.u64()?,
            }),
            MessageType::Heartbeat => Self::Heartbeat(Heartbeat {
                uptime_ms: r.u32()?,
                sample_index: r.u64()?,
            }),
            MessageType::Fault => Self::Fault(Fault {
                code: r.u16()?,
                sample_index: r.u64()?,
            }),
        };
        r.finish()?;
        Ok(message)
    }

    /// Streams the payload into `sink`. Callers validate first.
    pub(crate) fn write_payload<S: Sink>(&self, sink: &mut S) -> Result<(), S::Error> {
        match self {
            Self::Hello => Ok(()),
            Self::Manifest(m) => m.write_payload(sink),
            Self::Samples(s) => s.write_payload(sink),
            Self::ActuatorCommand(c) => {
                sink.put(&c.seq.to_le_bytes())?;
                sink.put(&[u8::from(c.enable)])?;
                sink.put(&c.force_n.to_le_bytes())?;
                sink.put(&c.origin_sample_index.to_le_bytes())
            }
            Self::ActuatorStatus(s) => {
                sink.put(&s.seq.to_le_bytes())?;
                sink.put(&[u8::from(s.enabled)])?;
                sink.put(&s.force_n.to_le_bytes())?;
                sink.put(&s.applied_at_sample_index.to_le_bytes())
            }
            Self::Heartbeat(h) => {
                sink.put(&h.uptime_ms.to_le_bytes())?;
                sink.put(&h.sample_index.to_le_bytes())
            }
            Self::Fault(fault) => {
                sink.put(&fault.code.to_le_bytes())?;
                sink.put(&fault.sample_index.to_le_bytes())
            }
        }
    }
}

fn finite(value: f32, field: &'static str) -> Result<(), PayloadError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(PayloadError::NonFinite { field })
    }
}

/// Why a payload is not valid for its type (PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// The payload is shorter or longer than its layout says.
    BadLength { len: usize },
    /// The payload exceeds `MAX_PAYLOAD_LEN`.
    TooLarge { len: usize },
    /// A field holds a value outside its range (a bool other than 0/1, a zero count, ...).
    InvalidField { field: &'static str },
    /// An f32 field is NaN or infinite.
    NonFinite { field: &'static str },
    /// A channel kind code PROTOCOL.md §4.2 does not define.
    UnknownChannelKind { code: u8 },
    /// The manifest breaks a rule of PROTOCOL.md §4.2.
    Manifest(ManifestError),
}

impl From<ManifestError> for PayloadError {
    fn from(e: ManifestError) -> Self {
        Self::Manifest(e)
    }
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength { len } => {
                write!(f, "payload length {len} does not match the message layout")
            }
            Self::TooLarge { len } => {
                write!(f, "payload of {len} bytes exceeds {MAX_PAYLOAD_LEN}")
            }
            Self::InvalidField { field } => write!(f, "field `{field}` is out of range"),
            Self::NonFinite { field } => write!(f, "field `{field}` is not finite"),
            Self::UnknownChannelKind { code } => write!(f, "unknown channel kind {code}"),
            Self::Manifest(e) => write!(f, "invalid manifest: {e}"),
        }
    }
}

impl core::error::Error for PayloadError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Manifest(e) => Some(e),
            _ => None,
        }
    }
}

/// Why encoding a payload or a frame failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The message breaks a field rule of PROTOCOL.md §4; whatever was written must not be sent.
    Invalid(PayloadError),
    /// The output buffer is too small; size it with `frame::max_wire_len`.
    BufferTooSmall,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "cannot encode an invalid message: {e}"),
            Self::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl core::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Invalid(e) => Some(e),
            Self::BufferTooSmall => None,
        }
    }
}

/// Where encoded payload bytes go: a plain slice, or the frame encoder's CRC + COBS stage.
pub(crate) trait Sink {
    type Error;
    fn put(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// The destination slice is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufferFull;

struct SliceSink<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl Sink for SliceSink<'_> {
    type Error = BufferFull;

    fn put(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let end = self.len + bytes.len();
        self.out
            .get_mut(self.len..end)
            .ok_or(BufferFull)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// Little-endian cursor; running off the end is a length error, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        let end = self.pos.checked_add(n).ok_or(self.bad_length())?;
        let out = self.bytes.get(self.pos..end).ok_or(self.bad_length())?;
        self.pos = end;
        Ok(out)
    }

    fn array<const K: usize>(&mut self) -> Result<[u8; K], PayloadError> {
        let bytes = self.take(K)?;
        bytes.try_into().map_err(|_| self.bad_length())
    }

    fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, PayloadError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, PayloadError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, PayloadError> {
        self.array().map(u64::from_le_bytes)
    }

    fn f32(&mut self) -> Result<f32, PayloadError> {
        self.array().map(f32::from_le_bytes)
    }

    fn finite_f32(&mut self, field: &'static str) -> Result<f32, PayloadError> {
        let value = self.f32()?;
        finite(value, field)?;
        Ok(value)
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, PayloadError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PayloadError::InvalidField { field }),
        }
    }

    fn finish(&self) -> Result<(), PayloadError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.bad_length())
        }
    }

    fn bad_length(&self) -> PayloadError {
        PayloadError::BadLength {
            len: self.bytes.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::new(
            "fw-1.2",
            1_000_000,
            3,
            3,
            25.0,
            &[
                ChannelDesc {
                    id: 0,
                    kind: ChannelKind::Acceleration,
                    floor: 0,
                    scale: 0.5,
                },
                ChannelDesc {
                    id: 7,
                    kind: ChannelKind::Force,
                    floor: 3,
                    scale: -2.0,
                },
            ],
        )
        .unwrap()
    }

    fn encode(message: &Message<'_>) -> Vec<u8> {
        let mut out = [0u8; MAX_PAYLOAD_LEN];
        let n = message.encode_payload(&mut out).unwrap();
        assert_eq!(n, message.payload_len());
        out[..n].to_vec()
    }

    #[test]
    fn manifest_payload_matches_the_spec_layout() {
        #[rustfmt::skip]
        let expected: &[u8] = &[
            6,                                   // version_len
            b'f', b'w', b'-', b'1', b'.', b'2',  // version "fw-1.2"
            0x40, 0x42, 0x0f, 0x00,              // sample_rate_mhz 1_000_000
            3,                                   // floors
            3,                                   // actuator_floor
            0x00, 0x00, 0xc8, 0x41,              // actuator_max_force_n 25.0
            2,                                   // channel_count
            0, 1, 0, 0x00, 0x00, 0x00, 0x3f,     // ch0: id 0, acceleration, floor 0, scale 0.5
            7, 2, 3, 0x00, 0x00, 0x00, 0xc0,     // ch1: id 7, force, floor 3, scale -2.0
        ];
        let message = Message::Manifest(manifest());
        assert_eq!(encode(&message), expected);
        assert_eq!(
            Message::decode_payload(MessageType::Manifest, expected).unwrap(),
            message
        );
    }

    #[test]
    fn manifest_accessors_report_what_was_built() {
        let m = manifest();
        assert_eq!(m.version_str(), "fw-1.2");
        assert_eq!(m.channels().len(), 2);
        assert_eq!(m.channels()[1].id, 7);
        assert_eq!(m.sample_rate_hz(), 1000.0);
    }

    #[test]
    fn manifest_new_refuses_each_broken_rule() {
        let ch = |id, floor, scale| ChannelDesc {
            id,
            kind: ChannelKind::Velocity,
            floor,
            scale,
        };
        let long = "x".repeat(MAX_VERSION_LEN + 1);
        assert_eq!(
            Manifest::new(&long, 1, 1, 0, 1.0, &[ch(0, 0, 1.0)]),
            Err(ManifestError::VersionTooLong { len: 33 })
        );
        assert_eq!(
            Manifest::new("v", 0, 1, 0, 1.0, &[ch(0, 0, 1.0)]),
            Err(ManifestError::ZeroSampleRate)
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 2, 1.0, &[ch(0, 0, 1.0)]),
            Err(ManifestError::ActuatorFloorOutOfRange {
                actuator_floor: 2,
                floors: 1
            })
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 0, f32::NAN, &[ch(0, 0, 1.0)]),
            Err(ManifestError::InvalidMaxForce)
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 0, -1.0, &[ch(0, 0, 1.0)]),
            Err(ManifestError::InvalidMaxForce)
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 0, 1.0, &[]),
            Err(ManifestError::ChannelCount { count: 0 })
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 0, 1.0, &[ch(0, 0, 1.0); 17]),
            Err(ManifestError::ChannelCount { count: 17 })
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 0, 1.0, &[ch(4, 0, 1.0), ch(4, 1, 1.0)]),
            Err(ManifestError::DuplicateChannelId { id: 4 })
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 0, 1.0, &[ch(4, 2, 1.0)]),
            Err(ManifestError::ChannelFloorOutOfRange {
                id: 4,
                floor: 2,
                floors: 1
            })
        );
        assert_eq!(
            Manifest::new("v", 1, 1, 0, 1.0, &[ch(4, 0, f32::INFINITY)]),
            Err(ManifestError::InvalidScale { id: 4 })
        );
    }

    #[test]
    fn manifest_equality_ignores_unused_slots() {
        let a = manifest();
        let mut b = a;
        b.version[20] = 0xff;
        b.channels[10].id = 99;
        assert_eq!(a, b);
    }

    #[test]
    fn manifest_with_unknown_channel_kind_is_rejected() {
        let mut bytes = encode(&Message::Manifest(manifest()));
        bytes[19] = 9; // ch0 kind
        assert_eq!(
            Message::decode_payload(MessageType::Manifest, &bytes),
            Err(PayloadError::UnknownChannelKind { code: 9 })
        );
    }

    #[test]
    fn manifest_with_broken_utf8_version_is_rejected() {
        let mut bytes = encode(&Message::Manifest(manifest()));
        bytes[1] = 0xff; // first version byte
        assert_eq!(
            Message::decode_payload(MessageType::Manifest, &bytes),
            Err(PayloadError::Manifest(ManifestError::VersionNotUtf8))
        );
    }

    #[test]
    fn samples_payload_matches_the_spec_layout() {
        let values = [1, -1, 0x0102_0304, i32::MIN, 5, 6];
        let view = SamplesView::from_values(0x0102_0304_0506_0708, 2, &values).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // first_sample_index
            2,                                              // channel_count
            3, 0,                                           // sample_count
            0x01, 0x00, 0x00, 0x00,                         // s0 c0 = 1
            0xff, 0xff, 0xff, 0xff,                         // s0 c1 = -1
            0x04, 0x03, 0x02, 0x01,                         // s1 c0 = 0x01020304
            0x00, 0x00, 0x00, 0x80,                         // s1 c1 = i32::MIN
            0x05, 0x00, 0x00, 0x00,                         // s2 c0 = 5
            0x06, 0x00, 0x00, 0x00,                         // s2 c1 = 6
        ];
        assert_eq!(encode(&Message::Samples(view)), expected);
        let Message::Samples(decoded) =
            Message::decode_payload(MessageType::Samples, expected).unwrap()
        else {
            panic!("decoded the wrong type");
        };
        assert_eq!(decoded, view);
        assert_eq!(decoded.sample_count(), 3);
        assert_eq!(decoded.get(1, 1), i32::MIN);
        assert_eq!(decoded.get(2, 0), 5);
        assert_eq!(decoded.values().collect::<Vec<_>>(), values);
    }

    #[test]
    fn samples_view_refuses_ragged_empty_and_oversized_input() {
        assert!(SamplesView::from_values(0, 3, &[1, 2]).is_err());
        assert!(SamplesView::from_values(0, 1, &[]).is_err());
        assert!(SamplesView::from_values(0, 0, &[1]).is_err());
        assert!(SamplesView::from_values(0, 17, &[0; 17]).is_err());
        assert!(SamplesView::from_values(0, 1, &[0; MAX_SAMPLE_VALUES]).is_ok());
        assert_eq!(
            SamplesView::from_values(0, 1, &[0; MAX_SAMPLE_VALUES + 1]),
            Err(PayloadError::TooLarge { len: 1027 })
        );
    }

    #[test]
    #[should_panic(expected = "outside the frame")]
    fn samples_view_get_panics_outside_the_frame() {
        let view = SamplesView::from_values(0, 2, &[1, 2]).unwrap();
        view.get(1, 0);
    }

    #[test]
    fn samples_with_a_count_that_disagrees_with_the_length_are_rejected() {
        #[rustfmt::skip]
        let payload: &[u8] = &[
            0, 0, 0, 0, 0, 0, 0, 0, // first_sample_index
            1,                      // channel_count
            2, 0,                   // sample_count 2, but only one value follows
            1, 0, 0, 0,             // s0 c0
        ];
        assert_eq!(
            Message::decode_payload(MessageType::Samples, payload),
            Err(PayloadError::BadLength { len: 15 })
        );
    }

    #[test]
    fn fixed_messages_match_the_spec_layout() {
        #[rustfmt::skip]
        let cases: [(Message<'_>, &[u8]); 5] = [
            (Message::Hello, &[]),
            (
                Message::ActuatorCommand(ActuatorCommand {
                    seq: 0x0102, enable: true, force_n: 2.5, origin_sample_index: 0x0304,
                }),
                &[
                    0x02, 0x01,             // seq
                    1,                      // enable
                    0x00, 0x00, 0x20, 0x40, // force_n 2.5
                    0x04, 0x03, 0, 0, 0, 0, 0, 0, // origin_sample_index
                ],
            ),
            (
                Message::ActuatorStatus(ActuatorStatus {
                    seq: 9, enabled: false, force_n: -1.0, applied_at_sample_index: 300,
                }),
                &[
                    9, 0,                   // seq
                    0,                      // enabled
                    0x00, 0x00, 0x80, 0xbf, // force_n -1.0
                    0x2c, 0x01, 0, 0, 0, 0, 0, 0, // applied_at_sample_index 300
                ],
            ),
            (
                Message::Heartbeat(Heartbeat { uptime_ms: 1500, sample_index: 1000 }),
                &[
                    0xdc, 0x05, 0, 0,             // uptime_ms 1500
                    0xe8, 0x03, 0, 0, 0, 0, 0, 0, // sample_index 1000
                ],
            ),
            (
                Message::Fault(Fault { code: Fault::ACTUATOR_WATCHDOG, sample_index: 1 }),
                &[
                    0x03, 0x00,             // code ACTUATOR_WATCHDOG
                    1, 0, 0, 0, 0, 0, 0, 0, // sample_index 1
                ],
            ),
        ];
        for (message, bytes) in cases {
            assert_eq!(encode(&message), bytes, "{message:?}");
            assert_eq!(
                Message::decode_payload(message.message_type(), bytes).unwrap(),
                message
            );
        }
    }

    #[test]
    fn fixed_messages_with_a_wrong_length_are_rejected() {
        assert_eq!(
            Message::decode_payload(MessageType::Hello, &[0]),
            Err(PayloadError::BadLength { len: 1 })
        );
        assert_eq!(
            Message::decode_payload(MessageType::Heartbeat, &[0; 11]),
            Err(PayloadError::BadLength { len: 11 })
        );
        assert_eq!(
            Message::decode_payload(MessageType::Fault, &[0; 11]),
            Err(PayloadError::BadLength { len: 11 })
        );
    }

    #[test]
    fn bool_other_than_zero_or_one_is_rejected() {
        assert_eq!(
            Message::decode_payload(
                MessageType::ActuatorCommand,
                &[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            ),
            Err(PayloadError::InvalidField { field: "enable" })
        );
    }

    #[test]
    fn non_finite_force_is_rejected_both_ways() {
        let nan = f32::NAN.to_le_bytes();
        let payload = [
            0, 0, 1, nan[0], nan[1], nan[2], nan[3], 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            Message::decode_payload(MessageType::ActuatorCommand, &payload),
            Err(PayloadError::NonFinite { field: "force_n" })
        );
        let command = Message::ActuatorCommand(ActuatorCommand {
            seq: 0,
            enable: true,
            force_n: f32::INFINITY,
            origin_sample_index: ActuatorCommand::NO_ORIGIN,
        });
        assert_eq!(
            command.encode_payload(&mut [0; 16]),
            Err(EncodeError::Invalid(PayloadError::NonFinite {
                field: "force_n"
            }))
        );
    }

    #[test]
    fn encode_payload_reports_a_short_buffer() {
        let heartbeat = Message::Heartbeat(Heartbeat {
            uptime_ms: 0,
            sample_index: 0,
        });
        assert_eq!(
            heartbeat.encode_payload(&mut [0; 11]),
            Err(EncodeError::BufferTooSmall)
        );
    }

    #[test]
    fn max_samples_per_frame_follows_the_payload_limit() {
        assert_eq!(max_samples_per_frame(1), 253);
        assert_eq!(max_samples_per_frame(4), 63);
        assert_eq!(max_samples_per_frame(16), 15);
        assert_eq!(max_samples_per_frame(0), 0);
        for channels in 1..=MAX_CHANNELS {
            assert!(
                SAMPLES_HEADER_LEN + 4 * channels * max_samples_per_frame(channels)
                    <= MAX_PAYLOAD_LEN
            );
        }
    }

    #[test]
    fn type_and_kind_codes_round_trip() {
        for code in 0..=u8::MAX {
            if let Some(t) = MessageType::from_code(code) {
                assert_eq!(t.code(), code);
            }
            if let Some(k) = ChannelKind::from_code(code) {
                assert_eq!(k.code(), code);
            }
        }
        assert_eq!(MessageType::from_code(0x03), None);
    }
}
