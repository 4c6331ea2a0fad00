//! Owns the dispatch from a [`StudyKind`] and JSON parameters to that kind's module: resolving
//! the submitted parameters (omitted fields from the kind's defaults for the model, the chunk
//! size from the engine's budget; unknown fields and every bad value reported at once, each
//! under `params.`), planning, chunk computation and reduction. Each kind module has the same
//! four items: `Params` (serde, `deny_unknown_fields`, `defaults_for`), `check` (plan or every
//! problem), `run_chunk` and `reduce`; its chunking rule is its [`Chunking`] impl here.

pub mod cbc;
pub mod control;
pub mod crossval;
pub mod design;
pub mod ema;
pub mod fea;
pub mod frf;
pub mod modal;
pub mod oma;
pub mod simulate;
pub mod uncertainty;
pub mod update;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::inputs::{InputSpec, Inputs};
use crate::model::ModelSpec;
use crate::output::StudyOutput;
use crate::problems::FieldProblem;
use crate::{Budget, ChunkCtx, Resolved, StudyError, StudyKind};

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
            StudyKind::Oma => {
                use oma as $m;
                $body
            }
            StudyKind::Cbc => {
                use cbc as $m;
                $body
            }
            StudyKind::Fea => {
                use fea as $m;
                $body
            }
            StudyKind::Ema => {
                use ema as $m;
                $body
            }
            StudyKind::Crossval => {
                use crossval as $m;
                $body
            }
            StudyKind::Update => {
                use update as $m;
                $body
            }
        }
    };
}

/// Resolves the submitted parameters against the model and the budget, checks them with the
/// model, and plans the study: every problem at once, or the plan with the RESOLVED parameters.
/// Resolving takes every top-level field the submitter left out from [`defaults`] (a nested
/// object given replaces the default one whole) and fixes each Monte Carlo kind's chunk size
/// from `budget.chunk_work_units` unless the submitter gave one. The engine stores the
/// resolved parameters with the study and hands them to [`run_chunk`] and [`reduce`], so a
/// result never depends on the defaults of a later version or on any worker's config.
/// Nothing should be queued unless this is `Ok`.
///
/// # Errors
/// [`StudyError::Invalid`] with every problem, or [`StudyError::TooLarge`].
pub fn plan(
    kind: StudyKind,
    model: &ModelSpec,
    params: &serde_json::Value,
    inputs: &Inputs,
    budget: &Budget,
) -> Result<Resolved, StudyError> {
    let mut other_problems = model.problems();
    other_problems.extend(inputs.problems_for(kind, self::inputs(kind)));
    let merged = with_defaults(params, &defaults(kind, model));
    dispatch!(kind, k => {
        let params = parse_params::<k::Params>(&merged);
        match (params, other_problems.is_empty()) {
            (Ok(mut p), true) => {
                p.fix_chunking(model, budget);
                let plan = k::check(model, &p, budget, inputs)?;
                let params = serde_json::to_value(&p).map_err(|e| {
                    StudyError::Invalid(vec![FieldProblem::new("params", e.to_string())])
                })?;
                Ok(Resolved {
                    chunks: plan.chunks,
                    work_units: plan.work_units,
                    params,
                })
            }
            (Ok(_), false) => Err(StudyError::Invalid(other_problems)),
            (Err(mut problems), _) => {
                problems.extend(other_problems);
                Err(StudyError::Invalid(problems))
            }
        }
    })
}

/// The result of a one-chunk kind whose chunk computes the whole [`StudyOutput`].
///
/// # Errors
/// [`StudyError::BadChunk`] unless there is exactly one chunk holding a [`StudyOutput`].
pub(crate) fn single_output(
    kind: StudyKind,
    chunks: &[serde_json::Value],
) -> Result<StudyOutput, StudyError> {
    match chunks {
        [one] => StudyOutput::deserialize(one)
            .map_err(|e| StudyError::BadChunk(format!("{kind} chunk: {e}"))),
        _ => Err(StudyError::BadChunk(format!(
            "{kind} has 1 chunk, got {}",
            chunks.len()
        ))),
    }
}

/// `given` over `defaults`: every top-level field of `defaults` that `given` does not name,
/// then every field of `given` as given (so unknown fields still reach the parser and are
/// refused). `null` or an absent object stands for `{}`; anything else that is not an object
/// is returned unchanged for the parser to refuse.
pub fn with_defaults(given: &serde_json::Value, defaults: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let given = match given {
        Value::Null => &Value::Object(serde_json::Map::new()),
        other => other,
    };
    match (given, defaults) {
        (Value::Object(g), Value::Object(d)) => {
            let mut out = d.clone();
            for (key, value) in g {
                out.insert(key.clone(), value.clone());
            }
            Value::Object(out)
        }
        _ => given.clone(),
    }
}

