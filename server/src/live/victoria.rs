//! Owns the history view's read of VictoriaMetrics (the twin's v2 writer stores each channel as
//! the series `dtop_samples_{channel}{rig, stream}` at ms timestamps): the MetricsQL requests
//! that give `min_over_time`/`max_over_time` per bucket of [`super::history`]'s rule, and
//! their answers' parser. Pure; the HTTP calls are `History::query`'s.
//!
//! VictoriaMetrics evaluates `f(x[w])` at time `t` over `(t − w, t]`; its timestamps are whole
//! ms, so bucket k, `[from + k·w, from + (k+1)·w)`, is the evaluation at
//! `t_k = from + (k+1)·w − 1` with window `w`: one `query_range` from `t_0` by `step = w`. A last
//! bucket cut by `to` is one instant query at `to − 1` with the window cut to match.

use serde::Deserialize;

use super::range::{HistoryError, Range};

/// The two statistics a history answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Min,
    Max,
}

impl Stat {
    fn function(self) -> &'static str {
        match self {
            Stat::Min => "min_over_time",
            Stat::Max => "max_over_time",
        }
    }
}

fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The series selector of one channel of `rig`'s stream 0 (every name quoted, so neither a
/// rig id nor a channel name can change the query).
pub fn selector(rig: &str, channel: &str) -> String {
    format!(
        "{{__name__={},rig={},stream=\"0\"}}",
        quote(&format!("dtop_samples_{channel}")),
        quote(rig)
    )
}

/// Seconds with ms decimals, as VictoriaMetrics' `start`/`end`/`time` take them.
fn seconds(t_ms: i64) -> String {
    format!("{}.{:03}", t_ms.div_euclid(1000), t_ms.rem_euclid(1000))
}

/// One request: its path under the base URL and its query pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `api/v1/query_range` or `api/v1/query`.
    pub path: &'static str,
    /// The query pairs.
    pub params: Vec<(&'static str, String)>,
}

