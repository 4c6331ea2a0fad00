//! Owns reading the `oma` study's measured record out of `inputs.acceleration`: the time
//! column (uniform spacing, the sample rate, the first gap), the channels (given or every
//! `floor{k}_accel`, each a floor of the model) and their health (dead, clipped). Every
//! problem is reported at once, each naming where it is and what to do. Identifies nothing.

use serde::{Deserialize, Serialize};

use crate::output::NamedArray;
use crate::problems::FieldProblem;
use crate::{InputSpec, Inputs};

use super::params::Params;

/// The input this kind reads.
pub const INPUT: &str = "acceleration";

/// What `oma` takes.
pub const INPUTS: &[InputSpec] = &[InputSpec {
    name: INPUT,
    required: true,
    description: "a measured time record: `time_s` (s, uniformly spaced) first, then one \
                  column per accelerometer named `floor{k}_accel` (m/s²); a `force` column \
                  may be present and is ignored (OMA is output only)",
}];

/// A step of the time column is a gap (or a jump back) when it differs from the record's
/// median step by more than this fraction. A missing sample is a 100 % step; time stamps
/// written with microsecond resolution at 1 kHz wobble by 0.1 %.
const STEP_TOLERANCE: f64 = 0.01;

/// A channel is clipped when a run of at least this many consecutive samples sits exactly at
/// its maximum or minimum (a continuous signal passes its extreme once), or when
/// `dtop-oma`'s count rule holds (see [`dtop_oma::record::CLIPPED_MIN_FRACTION`]).
const CLIPPED_MIN_RUN: usize = dtop_oma::record::CLIPPED_MIN_SAMPLES;

/// A record ready for identification.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The channels used, one `Vec` per channel, in [`RecordFacts::channels`]' order, m/s².
    pub data: Vec<Vec<f64>>,
    /// What the study reports about the record.
    pub facts: RecordFacts,
}

/// The record's facts, as the summary reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFacts {
    /// Samples per channel.
    pub samples: usize,
    /// Sample rate, Hz: from the time column's span when its steps are uniform.
    pub sample_rate_hz: f64,
    /// Samples × sample period, s.
    pub duration_s: f64,
    /// Column names of the channels used, in the order given (or of the input).
    pub channels: Vec<String>,
    /// The floor (1-based) of each channel.
    pub floors: Vec<usize>,
}

