//! `dtop-worker`: a process that runs study chunks and reduce steps from the studies engine's
//! queue. This library holds its configuration (`[engine]`, `[worker]`, `[metrics]`) and the
//! run loop; `main.rs` is the process shell (logs, config, signals, systemd).
//!
//! # Layout
//! - [`config`]: the TOML configuration, validated with every problem at once.
//! - [`run`]: connect (retrying with backoff while the database is away), serve `/metrics`,
//!   run the engine's worker until shutdown.

pub mod config;
pub mod run;

/// The shipped example configuration (`--print-default-config`).
pub const EXAMPLE_CONFIG: &str = include_str!("../dtop-worker.example.toml");
