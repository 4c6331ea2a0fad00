//! Owns the API's one error type and how each variant reads on the wire (status, code, body,
//! `WWW-Authenticate`, `Retry-After`). Internal and database details go to the log, never to
//! the client.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dtop_engine::EngineError;
use dtop_studies::FieldProblem;
use serde::Serialize;
use tracing::{error, warn};
use utoipa::ToSchema;

/// How long a client should wait when the database is away.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is invalid; every problem is listed.
    #[error("invalid request")]
    Invalid(Vec<FieldProblem>),
    /// The study is larger than the budget.
    #[error("study too large")]
    TooLarge {
        /// What it would cost.
        work_units: u64,
        /// What the budget allows.
        max_work_units: u64,
    },
    /// No valid token (or a failed login).
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// The identity may not do this.
    #[error("forbidden")]
    Forbidden,
    /// The identity may not do this, and the reason may be shown (the rule that refused it).
    #[error("forbidden: {0}")]
    ForbiddenBecause(String),
    /// A part of the server this request needs is not configured (the reason is shown).
    #[error("not configured: {0}")]
    NotConfigured(String),
    /// A state-changing request authenticated by the session cookie lacks the session's CSRF
    /// token.
    #[error("CSRF token missing or wrong")]
    CsrfRefused,
    /// No such thing.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The body is larger than the configured limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// Too many failed logins; retry after this.
    #[error("too many requests")]
    TooManyRequests(Duration),
    /// The database is away.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A store this request reads (the history's InfluxDB) did not answer; the reason holds no
    /// secret and is shown.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// Anything else; the reason is logged, not shown.
    #[error("internal: {0}")]
    Internal(String),
}

/// The error body every refusal carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `invalid`, `too_large`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `too_many_requests`, `unavailable`, `store_unavailable`, `not_configured`
    /// or `internal`.
    pub error: &'static str,
    /// A sentence for a person.
    pub message: String,
    /// Every problem (only for `invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<ProblemBody>>,
    /// What the study would cost (only for `too_large`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_units: Option<u64>,
    /// What the budget allows (only for `too_large`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_work_units: Option<u64>,
}

/// One problem with a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemBody {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(problems) => Self::Invalid(problems),
            EngineError::TooLarge {
                work_units,
                max_work_units,
            } => Self::TooLarge {
                work_units,
                max_work_units,
            },
            EngineError::NotFound(what) => Self::NotFound(what),
            EngineError::Conflict(why) => Self::Conflict(why),
            EngineError::Unavailable(why) => Self::Unavailable(why),
            EngineError::Internal(why) => Self::Internal(why),
        }
    }
}

impl ApiError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldProblem::new(field, message)])
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) | Self::TooLarge { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ForbiddenBecause(_) | Self::CsrfRefused => {
                StatusCode::FORBIDDEN
            }
            Self::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body, with nothing internal in it.
    pub fn body(&self) -> ErrorBody {
        let plain = |error, message: String| ErrorBody {
            error,
            message,
            problems: None,
            work_units: None,
            max_work_units: None,
        };
        match self {
            Self::Invalid(problems) => ErrorBody {
                problems: Some(
                    problems
                        .iter()
                        .map(|p| ProblemBody {
                            field: p.field.clone(),
                            message: p.message.clone(),
                        })
                        .collect(),
                ),
                ..plain(
                    "invalid",
                    format!("The request has {} problem(s).", problems.len()),
                )
            },
            Self::TooLarge {
                work_units,
                max_work_units,
            } => ErrorBody {
                work_units: Some(*work_units),
                max_work_units: Some(*max_work_units),
                ..plain(
                    "too_large",
                    format!(
                        "The study needs {work_units} work units; the budget is {max_work_units}."
                    ),
                )
            },
            Self::Unauthenticated(why) => plain("unauthenticated", (*why).to_owned()),
            Self::Forbidden => plain("forbidden", "Your role may not do this.".to_owned()),
            Self::ForbiddenBecause(why) => plain("forbidden", why.clone()),
            Self::NotConfigured(why) => plain("not_configured", why.clone()),
            Self::CsrfRefused => plain(
                "forbidden",
                "The request lacks this session's CSRF token (header X-CSRF-Token); reload the page."
                    .to_owned(),
            ),
            Self::NotFound(what) => plain("not_found", format!("Not found: {what}.")),
            Self::Conflict(why) => plain("conflict", format!("Conflict: {why}.")),
            Self::PayloadTooLarge => plain(
                "payload_too_large",
                "The request body is larger than the server accepts.".to_owned(),
            ),
            Self::TooManyRequests(_) => plain(
                "too_many_requests",
                "Too many failed logins; wait before trying again.".to_owned(),
            ),
            Self::Unavailable(_) => plain(
                "unavailable",
                "The database is unavailable; try again later.".to_owned(),
            ),
            Self::StoreUnavailable(why) => plain("store_unavailable", why.clone()),
            Self::Internal(_) => plain(
                "internal",
                "Internal error; the server log has the details.".to_owned(),
            ),
        }
    }
}

