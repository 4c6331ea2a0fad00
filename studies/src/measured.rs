//! Owns the conversions between measured data as a study input (a [`NamedArray`] with the shared
//! column convention) and `dtop-calibrate`'s typed data: a measured FRF table to and from a
//! [`MeasuredFrf`], and a stored shaker test (`acceleration` with a `force` column) to the H1
//! FRF with its coherence. Parses no files (the CLI reads Cristallo's files with
//! `dtop-calibrate` and uploads [`frf_table`]); identifies nothing.
//!
//! The `frf` table: `frequency_hz` (increasing) first, then per measured floor k either the
//! pair `floor{k}_re`, `floor{k}_im` (accelerance, (m/s²)/N, e^{jωt} convention) or `floor{k}_db`
//! (magnitude only, dB re 1 (m/s²)/N), and optionally `floor{k}_coherence` (γ², 0..=1, of an
//! H1 estimate). Channels are in ascending floor order. The table does not say where the force
//! entered: the kinds take that from `params.input_floor`.

use std::collections::BTreeMap;

use dtop_calibrate::measured::C64;
use dtop_calibrate::{FrfValues, MeasuredFrf};
use rustfft::FftPlanner;

use crate::inputs::Inputs;
use crate::output::{Column, NamedArray};
use crate::problems::FieldProblem;
use crate::signal::{SegmentSpectra, bin_frequencies_hz, h1_and_coherence, hann};

/// The measured FRF as a study input table named `frf` (see the module header for the
/// columns). Channel c of `frf` is written under its floor `frf.output_floors[c]`; a
/// magnitude of exactly 0 has no dB value and is written as −∞, which [`crate::Inputs::new`]
/// refuses.
pub fn frf_table(frf: &MeasuredFrf) -> NamedArray {
    let mut columns = vec![Column {
        name: "frequency_hz".into(),
        values: frf.frequencies_hz.clone(),
    }];
    for (c, floor) in frf.output_floors.iter().enumerate() {
        match &frf.accelerance_m_s2_per_n {
            FrfValues::Complex { channels } => {
                let h = channels.get(c).map(Vec::as_slice).unwrap_or_default();
                columns.push(Column {
                    name: format!("floor{floor}_re"),
                    values: h.iter().map(|z| z.re).collect(),
                });
                columns.push(Column {
                    name: format!("floor{floor}_im"),
                    values: h.iter().map(|z| z.im).collect(),
                });
            }
            FrfValues::Magnitude { channels } => {
                let h = channels.get(c).map(Vec::as_slice).unwrap_or_default();
                columns.push(Column {
                    name: format!("floor{floor}_db"),
                    values: h.iter().map(|m| 20.0 * m.log10()).collect(),
                });
            }
        }
        if let Some(gamma) = frf.coherence.as_ref().and_then(|g| g.get(c)) {
            columns.push(Column {
                name: format!("floor{floor}_coherence"),
                values: gamma.clone(),
            });
        }
    }
    NamedArray {
        name: "frf".into(),
        columns,
    }
}

/// What one floor's columns of an `frf` table hold.
#[derive(Default)]
struct FloorColumns<'a> {
    re: Option<&'a [f64]>,
    im: Option<&'a [f64]>,
    db: Option<&'a [f64]>,
    coherence: Option<&'a [f64]>,
}

/// The floor and the quantity a column name like `floor2_re` stands for.
fn floor_column(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("floor")?;
    let (floor, what) = rest.split_once('_')?;
    let floor: usize = floor.parse().ok()?;
    matches!(what, "re" | "im" | "db" | "coherence").then_some((floor, what))
}

