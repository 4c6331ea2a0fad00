//! Owns measured FRFs as typed data and their two text formats (Cristallo's complex `;` files
//! and its dB `,` files). Parses `&str`; never opens a file. Converts g to m/s² once, here.

use nalgebra::Complex;
use serde::{Deserialize, Serialize};

use crate::error::{CalibrateError, ParseProblem};

/// A complex number of f64.
pub type C64 = Complex<f64>;

/// Standard gravity (ISO 80000-3, CGPM 1901), in m/s²: the "g" of accelerometer units and of
/// Cristallo's g/N files.
pub const STANDARD_GRAVITY_M_S2: f64 = 9.80665;

/// The unit of the acceleration in an FRF file's numbers (per newton of force).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccelerationUnit {
    /// Standard gravity g = 9.80665 m/s² ([`STANDARD_GRAVITY_M_S2`]): the unit the Cristallo
    /// README gives for its FRF files (g/N).
    StandardGravity,
    /// m/s². The Southampton files read this way give floor masses of 5.06–5.22 kg from the
    /// driving-point modal constants, against the published 5.201 kg; read as g/N they give
    /// 0.52–0.53 kg (a test shows both), so these files are most likely in (m/s²)/N whatever
    /// the README says.
    MetrePerSecondSquared,
}

impl AccelerationUnit {
    /// One unit in m/s².
    pub const fn in_m_s2(self) -> f64 {
        match self {
            Self::StandardGravity => STANDARD_GRAVITY_M_S2,
            Self::MetrePerSecondSquared => 1.0,
        }
    }
}

/// At most this many parse problems are listed in [`CalibrateError::Parse`]; the total is
/// always counted. A wholly wrong file (say, the wrong format) would otherwise produce one
/// message per cell.
pub const MAX_REPORTED_PROBLEMS: usize = 20;

/// Fewest frequency lines a measured FRF may have: fewer cannot hold a resonance and the
/// points either side of it.
pub const MIN_FRF_POINTS: usize = 8;

/// The accelerance values of every channel, with or without phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrfValues {
    /// Complex accelerance, in (m/s²)/N; `channels[c][i]` is channel `c` at frequency `i`.
    /// Serialised as `[re, im]` pairs.
    Complex {
        /// One vector per channel, one value per frequency line.
        #[serde(with = "complex_pairs")]
        channels: Vec<Vec<C64>>,
    },
    /// Accelerance magnitude only (phase unknown), in (m/s²)/N.
    Magnitude {
        /// One vector per channel, one value per frequency line.
        channels: Vec<Vec<f64>>,
    },
}

/// Measured accelerance FRFs from one input force to several floor accelerometers, in the
/// e^{jωt} phase convention (a response x(t) = Re(X·e^{jωt}) to f(t) = Re(F·e^{jωt}) has
/// H = X/F; a viscous mode's mobility then sweeps its circle clockwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredFrf {
    /// Frequency lines, strictly increasing, zero or positive, in Hz.
    pub frequencies_hz: Vec<f64>,
    /// Floor (1-based) where the force enters.
    pub input_floor: usize,
    /// Floor (1-based) of each channel's accelerometer, in channel order.
    pub output_floors: Vec<usize>,
    /// The responses, in (m/s²)/N.
    pub accelerance_m_s2_per_n: FrfValues,
    /// Ordinary coherence γ² (0..=1) of each channel at each line, `coherence[c][i]`, when
    /// the FRF is an H1 estimate from a shaker test; the fits use it to drop or down-weight
    /// lines where the response is not explained by the force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coherence: Option<Vec<Vec<f64>>>,
}

