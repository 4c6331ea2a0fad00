//! Owns the mapping from DTOP's [`BrokerConfig`] to rumqttd's `Config`, including the router's
//! segment sizing. Pure: starts nothing and binds nothing.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{ConnectionSettings, ConsoleSettings, RouterConfig, ServerSettings};

use crate::config::BrokerConfig;

/// One router segment holds this many maximum-size packets. rumqttd only rotates a segment
/// after it is full, so a segment must hold at least one packet; four keeps a burst of full
/// sample blocks in one segment.
pub const PACKETS_PER_SEGMENT: usize = 4;

/// Segments kept in memory per subscription filter (rumqttd keeps one log per filter, e.g. one
/// for `dtop/+/samples` shared by every rig). With the default payload limit that is about
/// 8.5 MiB: 32 worst-case sample blocks, or a few hundred typical 1 s blocks, that a stalled
/// subscriber can fall behind before rumqttd skips it ahead (dropping the oldest data).
pub const SEGMENTS_PER_FILTER: usize = 8;

/// rumqttd panics on segments smaller than this, bytes.
const RUMQTTD_MIN_SEGMENT_BYTES: usize = 1024;

/// Publishes read from one topic log per router pass for a QoS 0 subscriber (rumqttd's own
/// default). QoS 1/2 subscribers are bounded by rumqttd's fixed window of 100 instead.
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;

/// Delay between accepts, ms: rumqttd's default, smoothing a reconnect storm after a restart.
const NEXT_CONNECTION_DELAY_MS: u64 = 1;

/// Builds the rumqttd configuration for `config`. Call [`BrokerConfig::validate`] first:
/// out-of-range values are clamped here rather than rejected.
pub fn rumqttd_config(config: &BrokerConfig) -> rumqttd::Config {
    let limits = &config.limits;
    let connections = ConnectionSettings {
        connection_timeout_ms: u16::try_from(limits.connection_timeout_ms).unwrap_or(u16::MAX),
        max_payload_size: limits.max_payload_bytes,
        max_inflight_count: limits.max_inflight_count.max(1),
        auth: None,
        external_auth: None,
        // Meant to let clients publish to topics nobody subscribed to yet (edges start before
        // twins) instead of being disconnected. rumqttd 0.20's `DataLog::matches` never returns
        // `None`, so the flag is inert there and such publishes are acked and dropped either way;
        // set it so a future rumqttd that honours it keeps that behaviour.
        dynamic_filters: true,
    };

    let v4 = listener("dtop-mqtt-v3.1.1", config.mqtt.listen, &connections);
    let v5 = config
        .mqtt_v5
        .as_ref()
        .map(|v5| listener("dtop-mqtt-v5", v5.listen, &connections));
    let console = config.console.as_ref().map(|console| {
        // `ConsoleSettings` has a private field, so it can only be built from its default.
        let mut settings = ConsoleSettings::default();
        settings.listen = console.listen.to_string();
        settings
    });

    let segment_bytes = limits
        .max_payload_bytes
        .saturating_mul(PACKETS_PER_SEGMENT)
        .max(RUMQTTD_MIN_SEGMENT_BYTES);
    let router = RouterConfig {
        // The console registers with the router as a connection of its own.
        max_connections: limits
            .max_connections
            .saturating_add(usize::from(console.is_some())),
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: segment_bytes,
        max_segment_count: SEGMENTS_PER_FILTER,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: rumqttd::Strategy::default(),
    };

    rumqttd::Config {
        id: 0,
        router,
        v4: Some(v4),
        v5,
        ws: None,
        cluster: None,
        console,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

/// rumqttd keys listeners by an arbitrary name and uses `name` for the listener's thread.
fn listener(
    name: &str,
    listen: SocketAddr,
    connections: &ConnectionSettings,
) -> HashMap<String, ServerSettings> {
    let settings = ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: NEXT_CONNECTION_DELAY_MS,
        connections: connections.clone(),
    };
    HashMap::from([(name.to_owned(), settings)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConsoleConfig, ListenerConfig};
    use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;

    fn only(servers: &Option<HashMap<String, ServerSettings>>) -> &ServerSettings {
        let servers = servers.as_ref().expect("listener configured");
        assert_eq!(servers.len(), 1);
        servers.values().next().expect("one listener")
    }

    #[test]
    fn default_config_has_one_v311_listener_with_dynamic_filters_and_no_console() {
        let rumqttd = rumqttd_config(&BrokerConfig::default());
        let v4 = only(&rumqttd.v4);
        assert_eq!(v4.listen, "127.0.0.1:1883".parse().unwrap());
        assert!(v4.connections.dynamic_filters);
        assert_eq!(v4.connections.max_payload_size, MAX_MQTT_PACKET_BYTES);
        assert_eq!(v4.connections.connection_timeout_ms, 5000);
        assert!(v4.tls.is_none());
        assert!(rumqttd.v5.is_none());
        assert!(rumqttd.console.is_none());
        assert!(rumqttd.prometheus.is_none());
        assert!(rumqttd.ws.is_none());
        assert_eq!(rumqttd.router.max_connections, 1000);
    }

    #[test]
    fn router_segments_hold_several_maximum_size_packets() {
        let rumqttd = rumqttd_config(&BrokerConfig::default());
        assert!(rumqttd.router.max_segment_size >= PACKETS_PER_SEGMENT * MAX_MQTT_PACKET_BYTES);
        assert!(rumqttd.router.max_segment_count >= 1);
    }

    #[test]
    fn optional_listeners_are_mapped_when_present() {
        let config = BrokerConfig {
            mqtt_v5: Some(ListenerConfig {
                listen: "127.0.0.1:1884".parse().unwrap(),
            }),
            console: Some(ConsoleConfig {
                listen: "127.0.0.1:3031".parse().unwrap(),
            }),
            ..BrokerConfig::default()
        };
        let rumqttd = rumqttd_config(&config);
        let v5 = only(&rumqttd.v5);
        assert_eq!(v5.listen, "127.0.0.1:1884".parse().unwrap());
        assert!(v5.connections.dynamic_filters);
        assert_eq!(rumqttd.console.expect("console").listen, "127.0.0.1:3031");
        assert_eq!(rumqttd.router.max_connections, 1001);
    }
}
