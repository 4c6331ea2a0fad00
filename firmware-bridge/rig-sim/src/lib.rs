//! `dtop-rig-sim`: a simulated DTOP rig, so the whole platform runs without hardware. It runs
//! the Southampton three-storey shear building (with an inertial actuator) in real time, or
//! faster, or lock-step, and speaks the firmware protocol (`firmware-bridge/PROTOCOL.md`)
//! over a pseudo-terminal and a small Modbus TCP register map (`MODBUS.md`).
//!
//! # Layout
//! Pure, deterministic cores (no I/O, no clocks):
//! - [`config`]: `SimConfig`, its defaults and whole-config validation.
//! - [`excitation`]: band-limited noise, sine and chirp generators.
//! - [`sensor`]: transducer sensitivities, sensor noise, 24-bit ADC quantisation, channel table.
//! - [`rig`]: the discretised structure + excitation + sensors, one sample per step.
//! - [`registers`]: the Modbus register map and its exceptions.
//! - [`firmware`]: the firmware state machine: what to send in reply to what, the watchdog.
//! - [`truth_log`]: CSV rows of every sample sent, and of every structural change.
//! - [`latency`]: the control-loop latency probe (sample taken → drive applied).
//!
//! I/O shells:
//! - [`pty`]: the pseudo-terminal and its optional symlink.
//! - [`link`]: pty reader and writer tasks.
//! - [`modbus`]: the Modbus TCP server.
//! - [`control`]: the run-time command socket (`--control`): storey changes while running.
//! - [`sim`]: `start()`, the firmware task that owns the state machine, and `SimHandle`.
//! - [`error`]: the crate's one error type, `SimError`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod control;
pub mod error;
pub mod excitation;
pub mod firmware;
pub mod latency;
pub mod link;
pub mod modbus;
pub mod pty;
pub mod registers;
pub mod rig;
pub mod sensor;
pub mod sim;
pub mod truth_log;

pub use config::{ConfigError, ExcitationConfig, ExcitationTarget, SimConfig};
pub use error::SimError;
pub use sim::{SimHandle, SimStats, start};