impl MeasuredFrf {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        match &self.accelerance_m_s2_per_n {
            FrfValues::Complex { channels } => channels.len(),
            FrfValues::Magnitude { channels } => channels.len(),
        }
    }

    /// True when the phase is known (complex values).
    pub fn has_phase(&self) -> bool {
        matches!(self.accelerance_m_s2_per_n, FrfValues::Complex { .. })
    }

    /// The complex accelerance per channel, when the phase is known.
    pub fn complex(&self) -> Option<&[Vec<C64>]> {
        match &self.accelerance_m_s2_per_n {
            FrfValues::Complex { channels } => Some(channels),
            FrfValues::Magnitude { .. } => None,
        }
    }

    /// |accelerance| of one channel, in (m/s²)/N; empty for a channel that does not exist.
    pub fn magnitude(&self, channel: usize) -> Vec<f64> {
        match &self.accelerance_m_s2_per_n {
            FrfValues::Complex { channels } => channels
                .get(channel)
                .map(|c| c.iter().map(|h| h.norm()).collect())
                .unwrap_or_default(),
            FrfValues::Magnitude { channels } => channels.get(channel).cloned().unwrap_or_default(),
        }
    }

    /// The same data in the opposite phase convention (every complex value conjugated):
    /// converts FRFs computed with e^{−jωt} to the e^{jωt} convention this crate uses.
    #[must_use]
    pub fn conjugated(&self) -> Self {
        let mut out = self.clone();
        if let FrfValues::Complex { channels } = &mut out.accelerance_m_s2_per_n {
            for h in channels.iter_mut().flatten() {
                *h = h.conj();
            }
        }
        out
    }

    /// Index of the channel measured at the input floor (the driving point), if any.
    pub fn driving_point_channel(&self) -> Option<usize> {
        self.output_floors
            .iter()
            .position(|&floor| floor == self.input_floor)
    }

    /// Every rule this data breaks, as sentences; empty when it is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let n = self.frequencies_hz.len();
        if n < MIN_FRF_POINTS {
            problems.push(format!(
                "frequencies_hz has {n} lines; at least {MIN_FRF_POINTS} are needed"
            ));
        }
        let mut reported_order = false;
        for (i, &f) in self.frequencies_hz.iter().enumerate() {
            if !(f.is_finite() && f >= 0.0) {
                problems.push(format!(
                    "frequencies_hz[{i}] = {f} must be finite and zero or positive"
                ));
            } else if i > 0 && !reported_order && f <= self.frequencies_hz[i - 1] {
                // One report is enough: a shuffled grid would otherwise flood the list.
                reported_order = true;
                problems.push(format!(
                    "frequencies_hz must increase strictly: line {i} ({f} Hz) follows {} Hz",
                    self.frequencies_hz[i - 1]
                ));
            }
        }
        if self.input_floor == 0 {
            problems.push("input_floor is 1-based: 0 is the ground, not a floor".into());
        }
        if self.output_floors.len() != self.channels() {
            problems.push(format!(
                "output_floors has {} entries for {} channels",
                self.output_floors.len(),
                self.channels()
            ));
        }
        if self.channels() == 0 {
            problems.push("the FRF has no channels".into());
        }
        if self.output_floors.contains(&0) {
            problems.push("output_floors are 1-based: 0 is the ground, not a floor".into());
        }
        let lengths_and_finite: Vec<(usize, bool)> = match &self.accelerance_m_s2_per_n {
            FrfValues::Complex { channels } => channels
                .iter()
                .map(|c| {
                    (
                        c.len(),
                        c.iter().all(|h| h.re.is_finite() && h.im.is_finite()),
                    )
                })
                .collect(),
            FrfValues::Magnitude { channels } => channels
                .iter()
                .map(|c| (c.len(), c.iter().all(|h| h.is_finite() && *h >= 0.0)))
                .collect(),
        };
        if let Some(coherence) = &self.coherence {
            if coherence.len() != self.channels() {
                problems.push(format!(
                    "coherence has {} channels for {} channels of data",
                    coherence.len(),
                    self.channels()
                ));
            }
            for (c, gamma) in coherence.iter().enumerate() {
                if gamma.len() != n {
                    problems.push(format!(
                        "coherence of channel {c} has {} values for {n} frequency lines",
                        gamma.len()
                    ));
                }
                if !gamma.iter().all(|g| (0.0..=1.0).contains(g)) {
                    problems.push(format!(
                        "coherence of channel {c} has a value outside 0..=1 (or not finite)"
                    ));
                }
            }
        }
        for (c, (len, finite)) in lengths_and_finite.into_iter().enumerate() {
            if len != n {
                problems.push(format!(
                    "channel {c} has {len} values for {n} frequency lines"
                ));
            }
            if !finite {
                problems.push(format!(
                    "channel {c} has a value that is not finite (or a negative magnitude)"
                ));
            }
        }
        problems
    }

    /// Checks every rule at once.
    ///
    /// # Errors
    /// [`CalibrateError::Invalid`] listing every problem.
    pub fn validate(&self) -> Result<(), CalibrateError> {
        crate::error::check(self.problems())
    }
}

