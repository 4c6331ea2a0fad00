//! The `dtop` command-line tool.
//!
//! # Layout
//! - [`up`]: `dtop up`, the whole system in one process on embedded defaults — broker,
//!   simulated rig, edge and twin — with a live status line.
//! - [`status`]: renders what the twin and edge report into that status line (pure).

pub mod status;
pub mod up;
