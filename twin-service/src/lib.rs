//! DTOP twin service: one live digital twin per rig. It ingests the sample blocks the edges
//! publish over MQTT, checks them against each rig's birth manifest, tracks block sequence gaps
//! and duplicates, and stores every sample durably as InfluxDB line protocol (in InfluxDB 1.x,
//! an InfluxDB 2.x-compatible API such as VictoriaMetrics, or rotating files on disk).
//!
//! Each rig whose manifest fits the configured structural model also gets a Kalman filter,
//! whose estimated floor displacements and velocities are published on
//! `dtop/v1/twin/<rig>/state` (and `.../state/json`) and stored as `dtop_twin_state`. With
//! `[control] enabled = true` the twin also closes a velocity-feedback loop through the edge:
//! it answers `SetControl` commands and publishes `ActuatorDrive`s.
//!
//! # Layout
//! Following the data path:
//! - [`adopt`]: following a catalogue model: reading its versions, switching a rig's estimator
//!   at a block boundary, re-checking its controller, recording the switch for replay.
//! - [`config`]: the TOML configuration, its defaults and whole-config validation.
//! - [`service`]: wiring: MQTT connection, router, rig actors, storage writer, shutdown, stats.
//! - [`ingest`]: pure decoding and validation of birth, sample and death frames.
//! - [`rig`]: one rig's state machine and the actor task that owns it.
//! - [`estimate`]: one rig's Kalman filter: fitting the model to a manifest, feeding samples.
//! - [`control`]: one rig's twin-hosted DVF controller (off by default): command decisions,
//!   gain limits from the critical gain, one drive per estimated block.
//! - [`live_cbc`]: one rig's live control-based continuation run (`RunCbc`): admission, the
//!   hand-shake with the edge's inner loop, the iteration on live samples, its records.
//! - [`owner`]: which rigs this twin owns under a lease coordinator, at which owner epoch, and
//!   the handle through which the coordinator says so (no coordinator: every rig, epoch 0).
//! - [`leases`]: with `[coordinator]`, the lease database, the `dtop-lease` coordinator whose
//!   `Owned`/`Lost` feed [`owner`], and the registration of every rig seen born.
//! - [`seq`]: pure per-rig block sequence tracking (new, duplicate, gap, late fill).
//! - [`overlap`]: the sample times each rig has stored, per edge clock; a block that would
//!   replace stored samples is stored apart.
//! - [`lineproto`]: the pure line-protocol encoder, and the storage schema.
//! - [`store`]: sinks (files, InfluxDB 1.x, InfluxDB 2.x) and the batching, retrying writer.
//! - [`replay`]: deterministic replay of a stored range through the estimator and controller:
//!   the records the live twin stores for it, the pure replayer, and reading back from InfluxDB.
//! - [`metrics`]: the Prometheus endpoint (`[metrics] listen`) rendering [`TwinStats`].
//! - [`stats`]: what the twin reports ([`TwinStats`]) and the live one-second window.
//! - [`tracking`]: pure tracking of each rig's modes: sliding windows in sample time, OMA of
//!   each window, matching to the model's modes, drift alarms with hysteresis.

pub mod adopt;
pub mod config;
pub mod control;
pub mod estimate;
pub mod ingest;
pub mod leases;
pub mod lineproto;
pub mod live_cbc;
pub mod metrics;
pub mod overlap;
pub mod owner;
pub mod replay;
pub mod rig;
pub mod seq;
pub mod service;
pub mod stats;
pub mod store;
pub mod tracking;

pub use config::TwinConfig;
pub use owner::{OwnerMode, OwnersHandle, Ownership, owners_channel, owners_channel_for};
pub use service::{TwinError, TwinHandle, run, run_with_owners, spawn, stats_channel};
pub use stats::{RigStats, StoreStats, TwinStats};

/// The example configuration shipped next to the crate; it equals the defaults.
pub const EXAMPLE_CONFIG: &str = include_str!("../dtop-twin.example.toml");
