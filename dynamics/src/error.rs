//! Owns the crate's single error type. One variant per reaction a caller can take: fix the
//! config, pick another time step, or give up on a numerically hopeless model.

/// Everything that can go wrong while building or discretizing a structural model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The configuration breaks one or more rules; every problem found is listed, so an
    /// operator can fix them all in one pass.
    #[error("invalid structural model: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A discretization step that is zero, negative or not finite.
    #[error("time step {dt_s} s must be positive and finite")]
    InvalidTimeStep {
        /// The rejected step, in seconds.
        dt_s: f64,
    },
    /// A valid-looking model that the linear algebra could not handle (for example entries so
    /// large that they overflow). Says which step failed.
    #[error("numerical failure: {0}")]
    Numerical(&'static str),
}
