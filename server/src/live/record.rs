//! Owns reading a rig's raw samples over a time range from the store the twin writes, as a
//! study's measured input: the table `acceleration` with `time_s` (seconds from the range's
//! start) and one column per stream-0 channel, as the `oma`, `ema` and `crossval` kinds take
//! it. InfluxDB 1.x answers a chunked InfluxQL query (`epoch=ns`); VictoriaMetrics its
//! `/api/v1/export` (one JSON line per series, ms timestamps). The query builders, the parsers
//! and the alignment are pure; only [`super::history::History::record`] does I/O.
//!
//! A row is a sample time at which every channel has a value. A time where a channel is
//! missing is left out, so the table shows it as a gap in `time_s`; the kind refuses a record
//! with gaps and says where (never a spectrum across a hole presented as right).

use dtop_studies::{Column, FieldProblem, NamedArray};
use serde::Deserialize;

use super::range::HistoryError;
use super::victoria;

/// Longest range one record may span, s.
pub const MAX_RECORD_S: i64 = 3600;
/// Most samples per channel one record may hold (an hour at 1 kHz is 3.6 million).
pub const MAX_RECORD_SAMPLES: usize = 4_000_000;
/// Rows per chunk of InfluxDB's chunked answer.
const INFLUX_CHUNK_ROWS: usize = 50_000;

/// A stored range of one rig to read as a study input.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordSource {
    /// The rig.
    pub rig: String,
    /// Start, ms since the Unix epoch (inclusive).
    pub from_ms: i64,
    /// End, ms since the Unix epoch (exclusive).
    pub to_ms: i64,
    /// The name of the input it becomes (default `acceleration`).
    #[serde(default = "default_input")]
    pub input: String,
    /// Channels to read (default: every stream-0 channel the rig announced).
    #[serde(default)]
    pub channels: Vec<String>,
}

fn default_input() -> String {
    "acceleration".to_owned()
}

impl RecordSource {
    /// Every problem with the range, each under `record.`.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        if self.to_ms <= self.from_ms {
            out.push(FieldProblem::new(
                "record.to_ms",
                format!(
                    "must be after from_ms ({}), got {}",
                    self.from_ms, self.to_ms
                ),
            ));
        } else if self.to_ms - self.from_ms > MAX_RECORD_S * 1000 {
            out.push(FieldProblem::new(
                "record.to_ms",
                format!(
                    "the range is {} s; a record may span at most {MAX_RECORD_S} s: pick a shorter range",
                    (self.to_ms - self.from_ms) / 1000
                ),
            ));
        }
        if self.from_ms < 0 {
            out.push(FieldProblem::new("record.from_ms", "must not be negative"));
        }
        if let Some(p) = dtop_studies::inputs::name_problem(&self.input) {
            out.push(FieldProblem::new("record.input", p));
        }
        out
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The InfluxQL query of `channels` of `rig`'s stream 0, raw, in time order.
pub fn influxql(rig: &str, channels: &[String], from_ms: i64, to_ms: i64) -> String {
    let fields: Vec<String> = channels.iter().map(|c| quote_ident(c)).collect();
    format!(
        "SELECT {} FROM \"dtop_samples\" WHERE \"rig\" = {} AND \"stream\" = '0' AND time >= {from_ms}ms \
         AND time < {to_ms}ms ORDER BY time ASC",
        fields.join(", "),
        quote_string(rig),
    )
}

/// The query pairs of InfluxDB's `/query` for [`influxql`], chunked.
pub fn influx_params(
    database: &str,
    rig: &str,
    channels: &[String],
    from_ms: i64,
    to_ms: i64,
) -> Vec<(&'static str, String)> {
    vec![
        ("db", database.to_owned()),
        ("epoch", "ns".to_owned()),
        ("chunked", "true".to_owned()),
        ("chunk_size", INFLUX_CHUNK_ROWS.to_string()),
        ("q", influxql(rig, channels, from_ms, to_ms)),
    ]
}

