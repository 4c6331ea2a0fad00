//! Owns the Prometheus endpoint every daemon serves: `GET /metrics` answers with whatever the
//! daemon's renderer returns (text exposition format 0.0.4), anything else is 404. The daemon
//! owns its counters; this module only serves them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Renders the daemon's metrics as Prometheus text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Serves `GET /metrics` on `listener` until `cancel`.
///
/// # Errors
/// When accepting connections fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Render,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(render))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}

/// The router alone, for daemons that mount `/metrics` next to their own routes.
pub fn router(render: Render) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(render)
}

async fn metrics(State(render): State<Render>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render())
}
