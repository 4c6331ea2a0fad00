//! Owns finding *every* parse-level error in a TOML config, not just the first. Pure: text in,
//! a value and problems out. Knows nothing about validation or files.
//!
//! serde stops at the first error, so this repeats the parse: parse the text once into toml's
//! spanned document, deserialize `T` from a copy, record the error with its path
//! (serde_path_to_error) and line (the error's or the value's span), remove the offending value
//! from the document, and try again. A removed value that had a default lets the parse go on;
//! one that had none makes serde report "missing field" for it (and a table emptied by removals
//! may be refused as empty), which is our doing, so it is not reported and the enclosing table is
//! removed in turn. Removing an array element shifts the later ones, so paths are mapped back to
//! the indices the operator wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue, Deserializer};

use super::ConfigProblem;

/// What [`collect`] found: the value when the good parts of the file made one, and every
/// problem. `value` is `None` only when `problems` is not empty.
#[derive(Debug)]
pub struct Collected<T> {
    /// The config built from the values that were fine (bad ones replaced by their defaults).
    pub value: Option<T>,
    /// Every parse-level problem, in file order.
    pub problems: Vec<ConfigProblem>,
}

/// Rounds of parse-and-remove before giving up. Each round removes at least one value, so only
/// a file with more values than this could reach it; the bound keeps the loop finite regardless.
const MAX_ROUNDS_N: usize = 10_000;

/// Deserializes `T` from `text`, collecting every parse-level problem with its path and line.
pub fn collect<T: DeserializeOwned>(text: &str) -> Collected<T> {
    let (mut root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // What follows a syntax error is a guess of the parser's; typed errors about it would
        // mislead, so only the syntax errors are reported (all of them, with their lines).
        let problems = syntax_errors
            .iter()
            .map(|e| problem(text, String::new(), e.span(), e.message()))
            .collect();
        return finish(None, problems);
    }

    let mut removed = Removed::default();
    let mut problems = Vec::new();
    for _ in 0..MAX_ROUNDS_N {
        let error = match serde_path_to_error::deserialize::<_, T>(Deserializer::from(root.clone()))
        {
            Ok(value) => return finish(Some(value), problems),
            Err(error) => error,
        };
        let location = locate(root.get_ref(), error.path(), &removed);
        let source = error.into_inner();
        let missing = missing_field(source.message());
        let ours = match missing {
            Some(key) => removed.explains(&location.shown, key),
            // Only a table we emptied: an operator's own empty table is still reported.
            None => location.emptied && removed.any_under(&location.shown),
        };
        if !ours {
            let span = source.span().or(location.span.clone());
            problems.push(problem(
                text,
                location.shown.clone(),
                span,
                source.message(),
            ));
        }
        // An error about the document as a whole leaves nothing to remove; one whose value
        // cannot be removed would repeat forever.
        if location.steps.is_empty() || !remove(root.get_mut(), &location.steps) {
            return finish(None, problems);
        }
        removed.record(&location);
    }
    problems.push(ConfigProblem::new(
        "",
        format!("more than {MAX_ROUNDS_N} problems; stopped looking"),
    ));
    finish(None, problems)
}

fn finish<T>(value: Option<T>, mut problems: Vec<ConfigProblem>) -> Collected<T> {
    // Errors arrive in the deserializer's key order; the operator reads the file top-down.
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Collected { value, problems }
}

fn problem(text: &str, path: String, span: Option<Range<usize>>, message: &str) -> ConfigProblem {
    ConfigProblem {
        path,
        line: span
            .and_then(|s| text.get(..s.start))
            .map(|before| before.matches('\n').count() + 1),
        message: message.trim().to_owned(),
    }
}

