//! Shared test helpers: start a real broker on a reserved loopback port and connect real
//! rumqttc clients to it. Owns no assertions about broker behaviour.

#![allow(dead_code)]
// Each test binary uses a different subset.
// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use dtop_broker::{BrokerConfig, BrokerHandle, ListenerConfig};
use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};

/// Upper bound on every network wait in these tests; generous for a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts a broker on a freshly reserved loopback port.
///
/// rumqttd cannot report a bound port, so we reserve one by binding 127.0.0.1:0 and releasing
/// it. Another process could take the port in between; `spawn` then fails loudly (Bind or
/// StartupTimeout) instead of the test talking to a stranger.
pub fn start_broker() -> BrokerHandle {
    let config = BrokerConfig {
        mqtt: ListenerConfig {
            listen: dtop_broker::reserve_loopback_addr().expect("reserve a loopback port"),
        },
        ..BrokerConfig::default()
    };
    dtop_broker::spawn(&config).expect("broker starts")
}

/// A rumqttc client sized like DTOP's own clients (both directions at the packet limit).
pub fn client(id: &str, addr: SocketAddr) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(MAX_MQTT_PACKET_BYTES, MAX_MQTT_PACKET_BYTES);
    AsyncClient::new(options, 16)
}

/// Polls `eventloop` until `pick` returns `Some`, failing the test on a connection error or
/// after [`WAIT`].
pub async fn poll_until<T>(
    eventloop: &mut EventLoop,
    what: &str,
    mut pick: impl FnMut(&Packet) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = pick(&packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("connection error while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Keeps polling in the background so queued requests go out and acks come back.
pub fn drive(mut eventloop: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} })
}
