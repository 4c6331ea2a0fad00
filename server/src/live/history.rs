//! Owns the history view's data: every stream-0 channel's min and max per pixel bucket, read
//! from the store the twin writes (`dtop_samples`, ARCHITECTURE § Storage schema): InfluxDB 1.x
//! with one InfluxQL query (`/query`), or VictoriaMetrics through [`super::victoria`], and the
//! same as CSV. The routes (`GET /api/v1/rigs/{rig}/history[.csv]`) are in `crate::http::rigs`.
//! The query builder, the bucket rule, the answer's parser and the CSV writer are pure; only
//! [`History::query`] does I/O. InfluxDB 2.x (Flux) is not read.
//!
//! # The bucket rule
//! `bucket_ms = ceil((to_ms − from_ms) / px)`; bucket `k` covers
//! `[from_ms + k·bucket_ms, from_ms + (k+1)·bucket_ms) ∩ [from_ms, to_ms)` for
//! `k = 0 .. ceil((to_ms − from_ms) / bucket_ms)`. Every bucket is in the answer; one with no
//! sample of a channel (before the rig started, a gap the edge declared lost) is `null` there,
//! never a zero. InfluxDB aligns `GROUP BY time()` to the epoch, so the query passes
//! `from_ms mod bucket_ms` as its offset, and the parser refuses a bucket off that grid.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::parameters;
pub use super::range::{HistoryError, MAX_PX, Range};
use super::record;
use super::victoria::{self, Stat};
use crate::config::{HistoryBackend, HistoryConfig};

/// One channel's envelope.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Envelope {
    /// Channel name (the InfluxDB field).
    pub name: String,
    /// Smallest value per bucket (null where the bucket holds no sample of this channel).
    pub min: Vec<Option<f64>>,
    /// Largest value per bucket.
    pub max: Vec<Option<f64>>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryAnswer {
    /// The rig.
    pub rig: String,
    /// Start of every bucket of the range, ms since the Unix epoch: `from_ms + k·bucket_ms`.
    pub t_ms: Vec<i64>,
    /// Bucket width, ms: `ceil((to_ms − from_ms) / px)`.
    pub bucket_ms: i64,
    /// Per channel.
    pub channels: Vec<Envelope>,
}

