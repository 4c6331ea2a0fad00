//! Owns the crate's error type. One variant per reaction a caller can take: fix the text of a
//! file, fix the parameters, give the identification more or better data, or regularise.

use std::fmt;

use dtop_dynamics::{FrfError, ModelError};

/// One bad cell of an FRF text file, located for a person to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseProblem {
    /// Line number, 1-based, as an editor shows it.
    pub line: usize,
    /// Column (field) number, 1-based; 0 when the problem is the whole line.
    pub column: usize,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.column == 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(
                f,
                "line {}, column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

fn list_parse_problems(problems: &[ParseProblem], total: usize) -> String {
    let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let more = total.saturating_sub(problems.len());
    if more > 0 {
        format!("{} (and {more} more)", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

/// Everything that can go wrong while reading measured FRFs, identifying modes, comparing a
/// model with measurements or updating a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrateError {
    /// The text of an FRF file has bad rows; the first problems are listed with their line
    /// and column, `total` counts them all.
    #[error("cannot read the FRF text, {total} problem(s): {}", list_parse_problems(.problems, *.total))]
    Parse {
        /// The first problems found, in line order (capped, see `measured::MAX_REPORTED_PROBLEMS`).
        problems: Vec<ParseProblem>,
        /// How many problems the text has in all.
        total: usize,
    },
    /// The parameters or data break one or more rules; every problem found is listed.
    #[error("invalid input: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// No resonance could be found where one was looked for.
    #[error("no resonance found: {0}")]
    NoPeak(String),
    /// The data cannot determine the requested unknowns (too few modes or points, a singular
    /// Jacobian, a driving point that does not fit); the message says what would help.
    #[error("not identifiable: {0}")]
    NotIdentifiable(String),
    /// The model update stopped without meeting its convergence test.
    #[error("model update did not converge after {iterations} iterations: {reason}")]
    NotConverged {
        /// Iterations run.
        iterations: usize,
        /// Why it stopped, with a suggestion.
        reason: String,
    },
    /// A step of the linear algebra failed on data that passed validation.
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// The structural model could not be built (for example an updated stiffness that is not
    /// positive).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A model frequency response could not be evaluated.
    #[error(transparent)]
    Frf(#[from] FrfError),
}

/// Turns a list of problems into `Ok(())` or [`CalibrateError::Invalid`].
pub(crate) fn check(problems: Vec<String>) -> Result<(), CalibrateError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CalibrateError::Invalid(problems))
    }
}
