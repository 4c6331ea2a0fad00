//! Owns the shape of a validation problem: the field it is about (a dotted path into the
//! parameters or the model, e.g. `params.frequencies.f_max_hz` or `model.structure.floor_masses_kg[1]`)
//! and a sentence saying what is wrong and what is allowed. Every check collects all of them.

use serde::{Deserialize, Serialize};

/// One thing wrong with a study request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// Dotted path of the field, `params.` or `model.` first.
    pub field: String,
    /// What is wrong, with the allowed range where there is one.
    pub message: String,
}

impl FieldProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// All problems as one line, for error messages.
pub fn join(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}