/// How a kind's parameters take their chunk size from the engine's budget. Kinds that never
/// split into Monte Carlo chunks keep the default (nothing to fix). A Monte Carlo kind whose
/// submitter gave no chunk size gets the one that makes a chunk about
/// `budget.chunk_work_units` work units, written into the parameters, so every chunk and the
/// reduce read it from there and never from a worker's own budget.
pub trait Chunking {
    /// Fills in the chunk size from `budget` where the parameters leave it open.
    fn fix_chunking(&mut self, _model: &ModelSpec, _budget: &Budget) {}
}

impl Chunking for modal::Params {}
impl Chunking for frf::Params {}
impl Chunking for control::Params {}
impl Chunking for oma::Params {}
impl Chunking for cbc::Params {}
impl Chunking for fea::Params {}
impl Chunking for ema::Params {}
impl Chunking for crossval::Params {}
impl Chunking for update::Params {}

impl Chunking for simulate::Params {
    fn fix_chunking(&mut self, model: &ModelSpec, budget: &Budget) {
        let Ok(building) = model.building() else {
            return; // `check` reports the model's problems.
        };
        let dofs = building.dofs() as u64;
        let per_chunk = simulate::samples_per_chunk_within(self, dofs, budget.chunk_work_units);
        if let Some(d) = &mut self.dispersion {
            d.samples_per_chunk.get_or_insert(per_chunk);
        }
    }
}

/// Samples per chunk for `samples` samples in blocks of `block` at about `per_chunk` samples
/// a chunk (a multiple of `block`): the fewest whole blocks at least `per_chunk` (and at
/// most twice it) that cut the samples into an EVEN number of chunks, so two workers (or four,
/// when the count allows) get equal shares and neither waits out the other's last chunk;
/// `per_chunk` itself when that makes one chunk or no such size exists. Fewer, larger chunks
/// also cost fewer jobs (each about 5 ms of worker and server CPU; BENCHMARKS.md, "Session
/// 14").
pub fn even_chunking(samples: u64, block: u64, per_chunk: u64) -> u64 {
    let block = block.max(1);
    let blocks = samples.div_ceil(block);
    let target = per_chunk.div_ceil(block).max(1);
    if blocks.div_ceil(target) <= 1 {
        return per_chunk;
    }
    (target..=target.saturating_mul(2))
        .find(|b| blocks.div_ceil(*b) % 2 == 0)
        .map_or(per_chunk, |b| b * block)
}

impl Chunking for uncertainty::Params {
    fn fix_chunking(&mut self, model: &ModelSpec, budget: &Budget) {
        let per_chunk = uncertainty::samples_per_chunk_within(
            self.frequencies,
            model.floors(),
            budget.chunk_work_units,
        );
        let per_chunk = even_chunking(self.samples, uncertainty::BLOCK_SAMPLES, per_chunk);
        self.samples_per_chunk.get_or_insert(per_chunk);
        if self.frequencies_per_bounds_chunk.is_none() {
            // Invalid params keep it open; `check` reports their problems.
            if let Ok(per) = uncertainty::frequencies_per_bounds_chunk_within(
                model,
                self,
                budget.chunk_work_units,
            ) {
                self.frequencies_per_bounds_chunk = Some(per);
            }
        }
    }
}

impl Chunking for design::Params {
    fn fix_chunking(&mut self, model: &ModelSpec, budget: &Budget) {
        // As `design::check` counts a sample's work units.
        let per_sample = design::work_units_per_sample(self, model.floors()).max(1);
        let per_chunk = (budget.chunk_work_units / per_sample)
            .max(1)
            .div_ceil(design::BLOCK_SAMPLES)
            .saturating_mul(design::BLOCK_SAMPLES);
        let per_chunk = even_chunking(self.samples, design::BLOCK_SAMPLES, per_chunk);
        self.samples_per_chunk.get_or_insert(per_chunk);
    }
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
    inputs: &Inputs,
) -> Result<serde_json::Value, StudyError> {
    dispatch!(kind, k => {
        let p = parse_params::<k::Params>(params).map_err(StudyError::Invalid)?;
        k::run_chunk(model, &p, seed, chunk, ctx, inputs)
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
    inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    dispatch!(kind, k => {
        let p = parse_params::<k::Params>(params).map_err(StudyError::Invalid)?;
        k::reduce(model, &p, seed, chunks, inputs)
    })
}

/// The parameters a form should start from for this kind on this model, as JSON.
pub fn defaults(kind: StudyKind, model: &ModelSpec) -> serde_json::Value {
    dispatch!(kind, k => to_json(&k::Params::defaults_for(model)))
}

/// The measured inputs `kind` takes (see [`crate::inputs`]); empty for kinds that compute
/// from the model alone.
pub fn inputs(kind: StudyKind) -> &'static [InputSpec] {
    dispatch!(kind, k => k::INPUTS)
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
    // "unknown field `name`, ..." names the field; serde's path ends at the parent object,
    // except for a struct without fields, where it ends at the field itself.
    let name = message.split('`').nth(1).unwrap_or_default().to_owned();
    let unknown = unknown && !matches!(segments.last(), Some(Segment::Map { key }) if *key == name);
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
        (None, serde_json::Value::Object(m)) => m.remove(&name).is_some(),
        (Some(Segment::Map { key }), serde_json::Value::Object(m)) => m.remove(key).is_some(),
        _ => false,
    }
}

