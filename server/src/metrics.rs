//! Owns the server's counters and their Prometheus text: requests by route template, method
//! and status (low cardinality: templates, not ids), failed logins, and SSE clients now.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Failed logins (wrong password, unknown user), not counting throttled ones.
    pub logins_failed: AtomicU64,
    /// Logins refused with 429 before checking.
    pub logins_throttled: AtomicU64,
    /// Open SSE streams.
    pub sse_clients: AtomicI64,
    /// Study changes published on MQTT.
    pub mqtt_published: AtomicU64,
}

impl Metrics {
    /// One answered request.
    pub fn request(&self, route: &str, method: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route.to_owned(), method.to_owned(), status))
            .or_insert(0) += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE dtop_server_requests_total counter\n");
        {
            let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            for ((route, method, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "dtop_server_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let counters = [
            ("dtop_server_logins_failed_total", &self.logins_failed),
            ("dtop_server_logins_throttled_total", &self.logins_throttled),
            ("dtop_server_mqtt_published_total", &self.mqtt_published),
        ];
        for (name, value) in counters {
            let _ = writeln!(
                out,
                "# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# TYPE dtop_server_sse_clients gauge\ndtop_server_sse_clients {}",
            self.sse_clients.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_request_counts_by_route_and_status() {
        let m = Metrics::default();
        m.request("/api/v1/studies/{id}", "GET", 200);
        m.request("/api/v1/studies/{id}", "GET", 200);
        m.request("/api/v1/login", "POST", 401);
        m.logins_failed.fetch_add(1, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains(
            "dtop_server_requests_total{route=\"/api/v1/studies/{id}\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains("dtop_server_logins_failed_total 1"));
        assert!(text.contains("dtop_server_sse_clients 0"));
    }
}
