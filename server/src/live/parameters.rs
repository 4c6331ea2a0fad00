//! Owns reading a rig's parameter history from the store the twin writes: the modes its drift
//! tracking identified each window (`dtop_twin_modes`), the storey stiffnesses fitted to them
//! (`dtop_twin_stiffness`) and its drift alarms (`dtop_twin_drift`), ARCHITECTURE § Storage
//! schema. A storey's rows carry its number as the field `storey`. InfluxDB 1.x answers one InfluxQL `SELECT *`;
//! VictoriaMetrics its `/api/v1/export` of the measurement's series (one per field and mode,
//! string fields not kept there). Both become the same rows: time, mode, then the fields. The
//! query builders and parsers are pure; only [`super::history::History::parameters`] does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::range::HistoryError;

/// Most rows one answer may hold (a window every 10 minutes gives 4 rows an hour per mode).
pub const MAX_ROWS: usize = 100_000;

/// Which record of the parameter history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// Each window's identified modes (or why none were): `dtop_twin_modes`.
    #[default]
    Modes,
    /// Drift alarms raised and cleared: `dtop_twin_drift` (a frequency's by `mode`, a storey
    /// stiffness's by the field `storey`).
    Drift,
    /// Each window's fitted storey stiffnesses: `dtop_twin_stiffness`.
    Stiffness,
}

impl Record {
    /// The measurement it is stored as.
    pub fn measurement(self) -> &'static str {
        match self {
            Record::Modes => "dtop_twin_modes",
            Record::Drift => "dtop_twin_drift",
            Record::Stiffness => "dtop_twin_stiffness",
        }
    }
}

/// The query of `/api/v1/rigs/{rig}/parameters`.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ParametersQuery {
    /// Start, ms since the Unix epoch (inclusive).
    pub from_ms: i64,
    /// End, ms since the Unix epoch (exclusive).
    pub to_ms: i64,
    /// `modes` (default), `stiffness` or `drift`.
    #[serde(default)]
    pub record: Record,
}

impl ParametersQuery {
    /// Every problem with the range.
    pub fn problems(&self) -> Vec<dtop_studies::FieldProblem> {
        let mut out = Vec::new();
        if self.to_ms <= self.from_ms {
            out.push(dtop_studies::FieldProblem::new(
                "to_ms",
                format!(
                    "must be after from_ms ({}), got {}",
                    self.from_ms, self.to_ms
                ),
            ));
        }
        if self.from_ms < 0 {
            out.push(dtop_studies::FieldProblem::new(
                "from_ms",
                "must not be negative",
            ));
        }
        out
    }
}

/// One row: when (the deciding window's end), which mode, and the record's fields.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParameterRow {
    /// ms since the Unix epoch.
    pub time_ms: i64,
    /// The model's mode number, or `none` for a failed identification.
    pub mode: String,
    /// The fields as stored (numbers, booleans, and the reason of a failure).
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ParametersAnswer {
    /// The rig.
    pub rig: String,
    /// Which record.
    pub record: Record,
    /// In time order, then by mode.
    pub rows: Vec<ParameterRow>,
}

fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The InfluxQL query of `record` for `rig` over the range.
pub fn influxql(rig: &str, record: Record, from_ms: i64, to_ms: i64) -> String {
    format!(
        "SELECT * FROM \"{}\" WHERE \"rig\" = {} AND time >= {from_ms}ms AND time < {to_ms}ms \
         ORDER BY time ASC LIMIT {}",
        record.measurement(),
        quote_string(rig),
        MAX_ROWS + 1
    )
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<AnswerResult>,
}

