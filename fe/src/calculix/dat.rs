//! Owns the reading of CalculiX's `.dat` output of a `*FREQUENCY` step: the eigenvalue table
//! and, when printed, the effective modal masses. Pure: text in, values out.
//!
//! Format (ccx 2.x, as written by its `writeev`/`writepf` routines): a title line
//! "E I G E N V A L U E   O U T P U T", header lines, then one row per mode: mode number,
//! eigenvalue (rad²/s²), ω (rad/s), f (cycles/s), imaginary part. Then, for the participation
//! factors and "E F F E C T I V E   M O D A L   M A S S", one row per mode of the mode number
//! and six components (x, y, z and rotations about the global x, y, z axes), a "TOTAL" row,
//! and "T O T A L   E F F E C T I V E   M A S S" followed by one row of the structure's six
//! totals.

use serde::{Deserialize, Serialize};

use crate::calculix::error::CalculixError;
use crate::frame::EffectiveMassFractions;

/// One mode as CalculiX reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalculixMode {
    /// Mode number, 1-based, as printed.
    pub mode: usize,
    /// Eigenvalue ω², in rad²/s² (negative for a mechanism).
    pub eigenvalue_rad2_s2: f64,
    /// Natural frequency, in Hz (0 for a negative eigenvalue, as ccx prints it).
    pub frequency_hz: f64,
    /// Effective masses as fractions of the totals, when ccx printed both tables.
    pub effective_mass: Option<EffectiveMassFractions>,
}

const EIGENVALUE_TITLE: &str = "E I G E N V A L U E   O U T P U T";
const EFFECTIVE_TITLE: &str = "E F F E C T I V E   M O D A L   M A S S";
const TOTAL_TITLE: &str = "T O T A L   E F F E C T I V E   M A S S";

/// Parses the first `*FREQUENCY` step of a `.dat` file.
///
/// # Errors
/// [`CalculixError::NoEigenvalues`] if the text holds no eigenvalue table or the table has
/// no rows; the error carries the text's last lines.
pub fn parse_eigenvalues(dat: &str) -> Result<Vec<CalculixMode>, CalculixError> {
    let lines: Vec<&str> = dat.lines().collect();
    let no_eigenvalues = || CalculixError::NoEigenvalues {
        tail: tail_lines(dat, 20),
    };
    let start = find_title(&lines, EIGENVALUE_TITLE, 0).ok_or_else(no_eigenvalues)?;
    let rows = numeric_rows(&lines, start + 1, 5);
    if rows.is_empty() {
        return Err(no_eigenvalues());
    }
    let mut modes = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(mode) = as_index(row[0]) else {
            return Err(no_eigenvalues());
        };
        modes.push(CalculixMode {
            mode,
            eigenvalue_rad2_s2: row[1],
            frequency_hz: row[3],
            effective_mass: None,
        });
    }
    let effective = find_title(&lines, EFFECTIVE_TITLE, start)
        .map(|at| numeric_rows(&lines, at + 1, 7))
        .unwrap_or_default();
    let totals = find_title(&lines, TOTAL_TITLE, start)
        .map(|at| numeric_rows(&lines, at + 1, 6))
        .and_then(|rows| rows.into_iter().next());
    if let Some(totals) = totals {
        for row in &effective {
            let Some(number) = as_index(row[0]) else {
                continue;
            };
            if let Some(mode) = modes.iter_mut().find(|m| m.mode == number) {
                let fraction = |i: usize| {
                    if totals[i] > 0.0 {
                        row[i + 1] / totals[i]
                    } else {
                        0.0
                    }
                };
                mode.effective_mass = Some(EffectiveMassFractions {
                    x: fraction(0),
                    y: fraction(1),
                    z: fraction(2),
                    torsion: fraction(5),
                });
            }
        }
    }
    Ok(modes)
}

fn find_title(lines: &[&str], title: &str, from: usize) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, line)| line.contains(title))
        .map(|(i, _)| i)
}

/// The block of rows of exactly `width` numbers that follows `from` (header and blank lines
/// before it skipped; the first other line after it ends it).
fn numeric_rows(lines: &[&str], from: usize, width: usize) -> Vec<Vec<f64>> {
    let mut rows = Vec::new();
    for line in lines.iter().skip(from) {
        let parsed: Option<Vec<f64>> = line
            .split_whitespace()
            .map(|token| token.parse::<f64>().ok())
            .collect();
        match parsed {
            Some(values) if values.len() == width && values.iter().all(|v| v.is_finite()) => {
                rows.push(values);
            }
            _ if rows.is_empty() && !is_title(line) => {}
            _ => break,
        }
    }
    rows
}

fn is_title(line: &str) -> bool {
    [EIGENVALUE_TITLE, EFFECTIVE_TITLE, TOTAL_TITLE]
        .iter()
        .any(|title| line.contains(title))
        || line.contains("P A R T I C I P A T I O N")
}

