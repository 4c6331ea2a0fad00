//! Owns the dispatch from a [`StudyKind`] and JSON parameters to that kind's module: parsing the
//! parameters (unknown fields and every bad value reported at once, each under `params.`),
//! planning, chunk computation and reduction. Each kind module has the same four items:
//! `Params` (serde, `deny_unknown_fields`, defaults), `check` (plan or every problem),
//! `run_chunk` and `reduce`.

pub mod control;
pub mod design;
pub mod frf;
pub mod modal;
pub mod simulate;
pub mod uncertainty;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::ModelSpec;
use crate::output::StudyOutput;
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, Plan, StudyError, StudyKind};

macro_rules! dispatch {
    ($kind:expr, $m:ident => $body:expr) => {
        match $kind {
            StudyKind::Modal => {
                use modal as $m;
                $body
            }
            StudyKind::Frf => {
                use frf as $m;
                $body
            }
            StudyKind::Control => {
                use control as $m;
                $body
            }
            StudyKind::Simulate => {
                use simulate as $m;
                $body
            }
            StudyKind::Uncertainty => {
                use uncertainty as $m;
                $body
            }
            StudyKind::Design => {
                use design as $m;
                $body
            }
        }
    };
}

/// Checks the model and the parameters and plans the study: every problem at once, or the
/// number of chunks and the work. Nothing should be queued unless this is `Ok`.
///
/// # Errors
/// [`StudyError::Invalid`] with every problem, or [`StudyError::TooLarge`].
pub fn plan(
    kind: StudyKind,
    model: &ModelSpec,
    params: &serde_json::Value,
    budget: &Budget,
) -> Result<Plan, StudyError> {
    let model_problems = model.problems();
    dispatch!(kind, k => {
        let params = parse_params::<k::Params>(params);
        match (params, model_problems.is_empty()) {
            (Ok(p), true) => k::check(model, &p, budget),
            (Ok(_), false) => Err(StudyError::Invalid(model_problems)),
            (Err(mut problems), _) => {
                problems.extend(model_problems);
                Err(StudyError::Invalid(problems))
            }
        }
    })
}

/// Computes chunk `chunk` of a planned study. Depends only on its arguments.
///
/// # Errors
/// [`StudyError::Cancelled`] when `ctx` says so; [`StudyError::Numerics`] with the reason.
pub fn run_chunk(
    kind: StudyKind,
    model: &ModelSpec,
    params: &serde_json::Value,
    seed: u64,
    chunk: u32,
    ctx: &ChunkCtx<'_>,
) -> Result<serde_json::Value, StudyError> {
    dispatch!(kind, k => {
        let p = parse_params::<k::Params>(params).map_err(StudyError::Invalid)?;
        k::run_chunk(model, &p, seed, chunk, ctx)
    })
}

/// Combines the chunk outputs, in chunk order, into the study's result.
///
/// # Errors
/// [`StudyError::BadChunk`] when an output is not this kind's; [`StudyError::Numerics`].
pub fn reduce(
    kind: StudyKind,
    model: &ModelSpec,
    params: &serde_json::Value,
    seed: u64,
    chunks: &[serde_json::Value],
) -> Result<StudyOutput, StudyError> {
    dispatch!(kind, k => {
        let p = parse_params::<k::Params>(params).map_err(StudyError::Invalid)?;
        k::reduce(model, &p, seed, chunks)
    })
}

/// The parameters a form should start from for this kind on this model, as JSON.
pub fn defaults(kind: StudyKind, model: &ModelSpec) -> serde_json::Value {
    dispatch!(kind, k => to_json(&k::Params::defaults_for(model)))
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Parses `value` as `P`, reporting every problem (unknown fields, wrong types, missing
/// fields), each with its path under `params.`: after each error the offending entry is removed
/// and parsing retried.
///
/// # Errors
/// Every problem found.
pub fn parse_params<P: DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<P, Vec<FieldProblem>> {
    let mut value = value.clone();
    let mut problems = Vec::new();
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, P>(&value) {
            Ok(p) if problems.is_empty() => return Ok(p),
            Ok(_) => return Err(problems),
            Err(e) => {
                let path = e.path().to_string();
                let field = if path == "." {
                    "params".to_owned()
                } else {
                    format!("params.{path}")
                };
                let message = e.inner().to_string();
                let unknown = message.starts_with("unknown field");
                problems.push(FieldProblem::new(field, message.clone()));
                if !remove_path(&mut value, e.path(), unknown, &message) {
                    return Err(problems);
                }
            }
        }
    }
    Err(problems)
}

/// Removes the entry an error points at, so the next parse can find the next error. For an
/// unknown field serde's path ends at the parent object, so the field name is read from the
/// message. Returns false when nothing could be removed.
fn remove_path(
    value: &mut serde_json::Value,
    path: &serde_path_to_error::Path,
    unknown: bool,
    message: &str,
) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let mut target = value;
    let (parents, last) = if unknown {
        (&segments[..], None)
    } else {
        match segments.split_last() {
            Some((last, parents)) => (parents, Some(*last)),
            None => return false,
        }
    };
    for seg in parents {
        target = match (seg, target) {
            (Segment::Map { key }, serde_json::Value::Object(m)) => match m.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, serde_json::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, target) {
        (None, serde_json::Value::Object(m)) => {
            // "unknown field `name`, expected ..."
            let name = message.split('`').nth(1).unwrap_or_default().to_owned();
            m.remove(&name).is_some()
        }
        (Some(Segment::Map { key }), serde_json::Value::Object(m)) => m.remove(key).is_some(),
        _ => false,
    }
}