/// Parses Cristallo's complex accelerance files (`Experimental.csv`, `test_2.csv`,
/// `test_3.csv`, `dtApp/dtData/frfs/*.csv`): no header, one line per frequency,
/// `;`-separated Python complex numbers `f+0j;H1;H2;...`, f in Hz and H in `unit` per newton
/// (g/N according to the Cristallo README; see [`AccelerationUnit::MetrePerSecondSquared`]).
///
/// The values are converted to (m/s²)/N, once, here. Channel `c` is the
/// accelerometer on floor `c + 1` and the force enters at floor 1 (the Southampton set-up);
/// change `input_floor` and `output_floors` afterwards for another set-up.
///
/// # Errors
/// [`CalibrateError::Parse`] naming the line and column of every bad cell (the first
/// [`MAX_REPORTED_PROBLEMS`] of them), or [`CalibrateError::Invalid`] if the parsed data is
/// unusable (too few lines).
pub fn parse_complex_accelerance(
    text: &str,
    unit: AccelerationUnit,
) -> Result<MeasuredFrf, CalibrateError> {
    let rows = parse_rows(text, ';', |field| {
        parse_complex(field).and_then(|z| {
            if z.re.is_finite() && z.im.is_finite() {
                Ok(z)
            } else {
                Err(format!("`{field}` is not finite"))
            }
        })
    })?;
    let channels = rows.channels(|h| h * unit.in_m_s2());
    finish(rows.frequencies_hz, FrfValues::Complex { channels })
}

/// Parses Cristallo's dB magnitude files (`ExpDataSo.csv`, `ExpDataSw.csv`): no header,
/// `f_Hz,dB1,dB2,...`, each dB value 20·log10 of the accelerance magnitude in `unit` per
/// newton (the dB columns of `ExpDataSo.csv` equal 20·log10|H| of `Experimental.csv` in that
/// file's unit, which is how the reference was established; a test checks it).
///
/// Magnitudes are converted to (m/s²)/N; channel `c` is floor `c + 1`, the force at floor 1.
///
/// # Errors
/// As [`parse_complex_accelerance`].
pub fn parse_db_accelerance(
    text: &str,
    unit: AccelerationUnit,
) -> Result<MeasuredFrf, CalibrateError> {
    let rows = parse_rows(text, ',', |field| {
        let db: f64 = field
            .trim()
            .parse()
            .map_err(|_| format!("`{field}` is not a number"))?;
        if db.is_finite() {
            Ok(C64::new(db, 0.0))
        } else {
            Err(format!("`{field}` is not finite"))
        }
    })?;
    let channels = rows.channels(|db| 10f64.powf(db.re / 20.0) * unit.in_m_s2());
    finish(rows.frequencies_hz, FrfValues::Magnitude { channels })
}

