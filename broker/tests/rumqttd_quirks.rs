//! Pins rumqttd 0.20 behaviours that DTOP's clients must respect, so an upgrade that changes
//! them shows up here: keep-alive 0 is refused, and each listener speaks one MQTT version.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};

use common::{WAIT, start_broker};
use dtop_broker::probe::{MqttVersion, connect_packet, read_connack};

/// Sends `connect` and reports whether the broker answered with an accepting CONNACK
/// (`Some(true)`), a refusing one (`Some(false)`), or closed the socket without one (`None`).
fn handshake(addr: SocketAddr, connect: &[u8]) -> Option<bool> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(connect).unwrap();
    let mut first = [0u8; 1];
    match stream.read(&mut first) {
        Ok(0) => None,
        Ok(_) => Some(read_connack(&mut first.chain(&mut stream)).unwrap()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("no answer within {WAIT:?}: {e}"),
    }
}

#[test]
fn accepts_a_311_connect_with_keep_alive() {
    let broker = start_broker();
    assert_eq!(
        handshake(broker.mqtt_addr(), &connect_packet(MqttVersion::V311)),
        Some(true)
    );
}

#[test]
fn drops_a_client_whose_keep_alive_is_zero() {
    let broker = start_broker();
    let mut connect = connect_packet(MqttVersion::V311);
    // Bytes 10..12 are the keep-alive (fixed header 2 + protocol name 6 + level 1 + flags 1).
    connect[10..12].copy_from_slice(&[0, 0]);
    assert_eq!(handshake(broker.mqtt_addr(), &connect), None);
}

#[test]
fn drops_an_mqtt5_connect_on_the_311_listener() {
    let broker = start_broker();
    assert_eq!(
        handshake(broker.mqtt_addr(), &connect_packet(MqttVersion::V5)),
        None
    );
}