#[derive(Debug, Deserialize)]
struct InfluxChunk {
    #[serde(default)]
    results: Vec<InfluxResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InfluxResult {
    #[serde(default)]
    series: Vec<InfluxSeries>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InfluxSeries {
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<serde_json::Value>>,
}

/// Per channel, its (time ns, value) samples, in the order of `channels`.
pub type Samples = Vec<Vec<(i64, f64)>>;

fn too_many() -> HistoryError {
    HistoryError::Record(format!(
        "the range holds more than {MAX_RECORD_SAMPLES} samples per channel: pick a shorter range"
    ))
}

/// Parses InfluxDB's chunked answer (one JSON object per line) to the query of [`influxql`].
///
/// # Errors
/// An error InfluxDB reports, or an answer of another shape.
pub fn parse_influx(channels: &[String], body: &[u8]) -> Result<Samples, HistoryError> {
    let mut out: Samples = vec![Vec::new(); channels.len()];
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let chunk: InfluxChunk = serde_json::from_slice(line)
            .map_err(|e| HistoryError::Unreadable(format!("InfluxDB's answer: {e}")))?;
        if let Some(e) = chunk.error {
            return Err(HistoryError::Store {
                store: "InfluxDB",
                error: e,
            });
        }
        for result in chunk.results {
            if let Some(e) = result.error {
                return Err(HistoryError::Store {
                    store: "InfluxDB",
                    error: e,
                });
            }
            for series in result.series {
                let index: Vec<Option<usize>> = channels
                    .iter()
                    .map(|c| series.columns.iter().position(|k| k == c))
                    .collect();
                for row in series.values {
                    let Some(t) = row.first().and_then(serde_json::Value::as_i64) else {
                        return Err(HistoryError::Unreadable(
                            "InfluxDB's answer has a row without an integer time".into(),
                        ));
                    };
                    for (c, column) in index.iter().enumerate() {
                        if let Some(v) = column.and_then(|k| row.get(k)).and_then(|v| v.as_f64()) {
                            out[c].push((t, v));
                            if out[c].len() > MAX_RECORD_SAMPLES {
                                return Err(too_many());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The query pairs of VictoriaMetrics' `/api/v1/export` for one channel.
pub fn victoria_params(
    rig: &str,
    channel: &str,
    from_ms: i64,
    to_ms: i64,
) -> Vec<(&'static str, String)> {
    let seconds = |t_ms: i64| format!("{}.{:03}", t_ms.div_euclid(1000), t_ms.rem_euclid(1000));
    vec![
        ("match[]", victoria::selector(rig, channel)),
        ("start", seconds(from_ms)),
        // `end` is inclusive in VictoriaMetrics; the range's end is not.
        ("end", seconds(to_ms - 1)),
    ]
}

#[derive(Debug, Deserialize)]
struct ExportLine {
    #[serde(default)]
    values: Vec<Option<f64>>,
    #[serde(default)]
    timestamps: Vec<i64>,
}

/// Parses VictoriaMetrics' export answer for one channel to (time ns, value), sorted by time.
///
/// # Errors
/// An answer of another shape, or more samples than a record may hold.
pub fn parse_victoria(body: &[u8]) -> Result<Vec<(i64, f64)>, HistoryError> {
    let mut out = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let series: ExportLine = serde_json::from_slice(line)
            .map_err(|e| HistoryError::Unreadable(format!("VictoriaMetrics' export: {e}")))?;
        if series.values.len() != series.timestamps.len() {
            return Err(HistoryError::Unreadable(
                "VictoriaMetrics' export has a series with unequal values and timestamps".into(),
            ));
        }
        for (t_ms, v) in series.timestamps.iter().zip(series.values) {
            if let Some(v) = v {
                out.push((t_ms.saturating_mul(1_000_000), v));
            }
        }
        if out.len() > MAX_RECORD_SAMPLES {
            return Err(too_many());
        }
    }
    out.sort_by_key(|(t, _)| *t);
    Ok(out)
}

/// The table `name`: `time_s` from `from_ms`, then one column per channel, holding only the
/// times at which every channel has a sample (a duplicate time keeps its first value).
///
/// # Errors
/// No sample at all in the range (with what to do about it).
pub fn align(
    name: &str,
    channels: &[String],
    from_ms: i64,
    samples: &Samples,
) -> Result<NamedArray, HistoryError> {
    let mut cursors = vec![0usize; channels.len()];
    let mut times = Vec::new();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); channels.len()];
    let Some(first) = samples.first() else {
        return Err(HistoryError::Record("no channel to read".into()));
    };
    let mut last_t = None;
    'rows: for &(t, v0) in first {
        if last_t == Some(t) {
            continue;
        }
        last_t = Some(t);
        let mut row = Vec::with_capacity(channels.len());
        row.push(v0);
        for (c, series) in samples.iter().enumerate().skip(1) {
            let cursor = &mut cursors[c];
            while *cursor < series.len() && series[*cursor].0 < t {
                *cursor += 1;
            }
            match series.get(*cursor) {
                Some(&(tc, v)) if tc == t => row.push(v),
                _ => continue 'rows,
            }
        }
        times.push((t - from_ms * 1_000_000) as f64 * 1e-9);
        for (c, v) in row.into_iter().enumerate() {
            values[c].push(v);
        }
    }
    if times.is_empty() {
        return Err(HistoryError::Record(
            "the store holds no sample of every channel in this range: check the rig and the \
             range (the live page's history shows what is stored)"
                .into(),
        ));
    }
    let mut columns = vec![Column {
        name: "time_s".into(),
        values: times,
    }];
    columns.extend(channels.iter().zip(values).map(|(c, v)| Column {
        name: c.clone(),
        values: v,
    }));
    Ok(NamedArray {
        name: name.to_owned(),
        columns,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn influxql_quotes_the_rig_and_every_channel() {
        let q = influxql("rig'1", &names(&["floor1_accel", "a\"b"]), 1000, 2000);
        assert_eq!(
            q,
            "SELECT \"floor1_accel\", \"a\\\"b\" FROM \"dtop_samples\" WHERE \"rig\" = 'rig\\'1' \
             AND \"stream\" = '0' AND time >= 1000ms AND time < 2000ms ORDER BY time ASC"
        );
    }

    #[test]
    fn a_chunked_influx_answer_becomes_samples_per_channel() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"dtop_samples","columns":["time","b","a"],"values":[[1000000,2.0,1.0],[2000000,null,3.0]],"partial":true}],"partial":true}]}
{"results":[{"statement_id":0,"series":[{"name":"dtop_samples","columns":["time","b","a"],"values":[[3000000,4.0,5.0]]}]}]}
"#;
        let s = parse_influx(&names(&["a", "b"]), body).unwrap();
        assert_eq!(
            s[0],
            vec![(1_000_000, 1.0), (2_000_000, 3.0), (3_000_000, 5.0)]
        );
        assert_eq!(s[1], vec![(1_000_000, 2.0), (3_000_000, 4.0)]);
        let err = parse_influx(&names(&["a"]), br#"{"results":[{"error":"bad"}]}"#).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
    }

    #[test]
    fn rows_missing_a_channel_are_left_out_so_the_gap_shows_in_time() {
        let samples = vec![
            vec![
                (1_000_000_000, 1.0),
                (1_001_000_000, 2.0),
                (1_002_000_000, 3.0),
            ],
            vec![(1_000_000_000, 10.0), (1_002_000_000, 30.0)],
        ];
        let t = align("acceleration", &names(&["a", "b"]), 1000, &samples).unwrap();
        assert_eq!(t.columns[0].values, vec![0.0, 0.002]);
        assert_eq!(t.columns[1].values, vec![1.0, 3.0]);
        assert_eq!(t.columns[2].values, vec![10.0, 30.0]);
        assert!(align("x", &names(&["a"]), 0, &vec![vec![]]).is_err());
    }

    #[test]
    fn a_victoria_export_is_sorted_and_in_ns() {
        let body = br#"{"metric":{"__name__":"dtop_samples_a"},"values":[2.0,1.0],"timestamps":[1002,1001]}
"#;
        assert_eq!(
            parse_victoria(body).unwrap(),
            vec![(1_001_000_000, 1.0), (1_002_000_000, 2.0)]
        );
    }

    #[test]
    fn a_record_source_reports_every_problem() {
        let s = RecordSource {
            rig: "r".into(),
            from_ms: -5,
            to_ms: -10,
            input: "Bad".into(),
            channels: vec![],
        };
        let fields: Vec<String> = s.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["record.to_ms", "record.from_ms", "record.input"]);
    }
}
