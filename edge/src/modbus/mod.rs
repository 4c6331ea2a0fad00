//! Modbus devices on the edge: a declarative register map (`[modbus]` in the edge config), a pure
//! read planner and decoder, one task per bus that owns the connection and polls its devices, and
//! a Modbus actuator output. Knows nothing of MQTT: polled samples go to the acquisition task.
//!
//! # Layout
//! - [`config`]: `[modbus]`: devices, transports, register maps, actuator; validation.
//! - [`plan`]: pure: coalesces registers into read requests (≤ 125 words, ≤ 2000 bits).
//! - [`decode`]: pure: words ↔ numbers by type, word and byte order; scale, offset, raw integer.
//! - [`bus`]: owns one connection (TCP, or an RTU line shared by slaves): timeouts, t3.5
//!   silence, turnaround delay, reconnect with backoff.
//! - [`streams`]: pure: polled devices as streams and birth-manifest channels.
//! - [`actuator`]: the Modbus actuator output: setpoint → register writes (pure), write
//!   schedule, and the guard that keeps a device back from an outage off until a reset.
//! - [`poller`]: the bus task: owns a [`bus::Bus`], polls its devices on their schedules,
//!   drives the actuator, counts errors per device and register.
//! - [`shaker`]: an operator's `Excitation` → one holding-register write to a shaker amplifier.

pub mod actuator;
pub mod bus;
pub mod config;
pub mod decode;
pub mod plan;
pub mod poller;
pub mod shaker;
pub mod streams;

pub use actuator::{ModbusLinkReport, ModbusSetpoint};
pub use poller::{
    ActuatorChannels, ModbusActuatorError, ModbusDeviceStats, run_modbus_actuator, spawn_buses,
};
pub use streams::{PolledSample, birth_channels, overflow_warnings, polled_streams};