fn finish(frequencies_hz: Vec<f64>, values: FrfValues) -> Result<MeasuredFrf, CalibrateError> {
    let channels = match &values {
        FrfValues::Complex { channels } => channels.len(),
        FrfValues::Magnitude { channels } => channels.len(),
    };
    let frf = MeasuredFrf {
        frequencies_hz,
        input_floor: 1,
        output_floors: (1..=channels).collect(),
        accelerance_m_s2_per_n: values,
        coherence: None,
    };
    frf.validate()?;
    Ok(frf)
}

struct Rows {
    frequencies_hz: Vec<f64>,
    values: Vec<Vec<C64>>,
}

impl Rows {
    /// The values column by column (channel `c` is column `c + 1` of the file), each mapped
    /// by `f`.
    fn channels<T>(&self, f: impl Fn(C64) -> T) -> Vec<Vec<T>> {
        let n = self.values.first().map_or(0, Vec::len);
        (0..n)
            .map(|c| {
                self.values
                    .iter()
                    .filter_map(|row| row.get(c).copied().map(&f))
                    .collect()
            })
            .collect()
    }
}

/// Splits `text` into rows of `separator`-separated cells: the first is a frequency (a real
/// number, or a complex one with zero imaginary part), the rest go through `cell`. Blank lines
/// are skipped. Every row must have as many cells as the first data row.
fn parse_rows(
    text: &str,
    separator: char,
    cell: impl Fn(&str) -> Result<C64, String>,
) -> Result<Rows, CalibrateError> {
    let mut problems = Vec::new();
    let mut total = 0usize;
    let mut report = |line: usize, column: usize, message: String| {
        total += 1;
        if problems.len() < MAX_REPORTED_PROBLEMS {
            problems.push(ParseProblem {
                line,
                column,
                message,
            });
        }
    };
    let mut frequencies_hz = Vec::new();
    let mut values = Vec::new();
    let mut width: Option<usize> = None;
    let mut previous_hz: Option<f64> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let fields: Vec<&str> = trimmed.split(separator).collect();
        let expected = *width.get_or_insert(fields.len());
        if fields.len() < 2 {
            report(
                line,
                0,
                format!(
                    "found {} field(s); a line needs a frequency and at least one channel, \
                     separated by `{separator}`",
                    fields.len()
                ),
            );
            continue;
        }
        if fields.len() != expected {
            report(
                line,
                0,
                format!(
                    "found {} fields but the first line has {expected}",
                    fields.len()
                ),
            );
            continue;
        }
        let mut row_ok = true;
        let frequency = match parse_complex(fields[0]) {
            Ok(z) if z.im != 0.0 => {
                report(
                    line,
                    1,
                    format!("frequency `{}` has a non-zero imaginary part", fields[0]),
                );
                None
            }
            Ok(z) if !(z.re.is_finite() && z.re >= 0.0) => {
                report(
                    line,
                    1,
                    format!(
                        "frequency `{}` must be finite and zero or positive",
                        fields[0]
                    ),
                );
                None
            }
            Ok(z) => Some(z.re),
            Err(message) => {
                report(line, 1, message);
                None
            }
        };
        if let (Some(f), Some(before)) = (frequency, previous_hz)
            && f <= before
        {
            report(
                line,
                1,
                format!("frequency {f} Hz does not increase (the line before has {before} Hz)"),
            );
            row_ok = false;
        }
        let mut row = Vec::with_capacity(fields.len() - 1);
        for (c, field) in fields.iter().enumerate().skip(1) {
            match cell(field) {
                Ok(z) => row.push(z),
                Err(message) => {
                    report(line, c + 1, message);
                    row_ok = false;
                }
            }
        }
        if let Some(f) = frequency {
            previous_hz = Some(f);
            if row_ok {
                frequencies_hz.push(f);
                values.push(row);
            }
        }
    }
    if total > 0 {
        return Err(CalibrateError::Parse { problems, total });
    }
    if values.is_empty() {
        return Err(CalibrateError::Parse {
            problems: vec![ParseProblem {
                line: 0,
                column: 0,
                message: "the text has no data lines".into(),
            }],
            total: 1,
        });
    }
    Ok(Rows {
        frequencies_hz,
        values,
    })
}