/// Whole seconds, rounded up, at least 1: a `Retry-After` value.
pub fn retry_after_s(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(why) => error!(reason = %why, "Request failed with an internal error."),
            Self::Unavailable(why) => warn!(reason = %why, "Database unavailable."),
            Self::StoreUnavailable(why) => warn!(reason = %why, "A store did not answer."),
            _ => {}
        }
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s(*wait)));
            }
            Self::Unavailable(_) | Self::StoreUnavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_s(UNAVAILABLE_RETRY)),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn json(e: ApiError) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let headers = r.headers().clone();
        let bytes =
            futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn engine_errors_map_to_the_contract_statuses_and_codes() {
        let cases = [
            (EngineError::Invalid(vec![]), 400, "invalid"),
            (
                EngineError::TooLarge {
                    work_units: 2,
                    max_work_units: 1,
                },
                400,
                "too_large",
            ),
            (EngineError::NotFound("x".into()), 404, "not_found"),
            (EngineError::Conflict("x".into()), 409, "conflict"),
            (EngineError::Unavailable("x".into()), 503, "unavailable"),
            (EngineError::Internal("x".into()), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let (s, _, body) = json(ApiError::from(e));
            assert_eq!(s.as_u16(), status);
            assert_eq!(body["error"], code);
        }
    }

    #[test]
    fn invalid_lists_every_problem_and_too_large_gives_the_budget() {
        let (_, _, body) = json(ApiError::Invalid(vec![
            FieldProblem::new("params.a", "too big"),
            FieldProblem::new("model", "unknown"),
        ]));
        assert_eq!(body["problems"].as_array().unwrap().len(), 2);
        assert_eq!(body["problems"][1]["field"], "model");
        let (_, _, body) = json(ApiError::TooLarge {
            work_units: 10,
            max_work_units: 4,
        });
        assert_eq!(body["work_units"], 10);
        assert_eq!(body["max_work_units"], 4);
        assert!(body.get("problems").is_none());
    }

    #[test]
    fn internal_and_database_details_are_never_shown() {
        for e in [
            ApiError::Internal("secret path /var/x".into()),
            ApiError::Unavailable("postgres://u:pw@h".into()),
        ] {
            let (_, _, body) = json(e);
            let text = body.to_string();
            assert!(!text.contains("/var/x") && !text.contains("pw@h"), "{text}");
        }
    }

    #[test]
    fn refusals_carry_their_challenge_and_retry_headers() {
        let (_, h, _) = json(ApiError::Unauthenticated("no token"));
        assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
        let (_, h, _) = json(ApiError::TooManyRequests(Duration::from_millis(1500)));
        assert_eq!(h[header::RETRY_AFTER], "2");
        let (_, h, _) = json(ApiError::Unavailable("x".into()));
        assert_eq!(h[header::RETRY_AFTER], "5");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(retry_after_s(Duration::ZERO), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_s(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_s(Duration::from_millis(3001)), 4);
    }
}
