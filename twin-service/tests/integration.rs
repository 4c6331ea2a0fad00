//! The integration tests of `dtop-twin`, one module per file beside this one, built as one
//! test binary: one link and one copy of the generic code of tokio, rumqttc and friends instead
//! of one per file, which is most of a cold CI build. Run one file's tests with
//! `cargo test --release -p dtop-twin --test integration FILE::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod frames;
mod support;

mod cli;
mod config_errors;
mod overlap;
mod seq_loss;
mod service;
mod spool_influx;
mod spool_writer;
mod store;
mod tools;
