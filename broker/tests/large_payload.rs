//! Proves the broker's limits are sized for DTOP sample blocks: a 200 KiB QoS 1 publish crosses
//! the real broker intact, and a PUBLISH above the configured limit is refused on its own
//! (MQTT 5: reason 0x97; 3.1.1: acknowledged and dropped) while the connection stays up.

// Helpers outside #[test] fns fail the test by panicking, like the assertions they serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_oversize_mqtt5_publish_with_reason_0x97() {
    use rumqttc::v5::mqttbytes::v5::{Packet as V5, PubAckReason};
    let broker = tokio::task::spawn_blocking(start_broker).await.unwrap();
    let (publisher, mut pub_loop) = common::v5_client("oversize-v5", broker.mqtt_addr(), None);
    for (size, want) in [
        (MAX_MQTT_PACKET_BYTES + 1, PubAckReason::QuotaExceeded),
        (16, PubAckReason::Success),
    ] {
        publisher
            .publish(
                "dtop/test/oversize-v5",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                vec![0u8; size],
            )
            .await
            .unwrap();
        let reason = common::v5_poll_until(&mut pub_loop, "PUBACK", |p| match p {
            V5::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await;
        assert_eq!(reason, want, "{size} bytes");
    }
}
