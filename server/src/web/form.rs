//! Owns the study form as pure functions: a kind's default parameters (JSON from
//! `dtop_studies::defaults`) become form fields, the posted fields become parameters again
//! (typed by the default at the same path), and the engine's field problems (`params.x[2]`) are
//! put next to the field they name. Knows nothing about HTTP or templates.

use dtop_studies::FieldProblem;
use serde_json::{Map, Number, Value};

/// Form field names of parameters start with this, so they never clash with `model`, `seed`
/// or `_csrf`.
pub const PARAM_PREFIX: &str = "p.";

/// How a parameter is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A number; `integer` when the default is one (sent as a JSON integer when it has no
    /// fraction).
    Number {
        /// Whether the default is an integer.
        integer: bool,
    },
    /// A checkbox.
    Bool,
    /// Free text.
    Text,
    /// Numbers separated by commas or spaces.
    NumberList,
    /// Anything else, as JSON.
    Json,
}

/// One form field.
#[derive(Debug, Clone, PartialEq)]
pub struct FormField {
    /// Dotted path under `params` (`f_min_hz`, `law.gain`).
    pub path: String,
    /// How it is edited.
    pub kind: FieldKind,
    /// The text in the field.
    pub value: String,
    /// The problems the engine found with it.
    pub problems: Vec<String>,
}

impl FormField {
    /// The form field's name.
    pub fn name(&self) -> String {
        format!("{PARAM_PREFIX}{}", self.path)
    }

    /// The element id.
    pub fn id(&self) -> String {
        format!("field-{}", self.path.replace('.', "-"))
    }

    /// Whether it is a number input.
    pub fn is_number(&self) -> bool {
        matches!(self.kind, FieldKind::Number { .. })
    }

    /// Whether it is a checkbox.
    pub fn is_bool(&self) -> bool {
        self.kind == FieldKind::Bool
    }

    /// Whether it is a JSON text area.
    pub fn is_json(&self) -> bool {
        self.kind == FieldKind::Json
    }

    /// Whether the checkbox is ticked.
    pub fn checked(&self) -> bool {
        self.value == "true"
    }
}

fn kind_of(value: &Value) -> FieldKind {
    match value {
        Value::Number(n) => FieldKind::Number {
            integer: n.is_i64() || n.is_u64(),
        },
        Value::Bool(_) => FieldKind::Bool,
        Value::String(_) => FieldKind::Text,
        Value::Array(items) if items.iter().all(Value::is_number) => FieldKind::NumberList,
        _ => FieldKind::Json,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_number) => items
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// The fields of `defaults` (an object), nested objects flattened to dotted paths, in the
/// defaults' key order.
pub fn fields(defaults: &Value) -> Vec<FormField> {
    let mut out = Vec::new();
    flatten("", defaults, &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<FormField>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        Value::Object(_) if prefix.is_empty() => {}
        _ => out.push(FormField {
            path: prefix.to_owned(),
            kind: kind_of(value),
            value: text_of(value),
            problems: Vec::new(),
        }),
    }
}

/// The posted value of field `name`, if any (the first, when a form repeats it).
pub fn posted<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn number(text: &str, integer: bool) -> Option<Value> {
    let x: f64 = text.trim().parse().ok()?;
    if !x.is_finite() {
        return None;
    }
    // Integral values of integer fields go as integers, so `u32` parameters accept them.
    if integer && x.fract() == 0.0 && x.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        return Some(Value::from(x as i64));
    }
    Number::from_f64(x).map(Value::Number)
}

/// The parameters the posted `pairs` describe, shaped like `defaults`, and the fields (with
/// what was typed in them). A value that cannot even be read (text in a number field) is a
/// problem at its `params.` path; the engine checks ranges.
pub fn read(
    defaults: &Value,
    pairs: &[(String, String)],
) -> (Value, Vec<FormField>, Vec<FieldProblem>) {
    let mut fields = fields(defaults);
    let mut problems = Vec::new();
    let mut params = Map::new();
    for field in &mut fields {
        let text = posted(pairs, &field.name());
        let value = match field.kind {
            FieldKind::Bool => {
                field.value = text.is_some().to_string();
                Some(Value::Bool(text.is_some()))
            }
            kind => {
                let text = text.unwrap_or("").to_owned();
                let value = match kind {
                    FieldKind::Number { integer } => {
                        number(&text, integer).ok_or("must be a number")
                    }
                    FieldKind::Text => Ok(Value::String(text.clone())),
                    FieldKind::NumberList => text
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|t| !t.is_empty())
                        .map(|t| number(t, false).ok_or("must be numbers separated by commas"))
                        .collect::<Result<Vec<_>, _>>()
                        .map(Value::Array),
                    FieldKind::Json | FieldKind::Bool => {
                        serde_json::from_str(&text).map_err(|_| "must be valid JSON")
                    }
                };
                field.value = text;
                match value {
                    Ok(v) => Some(v),
                    Err(message) => {
                        problems.push(FieldProblem::new(format!("params.{}", field.path), message));
                        None
                    }
                }
            }
        };
        if let Some(value) = value {
            insert(&mut params, &field.path, value);
        }
    }
    (Value::Object(params), fields, problems)
}

