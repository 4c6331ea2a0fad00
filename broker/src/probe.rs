//! Owns the readiness probe: one MQTT CONNECT/CONNACK exchange over a blocking std socket, for
//! tools and tests that wait for any MQTT broker (ours or another). Knows the MQTT wire format
//! for those two packets only.
//!
//! A bare TCP connect would do to see a listener, but a CONNACK also proves it speaks MQTT.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Which MQTT version the probe speaks (dtop-broker serves both on every listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5, protocol level 5.
    V5,
}

/// Keep-alive the probe announces, seconds. Non-zero, because plain rumqttd drops clients that
/// announce 0 and the probe should work against any broker.
const PROBE_KEEP_ALIVE_S: u8 = 60;

/// A CONNACK answering the probe's CONNECT carries at most a few short properties.
const MAX_CONNACK_REMAINING_BYTES: usize = 1024;

/// CONNECT with clean session and an empty client id, so the broker assigns a fresh id and the
/// probe can never take over a real client's session.
pub fn connect_packet(version: MqttVersion) -> Vec<u8> {
    let mut variable = vec![
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name (3.1.1 §3.1.2.1, 5 §3.1.2.1)
    ];
    match version {
        MqttVersion::V311 => variable.push(4), // protocol level
        MqttVersion::V5 => variable.push(5),
    }
    variable.push(0x02); // connect flags: clean session / clean start only
    variable.extend_from_slice(&[0x00, PROBE_KEEP_ALIVE_S]);
    if version == MqttVersion::V5 {
        variable.push(0x00); // property length: no properties (5 §3.1.2.11)
    }
    variable.extend_from_slice(&[0x00, 0x00]); // payload: zero-length client id
    let remaining_len = u8::try_from(variable.len())
        .unwrap_or_else(|_| unreachable!("a CONNECT without properties is under 128 bytes"));
    let mut packet = vec![0x10, remaining_len]; // CONNECT fixed header
    packet.extend_from_slice(&variable);
    packet
}

/// Reads one CONNACK and reports whether it accepted the connection (return/reason code 0).
pub fn read_connack(reader: &mut impl Read) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte)?;
    if byte[0] != 0x20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected CONNACK (0x20), got packet type byte {:#04x}",
                byte[0]
            ),
        ));
    }
    let mut remaining_len = 0usize;
    for shift in [0, 7, 14, 21] {
        reader.read_exact(&mut byte)?;
        remaining_len |= usize::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    if !(2..=MAX_CONNACK_REMAINING_BYTES).contains(&remaining_len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "CONNACK remaining length {remaining_len} is outside 2..={MAX_CONNACK_REMAINING_BYTES}"
            ),
        ));
    }
    let mut body = vec![0u8; remaining_len];
    // Read the whole packet (MQTT 5 adds properties): closing a socket with unread bytes sends
    // RST, which rumqttd logs at ERROR.
    reader.read_exact(&mut body)?;
    // body[0] holds the acknowledge flags, body[1] the return code (3.1.1) / reason code (5).
    Ok(body[1] == 0)
}

/// Connects to `addr`, performs one MQTT handshake and closes the socket without DISCONNECT
/// (rumqttd logs a peer close at INFO but a DISCONNECT at ERROR). Every step is bounded by
/// `timeout`.
pub fn probe_mqtt(addr: SocketAddr, version: MqttVersion, timeout: Duration) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&dialable(addr), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&connect_packet(version))?;
    if read_connack(&mut stream)? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the broker answered CONNECT with a refusal",
        ))
    }
}

/// Connects to `addr` and closes the socket: enough for an HTTP listener such as the console.
pub fn probe_tcp(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    TcpStream::connect_timeout(&dialable(addr), timeout).map(drop)
}

/// A listener on the unspecified address is reached through loopback.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v311_connect_matches_the_spec_layout() {
        assert_eq!(
            connect_packet(MqttVersion::V311),
            [
                0x10, 12, // CONNECT, remaining length
                0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
                4,    // protocol level 3.1.1
                0x02, // clean session
                0x00, 60, // keep-alive 60 s
                0x00, 0x00, // empty client id
            ]
        );
    }

    #[test]
    fn v5_connect_carries_an_empty_property_list() {
        assert_eq!(
            connect_packet(MqttVersion::V5),
            [
                0x10, 13, // CONNECT, remaining length
                0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
                5,    // protocol level 5
                0x02, // clean start
                0x00, 60,   // keep-alive 60 s
                0x00, // property length
                0x00, 0x00, // empty client id
            ]
        );
    }

    #[test]
    fn reads_accepting_and_refusing_connacks() {
        // CONNACK, remaining length 2, no session present, return code 0 (accepted).
        assert!(read_connack(&mut &[0x20, 0x02, 0x00, 0x00][..]).unwrap());
        // Return code 5: not authorised.
        assert!(!read_connack(&mut &[0x20, 0x02, 0x00, 0x05][..]).unwrap());
        // MQTT 5 CONNACK with a 3-byte property list after flags and reason code.
        assert!(read_connack(&mut &[0x20, 0x05, 0x00, 0x00, 0x02, 0x21, 0x00][..]).unwrap());
    }

    #[test]
    fn decodes_a_multi_byte_remaining_length() {
        // Remaining length 200 = 0xC8 0x01 as a variable byte integer.
        let mut bytes = vec![0x20, 0xC8, 0x01, 0x00, 0x00];
        bytes.resize(3 + 200, 0);
        assert!(read_connack(&mut &bytes[..]).unwrap());
    }

    #[test]
    fn reads_exactly_one_connack_and_leaves_what_follows() {
        // MQTT 5 CONNACK with properties, followed by the first byte of a PUBLISH.
        let bytes = [0x20, 0x05, 0x00, 0x00, 0x02, 0x21, 0x00, 0x30];
        let mut reader = &bytes[..];
        assert!(read_connack(&mut reader).unwrap());
        assert_eq!(reader, [0x30]);
    }

    #[test]
    fn refuses_an_implausibly_long_connack() {
        // Remaining length 0x7F + 0x7F * 128 = 16383 bytes.
        let error = read_connack(&mut &[0x20, 0xFF, 0x7F, 0x00, 0x00][..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn refuses_a_packet_that_is_not_a_connack() {
        let error = read_connack(&mut &[0x30, 0x02, 0x00, 0x00][..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn unspecified_listeners_are_dialled_on_loopback() {
        assert_eq!(
            dialable("0.0.0.0:1883".parse().unwrap()),
            "127.0.0.1:1883".parse().unwrap()
        );
        assert_eq!(
            dialable("[::]:1883".parse().unwrap()),
            "[::1]:1883".parse().unwrap()
        );
        assert_eq!(
            dialable("10.0.0.1:1883".parse().unwrap()),
            "10.0.0.1:1883".parse().unwrap()
        );
    }
}