#[derive(Debug, Deserialize)]
struct AnswerResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Series {
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

fn sorted(mut rows: Vec<ParameterRow>) -> Result<Vec<ParameterRow>, HistoryError> {
    if rows.len() > MAX_ROWS {
        return Err(HistoryError::Record(format!(
            "the range holds more than {MAX_ROWS} rows: pick a shorter range"
        )));
    }
    rows.sort_by(|a, b| (a.time_ms, &a.mode).cmp(&(b.time_ms, &b.mode)));
    Ok(rows)
}

/// Parses InfluxDB's answer (`epoch=ms`) to [`influxql`]: each row's `time` and `mode`, and
/// every other non-null column but `rig` as a field.
///
/// # Errors
/// An error InfluxDB reports, or an answer of another shape.
pub fn parse_influx(body: &[u8]) -> Result<Vec<ParameterRow>, HistoryError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| HistoryError::Unreadable(format!("InfluxDB's answer: {e}")))?;
    let mut rows = Vec::new();
    for result in answer.results {
        if let Some(error) = result.error {
            return Err(HistoryError::Store {
                store: "InfluxDB",
                error,
            });
        }
        for series in result.series {
            for values in series.values {
                let mut time_ms = None;
                let mut mode = String::new();
                let mut fields = BTreeMap::new();
                for (name, value) in series.columns.iter().zip(values) {
                    match name.as_str() {
                        "time" => time_ms = value.as_i64(),
                        "mode" => mode = value.as_str().unwrap_or_default().to_owned(),
                        "rig" => {}
                        _ if value.is_null() => {}
                        _ => {
                            fields.insert(name.clone(), value);
                        }
                    }
                }
                let Some(time_ms) = time_ms else {
                    return Err(HistoryError::Unreadable(
                        "InfluxDB's answer has a row without an integer time".into(),
                    ));
                };
                rows.push(ParameterRow {
                    time_ms,
                    mode,
                    fields,
                });
            }
        }
    }
    sorted(rows)
}

/// The query pairs of VictoriaMetrics' `/api/v1/export` for `record` of `rig`.
pub fn victoria_params(
    rig: &str,
    record: Record,
    from_ms: i64,
    to_ms: i64,
) -> Vec<(&'static str, String)> {
    let seconds = |t_ms: i64| format!("{}.{:03}", t_ms.div_euclid(1000), t_ms.rem_euclid(1000));
    let quoted = rig.replace('\\', "\\\\").replace('"', "\\\"");
    vec![
        (
            "match[]",
            format!(
                "{{__name__=~\"{}_.+\",rig=\"{quoted}\"}}",
                record.measurement()
            ),
        ),
        ("start", seconds(from_ms)),
        ("end", seconds(to_ms - 1)),
    ]
}

#[derive(Debug, Deserialize)]
struct ExportLine {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<Option<f64>>,
    #[serde(default)]
    timestamps: Vec<i64>,
}

/// Parses VictoriaMetrics' export of `record`: one series per field and mode, folded into
/// rows by (time, mode).
///
/// # Errors
/// An answer of another shape.
pub fn parse_victoria(record: Record, body: &[u8]) -> Result<Vec<ParameterRow>, HistoryError> {
    let prefix = format!("{}_", record.measurement());
    // Keyed by (time, mode, storey): a storey's series carry no mode.
    type Key = (i64, String, String);
    let mut rows: BTreeMap<Key, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let series: ExportLine = serde_json::from_slice(line)
            .map_err(|e| HistoryError::Unreadable(format!("VictoriaMetrics' export: {e}")))?;
        let Some(field) = series
            .metric
            .get("__name__")
            .and_then(|n| n.strip_prefix(&prefix))
        else {
            continue;
        };
        let mode = series.metric.get("mode").cloned().unwrap_or_default();
        let storey = series.metric.get("storey").cloned().unwrap_or_default();
        for (t_ms, v) in series.timestamps.iter().zip(series.values) {
            if let Some(v) = v {
                let fields = rows
                    .entry((*t_ms, mode.clone(), storey.clone()))
                    .or_default();
                fields.insert(field.to_owned(), serde_json::json!(v));
                if !storey.is_empty() {
                    // As InfluxDB's `SELECT *` gives the tag: a string column.
                    fields.insert("storey".to_owned(), serde_json::json!(storey));
                }
            }
        }
        if rows.len() > MAX_ROWS {
            break;
        }
    }
    sorted(
        rows.into_iter()
            .map(|((time_ms, mode, _), fields)| ParameterRow {
                time_ms,
                mode,
                fields,
            })
            .collect(),
    )
}