/// Parses a Python-style complex number: `1.5`, `2j`, `-0.5+1e-3j`, `(1-2j)`.
fn parse_complex(field: &str) -> Result<C64, String> {
    let t = field.trim();
    let t = t
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(t);
    let bad = || format!("`{field}` is not a number (expected a complex like 1.5-0.2j)");
    if t.is_empty() {
        return Err(format!("empty field `{field}`"));
    }
    let Some(body) = t.strip_suffix(['j', 'J']) else {
        return t
            .parse::<f64>()
            .map(|re| C64::new(re, 0.0))
            .map_err(|_| bad());
    };
    let bytes = body.as_bytes();
    // The sign that starts the imaginary part: the last `+`/`-` that is not the first character
    // and not an exponent's sign.
    let split = (1..bytes.len())
        .rev()
        .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    match split {
        Some(i) => {
            let re = body[..i].parse::<f64>().map_err(|_| bad())?;
            let im = body[i..].parse::<f64>().map_err(|_| bad())?;
            Ok(C64::new(re, im))
        }
        None => body
            .parse::<f64>()
            .map(|im| C64::new(0.0, im))
            .map_err(|_| bad()),
    }
}

/// Serde for `Vec<Vec<C64>>` as nested `[re, im]` pairs (num-complex's serde feature is not
/// enabled in the workspace, and pairs are the compact JSON shape anyway).
mod complex_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::C64;

    pub fn serialize<S: Serializer>(value: &[Vec<C64>], serializer: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<Vec<[f64; 2]>> = value
            .iter()
            .map(|c| c.iter().map(|z| [z.re, z.im]).collect())
            .collect();
        pairs.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<C64>>, D::Error> {
        let pairs = Vec::<Vec<[f64; 2]>>::deserialize(deserializer)?;
        Ok(pairs
            .into_iter()
            .map(|c| c.into_iter().map(|[re, im]| C64::new(re, im)).collect())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: AccelerationUnit = AccelerationUnit::StandardGravity;

    #[test]
    fn parses_python_complex_numbers_in_every_spelling() {
        let cases = [
            ("1.5", C64::new(1.5, 0.0)),
            ("2j", C64::new(0.0, 2.0)),
            ("-2.5j", C64::new(0.0, -2.5)),
            ("-0.5+1e-3j", C64::new(-0.5, 1e-3)),
            ("1e-05-2E+02j", C64::new(1e-5, -200.0)),
            ("(3-4j)", C64::new(3.0, -4.0)),
            ("128+0j", C64::new(128.0, 0.0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_complex(text), Ok(want), "{text}");
        }
        assert!(parse_complex("1.5+").is_err());
        assert!(parse_complex("abc").is_err());
        assert!(parse_complex("").is_err());
    }

    #[test]
    fn converts_g_per_newton_to_si_once() {
        let text = "1+0j;1+0j;0.5-0.5j\n2+0j;2j;-1+0j\n3+0j;0;1\n4+0j;1;1\n5+0j;1;1\n\
                    6+0j;1;1\n7+0j;1;1\n8+0j;1;1\n";
        let frf = parse_complex_accelerance(text, G).unwrap();
        assert_eq!(frf.channels(), 2);
        assert_eq!(frf.output_floors, vec![1, 2]);
        assert_eq!(frf.input_floor, 1);
        let c = frf.complex().unwrap();
        assert_eq!(c[0][0], C64::new(STANDARD_GRAVITY_M_S2, 0.0));
        assert_eq!(c[1][0], C64::new(0.5, -0.5) * STANDARD_GRAVITY_M_S2);
        assert_eq!(c[0][1], C64::new(0.0, 2.0) * STANDARD_GRAVITY_M_S2);
        // 20·log10(1 g/N) = 0 dB and 20 dB = 10 g/N.
        let db = parse_db_accelerance(
            "1,0,20\n2,0,20\n3,0,20\n4,0,20\n5,0,20\n6,0,20\n7,0,20\n8,0,20\n",
            G,
        )
        .unwrap();
        assert!(!db.has_phase());
        assert!((db.magnitude(0)[0] - STANDARD_GRAVITY_M_S2).abs() < 1e-12);
        assert!((db.magnitude(1)[0] - 10.0 * STANDARD_GRAVITY_M_S2).abs() < 1e-12);
    }

    #[test]
    fn reports_every_bad_cell_with_its_line_and_column() {
        let text = "1+0j;1;1\n\
                    2+0j;x;1\n\
                    3+1j;1;1\n\
                    1.5+0j;1;1\n\
                    4+0j;1\n\
                    5+0j;nan+0j;inf\n\
                    6+0j;1;1\n";
        let Err(CalibrateError::Parse { problems, total }) = parse_complex_accelerance(text, G)
        else {
            panic!("bad text must not parse");
        };
        let at: Vec<(usize, usize)> = problems.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(at, vec![(2, 2), (3, 1), (4, 1), (5, 0), (6, 2), (6, 3)]);
        assert_eq!(total, 6);
        let message = CalibrateError::Parse { problems, total }.to_string();
        assert!(message.contains("line 3, column 1"), "{message}");
    }

    #[test]
    fn caps_the_listed_problems_but_counts_them_all() {
        let text: String = (0..100).map(|i| format!("{i};oops\n")).collect();
        let Err(CalibrateError::Parse { problems, total }) = parse_db_accelerance(&text, G) else {
            panic!("bad text must not parse");
        };
        assert_eq!(problems.len(), MAX_REPORTED_PROBLEMS);
        assert_eq!(total, 100);
    }

    #[test]
    fn refuses_empty_and_too_short_files() {
        assert!(matches!(
            parse_db_accelerance("\n \n", G),
            Err(CalibrateError::Parse { .. })
        ));
        assert!(matches!(
            parse_db_accelerance("1,0\n2,0\n", G),
            Err(CalibrateError::Invalid(_))
        ));
    }

    #[test]
    fn validate_lists_every_problem_of_typed_data() {
        let frf = MeasuredFrf {
            frequencies_hz: vec![1.0, 0.5, f64::NAN],
            input_floor: 0,
            output_floors: vec![1],
            accelerance_m_s2_per_n: FrfValues::Magnitude {
                channels: vec![vec![1.0, -1.0], vec![1.0, 1.0, 1.0]],
            },
            coherence: Some(vec![vec![0.5, 1.5, 1.0]]),
        };
        let problems = frf.problems();
        // Too short, NaN frequency, not increasing, input 0, floors/channels, coherence
        // channels, coherence above 1, channel 0 length, channel 0 negative magnitude.
        assert_eq!(problems.len(), 9, "{problems:#?}");
    }

    #[test]
    fn round_trips_through_json_as_pairs() {
        let frf = MeasuredFrf {
            frequencies_hz: vec![1.0, 2.0],
            input_floor: 1,
            output_floors: vec![1],
            accelerance_m_s2_per_n: FrfValues::Complex {
                channels: vec![vec![C64::new(1.0, -2.0), C64::new(0.5, 0.25)]],
            },
            coherence: None,
        };
        let json = serde_json::to_string(&frf).unwrap();
        assert!(json.contains("[1.0,-2.0]"), "{json}");
        let back: MeasuredFrf = serde_json::from_str(&json).unwrap();
        assert_eq!(back, frf);
        assert!(
            serde_json::from_str::<MeasuredFrf>(&json.replace("input_floor", "inputfloor"))
                .is_err()
        );
    }
}
