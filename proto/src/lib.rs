//! The DTOP wire contract, spoken by every other crate.
//!
//! The `.proto` files under `proto/dtop/v1/` are the source of truth; the Rust types in [`v1`]
//! are generated from them at build time with protox + prost-build, so no `protoc` is needed.
//!
//! # Layout
//! - [`v1`]: generated message types (`RigBirth`, `SampleBlock`, `Command`, ...).
//! - [`topic`]: the only place MQTT topic strings are built or parsed.
//! - [`limits`]: payload size limits both ends of every MQTT link must agree on.
//! - [`ids`]: validated identifiers (`RigId`).
//! - [`command`]: an operator's request as data and the one builder of `Command`s (CLI and web).

pub mod command;
pub mod ids;
pub mod limits;
pub mod topic;

/// Generated from `proto/dtop/v1/*.proto`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/dtop.v1.rs"));
}

pub use ids::{RigId, RigIdError};

/// A raw sample that carries no value (`ChannelSamples.raw`, rig.proto): the edge could not
/// read it (a Modbus device refused the register) or it did not fit an `i32` at the channel's
/// scale. Never a measurement: receivers store it as missing, not as `raw × scale + offset`.
pub const RAW_NO_VALUE: i32 = i32::MIN;
pub use prost::Message;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Message;
    use super::v1::{ActuatorDrive, ControllerParams, PersistedWatermark};

    /// `owner_epoch` (issue 16) is a new field: a message without it is a message at epoch 0,
    /// and a message at epoch 0 is byte for byte what a sender older than the field sends.
    #[test]
    fn owner_epoch_zero_is_the_wire_form_of_senders_without_the_field() {
        let old = PersistedWatermark {
            rig_id: "r1".into(),
            seq: 7,
            timestamp_ns: 1,
            owner_epoch: 0,
        };
        let bytes = old.encode_to_vec();
        // rig_id (field 1), seq (2), timestamp_ns (3): nothing for field 4.
        assert_eq!(bytes, [0x0a, 2, b'r', b'1', 0x10, 7, 0x18, 1]);
        let newer = PersistedWatermark {
            owner_epoch: 3,
            ..old.clone()
        };
        let decoded = PersistedWatermark::decode(newer.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.owner_epoch, 3);
        for payload in [
            ActuatorDrive {
                owner_epoch: 5,
                ..ActuatorDrive::default()
            }
            .encode_to_vec(),
            ControllerParams {
                owner_epoch: 5,
                ..ControllerParams::default()
            }
            .encode_to_vec(),
        ] {
            assert!(!payload.is_empty(), "a non-zero epoch is on the wire");
        }
    }
}