fn as_index(value: f64) -> Option<usize> {
    // Mode numbers are small positive integers printed without a fraction.
    // The cast is exact: checked to be a positive integer below 1e9.
    (value >= 1.0 && value.fract() == 0.0 && value < 1e9).then_some(value as usize)
}

/// The last `count` lines of a text, for error messages.
pub(crate) fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verbatim layout of a ccx 2.20 `.dat` (a cantilever with a mass; the numbers are what
    /// that run printed): two mechanisms with negative eigenvalues, then real modes.
    const SAMPLE: &str = "
     E I G E N V A L U E   O U T P U T

 MODE NO    EIGENVALUE                       FREQUENCY   
                                     REAL PART            IMAGINARY PART
                           (RAD/TIME)      (CYCLES/TIME     (RAD/TIME)

      1  -0.5012710E-05   0.0000000E+00   0.0000000E+00   0.2238908E-02
      2   0.1279378E+06   0.3576840E+03   0.5692718E+02   0.0000000E+00
      3   0.8467280E+08   0.9201783E+04   0.1464509E+04   0.0000000E+00

     P A R T I C I P A T I O N   F A C T O R S

MODE NO.   X-COMPONENT     Y-COMPONENT     Z-COMPONENT     X-ROTATION      Y-ROTATION      Z-ROTATION

      1   0.3989277E-01  -0.9981071E+00  -0.9973194E-02   0.2997313E+00   0.1196783E-01   0.4914407E-16
      2   0.3482937E+00  -0.6338999E-01   0.6544144E+00   0.3525003E-07   0.9765127E-01  -0.6828028E-08
      3   0.3487224E-01   0.1157244E-01  -0.6562258E+00   0.9851435E-06  -0.1054622E-01  -0.3904224E-07

     E F F E C T I V E   M O D A L   M A S S

MODE NO.   X-COMPONENT     Y-COMPONENT     Z-COMPONENT     X-ROTATION      Y-ROTATION      Z-ROTATION

      1   0.1591433E-02   0.9962178E+00   0.9946459E-04   0.8983887E-01   0.1432290E-03   0.2415140E-32
      2   0.1213085E+00   0.4018291E-02   0.4282582E+00   0.1242565E-14   0.9535770E-02   0.4662197E-16
      3   0.1216073E-02   0.1339214E-03   0.4306322E+00   0.9705076E-12   0.1112227E-03   0.1524296E-14
TOTAL     0.1014427E+01   0.1004929E+01   0.1012834E+01   0.9000004E-01   0.8982396E-01   0.8644303E-06

     T O T A L   E F F E C T I V E   M A S S

MODE NO.   X-COMPONENT     Y-COMPONENT     Z-COMPONENT     X-ROTATION      Y-ROTATION      Z-ROTATION

          0.1061110E+01   0.1023843E+01   0.1018375E+01   0.9007897E-01   0.9007801E-01   0.7590829E-05
";

    #[test]
    fn reads_every_eigenvalue_row_with_its_frequency() {
        let modes = parse_eigenvalues(SAMPLE).unwrap_or_default();
        assert_eq!(modes.len(), 3);
        assert_eq!(modes[0].mode, 1);
        assert!((modes[0].eigenvalue_rad2_s2 + 0.501_271e-5).abs() < 1e-15);
        assert_eq!(modes[0].frequency_hz, 0.0);
        assert!((modes[1].frequency_hz - 56.927_18).abs() < 1e-9);
        assert!((modes[2].eigenvalue_rad2_s2 - 0.846_728e8).abs() < 1e-3);
    }

    #[test]
    fn effective_masses_become_fractions_of_the_printed_totals() {
        let modes = parse_eigenvalues(SAMPLE).unwrap_or_default();
        let fractions = modes[1].effective_mass.unwrap_or(EffectiveMassFractions {
            x: f64::NAN,
            y: f64::NAN,
            z: f64::NAN,
            torsion: f64::NAN,
        });
        assert!((fractions.x - 0.121_308_5 / 1.061_110).abs() < 1e-12);
        assert!((fractions.z - 0.428_258_2 / 1.018_375).abs() < 1e-12);
        assert!((fractions.torsion - 0.466_219_7e-16 / 0.759_082_9e-5).abs() < 1e-20);
    }

    #[test]
    fn output_without_eigenvalues_is_an_error_carrying_its_tail() {
        let text = " *ERROR reading *ELEMENT:\n ROTARYI  is an unknown element type\n";
        match parse_eigenvalues(text) {
            Err(CalculixError::NoEigenvalues { tail }) => assert!(tail.contains("ROTARYI")),
            other => panic!("expected NoEigenvalues, got {other:?}"),
        }
    }

    #[test]
    fn a_title_without_rows_is_an_error() {
        let text = "     E I G E N V A L U E   O U T P U T\n\n MODE NO    EIGENVALUE\n";
        assert!(matches!(
            parse_eigenvalues(text),
            Err(CalculixError::NoEigenvalues { .. })
        ));
    }
}
