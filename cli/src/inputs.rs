//! Owns reading a study's measured inputs from files for `dtop study submit --input
//! NAME=FILE`: a CSV table (a header of column names with units, then numbers), a JSON table
//! (`{"columns": [{"name", "values"}]}` as the API returns arrays, or `{"column": [values]}`),
//! or a measured FRF in one of Cristallo's text formats (read by `dtop-calibrate`, sent as the
//! `frf` table `dtop_studies::measured` defines). And `--record RIG:FROM_MS:TO_MS`, a rig's
//! stored range the server reads. Pure but for reading the file.

use std::path::Path;

use dtop_studies::{Column, NamedArray};
use serde_json::{Value, json};

/// Parses `NAME=FILE` and reads the file into the table `NAME`.
///
/// # Errors
/// Every problem, each naming the option, the file and (for CSV) the line.
pub fn read_input(arg: &str) -> Result<NamedArray, Vec<String>> {
    let Some((name, file)) = arg.split_once('=') else {
        return Err(vec![format!(
            "--input {arg:?}: expected NAME=FILE, e.g. frf=southampton.txt or acceleration=record.csv"
        )]);
    };
    let mut problems: Vec<String> = dtop_studies::inputs::name_problem(name)
        .map(|p| format!("--input {arg:?}: {p}"))
        .into_iter()
        .collect();
    let path = Path::new(file);
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(format!("--input {name}: cannot read {file}: {e}"));
            return Err(problems);
        }
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let columns = match extension.as_deref() {
        Some("json") => json_columns(&text),
        _ if is_cristallo_frf(&text) => frf_columns(&text),
        _ => csv_columns(&text),
    };
    match columns {
        Ok(columns) if problems.is_empty() => Ok(NamedArray {
            name: name.to_owned(),
            columns,
        }),
        Ok(_) => Err(problems),
        Err(mut p) => {
            problems.extend(p.drain(..).map(|p| format!("--input {name} ({file}): {p}")));
            Err(problems)
        }
    }
}

/// A CSV table: a header of names, then one number per column on each line. At most the first
/// ten bad cells are reported.
fn csv_columns(text: &str) -> Result<Vec<Column>, Vec<String>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(vec![
            "the file is empty; expected a header line of column names".into(),
        ]);
    };
    let names: Vec<String> = header.split(',').map(|s| s.trim().to_owned()).collect();
    let mut columns: Vec<Column> = names
        .iter()
        .map(|n| Column {
            name: n.clone(),
            values: Vec::new(),
        })
        .collect();
    let mut problems = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != names.len() {
            problems.push(format!(
                "line {}: {} cells, the header has {}",
                i + 1,
                cells.len(),
                names.len()
            ));
        } else {
            for (c, cell) in cells.iter().enumerate() {
                match cell.trim().parse::<f64>() {
                    Ok(v) => columns[c].values.push(v),
                    Err(_) => problems.push(format!(
                        "line {}, column {}: {:?} is not a number",
                        i + 1,
                        names[c],
                        cell.trim()
                    )),
                }
            }
        }
        if problems.len() >= 10 {
            problems.push("(stopped after 10 problems)".into());
            break;
        }
    }
    if problems.is_empty() {
        Ok(columns)
    } else {
        Err(problems)
    }
}

