//! Owns the router: every route (listed once in [`ROUTES`], which a test holds equal to the
//! OpenAPI document and to what the router answers), the body limit, request tracing without
//! headers or bodies, per-route counters, and the unauthenticated health, metrics and
//! document endpoints.

pub mod auth;
pub mod models;
pub mod rigs;
pub mod schemas;
pub mod studies;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::extract::Shared;

/// Every API route as `(method, path template)`, in the order of the contract (the browser's
/// WebSocket feeds `/ws/rigs` and `/ws/rigs/{rig}` are not API routes and not listed).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/login"),
    ("POST", "/api/v1/logout"),
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/kinds"),
    ("GET", "/api/v1/kinds/{kind}/defaults"),
    ("POST", "/api/v1/studies"),
    ("GET", "/api/v1/studies"),
    ("GET", "/api/v1/studies/{id}"),
    ("POST", "/api/v1/studies/{id}/cancel"),
    ("GET", "/api/v1/studies/{id}/events"),
    ("GET", "/api/v1/studies/{id}/result"),
    ("GET", "/api/v1/studies/{id}/arrays/{name}"),
    ("GET", "/api/v1/studies/{id}/inputs/{name}"),
    ("GET", "/api/v1/models"),
    ("POST", "/api/v1/models"),
    ("GET", "/api/v1/models/{name}"),
    ("GET", "/api/v1/models/{name}/{version}"),
    ("POST", "/api/v1/models/{name}/{version}/review"),
    ("POST", "/api/v1/rigs/{rig}/commands"),
    ("GET", "/api/v1/rigs/{rig}/limits"),
    ("GET", "/api/v1/rigs/{rig}/history"),
    ("GET", "/api/v1/rigs/{rig}/history.csv"),
    ("GET", "/api/v1/rigs/{rig}/parameters"),
    ("GET", "/api/v1/rigs/{rig}/parameters.csv"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
];

/// The API's router over `state`, with a body limit of `body_limit_bytes`, serving
/// `documents` (the OpenAPI document's route, `crate::openapi::router`) with the same layers.
pub fn router(
    state: Shared,
    body_limit_bytes: usize,
    study_body_limit_bytes: usize,
    documents: Router<Shared>,
) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let metrics_render = Arc::clone(&state.metrics);
    Router::new()
        .route("/api/v1/login", post(auth::login))
        .route("/api/v1/logout", post(auth::logout))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/api/v1/kinds", get(studies::kinds))
        .route("/api/v1/kinds/{kind}/defaults", get(studies::defaults))
        // A study may carry measured tables (a 10-minute 4-channel record at 1 kHz is ~50 MB of
        // JSON): its route takes up to `study_body_limit_bytes`, every other the general limit.
        .route(
            "/api/v1/studies",
            post(studies::submit)
                .layer(DefaultBodyLimit::max(study_body_limit_bytes))
                .get(studies::list),
        )
        .route("/api/v1/studies/{id}", get(studies::get))
        .route("/api/v1/studies/{id}/cancel", post(studies::cancel))
        .route("/api/v1/studies/{id}/events", get(studies::events))
        .route("/api/v1/studies/{id}/result", get(studies::result))
        .route("/api/v1/studies/{id}/arrays/{name}", get(studies::array))
        .route("/api/v1/studies/{id}/inputs/{name}", get(studies::input))
        .route("/api/v1/models", get(models::list).post(models::add))
        .route("/api/v1/models/{name}", get(models::versions))
        .route("/api/v1/models/{name}/{version}", get(models::version))
        .route(
            "/api/v1/models/{name}/{version}/review",
            post(models::review),
        )
        .route("/api/v1/rigs/{rig}/commands", post(rigs::send))
        .route("/api/v1/rigs/{rig}/limits", get(rigs::limits))
        .route("/api/v1/rigs/{rig}/history", get(rigs::history_json))
        .route("/api/v1/rigs/{rig}/history.csv", get(rigs::history_csv))
        .route("/api/v1/rigs/{rig}/parameters", get(rigs::parameters_json))
        .route(
            "/api/v1/rigs/{rig}/parameters.csv",
            get(rigs::parameters_csv),
        )
        .route("/ws/rigs", get(crate::live::ws::overview_feed))
        .route("/ws/rigs/{rig}", get(crate::live::ws::rig_feed))
        .merge(documents)
        .route("/healthz", get(healthz))
        .merge(crate::web::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(middleware::from_fn_with_state(metrics, count))
        // The default span has method, URI and version only: no headers (the token), no body
        // (the password). Tokens never travel in URIs.
        .layer(TraceLayer::new_for_http())
        .with_state(state)
        .merge(dtop_daemon::metrics::router(Arc::new(move || {
            metrics_render.render()
        })))
        .layer(compression())
        .layer(middleware::from_fn(crate::web::security_headers))
}

/// Gzip for what a client that accepts it downloads in bulk: API JSON (results, arrays,
/// history, catalogues), CSV, metrics. Not for HTML pages: they hold the session's CSRF token
/// next to text the request chose (query filters, form values), the mix a BREACH attacker reads
/// through compressed sizes; they are a few kB each. Bundles come gzipped at build time and
/// are left alone (they carry `Content-Encoding`); so are event streams and bodies under 32 B.
fn compression() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new()
        .no_br()
        .no_deflate()
        .no_zstd()
        .compress_when(DefaultPredicate::new().and(NotForContentType::const_new("text/html")))
}

async fn count(
    State(metrics): State<Arc<crate::metrics::Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    metrics.request(&route, &method, response.status().as_u16());
    response
}

/// JSON under `/api/`, an HTML page elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        ApiError::NotFound("no such endpoint".to_owned()).into_response()
    } else {
        crate::web::not_found().await
    }
}

/// Whether the server and its database answer (no authentication).
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, content_type = "text/plain", description = "ok"),
        (status = 503, content_type = "text/plain", description = "database away")))]
pub async fn healthz(State(state): State<Shared>) -> Response {
    match state.engine.health().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "Health check: database away.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                "database unavailable\n",
            )
                .into_response()
        }
    }
}

/// Prometheus metrics (no authentication), served by `dtop_daemon::metrics`; this item only
/// documents the route.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, content_type = "text/plain; version=0.0.4", description = "Prometheus text exposition")))]
#[allow(dead_code)]
fn metrics_doc() {}