fn insert(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = map
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(child) = child {
                insert(child, rest, value);
            }
        }
    }
}

/// Puts each problem next to its field (`params.mass_rel_half_width[2]` belongs to
/// `mass_rel_half_width`; `params.law` to the first field under `law`); returns the problems
/// that name no field (the model, the budget), for the top of the form.
pub fn attach(fields: &mut [FormField], problems: Vec<FieldProblem>) -> Vec<FieldProblem> {
    let mut rest = Vec::new();
    for problem in problems {
        let Some(path) = problem.field.strip_prefix("params.") else {
            rest.push(problem);
            continue;
        };
        let path = path.split('[').next().unwrap_or(path);
        let exact = fields.iter().position(|f| f.path == path);
        let under = || {
            fields
                .iter()
                .position(|f| f.path.starts_with(&format!("{path}.")))
        };
        match exact.or_else(under) {
            Some(i) => {
                let message = if problem.field == format!("params.{}", fields[i].path) {
                    problem.message
                } else {
                    format!(
                        "{}: {}",
                        problem.field.trim_start_matches("params."),
                        problem.message
                    )
                };
                fields[i].problems.push(message);
            }
            None => rest.push(problem),
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_become_typed_fields_with_nested_objects_flattened() {
        let f = fields(
            &json!({"n": 3, "f_hz": 1.5, "on": true, "w": [0.05, 0.1], "law": {"gain": 2.0}, "s": "dvf"}),
        );
        let by = |p: &str| f.iter().find(|x| x.path == p).unwrap().clone();
        assert_eq!(by("n").kind, FieldKind::Number { integer: true });
        assert_eq!(by("f_hz").kind, FieldKind::Number { integer: false });
        assert_eq!(by("on").kind, FieldKind::Bool);
        assert_eq!(by("w").value, "0.05, 0.1");
        assert_eq!(by("law.gain").name(), "p.law.gain");
        assert_eq!(by("s").kind, FieldKind::Text);
    }

    #[test]
    fn posted_fields_read_back_into_the_defaults_shape() {
        let defaults = json!({"n": 3, "f_hz": 1.5, "on": true, "w": [0.05], "law": {"gain": 2.0}});
        let (params, _, problems) = read(
            &defaults,
            &pairs(&[
                ("p.n", "400"),
                ("p.f_hz", "2"),
                ("p.w", "0.1, 0.2 0.3"),
                ("p.law.gain", "-1"),
            ]),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            params,
            json!({"n": 400, "f_hz": 2.0, "on": false, "w": [0.1, 0.2, 0.3], "law": {"gain": -1.0}})
        );
    }

    #[test]
    fn unreadable_values_are_problems_at_their_params_path_and_keep_the_typed_text() {
        let (_, fields, problems) = read(
            &json!({"n": 3, "w": [1.0]}),
            &pairs(&[("p.n", "three"), ("p.w", "1, x")]),
        );
        let paths: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(paths, ["params.n", "params.w"]);
        assert_eq!(fields[0].value, "three");
    }

    #[test]
    fn problems_land_next_to_their_field_and_the_rest_stay_general() {
        let mut f = fields(&json!({"w": [0.1, 0.2], "law": {"gain": 1.0}, "n": 1}));
        let rest = attach(
            &mut f,
            vec![
                FieldProblem::new("params.w[1]", "= 2; allowed range is 0 ≤ e < 1"),
                FieldProblem::new("params.law", "unknown variant"),
                FieldProblem::new("params.n", "must be at least 2"),
                FieldProblem::new("model.structure.actuator", "remove the actuator"),
            ],
        );
        let by = |p: &str| f.iter().find(|x| x.path == p).unwrap().problems.clone();
        assert_eq!(by("w"), ["w[1]: = 2; allowed range is 0 ≤ e < 1"]);
        assert_eq!(by("law.gain"), ["law: unknown variant"]);
        assert_eq!(by("n"), ["must be at least 2"]);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].field, "model.structure.actuator");
    }
}
