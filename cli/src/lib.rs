//! The `dtop` command-line tool.
//!
//! # Layout
//! - [`up`]: `dtop up`, the whole system in one process on embedded defaults — broker,
//!   simulated rig, edge and twin — with a live status line.
//! - [`compute`]: `dtop modal | frf | control | dvf-critical-gain`, offline computations on
//!   the Southampton model printed as JSON (argument checks only; numerics in dtop-dynamics).
//! - [`first_run`]: the admin login `dtop up` creates on its first run.
//! - [`status`]: renders what the twin and edge report into that status line (pure).
//! - [`cmd`]: `dtop cmd`, operator commands over MQTT with their acknowledgements as JSON.
//! - [`study`], [`model`]: `dtop study ...` and `dtop model ...`, clients of the API server.
//! - [`client`]: the connection options, login and HTTP error mapping they share, with
//!   [`sse`], the pure server-sent-event parser behind `dtop study watch`.
//! - [`nats_config`]: `dtop nats-config`, the NATS users and permissions generated from the
//!   credentials file and role rules.
//! - [`model_source`]: `--model` on the computations: built-in, file or catalogue.
//! - [`params`]: `--param`/`--params`/`--model` turned into request JSON (pure).

pub mod client;
pub mod cmd;
pub mod compute;
pub mod first_run;
pub mod inputs;
pub mod model;
pub mod model_source;
pub mod nats_config;
pub mod params;
pub mod sse;
pub mod status;
pub mod study;
pub mod up;