impl HistoryAnswer {
    /// Every bucket of `range`, each a gap: what the stores' answers are folded into.
    pub fn gaps(rig: &str, channels: &[String], range: &Range) -> Self {
        let n = range.buckets_n();
        let w = range.bucket_ms();
        Self {
            rig: rig.to_owned(),
            t_ms: (0..n)
                .map(|k| range.from_ms + w * i64::try_from(k).unwrap_or(i64::MAX / w))
                .collect(),
            bucket_ms: w,
            channels: channels
                .iter()
                .map(|c| Envelope {
                    name: c.clone(),
                    min: vec![None; n],
                    max: vec![None; n],
                })
                .collect(),
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The InfluxQL query for `channels` of `rig`'s stream 0 over `range`, grouped on the range's
/// own bucket grid (the offset moves InfluxDB's epoch-aligned buckets to start at `from_ms`).
pub fn influxql(rig: &str, channels: &[String], range: &Range) -> String {
    let fields: Vec<String> = channels
        .iter()
        .flat_map(|c| {
            [
                format!(
                    "min({}) AS {}",
                    quote_ident(c),
                    quote_ident(&format!("{c}__min"))
                ),
                format!(
                    "max({}) AS {}",
                    quote_ident(c),
                    quote_ident(&format!("{c}__max"))
                ),
            ]
        })
        .collect();
    let w = range.bucket_ms();
    let offset_ms = range.from_ms.rem_euclid(w);
    format!(
        "SELECT {} FROM \"dtop_samples\" WHERE \"rig\" = {} AND \"stream\" = '0' AND time >= {}ms \
         AND time < {}ms GROUP BY time({w}ms, {offset_ms}ms) fill(none)",
        fields.join(", "),
        quote_string(rig),
        range.from_ms,
        range.to_ms,
    )
}

#[derive(Debug, Deserialize)]
struct QueryAnswer {
    #[serde(default)]
    results: Vec<QueryResult>,
}

#[derive(Debug, Deserialize)]
struct QueryResult {
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

/// Parses InfluxDB's JSON answer (`epoch=ms`) to the query of [`influxql`] onto the range's
/// bucket grid.
///
/// # Errors
/// InfluxDB's own error, a shape this parser does not know, or a bucket off the grid.
pub fn parse_answer(
    rig: &str,
    channels: &[String],
    range: &Range,
    body: &[u8],
) -> Result<HistoryAnswer, HistoryError> {
    let answer: QueryAnswer =
        serde_json::from_slice(body).map_err(|e| HistoryError::Unreadable(e.to_string()))?;
    let w = range.bucket_ms();
    let mut out = HistoryAnswer::gaps(rig, channels, range);
    for result in answer.results {
        if let Some(error) = result.error {
            return Err(HistoryError::Store {
                store: "InfluxDB",
                error,
            });
        }
        for series in result.series {
            let col = |name: &str| series.columns.iter().position(|c| c == name);
            let time =
                col("time").ok_or_else(|| HistoryError::Unreadable("no time column".into()))?;
            let index: Vec<(Option<usize>, Option<usize>)> = channels
                .iter()
                .map(|c| (col(&format!("{c}__min")), col(&format!("{c}__max"))))
                .collect();
            for row in &series.values {
                let t = row
                    .get(time)
                    .and_then(serde_json::Value::as_i64)
                    .ok_or_else(|| HistoryError::Unreadable("a row without its time".into()))?;
                let k = range.bucket_at(t).ok_or_else(|| {
                    HistoryError::Unreadable(format!(
                        "a bucket at {t} ms is off the grid from {} ms by {w} ms",
                        range.from_ms
                    ))
                })?;
                for (envelope, (lo, hi)) in out.channels.iter_mut().zip(&index) {
                    let at = |i: &Option<usize>| {
                        i.and_then(|i| row.get(i))
                            .and_then(serde_json::Value::as_f64)
                    };
                    envelope.min[k] = at(lo);
                    envelope.max[k] = at(hi);
                }
            }
        }
    }
    Ok(out)
}

/// The answer as CSV: `time_ms` then `{channel}_min,{channel}_max` per channel; empty cells
/// where a bucket has no value.
pub fn to_csv(answer: &HistoryAnswer) -> String {
    let mut out = String::from("time_ms");
    for c in &answer.channels {
        out.push_str(&format!(",{0}_min,{0}_max", c.name));
    }
    out.push('\n');
    let cell = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    for (i, t) in answer.t_ms.iter().enumerate() {
        out.push_str(&t.to_string());
        for c in &answer.channels {
            out.push(',');
            out.push_str(&cell(c.min.get(i).copied().flatten()));
            out.push(',');
            out.push_str(&cell(c.max.get(i).copied().flatten()));
        }
        out.push('\n');
    }
    out
}

/// The history store's client.
#[derive(Debug, Clone)]
pub struct History {
    config: HistoryConfig,
    client: reqwest::Client,
}

impl History {
    /// A client for `config`.
    pub fn new(config: HistoryConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(config.timeout_s))
            .build()
            .unwrap_or_default();
        Self { config, client }
    }

    /// Widest range one request may ask for, ms.
    pub fn max_range_ms(&self) -> i64 {
        i64::try_from(self.config.max_range_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000)
    }

    fn store(&self) -> &'static str {
        match self.config.backend {
            HistoryBackend::InfluxV1 => "InfluxDB",
            HistoryBackend::VictoriaMetrics => "VictoriaMetrics",
        }
    }

    /// GET `path` with `params` under the store's base URL: the body of a 2xx answer.
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Vec<u8>, HistoryError> {
        let base = &self.config.url;
        let store = self.store();
        let mut url = reqwest::Url::parse(base)
            .and_then(|u| u.join(path))
            .map_err(|_| HistoryError::BadUrl(base.clone()))?;
        url.query_pairs_mut().extend_pairs(params);
        let unreachable = |e: reqwest::Error| {
            if e.is_timeout() {
                HistoryError::TimedOut {
                    store,
                    url: base.clone(),
                    timeout_s: self.config.timeout_s,
                }
            } else {
                HistoryError::Unreachable {
                    store,
                    url: base.clone(),
                    source: e.without_url(),
                }
            }
        };
        let response = self.client.get(url).send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(HistoryError::Refused {
                store,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            });
        }
        Ok(body.to_vec())
    }

    /// The raw samples of `channels` of `rig` in `[from_ms, to_ms)`, as the study input `name`
    /// (see [`super::record`]).
    ///
    /// # Errors
    /// The store unreachable, slower than the timeout, answering an error, or holding no
    /// sample of every channel in the range.
    pub async fn record(
        &self,
        name: &str,
        rig: &str,
        channels: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<dtop_studies::NamedArray, HistoryError> {
        let samples = match self.config.backend {
            HistoryBackend::InfluxV1 => {
                let database = self.config.database.clone().unwrap_or_default();
                let params = record::influx_params(&database, rig, channels, from_ms, to_ms);
                let body = self.get("query", &params).await?;
                record::parse_influx(channels, &body)?
            }
            HistoryBackend::VictoriaMetrics => {
                let mut out = Vec::with_capacity(channels.len());
                for channel in channels {
                    let params = record::victoria_params(rig, channel, from_ms, to_ms);
                    let body = self.get("api/v1/export", &params).await?;
                    out.push(record::parse_victoria(&body)?);
                }
                out
            }
        };
        tokio::task::spawn_blocking({
            let (name, channels) = (name.to_owned(), channels.to_vec());
            move || record::align(&name, &channels, from_ms, &samples)
        })
        .await
        .map_err(|e| HistoryError::Unreadable(format!("aligning the record: {e}")))?
    }

    /// `rig`'s parameter history (`record`) in `[from_ms, to_ms)` (see [`super::parameters`]).
    ///
    /// # Errors
    /// The store unreachable, slower than the timeout, answering an error, or holding more
    /// rows than one answer may.
    pub async fn parameters(
        &self,
        rig: &str,
        record: parameters::Record,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<parameters::ParametersAnswer, HistoryError> {
        let rows = match self.config.backend {
            HistoryBackend::InfluxV1 => {
                let params = [
                    ("db", self.config.database.clone().unwrap_or_default()),
                    ("epoch", "ms".to_owned()),
                    ("q", parameters::influxql(rig, record, from_ms, to_ms)),
                ];
                parameters::parse_influx(&self.get("query", &params).await?)?
            }
            HistoryBackend::VictoriaMetrics => {
                let params = parameters::victoria_params(rig, record, from_ms, to_ms);
                parameters::parse_victoria(record, &self.get("api/v1/export", &params).await?)?
            }
        };
        Ok(parameters::ParametersAnswer {
            rig: rig.to_owned(),
            record,
            rows,
        })
    }

    /// Runs the query of `channels` of `rig` over `range` on the configured store.
    ///
    /// # Errors
    /// The store unreachable, slower than the timeout, or answering an error.
    pub async fn query(
        &self,
        rig: &str,
        channels: &[String],
        range: &Range,
    ) -> Result<HistoryAnswer, HistoryError> {
        match self.config.backend {
            HistoryBackend::InfluxV1 => {
                let params = [
                    ("db", self.config.database.clone().unwrap_or_default()),
                    ("epoch", "ms".to_owned()),
                    ("q", influxql(rig, channels, range)),
                ];
                let body = self.get("query", &params).await?;
                parse_answer(rig, channels, range, &body)
            }
            HistoryBackend::VictoriaMetrics => {
                let mut out = HistoryAnswer::gaps(rig, channels, range);
                for envelope in &mut out.channels {
                    for (stat, into) in [
                        (Stat::Min, &mut envelope.min),
                        (Stat::Max, &mut envelope.max),
                    ] {
                        for request in victoria::requests(rig, &envelope.name, stat, range) {
                            let body = self.get(request.path, &request.params).await?;
                            victoria::fold_answer(&body, stat, range, into)?;
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn range() -> Range {
        Range {
            from_ms: 1_000,
            to_ms: 11_000,
            px: 1000,
        }
    }

    #[test]
    fn one_bucket_per_pixel_rounded_up_to_whole_milliseconds() {
        assert_eq!(range().bucket_ms(), 10);
        assert_eq!(range().buckets_n(), 1000);
        let r = Range { px: 3, ..range() };
        assert_eq!(r.bucket_ms(), 3334);
        assert_eq!(r.buckets_n(), 3);
        // 3500 ms over 333 px: 11 ms buckets, the last one cut by to_ms.
        let r = Range {
            from_ms: 1_003,
            to_ms: 4_503,
            px: 333,
        };
        assert_eq!((r.bucket_ms(), r.buckets_n()), (11, 319));
        assert_eq!(r.bucket_at(1_003), Some(0));
        assert_eq!(r.bucket_at(1_003 + 318 * 11), Some(318));
        assert_eq!(r.bucket_at(1_003 + 319 * 11), None);
        assert_eq!(r.bucket_at(1_000), None);
        assert_eq!(r.bucket_at(1_004), None);
    }

    #[test]
    fn a_range_backwards_too_wide_or_with_bad_pixels_is_refused_naming_every_field() {
        let bad = Range {
            to_ms: 0,
            px: 0,
            ..range()
        };
        assert_eq!(bad.problems(86_400_000).len(), 2);
        let wide = Range {
            from_ms: 0,
            to_ms: 86_400_001,
            px: MAX_PX + 1,
        };
        let fields: Vec<String> = wide
            .problems(86_400_000)
            .iter()
            .map(|p| p.field.clone())
            .collect();
        assert_eq!(fields, ["to_ms", "px"]);
        assert!(
            Range {
                to_ms: 86_400_000,
                px: 1,
                ..wide
            }
            .problems(86_400_000)
            .is_empty()
        );
    }

    #[test]
    fn the_query_quotes_names_and_the_rig_so_nothing_escapes() {
        let q = influxql(
            "r1' OR '1'='1",
            &["floor1_accel".into(), "we\"ird".into()],
            &range(),
        );
        assert!(q.contains("\"rig\" = 'r1\\' OR \\'1\\'=\\'1'"), "{q}");
        assert!(
            q.contains("min(\"floor1_accel\") AS \"floor1_accel__min\""),
            "{q}"
        );
        assert!(q.contains("max(\"we\\\"ird\")"), "{q}");
        assert!(
            q.ends_with("time >= 1000ms AND time < 11000ms GROUP BY time(10ms, 0ms) fill(none)"),
            "{q}"
        );
    }

    #[test]
    fn the_query_groups_on_the_ranges_own_grid_not_the_epochs() {
        let r = Range {
            from_ms: 1_700_000_000_123,
            to_ms: 1_700_000_003_623,
            px: 333,
        };
        let q = influxql("r1", &["a".into()], &r);
        // 1_700_000_000_123 mod 11 = 7.
        assert!(q.ends_with("GROUP BY time(11ms, 7ms) fill(none)"), "{q}");
        let before_epoch = Range {
            from_ms: -5,
            to_ms: 5,
            px: 10,
        };
        assert!(influxql("r1", &["a".into()], &before_epoch).contains("time(1ms, 0ms)"));
    }

    #[test]
    fn parses_an_influx_answer_onto_every_bucket_with_gaps_as_nulls_and_writes_it_as_csv() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"dtop_samples",
            "columns":["time","a__min","a__max","b__min","b__max"],
            "values":[[1000,-1.5,2.0,null,null],[1020,0.25,0.5,3,4]]}]}]}"#;
        let channels = vec!["a".to_owned(), "b".to_owned()];
        let r = Range {
            from_ms: 1_000,
            to_ms: 1_030,
            px: 3,
        };
        let a = parse_answer("r1", &channels, &r, body).unwrap();
        assert_eq!(a.t_ms, [1000, 1010, 1020]);
        assert_eq!(a.channels[0].min, [Some(-1.5), None, Some(0.25)]);
        assert_eq!(a.channels[1].max, [None, None, Some(4.0)]);
        assert_eq!(
            to_csv(&a),
            "time_ms,a_min,a_max,b_min,b_max\n1000,-1.5,2,,\n1010,,,,\n1020,0.25,0.5,3,4\n"
        );
        let empty =
            parse_answer("r1", &channels, &r, br#"{"results":[{"statement_id":0}]}"#).unwrap();
        assert_eq!(empty.t_ms.len(), 3);
        assert!(
            empty
                .channels
                .iter()
                .all(|c| c.min.iter().all(Option::is_none))
        );
        let err = br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#;
        assert!(
            parse_answer("r1", &channels, &r, err)
                .unwrap_err()
                .to_string()
                .contains("database not found")
        );
    }

    #[test]
    fn an_answer_off_the_bucket_grid_is_refused_not_shifted() {
        // InfluxDB's epoch-aligned buckets, had the offset been left out.
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"dtop_samples",
            "columns":["time","a__min","a__max"],"values":[[1000,1,2]]}]}]}"#;
        let r = Range {
            from_ms: 1_003,
            to_ms: 1_033,
            px: 3,
        };
        let e = parse_answer("r1", &["a".to_owned()], &r, body).unwrap_err();
        assert!(e.to_string().contains("off the grid"), "{e}");
    }
}
