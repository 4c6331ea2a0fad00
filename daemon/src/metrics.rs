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

/// The content type of the Prometheus text exposition format, as Prometheus' own client
/// libraries send it. The charset is said because label values (an MQTT client id, say) may be
/// any UTF-8.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// A label value as the text exposition format writes it between quotes: backslash, double
/// quote and line feed escaped (Prometheus "Exposition formats", text format, label values).
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(render): State<Render>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// One HTTP/1.0 request (the server closes after the reply); the whole reply as text.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut reply))
            .await
            .expect("the endpoint answers within 10 s")
            .unwrap();
        reply
    }

    #[test]
    fn label_values_escape_backslash_quote_and_line_feed_and_nothing_else() {
        assert_eq!(escape_label("rig-1"), "rig-1");
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines\ttab é"), "two\\nlines\ttab é");
    }

    #[tokio::test]
    async fn serves_the_renderer_on_get_metrics_with_the_prometheus_content_type_and_404_elsewhere()
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scrapes = Arc::new(AtomicU64::new(0));
        let render: Render = {
            let scrapes = Arc::clone(&scrapes);
            Arc::new(move || {
                let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
                format!("# TYPE test_scrapes_total counter\ntest_scrapes_total {n}\n")
            })
        };
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, render, cancel.clone()));

        let first = get(addr, "/metrics").await;
        assert!(first.starts_with("HTTP/1.0 200"), "{first}");
        let content_type = first
            .lines()
            .find_map(|l| {
                l.split_once(": ")
                    .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                    .map(|(_, value)| value)
            })
            .unwrap_or_else(|| panic!("no content-type in {first}"));
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            first.ends_with("\r\n\r\n# TYPE test_scrapes_total counter\ntest_scrapes_total 1\n"),
            "{first}"
        );
        // Rendered per request, not once.
        assert!(
            get(addr, "/metrics")
                .await
                .ends_with("test_scrapes_total 2\n")
        );

        for path in ["/", "/metric", "/metrics/x"] {
            let reply = get(addr, path).await;
            assert!(reply.starts_with("HTTP/1.0 404"), "{path}: {reply}");
        }
        assert_eq!(scrapes.load(Ordering::Relaxed), 2, "a 404 renders nothing");

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve returns once cancelled")
            .unwrap()
            .unwrap();
    }
}
