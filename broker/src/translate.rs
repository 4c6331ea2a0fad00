//! Owns the mapping from DTOP's [`BrokerConfig`] to rumqttd's `Config`: the router's
//! connection slots and segment sizing. rumqttd's own listeners and console are never
//! configured; the front (`front`) accepts every client. Pure: starts nothing and binds
//! nothing.

use crate::config::BrokerConfig;

/// One router segment holds this many maximum-size packets. rumqttd only rotates a segment
/// after it is full, so a segment must hold at least one packet; four keeps a burst of full
/// sample blocks in one segment.
pub const PACKETS_PER_SEGMENT: usize = 4;

/// Segments kept in memory per subscription filter (rumqttd keeps one log per filter, e.g. one
/// for `dtop/v1/rig/+/samples` shared by every rig), filled as traffic arrives. With the default
/// payload limit that is at most about 68 MiB per filter: 256 worst-case sample blocks, or about
/// 58 000 typical 1.2 KB 100-sample blocks, that a subscriber's session can fall behind before
/// rumqttd skips it ahead, dropping the oldest data whatever the subscription's QoS (every front
/// link subscribes at QoS 0). It was 8 (8.5 MiB, about 7 000 blocks): 10 publishers blasting
/// 60 000 blocks/s on 2 cores then lost 37–44 % of the QoS 1 deliveries to one subscriber,
/// whose session could not drain the log within the ~120 ms it held (BENCHMARKS.md, "Brokers:
/// a 3-node NATS cluster against dtop-broker and Mosquitto"); with 64, 10 to 300 publishers
/// lost none.
pub const SEGMENTS_PER_FILTER: usize = 64;

/// Router links per allowed connection: one for each connected client plus room for as many
/// persistent sessions whose clients are away.
pub const ROUTER_LINKS_PER_CONNECTION: usize = 2;

/// Spare router links for sessions being taken over (old and new briefly coexist).
pub const SPARE_ROUTER_LINKS: usize = 16;

/// rumqttd panics on segments smaller than this, bytes.
const RUMQTTD_MIN_SEGMENT_BYTES: usize = 1024;

/// Publishes read from one topic log per router pass for a subscriber (rumqttd's default).
/// Every front link subscribes at QoS 0, so this, not rumqttd's window of 100, bounds a pass.
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;

/// Builds the rumqttd configuration for `config`. Call [`BrokerConfig::validate`] first.
pub fn rumqttd_config(config: &BrokerConfig) -> rumqttd::Config {
    let limits = &config.limits;
    let segment_bytes = limits
        .max_payload_bytes
        .saturating_mul(PACKETS_PER_SEGMENT)
        .max(RUMQTTD_MIN_SEGMENT_BYTES);
    let router = rumqttd::RouterConfig {
        max_connections: limits
            .max_connections
            .saturating_mul(ROUTER_LINKS_PER_CONNECTION)
            .saturating_add(SPARE_ROUTER_LINKS),
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: segment_bytes,
        max_segment_count: SEGMENTS_PER_FILTER,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: None,
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;

    #[test]
    fn configures_only_the_router_with_room_for_parked_sessions() {
        let rumqttd = rumqttd_config(&BrokerConfig::default());
        assert!(rumqttd.v4.is_none() && rumqttd.v5.is_none() && rumqttd.ws.is_none());
        assert!(rumqttd.console.is_none());
        assert!(rumqttd.prometheus.is_none());
        assert_eq!(
            rumqttd.router.max_connections,
            2 * 1000 + SPARE_ROUTER_LINKS
        );
    }

    #[test]
    fn router_segments_hold_several_maximum_size_packets() {
        let rumqttd = rumqttd_config(&BrokerConfig::default());
        assert!(rumqttd.router.max_segment_size >= PACKETS_PER_SEGMENT * MAX_MQTT_PACKET_BYTES);
        assert!(rumqttd.router.max_segment_count >= 1);
    }
}
