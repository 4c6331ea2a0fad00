//! Owns the crate's single error type. One variant per reaction a caller can take: fix the
//! data or the parameters (every problem is listed at once), or give up on a record the linear
//! algebra cannot handle.

/// Everything that can go wrong in an operational modal analysis.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OmaError {
    /// The record or the parameters break one or more rules; every problem found is listed,
    /// each with what to do about it, so a user can fix them all in one pass.
    #[error("invalid operational modal analysis request: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Valid-looking input that the linear algebra could not handle (a decomposition that did
    /// not converge, an overflow). Says which step failed.
    #[error("numerical failure: {0}")]
    Numerical(String),
}

/// Turns a list of problems into `Ok(())` when it is empty, or the error listing them all.
pub(crate) fn into_result(problems: Vec<String>) -> Result<(), OmaError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(OmaError::Invalid(problems))
    }
}
