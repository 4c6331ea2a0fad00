//! Owns the history view's data: `GET /api/v1/rigs/{rig}/history?from_ms=&to_ms=&px=` answers
//! every stream-0 channel's min and max per pixel bucket, read from the InfluxDB the twin
//! writes (`dtop_samples`, ARCHITECTURE § Storage schema) with one InfluxQL query (InfluxDB 1.x
//! `/query`); `.../history.csv` is the same range as CSV. The query builder, the bucket width,
//! the answer's parser and the CSV writer are pure; only [`History::query`] does I/O.
//! InfluxDB 2.x (Flux) and VictoriaMetrics are not read here (they need another query language).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::command::{live, rig_id};
use super::rights;
use crate::config::HistoryConfig;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, AuthUser, Shared};

/// Most pixel buckets one request may ask for.
pub const MAX_PX: u32 = 10_000;

/// The range asked for.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Start, ms since the Unix epoch (inclusive).
    pub from_ms: i64,
    /// End, ms since the Unix epoch (exclusive).
    pub to_ms: i64,
    /// Pixels across the plot: one min/max pair per pixel (default 1000).
    #[serde(default = "default_px")]
    pub px: u32,
}

const fn default_px() -> u32 {
    1000
}

/// One channel's envelope.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Envelope {
    /// Channel name (the InfluxDB field).
    pub name: String,
    /// Smallest value per bucket (null where the bucket holds none of this channel).
    pub min: Vec<Option<f64>>,
    /// Largest value per bucket.
    pub max: Vec<Option<f64>>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryAnswer {
    /// The rig.
    pub rig: String,
    /// Start of each bucket that holds data, ms since the Unix epoch.
    pub t_ms: Vec<i64>,
    /// Bucket width, ms.
    pub bucket_ms: i64,
    /// Per channel.
    pub channels: Vec<Envelope>,
}

impl Range {
    /// Every problem with the range.
    pub fn problems(&self) -> Vec<dtop_studies::FieldProblem> {
        let mut p = Vec::new();
        if self.to_ms <= self.from_ms {
            p.push(dtop_studies::FieldProblem::new(
                "to_ms",
                "must be after from_ms",
            ));
        }
        if !(1..=MAX_PX).contains(&self.px) {
            p.push(dtop_studies::FieldProblem::new(
                "px",
                format!("must be between 1 and {MAX_PX}"),
            ));
        }
        p
    }