/// The measured FRF of an `frf` input table, with the force at floor 1 (set `input_floor`
/// afterwards). Every problem is reported at once under `inputs.frf.*`: a first column other
/// than `frequency_hz`, a column name outside the convention or given twice, a floor with `re`
/// but no `im` (or the reverse), a floor with both a complex pair and dB, a mix of complex and
/// dB floors, and every rule of [`MeasuredFrf::problems`] (increasing frequencies, enough
/// lines, coherence within 0..=1).
///
/// # Errors
/// Every problem found.
pub fn measured_frf(table: &NamedArray) -> Result<MeasuredFrf, Vec<FieldProblem>> {
    const FIELD: &str = "inputs.frf";
    let mut problems = Vec::new();
    let Some(first) = table.columns.first() else {
        return Err(vec![FieldProblem::new(
            FIELD,
            "has no columns: give frequency_hz, then floor{k}_re and floor{k}_im (or floor{k}_db) per measured floor",
        )]);
    };
    if first.name != "frequency_hz" {
        problems.push(FieldProblem::new(
            format!("{FIELD}.{}", first.name),
            "the first column must be frequency_hz (Hz, increasing)",
        ));
    }
    let mut floors: BTreeMap<usize, FloorColumns<'_>> = BTreeMap::new();
    for c in &table.columns[1..] {
        let field = format!("{FIELD}.{}", c.name);
        let Some((floor, what)) = floor_column(&c.name) else {
            problems.push(FieldProblem::new(
                field,
                "is not a column of a measured FRF: expected floor{k}_re, floor{k}_im, floor{k}_db or floor{k}_coherence with k a floor from 1",
            ));
            continue;
        };
        if floor == 0 {
            problems.push(FieldProblem::new(
                field,
                "floor 0 is the ground: floors are numbered from 1",
            ));
            continue;
        }
        let entry = floors.entry(floor).or_default();
        let slot = match what {
            "re" => &mut entry.re,
            "im" => &mut entry.im,
            "db" => &mut entry.db,
            _ => &mut entry.coherence,
        };
        if slot.replace(&c.values).is_some() {
            problems.push(FieldProblem::new(field, "is given twice"));
        }
    }
    if floors.is_empty() {
        problems.push(FieldProblem::new(
            FIELD,
            "has no measured floor: give floor{k}_re and floor{k}_im (or floor{k}_db) for at least one floor",
        ));
    }
    let mut complex = Vec::new();
    let mut magnitude = Vec::new();
    let mut coherence = Vec::new();
    for (&floor, cols) in &floors {
        let field = format!("{FIELD}.floor{floor}");
        match (cols.re, cols.im, cols.db) {
            (Some(re), Some(im), None) => complex.push(
                re.iter()
                    .zip(im)
                    .map(|(r, i)| C64::new(*r, *i))
                    .collect::<Vec<_>>(),
            ),
            (None, None, Some(db)) => {
                magnitude.push(db.iter().map(|d| 10f64.powf(d / 20.0)).collect::<Vec<_>>());
            }
            (None, None, None) => problems.push(FieldProblem::new(
                field,
                "has a coherence but no FRF: give floor{k}_re and floor{k}_im, or floor{k}_db",
            )),
            (Some(_), Some(_), Some(_)) => problems.push(FieldProblem::new(
                field,
                "has both a complex pair (_re, _im) and a magnitude (_db): give one of them",
            )),
            (re, _, _) => problems.push(FieldProblem::new(
                field,
                format!(
                    "has {} without {}: a complex FRF needs both floor{floor}_re and floor{floor}_im",
                    if re.is_some() { "_re" } else { "_im" },
                    if re.is_some() { "_im" } else { "_re" },
                ),
            )),
        }
        coherence.push(cols.coherence);
    }
    if !complex.is_empty() && !magnitude.is_empty() {
        problems.push(FieldProblem::new(
            FIELD,
            "mixes complex floors (_re, _im) and magnitude-only floors (_db): give every floor the same way (20·log10|H| of a complex FRF gives its dB)",
        ));
    }
    let has_coherence = coherence.iter().any(Option::is_some);
    if has_coherence && coherence.iter().any(Option::is_none) {
        problems.push(FieldProblem::new(
            FIELD,
            "gives floor{k}_coherence for some floors only: give it for every floor or for none",
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let frf = MeasuredFrf {
        frequencies_hz: first.values.clone(),
        input_floor: 1,
        output_floors: floors.keys().copied().collect(),
        accelerance_m_s2_per_n: if magnitude.is_empty() {
            FrfValues::Complex { channels: complex }
        } else {
            FrfValues::Magnitude {
                channels: magnitude,
            }
        },
        coherence: has_coherence.then(|| {
            coherence
                .iter()
                .map(|g| g.map(<[f64]>::to_vec).unwrap_or_default())
                .collect()
        }),
    };
    let problems: Vec<FieldProblem> = frf
        .problems()
        .into_iter()
        .map(|p| FieldProblem::new(FIELD, p))
        .collect();
    if problems.is_empty() {
        Ok(frf)
    } else {
        Err(problems)
    }
}

/// How a stored shaker test is turned into an FRF: Welch segments and the band kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct H1Settings {
    /// Segment length, in s (rounded to whole samples).
    pub segment_s: f64,
    /// Overlap of consecutive segments, a fraction in [0, 1).
    pub overlap: f64,
    /// Lines below this are dropped (0 Hz has no mobility), in Hz.
    pub f_min_hz: f64,
    /// Lines above this are dropped, in Hz.
    pub f_max_hz: f64,
}

impl H1Settings {
    /// Welch settings that always hold (20 s segments, half overlap, every line): what a kind
    /// reads its measurement with when its own settings are wrong, so the input's problems are
    /// still reported beside the parameters' and not drowned by them.
    pub fn lenient() -> Self {
        Self {
            segment_s: 20.0,
            overlap: 0.5,
            f_min_hz: 0.0,
            f_max_hz: f64::INFINITY,
        }
    }
}

/// Fewest Welch segments an H1 estimate may average: with one segment the coherence is 1 at
/// every line whatever the noise, so it says nothing.
pub const MIN_H1_SEGMENTS: usize = 4;

/// The H1 accelerance S_fx/S_ff and coherence γ² of every `floor{k}_accel` column of an
/// `acceleration` input against its `force` column (Hann-windowed Welch, `crate::signal`),
/// over `settings.f_min_hz..=f_max_hz`, force at floor 1 (set `input_floor` afterwards).
/// Every problem is reported at once under `inputs.acceleration.*`.
///
/// # Errors
/// A table without `time_s` first, uniform spacing, a `force` column or an accelerometer;
/// a record shorter than [`MIN_H1_SEGMENTS`] segments; a force without power in the band.
pub fn h1_frf(table: &NamedArray, settings: &H1Settings) -> Result<MeasuredFrf, Vec<FieldProblem>> {
    const FIELD: &str = "inputs.acceleration";
    let mut problems = Vec::new();
    let time = table.columns.first().filter(|c| c.name == "time_s");
    if time.is_none() {
        problems.push(FieldProblem::new(
            FIELD,
            "the first column must be time_s (seconds, uniformly spaced)",
        ));
    }
    let force = table.columns.iter().find(|c| c.name == "force");
    if force.is_none() {
        problems.push(FieldProblem::new(
            format!("{FIELD}.force"),
            "is missing: an FRF needs the force gauge's record (N); without it use an oma study",
        ));
    }
    let mut accels: Vec<(usize, &[f64])> = table
        .columns
        .iter()
        .filter_map(|c| {
            let floor: usize = c
                .name
                .strip_prefix("floor")?
                .strip_suffix("_accel")?
                .parse()
                .ok()?;
            Some((floor, c.values.as_slice()))
        })
        .collect();
    accels.sort_by_key(|a| a.0);
    if accels.is_empty() {
        problems.push(FieldProblem::new(
            FIELD,
            "has no accelerometer: give one floor{k}_accel column (m/s²) per measured floor",
        ));
    }
    if accels.iter().any(|a| a.0 == 0) {
        problems.push(FieldProblem::new(
            format!("{FIELD}.floor0_accel"),
            "floor 0 is the ground: floors are numbered from 1",
        ));
    }
    let mut sample_rate_hz = 0.0;
    if let Some(t) = time {
        let n = t.values.len();
        if n < 2 {
            problems.push(FieldProblem::new(
                format!("{FIELD}.time_s"),
                "has fewer than 2 samples",
            ));
        } else {
            let dt = (t.values[n - 1] - t.values[0]) / (n - 1) as f64;
            let uneven = t
                .values
                .windows(2)
                .position(|w| ((w[1] - w[0]) - dt).abs() > 1e-6 * dt.abs().max(f64::MIN_POSITIVE));
            if dt.is_nan() || dt <= 0.0 || uneven.is_some() {
                problems.push(FieldProblem::new(
                    format!("{FIELD}.time_s"),
                    format!(
                        "must increase in equal steps{}: give a gap-free record at one sample rate",
                        uneven.map_or(String::new(), |i| format!(
                            " (row {} breaks the step)",
                            i + 1
                        ))
                    ),
                ));
            } else {
                sample_rate_hz = 1.0 / dt;
            }
        }
    }
    let segment_samples = (settings.segment_s * sample_rate_hz).round() as usize;
    let rows = table.rows();
    if sample_rate_hz > 0.0 {
        let overlap = (settings.overlap * segment_samples as f64).round() as usize;
        let step = segment_samples.saturating_sub(overlap).max(1);
        let segments = if rows >= segment_samples && segment_samples > 0 {
            (rows - segment_samples) / step + 1
        } else {
            0
        };
        if segment_samples < 8 {
            problems.push(FieldProblem::new(
                "params.segment_s",
                format!(
                    "{} s is {segment_samples} samples at {sample_rate_hz} Hz; give at least 8",
                    settings.segment_s
                ),
            ));
        } else if segments < MIN_H1_SEGMENTS {
            problems.push(FieldProblem::new(
                FIELD,
                format!(
                    "{:.3} s of data give {segments} Welch segments of {} s; H1 and its coherence need at least {MIN_H1_SEGMENTS}: give a longer record or lower params.segment_s",
                    rows as f64 / sample_rate_hz,
                    settings.segment_s
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some(force) = force else {
        return Err(problems);
    };
    let window = hann(segment_samples);
    let overlap = (settings.overlap * segment_samples as f64).round() as usize;
    let mut planner = FftPlanner::new();
    let force_spectra = SegmentSpectra::new(
        &force.values,
        &window,
        overlap,
        sample_rate_hz,
        &mut planner,
    );
    let bins = bin_frequencies_hz(segment_samples, sample_rate_hz);
    let keep: Vec<usize> = (0..bins.len())
        .filter(|&k| bins[k] > 0.0 && bins[k] >= settings.f_min_hz && bins[k] <= settings.f_max_hz)
        .collect();
    let mut channels = Vec::with_capacity(accels.len());
    let mut coherence = Vec::with_capacity(accels.len());
    for (_, x) in &accels {
        let response = SegmentSpectra::new(x, &window, overlap, sample_rate_hz, &mut planner);
        let (h, gamma) = h1_and_coherence(&force_spectra, &response);
        channels.push(keep.iter().map(|&k| h[k]).collect::<Vec<_>>());
        coherence.push(
            keep.iter()
                .map(|&k| gamma[k].clamp(0.0, 1.0))
                .collect::<Vec<_>>(),
        );
    }
    let s_ff = force_spectra.power();
    if keep.iter().all(|&k| s_ff[k] <= 0.0) {
        return Err(vec![FieldProblem::new(
            format!("{FIELD}.force"),
            "has no power in the band: the shaker did not excite it; check the force channel or the band",
        )]);
    }
    let frf = MeasuredFrf {
        frequencies_hz: keep.iter().map(|&k| bins[k]).collect(),
        input_floor: 1,
        output_floors: accels.iter().map(|a| a.0).collect(),
        accelerance_m_s2_per_n: FrfValues::Complex { channels },
        coherence: Some(coherence),
    };
    let problems: Vec<FieldProblem> = frf
        .problems()
        .into_iter()
        .map(|p| FieldProblem::new(FIELD, p))
        .collect();
    if problems.is_empty() {
        Ok(frf)
    } else {
        Err(problems)
    }
}

/// Where a study's measured FRF came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An `frf` input (a measured FRF file).
    Frf,
    /// An `acceleration` input with a `force` column (a stored shaker test), turned into H1.
    ShakerTest,
}

impl Source {
    /// The input's name.
    pub fn input_name(self) -> &'static str {
        match self {
            Source::Frf => "frf",
            Source::ShakerTest => "acceleration",
        }
    }
}

/// The measured FRF of a study that takes an `frf` input or an `acceleration` input with a
/// `force` column (exactly one of them), with the force at `input_floor`.
///
/// # Errors
/// Neither or both inputs given, and every problem of the one given.
pub fn measurement(
    inputs: &Inputs,
    h1: &H1Settings,
    input_floor: usize,
) -> Result<(MeasuredFrf, Source), Vec<FieldProblem>> {
    let (mut frf, source) = match (inputs.get("frf"), inputs.get("acceleration")) {
        (Some(table), None) => (measured_frf(table)?, Source::Frf),
        (None, Some(table)) => (h1_frf(table, h1)?, Source::ShakerTest),
        (None, None) => {
            return Err(vec![FieldProblem::new(
                "inputs",
                "a measurement is required: give an frf input (a measured FRF, e.g. a Cristallo file uploaded by the CLI) or an acceleration input with a force column (a stored shaker test)",
            )]);
        }
        (Some(_), Some(_)) => {
            return Err(vec![FieldProblem::new(
                "inputs",
                "give either frf or acceleration, not both: the study compares one measurement",
            )]);
        }
    };
    frf.input_floor = input_floor;
    Ok((frf, source))
}

/// Every measured floor of `frf` and its input floor that `floors` (the model's) lacks,
/// under `inputs.<input>` and `params.input_floor`.
pub fn floor_problems(frf: &MeasuredFrf, source: Source, floors: usize) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    for &f in &frf.output_floors {
        if f > floors {
            problems.push(FieldProblem::new(
                format!("inputs.{}.floor{f}", source.input_name()),
                format!(
                    "floor {f} is not a floor of the {floors}-floor model: measure floors 1..={floors} or pick the model of this rig"
                ),
            ));
        }
    }
    if frf.input_floor == 0 || frf.input_floor > floors {
        problems.push(FieldProblem::new(
            "params.input_floor",
            format!(
                "floor {} does not exist; floors are 1..={floors}",
                frf.input_floor
            ),
        ));
    }
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use dtop_calibrate::{AccelerationUnit, parse_complex_accelerance, parse_db_accelerance};

    use super::*;

    /// A file of `shared/data/cristallo/`, found beside an ancestor of this crate (the
    /// worktree's or the main checkout's parent) or under `DTOP_CRISTALLO_DATA`, as
    /// dtop-calibrate's tests find it.
    pub(crate) fn cristallo_file(name: &str) -> String {
        let dir = std::env::var_os("DTOP_CRISTALLO_DATA")
            .map(PathBuf::from)
            .or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .ancestors()
                    .map(|a| a.join("shared/data/cristallo"))
                    .find(|p| p.is_dir())
            })
            .expect("shared/data/cristallo must be reachable, or set DTOP_CRISTALLO_DATA");
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    fn table(columns: &[(&str, Vec<f64>)]) -> NamedArray {
        NamedArray {
            name: "frf".into(),
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
    fn the_measured_southampton_files_round_trip_through_the_input_table() {
        let unit = AccelerationUnit::MetrePerSecondSquared;
        let complex = parse_complex_accelerance(&cristallo_file("Experimental.csv"), unit).unwrap();
        let t = frf_table(&complex);
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "frequency_hz",
                "floor1_re",
                "floor1_im",
                "floor2_re",
                "floor2_im",
                "floor3_re",
                "floor3_im"
            ]
        );
        assert!(crate::Inputs::new(vec![t.clone()]).is_ok());
        // Re and Im are copied, so the complex file comes back bit for bit.
        assert_eq!(measured_frf(&t).unwrap(), complex);

        let db = parse_db_accelerance(&cristallo_file("ExpDataSo.csv"), unit).unwrap();
        let t = frf_table(&db);
        assert!(crate::Inputs::new(vec![t.clone()]).is_ok());
        let back = measured_frf(&t).unwrap();
        assert_eq!(back.frequencies_hz, db.frequencies_hz);
        assert_eq!(back.output_floors, vec![1, 2, 3]);
        // 20·log10 then 10^(x/20): a few ulps of relative error per step.
        for c in 0..3 {
            for (a, b) in back.magnitude(c).iter().zip(db.magnitude(c)) {
                assert!((a / b - 1.0).abs() < 1e-12, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn every_problem_of_a_malformed_frf_table_is_reported_at_once() {
        let f: Vec<f64> = (1..=10).map(f64::from).collect();
        let one = vec![1.0; 10];
        let problems = measured_frf(&table(&[
            ("freq", f.clone()),
            ("floor1_re", one.clone()),
            ("floor2_im", one.clone()),
            ("floor3_db", one.clone()),
            ("floor3_re", one.clone()),
            ("floor3_im", one.clone()),
            ("floor0_db", one.clone()),
            ("wibble", one.clone()),
        ]))
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "inputs.frf.freq",
                "inputs.frf.floor0_db",
                "inputs.frf.wibble",
                "inputs.frf.floor1",
                "inputs.frf.floor2",
                "inputs.frf.floor3",
            ],
            "{problems:#?}"
        );
        // Decreasing frequencies and a mix of complex and dB floors.
        let mut down = f.clone();
        down.reverse();
        let problems = measured_frf(&table(&[
            ("frequency_hz", down),
            ("floor1_re", one.clone()),
            ("floor1_im", one.clone()),
            ("floor2_db", one.clone()),
        ]))
        .unwrap_err();
        assert!(problems[0].message.contains("mixes"), "{problems:#?}");
        let problems = measured_frf(&table(&[
            ("frequency_hz", f.iter().rev().copied().collect()),
            ("floor1_db", one.clone()),
        ]))
        .unwrap_err();
        assert!(problems[0].message.contains("increase"), "{problems:#?}");
    }
}
