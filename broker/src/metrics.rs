//! Owns the broker's counters and gauges and their Prometheus text rendering. Serving them on
//! `GET /metrics` is `dtop_daemon::metrics`. Knows nothing about MQTT packets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dtop_daemon::metrics::escape_label;

/// Why the broker refused something; one label value of `dtop_broker_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user, wrong password, or a certificate naming no known user.
    BadCredentials,
    /// A PUBLISH the identity's role may not send.
    PublishNotAuthorized,
    /// A SUBSCRIBE filter the identity's role may not use.
    SubscribeNotAuthorized,
    /// A will message on a forbidden topic (the CONNECT is refused).
    WillNotAuthorized,
    /// A PUBLISH above `limits.max_payload_bytes`.
    PayloadTooLarge,
    /// A CONNECT beyond `limits.max_connections`.
    ConnectionLimit,
    /// No CONNECT within `limits.connection_timeout_ms`.
    ConnectTimeout,
    /// A malformed packet or a protocol violation.
    ProtocolError,
    /// A client id the broker cannot accept.
    ClientIdRejected,
}

impl Refusal {
    /// Every reason, in rendering order.
    pub const ALL: [Refusal; 9] = [
        Refusal::BadCredentials,
        Refusal::PublishNotAuthorized,
        Refusal::SubscribeNotAuthorized,
        Refusal::WillNotAuthorized,
        Refusal::PayloadTooLarge,
        Refusal::ConnectionLimit,
        Refusal::ConnectTimeout,
        Refusal::ProtocolError,
        Refusal::ClientIdRejected,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::BadCredentials => "bad_credentials",
            Refusal::PublishNotAuthorized => "publish_not_authorized",
            Refusal::SubscribeNotAuthorized => "subscribe_not_authorized",
            Refusal::WillNotAuthorized => "will_not_authorized",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::ConnectTimeout => "connect_timeout",
            Refusal::ProtocolError => "protocol_error",
            Refusal::ClientIdRejected => "client_id_rejected",
        }
    }
}

/// All broker metrics. Shared by every connection task; updates are lock-free except the
/// per-client queue registry, touched only at session start and end.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: AtomicI64,
    connections_total: AtomicU64,
    messages_in_total: AtomicU64,
    messages_out_total: AtomicU64,
    queue_dropped_total: AtomicU64,
    expired_total: AtomicU64,
    too_large_for_client_total: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    /// Session id → (client id, messages queued or in flight to it).
    queues: Mutex<BTreeMap<u64, (String, Arc<AtomicUsize>)>>,
}

impl Metrics {
    /// A connection completed CONNECT/CONNACK.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// An accepted connection ended.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Current connections.
    pub fn connections(&self) -> i64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// A PUBLISH was accepted from a client (or a will was published).
    pub fn message_in(&self) {
        self.messages_in_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A PUBLISH was sent to a client.
    pub fn message_out(&self) {
        self.messages_out_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A queued message was dropped because the client's queue was full.
    pub fn queue_dropped(&self) {
        self.queue_dropped_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A message's Message Expiry Interval ran out before it was sent to a client (MQTT 5
    /// §3.3.2.3.3).
    pub fn expired(&self) {
        self.expired_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages that expired before delivery, so far.
    pub fn expired_count(&self) -> u64 {
        self.expired_total.load(Ordering::Relaxed)
    }

    /// A PUBLISH was discarded for one client because it exceeded the client's Maximum Packet
    /// Size (MQTT 5 §3.1.2.11.4).
    pub fn too_large_for_client(&self) {
        self.too_large_for_client_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Messages discarded for exceeding a client's Maximum Packet Size, so far.
    pub fn too_large_for_client_count(&self) -> u64 {
        self.too_large_for_client_total.load(Ordering::Relaxed)
    }

    /// Counts one refusal.
    pub fn refused(&self, reason: Refusal) {
        let index = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.refusals[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far for `reason`.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        let index = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.refusals[index].load(Ordering::Relaxed)
    }

    /// Registers a session's queue gauge; the session updates the returned counter.
    pub fn register_queue(&self, session: u64, client_id: &str) -> Arc<AtomicUsize> {
        let gauge = Arc::new(AtomicUsize::new(0));
        if let Ok(mut queues) = self.queues.lock() {
            queues.insert(session, (client_id.to_owned(), Arc::clone(&gauge)));
        }
        gauge
    }

    /// Forgets a session's queue gauge.
    pub fn unregister_queue(&self, session: u64) {
        if let Ok(mut queues) = self.queues.lock() {
            queues.remove(&session);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        counter(
            "dtop_broker_connections",
            "Connected MQTT clients.",
            "gauge",
            self.connections().to_string(),
        );
        counter(
            "dtop_broker_connections_total",
            "Accepted MQTT connections since start.",
            "counter",
            self.connections_total.load(Ordering::Relaxed).to_string(),
        );
        counter(
            "dtop_broker_messages_in_total",
            "PUBLISH packets accepted from clients, wills included.",
            "counter",
            self.messages_in_total.load(Ordering::Relaxed).to_string(),
        );
        counter(
            "dtop_broker_messages_out_total",
            "PUBLISH packets sent to clients.",
            "counter",
            self.messages_out_total.load(Ordering::Relaxed).to_string(),
        );
        counter(
            "dtop_broker_queue_dropped_total",
            "Messages dropped because a client's queue was full.",
            "counter",
            self.queue_dropped_total.load(Ordering::Relaxed).to_string(),
        );
        counter(
            "dtop_broker_expired_total",
            "Messages not delivered to a client because their Message Expiry Interval ran out.",
            "counter",
            self.expired_count().to_string(),
        );
        counter(
            "dtop_broker_too_large_for_client_total",
            "Messages discarded for one client because they exceed its Maximum Packet Size.",
            "counter",
            self.too_large_for_client_count().to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP dtop_broker_refusals_total Refused connections, packets and subscriptions.\n\
             # TYPE dtop_broker_refusals_total counter"
        );
        for reason in Refusal::ALL {
            let _ = writeln!(
                out,
                "dtop_broker_refusals_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.refusals(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP dtop_broker_queue_depth Messages queued or in flight to a client.\n\
             # TYPE dtop_broker_queue_depth gauge"
        );
        if let Ok(queues) = self.queues.lock() {
            for (client_id, gauge) in queues.values() {
                let _ = writeln!(
                    out,
                    "dtop_broker_queue_depth{{client_id=\"{}\"}} {}",
                    escape_label(client_id),
                    gauge.load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

/// What `dtop_daemon::metrics::serve` renders for the broker: the counters as they are at
/// each scrape.
pub fn renderer(metrics: Arc<Metrics>) -> dtop_daemon::metrics::Render {
    Arc::new(move || metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_refusals_and_queue_depth_per_client() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.message_in();
        metrics.refused(Refusal::PublishNotAuthorized);
        metrics.refused(Refusal::PublishNotAuthorized);
        let gauge = metrics.register_queue(7, "dash\"1");
        gauge.store(3, Ordering::Relaxed);
        let text = metrics.render();
        assert!(text.contains("dtop_broker_connections 1\n"), "{text}");
        assert!(text.contains("dtop_broker_messages_in_total 1\n"));
        assert!(text.contains("dtop_broker_refusals_total{reason=\"publish_not_authorized\"} 2\n"));
        assert!(text.contains("dtop_broker_queue_depth{client_id=\"dash\\\"1\"} 3\n"));
        metrics.unregister_queue(7);
        assert!(!metrics.render().contains("dash"));
    }
}