/// The answer as CSV: `time_ms,mode`, then every field any row has, in name order; a row
/// without a field leaves its cell empty.
pub fn to_csv(answer: &ParametersAnswer) -> String {
    let mut names: Vec<&str> = answer
        .rows
        .iter()
        .flat_map(|r| r.fields.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = String::from("time_ms,mode");
    for n in &names {
        out.push(',');
        out.push_str(n);
    }
    out.push('\n');
    for row in &answer.rows {
        out.push_str(&format!("{},{}", row.time_ms, csv_cell(&row.mode)));
        for n in &names {
            out.push(',');
            match row.fields.get(*n) {
                Some(serde_json::Value::String(s)) => out.push_str(&csv_cell(s)),
                Some(v) => out.push_str(&v.to_string()),
                None => {}
            }
        }
        out.push('\n');
    }
    out
}

/// A CSV cell: quoted when it holds a comma, a quote or a line break.
fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_influx_answer_becomes_rows_by_time_and_mode() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"dtop_twin_modes","columns":["time","end_s","frequency_hz","identified","in_band","mode","reason","rig"],"values":[[2000,600,7.1,true,true,"1",null,"lab-1"],[1000,300,null,false,null,"none","no stable mode","lab-1"]]}]}]}"#;
        let rows = parse_influx(body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].time_ms, rows[0].mode.as_str()), (1000, "none"));
        assert_eq!(rows[0].fields["reason"], "no stable mode");
        assert!(!rows[0].fields.contains_key("frequency_hz"));
        assert_eq!(rows[1].fields["frequency_hz"], 7.1);
        assert!(!rows[1].fields.contains_key("rig"));
        let err = parse_influx(br#"{"results":[{"error":"database not found"}]}"#).unwrap_err();
        assert!(err.to_string().contains("database not found"), "{err}");
    }

    #[test]
    fn a_victoria_export_folds_series_into_rows() {
        let body = br#"{"metric":{"__name__":"dtop_twin_modes_frequency_hz","rig":"r","mode":"1"},"values":[7.1,7.0],"timestamps":[2000,1000]}
{"metric":{"__name__":"dtop_twin_modes_in_band","rig":"r","mode":"1"},"values":[1,0],"timestamps":[2000,1000]}
"#;
        let rows = parse_victoria(Record::Modes, body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].time_ms, 1000);
        assert_eq!(rows[0].fields["frequency_hz"], 7.0);
        assert_eq!(rows[1].fields["in_band"], 1.0);
    }

    #[test]
    fn a_victoria_export_keeps_storeys_apart_and_names_them_as_influxdb_does() {
        let body = br#"{"metric":{"__name__":"dtop_twin_stiffness_stiffness_n_per_m","rig":"r","storey":"1"},"values":[1000.0],"timestamps":[2000]}
{"metric":{"__name__":"dtop_twin_stiffness_stiffness_n_per_m","rig":"r","storey":"2"},"values":[900.0],"timestamps":[2000]}
"#;
        let rows = parse_victoria(Record::Stiffness, body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].fields["storey"], "1");
        assert_eq!(rows[1].fields["storey"], "2");
        assert_eq!(rows[1].fields["stiffness_n_per_m"], 900.0);
    }

    #[test]
    fn csv_has_every_field_any_row_has_and_quotes_reasons() {
        let mut a = BTreeMap::new();
        a.insert("frequency_hz".to_owned(), serde_json::json!(7.1));
        let mut b = BTreeMap::new();
        b.insert(
            "reason".to_owned(),
            serde_json::json!("too quiet, no modes"),
        );
        let answer = ParametersAnswer {
            rig: "r".into(),
            record: Record::Modes,
            rows: vec![
                ParameterRow {
                    time_ms: 1,
                    mode: "1".into(),
                    fields: a,
                },
                ParameterRow {
                    time_ms: 2,
                    mode: "none".into(),
                    fields: b,
                },
            ],
        };
        assert_eq!(
            to_csv(&answer),
            "time_ms,mode,frequency_hz,reason\n1,1,7.1,\n2,none,,\"too quiet, no modes\"\n"
        );
    }

    #[test]
    fn the_influx_query_quotes_the_rig_and_bounds_the_rows() {
        let q = influxql("a'b", Record::Drift, 5, 9);
        assert!(
            q.starts_with("SELECT * FROM \"dtop_twin_drift\" WHERE \"rig\" = 'a\\'b'"),
            "{q}"
        );
        assert!(q.ends_with(&format!("LIMIT {}", MAX_ROWS + 1)), "{q}");
    }
}