    /// Bucket width: the range over the pixels, rounded up to a whole millisecond.
    pub fn bucket_ms(&self) -> i64 {
        let span = (self.to_ms - self.from_ms).max(1);
        let px = i64::from(self.px.max(1));
        ((span + px - 1) / px).max(1)
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The InfluxQL query for `channels` of `rig`'s stream 0 over `range`.
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
    format!(
        "SELECT {} FROM \"dtop_samples\" WHERE \"rig\" = {} AND \"stream\" = '0' AND time >= {}ms \
         AND time < {}ms GROUP BY time({}ms) fill(none)",
        fields.join(", "),
        quote_string(rig),
        range.from_ms,
        range.to_ms,
        range.bucket_ms()
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

/// Parses InfluxDB's JSON answer (`epoch=ms`) to the query of [`influxql`].
///
/// # Errors
/// InfluxDB's own error, or a shape this parser does not know.
pub fn parse_answer(
    rig: &str,
    channels: &[String],
    range: &Range,
    body: &[u8],
) -> Result<HistoryAnswer, String> {
    let answer: QueryAnswer =
        serde_json::from_slice(body).map_err(|e| format!("unreadable InfluxDB answer: {e}"))?;
    let mut out = HistoryAnswer {
        rig: rig.to_owned(),
        t_ms: Vec::new(),
        bucket_ms: range.bucket_ms(),
        channels: channels
            .iter()
            .map(|c| Envelope {
                name: c.clone(),
                min: Vec::new(),
                max: Vec::new(),
            })
            .collect(),
    };
    for result in answer.results {
        if let Some(e) = result.error {
            return Err(format!("InfluxDB: {e}"));
        }
        for series in result.series {
            let col = |name: &str| series.columns.iter().position(|c| c == name);
            let time = col("time").ok_or("no time column")?;
            let index: Vec<(Option<usize>, Option<usize>)> = channels
                .iter()
                .map(|c| (col(&format!("{c}__min")), col(&format!("{c}__max"))))
                .collect();
            for row in &series.values {
                let Some(t) = row.get(time).and_then(serde_json::Value::as_i64) else {
                    continue;
                };
                out.t_ms.push(t);
                for (envelope, (lo, hi)) in out.channels.iter_mut().zip(&index) {
                    let at = |i: &Option<usize>| {
                        i.and_then(|i| row.get(i))
                            .and_then(serde_json::Value::as_f64)
                    };
                    envelope.min.push(at(lo));
                    envelope.max.push(at(hi));
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

/// The InfluxDB client.
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

    /// Runs the query of `channels` of `rig` over `range`.
    ///
    /// # Errors
    /// InfluxDB unreachable or answering an error, in words for the log.
    pub async fn query(
        &self,
        rig: &str,
        channels: &[String],
        range: &Range,
    ) -> Result<HistoryAnswer, String> {
        let mut url = reqwest::Url::parse(&self.config.influx_v1_url)
            .and_then(|u| u.join("query"))
            .map_err(|e| format!("bad InfluxDB URL: {e}"))?;
        url.query_pairs_mut()
            .append_pair("db", &self.config.database)
            .append_pair("epoch", "ms")
            .append_pair("q", &influxql(rig, channels, range));
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("InfluxDB unreachable: {e}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("InfluxDB answer cut: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "InfluxDB answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        parse_answer(rig, channels, range, &body)
    }
}

async fn answer(
    state: &Shared,
    user: &AuthUser,
    rig: &str,
    range: Range,
) -> Result<HistoryAnswer, ApiError> {
    let live = live(state)?;
    let rig = rig_id(rig)?;
    if !rights(&live.acl, &user.0, &rig).samples {
        return Err(ApiError::ForbiddenBecause(format!(
            "{} may not see rig {rig}.",
            user.0.username
        )));
    }
    let problems = range.problems();
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let history = live.history.as_ref().ok_or_else(|| {
        ApiError::NotConfigured(
            "History needs InfluxDB: this server has no [live.history] (the twin may be \
             storing to files, as `dtop up` does by default)."
                .into(),
        )
    })?;
    let birth = live.hub.birth(rig.clone()).await.ok_or_else(|| {
        ApiError::Conflict(format!(
            "rig {rig} has not announced its channels (no birth)"
        ))
    })?;
    let channels: Vec<String> = birth
        .channels
        .iter()
        .filter(|c| c.stream_id == 0)
        .map(|c| c.name.clone())
        .collect();
    history
        .query(rig.as_str(), &channels, &range)
        .await
        .map_err(|why| {
            warn!(rig = %rig, reason = %why, "History query failed.");
            ApiError::NotConfigured(format!("The history store did not answer: {why}"))
        })
}

/// Min and max per pixel bucket of every stream-0 channel over a range, from InfluxDB.
#[utoipa::path(get, path = "/api/v1/rigs/{rig}/history", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id"), Range),
    responses((status = 200, body = HistoryAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "No InfluxDB configured, or it did not answer")),
    security(("bearer" = [])))]
pub async fn json(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    ApiQuery(range): ApiQuery<Range>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    answer(&state, &user, &rig, range).await.map(Json)
}

/// The same as `history`, as CSV (`time_ms`, then `{channel}_min,{channel}_max`).
#[utoipa::path(get, path = "/api/v1/rigs/{rig}/history.csv", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id"), Range),
    responses((status = 200, content_type = "text/csv", description = "The envelope as CSV"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn csv(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    ApiQuery(range): ApiQuery<Range>,
) -> Result<Response, ApiError> {
    let a = answer(&state, &user, &rig, range).await?;
    let name = format!(
        "attachment; filename=\"{}-{}-{}.csv\"",
        a.rig, range.from_ms, range.to_ms
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        to_csv(&a),
    )
        .into_response())
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
        let r = Range { px: 3, ..range() };
        assert_eq!(r.bucket_ms(), 3334);
        let bad = Range {
            to_ms: 0,
            px: 0,
            ..range()
        };
        assert_eq!(bad.problems().len(), 2);
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
            q.ends_with("time >= 1000ms AND time < 11000ms GROUP BY time(10ms) fill(none)"),
            "{q}"
        );
    }

    #[test]
    fn parses_an_influx_answer_and_writes_it_as_csv() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"dtop_samples",
            "columns":["time","a__min","a__max","b__min","b__max"],
            "values":[[1000,-1.5,2.0,null,null],[1010,0.25,0.5,3,4]]}]}]}"#;
        let channels = vec!["a".to_owned(), "b".to_owned()];
        let a = parse_answer("r1", &channels, &range(), body).unwrap();
        assert_eq!(a.t_ms, [1000, 1010]);
        assert_eq!(a.channels[0].min, [Some(-1.5), Some(0.25)]);
        assert_eq!(a.channels[1].max, [None, Some(4.0)]);
        assert_eq!(
            to_csv(&a),
            "time_ms,a_min,a_max,b_min,b_max\n1000,-1.5,2,,\n1010,0.25,0.5,3,4\n"
        );
        let err = br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#;
        assert!(
            parse_answer("r1", &channels, &range(), err)
                .unwrap_err()
                .contains("database not found")
        );
    }
}
