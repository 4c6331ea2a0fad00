//! Proves the broker's limits are sized for DTOP sample blocks: a 200 KiB QoS 1 publish crosses
//! the real broker intact, and a PUBLISH above the configured limit is refused on its own
//! (MQTT 5: reason 0x97; 3.1.1: acknowledged and dropped) while the connection stays up.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{client, poll_until, start_broker};
use dtop_proto::limits::MAX_MQTT_PACKET_BYTES;
use rumqttc::{Packet, QoS, SubscribeReasonCode};

/// Deterministic, non-repeating-at-small-period bytes, so a dropped or shifted chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 251) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_a_200_kib_qos1_payload_intact() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let topic = "dtop/test/large-payload";

    let (subscriber, mut sub_loop) = client("large-sub", broker.mqtt_addr());
    subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let granted = poll_until(&mut sub_loop, "SUBACK", |p| match p {
        Packet::SubAck(ack) => Some(ack.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let payload = pattern(200 * 1024);
    let (publisher, mut pub_loop) = client("large-pub", broker.mqtt_addr());
    publisher
        .publish(topic, QoS::AtLeastOnce, false, payload.clone())
        .await
        .unwrap();
    poll_until(&mut pub_loop, "PUBACK", |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;

    let received = poll_until(&mut sub_loop, "PUBLISH", |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(received.topic, topic);
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert_eq!(received.payload.len(), payload.len());
    let first_difference = received
        .payload
        .iter()
        .zip(&payload)
        .position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "payload corrupted in transit");
}

/// Publishes `MAX + 1` bytes at QoS 1 and then a small message, over one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_oversize_311_publish_and_keeps_the_connection() {
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let topic = "dtop/test/oversize";
    let (subscriber, mut sub_loop) = client("oversize-sub", broker.mqtt_addr());
    subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    poll_until(&mut sub_loop, "SUBACK", |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let mut options = rumqttc::MqttOptions::new(
        "oversize-pub",
        broker.mqtt_addr().ip().to_string(),
        broker.mqtt_addr().port(),
    );
    // Let the client send what the broker must refuse.
    options.set_max_packet_size(2 * MAX_MQTT_PACKET_BYTES, 2 * MAX_MQTT_PACKET_BYTES);
    let (publisher, mut pub_loop) = rumqttc::AsyncClient::new(options, 4);
    publisher
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            vec![0u8; MAX_MQTT_PACKET_BYTES + 1],
        )
        .await
        .unwrap();
    publisher
        .publish(topic, QoS::AtLeastOnce, false, b"small".to_vec())
        .await
        .unwrap();
    // MQTT 3.1.1 has no negative acknowledgement: the oversize one is acked and dropped.
    let mut acks = 0;
    poll_until(&mut pub_loop, "two PUBACKs", |p| {
        acks += usize::from(matches!(p, Packet::PubAck(_)));
        (acks == 2).then_some(())
    })
    .await;
    let received = poll_until(&mut sub_loop, "PUBLISH", |p| match p {
        Packet::Publish(publish) => Some(publish.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        &received.payload[..],
        b"small",
        "only the small message is delivered"
    );
    assert_eq!(
        broker
            .metrics()
            .refusals(dtop_broker::Refusal::PayloadTooLarge),
        1
    );
}

/// Reads one MQTT 5 packet from `stream`, with bounded waits.
fn read_v5(
    stream: &mut std::net::TcpStream,
    buf: &mut bytes::BytesMut,
) -> rumqttc::v5::mqttbytes::v5::Packet {
    use std::io::Read as _;
    loop {
        match rumqttc::v5::mqttbytes::v5::Packet::read(buf, None) {
            Ok(packet) => return packet,
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => panic!("undecodable packet: {e}"),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("a packet within WAIT");
        assert!(n > 0, "the broker closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Raw packets: a conforming MQTT 5 client (rumqttc included) will not send more than the
/// CONNACK's Maximum Packet Size, so the oversize PUBLISH is written by hand.
#[test]
fn announces_its_maximum_packet_size_and_refuses_a_larger_mqtt5_publish_with_0x97() {
    use dtop_broker::front::wire::packet_len;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Connect, Packet as V5, PubAckReason, Publish};
    use std::io::Write as _;

    let broker = start_broker();
    let mut stream = std::net::TcpStream::connect(broker.mqtt_addr()).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut out = bytes::BytesMut::new();
    let connect = Connect {
        keep_alive: 30,
        client_id: "oversize-v5".into(),
        clean_start: true,
        properties: None,
    };
    V5::Connect(connect, None, None)
        .write(&mut out, None)
        .unwrap();
    stream.write_all(&out).unwrap();
    let mut buf = bytes::BytesMut::new();
    let V5::ConnAck(connack) = read_v5(&mut stream, &mut buf) else {
        panic!("expected CONNACK");
    };
    let max_payload_bytes = dtop_broker::LimitsConfig::default().max_payload_bytes;
    let announced = connack.properties.and_then(|p| p.max_packet_size);
    assert_eq!(
        announced,
        Some(u32::try_from(packet_len(max_payload_bytes)).unwrap()),
        "CONNACK announces the limit the broker enforces"
    );

    for (pkid, size, want) in [
        (1, MAX_MQTT_PACKET_BYTES + 1, PubAckReason::QuotaExceeded),
        (2, 16, PubAckReason::Success),
    ] {
        let mut publish = Publish::new(
            "dtop/test/oversize-v5",
            QoS::AtLeastOnce,
            vec![0u8; size],
            None,
        );
        publish.pkid = pkid;
        out.clear();
        V5::Publish(publish).write(&mut out, None).unwrap();
        stream.write_all(&out).unwrap();
        let V5::PubAck(ack) = read_v5(&mut stream, &mut buf) else {
            panic!("expected PUBACK");
        };
        assert_eq!((ack.pkid, ack.reason), (pkid, want), "{size} bytes");
    }
}
