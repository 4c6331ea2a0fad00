//! Owns the crate's error type: one variant per reaction a caller can take (fix the input,
//! change where the continuation starts, or give up on a numerically hopeless case).

/// Everything that can stop a nonlinear computation before it produces a result.
///
/// A continuation that starts but later loses the branch is not an error: it returns the
/// points computed so far with a [`crate::StopReason`] that says why it stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NonlinearError {
    /// The model or the request breaks one or more rules; every problem found is listed.
    #[error("invalid nonlinear request: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Newton's method found no periodic response at the starting point of a continuation.
    #[error(
        "the continuation cannot start at ω = {omega_rad_s} rad/s, F = {forcing_n} N: {reason}"
    )]
    CannotStart {
        /// Forcing frequency of the starting point, in rad/s.
        omega_rad_s: f64,
        /// Forcing amplitude of the starting point, in N.
        forcing_n: f64,
        /// Why Newton's method failed there.
        reason: String,
    },
    /// The linear algebra failed on a valid-looking problem; says which step.
    #[error("numerical failure: {0}")]
    Numerical(&'static str),
}
