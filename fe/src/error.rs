//! Owns the errors of the built-in solver. One variant per reaction a caller can take: fix the
//! parameters, or give up on a model the linear algebra cannot handle. CalculiX has its own
//! errors in `calculix/`.

/// Everything that can go wrong while building or solving the built-in frame model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeError {
    /// The parameters break one or more rules; every problem found is listed, so a user can
    /// fix them all in one pass.
    #[error("invalid frame model: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A valid-looking model that the linear algebra could not handle (a singular stiffness
    /// in a condensation, an eigen-solver that does not converge). Says which step failed.
    #[error("numerical failure: {0}")]
    Numerical(String),
}

impl From<dtop_dynamics::ModelError> for FeError {
    fn from(error: dtop_dynamics::ModelError) -> Self {
        match error {
            dtop_dynamics::ModelError::Invalid(problems) => Self::Invalid(problems),
            other => Self::Numerical(other.to_string()),
        }
    }
}
