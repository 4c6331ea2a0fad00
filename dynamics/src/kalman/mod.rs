//! Owns state estimation on the discretized structural model: a Kalman filter that turns
//! floor accelerations and the known inputs into floor displacements and velocities (and the
//! proof mass's, when an actuator is fitted). Knows nothing of where samples come from.
//!
//! The model is `x(k+1) = Ad·x(k) + Bd·u(k) + w(k)`, `y(k) = C·x(k) + D·u(k) + v(k)` with
//! `cov(w) = Q`, `cov(v) = R` and `cov(w, v) = S`. S is not zero for a building: an error in
//! a known input (a force gauge's noise) moves the structure through Bd *and* the floor's
//! acceleration through D in the same sample.
//!
//! - [`dare`] — the steady-state (stabilizing) solution of the filter Riccati equation, by
//!   structure-preserving doubling, and the gains that follow from it.
//! - [`filter`] — [`KalmanFilter`], generic over any [`GaussianModel`]: allocation-free
//!   `step`, missing samples and dropped-out sensors, NIS per step.
//! - [`structural`] — the physically motivated noise design for a shear building
//!   ([`StructuralNoise`]) and [`StructuralEstimator`], which names states by floor.
//! - `linalg` — the few allocation-free matrix kernels the time-varying update needs.

pub mod dare;
pub mod filter;
mod linalg;
pub mod structural;

pub use dare::{DareSolution, solve_filter_dare};
pub use filter::{
    FilterSnapshot, GainSchedule, GaussianModel, KalmanFilter, MAX_TABULATED_CHANNELS, StepReport,
};
pub use structural::{StructuralEstimator, StructuralNoise};

/// Everything that can go wrong while designing a Kalman filter. Stepping cannot fail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KalmanError {
    /// The model or noise description breaks one or more rules (sizes, signs, finiteness);
    /// every problem found is listed.
    #[error("invalid Kalman filter design: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A valid-looking design without a usable steady state, for example a mode that no
    /// available sensor sees and that does not decay. Says which step failed.
    #[error("numerical failure in Kalman filter design: {0}")]
    Numerical(String),
}