/// The floor of an accelerometer column named `floor{k}_accel`.
pub fn floor_of(column: &str) -> Option<usize> {
    let digits = column.strip_prefix("floor")?.strip_suffix("_accel")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads and checks the record for a model of `model_floors` floors.
///
/// # Errors
/// Every problem with the input and with `params.channels`.
pub fn read(
    inputs: &Inputs,
    params: &Params,
    model_floors: usize,
) -> Result<Record, Vec<FieldProblem>> {
    let field = format!("inputs.{INPUT}");
    let Some(table) = inputs.get(INPUT) else {
        return Err(vec![FieldProblem::new(
            field,
            format!("is required: {}", INPUTS[0].description),
        )]);
    };
    let mut problems = Vec::new();
    let sample_rate_hz = time_axis(table, &field, &mut problems);
    let selected = select_channels(table, params, model_floors, &field, &mut problems);
    // A time column with gaps still locates a clipped run; another first column does not.
    let times = table
        .columns
        .first()
        .filter(|c| c.name == "time_s")
        .map(|c| c.values.as_slice());
    for &(column, _) in &selected {
        channel_health(table, column, times, &field, &mut problems);
    }
    let (Some(sample_rate_hz), true) = (sample_rate_hz, problems.is_empty()) else {
        return Err(problems);
    };
    let samples = table.rows();
    Ok(Record {
        data: selected
            .iter()
            .map(|&(c, _)| table.columns[c].values.clone())
            .collect(),
        facts: RecordFacts {
            samples,
            sample_rate_hz,
            duration_s: samples as f64 / sample_rate_hz,
            channels: selected
                .iter()
                .map(|&(c, _)| table.columns[c].name.clone())
                .collect(),
            floors: selected.iter().map(|&(_, floor)| floor).collect(),
        },
    })
}

/// The sample rate, Hz, or `None` with the problems pushed.
fn time_axis(table: &NamedArray, field: &str, problems: &mut Vec<FieldProblem>) -> Option<f64> {
    let first = table.columns.first()?;
    if first.name != "time_s" {
        problems.push(FieldProblem::new(
            format!("{field}.{}", first.name),
            format!(
                "the first column is `{}`; it must be `time_s` (seconds, uniformly spaced), \
                 then one `floor{{k}}_accel` column per accelerometer",
                first.name
            ),
        ));
        return None;
    }
    let t = first.values.as_slice();
    if t.len() < 2 {
        problems.push(FieldProblem::new(
            field,
            format!(
                "has {} rows: give a record of at least several minutes",
                t.len()
            ),
        ));
        return None;
    }
    let mut steps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let mid = steps.len() / 2;
    let median_s = *steps.select_nth_unstable_by(mid, f64::total_cmp).1;
    if !(median_s > 0.0 && median_s.is_finite()) {
        problems.push(FieldProblem::new(
            format!("{field}.time_s"),
            "does not increase: give the samples in time order, one row per sample",
        ));
        return None;
    }
    let irregular = |w: &[f64]| ((w[1] - w[0]) - median_s).abs() > STEP_TOLERANCE * median_s;
    let count = t.windows(2).filter(|w| irregular(w)).count();
    if let Some(row) = t.windows(2).position(irregular) {
        let step_s = t[row + 1] - t[row];
        let what = if step_s > median_s {
            let missing = (step_s / median_s).round() - 1.0;
            format!(
                "the first gap is at t = {} s (row {row}): {step_s:.6} s to the next sample, \
                 about {missing} samples missing",
                t[row]
            )
        } else {
            format!(
                "the first irregular step is at t = {} s (row {row}): {step_s:.6} s to the \
                 next sample (repeated or out-of-order rows)",
                t[row]
            )
        };
        problems.push(FieldProblem::new(
            format!("{field}.time_s"),
            format!(
                "is not uniformly spaced ({median_s:.6} s between samples): {what}; {count} \
                 irregular step(s) in all. Export a range without gaps"
            ),
        ));
        return None;
    }
    let span_s = t[t.len() - 1] - t[0];
    Some((t.len() - 1) as f64 / span_s)
}

/// The columns to use (index in the table, floor), with a problem pushed for each channel
/// that cannot be used (the usable ones are still returned, so their health is checked too).
fn select_channels(
    table: &NamedArray,
    params: &Params,
    model_floors: usize,
    field: &str,
    problems: &mut Vec<FieldProblem>,
) -> Vec<(usize, usize)> {
    let before = problems.len();
    let column_list = || {
        table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let floor_problem = |floor: usize| {
        format!(
            "is floor {floor} but the model has floors 1..={model_floors}: choose the model of \
             this rig, or leave the channel out with params.channels"
        )
    };
    let mut selected = Vec::new();
    match &params.channels {
        Some(names) => {
            if names.is_empty() {
                problems.push(FieldProblem::new(
                    "params.channels",
                    "is empty: name at least one `floor{k}_accel` column, or leave it null \
                     for all of them",
                ));
            }
            for (i, name) in names.iter().enumerate() {
                let here = format!("params.channels[{i}]");
                if names[..i].contains(name) {
                    problems.push(FieldProblem::new(here, format!("`{name}` is named twice")));
                    continue;
                }
                let Some(floor) = floor_of(name) else {
                    problems.push(FieldProblem::new(
                        here,
                        format!(
                            "`{name}` is not an accelerometer column: OMA uses `floor{{k}}_accel` \
                             columns (output only; `force` and others are ignored)"
                        ),
                    ));
                    continue;
                };
                let Some(column) = table.columns.iter().position(|c| &c.name == name) else {
                    problems.push(FieldProblem::new(
                        here,
                        format!(
                            "`{name}` is not a column of {field}; its columns are {}",
                            column_list()
                        ),
                    ));
                    continue;
                };
                if floor == 0 || floor > model_floors {
                    problems.push(FieldProblem::new(here, floor_problem(floor)));
                    continue;
                }
                selected.push((column, floor));
            }
        }
        None => {
            for (column, c) in table.columns.iter().enumerate() {
                if let Some(floor) = floor_of(&c.name) {
                    if floor == 0 {
                        // A base accelerometer measures the ground's motion (the input under
                        // base excitation), not a floor's: it is left out unless named.
                        continue;
                    }
                    if floor > model_floors {
                        problems.push(FieldProblem::new(
                            format!("{field}.{}", c.name),
                            floor_problem(floor),
                        ));
                    } else {
                        selected.push((column, floor));
                    }
                }
            }
            if selected.is_empty() && problems.len() == before {
                problems.push(FieldProblem::new(
                    field,
                    format!(
                        "has no `floor{{k}}_accel` column (its columns are {}): rename the \
                         accelerometer columns, or name them in params.channels",
                        column_list()
                    ),
                ));
            }
        }
    }
    selected
}

/// Pushes a problem if the channel is dead (constant) or clipped.
fn channel_health(
    table: &NamedArray,
    column: usize,
    times: Option<&[f64]>,
    field: &str,
    problems: &mut Vec<FieldProblem>,
) {
    let c = &table.columns[column];
    let here = format!("{field}.{}", c.name);
    let x = c.values.as_slice();
    let (min, max) = x
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if min == max {
        problems.push(FieldProblem::new(
            here,
            format!(
                "is constant at {min} m/s² over the whole record: a dead or disconnected \
                 sensor; leave it out with params.channels"
            ),
        ));
        return;
    }
    let count_threshold = dtop_oma::record::CLIPPED_MIN_SAMPLES
        .max((dtop_oma::record::CLIPPED_MIN_FRACTION * x.len() as f64).ceil() as usize);
    for (what, rail) in [("maximum", max), ("minimum", min)] {
        let at_rail = x.iter().filter(|&&v| v == rail).count();
        let (start, run) = longest_run(x, rail);
        if at_rail >= count_threshold || run >= CLIPPED_MIN_RUN {
            problems.push(FieldProblem::new(
                &here,
                format!(
                    "looks clipped (saturated) at its {what} {rail} m/s²: {at_rail} samples \
                     ({:.2} %) sit exactly there, the longest run {run} samples from row \
                     {start}{}; lower the sensor gain or raise its range, or leave the channel \
                     out with params.channels",
                    100.0 * at_rail as f64 / x.len() as f64,
                    times
                        .and_then(|t| t.get(start))
                        .map_or_else(String::new, |t| format!(" (t = {t} s)")),
                ),
            ));
        }
    }
}

/// The start and length of the longest run of consecutive samples equal to `value`.
fn longest_run(x: &[f64], value: f64) -> (usize, usize) {
    let (mut best, mut current) = ((0, 0), (0, 0));
    for (i, &v) in x.iter().enumerate() {
        if v == value {
            if current.1 == 0 {
                current.0 = i;
            }
            current.1 += 1;
            if current.1 > best.1 {
                best = current;
            }
        } else {
            current.1 = 0;
        }
    }
    best
}
