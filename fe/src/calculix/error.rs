//! Owns the errors of the CalculiX path: a deck it cannot write, a `ccx` that is missing,
//! fails, is cancelled or prints no eigenvalues. One variant per reaction a caller can take.

use crate::error::FeError;

/// Everything that can go wrong between a frame and CalculiX's frequencies.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalculixError {
    /// The frame's parameters break one or more rules (every problem listed).
    #[error("invalid frame model: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The frame uses something the deck writer cannot express for CalculiX.
    #[error("cannot write a CalculiX deck: {0}")]
    Unsupported(String),
    /// The `ccx` program could not be started (not installed, or not on PATH).
    #[error(
        "cannot start CalculiX `{program}`: {message} (install it with `apt-get install -y calculix-ccx`)"
    )]
    Missing {
        /// The program that was tried.
        program: String,
        /// The operating system's reason.
        message: String,
    },
    /// Reading or writing the job's files failed.
    #[error("CalculiX job files: {action}: {message}")]
    Io {
        /// What was being done, with the path.
        action: String,
        /// The operating system's reason.
        message: String,
    },
    /// `ccx` ended with a failure status; `tail` is the end of its output, with its own
    /// message.
    #[error("CalculiX failed ({status}); its output ends:\n{tail}")]
    Failed {
        /// How the process ended.
        status: String,
        /// Last lines of its standard output and error.
        tail: String,
    },
    /// `ccx` ended but wrote no eigenvalues (an input error it reports and survives, for
    /// instance); `tail` is the end of its output.
    #[error("CalculiX printed no eigenvalues; its output ends:\n{tail}")]
    NoEigenvalues {
        /// Last lines of its standard output and error.
        tail: String,
    },
    /// The run was cancelled through its flag; the process was killed.
    #[error("CalculiX run cancelled; the ccx process was killed")]
    Cancelled,
    /// The run took longer than its time limit; the process was killed.
    #[error("CalculiX run exceeded its {limit_s} s limit; the ccx process was killed")]
    TimedOut {
        /// The limit, in seconds.
        limit_s: f64,
    },
}

impl From<FeError> for CalculixError {
    fn from(error: FeError) -> Self {
        match error {
            FeError::Invalid(problems) => Self::Invalid(problems),
            FeError::Numerical(message) => Self::Unsupported(message),
        }
    }
}
