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
//! - [`fdd`] — frequency-domain decomposition: Welch spectral matrices, singular-value
//!   spectra, peak picking, shapes.
//! - [`segments`] — the spread of the modes across consecutive data segments.
//! - [`identify`] — the one-call analysis: SSI, mode picking, segments, FDD.
//! - [`error`] — `OmaError`.

pub mod cluster;
pub mod error;
pub mod fdd;
pub mod identify;
pub mod pole;
pub mod record;
pub mod segments;
pub mod ssi;
pub mod stabilisation;

pub use cluster::{IdentifiedMode, ModePicking, pick_modes};
pub use error::OmaError;
pub use fdd::{FddParams, FddPeak, FddResult, fdd};
pub use identify::{OmaParams, OmaResult, identify};
pub use segments::{SegmentParams, SegmentUncertainty, SegmentedMode, segment_uncertainty};
pub use ssi::{SsiParams, SsiResult, ssi_cov};
pub use stabilisation::{StabilisedPole, StabilityCriteria, flag_stability};