/// Runs a study the way the engine does (plan, every chunk, reduce), for the kinds' tests.
#[cfg(test)]
pub(crate) fn run_study(
    kind: StudyKind,
    model: &ModelSpec,
    submitted: &serde_json::Value,
    inputs: &Inputs,
) -> Result<StudyOutput, StudyError> {
    let resolved = plan(kind, model, submitted, inputs, &Budget::default())?;
    let flag = std::sync::atomic::AtomicBool::new(false);
    let ctx = ChunkCtx::new(&flag);
    let chunks = (0..resolved.chunks)
        .map(|c| run_chunk(kind, model, &resolved.params, 5, c, &ctx, inputs))
        .collect::<Result<Vec<_>, _>>()?;
    reduce(kind, model, &resolved.params, 5, &chunks, inputs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::model::builtin_model;

    #[test]
    fn even_chunking_gives_an_even_number_of_chunks_of_whole_blocks() {
        // design, 10^6 samples in 62 blocks of 16 384: 3 blocks a chunk would be 21 chunks.
        assert_eq!(even_chunking(1_000_000, 16_384, 3 * 16_384), 4 * 16_384);
        assert_eq!(1_000_000_u64.div_ceil(4 * 16_384), 16);
        // uncertainty, 10^5 samples in blocks of 64: 105 blocks a chunk would be 15 chunks.
        assert_eq!(even_chunking(100_000, 64, 105 * 64), 112 * 64);
        assert_eq!(100_000_u64.div_ceil(112 * 64), 14);
        // Already even, one chunk, or no even count within twice the size: unchanged.
        assert_eq!(even_chunking(64 * 10, 64, 5 * 64), 5 * 64);
        assert_eq!(even_chunking(100, 64, 6400), 6400);
        assert_eq!(even_chunking(3 * 64, 64, 64), 2 * 64);
        assert_eq!(even_chunking(3 * 64, 64, 3 * 64), 3 * 64);
        // Every size it picks is whole blocks, at least the target, and the count is even.
        for samples in [1_u64, 63, 64, 65, 1_000, 99_999, 1_000_000] {
            for target in [1_u64, 2, 3, 7, 100] {
                let per = even_chunking(samples, 64, target * 64);
                assert_eq!(per % 64, 0);
                assert!(per >= target * 64 && per <= 2 * target * 64);
                let n = samples.div_ceil(per);
                assert!(
                    n <= 1 || n % 2 == 0 || per == target * 64,
                    "{samples} {target}"
                );
            }
        }
    }

    fn run_all(
        kind: StudyKind,
        model: &ModelSpec,
        submitted: &serde_json::Value,
        budget: &Budget,
    ) -> (StudyOutput, Resolved) {
        let resolved = plan(kind, model, submitted, &Inputs::none(), budget).unwrap();
        let flag = AtomicBool::new(false);
        let ctx = ChunkCtx::new(&flag);
        let chunks: Vec<_> = (0..resolved.chunks)
            .map(|c| run_chunk(kind, model, &resolved.params, 3, c, &ctx, &Inputs::none()).unwrap())
            .collect();
        let out = reduce(kind, model, &resolved.params, 3, &chunks, &Inputs::none()).unwrap();
        (out, resolved)
    }

    #[test]
    fn every_kind_plans_from_an_empty_submission_and_resolves_to_its_defaults() {
        let model = builtin_model("cristallo-msd3").unwrap();
        // Kinds that take a measurement (oma, ema, crossval) need one to plan; their own tests
        // plan them from `{}` with it.
        let model_only = StudyKind::ALL.into_iter().filter(|&k| inputs(k).is_empty());
        for kind in model_only {
            let from_empty = plan(
                kind,
                &model,
                &serde_json::json!({}),
                &Inputs::none(),
                &Budget::default(),
            )
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            let from_null = plan(
                kind,
                &model,
                &serde_json::Value::Null,
                &Inputs::none(),
                &Budget::default(),
            )
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            let from_defaults = plan(
                kind,
                &model,
                &defaults(kind, &model),
                &Inputs::none(),
                &Budget::default(),
            )
            .unwrap();
            assert_eq!(from_empty, from_defaults, "{kind}");
            assert_eq!(from_null, from_defaults, "{kind}");
            // Resolving is idempotent: the stored params plan to themselves.
            let again = plan(
                kind,
                &model,
                &from_empty.params,
                &Inputs::none(),
                &Budget::default(),
            )
            .unwrap();
            assert_eq!(again, from_empty, "{kind}");
        }
    }

    #[test]
    fn unknown_fields_are_still_refused_beside_the_defaults_and_every_problem_is_listed() {
        let model = builtin_model("cristallo-msd3").unwrap();
        for kind in StudyKind::ALL {
            let submitted = serde_json::json!({ "frobnicate": 1, "wibble": 2 });
            let Err(StudyError::Invalid(problems)) = plan(
                kind,
                &model,
                &submitted,
                &Inputs::none(),
                &Budget::default(),
            ) else {
                panic!("{kind}: unknown fields were planned");
            };
            let text = format!("{problems:?}");
            assert!(
                text.contains("frobnicate") && text.contains("wibble"),
                "{kind}: {text}"
            );
        }
    }

    #[test]
    fn monte_carlo_kinds_take_their_chunk_size_from_the_given_budget_into_the_resolved_params() {
        let model = builtin_model("cristallo-msd3").unwrap();
        let small = Budget {
            chunk_work_units: 30_000,
            ..Budget::default()
        };
        let submissions = [
            (StudyKind::Design, serde_json::json!({ "samples": 40_000 })),
            (
                StudyKind::Uncertainty,
                serde_json::json!({ "samples": 2000, "frequencies": 20 }),
            ),
            (
                StudyKind::Simulate,
                serde_json::json!({ "duration_s": 1.0, "dispersion": { "n_samples": 40 } }),
            ),
        ];
        for (kind, submitted) in submissions {
            let big = plan(
                kind,
                &model,
                &submitted,
                &Inputs::none(),
                &Budget::default(),
            )
            .unwrap();
            let fine = plan(kind, &model, &submitted, &Inputs::none(), &small).unwrap();
            assert!(
                fine.chunks > big.chunks,
                "{kind}: {} vs {}",
                fine.chunks,
                big.chunks
            );
            // The chunk count follows from the resolved params alone: planning them again
            // under any budget gives the same plan.
            let replanned = plan(
                kind,
                &model,
                &fine.params,
                &Inputs::none(),
                &Budget::default(),
            )
            .unwrap();
            assert_eq!(replanned.chunks, fine.chunks, "{kind}");
        }
    }

    #[test]
    fn a_design_study_is_bit_identical_whatever_the_budgets_chunk_size() {
        let model = builtin_model("cristallo-msd3").unwrap();
        // Design chunks hold whole blocks of 16 384 samples.
        let submitted = serde_json::json!({ "samples": 40_000 });
        let small = Budget {
            chunk_work_units: 3 * 16_384,
            ..Budget::default()
        };
        let (a, ra) = run_all(StudyKind::Design, &model, &submitted, &Budget::default());
        let (b, rb) = run_all(StudyKind::Design, &model, &submitted, &small);
        assert_eq!(ra.chunks, 1);
        // One block a chunk would be 3 chunks; `even_chunking` makes it 2 of 2 blocks.
        assert_eq!(rb.chunks, 2);
        assert_eq!(a, b);
    }

    #[test]
    fn null_overrides_a_default_and_nested_objects_replace_the_default_whole() {
        let defaults = serde_json::json!({ "a": 1, "b": { "x": 1, "y": 2 }, "c": [1, 2] });
        let given = serde_json::json!({ "a": null, "b": { "x": 5 } });
        assert_eq!(
            with_defaults(&given, &defaults),
            serde_json::json!({ "a": null, "b": { "x": 5 }, "c": [1, 2] })
        );
        let not_object = serde_json::json!([1]);
        assert_eq!(with_defaults(&not_object, &defaults), not_object);
    }
}
