//! Owns the reading of CalculiX's `.frd` result file: the node coordinates and, for each mode
//! of a `*FREQUENCY` step, the nodal displacements. Pure: text in, values out.
//!
//! Format (CalculiX GraphiX frd, short records as ccx 2.20 writes them): a node block opened
//! by a line `    2C` and rows ` -1` + node id (10 characters) + x, y, z (12 characters
//! each), closed by ` -3`; per result set a `  100CL` line whose first number after the set
//! id is the frequency for a modal step, a ` -4  DISP` header with ` -5` component lines,
//! rows ` -1` + id + three values, and ` -3`. Values can abut (`-1.2E-01-3.4E-01`), so rows
//! are read by column, not by splitting on spaces. The deck asks for results on the beams'
//! own nodes (`*NODE FILE, OUTPUT=2D`), not on ccx's expanded solids.

use serde::{Deserialize, Serialize};

use crate::calculix::dat::tail_lines;
use crate::calculix::error::CalculixError;

/// One mode's displacements as ccx wrote them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrdModeShape {
    /// Position of this result set among the file's displacement sets, 1-based (the mode
    /// number in a single `*FREQUENCY` step).
    pub mode: usize,
    /// Frequency from the set's header, in Hz.
    pub frequency_hz: f64,
    /// (node id, [u_x, u_y, u_z]) for every node in the set, in the file's order.
    pub translations: Vec<(usize, [f64; 3])>,
}

/// Node coordinates and mode shapes of an `.frd` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrdResults {
    /// (node id, [x, y, z]) of every node, in m.
    pub nodes: Vec<(usize, [f64; 3])>,
    /// One entry per displacement set.
    pub shapes: Vec<FrdModeShape>,
}

impl FrdResults {
    /// The id of the node at `position_m`, within `tolerance_m`.
    pub fn node_at(&self, position_m: [f64; 3], tolerance_m: f64) -> Option<usize> {
        self.nodes
            .iter()
            .find(|(_, p)| {
                p.iter()
                    .zip(&position_m)
                    .all(|(a, b)| (a - b).abs() <= tolerance_m)
            })
            .map(|(id, _)| *id)
    }
}

impl FrdModeShape {
    /// The translation of node `id`, if this set has it.
    pub fn translation(&self, id: usize) -> Option<[f64; 3]> {
        self.translations
            .iter()
            .find(|(node, _)| *node == id)
            .map(|(_, u)| *u)
    }
}

/// Parses the node block and every `DISP` set.
///
/// # Errors
/// [`CalculixError::NoEigenvalues`] (with the text's tail) if the file has no node block or
/// no displacement set, or a row cannot be read.
pub fn parse_frd(frd: &str) -> Result<FrdResults, CalculixError> {
    let bad = || CalculixError::NoEigenvalues {
        tail: tail_lines(frd, 10),
    };
    let mut lines = frd.lines();
    let mut nodes = Vec::new();
    let mut shapes = Vec::new();
    let mut frequency_hz = f64::NAN;
    while let Some(line) = lines.next() {
        if line.starts_with("    2C") {
            for row in lines.by_ref() {
                if row.starts_with(" -3") {
                    break;
                }
                nodes.push(record(row).ok_or_else(bad)?);
            }
        } else if line.starts_with("  100CL") {
            frequency_hz = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
        } else if line.starts_with(" -4  DISP") {
            let mut translations = Vec::new();
            for row in lines.by_ref() {
                if row.starts_with(" -3") {
                    break;
                }
                if row.starts_with(" -1") {
                    translations.push(record(row).ok_or_else(bad)?);
                }
            }
            shapes.push(FrdModeShape {
                mode: shapes.len() + 1,
                frequency_hz,
                translations,
            });
        }
    }
    if nodes.is_empty() || shapes.is_empty() {
        return Err(bad());
    }
    Ok(FrdResults { nodes, shapes })
}

/// A ` -1` row: id in columns 3..13, then three 12-column numbers.
fn record(row: &str) -> Option<(usize, [f64; 3])> {
    let id = row.get(3..13)?.trim().parse().ok()?;
    let mut values = [0.0_f64; 3];
    for (i, value) in values.iter_mut().enumerate() {
        let start = 13 + 12 * i;
        *value = row.get(start..start + 12)?.trim().parse().ok()?;
    }
    values.iter().all(|v| v.is_finite()).then_some((id, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layout of a ccx 2.20 `.frd` with `OUTPUT=2D` (header lines cut, two nodes, two modes;
    /// the numbers are what that run printed), abutting negative values included.
    const SAMPLE: &str = "    1C
    1UPGM               CalculiX
    2C                           2                                     1
 -1         1-1.25500E-01-1.39900E-01 0.00000E+00
 -1         2-1.25500E-01-1.39900E-01 1.91625E-02
 -3
    1PSTEP                         1           1           1
  100CL  101 7.348275851           2                     2    1MODAL      1
 -4  DISP        4    1
 -5  D1          1    2    1    0
 -5  D2          1    2    2    0
 -5  D3          1    2    3    0
 -5  ALL         1    2    0    0    1ALL
 -1         1 0.00000E+00 0.00000E+00 0.00000E+00
 -1         2 1.23400E-02-4.56000E-07 7.00000E-10
 -3
    1PSTEP                         2           1           1
  100CL  102 20.66644023           2                     2    2MODAL      1
 -4  DISP        4    1
 -5  D1          1    2    1    0
 -1         1 0.00000E+00 0.00000E+00 0.00000E+00
 -1         2-2.00000E-02 1.00000E-03 0.00000E+00
 -3
 9999
";

    #[test]
    fn reads_nodes_and_every_modes_displacements_by_column() {
        let results = parse_frd(SAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(results.nodes.len(), 2);
        assert_eq!(results.nodes[1], (2, [-0.1255, -0.1399, 0.019_162_5]));
        assert_eq!(results.shapes.len(), 2);
        assert!((results.shapes[0].frequency_hz - 7.348_275_851).abs() < 1e-12);
        assert_eq!(
            results.shapes[0].translation(2),
            Some([0.01234, -4.56e-7, 7e-10])
        );
        assert_eq!(results.shapes[1].mode, 2);
        assert_eq!(results.shapes[1].translation(2), Some([-0.02, 0.001, 0.0]));
        assert_eq!(results.node_at([-0.1255, -0.1399, 0.0], 1e-9), Some(1));
    }

    #[test]
    fn a_file_without_displacements_is_an_error() {
        let cut = SAMPLE.split("    1PSTEP").next().unwrap_or_default();
        assert!(matches!(
            parse_frd(cut),
            Err(CalculixError::NoEigenvalues { .. })
        ));
        assert!(parse_frd("").is_err());
    }
}
