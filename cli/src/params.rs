//! Owns turning command-line study input into request JSON: `--param k=v` (dotted keys, JSON
//! values when they parse) layered over a `--params` file, and `--model M` read as a catalogue
//! name, `name@version` or a ModelSpec file. Pure apart from reading the named files; sends
//! nothing.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use dtop_studies::{ModelRef, ModelSpec};

/// What `--model M` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelArg {
    /// A catalogue model: `name` (latest) or `name@version`.
    Catalogue(ModelRef),
    /// A ModelSpec file (JSON, or TOML by its `.toml` extension), sent inline.
    File(PathBuf),
}

impl ModelArg {
    /// Reads `text`: a path when it names an existing file, contains `/` or ends in `.json` or
    /// `.toml`; otherwise a catalogue reference.
    ///
    /// # Errors
    /// Why `text` is neither.
    pub fn parse(text: &str) -> Result<Self, String> {
        let looks_like_path = text.contains('/')
            || text.ends_with(".json")
            || text.ends_with(".toml")
            || Path::new(text).is_file();
        if looks_like_path {
            return Ok(Self::File(PathBuf::from(text)));
        }
        text.parse::<ModelRef>()
            .map(Self::Catalogue)
            .map_err(|e| format!("--model {text:?}: {e} (or give a path to a ModelSpec file)"))
    }
}

/// Reads a JSON or TOML document (TOML when the name ends in `.toml`) as JSON.
///
/// # Errors
/// The file and why it could not be read or parsed.
pub fn read_document(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_document(&text, is_toml(path)).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether `path` names a TOML file.
pub fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Parses `text` as TOML or JSON into JSON.
///
/// # Errors
/// The parser's message.
pub fn parse_document(text: &str, toml: bool) -> Result<Value, String> {
    if toml {
        let value: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        serde_json::to_value(value).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

/// Reads a ModelSpec file (JSON or TOML); every problem of the model is reported at once.
///
/// # Errors
/// Unreadable or malformed file (with the field serde names), or every physical problem.
pub fn read_model_spec(path: &Path) -> Result<ModelSpec, Vec<String>> {
    let value = read_document(path).map_err(|e| vec![e])?;
    let spec: ModelSpec = serde_json::from_value(value)
        .map_err(|e| vec![format!("{}: not a ModelSpec: {e}", path.display())])?;
    let problems: Vec<String> = spec
        .problems()
        .into_iter()
        .map(|p| format!("{}: {}: {}", path.display(), p.field, p.message))
        .collect();
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems)
    }
}

/// Splits `key=value` into the key's path and the value: JSON when it parses as JSON, else the
/// text as a string (so `mode=fast` and `n=3` both work, and `s="3"` forces a string).
///
/// # Errors
/// Why the text is not `key=value` with a non-empty dotted key.
pub fn parse_param(text: &str) -> Result<(Vec<String>, Value), String> {
    let Some((key, raw)) = text.split_once('=') else {
        return Err(format!("--param {text:?} must be key=value"));
    };
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    if path.iter().any(|p| p.trim().is_empty()) {
        return Err(format!(
            "--param {text:?}: the key must be names joined by '.', e.g. frequencies.f_max_hz"
        ));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    Ok((path, value))
}

/// Sets `value` at `path` inside `root`, creating objects on the way.
///
/// # Errors
/// When a prefix of `path` holds something that is not an object.
pub fn set_path(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut node = root;
    for (depth, key) in path.iter().enumerate() {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return Err(format!(
                "--param {}: {} is not an object",
                path.join("."),
                path[..depth].join(".")
            ));
        };
        if depth + 1 == path.len() {
            map.insert(key.clone(), value);
            return Ok(());
        }
        node = map.entry(key.clone()).or_insert(Value::Null);
    }
    Ok(())
}

/// The study's parameters: `file` (an object, or `{}`), then every `--param` on top of it in
/// order. Every problem is reported at once.
///
/// # Errors
/// Every malformed `--param`, and a file that is not an object.
pub fn build_params(file: Option<Value>, params: &[String]) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let mut root = match file {
        None => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            problems.push("--params: the file must hold an object of parameters".to_owned());
            Value::Object(Map::new())
        }
    };
    for text in params {
        match parse_param(text) {
            Ok((path, value)) => {
                if let Err(e) = set_path(&mut root, &path, value) {
                    problems.push(e);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(root)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_params_nest_and_values_parse_as_json_when_they_can() {
        let params = build_params(
            None,
            &[
                "frequencies.f_max_hz=200".into(),
                "frequencies.points=11".into(),
                "method=fast".into(),
                "flags=[1,2]".into(),
                "label=\"3\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            params,
            json!({"frequencies": {"f_max_hz": 200, "points": 11}, "method": "fast",
                   "flags": [1, 2], "label": "3"})
        );
    }

    #[test]
    fn a_param_overrides_the_file_and_keeps_its_siblings() {
        let file = json!({"frequencies": {"f_max_hz": 50, "f_min_hz": 1}, "samples": 10});
        let params = build_params(Some(file), &["frequencies.f_max_hz=80".into()]).unwrap();
        assert_eq!(
            params,
            json!({"frequencies": {"f_max_hz": 80, "f_min_hz": 1}, "samples": 10})
        );
    }

    #[test]
    fn every_malformed_param_is_reported_at_once() {
        let problems = build_params(
            Some(json!({"samples": 10})),
            &["novalue".into(), "a..b=1".into(), "samples.x=1".into()],
        )
        .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[2].contains("samples is not an object"),
            "{problems:#?}"
        );
    }

    #[test]
    fn model_args_are_catalogue_refs_or_files() {
        assert_eq!(
            ModelArg::parse("southampton@2").unwrap(),
            ModelArg::Catalogue("southampton@2".parse().unwrap())
        );
        assert_eq!(
            ModelArg::parse("rig.toml").unwrap(),
            ModelArg::File("rig.toml".into())
        );
        assert!(ModelArg::parse("Bad Name").is_err());
    }

    #[test]
    fn toml_and_json_documents_read_the_same() {
        let from_toml = parse_document("a = 1\n[b]\nc = \"x\"\n", true).unwrap();
        let from_json = parse_document(r#"{"a": 1, "b": {"c": "x"}}"#, false).unwrap();
        assert_eq!(from_toml, from_json);
    }
}
