//! The DTOP rig firmware byte protocol (`firmware-bridge/PROTOCOL.md`): COBS-framed,
//! CRC-32C-checked messages between the rig firmware and the edge.
//!
//! The core is `no_std` and never allocates, so rig firmware can link it as-is: encode into a
//! caller buffer with [`encode_frame`], receive with a fixed-size [`Deframer`]. Hosts get owned
//! [`Frame`]s (feature `std`) and a `tokio_util` codec, [`codec::FirmwareCodec`] (feature
//! `tokio`, on by default).
//!
//! # Layout
//! - [`message`]: message types, payload layouts and their rules (PROTOCOL.md §4).
//! - [`frame`]: COBS, CRC-32C, frame encode/decode and the §6.3 checks (PROTOCOL.md §3, §5).
//! - [`deframer`]: push-based receiver with drop/bad-frame counters (PROTOCOL.md §6).
//! - `owned` (feature `std`): [`Frame`] and [`Samples`], the owned forms hosts pass around.
//! - [`codec`] (feature `tokio`): [`codec::FirmwareCodec`] for `Framed` streams.
//!
//! Link behaviour (who sends what when, the actuator watchdog) is specified in PROTOCOL.md §7
//! and implemented by the firmware and the edge, not here.

#![cfg_attr(not(any(feature = "std", test)), no_std)]
// Tests may unwrap (STYLE.md); library code may not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod deframer;
pub mod frame;
pub mod message;

#[cfg(feature = "std")]
mod owned;

#[cfg(feature = "tokio")]
pub mod codec;

pub use deframer::Deframer;
pub use frame::{
    FrameError, MAX_ENCODED_FRAME_LEN, MAX_FRAME_LEN, MAX_WIRE_FRAME_LEN, crc32c, decode_frame,
    encode_frame, max_wire_len,
};
pub use message::{
    ActuatorCommand, ActuatorStatus, ChannelDesc, ChannelKind, EncodeError, Fault, Heartbeat,
    MAX_CHANNELS, MAX_PAYLOAD_LEN, MAX_SAMPLE_VALUES, MAX_VERSION_LEN, Manifest, ManifestError,
    Message, MessageType, PROTOCOL_VERSION, PayloadError, SamplesView, max_samples_per_frame,
};
#[cfg(feature = "std")]
pub use owned::{Frame, Samples};
