//! Operational modal analysis (OMA) for DTOP: natural frequencies, damping ratios and mode
//! shapes of a structure from its measured outputs alone (ambient or shaker noise, force
//! unknown).
//!
//! # Layout
//! - [`record`] — checks on a record: sizes, NaN/inf, dead and clipped channels.
//! - [`pole`] — discrete ↔ continuous poles, frequency and damping, complex MAC, MPC, MPD.
//! - [`ssi`] — covariance-driven stochastic subspace identification over a range of orders.
//! - [`cluster`] — automatic mode picking: clusters of stable poles across orders.
//! - [`stabilisation`] — the physical and stability flags of the stabilisation diagram.
//! - [`error`] — `OmaError`.

pub mod cluster;
pub mod error;
pub mod pole;
pub mod record;
pub mod ssi;
pub mod stabilisation;

pub use cluster::{IdentifiedMode, ModePicking, pick_modes};
pub use error::OmaError;
pub use ssi::{SsiParams, SsiResult, ssi_cov};
pub use stabilisation::{StabilisedPole, StabilityCriteria, flag_stability};
