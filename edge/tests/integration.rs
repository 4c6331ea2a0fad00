//! The integration tests of `dtop-edge`, one module per file beside this one, built as one
//! test binary: one link and one copy of the generic code of tokio, rumqttc and friends instead
//! of one per file, which is most of a cold CI build. Run one file's tests with
//! `cargo test --release -p dtop-edge --test integration FILE::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod modbus_support;

mod actuator;
mod commands;
mod config_errors;
mod fencing;
mod live_cbc;
mod modbus_actuator;
mod modbus_edge;
mod modbus_rtu;
mod modbus_tcp;
mod pipeline;
mod seq_reservation;
mod systemd_notify;
