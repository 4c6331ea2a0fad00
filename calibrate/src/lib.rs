//! Calibration of DTOP's structural models against measurements: experimental modal analysis
//! (EMA) of measured FRFs, cross-validation of a model against them with numbers, and
//! sensitivity-based updating of a shear building's storey stiffnesses (and damping) to
//! identified modes.
//!
//! Pure numerics over plain data: no I/O, no clocks, no logging. File formats are parsed
//! from `&str`; the caller reads the file. Parameters and results are serde types (inputs
//! with `deny_unknown_fields`) so the study engine can carry them as JSON.
//!
//! Conventions: SI units in names; floors 1-based; measured FRFs are accelerances in
//! (m/s²)/N (files in g/N are converted once, with standard gravity 9.80665 m/s²; see
//! `AccelerationUnit` for why the Southampton files look like (m/s²)/N after all); modal
//! constants are receptance modal constants A = φ_out·φ_in of mass-normalised shapes, in 1/kg;
//! complex FRFs use the e^{jωt} phase convention (`MeasuredFrf::conjugated` converts).
//!
//! Where this differs from DTOP-Cristallo on purpose (`TOOLS.md` §§ 6 and 8): windows are
//! found, not hard-coded; f_n comes from the sweep rate and a fit of every point's angle, not
//! the largest line; damping from every usable point pair with its spread, not two lines;
//! modal mass from the driving-point modal constant, not an assumed 5; cross-validation
//! gives numbers (frequency errors paired by MAC, MAC, FRAC), not only overlaid plots.
//!
//! ```
//! use dtop_calibrate::{TargetMode, UpdateParams, update_storey_stiffness};
//! use dtop_dynamics::ShearBuildingConfig;
//!
//! // The Southampton model updated to the three modes measured on the rig.
//! let targets = [6.514, 17.463, 26.506].map(|f| TargetMode {
//!     frequency_hz: f,
//!     frequency_std_hz: 0.01,
//!     damping_ratio: None,
//!     shape: None,
//!     model_mode: None,
//! });
//! let result = update_storey_stiffness(
//!     &ShearBuildingConfig::southampton(),
//!     &UpdateParams::new(targets.to_vec()),
//! )?;
//! assert!(result.after.iter().all(|r| r.error_percent.abs() < 1e-6));
//! let _new_version = result.config; // ready to store as a proposed model version
//! # Ok::<(), dtop_calibrate::CalibrateError>(())
//! ```
//!
//! # Layout
//! - [`measured`] — `MeasuredFrf` and the parsers of Cristallo's complex (`;`) and dB (`,`)
//!   files, with every bad cell reported by line and column.
//! - [`peaks`] — resonance search by prominence and the window around each mode.
//! - [`circle`] — the circle fit (algebraic, then geometric Gauss–Newton), f_n from the
//!   sweep rate refined by an angle fit, damping from point pairs, modal constants.
//! - [`rfp`] — the global rational-fraction fit over a band (common denominator in a
//!   Chebyshev basis, every channel together), then residues by least squares.
//! - [`identified`] — `IdentifiedMode` and `model_from_modes`: M, K, C and the nearest
//!   chain, with the modal mass from the driving point.
//! - [`crossval`] — a model against measured FRFs: MAC matrix, frequency errors of
//!   MAC-paired modes, FRAC per channel (complex or magnitude-only), summary.
//! - [`update`] — storey stiffnesses (and Rayleigh or modal damping) fitted to target modes
//!   by regularised Levenberg–Marquardt on analytic eigen-sensitivities, with covariance.
//! - [`error`] — `CalibrateError`.

pub mod circle;
pub mod crossval;
pub mod error;
pub mod identified;
pub mod measured;
pub mod peaks;
pub mod rfp;
pub mod update;

pub use circle::{ChannelOutcome, CircleFitParams, CircleFitResult, WindowChoice, circle_fit};
pub use crossval::{CrossValParams, CrossValidation, FracKind, crossvalidate};
pub use error::{CalibrateError, ParseProblem};
pub use identified::{IdentifiedMode, SpatialModel, model_from_modes};
pub use measured::{
    AccelerationUnit, FrfValues, MeasuredFrf, STANDARD_GRAVITY_M_S2, parse_complex_accelerance,
    parse_db_accelerance,
};
pub use peaks::{DetectedPeak, ModeWindow, PeakSearch, find_mode_windows};
pub use rfp::{RationalFitParams, RationalFitResult, rational_fraction_fit};
pub use update::{
    DampingUpdate, ModeResidual, TargetMode, UpdateParams, UpdateResult, update_storey_stiffness,
};
