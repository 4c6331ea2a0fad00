//! Operational modal analysis (OMA) for DTOP: natural frequencies, damping ratios and mode
//! shapes of a structure from its measured outputs alone (ambient or shaker noise, force
//! unknown). Pure numerics over plain data: no I/O, no clocks, no logging; deterministic.
//!
//! Two independent methods:
//! - **SSI-cov** (covariance-driven stochastic subspace identification; Peeters & De Roeck
//!   1999, Reynders 2012): output correlations → block Toeplitz matrix → SVD → observability
//!   matrix → (A, C) per model order → poles λ = ln(μ)/Δt and complex shapes; a stabilisation
//!   diagram flags each pole against the next lower order (frequency 1 %, damping 5 %,
//!   MAC ≥ 0.98 by default, damping in (0, 20 %)), and clusters of stable poles across orders
//!   become modes, with the mean and spread of frequency and damping across orders.
//! - **FDD** (frequency-domain decomposition; Brincker et al. 2001): Welch cross-spectral
//!   matrices (Hann, 50 % overlap, 4096-sample segments by default), their singular values
//!   per line, peaks of the first one, the first singular vector as the shape; optionally
//!   EFDD (Brincker, Ventura & Andersen 2001) for each peak's damping.
//!
//! Frequencies are natural (undamped) frequencies |λ|/2π, damping ratios −Re λ/|λ|, shapes
//! one entry per channel. Two kinds of uncertainty are reported and they are not the same
//! thing: the spread *across model orders* shows how well the poles stabilise on one record
//! (it is small, because every order sees the same data); the spread *across data segments*
//! ([`segments`]) is the statistical scatter of the estimate and is the one to quote (on the
//! simulated 2 %-damped Southampton rig it was 13–50 times larger for damping).
//!
//! Cristallo (TOOLS.md) has no output-only identification: its profile generator circle-fits
//! measured FRFs in hard-coded windows (5.9–7, 17–19, 25–27.5 Hz) and takes each frequency
//! as the bin of largest |Y|. Here nothing about the structure is hard-coded: modes are found
//! from the data, frequencies are not tied to the FFT grid (SSI), and every figure carries
//! its spread.
//!
//! ```
//! use dtop_oma::{OmaParams, SsiParams, identify};
//!
//! // An AR(2) process is the sampled output of one mode under white noise: its discrete
//! // poles are r·e^{±iθ} with r = e^{−ζωΔt} and θ = ω√(1−ζ²)Δt, exactly.
//! let (fs, f, zeta) = (100.0_f64, 5.0_f64, 0.02_f64);
//! let w = std::f64::consts::TAU * f;
//! let (r, theta) = ((-zeta * w / fs).exp(), w * (1.0 - zeta * zeta).sqrt() / fs);
//! let mut seed = 0x2545_f491_4f6c_dd1d_u64;
//! let mut noise = || {
//!     seed ^= seed << 13;
//!     seed ^= seed >> 7;
//!     seed ^= seed << 17;
//!     (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
//! };
//! let mut y = vec![0.0; 400_000];
//! for t in 2..y.len() {
//!     y[t] = 2.0 * r * theta.cos() * y[t - 1] - r * r * y[t - 2] + noise();
//! }
//! let params = OmaParams {
//!     ssi: SsiParams { block_rows: 10, max_order: 8, ..SsiParams::default() },
//!     ..OmaParams::default()
//! };
//! let result = identify(&[y], fs, &params)?;
//! // 4000 s hold T·(2ζf) = 800 half-power bandwidths, so the frequency scatters by about
//! // (2ζf)/√800 ≈ 0.14 % and the damping by a few %; measured: 5.006 Hz, ζ = 0.0200.
//! assert_eq!(result.modes.len(), 1);
//! assert!((result.modes[0].frequency_hz / f - 1.0).abs() < 0.005);
//! assert!((result.modes[0].damping_ratio / zeta - 1.0).abs() < 0.1);
//! # Ok::<(), dtop_oma::OmaError>(())
//! ```
//!
//! # Layout
//! - [`record`] — checks on a record: sizes, NaN/inf, dead and clipped channels.
//! - [`pole`] — discrete ↔ continuous poles, frequency and damping, complex MAC, MPC, MPD.
//! - [`ssi`] — covariance-driven stochastic subspace identification over a range of orders.
//! - [`cluster`] — automatic mode picking: clusters of stable poles across orders.
//! - [`stabilisation`] — the physical and stability flags of the stabilisation diagram.
//! - [`fdd`](mod@fdd) — frequency-domain decomposition: Welch spectral matrices, singular-value
//!   spectra, peak picking, shapes.
//! - [`segments`] — the spread of the modes across consecutive data segments.
//! - [`identify`](mod@identify) — the one-call analysis: SSI, mode picking, segments, FDD.
//! - [`efdd`] — enhanced FDD: damping and frequency from the free decay in a peak's bell.
//! - [`error`] — `OmaError`.

pub mod cluster;
pub mod efdd;
pub mod error;
pub mod fdd;
pub mod identify;
pub mod pole;
pub mod record;
pub mod segments;
pub mod ssi;
pub mod stabilisation;

pub use cluster::{IdentifiedMode, ModePicking, pick_modes};
pub use efdd::{EfddEstimate, EfddParams};
pub use error::OmaError;
pub use fdd::{FddParams, FddPeak, FddResult, fdd};
pub use identify::{OmaParams, OmaResult, identify};
pub use segments::{SegmentParams, SegmentUncertainty, SegmentedMode, segment_uncertainty};
pub use ssi::{SsiParams, SsiResult, ssi_cov};
pub use stabilisation::{StabilisedPole, StabilityCriteria, flag_stability};
