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