/// The requests for `stat` of `channel` over `range`: a range query over the whole buckets,
/// and an instant query for a last bucket cut by `to_ms`.
pub fn requests(rig: &str, channel: &str, stat: Stat, range: &Range) -> Vec<Request> {
    let w = range.bucket_ms();
    let n = i64::try_from(range.buckets_n()).unwrap_or(0);
    let whole = if range.from_ms + n * w > range.to_ms {
        n - 1
    } else {
        n
    };
    let series = selector(rig, channel);
    let mut out = Vec::new();
    if whole > 0 {
        out.push(Request {
            path: "api/v1/query_range",
            params: vec![
                ("query", format!("{}({series}[{w}ms])", stat.function())),
                ("start", seconds(range.from_ms + w - 1)),
                ("end", seconds(range.from_ms + whole * w - 1)),
                ("step", format!("{w}ms")),
                ("nocache", "1".to_owned()),
            ],
        });
    }
    if whole < n {
        let cut_ms = range.to_ms - (range.from_ms + whole * w);
        out.push(Request {
            path: "api/v1/query",
            params: vec![
                (
                    "query",
                    format!("{}({series}[{cut_ms}ms])", stat.function()),
                ),
                ("time", seconds(range.to_ms - 1)),
                ("nocache", "1".to_owned()),
            ],
        });
    }
    out
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Debug, Deserialize)]
struct Series {
    /// A range query's points.
    #[serde(default)]
    values: Vec<(f64, String)>,
    /// An instant query's point.
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// Folds one answer into `into` (one value per bucket; several matching series are folded
/// with `stat`).
///
/// # Errors
/// VictoriaMetrics' own error, an unreadable answer, or a point off the buckets' grid.
pub fn fold_answer(
    body: &[u8],
    stat: Stat,
    range: &Range,
    into: &mut [Option<f64>],
) -> Result<(), HistoryError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| HistoryError::Unreadable(e.to_string()))?;
    if answer.status != "success" {
        return Err(HistoryError::Store {
            store: "VictoriaMetrics",
            error: answer.error.unwrap_or_else(|| answer.status.clone()),
        });
    }
    let w = range.bucket_ms();
    for series in answer.data.map(|d| d.result).unwrap_or_default() {
        for (t_s, v) in series.values.iter().chain(series.value.iter()) {
            // Whole ms since the epoch are exact in an f64 of seconds' worth of ms.
            let t_ms = (t_s * 1000.0).round() as i64;
            // The last bucket ends at to_ms − 1 whether or not to_ms cut it.
            let k = if t_ms == range.to_ms - 1 {
                range.buckets_n().checked_sub(1)
            } else {
                range.bucket_at(t_ms + 1 - w)
            }
            .ok_or_else(|| {
                HistoryError::Unreadable(format!(
                    "a point at {t_ms} ms is off the grid from {} ms by {w} ms",
                    range.from_ms
                ))
            })?;
            let v: f64 = v
                .parse()
                .map_err(|_| HistoryError::Unreadable(format!("value {v:?}")))?;
            let slot = &mut into[k];
            *slot = Some(match (*slot, stat) {
                (None, _) => v,
                (Some(o), Stat::Min) => o.min(v),
                (Some(o), Stat::Max) => o.max(v),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn whole_buckets_are_one_range_query_ending_each_bucket_a_millisecond_early() {
        let r = Range {
            from_ms: 1_700_000_000_003,
            to_ms: 1_700_000_000_033,
            px: 3,
        };
        let q = requests("r1", "floor1_accel", Stat::Min, &r);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].path, "api/v1/query_range");
        assert_eq!(
            q[0].params,
            [
                (
                    "query",
                    "min_over_time({__name__=\"dtop_samples_floor1_accel\",rig=\"r1\",stream=\"0\"}[10ms])"
                        .to_owned()
                ),
                ("start", "1700000000.012".to_owned()),
                ("end", "1700000000.032".to_owned()),
                ("step", "10ms".to_owned()),
                ("nocache", "1".to_owned()),
            ]
        );
    }

    #[test]
    fn a_last_bucket_cut_by_the_range_end_is_an_instant_query_over_what_is_left() {
        // 35 ms over 3 px: 12 ms buckets, the third cut to 11 ms.
        let r = Range {
            from_ms: 1_000,
            to_ms: 1_035,
            px: 3,
        };
        let q = requests("r\"1", "a", Stat::Max, &r);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].params[2], ("end", "1.023".to_owned()));
        assert_eq!(q[1].path, "api/v1/query");
        assert_eq!(
            q[1].params[0].1,
            "max_over_time({__name__=\"dtop_samples_a\",rig=\"r\\\"1\",stream=\"0\"}[11ms])"
        );
        assert_eq!(q[1].params[1], ("time", "1.034".to_owned()));
    }

    #[test]
    fn answers_fold_onto_the_buckets_with_several_series_folded_by_the_statistic() {
        let r = Range {
            from_ms: 1_000,
            to_ms: 1_035,
            px: 3,
        };
        let mut min = vec![None; 3];
        let range_body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1.011,"2"],[1.023,"-1.5"]]},
            {"metric":{},"values":[[1.011,"1"]]}]}}"#;
        fold_answer(range_body, Stat::Min, &r, &mut min).unwrap();
        let instant = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1.034,"7"]}]}}"#;
        fold_answer(instant, Stat::Min, &r, &mut min).unwrap();
        assert_eq!(min, [Some(1.0), Some(-1.5), Some(7.0)]);
        let off = br#"{"status":"success","data":{"result":[{"values":[[1.010,"1"]]}]}}"#;
        assert!(fold_answer(off, Stat::Min, &r, &mut min).is_err());
        let err = br#"{"status":"error","errorType":"bad_data","error":"cannot parse"}"#;
        assert!(
            fold_answer(err, Stat::Min, &r, &mut min)
                .unwrap_err()
                .to_string()
                .contains("cannot parse")
        );
    }
}