/// A JSON table: `{"columns": [{"name", "values"}]}` (an API array download) or an object of
/// column name → values.
fn json_columns(text: &str) -> Result<Vec<Column>, Vec<String>> {
    let value: Value = serde_json::from_str(text).map_err(|e| vec![e.to_string()])?;
    if let Some(columns) = value.get("columns") {
        return serde_json::from_value::<Vec<Column>>(columns.clone())
            .map_err(|e| vec![format!("columns: {e}")]);
    }
    match value {
        Value::Object(map) => map
            .into_iter()
            .map(|(name, values)| {
                serde_json::from_value::<Vec<f64>>(values)
                    .map(|values| Column {
                        name: name.clone(),
                        values,
                    })
                    .map_err(|e| format!("{name}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| vec![e]),
        _ => Err(vec![
            "expected an object: {\"columns\": [...]} or {\"column\": [values]}".into(),
        ]),
    }
}

/// Whether `text` is one of Cristallo's FRF files rather than a table: they have no header
/// (the first cell is a number, or a complex number like `0.03125+0j`).
fn is_cristallo_frf(text: &str) -> bool {
    let first_cell = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| l.split([',', ';']).next())
        .unwrap_or_default()
        .trim();
    first_cell.parse::<f64>().is_ok() || (first_cell.ends_with('j') && first_cell.contains('+'))
}

/// A measured FRF in one of Cristallo's text formats: complex accelerance separated by `;`
/// (`Experimental.csv`, `test_*.csv`) or dB magnitudes separated by `,` (`ExpData*.csv`), read
/// as (m/s²)/N (what the Southampton files hold: `dtop_calibrate::AccelerationUnit`), sent as
/// the `frf` table.
fn frf_columns(text: &str) -> Result<Vec<Column>, Vec<String>> {
    use dtop_calibrate::measured::{
        AccelerationUnit, parse_complex_accelerance, parse_db_accelerance,
    };
    let unit = AccelerationUnit::MetrePerSecondSquared;
    let parsed = if text.contains(';') {
        parse_complex_accelerance(text, unit)
    } else {
        parse_db_accelerance(text, unit)
    };
    parsed
        .map(|frf| dtop_studies::measured::frf_table(&frf).columns)
        .map_err(|e| vec![format!("a Cristallo FRF file that does not parse: {e}")])
}

/// Parses `RIG:FROM_MS:TO_MS` into the API's `record` object.
///
/// # Errors
/// What is wrong with it.
pub fn record(arg: &str) -> Result<Value, String> {
    let parts: Vec<&str> = arg.rsplitn(3, ':').collect();
    let [to, from, rig] = parts.as_slice() else {
        return Err(format!(
            "--record {arg:?}: expected RIG:FROM_MS:TO_MS (ms since the Unix epoch)"
        ));
    };
    let ms = |s: &str, what: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("--record {arg:?}: {what} {s:?} is not ms since the Unix epoch"))
    };
    Ok(json!({"rig": rig, "from_ms": ms(from, "FROM")?, "to_ms": ms(to, "TO")?}))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_csv_table_reads_by_header_and_bad_cells_are_named_by_line() {
        let cols = csv_columns("time_s,floor1_accel\n0,1.5\n0.001,-2e-3\n").unwrap();
        assert_eq!(cols[0].name, "time_s");
        assert_eq!(cols[1].values, vec![1.5, -2e-3]);
        let p = csv_columns("a,b\n1,x\n1\n").unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("line 2") && p[1].contains("line 3"), "{p:?}");
    }

    #[test]
    fn a_json_table_reads_in_both_shapes() {
        let a = json_columns(r#"{"name":"x","columns":[{"name":"f_hz","values":[1,2]}]}"#).unwrap();
        assert_eq!(a[0].values, vec![1.0, 2.0]);
        let b = json_columns(r#"{"f_hz":[1,2]}"#).unwrap();
        assert_eq!(b[0].name, "f_hz");
        assert!(json_columns("[1]").is_err());
    }

    #[test]
    fn cristallo_frf_files_are_told_from_tables_and_read_as_frf_tables() {
        assert!(is_cristallo_frf("0.03125+0j;-0.05+0.05j;1+0j;2+0j\n"));
        assert!(is_cristallo_frf("0,-35.9,-26.1,-38.3\n"));
        assert!(!is_cristallo_frf("time_s,floor1_accel\n0,1\n"));
        let rows: String = (1..=10)
            .map(|i| format!("{},-30.0,-20.0,-10.0\n", f64::from(i) * 0.5))
            .collect();
        let cols = frf_columns(&rows).unwrap();
        assert_eq!(cols[0].name, "frequency_hz");
        assert_eq!(
            cols.len(),
            4,
            "{:?}",
            cols.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
        assert!(frf_columns("1,x\n").is_err());
    }

    #[test]
    fn a_record_is_a_rig_and_two_times_in_ms() {
        assert_eq!(
            record("lab-1:1000:2000").unwrap(),
            json!({"rig": "lab-1", "from_ms": 1000, "to_ms": 2000})
        );
        assert!(record("lab-1:x:2000").is_err());
        assert!(record("lab-1").is_err());
    }
}