/// One step into the document, as the document is *now* (indices after earlier removals).
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where an error points: the deepest value of the document its path reaches.
#[derive(Debug)]
struct Location {
    /// Steps to the value in the current document; empty for the root.
    steps: Vec<Step>,
    /// The same place as the operator wrote it (original indices), e.g. `a.b[2].c`.
    shown: String,
    /// `shown` of the array holding the value and the value's original index, when the value is
    /// an array element.
    element: Option<(String, usize)>,
    /// Where the value is in the text.
    span: Option<Range<usize>>,
    /// The value is a table or array with nothing left in it.
    emptied: bool,
}

/// What earlier rounds removed, in the operator's coordinates.
#[derive(Debug, Default)]
struct Removed {
    /// Paths of removed values.
    paths: BTreeSet<String>,
    /// Original indices of removed elements, by the path of their array.
    elements: BTreeMap<String, BTreeSet<usize>>,
}

impl Removed {
    fn record(&mut self, location: &Location) {
        self.paths.insert(location.shown.clone());
        if let Some((array, index)) = &location.element {
            self.elements
                .entry(array.clone())
                .or_default()
                .insert(*index);
        }
    }

    /// Whether something inside `path` was removed.
    fn any_under(&self, path: &str) -> bool {
        self.paths.iter().any(|removed| {
            removed.strip_prefix(path).is_some_and(|rest| {
                path.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        })
    }

    /// The original index of what is now element `current` of the array at `array`.
    fn original_index(&self, array: &str, current: usize) -> usize {
        let Some(gone) = self.elements.get(array) else {
            return current;
        };
        // Bounded: at most `gone.len()` indices are skipped.
        (0..)
            .filter(|i| !gone.contains(i))
            .nth(current)
            .unwrap_or(current)
    }

    /// Whether the field `key` that serde misses at `table` is one we removed (so it is not
    /// the operator's omission). The key may sit one table further down: an enum's struct
    /// variant (`[storage.file]`) reports its missing fields at the enum's path.
    fn explains(&self, table: &str, key: &str) -> bool {
        let direct = child(table, key);
        let suffix = format!(".{}", child("", key));
        self.paths.contains(&direct)
            || self.paths.iter().any(|removed| {
                removed
                    .strip_suffix(&suffix)
                    .and_then(|parent| parent.strip_prefix(table))
                    .is_some_and(|variant| {
                        let variant = if table.is_empty() {
                            variant
                        } else {
                            variant.strip_prefix('.').unwrap_or("")
                        };
                        !variant.is_empty() && !variant.contains(['.', '['])
                    })
            })
    }
}

/// The field named by serde's "missing field" error. serde's derive reports a missing field
/// only through `de::Error::missing_field`, which toml leaves at its default: exactly this
/// message. There is no typed way to tell it apart.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

fn child(parent: &str, key: &str) -> String {
    let key = if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Follows `path` into the document as far as it goes.
fn locate(root: &DeTable<'_>, path: &serde_path_to_error::Path, removed: &Removed) -> Location {
    let mut location = Location {
        steps: Vec::new(),
        shown: String::new(),
        element: None,
        span: None,
        emptied: false,
    };
    let mut table = Some(root);
    let mut array: Option<&DeArray<'_>> = None;
    for segment in path.iter() {
        let next: &Spanned<DeValue<'_>> = match segment {
            // An externally tagged enum's variant is a key in TOML (`[storage.file]`); a unit
            // variant (`table = "holding"`) has nothing below it and is skipped.
            Segment::Map { key } | Segment::Enum { variant: key } => {
                let Some(value) = table.and_then(|t| t.get(key.as_str())) else {
                    if matches!(segment, Segment::Enum { .. }) {
                        continue;
                    }
                    break;
                };
                location.steps.push(Step::Key(key.clone()));
                location.shown = child(&location.shown, key);
                location.element = None;
                value
            }
            Segment::Seq { index } => {
                let Some(value) = array.and_then(|a| a.get(*index)) else {
                    break;
                };
                let original = removed.original_index(&location.shown, *index);
                location.steps.push(Step::Index(*index));
                location.element = Some((location.shown.clone(), original));
                let _ = write!(location.shown, "[{original}]");
                value
            }
            Segment::Unknown => break,
        };
        location.span = Some(next.span());
        table = None;
        array = None;
        match next.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    location.emptied = match (location.steps.is_empty(), table, array) {
        (true, _, _) => root.is_empty(),
        (false, Some(t), _) => t.is_empty(),
        (false, _, Some(a)) => a.is_empty(),
        _ => false,
    };
    location
}

/// Removes the value at `steps` from the document; `false` when there was none to remove.
fn remove(root: &mut DeTable<'_>, steps: &[Step]) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut table = Some(root);
    let mut array: Option<&mut DeArray<'_>> = None;
    for step in parents {
        let next = match step {
            Step::Key(key) => table.and_then(|t| t.get_mut(key.as_str())),
            Step::Index(index) => array.and_then(|a| a.get_mut(*index)),
        };
        let Some(next) = next else {
            return false;
        };
        table = None;
        array = None;
        match next.get_mut() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => return false,
        }
    }
    match (last, table, array) {
        (Step::Key(key), Some(table), _) => table.remove(key.as_str()).is_some(),
        (Step::Index(index), _, Some(array)) if *index < array.len() => {
            // DeArray has no `remove`; rebuild it without the element.
            let kept: DeArray<'_> = std::mem::replace(array, DeArray::new())
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i != index)
                .map(|(_, v)| v)
                .collect();
            *array = kept;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default)]
        name: String,
        #[serde(default)]
        devices: Vec<Device>,
        #[serde(default)]
        storage: Option<Storage>,
        #[serde(default)]
        rig_id: Option<RigId>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Device {
        id: u8,
        #[serde(default)]
        registers: Vec<Register>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Register {
        address: u16,
        #[serde(default)]
        table: Table,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Table {
        #[default]
        Holding,
        Input,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Storage {
        File { dir: String },
        Influx { url: String },
    }

    /// A type whose own `Deserialize` refuses some strings, like DTOP's rig ids.
    #[derive(Debug, PartialEq)]
    struct RigId(String);

    impl<'de> Deserialize<'de> for RigId {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            if s.chars().all(|c| c.is_ascii_alphanumeric()) {
                Ok(Self(s))
            } else {
                Err(serde::de::Error::custom(format!("{s:?} is not a rig id")))
            }
        }
    }

    fn paths<T>(collected: &Collected<T>) -> Vec<&str> {
        collected.problems.iter().map(|p| p.path.as_str()).collect()
    }

    fn lines<T>(collected: &Collected<T>) -> Vec<Option<usize>> {
        collected.problems.iter().map(|p| p.line).collect()
    }

    const FIVE_ERRORS: &str = r#"name = "lab"
rig_id = "rig/1"
colour = "blue"

[[devices]]
id = 1

[[devices.registers]]
address = 1

[[devices.registers]]
address = 70000

[[devices.registers]]
address = 3
table = "inputs"

[[devices]]
id = "two"
"#;

    #[test]
    fn reports_five_parse_errors_with_paths_and_lines() {
        let collected = collect::<Config>(FIVE_ERRORS);
        assert_eq!(
            paths(&collected),
            [
                "rig_id",
                "colour",
                "devices[0].registers[1].address",
                "devices[0].registers[2].table",
                "devices[1].id",
            ]
        );
        assert_eq!(
            lines(&collected),
            [Some(2), Some(3), Some(12), Some(16), Some(19)]
        );
        let messages: Vec<&str> = collected
            .problems
            .iter()
            .map(|p| p.message.as_str())
            .collect();
        assert!(messages[0].contains("not a rig id"), "{messages:?}");
        assert!(
            messages[1].contains("unknown field `colour`"),
            "{messages:?}"
        );
        assert!(
            messages[3].contains("unknown variant `inputs`"),
            "{messages:?}"
        );
    }

    #[test]
    fn a_required_field_removed_for_an_error_is_not_reported_missing() {
        // `address` is required: removing the bad one must not add "missing field `address`".
        let collected =
            collect::<Config>("[[devices]]\nid = 1\n[[devices.registers]]\naddress = -1\n");
        assert_eq!(paths(&collected), ["devices[0].registers[0].address"]);
        assert!(
            collected.problems[0].message.contains("-1"),
            "{:?}",
            collected.problems
        );
    }

    #[test]
    fn a_field_the_operator_left_out_is_still_reported() {
        let collected = collect::<Config>("[[devices]]\nregisters = 5\n");
        // In file order: the device's table starts a line above its bad `registers`.
        assert_eq!(paths(&collected), ["devices[0]", "devices[0].registers"]);
        assert!(
            collected.problems[0].message.contains("missing field `id`"),
            "{:?}",
            collected.problems
        );
    }

    #[test]
    fn indices_after_a_removed_element_are_the_ones_in_the_file() {
        // Device 0 loses a required field and is removed; the later errors keep their indices.
        let text =
            "[[devices]]\nid = \"x\"\n[[devices]]\nid = 2\nextra = 1\n[[devices]]\nid = 300\n";
        let collected = collect::<Config>(text);
        assert_eq!(
            paths(&collected),
            ["devices[0].id", "devices[1].extra", "devices[2].id"]
        );
    }

    #[test]
    fn errors_inside_an_enum_variant_table_carry_the_variant_key() {
        let collected = collect::<Config>("[storage.file]\ndir = 3\n");
        assert_eq!(paths(&collected), ["storage.file.dir"]);
        let collected = collect::<Config>("[storage.ftp]\ndir = \"x\"\n");
        assert_eq!(paths(&collected), ["storage"]);
    }

    #[test]
    fn an_empty_enum_table_the_operator_wrote_is_reported() {
        let collected = collect::<Config>("[storage]\n");
        assert_eq!(paths(&collected), ["storage"]);
        assert_eq!(lines(&collected), [Some(1)]);
    }

    #[test]
    fn defaults_stand_in_for_removed_values() {
        let collected = collect::<Config>("name = 5\ncolour = 1\n[[devices]]\nid = 1\n");
        assert_eq!(paths(&collected), ["name", "colour"]);
        let value = collected.value.expect("the rest parses");
        assert_eq!(value.name, "");
        assert_eq!(value.devices.len(), 1);
    }

    #[test]
    fn a_good_file_has_no_problems() {
        let collected = collect::<Config>(
            "name = \"a\"\nrig_id = \"r1\"\n[storage.influx]\nurl = \"u\"\n[[devices]]\nid = 1\n",
        );
        assert!(collected.problems.is_empty(), "{:?}", collected.problems);
        assert_eq!(
            collected.value.unwrap().storage,
            Some(Storage::Influx { url: "u".into() })
        );
    }

    #[test]
    fn every_syntax_error_is_reported_with_its_line() {
        let collected = collect::<Config>("name = \"a\"\nx = = 1\ny = [1,\n\n[devices\n");
        assert!(collected.value.is_none());
        assert!(collected.problems.len() >= 2, "{:?}", collected.problems);
        assert_eq!(collected.problems[0].line, Some(2));
        assert!(collected.problems.iter().all(|p| p.line.is_some()));
    }

    #[test]
    fn a_document_that_is_wrong_as_a_whole_stops_with_one_problem() {
        #[derive(Debug, Deserialize)]
        struct Needs {
            #[allow(dead_code)]
            must: u8,
        }
        let collected = collect::<Needs>("");
        assert!(collected.value.is_none());
        assert_eq!(paths(&collected), [""]);
        assert!(
            collected.problems[0]
                .message
                .contains("missing field `must`")
        );
    }

    #[test]
    fn keys_that_need_quotes_are_shown_quoted() {
        let collected = collect::<Config>("\"a.b\" = 1\n");
        assert_eq!(paths(&collected), ["\"a.b\""]);
    }
}
