//! Owns what a history request is and how it can fail: the range and its pixel-bucket grid
//! (the bucket rule of [`super::history`]), and the errors of reading a store. Shared by the
//! InfluxDB reader (`history`) and the VictoriaMetrics one (`victoria`); pure.

use serde::Deserialize;

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

impl Range {
    /// Every problem with the range; `max_range_ms` is the widest allowed.
    pub fn problems(&self, max_range_ms: i64) -> Vec<dtop_studies::FieldProblem> {
        let mut p = Vec::new();
        if self.to_ms <= self.from_ms {
            p.push(dtop_studies::FieldProblem::new(
                "to_ms",
                "must be after from_ms",
            ));
        } else if self.to_ms.saturating_sub(self.from_ms) > max_range_ms {
            p.push(dtop_studies::FieldProblem::new(
                "to_ms",
                format!(
                    "the range may be at most {} s wide (live.history.max_range_s)",
                    max_range_ms / 1000
                ),
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

    fn span_ms(&self) -> i64 {
        self.to_ms.saturating_sub(self.from_ms).max(1)
    }

    /// Bucket width: the range over the pixels, rounded up to a whole millisecond.
    pub fn bucket_ms(&self) -> i64 {
        let px = i64::from(self.px.max(1));
        ((self.span_ms() + px - 1) / px).max(1)
    }

    /// How many buckets cover the range (at most `px`).
    pub fn buckets_n(&self) -> usize {
        let w = self.bucket_ms();
        usize::try_from((self.span_ms() + w - 1) / w).unwrap_or(0)
    }

    /// The bucket starting at `t_ms`; `None` when `t_ms` is not on the range's grid.
    pub fn bucket_at(&self, t_ms: i64) -> Option<usize> {
        let w = self.bucket_ms();
        let since = t_ms.checked_sub(self.from_ms)?;
        if since < 0 || since % w != 0 {
            return None;
        }
        usize::try_from(since / w)
            .ok()
            .filter(|k| *k < self.buckets_n())
    }
}

/// Why a history query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The configured URL does not parse.
    #[error("the history store's URL {0:?} does not parse")]
    BadUrl(String),
    /// No connection, or the connection broke.
    #[error("{store} at {url} did not answer: {source}")]
    Unreachable {
        /// `InfluxDB` or `VictoriaMetrics`.
        store: &'static str,
        /// The base URL (it carries no credentials).
        url: String,
        /// reqwest's error, without the query URL.
        source: reqwest::Error,
    },
    /// No answer within the configured timeout.
    #[error("{store} at {url} did not answer in time ({timeout_s} s)")]
    TimedOut {
        /// `InfluxDB` or `VictoriaMetrics`.
        store: &'static str,
        /// The base URL.
        url: String,
        /// `[live.history] timeout_s`.
        timeout_s: f64,
    },
    /// The store answered with an HTTP error.
    #[error("{store} answered {status}: {body}")]
    Refused {
        /// `InfluxDB` or `VictoriaMetrics`.
        store: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// The store answered with an error of its own (a missing database, a bad query).
    #[error("{store}: {error}")]
    Store {
        /// `InfluxDB` or `VictoriaMetrics`.
        store: &'static str,
        /// Its words.
        error: String,
    },
    /// An answer this parser does not read.
    #[error("unreadable answer from the history store: {0}")]
    Unreadable(String),
    /// The range does not make a record a study can take (too long, nothing stored).
    #[error("{0}")]
    Record(String),
}
