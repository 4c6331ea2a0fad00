//! The integration tests of `dtop-broker`, one module per file beside this one, built as one
//! test binary: one link and one copy of the generic code of tokio, rumqttc and friends instead
//! of one per file, which is most of a cold CI build. Run one file's tests with
//! `cargo test --release -p dtop-broker --test integration FILE::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod acl_matrix;
mod authentication;
mod config;
mod conformance;
mod interop;
mod large_payload;
mod mosquitto_interop;
mod paho_suites;
mod passwd;
mod routing;
mod rumqttc_interop;
mod transport;
