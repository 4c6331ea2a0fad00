//! The `dtop` command-line tool.
//!
//! # Layout
//! - [`up`]: `dtop up`, the whole system in one process on embedded defaults — broker,
//!   simulated rig, edge and twin — with a live status line.
//! - [`compute`]: `dtop modal | frf | control | dvf-critical-gain`, offline computations on
//!   the Southampton model printed as JSON (argument checks only; numerics in dtop-dynamics).
//! - [`status`]: renders what the twin and edge report into that status line (pure).
//! - [`cmd`]: `dtop cmd`, operator commands over MQTT with their acknowledgements as JSON.

pub mod cmd;
pub mod compute;
pub mod status;
pub mod up;
