//! Owns the shape of a study's result: a JSON summary (small: frequencies, statistics, bounds'
//! figures) and named arrays of equal-length columns (FRFs, envelopes, time histories,
//! histograms). The engine keeps the summary in the database and each array, by content hash,
//! in the result store; arrays are downloadable as CSV or JSON. A study that identifies or
//! updates a model also returns it as a [`ProposedModel`], which the engine files in the
//! catalogue as a new version with status `proposed`, awaiting an operator's approval.

use serde::{Deserialize, Serialize};

/// A study's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyOutput {
    /// Small results, as JSON.
    pub summary: serde_json::Value,
    /// Large results, as named column tables.
    pub arrays: Vec<NamedArray>,
    /// A model the study proposes (an updated or condensed one), to be filed in the catalogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_model: Option<ProposedModel>,
}

impl StudyOutput {
    /// A result without a proposed model.
    pub fn new(summary: serde_json::Value, arrays: Vec<NamedArray>) -> Self {
        Self {
            summary,
            arrays,
            proposed_model: None,
        }
    }
}

/// A model version a study proposes. The engine files it under the study's model name (or,
/// for an inline model, the name in `name`), with provenance "produced by study <id>" and
/// status `proposed`; nothing runs on it until an operator approves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposedModel {
    /// Name to file it under when the study's model was given inline (no catalogue name).
    pub name: String,
    /// The proposed model.
    pub spec: crate::model::ModelSpec,
    /// How it was obtained, one line (method, data, residual), shown with the version.
    pub method: String,
}

/// A table of equal-length columns, e.g. `frequency_hz`, `lower_m`, `upper_m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedArray {
    /// Name, unique within the study: lowercase, digits, `_` and `-`.
    pub name: String,
    /// The columns, all of the same length.
    pub columns: Vec<Column>,
}

/// One column: a name with its unit in it (`frequency_hz`), and the values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Column name, unit spelled out.
    pub name: String,
    /// Values, one per row.
    pub values: Vec<f64>,
}

impl NamedArray {
    /// Rows in the table (the length of the first column; 0 without columns).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.values.len())
    }

    /// The table as CSV: a header of column names, then one line per row, floats in shortest
    /// round-trip form.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        out.push_str(&names.join(","));
        out.push('\n');
        for row in 0..self.rows() {
            let cells: Vec<String> = self
                .columns
                .iter()
                .map(|c| {
                    c.values
                        .get(row)
                        .map_or_else(String::new, |v| format!("{v:?}"))
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let a = NamedArray {
            name: "t".into(),
            columns: vec![
                Column {
                    name: "f_hz".into(),
                    values: vec![1.0, 2.5],
                },
                Column {
                    name: "x_m".into(),
                    values: vec![0.1, 1e-9],
                },
            ],
        };
        assert_eq!(a.to_csv(), "f_hz,x_m\n1.0,0.1\n2.5,1e-9\n");
    }
}
