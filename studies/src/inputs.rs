//! Owns a study's measured inputs: named column tables given with the study when it is
//! submitted (a rig's stored acceleration record for `oma`, a measured FRF for `ema` and
//! `crossval`), as opposed to its parameters, which are small JSON. The engine keeps each input
//! in the result store by content hash and hands the same tables to every chunk and the reduce,
//! so a study's result is a function of its inputs as much as of its parameters, and citing the
//! study cites the data it ran on. What each kind expects is its [`InputSpec`] list.

use serde::Serialize;

use crate::output::NamedArray;
use crate::problems::FieldProblem;
use crate::{StudyError, StudyKind};

/// One input a kind takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InputSpec {
    /// The input's name, as submitted (`acceleration`, `frf`).
    pub name: &'static str,
    /// Whether a study of the kind is refused without it.
    pub required: bool,
    /// What the table holds: its columns and their units, and where it usually comes from.
    pub description: &'static str,
}

/// The inputs of one study, by name. Empty for kinds that take none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    arrays: Vec<NamedArray>,
}

impl Inputs {
    /// No inputs.
    pub fn none() -> Self {
        Self::default()
    }

    /// The tables, checked as tables (unique names, at least one column, columns of equal
    /// length, finite values): every problem at once, each under `inputs.<name>`. Whether the
    /// kind wants them is [`Inputs::problems_for`]'s question.
    ///
    /// # Errors
    /// Every problem found.
    pub fn new(arrays: Vec<NamedArray>) -> Result<Self, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        for (i, a) in arrays.iter().enumerate() {
            let field = format!("inputs.{}", a.name);
            if arrays[..i].iter().any(|b| b.name == a.name) {
                problems.push(FieldProblem::new(&field, "given twice"));
                continue;
            }
            if let Some(p) = name_problem(&a.name) {
                problems.push(FieldProblem::new(format!("inputs[{i}]"), p));
            }
            if a.columns.is_empty() {
                problems.push(FieldProblem::new(&field, "has no columns"));
                continue;
            }
            let rows = a.rows();
            for c in &a.columns {
                if c.values.len() != rows {
                    problems.push(FieldProblem::new(
                        format!("{field}.{}", c.name),
                        format!(
                            "has {} values; the first column has {rows}: every column must have one value per row",
                            c.values.len()
                        ),
                    ));
                } else if let Some(row) = c.values.iter().position(|v| !v.is_finite()) {
                    problems.push(FieldProblem::new(
                        format!("{field}.{}", c.name),
                        format!("row {row} is not a finite number"),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { arrays })
        } else {
            Err(problems)
        }
    }

    /// Every way these inputs do not fit `kind`, which takes `specs`: a required input
    /// missing, an input the kind does not take.
    pub fn problems_for(&self, kind: StudyKind, specs: &[InputSpec]) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        for spec in specs {
            if spec.required && self.get(spec.name).is_none() {
                problems.push(FieldProblem::new(
                    format!("inputs.{}", spec.name),
                    format!("is required by {kind}: {}", spec.description),
                ));
            }
        }
        for a in &self.arrays {
            if !specs.iter().any(|s| s.name == a.name) {
                let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
                problems.push(FieldProblem::new(
                    format!("inputs.{}", a.name),
                    if known.is_empty() {
                        format!("{kind} takes no inputs")
                    } else {
                        format!("{kind} takes only {}", known.join(", "))
                    },
                ));
            }
        }
        problems
    }

    /// The input called `name`, if given.
    pub fn get(&self, name: &str) -> Option<&NamedArray> {
        self.arrays.iter().find(|a| a.name == name)
    }

    /// The input called `name`.
    ///
    /// # Errors
    /// [`StudyError::Invalid`] naming `inputs.<name>` when it was not given.
    pub fn require(&self, name: &str) -> Result<&NamedArray, StudyError> {
        self.get(name).ok_or_else(|| {
            StudyError::Invalid(vec![FieldProblem::new(
                format!("inputs.{name}"),
                "is required and was not given",
            )])
        })
    }

    /// Every input, in the order given.
    pub fn arrays(&self) -> &[NamedArray] {
        &self.arrays
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.arrays.is_empty()
    }
}

/// Why `name` cannot name an input (or a result array): empty, too long, or a character other
/// than lowercase ASCII, digits, `_` and `-`.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 64 {
        return Some(format!("name {name:?} must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Some(format!(
            "name {name:?} may hold only lowercase letters, digits, '_' and '-'"
        ));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::output::Column;

    fn table(name: &str, columns: &[(&str, Vec<f64>)]) -> NamedArray {
        NamedArray {
            name: name.into(),
            columns: columns
                .iter()
                .map(|(n, v)| Column {
                    name: (*n).into(),
                    values: v.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_table_problem_is_reported_at_once() {
        let problems = Inputs::new(vec![
            table("a", &[("x", vec![1.0, 2.0]), ("y", vec![1.0])]),
            table("b", &[("x", vec![f64::NAN])]),
            table("a", &[("x", vec![1.0])]),
            table("Bad Name", &[("x", vec![1.0])]),
            table("empty", &[]),
        ])
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "inputs.a.y",
                "inputs.b.x",
                "inputs.a",
                "inputs[3]",
                "inputs.empty"
            ]
        );
    }

    #[test]
    fn a_kind_without_inputs_refuses_one_and_a_missing_required_one_is_named() {
        let given = Inputs::new(vec![table("frf", &[("x", vec![1.0])])]).unwrap();
        let p = given.problems_for(StudyKind::Modal, &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("takes no inputs"), "{p:?}");
        assert!(
            Inputs::none()
                .problems_for(StudyKind::Modal, &[])
                .is_empty()
        );
        assert!(Inputs::none().require("frf").is_err());
        assert_eq!(given.require("frf").unwrap().rows(), 1);
    }
}
